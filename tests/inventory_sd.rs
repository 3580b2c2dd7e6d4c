//! Servers owned by a tenant and the fleet as Prometheus HTTP service discovery, end to end:
//! `chom vps add --tenant`, `chom vps list`, the refusal of another tenant's site on an owned
//! server, and `GET /prometheus/sd`. No server is connected to: the actors connect only when a
//! command needs it, and sites are added with `--no-provision`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// GET `path`: (status, Content-Type, body).
fn get(addr: &str, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete answer");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

/// `/prometheus/sd` as JSON, checked to be a 200 with an application/json type.
fn sd(addr: &str) -> Value {
    let (status, content_type, body) = get(addr, "/prometheus/sd");
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "application/json", "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The tenants `acme` and `globex` and three servers: `web-1` owned by acme, `web-2` (IPv6)
/// and `web-3` shared. Returns the tenants' ids as printed.
fn add_tenants_and_servers(node: &Node) -> (String, String) {
    let acme = cli_ok(node, &["tenants", "add", "acme"]).trim().to_owned();
    let globex = cli_ok(node, &["tenants", "add", "globex"])
        .trim()
        .to_owned();
    let added = cli_ok(
        node,
        &["vps", "add", "web-1", "127.0.0.21", "--tenant", &acme],
    );
    assert!(added.contains(&format!("for tenant {acme}")), "{added}");
    cli_ok(node, &["vps", "add", "web-2", "::1", "--port", "2222"]);
    cli_ok(node, &["vps", "add", "web-3", "127.0.0.23"]);
    // An unknown tenant: exit 1, the tenant named, nothing stored.
    let (code, stdout, stderr) = cli(
        node,
        &["vps", "add", "web-4", "127.0.0.24", "--tenant", "999"],
    );
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("no tenant 999"), "{stderr}");
    (acme, globex)
}

/// `vps list`, as JSON and for people, shows each server's tenant.
fn assert_listed_with_tenants(node: &Node, acme: &str) {
    let listed: Value = serde_json::from_str(&cli_ok(node, &["vps", "list", "--json"])).unwrap();
    let rows: Vec<(String, Value)> = listed["vps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["id"].as_str().unwrap().to_owned(), v["tenant_id"].clone()))
        .collect();
    let acme_id: i64 = acme.parse().unwrap();
    assert_eq!(
        rows,
        [
            ("web-1".to_owned(), json!(acme_id)),
            ("web-2".to_owned(), Value::Null),
            ("web-3".to_owned(), Value::Null),
        ]
    );
    let human = cli_ok(node, &["vps", "list"]);
    assert!(human.lines().next().unwrap().contains("TENANT"), "{human}");
    let web1 = human.lines().find(|l| l.starts_with("web-1")).unwrap();
    assert!(
        web1.split_whitespace().any(|w| w == acme),
        "tenant column: {human}"
    );
}

/// `chom sites add DOMAIN --tenant T --vps V --no-provision`.
fn add_site(node: &Node, domain: &str, tenant: &str, vps: &str) -> (Option<i32>, String, String) {
    let args = ["sites", "add", domain, "--tenant", tenant, "--vps", vps];
    cli(node, &[&args[..], &["--no-provision"]].concat())
}

#[test]
fn owned_servers_take_only_their_tenants_sites_and_are_discovered() {
    let node = Node::start("inventory-sd", "", &[]);
    node.wait_ready();
    let addr = node.http_addr();
    assert_eq!(sd(&addr), json!([]), "no servers yet");
    let (acme, globex) = add_tenants_and_servers(&node);
    assert_listed_with_tenants(&node, &acme);

    // Another tenant's site on acme's server is refused, naming both tenants.
    let (code, stdout, stderr) = add_site(&node, "g.example.com", &globex, "web-1");
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    for part in [
        format!("tenant {acme} (acme)"),
        format!("tenant {globex} (globex)"),
    ] {
        assert!(stderr.contains(&part), "{part}: {stderr}");
    }
    // acme's own site goes there; a shared server takes globex's.
    for (domain, tenant, vps) in [
        ("a.example.com", &acme, "web-1"),
        ("g.example.com", &globex, "web-3"),
    ] {
        let (code, stdout, stderr) = add_site(&node, domain, tenant, vps);
        assert_eq!(code, Some(0), "{domain}: {stdout}{stderr}");
    }
    let sites: Value = serde_json::from_str(&cli_ok(&node, &["sites", "list", "--json"])).unwrap();
    assert_eq!(sites["sites"].as_array().unwrap().len(), 2, "{sites}");

    let web1 =
        json!({"targets": ["127.0.0.21:9100"], "labels": {"vps": "web-1", "tenant_id": acme}});
    let web3 = json!({"targets": ["127.0.0.23:9100"], "labels": {"vps": "web-3", "tenant_id": ""}});
    assert_eq!(
        sd(&addr),
        json!([
            web1,
            {"targets": ["[::1]:9100"], "labels": {"vps": "web-2", "tenant_id": ""}},
            web3,
        ])
    );
    cli_ok(&node, &["vps", "remove", "web-2"]);
    assert_eq!(
        sd(&addr),
        json!([web1, web3]),
        "a removed server is no longer a target"
    );
    node.assert_running();
}

#[test]
fn prometheus_sd_is_503_while_the_store_is_unavailable() {
    let extra = r#"
[database]
url = "postgres://postgres@127.0.0.1:1/chom"
connect_timeout = "1s"
"#;
    let node = Node::start("inventory-sd-down", extra, &[]);
    let (status, content_type, body) = get(&node.http_addr(), "/prometheus/sd");
    assert_eq!(status, 503, "{body}");
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert_eq!(body, "store not available\n");
}
