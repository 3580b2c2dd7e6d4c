//! The store contract, run against both implementations.
//!
//! Every case is one function taking a migrated [`TestDb`]; the `suite!` macro at the bottom
//! generates `sqlite::<case>` (a fresh temporary file) and `postgres::<case>` (a fresh
//! database created from `CHOM_TEST_PG_URL`, default
//! `postgres://postgres:postgres@127.0.0.1:5432/test`, and dropped afterwards) for each.

#![allow(
    clippy::too_many_lines,
    reason = "a test reads top to bottom as one scenario"
)]

mod common;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chom_core::alert::{Alert, AlertCounts, AlertStatus, AlertUpdate};
use chom_core::inventory::{NewSite, SiteStatus, Tier, VpsServer};
use chom_core::job::{Completion, Job, JobFilter, JobState, NewJob, QueueStats};
use chom_core::limits;
use chom_core::token::{Secret, TokenHash};
use chom_store::{Backend, NodeRecord, Store, StoreError};
use chrono::{DateTime, Utc};
use common::{Raw, TestDb};
use futures::StreamExt;

// === helpers ===

const NODE: &str = "node-a";

fn new_job(kind: &str, queue: &str) -> NewJob {
    NewJob {
        kind: kind.to_owned(),
        queue: queue.to_owned(),
        payload: r#"{"n":1}"#.to_owned(),
        max_attempts: None,
        timeout: None,
        delay: Duration::ZERO,
        unique_key: None,
    }
}

fn queues(names: &[&str]) -> Vec<String> {
    names.iter().map(|q| (*q).to_owned()).collect()
}

/// A timestamp with whole milliseconds, which both backends store exactly.
fn at_ms(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap()
}

fn assert_near(actual: DateTime<Utc>, expected: DateTime<Utc>, what: &str) {
    let diff = (actual - expected).num_milliseconds().abs();
    assert!(
        diff < 5_000,
        "{what}: {actual} is {diff} ms away from {expected}"
    );
}

async fn enqueue(s: &dyn Store, job: NewJob) -> i64 {
    let done = s.enqueue(&job).await.expect("enqueue");
    assert!(!done.existing, "a fresh job was inserted");
    done.id
}

async fn get(s: &dyn Store, id: i64) -> Job {
    s.job(id).await.expect("job").expect("job exists")
}

fn ids(jobs: &[Job]) -> Vec<i64> {
    jobs.iter().map(|j| j.id).collect()
}

/// Enqueue one job on `queue`, claim it, and return it reserved.
async fn reserved_job(s: &dyn Store, queue: &str) -> Job {
    let id = enqueue(s, new_job("noop", queue)).await;
    let claimed = s.claim(NODE, &queues(&[queue]), 1).await.unwrap();
    assert_eq!(ids(&claimed), vec![id]);
    claimed.into_iter().next().unwrap()
}

fn retry(id: i64, error: &str, available_at: DateTime<Utc>) -> Completion {
    Completion::Retry {
        id,
        error: error.to_owned(),
        available_at,
    }
}

/// Apply one completion and read its job back.
async fn complete_one(s: &dyn Store, completion: Completion) -> Job {
    let id = completion.id();
    s.complete(NODE, &[completion]).await.unwrap();
    get(s, id).await
}

/// Claim up to `limit` jobs of `queue` as [`NODE`]; their ids.
async fn claim_ids(s: &dyn Store, queue: &str, limit: u32) -> Vec<i64> {
    ids(&s.claim(NODE, &queues(&[queue]), limit).await.unwrap())
}

/// Reserve two jobs on `queue` and finish them: the first completed, the second failed with
/// `error`. Returns their ids.
async fn completed_and_failed(s: &dyn Store, queue: &str, error: &str) -> (i64, i64) {
    let done = reserved_job(s, queue).await.id;
    let failed = reserved_job(s, queue).await.id;
    s.complete(
        NODE,
        &[
            Completion::Completed { id: done },
            Completion::Fail {
                id: failed,
                error: error.to_owned(),
            },
        ],
    )
    .await
    .unwrap();
    (done, failed)
}

fn node(name: &str) -> NodeRecord {
    NodeRecord {
        name: name.to_owned(),
        hostname: "test-host".to_owned(),
        pid: 42,
        version: "0.0.0-test".to_owned(),
        instance: format!("{name}-instance"),
    }
}

// === cases ===

async fn migrate_is_idempotent(db: &TestDb) {
    let s = db.store();
    s.migrate().await.expect("second migrate");
    s.migrate().await.expect("third migrate");
    let expected = if db.is_pg() {
        Backend::Postgres
    } else {
        Backend::Sqlite
    };
    assert_eq!(s.backend(), expected);
    s.ping().await.expect("ping");
    let id = enqueue(s, new_job("noop", "default")).await;
    assert_eq!(get(s, id).await.state, JobState::Pending);
}

/// A batch is stored in order in one transaction, each job as a single enqueue would store
/// it: unique keys held before or earlier in the batch answer their holder, and one invalid
/// job refuses the whole batch.
async fn enqueue_many_stores_a_batch_in_order(db: &TestDb) {
    let s = db.store();
    let held = s
        .enqueue(&NewJob {
            unique_key: Some("held".to_owned()),
            ..new_job("noop", "low")
        })
        .await
        .unwrap();
    let keyed = |key: &str| NewJob {
        unique_key: Some(key.to_owned()),
        ..new_job("noop", "default")
    };
    let mut first = new_job("vps.exec", "high");
    first.max_attempts = Some(4);
    first.timeout = Some(Duration::from_secs(9));
    first.delay = Duration::from_secs(60);
    let batch = vec![
        first.clone(),
        keyed("k1"),
        keyed("held"),
        keyed("k1"),
        new_job("noop", "default"),
    ];
    let answers = s.enqueue_many(&batch).await.unwrap();
    assert_eq!(answers.len(), 5);
    assert!(!answers[0].existing && !answers[1].existing && !answers[4].existing);
    assert!(
        answers[0].id < answers[1].id && answers[1].id < answers[4].id,
        "{answers:?}"
    );
    assert_eq!(
        (
            answers[2].id,
            answers[2].existing,
            answers[2].queue.as_str()
        ),
        (held.id, true, "low")
    );
    assert_eq!((answers[3].id, answers[3].existing), (answers[1].id, true));
    let stored = get(s, answers[0].id).await;
    assert_eq!(
        (
            stored.kind.as_str(),
            stored.queue.as_str(),
            stored.max_attempts,
            stored.timeout_ms
        ),
        ("vps.exec", "high", Some(4), Some(9_000))
    );
    let delay = stored.available_at - stored.created_at;
    assert!((delay.num_milliseconds() - 60_000).abs() < 1_000, "{delay}");
    assert_eq!(db.count("jobs").await, 4, "the held job and three new ones");

    let mut bad = new_job("noop", "default");
    bad.max_attempts = Some(0);
    match s.enqueue_many(&[new_job("noop", "default"), bad]).await {
        Err(StoreError::Invalid(why)) => assert!(why.contains("jobs[1]"), "{why}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    let too_many = vec![new_job("noop", "default"); chom_core::limits::MAX_ENQUEUE_BATCH + 1];
    assert!(matches!(
        s.enqueue_many(&too_many).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(db.count("jobs").await, 4, "refused batches store nothing");

    let full = vec![new_job("noop", "default"); chom_core::limits::MAX_ENQUEUE_BATCH];
    let answers = s.enqueue_many(&full).await.unwrap();
    assert!(answers.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(
        db.count("jobs").await,
        4 + chom_core::limits::MAX_ENQUEUE_BATCH as i64
    );
    assert!(s.enqueue_many(&[]).await.unwrap().is_empty());
}

async fn enqueue_round_trips_every_field(db: &TestDb) {
    let s = db.store();
    let before = Utc::now();
    let job = NewJob {
        kind: "vps.exec".to_owned(),
        queue: "high".to_owned(),
        payload: r#"{"vps": 7, "command": "site:create", "args": ["a b", "'c'"]}"#.to_owned(),
        max_attempts: Some(7),
        timeout: Some(Duration::from_millis(1_500)),
        delay: Duration::from_secs(3_600),
        unique_key: Some("site:7".to_owned()),
    };
    let id = enqueue(s, job.clone()).await;
    let stored = get(s, id).await;
    assert_eq!(stored.id, id);
    assert_eq!(stored.queue, job.queue);
    assert_eq!(stored.kind, job.kind);
    assert_eq!(stored.payload, job.payload);
    assert_eq!(stored.attempts, 0);
    assert_eq!(stored.max_attempts, Some(7));
    assert_eq!(stored.timeout_ms, Some(1_500));
    assert_eq!(stored.state, JobState::Pending);
    assert_eq!(stored.unique_key.as_deref(), Some("site:7"));
    assert_eq!(stored.last_error, None);
    assert_eq!(stored.reserved_at, None);
    assert_eq!(stored.reserved_by, None);
    assert_eq!(stored.finished_at, None);
    assert_near(stored.created_at, before, "created_at");
    let delay = stored.available_at - stored.created_at;
    assert!(
        (delay.num_milliseconds() - 3_600_000).abs() < 1_000,
        "available_at is created_at + 1h, got {delay}"
    );

    // Defaults: no overrides, due at once.
    let plain = get(s, enqueue(s, new_job("noop", "default")).await).await;
    assert_eq!(plain.max_attempts, None);
    assert_eq!(plain.timeout_ms, None);
    assert_eq!(plain.unique_key, None);
    assert!(plain.available_at <= plain.created_at + chrono::Duration::milliseconds(1));
    assert!(plain.id > id, "ids increase");

    assert_eq!(s.job(id + 1_000).await.unwrap(), None);
}

async fn unique_key_dedupes_until_finished(db: &TestDb) {
    let s = db.store();
    let mut job = new_job("site.provision", "high");
    job.unique_key = Some("site:1".to_owned());
    let first = s.enqueue(&job).await.unwrap();
    assert!(!first.existing);
    let second = s.enqueue(&job).await.unwrap();
    assert_eq!((second.id, second.existing), (first.id, true));

    // Another key, and no key at all, are separate jobs.
    let mut other = job.clone();
    other.unique_key = Some("site:2".to_owned());
    assert!(!s.enqueue(&other).await.unwrap().existing);
    let a = enqueue(s, new_job("noop", "high")).await;
    let b = enqueue(s, new_job("noop", "high")).await;
    assert_ne!(a, b);

    // Still deduplicated while reserved.
    let claimed = s.claim(NODE, &queues(&["high"]), 1).await.unwrap();
    assert_eq!(ids(&claimed), vec![first.id]);
    let again = s.enqueue(&job).await.unwrap();
    assert_eq!((again.id, again.existing), (first.id, true));

    // Once it completed, the key is free.
    s.complete(NODE, &[Completion::Completed { id: first.id }])
        .await
        .unwrap();
    let fresh = s.enqueue(&job).await.unwrap();
    assert!(!fresh.existing);
    assert_ne!(fresh.id, first.id);
    // And after a failure too.
    s.claim(NODE, &queues(&["high"]), 10).await.unwrap();
    s.complete(
        NODE,
        &[Completion::Fail {
            id: fresh.id,
            error: "gone".into(),
        }],
    )
    .await
    .unwrap();
    let third = s.enqueue(&job).await.unwrap();
    assert!(!third.existing);
    assert!(third.id > fresh.id);
}

async fn concurrent_enqueues_of_one_key_yield_one_job(db: &TestDb) {
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = Arc::clone(&db.store);
        tasks.push(tokio::spawn(async move {
            let mut job = new_job("site.provision", "high");
            job.unique_key = Some("race".to_owned());
            store.enqueue(&job).await.expect("enqueue")
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let distinct: HashSet<i64> = results.iter().map(|r| r.id).collect();
    assert_eq!(distinct.len(), 1, "one job for the key: {results:?}");
    assert_eq!(results.iter().filter(|r| !r.existing).count(), 1);
    assert_eq!(db.count("jobs").await, 1);
}

async fn delayed_jobs_are_not_claimed_until_due(db: &TestDb) {
    let s = db.store();
    let mut later = new_job("noop", "default");
    later.delay = Duration::from_secs(3_600);
    let later = enqueue(s, later).await;
    let q = queues(&["default"]);
    assert!(s.claim(NODE, &q, 10).await.unwrap().is_empty());

    // Due once available_at has passed (moved by hand rather than waiting an hour).
    db.set_job_time(
        later,
        "available_at",
        Utc::now() - chrono::Duration::seconds(1),
    )
    .await;
    assert_eq!(ids(&s.claim(NODE, &q, 10).await.unwrap()), vec![later]);

    // A short real delay on the database clock: not claimable at once, claimable later.
    let mut soon = new_job("noop", "default");
    soon.delay = Duration::from_millis(1_500);
    let soon = enqueue(s, soon).await;
    assert!(s.claim(NODE, &q, 10).await.unwrap().is_empty());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let claimed = loop {
        let claimed = s.claim(NODE, &q, 10).await.unwrap();
        if !claimed.is_empty() {
            break claimed;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "delayed job never due"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(ids(&claimed), vec![soon]);
    let job = &claimed[0];
    assert!(job.reserved_at.unwrap() >= job.available_at);
}

async fn claim_is_strict_priority(db: &TestDb) {
    let s = db.store();
    // Oldest first in the lowest queue, newest in the highest: priority beats age.
    let low: Vec<i64> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(enqueue(s, new_job("noop", "low")).await);
        }
        v
    };
    let default1 = enqueue(s, new_job("noop", "default")).await;
    let default2 = enqueue(s, new_job("noop", "default")).await;
    let high1 = enqueue(s, new_job("noop", "high")).await;
    let high2 = enqueue(s, new_job("noop", "high")).await;
    // Within a queue: oldest available_at first, whatever the id.
    db.set_job_time(
        high2,
        "available_at",
        Utc::now() - chrono::Duration::minutes(5),
    )
    .await;
    let order = queues(&["critical", "high", "default", "low"]);

    let first = s.claim(NODE, &order, 3).await.unwrap();
    assert_eq!(ids(&first), vec![high2, high1, default1]);
    let second = s.claim(NODE, &order, 10).await.unwrap();
    let mut expected = vec![default2];
    expected.extend(&low);
    assert_eq!(ids(&second), expected);
    assert!(s.claim(NODE, &order, 10).await.unwrap().is_empty());

    // A queue left out of the list is not read (this is how paused queues are skipped).
    let other = enqueue(s, new_job("noop", "batch")).await;
    assert!(s.claim(NODE, &order, 10).await.unwrap().is_empty());
    assert_eq!(
        ids(&s.claim(NODE, &queues(&["batch"]), 10).await.unwrap()),
        vec![other]
    );
}

async fn claim_respects_limit(db: &TestDb) {
    let s = db.store();
    db.bulk_insert("default", 10).await;
    let q = queues(&["default"]);
    assert!(s.claim(NODE, &q, 0).await.unwrap().is_empty());
    assert!(s.claim(NODE, &[], 5).await.unwrap().is_empty());
    let four = s.claim(NODE, &q, 4).await.unwrap();
    assert_eq!(four.len(), 4);
    let rest = s.claim(NODE, &q, 100).await.unwrap();
    assert_eq!(rest.len(), 6);
    let all: BTreeSet<i64> = ids(&four).into_iter().chain(ids(&rest)).collect();
    assert_eq!(all.len(), 10);
    assert!(
        ids(&four).iter().max() < ids(&rest).iter().min(),
        "oldest first"
    );
}

async fn claim_reserves_and_counts_attempts(db: &TestDb) {
    let s = db.store();
    let before = Utc::now();
    let id = enqueue(s, new_job("noop", "default")).await;
    let claimed = s.claim("node-x", &queues(&["default"]), 5).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let job = &claimed[0];
    assert_eq!(job.id, id);
    assert_eq!(job.state, JobState::Reserved);
    assert_eq!(job.attempts, 1);
    assert_eq!(job.reserved_by.as_deref(), Some("node-x"));
    assert_near(job.reserved_at.expect("reserved_at"), before, "reserved_at");
    assert_eq!(&get(s, id).await, job, "returned row is the stored row");

    // A retry keeps the count, the next claim adds one.
    s.complete(
        "node-x",
        &[Completion::Retry {
            id,
            error: "first".into(),
            available_at: at_ms(Utc::now() - chrono::Duration::seconds(1)),
        }],
    )
    .await
    .unwrap();
    let again = s.claim("node-y", &queues(&["default"]), 5).await.unwrap();
    assert_eq!(again[0].attempts, 2);
    assert_eq!(again[0].reserved_by.as_deref(), Some("node-y"));

    // A late result from node-x (its job was taken over by node-y) changes nothing, whatever
    // it says; node-y's own result is applied.
    for late in [
        Completion::Completed { id },
        Completion::Fail {
            id,
            error: "late".into(),
        },
        Completion::Release { id },
    ] {
        s.complete("node-x", &[late]).await.unwrap();
        let row = get(s, id).await;
        assert_eq!(
            (row.state, row.reserved_by.as_deref()),
            (JobState::Reserved, Some("node-y"))
        );
    }
    assert_eq!(
        db.count("failed_jobs").await,
        0,
        "no dead letter from the late result"
    );
    s.complete("node-y", &[Completion::Completed { id }])
        .await
        .unwrap();
    assert_eq!(get(s, id).await.state, JobState::Completed);
}

async fn concurrent_claimers_never_share_a_job(db: &TestDb) {
    const JOBS: i64 = 2_000;
    db.bulk_insert("default", JOBS / 2).await;
    db.bulk_insert("low", JOBS / 2).await;
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let store = Arc::clone(&db.store);
        tasks.push(tokio::spawn(async move {
            let name = format!("claimer-{worker}");
            let q = queues(&["default", "low"]);
            let mut mine = Vec::new();
            loop {
                let batch = store.claim(&name, &q, 25).await.expect("claim");
                if batch.is_empty() {
                    break;
                }
                for job in batch {
                    assert_eq!(job.reserved_by.as_deref(), Some(name.as_str()));
                    assert_eq!(job.attempts, 1);
                    mine.push(job.id);
                }
            }
            mine
        }));
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    for t in tasks {
        for id in t.await.unwrap() {
            total += 1;
            assert!(seen.insert(id), "job {id} claimed twice");
        }
    }
    assert_eq!(total, JOBS as usize);
    let stats = db
        .store()
        .queue_stats(&queues(&["default", "low"]))
        .await
        .unwrap();
    assert_eq!(stats.iter().map(|q| q.reserved).sum::<u64>(), JOBS as u64);
    assert_eq!(stats.iter().map(|q| q.ready).sum::<u64>(), 0);
}

async fn complete_completed_keeps_last_error(db: &TestDb) {
    let s = db.store();
    let job = reserved_job(s, "default").await;
    s.complete(
        NODE,
        &[Completion::Retry {
            id: job.id,
            error: "flaky".into(),
            available_at: at_ms(Utc::now() - chrono::Duration::seconds(1)),
        }],
    )
    .await
    .unwrap();
    s.claim(NODE, &queues(&["default"]), 1).await.unwrap();
    let before = Utc::now();
    let done = complete_one(s, Completion::Completed { id: job.id }).await;
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(done.attempts, 2);
    assert_eq!(done.last_error.as_deref(), Some("flaky"));
    assert_near(
        done.finished_at.expect("finished_at"),
        before,
        "finished_at",
    );
    assert_eq!(db.count("failed_jobs").await, 0);
}

async fn complete_retry_reschedules(db: &TestDb) {
    let s = db.store();
    let job = reserved_job(s, "default").await;
    let when = at_ms(Utc::now() + chrono::Duration::minutes(10));
    let retried = complete_one(s, retry(job.id, "connection refused", when)).await;
    assert_eq!(retried.state, JobState::Pending);
    assert_eq!(retried.available_at, when);
    assert_eq!(retried.last_error.as_deref(), Some("connection refused"));
    assert_eq!(retried.reserved_at, None);
    assert_eq!(retried.reserved_by, None);
    assert_eq!(retried.attempts, 1);
    assert_eq!(retried.finished_at, None);
    assert_eq!(claim_ids(s, "default", 5).await, Vec::<i64>::new());
}

async fn complete_fail_writes_failed_job(db: &TestDb) {
    let s = db.store();
    let mut new = new_job("vps.exec", "high");
    new.max_attempts = Some(2);
    new.timeout = Some(Duration::from_secs(9));
    let id = enqueue(s, new).await;
    s.claim(NODE, &queues(&["high"]), 1).await.unwrap();
    let before = Utc::now();
    s.complete(
        NODE,
        &[Completion::Fail {
            id,
            error: "exit status 3: site exists".into(),
        }],
    )
    .await
    .unwrap();
    let failed = get(s, id).await;
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(
        failed.last_error.as_deref(),
        Some("exit status 3: site exists")
    );
    assert_near(
        failed.finished_at.expect("finished_at"),
        before,
        "finished_at",
    );

    let dead = s.failed_jobs(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    let row = &dead[0];
    assert_eq!(row.job_id, id);
    assert_eq!(row.connection, "database");
    assert_eq!(row.queue, "high");
    assert_eq!(row.kind, "vps.exec");
    assert_eq!(row.payload, r#"{"n":1}"#);
    assert_eq!(row.exception, "exit status 3: site exists");
    assert_eq!(row.attempts, 1);
    assert_near(row.failed_at, before, "failed_at");
    // A version 4 UUID in canonical text form.
    let u = row.uuid.as_bytes();
    assert_eq!(row.uuid.len(), 36, "uuid {}", row.uuid);
    assert_eq!(
        (u[8], u[13], u[14], u[18], u[23]),
        (b'-', b'-', b'4', b'-', b'-')
    );
    assert!(
        matches!(u[19], b'8' | b'9' | b'a' | b'b'),
        "variant of {}",
        row.uuid
    );
    assert!(row.uuid.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
}

async fn complete_release_restores_attempts(db: &TestDb) {
    let s = db.store();
    let job = reserved_job(s, "default").await;
    assert_eq!(job.attempts, 1);
    let released = complete_one(s, Completion::Release { id: job.id }).await;
    assert_eq!(released.state, JobState::Pending);
    assert_eq!(released.attempts, 0);
    assert_eq!(released.reserved_at, None);
    assert_eq!(released.reserved_by, None);
    assert!(released.available_at <= Utc::now());
    let again = s.claim(NODE, &queues(&["default"]), 1).await.unwrap();
    assert_eq!(ids(&again), vec![job.id]);
    assert_eq!(again[0].attempts, 1);
}

async fn complete_defer_reschedules_without_using_an_attempt(db: &TestDb) {
    let s = db.store();
    let job = reserved_job(s, "default").await;
    assert_eq!(job.attempts, 1);
    let later = at_ms(Utc::now() + chrono::Duration::hours(1));
    let deferred = complete_one(
        s,
        Completion::Defer {
            id: job.id,
            error: "too many concurrent operations on web-1".into(),
            available_at: later,
        },
    )
    .await;
    assert_eq!(deferred.state, JobState::Pending);
    assert_eq!(deferred.attempts, 0);
    assert_eq!(deferred.available_at, later);
    assert_eq!(
        deferred.last_error.as_deref(),
        Some("too many concurrent operations on web-1")
    );
    assert_eq!(deferred.reserved_by, None);
    // Not due yet; a retry in the same batch shape still counts its attempt.
    assert_eq!(claim_ids(s, "default", 1).await, Vec::<i64>::new());
    let other = reserved_job(s, "default").await;
    let retried = complete_one(s, retry(other.id, "boom", later)).await;
    assert_eq!(retried.attempts, 1);
}

async fn complete_applies_a_mixed_batch(db: &TestDb) {
    let s = db.store();
    let q = queues(&["default"]);
    let mut all = Vec::new();
    for _ in 0..8 {
        all.push(enqueue(s, new_job("noop", "default")).await);
    }
    assert_eq!(s.claim(NODE, &q, 8).await.unwrap().len(), 8);
    let later = at_ms(Utc::now() + chrono::Duration::hours(1));
    s.complete(
        NODE,
        &[
            Completion::Completed { id: all[0] },
            Completion::Retry {
                id: all[1],
                error: "r1".into(),
                available_at: later,
            },
            Completion::Fail {
                id: all[2],
                error: "f1".into(),
            },
            Completion::Release { id: all[3] },
            Completion::Completed { id: all[4] },
            Completion::Fail {
                id: all[5],
                error: "f2 with 'quotes' and \"json\" \\ ".into(),
            },
            Completion::Retry {
                id: all[6],
                error: "r2".into(),
                available_at: later,
            },
            Completion::Release { id: all[7] },
        ],
    )
    .await
    .unwrap();
    let states: Vec<(JobState, u32, Option<String>)> = {
        let mut v = Vec::new();
        for id in &all {
            let j = get(s, *id).await;
            v.push((j.state, j.attempts, j.last_error));
        }
        v
    };
    use JobState::*;
    assert_eq!(
        states,
        vec![
            (Completed, 1, None),
            (Pending, 1, Some("r1".into())),
            (Failed, 1, Some("f1".into())),
            (Pending, 0, None),
            (Completed, 1, None),
            (Failed, 1, Some("f2 with 'quotes' and \"json\" \\ ".into())),
            (Pending, 1, Some("r2".into())),
            (Pending, 0, None),
        ]
    );
    let mut dead: Vec<(i64, String)> = s
        .failed_jobs(10)
        .await
        .unwrap()
        .into_iter()
        .map(|f| (f.job_id, f.exception))
        .collect();
    dead.sort();
    assert_eq!(
        dead,
        vec![
            (all[2], "f1".to_owned()),
            (all[5], "f2 with 'quotes' and \"json\" \\ ".to_owned())
        ]
    );
    // Only the two released jobs are due again.
    let mut due = ids(&s.claim(NODE, &q, 10).await.unwrap());
    due.sort();
    assert_eq!(due, vec![all[3], all[7]]);
}

async fn complete_only_changes_reserved_rows(db: &TestDb) {
    let s = db.store();
    let pending = enqueue(s, new_job("noop", "batch")).await;
    let done = reserved_job(s, "default").await.id;
    s.complete(NODE, &[Completion::Completed { id: done }])
        .await
        .unwrap();
    let pending_before = get(s, pending).await;
    let done_before = get(s, done).await;

    for id in [pending, done] {
        s.complete(
            NODE,
            &[Completion::Retry {
                id,
                error: "late".into(),
                available_at: at_ms(Utc::now() + chrono::Duration::hours(1)),
            }],
        )
        .await
        .unwrap();
        s.complete(
            NODE,
            &[Completion::Fail {
                id,
                error: "late".into(),
            }],
        )
        .await
        .unwrap();
        s.complete(NODE, &[Completion::Release { id }])
            .await
            .unwrap();
        s.complete(NODE, &[Completion::Completed { id }])
            .await
            .unwrap();
    }
    assert_eq!(get(s, pending).await, pending_before);
    assert_eq!(get(s, done).await, done_before);
    assert_eq!(db.count("failed_jobs").await, 0);
    // Unknown ids and an empty batch are no-ops.
    s.complete(NODE, &[Completion::Completed { id: 999_999 }])
        .await
        .unwrap();
    s.complete(NODE, &[]).await.unwrap();
}

async fn plain_sql_insert_is_claimable(db: &TestDb) {
    let s = db.store();
    let id = db.plain_insert("default", "noop", "{}").await;
    let stored = get(s, id).await;
    assert_eq!(stored.state, JobState::Pending);
    assert_eq!(stored.attempts, 0);
    assert_eq!(stored.max_attempts, None);
    assert_eq!(stored.unique_key, None);
    assert_near(stored.available_at, Utc::now(), "available_at default");
    assert_near(stored.created_at, Utc::now(), "created_at default");
    let claimed = s.claim(NODE, &queues(&["default"]), 10).await.unwrap();
    assert_eq!(ids(&claimed), vec![id]);
    assert_eq!(claimed[0].kind, "noop");
    assert_eq!(claimed[0].payload, "{}");
    // The queue column defaults to 'default' too.
    db.exec(
        "INSERT INTO jobs (kind, payload) VALUES ('noop', '[]')",
        "INSERT INTO jobs (kind, payload) VALUES ('noop', '[]')",
    )
    .await;
    let claimed = s.claim(NODE, &queues(&["default"]), 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].payload, "[]");
}

async fn bad_json_payload_is_stored_as_is(db: &TestDb) {
    let s = db.store();
    let payload = "{not json at all, \u{e9}t\u{e9}: 'x' \\ }".to_owned();
    let mut job = new_job("vps.exec", "default");
    job.payload = payload.clone();
    let id = enqueue(s, job).await;
    assert_eq!(get(s, id).await.payload, payload);
    let claimed = s.claim(NODE, &queues(&["default"]), 1).await.unwrap();
    assert_eq!(claimed[0].payload, payload);
    s.complete(
        NODE,
        &[Completion::Fail {
            id,
            error: "invalid payload: key must be a string at line 1 column 2".into(),
        }],
    )
    .await
    .unwrap();
    assert_eq!(s.failed_jobs(1).await.unwrap()[0].payload, payload);
}

async fn pause_and_resume_queues(db: &TestDb) {
    let s = db.store();
    assert!(s.paused_queues().await.unwrap().is_empty());
    s.pause_queue("low").await.unwrap();
    s.pause_queue("low").await.unwrap();
    s.pause_queue("batch").await.unwrap();
    assert_eq!(s.paused_queues().await.unwrap(), queues(&["batch", "low"]));
    s.resume_queue("low").await.unwrap();
    s.resume_queue("low").await.unwrap();
    s.resume_queue("never-paused").await.unwrap();
    assert_eq!(s.paused_queues().await.unwrap(), queues(&["batch"]));
    let stats = s.queue_stats(&queues(&["low", "batch"])).await.unwrap();
    let paused: Vec<(String, bool)> = stats.into_iter().map(|q| (q.queue, q.paused)).collect();
    assert_eq!(
        paused,
        vec![("low".to_owned(), false), ("batch".to_owned(), true)]
    );
}

async fn queue_stats_counts_every_state(db: &TestDb) {
    let s = db.store();
    // default: 2 ready, 1 delayed, 1 reserved, 1 completed, 1 failed.
    completed_and_failed(s, "default", "x").await;
    reserved_job(s, "default").await;
    enqueue(s, new_job("noop", "default")).await;
    enqueue(s, new_job("noop", "default")).await;
    let mut delayed = new_job("noop", "default");
    delayed.delay = Duration::from_secs(600);
    enqueue(s, delayed).await;
    // A queue not configured, with rows.
    enqueue(s, new_job("noop", "custom")).await;
    s.pause_queue("empty").await.unwrap();

    let stats = s
        .queue_stats(&queues(&["high", "default", "empty"]))
        .await
        .unwrap();
    let row = |queue: &str, ready, delayed, reserved, completed, failed, paused| QueueStats {
        queue: queue.to_owned(),
        ready,
        delayed,
        reserved,
        completed,
        failed,
        paused,
    };
    assert_eq!(
        stats,
        vec![
            row("high", 0, 0, 0, 0, 0, false),
            row("default", 2, 1, 1, 1, 1, false),
            row("empty", 0, 0, 0, 0, 0, true),
            row("custom", 1, 0, 0, 0, 0, false),
        ]
    );
}

async fn jobs_lists_newest_first_with_filters(db: &TestDb) {
    let s = db.store();
    let a = enqueue(s, new_job("noop", "default")).await;
    let b = enqueue(s, new_job("noop", "high")).await;
    let c = enqueue(s, new_job("noop", "default")).await;
    s.claim(NODE, &queues(&["high"]), 1).await.unwrap();
    let list = |queue: Option<&str>, state: Option<JobState>, limit: u32| JobFilter {
        queue: queue.map(str::to_owned),
        state,
        limit,
    };
    assert_eq!(
        ids(&s.jobs(&list(None, None, 10)).await.unwrap()),
        vec![c, b, a]
    );
    assert_eq!(
        ids(&s.jobs(&list(None, None, 2)).await.unwrap()),
        vec![c, b]
    );
    assert_eq!(
        ids(&s.jobs(&list(Some("default"), None, 10)).await.unwrap()),
        vec![c, a]
    );
    assert_eq!(
        ids(&s
            .jobs(&list(None, Some(JobState::Reserved), 10))
            .await
            .unwrap()),
        vec![b]
    );
    assert!(
        s.jobs(&list(Some("default"), Some(JobState::Reserved), 10))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn release_node_returns_its_reservations(db: &TestDb) {
    let s = db.store();
    db.bulk_insert("default", 3).await;
    let q = queues(&["default"]);
    let mine = s.claim("restarted", &q, 2).await.unwrap();
    let theirs = s.claim("other", &q, 1).await.unwrap();
    assert_eq!(s.release_node("restarted").await.unwrap(), 2);
    for job in &mine {
        let j = get(s, job.id).await;
        assert_eq!(j.state, JobState::Pending);
        assert_eq!(j.attempts, 1, "the consumed attempt stays counted");
        assert_eq!((j.reserved_at, j.reserved_by), (None, None));
        assert!(j.available_at <= Utc::now() + chrono::Duration::seconds(1));
    }
    let other = get(s, theirs[0].id).await;
    assert_eq!(other.state, JobState::Reserved);
    assert_eq!(other.reserved_by.as_deref(), Some("other"));
    assert_eq!(s.release_node("restarted").await.unwrap(), 0);
    assert_eq!(s.claim("restarted", &q, 10).await.unwrap().len(), 2);
}

/// Enqueue a job and claim it as `name`, optionally backdating the reservation.
async fn reserve_as(db: &TestDb, name: &str, reserved_at: Option<DateTime<Utc>>) -> i64 {
    let s = db.store();
    let id = enqueue(s, new_job("noop", "default")).await;
    let claimed = s.claim(name, &queues(&["default"]), 1).await.unwrap();
    assert_eq!(ids(&claimed), vec![id]);
    if let Some(at) = reserved_at {
        db.set_job_time(id, "reserved_at", at).await;
    }
    id
}

async fn rescue_expired_takes_only_dead_nodes_stale_jobs(db: &TestDb) {
    let s = db.store();
    let now = Utc::now();
    let cutoff = now - chrono::Duration::minutes(3);
    let long_ago = now - chrono::Duration::minutes(10);
    for name in ["me", "alive", "dead"] {
        s.register_node(&node(name)).await.unwrap();
    }
    s.heartbeat("alive", Utc::now(), 0).await.unwrap();
    db.set_seen_at("dead", long_ago).await;

    let mine = reserve_as(db, "me", Some(long_ago)).await;
    let alive = reserve_as(db, "alive", Some(long_ago)).await;
    let dead_stale = reserve_as(db, "dead", Some(long_ago)).await;
    let dead_fresh = reserve_as(db, "dead", None).await;
    let ghost = reserve_as(db, "ghost", Some(long_ago)).await; // never registered

    let dead_recent = reserve_as(db, "dead", Some(now - chrono::Duration::minutes(4))).await;

    assert_eq!(s.rescue_expired(cutoff, "me").await.unwrap(), 3);
    for id in [dead_stale, ghost, dead_recent] {
        let j = get(s, id).await;
        assert_eq!(j.state, JobState::Pending, "job {id} rescued");
        assert_eq!(j.attempts, 1);
        assert_eq!((j.reserved_at, j.reserved_by), (None, None));
    }
    for id in [mine, alive, dead_fresh] {
        assert_eq!(get(s, id).await.state, JobState::Reserved, "job {id} kept");
    }
    assert_eq!(s.rescue_expired(cutoff, "me").await.unwrap(), 0);
}

async fn kill_stuck_fails_old_reservations(db: &TestDb) {
    let s = db.store();
    let pending = enqueue(s, new_job("noop", "default")).await;
    let old = reserved_job(s, "high").await.id;
    let fresh = reserved_job(s, "high").await.id;
    db.set_job_time(old, "reserved_at", Utc::now() - chrono::Duration::hours(2))
        .await;
    let killed = s
        .kill_stuck(
            Utc::now() - chrono::Duration::hours(1),
            "stuck for more than 1h",
        )
        .await
        .unwrap();
    assert_eq!(killed, vec![old]);
    let j = get(s, old).await;
    assert_eq!(j.state, JobState::Failed);
    assert_eq!(j.last_error.as_deref(), Some("stuck for more than 1h"));
    assert!(j.finished_at.is_some());
    let dead = s.failed_jobs(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].job_id, dead[0].exception.as_str(), dead[0].attempts),
        (old, "stuck for more than 1h", 1)
    );
    assert_eq!(get(s, fresh).await.state, JobState::Reserved);
    assert_eq!(get(s, pending).await.state, JobState::Pending);
    // The late completion of the killed job changes nothing.
    s.complete(NODE, &[Completion::Completed { id: old }])
        .await
        .unwrap();
    assert_eq!(get(s, old).await.state, JobState::Failed);
}

async fn prune_jobs_keeps_pending_and_reserved(db: &TestDb) {
    let s = db.store();
    let pending = enqueue(s, new_job("noop", "batch")).await;
    let reserved = reserved_job(s, "default").await.id;
    let (done, failed) = completed_and_failed(s, "low", "e").await;
    assert_eq!(
        s.prune_jobs(Utc::now() - chrono::Duration::hours(1))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        s.prune_jobs(Utc::now() + chrono::Duration::minutes(1))
            .await
            .unwrap(),
        2
    );
    assert!(s.job(done).await.unwrap().is_none());
    assert!(s.job(failed).await.unwrap().is_none());
    assert_eq!(get(s, pending).await.state, JobState::Pending);
    assert_eq!(get(s, reserved).await.state, JobState::Reserved);
    // The dead letter outlives its pruned job.
    assert_eq!(s.failed_jobs(10).await.unwrap().len(), 1);
}

/// Fail a fresh job of `kind` with `error`; returns the job id.
async fn fail_one(s: &dyn Store, kind: &str, error: &str) -> i64 {
    let mut job = new_job(kind, "default");
    job.max_attempts = Some(4);
    job.timeout = Some(Duration::from_millis(2_500));
    job.payload = format!(r#"{{"kind":"{kind}"}}"#);
    job.unique_key = Some(format!("{kind}:{error}"));
    let id = enqueue(s, job).await;
    let claimed = s.claim(NODE, &queues(&["default"]), 1).await.unwrap();
    assert_eq!(ids(&claimed), vec![id]);
    s.complete(
        NODE,
        &[Completion::Fail {
            id,
            error: error.to_owned(),
        }],
    )
    .await
    .unwrap();
    id
}

async fn failed_jobs_list_and_retry(db: &TestDb) {
    let s = db.store();
    let j1 = fail_one(s, "a", "e1").await;
    let j2 = fail_one(s, "a", "e2").await;
    let j3 = fail_one(s, "b", "e3").await;
    let listed = s.failed_jobs(10).await.unwrap();
    assert_eq!(
        listed.iter().map(|f| f.job_id).collect::<Vec<_>>(),
        vec![j3, j2, j1],
        "newest first"
    );
    assert_eq!(s.failed_jobs(2).await.unwrap().len(), 2);
    let uuids: HashSet<&str> = listed.iter().map(|f| f.uuid.as_str()).collect();
    assert_eq!(uuids.len(), 3);

    // One by failed_jobs id.
    let target = listed.iter().find(|f| f.job_id == j2).unwrap();
    let new_ids = s.retry_failed(Some(target.id)).await.unwrap();
    assert_eq!(new_ids.len(), 1);
    let again = get(s, new_ids[0]).await;
    assert!(again.id > j3);
    assert_eq!(again.state, JobState::Pending);
    assert_eq!(again.attempts, 0);
    assert_eq!(again.kind, "a");
    assert_eq!(again.queue, "default");
    assert_eq!(again.payload, r#"{"kind":"a"}"#);
    assert_eq!(again.max_attempts, Some(4));
    assert_eq!(again.timeout_ms, Some(2_500));
    assert_eq!(again.unique_key, None);
    assert_eq!(again.last_error, None);
    assert!(again.available_at <= Utc::now() + chrono::Duration::seconds(1));
    let left: Vec<i64> = s
        .failed_jobs(10)
        .await
        .unwrap()
        .iter()
        .map(|f| f.job_id)
        .collect();
    assert_eq!(left, vec![j3, j1]);

    // A missing id is no error and retries nothing.
    assert!(s.retry_failed(Some(target.id)).await.unwrap().is_empty());
    assert!(s.retry_failed(Some(987_654)).await.unwrap().is_empty());

    // All of them, even after their jobs rows were pruned.
    s.prune_jobs(Utc::now() + chrono::Duration::minutes(1))
        .await
        .unwrap();
    let all = s.retry_failed(None).await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(s.failed_jobs(10).await.unwrap().is_empty());
    let mut kinds = Vec::new();
    for id in &all {
        let j = get(s, *id).await;
        assert_eq!((j.max_attempts, j.timeout_ms), (Some(4), Some(2_500)));
        kinds.push(j.kind);
    }
    kinds.sort();
    assert_eq!(kinds, vec!["a", "b"]);
    assert_eq!(
        s.claim(NODE, &queues(&["default"]), 10)
            .await
            .unwrap()
            .len(),
        3
    );
    assert!(s.retry_failed(None).await.unwrap().is_empty());
}

async fn prune_failed_removes_old_rows(db: &TestDb) {
    let s = db.store();
    fail_one(s, "a", "e1").await;
    fail_one(s, "b", "e2").await;
    assert_eq!(
        s.prune_failed(Utc::now() - chrono::Duration::hours(1))
            .await
            .unwrap(),
        0
    );
    assert_eq!(s.failed_jobs(10).await.unwrap().len(), 2);
    assert_eq!(
        s.prune_failed(Utc::now() + chrono::Duration::minutes(1))
            .await
            .unwrap(),
        2
    );
    assert!(s.failed_jobs(10).await.unwrap().is_empty());
}

async fn failures_by_kind_and_failed_since(db: &TestDb) {
    let s = db.store();
    let start = Utc::now() - chrono::Duration::seconds(5);
    fail_one(s, "vps.exec", "connect refused").await;
    fail_one(s, "site.provision", "quota").await;
    fail_one(s, "vps.exec", "host key mismatch").await;
    let by_kind: Vec<(String, u64, String)> = s
        .failures_by_kind(start)
        .await
        .unwrap()
        .into_iter()
        .map(|k| (k.kind, k.count, k.last_error))
        .collect();
    assert_eq!(
        by_kind,
        vec![
            ("vps.exec".to_owned(), 2, "host key mismatch".to_owned()),
            ("site.provision".to_owned(), 1, "quota".to_owned()),
        ]
    );
    assert!(
        s.failures_by_kind(Utc::now() + chrono::Duration::minutes(1))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.failed_since(start).await.unwrap(), 3);
    assert_eq!(
        s.failed_since(Utc::now() + chrono::Duration::minutes(1))
            .await
            .unwrap(),
        0
    );
}

async fn listen_wakes_on_inserts(db: &TestDb) {
    let s = db.store();
    let stream = s.listen().await.expect("listen");
    if !db.is_pg() {
        assert!(stream.is_none(), "sqlite has no notifications");
        return;
    }
    let mut stream = stream.expect("postgres notifies");
    let wait = Duration::from_secs(10);

    enqueue(s, new_job("noop", "default")).await;
    tokio::time::timeout(wait, stream.next())
        .await
        .expect("woken by the node's own enqueue")
        .expect("stream open");

    // Another program's plain INSERT in its own transaction, on another connection.
    db.plain_insert("default", "noop", "{}").await;
    tokio::time::timeout(wait, stream.next())
        .await
        .expect("woken by a plain SQL insert")
        .expect("stream open");

    // A multi-row insert wakes too (one notification for the transaction).
    db.bulk_insert("low", 50).await;
    tokio::time::timeout(wait, stream.next())
        .await
        .expect("woken by a bulk insert")
        .expect("stream open");
}

async fn heartbeat_refreshes_seen_at(db: &TestDb) {
    let s = db.store();
    s.register_node(&node("beating")).await.unwrap();
    let long_ago = Utc::now() - chrono::Duration::hours(3);
    db.set_seen_at("beating", long_ago).await;
    assert_near(db.seen_at("beating").await, long_ago, "backdated");
    let recent = Utc::now() - chrono::Duration::seconds(30);
    assert_eq!(
        s.heartbeat("beating", recent, 3).await.unwrap(),
        1,
        "itself"
    );
    assert_near(db.seen_at("beating").await, Utc::now(), "heartbeat");
    // Nodes seen after the cutoff count; one silent since before it does not.
    s.register_node(&node("other")).await.unwrap();
    s.register_node(&node("silent")).await.unwrap();
    db.set_seen_at("silent", long_ago).await;
    assert_eq!(s.heartbeat("beating", recent, 5).await.unwrap(), 2);
    // An unknown node is not an error (and registers nothing).
    assert_eq!(s.heartbeat("unknown", recent, 0).await.unwrap(), 2);
    assert_eq!(db.count("nodes").await, 3);
    // The live ones, by name, with what their heartbeats said.
    let live = s.cluster_nodes(recent).await.unwrap();
    let seen: Vec<(&str, &str, u64)> = live
        .iter()
        .map(|n| (n.name.as_str(), n.instance.as_str(), n.jobs_running))
        .collect();
    assert_eq!(
        seen,
        [
            ("beating", "beating-instance", 5),
            ("other", "other-instance", 0)
        ]
    );
    assert_eq!((live[0].pid, live[0].version.as_str()), (42, "0.0.0-test"));
    assert!(live[0].started_at <= live[0].seen_at);
    assert_near(live[0].seen_at, Utc::now(), "seen_at");
}

// === inventory ===

fn server(id: &str, host: &str) -> VpsServer {
    VpsServer {
        id: id.to_owned(),
        host: host.to_owned(),
        port: 2222,
        user: Some("deploy".to_owned()),
        host_key: Some("SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s".to_owned()),
        source: "admin".to_owned(),
        tenant_id: None,
        max_sites: None,
    }
}

async fn vps_add_list_remove(db: &TestDb) {
    let s = db.store();
    s.add_vps(&server("web-2", "10.0.0.2")).await.unwrap();
    s.add_vps(&server("web-1", "10.0.0.1")).await.unwrap();
    let dup = s.add_vps(&server("web-1", "10.0.0.9")).await.unwrap_err();
    assert!(matches!(dup, StoreError::Conflict(_)), "{dup}");
    assert!(dup.to_string().contains("web-1"), "{dup}");
    let list = s.vps_list().await.unwrap();
    assert_eq!(
        list.iter().map(|v| v.id.as_str()).collect::<Vec<_>>(),
        ["web-1", "web-2"]
    );
    assert_eq!(list[0], server("web-1", "10.0.0.1"));
    assert_eq!(s.vps("web-2").await.unwrap().unwrap().host, "10.0.0.2");
    assert!(s.remove_vps("web-2").await.unwrap());
    assert!(!s.remove_vps("web-2").await.unwrap());
    assert_eq!(s.vps("web-2").await.unwrap(), None);
}

async fn config_vps_upsert_updates_in_place(db: &TestDb) {
    let s = db.store();
    s.add_vps(&server("web-1", "10.0.0.1")).await.unwrap();
    let mut from_config =
        VpsServer::from_config(&chom_core::config::VpsConfig::new("web-1", "10.0.0.5"));
    s.upsert_config_vps(std::slice::from_ref(&from_config))
        .await
        .unwrap();
    from_config.port = 22;
    assert_eq!(s.vps("web-1").await.unwrap().unwrap(), from_config);
    assert_eq!(s.vps("web-1").await.unwrap().unwrap().source, "config");
    // Idempotent.
    s.upsert_config_vps(std::slice::from_ref(&from_config))
        .await
        .unwrap();
    assert_eq!(s.vps_list().await.unwrap().len(), 1);
}

async fn tenants_and_sites(db: &TestDb) {
    let s = db.store();
    s.add_vps(&server("web-1", "10.0.0.1")).await.unwrap();
    let acme = s.create_tenant("acme", Tier::Pro).await.unwrap();
    assert_eq!(
        (acme.name.as_str(), acme.tier, acme.status.as_str()),
        ("acme", Tier::Pro, "active")
    );
    let dup = s.create_tenant("acme", Tier::Starter).await.unwrap_err();
    assert!(matches!(dup, StoreError::Conflict(_)), "{dup}");
    let other = s.create_tenant("globex", Tier::Starter).await.unwrap();
    assert_eq!(
        s.tenants().await.unwrap(),
        vec![acme.clone(), other.clone()]
    );

    let new = |tenant_id, vps: &str, domain: &str| NewSite {
        tenant_id,
        vps_id: vps.to_owned(),
        domain: domain.to_owned(),
        site_type: "wordpress".to_owned(),
    };
    let site = s
        .create_site(&new(acme.id, "web-1", "shop.example.com"))
        .await
        .unwrap();
    assert_eq!(site.status, SiteStatus::Pending);
    assert_eq!(
        (site.vps_id.as_str(), site.site_type.as_str()),
        ("web-1", "wordpress")
    );
    let refusal = |error: &StoreError| match error {
        StoreError::Conflict(_) => "conflict",
        StoreError::Invalid(_) => "invalid",
        _ => "other",
    };
    for (case, refused, expected) in [
        (
            "taken domain",
            new(other.id, "web-1", "shop.example.com"),
            "conflict",
        ),
        (
            "no such vps",
            new(acme.id, "web-9", "b.example.com"),
            "invalid",
        ),
        (
            "no such tenant",
            new(999_999, "web-1", "c.example.com"),
            "invalid",
        ),
    ] {
        let error = s.create_site(&refused).await.unwrap_err();
        assert_eq!(refusal(&error), expected, "{case}: {error}");
    }
    let second = s
        .create_site(&new(other.id, "web-1", "blog.example.com"))
        .await
        .unwrap();

    assert_eq!(s.inventory_counts().await.unwrap(), (2, 0));
    assert!(
        s.set_site_status(site.id, SiteStatus::Active, None)
            .await
            .unwrap()
    );
    assert!(
        s.set_site_status(second.id, SiteStatus::Failed, Some("site:create exited 1"))
            .await
            .unwrap()
    );
    assert!(
        !s.set_site_status(999_999, SiteStatus::Active, None)
            .await
            .unwrap()
    );
    assert_eq!(s.inventory_counts().await.unwrap(), (2, 1));
    let failed = s.site(second.id).await.unwrap().unwrap();
    assert_eq!(failed.status, SiteStatus::Failed);
    assert_eq!(
        failed.failure_reason.as_deref(),
        Some("site:create exited 1")
    );
    assert_eq!(s.sites(Some(acme.id)).await.unwrap().len(), 1);
    assert_eq!(s.sites(None).await.unwrap().len(), 2);
    assert_eq!(
        s.site_counts().await.unwrap(),
        [("web-1".to_owned(), 2)],
        "one row per server holding sites"
    );

    // A server with sites cannot be removed.
    let in_use = s.remove_vps("web-1").await.unwrap_err();
    assert!(matches!(in_use, StoreError::Invalid(_)), "{in_use}");
    assert!(s.vps("web-1").await.unwrap().is_some());

    // Deleting: marked, then the row goes; its domain is free again.
    assert!(
        s.set_site_status(second.id, SiteStatus::Deleting, None)
            .await
            .unwrap()
    );
    let deleting = s.site(second.id).await.unwrap().unwrap();
    assert_eq!(deleting.status, SiteStatus::Deleting);
    assert_eq!(
        deleting.domain, "blog.example.com",
        "every column survived the rebuild"
    );
    assert!(s.delete_site(second.id).await.unwrap());
    assert!(!s.delete_site(second.id).await.unwrap());
    assert!(s.site(second.id).await.unwrap().is_none());
    s.create_site(&new(other.id, "web-1", "blog.example.com"))
        .await
        .expect("the domain is free again");
}

/// A server's owning tenant is stored and read back; an unknown tenant is refused by name; a
/// config upsert of the same id keeps the owner.
async fn vps_tenant_round_trips(db: &TestDb) {
    let s = db.store();
    let acme = s.create_tenant("acme", Tier::Pro).await.unwrap();
    let mut owned = server("web-1", "10.0.0.1");
    owned.tenant_id = Some(acme.id);
    s.add_vps(&owned).await.unwrap();
    s.add_vps(&server("web-2", "10.0.0.2")).await.unwrap();
    assert_eq!(s.vps("web-1").await.unwrap().unwrap(), owned);
    assert_eq!(
        s.vps_list()
            .await
            .unwrap()
            .iter()
            .map(|v| (v.id.as_str(), v.tenant_id))
            .collect::<Vec<_>>(),
        [("web-1", Some(acme.id)), ("web-2", None)]
    );

    let mut orphan = server("web-3", "10.0.0.3");
    orphan.tenant_id = Some(999_999);
    match s.add_vps(&orphan).await {
        Err(StoreError::Invalid(message)) => {
            assert!(message.contains("no tenant 999999"), "{message}")
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert_eq!(s.vps("web-3").await.unwrap(), None);

    let config = VpsServer::from_config(&chom_core::config::VpsConfig::new("web-1", "10.0.0.5"));
    s.upsert_config_vps(std::slice::from_ref(&config))
        .await
        .unwrap();
    let stored = s.vps("web-1").await.unwrap().unwrap();
    assert_eq!(
        (
            stored.host.as_str(),
            stored.source.as_str(),
            stored.tenant_id
        ),
        ("10.0.0.5", "config", Some(acme.id))
    );
}

/// An owned server takes only its tenant's sites, refused in the INSERT with a message naming
/// both tenants; a shared server takes anyone's.
async fn owned_servers_refuse_other_tenants_sites(db: &TestDb) {
    let s = db.store();
    let acme = s.create_tenant("acme", Tier::Pro).await.unwrap();
    let globex = s.create_tenant("globex", Tier::Starter).await.unwrap();
    let mut owned = server("web-1", "10.0.0.1");
    owned.tenant_id = Some(acme.id);
    s.add_vps(&owned).await.unwrap();
    s.add_vps(&server("shared-1", "10.0.0.2")).await.unwrap();
    let new = |tenant_id, vps: &str, domain: &str| NewSite {
        tenant_id,
        vps_id: vps.to_owned(),
        domain: domain.to_owned(),
        site_type: "html".to_owned(),
    };

    match s
        .create_site(&new(globex.id, "web-1", "g.example.com"))
        .await
    {
        Err(StoreError::Invalid(message)) => {
            for part in [
                "web-1".to_owned(),
                format!("tenant {} (acme)", acme.id),
                format!("tenant {} (globex)", globex.id),
            ] {
                assert!(message.contains(&part), "{part} in {message}");
            }
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(s.sites(None).await.unwrap().is_empty(), "nothing stored");

    let mine = s
        .create_site(&new(acme.id, "web-1", "a.example.com"))
        .await
        .unwrap();
    assert_eq!((mine.tenant_id, mine.vps_id.as_str()), (acme.id, "web-1"));
    for tenant in [acme.id, globex.id] {
        let domain = format!("t{tenant}.shared.example.com");
        let site = s.create_site(&new(tenant, "shared-1", &domain)).await;
        assert_eq!(site.unwrap().tenant_id, tenant);
    }

    // The other refusals keep their meaning.
    for (refused, expected) in [
        (new(acme.id, "web-9", "x.example.com"), "no vps `web-9`"),
        (new(999_999, "web-1", "y.example.com"), "no tenant 999999"),
        (
            new(999_999, "shared-1", "z.example.com"),
            "no tenant 999999",
        ),
    ] {
        match s.create_site(&refused).await {
            Err(StoreError::Invalid(message)) => {
                assert!(message.contains(expected), "{expected}: {message}")
            }
            other => panic!("{expected}: expected Invalid, got {other:?}"),
        }
    }
    let taken = s.create_site(&new(acme.id, "web-1", "a.example.com")).await;
    assert!(matches!(taken, Err(StoreError::Conflict(_))), "{taken:?}");
    assert_eq!(s.sites(None).await.unwrap().len(), 3);
}

/// A server's `max_sites` holds under concurrent creations: of 12 sites raced onto a server
/// with room for 3, exactly 3 are stored and the rest are refused as full (naming the
/// server); the capacity round-trips, an upsert from config sets it, and a freed slot is
/// taken again.
async fn server_capacity_holds_under_concurrent_creations(db: &TestDb) {
    let s = db.store();
    let acme = s.create_tenant("acme", Tier::Pro).await.unwrap();
    let mut small = server("small-1", "10.0.0.3");
    small.max_sites = Some(3);
    s.add_vps(&small).await.unwrap();
    assert_eq!(s.vps("small-1").await.unwrap().unwrap().max_sites, Some(3));

    // Joined, not spawned: each creation takes its own pooled connection, so they still
    // overlap in the database.
    let sites: Vec<NewSite> = (0..12)
        .map(|i| NewSite {
            tenant_id: acme.id,
            vps_id: "small-1".to_owned(),
            domain: format!("s{i}.example.com"),
            site_type: "html".to_owned(),
        })
        .collect();
    let creations = sites.iter().map(|site| s.create_site(site));
    let mut stored = 0;
    for created in futures::future::join_all(creations).await {
        match created {
            Ok(_) => stored += 1,
            Err(StoreError::Full(message)) => {
                assert!(
                    message.contains("small-1") && message.contains("full"),
                    "{message}"
                )
            }
            Err(other) => panic!("expected Full, got {other:?}"),
        }
    }
    assert_eq!(stored, 3, "exactly the capacity is stored");
    assert_eq!(s.sites(None).await.unwrap().len(), 3);

    let first = s.sites(None).await.unwrap()[0].id;
    assert!(s.delete_site(first).await.unwrap());
    let again = NewSite {
        tenant_id: acme.id,
        vps_id: "small-1".to_owned(),
        domain: "again.example.com".to_owned(),
        site_type: "html".to_owned(),
    };
    s.create_site(&again).await.expect("a freed slot is taken");

    let mut from_config = server("cfg-1", "10.0.0.4");
    from_config.source = "config".to_owned();
    from_config.max_sites = Some(7);
    s.upsert_config_vps(std::slice::from_ref(&from_config))
        .await
        .unwrap();
    assert_eq!(s.vps("cfg-1").await.unwrap().unwrap().max_sites, Some(7));
    from_config.max_sites = None;
    s.upsert_config_vps(std::slice::from_ref(&from_config))
        .await
        .unwrap();
    assert_eq!(s.vps("cfg-1").await.unwrap().unwrap().max_sites, None);
}

/// PostgreSQL only: a completion must be a HOT update (the queue's drain speed rests on it),
/// so nothing a completion writes may appear in any index of `jobs`, and pages keep room.
async fn postgres_completions_touch_no_index(db: &TestDb) {
    let Raw::Pg(pool) = &db.raw else {
        return; // SQLite has no HOT updates to keep.
    };
    let defs: Vec<String> = sqlx::query_scalar(
        "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = 'jobs'::regclass",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(defs.len() >= 3, "{defs:?}");
    for def in &defs {
        for column in ["state", "finished_at", "last_error"] {
            assert!(!def.contains(column), "{def} mentions {column}");
        }
    }
    let options: Option<Vec<String>> =
        sqlx::query_scalar("SELECT reloptions FROM pg_class WHERE oid = 'jobs'::regclass")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(options, Some(vec!["fillfactor=30".to_owned()]));
    // And the rule the claim index relies on holds: pending exactly when not reserved.
    let err = sqlx::query(
        "INSERT INTO jobs (queue, kind, payload, reserved_at) VALUES ('default', 'noop', '{}', now())",
    )
    .execute(pool)
    .await
    .unwrap_err();
    assert!(err.to_string().contains("jobs_pending_unreserved"), "{err}");
}

// === hardening (issue 10) ===

/// A unique-key hit answers with the holder's queue, not the queue asked for.
async fn unique_key_hit_reports_the_holders_queue(db: &TestDb) {
    let s = db.store();
    let mut job = new_job("site.provision", "high");
    job.unique_key = Some("site:9".to_owned());
    let first = s.enqueue(&job).await.unwrap();
    assert_eq!((first.existing, first.queue.as_str()), (false, "high"));
    job.queue = "low".to_owned();
    let hit = s.enqueue(&job).await.unwrap();
    assert_eq!(
        (hit.id, hit.existing, hit.queue.as_str()),
        (first.id, true, "high")
    );
}

/// Values the store would have to clamp (or that PostgreSQL would refuse with a raw error)
/// are refused with `Invalid` naming the parameter, and nothing is stored.
async fn out_of_range_jobs_are_refused(db: &TestDb) {
    let s = db.store();
    let refused = |job: NewJob, what: &'static str| async move {
        match s.enqueue(&job).await {
            Err(StoreError::Invalid(message)) => {
                assert!(message.contains(what), "{what}: {message}")
            }
            other => panic!("{what}: expected Invalid, got {other:?}"),
        }
    };
    let mut job = new_job("noop", "default");
    job.max_attempts = Some(u32::MAX);
    refused(job, "max_attempts").await;
    let mut job = new_job("noop", "default");
    job.max_attempts = Some(limits::MAX_ATTEMPTS + 1);
    refused(job, "max_attempts").await;
    let mut job = new_job("noop", "default");
    job.delay = humantime::parse_duration("10000000years").unwrap();
    refused(job, "delay").await;
    let mut job = new_job("noop", "default");
    job.timeout = Some(limits::MAX_JOB_TIMEOUT + Duration::from_secs(1));
    refused(job, "timeout").await;
    let mut job = new_job("noop", "default");
    job.unique_key = Some("k".repeat(500_000));
    refused(job, "unique_key").await;
    let mut job = new_job("noop", "default");
    job.unique_key = Some("a\0b".to_owned());
    refused(job, "unique_key").await;
    assert_eq!(db.count("jobs").await, 0);

    // The bounds themselves are stored as given.
    let mut job = new_job("noop", "default");
    job.max_attempts = Some(limits::MAX_ATTEMPTS);
    job.timeout = Some(limits::MAX_JOB_TIMEOUT);
    job.delay = limits::MAX_DURATION;
    let stored = get(s, enqueue(s, job).await).await;
    assert_eq!(stored.max_attempts, Some(limits::MAX_ATTEMPTS));
    assert_eq!(
        stored.timeout_ms,
        Some(limits::MAX_JOB_TIMEOUT.as_millis() as u64)
    );
}

/// Rows another program wrote with absurd timestamps and counters: every read (listing, one
/// job, claim, rescue, kill, dead letters) still works, with times clamped into
/// `limits::min_time()..=limits::max_time()` and odd overrides read as sane values.
async fn absurd_rows_never_break_reads(db: &TestDb) {
    let s = db.store();
    let max = limits::max_time();
    let min = limits::min_time();
    // A pending due job, created "in the far future", with odd overrides.
    let due = plain_insert_id(db, "odd_due").await;
    // A pending job due "in the far future".
    let later = plain_insert_id(db, "odd_later").await;
    // A reserved job whose reservation is absurdly old (killed by kill_stuck).
    let stuck = plain_insert_id(db, "odd_stuck").await;
    // A reserved job whose reservation is in the far future.
    let ahead = plain_insert_id(db, "odd_ahead").await;
    match &db.raw {
        Raw::Pg(pool) => {
            for (sql, id) in [
                (
                    "UPDATE jobs SET created_at = 'infinity', attempts = -5, max_attempts = -1,
                         timeout_ms = -20 WHERE id = $1",
                    due,
                ),
                (
                    "UPDATE jobs SET available_at = '294000-01-01 00:00:00+00',
                         max_attempts = 2000000000, timeout_ms = 9223372036854775807 WHERE id = $1",
                    later,
                ),
                (
                    "UPDATE jobs SET state = 'reserved', reserved_by = 'gone',
                         reserved_at = '-infinity', attempts = 2147483647 WHERE id = $1",
                    stuck,
                ),
                (
                    "UPDATE jobs SET state = 'reserved', reserved_by = 'gone',
                         reserved_at = 'infinity', finished_at = '200000-01-01 00:00:00+00'
                     WHERE id = $1",
                    ahead,
                ),
            ] {
                sqlx::query(sql).bind(id).execute(pool).await.expect(sql);
            }
            sqlx::query(
                "INSERT INTO failed_jobs (queue, kind, payload, exception, job_id, failed_at)
                 VALUES ('default', 'odd', '{}', 'boom', 0, 'infinity')",
            )
            .execute(pool)
            .await
            .unwrap();
        }
        Raw::Sqlite(pool) => {
            for (sql, id) in [
                (
                    "UPDATE jobs SET created_at = 1000000000000000000, attempts = -5,
                         max_attempts = -1, timeout_ms = -20,
                         -- Bytes that are not UTF-8, as a BLOB: read with U+FFFD.
                         payload = X'7BFF7D', last_error = X'FE', kind = CAST('noop' AS BLOB)
                     WHERE id = ?1",
                    due,
                ),
                (
                    // REAL and TEXT where integers belong: read as numbers, not errors.
                    "UPDATE jobs SET available_at = 9.2e18, max_attempts = '2000000000',
                         timeout_ms = 9223372036854775807 WHERE id = ?1",
                    later,
                ),
                (
                    "UPDATE jobs SET state = 'reserved', reserved_by = 'gone',
                         reserved_at = -9223372036854775808,
                         attempts = 9223372036854775807 WHERE id = ?1",
                    stuck,
                ),
                (
                    "UPDATE jobs SET state = 'reserved', reserved_by = 'gone',
                         reserved_at = 9223372036854775807, finished_at = 1e30 WHERE id = ?1",
                    ahead,
                ),
            ] {
                sqlx::query(sql).bind(id).execute(pool).await.expect(sql);
            }
            sqlx::query(
                "INSERT INTO failed_jobs (queue, kind, payload, exception, job_id, failed_at)
                 VALUES ('default', CAST('odd' AS BLOB), X'FF', X'FF', 0, 9223372036854775807)",
            )
            .execute(pool)
            .await
            .unwrap();
        }
    }

    let listed = list_ten(s).await;
    assert_eq!(listed.len(), 4);
    for job in &listed {
        for t in [
            Some(job.available_at),
            Some(job.created_at),
            job.reserved_at,
            job.finished_at,
        ]
        .into_iter()
        .flatten()
        {
            assert!(t >= min && t <= max, "job {} has {t}", job.id);
        }
    }
    let due_job = get(s, due).await;
    if !db.is_pg() {
        assert_eq!(due_job.payload, "{\u{FFFD}}");
        assert_eq!(due_job.last_error.as_deref(), Some("\u{FFFD}"));
        assert_eq!(due_job.kind, "noop");
    }
    assert_eq!(due_job.created_at, max);
    assert_eq!(due_job.attempts, 0);
    assert_eq!(
        due_job.max_attempts, None,
        "non-positive override: the policy decides"
    );
    assert_eq!(due_job.timeout_ms, None);
    let later_job = get(s, later).await;
    assert_eq!(later_job.available_at, max);
    assert_eq!(later_job.max_attempts, Some(limits::MAX_ATTEMPTS));
    assert_eq!(
        later_job.timeout_ms,
        Some(limits::MAX_JOB_TIMEOUT.as_millis() as u64)
    );
    assert_eq!(get(s, stuck).await.reserved_at, Some(min));
    let ahead_job = get(s, ahead).await;
    assert_eq!(
        (ahead_job.reserved_at, ahead_job.finished_at),
        (Some(max), Some(max))
    );

    // The claim reads the due one (created "in the far future") and never the later one.
    let claimed = s
        .claim(NODE, &queues(&["default"]), 10)
        .await
        .expect("claim");
    assert_eq!(ids(&claimed), vec![due]);
    assert_eq!(claimed[0].created_at, max);
    // Rescue and the stuck-job killer run over them.
    s.rescue_expired(Utc::now(), NODE).await.expect("rescue");
    let reclaimed = s
        .claim(NODE, &queues(&["default"]), 10)
        .await
        .expect("claim");
    assert_eq!(
        ids(&reclaimed),
        vec![stuck],
        "a saturated attempt counter is claimable"
    );
    assert!(
        reclaimed[0].attempts >= i32::MAX as u32,
        "{}",
        reclaimed[0].attempts
    );
    let killed = s
        .kill_stuck(Utc::now() + chrono::Duration::minutes(1), "stuck")
        .await
        .expect("kill_stuck");
    assert!(killed.contains(&due), "{killed:?}");
    let dead = s
        .failed_jobs(10)
        .await
        .expect("failed list reads absurd rows");
    assert!(dead.iter().any(|f| f.kind == "odd" && f.failed_at == max));
    list_ten(s).await;
}

/// The newest ten jobs, whatever their state (fails the test when the listing fails).
async fn list_ten(s: &dyn Store) -> Vec<Job> {
    s.jobs(&JobFilter {
        limit: 10,
        ..JobFilter::default()
    })
    .await
    .expect("jobs list")
}

/// `INSERT INTO jobs (queue, kind, payload)` of a noop job on `default`, by another program.
async fn plain_insert_id(db: &TestDb, kind: &str) -> i64 {
    db.plain_insert("default", kind, "{}").await
}

/// Listings carry previews (2 KiB, cut at a character boundary, flagged); one job carries
/// the payload up to MAX_PAYLOAD_BYTES; stored errors are capped at MAX_ERROR_BYTES.
async fn listings_carry_bounded_previews(db: &TestDb) {
    let s = db.store();
    // 100 KB of two-byte characters, and an odd offset so a byte cut would split one.
    let payload = format!(r#"{{"x":"a{}"}}"#, "é".repeat(50_000));
    let mut job = new_job("noop", "default");
    job.payload = payload.clone();
    let id = enqueue(s, job).await;
    let listed = list_ten(s).await;
    let row = listed.iter().find(|j| j.id == id).unwrap();
    assert!(row.payload.len() <= limits::PREVIEW_BYTES && row.payload.len() > 2_000);
    assert!(payload.starts_with(&row.payload));
    assert!(row.payload_truncated);
    let one = get(s, id).await;
    assert_eq!(one.payload, payload);
    assert!(!one.payload_truncated);

    // Short texts are whole and not flagged.
    let small = enqueue(s, new_job("noop", "default")).await;
    let listed = list_ten(s).await;
    let row = listed.iter().find(|j| j.id == small).unwrap();
    assert_eq!(
        (row.payload.as_str(), row.payload_truncated),
        (r#"{"n":1}"#, false)
    );

    // A payload beyond MAX_PAYLOAD_BYTES, written by another program: `job` stops there.
    let huge = "y".repeat(limits::MAX_PAYLOAD_BYTES + 10);
    let big = db.plain_insert("other", "noop", &huge).await;
    let one = get(s, big).await;
    assert_eq!(one.payload.len(), limits::MAX_PAYLOAD_BYTES);
    assert!(one.payload_truncated);

    // Errors: capped at write time, previewed in listings.
    let claimed = s.claim(NODE, &queues(&["default"]), 10).await.unwrap();
    assert_eq!(claimed.len(), 2);
    let error = format!("b{}", "€".repeat(20_000)); // 60 KB
    s.complete(
        NODE,
        &[
            Completion::Retry {
                id: small,
                error: error.clone(),
                available_at: Utc::now(),
            },
            Completion::Fail {
                id,
                error: error.clone(),
            },
        ],
    )
    .await
    .unwrap();
    let retried = get(s, small).await;
    let stored = retried.last_error.unwrap();
    assert!(stored.len() <= limits::MAX_ERROR_BYTES && stored.len() > limits::MAX_ERROR_BYTES - 4);
    assert!(error.starts_with(&stored));
    assert!(
        !retried.last_error_truncated,
        "the stored error is whole in `job`"
    );
    let listed = list_ten(s).await;
    for row in listed.iter().filter(|j| j.id == small || j.id == id) {
        let e = row.last_error.as_deref().unwrap();
        assert!(e.len() <= limits::PREVIEW_BYTES && error.starts_with(e));
        assert!(row.last_error_truncated);
    }
    let dead = s.failed_jobs(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].exception.len() <= limits::PREVIEW_BYTES);
    assert!(error.starts_with(&dead[0].exception));
    assert!(dead[0].exception_truncated);
    assert!(dead[0].payload.len() <= limits::PREVIEW_BYTES && dead[0].payload_truncated);
    let analyzed = s
        .failures_by_kind(Utc::now() - chrono::Duration::hours(1))
        .await
        .unwrap();
    assert!(analyzed[0].last_error.len() <= limits::PREVIEW_BYTES);
    let stored_exception: i64 = match &db.raw {
        Raw::Pg(pool) => {
            sqlx::query_scalar("SELECT octet_length(exception)::bigint FROM failed_jobs")
                .fetch_one(pool)
                .await
                .unwrap()
        }
        Raw::Sqlite(pool) => {
            sqlx::query_scalar("SELECT length(CAST(exception AS BLOB)) FROM failed_jobs")
                .fetch_one(pool)
                .await
                .unwrap()
        }
    };
    assert!(stored_exception as usize <= limits::MAX_ERROR_BYTES);
    // The stuck-job killer's reason is capped the same way.
    let reserved = reserved_job(s, "third").await;
    s.kill_stuck(Utc::now() + chrono::Duration::minutes(1), &error)
        .await
        .unwrap();
    let killed = get(s, reserved.id).await;
    assert!(killed.last_error.unwrap().len() <= limits::MAX_ERROR_BYTES);
}

/// A site's failure reason (a job's error) is stored capped like a job's error.
async fn site_failure_reason_is_capped(db: &TestDb) {
    let s = db.store();
    let tenant = s.create_tenant("acme", Tier::Pro).await.unwrap();
    s.add_vps(&server("web-1", "10.0.0.1")).await.unwrap();
    let site = s
        .create_site(&NewSite {
            tenant_id: tenant.id,
            vps_id: "web-1".to_owned(),
            domain: "a.example".to_owned(),
            site_type: "wordpress".to_owned(),
        })
        .await
        .unwrap();
    let reason = format!("x{}", "é".repeat(100_000));
    assert!(
        s.set_site_status(site.id, SiteStatus::Failed, Some(&reason))
            .await
            .unwrap()
    );
    let stored = s
        .site(site.id)
        .await
        .unwrap()
        .unwrap()
        .failure_reason
        .unwrap();
    assert!(stored.len() <= limits::MAX_ERROR_BYTES && stored.len() > limits::MAX_ERROR_BYTES - 2);
    assert!(reason.starts_with(&stored));
}

/// The write probe commits a write, and a connection is never handed out inside a
/// transaction a caller abandoned.
async fn probe_write_commits_and_pool_stays_clean(db: &TestDb) {
    let s = db.store();
    s.probe_write().await.expect("probe");
    s.probe_write().await.expect("probe again");
    assert_eq!(db.count("health_probe").await, 1);
    // Many operations that each begin a transaction, on a small pool: none fails with
    // "non-zero transaction depth".
    for _ in 0..30 {
        enqueue(s, new_job("noop", "default")).await;
        s.claim(NODE, &queues(&["default"]), 1)
            .await
            .expect("claim");
        s.probe_write().await.expect("probe");
    }
}

// === alerts ===

/// A firing alert named `name` with `severity`, started `minutes_ago` minutes ago.
fn firing(fingerprint: &str, name: &str, severity: Option<&str>, minutes_ago: i64) -> Alert {
    let mut labels = std::collections::BTreeMap::new();
    labels.insert("alertname".to_owned(), name.to_owned());
    if let Some(s) = severity {
        labels.insert("severity".to_owned(), s.to_owned());
    }
    let mut annotations = std::collections::BTreeMap::new();
    annotations.insert("summary".to_owned(), format!("{name} is firing"));
    Alert {
        fingerprint: fingerprint.to_owned(),
        alertname: name.to_owned(),
        severity: severity.map(str::to_owned),
        status: AlertStatus::Firing,
        labels,
        annotations,
        starts_at: at_ms(Utc::now() - chrono::Duration::minutes(minutes_ago)),
        ends_at: None,
        generator_url: format!("http://prometheus/graph?{name}"),
    }
}

fn fingerprints(alerts: &[Alert]) -> Vec<&str> {
    alerts.iter().map(|a| a.fingerprint.as_str()).collect()
}

/// Alerts last received before a cutoff are forgotten; those received after it stay.
async fn stale_alerts_are_forgotten(db: &TestDb) {
    let s = db.store();
    s.apply_alerts(&[AlertUpdate::Firing(firing(
        "e4",
        "Old",
        Some("warning"),
        10,
    ))])
    .await
    .expect("apply");
    let hour = chrono::Duration::hours(1);
    assert_eq!(
        s.forget_stale_alerts(chrono::Utc::now() - hour)
            .await
            .unwrap(),
        0
    );
    assert_eq!(fingerprints(&s.active_alerts(100).await.unwrap()), ["e4"]);
    assert_eq!(
        s.forget_stale_alerts(chrono::Utc::now() + hour)
            .await
            .unwrap(),
        1
    );
    assert!(s.active_alerts(100).await.unwrap().is_empty());
}

/// Firing alerts are upserted by fingerprint, a re-send replaces what was stored, a resolved
/// one is deleted; the listing is critical first, then warning, then the rest, oldest first.
async fn alerts_upsert_resend_resolve_and_order(db: &TestDb) {
    let s = db.store();
    assert!(s.active_alerts(100).await.unwrap().is_empty());
    assert_eq!(s.alert_counts().await.unwrap(), AlertCounts::default());
    s.apply_alerts(&[]).await.expect("an empty call");
    let none = firing("c0", "Plain", None, 50);
    let warning = firing("a1", "QueueBacklog", Some("warning"), 40);
    let late_critical = firing("b2", "HealthCheckFailing", Some("critical"), 10);
    let early_critical = firing("d3", "CircuitBreakerOpen", Some("critical"), 20);
    let all = [&none, &warning, &late_critical, &early_critical];
    let updates: Vec<AlertUpdate> = all
        .iter()
        .map(|a| AlertUpdate::Firing((*a).clone()))
        .collect();
    s.apply_alerts(&updates).await.expect("apply");
    let active = s.active_alerts(100).await.unwrap();
    assert_eq!(fingerprints(&active), ["d3", "b2", "a1", "c0"]);
    assert_eq!(active[0], early_critical, "every field round-trips");
    assert_eq!(active[3], none);
    assert_eq!(
        fingerprints(&s.active_alerts(2).await.unwrap()),
        ["d3", "b2"]
    );
    assert_eq!(
        s.alert_counts().await.unwrap(),
        AlertCounts {
            active: 4,
            critical: 2,
            critical_names: vec![
                "CircuitBreakerOpen".to_owned(),
                "HealthCheckFailing".to_owned()
            ],
        }
    );

    // A re-send updates in place: new annotations, an end, a severity raised to critical.
    let mut resent = warning.clone();
    resent.severity = Some("critical".to_owned());
    resent
        .labels
        .insert("severity".to_owned(), "critical".to_owned());
    resent
        .annotations
        .insert("description".to_owned(), "now worse".to_owned());
    resent.ends_at = Some(at_ms(Utc::now() + chrono::Duration::minutes(5)));
    s.apply_alerts(&[AlertUpdate::Firing(resent.clone())])
        .await
        .unwrap();
    let active = s.active_alerts(100).await.unwrap();
    assert_eq!(fingerprints(&active), ["a1", "d3", "b2", "c0"]);
    assert_eq!(active[0], resent);
    assert_eq!(db.count("alerts").await, 4);

    // Resolved ones are deleted; an unknown fingerprint is no error. Changes apply in order.
    let gone = |f: &str| AlertUpdate::Resolved {
        fingerprint: f.to_owned(),
    };
    s.apply_alerts(&[
        gone("b2"),
        gone("never-seen"),
        gone("c0"),
        AlertUpdate::Firing(none.clone()),
        gone("c0"),
    ])
    .await
    .unwrap();
    assert_eq!(
        fingerprints(&s.active_alerts(100).await.unwrap()),
        ["a1", "d3"]
    );
    let counts = s.alert_counts().await.unwrap();
    assert_eq!((counts.active, counts.critical), (2, 2));
    assert_eq!(
        counts.critical_names,
        ["QueueBacklog", "CircuitBreakerOpen"]
    );

    // Two critical alerts of one name are named once.
    s.apply_alerts(&[AlertUpdate::Firing(firing(
        "e4",
        "QueueBacklog",
        Some("critical"),
        1,
    ))])
    .await
    .unwrap();
    let counts = s.alert_counts().await.unwrap();
    assert_eq!((counts.active, counts.critical), (3, 3));
    assert_eq!(
        counts.critical_names,
        ["QueueBacklog", "CircuitBreakerOpen"]
    );
}

/// One call is one transaction: when one of its changes fails, none is stored.
async fn alerts_of_one_call_are_stored_together_or_not_at_all(db: &TestDb) {
    let s = db.store();
    s.apply_alerts(&[AlertUpdate::Firing(firing(
        "k1",
        "Kept",
        Some("warning"),
        5,
    ))])
    .await
    .unwrap();
    // The last change fails: PostgreSQL refuses a NUL character in text; SQLite stores one,
    // so there a trigger refuses the row.
    let mut bad = firing("z9", "Bad", None, 1);
    if db.is_pg() {
        bad.alertname = "bad\0name".to_owned();
    } else {
        db.exec(
            "",
            "CREATE TRIGGER refuse_z9 BEFORE INSERT ON alerts WHEN NEW.fingerprint = 'z9'
             BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )
        .await;
    }
    let updates = [
        AlertUpdate::Resolved {
            fingerprint: "k1".to_owned(),
        },
        AlertUpdate::Firing(firing("n1", "New", None, 2)),
        AlertUpdate::Firing(bad),
    ];
    s.apply_alerts(&updates)
        .await
        .expect_err("the last change fails");
    assert_eq!(fingerprints(&s.active_alerts(100).await.unwrap()), ["k1"]);
}

// === API tokens ===

/// A token made from `seed` (fixed random bytes), and its hash.
fn token(seed: u8) -> (Secret, TokenHash) {
    let secret = Secret::from_random(&[seed; 32]);
    let hash = secret.hash();
    (secret, hash)
}

/// Tokens are made per tenant and listed without secrets; a revoked token stops
/// authenticating and is listed after the active ones; authentication returns the tenant's
/// tier and status in the same answer.
async fn api_tokens_are_made_listed_revoked_and_authenticate(db: &TestDb) {
    let s = db.store();
    let acme = s.create_tenant("acme", Tier::Pro).await.unwrap();
    let globex = s.create_tenant("globex", Tier::Starter).await.unwrap();
    let (_, ci_hash) = token(1);
    let (_, panel_hash) = token(2);
    let ci = s.create_token(acme.id, "ci", &ci_hash).await.unwrap();
    let panel = s.create_token(acme.id, "panel", &panel_hash).await.unwrap();
    assert_eq!(
        (
            ci.tenant_id,
            ci.name.as_str(),
            ci.last_used_at,
            ci.revoked_at
        ),
        (acme.id, "ci", None, None)
    );
    assert_near(ci.created_at, Utc::now(), "created_at");
    assert!(panel.id > ci.id);

    // An unknown tenant is named; a hash stored already is a conflict.
    let error = s.create_token(999_999, "x", &token(3).1).await.unwrap_err();
    assert!(
        matches!(&error, StoreError::Invalid(m) if m.contains("no tenant 999999")),
        "{error}"
    );
    let error = s.create_token(globex.id, "x", &ci_hash).await.unwrap_err();
    assert!(matches!(error, StoreError::Conflict(_)), "{error}");
    let error = s.tokens(999_999).await.unwrap_err();
    assert!(matches!(error, StoreError::Invalid(_)), "{error}");
    assert_eq!(
        s.tokens(acme.id).await.unwrap(),
        [ci.clone(), panel.clone()]
    );
    assert_eq!(s.tokens(globex.id).await.unwrap(), []);

    let (found, tenant) = s.authenticate(&ci_hash).await.unwrap().expect("ci token");
    assert_eq!((found, tenant), (ci.clone(), acme.clone()));
    assert_eq!(s.authenticate(&token(9).1).await.unwrap(), None);

    // Revoking is idempotent and keeps the first revocation time.
    assert!(s.revoke_token(ci.id).await.unwrap());
    let revoked_at = s.tokens(acme.id).await.unwrap()[1]
        .revoked_at
        .expect("revoked");
    assert_near(revoked_at, Utc::now(), "revoked_at");
    assert!(s.revoke_token(ci.id).await.unwrap());
    assert!(!s.revoke_token(999_999).await.unwrap());
    assert_eq!(s.authenticate(&ci_hash).await.unwrap(), None);
    let listed = s.tokens(acme.id).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|t| (t.id, t.revoked_at))
            .collect::<Vec<_>>(),
        [(panel.id, None), (ci.id, Some(revoked_at))],
        "active first, then revoked"
    );

    // A suspended tenant's token still authenticates: the API answers 403, not 401.
    db.exec(
        "UPDATE tenants SET status = 'suspended' WHERE name = 'acme'",
        "UPDATE tenants SET status = 'suspended' WHERE name = 'acme'",
    )
    .await;
    let (_, tenant) = s.authenticate(&panel_hash).await.unwrap().unwrap();
    assert_eq!(
        (tenant.tier, tenant.status.as_str()),
        (Tier::Pro, "suspended")
    );
}

/// `last_used_at` is written at most once a minute per token, never for a revoked one.
async fn api_token_use_is_recorded_at_most_once_a_minute(db: &TestDb) {
    let s = db.store();
    let acme = s.create_tenant("acme", Tier::Starter).await.unwrap();
    let (_, hash) = token(1);
    let id = s.create_token(acme.id, "ci", &hash).await.unwrap().id;
    let last_used = || async {
        s.authenticate(&hash)
            .await
            .unwrap()
            .map(|(t, _)| t.last_used_at)
    };
    let now = at_ms(Utc::now());
    assert!(s.touch_token(id, now).await.unwrap(), "first use");
    assert_eq!(last_used().await, Some(Some(now)));
    for later in [1, 30, 59] {
        let t = now + chrono::TimeDelta::seconds(later);
        assert!(!s.touch_token(id, t).await.unwrap(), "{later}s later");
    }
    assert_eq!(last_used().await, Some(Some(now)));
    let next = now + chrono::TimeDelta::seconds(61);
    assert!(s.touch_token(id, next).await.unwrap(), "a minute later");
    assert_eq!(last_used().await, Some(Some(next)));
    assert!(!s.touch_token(999_999, next).await.unwrap());
    s.revoke_token(id).await.unwrap();
    let much_later = next + chrono::TimeDelta::hours(1);
    assert!(!s.touch_token(id, much_later).await.unwrap(), "revoked");
}

/// A tenant holds at most `MAX_ACTIVE_TOKENS` tokens that are not revoked, also when
/// creations race at the limit; listings are cut at `MAX_TOKENS_LISTED`, active tokens first.
async fn api_tokens_per_tenant_are_bounded(db: &TestDb) {
    let s = db.store();
    let acme = s.create_tenant("acme", Tier::Starter).await.unwrap();
    let max = limits::MAX_ACTIVE_TOKENS;
    for i in 0..max - 5 {
        let hash = Secret::from_random(&[i as u8; 32]).hash();
        s.create_token(acme.id, "t", &hash).await.unwrap();
    }
    // Ten racing creations for the last five places: exactly five are made.
    let mut tasks = Vec::new();
    for i in 0..10u8 {
        let store = Arc::clone(&db.store);
        tasks.push(tokio::spawn(async move {
            let hash = Secret::from_random(&[200 + i; 32]).hash();
            store.create_token(acme.id, "race", &hash).await
        }));
    }
    let mut made = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => made += 1,
            Err(StoreError::Invalid(m)) => assert!(m.contains("revoke one first"), "{m}"),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(made, 5);
    let all = s.tokens(acme.id).await.unwrap();
    assert_eq!(all.len(), max as usize);
    // Revoking one makes room for one.
    s.revoke_token(all[0].id).await.unwrap();
    let extra = Secret::from_random(&[255; 32]).hash();
    s.create_token(acme.id, "after", &extra).await.unwrap();
    assert!(
        s.create_token(acme.id, "over", &token(254).1)
            .await
            .is_err()
    );

    // 1,100 old revoked tokens inserted by hand: the listing stops at the bound and shows
    // every active token first.
    db.exec(
        "INSERT INTO api_tokens (tenant_id, name, hash, revoked_at)
         SELECT (SELECT id FROM tenants WHERE name = 'acme'), 'old', lpad(g::text, 64, '0'),
                now() - interval '1 day'
         FROM generate_series(1, 1100) g",
        "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 1100)
         INSERT INTO api_tokens (tenant_id, name, hash, revoked_at)
         SELECT (SELECT id FROM tenants WHERE name = 'acme'), 'old', printf('%064d', n),
                (CAST(strftime('%s', 'now') AS INTEGER) - 86400) * 1000
         FROM g",
    )
    .await;
    let listed = s.tokens(acme.id).await.unwrap();
    assert_eq!(listed.len(), limits::MAX_TOKENS_LISTED as usize);
    let active = listed.iter().take_while(|t| t.revoked_at.is_none()).count();
    assert_eq!(active, max as usize);
    assert_eq!(
        listed[active].id, all[0].id,
        "the latest revoked comes next"
    );
}

// === generated tests ===

// === statistics at volume (issue 15) ===

/// Per queue: (ready, delayed, reserved, completed, failed), counted from every row of `jobs`
/// as the statistics were before they were kept flat; delayed means due in more than a minute,
/// so no job is near the boundary.
async fn counted_from_rows(db: &TestDb) -> Vec<(String, [u64; 5])> {
    let rows: Vec<(String, i64, i64, i64, i64, i64)> = match &db.raw {
        Raw::Pg(pool) => sqlx::query_as(
            "SELECT queue,
                count(*) FILTER (WHERE state = 'pending' AND available_at <= now() + interval '1 minute'),
                count(*) FILTER (WHERE state = 'pending' AND available_at > now() + interval '1 minute'),
                count(*) FILTER (WHERE state = 'reserved'),
                count(*) FILTER (WHERE state = 'completed'),
                count(*) FILTER (WHERE state = 'failed')
             FROM jobs GROUP BY queue ORDER BY queue",
        )
        .fetch_all(pool)
        .await
        .unwrap(),
        Raw::Sqlite(pool) => sqlx::query_as(
            "SELECT queue,
                count(*) FILTER (WHERE state = 'pending' AND available_at <= ?1),
                count(*) FILTER (WHERE state = 'pending' AND available_at > ?1),
                count(*) FILTER (WHERE state = 'reserved'),
                count(*) FILTER (WHERE state = 'completed'),
                count(*) FILTER (WHERE state = 'failed')
             FROM jobs GROUP BY queue ORDER BY queue",
        )
        .bind((Utc::now() + chrono::Duration::minutes(1)).timestamp_millis())
        .fetch_all(pool)
        .await
        .unwrap(),
    };
    rows.into_iter()
        .map(|(q, a, b, c, d, e)| (q, [a, b, c, d, e].map(|n| u64::try_from(n).unwrap())))
        .collect()
}

/// `queue_stats` equals the counts taken from every row, queue by queue; on PostgreSQL the
/// per-node counters equal the rows' holders too. `step` names the moment in a failure.
async fn assert_counts_exact(db: &TestDb, step: &str) {
    let mut stats: Vec<(String, [u64; 5])> = db
        .store()
        .queue_stats(&[])
        .await
        .unwrap()
        .into_iter()
        .map(|q| {
            let counts = [q.ready, q.delayed, q.reserved, q.completed, q.failed];
            (q.queue, counts)
        })
        .collect();
    stats.sort();
    assert_eq!(stats, counted_from_rows(db).await, "after {step}");
    if let Raw::Pg(pool) = &db.raw {
        let drift: Vec<(String, String)> = sqlx::query_as(
            "SELECT node, queue FROM (
                 SELECT node, queue, reserved, completed, failed FROM job_counts
                 WHERE (reserved, completed, failed) <> (0, 0, 0)
                 EXCEPT ALL
                 SELECT coalesce(reserved_by, ''), queue,
                     count(*) FILTER (WHERE state = 'reserved'),
                     count(*) FILTER (WHERE state = 'completed'),
                     count(*) FILTER (WHERE state = 'failed')
                 FROM jobs WHERE state <> 'pending' GROUP BY 1, 2
             ) AS d",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        assert!(
            drift.is_empty(),
            "after {step}: counters drifted for {drift:?}"
        );
    }
}

/// Every way a job changes state keeps the statistics exact (a counter that drifts fails the
/// step that made it drift).
async fn queue_counts_stay_exact_through_every_transition(db: &TestDb) {
    let s = db.store();
    let q = queues(&["high", "default"]);
    assert_counts_exact(db, "nothing").await;
    let mut keyed = new_job("noop", "default");
    keyed.unique_key = Some("k".to_owned());
    enqueue(s, keyed.clone()).await;
    let mut later = new_job("noop", "high");
    later.delay = Duration::from_secs(3600);
    enqueue(s, later).await;
    assert_counts_exact(db, "enqueue").await;
    let mut batch: Vec<NewJob> = (0..6).map(|_| new_job("noop", "default")).collect();
    batch.push(new_job("noop", "high"));
    batch.push(keyed);
    let answers = s.enqueue_many(&batch).await.unwrap();
    assert!(
        answers.last().unwrap().existing,
        "the held key is not inserted again"
    );
    db.plain_insert("low", "noop", "{}").await;
    assert_counts_exact(db, "enqueue_many and a plain INSERT").await;

    let a = s.claim("node-a", &q, 6).await.unwrap();
    let b = s.claim("node-b", &q, 3).await.unwrap();
    assert_eq!((a.len(), b.len()), (6, 2));
    assert_counts_exact(db, "claims by two nodes").await;

    let soon = Utc::now() + chrono::Duration::hours(2);
    s.complete(
        "node-a",
        &[
            Completion::Completed { id: a[0].id },
            Completion::Completed { id: a[1].id },
            Completion::Fail {
                id: a[2].id,
                error: "e".to_owned(),
            },
            Completion::Retry {
                id: a[3].id,
                error: "again".to_owned(),
                available_at: soon,
            },
            Completion::Release { id: a[4].id },
            Completion::Defer {
                id: a[5].id,
                error: "busy".to_owned(),
                available_at: soon,
            },
            // Not node-a's: changes nothing, counts nothing.
            Completion::Completed { id: b[0].id },
        ],
    )
    .await
    .unwrap();
    assert_counts_exact(db, "a mixed completion batch").await;

    // node-b dies: its reservations are rescued by node-a.
    s.register_node(&node("node-b")).await.unwrap();
    db.set_seen_at("node-b", Utc::now() - chrono::Duration::minutes(10))
        .await;
    for job in &b {
        db.set_job_time(
            job.id,
            "reserved_at",
            Utc::now() - chrono::Duration::minutes(10),
        )
        .await;
    }
    assert_counts_exact(db, "reservations backdated by plain SQL").await;
    let cutoff = Utc::now() - chrono::Duration::minutes(3);
    assert_eq!(s.rescue_expired(cutoff, "node-a").await.unwrap(), 2);
    assert_counts_exact(db, "rescue").await;
    db.bulk_insert("default", 5).await;

    let c = s.claim("node-c", &q, 4).await.unwrap();
    assert_eq!(c.len(), 4);
    assert_eq!(s.release_node("node-c").await.unwrap(), 4);
    assert_counts_exact(db, "release at start").await;

    let stuck = s.claim("node-c", &q, 2).await.unwrap();
    assert_eq!(stuck.len(), 2);
    let killed = s
        .kill_stuck(Utc::now() + chrono::Duration::minutes(1), "stuck")
        .await
        .unwrap();
    assert_eq!(killed.len(), 2);
    assert_counts_exact(db, "the stuck-job killer").await;

    // Late answers for jobs no longer theirs change nothing.
    s.complete("node-c", &[Completion::Completed { id: stuck[0].id }])
        .await
        .unwrap();
    s.complete("node-b", &[Completion::Completed { id: b[1].id }])
        .await
        .unwrap();
    assert_counts_exact(db, "late completions").await;

    assert_eq!(s.retry_failed(None).await.unwrap().len(), 3);
    assert_counts_exact(db, "retry of the dead letters").await;

    assert_eq!(
        s.prune_jobs(Utc::now() + chrono::Duration::minutes(1))
            .await
            .unwrap(),
        5
    );
    assert_counts_exact(db, "prune").await;
    let stats = s.queue_stats(&[]).await.unwrap();
    assert!(
        stats.iter().all(|q| (q.completed, q.failed) == (0, 0)),
        "{stats:?}"
    );
}

/// While batches are enqueued and two nodes claim and finish jobs, every statistics read is
/// one snapshot: its total is a whole number of batches (each batch commits at once) and
/// never goes down (nothing is pruned), however the jobs move between states meanwhile.
async fn queue_stats_is_one_snapshot_under_load(db: &TestDb) {
    const BATCH: usize = 25;
    const BATCHES: usize = 16;
    let store = db.store.clone();
    let enqueued = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let enqueuer = tokio::spawn({
        let (s, enqueued) = (store.clone(), enqueued.clone());
        async move {
            for _ in 0..BATCHES {
                let jobs: Vec<NewJob> = (0..BATCH).map(|_| new_job("noop", "default")).collect();
                s.enqueue_many(&jobs).await.unwrap();
            }
            enqueued.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });
    // Each job: failed, or retried once and then completed, or completed.
    let workers: Vec<_> = ["node-a", "node-b"]
        .into_iter()
        .map(|name| {
            let (s, enqueued) = (store.clone(), enqueued.clone());
            tokio::spawn(async move {
                loop {
                    let done = enqueued.load(std::sync::atomic::Ordering::SeqCst);
                    let claimed = s.claim(name, &queues(&["default"]), 7).await.unwrap();
                    if claimed.is_empty() && done {
                        break;
                    }
                    let batch: Vec<Completion> = claimed
                        .iter()
                        .map(|j| match (j.id % 3, j.attempts) {
                            (0, _) => Completion::Fail {
                                id: j.id,
                                error: "e".to_owned(),
                            },
                            (1, 1) => Completion::Retry {
                                id: j.id,
                                error: "again".to_owned(),
                                available_at: Utc::now(),
                            },
                            _ => Completion::Completed { id: j.id },
                        })
                        .collect();
                    s.complete(name, &batch).await.unwrap();
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let mut last = 0;
    let mut reads = 0;
    while !(enqueuer.is_finished() && workers.iter().all(|w| w.is_finished())) {
        let total: u64 = store
            .queue_stats(&[])
            .await
            .unwrap()
            .iter()
            .map(|q| q.ready + q.delayed + q.reserved + q.completed + q.failed)
            .sum();
        assert_eq!(total % BATCH as u64, 0, "read {reads}: {total} jobs");
        assert!(total >= last, "read {reads}: {total} after {last}");
        last = total;
        reads += 1;
    }
    enqueuer.await.unwrap();
    for w in workers {
        w.await.unwrap();
    }
    assert!(reads > 0);
    assert_counts_exact(db, "the load").await;
    let stats = store.queue_stats(&[]).await.unwrap();
    let total: u64 = stats.iter().map(|q| q.completed + q.failed).sum();
    assert_eq!(total, (BATCH * BATCHES) as u64, "{stats:?}");
}

/// The stuck-job killer's mark (PostgreSQL) never hides a reservation: a row reserved with a
/// time before it, by a claim or by plain SQL, is still killed and rescued.
async fn reservations_older_than_the_mark_are_still_found(db: &TestDb) {
    let s = db.store();
    db.bulk_insert("default", 3).await;
    // Claim one job as a node that is gone, its reservation set `days` back by another program.
    let reserve = |days: i64| async move {
        let claimed = s.claim("gone", &queues(&["default"]), 1).await.unwrap();
        if days > 0 {
            let at = Utc::now() - chrono::Duration::days(days);
            db.set_job_time(claimed[0].id, "reserved_at", at).await;
        }
        ids(&claimed)
    };
    // A pass with a cutoff ahead of every reservation to come.
    assert!(
        s.kill_stuck(Utc::now() + chrono::Duration::hours(1), "stuck")
            .await
            .unwrap()
            .is_empty()
    );
    let first = reserve(0).await;
    let soon = Utc::now() + chrono::Duration::minutes(1);
    assert_eq!(s.kill_stuck(soon, "stuck").await.unwrap(), first);
    let day_ago = Utc::now() - chrono::Duration::days(1);
    reserve(2).await;
    assert_eq!(s.rescue_expired(day_ago, NODE).await.unwrap(), 1);
    let third = reserve(3).await;
    assert_eq!(s.kill_stuck(day_ago, "stuck").await.unwrap(), third);
    assert_counts_exact(db, "the kills and the rescue").await;
}

/// Rows of `jobs` read so far by sequential and index scans (`pg_stat_user_tables`). The
/// calling backend's own counters are published first (`pg_stat_force_next_flush` takes effect
/// when the backend goes idle, before it answers). Other backends publish theirs within about
/// a second; the migrations' scans, the only other reads of `jobs`, read an empty table.
async fn jobs_rows_read(pool: &sqlx::PgPool) -> i64 {
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT seq_tup_read + coalesce(idx_tup_fetch, 0)
         FROM pg_stat_user_tables WHERE relname = 'jobs'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// With 100,000 finished jobs retained, the statistics, the reaper's rescue and stuck-job
/// killer and the release at start read none of them: PostgreSQL's own counters of the reads
/// of `jobs` say so. Everything runs on one connection, whose counters the test publishes.
async fn postgres_stats_and_reaper_read_no_retained_rows(db: &TestDb) {
    if !db.is_pg() {
        return; // SQLite reads partial indexes holding only unfinished rows.
    }
    let cfg = chom_core::config::DatabaseConfig {
        url: db.url.clone(),
        max_connections: 1,
        connect_timeout: Duration::from_secs(10),
    };
    let one = chom_store::PgStore::open(&db.url, &cfg).unwrap();
    let pool = one.pool();
    sqlx::query(
        "INSERT INTO jobs (queue, kind, payload, state, attempts, reserved_at, reserved_by,
                           finished_at)
         SELECT 'default', 'noop', '{}', CASE WHEN g % 10 = 0 THEN 'failed' ELSE 'completed' END,
                1, now() - g * interval '100 ms', 'old-node', now() - g * interval '100 ms'
         FROM generate_series(1, 100000) AS g",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO jobs (queue, kind, payload) SELECT 'default', 'noop', '{}' FROM generate_series(1, 10)")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("ANALYZE jobs").execute(pool).await.unwrap();
    assert_eq!(
        one.claim(NODE, &queues(&["default"]), 3)
            .await
            .unwrap()
            .len(),
        3
    );

    let before = jobs_rows_read(pool).await;
    let stats = one.queue_stats(&queues(&["default"])).await.unwrap();
    let now = Utc::now();
    let rescued = one
        .rescue_expired(now - chrono::Duration::minutes(3), NODE)
        .await
        .unwrap();
    let killed = one
        .kill_stuck(now - chrono::Duration::hours(1), "stuck")
        .await
        .unwrap();
    let released = one.release_node("restarted").await.unwrap();
    let after = jobs_rows_read(pool).await;

    assert_eq!(
        (
            stats[0].ready,
            stats[0].reserved,
            stats[0].completed,
            stats[0].failed
        ),
        (7, 3, 90_000, 10_000)
    );
    assert_eq!((rescued, killed.len(), released), (0, 0, 0));
    // The unfinished jobs, a few times over at most; a scan of the retained ones reads 100,000.
    let read = after - before;
    assert!(read <= 20, "{read} rows of jobs read");
}

/// The counts start exact on a database already holding jobs in every state: the migration
/// that brings them counts the rows (here left by the previous version's schema), and they
/// stay exact after.
async fn counts_migration_counts_stored_jobs(db: &TestDb) {
    let (pg, sqlite) = (
        "INSERT INTO jobs (queue, kind, payload, state, reserved_at, reserved_by, finished_at)
         SELECT q, 'noop', '{}', st,
             CASE WHEN st = 'pending' THEN NULL ELSE now() - interval '1 minute' END,
             CASE WHEN st = 'pending' THEN NULL WHEN g % 2 = 0 THEN 'node-x' ELSE 'node-y' END,
             CASE WHEN st IN ('completed', 'failed') THEN now() END
         FROM generate_series(1, 7) AS g,
             unnest(ARRAY['default', 'high']) AS q,
             unnest(ARRAY['pending', 'reserved', 'completed', 'failed']) AS st",
        "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 7),
             q(name) AS (VALUES ('default'), ('high')),
             st(s) AS (VALUES ('pending'), ('reserved'), ('completed'), ('failed'))
         INSERT INTO jobs (queue, kind, payload, state, reserved_at, reserved_by, finished_at)
         SELECT q.name, 'noop', '{}', st.s,
             CASE WHEN st.s = 'pending' THEN NULL ELSE 1000 END,
             CASE WHEN st.s = 'pending' THEN NULL WHEN g.n % 2 = 0 THEN 'node-x' ELSE 'node-y' END,
             CASE WHEN st.s IN ('completed', 'failed') THEN 2000 END
         FROM g, q, st",
    );
    assert_eq!(db.exec(pg, sqlite).await, 56);
    db.store().migrate().await.unwrap();
    assert_counts_exact(db, "the migration").await;
    let stats = db.store().queue_stats(&[]).await.unwrap();
    assert_eq!(
        stats
            .iter()
            .map(|q| (q.queue.as_str(), q.reserved, q.completed, q.failed))
            .collect::<Vec<_>>(),
        vec![("default", 7, 7, 7), ("high", 7, 7, 7)]
    );
    let claimed = db
        .store()
        .claim("node-x", &queues(&["default"]), 3)
        .await
        .unwrap();
    let batch: Vec<Completion> = claimed
        .iter()
        .map(|j| Completion::Completed { id: j.id })
        .collect();
    db.store().complete("node-x", &batch).await.unwrap();
    db.store()
        .prune_jobs(Utc::now() + chrono::Duration::minutes(1))
        .await
        .unwrap();
    assert_counts_exact(db, "claims, completions and a prune").await;
}

/// Migrations held back so that the counts migration (PostgreSQL 0012, SQLite 0011) runs on
/// a database already holding jobs: it and the later ones (the console's operators).
const FROM_COUNTS: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_counts_migration_counts_stored_jobs() {
    counts_migration_counts_stored_jobs(&TestDb::sqlite_but(FROM_COUNTS).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_counts_migration_counts_stored_jobs() {
    counts_migration_counts_stored_jobs(&TestDb::postgres_but(FROM_COUNTS).await).await;
}

// === console operators ===

/// Operators are unique by name; a session is found by its hash only while used within the
/// idle window, is touched at most once a minute, ends on sign-out, and removing an
/// operator ends every session of theirs.
async fn ui_users_and_sessions(db: &TestDb) {
    let s = db.store();
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";
    let ada = s.create_ui_user("ada", hash).await.unwrap();
    assert_eq!(
        (ada.name.as_str(), ada.password_hash.as_str()),
        ("ada", hash)
    );
    assert_near(ada.created_at, Utc::now(), "created_at");
    let error = s.create_ui_user("ada", "other").await.unwrap_err();
    assert!(
        matches!(&error, StoreError::Conflict(m) if m.contains("ada")),
        "{error}"
    );
    assert_eq!(s.ui_user("ada").await.unwrap(), Some(ada.clone()));
    assert_eq!(s.ui_user("bob").await.unwrap(), None);

    let (one, two) = ("a".repeat(64), "b".repeat(64));
    let long_ago = Utc::now() - chrono::Duration::hours(1);
    s.create_ui_session(ada.id, &one, long_ago).await.unwrap();
    s.create_ui_session(ada.id, &two, long_ago).await.unwrap();
    let found = s.ui_session(&one, long_ago).await.unwrap().expect("live");
    assert_eq!((found.user_id, found.user.as_str()), (ada.id, "ada"));
    assert_near(found.last_seen_at, Utc::now(), "last_seen_at");
    // Idle since before the cutoff: over.
    let future = Utc::now() + chrono::Duration::seconds(5);
    assert_eq!(s.ui_session(&one, future).await.unwrap(), None);
    assert_eq!(s.ui_session(&"c".repeat(64), long_ago).await.unwrap(), None);

    // Fresh sessions are not written again; a later touch moves last_seen_at.
    assert!(!s.touch_ui_session(&one, Utc::now()).await.unwrap());
    let later = Utc::now() + chrono::Duration::minutes(5);
    assert!(s.touch_ui_session(&one, later).await.unwrap());
    let moved = s.ui_session(&one, future).await.unwrap().expect("touched");
    assert_near(moved.last_seen_at, later, "touched last_seen_at");

    // Sign-out ends one session; a new sign-in drops the operator's idle ones.
    assert!(s.end_ui_session(&one).await.unwrap());
    assert!(!s.end_ui_session(&one).await.unwrap());
    s.create_ui_session(ada.id, &"d".repeat(64), future)
        .await
        .unwrap();
    assert_eq!(
        s.ui_session(&two, long_ago).await.unwrap(),
        None,
        "idle session dropped"
    );

    // Removing the operator ends what is left.
    assert!(s.remove_ui_user("ada").await.unwrap());
    assert!(!s.remove_ui_user("ada").await.unwrap());
    assert_eq!(s.ui_session(&"d".repeat(64), long_ago).await.unwrap(), None);
    assert_eq!(s.ui_user("ada").await.unwrap(), None);
}

/// For each case, `sqlite::<case>` and `postgres::<case>`.
macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let db = crate::common::TestDb::sqlite().await;
                    super::$case(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let db = crate::common::TestDb::postgres().await;
                    super::$case(&db).await;
                }
            )*
        }
    };
}

suite!(
    postgres_completions_touch_no_index,
    server_capacity_holds_under_concurrent_creations,
    migrate_is_idempotent,
    enqueue_round_trips_every_field,
    enqueue_many_stores_a_batch_in_order,
    unique_key_dedupes_until_finished,
    concurrent_enqueues_of_one_key_yield_one_job,
    delayed_jobs_are_not_claimed_until_due,
    claim_is_strict_priority,
    claim_respects_limit,
    claim_reserves_and_counts_attempts,
    concurrent_claimers_never_share_a_job,
    complete_completed_keeps_last_error,
    complete_retry_reschedules,
    complete_fail_writes_failed_job,
    complete_release_restores_attempts,
    complete_defer_reschedules_without_using_an_attempt,
    complete_applies_a_mixed_batch,
    complete_only_changes_reserved_rows,
    plain_sql_insert_is_claimable,
    bad_json_payload_is_stored_as_is,
    pause_and_resume_queues,
    queue_stats_counts_every_state,
    queue_counts_stay_exact_through_every_transition,
    queue_stats_is_one_snapshot_under_load,
    reservations_older_than_the_mark_are_still_found,
    postgres_stats_and_reaper_read_no_retained_rows,
    jobs_lists_newest_first_with_filters,
    release_node_returns_its_reservations,
    rescue_expired_takes_only_dead_nodes_stale_jobs,
    kill_stuck_fails_old_reservations,
    prune_jobs_keeps_pending_and_reserved,
    failed_jobs_list_and_retry,
    prune_failed_removes_old_rows,
    failures_by_kind_and_failed_since,
    listen_wakes_on_inserts,
    heartbeat_refreshes_seen_at,
    vps_add_list_remove,
    config_vps_upsert_updates_in_place,
    tenants_and_sites,
    vps_tenant_round_trips,
    owned_servers_refuse_other_tenants_sites,
    unique_key_hit_reports_the_holders_queue,
    out_of_range_jobs_are_refused,
    absurd_rows_never_break_reads,
    listings_carry_bounded_previews,
    probe_write_commits_and_pool_stays_clean,
    site_failure_reason_is_capped,
    alerts_upsert_resend_resolve_and_order,
    stale_alerts_are_forgotten,
    alerts_of_one_call_are_stored_together_or_not_at_all,
    api_tokens_are_made_listed_revoked_and_authenticate,
    api_token_use_is_recorded_at_most_once_a_minute,
    api_tokens_per_tenant_are_bounded,
    ui_users_and_sessions,
);
