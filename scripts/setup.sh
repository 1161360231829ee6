#!/usr/bin/env bash
# Installs every Debian package llm-gateway needs to build, test and benchmark, then builds it.
#   scripts/setup.sh            install build+test dependencies and build build/llm-gateway
#                               (Release: the gateway you run)
#   scripts/setup.sh --deps     only install dependencies (used by scripts/test.sh)
#   BUILD_TYPE=Debug scripts/setup.sh     a debug build instead
# Works as root or through sudo on a bare debian:bookworm; re-running it is cheap (apt is skipped
# when everything is present).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake ninja-build pkg-config ccache mold git ca-certificates openssl curl
  libboost1.81-dev libboost-url1.81-dev libboost-json1.81-dev libssl-dev
  nlohmann-json3-dev libyaml-cpp-dev prometheus-cpp-dev libhiredis-dev
  libgtest-dev libgmock-dev
  redis-server  # the Redis rate-limit tests start their own
  prometheus    # promtool validates deploy/prometheus in the tests
)

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || missing+=("$p")
done
# Node.js for the integration and SDK suites: any Node >= 18 with npm will do. A bare Debian 12
# gets Node 18 from its own nodejs+npm packages; a machine that already has a newer Node keeps it.
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 18 ] || ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# redis-server's package starts a system instance; the tests start their own on a free port.

[ "${1:-}" = "--deps" ] && exit 0

BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" >/dev/null
cmake --build "$BUILD_DIR" --target llm-gateway
echo "setup: built $BUILD_DIR/llm-gateway" >&2
