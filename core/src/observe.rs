//! How the observability client answers a PromQL query: live from Prometheus when the
//! observability host is reachable and its breaker lets the call through, otherwise from the
//! last good answer (kept for `observability.result_ttl`), and an error only when there is
//! none. Pure: the actor that owns the HTTP client, the breaker and the cache asks
//! [`next_step`] what to do and reports what happened; every time is handed in.
//!
//! Why a reachability probe in front of the query: a frozen host would hold every query for
//! the full `query_timeout` (15 s) before the cache answered. The probe has its own short
//! timeout (`observability.timeout`, 2 s) and its verdict is kept for `cache_ttl` (30 s), so
//! an operator gets the cached answer within the probe's timeout, and at most one probe runs
//! per `cache_ttl` however many queries arrive.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// Longest PromQL text accepted (bytes): it is part of the cache key and travels in a URL.
pub const MAX_QUERY_BYTES: usize = 4096;

/// Check a PromQL text and evaluation time before anything is sent or keyed: not empty, at
/// most [`MAX_QUERY_BYTES`], no control characters but newline and tab; the time RFC 3339 or
/// Unix seconds. The message names what is wrong.
pub fn check_query(query: &str, time: Option<&str>) -> Result<(), String> {
    if query.trim().is_empty() {
        return Err("query is empty".into());
    }
    if query.len() > MAX_QUERY_BYTES {
        return Err(format!("query is longer than {MAX_QUERY_BYTES} bytes"));
    }
    if query
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err("query contains control characters".into());
    }
    if let Some(time) = time {
        let unix = time.parse::<f64>().is_ok_and(f64::is_finite);
        if !unix && DateTime::parse_from_rfc3339(time).is_err() {
            return Err("time must be RFC 3339 or Unix seconds".into());
        }
    }
    Ok(())
}

/// The last reachability probe, trusted for `ttl`.
#[derive(Debug, Clone)]
pub struct Reachability {
    ttl: Duration,
    last: Option<(Instant, bool)>,
}

impl Reachability {
    /// Nothing known yet; verdicts are kept for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Reachability { ttl, last: None }
    }

    /// The verdict of a probe made less than `ttl` before `now`, if any.
    pub fn known(&self, now: Instant) -> Option<bool> {
        let (at, reachable) = self.last?;
        (now.saturating_duration_since(at) < self.ttl).then_some(reachable)
    }

    /// Record a probe (or a live query, which proves as much) ending at `now`.
    pub fn record(&mut self, now: Instant, reachable: bool) {
        self.last = Some((now, reachable));
    }
}

/// Why an answer came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The observability breaker is open: no call is made.
    BreakerOpen,
    /// The probe found the host unreachable (within the last `cache_ttl`).
    Unreachable,
    /// The live query failed (timeout, connection, an answer that was not Prometheus').
    LiveFailed,
}

impl Fallback {
    /// The reason, as the `_warning` and error messages say it.
    pub fn reason(self) -> &'static str {
        match self {
            Fallback::BreakerOpen => "the observability breaker is open",
            Fallback::Unreachable => "the observability host is unreachable",
            Fallback::LiveFailed => "the live query failed",
        }
    }
}

/// What to do next for one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Probe reachability first (nothing fresh is known).
    Probe,
    /// Ask Prometheus.
    Live,
    /// Answer from the cache, for this reason.
    Cached(Fallback),
}

/// The next step, given whether the breaker lets a call through and the fresh reachability
/// verdict. An open breaker wins over everything: it is the one place that stops calls.
pub fn next_step(breaker_allows: bool, reachable: Option<bool>) -> Step {
    if !breaker_allows {
        return Step::Cached(Fallback::BreakerOpen);
    }
    match reachable {
        None => Step::Probe,
        Some(true) => Step::Live,
        Some(false) => Step::Cached(Fallback::Unreachable),
    }
}

/// How a query was answered (`chom_observability_queries_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// From Prometheus.
    Live,
    /// From the cache.
    Cached,
    /// Neither.
    Failed,
}

impl Outcome {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Live => "live",
            Outcome::Cached => "cached",
            Outcome::Failed => "failed",
        }
    }
}

/// Whether an answer cached at `cached_at` may still be served at `now` (the cache's own expiry
/// does the same; this also covers entries written by a node with a longer `result_ttl`, and a
/// `cached_at` in the future from a skewed clock, which is refused).
pub fn usable(cached_at: DateTime<Utc>, now: DateTime<Utc>, result_ttl: Duration) -> bool {
    match (now - cached_at).to_std() {
        Ok(age) => age < result_ttl,
        Err(_) => false,
    }
}

/// The `_warning` shown with a cached answer.
pub fn warning(fallback: Fallback, cached_at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let age = (now - cached_at).to_std().unwrap_or_default();
    let age = Duration::from_secs(age.as_secs());
    format!(
        "{}; this answer is from the cache, {} old",
        fallback.reason(),
        humantime::format_duration(age)
    )
}

/// The cache key of a query at an evaluation time (`None`: "now"). The query text is part of
/// the key verbatim (callers refuse texts over [`MAX_QUERY_BYTES`]), so two queries never share
/// an entry.
pub fn cache_key(query: &str, time: Option<&str>) -> String {
    format!("chom:obs:query:v1:{}:{query}", time.unwrap_or("now"))
}

/// One alert to send to Alertmanager about a job kind's dead letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpikeAlert {
    /// The job kind (the alert's `kind` label).
    pub kind: String,
    /// When the spike was first seen (kept across re-sends, so Alertmanager sees one alert).
    pub starts_at: DateTime<Utc>,
    /// Still flagged (`true`), or no longer (`false`: sent once more with `endsAt` now).
    pub firing: bool,
}

/// Which `ChomDeadLetterSpike` alerts the node has told Alertmanager are firing. Every
/// dead-letter analysis plans the whole set again: firing kinds are re-sent (Alertmanager
/// resolves an alert whose `endsAt` passes without a re-send), kinds no longer flagged are
/// sent resolved. Only a push that succeeded is committed, so a failed push is retried in
/// full by the next analysis and no resolution is lost.
#[derive(Debug, Clone, Default)]
pub struct SpikeTracker {
    firing: std::collections::BTreeMap<String, DateTime<Utc>>,
}

impl SpikeTracker {
    /// The alerts to send now, given the kinds flagged by this analysis.
    pub fn plan(&self, flagged: &[String], now: DateTime<Utc>) -> Vec<SpikeAlert> {
        let mut out: Vec<SpikeAlert> = flagged
            .iter()
            .map(|kind| SpikeAlert {
                kind: kind.clone(),
                starts_at: self.firing.get(kind).copied().unwrap_or(now),
                firing: true,
            })
            .collect();
        out.extend(
            self.firing
                .iter()
                .filter(|(kind, _)| !flagged.contains(kind))
                .map(|(kind, at)| SpikeAlert {
                    kind: kind.clone(),
                    starts_at: *at,
                    firing: false,
                }),
        );
        out
    }

    /// Alertmanager took `sent`.
    pub fn commit(&mut self, sent: &[SpikeAlert]) {
        for alert in sent {
            if alert.firing {
                self.firing.insert(alert.kind.clone(), alert.starts_at);
            } else {
                self.firing.remove(&alert.kind);
            }
        }
    }

    /// The kinds told firing.
    pub fn firing(&self) -> Vec<String> {
        self.firing.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_open_breaker_answers_from_the_cache_whatever_is_known() {
        for reachable in [None, Some(true), Some(false)] {
            assert_eq!(
                next_step(false, reachable),
                Step::Cached(Fallback::BreakerOpen)
            );
        }
        assert_eq!(next_step(true, None), Step::Probe);
        assert_eq!(next_step(true, Some(true)), Step::Live);
        assert_eq!(
            next_step(true, Some(false)),
            Step::Cached(Fallback::Unreachable)
        );
    }

    #[test]
    fn warnings_name_the_reason_and_the_age() {
        let at = DateTime::parse_from_rfc3339("2026-12-02T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let now = at + chrono::Duration::milliseconds(125_400);
        assert_eq!(
            warning(Fallback::Unreachable, at, now),
            "the observability host is unreachable; this answer is from the cache, 2m 5s old"
        );
    }

    #[test]
    fn keys_differ_by_query_and_time() {
        assert_ne!(cache_key("up", None), cache_key("up", Some("1700000000")));
        assert_ne!(cache_key("up", None), cache_key("up ", None));
        assert_eq!(cache_key("up", None), "chom:obs:query:v1:now:up");
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn spikes_fire_keep_their_start_and_resolve_once() {
        let mut t = SpikeTracker::default();
        let kinds = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let first = t.plan(&kinds(&["vps.exec"]), at(0));
        assert_eq!(
            first,
            vec![SpikeAlert {
                kind: "vps.exec".into(),
                starts_at: at(0),
                firing: true
            }]
        );
        // Not sent (Alertmanager down): the next analysis plans it again, from its new time.
        let again = t.plan(&kinds(&["vps.exec"]), at(60));
        assert_eq!(again[0].starts_at, at(60));
        t.commit(&again);
        // Re-sent while it holds, with the start it was first sent with.
        let held = t.plan(&kinds(&["vps.exec", "noop"]), at(3600));
        assert_eq!(held[0].starts_at, at(60));
        assert_eq!(
            held[1],
            SpikeAlert {
                kind: "noop".into(),
                starts_at: at(3600),
                firing: true
            }
        );
        t.commit(&held);
        // vps.exec recovers: sent resolved, and after a successful push never again.
        let recovered = t.plan(&kinds(&["noop"]), at(7200));
        assert!(recovered.contains(&SpikeAlert {
            kind: "vps.exec".into(),
            starts_at: at(60),
            firing: false
        }));
        let unsent = t.plan(&kinds(&["noop"]), at(7300));
        assert_eq!(
            unsent,
            t.plan(&kinds(&["noop"]), at(7300)),
            "a failed push changes nothing"
        );
        t.commit(&recovered);
        assert_eq!(t.firing(), ["noop"]);
        assert!(
            t.plan(&kinds(&["noop"]), at(9000))
                .iter()
                .all(|a| a.kind == "noop")
        );
    }

    proptest! {
        #[test]
        fn a_verdict_holds_for_exactly_its_ttl(
            ttl_ms in 1u64..100_000,
            after_ms in 0u64..200_000,
            reachable: bool,
        ) {
            let start = Instant::now();
            let mut r = Reachability::new(Duration::from_millis(ttl_ms));
            prop_assert_eq!(r.known(start), None);
            r.record(start, reachable);
            let now = start + Duration::from_millis(after_ms);
            let expected = (after_ms < ttl_ms).then_some(reachable);
            prop_assert_eq!(r.known(now), expected);
        }

        #[test]
        fn the_last_record_wins(first: bool, second: bool, gap_ms in 0u64..10_000) {
            let start = Instant::now();
            let mut r = Reachability::new(Duration::from_secs(30));
            r.record(start, first);
            let later = start + Duration::from_millis(gap_ms);
            r.record(later, second);
            prop_assert_eq!(r.known(later), Some(second));
        }

        #[test]
        fn cached_answers_are_served_younger_than_the_ttl_and_never_from_the_future(
            age_ms in -100_000i64..1_000_000,
            ttl_ms in 1u64..600_000,
        ) {
            let now = Utc::now();
            let cached_at = now - chrono::Duration::milliseconds(age_ms);
            let expected = age_ms >= 0 && (age_ms as u64) < ttl_ms;
            prop_assert_eq!(usable(cached_at, now, Duration::from_millis(ttl_ms)), expected);
        }
    }

    #[test]
    fn queries_are_checked_before_they_are_sent() {
        assert!(check_query("up", None).is_ok());
        assert!(check_query("sum(up)\n", Some("1700000000.5")).is_ok());
        assert!(check_query("up", Some("2026-12-03T06:00:00Z")).is_ok());
        assert!(check_query("  ", None).unwrap_err().contains("empty"));
        let long = "u".repeat(MAX_QUERY_BYTES + 1);
        assert!(check_query(&long, None).unwrap_err().contains("longer"));
        assert!(
            check_query("up\u{7}", None)
                .unwrap_err()
                .contains("control")
        );
        assert!(
            check_query("up", Some("yesterday"))
                .unwrap_err()
                .contains("time")
        );
        assert!(check_query("up", Some("NaN")).is_err());
    }
}
