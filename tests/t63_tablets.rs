//! Tables of many tablets on 3 nodes: created with split keys, requests that span
//! tablets (scans forward, reverse and paged, batch gets, range deletions) answered as
//! the same requests on a table of one tablet, at one read timestamp.
//!
//! One cluster serves every case of this file (they use their own tables).

use datalayer_api::v1 as pb;
use datalayer_client::{Client, ErrorKind, TableOptions, put};
use datalayer_tests::{TestCluster, json, stderr, stdout};

fn rows(rows: &[pb::KeyValue]) -> Vec<(String, String)> {
    rows.iter()
        .map(|r| {
            (
                String::from_utf8_lossy(&r.key).into_owned(),
                String::from_utf8_lossy(&r.value).into_owned(),
            )
        })
        .collect()
}

/// The keys both tables hold: spread over every tablet of the split one, a few right
/// at its bounds.
fn keys() -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = (0..240)
        .map(|i| format!("k{:04}", (i * 37) % 300).into_bytes())
        .collect();
    for k in [
        "a", "a1", "b", "b\0", "c", "k0100", "k0199", "k0200", "m", "m\0", "z", "zz",
    ] {
        keys.push(k.as_bytes().to_vec());
    }
    keys.sort();
    keys.dedup();
    keys
}

const SPLIT_KEYS: [&str; 4] = ["b", "k0100", "k0200", "m"];

/// Every page of a scan of `[start, end)` by pages of `limit` rows, following resume
/// keys on the first page's timestamp; the pages' rows and read timestamps.
async fn paged(
    c: &mut Client,
    table: &str,
    start: &[u8],
    end: &[u8],
    limit: u32,
    reverse: bool,
) -> (Vec<pb::KeyValue>, Vec<u64>) {
    let mut req = pb::ScanRequest {
        table: table.into(),
        start: start.to_vec(),
        end: end.to_vec(),
        limit,
        reverse,
        ..Default::default()
    };
    let (mut out, mut stamps) = (Vec::new(), Vec::new());
    loop {
        let page = c.scan_page(req.clone()).await.expect("scan page");
        assert!(
            page.rows.len() <= limit as usize,
            "a page holds at most its limit"
        );
        stamps.push(page.read_timestamp);
        out.extend(page.rows);
        if !page.more {
            return (out, stamps);
        }
        req.at_timestamp = page.read_timestamp;
        if reverse {
            req.end = page.resume_key;
        } else {
            req.start = page.resume_key;
        }
    }
}

async fn split_keys_and_spanning_requests(cluster: &TestCluster) {
    let mut c = cluster.client(0).await.expect("connect");
    c.create_table("one", TableOptions::default())
        .await
        .expect("create one");
    let (five, _) = c
        .create_table(
            "five",
            TableOptions {
                split_keys: SPLIT_KEYS.iter().map(|k| k.as_bytes().to_vec()).collect(),
                ..Default::default()
            },
        )
        .await
        .expect("create five");
    assert_eq!(five.tablets.len(), 5);
    let bounds: Vec<_> = five.tablets.iter().map(|t| t.start.clone()).collect();
    assert_eq!(bounds[0], b"");
    assert_eq!(&bounds[1..], SPLIT_KEYS.map(|k| k.as_bytes().to_vec()));
    let masters: std::collections::BTreeSet<u64> = five.tablets.iter().map(|t| t.master).collect();
    assert_eq!(
        masters.len(),
        3,
        "the tablets' masters are spread: {five:?}"
    );

    // Bad split keys are refused and create nothing.
    for bad in [vec!["m", "b"], vec!["b", "b"], vec![""]] {
        let err = c
            .create_table(
                "bad",
                TableOptions {
                    split_keys: bad.iter().map(|k| k.as_bytes().to_vec()).collect(),
                    ..Default::default()
                },
            )
            .await
            .expect_err("bad split keys");
        assert_eq!(
            (err.kind, err.field.as_str()),
            (ErrorKind::InvalidArgument, "split_keys"),
            "{bad:?}: {err}"
        );
    }
    assert!(
        c.describe_table("bad").await.is_err(),
        "nothing was created"
    );

    for key in keys() {
        let value = format!("v-{}", String::from_utf8_lossy(&key));
        for table in ["one", "five"] {
            c.put(table, &key, value.as_bytes()).await.expect("put");
        }
    }

    // Whole-table and partial scans, forward and reverse, in one page or many.
    let ranges: [(&[u8], &[u8]); 4] = [
        (b"", b""),
        (b"a5", b"k0150"),
        (b"b", b"m"),
        (b"k0199", b"k0200\0"),
    ];
    for (start, end) in ranges {
        for reverse in [false, true] {
            let want = c
                .scan("one", start, end, 0, reverse)
                .await
                .expect("scan one");
            let got = c
                .scan("five", start, end, 0, reverse)
                .await
                .expect("scan five");
            assert_eq!(
                rows(&got),
                rows(&want),
                "scan {start:?}..{end:?} reverse={reverse}"
            );
            for limit in [1, 7, 100] {
                let (got, stamps) = paged(&mut c, "five", start, end, limit, reverse).await;
                assert_eq!(rows(&got), rows(&want), "pages of {limit}");
                assert!(
                    stamps.windows(2).all(|w| w[0] == w[1]),
                    "every page at the first page's timestamp: {stamps:?}"
                );
            }
        }
    }

    // One snapshot: rows rewritten after the read timestamp are not seen.
    let first = c
        .scan_page(pb::ScanRequest {
            table: "five".into(),
            limit: 1,
            ..Default::default()
        })
        .await
        .expect("scan");
    let snapshot = first.read_timestamp;
    let before = c.scan("five", b"", b"", 0, false).await.expect("scan");
    for key in [&b"a1"[..], b"k0150", b"zz"] {
        c.put("five", key, b"rewritten").await.expect("put");
    }
    let mut req = pb::ScanRequest {
        table: "five".into(),
        at_timestamp: snapshot,
        limit: 1000,
        ..Default::default()
    };
    let at = c.scan_page(req.clone()).await.expect("scan at");
    assert_eq!(at.read_timestamp, snapshot);
    assert_eq!(
        rows(&at.rows),
        rows(&before),
        "a scan at a timestamp is one snapshot"
    );
    assert!(at.rows.iter().all(|r| r.version <= snapshot));
    req.at_timestamp = 0;
    let now = c.scan_page(req).await.expect("scan now");
    assert_eq!(
        now.rows.iter().filter(|r| r.value == b"rewritten").count(),
        3
    );
    assert!(now.rows.iter().all(|r| r.version <= now.read_timestamp));
    for key in [&b"a1"[..], b"k0150", b"zz"] {
        c.put("one", key, b"rewritten").await.expect("put");
    }

    // Batch gets across tablets, in the order asked, with missing keys.
    let asked: Vec<Vec<u8>> = ["zz", "a1", "nothing", "k0100", "b", "k0111", "0"]
        .iter()
        .map(|k| k.as_bytes().to_vec())
        .collect();
    let batch = |table: &str| pb::BatchGetRequest {
        table: table.into(),
        keys: asked.clone(),
        ..Default::default()
    };
    let want = c
        .kv()
        .batch_get(batch("one"))
        .await
        .expect("one")
        .into_inner();
    let got = c
        .kv()
        .batch_get(batch("five"))
        .await
        .expect("five")
        .into_inner();
    let view = |r: &pb::BatchGetResponse| {
        r.results
            .iter()
            .map(|x| (x.key.clone(), x.found, x.value.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(view(&got), view(&want));
    assert_eq!(got.results.iter().filter(|r| r.found).count(), 5);
    assert!(got.results.iter().all(|r| r.version <= got.read_timestamp));

    // A write batch across tablets is refused whole.
    let err = c
        .write("five", vec![put(b"a7", b"x"), put(b"y7", b"x")])
        .await
        .expect_err("cross-tablet batch");
    assert_eq!(err.kind, ErrorKind::CrossTablet, "{err}");
    assert_eq!(
        c.get("five", b"a7").await.expect("get"),
        None,
        "nothing written"
    );

    // A range deletion over four tablets deletes what the same deletion on one does.
    let deleted_one = c.delete_range("one", b"a5", b"m\0").await.expect("one");
    let deleted_five = c.delete_range("five", b"a5", b"m\0").await.expect("five");
    assert_eq!(deleted_five, deleted_one);
    assert!(deleted_one > 200, "{deleted_one}");
    let want = c.scan("one", b"", b"", 0, false).await.expect("scan");
    let got = c.scan("five", b"", b"", 0, false).await.expect("scan");
    assert_eq!(rows(&got), rows(&want));

    // The CLI: describe lists every tablet; a scan spans them from any node.
    let o = cluster
        .node(1)
        .cli(&["--json", "table", "describe", "five"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    let tablets = v["tablets"].as_array().expect("tablets");
    assert_eq!(tablets.len(), 5);
    for (t, start) in tablets.iter().zip(["", "b", "k0100", "k0200", "m"]) {
        assert_eq!(t["start"], start);
        assert_eq!(t["generation"], 1);
        assert!(t["master"].as_u64().is_some_and(|m| m > 0));
    }
    for node in 0..3 {
        let one = cluster.node(node).cli(&["scan", "one"]);
        let five = cluster.node(node).cli(&["scan", "five"]);
        assert!(five.status.success(), "{}", stderr(&five));
        assert_eq!(stdout(&five), stdout(&one));
        let one = cluster
            .node(node)
            .cli(&["scan", "one", "--reverse", "--limit", "3"]);
        let five = cluster
            .node(node)
            .cli(&["scan", "five", "--reverse", "--limit", "3"]);
        assert_eq!(stdout(&five), stdout(&one));
        assert_eq!(stdout(&five).lines().count(), 3);
    }
}

/// A split by hand through the CLI of a node that does not master the tablet: two
/// tablets in the next generation, the same rows, and both halves take writes.
async fn split_by_hand(cluster: &TestCluster) {
    let mut c = cluster.client(0).await.expect("connect");
    let before = c.scan("one", b"", b"", 0, false).await.expect("scan");
    let t = c.describe_table("one").await.expect("describe");
    let master = t.tablets[0].master;
    let at = cluster.index_of(master).expect("the master's node");
    let other = (at + 1) % 3;
    let o = cluster
        .node(other)
        .cli(&["--json", "table", "split", "one", "k0150"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    let tablets = v["tablets"].as_array().expect("tablets");
    assert_eq!(tablets.len(), 2, "{v}");
    assert_eq!(
        (tablets[0]["start"].clone(), tablets[1]["start"].clone()),
        ("".into(), "k0150".into())
    );
    assert!(tablets.iter().all(|t| t["generation"] == 2), "{v}");
    let after = c.scan("one", b"", b"", 0, false).await.expect("scan");
    assert_eq!(
        rows(&after),
        rows(&before),
        "a split moves and loses nothing"
    );
    for key in [&b"a9"[..], b"k0151", b"zzz"] {
        let version = c
            .put("one", key, b"after")
            .await
            .expect("put after the split");
        let got = c.get("one", key).await.expect("get").expect("found");
        assert_eq!(
            (got.value.as_slice(), got.version),
            (&b"after"[..], version)
        );
    }
    let o = cluster.node(other).cli(&["table", "split", "one", "k0150"]);
    assert!(
        !o.status.success(),
        "a split at a tablet's start is refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_of_many_tablets() {
    let cluster = TestCluster::builder().build().await.expect("cluster");
    split_keys_and_spanning_requests(&cluster).await;
    split_by_hand(&cluster).await;
}
