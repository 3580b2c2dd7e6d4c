//! `monitors/memory`: watches the node's memory and acts before the kernel's OOM killer does.
//!
//! Every `memory.interval` it samples the node's RSS, its cgroup v2 `memory.current` and
//! `memory.max` (set by systemd's `MemoryMax=`) and host memory. Pressure is measured against
//! the tightest limit that applies: `memory.max_rss` if set, else the cgroup's `memory.max`,
//! else host memory in use. At `memory.threshold_percent` for `memory.consecutive` samples it
//! first recycles the queue workers (each finishes its job, then a fresh one starts, which
//! returns what the old ones held); if the node is still at the threshold afterwards and a
//! hard limit applies (max_rss or cgroup), it drains and exits with status 75 so systemd
//! starts a fresh process, rather than letting the OOM killer end it mid-job. Host memory
//! alone never makes the node exit: other processes may be the ones using it. An operator
//! command (`memory.action`, e.g. the plan's PHP-FPM restart) runs beside the recycle.

use std::sync::{Arc, Mutex};

use chom_core::config::MemoryConfig;
use chom_supervisors::RECYCLE;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::{Value, json};
use tracing::{error, warn};

use crate::handles::Lifecycle;
use crate::metrics::Metrics;
use crate::queue::QueueShared;
use crate::sys::ShellOutcome;

/// The actor.
pub struct MemoryActor;

/// Start-up arguments.
#[derive(Clone)]
pub struct MemoryArgs {
    /// `memory`: interval, limits, threshold, the operator's action.
    pub config: MemoryConfig,
    /// Where each sample is kept for `chom status`.
    pub status: MemoryStatus,
    /// `chom_memory_actions_total`.
    pub metrics: Metrics,
    /// The drain-and-exit-75 request, and the operator's commands the node waits for.
    pub lifecycle: Lifecycle,
    /// The workers recycled under pressure.
    pub queue: Arc<QueueShared>,
}

/// Running state.
pub struct MemoryState {
    args: MemoryArgs,
    policy: MemoryPolicy,
}

/// The memory monitor's last sample, for `chom status`. Cloning shares the same sample.
#[derive(Clone, Default)]
pub struct MemoryStatus(Arc<Mutex<Option<Value>>>);

impl MemoryStatus {
    /// Keep the latest sample.
    pub fn set(&self, status: Value) {
        *self.0.lock().expect("memory lock") = Some(status);
    }

    /// The latest sample, once one was taken.
    pub fn get(&self) -> Option<Value> {
        self.0.lock().expect("memory lock").clone()
    }
}

/// Messages.
pub enum MemoryMsg {
    /// Sample and decide.
    Tick,
}

/// What one sample measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sample {
    /// Resident set size of the node.
    pub rss: u64,
    /// cgroup `memory.current`, when readable.
    pub cgroup_current: Option<u64>,
    /// cgroup `memory.max`, when set (not "max").
    pub cgroup_max: Option<u64>,
    /// Host `MemTotal`.
    pub host_total: u64,
    /// Host `MemAvailable`.
    pub host_available: u64,
}

/// Which limit the pressure is measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// `memory.max_rss` (RSS against it).
    MaxRss,
    /// The cgroup's `memory.max` (`memory.current` against it).
    Cgroup,
    /// Host memory in use (no limit of our own).
    Host,
}

impl Basis {
    fn as_str(self) -> &'static str {
        match self {
            Basis::MaxRss => "max_rss",
            Basis::Cgroup => "cgroup",
            Basis::Host => "host",
        }
    }

    /// Whether exceeding it gets the node killed (so exiting first is worth it).
    fn hard(self) -> bool {
        !matches!(self, Basis::Host)
    }
}

impl Sample {
    /// The limit that bounds the node: `max_rss` if set, else the cgroup's `memory.max`.
    pub fn limit(&self, max_rss: u64) -> Option<u64> {
        if max_rss > 0 {
            Some(max_rss)
        } else {
            self.cgroup_max
        }
    }

    /// Percent of the tightest applicable limit in use, and which limit that is.
    pub fn pressure(&self, max_rss: u64) -> (f64, Basis) {
        let pct = |used: u64, limit: u64| used as f64 * 100.0 / limit.max(1) as f64;
        if max_rss > 0 {
            (pct(self.rss, max_rss), Basis::MaxRss)
        } else if let (Some(current), Some(max)) = (self.cgroup_current, self.cgroup_max) {
            (pct(current, max), Basis::Cgroup)
        } else {
            (
                pct(
                    self.host_total.saturating_sub(self.host_available),
                    self.host_total,
                ),
                Basis::Host,
            )
        }
    }
}

/// What to do after a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryAction {
    /// Nothing.
    None,
    /// Recycle the workers.
    Recycle,
    /// Drain and exit for a restart.
    Restart,
}

/// The decision, pure: counts consecutive samples over the threshold; the first action is a
/// recycle, the next (if still over a hard limit) a restart.
#[derive(Debug, Clone)]
pub struct MemoryPolicy {
    threshold: f64,
    consecutive: u32,
    over: u32,
    recycled: bool,
}

impl MemoryPolicy {
    /// A policy acting at `threshold_percent` for `consecutive` samples.
    pub fn new(threshold_percent: u8, consecutive: u32) -> Self {
        MemoryPolicy {
            threshold: f64::from(threshold_percent),
            consecutive: consecutive.max(1),
            over: 0,
            recycled: false,
        }
    }

    /// Feed one pressure reading.
    pub fn observe(&mut self, percent: f64, hard: bool) -> MemoryAction {
        if percent < self.threshold {
            self.over = 0;
            self.recycled = false;
            return MemoryAction::None;
        }
        self.over += 1;
        if self.over < self.consecutive {
            return MemoryAction::None;
        }
        self.over = 0;
        if !self.recycled {
            self.recycled = true;
            MemoryAction::Recycle
        } else if hard {
            MemoryAction::Restart
        } else {
            MemoryAction::None
        }
    }
}

fn read_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Take a sample of this process, its cgroup (v2) and the host.
pub fn sample() -> Sample {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("0::").map(|p| p.trim().to_owned()))
        });
    let (cgroup_current, cgroup_max) = match cgroup {
        Some(path) => {
            let dir = format!("/sys/fs/cgroup{}", path.trim_end_matches('/'));
            (
                read_u64(&format!("{dir}/memory.current")),
                // "max" means no limit: it does not parse, which is None.
                read_u64(&format!("{dir}/memory.max")),
            )
        }
        None => (None, None),
    };
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    Sample {
        rss: crate::sys::rss_bytes().unwrap_or(0),
        cgroup_current,
        cgroup_max,
        host_total: field("MemTotal:"),
        host_available: field("MemAvailable:"),
    }
}

impl Actor for MemoryActor {
    type Msg = MemoryMsg;
    type State = MemoryState;
    type Arguments = MemoryArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<MemoryMsg>,
        args: MemoryArgs,
    ) -> Result<MemoryState, ActorProcessingErr> {
        myself.send_message(MemoryMsg::Tick)?;
        let m = &args.config;
        let policy = MemoryPolicy::new(m.threshold_percent, m.consecutive);
        Ok(MemoryState { args, policy })
    }

    async fn handle(
        &self,
        myself: ActorRef<MemoryMsg>,
        message: MemoryMsg,
        state: &mut MemoryState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            MemoryMsg::Tick => {
                tick(state);
                myself.send_after(state.args.config.interval, || MemoryMsg::Tick);
            }
        }
        Ok(())
    }
}

fn tick(state: &mut MemoryState) {
    let args = &state.args;
    let s = sample();
    let (percent, basis) = s.pressure(args.config.max_rss);
    args.metrics.set_memory_limit(s.limit(args.config.max_rss));
    let action = state.policy.observe(percent, basis.hard());
    args.status.set(json!({
        "rss_bytes": s.rss,
        "cgroup_current_bytes": s.cgroup_current,
        "cgroup_max_bytes": s.cgroup_max,
        "host_total_bytes": s.host_total,
        "host_available_bytes": s.host_available,
        "max_rss_bytes": (args.config.max_rss > 0).then_some(args.config.max_rss),
        "pressure_percent": (percent * 10.0).round() / 10.0,
        "basis": basis.as_str(),
        "threshold_percent": args.config.threshold_percent,
    }));
    match action {
        MemoryAction::None => {}
        MemoryAction::Recycle => {
            warn!(
                percent,
                basis = basis.as_str(),
                rss = s.rss,
                threshold = args.config.threshold_percent,
                "memory: above the threshold; recycling the workers"
            );
            args.metrics.memory_action("recycle");
            recycle_workers(&args.queue);
            let command = args.config.action.trim().to_owned();
            if !command.is_empty() {
                args.metrics.memory_action("command");
                // Not awaited here: a slow service restart must not delay the next sample. The
                // node waits for it before exiting (a restart may follow within a second).
                args.lifecycle
                    .spawn_operator_command(async move { run_action(&command).await });
            }
        }
        MemoryAction::Restart => {
            error!(
                percent,
                basis = basis.as_str(),
                rss = s.rss,
                "memory: still near the limit after recycling the workers; draining and exiting so a fresh process starts before the OOM killer acts"
            );
            args.metrics.memory_action("restart");
            args.lifecycle.request_restart();
        }
    }
}

/// Run the operator's memory action, bounded to two minutes.
async fn run_action(command: &str) {
    match crate::sys::run_shell(command, std::time::Duration::from_secs(120)).await {
        ShellOutcome::Success => warn!(command, "memory: action ran"),
        ShellOutcome::Failed { status, stderr, .. } => {
            error!(command, %status, %stderr, "memory: action failed")
        }
        ShellOutcome::NotRun(e) => error!(command, error = %e, "memory: cannot run the action"),
        ShellOutcome::TimedOut => error!(command, "memory: action did not finish within 2 minutes"),
    }
}

/// Stop every worker with the `recycle` reason: each finishes its current job first, and its
/// supervisor starts a fresh one (counted as a recycle, not a failure).
fn recycle_workers(queue: &QueueShared) {
    for i in 0..queue.workers() {
        if let Some(worker) = queue.slot(i).worker.clone() {
            worker.stop(Some(RECYCLE.to_owned()));
        }
    }
}

/// Memory held on purpose by the `debug.inflate` hook (tests of memory pressure).
static BALLAST: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

/// Debug hook: grow RSS by `bytes` (touched, so it is resident).
pub fn inflate(bytes: usize) {
    BALLAST.lock().expect("ballast lock").push(vec![1u8; bytes]);
}

/// Debug hook: release what [`inflate`] holds.
pub fn deflate() {
    BALLAST.lock().expect("ballast lock").clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycle_first_then_restart_only_over_a_hard_limit() {
        let mut p = MemoryPolicy::new(95, 2);
        assert_eq!(p.observe(96.0, true), MemoryAction::None);
        assert_eq!(p.observe(97.0, true), MemoryAction::Recycle);
        assert_eq!(p.observe(97.0, true), MemoryAction::None);
        assert_eq!(p.observe(97.0, true), MemoryAction::Restart);
        // Dropping below resets everything.
        assert_eq!(p.observe(50.0, true), MemoryAction::None);
        assert_eq!(p.observe(96.0, true), MemoryAction::None);
        assert_eq!(p.observe(96.0, true), MemoryAction::Recycle);
        // Host memory (soft): recycling only.
        let mut h = MemoryPolicy::new(95, 1);
        assert_eq!(h.observe(99.0, false), MemoryAction::Recycle);
        for _ in 0..5 {
            assert_eq!(h.observe(99.0, false), MemoryAction::None);
        }
    }

    #[test]
    fn pressure_uses_the_tightest_limit_that_applies() {
        let s = Sample {
            rss: 50,
            cgroup_current: Some(80),
            cgroup_max: Some(100),
            host_total: 1000,
            host_available: 900,
        };
        assert_eq!(s.pressure(100), (50.0, Basis::MaxRss));
        assert_eq!(s.pressure(0), (80.0, Basis::Cgroup));
        let no_cgroup = Sample {
            cgroup_max: None,
            ..s
        };
        assert_eq!(no_cgroup.pressure(0), (10.0, Basis::Host));
    }

    #[test]
    fn a_real_sample_reads_this_process_and_the_host() {
        let s = sample();
        assert!(
            s.rss > 0 && s.host_total > s.host_available && s.host_available > 0,
            "{s:?}"
        );
    }
}
