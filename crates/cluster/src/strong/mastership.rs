//! A tablet this node masters: its epoch, its followers' acknowledgements (published
//! as an [`AckView`] on a watch channel the shippers follow, and to waiters — writes,
//! committed reads — each woken only once its own condition holds), its in-sync
//! bookkeeping, and the newest records kept in memory for the shippers.

use super::applied::{self, Committed};
use super::protocol::{AckState, Void};
use super::{Config, record_size};
use crate::catalog::TabletDesc;
use datalayer_store::{Epoch, NodeId, OplogRecord, Seq, TableId, TabletId, Timestamp};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// Someone waiting until the view meets a condition.
struct Waiter {
    until: Box<dyn Fn(&AckView) -> bool + Send>,
    wake: oneshot::Sender<Arc<AckView>>,
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Waiter")
    }
}

/// What a master knows about its followers, published on every change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckView {
    /// Durable positions of the master and its followers, and the in-sync set.
    pub acks: AckState,
    /// The master's epoch history.
    pub history: Vec<(Epoch, Seq)>,
    /// Seq of the current epoch's no-op: committed reads wait until it commits.
    pub epoch_first: Seq,
    /// Where the records the shippers may send end: the master's durable log end, or
    /// beyond it while a group is being written (its records go out during the
    /// master's own sync; they count for acks only once the master holds them too).
    pub staged_end: Seq,
    /// Set when this node stopped mastering the tablet.
    pub deposed: bool,
}

/// A tablet this node masters: its epoch and the acknowledgements of its followers.
#[derive(Debug)]
pub struct Mastership {
    /// The tablet's table.
    pub table: TableId,
    /// The tablet.
    pub tablet: TabletId,
    /// The epoch this node masters it in.
    pub epoch: Epoch,
    /// This node's liveness epoch when it was appointed: its lease must be at it.
    pub liveness: crate::meta::LivenessEpoch,
    /// Nodes holding a replica (the metadata may add or replace them).
    replicas: parking_lot::Mutex<Vec<NodeId>>,
    /// A follower behind for this long leaves the in-sync set.
    pub replica_lag_ms: u64,
    view: watch::Sender<AckView>,
    /// Waiting for the view to meet their conditions (checked on every change, so a
    /// change wakes only those it satisfies, not every waiter).
    waiters: parking_lot::Mutex<Vec<Waiter>>,
    /// Followers being added to the in-sync set: their acks count before the metadata
    /// says so.
    adding: parking_lot::Mutex<Vec<NodeId>>,
    /// When each follower last held everything the master had.
    caught_up: parking_lot::Mutex<HashMap<NodeId, std::time::Instant>>,
    /// The newest records, contiguous, for the shippers (up to `staged_end`, so
    /// possibly some the master is still syncing): they read the oplog only for
    /// older ones.
    recent: parking_lot::Mutex<VecDeque<OplogRecord>>,
    /// Most records kept in `recent` (never more than the oplog keeps, so a follower
    /// the oplog cannot catch up gets a snapshot either way).
    recent_cap: usize,
    /// The writer holds a group of writes waiting for the pacer's next call.
    pacing: std::sync::atomic::AtomicBool,
    /// Counts the pacer's replication calls (the other followers' shippers align
    /// their calls with them).
    pace: watch::Sender<u64>,
    /// The tablet's applied-records watch: the high watermark moves with the acks.
    committed: Arc<watch::Sender<Committed>>,
}

/// Most records a mastership keeps in memory for its shippers.
const RECENT_RECORDS: usize = 4096;

impl Mastership {
    pub(super) fn new(
        desc: &TabletDesc,
        view: AckView,
        config: &Config,
        committed: Arc<watch::Sender<Committed>>,
    ) -> Mastership {
        Mastership {
            table: desc.table,
            tablet: desc.id,
            epoch: desc.master_epoch,
            liveness: desc.master_liveness,
            replicas: parking_lot::Mutex::new(desc.replicas.clone()),
            replica_lag_ms: config.replica_lag_ms,
            view: watch::channel(view).0,
            waiters: Default::default(),
            adding: Default::default(),
            caught_up: Default::default(),
            recent: Default::default(),
            recent_cap: RECENT_RECORDS.min(config.oplog_retention_records as usize),
            pacing: Default::default(),
            pace: watch::channel(0).0,
            committed,
        }
    }

    /// Keeps records being written for the shippers and lets them send them at
    /// once, while the master syncs them ([`Mastership::appended`] says when it did).
    /// Sound because a master never writes other records at these positions in this
    /// epoch: a failed write deposes it, and a master that restarts is appointed
    /// again in a new epoch before it writes (`life::needs_new_epoch`).
    pub(super) fn stage(&self, records: &[OplogRecord]) {
        self.keep_recent(records);
        if let Some(last) = records.last() {
            self.publish(|v| {
                let moved = last.seq > v.staged_end;
                v.staged_end = v.staged_end.max(last.seq);
                moved
            });
        }
    }

    /// Keeps records for the shippers.
    fn keep_recent(&self, records: &[OplogRecord]) {
        let mut recent = self.recent.lock();
        for r in records {
            if recent.back().is_some_and(|b| b.seq.next() != r.seq) {
                recent.clear(); // not contiguous: start again from here
            }
            recent.push_back(r.clone());
        }
        while recent.len() > self.recent_cap {
            recent.pop_front();
        }
    }

    /// Up to `limit` records (about `max_bytes`) from `from` on, if they are still in
    /// memory.
    pub fn recent_from(
        &self,
        from: Seq,
        limit: usize,
        max_bytes: usize,
    ) -> Option<Vec<OplogRecord>> {
        let recent = self.recent.lock();
        let first = recent.front()?.seq;
        if from < first || from > recent.back()?.seq {
            return None;
        }
        let mut bytes = 0usize;
        let mut out = Vec::new();
        for r in recent.iter().skip((from.0 - first.0) as usize).take(limit) {
            bytes += record_size(r);
            if bytes > max_bytes && !out.is_empty() {
                break;
            }
            out.push(r.clone());
        }
        Some(out)
    }

    /// Nodes holding a replica now.
    pub fn replicas(&self) -> Vec<NodeId> {
        self.replicas.lock().clone()
    }

    /// Takes the replica set the metadata records; returns the nodes that are new.
    /// Acks of nodes that left stop counting.
    pub fn set_replicas(&self, replicas: &[NodeId]) -> Vec<NodeId> {
        let mut current = self.replicas.lock();
        let added = replicas
            .iter()
            .filter(|n| !current.contains(n))
            .copied()
            .collect();
        let gone: Vec<NodeId> = current
            .iter()
            .filter(|n| !replicas.contains(n))
            .copied()
            .collect();
        *current = replicas.to_vec();
        drop(current);
        if !gone.is_empty() {
            self.adding.lock().retain(|n| !gone.contains(n));
            self.caught_up.lock().retain(|n, _| !gone.contains(n));
            self.publish(|v| {
                v.acks.followers.retain(|n, _| !gone.contains(n));
                v.acks.in_sync.retain(|n| !gone.contains(n));
                true
            });
        }
        added
    }

    /// When each follower last held everything the master had.
    pub fn caught_up(&self) -> HashMap<NodeId, std::time::Instant> {
        self.caught_up.lock().clone()
    }

    /// Starts counting `follower` in the in-sync set, before proposing it; only if
    /// it holds everything committed (else it could be appointed master without
    /// records acknowledged with `acks=all`). Whether it counts now.
    pub fn add_in_sync(&self, follower: NodeId) -> bool {
        let mut adding = self.adding.lock();
        let mut counts = false;
        self.publish(|v| {
            if v.acks.in_sync.contains(&follower) {
                counts = true;
                return false;
            }
            let held = v.acks.followers.get(&follower).map_or(Seq(0), |(s, _)| *s);
            counts = held >= v.acks.high_watermark().0;
            if counts {
                v.acks.in_sync.push(follower);
            }
            counts
        });
        if counts && !adding.contains(&follower) {
            adding.push(follower);
        }
        counts
    }

    /// Stops counting a follower whose addition did not go through.
    pub fn drop_adding(&self, follower: NodeId) {
        self.adding.lock().retain(|n| *n != follower);
    }

    /// Takes the in-sync set the metadata records, plus followers being added.
    pub fn sync_in_sync(&self, recorded: &[NodeId]) {
        let mut adding = self.adding.lock();
        adding.retain(|n| !recorded.contains(n));
        let mut set = recorded.to_vec();
        set.extend(adding.iter().copied());
        set.sort();
        set.dedup();
        drop(adding);
        self.set_in_sync(set);
    }

    /// The current view.
    pub fn view(&self) -> AckView {
        self.view.borrow().clone()
    }

    /// Notified on every change of the view.
    pub fn subscribe(&self) -> watch::Receiver<AckView> {
        self.view.subscribe()
    }

    /// Waits up to `timeout` until the view meets `until`; the view that did, or
    /// `None` on timeout.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        until: impl Fn(&AckView) -> bool + Send + 'static,
    ) -> Option<Arc<AckView>> {
        {
            let v = self.view.borrow();
            if until(&v) {
                return Some(Arc::new(v.clone()));
            }
        }
        let rx = {
            let mut waiters = self.waiters.lock();
            // Checked under the waiters' lock: a change published after this check
            // finds the waiter registered.
            let v = self.view.borrow();
            if until(&v) {
                return Some(Arc::new(v.clone()));
            }
            let (wake, rx) = oneshot::channel();
            waiters.push(Waiter {
                until: Box::new(until),
                wake,
            });
            rx
        };
        tokio::time::timeout(timeout, rx).await.ok()?.ok()
    }

    /// Changes the view with `change` (which says whether it changed anything),
    /// notifies the shippers and wakes the waiters it satisfies.
    fn publish(&self, change: impl FnOnce(&mut AckView) -> bool) {
        let changed = self.view.send_if_modified(|v| {
            let changed = change(v);
            if changed {
                v.acks.settle();
            }
            changed
        });
        if !changed {
            return;
        }
        {
            let v = self.view.borrow();
            applied::publish(&self.committed, v.acks.high_watermark().0, &v.acks.voids);
        }
        let mut waiters = self.waiters.lock();
        if waiters.is_empty() {
            return;
        }
        let v = self.view.borrow();
        // One copy of the view for every waiter this change wakes.
        let mut shared: Option<Arc<AckView>> = None;
        let mut i = 0;
        while i < waiters.len() {
            let w = &waiters[i];
            if w.wake.is_closed() || (w.until)(&v) {
                let w = waiters.swap_remove(i);
                let view = shared.get_or_insert_with(|| Arc::new(v.clone()));
                let _ = w.wake.send(view.clone());
            } else {
                i += 1;
            }
        }
    }

    /// Whether another node could be appointed master (a member of the in-sync set
    /// besides this one): only then must this node hold a lease to serve.
    pub(super) fn needs_lease(&self) -> bool {
        !self.alone()
    }

    /// The in-sync follower whose replication calls pace the master's syncs (the
    /// lowest id; none when the master is alone).
    pub(crate) fn pacer(&self) -> Option<NodeId> {
        let v = self.view.borrow();
        let master = v.acks.master;
        v.acks
            .in_sync
            .iter()
            .copied()
            .filter(|n| *n != master)
            .min()
    }

    /// The writer staged a write waiting for followers' acks: the pacer's next call
    /// is to be reported ([`Mastership::call_started`]).
    pub(super) fn await_call(&self) {
        self.pacing
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the writer is to hear that `follower` started a call: only the
    /// pacer's, and only while the writer awaits one (so an idle or acks=1 master's
    /// writer is not woken for every call).
    pub(crate) fn call_started(&self, follower: NodeId) -> bool {
        if self.pacer() != Some(follower) {
            return false;
        }
        self.pace.send_modify(|n| *n = n.wrapping_add(1));
        self.pacing
            .swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    /// Notified whenever the pacer starts a replication call carrying records.
    pub(crate) fn pace(&self) -> watch::Receiver<u64> {
        self.pace.subscribe()
    }

    /// Whether the master is the whole in-sync set.
    pub(super) fn alone(&self) -> bool {
        let v = self.view.borrow();
        v.acks.in_sync.iter().all(|n| *n == v.acks.master)
    }

    /// The master's log is durable up to `state`'s end (records written another way
    /// than [`Mastership::stage`] are passed along, to be kept for the shippers).
    pub(super) fn appended(&self, state: &datalayer_store::TabletState, unstaged: &[OplogRecord]) {
        self.keep_recent(unstaged);
        self.publish(|v| {
            v.acks.master_end = (state.log_end, state.last_ts);
            v.staged_end = v.staged_end.max(state.log_end);
            v.history.clone_from(&state.epoch_history);
            true
        });
    }

    /// Records a follower's durable log end; `target` is the master's log end when
    /// the records were read (reaching it means the follower caught up).
    pub fn acknowledged(&self, follower: NodeId, end: Seq, ts: Timestamp, target: Seq) {
        if end >= target {
            self.caught_up
                .lock()
                .insert(follower, std::time::Instant::now());
        }
        self.publish(|v| {
            let old = v.acks.followers.insert(follower, (end, ts));
            old != Some((end, ts))
        });
    }

    /// Sets the members whose acks `all` waits for.
    pub(super) fn set_in_sync(&self, in_sync: Vec<NodeId>) {
        self.publish(|v| {
            let changed = v.acks.in_sync != in_sync;
            v.acks.in_sync = in_sync;
            changed
        });
    }

    /// Records an abort record's void (before publishing the abort's append).
    pub(super) fn void(&self, void: Void) {
        self.publish(|v| {
            v.acks.voids.push(void);
            true
        });
    }

    pub(super) fn depose(&self) {
        self.publish(|v| {
            v.deposed = true;
            true
        });
    }

    /// Whether this node stopped mastering the tablet.
    pub fn deposed(&self) -> bool {
        self.view.borrow().deposed
    }
}
