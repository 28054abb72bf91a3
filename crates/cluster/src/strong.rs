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

mod applied;
mod failover;
mod keeper;
pub mod kv;
pub mod layered;
mod life;
mod mastership;
mod merge;
mod pacing;
mod policy;
pub mod protocol;
mod read;
pub mod service;
mod ship;
mod split;
mod trigger;
mod types;
mod write;
mod writer;

pub use applied::{AppliedFeed, AppliedRecord};
pub use failover::StrongFailover;
pub use kv::{GetAnswer, range_tablet, single_tablet};
pub use layered::{Layered, LayeredService, Written};
pub use mastership::{AckView, Mastership};
pub use policy::StrongPolicy;
pub use protocol::{AckState, Acks};
pub use service::ReplicationService;
pub use types::*;
pub use writer::{Install, Replicate};

use crate::catalog::{TableDesc, TabletDesc};
use crate::error::{Error, Result};
use datalayer_store::{
    Epoch, HybridClock, KeyRange, Mutation, NodeId, ScanRequest, Seq, TableId, TabletEngine,
    TabletId, Timestamp, Versioned,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// For each tablet this node follows: the timestamp follower reads may read at, and
/// when the master last confirmed it.
pub(crate) type ReplicaReads =
    Arc<parking_lot::RwLock<HashMap<TabletId, (Timestamp, std::time::Instant)>>>;

/// The tablets this node masters, shared by the writer and the readers.
pub(crate) type Masterships = Arc<parking_lot::RwLock<HashMap<TabletId, Arc<Mastership>>>>;

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
pub struct StrongTablets {
    snapshot_dir: std::path::PathBuf,
    replica_reads: ReplicaReads,
    lease: Arc<crate::meta::Lease>,
    engine: Arc<dyn TabletEngine>,
    clock: Arc<HybridClock>,
    closed: Arc<AtomicU64>,
    masterships: Masterships,
    committed: applied::CommittedEnds,
    config: Config,
    tx: mpsc::Sender<writer::Command>,
    thread: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for StrongTablets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StrongTablets")
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish()
    }
}

fn stopped() -> Error {
    Error::Stopping
}

impl StrongTablets {
    /// Starts the writer thread.
    pub fn start(
        engine: Arc<dyn TabletEngine>,
        clock: Arc<HybridClock>,
        config: Config,
        lease: Arc<crate::meta::Lease>,
        snapshot_dir: std::path::PathBuf,
    ) -> Result<StrongTablets> {
        config.validate()?;
        let (tx, rx) = mpsc::channel(config.write_queue_depth);
        let closed = Arc::new(AtomicU64::new(0));
        let masterships: Masterships = Arc::default();
        let replica_reads: ReplicaReads = Arc::default();
        let committed: applied::CommittedEnds = Arc::default();
        let w = writer::Writer::new(
            engine.clone(),
            clock.clone(),
            closed.clone(),
            masterships.clone(),
            replica_reads.clone(),
            committed.clone(),
            config.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("strong-writer".into())
            .spawn(move || w.run(rx))
            .map_err(|e| Error::Internal(format!("spawn writer thread: {e}")))?;
        Ok(StrongTablets {
            snapshot_dir,
            replica_reads,
            lease,
            engine,
            clock,
            closed,
            masterships,
            committed,
            config,
            tx,
            thread: parking_lot::Mutex::new(Some(thread)),
        })
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A shipper started a replication call to `follower` carrying records of
    /// `tablet` (paced groups wait for such calls; dropped when the writer's queue is
    /// full, the group then syncs at its 2 ms bound at the latest).
    pub(crate) fn call_started(&self, tablet: TabletId, follower: NodeId) {
        let _ = self
            .tx
            .try_send(writer::Command::CallStarted { tablet, follower });
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

    /// [`StrongTablets::replicate`] in two steps: queues the records behind every call
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
    /// [`StrongTablets::resume`] if the appointment does not go through.
    pub async fn fence_for_hand_over(&self, tablet: TabletId, target: NodeId) -> Result<()> {
        let mastership = self.mastering(tablet)?;
        let end = self
            .call(|reply| writer::Command::Fence {
                tablet,
                fenced: true,
                reply,
            })
            .await?;
        let caught_up = mastership
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
                Err(Error::HandOverCalledOff { tablet, target })
            }
        }
    }

    /// Stops mastering `tablet` at once: no more reads or writes here. A hand-over
    /// does this before the target's appointment, which may commit even when its
    /// answer does not come back: from then on the target orders writes, so this
    /// node's reads could miss them.
    pub async fn step_down(&self, tablet: TabletId) -> Result<()> {
        self.call(|reply| writer::Command::StepDown { tablet, reply })
            .await
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

    /// The tablet's mastership; `Unavailable` when this node does not master it.
    fn mastering(&self, tablet: TabletId) -> Result<Arc<Mastership>> {
        self.mastership(tablet).ok_or(Error::NotServing { tablet })
    }

    /// The tablet's mastership, if this node masters it.
    pub fn mastership(&self, tablet: TabletId) -> Option<Arc<Mastership>> {
        self.masterships.read().get(&tablet).cloned()
    }

    /// Every tablet this node masters.
    pub fn masterships(&self) -> Vec<Arc<Mastership>> {
        self.masterships.read().values().cloned().collect()
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

    /// Removes the table's versions older than its retention.
    pub async fn collect_garbage(&self, table: &TableDesc) -> Result<Collected> {
        let horizon = gc_horizon(table, self.clock.peek());
        let id = table.id;
        let removed = self
            .blocking(move |e| e.collect_garbage(id, horizon))
            .await?;
        Ok(Collected { removed, horizon })
    }

    /// Whether this node masters the tablet now.
    pub fn serves(&self, tablet: TabletId) -> bool {
        self.masterships.read().contains_key(&tablet)
    }

    /// Log end and high watermark of a tablet this node masters.
    pub fn progress(&self, tablet: TabletId) -> Option<TabletProgress> {
        let mastership = self.mastership(tablet)?;
        let v = mastership.view();
        Some(TabletProgress {
            log_end: v.acks.master_end.0,
            high_watermark: v.acks.high_watermark().0,
        })
    }

    /// The committed records of this node's replica of `tablet` from `from` on (see
    /// [`AppliedFeed`]); on a master and on followers alike.
    pub fn applied_feed(&self, tablet: TabletId, from: Seq) -> Result<AppliedFeed> {
        let hw = self.committed_end(tablet)?;
        let watch = applied::watch_of(&self.committed, tablet, hw);
        Ok(AppliedFeed::new(
            tablet,
            from,
            watch.subscribe(),
            self.engine.clone(),
        ))
    }

    /// The last committed seq of this node's replica of `tablet` (its high
    /// watermark), as far as this replica knows.
    pub fn committed_end(&self, tablet: TabletId) -> Result<Seq> {
        if let Some(w) = self.committed.read().get(&tablet) {
            return Ok(w.borrow().hw);
        }
        Ok(self
            .engine
            .tablet_state(tablet)?
            .map_or(Seq(0), |s| s.high_watermark))
    }

    /// The node's clock now.
    pub fn now(&self) -> Timestamp {
        self.clock.peek()
    }

    /// Stops the writer after the commands already queued, and waits for it.
    pub async fn stop(&self) {
        for mastership in self.masterships() {
            mastership.depose();
        }
        let _ = self.call(|reply| writer::Command::Stop { reply }).await;
        let thread = self.thread.lock().take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// What a garbage collection did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Collected {
    /// Versions removed.
    pub removed: u64,
    /// Versions at or below this are no longer guaranteed to exist.
    pub horizon: Timestamp,
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
        datalayer_store::RecordBody::Split { key, .. } => 32 + key.len(),
        datalayer_store::RecordBody::Absorb { requests, .. } => 48 + 48 * requests.len(),
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
