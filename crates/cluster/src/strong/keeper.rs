//! The in-sync keeper: one task per tablet this node masters grows and shrinks the
//! tablet's in-sync set through the metadata group.

use super::Mastership;
use crate::meta::RaftCatalog;
use datalayer_store::{NodeId, Seq};
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// The keeper looks at the in-sync set at most this often.
const KEEPER_TICK: Duration = Duration::from_millis(200);

/// Grows and shrinks the in-sync set of `mastership`'s tablet. A follower joins once it
/// held everything the master had (the master waits for its acks before the metadata
/// says so, so no committed write misses it); one that has not caught up for
/// `replica_lag_ms` leaves (the metadata says so before the master stops waiting).
///
/// The keeper looks when the master's acknowledgements change, or when a follower
/// could pass the lag ([`next_look`]), at most once per `KEEPER_TICK`: a tablet
/// without followers costs nothing while idle.
pub(super) async fn keep(catalog: Weak<RaftCatalog>, mastership: Arc<Mastership>) {
    let started = Instant::now();
    let mut acks = mastership.subscribe();
    let mut look: Option<Instant> = Some(started);
    while !mastership.deposed() {
        tokio::time::sleep(KEEPER_TICK).await;
        let woken = async {
            match look {
                Some(at) => tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => true,
                    changed = acks.changed() => changed.is_ok(),
                },
                None => acks.changed().await.is_ok(),
            }
        };
        if !woken.await {
            return;
        }
        acks.borrow_and_update();
        // Until the metadata says otherwise, look again at the next tick.
        look = Some(Instant::now());
        let Some(catalog) = catalog.upgrade() else {
            return;
        };
        let Some(desc) = catalog.tablet(mastership.tablet) else {
            return;
        };
        if desc.master_epoch != mastership.epoch {
            continue;
        }
        let view = mastership.view();
        let caught_up = mastership.caught_up();
        let ends = view
            .acks
            .followers
            .iter()
            .map(|(n, (end, _))| (*n, *end))
            .collect();
        let seen = KeeperView {
            master: desc.master,
            replicas: &desc.replicas,
            in_sync: &desc.in_sync,
            caught_up: &caught_up,
            ends: &ends,
            epoch_first: view.epoch_first,
            started,
            now: Instant::now(),
            lag: Duration::from_millis(mastership.replica_lag_ms),
        };
        let decision = decide(&seen);
        look = next_look(&seen);
        for r in &decision.forget {
            mastership.drop_adding(*r);
        }
        let mut next = desc.in_sync.clone();
        for r in &decision.remove {
            tracing::warn!(tablet = %desc.id, follower = %r, "follower fell behind; removing it from the in-sync set");
            next.retain(|n| n != r);
        }
        // A follower counts before the metadata says so, and only if it holds
        // everything committed; the mastership refuses it otherwise.
        for r in decision.add.iter().filter(|r| mastership.add_in_sync(**r)) {
            tracing::info!(tablet = %desc.id, follower = %r, "follower caught up; adding it to the in-sync set");
            next.push(*r);
        }
        next.sort();
        next.dedup();
        let mut current = desc.in_sync.clone();
        current.sort();
        if next == current {
            continue;
        }
        // A change is due: look again at the next tick, whether it lands now or not.
        look = Some(Instant::now());
        // The set proposed replaces the whole set: decide on the metadata as it
        // stands, not on a copy that may miss this keeper's last change (putting back
        // a follower it removed would count one that lacks committed records).
        let fresh = catalog.sync().await.is_ok()
            && catalog.tablet(mastership.tablet).is_some_and(|now| {
                let mut set = now.in_sync.clone();
                set.sort();
                now.master_epoch == mastership.epoch && set == current
            });
        let proposed = fresh
            && match catalog
                .set_in_sync(desc.id, desc.master_epoch, next.clone())
                .await
            {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(tablet = %desc.id, error = %e, "changing the in-sync set failed");
                    false
                }
            };
        if !proposed {
            for r in next.iter().filter(|r| !current.contains(r)) {
                mastership.drop_adding(*r);
            }
        }
    }
}

/// What the keeper looks at for one tablet, at one tick.
#[derive(Debug)]
pub(super) struct KeeperView<'a> {
    /// The tablet's master (never in or out of its own set).
    pub master: NodeId,
    /// Nodes holding a replica.
    pub replicas: &'a [NodeId],
    /// The in-sync set as the metadata records it.
    pub in_sync: &'a [NodeId],
    /// When each follower last held everything the master had.
    pub caught_up: &'a HashMap<NodeId, Instant>,
    /// Each follower's durable log end, as it acknowledged it.
    pub ends: &'a HashMap<NodeId, Seq>,
    /// Seq of the master's epoch no-op: a follower joins only once it holds it.
    pub epoch_first: Seq,
    /// When the keeper started (a follower never caught up counts from then).
    pub started: Instant,
    /// Now.
    pub now: Instant,
    /// How long a follower may go without catching up before it leaves the set.
    pub lag: Duration,
}

/// What the keeper decided for one tablet.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct KeeperDecision {
    /// Members of the set to remove: behind for longer than the lag.
    pub remove: Vec<NodeId>,
    /// Followers to add: caught up recently and holding the epoch's no-op.
    pub add: Vec<NodeId>,
    /// Followers outside the set that fell behind: stop counting them as joining.
    pub forget: Vec<NodeId>,
}

/// When the keeper must look again if no acknowledgement changes meanwhile: when the
/// first follower still within the lag would pass it (`None`: none can, so only an
/// acknowledgement can change the decision).
pub(super) fn next_look(v: &KeeperView<'_>) -> Option<Instant> {
    v.replicas
        .iter()
        .filter(|r| **r != v.master)
        .map(|r| v.caught_up.get(r).copied().unwrap_or(v.started) + v.lag)
        .filter(|at| *at >= v.now)
        .min()
        .map(|at| at + Duration::from_millis(1))
}

/// The keeper's decision: pure, so its cases are tested by what it decides.
pub(super) fn decide(v: &KeeperView<'_>) -> KeeperDecision {
    let mut d = KeeperDecision::default();
    for r in v.replicas.iter().copied().filter(|r| *r != v.master) {
        let last = v.caught_up.get(&r).copied().unwrap_or(v.started);
        let behind = v.now.saturating_duration_since(last) > v.lag;
        let in_set = v.in_sync.contains(&r);
        let end = v.ends.get(&r).copied().unwrap_or(Seq(0));
        match (in_set, behind) {
            (true, true) => d.remove.push(r),
            (false, true) => d.forget.push(r),
            (false, false) if end >= v.epoch_first && v.caught_up.contains_key(&r) => d.add.push(r),
            _ => {}
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAG: Duration = Duration::from_secs(2);

    struct Case {
        in_sync: Vec<NodeId>,
        caught_up: HashMap<NodeId, Instant>,
        ends: HashMap<NodeId, Seq>,
        started: Instant,
        now: Instant,
    }

    impl Case {
        /// Master 1 with followers 2 and 3, ten seconds after the keeper started.
        fn new(in_sync: &[u64]) -> Case {
            let started = Instant::now();
            Case {
                in_sync: in_sync.iter().map(|n| NodeId(*n)).collect(),
                caught_up: HashMap::new(),
                ends: HashMap::new(),
                started,
                now: started + Duration::from_secs(10),
            }
        }

        fn caught_up(mut self, node: u64, ago: Duration, end: u64) -> Case {
            self.caught_up.insert(NodeId(node), self.now - ago);
            self.ends.insert(NodeId(node), Seq(end));
            self
        }

        fn view(&self) -> KeeperView<'_> {
            KeeperView {
                master: NodeId(1),
                replicas: &[NodeId(1), NodeId(2), NodeId(3)],
                in_sync: &self.in_sync,
                caught_up: &self.caught_up,
                ends: &self.ends,
                epoch_first: Seq(5),
                started: self.started,
                now: self.now,
                lag: LAG,
            }
        }

        fn decide(&self) -> KeeperDecision {
            decide(&self.view())
        }
    }

    #[test]
    fn a_member_behind_past_the_lag_leaves_and_one_within_it_stays() {
        let d = Case::new(&[1, 2, 3])
            .caught_up(2, Duration::from_millis(100), 9)
            .caught_up(3, LAG + Duration::from_millis(1), 9)
            .decide();
        assert_eq!(
            d,
            KeeperDecision {
                remove: vec![NodeId(3)],
                ..Default::default()
            }
        );
    }

    #[test]
    fn a_member_never_caught_up_counts_from_the_keepers_start() {
        let mut case = Case::new(&[1, 2]);
        case.now = case.started + LAG;
        assert_eq!(
            case.decide(),
            KeeperDecision::default(),
            "not yet past the lag"
        );
        case.now = case.started + LAG + Duration::from_millis(1);
        assert_eq!(case.decide().remove, vec![NodeId(2)]);
    }

    #[test]
    fn a_follower_joins_once_caught_up_and_holding_the_epochs_first_record() {
        let d = Case::new(&[1])
            .caught_up(2, Duration::ZERO, 5)
            .caught_up(3, Duration::ZERO, 4)
            .decide();
        assert_eq!(
            d.add,
            vec![NodeId(2)],
            "3 caught up with an older epoch only"
        );
        assert!(d.remove.is_empty() && d.forget.is_empty());
    }

    #[test]
    fn a_joining_follower_that_falls_behind_is_forgotten_not_added() {
        let d = Case::new(&[1]).caught_up(2, LAG * 2, 9).decide();
        assert_eq!(
            d,
            KeeperDecision {
                forget: vec![NodeId(2), NodeId(3)],
                ..Default::default()
            }
        );
    }

    #[test]
    fn the_keeper_looks_again_when_the_first_follower_within_the_lag_would_pass_it() {
        let case = Case::new(&[1, 2, 3])
            .caught_up(2, Duration::from_millis(100), 9)
            .caught_up(3, Duration::from_millis(500), 9);
        let v = case.view();
        let at = next_look(&v).expect("a follower can pass the lag");
        assert_eq!(
            at,
            case.now - Duration::from_millis(500) + LAG + Duration::from_millis(1)
        );
        // Then, without new acknowledgements, follower 3 is past it.
        let later = KeeperView { now: at, ..v };
        assert_eq!(decide(&later).remove, vec![NodeId(3)]);
    }

    #[test]
    fn a_master_without_followers_or_with_every_follower_past_the_lag_waits_for_acks() {
        let alone = KeeperView {
            master: NodeId(1),
            replicas: &[NodeId(1)],
            in_sync: &[NodeId(1)],
            caught_up: &HashMap::new(),
            ends: &HashMap::new(),
            epoch_first: Seq(1),
            started: Instant::now(),
            now: Instant::now(),
            lag: LAG,
        };
        assert_eq!(next_look(&alone), None);
        let case = Case::new(&[1])
            .caught_up(2, LAG * 2, 9)
            .caught_up(3, LAG * 3, 9);
        assert_eq!(next_look(&case.view()), None);
    }

    #[test]
    fn the_master_is_never_judged() {
        let d = decide(&KeeperView {
            master: NodeId(1),
            replicas: &[NodeId(1)],
            in_sync: &[NodeId(1)],
            caught_up: &HashMap::new(),
            ends: &HashMap::new(),
            epoch_first: Seq(1),
            started: Instant::now(),
            now: Instant::now() + Duration::from_secs(60),
            lag: LAG,
        });
        assert_eq!(d, KeeperDecision::default());
    }
}
