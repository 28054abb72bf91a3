//! The pure core of strong replication (DESIGN §6): where a follower's log stops
//! agreeing with its master's, when a write has its acks, where the high watermark
//! stands, and which replica a failover appoints. No I/O: the writer, the shippers and
//! the controller call these, and the tests below drive them through the failure
//! sequences that lose data in simpler protocols.

use datalayer_store::{Epoch, NodeId, Seq, TabletState, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How many replicas must hold a write durably before its master answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Acks {
    /// The master alone.
    One,
    /// This many distinct replicas, the master included.
    Count(u32),
    /// Every member of the in-sync set.
    #[default]
    All,
}

impl std::fmt::Display for Acks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Acks::One => write!(f, "1"),
            Acks::Count(n) => write!(f, "{n}"),
            Acks::All => write!(f, "all"),
        }
    }
}

/// The seq up to which a follower's log holds exactly the master's records.
///
/// Two logs hold the same record at a seq when they hold it in the same epoch (one
/// master orders each epoch, and its followers receive its records in order), so the
/// logs agree up to the first seq whose epochs differ. The follower keeps that
/// prefix and cuts the rest; it never cuts to its own high watermark, which would
/// drop committed records it alone may still hold (Kafka's KIP-101).
pub fn agreement(follower: &TabletState, master_history: &[(Epoch, Seq)], master_end: Seq) -> Seq {
    let master = TabletState {
        epoch_history: master_history.to_vec(),
        log_end: master_end,
        ..TabletState::default()
    };
    let mut agreed = Seq(0);
    let ends = |h: &[(Epoch, Seq)], i: usize, end: Seq| {
        h.get(i + 1).map_or(end, |(_, next)| Seq(next.0 - 1))
    };
    for (i, (epoch, first)) in follower.epoch_history.iter().enumerate() {
        let last = ends(&follower.epoch_history, i, follower.log_end);
        let Some(j) = master.epoch_history.iter().position(|(e, _)| e == epoch) else {
            return agreed;
        };
        let m_first = master.epoch_history[j].1;
        let m_last = ends(&master.epoch_history, j, master.log_end);
        if m_first != *first {
            // The epoch starts at another seq: only a gap in between could agree, and
            // records below `first` were already compared.
            return agreed;
        }
        if last > m_last {
            return m_last.max(agreed);
        }
        agreed = last;
    }
    agreed.min(master.log_end)
}

/// The durable positions a master knows, from which acks and the high watermark
/// follow.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AckState {
    /// The master.
    pub master: NodeId,
    /// The master's durable log end and the timestamp of that record.
    pub master_end: (Seq, Timestamp),
    /// Each follower's durable log end (and that record's timestamp) as acknowledged.
    pub followers: BTreeMap<NodeId, (Seq, Timestamp)>,
    /// Members whose acks `Acks::All` waits for (the master included).
    pub in_sync: Vec<NodeId>,
    /// Records voided by abort records, oldest first.
    pub voids: Vec<Void>,
    /// The highest high watermark reached so far (see [`AckState::settle`]): what
    /// committed once stays committed, even while a member of the in-sync set holds
    /// less (the metadata may put back a follower that fell behind; it must then
    /// acknowledge new records, but the old ones do not stop being committed).
    pub committed: (Seq, Timestamp),
}

/// Records `from..at` voided by the abort record at `at`. Until the abort record
/// commits, the high watermark stays below `from`, so the voided records never count
/// as committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Void {
    /// The first voided record.
    pub from: Seq,
    /// The abort record.
    pub at: Seq,
    /// Timestamp of the record before `from` (what committed reads may read at
    /// while the abort is uncommitted).
    pub before_ts: Timestamp,
}

impl Void {
    /// The void an abort record declares; `None` for other records.
    pub fn of(record: &datalayer_store::OplogRecord) -> Option<Void> {
        match record.body {
            datalayer_store::RecordBody::Abort { from, before_ts } => Some(Void {
                from,
                at: record.seq,
                before_ts,
            }),
            _ => None,
        }
    }

    /// Whether the record at `seq` is voided by it.
    pub fn covers(&self, seq: Seq) -> bool {
        self.from <= seq && seq < self.at
    }
}

impl AckState {
    /// The void covering the record at `seq`, if an abort record voided it.
    pub fn void_of(&self, seq: Seq) -> Option<&Void> {
        self.voids.iter().find(|v| v.covers(seq))
    }

    /// Whether the record at `seq` was voided by an abort record.
    pub fn voided(&self, seq: Seq) -> bool {
        self.void_of(seq).is_some()
    }

    /// Whether the record at `seq` was voided by an abort record that committed: it
    /// never takes effect, whatever happens to this master.
    pub fn aborted(&self, seq: Seq) -> bool {
        self.void_of(seq)
            .is_some_and(|v| self.high_watermark().0 >= v.at)
    }

    fn end_of(&self, node: NodeId) -> (Seq, Timestamp) {
        if node == self.master {
            self.master_end
        } else {
            self.followers
                .get(&node)
                .copied()
                .unwrap_or((Seq(0), Timestamp(0)))
        }
    }

    /// The highest seq every in-sync member holds durably, with its timestamp; held
    /// below the records of an abort that has not reached that far.
    pub fn high_watermark(&self) -> (Seq, Timestamp) {
        let hw = self.held_by_all();
        if hw.0 < self.committed.0 {
            self.committed
        } else {
            hw
        }
    }

    /// Raises [`AckState::committed`] to the high watermark the members hold now.
    pub fn settle(&mut self) {
        self.committed = self.high_watermark();
    }

    /// The highest seq every in-sync member holds now (below uncommitted aborts).
    fn held_by_all(&self) -> (Seq, Timestamp) {
        let mut hw = self
            .in_sync
            .iter()
            .chain(std::iter::once(&self.master))
            .map(|n| self.end_of(*n))
            .min_by_key(|(seq, _)| *seq)
            .unwrap_or(self.master_end);
        // Voids are ordered and never overlap (a new abort starts after every earlier
        // abort record), so at most one holds `hw`, and the newest ones come first:
        // this stays cheap however many aborts the log holds.
        for v in self.voids.iter().rev() {
            if v.at <= hw.0 {
                break;
            }
            if hw.0 >= v.from {
                hw = (Seq(v.from.0 - 1), v.before_ts);
                break;
            }
        }
        hw
    }

    /// Whether the record at `seq` has the acks asked for.
    pub fn satisfied(&self, seq: Seq, acks: Acks) -> bool {
        match acks {
            Acks::One => self.master_end.0 >= seq,
            // The master is always one of the `n`: a record only followers hold may
            // be cut if the master restarts (it is appointed again in a new epoch,
            // from its own log end).
            Acks::Count(n) => {
                let followers = self.followers.values().filter(|(s, _)| *s >= seq).count();
                self.master_end.0 >= seq && 1 + followers >= n as usize
            }
            Acks::All => self.high_watermark().0 >= seq,
        }
    }
}

/// A replica's answer to "where does your log stand".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaPosition {
    /// The replica.
    pub node: NodeId,
    /// Epoch of its last record.
    pub last_epoch: Epoch,
    /// Its log end.
    pub log_end: Seq,
}

/// The replica a failover appoints: the one with the highest `(last epoch, log end)`
/// (lowest id on ties). Every record an in-sync set acknowledged is on all its
/// members, and a log from a later epoch, or longer in the same epoch, holds every
/// record the others hold that can still commit.
pub fn choose_master(candidates: &[ReplicaPosition]) -> Option<NodeId> {
    candidates
        .iter()
        .max_by(|a, b| {
            (a.last_epoch, a.log_end)
                .cmp(&(b.last_epoch, b.log_end))
                .then(b.node.cmp(&a.node))
        })
        .map(|p| p.node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datalayer_store::OplogRecord;
    use datalayer_store::RecordBody;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn state(history: &[(u64, u64)], end: u64) -> TabletState {
        TabletState {
            epoch_history: history.iter().map(|(e, s)| (Epoch(*e), Seq(*s))).collect(),
            log_end: Seq(end),
            ..TabletState::default()
        }
    }

    #[test]
    fn agreement_of_equal_and_prefix_logs() {
        let m = state(&[(1, 1), (2, 5)], 9);
        assert_eq!(
            agreement(&state(&[(1, 1), (2, 5)], 9), &m.epoch_history, m.log_end),
            Seq(9)
        );
        assert_eq!(
            agreement(&state(&[(1, 1), (2, 5)], 6), &m.epoch_history, m.log_end),
            Seq(6)
        );
        assert_eq!(
            agreement(&state(&[(1, 1)], 3), &m.epoch_history, m.log_end),
            Seq(3)
        );
        assert_eq!(
            agreement(&state(&[], 0), &m.epoch_history, m.log_end),
            Seq(0)
        );
    }

    #[test]
    fn agreement_cuts_a_suffix_the_new_master_never_had() {
        // The follower got 1..=6 of epoch 1; the new master had 1..=4 and began epoch 2 at 5.
        let m = state(&[(1, 1), (2, 5)], 7);
        assert_eq!(
            agreement(&state(&[(1, 1)], 6), &m.epoch_history, m.log_end),
            Seq(4)
        );
        // An epoch the master never saw (a deposed master's last epoch).
        let m = state(&[(1, 1), (3, 5)], 7);
        assert_eq!(
            agreement(&state(&[(1, 1), (2, 5)], 8), &m.epoch_history, m.log_end),
            Seq(4)
        );
    }

    #[test]
    fn choose_master_prefers_later_epoch_then_longer_log() {
        let p = |n, e, s| ReplicaPosition {
            node: NodeId(n),
            last_epoch: Epoch(e),
            log_end: Seq(s),
        };
        assert_eq!(choose_master(&[p(1, 1, 9), p(2, 2, 5)]), Some(NodeId(2)));
        assert_eq!(choose_master(&[p(1, 2, 4), p(2, 2, 5)]), Some(NodeId(2)));
        assert_eq!(choose_master(&[p(3, 2, 5), p(2, 2, 5)]), Some(NodeId(2)));
        assert_eq!(choose_master(&[]), None);
    }

    #[test]
    fn an_uncommitted_abort_holds_the_high_watermark_below_what_it_voids() {
        let mut a = AckState {
            master: NodeId(1),
            master_end: (Seq(12), Timestamp(120)),
            followers: BTreeMap::from([(NodeId(2), (Seq(11), Timestamp(110)))]),
            in_sync: vec![NodeId(1), NodeId(2)],
            voids: vec![Void {
                from: Seq(9),
                at: Seq(12),
                before_ts: Timestamp(80),
            }],
            committed: (Seq(0), Timestamp(0)),
        };
        // The follower holds the voided records 9..=11 but not the abort at 12.
        assert_eq!(a.high_watermark(), (Seq(8), Timestamp(80)));
        assert!(
            !a.satisfied(Seq(9), Acks::All),
            "a voided record never commits"
        );
        assert!(a.voided(Seq(9)) && a.voided(Seq(11)));
        assert!(!a.voided(Seq(8)) && !a.voided(Seq(12)));
        assert!(!a.aborted(Seq(9)), "not final before the abort commits");
        // Before the follower reached the voided records the cap changes nothing.
        a.followers.insert(NodeId(2), (Seq(7), Timestamp(70)));
        assert_eq!(a.high_watermark(), (Seq(7), Timestamp(70)));
        // Once the abort is held everywhere, both commit together.
        a.followers.insert(NodeId(2), (Seq(12), Timestamp(120)));
        assert_eq!(a.high_watermark(), (Seq(12), Timestamp(120)));
        assert!(a.aborted(Seq(9)) && a.aborted(Seq(11)) && !a.aborted(Seq(12)));
        // A second abort, of 14..=15 at 16: only it can hold the high watermark back.
        a.voids.push(Void {
            from: Seq(14),
            at: Seq(16),
            before_ts: Timestamp(130),
        });
        a.master_end = (Seq(16), Timestamp(160));
        a.followers.insert(NodeId(2), (Seq(15), Timestamp(150)));
        assert_eq!(a.high_watermark(), (Seq(13), Timestamp(130)));
        a.followers.insert(NodeId(2), (Seq(13), Timestamp(130)));
        assert_eq!(a.high_watermark(), (Seq(13), Timestamp(130)));
        a.followers.insert(NodeId(2), (Seq(10), Timestamp(100)));
        assert_eq!(
            a.high_watermark(),
            (Seq(8), Timestamp(80)),
            "the first abort again"
        );
        a.followers.insert(NodeId(2), (Seq(16), Timestamp(160)));
        assert_eq!(a.high_watermark(), (Seq(16), Timestamp(160)));
    }

    #[test]
    fn acks_and_high_watermark() {
        let mut a = AckState {
            master: NodeId(1),
            master_end: (Seq(10), Timestamp(100)),
            followers: BTreeMap::from([
                (NodeId(2), (Seq(8), Timestamp(80))),
                (NodeId(3), (Seq(5), Timestamp(50))),
            ]),
            in_sync: vec![NodeId(1), NodeId(2), NodeId(3)],
            voids: Vec::new(),
            committed: (Seq(0), Timestamp(0)),
        };
        assert_eq!(a.high_watermark(), (Seq(5), Timestamp(50)));
        assert!(a.satisfied(Seq(10), Acks::One));
        assert!(a.satisfied(Seq(8), Acks::Count(2)));
        assert!(!a.satisfied(Seq(9), Acks::Count(2)));
        assert!(!a.satisfied(Seq(6), Acks::All));
        // The lagging follower leaves the in-sync set: `all` waits for the rest only.
        a.in_sync = vec![NodeId(1), NodeId(2)];
        assert_eq!(a.high_watermark(), (Seq(8), Timestamp(80)));
        assert!(a.satisfied(Seq(8), Acks::All));
        // The master is always part of the set.
        a.in_sync = vec![];
        assert_eq!(a.high_watermark().0, Seq(10));
        // Followers may hold records the master is still syncing (it ships them
        // during its own sync): they count for no ack level until the master holds
        // them too.
        a.in_sync = vec![NodeId(1), NodeId(2), NodeId(3)];
        a.followers.insert(NodeId(2), (Seq(14), Timestamp(140)));
        a.followers.insert(NodeId(3), (Seq(14), Timestamp(140)));
        assert!(!a.satisfied(Seq(12), Acks::Count(2)));
        assert!(!a.satisfied(Seq(12), Acks::Count(3)));
        assert!(!a.satisfied(Seq(12), Acks::All));
        assert_eq!(a.high_watermark().0, Seq(10));
        a.master_end = (Seq(14), Timestamp(140));
        assert!(a.satisfied(Seq(14), Acks::Count(3)) && a.satisfied(Seq(14), Acks::All));
    }

    #[test]
    fn the_high_watermark_never_goes_down_once_settled() {
        let mut a = AckState {
            master: NodeId(1),
            master_end: (Seq(10), Timestamp(100)),
            followers: BTreeMap::from([(NodeId(2), (Seq(10), Timestamp(100)))]),
            in_sync: vec![NodeId(1), NodeId(2)],
            ..Default::default()
        };
        a.settle();
        // A follower that fell behind comes back into the in-sync set holding less:
        // new records wait for it, the committed ones stay committed.
        a.followers.insert(NodeId(3), (Seq(4), Timestamp(40)));
        a.in_sync.push(NodeId(3));
        assert_eq!(a.high_watermark(), (Seq(10), Timestamp(100)));
        a.master_end = (Seq(12), Timestamp(120));
        a.followers.insert(NodeId(2), (Seq(12), Timestamp(120)));
        assert!(
            !a.satisfied(Seq(11), Acks::All),
            "the returning follower must hold it"
        );
        a.followers.insert(NodeId(3), (Seq(11), Timestamp(110)));
        assert!(a.satisfied(Seq(11), Acks::All) && !a.satisfied(Seq(12), Acks::All));
        // Unsettled, it is what the members hold.
        a.committed = (Seq(0), Timestamp(0));
        a.followers.insert(NodeId(3), (Seq(4), Timestamp(40)));
        assert_eq!(a.high_watermark(), (Seq(4), Timestamp(40)));
    }

    // ---- A model of the protocol: replicas with logs, a master, failovers. ----

    /// One replica's log as `(epoch, value)` per seq (seq = index + 1).
    #[derive(Debug, Clone, Default)]
    struct Replica {
        log: Vec<(u64, u64)>,
        up: bool,
    }

    impl Replica {
        fn state(&self) -> TabletState {
            let mut s = TabletState::default();
            for (i, (e, _)) in self.log.iter().enumerate() {
                s.advance(&OplogRecord {
                    epoch: Epoch(*e),
                    seq: Seq(i as u64 + 1),
                    ts: Timestamp(i as u64 + 1),
                    body: RecordBody::Noop,
                    origin: None,
                });
            }
            s
        }
    }

    /// The cluster as the controller and the master see it.
    struct Model {
        replicas: Vec<Replica>,
        master: usize,
        epoch: u64,
        in_sync: BTreeSet<usize>,
        next_value: u64,
        /// Values acknowledged with `acks=all`, at the seq they were written.
        acked_all: Vec<(u64, u64)>,
    }

    impl Model {
        fn new(n: usize) -> Model {
            let mut m = Model {
                replicas: vec![
                    Replica {
                        log: vec![],
                        up: true
                    };
                    n
                ],
                master: 0,
                epoch: 1,
                in_sync: (0..n).collect(),
                next_value: 1,
                acked_all: vec![],
            };
            m.replicas[0].log.push((1, 0)); // the epoch's no-op
            m
        }

        /// The master appends a write; nothing is acknowledged yet.
        fn write(&mut self) -> Option<u64> {
            if !self.replicas[self.master].up {
                return None;
            }
            let v = self.next_value;
            self.next_value += 1;
            self.replicas[self.master].log.push((self.epoch, v));
            Some(self.replicas[self.master].log.len() as u64)
        }

        /// The master ships up to `n` records to `f` (after the agreement check).
        fn ship(&mut self, f: usize, n: usize) {
            if f == self.master || !self.replicas[f].up || !self.replicas[self.master].up {
                return;
            }
            let ms = self.replicas[self.master].state();
            let agreed = agreement(&self.replicas[f].state(), &ms.epoch_history, ms.log_end);
            self.replicas[f].log.truncate(agreed.0 as usize);
            let from = self.replicas[f].log.len();
            let master_log = self.replicas[self.master].log.clone();
            let to = (from + n).min(master_log.len());
            self.replicas[f]
                .log
                .extend_from_slice(&master_log[from..to]);
        }

        fn acks(&self) -> AckState {
            let end = |i: usize| {
                let s = Seq(self.replicas[i].log.len() as u64);
                (s, Timestamp(s.0))
            };
            AckState {
                master: NodeId(self.master as u64),
                master_end: end(self.master),
                followers: (0..self.replicas.len())
                    .filter(|i| *i != self.master)
                    .map(|i| (NodeId(i as u64), end(i)))
                    .collect(),
                in_sync: self.in_sync.iter().map(|i| NodeId(*i as u64)).collect(),
                ..Default::default()
            }
        }

        /// Acknowledges the master's write at `seq` if `acks=all` is met now.
        fn try_ack_all(&mut self, seq: u64) -> bool {
            if self.acks().satisfied(Seq(seq), Acks::All) {
                let v = self.replicas[self.master].log[seq as usize - 1].1;
                self.acked_all.push((seq, v));
                true
            } else {
                false
            }
        }

        /// The master drops a lagging follower from the in-sync set.
        fn shrink(&mut self, f: usize) {
            if f != self.master {
                self.in_sync.remove(&f);
            }
        }

        /// A follower that caught up to the master rejoins the in-sync set.
        fn grow(&mut self, f: usize) {
            if self.replicas[f].up && self.replicas[f].log == self.replicas[self.master].log {
                self.in_sync.insert(f);
            }
        }

        /// The master crashes; the controller appoints the best live in-sync replica.
        fn fail_master(&mut self) -> bool {
            self.replicas[self.master].up = false;
            let candidates: Vec<ReplicaPosition> = self
                .in_sync
                .iter()
                .filter(|i| self.replicas[**i].up)
                .map(|i| {
                    let s = self.replicas[*i].state();
                    ReplicaPosition {
                        node: NodeId(*i as u64),
                        last_epoch: s.last_epoch().unwrap_or(Epoch(0)),
                        log_end: s.log_end,
                    }
                })
                .collect();
            let Some(next) = choose_master(&candidates) else {
                return false;
            };
            let old = self.master;
            self.in_sync.remove(&old);
            self.master = next.0 as usize;
            self.epoch += 1;
            let epoch = self.epoch;
            self.replicas[self.master].log.push((epoch, 0));
            true
        }

        fn restart(&mut self, i: usize) {
            self.replicas[i].up = true;
        }

        /// Every value acknowledged with `acks=all` is in the master's log where it
        /// was written.
        fn check(&self) {
            let log = &self.replicas[self.master].log;
            for (seq, v) in &self.acked_all {
                assert_eq!(
                    log.get(*seq as usize - 1).map(|(_, x)| x),
                    Some(v),
                    "acknowledged value {v} at seq {seq} lost; master log {log:?}"
                );
            }
        }
    }

    #[test]
    fn kip_101_case_1_follower_restart_does_not_cut_to_its_high_watermark() {
        // A masters, B follows. B holds m1 and m2, but learned HW = 1 only, then restarts.
        // Kafka before KIP-101 cut B to its HW (dropping m2), then A died and B led
        // without m2, although m2 had been acknowledged by both.
        let mut m = Model::new(2);
        let s1 = m.write().unwrap();
        let s2 = m.write().unwrap();
        m.ship(1, 10);
        assert!(m.try_ack_all(s1) && m.try_ack_all(s2));
        m.replicas[1].up = false;
        m.restart(1); // nothing cuts B's log on restart
        assert!(m.fail_master());
        assert_eq!(m.master, 1);
        m.check();
    }

    #[test]
    fn kip_101_case_2_logs_do_not_diverge_after_a_double_crash() {
        // A masters with m1 (on A and B) and m2 (on A only). Both crash; B returns
        // first and masters epoch 2, writing m3 at m2's seq. When A returns it must cut
        // m2 and take m3, not keep m2 because it was "below its HW".
        let mut m = Model::new(2);
        m.write().unwrap();
        m.ship(1, 10);
        m.write().unwrap(); // m2: only on A
        m.replicas[0].up = false;
        m.replicas[1].up = false;
        m.restart(1);
        assert!(m.fail_master());
        let s3 = m.write().unwrap();
        m.restart(0);
        m.ship(0, 10);
        assert_eq!(
            m.replicas[0].log, m.replicas[1].log,
            "logs converge on the new master's"
        );
        assert!(m.try_ack_all(s3));
        m.check();
    }

    #[test]
    fn fast_double_failover_keeps_acknowledged_writes() {
        let mut m = Model::new(3);
        let s = m.write().unwrap();
        m.ship(1, 10);
        m.ship(2, 10);
        assert!(m.try_ack_all(s));
        m.write().unwrap(); // reaches replica 1 only
        m.ship(1, 10);
        assert!(m.fail_master()); // 1 has the longest log
        assert_eq!(m.master, 1);
        assert!(m.fail_master()); // dies before shipping anything
        assert_eq!(m.master, 2);
        m.check();
        m.restart(0);
        m.restart(1);
        m.ship(0, 100);
        m.ship(1, 100);
        assert_eq!(m.replicas[0].log, m.replicas[2].log);
        assert_eq!(m.replicas[1].log, m.replicas[2].log);
    }

    #[test]
    fn a_crash_at_each_step_of_catch_up_still_converges() {
        // Replica 0 masters epoch 1 and writes 4 records only it holds; it dies, 1
        // masters epoch 2 and writes 3 more (acknowledged by 1 and 2).
        let mut m = Model::new(3);
        m.ship(1, 10);
        m.ship(2, 10);
        for _ in 0..4 {
            m.write();
        }
        assert!(m.fail_master());
        let acked: Vec<u64> = (0..3).filter_map(|_| m.write()).collect();
        m.ship(2, 10);
        for seq in acked {
            assert!(m.try_ack_all(seq));
        }
        m.restart(0);
        let master_log = m.replicas[m.master].log.clone();
        // Step 1: the old master cuts its divergent suffix, then crashes.
        m.ship(0, 0);
        assert!(
            master_log.starts_with(&m.replicas[0].log),
            "only a common prefix is kept"
        );
        m.replicas[0].up = false;
        m.restart(0);
        // Step 2: it appends part of what it misses, then crashes again.
        m.ship(0, 2);
        assert!(master_log.starts_with(&m.replicas[0].log));
        m.replicas[0].up = false;
        m.restart(0);
        // Step 3: it finishes.
        m.ship(0, 100);
        assert_eq!(m.replicas[0].log, master_log);
        m.check();
    }

    #[derive(Debug, Clone)]
    enum Step {
        Write,
        Ship(usize, usize),
        Ack,
        Shrink(usize),
        Grow(usize),
        FailMaster,
        Restart(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => Just(Step::Write),
            // n = 0: the follower cuts its divergent suffix and crashes before it
            // appends anything (a crash between the steps of catch-up).
            6 => (0..3usize, 0..4usize).prop_map(|(f, n)| Step::Ship(f, n)),
            3 => Just(Step::Ack),
            1 => (0..3usize).prop_map(Step::Shrink),
            2 => (0..3usize).prop_map(Step::Grow),
            1 => Just(Step::FailMaster),
            2 => (0..3usize).prop_map(Step::Restart),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Whatever the interleaving of writes, shipping, in-sync changes, master
        /// crashes and restarts, no write acknowledged with `acks=all` is lost, and a
        /// follower that ships from the master ends with exactly the master's log.
        #[test]
        fn acknowledged_writes_survive_any_failover_sequence(
            steps in proptest::collection::vec(step(), 1..80)
        ) {
            let mut m = Model::new(3);
            let mut pending: Vec<u64> = vec![];
            for s in steps {
                match s {
                    Step::Write => pending.extend(m.write()),
                    Step::Ship(f, n) => m.ship(f, n),
                    Step::Ack => pending.retain(|seq| {
                        (*seq as usize) > m.replicas[m.master].log.len() || !m.try_ack_all(*seq)
                    }),
                    Step::Shrink(f) => m.shrink(f),
                    Step::Grow(f) => m.grow(f),
                    Step::FailMaster => {
                        // Writes not yet acknowledged stay unknown to the client.
                        if m.fail_master() {
                            pending.clear();
                        } else {
                            m.restart(m.master);
                        }
                    }
                    Step::Restart(i) => m.restart(i),
                }
                m.check();
            }
            for f in 0..3 {
                if m.replicas[f].up && m.replicas[m.master].up {
                    m.ship(f, usize::MAX / 2);
                    if f != m.master {
                        prop_assert_eq!(&m.replicas[f].log, &m.replicas[m.master].log);
                    }
                }
            }
            m.check();
        }
    }
}
