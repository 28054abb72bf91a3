//! The range cache: which node masters the tablet holding a key, so requests go
//! straight there instead of taking a forwarding hop through the node the client
//! happened to connect to. Single-key requests name the tablet and generation they
//! were routed by; a node that knows a later generation answers `RANGE_MISMATCH`
//! with the current descriptors, which replace the stale entries here. Any other
//! stale entry is harmless (that node forwards); it is dropped when the server
//! answers with a routing error.

use datalayer_api::v1 as pb;
use pb::kv_client::KvClient;
use std::collections::HashMap;
use tonic::transport::Channel;

#[derive(Debug, Clone)]
struct TabletRoute {
    id: u64,
    generation: u64,
    start: Vec<u8>,
    /// Empty is the end of the table.
    end: Vec<u8>,
    master: u64,
}

impl TabletRoute {
    fn holds(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && (self.end.is_empty() || key < self.end.as_slice())
    }

    /// Whether the two ranges share a key.
    fn overlaps(&self, other: &TabletRoute) -> bool {
        let starts_before_other_ends = other.end.is_empty() || self.start < other.end;
        let other_starts_before_end = self.end.is_empty() || other.start < self.end;
        starts_before_other_ends && other_starts_before_end
    }
}

/// Cached tablet maps, node addresses and connections.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    nodes: HashMap<u64, String>,
    /// Per table, its tablets in key order.
    tables: HashMap<String, Vec<TabletRoute>>,
    conns: HashMap<String, KvClient<Channel>>,
}

impl Routes {
    /// The address of the master of `table`'s tablet holding `key`, and the route
    /// to name in the request, if cached.
    pub(crate) fn route(&self, table: &str, key: &[u8]) -> Option<(String, pb::RangeHint)> {
        let tablet = self.tables.get(table)?.iter().find(|t| t.holds(key))?;
        let addr = self.nodes.get(&tablet.master).cloned()?;
        Some((
            addr,
            pb::RangeHint {
                tablet_id: tablet.id,
                generation: tablet.generation,
            },
        ))
    }

    /// The tablets of `table` in the cache: (id, start, end, generation).
    pub(crate) fn tablets(&self, table: &str) -> Vec<(u64, Vec<u8>, Vec<u8>, u64)> {
        self.tables
            .get(table)
            .map(|ts| {
                ts.iter()
                    .map(|t| (t.id, t.start.clone(), t.end.clone(), t.generation))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A cached connection to `addr`.
    pub(crate) fn conn(&self, addr: &str) -> Option<KvClient<Channel>> {
        self.conns.get(addr).cloned()
    }

    /// Remembers a connection to `addr`.
    pub(crate) fn add_conn(&mut self, addr: String, conn: KvClient<Channel>) {
        self.conns.insert(addr, conn);
    }

    /// Replaces what is known of `table` and of the nodes.
    pub(crate) fn learn(&mut self, table: &pb::TableInfo, nodes: &[pb::ClusterNode]) {
        for n in nodes {
            self.nodes.insert(n.id, n.grpc_addr.clone());
        }
        let tablets = table
            .tablets
            .iter()
            .map(|t| TabletRoute {
                id: t.id,
                generation: t.generation,
                start: t.start.clone(),
                end: t.end.clone(),
                master: t.master,
            })
            .collect();
        self.tables.insert(table.name.clone(), tablets);
    }

    /// Takes the current descriptors of a `RANGE_MISMATCH`: each replaces the
    /// cached tablets it overlaps.
    pub(crate) fn learn_ranges(&mut self, table: &str, descs: &[pb::RangeDescriptor]) {
        let tablets = self.tables.entry(table.to_string()).or_default();
        for d in descs {
            if !d.master_addr.is_empty() {
                self.nodes.insert(d.master, d.master_addr.clone());
            }
            let new = TabletRoute {
                id: d.tablet_id,
                generation: d.generation,
                start: d.start.clone(),
                end: d.end.clone(),
                master: d.master,
            };
            tablets.retain(|t| !t.overlaps(&new));
            let at = tablets.partition_point(|t| t.start < new.start);
            tablets.insert(at, new);
        }
    }

    /// Drops what is known of `table` (and connections that failed).
    pub(crate) fn forget(&mut self, table: &str, failed_addr: Option<&str>) {
        self.tables.remove(table);
        if let Some(addr) = failed_addr {
            self.conns.remove(addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(id: u64, start: &str, end: &str, generation: u64) -> pb::RangeDescriptor {
        pb::RangeDescriptor {
            tablet_id: id,
            start: start.into(),
            end: end.into(),
            generation,
            master: id,
            master_addr: format!("n{id}"),
        }
    }

    #[test]
    fn descriptors_of_a_mismatch_replace_the_ranges_they_overlap() {
        let mut r = Routes::default();
        r.learn_ranges("t", &[desc(1, "", "", 1)]);
        assert_eq!(
            r.route("t", b"x").map(|(a, h)| (a, h.generation)),
            Some(("n1".into(), 1))
        );
        // Split at "m": both halves in generation 2.
        r.learn_ranges("t", &[desc(2, "m", "", 2), desc(1, "", "m", 2)]);
        let got = r.tablets("t");
        assert_eq!(
            got,
            vec![
                (1, b"".to_vec(), b"m".to_vec(), 2),
                (2, b"m".to_vec(), b"".to_vec(), 2)
            ]
        );
        assert_eq!(
            r.route("t", b"x").map(|(a, h)| (a, h.tablet_id)),
            Some(("n2".into(), 2))
        );
        // Only the right half is learnt when the left one was unknown.
        let mut r = Routes::default();
        r.learn_ranges("t", &[desc(1, "", "", 1)]);
        r.learn_ranges("t", &[desc(2, "m", "", 2)]);
        assert_eq!(r.route("t", b"a"), None, "the overlapped left is dropped");
        assert_eq!(r.route("t", b"z").map(|(_, h)| h.tablet_id), Some(2));
    }
}
