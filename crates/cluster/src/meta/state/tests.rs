//! Tests of the metadata state machine's commands.

use super::*;
use crate::meta::LivenessEpoch;
use crate::policy::PolicyKind;

fn create(name: &str, if_not_exists: bool) -> MetaCommand {
    MetaCommand::CreateTable {
        spec: TableSpec {
            name: name.into(),
            policy: PolicyKind::Strong,
            replication_factor: 0,
            version_retention_secs: 0,
            options: Default::default(),
            split_keys: Vec::new(),
        },
        if_not_exists,
        proposer: NodeId(7),
    }
}

fn register(s: &mut MetaState, id: Option<u64>, addr: &str) -> NodeId {
    let MetaResponse::Node(id) = s.apply(&MetaCommand::RegisterNode {
        id: id.map(NodeId),
        grpc_addr: addr.into(),
        http_addr: format!("{addr}-http"),
    }) else {
        panic!("registered");
    };
    id
}

#[test]
fn nodes_register_once_and_tablets_spread_over_them() {
    let mut s = MetaState::default();
    assert_eq!(register(&mut s, Some(1), "a:1"), NodeId(1));
    assert_eq!(register(&mut s, None, "b:1"), NodeId(2));
    assert_eq!(
        register(&mut s, None, "b:1"),
        NodeId(2),
        "a retried join keeps its id"
    );
    assert_eq!(
        register(&mut s, Some(1), "a:2"),
        NodeId(1),
        "a restart moves the address"
    );
    assert_eq!(s.nodes[&NodeId(1)].grpc_addr, "a:2");
    assert_eq!(register(&mut s, None, "c:1"), NodeId(3));
    let mut masters = Vec::new();
    for name in ["t1", "t2", "t3", "t4", "t5", "t6"] {
        let MetaResponse::Table { table, .. } = s.apply(&create(name, false)) else {
            panic!("create");
        };
        let t = &table.tablets[0];
        assert_eq!(t.replicas.len(), 3, "three replicas on three nodes");
        assert_eq!(t.replicas[0], t.master);
        let mut distinct = t.replicas.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 3, "replicas on distinct nodes");
        masters.push(t.master.0);
    }
    assert_eq!(
        masters,
        vec![1, 2, 3, 1, 2, 3],
        "masters balance across nodes"
    );
}

#[test]
fn create_drop_and_forget() {
    let mut s = MetaState::default();
    let MetaResponse::Table { table, created } = s.apply(&create("a", false)) else {
        panic!("created");
    };
    assert!(created);
    assert_eq!(table.tablets.len(), 1, "a table starts with one tablet");
    assert_eq!(
        table.tablets[0].master,
        NodeId(7),
        "no registered node: the proposer"
    );
    assert_eq!(table.replication_factor, DEFAULT_REPLICATION_FACTOR);
    assert_eq!(
        s.apply(&create("a", false)),
        MetaResponse::Rejected(MetaError::Exists("a".into()))
    );
    let MetaResponse::Table {
        created,
        table: again,
    } = s.apply(&create("a", true))
    else {
        panic!("if not exists");
    };
    assert!(!created);
    assert_eq!(again.id, table.id);
    assert!(matches!(
        s.apply(&MetaCommand::DropTable { name: "a".into() }),
        MetaResponse::Table { .. }
    ));
    assert!(s.tables.is_empty());
    assert_eq!(
        s.dropped.keys().copied().collect::<Vec<_>>(),
        vec![table.id]
    );
    assert_eq!(
        s.apply(&MetaCommand::DropTable { name: "a".into() }),
        MetaResponse::Rejected(MetaError::NotFound("a".into()))
    );
    let MetaResponse::Table { table: b, .. } = s.apply(&create("a", false)) else {
        panic!("recreate");
    };
    assert!(
        b.id > table.id && b.tablets[0].id.0 > b.id.0,
        "ids are never reused"
    );
    assert_eq!(
        s.apply(&MetaCommand::ForgetDropped { table: table.id }),
        MetaResponse::Done
    );
    assert!(s.dropped.is_empty());
}

#[test]
fn removing_a_node_moves_replica_sets_and_refuses_masters() {
    let mut s = MetaState::default();
    for (i, addr) in ["a:1", "b:1", "c:1", "d:1"].iter().enumerate() {
        register(&mut s, Some(i as u64 + 1), addr);
    }
    let MetaResponse::Table { table, .. } = s.apply(&create("t", false)) else {
        panic!("create");
    };
    let t = &table.tablets[0];
    assert_eq!(
        (t.master, t.replicas.clone()),
        (NodeId(1), vec![NodeId(1), NodeId(2), NodeId(3)])
    );
    let refused = s.apply(&MetaCommand::RemoveNode { id: NodeId(1) });
    assert!(
        matches!(refused, MetaResponse::Rejected(MetaError::Invalid { .. })),
        "{refused:?}"
    );
    assert_eq!(
        s.apply(&MetaCommand::RemoveNode { id: NodeId(2) }),
        MetaResponse::Done
    );
    assert!(!s.nodes.contains_key(&NodeId(2)));
    let t = &s.tables["t"].tablets[0];
    assert_eq!(
        t.replicas,
        vec![NodeId(1), NodeId(4), NodeId(3)],
        "node 4 takes node 2's replica"
    );
    assert!(matches!(
        s.apply(&MetaCommand::RemoveNode { id: NodeId(2) }),
        MetaResponse::Rejected(MetaError::Invalid { .. })
    ));
    assert!(s.counts_agree());
}

#[test]
fn replica_moves_check_the_version_they_read_and_end_only_when_caught_up() {
    let mut s = MetaState::default();
    for (i, addr) in ["a:1", "b:1", "c:1", "d:1"].iter().enumerate() {
        register(&mut s, Some(i as u64 + 1), addr);
    }
    let MetaResponse::Table { table, .. } = s.apply(&create("t", false)) else {
        panic!("create");
    };
    let id = table.tablets[0].id;
    let conf = table.tablets[0].conf_version;
    let mv = |expect_conf, from, to| MetaCommand::MoveReplica {
        tablet: id,
        expect_conf,
        from: NodeId(from),
        to: NodeId(to),
    };
    let drop = |expect_conf, node| MetaCommand::DropReplica {
        tablet: id,
        expect_conf,
        node: NodeId(node),
    };
    let conflict = |r: MetaResponse| matches!(r, MetaResponse::Rejected(MetaError::Conflict(_)));
    let refused = |r: MetaResponse| matches!(r, MetaResponse::Rejected(MetaError::Invalid { .. }));
    assert!(
        refused(s.apply(&mv(conf, 4, 2))),
        "from must hold a replica"
    );
    assert!(refused(s.apply(&mv(conf, 2, 3))), "to must not hold one");
    assert!(refused(s.apply(&mv(conf, 2, 9))), "to must be a member");
    assert!(conflict(s.apply(&mv(conf + 1, 2, 4))), "stale version");
    let before = s.clone();
    assert_eq!(s.apply(&mv(conf, 2, 4)), MetaResponse::Done);
    let t = s.tablet(id).expect("tablet").clone();
    assert_eq!(t.replicas, vec![NodeId(1), NodeId(2), NodeId(3), NodeId(4)]);
    assert_eq!(
        t.in_sync,
        vec![NodeId(1), NodeId(2), NodeId(3)],
        "4 catches up first"
    );
    assert_eq!(
        t.moving,
        Some(ReplicaMove {
            from: NodeId(2),
            to: NodeId(4)
        })
    );
    assert_ne!(s, before);
    let conf = t.conf_version;
    assert!(conflict(s.apply(&mv(conf, 3, 4))), "one move at a time");
    assert!(
        refused(s.apply(&drop(conf, 2))),
        "2 stays until 4 is in sync"
    );
    assert!(
        refused(s.apply(&drop(conf, 1))),
        "the master never loses its replica"
    );
    assert_eq!(
        s.apply(&MetaCommand::SetInSync {
            tablet: id,
            expect_epoch: t.master_epoch,
            in_sync: vec![NodeId(1), NodeId(2), NodeId(3), NodeId(4)],
        }),
        MetaResponse::Done
    );
    assert!(conflict(s.apply(&drop(conf - 1, 2))), "stale version");
    assert_eq!(s.apply(&drop(conf, 2)), MetaResponse::Done);
    let t = s.tablet(id).expect("tablet").clone();
    assert_eq!(t.replicas, vec![NodeId(1), NodeId(3), NodeId(4)]);
    assert_eq!(t.in_sync, vec![NodeId(1), NodeId(3), NodeId(4)]);
    assert_eq!(t.moving, None);

    // A move is cancelled by dropping its target; removing its source ends it.
    let conf = t.conf_version;
    assert_eq!(s.apply(&mv(conf, 3, 2)), MetaResponse::Done);
    assert_eq!(s.apply(&drop(conf + 1, 2)), MetaResponse::Done);
    let t = s.tablet(id).expect("tablet").clone();
    assert_eq!((t.replicas.len(), t.moving), (3, None));
    assert_eq!(s.apply(&mv(t.conf_version, 3, 2)), MetaResponse::Done);
    assert_eq!(
        s.apply(&MetaCommand::RemoveNode { id: NodeId(3) }),
        MetaResponse::Done
    );
    let t = s.tablet(id).expect("tablet").clone();
    assert_eq!(
        (t.replicas, t.moving),
        (vec![NodeId(1), NodeId(4), NodeId(2)], None)
    );
}

#[test]
fn master_appointments_and_in_sync_changes_check_the_epoch_they_read() {
    let mut s = MetaState::default();
    for (i, addr) in ["a:1", "b:1", "c:1"].iter().enumerate() {
        register(&mut s, Some(i as u64 + 1), addr);
    }
    let MetaResponse::Table { table, .. } = s.apply(&create("t", false)) else {
        panic!("create");
    };
    let id = table.tablets[0].id;
    let tablet = |s: &MetaState| s.tablet(id).expect("tablet").clone();
    // The master shrinks its in-sync set in its own epoch.
    let shrink = MetaCommand::SetInSync {
        tablet: id,
        expect_epoch: Epoch(1),
        in_sync: vec![NodeId(1), NodeId(2)],
    };
    assert_eq!(s.apply(&shrink), MetaResponse::Done);
    assert_eq!(tablet(&s).in_sync, vec![NodeId(1), NodeId(2)]);
    // Only a member of the in-sync set can be appointed.
    let refused = s.apply(&MetaCommand::AppointMaster {
        tablet: id,
        expect_epoch: Epoch(1),
        master: NodeId(3),
    });
    assert!(matches!(
        refused,
        MetaResponse::Rejected(MetaError::Invalid { .. })
    ));
    let appoint = MetaCommand::AppointMaster {
        tablet: id,
        expect_epoch: Epoch(1),
        master: NodeId(2),
    };
    assert_eq!(s.apply(&appoint), MetaResponse::Done);
    let t = tablet(&s);
    assert_eq!((t.master, t.master_epoch), (NodeId(2), Epoch(2)));
    assert_eq!(t.in_sync, vec![NodeId(2)], "the old master leaves the set");
    // The same proposal again, or the deposed master's, read an old epoch.
    assert!(matches!(
        s.apply(&appoint),
        MetaResponse::Rejected(MetaError::Conflict(_))
    ));
    assert!(matches!(
        s.apply(&shrink),
        MetaResponse::Rejected(MetaError::Conflict(_))
    ));
    // The new master's set must hold it, and only replicas.
    for bad in [vec![NodeId(1)], vec![NodeId(2), NodeId(9)]] {
        let r = s.apply(&MetaCommand::SetInSync {
            tablet: id,
            expect_epoch: Epoch(2),
            in_sync: bad,
        });
        assert!(
            matches!(r, MetaResponse::Rejected(MetaError::Invalid { .. })),
            "{r:?}"
        );
    }
    assert_eq!(tablet(&s).in_sync, vec![NodeId(2)]);
    let grow = MetaCommand::SetInSync {
        tablet: id,
        expect_epoch: Epoch(2),
        in_sync: vec![NodeId(3), NodeId(2), NodeId(1)],
    };
    assert_eq!(s.apply(&grow), MetaResponse::Done);
    assert_eq!(tablet(&s).in_sync, vec![NodeId(1), NodeId(2), NodeId(3)]);
}

#[test]
fn liveness_epochs_fence_masterships_and_heartbeats() {
    use crate::meta::Liveness;
    let mut s = MetaState::default();
    for (i, addr) in ["a:1", "b:1"].iter().enumerate() {
        register(&mut s, Some(i as u64 + 1), addr);
    }
    let beat = |node: u64, epoch: u64, expiration_ms: u64| MetaCommand::Heartbeat {
        node: NodeId(node),
        epoch: LivenessEpoch(epoch),
        expiration_ms,
    };
    let at = |epoch, expiration_ms| Liveness {
        epoch: LivenessEpoch(epoch),
        expiration_ms,
    };
    assert_eq!(
        s.apply(&beat(1, 0, 100)),
        MetaResponse::Liveness {
            record: at(0, 100),
            renewed: true
        }
    );
    assert!(
        matches!(
            s.apply(&beat(9, 0, 100)),
            MetaResponse::Rejected(MetaError::Invalid { .. })
        ),
        "an unregistered node has no record"
    );
    let MetaResponse::Table { table, .. } = s.apply(&create("t", false)) else {
        panic!("create");
    };
    let t = &table.tablets[0];
    assert_eq!((t.master, t.master_liveness), (NodeId(1), LivenessEpoch(0)));
    // The increment compares the whole record: a heartbeat in between wins.
    let stale = MetaCommand::IncrementEpoch {
        node: NodeId(1),
        seen: at(0, 50),
    };
    assert!(matches!(
        s.apply(&stale),
        MetaResponse::Rejected(MetaError::Conflict(_))
    ));
    let bump = MetaCommand::IncrementEpoch {
        node: NodeId(1),
        seen: at(0, 100),
    };
    assert_eq!(s.apply(&bump), MetaResponse::Done);
    assert_eq!(s.liveness(NodeId(1)), at(1, 100));
    // The node's heartbeats at the old epoch extend nothing and tell it the new one.
    assert_eq!(
        s.apply(&beat(1, 0, 900)),
        MetaResponse::Liveness {
            record: at(1, 100),
            renewed: false
        }
    );
    assert_eq!(
        s.apply(&beat(1, 1, 900)),
        MetaResponse::Liveness {
            record: at(1, 900),
            renewed: true
        }
    );
    // Its mastership stays at the old epoch until it is appointed again.
    let t = s.tablet(t.id).expect("tablet").clone();
    assert_eq!(t.master_liveness, LivenessEpoch(0));
    let again = MetaCommand::AppointMaster {
        tablet: t.id,
        expect_epoch: t.master_epoch,
        master: NodeId(1),
    };
    assert_eq!(s.apply(&again), MetaResponse::Done);
    let t = s.tablet(t.id).expect("tablet");
    assert_eq!((t.master, t.master_liveness), (NodeId(1), LivenessEpoch(1)));
    // Removing a node keeps its record: epochs never go back.
    let bump2 = MetaCommand::IncrementEpoch {
        node: NodeId(2),
        seen: Liveness::default(),
    };
    assert_eq!(s.apply(&bump2), MetaResponse::Done);
    assert_eq!(
        s.apply(&MetaCommand::RemoveNode { id: NodeId(2) }),
        MetaResponse::Done
    );
    assert_eq!(s.liveness(NodeId(2)).epoch, LivenessEpoch(1));
}

#[test]
fn bad_names_change_nothing() {
    let mut s = MetaState::default();
    for bad in ["", "1a", "a b", &"x".repeat(65)] {
        assert!(matches!(
            s.apply(&create(bad, false)),
            MetaResponse::Rejected(MetaError::Invalid { .. })
        ));
    }
    assert_eq!(s, MetaState::default());
}

#[test]
fn apply_is_deterministic() {
    let cmds = [
        create("a", false),
        create("b", false),
        MetaCommand::DropTable { name: "a".into() },
        create("a", true),
    ];
    let (mut x, mut y) = (MetaState::default(), MetaState::default());
    let rx: Vec<_> = cmds.iter().map(|c| x.apply(c)).collect();
    let ry: Vec<_> = cmds.iter().map(|c| y.apply(c)).collect();
    assert_eq!((rx, x), (ry, y));
}

#[test]
fn merges_join_neighbours_once_and_can_be_called_off() {
    let mut s = MetaState::default();
    register(&mut s, Some(1), "a:1");
    let mut spec = create("m", false);
    if let MetaCommand::CreateTable { spec, .. } = &mut spec {
        spec.split_keys = vec![b"g".to_vec(), b"p".to_vec()];
    }
    let MetaResponse::Table { table, .. } = s.apply(&spec) else {
        panic!("create");
    };
    let (a, b, c) = (&table.tablets[0], &table.tablets[1], &table.tablets[2]);
    let intent = |left: &TabletDesc, right: &TabletDesc, generations| MetaCommand::MergeIntent {
        left: left.id,
        right: right.id,
        expect_generations: generations,
    };
    let rejected = |r: MetaResponse| matches!(r, MetaResponse::Rejected(_));
    assert!(
        rejected(s.apply(&intent(a, b, (1, 2)))),
        "a generation moved on"
    );
    assert!(rejected(s.apply(&intent(a, c, (1, 1)))), "not neighbours");
    assert!(
        rejected(s.apply(&intent(b, a, (1, 1)))),
        "the wrong way round"
    );
    assert_eq!(s.apply(&intent(b, c, (1, 1))), MetaResponse::Done);
    assert_eq!(
        s.apply(&intent(b, c, (1, 1))),
        MetaResponse::Done,
        "again: the same"
    );
    assert!(
        rejected(s.apply(&intent(a, b, (1, 1)))),
        "b is merging already"
    );
    let split = MetaCommand::SplitIntent {
        tablet: c.id,
        expect_generation: 1,
        key: b"x".to_vec(),
    };
    assert!(rejected(s.apply(&split)), "no split while merging");
    let commit = MetaCommand::MergeCommit {
        left: b.id,
        right: c.id,
    };
    assert_eq!(s.apply(&commit), MetaResponse::Done);
    assert_eq!(s.apply(&commit), MetaResponse::Done, "done again when done");
    let t = &s.tables["m"];
    assert_eq!(t.tablets.len(), 2);
    let merged = &t.tablets[1];
    assert_eq!((merged.id, merged.end.clone()), (b.id, None));
    assert_eq!(merged.generation, 2);
    assert_eq!((merged.merge, merged.absorbed), (None, Some(c.id)));
    assert!(s.tablet(c.id).is_none(), "the right tablet ends");
    assert!(s.table_of(c.id).is_none());
    // Called off: the intent goes from both, nothing else changes.
    let merged = merged.clone();
    assert_eq!(s.apply(&intent(a, &merged, (1, 2))), MetaResponse::Done);
    let abort = MetaCommand::MergeAbort {
        left: a.id,
        right: merged.id,
    };
    assert_eq!(s.apply(&abort), MetaResponse::Done);
    let t = &s.tables["m"];
    assert!(t.tablets.iter().all(|t| t.merge.is_none()));
    assert_eq!(t.tablets.len(), 2);
    assert!(s.counts_agree(), "tablet counts follow merges");
    let MetaResponse::Split(right) = s.apply(&MetaCommand::SplitIntent {
        tablet: a.id,
        expect_generation: 1,
        key: b"c".to_vec(),
    }) else {
        panic!("split intent");
    };
    assert_eq!(
        s.apply(&MetaCommand::SplitCommit {
            tablet: a.id,
            right
        }),
        MetaResponse::Done
    );
    assert_eq!(s.tables["m"].tablets.len(), 3);
    assert!(s.counts_agree(), "tablet counts follow splits");
}
