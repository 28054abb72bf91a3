//! The `datalayer.v1.Kv` service.

use super::timed;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::status::IntoStatus;
use datalayer_api::v1 as pb;
use datalayer_api::v1::kv_client::KvClient;
use datalayer_cluster::pool::{ChannelPool, Lane};
use datalayer_cluster::status::to_status;
use datalayer_cluster::strong::GetAnswer;
use datalayer_cluster::strong::{Acks, ReadLevel, WriteState, resume_key};
use datalayer_cluster::{
    Error, Expected, Locality, OpResult, Outcome, Router, StrongPolicy, WriteOptions,
};
use datalayer_store::{Epoch, KeyRange, Mutation, RequestId, Seq, TabletId, Timestamp};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

mod span;

/// Serves KV requests of one node; requests for tablets mastered elsewhere are
/// forwarded to their master once.
#[derive(Debug, Clone)]
pub struct KvService {
    router: Arc<Router>,
    strong: Arc<StrongPolicy>,
    limits: Limits,
    metrics: Arc<Metrics>,
    peers: Peers,
}

/// How long a forwarded request may take (longer than a write's ack timeout).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(15);

/// Marks a request that a node forwarded, so the receiver never forwards it again.
pub(crate) const FORWARDED: &str = "x-datalayer-forwarded";

/// Connections to the other nodes: the node's pool, on its forwarding lane.
#[derive(Debug, Clone)]
struct Peers {
    pool: Arc<ChannelPool>,
}

impl Peers {
    async fn get(&self, addr: &str) -> Result<KvClient<Channel>, Error> {
        let channel = self.pool.get(addr, Lane::Forward).await?;
        Ok(KvClient::new(channel)
            .max_decoding_message_size(datalayer_client::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(datalayer_client::MAX_MESSAGE_BYTES))
    }

    /// The master may have moved or died: reconnect next time.
    fn forget(&self, addr: &str) {
        self.pool.forget(addr, Lane::Forward);
    }
}

/// Forwards `$req` with `$method` to the tablet's master when it is not this node.
macro_rules! forward_if_remote {
    ($self:ident, $request:ident, $method:ident, $key:expr) => {{
        let forwarded = $request.metadata().contains_key(FORWARDED);
        let req = $request.into_inner();
        if let Some(route) = req.route() {
            // Checked here and again at the master: nothing runs on an old route.
            let key: Vec<u8> = $key(&req);
            $self
                .router
                .check_route(
                    &req.table,
                    &key,
                    TabletId(route.tablet_id),
                    route.generation,
                )
                .await
                .map_err(|e| to_status(&e))?;
        }
        if !forwarded {
            let key: Vec<u8> = $key(&req);
            let local = $self.local_follower_read(&req.table, &key, consistency_of(&req));
            // Errors (unknown table, ...) are answered by the local path below.
            if local {
                // A follower read this node's replica can serve.
            } else if let Ok(Locality::Forward {
                addr: Some(addr), ..
            }) = $self.router.locate(&req.table, &key).await
            {
                $self.metrics.forwarded(stringify!($method));
                let retry_safe = req.retry_safe();
                let mut client = match $self.peers.get(&addr).await {
                    Ok(c) => c,
                    Err(e) => return Err(to_status(&e)),
                };
                let mut fwd = Request::new(req);
                fwd.metadata_mut()
                    .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
                // A master that stopped answering (paused, cut off) must not hold
                // the request forever.
                let result = match tokio::time::timeout(FORWARD_TIMEOUT, client.$method(fwd)).await
                {
                    Ok(r) => r,
                    Err(_) => Err(Status::deadline_exceeded(format!(
                        "no answer within {} s",
                        FORWARD_TIMEOUT.as_secs()
                    ))),
                };
                return result.map_err(|status| {
                    let (answer, broken) = forward_failure(status, &addr, retry_safe);
                    if broken {
                        $self.peers.forget(&addr);
                    }
                    if range_mismatch(&answer) {
                        // The master knows a later generation: catch up to route by it.
                        let router = $self.router.clone();
                        tokio::spawn(async move {
                            let _ = router.catalog().sync().await;
                        });
                    }
                    answer
                });
            }
        }
        req
    }};
}

/// What a node answers when a call it forwarded to a tablet's master failed: the
/// master's own error as it came (it carries an `ErrorDetail`), else — the call
/// itself broke — an error of a kind a plain gRPC client can act on: retryable when
/// the request never reached the master or is safe to send again, ambiguous when a
/// write may have been applied. Also whether the connection should be dropped.
fn forward_failure(status: Status, addr: &str, retry_safe: bool) -> (Status, bool) {
    if !status.details().is_empty() {
        let broken = status.code() == tonic::Code::Unavailable;
        return (status, broken);
    }
    let reason = format!("{}: {}", status.code(), status.message());
    // tonic answers UNAVAILABLE for a connection it could not open: nothing was sent.
    let unsent = status.code() == tonic::Code::Unavailable
        && status.message().to_ascii_lowercase().contains("connect");
    let err = if unsent || retry_safe {
        Error::Unreachable {
            addr: addr.to_string(),
            reason,
        }
    } else {
        Error::OutcomeUnknown {
            addr: addr.to_string(),
            reason,
        }
    };
    (to_status(&err), true)
}

/// Whether a status is a `RANGE_MISMATCH`.
fn range_mismatch(status: &Status) -> bool {
    datalayer_client::ClientError::from(status.clone()).kind == pb::ErrorKind::RangeMismatch
}

fn at(ts: u64) -> Option<Timestamp> {
    (ts != 0).then_some(Timestamp(ts))
}

/// The acks a write asked for (`None`: the table's default).
pub fn acks(acks: Option<pb::Acks>) -> Result<Option<Acks>, Error> {
    let Some(acks) = acks else {
        return Ok(None);
    };
    match acks.level {
        Some(pb::acks::Level::All(true)) => Ok(Some(Acks::All)),
        Some(pb::acks::Level::Count(1)) => Ok(Some(Acks::One)),
        Some(pb::acks::Level::Count(n)) if n > 1 => Ok(Some(Acks::Count(n))),
        _ => Err(Error::invalid(
            "acks",
            "give a count of at least 1, or all = true (or leave acks out for the table's default)",
        )),
    }
}

/// A write's options from its request's `acks` and `request_id`.
pub fn write_options(
    acks_field: Option<pb::Acks>,
    request: Option<pb::RequestId>,
) -> Result<WriteOptions, Error> {
    let request = match request {
        None => None,
        Some(r) if r.client == 0 || r.seq == 0 => {
            return Err(Error::invalid(
                "request_id",
                "client and seq must both be non-zero",
            ));
        }
        Some(r) => Some(RequestId {
            client: r.client,
            seq: r.seq,
        }),
    };
    Ok(WriteOptions {
        acks: acks(acks_field)?,
        request,
    })
}

/// The first key of the tablet a write position names (where to forward it).
fn position_key(router: &Router, position: Option<&pb::WritePosition>) -> Vec<u8> {
    let tablet = position.map_or(0, |p| p.tablet_id);
    router
        .catalog()
        .tablet(TabletId(tablet))
        .map(|t| t.start)
        .unwrap_or_default()
}

/// A request's write position, which it must have.
fn required_position(position: Option<pb::WritePosition>) -> Result<(TabletId, Epoch, Seq), Error> {
    let p =
        position.ok_or_else(|| Error::invalid("position", "the write's position is required"))?;
    Ok((TabletId(p.tablet_id), Epoch(p.epoch), Seq(p.seq)))
}

fn write_state(state: WriteState) -> pb::WriteState {
    match state {
        WriteState::Committed => pb::WriteState::Committed,
        WriteState::Pending => pb::WriteState::Pending,
        WriteState::Lost => pb::WriteState::Lost,
        WriteState::Aborted => pb::WriteState::Aborted,
    }
}

/// Longest staleness a follower read accepts when the request does not say.
const DEFAULT_MAX_STALENESS_MS: u32 = 10_000;

fn level(consistency: i32, max_staleness_ms: u32) -> Result<ReadLevel, Error> {
    match pb::ReadConsistency::try_from(consistency) {
        Ok(pb::ReadConsistency::Committed) => Ok(ReadLevel::Committed),
        Ok(pb::ReadConsistency::Latest) => Ok(ReadLevel::Latest),
        Ok(pb::ReadConsistency::Follower) => Ok(ReadLevel::Follower(Duration::from_millis(
            match max_staleness_ms {
                0 => DEFAULT_MAX_STALENESS_MS,
                n => n,
            } as u64,
        ))),
        Err(_) => Err(Error::invalid(
            "consistency",
            format!("unknown read consistency {consistency}"),
        )),
    }
}

fn range(start: Vec<u8>, end: Vec<u8>) -> KeyRange {
    KeyRange {
        start,
        end: (!end.is_empty()).then_some(end),
    }
}

fn position(o: &Outcome) -> Option<pb::WritePosition> {
    o.position.map(|p| pb::WritePosition {
        tablet_id: p.tablet.0,
        epoch: p.epoch.0,
        seq: p.seq.0,
    })
}

/// What the forwarding path needs to know of a request.
pub trait Consistency {
    /// The `ReadConsistency` value, if the request is a read.
    fn consistency(&self) -> Option<i32> {
        None
    }

    /// Whether sending the request twice does what sending it once does: reads,
    /// status queries and aborts always; writes when they carry a request id (a
    /// retry is answered from the log).
    fn retry_safe(&self) -> bool;

    /// The tablet the client routed a single-key request by, if it says.
    fn route(&self) -> Option<&pb::RangeHint> {
        None
    }
}

macro_rules! reads {
    ($($t:ty),*) => {$(impl Consistency for $t {
        fn consistency(&self) -> Option<i32> {
            Some(self.consistency)
        }
        fn retry_safe(&self) -> bool {
            true
        }
    })*};
}
macro_rules! writes {
    ($($t:ty),*) => {$(impl Consistency for $t {
        fn retry_safe(&self) -> bool {
            self.request_id.is_some()
        }
    })*};
}
/// Single-key requests carry the route their client took.
macro_rules! routed {
    ($($t:ty),*) => {$(impl Consistency for $t {
        fn retry_safe(&self) -> bool {
            self.request_id.is_some()
        }
        fn route(&self) -> Option<&pb::RangeHint> {
            self.route.as_ref()
        }
    })*};
}
macro_rules! queries {
    ($($t:ty),*) => {$(impl Consistency for $t {
        fn retry_safe(&self) -> bool {
            true
        }
    })*};
}
reads!(pb::BatchGetRequest, pb::ScanRequest);
impl Consistency for pb::GetRequest {
    fn consistency(&self) -> Option<i32> {
        Some(self.consistency)
    }
    fn retry_safe(&self) -> bool {
        true
    }
    fn route(&self) -> Option<&pb::RangeHint> {
        self.route.as_ref()
    }
}
writes!(pb::DeleteRangeRequest);
routed!(
    pb::WriteRequest,
    pb::CompareAndSetRequest,
    pb::IncrementRequest
);
queries!(pb::WriteStatusRequest, pb::AbortWriteRequest);

/// The read consistency of a request, if it is a read.
pub fn consistency_of(req: &impl Consistency) -> Option<i32> {
    req.consistency()
}

impl KvService {
    /// Whether a follower read of `table` at `key` can be served here without
    /// forwarding.
    fn local_follower_read(&self, table: &str, key: &[u8], consistency: Option<i32>) -> bool {
        consistency == Some(pb::ReadConsistency::Follower as i32)
            && self.strong.has_replica(table, key)
    }

    /// Serves KV requests of `strong` tables, forwarding through `router` those for
    /// tablets served elsewhere.
    pub fn new(
        router: Arc<Router>,
        strong: Arc<StrongPolicy>,
        pool: Arc<ChannelPool>,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> KvService {
        KvService {
            router,
            strong,
            peers: Peers { pool },
            limits,
            metrics,
        }
    }

    async fn write(&self, req: pb::WriteRequest) -> Result<pb::WriteResponse, Error> {
        self.limits.write(&req)?;
        let mutations = req
            .mutations
            .into_iter()
            .map(|m| match pb::MutationOp::try_from(m.op) {
                Ok(pb::MutationOp::Delete) => Mutation::Delete { key: m.key },
                _ => Mutation::Put {
                    key: m.key,
                    value: m.value,
                },
            })
            .collect();
        let opts = write_options(req.acks, req.request_id)?;
        let outcome = self.strong.write(&req.table, mutations, opts).await?;
        Ok(pb::WriteResponse {
            version: outcome.ts.0,
            position: position(&outcome),
        })
    }

    async fn scan(&self, req: pb::ScanRequest) -> Result<pb::ScanResponse, Error> {
        let limit = self.limits.scan(&req)?;
        let level = level(req.consistency, req.max_staleness_ms)?;
        let page = self
            .strong
            .scan(
                &req.table,
                range(req.start, req.end),
                limit,
                req.reverse,
                at(req.at_timestamp),
                level,
            )
            .await?;
        let mut answer = pb::ScanResponse {
            rows: page
                .rows
                .into_iter()
                .map(|(key, v)| pb::KeyValue {
                    key,
                    value: v.value,
                    version: v.ts.0,
                })
                .collect(),
            more: page.more,
            resume_key: page.resume_key,
            read_timestamp: page.read_ts.0,
            staleness_ms: page.staleness.as_millis() as u64,
        };
        // Keep the page well under the message limit, however large the values.
        span::cut_to_budget(&mut answer, self.limits.scan_page_bytes(), req.reverse);
        Ok(answer)
    }

    async fn compare_and_set(
        &self,
        req: pb::CompareAndSetRequest,
    ) -> Result<pb::CompareAndSetResponse, Error> {
        self.limits.table(&req.table)?;
        self.limits.key("key", &req.key)?;
        self.limits.value("new_value", &req.new_value)?;
        let expected = match req.expected {
            Some(pb::compare_and_set_request::Expected::ExpectedVersion(v)) if v > 0 => {
                Expected::Version(Timestamp(v))
            }
            Some(pb::compare_and_set_request::Expected::ExpectAbsent(true)) => Expected::Absent,
            _ => {
                return Err(Error::invalid(
                    "expected",
                    "give expected_version (> 0) or expect_absent = true",
                ));
            }
        };
        if req.delete && !req.new_value.is_empty() {
            return Err(Error::invalid("new_value", "a delete carries no new value"));
        }
        let new = (!req.delete).then_some(req.new_value);
        let opts = write_options(req.acks, req.request_id)?;
        let outcome = self
            .strong
            .compare_and_set(&req.table, req.key, expected, new, opts)
            .await?;
        Ok(match outcome.result {
            OpResult::Mismatch(current) => pb::CompareAndSetResponse {
                succeeded: false,
                new_version: 0,
                current_found: current.is_some(),
                current_version: current.as_ref().map_or(0, |c| c.ts.0),
                current_value: current.map(|c| c.value).unwrap_or_default(),
            },
            _ => pb::CompareAndSetResponse {
                succeeded: true,
                new_version: outcome.ts.0,
                ..Default::default()
            },
        })
    }
}

impl KvService {
    async fn batch_get_one(
        &self,
        request: Request<pb::BatchGetRequest>,
    ) -> Result<Response<pb::BatchGetResponse>, Status> {
        let request = forward_if_remote!(self, request, batch_get, |r: &pb::BatchGetRequest| r
            .keys
            .first()
            .cloned()
            .unwrap_or_default());
        let req = request;
        timed(&self.metrics, "BatchGet", async {
            self.limits.batch_get(&req).status()?;
            let keys = req.keys.clone();
            let level = level(req.consistency, req.max_staleness_ms).status()?;
            let GetAnswer {
                values,
                read_ts: ts,
                staleness: stale,
            } = self
                .strong
                .get(&req.table, req.keys, at(req.at_timestamp), level)
                .await
                .status()?;
            let results = keys
                .into_iter()
                .zip(values)
                .map(|(key, v)| match v {
                    Some(v) => pb::BatchGetResult {
                        key,
                        found: true,
                        value: v.value,
                        version: v.ts.0,
                    },
                    None => pb::BatchGetResult {
                        key,
                        ..Default::default()
                    },
                })
                .collect();
            Ok(pb::BatchGetResponse {
                results,
                read_timestamp: ts.0,
                staleness_ms: stale.as_millis() as u64,
            })
        })
        .await
    }

    async fn scan_one(
        &self,
        request: Request<pb::ScanRequest>,
    ) -> Result<Response<pb::ScanResponse>, Status> {
        let request =
            forward_if_remote!(self, request, scan, |r: &pb::ScanRequest| r.start.clone());
        timed(&self.metrics, "Scan", async {
            self.scan(request).await.status()
        })
        .await
    }

    async fn delete_range_one(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let request =
            forward_if_remote!(self, request, delete_range, |r: &pb::DeleteRangeRequest| r
                .start
                .clone());
        let req = request;
        timed(&self.metrics, "DeleteRange", async {
            self.limits.table(&req.table).status()?;
            self.limits.bound("start", &req.start).status()?;
            self.limits.bound("end", &req.end).status()?;
            let opts = write_options(req.acks, req.request_id).status()?;
            let outcome = self
                .strong
                .delete_range(&req.table, range(req.start, req.end), opts)
                .await
                .status()?;
            let deleted = match outcome.result {
                OpResult::RangeDeleted(n) => n,
                _ => 0,
            };
            Ok(pb::DeleteRangeResponse {
                deleted,
                version: outcome.ts.0,
            })
        })
        .await
    }
}

#[tonic::async_trait]
impl pb::kv_server::Kv for KvService {
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let request = forward_if_remote!(self, request, get, |r: &pb::GetRequest| r.key.clone());
        let req = request;
        timed(&self.metrics, "Get", async {
            self.limits.table(&req.table).status()?;
            self.limits.key("key", &req.key).status()?;
            let level = level(req.consistency, req.max_staleness_ms).status()?;
            let GetAnswer {
                mut values,
                read_ts: ts,
                staleness: stale,
            } = self
                .strong
                .get(&req.table, vec![req.key], at(req.at_timestamp), level)
                .await
                .status()?;
            Ok(match values.pop().flatten() {
                Some(v) => pb::GetResponse {
                    found: true,
                    value: v.value,
                    version: v.ts.0,
                    read_timestamp: ts.0,
                    staleness_ms: stale.as_millis() as u64,
                },
                None => pb::GetResponse {
                    read_timestamp: ts.0,
                    staleness_ms: stale.as_millis() as u64,
                    ..Default::default()
                },
            })
        })
        .await
    }

    async fn batch_get(
        &self,
        request: Request<pb::BatchGetRequest>,
    ) -> Result<Response<pb::BatchGetResponse>, Status> {
        let req = request.get_ref();
        let keys = req.keys.iter();
        let range = KeyRange {
            start: keys.clone().min().cloned().unwrap_or_default(),
            end: keys.max().map(|k| resume_key(k, false)),
        };
        let spanned = match req.keys.is_empty() {
            true => None,
            false => self.spanned(&req.table, &range).await,
        };
        if let Some(tablets) = spanned {
            let req = request.into_inner();
            return timed(&self.metrics, "BatchGet", async {
                self.batch_get_across(req, &tablets).await
            })
            .await;
        }
        self.batch_get_one(request).await
    }

    async fn write(
        &self,
        request: Request<pb::WriteRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let request = forward_if_remote!(self, request, write, |r: &pb::WriteRequest| r
            .mutations
            .first()
            .map(|m| m.key.clone())
            .unwrap_or_default());
        timed(&self.metrics, "Write", async {
            self.write(request).await.status()
        })
        .await
    }

    async fn scan(
        &self,
        request: Request<pb::ScanRequest>,
    ) -> Result<Response<pb::ScanResponse>, Status> {
        let req = request.get_ref();
        let whole = range(req.start.clone(), req.end.clone());
        if let Some(tablets) = self.spanned(&req.table, &whole).await {
            let req = request.into_inner();
            return timed(&self.metrics, "Scan", async {
                self.scan_across(req, tablets).await
            })
            .await;
        }
        self.scan_one(request).await
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let req = request.get_ref();
        let whole = range(req.start.clone(), req.end.clone());
        if let Some(tablets) = self.spanned(&req.table, &whole).await {
            let req = request.into_inner();
            return timed(&self.metrics, "DeleteRange", async {
                self.limits.table(&req.table).status()?;
                self.limits.bound("start", &req.start).status()?;
                self.limits.bound("end", &req.end).status()?;
                write_options(req.acks, req.request_id).status()?;
                self.delete_range_across(req, &tablets).await
            })
            .await;
        }
        self.delete_range_one(request).await
    }
    async fn compare_and_set(
        &self,
        request: Request<pb::CompareAndSetRequest>,
    ) -> Result<Response<pb::CompareAndSetResponse>, Status> {
        let request = forward_if_remote!(
            self,
            request,
            compare_and_set,
            |r: &pb::CompareAndSetRequest| r.key.clone()
        );
        timed(&self.metrics, "CompareAndSet", async {
            self.compare_and_set(request).await.status()
        })
        .await
    }

    async fn increment(
        &self,
        request: Request<pb::IncrementRequest>,
    ) -> Result<Response<pb::IncrementResponse>, Status> {
        let request = forward_if_remote!(self, request, increment, |r: &pb::IncrementRequest| r
            .key
            .clone());
        let req = request;
        timed(&self.metrics, "Increment", async {
            self.limits.table(&req.table).status()?;
            self.limits.key("key", &req.key).status()?;
            let opts = write_options(req.acks, req.request_id).status()?;
            let outcome = self
                .strong
                .increment(&req.table, req.key, req.delta, opts)
                .await
                .status()?;
            let value = match outcome.result {
                OpResult::Counter(v) => v,
                _ => return Err(Status::internal("increment returned no counter")),
            };
            Ok(pb::IncrementResponse {
                value,
                version: outcome.ts.0,
            })
        })
        .await
    }

    async fn write_status(
        &self,
        request: Request<pb::WriteStatusRequest>,
    ) -> Result<Response<pb::WriteStatusResponse>, Status> {
        let router = self.router.clone();
        let start_key = |r: &pb::WriteStatusRequest| position_key(&router, r.position.as_ref());
        let request = forward_if_remote!(self, request, write_status, start_key);
        let req = request;
        timed(&self.metrics, "WriteStatus", async {
            self.limits.table(&req.table).status()?;
            let (tablet, epoch, seq) = required_position(req.position).status()?;
            let state = self
                .strong
                .write_status(&req.table, tablet, epoch, seq)
                .await
                .status()?;
            Ok(pb::WriteStatusResponse {
                state: write_state(state) as i32,
            })
        })
        .await
    }

    async fn abort_write(
        &self,
        request: Request<pb::AbortWriteRequest>,
    ) -> Result<Response<pb::AbortWriteResponse>, Status> {
        let router = self.router.clone();
        let start_key = |r: &pb::AbortWriteRequest| position_key(&router, r.position.as_ref());
        let request = forward_if_remote!(self, request, abort_write, start_key);
        let req = request;
        timed(&self.metrics, "AbortWrite", async {
            self.limits.table(&req.table).status()?;
            let (tablet, epoch, seq) = required_position(req.position).status()?;
            let state = self
                .strong
                .abort_write(&req.table, tablet, epoch, seq)
                .await
                .status()?;
            Ok(pb::AbortWriteResponse {
                state: write_state(state) as i32,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn detail(status: &Status) -> pb::ErrorDetail {
        pb::ErrorDetail::decode(status.details()).expect("an ErrorDetail")
    }

    #[test]
    fn a_forwarded_call_that_never_left_is_retryable() {
        let refused = Status::unavailable("tcp connect error: Connection refused");
        let (s, broken) = forward_failure(refused, "10.0.0.1:7700", false);
        assert!(broken);
        assert_eq!(s.code(), tonic::Code::Unavailable);
        let d = detail(&s);
        assert_eq!(d.kind(), pb::ErrorKind::Unavailable);
        assert!(d.retryable, "{d:?}");
    }

    #[test]
    fn a_write_whose_forwarded_call_broke_midway_is_ambiguous_never_unknown() {
        let broke = Status::unknown("transport error");
        let (s, broken) = forward_failure(broke.clone(), "10.0.0.1:7700", false);
        assert!(broken);
        assert_eq!(s.code(), tonic::Code::DeadlineExceeded);
        let d = detail(&s);
        assert_eq!(d.kind(), pb::ErrorKind::Ambiguous);
        assert!(
            !d.retryable,
            "a write that may have been applied is not retried blindly"
        );
        // Safe to send again (a read, or a write with a request id): retryable.
        let (s, _) = forward_failure(broke, "10.0.0.1:7700", true);
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert!(detail(&s).retryable);
    }

    #[test]
    fn the_masters_own_error_passes_through() {
        let own = to_status(&Error::NotServing {
            tablet: TabletId(7),
        });
        let (s, broken) = forward_failure(own.clone(), "10.0.0.1:7700", false);
        assert_eq!((s.code(), s.details()), (own.code(), own.details()));
        assert_eq!(detail(&s).kind(), pb::ErrorKind::NotServing);
        assert!(
            broken,
            "an unavailable master may have moved: reconnect next time"
        );
    }

    #[test]
    fn writes_are_retry_safe_only_with_a_request_id() {
        let mut w = pb::WriteRequest::default();
        assert!(!w.retry_safe());
        w.request_id = Some(pb::RequestId { client: 1, seq: 1 });
        assert!(w.retry_safe());
        assert!(pb::GetRequest::default().retry_safe());
        assert!(pb::AbortWriteRequest::default().retry_safe());
        assert!(!pb::IncrementRequest::default().retry_safe());
    }
}
