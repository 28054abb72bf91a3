//! Re-placement of existing tablets, decided without I/O: the controller feeds it the
//! metadata and which nodes are live or dead, and carries out what it returns.
//!
//! - A replica on a node dead past the timeout moves to a live node that holds none
//!   (the one holding the fewest replicas).
//! - A tablet with fewer replicas than its table's factor gets more where nodes allow.
//! - With every node live, replicas move from the node holding the most to the node
//!   holding the fewest while they differ by two or more, and masters are handed over
//!   the same way to an in-sync replica on a node mastering fewer.
//!
//! A move is two metadata changes: `MoveReplica` adds the target (it catches up from
//! the master's oplog and the master adds it to the in-sync set), then `DropReplica`
//! removes the source once the target is in sync; a source that masters the tablet
//! hands it over to the target first. Each change compares the replica-set version it
//! read, and at most [`MAX_MOVES`] moves are under way at once.

use super::state::MetaState;
use crate::catalog::TabletDesc;
use datalayer_store::NodeId;
use std::collections::{BTreeMap, BTreeSet};

/// Most replica moves under way at once in the whole cluster.
pub const MAX_MOVES: usize = 2;

/// One step the controller takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start moving `tablet`'s replica on `from` to `to`.
    Move {
        /// The tablet as read.
        tablet: TabletDesc,
        /// The node giving its replica up.
        from: NodeId,
        /// The node taking it.
        to: NodeId,
    },
    /// Give an under-replicated tablet a replica on `to`.
    Add {
        /// The tablet as read.
        tablet: TabletDesc,
        /// The new replica's node.
        to: NodeId,
    },
    /// Take `node`'s replica away (a finished or cancelled move).
    Drop {
        /// The tablet as read.
        tablet: TabletDesc,
        /// The node losing its replica.
        node: NodeId,
    },
    /// Ask `master` to hand `tablet` over to `to`, an in-sync replica.
    HandOver {
        /// The tablet as read.
        tablet: TabletDesc,
        /// Its master.
        master: NodeId,
        /// The new master.
        to: NodeId,
    },
}

/// What the controller knows of the nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Nodes {
    /// Nodes that answered the last liveness round.
    pub live: BTreeSet<NodeId>,
    /// Nodes silent past the dead-node timeout.
    pub dead: BTreeSet<NodeId>,
}

/// The steps to take now, given the metadata and the nodes.
pub fn plan(state: &MetaState, nodes: &Nodes, rebalance: bool) -> Vec<Action> {
    let tablets: Vec<(&TabletDesc, usize)> = state
        .tables
        .values()
        .flat_map(|t| {
            t.tablets
                .iter()
                .map(move |tb| (tb, t.replication_factor as usize))
        })
        .collect();
    let usable = |n: &NodeId| state.nodes.contains_key(n) && nodes.live.contains(n);
    let mut actions = Vec::new();
    let mut moves = 0;

    // Moves under way: finish or cancel them.
    for (tb, _) in &tablets {
        let Some(m) = tb.moving else { continue };
        moves += 1;
        if !state.nodes.contains_key(&m.to) || nodes.dead.contains(&m.to) {
            actions.push(Action::Drop {
                tablet: (*tb).clone(),
                node: m.to,
            });
        } else if tb.in_sync.contains(&m.to) {
            if tb.master != m.from {
                actions.push(Action::Drop {
                    tablet: (*tb).clone(),
                    node: m.from,
                });
            } else if nodes.live.contains(&m.from) {
                actions.push(Action::HandOver {
                    tablet: (*tb).clone(),
                    master: m.from,
                    to: m.to,
                });
            }
            // A dead master is replaced by failover first.
        }
    }

    // Replica counts per usable node, as they will be once the moves are done.
    let mut load: BTreeMap<NodeId, usize> = state
        .nodes
        .keys()
        .filter(|n| usable(n))
        .map(|n| (*n, 0))
        .collect();
    for (tb, _) in &tablets {
        for r in &tb.replicas {
            if tb.moving.is_some_and(|m| m.from == *r) {
                continue;
            }
            if let Some(c) = load.get_mut(r) {
                *c += 1;
            }
        }
    }
    let least_loaded = |load: &BTreeMap<NodeId, usize>, tb: &TabletDesc| {
        load.iter()
            .filter(|(n, _)| !tb.replicas.contains(n))
            .min_by_key(|(n, c)| (**c, **n))
            .map(|(n, _)| *n)
    };

    // Replicas on dead nodes move; under-replicated tablets grow.
    for (tb, factor) in &tablets {
        if moves >= MAX_MOVES {
            return actions;
        }
        if tb.moving.is_some() {
            continue;
        }
        let dead = tb
            .replicas
            .iter()
            .copied()
            .find(|r| *r != tb.master && nodes.dead.contains(r));
        let Some(to) = least_loaded(&load, tb) else {
            continue;
        };
        if let Some(from) = dead {
            actions.push(Action::Move {
                tablet: (*tb).clone(),
                from,
                to,
            });
        } else if tb.replicas.len() < *factor {
            actions.push(Action::Add {
                tablet: (*tb).clone(),
                to,
            });
        } else {
            continue;
        }
        *load.entry(to).or_default() += 1;
        moves += 1;
    }

    // Balance only a healthy cluster, one step per pass.
    let all_live = state.nodes.keys().all(|n| nodes.live.contains(n));
    if !rebalance || !all_live || moves > 0 || !actions.is_empty() {
        return actions;
    }
    if let Some(action) = balance_replicas(&tablets, &load) {
        actions.push(action);
    } else if let Some(action) = balance_masters(&tablets, &load) {
        actions.push(action);
    }
    actions
}

/// A move from the node with the most replicas to the one with the fewest, when they
/// differ by two or more (the source preferably not the tablet's master).
fn balance_replicas(
    tablets: &[(&TabletDesc, usize)],
    load: &BTreeMap<NodeId, usize>,
) -> Option<Action> {
    let (hi, hi_count) = load
        .iter()
        .max_by_key(|(n, c)| (**c, std::cmp::Reverse(**n)))?;
    let (lo, lo_count) = load.iter().min_by_key(|(n, c)| (**c, **n))?;
    if *hi_count < lo_count + 2 {
        return None;
    }
    let movable = |tb: &&TabletDesc| tb.replicas.contains(hi) && !tb.replicas.contains(lo);
    let candidates: Vec<&TabletDesc> = tablets.iter().map(|(tb, _)| *tb).filter(movable).collect();
    let tb = candidates
        .iter()
        .find(|tb| tb.master != *hi)
        .or_else(|| candidates.first())?;
    Some(Action::Move {
        tablet: (*tb).clone(),
        from: *hi,
        to: *lo,
    })
}

/// A hand-over from the node mastering the most tablets to an in-sync replica on a
/// node mastering two or more fewer (never of a tablet splitting or merging).
fn balance_masters(
    tablets: &[(&TabletDesc, usize)],
    load: &BTreeMap<NodeId, usize>,
) -> Option<Action> {
    let mut masters: BTreeMap<NodeId, usize> = load.keys().map(|n| (*n, 0)).collect();
    for (tb, _) in tablets {
        if let Some(c) = masters.get_mut(&tb.master) {
            *c += 1;
        }
    }
    let mut by_count: Vec<(usize, NodeId)> = masters.iter().map(|(n, c)| (*c, *n)).collect();
    by_count.sort_by_key(|(c, n)| (std::cmp::Reverse(*c), *n));
    let masters = &masters;
    by_count.iter().find_map(|(hi_count, hi)| {
        let mut best: Option<(usize, NodeId, &TabletDesc)> = None;
        // A tablet splitting or merging keeps its master: a merge gives both tablets
        // one master itself.
        let movable =
            |tb: &TabletDesc| tb.master == *hi && tb.split.is_none() && tb.merge.is_none();
        for (tb, _) in tablets.iter().filter(|(tb, _)| movable(tb)) {
            for n in &tb.in_sync {
                let Some(count) = masters.get(n).copied() else {
                    continue;
                };
                if count + 2 <= *hi_count && best.is_none_or(|(c, b, _)| (count, *n) < (c, b)) {
                    best = Some((count, *n, *tb));
                }
            }
        }
        best.map(|(_, to, tb)| Action::HandOver {
            tablet: tb.clone(),
            master: *hi,
            to,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{PolicyKind, ReplicaMove, TableSpec};
    use crate::meta::state::{MetaCommand, MetaResponse};
    use proptest::prelude::*;

    fn cluster(nodes: u64, tables: usize) -> MetaState {
        let mut s = MetaState::default();
        for i in 1..=nodes {
            s.apply(&MetaCommand::RegisterNode {
                id: Some(NodeId(i)),
                grpc_addr: format!("n{i}:1"),
                http_addr: format!("n{i}:2"),
            });
        }
        for t in 0..tables {
            let r = s.apply(&MetaCommand::CreateTable {
                spec: TableSpec {
                    name: format!("t{t}"),
                    policy: PolicyKind::Strong,
                    replication_factor: 3,
                    version_retention_secs: 0,
                    options: Default::default(),
                    split_keys: Vec::new(),
                },
                if_not_exists: false,
                proposer: NodeId(1),
            });
            assert!(matches!(r, MetaResponse::Table { .. }), "{r:?}");
        }
        s
    }

    fn join(s: &mut MetaState, id: u64) {
        s.apply(&MetaCommand::RegisterNode {
            id: Some(NodeId(id)),
            grpc_addr: format!("n{id}:1"),
            http_addr: format!("n{id}:2"),
        });
    }

    fn all_live(s: &MetaState) -> Nodes {
        Nodes {
            live: s.nodes.keys().copied().collect(),
            dead: BTreeSet::new(),
        }
    }

    /// Carries out `actions` the way the cluster would, with every new replica
    /// catching up at once.
    fn execute(s: &mut MetaState, actions: Vec<Action>) {
        for a in actions {
            let cmd = match a {
                Action::Move { tablet, from, to } => MetaCommand::MoveReplica {
                    tablet: tablet.id,
                    expect_conf: tablet.conf_version,
                    from,
                    to,
                },
                Action::Add { tablet, to } => MetaCommand::AddReplica {
                    tablet: tablet.id,
                    expect_conf: tablet.conf_version,
                    node: to,
                },
                Action::Drop { tablet, node } => MetaCommand::DropReplica {
                    tablet: tablet.id,
                    expect_conf: tablet.conf_version,
                    node,
                },
                Action::HandOver { tablet, to, .. } => MetaCommand::AppointMaster {
                    tablet: tablet.id,
                    expect_epoch: tablet.master_epoch,
                    master: to,
                },
            };
            assert_eq!(s.apply(&cmd), MetaResponse::Done, "{cmd:?}");
            assert!(s.counts_agree(), "tablet counts kept wrong after {cmd:?}");
        }
        // Every replica catches up.
        let ids: Vec<_> = s
            .tables
            .values()
            .flat_map(|t| {
                t.tablets
                    .iter()
                    .map(|tb| (tb.id, tb.master_epoch, tb.replicas.clone()))
            })
            .collect();
        for (id, epoch, replicas) in ids {
            s.apply(&MetaCommand::SetInSync {
                tablet: id,
                expect_epoch: epoch,
                in_sync: replicas,
            });
        }
        assert!(s.counts_agree());
    }

    fn counts(s: &MetaState) -> (BTreeMap<NodeId, usize>, BTreeMap<NodeId, usize>) {
        let mut replicas: BTreeMap<NodeId, usize> = s.nodes.keys().map(|n| (*n, 0)).collect();
        let mut masters = replicas.clone();
        for tb in s.tables.values().flat_map(|t| &t.tablets) {
            *masters.get_mut(&tb.master).expect("node") += 1;
            for r in &tb.replicas {
                *replicas.get_mut(r).expect("node") += 1;
            }
        }
        (replicas, masters)
    }

    fn spread(counts: &BTreeMap<NodeId, usize>) -> usize {
        counts.values().max().unwrap_or(&0) - counts.values().min().unwrap_or(&0)
    }

    /// Runs the planner until it has nothing left to do; returns the passes taken.
    fn settle(s: &mut MetaState, nodes: impl Fn(&MetaState) -> Nodes) -> usize {
        for pass in 0..200 {
            let actions = plan(s, &nodes(s), true);
            if actions.is_empty() {
                return pass;
            }
            execute(s, actions);
        }
        panic!("the planner does not settle");
    }

    fn assert_healthy(s: &MetaState) {
        for tb in s.tables.values().flat_map(|t| &t.tablets) {
            let mut distinct = tb.replicas.clone();
            distinct.sort();
            distinct.dedup();
            assert_eq!(distinct.len(), tb.replicas.len(), "{tb:?}");
            assert_eq!(tb.replicas.len(), 3, "{tb:?}");
            assert!(tb.replicas.contains(&tb.master), "{tb:?}");
            assert_eq!(tb.moving, None);
        }
    }

    #[test]
    fn a_joining_node_receives_a_share_of_replicas_and_masters() {
        let mut s = cluster(3, 6);
        join(&mut s, 4);
        let passes = settle(&mut s, all_live);
        assert!(passes > 0);
        assert_healthy(&s);
        let (replicas, masters) = counts(&s);
        assert!(spread(&replicas) <= 1, "{replicas:?}");
        assert!(spread(&masters) <= 1, "{masters:?}");
        assert!(replicas[&NodeId(4)] >= 4 && masters[&NodeId(4)] >= 1);
    }

    #[test]
    fn replicas_on_a_dead_node_move_to_live_ones() {
        let mut s = cluster(4, 4);
        let dead = NodeId(2);
        let nodes = move |s: &MetaState| Nodes {
            live: s.nodes.keys().copied().filter(|n| *n != dead).collect(),
            dead: BTreeSet::from([dead]),
        };
        // Node 2 masters a tablet: the planner leaves that one to failover.
        let mastered: Vec<_> = s
            .tables
            .values()
            .flat_map(|t| &t.tablets)
            .filter(|tb| tb.master == dead)
            .map(|tb| tb.id)
            .collect();
        settle(&mut s, nodes);
        for tb in s.tables.values().flat_map(|t| &t.tablets) {
            if mastered.contains(&tb.id) {
                continue;
            }
            assert!(!tb.replicas.contains(&dead), "{tb:?}");
            assert_eq!(tb.replicas.len(), 3);
        }
        // A dead node's replicas are never balanced onto it, and no balancing runs
        // while a node is down.
        let (replicas, _) = counts(&s);
        assert!(replicas[&dead] <= mastered.len());
    }

    #[test]
    fn under_replicated_tablets_grow_as_nodes_join() {
        let mut s = cluster(1, 2);
        assert!(s.tables.values().all(|t| t.tablets[0].replicas.len() == 1));
        join(&mut s, 2);
        join(&mut s, 3);
        settle(&mut s, all_live);
        assert_healthy(&s);
    }

    #[test]
    fn moves_finish_only_once_the_target_is_in_sync() {
        let mut s = cluster(4, 1);
        let tb = s.tables["t0"].tablets[0].clone();
        let free = s
            .nodes
            .keys()
            .copied()
            .find(|n| !tb.replicas.contains(n))
            .expect("free node");
        assert_eq!(
            s.apply(&MetaCommand::MoveReplica {
                tablet: tb.id,
                expect_conf: tb.conf_version,
                from: tb.master,
                to: free,
            }),
            MetaResponse::Done
        );
        let nodes = all_live(&s);
        assert_eq!(
            plan(&s, &nodes, true),
            vec![],
            "the target catches up first"
        );
        let tb = s.tables["t0"].tablets[0].clone();
        s.apply(&MetaCommand::SetInSync {
            tablet: tb.id,
            expect_epoch: tb.master_epoch,
            in_sync: tb.replicas.clone(),
        });
        let tb = s.tables["t0"].tablets[0].clone();
        assert_eq!(
            plan(&s, &nodes, true),
            vec![Action::HandOver {
                tablet: tb.clone(),
                master: tb.master,
                to: free
            }],
            "a moving master hands over before it leaves"
        );
        // The target dies: the move is cancelled.
        let dead = Nodes {
            live: nodes.live.iter().copied().filter(|n| *n != free).collect(),
            dead: BTreeSet::from([free]),
        };
        assert_eq!(
            plan(&s, &dead, true),
            vec![Action::Drop {
                tablet: tb.clone(),
                node: free
            }]
        );
        assert_eq!(
            tb.moving,
            Some(ReplicaMove {
                from: tb.master,
                to: free
            })
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the joins and deaths, the planner settles with every tablet fully
        /// replicated on distinct nodes, nothing on a dead node but masters waiting
        /// for failover, and (all nodes live) counts within one of each other.
        #[test]
        fn the_planner_settles_balanced(
            start in 3u64..6,
            tables in 1usize..12,
            joins in 0u64..3,
            dead in proptest::option::of(1u64..4),
        ) {
            let mut s = cluster(start, tables);
            for j in 0..joins {
                join(&mut s, start + 1 + j);
            }
            match dead {
                None => {
                    settle(&mut s, all_live);
                    assert_healthy(&s);
                    let (replicas, masters) = counts(&s);
                    prop_assert!(spread(&replicas) <= 1, "{:?}", replicas);
                    prop_assert!(spread(&masters) <= 1, "{:?}", masters);
                }
                Some(d) => {
                    let d = NodeId(d);
                    // Only a node no tablet needs elsewhere gives up its replicas.
                    let room = start + joins > 3;
                    settle(&mut s, move |s: &MetaState| Nodes {
                        live: s.nodes.keys().copied().filter(|n| *n != d).collect(),
                        dead: BTreeSet::from([d]),
                    });
                    for tb in s.tables.values().flat_map(|t| &t.tablets) {
                        prop_assert!(!room || tb.master == d || !tb.replicas.contains(&d));
                        prop_assert_eq!(tb.replicas.len(), 3);
                    }
                }
            }
        }
    }
}
