//! The range cache: which node masters the tablet holding a key, so requests go
//! straight there instead of taking a forwarding hop through the node the client
//! happened to connect to. A stale entry is harmless (that node forwards); it is
//! dropped when the server answers with a routing error.

use datalayer_api::v1 as pb;
use pb::kv_client::KvClient;
use std::collections::HashMap;
use tonic::transport::Channel;

#[derive(Debug, Clone)]
struct TabletRoute {
    start: Vec<u8>,
    /// Empty is the end of the table.
    end: Vec<u8>,
    master: u64,
}

/// Cached tablet maps, node addresses and connections.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    nodes: HashMap<u64, String>,
    tables: HashMap<String, Vec<TabletRoute>>,
    conns: HashMap<String, KvClient<Channel>>,
}

impl Routes {
    /// The address of the master of `table`'s tablet holding `key`, if cached.
    pub(crate) fn master_addr(&self, table: &str, key: &[u8]) -> Option<String> {
        let tablets = self.tables.get(table)?;
        let tablet = tablets
            .iter()
            .find(|t| key >= t.start.as_slice() && (t.end.is_empty() || key < t.end.as_slice()))?;
        self.nodes.get(&tablet.master).cloned()
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
                start: t.start.clone(),
                end: t.end.clone(),
                master: t.master,
            })
            .collect();
        self.tables.insert(table.name.clone(), tablets);
    }

    /// Drops what is known of `table` (and connections that failed).
    pub(crate) fn forget(&mut self, table: &str, failed_addr: Option<&str>) {
        self.tables.remove(table);
        if let Some(addr) = failed_addr {
            self.conns.remove(addr);
        }
    }
}
