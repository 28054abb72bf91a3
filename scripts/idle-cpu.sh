#!/usr/bin/env bash
# The idle CPU of a single node as its tables grow: a node with a local data
# directory gets tables (one tablet each) up to each count asked for, settles, and
# its CPU time over a quiet window is reported as a share of one core.
# Usage: scripts/idle-cpu.sh [COUNT...]   (default: 250 1000 2000)
# IDLE_SECS (default 20) sets the window; DATALAYER_BIN=path runs another build.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

if [ -z "${DATALAYER_BIN:-}" ]; then
  cargo build --profile perf --workspace --all-targets
fi
bin="${DATALAYER_BIN:-$CARGO_TARGET_DIR/perf/datalayer}"
counts=("$@")
[ ${#counts[@]} -eq 0 ] && counts=(250 1000 2000)
window=${IDLE_SECS:-20}
work=$(mktemp -d "${TMPDIR:-/tmp}/datalayer-idle.XXXXXX")
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

addr=127.0.0.1:17900
"$bin" start --data-dir "$work/node" --grpc-addr "$addr" --http-addr 127.0.0.1:17901 \
  >"$work/node.out" 2>"$work/node.log" &
pid=$!
for _ in $(seq 1 300); do
  "$bin" --addr "$addr" status >/dev/null 2>&1 && break
  sleep 0.1
done

# CPU seconds (user + system) the node has used so far.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$pid/stat"; }

have=0
echo "| tables | idle CPU (share of one core) |"
echo "|---:|---:|"
for n in "${counts[@]}"; do
  seq "$have" $((n - 1)) | xargs -P 4 -I{} "$bin" --addr "$addr" table create "idle-{}" --if-not-exists >/dev/null
  have=$n
  sleep 5 # settle: the last tables' masters open and the first heartbeats pass
  start=$(cpu)
  sleep "$window"
  end=$(cpu)
  awk -v a="$start" -v b="$end" -v w="$window" -v n="$n" 'BEGIN { printf "| %d | %.1f%% |\n", n, (b - a) * 100 / w }'
done
