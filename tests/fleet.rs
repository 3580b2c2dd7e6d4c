//! End-to-end tests of the fleet: the built node against a real OpenSSH `sshd` on loopback
//! (started by `chom_testkit::Sshd` with its own host key, user keys and a fake `vpsmanager`
//! that records its argv and can be told to sleep or fail).

mod common;

use std::time::Duration;

use chom_testkit::Sshd;
use common::*;
use serde_json::{Value, json};

const DEBUG: &[(&str, &str)] = &[("CHOM_DEBUG_HOOKS", "1")];

/// Config for a node whose `[ssh]` points at `sshd` (fast retries, short timeouts).
fn fleet_extra(sshd: &Sshd, more: &str) -> String {
    format!(
        r#"
[queue]
workers = 12
poll_interval = "200ms"
backoff = ["1s"]

{ssh}
connect_timeout = "2s"
command_timeout = "10s"
queue_timeout = "30s"
retry_base = "100ms"
keepalive_interval = "1s"
{more}
"#,
        ssh = ssh_section(sshd),
    )
}

fn add_vps(node: &Node, id: &str, sshd: &Sshd) {
    let r = node.rpc(
        "vps.add",
        json!({ "id": id, "host": "127.0.0.1", "port": sshd.port() }),
    );
    assert!(r.get("error").is_none(), "vps.add: {r}");
}

/// A ready node whose fleet has one server, `web-1`, served by `sshd`.
fn node_with_web1(sshd: &Sshd, tag: &str, more: &str, env: &[(&str, &str)]) -> Node {
    let node = Node::start(tag, &fleet_extra(sshd, more), env);
    node.wait_ready();
    add_vps(&node, "web-1", sshd);
    node
}

fn enqueue_exec(node: &Node, vps: &str, command: &str, args: Value) -> i64 {
    node.enqueue(
        "vps.exec",
        json!({ "vps": vps, "command": command, "args": args }),
    )
}

/// The breaker of `vps` as `breaker.list` shows it (waiting for its actor to be started).
fn breaker_state(node: &Node, vps: &str) -> Value {
    wait_for(
        Duration::from_secs(30),
        &format!("breaker of {vps}"),
        || {
            let r = node.rpc("breaker.list", json!({}));
            r["result"]["breakers"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|b| b["vps"] == vps)
                .cloned()
        },
    )
}

#[test]
fn hostile_arguments_arrive_as_one_literal_argument_each() {
    let sshd = Sshd::start();
    let node = node_with_web1(&sshd, "fleet-quote", "", &[]);
    let marker = std::env::temp_dir().join(format!("pwned-{}", rand_suffix()));
    let hostile = format!("x'; touch {}; echo '", marker.display());
    let args = json!([hostile, "$(reboot)", "`id`", "a b\nc", "--flag=\"q\""]);
    let id = enqueue_exec(&node, "web-1", "site:create", args.clone());
    node.wait_job_state(id, "completed", Duration::from_secs(30));
    let calls = sshd.fake().calls();
    let expected: Vec<String> = std::iter::once("site:create".to_owned())
        .chain(
            args.as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_owned()),
        )
        .collect();
    assert_eq!(calls, vec![expected]);
    assert!(!marker.exists(), "the injected command ran");
}

#[test]
fn bad_command_names_fail_the_job_at_once() {
    let sshd = Sshd::start();
    let node = node_with_web1(&sshd, "fleet-badcmd", "", &[]);
    let id = enqueue_exec(&node, "web-1", "site:create; reboot", json!([]));
    let job = node.wait_job_state(id, "failed", Duration::from_secs(30));
    assert_eq!(job["attempts"], 1, "{job}");
    let unknown = enqueue_exec(&node, "nope", "site:list", json!([]));
    let job = node.wait_job_state(unknown, "failed", Duration::from_secs(30));
    assert!(
        job["last_error"]
            .as_str()
            .unwrap()
            .contains("no vps `nope`"),
        "{job}"
    );
    assert!(sshd.fake().calls().is_empty());

    // Servers come and go live: add starts an actor, remove stops it.
    add_vps(&node, "web-2", &sshd);
    let tree = node.rpc("tree", json!({}))["result"].clone();
    assert_eq!(
        tree_child(&tree, "fleet/vps:web-2")["state"],
        "running",
        "{tree}"
    );
    let r = node.rpc("vps.remove", json!({ "id": "web-2" }));
    assert!(r.get("error").is_none(), "{r}");
    let tree = node.rpc("tree", json!({}))["result"].clone();
    assert!(
        !tree_nodes(&tree)
            .iter()
            .any(|c| c["path"] == "fleet/vps:web-2"),
        "{tree}"
    );
    let listed = node.rpc("vps.list", json!({}));
    assert_eq!(
        listed["result"]["vps"].as_array().unwrap().len(),
        1,
        "{listed}"
    );
    let again = node.rpc("vps.remove", json!({ "id": "web-2" }));
    assert!(
        again["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no vps"),
        "{again}"
    );
}

#[test]
fn ten_concurrent_jobs_on_one_vps_never_run_more_than_three_at_once() {
    let sshd = Sshd::start();
    sshd.fake().set_sleep(Duration::from_millis(400));
    let node = node_with_web1(&sshd, "fleet-bulkhead", "", &[]);
    let ids: Vec<i64> = (0..10)
        .map(|i| enqueue_exec(&node, "web-1", "backup:run", json!([i.to_string()])))
        .collect();
    for id in ids {
        node.wait_job_state(id, "completed", Duration::from_secs(60));
    }
    let fake = sshd.fake();
    assert_eq!(fake.calls().len(), 10);
    let overlap = fake.max_overlap();
    assert!(overlap <= 3, "{overlap} commands ran at once");
    assert!(
        overlap >= 2,
        "commands never overlapped ({overlap}): no concurrency at all"
    );
    let metrics = node.get("/metrics").1;
    assert_eq!(
        metric(
            &metrics,
            "chom_ssh_commands_total{outcome=\"ok\",vps=\"web-1\"}"
        ),
        Some(10.0),
        "{metrics}"
    );
}

#[test]
fn dead_sshd_opens_the_breaker_and_a_trial_call_closes_it_when_back() {
    let sshd = Sshd::start();
    let breaker = "[breaker]\nfailure_threshold = 5\nopen_timeout = \"3s\"";
    let node = node_with_web1(&sshd, "fleet-breaker", breaker, &[]);
    // A first command opens the session; then the host dies.
    let first = enqueue_exec(&node, "web-1", "site:list", json!([]));
    node.wait_job_state(first, "completed", Duration::from_secs(30));
    sshd.kill();

    let queued: Vec<i64> = (0..4)
        .map(|i| {
            enqueue_exec(
                &node,
                "web-1",
                "site:create",
                json!([format!("s{i}.example.com")]),
            )
        })
        .collect();
    let open = wait_for(Duration::from_secs(60), "breaker to open", || {
        let b = breaker_state(&node, "web-1");
        (b["breaker"]["state"] == "open").then_some(b)
    });
    assert_eq!(open["breaker"]["trips"], 1, "{open}");
    let page = node.get("/metrics").1;
    assert_eq!(
        metric(&page, "chom_circuit_breaker_open{service=\"vps:web-1\"}"),
        Some(1.0)
    );
    let transport = metric(
        &page,
        "chom_ssh_commands_total{outcome=\"transport_failed\",vps=\"web-1\"}",
    )
    .unwrap();
    assert!(transport >= 5.0, "{page}");
    let (code, health) = node.get("/health?fresh=true");
    assert_eq!(code, 200, "{health}");
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["checks"]["fleet"]["status"], "warning", "{health}");

    // While open, jobs are turned away without touching the network: no transport failure
    // is added however many jobs try.
    wait_for(Duration::from_secs(30), "a rejection while open", || {
        let page = node.get("/metrics").1;
        metric(
            &page,
            "chom_ssh_commands_total{outcome=\"rejected\",vps=\"web-1\"}",
        )
        .filter(|r| *r >= 1.0)
    });
    let page = node.get("/metrics").1;
    let transport_while_open = metric(
        &page,
        "chom_ssh_commands_total{outcome=\"transport_failed\",vps=\"web-1\"}",
    )
    .unwrap();
    if breaker_state(&node, "web-1")["breaker"]["state"] == "open" {
        assert_eq!(
            transport_while_open, transport,
            "network touched while open"
        );
    }

    sshd.restart();
    for id in queued {
        node.wait_job_state(id, "completed", Duration::from_secs(90));
    }
    let closed = breaker_state(&node, "web-1");
    assert_eq!(closed["breaker"]["state"], "closed", "{closed}");
    let (_, health) = node.get("/health?fresh=true");
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["checks"]["fleet"]["status"], "ok", "{health}");
}

#[test]
fn changed_host_key_is_refused_forces_the_breaker_open_and_is_not_retried() {
    let sshd = Sshd::start();
    let node = node_with_web1(&sshd, "fleet-hostkey", "", &[]);
    sshd.rotate_host_key();
    let id = enqueue_exec(&node, "web-1", "site:list", json!([]));
    let job = node.wait_job_state(id, "failed", Duration::from_secs(30));
    assert_eq!(job["attempts"], 1, "retried: {job}");
    let error = job["last_error"].as_str().unwrap();
    assert!(error.contains("host key"), "{error}");
    let b = breaker_state(&node, "web-1");
    assert_eq!(b["breaker"]["state"], "forced_open", "{b}");
    assert!(
        b["breaker"]["reason"]
            .as_str()
            .unwrap()
            .contains("host key"),
        "{b}"
    );
    assert!(sshd.fake().calls().is_empty());
    assert!(
        node.log_text().contains("security"),
        "no security event logged"
    );
}

#[test]
fn a_panicking_vps_actor_is_restarted_and_its_in_flight_job_retried() {
    let sshd = Sshd::start();
    let node = node_with_web1(&sshd, "fleet-panic", "", DEBUG);
    sshd.fake().set_sleep(Duration::from_secs(3));
    let id = enqueue_exec(&node, "web-1", "site:create", json!(["a.example.com"]));
    wait_for(Duration::from_secs(30), "the command to run", || {
        (sshd.fake().running() > 0).then_some(())
    });
    let r = node.rpc("debug.vps_panic", json!({ "vps": "web-1" }));
    assert!(r.get("error").is_none(), "{r}");
    wait_for(Duration::from_secs(30), "vps actor restarted", || {
        let tree = node.rpc("tree", json!({}))["result"].clone();
        let vps = tree_child(&tree, "fleet/vps:web-1");
        (vps["restart_count"].as_u64() >= Some(1) && vps["state"] == "running").then_some(())
    });
    sshd.fake().set_sleep(Duration::ZERO);
    let job = node.wait_job_state(id, "completed", Duration::from_secs(60));
    assert_eq!(job["attempts"], 2, "{job}");
    // A new session served the retry: the fake ran the command twice.
    assert_eq!(sshd.fake().calls().len(), 2);
}

#[test]
fn an_open_breaker_stays_open_across_a_node_restart_with_redis() {
    let sshd = Sshd::start();
    // A unique id: the breaker's key in the shared Redis is per server.
    let vps = format!("web-{}", rand_suffix().to_lowercase());
    let extra = fleet_extra(
        &sshd,
        &format!(
            "\n[cache]\nurl = \"{}\"\n[breaker]\nfailure_threshold = 2\nopen_timeout = \"10m\"\nmax_open = \"10m\"\n[[vps]]\nid = \"{vps}\"\nhost = \"127.0.0.1\"\nport = {}\n",
            redis_url(),
            sshd.port()
        ),
    );
    let mut node = Node::start("fleet-redis-1", &extra, &[]);
    node.wait_ready();
    sshd.kill();
    let _ = enqueue_exec(&node, &vps, "site:list", json!([]));
    wait_for(Duration::from_secs(60), "breaker to open", || {
        (breaker_state(&node, &vps)["breaker"]["state"] == "open").then_some(())
    });
    node.signal(rustix::process::Signal::TERM);
    assert!(node.wait_exit(Duration::from_secs(30)).success());

    // A fresh node (its own database; the server comes from [[vps]]) reads the breaker back.
    let node = Node::start("fleet-redis-2", &extra, &[]);
    node.wait_ready();
    let b = breaker_state(&node, &vps);
    assert_eq!(b["breaker"]["state"], "open", "{b}");
    // Remove the server, which also deletes its key from the shared cache.
    let r = node.rpc("vps.remove", json!({ "id": vps }));
    assert!(r.get("error").is_none(), "{r}");
}

#[test]
fn tenants_sites_and_site_provision() {
    let sshd = Sshd::start();
    let node = node_with_web1(&sshd, "fleet-sites", "", &[]);
    let tenant = node.rpc("tenants.add", json!({ "name": "acme", "tier": "pro" }));
    let tenant_id = tenant["result"]["id"].as_i64().unwrap();
    let added = node.rpc(
        "sites.add",
        json!({ "tenant": tenant_id, "vps": "web-1", "domain": "shop.example.com", "type": "wordpress" }),
    );
    let job = added["result"]["job"]
        .as_i64()
        .unwrap_or_else(|| panic!("{added}"));
    node.wait_job_state(job, "completed", Duration::from_secs(30));
    assert_eq!(
        sshd.fake().calls(),
        vec![vec![
            "site:create".to_owned(),
            "shop.example.com".to_owned(),
            "wordpress".to_owned()
        ]]
    );
    let sites = node.rpc("sites.list", json!({}));
    assert_eq!(sites["result"]["sites"][0]["status"], "active", "{sites}");
    wait_for(Duration::from_secs(60), "inventory gauges", || {
        let page = node.get("/metrics").1;
        (metric(&page, "chom_active_sites") == Some(1.0)
            && metric(&page, "chom_active_tenants") == Some(1.0))
        .then_some(())
    });

    // A site whose provisioning keeps failing ends failed with the reason.
    sshd.fake().set_exit(3);
    sshd.fake()
        .set_stderr("domain already exists on this server");
    let added = node.rpc(
        "sites.add",
        json!({ "tenant": tenant_id, "vps": "web-1", "domain": "blog.example.com" }),
    );
    let site_id = added["result"]["site"]["id"].as_i64().unwrap();
    let job = added["result"]["job"].as_i64().unwrap();
    let r = node.rpc("jobs.show", json!({ "id": job }));
    assert_eq!(r["result"]["queue"], "high", "{r}");
    node.wait_job_state(job, "failed", Duration::from_secs(90));
    let site = wait_for(Duration::from_secs(30), "site marked failed", || {
        let sites = node.rpc("sites.list", json!({}));
        sites["result"]["sites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == site_id && s["status"] == "failed")
            .cloned()
    });
    assert!(
        site["failure_reason"]
            .as_str()
            .unwrap()
            .contains("domain already exists"),
        "{site}"
    );
}

#[test]
fn operators_force_a_breaker_open_and_jobs_wait_without_using_attempts() {
    let sshd = Sshd::start();
    // Rejected jobs come back after the open period; keep it short.
    let node = node_with_web1(
        &sshd,
        "fleet-operator",
        "[breaker]\nopen_timeout = \"2s\"",
        &[],
    );
    let r = node.rpc("breaker.open", json!({ "vps": "web-1" }));
    assert_eq!(r["result"]["breaker"]["state"], "forced_open", "{r}");
    let id = enqueue_exec(&node, "web-1", "site:list", json!([]));
    // Turned away and put back for later, its attempt given back.
    let job = wait_for(Duration::from_secs(30), "the job to be deferred", || {
        let job = node.rpc("jobs.show", json!({ "id": id }))["result"].clone();
        (job["state"] == "pending" && job["last_error"].is_string()).then_some(job)
    });
    assert_eq!(job["attempts"], 0, "{job}");
    assert!(
        job["last_error"].as_str().unwrap().contains("forced open"),
        "{job}"
    );
    let status = node.rpc("status", json!({}))["result"].clone();
    assert_eq!(status["open_breakers"][0]["vps"], "web-1", "{status}");
    assert!(sshd.fake().calls().is_empty());

    let r = node.rpc("breaker.reset", json!({ "vps": "web-1" }));
    assert_eq!(r["result"]["breaker"]["state"], "closed", "{r}");
    let job = node.wait_job_state(id, "completed", Duration::from_secs(30));
    assert_eq!(job["attempts"], 1, "{job}");
    assert_eq!(sshd.fake().calls().len(), 1);

    // The CLI shows the same state.
    let out = chom(Some(&node.config), &["breaker", "list"], &[]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("web-1") && text.contains("closed"), "{text}");
}

#[test]
fn site_delete_removes_the_site_from_its_server_then_its_row() {
    let sshd = Sshd::start();
    let node = node_with_web1(&sshd, "fleet-site-delete", "", &[]);
    let tenant = node.rpc("tenants.add", json!({ "name": "acme" }));
    let tenant_id = tenant["result"]["id"].as_i64().unwrap();
    let add = |domain: &str| {
        let added = node.rpc(
            "sites.add",
            json!({ "tenant": tenant_id, "vps": "web-1", "domain": domain }),
        );
        let job = added["result"]["job"]
            .as_i64()
            .unwrap_or_else(|| panic!("{added}"));
        node.wait_job_state(job, "completed", Duration::from_secs(30));
        added["result"]["site"]["id"].as_i64().unwrap()
    };
    let delete = |site: i64| {
        let r = node.rpc(
            "jobs.enqueue",
            json!({ "kind": "site.delete", "payload": { "site": site }, "max_attempts": 1 }),
        );
        r["result"]["id"].as_i64().unwrap_or_else(|| panic!("{r}"))
    };
    let shop = add("shop.example.com");
    let job = delete(shop);
    let shown = node.rpc("jobs.show", json!({ "id": job }));
    assert_eq!(shown["result"]["queue"], "high", "{shown}");
    node.wait_job_state(job, "completed", Duration::from_secs(30));
    assert_eq!(
        sshd.fake().calls().last().unwrap(),
        &vec!["site:delete".to_owned(), "shop.example.com".to_owned()]
    );
    let sites = node.rpc("sites.list", json!({}));
    assert_eq!(sites["result"]["sites"], json!([]), "{sites}");
    // Deleting a site that is already gone is done at once.
    let again = delete(shop);
    node.wait_job_state(again, "completed", Duration::from_secs(30));

    // A deletion the server refuses leaves the site, marked failed with the reason.
    let blog = add("blog.example.com");
    sshd.fake().set_exit(3);
    sshd.fake().set_stderr("cannot remove the document root");
    let job = delete(blog);
    node.wait_job_state(job, "failed", Duration::from_secs(30));
    let site = wait_for(Duration::from_secs(30), "site marked failed", || {
        let sites = node.rpc("sites.list", json!({}));
        sites["result"]["sites"]
            .as_array()?
            .iter()
            .find(|s| s["id"] == blog && s["status"] == "failed")
            .cloned()
    });
    let reason = site["failure_reason"].as_str().unwrap();
    assert!(
        reason.starts_with("deletion failed") && reason.contains("document root"),
        "{site}"
    );
}
