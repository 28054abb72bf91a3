//! Strong replication on real node processes: writes acknowledged by the in-sync set
//! survive the master's `kill -9`, the controller appoints the most advanced in-sync
//! replica, a restarted replica catches up and rejoins, and writes whose acks do not
//! arrive answer "ambiguous" with a position whose fate can be asked later.

use datalayer_api::v1 as pb;
use datalayer_client::ErrorKind;
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
async fn writes_without_their_acks_are_ambiguous_and_their_fate_can_be_asked() {
    let (mut cluster, _, t) = cluster_with_table(3, &[]).await;
    let master = node_index(t.master);
    // Bad acks are refused and change nothing.
    let o = cluster
        .node(master)
        .cli(&["--acks", "4", "put", "t", "k", "v"]);
    assert_eq!(o.status.code(), Some(2), "{}", datalayer_tests::stderr(&o));
    assert!(
        datalayer_tests::stderr(&o).contains("acks"),
        "{}",
        datalayer_tests::stderr(&o)
    );
    let o = cluster
        .node(master)
        .cli(&["--acks", "zero", "put", "t", "k", "v"]);
    assert_eq!(o.status.code(), Some(2));
    let o = cluster.node(master).cli(&["get", "t", "k"]);
    assert_eq!(o.status.code(), Some(1), "nothing was written");

    // A follower dies: a write that needs all 3 replicas cannot get its acks.
    let dead = (master + 1) % 3;
    cluster.node_mut(dead).kill();
    let o = cluster
        .node(master)
        .cli(&["--json", "--acks", "3", "put", "t", "lonely", "v"]);
    assert_eq!(o.status.code(), Some(2), "{}", datalayer_tests::stderr(&o));
    let v = datalayer_tests::json(&o);
    assert_eq!(v["detail"]["kind"], "ERROR_KIND_AMBIGUOUS", "{v}");
    let pos = &v["detail"]["position"];
    let (tablet, epoch, seq) = (
        pos["tablet"].as_u64().expect("tablet"),
        pos["epoch"].as_u64().expect("epoch"),
        pos["seq"].as_u64().expect("seq"),
    );
    assert_eq!(tablet, t.id);
    // acks=1 writes are acknowledged by the master alone, and `latest` reads see them.
    let o = cluster
        .node(master)
        .cli(&["--acks", "1", "put", "t", "solo", "v1"]);
    assert!(o.status.success(), "{}", datalayer_tests::stderr(&o));
    let o = cluster
        .node(master)
        .cli(&["--consistency", "latest", "get", "t", "solo"]);
    assert_eq!(datalayer_tests::stdout(&o).trim(), "v1");

    // The master drops the dead follower from the in-sync set; the write at the
    // ambiguous position is then held by the whole (smaller) set: committed.
    let mut c = cluster.client(master).await.expect("connect");
    let tablet_id = tablet;
    let dead_id = dead as u64 + 1;
    wait_until(
        "the dead follower leaves the in-sync set",
        CLUSTER_WAIT,
        || {
            let mut c = c.clone();
            async move {
                c.describe_table("t").await.is_ok_and(|d| {
                    d.tablets[0].in_sync.len() == 2 && !d.tablets[0].in_sync.contains(&dead_id)
                })
            }
        },
    )
    .await
    .expect("shrink");
    let state = c
        .write_status(
            "t",
            pb::WritePosition {
                tablet_id,
                epoch,
                seq,
            },
        )
        .await
        .expect("write status");
    assert_eq!(state, pb::WriteState::Committed);
    let args = [
        "write-status".to_string(),
        "t".into(),
        tablet.to_string(),
        epoch.to_string(),
        seq.to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = cluster.node(master).cli(&args);
    assert_eq!(datalayer_tests::stdout(&o).trim(), "committed");
    // A position never written in this epoch's log was lost.
    let o = cluster.node(master).cli(&[
        "write-status",
        "t",
        &tablet.to_string(),
        &(epoch + 7).to_string(),
        "1",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(datalayer_tests::stdout(&o).trim(), "lost");
    // Committed reads see the write now.
    assert_eq!(
        c.get("t", b"lonely").await.expect("get").map(|v| v.value),
        Some(b"v".to_vec())
    );
    let err = {
        let mut c = c.clone();
        c.set_acks(Some(datalayer_client::acks_count(0)));
        c.put("t", b"x", b"y").await.expect_err("acks 0 is invalid")
    };
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
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
    let victim = *t
        .replicas
        .iter()
        .find(|n| **n != t.master)
        .expect("a follower");
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
async fn follower_reads_are_served_by_replicas_and_say_how_stale_they_are() {
    // No failover during the pause below: the test is about staleness.
    let (cluster, mut c, t) = cluster_with_table(3, &["--master-failover-ms", "60000"]).await;
    c.put("t", b"k", b"v").await.expect("put");
    let read = |i: usize, max: &str| {
        cluster.node(i).cli(&[
            "--json",
            "--consistency",
            "follower",
            "--max-staleness-ms",
            max,
            "get",
            "t",
            "k",
        ])
    };
    // Every node serves it from its own replica once that replica knows it committed.
    for i in 0..3 {
        wait_until(
            "a follower read sees the write",
            CLUSTER_WAIT,
            || async move {
                let o = read(i, "10000");
                o.status.success() && datalayer_tests::json(&o)["value"] == "v"
            },
        )
        .await
        .expect("follower read");
    }
    // The master stops: a follower keeps answering, and says how stale it is.
    let master = node_index(t.master);
    let follower = (master + 1) % 3;
    cluster.node(master).pause().expect("pause");
    wait_until(
        "the replica is more than 500 ms behind",
        CLUSTER_WAIT,
        || async {
            let o = read(follower, "500");
            o.status.code() == Some(2) && datalayer_tests::stderr(&o).contains("ms ago")
        },
    )
    .await
    .expect("bounded staleness");
    let o = read(follower, "60000");
    assert!(o.status.success(), "{}", datalayer_tests::stderr(&o));
    let v = datalayer_tests::json(&o);
    assert_eq!(v["value"], "v");
    assert!(v["staleness_ms"].as_u64().is_some_and(|s| s >= 500), "{v}");
    cluster.node(master).resume().expect("resume");
    wait_until("the replica is fresh again", CLUSTER_WAIT, || async {
        read(follower, "500").status.success()
    })
    .await
    .expect("fresh again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_the_trimmed_oplog_catches_up_from_a_snapshot() {
    let (mut cluster, _, t) = cluster_with_table(3, &["--oplog-retention-records", "100"]).await;
    let victim = *t
        .replicas
        .iter()
        .find(|n| **n != t.master)
        .expect("a follower");
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
async fn a_pending_write_is_aborted_and_no_replica_or_reader_ever_sees_it() {
    let (mut cluster, mut c, t) = cluster_with_table(3, &[]).await;
    let master = node_index(t.master);
    let mut followers = t.replicas.iter().copied().filter(|n| *n != t.master);
    let (dead, live) = (
        followers.next().expect("a follower"),
        followers.next().expect("another"),
    );
    c.put("t", b"base", b"0").await.expect("a committed write");
    let committed = c
        .write("t", vec![datalayer_client::put(b"kept", b"1")])
        .await
        .expect("write")
        .position
        .expect("position");
    // A follower dies. It stays in the in-sync set for `replica_lag_ms`: meanwhile
    // writes answered with acks=1 are pending, not committed.
    cluster.node_mut(node_index(dead)).kill();
    let mut one = cluster.client(master).await.expect("connect");
    one.set_acks(Some(datalayer_client::acks_one()));
    let x = one
        .write("t", vec![datalayer_client::put(b"x", b"1")])
        .await
        .expect("x")
        .position
        .expect("position");
    let y = one
        .write("t", vec![datalayer_client::put(b"y", b"1")])
        .await
        .expect("y")
        .position
        .expect("position");
    assert_eq!(
        one.write_status("t", x).await.expect("status"),
        pb::WriteState::Pending
    );
    // A writer waiting for all its acks on a later record learns it was aborted.
    let mut all = cluster.client(master).await.expect("connect");
    let waiting = tokio::spawn(async move { all.put("t", b"w", b"1").await });
    let mut latest = cluster.client(master).await.expect("connect");
    latest.set_consistency(pb::ReadConsistency::Latest);
    wait_until("w is in the master's log", CLUSTER_WAIT, || {
        let mut latest = latest.clone();
        async move { latest.get("t", b"w").await.is_ok_and(|v| v.is_some()) }
    })
    .await
    .expect("w staged");
    // Aborting x (through another node, which forwards) voids x, y and w.
    let arg = |p: &pb::WritePosition| {
        [
            "abort-write".to_string(),
            "t".into(),
            p.tablet_id.to_string(),
            p.epoch.to_string(),
            p.seq.to_string(),
        ]
    };
    let args = arg(&x);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = cluster.node(node_index(live)).cli(&args);
    assert!(o.status.success(), "{}", datalayer_tests::stderr(&o));
    assert_eq!(datalayer_tests::stdout(&o).trim(), "aborted");
    assert_eq!(
        one.write_status("t", y).await.expect("status"),
        pb::WriteState::Aborted,
        "later pending writes are voided too"
    );
    assert_eq!(
        one.abort_write("t", x).await.expect("abort again"),
        pb::WriteState::Aborted
    );
    let err = waiting
        .await
        .expect("join")
        .expect_err("the waiting write was aborted");
    assert_eq!(err.kind, ErrorKind::Aborted, "{err:?}");
    // Aborting a committed write changes nothing: exit 1, "committed".
    let args = arg(&committed);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = cluster.node(master).cli(&args);
    assert_eq!(o.status.code(), Some(1), "{}", datalayer_tests::stderr(&o));
    assert_eq!(datalayer_tests::stdout(&o).trim(), "committed");
    // No reader sees the voided writes, at any level.
    for level in [pb::ReadConsistency::Committed, pb::ReadConsistency::Latest] {
        one.set_consistency(level);
        assert_eq!(one.get("t", b"x").await.expect("get x"), None, "{level:?}");
        assert_eq!(one.get("t", b"y").await.expect("get y"), None, "{level:?}");
        assert_eq!(one.get("t", b"w").await.expect("get w"), None, "{level:?}");
        assert_eq!(
            one.get("t", b"kept").await.expect("get").map(|v| v.value),
            Some(b"1".to_vec())
        );
    }
    // Writes go on; the dead follower returns, applies the log with its abort record,
    // and every replica holds the same data.
    let after = c.put("t", b"z", b"1").await;
    after.expect("a write after the abort");
    cluster
        .node_mut(node_index(dead))
        .restart()
        .expect("restart");
    let tablet = wait_tablet(&cluster, master, "t", "the follower is back in sync", |t| {
        t.in_sync.len() == 3
    })
    .await;
    wait_replicas_agree(&cluster, &tablet).await;
    for n in [dead, live] {
        let mut f = cluster.client(node_index(n)).await.expect("connect");
        f.set_consistency(pb::ReadConsistency::Follower);
        wait_until("the replica has the latest write", CLUSTER_WAIT, || {
            let mut f = f.clone();
            async move { f.get("t", b"z").await.is_ok_and(|v| v.is_some()) }
        })
        .await
        .expect("caught up");
        assert_eq!(f.get("t", b"x").await.expect("follower get"), None);
        assert_eq!(f.get("t", b"y").await.expect("follower get"), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_transferred_under_writes_loses_nothing() {
    let (cluster, _, t) = cluster_with_table(3, &[]).await;
    let master = node_index(t.master);
    let target = *t
        .replicas
        .iter()
        .find(|n| **n != t.master)
        .expect("a follower");
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
    // Every write acknowledged by the old master alone is on the new one.
    let mut c = cluster.client(node_index(target)).await.expect("connect");
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
