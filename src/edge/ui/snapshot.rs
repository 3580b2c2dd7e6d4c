//! The overview's live part: one snapshot, built at most every [`FRESH_FOR`] however many
//! tabs look (the SSE stream of every tab and every reload read the same one), from what the
//! node maintains anyway: the reaper's queue sizes, the health actor's cached report, the
//! breaker board, the metrics' counters and histogram. No count over the jobs table per
//! request. The throughput history is sampled from the job counters every few seconds into
//! per-minute points (the last hour).

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chom_actors::context::NodeContext;
use tokio::time::Instant;

use super::Shared;
use super::pages::{Badge, wire};
use crate::api;
use crate::methods::Handle;

/// How long one snapshot serves every tab.
pub const FRESH_FOR: Duration = Duration::from_secs(2);
/// How often the job counters are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Minutes of history kept (and charted).
pub const MINUTES: usize = 60;

/// Per-minute job outcomes from cumulative counters: pure, the minute passed in.
#[derive(Debug, Default, Clone)]
pub struct History {
    /// (minute since the epoch, completed total, failed total) at the minute's last sample.
    points: VecDeque<(i64, u64, u64)>,
}

impl History {
    /// Record the totals seen during `minute`.
    pub fn record(&mut self, minute: i64, completed: u64, failed: u64) {
        match self.points.back_mut() {
            Some(last) if last.0 == minute => *last = (minute, completed, failed),
            Some(last) if last.0 > minute => {}
            _ => self.points.push_back((minute, completed, failed)),
        }
        while self.points.len() > MINUTES + 1 {
            self.points.pop_front();
        }
    }

    /// The last [`MINUTES`] minutes up to `now_minute`, oldest first: (minute, completed,
    /// failed) in each; minutes without a sample count nothing.
    pub fn per_minute(&self, now_minute: i64) -> Vec<(i64, u64, u64)> {
        let first = now_minute - MINUTES as i64 + 1;
        (first..=now_minute)
            .map(|minute| {
                let here = self.points.iter().find(|p| p.0 == minute);
                let before = self.points.iter().rev().find(|p| p.0 < minute);
                match (here, before) {
                    (Some(h), Some(b)) => {
                        (minute, h.1.saturating_sub(b.1), h.2.saturating_sub(b.2))
                    }
                    _ => (minute, 0, 0),
                }
            })
            .collect()
    }
}

/// What the door keeps for the overview.
#[derive(Default)]
pub struct Snapshots {
    history: Mutex<History>,
    cached: tokio::sync::Mutex<Option<(Instant, Arc<Overview>)>>,
}

fn minute_now() -> i64 {
    chrono::Utc::now().timestamp().div_euclid(60)
}

/// Sample the job counters into the history until aborted.
pub async fn sample(ctx: Arc<NodeContext>, shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tick.tick().await;
        let (completed, failed) = ctx.metrics.outcome_totals();
        shared
            .snapshots
            .history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(minute_now(), completed, failed);
    }
}

/// One queue's size.
pub struct QueueSize {
    pub name: String,
    pub size: u64,
    pub claiming: bool,
}

/// One health check.
pub struct Check {
    pub name: String,
    pub status: Badge,
    pub message: String,
}

/// An open breaker.
pub struct OpenBreaker {
    pub vps: String,
    pub state: Badge,
    pub reason: String,
}

/// A firing alert.
pub struct FiringAlert {
    pub name: String,
    pub severity: Badge,
    pub summary: String,
    pub since: String,
}

/// The overview's live part.
pub struct Overview {
    pub built_at: String,
    pub health: Badge,
    pub actors: usize,
    pub running: usize,
    pub restarts: u64,
    pub not_running: Vec<String>,
    pub queues: Vec<QueueSize>,
    pub wait_p95: String,
    pub memory: String,
    pub checks: Vec<Check>,
    pub breakers: Vec<OpenBreaker>,
    pub alerts: Vec<FiringAlert>,
    pub completed_chart: String,
    pub failed_chart: String,
    pub completed_hour: u64,
    pub failed_hour: u64,
}

/// The current snapshot: the cached one while fresh, else a new one (one build at a time;
/// tabs asking meanwhile wait for it and share it).
pub async fn current(ctx: &NodeContext, shared: &Shared) -> Arc<Overview> {
    let mut cached = shared.snapshots.cached.lock().await;
    if let Some((at, overview)) = cached.as_ref()
        && at.elapsed() < FRESH_FOR
    {
        return overview.clone();
    }
    let history = shared
        .snapshots
        .history
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .per_minute(minute_now());
    let overview = Arc::new(build(ctx, &history).await);
    *cached = Some((Instant::now(), overview.clone()));
    overview
}

async fn build(ctx: &NodeContext, history: &[(i64, u64, u64)]) -> Overview {
    let summary = match (api::node::Tree {}).handle(ctx).await {
        Ok(report) => chom_actors::tree::summarize(&report),
        Err(_) => Default::default(),
    };
    let claiming = ctx.queue.active_queues().await;
    let sizes = ctx.metrics.queue_sizes();
    let queues = ctx
        .config
        .queue
        .queues
        .iter()
        .map(|q| QueueSize {
            name: q.clone(),
            size: sizes.get(q).copied().unwrap_or(0),
            claiming: claiming.contains(q),
        })
        .collect();
    let (health, checks) = health(ctx);
    let breakers = crate::fleet_methods::open_breakers(ctx)
        .await
        .into_iter()
        .map(|b| OpenBreaker {
            vps: b.vps,
            state: Badge::new(&wire(&b.state)),
            reason: b.reason.unwrap_or_default(),
        })
        .collect();
    let alerts = alerts(ctx).await;
    let memory = chom_actors::sys::rss_bytes().map_or_else(
        || "unknown".to_owned(),
        |b| format!("{:.1} MiB", b as f64 / 1048576.0),
    );
    Overview {
        built_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        health,
        actors: summary.actors,
        running: summary.running,
        restarts: summary.restarts,
        not_running: summary.not_running,
        queues,
        wait_p95: ctx
            .metrics
            .wait_p95_seconds()
            .map_or_else(|| "no jobs yet".to_owned(), |s| format!("≤ {s} s")),
        memory,
        checks,
        breakers,
        alerts,
        completed_hour: history.iter().map(|p| p.1).sum(),
        failed_hour: history.iter().map(|p| p.2).sum(),
        completed_chart: chart(history, |p| p.1, "completed", "Jobs completed per minute"),
        failed_chart: chart(history, |p| p.2, "failed", "Jobs failed per minute"),
    }
}

/// The health actor's cached report: the overall state and each check.
fn health(ctx: &NodeContext) -> (Badge, Vec<Check>) {
    let max_age = ctx.config.health.interval * 2;
    match ctx.cached_health(max_age) {
        Some(r) => (
            Badge::new(&wire(&r.status)),
            r.checks
                .iter()
                .map(|(name, c)| Check {
                    name: name.clone(),
                    status: Badge::new(&wire(&c.status)),
                    message: c.message.clone().unwrap_or_default(),
                })
                .collect(),
        ),
        None => (Badge::new("unknown"), Vec::new()),
    }
}

/// The alerts firing, as `alerts.list` answers them.
async fn alerts(ctx: &NodeContext) -> Vec<FiringAlert> {
    match (api::alerts::List {}).handle(ctx).await {
        Ok(list) => list
            .alerts
            .into_iter()
            .map(|a| FiringAlert {
                summary: a.annotations.get("summary").cloned().unwrap_or_default(),
                severity: Badge::new(a.severity.as_deref().unwrap_or("none")),
                since: a.starts_at.to_rfc3339(),
                name: a.alertname,
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A bar chart of one value per minute as inline SVG, drawn here from numbers only (so it is
/// safe to embed), with a text title and per-bar titles for screen readers and hover.
pub fn chart(
    points: &[(i64, u64, u64)],
    value: fn(&(i64, u64, u64)) -> u64,
    class: &str,
    title: &str,
) -> String {
    const W: usize = 600;
    const H: usize = 120;
    let max = points.iter().map(value).max().unwrap_or(0).max(1);
    let bar = W / MINUTES.max(1);
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {W} {}\" role=\"img\" aria-label=\"{title}, last hour, peak {max}\"><title>{title} (last hour, peak {max})</title>",
        H + 14
    );
    for (i, p) in points.iter().enumerate() {
        let v = value(p);
        let h = usize::try_from(v.saturating_mul(H as u64) / max).unwrap_or(H);
        let minute = chrono::DateTime::from_timestamp(p.0 * 60, 0)
            .map(|t| t.format("%H:%M UTC").to_string())
            .unwrap_or_default();
        let _ = write!(
            svg,
            "<rect class=\"bar {class}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{h}\"><title>{minute}: {v}</title></rect>",
            i * bar + 1,
            H - h,
            bar.saturating_sub(2).max(1),
        );
    }
    let _ = write!(
        svg,
        "<line class=\"axis\" x1=\"0\" y1=\"{H}\" x2=\"{W}\" y2=\"{H}\"/><text x=\"0\" y=\"{}\">-60 min</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">now</text></svg>",
        H + 12,
        W,
        H + 12
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_turns_totals_into_per_minute_counts() {
        let mut h = History::default();
        h.record(100, 10, 1);
        h.record(101, 15, 1);
        h.record(101, 18, 2);
        h.record(103, 30, 2);
        h.record(102, 99, 9); // out of order: ignored
        let m = h.per_minute(103);
        assert_eq!(m.len(), MINUTES);
        assert_eq!(m[MINUTES - 1], (103, 12, 0));
        assert_eq!(m[MINUTES - 2], (102, 0, 0));
        assert_eq!(m[MINUTES - 3], (101, 8, 1));
        assert_eq!(
            m[MINUTES - 4],
            (100, 0, 0),
            "no earlier sample: nothing known"
        );
        for minute in 104..300 {
            h.record(minute, 30, 2);
        }
        assert!(h.points.len() <= MINUTES + 1);
    }

    #[test]
    fn charts_are_svg_of_numbers() {
        let points: Vec<_> = (0..60).map(|m| (m, m as u64, 0)).collect();
        let svg = chart(&points, |p| p.1, "completed", "Jobs completed per minute");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<rect").count(), 60);
        assert!(svg.contains("peak 59"));
    }
}
