# Sourced by the scripts: one fixed target directory outside the clone, so every clone
# (and CI) reuses the same RocksDB build, and the prerequisites a fresh machine lacks.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/datalayer/target}"
mkdir -p "$CARGO_TARGET_DIR"

# Installs Debian packages that are missing (`need_packages pkg...`).
need_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# libclang: bindgen generates the RocksDB bindings at build time.
need_packages libclang-dev
command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
