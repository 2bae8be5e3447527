#!/bin/sh
# tests/alerts/check.sh - the Prometheus alert rules of docker/prometheus/:
#   - `promtool check rules` accepts alerts.yml;
#   - `promtool test rules` runs alerts.test.yml: the deleted-list alert fires once
#     (two processes report the same gauge), at once, and resolves after the resync;
#   - every series the rules name is one ccsyncd exports (service/ names it), so a
#     renamed metric cannot leave the alerts silently watching nothing.
# Prints one line a check and "alerts: N passed, M failed"; exits 1 on failure.
# promtool is Debian's prometheus package (make deps installs it).
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DIR=$ROOT/docker/prometheus
passed=0
failed=0
check() { # name, command...
    name=$1
    shift
    if out=$("$@" 2>&1); then
        passed=$((passed + 1))
        echo "ok   - $name"
    else
        failed=$((failed + 1))
        echo "FAIL - $name"
        printf '%s\n' "$out" | head -n 30 | sed 's/^/       /'
    fi
}
metrics_exported() {
    grep -o 'ccsync_[a-z_]*' "$DIR/alerts.yml" | sort -u | while read -r m; do
        grep -rqs "\"$m\"" "$ROOT/service" || { echo "$m is not exported by ccsyncd"; exit 1; }
    done
}
if ! command -v promtool >/dev/null 2>&1; then
    echo "FAIL - promtool not found (Debian package prometheus: make deps)"
    echo "alerts: 0 passed, 1 failed"
    exit 1
fi
check "promtool check rules docker/prometheus/alerts.yml" promtool check rules "$DIR/alerts.yml"
# promtool resolves rule_files against the working directory
check "promtool test rules docker/prometheus/alerts.test.yml" sh -c "cd '$DIR' && promtool test rules alerts.test.yml"
check "the rules name only metrics ccsyncd exports" metrics_exported
echo "alerts: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
