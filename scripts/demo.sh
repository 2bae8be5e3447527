#!/bin/bash
# The demo's common steps against the ccsyncd that `make run` started: the ports, the
# admin token and the association come from the state file scripts/run-dev.sh writes
# (RUN_DIR/run.env, RUN_DIR defaulting to build/dev), so no command repeats them.
#
#   scripts/demo.sh webhook TYPE DATA_JSON   sign and send one Novi webhook (scripts/send-webhook.sh)
#   scripts/demo.sh fields                   map two member fields (MemberType -> the custom field
#                                            "Member Type", Phone -> phone_number) and turn group
#                                            tags on ("Novi: " + group name)
#   scripts/demo.sh members GROUP            a group.members event with four sample members
#   scripts/demo.sh status [GROUP]           a group's status, or every group's
#   scripts/demo.sh resync GROUP             ask for a full sync (a new list if it was deleted)
#   scripts/demo.sh audit [LIMIT]            the association's audit log, newest first
#   scripts/demo.sh service                  GET /v1/status: queue, budget, groups in error
#   scripts/demo.sh cc-lists                 the simulator's lists and their members
#   scripts/demo.sh cc-contacts              the simulator's contacts: custom fields and tags
#   scripts/demo.sh delete-list GROUP        delete the group's list in the simulator, as an
#                                            admin would in Constant Contact
#   scripts/demo.sh list-id GROUP            the group's list_id
# Exits 1 when the request fails (curl, or an HTTP status of 400 or more).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${RUN_DIR:-${BUILD:-build}/dev}
STATE=$RUN_DIR/run.env

usage() {
    sed -n '/^#   scripts\/demo.sh webhook/,/^# Exits/p' "$0" | sed -e '$d' -e 's/^#   //'
    exit 2
}
[ $# -ge 1 ] || usage
case $1 in help | -h | --help) usage ;; esac
if [ ! -r "$STATE" ]; then
    echo "demo: no $STATE: start \`make run\` first (or set RUN_DIR to its folder)" >&2
    exit 1
fi
# shellcheck source=/dev/null
. "$STATE"
ASSOC_URL=$CCSYNC_URL/v1/associations/$CCSYNC_ASSOCIATION

# admin METHOD PATH: the admin API, pretty-printed when the answer is JSON.
admin() {
    curl -sS --fail-with-body -X "$1" -H "Authorization: Bearer $CCSYNC_ADMIN_TOKEN" "$2" | pretty
}
pretty() {
    python3 -c 'import json, sys
t = sys.stdin.read()
try:
    print(json.dumps(json.loads(t), indent=2))
except ValueError:
    print(t)'
}
need_group() { [ -n "${1:-}" ] || { echo "demo: name the group (for example: board)" >&2; exit 2; }; }
need_sim() {
    [ -n "$SIM_URL" ] || { echo "demo: make run was given CCSYNC_CC_API_URL: no simulator to show" >&2; exit 1; }
}
list_id() { # group
    curl -sS --fail-with-body -H "Authorization: Bearer $CCSYNC_ADMIN_TOKEN" "$ASSOC_URL/groups/$1" |
        python3 -c 'import json, sys; print((json.load(sys.stdin).get("list") or {}).get("list_id") or "")'
}

cmd=$1
shift
case $cmd in
webhook)
    [ $# -eq 2 ] || usage
    CCSYNC_URL=$CCSYNC_URL CCSYNC_ASSOCIATION=$CCSYNC_ASSOCIATION \
        CCSYNC_WEBHOOK_SECRET=$CCSYNC_WEBHOOK_SECRET scripts/send-webhook.sh "$1" "$2"
    ;;
members)
    need_group "${1:-}"
    exec "$0" webhook group.members '{"UniqueID":"'"$1"'","Members":[
        {"UniqueID":"m1","Email":"ann@example.org","FirstName":"Ann","LastName":"Lee","CustomerType":"Person",
         "MemberType":"Gold","CustomFields":{"Chapter":"North"},"Phone":"555-0100"},
        {"UniqueID":"m2","Email":"bob@example.org","FirstName":"Bob","LastName":"Ray","MemberType":"Regular"},
        {"UniqueID":"m3","Email":"not-an-email"},
        {"UniqueID":"m4","Company":"Acme","Email":"ANN@example.org","CustomerType":"Company"}]}'
    ;;
fields)
    curl -sS --fail-with-body -X PUT -H "Authorization: Bearer $CCSYNC_ADMIN_TOKEN" \
        -H 'Content-Type: application/json' "$ASSOC_URL" -d '{
        "fields":[{"novi":"MemberType","cc":"custom:Member Type"},{"novi":"Phone","cc":"phone_number"}],
        "tags":{"group_tags":true,"prefix":"Novi: "}}' | pretty
    ;;
status)
    if [ $# -ge 1 ]; then admin GET "$ASSOC_URL/groups/$1"; else admin GET "$ASSOC_URL/groups"; fi
    ;;
resync)
    need_group "${1:-}"
    admin POST "$ASSOC_URL/groups/$1/resync"
    ;;
audit)
    admin GET "$ASSOC_URL/audit?limit=${1:-20}"
    ;;
service)
    admin GET "$CCSYNC_URL/v1/status"
    ;;
list-id)
    need_group "${1:-}"
    list_id "$1"
    ;;
cc-lists)
    need_sim
    curl -sS --fail-with-body "$SIM_URL/__sim/state" | python3 -c 'import json, sys
lists = json.load(sys.stdin)["lists"]
for l in lists:
    print("%s  %-8s %s: %s" % (l["list_id"], l["status"], l["name"], ", ".join(l["members"]) or "(no members)"))
if not lists:
    print("(no lists)")'
    ;;
cc-contacts)
    need_sim
    curl -sS --fail-with-body "$SIM_URL/__sim/state" | python3 -c 'import json, sys
for c in json.load(sys.stdin)["contacts"]:
    fields = ", ".join("%s=%s" % kv for kv in sorted(c.get("custom_fields", {}).items()))
    print("%s  fields: %s  tags: %s" % (c["email"], fields or "-", ", ".join(sorted(c.get("tags", []))) or "-"))'
    ;;
delete-list)
    need_group "${1:-}"
    need_sim
    id=$(list_id "$1")
    [ -n "$id" ] || { echo "demo: group $1 has no list (yet)" >&2; exit 1; }
    curl -sS --fail-with-body -X POST "$SIM_URL/__sim/lists/$id/delete" >/dev/null
    # Reconcile spreads its share of the day's budget over every association, so it
    # may come by only minutes apart; ask for one, as opening the status page does
    # (once a minute: a 429 means one was asked already and is on its way).
    curl -sS -o /dev/null -X POST -H "Authorization: Bearer $CCSYNC_ADMIN_TOKEN" "$ASSOC_URL/reconcile"
    echo "deleted list $id in the simulator and asked for a reconcile; within seconds \`scripts/demo.sh status $1\` shows the error"
    ;;
*) usage ;;
esac
