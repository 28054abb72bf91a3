//! Strong replication on real node processes, failover: writes acknowledged by the
//! in-sync set survive the master's `kill -9` (and the kill of the follower pacing its
//! syncs), the controller appoints the most advanced in-sync replica, a restarted
//! replica catches up and rejoins, a paused master stops serving once its lease
//! lapses, and a retried write is answered by the new master, not applied twice.

use datalayer_api::v1 as pb;
use datalayer_tests::replicated::{
    assert_all_present, cluster_with_table, node_index, tablet, wait_replicas_agree, wait_tablet,
    write_all,
};
use datalayer_tests::{CLUSTER_WAIT, wait_until};
use std::collections::BTreeMap;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_master_kills_and_replicas_catch_up() {
    let (mut cluster, mut c, first) = cluster_with_table(3, &[]).await;
    assert_eq!(first.master_epoch, 1);

    // Acknowledged with acks=all (the table's default): on every replica.
    let mut acked = write_all(&mut c, "t", 0..200).await;
    let master = node_index(first.master);
    let before = wait_tablet(
        &cluster,
        master,
        "t",
        "the master's high watermark reaches its log end",
        |t| t.high_watermark == t.log_end && t.log_end > 200,
    )
    .await;
    assert!(before.log_end >= 201, "{before:?}");

    cluster.node_mut(master).kill();
    let survivor = (master + 1) % 3;
    let second = wait_tablet(&cluster, survivor, "t", "a new master in epoch 2", |t| {
        t.master != first.master && t.master_epoch == 2
    })
    .await;
    assert!(
        !second.in_sync.contains(&first.master),
        "the dead master left the in-sync set: {second:?}"
    );
    let mut c = cluster.client(survivor).await.expect("connect");
    assert_all_present(&mut c, "t", &acked).await;
    // Writes go on under the new master (with the dead node out of the in-sync set).
    acked.extend(write_all(&mut c, "t", 200..300).await);

    // The old master comes back as a follower, catches up and rejoins the in-sync set.
    cluster.node_mut(master).restart().expect("restart");
    wait_tablet(
        &cluster,
        survivor,
        "t",
        "the restarted node rejoins the in-sync set",
        |t| t.in_sync.len() == 3,
    )
    .await;

    // Now kill the second master: the third appointment must still hold everything.
    let second_master = node_index(second.master);
    cluster.node_mut(second_master).kill();
    let other = (0..3)
        .find(|i| *i != second_master && cluster.node(*i).is_running())
        .expect("a live node");
    let third = wait_tablet(&cluster, other, "t", "a new master in epoch 3", |t| {
        t.master != second.master && t.master_epoch == 3
    })
    .await;
    let mut c = cluster.client(other).await.expect("connect");
    assert_all_present(&mut c, "t", &acked).await;
    acked.extend(write_all(&mut c, "t", 300..320).await);
    assert_all_present(&mut c, "t", &acked).await;
    assert_ne!(third.master, second.master);
}

/// A master ships records while it is still syncing them, so one killed may have left
/// followers holding records its own log lacks. Restarted before its lease lapses (so
/// no failover), it is appointed again in the next epoch before it writes anything:
/// the followers cut what it lacks, and nothing acknowledged is lost.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_restarted_before_failover_masters_in_the_next_epoch() {
    let (mut cluster, mut c, t) = cluster_with_table(3, &["--master-failover-ms", "20000"]).await;
    let mut acked = write_all(&mut c, "t", 0..100).await;
    let master = node_index(t.master);
    cluster.node_mut(master).kill();
    cluster.node_mut(master).restart().expect("restart");
    let other = (master + 1) % 3;
    let after = wait_tablet(
        &cluster,
        other,
        "t",
        "the restarted master in the next epoch",
        |x| x.master_epoch > t.master_epoch,
    )
    .await;
    assert_eq!(
        after.master, t.master,
        "appointed again, not failed over: {after:?}"
    );
    assert_eq!(after.master_epoch, t.master_epoch + 1);
    let mut c = cluster.client(other).await.expect("connect");
    assert_all_present(&mut c, "t", &acked).await;
    acked.extend(write_all(&mut c, "t", 100..150).await);
    assert_all_present(&mut c, "t", &acked).await;
    wait_replicas_agree(&cluster, &after).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_master_stops_serving_once_its_lease_lapses() {
    let (cluster, mut c, first) = cluster_with_table(3, &[]).await;
    c.put("t", b"k", b"old").await.expect("put");
    let master = node_index(first.master);
    let liveness = |s: &pb::NodeStatusResponse| {
        s.nodes
            .iter()
            .find(|n| n.id == first.master)
            .map(|n| (n.liveness_epoch, n.lease_left_ms))
            .expect("the master is listed")
    };
    let (epoch_before, left) = liveness(&c.node_status().await.expect("status"));
    assert!(
        left > 0,
        "a serving master's liveness record is current: {left} ms"
    );
    // A pause longer than the failover timeout: the others appoint a new master, which
    // takes a newer write.
    cluster.node(master).pause().expect("pause");
    let other = (master + 1) % 3;
    let second = wait_tablet(&cluster, other, "t", "a new master in epoch 2", |t| {
        t.master_epoch == 2
    })
    .await;
    // Its masterships were ended by incrementing its liveness epoch once its record
    // expired.
    let mut c_other = cluster.client(other).await.expect("connect");
    let (epoch_after, left) = liveness(&c_other.node_status().await.expect("status"));
    assert!(
        epoch_after > epoch_before,
        "the paused master's liveness epoch went from {epoch_before} to {epoch_after}"
    );
    assert!(
        left < 0,
        "the paused master's record has expired: {left} ms"
    );
    let mut c2 = cluster
        .client(node_index(second.master))
        .await
        .expect("connect");
    c2.put("t", b"k", b"new")
        .await
        .expect("put on the new master");
    // The old master wakes up believing it still masters the tablet. Asked straight
    // away (marked as forwarded, so it answers itself), it must not serve the old
    // value: its lease lapsed while it was paused.
    cluster.node(master).resume().expect("resume");
    let mut stub = cluster.client(master).await.expect("connect").kv().clone();
    let mut req = tonic::Request::new(pb::GetRequest {
        table: "t".into(),
        key: b"k".to_vec(),
        ..Default::default()
    });
    req.metadata_mut().insert(
        "x-datalayer-forwarded",
        tonic::metadata::MetadataValue::from_static("1"),
    );
    match stub.get(req).await {
        Ok(r) => assert_ne!(
            r.into_inner().value,
            b"old",
            "a stale read from a deposed master"
        ),
        Err(status) => assert!(
            matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::FailedPrecondition
            ),
            "{status:?}"
        ),
    }
    // Once it hears of the new epoch it follows, and reads through it see the new value.
    wait_until(
        "the old master follows the new one",
        CLUSTER_WAIT,
        || async {
            let Ok(mut c) = cluster.client(master).await else {
                return false;
            };
            c.get("t", b"k")
                .await
                .is_ok_and(|v| v.is_some_and(|v| v.value == b"new"))
        },
    )
    .await
    .expect("the old master catches up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_retried_after_a_failover_is_answered_by_the_new_master_not_applied_twice() {
    let (mut cluster, _, t) = cluster_with_table(3, &[]).await;
    let master = node_index(t.master);
    let mut old = cluster.client(master).await.expect("connect").kv().clone();
    let incr = pb::IncrementRequest {
        table: "t".into(),
        key: b"n".to_vec(),
        delta: 1,
        acks: None,
        request_id: Some(pb::RequestId { client: 42, seq: 1 }),
        route: None,
    };
    let first = old
        .increment(incr.clone())
        .await
        .expect("increment")
        .into_inner();
    assert_eq!(first.value, 1);
    // The answer was "lost": the master dies and the client sends the request again.
    cluster.node_mut(master).kill();
    let other = (0..3).find(|i| *i != master).expect("another node");
    let after = wait_tablet(&cluster, other, "t", "a new master", |n| {
        n.master != t.master && n.master != 0
    })
    .await;
    let mut new = cluster
        .client(node_index(after.master))
        .await
        .expect("connect to the new master")
        .kv()
        .clone();
    let again = new
        .increment(incr)
        .await
        .expect("the retried increment")
        .into_inner();
    assert_eq!(
        again, first,
        "the new master answers from the replicated log"
    );
    let mut c = cluster.client(other).await.expect("connect");
    assert_eq!(
        c.get("t", b"n").await.expect("get").expect("found").value,
        b"1",
        "applied once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_commit_when_the_follower_pacing_the_master_is_killed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "[strong]\nreplica_lag_ms = 600000\n").expect("write config");
    let config = config.to_str().expect("utf8 path");
    let (mut cluster, _, first) = cluster_with_table(3, &["--config", config]).await;
    let master = node_index(first.master);
    let pacer = first
        .in_sync
        .iter()
        .copied()
        .filter(|n| *n != first.master)
        .min()
        .expect("two followers in sync");
    let all = datalayer_client::acks_all();
    let mut acked = write_concurrently(&cluster, master, all, 0..200).await;

    cluster.node_mut(node_index(pacer)).kill();
    let two = datalayer_client::acks_count(2);
    acked.extend(write_concurrently(&cluster, master, two, 200..400).await);
    let t = tablet(&cluster, master, "t").await.expect("tablet");
    assert!(
        t.in_sync.contains(&pacer),
        "the dead pacer stayed in the in-sync set while acks=2 writes committed: {t:?}"
    );
    // Not committed yet (the high watermark waits for the whole in-sync set), but on
    // the master: a `latest` read sees every acknowledged write.
    let mut latest = cluster.client(master).await.expect("connect");
    latest.set_consistency(pb::ReadConsistency::Latest);
    assert_all_present(&mut latest, "t", &acked).await;

    cluster
        .node_mut(node_index(pacer))
        .restart()
        .expect("restart");
    wait_replicas_agree(&cluster, &t).await;
    acked.extend(write_concurrently(&cluster, master, all, 400..500).await);
    let mut c = cluster.client(master).await.expect("connect");
    assert_all_present(&mut c, "t", &acked).await;
    wait_replicas_agree(&cluster, &t).await;
}

/// Writes `keys` through node `node` from eight concurrent clients with `acks`; every
/// write must be acknowledged. Returns what was.
async fn write_concurrently(
    cluster: &datalayer_tests::TestCluster,
    node: usize,
    acks: pb::Acks,
    keys: std::ops::Range<u32>,
) -> BTreeMap<String, String> {
    let mut tasks = Vec::new();
    for w in 0..8 {
        let mut c = cluster.client(node).await.expect("connect");
        c.set_acks(Some(acks));
        let keys: Vec<u32> = keys.clone().filter(|k| k % 8 == w).collect();
        tasks.push(tokio::spawn(async move {
            let mut acked = BTreeMap::new();
            for k in keys {
                let (key, value) = (format!("k{k:05}"), format!("v{k}"));
                c.put("t", key.as_bytes(), value.as_bytes())
                    .await
                    .unwrap_or_else(|e| panic!("put {key}: {e}"));
                acked.insert(key, value);
            }
            acked
        }));
    }
    let mut acked = BTreeMap::new();
    for t in tasks {
        acked.extend(t.await.expect("writer task"));
    }
    acked
}

/// A plain gRPC client (the generated stub: no routing, no retries) writes through
/// whichever live node it picks while the master is killed, twice. A node forwarding
/// to a dead master answers with a status a plain client can act on — `UNAVAILABLE`
/// (retryable: the request never reached the master) or `DEADLINE_EXCEEDED` with kind
/// ambiguous (it may have been applied) — each with its `ErrorDetail`, never
/// `UNKNOWN`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_grpc_client_writing_through_any_node_never_sees_unknown() {
    use prost::Message;
    let (mut cluster, _, first) = cluster_with_table(3, &[]).await;
    let mut master = first.clone();
    let mut answers: Vec<(tonic::Code, Option<pb::ErrorDetail>)> = Vec::new();
    for round in 0..2 {
        let dead = node_index(master.master);
        let live: Vec<String> = (0..3)
            .filter(|i| *i != dead)
            .map(|i| format!("http://{}", cluster.node(i).grpc))
            .collect();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..4u64 {
            let (live, stop) = (live.clone(), stop.clone());
            writers.push(tokio::spawn(async move {
                let mut clients = Vec::new();
                for addr in &live {
                    clients.push(
                        pb::kv_client::KvClient::connect(addr.clone())
                            .await
                            .expect("connect to a live node"),
                    );
                }
                let (mut seen, mut ok_after) = (Vec::new(), 0);
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let c = &mut clients[(i as usize + w as usize) % 2];
                    let req = pb::WriteRequest {
                        table: "t".into(),
                        mutations: vec![pb::Mutation {
                            op: pb::MutationOp::Put as i32,
                            key: format!("r{round}-w{w}-{i}").into_bytes(),
                            value: b"v".to_vec(),
                        }],
                        acks: None,
                        request_id: None,
                        route: None,
                    };
                    match c.write(req).await {
                        Ok(_) => ok_after += 1,
                        Err(s) => {
                            let detail = pb::ErrorDetail::decode(s.details()).ok();
                            seen.push((s.code(), detail));
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        }
                    }
                }
                (seen, ok_after)
            }));
        }
        // Writes flow (as the master counts them), then the master dies under them.
        let before = tablet(&cluster, dead, "t").await.expect("tablet").log_end;
        wait_tablet(&cluster, dead, "t", "writes flow", |t| {
            t.log_end > before + 50
        })
        .await;
        cluster.node_mut(dead).kill();
        let survivor = (dead + 1) % 3;
        let next = wait_tablet(&cluster, survivor, "t", "a new master", |t| {
            t.master != master.master && t.master_epoch > master.master_epoch
        })
        .await;
        let new_master = node_index(next.master);
        let appointed = tablet(&cluster, new_master, "t")
            .await
            .expect("tablet")
            .log_end;
        wait_tablet(
            &cluster,
            new_master,
            "t",
            "writes flow at the new master",
            |t| t.log_end > appointed + 50,
        )
        .await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in writers {
            let (seen, ok) = w.await.expect("writer");
            assert!(ok > 0, "a writer never got a write through");
            answers.extend(seen);
        }
        cluster.node_mut(dead).restart().expect("restart");
        master = wait_tablet(
            &cluster,
            survivor,
            "t",
            "the old master back in sync",
            |t| t.in_sync.len() == 3,
        )
        .await;
    }
    // Writes through a node forwarding to a killed master fail until the failover.
    assert!(
        !answers.is_empty(),
        "no write failed while masters were killed: nothing was checked"
    );
    for (code, detail) in &answers {
        assert_ne!(
            *code,
            tonic::Code::Unknown,
            "a node answered UNKNOWN: {detail:?}"
        );
        let detail = detail
            .as_ref()
            .unwrap_or_else(|| panic!("a {code:?} without an ErrorDetail"));
        let ambiguous = detail.kind == pb::ErrorKind::Ambiguous as i32;
        match code {
            tonic::Code::Unavailable => assert!(detail.retryable, "{detail:?}"),
            tonic::Code::DeadlineExceeded => assert!(ambiguous, "{detail:?}"),
            tonic::Code::FailedPrecondition => {
                assert_eq!(detail.kind, pb::ErrorKind::NotMaster as i32, "{detail:?}")
            }
            other => panic!("a node answered {other:?}: {detail:?}"),
        }
    }
}
