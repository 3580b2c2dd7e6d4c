//! `chom jobs enqueue --batch`: newline-delimited JSON objects on stdin, each holding
//! `jobs.enqueue`'s parameters, sent to the node in chunks of `jobs.enqueue_many` (one
//! transaction each); one id per line on stdout, in input order.
//!
//! Lines are read and checked as they come, so input of any length takes bounded memory
//! (two chunks, plus the ids for `--json`). A line that is not a valid request stops the run
//! before its chunk is sent; the chunks already sent are waited for, so the ids printed are
//! exactly those of the jobs stored.

use std::collections::VecDeque;
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

/// Chunks sent and not yet answered at most: the next chunk is read and checked while the
/// node stores the previous one (the CLI and the node then share the machine's cores).
const IN_FLIGHT: usize = 2;

type Pending = tokio::task::JoinHandle<Result<Vec<i64>, BatchError>>;

/// Send every job read from `input` to the node on `socket`; `emit` gets each chunk's ids
/// in input order. Returns how many jobs were stored. After a failure the chunks already in
/// flight are still awaited, so every stored job's id is emitted before the error returns.
pub async fn run(
    socket: &Path,
    input: impl AsyncRead + Unpin,
    mut emit: impl FnMut(&[i64]),
) -> Result<u64, BatchError> {
    let mut chunks = Chunks::new(input);
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut stored = 0u64;
    let mut failure = None;
    loop {
        let next = match chunks.next().await {
            Ok(next) => next,
            Err(e) => {
                failure = Some(e);
                None
            }
        };
        let Some((jobs, lines)) = next else { break };
        let socket = socket.to_owned();
        pending.push_back(tokio::spawn(
            async move { send(&socket, jobs, lines).await },
        ));
        if pending.len() >= IN_FLIGHT
            && let Some(first) = pending.pop_front()
        {
            match joined(first).await {
                Ok(ids) => {
                    stored += ids.len() as u64;
                    emit(&ids);
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
    }
    // What is in flight is stored or not whatever happens here: wait and report it.
    for chunk in pending {
        match joined(chunk).await {
            Ok(ids) => {
                stored += ids.len() as u64;
                emit(&ids);
            }
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(stored),
    }
}

async fn joined(chunk: Pending) -> Result<Vec<i64>, BatchError> {
    chunk
        .await
        .map_err(|e| BatchError::Input(format!("a chunk's task failed: {e}")))?
}

/// The input, cut into chunks of checked requests.
struct Chunks<R> {
    reader: BufReader<R>,
    line_no: u64,
    /// A line read but not yet placed (it did not fit the previous chunk).
    carry: Option<(Enqueue, usize, u64)>,
    done: bool,
}

impl<R: AsyncRead + Unpin> Chunks<R> {
    fn new(input: R) -> Self {
        Chunks {
            reader: BufReader::new(input),
            line_no: 0,
            carry: None,
            done: false,
        }
    }

    /// The next chunk and its first and last line numbers; `None` at the end of the input.
    async fn next(&mut self) -> Result<Option<(Vec<Enqueue>, (u64, u64))>, BatchError> {
        let mut chunk = Vec::new();
        let (mut bytes, mut first, mut last) = (0usize, 0u64, 0u64);
        if let Some((job, size, line)) = self.carry.take() {
            chunk.push(job);
            (bytes, first, last) = (size, line, line);
        }
        while !self.done {
            let Some((job, size, line)) = self.line().await? else {
                self.done = true;
                break;
            };
            if !chunk.is_empty() && (chunk.len() >= CHUNK_JOBS || bytes + size > CHUNK_BYTES) {
                self.carry = Some((job, size, line));
                break;
            }
            if chunk.is_empty() {
                first = line;
            }
            bytes += size;
            last = line;
            chunk.push(job);
        }
        Ok((!chunk.is_empty()).then_some((chunk, (first, last))))
    }

    /// The next non-blank line as a request, its size and number; `None` at the end.
    async fn line(&mut self) -> Result<Option<(Enqueue, usize, u64)>, BatchError> {
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = (&mut self.reader)
                .take(MAX_INPUT_LINE + 1)
                .read_until(b'\n', &mut line)
                .await
                .map_err(|e| BatchError::Input(format!("cannot read standard input: {e}")))?;
            if read == 0 {
                return Ok(None);
            }
            self.line_no += 1;
            let n = self.line_no;
            if line.len() as u64 > MAX_INPUT_LINE {
                return Err(BatchError::Input(format!(
                    "line {n}: longer than {MAX_INPUT_LINE} bytes"
                )));
            }
            let text = String::from_utf8_lossy(&line);
            if text.trim().is_empty() {
                continue;
            }
            let job = parse(&text).map_err(|why| BatchError::Input(format!("line {n}: {why}")))?;
            return Ok(Some((job, text.len(), n)));
        }
    }
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
) -> Result<Vec<i64>, BatchError> {
    let count = jobs.len();
    let request = EnqueueMany { jobs };
    let answer = client::request(socket, &request)
        .await
        .map_err(|error| BatchError::Node { lines, error })?;
    let unexpected = |message: String| BatchError::Node {
        lines,
        error: ClientError::Rpc(crate::rpc::protocol::RpcError::new(-32603, message)),
    };
    let reply: EnqueuedMany = serde_json::from_value(answer)
        .map_err(|e| unexpected(format!("unreadable answer from the node: {e}")))?;
    if reply.ids.len() != count {
        return Err(unexpected(format!(
            "the node answered {} ids for {count} jobs",
            reply.ids.len()
        )));
    }
    Ok(reply.ids)
}
