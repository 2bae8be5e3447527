#!/bin/sh
# Builds the webhook fuzz target with clang's libFuzzer, ASan and UBSan, and runs
# it for SECONDS (default 60) over build/fuzz/corpus, seeded from tests/fuzz/seeds.
#   tests/fuzz/run.sh [SECONDS] [extra libFuzzer flags, e.g. -jobs=2 -workers=2]
# Crashes are written to build/fuzz/crash-*; the exit status is non-zero if any.
set -eu

SECONDS_TO_RUN=${1:-60}
[ $# -gt 0 ] && shift
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT="$ROOT/build/fuzz"
CLANG=${CLANG:-clang}

mkdir -p "$OUT/corpus"
# shellcheck disable=SC2046 # pkg-config output is meant to be split into flags
"$CLANG" -std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -I"$ROOT/include" $(pkg-config --cflags json-c openssl) \
    "$ROOT/tests/fuzz/fuzz_webhook.c" "$ROOT/service/webhook.c" "$ROOT/service/model.c" \
    $(pkg-config --libs json-c openssl) -o "$OUT/fuzz_webhook"

cp -n "$ROOT"/tests/fuzz/seeds/* "$OUT/corpus/" 2>/dev/null || true

cd "$OUT"
exec ./fuzz_webhook -max_total_time="$SECONDS_TO_RUN" -max_len=8192 -timeout=10 \
    -artifact_prefix="$OUT/" -print_final_stats=1 "$@" "$OUT/corpus"
