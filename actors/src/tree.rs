//! Reading the supervision tree: summaries for `chom status`, STATUS= and the supervision check.

use std::time::Duration;

use chom_supervisors::{ChildReport, ChildStatus, Restart, SupervisorMsg, SupervisorReport};
use ractor::ActorRef;

/// Counts over every actor in the tree (supervisors included, the root excluded).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TreeSummary {
    /// Actors in the tree.
    pub actors: usize,
    /// Actors in state `running`.
    pub running: usize,
    /// Paths of permanent actors that are not running (restarting, failed, stopped).
    pub not_running: Vec<String>,
    /// Sum of every actor's restart count.
    pub restarts: u64,
}

/// Fetch the whole tree from the root supervisor.
pub async fn fetch(
    root: &ActorRef<SupervisorMsg>,
    timeout: Duration,
) -> Result<SupervisorReport, String> {
    ractor::call_t!(root, SupervisorMsg::Tree, timeout.as_millis() as u64)
        .map_err(|e| format!("supervision tree did not answer: {e}"))
}

/// Summarise a tree report.
pub fn summarize(report: &SupervisorReport) -> TreeSummary {
    let mut summary = TreeSummary::default();
    walk(&report.children, &mut summary);
    summary
}

fn walk(children: &[ChildReport], summary: &mut TreeSummary) {
    for child in children {
        summary.actors += 1;
        summary.restarts += child.restart_count;
        if child.state == ChildStatus::Running {
            summary.running += 1;
        } else if child.restart == Restart::Permanent {
            summary.not_running.push(child.path.clone());
        }
        if let Some(sub) = &child.children {
            walk(&sub.children, summary);
        }
    }
}

/// Find one actor's report by path.
pub fn find<'a>(report: &'a SupervisorReport, path: &str) -> Option<&'a ChildReport> {
    fn go<'a>(children: &'a [ChildReport], path: &str) -> Option<&'a ChildReport> {
        for child in children {
            if child.path == path {
                return Some(child);
            }
            if let Some(found) = child.children.as_ref().and_then(|s| go(&s.children, path)) {
                return Some(found);
            }
        }
        None
    }
    go(&report.children, path)
}

/// Every actor's path in the tree, and whether it is a supervisor (the root excluded).
pub fn paths(report: &SupervisorReport) -> Vec<(String, bool)> {
    fn go(children: &[ChildReport], out: &mut Vec<(String, bool)>) {
        for child in children {
            out.push((child.path.clone(), child.children.is_some()));
            if let Some(sub) = &child.children {
                go(&sub.children, out);
            }
        }
    }
    let mut out = Vec::new();
    go(&report.children, &mut out);
    out
}
