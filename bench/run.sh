#!/usr/bin/env bash
# llm-gateway benchmark suite: one command, prints a Markdown report and writes it to
# bench/results/latest.md (bench/results/quick.md with --quick).
#
#   bench/run.sh            full run (about 9 minutes plus the build)
#   bench/run.sh --quick    about a minute: every measurement once, short; numbers are indicative
#   bench/run.sh --soak     the full run plus a 10-minute soak (RSS must stay flat within ±5 %)
#   bench/run.sh --quick --soak   quick run plus the soak
#
# What it does (bench/README.md has the method and the reasoning):
#  - installs nginx, wrk, h2load (nghttp2-client), curl, Node and redis-server with apt-get when
#    missing (as root, or through sudo), and the build dependencies through scripts/setup.sh --deps;
#  - builds the Release gateway into build-release/ (ninja rebuilds only what changed);
#  - starts, on loopback ports it picks: an nginx "Azure" upstream with fixed bodies, nginx as the
#    baseline reverse proxy, a paced SSE upstream (Node), redis-server, and several llm-gateway
#    instances (bare; bare with the default `threads: 0`; keys + memory limiter; keys + redis
#    limiter; everything on);
#  - pins the load generator to CPU 0 and every server process to CPU 1, except the `threads: 0`
#    gateway, which gets every CPU (one worker per CPU, sharing CPU 0 with the load generator);
#  - runs closed-loop wrk rounds (targets alternated A,B,C,A,B,C...), fixed-rate h2load runs, the
#    1,000-stream SSE test and the large-body test, then renders the report with verdicts;
#  - stops every process it started (trap), and removes its scratch directory under /tmp.
#
# Every knob can be overridden from the environment (BENCH_DURATION=20 bench/run.sh, ...): see
# the parameter block below. Traffic goes to 127.0.0.1 only; every loop is bounded.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tools/common.sh
. "$BENCH_DIR/tools/common.sh"
REPO=$(dirname "$BENCH_DIR")
MODE=full
SOAK=0
for arg in "$@"; do
  case "$arg" in
    --quick) MODE=quick ;;
    --soak) SOAK=1 ;;
    -h | --help)
      sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "bench/run.sh: unknown option $arg (try --help)" >&2
      exit 2
      ;;
  esac
done

# ---------------------------------------------------------------------------------------------
# Parameters. Full run: about 9 minutes of measurement. Quick: about 1 minute.
if [ "$MODE" = quick ]; then
  : "${BENCH_DURATION:=2}" "${BENCH_ROUNDS:=1}" "${BENCH_WARMUP:=1}"
  : "${BENCH_OL_DURATION:=3}" "${BENCH_OL_ROUNDS:=1}"
  : "${BENCH_STREAM_CHUNKS:=60}" "${BENCH_STREAM_RAMP_MS:=1000}"
  : "${BENCH_BODY_DURATION:=2}"
else
  : "${BENCH_DURATION:=10}" "${BENCH_ROUNDS:=3}" "${BENCH_WARMUP:=3}"
  : "${BENCH_OL_DURATION:=10}" "${BENCH_OL_ROUNDS:=2}"
  : "${BENCH_STREAM_CHUNKS:=100}" "${BENCH_STREAM_RAMP_MS:=2000}"
  : "${BENCH_BODY_DURATION:=8}"
fi
: "${BENCH_CONNS:=8}"                # wrk -t1 -c N for every closed-loop target
: "${BENCH_OL_RATE:=2000}"           # fixed request rate of the open-loop runs (req/s)
: "${BENCH_OL_CONNS:=20}"            # h2load clients sharing that rate
: "${BENCH_STREAMS:=1000}"           # concurrent SSE streams
: "${BENCH_STREAM_INTERVAL_MS:=50}"  # the paced upstream's delay between events
: "${BENCH_BODY_CONNS:=4}"           # concurrency of the large-body runs
: "${BENCH_BODY_SIZES_MIB:=1 20}"    # large request bodies to /v1/embeddings
: "${BENCH_SOAK_SECONDS:=600}"
: "${BENCH_SOAK_RATE:=2000}"
: "${BENCH_KEEP:=0}"                 # 1: keep the scratch directory (logs, rendered configs)
: "${BENCH_BUILD:=1}"                # 0: use build-release/llm-gateway as it is (no rebuild)

if [ "$MODE" = quick ]; then
  REPORT="$BENCH_DIR/results/quick.md"
else
  REPORT="$BENCH_DIR/results/latest.md"
fi

AZURE_KEY=bench-azure-key-0123456789abcdef
CLIENT_KEY=sk-bench-client-key-0123456789abcdef
ADMIN_TOKEN=bench-admin-token-0123456789
GW_BIN="$REPO/build-release/llm-gateway"
CHAT_BODY="$BENCH_DIR/data/chat-request.json"
STREAM_BODY="$BENCH_DIR/data/chat-request-stream.json"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# ---------------------------------------------------------------------------------------------
# Tools. Debian's service packages (nginx, redis-server) start a system instance when installed;
# a temporary policy-rc.d (only when the machine has none) keeps them from doing that.
with_no_service_start() {
  local created=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
    as_root chmod 755 /usr/sbin/policy-rc.d
    created=1
  fi
  local rc=0
  "$@" || rc=$?
  if [ "$created" = 1 ]; then as_root rm -f /usr/sbin/policy-rc.d; fi
  return "$rc"
}

install_tools() {
  local need=()
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
  command -v wrk >/dev/null 2>&1 || need+=(wrk)
  command -v h2load >/dev/null 2>&1 || need+=(nghttp2-client)
  command -v curl >/dev/null 2>&1 || need+=(curl)
  command -v taskset >/dev/null 2>&1 || need+=(util-linux)
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  local node_major
  node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
  [ "$node_major" -ge 18 ] || need+=(nodejs)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    with_no_service_start as_root apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  export PATH="$PATH:/usr/sbin:/sbin"
}

build_gateway() {
  if [ "$BENCH_BUILD" = 0 ]; then
    [ -x "$GW_BIN" ] || die "BENCH_BUILD=0 but $GW_BIN does not exist"
    log "warning: BENCH_BUILD=0: using $GW_BIN as it is, which may be older than the sources"
    return 0
  fi
  # Build dependencies (compiler, CMake, Boost, ...) come from the project's own setup script,
  # which skips apt-get when everything is there.
  with_no_service_start "$REPO/scripts/setup.sh" --deps
  if [ ! -f "$REPO/build-release/build.ninja" ]; then
    log "configuring build-release (Release, tests off)"
    cmake -S "$REPO" -B "$REPO/build-release" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLMGW_TESTS=OFF >/dev/null
  fi
  log "building build-release/llm-gateway (only what changed)"
  # A source saved while it was being compiled can leave an object newer than its source but
  # built from the old text; one clean rebuild (cheap with ccache) rules that out before giving up.
  cmake --build "$REPO/build-release" --target llm-gateway >"$RUN/build.log" 2>&1 ||
    { log "build failed; retrying once from clean" && cmake --build "$REPO/build-release" --target llm-gateway --clean-first >"$RUN/build.log" 2>&1; } ||
    {
      tail -30 "$RUN/build.log" >&2
      die "the Release build failed (BENCH_BUILD=0 benchmarks the existing build-release/llm-gateway as it is)"
    }
  [ -x "$GW_BIN" ] || die "$GW_BIN missing after the build"
}

# ---------------------------------------------------------------------------------------------
# Processes. Every process started is recorded as PID:SIGNAL and stopped by cleanup().
PIDS=()
LAST_PID=
SCRATCH=
cleanup() {
  local rc=$?
  set +e
  local entry pid
  for entry in "${PIDS[@]}"; do
    pid=${entry%%:*}
    kill -s "${entry##*:}" "$pid" 2>/dev/null
  done
  local i alive
  for i in $(seq 1 50); do
    alive=0
    for entry in "${PIDS[@]}"; do kill -0 "${entry%%:*}" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for entry in "${PIDS[@]}"; do kill -KILL "${entry%%:*}" 2>/dev/null; done
  if [ -n "$SCRATCH" ] && [ -d "$SCRATCH" ]; then
    if [ "$BENCH_KEEP" = 1 ]; then log "kept $SCRATCH"; else rm -rf "$SCRATCH"; fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_pid() { # PID SIGNAL: stop one process started here and forget it
  local pid=$1 sig=${2:-TERM} i
  kill -s "$sig" "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local keep=() entry
  for entry in "${PIDS[@]}"; do [ "${entry%%:*}" = "$pid" ] || keep+=("$entry"); done
  PIDS=("${keep[@]}")
}

children_of() { # PID: its child PIDs
  if [ -r "/proc/$1/task/$1/children" ]; then
    cat "/proc/$1/task/$1/children"
  else
    local d
    for d in /proc/[0-9]*; do
      [ "$(awk '{sub(/^.*\) /, ""); print $2}' "$d/stat" 2>/dev/null)" = "$1" ] && echo "${d#/proc/}"
    done
  fi
}

http_up() { # URL: true once anything answers HTTP there (bounded: 10 s)
  local i code
  for i in $(seq 1 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$1" 2>/dev/null || true)
    [ -n "$code" ] && [ "$code" != 000 ] && return 0
    sleep 0.1
  done
  return 1
}

start_nginx() { # NAME CONF: nginx master in the foreground (daemon off), pinned to the server CPU
  taskset -c "$SUT_CPU" nginx -p "$SCRATCH" -e "$SCRATCH/logs/$1-startup.log" -c "$2" -g 'daemon off;' \
    >"$SCRATCH/logs/$1.out" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID:QUIT")
}

nginx_worker() { # MASTER_PID: its (single) worker, once it exists (bounded: 5 s)
  local i w
  for i in $(seq 1 50); do
    w=$(children_of "$1" | tr ' ' '\n' | grep -m1 . || true)
    [ -n "$w" ] && {
      echo "$w"
      return 0
    }
    sleep 0.1
  done
  return 1
}

start_gateway() { # NAME CONFIG PORT UPSTREAM_URL [VAR=value ...]; GW_CPU_LIST=... overrides the pinning
  local name=$1 cfg=$2 port=$3 up=$4 cpus=${GW_CPU_LIST:-$SUT_CPU}
  shift 4
  env BENCH_GW_PORT="$port" BENCH_UPSTREAM_URL="$up" BENCH_AZURE_KEY="$AZURE_KEY" \
    BENCH_CLIENT_KEY="$CLIENT_KEY" BENCH_ADMIN_TOKEN="$ADMIN_TOKEN" "$@" \
    taskset -c "$cpus" "$GW_BIN" --config "$BENCH_DIR/conf/$cfg" \
    >"$SCRATCH/logs/$name.out" 2>"$SCRATCH/logs/$name.err" &
  LAST_PID=$!
  PIDS+=("$LAST_PID:TERM")
  local i
  for i in $(seq 1 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$port/readyz" 2>/dev/null)" = 200 ] &&
      return 0
    kill -0 "$LAST_PID" 2>/dev/null || break
    sleep 0.1
  done
  cat "$SCRATCH/logs/$name.err" >&2
  die "$name did not become ready"
}

# /proc readings. CPU time in clock ticks (utime + stime, all threads); memory in KiB.
cpu_ticks() { if [ -n "${1:-}" ]; then awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat" 2>/dev/null || echo 0; else echo 0; fi; }
proc_kib() { if [ -n "${1:-}" ]; then awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status" 2>/dev/null || true; fi; }
reset_hwm() { if [ -n "${1:-}" ]; then echo 5 >"/proc/$1/clear_refs" 2>/dev/null || true; fi; }
num_or_null() { if [[ "${1:-}" =~ ^-?[0-9]+(\.[0-9]+)?$ ]]; then echo "$1"; else echo null; fi; }

record() { printf '%s\n' "$1" >>"$RAW"; }
check() { # NAME OK(true|false) DETAIL
  local detail=${3//\\/\\\\}
  detail=${detail//\"/\\\"}
  detail=$(printf '%s' "$detail" | tr '\n\t' '  ')
  record "{\"kind\":\"check\",\"name\":\"$1\",\"ok\":$2,\"detail\":\"$detail\"}"
  if [ "$2" = true ]; then log "check ok: $1"; else log "CHECK FAILED: $1: $3"; fi
}

metrics_requests() { # total of llm_gateway_requests_total on the all-on gateway's admin listener
  curl -s --max-time 5 -H "Authorization: Bearer $ADMIN_TOKEN" "http://127.0.0.1:$ADMIN_PORT/metrics" 2>/dev/null |
    awk '/^llm_gateway_requests_total[{ ]/ {s += $NF} END {printf "%d\n", s}'
}

# ---------------------------------------------------------------------------------------------
# One closed-loop run: wrk on the load CPU against TARGET; CPU time and peak RSS of the proxy
# process (and of the upstream nginx worker, and of redis where it takes part) around it.
declare -A T_URL T_PROXY T_AUX
closed_run() { # WORKLOAD TARGET ROUND BODYFILE STREAM(0|1) DURATION [record=1]
  local workload=$1 target=$2 round=$3 body=$4 stream=$5 duration=$6 keep=${7:-1}
  local url=${T_URL[$target]} proxy=${T_PROXY[$target]:-} aux=${T_AUX[$target]:-}
  [ "$workload" = sse ] && url=${T_SSE_URL[$target]}
  local m0=null m1=null lines=null
  if [ "$target" = gateway-all-on ] && [ "$keep" = 1 ]; then
    : >"$ACCESS_LOG"
    m0=$(metrics_requests)
  fi
  reset_hwm "$proxy"
  local p0 u0 a0 p1 u1 a1 out res
  p0=$(cpu_ticks "$proxy")
  u0=$(cpu_ticks "$UP_WORKER")
  a0=$(cpu_ticks "$aux")
  out=$(BENCH_BODY_FILE="$body" BENCH_AUTH="$CLIENT_KEY" BENCH_STREAM="$stream" \
    taskset -c "$LOAD_CPU" wrk -t1 -c"$BENCH_CONNS" -d"${duration}s" --timeout 10s \
    -s "$BENCH_DIR/tools/wrk-post.lua" "$url" 2>&1) || true
  p1=$(cpu_ticks "$proxy")
  u1=$(cpu_ticks "$UP_WORKER")
  a1=$(cpu_ticks "$aux")
  [ "$keep" = 1 ] || return 0
  res=$(printf '%s\n' "$out" | sed -n 's/^BENCH_RESULT //p' | tail -1)
  if [ -z "$res" ]; then
    log "wrk produced no result for $target: $(printf '%s' "$out" | tail -3 | tr '\n' ' ')"
    res=null
  fi
  if [ "$target" = gateway-all-on ]; then
    sleep 0.3 # the access log is written by its own thread
    lines=$(wc -l <"$ACCESS_LOG" | tr -d ' ')
    m1=$(metrics_requests)
  fi
  local hwm rss
  hwm=$(proc_kib "$proxy" VmHWM)
  rss=$(proc_kib "$proxy" VmRSS)
  record "{\"kind\":\"closed\",\"workload\":\"$workload\",\"target\":\"$target\",\"round\":$round,\"duration_s\":$duration,\"conns\":$BENCH_CONNS,\"clk_tck\":$CLK_TCK,\"proxy_cpu_ticks\":$([ -n "$proxy" ] && echo $((p1 - p0)) || echo null),\"upstream_cpu_ticks\":$((u1 - u0)),\"aux_cpu_ticks\":$([ -n "$aux" ] && echo $((a1 - a0)) || echo null),\"proxy_hwm_kib\":$(num_or_null "$hwm"),\"proxy_rss_kib\":$(num_or_null "$rss"),\"access_log_lines\":$(num_or_null "$lines"),\"metrics_requests_delta\":$([ "$m0" != null ] && [ -n "$m1" ] && echo $((m1 - m0)) || echo null),\"wrk\":$res}"
  local rps
  rps=$(printf '%s' "$res" | sed -n 's/.*"requests":\([0-9]*\).*/\1/p')
  log "  $workload $target round $round: ${rps:-?} requests in ${duration}s"
}

# ---------------------------------------------------------------------------------------------
main() {
  SCRATCH=$(mktemp -d /tmp/llmgw-bench.XXXXXX)
  chmod 755 "$SCRATCH" # nginx workers run as nobody and keep request bodies under $SCRATCH/tmp
  RUN=$SCRATCH
  mkdir -p "$SCRATCH/logs" "$SCRATCH/tmp" "$BENCH_DIR/results"
  RAW="$SCRATCH/raw.jsonl"
  : >"$RAW"
  local started_at load_before
  started_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  load_before=$(cut -d' ' -f1-3 /proc/loadavg)

  install_tools
  build_gateway
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  [ "$(ulimit -n)" -ge $((BENCH_STREAMS * 2 + 256)) ] ||
    log "warning: ulimit -n is $(ulimit -n); ${BENCH_STREAMS} streams need about $((BENCH_STREAMS * 2 + 256))"
  CLK_TCK=$(getconf CLK_TCK)
  if [ "$(nproc)" -ge 2 ]; then
    LOAD_CPU=0
    SUT_CPU=1
    ALL_CPUS="0-$(($(nproc) - 1))"
  else
    LOAD_CPU=0
    SUT_CPU=0
    ALL_CPUS=0
    log "warning: one CPU only; load generator and servers share it"
  fi

  local ports
  read -r UP_PORT PROXY_PORT PACED_PORT PACED_PROXY_PORT REDIS_PORT GW_PORT GWM_PORT GWR_PORT GWA_PORT ADMIN_PORT \
    GWS_PORT GWB_PORT GWK_PORT GWT_PORT <<<"$(free_ports 14)"
  ACCESS_LOG="$SCRATCH/access.log"

  # --- upstreams -------------------------------------------------------------------------------
  render_nginx_confs "$SCRATCH" "$UP_PORT" "$PROXY_PORT" "$PACED_PORT" "$PACED_PROXY_PORT" "$AZURE_KEY"
  start_nginx upstream "$SCRATCH/upstream.conf"
  UP_MASTER=$LAST_PID
  start_nginx proxy "$SCRATCH/proxy.conf"
  PROXY_MASTER=$LAST_PID
  http_up "http://127.0.0.1:$UP_PORT/" || die "the upstream nginx did not start (see $SCRATCH/logs)"
  http_up "http://127.0.0.1:$PROXY_PORT/" || die "the proxy nginx did not start (see $SCRATCH/logs)"
  UP_WORKER=$(nginx_worker "$UP_MASTER")
  PROXY_WORKER=$(nginx_worker "$PROXY_MASTER")

  taskset -c "$SUT_CPU" node "$BENCH_DIR/tools/paced-sse-server.mjs" --port "$PACED_PORT" \
    --chunks "$BENCH_STREAM_CHUNKS" --interval-ms "$BENCH_STREAM_INTERVAL_MS" >"$SCRATCH/logs/paced.out" 2>&1 &
  PACED_PID=$!
  PIDS+=("$PACED_PID:TERM")

  REDIS_PID=
  if command -v redis-server >/dev/null 2>&1; then
    taskset -c "$SUT_CPU" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
      --daemonize no --logfile "$SCRATCH/logs/redis.log" --dir "$SCRATCH/tmp" >/dev/null 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID:TERM")
  fi

  # --- gateways --------------------------------------------------------------------------------
  local up_url="http://127.0.0.1:$UP_PORT"
  start_gateway gateway gateway-bare.yaml "$GW_PORT" "$up_url"
  GW_PID=$LAST_PID
  # The default configuration: `threads: 0` = one worker per CPU the machine reports. It gets every
  # CPU (it would not be the default otherwise), so it shares CPU 0 with the load generator.
  GW_CPU_LIST="$ALL_CPUS" start_gateway gateway-threads0 gateway-bare.yaml "$GWT_PORT" "$up_url" BENCH_GW_THREADS=0
  GWT_PID=$LAST_PID
  start_gateway gateway-keys-memory gateway-keys.yaml "$GWM_PORT" "$up_url" BENCH_LIMIT_STORE=memory
  GWM_PID=$LAST_PID
  GWR_PID=
  if [ -n "$REDIS_PID" ]; then
    local i
    for i in $(seq 1 50); do
      (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null && break
      sleep 0.1
    done
    start_gateway gateway-keys-redis gateway-keys.yaml "$GWR_PORT" "$up_url" BENCH_LIMIT_STORE=redis \
      BENCH_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
    GWR_PID=$LAST_PID
  fi
  start_gateway gateway-all-on gateway-full.yaml "$GWA_PORT" "$up_url" BENCH_ACCESS_LOG="$ACCESS_LOG" \
    BENCH_ADMIN_PORT="$ADMIN_PORT"
  GWA_PID=$LAST_PID
  http_up "http://127.0.0.1:$PACED_PORT/" || die "the paced SSE upstream did not start"
  # The threads: 0 gateway's worker count, from the thread counts (/proc/PID/status Threads): the
  # threads: 1 gateway from the same file has one worker plus the same helper threads.
  local th1 th0
  th1=$(proc_kib "$GW_PID" Threads)
  th0=$(proc_kib "$GWT_PID" Threads)
  GWT_WORKERS=$([ -n "$th1" ] && [ -n "$th0" ] && echo $((th0 - th1 + 1)) || echo '?')

  local azure_chat="/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"
  T_URL[direct]="http://127.0.0.1:$UP_PORT$azure_chat"
  T_URL[nginx]="http://127.0.0.1:$PROXY_PORT/v1/chat/completions"
  T_URL[gateway]="http://127.0.0.1:$GW_PORT/v1/chat/completions"
  T_URL[gateway-threads0]="http://127.0.0.1:$GWT_PORT/v1/chat/completions"
  T_URL[gateway-keys-memory]="http://127.0.0.1:$GWM_PORT/v1/chat/completions"
  T_URL[gateway-keys-redis]="http://127.0.0.1:$GWR_PORT/v1/chat/completions"
  T_URL[gateway-all-on]="http://127.0.0.1:$GWA_PORT/v1/chat/completions"
  declare -gA T_SSE_URL
  T_SSE_URL[direct]=${T_URL[direct]}
  T_SSE_URL[nginx]=${T_URL[nginx]}
  T_SSE_URL[gateway]=${T_URL[gateway]}
  T_SSE_URL[gateway-threads0]=${T_URL[gateway-threads0]}
  T_PROXY[nginx]=$PROXY_WORKER
  T_PROXY[gateway]=$GW_PID
  T_PROXY[gateway-threads0]=$GWT_PID
  T_PROXY[gateway-keys-memory]=$GWM_PID
  T_PROXY[gateway-keys-redis]=$GWR_PID
  T_PROXY[gateway-all-on]=$GWA_PID
  T_AUX[gateway-keys-redis]=$REDIS_PID
  local chat_targets=(direct nginx gateway gateway-threads0 gateway-keys-memory)
  [ -n "$GWR_PID" ] && chat_targets+=(gateway-keys-redis)
  chat_targets+=(gateway-all-on)
  SSE_TARGETS=(direct nginx gateway gateway-threads0)
  local sse_targets=("${SSE_TARGETS[@]}")

  # --- correctness before speed ------------------------------------------------------------------
  sanity_checks "${chat_targets[@]}"

  # --- closed loop, alternated -------------------------------------------------------------------
  log "closed loop: wrk -t1 -c$BENCH_CONNS, ${BENCH_DURATION}s per run, $BENCH_ROUNDS round(s); warm-up ${BENCH_WARMUP}s each"
  local t r
  for t in "${chat_targets[@]}"; do closed_run chat "$t" 0 "$CHAT_BODY" 0 "$BENCH_WARMUP" 0; done
  for t in "${sse_targets[@]}"; do closed_run sse "$t" 0 "$STREAM_BODY" 1 "$BENCH_WARMUP" 0; done
  for r in $(seq 1 "$BENCH_ROUNDS"); do
    for t in "${chat_targets[@]}"; do closed_run chat "$t" "$r" "$CHAT_BODY" 0 "$BENCH_DURATION"; done
    for t in "${sse_targets[@]}"; do closed_run sse "$t" "$r" "$STREAM_BODY" 1 "$BENCH_DURATION"; done
  done

  open_loop_runs
  streaming_runs
  body_runs
  [ "$SOAK" = 1 ] && soak_run

  # --- gateway diagnostics: anything at warn level or above is worth a look ---------------------
  local f n
  for f in "$SCRATCH"/logs/gateway*.err; do
    n=$(grep -c '"level":"\(warn\|error\)"' "$f" 2>/dev/null || true)
    check "diagnostics of $(basename "$f" .err): no warn/error lines" "$([ "${n:-0}" = 0 ] && echo true || echo false)" \
      "$(grep -m3 '"level":"\(warn\|error\)"' "$f" 2>/dev/null || true)"
  done

  # --- report ------------------------------------------------------------------------------------
  local meta="$SCRATCH/meta.json"
  node -e '
    const [file, ...kv] = process.argv.slice(1); const o = {};
    for (const p of kv) { const i = p.indexOf("="); o[p.slice(0, i)] = p.slice(i + 1); }
    require("fs").writeFileSync(file, JSON.stringify(o));' "$meta" \
    mode="$MODE" soak="$SOAK" started_at="$started_at" finished_at="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    load_before="$load_before" load_after="$(cut -d' ' -f1-3 /proc/loadavg)" \
    git="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet HEAD -- src include CMakeLists.txt 2>/dev/null || echo '+dirty')$([ "$BENCH_BUILD" = 0 ] && echo ' (not rebuilt)')" \
    kernel="$(uname -r)" cpu="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)" nproc="$(nproc)" \
    nginx="$(nginx -v 2>&1 | sed 's/.*nginx\///')" wrk="$(wrk -v 2>&1 | head -1 | awk '{print $2}')" \
    h2load="$(h2load --version 2>&1 | head -1 | awk '{print $NF}')" node="$(node --version)" \
    redis="$(redis-server --version 2>/dev/null | sed -n 's/.*v=\([^ ]*\).*/\1/p')" \
    conns="$BENCH_CONNS" duration="$BENCH_DURATION" rounds="$BENCH_ROUNDS" warmup="$BENCH_WARMUP" \
    ol_rate="$BENCH_OL_RATE" ol_conns="$BENCH_OL_CONNS" ol_duration="$BENCH_OL_DURATION" ol_rounds="$BENCH_OL_ROUNDS" \
    streams="$BENCH_STREAMS" stream_chunks="$BENCH_STREAM_CHUNKS" stream_interval_ms="$BENCH_STREAM_INTERVAL_MS" \
    stream_ramp_ms="$BENCH_STREAM_RAMP_MS" body_conns="$BENCH_BODY_CONNS" body_duration="$BENCH_BODY_DURATION" \
    load_cpu="$LOAD_CPU" sut_cpu="$SUT_CPU" all_cpus="$ALL_CPUS" gw_threads0_workers="$GWT_WORKERS" \
    soak_seconds="$BENCH_SOAK_SECONDS" soak_rate="$BENCH_SOAK_RATE"
  node "$BENCH_DIR/tools/report.mjs" "$meta" "$RAW" >"$REPORT.tmp"
  mv "$REPORT.tmp" "$REPORT"
  cp "$RAW" "${REPORT%.md}.jsonl"
  cat "$REPORT"
  log "report written to ${REPORT#"$REPO"/} (raw records: ${REPORT%.md}.jsonl)"
}

# ---------------------------------------------------------------------------------------------
sanity_checks() { # every target answers the chat body with the upstream's bytes, unchanged
  local t code
  for t in "$@"; do
    code=$(curl -s -o "$SCRATCH/sanity-$t.json" -w '%{http_code}' --max-time 5 -X POST \
      -H 'content-type: application/json' -H "authorization: Bearer $CLIENT_KEY" \
      --data-binary "@$CHAT_BODY" "${T_URL[$t]}" || true)
    if [ "$code" = 200 ] && cmp -s "$SCRATCH/sanity-$t.json" "$BENCH_DIR/data/azure-chat-response.json"; then
      check "$t answers 200 with the upstream body byte for byte" true ""
    else
      check "$t answers 200 with the upstream body byte for byte" false "status $code, body $(head -c 300 "$SCRATCH/sanity-$t.json" 2>/dev/null)"
    fi
  done
  for t in "${SSE_TARGETS[@]}"; do
    code=$(curl -s -o "$SCRATCH/sanity-sse-$t.txt" -w '%{http_code}' --max-time 5 -X POST \
      -H 'content-type: application/json' -H 'x-bench-stream: 1' -H "authorization: Bearer $CLIENT_KEY" \
      --data-binary "@$STREAM_BODY" "${T_URL[$t]}" || true)
    if [ "$code" = 200 ] && cmp -s "$SCRATCH/sanity-sse-$t.txt" "$BENCH_DIR/data/azure-chat-stream.sse"; then
      check "$t relays the fixed SSE body byte for byte" true ""
    else
      check "$t relays the fixed SSE body byte for byte" false "status $code"
    fi
  done
  # The keyed gateways must refuse a request without the key (else the limiter is not in the path).
  for t in gateway-keys-memory gateway-all-on; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X POST -H 'content-type: application/json' \
      --data-binary "@$CHAT_BODY" "${T_URL[$t]}" || true)
    check "$t refuses a request without a client key (401)" "$([ "$code" = 401 ] && echo true || echo false)" "status $code"
  done
}

open_loop_runs() { # fixed request rate with h2load (--rps per client); exact percentiles from its log
  local per=$((BENCH_OL_RATE / BENCH_OL_CONNS))
  [ "$per" -ge 1 ] || per=1
  local targets=(direct nginx gateway gateway-all-on) r t f out
  log "open loop: h2load --h1 -c$BENCH_OL_CONNS --rps=$per (= $((per * BENCH_OL_CONNS)) req/s), ${BENCH_OL_DURATION}s, $BENCH_OL_ROUNDS round(s)"
  for r in $(seq 1 "$BENCH_OL_ROUNDS"); do
    for t in "${targets[@]}"; do
      f="$SCRATCH/h2load-$t-$r.log"
      local proxy=${T_PROXY[$t]:-} p0 p1
      p0=$(cpu_ticks "$proxy")
      taskset -c "$LOAD_CPU" h2load --h1 -t1 -c "$BENCH_OL_CONNS" --rps="$per" -D "$BENCH_OL_DURATION" \
        --warm-up-time=1 -d "$CHAT_BODY" -H 'content-type: application/json' \
        -H "authorization: Bearer $CLIENT_KEY" --log-file="$f" "${T_URL[$t]}" >"$SCRATCH/h2load-$t-$r.out" 2>&1 || true
      p1=$(cpu_ticks "$proxy")
      if [ -s "$f" ]; then
        out=$(node "$BENCH_DIR/tools/h2load-stats.mjs" "$f")
      else
        out=null
        log "h2load produced no log for $t: $(tail -3 "$SCRATCH/h2load-$t-$r.out" | tr '\n' ' ')"
      fi
      record "{\"kind\":\"open\",\"target\":\"$t\",\"round\":$r,\"rate\":$((per * BENCH_OL_CONNS)),\"conns\":$BENCH_OL_CONNS,\"duration_s\":$BENCH_OL_DURATION,\"clk_tck\":$CLK_TCK,\"proxy_cpu_ticks\":$([ -n "$proxy" ] && echo $((p1 - p0)) || echo null),\"h2load\":$out}"
      log "  open $t round $r done"
      rm -f "$f"
    done
  done
}

streaming_runs() { # BENCH_STREAMS concurrent paced SSE streams: direct, through nginx, through a fresh gateway
  local timeout_ms=$((BENCH_STREAM_RAMP_MS + BENCH_STREAM_CHUNKS * BENCH_STREAM_INTERVAL_MS + 30000))
  local azure_chat="/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21" out
  log "streams: $BENCH_STREAMS x $BENCH_STREAM_CHUNKS events every ${BENCH_STREAM_INTERVAL_MS} ms, opened over ${BENCH_STREAM_RAMP_MS} ms"
  out=$(taskset -c "$LOAD_CPU" node "$BENCH_DIR/tools/stream-client.mjs" \
    --url "http://127.0.0.1:$PACED_PORT$azure_chat" --body "$STREAM_BODY" --streams "$BENCH_STREAMS" \
    --ramp-ms "$BENCH_STREAM_RAMP_MS" --chunks "$BENCH_STREAM_CHUNKS" --timeout-ms "$timeout_ms" 2>"$SCRATCH/logs/stream-direct.err") || true
  record "{\"kind\":\"stream\",\"target\":\"direct\",\"result\":${out:-null}}"
  log "  streams direct done"
  sleep 1
  local idle hwm p0 p1
  reset_hwm "$PROXY_WORKER"
  idle=$(proc_kib "$PROXY_WORKER" VmRSS)
  p0=$(cpu_ticks "$PROXY_WORKER")
  out=$(taskset -c "$LOAD_CPU" node "$BENCH_DIR/tools/stream-client.mjs" \
    --url "http://127.0.0.1:$PACED_PROXY_PORT/v1/chat/completions" --body "$STREAM_BODY" --streams "$BENCH_STREAMS" \
    --ramp-ms "$BENCH_STREAM_RAMP_MS" --chunks "$BENCH_STREAM_CHUNKS" --timeout-ms "$timeout_ms" \
    --auth "$CLIENT_KEY" --pid "$PROXY_WORKER" 2>"$SCRATCH/logs/stream-nginx.err") || true
  p1=$(cpu_ticks "$PROXY_WORKER")
  hwm=$(proc_kib "$PROXY_WORKER" VmHWM)
  record "{\"kind\":\"stream\",\"target\":\"nginx\",\"idle_rss_kib\":$(num_or_null "$idle"),\"hwm_kib\":$(num_or_null "$hwm"),\"cpu_ticks\":$((p1 - p0)),\"clk_tck\":$CLK_TCK,\"result\":${out:-null}}"
  log "  streams through nginx done"
  sleep 1
  start_gateway gateway-streams gateway-bare.yaml "$GWS_PORT" "http://127.0.0.1:$PACED_PORT"
  local gws=$LAST_PID
  idle=$(proc_kib "$gws" VmRSS)
  p0=$(cpu_ticks "$gws")
  out=$(taskset -c "$LOAD_CPU" node "$BENCH_DIR/tools/stream-client.mjs" \
    --url "http://127.0.0.1:$GWS_PORT/v1/chat/completions" --body "$STREAM_BODY" --streams "$BENCH_STREAMS" \
    --ramp-ms "$BENCH_STREAM_RAMP_MS" --chunks "$BENCH_STREAM_CHUNKS" --timeout-ms "$timeout_ms" \
    --auth "$CLIENT_KEY" --pid "$gws" 2>"$SCRATCH/logs/stream-gateway.err") || true
  p1=$(cpu_ticks "$gws")
  hwm=$(proc_kib "$gws" VmHWM)
  record "{\"kind\":\"stream\",\"target\":\"gateway\",\"idle_rss_kib\":$(num_or_null "$idle"),\"hwm_kib\":$(num_or_null "$hwm"),\"cpu_ticks\":$((p1 - p0)),\"clk_tck\":$CLK_TCK,\"result\":${out:-null}}"
  log "  streams through the gateway done"
  # After the streams, the gateway should hand memory back; RSS a moment later is recorded too.
  sleep 2
  record "{\"kind\":\"stream-after\",\"gateway_rss_kib\":$(num_or_null "$(proc_kib "$gws" VmRSS)")}"
  stop_pid "$gws" TERM
}

body_runs() { # large request bodies to /v1/embeddings: nginx, and a fresh gateway per size
  # No "direct" row: the upstream nginx answers with `return` before it has read the body, and wrk
  # then starts its next request while the previous body is still being discarded, which stalls
  # the connection. A proxy reads the whole body first, so the upstream's early answer is harmless.
  local size t f proxy base hwm p0 p1 out res
  for size in $BENCH_BODY_SIZES_MIB; do
    f="$SCRATCH/embeddings-${size}MiB.json"
    node -e '
      const bytes = Number(process.argv[2]) * 1024 * 1024;
      const head = "{\"model\":\"text-embedding-3-small\",\"input\":[";
      const tail = "],\"encoding_format\":\"float\"}";
      const item = JSON.stringify("Contoso Cloud runs managed PostgreSQL with read replicas in West Europe. ".repeat(100));
      let parts = []; let len = head.length + tail.length;
      while (len + item.length + 1 < bytes - 64) { parts.push(item); len += item.length + 1; }
      let body = head + parts.join(",");
      const rest = bytes - body.length - tail.length - 3;
      body += (parts.length ? ",\"" : "\"") + "x".repeat(Math.max(0, rest)) + "\"" + tail;
      require("fs").writeFileSync(process.argv[1], body);' "$f" "$size"
    log "large bodies: ${size} MiB, wrk -t1 -c$BENCH_BODY_CONNS, ${BENCH_BODY_DURATION}s"
    for t in nginx gateway; do
      local url
      case $t in
        nginx) url="http://127.0.0.1:$PROXY_PORT/v1/embeddings"; proxy=$PROXY_WORKER ;;
        gateway)
          start_gateway "gateway-body-$size" gateway-bare.yaml "$GWB_PORT" "http://127.0.0.1:$UP_PORT"
          proxy=$LAST_PID
          url="http://127.0.0.1:$GWB_PORT/v1/embeddings"
          curl -s -o /dev/null --max-time 5 -X POST -H 'content-type: application/json' \
            --data-binary '{"model":"text-embedding-3-small","input":"warm"}' "$url" || true
          ;;
      esac
      base=$(proc_kib "$proxy" VmRSS)
      reset_hwm "$proxy"
      p0=$(cpu_ticks "$proxy")
      out=$(BENCH_BODY_FILE="$f" BENCH_AUTH="$CLIENT_KEY" BENCH_STREAM=0 taskset -c "$LOAD_CPU" \
        wrk -t1 -c"$BENCH_BODY_CONNS" -d"${BENCH_BODY_DURATION}s" --timeout 30s \
        -s "$BENCH_DIR/tools/wrk-post.lua" "$url" 2>&1) || true
      p1=$(cpu_ticks "$proxy")
      hwm=$(proc_kib "$proxy" VmHWM)
      res=$(printf '%s\n' "$out" | sed -n 's/^BENCH_RESULT //p' | tail -1)
      [ -n "$res" ] || res=null
      record "{\"kind\":\"body\",\"target\":\"$t\",\"size_mib\":$size,\"bytes\":$(stat -c %s "$f"),\"conns\":$BENCH_BODY_CONNS,\"duration_s\":$BENCH_BODY_DURATION,\"clk_tck\":$CLK_TCK,\"proxy_cpu_ticks\":$([ -n "$proxy" ] && echo $((p1 - p0)) || echo null),\"proxy_base_rss_kib\":$(num_or_null "$base"),\"proxy_hwm_kib\":$(num_or_null "$hwm"),\"wrk\":$res}"
      log "  ${size} MiB $t done"
      [ "$t" = gateway ] && stop_pid "$proxy" TERM
    done
    rm -f "$f"
  done
}

soak_run() { # BENCH_SOAK_SECONDS at BENCH_SOAK_RATE through a fresh all-on gateway; RSS every 10 s
  local log_file="$SCRATCH/soak-access.log" per=$((BENCH_SOAK_RATE / BENCH_OL_CONNS))
  start_gateway gateway-soak gateway-full.yaml "$GWK_PORT" "http://127.0.0.1:$UP_PORT" \
    BENCH_ACCESS_LOG="$log_file" BENCH_ADMIN_PORT="$(free_ports 1)"
  local gw=$LAST_PID
  log "soak: ${BENCH_SOAK_SECONDS}s at $((per * BENCH_OL_CONNS)) req/s through an all-on gateway"
  taskset -c "$LOAD_CPU" timeout $((BENCH_SOAK_SECONDS + 60)) h2load --h1 -t1 -c "$BENCH_OL_CONNS" --rps="$per" \
    -D "$BENCH_SOAK_SECONDS" -d "$CHAT_BODY" -H 'content-type: application/json' \
    -H "authorization: Bearer $CLIENT_KEY" --log-file="$SCRATCH/soak-h2load.log" \
    "http://127.0.0.1:$GWK_PORT/v1/chat/completions" >"$SCRATCH/soak-h2load.out" 2>&1 &
  local h2=$!
  PIDS+=("$h2:TERM")
  local samples="" i elapsed rss
  for i in $(seq 0 $((BENCH_SOAK_SECONDS / 10))); do
    elapsed=$((i * 10))
    rss=$(proc_kib "$gw" VmRSS)
    samples+="${samples:+,}[$elapsed,$(num_or_null "$rss")]"
    [ $((i % 6)) = 5 ] && : >"$log_file" # keep /tmp from filling: the log is appended to (O_APPEND)
    [ "$elapsed" -ge "$BENCH_SOAK_SECONDS" ] && break
    kill -0 "$h2" 2>/dev/null || break
    sleep 10
  done
  local j
  for j in $(seq 1 120); do
    kill -0 "$h2" 2>/dev/null || break
    sleep 1
  done
  stop_pid "$h2" TERM
  local out=null
  [ -s "$SCRATCH/soak-h2load.log" ] && out=$(node "$BENCH_DIR/tools/h2load-stats.mjs" "$SCRATCH/soak-h2load.log")
  record "{\"kind\":\"soak\",\"seconds\":$BENCH_SOAK_SECONDS,\"rate\":$((per * BENCH_OL_CONNS)),\"rss_samples_kib\":[$samples],\"h2load\":$out}"
  rm -f "$SCRATCH/soak-h2load.log" "$log_file"
  stop_pid "$gw" TERM
}

main "$@"
