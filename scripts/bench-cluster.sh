#!/usr/bin/env bash
# Benchmarks a three-node cluster on loopback, side by side in one run with a single
# DataLayer node and a three-node etcd cluster (Debian's etcd-server, three processes):
# metadata changes (create + drop table) through a follower; puts and gets sent to a
# tablet's master against the same sent to another node (forwarded); replicated puts
# with acks=1 and acks=all against the single node and etcd at the same value size and
# concurrency; then the time from killing a tablet's master (kill -9) to the first
# successful acks=all write through another node, over several rounds.
# Figures go to BENCHMARKS.md.
# Usage: scripts/bench-cluster.sh [extra `datalayer bench` flags, e.g. --seconds 10]
# FAILOVER_ROUNDS (default 10) sets the number of master kills; FAILOVER_ONLY=1 skips
# the throughput workloads. The three nodes share the machine's cores, so each serves
# requests on NODE_THREADS worker threads (default 1, `--worker-threads`); the single
# node and etcd keep their defaults (one thread per core, GOMAXPROCS).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
need_packages etcd-server etcd-client
# Benchmarks run the optimised `perf` profile (see Cargo.toml): its RocksDB build is a
# second one in the shared target directory, made once (~25 min on 2 cores) and then
# reused. Always the same selection as scripts/test.sh, so there is one RocksDB build
# per profile. DATALAYER_BIN=path runs another build instead (an A/B of two commits).
if [ -z "${DATALAYER_BIN:-}" ]; then
  cargo build --profile perf --workspace --all-targets
fi
bin="${DATALAYER_BIN:-$CARGO_TARGET_DIR/perf/datalayer}"
work=$(mktemp -d "${TMPDIR:-/tmp}/datalayer-bench-cluster.XXXXXX")
declare -A pid
cleanup() { for p in "${pid[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

start_node() { # i
  local i=$1 join=()
  [ "$i" -gt 1 ] && join=(--join 127.0.0.1:17810)
  "$bin" start --data-dir "$work/n$i" --grpc-addr "127.0.0.1:178${i}0" --http-addr "127.0.0.1:178${i}1" "${join[@]}" \
    --worker-threads "${NODE_THREADS:-1}" \
    >>"$work/n$i.out" 2>>"$work/n$i.log" &
  pid[n$i]=$!
  for _ in $(seq 1 300); do "$bin" --addr "127.0.0.1:178${i}0" status >/dev/null 2>&1 && return; sleep 0.1; done
  echo "node $i did not start" >&2; exit 1
}
for i in 1 2 3; do start_node "$i"; done
for _ in $(seq 1 200); do
  [ "$("$bin" --addr 127.0.0.1:17810 status | grep -c ' voter ')" -eq 3 ] && break
  sleep 0.1
done
"$bin" start --data-dir "$work/single" --grpc-addr 127.0.0.1:17900 --http-addr 127.0.0.1:17901 \
  >"$work/single.out" 2>"$work/single.log" &
pid[single]=$!

cluster="e1=http://127.0.0.1:12380,e2=http://127.0.0.1:12382,e3=http://127.0.0.1:12384"
for i in 1 2 3; do
  c=$((12379 + (i - 1) * 2)); p=$((c + 1))
  etcd --name "e$i" --data-dir "$work/etcd$i" \
    --listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
    --listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
    --initial-cluster "$cluster" --initial-cluster-state new >"$work/etcd$i.log" 2>&1 &
  pid[etcd$i]=$!
done
endpoints=127.0.0.1:12379,127.0.0.1:12381,127.0.0.1:12383
for _ in $(seq 1 300); do
  "$bin" --addr 127.0.0.1:17900 status >/dev/null 2>&1 \
    && ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint health >/dev/null 2>&1 && break
  sleep 0.1
done
# Drive etcd through its leader, as DataLayer's puts go to the tablet's master.
etcd_leader=$(ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint status -w json | python3 -c '
import json, sys
for e in json.load(sys.stdin):
    if e["Status"]["leader"] == e["Status"]["header"]["member_id"]:
        print(e["Endpoint"].replace("http://", ""))')

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr)"
if [ "${FAILOVER_ONLY:-0}" != 1 ]; then
  "$bin" --addr 127.0.0.1:17810 bench --cluster 127.0.0.1:17810,127.0.0.1:17820,127.0.0.1:17830 \
    --single-node 127.0.0.1:17900 --etcd "$etcd_leader" "$@"
fi

# Failover: kill -9 the tablet's master, time the first successful acks=all write
# through another node, restart the killed node and wait until it is in sync again.
rounds=${FAILOVER_ROUNDS:-10}
"$bin" --addr 127.0.0.1:17810 table create fo --if-not-exists >/dev/null
field() { python3 -c "import json,sys; t=json.load(sys.stdin)['tablets'][0]; print($1)"; }
times=()
led=()   # rounds whose killed master also led the metadata group
asked=1   # the node asked for the tablet's state: never the one just restarted, whose
          # metadata may still be behind (it would name a master that moved)
for r in $(seq 1 "$rounds"); do
  for _ in $(seq 1 300); do
    desc=$("$bin" --addr "127.0.0.1:178${asked}0" --json table describe fo 2>/dev/null || true)
    [ -n "$desc" ] && [ "$(echo "$desc" | field 'len(t["in_sync"])')" -eq 3 ] && break
    sleep 0.1
  done
  master=$(echo "$desc" | field 't["master"]')
  other=$(( master % 3 + 1 ))
  leader=$("$bin" --addr "127.0.0.1:178${other}0" --json status | python3 -c 'import json,sys; print(json.load(sys.stdin)["meta_leader"])')
  "$bin" --addr "127.0.0.1:178${other}0" put fo warm "$r" >/dev/null
  t0=$(date +%s%N)
  kill -9 "${pid[n$master]}"
  until "$bin" --addr "127.0.0.1:178${other}0" --acks all put fo "k$r" "$r" >/dev/null 2>&1; do :; done
  t1=$(date +%s%N)
  ms=$(( (t1 - t0) / 1000000 ))
  times+=($ms)
  [ "$leader" = "$master" ] && led+=($ms)
  wait "${pid[n$master]}" 2>/dev/null || true
  start_node "$master"
  asked=$other
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
echo
echo "failover: kill -9 of the master to the first acknowledged write, $rounds rounds (ms): $(echo $sorted)"
echo "of which the killed master also led the metadata group: ${#led[@]} rounds (ms): ${led[*]:-}"
echo "failover p50 $(echo "$sorted" | sed -n "$(( (rounds + 1) / 2 ))p") ms, max (p99 of $rounds) $(echo "$sorted" | tail -1) ms, target 2000 ms"
