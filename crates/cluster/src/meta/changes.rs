//! Which tablets the metadata changed since its reader last looked: the router
//! reconciles those after a change, not every tablet of every table.

use super::state::{MetaState, StateKey};
use datalayer_store::TabletId;
use std::collections::BTreeSet;

/// Tablets changed since the last [`TabletChanges::take`].
#[derive(Debug, Default)]
pub struct TabletChanges {
    tablets: BTreeSet<TabletId>,
    /// Anything may have changed (a snapshot was installed, a node removed).
    all: bool,
}

/// What [`TabletChanges::take`] hands over.
#[derive(Debug, PartialEq, Eq)]
pub enum Changed {
    /// Look at every tablet.
    All,
    /// These tablets (some may be gone).
    Tablets(BTreeSet<TabletId>),
}

impl TabletChanges {
    /// Notes the tablets behind `keys`, records a command touched, as `state` holds
    /// them after it (a table's record stands for all its tablets).
    pub(super) fn note(&mut self, state: &MetaState, keys: &[StateKey]) {
        for key in keys {
            match key {
                StateKey::Tablet { id, .. } => {
                    self.tablets.insert(*id);
                }
                StateKey::Table(name) => {
                    if let Some(t) = state.tables.get(name) {
                        self.tablets.extend(t.tablets.iter().map(|tb| tb.id));
                    }
                }
                StateKey::Tables => self.all = true,
                _ => {}
            }
        }
    }

    /// Notes that anything may have changed.
    pub(super) fn note_all(&mut self) {
        self.all = true;
        self.tablets.clear();
    }

    /// Adds what `other` noted.
    pub(super) fn absorb(&mut self, other: TabletChanges) {
        if other.all {
            self.note_all();
        } else if !self.all {
            self.tablets.extend(other.tablets);
        }
    }

    /// What changed since the last take; resets.
    pub fn take(&mut self) -> Changed {
        let all = std::mem::take(&mut self.all);
        let tablets = std::mem::take(&mut self.tablets);
        if all {
            Changed::All
        } else {
            Changed::Tablets(tablets)
        }
    }
}
