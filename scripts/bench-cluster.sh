#!/usr/bin/env bash
# Benchmarks a three-node cluster on loopback: metadata changes (create + drop table)
# through a follower, and puts and gets sent to a tablet's master against the same
# sent to another node, which forwards them. Figures go to BENCHMARKS.md.
# Usage: scripts/bench-cluster.sh [extra `datalayer bench` flags, e.g. --seconds 10]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
# Same selection as scripts/test.sh, so the RocksDB build is shared.
cargo build --workspace --all-targets
bin="$CARGO_TARGET_DIR/debug/datalayer"
work=$(mktemp -d "${TMPDIR:-/tmp}/datalayer-bench-cluster.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

for i in 1 2 3; do
  join=()
  [ "$i" -gt 1 ] && join=(--join 127.0.0.1:17810)
  "$bin" start --data-dir "$work/n$i" --grpc-addr "127.0.0.1:178${i}0" --http-addr "127.0.0.1:178${i}1" "${join[@]}" \
    >"$work/n$i.out" 2>"$work/n$i.log" &
  pids+=($!)
  for _ in $(seq 1 200); do "$bin" --addr "127.0.0.1:178${i}0" status >/dev/null 2>&1 && break; sleep 0.1; done
done
for _ in $(seq 1 200); do
  [ "$("$bin" --addr 127.0.0.1:17810 status | grep -c ' voter ')" -eq 3 ] && break
  sleep 0.1
done

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr)"
"$bin" --addr 127.0.0.1:17810 bench --cluster 127.0.0.1:17810,127.0.0.1:17820,127.0.0.1:17830 "$@"
