//! The writer thread of the strong policy: ordering, read-modify-write evaluation and
//! group commit. It owns every served tablet's [`TabletState`]; nothing else writes
//! tablet data.

use super::{Config, Expected, OpResult, Outcome, Position, TabletProgress, WriteOp};
use crate::catalog::TabletDesc;
use crate::error::{Error, Result};
use datalayer_store::{
    Epoch, HybridClock, Mutation, OplogRecord, RecordBody, ScanRequest, Seq, TableId, TabletAppend,
    TabletEngine, TabletId, TabletState, Timestamp, Versioned,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot};

/// Oplog trimming runs when this many records passed the retention since the last trim.
const TRIM_STRIDE: u64 = 1024;
/// Most deletes in one record of a `DeleteRange` (the records of one range still
/// commit together).
const DELETES_PER_RECORD: usize = 1000;

type Reply<T> = oneshot::Sender<Result<T>>;

/// What the writer is asked to do.
pub(super) enum Command {
    Open {
        tablet: TabletDesc,
        reply: Reply<()>,
    },
    Drop {
        table: TableId,
        tablets: Vec<TabletId>,
        reply: Reply<()>,
    },
    Write {
        table: TableId,
        tablet: TabletId,
        op: WriteOp,
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

struct Served {
    table: TableId,
    epoch: Epoch,
    state: TabletState,
    trimmed_below: Seq,
}

pub(super) struct Writer {
    engine: Arc<dyn TabletEngine>,
    clock: Arc<HybridClock>,
    closed: Arc<AtomicU64>,
    progress: Arc<parking_lot::RwLock<HashMap<TabletId, TabletProgress>>>,
    config: Config,
    served: HashMap<TabletId, Served>,
}

/// Commands evaluated but not yet durable.
#[derive(Default)]
struct Group {
    appends: BTreeMap<TabletId, TabletAppend>,
    /// What the group's own writes left at each key, for later commands to read.
    overlay: HashMap<(TableId, Vec<u8>), Option<Versioned>>,
    replies: Vec<(Reply<Outcome>, Result<Outcome>)>,
    barriers: Vec<Reply<()>>,
}

impl Writer {
    pub(super) fn new(
        engine: Arc<dyn TabletEngine>,
        clock: Arc<HybridClock>,
        closed: Arc<AtomicU64>,
        progress: Arc<parking_lot::RwLock<HashMap<TabletId, TabletProgress>>>,
        config: Config,
    ) -> Writer {
        Writer {
            engine,
            clock,
            closed,
            progress,
            config,
            served: HashMap::new(),
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
                        reply,
                    } => {
                        let result = self.stage(&mut group, table, tablet, op);
                        group.replies.push((reply, result));
                    }
                    Command::Close { reply } => group.barriers.push(reply),
                    Command::Open { tablet, reply } => {
                        self.commit(std::mem::take(&mut group));
                        let _ = reply.send(self.open(&tablet));
                    }
                    Command::Drop {
                        table,
                        tablets,
                        reply,
                    } => {
                        self.commit(std::mem::take(&mut group));
                        let _ = reply.send(self.drop_table(table, &tablets));
                    }
                    Command::Stop { reply } => {
                        self.commit(group);
                        let _ = reply.send(Ok(()));
                        return;
                    }
                }
                if taken < self.config.max_group_commands {
                    next = rx.try_recv().ok();
                }
            }
            self.commit(group);
        }
    }

    /// Publishes a closed timestamp: every write at or below it is durable.
    fn close_now(&self) {
        self.closed.fetch_max(self.clock.now().0, Ordering::AcqRel);
    }

    fn open(&mut self, desc: &TabletDesc) -> Result<()> {
        let mut state = self.engine.tablet_state(desc.id)?.unwrap_or_default();
        self.clock.observe(state.last_ts);
        if state.last_epoch() != Some(desc.master_epoch) {
            let record = OplogRecord {
                epoch: desc.master_epoch,
                seq: state.log_end.next(),
                ts: self.clock.now(),
                body: RecordBody::Noop,
            };
            state.advance(&record);
            state.high_watermark = state.log_end;
            self.engine.append(&[TabletAppend {
                table: desc.table,
                tablet: desc.id,
                records: vec![record],
                state: state.clone(),
            }])?;
        }
        let trimmed_below = self
            .engine
            .read_oplog(desc.id, Seq(0), 1)?
            .first()
            .map_or(Seq(0), |r| r.seq);
        self.publish(desc.id, &state);
        self.served.insert(
            desc.id,
            Served {
                table: desc.table,
                epoch: desc.master_epoch,
                state,
                trimmed_below,
            },
        );
        self.close_now();
        Ok(())
    }

    fn drop_table(&mut self, table: TableId, tablets: &[TabletId]) -> Result<()> {
        self.engine.drop_table(table, tablets)?;
        for t in tablets {
            self.served.remove(t);
            self.progress.write().remove(t);
        }
        Ok(())
    }

    fn publish(&self, tablet: TabletId, state: &TabletState) {
        self.progress.write().insert(
            tablet,
            TabletProgress {
                log_end: state.log_end,
                high_watermark: state.high_watermark,
            },
        );
    }

    /// The current value of a key, seen through the group's pending writes.
    fn current(&self, group: &Group, table: TableId, key: &[u8]) -> Result<Option<Versioned>> {
        if let Some(v) = group.overlay.get(&(table, key.to_vec())) {
            return Ok(v.clone());
        }
        Ok(self.engine.get(table, key, Timestamp::MAX)?)
    }

    /// Evaluates `op` and stages its records in `group`.
    fn stage(
        &mut self,
        group: &mut Group,
        table: TableId,
        tablet: TabletId,
        op: WriteOp,
    ) -> Result<Outcome> {
        let served = self
            .served
            .get(&tablet)
            .filter(|s| s.table == table)
            .ok_or_else(|| {
                Error::Unavailable(format!("{tablet} is not served by this node (dropped?)"))
            })?;
        let epoch = served.epoch;
        let ts = self.clock.now();
        let (records, result) = match op {
            WriteOp::Batch(mutations) => (vec![mutations], OpResult::Done),
            WriteOp::DeleteRange(range) => {
                let mut live: BTreeMap<Vec<u8>, bool> = self
                    .engine
                    .scan(&ScanRequest {
                        table,
                        range: range.clone(),
                        at: Timestamp::MAX,
                        limit: usize::MAX,
                        reverse: false,
                    })?
                    .into_iter()
                    .map(|(k, _)| (k, true))
                    .collect();
                for ((t, key), v) in &group.overlay {
                    if *t == table && range.contains(key) {
                        live.insert(key.clone(), v.is_some());
                    }
                }
                let keys: Vec<Vec<u8>> = live
                    .into_iter()
                    .filter(|(_, l)| *l)
                    .map(|(k, _)| k)
                    .collect();
                let count = keys.len() as u64;
                let records = keys
                    .chunks(DELETES_PER_RECORD)
                    .map(|c| {
                        c.iter()
                            .map(|k| Mutation::Delete { key: k.clone() })
                            .collect()
                    })
                    .collect();
                (records, OpResult::RangeDeleted(count))
            }
            WriteOp::CompareAndSet { key, expected, new } => {
                let current = self.current(group, table, &key)?;
                let matches = match expected {
                    Expected::Absent => current.is_none(),
                    Expected::Version(v) => current.as_ref().is_some_and(|c| c.ts == v),
                };
                if matches {
                    let m = match new {
                        Some(value) => Mutation::Put { key, value },
                        None => Mutation::Delete { key },
                    };
                    (vec![vec![m]], OpResult::Done)
                } else {
                    (Vec::new(), OpResult::Mismatch(current))
                }
            }
            WriteOp::Increment { key, delta } => {
                let current = match self.current(group, table, &key)? {
                    None => 0i64,
                    Some(v) => std::str::from_utf8(&v.value)
                        .ok()
                        .and_then(|s| s.parse::<i64>().ok())
                        .ok_or(Error::NotAnInteger)?,
                };
                let value = current.checked_add(delta).ok_or(Error::NotAnInteger)?;
                let m = Mutation::Put {
                    key,
                    value: value.to_string().into_bytes(),
                };
                (vec![vec![m]], OpResult::Counter(value))
            }
        };
        if records.is_empty() {
            return Ok(Outcome {
                ts,
                position: None,
                result,
            });
        }
        let append = group.appends.entry(tablet).or_insert_with(|| TabletAppend {
            table,
            tablet,
            records: Vec::new(),
            state: served.state.clone(),
        });
        for mutations in records {
            for m in &mutations {
                let value = match m {
                    Mutation::Put { value, .. } => Some(Versioned {
                        ts,
                        value: value.clone(),
                    }),
                    Mutation::Delete { .. } => None,
                };
                group.overlay.insert((table, m.key().to_vec()), value);
            }
            let record = OplogRecord {
                epoch,
                seq: append.state.log_end.next(),
                ts,
                body: RecordBody::Write(mutations),
            };
            append.state.advance(&record);
            append.records.push(record);
        }
        Ok(Outcome {
            ts,
            position: Some(Position {
                tablet,
                epoch,
                seq: append.state.log_end,
            }),
            result,
        })
    }

    /// Makes the group durable, then answers its commands.
    fn commit(&mut self, mut group: Group) {
        let mut appends: Vec<TabletAppend> =
            std::mem::take(&mut group.appends).into_values().collect();
        // One node is the whole in-sync set: durable here is committed.
        for a in &mut appends {
            a.state.high_watermark = a.state.log_end;
        }
        let written = if appends.is_empty() {
            Ok(())
        } else {
            self.engine.append(&appends)
        };
        match written {
            Ok(()) => {
                for a in appends {
                    self.publish(a.tablet, &a.state);
                    if let Some(s) = self.served.get_mut(&a.tablet) {
                        s.state = a.state;
                    }
                    self.maybe_trim(a.tablet);
                }
                self.close_now();
                for (reply, result) in group.replies {
                    let _ = reply.send(result);
                }
                for b in group.barriers {
                    let _ = b.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "group commit failed; its writes were not applied");
                for (reply, result) in group.replies {
                    let _ =
                        reply.send(result.and(Err(Error::Internal(format!("write failed: {e}")))));
                }
                for b in group.barriers {
                    let _ = b.send(Err(Error::Internal(format!("write failed: {e}"))));
                }
            }
        }
    }

    fn maybe_trim(&mut self, tablet: TabletId) {
        let retention = self.config.oplog_retention_records;
        let Some(s) = self.served.get_mut(&tablet) else {
            return;
        };
        let keep_from = s.state.log_end.0.saturating_sub(retention);
        if keep_from >= s.trimmed_below.0 + TRIM_STRIDE {
            match self.engine.trim_oplog(tablet, Seq(keep_from)) {
                Ok(()) => s.trimmed_below = Seq(keep_from),
                Err(e) => tracing::warn!(%tablet, error = %e, "oplog trim failed; will retry"),
            }
        }
    }
}
