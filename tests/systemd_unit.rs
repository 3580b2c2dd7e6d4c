//! The shipped systemd unit: `systemd-analyze verify` is clean, the hardening keeps the exposure
//! at most 1.5, and the directives the node relies on are present with their values.

use std::path::PathBuf;
use std::process::Command;

const UNIT: &str = include_str!("../deploy/systemd/chom.service");

/// The unit copied into a fresh directory, with ExecStart pointing at the built binary (verify
/// needs the executable to exist).
fn unit_copy(tag: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("chom-unit-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("chom.service");
    let text = UNIT.replace("/usr/local/bin/chom", env!("CARGO_BIN_EXE_chom"));
    assert_ne!(text, UNIT, "the unit's ExecStart names /usr/local/bin/chom");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn systemd_analyze(args: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .output()
        .expect("systemd-analyze not found: run scripts/test, which installs systemd")
}

#[test]
fn unit_verifies_without_any_complaint() {
    let (dir, path) = unit_copy("verify");
    let out = systemd_analyze(&["verify", "--man=no", path.to_str().unwrap()]);
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
    // verify exits 0 on directives it ignores (misspellings, bad values): any output is a failure.
    assert!(
        out.status.success() && complaints.trim().is_empty(),
        "systemd-analyze verify:\n{complaints}"
    );
}

#[test]
fn unit_is_hardened_to_exposure_at_most_1_5() {
    let (dir, path) = unit_copy("security");
    let out = systemd_analyze(&[
        "security",
        "--offline=true",
        "--no-pager",
        path.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let _ = std::fs::remove_dir_all(dir);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no exposure line in:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable exposure line {line:?}"));
    assert!(score <= 1.5, "exposure {score} > 1.5:\n{text}");
}

#[test]
fn unit_has_the_directives_the_node_relies_on() {
    let directives: Vec<(&str, &str)> = UNIT
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    for (key, value) in [
        ("Type", "notify"),
        ("WatchdogSec", "30s"),
        ("Restart", "always"),
        ("RestartSec", "10s"),
        ("RestartPreventExitStatus", "78"),
        ("TimeoutStopSec", "60"),
        ("KillMode", "mixed"),
        ("MemoryMax", "512M"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("ProtectHome", "yes"),
        ("ReadWritePaths", "/var/lib/chom"),
    ] {
        assert!(
            directives.contains(&(key, value)),
            "chom.service lacks {key}={value}"
        );
    }
}
