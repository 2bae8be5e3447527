#!/bin/bash
# Writes a key file for CCSYNC_SECRETS_KEY_FILE (ccsync's secrets at rest) when none
# exists: one line "KEY_ID BASE64_OF_32_BYTES", mode 0600. An existing file is left as
# it is (its keys open what Redis holds), so running this twice is harmless.
#
#   scripts/make-secrets-key.sh FILE          create FILE with one fresh key
#   scripts/make-secrets-key.sh FILE rotate   put a fresh key FIRST in FILE (the old
#                                             lines stay: they still open older values)
#
# Rotation, in full: `rotate`, restart every ccsyncd (each one seals again, at start,
# every secret under the new first key), check that /v1/status shows
# secrets.old_key_values 0, then delete the old lines and restart again.
set -euo pipefail
file=${1:?usage: make-secrets-key.sh FILE [rotate]}
umask 077
new_line() { echo "k$(date -u +%Y%m%d%H%M%S) $(openssl rand -base64 32)"; }
case "${2:-}" in
"")
    [ -s "$file" ] && exit 0
    mkdir -p "$(dirname "$file")"
    { echo "# ccsync secrets at rest: KEY_ID BASE64_32_BYTES; the first line seals, every line opens"
      new_line; } >"$file"
    ;;
rotate)
    [ -s "$file" ] || { echo "make-secrets-key.sh: $file does not exist; create it first" >&2; exit 1; }
    tmp=$(mktemp "$file.XXXXXX")
    { new_line; grep -v '^#' "$file"; } >"$tmp"
    mv "$tmp" "$file"
    ;;
*)
    echo "usage: make-secrets-key.sh FILE [rotate]" >&2
    exit 2
    ;;
esac
chmod 600 "$file"
