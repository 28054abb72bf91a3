//! The tablet-engine contract. Policies talk to storage only through [`TabletEngine`];
//! `RocksTabletEngine` is the on-disk implementation and [`crate::conformance`] is the
//! suite every implementation must pass.

use crate::error::Result;
use crate::hlc::Timestamp;
use crate::ids::{Seq, TableId, TabletId};
use crate::oplog::{OplogRecord, TabletState};

/// Records appended to one tablet, with the state they leave it in.
#[derive(Debug, Clone)]
pub struct TabletAppend {
    /// The table the tablet belongs to (the data keys carry it).
    pub table: TableId,
    /// The tablet whose oplog grows.
    pub tablet: TabletId,
    /// New records, in seq order, continuing the tablet's log.
    pub records: Vec<OplogRecord>,
    /// The tablet's state after the records.
    pub state: TabletState,
}

/// A value as of some timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// When this version was written; compare-and-set compares it.
    pub ts: Timestamp,
    /// The value.
    pub value: Vec<u8>,
}

/// A key range of one table, `[start, end)`; `end == None` is the end of the table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyRange {
    /// Inclusive first user key.
    pub start: Vec<u8>,
    /// Exclusive end, or the end of the table.
    pub end: Option<Vec<u8>>,
}

impl KeyRange {
    /// Whether `key` lies in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|end| key < end)
    }
}

/// A read of rows in a range.
#[derive(Debug, Clone)]
pub struct ScanRequest {
    /// The table to read.
    pub table: TableId,
    /// Which keys.
    pub range: KeyRange,
    /// Read the newest version at or below this timestamp.
    pub at: Timestamp,
    /// At most this many rows.
    pub limit: usize,
    /// Highest key first.
    pub reverse: bool,
}

/// The storage of one node: the shared instance that holds every tablet.
///
/// Contract:
/// - [`append`](TabletEngine::append) is atomic over all its tablets and durable
///   (synced to the log) when it returns: one call is one group commit.
/// - Reads at `at` see exactly the versions with `ts <= at`; a tombstone hides older
///   versions.
/// - Nothing outside a tablet's range or table is touched by an operation on it.
pub trait TabletEngine: Send + Sync + 'static {
    /// Appends records to one or more tablets and applies their mutations, atomically
    /// and durably.
    fn append(&self, appends: &[TabletAppend]) -> Result<()>;

    /// The newest live version of `key` at or below `at`.
    fn get(&self, table: TableId, key: &[u8], at: Timestamp) -> Result<Option<Versioned>>;

    /// Live rows of a range as of `req.at`, in key order (or reverse), at most `req.limit`.
    fn scan(&self, req: &ScanRequest) -> Result<Vec<(Vec<u8>, Versioned)>>;

    /// The persisted state of a tablet, if it has ever been written.
    fn tablet_state(&self, tablet: TabletId) -> Result<Option<TabletState>>;

    /// Oplog records of a tablet from seq `from` on, at most `limit`.
    fn read_oplog(&self, tablet: TabletId, from: Seq, limit: usize) -> Result<Vec<OplogRecord>>;

    /// Cuts a tablet's log after seq `after`: removes the later records and exactly
    /// the versions they wrote, and stores `state`, atomically and durably. Used when a
    /// follower's divergent suffix is cut at failover. Returns how many records went.
    fn truncate(
        &self,
        table: TableId,
        tablet: TabletId,
        after: Seq,
        state: &TabletState,
    ) -> Result<u64>;

    /// Drops oplog records below `below` (they stay applied in the data).
    fn trim_oplog(&self, tablet: TabletId, below: Seq) -> Result<()>;

    /// Removes versions no read at or after `horizon` can see. Returns how many went.
    fn collect_garbage(&self, table: TableId, horizon: Timestamp) -> Result<u64>;

    /// Removes every version of a table and the oplogs and states of its tablets.
    fn drop_table(&self, table: TableId, tablets: &[TabletId]) -> Result<()>;

    /// Removes one tablet's replica: the versions of `table` in `range`, the tablet's
    /// oplog and its state, atomically and durably (the replica moved to another node).
    fn drop_tablet(&self, table: TableId, tablet: TabletId, range: &KeyRange) -> Result<()>;

    /// Writes a consistent copy of one tablet's replica to a file in `dir`: the
    /// versions of `table` in `range` and the tablet's state, as of one instant (a
    /// storage snapshot, so the data matches the state's log end exactly). `None`
    /// when the tablet has no state here.
    fn export_tablet(
        &self,
        table: TableId,
        tablet: TabletId,
        range: &KeyRange,
        dir: &std::path::Path,
    ) -> Result<Option<TabletExport>>;

    /// Replaces one tablet's replica with an export (from another node): deletes the
    /// versions of `table` in `range`, the oplog and the state, then ingests the file
    /// (moved, not copied) and stores `state`, durably. A crash part-way leaves a
    /// replica without state, which counts as empty.
    fn import_tablet(
        &self,
        table: TableId,
        tablet: TabletId,
        range: &KeyRange,
        state: &TabletState,
        file: Option<&std::path::Path>,
    ) -> Result<()>;

    /// Counters of the work done so far.
    fn stats(&self) -> EngineStats;

    /// Reads a metadata entry.
    fn meta_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Writes and deletes metadata entries atomically and durably.
    fn meta_write(&self, puts: &[(Vec<u8>, Vec<u8>)], deletes: &[Vec<u8>]) -> Result<()>;

    /// Like [`TabletEngine::meta_write`], atomically but without waiting for the disk:
    /// the entries are durable once any later durable write of this engine returns,
    /// and a crash before that may lose them (never a part of them). For state that
    /// can be rebuilt, written on a latency-critical path.
    fn meta_write_lazy(&self, puts: &[(Vec<u8>, Vec<u8>)], deletes: &[Vec<u8>]) -> Result<()> {
        self.meta_write(puts, deletes)
    }

    /// Metadata entries whose key starts with `prefix`, in key order.
    fn meta_scan(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;

    /// Metadata entries with keys in `[start, end)`, at most `limit`, in key order
    /// (highest first when `reverse`).
    fn meta_range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
}

/// A tablet's replica written out by [`TabletEngine::export_tablet`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TabletExport {
    /// The tablet's state as of the copy: the data holds exactly its log's effects.
    pub state: TabletState,
    /// The data file (an SST for the RocksDB engine); `None` when the range is empty.
    pub file: Option<std::path::PathBuf>,
    /// Rows (versions) in the file.
    pub versions: u64,
}

/// Counters of an engine since it opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Calls to [`TabletEngine::append`]: each is one synced write (group commit).
    pub group_commits: u64,
    /// Oplog records written by those calls.
    pub records_appended: u64,
}
