//! Table and tablet metadata, behind one interface.
//!
//! [`Catalog`] is what the router and the node call; the metadata Raft group
//! implements it ([`crate::meta::RaftCatalog`]). Reads come from the node's own full
//! copy and never wait; changes are async because they are proposals.

use crate::error::{Error, Result};
pub use crate::policy::{PolicyKind, PolicyOptions};
use datalayer_store::{Epoch, KeyRange, NodeId, TableId, TabletId};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What a caller asks for when creating a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSpec {
    /// The table's name; see [`validate_table_name`].
    pub name: String,
    /// The policy.
    pub policy: PolicyKind,
    /// Replicas per tablet; 0 means [`DEFAULT_REPLICATION_FACTOR`].
    pub replication_factor: u32,
    /// How long old versions stay readable; 0 means [`DEFAULT_VERSION_RETENTION_SECS`].
    pub version_retention_secs: u64,
    /// The policy's own options (see [`PolicyOptions`]).
    #[serde(default)]
    pub options: PolicyOptions,
    /// Keys the table is split at from the start: it begins with one tablet more
    /// than there are keys (at most [`MAX_SPLIT_KEYS`], in increasing order).
    #[serde(default)]
    pub split_keys: Vec<Vec<u8>>,
}

/// Replicas per tablet when the table does not say (capped by the number of nodes).
pub const DEFAULT_REPLICATION_FACTOR: u32 = 3;
/// Seconds old versions stay readable when the table does not say: one day.
pub const DEFAULT_VERSION_RETENTION_SECS: u64 = 86_400;
/// Longest table name, in characters.
pub const MAX_TABLE_NAME_CHARS: usize = 64;
/// Most split keys a table can be created with.
pub const MAX_SPLIT_KEYS: usize = 1000;

/// One tablet: a half-open key range of a table and who serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TabletDesc {
    /// The tablet.
    pub id: TabletId,
    /// Its table.
    pub table: TableId,
    /// Inclusive start; empty is the start of the table.
    pub start: Vec<u8>,
    /// Exclusive end; `None` is the end of the table.
    pub end: Option<Vec<u8>>,
    /// Bumped by every split or merge.
    pub generation: u64,
    /// Nodes that hold a replica.
    pub replicas: Vec<NodeId>,
    /// Replicas caught up with the master.
    pub in_sync: Vec<NodeId>,
    /// The node that orders writes.
    pub master: NodeId,
    /// Bumped each time a new master is appointed.
    pub master_epoch: Epoch,
    /// The master's liveness epoch when it was appointed: it serves the tablet only
    /// while its liveness record keeps that epoch (see `meta::liveness`).
    #[serde(default)]
    pub master_liveness: crate::meta::LivenessEpoch,
    /// Bumped by every change of `replicas`: replica moves compare-and-set on it.
    #[serde(default)]
    pub conf_version: u64,
    /// A replica move under way: `to` was added and catches up from the master;
    /// `from` leaves once `to` is in sync.
    #[serde(default)]
    pub moving: Option<ReplicaMove>,
    /// A split under way: its master recorded it before writing it to the oplog.
    #[serde(default)]
    pub split: Option<SplitIntent>,
    /// A merge under way, on both tablets it joins (see `strong::merge`).
    #[serde(default)]
    pub merge: Option<MergeIntent>,
    /// The right neighbour this tablet absorbed in its last merge: its replicas
    /// forget that tablet's own state (its data is this tablet's now).
    #[serde(default)]
    pub absorbed: Option<TabletId>,
}

/// A merge a master is carrying out: `left` takes the keys of its right neighbour
/// `right` over, and `right` ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeIntent {
    /// The tablet that stays.
    pub left: TabletId,
    /// The tablet that ends.
    pub right: TabletId,
}

/// A split a tablet's master is carrying out: the tablet keeps `[start, key)` and
/// the new tablet `right` takes `[key, end)` (see `strong::split`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitIntent {
    /// The first key of the right half.
    pub key: Vec<u8>,
    /// The right half's id, taken when the intent was recorded.
    pub right: TabletId,
}

/// A replica of a tablet moving from one node to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaMove {
    /// The node giving its replica up.
    pub from: NodeId,
    /// The node taking it.
    pub to: NodeId,
}

impl TabletDesc {
    /// The tablet's key range.
    pub fn range(&self) -> KeyRange {
        KeyRange {
            start: self.start.clone(),
            end: self.end.clone(),
        }
    }
}

/// A table and its tablets, ordered by start key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDesc {
    /// Never reused, even after a drop.
    pub id: TableId,
    /// Unique among live tables.
    pub name: String,
    /// How the table's data is served.
    pub policy: PolicyKind,
    /// Replicas per tablet.
    pub replication_factor: u32,
    /// How long old versions stay readable, in seconds.
    pub version_retention_secs: u64,
    /// The policy's own options, as validated at creation (see [`PolicyOptions`]).
    #[serde(default)]
    pub options: PolicyOptions,
    /// Tablets covering the whole keyspace of the table, by start key (persistent:
    /// a copy costs O(1) and a change of one tablet O(log n), however many a table
    /// has; see [`Tablets`]).
    pub tablets: Tablets,
}

mod tablets;
pub use tablets::Tablets;

impl TableDesc {
    /// The tablet whose range holds `key`.
    pub fn tablet_for(&self, key: &[u8]) -> &TabletDesc {
        &self.tablets[self.index_for(key)]
    }

    /// The index of the tablet whose range holds `key`.
    pub fn index_for(&self, key: &[u8]) -> usize {
        // The first tablet starting after `key`, less one (the first starts at "").
        match self
            .tablets
            .binary_search_by(|t| t.start.as_slice().cmp(key))
        {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        }
    }

    /// The index of the tablet that starts at `start`, if one does.
    pub fn index_of_start(&self, start: &[u8]) -> Option<usize> {
        self.tablets
            .binary_search_by(|t| t.start.as_slice().cmp(start))
            .ok()
    }
}

/// Checks a table name: 1 to 64 characters of `[A-Za-z0-9_-]`, starting with a letter.
pub fn validate_table_name(name: &str) -> Result<()> {
    let ok_len = !name.is_empty() && name.chars().count() <= MAX_TABLE_NAME_CHARS;
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let ok_first = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    if ok_len && ok_chars && ok_first {
        Ok(())
    } else {
        Err(Error::invalid(
            "name",
            format!(
                "table name {name:?} must be 1 to {MAX_TABLE_NAME_CHARS} characters of \
                 [A-Za-z0-9_-] starting with a letter"
            ),
        ))
    }
}

/// Checks a new table's split keys: at most [`MAX_SPLIT_KEYS`], none empty, each
/// above the one before.
pub fn check_split_keys(keys: &[Vec<u8>]) -> Result<(), String> {
    if keys.len() > MAX_SPLIT_KEYS {
        return Err(format!(
            "{} split keys: at most {MAX_SPLIT_KEYS} (a table starts with at most {} tablets)",
            keys.len(),
            MAX_SPLIT_KEYS + 1
        ));
    }
    if keys.iter().any(Vec::is_empty) {
        return Err("a split key cannot be empty (the first tablet starts there)".into());
    }
    if let Some(w) = keys.windows(2).find(|w| w[0] >= w[1]) {
        return Err(format!(
            "split keys must be in increasing order without repeats: {:?} then {:?}",
            String::from_utf8_lossy(&w[0]),
            String::from_utf8_lossy(&w[1])
        ));
    }
    Ok(())
}

/// The cluster's table and tablet metadata.
#[async_trait::async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// Creates a table with one tablet. Returns the table and whether it was created
    /// (false when `if_not_exists` found it).
    async fn create_table(
        &self,
        spec: TableSpec,
        if_not_exists: bool,
    ) -> Result<(Arc<TableDesc>, bool)>;

    /// Drops a table; its data is purged by the caller. Returns the dropped table.
    async fn drop_table(&self, name: &str) -> Result<Arc<TableDesc>>;

    /// The live table of that name.
    fn table(&self, name: &str) -> Result<Arc<TableDesc>>;

    /// Every live table, by name.
    fn tables(&self) -> Vec<Arc<TableDesc>>;

    /// Tables dropped whose data may still be on disk; see [`Catalog::forget_dropped`].
    fn dropped(&self) -> Result<Vec<TableDesc>>;

    /// Records that a dropped table's data is gone.
    async fn forget_dropped(&self, table: TableId) -> Result<()>;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tablet of table 1 with that id and range, generation 1.
    pub(crate) fn tablet(id: u64, start: &[u8], end: Option<&[u8]>) -> TabletDesc {
        TabletDesc {
            id: TabletId(id),
            table: TableId(1),
            start: start.to_vec(),
            end: end.map(<[u8]>::to_vec),
            generation: 1,
            replicas: vec![],
            in_sync: vec![],
            master: NodeId(1),
            master_epoch: Epoch(1),
            master_liveness: Default::default(),
            conf_version: 0,
            moving: None,
            split: None,
            merge: None,
            absorbed: None,
        }
    }

    #[test]
    fn tablet_for_picks_the_range_holding_the_key() {
        let t = TableDesc {
            id: TableId(1),
            name: "t".into(),
            policy: PolicyKind::Strong,
            replication_factor: 1,
            version_retention_secs: 1,
            options: PolicyOptions::Null,
            tablets: [
                tablet(1, b"", Some(b"g")),
                tablet(2, b"g", Some(b"p")),
                tablet(3, b"p", None),
            ]
            .into_iter()
            .collect(),
        };
        for (key, want) in [
            (&b"a"[..], 1),
            (b"f\xff", 1),
            (b"g", 2),
            (b"o", 2),
            (b"p", 3),
            (b"zz", 3),
        ] {
            let got = t.tablet_for(key);
            assert_eq!(got.id, TabletId(want), "{key:?}");
            assert!(got.range().contains(key));
        }
    }
}
