//! The writer thread of the strong policy: ordering, read-modify-write evaluation and
//! group commit on masters, and appending the master's records on followers. It owns
//! every served tablet's [`TabletState`]; nothing else writes tablet data.

use super::applied::{self, CommittedEnds};
use super::protocol::{AckState, Void, agreement};
use super::{
    AckView, Config, Expected, Mastership, Masterships, OpResult, Outcome, Position, WriteOp,
};
use crate::catalog::TabletDesc;
use crate::error::{Error, Result};
use datalayer_store::{
    Answer, Epoch, HybridClock, KeyRange, Mutation, NodeId, OplogRecord, Origin, RecordBody,
    RequestId, ScanRequest, Seq, TableId, TabletAppend, TabletEngine, TabletId, TabletState,
    Timestamp, Versioned,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Oplog trimming runs when this many records (or a quarter of the retention, if
/// fewer) passed the retention since the last trim.
const TRIM_STRIDE: u64 = 1024;
/// Records appended this recently stay in the oplog whatever their bytes (a client's
/// retry within it is answered from the log).
const RETAIN_YOUNG: Duration = Duration::from_secs(60);

/// The bytes an oplog record counts for against `oplog_retention_bytes`: the keys
/// and values it writes, and a little for the rest.
fn record_bytes(r: &OplogRecord) -> u64 {
    let body: usize = match &r.body {
        RecordBody::Write(mutations) => mutations
            .iter()
            .map(|m| match m {
                Mutation::Put { key, value } => key.len() + value.len() + 8,
                Mutation::Delete { key } => key.len() + 8,
            })
            .sum(),
        _ => 0,
    };
    body as u64 + 64
}

/// The records of a tablet's oplog this writer appended since it began serving it
/// and has not trimmed, oldest first, with their bytes and when they came: what the
/// byte bound trims by (records from before stay until the bound trims past them).
#[derive(Debug, Default)]
struct Retained {
    records: std::collections::VecDeque<(Seq, u64, Instant)>,
    bytes: u64,
}

impl Retained {
    fn push(&mut self, records: &[OplogRecord], now: Instant) {
        for r in records {
            let b = record_bytes(r);
            self.records.push_back((r.seq, b, now));
            self.bytes += b;
        }
    }

    /// Where to trim so that at most `limit` bytes stay, never past a record that
    /// came after `young` nor past the last one; `None` until an eighth more than
    /// `limit` is there, so that trims come in strides.
    fn keep_from(&mut self, limit: u64, young: Instant) -> Option<Seq> {
        if limit == 0 || self.bytes <= limit + limit / 8 {
            return None;
        }
        let mut keep = None;
        while self.bytes > limit {
            let Some(&(seq, b, at)) = self.records.front() else {
                break;
            };
            if at > young || self.records.len() == 1 {
                break;
            }
            self.records.pop_front();
            self.bytes -= b;
            keep = Some(Seq(seq.0 + 1));
        }
        keep
    }

    /// Forgets the records after `seq` (cut from the log).
    fn forget_after(&mut self, seq: Seq) {
        while let Some(&(s, b, _)) = self.records.back() {
            if s <= seq {
                break;
            }
            self.records.pop_back();
            self.bytes -= b;
        }
    }

    /// Forgets the records below `seq` (trimmed).
    fn forget_below(&mut self, seq: Seq) {
        while let Some(&(s, b, _)) = self.records.front() {
            if s >= seq {
                break;
            }
            self.records.pop_front();
            self.bytes -= b;
        }
    }
}
/// The longest a paced group waits for its followers' next replication calls before
/// the master syncs it (a follower that is down or slow costs at most this).
const PACE_MAX: Duration = Duration::from_millis(2);

mod evaluate;
mod follower;
mod master;
mod merge;

type Reply<T> = oneshot::Sender<Result<T>>;

/// What the writer is asked to do.
pub(super) enum Command {
    /// Serve the tablet as its master in the descriptor's epoch.
    Open {
        tablet: TabletDesc,
        reply: Reply<()>,
    },
    /// Serve the tablet as a follower of the descriptor's master.
    Follow {
        tablet: TabletDesc,
        reply: Reply<()>,
    },
    /// Append a master's records (follower side).
    Replicate {
        req: Replicate,
        reply: Reply<(Seq, Timestamp)>,
    },
    Drop {
        table: TableId,
        tablets: Vec<TabletId>,
        reply: Reply<()>,
    },
    /// Void the records of a tablet this node masters from `from` on, with an abort
    /// record; the answer is that record's position.
    Abort {
        tablet: TabletId,
        from: Seq,
        reply: Reply<Position>,
    },
    /// Replace this node's replica with a master's export (follower side).
    InstallSnapshot {
        install: Install,
        reply: Reply<(Seq, Timestamp)>,
    },
    /// Stop serving one tablet and delete this node's replica of it.
    DropReplica {
        tablet: TabletDesc,
        reply: Reply<()>,
    },
    Write {
        table: TableId,
        tablet: TabletId,
        op: WriteOp,
        request: Option<RequestId>,
        /// The write waits for followers' acks as well as the master's: its group
        /// may be paced (see [`Writer::waits_for_calls`]).
        paced: bool,
        reply: Reply<Outcome>,
    },
    /// A shipper started a replication call to `follower` carrying records of
    /// `tablet` this writer staged.
    CallStarted {
        tablet: TabletId,
        follower: NodeId,
    },
    /// Stop (`fenced`) or resume ordering writes on a tablet this node masters; the
    /// answer, once everything ordered before is durable, is the log end.
    Fence {
        tablet: TabletId,
        fenced: bool,
        reply: Reply<Seq>,
    },
    /// Stop mastering a tablet at once (no reads, no writes), keeping its replica.
    StepDown {
        tablet: TabletId,
        reply: Reply<()>,
    },
    /// Append a split record to a tablet this node masters (unless its log holds
    /// that split already); the answer, once durable, is the record's position.
    Split {
        tablet: TabletId,
        key: Vec<u8>,
        right: TabletId,
        reply: Reply<Outcome>,
    },
    /// Append an absorb record to `tablet`, which this node masters, taking over
    /// the keys of `right` (served here, its writes stopped and committed through
    /// `through`); the answer, once durable, is the record's position.
    Absorb {
        tablet: TabletId,
        right: TabletId,
        through: Seq,
        reply: Reply<Outcome>,
    },
    /// Commit what is pending and move the closed timestamp to now.
    Close {
        reply: Reply<()>,
    },
    Stop {
        reply: Reply<()>,
    },
}

/// A master's copy of a tablet replacing a follower's replica.
#[derive(Debug, Clone)]
pub struct Install {
    /// The tablet's table.
    pub table: TableId,
    /// The tablet.
    pub tablet: TabletId,
    /// Its key range, as this node's metadata has it.
    pub range: KeyRange,
    /// The master's epoch.
    pub epoch: Epoch,
    /// The state the data matches.
    pub state: TabletState,
    /// The data file; `None` for an empty tablet. Moved into the store.
    pub file: Option<std::path::PathBuf>,
}

/// Records a master sends to a follower, with what the follower checks them against.
#[derive(Debug, Clone)]
pub struct Replicate {
    /// The tablet's table.
    pub table: TableId,
    /// The tablet's key range, as this node's metadata has it (to delete the replica
    /// when its log cannot be cut exactly).
    pub range: KeyRange,
    /// The tablet.
    pub tablet: TabletId,
    /// The master's epoch.
    pub epoch: Epoch,
    /// The master's epoch history.
    pub history: Vec<(Epoch, Seq)>,
    /// The master's durable log end.
    pub log_end: Seq,
    /// The master's high watermark.
    pub high_watermark: Seq,
    /// The master's committed-read timestamp when it sent this.
    pub committed_ts: Timestamp,
    /// Records in seq order (possibly some the follower has already).
    pub records: Vec<OplogRecord>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Master,
    Follower,
}

struct Served {
    table: TableId,
    epoch: Epoch,
    role: Role,
    /// A master handing its tablet over orders no more writes.
    fenced: bool,
    state: TabletState,
    trimmed_below: Seq,
    /// Each client's last request recorded in the log, and its answer: a retry of it
    /// is answered from here. Covers the records still in the oplog.
    requests: Requests,
    /// Records voided by abort records still in the oplog.
    voids: Vec<Void>,
    /// The last split record in the oplog: writes at or past its key belong to the
    /// right half.
    split: Option<SplitMark>,
    /// The records the byte bound trims by.
    retained: Retained,
}

/// A split record of a tablet's oplog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SplitMark {
    /// The first key of the right half.
    pub key: Vec<u8>,
    /// The right half.
    pub right: TabletId,
    /// The record's position.
    pub seq: Seq,
}

impl SplitMark {
    fn of(r: &OplogRecord) -> Option<SplitMark> {
        match &r.body {
            RecordBody::Split { key, right } => Some(SplitMark {
                key: key.clone(),
                right: *right,
                seq: r.seq,
            }),
            _ => None,
        }
    }

    /// Whether `op` writes a key at or past the split key.
    fn reached_by(&self, op: &WriteOp) -> bool {
        let k = self.key.as_slice();
        match op {
            WriteOp::Batch(ms) => ms.iter().any(|m| m.key() >= k),
            WriteOp::DeleteRange(range) => range.end.as_deref().is_none_or(|e| e > k),
            WriteOp::CompareAndSet { key, .. } | WriteOp::Increment { key, .. } => {
                key.as_slice() >= k
            }
        }
    }

    /// The right half's state where the split record is: its log begins at a base
    /// (seq 1, never in its oplog) that every replica holding the record holds; a
    /// replica without it needs a snapshot.
    fn base(epoch: Epoch, ts: Timestamp) -> TabletState {
        TabletState {
            epoch_history: vec![(epoch, Seq(1))],
            log_end: Seq(1),
            high_watermark: Seq(1),
            last_ts: ts,
        }
    }
}

/// Client → (its last request's number, that request's answer).
type Requests = HashMap<u64, (u64, Outcome)>;

/// What a replica's oplog says of client requests, voided records and its last
/// split.
type Recalled = (Requests, Vec<Void>, Option<SplitMark>);

/// Forgets requests whose records were voided: a retry of one applies anew.
fn forget_voided(requests: &mut Requests, voids: &[Void]) {
    requests.retain(|_, (_, o)| {
        o.position
            .is_none_or(|p| !voids.iter().any(|v| v.covers(p.seq)))
    });
}

/// The answer a record carrying `origin` gave.
fn recorded_outcome(tablet: TabletId, r: &OplogRecord) -> Option<(RequestId, Outcome)> {
    let origin = r.origin?;
    let result = match origin.answer {
        Answer::Done => OpResult::Done,
        Answer::RangeDeleted(n) => OpResult::RangeDeleted(n),
        Answer::Counter(v) => OpResult::Counter(v),
    };
    Some((
        origin.request,
        Outcome {
            ts: r.ts,
            position: Some(Position {
                tablet,
                epoch: r.epoch,
                seq: r.seq,
            }),
            observed: r.seq,
            result,
        },
    ))
}

/// Records `r`'s request, if it names one, as its client's latest; for an absorb
/// record, the requests of the absorbed tablet.
fn remember(requests: &mut Requests, tablet: TabletId, r: &OplogRecord) {
    let mut note = |id: RequestId, outcome: Outcome| {
        let newer = requests
            .get(&id.client)
            .is_none_or(|(seq, _)| *seq <= id.seq);
        if newer {
            requests.insert(id.client, (id.seq, outcome));
        }
    };
    if let RecordBody::Absorb {
        right,
        requests: inherited,
        ..
    } = &r.body
    {
        for i in inherited {
            note(i.origin.request, merge::inherited_outcome(*right, i));
        }
    }
    if let Some((id, outcome)) = recorded_outcome(tablet, r) {
        note(id, outcome);
    }
}

pub(super) struct Writer {
    engine: Arc<dyn TabletEngine>,
    clock: Arc<HybridClock>,
    closed: Arc<AtomicU64>,
    masterships: Masterships,
    replica_reads: super::ReplicaReads,
    committed: CommittedEnds,
    config: Config,
    served: HashMap<TabletId, Served>,
    /// Tablets of dropped tables: replication never brings them back.
    dropped: std::collections::HashSet<TabletId>,
}

/// Commands evaluated but not yet durable.
#[derive(Default)]
struct Group {
    appends: BTreeMap<TabletId, TabletAppend>,
    /// What the group's own writes left at each key, for later commands to read.
    overlay: HashMap<(TableId, Vec<u8>), Option<Versioned>>,
    replies: Vec<(Reply<Outcome>, Result<Outcome>)>,
    /// Follower appends answered with the tablet's log end once durable.
    replicated: Vec<(Reply<(Seq, Timestamp)>, TabletId)>,
    /// Where follower reads of each replicated tablet may read once the group is
    /// durable, and when the master said so.
    replica_reads: HashMap<TabletId, (Timestamp, std::time::Instant)>,
    barriers: Vec<Reply<()>>,
    /// A command other than a paced write joined the group: it syncs at once.
    unpaced: bool,
    /// When the group's first paced write was staged.
    paced_since: Option<Instant>,
    /// Followers that started a replication call since then, by tablet.
    called: HashSet<(TabletId, NodeId)>,
}

impl Writer {
    pub(super) fn new(
        engine: Arc<dyn TabletEngine>,
        clock: Arc<HybridClock>,
        closed: Arc<AtomicU64>,
        masterships: Masterships,
        replica_reads: super::ReplicaReads,
        committed: CommittedEnds,
        config: Config,
    ) -> Writer {
        Writer {
            engine,
            clock,
            closed,
            masterships,
            replica_reads,
            committed,
            config,
            served: HashMap::new(),
            dropped: Default::default(),
        }
    }

    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        self.close_now();
        while let Some(first) = rx.blocking_recv() {
            let mut group = Group::default();
            let mut next = Some(first);
            let mut taken = 0;
            while let Some(cmd) = next.take() {
                taken += 1;
                match cmd {
                    Command::Write {
                        table,
                        tablet,
                        op,
                        request,
                        paced,
                        reply,
                    } => {
                        let result = self.stage(&mut group, table, tablet, op, request, paced);
                        group.replies.push((reply, result));
                        if paced {
                            group.paced_since.get_or_insert_with(Instant::now);
                        } else {
                            group.unpaced = true;
                        }
                    }
                    Command::CallStarted { tablet, follower } => {
                        if group.paced_since.is_some() {
                            group.called.insert((tablet, follower));
                        }
                    }
                    Command::Close { reply } => group.barriers.push(reply),
                    Command::Split {
                        tablet,
                        key,
                        right,
                        reply,
                    } => {
                        group.unpaced = true;
                        let result = self.stage_split(&mut group, tablet, key, right);
                        group.replies.push((reply, result));
                    }
                    Command::Absorb {
                        tablet,
                        right,
                        through,
                        reply,
                    } => {
                        group.unpaced = true;
                        let result = self.stage_absorb(&mut group, tablet, right, through);
                        group.replies.push((reply, result));
                    }
                    Command::Fence {
                        tablet,
                        fenced,
                        reply,
                    } => {
                        self.commit(std::mem::take(&mut group));
                        let answer = match self.served.get_mut(&tablet) {
                            Some(s) if s.role == Role::Master => {
                                s.fenced = fenced;
                                Ok(s.state.log_end)
                            }
                            _ => Err(Error::NotServing { tablet }),
                        };
                        let _ = reply.send(answer);
                    }
                    Command::StepDown { tablet, reply } => {
                        self.commit(std::mem::take(&mut group));
                        self.demote(tablet);
                        let _ = reply.send(Ok(()));
                    }
                    Command::Open { tablet, reply } => {
                        self.commit(std::mem::take(&mut group));
                        let _ = reply.send(self.open(&tablet));
                    }
                    Command::Follow { tablet, reply } => {
                        self.commit(std::mem::take(&mut group));
                        let _ = reply.send(self.follow(&tablet));
                    }
                    Command::Replicate { req, reply } => {
                        let tablet = req.tablet;
                        match self.stage_replica(&mut group, req) {
                            Ok(()) => group.replicated.push((reply, tablet)),
                            Err(e) => {
                                let _ = reply.send(Err(e));
                            }
                        }
                    }
                    Command::Drop {
                        table,
                        tablets,
                        reply,
                    } => {
                        self.commit(std::mem::take(&mut group));
                        let _ = reply.send(self.drop_table(table, &tablets));
                    }
                    Command::Abort {
                        tablet,
                        from,
                        reply,
                    } => {
                        self.commit(std::mem::take(&mut group));
                        let _ = reply.send(self.abort(tablet, from));
                    }
                    Command::InstallSnapshot { install, reply } => {
                        self.commit(std::mem::take(&mut group));
                        let _ = reply.send(self.install_snapshot(install));
                    }
                    Command::DropReplica { tablet, reply } => {
                        self.commit(std::mem::take(&mut group));
                        let _ = reply.send(self.drop_replica(&tablet));
                    }
                    Command::Stop { reply } => {
                        self.commit(group);
                        let _ = reply.send(Ok(()));
                        return;
                    }
                }
                if taken < self.config.max_group_commands {
                    next = rx.try_recv().ok();
                    if next.is_none()
                        && let Some(deadline) = self.waits_for_calls(&group)
                    {
                        next = recv_until(&mut rx, deadline);
                    }
                }
            }
            self.commit(group);
        }
    }

    /// Until when a group waits for more commands before it syncs: while every
    /// command in it is a write that waits for followers' acks anyway, and the pacer
    /// of one of its tablets ([`Mastership::pacer`], an in-sync follower) has not started a
    /// replication call since the group's first write (that call carries the group's
    /// records). The master then syncs once per call of the pacer, beside it, instead
    /// of once per few writes — fewer syncs for the same latency, as acks=all waits
    /// for the pacer's call anyway — and at most [`PACE_MAX`] late.
    fn waits_for_calls(&self, group: &Group) -> Option<Instant> {
        let since = group.paced_since?;
        if group.unpaced
            || group.appends.is_empty()
            || !group.replicated.is_empty()
            || !group.barriers.is_empty()
        {
            return None;
        }
        let masterships = self.masterships.read();
        let waiting = group.appends.keys().any(|tablet| {
            masterships
                .get(tablet)
                .and_then(|mastership| mastership.pacer())
                .is_some_and(|pacer| !group.called.contains(&(*tablet, pacer)))
        });
        let deadline = since + PACE_MAX;
        (waiting && Instant::now() < deadline).then_some(deadline)
    }

    /// Publishes a closed timestamp: every write at or below it is durable.
    fn close_now(&self) {
        self.closed.fetch_max(self.clock.now().0, Ordering::AcqRel);
    }

    /// The tablet's state: as served, or as persisted.
    fn load(&self, tablet: TabletId) -> Result<(TabletState, Seq, Recalled)> {
        if let Some(s) = self.served.get(&tablet) {
            return Ok((
                s.state.clone(),
                s.trimmed_below,
                (s.requests.clone(), s.voids.clone(), s.split.clone()),
            ));
        }
        let state = self.engine.tablet_state(tablet)?.unwrap_or_default();
        let trimmed_below = self
            .engine
            .read_oplog(tablet, Seq(0), 1)?
            .first()
            .map_or(Seq(0), |r| r.seq);
        let recalled = self.recall(tablet, state.log_end)?;
        Ok((state, trimmed_below, recalled))
    }

    /// The client requests and the voided records a tablet's oplog on disk holds, up
    /// to `log_end` (requests of voided records do not count).
    fn recall(&self, tablet: TabletId, log_end: Seq) -> Result<Recalled> {
        let mut requests = Requests::new();
        let mut voids = Vec::new();
        let mut split = None;
        let mut from = Seq(0);
        while from <= log_end {
            let page = self.engine.read_oplog(tablet, from, 4096)?;
            let Some(last) = page.last().map(|r| r.seq) else {
                break;
            };
            for r in page.iter().filter(|r| r.seq <= log_end) {
                remember(&mut requests, tablet, r);
                voids.extend(Void::of(r));
                if let Some(mark) = SplitMark::of(r) {
                    split = Some(mark);
                }
                if matches!(r.body, RecordBody::Absorb { .. }) {
                    // The keys past the last split are the tablet's again.
                    split = None;
                }
            }
            from = last.next();
        }
        forget_voided(&mut requests, &voids);
        Ok((requests, voids, split))
    }

    fn open(&mut self, desc: &TabletDesc) -> Result<()> {
        if let Some(s) = self.served.get(&desc.id) {
            if s.role == Role::Master && s.epoch == desc.master_epoch {
                return Ok(());
            }
            if s.epoch > desc.master_epoch {
                return Err(Error::StaleEpoch {
                    tablet: desc.id,
                    got: desc.master_epoch,
                    current: s.epoch,
                });
            }
        }
        let (mut state, trimmed_below, (requests, voids, split)) = self.load(desc.id)?;
        self.clock.observe(state.last_ts);
        if let Some(last) = state.last_epoch()
            && last > desc.master_epoch
        {
            return Err(Error::StaleEpoch {
                tablet: desc.id,
                got: desc.master_epoch,
                current: last,
            });
        }
        if state.last_epoch() != Some(desc.master_epoch) {
            let record = OplogRecord {
                epoch: desc.master_epoch,
                seq: state.log_end.next(),
                ts: self.clock.now(),
                body: RecordBody::Noop,
                origin: None,
            };
            state.advance(&record);
            if desc.in_sync.iter().all(|n| *n == desc.master) {
                state.high_watermark = state.log_end;
            }
            self.engine.append(&[TabletAppend {
                table: desc.table,
                tablet: desc.id,
                records: vec![record],
                state: state.clone(),
            }])?;
        }
        let epoch_first = state
            .epoch_history
            .last()
            .map_or(Seq(1), |(_, first)| *first);
        let view = AckView {
            acks: AckState {
                master: desc.master,
                master_end: (state.log_end, state.last_ts),
                followers: Default::default(),
                in_sync: desc.in_sync.clone(),
                voids: voids.clone(),
                // What this master committed in earlier epochs is below its no-op,
                // which committed reads wait for.
                committed: (Seq(0), Timestamp(0)),
            },
            history: state.epoch_history.clone(),
            epoch_first,
            staged_end: state.log_end,
            deposed: false,
        };
        self.replica_reads.write().remove(&desc.id);
        let watch = applied::watch_of(&self.committed, desc.id, state.high_watermark);
        applied::publish(&watch, state.high_watermark, &voids);
        let mastership = Arc::new(Mastership::new(desc, view, &self.config, watch));
        if let Some(old) = self.masterships.write().insert(desc.id, mastership) {
            old.depose();
        }
        self.served.insert(
            desc.id,
            Served {
                table: desc.table,
                epoch: desc.master_epoch,
                role: Role::Master,
                fenced: false,
                state,
                trimmed_below,
                requests,
                voids,
                split,
                retained: Retained::default(),
            },
        );
        self.close_now();
        Ok(())
    }

    fn demote(&mut self, tablet: TabletId) {
        if let Some(mastership) = self.masterships.write().remove(&tablet) {
            mastership.depose();
        }
    }

    /// Deletes a served follower replica's data: it catches up from scratch.
    fn wipe(&mut self, table: TableId, tablet: TabletId, range: &KeyRange) -> Result<()> {
        self.engine.drop_tablet(table, tablet, range)?;
        if let Some(served) = self.served.get_mut(&tablet) {
            served.state = TabletState::default();
            served.trimmed_below = Seq(0);
            served.requests.clear();
            served.voids.clear();
            served.split = None;
            served.retained = Retained::default();
        }
        Ok(())
    }

    fn drop_table(&mut self, table: TableId, tablets: &[TabletId]) -> Result<()> {
        self.engine.drop_table(table, tablets)?;
        for t in tablets {
            self.served.remove(t);
            self.demote(*t);
            self.dropped.insert(*t);
            self.replica_reads.write().remove(t);
            // Subscribers of the tablet's applied records learn it is gone.
            self.committed.write().remove(t);
        }
        Ok(())
    }

    /// Makes the group durable, then answers its commands.
    fn commit(&mut self, mut group: Group) {
        let mut appends: Vec<TabletAppend> =
            std::mem::take(&mut group.appends).into_values().collect();
        {
            let masterships = self.masterships.read();
            for a in &mut appends {
                if let Some(mastership) = masterships.get(&a.tablet) {
                    // The master's high watermark as its followers acknowledged it (a
                    // master alone in its in-sync set commits what is durable).
                    let hw = mastership.view().acks.high_watermark().0;
                    a.state.high_watermark = hw.max(a.state.high_watermark).min(a.state.log_end);
                    if mastership.alone() {
                        a.state.high_watermark = a.state.log_end;
                    }
                }
            }
        }
        let written = if appends.is_empty() {
            Ok(())
        } else {
            self.engine.append(&appends)
        };
        match written {
            Ok(()) => {
                for a in appends {
                    if let Some(mastership) = self.masterships.read().get(&a.tablet) {
                        mastership.appended(&a.state, &[]);
                    }
                    let tablet = a.tablet;
                    if let Some(s) = self.served.get_mut(&tablet) {
                        s.state = a.state;
                        s.retained.push(&a.records, Instant::now());
                    }
                    self.publish_committed(tablet);
                    self.maybe_trim(a.tablet);
                }
                self.close_now();
                for (reply, result) in group.replies {
                    let _ = reply.send(result);
                }
                {
                    let mut reads = self.replica_reads.write();
                    for (tablet, at) in group.replica_reads {
                        reads.insert(tablet, at);
                    }
                }
                for (reply, tablet) in group.replicated {
                    let end = self
                        .served
                        .get(&tablet)
                        .map_or((Seq(0), Timestamp(0)), |s| {
                            (s.state.log_end, s.state.last_ts)
                        });
                    let _ = reply.send(Ok(end));
                }
                for b in group.barriers {
                    let _ = b.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "group commit failed; its writes were not applied");
                // A master's records may have reached its followers already: it must
                // never write other records at their positions in this epoch, so it
                // stops mastering those tablets; the next request or metadata change
                // finds its log holding the epoch and has it appointed anew
                // (`Router::mastership`).
                let staged: Vec<TabletId> = appends
                    .iter()
                    .map(|a| a.tablet)
                    .filter(|t| self.masterships.read().contains_key(t))
                    .collect();
                for tablet in staged {
                    tracing::error!(%tablet, "a master's write failed after its records were shipped: it steps down");
                    self.demote(tablet);
                    self.served.remove(&tablet);
                }
                // Requests staged in the group were not written after all.
                for a in &appends {
                    let log_end = self.served.get(&a.tablet).map(|s| s.state.log_end);
                    if let Some(log_end) = log_end {
                        let recalled = self.recall(a.tablet, log_end);
                        if let (Ok((r, v, split)), Some(s)) =
                            (recalled, self.served.get_mut(&a.tablet))
                        {
                            s.requests = r;
                            s.voids = v;
                            s.split = split;
                        }
                    }
                }
                for (reply, result) in group.replies {
                    let _ =
                        reply.send(result.and(Err(Error::Internal(format!("write failed: {e}")))));
                }
                for (reply, _) in group.replicated {
                    let _ = reply.send(Err(Error::Internal(format!("append failed: {e}"))));
                }
                for b in group.barriers {
                    let _ = b.send(Err(Error::Internal(format!("write failed: {e}"))));
                }
            }
        }
    }

    /// Tells the tablet's applied-records subscribers what this replica holds
    /// committed, and which of its records are voided.
    fn publish_committed(&self, tablet: TabletId) {
        if let Some(s) = self.served.get(&tablet) {
            let hw = s.state.high_watermark;
            applied::publish(
                &applied::watch_of(&self.committed, tablet, hw),
                hw,
                &s.voids,
            );
        }
    }

    fn maybe_trim(&mut self, tablet: TabletId) {
        let retention = self.config.oplog_retention_records;
        let Some(s) = self.served.get_mut(&tablet) else {
            return;
        };
        let by_count = s.state.log_end.0.saturating_sub(retention);
        let stride = (retention / 4).clamp(1, TRIM_STRIDE);
        let young = Instant::now().checked_sub(RETAIN_YOUNG);
        let by_bytes = young
            .and_then(|young| {
                s.retained
                    .keep_from(self.config.oplog_retention_bytes, young)
            })
            .map_or(0, |seq| seq.0.min(s.state.log_end.0));
        let keep_from = by_count.max(by_bytes);
        if keep_from >= s.trimmed_below.0 + stride
            || (by_bytes > s.trimmed_below.0 && keep_from > s.trimmed_below.0)
        {
            match self.engine.trim_oplog(tablet, Seq(keep_from)) {
                Ok(()) => {
                    s.trimmed_below = Seq(keep_from);
                    s.retained.forget_below(Seq(keep_from));
                    s.requests
                        .retain(|_, (_, o)| o.position.is_some_and(|p| p.seq.0 >= keep_from));
                }
                Err(e) => tracing::warn!(%tablet, error = %e, "oplog trim failed; will retry"),
            }
        }
    }
}

/// Wakes the writer thread parked in [`recv_until`].
struct Unpark(std::thread::Thread);

impl std::task::Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// The next command, or `None` at `deadline` (or when the channel closed).
fn recv_until(rx: &mut mpsc::Receiver<Command>, deadline: Instant) -> Option<Command> {
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    loop {
        if let std::task::Poll::Ready(cmd) = rx.poll_recv(&mut cx) {
            return cmd;
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::park_timeout(deadline - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, value_len: usize) -> OplogRecord {
        OplogRecord {
            epoch: Epoch(1),
            seq: Seq(seq),
            ts: Timestamp(seq),
            body: RecordBody::Write(vec![Mutation::Put {
                key: vec![0; 8],
                value: vec![0; value_len],
            }]),
            origin: None,
        }
    }

    #[test]
    fn the_byte_bound_trims_old_records_in_strides_and_keeps_young_ones() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(120);
        let mut r = Retained::default();
        // Ten records of about 1000 bytes, the first eight old.
        let each = record_bytes(&record(1, 920));
        for seq in 1..=8 {
            r.push(&[record(seq, 920)], t0);
        }
        r.push(&[record(9, 920), record(10, 920)], later);
        assert_eq!(r.bytes, 10 * each);
        // Within the bound and its eighth: nothing.
        assert_eq!(r.keep_from(9 * each, later), None);
        // Past it: the oldest go until the bound holds.
        assert_eq!(r.keep_from(5 * each, later), Some(Seq(6)));
        assert_eq!(r.bytes, 5 * each);
        // Young records stay whatever the bound.
        assert_eq!(r.keep_from(each, t0 + Duration::from_secs(1)), Some(Seq(9)));
        assert_eq!(r.bytes, 2 * each);
        // And the last record always stays.
        assert_eq!(
            r.keep_from(1, later + Duration::from_secs(1)),
            Some(Seq(10))
        );
        assert_eq!(r.records.len(), 1);
        // No bound: never.
        assert_eq!(r.keep_from(0, later), None);
        r.forget_after(Seq(9));
        assert_eq!((r.bytes, r.records.len()), (0, 0));
        r.push(&[record(11, 920), record(12, 920)], later);
        r.forget_below(Seq(12));
        assert_eq!(r.records.front().map(|x| x.0), Some(Seq(12)));
    }
}
