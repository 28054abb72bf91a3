//! The range router: what every request passes through on its way to a policy.
//!
//! It resolves a table name to its descriptor, a key to the tablet whose range holds
//! it, and hands the request to the table's policy. Table creation and drop are
//! orchestrated here too: the catalog records the change, the policy starts or stops
//! serving the tablets.

use crate::catalog::{Catalog, Policy, TableDesc, TableSpec, TabletDesc};
use crate::error::{Error, Result};
use crate::meta::RaftCatalog;
use crate::strong::{
    Acks, Expected, Outcome, ReadLevel, ScanPage, StrongPolicy, WriteOp, WriteState,
};
use datalayer_store::{
    Epoch, KeyRange, Mutation, NodeId, RequestId, Seq, TabletId, Timestamp, Versioned,
};
use std::collections::HashMap;
use std::sync::Arc;

/// How a write is made: the acks it waits for and the client's name for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Acks to wait for; `None` takes the table's default.
    pub acks: Option<Acks>,
    /// The client's id for the request: a retry with the same id is answered from
    /// the log instead of being applied twice.
    pub request: Option<RequestId>,
}

/// Routes requests of one node.
pub struct Router {
    catalog: Arc<RaftCatalog>,
    strong: Arc<StrongPolicy>,
    me: NodeId,
    /// Tablets this node follows, and the epoch it last followed them in.
    followed: parking_lot::Mutex<HashMap<TabletId, Epoch>>,
    /// Serializes reconciliations.
    reconciling: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").finish_non_exhaustive()
    }
}

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

impl Router {
    /// A router on node `me` over `catalog`, whose strong tablets `strong` serves.
    pub fn new(catalog: Arc<RaftCatalog>, strong: Arc<StrongPolicy>, me: NodeId) -> Router {
        Router {
            catalog,
            strong,
            me,
            followed: Default::default(),
            reconciling: Default::default(),
        }
    }

    /// Brings this node in line with the metadata: purges the data of dropped tables
    /// and serves the tablets it masters. Call once before serving requests; it then
    /// runs again whenever the metadata changes.
    pub async fn start(self: &Arc<Self>) -> Result<()> {
        // A tablet that cannot be reconciled yet (this node's metadata is behind a
        // newer master that already replicates to it) is retried on the next change;
        // it does not keep the node from serving the others.
        if let Err(e) = self.reconcile().await {
            tracing::warn!(error = %e, "some tablets wait for newer metadata");
        }
        let router = Arc::downgrade(self);
        let mut applied = self.catalog.applied();
        tokio::spawn(async move {
            // Most changes are liveness heartbeats: the tables as last reconciled
            // without error are skipped (a changed table is a new `Arc`).
            let mut done: Option<(Vec<Arc<TableDesc>>, usize)> = None;
            while applied.changed().await.is_ok() {
                let Some(router) = router.upgrade() else {
                    return;
                };
                let now = (
                    router.catalog.tables(),
                    router.catalog.dropped().map_or(usize::MAX, |d| d.len()),
                );
                let same = done.as_ref().is_some_and(|(tables, dropped)| {
                    *dropped == now.1
                        && tables.len() == now.0.len()
                        && tables.iter().zip(&now.0).all(|(a, b)| Arc::ptr_eq(a, b))
                });
                if same {
                    continue;
                }
                match router.reconcile().await {
                    Ok(()) => done = Some(now),
                    Err(e) => {
                        done = None;
                        tracing::warn!(error = %e, "reconciling tablets with the metadata failed");
                    }
                }
            }
        });
        Ok(())
    }

    async fn reconcile(&self) -> Result<()> {
        let _one = self.reconciling.lock().await;
        for dropped in self.catalog.dropped()? {
            self.purge(&dropped).await?;
        }
        let mut failed = None;
        for table in self.catalog.tables() {
            for tablet in &table.tablets {
                let done = if tablet.master == self.me {
                    self.lead(tablet).await
                } else if tablet.replicas.contains(&self.me) {
                    self.follow(tablet).await
                } else {
                    self.let_go(tablet).await
                };
                // One tablet's trouble does not hold up the others.
                if let Err(e) = done {
                    tracing::warn!(tablet = %tablet.id, error = %e, "reconciling tablet failed");
                    failed = Some(e);
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    async fn follow(&self, tablet: &TabletDesc) -> Result<()> {
        let known = self.followed.lock().get(&tablet.id).copied();
        if known != Some(tablet.master_epoch) {
            self.strong.follow_tablet(tablet).await?;
            self.followed.lock().insert(tablet.id, tablet.master_epoch);
        }
        Ok(())
    }

    /// Deletes this node's replica of a tablet that moved to other nodes, if any.
    async fn let_go(&self, tablet: &TabletDesc) -> Result<()> {
        let followed = self.followed.lock().remove(&tablet.id).is_some();
        if followed || self.strong.replica_position(tablet.id)?.is_some() {
            tracing::info!(tablet = %tablet.id, "the replica moved to other nodes: deleting it here");
            self.strong.drop_replica(tablet).await?;
        }
        Ok(())
    }

    /// Serves `tablet` as its master in the descriptor's epoch, shipping its oplog to
    /// the followers, and keeps its in-sync set as the metadata records it.
    async fn lead(&self, tablet: &TabletDesc) -> Result<()> {
        let current = self.strong.lead(tablet.id);
        match current {
            Some(lead) if lead.epoch == tablet.master_epoch => {
                lead.sync_in_sync(&tablet.in_sync);
                let added = lead.set_replicas(&tablet.replicas);
                if !added.is_empty() {
                    tracing::info!(tablet = %tablet.id, ?added, "new replicas: shipping the oplog to them");
                    crate::replicator::add_followers(&self.catalog, &self.strong, &lead, &added);
                }
            }
            _ => {
                let Some(tablet) = self.new_epoch_after_restart(tablet).await? else {
                    return Ok(());
                };
                let tablet = &tablet;
                self.strong.open_tablet(tablet).await?;
                self.followed.lock().remove(&tablet.id);
                if let Some(lead) = self.strong.lead(tablet.id) {
                    tracing::info!(tablet = %tablet.id, epoch = %tablet.master_epoch, "mastering tablet");
                    crate::replicator::start(&self.catalog, &self.strong, &lead);
                }
            }
        }
        Ok(())
    }

    /// The descriptor to master `tablet` by. A master ships records while it is still
    /// syncing them, so a process that died (or a write that failed) may have left
    /// followers holding records of the epoch that its own log lacks; it must never
    /// write other records at those positions in that epoch. So when this node's log
    /// already holds records of the tablet's epoch and others hold replicas, it has
    /// itself appointed again in the next epoch first (the followers then cut what
    /// its log lacks by comparing epoch histories). `None` when the metadata moved on
    /// meanwhile (the change it applies reconciles the tablet again).
    async fn new_epoch_after_restart(&self, tablet: &TabletDesc) -> Result<Option<TabletDesc>> {
        let resumed = tablet.replicas.len() > 1
            && self
                .strong
                .replica_position(tablet.id)?
                .is_some_and(|(epoch, _)| epoch == tablet.master_epoch);
        if !resumed {
            return Ok(Some(tablet.clone()));
        }
        tracing::info!(tablet = %tablet.id, epoch = %tablet.master_epoch,
            "this node's log already holds the tablet's epoch: mastering it in the next one");
        self.catalog
            .appoint_master(tablet.id, tablet.master_epoch, self.me)
            .await?;
        self.catalog.sync().await?;
        Ok(self
            .catalog
            .tablet(tablet.id)
            .filter(|t| t.master == self.me && t.master_epoch > tablet.master_epoch))
    }

    async fn purge(&self, table: &TableDesc) -> Result<()> {
        let tablets = table.tablets.iter().map(|t| t.id).collect();
        self.strong.drop_table(table.id, tablets).await?;
        // The master of the first tablet records that the data is gone.
        if table.tablets.first().is_some_and(|t| t.master == self.me) {
            self.catalog.forget_dropped(table.id).await?;
        }
        Ok(())
    }

    /// The tablet, if this node masters it (serving it from now on), or where to go.
    async fn mastered<'a>(&self, tablet: &'a TabletDesc) -> Result<&'a TabletDesc> {
        if tablet.master != self.me {
            return Err(Error::NotMaster {
                tablet: tablet.id,
                master: tablet.master,
                addr: self.catalog.node_addr(tablet.master),
            });
        }
        if !self.strong.serves(tablet.id) {
            let _one = self.reconciling.lock().await;
            // The metadata as it is now: a hand-over may have ended while this waited.
            let now = self.catalog.tablet(tablet.id);
            if let Some(now) = now.as_ref().filter(|t| t.master != self.me) {
                return Err(Error::NotMaster {
                    tablet: now.id,
                    master: now.master,
                    addr: self.catalog.node_addr(now.master),
                });
            }
            if self.strong.serves(tablet.id) {
                return Ok(tablet);
            }
            match self.lead(now.as_ref().unwrap_or(tablet)).await {
                Err(Error::StaleEpoch { .. }) => {
                    // A newer master already replicates to this node: the metadata
                    // here is behind. The client retries and finds the new master.
                    return Err(Error::Unavailable(format!(
                        "{} has a newer master than this node's metadata says; retry",
                        tablet.id
                    )));
                }
                other => other?,
            }
        }
        Ok(tablet)
    }

    /// Where to forward a request on `table` whose first key is `key`: `None` when
    /// this node masters its tablet.
    pub async fn remote_master(&self, table: &str, key: &[u8]) -> Result<Option<String>> {
        let table = self.table_synced(table).await?;
        let tablet = table.tablet_for(key);
        if tablet.master == self.me {
            return Ok(None);
        }
        match self.catalog.node_addr(tablet.master) {
            Some(addr) => Ok(Some(addr)),
            None => Err(Error::NotMaster {
                tablet: tablet.id,
                master: tablet.master,
                addr: None,
            }),
        }
    }

    /// Hands `tablet`, which this node masters, over to `target` (an in-sync replica)
    /// without losing anything: writes stop, `target` catches up, the metadata appoints
    /// it in the next epoch.
    pub async fn hand_over(&self, tablet: TabletId, target: NodeId) -> Result<()> {
        let desc = self
            .catalog
            .tablet(tablet)
            .ok_or_else(|| Error::invalid("tablet_id", format!("{tablet} does not exist")))?;
        if desc.master != self.me {
            return Err(Error::NotMaster {
                tablet,
                master: desc.master,
                addr: self.catalog.node_addr(desc.master),
            });
        }
        if target == self.me || !desc.in_sync.contains(&target) {
            return Err(Error::invalid(
                "target",
                format!("{target} is not another in-sync replica of {tablet}"),
            ));
        }
        self.strong.hand_over(tablet, target).await?;
        // No request here re-masters the tablet while its appointment is under way.
        let _one = self.reconciling.lock().await;
        // The appointment may commit even when its answer does not come back, and from
        // then on the target orders writes: this node stops answering reads first.
        if let Err(e) = self.strong.step_down(tablet).await {
            self.strong.resume(tablet).await;
            return Err(e);
        }
        let appointed = self
            .catalog
            .appoint_master(tablet, desc.master_epoch, target)
            .await;
        // Requests here go on to the new master once the metadata here says so.
        let synced = self.catalog.sync().await;
        if let Err(e) = appointed {
            // Not handed over after all (or not known to be): if the metadata still
            // names this node, it masters the tablet again, in a new epoch.
            if synced.is_ok()
                && let Some(t) = self.catalog.tablet(tablet)
                && t.master == self.me
                && let Err(again) = self.lead(&t).await
            {
                tracing::warn!(%tablet, error = %again, "mastering the tablet again after a failed hand-over failed");
            }
            return Err(e);
        }
        tracing::info!(%tablet, %target, "handed the tablet over");
        Ok(())
    }

    /// Hands every tablet this node masters over to another of its in-sync replicas
    /// (a node stopping on purpose); a tablet without one, or whose hand-over fails,
    /// stays. Returns how many were handed over.
    pub async fn hand_over_all(&self) -> usize {
        let mut handed = 0;
        for table in self.catalog.tables() {
            for tablet in table.tablets.iter().filter(|t| t.master == self.me) {
                let Some(target) = tablet.in_sync.iter().copied().find(|n| *n != self.me) else {
                    continue;
                };
                match self.hand_over(tablet.id, target).await {
                    Ok(()) => handed += 1,
                    Err(e) => {
                        tracing::warn!(tablet = %tablet.id, %target, error = %e, "handing the tablet over failed")
                    }
                }
            }
        }
        handed
    }

    /// Hands the tablet of `table` holding `key` over to `target` (an in-sync
    /// replica), through its master wherever it runs; answers the tablet after.
    pub async fn transfer_master(
        &self,
        table: &str,
        key: &[u8],
        target: NodeId,
    ) -> Result<TabletDesc> {
        let table = self.table_synced(table).await?;
        let tablet = table.tablet_for(key).clone();
        if tablet.master != target {
            if !tablet.in_sync.contains(&target) {
                return Err(Error::invalid(
                    "target",
                    format!(
                        "{target} is not an in-sync replica of {} (in sync: {:?})",
                        tablet.id, tablet.in_sync
                    ),
                ));
            }
            if tablet.master == self.me {
                self.hand_over(tablet.id, target).await?;
            } else {
                let addr = self.catalog.node_addr(tablet.master).ok_or_else(|| {
                    Error::Unavailable(format!("{} has no known address", tablet.master))
                })?;
                crate::replicator::hand_over_at(&addr, tablet.id, target).await?;
            }
            self.catalog.sync().await?;
        }
        self.catalog
            .tablet(tablet.id)
            .ok_or_else(|| Error::Unavailable(format!("{} no longer exists", tablet.id)))
    }

    /// Removes `node` from the cluster: first every tablet it masters is handed over
    /// to one of its in-sync replicas (nothing is lost), then the metadata drops the
    /// node and gives its replica slots to other nodes, which catch up from the
    /// masters' oplogs.
    pub async fn decommission(&self, node: NodeId) -> Result<()> {
        for table in self.catalog.tables() {
            for tablet in table.tablets.iter().filter(|t| t.master == node) {
                let target = tablet
                    .in_sync
                    .iter()
                    .copied()
                    .find(|n| *n != node)
                    .ok_or_else(|| {
                        Error::Unavailable(format!(
                            "{} has no other in-sync replica to take over from {node} yet; retry later",
                            tablet.id
                        ))
                    })?;
                if node == self.me {
                    self.hand_over(tablet.id, target).await?;
                } else {
                    let addr = self.catalog.node_addr(node).ok_or_else(|| {
                        Error::Unavailable(format!("{node} has no known address"))
                    })?;
                    crate::replicator::hand_over_at(&addr, tablet.id, target).await?;
                }
            }
        }
        // The appointments must be applied here before the removal is checked.
        self.catalog.sync().await?;
        self.catalog.decommission(node).await
    }

    /// The node this router runs on.
    pub fn node(&self) -> NodeId {
        self.me
    }

    /// The metadata group's catalog.
    pub fn catalog(&self) -> &RaftCatalog {
        &self.catalog
    }

    /// Creates a table; its master starts serving it.
    pub async fn create_table(
        &self,
        spec: TableSpec,
        if_not_exists: bool,
    ) -> Result<(Arc<TableDesc>, bool)> {
        let (table, created) = self.catalog.create_table(spec, if_not_exists).await?;
        for tablet in table.tablets.iter().filter(|t| t.master == self.me) {
            self.mastered(tablet).await?;
        }
        Ok((table, created))
    }

    /// Drops a table and deletes its data. False when it did not exist and `if_exists`.
    pub async fn drop_table(&self, name: &str, if_exists: bool) -> Result<bool> {
        let table = match self.catalog.drop_table(name).await {
            Ok(t) => t,
            Err(Error::TableNotFound { .. }) if if_exists => return Ok(false),
            Err(e) => return Err(e),
        };
        self.purge(&table).await?;
        Ok(true)
    }

    /// Every table.
    pub fn tables(&self) -> Vec<Arc<TableDesc>> {
        self.catalog.tables()
    }

    /// The table of that name; when this node does not know it, first catch up with
    /// the metadata leader (a table created a moment ago through another node may not
    /// have reached this one yet).
    pub async fn table_synced(&self, name: &str) -> Result<Arc<TableDesc>> {
        match self.table(name) {
            Err(Error::TableNotFound { .. }) => {
                self.catalog.sync().await?;
                self.table(name)
            }
            found => found,
        }
    }

    /// The table of that name.
    pub fn table(&self, name: &str) -> Result<Arc<TableDesc>> {
        let table = self.catalog.table(name)?;
        if table.policy != Policy::Strong {
            return Err(Error::NotSupported {
                what: format!("KV requests on {:?} tables", table.policy),
            });
        }
        Ok(table)
    }

    /// The strong policy of this node.
    pub fn strong(&self) -> &StrongPolicy {
        &self.strong
    }

    /// Values of `keys` as of `at` (`None` = the newest `level` allows).
    pub async fn get(
        &self,
        table: &str,
        keys: Vec<Vec<u8>>,
        at: Option<Timestamp>,
        level: ReadLevel,
    ) -> Result<(Vec<Option<Versioned>>, Timestamp, std::time::Duration)> {
        let table = self.table_synced(table).await?;
        let tablet = single_tablet(&table, keys.iter().map(Vec::as_slice))?;
        if let ReadLevel::Follower(max) = level
            && self.strong.has_replica(tablet.id)
        {
            return self
                .strong
                .get_follower(&table, tablet.id, keys, at, max)
                .await;
        }
        let tablet = self.mastered(tablet).await?.id;
        let level = match level {
            ReadLevel::Follower(_) => ReadLevel::Committed,
            other => other,
        };
        let (values, ts) = self.strong.get(&table, tablet, keys, at, level).await?;
        Ok((values, ts, std::time::Duration::ZERO))
    }

    /// Whether a follower read of `table` at `key` can be served on this node.
    pub fn has_replica(&self, table: &str, key: &[u8]) -> bool {
        self.table(table)
            .is_ok_and(|t| self.strong.has_replica(t.tablet_for(key).id))
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
        let table = self.table_synced(table).await?;
        let tablet = range_tablet(&table, &range)?;
        let local_replica =
            matches!(level, ReadLevel::Follower(_)) && self.strong.has_replica(tablet.id);
        let tablet = if local_replica {
            tablet.id
        } else {
            self.mastered(tablet).await?.id
        };
        self.strong
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
        let table = self.table_synced(table).await?;
        let tablet = single_tablet(&table, mutations.iter().map(Mutation::key))?;
        let tablet = self.mastered(tablet).await?;
        let acks = opts.acks.unwrap_or(table.default_acks);
        self.strong
            .write(tablet, WriteOp::Batch(mutations), acks, opts.request)
            .await
    }

    /// Deletes every live key of `range`, atomically; the range must lie in one tablet.
    pub async fn delete_range(
        &self,
        table: &str,
        range: KeyRange,
        opts: WriteOptions,
    ) -> Result<Outcome> {
        let table = self.table_synced(table).await?;
        let tablet = self.mastered(range_tablet(&table, &range)?).await?;
        let acks = opts.acks.unwrap_or(table.default_acks);
        self.strong
            .write(tablet, WriteOp::DeleteRange(range), acks, opts.request)
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
        let table = self.table_synced(table).await?;
        let tablet = self.mastered(table.tablet_for(&key)).await?;
        let acks = opts.acks.unwrap_or(table.default_acks);
        self.strong
            .write(
                tablet,
                WriteOp::CompareAndSet { key, expected, new },
                acks,
                opts.request,
            )
            .await
    }

    /// Adds `delta` to the integer at `key`.
    pub async fn increment(
        &self,
        table: &str,
        key: Vec<u8>,
        delta: i64,
        opts: WriteOptions,
    ) -> Result<Outcome> {
        let table = self.table_synced(table).await?;
        let tablet = self.mastered(table.tablet_for(&key)).await?;
        let acks = opts.acks.unwrap_or(table.default_acks);
        self.strong
            .write(
                tablet,
                WriteOp::Increment { key, delta },
                acks,
                opts.request,
            )
            .await
    }

    /// The tablet `tablet` of `table`, if this node masters it (where to go if not).
    async fn mastered_by_id(&self, table: &str, tablet: TabletId) -> Result<()> {
        let table = self.table_synced(table).await?;
        let desc = table
            .tablets
            .iter()
            .find(|t| t.id == tablet)
            .ok_or_else(|| {
                Error::invalid(
                    "position.tablet_id",
                    format!("{tablet} is not a tablet of table {:?}", table.name),
                )
            })?;
        self.mastered(desc).await?;
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
        self.strong.write_status(tablet, epoch, seq).await
    }

    /// Reverts the write at `(epoch, seq)` of a tablet of `table` if it has not
    /// committed (see [`StrongPolicy::abort_write`]).
    pub async fn abort_write(
        &self,
        table: &str,
        tablet: TabletId,
        epoch: Epoch,
        seq: Seq,
    ) -> Result<WriteState> {
        self.mastered_by_id(table, tablet).await?;
        self.strong.abort_write(tablet, epoch, seq).await
    }

    /// Collects the garbage of one table now.
    pub async fn collect_garbage(&self, table: &str) -> Result<(u64, Timestamp)> {
        let table = self.table_synced(table).await?;
        if !table.tablets.iter().any(|t| t.master == self.me) {
            return Ok((0, self.strong.now()));
        }
        self.strong.collect_garbage(&table).await
    }
}
