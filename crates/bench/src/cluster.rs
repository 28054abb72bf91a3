//! `datalayer bench --cluster`: metadata changes, forwarding, and replicated puts
//! against a single node and etcd, on a running cluster.

use super::peers::etcd_bench;
use super::*;

/// Metadata changes and forwarding on a running cluster.
pub(super) async fn cluster_bench(
    args: &BenchArgs,
    dur: Duration,
    value: &Arc<Vec<u8>>,
) -> anyhow::Result<Vec<Measure>> {
    let mut results = Vec::new();
    let seed = &args.cluster[0];
    let mut admin = Client::connect(seed)
        .await
        .with_context(|| format!("cannot reach {seed}"))?;
    let status = admin.node_status().await?;
    // Metadata changes go through a follower when there is one: the usual path.
    let follower = status
        .nodes
        .iter()
        .find(|n| n.id != status.meta_leader)
        .map(|n| n.grpc_addr.clone())
        .unwrap_or_else(|| seed.clone());

    // Each op creates a table and drops it again (two metadata changes), so names
    // can repeat across runs.
    let create_drop: OpFn<Client> = Arc::new(|mut c: Client, client, i| {
        Box::pin(async move {
            let name = format!("m{client}x{i}");
            c.create_table(&name, TableOptions::default()).await?;
            c.drop_table(&name, false).await?;
            Ok(2)
        })
    });
    let metadata_workloads = if args.replication_only {
        Vec::new()
    } else {
        vec![
            ("create+drop table (1 client)", 1),
            ("create+drop table", args.clients),
        ]
    };
    for (workload, clients) in metadata_workloads {
        eprintln!("metadata: create + drop table, {clients} clients");
        let mut conns = Vec::new();
        for _ in 0..clients {
            conns.push(Client::connect(&follower).await?);
        }
        results.push(
            drive(
                "datalayer 3 nodes",
                workload,
                &conns,
                dur,
                create_drop.clone(),
            )
            .await?
            .0,
        );
    }

    let addr_of = |id: u64| {
        status
            .nodes
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.grpc_addr.clone())
    };
    let put_with = |acks: pb::Acks, table: &'static str| -> OpFn<RawKv> {
        let v = value.clone();
        Arc::new(move |mut c: RawKv, client, i| {
            let v = v.clone();
            Box::pin(async move {
                c.write(pb::WriteRequest {
                    table: table.into(),
                    mutations: vec![datalayer_client::put(&key(client, i), &v)],
                    acks: Some(acks),
                    request_id: None,
                    route: None,
                })
                .await?;
                Ok(1)
            })
        })
    };
    if !args.replication_only {
        admin.drop_table("fwd", true).await?;
        let (table, _) = admin.create_table("fwd", TableOptions::default()).await?;
        let master = table.tablets[0].master;
        let master_addr = addr_of(master).context("master address")?;
        let other_addr = status
            .nodes
            .iter()
            .find(|n| n.id != master)
            .map(|n| n.grpc_addr.clone())
            .context("a cluster bench needs at least two nodes")?;
        for (label, addr) in [
            ("put, sent to the master", &master_addr),
            ("put, sent to another node", &other_addr),
        ] {
            eprintln!("forwarding: {label}");
            let conns = raw_kv(addr, args.clients).await?;
            let put = put_with(datalayer_client::acks_all(), "fwd");
            let (m, _) = drive("datalayer 3 nodes", label, &conns, dur, put).await?;
            results.push(m);
        }
        for (label, addr) in [
            ("get, sent to the master", &master_addr),
            ("get, sent to another node", &other_addr),
        ] {
            eprintln!("forwarding: {label}");
            let conns = raw_kv(addr, args.clients).await?;
            let (m, _) = drive(
                "datalayer 3 nodes",
                label,
                &conns,
                dur,
                Arc::new(move |mut c: RawKv, client, i| {
                    Box::pin(async move {
                        c.get(pb::GetRequest {
                            table: "fwd".into(),
                            key: key(client, i % 1000),
                            at_timestamp: 0,
                            ..Default::default()
                        })
                        .await?;
                        Ok(1)
                    })
                }),
            )
            .await?;
            results.push(m);
        }
        admin.drop_table("fwd", true).await?;
    }

    // Replication: puts to a 3-replica tablet's master with acks=1 and acks=all, the
    // same on a single node, and the same on a 3-node etcd cluster, in interleaved
    // rounds (each system's median round is reported), so a slow moment of a shared
    // machine does not decide a ratio.
    admin.drop_table("rep", true).await?;
    let (table, _) = admin.create_table("rep", TableOptions::default()).await?;
    let master_addr = addr_of(table.tablets[0].master).context("master address")?;
    // Wait until every replica is in sync, so acks=all waits for all three.
    for _ in 0..100 {
        let t = admin.describe_table("rep").await?;
        if t.tablets[0].in_sync.len() >= 3.min(status.nodes.len()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut single = match &args.single_node {
        Some(addr) => {
            let mut c = Client::connect(addr).await?;
            c.drop_table("rep", true).await?;
            c.create_table("rep", TableOptions::default()).await?;
            Some((addr.clone(), c))
        }
        None => None,
    };
    let mut rounds: Vec<Measure> = Vec::new();
    for round in 1..=args.rounds {
        for (label, acks) in [
            ("put acks=1", datalayer_client::acks_one()),
            ("put acks=all", datalayer_client::acks_all()),
        ] {
            eprintln!("replication, round {round}: {label}");
            let conns = raw_kv(&master_addr, args.clients).await?;
            let put = put_with(acks, "rep");
            rounds.push(drive("datalayer 3 nodes", label, &conns, dur, put).await?.0);
        }
        if let Some((addr, _)) = &single {
            eprintln!("replication, round {round}: single node");
            let conns = raw_kv(addr, args.clients).await?;
            let put = put_with(datalayer_client::acks_all(), "rep");
            rounds.push(drive("datalayer 1 node", "put", &conns, dur, put).await?.0);
        }
        if let Some(etcd) = &args.etcd {
            eprintln!("replication, round {round}: etcd 3 nodes");
            let mut m = etcd_bench(etcd, args.clients, value, dur).await?;
            m.truncate(1);
            m[0].system = "etcd 3 nodes";
            rounds.extend(m);
        }
    }
    results.extend(medians(rounds));
    admin.drop_table("rep", true).await?;
    if let Some((_, c)) = &mut single {
        c.drop_table("rep", true).await?;
    }
    Ok(results)
}

/// Of the rounds of each (system, workload), in first-seen order, the one with the
/// median throughput (the lower middle one for an even count).
pub(super) fn medians(rounds: Vec<Measure>) -> Vec<Measure> {
    let mut groups: Vec<Vec<Measure>> = Vec::new();
    for m in rounds {
        match groups
            .iter_mut()
            .find(|g| g[0].system == m.system && g[0].workload == m.workload)
        {
            Some(g) => g.push(m),
            None => groups.push(vec![m]),
        }
    }
    groups
        .into_iter()
        .map(|mut g| {
            g.sort_by(|a, b| a.ops_per_sec.total_cmp(&b.ops_per_sec));
            g.swap_remove((g.len() - 1) / 2)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Measure;

    fn m(system: &'static str, workload: &'static str, ops: f64) -> Measure {
        Measure {
            system,
            workload,
            ops_per_sec: ops,
            rows_per_sec: ops,
            p50_ms: 1000.0 / ops,
            p99_ms: 2000.0 / ops,
        }
    }

    #[test]
    fn each_workload_reports_its_median_round_in_first_seen_order() {
        let rounds = vec![
            m("a", "put", 300.0),
            m("b", "put", 10.0),
            m("a", "put", 100.0),
            m("b", "put", 30.0),
            m("a", "put", 200.0),
            m("b", "put", 20.0),
            m("c", "put", 5.0),
            m("c", "put", 7.0),
        ];
        let got: Vec<(&str, f64, f64)> = medians(rounds)
            .iter()
            .map(|x| (x.system, x.ops_per_sec, x.p50_ms))
            .collect();
        // The median round's latencies come with its throughput; of two rounds, the
        // slower one.
        assert_eq!(
            got,
            vec![("a", 200.0, 5.0), ("b", 20.0, 50.0), ("c", 5.0, 200.0)]
        );
    }
}
