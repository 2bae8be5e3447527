#!/bin/sh
# redis-start.sh: the entry point of the compose Redis services (redis, and the ha profile's
# redis-replica) and of the ha profile's Sentinels. Every password is a Docker secret
# (docker/make-secrets.sh makes them) read from a file here, never put on a command line
# (ps would show it) nor in the compose file. Redis gets four users, the same on every Redis
# of the deployment (a replica promoted by Sentinel must accept ccsyncd as the primary did):
#   ccsync       what ccsyncd connects as: only ccsync's keys and the commands it uses
#                (the rules in redis-ccsync.acl, beside this file);          redis_password
#   default      the operator's (backups, redis-cli): every key and command; redis_admin_password
#   replication  what a replica authenticates as to its primary (masteruser): PSYNC,
#                REPLCONF, PING only (Redis's documented replica rules); redis_replication_password
#   sentinel     what the Sentinels authenticate as (sentinel auth-user): the commands
#                Sentinel sends, per Redis's documented Sentinel rules;    redis_sentinel_password
# The ACL file and the replication settings (masteruser, masterauth) are written to a tmpfs
# readable by Redis only, and Redis starts through the image's own entry point (which drops to
# the redis user).
#
#   redis-start.sh redis-server [ARG...]               Redis from its command line (`redis`)
#   redis-start.sh redis-server FILE.conf [--NAME VALUE...]
#       Redis from FILE, written from the ARGs (one directive a line) when it does not exist:
#       Sentinel rewrites FILE when it promotes or demotes this Redis, so the role outlasts a
#       restart; later starts ignore the ARGs (`redis-replica`).
#   redis-start.sh redis-sentinel FILE.conf [--NAME VALUE...]
#       Sentinel from FILE, written once the same way; its `sentinel auth-user`/`auth-pass`
#       lines for the monitored primary are renewed from the secret at every start.
# Anything else (`docker-compose run redis sh redis-restore.sh ...`) runs as is.
# REDIS_SECRETS_DIR (default /run/secrets) and REDIS_RUN_DIR (default /run/redis-acl) move
# the files, for tests/deploy/check.sh, which runs this outside Docker.
set -eu
here=$(dirname "$0")
secrets=${REDIS_SECRETS_DIR:-/run/secrets}
run=${REDIS_RUN_DIR:-/run/redis-acl}

# start COMMAND...: through the image's entry point when there is one (in the container).
start() {
    if command -v docker-entrypoint.sh >/dev/null 2>&1; then set -- docker-entrypoint.sh "$@"; fi
    exec "$@"
}

# write_once FILE [--NAME VALUE...]: FILE holds "NAME VALUE" a line, unless it exists.
write_once() {
    file=$1
    shift
    [ -f "$file" ] && return 0
    line=""
    for a in "$@"; do
        case $a in
        --*)
            [ -z "$line" ] || printf '%s\n' "$line"
            line=${a#--}
            ;;
        *) line="$line $a" ;;
        esac
    done >"$file.new"
    [ -z "$line" ] || printf '%s\n' "$line" >>"$file.new"
    mv "$file.new" "$file"
}

# users: the ACL file and the replication settings, from the secrets.
users() {
    rules=$(grep -v '^#' "$here/redis-ccsync.acl" | tr -s '\n' ' ')
    {
        echo "user default on >$(cat "$secrets/redis_admin_password") ~* &* +@all"
        echo "user ccsync on >$(cat "$secrets/redis_password") $rules"
        echo "user replication on >$(cat "$secrets/redis_replication_password") +psync +replconf +ping"
        echo "user sentinel on >$(cat "$secrets/redis_sentinel_password") allchannels +multi" \
            "+slaveof +ping +exec +subscribe +config|rewrite +role +publish +info" \
            "+client|setname +client|kill +script|kill"
    } >"$run/users.acl"
    # Every Redis may become a replica (Sentinel demotes a failed primary when it returns).
    {
        echo "masteruser replication"
        echo "masterauth $(cat "$secrets/redis_replication_password")"
    } >"$run/replication.conf"
    chown redis:redis "$run/users.acl" "$run/replication.conf" 2>/dev/null || true
}

case "${1:-}" in
redis-server)
    umask 077
    mkdir -p "$run"
    users
    shift
    case "${1:-}" in
    *.conf)
        write_once "$@"
        # CONFIG REWRITE (a promotion) copies masterauth into FILE; the secret is the truth.
        sed -i -e '/^masterauth /d' -e '/^masteruser /d' "$1"
        set -- "$1"
        ;;
    esac
    start redis-server "$@" --aclfile "$run/users.acl" --include "$run/replication.conf"
    ;;
redis-sentinel)
    umask 077
    shift
    write_once "$@"
    name=$(awk '$1 == "sentinel" && $2 == "monitor" { print $3; exit }' "$1")
    [ -n "$name" ] || { echo "redis-start.sh: $1 monitors nothing" >&2; exit 1; }
    sed -i -e '/^sentinel auth-user /d' -e '/^sentinel auth-pass /d' "$1"
    {
        echo "sentinel auth-user $name sentinel"
        echo "sentinel auth-pass $name $(cat "$secrets/redis_sentinel_password")"
    } >>"$1"
    start redis-server "$1" --sentinel
    ;;
*) start "$@" ;;
esac
