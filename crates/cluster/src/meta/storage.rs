//! The metadata group's Raft log, vote and state machine, persisted in the store's
//! `meta` column family. Every write is synced before it is acknowledged to openraft.
//!
//! | key                    | value                                   |
//! |------------------------|-----------------------------------------|
//! | `raft/log/<index BE>`  | JSON log entry                          |
//! | `raft/vote`            | JSON vote                               |
//! | `raft/committed`       | JSON last committed log id              |
//! | `raft/purged`          | JSON last purged log id                 |
//! | `raft/sm`              | JSON applied state (position, membership, metadata) |
//! | `raft/snapshot`        | JSON snapshot (meta and data)           |
//!
//! The state machine is small (tables and tablets), so it is written whole, but not
//! after every applied batch: most entries are liveness heartbeats. It is written
//! once `PERSIST_EVERY` entries were applied since the last write, with each snapshot
//! (before openraft purges the log below it) and when a snapshot is installed; a
//! restart reads it back and openraft re-applies the committed entries after it.

// openraft's `StorageError` is large by its design; every method here returns it.
#![allow(clippy::result_large_err)]

use super::TypeConfig;
use super::state::{MetaResponse, MetaState};
use datalayer_store::TabletEngine;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
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
/// The state machine is written to disk at least once per this many applied entries
/// (fewer than openraft keeps in the log behind a snapshot, so a restart always
/// finds the entries it must re-apply).
const PERSIST_EVERY: u64 = 256;

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
    blocking(io, move |e| e.meta_write_lazy(&puts, &[])).await
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
    /// The last applied index written to disk.
    persisted: u64,
}

impl StateMachine {
    /// Loads the applied state from `io`; `shared` and `on_apply` (the last applied
    /// index) follow every change.
    pub async fn open(
        io: Io,
        shared: Arc<RwLock<MetaState>>,
        on_apply: tokio::sync::watch::Sender<u64>,
    ) -> Result<StateMachine, std::io::Error> {
        let applied: Applied = read_json(&io, SM).await?.unwrap_or_default();
        *shared.write() = applied.state.clone();
        let persisted = applied.last_applied.map_or(0, |l| l.index);
        Ok(StateMachine {
            io,
            applied,
            shared,
            on_apply,
            persisted,
        })
    }

    /// Replaces the applied metadata with `state` and writes it (the starting point
    /// of the metadata benchmark, `datalayer bench-meta`; a member never does this).
    pub async fn replace_state(&mut self, state: MetaState) -> Result<(), std::io::Error> {
        self.applied.state = state;
        self.persist(true).await
    }

    fn index(&self) -> u64 {
        self.applied.last_applied.map_or(0, |l| l.index)
    }

    /// Publishes the applied state to readers, writing it to disk when `force` or
    /// when `PERSIST_EVERY` entries were applied since the last write.
    async fn persist(&mut self, force: bool) -> Result<(), std::io::Error> {
        let index = self.index();
        if force || index >= self.persisted + PERSIST_EVERY {
            let v = to_json(&self.applied)?;
            write(&self.io, vec![(SM.to_vec(), v)], vec![]).await?;
            self.persisted = index;
        }
        *self.shared.write() = self.applied.state.clone();
        self.on_apply.send_replace(index);
        Ok(())
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
        // The state it was built from goes with it: openraft purges the log below the
        // snapshot next, and a restart must not need entries purged.
        write(
            &self.io,
            vec![(SNAPSHOT.to_vec(), stored), (SM.to_vec(), data.clone())],
            vec![],
        )
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
                EntryPayload::Normal(cmd) => self.applied.state.apply(&cmd),
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

    /// openraft's own storage suite, on the RocksDB-backed log and state machine.
    #[test]
    fn passes_openraft_storage_suite() {
        openraft::testing::Suite::test_all(Builder).expect("openraft storage suite");
    }
}
