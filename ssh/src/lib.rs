//! The SSH client layer of the CHOM node, on `russh`: one [`Session`] per server, several
//! commands at once on it (multiplexed channels), output capped at a size, host keys checked
//! against `known_hosts` or a pinned fingerprint, and errors classified for the circuit
//! breaker ([`ErrorClass`]). No actors here: the VPS actor owns sessions; callers run
//! commands on clones of them.
//!
//! [`command_line`] builds the remote command line: a trusted prefix, a command name checked
//! against `^[a-z][a-z0-9-]*(:[a-z0-9-]+)*$`, and arguments each single-quoted for POSIX sh,
//! so no value can change what runs.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

use std::net::Shutdown;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use russh::client;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{Channel, ChannelMsg, Disconnect, Sig};
use tokio::sync::watch;
use tracing::debug;

pub use russh::keys::PrivateKey;

// === command lines ===

/// A command name or argument that cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidCommand {
    /// The name does not match `^[a-z][a-z0-9-]*(:[a-z0-9-]+)*$`.
    #[error(
        "invalid command name `{0}`: expected lowercase words separated by ':' such as site:create"
    )]
    Name(String),
    /// An argument holds a NUL byte, which no shell can pass.
    #[error("argument {0} contains a NUL byte")]
    Nul(usize),
}

/// Whether `name` matches `^[a-z][a-z0-9-]*(:[a-z0-9-]+)*$`.
pub fn valid_command_name(name: &str) -> bool {
    let mut parts = name.split(':');
    let first = parts.next().unwrap_or("");
    let word = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    first.starts_with(|c: char| c.is_ascii_lowercase()) && word(first) && parts.all(word)
}

/// Quote one argument for POSIX sh: inside single quotes nothing is special, and a quote
/// itself is written as `'\''`.
pub fn quote(arg: &str) -> String {
    let mut out = String::with_capacity(arg.len() + 2);
    out.push('\'');
    for c in arg.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// `PREFIX NAME 'arg1' 'arg2' ...` (no prefix when `prefix` is empty).
pub fn command_line(prefix: &str, name: &str, args: &[String]) -> Result<String, InvalidCommand> {
    if !valid_command_name(name) {
        return Err(InvalidCommand::Name(name.to_owned()));
    }
    let mut line = String::new();
    if !prefix.trim().is_empty() {
        line.push_str(prefix.trim());
        line.push(' ');
    }
    line.push_str(name);
    for (i, arg) in args.iter().enumerate() {
        if arg.contains('\0') {
            return Err(InvalidCommand::Nul(i + 1));
        }
        line.push(' ');
        line.push_str(&quote(arg));
    }
    Ok(line)
}

// === errors ===

/// How an error counts for the circuit breaker and the retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The host could not be reached or the session broke: a breaker failure.
    /// `started`: the remote command may have run.
    Transport {
        /// Whether the command had been sent when it happened.
        started: bool,
    },
    /// The host presented a key we do not trust: never retried.
    Security,
    /// The command ran past its time limit: not the host's fault.
    Timeout,
    /// A local problem (unreadable key file).
    Local,
}

/// Why a connection or a command failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SshError {
    /// TCP connect failed (refused, unreachable, name not resolved).
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The OS's reason.
        reason: String,
    },
    /// Connect, handshake and authentication did not finish in time.
    #[error("connecting to {addr} timed out after {limit:?}")]
    ConnectTimeout {
        /// `host:port`.
        addr: String,
        /// The limit.
        limit: Duration,
    },
    /// The SSH handshake failed.
    #[error("ssh handshake with {addr} failed: {reason}")]
    Handshake {
        /// `host:port`.
        addr: String,
        /// What russh said.
        reason: String,
    },
    /// The server refused our key.
    #[error("authentication as {user} on {addr} refused")]
    Auth {
        /// `host:port`.
        addr: String,
        /// Remote user.
        user: String,
    },
    /// The host's key differs from the one we trust.
    #[error("host key mismatch for {addr}: expected {expected}, host presented {presented}")]
    HostKeyMismatch {
        /// `host:port`.
        addr: String,
        /// What we trust (pinned fingerprint or the known_hosts entry).
        expected: String,
        /// The fingerprint of the key presented.
        presented: String,
    },
    /// The host's key is not in known_hosts.
    #[error(
        "host key of {addr} is not in {known_hosts} (presented {presented}); add it or pin its fingerprint"
    )]
    UnknownHostKey {
        /// `host:port`.
        addr: String,
        /// The file checked.
        known_hosts: String,
        /// The fingerprint of the key presented.
        presented: String,
    },
    /// The private key could not be loaded.
    #[error("cannot load ssh private key {path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A channel could not be opened or the command not sent.
    #[error("cannot start a command on {addr}: {reason}")]
    Channel {
        /// `host:port`.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The session died.
    #[error("ssh session to {addr} lost{}", if *.started { " while the command ran" } else { "" })]
    SessionLost {
        /// `host:port`.
        addr: String,
        /// Whether the command had been sent.
        started: bool,
    },
    /// The command ran past its limit; its channel was closed.
    #[error("command on {addr} timed out after {limit:?}")]
    CommandTimeout {
        /// `host:port`.
        addr: String,
        /// The limit.
        limit: Duration,
    },
}

impl SshError {
    /// How this error counts.
    pub fn class(&self) -> ErrorClass {
        match self {
            SshError::Connect { .. }
            | SshError::ConnectTimeout { .. }
            | SshError::Handshake { .. }
            | SshError::Auth { .. }
            | SshError::Channel { .. } => ErrorClass::Transport { started: false },
            SshError::SessionLost { started, .. } => ErrorClass::Transport { started: *started },
            SshError::HostKeyMismatch { .. } | SshError::UnknownHostKey { .. } => {
                ErrorClass::Security
            }
            SshError::CommandTimeout { .. } => ErrorClass::Timeout,
            SshError::Key { .. } => ErrorClass::Local,
        }
    }
}

// === keys ===

/// Load a private key (Ed25519, RSA, ECDSA; OpenSSH or PEM format, no passphrase).
pub fn load_key(path: &Path) -> Result<Arc<PrivateKey>, SshError> {
    russh::keys::load_secret_key(path, None)
        .map(Arc::new)
        .map_err(|e| SshError::Key {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
}

/// How the server's host key is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyCheck {
    /// Against this known_hosts file (`[host]:port` entries for ports other than 22).
    KnownHosts(PathBuf),
    /// Against this fingerprint, `SHA256:...` as `ssh-keygen -lf` prints it.
    Pinned(String),
}

/// Where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or IP address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Remote user.
    pub user: String,
    /// Host key policy.
    pub host_key: HostKeyCheck,
}

impl Target {
    fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Client settings.
#[derive(Clone)]
pub struct ClientConfig {
    /// The key to authenticate with.
    pub key: Arc<PrivateKey>,
    /// Limit of TCP connect + handshake + authentication.
    pub connect_timeout: Duration,
    /// Keep-alive interval; a peer that leaves 3 in a row unanswered is considered gone and
    /// the session closes ([`Session::is_closed`]). `None`: a frozen peer is only noticed
    /// by command time limits.
    pub keepalive_interval: Option<Duration>,
}

// === sessions ===

/// Keep-alives without an answer before russh drops the session.
const KEEPALIVE_MAX: usize = 3;

/// How long [`Session::close`] waits for each step of a polite disconnect.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

struct Handler {
    target: Target,
    /// The host key decision when it refused the key (read after connect fails).
    refused: Arc<Mutex<Option<SshError>>>,
    /// Dropped with the handler, i.e. when russh's connection task ends: lets
    /// [`Session::close`] wait for that instead of guessing.
    _ended: watch::Sender<()>,
}

/// Split a socket into the tokio stream for russh and a second descriptor of the same
/// socket, used to shut it down from outside.
fn duplicate(
    socket: tokio::net::TcpStream,
) -> std::io::Result<(tokio::net::TcpStream, Arc<std::net::TcpStream>)> {
    let std = socket.into_std()?;
    let spare = std.try_clone()?;
    Ok((tokio::net::TcpStream::from_std(std)?, Arc::new(spare)))
}

impl client::Handler for Handler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = presented_key(server_public_key);
        let presented = key.fingerprint(HashAlg::Sha256).to_string();
        let addr = self.target.addr();
        let problem = match &self.target.host_key {
            HostKeyCheck::Pinned(expected) => (expected.trim_end_matches('=')
                != presented.trim_end_matches('='))
            .then(|| SshError::HostKeyMismatch {
                addr,
                expected: expected.clone(),
                presented,
            }),
            HostKeyCheck::KnownHosts(path) => match russh::keys::check_known_hosts_path(
                &self.target.host,
                self.target.port,
                &key,
                path,
            ) {
                Ok(true) => None,
                Ok(false) => Some(SshError::UnknownHostKey {
                    addr,
                    known_hosts: path.display().to_string(),
                    presented,
                }),
                Err(russh::keys::Error::KeyChanged { line }) => Some(SshError::HostKeyMismatch {
                    addr,
                    expected: format!("the key at {}:{line}", path.display()),
                    presented,
                }),
                Err(e) => Some(SshError::UnknownHostKey {
                    addr,
                    known_hosts: format!("{} ({e})", path.display()),
                    presented,
                }),
            },
        };
        let trusted = problem.is_none();
        if let Some(problem) = &problem {
            // The caller reports it (once, loudly); here it is only a trace of the decision.
            debug!(addr = %self.target.addr(), %problem, "host key refused");
        }
        *self.refused.lock().expect("host key lock") = problem;
        Ok(trusted)
    }
}

/// The public key a server presented (a certificate's own key), as known_hosts and
/// fingerprints name it.
pub fn presented_key(presented: &PublicKeyOrCertificate) -> russh::keys::PublicKey {
    match presented {
        PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
        PublicKeyOrCertificate::Certificate(cert) => cert.public_key().clone().into(),
    }
}

/// An authenticated session to one server. Cheap to clone; commands on clones run at once
/// on separate channels.
#[derive(Clone)]
pub struct Session {
    handle: Arc<client::Handle<Handler>>,
    addr: String,
    /// Another descriptor of the connection's socket, to cut it in [`Session::close`].
    socket: Arc<std::net::TcpStream>,
    /// Fails to `changed()` once russh's connection task has ended.
    ended: watch::Receiver<()>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("addr", &self.addr)
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// What a command produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// Exit status, when the command exited.
    pub exit_status: Option<u32>,
    /// Signal name, when it was killed by one.
    pub exit_signal: Option<String>,
    /// Standard output (at most the limit; lossy UTF-8).
    pub stdout: String,
    /// Standard error (at most the limit; lossy UTF-8).
    pub stderr: String,
    /// Whether stdout was cut at the limit.
    pub stdout_truncated: bool,
    /// Whether stderr was cut at the limit.
    pub stderr_truncated: bool,
    /// Standard output parsed, when it is JSON.
    pub json: Option<serde_json::Value>,
    /// Time from the request to the end of the command.
    pub elapsed: Duration,
}

impl Output {
    /// Exit status 0.
    pub fn success(&self) -> bool {
        self.exit_status == Some(0)
    }
}

fn push_capped(buf: &mut Vec<u8>, data: &[u8], max: usize, truncated: &mut bool) {
    let room = max.saturating_sub(buf.len());
    if data.len() > room {
        *truncated = true;
    }
    buf.extend_from_slice(&data[..data.len().min(room)]);
}

/// Text from captured bytes: exact when they are UTF-8, lossy otherwise. A cut at the limit
/// can split a multi-byte character; that partial tail is dropped rather than turned into
/// U+FFFD, so valid output stays valid (and at most `max` bytes long).
fn text(mut bytes: Vec<u8>, truncated: bool) -> String {
    if truncated && let Err(e) = std::str::from_utf8(&bytes) {
        // `error_len() == None` means the input ended inside a character.
        if e.error_len().is_none() {
            bytes.truncate(e.valid_up_to());
        }
    }
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// A signal name as the server sent it (`TERM`, `KILL`, ...).
fn signal_name(sig: &Sig) -> String {
    match sig {
        Sig::Custom(name) => name.clone(),
        other => format!("{other:?}"),
    }
}

/// The TCP connection to `target`, and a second descriptor of it to cut it with.
async fn open_socket(
    target: &Target,
    addr: &str,
) -> Result<(tokio::net::TcpStream, Arc<std::net::TcpStream>), SshError> {
    let failed = |e: std::io::Error| SshError::Connect {
        addr: addr.to_owned(),
        reason: e.to_string(),
    };
    let socket = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(failed)?;
    let _ = socket.set_nodelay(true);
    duplicate(socket).map_err(failed)
}

/// Public-key authentication of `target.user` on an established connection.
async fn authenticate(
    handle: &mut client::Handle<Handler>,
    target: &Target,
    cfg: &ClientConfig,
    addr: &str,
) -> Result<(), SshError> {
    let handshake = |e: russh::Error| SshError::Handshake {
        addr: addr.to_owned(),
        reason: e.to_string(),
    };
    // `None` from the server means it did not say (legacy SHA-1 for RSA); the outer
    // `Option` is `None` for keys that are not RSA.
    let rsa_hash = handle
        .best_supported_rsa_hash()
        .await
        .map_err(handshake)?
        .flatten();
    let auth = handle
        .authenticate_publickey(
            target.user.clone(),
            PrivateKeyWithHashAlg::new(cfg.key.clone(), rsa_hash),
        )
        .await
        .map_err(handshake)?;
    if !auth.success() {
        return Err(SshError::Auth {
            addr: addr.to_owned(),
            user: target.user.clone(),
        });
    }
    Ok(())
}

/// What a command's channel carried until it ended: output (each stream capped), and how it
/// ended.
#[derive(Default)]
struct Collected {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    out_cut: bool,
    err_cut: bool,
    exit_status: Option<u32>,
    exit_signal: Option<String>,
}

impl Collected {
    /// Read `channel` to its end, keeping at most `max_output` bytes of each stream (the rest
    /// is read and dropped so the remote side never blocks). False if the server refused to
    /// run the command.
    async fn read(&mut self, channel: &mut Channel<client::Msg>, max_output: usize) -> bool {
        while let Some(msg) = channel.wait().await {
            match msg {
                ChannelMsg::Data { data } => {
                    push_capped(&mut self.stdout, &data, max_output, &mut self.out_cut)
                }
                ChannelMsg::ExtendedData { data, ext: 1 } => {
                    push_capped(&mut self.stderr, &data, max_output, &mut self.err_cut)
                }
                ChannelMsg::ExitStatus { exit_status } => self.exit_status = Some(exit_status),
                ChannelMsg::ExitSignal {
                    signal_name: sig, ..
                } => self.exit_signal = Some(signal_name(&sig)),
                ChannelMsg::Failure => return false,
                _ => {}
            }
        }
        true
    }
}

impl Session {
    /// Connect, check the host key and authenticate, all within `cfg.connect_timeout`.
    pub async fn connect(target: &Target, cfg: &ClientConfig) -> Result<Session, SshError> {
        let addr = target.addr();
        let refused = Arc::new(Mutex::new(None));
        let (ended_tx, ended) = watch::channel(());
        let config = Arc::new(client::Config {
            keepalive_interval: cfg.keepalive_interval,
            keepalive_max: KEEPALIVE_MAX,
            ..Default::default()
        });
        let handler = Handler {
            target: target.clone(),
            refused: refused.clone(),
            _ended: ended_tx,
        };
        // A second descriptor of the socket, kept to cut it: russh runs the connection in a
        // task we cannot cancel, and against a frozen peer that task would wait forever.
        let cutter: Mutex<Option<Arc<std::net::TcpStream>>> = Mutex::new(None);
        let attempt = async {
            let (socket, spare) = open_socket(target, &addr).await?;
            *cutter.lock().expect("socket lock") = Some(spare.clone());
            let mut handle = client::connect_stream(config, socket, handler)
                .await
                .map_err(|e| {
                    // A refused host key surfaces from russh as a generic error; the
                    // handler kept the real reason.
                    refused
                        .lock()
                        .expect("host key lock")
                        .take()
                        .unwrap_or_else(|| SshError::Handshake {
                            addr: addr.clone(),
                            reason: e.to_string(),
                        })
                })?;
            authenticate(&mut handle, target, cfg, &addr).await?;
            Ok((handle, spare))
        };
        let result = tokio::time::timeout(cfg.connect_timeout, attempt).await;
        debug!(%addr, user = %target.user, ok = matches!(result, Ok(Ok(_))), "ssh connect");
        let error = match result {
            Ok(Ok((handle, socket))) => {
                return Ok(Session {
                    handle: Arc::new(handle),
                    addr,
                    socket,
                    ended,
                });
            }
            Ok(Err(e)) => e,
            Err(_) => SshError::ConnectTimeout {
                addr,
                limit: cfg.connect_timeout,
            },
        };
        if let Some(socket) = cutter.lock().expect("socket lock").take() {
            let _ = socket.shutdown(Shutdown::Both);
        }
        Err(error)
    }

    /// Whether the session is gone (closed, or keep-alives unanswered).
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Close the session (commands running on it end with `SessionLost`). Returns within a
    /// few seconds even when the peer is frozen: the socket is cut if a polite disconnect
    /// does not end the connection.
    pub async fn close(&self) {
        let _ = tokio::time::timeout(
            CLOSE_GRACE,
            self.handle
                .disconnect(Disconnect::ByApplication, "closing", "en"),
        )
        .await;
        // `changed` fails once the handler is dropped, i.e. when russh's task has ended.
        let mut ended = self.ended.clone();
        let _ = tokio::time::timeout(CLOSE_GRACE, ended.changed()).await;
        let _ = self.socket.shutdown(Shutdown::Both);
    }

    /// Open a channel and send `command_line` on it, within `timeout`.
    async fn open_channel(
        &self,
        command_line: &str,
        timeout: Duration,
    ) -> Result<Channel<client::Msg>, SshError> {
        let lost = || SshError::SessionLost {
            addr: self.addr.clone(),
            started: false,
        };
        // Opening the channel and sending the request share the time limit: a frozen host
        // never answers either. Until the request is out the command has not started, so
        // that is a transport failure (worth retrying, counted by the breaker), not a timeout.
        let start = async {
            let channel = self.handle.channel_open_session().await.map_err(|e| {
                if self.is_closed() {
                    lost()
                } else {
                    SshError::Channel {
                        addr: self.addr.clone(),
                        reason: e.to_string(),
                    }
                }
            })?;
            channel.exec(true, command_line).await.map_err(|_| lost())?;
            Ok(channel)
        };
        match tokio::time::timeout(timeout, start).await {
            Ok(result) => result,
            Err(_) => Err(SshError::Channel {
                addr: self.addr.clone(),
                reason: format!("no answer within {timeout:?}"),
            }),
        }
    }

    /// Run `command_line` on a new channel, keeping at most `max_output` bytes of stdout and
    /// of stderr each (the rest is read and dropped so the remote side never blocks), for at
    /// most `timeout` (then the channel is closed).
    pub async fn exec(
        &self,
        command_line: &str,
        timeout: Duration,
        max_output: usize,
    ) -> Result<Output, SshError> {
        let started = Instant::now();
        let lost = |started: bool| SshError::SessionLost {
            addr: self.addr.clone(),
            started,
        };
        if self.is_closed() {
            return Err(lost(false));
        }
        let mut channel = self.open_channel(command_line, timeout).await?;
        let limit = timeout;
        let timeout = timeout.saturating_sub(started.elapsed());
        let mut got = Collected::default();
        let run = got.read(&mut channel, max_output);
        let finished = match tokio::time::timeout(timeout, run).await {
            Ok(finished) => finished,
            Err(_) => {
                // Ask sshd to TERM the command's process group, then close the channel so
                // it no longer occupies the session. OpenSSH refuses the signal for root
                // logins (no post-auth privilege separation) and forced commands; then the
                // command runs on until it ends or writes to its closed pipe. Both messages
                // are queued to russh's task without waiting for the peer, so a frozen host
                // cannot stretch the limit.
                let _ = channel.signal(Sig::TERM).await;
                let _ = channel.close().await;
                debug!(addr = %self.addr, limit = ?limit, "command timed out; channel closed");
                return Err(SshError::CommandTimeout {
                    addr: self.addr.clone(),
                    limit,
                });
            }
        };
        if !finished {
            return Err(SshError::Channel {
                addr: self.addr.clone(),
                reason: "the server refused to run the command".into(),
            });
        }
        if got.exit_status.is_none() && got.exit_signal.is_none() {
            // The channel ended without an exit: the connection went away under it.
            debug!(addr = %self.addr, "channel closed without an exit status");
            return Err(lost(true));
        }
        let stdout = text(got.stdout, got.out_cut);
        let json = if got.out_cut {
            None
        } else {
            serde_json::from_str(stdout.trim()).ok()
        };
        Ok(Output {
            exit_status: got.exit_status,
            exit_signal: got.exit_signal,
            stdout,
            stderr: text(got.stderr, got.err_cut),
            stdout_truncated: got.out_cut,
            stderr_truncated: got.err_cut,
            json,
            elapsed: started.elapsed(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_names() {
        for ok in ["site:create", "backup", "site:ssl-renew", "a1:b2:c-3"] {
            assert!(valid_command_name(ok), "{ok}");
        }
        for bad in [
            "",
            "Site",
            "1site",
            "site:",
            ":x",
            "site create",
            "site;reboot",
            "a::b",
            "a:B",
        ] {
            assert!(!valid_command_name(bad), "{bad}");
        }
    }

    #[test]
    fn lines_quote_every_argument() {
        let line = command_line(
            "sudo /opt/vpsmanager/bin/vpsmanager",
            "site:create",
            &["a b".into(), "it's".into()],
        )
        .unwrap();
        assert_eq!(
            line,
            "sudo /opt/vpsmanager/bin/vpsmanager site:create 'a b' 'it'\\''s'"
        );
        assert_eq!(command_line("", "x", &[]).unwrap(), "x");
        assert_eq!(
            command_line("", "x", &["a\0b".into()]),
            Err(InvalidCommand::Nul(1))
        );
        assert!(matches!(
            command_line("", "x; reboot", &[]),
            Err(InvalidCommand::Name(_))
        ));
    }

    #[test]
    fn text_is_exact_when_it_can_be() {
        assert_eq!(text("héllo ☃".as_bytes().to_vec(), false), "héllo ☃");
        // Cut inside the snowman (3 bytes): the partial character goes, nothing is invented.
        let cut = "ab☃".as_bytes()[..4].to_vec();
        assert_eq!(text(cut.clone(), true), "ab");
        // Not cut: a broken tail is the command's own output, shown lossily.
        assert_eq!(text(cut, false), "ab\u{fffd}");
        assert_eq!(text(vec![b'a', 0xff, b'b'], true), "a\u{fffd}b");
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(&Sig::TERM), "TERM");
        assert_eq!(signal_name(&Sig::Custom("XCPU".into())), "XCPU");
    }

    #[test]
    fn output_is_capped() {
        let mut buf = Vec::new();
        let mut cut = false;
        push_capped(&mut buf, b"hello", 8, &mut cut);
        push_capped(&mut buf, b"world", 8, &mut cut);
        assert_eq!(buf, b"hellowor");
        assert!(cut);
    }
}
