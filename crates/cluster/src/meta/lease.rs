//! Master leases (DESIGN §6: "mastership is a lease tied to the node's liveness").
//!
//! The metadata leader grants every node a lease on each controller tick, after
//! confirming with a quorum that it still leads (so a deposed leader grants nothing):
//! the grant carries the leader's wall clock when the confirmation began. A node holds
//! its lease until `sent + lease - max_clock_offset` on its own clock, and only once it
//! has applied the metadata the leader had (a master deposed while it was cut off must
//! not serve on a fresh lease before it knows). The controller
//! appoints a new master only after the old one failed to answer for the failover
//! timeout, which is longer than the lease, so the old master has stopped serving
//! before the new one starts — unless clocks drift apart by more than the configured
//! maximum offset.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds of the wall clock.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What the leader sends with a liveness ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrant {
    /// The leader's Raft term.
    pub term: u64,
    /// The leader's wall clock (ms) before it confirmed its leadership.
    pub sent_ms: u64,
    /// The metadata the leader had applied: a node renews its lease only once it has
    /// applied as much, so a master deposed while it was cut off learns that before
    /// it serves again.
    #[serde(default)]
    pub applied: u64,
}

/// This node's lease.
#[derive(Debug)]
pub struct Lease {
    until_ms: AtomicU64,
    lease: Duration,
    max_offset: Duration,
}

impl Lease {
    /// A lease of `lease` per grant, trusting clocks to within `max_offset`.
    pub fn new(lease: Duration, max_offset: Duration) -> Lease {
        Lease {
            until_ms: AtomicU64::new(0),
            lease,
            max_offset,
        }
    }

    /// Extends the lease by a grant sent at `sent_ms` (leader's clock).
    pub fn renew(&self, sent_ms: u64) {
        let until = (sent_ms + self.lease.as_millis() as u64)
            .saturating_sub(self.max_offset.as_millis() as u64);
        self.until_ms.fetch_max(until, Ordering::AcqRel);
    }

    /// Whether the lease holds now.
    pub fn valid(&self) -> bool {
        wall_ms() < self.until_ms.load(Ordering::Acquire)
    }

    /// How long the lease still holds (zero when lapsed).
    pub fn remaining(&self) -> Duration {
        Duration::from_millis(
            self.until_ms
                .load(Ordering::Acquire)
                .saturating_sub(wall_ms()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_holds_for_its_length_less_the_clock_offset() {
        let l = Lease::new(Duration::from_millis(1000), Duration::from_millis(250));
        assert!(!l.valid(), "no grant, no lease");
        l.renew(wall_ms());
        assert!(l.valid());
        assert!(l.remaining() <= Duration::from_millis(750));
        // An older grant never shortens it; one from the past has lapsed.
        l.renew(wall_ms() - 5000);
        assert!(l.valid());
        let old = Lease::new(Duration::from_millis(1000), Duration::from_millis(250));
        old.renew(wall_ms() - 800);
        assert!(!old.valid());
    }
}
