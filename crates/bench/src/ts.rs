//! `datalayer bench-ts`: time-series ingestion and queries, DataLayer against a
//! Prometheus server (started with `--web.enable-remote-write-receiver`), sent the
//! very same remote-write payloads in the same run.
//!
//! - Ingestion: `--series` active series (each run its own metric), `--samples`
//!   samples each at 15 s, ending a minute ago, in remote-write requests of
//!   `--batch` samples (one sample per series per request, as Prometheus sends),
//!   from `--clients` senders each owning a share of the series and sending them in
//!   time order. Samples per second of wall time, and per CPU second of the server
//!   process when its pid is given (`/proc/PID/stat`).
//! - Queries: `--query-series` series over `--query-hours` at 15 s, then
//!   `sum by (job) (rate(bench_q[5m]))` over the whole span at a 15 s step, asked
//!   `--queries` times of each; latency p50 and p99.
//! - It prints the samples stored in each, for `scripts/bench-ts.sh` to divide
//!   each one's bytes on disk by.

use anyhow::{Context, bail};
use datalayer_api::prompb::{Label, Sample, TimeSeries, WriteRequest};
use std::time::Instant;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Flags of `datalayer bench-ts`.
#[derive(Debug, clap::Args)]
pub struct TsBenchArgs {
    /// DataLayer's Prometheus prefix: http://HOST:PORT/prometheus/TABLE.
    #[arg(long)]
    datalayer: String,
    /// Prometheus's base URL: http://HOST:PORT.
    #[arg(long)]
    prometheus: String,
    /// Active series of each ingestion run.
    #[arg(long, value_delimiter = ',', default_value = "1000,100000")]
    series: Vec<usize>,
    /// Samples per series in an ingestion run.
    #[arg(long, default_value_t = 20)]
    samples: usize,
    /// Samples per remote-write request.
    #[arg(long, default_value_t = 2000)]
    batch: usize,
    /// Concurrent senders.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Series of the query data set.
    #[arg(long, default_value_t = 1000)]
    query_series: usize,
    /// Hours of the query data set (at 15 s).
    #[arg(long, default_value_t = 24)]
    query_hours: usize,
    /// Times each query is asked.
    #[arg(long, default_value_t = 10)]
    queries: usize,
    /// DataLayer's gRPC address: when given, the week's chunks are then split by
    /// hand into 2 and 4 sub-ranges by series id, and a one-series query and the
    /// 1,000-series one are timed at each (hash splits' effect on queries).
    #[arg(long)]
    datalayer_grpc: Option<String>,
    /// The DataLayer node's pid, for its CPU time.
    #[arg(long)]
    datalayer_pid: Option<u32>,
    /// Prometheus's pid, for its CPU time.
    #[arg(long)]
    prometheus_pid: Option<u32>,
}

const STEP_MS: i64 = 15_000;

/// `http://host:port/path` → (`host:port`, `/path`).
fn split_url(url: &str) -> anyhow::Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url:?}: only http:// URLs"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    Ok((
        host.to_string(),
        format!("/{path}").trim_end_matches('/').to_string(),
    ))
}

/// One HTTP/1.1 keep-alive connection.
struct Http {
    host: String,
    conn: BufReader<TcpStream>,
}

impl Http {
    async fn connect(host: &str) -> anyhow::Result<Http> {
        let stream = TcpStream::connect(host).await?;
        stream.set_nodelay(true)?;
        Ok(Http {
            host: host.to_string(),
            conn: BufReader::new(stream),
        })
    }

    /// Sends a request and reads the answer: (status, body).
    async fn call(
        &mut self,
        method: &str,
        path: &str,
        headers: &str,
        body: &[u8],
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n{headers}\r\n",
            self.host,
            body.len()
        );
        let w = self.conn.get_mut();
        w.write_all(head.as_bytes()).await?;
        w.write_all(body).await?;
        let mut line = String::new();
        self.conn.read_line(&mut line).await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let (mut length, mut chunked) = (0usize, false);
        loop {
            line.clear();
            self.conn.read_line(&mut line).await?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let lower = l.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse()?;
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.conn.read_line(&mut line).await?;
                let n = usize::from_str_radix(line.trim(), 16)?;
                let mut chunk = vec![0; n + 2];
                self.conn.read_exact(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else {
            body.resize(length, 0);
            self.conn.read_exact(&mut body).await?;
        }
        Ok((status, body))
    }
}

/// The remote-write payloads of `series` series × `samples` samples ending at
/// `end_ms`, by sender: each sender's requests in time order.
fn payloads(
    metric: &str,
    series: usize,
    samples: usize,
    end_ms: i64,
    batch: usize,
    clients: usize,
) -> Vec<Vec<Vec<u8>>> {
    let per_request = batch.max(1);
    let mut out = vec![Vec::new(); clients];
    let groups: Vec<std::ops::Range<usize>> = (0..series)
        .step_by(per_request)
        .map(|s| s..(s + per_request).min(series))
        .collect();
    for step in 0..samples {
        let t = end_ms - (samples - 1 - step) as i64 * STEP_MS;
        for (g, range) in groups.iter().enumerate() {
            let request = WriteRequest {
                timeseries: range
                    .clone()
                    .map(|i| TimeSeries {
                        labels: vec![
                            Label {
                                name: "__name__".into(),
                                value: metric.into(),
                            },
                            Label {
                                name: "instance".into(),
                                value: format!("host-{i}"),
                            },
                            Label {
                                name: "job".into(),
                                value: format!("job-{}", i % 10),
                            },
                        ],
                        samples: vec![Sample {
                            // A counter rising by about 1/s, a little noisy.
                            value: (step as f64) * 15.0 + ((i * 7 + step * 3) % 5) as f64,
                            timestamp: t,
                        }],
                    })
                    .collect(),
            };
            let raw = prost::Message::encode_to_vec(&request);
            let compressed = snap::raw::Encoder::new()
                .compress_vec(&raw)
                .expect("snappy");
            out[g % clients].push(compressed);
        }
    }
    out
}

/// CPU seconds a process has used.
fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Sends every sender's payloads to `url`; wall seconds.
async fn send(url: &str, senders: &[Vec<Vec<u8>>]) -> anyhow::Result<f64> {
    let (host, path) = split_url(url)?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for payloads in senders.iter().cloned() {
        let (host, path) = (host.clone(), path.clone());
        tasks.push(tokio::spawn(async move {
            let mut http = Http::connect(&host).await?;
            let headers = "Content-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\nX-Prometheus-Remote-Write-Version: 0.1.0\r\n";
            for p in payloads {
                let (status, body) = http.call("POST", &format!("{path}/api/v1/write"), headers, &p).await?;
                if status >= 300 {
                    bail!("{host}{path}: remote write answered {status}: {}", String::from_utf8_lossy(&body));
                }
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Latency of `query_range` of `query` at `url` (p50, p99 in ms) and the answer.
async fn time_query(
    url: &str,
    query: &str,
    start_ms: i64,
    end_ms: i64,
    times: usize,
) -> anyhow::Result<(f64, f64, Vec<u8>)> {
    let (host, path) = split_url(url)?;
    let mut http = Http::connect(&host).await?;
    let enc: String = query
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let target = format!(
        "{path}/api/v1/query_range?query={enc}&start={}&end={}&step=15",
        start_ms / 1000,
        end_ms / 1000
    );
    let mut ms = Vec::new();
    let mut last = Vec::new();
    for _ in 0..times.max(1) {
        let t = Instant::now();
        let (status, body) = http.call("GET", &target, "", b"").await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        if status != 200 {
            bail!(
                "{url}: query answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        last = body;
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    Ok((at(0.5), at(0.99), last))
}

/// Whether two `query_range` answers hold the same series with the same points (to
/// 1e-9 relative: sums may add in another order); or how they differ.
fn agree(a: &serde_json::Value, b: &serde_json::Value) -> String {
    let series = |v: &serde_json::Value| -> std::collections::BTreeMap<String, Vec<(f64, f64)>> {
        v["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let points = s["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        let t = p[0].as_f64().unwrap_or(f64::NAN);
                        let v = p[1]
                            .as_str()
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(f64::NAN);
                        (t, v)
                    })
                    .collect();
                (s["metric"].to_string(), points)
            })
            .collect()
    };
    let (a, b) = (series(a), series(b));
    if a.len() != b.len() || a.keys().ne(b.keys()) {
        return format!("no: {} series against {}", a.len(), b.len());
    }
    for (k, pa) in &a {
        let pb = &b[k];
        if pa.len() != pb.len() {
            return format!("no: {k} has {} points against {}", pa.len(), pb.len());
        }
        for ((ta, va), (tb, vb)) in pa.iter().zip(pb) {
            let close = va == vb || (va - vb).abs() <= 1e-9 * va.abs().max(vb.abs());
            if ta != tb || !close {
                return format!("no: {k} at {ta}: {va} against {vb}");
            }
        }
    }
    format!("yes, {} series", a.len())
}

/// The weeks' chunks split by hand into 1, 2 and 4 sub-ranges by series id (as hot
/// splits cut them), with a one-series query and `many` timed at each.
async fn sub_ranges(
    args: &TsBenchArgs,
    grpc: &str,
    many: &str,
    start: i64,
    end: i64,
) -> anyhow::Result<()> {
    use datalayer_timeseries::{Week, keys};
    let table = args
        .datalayer
        .rsplit('/')
        .next()
        .context("the table is the last part of --datalayer")?;
    let mut c = datalayer_client::Client::connect(grpc).await?;
    let one = "rate(bench_q{instance=\"host-7\"}[5m])";
    println!("hash sub-ranges of the weeks' chunks (by series id), DataLayer only:");
    for (n, cuts) in [(1, vec![]), (2, vec![(1, 1)]), (4, vec![(1, 2), (3, 2)])] {
        for week in Week::covering(start, end) {
            for &(i, bits) in &cuts {
                // Splitting where a tablet starts already is refused: nothing to do.
                let _ = c
                    .split_tablet(table, &keys::chunk_split_key(week, i, bits))
                    .await;
            }
        }
        let tablets = c.describe_table(table).await?.tablets.len();
        let (one_p50, one_p99, _) =
            time_query(&args.datalayer, one, start, end, args.queries).await?;
        let (many_p50, many_p99, _) =
            time_query(&args.datalayer, many, start, end, args.queries).await?;
        println!(
            "  {n} sub-ranges ({tablets} tablets): one series p50 {one_p50:.1} ms p99 {one_p99:.1} ms; {} series p50 {many_p50:.1} ms p99 {many_p99:.1} ms",
            args.query_series
        );
    }
    Ok(())
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: TsBenchArgs) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let end = (now - 60_000) / STEP_MS * STEP_MS;
    let mut stored = 0u64;
    // The day of query data goes first: Prometheus accepts a sample only within an
    // hour of the newest it holds.
    let hours = args.query_hours;
    let q_samples = hours * 3600 / 15;
    let q_senders = payloads("bench_q", args.query_series, q_samples, end, args.batch, 1);
    for url in [&args.datalayer, &args.prometheus] {
        send(url, &q_senders).await?;
    }
    stored += (args.query_series * q_samples) as u64;
    println!(
        "ingestion: remote-write requests of {} samples, {} senders",
        args.batch, args.clients
    );
    for &n in &args.series {
        let senders = payloads(
            &format!("bench_ingest_{n}"),
            n,
            args.samples,
            end,
            args.batch,
            args.clients,
        );
        let samples = (n * args.samples) as f64;
        for (name, url, pid) in [
            ("datalayer", &args.datalayer, args.datalayer_pid),
            ("prometheus", &args.prometheus, args.prometheus_pid),
        ] {
            let cpu0 = cpu_seconds(pid);
            let secs = send(url, &senders).await?;
            let cpu = cpu_seconds(pid).zip(cpu0).map(|(a, b)| a - b);
            let per_cpu = cpu.map_or("-".to_string(), |c| format!("{:.0}", samples / c));
            println!(
                "  {n:>7} series  {name:<10}  {:>9.0} samples/s  {per_cpu:>9} samples per CPU-second  ({samples} samples in {secs:.2} s)",
                samples / secs
            );
        }
        stored += samples as u64;
    }
    let samples = q_samples;
    let query = "sum by (job) (rate(bench_q[5m]))";
    let start = end - (samples as i64 - 1) * STEP_MS;
    println!(
        "query_range {query:?} over {} series, {hours} h at 15 s ({} points a series)",
        args.query_series, samples
    );
    let mut answers = Vec::new();
    for (name, url) in [
        ("datalayer", &args.datalayer),
        ("prometheus", &args.prometheus),
    ] {
        let (p50, p99, body) = time_query(url, query, start, end, args.queries).await?;
        println!("  {name:<10}  p50 {p50:>8.1} ms  p99 {p99:>8.1} ms");
        answers.push(serde_json::from_slice::<serde_json::Value>(&body)?);
    }
    println!("  answers agree: {}", agree(&answers[0], &answers[1]));
    if let Some(grpc) = &args.datalayer_grpc {
        sub_ranges(&args, grpc, query, start, end).await?;
    }
    println!("samples stored in each: {stored}");
    Ok(())
}
