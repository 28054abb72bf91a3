//! Rollups: a week past raw retention is summed up into 5-minute buckets, its raw
//! samples deleted, and queries over it answered from the buckets — equal to the
//! raw answers for `min/max/sum/count/avg_over_time` over whole buckets and for
//! plain selectors at bucket ends, close for `rate`.

use super::*;

const MINUTE: i64 = 60_000;

fn range_query(
    node: &TestNode,
    q: &str,
    start_ms: i64,
    end_ms: i64,
) -> BTreeMap<String, Vec<(f64, String)>> {
    let path = format!(
        "/prometheus/old/api/v1/query_range?query={}&start={}&end={}&step=300",
        enc(q),
        start_ms as f64 / 1000.0,
        end_ms as f64 / 1000.0
    );
    let (code, v) = get_json(node.http, &path);
    assert_eq!(code, 200, "{q}: {v}");
    matrix(&v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weeks_past_retention_are_answered_from_their_rollups() {
    let node = TestNode::start_with(&[
        "--grpc-addr".into(),
        "127.0.0.1:0".into(),
        "--http-addr".into(),
        "127.0.0.1:0".into(),
        "--timeseries-keeper-ms".into(),
        "200".into(),
    ])
    .expect("node");
    let mut c = node.client().await.expect("client");
    // Rollups without raw retention, or not longer than it, are refused.
    let out = node.cli(&[
        "table",
        "create",
        "old",
        "--policy",
        "timeseries",
        "--rollup-retention-weeks",
        "5",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("rollup_retention_weeks"),
        "{}",
        stderr(&out)
    );
    let out = node.cli(&[
        "table",
        "create",
        "old",
        "--policy",
        "timeseries",
        "--out-of-order-window",
        "30d",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Two hours of a gauge (whole numbers, so sums are exact) and of a counter that
    // resets once, every 15 s, three weeks ago; no sample on a bucket's edge.
    let t0 = {
        let t = now_ms() - 21 * 86_400_000;
        t - t.rem_euclid(5 * MINUTE)
    };
    let times: Vec<i64> = (0..480).map(|i| t0 + 7_000 + i * 15_000).collect();
    let gauge: Vec<(i64, f64)> = times
        .iter()
        .enumerate()
        .map(|(i, t)| (*t, ((i * 37) % 101) as f64))
        .collect();
    let mut total = 0.0;
    let counter: Vec<(i64, f64)> = times
        .iter()
        .enumerate()
        .map(|(i, t)| {
            total = if i == 240 {
                0.0
            } else {
                total + (i % 5) as f64
            };
            (*t, total)
        })
        .collect();
    c.timeseries()
        .write(pb::TsWriteRequest {
            table: "old".into(),
            series: vec![
                ts_series(&[("__name__", "temp"), ("room", "a")], &gauge),
                ts_series(&[("__name__", "reqs_total"), ("room", "a")], &counter),
            ],
            acks: None,
        })
        .await
        .expect("three weeks ago");

    let (start, end) = (t0 + 60 * MINUTE, t0 + 120 * MINUTE);
    let exact = [
        "count_over_time(temp[30m])",
        "sum_over_time(temp[30m])",
        "min_over_time(temp[30m])",
        "max by (room) (max_over_time(temp[30m]))",
        "avg_over_time(temp[30m])",
        "temp",
        "temp * 2",
    ];
    let raw: Vec<_> = exact
        .iter()
        .map(|q| range_query(&node, q, start, end))
        .collect();
    let raw_rate = range_query(&node, "rate(reqs_total[30m])", start, end);
    for (q, a) in exact.iter().zip(&raw) {
        assert_eq!(a.len(), 1, "{q}: one series");
        assert_eq!(a.values().next().unwrap().len(), 13, "{q}: every step");
    }
    let points_at = |node: &TestNode, t: i64| {
        let path = format!(
            "/prometheus/old/api/v1/query?query={}&time={}",
            enc("temp[10m]"),
            t as f64 / 1000.0
        );
        let (code, v) = get_json(node.http, &path);
        assert_eq!(code, 200, "{v}");
        v["data"]["result"][0]["values"]
            .as_array()
            .map_or(0, |a| a.len())
    };
    assert_eq!(points_at(&node, start), 40, "raw: a sample every 15 s");

    // Raw retention of this week only, rollups for eight: the keeper sums the week
    // up and deletes its raw samples.
    let out = node.cli(&[
        "table",
        "set",
        "old",
        "--retention-weeks",
        "1",
        "--rollup-retention-weeks",
        "8",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // From the rollups: a sample per five minutes.
    wait_until("the keeper rolls the week up", CLUSTER_WAIT, || async {
        points_at(&node, start) == 2
    })
    .await
    .unwrap();
    assert!(
        node.log_text()
            .contains("rolled up a week past raw retention")
    );
    for (q, before) in exact.iter().zip(&raw) {
        let after = range_query(&node, q, start, end);
        agree(before, &after).unwrap_or_else(|e| panic!("{q} from the rollups: {e}"));
    }
    let rolled_rate = range_query(&node, "rate(reqs_total[30m])", start, end);
    let (a, b) = (
        raw_rate.values().next().unwrap(),
        rolled_rate.values().next().unwrap(),
    );
    assert_eq!(a.len(), b.len());
    for ((t, x), (_, y)) in a.iter().zip(b) {
        let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
        assert!(
            (x - y).abs() <= 0.1 * x.abs().max(y.abs()),
            "rate at {t}: {x} raw, {y} from the rollups"
        );
    }
    let out = node.cli(&[
        "--json", "ts", "series", "old", "temp", "--start", "now-30d",
    ]);
    assert!(
        stdout(&out).contains("\"room\""),
        "the series of a rolled-up week are still listed, as long as the rollups are kept: {}",
        stdout(&out)
    );

    // Widening raw retention brings no raw sample back (they are deleted); the
    // rollups stay and serve again once the week is past raw retention again.
    let out = node.cli(&[
        "table",
        "set",
        "old",
        "--retention-weeks",
        "10",
        "--rollup-retention-weeks",
        "0",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(points_at(&node, start), 0, "the raw samples were deleted");
    let out = node.cli(&[
        "table",
        "set",
        "old",
        "--retention-weeks",
        "1",
        "--rollup-retention-weeks",
        "8",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    agree(&raw[0], &range_query(&node, exact[0], start, end)).unwrap();

    // Past the rollups' retention, the week goes whole.
    let out = node.cli(&["table", "set", "old", "--rollup-retention-weeks", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until("the keeper drops the week", CLUSTER_WAIT, || async {
        node.log_text().contains("dropped weeks past retention")
    })
    .await
    .unwrap();
    assert!(range_query(&node, exact[0], start, end).is_empty());
    let out = node.cli(&[
        "--json", "ts", "series", "old", "temp", "--start", "now-30d",
    ]);
    assert!(!stdout(&out).contains("\"room\""), "{}", stdout(&out));
    let out = node.cli(&["table", "set", "old", "--rollup-retention-weeks", "1"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "rollups no longer than raw retention"
    );
}
