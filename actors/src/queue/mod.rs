//! The queue subtree: a dispatcher that claims due jobs in batches sized to the idle workers,
//! N worker actors running one job each under its timeout, a completer that writes results in
//! batches, and a reaper for periodic maintenance.
//!
//! The actors meet in [`QueueShared`]: one slot per worker (its current actor and the job it
//! was handed), the dispatcher's wake-up flag, and the completer's address. Slots outlive
//! actor incarnations, which is how a job survives its worker: a worker that crashed mid-job
//! is replaced, and the replacement finds the job in its slot and hands it back for retry.

pub mod completer;
pub mod dispatcher;
pub mod reaper;
pub mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chom_core::job::{Completion, Job};
use ractor::ActorRef;
use tokio::sync::Notify;

use crate::context::NodeContext;

/// A job handed to a worker.
#[derive(Debug, Clone)]
pub struct Assigned {
    /// The job as claimed.
    pub job: Job,
    /// Whether the worker began running it (a job never started is released without using
    /// up an attempt).
    pub started: bool,
}

/// One worker's slot.
#[derive(Default)]
pub struct Slot {
    /// The worker's current incarnation, while it runs.
    pub worker: Option<ActorRef<worker::WorkerMsg>>,
    /// The job it holds, if any.
    pub assigned: Option<Assigned>,
}

/// What the queue actors share.
pub struct QueueShared {
    /// The node's context.
    pub ctx: Arc<NodeContext>,
    slots: Vec<Mutex<Slot>>,
    notify: Notify,
    wake_pending: AtomicBool,
    maybe_more: AtomicBool,
    dispatcher: Mutex<Option<ActorRef<dispatcher::DispatcherMsg>>>,
    completer: Mutex<Option<ActorRef<completer::CompleterMsg>>>,
    paused: Mutex<Option<(Instant, Vec<String>)>>,
}

impl QueueShared {
    /// Shared state for `workers` workers.
    pub fn new(ctx: Arc<NodeContext>, workers: usize) -> Arc<Self> {
        Arc::new(QueueShared {
            ctx,
            slots: (0..workers).map(|_| Mutex::new(Slot::default())).collect(),
            notify: Notify::new(),
            wake_pending: AtomicBool::new(false),
            maybe_more: AtomicBool::new(true),
            dispatcher: Mutex::new(None),
            completer: Mutex::new(None),
            paused: Mutex::new(None),
        })
    }

    /// Number of worker slots.
    pub fn workers(&self) -> usize {
        self.slots.len()
    }

    /// Lock one slot.
    pub fn slot(&self, index: usize) -> std::sync::MutexGuard<'_, Slot> {
        self.slots[index].lock().expect("slot lock")
    }

    /// Indices of workers that are running and hold no job.
    pub fn idle_workers(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|i| {
                let s = self.slot(*i);
                s.worker.is_some() && s.assigned.is_none()
            })
            .collect()
    }

    /// Wake the dispatcher for a claim round (coalesced: many wakes, one round).
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// A worker became idle: wake the dispatcher only if the last claim filled every idle
    /// worker (there may be more due jobs), so an empty queue costs no query per completion.
    pub fn worker_idle(&self) {
        if self.maybe_more.load(Ordering::Relaxed) {
            self.wake();
        }
    }

    pub(crate) fn set_maybe_more(&self, more: bool) {
        self.maybe_more.store(more, Ordering::Relaxed);
    }

    pub(crate) fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }

    /// Register the dispatcher incarnation.
    pub fn set_dispatcher(&self, d: Option<ActorRef<dispatcher::DispatcherMsg>>) {
        *self.dispatcher.lock().expect("dispatcher lock") = d;
    }

    pub(crate) fn take_wake_pending(&self) {
        self.wake_pending.store(false, Ordering::SeqCst);
    }

    /// Ask the dispatcher for a claim round now, unless one is already queued.
    pub(crate) fn cast_wake(&self) {
        if self.wake_pending.swap(true, Ordering::SeqCst) {
            return;
        }
        let dispatcher = self.dispatcher.lock().expect("dispatcher lock").clone();
        match dispatcher {
            Some(d) if d.cast(dispatcher::DispatcherMsg::Wake).is_ok() => {}
            _ => self.wake_pending.store(false, Ordering::SeqCst),
        }
    }

    /// Register the completer incarnation.
    pub fn set_completer(&self, c: Option<ActorRef<completer::CompleterMsg>>) {
        *self.completer.lock().expect("completer lock") = c;
    }

    /// Hand a completion to the completer. If none is running (it is being restarted), the
    /// job stays reserved in the database and is released at the next start or rescued.
    pub fn complete(&self, completion: Completion) {
        let completer = self.completer.lock().expect("completer lock").clone();
        let sent = completer.is_some_and(|c| {
            c.cast(completer::CompleterMsg::Done(completion.clone()))
                .is_ok()
        });
        if !sent {
            tracing::warn!(
                job = completion.id(),
                "queue: completer not running; the job stays reserved until rescued"
            );
        }
    }

    /// Queues to claim from, in priority order, without paused ones. The paused set is
    /// re-read from the database at most every `queue.poll_interval` (so a pause on another
    /// node takes effect here within that time).
    pub async fn active_queues(&self) -> Vec<String> {
        let max_age = self.ctx.config.queue.poll_interval;
        let cached = self.paused.lock().expect("paused lock").clone();
        let paused = match cached {
            Some((at, list)) if at.elapsed() < max_age => list,
            _ => {
                let fresh = match self.ctx.backends() {
                    Some(b) => {
                        crate::store::with_timeout(Duration::from_secs(5), b.store.paused_queues())
                            .await
                            .ok()
                    }
                    None => None,
                };
                match fresh {
                    Some(list) => {
                        *self.paused.lock().expect("paused lock") =
                            Some((Instant::now(), list.clone()));
                        list
                    }
                    None => cached.map(|(_, l)| l).unwrap_or_default(),
                }
            }
        };
        self.ctx
            .config
            .queue
            .queues
            .iter()
            .filter(|q| !paused.contains(q))
            .cloned()
            .collect()
    }

    /// Forget the cached paused set (after a pause/resume on this node).
    pub fn invalidate_paused(&self) {
        *self.paused.lock().expect("paused lock") = None;
        self.wake();
    }
}
