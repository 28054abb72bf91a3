//! The `strong` policy: each tablet's master orders writes in its oplog.
//!
//! Writes go through one writer thread per node
//! ([`writer`]): it takes every command waiting in its queue, evaluates them in order
//! (compare-and-set and increment read the group's own earlier writes), assigns each
//! record its position `(epoch, seq)` and a timestamp, and appends the whole group in
//! one synced `WriteBatch`. Many writers thus share one sync (group commit), and
//! read-modify-write commands are atomic without locks.
//!
//! Reads never touch the writer. They run at the **closed timestamp**: the writer
//! publishes, after every commit, a timestamp at or below which every write is durable
//! and visible, so a read at it is repeatable and sees every acknowledged write.

mod lead;
pub mod protocol;
mod writer;

pub use lead::{AckView, Lead};
pub use protocol::{AckState, Acks};
pub use writer::{Install, Replicate};

use crate::catalog::{TableDesc, TabletDesc};
use crate::error::{Error, Result};
use datalayer_store::{
    Epoch, HybridClock, KeyRange, Mutation, NodeId, ScanRequest, Seq, TableId, TabletEngine,
    TabletId, Timestamp, Versioned,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
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
    /// How long a write waits for its acks before answering "ambiguous", and a
    /// committed read for the high watermark to reach it. Default 5000.
    pub ack_timeout_ms: u64,
    /// A follower behind the master for this long leaves the in-sync set. Default 2000.
    pub replica_lag_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            oplog_retention_records: 100_000,
            write_queue_depth: 4096,
            max_group_commands: 1024,
            ack_timeout_ms: 5000,
            replica_lag_ms: 2000,
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

/// For each tablet this node follows: the timestamp follower reads may read at, and
/// when the master last confirmed it.
pub(crate) type ReplicaReads =
    Arc<parking_lot::RwLock<HashMap<TabletId, (Timestamp, std::time::Instant)>>>;

/// The tablets this node masters, shared by the writer and the readers.
pub(crate) type Leads = Arc<parking_lot::RwLock<HashMap<TabletId, Arc<Lead>>>>;

/// The answer to a queued replication call: the replica's durable log end and that
/// record's timestamp.
#[derive(Debug)]
pub struct ReplicateAnswer(oneshot::Receiver<Result<(Seq, Timestamp)>>);

impl ReplicateAnswer {
    /// Waits for the answer (cancel-safe: waiting again after a cancelled wait still
    /// gets it).
    pub async fn wait(&mut self) -> Result<(Seq, Timestamp)> {
        (&mut self.0).await.map_err(|_| stopped())?
    }
}

/// The strong policy of one node.
pub struct StrongPolicy {
    snapshot_dir: std::path::PathBuf,
    replica_reads: ReplicaReads,
    lease: Arc<crate::meta::Lease>,
    engine: Arc<dyn TabletEngine>,
    clock: Arc<HybridClock>,
    closed: Arc<AtomicU64>,
    leads: Leads,
    config: Config,
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
        lease: Arc<crate::meta::Lease>,
        snapshot_dir: std::path::PathBuf,
    ) -> Result<StrongPolicy> {
        config.validate()?;
        let (tx, rx) = mpsc::channel(config.write_queue_depth);
        let closed = Arc::new(AtomicU64::new(0));
        let leads: Leads = Arc::default();
        let replica_reads: ReplicaReads = Arc::default();
        let w = writer::Writer::new(
            engine.clone(),
            clock.clone(),
            closed.clone(),
            leads.clone(),
            replica_reads.clone(),
            config.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("strong-writer".into())
            .spawn(move || w.run(rx))
            .map_err(|e| Error::Internal(format!("spawn writer thread: {e}")))?;
        Ok(StrongPolicy {
            snapshot_dir,
            replica_reads,
            lease,
            engine,
            clock,
            closed,
            leads,
            config,
            tx,
            thread: parking_lot::Mutex::new(Some(thread)),
        })
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
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

    /// Serves a tablet as a follower of the descriptor's master (stepping down if this
    /// node mastered it in an older epoch).
    pub async fn follow_tablet(&self, tablet: &TabletDesc) -> Result<()> {
        let tablet = tablet.clone();
        self.call(|reply| writer::Command::Follow { tablet, reply })
            .await
    }

    /// Appends a master's records to this replica; returns the durable log end and
    /// the timestamp of its record.
    pub async fn replicate(&self, req: Replicate) -> Result<(Seq, Timestamp)> {
        self.queue_replicate(req).await?.wait().await
    }

    /// [`StrongPolicy::replicate`] in two steps: queues the records behind every call
    /// queued before (so calls apply in the order they are queued) and returns where
    /// the answer will come.
    pub async fn queue_replicate(&self, req: Replicate) -> Result<ReplicateAnswer> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(writer::Command::Replicate { req, reply })
            .await
            .map_err(|_| stopped())?;
        Ok(ReplicateAnswer(rx))
    }

    /// This node's replica of `tablet`: its log end, a hash of its live rows (key,
    /// value, version) and how many there are; `None` when it holds no replica.
    pub async fn replica_digest(
        &self,
        table: &TableDesc,
        tablet: &TabletDesc,
    ) -> Result<Option<(Seq, u64, u64)>> {
        let Some(state) = self.engine.tablet_state(tablet.id)? else {
            return Ok(None);
        };
        let req = ScanRequest {
            table: table.id,
            range: tablet.range(),
            at: Timestamp::MAX,
            limit: usize::MAX,
            reverse: false,
        };
        let rows = self.blocking(move |e| e.scan(&req)).await?;
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        for (k, v) in &rows {
            (k, &v.value, v.ts.0).hash(&mut h);
        }
        Ok(Some((state.log_end, h.finish(), rows.len() as u64)))
    }

    /// Epoch of the last record and log end of this node's replica of `tablet`.
    pub fn replica_position(&self, tablet: TabletId) -> Result<Option<(Epoch, Seq)>> {
        Ok(self
            .engine
            .tablet_state(tablet)?
            .map(|s| (s.last_epoch().unwrap_or(Epoch(0)), s.log_end)))
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

    /// Where snapshot files are staged (on the store's file system).
    pub fn snapshot_dir(&self) -> &std::path::Path {
        &self.snapshot_dir
    }

    /// Writes a consistent copy of this node's replica of `tablet` (data file and the
    /// state it matches) for a follower the oplog can no longer catch up. `None` when
    /// this node holds nothing of it.
    pub async fn export_snapshot(
        &self,
        tablet: &TabletDesc,
    ) -> Result<Option<datalayer_store::TabletExport>> {
        let (engine, dir, t) = (
            self.engine.clone(),
            self.snapshot_dir.clone(),
            tablet.clone(),
        );
        tokio::task::spawn_blocking(move || engine.export_tablet(t.table, t.id, &t.range(), &dir))
            .await
            .map_err(|e| Error::Internal(format!("snapshot export task: {e}")))?
            .map_err(Error::from)
    }

    /// Replaces this node's replica with a master's export; answers the replica's log
    /// end and its last record's timestamp.
    pub async fn install_snapshot(&self, install: Install) -> Result<(Seq, Timestamp)> {
        self.call(|reply| writer::Command::InstallSnapshot { install, reply })
            .await
    }

    /// Stops serving `tablet` and deletes this node's replica of it: the metadata
    /// moved it to another node.
    pub async fn drop_replica(&self, tablet: &TabletDesc) -> Result<()> {
        self.call(|reply| writer::Command::DropReplica {
            tablet: tablet.clone(),
            reply,
        })
        .await
    }

    /// Prepares a planned hand-over of `tablet` to `target`: stops ordering writes on
    /// it, then waits until `target` holds everything this master wrote, so appointing
    /// it loses nothing (even writes acknowledged with `acks=1`). Call
    /// [`StrongPolicy::resume`] if the appointment does not go through.
    pub async fn hand_over(&self, tablet: TabletId, target: NodeId) -> Result<()> {
        let lead = self.mastering(tablet)?;
        let end = self
            .call(|reply| writer::Command::Fence {
                tablet,
                fenced: true,
                reply,
            })
            .await?;
        let caught_up = lead
            .wait_for(
                Duration::from_millis(self.config.ack_timeout_ms * 2),
                move |v| {
                    v.deposed
                        || v.acks
                            .followers
                            .get(&target)
                            .is_some_and(|(s, _)| *s >= end)
                },
            )
            .await
            .is_some_and(|v| !v.deposed);
        match caught_up {
            true => Ok(()),
            false => {
                self.resume(tablet).await;
                Err(Error::Unavailable(format!(
                    "{target} did not catch up with {tablet}'s master in time; the hand-over was called off"
                )))
            }
        }
    }

    /// Orders writes on `tablet` again after a hand-over that did not happen.
    pub async fn resume(&self, tablet: TabletId) {
        let _ = self
            .call(|reply| writer::Command::Fence {
                tablet,
                fenced: false,
                reply,
            })
            .await;
    }

    /// Oplog records of `tablet` from `from` on: at most `limit`, and about `max_bytes`.
    pub async fn read_oplog(
        &self,
        tablet: TabletId,
        from: Seq,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<datalayer_store::OplogRecord>> {
        self.blocking(move |e| {
            let mut records = e.read_oplog(tablet, from, limit)?;
            let mut bytes = 0usize;
            let keep = records
                .iter()
                .position(|r| {
                    bytes += record_size(r);
                    bytes > max_bytes
                })
                .map_or(records.len(), |i| i.max(1));
            records.truncate(keep);
            Ok(records)
        })
        .await
    }

    /// The tablet's lead; `Unavailable` when this node does not master it.
    fn mastering(&self, tablet: TabletId) -> Result<Arc<Lead>> {
        self.lead(tablet)
            .ok_or_else(|| Error::Unavailable(format!("{tablet} is not mastered by this node")))
    }

    /// The tablet's lead, if this node masters it.
    pub fn lead(&self, tablet: TabletId) -> Option<Arc<Lead>> {
        self.leads.read().get(&tablet).cloned()
    }

    /// Every tablet this node masters.
    pub fn leads(&self) -> Vec<Arc<Lead>> {
        self.leads.read().values().cloned().collect()
    }

    /// Orders, applies and durably writes one command on `tablet`, then waits until
    /// `acks` replicas hold it. When they do not in time the answer is
    /// [`Error::Ambiguous`] with the write's position.
    pub async fn write(
        &self,
        tablet: &TabletDesc,
        op: WriteOp,
        acks: Acks,
        request: Option<datalayer_store::RequestId>,
    ) -> Result<Outcome> {
        if let Acks::Count(n) = acks
            && (n == 0 || n as usize > tablet.replicas.len().max(1))
        {
            return Err(Error::invalid(
                "acks",
                format!(
                    "acks {n} must be between 1 and the tablet's {} replicas",
                    tablet.replicas.len()
                ),
            ));
        }
        let lead = self.lead(tablet.id);
        if let Some(lead) = &lead {
            self.check_lease(lead)?;
        }
        let (table, id) = (tablet.table, tablet.id);
        let outcome = self
            .call(|reply| writer::Command::Write {
                table,
                tablet: id,
                op,
                request,
                reply,
            })
            .await?;
        let Some(lead) = lead else {
            return Ok(outcome);
        };
        if cfg!(feature = "unsafe-early-ack") {
            // The broken build: acknowledge before replicating.
            return Ok(outcome);
        }
        let Some(position) = outcome.position else {
            // Nothing written, but the answer rests on what the log held: wait until
            // that is committed, so no later read can see an older state.
            if acks != Acks::One {
                self.wait_committed(&lead, outcome.observed, acks).await?;
            }
            return Ok(outcome);
        };
        let lapsed = |lead: &Lead| lead.needs_lease() && !self.lease.valid_for(lead.liveness);
        if acks == Acks::One {
            if lapsed(&lead) {
                return Err(Error::Ambiguous {
                    tablet: position.tablet,
                    epoch: position.epoch,
                    seq: position.seq,
                    acks,
                    reason: "the master's lease lapsed while writing".into(),
                });
            }
            return Ok(outcome);
        }
        let seq = position.seq;
        let waited = lead
            .wait_for(
                Duration::from_millis(self.config.ack_timeout_ms),
                move |v| {
                    // A voided write waits for its abort to commit (or for the timeout).
                    v.deposed
                        || v.acks.aborted(seq)
                        || (!v.acks.voided(seq) && v.acks.satisfied(seq, acks))
                },
            )
            .await;
        let ambiguous = |reason: &str| Error::Ambiguous {
            tablet: position.tablet,
            epoch: position.epoch,
            seq: position.seq,
            acks,
            reason: reason.to_string(),
        };
        match waited {
            Some(v) if v.acks.aborted(position.seq) => Err(Error::Aborted {
                tablet: position.tablet,
                seq: position.seq,
            }),
            // Held by every in-sync replica: committed, whatever happens to this master.
            Some(v) if !v.deposed && acks == Acks::All => Ok(outcome),
            Some(v) if !v.deposed && !lapsed(&lead) => Ok(outcome),
            Some(v) if !v.deposed => Err(ambiguous("the master's lease lapsed while writing")),
            Some(_) => Err(ambiguous("the master stepped down")),
            None => Err(ambiguous("timed out waiting for acks")),
        }
    }

    /// Waits until the log up to `seq` has `acks`; a command that wrote nothing fails
    /// as unavailable (retryable: nothing changed) when it does not in time.
    async fn wait_committed(&self, lead: &Lead, seq: Seq, acks: Acks) -> Result<()> {
        let waited = lead
            .wait_for(
                Duration::from_millis(self.config.ack_timeout_ms),
                move |v| v.deposed || v.acks.satisfied(seq, acks),
            )
            .await;
        match waited {
            Some(v) if !v.deposed => Ok(()),
            _ => Err(Error::Unavailable(format!(
                "{}: the replicas did not confirm the state the answer rests on in time; \
                 nothing was written",
                lead.tablet
            ))),
        }
    }

    /// Whether the write at `(epoch, seq)` of `tablet` committed, is pending or was
    /// lost. Asked of the tablet's master.
    pub async fn write_status(
        &self,
        tablet: TabletId,
        epoch: Epoch,
        seq: Seq,
    ) -> Result<WriteState> {
        let lead = self.mastering(tablet)?;
        let view = lead.view();
        let state = datalayer_store::TabletState {
            epoch_history: view.history.clone(),
            log_end: view.acks.master_end.0,
            ..Default::default()
        };
        if state.epoch_at(seq) != Some(epoch) {
            // The master's log holds another epoch's record there, or none yet: the
            // write was cut, unless its epoch is still current and it is not durable
            // yet (only possible within the ack timeout).
            if epoch == lead.epoch && seq > state.log_end {
                return Ok(WriteState::Pending);
            }
            return Ok(WriteState::Lost);
        }
        let hw = view.acks.high_watermark().0;
        if let Some(void) = view.acks.void_of(seq) {
            // Voided: final once the abort record committed.
            return Ok(if hw >= void.at {
                WriteState::Aborted
            } else {
                WriteState::Pending
            });
        }
        if hw >= seq {
            Ok(WriteState::Committed)
        } else {
            Ok(WriteState::Pending)
        }
    }

    /// Reverts the write at `(epoch, seq)` of `tablet` if it has not committed: an
    /// abort record voids it and every later record not committed yet. Answers the
    /// write's final state (aborted, lost, or committed when it was too late) once the
    /// abort record committed; `Ambiguous` when that did not happen in time.
    pub async fn abort_write(
        &self,
        tablet: TabletId,
        epoch: Epoch,
        seq: Seq,
    ) -> Result<WriteState> {
        let lead = self.mastering(tablet)?;
        self.check_lease(&lead)?;
        let at = match self.write_status(tablet, epoch, seq).await? {
            WriteState::Pending => {
                let view = lead.view();
                match view.acks.void_of(seq) {
                    // Voided already; wait for that abort to commit.
                    Some(void) => void.at,
                    None => match self
                        .call(|reply| writer::Command::Abort {
                            tablet,
                            from: seq,
                            reply,
                        })
                        .await
                    {
                        Ok(position) => position.seq,
                        // Committed meanwhile.
                        Err(Error::InvalidArgument { .. }) => {
                            return self.write_status(tablet, epoch, seq).await;
                        }
                        Err(e) => return Err(e),
                    },
                }
            }
            done => return Ok(done),
        };
        let waited = lead
            .wait_for(
                Duration::from_millis(self.config.ack_timeout_ms),
                move |v| v.deposed || v.acks.satisfied(at, Acks::All),
            )
            .await;
        match waited {
            Some(v) if !v.deposed => Ok(WriteState::Aborted),
            _ => Err(Error::Ambiguous {
                tablet,
                epoch: lead.epoch,
                seq: at,
                acks: Acks::All,
                reason: "the abort record was not acknowledged in time".into(),
            }),
        }
    }

    /// The timestamp committed reads at this master would read at now (what its
    /// followers may serve follower reads at once they hold its high watermark).
    pub fn committed_ts(&self, lead: &Lead) -> Timestamp {
        let closed = Timestamp(self.closed.load(Ordering::Acquire));
        let v = lead.view();
        let (hw, hw_ts) = v.acks.high_watermark();
        if hw >= v.acks.master_end.0 {
            closed
        } else {
            hw_ts
        }
    }

    /// Whether this node holds a replica of `tablet` that follower reads can use.
    pub fn has_replica(&self, tablet: TabletId) -> bool {
        self.replica_reads.read().contains_key(&tablet) || self.serves(tablet)
    }

    /// Where a follower read of `tablet` reads, and how stale that is; `None` when
    /// this node masters it (a committed read at the master is not stale) or holds
    /// no replica of it.
    fn follower_point(
        &self,
        tablet: TabletId,
        max: Duration,
        at: Option<Timestamp>,
    ) -> Result<Option<(Timestamp, Duration)>> {
        if self.serves(tablet) {
            return Ok(None);
        }
        let Some((point, heard)) = self.replica_reads.read().get(&tablet).copied() else {
            return Err(Error::Unavailable(format!(
                "{tablet}: this node holds no replica to read from"
            )));
        };
        let stale = heard.elapsed();
        if stale > max {
            return Err(Error::Unavailable(format!(
                "{tablet}: this replica last heard its master {} ms ago, more than the {} ms allowed",
                stale.as_millis(),
                max.as_millis()
            )));
        }
        match at {
            None => Ok(Some((point, stale))),
            Some(wanted) if wanted <= point => Ok(Some((wanted, stale))),
            Some(wanted) => Err(Error::Unavailable(format!(
                "{tablet}: this replica has not caught up to timestamp {wanted} yet"
            ))),
        }
    }

    /// A follower read of `keys` in `tablet`: the values, the timestamp read at and
    /// the staleness. Served by the master as a committed read when it is this node.
    pub async fn get_follower(
        &self,
        table: &TableDesc,
        tablet: TabletId,
        keys: Vec<Vec<u8>>,
        at: Option<Timestamp>,
        max: Duration,
    ) -> Result<(Vec<Option<Versioned>>, Timestamp, Duration)> {
        let Some((ts, stale)) = self.follower_point(tablet, max, at)? else {
            let (values, ts) = self
                .get(table, tablet, keys, at, ReadLevel::Committed)
                .await?;
            return Ok((values, ts, Duration::ZERO));
        };
        let id = table.id;
        let values = self
            .blocking(move |e| keys.iter().map(|k| e.get(id, k, ts)).collect())
            .await?;
        Ok((values, ts, stale))
    }

    /// The timestamp a read asked for (`None` = newest the level allows), checked
    /// against the table's garbage-collection horizon and made safe to read at.
    async fn read_ts(
        &self,
        table: &TableDesc,
        tablet: TabletId,
        at: Option<Timestamp>,
        level: ReadLevel,
    ) -> Result<Timestamp> {
        if let Some(at) = at {
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
        }
        let closed = Timestamp(self.closed.load(Ordering::Acquire));
        let Some(lead) = self.lead(tablet) else {
            return Err(Error::Unavailable(format!(
                "{tablet} is not mastered by this node"
            )));
        };
        self.check_lease(&lead)?;
        if level == ReadLevel::Latest {
            return Ok(at.unwrap_or(closed));
        }
        let committed = move |v: &AckView| -> Option<Timestamp> {
            let (hw, hw_ts) = v.acks.high_watermark();
            if hw < v.epoch_first {
                None // the epoch's no-op is not committed: older commits may be unknown
            } else if hw >= v.acks.master_end.0 {
                Some(closed)
            } else {
                Some(hw_ts)
            }
        };
        let wanted = at.unwrap_or(Timestamp(0));
        let view = lead
            .wait_for(Duration::from_millis(self.config.ack_timeout_ms), move |v| {
                v.deposed || committed(v).is_some_and(|ts| ts >= wanted)
            })
            .await
            .ok_or_else(|| {
                Error::Unavailable(format!(
                    "{tablet}: the in-sync replicas have not acknowledged enough to read committed data"
                ))
            })?;
        if view.deposed {
            return Err(Error::Unavailable(format!(
                "{tablet} is no longer mastered by this node"
            )));
        }
        let ts = committed(&view).unwrap_or(closed);
        Ok(at.unwrap_or(ts))
    }

    /// Refuses to serve a tablet another node could be mastering by now.
    fn check_lease(&self, lead: &Lead) -> Result<()> {
        if lead.needs_lease() && !self.lease.valid_for(lead.liveness) {
            return Err(Error::Unavailable(format!(
                "{}: this master's lease lapsed (its liveness heartbeats are not getting through)",
                lead.tablet
            )));
        }
        Ok(())
    }

    /// After a read: the answer counts only if the lease still held at its end (a
    /// master paused mid-read may have been replaced meanwhile).
    fn check_lease_after(&self, tablet: TabletId) -> Result<()> {
        match self.lead(tablet) {
            Some(lead) => self.check_lease(&lead),
            None => Err(Error::Unavailable(format!(
                "{tablet} is no longer mastered by this node"
            ))),
        }
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

    /// The values of `keys` (in order, all in `tablet`) as of `at` (`None` = the
    /// newest `level` allows), and the timestamp read at.
    pub async fn get(
        &self,
        table: &TableDesc,
        tablet: TabletId,
        keys: Vec<Vec<u8>>,
        at: Option<Timestamp>,
        level: ReadLevel,
    ) -> Result<(Vec<Option<Versioned>>, Timestamp)> {
        let ts = self.read_ts(table, tablet, at, level).await?;
        let id = table.id;
        if keys.len() == 1 {
            // One point read is a memtable or block-cache lookup in the common case:
            // cheaper inline than the two thread hops of a blocking task.
            let value = self.engine.get(id, &keys[0], ts)?;
            self.check_lease_after(tablet)?;
            return Ok((vec![value], ts));
        }
        let values = self
            .blocking(move |e| keys.iter().map(|k| e.get(id, k, ts)).collect())
            .await?;
        self.check_lease_after(tablet)?;
        Ok((values, ts))
    }

    /// One page of live rows of `range` (inside `tablet`).
    #[allow(clippy::too_many_arguments)]
    pub async fn scan(
        &self,
        table: &TableDesc,
        tablet: TabletId,
        range: KeyRange,
        limit: usize,
        reverse: bool,
        at: Option<Timestamp>,
        level: ReadLevel,
    ) -> Result<ScanPage> {
        let follower = match level {
            ReadLevel::Follower(max) => self.follower_point(tablet, max, at)?,
            _ => None,
        };
        let (ts, staleness) = match follower {
            Some(point) => point,
            None => (
                self.read_ts(table, tablet, at, level).await?,
                Duration::ZERO,
            ),
        };
        let req = ScanRequest {
            table: table.id,
            range,
            at: ts,
            limit: limit + 1,
            reverse,
        };
        let mut rows = self.blocking(move |e| e.scan(&req)).await?;
        if follower.is_none() {
            self.check_lease_after(tablet)?;
        }
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
            staleness,
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

    /// Whether this node masters the tablet now.
    pub fn serves(&self, tablet: TabletId) -> bool {
        self.leads.read().contains_key(&tablet)
    }

    /// Log end and high watermark of a tablet this node masters.
    pub fn progress(&self, tablet: TabletId) -> Option<TabletProgress> {
        let lead = self.lead(tablet)?;
        let v = lead.view();
        Some(TabletProgress {
            log_end: v.acks.master_end.0,
            high_watermark: v.acks.high_watermark().0,
        })
    }

    /// The node's clock now.
    pub fn now(&self) -> Timestamp {
        self.clock.peek()
    }

    /// Stops the writer after the commands already queued, and waits for it.
    pub async fn stop(&self) {
        for lead in self.leads() {
            lead.depose();
        }
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

/// Roughly how many bytes a record takes on the wire.
pub(crate) fn record_size(r: &datalayer_store::OplogRecord) -> usize {
    match &r.body {
        datalayer_store::RecordBody::Noop | datalayer_store::RecordBody::Abort { .. } => 32,
        datalayer_store::RecordBody::Write(ms) => {
            32 + ms
                .iter()
                .map(|m| match m {
                    Mutation::Put { key, value } => key.len() + value.len() + 8,
                    Mutation::Delete { key } => key.len() + 8,
                })
                .sum::<usize>()
        }
    }
}

/// Versions at or below this are no longer guaranteed to exist.
fn gc_horizon(table: &TableDesc, now: Timestamp) -> Timestamp {
    let retention_ms = table.version_retention_secs.saturating_mul(1000);
    Timestamp::from_millis(now.millis().saturating_sub(retention_ms))
}
