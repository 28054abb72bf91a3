//! The command line: `start` runs a node, the rest talk to one.

mod client;
mod start;
mod ts;

use clap::{Parser, Subcommand};
use client::{ClientOpts, client_command, parse_acks};
use datalayer_api::v1 as pb;
use datalayer_client::ClientError;
use serde_json::json;
use start::{StartArgs, arm_fail_points, node_config, start};
use std::process::ExitCode;

/// DataLayer: a multi-model distributed database.
#[derive(Debug, Parser)]
#[command(name = "datalayer", version, about)]
struct Cli {
    /// Address of the node to talk to (client commands).
    #[arg(
        long,
        global = true,
        env = "DATALAYER_ADDR",
        default_value = "127.0.0.1:7700"
    )]
    addr: String,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Acks of writes: 1 (the master), N (replicas), or all (the in-sync set).
    /// Default: the table's (all unless it says otherwise).
    #[arg(long, global = true)]
    acks: Option<String>,
    /// What reads see: committed (default, at the master), latest (the master's
    /// newest, including writes not yet on the in-sync set) or follower (committed
    /// data from the replica on the node asked, possibly stale).
    #[arg(long, global = true, default_value = "committed")]
    consistency: String,
    /// Follower reads: the most staleness accepted, in ms (default 10000).
    #[arg(long, global = true, default_value_t = 0)]
    max_staleness_ms: u32,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node. With no flags: a single node on loopback, data in ./datalayer-data.
    Start(StartArgs),
    /// Create, list, describe and drop tables.
    #[command(subcommand)]
    Table(TableCmd),
    /// Write a value.
    Put {
        table: String,
        key: String,
        value: String,
    },
    /// Read a value (exit 1 when the key is absent).
    Get {
        table: String,
        key: String,
        /// Read as of this timestamp (a version number) instead of the latest.
        #[arg(long)]
        at: Option<u64>,
    },
    /// Delete a key.
    Del { table: String, key: String },
    /// List rows in key order.
    Scan {
        table: String,
        /// First key (inclusive).
        #[arg(long, default_value = "")]
        start: String,
        /// End key (exclusive).
        #[arg(long, default_value = "")]
        end: String,
        /// At most this many rows (0 = all).
        #[arg(long, default_value_t = 0)]
        limit: usize,
        /// Highest key first.
        #[arg(long)]
        reverse: bool,
    },
    /// Delete every key in [start, end).
    DeleteRange {
        table: String,
        #[arg(long, default_value = "")]
        start: String,
        #[arg(long, default_value = "")]
        end: String,
    },
    /// Write a value only if the key's version is as expected.
    Cas {
        table: String,
        key: String,
        value: String,
        /// The version the key must have now.
        #[arg(
            long,
            conflicts_with = "expect_absent",
            required_unless_present = "expect_absent"
        )]
        expect_version: Option<u64>,
        /// The key must have no value now.
        #[arg(long)]
        expect_absent: bool,
    },
    /// Add to the decimal integer at a key (absent counts as 0).
    Incr {
        table: String,
        key: String,
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        delta: i64,
    },
    /// Whether the write at a position (printed by an ambiguous write) committed,
    /// is pending, was lost or aborted (exit 1 when lost or aborted).
    WriteStatus {
        table: String,
        tablet: u64,
        epoch: u64,
        seq: u64,
    },
    /// Revert a write that has not committed (and every later write of its tablet not
    /// committed yet). Prints aborted, lost or committed; exit 1 when it committed.
    AbortWrite {
        table: String,
        tablet: u64,
        epoch: u64,
        seq: u64,
    },
    /// The node's status and limits.
    Status,
    /// Manage the cluster's nodes.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Remove a table's versions older than its retention now.
    Gc { table: String },
    /// Write and query samples of `timeseries` tables.
    #[command(subcommand)]
    Ts(TsCmd),
    /// Measure throughput against a running node and peers (see BENCHMARKS.md).
    Bench(datalayer_bench::BenchArgs),
    /// Measure what the metadata costs as it grows, in process (see BENCHMARKS.md).
    BenchMeta(datalayer_bench::meta::MetaBenchArgs),
    /// Measure load-based splitting on a running cluster (see BENCHMARKS.md).
    BenchSplit(datalayer_bench::split::SplitArgs),
    /// Measure time-series ingestion and queries against Prometheus (see BENCHMARKS.md).
    BenchTs(datalayer_bench::ts::TsBenchArgs),
    /// Run a Jepsen-style workload against a cluster and print its history as JSON
    /// lines (for fault tests).
    Workload(datalayer_bench::workload::WorkloadArgs),
}

#[derive(Debug, Subcommand)]
enum TsCmd {
    /// Write samples: each line `metric{label="v",...} VALUE [TIMESTAMP_MS]` (now
    /// when left out); with no lines given, one per line from stdin.
    Write { table: String, lines: Vec<String> },
    /// Evaluate PromQL: at one time (--end, default now), or over a range with
    /// --start and --step. Times: now, now-DURATION (now-1h), RFC 3339 or Unix
    /// seconds; durations: 15s, 1m, 1h30m or seconds.
    Query {
        table: String,
        query: String,
        #[arg(long)]
        start: Option<String>,
        #[arg(long)]
        end: Option<String>,
        #[arg(long)]
        step: Option<String>,
    },
    /// The series selectors select (default: of the last six hours).
    Series {
        table: String,
        #[arg(required = true)]
        selectors: Vec<String>,
        #[arg(long)]
        start: Option<String>,
        #[arg(long)]
        end: Option<String>,
    },
    /// Label names, or one label's values, of the last six hours.
    Labels { table: String, name: Option<String> },
}

#[derive(Debug, Subcommand)]
enum NodeCmd {
    /// Remove a node from the cluster: its masters are handed over first and its
    /// replicas move to other nodes.
    Decommission { id: u64 },
}

#[derive(Debug, Subcommand)]
enum TableCmd {
    /// Create a table (policy strong).
    Create {
        name: String,
        /// How long old versions stay readable, in seconds (default one day).
        #[arg(long, default_value_t = 0)]
        retention_secs: u64,
        /// Replicas per tablet (default 3, capped by the number of nodes).
        #[arg(long, default_value_t = 0)]
        replication_factor: u32,
        /// strong or timeseries (crdt and search come later).
        #[arg(long, default_value = "strong")]
        policy: String,
        /// timeseries: whole weeks kept, the current one included (default 0: all).
        #[arg(long)]
        retention_weeks: Option<u32>,
        /// timeseries: how far behind now a sample may be (15m, 2h, 30d; default 1h).
        #[arg(long)]
        out_of_order_window: Option<String>,
        /// timeseries: series per week at most (default 1000000).
        #[arg(long)]
        max_series_per_week: Option<u64>,
        /// timeseries: whole weeks whose 5-minute rollups are kept, more than
        /// --retention-weeks (default 0: no rollups).
        #[arg(long)]
        rollup_retention_weeks: Option<u32>,
        /// Succeed when the table exists already.
        #[arg(long)]
        if_not_exists: bool,
        /// Default acks of the table's writes: 1, N or all (default all).
        #[arg(long = "default-acks")]
        default_acks: Option<String>,
        /// Keys to split the table at from the start, comma-separated, in increasing
        /// order: the table begins with one tablet more than there are keys.
        #[arg(long = "split-keys", value_delimiter = ',')]
        split_keys: Vec<String>,
    },
    /// Change a table's options (the ones given; the rest stay).
    Set {
        name: String,
        /// Default acks of the table's writes: 1, N or all.
        #[arg(long = "default-acks")]
        default_acks: Option<String>,
        /// timeseries: whole weeks kept, the current one included (0: all).
        #[arg(long)]
        retention_weeks: Option<u32>,
        /// timeseries: how far behind now a sample may be (15m, 2h, 30d).
        #[arg(long)]
        out_of_order_window: Option<String>,
        /// timeseries: series per week at most.
        #[arg(long)]
        max_series_per_week: Option<u64>,
        /// timeseries: whole weeks whose 5-minute rollups are kept (0: none).
        #[arg(long)]
        rollup_retention_weeks: Option<u32>,
    },
    /// List tables.
    List,
    /// Show a table and its tablets.
    Describe { name: String },
    /// A digest of this node's replicas of the table's tablets (equal digests at equal
    /// log ends mean equal data).
    Digest { name: String },
    /// Hand a tablet's mastership over to another in-sync replica, losing nothing.
    TransferMaster {
        name: String,
        /// The node to master the tablet.
        node: u64,
        /// A key of the tablet (default: the table's first tablet).
        #[arg(long, default_value = "")]
        key: String,
    },
    /// Split the tablet holding KEY at KEY: it keeps the keys below, a new tablet
    /// takes the rest. No data moves.
    Split { name: String, key: String },
    /// Merge the tablet that starts at KEY into its left neighbour. No data moves.
    Merge { name: String, key: String },
    /// Drop a table and all its data.
    Drop {
        name: String,
        /// Succeed when the table does not exist.
        #[arg(long)]
        if_exists: bool,
    },
}

/// How a client command ended, when it did not fail.
enum Done {
    Ok,
    NotFound,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(2),
            };
        }
    };
    // A node's config decides its runtime's threads; other commands take the default.
    let config = match &cli.command {
        Command::Start(args) => match arm_fail_points(args)
            .and_then(|()| node_config(args))
            .and_then(|c| c.validate().map(|()| c))
        {
            Ok(config) => Some(config),
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = config.as_ref().map(|c| c.worker_threads).filter(|n| *n > 0) {
        builder.worker_threads(n);
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let json = cli.json;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Start(_) => {
                let config = config.expect("a start command has a config");
                start(config).await.map(|()| Done::Ok)
            }
            Command::Bench(args) => datalayer_bench::run(&cli.addr, args, json)
                .await
                .map(|()| Done::Ok),
            Command::BenchMeta(args) => datalayer_bench::meta::run(args, json)
                .await
                .map(|()| Done::Ok),
            Command::BenchSplit(args) => datalayer_bench::split::run(args, json)
                .await
                .map(|()| Done::Ok),
            Command::BenchTs(args) => datalayer_bench::ts::run(args).await.map(|()| Done::Ok),
            Command::Workload(args) => datalayer_bench::workload::run(args)
                .await
                .map(|()| Done::Ok),
            command => {
                let opts = ClientOpts {
                    acks: cli.acks.as_deref().map(parse_acks).transpose()?,
                    consistency: match cli.consistency.as_str() {
                        "committed" => pb::ReadConsistency::Committed,
                        "latest" => pb::ReadConsistency::Latest,
                        "follower" => pb::ReadConsistency::Follower,
                        other => anyhow::bail!(
                            "unknown consistency {other:?}: use committed, latest or follower"
                        ),
                    },
                    max_staleness_ms: cli.max_staleness_ms,
                };
                client_command(&cli.addr, json, opts, command).await
            }
        }
    });
    match result {
        Ok(Done::Ok) => ExitCode::SUCCESS,
        Ok(Done::NotFound) => ExitCode::from(1),
        Err(e) => {
            if json {
                let detail = e.downcast_ref::<ClientError>().map(|c| {
                    json!({"kind": c.kind.as_str_name(), "retryable": c.retryable, "field": c.field,
                        "position": c.position.map(|p| json!({"tablet": p.tablet_id, "epoch": p.epoch, "seq": p.seq}))})
                });
                println!("{}", json!({"error": format!("{e:#}"), "detail": detail}));
            }
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
