#!/usr/bin/env bash
# Benchmarks a single DataLayer node side by side with its peers in one run:
# raw RocksDB in-process, redis-server (appendonly yes, appendfsync always) and a
# single-node etcd, all on this machine, same concurrency and value size.
# Usage: scripts/bench.sh [extra `datalayer bench` flags, e.g. --seconds 10]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
need_packages redis-server redis-tools etcd-server

# Benchmarks run the optimised `perf` profile (see Cargo.toml): its RocksDB build is a
# second one in the shared target directory, made once (~25 min on 2 cores) and then
# reused. Always the same selection as scripts/test.sh, so there is one RocksDB build
# per profile. DATALAYER_BIN=path runs another build instead (an A/B of two commits).
if [ -z "${DATALAYER_BIN:-}" ]; then
  cargo build --profile perf --workspace --all-targets
fi
bin="${DATALAYER_BIN:-$CARGO_TARGET_DIR/perf/datalayer}"
work=$(mktemp -d "${TMPDIR:-/tmp}/datalayer-bench.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$bin" start --data-dir "$work/node" --grpc-addr 127.0.0.1:17700 --http-addr 127.0.0.1:17701 >"$work/node.out" 2>"$work/node.log" &
pids+=($!)
redis-server --port 16379 --dir "$work" --appendonly yes --appendfsync always --save "" --daemonize no >"$work/redis.log" 2>&1 &
pids+=($!)
etcd --data-dir "$work/etcd" --listen-client-urls http://127.0.0.1:12379 --advertise-client-urls http://127.0.0.1:12379 \
  --listen-peer-urls http://127.0.0.1:12380 >"$work/etcd.log" 2>&1 &
pids+=($!)

for _ in $(seq 1 200); do
  "$bin" --addr 127.0.0.1:17700 status >/dev/null 2>&1 && redis-cli -p 16379 ping >/dev/null 2>&1 \
    && ETCDCTL_API=3 etcdctl --endpoints 127.0.0.1:12379 endpoint health >/dev/null 2>&1 && break
  sleep 0.1
done

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr)"
"$bin" --addr 127.0.0.1:17700 bench --rocksdb-dir "$work" --redis 127.0.0.1:16379 --etcd 127.0.0.1:12379 "$@"
