//! Tables of many tablets on 3 nodes: created with split keys, requests that span
//! tablets (scans forward, reverse and paged, batch gets, range deletions) answered as
//! the same requests on a table of one tablet, at one read timestamp.
//!
//! Splits by hand: under the Jepsen-style workload (linearizable, nothing
//! acknowledged lost, no client error), retries and write positions from before a
//! split, follower reads of both halves, and a crash of the master at each step.
//! Merges (in `t63/merges.rs`): by hand, a crash at each step, a follower away.
//!
//! One cluster serves every case of this file (they use their own tables); its nodes
//! carry a fail point per step of a split, each armed for its own split key.

use datalayer_api::v1 as pb;
use datalayer_client::{Client, ErrorKind, TableOptions, acks_all, acks_count, put};
use datalayer_tests::linearizability::check_register;
use datalayer_tests::workload::{LocalWorkload, explain, parse};
use datalayer_tests::{CLUSTER_WAIT, TestCluster, json, stderr, stdout, wait_until};
use std::collections::BTreeSet;
use std::time::Duration;

/// The split keys at which the nodes crash: after the intent, after the split record,
/// before both halves are recorded.
const CRASH_KEYS: [(&str, &str); 3] = [
    ("split-after-intent", "crash-a"),
    ("split-after-record", "crash-b"),
    ("split-before-commit", "crash-c"),
];

/// The keys (the start of the right tablet) at which a node crashes during a
/// merge, and that node's id: only there, so a merge asked again elsewhere goes on.
const MERGE_CRASH_KEYS: [(&str, &str, u64); 4] = [
    ("merge-after-intent", "mcrash-a", 1),
    ("merge-after-stop", "mcrash-b", 2),
    ("merge-after-record", "mcrash-c", 3),
    ("merge-before-commit", "mcrash-d", 1),
];

fn rows(rows: &[pb::KeyValue]) -> Vec<(String, String)> {
    rows.iter()
        .map(|r| {
            (
                String::from_utf8_lossy(&r.key).into_owned(),
                String::from_utf8_lossy(&r.value).into_owned(),
            )
        })
        .collect()
}

/// The keys both tables hold: spread over every tablet of the split one, a few right
/// at its bounds.
fn keys() -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = (0..240)
        .map(|i| format!("k{:04}", (i * 37) % 300).into_bytes())
        .collect();
    for k in [
        "a", "a1", "b", "b\0", "c", "k0100", "k0199", "k0200", "m", "m\0", "z", "zz",
    ] {
        keys.push(k.as_bytes().to_vec());
    }
    keys.sort();
    keys.dedup();
    keys
}

const SPLIT_KEYS: [&str; 4] = ["b", "k0100", "k0200", "m"];

/// Every page of a scan of `[start, end)` by pages of `limit` rows, following resume
/// keys on the first page's timestamp; the pages' rows and read timestamps.
async fn paged(
    c: &mut Client,
    table: &str,
    start: &[u8],
    end: &[u8],
    limit: u32,
    reverse: bool,
) -> (Vec<pb::KeyValue>, Vec<u64>) {
    let mut req = pb::ScanRequest {
        table: table.into(),
        start: start.to_vec(),
        end: end.to_vec(),
        limit,
        reverse,
        ..Default::default()
    };
    let (mut out, mut stamps) = (Vec::new(), Vec::new());
    loop {
        let page = c.scan_page(req.clone()).await.expect("scan page");
        assert!(
            page.rows.len() <= limit as usize,
            "a page holds at most its limit"
        );
        stamps.push(page.read_timestamp);
        out.extend(page.rows);
        if !page.more {
            return (out, stamps);
        }
        req.at_timestamp = page.read_timestamp;
        if reverse {
            req.end = page.resume_key;
        } else {
            req.start = page.resume_key;
        }
    }
}

async fn split_keys_and_spanning_requests(cluster: &TestCluster) {
    let mut c = cluster.client(0).await.expect("connect");
    c.create_table("one", TableOptions::default())
        .await
        .expect("create one");
    let (five, _) = c
        .create_table(
            "five",
            TableOptions {
                split_keys: SPLIT_KEYS.iter().map(|k| k.as_bytes().to_vec()).collect(),
                ..Default::default()
            },
        )
        .await
        .expect("create five");
    assert_eq!(five.tablets.len(), 5);
    let bounds: Vec<_> = five.tablets.iter().map(|t| t.start.clone()).collect();
    assert_eq!(bounds[0], b"");
    assert_eq!(&bounds[1..], SPLIT_KEYS.map(|k| k.as_bytes().to_vec()));
    let masters: std::collections::BTreeSet<u64> = five.tablets.iter().map(|t| t.master).collect();
    assert_eq!(
        masters.len(),
        3,
        "the tablets' masters are spread: {five:?}"
    );

    // Bad split keys are refused and create nothing.
    for bad in [vec!["m", "b"], vec!["b", "b"], vec![""]] {
        let err = c
            .create_table(
                "bad",
                TableOptions {
                    split_keys: bad.iter().map(|k| k.as_bytes().to_vec()).collect(),
                    ..Default::default()
                },
            )
            .await
            .expect_err("bad split keys");
        assert_eq!(
            (err.kind, err.field.as_str()),
            (ErrorKind::InvalidArgument, "split_keys"),
            "{bad:?}: {err}"
        );
    }
    assert!(
        c.describe_table("bad").await.is_err(),
        "nothing was created"
    );

    for key in keys() {
        let value = format!("v-{}", String::from_utf8_lossy(&key));
        for table in ["one", "five"] {
            c.put(table, &key, value.as_bytes()).await.expect("put");
        }
    }

    // Whole-table and partial scans, forward and reverse, in one page or many.
    let ranges: [(&[u8], &[u8]); 4] = [
        (b"", b""),
        (b"a5", b"k0150"),
        (b"b", b"m"),
        (b"k0199", b"k0200\0"),
    ];
    for (start, end) in ranges {
        for reverse in [false, true] {
            let want = c
                .scan("one", start, end, 0, reverse)
                .await
                .expect("scan one");
            let got = c
                .scan("five", start, end, 0, reverse)
                .await
                .expect("scan five");
            assert_eq!(
                rows(&got),
                rows(&want),
                "scan {start:?}..{end:?} reverse={reverse}"
            );
            for limit in [1, 7, 100] {
                let (got, stamps) = paged(&mut c, "five", start, end, limit, reverse).await;
                assert_eq!(rows(&got), rows(&want), "pages of {limit}");
                assert!(
                    stamps.windows(2).all(|w| w[0] == w[1]),
                    "every page at the first page's timestamp: {stamps:?}"
                );
            }
        }
    }

    // One snapshot: rows rewritten after the read timestamp are not seen.
    let first = c
        .scan_page(pb::ScanRequest {
            table: "five".into(),
            limit: 1,
            ..Default::default()
        })
        .await
        .expect("scan");
    let snapshot = first.read_timestamp;
    let before = c.scan("five", b"", b"", 0, false).await.expect("scan");
    for key in [&b"a1"[..], b"k0150", b"zz"] {
        c.put("five", key, b"rewritten").await.expect("put");
    }
    let mut req = pb::ScanRequest {
        table: "five".into(),
        at_timestamp: snapshot,
        limit: 1000,
        ..Default::default()
    };
    let at = c.scan_page(req.clone()).await.expect("scan at");
    assert_eq!(at.read_timestamp, snapshot);
    assert_eq!(
        rows(&at.rows),
        rows(&before),
        "a scan at a timestamp is one snapshot"
    );
    assert!(at.rows.iter().all(|r| r.version <= snapshot));
    req.at_timestamp = 0;
    let now = c.scan_page(req).await.expect("scan now");
    assert_eq!(
        now.rows.iter().filter(|r| r.value == b"rewritten").count(),
        3
    );
    assert!(now.rows.iter().all(|r| r.version <= now.read_timestamp));
    for key in [&b"a1"[..], b"k0150", b"zz"] {
        c.put("one", key, b"rewritten").await.expect("put");
    }

    // Batch gets across tablets, in the order asked, with missing keys.
    let asked: Vec<Vec<u8>> = ["zz", "a1", "nothing", "k0100", "b", "k0111", "0"]
        .iter()
        .map(|k| k.as_bytes().to_vec())
        .collect();
    let batch = |table: &str| pb::BatchGetRequest {
        table: table.into(),
        keys: asked.clone(),
        ..Default::default()
    };
    let want = c
        .kv()
        .batch_get(batch("one"))
        .await
        .expect("one")
        .into_inner();
    let got = c
        .kv()
        .batch_get(batch("five"))
        .await
        .expect("five")
        .into_inner();
    let view = |r: &pb::BatchGetResponse| {
        r.results
            .iter()
            .map(|x| (x.key.clone(), x.found, x.value.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(view(&got), view(&want));
    assert_eq!(got.results.iter().filter(|r| r.found).count(), 5);
    assert!(got.results.iter().all(|r| r.version <= got.read_timestamp));

    // A write batch across tablets is refused whole.
    let err = c
        .write("five", vec![put(b"a7", b"x"), put(b"y7", b"x")])
        .await
        .expect_err("cross-tablet batch");
    assert_eq!(err.kind, ErrorKind::CrossTablet, "{err}");
    assert_eq!(
        c.get("five", b"a7").await.expect("get"),
        None,
        "nothing written"
    );

    // A range deletion over four tablets deletes what the same deletion on one does.
    let deleted_one = c.delete_range("one", b"a5", b"m\0").await.expect("one");
    let deleted_five = c.delete_range("five", b"a5", b"m\0").await.expect("five");
    assert_eq!(deleted_five, deleted_one);
    assert!(deleted_one > 200, "{deleted_one}");
    let want = c.scan("one", b"", b"", 0, false).await.expect("scan");
    let got = c.scan("five", b"", b"", 0, false).await.expect("scan");
    assert_eq!(rows(&got), rows(&want));

    // The CLI: describe lists every tablet; a scan spans them from any node.
    let o = cluster
        .node(1)
        .cli(&["--json", "table", "describe", "five"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    let tablets = v["tablets"].as_array().expect("tablets");
    assert_eq!(tablets.len(), 5);
    for (t, start) in tablets.iter().zip(["", "b", "k0100", "k0200", "m"]) {
        assert_eq!(t["start"], start);
        assert_eq!(t["generation"], 1);
        assert!(t["master"].as_u64().is_some_and(|m| m > 0));
    }
    for node in 0..3 {
        let one = cluster.node(node).cli(&["scan", "one"]);
        let five = cluster.node(node).cli(&["scan", "five"]);
        assert!(five.status.success(), "{}", stderr(&five));
        assert_eq!(stdout(&five), stdout(&one));
        let one = cluster
            .node(node)
            .cli(&["scan", "one", "--reverse", "--limit", "3"]);
        let five = cluster
            .node(node)
            .cli(&["scan", "five", "--reverse", "--limit", "3"]);
        assert_eq!(stdout(&five), stdout(&one));
        assert_eq!(stdout(&five).lines().count(), 3);
    }
}

/// A split by hand through the CLI of a node that does not master the tablet: two
/// tablets in the next generation, the same rows, and both halves take writes.
async fn split_by_hand(cluster: &TestCluster) {
    let mut c = cluster.client(0).await.expect("connect");
    let before = c.scan("one", b"", b"", 0, false).await.expect("scan");
    let t = c.describe_table("one").await.expect("describe");
    let master = t.tablets[0].master;
    let at = cluster.index_of(master).expect("the master's node");
    let other = (at + 1) % 3;
    let o = cluster
        .node(other)
        .cli(&["--json", "table", "split", "one", "k0150"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    let tablets = v["tablets"].as_array().expect("tablets");
    assert_eq!(tablets.len(), 2, "{v}");
    assert_eq!(
        (tablets[0]["start"].clone(), tablets[1]["start"].clone()),
        ("".into(), "k0150".into())
    );
    assert!(tablets.iter().all(|t| t["generation"] == 2), "{v}");
    let after = c.scan("one", b"", b"", 0, false).await.expect("scan");
    assert_eq!(
        rows(&after),
        rows(&before),
        "a split moves and loses nothing"
    );
    for key in [&b"a9"[..], b"k0151", b"zzz"] {
        let version = c
            .put("one", key, b"after")
            .await
            .expect("put after the split");
        let got = c.get("one", key).await.expect("get").expect("found");
        assert_eq!(
            (got.value.as_slice(), got.version),
            (&b"after"[..], version)
        );
    }
    let o = cluster.node(other).cli(&["table", "split", "one", "k0150"]);
    assert!(
        !o.status.success(),
        "a split at a tablet's start is refused"
    );
}

/// The last lines of every node's log (without the metadata library's), for a
/// failure's message.
fn log_tails(cluster: &TestCluster) -> String {
    let mut out = String::new();
    for i in 0..cluster.len() {
        let log = cluster.node(i).log_text();
        let lines: Vec<&str> = log.lines().filter(|l| !l.contains("openraft")).collect();
        let tail = &lines[lines.len().saturating_sub(25)..];
        out.push_str(&format!("\n--- node {}:\n{}", i + 1, tail.join("\n")));
    }
    out
}

/// The table's tablets as node `i` describes them: (start, generation, master).
async fn tablets(cluster: &TestCluster, i: usize, table: &str) -> Vec<pb::TabletInfo> {
    match cluster.client(i).await {
        Ok(mut c) => c
            .describe_table(table)
            .await
            .map(|t| t.tablets)
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// Creates `table` and waits until its tablet has three in-sync replicas.
async fn create_in_sync(cluster: &TestCluster, i: usize, table: &str) {
    let mut c = cluster.client(i).await.expect("connect");
    c.create_table(table, TableOptions::default())
        .await
        .expect("create");
    wait_until("three in-sync replicas", CLUSTER_WAIT, || async {
        let t = tablets(cluster, i, table).await;
        t.len() == 1 && t[0].in_sync.len() == 3
    })
    .await
    .expect("in sync");
}

/// Four splits and then two merges while the workload runs, each through another
/// node: every register's history stays linearizable, every id acknowledged with
/// `acks=all` is kept (and none appears that was never sent), and no operation
/// fails or goes unanswered — the
/// client library's retries (about 7 s of them; each operation may wait 12 s)
/// absorb the splits and merges.
async fn splits_under_load(cluster: &TestCluster) {
    let addrs: Vec<String> = (0..3).map(|i| cluster.node(i).grpc.to_string()).collect();
    let workload = LocalWorkload::start(&addrs, "load", 24, 12_000).expect("workload");
    let lines = || workload.history().lines().count();
    wait_until("the workload warms up", CLUSTER_WAIT, || async {
        lines() >= 300
    })
    .await
    .expect("warm");
    for (i, key) in ["r3", "id/2", "r6", "id/4"].into_iter().enumerate() {
        let mut c = cluster.client(i % 3).await.expect("connect");
        c.split_tablet("load", key.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("split at {key}: {e}"));
        let base = lines();
        wait_until("progress after the split", CLUSTER_WAIT, || async {
            lines() >= base + 150
        })
        .await
        .expect("progress");
    }
    // Two merges under the same load, through a node that may master neither.
    for (i, key) in ["id/4", "r6"].into_iter().enumerate() {
        let mut c = cluster.client((i + 1) % 3).await.expect("connect");
        c.merge_tablets("load", key.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("merge at {key}: {e}"));
        let base = lines();
        wait_until("progress after the merge", CLUSTER_WAIT, || async {
            lines() >= base + 150
        })
        .await
        .expect("progress");
    }
    let h = parse(&workload.wait().expect("the workload ends"));
    for (key, events) in &h.registers {
        assert!(
            check_register(events).is_ok(),
            "register {key} is not linearizable across the splits; {}",
            explain(events)
        );
    }
    assert!(
        h.unanswered_lines.is_empty(),
        "no operation failed or went unanswered within the client's retries: {:?}",
        h.unanswered_lines
    );
    let mut c = cluster.client(1).await.expect("connect");
    let seen: BTreeSet<String> = c
        .scan("load", b"id/", b"id0", 0, false)
        .await
        .expect("scan the ids")
        .into_iter()
        .map(|r| String::from_utf8_lossy(&r.key).into_owned())
        .collect();
    let lost: Vec<&String> = h.acked_ids.difference(&seen).collect();
    assert!(lost.is_empty(), "acknowledged ids lost: {lost:?}");
    let unexpected: Vec<&String> = seen.difference(&h.sent_ids).collect();
    assert!(unexpected.is_empty(), "ids never sent: {unexpected:?}");
    assert!(h.acked_ids.len() > 100, "{} ids", h.acked_ids.len());
    let starts: Vec<Vec<u8>> = tablets(cluster, 2, "load")
        .await
        .into_iter()
        .map(|t| t.start)
        .collect();
    let want: Vec<Vec<u8>> = ["", "id/2", "r3"]
        .iter()
        .map(|k| k.as_bytes().to_vec())
        .collect();
    assert_eq!(starts, want);
}

/// Across a split: a retried write (the same request id) is answered from the log,
/// not applied again, by the half that now holds its key; the position of a write
/// from before the split still answers `WriteStatus`; a follower reads both halves.
async fn retries_positions_and_follower_reads(cluster: &TestCluster) {
    create_in_sync(cluster, 0, "retry").await;
    let mut c = cluster.client(0).await.expect("connect");
    let written = c
        .kv()
        .write(pb::WriteRequest {
            table: "retry".into(),
            mutations: vec![put(b"p", b"before")],
            acks: Some(acks_all()),
            request_id: Some(pb::RequestId { client: 77, seq: 1 }),
            route: None,
        })
        .await
        .expect("write")
        .into_inner();
    let increment = pb::IncrementRequest {
        table: "retry".into(),
        key: b"n".to_vec(),
        delta: 5,
        acks: Some(acks_all()),
        request_id: Some(pb::RequestId { client: 77, seq: 2 }),
        route: None,
    };
    let first = c
        .kv()
        .increment(increment.clone())
        .await
        .expect("increment")
        .into_inner();
    c.put("retry", b"a", b"left").await.expect("put");
    let t = c.split_tablet("retry", b"m").await.expect("split");
    assert_eq!(t.tablets.len(), 2);
    let again = c
        .kv()
        .increment(increment)
        .await
        .expect("the retry")
        .into_inner();
    assert_eq!(
        (again.value, again.version),
        (first.value, first.version),
        "the retry is answered with the original answer"
    );
    let n = c.get("retry", b"n").await.expect("get").expect("found");
    assert_eq!(n.value, b"5", "applied once");
    let status = c
        .kv()
        .write_status(pb::WriteStatusRequest {
            table: "retry".into(),
            position: written.position,
        })
        .await
        .expect("write status")
        .into_inner();
    assert_eq!(status.state(), pb::WriteState::Committed);
    c.put("retry", b"q", b"after").await.expect("put after");
    // A follower serves reads of both halves, from before and after the split.
    let master = t.tablets[1].master;
    let follower = (0..3)
        .find(|i| cluster.index_of(master).ok() != Some(*i))
        .expect("a follower");
    let mut f = cluster.client(follower).await.expect("connect");
    f.set_consistency(pb::ReadConsistency::Follower);
    for (key, value) in [
        (&b"a"[..], &b"left"[..]),
        (b"p", b"before"),
        (b"q", b"after"),
    ] {
        let f = &f;
        wait_until("the follower reads it", CLUSTER_WAIT, || async move {
            let mut f = f.clone();
            f.get("retry", key)
                .await
                .is_ok_and(|v| v.is_some_and(|v| v.value == value))
        })
        .await
        .expect("follower read");
    }
}

/// Routing after splits with a stale range cache: a raw request naming the old
/// generation gets `RANGE_MISMATCH` with the current descriptors and changes nothing;
/// a client whose cache predates two splits reads and writes without an error, its
/// cache following the descriptors.
async fn stale_routes(cluster: &TestCluster) {
    create_in_sync(cluster, 0, "stale").await;
    let mut stale = cluster.client(0).await.expect("connect");
    for key in [&b"a"[..], b"x"] {
        stale.put("stale", key, b"1").await.expect("put");
    }
    let cached = stale.cached_tablets("stale");
    assert_eq!(cached.len(), 1, "{cached:?}");
    let (first, generation) = (cached[0].0, cached[0].3);
    let mut other = cluster.client(1).await.expect("connect");
    other.split_tablet("stale", b"h").await.expect("split");
    let t = other.split_tablet("stale", b"p").await.expect("split");
    let holder = t.tablets.last().expect("the last tablet").clone();
    let status = other
        .kv()
        .write(pb::WriteRequest {
            table: "stale".into(),
            mutations: vec![put(b"x", b"raw")],
            acks: None,
            request_id: None,
            route: Some(pb::RangeHint {
                tablet_id: first,
                generation,
            }),
        })
        .await
        .expect_err("routed by an old generation");
    let e = datalayer_client::ClientError::from(status);
    assert_eq!(e.kind, ErrorKind::RangeMismatch, "{e}");
    assert!(e.retryable);
    let named: Vec<(u64, Vec<u8>, u64)> = e
        .tablets
        .iter()
        .map(|d| (d.tablet_id, d.start.clone(), d.generation))
        .collect();
    assert_eq!(
        named,
        vec![
            (holder.id, b"p".to_vec(), holder.generation),
            (first, Vec::new(), 2)
        ],
        "the tablet holding the key, then the one routed to"
    );
    assert!(e.tablets.iter().all(|d| !d.master_addr.is_empty()));
    let x = other.get("stale", b"x").await.expect("get").expect("found");
    assert_eq!(x.value, b"1", "nothing was written");
    // The stale client carries on without an error.
    stale
        .put("stale", b"x", b"2")
        .await
        .expect("put by a stale cache");
    let a = stale.get("stale", b"a").await.expect("get").expect("found");
    assert_eq!(a.value, b"1");
    let cached = stale.cached_tablets("stale");
    assert!(
        cached
            .iter()
            .any(|t| t.0 == holder.id && t.1 == b"p" && t.3 == holder.generation),
        "the cache learnt the current tablets: {cached:?}"
    );
    let x = other.get("stale", b"x").await.expect("get").expect("found");
    assert_eq!(x.value, b"2");
}

/// A crash of the tablet's master at each step of a split by hand: the node that
/// masters the tablet next carries the split on from the intent and its log, every
/// acknowledged row stays, both halves take writes, and the crashed node rejoins.
async fn a_crash_at_each_step(cluster: &mut TestCluster) {
    for (n, (point, key)) in CRASH_KEYS.into_iter().enumerate() {
        let table = format!("crash{n}");
        create_in_sync(cluster, 0, &table).await;
        let mut c = cluster.client(0).await.expect("connect");
        let keys: Vec<String> = (0..20)
            .flat_map(|i| [format!("a{i:02}"), format!("z{i:02}")])
            .collect();
        for k in &keys {
            c.put(&table, k.as_bytes(), b"v").await.expect("put");
        }
        let master = tablets(cluster, 0, &table).await[0].master;
        let m = cluster.index_of(master).expect("master's node");
        let other = (m + 1) % 3;
        let mut c = cluster.client(other).await.expect("connect");
        // The call may fail (its master crashed under it); the split goes on anyway.
        let _ = c.split_tablet(&table, key.as_bytes()).await;
        wait_until(point, CLUSTER_WAIT, || {
            let exited = cluster.node_mut(m).has_exited();
            async move { exited }
        })
        .await
        .expect("the master crashes at the fail point");
        wait_until(
            "another node carries the split on",
            CLUSTER_WAIT,
            || async {
                let t = tablets(cluster, other, &table).await;
                t.len() == 2
                    && t[1].start == key.as_bytes()
                    && t.iter().all(|t| t.generation == 2 && t.master != master)
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{point}: {e}"));
        let rows = c.scan(&table, b"", b"", 0, false).await.expect("scan");
        let got: Vec<String> = rows
            .iter()
            .map(|r| String::from_utf8_lossy(&r.key).into_owned())
            .collect();
        let mut want = keys.clone();
        want.sort();
        assert_eq!(got, want, "{point}: every acknowledged row stays");
        for k in [&b"a99"[..], b"z99"] {
            c.put(&table, k, b"after")
                .await
                .expect("a write to each half");
        }
        cluster.node_mut(m).restart().expect("restart");
        wait_until("the crashed node is back in sync", CLUSTER_WAIT, || async {
            let t = tablets(cluster, m, &table).await;
            t.len() == 2 && t.iter().all(|t| t.in_sync.len() == 3)
        })
        .await
        .unwrap_or_else(|e| panic!("{point}: {e}{}", log_tails(cluster)));
    }
}

#[path = "t63/merges.rs"]
mod merges;
use merges::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_of_many_tablets() {
    let fail_points: Vec<String> = CRASH_KEYS
        .iter()
        .map(|(point, key)| format!("{point}={key}"))
        .chain(
            MERGE_CRASH_KEYS
                .iter()
                .map(|(point, key, node)| format!("{point}={key}@{node}")),
        )
        .chain([format!("merge-after-intent={}@{}", AWAY_KEY.0, AWAY_KEY.1)])
        .flat_map(|spec| ["--fail-point".to_string(), spec])
        .collect();
    // Splits and merges here are by hand only, and masters move only when a test
    // moves them (the rebalancer would undo the hand-overs the crash tests set up).
    let mut args: Vec<&str> = vec![
        "--no-rebalance",
        "--split-load-ops",
        "0",
        "--split-size-bytes",
        "0",
        "--merge-check-secs",
        "0",
    ];
    args.extend(fail_points.iter().map(String::as_str));
    let mut cluster = TestCluster::builder()
        .args(&args)
        .build()
        .await
        .expect("cluster");
    split_keys_and_spanning_requests(&cluster).await;
    split_by_hand(&cluster).await;
    splits_under_load(&cluster).await;
    retries_positions_and_follower_reads(&cluster).await;
    stale_routes(&cluster).await;
    merges_by_hand(&cluster).await;
    a_crash_at_each_step(&mut cluster).await;
    a_crash_at_each_step_of_a_merge(&mut cluster).await;
    a_follower_away_during_a_merge(&mut cluster).await;
}
