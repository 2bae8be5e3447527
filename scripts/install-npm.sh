#!/bin/sh
# Installs the pinned Node tools of tests/tools (Redocly CLI, Prism, dockerfilelint) and of
# tests/browser (puppeteer-core, which drives Debian's chromium and downloads no browser) once.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
# make bench's Node peer (tests/bench/node: Fastify, standardwebhooks, ioredis), pinned
# by its package-lock.json; installed once, after the tools below (which bring npm).
bench_peer() {
    [ -d "$here/../tests/bench/node/node_modules/fastify" ] && return 0
    echo "installing make bench's Node peer (tests/bench/node/package.json)"
    (cd "$here/../tests/bench/node" && npm ci --no-audit --no-fund --loglevel=error)
}
if ! command -v npm >/dev/null 2>&1; then
    # Node.js and npm from Debian only when the machine has none of its own
    # (a Node.js installed some other way comes with its npm, which Debian's conflicts with).
    "$here/install-debs.sh" nodejs npm
fi
install() { # folder (with package.json and package-lock.json), what it holds
    cd "$here/../$1"
    echo "installing Node test tools ($1/package.json: $2)"
    if [ -f package-lock.json ]; then
        npm ci --no-audit --no-fund --loglevel=error
    else
        npm install --no-audit --no-fund --loglevel=error
    fi
}
if ! [ -x "$here/../tests/tools/node_modules/.bin/redocly" ] ||
    ! [ -x "$here/../tests/tools/node_modules/.bin/prism" ] ||
    ! [ -x "$here/../tests/tools/node_modules/.bin/dockerfilelint" ]; then
    install tests/tools "Redocly CLI, Prism, dockerfilelint"
fi
if ! [ -d "$here/../tests/browser/node_modules/puppeteer-core" ]; then
    # puppeteer-core never downloads a browser; PUPPETEER_SKIP_DOWNLOAD says so to be sure
    PUPPETEER_SKIP_DOWNLOAD=1 install tests/browser "puppeteer-core"
fi
bench_peer
