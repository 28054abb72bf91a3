//! The conformance suite of [`TabletEngine`]: every implementation runs
//! [`run_all`] from its tests. Each check panics with what went wrong.

use crate::engine::{KeyRange, ScanRequest, TabletAppend, TabletEngine};
use crate::hlc::Timestamp;
use crate::ids::{Epoch, Seq, TableId, TabletId};
use crate::oplog::{Mutation, OplogRecord, RecordBody, TabletState};

/// One named check of the suite.
type Check<E> = (&'static str, fn(&E));

/// Runs every check, each on a fresh engine from `make`. The second value `make`
/// returns is kept alive while the engine is used (a temporary directory, say).
pub fn run_all<E: TabletEngine, G>(make: impl Fn() -> (E, G)) {
    let checks: [Check<E>; 13] = [
        ("get_latest_and_at_timestamp", get_latest_and_at_timestamp),
        (
            "tombstone_hides_older_versions",
            tombstone_hides_older_versions,
        ),
        (
            "scan_ranges_limits_and_reverse",
            scan_ranges_limits_and_reverse,
        ),
        ("scan_at_timestamp", scan_at_timestamp),
        ("tables_are_isolated", tables_are_isolated),
        (
            "out_of_order_append_writes_nothing",
            out_of_order_append_writes_nothing,
        ),
        ("oplog_read_and_trim", oplog_read_and_trim),
        (
            "truncate_removes_exactly_the_cut_records",
            truncate_removes_exactly_the_cut_records,
        ),
        (
            "garbage_collection_keeps_visible_versions",
            garbage_collection_keeps_visible_versions,
        ),
        ("drop_table_and_meta", drop_table_and_meta),
        (
            "drop_tablet_removes_only_its_range",
            drop_tablet_removes_only_its_range,
        ),
        (
            "export_and_import_replace_a_tablet",
            export_and_import_replace_a_tablet,
        ),
        (
            "aborts_void_records_and_cutting_an_abort_restores_them",
            aborts_void_records_and_cutting_an_abort_restores_them,
        ),
    ];
    for (name, check) in checks {
        let (engine, guard) = make();
        eprintln!("conformance: {name}");
        check(&engine);
        drop(engine);
        drop(guard);
    }
}

/// Appends one record per `(key, value)` to `tablet`, the first at `first_seq`;
/// record `seq` is written at timestamp `seq * 10`.
pub fn append_puts<E: TabletEngine>(
    engine: &E,
    table: TableId,
    tablet: TabletId,
    kvs: &[(&[u8], &[u8])],
    first_seq: u64,
) {
    let muts = kvs
        .iter()
        .map(|(k, v)| Mutation::Put {
            key: k.to_vec(),
            value: v.to_vec(),
        })
        .collect();
    append_each(engine, table, tablet, muts, first_seq);
}

fn append_each<E: TabletEngine>(
    engine: &E,
    table: TableId,
    tablet: TabletId,
    muts: Vec<Mutation>,
    first_seq: u64,
) {
    let mut state = engine
        .tablet_state(tablet)
        .expect("tablet_state")
        .unwrap_or_default();
    let mut records = Vec::new();
    for (i, m) in muts.into_iter().enumerate() {
        let seq = Seq(first_seq + i as u64);
        let record = OplogRecord {
            epoch: Epoch(1),
            seq,
            ts: Timestamp(seq.0 * 10),
            body: RecordBody::Write(vec![m]),
            origin: None,
        };
        state.advance(&record);
        records.push(record);
    }
    engine
        .append(&[TabletAppend {
            table,
            tablet,
            records,
            state,
        }])
        .expect("append");
}

fn value_at<E: TabletEngine>(engine: &E, table: TableId, key: &[u8], at: u64) -> Option<Vec<u8>> {
    engine
        .get(table, key, Timestamp(at))
        .expect("get")
        .map(|v| v.value)
}

fn keys(rows: &[(Vec<u8>, crate::engine::Versioned)]) -> Vec<&[u8]> {
    rows.iter().map(|(k, _)| k.as_slice()).collect()
}

fn scan<E: TabletEngine>(
    engine: &E,
    start: &[u8],
    end: Option<&[u8]>,
    at: u64,
    limit: usize,
    reverse: bool,
) -> Vec<(Vec<u8>, crate::engine::Versioned)> {
    engine
        .scan(&ScanRequest {
            table: TableId(1),
            range: KeyRange {
                start: start.to_vec(),
                end: end.map(<[u8]>::to_vec),
            },
            at: Timestamp(at),
            limit,
            reverse,
        })
        .expect("scan")
}

fn get_latest_and_at_timestamp<E: TabletEngine>(engine: &E) {
    let (t, tab) = (TableId(1), TabletId(1));
    append_puts(
        engine,
        t,
        tab,
        &[(b"k", b"v1"), (b"k", b"v2"), (b"k", b"v3")],
        1,
    );
    assert_eq!(value_at(engine, t, b"k", u64::MAX), Some(b"v3".to_vec()));
    assert_eq!(value_at(engine, t, b"k", 25), Some(b"v2".to_vec()));
    assert_eq!(value_at(engine, t, b"k", 20), Some(b"v2".to_vec()));
    assert_eq!(value_at(engine, t, b"k", 19), Some(b"v1".to_vec()));
    assert_eq!(
        value_at(engine, t, b"k", 9),
        None,
        "nothing before the first write"
    );
    assert_eq!(
        value_at(engine, t, b"kk", u64::MAX),
        None,
        "a longer key is another key"
    );
    assert_eq!(value_at(engine, t, b"", u64::MAX), None);
    let latest = engine
        .get(t, b"k", Timestamp::MAX)
        .expect("get")
        .expect("some");
    assert_eq!(
        latest.ts,
        Timestamp(30),
        "the version carries its timestamp"
    );
    let state = engine.tablet_state(tab).expect("state").expect("present");
    assert_eq!(state.log_end, Seq(3));
    assert_eq!(state.epoch_history, vec![(Epoch(1), Seq(1))]);
    assert_eq!(state.last_ts, Timestamp(30));
}

fn tombstone_hides_older_versions<E: TabletEngine>(engine: &E) {
    let (t, tab) = (TableId(1), TabletId(1));
    let muts = vec![
        Mutation::Put {
            key: b"a".to_vec(),
            value: b"1".to_vec(),
        },
        Mutation::Delete { key: b"a".to_vec() },
        Mutation::Put {
            key: b"b".to_vec(),
            value: b"2".to_vec(),
        },
    ];
    append_each(engine, t, tab, muts, 1);
    assert_eq!(value_at(engine, t, b"a", u64::MAX), None);
    assert_eq!(value_at(engine, t, b"a", 10), Some(b"1".to_vec()));
    let rows = scan(engine, b"", None, u64::MAX, 10, false);
    assert_eq!(
        keys(&rows),
        vec![b"b".as_slice()],
        "deleted keys do not scan"
    );
    let rows = scan(engine, b"", None, u64::MAX, 10, true);
    assert_eq!(keys(&rows), vec![b"b".as_slice()]);
}

fn scan_ranges_limits_and_reverse<E: TabletEngine>(engine: &E) {
    let (t, tab) = (TableId(1), TabletId(1));
    let kvs: Vec<(&[u8], &[u8])> = vec![
        (b"a", b"1"),
        (b"a\x00", b"2"),
        (b"b", b"3"),
        (b"c", b"4"),
        (b"b", b"3b"),
    ];
    append_puts(engine, t, tab, &kvs, 1);
    let all = scan(engine, b"", None, u64::MAX, 100, false);
    assert_eq!(keys(&all), vec![&b"a"[..], b"a\x00", b"b", b"c"]);
    assert_eq!(all[2].1.value, b"3b".to_vec(), "newest version of b");
    let rev = scan(engine, b"", None, u64::MAX, 100, true);
    assert_eq!(keys(&rev), vec![&b"c"[..], b"b", b"a\x00", b"a"]);
    assert_eq!(rev[1].1.value, b"3b".to_vec());
    let mid = scan(engine, b"a\x00", Some(b"c"), u64::MAX, 100, false);
    assert_eq!(
        keys(&mid),
        vec![&b"a\x00"[..], b"b"],
        "start inclusive, end exclusive"
    );
    let mid_rev = scan(engine, b"a\x00", Some(b"c"), u64::MAX, 100, true);
    assert_eq!(keys(&mid_rev), vec![&b"b"[..], b"a\x00"]);
    let two = scan(engine, b"", None, u64::MAX, 2, false);
    assert_eq!(keys(&two), vec![&b"a"[..], b"a\x00"]);
    let two_rev = scan(engine, b"", None, u64::MAX, 2, true);
    assert_eq!(keys(&two_rev), vec![&b"c"[..], b"b"]);
    assert!(
        scan(engine, b"c", Some(b"b"), u64::MAX, 10, false).is_empty(),
        "empty range"
    );
    assert!(
        scan(engine, b"", None, u64::MAX, 0, false).is_empty(),
        "zero limit"
    );
}

fn scan_at_timestamp<E: TabletEngine>(engine: &E) {
    let (t, tab) = (TableId(1), TabletId(1));
    append_puts(
        engine,
        t,
        tab,
        &[(b"x", b"1"), (b"y", b"2"), (b"x", b"3")],
        1,
    );
    let rows = scan(engine, b"", None, 15, 10, false);
    assert_eq!(keys(&rows), vec![b"x".as_slice()]);
    assert_eq!(rows[0].1.value, b"1".to_vec());
    let rows = scan(engine, b"", None, 25, 10, true);
    assert_eq!(keys(&rows), vec![&b"y"[..], b"x"]);
    assert_eq!(
        rows[1].1.value,
        b"1".to_vec(),
        "x as of 25 is its first value"
    );
}

fn tables_are_isolated<E: TabletEngine>(engine: &E) {
    append_puts(engine, TableId(1), TabletId(1), &[(b"k", b"one")], 1);
    append_puts(engine, TableId(2), TabletId(2), &[(b"k", b"two")], 1);
    assert_eq!(
        value_at(engine, TableId(1), b"k", u64::MAX),
        Some(b"one".to_vec())
    );
    assert_eq!(
        value_at(engine, TableId(2), b"k", u64::MAX),
        Some(b"two".to_vec())
    );
    let rows = scan(engine, b"", None, u64::MAX, 10, true);
    assert_eq!(rows.len(), 1, "a scan of table 1 sees none of table 2");
}

fn out_of_order_append_writes_nothing<E: TabletEngine>(engine: &E) {
    let (t, tab) = (TableId(1), TabletId(1));
    let good = OplogRecord {
        epoch: Epoch(1),
        seq: Seq(1),
        ts: Timestamp(10),
        body: RecordBody::Write(vec![Mutation::Put {
            key: b"ok".to_vec(),
            value: b"1".to_vec(),
        }]),
        origin: None,
    };
    let gap = OplogRecord {
        seq: Seq(3),
        ..good.clone()
    };
    let mut state = TabletState::default();
    state.advance(&good);
    state.log_end = Seq(3);
    let result = engine.append(&[
        TabletAppend {
            table: t,
            tablet: TabletId(9),
            records: vec![good.clone()],
            state: {
                let mut s = TabletState::default();
                s.advance(&good);
                s
            },
        },
        TabletAppend {
            table: t,
            tablet: tab,
            records: vec![good, gap],
            state,
        },
    ]);
    assert!(result.is_err(), "a gap in seqs is refused");
    assert_eq!(
        value_at(engine, t, b"ok", u64::MAX),
        None,
        "the whole group is refused"
    );
    assert_eq!(engine.tablet_state(TabletId(9)).expect("state"), None);
    assert_eq!(engine.stats().group_commits, 0);
}

fn oplog_read_and_trim<E: TabletEngine>(engine: &E) {
    let (t, tab) = (TableId(1), TabletId(1));
    let kvs: Vec<(&[u8], &[u8])> = vec![(b"a", b"1"), (b"b", b"2"), (b"c", b"3"), (b"d", b"4")];
    append_puts(engine, t, tab, &kvs, 1);
    append_puts(engine, t, TabletId(2), &[(b"z", b"9")], 1);
    let all = engine.read_oplog(tab, Seq(1), 100).expect("read");
    assert_eq!(
        all.iter().map(|r| r.seq.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    let some = engine.read_oplog(tab, Seq(2), 2).expect("read");
    assert_eq!(some.iter().map(|r| r.seq.0).collect::<Vec<_>>(), vec![2, 3]);
    engine.trim_oplog(tab, Seq(3)).expect("trim");
    let left = engine.read_oplog(tab, Seq(0), 100).expect("read");
    assert_eq!(left.iter().map(|r| r.seq.0).collect::<Vec<_>>(), vec![3, 4]);
    assert_eq!(
        value_at(engine, t, b"a", u64::MAX),
        Some(b"1".to_vec()),
        "trim keeps data"
    );
    assert_eq!(
        engine
            .read_oplog(TabletId(2), Seq(0), 10)
            .expect("read")
            .len(),
        1
    );
    let stats = engine.stats();
    assert_eq!((stats.group_commits, stats.records_appended), (2, 5));
}

fn truncate_removes_exactly_the_cut_records<E: TabletEngine>(engine: &E) {
    let (t, tab) = (TableId(1), TabletId(1));
    // seq 1: a=1 (ts 10), 2: b=2 (ts 20), 3: a=3 (ts 30), 4: c=4 (ts 40)
    let kvs: Vec<(&[u8], &[u8])> = vec![(b"a", b"1"), (b"b", b"2"), (b"a", b"3"), (b"c", b"4")];
    append_puts(engine, t, tab, &kvs, 1);
    append_puts(engine, TableId(2), TabletId(2), &[(b"a", b"other")], 1);
    let state = engine.tablet_state(tab).expect("state").expect("exists");
    let cut = state.truncated(Seq(2), Timestamp(20));
    assert_eq!(cut.log_end, Seq(2));
    assert_eq!(cut.epoch_history, vec![(Epoch(1), Seq(1))]);
    let removed = engine.truncate(t, tab, Seq(2), &cut).expect("truncate");
    assert_eq!(removed, 2);
    assert_eq!(value_at(engine, t, b"a", u64::MAX), Some(b"1".to_vec()));
    assert_eq!(value_at(engine, t, b"b", u64::MAX), Some(b"2".to_vec()));
    assert_eq!(value_at(engine, t, b"c", u64::MAX), None);
    assert_eq!(engine.tablet_state(tab).expect("state"), Some(cut.clone()));
    let left = engine.read_oplog(tab, Seq(0), 100).expect("read");
    assert_eq!(left.iter().map(|r| r.seq.0).collect::<Vec<_>>(), vec![1, 2]);
    // The log continues right after the cut, in a new epoch.
    let mut state = cut;
    let record = OplogRecord {
        epoch: Epoch(2),
        seq: Seq(3),
        ts: Timestamp(50),
        body: RecordBody::Write(vec![Mutation::Put {
            key: b"a".to_vec(),
            value: b"5".to_vec(),
        }]),
        origin: None,
    };
    state.advance(&record);
    engine
        .append(&[TabletAppend {
            table: t,
            tablet: tab,
            records: vec![record],
            state,
        }])
        .expect("append after truncate");
    assert_eq!(value_at(engine, t, b"a", u64::MAX), Some(b"5".to_vec()));
    assert_eq!(value_at(engine, t, b"a", 30), Some(b"1".to_vec()));
    assert_eq!(
        engine
            .read_oplog(TabletId(2), Seq(0), 10)
            .expect("read")
            .len(),
        1,
        "other tablets keep their logs"
    );
    assert_eq!(
        value_at(engine, TableId(2), b"a", u64::MAX),
        Some(b"other".to_vec())
    );
}

fn garbage_collection_keeps_visible_versions<E: TabletEngine>(engine: &E) {
    let (t, tab) = (TableId(1), TabletId(1));
    // a: 10, 20, 30 — b: 40, deleted at 50 — c: 60
    let muts = vec![
        Mutation::Put {
            key: b"a".to_vec(),
            value: b"a1".to_vec(),
        },
        Mutation::Put {
            key: b"a".to_vec(),
            value: b"a2".to_vec(),
        },
        Mutation::Put {
            key: b"a".to_vec(),
            value: b"a3".to_vec(),
        },
        Mutation::Put {
            key: b"b".to_vec(),
            value: b"b1".to_vec(),
        },
        Mutation::Delete { key: b"b".to_vec() },
        Mutation::Put {
            key: b"c".to_vec(),
            value: b"c1".to_vec(),
        },
    ];
    append_each(engine, t, tab, muts, 1);
    let removed = engine.collect_garbage(t, Timestamp(55)).expect("gc");
    // a1, a2 (shadowed by a3), b's tombstone and b1.
    assert_eq!(removed, 4);
    assert_eq!(value_at(engine, t, b"a", 55), Some(b"a3".to_vec()));
    assert_eq!(value_at(engine, t, b"a", 15), None, "collected");
    assert_eq!(value_at(engine, t, b"b", 45), None, "collected");
    assert_eq!(value_at(engine, t, b"c", u64::MAX), Some(b"c1".to_vec()));
    assert_eq!(
        engine.collect_garbage(t, Timestamp(55)).expect("gc again"),
        0
    );
}

fn drop_tablet_removes_only_its_range<E: TabletEngine>(engine: &E) {
    // Table 1 has two tablets: [.., "m") and ["m", ..); table 2 one.
    append_puts(
        engine,
        TableId(1),
        TabletId(1),
        &[(b"a", b"1"), (b"l\xff", b"2")],
        1,
    );
    append_puts(
        engine,
        TableId(1),
        TabletId(2),
        &[(b"m", b"3"), (b"z", b"4")],
        1,
    );
    append_puts(engine, TableId(2), TabletId(3), &[(b"a", b"5")], 1);
    let range = KeyRange {
        start: b"m".to_vec(),
        end: None,
    };
    engine
        .drop_tablet(TableId(1), TabletId(2), &range)
        .expect("drop tablet");
    assert_eq!(value_at(engine, TableId(1), b"m", u64::MAX), None);
    assert_eq!(value_at(engine, TableId(1), b"z", u64::MAX), None);
    assert_eq!(engine.tablet_state(TabletId(2)).expect("state"), None);
    assert!(
        engine
            .read_oplog(TabletId(2), Seq(0), 10)
            .expect("read")
            .is_empty()
    );
    assert_eq!(
        value_at(engine, TableId(1), b"a", u64::MAX),
        Some(b"1".to_vec())
    );
    assert_eq!(
        value_at(engine, TableId(1), b"l\xff", u64::MAX),
        Some(b"2".to_vec())
    );
    assert!(engine.tablet_state(TabletId(1)).expect("state").is_some());
    assert_eq!(
        value_at(engine, TableId(2), b"a", u64::MAX),
        Some(b"5".to_vec())
    );
    let first = KeyRange {
        start: Vec::new(),
        end: Some(b"m".to_vec()),
    };
    engine
        .drop_tablet(TableId(1), TabletId(1), &first)
        .expect("drop first tablet");
    assert_eq!(value_at(engine, TableId(1), b"l\xff", u64::MAX), None);
    assert_eq!(
        value_at(engine, TableId(2), b"a", u64::MAX),
        Some(b"5".to_vec())
    );
}

fn export_and_import_replace_a_tablet<E: TabletEngine>(engine: &E) {
    let dir = std::env::temp_dir().join(format!(
        "datalayer-export-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let all = KeyRange {
        start: Vec::new(),
        end: None,
    };
    assert_eq!(
        engine
            .export_tablet(TableId(1), TabletId(1), &all, &dir)
            .expect("export nothing"),
        None,
        "no state, no export"
    );
    append_puts(
        engine,
        TableId(1),
        TabletId(1),
        &[(b"a", b"1"), (b"b", b"2")],
        1,
    );
    append_puts(engine, TableId(1), TabletId(1), &[(b"a", b"3")], 3);
    append_puts(engine, TableId(2), TabletId(2), &[(b"a", b"other")], 1);
    let export = engine
        .export_tablet(TableId(1), TabletId(1), &all, &dir)
        .expect("export")
        .expect("a tablet with state");
    assert_eq!(
        export.state,
        engine
            .tablet_state(TabletId(1))
            .expect("state")
            .expect("some")
    );
    assert_eq!(export.versions, 3, "every version, old ones too");
    // Writes after the export are not in it.
    append_puts(engine, TableId(1), TabletId(1), &[(b"c", b"late")], 4);
    let file = export.file.clone().expect("a data file");
    engine
        .import_tablet(TableId(1), TabletId(1), &all, &export.state, Some(&file))
        .expect("import");
    assert_eq!(
        value_at(engine, TableId(1), b"a", u64::MAX),
        Some(b"3".to_vec())
    );
    assert_eq!(
        value_at(engine, TableId(1), b"a", 10),
        Some(b"1".to_vec()),
        "history kept"
    );
    assert_eq!(
        value_at(engine, TableId(1), b"b", u64::MAX),
        Some(b"2".to_vec())
    );
    assert_eq!(
        value_at(engine, TableId(1), b"c", u64::MAX),
        None,
        "replaced, not merged"
    );
    assert_eq!(
        engine.tablet_state(TabletId(1)).expect("state"),
        Some(export.state.clone())
    );
    assert!(
        engine
            .read_oplog(TabletId(1), Seq(0), 10)
            .expect("read")
            .is_empty()
    );
    assert_eq!(
        value_at(engine, TableId(2), b"a", u64::MAX),
        Some(b"other".to_vec()),
        "other tables untouched"
    );
    // An empty export empties the replica.
    engine
        .import_tablet(TableId(2), TabletId(2), &all, &TabletState::default(), None)
        .expect("import empty");
    assert_eq!(value_at(engine, TableId(2), b"a", u64::MAX), None);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Appends `bodies` to the tablet, one record each, from seq `first` (ts = seq × 10).
fn append_bodies<E: TabletEngine>(
    engine: &E,
    table: TableId,
    tablet: TabletId,
    first: u64,
    bodies: Vec<RecordBody>,
) -> TabletState {
    let mut state = engine
        .tablet_state(tablet)
        .expect("tablet_state")
        .unwrap_or_default();
    let mut records = Vec::new();
    for (i, body) in bodies.into_iter().enumerate() {
        let seq = Seq(first + i as u64);
        let record = OplogRecord {
            epoch: Epoch(1),
            seq,
            ts: Timestamp(seq.0 * 10),
            body,
            origin: None,
        };
        state.advance(&record);
        records.push(record);
    }
    engine
        .append(&[TabletAppend {
            table,
            tablet,
            records,
            state: state.clone(),
        }])
        .expect("append");
    state
}

fn aborts_void_records_and_cutting_an_abort_restores_them<E: TabletEngine>(engine: &E) {
    let (t, tab) = (TableId(1), TabletId(1));
    let put = |k: &[u8], v: &[u8]| {
        RecordBody::Write(vec![Mutation::Put {
            key: k.to_vec(),
            value: v.to_vec(),
        }])
    };
    let del = |k: &[u8]| RecordBody::Write(vec![Mutation::Delete { key: k.to_vec() }]);
    // 1: a=1, 2: a=2, 3: delete a, 4: b=1; then 5 voids 2..=4.
    append_bodies(
        engine,
        t,
        tab,
        1,
        vec![put(b"a", b"1"), put(b"a", b"2"), del(b"a"), put(b"b", b"1")],
    );
    assert_eq!(value_at(engine, t, b"a", u64::MAX), None);
    let state = append_bodies(
        engine,
        t,
        tab,
        5,
        vec![RecordBody::Abort {
            from: Seq(2),
            before_ts: Timestamp(10),
        }],
    );
    assert_eq!(value_at(engine, t, b"a", u64::MAX), Some(b"1".to_vec()));
    assert_eq!(
        value_at(engine, t, b"a", 25),
        Some(b"1".to_vec()),
        "no trace of 2"
    );
    assert_eq!(value_at(engine, t, b"b", u64::MAX), None);
    assert_eq!(
        engine.read_oplog(tab, Seq(0), 10).expect("read").len(),
        5,
        "voided records stay in the log"
    );
    // Cutting the abort (a failover to a master that never had it) brings the voided
    // records that stay back; cutting them too leaves nothing of them.
    let cut = state.truncated(Seq(3), Timestamp(30));
    engine.truncate(t, tab, Seq(3), &cut).expect("truncate");
    assert_eq!(
        value_at(engine, t, b"a", u64::MAX),
        None,
        "3 deleted a again"
    );
    assert_eq!(value_at(engine, t, b"a", 25), Some(b"2".to_vec()));
    assert_eq!(value_at(engine, t, b"b", u64::MAX), None, "4 was cut");
    // An abort in the same append as the records it voids.
    append_bodies(
        engine,
        t,
        tab,
        4,
        vec![
            put(b"c", b"1"),
            RecordBody::Abort {
                from: Seq(4),
                before_ts: Timestamp(30),
            },
        ],
    );
    assert_eq!(value_at(engine, t, b"c", u64::MAX), None);
    assert_eq!(value_at(engine, t, b"a", 25), Some(b"2".to_vec()));
}

fn drop_table_and_meta<E: TabletEngine>(engine: &E) {
    append_puts(engine, TableId(1), TabletId(1), &[(b"k", b"one")], 1);
    append_puts(engine, TableId(2), TabletId(2), &[(b"k", b"two")], 1);
    engine.drop_table(TableId(1), &[TabletId(1)]).expect("drop");
    assert_eq!(value_at(engine, TableId(1), b"k", u64::MAX), None);
    assert_eq!(engine.tablet_state(TabletId(1)).expect("state"), None);
    assert!(
        engine
            .read_oplog(TabletId(1), Seq(0), 10)
            .expect("read")
            .is_empty()
    );
    assert_eq!(
        value_at(engine, TableId(2), b"k", u64::MAX),
        Some(b"two".to_vec())
    );

    engine
        .meta_write(
            &[
                (b"t/1".to_vec(), b"x".to_vec()),
                (b"t/2".to_vec(), b"y".to_vec()),
                (b"u/1".to_vec(), b"z".to_vec()),
            ],
            &[],
        )
        .expect("meta write");
    assert_eq!(
        engine.meta_get(b"t/1").expect("meta get"),
        Some(b"x".to_vec())
    );
    engine
        .meta_write(&[], &[b"t/1".to_vec()])
        .expect("meta delete");
    let rows = engine.meta_scan(b"t/").expect("meta scan");
    assert_eq!(rows, vec![(b"t/2".to_vec(), b"y".to_vec())]);
    // A lazy write reads like any other: it only waits less for the disk.
    engine
        .meta_write_lazy(&[(b"t/2".to_vec(), b"w".to_vec())], &[b"u/1".to_vec()])
        .expect("lazy meta write");
    assert_eq!(engine.meta_get(b"t/2").expect("get"), Some(b"w".to_vec()));
    assert_eq!(engine.meta_get(b"u/1").expect("get"), None);

    let puts: Vec<(Vec<u8>, Vec<u8>)> = (1u8..=5).map(|i| (vec![b'r', i], vec![i])).collect();
    engine.meta_write(&puts, &[]).expect("meta write");
    let keys =
        |rows: Vec<(Vec<u8>, Vec<u8>)>| rows.into_iter().map(|(k, _)| k[1]).collect::<Vec<u8>>();
    let range = |s: u8, e: u8, limit, reverse| {
        keys(
            engine
                .meta_range(&[b'r', s], &[b'r', e], limit, reverse)
                .expect("meta range"),
        )
    };
    assert_eq!(
        range(2, 5, 10, false),
        vec![2, 3, 4],
        "start inclusive, end exclusive"
    );
    assert_eq!(range(2, 5, 10, true), vec![4, 3, 2]);
    assert_eq!(range(1, 9, 2, false), vec![1, 2]);
    assert_eq!(range(1, 9, 1, true), vec![5]);
    assert!(range(4, 2, 10, false).is_empty());
}
