//! The life of a strong tablet on this node: mastering it (in a new epoch after a
//! restart), following it, letting it go, purging a dropped table, handing the
//! mastership over, and decommissioning a node (TiKV raftstore-v2's
//! `operation/life.rs` and `transfer_leader.rs`).
//!
//! Invariants:
//! - A master never writes records at positions its followers may hold from an
//!   earlier run of the same epoch: a node whose log already holds the tablet's
//!   epoch has itself appointed again in the next one first.
//! - A planned hand-over loses nothing, even writes acknowledged with `acks=1`:
//!   writes stop, the target catches up, this node stops answering, then the
//!   metadata appoints the target in the next epoch.
//! - Changes of what this node serves run one at a time (`reconciling`).

use super::policy::StrongPolicy;
use super::{service, ship};
use crate::catalog::{Catalog, TableDesc, TabletDesc};
use crate::error::{Error, Result};
use datalayer_store::{Epoch, NodeId, TabletId};

/// What this node does with a tablet the metadata describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TabletAction {
    /// Serve it as its master.
    Master,
    /// Follow its master.
    Follow,
    /// Delete this node's replica, if any: the tablet lives elsewhere.
    LetGo,
}

/// The plan for `tablet` on node `me`.
pub(super) fn plan(tablet: &TabletDesc, me: NodeId) -> TabletAction {
    if tablet.master == me {
        TabletAction::Master
    } else if tablet.replicas.contains(&me) {
        TabletAction::Follow
    } else {
        TabletAction::LetGo
    }
}

/// Whether a master about to serve `tablet` must first have itself appointed in the
/// next epoch: its log already holds records of the tablet's epoch (`last_epoch`,
/// from an earlier run that may have shipped records it lost) and others hold
/// replicas that may have them.
pub(super) fn needs_new_epoch(tablet: &TabletDesc, last_epoch: Option<Epoch>) -> bool {
    tablet.replicas.len() > 1 && last_epoch == Some(tablet.master_epoch)
}

impl StrongPolicy {
    pub(super) async fn follow(&self, tablet: &TabletDesc) -> Result<()> {
        let known = self.followed.lock().get(&tablet.id).copied();
        if known != Some(tablet.master_epoch) {
            // Measured again (and sampled afresh) if it is mastered here again.
            self.loads.forget(tablet.id);
            self.tablets.follow_tablet(tablet).await?;
            self.followed.lock().insert(tablet.id, tablet.master_epoch);
        }
        self.retire_absorbed(tablet).await
    }

    /// Deletes this node's replica of a tablet that moved to other nodes, if any.
    pub(super) async fn let_go(&self, tablet: &TabletDesc) -> Result<()> {
        let followed = self.followed.lock().remove(&tablet.id).is_some();
        if followed || self.tablets.replica_position(tablet.id)?.is_some() {
            tracing::info!(tablet = %tablet.id, "the replica moved to other nodes: deleting it here");
            self.tablets.drop_replica(tablet).await?;
        }
        Ok(())
    }

    /// Serves `tablet` as its master in the descriptor's epoch, shipping its oplog to
    /// the followers, and keeps its in-sync set as the metadata records it.
    pub(super) async fn master_tablet(&self, tablet: &TabletDesc) -> Result<()> {
        match self.tablets.mastership(tablet.id) {
            Some(mastership) if mastership.epoch == tablet.master_epoch => {
                mastership.sync_in_sync(&tablet.in_sync);
                let added = mastership.set_replicas(&tablet.replicas);
                if !added.is_empty() {
                    tracing::info!(tablet = %tablet.id, ?added, "new replicas: shipping the oplog to them");
                    ship::add_followers(&self.catalog, &self.tablets, &mastership, &added);
                }
            }
            _ => {
                let Some(tablet) = self.new_epoch_after_restart(tablet).await? else {
                    return Ok(());
                };
                let tablet = &tablet;
                self.tablets.open_tablet(tablet).await?;
                self.followed.lock().remove(&tablet.id);
                if let Some(mastership) = self.tablets.mastership(tablet.id) {
                    tracing::info!(tablet = %tablet.id, epoch = %tablet.master_epoch, "mastering tablet");
                    ship::start(&self.catalog, &self.tablets, &mastership);
                }
            }
        }
        if tablet.split.is_some() {
            self.resume_split(tablet.id);
        }
        self.resume_merge(tablet);
        self.retire_absorbed(tablet).await?;
        Ok(())
    }

    /// The descriptor to master `tablet` by. A master ships records while it is still
    /// syncing them, so a process that died (or a write that failed) may have left
    /// followers holding records of the epoch that its own log lacks; it must never
    /// write other records at those positions in that epoch. So when this node's log
    /// already holds records of the tablet's epoch and others hold replicas, it has
    /// itself appointed again in the next epoch first (the followers then cut what
    /// its log lacks by comparing epoch histories). `None` when the metadata moved on
    /// meanwhile (the change it applies reconciles the tablet again).
    async fn new_epoch_after_restart(&self, tablet: &TabletDesc) -> Result<Option<TabletDesc>> {
        let last_epoch = self.tablets.replica_position(tablet.id)?.map(|(e, _)| e);
        if !needs_new_epoch(tablet, last_epoch) {
            return Ok(Some(tablet.clone()));
        }
        tracing::info!(tablet = %tablet.id, epoch = %tablet.master_epoch,
            "this node's log already holds the tablet's epoch: mastering it in the next one");
        self.catalog
            .appoint_master(tablet.id, tablet.master_epoch, self.me)
            .await?;
        self.catalog.sync().await?;
        Ok(self
            .catalog
            .tablet(tablet.id)
            .filter(|t| t.master == self.me && t.master_epoch > tablet.master_epoch))
    }

    /// Deletes this node's data of a dropped table; the master of its first tablet
    /// records that the data is gone.
    pub(super) async fn purge_table(&self, table: &TableDesc) -> Result<()> {
        let tablets = table.tablets.iter().map(|t| t.id).collect();
        self.tablets.drop_table(table.id, tablets).await?;
        if table.tablets.front().is_some_and(|t| t.master == self.me) {
            self.catalog.forget_dropped(table.id).await?;
        }
        Ok(())
    }

    /// The tablet, if this node masters it (mastering it from now on if the metadata
    /// says so and it does not yet), or where to go.
    pub(super) async fn ensure_mastered<'a>(
        &self,
        tablet: &'a TabletDesc,
    ) -> Result<&'a TabletDesc> {
        if tablet.master != self.me {
            return Err(self.not_master(tablet));
        }
        if !self.tablets.serves(tablet.id) {
            let _one = self.reconciling.lock().await;
            // The metadata as it is now: a hand-over may have ended while this waited.
            let now = self.catalog.tablet(tablet.id);
            if let Some(now) = now.as_ref().filter(|t| t.master != self.me) {
                return Err(self.not_master(now));
            }
            if self.tablets.serves(tablet.id) {
                return Ok(tablet);
            }
            match self.master_tablet(now.as_ref().unwrap_or(tablet)).await {
                Err(Error::StaleEpoch { .. }) => {
                    // A newer master already replicates to this node: the metadata
                    // here is behind. The client retries and finds the new master.
                    return Err(Error::StaleMetadata { tablet: tablet.id });
                }
                other => other?,
            }
        }
        Ok(tablet)
    }

    /// Where the master of `tablet` is.
    pub(super) fn not_master(&self, tablet: &TabletDesc) -> Error {
        Error::NotMaster {
            tablet: tablet.id,
            master: tablet.master,
            addr: self.catalog.node_addr(tablet.master),
        }
    }

    /// Hands `tablet`, which this node masters, over to `target` (an in-sync replica)
    /// without losing anything: writes stop, `target` catches up, the metadata appoints
    /// it in the next epoch.
    pub async fn hand_over(&self, tablet: TabletId, target: NodeId) -> Result<()> {
        let desc = self
            .catalog
            .tablet(tablet)
            .ok_or_else(|| Error::invalid("tablet_id", format!("{tablet} does not exist")))?;
        if desc.master != self.me {
            return Err(self.not_master(&desc));
        }
        if target == self.me || !desc.in_sync.contains(&target) {
            return Err(Error::invalid(
                "target",
                format!("{target} is not another in-sync replica of {tablet}"),
            ));
        }
        self.tablets.fence_for_hand_over(tablet, target).await?;
        // No request here re-masters the tablet while its appointment is under way.
        let _one = self.reconciling.lock().await;
        // The appointment may commit even when its answer does not come back, and from
        // then on the target orders writes: this node stops answering reads first.
        if let Err(e) = self.tablets.step_down(tablet).await {
            self.tablets.resume(tablet).await;
            return Err(e);
        }
        let appointed = self
            .catalog
            .appoint_master(tablet, desc.master_epoch, target)
            .await;
        // Requests here go on to the new master once the metadata here says so.
        let synced = self.catalog.sync().await;
        if let Err(e) = appointed {
            // Not handed over after all (or not known to be): if the metadata still
            // names this node, it masters the tablet again, in a new epoch.
            if synced.is_ok()
                && let Some(t) = self.catalog.tablet(tablet)
                && t.master == self.me
                && let Err(again) = self.master_tablet(&t).await
            {
                tracing::warn!(%tablet, error = %again, "mastering the tablet again after a failed hand-over failed");
            }
            return Err(e);
        }
        tracing::info!(%tablet, %target, "handed the tablet over");
        Ok(())
    }

    /// Hands every tablet this node masters over to another of its in-sync replicas
    /// (a node stopping on purpose); a tablet without one, or whose hand-over fails,
    /// stays. Returns how many were handed over.
    pub(super) async fn hand_over_every_tablet(&self) -> usize {
        let mut handed = 0;
        let strong = self.catalog.tables().into_iter();
        for table in strong.filter(|t| t.policy.on_strong_tablets()) {
            for tablet in table.tablets.iter().filter(|t| t.master == self.me) {
                let Some(target) = tablet.in_sync.iter().copied().find(|n| *n != self.me) else {
                    continue;
                };
                match self.hand_over(tablet.id, target).await {
                    Ok(()) => handed += 1,
                    Err(e) => {
                        tracing::warn!(tablet = %tablet.id, %target, error = %e, "handing the tablet over failed")
                    }
                }
            }
        }
        handed
    }

    /// Hands the tablet of `table` holding `key` over to `target` (an in-sync
    /// replica), through its master wherever it runs; answers the tablet after.
    pub async fn transfer_master(
        &self,
        table: &str,
        key: &[u8],
        target: NodeId,
    ) -> Result<TabletDesc> {
        let table = self.strong_table(table).await?;
        let tablet = table.tablet_for(key).clone();
        if tablet.master != target {
            if !tablet.in_sync.contains(&target) {
                return Err(Error::invalid(
                    "target",
                    format!(
                        "{target} is not an in-sync replica of {} (in sync: {:?})",
                        tablet.id, tablet.in_sync
                    ),
                ));
            }
            if tablet.master == self.me {
                self.hand_over(tablet.id, target).await?;
            } else {
                let addr = self
                    .catalog
                    .node_addr(tablet.master)
                    .ok_or(Error::NoAddress {
                        node: tablet.master,
                    })?;
                service::hand_over_at(self.catalog.pool(), &addr, tablet.id, target).await?;
            }
            self.catalog.sync().await?;
        }
        self.catalog
            .tablet(tablet.id)
            .ok_or(Error::TabletGone { tablet: tablet.id })
    }

    /// Removes `node` from the cluster: first every tablet it masters is handed over
    /// to one of its in-sync replicas (nothing is lost), then the metadata drops the
    /// node and gives its replica slots to other nodes, which catch up from the
    /// masters' oplogs.
    pub async fn decommission(&self, node: NodeId) -> Result<()> {
        let strong = self.catalog.tables().into_iter();
        for table in strong.filter(|t| t.policy.on_strong_tablets()) {
            for tablet in table.tablets.iter().filter(|t| t.master == node) {
                let target = tablet.in_sync.iter().copied().find(|n| *n != node).ok_or(
                    Error::NoOtherReplica {
                        tablet: tablet.id,
                        node,
                    },
                )?;
                if node == self.me {
                    self.hand_over(tablet.id, target).await?;
                } else {
                    let addr = self
                        .catalog
                        .node_addr(node)
                        .ok_or(Error::NoAddress { node })?;
                    service::hand_over_at(self.catalog.pool(), &addr, tablet.id, target).await?;
                }
            }
        }
        // The appointments must be applied here before the removal is checked.
        self.catalog.sync().await?;
        self.catalog.decommission(node).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datalayer_store::TableId;

    fn tablet(master: u64, replicas: &[u64]) -> TabletDesc {
        TabletDesc {
            id: TabletId(7),
            table: TableId(1),
            start: Vec::new(),
            end: None,
            generation: 1,
            replicas: replicas.iter().map(|n| NodeId(*n)).collect(),
            in_sync: replicas.iter().map(|n| NodeId(*n)).collect(),
            master: NodeId(master),
            master_epoch: Epoch(3),
            master_liveness: Default::default(),
            conf_version: 1,
            moving: None,
            split: None,
            merge: None,
            absorbed: None,
        }
    }

    #[test]
    fn each_node_masters_follows_or_lets_go_as_the_descriptor_says() {
        let t = tablet(1, &[1, 2]);
        assert_eq!(plan(&t, NodeId(1)), TabletAction::Master);
        assert_eq!(plan(&t, NodeId(2)), TabletAction::Follow);
        assert_eq!(plan(&t, NodeId(3)), TabletAction::LetGo);
    }

    #[test]
    fn a_restarted_master_whose_log_holds_its_epoch_takes_a_new_one_first() {
        let t = tablet(1, &[1, 2, 3]);
        assert!(
            needs_new_epoch(&t, Some(Epoch(3))),
            "followers may hold what it lost"
        );
        assert!(
            !needs_new_epoch(&t, Some(Epoch(2))),
            "a new epoch starts with its no-op"
        );
        assert!(!needs_new_epoch(&t, None), "nothing here yet");
        assert!(
            !needs_new_epoch(&tablet(1, &[1]), Some(Epoch(3))),
            "alone, nobody else holds its records"
        );
    }
}
