//! Clusters of real node processes: shared metadata, routing from any node, metadata
//! leader failover, restart and catch-up, joining nodes.

use datalayer_api::v1 as pb;
use datalayer_client::TableOptions;
use datalayer_tests::{CLUSTER_WAIT, TestCluster, wait_until};

async fn tables_seen_by(cluster: &TestCluster, i: usize) -> Vec<String> {
    match cluster.client(i).await {
        Ok(mut c) => c
            .list_tables()
            .await
            .map(|ts| ts.into_iter().map(|t| t.name).collect())
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

async fn wait_for_table_everywhere(cluster: &TestCluster, name: &str) {
    for i in 0..cluster.len() {
        if !cluster.node(i).is_running() {
            continue;
        }
        let name = name.to_string();
        wait_until(
            &format!("node {} sees table {name}", i + 1),
            CLUSTER_WAIT,
            || {
                let name = name.clone();
                async move { tables_seen_by(cluster, i).await.contains(&name) }
            },
        )
        .await
        .expect("metadata reaches every node");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_tables_and_serve_them_from_any_node() {
    let cluster = TestCluster::builder()
        .nodes(3)
        .build()
        .await
        .expect("cluster forms");
    // Node 3 learns of its own registration, and of the membership change that made
    // it a voter, a moment after node 1 does.
    cluster
        .wait_for_status(2, "node 3 knows all three nodes and voters", |s| {
            s.nodes.len() == 3 && s.nodes.iter().filter(|n| n.meta_role == "voter").count() == 3
        })
        .await
        .expect("membership reaches node 3");
    let status = cluster.status(2).await.expect("status");
    assert_eq!(status.nodes.len(), 3);
    assert_eq!(
        status
            .nodes
            .iter()
            .filter(|n| n.meta_role == "voter")
            .count(),
        3
    );

    // Tables created through every node; masters spread over the nodes.
    for (i, name) in ["a", "b", "c", "d", "e", "f"].iter().enumerate() {
        let mut c = cluster.client(i % 3).await.expect("connect");
        c.create_table(name, TableOptions::default())
            .await
            .expect("create through any node");
    }
    for name in ["a", "f"] {
        wait_for_table_everywhere(&cluster, name).await;
    }
    let status = cluster.status(0).await.expect("status");
    let masters: Vec<u32> = status.nodes.iter().map(|n| n.masters).collect();
    assert_eq!(
        masters,
        vec![2, 2, 2],
        "each node masters two of the six tablets"
    );
    let mut desc = cluster
        .client(1)
        .await
        .expect("connect")
        .describe_table("a")
        .await
        .expect("describe");
    let tablet = desc.tablets.remove(0);
    assert_eq!(
        tablet.replicas.len(),
        3,
        "replicas recorded on three distinct nodes"
    );

    // Every table written through one node and read through every other.
    for (i, name) in ["a", "b", "c", "d", "e", "f"].iter().enumerate() {
        let mut writer = cluster.client(i % 3).await.expect("connect");
        writer
            .put(name, b"k", name.as_bytes())
            .await
            .expect("put through any node");
        assert_eq!(writer.increment(name, b"n", 2).await.expect("incr"), 2);
        for r in 0..3 {
            let mut reader = cluster.client(r).await.expect("connect");
            let v = reader
                .get(name, b"k")
                .await
                .expect("get through any node")
                .expect("found");
            assert_eq!(
                v.value,
                name.as_bytes(),
                "table {name} read through node {}",
                r + 1
            );
            let rows = reader
                .scan(name, b"", b"", 0, false)
                .await
                .expect("scan through any node");
            assert_eq!(rows.len(), 2);
        }
    }
    let mut c = cluster.client(2).await.expect("connect");
    assert!(
        c.drop_table("a", false)
            .await
            .expect("drop through any node")
    );
    wait_until("every node forgets table a", CLUSTER_WAIT, || async {
        let mut gone = true;
        for i in 0..3 {
            gone &= !tables_seen_by(&cluster, i).await.contains(&"a".to_string());
        }
        gone
    })
    .await
    .expect("drop reaches every node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_survives_losing_its_leader_and_the_node_catches_up() {
    let mut cluster = TestCluster::builder()
        .nodes(3)
        .build()
        .await
        .expect("cluster forms");
    let mut c = cluster.client(0).await.expect("connect");
    c.create_table("before", TableOptions::default())
        .await
        .expect("create");
    wait_for_table_everywhere(&cluster, "before").await;

    let leader = cluster.meta_leader(0).await.expect("leader");
    cluster.node_mut(leader).kill();
    let survivor = (leader + 1) % 3;
    let old_id = leader as u64 + 1;
    cluster
        .wait_for_status(survivor, "a new metadata leader", |s| {
            s.meta_leader != 0 && s.meta_leader != old_id
        })
        .await
        .expect("the majority elects a new leader");
    let mut c = cluster.client(survivor).await.expect("connect");
    c.create_table("after", TableOptions::default())
        .await
        .expect("metadata changes go on without the old leader");

    // `datalayer status` and the HTTP page show the dead node and the new leader.
    let o = cluster.node(survivor).cli(&["--json", "status"]);
    assert!(o.status.success(), "{}", datalayer_tests::stderr(&o));
    let v = datalayer_tests::json(&o);
    let nodes = v["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3);
    for n in nodes {
        let dead = n["id"].as_u64() == Some(old_id);
        assert_eq!(n["live"].as_bool(), Some(!dead), "{n}");
    }
    assert_ne!(v["meta_leader"].as_u64(), Some(old_id));
    assert!(
        v["table_map"].as_array().is_some_and(|t| t.len() == 2),
        "{v}"
    );
    let o = cluster.node(survivor).cli(&["status"]);
    let text = datalayer_tests::stdout(&o);
    assert!(
        text.contains("dead") && text.contains("voter") && text.contains("tablet"),
        "{text}"
    );
    let (code, page) = cluster.node(survivor).http_get("/").expect("status page");
    assert_eq!(code, 200);
    assert!(
        page.contains("class=\"dead\">dead") && page.contains("after"),
        "{page}"
    );
    c.drop_table("before", false)
        .await
        .expect("drop goes on too");

    cluster
        .node_mut(leader)
        .restart()
        .expect("restart the old leader");
    wait_until("the restarted node catches up", CLUSTER_WAIT, || async {
        tables_seen_by(&cluster, leader).await == vec!["after".to_string()]
    })
    .await
    .expect("catch-up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_have_three_voters_and_new_nodes_get_tablets() {
    let cluster = TestCluster::builder()
        .nodes(5)
        .build()
        .await
        .expect("cluster forms");
    // Node 4 applies the metadata (and the membership changes) a little after the node
    // the builder asked: it must come to see the same three voters and two learners.
    let roles = |s: &pb::NodeStatusResponse| {
        let count = |role: &str| s.nodes.iter().filter(|n| n.meta_role == role).count();
        (count("voter"), count("learner"))
    };
    // A timeout reports the last status node 4 gave.
    cluster
        .wait_for_status(4, "node 4 sees three voters and two learners", move |s| {
            roles(s) == (3, 2)
        })
        .await
        .expect("three voters and two learners");
    let mut c = cluster.client(4).await.expect("connect");
    for i in 0..5 {
        c.create_table(&format!("t{i}"), TableOptions::default())
            .await
            .expect("create");
    }
    let status = cluster.status(0).await.expect("status");
    assert!(
        status.nodes.iter().all(|n| n.masters == 1),
        "one tablet per node: {:?}",
        status.nodes
    );
    // A learner serves its tablets and forwards the others.
    for i in 0..5 {
        let name = format!("t{i}");
        c.put(&name, b"k", b"v")
            .await
            .expect("write through a learner");
        let mut other = cluster.client(i).await.expect("connect");
        assert_eq!(
            other
                .get(&name, b"k")
                .await
                .expect("get")
                .expect("found")
                .value,
            b"v"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_takes_a_share_of_existing_replicas_and_masters() {
    let mut cluster = TestCluster::builder()
        .nodes(3)
        .build()
        .await
        .expect("cluster forms");
    let mut c = cluster.client(0).await.expect("connect");
    for i in 0..6 {
        let name = format!("t{i}");
        c.create_table(&name, TableOptions::default())
            .await
            .expect("create");
        for k in 0..50u32 {
            c.put(
                &name,
                format!("k{k:03}").as_bytes(),
                format!("{name}-{k}").as_bytes(),
            )
            .await
            .expect("put");
        }
    }
    let status = cluster.status(0).await.expect("status");
    assert!(
        status
            .nodes
            .iter()
            .all(|n| n.tablets == 6 && n.masters == 2),
        "{:?}",
        status.nodes
    );
    let fourth = cluster.add_node().expect("start a fourth node");
    // 18 replicas and 6 masters over 4 nodes: 4 or 5 replicas and 1 or 2 masters each.
    cluster
        .wait_for_status(0, "the new node holds a fair share", |s| {
            s.nodes.len() == 4
                && s.nodes
                    .iter()
                    .all(|n| (4..=5).contains(&n.tablets) && (1..=2).contains(&n.masters))
        })
        .await
        .expect("rebalanced");
    // The moved replicas hold the data: read everything through the new node, from
    // its own replicas where it has them.
    let mut d = cluster
        .client(fourth)
        .await
        .expect("connect to the new node");
    for i in 0..6 {
        let name = format!("t{i}");
        let rows = d.scan(&name, b"", b"", 0, false).await.expect("scan");
        assert_eq!(rows.len(), 50, "{name}");
        assert!(
            rows.iter()
                .enumerate()
                .all(|(k, r)| r.value == format!("{name}-{k}").as_bytes()),
            "{name}"
        );
    }
    wait_until(
        "every replica holds the same data",
        CLUSTER_WAIT,
        || async {
            let mut all = true;
            for i in 0..6 {
                let name = format!("t{i}");
                let Ok(mut c) = cluster.client(fourth).await else {
                    return false;
                };
                let Ok(desc) = c.describe_table(&name).await else {
                    return false;
                };
                let tb = &desc.tablets[0];
                let digests: Vec<_> = tb
                    .replicas
                    .iter()
                    .map(|n| cluster.replica_digest(*n as usize - 1, &name))
                    .collect();
                all &= tb.moving_to == 0
                    && digests
                        .iter()
                        .all(|x| matches!(x, Ok(Some(_))) && *x == digests[0]);
            }
            all
        },
    )
    .await
    .expect("replicas agree");
    // Nodes that gave a replica up deleted their copy.
    wait_until(
        "each node holds exactly its replicas",
        CLUSTER_WAIT,
        || async {
            let mut exact = true;
            for i in 0..4 {
                let Ok(status) = cluster.status(i).await else {
                    return false;
                };
                let recorded = status
                    .nodes
                    .iter()
                    .find(|n| n.id == status.node_id)
                    .map_or(0, |n| n.tablets as usize);
                exact &= held_tablets(&cluster, i) == recorded;
            }
            exact
        },
    )
    .await
    .expect("moved replicas deleted");
}

/// How many of the cluster's tablets node `i` holds data for.
fn held_tablets(cluster: &TestCluster, i: usize) -> usize {
    (0..6)
        .filter(|t| matches!(cluster.replica_digest(i, &format!("t{t}")), Ok(Some(_))))
        .count()
}

fn forwarded(cluster: &TestCluster, i: usize) -> u64 {
    let (_, body) = cluster.node(i).http_get("/metrics").expect("metrics");
    body.lines()
        .filter(|l| l.starts_with("datalayer_node_forwarded_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_library_sends_requests_straight_to_masters() {
    let cluster = TestCluster::builder()
        .nodes(3)
        .build()
        .await
        .expect("cluster forms");
    let mut c = cluster.client(0).await.expect("connect to node 1");
    for name in ["x", "y", "z"] {
        c.create_table(name, TableOptions::default())
            .await
            .expect("create");
    }
    let masters: Vec<u64> = {
        let mut m = Vec::new();
        for name in ["x", "y", "z"] {
            m.push(c.describe_table(name).await.expect("describe").tablets[0].master);
        }
        m
    };
    assert_eq!(masters, vec![1, 2, 3], "one table per node");
    for name in ["x", "y", "z"] {
        c.put(name, b"k", name.as_bytes()).await.expect("put");
        assert_eq!(
            c.get(name, b"k").await.expect("get").expect("found").value,
            name.as_bytes()
        );
        assert_eq!(c.increment(name, b"n", 1).await.expect("incr"), 1);
        assert_eq!(
            c.scan(name, b"", b"", 0, false).await.expect("scan").len(),
            2
        );
    }
    assert_eq!(
        forwarded(&cluster, 0),
        0,
        "the client went straight to each master"
    );

    // A plain gRPC stub on node 1 relies on node 1 to forward.
    c.kv()
        .write(datalayer_api::v1::WriteRequest {
            table: "y".into(),
            mutations: vec![datalayer_client::put(b"raw", b"1")],
            ..Default::default()
        })
        .await
        .expect("raw write through node 1");
    assert_eq!(forwarded(&cluster, 0), 1, "node 1 forwarded the raw write");
    assert_eq!(
        c.get("y", b"raw").await.expect("get").expect("found").value,
        b"1"
    );

    // Every KV call works through a node that masters nothing of the table.
    use datalayer_api::v1 as pb;
    let kv = c.kv();
    let got = kv
        .get(pb::GetRequest {
            table: "z".into(),
            key: b"k".to_vec(),
            at_timestamp: 0,
            ..Default::default()
        })
        .await
        .expect("raw get")
        .into_inner();
    assert_eq!(got.value, b"z");
    let batch = kv
        .batch_get(pb::BatchGetRequest {
            table: "z".into(),
            keys: vec![b"k".to_vec(), b"n".to_vec()],
            at_timestamp: 0,
            ..Default::default()
        })
        .await
        .expect("raw batch get")
        .into_inner();
    assert!(batch.results.iter().all(|r| r.found));
    let n = kv
        .increment(pb::IncrementRequest {
            table: "z".into(),
            key: b"n".to_vec(),
            delta: 5,
            ..Default::default()
        })
        .await
        .expect("raw increment")
        .into_inner();
    assert_eq!(n.value, 6);
    let cas = kv
        .compare_and_set(pb::CompareAndSetRequest {
            table: "z".into(),
            key: b"c".to_vec(),
            expected: Some(pb::compare_and_set_request::Expected::ExpectAbsent(true)),
            new_value: b"v".to_vec(),
            delete: false,
            ..Default::default()
        })
        .await
        .expect("raw cas")
        .into_inner();
    assert!(cas.succeeded);
    let page = kv
        .scan(pb::ScanRequest {
            table: "z".into(),
            ..Default::default()
        })
        .await
        .expect("raw scan")
        .into_inner();
    assert_eq!(page.rows.len(), 3);
    let deleted = kv
        .delete_range(pb::DeleteRangeRequest {
            table: "z".into(),
            start: vec![],
            end: vec![],
            ..Default::default()
        })
        .await
        .expect("raw delete range")
        .into_inner();
    assert_eq!(deleted.deleted, 3);
    assert_eq!(
        forwarded(&cluster, 0),
        7,
        "node 1 forwarded each of them once"
    );
    assert_eq!(forwarded(&cluster, 2), 0, "the master never forwards again");
}

fn roles(status: &datalayer_api::v1::NodeStatusResponse) -> Vec<(u64, String)> {
    status
        .nodes
        .iter()
        .map(|n| (n.id, n.meta_role.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_voter_is_replaced_by_a_live_learner() {
    let mut cluster = TestCluster::builder()
        .nodes(4)
        .dead_voter_secs(2)
        .build()
        .await
        .expect("cluster forms");
    let status = cluster.status(3).await.expect("status");
    assert_eq!(
        roles(&status)[3],
        (4, "learner".to_string()),
        "{:?}",
        roles(&status)
    );
    let leader = cluster.meta_leader(0).await.expect("leader");
    let [first, second] = [0, 1, 2]
        .into_iter()
        .filter(|i| *i != leader)
        .collect::<Vec<_>>()[..]
    else {
        panic!("two followers");
    };

    cluster.node_mut(first).kill();
    let dead_id = first as u64 + 1;
    cluster
        .wait_for_status(leader, "the learner takes the dead voter's place", |s| {
            let r = roles(s);
            r.contains(&(4, "voter".to_string())) && r.contains(&(dead_id, "learner".to_string()))
        })
        .await
        .expect("replacement");

    // With the replacement, losing a second original voter still leaves a majority.
    cluster.node_mut(second).kill();
    let mut c = cluster.client(3).await.expect("connect to node 4");
    c.create_table("after", TableOptions::default())
        .await
        .expect("metadata changes go on with two original voters down");

    cluster
        .node_mut(first)
        .restart()
        .expect("restart the replaced voter");
    wait_until(
        "the replaced voter catches up as a learner",
        CLUSTER_WAIT,
        || async { tables_seen_by(&cluster, first).await == vec!["after".to_string()] },
    )
    .await
    .expect("catch-up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decommissioned_nodes_leave_the_cluster() {
    let cluster = TestCluster::builder()
        .nodes(4)
        .build()
        .await
        .expect("cluster forms");
    let leader = cluster.meta_leader(0).await.expect("leader");
    let voter = [0, 1, 2]
        .into_iter()
        .find(|i| *i != leader)
        .expect("a follower voter");
    let voter_id = voter as u64 + 1;

    let o = cluster
        .node(leader)
        .cli(&["node", "decommission", &voter_id.to_string()]);
    assert!(o.status.success(), "{}", datalayer_tests::stderr(&o));
    cluster
        .wait_for_status(
            leader,
            "the voter is gone and the learner promoted",
            move |s| {
                let r = roles(s);
                r.len() == 3
                    && !r.iter().any(|(id, _)| *id == voter_id)
                    && r.iter().all(|(_, role)| role == "voter")
            },
        )
        .await
        .expect("decommission");

    // A node that masters a tablet hands it over first, losing nothing — not even
    // writes acknowledged by the master alone.
    let mut c = cluster.client(leader).await.expect("connect");
    let (t, _) = c
        .create_table("t", TableOptions::default())
        .await
        .expect("create");
    let master = t.tablets[0].master;
    assert!(
        t.tablets[0].replicas.iter().all(|r| *r != voter_id),
        "replicas avoid the removed node"
    );
    let mut w = cluster
        .client(cluster.index_of(master).expect("master runs"))
        .await
        .expect("connect");
    w.set_acks(Some(datalayer_client::acks_one()));
    for i in 0..50 {
        w.put("t", format!("k{i:02}").as_bytes(), b"v")
            .await
            .expect("put acks=1");
    }
    let via = [0, 1, 2, 3]
        .into_iter()
        .find(|i| *i != voter && *i as u64 + 1 != master)
        .expect("another node");
    let o = cluster
        .node(via)
        .cli(&["node", "decommission", &master.to_string()]);
    assert!(o.status.success(), "{}", datalayer_tests::stderr(&o));
    cluster
        .wait_for_status(via, "the old master is gone", |s| s.nodes.len() == 2)
        .await
        .expect("decommission of a master");
    let mut c = cluster.client(via).await.expect("connect");
    let t = c.describe_table("t").await.expect("describe");
    assert_ne!(t.tablets[0].master, master);
    assert!(!t.tablets[0].replicas.contains(&master), "{t:?}");
    let rows = c.scan("t", b"", b"", 0, false).await.expect("scan");
    assert_eq!(rows.len(), 50, "every write survived the hand-over");
    let o = cluster.node(via).cli(&["node", "decommission", "99"]);
    assert_eq!(o.status.code(), Some(2), "unknown node");
    assert_eq!(
        cluster.status(via).await.expect("status").nodes.len(),
        2,
        "refusals change nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joining_after_log_compaction_catches_up_from_a_snapshot() {
    let mut cluster = TestCluster::builder()
        .nodes(3)
        .build()
        .await
        .expect("cluster forms");
    // Enough metadata changes that the group snapshots and purges its log (it keeps
    // 1000 entries behind a snapshot taken every 2000): 16 writers × 100 create+drop.
    let mut writers = Vec::new();
    for w in 0..16 {
        let mut c = cluster.client(w % 3).await.expect("connect");
        writers.push(tokio::spawn(async move {
            for i in 0..100 {
                let name = format!("w{w}x{i}");
                c.create_table(&name, TableOptions::default())
                    .await
                    .expect("create");
                c.drop_table(&name, false).await.expect("drop");
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    let mut c = cluster.client(0).await.expect("connect");
    c.create_table("last", TableOptions::default())
        .await
        .expect("create");
    let leader = cluster.meta_leader(0).await.expect("leader");
    cluster
        .wait_for_status(leader, "the leader purged its log behind a snapshot", |s| {
            s.meta_purged_index > 0
        })
        .await
        .expect("log compaction");
    let newcomer = cluster.add_node().expect("a fourth node joins");
    wait_until("the newcomer has the metadata", CLUSTER_WAIT, || async {
        tables_seen_by(&cluster, newcomer).await == vec!["last".to_string()]
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.node(newcomer).log_text()));
    // The entries before the leader's purge point exist only in its snapshot.
    let status = cluster.status(newcomer).await.expect("status");
    assert!(
        status.meta_snapshot_index > 0,
        "the newcomer installed a snapshot: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cluster_killed_at_once_comes_back() {
    let mut cluster = TestCluster::builder()
        .nodes(3)
        .build()
        .await
        .expect("cluster forms");
    let mut c = cluster.client(0).await.expect("connect");
    for name in ["a", "b", "c"] {
        c.create_table(name, TableOptions::default())
            .await
            .expect("create");
        c.put(name, b"k", name.as_bytes()).await.expect("put");
    }
    cluster
        .kill_and_restart_all()
        .expect("every node restarts and becomes ready");
    for i in 0..3 {
        let mut c = cluster.client(i).await.expect("connect");
        for name in ["a", "b", "c"] {
            let v = c
                .get(name, b"k")
                .await
                .expect("get")
                .expect("acknowledged data survives");
            assert_eq!(v.value, name.as_bytes());
        }
    }
    let mut c = cluster.client(2).await.expect("connect");
    c.create_table("d", TableOptions::default())
        .await
        .expect("metadata changes go on");
}
