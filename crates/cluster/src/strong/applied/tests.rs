//! The applied-records feed on a master and a follower, driven in-process: the
//! follower gets the master's records by direct replication calls, and the master
//! hears the follower's acks, so the test decides when each record commits.

use crate::catalog::TabletDesc;
use crate::meta::Lease;
use crate::meta::liveness::wall_ms;
use crate::strong::{Acks, WriteState};
use crate::strong::{AppliedFeed, AppliedRecord, Config, Replicate, StrongTablets, WriteOp};
use datalayer_store::{
    Epoch, HybridClock, Mutation, NodeId, RecordBody, RocksTabletEngine, Seq, TableId,
    TabletEngine, TabletId, Timestamp,
};
use std::sync::Arc;
use std::time::Duration;

const TABLET: TabletId = TabletId(10);

fn desc() -> TabletDesc {
    TabletDesc {
        id: TABLET,
        table: TableId(1),
        start: Vec::new(),
        end: None,
        generation: 1,
        replicas: vec![NodeId(1), NodeId(2)],
        in_sync: vec![NodeId(1), NodeId(2)],
        master: NodeId(1),
        master_epoch: Epoch(1),
        master_liveness: Default::default(),
        conf_version: 1,
        moving: None,
        split: None,
        merge: None,
        absorbed: None,
    }
}

fn start(dir: &std::path::Path) -> StrongTablets {
    let engine: Arc<dyn TabletEngine> =
        Arc::new(RocksTabletEngine::open(dir.join("db"), &Default::default()).expect("open store"));
    let lease = Arc::new(Lease::new(Duration::from_secs(600), Duration::ZERO));
    lease.renew(Default::default(), wall_ms());
    StrongTablets::start(
        engine,
        Arc::new(HybridClock::new()),
        Config::default(),
        lease,
        dir.join("snapshots"),
    )
    .expect("start the writer")
}

fn put(key: &str) -> WriteOp {
    WriteOp::Batch(vec![Mutation::Put {
        key: key.as_bytes().to_vec(),
        value: b"v".to_vec(),
    }])
}

/// What the feed has committed right now, without waiting for more.
async fn ready(feed: &mut AppliedFeed) -> Option<Vec<AppliedRecord>> {
    tokio::time::timeout(Duration::ZERO, feed.next(100))
        .await
        .ok()
        .map(|r| r.expect("feed"))
}

/// The master's records from `from` on, sent to the follower with the master's
/// high watermark.
async fn replicate(master: &StrongTablets, follower: &StrongTablets, from: Seq, hw: Seq) -> Seq {
    let records = master
        .read_oplog(TABLET, from, 100, 1 << 20)
        .await
        .expect("read the master's oplog");
    let state = master.mastership(TABLET).expect("mastered").view();
    let (end, _) = follower
        .replicate(Replicate {
            table: TableId(1),
            range: desc().range(),
            tablet: TABLET,
            epoch: Epoch(1),
            history: state.history.clone(),
            log_end: state.acks.master_end.0,
            high_watermark: hw,
            committed_ts: Timestamp(0),
            records,
        })
        .await
        .expect("the follower appends");
    end
}

fn seqs(records: &[AppliedRecord]) -> Vec<(u64, bool)> {
    records
        .iter()
        .map(|r| (r.position.seq.0, r.voided))
        .collect()
}

#[tokio::test]
async fn every_replica_tells_of_committed_records_in_order_and_resumes_after_restart() {
    let (m_dir, f_dir) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let master = start(m_dir.path());
    let follower = start(f_dir.path());
    master.open_tablet(&desc()).await.expect("master opens");
    follower
        .follow_tablet(&desc())
        .await
        .expect("follower follows");
    let mut on_master = master.applied_feed(TABLET, Seq(1)).expect("feed");
    let mut on_follower = follower.applied_feed(TABLET, Seq(1)).expect("feed");

    // Written on the master (seq 1 is the epoch's no-op), not yet held by the
    // follower: nothing is committed, so neither feed tells of anything.
    for k in ["a", "b"] {
        master
            .write(&desc(), put(k), Acks::One, None)
            .await
            .expect("write");
    }
    assert_eq!(
        ready(&mut on_master).await,
        None,
        "uncommitted records wait"
    );
    let end = replicate(&master, &follower, Seq(1), Seq(0)).await;
    assert_eq!(end, Seq(3));
    assert_eq!(
        ready(&mut on_follower).await,
        None,
        "the follower waits for the master's watermark"
    );

    // The follower's ack commits them on the master; the next call tells the follower.
    let ts = master
        .mastership(TABLET)
        .expect("mastered")
        .view()
        .acks
        .master_end
        .1;
    master
        .mastership(TABLET)
        .expect("mastered")
        .acknowledged(NodeId(2), end, ts, end);
    let got = on_master.next(100).await.expect("committed on the master");
    assert_eq!(seqs(&got), vec![(1, false), (2, false), (3, false)]);
    assert!(matches!(got[0].record.body, RecordBody::Noop));
    assert!(matches!(&got[1].record.body, RecordBody::Write(m) if m[0].key() == b"a"));
    assert!(
        got.iter()
            .all(|r| r.position.epoch == Epoch(1) && r.position.tablet == TABLET)
    );
    replicate(&master, &follower, Seq(4), Seq(3)).await;
    let got_f = on_follower
        .next(2)
        .await
        .expect("committed on the follower");
    assert_eq!(
        seqs(&got_f),
        vec![(1, false), (2, false)],
        "at most the limit"
    );
    assert_eq!(
        seqs(&on_follower.next(100).await.expect("rest")),
        vec![(3, false)]
    );
    assert_eq!(on_follower.position(), Seq(4));

    // A write voided by an abort: delivered marked, once the abort committed.
    let outcome = master
        .write(&desc(), put("c"), Acks::One, None)
        .await
        .expect("write");
    let seq = outcome.position.expect("written").seq;
    // The abort answers once its record is held by the in-sync set: the follower
    // gets it (and acknowledges it) meanwhile.
    let abort = master.abort_write(TABLET, Epoch(1), seq);
    let follow_up = async {
        let mastership = master.mastership(TABLET).expect("mastered");
        let appended = mastership
            .wait_for(Duration::from_secs(10), |v| v.acks.master_end.0 >= Seq(5))
            .await
            .expect("the abort record is appended");
        let end = replicate(&master, &follower, Seq(4), Seq(3)).await;
        mastership.acknowledged(NodeId(2), end, appended.acks.master_end.1, end);
        end
    };
    let (aborted, end) = tokio::join!(abort, follow_up);
    assert_eq!(aborted.expect("abort"), WriteState::Aborted);
    let got = on_master.next(100).await.expect("the abort committed");
    assert_eq!(seqs(&got), vec![(4, true), (5, false)]);
    assert!(matches!(got[1].record.body, RecordBody::Abort { .. }));
    replicate(&master, &follower, Seq(6), end).await;
    assert_eq!(
        seqs(&on_follower.next(100).await.expect("follower")),
        vec![(4, true), (5, false)]
    );

    // A follower restarted resumes from the position its subscriber kept.
    follower.stop().await;
    drop((follower, on_follower));
    let follower = start(f_dir.path());
    follower
        .follow_tablet(&desc())
        .await
        .expect("follows again");
    let mut resumed = follower.applied_feed(TABLET, Seq(3)).expect("feed");
    assert_eq!(
        seqs(&resumed.next(100).await.expect("resumed")),
        vec![(3, false), (4, true), (5, false)]
    );
    assert_eq!(
        ready(&mut resumed).await,
        None,
        "nothing past the watermark"
    );
    follower.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn a_position_the_oplog_no_longer_holds_asks_for_a_rebuild() {
    let dir = tempfile::tempdir().expect("dir");
    let engine: Arc<dyn TabletEngine> = Arc::new(
        RocksTabletEngine::open(dir.path().join("db"), &Default::default()).expect("open store"),
    );
    let lease = Arc::new(Lease::new(Duration::from_secs(600), Duration::ZERO));
    let alone = TabletDesc {
        replicas: vec![NodeId(1)],
        in_sync: vec![NodeId(1)],
        ..desc()
    };
    let master = StrongTablets::start(
        engine,
        Arc::new(HybridClock::new()),
        Config {
            oplog_retention_records: 4,
            ..Config::default()
        },
        lease,
        dir.path().join("snapshots"),
    )
    .expect("start");
    master.open_tablet(&alone).await.expect("open");
    for i in 0..12 {
        master
            .write(&alone, put(&format!("k{i}")), Acks::One, None)
            .await
            .expect("write");
    }
    let mut feed = master.applied_feed(TABLET, Seq(1)).expect("feed");
    let err = feed.next(100).await.expect_err("trimmed");
    assert!(
        matches!(
            err,
            crate::Error::Store(datalayer_store::Error::Trimmed { .. })
        ),
        "{err}"
    );
    // Rebuilt from the rows, a subscriber resumes after the committed end.
    let end = master.committed_end(TABLET).expect("end");
    assert_eq!(end, Seq(13), "alone, the master commits what it writes");
    let mut feed = master.applied_feed(TABLET, end).expect("feed");
    assert_eq!(
        seqs(&feed.next(100).await.expect("last")),
        vec![(13, false)]
    );
    master.stop().await;
}
