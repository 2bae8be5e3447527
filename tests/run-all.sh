#!/bin/bash
# Runs every test of ccsync and ends with one summary line: "tests: N passed, M failed".
#
#   unit and integration tests (cmocka) of the plain build (build/) and, unless
#   TEST_SANITIZED=0, of the AddressSanitizer + UndefinedBehaviorSanitizer build
#   (build/asan/); the Constant Contact simulator's contract test through Prism;
#   the OpenAPI lint; the deployment checks; `make run` and its demo (tests/run/check.sh).
# Each test binary starts the servers it needs (redis-server, ccsim, ccsyncd) on
# free loopback ports and stops them. Counts are cmocka's own, added up.
set -u
cd "$(dirname "$0")/.."
TEST_SANITIZED=${TEST_SANITIZED:-1}
LOG_DIR=${TEST_LOG_DIR:-build/test-logs}
mkdir -p "$LOG_DIR"
passed=0
failed=0
failures=()

# ASan: leaks are errors too; UBSan stops at the first finding.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

count_cmocka() { # log, name, exit status
    local log=$1 name=$2 rc=$3 p f
    p=$(grep -E '^\[  PASSED  \] [0-9]+ test' "$log" | awk '{s+=$4} END {print s+0}')
    f=$(grep -E '^\[  FAILED  \] [0-9]+ test' "$log" | awk '{s+=$4} END {print s+0}')
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1 # crashed, timed out or a sanitizer stopped it before cmocka could count
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    if [ "$f" -gt 0 ]; then
        failures+=("$name (see $log)")
        grep -E '^\[  FAILED  \]|^\[  ERROR   \]|ERROR: |runtime error' "$log" | head -10 | sed 's/^/    /'
    fi
    printf '%-58s %3d passed, %d failed\n' "$name" "$p" "$f"
}

run_suite() { # build dir, label
    local build=$1 label=$2 bin log rc kind
    for bin in "$build"/tests/unit/test_* "$build"/tests/integration/test_*; do
        [ -x "$bin" ] || continue
        kind=$(basename "$(dirname "$bin")")
        log="$LOG_DIR/$label-$kind-$(basename "$bin").log"
        BUILD=$build CCSYNCD_BIN=$build/ccsyncd CCSIM_BIN=$build/ccsim \
            timeout 900 "$bin" >"$log" 2>&1
        rc=$?
        count_cmocka "$log" "$label $kind/$(basename "$bin")" "$rc"
    done
}

run_script() { # name, command...
    local name=$1 log rc p f line
    shift
    log="$LOG_DIR/$name.log"
    "$@" >"$log" 2>&1
    rc=$?
    line=$(grep -E '^[a-z-]+: [0-9]+ passed, [0-9]+ failed' "$log" | tail -1)
    p=$(echo "$line" | sed -E 's/.* ([0-9]+) passed.*/\1/')
    f=$(echo "$line" | sed -E 's/.*passed, ([0-9]+) failed.*/\1/')
    [ -n "$line" ] || { p=0; f=0; }
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    passed=$((passed + p))
    failed=$((failed + f))
    if [ "$f" -gt 0 ]; then
        failures+=("$name (see $log)")
        tail -15 "$log" | sed 's/^/    /'
    fi
    printf '%-58s %3d passed, %d failed\n' "$name" "$p" "$f"
}

run_suite build plain
[ "$TEST_SANITIZED" = 1 ] && run_suite build/asan asan
[ -x tests/contract/run.sh ] && run_script contract env BUILD=build tests/contract/run.sh
[ -x scripts/lint-openapi.sh ] && run_script openapi scripts/lint-openapi.sh
[ -x tests/deploy/check.sh ] && run_script deploy env BUILD=build tests/deploy/check.sh
[ -x tests/run/check.sh ] && run_script run env BUILD=build tests/run/check.sh

if [ ${#failures[@]} -gt 0 ]; then
    echo "failed:"
    printf '  %s\n' "${failures[@]}"
fi
echo "tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
