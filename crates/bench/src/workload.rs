//! `datalayer workload`: a Jepsen-style client for fault tests. Concurrent clients run
//! reads, writes and compare-and-sets on a set of registers (every written value is
//! unique) and add unique ids with `acks=all`, against any node of a cluster, and print
//! every operation as one JSON line: what was asked, what came back, and when it was
//! sent and answered (microseconds since the start). The chaos tests check the history
//! for linearizability per register and for lost ids.
//!
//! An operation whose answer did not come (a timeout, an ambiguous write, a broken
//! connection) is printed with `"ret": null`: it may or may not have taken effect. A
//! read that failed is printed as `"f": "fail"` (it changed nothing; the checkers
//! count it but do not check it).

use clap::Args;
use datalayer_api::v1 as pb;
use datalayer_client::{Client, ClientError, ErrorKind, TableOptions};
use rand::Rng;
use serde_json::json;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Options of `datalayer workload`.
#[derive(Debug, Args)]
pub struct WorkloadArgs {
    /// gRPC addresses of the cluster's nodes (a client moves on when one fails).
    #[arg(long, value_delimiter = ',', required = true)]
    nodes: Vec<String>,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 20)]
    secs: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 6)]
    clients: usize,
    /// Registers (keys r0, r1, ...).
    #[arg(long, default_value_t = 100)]
    registers: usize,
    /// The table (created if missing).
    #[arg(long, default_value = "chaos")]
    table: String,
    /// Longest wait for one answer, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    timeout_ms: u64,
}

/// Runs the workload, printing the history on stdout.
pub async fn run(args: WorkloadArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut created = false;
    for attempt in 0.. {
        let addr = &args.nodes[attempt % args.nodes.len()];
        if let Ok(mut c) = Client::connect(addr).await {
            let opts = TableOptions {
                if_not_exists: true,
                ..Default::default()
            };
            if c.create_table(&args.table, opts).await.is_ok() {
                created = true;
                break;
            }
        }
        if start.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::ensure!(created, "could not create table {}", args.table);
    let (tx, mut rx) = mpsc::unbounded_channel::<serde_json::Value>();
    let printer = tokio::spawn(async move {
        while let Some(line) = rx.recv().await {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    });
    let args = Arc::new(args);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.secs);
    let mut tasks = Vec::new();
    for p in 0..args.clients {
        let (args, tx) = (args.clone(), tx.clone());
        tasks.push(tokio::spawn(async move {
            client(p, &args, start, deadline, tx).await;
        }));
    }
    drop(tx);
    for t in tasks {
        let _ = t.await;
    }
    let _ = printer.await;
    Ok(())
}

/// How an operation ended.
enum Answer<T> {
    Ok(T),
    /// Definitely did not take effect (refused before executing).
    Failed,
    /// Unknown.
    Unknown,
}

fn classify<T>(r: Result<Result<T, ClientError>, tokio::time::error::Elapsed>) -> Answer<T> {
    match r {
        Ok(Ok(v)) => Answer::Ok(v),
        // Refused before anything was written.
        Ok(Err(e)) if matches!(e.kind, ErrorKind::InvalidArgument | ErrorKind::NotFound) => {
            Answer::Failed
        }
        _ => Answer::Unknown,
    }
}

async fn connect(args: &WorkloadArgs, node: &mut usize) -> Client {
    loop {
        *node = (*node + 1) % args.nodes.len();
        let addr = &args.nodes[*node];
        if let Ok(Ok(c)) =
            tokio::time::timeout(Duration::from_millis(500), Client::connect(addr)).await
        {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn client(
    p: usize,
    args: &WorkloadArgs,
    start: Instant,
    deadline: Instant,
    tx: mpsc::UnboundedSender<serde_json::Value>,
) {
    let mut node = p;
    let mut c = connect(args, &mut node).await;
    c.set_acks(Some(datalayer_client::acks_all()));
    let timeout = Duration::from_millis(args.timeout_ms);
    let us = |t: Instant| t.duration_since(start).as_micros() as u64;
    let mut n = 0u64;
    while Instant::now() < deadline {
        n += 1;
        let roll: u32 = rand::rng().random_range(0..100);
        let key = format!("r{}", rand::rng().random_range(0..args.registers));
        let call = Instant::now();
        let mut failed = false;
        if roll < 25 {
            // A unique id, with acks=all.
            let id = format!("id/{p}-{n}");
            let r = tokio::time::timeout(timeout, c.put(&args.table, id.as_bytes(), b"1")).await;
            let line = match classify(r) {
                Answer::Ok(_) => {
                    json!({"f": "id", "id": id, "call": us(call), "ret": us(Instant::now())})
                }
                Answer::Failed => json!({"f": "id", "id": id, "call": us(call), "failed": true}),
                Answer::Unknown => {
                    failed = true;
                    json!({"f": "id", "id": id, "call": us(call), "ret": null})
                }
            };
            let _ = tx.send(line);
        } else if roll < 55 {
            let r = tokio::time::timeout(timeout, c.get(&args.table, key.as_bytes())).await;
            match classify(r) {
                Answer::Ok(v) => {
                    let v = v.map(|v| String::from_utf8_lossy(&v.value).into_owned());
                    let _ = tx.send(json!({"f": "read", "k": key, "v": v, "p": p,
                        "call": us(call), "ret": us(Instant::now())}));
                }
                // A failed read changes nothing: the checker leaves it out.
                _ => {
                    failed = true;
                    let _ = tx.send(json!({"f": "fail", "what": "read", "k": key, "p": p,
                        "call": us(call), "ret": null}));
                }
            }
        } else if roll < 75 {
            let v = format!("w{p}-{n}");
            let r = tokio::time::timeout(timeout, c.put(&args.table, key.as_bytes(), v.as_bytes()))
                .await;
            let ret = match classify(r) {
                Answer::Ok(_) => Some(us(Instant::now())),
                Answer::Failed => continue,
                Answer::Unknown => {
                    failed = true;
                    None
                }
            };
            let _ = tx.send(json!({"f": "write", "k": key, "v": v, "p": p,
                "call": us(call), "ret": ret}));
        } else {
            // Compare-and-set on the version just read: read, then cas (two operations).
            let r = tokio::time::timeout(timeout, c.get(&args.table, key.as_bytes())).await;
            let Answer::Ok(current) = classify(r) else {
                failed = true;
                let _ = tx.send(json!({"f": "fail", "what": "read", "k": key, "p": p,
                    "call": us(call), "ret": null}));
                reconnect_if(failed, args, &mut node, &mut c).await;
                continue;
            };
            let now = Instant::now();
            let seen = current
                .as_ref()
                .map(|v| String::from_utf8_lossy(&v.value).into_owned());
            let _ = tx.send(json!({"f": "read", "k": key, "v": seen, "p": p,
                "call": us(call), "ret": us(now)}));
            let Some(current) = current else {
                continue;
            };
            let to = format!("c{p}-{n}");
            let call = Instant::now();
            let r = tokio::time::timeout(
                timeout,
                c.compare_and_set(
                    &args.table,
                    key.as_bytes(),
                    Some(current.version),
                    Some(to.as_bytes()),
                ),
            )
            .await;
            let (ok, ret) = match classify(r) {
                Answer::Ok(resp) => (Some(resp.succeeded), Some(us(Instant::now()))),
                Answer::Failed => continue,
                Answer::Unknown => {
                    failed = true;
                    (None, None)
                }
            };
            let _ = tx.send(
                json!({"f": "cas", "k": key, "from": seen, "to": to, "ok": ok,
                "p": p, "call": us(call), "ret": ret}),
            );
        }
        reconnect_if(failed, args, &mut node, &mut c).await;
    }
}

/// After a failure, talk to the next node (the one used may be down or cut off).
async fn reconnect_if(failed: bool, args: &WorkloadArgs, node: &mut usize, c: &mut Client) {
    if failed {
        *c = connect(args, node).await;
        c.set_acks(Some(datalayer_client::acks_all()));
        c.set_consistency(pb::ReadConsistency::Committed);
    }
}
