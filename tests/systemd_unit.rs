//! The shipped systemd unit (deploy/systemd/chom.service): `systemd-analyze verify` has nothing
//! to say about it, its hardening keeps the exposure at most 1.5 (DESIGN.md), and the directives
//! the node relies on are present with their values.
//!
//! systemd-analyze works without a running systemd; scripts/test installs it. A missing
//! systemd-analyze fails these tests: a skipped check would let a broken unit ship.

use std::path::PathBuf;
use std::process::{Command, Output};

const UNIT: &str = include_str!("../deploy/systemd/chom.service");

/// Where the Debian package installs the binary; the copies point ExecStart at the built one.
const INSTALLED_EXEC_START: &str = "ExecStart=/usr/bin/chom node --config /etc/chom/chom.toml";

/// Highest acceptable `systemd-analyze security` exposure (0.0 best, 10.0 worst).
const MAX_EXPOSURE: f64 = 1.5;

/// A private temp directory holding a copy of the unit, removed on drop (also on panic).
struct UnitCopy {
    dir: PathBuf,
    path: PathBuf,
}

impl UnitCopy {
    /// The unit with ExecStart's binary rewritten to the one cargo built for this test:
    /// `verify` complains unless the ExecStart binary exists and is executable.
    fn new(tag: &str) -> UnitCopy {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("chom-unit-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        // Kept named chom.service: systemd-analyze names its report after the file.
        let path = dir.join("chom.service");
        let copy = UnitCopy { dir, path };

        let lines: Vec<&str> = UNIT.lines().collect();
        let exec_starts = lines.iter().filter(|l| l.starts_with("ExecStart=")).count();
        assert_eq!(
            exec_starts, 1,
            "chom.service must have exactly one ExecStart="
        );
        assert!(
            lines.contains(&INSTALLED_EXEC_START),
            "chom.service must say {INSTALLED_EXEC_START:?}"
        );
        // Quoted: a target dir with spaces stays one word for systemd's command-line parser.
        let built = format!(
            "ExecStart=\"{}\" node --config /etc/chom/chom.toml",
            env!("CARGO_BIN_EXE_chom")
        );
        let text: String = lines
            .iter()
            .map(|&l| {
                if l == INSTALLED_EXEC_START {
                    built.as_str()
                } else {
                    l
                }
            })
            .flat_map(|l| [l, "\n"])
            .collect();
        std::fs::write(&copy.path, text).expect("write unit copy");
        copy
    }

    fn path(&self) -> &str {
        self.path.to_str().expect("temp path is UTF-8")
    }
}

impl Drop for UnitCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn systemd_analyze(args: &[&str]) -> Output {
    Command::new("systemd-analyze")
        .args(args)
        // Plain output, no pager, no colour escapes in the text we parse.
        .env("SYSTEMD_PAGER", "cat")
        .env("SYSTEMD_COLORS", "0")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run systemd-analyze ({e}): it comes with the systemd package; \
                 run scripts/test, which installs it"
            )
        })
}

/// The value of `key` in `[section]`, as systemd reads it: whitespace around `=` ignored, the
/// last assignment wins.
fn directive<'a>(unit: &'a str, section: &str, key: &str) -> Option<&'a str> {
    let mut current = "";
    let mut found = None;
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') && line.ends_with(']') {
            current = &line[1..line.len() - 1];
        } else if let Some((k, v)) = line.split_once('=')
            && current == section
            && k.trim() == key
        {
            found = Some(v.trim());
        }
    }
    found
}

#[test]
fn unit_verifies_without_any_complaint() {
    let unit = UnitCopy::new("verify");
    let out = systemd_analyze(&["verify", "--man=no", unit.path()]);
    // verify exits 0 on what it ignores (a misspelled directive, an unparsable value) and only
    // prints a line about it, so any output at all fails the test. Nothing is filtered: on
    // Debian 12 (systemd 252), in a container without systemd as PID 1, a correct unit
    // produces no output at all.
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && complaints.trim().is_empty(),
        "systemd-analyze verify {} ({}):\n{complaints}",
        unit.path(),
        out.status
    );
}

#[test]
fn unit_is_hardened_and_keeps_the_directives_the_node_relies_on() {
    // A careless edit of any of these changes how the node is run or contained.
    // All in [Service], written as in the unit file.
    let required = [
        "Type=notify",
        "WatchdogSec=30s",
        "Restart=always",
        "RestartSec=10s",
        "RestartPreventExitStatus=78",
        "TimeoutStopSec=60",
        "KillMode=mixed",
        // The plan's resource limits (SPEC.md "Deployment").
        "MemoryMax=512M",
        "CPUQuota=150%",
        "LimitNOFILE=65536",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "ProtectHome=yes",
    ];
    let wrong: Vec<String> = required
        .iter()
        .filter_map(|line| {
            let (key, value) = line.split_once('=').unwrap();
            let found = directive(UNIT, "Service", key);
            (found != Some(value)).then(|| format!("[Service] {line} (found {found:?})"))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "chom.service must have:\n  {}",
        wrong.join("\n  ")
    );

    let unit = UnitCopy::new("security");
    let out = systemd_analyze(&["security", "--offline=true", "--no-pager", unit.path()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let prefix = "Overall exposure level for chom.service:";
    let line = text
        .lines()
        .find_map(|l| l.split_once(prefix).map(|(_, rest)| rest))
        .unwrap_or_else(|| {
            panic!(
                "no {prefix:?} line from systemd-analyze security ({}):\n{text}\n{stderr}",
                out.status
            )
        });
    let score: f64 = line
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable exposure in {line:?}"));
    assert!(
        (0.0..=MAX_EXPOSURE).contains(&score),
        "exposure {score} is above {MAX_EXPOSURE}; the ✗ lines say what to tighten:\n{text}"
    );
}
