//! The metadata group's Raft log, vote and state machine, persisted in the store's
//! `meta` column family. Every write is synced before it is acknowledged to openraft.
//!
//! | key                    | value                                   |
//! |------------------------|-----------------------------------------|
//! | `raft/log/<index BE>`  | JSON log entry                          |
//! | `raft/vote`            | JSON vote                               |
//! | `raft/committed`       | JSON last committed log id              |
//! | `raft/purged`          | JSON last purged log id                 |
//! | `raft/sm/head`         | JSON applied position, membership, next id |
//! | `raft/sm/t/<name>`     | JSON live table (its tablets apart)     |
//! | `raft/sm/b/<name>/<tablet id BE>` | JSON tablet of a live table  |
//! | `raft/sm/d/<id BE>`    | JSON dropped table                      |
//! | `raft/sm/n/<id BE>`    | JSON registered node                    |
//! | `raft/sm/l/<id BE>`    | JSON liveness record                    |
//! | `raft/snapshot`        | JSON snapshot (meta and data)           |
//!
//! The state machine is written record by record: each applied batch writes the head
//! and the records its commands touched ([`MetaState::touched`]), in one write batch
//! that is not synced itself (the log's next synced append makes it durable; until
//! then a restart finds an older head and openraft re-applies the entries after it).
//! A heartbeat so writes one liveness record, and a change of one tablet (a new
//! master, an in-sync set, a split) that tablet's records, whatever the number of
//! tablets. A snapshot installed rewrites every record. A store of an earlier
//! release (the state whole under `raft/sm`, or tablets inside their table's record)
//! is read once and rewritten record by record.

// openraft's `StorageError` is large by its design; every method here returns it.
#![allow(clippy::result_large_err)]

use super::TypeConfig;
use super::changes::TabletChanges;
use super::state::{MetaResponse, MetaState, StateKey};
use crate::catalog::{TableDesc, TabletDesc};
use datalayer_store::{TabletEngine, TabletId};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

const LOG: &[u8] = b"raft/log/";
/// The first key after every log key ('0' follows '/').
const LOG_END: &[u8] = b"raft/log0";
const VOTE: &[u8] = b"raft/vote";
const COMMITTED: &[u8] = b"raft/committed";
const PURGED: &[u8] = b"raft/purged";
const SM: &[u8] = b"raft/sm";
const SNAPSHOT: &[u8] = b"raft/snapshot";
const SM_PREFIX: &[u8] = b"raft/sm/";
const SM_HEAD: &[u8] = b"raft/sm/head";

type StorageResult<T> = Result<T, StorageError<u64>>;
type Io = Arc<dyn TabletEngine>;

fn log_key(index: u64) -> Vec<u8> {
    let mut k = LOG.to_vec();
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// Runs store I/O on a blocking thread.
async fn blocking<T: Send + 'static>(
    io: &Io,
    f: impl FnOnce(&dyn TabletEngine) -> datalayer_store::Result<T> + Send + 'static,
) -> Result<T, std::io::Error> {
    let io = io.clone();
    tokio::task::spawn_blocking(move || f(io.as_ref()))
        .await
        .map_err(std::io::Error::other)?
        .map_err(std::io::Error::other)
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>, std::io::Error> {
    serde_json::to_vec(v).map_err(std::io::Error::other)
}

fn from_json<T: for<'a> Deserialize<'a>>(raw: &[u8]) -> Result<T, std::io::Error> {
    serde_json::from_slice(raw).map_err(std::io::Error::other)
}

async fn read_json<T: for<'a> Deserialize<'a> + Send + 'static>(
    io: &Io,
    key: &'static [u8],
) -> Result<Option<T>, std::io::Error> {
    match blocking(io, move |e| e.meta_get(key)).await? {
        Some(raw) => Ok(Some(from_json(&raw)?)),
        None => Ok(None),
    }
}

async fn write(
    io: &Io,
    puts: Vec<(Vec<u8>, Vec<u8>)>,
    deletes: Vec<Vec<u8>>,
) -> Result<(), std::io::Error> {
    blocking(io, move |e| e.meta_write(&puts, &deletes)).await
}

/// Writes without waiting for the disk ([`TabletEngine::meta_write_lazy`]).
async fn write_lazy(io: &Io, puts: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), std::io::Error> {
    write_lazy_with(io, puts, Vec::new()).await
}

async fn write_lazy_with(
    io: &Io,
    puts: Vec<(Vec<u8>, Vec<u8>)>,
    deletes: Vec<Vec<u8>>,
) -> Result<(), std::io::Error> {
    blocking(io, move |e| e.meta_write_lazy(&puts, &deletes)).await
}

/// The Raft log of the metadata group.
#[derive(Clone)]
pub struct LogStore {
    io: Io,
}

impl LogStore {
    /// The log kept in `io`'s meta column family.
    pub fn new(io: Io) -> LogStore {
        LogStore { io }
    }

    async fn log_keys(&self, start: u64, end: Vec<u8>) -> Result<Vec<Vec<u8>>, std::io::Error> {
        let rows = blocking(&self.io, move |e| {
            e.meta_range(&log_key(start), &end, usize::MAX, false)
        })
        .await?;
        Ok(rows.into_iter().map(|(k, _)| k).collect())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(&x) => x,
            Bound::Excluded(&x) => x + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&x) => log_key(x + 1),
            Bound::Excluded(&x) => log_key(x),
            Bound::Unbounded => LOG_END.to_vec(),
        };
        let rows = blocking(&self.io, move |e| {
            e.meta_range(&log_key(start), &end, usize::MAX, false)
        })
        .await
        .map_err(|e| StorageIOError::read_logs(&e))?;
        rows.iter()
            .map(|(_, v)| from_json(v).map_err(|e| StorageIOError::read_logs(&e).into()))
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last = blocking(&self.io, |e| e.meta_range(LOG, LOG_END, 1, true))
            .await
            .map_err(|e| StorageIOError::read_logs(&e))?;
        let last: Option<Entry<TypeConfig>> = match last.first() {
            Some((_, v)) => Some(from_json(v).map_err(|e| StorageIOError::read_logs(&e))?),
            None => None,
        };
        let purged: Option<LogId<u64>> = read_json(&self.io, PURGED)
            .await
            .map_err(|e| StorageIOError::read_logs(&e))?;
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last.map(|e| e.log_id).or(purged),
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> StorageResult<()> {
        let v = to_json(vote).map_err(|e| StorageIOError::write_vote(&e))?;
        write(&self.io, vec![(VOTE.to_vec(), v)], vec![])
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<u64>>> {
        read_json(&self.io, VOTE)
            .await
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> StorageResult<()> {
        let v = to_json(&committed).map_err(|e| StorageIOError::write_logs(&e))?;
        // On the path of every commit, so not synced: a crash may lose it, and the
        // restarted member then re-applies from its last applied entry, or learns the
        // commit from the leader (openraft persists it only to apply sooner).
        write_lazy(&self.io, vec![(COMMITTED.to_vec(), v)])
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<u64>>> {
        Ok(read_json::<Option<LogId<u64>>>(&self.io, COMMITTED)
            .await
            .map_err(|e| StorageIOError::read_logs(&e))?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut puts = Vec::new();
        for entry in entries {
            let v = to_json(&entry).map_err(|e| StorageIOError::write_logs(&e))?;
            puts.push((log_key(entry.log_id.index), v));
        }
        let result = write(&self.io, puts, vec![]).await;
        let failed = result.as_ref().err().map(StorageIOError::write_logs);
        callback.log_io_completed(result);
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        let keys = self
            .log_keys(log_id.index, LOG_END.to_vec())
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        write(&self.io, vec![], keys)
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        let keys = self
            .log_keys(0, log_key(log_id.index + 1))
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        let purged = to_json(&log_id).map_err(|e| StorageIOError::write_logs(&e))?;
        write(&self.io, vec![(PURGED.to_vec(), purged)], keys)
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

/// What the state machine has applied.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Applied {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    state: MetaState,
}

/// The applied position and what is not a record of its own.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Head {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    next_id: u64,
}

fn record_key(tag: &[u8], id: &[u8]) -> Vec<u8> {
    let mut k = SM_PREFIX.to_vec();
    k.extend_from_slice(tag);
    k.extend_from_slice(id);
    k
}

/// A record's key and value (`None`: deleted).
type Record = (Vec<u8>, Option<Vec<u8>>);

/// The keys and values (`None`: deleted) of `key`'s records as `state` holds them.
fn records(state: &MetaState, key: &StateKey) -> Result<Vec<Record>, std::io::Error> {
    Ok(match key {
        StateKey::Table(name) => match state.tables.get(name) {
            Some(t) => table_records(t)?,
            // Its tablets' records go by their own keys.
            None => vec![(record_key(b"t/", name.as_bytes()), None)],
        },
        StateKey::Tablet { table, id } => vec![(
            tablet_key(table, *id),
            state
                .tablet(*id)
                .filter(|_| state.table_of(*id).is_some_and(|t| t.name == *table))
                .map(to_json)
                .transpose()?,
        )],
        StateKey::Tables => {
            let mut records = Vec::new();
            for t in state.tables.values() {
                records.extend(table_records(t)?);
            }
            records
        }
        StateKey::Dropped(id) => vec![(
            record_key(b"d/", &id.0.to_be_bytes()),
            state.dropped.get(id).map(to_json).transpose()?,
        )],
        StateKey::Node(id) => vec![(
            record_key(b"n/", &id.0.to_be_bytes()),
            state.nodes.get(id).map(to_json).transpose()?,
        )],
        StateKey::Nodes => state
            .nodes
            .values()
            .map(|n| Ok((record_key(b"n/", &n.id.0.to_be_bytes()), Some(to_json(n)?))))
            .collect::<Result<_, std::io::Error>>()?,
        StateKey::Liveness(id) => vec![(
            record_key(b"l/", &id.0.to_be_bytes()),
            state.liveness.get(id).map(to_json).transpose()?,
        )],
    })
}

/// A table's own record (without its tablets) and one record per tablet.
fn table_records(t: &TableDesc) -> Result<Vec<Record>, std::io::Error> {
    let head = TableDesc {
        tablets: Default::default(),
        ..t.clone()
    };
    let mut records = vec![(record_key(b"t/", t.name.as_bytes()), Some(to_json(&head)?))];
    for tb in &t.tablets {
        records.push((tablet_key(&t.name, tb.id), Some(to_json(tb)?)));
    }
    Ok(records)
}

/// A tablet's record key: its table's name (no table name holds a `/`) and its id.
fn tablet_key(table: &str, id: TabletId) -> Vec<u8> {
    let mut tail = table.as_bytes().to_vec();
    tail.push(b'/');
    tail.extend_from_slice(&id.0.to_be_bytes());
    record_key(b"b/", &tail)
}

/// Every record of `state`.
fn all_keys(state: &MetaState) -> Vec<StateKey> {
    let mut keys = vec![StateKey::Tables, StateKey::Nodes];
    keys.extend(state.dropped.keys().map(|id| StateKey::Dropped(*id)));
    keys.extend(state.liveness.keys().map(|id| StateKey::Liveness(*id)));
    keys
}

/// Reads the records back into an applied state, and whether they are of the
/// release before (tablets inside their table's record: they are then written again
/// record by record).
fn load(raw: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Option<(Applied, bool)>, std::io::Error> {
    let mut applied = Applied::default();
    let mut head = None;
    let mut tablets: BTreeMap<String, Vec<TabletDesc>> = BTreeMap::new();
    for (k, v) in raw {
        let rest = &k[SM_PREFIX.len()..];
        let id = |tail: &[u8]| -> Result<u64, std::io::Error> {
            tail.try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| std::io::Error::other(format!("bad metadata record key {k:?}")))
        };
        if rest == b"head" {
            head = Some(from_json::<Head>(&v)?);
        } else if let Some(name) = rest.strip_prefix(b"t/") {
            applied.state.tables.insert(
                String::from_utf8_lossy(name).into_owned(),
                Arc::new(from_json(&v)?),
            );
        } else if let Some(tail) = rest.strip_prefix(b"b/") {
            let name = tail
                .len()
                .checked_sub(9)
                .map(|n| &tail[..n])
                .ok_or_else(|| std::io::Error::other(format!("bad tablet record key {k:?}")))?;
            tablets
                .entry(String::from_utf8_lossy(name).into_owned())
                .or_default()
                .push(from_json(&v)?);
        } else if let Some(tail) = rest.strip_prefix(b"d/") {
            applied
                .state
                .dropped
                .insert(datalayer_store::TableId(id(tail)?), from_json(&v)?);
        } else if let Some(tail) = rest.strip_prefix(b"n/") {
            applied
                .state
                .nodes
                .insert(datalayer_store::NodeId(id(tail)?), from_json(&v)?);
        } else if let Some(tail) = rest.strip_prefix(b"l/") {
            applied
                .state
                .liveness
                .insert(datalayer_store::NodeId(id(tail)?), from_json(&v)?);
        } else {
            return Err(std::io::Error::other(format!(
                "unknown metadata record {k:?}"
            )));
        }
    }
    let Some(head) = head else {
        return Ok(None);
    };
    let mut old = false;
    let names: Vec<String> = applied.state.tables.keys().cloned().collect();
    for name in names {
        let table = Arc::make_mut(applied.state.tables.get_mut(&name).expect("listed"));
        match tablets.remove(&name) {
            Some(mut list) => {
                list.sort_by(|a, b| a.start.cmp(&b.start));
                table.tablets = list.into_iter().collect();
            }
            None => old |= !table.tablets.is_empty(),
        }
    }
    if let Some(name) = tablets.keys().next() {
        return Err(std::io::Error::other(format!(
            "tablet records of a table that has none: {name}"
        )));
    }
    applied.last_applied = head.last_applied;
    applied.membership = head.membership;
    applied.state.next_id = head.next_id;
    applied.state.reindex();
    Ok(Some((applied, old)))
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, BasicNode>,
    data: Vec<u8>,
}

/// The metadata state machine: applies committed commands and publishes the result
/// to readers through a shared [`MetaState`].
pub struct StateMachine {
    io: Io,
    applied: Applied,
    shared: Arc<RwLock<MetaState>>,
    on_apply: tokio::sync::watch::Sender<u64>,
    /// Records the commands applied since the last write touched.
    dirty: std::collections::BTreeSet<StateKey>,
    /// Tablets the commands applied since the last write changed, handed to readers
    /// (`changes`) once the state they changed is published.
    changed: TabletChanges,
    changes: Arc<parking_lot::Mutex<TabletChanges>>,
}

impl StateMachine {
    /// Loads the applied state from `io`; `shared` and `on_apply` (the last applied
    /// index) follow every change.
    pub async fn open(
        io: Io,
        shared: Arc<RwLock<MetaState>>,
        on_apply: tokio::sync::watch::Sender<u64>,
    ) -> Result<StateMachine, std::io::Error> {
        let raw = blocking(&io, |e| e.meta_scan(SM_PREFIX)).await?;
        let (applied, rewrite) = match load(raw)? {
            Some(loaded) => loaded,
            None => {
                // The release before wrote the state whole (or this store is new).
                let old: Option<Applied> = read_json(&io, SM).await?;
                let rewrite = old.is_some();
                let mut applied = old.unwrap_or_default();
                applied.state.reindex();
                (applied, rewrite)
            }
        };
        *shared.write() = applied.state.clone();
        let mut sm = StateMachine {
            io,
            applied,
            shared,
            on_apply,
            dirty: Default::default(),
            changed: Default::default(),
            changes: Default::default(),
        };
        if rewrite {
            sm.persist(true).await?;
            write(&sm.io, Vec::new(), vec![SM.to_vec()]).await?;
        }
        Ok(sm)
    }

    /// Replaces the applied metadata with `state` and writes it (the starting point
    /// of the metadata benchmark, `datalayer bench-meta`; a member never does this).
    pub async fn replace_state(&mut self, state: MetaState) -> Result<(), std::io::Error> {
        self.applied.state = state;
        self.applied.state.reindex();
        self.persist(true).await
    }

    fn index(&self) -> u64 {
        self.applied.last_applied.map_or(0, |l| l.index)
    }

    /// Writes the head and the records touched since the last write (every record,
    /// replacing all stored ones, when `all`), then publishes the applied state to
    /// readers.
    async fn persist(&mut self, all: bool) -> Result<(), std::io::Error> {
        let index = self.index();
        let state = &self.applied.state;
        let mut deletes = Vec::new();
        let keys = if all {
            let stored = blocking(&self.io, |e| e.meta_scan(SM_PREFIX)).await?;
            deletes.extend(stored.into_iter().map(|(k, _)| k));
            self.dirty.clear();
            all_keys(state)
        } else {
            std::mem::take(&mut self.dirty).into_iter().collect()
        };
        let mut puts = vec![(
            SM_HEAD.to_vec(),
            to_json(&Head {
                last_applied: self.applied.last_applied,
                membership: self.applied.membership.clone(),
                next_id: state.next_id,
            })?,
        )];
        let mut written = std::collections::BTreeSet::new();
        for key in &keys {
            for (k, v) in records(state, key)? {
                match v {
                    Some(v) => {
                        written.insert(k.clone());
                        puts.push((k, v))
                    }
                    None => deletes.push(k),
                }
            }
        }
        // A record written now is not deleted with the old ones.
        deletes.retain(|k| !written.contains(k) && k.as_slice() != SM_HEAD);
        if all {
            write(&self.io, puts, deletes).await?;
        } else {
            write_lazy_with(&self.io, puts, deletes).await?;
        }
        *self.shared.write() = self.applied.state.clone();
        if all {
            self.changed.note_all();
        }
        self.changes
            .lock()
            .absorb(std::mem::take(&mut self.changed));
        self.on_apply.send_replace(index);
        Ok(())
    }

    /// The tablets changed since a reader last took them, noted as each applied
    /// batch is published (before its index is).
    pub fn changes(&self) -> Arc<parking_lot::Mutex<TabletChanges>> {
        self.changes.clone()
    }
}

/// Builds snapshots of the applied state.
pub struct SnapshotBuilder {
    io: Io,
    applied: Applied,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let data = to_json(&self.applied).map_err(|e| StorageIOError::read_state_machine(&e))?;
        let last = self.applied.last_applied;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: self.applied.membership.clone(),
            snapshot_id: format!(
                "{}-{}",
                last.map_or(0, |l| l.leader_id.term),
                last.map_or(0, |l| l.index)
            ),
        };
        let stored = to_json(&StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        })
        .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        // A synced write: it makes the records written lazily so far durable, and
        // they hold at least this snapshot's state (openraft purges the log below it
        // next, and a restart must not need entries purged).
        write(&self.io, vec![(SNAPSHOT.to_vec(), stored)], vec![])
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>)> {
        Ok((self.applied.last_applied, self.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<MetaResponse>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        for entry in entries {
            self.applied.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => MetaResponse::Done,
                EntryPayload::Normal(super::state::MetaCommand::Sync) => {
                    MetaResponse::Synced(entry.log_id.index)
                }
                EntryPayload::Normal(cmd) => {
                    let touched = self.applied.state.touched(&cmd);
                    let response = self.applied.state.apply(&cmd);
                    self.changed.note(&self.applied.state, &touched);
                    self.dirty.extend(touched);
                    response
                }
                EntryPayload::Membership(m) => {
                    self.applied.membership = StoredMembership::new(Some(entry.log_id), m);
                    MetaResponse::Done
                }
            };
            responses.push(response);
        }
        self.persist(false)
            .await
            .map_err(|e| StorageIOError::write_state_machine(&e))?;
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            io: self.io.clone(),
            applied: self.applied.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let mut applied: Applied = from_json(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        applied.state.reindex();
        applied.last_applied = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        self.applied = applied;
        let stored = to_json(&StoredSnapshot {
            meta: meta.clone(),
            data,
        })
        .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        write(&self.io, vec![(SNAPSHOT.to_vec(), stored)], vec![])
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.persist(true)
            .await
            .map_err(|e| StorageIOError::write_state_machine(&e).into())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let stored: Option<StoredSnapshot> = read_json(&self.io, SNAPSHOT)
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datalayer_store::RocksTabletEngine;

    struct Builder;

    impl openraft::testing::StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir>
        for Builder
    {
        async fn build(&self) -> StorageResult<(tempfile::TempDir, LogStore, StateMachine)> {
            let dir = tempfile::tempdir().map_err(|e| StorageIOError::write_logs(&e))?;
            let engine: Io = Arc::new(
                RocksTabletEngine::open(dir.path().join("db"), &Default::default())
                    .map_err(|e| StorageIOError::write_logs(&std::io::Error::other(e)))?,
            );
            let (tx, _rx) = tokio::sync::watch::channel(0);
            let sm = StateMachine::open(engine.clone(), Default::default(), tx)
                .await
                .map_err(|e| StorageIOError::read_state_machine(&e))?;
            Ok((dir, LogStore::new(engine), sm))
        }
    }

    fn entry(index: u64, cmd: super::super::state::MetaCommand) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(cmd),
        }
    }

    async fn open(engine: &Io) -> StateMachine {
        let (tx, _rx) = tokio::sync::watch::channel(0);
        StateMachine::open(engine.clone(), Default::default(), tx)
            .await
            .expect("open")
    }

    /// The state machine stores record by record, reads its records back after a
    /// restart, and rewrites a store of the release that wrote the state whole.
    #[tokio::test]
    async fn the_state_is_stored_record_by_record_and_an_old_whole_state_is_rewritten() {
        use super::super::state::MetaCommand;
        use datalayer_store::NodeId;
        let dir = tempfile::tempdir().expect("tempdir");
        let engine: Io = Arc::new(
            RocksTabletEngine::open(dir.path().join("db"), &Default::default()).expect("open"),
        );
        // What the previous release wrote: the whole state under one key.
        let mut old = Applied::default();
        old.state.apply(&MetaCommand::RegisterNode {
            id: None,
            grpc_addr: "a:1".into(),
            http_addr: "a:2".into(),
        });
        old.last_applied = Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), 1));
        engine
            .meta_write(&[(SM.to_vec(), to_json(&old).unwrap())], &[])
            .unwrap();
        let mut sm = open(&engine).await;
        assert_eq!(sm.applied.state.nodes.len(), 1);
        assert!(
            engine.meta_get(SM).unwrap().is_none(),
            "the whole state is gone"
        );
        let spec = |name: &str| crate::catalog::TableSpec {
            name: name.into(),
            policy: crate::catalog::PolicyKind::Strong,
            replication_factor: 1,
            version_retention_secs: 0,
            options: Default::default(),
            split_keys: Vec::new(),
        };
        let cmds = [
            MetaCommand::CreateTable {
                spec: spec("kept"),
                if_not_exists: false,
                proposer: NodeId(1),
            },
            MetaCommand::CreateTable {
                spec: spec("dropped"),
                if_not_exists: false,
                proposer: NodeId(1),
            },
            MetaCommand::DropTable {
                name: "dropped".into(),
            },
            MetaCommand::Heartbeat {
                node: NodeId(1),
                epoch: Default::default(),
                expiration_ms: 42,
            },
        ];
        let entries: Vec<_> = cmds
            .into_iter()
            .enumerate()
            .map(|(i, c)| entry(i as u64 + 2, c))
            .collect();
        sm.apply(entries).await.expect("apply");
        let before = sm.applied.state.clone();
        drop(sm);
        let sm = open(&engine).await;
        assert_eq!(
            sm.applied.state, before,
            "the records read back are the state"
        );
        assert_eq!(sm.index(), 5);
        assert!(sm.applied.state.tables.contains_key("kept"));
        assert!(!sm.applied.state.tables.contains_key("dropped"));
        assert_eq!(sm.applied.state.dropped.len(), 1);
        assert_eq!(sm.applied.state.liveness(NodeId(1)).expiration_ms, 42);
        let tablet = sm.applied.state.tables["kept"].tablets[0].id;
        assert!(
            sm.applied.state.tablet(tablet).is_some(),
            "the index is rebuilt"
        );
    }

    /// openraft's own storage suite, on the RocksDB-backed log and state machine.
    #[test]
    fn passes_openraft_storage_suite() {
        openraft::testing::Suite::test_all(Builder).expect("openraft storage suite");
    }
}
