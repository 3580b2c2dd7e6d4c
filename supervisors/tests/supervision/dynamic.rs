//! Dynamic supervisors: children added and removed at run time, bounded by max_children.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chom_supervisors::{ChildSpec, Restart, SupervisorError, SupervisorMsg, SupervisorSpec};
use ractor::ActorRef;

use crate::common::*;

async fn add(sup: &ActorRef<SupervisorMsg>, spec: ChildSpec) -> Result<(), SupervisorError> {
    call(sup, |reply| SupervisorMsg::AddChild { spec, reply }).await
}

async fn remove(sup: &ActorRef<SupervisorMsg>, id: &str) -> Result<(), SupervisorError> {
    let id = id.to_owned();
    call(sup, |reply| SupervisorMsg::RemoveChild { id, reply }).await
}

async fn ids(sup: &ActorRef<SupervisorMsg>) -> Vec<String> {
    tree(sup).await.children.into_iter().map(|c| c.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_remove_and_max_children() {
    let log = new_log();
    let (sup, handle) = started("fleet", SupervisorSpec::dynamic(2)).await;

    assert_eq!(add(&sup, calm("vps:1", &log)).await, Ok(()));
    assert_eq!(
        add(&sup, calm("vps:1", &log)).await,
        Err(SupervisorError::DuplicateId("vps:1".into()))
    );
    assert_eq!(
        add(&sup, calm("a/b", &log)).await,
        Err(SupervisorError::InvalidId("a/b".into()))
    );
    assert_eq!(add(&sup, calm("vps:2", &log)).await, Ok(()));
    assert_eq!(
        add(&sup, calm("vps:3", &log)).await,
        Err(SupervisorError::MaxChildren(2))
    );
    assert_eq!(ids(&sup).await, ["vps:1", "vps:2"]);
    assert_eq!(tree(&sup).await.child("vps:1").unwrap().path, "fleet/vps:1");

    assert_eq!(remove(&sup, "vps:1").await, Ok(()));
    assert_eq!(with_prefix(&log, "stop:"), ["stop:vps:1"]);
    assert_eq!(
        remove(&sup, "vps:1").await,
        Err(SupervisorError::NoSuchChild("fleet/vps:1".into()))
    );
    assert_eq!(add(&sup, calm("vps:3", &log)).await, Ok(()));
    assert_eq!(ids(&sup).await, ["vps:2", "vps:3"]);

    // a child that does not start is refused and not kept
    assert_eq!(remove(&sup, "vps:3").await, Ok(()));
    let broken = Arc::new(Script::default());
    broken.fail_starts.store(1, Ordering::SeqCst);
    let refused = add(&sup, probe("vps:4", &log, &broken)).await;
    assert!(
        matches!(&refused, Err(SupervisorError::StartFailed(why)) if why.contains("pre_start boom")),
        "{refused:?}"
    );
    assert_eq!(ids(&sup).await, ["vps:2"]);

    sup.stop(None);
    handle.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_that_are_not_restarted_are_forgotten() {
    let log = new_log();
    let (sup, handle) = started("fleet", SupervisorSpec::dynamic(10)).await;
    add(&sup, calm("temp", &log).restart(Restart::Temporary))
        .await
        .unwrap();
    add(&sup, calm("trans", &log).restart(Restart::Transient))
        .await
        .unwrap();
    add(&sup, calm("perm", &log)).await.unwrap();
    let perm = id_of(&sup, "perm").await;

    poke(&sup, "temp", ProbeMsg::Panic).await;
    poke(&sup, "trans", ProbeMsg::Stop(None)).await;
    poke(&sup, "perm", ProbeMsg::Stop(None)).await;

    replaced(&sup, "perm", perm).await;
    until("temp and trans to be forgotten", || async {
        ids(&sup).await == ["perm"]
    })
    .await;
    sup.stop(None);
    handle.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_is_free_again_once_its_child_is_gone() {
    let log = new_log();
    let (sup, handle) = started("fleet", SupervisorSpec::dynamic(10)).await;

    // Refused at start: its id is not kept.
    let broken = Arc::new(Script::default());
    broken.fail_starts.store(1, Ordering::SeqCst);
    assert!(add(&sup, probe("vps:1", &log, &broken)).await.is_err());
    assert_eq!(add(&sup, calm("vps:1", &log)).await, Ok(()));
    assert_eq!(
        add(&sup, calm("vps:1", &log)).await,
        Err(SupervisorError::DuplicateId("vps:1".into()))
    );

    // Removed: the id can be added again, once.
    assert_eq!(remove(&sup, "vps:1").await, Ok(()));
    assert_eq!(add(&sup, calm("vps:1", &log)).await, Ok(()));
    assert_eq!(
        add(&sup, calm("vps:1", &log)).await,
        Err(SupervisorError::DuplicateId("vps:1".into()))
    );

    // Exited and not restarted (temporary): forgotten, id and all.
    add(&sup, calm("temp", &log).restart(Restart::Temporary))
        .await
        .unwrap();
    poke(&sup, "temp", ProbeMsg::Stop(None)).await;
    until("temp to be forgotten", || async {
        ids(&sup).await == ["vps:1"]
    })
    .await;
    assert_eq!(
        add(&sup, calm("temp", &log).restart(Restart::Temporary)).await,
        Ok(())
    );
    assert_eq!(ids(&sup).await, ["vps:1", "temp"]);

    sup.stop(None);
    handle.await.unwrap();
}
