//! The policy seam: what every table policy does for the node it runs on.
//!
//! A policy (`strong` today; `crdt`, `timeseries` and `search` later) is registered
//! by the node, never named by the router (GreptimeDB's `RegionEngine` and
//! `RegionServer::register_engine`). [`TabletPolicy`] is its control plane: the
//! router resolves table → tablet → policy and asks it to validate a new table's
//! options, to bring this node's replica of a tablet in line with the metadata, to
//! purge a dropped table, where a request for a tablet is served, to hand everything
//! over before a planned stop, and to stop. [`ControllerHook`] is its metadata-side
//! work, which the metadata leader's controller runs (for `strong`: failover).
//!
//! The data plane is typed per policy: each policy has its own gRPC service, which
//! holds that policy's own object (the KV service holds the strong policy).
//!
//! Invariants:
//! - `cluster` never depends on a policy crate: policy crates depend on `cluster`
//!   for this trait, the descriptors and the strong write path.
//! - A table's options are the policy's own, carried opaquely in the metadata
//!   ([`PolicyOptions`]); only the policy reads them.
//! - A table of a kind no registered policy serves cannot be created.

use crate::catalog::{TableDesc, TableSpec, TabletDesc};
use crate::error::Result;
use crate::meta::RaftCatalog;
use datalayer_store::{NodeId, TabletId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;

/// How a table's tablets are replicated and served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PolicyKind {
    /// Ordered rows with one master per tablet.
    Strong,
    /// Convergent replicated data types.
    Crdt,
    /// Samples of series in weekly chunks.
    Timeseries,
    /// Documents with a full-text index.
    Search,
}

impl PolicyKind {
    /// Whether the table's data lives in strong tablets (one master per tablet, an
    /// oplog, acks, failover): `strong` itself and the policies layered on it
    /// (`timeseries`, `search`), whose tablets the strong machinery serves.
    pub fn on_strong_tablets(self) -> bool {
        matches!(
            self,
            PolicyKind::Strong | PolicyKind::Timeseries | PolicyKind::Search
        )
    }

    /// The kind of that name (as [`Display`](std::fmt::Display) writes it).
    pub fn parse(name: &str) -> Option<PolicyKind> {
        [
            PolicyKind::Strong,
            PolicyKind::Crdt,
            PolicyKind::Timeseries,
            PolicyKind::Search,
        ]
        .into_iter()
        .find(|k| k.to_string() == name)
    }
}

impl std::fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PolicyKind::Strong => "strong",
            PolicyKind::Crdt => "crdt",
            PolicyKind::Timeseries => "timeseries",
            PolicyKind::Search => "search",
        })
    }
}

/// A table's policy options: a JSON object only its policy reads (`null` takes
/// every default). The metadata stores it as given once the policy validated it.
///
/// Versioning rule: a policy may add fields (with defaults, so options written by
/// an older binary still parse) but never changes the meaning of one or reuses a
/// name; a field it no longer reads stays accepted.
pub type PolicyOptions = serde_json::Value;

/// Where a request for a tablet is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Locality {
    /// By this node.
    Local,
    /// By another node; `addr` is where it serves gRPC, if known.
    Forward {
        /// The node that serves it.
        node: NodeId,
        /// Its gRPC address.
        addr: Option<String>,
    },
}

/// The control plane of one policy on one node.
#[async_trait::async_trait]
pub trait TabletPolicy: Send + Sync + 'static {
    /// The kind of table this policy serves.
    fn kind(&self) -> PolicyKind;

    /// Checks a table's spec (its options above all) before the table is created;
    /// an error changes nothing.
    fn validate(&self, spec: &TableSpec) -> Result<()>;

    /// Brings this node's replica of `tablet` in line with its descriptor: serve it,
    /// follow it, or let it go when the metadata no longer places it here.
    async fn reconcile(&self, tablet: &TabletDesc) -> Result<()>;

    /// Deletes this node's data of a dropped table.
    async fn purge(&self, table: &TableDesc) -> Result<()>;

    /// Where a request for `tablet` is served.
    fn locality(&self, tablet: &TabletDesc) -> Locality;

    /// Hands what this node serves over to other replicas before a planned stop;
    /// returns how many tablets were handed over.
    async fn hand_over_all(&self) -> usize;

    /// Whether this node still serves tablets no other node can serve now (a master
    /// whose hand-over failed): a stopping node then lets their requests in flight
    /// finish before it leaves.
    fn still_serving(&self) -> bool;

    /// Stops serving: nothing of the policy runs on this node afterwards.
    async fn stop(&self);
}

/// A registered policy.
pub type PolicyRef = Arc<dyn TabletPolicy>;

/// What the controller saw of the nodes, for a [`ControllerHook`].
#[derive(Debug, Clone)]
pub struct ControllerView {
    /// Nodes that answered the last liveness ping round (the leader among them).
    pub live: BTreeSet<NodeId>,
    /// Wall-clock ms at which this node's metadata leadership was first noticed:
    /// nobody could heartbeat during the election before it.
    pub leading_since_ms: u64,
}

/// A policy's share of the metadata leader's controller: run on the leader only.
#[async_trait::async_trait]
pub trait ControllerHook: Send + Sync + 'static {
    /// The kind of table whose tablets this hook looks after.
    fn kind(&self) -> PolicyKind;

    /// Whether this hook looks after tablets of tables of `kind` (its own kind, and
    /// for `strong` the kinds layered on it).
    fn serves(&self, kind: PolicyKind) -> bool {
        kind == self.kind()
    }

    /// Once per controller tick, before membership and placement: react to nodes
    /// that went silent (for `strong`, fence their masterships and appoint others).
    async fn on_tick(&self, catalog: &RaftCatalog, view: &ControllerView);

    /// Moves the service of `tablet` off `from` to `to` (a placement step; for
    /// `strong`, a planned hand-over of the mastership).
    async fn hand_over(
        &self,
        catalog: &RaftCatalog,
        tablet: TabletId,
        from: NodeId,
        to: NodeId,
    ) -> Result<()>;
}

/// A registered controller hook.
pub type ControllerHookRef = Arc<dyn ControllerHook>;
