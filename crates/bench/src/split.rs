//! `datalayer bench-split`: one table under many clients on a running cluster whose
//! nodes split tablets by load. All traffic starts on the table's one tablet; the
//! benchmark reports the throughput before the first split and at the end (once the
//! splits have spread the masters), the time from the start of the load to the first
//! split and to masters on every node, the p99 write latency around the first split
//! against the steady state before it, and how many operations failed.

use clap::Args;
use datalayer_client::{Client, TableOptions};
use rand::Rng;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Options of `datalayer bench-split`.
#[derive(Debug, Args)]
pub struct SplitArgs {
    /// gRPC addresses of every node of the cluster (clients spread over them).
    #[arg(long, value_delimiter = ',', required = true)]
    cluster: Vec<String>,
    /// Concurrent clients, each writing single keys with acks=all.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// How long the load runs, in seconds.
    #[arg(long, default_value_t = 60)]
    secs: u64,
    /// The table (dropped and created afresh).
    #[arg(long, default_value = "split_bench")]
    table: String,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
}

/// One completed operation: when it ended and how long it took (µs since the start),
/// and whether it succeeded.
type Sample = (u64, u64, bool);

/// What the table looked like at one moment: (µs since the start, tablets, distinct
/// masters).
type Shape = (u64, usize, usize);

fn p99(mut lat: Vec<u64>) -> f64 {
    if lat.is_empty() {
        return 0.0;
    }
    lat.sort_unstable();
    lat[(lat.len() * 99 / 100).min(lat.len() - 1)] as f64 / 1000.0
}

/// Operations per second of the samples ending in `[from, to)` µs.
fn rate(samples: &[Sample], from: u64, to: u64) -> f64 {
    let n = samples
        .iter()
        .filter(|(t, _, ok)| *ok && *t >= from && *t < to)
        .count();
    n as f64 / ((to.saturating_sub(from)) as f64 / 1e6).max(1e-9)
}

fn latencies(samples: &[Sample], from: u64, to: u64) -> Vec<u64> {
    samples
        .iter()
        .filter(|(t, _, _)| *t >= from && *t < to)
        .map(|(_, l, _)| *l)
        .collect()
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: SplitArgs, json: bool) -> anyhow::Result<()> {
    let mut admin = Client::connect(&args.cluster[0]).await?;
    admin.drop_table(&args.table, true).await?;
    admin
        .create_table(&args.table, TableOptions::default())
        .await?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.secs);
    let us = move || start.elapsed().as_micros() as u64;
    let mut tasks = Vec::new();
    for i in 0..args.clients {
        let (addr, table) = (
            args.cluster[i % args.cluster.len()].clone(),
            args.table.clone(),
        );
        let value = vec![b'v'; args.value_bytes];
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(&addr).await?;
            let mut samples: Vec<Sample> = Vec::new();
            while Instant::now() < deadline {
                let key = format!("k{:06}", rand::rng().random_range(0..1_000_000));
                let t = Instant::now();
                let ok = c.put(&table, key.as_bytes(), &value).await.is_ok();
                samples.push((us(), t.elapsed().as_micros() as u64, ok));
            }
            anyhow::Ok(samples)
        }));
    }
    let mut shapes: Vec<Shape> = Vec::new();
    while Instant::now() < deadline {
        if let Ok(t) = admin.describe_table(&args.table).await {
            let masters: BTreeSet<u64> = t.tablets.iter().map(|t| t.master).collect();
            shapes.push((us(), t.tablets.len(), masters.len()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await??);
    }
    let end = args.secs * 1_000_000;
    let split_at = shapes.iter().find(|s| s.1 > 1).map(|s| s.0);
    let spread_at = shapes
        .iter()
        .find(|s| s.2 >= args.cluster.len())
        .map(|s| s.0);
    let (tablets, masters) = shapes.last().map_or((1, 1), |s| (s.1, s.2));
    // Steady state: from the first second to half a second before the first split.
    let steady_end = split_at.map_or(end, |t| t.saturating_sub(500_000));
    let before = rate(&samples, 1_000_000, steady_end);
    let after = rate(&samples, end.saturating_sub(10_000_000), end);
    let steady_p99 = p99(latencies(&samples, 1_000_000, steady_end));
    let split_p99 = split_at.map(|t| {
        p99(latencies(
            &samples,
            t.saturating_sub(1_000_000),
            t + 1_000_000,
        ))
    });
    let failed = samples.iter().filter(|s| !s.2).count();
    let secs = |t: Option<u64>| t.map(|t| t as f64 / 1e6);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "clients": args.clients,
                "ops_per_sec_before_split": before,
                "ops_per_sec_last_10s": after,
                "secs_to_first_split": secs(split_at),
                "secs_to_masters_on_every_node": secs(spread_at),
                "tablets_at_end": tablets,
                "nodes_mastering_at_end": masters,
                "p99_ms_steady": steady_p99,
                "p99_ms_around_first_split": split_p99,
                "failed_ops": failed,
                "ops": samples.len(),
            })
        );
    } else {
        println!(
            "clients: {}, {} s, {} ops",
            args.clients,
            args.secs,
            samples.len()
        );
        println!("throughput before the first split: {before:.0} ops/s");
        println!(
            "throughput over the last 10 s: {after:.0} ops/s ({:.2}x), {tablets} tablets mastered on {masters} nodes",
            after / before.max(1e-9)
        );
        println!(
            "first split after {:?} s; masters on every node after {:?} s",
            secs(split_at),
            secs(spread_at)
        );
        println!(
            "p99 write latency: steady {steady_p99:.1} ms, within 1 s of the first split {}",
            split_p99.map_or("-".into(), |p| format!(
                "{p:.1} ms ({:.2}x)",
                p / steady_p99.max(1e-9)
            ))
        );
        println!("failed operations: {failed}");
    }
    Ok(())
}
