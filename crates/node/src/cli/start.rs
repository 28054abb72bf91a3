//! `datalayer start`: the node's flags, its config, and running it until a signal.

use crate::config::Config;
use clap::Args;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

/// The console at the default level tells the node's own story (ready, tablets
/// mastered and followed, failovers, moves); the metadata library's elections and
/// membership chatter show at warn unless `RUST_LOG` asks for more.
const DEFAULT_LOG: &str = "info,openraft=warn";

#[derive(Debug, Clone, Args)]
pub(super) struct StartArgs {
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
    /// Bytes of oplog records kept per tablet at most (keys and values; records of
    /// the last minute stay); 0: no byte bound (default 67108864, 64 MiB).
    #[arg(long)]
    oplog_retention_bytes: Option<u64>,
    /// Threads serving requests (default: one per core). Give co-located nodes their
    /// share of the cores.
    #[arg(long)]
    worker_threads: Option<usize>,
    /// Bytes of live keys and values past which a tablet splits at its middle key
    /// (0: never; default 512 MiB).
    #[arg(long)]
    split_size_bytes: Option<u64>,
    /// Requests per second to a tablet's master, sustained for --split-load-secs,
    /// past which it splits at a key balancing its sampled requests (0: never;
    /// default 2500).
    #[arg(long)]
    split_load_ops: Option<u64>,
    /// Seconds a tablet's load must stay over --split-load-ops (default 10).
    #[arg(long)]
    split_load_secs: Option<u64>,
    /// Seconds between two looks for small, cold neighbours to merge (0: never;
    /// default 60).
    #[arg(long)]
    merge_check_secs: Option<u64>,
    /// Milliseconds between passes of the time-series keeper (compaction,
    /// retention; default 10000).
    #[arg(long)]
    timeseries_keeper_ms: Option<u64>,
    /// Records a second to a tablet of the current week past which the keeper
    /// splits it by series id (0: never; default 2000).
    #[arg(long)]
    timeseries_hot_writes_per_sec: Option<u64>,
    /// For tests: crash at a fail point (`NAME=KEY[@NODE]`, e.g. `split-after-intent=k5`).
    #[arg(long, hide = true)]
    fail_point: Vec<String>,
}

/// Arms the fail points the flags name.
pub(super) fn arm_fail_points(args: &StartArgs) -> anyhow::Result<()> {
    if args.fail_point.is_empty() {
        return Ok(());
    }
    datalayer_cluster::fail::arm(&args.fail_point).map_err(anyhow::Error::msg)
}

/// The node's config: its file (if any), overridden by the flags.
pub(super) fn node_config(args: &StartArgs) -> anyhow::Result<Config> {
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
    if let Some(v) = args.oplog_retention_bytes {
        config.strong.oplog_retention_bytes = v;
    }
    if let Some(v) = args.split_size_bytes {
        config.strong.split_size_bytes = v;
    }
    if let Some(v) = args.split_load_ops {
        config.strong.split_load_ops = v;
    }
    if let Some(v) = args.split_load_secs {
        config.strong.split_load_secs = v;
    }
    if let Some(v) = args.merge_check_secs {
        config.strong.merge_check_secs = v;
    }
    if let Some(v) = args.worker_threads {
        config.worker_threads = v;
    }
    if let Some(v) = args.timeseries_keeper_ms {
        config.timeseries_keeper_ms = v;
    }
    if let Some(v) = args.timeseries_hot_writes_per_sec {
        config.timeseries_hot_writes_per_sec = v;
    }
    Ok(config)
}

pub(super) async fn start(config: Config) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
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
