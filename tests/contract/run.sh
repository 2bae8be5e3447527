#!/bin/sh
# Contract test: Prism (proxy mode, Constant Contact's official OpenAPI document) in
# front of ccsim; drive.mjs sends every simulated endpoint through it and fails on any
# request or response violation other than the document's known gaps
# (cc-openapi/README.md). Prints "contract: N passed, M failed".
#
# env: BUILD (default build), CCSIM_BIN (default $BUILD/ccsim),
#      CC_OPENAPI (default tests/contract/cc-openapi/v3-openapi.json.gz, kept compressed:
#      it is 1.1 MB of JSON; a .gz is unpacked into the run's temporary folder)
set -eu
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
CCSIM_BIN=${CCSIM_BIN:-$BUILD/ccsim}
PRISM=tests/tools/node_modules/.bin/prism
DOC=${CC_OPENAPI:-tests/contract/cc-openapi/v3-openapi.json.gz}

for need in "$CCSIM_BIN" "$PRISM" "$DOC"; do
    if [ ! -e "$need" ]; then
        echo "contract: missing $need (make all; scripts/install-npm.sh)"
        echo "contract: 0 passed, 1 failed"
        exit 1
    fi
done

free_port() {
    node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}
wait_port() { # port seconds
    i=0
    while ! curl -s -o /dev/null "http://127.0.0.1:$1/"; do
        i=$((i + 1))
        [ "$i" -gt $(($2 * 10)) ] && return 1
        sleep 0.1
    done
}

SIM_PORT=$(free_port)
PRISM_PORT=$(free_port)
LOG_DIR=$(mktemp -d)
case $DOC in
*.gz)
    gzip -dc "$DOC" >"$LOG_DIR/v3-openapi.json"
    DOC=$LOG_DIR/v3-openapi.json
    ;;
esac
SIM_PID=""
PRISM_PID=""
cleanup() {
    [ -n "$PRISM_PID" ] && kill "$PRISM_PID" 2>/dev/null || true
    [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$LOG_DIR"
}
trap cleanup EXIT INT TERM

"$CCSIM_BIN" --listen "127.0.0.1:$SIM_PORT" --activity-ms 100 >"$LOG_DIR/ccsim.log" 2>&1 &
SIM_PID=$!
"$PRISM" proxy "$DOC" "http://127.0.0.1:$SIM_PORT/v3" -p "$PRISM_PORT" -h 127.0.0.1 \
    >"$LOG_DIR/prism.log" 2>&1 &
PRISM_PID=$!

if ! wait_port "$SIM_PORT" 10; then
    cat "$LOG_DIR/ccsim.log"
    echo "contract: 0 passed, 1 failed (ccsim did not start)"
    exit 1
fi
if ! wait_port "$PRISM_PORT" 60; then
    tail -20 "$LOG_DIR/prism.log"
    echo "contract: 0 passed, 1 failed (prism did not start)"
    exit 1
fi

status=0
node tests/contract/drive.mjs "http://127.0.0.1:$PRISM_PORT" "http://127.0.0.1:$SIM_PORT" || status=$?
# ccsim must stop cleanly (under sanitizers: no error, no leak)
kill "$SIM_PID" 2>/dev/null || true
sim_exit=0
wait "$SIM_PID" || sim_exit=$?
SIM_PID=""
if [ "$sim_exit" -ne 0 ] || grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$LOG_DIR/ccsim.log"; then
    echo "contract: ccsim exited with $sim_exit"
    tail -30 "$LOG_DIR/ccsim.log"
    [ "$status" -eq 0 ] && status=1
fi
if [ "$status" -ne 0 ]; then
    echo "--- prism violations (log tail) ---"
    grep -i violation "$LOG_DIR/prism.log" | tail -20 || true
fi
exit "$status"
