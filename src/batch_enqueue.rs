//! `chom jobs enqueue --batch`: newline-delimited JSON objects on stdin, each holding
//! `jobs.enqueue`'s parameters, sent to the node in chunks of `jobs.enqueue_many` (one
//! transaction each); one id per line on stdout, in input order.
//!
//! Lines are read and checked as they come, so input of any length takes bounded memory
//! (one chunk, plus the ids for `--json`). A line that is not a valid request stops the run
//! before its chunk is sent: the ids printed so far are those of the chunks stored.

use std::path::Path;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

use crate::api::Method;
use crate::api::jobs::{Enqueue, EnqueueMany, EnqueuedMany};
use crate::rpc::client::{self, ClientError};

/// Jobs per call at most (the store's batch limit is higher; smaller chunks keep each
/// transaction short and the first ids coming).
const CHUNK_JOBS: usize = 1_000;

/// Request bytes per call at most, well under the admin socket's 1 MiB line limit.
const CHUNK_BYTES: usize = 768 * 1024;

/// The longest input line read: a job with the largest payload (1 MiB) and its other fields.
const MAX_INPUT_LINE: u64 = 1024 * 1024 + 4096;

/// Why a batch stopped.
#[derive(Debug)]
pub enum BatchError {
    /// A bad input line (exit 1): its number and what is wrong.
    Input(String),
    /// The node refused or did not answer a chunk.
    Node {
        /// The chunk's first and last input lines.
        lines: (u64, u64),
        /// The failure.
        error: ClientError,
    },
}

/// Send every job read from `input` to the node on `socket`; `emit` gets each chunk's ids
/// in order. Returns how many jobs were sent.
pub async fn run(
    socket: &Path,
    input: impl AsyncRead + Unpin,
    mut emit: impl FnMut(&[i64]),
) -> Result<u64, BatchError> {
    let mut reader = BufReader::new(input);
    let mut chunk: Vec<Enqueue> = Vec::new();
    let (mut bytes, mut line_no, mut first_line, mut sent) = (0usize, 0u64, 1u64, 0u64);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_INPUT_LINE + 1)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| BatchError::Input(format!("cannot read standard input: {e}")))?;
        if read == 0 {
            break;
        }
        line_no += 1;
        if line.len() as u64 > MAX_INPUT_LINE {
            return Err(BatchError::Input(format!(
                "line {line_no}: longer than {MAX_INPUT_LINE} bytes"
            )));
        }
        let text = String::from_utf8_lossy(&line);
        if text.trim().is_empty() {
            continue;
        }
        let job =
            parse(&text).map_err(|why| BatchError::Input(format!("line {line_no}: {why}")))?;
        let size = text.len();
        if !chunk.is_empty() && (chunk.len() >= CHUNK_JOBS || bytes + size > CHUNK_BYTES) {
            sent += send(
                socket,
                std::mem::take(&mut chunk),
                (first_line, line_no - 1),
                &mut emit,
            )
            .await?;
            bytes = 0;
        }
        if chunk.is_empty() {
            first_line = line_no;
        }
        bytes += size;
        chunk.push(job);
    }
    if !chunk.is_empty() {
        sent += send(socket, chunk, (first_line, line_no), &mut emit).await?;
    }
    Ok(sent)
}

/// One input line as a `jobs.enqueue` request, checked as the node will check it.
fn parse(text: &str) -> Result<Enqueue, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    if !value.is_object() {
        return Err("expected a JSON object with `jobs.enqueue`'s parameters".to_owned());
    }
    let job: Enqueue = serde_json::from_value(value).map_err(|e| e.to_string())?;
    job.validate().map_err(|e| e.message)?;
    Ok(job)
}

async fn send(
    socket: &Path,
    jobs: Vec<Enqueue>,
    lines: (u64, u64),
    emit: &mut impl FnMut(&[i64]),
) -> Result<u64, BatchError> {
    let request = EnqueueMany { jobs };
    let answer = client::request(socket, &request)
        .await
        .map_err(|error| BatchError::Node { lines, error })?;
    let reply: EnqueuedMany = serde_json::from_value(answer).map_err(|e| BatchError::Node {
        lines,
        error: ClientError::Rpc(crate::rpc::protocol::RpcError::new(
            -32603,
            format!("unreadable answer from the node: {e}"),
        )),
    })?;
    if reply.ids.len() != request.jobs.len() {
        return Err(BatchError::Node {
            lines,
            error: ClientError::Rpc(crate::rpc::protocol::RpcError::new(
                -32603,
                format!(
                    "the node answered {} ids for {} jobs",
                    reply.ids.len(),
                    request.jobs.len()
                ),
            )),
        });
    }
    emit(&reply.ids);
    Ok(reply.ids.len() as u64)
}
