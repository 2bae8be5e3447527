#!/bin/sh
# Installs the pinned Node tools of tests/tools (Redocly CLI, Prism, dockerfilelint) once.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../tests/tools"
if [ -x node_modules/.bin/redocly ] && [ -x node_modules/.bin/prism ] &&
    [ -x node_modules/.bin/dockerfilelint ]; then exit 0; fi
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
