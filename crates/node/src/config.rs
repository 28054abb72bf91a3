//! The node's configuration: one file (TOML), overridden by flags. Each crate owns its
//! section; see `datalayer.example.toml` at the repository root.

use crate::limits::Limits;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Most worker threads a node's runtime may have.
pub const MAX_WORKER_THREADS: usize = 1024;

/// Everything a node is started with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the node keeps its data. Default `./datalayer-data`.
    pub data_dir: PathBuf,
    /// gRPC listen address. Default `127.0.0.1:7700`.
    pub grpc_addr: SocketAddr,
    /// HTTP listen address (`/metrics`, `/health`). Default `127.0.0.1:7701`.
    pub http_addr: SocketAddr,
    /// Seconds between background garbage collections of old versions. Default 60.
    pub gc_interval_secs: u64,
    /// Milliseconds between two passes of the time-series keeper (compaction of
    /// recent chunks into blocks, retention). Default 10000.
    pub timeseries_keeper_ms: u64,
    /// Records a second to a tablet of the current week past which the time-series
    /// keeper splits it by series id (0: never). Default 2000.
    pub timeseries_hot_writes_per_sec: u64,
    /// `host:port` of any member of an existing cluster to join on first start.
    /// Default none: a fresh node founds a new cluster.
    pub join: Option<String>,
    /// The gRPC address other nodes and clients reach this node at. Default: the
    /// address `grpc_addr` bound to.
    pub advertise_addr: Option<String>,
    /// Voters of the metadata group (1, 3 or 5); other nodes are learners. Default 3.
    pub meta_voters: usize,
    /// Seconds a metadata voter may stay unreachable before a live learner takes its
    /// place. Default 10.
    pub dead_voter_secs: u64,
    /// Milliseconds a node's liveness heartbeat lasts: a master whose heartbeats stop
    /// getting through stops serving this long after its last one (less
    /// `max_clock_offset_ms`), and the metadata leader then appoints another in-sync
    /// replica. Nodes heartbeat five times per period. Default 1000.
    pub master_failover_ms: u64,
    /// Seconds a node may stay unreachable before the controller moves its replicas
    /// to other nodes (they catch up from the masters). Default 60.
    pub dead_node_secs: u64,
    /// Whether the controller moves replicas and masters between nodes to even out
    /// their counts (after a node joins, say). Default true.
    pub rebalance: bool,
    /// The most two nodes' wall clocks may differ, in milliseconds. A master's lease
    /// (`master_failover_ms` from its last heartbeat) is shortened by it. Default 250.
    pub max_clock_offset_ms: u64,
    /// Threads serving requests; 0 means one per core, at most 1024. Nodes sharing a
    /// machine do better with their share of its cores each. Default 0.
    pub worker_threads: usize,
    /// Request limits.
    pub limits: Limits,
    /// The RocksDB instance.
    pub store: datalayer_store::rocks::Config,
    /// The strong policy.
    pub strong: datalayer_cluster::strong::Config,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("datalayer-data"),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 7700)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 7701)),
            gc_interval_secs: 60,
            timeseries_keeper_ms: 10_000,
            timeseries_hot_writes_per_sec: 2000,
            join: None,
            advertise_addr: None,
            meta_voters: 3,
            dead_voter_secs: 10,
            master_failover_ms: 1000,
            dead_node_secs: 60,
            rebalance: true,
            max_clock_offset_ms: 250,
            worker_threads: 0,
            limits: Limits::default(),
            store: Default::default(),
            strong: Default::default(),
        }
    }
}

impl Config {
    /// Reads a TOML file; fields it leaves out keep their defaults.
    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
        Config::from_toml(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> anyhow::Result<Config> {
        Ok(toml::from_str(text)?)
    }

    /// Checks every section.
    pub fn validate(&self) -> anyhow::Result<()> {
        if ![1, 3, 5].contains(&self.meta_voters) {
            anyhow::bail!("meta_voters must be 1, 3 or 5");
        }
        if self.dead_voter_secs == 0 {
            anyhow::bail!("dead_voter_secs must be at least 1");
        }
        if self.dead_node_secs == 0 {
            anyhow::bail!("dead_node_secs must be at least 1");
        }
        // What is left of a lease after the clock offset must span a few heartbeats.
        if self.master_failover_ms < self.max_clock_offset_ms + 250 {
            anyhow::bail!(
                "master_failover_ms must be at least max_clock_offset_ms + 250 = {} ms",
                self.max_clock_offset_ms + 250
            );
        }
        if self.worker_threads > MAX_WORKER_THREADS {
            anyhow::bail!(
                "worker_threads must be at most {MAX_WORKER_THREADS} (0 means one per core)"
            );
        }
        if self.gc_interval_secs == 0 {
            anyhow::bail!("gc_interval_secs must be at least 1");
        }
        self.limits.validate()?;
        self.store.validate()?;
        self.strong.validate()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_validates() {
        let text = include_str!("../../../datalayer.example.toml");
        let config = Config::from_toml(text).expect("example parses");
        config.validate().expect("example validates");
        assert_eq!(
            config,
            Config::default(),
            "the example documents the defaults"
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(Config::from_toml("grpc_adr = \"127.0.0.1:1\"").is_err());
        assert!(Config::from_toml("[store]\nblock_cache = 1").is_err());
    }

    #[test]
    fn bad_values_fail_validation() {
        let mut c = Config::default();
        c.limits.max_key_bytes = 0;
        assert!(c.validate().is_err());
    }
}
