//! The test harness itself (chom-testkit): the fake vpsmanager's controls and records, and
//! sshd's faults, driven through the real client.

use std::time::Duration;

use chom_ssh::{ClientConfig, HostKeyCheck, Session, Target, command_line, load_key};
use chom_testkit::Sshd;
use chom_testkit::eventually;

async fn connect(sshd: &Sshd) -> Session {
    Session::connect(
        &Target {
            host: "127.0.0.1".into(),
            port: sshd.port(),
            user: sshd.user(),
            host_key: HostKeyCheck::KnownHosts(sshd.known_hosts()),
        },
        &ClientConfig {
            key: load_key(&sshd.ed25519_key()).unwrap(),
            connect_timeout: Duration::from_secs(10),
            keepalive_interval: None,
        },
    )
    .await
    .unwrap_or_else(|e| panic!("connect: {e}\n{}", sshd.log()))
}

fn line(sshd: &Sshd, name: &str, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    command_line(&sshd.fake().path().display().to_string(), name, &args).unwrap()
}

#[tokio::test]
async fn fake_records_calls_in_order_and_follows_its_controls() {
    let sshd = Sshd::start();
    let s = connect(&sshd).await;
    let fake = sshd.fake();
    let t = Duration::from_secs(10);
    assert!(fake.calls().is_empty());

    let out = s
        .exec(&line(&sshd, "site:create", &["a", ""]), t, 1024)
        .await
        .unwrap();
    assert!(out.success() && out.stdout.is_empty() && out.stderr.is_empty());

    fake.set_stdout("out");
    fake.set_stderr("err");
    fake.set_exit(4);
    let out = s
        .exec(&line(&sshd, "site:delete", &["b"]), t, 1024)
        .await
        .unwrap();
    assert_eq!(
        (out.exit_status, out.stdout.as_str(), out.stderr.as_str()),
        (Some(4), "out", "err")
    );

    // Two failures, then back to the configured behaviour.
    fake.set_exit(0);
    fake.set_stdout("");
    fake.set_stderr("");
    fake.set_fail_times(2);
    let mut codes = Vec::new();
    for _ in 0..3 {
        codes.push(
            s.exec(&line(&sshd, "backup:run", &[]), t, 1024)
                .await
                .unwrap()
                .exit_status,
        );
    }
    assert_eq!(codes, [Some(1), Some(1), Some(0)]);

    assert_eq!(
        fake.calls(),
        vec![
            vec!["site:create".to_owned(), "a".into(), String::new()],
            vec!["site:delete".to_owned(), "b".into()],
            vec!["backup:run".to_owned()],
            vec!["backup:run".to_owned()],
            vec!["backup:run".to_owned()],
        ]
    );
    assert_eq!(fake.max_overlap(), 1, "these calls ran one after another");

    fake.set_exit(9);
    fake.set_fail_times(5);
    fake.clear();
    assert!(fake.calls().is_empty());
    assert_eq!(fake.max_overlap(), 0);
    let out = s
        .exec(&line(&sshd, "backup:run", &[]), t, 1024)
        .await
        .unwrap();
    assert!(
        out.success(),
        "clear resets exit code and failures: {out:?}"
    );
}

#[tokio::test]
async fn failure_tokens_are_shared_out_exactly_among_concurrent_calls() {
    let sshd = Sshd::start();
    let s = connect(&sshd).await;
    sshd.fake().set_fail_times(3);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (s, line) = (s.clone(), line(&sshd, "backup:run", &[]));
        tasks.push(tokio::spawn(async move {
            s.exec(&line, Duration::from_secs(20), 1024).await
        }));
    }
    let mut failed = 0;
    for t in tasks {
        if !t.await.unwrap().unwrap().success() {
            failed += 1;
        }
    }
    assert_eq!(failed, 3);
}

#[tokio::test]
async fn running_and_overlap_follow_live_invocations() {
    let sshd = Sshd::start();
    let s = connect(&sshd).await;
    sshd.fake().set_sleep(Duration::from_millis(1500));
    let mut tasks = Vec::new();
    for i in 0..3 {
        let (s, line) = (s.clone(), line(&sshd, "backup:run", &[&i.to_string()]));
        tasks.push(tokio::spawn(async move {
            s.exec(&line, Duration::from_secs(20), 1024).await
        }));
    }
    eventually(Duration::from_secs(10), "three running invocations", || {
        sshd.fake().running() == 3
    })
    .await;
    for t in tasks {
        assert!(t.await.unwrap().unwrap().success());
    }
    assert_eq!(sshd.fake().running(), 0);
    assert_eq!(sshd.fake().max_overlap(), 3);
}

#[tokio::test]
async fn restart_keeps_port_and_host_key_and_drop_frees_the_port() {
    let sshd = Sshd::start();
    let (port, fingerprint) = (sshd.port(), sshd.host_fingerprint());
    assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");
    let known = std::fs::read_to_string(sshd.known_hosts()).unwrap();
    assert!(
        known.starts_with(&format!("[127.0.0.1]:{port} ssh-ed25519 ")),
        "{known}"
    );
    sshd.kill();
    sshd.kill(); // twice is harmless
    sshd.restart();
    assert_eq!((sshd.port(), sshd.host_fingerprint()), (port, fingerprint));
    assert!(
        connect(&sshd)
            .await
            .exec("true", Duration::from_secs(10), 8)
            .await
            .unwrap()
            .success()
    );
    assert!(sshd.log().contains("Accepted publickey"), "{}", sshd.log());
    drop(sshd);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}
