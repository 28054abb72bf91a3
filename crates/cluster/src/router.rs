//! The range router: table → tablet → policy, and nothing of any policy's own.
//!
//! The node registers each policy it runs ([`Router::register`]); the router keeps
//! them by [`PolicyKind`] and resolves a table name to its descriptor, a key to the
//! tablet whose range holds it, and the tablet to its table's policy. It
//! orchestrates what is generic: table creation (the policy validates the options,
//! the catalog records the table, the policy starts serving it) and drop, keeping
//! this node's tablets in line with the metadata (each policy reconciles its own),
//! where a request is served, and the hand-over before a planned stop.

use crate::catalog::{Catalog, TableDesc, TableSpec};
use crate::error::{Error, RangeInfo, Result};
use crate::meta::RaftCatalog;
use crate::meta::changes::Changed;
use crate::policy::{Locality, PolicyKind, PolicyRef};
use datalayer_store::{NodeId, TabletId};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Routes requests of one node.
pub struct Router {
    catalog: Arc<RaftCatalog>,
    me: NodeId,
    policies: BTreeMap<PolicyKind, PolicyRef>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("node", &self.me)
            .field("policies", &self.policies.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Router {
    /// A router on this node over `catalog`, with no policy yet.
    pub fn new(catalog: Arc<RaftCatalog>) -> Router {
        Router {
            me: catalog.node(),
            catalog,
            policies: BTreeMap::new(),
        }
    }

    /// Registers a policy: tables of its kind can be created and are served.
    pub fn register(&mut self, policy: PolicyRef) {
        self.policies.insert(policy.kind(), policy);
    }

    /// The registered policy of `kind`; `NotSupported` when none is.
    pub fn policy(&self, kind: PolicyKind) -> Result<&PolicyRef> {
        self.policies.get(&kind).ok_or_else(|| Error::NotSupported {
            what: format!("{kind} tables"),
        })
    }

    /// Brings this node in line with the metadata: purges the data of dropped tables
    /// and has each policy serve, follow or let go of its tablets. Call once before
    /// serving requests; it then runs again whenever the metadata changes.
    pub async fn start(self: &Arc<Self>) -> Result<()> {
        // A tablet that cannot be reconciled yet (this node's metadata is behind a
        // newer master that already replicates to it) is retried on the next change;
        // it does not keep the node from serving the others.
        let first = self.reconcile().await;
        if let Err(e) = &first {
            tracing::warn!(error = %e, "some tablets wait for newer metadata");
        }
        let first_failed = first.is_err();
        let router = Arc::downgrade(self);
        let mut applied = self.catalog.applied();
        tokio::spawn(async move {
            // Each change reconciles the tablets it changed (most changes are
            // liveness heartbeats, which change none): a change costs what it
            // touched, whatever the number of tablets. After a failed round, or a
            // change of everything (a snapshot installed), every tablet is looked at.
            let mut full = first_failed;
            let mut dropped = None;
            while applied.changed().await.is_ok() {
                let Some(router) = router.upgrade() else {
                    return;
                };
                let changed = router.catalog.take_tablet_changes();
                let now_dropped = router.catalog.dropped().map_or(usize::MAX, |d| d.len());
                let result = match changed {
                    Changed::Tablets(ids) if !full => {
                        let purge = dropped != Some(now_dropped);
                        router.reconcile_tablets(&ids, purge).await
                    }
                    _ => router.reconcile().await,
                };
                full = result.is_err();
                dropped = result.is_ok().then_some(now_dropped);
                if let Err(e) = result {
                    tracing::warn!(error = %e, "reconciling tablets with the metadata failed");
                }
            }
        });
        Ok(())
    }

    /// Reconciles the tablets `ids` that still exist (and purges dropped tables'
    /// data first when `purge`).
    async fn reconcile_tablets(&self, ids: &BTreeSet<TabletId>, purge: bool) -> Result<()> {
        if purge {
            for dropped in self.catalog.dropped()? {
                self.policy(dropped.policy)?.purge(&dropped).await?;
            }
        }
        let mut failed = None;
        for id in ids {
            let (Some(table), Some(tablet)) =
                (self.catalog.table_of(*id), self.catalog.tablet(*id))
            else {
                continue; // gone (merged away, dropped)
            };
            let result = match self.policy(table.policy) {
                Ok(policy) => policy.reconcile(&tablet).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::warn!(tablet = %id, error = %e, "reconciling tablet failed");
                failed = Some(e);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Reconciles every tablet of every table (after purging dropped tables' data).
    async fn reconcile(&self) -> Result<()> {
        for dropped in self.catalog.dropped()? {
            self.policy(dropped.policy)?.purge(&dropped).await?;
        }
        let mut failed = None;
        for table in self.catalog.tables() {
            let policy = match self.policy(table.policy) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(table = %table.name, error = %e, "no policy serves the table here");
                    failed = Some(e);
                    continue;
                }
            };
            for tablet in &table.tablets {
                // One tablet's trouble does not hold up the others.
                if let Err(e) = policy.reconcile(tablet).await {
                    tracing::warn!(tablet = %tablet.id, error = %e, "reconciling tablet failed");
                    failed = Some(e);
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Where a request on `table` whose first key is `key` is served.
    pub async fn locate(&self, table: &str, key: &[u8]) -> Result<Locality> {
        let table = self.table_synced(table).await?;
        let tablet = table.tablet_for(key);
        Ok(self.policy(table.policy)?.locality(tablet))
    }

    /// Checks a single-key request on `table` at `key` that its client routed by
    /// tablet `routed` at `generation`: `RangeMismatch` with the current descriptors
    /// when this node's metadata has moved past that generation (a split or a merge;
    /// nothing is executed), after catching up with the metadata leader once when
    /// this node is the one behind (still behind: `StaleMetadata`, retryable).
    pub async fn check_route(
        &self,
        table: &str,
        key: &[u8],
        routed: TabletId,
        generation: u64,
    ) -> Result<()> {
        let mut synced = false;
        loop {
            let desc = self.table_synced(table).await?;
            let holder = desc.tablet_for(key);
            let current = desc.tablets.iter().find(|t| t.id == routed);
            let behind = current.is_none_or(|t| t.generation < generation);
            if !behind && holder.id == routed && holder.generation == generation {
                return Ok(());
            }
            if behind && !synced {
                self.catalog.sync().await?;
                synced = true;
                continue;
            }
            if current.is_some_and(|t| t.generation < generation) {
                return Err(Error::StaleMetadata { tablet: routed });
            }
            let info = |t: &crate::catalog::TabletDesc| RangeInfo {
                id: t.id,
                start: t.start.clone(),
                end: t.end.clone(),
                generation: t.generation,
                master: t.master,
                master_addr: self.catalog.node_addr(t.master),
            };
            let mut tablets = vec![info(holder)];
            tablets.extend(current.filter(|t| t.id != holder.id).map(info));
            return Err(Error::RangeMismatch {
                table: table.to_string(),
                routed,
                generation,
                tablets,
            });
        }
    }

    /// Has every policy hand what this node serves over to other replicas (a node
    /// stopping on purpose). Returns how many tablets were handed over.
    pub async fn hand_over_all(&self) -> usize {
        let mut handed = 0;
        for policy in self.policies.values() {
            handed += policy.hand_over_all().await;
        }
        handed
    }

    /// Whether some policy still serves tablets no other node can serve now.
    pub fn still_serving(&self) -> bool {
        self.policies.values().any(|p| p.still_serving())
    }

    /// Stops every policy.
    pub async fn stop(&self) {
        for policy in self.policies.values() {
            policy.stop().await;
        }
    }

    /// The node this router runs on.
    pub fn node(&self) -> NodeId {
        self.me
    }

    /// The metadata group's catalog.
    pub fn catalog(&self) -> &RaftCatalog {
        &self.catalog
    }

    /// Creates a table; its policy starts serving it here where the metadata says so.
    pub async fn create_table(
        &self,
        spec: TableSpec,
        if_not_exists: bool,
    ) -> Result<(Arc<TableDesc>, bool)> {
        let policy = self.policy(spec.policy)?;
        policy.validate(&spec)?;
        let (table, created) = self.catalog.create_table(spec, if_not_exists).await?;
        for tablet in &table.tablets {
            policy.reconcile(tablet).await?;
        }
        Ok((table, created))
    }

    /// Replaces a table's policy options, once its policy accepts them.
    pub async fn set_table_options(
        &self,
        name: &str,
        options: crate::policy::PolicyOptions,
    ) -> Result<Arc<TableDesc>> {
        let table = self.table_synced(name).await?;
        let spec = TableSpec {
            name: table.name.clone(),
            policy: table.policy,
            replication_factor: table.replication_factor,
            version_retention_secs: table.version_retention_secs,
            options: options.clone(),
            split_keys: Vec::new(),
        };
        self.policy(table.policy)?.validate(&spec)?;
        self.catalog.set_table_options(name, options).await
    }

    /// Drops a table and deletes its data. False when it did not exist and `if_exists`.
    pub async fn drop_table(&self, name: &str, if_exists: bool) -> Result<bool> {
        let table = match self.catalog.drop_table(name).await {
            Ok(t) => t,
            Err(Error::TableNotFound { .. }) if if_exists => return Ok(false),
            Err(e) => return Err(e),
        };
        self.policy(table.policy)?.purge(&table).await?;
        Ok(true)
    }

    /// Every table.
    pub fn tables(&self) -> Vec<Arc<TableDesc>> {
        self.catalog.tables()
    }

    /// The table of that name, catching up with the metadata leader first when this
    /// node does not know it.
    pub async fn table_synced(&self, name: &str) -> Result<Arc<TableDesc>> {
        self.catalog.table_synced(name).await
    }

    /// The table of that name.
    pub fn table(&self, name: &str) -> Result<Arc<TableDesc>> {
        self.catalog.table(name)
    }
}
