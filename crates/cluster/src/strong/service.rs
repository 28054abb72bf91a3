//! The `Replication` service, both halves of its network: the follower side's gRPC
//! server ([`ReplicationService`]: records, snapshots, replica status, hand-over
//! requests) and the client calls masters and the controller make
//! ([`connect`], [`replica_status`], [`hand_over_at`]), kept together as the
//! metadata group keeps its network in `meta::network`.

use crate::error::{Error, Result};
use crate::pool::{ChannelPool, Lane};
use datalayer_api::internal::v1 as pb;
use datalayer_store::{NodeId, Seq};
use pb::replication_client::ReplicationClient;
use std::time::Duration;
use tonic::transport::Channel;

use super::{Install, Replicate, ReplicateAnswer, StrongPolicy};
use crate::catalog::TabletDesc;
use crate::status::IntoStatus;
use datalayer_store::{Epoch, OplogRecord, TableId, TabletId, TabletState};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status, Streaming};

/// A replication client to the node at `addr`, on the pool's replication lane.
pub(crate) async fn connect(pool: &ChannelPool, addr: &str) -> Result<ReplicationClient<Channel>> {
    let channel = pool.get(addr, Lane::Replication).await?;
    Ok(ReplicationClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20))
}

/// How long a hand-over asked of another node may take.
const HAND_OVER_TIMEOUT: Duration = Duration::from_secs(30);
/// Where the replicas of `tablets` on the node at `addr` stand: `(tablet, epoch of
/// the last record, log end)` for each it holds.
pub async fn replica_status(
    pool: &ChannelPool,
    addr: &str,
    tablets: &[datalayer_store::TabletId],
) -> Result<Vec<(datalayer_store::TabletId, datalayer_store::Epoch, Seq)>> {
    let mut client = connect(pool, addr).await?;
    let mut request = tonic::Request::new(pb::ReplicaStatusRequest {
        tablet_ids: tablets.iter().map(|t| t.0).collect(),
    });
    request.set_timeout(Duration::from_secs(1));
    let resp = tokio::time::timeout(Duration::from_secs(1), client.replica_status(request))
        .await
        .map_err(|_| Error::Unreachable {
            addr: addr.to_string(),
            reason: "no answer to ReplicaStatus within 1s".into(),
        })?
        .map_err(|s| Error::PeerFailed {
            addr: addr.to_string(),
            call: "ReplicaStatus",
            message: s.message().to_string(),
        })?;
    Ok(resp
        .into_inner()
        .tablets
        .into_iter()
        .map(|t| {
            (
                datalayer_store::TabletId(t.tablet_id),
                datalayer_store::Epoch(t.last_epoch),
                Seq(t.log_end),
            )
        })
        .collect())
}

/// Asks the master at `addr` to hand `tablet` over to `target`.
pub async fn hand_over_at(
    pool: &ChannelPool,
    addr: &str,
    tablet: datalayer_store::TabletId,
    target: NodeId,
) -> Result<()> {
    let mut client = connect(pool, addr).await?;
    let mut request = tonic::Request::new(pb::HandOverRequest {
        tablet_id: tablet.0,
        target: target.0,
    });
    // The master bounds its wait for the target; a master that stopped answering
    // (paused, cut off) must not hold the caller forever.
    request.set_timeout(HAND_OVER_TIMEOUT);
    tokio::time::timeout(HAND_OVER_TIMEOUT, client.hand_over(request))
        .await
        .map_err(|_| Error::Unreachable {
            addr: addr.to_string(),
            reason: format!("no answer to HandOver of {tablet} within {HAND_OVER_TIMEOUT:?}"),
        })?
        .map_err(|s| Error::PeerFailed {
            addr: addr.to_string(),
            call: "HandOver",
            message: s.message().to_string(),
        })?;
    Ok(())
}

/// Appends masters' records to this node's replicas.
#[derive(Debug, Clone)]
pub struct ReplicationService {
    strong: Arc<StrongPolicy>,
}

/// Answers of one replication stream a follower buffers before the master reads them
/// (the master itself keeps at most a few calls unanswered).
const STREAM_ANSWERS: usize = 16;

impl ReplicationService {
    /// The follower side of `strong`'s replication on this node.
    pub fn new(strong: Arc<StrongPolicy>) -> ReplicationService {
        ReplicationService { strong }
    }

    /// A master's replication call, checked: the records decoded, and the tablet one
    /// the metadata places on this node.
    async fn call(&self, req: pb::ReplicateRequest) -> Result<Replicate, Status> {
        let tablet = TabletId(req.tablet_id);
        let desc = self.replica_of(tablet).await?;
        let records: Vec<OplogRecord> = postcard::from_bytes(&req.records)
            .map_err(|e| Error::invalid("records", format!("undecodable records: {e}")))
            .status()?;
        Ok(Replicate {
            table: TableId(req.table_id),
            tablet,
            range: desc.range(),
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
    }

    /// The tablet's descriptor, if the metadata puts a replica on this node (never
    /// resurrect the data of a dropped table, or of a replica that moved away).
    async fn replica_of(&self, tablet: TabletId) -> Result<TabletDesc, Status> {
        let known = |s: &StrongPolicy| {
            s.catalog()
                .tablet(tablet)
                .filter(|t| t.replicas.contains(&s.node()))
        };
        if let Some(desc) = known(&self.strong) {
            return Ok(desc);
        }
        self.strong.catalog().sync().await.status()?;
        known(&self.strong)
            .ok_or(Error::NotServing { tablet })
            .status()
    }

    /// Receives a snapshot's data into a file of the snapshot directory; `None` when
    /// the snapshot has no data.
    async fn receive(
        &self,
        tablet: TabletId,
        first: Vec<u8>,
        stream: &mut Streaming<pb::SnapshotChunk>,
    ) -> Result<Option<PathBuf>, Status> {
        let dir = self.strong.tablets().snapshot_dir().to_path_buf();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = dir.join(format!("incoming-{}-{nanos}.sst", tablet.0));
        let io = |e: std::io::Error| Status::internal(format!("snapshot file: {e}"));
        let mut file: Option<tokio::fs::File> = None;
        let mut chunk = first;
        loop {
            if !chunk.is_empty() {
                if file.is_none() {
                    tokio::fs::create_dir_all(&dir).await.map_err(io)?;
                    file = Some(tokio::fs::File::create(&path).await.map_err(io)?);
                }
                let f = file.as_mut().expect("created above");
                f.write_all(&chunk).await.map_err(io)?;
            }
            match stream.message().await? {
                Some(next) => chunk = next.data,
                None => break,
            }
        }
        match file {
            Some(f) => {
                f.sync_all().await.map_err(io)?;
                Ok(Some(path))
            }
            None => Ok(None),
        }
    }
}

#[tonic::async_trait]
impl pb::replication_server::Replication for ReplicationService {
    async fn install_snapshot(
        &self,
        request: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::ReplicateResponse>, Status> {
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let tablet = TabletId(first.tablet_id);
        let desc = self.replica_of(tablet).await?;
        if desc.table.0 != first.table_id {
            return Err(Error::invalid(
                "table_id",
                format!(
                    "{tablet} belongs to {}, not table {}",
                    desc.table, first.table_id
                ),
            ))
            .status();
        }
        let state: TabletState = postcard::from_bytes(&first.state)
            .map_err(|e| Error::invalid("state", format!("undecodable tablet state: {e}")))
            .status()?;
        let file = self.receive(tablet, first.data, &mut stream).await?;
        let installed = self
            .strong
            .tablets()
            .install_snapshot(Install {
                table: desc.table,
                tablet,
                range: desc.range(),
                epoch: Epoch(first.epoch),
                state,
                file: file.clone(),
            })
            .await;
        if let Some(f) = file {
            // Ingestion moved it; on failure it is still there.
            let _ = tokio::fs::remove_file(f).await;
        }
        let (log_end, last_ts) = installed.status()?;
        Ok(Response::new(pb::ReplicateResponse {
            log_end: log_end.0,
            last_ts: last_ts.0,
        }))
    }

    async fn replicate(
        &self,
        request: Request<pb::ReplicateRequest>,
    ) -> Result<Response<pb::ReplicateResponse>, Status> {
        let call = self.call(request.into_inner()).await?;
        let (log_end, last_ts) = self.strong.tablets().replicate(call).await.status()?;
        Ok(Response::new(pb::ReplicateResponse {
            log_end: log_end.0,
            last_ts: last_ts.0,
        }))
    }

    type ReplicateStreamStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<pb::ReplicateResponse, Status>> + Send>,
    >;

    async fn replicate_stream(
        &self,
        request: Request<Streaming<pb::ReplicateRequest>>,
    ) -> Result<Response<Self::ReplicateStreamStream>, Status> {
        let mut calls = request.into_inner();
        let (answers, out) = tokio::sync::mpsc::channel(STREAM_ANSWERS);
        let this = self.clone();
        tokio::spawn(async move {
            // Calls queued on the writer, oldest first: answered in that order.
            let mut queued: std::collections::VecDeque<ReplicateAnswer> = Default::default();
            let mut open = true;
            loop {
                tokio::select! {
                    answer = async {
                        queued.front_mut().expect("guarded by the condition").wait().await
                    }, if !queued.is_empty() => {
                        queued.pop_front();
                        let answer = answer.status().map(|(end, ts): (Seq, _)| pb::ReplicateResponse {
                            log_end: end.0,
                            last_ts: ts.0,
                        });
                        let refused = answer.is_err();
                        if answers.send(answer).await.is_err() || refused {
                            return;
                        }
                    }
                    call = calls.message(), if open => match call {
                        Ok(Some(call)) => {
                            let queued_call = match this.call(call).await {
                                Ok(c) => this.strong.tablets().queue_replicate(c).await.status(),
                                Err(status) => Err(status),
                            };
                            match queued_call {
                                Ok(answer) => queued.push_back(answer),
                                Err(status) => {
                                    let _ = answers.send(Err(status)).await;
                                    return;
                                }
                            }
                        }
                        Ok(None) => open = false,
                        Err(_) => return,
                    },
                    else => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out),
        )))
    }

    async fn replica_status(
        &self,
        request: Request<pb::ReplicaStatusRequest>,
    ) -> Result<Response<pb::ReplicaStatusResponse>, Status> {
        let mut tablets = Vec::new();
        for id in request.into_inner().tablet_ids {
            if let Some((last_epoch, log_end)) = self
                .strong
                .tablets()
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
        self.strong
            .hand_over(TabletId(req.tablet_id), datalayer_store::NodeId(req.target))
            .await
            .status()?;
        Ok(Response::new(pb::HandOverResponse {}))
    }
}
