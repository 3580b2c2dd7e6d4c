//! Small readings of the operating system: memory, disk, host name.

use std::path::Path;

/// Resident set size of this process, from `/proc/self/statm`.
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

/// Space on the file system holding `path`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiskUsage {
    /// Bytes in use, as `df` counts them (blocks minus free blocks).
    pub used_bytes: u64,
    /// Bytes available to an unprivileged process.
    pub available_bytes: u64,
    /// `used / (used + available)` in percent, as `df` reports "Use%".
    pub used_percent: f64,
}

/// Disk usage of the file system that holds `path` (statvfs).
pub fn disk_usage(path: &Path) -> std::io::Result<DiskUsage> {
    let st = rustix::fs::statvfs(path)?;
    let block = st.f_frsize;
    let used = st.f_blocks.saturating_sub(st.f_bfree) * block;
    let available = st.f_bavail * block;
    let denominator = used + available;
    let used_percent = if denominator == 0 {
        0.0
    } else {
        used as f64 * 100.0 / denominator as f64
    };
    Ok(DiskUsage {
        used_bytes: used,
        available_bytes: available,
        used_percent,
    })
}

/// The machine's host name.
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_are_plausible() {
        let rss = rss_bytes().expect("linux has /proc/self/statm");
        assert!(rss > 1024 * 1024, "rss {rss}");
        let disk = disk_usage(Path::new("/")).unwrap();
        assert!((0.0..=100.0).contains(&disk.used_percent));
        assert!(disk.used_bytes > 0);
        assert!(!hostname().is_empty());
    }
}
