//! The admin RPC client behind every `chom` admin command.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::protocol::RpcError;

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

/// Call `method` on the node listening on `socket`.
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
    let exchange = async {
        stream.get_mut().write_all(&line).await?;
        let mut answer = String::new();
        stream.read_line(&mut answer).await?;
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
