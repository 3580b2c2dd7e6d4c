//! Serving the admin RPC on a Unix socket.
//!
//! Each connection is its own task, so one bad client (garbage, a 2 MiB line, a slow-loris
//! dribbling bytes, a client that never reads) costs only its own connection: a malformed line
//! gets a JSON-RPC error and the connection stays usable; an oversized line gets an error and
//! the connection is closed (the rest of the line cannot be framed); a line that does not
//! complete within `line_timeout` closes the connection; at most `max_connections` are served
//! at once, and extra ones are told so and closed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use serde_json::Value;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, FramedRead};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::protocol::{self, INTERNAL_ERROR, INVALID_REQUEST, PARSE_ERROR, RpcError};

/// Answers one method call.
pub trait Dispatch: Send + Sync + 'static {
    /// Run `method` with `params`.
    fn call(&self, method: String, params: Value) -> BoxFuture<'static, Result<Value, RpcError>>;
}

/// Per-connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest accepted request line, in bytes (SPEC: 1 MiB).
    pub max_line: usize,
    /// A connection must deliver each complete line within this long (slow-loris guard).
    pub line_timeout: Duration,
    /// Writing one response must finish within this long (client not reading).
    pub write_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line: 1024 * 1024,
            line_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            max_connections: 64,
        }
    }
}

/// Accept connections until `shutdown` is cancelled; connections already accepted finish on
/// their own.
pub async fn serve(
    listener: UnixListener,
    dispatch: Arc<dyn Dispatch>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // EMFILE and friends: back off briefly instead of spinning on accept.
                    warn!(%error, "admin socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tokio::spawn(async move {
                let mut stream = stream;
                let busy = protocol::failure(
                    Value::Null,
                    RpcError::new(INTERNAL_ERROR, "too many admin connections"),
                );
                let _ = write_line(&mut stream, &busy, limits.write_timeout).await;
            });
            continue;
        };
        let dispatch = dispatch.clone();
        // Connections are not cancelled with the accept loop: a request in flight (e.g. a
        // `restart` of the admin actor itself) still gets its answer. Each connection ends on
        // its own through EOF or the line timeout.
        tokio::spawn(async move {
            connection(stream, dispatch, limits).await;
            drop(permit);
        });
    }
}

async fn connection(stream: tokio::net::UnixStream, dispatch: Arc<dyn Dispatch>, limits: Limits) {
    let (read, mut write) = stream.into_split();
    let codec = AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), limits.max_line);
    let mut lines = FramedRead::new(read, codec);
    loop {
        let line = match tokio::time::timeout(limits.line_timeout, lines.next()).await {
            Err(_) => {
                debug!("admin socket: closing a connection that sent no complete line in time");
                return;
            }
            Ok(None) => return,
            Ok(Some(Err(AnyDelimiterCodecError::MaxChunkLengthExceeded))) => {
                let err = RpcError::new(
                    INVALID_REQUEST,
                    format!("request line longer than {} bytes", limits.max_line),
                );
                let _ = write_line(
                    &mut write,
                    &protocol::failure(Value::Null, err),
                    limits.write_timeout,
                )
                .await;
                return;
            }
            Ok(Some(Err(AnyDelimiterCodecError::Io(_)))) => return,
            Ok(Some(Ok(line))) => line,
        };
        if let Some(response) = handle_line(&line, dispatch.as_ref()).await
            && write_line(&mut write, &response, limits.write_timeout)
                .await
                .is_err()
        {
            return;
        }
    }
}

/// Answer one line: a request, a notification, or a batch. `None` when nothing is to be sent.
pub async fn handle_line(line: &Bytes, dispatch: &dyn Dispatch) -> Option<Value> {
    let trimmed = line.trim_ascii();
    if trimmed.is_empty() {
        return None;
    }
    let value: Value = match serde_json::from_slice(trimmed) {
        Ok(v) => v,
        Err(error) => {
            return Some(protocol::failure(
                Value::Null,
                RpcError::new(PARSE_ERROR, format!("parse error: {error}")),
            ));
        }
    };
    match value {
        Value::Array(items) if items.is_empty() => Some(protocol::failure(
            Value::Null,
            RpcError::new(INVALID_REQUEST, "empty batch"),
        )),
        Value::Array(items) => {
            let mut out = Vec::new();
            for item in items {
                out.extend(handle_one(item, dispatch).await);
            }
            (!out.is_empty()).then_some(Value::Array(out))
        }
        other => handle_one(other, dispatch).await,
    }
}

async fn handle_one(value: Value, dispatch: &dyn Dispatch) -> Option<Value> {
    let request = match protocol::parse_request(value) {
        Ok(r) => r,
        Err((id, error)) => return Some(protocol::failure(id, error)),
    };
    let outcome = dispatch.call(request.method, request.params).await;
    let id = request.id?;
    Some(match outcome {
        Ok(result) => protocol::success(id, result),
        Err(error) => protocol::failure(id, error),
    })
}

async fn write_line<W: AsyncWrite + Unpin>(
    w: &mut W,
    value: &Value,
    limit: Duration,
) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(value).expect("a JSON value serializes");
    bytes.push(b'\n');
    match tokio::time::timeout(limit, w.write_all(&bytes)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "client did not read its response",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::protocol::METHOD_NOT_FOUND;
    use serde_json::json;
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::UnixStream;

    struct Echo;
    impl Dispatch for Echo {
        fn call(
            &self,
            method: String,
            params: Value,
        ) -> BoxFuture<'static, Result<Value, RpcError>> {
            Box::pin(async move {
                match method.as_str() {
                    "echo" => Ok(params),
                    _ => Err(RpcError::new(
                        METHOD_NOT_FOUND,
                        format!("no method {method}"),
                    )),
                }
            })
        }
    }

    /// Removes a test's socket directory when dropped.
    struct TempDir(std::path::PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn start(limits: Limits) -> (std::path::PathBuf, CancellationToken, TempDir) {
        let dir = std::env::temp_dir().join(format!(
            "chom-rpc-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let token = CancellationToken::new();
        tokio::spawn(serve(listener, Arc::new(Echo), limits, token.clone()));
        (path, token, TempDir(dir))
    }

    async fn roundtrip(stream: &mut BufReader<UnixStream>, line: &[u8]) -> Value {
        stream.get_mut().write_all(line).await.unwrap();
        let mut out = String::new();
        stream.read_line(&mut out).await.unwrap();
        serde_json::from_str(&out).unwrap()
    }

    #[tokio::test]
    async fn malformed_lines_get_errors_and_the_connection_keeps_serving() {
        let (path, token, _dir) = start(Limits::default());
        let mut c = BufReader::new(UnixStream::connect(&path).await.unwrap());
        let bad = roundtrip(&mut c, b"{not json\n").await;
        assert_eq!(bad["error"]["code"], PARSE_ERROR);
        let binary = roundtrip(&mut c, b"\xff\xfe\n").await;
        assert_eq!(binary["error"]["code"], PARSE_ERROR);
        let invalid = roundtrip(&mut c, b"{\"jsonrpc\":\"2.0\",\"id\":1}\n").await;
        assert_eq!(invalid["error"]["code"], INVALID_REQUEST);
        assert_eq!(invalid["id"], 1);
        let unknown = roundtrip(
            &mut c,
            b"{\"jsonrpc\":\"2.0\",\"method\":\"nope\",\"id\":2}\n",
        )
        .await;
        assert_eq!(unknown["error"]["code"], METHOD_NOT_FOUND);
        let ok = roundtrip(
            &mut c,
            b"{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":{\"a\":1},\"id\":3}\n",
        )
        .await;
        assert_eq!(ok, json!({"jsonrpc":"2.0","id":3,"result":{"a":1}}));
        let batch = roundtrip(&mut c, b"[{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":4},{\"jsonrpc\":\"2.0\",\"method\":\"echo\"},5]\n").await;
        assert_eq!(batch.as_array().unwrap().len(), 2, "{batch}");
        token.cancel();
    }

    #[tokio::test]
    async fn oversized_line_closes_only_that_connection() {
        let limits = Limits {
            max_line: 1024,
            ..Limits::default()
        };
        let (path, token, _dir) = start(limits);
        let mut good = BufReader::new(UnixStream::connect(&path).await.unwrap());
        let mut big = BufReader::new(UnixStream::connect(&path).await.unwrap());
        let mut line = vec![b'x'; 4096];
        line.push(b'\n');
        let answer = roundtrip(&mut big, &line).await;
        assert_eq!(answer["error"]["code"], INVALID_REQUEST);
        let mut rest = String::new();
        assert_eq!(
            big.read_line(&mut rest).await.unwrap(),
            0,
            "connection closed after the error"
        );
        let ok = roundtrip(
            &mut good,
            b"{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":1}\n",
        )
        .await;
        assert_eq!(ok["result"], json!({}));
        token.cancel();
    }

    #[tokio::test]
    async fn slow_client_is_dropped_and_others_are_served() {
        let limits = Limits {
            line_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let (path, token, _dir) = start(limits);
        let mut slow = BufReader::new(UnixStream::connect(&path).await.unwrap());
        slow.get_mut().write_all(b"{\"jsonrpc\":").await.unwrap();
        let mut good = BufReader::new(UnixStream::connect(&path).await.unwrap());
        let ok = roundtrip(
            &mut good,
            b"{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":1}\n",
        )
        .await;
        assert_eq!(ok["id"], 1);
        let mut rest = String::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), slow.read_line(&mut rest)).await;
        assert_eq!(
            closed.expect("server closed the slow connection").unwrap(),
            0
        );
        token.cancel();
    }

    #[tokio::test]
    async fn connections_over_the_limit_are_refused_politely() {
        let limits = Limits {
            max_connections: 1,
            ..Limits::default()
        };
        let (path, token, _dir) = start(limits);
        let mut first = BufReader::new(UnixStream::connect(&path).await.unwrap());
        let ok = roundtrip(
            &mut first,
            b"{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":1}\n",
        )
        .await;
        assert_eq!(ok["id"], 1);
        let mut second = BufReader::new(UnixStream::connect(&path).await.unwrap());
        let mut out = String::new();
        second.read_line(&mut out).await.unwrap();
        let refused: Value = serde_json::from_str(&out).unwrap();
        assert!(
            refused["error"]["message"]
                .as_str()
                .unwrap()
                .contains("too many"),
            "{refused}"
        );
        token.cancel();
    }
}
