//! The strong write path offered to the policies layered on it (DESIGN §9):
//! `timeseries` and `search` keep their data in strong tablets and write and read
//! rows through [`Layered`], which sends each tablet's share to the tablet's master
//! — itself, or another node over `datalayer.internal.v1.Layered` — and re-routes
//! with fresh metadata while a master moves.
//!
//! Invariants:
//! - Every call names the table's policy; the master refuses a table of another
//!   kind, so a layered policy never writes a strong table's rows or another's.
//! - A write lies in one tablet and is atomic there, with the acks asked for; a
//!   refusal that the request could not have taken effect (not the master, the
//!   tablet moving) is retried for at most [`RETRY_FOR`]; an ambiguous outcome is
//!   answered as such.
//! - Reads are committed reads at the tablet's master.

use super::{Acks, ScanPage, StrongPolicy};
use crate::catalog::{TableDesc, TabletDesc};
use crate::error::{Error, Result};
use crate::policy::PolicyKind;
use crate::pool::{ChannelPool, Lane};
use crate::status::IntoStatus;
use datalayer_api::internal::v1 as pb;
use datalayer_store::{KeyRange, Mutation, Timestamp};
use pb::layered_client::LayeredClient;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

/// How long a call re-routes while a tablet's master moves or is being replaced.
pub const RETRY_FOR: Duration = Duration::from_secs(20);

/// Rows per page of a layered scan.
const PAGE_ROWS: usize = 4096;

/// Bytes of a call between nodes, at most (a write batch, a page of rows).
const MAX_MESSAGE: usize = 64 << 20;

/// A read routed by a tablet that has split since (the master holds a narrower
/// one): nothing was read, so it is routed again once this node's metadata shows
/// the split.
fn split_under(e: Error, tablet: &TabletDesc) -> Error {
    if e.kind() == crate::error::ErrorKind::CrossTablet {
        return Error::StaleMetadata { tablet: tablet.id };
    }
    e
}

/// Where a write landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// The tablet's position of the write's record.
    pub position: super::Position,
    /// The write's timestamp.
    pub ts: Timestamp,
}

/// A layered policy's access to its tables' strong tablets.
#[derive(Clone)]
pub struct Layered {
    strong: Arc<StrongPolicy>,
    pool: Arc<ChannelPool>,
    kind: PolicyKind,
}

impl std::fmt::Debug for Layered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layered").field("kind", &self.kind).finish()
    }
}

fn acks_to_proto(acks: Acks) -> pb::LayeredAcks {
    pb::LayeredAcks {
        count: match acks {
            Acks::One => 1,
            Acks::Count(n) => n,
            Acks::All => 0,
        },
    }
}

fn acks_from_proto(acks: Option<pb::LayeredAcks>) -> Acks {
    match acks.map_or(0, |a| a.count) {
        0 => Acks::All,
        1 => Acks::One,
        n => Acks::Count(n),
    }
}

impl Layered {
    /// The layered policy `kind`'s access through this node's strong policy.
    pub fn new(strong: Arc<StrongPolicy>, pool: Arc<ChannelPool>, kind: PolicyKind) -> Layered {
        Layered { strong, pool, kind }
    }

    /// The strong policy underneath.
    pub fn strong(&self) -> &Arc<StrongPolicy> {
        &self.strong
    }

    /// The table of that name, of this policy's kind (catching up with the metadata
    /// leader when this node does not know it yet).
    pub async fn table(&self, name: &str) -> Result<Arc<TableDesc>> {
        self.strong.layered_table(name, self.kind).await
    }

    /// Runs `call` against the master of the tablet `route` picks, re-routing with
    /// fresh metadata while the refusal says the request did not take effect.
    async fn routed<T, F, Fut>(
        &self,
        table: &str,
        route: impl Fn(&TableDesc) -> Result<TabletDesc>,
        call: F,
    ) -> Result<T>
    where
        F: Fn(Arc<TableDesc>, TabletDesc) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let start = Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            let desc = self.table(table).await?;
            let tablet = route(&desc)?;
            match call(desc, tablet).await {
                Err(e) if e.retryable() && start.elapsed() < RETRY_FOR => {
                    tracing::debug!(table, error = %e, "layered call re-routed");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                    // The metadata may be behind who masters the tablet now.
                    let _ = self.strong.catalog().sync().await;
                }
                other => return other,
            }
        }
    }

    async fn peer(
        &self,
        tablet: &TabletDesc,
    ) -> Result<(String, LayeredClient<tonic::transport::Channel>)> {
        let addr = self
            .strong
            .catalog()
            .node_addr(tablet.master)
            .ok_or(Error::NoAddress {
                node: tablet.master,
            })?;
        let channel = self.pool.get(&addr, Lane::Forward).await?;
        Ok((
            addr,
            LayeredClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        ))
    }

    /// The error of a call to a peer: its refusal, or (no detail) the call broke.
    fn failed(&self, addr: &str, status: Status, write: bool) -> Error {
        if let Some(e) = crate::status::from_status(&status) {
            return e;
        }
        self.pool.forget(addr, Lane::Forward);
        // tonic answers UNAVAILABLE for a connection it could not open: nothing was
        // sent, so the call may go again (to the master the metadata names next).
        let unsent = status.code() == tonic::Code::Unavailable
            && status.message().to_ascii_lowercase().contains("connect");
        if write && !unsent {
            Error::OutcomeUnknown {
                addr: addr.to_string(),
                reason: status.message().to_string(),
            }
        } else {
            Error::Unreachable {
                addr: addr.to_string(),
                reason: status.message().to_string(),
            }
        }
    }

    /// Writes `mutations` (every key in one tablet of `table`) atomically, waiting
    /// for `acks`.
    pub async fn write(
        &self,
        table: &str,
        mutations: Vec<Mutation>,
        acks: Acks,
    ) -> Result<Written> {
        let first = mutations
            .first()
            .ok_or_else(|| Error::invalid("mutations", "nothing to write"))?
            .key()
            .to_vec();
        let me = self.strong.node();
        self.routed(
            table,
            |desc| Ok(desc.tablet_for(&first).clone()),
            |desc, tablet| {
                let mutations = mutations.clone();
                async move {
                    if tablet.master == me {
                        let outcome = self.strong.layered_write(&desc, mutations, acks).await?;
                        let position = outcome.position.ok_or_else(|| {
                            Error::Internal("a layered write wrote no record".into())
                        })?;
                        return Ok(Written {
                            position,
                            ts: outcome.ts,
                        });
                    }
                    let (addr, mut client) = self.peer(&tablet).await?;
                    let request = pb::LayeredWriteRequest {
                        table: desc.name.clone(),
                        policy: self.kind.to_string(),
                        mutations: mutations
                            .into_iter()
                            .map(|m| match m {
                                Mutation::Put { key, value } => pb::LayeredMutation {
                                    key,
                                    value: Some(value),
                                },
                                Mutation::Delete { key } => {
                                    pb::LayeredMutation { key, value: None }
                                }
                            })
                            .collect(),
                        acks: Some(acks_to_proto(acks)),
                    };
                    let answer = client
                        .write(request)
                        .await
                        .map_err(|s| self.failed(&addr, s, true))?
                        .into_inner();
                    Ok(Written {
                        position: super::Position {
                            tablet: datalayer_store::TabletId(answer.tablet_id),
                            epoch: datalayer_store::Epoch(answer.epoch),
                            seq: datalayer_store::Seq(answer.seq),
                        },
                        ts: Timestamp(answer.ts),
                    })
                }
            },
        )
        .await
    }

    /// Writes `value` at `key` unless the key holds a value: whether this call wrote
    /// it, and what the key holds now.
    pub async fn put_if_absent(
        &self,
        table: &str,
        key: Vec<u8>,
        value: Vec<u8>,
        acks: Acks,
    ) -> Result<(bool, Vec<u8>)> {
        let me = self.strong.node();
        self.routed(
            table,
            |desc| Ok(desc.tablet_for(&key).clone()),
            |desc, tablet| {
                let (key, value) = (key.clone(), value.clone());
                async move {
                    if tablet.master == me {
                        return self
                            .strong
                            .layered_put_if_absent(&desc, key, value, acks)
                            .await;
                    }
                    let (addr, mut client) = self.peer(&tablet).await?;
                    let request = pb::LayeredPutIfAbsentRequest {
                        table: desc.name.clone(),
                        policy: self.kind.to_string(),
                        key,
                        value,
                        acks: Some(acks_to_proto(acks)),
                    };
                    let answer = client
                        .put_if_absent(request)
                        .await
                        .map_err(|s| self.failed(&addr, s, true))?
                        .into_inner();
                    Ok((answer.written, answer.value))
                }
            },
        )
        .await
    }

    /// One page of committed rows of `range` within the tablet holding its start (the
    /// range is cut at the tablet's end), and the end it was cut to.
    async fn page(
        &self,
        table: &str,
        range: &KeyRange,
        limit: usize,
    ) -> Result<(ScanPage, Option<Vec<u8>>)> {
        let me = self.strong.node();
        self.routed(
            table,
            |desc| Ok(desc.tablet_for(&range.start).clone()),
            |desc, tablet| {
                let mut range = range.clone();
                // Cut at the tablet's end: the rest is another tablet's.
                if let Some(end) = &tablet.end
                    && range.end.as_ref().is_none_or(|e| e > end)
                {
                    range.end = Some(end.clone());
                }
                async move {
                    let end = range.end.clone();
                    if tablet.master == me {
                        let page = self
                            .strong
                            .layered_scan(&desc, range, limit)
                            .await
                            .map_err(|e| split_under(e, &tablet))?;
                        return Ok((page, end));
                    }
                    let (addr, mut client) = self.peer(&tablet).await?;
                    let request = pb::LayeredScanRequest {
                        table: desc.name.clone(),
                        policy: self.kind.to_string(),
                        start: range.start,
                        end: range.end.unwrap_or_default(),
                        limit: limit as u32,
                    };
                    let answer = client
                        .scan(request)
                        .await
                        .map_err(|s| split_under(self.failed(&addr, s, false), &tablet))?
                        .into_inner();
                    let page = ScanPage {
                        rows: answer
                            .rows
                            .into_iter()
                            .map(|r| {
                                (
                                    r.key,
                                    datalayer_store::Versioned {
                                        ts: Timestamp(0),
                                        value: r.value,
                                    },
                                )
                            })
                            .collect(),
                        more: answer.more,
                        resume_key: answer.resume_key,
                        read_ts: Timestamp(0),
                        staleness: Duration::ZERO,
                    };
                    Ok((page, end))
                }
            },
        )
        .await
    }

    /// Every committed row of `range`, across the tablets it covers, in key order;
    /// refused past `max_rows` rows (a query too big to answer).
    pub async fn scan(
        &self,
        table: &str,
        range: KeyRange,
        max_rows: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut rows = Vec::new();
        let mut next = Some(range.start.clone());
        while let Some(start) = next.take() {
            let piece = KeyRange {
                start,
                end: range.end.clone(),
            };
            let (page, cut_at) = self.page(table, &piece, PAGE_ROWS).await?;
            for (key, v) in page.rows {
                rows.push((key, v.value));
            }
            if rows.len() > max_rows {
                return Err(Error::invalid(
                    "range",
                    format!("more than {max_rows} rows to read: narrow the request"),
                ));
            }
            next = if page.more {
                Some(page.resume_key)
            } else {
                // The next tablet, if the range goes on past this one's end.
                cut_at.filter(|end| range.end.as_ref().is_none_or(|e| end < e))
            };
        }
        Ok(rows)
    }
}

/// The `datalayer.internal.v1.Layered` service: a tablet master's side of [`Layered`].
#[derive(Clone)]
pub struct LayeredService {
    strong: Arc<StrongPolicy>,
}

impl LayeredService {
    /// The service over this node's strong policy.
    pub fn new(strong: Arc<StrongPolicy>) -> LayeredService {
        LayeredService { strong }
    }

    async fn table(&self, name: &str, policy: &str) -> Result<Arc<TableDesc>> {
        let kind = PolicyKind::parse(policy)
            .ok_or_else(|| Error::invalid("policy", format!("unknown policy {policy:?}")))?;
        self.strong.layered_table(name, kind).await
    }
}

#[tonic::async_trait]
impl pb::layered_server::Layered for LayeredService {
    async fn write(
        &self,
        request: Request<pb::LayeredWriteRequest>,
    ) -> Result<Response<pb::LayeredWriteResponse>, Status> {
        let r = request.into_inner();
        let table = self.table(&r.table, &r.policy).await.status()?;
        let mutations = r
            .mutations
            .into_iter()
            .map(|m| match m.value {
                Some(value) => Mutation::Put { key: m.key, value },
                None => Mutation::Delete { key: m.key },
            })
            .collect();
        let outcome = self
            .strong
            .layered_write(&table, mutations, acks_from_proto(r.acks))
            .await
            .status()?;
        let position = outcome
            .position
            .ok_or_else(|| Status::internal("a layered write wrote no record"))?;
        Ok(Response::new(pb::LayeredWriteResponse {
            tablet_id: position.tablet.0,
            epoch: position.epoch.0,
            seq: position.seq.0,
            ts: outcome.ts.0,
        }))
    }

    async fn put_if_absent(
        &self,
        request: Request<pb::LayeredPutIfAbsentRequest>,
    ) -> Result<Response<pb::LayeredPutIfAbsentResponse>, Status> {
        let r = request.into_inner();
        let table = self.table(&r.table, &r.policy).await.status()?;
        let (written, value) = self
            .strong
            .layered_put_if_absent(&table, r.key, r.value, acks_from_proto(r.acks))
            .await
            .status()?;
        Ok(Response::new(pb::LayeredPutIfAbsentResponse {
            written,
            value,
        }))
    }

    async fn scan(
        &self,
        request: Request<pb::LayeredScanRequest>,
    ) -> Result<Response<pb::LayeredScanResponse>, Status> {
        let r = request.into_inner();
        let table = self.table(&r.table, &r.policy).await.status()?;
        let range = KeyRange {
            start: r.start,
            end: (!r.end.is_empty()).then_some(r.end),
        };
        let limit = (r.limit as usize).clamp(1, PAGE_ROWS);
        let page = self
            .strong
            .layered_scan(&table, range, limit)
            .await
            .status()?;
        Ok(Response::new(pb::LayeredScanResponse {
            rows: page
                .rows
                .into_iter()
                .map(|(key, v)| pb::LayeredRow {
                    key,
                    value: v.value,
                })
                .collect(),
            more: page.more,
            resume_key: page.resume_key,
        }))
    }
}
