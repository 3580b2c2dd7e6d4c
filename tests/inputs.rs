//! Every input of the admin RPC and the CLI checked for type, range and size (issue 10, items
//! 7, 8, 10 and 11), against the built binary and a running node.

#![allow(
    clippy::too_many_lines,
    reason = "a test reads top to bottom as one scenario"
)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// The -32602 error of a call, checked to name `param`.
fn refused(node: &Node, method: &str, params: Value, param: &str) -> String {
    let answer = node.rpc(method, params.clone());
    let error = &answer["error"];
    assert_eq!(
        error["code"],
        -32602,
        "{method} {} should be refused: {}",
        short(&params),
        short(&answer)
    );
    let message = error["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains(param),
        "{method}: the error does not name `{param}`: {}",
        short(&error["message"])
    );
    message
}

/// A document for a failure message, cut to a readable length (some hold 500 KB keys).
fn short(v: &Value) -> String {
    v.to_string().chars().take(300).collect()
}

fn ok(node: &Node, method: &str, params: Value) -> Value {
    let answer = node.rpc(method, params.clone());
    assert!(
        answer.get("error").is_none(),
        "{method} {params} failed: {answer}"
    );
    answer["result"].clone()
}

fn failed_count(node: &Node) -> usize {
    ok(node, "failed.list", json!({}))["failed"]
        .as_array()
        .unwrap()
        .len()
}

/// One request line sent as is; the answer line parsed.
fn raw_rpc(socket: &Path, line: &str) -> Value {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(line.as_bytes()).unwrap();
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).unwrap();
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer:?}"))
}

/// `chom ARGS` against `socket`; (exit code, stdout, stderr).
fn cli(socket: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec!["--socket", socket.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = chom(None, &all, &[]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_refuses_out_of_range_values_before_connecting() {
    // No node listens here: a value that got past parsing would exit 69 (unreachable).
    let nowhere = std::env::temp_dir().join(format!("chom-nowhere-{}.sock", rand_suffix()));
    let cases: &[(&[&str], &str)] = &[
        (
            &["jobs", "enqueue", "noop", "--delay", "10000000years"],
            "--delay",
        ),
        (
            &["failed", "prune", "--older-than", "300000000years"],
            "--older-than",
        ),
        (
            &["jobs", "kill-stuck", "--older-than", "300000000years"],
            "--older-than",
        ),
        (
            &["jobs", "kill-stuck", "--older-than", "1000000years"],
            "--older-than",
        ),
        (
            &["jobs", "enqueue", "noop", "--timeout", "8days"],
            "--timeout",
        ),
        (&["jobs", "enqueue", "noop", "--timeout", "0s"], "--timeout"),
        (
            &["jobs", "enqueue", "noop", "--max-attempts", "0"],
            "--max-attempts",
        ),
        (
            &["jobs", "enqueue", "noop", "--max-attempts", "1001"],
            "--max-attempts",
        ),
        (
            &["jobs", "enqueue", "noop", "--unique-key", "a\u{7}b"],
            "--unique-key",
        ),
        (
            &["jobs", "enqueue", "noop", "--unique-key", &"k".repeat(256)],
            "--unique-key",
        ),
        (&["jobs", "list", "--limit", "0"], "--limit"),
        (&["jobs", "list", "--limit", "1001"], "--limit"),
        (&["failed", "list", "--limit", "10001"], "--limit"),
        (&["jobs", "show", "-5"], "ID"),
        (
            &["vps", "add", "web-1", "10.0.0.1", "--user=-oProxyCommand=x"],
            "--user",
        ),
        (
            &["vps", "add", "web-1", "10.0.0.1", "--user", "root\nx"],
            "--user",
        ),
        (&["vps", "add", &"a".repeat(65), "10.0.0.1"], "ID"),
        (&["vps", "add", "web-1", &"h".repeat(254)], "HOST"),
        (&["tenants", "add", "evil\u{1b}[31m"], "NAME"),
        (&["tenants", "add", &"é".repeat(201)], "NAME"),
        (&["tenants", "token", "0"], "TENANT"),
        (
            &["tenants", "token", "1", "--name", &"é".repeat(101)],
            "--name",
        ),
        (&["tenants", "token", "1", "--name", "a\tb"], "--name"),
        (&["tenants", "token", "1", "--name", " "], "--name"),
        (&["tenants", "tokens", "x"], "TENANT"),
        (&["tenants", "revoke", "-1"], "ID"),
        (&["sites", "list", "--tenant", "0"], "--tenant"),
        (
            &["vps", "add", "web-1", "10.0.0.1", "--tenant", "0"],
            "--tenant",
        ),
        (
            &["vps", "add", "web-1", "10.0.0.1", "--tenant", "x"],
            "--tenant",
        ),
    ];
    for (args, names) in cases {
        let (code, _, stderr) = cli(&nowhere, args);
        assert_eq!(code, Some(2), "{args:?} should be a usage error: {stderr}");
        assert!(
            stderr.contains(names),
            "{args:?}: stderr does not name {names}: {stderr}"
        );
    }
    // In range, the same commands get as far as the (missing) node.
    for args in [
        &["jobs", "enqueue", "noop", "--delay", "3650days"][..],
        &["failed", "prune", "--older-than", "3650days"],
        &["jobs", "list", "--limit", "1000"],
        &["tenants", "add", &"é".repeat(200)],
        &["tenants", "token", "1", "--name", &"é".repeat(100)],
        &["tenants", "tokens", "1"],
        &["tenants", "revoke", "1"],
        &["vps", "add", "web-1", "10.0.0.1", "--user", "deploy_2"],
    ] {
        let (code, _, stderr) = cli(&nowhere, args);
        assert_eq!(code, Some(69), "{args:?}: {stderr}");
    }
}

#[test]
fn huge_durations_are_refused_and_leave_jobs_and_dead_letters_alone() {
    let node = Node::start(
        "huge-ages",
        "[queue]\nworkers = 2\npoll_interval = \"100ms\"\n",
        &[("CHOM_DEBUG_HOOKS", "1")],
    );
    node.wait_ready();
    let dead = ok(
        &node,
        "jobs.enqueue",
        json!({"kind": "debug.fail", "payload": {"permanent": true}}),
    )["id"]
        .as_i64()
        .unwrap();
    node.wait_job_state(dead, "failed", Duration::from_secs(30));
    wait_for(Duration::from_secs(10), "the dead letter", || {
        (failed_count(&node) == 1).then_some(())
    });
    let running = ok(
        &node,
        "jobs.enqueue",
        json!({"kind": "debug.sleep", "payload": {"ms": 60000}}),
    )["id"]
        .as_i64()
        .unwrap();
    node.wait_job_state(running, "reserved", Duration::from_secs(30));

    // Item 7: a far-future delay is refused, and listings keep working.
    refused(
        &node,
        "jobs.enqueue",
        json!({"kind": "noop", "delay": "10000000years"}),
        "delay",
    );
    let jobs = ok(&node, "jobs.list", json!({}));
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 2, "{jobs}");

    // Item 8: ages past the bound neither obey (wrapping to "now") nor panic.
    for age in [
        "300000000years",
        "1000000years",
        "99999999999999999999years",
    ] {
        refused(
            &node,
            "failed.prune",
            json!({ "older_than": age }),
            "older_than",
        );
        refused(
            &node,
            "jobs.kill_stuck",
            json!({ "older_than": age }),
            "older_than",
        );
    }
    for args in [
        &["failed", "prune", "--older-than", "300000000years"][..],
        &["jobs", "kill-stuck", "--older-than", "300000000years"],
        &["jobs", "kill-stuck", "--older-than", "1000000years"],
    ] {
        let (code, _, stderr) = cli(&node.socket, args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
    }
    assert_eq!(failed_count(&node), 1, "the dead letter was pruned");
    node.wait_job_state(running, "reserved", Duration::from_secs(1));
    // The largest accepted age is a real age: nothing is that old.
    let pruned = ok(&node, "failed.prune", json!({"older_than": "3650days"}));
    assert_eq!(pruned["pruned"], 0, "{pruned}");
    let killed = ok(&node, "jobs.kill_stuck", json!({"older_than": "3650days"}));
    assert_eq!(killed["killed"], json!([]), "{killed}");
    assert_eq!(failed_count(&node), 1);
    node.assert_running();
    assert!(!node.log_text().contains("panicked"), "{}", node.log_text());
}

#[test]
fn rpc_params_are_checked_for_type_range_and_size() {
    let node = Node::start("rpc-params", "", &[]);
    node.wait_ready();
    // max_attempts: refused outside 1..=1000, never clamped.
    for n in [json!(0), json!(1001), json!(5_000_000_000u64), json!(-1)] {
        refused(
            &node,
            "jobs.enqueue",
            json!({"kind": "noop", "max_attempts": n, "delay": "1h"}),
            "max_attempts",
        );
    }
    let id = ok(
        &node,
        "jobs.enqueue",
        json!({"kind": "noop", "max_attempts": 1000, "delay": "1h"}),
    )["id"]
        .as_i64()
        .unwrap();
    assert_eq!(
        ok(&node, "jobs.show", json!({ "id": id }))["max_attempts"],
        1000
    );
    // Timeouts: at most a week, more than zero.
    for t in ["8days", "0s", "soon"] {
        refused(
            &node,
            "jobs.enqueue",
            json!({"kind": "noop", "timeout": t}),
            "timeout",
        );
    }
    // payload: at most 1 MiB as stored. A request line is at most 1 MiB too, but numbers
    // written short (`1e5`) are stored long (`100000.0`): 250,000 of them fit the line and
    // make a 2.25 MB payload.
    let numbers = vec!["1e5"; 250_000].join(",");
    let line = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"jobs.enqueue\",\"params\":{{\"kind\":\"noop\",\"payload\":[{numbers}]}}}}\n"
    );
    assert!(line.len() < 1_000_100, "{}", line.len());
    let answer = raw_rpc(&node.socket, &line);
    assert_eq!(answer["error"]["code"], -32602, "{}", short(&answer));
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("payload"),
        "{}",
        short(&answer)
    );
    // unique_key: bounded, no control characters.
    for key in ["a\u{0}b".to_owned(), "k".repeat(256), String::new()] {
        refused(
            &node,
            "jobs.enqueue",
            json!({"kind": "noop", "unique_key": key, "delay": "1h"}),
            "unique_key",
        );
    }
    // Listing limits: refused beyond the maximum instead of clamped.
    for method in ["jobs.list", "failed.list"] {
        for limit in [json!(0), json!(1001), json!(10_000), json!("5")] {
            refused(&node, method, json!({ "limit": limit }), "limit");
        }
        ok(&node, method, json!({"limit": 1000}));
    }
    // Ids are positive integers.
    for id in [json!(-1), json!(0), json!("7"), json!(1.5)] {
        refused(&node, "jobs.show", json!({ "id": id }), "id");
        refused(&node, "failed.retry", json!({ "id": id }), "id");
        refused(&node, "sites.provision", json!({ "id": id }), "id");
        refused(&node, "sites.list", json!({ "tenant": id }), "tenant");
    }
    refused(
        &node,
        "sites.list",
        json!({"tenant": 18_446_744_073_709_551_615u64}),
        "tenant",
    );
    refused(&node, "failed.retry", json!({"all": "yes"}), "all");

    // jobs.enqueue_many: 1 to 5000 jobs, each checked as jobs.enqueue checks it, named by
    // its index.
    refused(&node, "jobs.enqueue_many", json!({"jobs": []}), "jobs");
    let many = vec![json!({"kind": "noop"}); 5_001];
    refused(&node, "jobs.enqueue_many", json!({ "jobs": many }), "5000");
    refused(
        &node,
        "jobs.enqueue_many",
        json!({"jobs": [{"kind": "noop"}, {"kind": "noop", "max_attempts": 0}]}),
        "jobs[1]",
    );
    refused(
        &node,
        "jobs.enqueue_many",
        json!({"jobs": [{"kind": "noop", "surprise": 1}]}),
        "surprise",
    );
    refused(
        &node,
        "jobs.enqueue_many",
        json!({"jobs": [{"kind": "noop", "queue": "nowhere"}]}),
        "jobs[0]",
    );

    // vps.add: the remote user is a login name, ids and hosts are bounded.
    for user in ["-oProxyCommand=touch /tmp/pwned", "root\nx", "Root", ""] {
        refused(
            &node,
            "vps.add",
            json!({"id": "web-1", "host": "10.0.0.1", "user": user}),
            "user",
        );
    }
    refused(
        &node,
        "vps.add",
        json!({"id": "a".repeat(65), "host": "10.0.0.1"}),
        "id",
    );
    refused(
        &node,
        "vps.add",
        json!({"id": "web-1", "host": "h".repeat(254)}),
        "host",
    );
    refused(
        &node,
        "vps.add",
        json!({"id": "web-1", "host": "10.0.0.1", "host_key": format!("SHA256:{}", "A".repeat(500))}),
        "host_key",
    );
    // vps.add: the owning tenant is a positive integer id.
    for tenant in [json!(0), json!(-1), json!("1"), json!(1.5), json!([1])] {
        refused(
            &node,
            "vps.add",
            json!({"id": "web-1", "host": "10.0.0.1", "tenant_id": tenant}),
            "tenant_id",
        );
    }
    // vps.add: the capacity is a count from 1 to 100000.
    for max in [json!(0), json!(100_001), json!(-3), json!("5"), json!(2.5)] {
        refused(
            &node,
            "vps.add",
            json!({"id": "web-1", "host": "10.0.0.1", "max_sites": max}),
            "max_sites",
        );
    }
    assert_eq!(ok(&node, "vps.list", json!({}))["vps"], json!([]));
    refused(&node, "vps.remove", json!({"id": "x\u{1b}[2J"}), "id");
    refused(&node, "breaker.open", json!({"vps": "a".repeat(65)}), "vps");

    // Tenant names: characters, not bytes; no control characters.
    let greek = "α".repeat(200);
    ok(&node, "tenants.add", json!({ "name": greek }));
    refused(
        &node,
        "tenants.add",
        json!({"name": "α".repeat(201)}),
        "name",
    );
    for name in ["evil\u{1b}[31mred", "two\nlines", "nul\u{0}", "   "] {
        refused(&node, "tenants.add", json!({ "name": name }), "name");
    }
    // API tokens: the tenant and token are ids; a token's name is optional, at most 100
    // characters (not bytes), no control characters, not blank.
    let tenant = ok(&node, "tenants.list", json!({}))["tenants"][0]["id"].clone();
    let issued = ok(
        &node,
        "tenants.token",
        json!({"tenant": tenant, "name": "α".repeat(100)}),
    );
    assert_eq!(issued["tenant"], tenant);
    refused(
        &node,
        "tenants.token",
        json!({"tenant": tenant, "name": "α".repeat(101)}),
        "name",
    );
    for name in ["evil\u{1b}[31mred", "two\nlines", "", "   "] {
        refused(
            &node,
            "tenants.token",
            json!({"tenant": tenant, "name": name}),
            "name",
        );
    }
    for id in [json!(0), json!(-1), json!("1"), json!(1.5), json!(null)] {
        refused(&node, "tenants.token", json!({ "tenant": id }), "tenant");
        refused(&node, "tenants.tokens", json!({ "tenant": id }), "tenant");
        refused(&node, "tenants.revoke", json!({ "id": id }), "id");
    }
    // Console operators: a name by the id rule, at most 64 characters.
    for name in ["Ada", "-x", "two\nlines", "", &"a".repeat(65)] {
        refused(&node, "ui.user.add", json!({ "name": name }), "name");
        refused(&node, "ui.user.remove", json!({ "name": name }), "name");
    }
    // sites.add: the tenant is an id, the server a vps id, provision a boolean.
    refused(
        &node,
        "sites.add",
        json!({"tenant": -3, "vps": "web-1", "domain": "a.example"}),
        "tenant",
    );
    refused(
        &node,
        "sites.add",
        json!({"tenant": 1, "vps": "Web 1", "domain": "a.example"}),
        "vps",
    );
    refused(
        &node,
        "sites.add",
        json!({"tenant": 1, "vps": "web-1", "domain": "a.example", "provision": "no"}),
        "provision",
    );
    // Restart paths are bounded.
    refused(&node, "restart", json!({"path": "x".repeat(300)}), "path");
    node.assert_running();
}

#[test]
fn postgres_refuses_huge_or_nul_unique_keys_and_control_characters_are_escaped() {
    let db = PgDb::create("inputs");
    let node = Node::start(
        "inputs-pg",
        &pg_node_extra(&db.url, "inputs-pg", 1, ""),
        &[],
    );
    node.wait_ready();
    // Item 11: a 500 KB key or one with NUL was a raw database error; now a -32602.
    let huge = "k".repeat(500 * 1024);
    let message = refused(
        &node,
        "jobs.enqueue",
        json!({"kind": "noop", "unique_key": huge}),
        "unique_key",
    );
    assert!(message.len() < 200, "the key is echoed back: {message}");
    refused(
        &node,
        "jobs.enqueue",
        json!({"kind": "noop", "unique_key": "nightly\u{0}report"}),
        "unique_key",
    );
    ok(
        &node,
        "jobs.enqueue",
        json!({"kind": "noop", "unique_key": "k".repeat(255), "delay": "1h"}),
    );

    // A name another program stored with ANSI escapes and a newline is shown escaped.
    pg_exec(
        &db.url,
        "INSERT INTO tenants (name, tier) VALUES (E'evil\\x1b[2J\\x1b[31mred\\nfake 99 line', 'pro')",
    );
    let (code, stdout, stderr) = cli(&node.socket, &["tenants", "list"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stdout.contains('\u{1b}'), "raw escape printed: {stdout:?}");
    assert!(
        stdout.contains("evil\\u{1b}[2J\\u{1b}[31mred\\nfake 99 line"),
        "{stdout:?}"
    );
    assert_eq!(stdout.lines().count(), 2, "{stdout:?}");
    // --json is the document itself.
    let (code, stdout, _) = cli(&node.socket, &["tenants", "list", "--json"]);
    assert_eq!(code, Some(0));
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        doc["tenants"][0]["name"],
        "evil\u{1b}[2J\u{1b}[31mred\nfake 99 line"
    );
}

#[test]
fn health_check_urls_are_redacted_in_the_report_and_the_log() {
    let port = free_port();
    let node = Node::start(
        "health-url",
        &format!(
            "[health]\ninterval = \"1s\"\ncheck_timeout = \"1s\"\nfailures_before_restart = 1\n[[health.checks]]\nname = \"shop\"\nurl = \"http://admin:pw-s3cret@127.0.0.1:{port}/status?token=t0k3n&X-Amz-Signature=s1gn\"\nremediation = \"true\"\n"
        ),
        &[],
    );
    node.wait_ready();
    let report = ok(&node, "health", json!({}));
    let shop = &report["checks"]["shop"];
    assert_eq!(shop["status"], "error", "{report}");
    // An operator check failing leaves the node degraded (exit 0); its line names the URL.
    let (code, stdout, _) = cli(&node.socket, &["health"]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("admin:***@127.0.0.1"), "{stdout}");
    // The periodic run logs the failure (and its remediation) too.
    wait_for(
        Duration::from_secs(30),
        "the failing check in the log",
        || node.log_text().contains("check=shop").then_some(()),
    );
    let everything = format!("{report}\n{stdout}\n{}", node.log_text());
    for secret in ["pw-s3cret", "t0k3n", "s1gn"] {
        assert!(
            !everything.contains(secret),
            "{secret} shown:\n{everything}"
        );
    }
    assert!(
        shop["url"]
            .as_str()
            .unwrap()
            .contains("admin:***@127.0.0.1"),
        "{shop}"
    );
}

#[test]
fn unknown_or_mistyped_parameters_are_refused_naming_them() {
    let node = Node::start("rpc-typed", "", &[("CHOM_DEBUG_HOOKS", "1")]);
    node.wait_ready();
    // Issue 11's examples, over the socket as any client sends them.
    let message = refused(
        &node,
        "jobs.enqueue",
        json!({"kind": "noop", "bogus": 1}),
        "bogus",
    );
    assert!(message.contains("unknown field"), "{message}");
    refused(
        &node,
        "jobs.enqueue",
        json!({"kind": "noop", "max_attempts": "x"}),
        "max_attempts",
    );
    // Nothing was enqueued by either.
    assert_eq!(ok(&node, "jobs.list", json!({}))["jobs"], json!([]));

    // An unknown field is refused by every method group, also by methods without parameters.
    let valid: &[(&str, Value)] = &[
        ("status", json!({})),
        ("cluster.nodes", json!({})),
        ("tree", json!({})),
        ("health", json!({})),
        ("shutdown", json!({})),
        ("restart", json!({"path": "edge/http"})),
        ("jobs.enqueue", json!({"kind": "noop"})),
        ("jobs.enqueue_many", json!({"jobs": [{"kind": "noop"}]})),
        ("jobs.show", json!({"id": 1})),
        ("jobs.list", json!({})),
        ("jobs.kill_stuck", json!({})),
        ("queue.stats", json!({})),
        ("queue.pause", json!({"queue": "default"})),
        ("queue.resume", json!({"queue": "default"})),
        ("failed.list", json!({})),
        ("failed.retry", json!({"all": true})),
        ("failed.prune", json!({})),
        ("failed.analyze", json!({})),
        ("vps.list", json!({})),
        ("vps.add", json!({"id": "web-1", "host": "10.0.0.1"})),
        ("vps.remove", json!({"id": "web-1"})),
        ("breaker.list", json!({})),
        ("breaker.reset", json!({"vps": "web-1"})),
        ("breaker.open", json!({"vps": "web-1"})),
        ("breaker.close", json!({"vps": "web-1"})),
        ("tenants.list", json!({})),
        ("tenants.add", json!({"name": "acme"})),
        ("tenants.suspend", json!({"tenant": 1})),
        ("tenants.resume", json!({"tenant": 1})),
        ("tenants.token", json!({"tenant": 1})),
        ("tenants.tokens", json!({"tenant": 1})),
        ("tenants.revoke", json!({"id": 1})),
        ("sites.list", json!({})),
        (
            "sites.add",
            json!({"tenant": 1, "vps": "web-1", "domain": "a.example"}),
        ),
        ("sites.provision", json!({"id": 1})),
        ("ui.user.add", json!({"name": "ada"})),
        ("ui.user.remove", json!({"name": "ada"})),
        ("alerts.list", json!({})),
        ("metrics.query", json!({"query": "up"})),
        ("debug.stall", json!({"duration": "1s"})),
        ("debug.fault", json!({"path": "edge/http", "fault": "kill"})),
        ("debug.inflate", json!({"bytes": 0})),
        ("debug.vps_panic", json!({"vps": "web-1"})),
    ];
    for (method, params) in valid {
        let mut params = params.clone();
        params
            .as_object_mut()
            .unwrap()
            .insert("colour".into(), json!("blue"));
        refused(&node, method, params, "colour");
    }
    // A wrong type in each group is named too.
    for (method, params, field) in [
        ("restart", json!({"path": 5}), "path"),
        ("jobs.list", json!({"state": 1}), "state"),
        ("queue.pause", json!({"queue": ["default"]}), "queue"),
        ("failed.prune", json!({"older_than": 3600}), "older_than"),
        (
            "vps.add",
            json!({"id": "web-1", "host": "h", "port": "22"}),
            "port",
        ),
        ("breaker.reset", json!({"vps": null}), "vps"),
        ("tenants.add", json!({"name": "acme", "tier": 5}), "tier"),
        ("tenants.token", json!({"tenant": 1, "name": 5}), "name"),
        ("tenants.tokens", json!({}), "tenant"),
        ("tenants.revoke", json!({"id": [1]}), "id"),
        ("ui.user.add", json!({"name": 5}), "name"),
        ("ui.user.remove", json!({}), "name"),
        (
            "sites.add",
            json!({"tenant": "1", "vps": "web-1", "domain": "a.example"}),
            "tenant",
        ),
        ("debug.inflate", json!({"bytes": -1}), "bytes"),
        ("metrics.query", json!({"query": 1}), "query"),
        ("metrics.query", json!({"query": "up", "time": 5}), "time"),
        ("metrics.query", json!({"query": " "}), "empty"),
        (
            "metrics.query",
            json!({"query": "up", "time": "yesterday"}),
            "time",
        ),
    ] {
        refused(&node, method, params, field);
    }
    // Parameters are named: by position is refused, while no parameters (absent or `[]`)
    // still means none.
    refused(&node, "jobs.list", json!([50]), "named parameters");
    ok(&node, "jobs.list", json!([]));
    let line = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"queue.stats\"}\n";
    let answer = raw_rpc(&node.socket, line);
    assert!(answer["result"]["queues"].is_array(), "{answer}");
    node.assert_running();
}

/// The admin RPC code reads parameters and replies through the typed API (`src/api`) only:
/// no `params.get(...)` in the handlers and no `v["..."]` indexing in the printers.
#[test]
fn the_rpc_code_reads_no_untyped_parameters_or_replies() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![
        root.join("src/methods.rs"),
        root.join("src/fleet_methods.rs"),
        root.join("src/output.rs"),
        root.join("src/cli.rs"),
    ];
    for dir in ["src/rpc", "src/api"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            files.push(entry.unwrap().path());
        }
    }
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.contains("params.get(") || line.contains("v[\"") {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(files.len() >= 8, "{files:?}");
    assert!(
        found.is_empty(),
        "untyped RPC access:\n{}",
        found.join("\n")
    );
}
