//! The failover decisions on metadata built by the state machine's own commands.

use super::*;
use crate::catalog::TableSpec;
use crate::meta::MetaCommand;

/// Three nodes with liveness records expiring at `until` ms, and one strong table
/// whose single tablet node 1 masters (replicas 1, 2, 3, all in sync).
fn cluster(until: u64) -> MetaState {
    let mut s = MetaState::default();
    for id in 1..=3 {
        s.apply(&MetaCommand::RegisterNode {
            id: Some(NodeId(id)),
            grpc_addr: format!("n{id}:1"),
            http_addr: format!("n{id}:2"),
        });
        s.apply(&MetaCommand::Heartbeat {
            node: NodeId(id),
            epoch: Default::default(),
            expiration_ms: until,
        });
    }
    let created = s.apply(&MetaCommand::CreateTable {
        spec: TableSpec {
            name: "t".into(),
            policy: PolicyKind::Strong,
            replication_factor: 3,
            version_retention_secs: 0,
            options: Default::default(),
            split_keys: Vec::new(),
        },
        if_not_exists: false,
        proposer: NodeId(1),
    });
    assert!(matches!(created, MetaResponse::Table { .. }), "{created:?}");
    s
}

fn nodes(ids: &[u64]) -> BTreeSet<NodeId> {
    ids.iter().map(|n| NodeId(*n)).collect()
}

fn master(s: &MetaState) -> NodeId {
    s.tables["t"].tablets[0].master
}

#[test]
fn a_master_with_a_current_record_is_never_fenced() {
    let s = cluster(1_000);
    assert_eq!(master(&s), NodeId(1));
    // Silent in the ping round, but its record has not expired.
    assert!(to_fence(&s, &nodes(&[2, 3]), 1_000, 500, 0).is_empty());
}

#[test]
fn a_silent_master_whose_record_expired_is_fenced_at_the_record_read() {
    let s = cluster(1_000);
    let fence = to_fence(&s, &nodes(&[2, 3]), 1_001, 500, 0);
    assert_eq!(fence, vec![(NodeId(1), s.liveness(NodeId(1)))]);
}

#[test]
fn a_master_that_answers_pings_but_cannot_heartbeat_is_fenced_after_a_lease() {
    let s = cluster(1_000);
    let live = nodes(&[1, 2, 3]);
    assert!(
        to_fence(&s, &live, 1_500, 500, 0).is_empty(),
        "lapsed for a lease, not more"
    );
    assert_eq!(to_fence(&s, &live, 1_501, 500, 0).len(), 1);
    // The time before this node led does not count: nobody could heartbeat.
    assert!(to_fence(&s, &live, 1_501, 500, 1_200).is_empty());
    assert_eq!(to_fence(&s, &live, 1_701, 500, 1_200).len(), 1);
}

#[test]
fn a_fenced_masters_tablets_are_orphans_offered_to_live_current_in_sync_replicas() {
    let mut s = cluster(1_000);
    assert!(orphans(&s).is_empty());
    let seen = s.liveness(NodeId(1));
    assert_eq!(
        s.apply(&MetaCommand::IncrementEpoch {
            node: NodeId(1),
            seen
        }),
        MetaResponse::Done
    );
    let orphaned = orphans(&s);
    assert_eq!(orphaned.len(), 1);
    assert!(
        to_fence(&s, &nodes(&[]), 5_000, 500, 0).is_empty(),
        "fenced once"
    );
    let tablet = orphaned[0].id;
    // Node 3 did not answer the ping round; node 2's record is current.
    assert_eq!(
        asks(&s, &orphaned, &nodes(&[2]), 900),
        BTreeMap::from([(NodeId(2), vec![tablet])])
    );
    // An expired record does not make a candidate, even for a node that answers.
    assert!(asks(&s, &orphaned, &nodes(&[2, 3]), 1_001).is_empty());
}
