//! Errors of the supervisor's requests.

use thiserror::Error;

/// Why a request to a supervisor failed.
#[derive(Error, Debug, Clone, PartialEq, Eq)]
pub enum SupervisorError {
    /// No child at this path (or a path segment is not a supervisor).
    #[error("no child at {0}")]
    NoSuchChild(String),
    /// The child exists but has no live incarnation right now (restarting or stopped).
    #[error("child {0} is not running")]
    NotRunning(String),
    /// The dynamic supervisor already holds its maximum number of children.
    #[error("supervisor already has its maximum of {0} children")]
    MaxChildren(usize),
    /// A sibling already has this id.
    #[error("a child with id {0} already exists")]
    DuplicateId(String),
    /// The id is empty or contains `/`.
    #[error("invalid child id {0:?}: must be non-empty and contain no '/'")]
    InvalidId(String),
    /// The child's start function failed.
    #[error("child failed to start: {0}")]
    StartFailed(String),
    /// The supervisor exceeded its restart intensity and gave up (it is failing upward).
    #[error("supervisor gave up: {0}")]
    Escalated(String),
}
