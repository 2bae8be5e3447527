#!/bin/bash
# `make bench`: the two benchmarks of ccsync, each printed as one markdown table
# with the exact commands that produced it. Figures are printed, never judged:
# the script exits 0 unless something broke (a process did not start, ccsyncd
# refused a webhook, the stream lost or gained an event, a sync did not converge).
#
# 1. Ingest. wrk sends pre-signed Novi webhooks (each a distinct webhook-id,
#    timestamp now; tests/bench/gen_webhooks.c + webhooks.lua) to ccsyncd backed by
#    a local redis-server, beside two ceilings measured in the same run: a bare
#    libmicrohttpd server answering 200 with ccsyncd's MHD flags
#    (tests/bench/bare_http.c, sent the very same requests) and redis-benchmark
#    doing XADD (and ccsyncd's enqueue script), pipelined and not.
# 1b. Ingest per durability mode (everysec, always, replica with a local replica) and
#    two peers sent requests in the same run: a Node receiver doing the same work
#    (tests/bench/node: Fastify + standardwebhooks + ioredis) and webdis's bare XADD.
# 1c. A webhook's work part by part (tests/bench/ingest_parts.c): signature, validation, log
#    line and Redis's CPU for ccsyncd's enqueue script, beside cheaper ways of each.
# 2. Sync efficiency. tests/bench/sync_bench.c against ccsim with its production
#    limits (4 requests/s): first syncs of 1,000, 10,000 and 50,000 members and a
#    burst of 1,000 single-member changes over 10 groups, beside the naive cost; with
#    mapped fields (§12): 1,000 field changes over 10 groups, and a first sync of
#    10,000 members with 17 mapped fields.
# 3. The budget's day. tests/bench/day_sim.c: the budget planner through a
#    simulated day for 10 to 2,000 associations, beside first-come spending.
#
# Environment: BUILD (build), BENCH_SECONDS (10: each wrk run), BENCH_CONNECTIONS
# (64), BENCH_WRK_THREADS (2), BENCH_SYNC_SCENARIOS (first:1000 first:10000
# first:50000 burst:1000:10 arrive:2000:10:3 fields:1000:10 first:10000:17 waves:5:10:1000), BENCH_ONLY (ingest | sync | day: run one of the three; bigsnap: see below),
# BENCH_DAY_SIZES (10 100 500 2000: associations in the simulated day), BENCH_PARTS_BATCH (20:
# events per script call in 1c).
# Logs and generated requests go to $BUILD/bench/out/.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
OUT=$BUILD/bench/out
case $OUT in /*) ;; *) OUT=$(pwd)/$OUT ;; esac # redis-server needs an absolute --dir
SECS=${BENCH_SECONDS:-10}
CONNS=${BENCH_CONNECTIONS:-64}
WRK_THREADS=${BENCH_WRK_THREADS:-2}
SCENARIOS=${BENCH_SYNC_SCENARIOS:-first:1000 first:10000 first:50000 burst:1000:10 arrive:2000:10:3 fields:1000:10 first:10000:17 waves:5:10:1000}
ONLY=${BENCH_ONLY:-}
SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
BENCH_STREAM='ccsync:{bench}:events' # the bench association's event stream (keys.h)
ADMIN=bench-admin-token-0123456789
rm -rf "$OUT"
mkdir -p "$OUT"

for bin in "$BUILD/ccsyncd" "$BUILD/ccsim" "$BUILD/bench/bare_http" "$BUILD/bench/gen_webhooks" \
    "$BUILD/bench/sync_bench" "$BUILD/bench/day_sim" "$BUILD/bench/ingest_parts"; do
    [ -x "$bin" ] || { echo "bench: $bin is missing (make BUILD=$BUILD bench builds it)"; exit 1; }
done
for tool in wrk redis-server redis-benchmark redis-cli curl python3 node webdis; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is missing (make deps-test)"; exit 1; }
done

# BENCH_ONLY=bigsnap: a snapshot of BENCH_SNAPSHOT_MEMBERS (500,000) members folded while
# another association posts webhooks (tests/bench/hostile.c: the slow log, the fold's time,
# the other association's p50/p99); BENCH_REDIS_RT=1 keeps Redis on a core (root only).
if [ "$ONLY" = bigsnap ]; then
    [ -x "$BUILD/bench/hostile" ] || { echo "bench: $BUILD/bench/hostile is missing"; exit 1; }
    echo "Command: $BUILD/bench/hostile snapshot ${BENCH_SNAPSHOT_MEMBERS:-500000}"
    exec env CCSYNCD_BIN="$BUILD/ccsyncd" CCSIM_BIN="$BUILD/ccsim" \
        "$BUILD/bench/hostile" snapshot "${BENCH_SNAPSHOT_MEMBERS:-500000}"
fi

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() { # port
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
}
trap cleanup EXIT
broken() { echo "bench: BROKEN: $*"; exit 1; }

CMDS=() # the exact commands, printed under each table
run_logged() { # name command... : runs it, output to $OUT/name.txt, records the command
    local name=$1
    shift
    CMDS+=("$(printf '%q ' "$@")")
    "$@" >"$OUT/$name.txt" 2>&1
}
field() { # file key : the value of key=value in the RESULT line of a wrk run
    sed -n "s/^RESULT .*[ ]$2=\([^ ]*\).*/\1/p" "$1"
}
ms() { awk -v us="$1" 'BEGIN { printf "%.2f", us / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.0f%%", 100 * a / b; else print "-" }'; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

echo "# ccsync benchmarks"
echo
echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(uname -sr);" \
    "load average before: $(cut -d' ' -f1-3 /proc/loadavg)."
echo "wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}'), $(redis-server --version | awk '{print $3}')," \
    "libmicrohttpd $(pkg-config --modversion libmicrohttpd 2>/dev/null || echo '?'). Everything on loopback, sharing the CPUs."
echo

# ---------------------------------------------------------------- ingest
REDIS_PORT='' REDIS_PID='' HTTP_PORT='' CCSYNCD_PID=''
REPLICA_PID=''
start_redis() { # name [mode]: a redis-server durable as deployed (docker/: AOF, fsync every
    # second); mode always: fsync before each reply; replica: everysec plus a local replica
    local fsync=everysec
    [ "${2:-}" = always ] && fsync=always
    REDIS_PORT=$(free_port)
    REPLICA_PID=''
    mkdir -p "$OUT/redis-$1"
    CMDS+=("redis-server --port $REDIS_PORT --bind 127.0.0.1 --save '' --appendonly yes --appendfsync $fsync --dir $OUT/redis-$1")
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly yes \
        --appendfsync "$fsync" --dir "$OUT/redis-$1" >"$OUT/redis-$1.log" 2>&1 &
    REDIS_PID=$!
    pids+=("$REDIS_PID")
    wait_port "$REDIS_PORT" || broken "redis-server did not start ($OUT/redis-$1.log)"
    [ "${2:-}" = replica ] || return 0
    local rport
    rport=$(free_port)
    mkdir -p "$OUT/replica-$1"
    CMDS+=("redis-server --port $rport --bind 127.0.0.1 --save '' --appendonly yes --appendfsync everysec --replicaof 127.0.0.1 $REDIS_PORT --dir $OUT/replica-$1")
    redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly yes --appendfsync everysec \
        --replicaof 127.0.0.1 "$REDIS_PORT" --dir "$OUT/replica-$1" >"$OUT/replica-$1.log" 2>&1 &
    REPLICA_PID=$!
    pids+=("$REPLICA_PID")
    for _ in $(seq 1 100); do
        redis-cli -p "$rport" INFO replication | grep -q '^master_link_status:up' && return 0
        sleep 0.1
    done
    broken "the replica did not sync ($OUT/replica-$1.log)"
}
start_ccsyncd() { # name [workers] [durability]
    # One worker, and Constant Contact at a dead port: the events name groups that
    # are not synced, so the worker only folds facts (it does consume the stream
    # while wrk runs, as it would in production: that CPU is in the figures).
    # Logs as deployed: JSON, level info (one line per request), to a file.
    # Every request is the one association "bench": its allowance (CCSYNC_INGEST_RATE,
    # _BURST; still checked per request) is raised past what a run sends.
    HTTP_PORT=$(free_port)
    local env=("CCSYNC_LISTEN=127.0.0.1:$HTTP_PORT" "CCSYNC_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
        "CCSYNC_ADMIN_TOKEN=$ADMIN" CCSYNC_ALLOW_PLAINTEXT_SECRETS=1 "CCSYNC_WORKERS=${2:-1}" CCSYNC_CC_API_URL=http://127.0.0.1:9/v3
        CCSYNC_CC_TOKEN_URL=http://127.0.0.1:9/token CCSYNC_ASSOCIATION_ID=bench
        "CCSYNC_WEBHOOK_SECRET=$SECRET" "CCSYNC_DURABILITY=${3:-everysec}"
        CCSYNC_INGEST_RATE=1000000 CCSYNC_INGEST_BURST=100000000)
    CMDS+=("env ${env[*]} $BUILD/ccsyncd > $OUT/ccsyncd-$1.log")
    env "${env[@]}" "$BUILD/ccsyncd" >"$OUT/ccsyncd-$1.log" 2>&1 &
    CCSYNCD_PID=$!
    pids+=("$CCSYNCD_PID")
    wait_port "$HTTP_PORT" || broken "ccsyncd did not start ($OUT/ccsyncd-$1.log)"
    for _ in $(seq 1 50); do
        curl -sf "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null && return 0
        sleep 0.1
    done
    broken "ccsyncd not ready ($OUT/ccsyncd-$1.log)"
}
outcome() { # metrics text, outcome label: the value of ccsync_webhooks_total{outcome=...}
    printf '%s\n' "$1" | awk -v o="outcome=\"$2\"" \
        'index($0, "ccsync_webhooks_total{" o "}") == 1 { print $2 + 0; f = 1 } END { if (!f) print 0 }'
}

# ccsync_run NAME [RATE] [WORKERS] [DURABILITY]: a fresh Redis (with a replica in replica
# mode) and ccsyncd, fresh requests signed now
# (the window is 300 s; a run takes SECS), one wrk run; checks that every accepted
# webhook is in the stream exactly once; leaves its figures in $OUT/NAME.facts.
ccsync_run() {
    local name=$1 rate=${2:-} f=$OUT/wrk-$1.txt
    start_redis "$name" "${4:-everysec}"
    start_ccsyncd "$name" "${3:-1}" "${4:-everysec}"
    local count=$((60000 * SECS))
    run_logged "gen-$name" "$BUILD/bench/gen_webhooks" "$SECRET" bench "127.0.0.1:$HTTP_PORT" "$count" \
        "$WRK_THREADS" "$OUT/req-$name"
    local metrics0 metrics1 t0 t1 r0 r1 p0=0 p1=0
    metrics0=$(curl -s "http://127.0.0.1:$HTTP_PORT/metrics")
    t0=$(cpu_ticks "$CCSYNCD_PID")
    r0=$(cpu_ticks "$REDIS_PID")
    [ -z "$REPLICA_PID" ] || p0=$(cpu_ticks "$REPLICA_PID")
    # shellcheck disable=SC2086
    run_logged "wrk-$name" "${WRK[@]}" -s tests/bench/webhooks.lua "http://127.0.0.1:$HTTP_PORT/" \
        -- "$OUT/req-$name" "$name" $rate
    t1=$(cpu_ticks "$CCSYNCD_PID")
    r1=$(cpu_ticks "$REDIS_PID")
    [ -z "$REPLICA_PID" ] || p1=$(cpu_ticks "$REPLICA_PID")
    rm -f "$OUT/req-$name".*
    [ -n "$(field "$f" rps)" ] || broken "wrk against ccsyncd: $(tail -3 "$f")"
    sleep 0.5 # replies to requests wrk stopped waiting for land
    metrics1=$(curl -s "http://127.0.0.1:$HTTP_PORT/metrics")
    local added queued duplicates wrk_n non2xx hz
    added=$(redis-cli -p "$REDIS_PORT" XINFO STREAM "$BENCH_STREAM" | awk 'f { print; exit } /^entries-added$/ { f = 1 }')
    queued=$(($(outcome "$metrics1" queued) - $(outcome "$metrics0" queued)))
    duplicates=$(($(outcome "$metrics1" duplicate) - $(outcome "$metrics0" duplicate)))
    wrk_n=$(field "$f" requests)
    non2xx=$(field "$f" non2xx)
    hz=$(getconf CLK_TCK)
    {
        echo "queued=$queued"
        echo "added=$added"
        echo "duplicates=$duplicates"
        echo "backlog=$(redis-cli -p "$REDIS_PORT" XLEN "$BENCH_STREAM")"
        echo "rss_kib=$(awk '/^VmRSS/ { print $2 }' "/proc/$CCSYNCD_PID/status")"
        echo "hwm_kib=$(awk '/^VmHWM/ { print $2 }' "/proc/$CCSYNCD_PID/status")"
        echo "cpu_s=$(awk -v a="$t0" -v b="$t1" -v hz="$hz" 'BEGIN { printf "%.1f", (b - a) / hz }')"
        echo "redis_cpu_s=$(awk -v a="$r0" -v b="$r1" -v hz="$hz" 'BEGIN { printf "%.1f", (b - a) / hz }')"
        echo "replica_cpu_s=$(awk -v a="$p0" -v b="$p1" -v hz="$hz" 'BEGIN { printf "%.1f", (b - a) / hz }')"
    } >"$OUT/$name.facts"
    CMDS+=("redis-cli -p $REDIS_PORT XINFO STREAM $BENCH_STREAM   # entries-added")
    CMDS+=("grep -E 'VmHWM|VmRSS' /proc/$CCSYNCD_PID/status")
    cleanup
    # Broken (not slow): refused webhooks, socket errors, lost or doubled events.
    [ "$non2xx" = 0 ] || broken "ccsyncd answered $non2xx non-2xx (see $OUT/ccsyncd-$name.log)"
    [ "$(field "$f" errors)" = 0 ] || broken "socket errors against ccsyncd ($f)"
    [ "$(field "$f" wraps)" = 0 ] || broken "wrk ran out of distinct requests ($f)"
    [ "$added" = "$queued" ] || broken "stream entries-added $added != queued $queued"
    [ "$duplicates" = 0 ] || broken "$duplicates duplicates: requests were reused"
    if [ "$queued" -lt "$wrk_n" ] || [ "$queued" -gt $((wrk_n + CONNS)) ]; then
        broken "queued $queued does not match wrk's $wrk_n answers"
    fi
}
fact() { sed -n "s/^$2=//p" "$OUT/$1.facts"; }

ingest() {
    WRK=(wrk -t"$WRK_THREADS" -c"$CONNS" -d"${SECS}s" --latency)

    # Ceiling 1: the bare server, sent the very same signed POSTs (it ignores them),
    # and a plain GET for reference.
    local bare_port bare_pid
    bare_port=$(free_port)
    CMDS+=("$BUILD/bench/bare_http $bare_port")
    "$BUILD/bench/bare_http" "$bare_port" >"$OUT/bare_http.log" 2>&1 &
    bare_pid=$!
    pids+=("$bare_pid")
    wait_port "$bare_port" || broken "bare_http did not start"
    run_logged gen-bare "$BUILD/bench/gen_webhooks" "$SECRET" bench "127.0.0.1:$bare_port" \
        $((60000 * SECS)) "$WRK_THREADS" "$OUT/req-bare"
    local c0 c1
    c0=$(cpu_ticks "$bare_pid")
    run_logged wrk-bare "${WRK[@]}" -s tests/bench/webhooks.lua "http://127.0.0.1:$bare_port/" \
        -- "$OUT/req-bare" bare
    c1=$(cpu_ticks "$bare_pid")
    echo "cpu_s=$(awk -v a="$c0" -v b="$c1" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", (b - a) / hz }')" >"$OUT/bare.facts"
    rm -f "$OUT"/req-bare.*
    run_logged wrk-get "${WRK[@]}" -s tests/bench/webhooks.lua "http://127.0.0.1:$bare_port/" -- - get
    cleanup

    # The same bare server, each request also suspended and resumed by a second
    # thread (the hand-off ccsyncd makes to its Redis thread), doing no work.
    bare_port=$(free_port)
    CMDS+=("$BUILD/bench/bare_http $bare_port 0 hop")
    "$BUILD/bench/bare_http" "$bare_port" 0 hop >"$OUT/bare_hop.log" 2>&1 &
    bare_pid=$!
    pids+=("$bare_pid")
    wait_port "$bare_port" || broken "bare_http hop did not start"
    run_logged gen-hop "$BUILD/bench/gen_webhooks" "$SECRET" bench "127.0.0.1:$bare_port" \
        $((60000 * SECS)) "$WRK_THREADS" "$OUT/req-hop"
    c0=$(cpu_ticks "$bare_pid")
    run_logged wrk-hop "${WRK[@]}" -s tests/bench/webhooks.lua "http://127.0.0.1:$bare_port/" \
        -- "$OUT/req-hop" hop
    c1=$(cpu_ticks "$bare_pid")
    echo "cpu_s=$(awk -v a="$c0" -v b="$c1" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", (b - a) / hz }')" >"$OUT/hop.facts"
    rm -f "$OUT"/req-hop.*
    cleanup
    local bare_rps
    bare_rps=$(field "$OUT/wrk-bare.txt" rps)
    [ -n "$bare_rps" ] || broken "wrk against bare_http: $(tail -3 "$OUT/wrk-bare.txt")"

    # Ceiling 2: Redis alone. XADD of an entry shaped like ccsyncd's (a 300-byte
    # body), and a one-event enqueue script (SET NX dedup key + XADD) by EVALSHA (ccsyncd's
    # own script, one call per association and batch, is timed in section 1c).
    start_redis ceiling
    local body sha
    body=$(head -c 300 /dev/zero | tr '\0' 'x')
    sha=$(redis-cli -p "$REDIS_PORT" SCRIPT LOAD "if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return redis.call('XADD', KEYS[2], '*', 'assoc', ARGV[2], 'id', ARGV[3], 'type', ARGV[4], 'ts', ARGV[5], 'body', ARGV[6]) end return false")
    local rb=(redis-benchmark -p "$REDIS_PORT" -c 50 --csv)
    run_logged rb-xadd-p16 "${rb[@]}" -n 500000 -P 16 XADD bench:xadd '*' assoc bench id msg_1 type customer.updated ts 1 body "$body"
    run_logged rb-xadd-p1 "${rb[@]}" -n 100000 XADD bench:xadd '*' assoc bench id msg_1 type customer.updated ts 1 body "$body"
    run_logged rb-eval-p16 "${rb[@]}" -n 300000 -P 16 -r 1000000000 EVALSHA "$sha" 2 bench:dedup:__rand_int__ bench:xadd 604800 bench msg_1 customer.updated 1 "$body"
    run_logged rb-eval-p1 "${rb[@]}" -n 100000 -r 1000000000 EVALSHA "$sha" 2 bench:dedup:__rand_int__ bench:xadd 604800 bench msg_1 customer.updated 1 "$body"
    cleanup

    # ccsyncd flat out, then paced at half the bare ceiling (the load the latency
    # target is about): each wrk thread sends its share on an open-loop schedule.
    ccsync_run ccsync
    local half
    half=$((bare_rps / 2))
    ccsync_run paced $((half / WRK_THREADS))
    # The ingest path alone: an ingest-only ccsyncd (CCSYNC_WORKERS=0), as when
    # webhook replicas and worker replicas run apart; nothing folds meanwhile.
    ccsync_run alone "" 0
    ccsync_run alone-paced $((half / WRK_THREADS)) 0

    echo "## 1. Ingest: signed webhooks into ccsyncd + Redis, beside the ceilings"
    echo
    echo "wrk -t$WRK_THREADS -c$CONNS (two load threads for two CPUs; 64 connections keep both MHD" \
        "threads and the Redis pipeline busy without queueing far beyond them), ${SECS} s a run. Closed" \
        "loop unless paced, so latency is at the highest load each server sustains. wrk, the servers and" \
        "Redis (AOF, fsync every second) share the same $(nproc) CPUs. Each ccsyncd run has a fresh Redis;" \
        "its single worker consumes the stream concurrently (folding every event into Redis), as in production."
    echo
    echo "| what | requests/s | p50 ms | p99 ms | vs bare HTTP (same requests) | non-2xx | socket errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    row() { # label file
        echo "| $1 | $(field "$2" rps) | $(ms "$(field "$2" p50_us)") | $(ms "$(field "$2" p99_us)") |" \
            "$(ratio "$(field "$2" rps)" "$bare_rps") | $(field "$2" non2xx) | $(field "$2" errors) |"
    }
    rbrow() { # label file
        awk -F'"' -v l="$1" -v b="$bare_rps" 'NR == 2 { printf "| %s | %.0f | %s | %s | %s | - | - |\n", l, $4, $10, $14, (b > 0 ? sprintf("%.0f%%", 100 * $4 / b) : "-") }' "$2"
    }
    row "bare libmicrohttpd, GET / (reference)" "$OUT/wrk-get.txt"
    row "**bare libmicrohttpd, the signed POSTs → 200 (ceiling)**" "$OUT/wrk-bare.txt"
    row "bare libmicrohttpd + suspend/resume by a second thread, no work" "$OUT/wrk-hop.txt"
    row "**ccsyncd: verify, validate, dedup + XADD, flat out**" "$OUT/wrk-ccsync.txt"
    row "**ccsyncd, paced at half the ceiling ($half/s asked)**" "$OUT/wrk-paced.txt"
    row "ccsyncd ingest-only (CCSYNC_WORKERS=0), flat out" "$OUT/wrk-alone.txt"
    row "ccsyncd ingest-only, paced at half the ceiling" "$OUT/wrk-alone-paced.txt"
    rbrow "redis-benchmark XADD, -P 16, 50 clients" "$OUT/rb-xadd-p16.txt"
    rbrow "redis-benchmark XADD, unpipelined, 50 clients" "$OUT/rb-xadd-p1.txt"
    rbrow "redis-benchmark one-event enqueue script (SET NX + XADD), -P 16" "$OUT/rb-eval-p16.txt"
    rbrow "redis-benchmark one-event enqueue script, unpipelined" "$OUT/rb-eval-p1.txt"
    echo
    echo "| ccsyncd run | accepted (wrk 2xx) | queued (ccsyncd) | stream entries-added | duplicates | VmRSS after | VmHWM | ccsyncd CPU | redis CPU | events not yet folded at the end |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    local r
    for r in ccsync paced alone alone-paced; do
        echo "| $r | $(($(field "$OUT/wrk-$r.txt" requests) - $(field "$OUT/wrk-$r.txt" non2xx))) |" \
            "$(fact $r queued) | $(fact $r added) | $(fact $r duplicates) | $(($(fact $r rss_kib) / 1024)) MiB |" \
            "$(($(fact $r hwm_kib) / 1024)) MiB | $(fact $r cpu_s) s | $(fact $r redis_cpu_s) s | $(fact $r backlog) |"
    done
    echo
    us() { # facts-name wrk-file : CPU µs per answered request
        awk -v c="$(fact "$1" cpu_s)" -v n="$(field "$2" requests)" 'BEGIN { if (n > 0) printf "%.0f", 1e6 * c / n; else print "-" }'
    }
    rus() { # facts-name wrk-file : Redis CPU µs per answered request
        awk -v c="$(fact "$1" redis_cpu_s)" -v n="$(field "$2" requests)" 'BEGIN { if (n > 0) printf "%.0f", 1e6 * c / n; else print "-" }'
    }
    echo "CPU per answered request (process CPU time / wrk's answers; wrk itself uses the rest of the" \
        "$(nproc) CPUs): bare server $(us bare "$OUT/wrk-bare.txt") µs; bare + suspend/resume hop" \
        "$(us hop "$OUT/wrk-hop.txt") µs; ccsyncd ingest-only $(us alone "$OUT/wrk-alone.txt") µs + its Redis" \
        "$(rus alone "$OUT/wrk-alone.txt") µs; ccsyncd with a folding worker $(us ccsync "$OUT/wrk-ccsync.txt") µs + its" \
        "Redis $(rus ccsync "$OUT/wrk-ccsync.txt") µs."
    echo
    echo "Targets: ≥ 50% of bare HTTP → **$(ratio "$(field "$OUT/wrk-ccsync.txt" rps)" "$bare_rps")**;" \
        "p99 < 10 ms at that load → **$(ms "$(field "$OUT/wrk-paced.txt" p99_us)") ms** at" \
        "$(field "$OUT/wrk-paced.txt" rps)/s ($(ms "$(field "$OUT/wrk-ccsync.txt" p99_us)") ms flat out);" \
        "RSS < 64 MiB → **$(($(fact ccsync hwm_kib) / 1024)) MiB** peak. Queued may exceed wrk's 2xx by the" \
        "requests in flight when wrk stopped (≤ $CONNS); entries-added must equal queued exactly."
    echo
    echo "Commands:"
    echo
    echo '```'
    printf '%s\n' "${CMDS[@]}"
    echo '```'
    echo
    CMDS=()
}

# ---------------------------------------------------------------- sync
sync_efficiency() {
    echo "## 2. Sync efficiency: Constant Contact requests, ccsim with production limits (4 requests/s)"
    echo
    echo "Each scenario on a fresh redis-server, ccsim and ccsyncd (defaults: 4 workers," \
        "CCSYNC_SYNC_DELAY_MS 1000, CCSYNC_CC_RATE_PER_SEC 4). Seconds run from the first webhook to" \
        "convergence (queue empty, GroupStatus pending_changes 0 and changes_queued false, ccsim's list" \
        "holding exactly the expected emails); requests are ccsim's counters once it has had no request for 3 s (work after convergence, such as a first sync's read-back, is counted)." \
        "The naive cost is one request per member change, which at 4 requests/s takes N/4 seconds."
    echo
    # shellcheck disable=SC2086
    CMDS+=("$BUILD/bench/sync_bench $BUILD/ccsyncd $BUILD/ccsim $OUT/sync $SCENARIOS")
    # shellcheck disable=SC2086
    "$BUILD/bench/sync_bench" "$BUILD/ccsyncd" "$BUILD/ccsim" "$OUT/sync" $SCENARIOS ||
        broken "sync_bench failed (logs in $OUT/sync)"
    echo
    echo "Commands:"
    echo
    echo '```'
    printf '%s\n' "${CMDS[@]}"
    echo '```'
}

# ---------------------------------------------------------------- the day
budget_day() {
    echo "## 3. A simulated day of the shared Constant Contact budget"
    echo
    echo "tests/bench/day_sim.c drives the budget planner (service/budget.c) through a day with a" \
        "simulated clock, beside today's first-come spending on the same day's workload (see the" \
        "file's opening comment). Latencies are from a member change to the request that carries it."
    echo
    CMDS=("$BUILD/bench/day_sim ${BENCH_DAY_SIZES:-10 100 500 2000}")
    # shellcheck disable=SC2086
    "$BUILD/bench/day_sim" ${BENCH_DAY_SIZES:-10 100 500 2000} || broken "day_sim failed"
    echo
    echo "Command: \`${CMDS[0]}\`"
}

# ---------------------------------------------------------------- modes and peers
# peer_run NAME URL WRK-ARGS...: wrk against a peer already started (PEER_PID, its Redis
# REDIS_PID); CPU of both and the stream's length into $OUT/NAME.facts.
PEER_PID=''
peer_run() {
    local name=$1 url=$2 t0 t1 r0 r1 hz
    shift 2
    hz=$(getconf CLK_TCK)
    t0=$(cpu_ticks "$PEER_PID")
    r0=$(cpu_ticks "$REDIS_PID")
    run_logged "wrk-$name" "${WRK[@]}" -s tests/bench/webhooks.lua "$url" -- "$@"
    t1=$(cpu_ticks "$PEER_PID")
    r1=$(cpu_ticks "$REDIS_PID")
    [ -n "$(field "$OUT/wrk-$name.txt" rps)" ] || broken "wrk against $name: $(tail -3 "$OUT/wrk-$name.txt")"
    sleep 0.5
    {
        echo "added=$(redis-cli -p "$REDIS_PORT" XLEN ccsync:events)"
        echo "cpu_s=$(awk -v a="$t0" -v b="$t1" -v hz="$hz" 'BEGIN { printf "%.2f", (b - a) / hz }')"
        echo "redis_cpu_s=$(awk -v a="$r0" -v b="$r1" -v hz="$hz" 'BEGIN { printf "%.2f", (b - a) / hz }')"
        echo "replica_cpu_s=0"
    } >"$OUT/$name.facts"
    cleanup
    [ "$(field "$OUT/wrk-$name.txt" non2xx)" = 0 ] || broken "$name answered non-2xx ($OUT/$name.log)"
    [ "$(field "$OUT/wrk-$name.txt" errors)" = 0 ] || broken "socket errors against $name"
}

# The Node peer: Fastify + standardwebhooks + ioredis (tests/bench/node/server.js), the
# same verify + dedup + XADD, sent the same kind of signed requests.
node_run() {
    [ -d tests/bench/node/node_modules ] || broken "tests/bench/node has no node_modules (scripts/install-npm.sh)"
    start_redis node
    local port
    port=$(free_port)
    CMDS+=("node tests/bench/node/server.js $port $REDIS_PORT $SECRET")
    node tests/bench/node/server.js "$port" "$REDIS_PORT" "$SECRET" >"$OUT/node.log" 2>&1 &
    PEER_PID=$!
    pids+=("$PEER_PID")
    wait_port "$port" || broken "the Node peer did not start ($OUT/node.log)"
    run_logged gen-node "$BUILD/bench/gen_webhooks" "$SECRET" bench "127.0.0.1:$port" \
        $((60000 * SECS)) "$WRK_THREADS" "$OUT/req-node"
    peer_run node "http://127.0.0.1:$port/" "$OUT/req-node" node
    rm -f "$OUT"/req-node.*
    [ "$(fact node added)" -ge "$(field "$OUT/wrk-node.txt" requests)" ] || broken "node: stream $(fact node added) < answered"
}

# webdis (Debian's package): a bare XADD, no signature, no dedup. "signed": sent the same signed
# requests as ccsyncd and Node through the same wrk script, as a PUT to /XADD/ccsync:events/*/body
# (webdis appends the body as the XADD's last argument); "get": wrk's static GET of a 300-byte
# body in the URL, no request script (what this row measured before; cheaper for wrk).
webdis_run() { # signed | get
    command -v webdis >/dev/null || broken "webdis is missing (make deps-test)"
    local name=webdis
    [ "$1" = signed ] || name=webdis-get
    start_redis "$name"
    local port body
    port=$(free_port)
    body=$(head -c 300 /dev/zero | tr '\0' 'x')
    printf '{"redis_host":"127.0.0.1","redis_port":%s,"http_host":"127.0.0.1","http_port":%s,"threads":2,"pool_size":20,"daemonize":false,"database":0,"verbosity":0,"logfile":"%s"}\n' \
        "$REDIS_PORT" "$port" "$OUT/$name.log" >"$OUT/$name.json"
    CMDS+=("webdis $OUT/$name.json   # $(cat "$OUT/$name.json")")
    webdis "$OUT/$name.json" >"$OUT/$name.out" 2>&1 &
    PEER_PID=$!
    pids+=("$PEER_PID")
    wait_port "$port" || broken "webdis did not start ($OUT/$name.out)"
    if [ "$1" = signed ]; then
        run_logged "gen-$name" "$BUILD/bench/gen_webhooks" "$SECRET" bench "127.0.0.1:$port" \
            $((60000 * SECS)) "$WRK_THREADS" "$OUT/req-$name" PUT '/XADD/ccsync:events/*/body'
        peer_run "$name" "http://127.0.0.1:$port/" "$OUT/req-$name" "$name"
        rm -f "$OUT/req-$name".*
        [ "$(fact "$name" added)" -ge "$(field "$OUT/wrk-$name.txt" requests)" ] ||
            broken "$name: stream $(fact "$name" added) < answered"
    else
        peer_run "$name" "http://127.0.0.1:$port/XADD/ccsync:events/*/body/$body" - "$name"
    fi
}

modes_and_peers() {
    WRK=(wrk -t"$WRK_THREADS" -c"$CONNS" -d"${SECS}s" --latency)
    # Ingest-only ccsyncd (CCSYNC_WORKERS=0) in each durability mode, then the two peers.
    [ -f "$OUT/alone.facts" ] || ccsync_run alone "" 0 everysec # ingest() ran it already
    ccsync_run alone-always "" 0 always
    ccsync_run alone-replica "" 0 replica
    node_run
    webdis_run signed
    webdis_run get
    echo "## 1b. Ingest per durability mode, beside a Node receiver and webdis"
    echo
    echo "Same wrk (-t$WRK_THREADS -c$CONNS, ${SECS} s, closed loop), each server with a fresh Redis (AOF)."\
        "ccsyncd ingest-only (CCSYNC_WORKERS=0) in each CCSYNC_DURABILITY mode (replica: a local replica," \
        "WAIT 1 after each batch). Node: Fastify + standardwebhooks + ioredis doing the same verify," \
        "dedup + XADD in one Lua script (tests/bench/node/server.js), sent the same kind of signed" \
        "requests. webdis: a bare XADD, no signature, no dedup, sent the same signed requests as a PUT" \
        "(and, for reference, wrk's static GET without a request script). CPU per accepted webhook =" \
        "(server + its Redis (+ replica)) CPU time / 2xx answers."
    echo
    echo "| what | requests/s | p50 ms | p99 ms | server CPU µs/webhook | Redis CPU µs/webhook | total CPU µs/webhook |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    per() { # facts-name wrk-name key: key's CPU seconds per 2xx answer, in µs
        awk -v c="$(fact "$1" "$3")" -v n="$(($(field "$OUT/wrk-$2.txt" requests) - $(field "$OUT/wrk-$2.txt" non2xx)))" \
            'BEGIN { if (n > 0) printf "%.0f", 1e6 * c / n; else print "-" }'
    }
    local r label
    for r in alone alone-always alone-replica node webdis webdis-get; do
        case $r in
        alone) label="ccsyncd ingest-only, everysec" ;;
        alone-always) label="ccsyncd ingest-only, always (fsync each write)" ;;
        alone-replica) label="ccsyncd ingest-only, replica (WAIT 1, local replica)" ;;
        node) label="Node: Fastify + standardwebhooks + ioredis (same work)" ;;
        webdis) label="webdis: bare XADD (no signature, no dedup), the same signed requests" ;;
        webdis-get) label="webdis: bare XADD, wrk's static GET (no request script)" ;;
        esac
        local srv red rep
        srv=$(per "$r" "$r" cpu_s)
        red=$(per "$r" "$r" redis_cpu_s)
        rep=$(per "$r" "$r" replica_cpu_s)
        echo "| $label | $(field "$OUT/wrk-$r.txt" rps) | $(ms "$(field "$OUT/wrk-$r.txt" p50_us)") |" \
            "$(ms "$(field "$OUT/wrk-$r.txt" p99_us)") | $srv | $red$([ "$rep" = 0 ] || echo " + replica $rep") | $((srv + red + rep)) |"
    done
    echo
    local ev al rp wd nd
    ev=$(field "$OUT/wrk-alone.txt" rps)
    rp=$(field "$OUT/wrk-alone-replica.txt" rps)
    wd=$(field "$OUT/wrk-webdis.txt" rps)
    al=$(($(per alone alone cpu_s) + $(per alone alone redis_cpu_s)))
    nd=$(($(per node node cpu_s) + $(per node node redis_cpu_s)))
    echo "Targets: replica ≥ 70% of everysec: $(ratio "$rp" "$ev"); ingest-only ccsyncd ≥ 1.0× webdis's" \
        "requests/s (the same signed requests): $(awk -v a="$ev" -v b="$wd" 'BEGIN { printf "%.2f×", a / b }')" \
        "(against its static-GET row: $(awk -v a="$ev" -v b="$(field "$OUT/wrk-webdis-get.txt" rps)" 'BEGIN { printf "%.2f×", a / b }')); ≤ 0.5× Node's CPU per" \
        "webhook (server + Redis): $(awk -v a="$al" -v b="$nd" 'BEGIN { printf "%.2f×", a / b }')."
    echo
    print_commands
    ingest_parts
}

print_commands() { # the commands of a section (CMDS), then forgets them
    echo "Commands:"
    echo '```'
    printf '%s\n' "${CMDS[@]}"
    echo '```'
    CMDS=()
}

# What each part of a webhook's work costs, beside the same part done the cheapest way
# (tests/bench/ingest_parts.c): the work ccsyncd does that webdis does not.
ingest_parts() {
    start_redis parts
    local batch=${BENCH_PARTS_BATCH:-20}
    CMDS+=("$BUILD/bench/ingest_parts $REDIS_PORT $batch")
    "$BUILD/bench/ingest_parts" "$REDIS_PORT" "$batch" >"$OUT/ingest_parts.txt" 2>&1 ||
        broken "ingest_parts: $(tail -3 "$OUT/ingest_parts.txt")"
    cleanup
    echo "## 1c. A webhook's work, part by part"
    echo
    echo "One thread, in process, median of 5 rounds (Redis: its CPU per event, pipelined in batches of" \
        "$batch, about ccsyncd's mean batch at 64 connections). What ccsyncd does for a webhook that" \
        "webdis's bare XADD does not: the signature, the body's validation, a log line, and the" \
        "webhook-id's dedup key written with the event in one script."
    echo
    cat "$OUT/ingest_parts.txt"
    echo
    print_commands
}

t0=$(date +%s)
[ "$ONLY" = sync ] || [ "$ONLY" = day ] || [ "$ONLY" = peers ] || ingest
[ "$ONLY" = sync ] || [ "$ONLY" = day ] || [ "$ONLY" = ingest ] || modes_and_peers
[ "$ONLY" = ingest ] || [ "$ONLY" = day ] || [ "$ONLY" = peers ] || sync_efficiency
[ "$ONLY" = ingest ] || [ "$ONLY" = sync ] || [ "$ONLY" = peers ] || budget_day
echo
echo "bench: done in $(($(date +%s) - t0)) s; logs in $OUT"
