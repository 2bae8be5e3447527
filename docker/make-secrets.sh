#!/bin/sh
# make-secrets.sh: the compose deployment's secrets, made once in docker/secrets/ (git- and
# docker-ignored), each file kept when it exists:
#   secrets/ccsync_secrets.key    CCSYNC_SECRETS_KEY_FILE: seals webhook secrets and CC
#                                 tokens at rest (scripts/make-secrets-key.sh; `rotate` there)
#   secrets/redis_password        the Redis user "ccsync" (CCSYNC_REDIS_PASSWORD_FILE)
#   secrets/redis_admin_password  the Redis user "default", for backups and redis-cli
#   secrets/redis_replication_password  the Redis user "replication" (a replica to its primary)
#   secrets/redis_sentinel_password     the Redis user "sentinel" (the ha profile's Sentinels)
# Docker Compose mounts them into the containers under /run/secrets/ with the files' owner
# and mode, so they are made readable by the containers' users: ccsyncd runs as 10001
# (owner root, group 10001, mode 0640 when this runs as root; else mode 0644, and the
# folder itself is 0700); Redis's and Sentinel's entry point (redis-start.sh) reads the
# others as root.
#
#   cd docker && ./make-secrets.sh
set -eu
cd "$(dirname "$0")"
mkdir -p secrets
chmod 700 secrets
umask 077
made=""
if [ ! -s secrets/ccsync_secrets.key ]; then
    ../scripts/make-secrets-key.sh secrets/ccsync_secrets.key
    made="$made ccsync_secrets.key"
fi
for f in redis_password redis_admin_password redis_replication_password redis_sentinel_password; do
    if [ ! -s "secrets/$f" ]; then
        openssl rand -hex 32 >"secrets/$f"
        made="$made $f"
    fi
done
if [ "$(id -u)" -eq 0 ]; then
    chown root:10001 secrets/ccsync_secrets.key secrets/redis_password
    chmod 0640 secrets/ccsync_secrets.key secrets/redis_password
    # read by redis-start.sh, as root
    chmod 0600 secrets/redis_admin_password secrets/redis_replication_password secrets/redis_sentinel_password
else
    chmod 0644 secrets/ccsync_secrets.key secrets/redis_password secrets/redis_admin_password \
        secrets/redis_replication_password secrets/redis_sentinel_password
fi
echo "make-secrets.sh: docker/secrets/ ready${made:+ (made:$made)}"
