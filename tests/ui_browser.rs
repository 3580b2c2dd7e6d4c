//! The operator web console in headless Chromium, driven over chromedriver's W3C WebDriver
//! HTTP API: sign in through the form, read the tree, pause a queue (read back by
//! `chom queue stats`), retry a dead letter (it runs and completes), reset a forced-open
//! breaker (read back by `chom breaker list`), with a PNG screenshot of every page visited
//! under `$CARGO_TARGET_TMPDIR/ui-screenshots/` and no console error (CSP violations are
//! console errors) on any page.

#![allow(
    clippy::too_many_lines,
    reason = "a test reads top to bottom as one scenario"
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One WebDriver request to `addr`: the answer's JSON (`{"value": ...}`) and status.
fn webdriver(addr: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(addr).expect("chromedriver answers");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    // Read the head, then exactly Content-Length bytes (no reliance on the peer closing).
    loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "chromedriver closed before answering {path}");
        raw.extend_from_slice(&buf[..n]);
        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        while raw.len() < end + 4 + length {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "chromedriver cut the answer to {path} short");
            raw.extend_from_slice(&buf[..n]);
        }
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let json = serde_json::from_slice(&raw[end + 4..end + 4 + length]).unwrap_or(Value::Null);
        return (status, json);
    }
}

/// chromedriver on a port of its own with one headless Chromium session; both end on drop.
struct Browser {
    driver: Child,
    addr: String,
    session: String,
    /// Screenshots go here, one PNG per page visited.
    shots: PathBuf,
    /// Console messages at SEVERE level seen so far, with the page they came from.
    errors: Vec<String>,
}

impl Browser {
    fn start(tag: &str) -> Browser {
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run chromedriver");
        let addr = format!("127.0.0.1:{port}");
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
            shots: PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join("ui-screenshots")
                .join(tag),
            errors: Vec::new(),
        };
        wait_for(Duration::from_secs(30), "chromedriver to be ready", || {
            TcpStream::connect(&browser.addr).ok()?;
            let (_, status) = webdriver(&browser.addr, "GET", "/status", None);
            (status["value"]["ready"] == true).then_some(())
        });
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let (status, session) = webdriver(&browser.addr, "POST", "/session", Some(&capabilities));
        assert_eq!(status, 200, "new session: {session}");
        browser.session = session["value"]["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        std::fs::create_dir_all(&browser.shots).unwrap();
        browser
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let (status, answer) = webdriver(&self.addr, method, &path, body.as_ref());
        assert_eq!(status, 200, "{method} {path}: {answer}");
        answer["value"].clone()
    }

    fn go(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    fn find(&self, css: &str) -> String {
        let found = self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("{css}: {found}"))
            .to_owned()
    }

    fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        );
    }

    fn click(&self, css: &str) {
        let id = self.find(css);
        self.call("POST", &format!("/element/{id}/click"), Some(json!({})));
    }

    fn script(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// What the operator sees: the page's rendered text.
    fn text(&self) -> String {
        self.script("return document.body.innerText;")
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn url(&self) -> String {
        self.call("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Wait until the page's text contains `what`; the text.
    fn wait_text(&self, what: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let text = self.text();
            if text.contains(what) {
                return text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} never showed {what:?}; it shows:\n{text}",
                self.url()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Save the page as `name.png` and collect its console errors.
    fn shoot(&mut self, name: &str) {
        let png = self.call("GET", "/screenshot", None);
        let png = decode_base64(png.as_str().expect("a base64 screenshot"));
        assert!(png.starts_with(b"\x89PNG"), "{name}: a PNG");
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
        self.collect_errors(name);
    }

    fn collect_errors(&mut self, page: &str) {
        let log = self.call("POST", "/se/log", Some(json!({"type": "browser"})));
        for entry in log.as_array().into_iter().flatten() {
            if entry["level"] == "SEVERE" {
                self.errors.push(format!("{page}: {}", entry["message"]));
            }
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = std::panic::catch_unwind(|| webdriver(&self.addr, "DELETE", &path, None));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Standard base64 (the screenshot's encoding) to bytes.
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let digits: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

fn breaker(node: &Node, vps: &str) -> String {
    let list: Value = serde_json::from_str(&cli_ok(node, &["breaker", "list", "--json"])).unwrap();
    list["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["vps"] == vps)
        .unwrap_or_else(|| panic!("{vps} in {list}"))["breaker"]["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn an_operator_signs_in_pauses_retries_and_resets_in_a_real_browser() {
    assert!(
        std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists(),
        "chromium and chromium-driver are installed (scripts/test installs them)"
    );
    let node = Node::start(
        "ui-browser",
        "[queue]\nworkers = 2\npoll_interval = \"100ms\"\n[jobs.\"debug.panic_once\"]\nmax_attempts = 1\n",
        &[("CHOM_DEBUG_HOOKS", "1")],
    );
    let status = node.wait_ready();
    let base = format!(
        "http://{}",
        status["ui"].as_str().expect("the console's address")
    );
    let added: Value =
        serde_json::from_str(&cli_ok(&node, &["ui", "user", "add", "ada", "--json"])).unwrap();
    let password = added["password"].as_str().unwrap().to_owned();

    // A dead letter that succeeds when retried: it panics on its first attempt only.
    let marker = node.dir.path().join("panicked-once");
    let dead = node.enqueue(
        "debug.panic_once",
        json!({"marker": marker.display().to_string()}),
    );
    node.wait_job_state(dead, "failed", Duration::from_secs(30));
    // A server whose breaker is forced open (no connection is made until a command needs one).
    cli_ok(&node, &["vps", "add", "web-1", "127.0.0.1", "--port", "9"]);
    cli_ok(&node, &["breaker", "open", "web-1"]);
    assert_eq!(breaker(&node, "web-1"), "forced_open");

    let mut browser = Browser::start("an_operator");
    // The detector works: a console error raised on purpose is seen, then set aside.
    browser.go(&format!("{base}/signin"));
    browser.script("console.error('chom-probe');");
    browser.collect_errors("probe");
    assert!(
        browser.errors.iter().any(|e| e.contains("chom-probe")),
        "the browser log reports console errors: {:?}",
        browser.errors
    );
    browser.errors.clear();

    // Without a session the console shows the sign-in form, not data.
    browser.go(&format!("{base}/queues"));
    assert!(browser.url().contains("/signin?next="), "{}", browser.url());
    browser.shoot("signin");
    browser.type_into("#name", "ada");
    browser.type_into("#password", "not-the-password");
    browser.click("main form button[type=submit]");
    browser.wait_text("Wrong name or password");
    // The refusal's 401 is the one console error expected: set it aside, nothing else.
    browser.collect_errors("signin-refused");
    let refused = browser
        .errors
        .iter()
        .position(|e| e.contains("/signin") && e.contains("401"))
        .unwrap_or_else(|| panic!("the refusal is logged: {:?}", browser.errors));
    browser.errors.remove(refused);
    browser.type_into("#name", "ada");
    browser.type_into("#password", &password);
    browser.click("main form button[type=submit]");
    let queues = browser.wait_text("Pause default");
    assert!(browser.url().ends_with("/queues"), "{}", browser.url());
    assert!(queues.contains("claiming"), "{queues}");
    browser.shoot("queues");

    browser.go(&format!("{base}/"));
    browser.wait_text("Overview");
    browser.shoot("overview");

    browser.go(&format!("{base}/tree"));
    let tree = browser.wait_text("Supervision tree");
    for actor in [
        "queue/dispatcher",
        "queue/worker:1",
        "edge/ui",
        "fleet/vps:web-1",
    ] {
        assert!(tree.contains(actor), "the tree shows {actor}:\n{tree}");
    }
    browser.shoot("tree");

    // Pause: the page says so, and so does `chom queue stats`.
    browser.go(&format!("{base}/queues"));
    browser.click("#pause-default");
    let after = browser.wait_text("Resume default");
    assert!(after.contains("paused"), "{after}");
    assert!(queue_paused(&node, "default"), "chom queue stats: paused");
    browser.shoot("queues-paused");
    browser.click("#resume-default");
    browser.wait_text("Pause default");
    assert!(!queue_paused(&node, "default"));

    // Retry the dead letter: it runs again and completes.
    browser.go(&format!("{base}/failed"));
    let failed = browser.wait_text("Dead letters");
    assert!(failed.contains("debug.panic_once"), "{failed}");
    browser.shoot("failed");
    browser.click("button[id^=retry-]");
    // The retry is enqueued as a job of its own, which now finds the marker and completes.
    let done = wait_for(
        Duration::from_secs(30),
        "the retried job to complete",
        || {
            let r = node.rpc("jobs.list", json!({"state": "completed"}));
            r["result"]["jobs"]
                .as_array()?
                .iter()
                .find(|j| j["kind"] == "debug.panic_once")
                .and_then(|j| j["id"].as_i64())
        },
    );
    assert_ne!(done, dead, "a new job ran");

    browser.go(&format!(
        "{base}/jobs?kind=debug.panic_once&state=completed"
    ));
    let jobs = browser.wait_text("Jobs");
    assert!(jobs.contains(&done.to_string()), "{jobs}");
    browser.shoot("jobs");
    browser.go(&format!("{base}/jobs/{done}"));
    let detail = browser.wait_text(&format!("Job {done}"));
    assert!(detail.contains("completed"), "{detail}");
    assert!(detail.contains("marker"), "the payload is shown: {detail}");
    browser.shoot("job");

    // Reset the forced-open breaker, with a reason.
    browser.go(&format!("{base}/fleet"));
    let fleet = browser.wait_text("web-1");
    assert!(fleet.contains("forced"), "{fleet}");
    browser.shoot("fleet");
    browser.type_into("#reason-web-1", "maintenance over");
    browser.click("#reset-web-1");
    wait_for(Duration::from_secs(20), "the breaker to close", || {
        (breaker(&node, "web-1") == "closed").then_some(())
    });
    let fleet = browser.wait_text("web-1");
    assert!(!fleet.contains("forced"), "{fleet}");
    browser.shoot("fleet-reset");

    browser.go(&format!("{base}/tenants"));
    browser.wait_text("Tenants and sites");
    browser.shoot("tenants");

    // At phone width every page fits the screen: wide tables scroll inside themselves, the
    // page never scrolls sideways.
    browser.call(
        "POST",
        "/window/rect",
        Some(json!({ "width": 390, "height": 844 })),
    );
    for page in ["", "tree", "queues", "jobs", "failed", "fleet", "tenants"] {
        browser.go(&format!("{base}/{page}"));
        browser.wait_text("Sign out");
        let fits =
            browser.script("return document.documentElement.scrollWidth <= window.innerWidth + 1;");
        assert_eq!(fits, json!(true), "/{page} scrolls sideways at phone width");
        let name = if page.is_empty() { "overview" } else { page };
        browser.shoot(&format!("{name}-phone"));
    }

    assert!(
        browser.errors.is_empty(),
        "console errors (CSP violations included): {:#?}",
        browser.errors
    );
    let shots = std::fs::read_dir(&browser.shots).unwrap().count();
    assert!(shots >= 10, "a screenshot per page: {shots}");
}
