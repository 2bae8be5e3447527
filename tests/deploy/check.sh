#!/usr/bin/env bash
# tests/deploy/check.sh - checks the deployment files (Dockerfile, .dockerignore, docker/)
# with the tools that run on a machine without a Docker engine:
#   - docker-compose config, for the default and the demo profile, and what it resolves to;
#   - every configuration variable in the example env file;
#   - the Dockerfile linted (dockerfilelint, plus the hadolint rules that matter here);
#   - the Debian packages of the Dockerfile are the Makefile's (make -s print-deps);
#   - the build context that .dockerignore lets through holds every source and header make
#     compiles (make -n in it, each source preprocessed: no third build);
#   - the final stage's command line, environment and user run build/ccsyncd against a
#     local Redis: /readyz answers 200, the HEALTHCHECK command passes, SIGTERM drains;
#   - the Redis backup and restore procedure of docker/README.md keeps queued events;
#   - the ha profile: its configuration (a replica, three Sentinels, ccsyncd through them, every
#     one authenticated), and its Redis and Sentinel entry points run locally with the ACL users
#     and passwords: quorum, failover, a promotion that lasts, the old primary following.
# Prints one line a check and "deploy: N passed, M failed" at the end; exits 1 on failure.
# BUILD selects the build folder holding ccsyncd (default build); DEPLOY_VERBOSE=1 also shows
# what passing checks printed.
set -u

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-build}
case $BUILD in /*) BUILD_DIR=$BUILD ;; *) BUILD_DIR=$ROOT/$BUILD ;; esac
# Debian's python3 has python3-yaml (docker-compose depends on it); a pyenv one may not.
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3
tool() { "$PY" "$ROOT/tests/deploy/deploytool.py" "$@"; }
compose() { docker-compose -f "$ROOT/docker/docker-compose.yml" "$@"; }
DEBIAN_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin # debian image's PATH

passed=0 failed=0 skipped=0
pass() { passed=$((passed + 1)); echo "ok   - $1"; }
fail() {
    failed=$((failed + 1)); echo "FAIL - $1"
    if [ -n "${2:-}" ]; then printf '%s\n' "$2" | head -n 40 | sed 's/^/       /'; fi
}
skip() { skipped=$((skipped + 1)); echo "skip - $1"; }
# check NAME COMMAND...: passes when COMMAND exits 0, shows its output otherwise.
# COMMAND runs in this shell (not in $(...)), so that the servers it starts are in PIDS for
# cleanup and their open stdout cannot keep a command substitution waiting.
check() {
    local name=$1
    shift
    if "$@" >"$TMP/out" 2>&1 </dev/null; then
        pass "$name"
        if [ -n "${DEPLOY_VERBOSE:-}" ] && [ -s "$TMP/out" ]; then sed 's/^/       /' "$TMP/out"; fi
    else
        fail "$name" "$(cat "$TMP/out")"
    fi
}

TMP=$(mktemp -d /tmp/ccsync-deploy.XXXXXX)
chmod 755 "$TMP" # ccsyncd runs as the image's non-root user and must reach its PATH here
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A TCP port nobody listens on now (the kernel's choice; the race with another process
# taking it before we do is acceptable for tests).
free_port() {
    $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_until SECONDS COMMAND...: retries COMMAND every 0.1 s.
wait_until() {
    local deadline=$(($(date +%s) + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -ge "$deadline" ] && return 1
        sleep 0.1
    done
}

# start_redis DIR PORT [ARG...]: Redis with the compose file's persistence flags, in the
# background (ARGs added: an --aclfile; REDISCLI_AUTH then holds the default user's password).
start_redis() {
    local dir=$1 port=$2
    shift 2
    mkdir -p "$dir"
    redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --appendonly yes --appendfsync everysec \
        --maxmemory-policy noeviction --save "" --logfile "$dir/redis.log" "$@" </dev/null >/dev/null 2>&1 &
    PIDS+=($!)
    wait_until 10 sh -c "redis-cli --no-auth-warning -p $port ping | grep -q PONG"
}

# acl_file DIR: docker/make-secrets.sh's three secrets in DIR/secrets and the ACL file
# docker/redis-start.sh writes from them, in DIR/users.acl.
acl_file() {
    local s=$1/secrets
    mkdir -p "$s"
    scripts/make-secrets-key.sh "$s/ccsync_secrets_key"
    openssl rand -hex 32 >"$s/redis_password"
    openssl rand -hex 32 >"$s/redis_admin_password"
    {
        echo "user default on >$(cat "$s/redis_admin_password") ~* &* +@all"
        echo "user ccsync on >$(cat "$s/redis_password") $(grep -v '^#' docker/redis-ccsync.acl | tr -s '\n' ' ')"
    } >"$1/users.acl"
}

cd "$ROOT" || exit 1

# ---- 1. docker-compose config ---------------------------------------------------------
compose_config() { # ENV_FILE OUT [--profile NAME]
    local env_file=$1 out=$2
    shift 2
    CCSYNC_ENV_FILE=$env_file compose "$@" config >"$out.yml" || return 1
    tool yaml2json "$out.yml" "$out.json"
}
if ! command -v docker-compose >/dev/null; then
    fail "docker-compose is installed (make deps-test)"
else
    check "compose: default profile validates (docker-compose config)" \
        compose_config ccsync.env.example "$TMP/default"
    check "compose: demo profile validates (docker-compose --profile demo config)" \
        compose_config ccsync.demo.env "$TMP/demo" --profile demo
    if [ -s "$TMP/default.json" ] && [ -s "$TMP/demo.json" ]; then
        check "compose: redis 7 AOF on a named volume, health-gated ccsyncd, drain, --scale-safe, demo wiring" \
            tool compose "$TMP/default.json" "$TMP/demo.json" docker/docker-compose.yml docker/ccsync.env.example
    else
        fail "compose: configuration checks (no configuration to check)"
    fi
    tool ha-env docker/ccsync.env.example "$TMP/ha.env"
    check "compose: ha profile validates (docker-compose --profile ha config)" \
        compose_config "$TMP/ha.env" "$TMP/ha" --profile ha
    if [ -s "$TMP/ha.json" ]; then
        check "compose: ha profile: a replica, three Sentinels (quorum 2), all authenticated through redis-start.sh, ccsyncd through them in replica mode" \
            tool compose-ha "$TMP/ha.json" "$TMP/ha.env"
    else
        fail "compose: ha configuration checks (no configuration to check)"
    fi
fi

# ---- 2. the env files name every variable ----------------------------------------------
env_coverage() {
    local known missing="" v
    known=$(tool env-vars docker/ccsync.env.example | sort -u)
    # docs/contract.md's configuration table, then whatever service/config.c reads.
    {
        sed -n '/^## Configuration/,/^## /p' docs/contract.md | grep -o '^| CCSYNC_[A-Z0-9_, ]*' |
            grep -o 'CCSYNC_[A-Z0-9_]*'
        if [ -f service/config.c ]; then grep -o '"CCSYNC_[A-Z0-9_]*"' service/config.c | tr -d '"'; fi
    } | sort -u >"$TMP/vars"
    [ -s "$TMP/vars" ] || { echo "found neither docs/contract.md's table nor service/config.c"; return 1; }
    while read -r v; do
        printf '%s\n' "$known" | grep -qx "$v" || missing="$missing $v"
    done <"$TMP/vars"
    for v in $(tool env-vars docker/ccsync.demo.env); do # a typo would be silently ignored
        grep -qx "$v" "$TMP/vars" || missing="$missing (unknown in ccsync.demo.env: $v)"
    done
    [ -z "$missing" ] || { echo "not in docker/ccsync.env.example:$missing"; return 1; }
}
check "env: ccsync.env.example names every variable of docs/contract.md and service/config.c" env_coverage

# ---- 3. Dockerfile lint ----------------------------------------------------------------
LINT=tests/tools/node_modules/.bin/dockerfilelint
if [ -x "$LINT" ] || scripts/install-npm.sh >/dev/null 2>&1; then
    lint() {
        "$LINT" -j Dockerfile >"$TMP/lint.json" # exits non-zero on any finding: judged below
        tool lint-filter Dockerfile <"$TMP/lint.json"
    }
    check "dockerfile: dockerfilelint (known false positives filtered)" lint
else
    fail "dockerfile: dockerfilelint is installed (scripts/install-npm.sh)"
fi
if command -v hadolint >/dev/null; then
    check "dockerfile: hadolint" hadolint Dockerfile
fi
check "dockerfile: non-root USER, EXPOSE 8080, HEALTHCHECK, STOPSIGNAL, no secrets, apt hygiene" \
    tool rules Dockerfile

# ---- 4. no drift between the Dockerfile's and the Makefile's Debian packages ----------------
same_packages() { # LABEL STAGE
    local want got
    want=$(make -s --no-print-directory print-deps | sed -n "s/^$1: //p" | tr ' ' '\n' | grep . | sort)
    got=$(tool apt Dockerfile "$2" | tr ' ' '\n' | grep . | sort)
    [ -n "$want" ] || { echo "make -s print-deps printed no '$1:' line"; return 1; }
    [ "$want" = "$got" ] || { diff <(echo "$want") <(echo "$got") | sed 's/^</Makefile only:/; s/^>/Dockerfile only:/' | grep only; return 1; }
}
check "packages: Dockerfile stage build installs DEB_BUILD_PKGS" same_packages build build
check "packages: Dockerfile stage base (runtime) installs DEB_RUNTIME_PKGS" same_packages runtime base

# ---- 5. the build context builds ----------------------------------------------------------
# Without a third build (make test has built build/ and build/asan/ already): make, run in the
# context, must plan to compile the very sources it compiles in the repository, and each of
# them must preprocess there (every header it includes is in the context). Linking adds no
# file, so this is what a build of the context would need.
compile_plan() { # DIR: make's compile commands for "all" into a build folder that is empty
    make -C "$1" -n V=1 BUILD="$TMP/plan-build" all 2>&1 | grep -E ' -c [^ ]+\.c -o ' |
        sed -E "s#$TMP/plan-build#build#g"
}
context_builds() {
    local want got
    mkdir -p "$TMP/ctx"
    tool context . >"$TMP/ctx.list" || return 1
    tar -cf - -T "$TMP/ctx.list" | tar -xf - -C "$TMP/ctx" || return 1
    want=$(compile_plan "$ROOT" | grep -oE ' -c [^ ]+' | sort)
    got=$(compile_plan "$TMP/ctx" | grep -oE ' -c [^ ]+' | sort)
    [ -n "$want" ] || { echo "make -n in the repository planned no compile"; return 1; }
    if [ "$want" != "$got" ]; then
        diff <(echo "$want") <(echo "$got") | sed 's/^</repository only:/; s/^>/context only:/' | grep only
        return 1
    fi
    compile_plan "$TMP/ctx" | sed -E 's/ -c ([^ ]+\.c) -o [^ ]+$/ -E \1 -o \/dev\/null/' >"$TMP/pp.sh"
    (cd "$TMP/ctx" && sh -e "$TMP/pp.sh")
}
check "context: the files .dockerignore lets in hold every source and header make all compiles" \
    context_builds

# ---- 6. the image's command line and environment, outside Docker ---------------------------
runtime_check() {
    local rt="$TMP/runtime" json rport hport token user uid gid status code i
    mkdir -p "$rt/bin"
    chmod 755 "$rt" "$rt/bin"
    [ -x "$BUILD_DIR/ccsyncd" ] || { echo "$BUILD_DIR/ccsyncd is not built (make)"; return 1; }
    # The image copies the binary to /usr/local/bin, on its PATH: here that is $rt/bin.
    # A copy, as the image has: the build folder may sit in a checkout the image's
    # user cannot enter (a mktemp -d clone is mode 700).
    cp "$BUILD_DIR/ccsyncd" "$rt/bin/ccsyncd"
    chmod 755 "$TMP" "$rt/bin/ccsyncd"
    json=$(tool runtime Dockerfile) || return 1
    rport=$(free_port)
    hport=$(free_port)
    start_redis "$rt/redis" "$rport" || { echo "redis-server did not start"; return 1; }
    token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    scripts/make-secrets-key.sh "$rt/secrets.key" && chmod 644 "$rt/secrets.key"
    # The image's ENV, then what the deployment adds (docker/ccsync.env): Redis, the admin
    # token and the key file. Only the port of CCSYNC_LISTEN moves, to a free one.
    $PY - "$json" "$rt/env" "$rt/argv" "$rt/health" "$hport" "$rport" "$token" "$rt/bin:$DEBIAN_PATH" "$rt/secrets.key" <<'EOF' || return 1
import json, sys
rt, envf, argvf, healthf, hport, rport, token, path, key = sys.argv[1:]
rt = json.loads(rt)
env = {"PATH": path, "HOME": "/nonexistent"}
env.update(rt["env"])
env["PATH"] = path  # an image PATH would name /usr/local/bin, which is $rt/bin here
host = env.get("CCSYNC_LISTEN", "0.0.0.0:8080").rsplit(":", 1)[0]
env["CCSYNC_LISTEN"] = f"{host}:{hport}"
env["CCSYNC_REDIS_URL"] = f"redis://127.0.0.1:{rport}/0"
env["CCSYNC_ADMIN_TOKEN"] = token
env["CCSYNC_SECRETS_KEY_FILE"] = key
open(envf, "w").write("".join(f"{k}={v}\0" for k, v in env.items()))
open(argvf, "w").write("".join(a + "\0" for a in rt["argv"]))
open(healthf, "w").write("".join(a + "\0" for a in (rt["healthcheck"] or ["false"])))
print(f"image: user {rt['user']}, command {rt['argv']}, healthcheck {rt['healthcheck']}", file=sys.stderr)
EOF
    local -a envv argv health asuser=()
    mapfile -d '' envv <"$rt/env"
    mapfile -d '' argv <"$rt/argv"
    mapfile -d '' health <"$rt/health"
    user=$($PY -c 'import json,sys; print(json.loads(sys.argv[1])["user"])' "$json")
    # Run as the image's user when we can (root here): proves ccsyncd needs no privilege.
    uid=${user%%:*}
    gid=${user#*:}
    [ "$gid" = "$user" ] && gid=$uid
    if [ "$(id -u)" -eq 0 ] && [[ $uid =~ ^[0-9]+$ ]] && [[ $gid =~ ^[0-9]+$ ]]; then
        asuser=(setpriv --reuid="$uid" --regid="$gid" --clear-groups)
    fi
    (cd / && exec "${asuser[@]}" env -i "${envv[@]}" "${argv[@]}") >"$rt/ccsyncd.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    code=000
    for i in $(seq 1 150); do
        code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$hport/readyz") || true
        [ "$code" = 200 ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if [ "$code" != 200 ]; then
        echo "GET /readyz answered $code (want 200); ccsyncd's log:"
        tail -n 20 "$rt/ccsyncd.log"
        return 1
    fi
    echo "GET /readyz: 200"
    if ! (cd / && exec "${asuser[@]}" env -i "${envv[@]}" "${health[@]}") >"$rt/health.log" 2>&1; then
        echo "HEALTHCHECK ${health[*]} failed while /readyz answers 200:"
        cat "$rt/health.log"
        return 1
    fi
    echo "HEALTHCHECK ${health[*]}: exit 0"
    if grep -q "$token" "$rt/ccsyncd.log"; then echo "the admin token appears in the log"; return 1; fi
    kill -TERM "$pid"
    for i in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done # ≤ 30 s
    if kill -0 "$pid" 2>/dev/null; then echo "ccsyncd still runs 30 s after SIGTERM"; return 1; fi
    wait "$pid"
    status=$?
    [ "$status" -eq 0 ] || { echo "ccsyncd exited $status after SIGTERM (want 0)"; tail -n 20 "$rt/ccsyncd.log"; return 1; }
    echo "SIGTERM: drained, exit 0"
    if (cd / && exec "${asuser[@]}" env -i "${envv[@]}" "${health[@]}") >/dev/null 2>&1; then
        echo "HEALTHCHECK passes with ccsyncd stopped"
        return 1
    fi
}
if command -v redis-server >/dev/null && command -v curl >/dev/null; then
    check "runtime: the final stage's CMD/ENV/USER run build/ccsyncd; /readyz 200, HEALTHCHECK, SIGTERM" \
        runtime_check
else
    fail "runtime: redis-server and curl are installed (make deps-test)"
fi

# ---- 6b. the demo profile's ccsim and ccsyncd, outside Docker -----------------------------
demo_check() {
    local d="$TMP/demo-run" rport hport sport aport code i sim_pid pid denied
    mkdir -p "$d/bin"
    chmod 755 "$d" "$d/bin"
    if [ ! -x "$BUILD_DIR/ccsyncd" ] || [ ! -x "$BUILD_DIR/ccsim" ]; then
        echo "build ccsyncd and ccsim first (make)"
        return 1
    fi
    [ -s "$TMP/demo.json" ] || { echo "no demo configuration (docker-compose config failed)"; return 1; }
    ln -s "$BUILD_DIR/ccsyncd" "$d/bin/ccsyncd"
    ln -s "$BUILD_DIR/ccsim" "$d/bin/ccsim"
    rport=$(free_port)
    hport=$(free_port)
    sport=$(free_port)
    aport=$(free_port)
    # Redis as the compose file runs it: users "default" and "ccsync" (redis-ccsync.acl).
    acl_file "$d"
    local -x REDISCLI_AUTH # for redis-cli here only: the operator's user
    REDISCLI_AUTH=$(cat "$d/secrets/redis_admin_password")
    start_redis "$d/redis" "$rport" --aclfile "$d/users.acl" || { echo "redis-server did not start"; return 1; }
    # The compose service ccsim's command and the compose ccsyncd's environment (the image's
    # ENV under ccsync.demo.env), with the compose network's names and ports made local and
    # the compose secrets (/run/secrets/NAME) in $d/secrets.
    "$PY" - "$TMP/demo.json" "$(tool runtime Dockerfile)" "$d" "$rport" "$hport" "$sport" "$d/bin:$DEBIAN_PATH" "$aport" <<'EOF' || return 1
import json, re, sys
conf, rt, d, rport, hport, sport, path, aport = sys.argv[1:]
svc = json.load(open(conf))["services"]
sim = list(svc["ccsim"]["command"])
i = sim.index("--listen")
m = re.match(r"(.*):(\d+)$", sim[i + 1])
sim_port = m.group(2)
sim[i + 1] = f"127.0.0.1:{sport}"
env = dict(json.loads(rt)["env"])
env.update({k: str(v) for k, v in svc["ccsyncd"]["environment"].items()})
for k, v in env.items():
    env[k] = v.replace(f"//ccsim:{sim_port}/", f"//127.0.0.1:{sport}/")
env["CCSYNC_REDIS_URL"] = re.sub(r"([/@])redis:6379/", rf"\g<1>127.0.0.1:{rport}/", env["CCSYNC_REDIS_URL"])
env["CCSYNC_LISTEN"] = f"127.0.0.1:{hport}"
env["CCSYNC_ADMIN_LISTEN"] = f"127.0.0.1:{aport}"
for s in svc["ccsyncd"].get("secrets", []):
    name = s["source"] if isinstance(s, dict) else s
    for k, v in env.items():
        env[k] = v.replace(f"/run/secrets/{name}", f"{d}/secrets/{name}")
env["PATH"] = path
open(f"{d}/sim.argv", "w").write("".join(a + "\0" for a in sim))
open(f"{d}/env", "w").write("".join(f"{k}={v}\0" for k, v in env.items()))
open(f"{d}/admin", "w").write(env.get("CCSYNC_ADMIN_TOKEN", ""))
open(f"{d}/assoc", "w").write(env.get("CCSYNC_ASSOCIATION_ID", ""))
EOF
    local -a envv simv
    mapfile -d '' envv <"$d/env"
    mapfile -d '' simv <"$d/sim.argv"
    (cd / && exec env -i "PATH=$d/bin:$DEBIAN_PATH" "${simv[@]}") >"$d/ccsim.log" 2>&1 &
    sim_pid=$!
    PIDS+=("$sim_pid")
    (cd / && exec env -i "${envv[@]}" ccsyncd) >"$d/ccsyncd.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    code=000
    for i in $(seq 1 150); do
        code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$hport/readyz") || true
        [ "$code" = 200 ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    [ "$code" = 200 ] || { echo "demo: GET /readyz answered $code"; grep -v route=readyz "$d/ccsyncd.log" | tail -n 20; tail -n 5 "$d/ccsim.log"; return 1; }
    code=$(curl -s -o "$d/assoc.json" -m 5 -w '%{http_code}' -H "Authorization: Bearer $(cat "$d/admin")" \
        "http://127.0.0.1:$aport/v1/associations/$(cat "$d/assoc")") || true
    [ "$code" = 200 ] || { echo "demo: GET /v1/associations/$(cat "$d/assoc") on the admin port answered $code"; cat "$d/assoc.json"; tail -n 20 "$d/ccsyncd.log"; return 1; }
    echo "demo association: $(cat "$d/assoc.json")"
    code=$(curl -s -o /dev/null -m 5 -w '%{http_code}' -H "Authorization: Bearer $(cat "$d/admin")" \
        "http://127.0.0.1:$hport/v1/associations/$(cat "$d/assoc")") || true
    [ "$code" = 404 ] || { echo "demo: the public port serves the admin API ($code, want 404)"; return 1; }
    code=$(curl -s -o /dev/null -m 5 -w '%{http_code}' "http://127.0.0.1:$hport/metrics") || true
    [ "$code" = 404 ] || { echo "demo: the public port serves /metrics ($code, want 404)"; return 1; }
    # Sealed at rest, and nothing ccsyncd did was refused by the ACL.
    redis-cli --no-auth-warning -p "$rport" HGET 'ccsync:{demo}:association' webhook_secret | grep -q '^enc:v1:' ||
        { echo "demo: the webhook secret is not sealed in Redis"; return 1; }
    denied=$(redis-cli --no-auth-warning -p "$rport" ACL LOG)
    [ -z "$denied" ] || { echo "demo: Redis's ACL denied ccsyncd: $denied"; return 1; }
    echo "admin API on the admin port only; secrets sealed; ACL LOG empty"
    kill -0 "$sim_pid" 2>/dev/null || { echo "ccsim exited:"; tail -n 20 "$d/ccsim.log"; return 1; }
}
if command -v redis-server >/dev/null && command -v curl >/dev/null; then
    check "demo: the demo profile's ccsim command and ccsyncd environment run outside Docker" demo_check
fi

# ---- 7. back up and restore Redis as docker/README.md says ------------------------------
restore_check() {
    local a="$TMP/redis-a" b="$TMP/redis-b" pa pb want got
    pa=$(free_port)
    start_redis "$a" "$pa" || { echo "redis-server did not start"; return 1; }
    for i in 1 2 3 4 5; do redis-cli -p "$pa" XADD ccsync:events '*' assoc demo id "m$i" body '{}' >/dev/null; done
    redis-cli -p "$pa" XGROUP CREATE ccsync:events workers 0 >/dev/null
    redis-cli -p "$pa" XREADGROUP GROUP workers w1 COUNT 2 STREAMS ccsync:events '>' >/dev/null
    want="$(redis-cli -p "$pa" XLEN ccsync:events)/$(redis-cli -p "$pa" XPENDING ccsync:events workers | head -n 1)"
    redis-cli -p "$pa" --rdb "$TMP/backup.rdb" >/dev/null 2>&1 || { echo "redis-cli --rdb failed"; return 1; }
    mkdir -p "$b"
    RESTORE_PORT=$(free_port) sh docker/redis-restore.sh "$TMP/backup.rdb" "$b" || return 1
    pb=$(free_port)
    start_redis "$b" "$pb" || { echo "restored Redis did not start"; return 1; }
    got="$(redis-cli -p "$pb" XLEN ccsync:events)/$(redis-cli -p "$pb" XPENDING ccsync:events workers | head -n 1)"
    [ "$want" = "$got" ] || { echo "events/pending before backup $want, after restore $got"; return 1; }
}
if command -v redis-server >/dev/null; then
    check "redis: backup (redis-cli --rdb) and docker/redis-restore.sh keep queued and pending events" \
        restore_check
fi

# ---- 7b. the ha profile's primary, replica and Sentinels, outside Docker --------------------
# What the containers would run (docker/redis-start.sh with the compose arguments, their hosts
# and ports made local, the compose secrets in a folder): every Redis with the four ACL users,
# the replica authenticated to the primary as "replication", the three Sentinels as "sentinel"
# reach a quorum, a failover promotes the replica (and its configuration file keeps that), the
# user ccsync writes on it, and the demoted primary follows it. No password on a command line.
sentinel_primary() { redis-cli -p "$1" sentinel get-master-addr-by-name ccsync | tail -n 1; }
# as_user USER PORT COMMAND...: redis-cli as that ACL user, its password from $d/secrets.
as_user() {
    local user=$1 port=$2 f=redis_password
    shift 2
    case $user in default) f=redis_admin_password ;; replication | sentinel) f=redis_${user}_password ;; esac
    REDISCLI_AUTH=$(cat "$d/secrets/$f") redis-cli --no-auth-warning --user "$user" -p "$port" "$@"
}
ha_secrets() { # DIR: the four Redis passwords docker/make-secrets.sh makes
    local f
    mkdir -p "$1"
    for f in redis_password redis_admin_password redis_replication_password redis_sentinel_password; do
        openssl rand -hex 32 >"$1/$f"
    done
}
ha_run_check() {
    local d="$TMP/ha-run" pp rp s1 s2 s3 f pw denied rpid=0
    [ -s "$TMP/ha.json" ] || { echo "no ha configuration (docker-compose config failed)"; return 1; }
    mkdir -p "$d"
    pp=$(free_port) rp=$(free_port) s1=$(free_port) s2=$(free_port) s3=$(free_port)
    ha_secrets "$d/secrets"
    tool ha-commands "$TMP/ha.json" "$d" "$pp" "$rp" "$s1" "$s2" "$s3" || return 1
    for f in redis redis-replica sentinel-1 sentinel-2 sentinel-3; do
        sh "$d/$f.sh" >"$d/$f.log" 2>&1 &
        PIDS+=($!)
        [ "$f" != redis-replica ] || rpid=$!
    done
    wait_until 10 sh -c "redis-cli -p $pp ping 2>&1 | grep -q NOAUTH" ||
        { echo "the primary does not ask for a password"; tail -n 5 "$d/redis.log"; return 1; }
    [ "$(as_user ccsync "$pp" SET 'ccsync:{ha}:before' 1)" = OK ] || { echo "user ccsync cannot write on the primary"; return 1; }
    [ "$(as_user ccsync "$pp" SET other:key 1 2>&1)" != OK ] || { echo "user ccsync writes beyond ccsync:*"; return 1; }
    as_user default "$pp" ACL LOG RESET >/dev/null # that refusal was ours: the log must stay empty from here
    wait_until 20 sh -c "REDISCLI_AUTH=\$(cat $d/secrets/redis_admin_password) redis-cli --no-auth-warning -p $rp info replication | grep -q master_link_status:up" ||
        { echo "the replica does not follow the primary"; tail -n 5 "$d/redis-replica.log"; return 1; }
    echo "replica: in sync with the primary as user replication"
    wait_until 30 sh -c "redis-cli -p $s1 sentinel ckquorum ccsync | grep -q '^OK 3 usable'" ||
        { echo "no quorum of 3: $(redis-cli -p "$s1" sentinel ckquorum ccsync)"; tail -n 5 "$d/sentinel-1.log"; return 1; }
    wait_until 30 sh -c "redis-cli -p $s1 sentinel replicas ccsync | grep -qx $rp" ||
        { echo "the Sentinels do not know the replica"; return 1; }
    # A replica the Sentinel learned a moment ago may not be promotable yet (its own INFO not read:
    # NOGOODSLAVE, and no failover at all): asked again until it starts one.
    wait_until 30 sh -c "redis-cli -p $s1 sentinel failover ccsync | grep -qE '^(OK|INPROG)'" ||
        { echo "the Sentinels refuse the failover: $(redis-cli -p "$s1" sentinel failover ccsync)"; return 1; }
    wait_until 30 sh -c "[ \"\$(redis-cli -p $s1 sentinel get-master-addr-by-name ccsync | tail -n 1)\" = $rp ]" ||
        { echo "no failover to the replica: primary is $(sentinel_primary "$s1")"; tail -n 10 "$d/sentinel-1.log"; return 1; }
    wait_until 10 sh -c "! grep -q '^replicaof' $d/redis-replica/redis.conf" ||
        { echo "the promotion is not in the replica's redis.conf"; cat "$d/redis-replica/redis.conf"; return 1; }
    echo "failover: primary now 127.0.0.1:$(sentinel_primary "$s1")"
    wait_until 10 sh -c "[ \"\$(REDISCLI_AUTH=\$(cat $d/secrets/redis_password) redis-cli --no-auth-warning --user ccsync -p $rp SET 'ccsync:{ha}:after' 2)\" = OK ]" ||
        { echo "user ccsync cannot write on the promoted replica: $(as_user ccsync "$rp" SET 'ccsync:{ha}:after' 2 2>&1)"; return 1; }
    [ "$(as_user ccsync "$rp" GET 'ccsync:{ha}:before')" = 1 ] || { echo "the promoted replica lacks the primary's write"; return 1; }
    wait_until 30 sh -c "REDISCLI_AUTH=\$(cat $d/secrets/redis_admin_password) redis-cli --no-auth-warning -p $pp info replication | grep -q master_link_status:up" ||
        { echo "the demoted primary does not follow the new one"; as_user default "$pp" info replication | head -n 8; tail -n 5 "$d/redis.log"; return 1; }
    wait_until 10 sh -c "[ \"\$(REDISCLI_AUTH=\$(cat $d/secrets/redis_password) redis-cli --no-auth-warning --user ccsync -p $pp GET 'ccsync:{ha}:after')\" = 2 ]" ||
        { echo "the demoted primary does not have the new primary's write"; return 1; }
    echo "demoted primary: a replica of 127.0.0.1:$rp, in sync, as user replication"
    grep -q '^sentinel auth-user ccsync sentinel$' "$d/sentinel-1/sentinel.conf" ||
        { echo "sentinel-1's file does not authenticate as the user sentinel"; return 1; }
    # The promoted replica restarted: still the primary, and the replication password that
    # CONFIG REWRITE copied into its file is gone from it (the secret gives it again).
    kill "$rpid"
    wait "$rpid" 2>/dev/null
    sh "$d/redis-replica.sh" >>"$d/redis-replica.log" 2>&1 &
    PIDS+=($!)
    wait_until 10 sh -c "REDISCLI_AUTH=\$(cat $d/secrets/redis_password) redis-cli --no-auth-warning --user ccsync -p $rp ROLE | head -n 1 | grep -qx master" ||
        { echo "the promoted replica is no primary after a restart"; tail -n 5 "$d/redis-replica.log"; return 1; }
    ! grep -q '^masterauth' "$d/redis-replica/redis.conf" || { echo "masterauth stays in the replica's file"; return 1; }
    wait_until 20 sh -c "REDISCLI_AUTH=\$(cat $d/secrets/redis_admin_password) redis-cli --no-auth-warning -p $pp info replication | grep -q master_link_status:up" ||
        { echo "the demoted primary does not follow the restarted primary"; return 1; }
    echo "promoted replica restarted: still the primary, followed again; no masterauth in its file"
    for f in "$pp" "$rp"; do
        denied=$(as_user default "$f" ACL LOG)
        [ -z "$denied" ] || { echo "Redis on $f denied something: $denied"; return 1; }
    done
    for f in "$d"/secrets/*; do
        pw=$(cat "$f")
        if pgrep -f -- "$pw" >/dev/null; then echo "a command line holds $(basename "$f")"; return 1; fi
        if grep -rqF "$pw" "$d"/*.sh "$TMP/ha.yml"; then echo "a command or the compose file holds $(basename "$f")"; return 1; fi
    done
    echo "ACL LOG empty on both; no password on a command line"
}
if command -v redis-server >/dev/null; then
    check "ha: primary, replica and Sentinels with the ACL users: quorum, failover, ccsync writes on the promoted replica, old primary follows" \
        ha_run_check
else
    skip "ha run (redis-server not installed)"
fi

# ---- 8. helpers' own hygiene ---------------------------------------------------------------
if command -v shellcheck >/dev/null; then
    check "shellcheck: tests/deploy/check.sh docker/*.sh" \
        shellcheck -x tests/deploy/check.sh docker/redis-restore.sh docker/redis-start.sh docker/make-secrets.sh
else
    skip "shellcheck not installed"
fi
if command -v nginx >/dev/null; then
    check "nginx: docker/nginx.conf parses (nginx -t)" \
        nginx -t -q -c "$ROOT/docker/nginx.conf" -p "$TMP"
else
    skip "nginx -t (nginx not installed)"
fi

if [ "$skipped" -gt 0 ]; then
    echo "deploy: $passed passed, $failed failed, $skipped skipped"
else
    echo "deploy: $passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
