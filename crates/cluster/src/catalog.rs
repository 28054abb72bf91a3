//! Table and tablet metadata, behind one interface.
//!
//! [`Catalog`] is what the router and the node call. This implementation is
//! [`LocalCatalog`] (one node, persisted in the store's meta column family); the
//! Raft-backed metadata group replaces it without touching callers. Reads come from
//! the node's own full copy and never wait; changes are async because in a cluster
//! they are proposals.

use crate::error::{Error, Result};
use datalayer_store::{Epoch, KeyRange, NodeId, TableId, TabletEngine, TabletId};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// How a table's tablets are replicated and served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Policy {
    /// Ordered rows with one master per tablet.
    Strong,
    /// Convergent replicated data types.
    Crdt,
    /// Samples of series in weekly chunks.
    Timeseries,
    /// Documents with a full-text index.
    Search,
}

/// What a caller asks for when creating a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSpec {
    /// The table's name; see [`validate_table_name`].
    pub name: String,
    /// The policy.
    pub policy: Policy,
    /// Replicas per tablet; 0 means [`DEFAULT_REPLICATION_FACTOR`].
    pub replication_factor: u32,
    /// How long old versions stay readable; 0 means [`DEFAULT_VERSION_RETENTION_SECS`].
    pub version_retention_secs: u64,
}

/// Replicas per tablet when the table does not say (capped by the number of nodes).
pub const DEFAULT_REPLICATION_FACTOR: u32 = 3;
/// Seconds old versions stay readable when the table does not say: one day.
pub const DEFAULT_VERSION_RETENTION_SECS: u64 = 86_400;
/// Longest table name, in characters.
pub const MAX_TABLE_NAME_CHARS: usize = 64;

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
    pub policy: Policy,
    /// Replicas per tablet.
    pub replication_factor: u32,
    /// How long old versions stay readable, in seconds.
    pub version_retention_secs: u64,
    /// Tablets covering the whole keyspace of the table, by start key.
    pub tablets: Vec<TabletDesc>,
}

impl TableDesc {
    /// The tablet whose range holds `key`.
    pub fn tablet_for(&self, key: &[u8]) -> &TabletDesc {
        let idx = self
            .tablets
            .partition_point(|t| t.start.as_slice() <= key)
            .saturating_sub(1);
        &self.tablets[idx]
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

const KEY_TABLE: &[u8] = b"catalog/table/";
const KEY_DROPPED: &[u8] = b"catalog/dropped/";
const KEY_NEXT_ID: &[u8] = b"catalog/next-id";

fn table_key(prefix: &[u8], id: TableId) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&id.0.to_be_bytes());
    k
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    postcard::to_allocvec(v).map_err(|e| Error::Internal(format!("encode metadata: {e}")))
}

fn decode<T: for<'a> Deserialize<'a>>(raw: &[u8], what: &str) -> Result<T> {
    postcard::from_bytes(raw).map_err(|e| {
        Error::Store(datalayer_store::Error::Corruption {
            what: format!("{what}: {e}"),
        })
    })
}

/// The single-node catalog: this node masters every tablet. Persisted in the store's
/// meta column family; every change is one synced write.
pub struct LocalCatalog {
    engine: Arc<dyn TabletEngine>,
    node: NodeId,
    tables: RwLock<BTreeMap<String, Arc<TableDesc>>>,
    /// Serialises changes, so each reads and writes a consistent state.
    change: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for LocalCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCatalog")
            .field("node", &self.node)
            .finish()
    }
}

impl LocalCatalog {
    /// Loads the catalog persisted in `engine`.
    pub fn open(engine: Arc<dyn TabletEngine>, node: NodeId) -> Result<LocalCatalog> {
        let mut tables = BTreeMap::new();
        for (_, raw) in engine.meta_scan(KEY_TABLE)? {
            let desc: TableDesc = decode(&raw, "table descriptor")?;
            tables.insert(desc.name.clone(), Arc::new(desc));
        }
        Ok(LocalCatalog {
            engine,
            node,
            tables: RwLock::new(tables),
            change: tokio::sync::Mutex::new(()),
        })
    }

    fn next_ids(&self) -> Result<u64> {
        Ok(match self.engine.meta_get(KEY_NEXT_ID)? {
            Some(raw) => u64::from_be_bytes(
                raw.as_slice()
                    .try_into()
                    .map_err(|_| Error::Internal("next id is not 8 bytes".into()))?,
            ),
            None => 1,
        })
    }
}

#[async_trait::async_trait]
impl Catalog for LocalCatalog {
    async fn create_table(
        &self,
        spec: TableSpec,
        if_not_exists: bool,
    ) -> Result<(Arc<TableDesc>, bool)> {
        validate_table_name(&spec.name)?;
        if spec.policy != Policy::Strong {
            return Err(Error::NotSupported {
                what: format!("policy {:?} (only strong tables exist so far)", spec.policy),
            });
        }
        let _guard = self.change.lock().await;
        if let Some(existing) = self.tables.read().get(&spec.name) {
            return if if_not_exists {
                Ok((existing.clone(), false))
            } else {
                Err(Error::TableExists { name: spec.name })
            };
        }
        // Table and tablet ids come from one counter, so neither is ever reused.
        let next = self.next_ids()?;
        let (table, tablet) = (TableId(next), TabletId(next + 1));
        let desc = TableDesc {
            id: table,
            name: spec.name.clone(),
            policy: spec.policy,
            // One node: the factor is recorded as asked, and capped when served.
            replication_factor: match spec.replication_factor {
                0 => DEFAULT_REPLICATION_FACTOR,
                n => n,
            },
            version_retention_secs: match spec.version_retention_secs {
                0 => DEFAULT_VERSION_RETENTION_SECS,
                n => n,
            },
            tablets: vec![TabletDesc {
                id: tablet,
                table,
                start: Vec::new(),
                end: None,
                generation: 1,
                replicas: vec![self.node],
                in_sync: vec![self.node],
                master: self.node,
                master_epoch: Epoch(1),
            }],
        };
        self.engine.meta_write(
            &[
                (table_key(KEY_TABLE, table), encode(&desc)?),
                (KEY_NEXT_ID.to_vec(), (next + 2).to_be_bytes().to_vec()),
            ],
            &[],
        )?;
        let desc = Arc::new(desc);
        self.tables.write().insert(spec.name, desc.clone());
        Ok((desc, true))
    }

    async fn drop_table(&self, name: &str) -> Result<Arc<TableDesc>> {
        let _guard = self.change.lock().await;
        let desc = self.table(name)?;
        // The descriptor moves to the dropped list in the same write, so a crash
        // before the data is purged leaves a record that the purge resumes from.
        self.engine.meta_write(
            &[(table_key(KEY_DROPPED, desc.id), encode(desc.as_ref())?)],
            &[table_key(KEY_TABLE, desc.id)],
        )?;
        self.tables.write().remove(name);
        Ok(desc)
    }

    fn table(&self, name: &str) -> Result<Arc<TableDesc>> {
        self.tables
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::TableNotFound {
                name: name.to_string(),
            })
    }

    fn tables(&self) -> Vec<Arc<TableDesc>> {
        self.tables.read().values().cloned().collect()
    }

    fn dropped(&self) -> Result<Vec<TableDesc>> {
        self.engine
            .meta_scan(KEY_DROPPED)?
            .iter()
            .map(|(_, raw)| decode(raw, "dropped table descriptor"))
            .collect()
    }

    async fn forget_dropped(&self, table: TableId) -> Result<()> {
        let _guard = self.change.lock().await;
        self.engine
            .meta_write(&[], &[table_key(KEY_DROPPED, table)])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datalayer_store::RocksTabletEngine;

    fn spec(name: &str) -> TableSpec {
        TableSpec {
            name: name.into(),
            policy: Policy::Strong,
            replication_factor: 0,
            version_retention_secs: 0,
        }
    }

    fn engine(dir: &tempfile::TempDir) -> Arc<dyn TabletEngine> {
        Arc::new(RocksTabletEngine::open(dir.path().join("db"), &Default::default()).expect("open"))
    }

    #[tokio::test]
    async fn tables_persist_and_ids_are_never_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first_id;
        {
            let cat = LocalCatalog::open(engine(&dir), NodeId(1)).expect("open");
            let (a, created) = cat.create_table(spec("a"), false).await.expect("create");
            assert!(created);
            assert_eq!(a.tablets.len(), 1, "a table starts with one tablet");
            assert_eq!(a.replication_factor, DEFAULT_REPLICATION_FACTOR);
            first_id = a.id;
            assert!(matches!(
                cat.create_table(spec("a"), false).await,
                Err(Error::TableExists { .. })
            ));
            let (again, created) = cat
                .create_table(spec("a"), true)
                .await
                .expect("if not exists");
            assert!(!created);
            assert_eq!(again.id, first_id);
            cat.drop_table("a").await.expect("drop");
            assert_eq!(cat.dropped().expect("dropped").len(), 1);
        }
        let cat = LocalCatalog::open(engine(&dir), NodeId(1)).expect("reopen");
        assert!(matches!(cat.table("a"), Err(Error::TableNotFound { .. })));
        assert_eq!(
            cat.dropped().expect("dropped")[0].id,
            first_id,
            "drop survives restart"
        );
        let (b, _) = cat.create_table(spec("a"), false).await.expect("recreate");
        assert!(b.id > first_id);
        assert!(b.tablets[0].id.0 > b.id.0);
        cat.forget_dropped(first_id).await.expect("forget");
        assert!(cat.dropped().expect("dropped").is_empty());
    }

    #[tokio::test]
    async fn other_policies_and_bad_names_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cat = LocalCatalog::open(engine(&dir), NodeId(1)).expect("open");
        let crdt = TableSpec {
            policy: Policy::Crdt,
            ..spec("c")
        };
        assert!(matches!(
            cat.create_table(crdt, false).await,
            Err(Error::NotSupported { .. })
        ));
        for bad in ["", "1abc", "a b", "a/b", &"x".repeat(65)] {
            let err = cat.create_table(spec(bad), false).await.expect_err(bad);
            assert!(matches!(err, Error::InvalidArgument { .. }), "{bad:?}");
        }
        assert!(cat.tables().is_empty(), "nothing was created");
        cat.create_table(spec(&"x".repeat(64)), false)
            .await
            .expect("64 chars is fine");
    }

    #[test]
    fn tablet_for_picks_the_range_holding_the_key() {
        let tablet = |id, start: &[u8], end: Option<&[u8]>| TabletDesc {
            id: TabletId(id),
            table: TableId(1),
            start: start.to_vec(),
            end: end.map(<[u8]>::to_vec),
            generation: 1,
            replicas: vec![],
            in_sync: vec![],
            master: NodeId(1),
            master_epoch: Epoch(1),
        };
        let t = TableDesc {
            id: TableId(1),
            name: "t".into(),
            policy: Policy::Strong,
            replication_factor: 1,
            version_retention_secs: 1,
            tablets: vec![
                tablet(1, b"", Some(b"g")),
                tablet(2, b"g", Some(b"p")),
                tablet(3, b"p", None),
            ],
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
