//! Serving the admin RPC on a Unix socket.
//!
//! Each connection is its own task, so one bad client (garbage, a 2 MiB line, a slow-loris
//! dribbling bytes, a client that never reads) costs only its own connection: a malformed line
//! gets a JSON-RPC error and the connection stays usable; an oversized line gets an error and
//! the connection is closed (the rest of the line cannot be framed); a connection that sends
//! no request within `line_timeout` of connecting or of its last answer is closed (empty lines
//! are not requests, so they do not keep it open).
//!
//! Connections: at most `max_connections` are served at once. When all are taken, a new one
//! evicts the connection that has been idle longest (connected, no call in flight); only when
//! every connection has a call running is the newcomer told "too many admin connections" and
//! closed. So idle clients can never lock the operator out, and nobody's running call is cut
//! off. Eviction was chosen over per-user limits (`peer_cred`) because the socket is 0660:
//! every client is root or in group `chom`, often all the same user, so a per-user limit
//! would not keep a slot for the operator; the longest-idle connection is by definition the
//! one nobody is waiting on.
//!
//! Sizes: a batch holds at most `max_batch` calls (more: one -32600 error, nothing run). One
//! answer line is at most `max_answer` bytes: each call's answer is measured as it completes
//! (without serializing it twice), a single answer over the limit becomes an error asking for
//! less, and once a batch's answers have used up the line, its remaining calls are not run
//! and get an error asking to split the batch. Memory across connections: requests and
//! answers over [`SMALL`] bytes share `shared_budget` bytes in flight (a parsed request is
//! charged [`PARSED_FACTOR`] times its text); one that cannot get its share within
//! `write_timeout` is answered "node busy". With the defaults, 64 connections can hold at
//! most 64 x (1 MiB read buffer + 64 KiB x 17 small) + 64 MiB shared, about 200 MiB, inside
//! the unit's `MemoryMax=512M`, where 64 answers of 8 MiB alone would take all of it. Small
//! requests and answers never wait for the budget, so `chom status` gets through a busy node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use serde_json::Value;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, FramedRead};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::protocol::{self, INTERNAL_ERROR, INVALID_REQUEST, PARSE_ERROR, RpcError};
use crate::edge::accepted;

/// Answers one method call.
pub trait Dispatch: Send + Sync + 'static {
    /// Run `method` with `params`.
    fn call(&self, method: String, params: Value) -> BoxFuture<'static, Result<Value, RpcError>>;
}

/// Requests and answers up to this many bytes never wait for the shared budget.
pub const SMALL: usize = 64 * 1024;

/// A parsed request takes up to this many times the bytes of its JSON text (`[0,0,...]`: two
/// bytes of text per 32-byte `Value`).
pub const PARSED_FACTOR: usize = 16;

/// Limits of the admin socket.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest accepted request line, in bytes (SPEC: 1 MiB).
    pub max_line: usize,
    /// A connection must send a request (a non-empty line) within this long of connecting or
    /// of its last answer.
    pub line_timeout: Duration,
    /// Writing one response must finish within this long (client not reading); also the
    /// longest wait for a share of `shared_budget`.
    pub write_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Calls in one batch.
    pub max_batch: usize,
    /// Bytes of one answer line.
    pub max_answer: usize,
    /// Bytes of large requests and answers in flight over all connections.
    pub shared_budget: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line: 1024 * 1024,
            line_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            max_connections: 64,
            max_batch: 100,
            max_answer: 8 * 1024 * 1024,
            shared_budget: 64 * 1024 * 1024,
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
    let slots = Arc::new(Slots::new(limits.max_connections));
    let budget = Budget::new(limits.shared_budget, limits.write_timeout);
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accept = listener.accept() => match accepted(accept, "admin socket").await {
                Some(stream) => stream,
                None => continue,
            },
        };
        let Some(slot) = slots.admit() else {
            refuse(stream);
            continue;
        };
        let dispatch = dispatch.clone();
        let budget = budget.clone();
        // Connections are not cancelled with the accept loop: a request in flight (e.g. a
        // `restart` of the admin actor itself) still gets its answer. Each connection ends on
        // its own through EOF, the line timeout or eviction.
        tokio::spawn(connection(stream, dispatch, limits, slot, budget));
    }
}

/// Tell a connection over the limit why, without waiting (its socket buffer is empty, so one
/// non-blocking write takes the line), and close it: a flood of refused connections holds no
/// file descriptors.
fn refuse(stream: UnixStream) {
    let busy = protocol::failure(
        Value::Null,
        RpcError::new(
            INTERNAL_ERROR,
            "too many admin connections, all with a call in flight; retry",
        ),
    );
    let mut line = serde_json::to_vec(&busy).expect("a JSON value serializes");
    line.push(b'\n');
    let _ = stream.try_write(&line);
}

async fn connection(
    stream: UnixStream,
    dispatch: Arc<dyn Dispatch>,
    limits: Limits,
    slot: Slot,
    budget: Budget,
) {
    let (read, mut write) = stream.into_split();
    let codec = AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), limits.max_line);
    let mut lines = FramedRead::new(read, codec);
    let mut deadline = Instant::now() + limits.line_timeout;
    loop {
        let next = tokio::select! {
            _ = slot.evicted.cancelled() => {
                debug!("admin socket: closing the longest-idle connection to serve a new one");
                return;
            }
            next = tokio::time::timeout_at(deadline, lines.next()) => next,
        };
        let line = match next {
            Err(_) => {
                debug!("admin socket: closing a connection that sent no request in time");
                return;
            }
            Ok(None) => return,
            Ok(Some(Err(AnyDelimiterCodecError::MaxChunkLengthExceeded))) => {
                let err = RpcError::new(
                    INVALID_REQUEST,
                    format!("request line longer than {} bytes", limits.max_line),
                );
                let answer = encode(&protocol::failure(Value::Null, err));
                let _ = write_line(&mut write, &answer, limits.write_timeout).await;
                return;
            }
            Ok(Some(Err(AnyDelimiterCodecError::Io(_)))) => return,
            Ok(Some(Ok(line))) => line,
        };
        // Not a request: the deadline stays where it was.
        if line.trim_ascii().is_empty() {
            continue;
        }
        if !slot.busy() {
            return;
        }
        let answer = handle_line(&line, dispatch.as_ref(), &limits, &budget).await;
        drop(line);
        if let Some(answer) = answer
            && write_line(&mut write, &answer.bytes, limits.write_timeout)
                .await
                .is_err()
        {
            return;
        }
        slot.idle();
        deadline = Instant::now() + limits.line_timeout;
    }
}

// === impl Slots ===

/// The connections being served, and when each went idle (`None`: a call in flight).
struct Slots {
    max: usize,
    table: Mutex<SlotTable>,
}

#[derive(Default)]
struct SlotTable {
    next_id: u64,
    live: HashMap<u64, SlotState>,
}

struct SlotState {
    idle_since: Option<Instant>,
    evict: CancellationToken,
}

/// A connection's place among the served ones, given up when dropped.
struct Slot {
    id: u64,
    slots: Arc<Slots>,
    /// Cancelled when a newcomer took this (idle) connection's place.
    evicted: CancellationToken,
}

impl Slots {
    fn new(max: usize) -> Self {
        Slots {
            max,
            table: Mutex::new(SlotTable::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotTable> {
        // The table is consistent after every statement: a panic elsewhere cannot corrupt it.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a new connection, evicting the longest-idle one when all are taken; `None`
    /// when every connection has a call in flight.
    fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut table = self.lock();
        if table.live.len() >= self.max {
            let victim = longest_idle(&table.live)?;
            if let Some(state) = table.live.remove(&victim) {
                state.evict.cancel();
            }
        }
        let id = table.next_id;
        table.next_id += 1;
        let evicted = CancellationToken::new();
        table.live.insert(
            id,
            SlotState {
                idle_since: Some(Instant::now()),
                evict: evicted.clone(),
            },
        );
        Some(Slot {
            id,
            slots: self.clone(),
            evicted,
        })
    }
}

/// The connection idle longest, if any is idle.
fn longest_idle(live: &HashMap<u64, SlotState>) -> Option<u64> {
    live.iter()
        .filter_map(|(id, state)| state.idle_since.map(|since| (since, *id)))
        .min()
        .map(|(_, id)| id)
}

impl Slot {
    /// Mark a call in flight; false when this connection was evicted meanwhile.
    fn busy(&self) -> bool {
        let mut table = self.slots.lock();
        match table.live.get_mut(&self.id) {
            Some(state) => {
                state.idle_since = None;
                true
            }
            None => false,
        }
    }

    /// Mark the connection idle (its answer was written).
    fn idle(&self) {
        if let Some(state) = self.slots.lock().live.get_mut(&self.id) {
            state.idle_since = Some(Instant::now());
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.lock().live.remove(&self.id);
    }
}

// === impl Budget ===

/// Bytes of large requests and answers in flight, shared by every connection.
#[derive(Clone)]
pub struct Budget {
    bytes: Arc<Semaphore>,
    total: usize,
    wait: Duration,
}

/// A share of the [`Budget`], returned when dropped.
pub struct Reserved(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl Budget {
    /// A budget of `total` bytes; a reservation waits at most `wait` for its share.
    pub fn new(total: usize, wait: Duration) -> Self {
        Budget {
            bytes: Arc::new(Semaphore::new(total)),
            total,
            wait,
        }
    }

    /// Reserve `bytes` (nothing to reserve up to [`SMALL`]).
    pub async fn reserve(&self, bytes: usize) -> Result<Reserved, RpcError> {
        if bytes <= SMALL {
            return Ok(Reserved(None));
        }
        let share = u32::try_from(bytes.min(self.total)).unwrap_or(u32::MAX);
        match tokio::time::timeout(self.wait, self.bytes.clone().acquire_many_owned(share)).await {
            Ok(Ok(permit)) => Ok(Reserved(Some(permit))),
            // The semaphore is never closed; a timeout is the only way here.
            _ => Err(RpcError::failed(format!(
                "node busy: {} bytes of large admin requests and answers already in flight; retry",
                self.total
            ))),
        }
    }
}

// === answering a line ===

/// One encoded answer line (newline not included), with its share of the budget.
pub struct Answer {
    /// The JSON text.
    pub bytes: Vec<u8>,
    _reserved: Vec<Reserved>,
}

/// Answer one line: a request, a notification, or a batch. `None` when nothing is to be sent.
pub async fn handle_line(
    line: &[u8],
    dispatch: &dyn Dispatch,
    limits: &Limits,
    budget: &Budget,
) -> Option<Answer> {
    let trimmed = line.trim_ascii();
    if trimmed.is_empty() {
        return None;
    }
    let mut out = AnswerLine::new(limits.max_answer);
    let _request = match budget.reserve(trimmed.len() * PARSED_FACTOR).await {
        Ok(reserved) => reserved,
        Err(error) => return Some(out.single(protocol::failure(Value::Null, error))),
    };
    let value: Value = match serde_json::from_slice(trimmed) {
        Ok(v) => v,
        Err(error) => {
            let error = RpcError::new(PARSE_ERROR, format!("parse error: {error}"));
            return Some(out.single(protocol::failure(Value::Null, error)));
        }
    };
    match value {
        Value::Array(items) if items.is_empty() => Some(out.single(protocol::failure(
            Value::Null,
            RpcError::new(INVALID_REQUEST, "empty batch"),
        ))),
        Value::Array(items) if items.len() > limits.max_batch => {
            let error = RpcError::new(
                INVALID_REQUEST,
                format!(
                    "batch of {} calls; at most {} calls per batch",
                    items.len(),
                    limits.max_batch
                ),
            );
            Some(out.single(protocol::failure(Value::Null, error)))
        }
        Value::Array(items) => {
            out.open_batch();
            let mut spent = false;
            for item in items {
                if spent {
                    // Not run: its answer could not be sent anyway.
                    if let Some(response) = refuse_one(item, out.max) {
                        out.push_small(&response);
                    }
                    continue;
                }
                let Some(response) = handle_one(item, dispatch).await else {
                    continue;
                };
                spent = !out.push(response, budget).await;
            }
            out.close_batch()
        }
        other => match handle_one(other, dispatch).await {
            Some(response) => {
                out.push(response, budget).await;
                Some(out.finish())
            }
            None => None,
        },
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

/// The answer to a batch call that is not run because the batch's answer is full.
fn refuse_one(value: Value, max: usize) -> Option<Value> {
    match protocol::parse_request(value) {
        Ok(request) => request.id.map(|id| protocol::failure(id, batch_full(max))),
        Err((id, error)) => Some(protocol::failure(id, error)),
    }
}

fn batch_full(max: usize) -> RpcError {
    RpcError::failed(format!("batch answer over {max} bytes; split the batch"))
}

fn answer_too_big(max: usize) -> RpcError {
    RpcError::failed(format!(
        "answer over {max} bytes; ask for less (e.g. a smaller `limit`)"
    ))
}

/// An answer line under construction, within `max` bytes.
struct AnswerLine {
    bytes: Vec<u8>,
    reserved: Vec<Reserved>,
    max: usize,
    items: usize,
}

impl AnswerLine {
    fn new(max: usize) -> Self {
        AnswerLine {
            bytes: Vec::new(),
            reserved: Vec::new(),
            max,
            items: 0,
        }
    }

    fn single(mut self, response: Value) -> Answer {
        self.push_small(&response);
        self.finish()
    }

    fn open_batch(&mut self) {
        self.bytes.push(b'[');
    }

    fn close_batch(mut self) -> Option<Answer> {
        self.bytes.push(b']');
        (self.items > 0).then(|| self.finish())
    }

    fn finish(self) -> Answer {
        Answer {
            bytes: self.bytes,
            _reserved: self.reserved,
        }
    }

    fn separate(&mut self) {
        if self.items > 0 {
            self.bytes.push(b',');
        }
        self.items += 1;
    }

    /// Append a response known to be small (an error naming a request's id, which the
    /// request line itself bounds).
    fn push_small(&mut self, response: &Value) {
        self.separate();
        serde_json::to_writer(&mut self.bytes, response).expect("a JSON value serializes");
    }

    /// Append `response` if it fits what is left of the line. One that does not is replaced
    /// by an error: "ask for less" when it alone is over the limit (the rest of a batch goes
    /// on), else "split the batch", and then false: the line is full.
    async fn push(&mut self, response: Value, budget: &Budget) -> bool {
        let left = self.max.saturating_sub(self.bytes.len());
        if let Some(len) = encoded_len(&response, left) {
            match budget.reserve(len).await {
                Ok(reserved) => {
                    self.reserved.push(reserved);
                    self.push_small(&response);
                }
                Err(busy) => self.push_small(&protocol::failure(id_of(&response), busy)),
            }
            return true;
        }
        let alone_too_big = encoded_len(&response, self.max).is_none();
        let error = if alone_too_big {
            answer_too_big(self.max)
        } else {
            batch_full(self.max)
        };
        self.push_small(&protocol::failure(id_of(&response), error));
        alone_too_big
    }
}

fn id_of(response: &Value) -> Value {
    response.get("id").cloned().unwrap_or(Value::Null)
}

/// Bytes of `value` as JSON, or `None` as soon as it passes `max` (nothing is allocated).
fn encoded_len(value: &Value, max: usize) -> Option<usize> {
    struct Counter {
        n: usize,
        max: usize,
    }
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.n += buf.len();
            if self.n > self.max {
                return Err(std::io::Error::other("over the limit"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter { n: 0, max };
    serde_json::to_writer(&mut counter, value)
        .ok()
        .map(|()| counter.n)
}

fn encode(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("a JSON value serializes")
}

async fn write_line<W: AsyncWrite + Unpin>(
    w: &mut W,
    bytes: &[u8],
    limit: Duration,
) -> std::io::Result<()> {
    let write = async {
        w.write_all(bytes).await?;
        w.write_all(b"\n").await
    };
    match tokio::time::timeout(limit, write).await {
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
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncBufReadExt, BufReader};

    /// `echo` returns its params, `big` a string of `params.bytes` bytes, `hold` waits for a
    /// permit of `gate`; every call is counted.
    #[derive(Clone)]
    struct TestRpc {
        calls: Arc<AtomicUsize>,
        gate: Arc<Semaphore>,
    }

    impl Default for TestRpc {
        fn default() -> Self {
            TestRpc {
                calls: Arc::default(),
                gate: Arc::new(Semaphore::new(0)),
            }
        }
    }

    impl Dispatch for TestRpc {
        fn call(
            &self,
            method: String,
            params: Value,
        ) -> BoxFuture<'static, Result<Value, RpcError>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let gate = self.gate.clone();
            Box::pin(async move {
                match method.as_str() {
                    "echo" => Ok(params),
                    "big" => {
                        let n = params["bytes"].as_u64().unwrap_or(0) as usize;
                        Ok(Value::String("x".repeat(n)))
                    }
                    "hold" => {
                        gate.acquire().await.unwrap().forget();
                        Ok(json!("released"))
                    }
                    _ => Err(RpcError::new(
                        METHOD_NOT_FOUND,
                        format!("no method {method}"),
                    )),
                }
            })
        }
    }

    impl TestRpc {
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    /// Removes a test's socket directory when dropped.
    struct TempDir(std::path::PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    struct Server {
        path: std::path::PathBuf,
        token: CancellationToken,
        rpc: TestRpc,
        _dir: TempDir,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.token.cancel();
        }
    }

    impl Server {
        async fn connect(&self) -> BufReader<UnixStream> {
            BufReader::new(UnixStream::connect(&self.path).await.unwrap())
        }
    }

    fn start(limits: Limits) -> Server {
        let dir = std::env::temp_dir().join(format!(
            "chom-rpc-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let token = CancellationToken::new();
        let rpc = TestRpc::default();
        tokio::spawn(serve(
            listener,
            Arc::new(rpc.clone()),
            limits,
            token.clone(),
        ));
        Server {
            path,
            token,
            rpc,
            _dir: TempDir(dir),
        }
    }

    /// The default limits with one changed by `set`.
    fn limits_with(set: impl FnOnce(&mut Limits)) -> Limits {
        let mut limits = Limits::default();
        set(&mut limits);
        limits
    }

    /// The answer to an `echo` call with no params and id `id`.
    async fn echo(stream: &mut BufReader<UnixStream>, id: u64) -> Value {
        roundtrip(stream, &line_of(&call("echo", id, json!({})))).await
    }

    async fn roundtrip(stream: &mut BufReader<UnixStream>, line: &[u8]) -> Value {
        stream.get_mut().write_all(line).await.unwrap();
        read_answer(stream).await
    }

    async fn read_answer(stream: &mut BufReader<UnixStream>) -> Value {
        let mut out = String::new();
        stream.read_line(&mut out).await.unwrap();
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{out:?}: {e}"))
    }

    /// True once the server closed `stream` (EOF) within `limit`.
    async fn closed_within(stream: &mut BufReader<UnixStream>, limit: Duration) -> bool {
        let mut rest = String::new();
        matches!(
            tokio::time::timeout(limit, stream.read_line(&mut rest)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    fn call(method: &str, id: u64, params: Value) -> Value {
        json!({"jsonrpc": "2.0", "method": method, "id": id, "params": params})
    }

    fn line_of(value: &Value) -> Vec<u8> {
        let mut line = serde_json::to_vec(value).unwrap();
        line.push(b'\n');
        line
    }

    async fn answer(line: &Value, rpc: &TestRpc, limits: &Limits) -> Value {
        let budget = Budget::new(limits.shared_budget, limits.write_timeout);
        let text = serde_json::to_vec(line).unwrap();
        let answer = handle_line(&text, rpc, limits, &budget).await.unwrap();
        assert!(answer.bytes.len() <= limits.max_answer + 1024);
        serde_json::from_slice(&answer.bytes).unwrap()
    }

    #[tokio::test]
    async fn malformed_lines_get_errors_and_the_connection_keeps_serving() {
        let server = start(Limits::default());
        let mut c = server.connect().await;
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
    }

    #[tokio::test]
    async fn oversized_line_closes_only_that_connection() {
        let server = start(limits_with(|l| l.max_line = 1024));
        let mut good = server.connect().await;
        let mut big = server.connect().await;
        let mut line = vec![b'x'; 4096];
        line.push(b'\n');
        let answer = roundtrip(&mut big, &line).await;
        assert_eq!(answer["error"]["code"], INVALID_REQUEST);
        assert!(closed_within(&mut big, Duration::from_secs(5)).await);
        let ok = echo(&mut good, 1).await;
        assert_eq!(ok["result"], json!({}));
    }

    #[tokio::test]
    async fn slow_client_is_dropped_and_others_are_served() {
        let server = start(limits_with(|l| l.line_timeout = Duration::from_millis(200)));
        let mut slow = server.connect().await;
        slow.get_mut().write_all(b"{\"jsonrpc\":").await.unwrap();
        let mut good = server.connect().await;
        let ok = echo(&mut good, 1).await;
        assert_eq!(ok["id"], 1);
        assert!(
            closed_within(&mut slow, Duration::from_secs(5)).await,
            "server closed the slow connection"
        );
    }

    #[tokio::test]
    async fn empty_lines_do_not_keep_a_connection_open() {
        let server = start(limits_with(|l| l.line_timeout = Duration::from_millis(300)));
        let mut c = server.connect().await;
        let ok = echo(&mut c, 1).await;
        assert_eq!(ok["id"], 1);
        // Keep sending empty lines, far more often than the timeout; the server must still
        // close the connection about line_timeout after the last answer.
        let started = std::time::Instant::now();
        let mut ticks = tokio::time::interval(Duration::from_millis(20));
        let mut rest = String::new();
        let closed = loop {
            tokio::select! {
                read = c.read_line(&mut rest) => break matches!(read, Ok(0) | Err(_)),
                _ = ticks.tick() => {
                    if c.get_mut().write_all(b"\n \r\n").await.is_err() {
                        break true;
                    }
                    if started.elapsed() > Duration::from_secs(5) {
                        break false;
                    }
                }
            }
        };
        assert!(closed, "connection kept open by empty lines ({rest:?})");
        assert!(started.elapsed() >= Duration::from_millis(250));
    }

    #[tokio::test]
    async fn idle_connections_are_evicted_for_new_ones() {
        let server = start(limits_with(|l| l.max_connections = 2));
        let mut oldest = server.connect().await;
        assert_eq!(echo(&mut oldest, 1).await["id"], 1);
        let mut second = server.connect().await;
        assert_eq!(echo(&mut second, 2).await["id"], 2);
        // Both slots are taken by idle connections: the operator still gets in, and the one
        // idle longest makes room.
        let mut operator = server.connect().await;
        let ok = echo(&mut operator, 3).await;
        assert_eq!(ok["id"], 3, "{ok}");
        assert!(closed_within(&mut oldest, Duration::from_secs(5)).await);
        let still = echo(&mut second, 4).await;
        assert_eq!(still["id"], 4);
    }

    #[tokio::test]
    async fn connections_with_a_call_in_flight_are_never_evicted() {
        let server = start(limits_with(|l| l.max_connections = 1));
        let mut busy = server.connect().await;
        busy.get_mut()
            .write_all(&line_of(&call("hold", 1, json!({}))))
            .await
            .unwrap();
        wait_until(|| server.rpc.calls() == 1).await;
        let mut second = server.connect().await;
        let refused = read_answer(&mut second).await;
        assert!(
            refused["error"]["message"]
                .as_str()
                .unwrap()
                .contains("too many admin connections"),
            "{refused}"
        );
        assert!(closed_within(&mut second, Duration::from_secs(5)).await);
        server.rpc.gate.add_permits(1);
        let done = read_answer(&mut busy).await;
        assert_eq!(done["result"], "released");
    }

    /// Poll a cheap in-process condition until true, for at most 5 s.
    async fn wait_until(f: impl Fn() -> bool) {
        chom_testkit::eventually(Duration::from_secs(5), "the condition", f).await;
    }

    #[tokio::test]
    async fn batches_over_the_cap_are_refused_whole() {
        let limits = limits_with(|l| l.max_batch = 3);
        let rpc = TestRpc::default();
        let four: Vec<Value> = (1..=4).map(|i| call("echo", i, json!({}))).collect();
        let refused = answer(&json!(four), &rpc, &limits).await;
        assert_eq!(refused["error"]["code"], INVALID_REQUEST, "{refused}");
        assert_eq!(
            refused["error"]["message"],
            "batch of 4 calls; at most 3 calls per batch"
        );
        assert_eq!(rpc.calls(), 0, "nothing of a refused batch runs");
        let three: Vec<Value> = (1..=3).map(|i| call("echo", i, json!({}))).collect();
        let served = answer(&json!(three), &rpc, &limits).await;
        assert_eq!(served.as_array().unwrap().len(), 3);
        assert_eq!(rpc.calls(), 3);
    }

    #[tokio::test]
    async fn an_answer_over_the_line_limit_becomes_an_error() {
        let limits = limits_with(|l| l.max_answer = 1000);
        let rpc = TestRpc::default();
        let big = answer(&call("big", 7, json!({"bytes": 5000})), &rpc, &limits).await;
        assert_eq!(big["id"], 7);
        assert_eq!(
            big["error"]["message"],
            "answer over 1000 bytes; ask for less (e.g. a smaller `limit`)"
        );
        let fits = answer(&call("big", 8, json!({"bytes": 900})), &rpc, &limits).await;
        assert_eq!(fits["result"].as_str().unwrap().len(), 900);
    }

    #[tokio::test]
    async fn a_batch_stops_running_once_its_answer_is_full() {
        let limits = limits_with(|l| l.max_answer = 1000);
        let rpc = TestRpc::default();
        // Each answer is about 440 bytes: two fit, the third does not.
        let calls: Vec<Value> = (1..=5)
            .map(|i| call("big", i, json!({"bytes": 400})))
            .collect();
        let out = answer(&json!(calls), &rpc, &limits).await;
        let out = out.as_array().unwrap();
        assert_eq!(out.len(), 5, "one answer per call");
        assert!(out[0]["result"].is_string() && out[1]["result"].is_string());
        for (i, item) in out.iter().enumerate().skip(2) {
            assert_eq!(item["id"], i + 1);
            assert_eq!(
                item["error"]["message"],
                "batch answer over 1000 bytes; split the batch"
            );
        }
        assert_eq!(rpc.calls(), 3, "calls after the full line are not run");
        // A single call too big for the line alone does not stop the batch.
        let rpc = TestRpc::default();
        let mixed = json!([
            call("big", 1, json!({"bytes": 5000})),
            call("echo", 2, json!({"a": 1}))
        ]);
        let out = answer(&mixed, &rpc, &limits).await;
        assert!(
            out[0]["error"]["message"]
                .as_str()
                .unwrap()
                .contains("ask for less")
        );
        assert_eq!(out[1]["result"], json!({"a": 1}));
    }

    #[tokio::test]
    async fn large_answers_share_a_budget_and_small_ones_never_wait() {
        let budget = Budget::new(4 * SMALL, Duration::from_millis(100));
        let held = budget.reserve(3 * SMALL).await.unwrap();
        let busy = budget.reserve(2 * SMALL).await.err().expect("over budget");
        assert!(busy.message.contains("node busy"), "{}", busy.message);
        budget.reserve(SMALL).await.expect("small ones never wait");
        drop(held);
        budget
            .reserve(2 * SMALL)
            .await
            .expect("the share came back");
    }
}
