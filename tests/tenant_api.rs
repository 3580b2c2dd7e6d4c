//! The tenant API (`edge/api`, SPEC.md "Tenant API") end to end: the built node, real HTTP on
//! `api.listen`, tokens made with the `tenants.token` RPC. Authentication (401, 403), the
//! starter tier's burst (100 answered, 50 refused with `Retry-After`), tenants kept apart on
//! every route, a site created and deleted over a real sshd, refused inputs that change
//! nothing, PromQL scoped to the tenant against a real Prometheus, and the per-tenant query
//! bulkhead and request timeout against an observability host that never answers.

#![allow(
    clippy::too_many_lines,
    reason = "a test reads top to bottom as one scenario"
)]

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use chom_core::token::Secret;
use chom_testkit::{Prometheus, Sshd};
use common::*;
use serde_json::{Value, json};

/// One HTTP answer: status, headers (names lowercase) and the body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// The `error` code of a JSON error answer with `status`; the message must be a string.
    fn error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{self:?}");
        let doc = self.json();
        assert!(doc["message"].is_string(), "{self:?}");
        doc["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{self:?}"))
            .to_owned()
    }

    fn has_rate_limit_headers(&self) -> bool {
        self.header("ratelimit-policy").is_some() && self.header("ratelimit").is_some()
    }
}

/// A client of one node's tenant API.
struct Api {
    addr: String,
}

impl Api {
    fn of(node: &Node) -> Api {
        let status = node.wait_serving();
        Api {
            addr: status["api"]
                .as_str()
                .unwrap_or_else(|| panic!("no api address in {status}"))
                .to_owned(),
        }
    }

    /// `METHOD PATH` with `token` (if any), extra header lines and a body.
    fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        extra: &str,
        body: &[u8],
    ) -> Answer {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{auth}{extra}Content-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        // The server may answer (413) and close before it read a large body.
        let _ = s.write_all(&request);
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        parse(&String::from_utf8_lossy(&raw))
    }

    fn get(&self, path: &str, token: &str) -> Answer {
        self.send("GET", path, Some(token), "", b"")
    }

    fn delete(&self, path: &str, token: &str) -> Answer {
        self.send("DELETE", path, Some(token), "", b"")
    }

    fn post_json(&self, path: &str, token: &str, body: &Value) -> Answer {
        let body = body.to_string();
        self.send(
            "POST",
            path,
            Some(token),
            "Content-Type: application/json\r\n",
            body.as_bytes(),
        )
    }
}

fn parse(raw: &str) -> Answer {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {raw:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// A new tenant of `tier` and a token of it: (tenant id, token).
fn tenant_with_token(node: &Node, name: &str, tier: &str) -> (i64, String) {
    let added = node.rpc("tenants.add", json!({ "name": name, "tier": tier }));
    let id = added["result"]["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("tenants.add: {added}"));
    let issued = node.rpc("tenants.token", json!({ "tenant": id }));
    let token = issued["result"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("tenants.token: {issued}"))
        .to_owned();
    (id, token)
}

/// The sites of every tenant, as the admin RPC lists them.
fn all_sites(node: &Node) -> Value {
    node.rpc("sites.list", json!({}))["result"]["sites"].clone()
}

#[test]
fn tokens_are_required_and_a_suspended_tenant_is_refused() {
    let node = Node::start("api-auth", "", &[]);
    node.wait_ready();
    let api = Api::of(&node);
    let tree = node.rpc("tree", json!({}))["result"].clone();
    assert_eq!(tree_child(&tree, "edge/api")["state"], "running", "{tree}");
    let (acme, token) = tenant_with_token(&node, "acme", "pro");
    let unknown = Secret::from_random(&[7; 32]);
    for (what, auth) in [
        ("no header", None),
        (
            "another scheme",
            Some("Basic YWxhZGRpbjpvcGVuc2VzYW1l".to_owned()),
        ),
        ("not a token", Some("Bearer nope".to_owned())),
        (
            "unknown token",
            Some(format!("Bearer {}", unknown.expose())),
        ),
    ] {
        let extra = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
        let answer = api.send("GET", "/api/v1/sites", None, &extra, b"");
        assert_eq!(answer.error(401), "unauthorized", "{what}");
        assert_eq!(answer.header("www-authenticate"), Some("Bearer"), "{what}");
        assert!(!answer.has_rate_limit_headers(), "{what}: {answer:?}");
    }
    // Also on an unknown route: nothing is served before authentication.
    let answer = api.send("GET", "/nope", None, "", b"");
    assert_eq!(answer.error(401), "unauthorized");

    let ok = api.get("/api/v1/sites", &token);
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.json(), json!({ "sites": [] }));
    assert!(ok.has_rate_limit_headers(), "{ok:?}");
    assert_eq!(ok.header("ratelimit-policy"), Some("\"pro\";q=500;w=60"));
    // The token's use is recorded (in the background).
    wait_for(Duration::from_secs(10), "last_used_at recorded", || {
        let listed = node.rpc("tenants.tokens", json!({ "tenant": acme }));
        listed["result"]["tokens"][0]["last_used_at"]
            .is_string()
            .then_some(())
    });

    // Revoked: 401 from then on.
    let (tenant, revoked) = tenant_with_token(&node, "gone", "starter");
    let listed = node.rpc("tenants.tokens", json!({ "tenant": tenant }));
    let token_id = listed["result"]["tokens"][0]["id"].as_i64().unwrap();
    assert_eq!(api.get("/api/v1/sites", &revoked).status, 200);
    let r = node.rpc("tenants.revoke", json!({ "id": token_id }));
    assert!(r.get("error").is_none(), "{r}");
    assert_eq!(
        api.get("/api/v1/sites", &revoked).error(401),
        "unauthorized"
    );

    // Suspended by `chom tenants suspend`: 403 until `chom tenants resume`.
    let (frozen, frozen_token) = tenant_with_token(&node, "frozen", "starter");
    let id = frozen.to_string();
    let said = cli_ok(&node, &["tenants", "suspend", &id]);
    assert_eq!(said, format!("tenant {frozen} (frozen) is suspended\n"));
    let answer = api.get("/api/v1/sites", &frozen_token);
    assert_eq!(answer.error(403), "suspended");
    assert!(answer.has_rate_limit_headers(), "{answer:?}");
    let listed = node.rpc("tenants.list", json!({}));
    assert!(
        listed["result"]["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == frozen && t["status"] == "suspended"),
        "{listed}"
    );
    let resumed = cli_ok(&node, &["--json", "tenants", "resume", &id]);
    let doc: Value = serde_json::from_str(&resumed).unwrap();
    assert_eq!(
        (doc["id"].as_i64(), doc["status"].as_str()),
        (Some(frozen), Some("active"))
    );
    assert_eq!(api.get("/api/v1/sites", &frozen_token).status, 200);
    let (code, _, err) = cli(&node, &["tenants", "suspend", "999999"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no tenant 999999"), "{err}");

    // Tokens never reach the log.
    let log = node.log_text();
    for secret in [&token, &revoked, &frozen_token] {
        assert!(!log.contains(secret.as_str()), "a token in the log");
    }
}

#[test]
fn a_starter_burst_of_150_gets_100_answers_and_50_refusals() {
    let node = Node::start("api-burst", "", &[]);
    node.wait_ready();
    let api = Api::of(&node);
    let (_, token) = tenant_with_token(&node, "small", "starter");
    let started = Instant::now();
    let answers: Vec<Answer> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..10)
            .map(|_| {
                scope.spawn(|| {
                    (0..15)
                        .map(|_| api.get("/api/v1/sites", &token))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let took = started.elapsed();
    assert_eq!(answers.len(), 150);
    let refused: Vec<&Answer> = answers.iter().filter(|a| a.status == 429).collect();
    let answered = answers.len() - refused.len();
    // GCRA's bound: 100 plus one per emission interval (600 ms) the burst lasted.
    let refills = usize::try_from(took.as_millis() / 600).unwrap();
    assert!(
        (100..=100 + refills).contains(&answered),
        "{answered} answered in {took:?}"
    );
    if refills == 0 {
        assert_eq!(answered, 100);
        assert_eq!(refused.len(), 50);
    }
    for answer in &answers {
        assert!(answer.has_rate_limit_headers(), "{answer:?}");
        assert!(answer.status == 200 || answer.status == 429, "{answer:?}");
    }
    for answer in &refused {
        assert_eq!(answer.error(429), "rate_limited");
        let retry: u64 = answer
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("Retry-After: {answer:?}"));
        assert!((1..=60).contains(&retry), "{answer:?}");
        assert_eq!(answer.json()["retry_after"], json!(retry), "{answer:?}");
    }
    // After the emission interval, allowed again.
    wait_for(
        Duration::from_secs(10),
        "an answer after the refill",
        || (api.get("/api/v1/sites", &token).status == 200).then_some(()),
    );
    let page = node.get("/metrics").1;
    let limited = metric(&page, "chom_rate_limited_total{tier=\"starter\"}").unwrap();
    assert!(limited >= refused.len() as f64, "{page}");
    let counted = metric(
        &page,
        "chom_api_requests_total{route=\"/api/v1/sites\",status=\"429\"}",
    )
    .unwrap_or(0.0);
    assert!(counted >= refused.len() as f64, "{page}");
}

#[test]
fn with_limiting_off_nothing_is_counted_or_refused() {
    let extra = "[api.rate_limits]\nenabled = false\nstarter = 1\n";
    let node = Node::start("api-unlimited", extra, &[]);
    node.wait_ready();
    let api = Api::of(&node);
    let (_, token) = tenant_with_token(&node, "free", "starter");
    for _ in 0..5 {
        let answer = api.get("/api/v1/sites", &token);
        assert_eq!(answer.status, 200, "{answer:?}");
        assert!(!answer.has_rate_limit_headers(), "{answer:?}");
    }
    let page = node.get("/metrics").1;
    assert_eq!(
        metric(&page, "chom_rate_limited_total{tier=\"starter\"}"),
        Some(0.0),
        "{page}"
    );
}

/// Config for a node whose `[ssh]` points at `sshd`, with a small `api.max_body`.
fn fleet_extra(sshd: &Sshd) -> String {
    format!(
        "[queue]\nworkers = 4\npoll_interval = \"200ms\"\nbackoff = [\"1s\"]\n{ssh}connect_timeout = \"2s\"\ncommand_timeout = \"10s\"\nretry_base = \"100ms\"\n[api]\nmax_body = 2048\n",
        ssh = ssh_section(sshd),
    )
}

fn add_vps(node: &Node, id: &str, sshd: &Sshd, tenant: Option<i64>) {
    let r = node.rpc(
        "vps.add",
        json!({ "id": id, "host": "127.0.0.1", "port": sshd.port(), "tenant_id": tenant }),
    );
    assert!(r.get("error").is_none(), "vps.add: {r}");
}

/// Poll `GET /api/v1/jobs/{id}` until its state is `state`.
fn wait_job(api: &Api, token: &str, id: i64, state: &str) -> Value {
    wait_for(
        Duration::from_secs(60),
        &format!("job {id} {state}"),
        || {
            let job = api.get(&format!("/api/v1/jobs/{id}"), token).json();
            (job["state"] == state).then_some(job)
        },
    )
}

#[test]
fn tenants_create_and_delete_their_own_sites_and_never_see_anothers() {
    let sshd = Sshd::start();
    let node = Node::start("api-sites", &fleet_extra(&sshd), &[]);
    node.wait_ready();
    let api = Api::of(&node);
    let (a, a_token) = tenant_with_token(&node, "alpha", "pro");
    let (b, b_token) = tenant_with_token(&node, "beta", "pro");
    add_vps(&node, "web-1", &sshd, None);
    add_vps(&node, "web-b", &sshd, Some(b));
    // No server named: A owns none, so the shared one.
    let created = api.post_json(
        "/api/v1/sites",
        &a_token,
        &json!({ "domain": "a-shop.example.com", "type": "wordpress" }),
    );
    assert_eq!(created.status, 202, "{created:?}");
    assert!(created.has_rate_limit_headers());
    let doc = created.json();
    let (a_site, a_job) = (
        doc["site"]["id"].as_i64().unwrap(),
        doc["job"].as_i64().unwrap(),
    );
    assert_eq!(doc["site"]["vps_id"], "web-1", "{doc}");
    assert_eq!(doc["site"]["tenant_id"], a, "{doc}");
    assert_eq!(doc["site"]["status"], "pending", "{doc}");
    // B's site goes to B's own server.
    let b_created = api.post_json(
        "/api/v1/sites",
        &b_token,
        &json!({ "domain": "b-shop.example.com", "type": "html" }),
    );
    assert_eq!(b_created.status, 202, "{b_created:?}");
    let b_doc = b_created.json();
    assert_eq!(b_doc["site"]["vps_id"], "web-b", "{b_doc}");
    let (b_site, b_job) = (
        b_doc["site"]["id"].as_i64().unwrap(),
        b_doc["job"].as_i64().unwrap(),
    );

    let job = wait_job(&api, &a_token, a_job, "completed");
    assert_eq!(job["kind"], "site.provision", "{job}");
    assert_eq!(job["max_attempts"], 5, "{job}");
    assert!(job["finished_at"].is_string(), "{job}");
    wait_job(&api, &b_token, b_job, "completed");
    let site = api.get(&format!("/api/v1/sites/{a_site}"), &a_token);
    assert_eq!(site.json()["status"], "active", "{site:?}");

    // A's view: only A's.
    let listed = api.get("/api/v1/sites", &a_token).json();
    let ids: Vec<i64> = listed["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [a_site], "{listed}");
    // Every route: B's site and job are 404 to A, as are a job of another kind and a site
    // that does not exist.
    let noop = node.enqueue("noop", json!({}));
    for (path, what) in [
        (format!("/api/v1/sites/{b_site}"), "site"),
        (format!("/api/v1/sites/{}", b_site + 100), "site"),
        (format!("/api/v1/jobs/{b_job}"), "job"),
        (format!("/api/v1/jobs/{noop}"), "job"),
        ("/api/v1/sites/x".to_owned(), "site"),
    ] {
        let answer = api.get(&path, &a_token);
        assert_eq!(answer.error(404), "not_found", "{path}");
        assert!(answer.json()["message"].as_str().unwrap().contains(what));
        assert!(answer.has_rate_limit_headers(), "{path}");
    }
    let before = all_sites(&node);
    let answer = api.delete(&format!("/api/v1/sites/{b_site}"), &a_token);
    assert_eq!(answer.error(404), "not_found");
    // A site on B's server: refused without naming B.
    let answer = api.post_json(
        "/api/v1/sites",
        &a_token,
        &json!({ "domain": "a-two.example.com", "type": "html", "vps": "web-b" }),
    );
    assert_eq!(answer.error(422), "unprocessable");
    assert!(!answer.body.contains("beta"), "{answer:?}");
    // A domain taken (by B): 409.
    let answer = api.post_json(
        "/api/v1/sites",
        &a_token,
        &json!({ "domain": "b-shop.example.com", "type": "html" }),
    );
    assert_eq!(answer.error(409), "conflict");
    assert_eq!(all_sites(&node), before, "nothing changed");

    // A deletes its own site: 202, deleting, then gone; the job stays A's, never B's.
    let deleted = api.delete(&format!("/api/v1/sites/{a_site}"), &a_token);
    assert_eq!(deleted.status, 202, "{deleted:?}");
    let doc = deleted.json();
    assert_eq!(doc["site"]["status"], "deleting", "{doc}");
    let delete_job = doc["job"].as_i64().unwrap();
    assert_eq!(
        api.get(&format!("/api/v1/jobs/{delete_job}"), &b_token)
            .error(404),
        "not_found"
    );
    let job = wait_job(&api, &a_token, delete_job, "completed");
    assert_eq!(job["kind"], "site.delete", "{job}");
    let gone = api.get(&format!("/api/v1/sites/{a_site}"), &a_token);
    assert_eq!(gone.error(404), "not_found");
    let calls = sshd.fake().calls();
    for (command, domain) in [
        ("site:create", "a-shop.example.com"),
        ("site:delete", "a-shop.example.com"),
        ("site:create", "b-shop.example.com"),
    ] {
        assert!(
            calls
                .iter()
                .any(|c| c.iter().any(|a| a == command) && c.iter().any(|a| a == domain)),
            "{command} {domain}: {calls:?}"
        );
    }
    // B's site is untouched.
    let b_view = api.get(&format!("/api/v1/sites/{b_site}"), &b_token).json();
    assert_eq!(b_view["status"], "active", "{b_view}");
}

/// A refused request: method, path, extra header lines, body; the status and code expected.
type Case = (
    &'static str,
    String,
    &'static str,
    Vec<u8>,
    u16,
    &'static str,
);

#[test]
fn a_full_server_is_refused_as_such_and_placement_passes_it_over() {
    let node = Node::start("api-full", "", &[]);
    node.wait_ready();
    let api = Api::of(&node);
    let (_, token) = tenant_with_token(&node, "gamma", "pro");
    // Never connected to: the provisioning jobs only have to exist.
    let add = |id: &str, max_sites: Option<u32>| {
        let r = node.rpc(
            "vps.add",
            json!({ "id": id, "host": "127.0.0.1", "port": 1, "max_sites": max_sites }),
        );
        assert!(r.get("error").is_none(), "vps.add: {r}");
    };
    add("tiny", Some(1));
    let create = |domain: &str, vps: Option<&str>| {
        let mut body = json!({ "domain": domain, "type": "html" });
        if let Some(vps) = vps {
            body["vps"] = json!(vps);
        }
        api.post_json("/api/v1/sites", &token, &body)
    };
    let first = create("one.example.com", None);
    assert_eq!(first.status, 202, "{first:?}");
    assert_eq!(first.json()["site"]["vps_id"], "tiny");

    let before = all_sites(&node);
    let named = create("two.example.com", Some("tiny"));
    assert_eq!(named.error(422), "server_full", "{named:?}");
    assert!(named.body.contains("tiny"), "{named:?}");
    let unnamed = create("two.example.com", None);
    assert_eq!(unnamed.error(422), "unprocessable", "{unnamed:?}");
    assert!(unnamed.body.contains("room"), "{unnamed:?}");
    assert_eq!(all_sites(&node), before, "nothing stored");

    add("roomy", None);
    let placed = create("two.example.com", None);
    assert_eq!(placed.status, 202, "{placed:?}");
    assert_eq!(placed.json()["site"]["vps_id"], "roomy");
    let listed = node.rpc("vps.list", json!({}));
    let tiny = &listed["result"]["vps"][1];
    assert_eq!(
        (&tiny["id"], &tiny["max_sites"]),
        (&json!("tiny"), &json!(1)),
        "{listed}"
    );
}

#[test]
fn refused_inputs_are_json_4xx_and_change_nothing() {
    let sshd = Sshd::start();
    let node = Node::start("api-inputs", &fleet_extra(&sshd), &[]);
    node.wait_ready();
    let api = Api::of(&node);
    let (_, token) = tenant_with_token(&node, "alpha", "pro");
    add_vps(&node, "web-1", &sshd, None);
    let json_type = "Content-Type: application/json\r\n";
    let big = format!(
        "{{\"domain\":\"x.example.com\",\"type\":\"html\",\"pad\":\"{}\"}}",
        "p".repeat(4096)
    );
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/api/v1/sites".into(),
            json_type,
            b"{\"domain\":".to_vec(),
            400,
            "bad_json",
        ),
        (
            "POST",
            "/api/v1/sites".into(),
            "",
            br#"{"domain":"x.example.com","type":"html"}"#.to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            "/api/v1/sites".into(),
            json_type,
            big.into_bytes(),
            413,
            "too_large",
        ),
        (
            "POST",
            "/api/v1/sites".into(),
            json_type,
            br#"{"domain":"Not A Domain","type":"html"}"#.to_vec(),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/v1/sites".into(),
            json_type,
            br#"{"domain":"x.example.com","type":"no such type!"}"#.to_vec(),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/v1/sites".into(),
            json_type,
            br#"{"domain":"x.example.com","type":"html","owner":1}"#.to_vec(),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/v1/sites".into(),
            json_type,
            br#"{"domain":"x.example.com"}"#.to_vec(),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/v1/sites".into(),
            json_type,
            br#"{"domain":"x.example.com","type":"html","vps":"nope"}"#.to_vec(),
            422,
            "unprocessable",
        ),
        (
            "PUT",
            "/api/v1/sites".into(),
            json_type,
            b"{}".to_vec(),
            405,
            "method_not_allowed",
        ),
        (
            "GET",
            "/api/v2/anything".into(),
            "",
            Vec::new(),
            404,
            "not_found",
        ),
        ("GET", "/".into(), "", Vec::new(), 404, "not_found"),
    ];
    for (method, path, extra, body, status, code) in cases {
        let answer = api.send(method, &path, Some(&token), extra, &body);
        assert_eq!(answer.error(status), code, "{method} {path}: {answer:?}");
        assert!(
            answer
                .header("content-type")
                .is_some_and(|t| t.starts_with("application/json")),
            "{answer:?}"
        );
        assert!(answer.has_rate_limit_headers(), "{method} {path}");
    }
    assert_eq!(all_sites(&node), json!([]), "nothing created");
    let page = node.get("/metrics").1;
    assert!(
        metric(
            &page,
            "chom_api_requests_total{route=\"unmatched\",status=\"404\"}"
        ) == Some(2.0),
        "{page}"
    );
    assert!(
        !page.contains("/api/v2/anything"),
        "raw paths never become labels"
    );

    // Metrics queries without an observability host: refused queries in Prometheus' shape,
    // an acceptable one 503.
    for query in ["sum(", "up{tenant_id=\"2\"}", "up{tenant_id=~\".*\"}"] {
        let path = format!("/api/v1/metrics/query?query={}", percent(query));
        let answer = api.get(&path, &token);
        assert_eq!(answer.status, 400, "{query}: {answer:?}");
        let doc = answer.json();
        assert_eq!(doc["status"], "error", "{doc}");
        assert_eq!(doc["errorType"], "bad_data", "{doc}");
        assert!(doc["error"].is_string(), "{doc}");
    }
    let missing = api.get("/api/v1/metrics/query", &token);
    assert_eq!(missing.json()["errorType"], "bad_data", "{missing:?}");
    let answer = api.get("/api/v1/metrics/query?query=up", &token);
    assert_eq!(answer.error(503), "observability_unavailable");
}

#[test]
fn metrics_queries_see_only_the_tenants_series() {
    // Prometheus scrapes itself twice, as tenant 1's and tenant 2's target (a fresh database
    // numbers the node's first two tenants 1 and 2).
    let target = |tenant: u32| {
        format!(
            "  - job_name: t{tenant}\n    static_configs:\n      - targets: ['127.0.0.1:{{port}}']\n        labels:\n          tenant_id: '{tenant}'\n"
        )
    };
    let prom = Prometheus::start(
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n{}{}",
            target(1),
            target(2)
        ),
        &[],
    );
    let extra = format!(
        "[observability]\nprometheus_url = \"{}\"\n",
        prom.daemon().url()
    );
    let node = Node::start("api-promql", &extra, &[]);
    node.wait_ready();
    let api = Api::of(&node);
    let (one, token) = tenant_with_token(&node, "one", "pro");
    let (two, _) = tenant_with_token(&node, "two", "pro");
    assert_eq!((one, two), (1, 2));
    // Prometheus itself sees both targets...
    wait_for(Duration::from_secs(60), "both targets scraped", || {
        let (_, body) = prom.daemon().get("/api/v1/query?query=count(up)")?;
        body.contains("\"2\"]").then_some(())
    });
    // ...the tenant only its own.
    let answer = api
        .get(
            &format!("/api/v1/metrics/query?query={}", percent("count(up)")),
            &token,
        )
        .json();
    assert_eq!(answer["resultType"], "vector", "{answer}");
    assert_eq!(answer["result"][0]["value"][1], "1", "{answer}");
    assert_eq!(answer["_cached"], false, "{answer}");
    let doc = api
        .get(
            &format!("/api/v1/metrics/query?query={}", percent("up")),
            &token,
        )
        .json();
    let series = doc["result"].as_array().unwrap();
    assert_eq!(series.len(), 1, "{doc}");
    assert_eq!(series[0]["metric"]["tenant_id"], "1", "{doc}");
    assert_eq!(series[0]["metric"]["job"], "t1", "{doc}");
    // Naming its own tenant is fine; another's is refused.
    let own = api.get(
        &format!(
            "/api/v1/metrics/query?query={}",
            percent("up{tenant_id=\"1\"}")
        ),
        &token,
    );
    assert_eq!(own.status, 200, "{own:?}");
    let other = api.get(
        &format!(
            "/api/v1/metrics/query?query={}",
            percent("up{tenant_id=\"2\"}")
        ),
        &token,
    );
    assert_eq!(other.status, 400, "{other:?}");
    assert_eq!(other.json()["errorType"], "bad_data");
}

#[test]
fn a_taken_api_port_is_a_clear_start_up_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let mut node = Node::start("api-taken", &format!("[api]\nlisten = \"{addr}\"\n"), &[]);
    let status = node.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{}", node.log_text());
    let log = node.log_text();
    assert!(log.contains("api.listen"), "{log}");
}

/// A stand-in for Prometheus that answers its health probe and never answers a query: each
/// query's connection is held open until the client drops it. Returns its URL and the number
/// of queries being held.
fn silent_prometheus() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let held = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = held.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let held = counter.clone();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                if head.starts_with(b"GET /-/healthy") {
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    return;
                }
                held.fetch_add(1, Ordering::SeqCst);
                // Until the node gives up on the query and closes the connection.
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest);
                held.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (url, held)
}

#[test]
fn a_slow_observability_host_costs_one_query_slot_and_times_out() {
    use std::sync::atomic::Ordering;
    let (url, held) = silent_prometheus();
    let extra = format!(
        "[observability]\nprometheus_url = \"{url}\"\nquery_timeout = \"60s\"\n\
         [api]\nrequest_timeout = \"2s\"\nmax_concurrent_queries = 1\n"
    );
    let node = Node::start("api-bulkhead", &extra, &[]);
    node.wait_ready();
    let api = Api::of(&node);
    let (_, token) = tenant_with_token(&node, "one", "pro");
    let (_, other) = tenant_with_token(&node, "two", "pro");
    let path = format!("/api/v1/metrics/query?query={}", percent("up"));
    std::thread::scope(|scope| {
        let first = scope.spawn(|| {
            let asked = Instant::now();
            (api.get(&path, &token), asked.elapsed())
        });
        wait_for(Duration::from_secs(10), "the first query held", || {
            (held.load(Ordering::SeqCst) >= 1).then_some(())
        });
        // The tenant's one slot is taken: refused at once, not queued.
        let asked = Instant::now();
        let second = api.get(&path, &token);
        assert_eq!(second.error(429), "too_many_queries");
        assert!(second.has_rate_limit_headers(), "{second:?}");
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "{:?}",
            asked.elapsed()
        );
        // Another tenant has slots of its own (and waits like the first).
        let third = api.get(&path, &other);
        assert_eq!(third.error(503), "timeout");
        // The first ends at api.request_timeout, not the 60 s query timeout.
        let (first, took) = first.join().unwrap();
        assert_eq!(first.error(503), "timeout");
        assert!(first.has_rate_limit_headers(), "{first:?}");
        assert!(took < Duration::from_secs(10), "{took:?}");
    });
    // The slot came back with the timeout.
    wait_for(Duration::from_secs(10), "the held queries dropped", || {
        (held.load(Ordering::SeqCst) == 0).then_some(())
    });
    // Not 429: the slot is free again (the answer is the timeout, or the observability
    // host's unavailability once its breaker counted the abandoned queries).
    let again = api.get(&path, &token);
    let code = again.error(503);
    assert!(
        ["timeout", "observability_unavailable"].contains(&code.as_str()),
        "{again:?}"
    );
}

/// `[cache]` on `redis_url` with this test's own rate-limit key prefix (tests share Redis).
fn shared_limits(redis_url: &str) -> String {
    format!(
        "[cache]\nurl = \"{redis_url}\"\n[api]\nrate_limit_prefix = \"chom:rl:test-{}:\"\n",
        rand_suffix()
    )
}

/// `n` GETs of the sites list from 16 clients at once, through `apis` in turn: the non-429
/// count.
fn burst_across(apis: &[&Api], token: &str, n: usize) -> usize {
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..16)
            .map(|_| {
                let next = &next;
                scope.spawn(move || {
                    let mut answered = 0;
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= n {
                            return answered;
                        }
                        if apis[i % apis.len()].get("/api/v1/sites", token).status != 429 {
                            answered += 1;
                        }
                    }
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    })
}

#[test]
fn pro_and_enterprise_tenants_get_their_quotas() {
    let node = Node::start("api-tiers", "", &[]);
    node.wait_ready();
    let api = Api::of(&node);
    for (tier, quota) in [("pro", 500usize), ("enterprise", 2000)] {
        let (_, token) = tenant_with_token(&node, tier, tier);
        let started = Instant::now();
        let answered = burst_across(&[&api], &token, quota + 100);
        // GCRA's bound: the quota plus one per emission interval the burst lasted.
        let interval_ms = 60_000 / quota as u128;
        let refills = usize::try_from(started.elapsed().as_millis() / interval_ms).unwrap();
        assert!(
            (quota..=quota + refills).contains(&answered),
            "{tier}: {answered} answered of {} in {:?}",
            quota + 100,
            started.elapsed()
        );
    }
}

#[test]
fn two_nodes_sharing_redis_hold_a_tenant_to_one_budget() {
    let rig = PgRig::new("api_two_nodes");
    let more = shared_limits(&redis_url());
    let a = rig.ready("api-a", 1, &more);
    let b = rig.ready("api-b", 1, &more);
    let (api_a, api_b) = (Api::of(&a), Api::of(&b));
    // Made through node a, known to node b: one database.
    let (_, token) = tenant_with_token(&a, "shared", "starter");
    let started = Instant::now();
    let answered = burst_across(&[&api_a, &api_b], &token, 150);
    let refills = usize::try_from(started.elapsed().as_millis() / 600).unwrap();
    assert!(
        (100..=100 + refills).contains(&answered),
        "{answered} answered across two nodes in {:?}",
        started.elapsed()
    );
    for node in [&a, &b] {
        let page = node.get("/metrics").1;
        assert_eq!(metric(&page, "chom_rate_limit_fallback_total"), Some(0.0));
    }
}

#[test]
fn with_redis_stopped_requests_still_answer_and_shared_limits_resume() {
    let redis = chom_testkit::PrivateRedis::start();
    let node = Node::start("api-redis-down", &shared_limits(&redis.url()), &[]);
    node.wait_ready();
    let api = Api::of(&node);
    let (_, token) = tenant_with_token(&node, "steady", "pro");
    let fallbacks = || metric(&node.get("/metrics").1, "chom_rate_limit_fallback_total");
    assert_eq!(api.get("/api/v1/sites", &token).status, 200);
    assert_eq!(fallbacks(), Some(0.0));

    redis.stop();
    for _ in 0..5 {
        let answer = api.get("/api/v1/sites", &token);
        assert_eq!(answer.status, 200, "{answer:?}");
        assert!(answer.has_rate_limit_headers(), "{answer:?}");
    }
    let counted = fallbacks().unwrap();
    assert!(counted >= 1.0, "fallback checks counted: {counted}");

    redis.start_again();
    // Shared limiting resumes: requests stop adding to the fallback count.
    wait_for(Duration::from_secs(30), "shared limits to resume", || {
        let before = fallbacks()?;
        for _ in 0..3 {
            assert_eq!(api.get("/api/v1/sites", &token).status, 200);
        }
        (fallbacks()? == before).then_some(())
    });
    node.assert_running();
}

#[test]
fn with_redis_down_nodes_split_a_quota_by_the_live_nodes() {
    let redis = chom_testkit::PrivateRedis::start();
    let rig = PgRig::new("api_split");
    let more = shared_limits(&redis.url());
    let a = rig.ready("api-split-a", 1, &more);
    let b = rig.ready("api-split-b", 1, &more);
    let (api_a, api_b) = (Api::of(&a), Api::of(&b));
    let (_, probe) = tenant_with_token(&a, "probe", "starter");
    let (_, token) = tenant_with_token(&a, "split", "starter");
    redis.stop();
    // Each node allows half of the starter quota once its reaper has counted both nodes
    // (the probe tenant's budget is spent on waiting for that, not the measured one's).
    for api in [&api_a, &api_b] {
        wait_for(Duration::from_secs(30), "a fallback share of 50", || {
            let answer = api.get("/api/v1/sites", &probe);
            (answer.header("ratelimit-policy") == Some("\"starter\";q=50;w=60")).then_some(())
        });
    }
    let started = Instant::now();
    let answered = burst_across(&[&api_a, &api_b], &token, 150);
    // Two nodes, each refilling one request per 1.2 s.
    let refills = usize::try_from(started.elapsed().as_millis() / 600).unwrap();
    assert!(
        (100..=100 + refills).contains(&answered),
        "{answered} answered across two nodes without Redis in {:?}",
        started.elapsed()
    );
    for node in [&a, &b] {
        let counted = metric(&node.get("/metrics").1, "chom_rate_limit_fallback_total");
        assert!(counted.unwrap_or(0.0) >= 50.0, "{counted:?}");
    }
}
