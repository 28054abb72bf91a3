//! Node liveness and master leases (DESIGN §6: "mastership is a lease tied to the
//! node's liveness epoch").
//!
//! Every node keeps a liveness record in the metadata, `(epoch, expiration)`, and
//! extends it by heartbeats: each is a metadata command that succeeds only while the
//! record still has the epoch the node knows ([`heartbeat`]). A tablet's master was
//! appointed at its liveness epoch (`TabletDesc::master_liveness`); it serves the
//! tablet while its record has that epoch and has not expired by its own clock, less
//! the clocks' maximum offset ([`Lease`]).
//!
//! To replace a master, the metadata leader's controller first increments the node's
//! epoch, compare-and-set on the record it read and only once that record has expired
//! by the leader's clock: the node can no longer extend it, and has stopped serving
//! every tablet it mastered at the old epoch (its clock is at most the offset behind).
//! Only then is another node appointed. The node heartbeats again at the new epoch but
//! serves none of its old tablets until it is appointed again. Because the expiration
//! is in the replicated metadata, a newly elected metadata leader knows when a dead
//! master's lease ended and need not wait a lease from its election.

use super::raft_catalog::RaftCatalog;
use super::state::{MetaCommand, MetaResponse};
use serde::{Deserialize, Serialize};
use std::sync::Weak;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds of the wall clock.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The epoch of a node's liveness record: masterships granted at one end when the
/// controller moves the record to the next.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct LivenessEpoch(pub u64);

impl LivenessEpoch {
    /// The epoch after this one.
    pub fn next(self) -> LivenessEpoch {
        LivenessEpoch(self.0 + 1)
    }
}

impl std::fmt::Display for LivenessEpoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "liveness-{}", self.0)
    }
}

/// A node's liveness record in the metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Liveness {
    /// Incremented by the controller when the node's record expired; a node's
    /// masterships belong to the epoch they were granted in.
    pub epoch: LivenessEpoch,
    /// The node's wall clock (ms) at its last heartbeat plus the lease length.
    pub expiration_ms: u64,
}

impl Liveness {
    /// Applies a heartbeat: extends the record when it still has `epoch`.
    pub fn heartbeat(&mut self, epoch: LivenessEpoch, expiration_ms: u64) -> bool {
        if epoch != self.epoch {
            return false;
        }
        self.expiration_ms = self.expiration_ms.max(expiration_ms);
        true
    }

    /// Whether the record has expired at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        now_ms > self.expiration_ms
    }
}

/// This node's master lease: the last liveness record its heartbeats extended.
#[derive(Debug)]
pub struct Lease {
    /// `(epoch, serve until ms)`.
    held: parking_lot::Mutex<(LivenessEpoch, u64)>,
    length: Duration,
    max_offset: Duration,
}

impl Lease {
    /// A lease of `length` per heartbeat (how long a silent master keeps its
    /// tablets), trusting clocks to within `max_offset`.
    pub fn new(length: Duration, max_offset: Duration) -> Lease {
        Lease {
            held: parking_lot::Mutex::new((LivenessEpoch(0), 0)),
            length,
            max_offset,
        }
    }

    /// How long a heartbeat extends the record.
    pub fn length(&self) -> Duration {
        self.length
    }

    /// How often the node heartbeats: five times a lease, so a few slow ones in a row
    /// do not lapse it.
    pub fn heartbeat_every(&self) -> Duration {
        (self.length / 5).clamp(Duration::from_millis(20), Duration::from_secs(1))
    }

    /// The epoch this node last knew its record at.
    pub fn epoch(&self) -> LivenessEpoch {
        self.held.lock().0
    }

    /// A heartbeat sent at `sent_ms` (own clock) extended the record at `epoch`.
    pub fn renew(&self, epoch: LivenessEpoch, sent_ms: u64) {
        let until = (sent_ms + self.length.as_millis() as u64)
            .saturating_sub(self.max_offset.as_millis() as u64);
        let mut held = self.held.lock();
        if epoch > held.0 {
            *held = (epoch, until);
        } else if epoch == held.0 {
            held.1 = held.1.max(until);
        }
    }

    /// The record moved on to `epoch`: masterships of older epochs end now.
    pub fn fence(&self, epoch: LivenessEpoch) {
        let mut held = self.held.lock();
        if epoch > held.0 {
            *held = (epoch, 0);
        }
    }

    /// Whether this node may serve a mastership granted at liveness `epoch` now.
    pub fn valid_for(&self, epoch: LivenessEpoch) -> bool {
        let held = *self.held.lock();
        held.0 == epoch && wall_ms() < held.1
    }
}

/// Runs until the catalog is dropped: extends this node's liveness record every
/// [`Lease::heartbeat_every`], and learns of a new epoch when the record moved on.
///
/// Heartbeats do not wait for each other: one is sent every period even while earlier
/// ones are still committing, so a metadata commit slowed by a stalled disk sync
/// delays the renewals it carries, not every renewal after it.
pub async fn heartbeat(catalog: Weak<RaftCatalog>) {
    let again = std::sync::Arc::new(tokio::sync::Notify::new());
    loop {
        let Some(c) = catalog.upgrade() else {
            return;
        };
        let every = c.lease().heartbeat_every();
        let started = Instant::now();
        tokio::spawn(heartbeat_once(c, again.clone()));
        // The record moved on: heartbeat at the new epoch at once.
        tokio::select! {
            _ = tokio::time::sleep_until((started + every).into()) => {}
            _ = again.notified() => {}
        }
    }
}

/// Sends one heartbeat and renews or fences the lease by its answer; wakes `again`
/// when the record moved on to a new epoch.
async fn heartbeat_once(
    c: std::sync::Arc<RaftCatalog>,
    again: std::sync::Arc<tokio::sync::Notify>,
) {
    let lease = c.lease().clone();
    let started = Instant::now();
    let epoch = lease.epoch();
    let sent_ms = wall_ms();
    let cmd = MetaCommand::Heartbeat {
        node: c.node(),
        epoch,
        expiration_ms: sent_ms + lease.length().as_millis() as u64,
    };
    // A heartbeat that commits after the lease it would extend is worthless.
    let answer = tokio::time::timeout(lease.length(), c.propose(cmd, true)).await;
    drop(c);
    let took = started.elapsed();
    if took > lease.length() / 2 {
        tracing::warn!(
            took_ms = took.as_millis() as u64,
            lease_ms = lease.length().as_millis() as u64,
            "a liveness heartbeat was slow to commit (the master leases of this node \
             lapse when none commits within the lease, less the clock offset)"
        );
    }
    match answer {
        Ok(Ok(MetaResponse::Liveness { record, renewed })) => {
            if renewed {
                lease.renew(record.epoch, sent_ms);
            } else if record.epoch > epoch {
                tracing::warn!(
                    old = %epoch,
                    new = %record.epoch,
                    "this node's liveness epoch moved on: its masterships of the old epoch end"
                );
                lease.fence(record.epoch);
                again.notify_one();
            }
        }
        Ok(Ok(other)) => tracing::debug!(answer = ?other, "heartbeat refused"),
        Ok(Err(e)) => tracing::debug!(error = %e, "heartbeat failed"),
        Err(_) => tracing::debug!("heartbeat timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_holds_for_its_length_less_the_clock_offset_at_its_epoch_only() {
        let l = Lease::new(Duration::from_millis(1000), Duration::from_millis(250));
        assert!(!l.valid_for(LivenessEpoch(0)), "no heartbeat, no lease");
        l.renew(LivenessEpoch(0), wall_ms());
        assert!(l.valid_for(LivenessEpoch(0)));
        assert!(
            !l.valid_for(LivenessEpoch(1)),
            "a mastership of another epoch is not covered"
        );
        let short = Lease::new(Duration::from_millis(1000), Duration::from_millis(250));
        short.renew(LivenessEpoch(0), wall_ms() - 760);
        assert!(
            !short.valid_for(LivenessEpoch(0)),
            "the clock offset comes off the lease: 760 ms after a heartbeat it lapsed"
        );
        // An older heartbeat never shortens it; one from the past has lapsed.
        l.renew(LivenessEpoch(0), wall_ms() - 5000);
        assert!(l.valid_for(LivenessEpoch(0)));
        let old = Lease::new(Duration::from_millis(1000), Duration::from_millis(250));
        old.renew(LivenessEpoch(0), wall_ms() - 800);
        assert!(!old.valid_for(LivenessEpoch(0)));
    }

    #[test]
    fn a_new_epoch_ends_the_masterships_of_the_old_one() {
        let l = Lease::new(Duration::from_millis(1000), Duration::from_millis(250));
        l.renew(LivenessEpoch(3), wall_ms());
        l.fence(LivenessEpoch(4));
        assert!(!l.valid_for(LivenessEpoch(3)));
        assert!(
            !l.valid_for(LivenessEpoch(4)),
            "fenced: nothing until a heartbeat at the new epoch"
        );
        assert_eq!(l.epoch(), LivenessEpoch(4));
        // A late answer for the old epoch changes nothing.
        l.renew(LivenessEpoch(3), wall_ms());
        assert!(!l.valid_for(LivenessEpoch(3)));
        l.renew(LivenessEpoch(4), wall_ms());
        assert!(l.valid_for(LivenessEpoch(4)));
    }

    #[test]
    fn records_extend_only_at_their_epoch() {
        let mut r = Liveness::default();
        assert!(r.heartbeat(LivenessEpoch(0), 100));
        assert!(
            !r.heartbeat(LivenessEpoch(1), 500),
            "a heartbeat from another epoch changes nothing"
        );
        assert_eq!(r.expiration_ms, 100);
        assert!(
            r.heartbeat(LivenessEpoch(0), 50),
            "an older expiration never shortens the record"
        );
        assert_eq!(r.expiration_ms, 100);
        assert!(!r.expired(100));
        assert!(r.expired(101));
    }
}
