//! Strong replication on real node processes, moving data: a planned master transfer
//! under writes loses nothing, a decommissioned master hands over, a dead replica's
//! slot moves to a live node, and a replica behind the trimmed oplog catches up from
//! a snapshot.

use datalayer_api::v1 as pb;
use datalayer_tests::replicated::{
    a_follower, assert_all_present, cluster_with_table, node_index, wait_replicas_agree,
    wait_tablet, write_all,
};
use datalayer_tests::{CLUSTER_WAIT, wait_until};
use std::collections::BTreeMap;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_transferred_under_writes_loses_nothing() {
    let (cluster, _, t) = cluster_with_table(3, &[]).await;
    let master = node_index(t.master);
    let target = a_follower(&t);
    let via = (0..3)
        .find(|i| *i != master && *i as u64 + 1 != target)
        .expect("a third node");
    // Bad targets are refused and change nothing.
    let o = cluster
        .node(via)
        .cli(&["table", "transfer-master", "t", "9"]);
    assert_eq!(o.status.code(), Some(2), "{}", datalayer_tests::stderr(&o));
    assert!(
        datalayer_tests::stderr(&o).contains("in-sync"),
        "{}",
        datalayer_tests::stderr(&o)
    );
    let o = cluster
        .node(via)
        .cli(&["table", "transfer-master", "t", "nine"]);
    assert_eq!(o.status.code(), Some(2));
    // A writer with acks=1 keeps writing through the transfer; the client retries
    // writes refused while the master hands over.
    let mut w = cluster.client(via).await.expect("connect");
    w.set_acks(Some(datalayer_client::acks_one()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut acked = BTreeMap::new();
            let mut k = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || k < 100 {
                let (key, value) = (format!("k{k:05}"), format!("v{k}"));
                w.put("t", key.as_bytes(), value.as_bytes())
                    .await
                    .unwrap_or_else(|e| panic!("put {key}: {e}"));
                acked.insert(key, value);
                k += 1;
            }
            acked
        })
    };
    let o = cluster.node(via).cli(&[
        "--json",
        "table",
        "transfer-master",
        "t",
        &target.to_string(),
    ]);
    assert!(o.status.success(), "{}", datalayer_tests::stderr(&o));
    let v = datalayer_tests::json(&o);
    assert_eq!(v["master"].as_u64(), Some(target), "{v}");
    assert_eq!(v["master_epoch"].as_u64(), Some(t.master_epoch + 1), "{v}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = writer.await.expect("writer");
    // Every write acknowledged by the old master alone is on the new one (a `latest`
    // read: the writes acknowledged by the new master with acks=1 may not have
    // committed yet).
    let mut c = cluster.client(node_index(target)).await.expect("connect");
    c.set_consistency(pb::ReadConsistency::Latest);
    assert_all_present(&mut c, "t", &acked).await;
    let after = wait_tablet(&cluster, via, "t", "the old master back in sync", |t| {
        t.in_sync.len() == 3
    })
    .await;
    assert_eq!(after.master, target);
    wait_replicas_agree(&cluster, &after).await;
    // Transferring to the current master changes nothing.
    let o = cluster.node(via).cli(&[
        "--json",
        "table",
        "transfer-master",
        "t",
        &target.to_string(),
    ]);
    assert!(o.status.success(), "{}", datalayer_tests::stderr(&o));
    assert_eq!(
        datalayer_tests::json(&o)["master_epoch"].as_u64(),
        Some(t.master_epoch + 1)
    );
}

/// A master syncs a group of writes that wait for followers' acks when its pacer (the
/// lowest-id in-sync follower) starts its next replication call, and the other
/// followers' calls wait for the pacer's too, so concurrent writes share syncs. Both
/// waits are bounded: with the pacer killed and kept in the in-sync set (a long
/// `replica_lag_ms`), concurrent acks=2 writes still commit with the other follower —
/// an unbounded wait would leave them to time out as ambiguous — and the pacer,
/// restarted, catches up, after which acks=all writes are paced by it again.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decommissioned_master_hands_over_and_a_new_replica_catches_up() {
    let (cluster, _, t) = cluster_with_table(4, &[]).await;
    let spare = (1..=4u64)
        .find(|n| !t.replicas.contains(n))
        .expect("a node without a replica");
    let master = node_index(t.master);
    // Writes acknowledged by the master alone must survive the hand-over too.
    let mut w = cluster.client(master).await.expect("connect");
    w.set_acks(Some(datalayer_client::acks_one()));
    let mut acked = BTreeMap::new();
    for k in 0..300u32 {
        let (key, value) = (format!("k{k:05}"), format!("v{k}"));
        w.put("t", key.as_bytes(), value.as_bytes())
            .await
            .expect("put");
        acked.insert(key, value);
    }
    let via = (0..4)
        .find(|i| *i != master && *i as u64 + 1 != spare)
        .expect("a third node");
    let o = cluster
        .node(via)
        .cli(&["node", "decommission", &t.master.to_string()]);
    assert!(o.status.success(), "{}", datalayer_tests::stderr(&o));
    // The spare node takes the freed replica slot, catches up from the new master's
    // oplog and joins the in-sync set.
    let after = wait_tablet(
        &cluster,
        via,
        "t",
        "the spare node is an in-sync replica",
        |t| t.in_sync.len() == 3 && t.in_sync.contains(&spare),
    )
    .await;
    assert!(!after.replicas.contains(&t.master), "{after:?}");
    assert_eq!(after.master_epoch, t.master_epoch + 1);
    let mut c = cluster.client(via).await.expect("connect");
    assert_all_present(&mut c, "t", &acked).await;
    wait_replicas_agree(&cluster, &after).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replica_moves_to_a_live_node_that_catches_up() {
    let (mut cluster, _, t) = cluster_with_table(4, &["--dead-node-secs", "3"]).await;
    let spare = (1..=4u64)
        .find(|n| !t.replicas.contains(n))
        .expect("a node without a replica");
    let victim = a_follower(&t);
    let master = node_index(t.master);
    let mut w = cluster.client(master).await.expect("connect");
    let mut acked = write_all(&mut w, "t", 0..300).await;
    cluster.node_mut(node_index(victim)).kill();
    // Past the dead-node timeout the spare node takes the victim's replica, catches
    // up from the master's oplog and joins the in-sync set.
    let after = wait_tablet(
        &cluster,
        master,
        "t",
        "the spare node replaces the dead replica",
        |t| {
            t.replicas.len() == 3
                && !t.replicas.contains(&victim)
                && t.in_sync.contains(&spare)
                && t.in_sync.len() == 3
                && t.moving_to == 0
        },
    )
    .await;
    acked.extend(write_all(&mut w, "t", 300..400).await);
    assert_all_present(&mut w, "t", &acked).await;
    wait_replicas_agree(&cluster, &after).await;
    // The dead node comes back without its replica: it deletes its stale copy.
    let victim = node_index(victim);
    cluster.node_mut(victim).restart().expect("restart");
    wait_until(
        "the returning node drops its old copy",
        CLUSTER_WAIT,
        || async {
            cluster.node(victim).is_running() && cluster.replica_digest(victim, "t") == Ok(None)
        },
    )
    .await
    .expect("stale copy deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_the_trimmed_oplog_catches_up_from_a_snapshot() {
    let (mut cluster, _, t) = cluster_with_table(3, &["--oplog-retention-records", "100"]).await;
    let victim = a_follower(&t);
    let master = node_index(t.master);
    let mut w = cluster.client(master).await.expect("connect");
    let mut acked = write_all(&mut w, "t", 0..50).await;
    cluster.node_mut(node_index(victim)).kill();
    // Far more records than the oplog keeps: the master trims what the victim lacks.
    acked.extend(write_all(&mut w, "t", 50..450).await);
    cluster
        .node_mut(node_index(victim))
        .restart()
        .expect("restart");
    let after = wait_tablet(&cluster, master, "t", "the victim is back in sync", |t| {
        t.in_sync.contains(&victim) && t.in_sync.len() == 3
    })
    .await;
    assert!(
        cluster
            .node(node_index(victim))
            .log_text()
            .contains("installed a snapshot"),
        "the victim caught up from a snapshot, not the oplog"
    );
    acked.extend(write_all(&mut w, "t", 450..500).await);
    wait_replicas_agree(&cluster, &after).await;
    // The victim serves everything from its own replica.
    wait_until(
        "the victim's replica holds every write",
        CLUSTER_WAIT,
        || async {
            match cluster.client(node_index(victim)).await {
                Ok(mut c) => {
                    c.set_consistency(pb::ReadConsistency::Follower);
                    c.scan("t", b"", b"", 0, false)
                        .await
                        .is_ok_and(|rows| rows.len() == acked.len())
                }
                Err(_) => false,
            }
        },
    )
    .await
    .expect("follower scan");
}

/// A master stopped on purpose (SIGTERM) hands its tablet over before it exits: with
/// failover 60 s away, the tablet has a new master as soon as the old one is gone,
/// writes go on through the other nodes, and nothing acknowledged by the old master
/// alone (`acks=1`) is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_stopped_on_purpose_hands_its_tablet_over_first() {
    let (mut cluster, _, t) = cluster_with_table(3, &["--master-failover-ms", "60000"]).await;
    let master = node_index(t.master);
    let via = (0..3).find(|i| *i != master).expect("another node");
    let mut c = cluster.client(via).await.expect("connect");
    c.set_acks(Some(datalayer_client::acks_one()));
    let mut acked = write_all(&mut c, "t", 0..100).await;
    let status = cluster.node_mut(master).stop().expect("stops");
    assert!(status.success(), "{status}");
    // Well before any failover could happen, the metadata names another master in
    // the next epoch.
    wait_until(
        "another master, from the hand-over",
        std::time::Duration::from_secs(20),
        || async {
            datalayer_tests::replicated::tablet(&cluster, via, "t")
                .await
                .is_some_and(|n| n.master != t.master && n.master_epoch == t.master_epoch + 1)
        },
    )
    .await
    .expect("handed over");
    c.set_acks(Some(datalayer_client::acks_all()));
    acked.extend(write_all(&mut c, "t", 100..150).await);
    assert_all_present(&mut c, "t", &acked).await;
    let log = cluster.node(master).log_text();
    assert!(log.contains("handed tablets over before stopping"), "{log}");
}
