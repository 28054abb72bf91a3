//! Failover of strong tablets, the strong policy's share of the metadata leader's
//! controller ([`StrongFailover`], a [`ControllerHook`]): silent masters are fenced
//! by a new liveness epoch and the most advanced live in-sync replica is appointed
//! (DESIGN §6), and placement's hand-overs go through the master.

use super::protocol::{ReplicaPosition, choose_master};
use super::service;
use crate::catalog::{TableDesc, TabletDesc};
use crate::error::Error;
use crate::error::Result;
use crate::meta::liveness::wall_ms;
use crate::meta::{Liveness, LivenessEpoch, MetaCommand, MetaResponse, MetaState, RaftCatalog};
use crate::policy::{ControllerHook, ControllerView, PolicyKind};
use datalayer_store::{NodeId, TabletId};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// The strong policy's controller hook.
#[derive(Debug, Default)]
pub struct StrongFailover {
    /// The last look at the tablets, reused while they and the liveness epochs stay
    /// as they were: an idle controller tick costs O(nodes), not O(tablets).
    looked: Mutex<Option<Masterships>>,
}

/// Who masters what, as a failover pass reads it from the metadata.
#[derive(Debug)]
struct Masterships {
    /// The tables it was read from.
    tables: imbl::OrdMap<String, Arc<TableDesc>>,
    /// Every node's liveness epoch then.
    epochs: Vec<(NodeId, LivenessEpoch)>,
    /// Nodes that master a tablet at their current liveness epoch.
    serving: BTreeSet<NodeId>,
    /// Tablets whose master's epoch moved on.
    orphans: Vec<TabletDesc>,
}

impl StrongFailover {
    /// The masterships of `state`, from the last look when nothing they depend on
    /// has changed since.
    fn masterships(&self, state: &MetaState) -> (BTreeSet<NodeId>, Vec<TabletDesc>) {
        let epochs: Vec<(NodeId, LivenessEpoch)> =
            state.liveness.iter().map(|(n, l)| (*n, l.epoch)).collect();
        let mut looked = self.looked.lock();
        if let Some(m) = looked.as_ref()
            && m.tables.ptr_eq(&state.tables)
            && m.epochs == epochs
        {
            return (m.serving.clone(), m.orphans.clone());
        }
        let (serving, orphans) = (serving(state), orphans(state));
        *looked = Some(Masterships {
            tables: state.tables.clone(),
            epochs,
            serving: serving.clone(),
            orphans: orphans.clone(),
        });
        (serving, orphans)
    }
}

#[async_trait::async_trait]
impl ControllerHook for StrongFailover {
    fn kind(&self) -> PolicyKind {
        PolicyKind::Strong
    }

    fn serves(&self, kind: PolicyKind) -> bool {
        kind.on_strong_tablets()
    }

    async fn on_tick(&self, catalog: &RaftCatalog, view: &ControllerView) {
        failover(self, catalog, &view.live, view.leading_since_ms).await;
    }

    async fn hand_over(
        &self,
        catalog: &RaftCatalog,
        tablet: TabletId,
        from: NodeId,
        to: NodeId,
    ) -> Result<()> {
        let addr = catalog
            .node_addr(from)
            .ok_or(Error::NoAddress { node: from })?;
        service::hand_over_at(catalog.pool(), &addr, tablet, to).await
    }
}

/// Ends the masterships of silent nodes and appoints new masters (DESIGN §6): the
/// runtime of [`fence_among`], [`orphans`], [`asks`] and [`choose_master`].
async fn failover(
    hook: &StrongFailover,
    catalog: &RaftCatalog,
    live: &BTreeSet<NodeId>,
    leading_since_ms: u64,
) {
    let now = wall_ms();
    let lease_ms = catalog.failover_timeout().as_millis() as u64;
    let mut state = catalog.state();
    let (serving, mut orphans) = hook.masterships(&state);
    let mut fenced = false;
    for (node, seen) in fence_among(&state, serving, live, now, lease_ms, leading_since_ms) {
        tracing::warn!(%node, epoch = %seen.epoch, "node's liveness lapsed: ending its masterships");
        match catalog
            .propose(MetaCommand::IncrementEpoch { node, seen }, false)
            .await
        {
            Ok(MetaResponse::Done) => fenced = true,
            Ok(other) => tracing::info!(%node, answer = ?other, "liveness epoch not incremented"),
            Err(e) => tracing::warn!(%node, error = %e, "liveness epoch not incremented"),
        }
    }
    if fenced {
        state = catalog.state();
        orphans = hook.masterships(&state).1;
    }
    if orphans.is_empty() {
        return;
    }
    let mut positions: HashMap<TabletId, Vec<ReplicaPosition>> = HashMap::new();
    for (node, tablets) in asks(&state, &orphans, live, now) {
        let Some(addr) = state.nodes.get(&node).map(|n| n.grpc_addr.clone()) else {
            continue;
        };
        match service::replica_status(catalog.pool(), &addr, &tablets).await {
            Ok(answers) => {
                for (tablet, last_epoch, log_end) in answers {
                    positions.entry(tablet).or_default().push(ReplicaPosition {
                        node,
                        last_epoch,
                        log_end,
                    });
                }
            }
            Err(e) => tracing::debug!(%node, error = %e, "replica status failed"),
        }
    }
    for tb in orphans {
        let candidates = positions.remove(&tb.id).unwrap_or_default();
        let Some(next) = choose_master(&candidates) else {
            tracing::warn!(tablet = %tb.id, master = %tb.master, in_sync = ?tb.in_sync,
                "the master's liveness lapsed and no in-sync replica is live: the tablet waits");
            continue;
        };
        tracing::warn!(tablet = %tb.id, old = %tb.master, new = %next, epoch = tb.master_epoch.0 + 1,
            "appointing the most advanced live in-sync replica");
        if let Err(e) = catalog.appoint_master(tb.id, tb.master_epoch, next).await {
            tracing::warn!(tablet = %tb.id, error = %e, "failover proposal failed");
        }
    }
}

/// The strong tablets of the metadata.
fn strong_tablets(state: &MetaState) -> impl Iterator<Item = &TabletDesc> {
    state
        .tables
        .values()
        .filter(|t| t.policy.on_strong_tablets())
        .flat_map(|t| t.tablets.iter())
}

/// Masters to fence, with the liveness record each was seen at (the increment
/// compares and sets on it).
///
/// A master's node is silent when its liveness record has expired by this node's
/// clock (`now_ms`) and it missed the last ping round, or when its record has stayed
/// expired for a whole lease (it answers pings but cannot heartbeat); the time
/// before this node led does not count, as nobody could heartbeat during the
/// election. (The runtime keeps `serving` between passes: [`fence_among`].)
#[cfg(test)]
pub(super) fn to_fence(
    state: &MetaState,
    live: &BTreeSet<NodeId>,
    now_ms: u64,
    lease_ms: u64,
    leading_since_ms: u64,
) -> Vec<(NodeId, Liveness)> {
    fence_among(
        state,
        serving(state),
        live,
        now_ms,
        lease_ms,
        leading_since_ms,
    )
}

/// Nodes that master a strong tablet at their current liveness epoch.
fn serving(state: &MetaState) -> BTreeSet<NodeId> {
    strong_tablets(state)
        .filter(|tb| tb.master_liveness == state.liveness(tb.master).epoch)
        .map(|tb| tb.master)
        .collect()
}

/// Masters to fence among the `serving` ones (those of [`serving`]): see `to_fence`.
fn fence_among(
    state: &MetaState,
    serving: BTreeSet<NodeId>,
    live: &BTreeSet<NodeId>,
    now_ms: u64,
    lease_ms: u64,
    leading_since_ms: u64,
) -> Vec<(NodeId, Liveness)> {
    serving
        .into_iter()
        .map(|node| (node, state.liveness(node)))
        .filter(|(node, seen)| {
            let lapsed_for = now_ms.saturating_sub(seen.expiration_ms.max(leading_since_ms));
            seen.expired(now_ms) && (!live.contains(node) || lapsed_for > lease_ms)
        })
        .collect()
}

/// Tablets whose master's liveness epoch moved on: each needs a new master.
pub(super) fn orphans(state: &MetaState) -> Vec<TabletDesc> {
    strong_tablets(state)
        .filter(|tb| tb.master_liveness != state.liveness(tb.master).epoch)
        .cloned()
        .collect()
}

/// Which nodes to ask for their replicas' positions, each once for every orphan it
/// may take: the live in-sync replicas with a current liveness record (the old
/// master too, once it is back).
pub(super) fn asks(
    state: &MetaState,
    orphans: &[TabletDesc],
    live: &BTreeSet<NodeId>,
    now_ms: u64,
) -> BTreeMap<NodeId, Vec<TabletId>> {
    let current = |n: &NodeId| live.contains(n) && !state.liveness(*n).expired(now_ms);
    let mut asks: BTreeMap<NodeId, Vec<TabletId>> = BTreeMap::new();
    for tb in orphans {
        for r in tb.in_sync.iter().filter(|r| current(r)) {
            asks.entry(*r).or_default().push(tb.id);
        }
    }
    asks
}

#[cfg(test)]
mod tests;
