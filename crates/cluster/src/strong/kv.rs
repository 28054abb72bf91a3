//! The data plane of `strong` tables, as the KV service calls it: each request is
//! resolved to its table and tablet, served here when this node masters the tablet
//! (or holds a replica, for follower reads), and answered with where to go when not.
//! A request spanning tablets is refused before anything is written.

use super::policy::StrongPolicy;
use super::types::{StrongOptions, WriteOptions};
use super::{Acks, Expected, OpResult, Outcome, ReadLevel, ScanPage, WriteOp, WriteState};
use crate::catalog::{Catalog, TableDesc, TabletDesc};
use crate::error::{Error, Result};
use crate::policy::PolicyKind;
use datalayer_store::{Epoch, KeyRange, Mutation, Seq, TabletId, Timestamp, Versioned};
use std::sync::Arc;
use std::time::Duration;

/// The one tablet holding every key of `keys`, or a cross-tablet error.
pub fn single_tablet<'t, 'k>(
    table: &'t TableDesc,
    mut keys: impl Iterator<Item = &'k [u8]>,
) -> Result<&'t TabletDesc> {
    let first = keys
        .next()
        .ok_or_else(|| Error::invalid("keys", "at least one key is required"))?;
    let tablet = table.tablet_for(first);
    for key in keys {
        let other = table.tablet_for(key);
        if other.id != tablet.id {
            return Err(Error::CrossTablet {
                table: table.name.clone(),
                first: tablet.id,
                second: other.id,
            });
        }
    }
    Ok(tablet)
}

/// The one tablet overlapping `range`, or a cross-tablet error.
pub fn range_tablet<'a>(table: &'a TableDesc, range: &KeyRange) -> Result<&'a TabletDesc> {
    let first = table.tablet_for(&range.start);
    let spills = match (&first.end, &range.end) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(tablet_end), Some(range_end)) => range_end > tablet_end,
    };
    if spills {
        let second = table.tablet_for(first.end.as_deref().unwrap_or_default());
        return Err(Error::CrossTablet {
            table: table.name.clone(),
            first: first.id,
            second: second.id,
        });
    }
    Ok(first)
}

/// Values read by a `get`, and how they were read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetAnswer {
    /// One per key asked for, in order.
    pub values: Vec<Option<Versioned>>,
    /// The timestamp they were read at.
    pub read_ts: Timestamp,
    /// For follower reads: how long since the replica last heard its master.
    pub staleness: Duration,
}

impl StrongPolicy {
    /// The `strong` table of that name; when this node does not know it, first
    /// catch up with the metadata leader (a table created a moment ago through
    /// another node may not have reached this one yet).
    pub async fn strong_table(&self, name: &str) -> Result<Arc<TableDesc>> {
        let table = self.catalog.table_synced(name).await?;
        if table.policy != PolicyKind::Strong {
            return Err(Error::NotSupported {
                what: format!("KV requests on {} tables", table.policy),
            });
        }
        Ok(table)
    }

    /// The table of that name whose data lives in strong tablets (strong, or a
    /// policy layered on it): what splits and merges work on.
    pub async fn tablets_table(&self, name: &str) -> Result<Arc<TableDesc>> {
        let table = self.catalog.table_synced(name).await?;
        if !table.policy.on_strong_tablets() {
            return Err(Error::NotSupported {
                what: format!("splits and merges of {} tables", table.policy),
            });
        }
        Ok(table)
    }

    /// The acks of a write: its own, or its table's default.
    fn acks(table: &TableDesc, opts: &WriteOptions) -> Result<Acks> {
        match opts.acks {
            Some(acks) => Ok(acks),
            None => Ok(StrongOptions::of(&table.options)?.default_acks),
        }
    }

    /// Runs `op` on the tablet, which this node must master.
    async fn write_op(
        &self,
        table: &TableDesc,
        tablet: &TabletDesc,
        op: WriteOp,
        opts: WriteOptions,
    ) -> Result<Outcome> {
        let tablet = self.ensure_mastered(tablet).await?;
        let acks = Self::acks(table, &opts)?;
        let (key, written) = super::trigger::load_of(&op);
        self.loads.record(tablet.id, key, written);
        self.tablets.write(tablet, op, acks, opts.request).await
    }

    /// Values of `keys` as of `at` (`None` = the newest `level` allows).
    pub async fn get(
        &self,
        table: &str,
        keys: Vec<Vec<u8>>,
        at: Option<Timestamp>,
        level: ReadLevel,
    ) -> Result<GetAnswer> {
        let table = self.strong_table(table).await?;
        let tablet = single_tablet(&table, keys.iter().map(Vec::as_slice))?;
        if let ReadLevel::Follower(max) = level
            && self.tablets.has_replica(tablet.id)
        {
            let (values, read_ts, staleness) = self
                .tablets
                .get_follower(&table, tablet.id, keys, at, max)
                .await?;
            return Ok(GetAnswer {
                values,
                read_ts,
                staleness,
            });
        }
        let tablet = self.ensure_mastered(tablet).await?.id;
        if let Some(key) = keys.first() {
            self.loads.record(tablet, key, 0);
        }
        let level = match level {
            ReadLevel::Follower(_) => ReadLevel::Committed,
            other => other,
        };
        let (values, read_ts) = self.tablets.get(&table, tablet, keys, at, level).await?;
        Ok(GetAnswer {
            values,
            read_ts,
            staleness: Duration::ZERO,
        })
    }

    /// Whether a follower read of `table` at `key` can be served on this node.
    pub fn has_replica(&self, table: &str, key: &[u8]) -> bool {
        self.catalog.table(table).is_ok_and(|t| {
            t.policy == PolicyKind::Strong && self.tablets.has_replica(t.tablet_for(key).id)
        })
    }

    /// One page of a scan.
    pub async fn scan(
        &self,
        table: &str,
        range: KeyRange,
        limit: usize,
        reverse: bool,
        at: Option<Timestamp>,
        level: ReadLevel,
    ) -> Result<ScanPage> {
        let table = self.strong_table(table).await?;
        let tablet = range_tablet(&table, &range)?;
        let local_replica =
            matches!(level, ReadLevel::Follower(_)) && self.tablets.has_replica(tablet.id);
        let tablet = if local_replica {
            tablet.id
        } else {
            let id = self.ensure_mastered(tablet).await?.id;
            self.loads.record(id, &range.start, 0);
            id
        };
        self.tablets
            .scan(&table, tablet, range, limit, reverse, at, level)
            .await
    }

    /// Puts and deletes, atomically; every key must fall in one tablet.
    pub async fn write(
        &self,
        table: &str,
        mutations: Vec<Mutation>,
        opts: WriteOptions,
    ) -> Result<Outcome> {
        let table = self.strong_table(table).await?;
        let tablet = single_tablet(&table, mutations.iter().map(Mutation::key))?;
        self.write_op(&table, tablet, WriteOp::Batch(mutations), opts)
            .await
    }

    /// Deletes every live key of `range`, atomically; the range must lie in one tablet.
    pub async fn delete_range(
        &self,
        table: &str,
        range: KeyRange,
        opts: WriteOptions,
    ) -> Result<Outcome> {
        let table = self.strong_table(table).await?;
        let tablet = range_tablet(&table, &range)?;
        self.write_op(&table, tablet, WriteOp::DeleteRange(range), opts)
            .await
    }

    /// Writes `new` (or deletes, for `None`) if the key is as `expected`.
    pub async fn compare_and_set(
        &self,
        table: &str,
        key: Vec<u8>,
        expected: Expected,
        new: Option<Vec<u8>>,
        opts: WriteOptions,
    ) -> Result<Outcome> {
        let table = self.strong_table(table).await?;
        let tablet = table.tablet_for(&key);
        let op = WriteOp::CompareAndSet { key, expected, new };
        self.write_op(&table, tablet, op, opts).await
    }

    /// Adds `delta` to the integer at `key`.
    pub async fn increment(
        &self,
        table: &str,
        key: Vec<u8>,
        delta: i64,
        opts: WriteOptions,
    ) -> Result<Outcome> {
        let table = self.strong_table(table).await?;
        let tablet = table.tablet_for(&key);
        let op = WriteOp::Increment { key, delta };
        self.write_op(&table, tablet, op, opts).await
    }

    /// The tablet `tablet` of `table`, if this node masters it (where to go if not).
    async fn mastered_by_id(&self, table: &str, tablet: TabletId) -> Result<()> {
        let table = self.strong_table(table).await?;
        let desc = table.tablets.iter().find(|t| t.id == tablet);
        let Some(desc) = desc else {
            // Merged into its left neighbour: its log is gone.
            if table.tablets.iter().any(|t| t.absorbed == Some(tablet)) {
                return Err(Error::TabletGone { tablet });
            }
            return Err(Error::invalid(
                "position.tablet_id",
                format!("{tablet} is not a tablet of table {:?}", table.name),
            ));
        };
        self.ensure_mastered(desc).await?;
        Ok(())
    }

    /// Whether the write at `(epoch, seq)` of a tablet of `table` committed.
    pub async fn write_status(
        &self,
        table: &str,
        tablet: TabletId,
        epoch: Epoch,
        seq: Seq,
    ) -> Result<WriteState> {
        self.mastered_by_id(table, tablet).await?;
        self.tablets.write_status(tablet, epoch, seq).await
    }

    /// Reverts the write at `(epoch, seq)` of a tablet of `table` if it has not
    /// committed (see [`super::StrongTablets::abort_write`]).
    pub async fn abort_write(
        &self,
        table: &str,
        tablet: TabletId,
        epoch: Epoch,
        seq: Seq,
    ) -> Result<WriteState> {
        self.mastered_by_id(table, tablet).await?;
        self.tablets.abort_write(tablet, epoch, seq).await
    }

    /// Collects the garbage of one table on strong tablets (strong or layered) now,
    /// on the tablets this node masters.
    pub async fn collect_garbage(&self, table: &str) -> Result<super::Collected> {
        let table = self.catalog.table_synced(table).await?;
        if !table.policy.on_strong_tablets() {
            return Err(Error::NotSupported {
                what: format!("garbage collection of {} tables", table.policy),
            });
        }
        if !table.tablets.iter().any(|t| t.master == self.me) {
            return Ok(super::Collected {
                removed: 0,
                horizon: self.tablets.now(),
            });
        }
        self.tablets.collect_garbage(&table).await
    }

    /// The table of that name, which must be of the layered policy `kind`; when this
    /// node does not know it, first catch up with the metadata leader.
    pub async fn layered_table(&self, name: &str, kind: PolicyKind) -> Result<Arc<TableDesc>> {
        let table = self.catalog.table_synced(name).await?;
        if table.policy != kind || kind == PolicyKind::Strong || !kind.on_strong_tablets() {
            return Err(Error::NotSupported {
                what: format!("{kind} requests on {} tables", table.policy),
            });
        }
        Ok(table)
    }

    /// A layered policy's write: puts and deletes in one tablet of its table, which
    /// this node must master, waiting for `acks`.
    pub async fn layered_write(
        &self,
        table: &TableDesc,
        mutations: Vec<Mutation>,
        acks: Acks,
    ) -> Result<Outcome> {
        let tablet = single_tablet(table, mutations.iter().map(Mutation::key))?;
        let tablet = self.ensure_mastered(tablet).await?;
        let op = WriteOp::Batch(mutations);
        let (key, written) = super::trigger::load_of(&op);
        self.loads.record(tablet.id, key, written);
        self.tablets.write(tablet, op, acks, None).await
    }

    /// A layered policy's put-if-absent: writes `value` at `key` unless the key
    /// holds a value. Answers whether it wrote, and what the key holds now.
    pub async fn layered_put_if_absent(
        &self,
        table: &TableDesc,
        key: Vec<u8>,
        value: Vec<u8>,
        acks: Acks,
    ) -> Result<(bool, Vec<u8>)> {
        let tablet = self.ensure_mastered(table.tablet_for(&key)).await?;
        let op = WriteOp::CompareAndSet {
            key,
            expected: Expected::Absent,
            new: Some(value.clone()),
        };
        let outcome = self.tablets.write(tablet, op, acks, None).await?;
        match outcome.result {
            OpResult::Mismatch(Some(current)) => Ok((false, current.value)),
            OpResult::Mismatch(None) => Err(Error::Internal(
                "put-if-absent found the key absent yet did not write".into(),
            )),
            _ => Ok((true, value)),
        }
    }

    /// A layered policy's read: one page of committed rows of `range`, which must lie
    /// in one tablet this node masters.
    pub async fn layered_scan(
        &self,
        table: &TableDesc,
        range: KeyRange,
        limit: usize,
    ) -> Result<ScanPage> {
        let tablet = range_tablet(table, &range)?;
        let tablet = self.ensure_mastered(tablet).await?.id;
        self.loads.record(tablet, &range.start, 0);
        self.tablets
            .scan(
                table,
                tablet,
                range,
                limit,
                false,
                None,
                ReadLevel::Committed,
            )
            .await
    }
}
