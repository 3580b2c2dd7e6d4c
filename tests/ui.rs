//! The operator web console over HTTP against a built node: refusal without a session
//! (pages redirect to sign-in, actions 403, never data), the security headers on every
//! answer, the cookie's attributes, CSRF (a POST without or with a wrong token changes
//! nothing), an action through the same typed operation `chom queue stats` reads back,
//! sign-out and operator removal ending sessions, and the slow-down of wrong passwords.

#![allow(
    clippy::too_many_lines,
    reason = "a test reads top to bottom as one scenario"
)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// One answer: status, lowercased header lines, body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The session cookie `Set-Cookie` gave (`name=value`), if any.
    fn cookie(&self) -> Option<String> {
        let set = self.header("set-cookie")?;
        Some(set.split(';').next()?.to_owned())
    }

    /// The first CSRF token in the page's forms.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .expect("a form with a csrf token");
        let rest = &self.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }
}

fn send(addr: &str, method: &str, path: &str, cookie: Option<&str>, form: Option<&str>) -> Answer {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(c) = cookie {
        request.push_str(&format!("Cookie: {c}\r\n"));
    }
    if let Some(body) = form {
        request.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        request.push_str("\r\n");
    }
    let (status, raw) = http_exchange(addr, &request);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

fn ui_addr(node: &Node) -> String {
    let status = node.wait_ready();
    status["ui"]
        .as_str()
        .expect("status reports the console's address")
        .to_owned()
}

/// A node with operator `ada`; her password.
fn node_with_operator(tag: &str) -> (Node, String, String) {
    let node = Node::start(tag, "", &[]);
    let addr = ui_addr(&node);
    let added: Value =
        serde_json::from_str(&cli_ok(&node, &["ui", "user", "add", "ada", "--json"])).unwrap();
    assert_eq!(added["name"], "ada");
    let password = added["password"].as_str().unwrap().to_owned();
    assert!(password.len() >= 20, "a long generated password");
    assert!(
        !node.log_text().contains(&password),
        "the password is never logged"
    );
    (node, addr, password)
}

fn sign_in(addr: &str, name: &str, password: &str) -> Answer {
    let form = format!(
        "name={}&password={}&next=%2Fqueues",
        percent(name),
        percent(password)
    );
    send(addr, "POST", "/signin", None, Some(&form))
}

fn assert_security_headers(a: &Answer, what: &str) {
    let csp = a
        .header("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no CSP"));
    assert!(csp.contains("default-src 'self'"), "{what}: {csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
    assert_eq!(
        a.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(a.header("referrer-policy"), Some("no-referrer"), "{what}");
}

const PAGES: [&str; 9] = [
    "/",
    "/tree",
    "/queues",
    "/jobs?state=failed",
    "/jobs/1",
    "/failed",
    "/fleet",
    "/tenants",
    "/events",
];

#[test]
fn without_a_session_pages_redirect_and_actions_are_refused() {
    let (node, addr, _) = node_with_operator("ui-refuse");
    for page in PAGES {
        let a = send(&addr, "GET", page, None, None);
        assert_eq!(a.status, 303, "{page}: {}", a.head);
        let location = a.header("location").unwrap();
        assert!(location.starts_with("/signin?next="), "{page}: {location}");
        assert!(a.body.is_empty(), "{page}: no data without a session");
        assert_security_headers(&a, page);
    }
    // A forged or garbled cookie is no session either.
    let forged = format!("chom_session={}.{}", "a".repeat(64), "b".repeat(64));
    assert_eq!(
        send(&addr, "GET", "/queues", Some(&forged), None).status,
        303
    );
    for (path, form) in [
        ("/queues/pause", "queue=default&csrf=x"),
        ("/failed/retry", "all=1&confirm=all&csrf=x"),
        ("/tree/restart", "path=queue&confirm=queue&csrf=x"),
        ("/fleet/breaker", "vps=a&action=open&reason=x&csrf=x"),
    ] {
        let a = send(&addr, "POST", path, None, Some(form));
        assert_eq!(a.status, 403, "{path}");
        assert_security_headers(&a, path);
    }
    assert!(
        !queue_paused(&node, "default"),
        "a refused action changed nothing"
    );
    // The sign-in page itself and the assets are public, with the same headers.
    let signin = send(&addr, "GET", "/signin", None, None);
    assert_eq!(signin.status, 200);
    assert_security_headers(&signin, "/signin");
    assert!(!signin.body.contains("<script>"), "no inline script");
    assert!(!signin.body.contains("style="), "no inline style");
    assert_eq!(
        send(&addr, "GET", "/assets/console.js", None, None).status,
        200
    );
}

#[test]
fn signed_in_actions_need_the_sessions_csrf_token() {
    let (node, addr, password) = node_with_operator("ui-csrf");
    assert_eq!(sign_in(&addr, "ada", "wrong-password").status, 401);
    assert_eq!(sign_in(&addr, "nobody", &password).status, 401);
    let signed = sign_in(&addr, "ada", &password);
    assert_eq!(signed.status, 303, "{}", signed.head);
    assert_eq!(
        signed.header("location"),
        Some("/queues"),
        "back where the operator was going"
    );
    let set = signed.header("set-cookie").unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set.contains(attribute), "{set}");
    }
    let cookie = signed.cookie().unwrap();

    for page in PAGES
        .iter()
        .filter(|p| **p != "/events" && **p != "/jobs/1")
    {
        let a = send(&addr, "GET", page, Some(&cookie), None);
        assert_eq!(a.status, 200, "{page}: {}", a.body);
        assert_security_headers(&a, page);
    }
    let tree = send(&addr, "GET", "/tree", Some(&cookie), None);
    for actor in [
        "queue/dispatcher",
        "queue/worker:1",
        "edge/ui",
        "monitors/health",
    ] {
        assert!(tree.body.contains(actor), "the tree shows {actor}");
    }
    let queues = send(&addr, "GET", "/queues", Some(&cookie), None);
    let token = queues.csrf();

    // Without a token, with another's, with a cross-site Origin: nothing changes.
    for form in [
        "queue=default",
        "queue=default&csrf=",
        &format!("queue=default&csrf={}", "0".repeat(64)),
    ] {
        let a = send(&addr, "POST", "/queues/pause", Some(&cookie), Some(form));
        assert_eq!(a.status, 403, "{form}");
        assert!(!queue_paused(&node, "default"), "{form}: nothing changed");
    }
    let cross = format!(
        "POST /queues/pause HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://evil.example\r\nCookie: {cookie}\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\nqueue=default&csrf={token}",
        "queue=default&csrf=".len() + token.len()
    );
    assert_eq!(http_exchange(&addr, &cross).0, 403);
    assert!(!queue_paused(&node, "default"));

    // With the session's token: paused, as `chom queue stats` reads it.
    let a = send(
        &addr,
        "POST",
        "/queues/pause",
        Some(&cookie),
        Some(&format!("queue=default&csrf={token}")),
    );
    assert_eq!(a.status, 303, "{}", a.body);
    assert!(queue_paused(&node, "default"));
    assert!(
        node.log_text().contains("web console: queue paused"),
        "who did it is logged"
    );
    let a = send(
        &addr,
        "POST",
        "/queues/resume",
        Some(&cookie),
        Some(&format!("queue=default&csrf={token}")),
    );
    assert_eq!(a.status, 303);
    assert!(!queue_paused(&node, "default"));

    // A restart wants its path typed again.
    let wrong = format!("path=queue%2Freaper&confirm=queue&csrf={token}");
    assert_eq!(
        send(&addr, "POST", "/tree/restart", Some(&cookie), Some(&wrong)).status,
        400
    );

    // Sign-out ends the session: the old cookie is no session any more.
    let out = send(
        &addr,
        "POST",
        "/signout",
        Some(&cookie),
        Some(&format!("csrf={token}")),
    );
    assert_eq!(out.status, 303);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(
        send(&addr, "GET", "/queues", Some(&cookie), None).status,
        303
    );

    // Removing the operator ends their sessions too.
    let again = sign_in(&addr, "ada", &password).cookie().unwrap();
    assert_eq!(send(&addr, "GET", "/", Some(&again), None).status, 200);
    cli_ok(&node, &["ui", "user", "remove", "ada"]);
    assert_eq!(send(&addr, "GET", "/", Some(&again), None).status, 303);
    assert_eq!(cli(&node, &["ui", "user", "remove", "ada"]).0, Some(1));
    assert!(
        !node.log_text().contains(&password),
        "the password is never logged"
    );
}

#[test]
fn the_fifth_wrong_password_in_a_row_waits() {
    let (node, addr, password) = node_with_operator("ui-throttle");
    for n in 1..=4 {
        let a = sign_in(&addr, "ada", &format!("wrong-{n}"));
        assert_eq!(a.status, 401, "wrong password {n} is answered at once");
    }
    // Locked for a second after the fourth: even the right password waits, unchecked.
    let locked = sign_in(&addr, "ada", &password);
    assert_eq!(locked.status, 429, "{}", locked.body);
    assert_eq!(locked.header("retry-after"), Some("1"));
    assert!(locked.body.contains("Try again in 1 s"));
    // The same source with another name is locked as well (per-source count).
    assert_eq!(sign_in(&addr, "bob", "x").status, 429);
    // Once the lock has passed, the right password signs in.
    let signed = wait_for(Duration::from_secs(10), "the lock to pass", || {
        let a = sign_in(&addr, "ada", &password);
        (a.status != 429).then_some(a)
    });
    assert_eq!(signed.status, 303);
    assert!(
        node.log_text()
            .contains("web console: wrong name or password")
    );
}
