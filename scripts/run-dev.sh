#!/bin/bash
# `make run`: ccsyncd in the foreground for a developer or an evaluator, with what it
# needs around it:
#   - a local redis-server (AOF on, data in build/dev/) unless CCSYNC_REDIS_URL is set;
#   - the Constant Contact simulator (build/ccsim, production limits on) unless
#     CCSYNC_CC_API_URL is set;
#   - a development admin token and a demo association, printed with the commands
#     that walk through the whole story.
# Ctrl-C stops ccsyncd (it drains and exits 0) and whatever this script started.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
DEV=$BUILD/dev
mkdir -p "$DEV"

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

pids=()
cleanup() { # ccsyncd first (it drains), then what it depends on
    local i
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill "${pids[$i]}" 2>/dev/null || true
        wait "${pids[$i]}" 2>/dev/null || true
    done
}
trap cleanup EXIT

if [ -z "${CCSYNC_REDIS_URL:-}" ]; then
    port=$(free_port)
    # The simulator keeps its lists in memory only, so with it the demo's Redis starts
    # empty too (state that points at lists of an earlier simulator would be stale).
    persist=(--appendonly yes --appendfsync everysec)
    [ -z "${CCSYNC_CC_API_URL:-}" ] && persist=(--appendonly no)
    # setsid: Ctrl-C reaches ccsyncd only; Redis and the simulator stop after it drained
    setsid redis-server --port "$port" --bind 127.0.0.1 --dir "$(pwd)/$DEV" "${persist[@]}" \
        --save "" --daemonize no >"$DEV/redis.log" 2>&1 &
    pids+=($!)
    wait_port "$port" || { echo "redis-server did not start: see $DEV/redis.log"; exit 1; }
    export CCSYNC_REDIS_URL="redis://127.0.0.1:$port/0"
    echo "started redis-server on 127.0.0.1:$port (data in $DEV, log $DEV/redis.log)"
fi

DEV_CC_TOKEN=dev-cc-access-token
SIM_URL=""
if [ -z "${CCSYNC_CC_API_URL:-}" ]; then
    port=$(free_port)
    setsid "$BUILD/ccsim" --listen "127.0.0.1:$port" --dev-token "$DEV_CC_TOKEN" >"$DEV/ccsim.log" 2>&1 &
    pids+=($!)
    wait_port "$port" || { echo "ccsim did not start: see $DEV/ccsim.log"; exit 1; }
    SIM_URL="http://127.0.0.1:$port"
    export CCSYNC_CC_API_URL="$SIM_URL/v3"
    export CCSYNC_CC_TOKEN_URL="$SIM_URL/oauth2/default/v1/token"
    echo "started the Constant Contact simulator on $SIM_URL (log $DEV/ccsim.log)"
fi

export CCSYNC_LISTEN=${CCSYNC_LISTEN:-127.0.0.1:8080}
export CCSYNC_ADMIN_TOKEN=${CCSYNC_ADMIN_TOKEN:-dev-admin-token-change-me}
export CCSYNC_LOG_FORMAT=${CCSYNC_LOG_FORMAT:-text}
export CCSYNC_RECONCILE_SECONDS=${CCSYNC_RECONCILE_SECONDS:-15}
if [ -z "${CCSYNC_ASSOCIATION_ID:-}" ]; then
    export CCSYNC_ASSOCIATION_ID=demo
    export CCSYNC_WEBHOOK_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
    if [ -n "$SIM_URL" ]; then
        export CCSYNC_CC_ACCESS_TOKEN=$DEV_CC_TOKEN
        export CCSYNC_CC_EXPIRES_AT=2099-01-01T00:00:00Z
    fi
fi
URL="http://${CCSYNC_LISTEN/0.0.0.0/127.0.0.1}"
ADMIN="Authorization: Bearer $CCSYNC_ADMIN_TOKEN"
SEND="CCSYNC_URL=$URL CCSYNC_ASSOCIATION=$CCSYNC_ASSOCIATION_ID CCSYNC_WEBHOOK_SECRET=$CCSYNC_WEBHOOK_SECRET tests/support/send-webhook.sh"

cat <<INFO

ccsyncd is starting on $URL
  admin token:  $CCSYNC_ADMIN_TOKEN
  association:  $CCSYNC_ASSOCIATION_ID (webhook secret $CCSYNC_WEBHOOK_SECRET)

Try the story in another terminal (from $(pwd)):

  # 1. Novi turns "Sync to Constant Contact" on for the group "board" and sends its members
  $SEND group.updated '{"UniqueID":"board","GroupName":"Board","SyncToConstantContact":true}'
  $SEND group.members '{"UniqueID":"board","Members":[{"UniqueID":"m1","Email":"ann@example.org","FirstName":"Ann","LastName":"Lee","CustomerType":"Person"},{"UniqueID":"m2","Email":"bob@example.org","FirstName":"Bob","LastName":"Ray"},{"UniqueID":"m3","Email":"not-an-email"},{"UniqueID":"m4","Company":"Acme","Email":"ANN@example.org","CustomerType":"Company"}]}'

  # 2. the group's status: the list, the counts (invalid and duplicate emails explained)
  curl -s -H '$ADMIN' $URL/v1/associations/$CCSYNC_ASSOCIATION_ID/groups/board

  # 3. a member joins, another leaves
  $SEND customer.updated '{"UniqueID":"m5","Email":"cy@example.org","FirstName":"Cy","Groups":[{"UniqueID":"board","GroupName":"Board"}]}'
  $SEND customer.removed '{"UniqueID":"m2"}'
INFO
if [ -n "$SIM_URL" ]; then
cat <<INFO

  # 4. what Constant Contact holds now (the simulator's state: lists and their members)
  curl -s $SIM_URL/__sim/state

  # 5. an admin deletes the list in Constant Contact; within ${CCSYNC_RECONCILE_SECONDS}s the group shows
  #    list_deleted_in_constant_contact; a resync creates a new list
  curl -s -X POST $SIM_URL/__sim/lists/\$(curl -s -H '$ADMIN' $URL/v1/associations/$CCSYNC_ASSOCIATION_ID/groups/board | sed -E 's/.*"list_id":"([^"]+)".*/\1/')/delete
  curl -s -H '$ADMIN' $URL/v1/associations/$CCSYNC_ASSOCIATION_ID/groups/board
  curl -s -X POST -H '$ADMIN' $URL/v1/associations/$CCSYNC_ASSOCIATION_ID/groups/board/resync
INFO
fi
cat <<INFO

  # the audit log, the service status, the metrics
  curl -s -H '$ADMIN' $URL/v1/associations/$CCSYNC_ASSOCIATION_ID/audit
  curl -s -H '$ADMIN' $URL/v1/status
  curl -s $URL/metrics

INFO
"$BUILD/ccsyncd" &
pids+=($!)
trap 'kill -TERM ${pids[-1]} 2>/dev/null || true' INT TERM
wait "${pids[-1]}" || wait "${pids[-1]}" || true
