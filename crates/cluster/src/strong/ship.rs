//! The master side of strong replication: one shipper task per (tablet, follower)
//! streams the master's oplog to the follower over gRPC (`Replication`, see
//! [`super::service`]); the in-sync set is kept by [`super::keeper`], and when to send
//! what is decided by [`super::pacing::Shipper`], a pure core this task runs.
//!
//! Invariants:
//! - Records go out as soon as the master's writer stages them, while the master
//!   syncs them itself (from the mastership's in-memory tail, or from the oplog). A
//!   follower may so hold a record its master loses in a crash: no ack level counts a
//!   record before the master holds it, and a restarted master is appointed again in
//!   a new epoch before it writes (`life::needs_new_epoch`), so the follower cuts it.
//! - Calls go on one `ReplicateStream` per follower and apply in order; each carries
//!   the master's epoch history, the follower cuts any suffix that disagrees
//!   ([`super::protocol::agreement`]) and answers with its durable log end, its
//!   acknowledgement.
//! - A follower that needs records trimmed from the oplog gets a snapshot; so does one
//!   that refuses an absorb record (it missed records of the tablet merged in, which
//!   nobody ships once the merge is done), after the metadata holds the merge.
//! - The pacer's calls set the rhythm of the master's syncs
//!   (`StrongTablets::call_started`, `Writer::waits_for_calls`).

use super::pacing::{MAX_RECORDS, Seen, Shipper, Step, WINDOW};
use super::service::connect;
use super::{AckView, Mastership, StrongTablets};
use crate::error::{Error, Result};
use crate::meta::RaftCatalog;
use datalayer_api::internal::v1 as pb;
use datalayer_store::{NodeId, OplogRecord, Seq, Timestamp};
use pb::replication_client::ReplicationClient;
use prost::Message;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Most record bytes (roughly) in one replication call.
const MAX_BYTES: usize = 2 << 20;

/// Starts the shippers and the keeper of a tablet this node masters. They stop when
/// the mastership is deposed.
pub fn start(
    catalog: &Arc<RaftCatalog>,
    strong: &Arc<StrongTablets>,
    mastership: &Arc<Mastership>,
) {
    let me = catalog.node();
    let followers: Vec<NodeId> = mastership
        .replicas()
        .into_iter()
        .filter(|n| *n != me)
        .collect();
    add_followers(catalog, strong, mastership, &followers);
    tokio::spawn(super::keeper::keep(
        Arc::downgrade(catalog),
        mastership.clone(),
    ));
}

/// Starts shipping `mastership`'s oplog to new followers (the metadata gave the tablet new
/// replicas); each starts from wherever its log ends.
pub fn add_followers(
    catalog: &Arc<RaftCatalog>,
    strong: &Arc<StrongTablets>,
    mastership: &Arc<Mastership>,
    followers: &[NodeId],
) {
    for follower in followers.iter().copied().filter(|n| *n != catalog.node()) {
        tokio::spawn(ship(
            Arc::downgrade(catalog),
            Arc::downgrade(strong),
            mastership.clone(),
            follower,
        ));
    }
}

/// Bytes of a snapshot file per message.
const SNAPSHOT_CHUNK: usize = 1 << 20;
/// How long sending a whole snapshot may take.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(600);

/// Sends the follower at `addr` a copy of this master's replica of `mastership`'s tablet
/// (`datalayer.internal.v1.Replication/InstallSnapshot`); answers the follower's log end and
/// its last record's timestamp once installed.
async fn send_snapshot(
    addr: &str,
    catalog: &RaftCatalog,
    strong: &StrongTablets,
    mastership: &Mastership,
) -> Result<(Seq, Timestamp)> {
    let desc = catalog.tablet(mastership.tablet).ok_or(Error::TabletGone {
        tablet: mastership.tablet,
    })?;
    let export = strong.export_snapshot(&desc).await?.ok_or_else(|| {
        Error::Internal(format!(
            "the master holds no state of {}",
            mastership.tablet
        ))
    })?;
    let state = postcard::to_allocvec(&export.state)
        .map_err(|e| Error::Internal(format!("encoding a tablet state: {e}")))?;
    let header = pb::SnapshotChunk {
        table_id: mastership.table.0,
        tablet_id: mastership.tablet.0,
        epoch: mastership.epoch.0,
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
        let mut client = connect(catalog.pool(), addr).await?;
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        request.set_timeout(SNAPSHOT_TIMEOUT);
        client
            .install_snapshot(request)
            .await
            .map_err(|s| Error::PeerFailed {
                addr: addr.to_string(),
                call: "InstallSnapshot",
                message: s.message().to_string(),
            })
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
    tracing::info!(tablet = %mastership.tablet, versions = export.versions, log_end = resp.log_end,
        "snapshot installed on the follower");
    Ok((Seq(resp.log_end), Timestamp(resp.last_ts)))
}

/// Streams `mastership`'s oplog to `follower` until the mastership is deposed, over one
/// `ReplicateStream` at a time with up to [`WINDOW`] calls in flight (the follower
/// applies and answers them in order); a broken stream is opened again from where
/// the follower's log ends.
async fn ship(
    catalog: Weak<RaftCatalog>,
    strong: Weak<StrongTablets>,
    mastership: Arc<Mastership>,
    follower: NodeId,
) {
    let mut client: Option<(String, ReplicationClient<Channel>)> = None;
    // Where the follower's log ends (plus one), as it last answered.
    let mut next: Option<Seq> = None;
    let mut rx = mastership.subscribe();
    let mut backoff = Duration::from_millis(50);
    while !mastership.deposed() {
        let (Some(catalog), Some(strong)) = (catalog.upgrade(), strong.upgrade()) else {
            return;
        };
        if !mastership.replicas().contains(&follower) {
            return; // no longer a replica
        }
        let Some(addr) = catalog.node_addr(follower) else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        if client.as_ref().is_none_or(|(a, _)| *a != addr) {
            match connect(catalog.pool(), &addr).await {
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
        let ended = stream(&mastership, &strong, c, follower, &mut next, &mut rx).await;
        match ended {
            Ended::Stop => return,
            Ended::Snapshot(from, first) => {
                // The follower needs records trimmed from the oplog: send it a copy of
                // the whole replica, then go on from the copy's log end.
                tracing::info!(tablet = %mastership.tablet, %follower, %from, %first,
                    "follower needs records trimmed from the oplog: sending a snapshot");
                snapshot(&addr, &catalog, &strong, &mastership, follower, &mut next).await;
            }
            Ended::MissesAbsorbed if merge_committed(&catalog, &mastership) => {
                // It missed records of the tablet this one absorbed, which nobody
                // ships any more: a copy of the merged replica replaces its own.
                tracing::info!(tablet = %mastership.tablet, %follower,
                    "follower lacks part of the tablet merged into this one: sending a snapshot");
                snapshot(&addr, &catalog, &strong, &mastership, follower, &mut next).await;
            }
            Ended::MissesAbsorbed | Ended::Failed(_) => {
                let why = match ended {
                    Ended::Failed(why) => why,
                    _ => "the follower is behind on the tablet being merged in".into(),
                };
                tracing::debug!(tablet = %mastership.tablet, %follower, %why, "replication stream ended");
                // Streams of other tablets keep the channel they hold; the next
                // stream to this follower opens a fresh one.
                catalog.pool().forget(&addr, crate::pool::Lane::Replication);
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

/// Sends the follower a snapshot and goes on from its log end (or waits a moment when
/// that failed).
async fn snapshot(
    addr: &str,
    catalog: &RaftCatalog,
    strong: &StrongTablets,
    mastership: &Mastership,
    follower: NodeId,
    next: &mut Option<Seq>,
) {
    let master_end = mastership.view().acks.master_end.0;
    match send_snapshot(addr, catalog, strong, mastership).await {
        Ok((end, ts)) => {
            mastership.acknowledged(follower, end, ts, master_end);
            *next = Some(end.next());
        }
        Err(e) => {
            tracing::warn!(tablet = %mastership.tablet, %follower, error = %e, "sending a snapshot failed");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Whether the metadata holds the tablet's last merge as done (its range then covers
/// the absorbed tablet's, so a snapshot of it carries the absorbed keys).
fn merge_committed(catalog: &RaftCatalog, mastership: &Mastership) -> bool {
    catalog
        .tablet(mastership.tablet)
        .is_some_and(|d| d.absorbed.is_some() && d.merge.is_none())
}

/// Why a replication stream ended.
enum Ended {
    /// The mastership was deposed, or the follower follows a newer master.
    Stop,
    /// The follower needs records from `.0` on; the oplog starts at `.1`.
    Snapshot(Seq, Seq),
    /// The follower refused an absorb record: it lacks records of the absorbed
    /// tablet (it was away during the merge).
    MissesAbsorbed,
    /// The stream broke (the follower is unreachable, slow, or refused a call).
    Failed(String),
}

/// One replication stream to `follower`: carries out what its [`Shipper`] decides —
/// records as the master stages them, up to [`WINDOW`] calls unanswered — and records
/// each answer as the follower's acknowledgement.
async fn stream(
    mastership: &Mastership,
    strong: &StrongTablets,
    client: &mut ReplicationClient<Channel>,
    follower: NodeId,
    next: &mut Option<Seq>,
    rx: &mut tokio::sync::watch::Receiver<AckView>,
) -> Ended {
    let (calls, outgoing) = tokio::sync::mpsc::channel(WINDOW);
    let mut answers = match client
        .replicate_stream(tokio_stream::wrappers::ReceiverStream::new(outgoing))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(status) => return refused(mastership, follower, status),
    };
    let mut shipper = Shipper::new(follower, *next);
    let mut pace = mastership.pace();
    loop {
        if mastership.deposed() {
            return Ended::Stop;
        }
        loop {
            let view = mastership.view();
            let seen = Seen {
                now: Instant::now(),
                staged_end: view.staged_end,
                in_sync: view.acks.in_sync.contains(&follower),
                pacer: mastership.pacer(),
                pace_changed: pace.has_changed().unwrap_or(true),
            };
            let records = match shipper.step(&seen) {
                Step::Wait => break,
                Step::Probe => Vec::new(),
                Step::Send(from) => match records_from(mastership, strong, from).await {
                    Ok(r) => {
                        if let Some(first) = r.first()
                            && first.seq != from
                        {
                            return Ended::Snapshot(from, first.seq);
                        }
                        r
                    }
                    Err(e) => return Ended::Failed(e.to_string()),
                },
            };
            let sent_end = records.last().map(|r| r.seq);
            let call = match request(mastership, strong, &view, sent_end, &records) {
                Ok(c) => c,
                Err(e) => return Ended::Failed(e.to_string()),
            };
            if calls.send(call).await.is_err() {
                return Ended::Failed("the stream closed".into());
            }
            shipper.sent(
                Instant::now(),
                view.acks.master_end.0,
                records.len() as u64,
                sent_end,
            );
            if sent_end.is_some() {
                pace.borrow_and_update();
                if mastership.call_started(follower) {
                    strong.call_started(mastership.tablet, follower);
                }
            }
        }
        let deadline = shipper.deadline(Instant::now());
        tokio::select! {
            answer = answers.message() => match answer {
                Ok(Some(answer)) => {
                    let end = Seq(answer.log_end);
                    let staged_end = mastership.view().staged_end;
                    let Some(target) = shipper.answered(Instant::now(), end, staged_end) else {
                        return Ended::Failed("an answer to no call".into());
                    };
                    mastership.acknowledged(follower, end, Timestamp(answer.last_ts), target);
                    *next = shipper.next();
                }
                Ok(None) => return Ended::Failed("the follower ended the stream".into()),
                Err(status) => return refused(mastership, follower, status),
            },
            // Records held back for the pacer's call go out with it.
            changed = pace.changed(), if shipper.aligning() => {
                if changed.is_err() {
                    return Ended::Stop;
                }
                shipper.pacer_called();
            }
            // With a call in flight, its answer is what sends the next one.
            changed = rx.changed(), if shipper.ready_for_records() => {
                if changed.is_err() {
                    return Ended::Stop;
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                if shipper.timed_out(Instant::now()) {
                    return Ended::Failed("a replication call timed out".into());
                }
            }
        }
    }
}

/// A replication call refused: a follower that knows a newer master stops the
/// shipper (the metadata will tell this node to step down); one behind on a tablet
/// being merged in needs a snapshot.
fn refused(mastership: &Mastership, follower: NodeId, status: tonic::Status) -> Ended {
    if status.code() == tonic::Code::Aborted {
        tracing::warn!(tablet = %mastership.tablet, %follower, "follower follows a newer epoch; shipping stops");
        return Ended::Stop;
    }
    let detail = datalayer_api::v1::ErrorDetail::decode(status.details()).ok();
    if detail.is_some_and(|d| d.kind == datalayer_api::v1::ErrorKind::ReplicaBehind as i32) {
        return Ended::MissesAbsorbed;
    }
    Ended::Failed(status.to_string())
}

/// Up to a call's worth of records from `from` on: from the mastership's in-memory tail,
/// else from the oplog.
async fn records_from(
    mastership: &Mastership,
    strong: &StrongTablets,
    from: Seq,
) -> Result<Vec<OplogRecord>> {
    if let Some(records) = mastership.recent_from(from, MAX_RECORDS, MAX_BYTES) {
        return Ok(records);
    }
    strong
        .read_oplog(mastership.tablet, from, MAX_RECORDS, MAX_BYTES)
        .await
}

/// A replication call carrying `records`.
fn request(
    mastership: &Mastership,
    strong: &StrongTablets,
    view: &AckView,
    sent_end: Option<Seq>,
    records: &[OplogRecord],
) -> Result<pb::ReplicateRequest> {
    let encoded = postcard::to_allocvec(records)
        .map_err(|e| Error::Internal(format!("encoding records: {e}")))?;
    Ok(pb::ReplicateRequest {
        table_id: mastership.table.0,
        tablet_id: mastership.tablet.0,
        epoch: mastership.epoch.0,
        history: view
            .history
            .iter()
            .map(|(e, s)| pb::EpochStart {
                epoch: e.0,
                first_seq: s.0,
            })
            .collect(),
        log_end: view.staged_end.max(sent_end.unwrap_or(Seq(0))).0,
        high_watermark: view.acks.high_watermark().0.0,
        records: encoded,
        committed_ts: strong.committed_ts(mastership).0,
    })
}
