#!/bin/sh
# redis-restore.sh BACKUP.rdb [DATA_DIR]: turns an RDB backup into the data folder of a
# Redis that runs with AOF on (docker-compose.yml's redis), then exits.
#
# Why a script: with `appendonly yes`, Redis 7 loads only the AOF at start. Given a folder
# holding nothing but a dump.rdb it starts EMPTY and writes a new, empty AOF, so copying a
# backup next to the AOF loses everything. Here the backup is loaded with AOF off, then AOF
# is switched on, which makes Redis write a fresh AOF from the loaded data.
#
# Run it in the redis image with Redis stopped (docker/README.md, "Back up and restore"), or
# on any machine with redis-server (tests/deploy/check.sh does). DATA_DIR defaults to /data.
set -eu
backup=${1:?usage: redis-restore.sh BACKUP.rdb [DATA_DIR]}
data=${2:-/data}
port=${RESTORE_PORT:-6399}
[ -s "$backup" ] || { echo "redis-restore: $backup is missing or empty" >&2; exit 1; }

rm -rf "$data/appendonlydir" "$data/dump.rdb"
cp "$backup" "$data/dump.rdb"

# Loopback only and a port of its own: nothing else can write while the AOF is made.
redis-server --bind 127.0.0.1 --port "$port" --dir "$data" --dbfilename dump.rdb \
    --appendonly no --save "" --daemonize yes --logfile "$data/restore.log" \
    --pidfile "$data/restore.pid"
cli() { redis-cli -p "$port" "$@"; }
i=0
until cli ping 2>/dev/null | grep -q PONG; do # LOADING while a large backup loads
    i=$((i + 1)); [ "$i" -lt 600 ] || { echo "redis-restore: Redis did not start" >&2; exit 1; }
    sleep 1
done
keys=$(cli dbsize)
cli config set appendonly yes >/dev/null
i=0
while :; do
    info=$(cli info persistence | tr -d '\r')
    case $info in
    *aof_enabled:1*) case $info in
        *aof_rewrite_in_progress:0*aof_rewrite_scheduled:0*) break ;;
        esac ;;
    esac
    i=$((i + 1)); [ "$i" -lt 3600 ] || { echo "redis-restore: AOF rewrite did not finish" >&2; exit 1; }
    sleep 1
done
cli shutdown nosave >/dev/null 2>&1 || true
i=0
while [ -f "$data/restore.pid" ] || cli ping >/dev/null 2>&1; do
    i=$((i + 1)); [ "$i" -lt 60 ] || break
    sleep 1
done
rm -f "$data/restore.log" "$data/restore.pid"
# The redis image runs Redis as user redis; this script may have run as root.
if [ "$(id -u)" -eq 0 ] && id redis >/dev/null 2>&1; then chown -R redis:redis "$data"; fi
echo "redis-restore: restored $keys keys into $data (AOF written)"
