//! The `timeseries` policy through its public interfaces: the CLI, the gRPC
//! Timeseries service, the Prometheus HTTP API and remote-write receiver — with a
//! real Prometheus server (Debian's `prometheus`) remote-writing into a 3-node
//! cluster and the same range queries asked of both, and a master killed during
//! ingestion with acks=all.

use datalayer_api::v1 as pb;
use datalayer_client::TableOptions;
use datalayer_tests::{CLUSTER_WAIT, TestCluster, TestNode, free_port, stderr, stdout, wait_until};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[path = "t80_timeseries/rollups.rs"]
mod rollups;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Percent-encodes a query parameter.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A minimal HTTP/1.1 request with a protobuf body: (status, body).
fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    http_typed(addr, method, path, "application/x-protobuf", body)
}

/// A minimal HTTP/1.1 request: (status, body).
fn http_typed(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, String) {
    let mut s =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\nContent-Type: {content_type}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let code = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    // Chunked bodies: the JSON is one chunk; strip the chunk framing.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((len, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&after[..n]);
            rest = &after[n + 2..];
        }
        out
    } else {
        body.to_string()
    };
    (code, body)
}

fn get_json(addr: SocketAddr, path: &str) -> (u16, Json) {
    let (code, body) = http(addr, "GET", path, b"");
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body:?}"));
    (code, json)
}

fn ts_series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> pb::TsSeries {
    pb::TsSeries {
        labels: labels
            .iter()
            .map(|(n, v)| pb::TsLabel {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect(),
        samples: samples
            .iter()
            .map(|&(timestamp_ms, value)| pb::TsSample {
                timestamp_ms,
                value,
            })
            .collect(),
    }
}

fn detail(status: &tonic::Status) -> pb::ErrorDetail {
    prost::Message::decode(status.details()).expect("an error detail")
}

/// Each series of a range answer (its `metric` as text) with its points.
fn matrix(answer: &Json) -> BTreeMap<String, Vec<(f64, String)>> {
    assert_eq!(answer["status"], "success", "{answer}");
    answer["data"]["result"]
        .as_array()
        .expect("a result")
        .iter()
        .map(|s| {
            let points = s["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_f64().unwrap(), p[1].as_str().unwrap().to_string()))
                .collect();
            (s["metric"].to_string(), points)
        })
        .collect()
}

/// Whether two range answers agree: the same series, the same times, values equal to
/// within 1e-9 relative (sums over series may add in another order).
fn agree(
    a: &BTreeMap<String, Vec<(f64, String)>>,
    b: &BTreeMap<String, Vec<(f64, String)>>,
) -> Result<(), String> {
    if a.keys().collect::<Vec<_>>() != b.keys().collect::<Vec<_>>() {
        return Err(format!(
            "series differ: {:?} vs {:?}",
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>()
        ));
    }
    for (k, pa) in a {
        let pb = &b[k];
        if pa.len() != pb.len() {
            return Err(format!("{k}: {} points vs {}", pa.len(), pb.len()));
        }
        for ((ta, va), (tb, vb)) in pa.iter().zip(pb) {
            let (x, y): (f64, f64) = (va.parse().unwrap(), vb.parse().unwrap());
            let same = (x.is_nan() && y.is_nan())
                || x == y
                || (x - y).abs() <= 1e-9 * x.abs().max(y.abs());
            if ta != tb || !same {
                return Err(format!("{k}: ({ta}, {va}) vs ({tb}, {vb})"));
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_takes_samples_and_answers_promql_through_every_interface() {
    let node = TestNode::start_with(&[
        "--grpc-addr".into(),
        "127.0.0.1:0".into(),
        "--http-addr".into(),
        "127.0.0.1:0".into(),
        "--timeseries-keeper-ms".into(),
        "200".into(),
        "--timeseries-hot-writes-per-sec".into(),
        "50".into(),
    ])
    .expect("node");
    let out = node.cli(&[
        "table",
        "create",
        "cpu",
        "--policy",
        "timeseries",
        "--out-of-order-window",
        "30d",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let described = node.cli(&["--json", "table", "describe", "cpu"]);
    let described: Json = serde_json::from_str(&stdout(&described)).unwrap();
    assert_eq!(described["policy"], "timeseries");
    assert_eq!(
        described["options"]["out_of_order_window_ms"],
        30 * 86_400_000u64
    );

    // The CLI writes lines given and lines from stdin.
    let t0 = (now_ms() / 60_000 - 30) * 60_000;
    let lines: Vec<String> = (0..20)
        .map(|i| {
            format!(
                "cpu_seconds_total{{host=\"a\",mode=\"user\"}} {} {}",
                i * 15,
                t0 + i * 15_000
            )
        })
        .collect();
    let mut args = vec!["ts", "write", "cpu"];
    args.extend(lines.iter().map(String::as_str));
    let out = node.cli(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("wrote 20 samples"),
        "{}",
        stdout(&out)
    );
    let stdin_lines: String = (0..20)
        .map(|i| {
            format!(
                "cpu_seconds_total{{host=\"b\",mode=\"user\"}} {} {}\n",
                i * 30,
                t0 + i * 15_000
            )
        })
        .collect();
    let mut child = Command::new(datalayer_tests::binary())
        .args(["--addr", &node.grpc.to_string(), "ts", "write", "cpu"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin_lines.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());

    // Range query through the CLI: rate of a counter that grows 1/s and 2/s.
    let end = (t0 + 19 * 15_000) / 1000;
    let out = node.cli(&[
        "--json",
        "ts",
        "query",
        "cpu",
        "sum by (host) (rate(cpu_seconds_total[1m]))",
        "--start",
        &(end - 60).to_string(),
        "--end",
        &end.to_string(),
        "--step",
        "30s",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let answer: Json = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(answer["resultType"], "matrix");
    let rates: BTreeMap<String, Vec<String>> = answer["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["metric"]["host"].as_str().unwrap().to_string(),
                s["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p[1].as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(rates["a"], ["1", "1", "1"]);
    assert_eq!(rates["b"], ["2", "2", "2"]);

    // Series and labels through the CLI.
    let out = node.cli(&[
        "--json",
        "ts",
        "series",
        "cpu",
        "cpu_seconds_total{host=~\"a|b\"}",
        "--start",
        &(t0 / 1000).to_string(),
    ]);
    let series: Json = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(series["series"].as_array().unwrap().len(), 2, "{series}");

    // gRPC: the structured query equals its PromQL.
    let mut c = node.client().await.unwrap();
    let structured = c
        .timeseries()
        .query(pb::TsQueryRequest {
            table: "cpu".into(),
            selector: "cpu_seconds_total".into(),
            function: "increase".into(),
            aggregation: "sum".into(),
            start_ms: end * 1000 - 60_000,
            end_ms: end * 1000,
            step_ms: 60_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        structured.query,
        "sum by () (increase(cpu_seconds_total[60000ms]))"
    );
    assert_eq!(structured.series.len(), 1);
    // 1/s + 2/s over a minute.
    assert_eq!(structured.series[0].samples.last().unwrap().value, 180.0);

    // The HTTP API answers in Prometheus's JSON.
    let path = format!(
        "/prometheus/cpu/api/v1/query?query={}&time={end}",
        enc("cpu_seconds_total{host=\"a\"}")
    );
    let (code, v) = get_json(node.http, &path);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"]["resultType"], "vector");
    assert_eq!(v["data"]["result"][0]["value"][1], "285");
    assert_eq!(
        v["data"]["result"][0]["metric"]["__name__"],
        "cpu_seconds_total"
    );
    // Grafana posts its queries as a form.
    let form = format!("query={}&time={end}", enc("cpu_seconds_total{host=\"b\"}"));
    let (code, body) = http_typed(
        node.http,
        "POST",
        "/prometheus/cpu/api/v1/query",
        "application/x-www-form-urlencoded",
        form.as_bytes(),
    );
    let v: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (code, v["data"]["result"][0]["value"][1].as_str()),
        (200, Some("570")),
        "{v}"
    );
    let (_, v) = get_json(node.http, "/prometheus/cpu/api/v1/metadata");
    assert_eq!(v["data"], serde_json::json!({}));
    let (_, v) = get_json(
        node.http,
        &format!("/prometheus/cpu/api/v1/labels?start={}", t0 / 1000),
    );
    assert_eq!(v["data"], serde_json::json!(["__name__", "host", "mode"]));
    let (_, v) = get_json(
        node.http,
        &format!(
            "/prometheus/cpu/api/v1/label/host/values?start={}",
            t0 / 1000
        ),
    );
    assert_eq!(v["data"], serde_json::json!(["a", "b"]));
    let (_, v) = get_json(
        node.http,
        &format!(
            "/prometheus/cpu/api/v1/series?match[]={}&start={}",
            enc("{mode=\"user\"}"),
            t0 / 1000
        ),
    );
    assert_eq!(v["data"].as_array().unwrap().len(), 2, "{v}");

    // Bad queries: a clear JSON error each.
    for (query, code, kind) in [
        ("sum(", 400, "bad_data"),
        ("cpu_seconds_total / cpu_seconds_total", 422, "execution"),
        ("{host=~\".*\"}", 400, "bad_data"),
    ] {
        let (got, v) = get_json(
            node.http,
            &format!("/prometheus/cpu/api/v1/query?query={}", enc(query)),
        );
        assert_eq!(
            (got, v["status"].as_str(), v["errorType"].as_str()),
            (code, Some("error"), Some(kind)),
            "{query}: {v}"
        );
    }
    let (code, v) = get_json(node.http, "/prometheus/nosuch/api/v1/query?query=up");
    assert_eq!((code, v["errorType"].as_str()), (404, Some("not_found")));
    let (code, _) = http(
        node.http,
        "POST",
        "/prometheus/cpu/api/v1/write",
        b"not snappy at all",
    );
    assert_eq!(code, 400);

    // Bad writes are refused whole, naming what is wrong; nothing is written.
    let before = c
        .timeseries()
        .series(pb::TsSeriesRequest {
            table: "cpu".into(),
            r#match: vec!["{__name__=~\".+\"}".into()],
            start_ms: t0 - 40 * 86_400_000,
            end_ms: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .series
        .len();
    let now = now_ms();
    let good = ts_series(&[("__name__", "fresh"), ("k", "v")], &[(now, 1.0)]);
    for (bad, field, says) in [
        (
            ts_series(&[("__name__", "x"), ("__bad", "v")], &[(now, 1.0)]),
            "series[1].labels",
            "reserved",
        ),
        (
            ts_series(&[("__name__", "1x")], &[(now, 1.0)]),
            "series[1].labels",
            "metric name",
        ),
        (
            ts_series(&[("job", "v")], &[(now, 1.0)]),
            "series[1].labels",
            "no metric name",
        ),
        (
            ts_series(&[("__name__", "x")], &[]),
            "series[1].samples",
            "at least one sample",
        ),
        (
            ts_series(&[("__name__", "x")], &[(now - 40 * 86_400_000, 1.0)]),
            "samples",
            "out-of-order window",
        ),
        (
            ts_series(&[("__name__", "x")], &[(now + 3_600_000, 1.0)]),
            "samples",
            "ahead",
        ),
    ] {
        let e = c
            .timeseries()
            .write(pb::TsWriteRequest {
                table: "cpu".into(),
                series: vec![good.clone(), bad],
                acks: None,
            })
            .await
            .expect_err("refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        let d = detail(&e);
        assert_eq!(d.field, field, "{e}");
        assert!(d.message.contains(says), "{says}: {}", d.message);
    }
    let after = c
        .timeseries()
        .series(pb::TsSeriesRequest {
            table: "cpu".into(),
            r#match: vec!["{__name__=~\".+\"}".into()],
            start_ms: t0 - 40 * 86_400_000,
            end_ms: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .series
        .len();
    assert_eq!(before, after, "a refused write wrote nothing");

    // The cardinality guard: at most 3 series a week, then a clear refusal.
    let out = node.cli(&["table", "set", "cpu", "--max-series-per-week", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    c.timeseries()
        .write(pb::TsWriteRequest {
            table: "cpu".into(),
            series: vec![good.clone()],
            acks: None,
        })
        .await
        .expect("the third series");
    let e = c
        .timeseries()
        .write(pb::TsWriteRequest {
            table: "cpu".into(),
            series: vec![ts_series(&[("__name__", "fourth")], &[(now, 1.0)])],
            acks: None,
        })
        .await
        .expect_err("a fourth series");
    assert!(detail(&e).message.contains("max_series_per_week"), "{e}");
    let out = node.cli(&["ts", "write", "cpu", "fourth 1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("at most 3 per week"),
        "{}",
        stderr(&out)
    );

    // Retention: weeks past it are refused, skipped by queries, and their rows
    // deleted by the keeper (so that widening retention again brings nothing back).
    let week = 7 * 86_400_000;
    let old = [
        (now - 3 * week, 3.0),
        (now - 2 * week, 2.0),
        (now - week, 1.0),
        (now, 0.0),
    ];
    let out = node.cli(&["table", "set", "cpu", "--max-series-per-week", "100"]);
    assert!(out.status.success());
    c.timeseries()
        .write(pb::TsWriteRequest {
            table: "cpu".into(),
            series: vec![ts_series(&[("__name__", "aged")], &old)],
            acks: None,
        })
        .await
        .expect("samples of four weeks");
    let count = |c: &mut datalayer_client::Client| {
        let mut c = c.clone();
        async move {
            c.timeseries()
                .query(pb::TsQueryRequest {
                    table: "cpu".into(),
                    query: "count_over_time(aged[30d])".into(),
                    end_ms: now_ms(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .series
                .first()
                .map_or(0.0, |s| s.samples[0].value)
        }
    };
    assert_eq!(count(&mut c).await, 4.0);
    let out = node.cli(&["table", "set", "cpu", "--retention-weeks", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The current week and the one before are kept.
    let kept = old
        .iter()
        .filter(|(t, _)| (t / 86_400_000 + 3) / 7 >= (now / 86_400_000 + 3) / 7 - 1)
        .count();
    assert_eq!(count(&mut c).await, kept as f64);
    let e = c
        .timeseries()
        .write(pb::TsWriteRequest {
            table: "cpu".into(),
            series: vec![ts_series(&[("__name__", "aged")], &old[..1])],
            acks: None,
        })
        .await
        .expect_err("past retention");
    assert!(detail(&e).message.contains("retention"), "{e}");
    wait_until(
        "the keeper drops the weeks past retention",
        CLUSTER_WAIT,
        || async { node.log_text().contains("dropped weeks past retention") },
    )
    .await
    .unwrap();
    let out = node.cli(&["table", "set", "cpu", "--retention-weeks", "0"]);
    assert!(out.status.success());
    assert_eq!(
        count(&mut c).await,
        kept as f64,
        "dropped weeks stay dropped"
    );
    let out = node.cli(&["table", "set", "cpu", "--retention-weeks", "9999"]);
    assert_eq!(out.status.code(), Some(2), "a bad option is refused");

    // A hot week splits by series id, into halves then quarters, while every
    // sample written stays readable.
    let out = node.cli(&["table", "create", "hot", "--policy", "timeseries"]);
    assert!(out.status.success());
    let base = now_ms() - 600_000;
    let started = std::time::Instant::now();
    let mut rounds = 0i64;
    loop {
        let series = (0..40)
            .map(|i| {
                ts_series(
                    &[("__name__", "hot"), ("i", &i.to_string())],
                    &[(base + rounds * 100, rounds as f64)],
                )
            })
            .collect();
        c.timeseries()
            .write(pb::TsWriteRequest {
                table: "hot".into(),
                series,
                acks: None,
            })
            .await
            .expect("a write while the week splits");
        rounds += 1;
        if c.describe_table("hot").await.unwrap().tablets.len() >= 3 {
            break;
        }
        assert!(
            started.elapsed() < CLUSTER_WAIT,
            "no two hot splits after {rounds} writes"
        );
    }
    let table = c.describe_table("hot").await.unwrap();
    let week_starts: Vec<String> = table
        .tablets
        .iter()
        .map(|t| format!("{:x?}", t.start))
        .collect();
    assert!(
        table.tablets.iter().skip(1).all(|t| t.start.len() == 18),
        "split at series-id bounds: {week_starts:?}"
    );
    let answer = c
        .timeseries()
        .query(pb::TsQueryRequest {
            table: "hot".into(),
            query: "count_over_time(hot[1h])".into(),
            end_ms: now_ms(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.series.len(), 40);
    for s in &answer.series {
        assert_eq!(
            s.samples[0].value, rounds as f64,
            "every sample of {:?} read back across the split",
            s.labels
        );
    }
}

/// Prometheus's config: scrape itself and the nodes every second, remote-write to
/// `write_url`.
fn prometheus_config(self_addr: &str, targets: &[String], write_url: &str) -> String {
    let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['{self_addr}']\n  - job_name: datalayer\n    static_configs:\n      - targets: [{}]\nremote_write:\n  - url: {write_url}\n    queue_config:\n      batch_send_deadline: 500ms\n      max_samples_per_send: 500\n      min_backoff: 50ms\n      max_backoff: 1s\n",
        targets.join(", ")
    )
}

struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_prometheus(targets: &[String], write_url: &str) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        prometheus_config(&addr.to_string(), targets, write_url),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("Debian's prometheus (scripts/test.sh installs it)");
    Prometheus {
        child,
        addr,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_remote_writes_into_three_nodes_and_both_answer_alike() {
    let mut cluster = TestCluster::builder()
        .nodes(3)
        .args(&["--timeseries-keeper-ms", "1000"])
        .build()
        .await
        .expect("cluster");
    let mut c = cluster.client(0).await.unwrap();
    let opts = TableOptions {
        policy: pb::Policy::Timeseries,
        ..Default::default()
    };
    c.create_table("prom", opts).await.expect("create");

    // A real Prometheus scrapes itself and the three nodes, and remote-writes to
    // node 2; queries go to node 3.
    let targets: Vec<String> = (0..3).map(|i| cluster.node(i).http.to_string()).collect();
    let write_url = format!(
        "http://{}/prometheus/prom/api/v1/write",
        cluster.node(1).http
    );
    let prometheus = start_prometheus(&targets, &write_url);
    let asked = cluster.node(2).http;
    wait_until(
        "twenty seconds of samples in DataLayer",
        Duration::from_secs(90),
        || async {
            let (_, v) = get_json(
                asked,
                &format!(
                    "/prometheus/prom/api/v1/query?query={}",
                    enc("count_over_time(up{job=\"prometheus\"}[1m])")
                ),
            );
            v["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(0.0)
                >= 22.0
        },
    )
    .await
    .expect("remote write reaches DataLayer");

    let end = now_ms() / 1000 - 3;
    let start = end - 15;
    let expressions = [
        "up",
        "count by (job) (up)",
        "rate(prometheus_http_requests_total[5s])",
        "sum by (job) (rate(process_cpu_seconds_total[10s]))",
        "irate(process_cpu_seconds_total[5s])",
        "increase(prometheus_tsdb_head_samples_appended_total[10s])",
        "max_over_time(process_resident_memory_bytes[5s])",
        "avg without (instance) (scrape_duration_seconds) * 1000",
        "topk(1, sum by (job) (scrape_samples_scraped))",
        "sum by (job) (up) > 1",
        "max by (instance) (datalayer_store_records_appended_total) * 2",
    ];
    for expr in expressions {
        let path = |prefix: &str| {
            format!(
                "{prefix}/api/v1/query_range?query={}&start={start}&end={end}&step=1",
                enc(expr)
            )
        };
        let mut last = String::new();
        // Remote write runs a moment behind the scrapes: the answers agree once it
        // has caught up with `end`.
        let agreed = wait_until(
            &format!("{expr}: DataLayer answers as Prometheus"),
            Duration::from_secs(30),
            || {
                let (p, d) = (
                    get_json(prometheus.addr, &path("")).1,
                    get_json(asked, &path("/prometheus/prom")).1,
                );
                let verdict = agree(&matrix(&p), &matrix(&d));
                let ok = verdict.is_ok() && !matrix(&p).is_empty();
                last = verdict
                    .err()
                    .unwrap_or_else(|| "Prometheus answered nothing".into());
                async move { ok }
            },
        )
        .await;
        if agreed.is_err() {
            // What each holds of the raw samples, to tell a lost sample from a wrong
            // computation.
            let raw = |addr, prefix: &str, q: &str| {
                get_json(
                    addr,
                    &format!("{prefix}/api/v1/query?query={}&time={end}", enc(q)),
                )
                .1["data"]["result"]
                    .to_string()
            };
            let q = "prometheus_http_requests_total{handler=\"/metrics\"}[20s]";
            panic!(
                "{expr}: {last}\nPrometheus: {}\nDataLayer: {}\nfailed sends: {}",
                raw(prometheus.addr, "", q),
                raw(asked, "/prometheus/prom", q),
                raw(
                    prometheus.addr,
                    "",
                    "prometheus_remote_storage_samples_failed_total"
                )
            );
        }
    }
    drop(prometheus);

    // A master killed while a writer writes with acks=all: every acknowledged
    // sample is there afterwards.
    let table = c.describe_table("prom").await.unwrap();
    let master = cluster.index_of(table.tablets[0].master).unwrap();
    let via = (master + 1) % 3;
    let mut w = cluster.client(via).await.unwrap();
    let base = now_ms() - 60_000;
    let mut acked = Vec::new();
    let write = |w: &mut datalayer_client::Client, i: i64| {
        let mut w = w.clone();
        async move {
            w.timeseries()
                .write(pb::TsWriteRequest {
                    table: "prom".into(),
                    series: vec![ts_series(
                        &[("__name__", "ingest"), ("writer", "t80")],
                        &[(base + i * 100, i as f64)],
                    )],
                    acks: Some(datalayer_client::acks_all()),
                })
                .await
        }
    };
    // A sample written twice is stored once, so a writer may send a failed write
    // again (as Prometheus does): each sample is acknowledged in the end.
    for i in 0..120 {
        if i == 40 {
            cluster.node_mut(master).kill();
        }
        for attempt in 0.. {
            match write(&mut w, i).await {
                Ok(_) => {
                    acked.push(i);
                    break;
                }
                Err(e) if attempt < 100 => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("sample {i} is never acknowledged: {e}"),
            }
        }
    }
    assert_eq!(acked.len(), 120);
    let answer = w
        .timeseries()
        .query(pb::TsQueryRequest {
            table: "prom".into(),
            query: "ingest".into(),
            start_ms: base,
            end_ms: base + 120 * 100,
            step_ms: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let held: BTreeMap<i64, f64> = answer.series[0]
        .samples
        .iter()
        .map(|s| (s.timestamp_ms, s.value))
        .collect();
    for i in acked {
        // Each step's value is the last sample at or before it: the sample itself.
        assert_eq!(
            held.get(&(base + i * 100)),
            Some(&(i as f64)),
            "acknowledged sample {i} lost"
        );
    }
}
