#!/bin/sh
# Builds the libFuzzer targets with clang (libFuzzer, ASan, UBSan) and runs each
# for SECONDS (default 60) over build/fuzz/corpus-TARGET, seeded from
# tests/fuzz/seeds (webhook) or tests/fuzz/seeds-TARGET.
#   tests/fuzz/run.sh [SECONDS] [extra libFuzzer flags, e.g. -jobs=2 -workers=2]
#   FUZZ_TARGETS="admin ccapi" tests/fuzz/run.sh 600    only these targets
# Targets: webhook (signature check and envelope parsing), admin (the admin
# API's JSON bodies), ccapi (Constant Contact's answers), config (the
# environment), redis_url (the Redis URL). Crashes are written to
# build/fuzz/crash-*; the exit status is non-zero if any target found one.
set -eu

SECONDS_TO_RUN=${1:-60}
[ $# -gt 0 ] && shift
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT="$ROOT/build/fuzz"
CLANG=${CLANG:-clang}
TARGETS=${FUZZ_TARGETS:-webhook admin ccapi config redis_url}
PKGS="libmicrohttpd libcurl json-c hiredis openssl"
# shellcheck disable=SC2086 # pkg-config output is meant to be split into flags
CFLAGS="-std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -I$ROOT/include -I$ROOT/tests/fuzz $(pkg-config --cflags $PKGS)"

# The service without main.c and http.c (tests/fuzz/http_stub.c stands in for
# it), built once with the sanitizers; make-like: a source newer than its object.
mkdir -p "$OUT/obj"
cd "$ROOT"
OBJS=""
for src in service/*.c service/ui_assets.S tests/fuzz/http_stub.c; do
    case "$src" in service/main.c | service/http.c) continue ;; esac
    obj="$OUT/obj/$(basename "$src").o"
    if [ ! -f "$obj" ] || [ -n "$(find "$src" include tests/fuzz/fuzz_http.h -newer "$obj" \( -name '*.[chS]' \) 2>/dev/null | head -1)" ]; then
        # shellcheck disable=SC2086
        "$CLANG" $CFLAGS -c "$src" -o "$obj"
    fi
    OBJS="$OBJS $obj"
done

status=0
for t in $TARGETS; do
    # shellcheck disable=SC2086,SC2046
    "$CLANG" $CFLAGS -fsanitize=fuzzer "tests/fuzz/fuzz_$t.c" $OBJS \
        $(pkg-config --libs $PKGS) -lpthread -lm -o "$OUT/fuzz_$t"
    mkdir -p "$OUT/corpus-$t"
    seeds="$ROOT/tests/fuzz/seeds-$t"
    [ "$t" = webhook ] && seeds="$ROOT/tests/fuzz/seeds"
    cp -n "$seeds"/* "$OUT/corpus-$t/" 2>/dev/null || true
    echo "== fuzz_$t: $SECONDS_TO_RUN s"
    (cd "$OUT" && ./"fuzz_$t" -max_total_time="$SECONDS_TO_RUN" -max_len=65536 -timeout=10 \
        -rss_limit_mb=2048 -artifact_prefix="$OUT/$t-" -print_final_stats=1 "$@" \
        "$OUT/corpus-$t") || status=1
done
exit $status
