//! Tablets per node, as masters and as replicas: placement's input. The state keeps
//! them as commands apply (a command changes the counts of the tables it touches), so
//! placing a new tablet costs O(nodes), not a count over every tablet.

use crate::catalog::TableDesc;
use datalayer_store::NodeId;

/// How many tablets each node masters and holds a replica of (nodes at zero absent,
/// so that equal tables give equal counts however they were reached).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Counts {
    masters: imbl::OrdMap<NodeId, usize>,
    replicas: imbl::OrdMap<NodeId, usize>,
}

impl Counts {
    /// The counts of these tables.
    pub(super) fn of<'a>(tables: impl IntoIterator<Item = &'a TableDesc>) -> Self {
        let mut counts = Counts::default();
        for t in tables {
            counts.add_table(t);
        }
        counts
    }

    /// Counts every tablet of `table`.
    pub(super) fn add_table(&mut self, table: &TableDesc) {
        for tb in &table.tablets {
            self.add(tb.master, &tb.replicas);
        }
    }

    /// Stops counting the tablets of `table` (counted before).
    pub(super) fn remove_table(&mut self, table: &TableDesc) {
        for tb in &table.tablets {
            self.remove(tb.master, &tb.replicas);
        }
    }

    /// Stops counting one tablet mastered by `master` with `replicas`.
    pub(super) fn remove(&mut self, master: NodeId, replicas: &[NodeId]) {
        bump(&mut self.masters, master, false);
        for r in replicas {
            bump(&mut self.replicas, *r, false);
        }
    }

    /// Counts one more tablet mastered by `master` with `replicas`.
    pub(super) fn add(&mut self, master: NodeId, replicas: &[NodeId]) {
        bump(&mut self.masters, master, true);
        for r in replicas {
            bump(&mut self.replicas, *r, true);
        }
    }

    /// Tablets `node` masters.
    pub(super) fn masters(&self, node: NodeId) -> usize {
        self.masters.get(&node).copied().unwrap_or(0)
    }

    /// Tablets `node` holds a replica of.
    pub(super) fn replicas(&self, node: NodeId) -> usize {
        self.replicas.get(&node).copied().unwrap_or(0)
    }
}

fn bump(map: &mut imbl::OrdMap<NodeId, usize>, node: NodeId, up: bool) {
    let n = map.get(&node).copied().unwrap_or(0);
    let n = if up { n + 1 } else { n.saturating_sub(1) };
    if n == 0 {
        map.remove(&node);
    } else {
        map.insert(node, n);
    }
}
