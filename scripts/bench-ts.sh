#!/usr/bin/env bash
# Benchmarks the timeseries policy side by side with Prometheus (Debian's 2.42, with
# its remote-write receiver) in one run, on this machine, with the same
# remote-write payloads: ingestion at 1,000 and 100,000 active series, query_range
# of sum by (job) (rate(x[5m])) over 1,000 series and a day at 15 s, bytes per sample.
# Usage: scripts/bench-ts.sh [extra `datalayer bench-ts` flags, e.g. --series 1000]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
need_packages prometheus

# The perf profile, as the other benchmarks (see scripts/bench.sh); DATALAYER_BIN=path
# runs another build instead.
if [ -z "${DATALAYER_BIN:-}" ]; then
  cargo build --profile perf --workspace --all-targets
fi
bin="${DATALAYER_BIN:-$CARGO_TARGET_DIR/perf/datalayer}"
work=$(mktemp -d "${TMPDIR:-/tmp}/datalayer-bench-ts.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$bin" start --data-dir "$work/node" --grpc-addr 127.0.0.1:17700 --http-addr 127.0.0.1:17701 \
  --timeseries-keeper-ms 1000 >"$work/node.out" 2>"$work/node.log" &
dl=$!; pids+=($dl)
cat >"$work/prometheus.yml" <<'YML'
global:
  scrape_interval: 1h
YML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prometheus" \
  --web.listen-address=127.0.0.1:19090 --web.enable-remote-write-receiver >"$work/prometheus.log" 2>&1 &
prom=$!; pids+=($prom)

for _ in $(seq 1 200); do
  "$bin" --addr 127.0.0.1:17700 status >/dev/null 2>&1 && curl -sf http://127.0.0.1:19090/-/ready >/dev/null 2>&1 && break
  sleep 0.1
done
# Old versions of merged chunks are kept a second, then collected.
"$bin" --addr 127.0.0.1:17700 table create bench --policy timeseries --out-of-order-window 2d --retention-secs 1 >/dev/null

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr); $(prometheus --version 2>&1 | head -1)"
"$bin" bench-ts --datalayer http://127.0.0.1:17701/prometheus/bench --prometheus http://127.0.0.1:19090 \
  --datalayer-grpc 127.0.0.1:17700 --datalayer-pid "$dl" --prometheus-pid "$prom" "$@" | tee "$work/bench.out"
stored=$(awk '/samples stored in each/ {print $NF}' "$work/bench.out")
# Sizes once both have compacted: DataLayer's keeper merges the closed windows (the
# chunks of samples written late are merged every 30 passes, 30 s here) and the
# collector drops the versions they replaced, and the oplog keeps only the last
# minute's records past its byte bound; Prometheus cuts its head into blocks (and the
# node and Prometheus stop cleanly, so each leaves its files as a restart would find
# them).
sleep 75
"$bin" --addr 127.0.0.1:17700 gc bench >/dev/null
kill -TERM "$dl" "$prom"; wait "$dl" "$prom" 2>/dev/null || true
for who in node prometheus; do
  bytes=$(du -sb "$work/$who" | cut -f1)
  echo "on disk after compaction: $who $bytes bytes, $(awk -v b="$bytes" -v s="$stored" 'BEGIN{printf "%.2f", b/s}') bytes per sample"
done
