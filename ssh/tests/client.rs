//! The SSH client against a real OpenSSH sshd on loopback (chom-testkit).

use std::path::Path;
use std::time::{Duration, Instant};

use chom_ssh::{
    ClientConfig, ErrorClass, HostKeyCheck, Output, Session, SshError, Target, command_line,
    load_key,
};
use chom_testkit::Sshd;
use chom_testkit::eventually;
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

/// Connect to `sshd` with `cfg`, its host key checked against its known_hosts.
async fn try_connect(sshd: &Sshd, cfg: &ClientConfig) -> Result<Session, SshError> {
    let known = HostKeyCheck::KnownHosts(sshd.known_hosts());
    Session::connect(&target(sshd, known), cfg).await
}

async fn connect(sshd: &Sshd) -> Session {
    let cfg = config(&sshd.ed25519_key(), Duration::from_secs(10));
    try_connect(sshd, &cfg)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", sshd.log()))
}

/// Run `true` on the session (a probe of whether it still serves commands).
async fn run_true(s: &Session) -> Result<Output, SshError> {
    s.exec("true", Duration::from_secs(10), 64).await
}

fn fake_line(sshd: &Sshd, name: &str, args: &[String]) -> String {
    command_line(&sshd.fake().path().display().to_string(), name, args).unwrap()
}

/// A session without keep-alives: only time limits notice a frozen host.
async fn connect_without_keepalive(sshd: &Sshd) -> Session {
    let mut cfg = config(&sshd.ed25519_key(), Duration::from_secs(10));
    cfg.keepalive_interval = None;
    try_connect(sshd, &cfg)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", sshd.log()))
}

fn assert_within(took: Duration, low: Duration, high: Duration) {
    assert!(
        took >= low && took <= high,
        "took {took:?}, expected {low:?}..={high:?}"
    );
}

#[tokio::test]
async fn exec_captures_output_exit_status_and_json() {
    let sshd = Sshd::start();
    let s = connect(&sshd).await;
    let line = fake_line(&sshd, "site:list", &[]);
    let site_list = async |s: &Session| {
        s.exec(&line, Duration::from_secs(10), 1 << 20)
            .await
            .unwrap()
    };
    sshd.fake().set_stdout(r#"{"ok": true, "sites": 3}"#);
    sshd.fake().set_stderr("a warning");
    let out = site_list(&s).await;
    assert!(out.success());
    assert_eq!(out.json.as_ref().unwrap()["sites"], 3);
    assert_eq!(out.stderr, "a warning");
    sshd.fake().set_exit(7);
    sshd.fake().set_stdout("not json");
    let out = site_list(&s).await;
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
    let out = run_true(&s).await.unwrap();
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
    assert_within(
        took,
        Duration::from_millis(500),
        Duration::from_millis(2500),
    );
    assert!(err.to_string().contains("500ms"), "{err}");
    // The session still serves other commands.
    sshd.fake().set_sleep(Duration::ZERO);
    assert!(run_true(&s).await.unwrap().success());
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
    assert!(
        matches!(err, SshError::SessionLost { started: true, .. }),
        "{err}"
    );
    assert_eq!(err.class(), ErrorClass::Transport { started: true });
    assert_eq!(sshd.fake().running(), 0, "kill must end running commands");
    // The old session knows it is gone: later commands fail at once, as not started.
    eventually(Duration::from_secs(5), "the session to close", || {
        s.is_closed()
    })
    .await;
    let err = run_true(&s).await.unwrap_err();
    assert!(
        matches!(err, SshError::SessionLost { started: false, .. }),
        "{err}"
    );
    let err = try_connect(&sshd, &config(&sshd.ed25519_key(), Duration::from_secs(5)))
        .await
        .expect_err("connect must fail");
    assert!(matches!(err, SshError::Connect { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Transport { started: false });
    sshd.fake().set_sleep(Duration::ZERO);
    sshd.restart();
    let s = connect(&sshd).await;
    assert!(run_true(&s).await.unwrap().success());
}

#[tokio::test]
async fn frozen_sshd_times_out_connects_at_the_connect_limit() {
    let sshd = Sshd::start();
    sshd.freeze();
    let limit = Duration::from_millis(500);
    let started = Instant::now();
    let err = try_connect(&sshd, &config(&sshd.ed25519_key(), limit))
        .await
        .expect_err("connect must time out");
    assert_within(started.elapsed(), limit, limit + Duration::from_secs(2));
    assert!(
        matches!(err, SshError::ConnectTimeout { limit: l, .. } if l == limit),
        "{err}"
    );
    assert_eq!(err.class(), ErrorClass::Transport { started: false });
    sshd.thaw();
    // Thawed, it serves again.
    connect(&sshd).await;
}

#[tokio::test]
async fn frozen_sshd_times_out_commands_at_the_command_limit() {
    let sshd = Sshd::start();
    let s = connect_without_keepalive(&sshd).await;
    let limit = Duration::from_secs(2);

    // A command already running when the host freezes: the command's limit fires.
    sshd.fake().set_sleep(Duration::from_secs(30));
    let line = fake_line(&sshd, "backup:run", &[]);
    let started = Instant::now();
    let running = {
        let s = s.clone();
        tokio::spawn(async move { s.exec(&line, limit, 64).await })
    };
    eventually(Duration::from_secs(10), "the command to start", || {
        sshd.fake().running() == 1
    })
    .await;
    sshd.freeze();
    let err = running.await.unwrap().unwrap_err();
    assert_within(started.elapsed(), limit, limit + Duration::from_secs(2));
    assert!(matches!(err, SshError::CommandTimeout { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Timeout);

    // A new command on the frozen host: its channel never opens within the limit, so the
    // command did not start: a transport failure, at the command's limit.
    let started = Instant::now();
    let err = s.exec("true", limit, 64).await.unwrap_err();
    assert_within(started.elapsed(), limit, limit + Duration::from_secs(2));
    assert!(matches!(err, SshError::Channel { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Transport { started: false });

    // Closing a session to a frozen host does not hang either.
    let started = Instant::now();
    s.close().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    eventually(
        Duration::from_secs(5),
        "the closed session to report it",
        || s.is_closed(),
    )
    .await;
    sshd.thaw();
}

#[tokio::test]
async fn keepalives_notice_a_frozen_host() {
    let sshd = Sshd::start();
    let mut cfg = config(&sshd.ed25519_key(), Duration::from_secs(10));
    cfg.keepalive_interval = Some(Duration::from_millis(200));
    let s = try_connect(&sshd, &cfg).await.unwrap();
    assert!(!s.is_closed());
    sshd.freeze();
    // 3 unanswered keep-alives at 200 ms: closed after about a second.
    eventually(
        Duration::from_secs(10),
        "keep-alives to close the session",
        || s.is_closed(),
    )
    .await;
    let started = Instant::now();
    let err = run_true(&s).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        matches!(err, SshError::SessionLost { started: false, .. }),
        "{err}"
    );
    sshd.thaw();
}

#[tokio::test]
async fn close_ends_the_session() {
    let sshd = Sshd::start();
    let s = connect(&sshd).await;
    let other = s.clone();
    s.close().await;
    eventually(Duration::from_secs(5), "the session to close", || {
        other.is_closed()
    })
    .await;
    let err = run_true(&other).await.unwrap_err();
    assert_eq!(
        err.class(),
        ErrorClass::Transport { started: false },
        "{err}"
    );
}

#[tokio::test]
async fn refused_keys_and_missing_key_files_are_reported_as_such() {
    let sshd = Sshd::start();
    let dir = std::env::temp_dir().join(format!(
        "chom-stranger-{}-{}",
        std::process::id(),
        sshd.port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let stranger = dir.join("id_ed25519");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger)
        .status()
        .unwrap();
    assert!(status.success());
    let err = try_connect(&sshd, &config(&stranger, Duration::from_secs(10)))
        .await
        .expect_err("an unknown key must be refused");
    assert!(matches!(err, SshError::Auth { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Transport { started: false });
    assert!(
        err.to_string()
            .contains(&format!("127.0.0.1:{}", sshd.port())),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);

    let err = load_key(&dir.join("missing")).expect_err("no such key file");
    assert!(matches!(err, SshError::Key { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Local);
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
            .expect_err("a changed key must be refused");
        assert!(matches!(err, SshError::HostKeyMismatch { .. }), "{err}");
        assert_eq!(err.class(), ErrorClass::Security);
    }
    let s = Session::connect(&target(&sshd, HostKeyCheck::Pinned(new)), &cfg)
        .await
        .unwrap();
    assert!(run_true(&s).await.unwrap().success());
}

/// Arguments built from pieces that mean something to a shell, mixed with arbitrary text.
fn hostile_argument() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("'".to_owned()),
        Just("'\\''".to_owned()),
        Just("\"".to_owned()),
        Just("\\".to_owned()),
        Just("$(reboot)".to_owned()),
        Just("`id`".to_owned()),
        Just("${HOME}".to_owned()),
        Just("$1".to_owned()),
        Just(";".to_owned()),
        Just("&&".to_owned()),
        Just("|".to_owned()),
        Just("\n".to_owned()),
        Just("*".to_owned()),
        Just("~".to_owned()),
        Just("#".to_owned()),
        Just(" ".to_owned()),
        Just("-n".to_owned()),
        Just("é☃😀".to_owned()),
        "[^\0]{0,8}",
    ];
    proptest::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Whatever the arguments, /bin/sh hands them to the command unchanged.
    #[test]
    fn quoted_arguments_survive_a_real_shell(args in proptest::collection::vec(hostile_argument(), 0..6)) {
        let line = command_line("printf '%s\\0'", "echo", &args).unwrap();
        let out = std::process::Command::new("/bin/sh").arg("-c").arg(&line).output().unwrap();
        prop_assert!(out.status.success(), "{:?}", out);
        let mut got: Vec<String> = out.stdout.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        got.pop(); // after the last NUL
        let mut expected = vec!["echo".to_owned()];
        expected.extend(args);
        prop_assert_eq!(got, expected);
    }
}
