//! # datalayer-bench: the tools that measure and exercise a cluster
//!
//! Kept out of the server: the node binary's `datalayer bench` and `datalayer
//! workload` subcommands call this crate, which talks to nodes only through the
//! client library, and brings its peers' protocols (etcd's KV subset) and its own
//! RocksDB peer.
//!
//! - [`run`] (`datalayer bench`): throughput and latency of a running node, side by
//!   side in one run with its peers — raw RocksDB in-process, `redis-server` (driven
//!   by `redis-benchmark`) and `etcd` — at the same concurrency and value size; and
//!   the cluster benchmark (replicated puts and failover, against a 3-node etcd).
//!   `scripts/bench.sh` and `scripts/bench-cluster.sh` start the peers and call it;
//!   BENCHMARKS.md has the figures.
//! - [`workload`] (`datalayer workload`): the chaos suite's client, which records
//!   every operation's outcome for the checkers.

use anyhow::{Context, bail};
use clap::Args;
use datalayer_api::v1 as pb;
use datalayer_client::{Client, TableOptions};
use hdrhistogram::Histogram;
use rand::Rng;
use serde_json::json;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod cluster;
pub mod meta;
mod peers;
pub mod split;
pub mod ts;
pub mod workload;

use cluster::cluster_bench;
use peers::{etcd_bench, raw_rocksdb, redis_benchmark};

/// Options of `datalayer bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Concurrent clients (each with its own connection).
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// TCP connections the DataLayer clients use (clients share them round-robin);
    /// the default gives each client its own, as redis-benchmark does.
    #[arg(long, default_value_t = usize::MAX)]
    connections: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Seconds per workload.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Rows per batch in the batched-put workload.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Rows per scan in the scan workload.
    #[arg(long, default_value_t = 100)]
    scan_rows: u32,
    /// Which DataLayer workloads to run after the durable puts (which load the keys
    /// the others read): any of batch, get, scan.
    #[arg(long, value_delimiter = ',', default_value = "batch,get,scan")]
    workloads: Vec<String>,
    /// Also run synced puts on a raw RocksDB in this directory (same disk as the node).
    #[arg(long)]
    rocksdb_dir: Option<PathBuf>,
    /// Also run `redis-benchmark` against redis-server at this host:port.
    #[arg(long)]
    redis: Option<String>,
    /// Also drive etcd at this host:port.
    #[arg(long)]
    etcd: Option<String>,
    /// Cluster mode: the gRPC addresses of every node of a running cluster. Measures
    /// metadata changes, and puts and gets sent to a tablet's master against the same
    /// sent to another node (forwarded), instead of the single-node workloads.
    #[arg(long, value_delimiter = ',')]
    cluster: Vec<String>,
    /// Cluster mode: also run the same puts on this single node (a cluster of its own),
    /// for comparison with replicated puts.
    #[arg(long)]
    single_node: Option<String>,
    /// Cluster mode: rounds of the replicated-put comparison (acks=1, acks=all, the
    /// single node, etcd, interleaved); each reports its median round.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Cluster mode: run only the replicated-put comparison (no metadata changes or
    /// forwarding).
    #[arg(long)]
    replication_only: bool,
}

/// One measured workload.
#[derive(Debug, Clone)]
struct Measure {
    system: &'static str,
    workload: &'static str,
    ops_per_sec: f64,
    rows_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

type OpFuture = Pin<Box<dyn Future<Output = anyhow::Result<u64>> + Send>>;
type OpFn<C> = Arc<dyn Fn(C, usize, u64) -> OpFuture + Send + Sync>;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Runs `op` from every connection until `dur` passes. `op` returns rows handled.
/// Also returns the fewest operations any one connection completed.
async fn drive<C: Clone + Send + 'static>(
    system: &'static str,
    workload: &'static str,
    conns: &[C],
    dur: Duration,
    op: OpFn<C>,
) -> anyhow::Result<(Measure, u64)> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, conn) in conns.iter().enumerate() {
        let (conn, op) = (conn.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = histogram();
            let (mut ops, mut rows) = (0u64, 0u64);
            while start.elapsed() < dur {
                let t = Instant::now();
                rows += op(conn.clone(), i, ops).await?;
                hist.saturating_record(t.elapsed().as_micros() as u64);
                ops += 1;
            }
            anyhow::Ok((hist, ops, rows))
        }));
    }
    let mut hist = histogram();
    let (mut ops, mut rows, mut fewest) = (0u64, 0u64, u64::MAX);
    for t in tasks {
        let (h, o, r) = t.await??;
        hist.add(h).expect("same histogram bounds");
        ops += o;
        rows += r;
        fewest = fewest.min(o);
    }
    let secs = start.elapsed().as_secs_f64();
    let m = Measure {
        system,
        workload,
        ops_per_sec: ops as f64 / secs,
        rows_per_sec: rows as f64 / secs,
        p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
    };
    Ok((m, fewest))
}

fn key(client: usize, i: u64) -> Vec<u8> {
    format!("b{client:03}{i:010}").into_bytes()
}

/// Runs the benchmark and prints the report.
pub async fn run(addr: &str, args: BenchArgs, json_out: bool) -> anyhow::Result<()> {
    if args.clients == 0 || args.seconds == 0 || args.batch == 0 || args.rounds == 0 {
        bail!("--clients, --seconds, --batch and --rounds must be at least 1");
    }
    let dur = Duration::from_secs(args.seconds);
    let value = Arc::new(vec![b'x'; args.value_size]);
    if !args.cluster.is_empty() {
        let results = cluster_bench(&args, dur, &value).await?;
        report(&results, &args, json_out);
        return Ok(());
    }
    let mut results = Vec::new();

    let mut admin = Client::connect(addr)
        .await
        .with_context(|| format!("cannot reach a node at {addr}"))?;
    admin.drop_table("bench", true).await?;
    admin.create_table("bench", TableOptions::default()).await?;
    let mut conns = Vec::new();
    for i in 0..args.clients {
        if i < args.connections.max(1) {
            conns.push(Client::connect(addr).await?);
        } else {
            // Clients beyond --connections share the existing HTTP/2 connections.
            let shared = conns[i % args.connections.max(1)].clone();
            conns.push(shared);
        }
    }
    eprintln!("datalayer: durable puts");
    let v = value.clone();
    let (m, loaded) = drive(
        "datalayer",
        "put",
        &conns,
        dur,
        Arc::new(move |mut c: Client, client, i| {
            let v = v.clone();
            Box::pin(async move {
                c.put("bench", &key(client, i), &v).await?;
                Ok(1)
            })
        }),
    )
    .await?;
    // Every client wrote keys 0..n: reads pick below the fewest any client wrote.
    let loaded = loaded.max(1);
    results.push(m);

    for w in &args.workloads {
        if !["batch", "get", "scan"].contains(&w.as_str()) {
            bail!("unknown workload {w:?}: use batch, get or scan");
        }
    }
    let wants = |w: &str| args.workloads.iter().any(|x| x == w);
    let (v, batch) = (value.clone(), args.batch as u64);
    if wants("batch") {
        eprintln!("datalayer: batched puts");
        results.push(
            drive(
                "datalayer",
                "batch",
                &conns,
                dur,
                Arc::new(move |mut c: Client, client, i| {
                    let v = v.clone();
                    Box::pin(async move {
                        let muts = (0..batch)
                            .map(|j| datalayer_client::put(&key(client + 500, i * batch + j), &v))
                            .collect();
                        c.write("bench", muts).await?;
                        Ok(batch)
                    })
                }),
            )
            .await?
            .0,
        );
    }
    let clients = args.clients;
    if wants("get") {
        eprintln!("datalayer: point gets");
        results.push(
            drive(
                "datalayer",
                "get",
                &conns,
                dur,
                Arc::new(move |mut c: Client, _, _| {
                    let (client, i) = {
                        let mut r = rand::rng();
                        (r.random_range(0..clients), r.random_range(0..loaded))
                    };
                    Box::pin(async move {
                        let found = c.get("bench", &key(client, i)).await?;
                        anyhow::ensure!(found.is_some(), "bench key missing");
                        Ok(1)
                    })
                }),
            )
            .await?
            .0,
        );
    }
    let rows = args.scan_rows;
    if wants("scan") {
        eprintln!("datalayer: {}-row scans", args.scan_rows);
        results.push(
            drive(
                "datalayer",
                "scan",
                &conns,
                dur,
                Arc::new(move |mut c: Client, _, _| {
                    let start = key(rand::rng().random_range(0..clients), 0);
                    Box::pin(async move {
                        let page = c
                            .scan_page(pb::ScanRequest {
                                table: "bench".into(),
                                start,
                                limit: rows,
                                ..Default::default()
                            })
                            .await?;
                        Ok(page.rows.len() as u64)
                    })
                }),
            )
            .await?
            .0,
        );
    }
    admin.drop_table("bench", true).await?;

    if let Some(dir) = &args.rocksdb_dir {
        eprintln!("raw rocksdb: synced puts");
        results.push(raw_rocksdb(dir, args.clients, &value, dur)?);
    }
    if let Some(redis) = &args.redis {
        eprintln!("redis-server: redis-benchmark");
        results.extend(redis_benchmark(redis, args.clients, args.value_size, dur).await?);
    }
    if let Some(etcd) = &args.etcd {
        eprintln!("etcd: puts and serializable gets");
        results.extend(etcd_bench(etcd, args.clients, &value, dur).await?);
    }
    report(&results, &args, json_out);
    Ok(())
}

type RawKv = datalayer_api::v1::kv_client::KvClient<tonic::transport::Channel>;

async fn raw_kv(addr: &str, n: usize) -> anyhow::Result<Vec<RawKv>> {
    let mut out = Vec::new();
    for _ in 0..n {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("cannot reach {addr}"))?;
        out.push(RawKv::new(ch));
    }
    Ok(out)
}

fn find<'a>(results: &'a [Measure], system: &str, workload: &str) -> Option<&'a Measure> {
    results
        .iter()
        .find(|m| m.system.starts_with(system) && m.workload == workload)
}

fn report(results: &[Measure], args: &BenchArgs, json_out: bool) {
    let ratio = |a: (&str, &str), b: (&str, &str)| -> Option<f64> {
        Some(find(results, a.0, a.1)?.ops_per_sec / find(results, b.0, b.1)?.ops_per_sec)
    };
    let single_ratios = [
        (
            "durable puts vs redis-server SET (fsync always)",
            ratio(("datalayer", "put"), ("redis", "put")),
            1.0,
        ),
        (
            "durable puts vs etcd put",
            ratio(("datalayer", "put"), ("etcd", "put")),
            3.0,
        ),
        (
            "durable puts vs raw RocksDB synced puts",
            ratio(("datalayer", "put"), ("rocksdb", "put")),
            0.8,
        ),
        (
            "point gets vs etcd serializable get",
            ratio(("datalayer", "get"), ("etcd", "get")),
            2.0,
        ),
        (
            "point gets vs redis-server GET",
            ratio(("datalayer", "get"), ("redis", "get")),
            0.5,
        ),
    ];
    let cluster_ratios = [
        (
            "3-node puts acks=all vs 3-node etcd put",
            ratio(
                ("datalayer 3 nodes", "put acks=all"),
                ("etcd 3 nodes", "put"),
            ),
            2.0,
        ),
        (
            "3-node puts acks=1 vs single-node puts",
            ratio(
                ("datalayer 3 nodes", "put acks=1"),
                ("datalayer 1 node", "put"),
            ),
            0.0,
        ),
        (
            "3-node puts acks=all vs single-node puts",
            ratio(
                ("datalayer 3 nodes", "put acks=all"),
                ("datalayer 1 node", "put"),
            ),
            0.0,
        ),
        (
            "puts forwarded by another node vs sent to the master",
            ratio(
                ("datalayer 3 nodes", "put, sent to another node"),
                ("datalayer 3 nodes", "put, sent to the master"),
            ),
            0.0,
        ),
        (
            "gets forwarded by another node vs sent to the master",
            ratio(
                ("datalayer 3 nodes", "get, sent to another node"),
                ("datalayer 3 nodes", "get, sent to the master"),
            ),
            0.0,
        ),
    ];
    let ratios = if args.cluster.is_empty() {
        single_ratios.to_vec()
    } else {
        cluster_ratios.to_vec()
    };
    if json_out {
        let rows: Vec<_> = results
            .iter()
            .map(|m| {
                json!({"system": m.system, "workload": m.workload, "ops_per_sec": m.ops_per_sec,
                       "rows_per_sec": m.rows_per_sec, "p50_ms": m.p50_ms, "p99_ms": m.p99_ms})
            })
            .collect();
        let ratios: Vec<_> = ratios
            .iter()
            .filter_map(|(n, r, t)| r.map(|r| json!({"comparison": n, "ratio": r, "target": t})))
            .collect();
        println!(
            "{}",
            json!({"clients": args.clients, "value_size": args.value_size, "results": rows, "ratios": ratios})
        );
        return;
    }
    let rounds = if args.cluster.is_empty() {
        String::new()
    } else {
        format!(
            "; replicated puts: median of {} interleaved rounds",
            args.rounds
        )
    };
    println!(
        "\n{} clients on {} connections, {}-byte values, {} s per workload{rounds}\n",
        args.clients,
        args.connections.min(args.clients),
        args.value_size,
        args.seconds
    );
    println!("| system | workload | ops/s | rows/s | p50 ms | p99 ms |");
    println!("|---|---|---:|---:|---:|---:|");
    for m in results {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.2} | {:.2} |",
            m.system, m.workload, m.ops_per_sec, m.rows_per_sec, m.p50_ms, m.p99_ms
        );
    }
    println!("\n| comparison | ratio | target | met |");
    println!("|---|---:|---:|---|");
    for (name, r, target) in ratios {
        match r {
            Some(r) if target > 0.0 => println!(
                "| {name} | {r:.2}x | {target:.1}x | {} |",
                if r >= target { "yes" } else { "no" }
            ),
            Some(r) => println!("| {name} | {r:.2}x | — | — |"),
            None => {}
        }
    }
}
