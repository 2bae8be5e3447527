#!/usr/bin/env python3
"""deploytool.py - what tests/deploy/check.sh cannot do well in shell: read the Dockerfile
(stages, apt-get installs, the final stage's command line and environment), apply
.dockerignore to the work tree, filter the Dockerfile linter's known false positives, and
check the compose configuration that `docker-compose config` printed.

Without a Docker engine these are the only ways to look at what an image would be, so the
parsing follows Docker's rules where they matter here: line continuations, exec and shell
forms, ENV key=value pairs, FROM chains across stages. Each command prints findings one a
line and exits 1 when there is any; `runtime` prints shell-readable lines instead.
"""
import json
import os
import re
import shlex
import subprocess
import sys


# ---------------------------------------------------------------- Dockerfile reading --

def instructions(path):
    """[(line_no, KEYWORD, args)] with continuations joined and comments dropped."""
    out, buf, start = [], "", 0
    with open(path, encoding="utf-8") as f:
        for no, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            if not buf and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if buf and line.lstrip().startswith("#"):
                continue  # a comment inside a continued instruction
            if not buf:
                start = no
            if line.endswith("\\"):
                buf += line[:-1] + " "
                continue
            buf += line
            kw, _, args = buf.strip().partition(" ")
            out.append((start, kw.upper(), args.strip()))
            buf = ""
    return out


def stages(path):
    """[{name, base, line, ins:[(line, KW, args)]}] in file order."""
    result = []
    for no, kw, args in instructions(path):
        if kw == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            result.append({"name": name, "base": words[0], "line": no, "ins": []})
        elif result:
            result[-1]["ins"].append((no, kw, args))
    return result


def chain(all_stages, stage):
    """The stage and the stages it is built FROM, base first."""
    names = {s["name"]: s for s in all_stages if s["name"]}
    seq = [stage]
    while seq[0]["base"] in names:
        seq.insert(0, names[seq[0]["base"]])
    return seq


def exec_form(args):
    """JSON array form → list; shell form → ["/bin/sh", "-c", args]."""
    try:
        v = json.loads(args)
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            return v
    except ValueError:
        pass
    return ["/bin/sh", "-c", args]


def env_pairs(args):
    words = shlex.split(args)
    if words and "=" not in words[0]:  # legacy "ENV KEY value"
        return [(words[0], args.split(None, 1)[1] if len(words) > 1 else "")]
    return [tuple(w.split("=", 1)) for w in words]


def apt_packages(stage):
    """Packages named after `apt-get install` in the stage's own RUN instructions."""
    pkgs = []
    for _, kw, args in stage["ins"]:
        if kw != "RUN":
            continue
        for cmd in re.split(r"&&|;|\|\|", args):
            words = cmd.split()
            for i in range(len(words) - 1):
                if words[i] in ("apt-get", "apt") and words[i + 1] == "install":
                    pkgs += [w for w in words[i + 2:] if not w.startswith("-")]
    return pkgs


def runtime(path):
    """What `docker run IMAGE` would execute for the final stage, merged along its FROM chain."""
    all_stages = stages(path)
    final = all_stages[-1]
    env, user, expose, entry, cmd, health, stop, workdir, copies = {}, "root", [], [], [], None, None, "/", []
    for st in chain(all_stages, final):
        for _, kw, args in st["ins"]:
            if kw == "ENV":
                env.update(env_pairs(args))
            elif kw == "USER":
                user = args
            elif kw == "EXPOSE":
                expose += args.split()
            elif kw == "ENTRYPOINT":
                entry, cmd = exec_form(args), []  # a new ENTRYPOINT resets CMD
            elif kw == "CMD":
                cmd = exec_form(args)
            elif kw == "HEALTHCHECK":
                m = re.search(r"\bCMD\s+(.*)$", args)
                health = exec_form(m.group(1)) if m else None
            elif kw == "STOPSIGNAL":
                stop = args
            elif kw == "WORKDIR":
                workdir = os.path.join(workdir, args)
            elif kw == "COPY":
                copies.append(args)
    return {"stage": final["name"], "argv": entry + cmd, "env": env, "user": user,
            "expose": expose, "healthcheck": health, "stopsignal": stop, "workdir": workdir,
            "copies": copies}


# ------------------------------------------------------------------------- commands --

def cmd_apt(path, stage_name):
    for st in stages(path):
        if st["name"] == stage_name:
            print(" ".join(apt_packages(st)))
            return 0
    print(f"no stage named {stage_name}", file=sys.stderr)
    return 1


def cmd_runtime(path):
    """Shell-readable: ARGV/HEALTH as JSON, then ENV lines, for check.sh to eval piecewise."""
    print(json.dumps(runtime(path)))
    return 0


def cmd_rules(path):
    """The essentials of hadolint that dockerfilelint lacks, and this project's own rules."""
    problems = []
    all_stages = stages(path)
    names = {s["name"] for s in all_stages if s["name"]}
    for st in all_stages:
        base = st["base"]
        if base not in names:
            if ":" not in base or base.endswith(":latest"):
                problems.append(f"line {st['line']}: FROM {base}: pin a tag")
            elif not base.startswith("debian:bookworm-slim"):
                problems.append(f"line {st['line']}: FROM {base}: the issue asks for debian:bookworm-slim")
        for no, kw, args in st["ins"]:
            if kw == "RUN" and re.search(r"\bapt-get install\b", args):
                if "--no-install-recommends" not in args:
                    problems.append(f"line {no}: apt-get install without --no-install-recommends (DL3015)")
                if not re.search(r"apt-get install[^&;]*\s(-y|--yes|-qy)\b", args):
                    problems.append(f"line {no}: apt-get install without -y (DL3014)")
                if "rm -rf /var/lib/apt/lists" not in args:
                    problems.append(f"line {no}: apt lists not removed in the same RUN (DL3009)")
                if "apt-get update" not in args:
                    problems.append(f"line {no}: apt-get install without apt-get update in the same RUN (DL3059)")
            if kw == "RUN" and re.search(r"\bsudo\b", args):
                problems.append(f"line {no}: sudo in RUN (DL3004)")
            if kw == "ADD":
                problems.append(f"line {no}: ADD: use COPY (DL3020)")
            if kw in ("ENV", "ARG"):
                for k, v in (env_pairs(args) if kw == "ENV" else [tuple((args.split("=", 1) + [""])[:2])]):
                    if re.search(r"SECRET|TOKEN|PASSWORD|PASSWD|API_KEY|PRIVATE", k, re.I) and v.strip():
                        problems.append(f"line {no}: {kw} {k} bakes a secret into the image")
                    if re.search(r"://[^/@\s]*:[^/@\s]+@", v):
                        problems.append(f"line {no}: {kw} {k} holds a URL with a password")
            if kw in ("CMD", "ENTRYPOINT") and not args.startswith("["):
                problems.append(f"line {no}: {kw} in shell form: signals would go to /bin/sh (DL3025)")
    rt = runtime(path)
    if rt["user"].split(":")[0] in ("", "root", "0"):
        problems.append("final stage runs as root: add USER (DL3002)")
    if "8080" not in [e.split("/")[0] for e in rt["expose"]]:
        problems.append("final stage does not EXPOSE 8080")
    if rt["stopsignal"] != "SIGTERM":
        problems.append("final stage has no STOPSIGNAL SIGTERM")
    if not rt["healthcheck"]:
        problems.append("final stage has no HEALTHCHECK CMD")
    if rt["argv"][:1] != ["ccsyncd"] and not (rt["argv"] and rt["argv"][0].endswith("/ccsyncd")):
        problems.append(f"final stage runs {rt['argv']}, not ccsyncd")
    for c in rt["copies"]:
        if "ccsim" in c:
            problems.append(f"the production image carries the simulator: COPY {c}")
    if not any(re.search(r"--from=build\s+\S*build/ccsyncd\s", c + " ") for c in rt["copies"]):
        problems.append("final stage does not COPY --from=build the binary build/ccsyncd")
    build = [s for s in all_stages if s["name"] == "build"]
    if not build or not any(kw == "RUN" and re.search(r"\bmake\b", a) for _, kw, a in build[0]["ins"]):
        problems.append("the build stage does not build with the project's Makefile (RUN make)")
    for p in problems:
        print(p)
    return 1 if problems else 0


def cmd_lint_filter(dockerfile):
    """Reads dockerfilelint -j on stdin; drops its known false positives (it predates
    multi-stage builds and mis-parses hyphenated HEALTHCHECK options), prints the rest."""
    data = json.load(sys.stdin)
    names = {s["name"] for s in stages(dockerfile) if s["name"]}
    left = []
    for f in data.get("files", []):
        for it in f.get("issues", []):
            content = it.get("content", "")
            words = content.split()
            if it["title"] == "Base Image Missing Tag" and len(words) > 1 and words[0].upper() == "FROM" \
                    and words[1] in names:
                continue  # FROM <earlier stage>: a stage has no tag
            if it["title"] == "Invalid Argument Format" and content.startswith("HEALTHCHECK"):
                opts = re.findall(r"(--[\w-]+)=\S+", content)
                if opts and all(o in ("--interval", "--timeout", "--start-period", "--start-interval",
                                      "--retries") for o in opts):
                    continue  # its /--\w+/ cuts --start-period to --start
            left.append(f"line {it['line']}: {it['title']}: {content}")
    for line in left:
        print(line)
    return 1 if left else 0


def dockerignore_regex(pattern):
    """Docker's pattern syntax (Go filepath.Match plus **) as a regex over a relative path."""
    p = pattern.strip().strip("/")
    p = re.sub(r"^\./", "", p)
    out, i = "", 0
    while i < len(p):
        c = p[i]
        if p.startswith("**", i):
            i += 2
            if p.startswith("/", i):  # "**/" matches zero or more directories
                out += "(?:.*/)?"
                i += 1
            else:
                out += ".*"
            continue
        out += {"*": "[^/]*", "?": "[^/]"}.get(c, re.escape(c))
        i += 1
    return re.compile("^" + out + "$")


def context_files(root):
    """Files of the work tree (tracked or not, git-ignored ones aside) that .dockerignore lets
    into the build context. A pattern that matches a directory covers all below it; the last
    matching pattern decides, "!" re-includes."""
    rules = []
    ign = os.path.join(root, ".dockerignore")
    if os.path.exists(ign):
        for line in open(ign, encoding="utf-8"):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            neg = line.startswith("!")
            rules.append((neg, dockerignore_regex(line[1:] if neg else line)))
    files = subprocess.run(["git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, check=True).stdout.decode().split("\0")
    kept = []
    for f in filter(None, files):
        if not os.path.isfile(os.path.join(root, f)):
            continue
        parts = f.split("/")
        prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
        excluded = False
        for neg, rx in rules:
            if any(rx.match(p) for p in prefixes):
                excluded = not neg
        if not excluded:
            kept.append(f)
    return kept


def cmd_context(root):
    for f in context_files(root):
        print(f)
    return 0


def cmd_compose(default_json, demo_json, compose_file, env_example):
    """Checks the configurations `docker-compose config` printed (converted to JSON) for the
    default and the demo profile, and the compose file itself where `config` inlines things."""
    import yaml
    problems = []
    d = json.load(open(default_json))
    m = json.load(open(demo_json))
    raw = yaml.safe_load(open(compose_file))
    ds, ms = d.get("services", {}), m.get("services", {})

    def need(cond, msg):
        if not cond:
            problems.append(msg)

    need(set(ds) >= {"redis", "ccsyncd"}, f"default profile services {sorted(ds)} lack redis/ccsyncd")
    # `config` prints every service with its profiles; a service without one always runs.
    need(ds.get("ccsim", {}).get("profiles") == ["demo"], "ccsim is not in (only) the demo profile")
    need("ccsim" in ms, "the demo profile does not add ccsim")
    for name in ("redis", "ccsyncd"):
        need(not ds.get(name, {}).get("profiles"), f"{name} is not in the default profile")
    r = ds.get("redis", {})
    need(re.match(r"^redis:7(\b|[.-])", r.get("image", "")) is not None, f"redis image {r.get('image')} is not Redis 7")
    rcmd = r.get("command", [])
    rcmd = rcmd.split() if isinstance(rcmd, str) else rcmd
    joined = " ".join(rcmd)
    need("--appendonly yes" in joined, "redis command lacks --appendonly yes")
    need("--appendfsync everysec" in joined, "redis command lacks --appendfsync everysec")
    need("--maxmemory-policy noeviction" in joined or "maxmemory-policy" not in joined,
         "redis may evict keys: queued events would be lost")
    vols = r.get("volumes", [])
    named = []
    for v in vols:
        if isinstance(v, dict) and v.get("type") == "volume" and v.get("target") == "/data":
            named.append(v.get("source"))
        elif isinstance(v, str) and v.split(":")[1:2] == ["/data"]:
            named.append(v.split(":")[0])
    need(named and named[0] in (d.get("volumes") or {}), "redis /data is not on a named volume")
    hc = r.get("healthcheck", {}).get("test", [])
    need("redis-cli" in " ".join(hc) and "ping" in " ".join(hc), "redis healthcheck is not redis-cli ping")
    c = ds.get("ccsyncd", {})
    dep = c.get("depends_on", {})
    need(isinstance(dep, dict) and dep.get("redis", {}).get("condition") == "service_healthy",
         "ccsyncd does not wait for Redis to be healthy")
    need(c.get("restart") in ("always", "unless-stopped", "on-failure") or
         str(c.get("deploy", {}).get("restart_policy", {}).get("condition", "")) != "",
         "ccsyncd has no restart policy")
    need(r.get("restart") in ("always", "unless-stopped", "on-failure"), "redis has no restart policy")
    for p in c.get("ports", []):
        spec = p if isinstance(p, str) else json.dumps(p)
        if (isinstance(p, dict) and p.get("published")) or (isinstance(p, str) and ":" in p):
            problems.append(f"ccsyncd publishes a fixed host port ({spec}): --scale would collide")
    need("container_name" not in c, "ccsyncd has a container_name: --scale would collide")
    need(raw["services"]["ccsyncd"].get("env_file"), "ccsyncd is not configured through an env file")
    need("CCSYNC_REDIS_URL" in c.get("environment", {}), "the env file's variables did not reach ccsyncd")
    grace = grace_seconds(env_example)
    sgp = duration_seconds(c.get("stop_grace_period", "10s"))
    need(sgp >= grace + 5, f"ccsyncd stop_grace_period {sgp}s is not above its drain ({grace}s) + 5s")
    need(c.get("stop_signal", "SIGTERM") == "SIGTERM", "ccsyncd stop_signal is not SIGTERM")
    check_exposure(d, need)
    # What the demo ccsyncd talks to.
    mc = ms.get("ccsyncd", {}).get("environment", {})
    for var in ("CCSYNC_CC_API_URL", "CCSYNC_CC_TOKEN_URL"):
        need(str(mc.get(var, "")).startswith("http://ccsim:"), f"demo ccsyncd's {var} does not point at ccsim")
    sim_cmd = " ".join(ms.get("ccsim", {}).get("command", []) or [])
    tok = mc.get("CCSYNC_CC_ACCESS_TOKEN", "")
    need(tok and f"--dev-token {tok}" in sim_cmd, "demo access token is not ccsim's --dev-token")
    port = re.search(r"--listen\s+\S+:(\d+)", sim_cmd)
    need(port and f"ccsim:{port.group(1)}/" in str(mc.get("CCSYNC_CC_API_URL", "")),
         "demo CCSYNC_CC_API_URL port is not the one ccsim listens on")
    for p in problems:
        print(p)
    return 1 if problems else 0


def cmd_compose_ha(ha_json, env_file):
    """Checks the ha profile as `docker-compose --profile ha config` resolved it with env_file
    (the example with the three high-availability lines set): a replica of `redis` with the
    same persistence, three Sentinels on distinct volumes monitoring `redis` under the name
    ccsyncd is given, with a quorum that survives one lost Sentinel, all of them
    authenticated (check_ha_auth), and a ccsyncd that finds the primary through exactly
    those Sentinels in replica durability."""
    problems = []
    h = json.load(open(ha_json))
    hs = h.get("services", {})

    def need(cond, msg):
        if not cond:
            problems.append(msg)

    env = {}
    for line in open(env_file, encoding="utf-8"):
        m = re.match(r"^\s*(CCSYNC_[A-Z0-9_]+)=(.*)$", line)
        if m:
            env[m.group(1)] = m.group(2).strip()
    name = env.get("CCSYNC_REDIS_MASTER_NAME", "")
    need(name, "the ha env file does not set CCSYNC_REDIS_MASTER_NAME")
    need(env.get("CCSYNC_DURABILITY") == "replica", "the ha env file does not set CCSYNC_DURABILITY=replica")
    sentinels = sorted(n for n in hs if n.startswith("sentinel"))
    need(len(sentinels) == 3, f"the ha profile has Sentinels {sentinels}, not three")
    for n in ["redis-replica"] + sentinels:
        need(hs.get(n, {}).get("profiles") == ["ha"], f"{n} is not in (only) the ha profile")
        need(hs.get(n, {}).get("restart") in ("always", "unless-stopped"), f"{n} has no restart policy")
        need(re.match(r"^redis:7(\b|[.-])", hs.get(n, {}).get("image", "")) is not None,
             f"{n} is not Redis 7")
    rep = " ".join(hs.get("redis-replica", {}).get("command", []) or [])
    for flag in ("appendonly yes", "appendfsync everysec", "maxmemory-policy noeviction",
                 "replicaof redis 6379"):
        need(flag in rep, f"redis-replica's configuration lacks '{flag}'")
    need("CONFIG" not in rep and "/data/redis.conf" in rep,
         "redis-replica does not keep its configuration on its volume (a promotion would not last)")
    volumes = set()
    for n in sentinels:
        cmd = " ".join(hs[n].get("command", []) or [])
        m = re.search(r"sentinel monitor (\S+) (\S+) (\d+) (\d+)", cmd)
        need(m is not None, f"{n} monitors nothing")
        if m:
            need(m.group(1) == name, f"{n} monitors '{m.group(1)}', ccsyncd asks for '{name}'")
            need((m.group(2), m.group(3)) == ("redis", "6379"), f"{n} does not monitor redis:6379")
            need(m.group(4) == "2", f"{n}'s quorum is {m.group(4)}, not 2 of 3")
        need("resolve-hostnames yes" in cmd, f"{n} cannot monitor a host name (resolve-hostnames)")
        need("port 26379" in cmd, f"{n} does not listen on 26379")
        for v in hs[n].get("volumes", []):
            src = v.get("source") if isinstance(v, dict) else v.split(":")[0]
            if (isinstance(v, dict) and v.get("type") == "bind") or src.startswith(("/", ".")):
                continue  # the entry point's files, read-only, the same for all
            need(src not in volumes, f"{n} shares its volume {src} with another Sentinel")
            volumes.add(src)
    check_ha_auth(h, sentinels, need)
    want = ",".join(f"{n}:26379" for n in sentinels)
    c = hs.get("ccsyncd", {}).get("environment", {})
    need(c.get("CCSYNC_REDIS_SENTINELS") == want,
         f"ccsyncd's CCSYNC_REDIS_SENTINELS is {c.get('CCSYNC_REDIS_SENTINELS')!r}, not {want!r}")
    need(c.get("CCSYNC_REDIS_MASTER_NAME") == name, "CCSYNC_REDIS_MASTER_NAME did not reach ccsyncd")
    need(c.get("CCSYNC_DURABILITY") == "replica", "CCSYNC_DURABILITY=replica did not reach ccsyncd")
    for p in problems:
        print(p)
    return 1 if problems else 0


def check_ha_auth(h, sentinels, need):
    """The ha profile with Redis's passwords and ACL users: both Redis services start through
    redis-start.sh (the same four users, replication as the user "replication") with every
    Redis password as a secret and the ACL file on a tmpfs; the Sentinels through it too,
    with the user "sentinel"'s password as a secret; all of them on internal networks only,
    publishing no port; and no password or auth directive in a command or healthcheck."""
    hs, nets, top = h.get("services", {}), h.get("networks", {}) or {}, h.get("secrets", {}) or {}
    redis_secrets = {"redis_password", "redis_admin_password", "redis_replication_password",
                     "redis_sentinel_password"}
    for n in ["redis", "redis-replica"] + sentinels:
        svc = hs.get(n, {})
        need("redis-start.sh" in " ".join(svc.get("entrypoint") or []),
             f"{n} does not start through redis-start.sh (no ACL users, no authentication)")
        have = {x["source"] if isinstance(x, dict) else x for x in svc.get("secrets") or []}
        want = redis_secrets if not n.startswith("sentinel") else {"redis_sentinel_password"}
        need(want <= have, f"{n} lacks the secrets {sorted(want - have)}")
        for name in want:
            need(str((top.get(name) or {}).get("file", "")).startswith("/"), f"secret {name} has no file")
        if not n.startswith("sentinel"):
            need("/run/redis-acl" in " ".join(str(t) for t in svc.get("tmpfs") or []),
                 f"{n} has no tmpfs /run/redis-acl for its ACL file")
        snets = set(svc.get("networks") or [])
        need(snets and all((nets.get(x) or {}).get("internal") for x in snets),
             f"{n} is on a network that is not internal ({sorted(snets)})")
        need(not svc.get("ports"), f"{n} publishes a port")
        text = json.dumps([svc.get("command"), svc.get("healthcheck"), svc.get("environment")])
        for word in ("masterauth", "requirepass", "auth-pass", "auth-user", " -a ", "--pass"):
            need(word not in text, f"{n}'s command, healthcheck or environment holds '{word.strip()}'")
    first = lambda n: (hs.get(n, {}).get("command") or [""])[0]  # noqa: E731
    need(first("redis-replica") == "redis-server", "redis-replica's command is not redis-server FILE ...")
    for n in sentinels:
        need(first(n) == "redis-sentinel", f"{n}'s command is not redis-sentinel FILE ...")


def cmd_ha_commands(ha_json, out_dir, primary_port, replica_port, *sentinel_ports):
    """Writes out_dir/NAME.sh for redis (the primary), redis-replica and sentinel-N: the
    services' entry points and commands (docker/redis-start.sh with their arguments), made
    local: their /data a folder of their own, the host `redis` 127.0.0.1:primary_port, each
    on its own port, the secrets in out_dir/secrets (REDIS_SECRETS_DIR) and each service's
    tmpfs in NAME/run (REDIS_RUN_DIR). redis-start.sh runs redis-server (--sentinel for the
    Sentinels) of Debian's redis-server package, as the containers would."""
    hs = json.load(open(ha_json)).get("services", {})
    secrets = os.path.join(out_dir, "secrets")

    def write(name, port):
        svc = hs[name]
        entry = [a for a in (svc.get("entrypoint") or []) if a.endswith("redis-start.sh")]
        if not entry:
            raise SystemExit(f"{name} does not start through redis-start.sh")
        data = os.path.join(out_dir, name)
        os.makedirs(os.path.join(data, "run"), exist_ok=True)
        args = " ".join(str(a) for a in svc["command"])
        args = args.replace("/data/", data + "/")
        args = args.replace("replicaof redis 6379", f"replicaof 127.0.0.1 {primary_port}")
        args = re.sub(r"monitor (\S+) redis 6379", rf"monitor \1 127.0.0.1 {primary_port}", args)
        args = args.replace("--port 26379", f"--port {port}").split()
        if "--port" not in args:
            args += ["--port", str(port)]
        args += ["--bind", "127.0.0.1", "--dir", data]
        script = (f"REDIS_SECRETS_DIR={shlex.quote(secrets)} REDIS_RUN_DIR={shlex.quote(data + '/run')} "
                  f"exec sh docker/redis-start.sh {shlex.join(args)}\n")
        open(os.path.join(out_dir, name + ".sh"), "w").write(script)

    write("redis", primary_port)
    write("redis-replica", replica_port)
    names = sorted(n for n in hs if n.startswith("sentinel"))
    for name, port in zip(names, sentinel_ports):
        write(name, port)
    return 0


def cmd_ha_env(env_example, out):
    """The example env file with the three high-availability lines switched on, as
    docker/README.md tells an operator to (into out)."""
    text = open(env_example, encoding="utf-8").read()
    text = re.sub(r"(?m)^#(CCSYNC_REDIS_SENTINELS=)", r"\1", text)
    text = re.sub(r"(?m)^#(CCSYNC_REDIS_MASTER_NAME=)", r"\1", text)
    text = re.sub(r"(?m)^#CCSYNC_DURABILITY=.*$", "CCSYNC_DURABILITY=replica", text)
    open(out, "w", encoding="utf-8").write(text)
    return 0


def port_specs(ports):
    """(host_ip, published, target) of each `ports:` entry, long or short syntax."""
    out = []
    for p in ports or []:
        if isinstance(p, dict):
            out.append((str(p.get("host_ip", "")), str(p.get("published", "")), str(p.get("target", ""))))
            continue
        parts = str(p).split("/")[0].split(":")
        parts = [""] * (3 - len(parts)) + parts
        out.append((parts[0], parts[1], parts[2]))
    return out


def check_exposure(d, need):
    """What the default profile exposes: Redis only to ccsyncd, behind passwords and the
    "ccsync" ACL user; secrets at rest sealed with a key mounted as a secret; the admin
    listener published on the host's loopback only."""
    ds, nets, top = d.get("services", {}), d.get("networks", {}) or {}, d.get("secrets", {}) or {}
    r, c, p = ds.get("redis", {}), ds.get("ccsyncd", {}), ds.get("proxy", {})
    names = lambda v: set(v or []) if not isinstance(v, dict) else set(v)  # noqa: E731
    rnets, pnets = names(r.get("networks")), names(p.get("networks"))
    need(rnets and all((nets.get(n) or {}).get("internal") for n in rnets),
         f"redis is on a network that is not internal ({sorted(rnets)})")
    need(not (rnets & pnets), f"the proxy shares a network with redis ({sorted(rnets & pnets)})")
    need(not r.get("ports"), "redis publishes a port")
    need("redis-start.sh" in " ".join(r.get("entrypoint") or []),
         "redis does not start through redis-start.sh (no password, no ACL user)")
    secrets_of = lambda svc: {s["source"] if isinstance(s, dict) else s for s in svc.get("secrets") or []}  # noqa: E731
    need({"redis_password", "redis_admin_password"} <= secrets_of(r), "redis lacks its password secrets")
    need({"ccsync_secrets_key", "redis_password"} <= secrets_of(c),
         "ccsyncd lacks the secrets ccsync_secrets_key and redis_password")
    for name in ("ccsync_secrets_key", "redis_password", "redis_admin_password"):
        need(str((top.get(name) or {}).get("file", "")).startswith("/"), f"secret {name} has no file")
    env = c.get("environment", {})
    need(env.get("CCSYNC_SECRETS_KEY_FILE") == "/run/secrets/ccsync_secrets_key",
         "CCSYNC_SECRETS_KEY_FILE is not the mounted secret")
    need(env.get("CCSYNC_REDIS_PASSWORD_FILE") == "/run/secrets/redis_password",
         "CCSYNC_REDIS_PASSWORD_FILE is not the mounted secret")
    need(re.match(r"^redis://ccsync@", str(env.get("CCSYNC_REDIS_URL", ""))) is not None,
         "ccsyncd does not connect as the Redis user ccsync")
    need(env.get("CCSYNC_ALLOW_PLAINTEXT_SECRETS", "0") in ("", "0"), "plain-text secrets are allowed")
    admin = str(env.get("CCSYNC_ADMIN_LISTEN", ""))
    need(admin, "ccsyncd has no admin listener (CCSYNC_ADMIN_LISTEN)")
    aport = admin.rsplit(":", 1)[-1]
    specs = port_specs(p.get("ports"))
    need(any(t == "8080" for _, _, t in specs), "the proxy does not publish 8080")
    for host_ip, published, target in specs:
        need(target in ("8080", aport), f"the proxy publishes port {target}")
        if target == aport:
            need(host_ip == "127.0.0.1", f"the admin port {aport} is published beyond the host's loopback")


def duration_seconds(s):
    total = 0.0
    for n, unit in re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s|us)", str(s)):
        total += float(n) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}[unit]
    return total


def grace_seconds(env_file):
    for line in open(env_file, encoding="utf-8"):
        m = re.match(r"^\s*CCSYNC_SHUTDOWN_GRACE_SECONDS=(\d+)\s*$", line)
        if m:
            return int(m.group(1))
    return 25


def cmd_env_vars(env_file):
    """Variable names an env file sets or shows commented out ("#VAR=..."); "# text VAR=..."
    in prose does not count."""
    for line in open(env_file, encoding="utf-8"):
        m = re.match(r"^\s*#?(CCSYNC_[A-Z0-9_]+)=", line)  # "#VAR=default" or "VAR=value"
        if m:
            print(m.group(1))
    return 0


def cmd_yaml2json(src, dst):
    import yaml  # python3-yaml: docker-compose depends on it
    json.dump(yaml.safe_load(open(src)), open(dst, "w"))
    return 0


def main(argv):
    cmds = {"apt": cmd_apt, "runtime": cmd_runtime, "rules": cmd_rules, "lint-filter": cmd_lint_filter,
            "context": cmd_context, "compose": cmd_compose, "env-vars": cmd_env_vars,
            "yaml2json": cmd_yaml2json, "compose-ha": cmd_compose_ha, "ha-env": cmd_ha_env,
            "ha-commands": cmd_ha_commands}
    if len(argv) < 2 or argv[1] not in cmds:
        print(f"usage: {argv[0]} {'|'.join(cmds)} ARGS", file=sys.stderr)
        return 2
    return cmds[argv[1]](*argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
