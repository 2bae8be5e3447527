/*
 * store.c - Redis connections (with AUTH and SELECT from CCSYNC_REDIS_URL), a
 * small pool of them for request handlers, the pipelined-reply drain, and
 * association records.
 *
 * Association hash (key_association): webhook_secret, cc_access_token,
 * cc_refresh_token, cc_expires_at (ns), cc_state, cc_last_error,
 * cc_last_error_at, created_at, updated_at (ns), cred_version.
 *
 * The three secrets are sealed (secrets.h) with the association id and the
 * field's name as additional data whenever a key ring is configured: written
 * sealed here, opened here, so no other file sees their stored form.
 */
#include "ccsync/store.h"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ccsync/keys.h"
#include "ccsync/metrics.h"
#include "ccsync/sentinel.h"
#include "ccsync/schedule.h"
#include "ccsync/secrets.h"

int64_t store_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

bool store_reply_moved(redisContext *c, const redisReply *r)
{
    static const char *const moved[] = {"READONLY", "MASTERDOWN", "LOADING"};
    if (!r || r->type != REDIS_REPLY_ERROR || c->err)
        return false;
    for (size_t i = 0; i < sizeof moved / sizeof moved[0]; i++) {
        size_t len = strlen(moved[i]);
        if (strncmp(r->str, moved[i], len) == 0 && (r->str[len] == ' ' || !r->str[len])) {
            /* Fail the context as a broken connection would: every caller then
             * drops it, and the next connection finds the primary again. */
            c->err = REDIS_ERR_OTHER;
            snprintf(c->errstr, sizeof c->errstr, "%s (this Redis is no longer the primary)",
                     moved[i]);
            metrics_inc("ccsync_redis_errors_total", "where=\"not_primary\"");
            return true;
        }
    }
    return false;
}

bool store_reply_ok(redisContext *c, redisReply *r)
{
    store_reply_moved(c, r);
    return r != NULL && c->err == 0 && r->type != REDIS_REPLY_ERROR;
}

redisReply *store_command(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    if (!store_reply_ok(c, r)) {
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

int store_exec(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    int rc = store_reply_ok(c, r) ? STORE_OK : STORE_ERR;
    freeReplyObject(r);
    return rc;
}

int store_drain(redisContext *c, size_t n)
{
    int rc = STORE_OK;
    for (size_t i = 0; i < n; i++) {
        redisReply *r = NULL;
        if (redisGetReply(c, (void **)&r) != REDIS_OK || !r)
            return STORE_ERR; /* the connection broke: the rest will not come */
        if (r->type == REDIS_REPLY_ERROR)
            rc = STORE_ERR;
        freeReplyObject(r);
    }
    return rc;
}

redisContext *store_connect(const struct redis_target *t, int timeout_ms, char *err,
                            size_t err_size)
{
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    char host[256];
    int port = t->port;
    snprintf(host, sizeof host, "%s", t->host);
    if (t->sentinels.n > 0) {
        char why[300];
        if (sentinel_find_primary(&t->sentinels, t->username, t->password, timeout_ms, host,
                                  sizeof host, &port, why, sizeof why) != 0) {
            snprintf(err, err_size, "cannot find the Redis primary through Sentinel: %s", why);
            metrics_inc("ccsync_redis_errors_total", "where=\"connect\"");
            return NULL;
        }
    }
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    if (!c || c->err) {
        snprintf(err, err_size, "cannot connect to Redis at %s:%d: %s", host, port,
                 c ? c->errstr : "out of memory");
        goto error;
    }
    redisSetTimeout(c, tv);
    redisReply *r = NULL;
    if (t->password[0]) {
        if (t->username[0])
            r = redisCommand(c, "AUTH %s %s", t->username, t->password);
        else
            r = redisCommand(c, "AUTH %s", t->password);
        if (!store_reply_ok(c, r)) {
            /* The reply text never holds the password; keep it for the operator. */
            snprintf(err, err_size, "Redis refused AUTH: %s",
                     r && r->type == REDIS_REPLY_ERROR ? r->str : c->errstr);
            goto error_reply;
        }
        freeReplyObject(r);
    }
    if (t->db != 0) {
        r = redisCommand(c, "SELECT %d", t->db);
        if (!store_reply_ok(c, r)) {
            snprintf(err, err_size, "Redis refused SELECT %d", t->db);
            goto error_reply;
        }
        freeReplyObject(r);
    }
    return c;

error_reply:
    freeReplyObject(r);
error:
    if (c)
        redisFree(c);
    metrics_inc("ccsync_redis_errors_total", "where=\"connect\"");
    return NULL;
}

#define POOL_MAX_IDLE 16

struct store_pool {
    pthread_mutex_t lock;
    struct redis_target target;
    int timeout_ms;
    redisContext *idle[POOL_MAX_IDLE];
    int n_idle;
};

struct store_pool *store_pool_new(const struct redis_target *t, int timeout_ms)
{
    struct store_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    pthread_mutex_init(&p->lock, NULL);
    p->target = *t;
    p->timeout_ms = timeout_ms;
    return p;
}

void store_pool_free(struct store_pool *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->n_idle; i++)
        redisFree(p->idle[i]);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

redisContext *store_pool_get(struct store_pool *p, char *err, size_t err_size)
{
    redisContext *c = NULL;
    pthread_mutex_lock(&p->lock);
    if (p->n_idle > 0)
        c = p->idle[--p->n_idle];
    pthread_mutex_unlock(&p->lock);
    if (c)
        return c;
    return store_connect(&p->target, p->timeout_ms, err, err_size);
}

void store_pool_put(struct store_pool *p, redisContext *c, bool ok)
{
    if (!c)
        return;
    if (!ok || c->err) {
        metrics_inc("ccsync_redis_errors_total", "where=\"command\"");
        redisFree(c);
        return;
    }
    pthread_mutex_lock(&p->lock);
    if (p->n_idle < POOL_MAX_IDLE) {
        p->idle[p->n_idle++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&p->lock);
    if (c)
        redisFree(c);
}

static void copy_field(char *dst, size_t size, const redisReply *v)
{
    if (v->type == REDIS_REPLY_STRING && v->len < size) {
        memcpy(dst, v->str, v->len);
        dst[v->len] = '\0';
    }
}

static int64_t int_field(const redisReply *v)
{
    return v->type == REDIS_REPLY_STRING ? strtoll(v->str, NULL, 10) : 0;
}

const char *const store_secret_fields[STORE_N_SECRET_FIELDS] = {"webhook_secret", "cc_access_token",
                                                                "cc_refresh_token"};

/* Opens a stored secret into dst; an unreadable one (a key gone from the
 * ring, an altered value) leaves dst empty and is counted. */
static void open_field(const struct secrets_ring *ring, struct association *a, const char *field,
                       char *dst, size_t size, const redisReply *v)
{
    if (v->type != REDIS_REPLY_STRING || v->len == 0)
        return;
    if (secrets_open(ring, a->id, field, v->str, dst, size) != 0) {
        dst[0] = '\0';
        a->unreadable_secrets++;
    }
}

int store_association_get(redisContext *c, const struct secrets_ring *ring, const char *id,
                          struct association *a)
{
    memset(a, 0, sizeof *a);
    redisReply *r = store_command(c, "HGETALL %s", key_association(id).s);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        return STORE_ERR;
    }
    if (r->elements == 0) {
        freeReplyObject(r);
        return 0;
    }
    snprintf(a->id, sizeof a->id, "%s", id);
    snprintf(a->cc_state, sizeof a->cc_state, "not_configured");
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const char *k = r->element[i]->str;
        const redisReply *v = r->element[i + 1];
        if (!k)
            continue;
        if (strcmp(k, "webhook_secret") == 0)
            open_field(ring, a, k, a->webhook_secret, sizeof a->webhook_secret, v);
        else if (strcmp(k, "cc_access_token") == 0)
            open_field(ring, a, k, a->cc_access_token, sizeof a->cc_access_token, v);
        else if (strcmp(k, "cc_refresh_token") == 0)
            open_field(ring, a, k, a->cc_refresh_token, sizeof a->cc_refresh_token, v);
        else if (strcmp(k, "cc_expires_at") == 0)
            a->cc_expires_at_ns = int_field(v);
        else if (strcmp(k, "cc_state") == 0)
            copy_field(a->cc_state, sizeof a->cc_state, v);
        else if (strcmp(k, "cc_last_error") == 0)
            copy_field(a->cc_last_error, sizeof a->cc_last_error, v);
        else if (strcmp(k, "cc_last_error_at") == 0)
            a->cc_last_error_at_ns = int_field(v);
        else if (strcmp(k, "created_at") == 0)
            a->created_at_ns = int_field(v);
        else if (strcmp(k, "updated_at") == 0)
            a->updated_at_ns = int_field(v);
        else if (strcmp(k, "cred_version") == 0)
            a->credentials_version = (uint64_t)int_field(v);
    }
    freeReplyObject(r);
    return 1;
}

/*
 * One script so that a PUT is all or nothing, and so that new tokens reset the
 * connection state in the same step (the engine then retries the association).
 * It touches only the association's keys: KEYS[1] its hash, KEYS[2] its
 * groups, KEYS[3] its schedule (key_dirty). ARGV: now, secret|"", has_cc,
 * access, refresh, expires|"", now in ms, prefix.
 * New credentials queue every group of the association for a sync at once, so
 * groups waiting in constant_contact_unauthorized resume without delay.
 * Returns {1 created | 0, the association's earliest due or nil}.
 */
static const char put_script[] = SCHEDULE_LUA_EARLIEST
    "local created = redis.call('EXISTS', KEYS[1]) == 0\n"
    "if created then redis.call('HSET', KEYS[1], 'created_at', ARGV[1], 'cc_state', "
    "'not_configured') end\n"
    "redis.call('HSET', KEYS[1], 'updated_at', ARGV[1])\n"
    "if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'webhook_secret', ARGV[2]) end\n"
    "if ARGV[3] == '1' then\n"
    "  if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'cc_access_token', ARGV[4]) end\n"
    "  if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'cc_refresh_token', ARGV[5]) end\n"
    "  if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'cc_expires_at', ARGV[6]) end\n"
    "  redis.call('HSET', KEYS[1], 'cc_state', 'unverified', 'cc_last_error', '')\n"
    "  redis.call('HINCRBY', KEYS[1], 'cred_version', 1)\n"
    "  for _, g in ipairs(redis.call('SMEMBERS', KEYS[2])) do\n"
    "    redis.call('ZADD', KEYS[3], ARGV[7], g)\n"
    "  end\n"
    "end\n"
    "return {created and 1 or 0, earliest(ARGV[8])}\n";

/* The global side of a PUT, after its script: the association joins the set
 * of associations, a credentials change is announced, and the association is
 * woken for the groups the script queued. Each step is safe to repeat. */
static int association_put_global(redisContext *c, const char *id, bool has_cc, int64_t earliest)
{
    size_t n = 1;
    redisAppendCommand(c, "SADD %s %s", KEY_ASSOCIATIONS, id);
    if (has_cc) {
        redisAppendCommand(c, "XADD %s MAXLEN ~ 1000 * assoc %s", KEY_CREDENTIALS, id);
        n++;
    }
    n += (size_t)schedule_append_wake(c, id, earliest);
    return store_drain(c, n);
}

/* The PUT as stored: secrets already in their stored form. */
static int put_stored(redisContext *c, const char *id, const struct association_update *u,
                      int64_t now_ns, bool *created)
{
    char now[32], now_ms[32], expires[32] = "";
    struct key key = key_association(id), groups = key_groups(id), dirty = key_dirty(id),
               prefix = key_prefix(id);
    snprintf(now, sizeof now, "%lld", (long long)now_ns);
    snprintf(now_ms, sizeof now_ms, "%lld", (long long)(now_ns / 1000000));
    if (u->has_cc && u->cc_expires_at_ns)
        snprintf(expires, sizeof expires, "%lld", (long long)u->cc_expires_at_ns);
    const char *argv[] = {"EVAL",
                          put_script,
                          "3",
                          key.s,
                          groups.s,
                          dirty.s,
                          now,
                          u->webhook_secret ? u->webhook_secret : "",
                          u->has_cc ? "1" : "0",
                          u->cc_access_token ? u->cc_access_token : "",
                          u->cc_refresh_token ? u->cc_refresh_token : "",
                          expires,
                          now_ms,
                          prefix.s};
    redisReply *r = redisCommandArgv(c, (int)(sizeof argv / sizeof argv[0]), argv, NULL);
    if (!store_reply_ok(c, r) || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        freeReplyObject(r);
        return STORE_ERR;
    }
    *created = r->element[0]->integer == 1;
    int64_t earliest = schedule_parse_due(r->element[1]);
    freeReplyObject(r);
    return association_put_global(c, id, u->has_cc, earliest);
}

char *store_secret_form(const struct secrets_ring *ring, const char *id, const char *field,
                        const char *value)
{
    if (ring && ring->n > 0)
        return secrets_seal(ring, id, field, value);
    return strdup(value);
}

static bool stored_form(const struct secrets_ring *ring, const char *id, const char *field,
                        const char *value, char **out)
{
    *out = value ? store_secret_form(ring, id, field, value) : NULL;
    return !value || *out;
}

static void free_sealed(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
}

int store_association_put(redisContext *c, const struct secrets_ring *ring, const char *id,
                          const struct association_update *u, int64_t now_ns, bool *created)
{
    char *sealed[3];
    bool ok = stored_form(ring, id, "webhook_secret", u->webhook_secret, &sealed[0]);
    ok = stored_form(ring, id, "cc_access_token", u->cc_access_token, &sealed[1]) && ok;
    ok = stored_form(ring, id, "cc_refresh_token", u->cc_refresh_token, &sealed[2]) && ok;
    if (!ok) {
        free_sealed(sealed, 3);
        return STORE_ERR;
    }
    struct association_update stored = *u;
    stored.webhook_secret = sealed[0];
    stored.cc_access_token = sealed[1];
    stored.cc_refresh_token = sealed[2];
    int rc = put_stored(c, id, &stored, now_ns, created);
    free_sealed(sealed, 3);
    return rc;
}
