//! The master side of strong replication on the network: one shipper task per
//! (tablet, follower) streams the master's oplog to the follower over gRPC
//! (`datalayer.v1.Replication`), and one keeper task per tablet grows and shrinks the
//! in-sync set through the metadata group.
//!
//! A shipper sends records as soon as the master's writer stages them, while the
//! master syncs them itself (from the lead's in-memory tail of the newest ones, or
//! from the oplog). A follower may so hold a record its master loses in a crash: no
//! ack level counts a record before the master holds it, and a restarted master is
//! appointed again in a new epoch before it writes, so the follower cuts it
//! (`Router::new_epoch_after_restart`). A follower that needs records trimmed from
//! the oplog gets a snapshot.
//! Calls go on one `ReplicateStream` per follower. A follower that keeps up has one
//! call in flight at a time: what the master stages meanwhile goes out in the next
//! call, when the follower answers, so the follower syncs once per call for as many
//! records as arrived during its last sync. A follower catching up gets full calls,
//! up to [`WINDOW`] of them unanswered. The follower applies them in order. Each
//! call carries the master's epoch history; the follower cuts any suffix that disagrees
//! ([`crate::strong::protocol::agreement`]) and answers with its durable log end, which
//! is its acknowledgement; a follower that did not take every call (a gap) is resumed
//! from that end. The pacer's calls (the tablet's lowest-id in-sync follower,
//! `Lead::pacer`) set the rhythm: a group of writes waiting for followers' acks syncs
//! on the master when the pacer starts its next call (`StrongPolicy::call_started`,
//! `Writer::waits_for_calls`), and the other in-sync followers' shippers hold staged
//! records back (at most [`ALIGN_MAX`]) to send them together with the pacer's next
//! call, so that every follower answers about when the pacer does — acks=all waits
//! for the last of them. After each answer the pacer's next call lingers (at most
//! [`LINGER_MAX`]) until as many records are staged as the writers it released are
//! expected to bring back ([`Answered`]): one full call rather than two half-full ones.

use crate::error::{Error, Result};
use crate::meta::RaftCatalog;
use crate::strong::{Lead, StrongPolicy};
use datalayer_api::v1 as pb;
use datalayer_store::{NodeId, OplogRecord, Seq, Timestamp};
use pb::replication_client::ReplicationClient;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

/// Most records in one replication call.
const MAX_RECORDS: usize = 512;
/// Most record bytes (roughly) in one replication call.
const MAX_BYTES: usize = 2 << 20;
/// An idle shipper sends an empty call this often (the follower learns the high
/// watermark, the master learns the follower is alive).
const HEARTBEAT: Duration = Duration::from_millis(300);
/// How long one replication call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Full replication calls a shipper keeps unanswered on its stream while a follower
/// catches up (a follower that keeps up has one call in flight).
const WINDOW: usize = 4;
/// The longest an in-sync follower's shipper holds records back to send them with
/// the pacer's next call.
const ALIGN_MAX: Duration = Duration::from_millis(2);
/// The longest the pacer's shipper waits after an answer for the writes it expects
/// before sending what is staged (see [`Answered`]).
const LINGER_MAX: Duration = Duration::from_millis(1);
/// How often the keeper looks at the in-sync set.
const KEEPER_TICK: Duration = Duration::from_millis(200);

/// Starts the shippers and the keeper of a tablet this node masters. They stop when
/// the lead is deposed.
pub fn start(catalog: &Arc<RaftCatalog>, strong: &Arc<StrongPolicy>, lead: &Arc<Lead>) {
    let me = catalog.node();
    let followers: Vec<NodeId> = lead.replicas().into_iter().filter(|n| *n != me).collect();
    add_followers(catalog, strong, lead, &followers);
    tokio::spawn(keep(Arc::downgrade(catalog), lead.clone()));
}

/// Starts shipping `lead`'s oplog to new followers (the metadata gave the tablet new
/// replicas); each starts from wherever its log ends.
pub fn add_followers(
    catalog: &Arc<RaftCatalog>,
    strong: &Arc<StrongPolicy>,
    lead: &Arc<Lead>,
    followers: &[NodeId],
) {
    for follower in followers.iter().copied().filter(|n| *n != catalog.node()) {
        tokio::spawn(ship(
            Arc::downgrade(catalog),
            Arc::downgrade(strong),
            lead.clone(),
            follower,
        ));
    }
}

async fn connect(addr: &str) -> Result<ReplicationClient<Channel>> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| Error::Internal(format!("bad address {addr}: {e}")))?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| Error::Unavailable(format!("connect to {addr}: {e}")))?;
    Ok(ReplicationClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20))
}

/// How long a hand-over asked of another node may take.
const HAND_OVER_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of a snapshot file per message.
const SNAPSHOT_CHUNK: usize = 1 << 20;
/// How long sending a whole snapshot may take.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(600);

/// Sends the follower at `addr` a copy of this master's replica of `lead`'s tablet
/// (`datalayer.v1.Replication/InstallSnapshot`); answers the follower's log end and
/// its last record's timestamp once installed.
async fn send_snapshot(
    addr: &str,
    catalog: &RaftCatalog,
    strong: &StrongPolicy,
    lead: &Lead,
) -> Result<(Seq, Timestamp)> {
    let desc = catalog
        .tablet(lead.tablet)
        .ok_or_else(|| Error::Unavailable(format!("{} no longer exists", lead.tablet)))?;
    let export = strong
        .export_snapshot(&desc)
        .await?
        .ok_or_else(|| Error::Internal(format!("the master holds no state of {}", lead.tablet)))?;
    let state = postcard::to_allocvec(&export.state)
        .map_err(|e| Error::Internal(format!("encoding a tablet state: {e}")))?;
    let header = pb::SnapshotChunk {
        table_id: lead.table.0,
        tablet_id: lead.tablet.0,
        epoch: lead.epoch.0,
        state,
        data: Vec::new(),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::SnapshotChunk>(4);
    let file = export.file.clone();
    let reader = tokio::spawn(async move {
        if tx.send(header).await.is_err() {
            return Ok(());
        }
        let Some(path) = file else { return Ok(()) };
        let mut f = tokio::fs::File::open(&path).await?;
        loop {
            let mut data = vec![0u8; SNAPSHOT_CHUNK];
            let n = tokio::io::AsyncReadExt::read(&mut f, &mut data).await?;
            if n == 0 {
                return Ok::<(), std::io::Error>(());
            }
            data.truncate(n);
            let chunk = pb::SnapshotChunk {
                data,
                ..Default::default()
            };
            if tx.send(chunk).await.is_err() {
                return Ok(());
            }
        }
    });
    let sent = async {
        let mut client = connect(addr).await?;
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        request.set_timeout(SNAPSHOT_TIMEOUT);
        client
            .install_snapshot(request)
            .await
            .map_err(|s| Error::Unavailable(format!("install snapshot: {}", s.message())))
    }
    .await;
    let read = reader.await;
    if let Some(path) = &export.file {
        let _ = tokio::fs::remove_file(path).await;
    }
    match read {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(Error::Internal(format!("reading the snapshot file: {e}"))),
        Err(e) => return Err(Error::Internal(format!("snapshot reader: {e}"))),
    }
    let resp = sent?.into_inner();
    tracing::info!(tablet = %lead.tablet, versions = export.versions, log_end = resp.log_end,
        "snapshot installed on the follower");
    Ok((Seq(resp.log_end), Timestamp(resp.last_ts)))
}

/// Streams `lead`'s oplog to `follower` until the lead is deposed, over one
/// `ReplicateStream` at a time with up to [`WINDOW`] calls in flight (the follower
/// applies and answers them in order); a broken stream is opened again from where
/// the follower's log ends.
async fn ship(
    catalog: Weak<RaftCatalog>,
    strong: Weak<StrongPolicy>,
    lead: Arc<Lead>,
    follower: NodeId,
) {
    let mut client: Option<(String, ReplicationClient<Channel>)> = None;
    // Where the follower's log ends (plus one), as it last answered.
    let mut next: Option<Seq> = None;
    let mut rx = lead.subscribe();
    let mut backoff = Duration::from_millis(50);
    while !lead.deposed() {
        let (Some(catalog), Some(strong)) = (catalog.upgrade(), strong.upgrade()) else {
            return;
        };
        if !lead.replicas().contains(&follower) {
            return; // no longer a replica
        }
        let Some(addr) = catalog.node_addr(follower) else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        if client.as_ref().is_none_or(|(a, _)| *a != addr) {
            match connect(&addr).await {
                Ok(c) => client = Some((addr.clone(), c)),
                Err(e) => {
                    tracing::debug!(%follower, error = %e, "replication connect failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            }
        }
        let c = &mut client.as_mut().expect("connected above").1;
        let ended = stream(&lead, &strong, c, follower, &mut next, &mut rx).await;
        match ended {
            Ended::Stop => return,
            Ended::Snapshot(from, first) => {
                // The follower needs records trimmed from the oplog: send it a copy of
                // the whole replica, then go on from the copy's log end.
                tracing::info!(tablet = %lead.tablet, %follower, %from, %first,
                    "follower needs records trimmed from the oplog: sending a snapshot");
                let master_end = lead.view().acks.master_end.0;
                match send_snapshot(&addr, &catalog, &strong, &lead).await {
                    Ok((end, ts)) => {
                        lead.acknowledged(follower, end, ts, master_end);
                        next = Some(end.next());
                    }
                    Err(e) => {
                        tracing::warn!(tablet = %lead.tablet, %follower, error = %e, "sending a snapshot failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            Ended::Failed(why) => {
                tracing::debug!(tablet = %lead.tablet, %follower, %why, "replication stream ended");
                client = None;
                next = None;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        }
        backoff = Duration::from_millis(50);
    }
}

/// Why a replication stream ended.
enum Ended {
    /// The lead was deposed, or the follower follows a newer master.
    Stop,
    /// The follower needs records from `.0` on; the oplog starts at `.1`.
    Snapshot(Seq, Seq),
    /// The stream broke (the follower is unreachable, slow, or refused a call).
    Failed(String),
}

/// One replication stream to `follower`: sends records as the master stages them,
/// keeping up to [`WINDOW`] calls unanswered, and records each answer as the
/// follower's acknowledgement.
async fn stream(
    lead: &Lead,
    strong: &StrongPolicy,
    client: &mut ReplicationClient<Channel>,
    follower: NodeId,
    next: &mut Option<Seq>,
    rx: &mut tokio::sync::watch::Receiver<crate::strong::AckView>,
) -> Ended {
    let (calls, outgoing) = tokio::sync::mpsc::channel(WINDOW);
    let mut answers = match client
        .replicate_stream(tokio_stream::wrappers::ReceiverStream::new(outgoing))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(status) => return refused(lead, follower, status),
    };
    // Calls sent and not answered yet: the master's log end when each was read, when
    // it was sent and how many records it carried.
    let mut in_flight: VecDeque<(Seq, Instant, u64)> = VecDeque::new();
    // The last answer (the pacer's next call may wait for the records it expects).
    let mut last_answer: Option<Answered> = None;
    // Where the next call starts, counting the calls in flight as taken; unknown
    // until the follower first answers.
    let mut cursor = *next;
    let mut last_sent: Option<Instant> = None;
    let mut pace = lead.pace();
    // While holding records back for the pacer's next call: until when.
    let mut align_until: Option<Instant> = None;
    // The pacer started a call since this follower's last one.
    let mut pacer_called = false;
    loop {
        if lead.deposed() {
            return Ended::Stop;
        }
        // While the pacer's next call waits for more records: until when.
        let mut linger_until: Option<Instant> = None;
        while in_flight.len() < WINDOW {
            let view = lead.view();
            // Records go out as soon as the master's writer stages them (during its
            // own sync); the follower catching up means reaching what is durable.
            let (staged_end, master_end) = (view.staged_end, view.acks.master_end.0);
            let idle = in_flight.is_empty() && last_sent.is_none_or(|t| t.elapsed() >= HEARTBEAT);
            // While a call is in flight, records that would not fill one wait for its
            // answer and go out together in the next: fewer, larger calls, and fewer
            // syncs on the follower (one per call). A follower catching up gets full
            // calls back to back.
            let fills_a_call = cursor.is_some_and(|n| staged_end.0 >= n.0 + MAX_RECORDS as u64 - 1);
            if !in_flight.is_empty() && !fills_a_call {
                break;
            }
            // An in-sync follower other than the pacer sends what is staged together
            // with the pacer's next call (both answer about together, which is when
            // acks=all completes), waiting at most ALIGN_MAX for it.
            let behind_pacer = !fills_a_call
                && cursor.is_some_and(|n| n <= staged_end)
                && view.acks.in_sync.contains(&follower)
                && lead.pacer().is_some_and(|p| p != follower)
                && !pacer_called
                && !pace.has_changed().unwrap_or(true);
            if behind_pacer {
                let until = *align_until.get_or_insert_with(|| Instant::now() + ALIGN_MAX);
                if Instant::now() < until {
                    break;
                }
            }
            // The pacer's next call waits (at most LINGER_MAX after the last answer)
            // for the writers its last call released to come back: one larger call
            // instead of two half-full ones.
            if let (Some(n), Some(answer)) = (cursor, last_answer)
                && !fills_a_call
                && n <= staged_end
                && lead.pacer() == Some(follower)
                && staged_end.0 + 1 - n.0 < answer.expected
            {
                let until = answer.at + LINGER_MAX;
                if Instant::now() < until {
                    linger_until = Some(until);
                    break;
                }
            }
            let records = match cursor {
                Some(n) if n <= staged_end => match records_from(lead, strong, n).await {
                    Ok(r) => r,
                    Err(e) => return Ended::Failed(e.to_string()),
                },
                // Nothing new: an empty call now and then, so the follower learns the
                // high watermark and the master learns the follower is alive; the
                // first call only asks where the follower's log ends.
                _ if idle => Vec::new(),
                _ => break,
            };
            if let (Some(n), Some(first)) = (cursor, records.first())
                && first.seq != n
            {
                return Ended::Snapshot(n, first.seq);
            }
            let sent_end = records.last().map(|r| r.seq);
            let call = match request(lead, strong, &view, staged_end, sent_end, &records) {
                Ok(c) => c,
                Err(e) => return Ended::Failed(e),
            };
            if calls.send(call).await.is_err() {
                return Ended::Failed("the stream closed".into());
            }
            let now = Instant::now();
            in_flight.push_back((master_end, now, records.len() as u64));
            last_sent = Some(now);
            if sent_end.is_some() {
                pace.borrow_and_update();
                align_until = None;
                pacer_called = false;
            }
            if let Some(end) = sent_end {
                cursor = Some(end.next());
                if lead.call_started(follower) {
                    strong.call_started(lead.tablet, follower);
                }
            }
            if cursor.is_none() {
                break; // wait for the follower's position
            }
        }
        let deadline = match in_flight.front() {
            Some((_, sent, _)) => *sent + CALL_TIMEOUT,
            None => last_sent.map_or_else(Instant::now, |t| t + HEARTBEAT),
        };
        let deadline = align_until.map_or(deadline, |a| a.min(deadline));
        let deadline = linger_until.map_or(deadline, |a| a.min(deadline));
        tokio::select! {
            answer = answers.message() => match answer {
                Ok(Some(answer)) => {
                    let Some((target, _, carried)) = in_flight.pop_front() else {
                        return Ended::Failed("an answer to no call".into());
                    };
                    let waiting = cursor.map_or(0, |c| {
                        (lead.view().staged_end.0 + 1).saturating_sub(c.0)
                    });
                    last_answer = Some(Answered {
                        at: Instant::now(),
                        expected: waiting + carried,
                    });
                    let end = Seq(answer.log_end);
                    lead.acknowledged(follower, end, Timestamp(answer.last_ts), target);
                    *next = Some(end.next());
                    // The first answer gives the follower's position; once every call
                    // is answered, a follower that did not take them all (a gap, or a
                    // suffix cut) is resumed from its own log end.
                    if cursor.is_none() || (in_flight.is_empty() && cursor != *next) {
                        cursor = *next;
                    }
                }
                Ok(None) => return Ended::Failed("the follower ended the stream".into()),
                Err(status) => return refused(lead, follower, status),
            },
            // Records held back for the pacer's call go out with it.
            changed = pace.changed(), if align_until.is_some() => {
                if changed.is_err() {
                    return Ended::Stop;
                }
                pacer_called = true;
            }
            // With a call in flight, its answer is what sends the next one.
            changed = rx.changed(), if cursor.is_some() && in_flight.is_empty() => {
                if changed.is_err() {
                    return Ended::Stop;
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                if in_flight.front().is_some_and(|(_, sent, _)| sent.elapsed() >= CALL_TIMEOUT) {
                    return Ended::Failed("a replication call timed out".into());
                }
            }
        }
    }
}

/// A replication call's answer, as the pacer's shipper remembers it.
#[derive(Debug, Clone, Copy)]
struct Answered {
    at: Instant,
    /// Records the next call is expected to carry: those staged when the answer
    /// came, plus one new write from each writer the answered call released (a
    /// client waiting for its write to commit sends its next one about then).
    expected: u64,
}

/// A replication call refused: a follower that knows a newer master stops the
/// shipper (the metadata will tell this node to step down).
fn refused(lead: &Lead, follower: NodeId, status: tonic::Status) -> Ended {
    if status.code() == tonic::Code::Aborted {
        tracing::warn!(tablet = %lead.tablet, %follower, "follower follows a newer epoch; shipping stops");
        return Ended::Stop;
    }
    Ended::Failed(status.to_string())
}

/// Up to a call's worth of records from `from` on: from the lead's in-memory tail,
/// else from the oplog.
async fn records_from(lead: &Lead, strong: &StrongPolicy, from: Seq) -> Result<Vec<OplogRecord>> {
    if let Some(records) = lead.recent_from(from, MAX_RECORDS, MAX_BYTES) {
        return Ok(records);
    }
    strong
        .read_oplog(lead.tablet, from, MAX_RECORDS, MAX_BYTES)
        .await
}

/// A replication call carrying `records`.
fn request(
    lead: &Lead,
    strong: &StrongPolicy,
    view: &crate::strong::AckView,
    staged_end: Seq,
    sent_end: Option<Seq>,
    records: &[OplogRecord],
) -> std::result::Result<pb::ReplicateRequest, String> {
    let encoded = postcard::to_allocvec(records).map_err(|e| format!("encoding records: {e}"))?;
    Ok(pb::ReplicateRequest {
        table_id: lead.table.0,
        tablet_id: lead.tablet.0,
        epoch: lead.epoch.0,
        history: view
            .history
            .iter()
            .map(|(e, s)| pb::EpochStart {
                epoch: e.0,
                first_seq: s.0,
            })
            .collect(),
        log_end: staged_end.max(sent_end.unwrap_or(Seq(0))).0,
        high_watermark: view.acks.high_watermark().0.0,
        records: encoded,
        committed_ts: strong.committed_ts(lead).0,
    })
}

/// Grows and shrinks the in-sync set of `lead`'s tablet. A follower joins once it
/// held everything the master had (the master waits for its acks before the metadata
/// says so, so no committed write misses it); one that has not caught up for
/// `replica_lag_ms` leaves (the metadata says so before the master stops waiting).
async fn keep(catalog: Weak<RaftCatalog>, lead: Arc<Lead>) {
    let mut tick = tokio::time::interval(KEEPER_TICK);
    let started = Instant::now();
    while !lead.deposed() {
        tick.tick().await;
        let Some(catalog) = catalog.upgrade() else {
            return;
        };
        let Some(desc) = catalog.tablet(lead.tablet) else {
            return;
        };
        if desc.master_epoch != lead.epoch {
            continue;
        }
        let lag = Duration::from_millis(lead.replica_lag_ms);
        let view = lead.view();
        let caught_up: HashMap<NodeId, Instant> = lead.caught_up();
        let now = Instant::now();
        let mut next = desc.in_sync.clone();
        for r in desc.replicas.iter().copied().filter(|r| *r != desc.master) {
            let last = caught_up.get(&r).copied().unwrap_or(started);
            let behind = now.duration_since(last) > lag;
            let in_set = desc.in_sync.contains(&r);
            let end = view.acks.followers.get(&r).map_or(Seq(0), |(s, _)| *s);
            if !in_set && behind {
                lead.drop_adding(r);
            }
            if in_set && behind {
                tracing::warn!(tablet = %desc.id, follower = %r, "follower fell behind; removing it from the in-sync set");
                next.retain(|n| *n != r);
            } else if !in_set
                && !behind
                && end >= view.epoch_first
                && caught_up.contains_key(&r)
                && lead.add_in_sync(r)
            {
                tracing::info!(tablet = %desc.id, follower = %r, "follower caught up; adding it to the in-sync set");
                next.push(r);
            }
        }
        next.sort();
        next.dedup();
        let mut current = desc.in_sync.clone();
        current.sort();
        if next == current {
            continue;
        }
        // The set proposed replaces the whole set: decide on the metadata as it
        // stands, not on a copy that may miss this keeper's last change (putting back
        // a follower it removed would count one that lacks committed records).
        let fresh = catalog.sync().await.is_ok()
            && catalog.tablet(lead.tablet).is_some_and(|now| {
                let mut set = now.in_sync.clone();
                set.sort();
                now.master_epoch == lead.epoch && set == current
            });
        let proposed = fresh
            && match catalog
                .set_in_sync(desc.id, desc.master_epoch, next.clone())
                .await
            {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(tablet = %desc.id, error = %e, "changing the in-sync set failed");
                    false
                }
            };
        if !proposed {
            for r in next.iter().filter(|r| !current.contains(r)) {
                lead.drop_adding(*r);
            }
        }
    }
}

/// Where the replicas of `tablets` on the node at `addr` stand: `(tablet, epoch of
/// the last record, log end)` for each it holds.
pub async fn replica_status(
    addr: &str,
    tablets: &[datalayer_store::TabletId],
) -> Result<Vec<(datalayer_store::TabletId, datalayer_store::Epoch, Seq)>> {
    let mut client = connect(addr).await?;
    let mut request = tonic::Request::new(pb::ReplicaStatusRequest {
        tablet_ids: tablets.iter().map(|t| t.0).collect(),
    });
    request.set_timeout(Duration::from_secs(1));
    let resp = tokio::time::timeout(Duration::from_secs(1), client.replica_status(request))
        .await
        .map_err(|_| Error::Unavailable(format!("replica status from {addr} timed out")))?
        .map_err(|s| Error::Unavailable(format!("replica status from {addr}: {s}")))?;
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
    addr: &str,
    tablet: datalayer_store::TabletId,
    target: NodeId,
) -> Result<()> {
    let mut client = connect(addr).await?;
    let mut request = tonic::Request::new(pb::HandOverRequest {
        tablet_id: tablet.0,
        target: target.0,
    });
    // The master bounds its wait for the target; a master that stopped answering
    // (paused, cut off) must not hold the caller forever.
    request.set_timeout(HAND_OVER_TIMEOUT);
    tokio::time::timeout(HAND_OVER_TIMEOUT, client.hand_over(request))
        .await
        .map_err(|_| {
            Error::Unavailable(format!(
                "hand-over of {tablet} at {addr}: no answer within {HAND_OVER_TIMEOUT:?}"
            ))
        })?
        .map_err(|s| {
            Error::Unavailable(format!("hand-over of {tablet} at {addr}: {}", s.message()))
        })?;
    Ok(())
}
