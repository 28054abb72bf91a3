//! Strong replication on real node processes, acks and reads: writes whose acks do
//! not arrive answer "ambiguous" with a position whose fate can be asked later, a
//! pending write can be aborted so that no replica or reader ever sees it, and
//! follower reads are served by replicas and say how stale they are.

use datalayer_api::v1 as pb;
use datalayer_client::ErrorKind;
use datalayer_tests::replicated::{
    cluster_with_table, node_index, wait_replicas_agree, wait_tablet,
};
use datalayer_tests::{CLUSTER_WAIT, wait_until};

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
    let abort_via = |i: usize, p: &pb::WritePosition| {
        let (tablet, epoch, seq) = (
            p.tablet_id.to_string(),
            p.epoch.to_string(),
            p.seq.to_string(),
        );
        cluster
            .node(i)
            .cli(&["abort-write", "t", &tablet, &epoch, &seq])
    };
    let o = abort_via(node_index(live), &x);
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
    let o = abort_via(master, &committed);
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
