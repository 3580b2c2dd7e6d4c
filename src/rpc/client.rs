//! The admin RPC client behind every `chom` admin command.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::protocol::RpcError;
use super::server::Limits;
use crate::api::Method;

/// Why a call did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing accepts connections on the socket (exit 69).
    #[error("node not reachable on {socket}: {source}")]
    Unreachable {
        /// The socket path tried.
        socket: PathBuf,
        /// Why the connection failed.
        source: std::io::Error,
    },
    /// The node did not answer in time, or closed the connection (exit 69).
    #[error("node on {socket} did not answer: {reason}")]
    NoAnswer {
        /// The socket path tried.
        socket: PathBuf,
        /// What happened.
        reason: String,
    },
    /// The node answered with an error (exit 1).
    #[error("{}", .0.message)]
    Rpc(RpcError),
}

impl ClientError {
    /// The process exit status SPEC.md assigns to this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Unreachable { .. } | ClientError::NoAnswer { .. } => 69,
            ClientError::Rpc(_) => 1,
        }
    }
}

/// Send `request` to the node listening on `socket`, waiting as long as its method allows;
/// the answer is the result document as the node sent it (`--json` prints it unchanged).
pub async fn request<M: Method>(socket: &Path, request: &M) -> Result<Value, ClientError> {
    let params = serde_json::to_value(request).expect("a request serializes");
    call(socket, M::NAME, params, request.timeout()).await
}

/// Call `method` on the node listening on `socket` with untyped `params` (commands use
/// [`request`]).
pub async fn call(
    socket: &Path,
    method: &str,
    params: Value,
    timeout: Duration,
) -> Result<Value, ClientError> {
    let no_answer = |reason: String| ClientError::NoAnswer {
        socket: socket.to_owned(),
        reason,
    };
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| ClientError::Unreachable {
            socket: socket.to_owned(),
            source,
        })?;
    let mut stream = BufReader::new(stream);
    let request = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
    let mut line = serde_json::to_vec(&request).expect("a JSON value serializes");
    line.push(b'\n');
    // The node's answer lines are bounded (an answer, plus request ids echoed in errors);
    // a longer one is not a node's and is not read into memory.
    let limits = Limits::default();
    let max_answer = (limits.max_answer + limits.max_line + 1) as u64;
    let exchange = async {
        stream.get_mut().write_all(&line).await?;
        let mut answer = String::new();
        (&mut stream)
            .take(max_answer)
            .read_line(&mut answer)
            .await?;
        if !answer.is_empty() && !answer.ends_with('\n') && answer.len() as u64 >= max_answer {
            return Err(std::io::Error::other(format!(
                "answer longer than {max_answer} bytes"
            )));
        }
        Ok::<_, std::io::Error>(answer)
    };
    let answer = match tokio::time::timeout(timeout, exchange).await {
        Err(_) => {
            return Err(no_answer(format!(
                "no response within {}",
                humantime::format_duration(timeout)
            )));
        }
        Ok(Err(e)) => return Err(no_answer(e.to_string())),
        Ok(Ok(a)) if a.is_empty() => return Err(no_answer("connection closed".into())),
        Ok(Ok(a)) => a,
    };
    let mut response: Value = serde_json::from_str(&answer)
        .map_err(|e| no_answer(format!("unreadable response: {e}")))?;
    if let Some(error) = response.get_mut("error") {
        let error: RpcError = serde_json::from_value(error.take())
            .map_err(|e| no_answer(format!("unreadable error: {e}")))?;
        return Err(ClientError::Rpc(error));
    }
    Ok(response
        .get_mut("result")
        .map(Value::take)
        .unwrap_or(Value::Null))
}
