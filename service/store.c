/*
 * store.c - Redis connections (with AUTH and SELECT from CCSYNC_REDIS_URL), a
 * small pool of them for request handlers, and association records.
 *
 * Association hash ccsync:a:{id}: webhook_secret, cc_access_token,
 * cc_refresh_token, cc_expires_at (ns), cc_state, cc_last_error,
 * cc_last_error_at, created_at, updated_at (ns), cred_version.
 */
#include "ccsync/store.h"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ccsync/metrics.h"

int64_t store_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

bool store_reply_ok(redisContext *c, redisReply *r)
{
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
    redisContext *c = redisConnectWithTimeout(t->host, t->port, tv);
    if (!c || c->err) {
        snprintf(err, err_size, "cannot connect to Redis at %s:%d: %s", t->host, t->port,
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
    if (r)
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

int store_association_get(redisContext *c, const char *id, struct association *a)
{
    memset(a, 0, sizeof *a);
    redisReply *r = redisCommand(c, "HGETALL " STORE_PREFIX "a:%s", id);
    if (!store_reply_ok(c, r) || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        return -1;
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
            copy_field(a->webhook_secret, sizeof a->webhook_secret, v);
        else if (strcmp(k, "cc_access_token") == 0)
            copy_field(a->cc_access_token, sizeof a->cc_access_token, v);
        else if (strcmp(k, "cc_refresh_token") == 0)
            copy_field(a->cc_refresh_token, sizeof a->cc_refresh_token, v);
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
 * KEYS[1] association hash, KEYS[2] association set, KEYS[3] credentials stream,
 * KEYS[4] the association's groups, KEYS[5] the dirty-group queue.
 * ARGV: id, now, secret|"", has_cc, access, refresh, expires|"", now in ms.
 * New credentials queue every group of the association for a sync at once, so
 * groups waiting in constant_contact_unauthorized resume without delay.
 */
static const char put_script[] =
    "local created = redis.call('EXISTS', KEYS[1]) == 0\n"
    "if created then redis.call('HSET', KEYS[1], 'created_at', ARGV[2], 'cc_state', "
    "'not_configured') end\n"
    "redis.call('HSET', KEYS[1], 'updated_at', ARGV[2])\n"
    "if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'webhook_secret', ARGV[3]) end\n"
    "if ARGV[4] == '1' then\n"
    "  if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'cc_access_token', ARGV[5]) end\n"
    "  if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'cc_refresh_token', ARGV[6]) end\n"
    "  if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'cc_expires_at', ARGV[7]) end\n"
    "  redis.call('HSET', KEYS[1], 'cc_state', 'unverified', 'cc_last_error', '')\n"
    "  redis.call('HINCRBY', KEYS[1], 'cred_version', 1)\n"
    "  redis.call('XADD', KEYS[3], 'MAXLEN', '~', '1000', '*', 'assoc', ARGV[1])\n"
    "  for _, g in ipairs(redis.call('SMEMBERS', KEYS[4])) do\n"
    "    redis.call('ZADD', KEYS[5], ARGV[8], ARGV[1] .. '|' .. g)\n"
    "  end\n"
    "end\n"
    "redis.call('SADD', KEYS[2], ARGV[1])\n"
    "if created then return 1 else return 0 end\n";

int store_association_put(redisContext *c, const char *id, const struct association_update *u,
                          int64_t now_ns, bool *created)
{
    char key[128], groups[160], now[32], now_ms[32], expires[32] = "";
    snprintf(key, sizeof key, STORE_PREFIX "a:%s", id);
    snprintf(groups, sizeof groups, STORE_PREFIX "a:%s:groups", id);
    snprintf(now, sizeof now, "%lld", (long long)now_ns);
    snprintf(now_ms, sizeof now_ms, "%lld", (long long)(now_ns / 1000000));
    if (u->has_cc && u->cc_expires_at_ns)
        snprintf(expires, sizeof expires, "%lld", (long long)u->cc_expires_at_ns);
    const char *argv[] = {"EVAL",
                          put_script,
                          "5",
                          key,
                          STORE_ASSOCIATIONS,
                          STORE_PREFIX "credentials",
                          groups,
                          STORE_PREFIX "dirty",
                          id,
                          now,
                          u->webhook_secret ? u->webhook_secret : "",
                          u->has_cc ? "1" : "0",
                          u->cc_access_token ? u->cc_access_token : "",
                          u->cc_refresh_token ? u->cc_refresh_token : "",
                          expires,
                          now_ms};
    redisReply *r = redisCommandArgv(c, (int)(sizeof argv / sizeof argv[0]), argv, NULL);
    if (!store_reply_ok(c, r) || r->type != REDIS_REPLY_INTEGER) {
        if (r)
            freeReplyObject(r);
        return -1;
    }
    *created = r->integer == 1;
    freeReplyObject(r);
    return 0;
}
