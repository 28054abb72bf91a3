//! The metadata leader's controller. Two loops run on every node and act only on the
//! leader:
//!
//! - liveness: pings every registered node and records who answered;
//! - control: each policy's hook reacts to silent nodes (for `strong`, the
//!   masterships of silent nodes end and other replicas are appointed:
//!   `strong::failover`); every registered node becomes a learner of the group, caught-up
//!   learners are promoted until the group has its voters, a voter unreachable past
//!   its timeout gives its place to a live learner; replicas move off dead nodes and
//!   even out across live ones ([`super::placement`]).
//!
//! The loops are separate so a slow ping round never delays failover or membership
//! work.

use super::liveness::wall_ms;
use super::membership::{self, MembershipChange, MembershipView};
use super::placement::{self, Action};
use super::raft_catalog::RaftCatalog;
use crate::catalog::TabletDesc;
use crate::error::Result;
use crate::policy::{ControllerHookRef, ControllerView};
use datalayer_store::{NodeId, TabletId};
use openraft::{BasicNode, ChangeMembers};
use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How often the controller looks.
const TICK: Duration = Duration::from_millis(150);
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
    let planned: Mutex<Option<Planned>> = Mutex::new(None);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(catalog) = catalog.upgrade() else {
            return;
        };
        if let Err(e) = step(&catalog, &liveness, &handing_over, &planned).await {
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
    for node in catalog.state().nodes.values().cloned() {
        if node.id == catalog.node() {
            continue;
        }
        let pool = catalog.pool().clone();
        pings.spawn(async move {
            (
                node.id.0,
                super::network::ping(&pool, &node.grpc_addr, PING_TIMEOUT).await,
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
    planned: &Mutex<Option<Planned>>,
) -> Result<()> {
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
    let view = ControllerView {
        live: live.iter().map(|n| NodeId(*n)).collect(),
        leading_since_ms: seen.leading_since_ms,
    };
    for hook in catalog.controller_hooks() {
        hook.on_tick(catalog, &view).await;
    }
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
    // A plan that found nothing to do is not made again until its inputs change
    // (most metadata changes are heartbeats, which change neither tables nor nodes):
    // the leader's idle cost does not grow with the tablets.
    // A plan reads every tablet: after one that found nothing to do, the next waits
    // nine times as long as it took, so that plans take at most a tenth of the
    // leader's time however many tablets there are (with 100,000 tablets a plan
    // takes a few hundred ms; with 1,000, about a ms, and the wait is below a tick).
    {
        let last = planned.lock();
        if let Some(last) = last.as_ref()
            && ((last.tables.ptr_eq(&state.tables)
                && last.members.ptr_eq(&state.nodes)
                && last.nodes == nodes)
                || Instant::now() < last.next_at)
        {
            return Ok(());
        }
    }
    let started = Instant::now();
    let actions = placement::plan(&state, &nodes, catalog.rebalance());
    *planned.lock() = actions.is_empty().then(|| Planned {
        tables: state.tables.clone(),
        members: state.nodes.clone(),
        nodes: nodes.clone(),
        next_at: started + started.elapsed() * 10,
    });
    for action in actions {
        carry_out(catalog, action, handing_over).await;
    }
    Ok(())
}

/// The inputs of the last placement plan that found nothing to do.
struct Planned {
    tables: imbl::OrdMap<String, Arc<crate::catalog::TableDesc>>,
    members: imbl::OrdMap<NodeId, super::NodeInfo>,
    nodes: placement::Nodes,
    /// No plan before this, even if the inputs change.
    next_at: Instant,
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
            tracing::info!(tablet = %tablet.id, %master, %to, "handing a master over");
            let Some(hook) = hook_for(catalog, tablet) else {
                handing_over.lock().remove(&tablet.id);
                return;
            };
            let (id, master, to, handing_over) = (tablet.id, *master, *to, handing_over.clone());
            let catalog = catalog.clone();
            tokio::spawn(async move {
                if let Err(e) = hook.hand_over(&catalog, id, master, to).await {
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

/// The controller hook of the policy of `tablet`'s table.
fn hook_for(catalog: &RaftCatalog, tablet: &TabletDesc) -> Option<ControllerHookRef> {
    let kind = catalog
        .state()
        .tables
        .values()
        .find(|t| t.id == tablet.table)?
        .policy;
    catalog
        .controller_hooks()
        .into_iter()
        .find(|h| h.serves(kind))
}

/// Group membership: carries out the next change [`membership::decide`] sees.
/// True when it proposed one.
async fn membership(
    catalog: &RaftCatalog,
    live: &BTreeSet<u64>,
    silent_for: &(dyn Fn(u64) -> Duration + Sync),
) -> Result<bool> {
    let raft = catalog.raft();
    let m = raft.metrics().borrow().clone();
    let config = m.membership_config.membership().clone();
    let dead_after = catalog.dead_voter_timeout();
    let view = MembershipView {
        me: catalog.node().0,
        voters: config.voter_ids().collect(),
        learners: config.learner_ids().collect(),
        members: config
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect(),
        registered: catalog
            .state()
            .nodes
            .values()
            .map(|n| (n.id.0, n.grpc_addr.clone()))
            .collect(),
        live: live.clone(),
        dead: config
            .voter_ids()
            .filter(|v| silent_for(*v) > dead_after)
            .collect(),
        matched: m
            .replication
            .unwrap_or_default()
            .into_iter()
            .map(|(id, log)| (id, log.map_or(0, |l| l.index)))
            .collect(),
        last_log: m.last_log_index.unwrap_or(0),
        target_voters: catalog.target_voters(),
    };
    let Some(change) = membership::decide(&view) else {
        return Ok(false);
    };
    match change {
        MembershipChange::AddLearner { id, addr } => {
            tracing::info!(node = id, %addr, "adding node to the metadata group as a learner");
            raft.add_learner(id, BasicNode { addr }, false)
                .await
                .map_err(|e| failed(format!("adding learner node-{id}"), e))?;
        }
        MembershipChange::Remove(gone) => {
            tracing::info!(
                ?gone,
                "removing decommissioned nodes from the metadata group"
            );
            raft.change_membership(ChangeMembers::RemoveVoters(gone.clone()), true)
                .await
                .map_err(|e| failed(format!("removing voters {gone:?}"), e))?;
            raft.change_membership(ChangeMembers::RemoveNodes(gone.clone()), false)
                .await
                .map_err(|e| failed(format!("removing members {gone:?}"), e))?;
        }
        MembershipChange::Promote(learners) => {
            tracing::info!(?learners, "promoting caught-up learners to voters");
            raft.change_membership(ChangeMembers::AddVoterIds(learners.clone()), false)
                .await
                .map_err(|e| failed(format!("promoting learners {learners:?}"), e))?;
        }
        MembershipChange::Replace {
            dead,
            learner,
            voters,
        } => {
            tracing::warn!(
                dead,
                learner,
                "replacing a dead voter of the metadata group with a live learner"
            );
            // `retain`: the dead voter stays a learner and catches up when it returns.
            raft.change_membership(ChangeMembers::ReplaceAllVoters(voters), true)
                .await
                .map_err(|e| {
                    failed(
                        format!("replacing voter node-{dead} with node-{learner}"),
                        e,
                    )
                })?;
        }
    }
    Ok(true)
}

/// A membership change openraft refused.
fn failed(what: String, e: impl std::fmt::Display) -> crate::error::Error {
    crate::error::Error::Metadata(crate::error::MetaUnavailable::Raft {
        reason: format!("{what}: {e}"),
    })
}
