//! `chom bench http`: a closed-loop HTTP load generator for `scripts/bench-api`. `concurrency`
//! clients, each on its own kept-alive connection, send `GET url` back to back until
//! `requests` have been sent; the answer is the throughput, the latency percentiles and the
//! count of each status code, as one JSON line. Needs nothing but the URL (and headers).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// What one run measured.
#[derive(Debug, Serialize)]
pub struct HttpBench {
    /// Requests sent.
    pub requests: usize,
    /// Clients at once.
    pub concurrency: usize,
    /// Wall time of the run, seconds.
    pub seconds: f64,
    /// Answers per second.
    pub rps: f64,
    /// Latency percentiles, milliseconds.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Answers by status code (`"error"` for transport failures).
    pub statuses: BTreeMap<String, usize>,
}

/// Send `requests` GETs of `url` with `headers` from `concurrency` clients.
pub async fn run(
    url: &str,
    headers: &[(String, String)],
    concurrency: usize,
    requests: usize,
) -> Result<HttpBench, String> {
    let mut map = reqwest::header::HeaderMap::new();
    for (name, value) in headers {
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| format!("header name `{name}`: {e}"))?;
        let value = reqwest::header::HeaderValue::from_str(value)
            .map_err(|e| format!("header value: {e}"))?;
        map.insert(name, value);
    }
    let left = Arc::new(AtomicUsize::new(requests));
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        // One client per task: each keeps its own connection, as separate callers would.
        let client = reqwest::Client::builder()
            .default_headers(map.clone())
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        let (url, left) = (url.to_owned(), left.clone());
        clients.spawn(async move { client_loop(&client, &url, &left).await });
    }
    let mut latencies = Vec::with_capacity(requests);
    let mut statuses = BTreeMap::new();
    while let Some(done) = clients.join_next().await {
        let (mine, codes) = done.map_err(|e| e.to_string())?;
        latencies.extend(mine);
        for (code, n) in codes {
            *statuses.entry(code).or_insert(0) += n;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1000.0
    };
    Ok(HttpBench {
        requests,
        concurrency,
        seconds,
        rps: requests as f64 / seconds.max(f64::EPSILON),
        p50_ms: pct(0.50),
        p95_ms: pct(0.95),
        p99_ms: pct(0.99),
        statuses,
    })
}

/// One client: take a request from `left`, send it, time it, until none are left.
async fn client_loop(
    client: &reqwest::Client,
    url: &str,
    left: &AtomicUsize,
) -> (Vec<Duration>, BTreeMap<String, usize>) {
    let mut latencies = Vec::new();
    let mut statuses = BTreeMap::new();
    while left
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok()
    {
        let sent = Instant::now();
        let code = match client.get(url).send().await {
            // The body is read: an answer is only done when it has all arrived.
            Ok(answer) => {
                let code = answer.status().as_u16().to_string();
                let _ = answer.bytes().await;
                code
            }
            Err(_) => "error".to_owned(),
        };
        latencies.push(sent.elapsed());
        *statuses.entry(code).or_insert(0) += 1;
    }
    (latencies, statuses)
}
