//! The node's own log events to Loki's push API (when `observability.loki_url` is set).
//!
//! Two halves joined by a bounded channel: [`LokiLayer`] is a `tracing` layer that turns each
//! event into one JSON line and hands it over with `try_send`, so logging never waits on the
//! network; an event that finds the channel full is dropped and counted
//! (`chom_log_events_dropped_total`). [`ship`] batches what it receives (1 s or 1000 events
//! or 1 MiB, whichever first), gzips Loki's JSON push format and posts it through the
//! observability client, behind the observability breaker. A batch that fails is retried
//! with growing pauses while new events wait in the channel, so memory stays bounded by the
//! channel and one batch however long Loki is away.
//!
//! Labels are few (`job`, `host`, `level`): ids and fields go in the line, so Loki's index
//! does not grow with jobs or servers. tracing-loki was not used: its queue is unbounded and
//! it drops silently.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

use super::client::ObservabilityClient;
use crate::metrics::Metrics;

/// Events waiting for the shipper at most; more are dropped and counted.
pub const CHANNEL_CAPACITY: usize = 10_000;
/// Events in one push at most.
const BATCH_EVENTS: usize = 1000;
/// Bytes of lines in one push at most (before compression).
const BATCH_BYTES: usize = 1024 * 1024;
/// How long the first event of a batch waits for company.
const BATCH_WAIT: Duration = Duration::from_secs(1);
/// Longest line shipped (bytes); longer ones are cut.
const MAX_LINE_BYTES: usize = 16 * 1024;

/// One formatted event.
#[derive(Debug)]
pub struct LogLine {
    /// Nanoseconds since the Unix epoch.
    pub nanos: u128,
    /// The event's level (a label).
    pub level: Level,
    /// The JSON line.
    pub line: String,
}

/// The `tracing` layer half.
pub struct LokiLayer {
    tx: mpsc::Sender<LogLine>,
    dropped: Arc<AtomicU64>,
}

/// The shipper half: what the layer left, and how many it had to drop.
pub struct LokiQueue {
    rx: mpsc::Receiver<LogLine>,
    dropped: Arc<AtomicU64>,
}

/// A layer and its queue, joined by a channel of `capacity` events.
pub fn channel(capacity: usize) -> (LokiLayer, LokiQueue) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let dropped = Arc::new(AtomicU64::new(0));
    (
        LokiLayer {
            tx,
            dropped: dropped.clone(),
        },
        LokiQueue { rx, dropped },
    )
}

impl<S: Subscriber> Layer<S> for LokiLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        // The shipper's own complaints about Loki would queue behind the batch that failed.
        if meta.target().starts_with(module_path!()) {
            return;
        }
        let mut fields = Fields(Map::new());
        event.record(&mut fields);
        fields
            .0
            .insert("target".into(), Value::String(meta.target().to_owned()));
        let mut line = Value::Object(fields.0).to_string();
        if line.len() > MAX_LINE_BYTES {
            let cut = chom_core::limits::cut_at_char_boundary(&line, MAX_LINE_BYTES).len();
            line.truncate(cut);
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let event = LogLine {
            nanos,
            level: *meta.level(),
            line,
        };
        if self.tx.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// An event's fields as a JSON object (`message` for the message).
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().into(), Value::String(value.into()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::Bool(value));
    }
}

/// Ship the queue's events to Loki until `stop`; the events still waiting then are sent once
/// more (best effort) before it returns.
pub async fn ship(
    queue: &mut LokiQueue,
    client: ObservabilityClient,
    host: String,
    metrics: Metrics,
    stop: CancellationToken,
) {
    let mut pause = Duration::from_millis(500);
    loop {
        let batch = tokio::select! {
            batch = next_batch(&mut queue.rx) => batch,
            () = stop.cancelled() => drain(&mut queue.rx),
        };
        metrics.log_events_dropped(queue.dropped.swap(0, Ordering::Relaxed));
        if batch.is_empty() {
            if stop.is_cancelled() {
                return;
            }
            continue;
        }
        let body = push_body(&host, &batch);
        while let Err(why) = client.push_logs(body.clone()).await {
            if stop.is_cancelled() {
                metrics.log_events_dropped(batch.len() as u64);
                return;
            }
            tracing::debug!(error = %why, events = batch.len(), "loki: push failed; retrying");
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = stop.cancelled() => {}
            }
            pause = (pause * 2).min(Duration::from_secs(30));
            metrics.log_events_dropped(queue.dropped.swap(0, Ordering::Relaxed));
        }
        pause = Duration::from_millis(500);
    }
}

/// Wait for one event, then take more for up to [`BATCH_WAIT`] or until the batch is full.
async fn next_batch(rx: &mut mpsc::Receiver<LogLine>) -> Vec<LogLine> {
    let Some(first) = rx.recv().await else {
        // The layer is gone (the subscriber was replaced): nothing more will come.
        std::future::pending::<()>().await;
        return Vec::new();
    };
    let mut bytes = first.line.len();
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + BATCH_WAIT;
    while batch.len() < BATCH_EVENTS && bytes < BATCH_BYTES {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(event)) => {
                bytes += event.line.len();
                batch.push(event);
            }
            Ok(None) | Err(_) => break,
        }
    }
    batch
}

/// What is waiting now, up to one batch.
fn drain(rx: &mut mpsc::Receiver<LogLine>) -> Vec<LogLine> {
    let mut batch = Vec::new();
    while batch.len() < BATCH_EVENTS {
        match rx.try_recv() {
            Ok(event) => batch.push(event),
            Err(_) => break,
        }
    }
    batch
}

/// Loki's JSON push body, gzipped: one stream per level.
pub fn push_body(host: &str, batch: &[LogLine]) -> Vec<u8> {
    let mut streams: Vec<(Level, Vec<Value>)> = Vec::new();
    for event in batch {
        let entry = json!([event.nanos.to_string(), event.line]);
        match streams.iter_mut().find(|(level, _)| *level == event.level) {
            Some((_, values)) => values.push(entry),
            None => streams.push((event.level, vec![entry])),
        }
    }
    let streams: Vec<Value> = streams
        .into_iter()
        .map(|(level, values)| {
            json!({
                "stream": { "job": "chom", "host": host, "level": level.as_str().to_lowercase() },
                "values": values,
            })
        })
        .collect();
    let text = json!({ "streams": streams }).to_string();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(text.as_bytes())
        .expect("writing into a Vec cannot fail");
    gz.finish().expect("writing into a Vec cannot fail")
}
