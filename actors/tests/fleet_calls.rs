//! The fleet's call path in-process (no node): a `Fleet` and one VPS actor against a real
//! sshd, to measure what only shows from inside: how fast an open breaker rejects, and that
//! it does so without touching the network.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chom_actors::fleet::vps::{VpsActor, VpsArgs, VpsMsg};
use chom_actors::fleet::{ExecError, ExecRequest, Fleet, FleetContext};
use chom_core::config::Config;
use chom_core::inventory::VpsServer;
use chom_testkit::Sshd;
use ractor::Actor;

fn config(sshd: &Sshd) -> Config {
    let mut config = Config::default();
    config.ssh.user = sshd.user();
    config.ssh.private_key = sshd.ed25519_key();
    config.ssh.known_hosts = sshd.known_hosts();
    config.ssh.command_prefix = sshd.fake().path().display().to_string();
    config.ssh.connect_timeout = Duration::from_secs(2);
    config.ssh.retry_attempts = 1;
    config.breaker.failure_threshold = 5;
    config.breaker.open_timeout = Duration::from_secs(60);
    config
}

async fn start(sshd: &Sshd) -> Arc<Fleet> {
    start_with(sshd, config(sshd)).await
}

/// A fleet alone: no store running, so only the servers started here exist.
async fn start_with(sshd: &Sshd, config: Config) -> Arc<Fleet> {
    let fleet = Fleet::new(FleetContext::alone(config));
    start_server(&fleet, sshd, "web-1").await;
    fleet
}

/// A server `id` on the loopback `port`.
fn server(id: &str, port: u16) -> VpsServer {
    VpsServer {
        id: id.into(),
        host: "127.0.0.1".into(),
        port,
        user: None,
        host_key: None,
        source: "admin".into(),
        tenant_id: None,
        max_sites: None,
    }
}

/// Start a VPS actor for `id` at the sshd (returns the id for convenience).
async fn start_server(fleet: &Arc<Fleet>, sshd: &Sshd, id: &'static str) -> &'static str {
    let _ = Actor::spawn(
        None,
        VpsActor,
        VpsArgs {
            fleet: fleet.clone(),
            server: server(id, sshd.port()),
        },
    )
    .await
    .unwrap();
    id
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
    let done = Arc::new(AtomicBool::new(false));
    let (counter, finished) = (accepted.clone(), done.clone());
    // Watches until the rejections are over, then drains what is left in the backlog.
    let watcher = std::thread::spawn(move || {
        loop {
            let over = finished.load(Ordering::SeqCst);
            while listener.accept().is_ok() {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            if over {
                break;
            }
            std::thread::sleep(Duration::from_millis(1)); // poll interval of the nonblocking accept
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
    done.store(true, Ordering::SeqCst);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_sshd_hits_the_command_and_connect_timeouts() {
    let sshd = Sshd::start();
    let mut ctx = config(&sshd);
    ctx.ssh.command_timeout = Duration::from_millis(800);
    ctx.ssh.connect_timeout = Duration::from_millis(600);
    ctx.ssh.keepalive_interval = Duration::from_secs(30);
    let fleet = start_with(&sshd, ctx).await;
    assert!(fleet.exec(req(&[])).await.unwrap().success());
    sshd.freeze();
    // On the established session: the command limit fires.
    let started = Instant::now();
    let err = fleet.exec(req(&[])).await.unwrap_err();
    let took = started.elapsed();
    // The host never answers: either the command limit fired after the command started, or
    // the channel never opened within the same limit (a transport failure).
    assert!(
        matches!(&err, ExecError::Timeout(d) if *d == Duration::from_millis(800))
            || matches!(&err, ExecError::Transport(m) if m.contains("no answer within 800ms")),
        "{err:?}"
    );
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    // A server with no session yet on the same frozen host: the connect limit fires.
    let second = start_server(&fleet, &sshd, "web-2").await;
    let started = Instant::now();
    let err = fleet
        .exec(ExecRequest {
            vps: second,
            command: "site:list",
            args: &[],
        })
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(&err, ExecError::Transport(m) if m.contains("timed out")),
        "{err:?}"
    );
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    sshd.thaw();
}

/// ractor keeps one future per actor for the actor's whole life, as large as the largest state
/// of its message handler: a handler that awaited an SSH connect or a cache write inline
/// would make every idle server's actor carry that (about 11 KB in a release build, most of
/// an actor's memory; scripts/bench-fleet measures the whole).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vps_actors_message_handler_is_a_small_future() {
    let fleet = Fleet::new(FleetContext::alone(Config::default()));
    let args = || VpsArgs {
        fleet: fleet.clone(),
        server: server("web-1", 22),
    };
    let (actor, handle) = Actor::spawn(None, VpsActor, args()).await.unwrap();
    let mut state = VpsActor.pre_start(actor.clone(), args()).await.unwrap();
    let (reply, _) = ractor::concurrency::oneshot();
    let handler = VpsActor.handle(actor.clone(), VpsMsg::Info(reply.into()), &mut state);
    let size = std::mem::size_of_val(&handler);
    drop(handler);
    // Boxed awaits: 160 bytes; unboxed: 5.6 KB in a debug build, 11 KB in release.
    assert!(size <= 1024, "the handler's future is {size} bytes");
    actor.stop(None);
    handle.await.unwrap();
}
