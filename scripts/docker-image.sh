#!/usr/bin/env bash
# Builds a Docker image of the node without any registry: FROM scratch, holding only
# the datalayer binary and the shared libraries it links (no image is pulled).
# Usage: scripts/docker-image.sh [BINARY] [TAG]   (defaults: the debug build, datalayer:local)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then
  source scripts/env.sh
  cargo build --workspace --all-targets
fi
bin="${1:-${CARGO_TARGET_DIR:-$HOME/.cache/datalayer/target}/debug/datalayer}"
tag="${2:-datalayer:local}"
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$bin" "$ctx/datalayer"
for lib in $(ldd "$bin" | awk '/=>/ {print $3} /ld-linux/ {print $1}'); do
  mkdir -p "$ctx$(dirname "$lib")"
  cp -L "$lib" "$ctx$lib"
done
cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY datalayer /datalayer
COPY lib /lib
COPY lib64 /lib64
ENTRYPOINT ["/datalayer"]
DOCKERFILE
mkdir -p "$ctx/lib" "$ctx/lib64"
docker build -q -t "$tag" "$ctx" >/dev/null
echo "$tag"
