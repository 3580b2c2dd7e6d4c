//! `monitors/health`: runs every health check each `health.interval`, keeps the last report for
//! `/health` (so a scrape costs no database query), and heals what it can.
//!
//! Each check has a [`Remediator`]: after `health.failures_before_restart` consecutive errors
//! the check's remediation runs — for the node's own parts a restart of the owning actor
//! (`database` and `cache` -> `store`, whose restart rebuilds the pools). More than
//! `health.max_remediations` within `health.remediation_window` stops remediation for that
//! check; it is then reported as an error with "remediation exhausted" (logged and counted)
//! until it has passed `health.recovery_cycles` times in a row. Operator checks
//! (`[[health.checks]]`) with a `remediation` command get the same treatment, the command
//! taking the place of the restart.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chom_core::remediation::{Action, RemediationPolicy, Remediator};
use chom_supervisors::SupervisorMsg;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{error, info, warn};

use crate::monitors::health::{self, CheckStatus, Checks, HealthCache, HealthReport};
use crate::sys::ShellOutcome;

/// The actor.
pub struct HealthActor;

/// Start-up arguments.
#[derive(Clone)]
pub struct HealthArgs {
    /// What the checks look at (and the root, through which remediation restarts actors).
    pub checks: Checks,
    /// Where each round's report is kept for `/health`.
    pub cache: HealthCache,
}

/// Running state.
pub struct HealthState {
    checks: Checks,
    cache: HealthCache,
    remediators: HashMap<String, Remediator>,
}

/// Messages.
pub enum HealthMsg {
    /// Run the checks now.
    Tick,
}

/// The actor a failing check's remediation restarts, if the node can heal it itself.
pub fn owner(check: &str) -> Option<&'static str> {
    match check {
        "database" | "cache" => Some("store"),
        _ => None,
    }
}

impl Actor for HealthActor {
    type Msg = HealthMsg;
    type State = HealthState;
    type Arguments = HealthArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<HealthMsg>,
        args: HealthArgs,
    ) -> Result<HealthState, ActorProcessingErr> {
        myself.send_message(HealthMsg::Tick)?;
        let metrics = &args.checks.metrics;
        for check in ["database", "cache"] {
            metrics.zero_remediations(check, &["restarted", "exhausted"]);
        }
        for check in &args.checks.config.health.checks {
            if check.remediation.is_some() {
                metrics.zero_remediations(&check.name, &["command", "exhausted"]);
            }
        }
        Ok(HealthState {
            checks: args.checks,
            cache: args.cache,
            remediators: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<HealthMsg>,
        message: HealthMsg,
        state: &mut HealthState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            HealthMsg::Tick => {
                // Until the node is ready (migrations applied) a report would only say so and
                // go stale at once: check again soon instead of caching it.
                let next = if state.checks.readiness.ready() {
                    tick(state).await;
                    state.checks.config.health.interval
                } else {
                    Duration::from_millis(200)
                };
                // The next round is scheduled after this one ends, so slow checks (a database
                // that does not answer) never pile rounds up in the mailbox.
                myself.send_after(next, || HealthMsg::Tick);
            }
        }
        Ok(())
    }
}

fn policy(ctx: &Checks) -> RemediationPolicy {
    let h = &ctx.config.health;
    RemediationPolicy {
        failures_before: h.failures_before_restart,
        max_remediations: h.max_remediations,
        window: h.remediation_window,
        recovery_cycles: h.recovery_cycles,
    }
}

async fn tick(state: &mut HealthState) {
    let ctx = state.checks.clone();
    let mut report = health::run_checks(&ctx).await;
    let now = Instant::now();
    let policy = policy(&ctx);
    for (name, check) in report.checks.iter_mut() {
        let configured = ctx
            .config
            .health
            .checks
            .iter()
            .find(|c| &c.name == name)
            .and_then(|c| c.remediation.clone());
        let target = match (owner(name), &configured) {
            (Some(actor), _) => Remedy::Restart(actor),
            (None, Some(command)) => Remedy::Command(command.clone()),
            (None, None) => continue,
        };
        let remediator = state
            .remediators
            .entry(name.clone())
            .or_insert_with(|| Remediator::new(policy));
        match remediator.observe(check.status == CheckStatus::Error, now) {
            Action::None => {}
            Action::Remediate => match &target {
                Remedy::Restart(actor) => {
                    warn!(check = %name, actor, failures = policy.failures_before, "health: check keeps failing; restarting its actor");
                    ctx.metrics.remediation(name, "restarted");
                    restart(&ctx, actor).await;
                }
                Remedy::Command(command) => {
                    warn!(check = %name, %command, failures = policy.failures_before, "health: check keeps failing; running its remediation");
                    ctx.metrics.remediation(name, "command");
                    run_remediation(name, command).await;
                }
            },
            Action::Exhausted => {
                error!(check = %name, max = policy.max_remediations, window = ?policy.window, "health: remediation exhausted; not remediating again until the check recovers");
                ctx.metrics.remediation(name, "exhausted");
            }
            Action::Rearmed => {
                info!(check = %name, "health: check recovered; remediation armed again");
            }
        }
        if remediator.exhausted() {
            check.status = CheckStatus::Error;
            let why = check.message.take().unwrap_or_default();
            check.message = Some(if why.is_empty() {
                "remediation exhausted".to_owned()
            } else {
                format!("remediation exhausted: {why}")
            });
        }
    }
    let report = HealthReport::from_checks(report.checks);
    state.cache.set(report);
}

/// How a failing check is healed.
enum Remedy {
    /// Restart this actor of the node.
    Restart(&'static str),
    /// Run the operator's command.
    Command(String),
}

/// Limit of an operator's remediation command (e.g. a service restart).
const REMEDIATION_TIMEOUT: Duration = Duration::from_secs(120);

async fn run_remediation(check: &str, command: &str) {
    match crate::sys::run_shell(command, REMEDIATION_TIMEOUT).await {
        ShellOutcome::Success => info!(check, command, "health: remediation ran"),
        ShellOutcome::Failed { status, stderr, .. } => {
            warn!(check, command, %status, %stderr, "health: remediation failed")
        }
        ShellOutcome::NotRun(e) => {
            warn!(check, command, error = %e, "health: cannot run the remediation")
        }
        ShellOutcome::TimedOut => {
            warn!(check, command, limit = ?REMEDIATION_TIMEOUT, "health: remediation did not finish in time")
        }
    }
}

async fn restart(ctx: &Checks, path: &str) {
    let Some(root) = ctx.root.get() else {
        return;
    };
    let result = ractor::call_t!(
        root,
        |reply| SupervisorMsg::Restart {
            path: path.to_owned(),
            reply
        },
        Duration::from_secs(30).as_millis() as u64
    );
    match result {
        Ok(Ok(())) => info!(actor = path, "health: actor restarted"),
        Ok(Err(e)) => warn!(actor = path, error = %e, "health: restart failed"),
        Err(e) => warn!(actor = path, error = %e, "health: root did not answer the restart"),
    }
}
