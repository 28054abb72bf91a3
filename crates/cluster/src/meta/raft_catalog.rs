//! [`RaftCatalog`]: the [`Catalog`] kept by the metadata Raft group.
//!
//! Reads come from this node's applied copy of the metadata and never wait. Changes
//! are proposals to the group: they return once committed and applied here.

use super::MetaRaft;
use super::network::Network;
use super::state::{MetaCommand, MetaError, MetaResponse, MetaState};
use super::storage::{LogStore, StateMachine};
use crate::catalog::{Catalog, TableDesc, TableSpec, TabletDesc, validate_table_name};
use crate::error::{Error, MetaUnavailable, Result};
use crate::policy::ControllerHookRef;
use crate::pool::ChannelPool;
use datalayer_store::{Epoch, NodeId, TableId, TabletEngine, TabletId};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Config, SnapshotPolicy};
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How long a metadata change may wait for its commit.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a starting node without a metadata leader says it is still waiting.
const LEADER_WAIT: Duration = Duration::from_secs(10);

/// How a node's member of the metadata group behaves.
#[derive(Debug, Clone)]
pub struct MetaOptions {
    /// Voters the group aims for (1, 3 or 5).
    pub voters: usize,
    /// How long a voter may stay silent before a learner replaces it.
    pub dead_voter_timeout: Duration,
    /// How long a node may stay silent before its replicas move to other nodes.
    pub dead_node_timeout: Duration,
    /// Whether the controller moves replicas and masters to even out the nodes' load.
    pub rebalance: bool,
    /// This node's master lease, extended by its liveness heartbeats; its length is
    /// how long a silent master keeps its tablets before others are appointed.
    pub lease: Arc<super::Lease>,
    /// The node's outgoing channels.
    pub pool: Arc<ChannelPool>,
}

/// The catalog of a node, replicated by the metadata group.
pub struct RaftCatalog {
    raft: MetaRaft,
    node: NodeId,
    state: Arc<RwLock<MetaState>>,
    voters: usize,
    dead_voter_timeout: Duration,
    dead_node_timeout: Duration,
    rebalance: bool,
    lease: Arc<super::Lease>,
    pool: Arc<ChannelPool>,
    applied: tokio::sync::watch::Receiver<u64>,
    /// Tablets changed since the router last reconciled.
    changes: Arc<parking_lot::Mutex<super::changes::TabletChanges>>,
    /// The policies' shares of the controller, registered by the node.
    hooks: RwLock<Vec<ControllerHookRef>>,
}

impl std::fmt::Debug for RaftCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftCatalog")
            .field("node", &self.node)
            .finish()
    }
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::Metadata(MetaUnavailable::Raft {
        reason: e.to_string(),
    })
}

impl RaftCatalog {
    /// Opens the group's storage in `engine` and starts this node's member, reachable
    /// by peers at `addr`. With `bootstrap`, a node that was never part of a group
    /// founds one with itself as the only voter; otherwise it waits to be added by the
    /// leader. Serve [`super::network::RaftService`] and then call
    /// [`RaftCatalog::wait_for_leader`].
    pub async fn start(
        engine: Arc<dyn TabletEngine>,
        node: NodeId,
        addr: String,
        bootstrap: bool,
        options: MetaOptions,
    ) -> Result<Arc<RaftCatalog>> {
        let MetaOptions {
            voters,
            dead_voter_timeout,
            dead_node_timeout,
            rebalance,
            lease,
            pool,
        } = options;
        let state = Arc::new(RwLock::new(MetaState::default()));
        let (applied_tx, applied) = tokio::sync::watch::channel(0);
        let sm = StateMachine::open(engine.clone(), state.clone(), applied_tx)
            .await
            .map_err(|e| Error::Internal(format!("open metadata state machine: {e}")))?;
        let changes = sm.changes();
        let config = Config {
            cluster_name: "datalayer-meta".into(),
            // A dead metadata leader delays the failover of the tablets it mastered by
            // the election. openraft elects after `election_timeout_max` (its leader
            // lease) plus a random timeout between min and max without a heartbeat:
            // 0.75–1 s here, etcd's default order, well above a loaded machine's stalls.
            heartbeat_interval: 100,
            election_timeout_min: 250,
            election_timeout_max: 500,
            // Small metadata: snapshot often enough that a restart replays little.
            snapshot_policy: SnapshotPolicy::LogsSinceLast(2000),
            max_in_snapshot_log_to_keep: 1000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::Internal(format!("raft config: {e}")))?;
        let raft = MetaRaft::new(
            node.0,
            Arc::new(config),
            Network::new(pool.clone()),
            LogStore::new(engine),
            sm,
        )
        .await
        .map_err(unavailable)?;
        if bootstrap && !raft.is_initialized().await.map_err(unavailable)? {
            let members = BTreeMap::from([(node.0, BasicNode { addr })]);
            raft.initialize(members).await.map_err(unavailable)?;
        }
        let catalog = Arc::new(RaftCatalog {
            raft,
            node,
            state,
            voters: voters.max(1),
            dead_voter_timeout,
            dead_node_timeout,
            rebalance,
            lease,
            pool,
            applied,
            changes,
            hooks: Default::default(),
        });
        tokio::spawn(super::liveness::heartbeat(Arc::downgrade(&catalog)));
        tokio::spawn(super::controller::run(Arc::downgrade(&catalog)));
        Ok(catalog)
    }

    /// The node's outgoing channels.
    pub fn pool(&self) -> &Arc<ChannelPool> {
        &self.pool
    }

    /// Registers a policy's share of the controller (run on the metadata leader).
    pub fn add_controller_hook(&self, hook: ControllerHookRef) {
        self.hooks.write().push(hook);
    }

    /// The registered controller hooks.
    pub(crate) fn controller_hooks(&self) -> Vec<ControllerHookRef> {
        self.hooks.read().clone()
    }

    /// The table of that name; when this node does not know it, first catch up with
    /// the metadata leader (a table created a moment ago through another node may not
    /// have reached this one yet).
    pub async fn table_synced(&self, name: &str) -> Result<Arc<TableDesc>> {
        match Catalog::table(self, name) {
            Err(Error::TableNotFound { .. }) => {
                self.sync().await?;
                Catalog::table(self, name)
            }
            found => found,
        }
    }

    /// Waits until the group has a leader and this node has the metadata it committed.
    ///
    /// It waits as long as it takes (a whole cluster restarting node by node has no
    /// quorum until enough voters are back), saying so in the log now and then; the
    /// caller bounds it by its own shutdown.
    pub async fn wait_for_leader(&self) -> Result<()> {
        loop {
            let waited = self
                .raft
                .wait(Some(LEADER_WAIT))
                .metrics(
                    |m| m.current_leader.is_some() && m.last_applied.is_some(),
                    "metadata group has a leader",
                )
                .await;
            match waited {
                Ok(_) => return Ok(()),
                Err(openraft::metrics::WaitError::Timeout(..)) => {
                    tracing::warn!(
                        "no metadata leader yet: waiting for a majority of the voters to be up"
                    );
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
    }

    /// Changes whenever this node applies metadata (the value is the log index).
    pub fn applied(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied.clone()
    }

    /// The tablets whose descriptors changed since the last call (one reader: the
    /// router), noted before the applied index that published them moves on.
    pub fn take_tablet_changes(&self) -> super::changes::Changed {
        self.changes.lock().take()
    }

    /// Where a registered node serves gRPC.
    pub fn node_addr(&self, node: NodeId) -> Option<String> {
        self.state
            .read()
            .nodes
            .get(&node)
            .map(|n| n.grpc_addr.clone())
    }

    /// This node's id.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// How long a voter may stay silent before a learner takes its place.
    pub fn dead_voter_timeout(&self) -> Duration {
        self.dead_voter_timeout
    }

    /// How long a tablet master may stay silent before the controller replaces it.
    pub fn failover_timeout(&self) -> Duration {
        self.lease.length()
    }

    /// How long a node may stay silent before its replicas move elsewhere.
    pub fn dead_node_timeout(&self) -> Duration {
        self.dead_node_timeout
    }

    /// Whether the controller evens out replicas and masters across nodes.
    pub fn rebalance(&self) -> bool {
        self.rebalance
    }

    /// This node's master lease.
    pub fn lease(&self) -> &Arc<super::Lease> {
        &self.lease
    }

    /// Voters the group aims for.
    pub fn target_voters(&self) -> usize {
        self.voters
    }

    /// The Raft member, for serving the group's messages.
    pub fn raft(&self) -> &MetaRaft {
        &self.raft
    }

    /// The metadata as this node has applied it.
    pub fn state(&self) -> MetaState {
        self.state.read().clone()
    }

    /// The live tables, as a persistent map (a copy costs O(1); an unchanged map is
    /// the same map, `ptr_eq`).
    pub fn table_map(&self) -> imbl::OrdMap<String, Arc<TableDesc>> {
        self.state.read().tables.clone()
    }

    /// The table a tablet belongs to.
    pub fn table_of(&self, id: TabletId) -> Option<Arc<TableDesc>> {
        self.state.read().table_of(id).cloned()
    }

    /// One tablet's descriptor, without copying the rest of the metadata.
    pub fn tablet(&self, id: TabletId) -> Option<TabletDesc> {
        self.state.read().tablet(id).cloned()
    }

    /// The current leader and the address it serves at.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.raft.metrics().borrow().clone();
        let leader = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&leader)?
            .addr
            .clone();
        Some((NodeId(leader), addr))
    }

    /// Stops this node's member.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "metadata group did not stop cleanly");
        }
    }

    /// Waits until this node has applied every metadata change committed before the
    /// call (a read index obtained through the leader).
    pub async fn sync(&self) -> Result<()> {
        let index = match self.propose(MetaCommand::Sync, true).await? {
            MetaResponse::Synced(index) => index,
            other => return Err(Error::Internal(format!("sync answered {other:?}"))),
        };
        let mut applied = self.applied.clone();
        tokio::time::timeout(PROPOSE_TIMEOUT, applied.wait_for(|i| *i >= index))
            .await
            .map_err(|_| Error::Metadata(MetaUnavailable::Behind))?
            .map_err(|_| Error::Metadata(MetaUnavailable::Stopped))?;
        Ok(())
    }

    /// Proposes a change whose refusal is an error (through the leader).
    async fn change(&self, cmd: MetaCommand) -> Result<()> {
        match self.propose(cmd, true).await? {
            MetaResponse::Rejected(e) => Err(rejected(e)),
            _ => Ok(()),
        }
    }

    /// Records that this node, master of `tablet` at `expect_generation`, splits it
    /// at `key`; the right half's id (see [`MetaCommand::SplitIntent`]).
    pub async fn split_intent(
        &self,
        tablet: TabletId,
        expect_generation: u64,
        key: Vec<u8>,
    ) -> Result<TabletId> {
        let cmd = MetaCommand::SplitIntent {
            tablet,
            expect_generation,
            key,
        };
        match self.propose(cmd, true).await? {
            MetaResponse::Split(right) => Ok(right),
            MetaResponse::Rejected(e) => Err(rejected(e)),
            other => Err(Error::Internal(format!("split intent answered {other:?}"))),
        }
    }

    /// Records a split whose record committed in the tablet's oplog (see
    /// [`MetaCommand::SplitCommit`]).
    pub async fn split_commit(&self, tablet: TabletId, right: TabletId) -> Result<()> {
        self.change(MetaCommand::SplitCommit { tablet, right })
            .await
    }

    /// Records the intent to merge `left` and `right` (see [`MetaCommand::MergeIntent`]).
    pub async fn merge_intent(&self, left: &TabletDesc, right: &TabletDesc) -> Result<()> {
        self.change(MetaCommand::MergeIntent {
            left: left.id,
            right: right.id,
            expect_generations: (left.generation, right.generation),
        })
        .await
    }

    /// Records a merge whose absorb record committed (see [`MetaCommand::MergeCommit`]).
    pub async fn merge_commit(&self, left: TabletId, right: TabletId) -> Result<()> {
        self.change(MetaCommand::MergeCommit { left, right }).await
    }

    /// Calls a merge off (see [`MetaCommand::MergeAbort`]).
    pub async fn merge_abort(&self, left: TabletId, right: TabletId) -> Result<()> {
        self.change(MetaCommand::MergeAbort { left, right }).await
    }

    /// Removes a node from the cluster (see [`MetaCommand::RemoveNode`]).
    pub async fn decommission(&self, node: NodeId) -> Result<()> {
        self.change(MetaCommand::RemoveNode { id: node }).await
    }

    /// Appoints `master` for `tablet` in the epoch after `expect_epoch`.
    pub async fn appoint_master(
        &self,
        tablet: TabletId,
        expect_epoch: Epoch,
        master: NodeId,
    ) -> Result<()> {
        self.change(MetaCommand::AppointMaster {
            tablet,
            expect_epoch,
            master,
        })
        .await
    }

    /// Sets the in-sync set of a tablet this node masters at `expect_epoch`.
    pub async fn set_in_sync(
        &self,
        tablet: TabletId,
        expect_epoch: Epoch,
        in_sync: Vec<NodeId>,
    ) -> Result<()> {
        self.change(MetaCommand::SetInSync {
            tablet,
            expect_epoch,
            in_sync,
        })
        .await
    }

    /// Starts moving `tablet`'s replica on `from` to `to` (see
    /// [`MetaCommand::MoveReplica`]).
    pub async fn move_replica(&self, tablet: &TabletDesc, from: NodeId, to: NodeId) -> Result<()> {
        self.change(MetaCommand::MoveReplica {
            tablet: tablet.id,
            expect_conf: tablet.conf_version,
            from,
            to,
        })
        .await
    }

    /// Gives an under-replicated `tablet` a replica on `node` (see
    /// [`MetaCommand::AddReplica`]).
    pub async fn add_replica(&self, tablet: &TabletDesc, node: NodeId) -> Result<()> {
        self.change(MetaCommand::AddReplica {
            tablet: tablet.id,
            expect_conf: tablet.conf_version,
            node,
        })
        .await
    }

    /// Takes `node`'s replica of `tablet` away (see [`MetaCommand::DropReplica`]).
    pub async fn drop_replica(&self, tablet: &TabletDesc, node: NodeId) -> Result<()> {
        self.change(MetaCommand::DropReplica {
            tablet: tablet.id,
            expect_conf: tablet.conf_version,
            node,
        })
        .await
    }

    /// Records where this node serves (on every start, so a moved node is found).
    pub async fn register(&self, grpc_addr: String, http_addr: String) -> Result<()> {
        let cmd = MetaCommand::RegisterNode {
            id: Some(self.node),
            grpc_addr,
            http_addr,
        };
        self.propose(cmd, true).await.map(|_| ())
    }

    /// Proposes `cmd`; on a follower, sends it to the leader when `may_forward`.
    pub async fn propose(&self, cmd: MetaCommand, may_forward: bool) -> Result<MetaResponse> {
        // A leader cut off from its voters would wait forever for the commit.
        let written = tokio::time::timeout(PROPOSE_TIMEOUT, self.raft.client_write(cmd.clone()))
            .await
            .map_err(|_| {
                Error::Metadata(MetaUnavailable::NotCommitted {
                    waited_ms: PROPOSE_TIMEOUT.as_millis() as u64,
                })
            })?;
        match written {
            Ok(r) => Ok(r.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                let leader = f.leader_id.zip(f.leader_node);
                match leader {
                    Some((_, node)) if may_forward => {
                        super::network::propose_at(&self.pool, &node.addr, cmd, true).await
                    }
                    _ => Err(Error::Metadata(MetaUnavailable::NotLeader {
                        leader: f.leader_id.map(NodeId),
                    })),
                }
            }
            Err(e) => Err(unavailable(e)),
        }
    }
}

/// Asks the member at `seed` to register a new node serving at these addresses;
/// returns the node's id.
pub async fn join(
    pool: &ChannelPool,
    seed: &str,
    grpc_addr: String,
    http_addr: String,
) -> Result<NodeId> {
    let cmd = MetaCommand::RegisterNode {
        id: None,
        grpc_addr,
        http_addr,
    };
    match super::network::propose_at(pool, seed, cmd, false).await {
        Ok(MetaResponse::Node(id)) => Ok(id),
        Ok(other) => Err(Error::Internal(format!("join answered {other:?}"))),
        Err(e) => Err(e),
    }
}

fn rejected(e: MetaError) -> Error {
    match e {
        MetaError::Exists(name) => Error::TableExists { name },
        MetaError::NotFound(name) => Error::TableNotFound { name },
        MetaError::Invalid { field, message } => Error::InvalidArgument { field, message },
        MetaError::NotSupported(what) => Error::NotSupported { what },
        MetaError::Conflict(what) => Error::Metadata(MetaUnavailable::Conflict { what }),
    }
}

impl RaftCatalog {
    /// Replaces the policy options of the table `name` (validated by its policy
    /// first: see [`crate::Router::set_table_options`]).
    pub async fn set_table_options(
        &self,
        name: &str,
        options: crate::policy::PolicyOptions,
    ) -> Result<Arc<TableDesc>> {
        let cmd = MetaCommand::SetTableOptions {
            name: name.into(),
            options,
        };
        match self.propose(cmd, true).await? {
            MetaResponse::Table { table, .. } => Ok(Arc::from(table)),
            MetaResponse::Rejected(e) => Err(rejected(e)),
            other => Err(Error::Internal(format!(
                "set table options answered {other:?}"
            ))),
        }
    }
}

#[async_trait::async_trait]
impl Catalog for RaftCatalog {
    async fn create_table(
        &self,
        spec: TableSpec,
        if_not_exists: bool,
    ) -> Result<(Arc<TableDesc>, bool)> {
        // Refuse bad requests before they reach the log.
        validate_table_name(&spec.name)?;
        let cmd = MetaCommand::CreateTable {
            spec,
            if_not_exists,
            proposer: self.node,
        };
        match self.propose(cmd, true).await? {
            MetaResponse::Table { table, created } => Ok((Arc::from(table), created)),
            MetaResponse::Rejected(e) => Err(rejected(e)),
            other => Err(Error::Internal(format!("create table answered {other:?}"))),
        }
    }

    async fn drop_table(&self, name: &str) -> Result<Arc<TableDesc>> {
        match self
            .propose(MetaCommand::DropTable { name: name.into() }, true)
            .await?
        {
            MetaResponse::Table { table, .. } => Ok(Arc::from(table)),
            MetaResponse::Rejected(e) => Err(rejected(e)),
            other => Err(Error::Internal(format!("drop table answered {other:?}"))),
        }
    }

    fn table(&self, name: &str) -> Result<Arc<TableDesc>> {
        self.state
            .read()
            .tables
            .get(name)
            .cloned()
            .ok_or_else(|| Error::TableNotFound { name: name.into() })
    }

    fn tables(&self) -> Vec<Arc<TableDesc>> {
        self.state.read().tables.values().cloned().collect()
    }

    fn dropped(&self) -> Result<Vec<TableDesc>> {
        Ok(self.state.read().dropped.values().cloned().collect())
    }

    async fn forget_dropped(&self, table: TableId) -> Result<()> {
        match self
            .propose(MetaCommand::ForgetDropped { table }, true)
            .await?
        {
            MetaResponse::Rejected(e) => Err(rejected(e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datalayer_store::RocksTabletEngine;

    fn spec(name: &str) -> TableSpec {
        TableSpec {
            name: name.into(),
            policy: crate::policy::PolicyKind::Strong,
            replication_factor: 0,
            version_retention_secs: 0,
            options: Default::default(),
            split_keys: Vec::new(),
        }
    }

    async fn start(dir: &tempfile::TempDir) -> Arc<RaftCatalog> {
        let engine: Arc<dyn TabletEngine> = Arc::new(
            RocksTabletEngine::open(dir.path().join("db"), &Default::default()).expect("open"),
        );
        let cat = RaftCatalog::start(
            engine,
            NodeId(1),
            "127.0.0.1:1".into(),
            true,
            MetaOptions {
                voters: 1,
                dead_voter_timeout: Duration::from_secs(10),
                dead_node_timeout: Duration::from_secs(60),
                rebalance: true,
                lease: Arc::new(crate::meta::Lease::new(
                    Duration::from_secs(1),
                    Duration::from_millis(250),
                )),
                pool: Default::default(),
            },
        )
        .await
        .expect("single-node group starts");
        cat.wait_for_leader().await.expect("leader");
        cat
    }

    #[tokio::test]
    async fn a_single_node_group_keeps_its_tables_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first;
        {
            let cat = start(&dir).await;
            let (a, created) = cat.create_table(spec("a"), false).await.expect("create");
            assert!(created);
            first = a.id;
            assert!(matches!(
                cat.create_table(spec("a"), false).await,
                Err(Error::TableExists { .. })
            ));
            let (again, created) = cat
                .create_table(spec("a"), true)
                .await
                .expect("if not exists");
            assert!(!created && again.id == first);
            cat.create_table(spec("b"), false).await.expect("create b");
            cat.drop_table("b").await.expect("drop");
            assert!(matches!(
                cat.drop_table("b").await,
                Err(Error::TableNotFound { .. })
            ));
            cat.shutdown().await;
        }
        let cat = start(&dir).await;
        assert_eq!(cat.table("a").expect("a survives").id, first);
        assert!(matches!(cat.table("b"), Err(Error::TableNotFound { .. })));
        let dropped = cat.dropped().expect("dropped");
        assert_eq!(dropped.len(), 1, "the drop survives too");
        cat.forget_dropped(dropped[0].id).await.expect("forget");
        assert!(cat.dropped().expect("dropped").is_empty());
        let (c, _) = cat
            .create_table(spec("c"), false)
            .await
            .expect("create after restart");
        assert!(c.id.0 > dropped[0].tablets[0].id.0, "ids are never reused");
        assert!(matches!(
            cat.create_table(spec("bad name"), false).await,
            Err(Error::InvalidArgument { .. })
        ));
        cat.shutdown().await;
    }
}
