/*
 * config.c - environment → struct config, validated once at start.
 *
 * Every variable documented in README.md, the operational knobs included. A
 * bad value stops the process with one line naming the variable (the caller
 * exits with status 2); secrets are never echoed in that line.
 */
#include "ccsync/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ccsync/durability.h"
#include "ccsync/model.h"
#include "ccsync/webhook.h"

int config_error(char *err, size_t err_size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
    return -1;
}

static const char *value_or(config_lookup_fn lookup, const char *name, const char *dflt)
{
    const char *v = lookup(name);
    return (v && *v) ? v : dflt;
}

static int copy_value(char *dst, size_t dst_size, const char *v, const char *name, char *err,
                      size_t err_size)
{
    if (strlen(v) >= dst_size)
        return config_error(err, err_size, "%s: value is too long (at most %zu characters)", name,
                            dst_size - 1);
    memcpy(dst, v, strlen(v) + 1);
    return 0;
}

static int parse_long(const char *v, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || end == v || *end != '\0' || n < min || n > max)
        return -1;
    *out = n;
    return 0;
}

static int int_var(config_lookup_fn lookup, const char *name, const char *dflt, long min, long max,
                   long *out, char *err, size_t err_size)
{
    const char *v = value_or(lookup, name, dflt);
    if (parse_long(v, min, max, out) != 0)
        return config_error(err, err_size, "%s: \"%s\" is not a whole number from %ld to %ld", name,
                            v, min, max);
    return 0;
}

static int parse_listen(const char *v, struct config *c, char *err, size_t err_size)
{
    const char *colon = strrchr(v, ':');
    long port;
    if (!colon || colon == v || parse_long(colon + 1, 1, 65535, &port) != 0)
        return config_error(err, err_size,
                            "CCSYNC_LISTEN: \"%s\" is not address:port (for example 0.0.0.0:8080)",
                            v);
    size_t hlen = (size_t)(colon - v);
    if (hlen >= sizeof c->listen_host)
        return config_error(err, err_size, "CCSYNC_LISTEN: address is too long");
    memcpy(c->listen_host, v, hlen);
    c->listen_host[hlen] = '\0';
    c->listen_port = (int)port;
    return 0;
}

/* CCSYNC_ADMIN_LISTEN: optional, address:port on a port of its own (the port
 * tells the two listeners' connections apart). */
static int load_admin_listen(struct config *c, config_lookup_fn lookup, char *err, size_t err_size)
{
    const char *v = value_or(lookup, "CCSYNC_ADMIN_LISTEN", "");
    if (!*v)
        return 0;
    const char *colon = strrchr(v, ':');
    long port;
    if (!colon || colon == v || parse_long(colon + 1, 1, 65535, &port) != 0)
        return config_error(
            err, err_size,
            "CCSYNC_ADMIN_LISTEN: \"%s\" is not address:port (for example 127.0.0.1:9090)", v);
    size_t hlen = (size_t)(colon - v);
    if (hlen >= sizeof c->admin_listen_host)
        return config_error(err, err_size, "CCSYNC_ADMIN_LISTEN: address is too long");
    if (port == c->listen_port)
        return config_error(err, err_size,
                            "CCSYNC_ADMIN_LISTEN: port %ld is CCSYNC_LISTEN's; give the admin "
                            "listener a port of its own",
                            port);
    memcpy(c->admin_listen_host, v, hlen);
    c->admin_listen_host[hlen] = '\0';
    c->admin_listen_port = (int)port;
    return 0;
}

static int http_url(const char *name, const char *v, char *dst, size_t dst_size, char *err,
                    size_t err_size)
{
    if (strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0)
        return config_error(err, err_size, "%s: \"%s\" is not an http:// or https:// URL", name, v);
    if (copy_value(dst, dst_size, v, name, err, err_size) != 0)
        return -1;
    size_t n = strlen(dst);
    while (n > 0 && dst[n - 1] == '/') /* base URLs are joined with "/path" */
        dst[--n] = '\0';
    return 0;
}

/* Percent-decodes in[0..len) into out (size bytes with the NUL); -1 when a %
 * is not followed by two hex digits, the result holds a NUL, or it does not fit. */
static int percent_decode(const char *in, size_t len, char *out, size_t size)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = in[i];
        if (ch == '%') {
            if (i + 2 >= len || !isxdigit((unsigned char)in[i + 1]) ||
                !isxdigit((unsigned char)in[i + 2]))
                return -1;
            char hex[3] = {in[i + 1], in[i + 2], '\0'};
            ch = (char)strtol(hex, NULL, 16);
            if (ch == '\0')
                return -1;
            i += 2;
        }
        if (n + 1 >= size)
            return -1;
        out[n++] = ch;
    }
    out[n] = '\0';
    return 0;
}

/* [user][:password]@ before the host: both percent-decoded (a password may
 * hold '@', ':' or '/' written as %40, %3A, %2F). */
static int parse_credentials(const char *p, const char *at, struct redis_target *t, char *err,
                             size_t err_size)
{
    const char *colon = memchr(p, ':', (size_t)(at - p));
    const char *user_end = colon ? colon : at;
    if (percent_decode(p, (size_t)(user_end - p), t->username, sizeof t->username) != 0 ||
        (colon &&
         percent_decode(colon + 1, (size_t)(at - colon - 1), t->password, sizeof t->password) != 0))
        return config_error(err, err_size,
                            "credentials are too long or hold a bad %% escape (write %%XX)");
    return 0;
}

/* The host: a name, an IPv4 address, or an IPv6 address in brackets. What
 * follows it, or NULL with err. */
static const char *parse_host(const char *p, struct redis_target *t, char *err, size_t err_size)
{
    size_t hlen;
    const char *rest;
    if (*p == '[') {
        const char *close = strchr(p, ']');
        if (!close)
            return config_error(err, err_size, "has an IPv6 host without its closing ]"), NULL;
        p++;
        hlen = (size_t)(close - p);
        rest = close + 1;
        if (hlen == 0 || strspn(p, "0123456789abcdefABCDEF:.") < hlen)
            return config_error(err, err_size, "has a bad IPv6 host"), NULL;
    } else {
        hlen = strcspn(p, ":/");
        rest = p + hlen;
    }
    if (hlen == 0 || hlen >= sizeof t->host)
        return config_error(err, err_size, "has no host"), NULL;
    memcpy(t->host, p, hlen);
    t->host[hlen] = '\0';
    return rest;
}

int config_parse_redis_url(const char *url, struct redis_target *t, char *err, size_t err_size)
{
    memset(t, 0, sizeof *t);
    t->port = 6379;
    if (strncmp(url, "redis://", 8) != 0)
        return config_error(err, err_size, "must start with redis://");
    const char *p = url + 8;
    const char *at = strrchr(p, '@');
    if (at) {
        if (parse_credentials(p, at, t, err, err_size) != 0)
            return -1;
        p = at + 1;
    }
    p = parse_host(p, t, err, err_size);
    if (!p)
        return -1;
    if (*p == ':') {
        char port[8] = {0};
        size_t n = strcspn(p + 1, "/");
        long v;
        if (n == 0 || n >= sizeof port)
            return config_error(err, err_size, "has a bad port");
        memcpy(port, p + 1, n);
        if (parse_long(port, 1, 65535, &v) != 0)
            return config_error(err, err_size, "has a bad port");
        t->port = (int)v;
        p += 1 + n;
    }
    if (*p == '/' && p[1] != '\0') {
        long db;
        if (parse_long(p + 1, 0, 15, &db) != 0)
            return config_error(err, err_size, "has a bad database number (0-15)");
        t->db = (int)db;
    } else if (*p != '\0' && strcmp(p, "/") != 0) {
        return config_error(err, err_size, "is not redis://[:password@]host[:port][/db]");
    }
    return 0;
}

static int cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/*
 * config_load reads the variables in steps, in a fixed order, so the first bad
 * variable is the one reported. Each step has the shape of load_step.
 */
typedef int (*load_step)(struct config *c, config_lookup_fn lookup, char *err, size_t err_size);

static int load_listen(struct config *c, config_lookup_fn lookup, char *err, size_t err_size)
{
    return parse_listen(value_or(lookup, "CCSYNC_LISTEN", "0.0.0.0:8080"), c, err, err_size);
}

/* True when url names a user and no password ("redis://user@host"). */
static bool user_without_password(const char *url)
{
    const char *p = url + strlen("redis://"), *at = strrchr(p, '@');
    return at && at > p && !memchr(p, ':', (size_t)(at - p));
}

/* CCSYNC_REDIS_PASSWORD_FILE: the password from a file (a Docker secret), so
 * that it is in no environment; one line, its end of line dropped. */
static int load_redis_password_file(struct config *c, const char *path, char *err, size_t err_size)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return config_error(err, err_size, "CCSYNC_REDIS_PASSWORD_FILE: cannot read %s", path);
    char line[sizeof c->redis.password + 1];
    size_t n = fread(line, 1, sizeof line - 1, f);
    bool more = fgetc(f) != EOF;
    fclose(f);
    line[n] = '\0';
    n = strcspn(line, "\r\n");
    line[n] = '\0';
    if (more || n == 0 || n >= sizeof c->redis.password)
        return config_error(err, err_size,
                            "CCSYNC_REDIS_PASSWORD_FILE: %s must hold one line of 1-%zu characters",
                            path, sizeof c->redis.password - 1);
    memcpy(c->redis.password, line, n + 1);
    explicit_bzero(line, sizeof line);
    return 0;
}

static int load_redis(struct config *c, config_lookup_fn lookup, char *err, size_t err_size)
{
    const char *v = value_or(lookup, "CCSYNC_REDIS_URL", "redis://127.0.0.1:6379/0");
    if (copy_value(c->redis_url, sizeof c->redis_url, v, "CCSYNC_REDIS_URL", err, err_size) != 0)
        return -1;
    char why[128];
    if (config_parse_redis_url(v, &c->redis, why, sizeof why) != 0)
        return config_error(err, err_size, "CCSYNC_REDIS_URL: %s",
                            why); /* the URL may hold a password */
    const char *file = value_or(lookup, "CCSYNC_REDIS_PASSWORD_FILE", "");
    if (!*file && user_without_password(v))
        return config_error(err, err_size,
                            "CCSYNC_REDIS_URL: credentials must be written user:password@ or "
                            ":password@");
    if (*file && c->redis.password[0])
        return config_error(err, err_size,
                            "CCSYNC_REDIS_PASSWORD_FILE: is set but CCSYNC_REDIS_URL holds a "
                            "password too; keep one");
    return *file ? load_redis_password_file(c, file, err, err_size) : 0;
}

static int load_admin_token(struct config *c, config_lookup_fn lookup, char *err, size_t err_size)
{
    const char *v = value_or(lookup, "CCSYNC_ADMIN_TOKEN", "");
    if (!*v)
        return config_error(err, err_size,
                            "CCSYNC_ADMIN_TOKEN: is required (the admin API's bearer token)");
    if (strlen(v) < 16)
        return config_error(err, err_size, "CCSYNC_ADMIN_TOKEN: must be at least 16 characters");
    return copy_value(c->admin_token, sizeof c->admin_token, v, "CCSYNC_ADMIN_TOKEN", err,
                      err_size);
}

/* Where Constant Contact is and who ccsync is to it. */
static int load_cc_endpoints(struct config *c, config_lookup_fn lookup, char *err, size_t err_size)
{
    if (http_url("CCSYNC_CC_API_URL",
                 value_or(lookup, "CCSYNC_CC_API_URL", "https://api.cc.email/v3"), c->cc_api_url,
                 sizeof c->cc_api_url, err, err_size) != 0)
        return -1;
    if (http_url("CCSYNC_CC_TOKEN_URL",
                 value_or(lookup, "CCSYNC_CC_TOKEN_URL",
                          "https://authz.constantcontact.com/oauth2/default/v1/token"),
                 c->cc_token_url, sizeof c->cc_token_url, err, err_size) != 0)
        return -1;
    if (copy_value(c->cc_client_id, sizeof c->cc_client_id,
                   value_or(lookup, "CCSYNC_CC_CLIENT_ID", ""), "CCSYNC_CC_CLIENT_ID", err,
                   err_size) != 0 ||
        copy_value(c->cc_client_secret, sizeof c->cc_client_secret,
                   value_or(lookup, "CCSYNC_CC_CLIENT_SECRET", ""), "CCSYNC_CC_CLIENT_SECRET", err,
                   err_size) != 0)
        return -1;
    return 0;
}

/* The shared Constant Contact budget: requests a second and a day. */
static int load_cc_budget(struct config *c, config_lookup_fn lookup, char *err, size_t err_size)
{
    const char *v = value_or(lookup, "CCSYNC_CC_RATE_PER_SEC", "4");
    char *end;
    errno = 0;
    double r = strtod(v, &end);
    if (errno || end == v || *end || !(r > 0) || r > 1000)
        return config_error(
            err, err_size,
            "CCSYNC_CC_RATE_PER_SEC: \"%s\" is not a number above 0 and at most 1000", v);
    c->cc_rate_per_sec = r;
    return int_var(lookup, "CCSYNC_CC_DAILY_LIMIT", "10000", 1, 100000000, &c->cc_daily_limit, err,
                   err_size);
}

/* How the shared day is planned: reconcile's share, the widest coalescing wait. */
static int load_budget_plan(struct config *c, config_lookup_fn lookup, char *err, size_t err_size)
{
    const char *v = value_or(lookup, "CCSYNC_RECONCILE_BUDGET_SHARE", "0.2");
    char *end;
    errno = 0;
    double share = strtod(v, &end);
    if (errno || end == v || *end || !(share > 0) || share > 1)
        return config_error(err, err_size,
                            "CCSYNC_RECONCILE_BUDGET_SHARE: \"%s\" is not a number above 0 and "
                            "at most 1",
                            v);
    c->reconcile_budget_share = share;
    long n;
    if (int_var(lookup, "CCSYNC_SYNC_DELAY_MAX_SECONDS", "3600", 1, 86400, &n, err, err_size) != 0)
        return -1;
    c->sync_delay_max_seconds = (int)n;
    return 0;
}

static int load_workers(struct config *c, config_lookup_fn lookup, char *err, size_t err_size)
{
    long n;
    /* 0: an ingest-only process (webhooks and the API); others on the Redis sync */
    if (int_var(lookup, "CCSYNC_WORKERS", "4", 0, 256, &n, err, err_size) != 0)
        return -1;
    c->workers = (int)n;
    if (int_var(lookup, "CCSYNC_RECONCILE_SECONDS", "300", 1, 86400 * 7, &n, err, err_size) != 0)
        return -1;
    c->reconcile_seconds = (int)n;
    return load_budget_plan(c, lookup, err, err_size); /* reconcile's share and the widest wait */
}

static int load_logging(struct config *c, config_lookup_fn lookup, char *err, size_t err_size)
{
    const char *v = value_or(lookup, "CCSYNC_LOG_FORMAT", "json");
    if (strcmp(v, "json") == 0)
        c->log_format = LOG_FORMAT_JSON;
    else if (strcmp(v, "text") == 0)
        c->log_format = LOG_FORMAT_TEXT;
    else
        return config_error(err, err_size, "CCSYNC_LOG_FORMAT: \"%s\" is not json or text", v);

    static const char *const levels[] = {
        [LOG_DEBUG] = "debug", [LOG_INFO] = "info", [LOG_WARN] = "warn", [LOG_ERROR] = "error"};
    v = value_or(lookup, "CCSYNC_LOG_LEVEL", "info");
    for (int i = LOG_DEBUG; i <= LOG_ERROR; i++) {
        if (strcmp(v, levels[i]) == 0) {
            c->log_level = (enum log_level)i;
            return 0;
        }
    }
    return config_error(err, err_size, "CCSYNC_LOG_LEVEL: \"%s\" is not debug, info, warn or error",
                        v);
}

/* Sizes and times: the body limit, shutdown grace, HTTP threads, sync delay, lease. */
static int load_limits(struct config *c, config_lookup_fn lookup, char *err, size_t err_size)
{
    long n;
    if (int_var(lookup, "CCSYNC_MAX_BODY_BYTES", "16777216", 1024, 1L << 30, &n, err, err_size) !=
        0)
        return -1;
    c->max_body_bytes = (size_t)n;
    if (int_var(lookup, "CCSYNC_SHUTDOWN_GRACE_SECONDS", "25", 1, 3600, &n, err, err_size) != 0)
        return -1;
    c->shutdown_grace_seconds = (int)n;
    char threads[16];
    snprintf(threads, sizeof threads, "%d", cpu_count());
    if (int_var(lookup, "CCSYNC_HTTP_THREADS", threads, 1, 256, &n, err, err_size) != 0)
        return -1;
    c->http_threads = (int)n;
    if (int_var(lookup, "CCSYNC_SYNC_DELAY_MS", "1000", 0, 3600000, &n, err, err_size) != 0)
        return -1;
    c->sync_delay_ms = (int)n;
    if (int_var(lookup, "CCSYNC_LEASE_SECONDS", "15", 2, 3600, &n, err, err_size) != 0)
        return -1;
    c->lease_seconds = (int)n;
    return 0;
}

/* What an acknowledged webhook survives, and where the Redis primary is. */
static int load_durability(struct config *c, config_lookup_fn lookup, char *err, size_t err_size)
{
    const char *v = value_or(lookup, "CCSYNC_DURABILITY", "everysec");
    c->durability = durability_mode_parse(v);
    if (c->durability < 0)
        return config_error(err, err_size,
                            "CCSYNC_DURABILITY: \"%s\" is not everysec, always or replica", v);
    long n;
    if (int_var(lookup, "CCSYNC_REPLICA_TIMEOUT_MS", "500", 1, 60000, &n, err, err_size) != 0)
        return -1;
    c->replica_timeout_ms = (int)n;
    const char *list = value_or(lookup, "CCSYNC_REDIS_SENTINELS", "");
    const char *name = value_or(lookup, "CCSYNC_REDIS_MASTER_NAME", "");
    if (!*list) {
        if (*name)
            return config_error(err, err_size,
                                "CCSYNC_REDIS_MASTER_NAME: is set but "
                                "CCSYNC_REDIS_SENTINELS is not");
        return 0;
    }
    char why[160];
    if (sentinel_parse_list(list, &c->redis.sentinels, why, sizeof why) != 0)
        return config_error(err, err_size, "CCSYNC_REDIS_SENTINELS: %s", why);
    if (!*name)
        return config_error(err, err_size,
                            "CCSYNC_REDIS_MASTER_NAME: is required with "
                            "CCSYNC_REDIS_SENTINELS (the name the Sentinels monitor)");
    return copy_value(c->redis.sentinels.master_name, sizeof c->redis.sentinels.master_name, name,
                      "CCSYNC_REDIS_MASTER_NAME", err, err_size);
}

/* The key ring that seals secrets at rest; without one, plain text only when
 * the operator says so (development). */
static int load_secrets(struct config *c, config_lookup_fn lookup, char *err, size_t err_size)
{
    const char *allow = value_or(lookup, "CCSYNC_ALLOW_PLAINTEXT_SECRETS", "0");
    if (strcmp(allow, "0") != 0 && strcmp(allow, "1") != 0)
        return config_error(err, err_size, "CCSYNC_ALLOW_PLAINTEXT_SECRETS: \"%s\" is not 0 or 1",
                            allow);
    c->allow_plaintext_secrets = allow[0] == '1';
    const char *path = value_or(lookup, "CCSYNC_SECRETS_KEY_FILE", "");
    if (!*path) {
        if (c->allow_plaintext_secrets)
            return 0;
        return config_error(err, err_size,
                            "CCSYNC_SECRETS_KEY_FILE: is required (a file of \"KEY_ID BASE64\" "
                            "lines; make one with scripts/make-secrets-key.sh), or set "
                            "CCSYNC_ALLOW_PLAINTEXT_SECRETS=1 for development");
    }
    if (copy_value(c->secrets_key_file, sizeof c->secrets_key_file, path, "CCSYNC_SECRETS_KEY_FILE",
                   err, err_size) != 0)
        return -1;
    char why[200];
    if (secrets_ring_load(path, &c->secrets, why, sizeof why) != 0)
        return config_error(err, err_size, "CCSYNC_SECRETS_KEY_FILE: %s", why);
    return 0;
}

/* What one client, one request or one association may take (README: "Limits"). */
static int load_hostile_limits(struct config *c, config_lookup_fn lookup, char *err,
                               size_t err_size)
{
    long n[9];
    if (int_var(lookup, "CCSYNC_REQUEST_DEADLINE_SECONDS", "30", 1, 3600, &n[0], err, err_size) ||
        int_var(lookup, "CCSYNC_MAX_CONNECTIONS", "4096", 1, 65536, &n[1], err, err_size) ||
        int_var(lookup, "CCSYNC_MAX_CONNECTIONS_PER_IP", "256", 1, 65536, &n[2], err, err_size) ||
        int_var(lookup, "CCSYNC_MAX_INFLIGHT_BODY_BYTES", "268435456", 1024, 1L << 40, &n[3], err,
                err_size) ||
        int_var(lookup, "CCSYNC_MAX_GROUPS_PER_MEMBER", "1000", 1, 1000000, &n[4], err, err_size) ||
        int_var(lookup, "CCSYNC_MAX_SNAPSHOT_MEMBERS", "500000", 1, 10000000, &n[5], err,
                err_size) ||
        int_var(lookup, "CCSYNC_RETENTION_DAYS", "30", 1, 3650, &n[6], err, err_size) ||
        int_var(lookup, "CCSYNC_INGEST_RATE", "100", 1, 1000000, &n[7], err, err_size) ||
        int_var(lookup, "CCSYNC_INGEST_BURST", "6000", 1, 100000000, &n[8], err, err_size))
        return -1;
    c->request_deadline_seconds = (int)n[0];
    c->max_connections = (int)n[1];
    c->max_connections_per_ip = (int)n[2];
    c->max_inflight_body_bytes = (size_t)n[3];
    c->max_groups_per_member = (int)n[4];
    c->max_snapshot_members = (int)n[5];
    c->retention_days = (int)n[6];
    c->ingest_rate = (int)n[7];
    c->ingest_burst = (int)n[8];
    return 0;
}

/* The bootstrap association's secret and tokens, checked like a PUT would be. */
static int load_boot_association(struct config *c, config_lookup_fn lookup, const char *id,
                                 char *err, size_t err_size)
{
    if (!ccsync_valid_association_id(id))
        return config_error(
            err, err_size,
            "CCSYNC_ASSOCIATION_ID: \"%s\" is not 1-64 characters of A-Z a-z 0-9 _ -", id);
    snprintf(c->boot_association_id, sizeof c->boot_association_id, "%s", id);
    const char *v = value_or(lookup, "CCSYNC_WEBHOOK_SECRET", "");
    if (!webhook_secret_valid(v))
        return config_error(
            err, err_size,
            "CCSYNC_WEBHOOK_SECRET: required with CCSYNC_ASSOCIATION_ID, as whsec_<base64>");
    long bytes = webhook_secret_bytes(v);
    if (bytes < WEBHOOK_SECRET_MIN_BYTES || bytes > WEBHOOK_SECRET_MAX_BYTES)
        return config_error(err, err_size,
                            "CCSYNC_WEBHOOK_SECRET: must decode to %d-%d bytes (Standard "
                            "Webhooks); this one decodes to %ld",
                            WEBHOOK_SECRET_MIN_BYTES, WEBHOOK_SECRET_MAX_BYTES, bytes);
    if (copy_value(c->boot_webhook_secret, sizeof c->boot_webhook_secret, v,
                   "CCSYNC_WEBHOOK_SECRET", err, err_size) != 0)
        return -1;
    if (copy_value(c->boot_cc_access_token, sizeof c->boot_cc_access_token,
                   value_or(lookup, "CCSYNC_CC_ACCESS_TOKEN", ""), "CCSYNC_CC_ACCESS_TOKEN", err,
                   err_size) != 0 ||
        copy_value(c->boot_cc_refresh_token, sizeof c->boot_cc_refresh_token,
                   value_or(lookup, "CCSYNC_CC_REFRESH_TOKEN", ""), "CCSYNC_CC_REFRESH_TOKEN", err,
                   err_size) != 0)
        return -1;
    v = value_or(lookup, "CCSYNC_CC_EXPIRES_AT", "");
    int64_t ns;
    if (*v && rfc3339_parse(v, &ns) != 0)
        return config_error(err, err_size,
                            "CCSYNC_CC_EXPIRES_AT: \"%s\" is not an RFC 3339 date-time", v);
    snprintf(c->boot_cc_expires_at, sizeof c->boot_cc_expires_at, "%s", v);
    return 0;
}

/* Bootstrap of one association: all or nothing. */
static int load_bootstrap(struct config *c, config_lookup_fn lookup, char *err, size_t err_size)
{
    const char *id = value_or(lookup, "CCSYNC_ASSOCIATION_ID", "");
    if (*id)
        return load_boot_association(c, lookup, id, err, err_size);
    static const char *const orphans[] = {"CCSYNC_WEBHOOK_SECRET", "CCSYNC_CC_ACCESS_TOKEN",
                                          "CCSYNC_CC_REFRESH_TOKEN", "CCSYNC_CC_EXPIRES_AT"};
    for (size_t i = 0; i < sizeof orphans / sizeof orphans[0]; i++)
        if (*value_or(lookup, orphans[i], ""))
            return config_error(err, err_size, "%s: is set but CCSYNC_ASSOCIATION_ID is not",
                                orphans[i]);
    return 0;
}

/* Notifications (notify.c): may they go to private and loopback addresses? */
static int load_notify(struct config *c, config_lookup_fn lookup, char *err, size_t err_size)
{
    long n;
    if (int_var(lookup, "CCSYNC_NOTIFY_ALLOW_PRIVATE", "0", 0, 1, &n, err, err_size) != 0)
        return -1;
    c->notify_allow_private = n == 1;
    return 0;
}

/* A body larger than one chunk is written to Redis a chunk a command and read
 * back likewise (staged.h), so no command carries more than this. */
static int load_staging(struct config *c, config_lookup_fn lookup, char *err, size_t err_size)
{
    long n;
    if (int_var(lookup, "CCSYNC_ENQUEUE_CHUNK_BYTES", "1048576", 1024, 16777216, &n, err,
                err_size) != 0)
        return -1;
    c->enqueue_chunk_bytes = (size_t)n;
    return 0;
}

int config_load(struct config *c, config_lookup_fn lookup, char *err, size_t err_size)
{
    static const load_step steps[] = {
        load_listen,  load_redis,        load_admin_token,    load_cc_endpoints, load_cc_budget,
        load_workers, load_logging,      load_limits,         load_durability,   load_bootstrap,
        load_secrets, load_admin_listen, load_hostile_limits, load_staging,
    };
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++)
        if (steps[i](c, lookup, err, err_size) != 0)
            return -1;
    return load_notify(c, lookup, err, err_size);
}
