//! The `strong` policy: each tablet's master orders writes in its oplog.
//!
//! This node masters every tablet it serves (replication to followers comes with the
//! strong-replication work). Writes go through one writer thread per node
//! ([`writer`]): it takes every command waiting in its queue, evaluates them in order
//! (compare-and-set and increment read the group's own earlier writes), assigns each
//! record its position `(epoch, seq)` and a timestamp, and appends the whole group in
//! one synced `WriteBatch`. Many writers thus share one sync (group commit), and
//! read-modify-write commands are atomic without locks.
//!
//! Reads never touch the writer. They run at the **closed timestamp**: the writer
//! publishes, after every commit, a timestamp at or below which every write is durable
//! and visible, so a read at it is repeatable and sees every acknowledged write.

mod writer;

use crate::catalog::{TableDesc, TabletDesc};
use crate::error::{Error, Result};
use datalayer_store::{
    Epoch, HybridClock, KeyRange, Mutation, ScanRequest, Seq, TableId, TabletEngine, TabletId,
    Timestamp, Versioned,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot};

/// Settings of the strong policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Oplog records kept per tablet behind its log end (for followers catching up).
    /// Default 100000.
    pub oplog_retention_records: u64,
    /// Commands that may wait for the writer before callers are held back. Default 4096.
    pub write_queue_depth: usize,
    /// Most commands in one group commit. Default 1024.
    pub max_group_commands: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            oplog_retention_records: 100_000,
            write_queue_depth: 4096,
            max_group_commands: 1024,
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
}

/// Replica state of a served tablet, as the master sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TabletProgress {
    /// Last seq in the oplog.
    pub log_end: Seq,
    /// Highest seq durable on the whole in-sync set.
    pub high_watermark: Seq,
}

/// The strong policy of one node.
pub struct StrongPolicy {
    engine: Arc<dyn TabletEngine>,
    clock: Arc<HybridClock>,
    closed: Arc<AtomicU64>,
    progress: Arc<parking_lot::RwLock<std::collections::HashMap<TabletId, TabletProgress>>>,
    tx: mpsc::Sender<writer::Command>,
    thread: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for StrongPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StrongPolicy")
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish()
    }
}

fn stopped() -> Error {
    Error::Unavailable("the node is stopping".into())
}

impl StrongPolicy {
    /// Starts the writer thread.
    pub fn start(
        engine: Arc<dyn TabletEngine>,
        clock: Arc<HybridClock>,
        config: Config,
    ) -> Result<StrongPolicy> {
        config.validate()?;
        let (tx, rx) = mpsc::channel(config.write_queue_depth);
        let closed = Arc::new(AtomicU64::new(0));
        let progress = Arc::new(parking_lot::RwLock::new(Default::default()));
        let w = writer::Writer::new(
            engine.clone(),
            clock.clone(),
            closed.clone(),
            progress.clone(),
            config,
        );
        let thread = std::thread::Builder::new()
            .name("strong-writer".into())
            .spawn(move || w.run(rx))
            .map_err(|e| Error::Internal(format!("spawn writer thread: {e}")))?;
        Ok(StrongPolicy {
            engine,
            clock,
            closed,
            progress,
            tx,
            thread: parking_lot::Mutex::new(Some(thread)),
        })
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T>>) -> writer::Command,
    ) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Starts serving a tablet as its master: loads its state and, in a new epoch,
    /// appends the epoch's no-op. The clock moves above every timestamp in its log.
    pub async fn open_tablet(&self, tablet: &TabletDesc) -> Result<()> {
        let tablet = tablet.clone();
        self.call(|reply| writer::Command::Open { tablet, reply })
            .await
    }

    /// Stops serving the tablets of a dropped table and deletes their data.
    pub async fn drop_table(&self, table: TableId, tablets: Vec<TabletId>) -> Result<()> {
        self.call(|reply| writer::Command::Drop {
            table,
            tablets,
            reply,
        })
        .await
    }

    /// Orders, applies and durably writes one command on `tablet`.
    pub async fn write(&self, tablet: &TabletDesc, op: WriteOp) -> Result<Outcome> {
        let (table, tablet) = (tablet.table, tablet.id);
        self.call(|reply| writer::Command::Write {
            table,
            tablet,
            op,
            reply,
        })
        .await
    }

    /// The timestamp a read asked for (`None` = latest), checked against the table's
    /// garbage-collection horizon and made safe to read at.
    async fn read_ts(&self, table: &TableDesc, at: Option<Timestamp>) -> Result<Timestamp> {
        let Some(at) = at else {
            return Ok(Timestamp(self.closed.load(Ordering::Acquire)));
        };
        let horizon = gc_horizon(table, self.clock.peek());
        if at <= horizon {
            return Err(Error::TimestampCollected {
                table: table.name.clone(),
                requested: at.0,
                horizon: horizon.0,
            });
        }
        if at > self.clock.peek() {
            return Err(Error::invalid(
                "at_timestamp",
                format!("timestamp {at} is in the future"),
            ));
        }
        if at.0 > self.closed.load(Ordering::Acquire) {
            // Writes below `at` may still be in flight: wait until the writer closes it.
            self.call(|reply| writer::Command::Close { reply }).await?;
        }
        Ok(at)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn TabletEngine) -> datalayer_store::Result<T> + Send + 'static,
    ) -> Result<T> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || f(engine.as_ref()))
            .await
            .map_err(|e| Error::Internal(format!("read task: {e}")))?
            .map_err(Error::from)
    }

    /// The values of `keys` (in order) as of `at` (`None` = latest), and the
    /// timestamp read at.
    pub async fn get(
        &self,
        table: &TableDesc,
        keys: Vec<Vec<u8>>,
        at: Option<Timestamp>,
    ) -> Result<(Vec<Option<Versioned>>, Timestamp)> {
        let ts = self.read_ts(table, at).await?;
        let id = table.id;
        if keys.len() == 1 {
            // One point read is a memtable or block-cache lookup in the common case:
            // cheaper inline than the two thread hops of a blocking task.
            let value = self.engine.get(id, &keys[0], ts)?;
            return Ok((vec![value], ts));
        }
        let values = self
            .blocking(move |e| keys.iter().map(|k| e.get(id, k, ts)).collect())
            .await?;
        Ok((values, ts))
    }

    /// One page of live rows of `range`.
    pub async fn scan(
        &self,
        table: &TableDesc,
        range: KeyRange,
        limit: usize,
        reverse: bool,
        at: Option<Timestamp>,
    ) -> Result<ScanPage> {
        let ts = self.read_ts(table, at).await?;
        let req = ScanRequest {
            table: table.id,
            range,
            at: ts,
            limit: limit + 1,
            reverse,
        };
        let mut rows = self.blocking(move |e| e.scan(&req)).await?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        let resume_key = match (more, rows.last()) {
            (true, Some((last, _))) => resume_key(last, reverse),
            _ => Vec::new(),
        };
        Ok(ScanPage {
            rows,
            more,
            resume_key,
            read_ts: ts,
        })
    }

    /// Removes the table's versions older than its retention. Returns how many went
    /// and the horizon used.
    pub async fn collect_garbage(&self, table: &TableDesc) -> Result<(u64, Timestamp)> {
        let horizon = gc_horizon(table, self.clock.peek());
        let id = table.id;
        let removed = self
            .blocking(move |e| e.collect_garbage(id, horizon))
            .await?;
        Ok((removed, horizon))
    }

    /// Whether this node serves the tablet as its master.
    pub fn serves(&self, tablet: TabletId) -> bool {
        self.progress.read().contains_key(&tablet)
    }

    /// Log end and high watermark of a served tablet.
    pub fn progress(&self, tablet: TabletId) -> Option<TabletProgress> {
        self.progress.read().get(&tablet).copied()
    }

    /// The node's clock now.
    pub fn now(&self) -> Timestamp {
        self.clock.peek()
    }

    /// Stops the writer after the commands already queued, and waits for it.
    pub async fn stop(&self) {
        let _ = self.call(|reply| writer::Command::Stop { reply }).await;
        let thread = self.thread.lock().take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// Where the next page of a scan that stopped after `last` starts (forward: the
/// smallest key above it) or ends (reverse: the key itself, exclusive).
pub fn resume_key(last: &[u8], reverse: bool) -> Vec<u8> {
    let mut next = last.to_vec();
    if !reverse {
        next.push(0);
    }
    next
}

/// Versions at or below this are no longer guaranteed to exist.
fn gc_horizon(table: &TableDesc, now: Timestamp) -> Timestamp {
    let retention_ms = table.version_retention_secs.saturating_mul(1000);
    Timestamp::from_millis(now.millis().saturating_sub(retention_ms))
}
