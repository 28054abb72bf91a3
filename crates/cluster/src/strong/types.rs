//! The strong policy's vocabulary: its settings, table options, write commands and
//! their answers, read levels. Everything in `strong` imports these downward.

use super::protocol::Acks;
use crate::error::{Error, Result};
use crate::policy::PolicyOptions;
use datalayer_store::{Epoch, KeyRange, Mutation, RequestId, Seq, TabletId, Timestamp, Versioned};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A `strong` table's options (the table's [`PolicyOptions`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StrongOptions {
    /// Acks of writes that do not ask for their own. Default: all.
    pub default_acks: Acks,
}

impl StrongOptions {
    /// The options of a table (`null` is every default).
    pub fn of(options: &PolicyOptions) -> Result<StrongOptions> {
        if options.is_null() {
            return Ok(StrongOptions::default());
        }
        // Read in place: writes without their own acks read the table's default.
        StrongOptions::deserialize(options)
            .map_err(|e| Error::invalid("options", format!("strong table options: {e}")))
    }

    /// These options as a table's [`PolicyOptions`].
    pub fn to_options(self) -> PolicyOptions {
        serde_json::to_value(self).expect("strong options always encode")
    }

    /// Checks the options against the table's replication factor.
    pub fn validate(&self, replication_factor: u32) -> Result<()> {
        if let Acks::Count(n) = self.default_acks
            && (n == 0 || n > replication_factor)
        {
            return Err(Error::invalid(
                "default_acks",
                format!(
                    "acks {n} must be between 1 and the replication factor {replication_factor}"
                ),
            ));
        }
        Ok(())
    }
}

/// How a write is made: the acks it waits for and the client's name for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Acks to wait for; `None` takes the table's default.
    pub acks: Option<Acks>,
    /// The client's id for the request: a retry with the same id is answered from
    /// the log instead of being applied twice.
    pub request: Option<RequestId>,
}

/// Settings of the strong policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Oplog records kept per tablet behind its log end (for followers catching up).
    /// Default 100000.
    pub oplog_retention_records: u64,
    /// Bytes of oplog records kept per tablet at most (keys and values they write):
    /// older records are trimmed, even within `oplog_retention_records`, except
    /// those appended in the last minute; 0: no byte bound. Default 67108864 (64 MiB).
    pub oplog_retention_bytes: u64,
    /// Commands that may wait for the writer before callers are held back. Default 4096.
    pub write_queue_depth: usize,
    /// Most commands in one group commit. Default 1024.
    pub max_group_commands: usize,
    /// How long a write waits for its acks before answering "ambiguous", and a
    /// committed read for the high watermark to reach it. Default 5000.
    pub ack_timeout_ms: u64,
    /// A follower behind the master for this long leaves the in-sync set. Default 2000.
    pub replica_lag_ms: u64,
    /// A tablet whose live keys and values pass this many bytes splits at its middle
    /// key; 0 never splits by size. Default 536870912 (512 MiB).
    pub split_size_bytes: u64,
    /// A tablet whose master serves more than this many requests per second for
    /// `split_load_secs` splits at a key from a sample of its recent requests that
    /// balances them; 0 never splits by load. Default 2500.
    pub split_load_ops: u64,
    /// Seconds a tablet's load must stay over `split_load_ops`. Default 10.
    pub split_load_secs: u64,
    /// Milliseconds between two looks of a node at the loads and sizes of the
    /// tablets it masters. Default 1000.
    pub split_check_ms: u64,
    /// Seconds between two looks of a node for neighbours to merge automatically
    /// (both mastered here, together under a quarter of `split_size_bytes` and each
    /// under a quarter of `split_load_ops` over the whole interval); 0 never merges
    /// automatically. Default 60.
    pub merge_check_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            oplog_retention_records: 100_000,
            oplog_retention_bytes: 64 << 20,
            write_queue_depth: 4096,
            max_group_commands: 1024,
            ack_timeout_ms: 5000,
            replica_lag_ms: 2000,
            split_size_bytes: 512 << 20,
            split_load_ops: 2500,
            split_load_secs: 10,
            split_check_ms: 1000,
            merge_check_secs: 60,
        }
    }
}

impl Config {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if self.write_queue_depth == 0 {
            return Err(Error::invalid(
                "strong.write_queue_depth",
                "must be at least 1",
            ));
        }
        if self.ack_timeout_ms == 0 {
            return Err(Error::invalid(
                "strong.ack_timeout_ms",
                "must be at least 1",
            ));
        }
        if self.replica_lag_ms == 0 {
            return Err(Error::invalid(
                "strong.replica_lag_ms",
                "must be at least 1",
            ));
        }
        if self.split_check_ms == 0 {
            return Err(Error::invalid(
                "strong.split_check_ms",
                "must be at least 1",
            ));
        }
        if self.split_load_secs == 0 {
            return Err(Error::invalid(
                "strong.split_load_secs",
                "must be at least 1",
            ));
        }
        if self.max_group_commands == 0 {
            return Err(Error::invalid(
                "strong.max_group_commands",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Where a record sits in its tablet's oplog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The tablet.
    pub tablet: TabletId,
    /// The master epoch that ordered it.
    pub epoch: Epoch,
    /// Its seq (the last one, for operations that wrote several records).
    pub seq: Seq,
}

/// What `CompareAndSet` compares against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// The key's current version must be this.
    Version(Timestamp),
    /// The key must have no value.
    Absent,
}

/// A write command on one tablet.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Puts and deletes, atomically.
    Batch(Vec<Mutation>),
    /// Delete every live key of the range, atomically.
    DeleteRange(KeyRange),
    /// Write `new` (a value, or `None` to delete) if the key is as expected.
    CompareAndSet {
        /// The key.
        key: Vec<u8>,
        /// The condition.
        expected: Expected,
        /// The value to write, or `None` for a delete.
        new: Option<Vec<u8>>,
    },
    /// Add `delta` to the decimal integer at `key` (absent counts as 0).
    Increment {
        /// The key.
        key: Vec<u8>,
        /// The amount.
        delta: i64,
    },
}

/// What a write command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    /// The batch or the compare-and-set was written.
    Done,
    /// This many live keys were deleted.
    RangeDeleted(u64),
    /// The compare-and-set condition failed; the key holds this now.
    Mismatch(Option<Versioned>),
    /// The counter's new value.
    Counter(i64),
}

/// The answer to a write command, sent once it is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Timestamp of what was written (the version of the new values).
    pub ts: Timestamp,
    /// Where it was written; `None` when nothing was.
    pub position: Option<Position>,
    /// The tablet's log end the command was evaluated against (its own record when it
    /// wrote one). A command that wrote nothing (a failed compare-and-set) may have
    /// seen records not yet committed; it is answered once they are.
    pub observed: Seq,
    /// The command's result.
    pub result: OpResult,
}

/// One page of a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPage {
    /// Rows in key order (or reverse).
    pub rows: Vec<(Vec<u8>, Versioned)>,
    /// Whether rows remain past the page.
    pub more: bool,
    /// Where the next page starts (forward) or ends (reverse), when `more`.
    pub resume_key: Vec<u8>,
    /// The timestamp the page was read at.
    pub read_ts: Timestamp,
    /// For follower reads: how long since the replica last heard its master.
    pub staleness: Duration,
}

/// Replica state of a served tablet, as the master sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TabletProgress {
    /// Last seq in the oplog.
    pub log_end: Seq,
    /// Highest seq durable on the whole in-sync set.
    pub high_watermark: Seq,
}

/// Which state a read sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadLevel {
    /// Committed writes only, at the master.
    #[default]
    Committed,
    /// Everything the master holds.
    Latest,
    /// Committed writes as a replica on this node knows them, at most this stale.
    Follower(Duration),
}

/// Whether a write at a position committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteState {
    /// Held by the whole in-sync set.
    Committed,
    /// Not yet; it may still commit or be lost.
    Pending,
    /// Cut from the log: it never took effect.
    Lost,
    /// Voided by a committed abort record: it never takes effect.
    Aborted,
}
