#!/usr/bin/env bash
# Benchmarks load-based splitting on a three-node cluster on loopback: one table, all
# traffic first on its one tablet, 16 clients writing single keys with acks=all, the
# nodes started with a load threshold (SPLIT_OPS requests per second, default 1000,
# sustained for SPLIT_SECS, default 5). `datalayer bench-split` reports throughput
# before the first split and over the last 10 s, the time to the first split and to
# masters on every node, p99 write latency around the first split against the steady
# state, and failed operations. Figures go to BENCHMARKS.md.
# Usage: scripts/bench-split.sh [extra `datalayer bench-split` flags, e.g. --secs 90]
# DATALAYER_BIN=path runs another build (default: the dev profile of scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
if [ -z "${DATALAYER_BIN:-}" ]; then
  cargo build --workspace --all-targets
fi
bin="${DATALAYER_BIN:-$CARGO_TARGET_DIR/debug/datalayer}"
work=$(mktemp -d "${TMPDIR:-/tmp}/datalayer-bench-split.XXXXXX")
declare -A pid
cleanup() { for p in "${pid[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

start_node() { # i
  local i=$1 join=()
  [ "$i" -gt 1 ] && join=(--join 127.0.0.1:17610)
  "$bin" start --data-dir "$work/n$i" --grpc-addr "127.0.0.1:176${i}0" --http-addr "127.0.0.1:176${i}1" "${join[@]}" \
    --worker-threads "${NODE_THREADS:-1}" \
    --split-load-ops "${SPLIT_OPS:-1000}" --split-load-secs "${SPLIT_SECS:-5}" \
    >>"$work/n$i.out" 2>>"$work/n$i.log" &
  pid[n$i]=$!
  for _ in $(seq 1 300); do "$bin" --addr "127.0.0.1:176${i}0" status >/dev/null 2>&1 && return; sleep 0.1; done
  echo "node $i did not start" >&2; exit 1
}
for i in 1 2 3; do start_node "$i"; done
for _ in $(seq 1 200); do
  [ "$("$bin" --addr 127.0.0.1:17610 status | grep -c ' voter ')" -eq 3 ] && break
  sleep 0.1
done
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr)"
"$bin" bench-split --cluster 127.0.0.1:17610,127.0.0.1:17620,127.0.0.1:17630 "$@"
grep -h "splitting automatically\|handing over\|hand-over" "$work"/n*.log | sed 's/\x1b\[[0-9;]*m//g' | tail -20 || true
