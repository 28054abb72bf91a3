//! The metadata leader's controller, membership part: every registered node becomes
//! a learner of the group, learners that caught up are promoted until the group has
//! its target number of voters, and a voter that stays unreachable past the
//! configured timeout is replaced by a live, caught-up learner (it stays a learner and
//! can be promoted again later). Liveness comes from pings. Tablet masters silent past
//! the failover timeout are replaced ([`failover`]). Runs on every node, acts only on
//! the leader.

use super::lease::{LeaseGrant, wall_ms};
use super::raft_catalog::RaftCatalog;
use crate::catalog::TabletDesc;
use crate::strong::protocol::{ReplicaPosition, choose_master};
use datalayer_store::{NodeId, TabletId};
use openraft::{BasicNode, ChangeMembers};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Weak;
use std::time::{Duration, Instant};

/// How often the controller looks.
const TICK: Duration = Duration::from_millis(300);
/// A learner within this many entries of the leader's log counts as caught up.
const CAUGHT_UP_ENTRIES: u64 = 16;
/// How long a liveness ping may take.
const PING_TIMEOUT: Duration = Duration::from_millis(250);

/// Runs until the catalog is dropped.
pub async fn run(catalog: Weak<RaftCatalog>) {
    let mut tick = tokio::time::interval(TICK);
    // When each node last answered, as this node saw it while leading.
    let mut last_seen: HashMap<u64, Instant> = HashMap::new();
    loop {
        tick.tick().await;
        let Some(catalog) = catalog.upgrade() else {
            return;
        };
        if let Err(e) = step(&catalog, &mut last_seen).await {
            tracing::debug!(error = %e, "membership controller step");
        }
    }
}

/// Pings every registered node, granting leases when `grant`; returns the ids that
/// answered (this node included).
async fn probe(catalog: &RaftCatalog, grant: Option<LeaseGrant>) -> BTreeSet<u64> {
    let mut pings = tokio::task::JoinSet::new();
    for node in catalog.state().nodes.into_values() {
        if node.id == catalog.node() {
            continue;
        }
        pings.spawn(async move {
            (
                node.id.0,
                super::network::ping(&node.grpc_addr, PING_TIMEOUT, grant).await,
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

async fn step(catalog: &RaftCatalog, last_seen: &mut HashMap<u64, Instant>) -> Result<(), String> {
    let raft = catalog.raft();
    let m = raft.metrics().borrow().clone();
    if m.current_leader != Some(catalog.node().0) {
        last_seen.clear();
        return Ok(());
    }
    let now = Instant::now();
    // Leases are granted only by a leader a quorum still follows.
    let sent_ms = wall_ms();
    let confirmed = tokio::time::timeout(PING_TIMEOUT * 2, raft.ensure_linearizable()).await;
    let grant = match confirmed {
        Ok(Ok(_)) => {
            let grant = LeaseGrant {
                term: m.current_term,
                sent_ms,
                applied: *catalog.applied().borrow(),
            };
            catalog.grant(grant);
            Some(grant)
        }
        _ => None,
    };
    let live = probe(catalog, grant).await;
    for id in &live {
        last_seen.insert(*id, now);
    }
    failover(catalog, &live, last_seen, now).await;
    let membership = m.membership_config.membership().clone();
    for node in catalog.state().nodes.values() {
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
            .map_err(|e| e.to_string())?;
            return Ok(());
        }
    }
    // Members no longer registered (decommissioned) leave the group.
    let registered: BTreeSet<u64> = catalog.state().nodes.keys().map(|n| n.0).collect();
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
            .map_err(|e| e.to_string())?;
        raft.change_membership(ChangeMembers::RemoveNodes(gone), false)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(());
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
        return Ok(());
    };
    if voters.len() < catalog.target_voters() {
        tracing::info!(node = learner, "promoting caught-up learner to voter");
        raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([learner])), false)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(());
    }
    // A voter silent past the timeout gives its place (the leader answers itself).
    let dead_after = catalog.dead_voter_timeout();
    let dead = voters.iter().copied().find(|v| {
        let seen = *last_seen.entry(*v).or_insert(now);
        now.duration_since(seen) > dead_after
    });
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
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Appoints a new master for every tablet whose master has been silent past the
/// failover timeout: the live in-sync replica with the highest `(last epoch, log end)`
/// (DESIGN §6), in the next epoch. A tablet with no live in-sync replica waits for one.
async fn failover(
    catalog: &RaftCatalog,
    live: &BTreeSet<u64>,
    last_seen: &mut HashMap<u64, Instant>,
    now: Instant,
) {
    let state = catalog.state();
    let timeout = catalog.failover_timeout();
    let dead = |n: u64, last_seen: &mut HashMap<u64, Instant>| {
        !live.contains(&n) && now.duration_since(*last_seen.entry(n).or_insert(now)) > timeout
    };
    let orphans: Vec<TabletDesc> = state
        .tables
        .values()
        .flat_map(|t| t.tablets.iter())
        .filter(|tb| dead(tb.master.0, last_seen))
        .cloned()
        .collect();
    if orphans.is_empty() {
        return;
    }
    // Ask each live candidate once for all the tablets it may take.
    let mut asks: BTreeMap<NodeId, Vec<TabletId>> = BTreeMap::new();
    for tb in &orphans {
        for r in tb
            .in_sync
            .iter()
            .filter(|r| **r != tb.master && live.contains(&r.0))
        {
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
                "master is dead and no in-sync replica is live: the tablet waits");
            continue;
        };
        tracing::warn!(tablet = %tb.id, dead = %tb.master, new = %next, epoch = tb.master_epoch.0 + 1,
            "master is dead: appointing the most advanced in-sync replica");
        if let Err(e) = catalog.appoint_master(tb.id, tb.master_epoch, next).await {
            tracing::warn!(tablet = %tb.id, error = %e, "failover proposal failed");
        }
    }
}
