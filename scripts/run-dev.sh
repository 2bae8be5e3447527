#!/bin/bash
# `make run`: ccsyncd in the foreground for a developer or an evaluator, with what it
# needs around it:
#   - a local redis-server (AOF on, data in build/dev/) unless CCSYNC_REDIS_URL is set;
#   - the Constant Contact simulator (build/ccsim, production limits on) unless
#     CCSYNC_CC_API_URL is set;
#   - a development admin token and a demo association, written to a state file
#     (RUN_DIR/run.env) that scripts/demo.sh reads, so the printed commands stay short.
#
# It stops everything it started however it is stopped: Ctrl-C, SIGTERM or SIGHUP to make
# or to this script (traps, ccsyncd first so it drains), and even SIGKILL of this script or
# of make: a watchdog process, which ignores those signals, notices and stops the rest.
# It refuses to start, with one line, when CCSYNC_LISTEN's port is taken.
#
#   scripts/run-dev.sh              run (what `make run` calls after building)
#   scripts/run-dev.sh check-port   only the port check (`make run` does it before building)
#
# env: BUILD (default build), RUN_DIR (default $BUILD/dev), and any CCSYNC_* variable.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
RUN_DIR=${RUN_DIR:-$BUILD/dev}
STATE=$RUN_DIR/run.env # what scripts/demo.sh reads: URLs, token, association
PIDS=$RUN_DIR/run.pids # "pid name" a line, in start order: what the watchdog stops
LOCK=$RUN_DIR/run.lock # the PID of the make run that owns RUN_DIR
export CCSYNC_LISTEN=${CCSYNC_LISTEN:-127.0.0.1:8080}

# The port of CCSYNC_LISTEN is free when we can bind it as ccsyncd will (SO_REUSEADDR, as
# libmicrohttpd does, so a connection in TIME_WAIT does not count as taken).
check_port() {
    local host=${CCSYNC_LISTEN%:*} port=${CCSYNC_LISTEN##*:}
    if ! command -v python3 >/dev/null; then # before `make deps-run`: can we connect?
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then port_taken; fi
        return 0
    fi
    if ! python3 - "$host" "$port" <<'EOF'; then
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind((sys.argv[1], int(sys.argv[2])))
except OSError:
    sys.exit(1)
EOF
        port_taken
    fi
}
port_taken() {
    echo "make run: $CCSYNC_LISTEN is in use (an earlier make run or another server); stop it, or choose another port: CCSYNC_LISTEN=127.0.0.1:8081 make run" >&2
    exit 1
}
if [ "${1:-}" = check-port ]; then
    check_port
    exit 0
fi
check_port
mkdir -p "$RUN_DIR"
# Two make runs on one RUN_DIR would take each other's state file and PID list.
owner=$(cat "$LOCK" 2>/dev/null || true)
if [ -n "$owner" ] && [ "$owner" != $$ ] && grep -qa run-dev.sh "/proc/$owner/cmdline" 2>/dev/null; then
    echo "make run: another make run (PID $owner) uses $RUN_DIR; stop it, or give this one RUN_DIR=build/dev2" >&2
    exit 1
fi
echo $$ >"$LOCK"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
        echo $((20000 + RANDOM % 20000))
}
wait_port() { # port
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
# A process that exited but was not reaped yet (a zombie) no longer counts as running.
alive() { # pid
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    s=${s##*) }
    [ "${s%% *}" != Z ]
}
stop_pid() { # pid seconds: SIGTERM, then SIGKILL if it is still there after seconds
    local i
    kill -TERM "$1" 2>/dev/null || return 0
    for ((i = 0; i < $2 * 10; i++)); do
        alive "$1" || return 0
        sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null || true
}
# Stops what run.pids names, newest first: ccsyncd drains before Redis and the simulator
# it needs go. Used by the script itself and by the watchdog (which is not their parent).
stop_started() {
    local grace=$((${CCSYNC_SHUTDOWN_GRACE_SECONDS:-25} + 5)) pid name
    [ -f "$PIDS" ] || return 0
    while read -r pid name; do
        if [ "$name" = ccsyncd ]; then stop_pid "$pid" "$grace"; else stop_pid "$pid" 5; fi
    done < <(tac "$PIDS")
    rm -f "$PIDS" "$STATE" "$LOCK"
}
started() { # pid name
    echo "$1 $2" >>"$PIDS"
}

# The watchdog: a separate process that outlives a SIGKILL of this script. It ignores the
# signals a terminal or `kill` sends, so it is still there to clean up after them.
SCRIPT_PID=$$
PARENT_PID=$PPID
watchdog() {
    trap '' INT TERM HUP
    set +e
    while alive "$SCRIPT_PID" && alive "$PARENT_PID"; do sleep 0.5; done
    if alive "$SCRIPT_PID"; then
        kill -TERM "$SCRIPT_PID" # the parent (make) went: the script stops in order
    else
        stop_started # the script was killed outright
    fi
}

WATCHDOG=""
stopping=0
# shellcheck disable=SC2317 # called from the traps below
cleanup() {
    set +e # stop everything, whatever fails on the way (the watchdog may be gone already)
    [ "$stopping" = 1 ] && return
    stopping=1
    [ -n "$WATCHDOG" ] && kill -KILL "$WATCHDOG" 2>/dev/null
    stop_started
    wait 2>/dev/null || true
}
# shellcheck disable=SC2317
on_signal() { # exit status
    trap '' INT TERM HUP
    cleanup
    exit "$1"
}
trap cleanup EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM
trap 'on_signal 129' HUP
rm -f "$PIDS" "$STATE"
watchdog </dev/null &
WATCHDOG=$!
disown "$WATCHDOG" # so that its SIGKILL at the end is not reported as a job that died

if [ -z "${CCSYNC_REDIS_URL:-}" ]; then
    port=$(free_port)
    # The simulator keeps its lists in memory only, so with it the demo's Redis starts
    # empty too (state that points at lists of an earlier simulator would be stale).
    persist=(--appendonly yes --appendfsync everysec)
    [ -z "${CCSYNC_CC_API_URL:-}" ] && persist=(--appendonly no)
    # setsid: Ctrl-C reaches ccsyncd only; Redis and the simulator stop after it drained
    setsid redis-server --port "$port" --bind 127.0.0.1 --dir "$(cd "$RUN_DIR" && pwd)" "${persist[@]}" \
        --save "" --daemonize no </dev/null >"$RUN_DIR/redis.log" 2>&1 &
    started $! redis-server
    wait_port "$port" || { echo "redis-server did not start: see $RUN_DIR/redis.log"; exit 1; }
    export CCSYNC_REDIS_URL="redis://127.0.0.1:$port/0"
    echo "started redis-server on 127.0.0.1:$port (data in $RUN_DIR, log $RUN_DIR/redis.log)"
fi

DEV_CC_TOKEN=dev-cc-access-token
SIM_URL=""
if [ -z "${CCSYNC_CC_API_URL:-}" ]; then
    port=$(free_port)
    setsid "$BUILD/ccsim" --listen "127.0.0.1:$port" --dev-token "$DEV_CC_TOKEN" \
        </dev/null >"$RUN_DIR/ccsim.log" 2>&1 &
    started $! ccsim
    wait_port "$port" || { echo "ccsim did not start: see $RUN_DIR/ccsim.log"; exit 1; }
    SIM_URL="http://127.0.0.1:$port"
    export CCSYNC_CC_API_URL="$SIM_URL/v3"
    export CCSYNC_CC_TOKEN_URL="$SIM_URL/oauth2/default/v1/token"
    echo "started the Constant Contact simulator on $SIM_URL (log $RUN_DIR/ccsim.log)"
fi

export CCSYNC_ADMIN_TOKEN=${CCSYNC_ADMIN_TOKEN:-dev-admin-token-change-me}
export CCSYNC_LOG_FORMAT=${CCSYNC_LOG_FORMAT:-text}
export CCSYNC_RECONCILE_SECONDS=${CCSYNC_RECONCILE_SECONDS:-15}
# Secrets at rest are sealed as in production: a key file (0600) made once in RUN_DIR
# and kept, since it opens what the development Redis holds.
if [ -z "${CCSYNC_SECRETS_KEY_FILE:-}" ] && [ "${CCSYNC_ALLOW_PLAINTEXT_SECRETS:-0}" != 1 ]; then
    export CCSYNC_SECRETS_KEY_FILE=$RUN_DIR/secrets.key
    scripts/make-secrets-key.sh "$CCSYNC_SECRETS_KEY_FILE"
fi
if [ -z "${CCSYNC_ASSOCIATION_ID:-}" ]; then
    export CCSYNC_ASSOCIATION_ID=demo
    export CCSYNC_WEBHOOK_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
    if [ -n "$SIM_URL" ]; then
        export CCSYNC_CC_ACCESS_TOKEN=$DEV_CC_TOKEN
        export CCSYNC_CC_EXPIRES_AT=2099-01-01T00:00:00Z
    fi
fi
URL="http://${CCSYNC_LISTEN/0.0.0.0/127.0.0.1}"

"$BUILD/ccsyncd" </dev/null &
CCSYNCD=$!
started "$CCSYNCD" ccsyncd
wait_port "${CCSYNC_LISTEN##*:}" || true # when it did not start, its own line says why

# A read token for the status page, once the association exists (ccsyncd writes
# the bootstrap association as soon as Redis answers).
PAGE=""
for _ in $(seq 1 100); do
    answer=$(curl -s -X POST -H "Authorization: Bearer $CCSYNC_ADMIN_TOKEN" \
        -H 'Content-Type: application/json' -d '{"scope":"read","name":"make run status page"}' \
        "$URL/v1/associations/$CCSYNC_ASSOCIATION_ID/tokens" 2>/dev/null || true)
    token=$(printf '%s' "$answer" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("token",""))' 2>/dev/null || true)
    if [ -n "$token" ]; then
        PAGE="$URL/ui/#association=$CCSYNC_ASSOCIATION_ID&token=$token"
        break
    fi
    sleep 0.1
done

# The state file holds a development token: readable by its owner only.
(
    umask 077
    {
        printf 'RUN_PID=%q\n' "$SCRIPT_PID"
        printf 'WATCHDOG_PID=%q\n' "$WATCHDOG"
        printf 'CCSYNC_URL=%q\n' "$URL"
        printf 'CCSYNC_ADMIN_TOKEN=%q\n' "$CCSYNC_ADMIN_TOKEN"
        printf 'CCSYNC_ASSOCIATION=%q\n' "$CCSYNC_ASSOCIATION_ID"
        printf 'CCSYNC_WEBHOOK_SECRET=%q\n' "${CCSYNC_WEBHOOK_SECRET:-}"
        printf 'SIM_URL=%q\n' "$SIM_URL"
        printf 'RECONCILE_SECONDS=%q\n' "$CCSYNC_RECONCILE_SECONDS"
        printf 'STATUS_PAGE=%q\n' "$PAGE"
        printf 'SECRETS_KEY_FILE=%q\n' "${CCSYNC_SECRETS_KEY_FILE:-}"
    } >"$STATE"
)
D=scripts/demo.sh
[ "$RUN_DIR" != build/dev ] && D="RUN_DIR=$RUN_DIR $D"
cat <<INFO

ccsyncd runs on $URL (admin token $CCSYNC_ADMIN_TOKEN, association $CCSYNC_ASSOCIATION_ID)
The status page, with a read token: ${PAGE:-(no token could be made: see the log above)}
Try the story in another terminal, from $(pwd) ($D help lists every command):

  # 1. Novi turns "Sync to Constant Contact" on for the group "board" and sends its members
  $D webhook group.updated '{"UniqueID":"board","GroupName":"Board","SyncToConstantContact":true}'
  $D members board    # a group.members event: 4 members, one invalid and one duplicate email
  # 2. the group's status: the list, the counts (invalid and duplicate emails explained)
  $D status board
  # 3. a member joins, another leaves
  $D webhook customer.updated '{"UniqueID":"m5","Email":"cy@example.org","FirstName":"Cy","Groups":[{"UniqueID":"board","GroupName":"Board"}]}'
  $D webhook customer.removed '{"UniqueID":"m2"}'
INFO
if [ -n "$SIM_URL" ]; then
    cat <<INFO
  # 4. what Constant Contact holds now: the simulator's lists and their members
  $D cc-lists
  # 5. an admin deletes the list in Constant Contact: within ${CCSYNC_RECONCILE_SECONDS} s the group shows
  #    list_deleted_in_constant_contact; a resync creates a new list
  $D delete-list board
  $D status board
  $D resync board
INFO
fi
cat <<INFO
  # the audit log, the service status
  $D audit
  $D service

INFO

status=0
wait "$CCSYNCD" || status=$?
exit "$status"
