#!/usr/bin/env bash
# Runs exactly what CI runs: format check, clippy with -D warnings, then every test.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
# promtool (Debian's prometheus package): the time-series functions are checked against it.
need_packages prometheus

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The end-to-end tests run the real binary from the same target directory. Every
# cargo call here and in the other scripts selects the same packages and targets
# (--workspace --all-targets): a different selection unifies features differently and
# rebuilds RocksDB from scratch.
# The chaos suite proves its checkers on a deliberately broken build (acks before
# replication): build it first and keep it beside the real binary.
cargo build --workspace --all-targets --features datalayer/unsafe-early-ack
cp "$CARGO_TARGET_DIR/debug/datalayer" "$CARGO_TARGET_DIR/debug/datalayer-unsafe-early-ack"
# The in-process late-follower test proves itself on the same broken build: there it
# must fail, on its acks=all assertion.
if out=$(cargo test --workspace --features datalayer/unsafe-early-ack --test inproc \
    -- a_late_follower 2>&1); then
  echo "the late-follower test passed on a build that acknowledges early"; exit 1
fi
grep -q "answered before the late follower held it" <<<"$out" \
  || { echo "the late-follower test failed on the broken build, but not as expected:"; echo "$out" | tail -40; exit 1; }
cargo build --workspace --all-targets
# Cluster tests start 3 to 5 node processes each (and every node now ships, heartbeats
# and grants leases): at most 2 tests at a time keeps a 2-core machine responsive
# enough for Raft's and the replication's timeouts.
RUST_TEST_THREADS=2 cargo test --workspace --no-fail-fast
