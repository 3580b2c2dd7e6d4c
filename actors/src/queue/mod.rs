//! The queue subtree: a dispatcher that claims due jobs in batches sized to the idle workers,
//! N worker actors running one job each under its timeout, a completer that writes results in
//! batches, and a reaper for periodic maintenance.
//!
//! The actors meet in [`QueueShared`]: one slot per worker (its current actor and the job it
//! was handed), the ready buffer, the dispatcher's wake-up flag, and the completer's address.
//! Slots outlive actor incarnations, which is how a job survives its worker: a worker that
//! crashed mid-job is replaced, and the replacement finds the job in its slot and hands it
//! back for retry.
//!
//! The ready buffer holds claimed jobs beyond those running, ordered by queue priority, so
//! that a worker finishing a job starts the next one without waiting for a database round
//! trip. Its size adapts to the work: about a second of jobs at the recent completion rate, at
//! least one per worker and at most [`MAX_PREFETCH`]; so short jobs are claimed in batches of
//! hundreds (one commit each) while slow jobs are not hoarded away from other nodes. A job
//! never waits in the buffer behind a job of a lower-priority queue, and when higher-priority
//! jobs arrive while lower ones are buffered, the dispatcher claims them and gives the lower
//! ones back (without using up their attempt), so priority stays strict at claim time.

pub mod completer;
pub mod dispatcher;
pub mod reaper;
pub mod worker;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chom_core::config::Config;
use chom_core::job::{Completion, Job};
use chom_core::policy::JobPolicy;
use ractor::ActorRef;
use tokio::sync::Notify;

use crate::backends::PublishedBackends;
use crate::handles::Readiness;
use crate::metrics::Metrics;

/// Largest ready buffer (and so about the largest claim). A claim takes tens of milliseconds
/// on a busy machine: the buffer must cover that at tens of thousands of short jobs a second
/// or the workers starve between claims (the README's benchmark section has the figures). The
/// rate-based sizing keeps it to about a second of work, so slow jobs are never hoarded; the
/// cap only matters above 8,000 jobs a second.
pub const MAX_PREFETCH: usize = 8000;

/// A job handed to a worker.
#[derive(Debug, Clone)]
pub struct Assigned {
    /// The job as claimed (shared with the worker's message: no copy of the payload).
    pub job: Arc<Job>,
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
    /// The panic message of an incarnation that crashed running `assigned`, for the failed
    /// attempt's reason.
    pub crash: Option<String>,
}

/// What the queue uses of the node: built by the wiring from the node's handles.
#[derive(Clone)]
pub struct QueueContext {
    /// `queue` (and the job kinds' retry policies).
    pub config: Arc<Config>,
    /// Job and queue metrics.
    pub metrics: Metrics,
    /// The store's backends (claims, completions, maintenance).
    pub published: PublishedBackends,
    /// Migrations applied and the node name held: nothing is claimed or released before.
    pub readiness: Readiness,
    /// The name jobs are reserved under.
    pub node_name: String,
    /// Whether the `debug.*` job kinds run (`CHOM_DEBUG_HOOKS=1`).
    pub debug_hooks: bool,
    /// Where the dead-letter analysis leaves its verdict for Alertmanager.
    pub spikes: crate::observability::SpikeReports,
    /// The nodes sharing the database, as the reaper counts them.
    pub peers: crate::handles::Peers,
}

/// What the queue actors share.
pub struct QueueShared {
    /// What the queue uses of the node.
    pub ctx: QueueContext,
    slots: Vec<Mutex<Slot>>,
    notify: Notify,
    wake_pending: AtomicBool,
    maybe_more: AtomicBool,
    /// Set by wake-ups that may mean new jobs (NOTIFY, local enqueue): the next claim round
    /// also checks for higher-priority jobs than those buffered.
    new_jobs: AtomicBool,
    ready: Mutex<Vec<VecDeque<Job>>>,
    finished: AtomicU64,
    rate: Mutex<(Instant, u64, f64)>,
    dispatcher: Mutex<Option<ActorRef<dispatcher::DispatcherMsg>>>,
    completer: Mutex<Option<ActorRef<completer::CompleterMsg>>>,
    /// Results of finished attempts not yet written. Kept here, not in the completer's
    /// mailbox, so that they survive the completer being stopped or restarted.
    completions: Mutex<Vec<Completion>>,
    flush_queued: AtomicBool,
    paused: Mutex<Option<(Instant, Vec<String>)>>,
    policies: Mutex<std::collections::HashMap<String, Arc<JobPolicy>>>,
}

impl QueueShared {
    /// Shared state for `workers` workers.
    pub fn new(ctx: QueueContext, workers: usize) -> Arc<Self> {
        let buckets = ctx.config.queue.queues.len() + 1;
        Arc::new(QueueShared {
            ctx,
            slots: (0..workers).map(|_| Mutex::new(Slot::default())).collect(),
            notify: Notify::new(),
            wake_pending: AtomicBool::new(false),
            maybe_more: AtomicBool::new(true),
            new_jobs: AtomicBool::new(true),
            // One bucket per configured queue, in priority order, plus one for any other queue.
            ready: Mutex::new(vec![VecDeque::new(); buckets]),
            finished: AtomicU64::new(0),
            rate: Mutex::new((Instant::now(), 0, 0.0)),
            dispatcher: Mutex::new(None),
            completer: Mutex::new(None),
            completions: Mutex::default(),
            flush_queued: AtomicBool::new(false),
            paused: Mutex::new(None),
            policies: Mutex::default(),
        })
    }

    /// The retry policy of `kind`, resolved once per kind (the config does not change while
    /// the node runs).
    pub fn policy(&self, kind: &str) -> Arc<JobPolicy> {
        let mut policies = self.policies.lock().expect("policies lock");
        if let Some(p) = policies.get(kind) {
            return p.clone();
        }
        let p = Arc::new(JobPolicy::resolve(kind, &self.ctx.config));
        policies.insert(kind.to_owned(), p.clone());
        p
    }

    /// Nodes sharing the database that heartbeat recently, this one included (0 before the
    /// reaper's first tick).
    pub fn live_nodes(&self) -> u64 {
        self.ctx.peers.live()
    }

    /// Set by the reaper after each heartbeat.
    pub(crate) fn set_live_nodes(&self, nodes: u64) {
        self.ctx.peers.set_live(nodes);
    }

    /// Workers whose actor is running now.
    pub fn running_workers(&self) -> usize {
        (0..self.slots.len())
            .filter(|i| self.slot(*i).worker.is_some())
            .count()
    }

    /// Workers holding a job now.
    pub fn busy_workers(&self) -> usize {
        (0..self.slots.len())
            .filter(|i| self.slot(*i).assigned.is_some())
            .count()
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

    /// Wake the dispatcher because jobs may have been added (NOTIFY, local enqueue).
    pub fn wake_for_new_jobs(&self) {
        self.new_jobs.store(true, Ordering::Relaxed);
        self.wake();
    }

    pub(crate) fn take_new_jobs(&self) -> bool {
        self.new_jobs.swap(false, Ordering::Relaxed)
    }

    /// Count a finished attempt (feeds the prefetch estimate).
    pub fn finished_one(&self) {
        self.finished.fetch_add(1, Ordering::Relaxed);
    }

    /// How many claimed jobs may wait in the ready buffer: ~100 ms of work at the recent
    /// completion rate, between one per worker and [`MAX_PREFETCH`].
    pub fn prefetch(&self) -> usize {
        let mut rate = self.rate.lock().expect("rate lock");
        let (at, count, per_s) = *rate;
        let elapsed = at.elapsed();
        if elapsed >= Duration::from_millis(50) {
            let now_count = self.finished.load(Ordering::Relaxed);
            let sample = (now_count - count) as f64 / elapsed.as_secs_f64();
            // Weighted towards the new sample: the rate of a queue changes quickly.
            *rate = (Instant::now(), now_count, 0.3 * per_s + 0.7 * sample);
        }
        let wanted = (rate.2 * 1.0) as usize;
        wanted.clamp(self.slots.len(), MAX_PREFETCH.max(self.slots.len()))
    }

    fn priority(&self, queue: &str) -> usize {
        let queues = &self.ctx.config.queue.queues;
        queues
            .iter()
            .position(|q| q == queue)
            .unwrap_or(queues.len())
    }

    /// Buffer claimed jobs, each behind the buffered jobs of its own queue.
    pub fn push_ready(&self, jobs: impl IntoIterator<Item = Job>) {
        let mut ready = self.ready.lock().expect("ready lock");
        for job in jobs {
            let p = self.priority(&job.queue);
            ready[p].push_back(job);
        }
    }

    /// The next buffered job, highest-priority queue first.
    pub fn pop_ready(&self) -> Option<Job> {
        self.ready
            .lock()
            .expect("ready lock")
            .iter_mut()
            .find_map(VecDeque::pop_front)
    }

    /// Jobs in the ready buffer.
    pub fn ready_len(&self) -> usize {
        self.ready
            .lock()
            .expect("ready lock")
            .iter()
            .map(VecDeque::len)
            .sum()
    }

    /// Priority index of the lowest-priority buffered job, if any.
    pub fn lowest_buffered(&self) -> Option<usize> {
        self.ready
            .lock()
            .expect("ready lock")
            .iter()
            .rposition(|b| !b.is_empty())
    }

    /// Remove up to `n` jobs from the lowest-priority end of the buffer.
    pub fn take_lowest(&self, n: usize) -> Vec<Job> {
        let mut ready = self.ready.lock().expect("ready lock");
        let mut out = Vec::new();
        for bucket in ready.iter_mut().rev() {
            while out.len() < n {
                match bucket.pop_back() {
                    Some(job) => out.push(job),
                    None => break,
                }
            }
        }
        out
    }

    /// Empty the buffer (graceful stop: these jobs go back without using up an attempt).
    pub fn drain_ready(&self) -> Vec<Job> {
        self.ready
            .lock()
            .expect("ready lock")
            .iter_mut()
            .flat_map(|b| b.drain(..))
            .collect()
    }

    /// Whether the last claim was full (more due jobs are likely).
    pub fn maybe_more(&self) -> bool {
        self.maybe_more.load(Ordering::Relaxed)
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

    /// Forget the dispatcher `me` if it is still the registered one: a stopping incarnation
    /// must not unregister a replacement that already started.
    pub fn unset_dispatcher(&self, me: &ActorRef<dispatcher::DispatcherMsg>) {
        let mut current = self.dispatcher.lock().expect("dispatcher lock");
        if current.as_ref().is_some_and(|d| d.get_id() == me.get_id()) {
            *current = None;
        }
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

    /// Forget the completer `me` if it is still the registered one (as `unset_dispatcher`).
    pub fn unset_completer(&self, me: &ActorRef<completer::CompleterMsg>) {
        let mut current = self.completer.lock().expect("completer lock");
        if current.as_ref().is_some_and(|c| c.get_id() == me.get_id()) {
            *current = None;
        }
    }

    /// Hand a result to the completer. It waits in the shared list until written, also when
    /// the completer is being stopped or restarted.
    pub fn complete(&self, completion: Completion) {
        self.completions
            .lock()
            .expect("completions lock")
            .push(completion);
        // One Flush in the completer's mailbox at a time; it takes everything pending.
        if !self.flush_queued.swap(true, Ordering::SeqCst) {
            let completer = self.completer.lock().expect("completer lock").clone();
            let queued = completer.is_some_and(|c| c.cast(completer::CompleterMsg::Flush).is_ok());
            if !queued {
                // No completer right now (being restarted): the results wait here and the
                // next incarnation writes them when it starts.
                self.flush_queued.store(false, Ordering::SeqCst);
            }
        }
    }

    /// Take up to `max` pending results, oldest first (the completer writes them).
    pub(crate) fn take_completions(&self, max: usize) -> Vec<Completion> {
        self.flush_queued.store(false, Ordering::SeqCst);
        let mut pending = self.completions.lock().expect("completions lock");
        let n = pending.len().min(max);
        pending.drain(..n).collect()
    }

    /// Put results back at the front after a failed write (nothing is dropped).
    pub(crate) fn return_completions(&self, batch: Vec<Completion>) {
        let mut pending = self.completions.lock().expect("completions lock");
        let rest = std::mem::take(&mut *pending);
        *pending = batch;
        pending.extend(rest);
    }

    /// Results waiting to be written.
    pub fn pending_completions(&self) -> usize {
        self.completions.lock().expect("completions lock").len()
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
                let fresh = match self.ctx.published.current() {
                    Some(b) => b.store.paused_queues().await.ok(),
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
        self.wake_for_new_jobs();
    }
}
