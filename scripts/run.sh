#!/usr/bin/env bash
# Builds DataLayer, starts a single node with its data in ./datalayer-data, shows it
# working with a few CLI commands, then keeps the node running until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

# Same selection as scripts/test.sh, so the RocksDB build is shared (see there).
cargo build --workspace --all-targets
bin="$CARGO_TARGET_DIR/debug/datalayer"

"$bin" start --data-dir ./datalayer-data &
node=$!
trap 'kill -TERM $node 2>/dev/null; wait $node' INT TERM EXIT
for _ in $(seq 1 100); do "$bin" status >/dev/null 2>&1 && break; sleep 0.1; done

set -x
"$bin" table create demo --if-not-exists
"$bin" put demo hello world
"$bin" get demo hello
"$bin" incr demo visits
"$bin" scan demo
"$bin" status
{ set +x; } 2>/dev/null
echo
echo "node running (pid $node); use $bin --help, or Ctrl-C to stop it"
wait $node
