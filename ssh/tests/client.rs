//! The SSH client against a real OpenSSH sshd on loopback (chom-testkit).

use std::path::Path;
use std::time::{Duration, Instant};

use chom_ssh::{
    ClientConfig, ErrorClass, HostKeyCheck, Session, SshError, Target, command_line, load_key,
};
use chom_testkit::Sshd;
use proptest::prelude::*;

fn target(sshd: &Sshd, check: HostKeyCheck) -> Target {
    Target {
        host: "127.0.0.1".into(),
        port: sshd.port(),
        user: sshd.user(),
        host_key: check,
    }
}

fn config(key: &Path, connect_timeout: Duration) -> ClientConfig {
    ClientConfig {
        key: load_key(key).unwrap(),
        connect_timeout,
        keepalive_interval: Some(Duration::from_millis(500)),
    }
}

async fn connect(sshd: &Sshd) -> Session {
    Session::connect(
        &target(sshd, HostKeyCheck::KnownHosts(sshd.known_hosts())),
        &config(&sshd.ed25519_key(), Duration::from_secs(10)),
    )
    .await
    .unwrap_or_else(|e| panic!("connect: {e}\n{}", sshd.log()))
}

fn fake_line(sshd: &Sshd, name: &str, args: &[String]) -> String {
    command_line(&sshd.fake().path().display().to_string(), name, args).unwrap()
}

#[tokio::test]
async fn exec_captures_output_exit_status_and_json() {
    let sshd = Sshd::start();
    let s = connect(&sshd).await;
    sshd.fake().set_stdout(r#"{"ok": true, "sites": 3}"#);
    sshd.fake().set_stderr("a warning");
    let out = s
        .exec(
            &fake_line(&sshd, "site:list", &[]),
            Duration::from_secs(10),
            1 << 20,
        )
        .await
        .unwrap();
    assert!(out.success());
    assert_eq!(out.json.as_ref().unwrap()["sites"], 3);
    assert_eq!(out.stderr, "a warning");
    sshd.fake().set_exit(7);
    sshd.fake().set_stdout("not json");
    let out = s
        .exec(
            &fake_line(&sshd, "site:list", &[]),
            Duration::from_secs(10),
            1 << 20,
        )
        .await
        .unwrap();
    assert_eq!(out.exit_status, Some(7));
    assert!(!out.success());
    assert_eq!(out.json, None);
    assert_eq!(out.stdout, "not json");
}

#[tokio::test]
async fn rsa_keys_authenticate_too() {
    let sshd = Sshd::start();
    let s = Session::connect(
        &target(&sshd, HostKeyCheck::Pinned(sshd.host_fingerprint())),
        &config(&sshd.rsa_key(), Duration::from_secs(10)),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
    let out = s.exec("true", Duration::from_secs(10), 1024).await.unwrap();
    assert!(out.success());
}

#[tokio::test]
async fn hostile_arguments_arrive_literally() {
    let sshd = Sshd::start();
    let s = connect(&sshd).await;
    let marker = std::env::temp_dir().join(format!("pwned-{}", std::process::id()));
    let args = vec![
        format!("x'; touch {}; echo '", marker.display()),
        "$(reboot)".to_owned(),
        "`id`".to_owned(),
        "a\nb c".to_owned(),
        String::new(),
    ];
    let out = s
        .exec(
            &fake_line(&sshd, "site:create", &args),
            Duration::from_secs(10),
            1024,
        )
        .await
        .unwrap();
    assert!(out.success());
    let mut expected = vec!["site:create".to_owned()];
    expected.extend(args);
    assert_eq!(sshd.fake().calls(), vec![expected]);
    assert!(!marker.exists());
}

#[tokio::test]
async fn ten_commands_run_at_once_on_one_session() {
    let sshd = Sshd::start();
    sshd.fake().set_sleep(Duration::from_millis(500));
    let s = connect(&sshd).await;
    let mut tasks = Vec::new();
    for i in 0..10 {
        let (s, line) = (s.clone(), fake_line(&sshd, "backup:run", &[i.to_string()]));
        tasks.push(tokio::spawn(async move {
            s.exec(&line, Duration::from_secs(20), 1024).await
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap().unwrap().success());
    }
    assert_eq!(sshd.fake().calls().len(), 10);
    assert!(
        sshd.fake().max_overlap() >= 5,
        "channels did not run concurrently"
    );
}

#[tokio::test]
async fn output_beyond_the_limit_is_cut_and_flagged() {
    let sshd = Sshd::start();
    let s = connect(&sshd).await;
    let out = s
        .exec(
            "head -c 100000 /dev/zero | tr '\\0' x",
            Duration::from_secs(10),
            1000,
        )
        .await
        .unwrap();
    assert!(out.success());
    assert_eq!(out.stdout.len(), 1000);
    assert!(out.stdout_truncated && !out.stderr_truncated);
}

#[tokio::test]
async fn a_slow_command_times_out_and_its_channel_is_closed() {
    let sshd = Sshd::start();
    sshd.fake().set_sleep(Duration::from_secs(30));
    let s = connect(&sshd).await;
    let started = Instant::now();
    let err = s
        .exec(
            &fake_line(&sshd, "backup:run", &[]),
            Duration::from_millis(500),
            1024,
        )
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, SshError::CommandTimeout { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Timeout);
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // The session still serves other commands.
    sshd.fake().set_sleep(Duration::ZERO);
    assert!(
        s.exec("true", Duration::from_secs(10), 1024)
            .await
            .unwrap()
            .success()
    );
}

#[tokio::test]
async fn killed_sshd_loses_the_session_and_refuses_connections_until_restarted() {
    let sshd = Sshd::start();
    let s = connect(&sshd).await;
    sshd.fake().set_sleep(Duration::from_secs(30));
    let line = fake_line(&sshd, "site:create", &[]);
    let running = {
        let s = s.clone();
        tokio::spawn(async move { s.exec(&line, Duration::from_secs(60), 1024).await })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while sshd.fake().running() == 0 {
        assert!(Instant::now() < deadline, "command never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sshd.kill();
    let err = running.await.unwrap().unwrap_err();
    assert_eq!(
        err.class(),
        ErrorClass::Transport { started: true },
        "{err}"
    );
    let err = Session::connect(
        &target(&sshd, HostKeyCheck::KnownHosts(sshd.known_hosts())),
        &config(&sshd.ed25519_key(), Duration::from_secs(5)),
    )
    .await
    .err()
    .expect("connect must fail");
    assert!(matches!(err, SshError::Connect { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Transport { started: false });
    sshd.fake().set_sleep(Duration::ZERO);
    sshd.restart();
    let s = connect(&sshd).await;
    assert!(
        s.exec("true", Duration::from_secs(10), 64)
            .await
            .unwrap()
            .success()
    );
}

#[tokio::test]
async fn frozen_sshd_times_out_connects_and_commands_at_their_limits() {
    let sshd = Sshd::start();
    let s = connect(&sshd).await;
    sshd.freeze();
    let started = Instant::now();
    let err = Session::connect(
        &target(&sshd, HostKeyCheck::KnownHosts(sshd.known_hosts())),
        &config(&sshd.ed25519_key(), Duration::from_millis(700)),
    )
    .await
    .err()
    .expect("connect must time out");
    let took = started.elapsed();
    assert!(matches!(err, SshError::ConnectTimeout { .. }), "{err}");
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_millis(2700),
        "{took:?}"
    );

    let started = Instant::now();
    let err = s
        .exec("true", Duration::from_millis(800), 64)
        .await
        .unwrap_err();
    let took = started.elapsed();
    // Within the command limit: either the command's limit fired, or the channel never
    // opened (a transport failure: the command did not start), or keep-alives found the
    // session dead first.
    match &err {
        SshError::CommandTimeout { .. } => assert_eq!(err.class(), ErrorClass::Timeout),
        SshError::Channel { .. } | SshError::SessionLost { .. } => {
            assert_eq!(
                err.class(),
                ErrorClass::Transport { started: false },
                "{err}"
            )
        }
        other => panic!("unexpected {other}"),
    }
    assert!(took < Duration::from_millis(2800), "{took:?}");
    sshd.thaw();
}

#[tokio::test]
async fn host_keys_are_checked() {
    let sshd = Sshd::start();
    let old = sshd.host_fingerprint();
    let cfg = config(&sshd.ed25519_key(), Duration::from_secs(10));
    // Unknown host: empty known_hosts.
    let empty = std::env::temp_dir().join(format!("chom-empty-kh-{}", std::process::id()));
    std::fs::write(&empty, "").unwrap();
    let err = Session::connect(
        &target(&sshd, HostKeyCheck::KnownHosts(empty.clone())),
        &cfg,
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(err, SshError::UnknownHostKey { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Security);
    let _ = std::fs::remove_file(empty);

    sshd.rotate_host_key();
    let new = sshd.host_fingerprint();
    assert_ne!(old, new);
    for check in [
        HostKeyCheck::KnownHosts(sshd.known_hosts()),
        HostKeyCheck::Pinned(old.clone()),
    ] {
        let err = Session::connect(&target(&sshd, check), &cfg)
            .await
            .err()
            .expect("a changed key must be refused");
        assert!(matches!(err, SshError::HostKeyMismatch { .. }), "{err}");
        assert_eq!(err.class(), ErrorClass::Security);
    }
    let s = Session::connect(&target(&sshd, HostKeyCheck::Pinned(new)), &cfg)
        .await
        .unwrap();
    assert!(
        s.exec("true", Duration::from_secs(10), 64)
            .await
            .unwrap()
            .success()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Whatever the arguments, /bin/sh hands them to the command unchanged.
    #[test]
    fn quoted_arguments_survive_a_real_shell(args in proptest::collection::vec("[^\0]{0,40}", 0..6)) {
        let line = command_line("printf '%s\\0'", "echo", &args).unwrap();
        let out = std::process::Command::new("/bin/sh").arg("-c").arg(&line).output().unwrap();
        prop_assert!(out.status.success());
        let mut got: Vec<String> = out.stdout.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        got.pop(); // after the last NUL
        let mut expected = vec!["echo".to_owned()];
        expected.extend(args);
        prop_assert_eq!(got, expected);
    }
}
