//! `datalayer bench-meta`: what the metadata costs as it grows, in process (no real
//! nodes): a state machine over a RocksDB store in a temporary directory, holding 100
//! simulated nodes and N tablets, measured at each N asked for. Per operation:
//!
//! - `heartbeat apply`: one node's liveness heartbeat through the state machine (the
//!   commonest command: every node several times a second), with what it writes;
//! - `create table`: one table created through the state machine;
//! - `state copy`: the copy of the metadata a reader takes (the controller, each tick);
//! - `placement plan`: the controller's full placement plan over every tablet;
//! - `snapshot`: building a snapshot of the whole state machine;
//! - `lookup by key`: the tablet holding a key of a table (every request's routing);
//! - `lookup by id`: a tablet by its id (every replication call and metadata change);
//! - `tablet change, one table`: a change of one tablet (its in-sync set) of a table
//!   holding all N tablets, through the state machine with what it writes;
//! - `split, one table`: a split (intent and commit) in that table;
//! - `lookup by key, one table`: the tablet holding a key in that table.

use anyhow::Context;
use datalayer_cluster::catalog::{TableDesc, TabletDesc, Tablets};
use datalayer_cluster::meta::placement::{self, Nodes};
use datalayer_cluster::meta::storage::StateMachine;
use datalayer_cluster::meta::{
    Liveness, LivenessEpoch, MetaCommand, MetaState, NodeInfo, TypeConfig,
};
use datalayer_cluster::{PolicyKind, TableSpec};
use datalayer_store::{Epoch, NodeId, RocksTabletEngine, TableId, TabletEngine, TabletId};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Options of `datalayer bench-meta`.
#[derive(Debug, clap::Args)]
pub struct MetaBenchArgs {
    /// Tablet counts to measure at (one tablet per table until tables split).
    #[arg(long, value_delimiter = ',', default_value = "1000,100000")]
    tablets: Vec<usize>,
    /// Simulated nodes.
    #[arg(long, default_value_t = 100)]
    nodes: u64,
    /// Least time spent measuring each operation, ms.
    #[arg(long, default_value_t = 500)]
    min_ms: u64,
}

/// The mean cost of `$body` (with `$i` counting runs), run until `$min` has passed
/// and at least `$least` times.
macro_rules! per_op {
    ($min:expr, $least:expr, |$i:ident| $body:expr) => {{
        let start = Instant::now();
        let mut runs = 0u64;
        while runs < $least || start.elapsed() < $min {
            let $i = runs;
            std::hint::black_box($body);
            runs += 1;
        }
        start.elapsed() / runs as u32
    }};
}

/// A state holding `nodes` nodes and `tablets` one-tablet tables, built directly
/// (creating them one by one through `apply` is itself measured, below).
fn state(nodes: u64, tablets: usize) -> MetaState {
    let mut s = MetaState::default();
    for id in 1..=nodes {
        let id = NodeId(id);
        s.nodes.insert(
            id,
            NodeInfo {
                id,
                grpc_addr: format!("10.0.{}.{}:7000", id.0 / 256, id.0 % 256),
                http_addr: format!("10.0.{}.{}:7001", id.0 / 256, id.0 % 256),
            },
        );
        s.liveness.insert(
            id,
            Liveness {
                epoch: LivenessEpoch(1),
                expiration_ms: 1,
            },
        );
    }
    let mut next = 1u64;
    for i in 0..tablets {
        let (table, tablet) = (TableId(next), TabletId(next + 1));
        next += 2;
        let master = NodeId(1 + (i as u64 % nodes));
        let replicas: Vec<NodeId> = (0..3).map(|r| NodeId(1 + (i as u64 + r) % nodes)).collect();
        let name = format!("table-{i:06}");
        let desc = TableDesc {
            id: table,
            name: name.clone(),
            policy: PolicyKind::Strong,
            replication_factor: 3,
            version_retention_secs: 86_400,
            options: Default::default(),
            tablets: Tablets::unit(TabletDesc {
                id: tablet,
                table,
                start: Vec::new(),
                end: None,
                generation: 1,
                replicas: replicas.clone(),
                in_sync: replicas,
                master,
                master_epoch: Epoch(1),
                master_liveness: LivenessEpoch(1),
                conf_version: 1,
                moving: None,
                split: None,
                merge: None,
                absorbed: None,
            }),
        };
        s.tables.insert(name, Arc::new(desc));
    }
    s.next_id = next;
    s
}

/// A state holding `nodes` nodes and one table of `tablets` tablets (a table grown by
/// splits), named "big", its tablets starting at `key-00000000`, `key-00000001`, ...
fn big_state(nodes: u64, tablets: usize) -> MetaState {
    let mut s = state(nodes, 0);
    let table = TableId(1);
    let list: Tablets = (0..tablets)
        .map(|i| {
            let replicas: Vec<NodeId> =
                (0..3).map(|r| NodeId(1 + (i as u64 + r) % nodes)).collect();
            TabletDesc {
                id: TabletId(2 + i as u64),
                table,
                start: if i == 0 { Vec::new() } else { big_key(i) },
                end: (i + 1 < tablets).then(|| big_key(i + 1)),
                generation: 1,
                replicas: replicas.clone(),
                in_sync: replicas.clone(),
                master: replicas[0],
                master_epoch: Epoch(1),
                master_liveness: LivenessEpoch(1),
                conf_version: 1,
                moving: None,
                split: None,
                merge: None,
                absorbed: None,
            }
        })
        .collect();
    let desc = TableDesc {
        id: table,
        name: "big".into(),
        policy: PolicyKind::Strong,
        replication_factor: 3,
        version_retention_secs: 86_400,
        options: Default::default(),
        tablets: list,
    };
    s.tables.insert("big".into(), Arc::new(desc));
    s.next_id = tablets as u64 + 2;
    s
}

fn big_key(i: usize) -> Vec<u8> {
    format!("key-{i:08}").into_bytes()
}

fn entry(index: u64, cmd: MetaCommand) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(cmd),
    }
}

/// One row: an operation's cost at each tablet count.
struct Row {
    what: &'static str,
    costs: Vec<Duration>,
}

/// Runs the benchmark and prints a table (or JSON).
pub async fn run(args: MetaBenchArgs, json_out: bool) -> anyhow::Result<()> {
    let min = Duration::from_millis(args.min_ms);
    let names = [
        "heartbeat apply",
        "create table",
        "state copy",
        "placement plan",
        "snapshot",
        "lookup by key",
        "lookup by id",
        "tablet change, one table",
        "split, one table",
        "lookup by key, one table",
    ];
    let mut rows: Vec<Row> = names
        .iter()
        .map(|what| Row {
            what,
            costs: Vec::new(),
        })
        .collect();
    for &n in &args.tablets {
        let dir = tempfile::tempdir().context("temporary directory")?;
        let engine: Arc<dyn TabletEngine> = Arc::new(RocksTabletEngine::open(
            dir.path().join("db"),
            &Default::default(),
        )?);
        let shared = Arc::new(parking_lot::RwLock::new(MetaState::default()));
        let (tx, _rx) = tokio::sync::watch::channel(0);
        let mut sm = StateMachine::open(engine, shared.clone(), tx).await?;
        sm.replace_state(state(args.nodes, n))
            .await
            .context("load the state")?;
        let mut index = 1u64;
        let nodes = args.nodes;

        let heartbeat = per_op!(min, 100, |i| {
            index += 1;
            let e = entry(
                index,
                MetaCommand::Heartbeat {
                    node: NodeId(1 + i % nodes),
                    epoch: LivenessEpoch(1),
                    expiration_ms: 1_000 + i,
                },
            );
            sm.apply(vec![e]).await.expect("apply")
        });
        let copy = per_op!(min, 20, |_i| shared.read().clone());
        let snapshot_of = shared.read().clone();
        let live: BTreeSet<NodeId> = snapshot_of.nodes.keys().copied().collect();
        let nodes = Nodes {
            live,
            dead: BTreeSet::new(),
        };
        let plan = per_op!(min, 5, |_i| placement::plan(&snapshot_of, &nodes, true));
        let snapshot = per_op!(min, 3, |_i| {
            let mut builder = sm.get_snapshot_builder().await;
            builder.build_snapshot().await.expect("snapshot")
        });
        let names: Vec<String> = snapshot_of.tables.keys().cloned().collect();
        let by_key = per_op!(min, 1000, |i| {
            let table = &snapshot_of.tables[&names[(i as usize * 7919) % names.len()]];
            table.tablet_for(format!("key-{i}").as_bytes()).id
        });
        let ids: Vec<TabletId> = snapshot_of
            .tables
            .values()
            .flat_map(|t| t.tablets.iter().map(|tb| tb.id))
            .collect();
        let by_id = per_op!(min, 100, |i| {
            snapshot_of
                .tablet(ids[(i as usize * 7919) % ids.len()])
                .map(|t| t.master)
        });
        // Last: the tables it creates would swell the state the others measure.
        let create = per_op!(min, 20, |i| {
            index += 1;
            let e = entry(
                index,
                MetaCommand::CreateTable {
                    spec: TableSpec {
                        name: format!("new-{i}"),
                        policy: PolicyKind::Strong,
                        replication_factor: 3,
                        version_retention_secs: 0,
                        options: Default::default(),
                        split_keys: Vec::new(),
                    },
                    if_not_exists: false,
                    proposer: NodeId(1),
                },
            );
            sm.apply(vec![e]).await.expect("apply")
        });
        let (change, split, big_by_key) = big_table(&args, n, min).await?;
        for (row, cost) in rows.iter_mut().zip([
            heartbeat, create, copy, plan, snapshot, by_key, by_id, change, split, big_by_key,
        ]) {
            row.costs.push(cost);
        }
    }
    if json_out {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "operation": r.what,
                    "tablets": args.tablets,
                    "ns_per_op": r.costs.iter().map(|c| c.as_nanos() as u64).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(());
    }
    let head: Vec<String> = args
        .tablets
        .iter()
        .map(|n| format!("{n} tablets"))
        .collect();
    println!("| operation | {} | ratio |", head.join(" | "));
    println!("|---|{}---:|", "---:|".repeat(head.len()));
    for r in &rows {
        let cells: Vec<String> = r.costs.iter().map(|c| show(*c)).collect();
        let ratio = match (r.costs.first(), r.costs.last()) {
            (Some(a), Some(b)) if !a.is_zero() => {
                format!("{:.1}x", b.as_secs_f64() / a.as_secs_f64())
            }
            _ => "-".into(),
        };
        println!("| {} | {} | {ratio} |", r.what, cells.join(" | "));
    }
    Ok(())
}

/// The costs in one table of `n` tablets: a change of one tablet (its in-sync set,
/// with what it writes), a split (intent and commit), and a lookup by key.
async fn big_table(
    args: &MetaBenchArgs,
    n: usize,
    min: Duration,
) -> anyhow::Result<(Duration, Duration, Duration)> {
    let dir = tempfile::tempdir().context("temporary directory")?;
    let engine: Arc<dyn TabletEngine> = Arc::new(RocksTabletEngine::open(
        dir.path().join("db"),
        &Default::default(),
    )?);
    let shared = Arc::new(parking_lot::RwLock::new(MetaState::default()));
    let (tx, _rx) = tokio::sync::watch::channel(0);
    let mut sm = StateMachine::open(engine, shared.clone(), tx).await?;
    sm.replace_state(big_state(args.nodes, n))
        .await
        .context("load the state")?;
    let mut index = 1u64;
    let change = per_op!(min, 100, |i| {
        index += 1;
        let id = TabletId(2 + (i * 7919) % n as u64);
        let tablet = shared.read().tablet(id).cloned().expect("a tablet");
        // Every other change drops a replica from the in-sync set, the next puts it back.
        let in_sync = match tablet.in_sync.len() {
            3 => tablet.replicas[..2].to_vec(),
            _ => tablet.replicas.clone(),
        };
        let e = entry(
            index,
            MetaCommand::SetInSync {
                tablet: id,
                expect_epoch: tablet.master_epoch,
                in_sync,
            },
        );
        sm.apply(vec![e]).await.expect("apply")
    });
    let split = per_op!(min, 20, |i| {
        // Inside tablet `j`'s range: its start with a suffix, fresh each time.
        let j = 1 + (i as usize * 7919) % (n - 1).max(1);
        let key = [big_key(j), format!("-{i}").into_bytes()].concat();
        let tablet = {
            let s = shared.read();
            s.tables["big"].tablet_for(&key).clone()
        };
        index += 1;
        let intent = entry(
            index,
            MetaCommand::SplitIntent {
                tablet: tablet.id,
                expect_generation: tablet.generation,
                key,
            },
        );
        let responses = sm.apply(vec![intent]).await.expect("apply");
        let Some(datalayer_cluster::meta::MetaResponse::Split(right)) = responses.first().cloned()
        else {
            panic!("split intent refused: {responses:?}");
        };
        index += 1;
        let commit = entry(
            index,
            MetaCommand::SplitCommit {
                tablet: tablet.id,
                right,
            },
        );
        sm.apply(vec![commit]).await.expect("apply")
    });
    let state = shared.read().clone();
    let table = state.tables["big"].clone();
    let by_key = per_op!(min, 1000, |i| {
        table.tablet_for(&big_key((i as usize * 7919) % n)).id
    });
    Ok((change, split, by_key))
}

fn show(d: Duration) -> String {
    let ns = d.as_nanos();
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..1_000_000 => format!("{:.1} µs", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}
