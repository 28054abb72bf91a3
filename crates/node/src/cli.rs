//! The command line: `start` runs a node, the rest talk to one.

use crate::config::Config;
use clap::{Args, Parser, Subcommand};
use datalayer_api::v1 as pb;
use datalayer_client::{Client, ClientError, TableOptions};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

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
    /// Measure throughput against a running node and peers (see BENCHMARKS.md).
    Bench(crate::bench::BenchArgs),
    /// Run a Jepsen-style workload against a cluster and print its history as JSON
    /// lines (for fault tests).
    Workload(crate::workload::WorkloadArgs),
}

#[derive(Debug, Clone, Args)]
struct StartArgs {
    /// A TOML config file (see datalayer.example.toml); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// gRPC listen address (port 0 picks a free port).
    #[arg(long)]
    grpc_addr: Option<std::net::SocketAddr>,
    /// HTTP listen address for /metrics and /health.
    #[arg(long)]
    http_addr: Option<std::net::SocketAddr>,
    /// Join the cluster that this member (host:port) belongs to, on first start.
    #[arg(long)]
    join: Option<String>,
    /// The gRPC address others reach this node at (default: the bound address).
    #[arg(long)]
    advertise_addr: Option<String>,
    /// Voters of the metadata group: 1, 3 or 5 (default 3).
    #[arg(long)]
    meta_voters: Option<usize>,
    /// Seconds a metadata voter may stay unreachable before a learner replaces it.
    #[arg(long)]
    dead_voter_secs: Option<u64>,
    /// Milliseconds a node's liveness heartbeat lasts: a master whose heartbeats stop
    /// getting through is replaced by another in-sync replica about this long after
    /// its last one (default 1000).
    #[arg(long)]
    master_failover_ms: Option<u64>,
    /// Seconds a node may stay unreachable before its replicas move to other nodes
    /// (default 60).
    #[arg(long)]
    dead_node_secs: Option<u64>,
    /// Do not move replicas and masters between nodes to even out their load.
    #[arg(long)]
    no_rebalance: bool,
    /// Oplog records kept per tablet behind its log end; a follower further behind
    /// catches up from a snapshot (default 100000).
    #[arg(long)]
    oplog_retention_records: Option<u64>,
    /// Threads serving requests (default: one per core). Give co-located nodes their
    /// share of the cores.
    #[arg(long)]
    worker_threads: Option<usize>,
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
        /// strong (crdt, timeseries and search come later).
        #[arg(long, default_value = "strong")]
        policy: String,
        /// Succeed when the table exists already.
        #[arg(long)]
        if_not_exists: bool,
        /// Default acks of the table's writes: 1, N or all (default all).
        #[arg(long = "default-acks")]
        default_acks: Option<String>,
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
        Command::Start(args) => match node_config(args) {
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
            Command::Bench(args) => crate::bench::run(&cli.addr, args, json)
                .await
                .map(|()| Done::Ok),
            Command::Workload(args) => crate::workload::run(args).await.map(|()| Done::Ok),
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

/// The node's config: its file (if any), overridden by the flags.
fn node_config(args: &StartArgs) -> anyhow::Result<Config> {
    let args = args.clone();
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    if let Some(a) = args.grpc_addr {
        config.grpc_addr = a;
    }
    if let Some(a) = args.http_addr {
        config.http_addr = a;
    }
    if let Some(j) = args.join {
        config.join = Some(j);
    }
    if let Some(a) = args.advertise_addr {
        config.advertise_addr = Some(a);
    }
    if let Some(v) = args.meta_voters {
        config.meta_voters = v;
    }
    if let Some(v) = args.dead_voter_secs {
        config.dead_voter_secs = v;
    }
    if let Some(v) = args.master_failover_ms {
        config.master_failover_ms = v;
    }
    if let Some(v) = args.dead_node_secs {
        config.dead_node_secs = v;
    }
    if args.no_rebalance {
        config.rebalance = false;
    }
    if let Some(v) = args.oplog_retention_records {
        config.strong.oplog_retention_records = v;
    }
    if let Some(v) = args.worker_threads {
        config.worker_threads = v;
    }
    Ok(config)
}

async fn start(config: Config) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received; stopping");
        on_signal.cancel();
    });
    let data_dir = config.data_dir.clone();
    crate::server::run(config, shutdown, |grpc, http| {
        // Whoever started us may have closed our stdout; that must not stop the node.
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "datalayer node ready: grpc={grpc} http={http} data={}\n\
             try: datalayer --addr {grpc} table create demo && datalayer --addr {grpc} put demo hello world",
            data_dir.display()
        );
        let _ = out.flush();
    })
    .await
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn policy_name(p: i32) -> &'static str {
    match pb::Policy::try_from(p) {
        Ok(pb::Policy::Strong) => "strong",
        Ok(pb::Policy::Crdt) => "crdt",
        Ok(pb::Policy::Timeseries) => "timeseries",
        Ok(pb::Policy::Search) => "search",
        _ => "unknown",
    }
}

fn table_json(t: &pb::TableInfo) -> serde_json::Value {
    json!({
        "name": t.name,
        "id": t.id,
        "policy": policy_name(t.policy),
        "replication_factor": t.replication_factor,
        "version_retention_secs": t.version_retention_secs,
        "tablets": t.tablets.iter().map(|tb| json!({
            "id": tb.id,
            "start": text(&tb.start),
            "end": text(&tb.end),
            "generation": tb.generation,
            "replicas": tb.replicas,
            "master": tb.master,
            "master_epoch": tb.master_epoch,
            "log_end": tb.log_end,
            "high_watermark": tb.high_watermark,
            "in_sync": tb.in_sync,
            "moving": (tb.moving_to != 0).then(|| json!({"from": tb.moving_from, "to": tb.moving_to})),
        })).collect::<Vec<_>>(),
        "default_acks": t.default_acks,
    })
}

fn print_write_state(state: pb::WriteState, json_out: bool) {
    let name = match state {
        pb::WriteState::Committed => "committed",
        pb::WriteState::Pending => "pending",
        pb::WriteState::Lost => "lost",
        pb::WriteState::Aborted => "aborted",
        pb::WriteState::Unspecified => "unknown",
    };
    if json_out {
        println!("{}", json!({"state": name}));
    } else {
        println!("{name}");
    }
}

fn print_table(t: &pb::TableInfo) {
    println!(
        "{}  id={} policy={} replication_factor={} retention={}s tablets={}",
        t.name,
        t.id,
        policy_name(t.policy),
        t.replication_factor,
        t.version_retention_secs,
        t.tablets.len()
    );
}

/// Settings every client command shares.
struct ClientOpts {
    acks: Option<pb::Acks>,
    consistency: pb::ReadConsistency,
    max_staleness_ms: u32,
}

/// `1`, `N` or `all`.
fn parse_acks(s: &str) -> anyhow::Result<pb::Acks> {
    match s {
        "all" => Ok(datalayer_client::acks_all()),
        n => match n.parse::<u32>() {
            Ok(n) if n >= 1 => Ok(datalayer_client::acks_count(n)),
            _ => anyhow::bail!("acks must be 1, a number of replicas, or all (got {s:?})"),
        },
    }
}

async fn client_command(
    addr: &str,
    json_out: bool,
    opts: ClientOpts,
    command: Command,
) -> anyhow::Result<Done> {
    let mut c = Client::connect(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach a node at {addr}: {e}"))?;
    c.set_acks(opts.acks);
    c.set_consistency(opts.consistency);
    c.set_max_staleness_ms(opts.max_staleness_ms);
    let print = |v: serde_json::Value| println!("{v}");
    match command {
        Command::Start(_) | Command::Bench(_) | Command::Workload(_) => {
            unreachable!("handled before connecting")
        }
        Command::Table(TableCmd::Create {
            name,
            retention_secs,
            replication_factor,
            policy,
            if_not_exists,
            default_acks,
        }) => {
            let policy = match policy.as_str() {
                "strong" => pb::Policy::Strong,
                "crdt" => pb::Policy::Crdt,
                "timeseries" => pb::Policy::Timeseries,
                "search" => pb::Policy::Search,
                other => anyhow::bail!(
                    "unknown policy {other:?}: use strong, crdt, timeseries or search"
                ),
            };
            let opts = TableOptions {
                policy,
                replication_factor,
                version_retention_secs: retention_secs,
                if_not_exists,
                default_acks: default_acks.as_deref().map(parse_acks).transpose()?,
            };
            let (t, created) = c.create_table(&name, opts).await?;
            if json_out {
                print(json!({"created": created, "table": table_json(&t)}));
            } else if created {
                println!("created table {}", t.name);
            } else {
                println!("table {} exists already", t.name);
            }
        }
        Command::Table(TableCmd::List) => {
            let tables = c.list_tables().await?;
            if json_out {
                print(json!({"tables": tables.iter().map(table_json).collect::<Vec<_>>()}));
            } else {
                tables.iter().for_each(print_table);
            }
        }
        Command::Table(TableCmd::Describe { name }) => {
            let t = c.describe_table(&name).await?;
            if json_out {
                print(table_json(&t));
            } else {
                print_table(&t);
                for tb in &t.tablets {
                    let moving = if tb.moving_to != 0 {
                        format!(" moving={}->{}", tb.moving_from, tb.moving_to)
                    } else {
                        String::new()
                    };
                    println!(
                        "  tablet {} [{:?}, {:?}) generation={} master={} epoch={} replicas={:?} in_sync={:?} log_end={} hw={}{moving}",
                        tb.id,
                        text(&tb.start),
                        text(&tb.end),
                        tb.generation,
                        tb.master,
                        tb.master_epoch,
                        tb.replicas,
                        tb.in_sync,
                        tb.log_end,
                        tb.high_watermark
                    );
                }
            }
        }
        Command::Table(TableCmd::Digest { name }) => {
            let r = c.table_digest(&name).await?;
            if json_out {
                print(json!({"tablets": r.tablets.iter().map(|t| json!({
                    "tablet": t.tablet_id, "log_end": t.log_end, "digest": t.digest, "rows": t.rows,
                })).collect::<Vec<_>>()}));
            } else {
                for t in &r.tablets {
                    println!(
                        "tablet {} log_end={} rows={} digest={:016x}",
                        t.tablet_id, t.log_end, t.rows, t.digest
                    );
                }
            }
        }
        Command::Table(TableCmd::TransferMaster { name, node, key }) => {
            let t = c.transfer_master(&name, key.as_bytes(), node).await?;
            if json_out {
                print(json!({"tablet": t.id, "master": t.master, "master_epoch": t.master_epoch}));
            } else {
                println!(
                    "tablet {}: master {} epoch {}",
                    t.id, t.master, t.master_epoch
                );
            }
        }
        Command::Table(TableCmd::Drop { name, if_exists }) => {
            let dropped = c.drop_table(&name, if_exists).await?;
            if json_out {
                print(json!({"dropped": dropped}));
            } else if dropped {
                println!("dropped table {name}");
            } else {
                println!("table {name} did not exist");
            }
        }
        Command::Put { table, key, value } => {
            let version = c.put(&table, key.as_bytes(), value.as_bytes()).await?;
            if json_out {
                print(json!({"version": version}));
            } else {
                println!("OK version={version}");
            }
        }
        Command::Get { table, key, at } => {
            let v = c.get_at(&table, key.as_bytes(), at.unwrap_or(0)).await?;
            match v {
                Some(v) if json_out => print(
                    json!({"found": true, "value": text(&v.value), "version": v.version,
                        "staleness_ms": v.staleness_ms}),
                ),
                Some(v) => println!("{}", text(&v.value)),
                None => {
                    if json_out {
                        print(json!({"found": false}));
                    } else {
                        eprintln!("key {key:?} not found in table {table}");
                    }
                    return Ok(Done::NotFound);
                }
            }
        }
        Command::Del { table, key } => {
            let version = c.delete(&table, key.as_bytes()).await?;
            if json_out {
                print(json!({"version": version}));
            } else {
                println!("OK version={version}");
            }
        }
        Command::Scan {
            table,
            start,
            end,
            limit,
            reverse,
        } => {
            let rows = c
                .scan(&table, start.as_bytes(), end.as_bytes(), limit, reverse)
                .await?;
            if json_out {
                print(json!({"rows": rows.iter().map(|r| json!({
                    "key": text(&r.key), "value": text(&r.value), "version": r.version,
                })).collect::<Vec<_>>()}));
            } else {
                for r in rows {
                    println!("{}\t{}", text(&r.key), text(&r.value));
                }
            }
        }
        Command::DeleteRange { table, start, end } => {
            let n = c
                .delete_range(&table, start.as_bytes(), end.as_bytes())
                .await?;
            if json_out {
                print(json!({"deleted": n}));
            } else {
                println!("deleted {n} keys");
            }
        }
        Command::Cas {
            table,
            key,
            value,
            expect_version,
            expect_absent: _,
        } => {
            let r = c
                .compare_and_set(
                    &table,
                    key.as_bytes(),
                    expect_version,
                    Some(value.as_bytes()),
                )
                .await?;
            if json_out {
                print(json!({
                    "succeeded": r.succeeded, "new_version": r.new_version,
                    "current_found": r.current_found, "current_value": text(&r.current_value),
                    "current_version": r.current_version,
                }));
            } else if r.succeeded {
                println!("OK version={}", r.new_version);
            } else if r.current_found {
                println!(
                    "FAILED current version={} value={}",
                    r.current_version,
                    text(&r.current_value)
                );
            } else {
                println!("FAILED key is absent");
            }
            if !r.succeeded {
                anyhow::bail!("compare-and-set condition failed");
            }
        }
        Command::Incr { table, key, delta } => {
            let v = c.increment(&table, key.as_bytes(), delta).await?;
            if json_out {
                print(json!({"value": v}));
            } else {
                println!("{v}");
            }
        }
        Command::WriteStatus {
            table,
            tablet,
            epoch,
            seq,
        } => {
            let position = pb::WritePosition {
                tablet_id: tablet,
                epoch,
                seq,
            };
            let state = c.write_status(&table, position).await?;
            print_write_state(state, json_out);
            if matches!(state, pb::WriteState::Lost | pb::WriteState::Aborted) {
                return Ok(Done::NotFound);
            }
        }
        Command::AbortWrite {
            table,
            tablet,
            epoch,
            seq,
        } => {
            let position = pb::WritePosition {
                tablet_id: tablet,
                epoch,
                seq,
            };
            let state = c.abort_write(&table, position).await?;
            print_write_state(state, json_out);
            if state == pb::WriteState::Committed {
                return Ok(Done::NotFound);
            }
        }
        Command::Status => {
            let s = c.node_status().await?;
            let tables = c.list_tables().await?;
            // A node is live when it answers its own status within a second.
            let mut live = Vec::new();
            for n in &s.nodes {
                let probe = async {
                    let mut peer = Client::connect(&n.grpc_addr).await.ok()?;
                    peer.node_status().await.ok()
                };
                let up = tokio::time::timeout(std::time::Duration::from_secs(1), probe)
                    .await
                    .ok()
                    .flatten()
                    .is_some();
                live.push(up);
            }
            let limits = s.limits.unwrap_or_default();
            if json_out {
                print(json!({
                    "node_id": s.node_id, "version": s.version, "grpc_addr": s.grpc_addr,
                    "http_addr": s.http_addr, "data_dir": s.data_dir, "uptime_secs": s.uptime_secs,
                    "tables": s.tables, "tablets": s.tablets, "group_commits": s.group_commits,
                    "records_appended": s.records_appended, "clock": s.clock,
                    "worker_threads": s.worker_threads,
                    "meta_leader": s.meta_leader,
                    "nodes": s.nodes.iter().zip(&live).map(|(n, up)| json!({
                        "id": n.id, "grpc_addr": n.grpc_addr, "http_addr": n.http_addr,
                        "live": up, "meta_role": n.meta_role, "tablets": n.tablets, "masters": n.masters,
                        "liveness_epoch": n.liveness_epoch, "lease_left_ms": n.lease_left_ms,
                    })).collect::<Vec<_>>(),
                    "table_map": tables.iter().map(table_json).collect::<Vec<_>>(),
                    "limits": {
                        "max_key_bytes": limits.max_key_bytes, "max_value_bytes": limits.max_value_bytes,
                        "max_batch_mutations": limits.max_batch_mutations, "max_batch_bytes": limits.max_batch_bytes,
                        "max_message_bytes": limits.max_message_bytes, "max_scan_limit": limits.max_scan_limit,
                        "max_table_name_chars": limits.max_table_name_chars,
                    },
                }));
            } else {
                println!(
                    "node {} (datalayer {}) up {}s, {} worker threads",
                    s.node_id, s.version, s.uptime_secs, s.worker_threads
                );
                println!(
                    "  grpc {}  http {}  data {}",
                    s.grpc_addr, s.http_addr, s.data_dir
                );
                println!(
                    "  {} group commits carrying {} records",
                    s.group_commits, s.records_appended
                );
                println!(
                    "  limits: key {} B, value {} B, batch {} mutations / {} B, message {} B, scan page {} rows",
                    limits.max_key_bytes,
                    limits.max_value_bytes,
                    limits.max_batch_mutations,
                    limits.max_batch_bytes,
                    limits.max_message_bytes,
                    limits.max_scan_limit
                );
                println!("nodes (metadata leader: node {}):", s.meta_leader);
                for (n, up) in s.nodes.iter().zip(&live) {
                    println!(
                        "  node {:<3} {:<22} {:<5} {:<8} tablets={} masters={} liveness epoch={} lease left={}",
                        n.id,
                        n.grpc_addr,
                        if *up { "live" } else { "dead" },
                        n.meta_role,
                        n.tablets,
                        n.masters,
                        n.liveness_epoch,
                        match n.lease_left_ms {
                            0 => "- (no heartbeat yet)".to_string(),
                            ms => format!("{ms}ms"),
                        }
                    );
                }
                println!("tables:");
                for t in &tables {
                    print_table(t);
                    for tb in &t.tablets {
                        println!(
                            "    tablet {} [{:?}, {:?}) master={} replicas={:?}",
                            tb.id,
                            text(&tb.start),
                            text(&tb.end),
                            tb.master,
                            tb.replicas
                        );
                    }
                }
            }
        }
        Command::Node(NodeCmd::Decommission { id }) => {
            c.admin()
                .decommission_node(pb::DecommissionNodeRequest { node_id: id })
                .await
                .map_err(ClientError::from)?;
            if json_out {
                print(json!({"decommissioned": id}));
            } else {
                println!("node {id} decommissioned");
            }
        }
        Command::Gc { table } => {
            let r = c.collect_garbage(&table).await?;
            if json_out {
                print(json!({"versions_removed": r.versions_removed, "horizon": r.horizon}));
            } else {
                println!(
                    "removed {} old versions (horizon {})",
                    r.versions_removed, r.horizon
                );
            }
        }
    }
    Ok(Done::Ok)
}
