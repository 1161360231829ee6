#!/usr/bin/env bash
# Fuzzes every parser of untrusted bytes (tests/fuzz/<name>_fuzz.cpp) with libFuzzer under
# AddressSanitizer + UndefinedBehaviorSanitizer, then prints per target the executions, the
# coverage (cov/ft of libFuzzer's last stats line) and whether it crashed.
#   scripts/fuzz.sh [SECONDS] [--merge] [--keep-going] [TARGET...]
#     SECONDS       how long each target runs (default 60); at most two run at once
#     --merge       afterwards, add the inputs that found new coverage to the committed corpus
#                   (tests/fuzz/corpus/<name>/; libFuzzer's -merge=1 keeps only those, but a
#                   long run can still add dozens of files: review before committing)
#     --keep-going  fork mode with -ignore_crashes=1: a crash is saved and fuzzing continues,
#                   so one known bug does not end the run (fork mode counts cov differently)
#     TARGET        json_scan, sse, ... (default: all)
# Environment: BUILD_DIR=build-fuzz, CXX_FUZZ=clang++-16 (clang-16, libclang-rt-16-dev — where
# clang's fuzzer and sanitizer runtimes live — and libfuzzer-16-dev are installed with apt-get
# when missing, as setup.sh installs the rest).
# Reproducers go to $BUILD_DIR/artifacts/<name>/crash-* (timeout-*, oom-*, leak-*), logs to
# $BUILD_DIR/logs/<name>.log, the growing working corpus to $BUILD_DIR/corpus/<name>/. Exits 1
# when any target crashed. Replay one input with: $BUILD_DIR/tests/fuzz/<name>_fuzz FILE
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=60
merge=0
keep_going=0
targets=()
for arg in "$@"; do
  case $arg in
    --merge) merge=1 ;;
    --keep-going) keep_going=1 ;;
    -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    '' | *[!0-9]*) targets+=("$arg") ;;
    *) seconds=$arg ;;
  esac
done
if [ ${#targets[@]} -eq 0 ]; then
  for f in tests/fuzz/*_fuzz.cpp; do
    name=${f##*/}
    targets+=("${name%_fuzz.cpp}")
  done
fi

BUILD_DIR=${BUILD_DIR:-build-fuzz}
CXX_FUZZ=${CXX_FUZZ:-clang++-16}
have_fuzzer() {
  command -v "$CXX_FUZZ" >/dev/null &&
    ls /usr/lib/llvm-16/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1
}
if ! have_fuzzer; then
  # Debian bookworm's clang-16 and libFuzzer, with the build dependencies setup.sh installs.
  scripts/setup.sh --deps
  echo "fuzz.sh: installing clang-16 libfuzzer-16-dev" >&2
  if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo); fi
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    clang-16 libclang-rt-16-dev libfuzzer-16-dev llvm-16 >/dev/null
fi
if ! have_fuzzer; then
  echo "fuzz.sh needs $CXX_FUZZ and libFuzzer: apt-get install -y clang-16 libclang-rt-16-dev libfuzzer-16-dev" >&2
  exit 2
fi

# -O1 keeps the fuzzer fast and stacks readable; no NDEBUG, so Boost's assertions stay on, and
# _GLIBCXX_ASSERTIONS bounds-checks the standard containers, which ASan alone does not see into.
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_CXX_COMPILER="$CXX_FUZZ" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g -D_GLIBCXX_ASSERTIONS" \
  -DLLMGW_FUZZ=ON -DLLMGW_WERROR=ON >/dev/null
cmake --build "$BUILD_DIR" -j2 --target llmgw_fuzzers

symbolizer=$(command -v llvm-symbolizer-16 || command -v llvm-symbolizer || true)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:symbolize=1}
[ -n "$symbolizer" ] && export ASAN_SYMBOLIZER_PATH=$symbolizer

logs=$BUILD_DIR/logs
mkdir -p "$logs"

run_target() {
  local name=$1
  local bin=$BUILD_DIR/tests/fuzz/${name}_fuzz
  local work=$BUILD_DIR/corpus/$name
  local artifacts=$BUILD_DIR/artifacts/$name
  mkdir -p "$work" "$artifacts"
  # Seeds: the committed corpus without its crash-* reproducers. ctest replays those; as seeds
  # a known, unfixed crash would end every run at its first input.
  find "tests/fuzz/corpus/$name" -maxdepth 1 -type f ! -name 'crash-*' -exec cp -n -t "$work" {} +
  local mode=()
  [ "$keep_going" = 1 ] && mode=(-fork=1 -ignore_crashes=1)
  touch "$logs/$name.start"
  local rc=0
  "$bin" "${mode[@]}" -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "$work" >"$logs/$name.log" 2>&1 || rc=$?
  echo "$rc" >"$logs/$name.rc"
}

running=0
for name in "${targets[@]}"; do
  [ -x "$BUILD_DIR/tests/fuzz/${name}_fuzz" ] || { echo "no fuzz target '$name'" >&2; exit 2; }
  echo "fuzzing $name for ${seconds}s"
  run_target "$name" &
  running=$((running + 1))
  if [ "$running" -ge 2 ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait

crashed=0
printf '\n%-12s %12s %7s %8s  %s\n' target execs cov ft result
for name in "${targets[@]}"; do
  log=$logs/$name.log
  rc=$(cat "$logs/$name.rc")
  # Fork mode's stats lines start "#N:", the plain mode's "#N<TAB>"; -print_final_stats=1 adds
  # the exact count (also after a crash).
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  [ -n "$execs" ] || execs=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
  cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -1)
  found=$(find "$BUILD_DIR/artifacts/$name" -newer "$logs/$name.start" -type f \
    \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | sort)
  if [ "$rc" != 0 ] || [ -n "$found" ]; then
    crashed=1
    result="CRASH (exit $rc; $log)"
    for f in $found; do result+=$'\n'"             -> $f"; done
  else
    result=ok
  fi
  printf '%-12s %12s %7s %8s  %s\n' "$name" "${execs:-?}" "$(echo "$cov" | awk '{print $2}')" \
    "$(echo "$cov" | awk '{print $4}')" "$result"
done

if [ "$merge" = 1 ]; then
  for name in "${targets[@]}"; do
    before=$(find "tests/fuzz/corpus/$name" -type f | wc -l)
    "$BUILD_DIR/tests/fuzz/${name}_fuzz" -merge=1 -timeout=10 "tests/fuzz/corpus/$name" \
      "$BUILD_DIR/corpus/$name" >"$logs/$name.merge.log" 2>&1 ||
      echo "merge of $name failed: $logs/$name.merge.log" >&2
    after=$(find "tests/fuzz/corpus/$name" -type f | wc -l)
    echo "merged $name: $((after - before)) new inputs in tests/fuzz/corpus/$name"
  done
fi

exit "$crashed"
