//! The `datalayer.v1.Replication` service: the follower side of strong replication.

use crate::status::IntoStatus;
use datalayer_api::v1 as pb;
use datalayer_cluster::strong::Replicate;
use datalayer_cluster::{Error, Router};
use datalayer_store::{Epoch, OplogRecord, Seq, TableId, TabletId};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Appends masters' records to this node's replicas.
#[derive(Debug, Clone)]
pub struct ReplicationService {
    /// Where the replicas live.
    pub router: Arc<Router>,
}

#[tonic::async_trait]
impl pb::replication_server::Replication for ReplicationService {
    async fn replicate(
        &self,
        request: Request<pb::ReplicateRequest>,
    ) -> Result<Response<pb::ReplicateResponse>, Status> {
        let req = request.into_inner();
        let tablet = TabletId(req.tablet_id);
        // A replica exists only where the metadata puts one (never resurrect the data
        // of a dropped table, or of a replica that moved away).
        let known = |r: &Router| {
            r.catalog()
                .tablet(tablet)
                .is_some_and(|t| t.replicas.contains(&r.node()))
        };
        if !known(&self.router) {
            self.router.catalog().sync().await.status()?;
            if !known(&self.router) {
                return Err(Error::Unavailable(format!(
                    "this node holds no replica of {tablet}"
                )))
                .status();
            }
        }
        let records: Vec<OplogRecord> = postcard::from_bytes(&req.records)
            .map_err(|e| Error::invalid("records", format!("undecodable records: {e}")))
            .status()?;
        let (log_end, last_ts) = self
            .router
            .strong()
            .replicate(Replicate {
                table: TableId(req.table_id),
                tablet,
                epoch: Epoch(req.epoch),
                history: req
                    .history
                    .iter()
                    .map(|h| (Epoch(h.epoch), Seq(h.first_seq)))
                    .collect(),
                log_end: Seq(req.log_end),
                high_watermark: Seq(req.high_watermark),
                committed_ts: datalayer_store::Timestamp(req.committed_ts),
                records,
            })
            .await
            .status()?;
        Ok(Response::new(pb::ReplicateResponse {
            log_end: log_end.0,
            last_ts: last_ts.0,
        }))
    }

    async fn replica_status(
        &self,
        request: Request<pb::ReplicaStatusRequest>,
    ) -> Result<Response<pb::ReplicaStatusResponse>, Status> {
        let mut tablets = Vec::new();
        for id in request.into_inner().tablet_ids {
            if let Some((last_epoch, log_end)) = self
                .router
                .strong()
                .replica_position(TabletId(id))
                .status()?
            {
                tablets.push(pb::ReplicaTablet {
                    tablet_id: id,
                    last_epoch: last_epoch.0,
                    log_end: log_end.0,
                });
            }
        }
        Ok(Response::new(pb::ReplicaStatusResponse { tablets }))
    }

    async fn hand_over(
        &self,
        request: Request<pb::HandOverRequest>,
    ) -> Result<Response<pb::HandOverResponse>, Status> {
        let req = request.into_inner();
        self.router
            .hand_over(TabletId(req.tablet_id), datalayer_store::NodeId(req.target))
            .await
            .status()?;
        Ok(Response::new(pb::HandOverResponse {}))
    }
}
