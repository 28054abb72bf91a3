//! The metadata group's network: openraft messages over gRPC (`datalayer.v1.Raft`),
//! JSON-encoded inside a bytes payload. [`Network`] is the client side,
//! [`RaftService`] the server side.

use super::TypeConfig;
use super::raft_catalog::RaftCatalog;
use super::state::{MetaCommand, MetaResponse};
use datalayer_api::v1 as pb;
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
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// How long a forwarded proposal may take (the leader bounds its own wait by less).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(8);
/// How long a peer may take to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Opens connections to the other members.
#[derive(Debug, Clone, Default)]
pub struct Network;

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Peer {
        Peer {
            target,
            addr: node.addr.clone(),
            client: None,
        }
    }
}

/// A connection to one member, opened on first use and reopened after a failure.
pub struct Peer {
    target: u64,
    addr: String,
    client: Option<RaftClient<Channel>>,
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
        let client = match &mut self.client {
            Some(c) => c,
            None => {
                let endpoint = Endpoint::from_shared(format!("http://{}", self.addr))
                    .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true);
                let channel = endpoint
                    .connect()
                    .await
                    .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
                self.client.insert(RaftClient::new(channel))
            }
        };
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
                self.client = None;
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

/// Connections that carry forwarded proposals, by member address. Every node's
/// liveness heartbeats go to the leader this way several times a second, and a
/// connection per call cost a TCP and an HTTP/2 handshake each time. A call that
/// fails drops its connection; HTTP/2 pings find a dead one while it is idle.
static FORWARDING: std::sync::LazyLock<parking_lot::Mutex<HashMap<String, Channel>>> =
    std::sync::LazyLock::new(Default::default);

async fn forwarding_channel(addr: &str) -> Result<Channel, String> {
    if let Some(channel) = FORWARDING.lock().get(addr) {
        return Ok(channel.clone());
    }
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("bad address {addr:?}: {e}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(2))
        .keep_alive_while_idle(true)
        .connect()
        .await
        .map_err(|e| format!("cannot reach {addr}: {e}"))?;
    FORWARDING.lock().insert(addr.to_string(), channel.clone());
    Ok(channel)
}

/// Sends `cmd` to the member at `addr` for it to propose (or forward once).
pub async fn propose_at(
    addr: &str,
    cmd: MetaCommand,
    forwarded: bool,
) -> Result<MetaResponse, String> {
    let channel = forwarding_channel(addr).await?;
    let json = serde_json::to_vec(&ProposeRequest { cmd, forwarded }).map_err(|e| e.to_string())?;
    let mut request = tonic::Request::new(pb::RaftPayload { json });
    request.set_timeout(FORWARD_TIMEOUT);
    let answer = RaftClient::new(channel)
        .propose(request)
        .await
        .map_err(|s| {
            FORWARDING.lock().remove(addr);
            format!("{addr}: {}", s.message())
        })?
        .into_inner();
    let result: Result<MetaResponse, String> =
        serde_json::from_slice(&answer.json).map_err(|e| e.to_string())?;
    result
}

/// Whether the member at `addr` answers a ping within `timeout`.
pub async fn ping(addr: &str, timeout: Duration) -> bool {
    let payload = pb::RaftPayload::default();
    let attempt = async {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .ok()?
            .connect_timeout(timeout)
            .connect()
            .await
            .ok()?;
        RaftClient::new(channel).ping(payload).await.ok()
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .ok()
        .flatten()
        .is_some()
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
        let result = self
            .catalog
            .propose(req.cmd, !req.forwarded)
            .await
            .map_err(|e| e.to_string());
        encode(&result)
    }
}
