//! The metadata leader's controller, membership part: every registered node becomes
//! a learner of the group, and learners that caught up are promoted until the group
//! has its target number of voters. Runs on every node, acts only on the leader.

use super::raft_catalog::RaftCatalog;
use openraft::{BasicNode, ChangeMembers};
use std::collections::BTreeSet;
use std::sync::Weak;
use std::time::Duration;

/// How often the controller looks.
const TICK: Duration = Duration::from_millis(300);
/// A learner within this many entries of the leader's log counts as caught up.
const CAUGHT_UP_ENTRIES: u64 = 16;

/// Runs until the catalog is dropped.
pub async fn run(catalog: Weak<RaftCatalog>) {
    let mut tick = tokio::time::interval(TICK);
    loop {
        tick.tick().await;
        let Some(catalog) = catalog.upgrade() else {
            return;
        };
        if let Err(e) = step(&catalog).await {
            tracing::debug!(error = %e, "membership controller step");
        }
    }
}

async fn step(catalog: &RaftCatalog) -> Result<(), String> {
    let raft = catalog.raft();
    let m = raft.metrics().borrow().clone();
    if m.current_leader != Some(catalog.node().0) {
        return Ok(());
    }
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
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    if voters.len() >= catalog.target_voters() {
        return Ok(());
    }
    let last = m.last_log_index.unwrap_or(0);
    let replication = m.replication.unwrap_or_default();
    for learner in membership.learner_ids() {
        let matched = replication
            .get(&learner)
            .cloned()
            .flatten()
            .map_or(0, |l| l.index);
        if matched + CAUGHT_UP_ENTRIES >= last {
            tracing::info!(node = learner, "promoting caught-up learner to voter");
            raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([learner])), false)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(());
        }
    }
    Ok(())
}
