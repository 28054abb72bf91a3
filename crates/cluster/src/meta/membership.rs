//! The metadata group's membership decision, a pure core: from what the leader sees
//! of the group and the nodes, the one change to make next (the controller carries
//! it out through openraft).
//!
//! Invariants:
//! - Every registered node is a member: a voter, or a learner that holds a full copy
//!   of the metadata.
//! - The group never grows to an even number of voters: an even group tolerates no
//!   more failures than the odd one below it and stalls when either half is lost, so
//!   learners are promoted two at a time (1 → 3 → 5) once two are caught up.
//! - A voter silent past its timeout gives its place to a caught-up live learner in
//!   one change; it stays a learner and catches up when it returns.

use std::collections::{BTreeMap, BTreeSet};

/// A learner within this many entries of the leader's log counts as caught up.
pub(super) const CAUGHT_UP_ENTRIES: u64 = 16;

/// What the leader sees, at one tick.
#[derive(Debug, Clone, Default)]
pub(super) struct MembershipView {
    /// This node (the leader).
    pub me: u64,
    /// The group's voters.
    pub voters: BTreeSet<u64>,
    /// The group's learners.
    pub learners: BTreeSet<u64>,
    /// Every member's address as the group knows it.
    pub members: BTreeMap<u64, String>,
    /// Every registered node's address as the metadata records it.
    pub registered: BTreeMap<u64, String>,
    /// Nodes that answered the last liveness round.
    pub live: BTreeSet<u64>,
    /// Members silent for longer than the dead-voter timeout.
    pub dead: BTreeSet<u64>,
    /// The highest log index each member is known to hold.
    pub matched: BTreeMap<u64, u64>,
    /// The leader's last log index.
    pub last_log: u64,
    /// Voters the group aims for (odd).
    pub target_voters: usize,
}

/// One change of the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum MembershipChange {
    /// A registered node joins as a learner (or a learner's address changed).
    AddLearner {
        /// The node.
        id: u64,
        /// Where it serves.
        addr: String,
    },
    /// Members no longer registered (decommissioned) leave.
    Remove(BTreeSet<u64>),
    /// Caught-up learners become voters.
    Promote(BTreeSet<u64>),
    /// A dead voter's place goes to a live learner: the new voter set.
    Replace {
        /// The voter leaving (it stays a learner).
        dead: u64,
        /// The learner taking its place.
        learner: u64,
        /// The voters after the change.
        voters: BTreeSet<u64>,
    },
}

/// The next change, if any.
pub(super) fn decide(v: &MembershipView) -> Option<MembershipChange> {
    for (id, addr) in &v.registered {
        let known = v.members.get(id);
        if known.is_none_or(|a| a != addr) && !v.voters.contains(id) {
            return Some(MembershipChange::AddLearner {
                id: *id,
                addr: addr.clone(),
            });
        }
    }
    let gone: BTreeSet<u64> = v
        .members
        .keys()
        .copied()
        .filter(|id| !v.registered.contains_key(id) && *id != v.me)
        .collect();
    if !gone.is_empty() {
        return Some(MembershipChange::Remove(gone));
    }
    let ready: Vec<u64> = v
        .learners
        .iter()
        .copied()
        .filter(|l| {
            let matched = v.matched.get(l).copied().unwrap_or(0);
            v.live.contains(l) && matched + CAUGHT_UP_ENTRIES >= v.last_log
        })
        .collect();
    let n = v.voters.len();
    if n < v.target_voters {
        // The most learners that keep the count odd and within the target.
        let room = (v.target_voters - n).min(ready.len());
        let k = (1..=room).rev().find(|k| (n + k) % 2 == 1)?;
        return Some(MembershipChange::Promote(
            ready.iter().copied().take(k).collect(),
        ));
    }
    let learner = ready.first().copied()?;
    // The leader answers itself, so it is never dead.
    let dead = v.voters.iter().copied().find(|id| v.dead.contains(id))?;
    let mut voters = v.voters.clone();
    voters.remove(&dead);
    voters.insert(learner);
    Some(MembershipChange::Replace {
        dead,
        learner,
        voters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A leader (node 1) with these voters and learners, every registered node a
    /// live, caught-up member.
    fn view(voters: &[u64], learners: &[u64]) -> MembershipView {
        let all: Vec<u64> = voters.iter().chain(learners).copied().collect();
        let addrs: BTreeMap<u64, String> = all.iter().map(|n| (*n, format!("n{n}"))).collect();
        MembershipView {
            me: 1,
            voters: voters.iter().copied().collect(),
            learners: learners.iter().copied().collect(),
            members: addrs.clone(),
            registered: addrs,
            live: all.iter().copied().collect(),
            dead: BTreeSet::new(),
            matched: all.iter().map(|n| (*n, 100)).collect(),
            last_log: 100,
            target_voters: 3,
        }
    }

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_registered_node_joins_as_a_learner_first() {
        let mut v = view(&[1], &[]);
        v.registered.insert(2, "n2".into());
        assert_eq!(
            decide(&v),
            Some(MembershipChange::AddLearner {
                id: 2,
                addr: "n2".into()
            })
        );
    }

    #[test]
    fn a_growing_group_goes_from_one_voter_to_three_never_two() {
        // Node 2 caught up alone: promoting it would make two voters, either of
        // which stalls the metadata when lost. It waits for a second learner.
        assert_eq!(decide(&view(&[1], &[2])), None);
        assert_eq!(
            decide(&view(&[1], &[2, 3])),
            Some(MembershipChange::Promote(set(&[2, 3])))
        );
        // Five voters wanted: from three, two more at once.
        let mut v = view(&[1, 2, 3], &[4]);
        v.target_voters = 5;
        assert_eq!(decide(&v), None);
        let mut v = view(&[1, 2, 3], &[4, 5, 6]);
        v.target_voters = 5;
        assert_eq!(decide(&v), Some(MembershipChange::Promote(set(&[4, 5]))));
    }

    #[test]
    fn an_even_group_is_made_odd_by_one_promotion() {
        // Two voters left after a decommission: one learner makes three.
        assert_eq!(
            decide(&view(&[1, 2], &[4])),
            Some(MembershipChange::Promote(set(&[4])))
        );
    }

    #[test]
    fn a_learner_behind_or_silent_is_not_promoted() {
        let mut v = view(&[1], &[2, 3]);
        v.matched.insert(3, 100 - CAUGHT_UP_ENTRIES - 1);
        assert_eq!(
            decide(&v),
            None,
            "3 is behind: 2 alone would make two voters"
        );
        let mut v = view(&[1], &[2, 3]);
        v.live.remove(&2);
        assert_eq!(decide(&v), None);
    }

    #[test]
    fn a_dead_voter_is_replaced_by_a_live_caught_up_learner() {
        let mut v = view(&[1, 2, 3], &[4]);
        assert_eq!(decide(&v), None, "a full, healthy group stays");
        v.dead.insert(3);
        assert_eq!(
            decide(&v),
            Some(MembershipChange::Replace {
                dead: 3,
                learner: 4,
                voters: set(&[1, 2, 4])
            })
        );
        v.matched.insert(4, 0);
        assert_eq!(decide(&v), None, "the learner is still catching up");
    }

    #[test]
    fn decommissioned_members_leave_before_anything_else() {
        let mut v = view(&[1, 2, 3], &[4]);
        v.registered.remove(&3);
        v.registered.remove(&4);
        v.dead.insert(3);
        assert_eq!(decide(&v), Some(MembershipChange::Remove(set(&[3, 4]))));
    }
}
