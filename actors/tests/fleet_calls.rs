//! The fleet's call path in-process (no node): a `Fleet` and one VPS actor against a real
//! sshd, to measure what only shows from inside: how fast an open breaker rejects, and that
//! it does so without touching the network.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chom_actors::context::NodeContext;
use chom_actors::fleet::vps::{VpsActor, VpsArgs};
use chom_actors::fleet::{ExecError, ExecRequest, Fleet};
use chom_core::config::Config;
use chom_core::inventory::VpsServer;
use chom_testkit::Sshd;
use ractor::Actor;

fn context(sshd: &Sshd) -> Arc<NodeContext> {
    let mut config = Config::default();
    config.ssh.user = sshd.user();
    config.ssh.private_key = sshd.ed25519_key();
    config.ssh.known_hosts = sshd.known_hosts();
    config.ssh.command_prefix = sshd.fake().path().display().to_string();
    config.ssh.connect_timeout = Duration::from_secs(2);
    config.ssh.retry_attempts = 1;
    config.breaker.failure_threshold = 5;
    config.breaker.open_timeout = Duration::from_secs(60);
    Arc::new(NodeContext::new(
        Arc::new(config),
        "test".into(),
        "0",
        false,
    ))
}

async fn start(sshd: &Sshd) -> Arc<Fleet> {
    let fleet = Fleet::new(context(sshd));
    let server = VpsServer {
        id: "web-1".into(),
        host: "127.0.0.1".into(),
        port: sshd.port(),
        user: None,
        host_key: None,
        source: "admin".into(),
    };
    let _ = Actor::spawn(
        None,
        VpsActor,
        VpsArgs {
            fleet: fleet.clone(),
            server,
        },
    )
    .await
    .unwrap();
    fleet
}

fn req(args: &[String]) -> ExecRequest<'_> {
    ExecRequest {
        vps: "web-1",
        command: "site:list",
        args,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_rejects_in_under_a_millisecond_without_touching_the_network() {
    let sshd = Sshd::start();
    let fleet = start(&sshd).await;
    let out = fleet.exec(req(&[])).await.unwrap();
    assert!(out.success());
    sshd.kill();
    // Five transport failures (the session is lost, then connects are refused).
    let mut transport = 0;
    for _ in 0..10 {
        match fleet.exec(req(&[])).await {
            Err(ExecError::Transport(_)) => transport += 1,
            Err(ExecError::Rejected { .. }) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        transport, 5,
        "the breaker must open after exactly 5 transport failures"
    );

    // Anything that connects to the server's port now is counted.
    let listener = TcpListener::bind(("127.0.0.1", sshd.port())).unwrap();
    listener.set_nonblocking(true).unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let watcher = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if listener.accept().is_ok() {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    let mut took = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        let r = fleet.exec(req(&[])).await;
        took.push(started.elapsed());
        match r {
            Err(ExecError::Rejected { retry_in, reason }) => {
                assert!(retry_in <= Duration::from_secs(60), "{retry_in:?}");
                assert!(reason.contains("circuit breaker open"), "{reason}");
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
    watcher.join().unwrap();
    took.sort();
    let median = took[took.len() / 2];
    assert!(
        median < Duration::from_millis(1),
        "median rejection took {median:?}"
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "an open breaker touched the network"
    );
}
