//! Hybrid logical clock.
//!
//! A [`Timestamp`] packs wall-clock milliseconds in the high 48 bits and a logical
//! counter in the low 16 bits, so it orders like time and still rises when many
//! writes land in one millisecond. The clock never goes backwards: after a restart
//! the owner raises it above every timestamp it finds on disk with [`HybridClock::observe`].

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const LOGICAL_BITS: u32 = 16;

/// A point in hybrid logical time.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The smallest timestamp; nothing is written at it.
    pub const ZERO: Timestamp = Timestamp(0);
    /// The largest timestamp: a read at `MAX` sees the latest version.
    pub const MAX: Timestamp = Timestamp(u64::MAX);

    /// The timestamp at the start of wall-clock millisecond `millis`.
    pub fn from_millis(millis: u64) -> Timestamp {
        Timestamp(millis << LOGICAL_BITS)
    }

    /// Wall-clock milliseconds since the Unix epoch.
    pub fn millis(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Milliseconds since the Unix epoch by the wall clock.
pub fn wall_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A monotonic hybrid logical clock, safe to share between threads.
#[derive(Debug, Default)]
pub struct HybridClock {
    last: AtomicU64,
}

impl HybridClock {
    /// A clock that starts at the wall clock.
    pub fn new() -> HybridClock {
        HybridClock::default()
    }

    /// A new timestamp, greater than every one returned or observed before.
    pub fn now(&self) -> Timestamp {
        let wall = Timestamp::from_millis(wall_millis()).0;
        let mut prev = self.last.load(Ordering::Relaxed);
        loop {
            let next = wall.max(prev + 1);
            match self
                .last
                .compare_exchange_weak(prev, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Timestamp(next),
                Err(seen) => prev = seen,
            }
        }
    }

    /// The latest timestamp handed out, without advancing the clock.
    pub fn peek(&self) -> Timestamp {
        let wall = Timestamp::from_millis(wall_millis()).0;
        Timestamp(self.last.load(Ordering::Acquire).max(wall))
    }

    /// Raise the clock so every later timestamp is above `seen`.
    pub fn observe(&self, seen: Timestamp) {
        self.last.fetch_max(seen.0, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_strictly_increasing() {
        let clock = HybridClock::new();
        let mut prev = clock.now();
        for _ in 0..100_000 {
            let next = clock.now();
            assert!(next > prev);
            prev = next;
        }
    }

    #[test]
    fn observe_raises_the_clock() {
        let clock = HybridClock::new();
        let far = Timestamp::from_millis(wall_millis() + 60_000);
        clock.observe(far);
        assert!(clock.now() > far);
    }

    #[test]
    fn millis_round_trip() {
        assert_eq!(Timestamp::from_millis(1234).millis(), 1234);
    }
}
