#!/bin/sh
# Sends one signed Novi webhook to ccsync, as Novi would (Standard Webhooks).
#
#   scripts/send-webhook.sh TYPE DATA_JSON [TIMESTAMP]
#
#   TYPE       customer.created | customer.updated | customer.removed |
#              group.created | group.updated | group.deleted | group.members
#   DATA_JSON  the event's "data" object, or @FILE to read it from a file
#   TIMESTAMP  the envelope's RFC 3339 timestamp (default: now, with nanoseconds)
#
# Environment (defaults match `make run`):
#   CCSYNC_URL             http://127.0.0.1:8080
#   CCSYNC_ASSOCIATION     demo
#   CCSYNC_WEBHOOK_SECRET  whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
#   WEBHOOK_ID             a new random id (set it to resend the same delivery)
set -eu
[ $# -ge 2 ] || { sed -n '2,16p' "$0"; exit 2; }
type=$1
data=$2
ts=${3:-$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)}
url=${CCSYNC_URL:-http://127.0.0.1:8080}
assoc=${CCSYNC_ASSOCIATION:-demo}
secret=${CCSYNC_WEBHOOK_SECRET:-whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw}
id=${WEBHOOK_ID:-msg_$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')}
now=$(date +%s)
body=$(mktemp)
trap 'rm -f "$body"' EXIT
{
    printf '{"type":"%s","timestamp":"%s","data":' "$type" "$ts"
    case $data in
    @*) cat "${data#@}" ;;
    *) printf '%s' "$data" ;;
    esac
    printf '}'
} >"$body"
key=$(printf '%s' "${secret#whsec_}" | base64 -d | od -An -v -tx1 | tr -d ' \n')
sig=$({ printf '%s.%s.' "$id" "$now"; cat "$body"; } |
      openssl dgst -sha256 -mac HMAC -macopt "hexkey:$key" -binary | base64 | tr -d '\n')
curl -sS -X POST "$url/v1/associations/$assoc/webhooks/novi" \
    -H 'Content-Type: application/json' \
    -H "webhook-id: $id" -H "webhook-timestamp: $now" -H "webhook-signature: v1,$sig" \
    --data-binary "@$body" -w ' (HTTP %{http_code})\n'
