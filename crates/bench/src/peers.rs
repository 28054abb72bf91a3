//! The peers `datalayer bench` measures beside a node: raw RocksDB in-process,
//! `redis-server` through `redis-benchmark`, and etcd over its gRPC API.

use super::*;

mod etcd {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("etcdserverpb");
}

pub(super) fn raw_rocksdb(
    dir: &std::path::Path,
    clients: usize,
    value: &[u8],
    dur: Duration,
) -> anyhow::Result<Measure> {
    let path = dir.join("raw-rocksdb-bench");
    let _ = std::fs::remove_dir_all(&path);
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    opts.set_enable_pipelined_write(true);
    let db = Arc::new(rocksdb::DB::open(&opts, &path)?);
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|client| {
            let (db, value) = (db.clone(), value.to_vec());
            std::thread::spawn(move || {
                let mut w = rocksdb::WriteOptions::default();
                w.set_sync(true);
                let mut hist = histogram();
                let mut ops = 0u64;
                while start.elapsed() < dur {
                    let t = Instant::now();
                    db.put_opt(key(client, ops), &value, &w)?;
                    hist.saturating_record(t.elapsed().as_micros() as u64);
                    ops += 1;
                }
                anyhow::Ok((hist, ops))
            })
        })
        .collect();
    let mut hist = histogram();
    let mut ops = 0;
    for t in threads {
        let (h, o) = t
            .join()
            .map_err(|_| anyhow::anyhow!("bench thread panicked"))??;
        hist.add(h).expect("same bounds");
        ops += o;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(db);
    let _ = std::fs::remove_dir_all(&path);
    Ok(Measure {
        system: "rocksdb (in-process)",
        workload: "put",
        ops_per_sec: ops as f64 / secs,
        rows_per_sec: ops as f64 / secs,
        p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
    })
}

pub(super) async fn redis_benchmark(
    addr: &str,
    clients: usize,
    value_size: usize,
    dur: Duration,
) -> anyhow::Result<Vec<Measure>> {
    let (host, port) = addr.rsplit_once(':').context("--redis wants host:port")?;
    let mut out = Vec::new();
    // Request counts sized so each test runs for roughly the same time as ours.
    for (test, workload, per_sec) in [("set", "put", 40_000u64), ("get", "get", 150_000)] {
        let n = (per_sec * dur.as_secs()).to_string();
        let o = tokio::process::Command::new("redis-benchmark")
            .args([
                "-h",
                host,
                "-p",
                port,
                "-c",
                &clients.to_string(),
                "-d",
                &value_size.to_string(),
            ])
            .args(["-t", test, "-n", &n, "-r", "1000000", "--csv"])
            .output()
            .await
            .context("run redis-benchmark (apt-get install redis-tools)")?;
        if !o.status.success() {
            bail!(
                "redis-benchmark failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        let text = String::from_utf8_lossy(&o.stdout);
        let line = text
            .lines()
            .find(|l| {
                l.to_ascii_uppercase()
                    .starts_with(&format!("\"{}\"", test.to_ascii_uppercase()))
            })
            .with_context(|| format!("no {test} line in redis-benchmark output: {text}"))?;
        let cols: Vec<f64> = line
            .split(',')
            .skip(1)
            .map(|c| c.trim_matches('"').parse().unwrap_or(0.0))
            .collect();
        // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
        if cols.len() < 6 {
            bail!("unexpected redis-benchmark csv: {line}");
        }
        out.push(Measure {
            system: "redis-server (appendfsync always)",
            workload,
            ops_per_sec: cols[0],
            rows_per_sec: cols[0],
            p50_ms: cols[3],
            p99_ms: cols[5],
        });
    }
    Ok(out)
}

pub(super) async fn etcd_bench(
    addr: &str,
    clients: usize,
    value: &Arc<Vec<u8>>,
    dur: Duration,
) -> anyhow::Result<Vec<Measure>> {
    use etcd::kv_client::KvClient;
    let mut conns = Vec::new();
    for _ in 0..clients {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await
            .with_context(|| format!("cannot reach etcd at {addr}"))?;
        conns.push(KvClient::new(ch));
    }
    let v = value.clone();
    let (put, loaded) = drive(
        "etcd",
        "put",
        &conns,
        dur,
        Arc::new(
            move |mut c: KvClient<tonic::transport::Channel>, client, i| {
                let v = v.clone();
                Box::pin(async move {
                    c.put(etcd::PutRequest {
                        key: key(client, i),
                        value: v.to_vec(),
                    })
                    .await?;
                    Ok(1)
                })
            },
        ),
    )
    .await?;
    let loaded = loaded.max(1);
    let (get, _) = drive(
        "etcd",
        "get",
        &conns,
        dur,
        Arc::new(move |mut c: KvClient<tonic::transport::Channel>, _, _| {
            let (client, i) = {
                let mut r = rand::rng();
                (r.random_range(0..clients), r.random_range(0..loaded))
            };
            Box::pin(async move {
                let r = c
                    .range(etcd::RangeRequest {
                        key: key(client, i),
                        serializable: true,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                anyhow::ensure!(!r.kvs.is_empty(), "etcd bench key missing");
                Ok(1)
            })
        }),
    )
    .await?;
    Ok(vec![put, get])
}
