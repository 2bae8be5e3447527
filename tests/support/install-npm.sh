#!/bin/sh
# Installs the pinned Node tools of tests/tools (Redocly CLI, Prism, dockerfilelint) once.
set -eu
cd "$(dirname "$0")/../tools"
if [ -x node_modules/.bin/redocly ] && [ -x node_modules/.bin/prism ] &&
    [ -x node_modules/.bin/dockerfilelint ]; then exit 0; fi
echo "installing Node test tools (tests/tools/package.json)"
if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
else
    npm install --no-audit --no-fund --loglevel=error
fi
