//! # datalayer-client: talk to a DataLayer cluster
//!
//! A typed layer over the `datalayer.v1` gRPC services that users can embed. It keeps
//! a range cache (table → tablets → master address) learned from the node it
//! connected to, and sends each KV request straight to the master of the key's
//! tablet; a stale route only costs a forwarding hop on the server side.
//! Every failed call returns a [`ClientError`] whose `kind` comes from the server's
//! machine-readable `ErrorDetail`, so callers branch on kinds, not on text.
//!
//! Calls failing with a retryable error are sent again ([`Client::set_retries`]),
//! writes included: each write carries this client's id and a number, so a retry of
//! a write already in the log gets its original answer instead of being applied
//! twice. An `Ambiguous` answer is never retried.
//!
//! ```no_run
//! # async fn demo() -> Result<(), datalayer_client::ClientError> {
//! let mut c = datalayer_client::Client::connect("127.0.0.1:7700").await?;
//! c.create_table("users", Default::default()).await?;
//! c.put("users", b"alice", b"hello").await?;
//! assert_eq!(c.get("users", b"alice").await?.map(|v| v.value), Some(b"hello".to_vec()));
//! # Ok(()) }
//! ```

use datalayer_api::v1 as pb;
use pb::admin_client::AdminClient;
use pb::kv_client::KvClient;
use pb::timeseries_client::TimeseriesClient;
use prost::Message;
use std::sync::{Arc, Mutex};
use tonic::transport::{Channel, Endpoint};

pub use pb::ErrorKind;

/// Largest message the client sends or accepts, in bytes (the server's own limit is
/// reported by [`Client::node_status`]).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// A failed call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ClientError {
    /// The class of the failure; `Unavailable` also for transport failures.
    pub kind: ErrorKind,
    /// Whether the same call may succeed if sent again.
    pub retryable: bool,
    /// What the server (or the transport) said.
    pub message: String,
    /// The request field at fault, for invalid arguments.
    pub field: String,
    /// The gRPC code.
    pub code: tonic::Code,
    /// Where an `Ambiguous` write was written: ask [`Client::write_status`] later.
    pub position: Option<pb::WritePosition>,
    /// The current descriptors a `RangeMismatch` carries.
    pub tablets: Vec<pb::RangeDescriptor>,
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        match pb::ErrorDetail::decode(status.details()) {
            Ok(d) if d.kind != 0 => ClientError {
                kind: d.kind(),
                retryable: d.retryable,
                message: d.message,
                field: d.field,
                code: status.code(),
                position: d.position,
                tablets: d.tablets,
            },
            _ => ClientError {
                kind: match status.code() {
                    tonic::Code::Unavailable => ErrorKind::Unavailable,
                    tonic::Code::InvalidArgument | tonic::Code::OutOfRange => {
                        ErrorKind::InvalidArgument
                    }
                    _ => ErrorKind::Internal,
                },
                retryable: status.code() == tonic::Code::Unavailable,
                message: format!("{}: {}", status.code(), status.message()),
                field: String::new(),
                code: status.code(),
                position: None,
                tablets: Vec::new(),
            },
        }
    }
}

impl From<tonic::transport::Error> for ClientError {
    fn from(e: tonic::transport::Error) -> Self {
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message = format!("{message}: {s}");
            source = s.source();
        }
        ClientError {
            kind: ErrorKind::Unavailable,
            retryable: true,
            message,
            field: String::new(),
            code: tonic::Code::Unavailable,
            position: None,
            tablets: Vec::new(),
        }
    }
}

/// A request that can name the tablet it was routed by (single-key requests).
pub(crate) trait Route {
    /// Names the route (`None`: let the node route it).
    fn set_route(&mut self, route: Option<pb::RangeHint>) {
        let _ = route;
    }
}

macro_rules! routed_requests {
    ($($t:ty),*) => {$(impl Route for $t {
        fn set_route(&mut self, route: Option<pb::RangeHint>) {
            self.route = route;
        }
    })*};
}
routed_requests!(
    pb::GetRequest,
    pb::WriteRequest,
    pb::CompareAndSetRequest,
    pb::IncrementRequest
);
impl Route for pb::ScanRequest {}
impl Route for pb::BatchGetRequest {}
impl Route for pb::DeleteRangeRequest {}

/// Result of a client call.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Options of a new table; `Default` gives a strong table with server defaults.
#[derive(Debug, Clone, Default)]
pub struct TableOptions {
    /// The policy; unspecified is strong.
    pub policy: pb::Policy,
    /// Replicas per tablet; 0 for the default.
    pub replication_factor: u32,
    /// How long old versions stay readable, in seconds; 0 for the default.
    pub version_retention_secs: u64,
    /// Succeed without change when the table exists.
    pub if_not_exists: bool,
    /// Acks of writes that do not ask for their own; `None` for the server default
    /// (all).
    pub default_acks: Option<pb::Acks>,
    /// Keys to split the table at from the start, in increasing order.
    pub split_keys: Vec<Vec<u8>>,
    /// Options of a `timeseries` table.
    pub timeseries: Option<pb::TimeseriesOptions>,
}

/// `acks = 1`: the master alone holds the write durably.
pub fn acks_one() -> pb::Acks {
    acks_count(1)
}

/// `acks = n`: `n` replicas (the master included) hold the write durably.
pub fn acks_count(n: u32) -> pb::Acks {
    pb::Acks {
        level: Some(pb::acks::Level::Count(n)),
    }
}

/// `acks = all`: every in-sync replica holds the write durably.
pub fn acks_all() -> pb::Acks {
    pb::Acks {
        level: Some(pb::acks::Level::All(true)),
    }
}

/// A value and the version (timestamp) that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// The bytes.
    pub value: Vec<u8>,
    /// The write's timestamp.
    pub version: u64,
    /// Follower reads: how long since the replica read last heard its master (ms).
    pub staleness_ms: u64,
}

mod routes;

/// A client of a cluster, connected first to one node (the seed). Admin calls go to
/// the seed; KV calls go straight to the master of the key's tablet, found through a
/// range cache filled from the seed. Clones share the cache; each clone has its own
/// client id (the id names one sequence of writes).
#[derive(Debug)]
pub struct Client {
    kv: KvClient<Channel>,
    admin: AdminClient<Channel>,
    timeseries: TimeseriesClient<Channel>,
    routes: Arc<Mutex<routes::Routes>>,
    /// Acks of this client's writes; `None`: each table's default.
    acks: Option<pb::Acks>,
    /// What this client's reads see.
    consistency: pb::ReadConsistency,
    /// Follower reads: the most staleness accepted, in ms (0: the server's default).
    max_staleness_ms: u32,
    /// This client's random id: its writes carry it with a number, so a retried
    /// write is answered from the log instead of applied twice.
    client_id: u64,
    /// The number of this client's last write.
    last_request: u64,
    /// How often a call that failed with a retryable error is sent again.
    retries: u32,
}

impl Clone for Client {
    fn clone(&self) -> Client {
        Client {
            kv: self.kv.clone(),
            admin: self.admin.clone(),
            timeseries: self.timeseries.clone(),
            routes: self.routes.clone(),
            acks: self.acks,
            consistency: self.consistency,
            max_staleness_ms: self.max_staleness_ms,
            client_id: random_client_id(),
            last_request: 0,
            retries: self.retries,
        }
    }
}

/// Retries of a call that failed with a retryable error, by default: with backoff
/// from 25 ms doubling to 250 ms, about 7 s in all (a master failover takes 1.5 to
/// 5 s; a short backoff finds the new master soon after it is appointed).
pub const DEFAULT_RETRIES: u32 = 30;
/// How often one attempt follows `RangeMismatch` answers before it gives up.
const MAX_RANGE_MISMATCHES: u32 = 4;
/// The longest pause between two retries.
const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_millis(250);

/// A random non-zero client id.
fn random_client_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        let id = h.finish();
        if id != 0 {
            return id;
        }
    }
}

fn kv_client(channel: Channel) -> KvClient<Channel> {
    KvClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

async fn connect_channel(addr: &str) -> Result<Channel> {
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let endpoint = Endpoint::from_shared(uri).map_err(|e| ClientError {
        kind: ErrorKind::InvalidArgument,
        retryable: false,
        message: format!("bad address {addr:?}: {e}"),
        field: "addr".into(),
        code: tonic::Code::InvalidArgument,
        position: None,
        tablets: Vec::new(),
    })?;
    Ok(endpoint
        .connect_timeout(std::time::Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await?)
}

impl Client {
    /// Connects to `addr` (`host:port`, or a full `http://` URI).
    pub async fn connect(addr: &str) -> Result<Client> {
        let channel = connect_channel(addr).await?;
        Ok(Client {
            kv: kv_client(channel.clone()),
            timeseries: TimeseriesClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            admin: AdminClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            routes: Default::default(),
            acks: None,
            consistency: pb::ReadConsistency::Committed,
            max_staleness_ms: 0,
            client_id: random_client_id(),
            last_request: 0,
            retries: DEFAULT_RETRIES,
        })
    }

    /// How often a call failing with a retryable error (unavailable node, failover
    /// under way, moved master) is sent again; 0 turns retries off. Writes are safe
    /// to retry: each carries this client's id and a number, and a retry of a write
    /// already in the log gets its original answer. An `Ambiguous` answer is never
    /// retried (the write waited its full ack timeout; ask `write_status`).
    pub fn set_retries(&mut self, retries: u32) {
        self.retries = retries;
    }

    /// The id this client's writes carry.
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// A new request id for the next write.
    fn next_request(&mut self) -> pb::RequestId {
        self.last_request += 1;
        pb::RequestId {
            client: self.client_id,
            seq: self.last_request,
        }
    }

    /// Follower reads: the most staleness accepted (0: the server's default, 10 s).
    pub fn set_max_staleness_ms(&mut self, ms: u32) {
        self.max_staleness_ms = ms;
    }

    /// Sends every later write with these acks (`None`: each table's default).
    pub fn set_acks(&mut self, acks: Option<pb::Acks>) {
        self.acks = acks;
    }

    /// Reads committed data at the master (the default), the master's latest, or
    /// committed data from the replica on the seed node (follower reads).
    pub fn set_consistency(&mut self, consistency: pb::ReadConsistency) {
        self.consistency = consistency;
    }

    /// A digest of the seed node's replicas of a table's tablets.
    pub async fn table_digest(&mut self, name: &str) -> Result<pb::TableDigestResponse> {
        Ok(self
            .admin
            .table_digest(pb::TableDigestRequest { name: name.into() })
            .await?
            .into_inner())
    }

    /// Hands the mastership of `table`'s tablet holding `key` over to `target`, an
    /// in-sync replica, losing nothing; answers the tablet after.
    pub async fn transfer_master(
        &mut self,
        table: &str,
        key: &[u8],
        target: u64,
    ) -> Result<pb::TabletInfo> {
        Ok(self
            .admin
            .transfer_master(pb::TransferMasterRequest {
                table: table.into(),
                key: key.to_vec(),
                target,
            })
            .await?
            .into_inner()
            .tablet
            .unwrap_or_default())
    }

    /// Whether the write at `position` (from an `Ambiguous` error) committed, is
    /// pending or was lost.
    pub async fn write_status(
        &mut self,
        table: &str,
        position: pb::WritePosition,
    ) -> Result<pb::WriteState> {
        let req = pb::WriteStatusRequest {
            table: table.into(),
            position: Some(position),
        };
        let r = self
            .kv
            .write_status(req)
            .await
            .map_err(ClientError::from)?
            .into_inner();
        Ok(r.state())
    }

    /// Reverts the write at `position` if it has not committed: it and every later
    /// write of its tablet not committed yet are voided. Answers the write's final
    /// state: `Aborted`, `Lost` (a failover cut it), or `Committed` (too late).
    pub async fn abort_write(
        &mut self,
        table: &str,
        position: pb::WritePosition,
    ) -> Result<pb::WriteState> {
        let req = pb::AbortWriteRequest {
            table: table.into(),
            position: Some(position),
        };
        let r = self
            .kv
            .abort_write(req)
            .await
            .map_err(ClientError::from)?
            .into_inner();
        Ok(r.state())
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, routes::Routes> {
        self.routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The connection to the master of `table`'s tablet holding `key` and the route
    /// to name, learning the table's tablets from the seed when they are not cached;
    /// the seed (and no route) when anything fails (the seed forwards).
    async fn kv_for(
        &mut self,
        table: &str,
        key: &[u8],
    ) -> (KvClient<Channel>, Option<String>, Option<pb::RangeHint>) {
        let mut route = self.routes().route(table, key);
        if route.is_none()
            && let (Ok(t), Ok(status)) =
                (self.describe_table(table).await, self.node_status().await)
        {
            self.routes().learn(&t, &status.nodes);
            route = self.routes().route(table, key);
        }
        let Some((addr, hint)) = route else {
            return (self.kv.clone(), None, None);
        };
        if let Some(c) = self.routes().conn(&addr) {
            return (c, Some(addr), Some(hint));
        }
        match connect_channel(&addr).await {
            Ok(channel) => {
                let c = kv_client(channel);
                self.routes().add_conn(addr.clone(), c.clone());
                (c, Some(addr), Some(hint))
            }
            Err(_) => (self.kv.clone(), None, None),
        }
    }

    /// The tablets of `table` this client's range cache holds, in key order: (id,
    /// start, end, generation); empty until a request on the table learnt them.
    pub fn cached_tablets(&self, table: &str) -> Vec<(u64, Vec<u8>, Vec<u8>, u64)> {
        self.routes().tablets(table)
    }

    /// Sends a KV request to the key's master, again (with backoff) while it fails
    /// with a retryable error, up to the client's retries.
    async fn routed<Req, Resp, F, Fut>(
        &mut self,
        table: &str,
        key: &[u8],
        req: Req,
        call: F,
    ) -> Result<Resp>
    where
        Req: Clone + Route,
        F: Fn(KvClient<Channel>, Req) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let mut backoff = std::time::Duration::from_millis(25);
        let mut attempt = 0;
        loop {
            match self.routed_once(table, key, req.clone(), &call).await {
                Err(e)
                    if e.retryable && e.kind != ErrorKind::Ambiguous && attempt < self.retries =>
                {
                    attempt += 1;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                done => return done,
            }
        }
    }

    /// One attempt of [`Client::routed`]. A routing error (the request was not
    /// executed) updates or drops the cached route and tries again at once: after a
    /// `RangeMismatch`, by the descriptors it carries (a few times: each names a
    /// later generation); after any other, once, by the tablets learnt afresh.
    async fn routed_once<Req, Resp, F, Fut>(
        &mut self,
        table: &str,
        key: &[u8],
        req: Req,
        call: &F,
    ) -> Result<Resp>
    where
        Req: Clone + Route,
        F: Fn(KvClient<Channel>, Req) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let mut mismatches = 0;
        loop {
            let (conn, addr, hint) = self.kv_for(table, key).await;
            let mut req = req.clone();
            req.set_route(hint);
            let err = match call(conn, req.clone()).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(status) => ClientError::from(status),
            };
            if err.kind == ErrorKind::RangeMismatch && mismatches < MAX_RANGE_MISMATCHES {
                mismatches += 1;
                self.routes().learn_ranges(table, &err.tablets);
                continue;
            }
            let unreachable =
                err.code == tonic::Code::Unavailable && err.kind == ErrorKind::Unavailable;
            let moved = matches!(
                err.kind,
                ErrorKind::NotMaster
                    | ErrorKind::NotServing
                    | ErrorKind::NotFound
                    | ErrorKind::RangeMismatch
            );
            if moved || unreachable {
                self.routes()
                    .forget(table, addr.as_deref().filter(|_| unreachable));
            }
            if matches!(err.kind, ErrorKind::NotMaster | ErrorKind::NotServing) {
                let (conn, _, hint) = self.kv_for(table, key).await;
                req.set_route(hint);
                return Ok(call(conn, req).await?.into_inner());
            }
            return Err(err);
        }
    }

    /// The raw KV stub, for requests this type has no helper for.
    pub fn kv(&mut self) -> &mut KvClient<Channel> {
        &mut self.kv
    }

    /// The Timeseries stub (of the seed node, which routes each tablet's share).
    pub fn timeseries(&mut self) -> &mut TimeseriesClient<Channel> {
        &mut self.timeseries
    }

    /// The raw Admin stub.
    pub fn admin(&mut self) -> &mut AdminClient<Channel> {
        &mut self.admin
    }

    /// Creates a table; returns it and whether it was created.
    pub async fn create_table(
        &mut self,
        name: &str,
        opts: TableOptions,
    ) -> Result<(pb::TableInfo, bool)> {
        let r = self
            .admin
            .create_table(pb::CreateTableRequest {
                name: name.into(),
                policy: opts.policy as i32,
                replication_factor: opts.replication_factor,
                version_retention_secs: opts.version_retention_secs,
                if_not_exists: opts.if_not_exists,
                default_acks: opts.default_acks,
                split_keys: opts.split_keys,
                timeseries: opts.timeseries,
            })
            .await?
            .into_inner();
        Ok((r.table.unwrap_or_default(), r.created))
    }

    /// Splits the tablet of `table` holding `key` at `key`; returns the table after.
    pub async fn split_tablet(&mut self, table: &str, key: &[u8]) -> Result<pb::TableInfo> {
        let r = self
            .admin
            .split_tablet(pb::SplitTabletRequest {
                table: table.into(),
                key: key.to_vec(),
            })
            .await?
            .into_inner();
        self.routes().forget(table, None);
        Ok(r.table.unwrap_or_default())
    }

    /// Merges the tablet of `table` that starts at `key` into its left neighbour;
    /// returns the table after.
    pub async fn merge_tablets(&mut self, table: &str, key: &[u8]) -> Result<pb::TableInfo> {
        let r = self
            .admin
            .merge_tablets(pb::MergeTabletsRequest {
                table: table.into(),
                key: key.to_vec(),
            })
            .await?
            .into_inner();
        self.routes().forget(table, None);
        Ok(r.table.unwrap_or_default())
    }

    /// Drops a table; false when it did not exist and `if_exists`.
    pub async fn drop_table(&mut self, name: &str, if_exists: bool) -> Result<bool> {
        let r = self
            .admin
            .drop_table(pb::DropTableRequest {
                name: name.into(),
                if_exists,
            })
            .await?;
        Ok(r.into_inner().dropped)
    }

    /// Every table.
    pub async fn list_tables(&mut self) -> Result<Vec<pb::TableInfo>> {
        Ok(self
            .admin
            .list_tables(pb::ListTablesRequest {})
            .await?
            .into_inner()
            .tables)
    }

    /// One table with its tablets.
    pub async fn describe_table(&mut self, name: &str) -> Result<pb::TableInfo> {
        let r = self
            .admin
            .describe_table(pb::DescribeTableRequest { name: name.into() })
            .await?;
        Ok(r.into_inner().table.unwrap_or_default())
    }

    /// The node's status and limits.
    pub async fn node_status(&mut self) -> Result<pb::NodeStatusResponse> {
        Ok(self
            .admin
            .node_status(pb::NodeStatusRequest {})
            .await?
            .into_inner())
    }

    /// Collects a table's garbage now; returns versions removed.
    pub async fn collect_garbage(&mut self, table: &str) -> Result<pb::CollectGarbageResponse> {
        let r = self
            .admin
            .collect_garbage(pb::CollectGarbageRequest {
                table: table.into(),
            })
            .await?;
        Ok(r.into_inner())
    }

    /// Writes one value; returns its version.
    pub async fn put(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<u64> {
        self.write(table, vec![put(key, value)])
            .await
            .map(|r| r.version)
    }

    /// Deletes one key; returns the tombstone's version.
    pub async fn delete(&mut self, table: &str, key: &[u8]) -> Result<u64> {
        self.write(table, vec![delete(key)])
            .await
            .map(|r| r.version)
    }

    /// Applies a batch atomically (its keys must fall in one tablet).
    pub async fn write(
        &mut self,
        table: &str,
        mutations: Vec<pb::Mutation>,
    ) -> Result<pb::WriteResponse> {
        let key = mutations.first().map(|m| m.key.clone()).unwrap_or_default();
        let request_id = self.next_request();
        let req = pb::WriteRequest {
            table: table.into(),
            mutations,
            acks: self.acks,
            request_id: Some(request_id),
            route: None,
        };
        self.routed(table, &key, req, |mut c, r| async move { c.write(r).await })
            .await
    }

    /// The latest value of a key.
    pub async fn get(&mut self, table: &str, key: &[u8]) -> Result<Option<Value>> {
        self.get_at(table, key, 0).await
    }

    /// The value of a key as of `at_timestamp` (0 = latest).
    pub async fn get_at(
        &mut self,
        table: &str,
        key: &[u8],
        at_timestamp: u64,
    ) -> Result<Option<Value>> {
        let req = pb::GetRequest {
            table: table.into(),
            key: key.to_vec(),
            at_timestamp,
            consistency: self.consistency as i32,
            max_staleness_ms: self.max_staleness_ms,
            route: None,
        };
        let r = if self.consistency == pb::ReadConsistency::Follower {
            // Follower reads go to the seed: it serves from its own replica.
            self.kv.get(req).await?.into_inner()
        } else {
            self.routed(table, key, req, |mut c, r| async move { c.get(r).await })
                .await?
        };
        Ok(r.found.then_some(Value {
            value: r.value,
            version: r.version,
            staleness_ms: r.staleness_ms,
        }))
    }

    /// One page of a scan, as the server returns it.
    pub async fn scan_page(&mut self, req: pb::ScanRequest) -> Result<pb::ScanResponse> {
        if req.consistency == pb::ReadConsistency::Follower as i32 {
            return Ok(self.kv.scan(req).await?.into_inner());
        }
        let (table, key) = (req.table.clone(), req.start.clone());
        self.routed(&table, &key, req, |mut c, r| async move { c.scan(r).await })
            .await
    }

    /// Every row of `[start, end)` (empty end = end of table), at most `limit`
    /// (0 = all), following pages on one snapshot.
    pub async fn scan(
        &mut self,
        table: &str,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<pb::KeyValue>> {
        let mut req = pb::ScanRequest {
            table: table.into(),
            start: start.to_vec(),
            end: end.to_vec(),
            limit: 0,
            reverse,
            at_timestamp: 0,
            consistency: self.consistency as i32,
            max_staleness_ms: self.max_staleness_ms,
        };
        let mut rows = Vec::new();
        loop {
            if limit > 0 {
                req.limit = (limit - rows.len()).min(1000) as u32;
            }
            let page = self.scan_page(req.clone()).await?;
            rows.extend(page.rows);
            if !page.more || (limit > 0 && rows.len() >= limit) {
                return Ok(rows);
            }
            req.at_timestamp = page.read_timestamp;
            if reverse {
                req.end = page.resume_key;
            } else {
                req.start = page.resume_key;
            }
        }
    }

    /// Compare-and-set; `expected_version = None` means "must be absent", `new = None`
    /// deletes.
    pub async fn compare_and_set(
        &mut self,
        table: &str,
        key: &[u8],
        expected_version: Option<u64>,
        new: Option<&[u8]>,
    ) -> Result<pb::CompareAndSetResponse> {
        let expected = match expected_version {
            Some(v) => pb::compare_and_set_request::Expected::ExpectedVersion(v),
            None => pb::compare_and_set_request::Expected::ExpectAbsent(true),
        };
        let request_id = self.next_request();
        let req = pb::CompareAndSetRequest {
            table: table.into(),
            key: key.to_vec(),
            expected: Some(expected),
            new_value: new.unwrap_or_default().to_vec(),
            delete: new.is_none(),
            acks: self.acks,
            request_id: Some(request_id),
            route: None,
        };
        self.routed(table, key, req, |mut c, r| async move {
            c.compare_and_set(r).await
        })
        .await
    }

    /// Adds `delta` to the integer at `key`; returns the new value.
    pub async fn increment(&mut self, table: &str, key: &[u8], delta: i64) -> Result<i64> {
        let request_id = self.next_request();
        let req = pb::IncrementRequest {
            table: table.into(),
            key: key.to_vec(),
            delta,
            acks: self.acks,
            request_id: Some(request_id),
            route: None,
        };
        let r = self
            .routed(
                table,
                key,
                req,
                |mut c, r| async move { c.increment(r).await },
            )
            .await?;
        Ok(r.value)
    }

    /// Deletes every key of `[start, end)`; returns how many.
    pub async fn delete_range(&mut self, table: &str, start: &[u8], end: &[u8]) -> Result<u64> {
        let request_id = self.next_request();
        let req = pb::DeleteRangeRequest {
            table: table.into(),
            start: start.to_vec(),
            end: end.to_vec(),
            acks: self.acks,
            request_id: Some(request_id),
        };
        let r = self
            .routed(table, start, req, |mut c, r| async move {
                c.delete_range(r).await
            })
            .await?;
        Ok(r.deleted)
    }
}

/// A put mutation.
pub fn put(key: &[u8], value: &[u8]) -> pb::Mutation {
    pb::Mutation {
        op: pb::MutationOp::Put as i32,
        key: key.to_vec(),
        value: value.to_vec(),
    }
}

/// A delete mutation.
pub fn delete(key: &[u8]) -> pb::Mutation {
    pb::Mutation {
        op: pb::MutationOp::Delete as i32,
        key: key.to_vec(),
        value: Vec::new(),
    }
}
