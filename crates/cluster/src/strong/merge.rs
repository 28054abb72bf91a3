//! Merging a strong tablet into its left neighbour (DESIGN §8). No data moves: the
//! tablets of a table share its keyspace on every node. Both tablets have the same
//! master and replicas (a merge by hand first hands the right one over to the left
//! one's master); that master
//!
//! 1. records the intent on both in the metadata (`MergeIntent`, compare-and-set on
//!    both generations, every replica in sync);
//! 2. stops ordering writes on the right tablet (they get a retryable
//!    `HANDING_OVER` until the merge is recorded) and waits until its whole log is
//!    held by every in-sync replica of the left one;
//! 3. appends an absorb record to the left tablet's oplog (its timestamp orders
//!    every later write of the merged tablet after every write of the right one; it
//!    carries the right one's last answered requests, so their retries are answered
//!    from the log) and waits until it commits;
//! 4. records the merged tablet in the next generation (`MergeCommit`); every
//!    replica then forgets the right tablet's own state (`absorbed`), keeping its
//!    data.
//!
//! A crash at any step resolves from the intent: whoever masters the left tablet
//! next carries the merge on when it masters the right one too, and calls it off
//! (`MergeAbort`) when it does not; nothing but the intent has to be undone (an
//! absorb record without a `MergeCommit` changes no data, and the right tablet's
//! stop lived in its old master's memory only).

use super::policy::StrongPolicy;
use super::writer::Command;
use super::{Outcome, StrongTablets};
use crate::catalog::{MergeIntent, TableDesc, TabletDesc};
use crate::error::{Error, Result};
use crate::meta::RaftCatalog;
use datalayer_store::{Seq, TabletId};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long each wait of a merge lasts before it gives up (the intent stays).
const WAIT: Duration = Duration::from_secs(20);

impl StrongTablets {
    /// Appends the absorb record of `tablet` taking `right` over (through `through`).
    async fn absorb_record(
        &self,
        tablet: TabletId,
        right: TabletId,
        through: Seq,
    ) -> Result<Outcome> {
        self.call(|reply| Command::Absorb {
            tablet,
            right,
            through,
            reply,
        })
        .await
    }

    /// Stops ordering writes on `tablet`; its log end.
    async fn stop_writes(&self, tablet: TabletId) -> Result<Seq> {
        self.call(|reply| Command::Fence {
            tablet,
            fenced: true,
            reply,
        })
        .await
    }
}

/// Steps 2 to 4 of the merge `intent`; this node must master both tablets.
async fn finish(
    catalog: &RaftCatalog,
    tablets: &StrongTablets,
    intent: MergeIntent,
    by_hand: Option<&[u8]>,
) -> Result<()> {
    let right = intent.right;
    // The fail points of a merge by hand are armed for the key it names.
    let fail = |name: &str| {
        if let Some(key) = by_hand {
            crate::fail::point(name, key);
        }
    };
    let through = tablets.stop_writes(right).await?;
    let result = absorb(catalog, tablets, intent, through, &fail).await;
    if result.is_err() && catalog.tablet(right).is_some() {
        // Not merged: the right tablet takes writes again meanwhile.
        tablets.resume(right).await;
    }
    result
}

async fn absorb(
    catalog: &RaftCatalog,
    tablets: &StrongTablets,
    MergeIntent { left, right }: MergeIntent,
    through: Seq,
    fail: &(dyn Fn(&str) + Sync),
) -> Result<()> {
    let in_sync = catalog
        .tablet(left)
        .ok_or(Error::TabletGone { tablet: left })?
        .in_sync;
    let me = catalog.node();
    let held = tablets
        .mastership(right)
        .ok_or(Error::NotServing { tablet: right })?
        .wait_for(WAIT, move |v| {
            v.deposed
                || (v.acks.high_watermark().0 >= through
                    && in_sync.iter().all(|n| {
                        *n == me || v.acks.followers.get(n).is_some_and(|(s, _)| *s >= through)
                    }))
        })
        .await
        .ok_or(Error::NotConfirmed {
            tablet: right,
            waited_ms: WAIT.as_millis() as u64,
        })?;
    if held.deposed {
        return Err(Error::NotServing { tablet: right });
    }
    fail("merge-after-stop");
    let seq = tablets
        .absorb_record(left, right, through)
        .await?
        .position
        .ok_or_else(|| Error::Internal("an absorb record has a position".into()))?
        .seq;
    fail("merge-after-record");
    super::split::wait_committed(tablets, left, seq).await?;
    fail("merge-before-commit");
    catalog.merge_commit(left, right).await?;
    super::split::until_catalog(catalog, |c| c.tablet(right).is_none()).await?;
    tracing::info!(%left, %right, %seq, "tablets merged");
    Ok(())
}

/// Frees a tablet's driver slot when the driver ends, however it ends.
struct Driving {
    resuming: Arc<parking_lot::Mutex<std::collections::HashSet<TabletId>>>,
    tablet: TabletId,
}

impl Drop for Driving {
    fn drop(&mut self) {
        self.resuming.lock().remove(&self.tablet);
    }
}

impl StrongPolicy {
    /// Merges the tablet of `table` that starts at `key` into its left neighbour.
    /// Served by the left one's master; when the two have different masters, the
    /// right one is first handed over to the left one's. Returns the table after.
    pub async fn merge(&self, table: &str, key: Vec<u8>) -> Result<Arc<TableDesc>> {
        let desc = self.tablets_table(table).await?;
        let at = desc.tablets.iter().position(|t| t.start == key);
        let (left, right) = match at {
            Some(at) if at > 0 => (desc.tablets[at - 1].clone(), desc.tablets[at].clone()),
            _ => {
                return Err(Error::invalid(
                    "key",
                    format!(
                        "no tablet of {table:?} but the first starts at {:?}: merge names the start of the right tablet",
                        String::from_utf8_lossy(&key)
                    ),
                ));
            }
        };
        // A hand-over (the rebalancer's, say) may have just shrunk an in-sync set.
        let right = self.all_in_sync(right.id).await?;
        let left = self.all_in_sync(left.id).await?;
        self.ensure_mastered(&left).await?;
        // One driver per merge: the background one (`resume_merge`) stays out.
        if !self.resuming.lock().insert(left.id) {
            return Err(Error::Metadata(crate::error::MetaUnavailable::Conflict {
                what: format!("a merge into {} is under way", left.id),
            }));
        }
        let _driving = Driving {
            resuming: self.resuming.clone(),
            tablet: left.id,
        };
        let intent = MergeIntent {
            left: left.id,
            right: right.id,
        };
        match (left.merge, right.merge) {
            (Some(a), Some(b)) if a == intent && b == intent => {}
            _ => self.catalog.merge_intent(&left, &right).await?,
        }
        crate::fail::point("merge-after-intent", &key);
        self.master_both(table, intent).await?;
        finish(&self.catalog, &self.tablets, intent, Some(&key)).await?;
        self.tablets_table(table).await
    }

    /// Gives the right tablet of `intent` this node's mastership (this node masters
    /// the left one), as the merge's first step.
    async fn master_both(&self, table: &str, intent: MergeIntent) -> Result<()> {
        let right = self.catalog.tablet(intent.right).ok_or(Error::TabletGone {
            tablet: intent.right,
        })?;
        if right.master != self.me {
            self.transfer_master(table, &right.start, self.me).await?;
        }
        let right = self.all_in_sync(intent.right).await?;
        self.ensure_mastered(&right).await?;
        Ok(())
    }

    /// `tablet` once every replica of it is in sync (at most [`WAIT`]).
    async fn all_in_sync(&self, tablet: TabletId) -> Result<TabletDesc> {
        let mut applied = self.catalog.applied();
        let deadline = Instant::now() + WAIT;
        loop {
            let t = self
                .catalog
                .tablet(tablet)
                .ok_or(Error::TabletGone { tablet })?;
            if t.replicas.iter().all(|n| t.in_sync.contains(n)) {
                return Ok(t);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, applied.changed()).await.is_err() {
                return Err(Error::NotConfirmed {
                    tablet,
                    waited_ms: WAIT.as_millis() as u64,
                });
            }
        }
    }

    /// Carries on, in the background, a merge recorded on `tablet` (mastered here)
    /// whose master crashed or was replaced part-way; calls it off when this node
    /// does not master both tablets. Once per tablet at a time.
    pub(super) fn resume_merge(&self, tablet: &TabletDesc) {
        let Some(intent) = tablet.merge.filter(|i| i.left == tablet.id) else {
            return;
        };
        if !self.resuming.lock().insert(tablet.id) {
            return;
        }
        let (catalog, tablets, resuming) = (
            self.catalog.clone(),
            self.tablets.clone(),
            self.resuming.clone(),
        );
        let me = self.me;
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                let (l, r) = (catalog.tablet(intent.left), catalog.tablet(intent.right));
                let open =
                    |t: &Option<TabletDesc>| t.as_ref().is_some_and(|t| t.merge == Some(intent));
                if !open(&l) || l.as_ref().is_none_or(|l| l.master != me) {
                    break;
                }
                let outcome = if r.as_ref().is_some_and(|r| r.master == me) && open(&r) {
                    tracing::info!(left = %intent.left, right = %intent.right, "carrying on a recorded merge");
                    finish(&catalog, &tablets, intent, None).await
                } else {
                    tracing::info!(left = %intent.left, right = %intent.right, "calling off a merge: its tablets no longer share a master");
                    catalog.merge_abort(intent.left, intent.right).await
                };
                match outcome {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(left = %intent.left, error = %e, "a recorded merge did not finish; retrying")
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            resuming.lock().remove(&intent.left);
        });
    }

    /// Forgets the own state (not the data) of the tablet `tablet` absorbed in its
    /// last merge, if this node still holds it.
    pub(super) async fn retire_absorbed(&self, tablet: &TabletDesc) -> Result<()> {
        let Some(right) = tablet.absorbed else {
            return Ok(());
        };
        if self.retired.lock().contains(&right) {
            return Ok(());
        }
        if self.catalog.tablet(right).is_none()
            && (self.followed.lock().remove(&right).is_some()
                || self.tablets.replica_position(right)?.is_some()
                || self.tablets.mastership(right).is_some())
        {
            // An empty range: the data stays, it is `tablet`'s now.
            let retired = TabletDesc {
                id: right,
                end: Some(tablet.start.clone()),
                ..tablet.clone()
            };
            self.tablets.drop_replica(&retired).await?;
            tracing::info!(tablet = %right, into = %tablet.id, "merged away: forgot its own state");
        }
        self.retired.lock().insert(right);
        Ok(())
    }
}
