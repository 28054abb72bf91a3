//! Helpers of the replication tests: a cluster with a replicated table, waiting for a
//! tablet's state, writing with `acks=all` and checking nothing acknowledged is lost.

use crate::{CLUSTER_WAIT, TestCluster, wait_until};
use datalayer_api::v1 as pb;
use datalayer_client::{Client, TableOptions};
use std::collections::BTreeMap;

/// The table's only tablet as node `i` describes it.
pub async fn tablet(cluster: &TestCluster, i: usize, table: &str) -> Option<pb::TabletInfo> {
    let mut c = cluster.client(i).await.ok()?;
    c.describe_table(table)
        .await
        .ok()?
        .tablets
        .into_iter()
        .next()
}

/// Waits until node `i` sees the tablet in a state `pred` accepts; returns it.
pub async fn wait_tablet(
    cluster: &TestCluster,
    i: usize,
    table: &str,
    what: &str,
    pred: impl Fn(&pb::TabletInfo) -> bool,
) -> pb::TabletInfo {
    let pred = &pred;
    wait_until(what, CLUSTER_WAIT, || async move {
        tablet(cluster, i, table).await.is_some_and(|t| pred(&t))
    })
    .await
    .expect(what);
    tablet(cluster, i, table).await.expect("tablet")
}

/// Writes `keys` with `acks=all` through `c`; returns what was acknowledged.
pub async fn write_all(
    c: &mut Client,
    table: &str,
    keys: std::ops::Range<u32>,
) -> BTreeMap<String, String> {
    let mut acked = BTreeMap::new();
    for k in keys {
        let (key, value) = (format!("k{k:05}"), format!("v{k}"));
        c.put(table, key.as_bytes(), value.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
        acked.insert(key, value);
    }
    acked
}

/// Every acknowledged key reads back through `c` with its value.
pub async fn assert_all_present(c: &mut Client, table: &str, acked: &BTreeMap<String, String>) {
    let rows = c.scan(table, b"", b"", 0, false).await.expect("scan");
    let got: BTreeMap<String, String> = rows
        .into_iter()
        .map(|r| {
            (
                String::from_utf8(r.key).expect("utf8"),
                String::from_utf8(r.value).expect("utf8"),
            )
        })
        .collect();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(*v))
        .map(|(k, _)| k)
        .collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert_eq!(got.len(), acked.len(), "no unexpected keys");
}

/// A cluster of `nodes` nodes (started with `args` too) with a table "t" whose three
/// replicas are in sync; a client of node 1, and the tablet.
pub async fn cluster_with_table(
    nodes: usize,
    args: &[&str],
) -> (TestCluster, Client, pb::TabletInfo) {
    let cluster = TestCluster::builder()
        .nodes(nodes)
        .args(args)
        .build()
        .await
        .expect("cluster forms");
    let mut c = cluster.client(0).await.expect("connect");
    c.create_table("t", TableOptions::default())
        .await
        .expect("create");
    let t = wait_tablet(&cluster, 0, "t", "three replicas, all in sync", |t| {
        t.replicas.len() == 3 && t.in_sync.len() == 3
    })
    .await;
    (cluster, c, t)
}

/// The harness index of the node with id `id` (nodes are numbered from 1 in start order).
pub fn node_index(id: u64) -> usize {
    id as usize - 1
}

/// The id of a replica of `t` other than its master.
pub fn a_follower(t: &pb::TabletInfo) -> u64 {
    *t.replicas
        .iter()
        .find(|n| **n != t.master)
        .expect("a follower")
}

/// Waits until every replica of `t` (of table "t") holds the same data.
pub async fn wait_replicas_agree(cluster: &TestCluster, t: &pb::TabletInfo) {
    let replicas: Vec<usize> = t.replicas.iter().map(|n| node_index(*n)).collect();
    wait_until("replicas agree", CLUSTER_WAIT, || async {
        let d: Vec<_> = replicas
            .iter()
            .map(|i| cluster.replica_digest(*i, "t"))
            .collect();
        d.iter().all(|x| matches!(x, Ok(Some(_))) && *x == d[0])
    })
    .await
    .expect("equal replicas");
}
