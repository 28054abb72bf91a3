//! Splits and merges of tablets (DESIGN §8), as the state machine applies them.

use super::{MetaError, MetaResponse, MetaState, invalid};
use crate::catalog::{MergeIntent, SplitIntent};
use datalayer_store::{Epoch, TabletId};
use std::sync::Arc;

fn conflict(message: String) -> MetaResponse {
    MetaResponse::Rejected(MetaError::Conflict(message))
}

impl MetaState {
    pub(super) fn split_intent(&mut self, id: TabletId, expect: u64, key: &[u8]) -> MetaResponse {
        let Some(tablet) = self.tablet(id) else {
            return MetaResponse::Rejected(MetaError::Conflict(format!("{id} no longer exists")));
        };
        if let Some(intent) = &tablet.split {
            return if intent.key == key {
                MetaResponse::Split(intent.right)
            } else {
                MetaResponse::Rejected(MetaError::Conflict(format!(
                    "{id} is already splitting at {:?}",
                    String::from_utf8_lossy(&intent.key)
                )))
            };
        }
        if tablet.generation != expect {
            return MetaResponse::Rejected(MetaError::Conflict(format!(
                "{id} is at generation {} now, not {expect}",
                tablet.generation
            )));
        }
        if tablet.moving.is_some() || tablet.merge.is_some() {
            return MetaResponse::Rejected(MetaError::Conflict(format!(
                "{id} is moving a replica or merging: it splits once that is over"
            )));
        }
        let inside = key > tablet.start.as_slice() && tablet.end.as_deref().is_none_or(|e| key < e);
        if !inside {
            return invalid(
                "key",
                format!(
                    "{:?} is not strictly inside {id}'s range (a tablet splits between its bounds)",
                    String::from_utf8_lossy(key)
                ),
            );
        }
        let right = TabletId(self.take_id());
        let tablet = self.tablet_mut(id).expect("found above");
        tablet.split = Some(SplitIntent {
            key: key.to_vec(),
            right,
        });
        MetaResponse::Split(right)
    }

    pub(super) fn split_commit(&mut self, id: TabletId, right: TabletId) -> MetaResponse {
        let Some((name, at)) = self.locate(id) else {
            return MetaResponse::Rejected(MetaError::Conflict(format!("{id} no longer exists")));
        };
        if self.tablet_tables.contains_key(&right) {
            return MetaResponse::Done; // done already
        }
        let Some(table) = self.tables.get_mut(&name) else {
            return MetaResponse::Rejected(MetaError::Conflict(format!("{id} no longer exists")));
        };
        let t = Arc::make_mut(table);
        let left = &mut t.tablets[at];
        let Some(intent) = left.split.take_if(|i| i.right == right) else {
            return MetaResponse::Rejected(MetaError::Conflict(format!(
                "{id} has no split intent for {right}"
            )));
        };
        left.generation += 1;
        let mut half = left.clone();
        left.end = Some(intent.key.clone());
        half.id = right;
        half.start = intent.key;
        // The right half's log begins at a base in the left half's epoch at the split
        // record (or an older one): its master serves it in a later epoch.
        half.master_epoch = Epoch(half.master_epoch.0 + 1);
        let index = super::TabletAt::of(&name, &half);
        t.tablets.insert(at + 1, half);
        self.tablet_tables.insert(right, index);
        MetaResponse::Done
    }

    pub(super) fn merge_intent(
        &mut self,
        left: TabletId,
        right: TabletId,
        (expect_left, expect_right): (u64, u64),
    ) -> MetaResponse {
        let intent = MergeIntent { left, right };
        let (Some(l), Some(r)) = (self.tablet(left), self.tablet(right)) else {
            return conflict(format!("{left} or {right} no longer exists"));
        };
        if l.merge == Some(intent) && r.merge == Some(intent) {
            return MetaResponse::Done;
        }
        if (l.generation, r.generation) != (expect_left, expect_right) {
            return conflict(format!(
                "{left} and {right} are at generations {} and {} now, not {expect_left} and {expect_right}",
                l.generation, r.generation
            ));
        }
        if l.table != r.table || l.end.as_ref() != Some(&r.start) {
            return invalid(
                "key",
                format!("{right} does not start where {left} ends: only neighbours merge"),
            );
        }
        let busy = |t: &crate::catalog::TabletDesc| {
            t.split.is_some() || t.merge.is_some() || t.moving.is_some()
        };
        if busy(l) || busy(r) {
            return conflict(format!(
                "{left} or {right} has a split, merge or replica move under way"
            ));
        }
        let same = |a: &[datalayer_store::NodeId], b: &[datalayer_store::NodeId]| {
            let (mut a, mut b) = (a.to_vec(), b.to_vec());
            a.sort();
            b.sort();
            a == b
        };
        if !same(&l.replicas, &r.replicas) {
            return conflict(format!(
                "{left} and {right} must have the same replicas to merge"
            ));
        }
        if !same(&l.in_sync, &l.replicas) || !same(&r.in_sync, &r.replicas) {
            return conflict(format!(
                "every replica of {left} and {right} must be in sync to merge"
            ));
        }
        for id in [left, right] {
            self.tablet_mut(id).expect("found above").merge = Some(intent);
        }
        MetaResponse::Done
    }

    pub(super) fn merge_commit(&mut self, left: TabletId, right: TabletId) -> MetaResponse {
        let intent = MergeIntent { left, right };
        let Some((name, at)) = self.locate(left) else {
            return conflict(format!("{left} no longer exists"));
        };
        let Some(table) = self.tables.get_mut(&name) else {
            return conflict(format!("{left} no longer exists"));
        };
        let t = Arc::make_mut(table);
        let Some(r) = t.tablets.get(at + 1).filter(|tb| tb.id == right) else {
            // Done already (the right one is gone and the left one absorbed it).
            return if t.tablets[at].absorbed == Some(right) {
                MetaResponse::Done
            } else {
                conflict(format!("{right} is not {left}'s right neighbour"))
            };
        };
        if t.tablets[at].merge != Some(intent) || r.merge != Some(intent) {
            return conflict(format!("{left} and {right} have no merge intent"));
        }
        let (end, generation) = (r.end.clone(), r.generation);
        t.tablets.remove(at + 1);
        let l = &mut t.tablets[at];
        l.end = end;
        l.generation = l.generation.max(generation) + 1;
        l.merge = None;
        l.absorbed = Some(right);
        self.tablet_tables.remove(&right);
        MetaResponse::Done
    }

    pub(super) fn merge_abort(&mut self, left: TabletId, right: TabletId) -> MetaResponse {
        let intent = Some(MergeIntent { left, right });
        for id in [left, right] {
            if let Some(t) = self.tablet_mut(id).filter(|t| t.merge == intent) {
                t.merge = None;
            }
        }
        MetaResponse::Done
    }
}
