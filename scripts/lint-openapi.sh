#!/bin/sh
# scripts/lint-openapi.sh - lints openapi/ccsync.yaml with the pinned Redocly CLI
# (tests/tools/package.json, installed by scripts/install-npm.sh) and the
# configuration at the repo root: redocly.yaml (the recommended ruleset; example
# checks raised to errors) and .redocly.lint-ignore.yaml (each ignored problem says why).
# Prints Redocly's report, then "openapi: 1 passed, 0 failed" or "openapi: 0 passed, 1 failed";
# exits 1 when the document has errors (warnings are printed but do not fail it).
set -u
cd "$(dirname "$0")/.." || exit 1

DOC=openapi/ccsync.yaml
REDOCLY=tests/tools/node_modules/.bin/redocly
# The version tests/tools/package.json pins; another one may lint differently.
WANT=$(sed -n 's/.*"@redocly\/cli": *"\([^"]*\)".*/\1/p' tests/tools/package.json)

fail() {
    echo "openapi: $1"
    echo "openapi: 0 passed, 1 failed"
    exit 1
}

[ -f "$DOC" ] || fail "missing $DOC"
if [ ! -x "$REDOCLY" ]; then
    scripts/install-npm.sh || fail "could not install the Node test tools (scripts/install-npm.sh)"
fi
[ -x "$REDOCLY" ] || fail "missing $REDOCLY (run scripts/install-npm.sh)"
# Node prints a deprecation banner on some versions; the version is the last line.
HAVE=$("$REDOCLY" --version 2>/dev/null | tail -n 1 | tr -d '[:space:]')
if [ -z "$WANT" ] || [ "$HAVE" != "$WANT" ]; then
    fail "Redocly CLI is $HAVE, tests/tools/package.json pins $WANT (run scripts/install-npm.sh)"
fi

# Redocly's own telemetry and update check have nothing to do with a lint.
REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true "$REDOCLY" lint "$DOC"
rc=$?
if [ "$rc" -eq 0 ]; then
    echo "openapi: 1 passed, 0 failed"
    exit 0
fi
echo "openapi: 0 passed, 1 failed"
exit 1
