//! The Redis scripts behind the cluster-wide bulkhead and breakers, on a real (private) Redis:
//! the slot script must answer exactly as its model (`chom_core::lease::SlotTable`) does for
//! any sequence of operations, and the breaker log must hand every node each published change.

use std::time::Duration;

use chom_actors::cache::Cache;
use chom_actors::fleet::breaker_sync;
use chom_actors::fleet::slots::slots_script;
use chom_core::breaker::{BreakerState, Snapshot};
use chom_core::config::CacheConfig;
use chom_core::lease::{Acquired, SlotTable};
use rand::{Rng as _, SeedableRng as _};

async fn cache(url: &str) -> Cache {
    let cache = Cache::open(&CacheConfig {
        url: url.to_owned(),
        command_timeout: Duration::from_secs(2),
    })
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while cache.ping().await.is_err() {
        assert!(std::time::Instant::now() < deadline, "redis never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cache
}

#[tokio::test]
async fn the_slot_script_answers_as_its_model_for_random_operations() {
    let redis = chom_testkit::PrivateRedis::start();
    let cache = cache(&redis.url()).await;
    let ttl = Duration::from_millis(1000);
    let ttl_ms = 1000;
    for seed in 0..20u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let max = rng.random_range(1..5u32);
        let key = format!("slots-{seed}");
        let mut model = SlotTable::new();
        let mut now = 1_000_000u64;
        for step in 0..300 {
            let member = format!("node-{}", rng.random_range(0..8));
            let ctx = format!("seed {seed} step {step} now {now} member {member}");
            match rng.random_range(0..10) {
                0..4 => {
                    let want = match model.acquire(&member, max, ttl_ms, now) {
                        Acquired::Granted => 0,
                        Acquired::Full { retry_in_ms } => retry_in_ms as i64,
                    };
                    let got = slots_script(&cache, &key, "acquire", &member, max, ttl, now)
                        .await
                        .unwrap();
                    assert_eq!(got, want, "acquire: {ctx}");
                }
                4..6 => {
                    let want = i64::from(model.renew(&member, ttl_ms, now));
                    let got = slots_script(&cache, &key, "renew", &member, max, ttl, now)
                        .await
                        .unwrap();
                    assert_eq!(got, want, "renew: {ctx}");
                }
                6..8 => {
                    let want = i64::from(model.release(&member));
                    let got = slots_script(&cache, &key, "release", &member, max, ttl, now)
                        .await
                        .unwrap();
                    assert_eq!(got, want, "release: {ctx}");
                }
                _ => now += rng.random_range(0..1500),
            }
            assert!(model.live(now) <= max as usize);
        }
    }
}

#[tokio::test]
async fn with_the_servers_clock_a_full_table_frees_a_slot_after_the_ttl() {
    let redis = chom_testkit::PrivateRedis::start();
    let cache = cache(&redis.url()).await;
    // Leases taken with the Redis server's clock (no `now` passed), as the node takes them.
    let ttl = Duration::from_millis(300);
    let lease = |member: &'static str| {
        let cache = cache.clone();
        async move {
            let args = vec![
                "acquire".to_owned(),
                member.to_owned(),
                "2".to_owned(),
                ttl.as_millis().to_string(),
                String::new(),
            ];
            let script = chom_actors::cache::Script::new(include_str!("../src/fleet/slots.lua"));
            cache
                .eval::<i64, _>(&script, vec!["server-clock".to_owned()], args)
                .await
                .unwrap()
        }
    };
    assert_eq!(lease("a").await, 0);
    assert_eq!(lease("b").await, 0);
    let wait = lease("c").await;
    assert!(wait > 0 && wait <= 300, "{wait}");
    // Nobody renews: after the ttl the table has room again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if lease("c").await == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "slots never lapsed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn snapshot(state: BreakerState) -> Snapshot {
    Snapshot {
        state,
        reason: None,
        trips: 1,
        open_until: None,
        failures: Vec::new(),
    }
}

#[tokio::test]
async fn the_breaker_log_hands_each_change_once_in_order_and_pages() {
    let redis = chom_testkit::PrivateRedis::start();
    let cache = cache(&redis.url()).await;
    let (cursor, records) = breaker_sync::since(&cache, 0, 10).await.unwrap();
    assert_eq!((cursor, records.len()), (0, 0));

    let s1 = breaker_sync::publish(&cache, "a", "n1", &snapshot(BreakerState::Open))
        .await
        .unwrap();
    let s2 = breaker_sync::publish(&cache, "b", "n2", &snapshot(BreakerState::ForcedOpen))
        .await
        .unwrap();
    assert!(s2 > s1);
    let (cursor, records) = breaker_sync::since(&cache, 0, 10).await.unwrap();
    assert_eq!(cursor, s2);
    let seen: Vec<_> = records
        .iter()
        .map(|(v, r)| (v.as_str(), r.by.as_str(), r.snapshot.state))
        .collect();
    assert_eq!(
        seen,
        [
            ("a", "n1", BreakerState::Open),
            ("b", "n2", BreakerState::ForcedOpen)
        ]
    );
    // Nothing new: nothing handed again.
    let (again, records) = breaker_sync::since(&cache, cursor, 10).await.unwrap();
    assert_eq!((again, records.len()), (cursor, 0));
    // A newer change of "a" moves it after "b", and only it is handed.
    breaker_sync::publish(&cache, "a", "n2", &snapshot(BreakerState::Closed))
        .await
        .unwrap();
    let (_, records) = breaker_sync::since(&cache, cursor, 10).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].1.snapshot.state, BreakerState::Closed);
    let latest = breaker_sync::published(&cache, "a").await.unwrap().unwrap();
    assert_eq!(latest.by, "n2");
    assert!(
        breaker_sync::published(&cache, "none")
            .await
            .unwrap()
            .is_none()
    );

    // Pages: 25 changes read 10 at a time, each once.
    for i in 0..25 {
        breaker_sync::publish(
            &cache,
            &format!("s{i}"),
            "n1",
            &snapshot(BreakerState::Open),
        )
        .await
        .unwrap();
    }
    let (mut cursor, mut got) = (again, Vec::new());
    loop {
        let (next, records) = breaker_sync::since(&cache, cursor, 10).await.unwrap();
        if records.is_empty() {
            break;
        }
        got.extend(records.into_iter().map(|(v, _)| v));
        cursor = next;
    }
    let want: Vec<String> = std::iter::once("a".to_owned())
        .chain((0..25).map(|i| format!("s{i}")))
        .collect();
    assert_eq!(got, want);

    // Redis lost its data (a restart without persistence): a node asking from its old cursor
    // gets what is published from then on.
    redis.stop();
    redis.start_again();
    let cache = self::cache(&redis.url()).await;
    breaker_sync::publish(&cache, "z", "n3", &snapshot(BreakerState::Open))
        .await
        .unwrap();
    let (_, records) = breaker_sync::since(&cache, cursor, 10).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].0, "z");
}
