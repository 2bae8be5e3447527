#!/bin/bash
# Runs every test of ccsync and ends with one summary line: "tests: N passed, M failed".
#
#   unit and integration tests (cmocka) of the plain build (build/) and, unless
#   TEST_SANITIZED=0, of the AddressSanitizer + UndefinedBehaviorSanitizer build
#   (build/asan/); the Constant Contact simulator's contract test through Prism;
#   the OpenAPI lint; the deployment checks; `make run` and its demo (tests/run/check.sh);
#   the Prometheus alert rules (tests/alerts/check.sh); the status page in chromium
#   (tests/browser/check.sh, screenshots in build/test-artifacts/).
# Each test binary starts the servers it needs (redis-server, ccsim, ccsyncd) on
# free loopback ports and stops them, so binaries run side by side: TEST_JOBS at
# once (default 6: the suite mostly waits on leases, timeouts and paced calls, so
# 2 cores keep up). The longest run first. Each has its own log in $TEST_LOG_DIR (build/test-logs); the
# results are counted in a fixed order once all have ended. Counts are cmocka's own,
# added up.
set -u
cd "$(dirname "$0")/.." || exit 1
TEST_SANITIZED=${TEST_SANITIZED:-1}
TEST_JOBS=${TEST_JOBS:-6}
LOG_DIR=${TEST_LOG_DIR:-build/test-logs}
mkdir -p "$LOG_DIR"
passed=0
failed=0
failures=()

# ASan: leaks are errors too; UBSan stops at the first finding.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

count_cmocka() { # log, name, exit status, seconds
    local log=$1 name=$2 rc=$3 secs=$4 p f
    p=$(grep -E '^\[  PASSED  \] [0-9]+ test' "$log" | awk '{s+=$4} END {print s+0}')
    f=$(grep -E '^\[  FAILED  \] [0-9]+ test' "$log" | awk '{s+=$4} END {print s+0}')
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1 # crashed, timed out or a sanitizer stopped it before cmocka could count
    fi
    # A failed group setup or teardown (a server that would not stop, a sanitizer
    # finding at its exit) leaves cmocka's exit status 0: count it here.
    f=$((f + $(grep -cE '^\[  FAILED  \] GROUP (SETUP|TEARDOWN)' "$log")))
    passed=$((passed + p))
    failed=$((failed + f))
    if [ "$f" -gt 0 ]; then
        failures+=("$name (see $log)")
        grep -E '^\[  FAILED  \]|^\[  ERROR   \]|ERROR: |runtime error|exited with' "$log" | head -10 | sed 's/^/    /'
    fi
    printf '%-52s %3d passed, %d failed %5ss\n' "$name" "$p" "$f" "$secs"
}

count_script() { # log, name, exit status, seconds
    local log=$1 name=$2 rc=$3 secs=$4 p f line
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
    printf '%-52s %3d passed, %d failed %5ss\n' "$name" "$p" "$f" "$secs"
}

# ---- the jobs: "kind|name|log|command..." lines, started in this order ----
JOBS=()
add_binaries() { # build dir, label
    local build=$1 label=$2 bin kind
    for bin in "$build"/tests/integration/test_* "$build"/tests/unit/test_*; do
        [ -x "$bin" ] || continue
        kind=$(basename "$(dirname "$bin")")
        JOBS+=("cmocka|$label $kind/$(basename "$bin")|$LOG_DIR/$label-$kind-$(basename "$bin").log|env BUILD=$build CCSYNCD_BIN=$build/ccsyncd CCSIM_BIN=$build/ccsim timeout 900 $bin")
    done
}
# The longest binaries first (they wait on leases, timeouts and paced CC calls),
# the sanitized ones before the plain ones, so the tail is short.
SLOW='test_crash test_resilience test_sync test_lost_create'
order_jobs() {
    local first=() rest=() label name j
    for label in asan plain; do
        for name in $SLOW; do
            for j in "${JOBS[@]}"; do
                case $j in "cmocka|$label integration/$name|"*) first+=("$j") ;; esac
            done
        done
    done
    for j in "${JOBS[@]}"; do
        case " ${first[*]} " in *" $j "*) ;; *) rest+=("$j") ;; esac
    done
    JOBS=("${first[@]}" "${rest[@]}")
}

add_binaries build plain
[ "$TEST_SANITIZED" = 1 ] && add_binaries build/asan asan
order_jobs
[ -x tests/contract/run.sh ] && JOBS+=("script|contract|$LOG_DIR/contract.log|env BUILD=build tests/contract/run.sh")
[ -x scripts/lint-openapi.sh ] && JOBS+=("script|openapi|$LOG_DIR/openapi.log|scripts/lint-openapi.sh")
[ -x tests/alerts/check.sh ] && JOBS+=("script|alerts|$LOG_DIR/alerts.log|tests/alerts/check.sh")
[ -x tests/browser/check.sh ] && JOBS+=("script|browser|$LOG_DIR/browser.log|env BUILD=build tests/browser/check.sh")
[ -x tests/deploy/check.sh ] && JOBS+=("script|deploy|$LOG_DIR/deploy.log|env BUILD=build tests/deploy/check.sh")
# make run and its demo take a minute of waiting: started among the first.
[ -x tests/run/check.sh ] && JOBS=("script|run|$LOG_DIR/run.log|env BUILD=build tests/run/check.sh" "${JOBS[@]}")

# Each job writes its exit status and seconds beside its log.
run_job() { # log, command...
    local log=$1 start rc
    shift
    start=$(date +%s)
    # shellcheck disable=SC2068 # the command line is a list of words by design
    $@ >"$log" 2>&1 </dev/null
    rc=$?
    echo "$rc $(($(date +%s) - start))" >"$log.rc"
}

# Each job its own ports, below the kernel's ephemeral range (32768 and up), so
# a port a test frees to restart a server on is never taken by another job.
PORT_SPAN=$((12000 / (${#JOBS[@]} + 1)))
slot=0
running=0
for job in "${JOBS[@]}"; do
    IFS='|' read -r _ _ log cmd <<<"$job"
    export TEST_PORT_BASE=$((20000 + slot * PORT_SPAN)) TEST_PORT_SPAN=$PORT_SPAN
    slot=$((slot + 1))
    rm -f "$log.rc"
    while [ "$running" -ge "$TEST_JOBS" ]; do
        wait -n
        running=$((running - 1))
    done
    # shellcheck disable=SC2086 # split the command into words
    run_job "$log" $cmd &
    running=$((running + 1))
done
wait

for job in "${JOBS[@]}"; do
    IFS='|' read -r kind name log _ <<<"$job"
    read -r rc secs <"$log.rc" 2>/dev/null || { rc=1; secs="?"; }
    rm -f "$log.rc"
    if [ "$kind" = cmocka ]; then
        count_cmocka "$log" "$name" "$rc" "$secs"
    else
        count_script "$log" "$name" "$rc" "$secs"
    fi
done

if [ ${#failures[@]} -gt 0 ]; then
    echo "failed:"
    printf '  %s\n' "${failures[@]}"
fi
echo "tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
