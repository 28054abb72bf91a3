//! The applied-records feed: for policies layered on `strong` (time series, search),
//! every replica of a tablet — master or follower — tells of each record it applied
//! once the record is committed, in oplog order, with its position, from any
//! position a subscriber resumes at (GreptimeDB's metric engine over Mito, DESIGN §9).
//!
//! ```text
//!   writer commit / master's acks ──► Committed { high watermark, voids } (watch, per tablet)
//!                                          │
//!   AppliedFeed::next ── waits for hw ≥ next ──► oplog [next, hw] ──► AppliedRecord…
//! ```
//!
//! Invariants:
//! - A record is delivered only once committed (at or below the replica's high
//!   watermark), so it is never cut from the log by a failover: a subscriber never
//!   has to take anything back.
//! - Records come in seq order without gaps from the position asked for; a
//!   subscriber that stores the position after the last record it handled resumes
//!   there after a restart. When the oplog no longer holds that position (trimmed, or
//!   the replica was replaced by a snapshot), the feed answers the store's `Trimmed`
//!   error: the subscriber rebuilds its state from the tablet's rows, then resumes at
//!   [`super::StrongTablets::committed_end`] plus one.
//! - A write voided by a committed abort record is delivered marked `voided` (it
//!   never took effect); the high watermark passes a voided record only once its
//!   abort committed, so the mark is final.

use super::Position;
use super::protocol::Void;
use crate::error::{Error, Result};
use datalayer_store::{OplogRecord, Seq, TabletEngine, TabletId};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::watch;

/// What a replica knows is committed of a tablet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Committed {
    /// The replica's high watermark.
    pub hw: Seq,
    /// Records voided by abort records still in the oplog.
    pub voids: Arc<Vec<Void>>,
}

/// One watch per tablet, shared by the writer (every replica) and the masterships
/// (whose high watermark moves with their followers' acks).
pub(crate) type CommittedEnds =
    Arc<parking_lot::RwLock<HashMap<TabletId, Arc<watch::Sender<Committed>>>>>;

/// The watch of `tablet`, created at `hw` if there is none yet.
pub(crate) fn watch_of(
    ends: &CommittedEnds,
    tablet: TabletId,
    hw: Seq,
) -> Arc<watch::Sender<Committed>> {
    if let Some(w) = ends.read().get(&tablet) {
        return w.clone();
    }
    ends.write()
        .entry(tablet)
        .or_insert_with(|| {
            Arc::new(
                watch::channel(Committed {
                    hw,
                    voids: Arc::default(),
                })
                .0,
            )
        })
        .clone()
}

/// Tells the subscribers that the replica's high watermark is `hw` and which records
/// are voided. The watermark a subscriber sees never goes down.
pub(crate) fn publish(watch: &watch::Sender<Committed>, hw: Seq, voids: &[Void]) {
    watch.send_if_modified(|c| {
        let voids_changed = c.voids.as_slice() != voids;
        if voids_changed {
            c.voids = Arc::new(voids.to_vec());
        }
        let raised = hw > c.hw;
        if raised {
            c.hw = hw;
        }
        raised || voids_changed
    });
}

/// A committed record of a tablet, as applied on this replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedRecord {
    /// Where it sits in the tablet's oplog.
    pub position: Position,
    /// The record: its timestamp, and its body (a write's mutations, a no-op of a
    /// new epoch, or an abort record).
    pub record: OplogRecord,
    /// A write voided by a committed abort record: it never took effect.
    pub voided: bool,
}

/// The committed records of one tablet on this replica, from a position on.
pub struct AppliedFeed {
    tablet: TabletId,
    next: Seq,
    committed: watch::Receiver<Committed>,
    engine: Arc<dyn TabletEngine>,
}

impl std::fmt::Debug for AppliedFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppliedFeed")
            .field("tablet", &self.tablet)
            .field("next", &self.next)
            .finish()
    }
}

impl AppliedFeed {
    pub(crate) fn new(
        tablet: TabletId,
        from: Seq,
        committed: watch::Receiver<Committed>,
        engine: Arc<dyn TabletEngine>,
    ) -> AppliedFeed {
        AppliedFeed {
            tablet,
            next: Seq(from.0.max(1)),
            committed,
            engine,
        }
    }

    /// The position of the next record the feed delivers.
    pub fn position(&self) -> Seq {
        self.next
    }

    /// Waits until at least one record from the feed's position on is committed and
    /// returns the committed records from there, in order, at most `limit` of them.
    /// Cancel-safe: a cancelled call delivers nothing and loses nothing.
    pub async fn next(&mut self, limit: usize) -> Result<Vec<AppliedRecord>> {
        let committed = loop {
            let c = self.committed.borrow_and_update().clone();
            if c.hw >= self.next {
                break c;
            }
            if self.committed.changed().await.is_err() {
                return Err(Error::NotServing {
                    tablet: self.tablet,
                });
            }
        };
        let (engine, tablet, from) = (self.engine.clone(), self.tablet, self.next);
        let want = ((committed.hw.0 - from.0 + 1) as usize).min(limit.max(1));
        let records = tokio::task::spawn_blocking(move || engine.read_oplog(tablet, from, want))
            .await
            .map_err(|e| Error::Internal(format!("oplog read task: {e}")))??;
        match records.first() {
            Some(first) if first.seq == from => {}
            _ => {
                return Err(Error::Store(datalayer_store::Error::Trimmed {
                    tablet,
                    seq: from.0,
                }));
            }
        }
        let mut out = Vec::with_capacity(records.len());
        for record in records.into_iter().take_while(|r| r.seq <= committed.hw) {
            if record.seq != self.next {
                // A gap: the replica's log was cut and refilled under the feed.
                return Err(Error::Store(datalayer_store::Error::Trimmed {
                    tablet,
                    seq: self.next.0,
                }));
            }
            let voided = committed.voids.iter().any(|v| v.covers(record.seq));
            self.next = record.seq.next();
            out.push(AppliedRecord {
                position: Position {
                    tablet,
                    epoch: record.epoch,
                    seq: record.seq,
                },
                record,
                voided,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
