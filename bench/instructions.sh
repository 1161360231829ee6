#!/usr/bin/env bash
# User-space instructions per request and per relayed event, llm-gateway against nginx doing the
# same rewrite, counted with callgrind. Wall time on a shared or virtual machine wanders by tens of
# percent between minutes; instruction counts do not (repeat runs agree within about 0.6 %), so
# this is the measure for a change too small for bench/run.sh to resolve. It leaves out the
# kernel's share (system calls, TCP), which bench/run.sh's CPU times include.
#
#   bench/instructions.sh              # builds build-release/llm-gateway, prints a Markdown table
#   BENCH_BUILD=0 bench/instructions.sh  # measures build-release/llm-gateway as it is
#   GW_BIN=/path/to/llm-gateway bench/instructions.sh  # another binary (an older commit's)
#   ONLY="gw_plain gw_sse" bench/instructions.sh   # some measurements (labels as in the table below)
#   KEEP=/tmp/cg bench/instructions.sh             # keep callgrind's files there, for
#                                                  # callgrind_annotate --inclusive=yes KEEP/callgrind.gw_plain.1
#
# Each measurement starts the process under `valgrind --tool=callgrind`, warms it up, zeroes the
# counters (callgrind_control -z), runs a fixed number of requests with h2load, dumps the counters
# and divides their total by the number of requests (or relayed events). A few minutes.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tools/common.sh
. "$BENCH_DIR/tools/common.sh"
REPO=$(cd "$BENCH_DIR/.." && pwd)
: "${BENCH_BUILD:=1}"
: "${GW_BIN:=$REPO/build-release/llm-gateway}"
: "${N_REQUESTS:=2000}"   # non-streaming requests per measurement
: "${N_STREAMS:=1000}"    # fixed-SSE streams per measurement
: "${N_PACED:=200}"       # paced streams (21 events each), 100 at a time
: "${ONLY:=}"
: "${KEEP:=}"
AZURE_KEY=bench-azure-key-0123456789abcdef
CLIENT_KEY=sk-bench-client-key-0123456789abcdef
ADMIN_TOKEN=bench-admin-token-0123456789

log() { printf '[instructions %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v valgrind >/dev/null 2>&1; then
  log "installing valgrind"
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends valgrind >/dev/null
fi
missing=()
for tool in h2load curl node; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
[ -x "$(command -v nginx || echo /usr/sbin/nginx)" ] || missing+=(nginx)
if [ ${#missing[@]} -gt 0 ]; then
  log "missing: ${missing[*]} (bench/run.sh installs them)"
  exit 1
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

if [ "$BENCH_BUILD" = 1 ] && [ "$GW_BIN" = "$REPO/build-release/llm-gateway" ]; then
  log "building the Release gateway"
  cmake -S "$REPO" -B "$REPO/build-release" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLMGW_TESTS=OFF >/dev/null
  cmake --build "$REPO/build-release" --target llm-gateway >/dev/null
fi
[ -x "$GW_BIN" ] || { log "no gateway binary at $GW_BIN"; exit 1; }

SCRATCH=$(mktemp -d /tmp/llmgw-instructions.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$SCRATCH/upstream.pid" ] && kill "$(cat "$SCRATCH/upstream.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$SCRATCH"
}
trap cleanup EXIT
mkdir -p "$SCRATCH/logs" "$SCRATCH/tmp"

read -r UP_PORT PROXY_PORT PACED_PORT PACED_PROXY_PORT GW_PORT ADMIN_PORT <<<"$(free_ports 6)"
render_nginx_confs "$SCRATCH" "$UP_PORT" "$PROXY_PORT" "$PACED_PORT" "$PACED_PROXY_PORT" "$AZURE_KEY"
# The measured nginx runs in the foreground as one process, so that callgrind sees its worker.
sed -i '1i master_process off;\ndaemon off;' "$SCRATCH/proxy.conf"
"$NGINX" -p "$SCRATCH" -c "$SCRATCH/upstream.conf" -g 'daemon on;'
node "$BENCH_DIR/tools/paced-sse-server.mjs" --port "$PACED_PORT" --chunks 20 --interval-ms 20 \
  >"$SCRATCH/logs/paced.out" 2>&1 &
PIDS+=($!)

export BENCH_GW_PORT=$GW_PORT BENCH_ADMIN_PORT=$ADMIN_PORT BENCH_AZURE_KEY=$AZURE_KEY \
  BENCH_CLIENT_KEY=$CLIENT_KEY BENCH_ADMIN_TOKEN=$ADMIN_TOKEN \
  BENCH_ACCESS_LOG="$SCRATCH/access.log"

wait_up() { # URL: until a POST gets any HTTP answer
  for _ in $(seq 300); do
    curl -s -o /dev/null --max-time 2 -X POST -H 'content-type: application/json' \
      -d @"$BENCH_DIR/data/chat-request.json" "$1" && return 0
    sleep 0.1
  done
  log "no answer from $1"
  return 1
}

# measure LABEL KIND(plain|sse|paced) PORT AUTH UPSTREAM_URL -- COMMAND...: prints
# "LABEL instructions-per-unit". (The upstream goes in through the environment: valgrind does not
# follow an exec, so the command must be the measured program itself, not `env ...`.)
measure() {
  local label=$1 kind=$2 port=$3 auth=$4 upstream=$5
  shift 6
  if [ -n "$ONLY" ] && [[ " $ONLY " != *" $label "* ]]; then return 0; fi
  local out="$SCRATCH/callgrind.$label"
  BENCH_UPSTREAM_URL=$upstream valgrind --tool=callgrind --callgrind-out-file="$out" \
    --dump-instr=no "$@" >"$SCRATCH/logs/$label.out" 2>"$SCRATCH/logs/$label.err" &
  local pid=$!
  local url="http://127.0.0.1:$port/v1/chat/completions"
  wait_up "$url"
  local h=(-H "content-type: application/json")
  [ -n "$auth" ] && h+=(-H "authorization: Bearer $auth")
  local body="$BENCH_DIR/data/chat-request.json" n=$N_REQUESTS c=8 units
  case $kind in
    sse) h+=(-H "x-bench-stream: 1" -H "accept: text/event-stream"); body="$BENCH_DIR/data/chat-request-stream.json"; n=$N_STREAMS ;;
    paced) h+=(-H "accept: text/event-stream"); body="$BENCH_DIR/data/chat-request-stream.json"; n=$N_PACED; c=100 ;;
  esac
  h2load --h1 -n 500 -c "$c" -d "$body" "${h[@]}" "$url" >/dev/null
  callgrind_control -z "$pid" >/dev/null 2>&1
  local codes
  codes=$(h2load --h1 -n "$n" -c "$c" -d "$body" "${h[@]}" "$url" | sed -n 's/^status codes: //p')
  callgrind_control -d "$pid" >/dev/null 2>&1
  # The counters are on disk: no graceful shutdown needed (a draining gateway under valgrind
  # can take long to let go of its last connections).
  kill -KILL "$pid"
  wait "$pid" 2>/dev/null || true
  case "$codes" in "$n 2xx"*) ;; *) log "$label: not all 2xx ($codes)"; return 1 ;; esac
  local total
  total=$(callgrind_annotate "$out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
  units=$n
  [ "$kind" = paced ] && units=$((n * 21))  # 20 events and the closing [DONE]
  if [ -n "$KEEP" ]; then mkdir -p "$KEEP" && cp "$out.1" "$KEEP/callgrind.$label.1"; fi
  echo "$label $((total / units))"
}

UP="http://127.0.0.1:$UP_PORT"
PACED="http://127.0.0.1:$PACED_PORT"
GW=("$GW_BIN" --config "$BENCH_DIR/conf/gateway-bare.yaml")
NG=("$NGINX" -p "$SCRATCH" -c "$SCRATCH/proxy.conf")
RESULTS="$SCRATCH/results"
{
  log "gateway, bare"
  measure gw_plain plain "$GW_PORT" "" "$UP" -- "${GW[@]}"
  log "gateway, everything on"
  measure gw_full plain "$GW_PORT" "$CLIENT_KEY" "$UP" -- "$GW_BIN" --config "$BENCH_DIR/conf/gateway-full.yaml"
  log "gateway, fixed SSE body"
  measure gw_sse sse "$GW_PORT" "" "$UP" -- "${GW[@]}"
  log "gateway, paced streams"
  measure gw_paced paced "$GW_PORT" "" "$PACED" -- "${GW[@]}"
  log "nginx"
  measure ng_plain plain "$PROXY_PORT" "" "" -- "${NG[@]}"
  measure ng_sse sse "$PROXY_PORT" "" "" -- "${NG[@]}"
  measure ng_paced paced "$PACED_PROXY_PORT" "" "" -- "${NG[@]}"
} >"$RESULTS"

value() { awk -v k="$1" '$1 == k {print $2}' "$RESULTS"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "" || b == "") print "–"; else printf "%.2f×", a / b}'; }
cat <<EOF
| user-space instructions (callgrind) | llm-gateway | nginx, same rewrite | ratio |
|---|---:|---:|---:|
| non-streaming request, bare | $(value gw_plain) | $(value ng_plain) | $(ratio "$(value gw_plain)" "$(value ng_plain)") |
| non-streaming request, everything on | $(value gw_full) | – | $(ratio "$(value gw_full)" "$(value gw_plain)") of bare |
| fixed SSE body (21 events), per stream | $(value gw_sse) | $(value ng_sse) | $(ratio "$(value gw_sse)" "$(value ng_sse)") |
| paced streams, per relayed event | $(value gw_paced) | $(value ng_paced) | $(ratio "$(value gw_paced)" "$(value ng_paced)") |

$("$GW_BIN" --version 2>/dev/null || true) · git $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?') · $N_REQUESTS requests, $N_STREAMS SSE streams, $N_PACED paced streams
EOF
