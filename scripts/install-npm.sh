#!/bin/sh
# Installs the pinned Node tools of tests/tools (Redocly CLI, Prism, dockerfilelint) once.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
# make bench's Node peer (tests/bench/node: Fastify, standardwebhooks, ioredis), pinned
# by its package-lock.json; installed once, after the tools below (which bring npm).
bench_peer() {
    [ -d "$here/../tests/bench/node/node_modules/fastify" ] && return 0
    echo "installing make bench's Node peer (tests/bench/node/package.json)"
    (cd "$here/../tests/bench/node" && npm ci --no-audit --no-fund --loglevel=error)
}
cd "$here/../tests/tools"
if [ -x node_modules/.bin/redocly ] && [ -x node_modules/.bin/prism ] &&
    [ -x node_modules/.bin/dockerfilelint ]; then
    bench_peer
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    # Node.js and npm from Debian only when the machine has none of its own
    # (a Node.js installed some other way comes with its npm, which Debian's conflicts with).
    "$here/install-debs.sh" nodejs npm
fi
echo "installing Node test tools (tests/tools/package.json)"
if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
else
    npm install --no-audit --no-fund --loglevel=error
fi
bench_peer
