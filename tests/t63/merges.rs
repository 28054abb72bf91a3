//! Merges of t63's cluster: by hand, with a crash at each step, and with a follower
//! away while a merge goes through.

use super::*;

/// Merges by hand through the CLI: tablets with different masters merge (the right
/// one handed over first) into the next generation with every row; the merged
/// tablet takes writes over the whole range; a retry of a write the right tablet
/// answered is answered from the log, not applied again; bad merges are refused.
pub(super) async fn merges_by_hand(cluster: &TestCluster) {
    let mut c = cluster.client(0).await.expect("connect");
    let opts = TableOptions {
        split_keys: vec![b"g".to_vec(), b"p".to_vec()],
        ..Default::default()
    };
    c.create_table("merge", opts).await.expect("create");
    wait_until("every tablet in sync", CLUSTER_WAIT, || async {
        let t = tablets(cluster, 0, "merge").await;
        t.len() == 3 && t.iter().all(|t| t.in_sync.len() == 3)
    })
    .await
    .expect("in sync");
    let keys: Vec<String> = ["a", "f", "g", "k", "p", "x"]
        .iter()
        .flat_map(|p| (0..10).map(move |i| format!("{p}{i}")))
        .collect();
    for k in &keys {
        c.put("merge", k.as_bytes(), b"v").await.expect("put");
    }
    let increment = pb::IncrementRequest {
        table: "merge".into(),
        key: b"x-counter".to_vec(),
        delta: 3,
        acks: Some(acks_all()),
        request_id: Some(pb::RequestId { client: 99, seq: 1 }),
        route: None,
    };
    let first = c
        .kv()
        .increment(increment.clone())
        .await
        .expect("increment")
        .into_inner();
    let right_write = c
        .kv()
        .write(pb::WriteRequest {
            table: "merge".into(),
            mutations: vec![put(b"x-pos", b"v")],
            ..Default::default()
        })
        .await
        .expect("write")
        .into_inner();
    let before = tablets(cluster, 0, "merge").await;
    // The first tablet has no left neighbour; no tablet starts at "h".
    for (key, why) in [("", "must not be empty"), ("h", "starts at")] {
        let o = cluster.node(1).cli(&["table", "merge", "merge", key]);
        assert!(!o.status.success(), "a merge at {key:?} is refused");
        assert!(stderr(&o).contains(why), "{}", stderr(&o));
    }
    let o = cluster
        .node(2)
        .cli(&["--json", "table", "merge", "merge", "p"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    let merged = v["tablets"].as_array().expect("tablets");
    assert_eq!(merged.len(), 2, "{v}");
    assert_eq!(
        (merged[1]["start"].clone(), merged[1]["end"].clone()),
        ("g".into(), "".into())
    );
    assert_eq!(merged[1]["generation"], 2);
    assert_eq!(merged[1]["id"], before[1].id, "the left tablet stays");
    let rows = c.scan("merge", b"", b"", 0, false).await.expect("scan");
    assert_eq!(rows.len(), keys.len() + 2, "every row is kept");
    let again = c
        .kv()
        .increment(increment)
        .await
        .expect("the retry")
        .into_inner();
    assert_eq!((again.value, again.version), (first.value, first.version));
    let n = c
        .get("merge", b"x-counter")
        .await
        .expect("get")
        .expect("found");
    assert_eq!(n.value, b"3", "applied once");
    // A position in the tablet merged away: its log is gone, and the answer says so.
    let status = c
        .kv()
        .write_status(pb::WriteStatusRequest {
            table: "merge".into(),
            position: right_write.position,
        })
        .await
        .expect_err("the tablet is gone");
    let e = datalayer_client::ClientError::from(status);
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    for key in [&b"g0"[..], b"p0", b"zz"] {
        c.put("merge", key, b"after")
            .await
            .expect("a write after the merge");
        let got = c.get("merge", key).await.expect("get").expect("found");
        assert_eq!(got.value, b"after");
    }
    // Merged again, down to one tablet.
    let t = c
        .merge_tablets("merge", b"g")
        .await
        .unwrap_or_else(|e| panic!("merge: {e}{}", log_tails(cluster)));
    assert_eq!(t.tablets.len(), 1);
    assert_eq!(t.tablets[0].generation, 3);
    let rows = c.scan("merge", b"", b"", 0, false).await.expect("scan");
    assert_eq!(rows.len(), keys.len() + 3);
}

/// A crash of the master at each step of a merge by hand: the merge is carried on
/// or called off by whoever masters the tablets next, every row stays, every key
/// takes writes, and the merge then goes through when asked again.
pub(super) async fn a_crash_at_each_step_of_a_merge(cluster: &mut TestCluster) {
    for (n, (point, key, node)) in MERGE_CRASH_KEYS.into_iter().enumerate() {
        let table = format!("mcrash{n}");
        create_in_sync(cluster, 0, &table).await;
        let mut c = cluster.client(0).await.expect("connect");
        let keys: Vec<String> = (0..20)
            .flat_map(|i| [format!("a{i:02}"), format!("z{i:02}")])
            .collect();
        for k in &keys {
            c.put(&table, k.as_bytes(), b"v").await.expect("put");
        }
        c.split_tablet(&table, key.as_bytes()).await.expect("split");
        wait_until("both halves in sync", CLUSTER_WAIT, || async {
            let t = tablets(cluster, 0, &table).await;
            t.len() == 2 && t.iter().all(|t| t.in_sync.len() == 3)
        })
        .await
        .expect("in sync");
        // Both tablets mastered by the node the fail point is armed on.
        for start in [&b""[..], key.as_bytes()] {
            c.transfer_master(&table, start, node)
                .await
                .expect("transfer-master");
        }
        wait_until("both mastered there, all in sync", CLUSTER_WAIT, || async {
            let t = tablets(cluster, 0, &table).await;
            t.iter().all(|t| t.master == node && t.in_sync.len() == 3)
        })
        .await
        .expect("in sync");
        let m = cluster.index_of(node).expect("the node");
        let other = (m + 1) % 3;
        let mut c = cluster.client(other).await.expect("connect");
        let _ = c.merge_tablets(&table, key.as_bytes()).await;
        wait_until(point, CLUSTER_WAIT, || {
            let exited = cluster.node_mut(m).has_exited();
            async move { exited }
        })
        .await
        .expect("the master crashes at the fail point");
        // Back without its fail point: a merge needs every replica in sync.
        let armed = format!("{point}={key}@{node}");
        cluster
            .node_mut(m)
            .restart_with(|args| {
                if let Some(at) = args.iter().position(|a| *a == armed) {
                    args.drain(at - 1..=at);
                }
            })
            .expect("restart");
        // Merged, or called off and merged when asked again.
        wait_until("the merge resolves", CLUSTER_WAIT, || async {
            let mut c = cluster.client(other).await.expect("connect");
            let t = tablets(cluster, other, &table).await;
            t.len() == 1 || c.merge_tablets(&table, key.as_bytes()).await.is_ok()
        })
        .await
        .unwrap_or_else(|e| {
            let log = cluster.node(other).log_text();
            let tail: Vec<&str> = log
                .lines()
                .filter(|l| !l.contains("openraft"))
                .rev()
                .take(30)
                .collect();
            panic!(
                "{point}: {e}; the log of node {other} ends:\n{}",
                tail.join("\n")
            )
        });
        let t = tablets(cluster, other, &table).await;
        assert_eq!(t.len(), 1, "{point}");
        let rows = c.scan(&table, b"", b"", 0, false).await.expect("scan");
        assert_eq!(
            rows.len(),
            keys.len(),
            "{point}: every acknowledged row stays"
        );
        for k in [&b"a99"[..], b"z99"] {
            c.put(&table, k, b"after")
                .await
                .expect("a write to each side");
        }
        wait_until("the crashed node is back in sync", CLUSTER_WAIT, || async {
            let t = tablets(cluster, m, &table).await;
            t.len() == 1 && t[0].in_sync.len() == 3
        })
        .await
        .unwrap_or_else(|e| panic!("{point}: {e}{}", log_tails(cluster)));
    }
}

/// The right tablet's start in `a_follower_away_during_a_merge`, and the node whose
/// merge crashes there (after the intent).
pub(super) const AWAY_KEY: (&str, u64) = ("away-m", 2);

async fn shaped(cluster: &TestCluster, i: usize, table: &str, n: usize) -> bool {
    let t = tablets(cluster, i, table).await;
    t.len() == n && t.iter().all(|t| t.in_sync.len() == 3)
}

/// A follower away (paused) while the right tablet took writes and the merge went
/// through misses records nobody ships once the merge is done (the right tablet is
/// gone): it refuses the absorb record, the merged tablet's master sends it a
/// snapshot, and it comes back in sync serving follower reads of every row. To leave
/// it out, the merge's master crashes after the intent and the next master carries
/// the merge on without the paused node.
pub(super) async fn a_follower_away_during_a_merge(cluster: &mut TestCluster) {
    let (table, (key, node)) = ("away", AWAY_KEY);
    let mut c = cluster.client(0).await.expect("connect");
    let opts = TableOptions {
        split_keys: vec![key.as_bytes().to_vec()],
        ..Default::default()
    };
    c.create_table(table, opts).await.expect("create");
    wait_until("both tablets in sync", CLUSTER_WAIT, || {
        shaped(cluster, 0, table, 2)
    })
    .await
    .expect("in sync");
    for start in [&b""[..], key.as_bytes()] {
        c.transfer_master(table, start, node)
            .await
            .expect("transfer-master");
    }
    let m = cluster.index_of(node).expect("the node");
    wait_until("both mastered there", CLUSTER_WAIT, || async {
        let t = tablets(cluster, 0, table).await;
        t.iter().all(|t| t.master == node && t.in_sync.len() == 3)
    })
    .await
    .expect("in sync");
    // Not the metadata leader, which must record the intent while it is paused.
    let leader = cluster.meta_leader(m).await.expect("a metadata leader");
    let away = (0..3)
        .find(|i| *i != m && *i != leader)
        .expect("a third node");
    let other = (0..3)
        .find(|i| *i != m && *i != away)
        .expect("another node");
    let mut c = cluster.client(other).await.expect("connect");
    // Held by the master and the node that masters both next.
    c.set_acks(Some(acks_count(2)));
    let mut keys: Vec<String> = vec!["a0".into()];
    c.put(table, b"a0", b"left").await.expect("put");
    // The intent must be recorded while the paused node still counts as in sync (it
    // leaves the set 2 s after it falls behind): a slow run that misses the window
    // (the merge is refused, nothing crashes) sets it up again.
    for attempt in 1.. {
        cluster.node(away).pause().expect("pause");
        for i in 0..10 {
            let k = format!("z{attempt}-{i}");
            c.put(table, k.as_bytes(), b"while away")
                .await
                .expect("put");
            keys.push(k);
        }
        let _ = c.merge_tablets(table, key.as_bytes()).await;
        let crashed = wait_until("the master crashes", Duration::from_secs(30), || {
            let exited = cluster.node_mut(m).has_exited();
            async move { exited }
        })
        .await;
        if crashed.is_ok() {
            break;
        }
        assert!(attempt < 3, "the merge never got past its intent");
        cluster.node(away).resume().expect("resume");
        wait_until("all in sync again", CLUSTER_WAIT, || {
            shaped(cluster, 0, table, 2)
        })
        .await
        .expect("in sync");
    }
    let armed = format!("merge-after-intent={key}@{node}");
    cluster
        .node_mut(m)
        .restart_with(|args| {
            if let Some(at) = args.iter().position(|a| *a == armed) {
                args.drain(at - 1..=at);
            }
        })
        .expect("restart");
    let away_id = away as u64 + 1;
    wait_until("merged without the paused node", CLUSTER_WAIT, || async {
        let t = tablets(cluster, other, table).await;
        t.len() == 1 && !t[0].in_sync.contains(&away_id)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}{}", log_tails(cluster)));
    cluster.node(away).resume().expect("resume");
    wait_until("the paused node back in sync", CLUSTER_WAIT, || {
        shaped(cluster, other, table, 1)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}{}", log_tails(cluster)));
    let mut f = cluster.client(away).await.expect("connect");
    f.set_consistency(pb::ReadConsistency::Follower);
    for k in &keys {
        let f = &f;
        wait_until("the follower reads it", CLUSTER_WAIT, || async move {
            let mut f = f.clone();
            f.get(table, k.as_bytes()).await.is_ok_and(|v| v.is_some())
        })
        .await
        .unwrap_or_else(|e| panic!("{k}: {e}{}", log_tails(cluster)));
    }
}
