//! The metadata group's network: openraft messages over gRPC (`datalayer.internal.v1.Raft`),
//! JSON-encoded inside a bytes payload. [`Network`] is the client side,
//! [`RaftService`] the server side.

use super::TypeConfig;
use super::raft_catalog::RaftCatalog;
use super::state::{MetaCommand, MetaResponse};
use crate::error::{Error, MetaUnavailable, Result};
use crate::pool::{ChannelPool, Lane};
use datalayer_api::internal::v1 as pb;
use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use pb::raft_client::RaftClient;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;

/// How long a forwarded proposal may take (the leader bounds its own wait by less).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(8);

/// Reaches the other members through the node's channel pool.
#[derive(Debug, Clone)]
pub struct Network {
    pool: Arc<ChannelPool>,
}

impl Network {
    /// The group's network over `pool`.
    pub fn new(pool: Arc<ChannelPool>) -> Network {
        Network { pool }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Peer {
        Peer {
            target,
            addr: node.addr.clone(),
            pool: self.pool.clone(),
        }
    }
}

/// One member, reached on the pool's metadata lane (its channel is dropped after a
/// failed call and opened again on the next).
pub struct Peer {
    target: u64,
    addr: String,
    pool: Arc<ChannelPool>,
}

type RpcResult<T, E> = Result<T, RPCError<u64, BasicNode, E>>;

impl Peer {
    async fn call<Req, Resp, E>(
        &mut self,
        method: Method,
        req: &Req,
        timeout: Duration,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let json = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let channel = self
            .pool
            .get(&self.addr, Lane::Metadata)
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let mut client = RaftClient::new(channel);
        let mut request = tonic::Request::new(pb::RaftPayload { json });
        request.set_timeout(timeout);
        let answer = match method {
            Method::AppendEntries => client.append_entries(request).await,
            Method::Vote => client.vote(request).await,
            Method::InstallSnapshot => client.install_snapshot(request).await,
        };
        let answer = match answer {
            Ok(a) => a.into_inner(),
            Err(status) => {
                self.pool.forget(&self.addr, Lane::Metadata);
                return Err(RPCError::Unreachable(Unreachable::new(&status)));
            }
        };
        let result: Result<Resp, E> = serde_json::from_slice(&answer.json)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

#[derive(Debug, Clone, Copy)]
enum Method {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>, RaftError<u64>> {
        self.call(Method::AppendEntries, &rpc, option.hard_ttl())
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>> {
        self.call(Method::InstallSnapshot, &rpc, option.hard_ttl())
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<u64>, RaftError<u64>> {
        self.call(Method::Vote, &rpc, option.hard_ttl()).await
    }
}

/// A metadata change forwarded to the leader.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct ProposeRequest {
    /// The change.
    pub cmd: MetaCommand,
    /// Set by a member that forwards; the receiver does not forward again.
    pub forwarded: bool,
}

/// A `Propose` call's answer: the change's response, or why the member could not
/// take it; a member of the release before typed failures answers them as text.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum ProposeAnswer {
    Typed(Result<MetaResponse, MetaUnavailable>),
    Text(Result<MetaResponse, String>),
}

/// Sends `cmd` to the member at `addr` for it to propose (or forward once).
/// Every node's liveness heartbeats go to the leader this way several times a
/// second, on the pool's metadata lane (one connection per member, kept).
pub async fn propose_at(
    pool: &ChannelPool,
    addr: &str,
    cmd: MetaCommand,
    forwarded: bool,
) -> Result<MetaResponse> {
    let channel = pool.get(addr, Lane::Metadata).await?;
    let json = serde_json::to_vec(&ProposeRequest { cmd, forwarded })
        .map_err(|e| Error::Internal(format!("encoding a proposal: {e}")))?;
    let mut request = tonic::Request::new(pb::RaftPayload { json });
    request.set_timeout(FORWARD_TIMEOUT);
    let answer = RaftClient::new(channel)
        .propose(request)
        .await
        .map_err(|s| {
            pool.forget(addr, Lane::Metadata);
            Error::Unreachable {
                addr: addr.to_string(),
                reason: s.message().to_string(),
            }
        })?
        .into_inner();
    let answered: ProposeAnswer = serde_json::from_slice(&answer.json)
        .map_err(|e| Error::Internal(format!("a proposal's answer: {e}")))?;
    match answered {
        ProposeAnswer::Typed(result) => result.map_err(Error::Metadata),
        ProposeAnswer::Text(result) => {
            result.map_err(|reason| Error::Metadata(MetaUnavailable::Raft { reason }))
        }
    }
}

/// Whether the member at `addr` answers a ping within `timeout` (a ping that fails
/// drops the connection, so the next one connects afresh).
pub async fn ping(pool: &ChannelPool, addr: &str, timeout: Duration) -> bool {
    let payload = pb::RaftPayload::default();
    let attempt = async {
        let channel = pool.get(addr, Lane::Metadata).await.ok()?;
        RaftClient::new(channel).ping(payload).await.ok()
    };
    let answered = tokio::time::timeout(timeout, attempt)
        .await
        .ok()
        .flatten()
        .is_some();
    if !answered {
        pool.forget(addr, Lane::Metadata);
    }
    answered
}

/// Serves the Raft messages of the other members, and proposals they forward.
#[derive(Clone)]
pub struct RaftService {
    catalog: Arc<RaftCatalog>,
}

impl RaftService {
    /// Serves the group `catalog` is a member of.
    pub fn new(catalog: Arc<RaftCatalog>) -> RaftService {
        RaftService { catalog }
    }
}

fn decode<T: DeserializeOwned>(payload: pb::RaftPayload) -> Result<T, tonic::Status> {
    serde_json::from_slice(&payload.json)
        .map_err(|e| tonic::Status::invalid_argument(format!("raft payload: {e}")))
}

fn encode<T: Serialize>(result: &T) -> Result<tonic::Response<pb::RaftPayload>, tonic::Status> {
    let json = serde_json::to_vec(result)
        .map_err(|e| tonic::Status::internal(format!("raft payload: {e}")))?;
    Ok(tonic::Response::new(pb::RaftPayload { json }))
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        request: tonic::Request<pb::RaftPayload>,
    ) -> Result<tonic::Response<pb::RaftPayload>, tonic::Status> {
        let req: AppendEntriesRequest<TypeConfig> = decode(request.into_inner())?;
        encode(&self.catalog.raft().append_entries(req).await)
    }

    async fn vote(
        &self,
        request: tonic::Request<pb::RaftPayload>,
    ) -> Result<tonic::Response<pb::RaftPayload>, tonic::Status> {
        let req: VoteRequest<u64> = decode(request.into_inner())?;
        encode(&self.catalog.raft().vote(req).await)
    }

    async fn install_snapshot(
        &self,
        request: tonic::Request<pb::RaftPayload>,
    ) -> Result<tonic::Response<pb::RaftPayload>, tonic::Status> {
        let req: InstallSnapshotRequest<TypeConfig> = decode(request.into_inner())?;
        encode(&self.catalog.raft().install_snapshot(req).await)
    }

    async fn ping(
        &self,
        _request: tonic::Request<pb::RaftPayload>,
    ) -> Result<tonic::Response<pb::RaftPayload>, tonic::Status> {
        Ok(tonic::Response::new(pb::RaftPayload::default()))
    }

    async fn propose(
        &self,
        request: tonic::Request<pb::RaftPayload>,
    ) -> Result<tonic::Response<pb::RaftPayload>, tonic::Status> {
        let req: ProposeRequest = decode(request.into_inner())?;
        let result: Result<MetaResponse, MetaUnavailable> =
            match self.catalog.propose(req.cmd, !req.forwarded).await {
                Ok(r) => Ok(r),
                Err(Error::Metadata(why)) => Err(why),
                // Forwarding once more failed: the leader this member knows is
                // unreachable from here.
                Err(e) => Err(MetaUnavailable::Raft {
                    reason: e.to_string(),
                }),
            };
        encode(&result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datalayer_store::NodeId;

    fn decode(json: &str) -> Result<MetaResponse> {
        match serde_json::from_str::<ProposeAnswer>(json).expect("decodes") {
            ProposeAnswer::Typed(r) => r.map_err(Error::Metadata),
            ProposeAnswer::Text(r) => {
                r.map_err(|reason| Error::Metadata(MetaUnavailable::Raft { reason }))
            }
        }
    }

    #[test]
    fn a_proposal_answer_carries_a_typed_failure_and_reads_the_old_text_one() {
        let typed: Result<MetaResponse, MetaUnavailable> = Err(MetaUnavailable::NotLeader {
            leader: Some(NodeId(3)),
        });
        let json = serde_json::to_string(&typed).unwrap();
        let e = decode(&json).unwrap_err();
        assert!(matches!(
            e,
            Error::Metadata(MetaUnavailable::NotLeader {
                leader: Some(NodeId(3))
            })
        ));
        assert!(e.retryable());
        // A member of the previous release answers failures as text.
        let e = decode(r#"{"Err":"the change was not committed"}"#).unwrap_err();
        assert!(
            matches!(&e, Error::Metadata(MetaUnavailable::Raft { reason }) if reason == "the change was not committed")
        );
        let ok: Result<MetaResponse, MetaUnavailable> = Ok(MetaResponse::Node(NodeId(7)));
        let json = serde_json::to_string(&ok).unwrap();
        assert!(matches!(decode(&json), Ok(MetaResponse::Node(NodeId(7)))));
    }
}
