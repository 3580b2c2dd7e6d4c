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
