#!/usr/bin/env bash
# Runs every test of llm-gateway on this machine, installing what they need first:
#   unit tests (GoogleTest, through ctest); the integration suite, which runs the real binary
#   over loopback against the project's mock upstream (tests/integration, node:test); and the
#   end-to-end suite with the official openai npm SDK (tests/e2e, installed with npm ci). After
#   the integration suite, the fault-injection suite (tests/faults) runs the same binary against
#   misbehaving upstreams and clients, a dying Redis and a full disk. The deployment suite
#   (tests/deploy) validates deploy/compose against the compose-spec schema and every
#   `kubectl kustomize` render of deploy/kubernetes against the Kubernetes schemas, and runs
#   --check-config on every configuration they ship. The container image has its own, slower test:
#   scripts/test-image.sh (CI runs it once per change of the Dockerfile, see .ci/run).
# Environment:
#   BUILD_DIR=build-test   where the test build goes (Debug, warnings as errors)
#   SANITIZE=1             build with AddressSanitizer + UndefinedBehaviorSanitizer
#   SANITIZE=thread        build with ThreadSanitizer
#   FAULTS_SLOW=0          leave out the fault cases that wait for the 30-60 s client timeouts
#                          (default 1: they run, about 75 s)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --deps

BUILD_DIR=${BUILD_DIR:-build-test}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DLLMGW_WERROR=ON \
  -DLLMGW_SANITIZE="$([ "${SANITIZE:-0}" = 1 ] && echo ON || echo OFF)" \
  -DLLMGW_TSAN="$([ "${SANITIZE:-0}" = thread ] && echo ON || echo OFF)" >/dev/null
cmake --build "$BUILD_DIR"

if [ "${SANITIZE:-0}" = 1 ]; then
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
fi
if [ "${SANITIZE:-0}" = thread ]; then
  export TSAN_OPTIONS=halt_on_error=0:second_deadlock_stack=1
fi

echo "== unit tests"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j2

echo "== integration tests (real binary over loopback; redis-server started by the tests)"
export LLM_GATEWAY_BIN="$PWD/$BUILD_DIR/llm-gateway"
node --test tests/integration/*.test.mjs

echo "== deployment tests (tests/deploy: compose-spec schema, kustomize renders against the Kubernetes schemas, --check-config of every shipped config)"
(cd tests/deploy && npm ci --no-audit --no-fund --loglevel=error)
node --test tests/deploy/compose.test.mjs tests/deploy/kubernetes.test.mjs

echo "== fault-injection tests (tests/faults; same binary; mounts a tmpfs when root, lowers the gateway's fd limit with prlimit)"
# One file at a time: the cases measure the gateway's descriptors, memory and promptness.
faults_flags=()
if node --help 2>/dev/null | grep -q -- '--test-concurrency'; then faults_flags+=(--test-concurrency=1); fi
FAULTS_SLOW=${FAULTS_SLOW:-1} node --test ${faults_flags[@]+"${faults_flags[@]}"} tests/faults/*.test.mjs

echo "== end-to-end tests with the official openai npm SDK (pinned in tests/e2e/package-lock.json)"
(cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)
# The pinned SDK streams through node-fetch, which fails every stream with "Premature close" on
# Debian 12's Node 18. A machine whose Node is older than 20 gets a pinned Node 20 for this suite
# from the npm registry (the binary ships inside the node-linux-<arch> package).
E2E_NODE=node
if [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  arch=$(node -p process.arch)
  node_dir="$PWD/tests/e2e/.node"
  E2E_NODE="$node_dir/node_modules/node-linux-$arch/bin/node"
  if [ ! -x "$E2E_NODE" ]; then
    npm install --no-save --no-audit --no-fund --loglevel=error --prefix "$node_dir" \
      "node-linux-$arch@20.20.2"
  fi
fi
"$E2E_NODE" --test tests/e2e/*.test.mjs
