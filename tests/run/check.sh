#!/usr/bin/env bash
# tests/run/check.sh - `make run` for real, as a developer uses it:
#   - it refuses to start, with one line, when CCSYNC_LISTEN's port is taken;
#   - the demo walks through with scripts/demo.sh (a group synced, members joining and
#     leaving, the list deleted in the simulator shown as an error, a resync, the audit);
#   - however it is stopped, nothing it started is left (redis-server, ccsim, ccsyncd, the
#     script, its watchdog) and the port is free: Ctrl-C (SIGINT to the terminal's process
#     group), SIGTERM to make, `kill` of the script, SIGHUP (terminal closed), SIGKILL of the
#     script, SIGKILL of make.
# Prints one line a check and "run: N passed, M failed" at the end; exits 1 on failure.
# BUILD selects the build folder holding ccsyncd and ccsim (default build; built if missing).
set -u
# Job control: each `make run` gets a process group of its own, as a terminal gives it, and
# its SIGINT is not ignored (a non-interactive shell's background jobs ignore SIGINT).
set -m

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1
export BUILD=${BUILD:-build}
TMP=$(mktemp -d /tmp/ccsync-run.XXXXXX)
export RUN_DIR=$TMP/dev # the state file and logs of this test's make run, apart from build/dev
export CCSYNC_RECONCILE_SECONDS=2
export CCSYNC_SYNC_DELAY_MS=200
export CCSYNC_SHUTDOWN_GRACE_SECONDS=10
unset CCSYNC_REDIS_URL CCSYNC_CC_API_URL CCSYNC_ASSOCIATION_ID CCSYNC_ADMIN_TOKEN
unset MAKEFLAGS MFLAGS MAKELEVEL # under `make test`: this make run is a make of its own

passed=0 failed=0
pass() { passed=$((passed + 1)); echo "ok   - $1"; }
fail() {
    failed=$((failed + 1)); echo "FAIL - $1"
    if [ -n "${2:-}" ]; then printf '%s\n' "$2" | tail -n 30 | sed 's/^/       /'; fi
}

# A free port for CCSYNC_LISTEN outside the kernel's ephemeral range (32768-60999):
# run-dev.sh takes the ports of Redis and the simulator from that range (bind to port
# 0), and make runs started side by side must not be handed the same port one after the
# other. 61000-64999, not 20000-31999: tests/run-all.sh hands that range to the test
# binaries running beside this script, whose servers could take the port between this
# check and make run's bind.
free_port() {
    local port
    while :; do
        port=$((61000 + RANDOM % 4000))
        port_free "$port" && echo "$port" && return
    done
}
port_free() { # port: can ccsyncd bind it (as it does, with SO_REUSEADDR)?
    python3 -c 'import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null
}
alive() { # pid (a zombie is not alive)
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    s=${s##*) }
    [ "${s%% *}" != Z ]
}
# wait_until SECONDS COMMAND...: retries COMMAND every 0.2 s.
wait_until() {
    local deadline=$(($(date +%s) + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -ge "$deadline" ] && return 1
        sleep 0.2
    done
}

MAKE_PID="" RUN_PID="" WATCHDOG_PIDS="" STARTED=()
LAUNCH="" # "setsid" where job control is off (in a subshell): make's own process group
cleanup() { # whatever a failed check left behind (start() lists what it saw in $TMP/procs)
    local p
    for p in $(cat "$TMP/procs" 2>/dev/null) $MAKE_PID; do kill -KILL "$p" 2>/dev/null; done
    [ -n "${RUN_CHECK_KEEP:-}" ] || rm -rf "$TMP" # RUN_CHECK_KEEP=1 keeps the logs
}
trap cleanup EXIT
trap 'exit 130' INT TERM

up_or_gone() { [ -s "$RUN_DIR/run.env" ] || ! alive "$MAKE_PID"; }
# start LABEL: `make run` in the background on a free port; waits for the demo's state file
# and /readyz, then reads what it started (run.pids) and the script's watchdog.
start() {
    PORT=$(free_port)
    export CCSYNC_LISTEN=127.0.0.1:$PORT
    LOG=$TMP/make-run-$1.log
    $LAUNCH make --no-print-directory run >"$LOG" 2>&1 </dev/null &
    MAKE_PID=$!
    echo "$MAKE_PID" >>"$TMP/procs"
    wait_until 120 up_or_gone
    if ! alive "$MAKE_PID" || ! wait_until 30 curl -sf "http://127.0.0.1:$PORT/readyz"; then
        echo "make run did not come up:"
        cat "$LOG"
        return 1
    fi
    RUN_PID=$(sed -n 's/^RUN_PID=//p' "$RUN_DIR/run.env")
    WATCHDOG_PIDS=$(sed -n 's/^WATCHDOG_PID=//p' "$RUN_DIR/run.env")
    mapfile -t STARTED < <(cut -d' ' -f1 "$RUN_DIR/run.pids")
    echo "${STARTED[*]} $RUN_PID $WATCHDOG_PIDS" >>"$TMP/procs"
    [ "${#STARTED[@]}" -eq 3 ] || { echo "run.pids names ${#STARTED[@]} processes, want 3"; return 1; }
    [ -n "$WATCHDOG_PIDS" ] || { echo "no watchdog process beside the script"; return 1; }
}

left_over() { # prints what is still there; true when something is
    local p out=""
    for p in "${STARTED[@]}"; do
        alive "$p" && out="$out $(cat "/proc/$p/comm" 2>/dev/null || echo "$p")($p)"
    done
    alive "$RUN_PID" && out="$out run-dev.sh($RUN_PID)"
    for p in $WATCHDOG_PIDS; do alive "$p" && out="$out watchdog($p)"; done
    alive "$MAKE_PID" && out="$out make($MAKE_PID)"
    port_free "$PORT" || out="$out port $PORT taken"
    [ -e "$RUN_DIR/run.env" ] && out="$out $RUN_DIR/run.env"
    [ -e "$RUN_DIR/run.lock" ] && out="$out $RUN_DIR/run.lock"
    [ -n "$out" ] && echo "still there:$out"
}
all_gone() { ! left_over >/dev/null; }

# stops_cleanly LABEL SIGNAL TARGET: starts make run, sends SIGNAL to TARGET (group = the
# process group of make, as a terminal does; make; script), checks nothing is left.
stops_cleanly() {
    local label=$1 sig=$2 target=$3 pid
    start "$label" || return 1
    case $target in
    group) pid=-$MAKE_PID ;;
    make) pid=$MAKE_PID ;;
    script) pid=$RUN_PID ;;
    esac
    kill "-$sig" -- "$pid"
    # ccsyncd drains within its grace (10 s here); the watchdog polls twice a second.
    wait_until 30 all_gone
    if ! all_gone; then
        left_over
        tail -n 15 "$LOG"
        kill -KILL -- "-$MAKE_PID" 2>/dev/null # never wait on a make that did not stop
        return 1
    fi
    wait "$MAKE_PID" 2>/dev/null
    echo "stopped: $(tail -n 3 "$LOG" | tr '\n' ' ')"
}

# check NAME COMMAND...: passes when COMMAND exits 0, shows its output otherwise. COMMAND
# runs in this shell (not in $(...), where job control is off), so that the make it starts
# gets a process group of its own and its PIDs stay known to cleanup.
check() {
    local name=$1
    shift
    if "$@" >"$TMP/out" 2>&1 </dev/null; then pass "$name"; else fail "$name" "$(cat "$TMP/out")"; fi
}

# ---- 1. a taken port: one line, nothing started ------------------------------------------
port_taken() {
    local port holder out rc lines
    port=$(free_port)
    python3 -c 'import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1); time.sleep(60)' "$port" &
    holder=$!
    wait_until 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port"
    out=$(CCSYNC_LISTEN=127.0.0.1:$port timeout 120 make --no-print-directory run 2>&1 </dev/null)
    rc=$?
    # The script itself says it in exactly one line.
    lines=$(CCSYNC_LISTEN=127.0.0.1:$port scripts/run-dev.sh 2>&1 </dev/null | wc -l)
    kill "$holder" 2>/dev/null
    wait "$holder" 2>/dev/null
    echo "$out"
    [ "$rc" -ne 0 ] || { echo "make run exited 0 with its port taken"; return 1; }
    [ "$(grep -c "127.0.0.1:$port is in use" <<<"$out")" -eq 1 ] || { echo "no line saying the port is in use"; return 1; }
    if grep -q "started\|ccsyncd runs" <<<"$out" || [ -e "$RUN_DIR/run.pids" ]; then
        echo "it started something anyway"
        return 1
    fi
    [ "$lines" -eq 1 ] || { echo "scripts/run-dev.sh printed $lines lines, want 1"; return 1; }
}
check "port taken: make run refuses with one line and starts nothing" port_taken

# ---- 2. the demo, with scripts/demo.sh --------------------------------------------------
demo() { scripts/demo.sh "$@"; }
field() { # group python-expression over the status object s
    demo status "$1" | python3 -c "import json, sys; s = json.load(sys.stdin); print($2)"
}
demo_walk() {
    local first second
    demo fields | grep -q '"group_tags": true' || { echo "the field mapping was not taken"; return 1; }
    demo webhook group.updated '{"UniqueID":"board","GroupName":"Board","SyncToConstantContact":true}' |
        grep -q 'HTTP 202' || { echo "group.updated was not queued"; return 1; }
    demo members board | grep -q 'HTTP 202' || { echo "group.members was not queued"; return 1; }
    wait_until 30 sh -c "scripts/demo.sh cc-lists | grep -q 'active   Board: ann@example.org, bob@example.org$'" ||
        { echo "the list did not fill:"; demo cc-lists; demo status board; return 1; }
    wait_until 10 sh -c "scripts/demo.sh status board | grep -q '\"state\": \"synced\"'" ||
        { echo "the group is not synced:"; demo status board; return 1; }
    [ "$(field board 's["counts"]["invalid_email"], s["counts"]["duplicate_email"], s["counts"]["in_list"]')" = "1 1 2" ] ||
        { echo "counts are not invalid 1, duplicate 1, in_list 2:"; demo status board; return 1; }
    wait_until 10 sh -c "scripts/demo.sh cc-contacts | grep -q '^ann@example.org  fields: Member_Type=Gold  tags: Novi: Board$'" ||
        { echo "ann has not her mapped field and the group's tag:"; demo cc-contacts; return 1; }
    first=$(demo list-id board)
    demo webhook customer.updated '{"UniqueID":"m5","Email":"cy@example.org","FirstName":"Cy","Groups":[{"UniqueID":"board","GroupName":"Board"}]}' >/dev/null
    demo webhook customer.removed '{"UniqueID":"m2"}' >/dev/null
    wait_until 30 sh -c "scripts/demo.sh cc-lists | grep -q 'Board: ann@example.org, cy@example.org$'" ||
        { echo "m5 did not join or m2 did not leave:"; demo cc-lists; return 1; }
    demo delete-list board || return 1
    wait_until 30 sh -c "scripts/demo.sh status board | grep -q '\"code\": \"list_deleted_in_constant_contact\"'" ||
        { echo "the deleted list is not an error:"; demo status board; return 1; }
    demo audit | grep -q '"action": "list_missing"' || { echo "no list_missing in the audit"; return 1; }
    demo resync board | grep -q '"resync_queued"' || { echo "the resync was not queued"; return 1; }
    wait_until 30 sh -c "scripts/demo.sh status board | grep -q '\"state\": \"synced\"'" ||
        { echo "the resync did not sync:"; demo status board; return 1; }
    second=$(demo list-id board)
    if [ -z "$second" ] || [ "$second" = "$first" ]; then
        echo "the resync made no new list ($first, $second)"
        return 1
    fi
    demo service | grep -q '"redis"' || { echo "the service status did not answer"; return 1; }
    echo "list $first deleted, $second made by the resync"
}
# The status page make run prints: it opens, and its read token reads and only reads.
status_page() {
    local page token base
    page=$(sed -n 's/^STATUS_PAGE=//p' "$RUN_DIR/run.env")
    grep -q "The status page, with a read token: http://127.0.0.1:$PORT/ui/#association=demo&token=ccs_" "$LOG" ||
        { echo "make run did not print the page's address"; return 1; }
    token=${page##*token=}
    base="http://127.0.0.1:$PORT"
    curl -sf "$base/ui/" | grep -q '<script src="app.js" defer></script>' || { echo "no page at /ui/"; return 1; }
    curl -sf -H "Authorization: Bearer $token" "$base/v1/associations/demo" | grep -q '"access":"read"' ||
        { echo "the page's token does not read the association"; return 1; }
    [ "$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $token" \
        "$base/v1/associations/demo/groups/board/resync")" = 403 ] || { echo "the read token could write"; return 1; }
    echo "page $page"
}
# make run made a key file (0600) and its Redis holds the demo's secrets sealed only.
secrets_sealed() {
    local key status
    key=$(sed -n 's/^SECRETS_KEY_FILE=//p' "$RUN_DIR/run.env")
    if [ "$key" != "$RUN_DIR/secrets.key" ] || [ "$(stat -c %a "$key")" != 600 ]; then
        echo "no key file of mode 0600 at $RUN_DIR/secrets.key (got '$key')"
        return 1
    fi
    status=$(demo service)
    if ! grep -q '"at_rest": *"sealed"' <<<"$status" || ! grep -q '"plaintext_values": *0' <<<"$status"; then
        echo "the status does not say sealed: $status"
        return 1
    fi
    for f in "$RUN_DIR"/appendonlydir/* "$RUN_DIR"/dump.rdb; do
        [ -e "$f" ] || continue
        if grep -q "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" "$f"; then echo "$f holds the webhook secret"; return 1; fi
    done
    echo "key $key, $(grep -o '"key_id": *"[^"]*"' <<<"$status")"
}
# A second make run on the same RUN_DIR (another port) would take the first one's state.
second_refused() {
    local out rc
    out=$(CCSYNC_LISTEN=127.0.0.1:$(free_port) timeout 60 make --no-print-directory run 2>&1 </dev/null)
    rc=$?
    echo "$out"
    [ "$rc" -ne 0 ] && grep -q "another make run (PID $RUN_PID) uses $RUN_DIR" <<<"$out" &&
        [ "$(sed -n 's/^RUN_PID=//p' "$RUN_DIR/run.env")" = "$RUN_PID" ] && curl -sf "http://127.0.0.1:$PORT/readyz"
}
if start demo >"$TMP/start.out" 2>&1; then
    check "demo: scripts/demo.sh walks the story (fields and tags, sync, join, leave, delete in CC, resync, audit)" demo_walk
    check "make run prints the status page's address with a read token that only reads" status_page
    check "make run seals secrets at rest with a key file it made (0600)" secrets_sealed
    check "a second make run on the same RUN_DIR refuses and leaves the first alone" second_refused
    kill -INT -- "-$MAKE_PID"
    if wait_until 30 all_gone; then pass "stop: Ctrl-C (SIGINT to make's process group)"; else
        fail "stop: Ctrl-C (SIGINT to make's process group)" "$(left_over; tail -n 15 "$LOG")"
    fi
    wait "$MAKE_PID" 2>/dev/null
else
    fail "demo: make run starts" "$(cat "$TMP/start.out")"
fi

# ---- 3. every other way to stop it, all at once (each its own make run, port and RUN_DIR) ----
CASES=(
    "term-make TERM make|stop: SIGTERM to make"
    "term-script TERM script|stop: kill of the script's PID (SIGTERM)"
    "hup HUP group|stop: SIGHUP to make's process group (the terminal closed)"
    "kill-script KILL script|stop: SIGKILL of the script (the watchdog cleans up)"
    "kill-make KILL make|stop: SIGKILL of make (the watchdog stops the script)"
)
# A SIGHUP ignored on entry (the suite started under nohup) is ignored by every process
# started from here, make included, and no shell can undo that: the terminal-closed case
# cannot be tried then, and says so instead of failing.
if [ $((0x$(sed -n 's/^SigIgn:\t*//p' /proc/$$/status) & 1)) -ne 0 ]; then
    echo "skip - stop: SIGHUP to make's process group: SIGHUP is ignored in this environment (nohup)"
    CASES=("${CASES[@]/hup HUP group|*/}")
    mapfile -t CASES < <(printf '%s\n' "${CASES[@]}" | grep .)
fi
case_pids=()
for c in "${CASES[@]}"; do
    read -r label sig target <<<"${c%%|*}"
    (
        trap - EXIT
        export RUN_DIR=$TMP/dev-$label
        LAUNCH=setsid
        stops_cleanly "$label" "$sig" "$target"
    ) >"$TMP/case-$label.out" 2>&1 </dev/null &
    case_pids+=($!)
done
for i in "${!CASES[@]}"; do
    c=${CASES[$i]}
    label=${c%% *}
    if wait "${case_pids[$i]}"; then pass "${c#*|}"; else fail "${c#*|}" "$(cat "$TMP/case-$label.out")"; fi
done

# ---- 4. hygiene ------------------------------------------------------------------------------
if command -v shellcheck >/dev/null; then
    check "shellcheck: scripts/*.sh tests/run/check.sh" shellcheck -x scripts/*.sh tests/run/check.sh
fi

echo "run: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
