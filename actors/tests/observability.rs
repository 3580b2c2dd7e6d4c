//! The observability client against Debian's real `prometheus` on a loopback port: live
//! answers, the cached answer (flagged, with its age) when Prometheus is killed or frozen,
//! within the probe's timeout rather than the query's, the `observability` breaker opening
//! after its threshold, and live answers again once Prometheus is back.

#![allow(
    clippy::too_many_lines,
    reason = "a test reads top to bottom as one scenario"
)]

use std::time::{Duration, Instant};

use chom_actors::backends::{Backends, PublishedBackends};
use chom_actors::cache::Cache;
use chom_actors::fleet::breakers::BreakerBoard;
use chom_actors::metrics::Metrics;
use chom_actors::observability::{ObservabilityClient, ObservabilityDeps, QueryError};
use chom_core::breaker::{BreakerSettings, BreakerState};
use chom_core::config::Config;
use chom_testkit::{LokiReceiver, Prometheus, eventually};
use serde_json::Value;

const PROMETHEUS: &str = "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n";

struct Rig {
    client: ObservabilityClient,
    metrics: Metrics,
    breakers: BreakerBoard,
    _dir: tempfile::TempDir,
}

/// A client of `prom` (probe timeout 500 ms, verdicts kept 300 ms, breaker opening after 3
/// failures for 2 s), caching in a memory cache.
async fn rig(prom: &Prometheus) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.database.url = format!("sqlite://{}", dir.path().join("chom.db").display());
    config.cache.url = "memory://".to_owned();
    let o = &mut config.observability;
    o.prometheus_url = prom.daemon().url();
    o.timeout = Duration::from_millis(500);
    o.cache_ttl = Duration::from_millis(300);
    o.query_timeout = Duration::from_secs(15);
    config.breaker.failure_threshold = 3;
    config.breaker.open_timeout = Duration::from_secs(2);
    let store = chom_store::open(&config.database).unwrap();
    store.migrate().await.unwrap();
    let backends = PublishedBackends::default();
    backends.publish(Some(Backends {
        store,
        cache: Cache::open(&config.cache).unwrap(),
    }));
    let metrics = Metrics::new("test");
    let breakers = BreakerBoard::default();
    let client = ObservabilityClient::new(ObservabilityDeps {
        config: config.observability.clone(),
        breaker: BreakerSettings::from(&config.breaker),
        metrics: metrics.clone(),
        breakers: breakers.clone(),
        backends,
    });
    Rig {
        client,
        metrics,
        breakers,
        _dir: dir,
    }
}

fn assert_live(answer: &Value) {
    assert_eq!(answer["_cached"], false, "{answer}");
    assert_eq!(answer["resultType"], "scalar", "{answer}");
    assert_eq!(answer["result"][1], "1", "{answer}");
    assert!(answer.get("_warning").is_none(), "{answer}");
}

fn assert_cached(answer: &Value) {
    assert_eq!(answer["_cached"], true, "{answer}");
    assert_eq!(answer["result"][1], "1", "{answer}");
    let at = answer["cached_at"].as_str().expect("cached_at");
    chrono::DateTime::parse_from_rfc3339(at).expect("cached_at is RFC 3339");
    let warning = answer["_warning"].as_str().expect("_warning");
    assert!(warning.contains("from the cache"), "{warning}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_prometheus_answers_from_the_cache_opens_the_breaker_and_recovers() {
    let prom = Prometheus::start(PROMETHEUS, &[]);
    let rig = rig(&prom).await;
    let answer = rig.client.query("1", None).await.unwrap();
    assert_live(&answer);

    prom.daemon().kill();
    let asked = Instant::now();
    let answer = rig.client.query("1", None).await.unwrap();
    assert_cached(&answer);
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    // A query never answered live has nothing to fall back on: a clear error.
    let err = rig.client.query("2", None).await.unwrap_err();
    assert!(matches!(err, QueryError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("no cached answer"), "{err}");

    // Each probe that fails counts; the third opens the breaker. Meanwhile: cached answers.
    let deadline = Instant::now() + Duration::from_secs(30);
    while rig.client.breaker_info().state != BreakerState::Open {
        assert!(Instant::now() < deadline, "breaker never opened");
        assert_cached(&rig.client.query("1", None).await.unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let states = rig.breakers.states();
    assert!(
        states.contains(&("observability".to_owned(), BreakerState::Open)),
        "{states:?}"
    );
    let answer = rig.client.query("1", None).await.unwrap();
    assert!(
        answer["_warning"]
            .as_str()
            .unwrap()
            .contains("breaker is open"),
        "{answer}"
    );

    // Back: once the open period ends a trial goes through and answers are live again.
    prom.daemon().restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = rig.client.query("1", None).await.unwrap();
        if answer["_cached"] == false {
            assert_live(&answer);
            break;
        }
        assert!(Instant::now() < deadline, "never live again: {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rig.client.breaker_info().state, BreakerState::Closed);

    let text = rig.metrics.render();
    for series in [
        "chom_observability_queries_total{outcome=\"live\"}",
        "chom_observability_queries_total{outcome=\"cached\"}",
        "chom_observability_queries_total{outcome=\"failed\"} 1",
        "chom_circuit_breaker_trips_total{service=\"observability\"} 1",
        "chom_observability_probe_seconds_count",
    ] {
        assert!(text.contains(series), "no {series}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_prometheus_costs_the_probe_timeout_not_the_query_timeout() {
    let prom = Prometheus::start(PROMETHEUS, &[]);
    let rig = rig(&prom).await;
    assert_live(&rig.client.query("1", None).await.unwrap());
    prom.daemon().freeze();
    // Straight away (the verdict still says reachable: the live query hangs, then its probe
    // fails) and after the verdict expired (the probe fails first): both within ~2 probe
    // timeouts of 500 ms, nowhere near the 15 s query timeout.
    for _ in 0..2 {
        let asked = Instant::now();
        assert_cached(&rig.client.query("1", None).await.unwrap());
        assert!(
            asked.elapsed() < Duration::from_secs(3),
            "{:?}",
            asked.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    prom.daemon().thaw();
    eventually(
        Duration::from_secs(30),
        "live answers after the thaw",
        || rig.client.breaker_info().state != BreakerState::Open,
    )
    .await;
}

#[tokio::test]
async fn bad_promql_is_prometheus_refusing_not_the_host_failing() {
    let prom = Prometheus::start(PROMETHEUS, &[]);
    let rig = rig(&prom).await;
    for _ in 0..5 {
        let err = rig.client.query("sum(", None).await.unwrap_err();
        assert!(matches!(err, QueryError::Refused(_)), "{err}");
        assert!(err.to_string().contains("parse error"), "{err}");
    }
    assert_eq!(rig.client.breaker_info().state, BreakerState::Closed);
    assert_eq!(rig.client.breaker_info().failures, 0);
    for (query, time) in [("", None), ("up\u{0}", None), ("up", Some("yesterday"))] {
        let err = rig.client.query(query, time).await.unwrap_err();
        assert!(matches!(err, QueryError::Invalid(_)), "{query:?}: {err}");
    }
    let long = "1+".repeat(3000) + "1";
    let err = rig.client.query(&long, None).await.unwrap_err();
    assert!(err.to_string().contains("longer than"), "{err}");
    let answer = rig
        .client
        .query("1", Some("2026-01-01T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(answer["result"][0], 1_767_225_600, "{answer}");
}

const ALERTMANAGER: &str =
    "route:\n  receiver: sink\n  group_wait: 1s\nreceivers:\n  - name: sink\n";

/// The `ChomDeadLetterSpike` alerts Alertmanager holds as active: (kind, description).
fn spikes(am: &chom_testkit::Alertmanager) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = am
        .active("ChomDeadLetterSpike")
        .iter()
        .map(|a| {
            let kind = a["labels"]["kind"].as_str().unwrap().to_owned();
            (
                kind,
                a["annotations"]["description"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn dead_letter_spikes_are_held_in_alertmanager_and_resolved() {
    let am = chom_testkit::Alertmanager::start(ALERTMANAGER, &[]);
    let prom = Prometheus::start(PROMETHEUS, &[]);
    let mut rig = rig(&prom).await;
    rig.client = ObservabilityClient::new(ObservabilityDeps {
        config: {
            let mut c = Config::default().observability;
            c.alertmanager_url = am.daemon().url();
            c
        },
        breaker: BreakerSettings::from(&Config::default().breaker),
        metrics: rig.metrics.clone(),
        breakers: rig.breakers.clone(),
        backends: PublishedBackends::default(),
    });
    let failures = |kind: &str, count: u64| chom_core::job::KindFailures {
        kind: kind.to_owned(),
        count,
        last_error: "exit status 3: domain already exists".to_owned(),
    };
    let hold = Duration::from_secs(3 * 3600);
    let sent = rig
        .client
        .push_dead_letters(&[failures("vps.exec", 6)], hold)
        .await
        .unwrap();
    assert_eq!(sent, 1);
    let held = spikes(&am);
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].0, "vps.exec");
    assert!(held[0].1.contains("6 failed for good"), "{held:?}");
    assert!(held[0].1.contains("domain already exists"), "{held:?}");
    // Re-sent while it holds; another kind joins.
    let both = [failures("vps.exec", 7), failures("site.provision", 5)];
    rig.client.push_dead_letters(&both, hold).await.unwrap();
    let kinds: Vec<String> = spikes(&am).into_iter().map(|(k, _)| k).collect();
    assert_eq!(kinds, ["site.provision", "vps.exec"]);
    // vps.exec no longer flagged: resolved at once, site.provision still held.
    let sent = rig
        .client
        .push_dead_letters(&[failures("site.provision", 5)], hold)
        .await
        .unwrap();
    assert_eq!(sent, 2, "one firing, one resolved");
    let kinds: Vec<String> = spikes(&am).into_iter().map(|(k, _)| k).collect();
    assert_eq!(kinds, ["site.provision"]);
    // Nothing flagged and nothing firing any more: nothing to send after the last resolution.
    assert_eq!(rig.client.push_dead_letters(&[], hold).await.unwrap(), 1);
    assert!(spikes(&am).is_empty());
    assert_eq!(rig.client.push_dead_letters(&[], hold).await.unwrap(), 0);
    // Alertmanager down: the push fails, and the next one sends the whole state again.
    am.daemon().kill();
    let err = rig
        .client
        .push_dead_letters(&[failures("noop", 9)], hold)
        .await
        .unwrap_err();
    assert!(!err.is_empty());
    am.daemon().restart();
    assert_eq!(
        rig.client
            .push_dead_letters(&[failures("noop", 9)], hold)
            .await
            .unwrap(),
        1
    );
    let kinds: Vec<String> = spikes(&am).into_iter().map(|(k, _)| k).collect();
    assert_eq!(kinds, ["noop"]);
}

fn loki_client(url: &str, metrics: &Metrics) -> ObservabilityClient {
    let mut config = Config::default();
    config.observability.loki_url = url.to_owned();
    config.observability.timeout = Duration::from_millis(500);
    config.breaker.failure_threshold = 2;
    ObservabilityClient::new(ObservabilityDeps {
        config: config.observability,
        breaker: BreakerSettings::from(&config.breaker),
        metrics: metrics.clone(),
        breakers: BreakerBoard::default(),
        backends: PublishedBackends::default(),
    })
}

#[tokio::test]
async fn log_events_reach_the_push_endpoint_with_few_labels() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let receiver = LokiReceiver::start();
    let metrics = Metrics::new("test");
    let client = loki_client(&receiver.url(), &metrics);
    let (layer, queue) = chom_actors::observability::loki::channel(1000);
    let stop = tokio_util::sync::CancellationToken::new();
    let shipper = spawn_shipper(queue, client, &metrics, &stop);
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(job = 42, vps = "web-1", "job completed");
        tracing::error!(check = "database", "health: check failed");
    });
    eventually(
        Duration::from_secs(10),
        "both lines at the receiver",
        || {
            receiver
                .streams()
                .iter()
                .map(|(_, l)| l.len())
                .sum::<usize>()
                == 2
        },
    )
    .await;
    let pushed = receiver.streams();
    let info = pushed
        .iter()
        .find(|(labels, _)| labels["level"] == "info")
        .expect("an info stream");
    assert_eq!(
        info.0,
        serde_json::json!({"job": "chom", "host": "app-1", "level": "info"}),
        "only job, host and level are labels"
    );
    let line: Value = serde_json::from_str(&info.1[0]).unwrap();
    assert_eq!(line["message"], "job completed");
    assert_eq!(line["job"], 42, "ids travel in the line: {line}");
    assert_eq!(line["vps"], "web-1");
    assert!(pushed.iter().any(|(l, _)| l["level"] == "error"));
    stop.cancel();
    shipper.await.unwrap();
    receiver.stop();
    assert!(
        metrics.render().contains("chom_log_events_dropped_total 0"),
        "{}",
        metrics.render()
    );
}

#[tokio::test]
async fn with_the_endpoint_down_logging_never_blocks_and_drops_are_counted() {
    use tracing_subscriber::layer::SubscriberExt as _;
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics = Metrics::new("test");
    let client = loki_client(&format!("http://127.0.0.1:{port}"), &metrics);
    let (layer, queue) = chom_actors::observability::loki::channel(50);
    let stop = tokio_util::sync::CancellationToken::new();
    let shipper = spawn_shipper(queue, client.clone(), &metrics, &stop);
    let subscriber = tracing_subscriber::registry().with(layer);
    let started = Instant::now();
    tracing::subscriber::with_default(subscriber, || {
        for i in 0..5000 {
            tracing::info!(i, "an event nobody will receive");
        }
    });
    // 5000 events against a dead endpoint take no longer than formatting them does.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    eventually(Duration::from_secs(20), "drops counted", || {
        let text = metrics.render();
        text.lines()
            .find_map(|l| l.strip_prefix("chom_log_events_dropped_total "))
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| v >= 4000.0)
    })
    .await;
    eventually(Duration::from_secs(20), "the breaker to open", || {
        client.breaker_info().state == BreakerState::Open
    })
    .await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), shipper)
        .await
        .expect("the shipper stops when told, even mid-retry")
        .unwrap();
}

/// Ship `queue` to the client's Loki as host `app-1` until `stop`.
fn spawn_shipper(
    mut queue: chom_actors::observability::loki::LokiQueue,
    client: ObservabilityClient,
    metrics: &Metrics,
    stop: &tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let (metrics, stop) = (metrics.clone(), stop.clone());
    tokio::spawn(async move {
        chom_actors::observability::loki::ship(
            &mut queue,
            client,
            "app-1".to_owned(),
            metrics,
            stop,
        )
        .await;
    })
}
