//! Splitting a strong tablet at a key (DESIGN §8). No data moves: the tablets of a
//! table share its keyspace on every node. The tablet's master
//!
//! 1. records the intent in the metadata (`SplitIntent`, compare-and-set on the
//!    tablet's generation), which takes the right half's id;
//! 2. appends a split record to the tablet's oplog: from it on the tablet orders no
//!    write at or past the key (those get a retryable `Splitting`), and every replica
//!    that appends the record begins the right half there, in the same write;
//! 3. waits until the record commits (every in-sync replica holds it, so every write
//!    before it committed too);
//! 4. records both halves in the next generation (`SplitCommit`), with the same
//!    replicas, in-sync set and master; the right half is mastered in the next
//!    epoch, starting its own oplog after its base.
//!
//! A crash at any step resolves from the intent and the log: whoever masters the
//! tablet next finds the intent in its descriptor and carries the split on, from the
//! split record its log holds or with a new one (a record that did not commit is cut
//! from the followers that hold it, and the right half's base with it). The steps
//! are idempotent, so two drivers of one split are harmless.

use super::policy::StrongPolicy;
use super::writer::Command;
use super::{Outcome, StrongTablets};
use crate::catalog::TableDesc;
use crate::error::{Error, Result};
use crate::meta::RaftCatalog;
use datalayer_store::TabletId;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a split waits for its record to commit before it gives up (the intent
/// stays; the next metadata change or request carries it on).
const COMMIT_WAIT: Duration = Duration::from_secs(20);

impl StrongTablets {
    /// Appends the split record of `tablet` at `key` (once; the answer names it).
    pub(super) async fn split_record(
        &self,
        tablet: TabletId,
        key: Vec<u8>,
        right: TabletId,
    ) -> Result<Outcome> {
        self.call(|reply| Command::Split {
            tablet,
            key,
            right,
            reply,
        })
        .await
    }
}

/// Carries the recorded split of `tablet` at `key` into `right` through steps 2 to
/// 4; this node must master the tablet.
pub(super) async fn finish(
    catalog: &RaftCatalog,
    tablets: &StrongTablets,
    tablet: TabletId,
    key: Vec<u8>,
    right: TabletId,
    by_hand: bool,
) -> Result<()> {
    let fail = |name: &str| {
        if by_hand {
            crate::fail::point(name, &key);
        }
    };
    let outcome = tablets.split_record(tablet, key.clone(), right).await?;
    fail("split-after-record");
    let seq = outcome
        .position
        .ok_or_else(|| Error::Internal("a split record has a position".into()))?
        .seq;
    wait_committed(tablets, tablet, seq).await?;
    fail("split-before-commit");
    catalog.split_commit(tablet, right).await?;
    // Answer once this node routes by the new descriptors.
    until_catalog(catalog, |c| c.tablet(right).is_some()).await?;
    tracing::info!(%tablet, %right, %seq, "tablet split");
    Ok(())
}

/// Waits until `tablet`'s log (this node masters it) is committed through `seq`.
pub(super) async fn wait_committed(
    tablets: &StrongTablets,
    tablet: TabletId,
    seq: datalayer_store::Seq,
) -> Result<()> {
    let view = tablets
        .mastership(tablet)
        .ok_or(Error::NotServing { tablet })?
        .wait_for(COMMIT_WAIT, move |v| {
            v.deposed || v.acks.high_watermark().0 >= seq
        })
        .await
        .ok_or(Error::NotConfirmed {
            tablet,
            waited_ms: COMMIT_WAIT.as_millis() as u64,
        })?;
    if view.deposed {
        return Err(Error::NotServing { tablet });
    }
    Ok(())
}

/// Waits until this node's metadata shows what `done` looks for, catching up with
/// the metadata leader meanwhile.
pub(super) async fn until_catalog(
    catalog: &RaftCatalog,
    done: impl Fn(&RaftCatalog) -> bool,
) -> Result<()> {
    let start = Instant::now();
    while !done(catalog) {
        if start.elapsed() > COMMIT_WAIT {
            return Err(Error::Metadata(crate::error::MetaUnavailable::Behind));
        }
        catalog.sync().await?;
    }
    Ok(())
}

impl StrongPolicy {
    /// Splits the tablet of `table` holding `key` at `key`: the tablet keeps the keys
    /// below it and a new tablet the rest. Served by the tablet's master (others
    /// answer where it is). Returns the table as this node then has it.
    pub async fn split(&self, table: &str, key: Vec<u8>) -> Result<Arc<TableDesc>> {
        let desc = self.tablets_table(table).await?;
        let tablet = desc.tablet_for(&key).clone();
        if tablet.start == key {
            return Err(Error::invalid(
                "key",
                format!(
                    "{:?} is where {} starts already",
                    String::from_utf8_lossy(&key),
                    tablet.id
                ),
            ));
        }
        self.ensure_mastered(&tablet).await?;
        let right = match &tablet.split {
            Some(intent) if intent.key == key => intent.right,
            Some(intent) => {
                return Err(Error::Splitting {
                    tablet: tablet.id,
                    key: String::from_utf8_lossy(&intent.key).into_owned(),
                });
            }
            None => {
                self.catalog
                    .split_intent(tablet.id, tablet.generation, key.clone())
                    .await?
            }
        };
        crate::fail::point("split-after-intent", &key);
        finish(&self.catalog, &self.tablets, tablet.id, key, right, true).await?;
        self.tablets_table(&desc.name).await
    }

    /// Carries on, in the background, a split this node's tablet has recorded but
    /// not finished (its master crashed or was replaced part-way); once per tablet at
    /// a time.
    pub(super) fn resume_split(&self, tablet: TabletId) {
        let Some(intent) = self.catalog.tablet(tablet).and_then(|t| t.split) else {
            return;
        };
        if !self.resuming.lock().insert(tablet) {
            return;
        }
        let (catalog, tablets, resuming) = (
            self.catalog.clone(),
            self.tablets.clone(),
            self.resuming.clone(),
        );
        let me = self.me;
        tokio::spawn(async move {
            tracing::info!(%tablet, right = %intent.right, "carrying on a recorded split");
            let mut backoff = Duration::from_millis(100);
            loop {
                let key = intent.key.clone();
                match finish(&catalog, &tablets, tablet, key, intent.right, false).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(%tablet, error = %e, "carrying on a split failed; retrying")
                    }
                }
                // Retried while this node masters the tablet and the split is open.
                let open = catalog
                    .tablet(tablet)
                    .is_some_and(|t| t.master == me && t.split.as_ref() == Some(&intent));
                if !open {
                    break;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            resuming.lock().remove(&tablet);
        });
    }
}
