//! Three nodes in Docker containers; the metadata leader is cut off the network with
//! `docker network disconnect`. The majority elects a new leader and keeps taking
//! metadata changes, the cut-off node takes none, and after healing every node agrees.

use datalayer_tests::{CLUSTER_WAIT, DockerCluster, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn majority_keeps_the_metadata_when_the_leader_is_cut_off() {
    let cluster = DockerCluster::start(3).expect("containers start");
    let c = &cluster;
    wait_until("three nodes, three voters", CLUSTER_WAIT, || async {
        c.status(1).is_some_and(|s| {
            let nodes = s["nodes"].as_array().cloned().unwrap_or_default();
            nodes.len() == 3 && nodes.iter().all(|n| n["meta_role"] == "voter")
        })
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs(2)));

    let o = c.cli(2, &["table", "create", "before"]).expect("cli");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for i in 1..=3 {
        wait_until("every node has the table", CLUSTER_WAIT, || async move {
            c.tables(i).is_some_and(|t| t == vec!["before".to_string()])
        })
        .await
        .expect("metadata replicates");
    }

    let leader = c
        .status(1)
        .and_then(|s| s["meta_leader"].as_u64())
        .expect("leader") as usize;
    assert!((1..=3).contains(&leader));
    c.disconnect(leader).expect("cut the leader off");
    let majority: Vec<usize> = (1..=3).filter(|i| *i != leader).collect();
    let m = majority[0];
    wait_until(
        "the majority elects a new leader",
        CLUSTER_WAIT,
        || async move {
            c.status(m)
                .and_then(|s| s["meta_leader"].as_u64())
                .is_some_and(|l| l != 0 && l as usize != leader)
        },
    )
    .await
    .expect("new leader");
    let o = c
        .cli(majority[1], &["table", "create", "during"])
        .expect("cli");
    assert!(
        o.status.success(),
        "the majority takes changes: {}",
        String::from_utf8_lossy(&o.stderr)
    );

    let o = c.cli(leader, &["table", "create", "cut-off"]).expect("cli");
    assert_eq!(o.status.code(), Some(2), "the cut-off node takes no change");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("metadata"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        c.tables(leader),
        Some(vec!["before".to_string()]),
        "and learns none"
    );

    c.connect(leader).expect("heal");
    let want = vec!["before".to_string(), "during".to_string()];
    for i in 1..=3 {
        let want = want.clone();
        wait_until("every node agrees after healing", CLUSTER_WAIT, || {
            let want = want.clone();
            async move { c.tables(i).is_some_and(|t| t == want) }
        })
        .await
        .unwrap_or_else(|e| panic!("node {i}: {e}\n{}", c.logs(i)));
    }
    let leaders: Vec<u64> = (1..=3)
        .filter_map(|i| c.status(i)?["meta_leader"].as_u64())
        .collect();
    assert_eq!(leaders.len(), 3);
    assert!(
        leaders.iter().all(|l| *l == leaders[0] && *l != 0),
        "one leader for all: {leaders:?}"
    );
}
