//! `chom config`, `chom migrate` and `chom bench` as an operator runs them.

mod common;

use common::*;
use serde_json::Value;

#[test]
fn config_default_prints_the_embedded_file() {
    let out = chom(None, &["config", "default"], &[]);
    assert!(out.status.success());
    let file =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/chom.toml")).unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), file);
}

#[test]
fn invalid_config_exits_78_and_names_each_bad_key() {
    let dir = TempDir::new("badcfg");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[queue]\nworkers = 3\npoll_intervall = \"1s\"\nretry_after = \"soon\"\n[database]\nurl = \"mysql://x\"\n",
    )
    .unwrap();
    for args in [&["config", "check"][..], &["node"][..]] {
        let out = chom(Some(&path), args, &[]);
        assert_eq!(out.status.code(), Some(78), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        for key in ["queue.poll_intervall", "queue.retry_after", "database.url"] {
            assert!(
                err.contains(key),
                "{args:?}: stderr does not name {key}:\n{err}"
            );
        }
    }
    // A bad environment override is named by its variable.
    let out = chom(
        None,
        &["config", "check"],
        &[("CHOM_HTTP_LISTEN", "nowhere")],
    );
    assert_eq!(out.status.code(), Some(78));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("CHOM_HTTP_LISTEN"),
        "{out:?}"
    );
    // --json prints one document listing the errors.
    let out = chom(Some(&path), &["config", "check", "--json"], &[]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["valid"], false);
    assert_eq!(doc["errors"].as_array().unwrap().len(), 3, "{doc}");
}

#[test]
fn config_check_redacts_secrets() {
    let out = chom(
        None,
        &["config", "check"],
        &[("CHOM_DATABASE_URL", "postgres://chom:hunter2@db:5432/chom")],
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("hunter2"), "{text}");
    assert!(
        text.contains("postgres://chom:***@db:5432/chom") || text.contains("***"),
        "{text}"
    );
}

#[test]
fn migrate_applies_migrations_on_sqlite_and_postgres() {
    let dir = TempDir::new("migrate");
    let config = config_in(dir.path(), "");
    let out = chom(Some(&config), &["migrate", "--json"], &[]);
    assert!(out.status.success(), "{out:?}");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["backend"], "sqlite");
    assert!(dir.path().join("var/chom.db").exists());

    let db = PgDb::create("migrate");
    let out = chom(
        Some(&config),
        &["migrate"],
        &[("CHOM_DATABASE_URL", &db.url)],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("postgres"));
    // Idempotent.
    let again = chom(
        Some(&config),
        &["migrate"],
        &[("CHOM_DATABASE_URL", &db.url)],
    );
    assert!(again.status.success(), "{again:?}");
    // Unreachable database: exit 1 with the error.
    let out = chom(
        Some(&config),
        &["migrate"],
        &[
            ("CHOM_DATABASE_URL", "postgres://postgres@127.0.0.1:1/x"),
            ("CHOM_DATABASE_CONNECT_TIMEOUT", "200ms"),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

#[test]
fn bench_restart_prints_one_json_line() {
    let out = chom(None, &["bench", "restart", "--n", "300"], &[]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let last = stdout.lines().last().unwrap();
    let doc: Value = serde_json::from_str(last).unwrap();
    assert_eq!(doc["bench"], "restart");
    assert_eq!(doc["n"], 300);
    let median = doc["median_us"].as_f64().unwrap();
    let p99 = doc["p99_us"].as_f64().unwrap();
    assert!(median > 0.0 && p99 >= median, "{doc}");
    assert!(doc["idle_actor_bytes"].as_u64().unwrap() > 0, "{doc}");
}

#[test]
fn config_check_redacts_health_check_url_secrets() {
    let dir = TempDir::new("urlsecret");
    let path = config_file(
        &dir,
        "[[health.checks]]\nname = \"shop\"\nurl = \"https://admin:pw-s3cret@shop.example/?token=t0k3n&Signature=s1g&x=1\"\n",
        0o644,
    );
    for args in [&["config", "check"][..], &["config", "check", "--json"]] {
        let out = chom(Some(&path), args, &[]);
        assert!(out.status.success(), "{out:?}");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for secret in ["pw-s3cret", "t0k3n", "s1g"] {
            assert!(!all.contains(secret), "{args:?} printed {secret}: {all}");
        }
        assert!(all.contains("shop.example"), "{all}");
    }
}

/// `chom --config PATH node` run until it exits (Some(code)), or killed after 20 s (None):
/// a node that starts when it should have refused must fail the test, not hang it.
fn node_exit(path: &std::path::Path) -> (Option<i32>, String) {
    let dir = path.parent().unwrap();
    let log = dir.join(format!("node-{}.log", rand_suffix()));
    let mut child = spawn_node(path, &log, &[]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    (code, std::fs::read_to_string(&log).unwrap_or_default())
}

/// Exit code and stderr of `chom config check` and of `chom node` on the config at `path`.
fn check_and_node(path: &std::path::Path) -> [(&'static str, (Option<i32>, String)); 2] {
    let out = chom(Some(path), &["config", "check"], &[]);
    let check = (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    [("config check", check), ("node", node_exit(path))]
}

/// Everything of a node inside `dir` (nothing lands in the working directory).
fn base_config(dir: &TempDir) -> String {
    format!(
        "[node]\ndata_dir = \"{d}\"\n[database]\nurl = \"sqlite://{d}/chom.db\"\n[admin]\nsocket = \"{d}/chom.sock\"\n[http]\nlisten = \"127.0.0.1:0\"\n[api]\nlisten = \"127.0.0.1:0\"\n[ui]\nlisten = \"127.0.0.1:0\"\n",
        d = dir.path().join("var").display()
    )
}

/// A config file at `mode` holding `text`.
fn config_file(dir: &TempDir, text: &str, mode: u32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.path().join("chom.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn world_writable_config_with_commands_is_refused_at_check_and_node_start() {
    let dir = TempDir::new("worldwritable");
    let data = dir.path().join("var");
    let base = base_config(&dir);
    let with_command = format!("{base}[memory]\naction = \"systemctl restart php8.2-fpm\"\n");
    let path = config_file(&dir, &with_command, 0o666);
    for (what, (code, err)) in check_and_node(&path) {
        assert_eq!(code, Some(78), "{what}: {err}");
        assert!(
            err.contains(&path.display().to_string()) && err.contains("0666"),
            "{what}: {err}"
        );
        assert!(
            err.contains("memory.action") && err.contains("world-writable"),
            "{err}"
        );
    }
    assert!(!data.join("chom.db").exists(), "the node started anyway");
    // Group-writable: a warning, and the config is valid.
    let path = config_file(&dir, &with_command, 0o664);
    let out = chom(Some(&path), &["config", "check"], &[]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("group-writable"),
        "{out:?}"
    );
    // No commands in the file: its mode is not the node's business.
    let path = config_file(&dir, &base, 0o666);
    let out = chom(Some(&path), &["config", "check"], &[]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn missing_ssh_files_are_reported() {
    let dir = TempDir::new("sshfiles");
    let missing = dir.path().join("no-such-key");
    let known = dir.path().join("no-known-hosts");
    let text = format!(
        "{}[ssh]\nprivate_key = \"{}\"\nknown_hosts = \"{}\"\n[[vps]]\nid = \"web-1\"\nhost = \"10.0.0.1\"\n",
        base_config(&dir),
        missing.display(),
        known.display()
    );
    let path = config_file(&dir, &text, 0o644);
    for (what, (code, err)) in check_and_node(&path) {
        assert_eq!(code, Some(78), "{what}: {err}");
        assert!(
            err.contains("ssh.private_key") && err.contains("no-such-key"),
            "{err}"
        );
        // web-1 pins no host key, so the known_hosts file it needs is an error too.
        assert!(
            err.contains("ssh.known_hosts") && err.contains("web-1"),
            "{err}"
        );
    }
    // The key exists and web-1 pins its host key: known_hosts is only a warning.
    std::fs::write(&missing, "key").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&missing, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let pinned = text.replace(
        "host = \"10.0.0.1\"\n",
        "host = \"10.0.0.1\"\nhost_key = \"SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s\"\n",
    );
    let path = config_file(&dir, &pinned, 0o644);
    let out = chom(Some(&path), &["config", "check", "--json"], &[]);
    assert!(out.status.success(), "{out:?}");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["warnings"][0]["key"], "ssh.known_hosts", "{doc}");
}
