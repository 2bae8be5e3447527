#!/bin/sh
# redis-start.sh: the compose redis service's entry point. Redis gets two users, whose
# passwords are Docker secrets (docker/make-secrets.sh makes them):
#   ccsync   what ccsyncd connects as: only ccsync's keys and the commands it uses
#            (the rules in redis-ccsync.acl, beside this file);
#   default  the operator's (backups, redis-cli): every key and command, its own password.
# The ACL file is written to a tmpfs, readable by Redis only, and Redis starts through the
# image's own entry point (which drops to the redis user).
set -eu
# Anything but Redis itself (`docker-compose run redis sh redis-restore.sh ...`) runs as is.
[ "${1:-}" = redis-server ] || exec docker-entrypoint.sh "$@"
here=$(dirname "$0")
acl=/run/redis-acl/users.acl
ccsync_pw=$(cat /run/secrets/redis_password)
admin_pw=$(cat /run/secrets/redis_admin_password)
rules=$(grep -v '^#' "$here/redis-ccsync.acl" | tr -s '\n' ' ')
umask 077
{
    echo "user default on >$admin_pw ~* &* +@all"
    echo "user ccsync on >$ccsync_pw $rules"
} >"$acl"
chown redis:redis "$acl" 2>/dev/null || true
exec docker-entrypoint.sh "$@" --aclfile "$acl"
