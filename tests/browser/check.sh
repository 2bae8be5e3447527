#!/bin/bash
# tests/browser/check.sh - the status page in a real browser (tests/browser/status-page.mjs):
# starts ccsyncd, Redis and the Constant Contact simulator with scripts/run-dev.sh (what
# `make run` runs) on a port of TEST_PORT_BASE's range, runs the puppeteer-core story
# against Debian's chromium, and stops them (run-dev.sh stops what it started).
# Screenshots go to $BUILD/test-artifacts/. Prints "browser: N passed, M failed".
# Needs: build/ccsyncd and build/ccsim (make), chromium (make deps), and
# tests/browser/node_modules (scripts/install-npm.sh, which make deps runs).
set -u
cd "$(dirname "$0")/../.." || exit 1
export BUILD=${BUILD:-build}
CHROMIUM=${CHROMIUM:-$(command -v chromium || true)}
give_up() {
    echo "FAIL - $1"
    echo "browser: 0 passed, 1 failed"
    exit 1
}
if ! [ -x "$BUILD/ccsyncd" ] || ! [ -x "$BUILD/ccsim" ]; then
    give_up "no $BUILD/ccsyncd or $BUILD/ccsim (make)"
fi
[ -n "$CHROMIUM" ] || give_up "no chromium (Debian package chromium: make deps)"
[ -d tests/browser/node_modules/puppeteer-core ] || give_up "no puppeteer-core (scripts/install-npm.sh)"

TMP=$(mktemp -d /tmp/ccsync-browser-XXXXXX)
export RUN_DIR=$TMP/dev
mkdir -p "$RUN_DIR"
port_free() { python3 -c 'import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try: s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError: sys.exit(1)' "$1"; }
base=${TEST_PORT_BASE:-20000}
span=${TEST_PORT_SPAN:-1000}
export CCSYNC_RECONCILE_SECONDS=1 CCSYNC_SYNC_DELAY_MS=100
export CCSYNC_LOG_FORMAT=json CCSYNC_SHUTDOWN_GRACE_SECONDS=5
unset CCSYNC_REDIS_URL CCSYNC_CC_API_URL CCSYNC_ASSOCIATION_ID
RUN=""
stop() {
    [ -n "$RUN" ] && kill -TERM "$RUN" 2>/dev/null && wait "$RUN" 2>/dev/null
    return 0
}
trap stop EXIT
# start: make run's stack on a free port of the range; 1 when it did not come up. A port
# found free can still be taken before ccsyncd binds it (run-dev.sh gives Redis and the
# simulator ephemeral ports): then another port is tried.
start() {
    local p=""
    for _ in $(seq 1 50); do
        p=$((base + RANDOM % span))
        port_free "$p" && break
        p=""
    done
    [ -n "$p" ] || return 1
    export CCSYNC_LISTEN=127.0.0.1:$p
    rm -f "$RUN_DIR/run.env"
    scripts/run-dev.sh >"$TMP/run.log" 2>&1 &
    RUN=$!
    for _ in $(seq 1 300); do
        [ -s "$RUN_DIR/run.env" ] && return 0
        kill -0 "$RUN" 2>/dev/null || break
        sleep 0.1
    done
    stop
    RUN=""
    return 1
}
for _ in 1 2 3; do start && break; done
[ -s "$RUN_DIR/run.env" ] || { tail -20 "$TMP/run.log"; give_up "make run's stack did not start"; }
# shellcheck disable=SC1091 # written by run-dev.sh
. "$RUN_DIR/run.env"
export CCSYNC_URL CCSYNC_ADMIN_TOKEN CCSYNC_ASSOCIATION CCSYNC_WEBHOOK_SECRET SIM_URL CHROMIUM
export ARTIFACTS=$BUILD/test-artifacts
node tests/browser/status-page.mjs
rc=$?
[ "$rc" -eq 0 ] || { echo "logs of the stack: $RUN_DIR (run.log: $TMP/run.log)"; }
exit "$rc"
