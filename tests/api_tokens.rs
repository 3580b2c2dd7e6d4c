//! Tenant API tokens end to end through the built binary: `chom tenants token`, `tokens`,
//! `revoke` (human and `--json`), refusals of unknown tenants and tokens, and the secret's
//! absence from everything the node writes: its log and its database files.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use chom_core::token::Secret;
use common::*;
use serde_json::{Value, json};

/// `chom ARGS --json`, which must succeed and print exactly one JSON document.
fn ok_json(node: &Node, args: &[&str]) -> Value {
    let stdout = cli_ok(node, &[args, &["--json"]].concat());
    assert_eq!(stdout.lines().count(), 1, "one document: {stdout}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// `chom ARGS`, which must fail with exit 1 and a message containing `says`.
fn fails(node: &Node, args: &[&str], says: &str) {
    let (code, stdout, stderr) = cli(node, args);
    assert_eq!(code, Some(1), "chom {args:?}: {stdout}{stderr}");
    assert!(stderr.contains(says), "chom {args:?}: {stderr}");
}

/// The keys of a JSON object, sorted.
fn keys(doc: &Value) -> BTreeSet<&str> {
    doc.as_object()
        .unwrap_or_else(|| panic!("an object: {doc}"))
        .keys()
        .map(String::as_str)
        .collect()
}

/// Makes a token with `--json`, checks the document's shape, returns (token, id).
fn make_token_json(node: &Node, tenant: i64, name: &str) -> (String, i64) {
    let issued = ok_json(
        node,
        &["tenants", "token", &tenant.to_string(), "--name", name],
    );
    assert_eq!(keys(&issued), BTreeSet::from(["token", "id", "tenant"]));
    assert_eq!(issued["tenant"], json!(tenant));
    let token = issued["token"].as_str().unwrap().to_owned();
    Secret::parse(&token).unwrap_or_else(|e| panic!("{e}: {token}"));
    (token, issued["id"].as_i64().unwrap())
}

/// Makes a token with the human output (default name): the token is the last line.
fn make_token_human(node: &Node, tenant: i64) -> (String, i64) {
    let text = cli_ok(node, &["tenants", "token", &tenant.to_string()]);
    let token = text.lines().last().unwrap().to_owned();
    Secret::parse(&token).unwrap_or_else(|e| panic!("{e}: {text}"));
    let id = text
        .split_whitespace()
        .nth(1)
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("`token ID of tenant ...`: {text}"));
    assert!(text.contains("shown only now"), "{text}");
    (token, id)
}

/// The tenant's tokens as `tenants tokens --json` lists them, each checked to carry only the
/// documented fields.
fn listed(node: &Node, tenant: i64) -> Vec<Value> {
    let doc = ok_json(node, &["tenants", "tokens", &tenant.to_string()]);
    assert_eq!(keys(&doc), BTreeSet::from(["tokens"]));
    let tokens = doc["tokens"].as_array().unwrap().clone();
    for t in &tokens {
        assert_eq!(
            keys(t),
            BTreeSet::from([
                "id",
                "tenant_id",
                "name",
                "created_at",
                "last_used_at",
                "revoked_at"
            ]),
            "{t}"
        );
    }
    tokens
}

/// Every byte the node's database holds (the file and its WAL), as text.
fn database_bytes(node: &Node) -> String {
    let var = node.dir.path().join("var");
    let mut all = Vec::new();
    for name in ["chom.db", "chom.db-wal"] {
        if let Ok(bytes) = std::fs::read(var.join(name)) {
            all.extend(bytes);
        }
    }
    assert!(!all.is_empty(), "no database files in {}", var.display());
    String::from_utf8_lossy(&all).into_owned()
}

#[test]
fn tokens_are_made_listed_and_revoked_and_never_stored_or_logged_in_clear() {
    let node = Node::start("api-tokens", "", &[]);
    node.wait_ready();
    let acme: i64 = cli_ok(&node, &["tenants", "add", "acme", "--tier", "pro"])
        .trim()
        .parse()
        .unwrap();

    let (ci, ci_id) = make_token_json(&node, acme, "ci");
    let (panel, panel_id) = make_token_human(&node, acme);
    assert_ne!(ci, panel);

    // Listed by name, without secrets: neither the token nor its hash.
    let tokens = listed(&node, acme);
    let names: Vec<_> = tokens.iter().map(|t| t["name"].clone()).collect();
    assert_eq!(names, [json!("ci"), json!("default")]);
    let text = serde_json::to_string(&tokens).unwrap();
    for secret in [&ci, &panel] {
        let hash = Secret::parse(secret).unwrap().hash();
        assert!(!text.contains(secret.as_str()) && !text.contains(hash.as_str()));
    }

    // Revoke one: `--json` is exactly {id, revoked}; the listing shows when.
    let revoked = ok_json(&node, &["tenants", "revoke", &ci_id.to_string()]);
    assert_eq!(revoked, json!({ "id": ci_id, "revoked": true }));
    let again = cli_ok(&node, &["tenants", "revoke", &ci_id.to_string()]);
    assert_eq!(again, format!("token {ci_id} revoked\n"));
    let tokens = listed(&node, acme);
    let state: Vec<_> = tokens
        .iter()
        .map(|t| (t["id"].as_i64().unwrap(), t["revoked_at"].is_string()))
        .collect();
    assert_eq!(state, [(panel_id, false), (ci_id, true)], "active first");
    let human = cli_ok(&node, &["tenants", "tokens", &acme.to_string()]);
    let header = human.lines().next().unwrap();
    for column in ["ID", "NAME", "CREATED", "LAST USED", "REVOKED"] {
        assert!(header.contains(column), "{human}");
    }
    let ci_row = human.lines().find(|l| l.contains(" ci ")).unwrap();
    assert!(!ci_row.trim_end().ends_with('-'), "revoked time: {human}");

    // Unknown tenants and tokens: exit 1, named.
    fails(&node, &["tenants", "token", "999"], "no tenant 999");
    fails(&node, &["tenants", "tokens", "999"], "no tenant 999");
    fails(&node, &["tenants", "revoke", "999"], "no token 999");

    // Stored: the hashes, never the tokens.
    let db = node.dir.path().join("var/chom.db");
    for secret in [&ci, &panel] {
        let hash = Secret::parse(secret).unwrap().hash();
        let sql = format!(
            "SELECT count(*) FROM api_tokens WHERE hash = '{}'",
            hash.as_str()
        );
        assert_eq!(sqlite_i64(&db, &sql), 1, "{sql}");
    }
    let bytes = database_bytes(&node);
    let hex = |t: &str| t.trim_start_matches("chom_").to_owned();
    for secret in [&ci, &panel] {
        assert!(!bytes.contains(secret.as_str()), "a token in the database");
        assert!(
            !bytes.contains(&hex(secret)),
            "a token's digits in the database"
        );
    }

    // Logged: who made which token, never the token (the node logs chom=debug here).
    wait_for(Duration::from_secs(10), "token creations logged", || {
        let log = node.log_text();
        (log.matches("api token created").count() == 2 && log.contains("api token revoked"))
            .then_some(())
    });
    let log = node.log_text();
    for secret in [&ci, &panel] {
        assert!(!log.contains(&hex(secret)), "a token in the node's log");
    }
    node.assert_running();
}
