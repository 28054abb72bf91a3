//! The metadata leader's controller. Two loops run on every node and act only on the
//! leader:
//!
//! - liveness: pings every registered node and records who answered;
//! - control: the masterships of silent nodes end and other replicas are appointed
//!   ([`failover`]); every registered node becomes a learner of the group, caught-up
//!   learners are promoted until the group has its voters, a voter unreachable past
//!   its timeout gives its place to a live learner; replicas move off dead nodes and
//!   even out across live ones ([`super::placement`]).
//!
//! The loops are separate so a slow ping round never delays failover or membership
//! work.

use super::liveness::wall_ms;
use super::placement::{self, Action};
use super::raft_catalog::RaftCatalog;
use crate::catalog::TabletDesc;
use crate::strong::protocol::{ReplicaPosition, choose_master};
use datalayer_store::{NodeId, TabletId};
use openraft::{BasicNode, ChangeMembers};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How often the controller looks.
const TICK: Duration = Duration::from_millis(150);
/// A learner within this many entries of the leader's log counts as caught up.
const CAUGHT_UP_ENTRIES: u64 = 16;
/// How long a liveness ping may take.
const PING_TIMEOUT: Duration = Duration::from_millis(250);

/// What the leader saw of the nodes, shared by its two loops.
#[derive(Debug, Clone, Default)]
struct Seen {
    /// When this node's leadership was first noticed; `None` when not leading.
    leading_since: Option<Instant>,
    /// The same on the wall clock (ms).
    leading_since_ms: u64,
    /// Completed ping rounds since then.
    rounds: u64,
    /// Nodes that answered the last round.
    live: BTreeSet<u64>,
    /// When each node last answered (a round's start).
    last_seen: HashMap<u64, Instant>,
}

impl Seen {
    /// How long `node` has been silent: never seen counts from the leadership's start.
    fn silent_for(&self, node: u64, now: Instant) -> Duration {
        if self.live.contains(&node) {
            return Duration::ZERO;
        }
        let since = self
            .last_seen
            .get(&node)
            .copied()
            .or(self.leading_since)
            .unwrap_or(now);
        now.saturating_duration_since(since)
    }
}

/// Runs until the catalog is dropped.
pub async fn run(catalog: Weak<RaftCatalog>) {
    let liveness = Arc::new(Mutex::new(Seen::default()));
    tokio::spawn(watch_liveness(catalog.clone(), liveness.clone()));
    let handing_over: Arc<Mutex<HashSet<TabletId>>> = Default::default();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(catalog) = catalog.upgrade() else {
            return;
        };
        if let Err(e) = step(&catalog, &liveness, &handing_over).await {
            tracing::warn!(error = %e, "controller step");
        }
    }
}

fn leading(catalog: &RaftCatalog) -> bool {
    catalog.raft().metrics().borrow().current_leader == Some(catalog.node().0)
}

/// The liveness loop: while leading, pings every node.
async fn watch_liveness(catalog: Weak<RaftCatalog>, liveness: Arc<Mutex<Seen>>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(catalog) = catalog.upgrade() else {
            return;
        };
        if !leading(&catalog) {
            *liveness.lock() = Seen::default();
            continue;
        }
        let started = Instant::now();
        {
            let mut l = liveness.lock();
            if l.leading_since.is_none() {
                l.leading_since = Some(started);
                l.leading_since_ms = wall_ms();
            }
        }
        let live = probe(&catalog).await;
        let mut l = liveness.lock();
        if l.leading_since.is_none() {
            continue; // leadership lost meanwhile
        }
        for id in &live {
            l.last_seen.insert(*id, started);
        }
        l.live = live;
        l.rounds += 1;
    }
}

/// Pings every registered node; returns the ids that answered (this node included).
async fn probe(catalog: &RaftCatalog) -> BTreeSet<u64> {
    let mut pings = tokio::task::JoinSet::new();
    for node in catalog.state().nodes.into_values() {
        if node.id == catalog.node() {
            continue;
        }
        pings.spawn(async move {
            (
                node.id.0,
                super::network::ping(&node.grpc_addr, PING_TIMEOUT).await,
            )
        });
    }
    let mut live = BTreeSet::from([catalog.node().0]);
    while let Some(Ok((id, up))) = pings.join_next().await {
        if up {
            live.insert(id);
        }
    }
    live
}

async fn step(
    catalog: &Arc<RaftCatalog>,
    liveness: &Mutex<Seen>,
    handing_over: &Arc<Mutex<HashSet<TabletId>>>,
) -> Result<(), String> {
    if !leading(catalog) {
        return Ok(());
    }
    let now = Instant::now();
    let seen = {
        let l = liveness.lock();
        if l.rounds == 0 {
            return Ok(()); // no liveness round yet: nothing is known
        }
        l.clone()
    };
    let live = seen.live.clone();
    let silent_for = |n: u64| seen.silent_for(n, now);
    failover(catalog, &live, seen.leading_since_ms).await;
    if membership(catalog, &live, &silent_for).await? {
        return Ok(());
    }
    let dead_after = catalog.dead_node_timeout();
    // One copy of the metadata for the whole plan.
    let state = catalog.state();
    let nodes = placement::Nodes {
        live: live.iter().map(|n| NodeId(*n)).collect(),
        dead: state
            .nodes
            .keys()
            .copied()
            .filter(|n| silent_for(n.0) > dead_after)
            .collect(),
    };
    let actions = placement::plan(&state, &nodes, catalog.rebalance());
    for action in actions {
        carry_out(catalog, action, handing_over).await;
    }
    Ok(())
}

/// Takes one placement step. A refused proposal (the metadata moved on) is retried
/// from fresh metadata on a later tick.
async fn carry_out(
    catalog: &Arc<RaftCatalog>,
    action: Action,
    handing_over: &Arc<Mutex<HashSet<TabletId>>>,
) {
    let done = match &action {
        Action::Move { tablet, from, to } => {
            tracing::info!(tablet = %tablet.id, %from, %to, "moving a replica");
            catalog.move_replica(tablet, *from, *to).await
        }
        Action::Add { tablet, to } => {
            tracing::info!(tablet = %tablet.id, %to, "adding a replica to an under-replicated tablet");
            catalog.add_replica(tablet, *to).await
        }
        Action::Drop { tablet, node } => {
            tracing::info!(tablet = %tablet.id, %node, "removing a replica that moved");
            catalog.drop_replica(tablet, *node).await
        }
        Action::HandOver { tablet, master, to } => {
            // A hand-over waits for the target to catch up: never hold the loop.
            if !handing_over.lock().insert(tablet.id) {
                return;
            }
            let Some(addr) = catalog.node_addr(*master) else {
                handing_over.lock().remove(&tablet.id);
                return;
            };
            tracing::info!(tablet = %tablet.id, %master, %to, "handing a master over");
            let (id, to, handing_over) = (tablet.id, *to, handing_over.clone());
            tokio::spawn(async move {
                if let Err(e) = crate::replicator::hand_over_at(&addr, id, to).await {
                    tracing::warn!(tablet = %id, error = %e, "hand-over failed");
                }
                handing_over.lock().remove(&id);
            });
            return;
        }
    };
    if let Err(e) = done {
        tracing::info!(?action, error = %e, "placement step refused; retried with fresh metadata");
    }
}

/// Group membership: adds learners, removes decommissioned nodes, promotes learners,
/// replaces dead voters. True when it proposed a change.
async fn membership(
    catalog: &RaftCatalog,
    live: &BTreeSet<u64>,
    silent_for: &(dyn Fn(u64) -> Duration + Sync),
) -> Result<bool, String> {
    let raft = catalog.raft();
    let m = raft.metrics().borrow().clone();
    let membership = m.membership_config.membership().clone();
    let state = catalog.state();
    for node in state.nodes.values() {
        let known = membership.get_node(&node.id.0);
        if known.is_none_or(|n| n.addr != node.grpc_addr)
            && !membership.voter_ids().any(|v| v == node.id.0)
        {
            tracing::info!(node = %node.id, addr = %node.grpc_addr, "adding node to the metadata group as a learner");
            raft.add_learner(
                node.id.0,
                BasicNode {
                    addr: node.grpc_addr.clone(),
                },
                false,
            )
            .await
            .map_err(|e| format!("adding learner {}: {e}", node.id))?;
            return Ok(true);
        }
    }
    // Members no longer registered (decommissioned) leave the group.
    let registered: BTreeSet<u64> = state.nodes.keys().map(|n| n.0).collect();
    let gone: BTreeSet<u64> = membership
        .nodes()
        .map(|(id, _)| *id)
        .filter(|id| !registered.contains(id) && *id != catalog.node().0)
        .collect();
    if !gone.is_empty() {
        tracing::info!(
            ?gone,
            "removing decommissioned nodes from the metadata group"
        );
        raft.change_membership(ChangeMembers::RemoveVoters(gone.clone()), true)
            .await
            .map_err(|e| format!("removing voters {gone:?}: {e}"))?;
        raft.change_membership(ChangeMembers::RemoveNodes(gone.clone()), false)
            .await
            .map_err(|e| format!("removing members {gone:?}: {e}"))?;
        return Ok(true);
    }
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let last = m.last_log_index.unwrap_or(0);
    let replication = m.replication.unwrap_or_default();
    let ready_learner = membership.learner_ids().find(|l| {
        let matched = replication
            .get(l)
            .cloned()
            .flatten()
            .map_or(0, |id| id.index);
        live.contains(l) && matched + CAUGHT_UP_ENTRIES >= last
    });
    let Some(learner) = ready_learner else {
        return Ok(false);
    };
    if voters.len() < catalog.target_voters() {
        tracing::info!(node = learner, "promoting caught-up learner to voter");
        raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([learner])), false)
            .await
            .map_err(|e| format!("promoting learner {learner}: {e}"))?;
        return Ok(true);
    }
    // A voter silent past the timeout gives its place (the leader answers itself).
    let dead_after = catalog.dead_voter_timeout();
    let dead = voters.iter().copied().find(|v| silent_for(*v) > dead_after);
    if let Some(dead) = dead {
        let mut next = voters.clone();
        next.remove(&dead);
        next.insert(learner);
        tracing::warn!(
            dead,
            learner,
            "replacing a dead voter of the metadata group with a live learner"
        );
        // `retain`: the dead voter stays a learner and catches up when it returns.
        raft.change_membership(ChangeMembers::ReplaceAllVoters(next), true)
            .await
            .map_err(|e| format!("replacing voter {dead} with {learner}: {e}"))?;
        return Ok(true);
    }
    Ok(false)
}

/// Ends the masterships of silent nodes and appoints new masters (DESIGN §6).
///
/// A master's node is silent when its liveness record has expired by this node's
/// clock and it missed the last ping round, or when its record has stayed expired for
/// a whole lease (it answers pings but cannot heartbeat); the time before this node
/// led does not count, as nobody could heartbeat during the election. Its liveness
/// epoch is incremented (compare-and-set on the record read), which ends its
/// masterships. Each tablet whose master's epoch moved on gets the live in-sync
/// replica with the highest `(last epoch, log end)` among those with a current record
/// (the old master too, once it is back), in the next master epoch. A tablet with no
/// such replica waits for one.
async fn failover(catalog: &RaftCatalog, live: &BTreeSet<u64>, leading_since_ms: u64) {
    let now = wall_ms();
    let lease_ms = catalog.failover_timeout().as_millis() as u64;
    let mut state = catalog.state();
    let serving: BTreeSet<NodeId> = state
        .tables
        .values()
        .flat_map(|t| t.tablets.iter())
        .filter(|tb| tb.master_liveness == state.liveness(tb.master).epoch)
        .map(|tb| tb.master)
        .collect();
    let mut fenced = false;
    for node in serving {
        let seen = state.liveness(node);
        let lapsed_for = now.saturating_sub(seen.expiration_ms.max(leading_since_ms));
        if !seen.expired(now) || (live.contains(&node.0) && lapsed_for <= lease_ms) {
            continue;
        }
        tracing::warn!(%node, epoch = seen.epoch, "node's liveness lapsed: ending its masterships");
        match catalog
            .propose(
                super::state::MetaCommand::IncrementEpoch { node, seen },
                false,
            )
            .await
        {
            Ok(super::state::MetaResponse::Done) => fenced = true,
            Ok(other) => tracing::info!(%node, answer = ?other, "liveness epoch not incremented"),
            Err(e) => tracing::warn!(%node, error = %e, "liveness epoch not incremented"),
        }
    }
    if fenced {
        state = catalog.state();
    }
    let current = |n: &NodeId| live.contains(&n.0) && !state.liveness(*n).expired(now);
    let orphans: Vec<TabletDesc> = state
        .tables
        .values()
        .flat_map(|t| t.tablets.iter())
        .filter(|tb| tb.master_liveness != state.liveness(tb.master).epoch)
        .cloned()
        .collect();
    if orphans.is_empty() {
        return;
    }
    // Ask each live candidate once for all the tablets it may take.
    let mut asks: BTreeMap<NodeId, Vec<TabletId>> = BTreeMap::new();
    for tb in &orphans {
        for r in tb.in_sync.iter().filter(|r| current(r)) {
            asks.entry(*r).or_default().push(tb.id);
        }
    }
    let mut positions: HashMap<TabletId, Vec<ReplicaPosition>> = HashMap::new();
    for (node, tablets) in asks {
        let Some(addr) = state.nodes.get(&node).map(|n| n.grpc_addr.clone()) else {
            continue;
        };
        match crate::replicator::replica_status(&addr, &tablets).await {
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
