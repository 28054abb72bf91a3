//! [`StrongPolicy`]: the `strong` policy as the node registers it — the control
//! plane the router calls through [`TabletPolicy`] (this file and [`super::life`]),
//! and the typed data plane the KV service calls ([`super::kv`]).

use super::StrongTablets;
use super::life::{self, TabletAction};
use super::types::StrongOptions;
use crate::catalog::{TableDesc, TableSpec, TabletDesc};
use crate::error::Result;
use crate::meta::RaftCatalog;
use crate::policy::{Locality, PolicyKind, TabletPolicy};
use datalayer_store::{Epoch, NodeId, TabletId};
use std::collections::HashMap;
use std::sync::Arc;

/// The `strong` policy of one node: which tablets it masters and follows, on top of
/// the node's strong machinery ([`StrongTablets`]: the writer, masterships, reads).
pub struct StrongPolicy {
    pub(super) catalog: Arc<RaftCatalog>,
    pub(super) tablets: Arc<StrongTablets>,
    pub(super) me: NodeId,
    /// Tablets this node follows, and the epoch it last followed them in.
    pub(super) followed: parking_lot::Mutex<HashMap<TabletId, Epoch>>,
    /// Serializes changes of what this node serves: reconciliation, a request that
    /// masters a tablet on demand, the appointment step of a hand-over.
    pub(super) reconciling: tokio::sync::Mutex<()>,
    /// Tablets whose recorded split this node is carrying on ([`StrongPolicy::resume_split`]).
    pub(super) resuming: Arc<parking_lot::Mutex<std::collections::HashSet<TabletId>>>,
    /// Recent requests of the tablets mastered here, for automatic splits.
    pub(super) loads: super::trigger::Loads,
    /// Tablets merged away whose own state this node has forgotten.
    pub(super) retired: parking_lot::Mutex<std::collections::HashSet<TabletId>>,
    /// Left tablets of neighbours found too big to merge, until they take requests.
    pub(super) too_big_to_merge: parking_lot::Mutex<std::collections::HashSet<TabletId>>,
    /// Tablets an automatic split or merge is under way for.
    pub(super) auto_splitting: parking_lot::Mutex<std::collections::HashSet<TabletId>>,
}

impl std::fmt::Debug for StrongPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StrongPolicy")
            .field("node", &self.me)
            .finish_non_exhaustive()
    }
}

impl StrongPolicy {
    /// The strong policy of node `me`, serving through `tablets` the tablets that
    /// `catalog` places here.
    pub fn new(catalog: Arc<RaftCatalog>, tablets: Arc<StrongTablets>) -> StrongPolicy {
        StrongPolicy {
            me: catalog.node(),
            catalog,
            tablets,
            followed: Default::default(),
            reconciling: Default::default(),
            resuming: Default::default(),
            loads: Default::default(),
            auto_splitting: Default::default(),
            retired: Default::default(),
            too_big_to_merge: Default::default(),
        }
    }

    /// The node's strong machinery.
    pub fn tablets(&self) -> &Arc<StrongTablets> {
        &self.tablets
    }

    /// The metadata group's catalog.
    pub fn catalog(&self) -> &Arc<RaftCatalog> {
        &self.catalog
    }

    /// The node this policy runs on.
    pub fn node(&self) -> NodeId {
        self.me
    }
}

#[async_trait::async_trait]
impl TabletPolicy for StrongPolicy {
    fn kind(&self) -> PolicyKind {
        PolicyKind::Strong
    }

    fn validate(&self, spec: &TableSpec) -> Result<()> {
        let factor = match spec.replication_factor {
            0 => crate::catalog::DEFAULT_REPLICATION_FACTOR,
            n => n,
        };
        StrongOptions::of(&spec.options)?.validate(factor)
    }

    async fn reconcile(&self, tablet: &TabletDesc) -> Result<()> {
        let _one = self.reconciling.lock().await;
        match life::plan(tablet, self.me) {
            TabletAction::Master => self.master_tablet(tablet).await,
            TabletAction::Follow => self.follow(tablet).await,
            TabletAction::LetGo => self.let_go(tablet).await,
        }
    }

    async fn purge(&self, table: &TableDesc) -> Result<()> {
        let _one = self.reconciling.lock().await;
        self.purge_table(table).await
    }

    fn locality(&self, tablet: &TabletDesc) -> Locality {
        if tablet.master == self.me {
            Locality::Local
        } else {
            Locality::Forward {
                node: tablet.master,
                addr: self.catalog.node_addr(tablet.master),
            }
        }
    }

    async fn hand_over_all(&self) -> usize {
        self.hand_over_every_tablet().await
    }

    fn still_serving(&self) -> bool {
        !self.tablets.masterships().is_empty()
    }

    async fn stop(&self) {
        self.tablets.stop().await;
    }
}
