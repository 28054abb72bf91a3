//! The `datalayer.v1.Admin` service.

use super::timed;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::status::IntoStatus;
use datalayer_api::v1 as pb;
use datalayer_cluster::catalog::TableSpec;
use datalayer_cluster::strong::{StrongOptions, StrongTablets};
use datalayer_cluster::{Error, PolicyKind, RaftCatalog, Router, StrongPolicy, TableDesc};
use datalayer_store::TabletEngine;
use std::sync::Arc;
use std::time::Instant;
use tonic::{Request, Response, Status};

/// What the node says about itself in NodeStatus.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// This node.
    pub node_id: u64,
    /// gRPC address it listens on.
    pub grpc_addr: String,
    /// HTTP address it listens on.
    pub http_addr: String,
    /// Its data directory.
    pub data_dir: String,
    /// When it started.
    pub started: Instant,
}

/// Serves admin requests of one node.
#[derive(Clone)]
pub struct AdminService {
    pub(crate) router: Arc<Router>,
    pub(crate) strong: Arc<StrongPolicy>,
    pub(crate) catalog: Arc<RaftCatalog>,
    pub(crate) engine: Arc<dyn TabletEngine>,
    pub(crate) limits: Limits,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) info: NodeInfo,
}

impl std::fmt::Debug for AdminService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminService")
            .field("info", &self.info)
            .finish()
    }
}

fn policy_to_proto(p: PolicyKind) -> pb::Policy {
    match p {
        PolicyKind::Strong => pb::Policy::Strong,
        PolicyKind::Crdt => pb::Policy::Crdt,
        PolicyKind::Timeseries => pb::Policy::Timeseries,
        PolicyKind::Search => pb::Policy::Search,
    }
}

/// The proto form of a table, with the master's view of each tablet's progress.
pub fn table_info(t: &TableDesc, strong: &StrongTablets) -> pb::TableInfo {
    pb::TableInfo {
        name: t.name.clone(),
        id: t.id.0,
        policy: policy_to_proto(t.policy) as i32,
        replication_factor: t.replication_factor,
        version_retention_secs: t.version_retention_secs,
        default_acks: match t.policy {
            PolicyKind::Strong => StrongOptions::of(&t.options)
                .map(|o| o.default_acks.to_string())
                .unwrap_or_default(),
            PolicyKind::Timeseries => datalayer_timeseries::TsOptions::of(&t.options)
                .map(|o| o.default_acks.to_string())
                .unwrap_or_default(),
            _ => String::new(),
        },
        options_json: if t.options.is_null() {
            String::new()
        } else {
            t.options.to_string()
        },
        tablets: t
            .tablets
            .iter()
            .map(|tablet| {
                let progress = strong.progress(tablet.id).unwrap_or_default();
                pb::TabletInfo {
                    id: tablet.id.0,
                    start: tablet.start.clone(),
                    end: tablet.end.clone().unwrap_or_default(),
                    generation: tablet.generation,
                    replicas: tablet.replicas.iter().map(|n| n.0).collect(),
                    master: tablet.master.0,
                    master_epoch: tablet.master_epoch.0,
                    log_end: progress.log_end.0,
                    high_watermark: progress.high_watermark.0,
                    in_sync: tablet.in_sync.iter().map(|n| n.0).collect(),
                    moving_from: tablet.moving.map_or(0, |m| m.from.0),
                    moving_to: tablet.moving.map_or(0, |m| m.to.0),
                }
            })
            .collect(),
    }
}

impl AdminService {
    /// Every registered node with its role in the metadata group and its masters.
    pub(crate) fn cluster_nodes(&self) -> Vec<pb::ClusterNode> {
        let state = self.catalog.state();
        let metrics = self.catalog.raft().metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let learners: Vec<u64> = membership.learner_ids().collect();
        state
            .nodes
            .values()
            .map(|n| (n, state.liveness(n.id)))
            .map(|(n, liveness)| pb::ClusterNode {
                liveness_epoch: liveness.epoch.0,
                lease_left_ms: match liveness.expiration_ms {
                    0 => 0, // no heartbeat yet
                    until => until as i64 - datalayer_cluster::meta::liveness::wall_ms() as i64,
                },
                id: n.id.0,
                grpc_addr: n.grpc_addr.clone(),
                http_addr: n.http_addr.clone(),
                meta_role: if voters.contains(&n.id.0) {
                    "voter"
                } else if learners.contains(&n.id.0) {
                    "learner"
                } else {
                    "none"
                }
                .into(),
                masters: state
                    .tables
                    .values()
                    .flat_map(|t| &t.tablets)
                    .filter(|t| t.master == n.id)
                    .count() as u32,
                tablets: state
                    .tables
                    .values()
                    .flat_map(|t| &t.tablets)
                    .filter(|t| t.replicas.contains(&n.id))
                    .count() as u32,
            })
            .collect()
    }

    async fn create_table(
        &self,
        req: pb::CreateTableRequest,
    ) -> Result<pb::CreateTableResponse, Error> {
        let policy = match pb::Policy::try_from(req.policy) {
            Ok(pb::Policy::Unspecified | pb::Policy::Strong) => PolicyKind::Strong,
            Ok(pb::Policy::Crdt) => PolicyKind::Crdt,
            Ok(pb::Policy::Timeseries) => PolicyKind::Timeseries,
            Ok(pb::Policy::Search) => PolicyKind::Search,
            Err(_) => {
                return Err(Error::invalid(
                    "policy",
                    format!("unknown policy {}", req.policy),
                ));
            }
        };
        if req.replication_factor > 7 {
            return Err(Error::invalid(
                "replication_factor",
                "at most 7 replicas per tablet",
            ));
        }
        // Each policy's options come from its own fields of the request.
        if req.timeseries.is_some() && policy != PolicyKind::Timeseries {
            return Err(Error::invalid(
                "timeseries",
                "time-series options are for timeseries tables only",
            ));
        }
        let options = match policy {
            PolicyKind::Strong => StrongOptions {
                default_acks: crate::service::kv::acks(req.default_acks)?.unwrap_or_default(),
            }
            .to_options(),
            PolicyKind::Timeseries => {
                let mut o = datalayer_timeseries::TsOptions::default();
                if let Some(acks) = crate::service::kv::acks(req.default_acks)? {
                    o.default_acks = acks;
                }
                if let Some(t) = &req.timeseries {
                    o.retention_weeks = t.retention_weeks;
                    if t.out_of_order_window_ms > 0 {
                        o.out_of_order_window_ms = t.out_of_order_window_ms;
                    }
                    if t.max_series_per_week > 0 {
                        o.max_series_per_week = t.max_series_per_week;
                    }
                    o.rollup_retention_weeks = t.rollup_retention_weeks;
                }
                o.to_options()
            }
            _ if req.default_acks.is_some() => {
                return Err(Error::invalid(
                    "default_acks",
                    "default acks are an option of strong tables only",
                ));
            }
            _ => Default::default(),
        };
        let spec = TableSpec {
            name: req.name,
            policy,
            replication_factor: req.replication_factor,
            version_retention_secs: req.version_retention_secs,
            options,
            split_keys: req.split_keys,
        };
        if let Err(message) = datalayer_cluster::catalog::check_split_keys(&spec.split_keys) {
            return Err(Error::invalid("split_keys", message));
        }
        for key in &spec.split_keys {
            self.limits.key("split_keys", key)?;
        }
        let (table, created) = self.router.create_table(spec, req.if_not_exists).await?;
        Ok(pb::CreateTableResponse {
            table: Some(table_info(&table, self.strong.tablets())),
            created,
        })
    }
}

/// `req` marked as forwarded, so the receiver serves it itself.
fn forwarded_request<T>(req: T) -> Request<T> {
    let mut fwd = Request::new(req);
    fwd.metadata_mut().insert(
        super::kv::FORWARDED,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    fwd
}

impl AdminService {
    /// A channel to `master` to forward a request it must serve to, or `None` when
    /// this node is it (or the request was forwarded here already).
    async fn forward_channel(
        &self,
        master: datalayer_store::NodeId,
        forwarded: bool,
    ) -> Result<Option<tonic::transport::Channel>, Status> {
        if master == self.router.node() || forwarded {
            return Ok(None);
        }
        let addr = self
            .catalog
            .node_addr(master)
            .ok_or(Error::NoAddress { node: master })
            .status()?;
        let channel = self
            .catalog
            .pool()
            .get(&addr, datalayer_cluster::pool::Lane::Forward)
            .await
            .status()?;
        Ok(Some(channel))
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn create_table(
        &self,
        request: Request<pb::CreateTableRequest>,
    ) -> Result<Response<pb::CreateTableResponse>, Status> {
        timed(&self.metrics, "CreateTable", async {
            self.create_table(request.into_inner()).await.status()
        })
        .await
    }

    async fn set_table_options(
        &self,
        request: Request<pb::SetTableOptionsRequest>,
    ) -> Result<Response<pb::SetTableOptionsResponse>, Status> {
        let req = request.into_inner();
        timed(&self.metrics, "SetTableOptions", async {
            self.limits.table(&req.name).status()?;
            let table = self.router.table_synced(&req.name).await.status()?;
            let ts_given = req.retention_weeks.is_some()
                || req.out_of_order_window_ms.is_some()
                || req.max_series_per_week.is_some()
                || req.rollup_retention_weeks.is_some();
            let acks = crate::service::kv::acks(req.default_acks).status()?;
            let options = match table.policy {
                PolicyKind::Strong if ts_given => {
                    return Err(datalayer_cluster::status::to_status(&Error::invalid(
                        "retention_weeks",
                        "time-series options are for timeseries tables only",
                    )));
                }
                PolicyKind::Strong => {
                    let mut o = StrongOptions::of(&table.options).status()?;
                    if let Some(a) = acks {
                        o.default_acks = a;
                    }
                    o.to_options()
                }
                PolicyKind::Timeseries => {
                    let mut o = datalayer_timeseries::TsOptions::of(&table.options).status()?;
                    if let Some(a) = acks {
                        o.default_acks = a;
                    }
                    if let Some(v) = req.retention_weeks {
                        o.retention_weeks = v;
                    }
                    if let Some(v) = req.out_of_order_window_ms {
                        o.out_of_order_window_ms = v;
                    }
                    if let Some(v) = req.max_series_per_week {
                        o.max_series_per_week = v;
                    }
                    if let Some(v) = req.rollup_retention_weeks {
                        o.rollup_retention_weeks = v;
                    }
                    o.to_options()
                }
                other => {
                    return Err(datalayer_cluster::status::to_status(&Error::NotSupported {
                        what: format!("options of {other} tables"),
                    }));
                }
            };
            let table = self
                .router
                .set_table_options(&req.name, options)
                .await
                .status()?;
            Ok(pb::SetTableOptionsResponse {
                table: Some(table_info(&table, self.strong.tablets())),
            })
        })
        .await
    }

    async fn drop_table(
        &self,
        request: Request<pb::DropTableRequest>,
    ) -> Result<Response<pb::DropTableResponse>, Status> {
        let req = request.into_inner();
        timed(&self.metrics, "DropTable", async {
            self.limits.table(&req.name).status()?;
            let dropped = self
                .router
                .drop_table(&req.name, req.if_exists)
                .await
                .status()?;
            Ok(pb::DropTableResponse { dropped })
        })
        .await
    }

    async fn list_tables(
        &self,
        _request: Request<pb::ListTablesRequest>,
    ) -> Result<Response<pb::ListTablesResponse>, Status> {
        timed(&self.metrics, "ListTables", async {
            let strong = self.strong.tablets();
            Ok(pb::ListTablesResponse {
                tables: self
                    .router
                    .tables()
                    .iter()
                    .map(|t| table_info(t, strong))
                    .collect(),
            })
        })
        .await
    }

    async fn describe_table(
        &self,
        request: Request<pb::DescribeTableRequest>,
    ) -> Result<Response<pb::DescribeTableResponse>, Status> {
        let req = request.into_inner();
        timed(&self.metrics, "DescribeTable", async {
            self.limits.table(&req.name).status()?;
            let table = self.router.table(&req.name).status()?;
            Ok(pb::DescribeTableResponse {
                table: Some(table_info(&table, self.strong.tablets())),
            })
        })
        .await
    }

    async fn node_status(
        &self,
        _request: Request<pb::NodeStatusRequest>,
    ) -> Result<Response<pb::NodeStatusResponse>, Status> {
        timed(&self.metrics, "NodeStatus", async {
            let tables = self.router.tables();
            let stats = self.engine.stats();
            let raft = self.catalog.raft().metrics().borrow().clone();
            Ok(pb::NodeStatusResponse {
                node_id: self.info.node_id,
                version: env!("CARGO_PKG_VERSION").into(),
                grpc_addr: self.info.grpc_addr.clone(),
                http_addr: self.info.http_addr.clone(),
                data_dir: self.info.data_dir.clone(),
                uptime_secs: self.info.started.elapsed().as_secs(),
                tables: tables.len() as u32,
                tablets: tables.iter().map(|t| t.tablets.len() as u32).sum(),
                group_commits: stats.group_commits,
                records_appended: stats.records_appended,
                limits: Some(self.limits.to_proto()),
                clock: self.strong.tablets().now().0,
                nodes: self.cluster_nodes(),
                meta_leader: self.catalog.leader().map_or(0, |(id, _)| id.0),
                meta_applied_index: raft.last_applied.map_or(0, |l| l.index),
                meta_snapshot_index: raft.snapshot.map_or(0, |l| l.index),
                meta_purged_index: raft.purged.map_or(0, |l| l.index),
                worker_threads: tokio::runtime::Handle::current().metrics().num_workers() as u32,
            })
        })
        .await
    }

    async fn decommission_node(
        &self,
        request: Request<pb::DecommissionNodeRequest>,
    ) -> Result<Response<pb::DecommissionNodeResponse>, Status> {
        let req = request.into_inner();
        timed(&self.metrics, "DecommissionNode", async {
            self.strong
                .decommission(datalayer_store::NodeId(req.node_id))
                .await
                .status()?;
            Ok(pb::DecommissionNodeResponse {})
        })
        .await
    }

    async fn transfer_master(
        &self,
        request: Request<pb::TransferMasterRequest>,
    ) -> Result<Response<pb::TransferMasterResponse>, Status> {
        let req = request.into_inner();
        timed(&self.metrics, "TransferMaster", async {
            self.limits.table(&req.table).status()?;
            let tablet = self
                .strong
                .transfer_master(&req.table, &req.key, datalayer_store::NodeId(req.target))
                .await
                .status()?;
            let table = self.router.table(&req.table).status()?;
            let info = table_info(&table, self.strong.tablets())
                .tablets
                .into_iter()
                .find(|t| t.id == tablet.id.0);
            Ok(pb::TransferMasterResponse { tablet: info })
        })
        .await
    }

    async fn split_tablet(
        &self,
        request: Request<pb::SplitTabletRequest>,
    ) -> Result<Response<pb::SplitTabletResponse>, Status> {
        let forwarded = request.metadata().contains_key(super::kv::FORWARDED);
        let req = request.into_inner();
        timed(&self.metrics, "SplitTablet", async {
            self.limits.table(&req.table).status()?;
            self.limits.key("key", &req.key).status()?;
            if req.key.is_empty() {
                return Err(Error::invalid("key", "the split key cannot be empty")).status();
            }
            let table = self.router.table_synced(&req.table).await.status()?;
            // The tablet's master splits it.
            let master = table.tablet_for(&req.key).master;
            if let Some(channel) = self.forward_channel(master, forwarded).await? {
                return Ok(pb::admin_client::AdminClient::new(channel)
                    .split_tablet(forwarded_request(req))
                    .await?
                    .into_inner());
            }
            let table = self.strong.split(&req.table, req.key).await.status()?;
            Ok(pb::SplitTabletResponse {
                table: Some(table_info(&table, self.strong.tablets())),
            })
        })
        .await
    }

    async fn merge_tablets(
        &self,
        request: Request<pb::MergeTabletsRequest>,
    ) -> Result<Response<pb::MergeTabletsResponse>, Status> {
        let forwarded = request.metadata().contains_key(super::kv::FORWARDED);
        let req = request.into_inner();
        timed(&self.metrics, "MergeTablets", async {
            self.limits.table(&req.table).status()?;
            self.limits.key("key", &req.key).status()?;
            let table = self.router.table_synced(&req.table).await.status()?;
            // The left tablet's master merges them.
            let at = table.tablets.iter().position(|t| t.start == req.key);
            if let Some(left) = at.filter(|at| *at > 0).map(|at| &table.tablets[at - 1])
                && let Some(channel) = self.forward_channel(left.master, forwarded).await?
            {
                return Ok(pb::admin_client::AdminClient::new(channel)
                    .merge_tablets(forwarded_request(req))
                    .await?
                    .into_inner());
            }
            let table = self.strong.merge(&req.table, req.key).await.status()?;
            Ok(pb::MergeTabletsResponse {
                table: Some(table_info(&table, self.strong.tablets())),
            })
        })
        .await
    }

    async fn table_digest(
        &self,
        request: Request<pb::TableDigestRequest>,
    ) -> Result<Response<pb::TableDigestResponse>, Status> {
        let req = request.into_inner();
        timed(&self.metrics, "TableDigest", async {
            self.limits.table(&req.name).status()?;
            let table = self.router.table_synced(&req.name).await.status()?;
            let mut tablets = Vec::new();
            for tablet in &table.tablets {
                if let Some((log_end, digest, rows)) = self
                    .strong
                    .tablets()
                    .replica_digest(&table, tablet)
                    .await
                    .status()?
                {
                    tablets.push(pb::TabletDigest {
                        tablet_id: tablet.id.0,
                        log_end: log_end.0,
                        digest,
                        rows,
                    });
                }
            }
            Ok(pb::TableDigestResponse { tablets })
        })
        .await
    }

    async fn collect_garbage(
        &self,
        request: Request<pb::CollectGarbageRequest>,
    ) -> Result<Response<pb::CollectGarbageResponse>, Status> {
        let req = request.into_inner();
        timed(&self.metrics, "CollectGarbage", async {
            self.limits.table(&req.table).status()?;
            let collected = self.strong.collect_garbage(&req.table).await.status()?;
            Ok(pb::CollectGarbageResponse {
                versions_removed: collected.removed,
                horizon: collected.horizon.0,
            })
        })
        .await
    }
}
