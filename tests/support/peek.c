/* Redis peeks for the tests, every key named by keys.h. See peek.h. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <signal.h>

#include "ccsync/keys.h"
#include "peek.h"
#include "testsupport.h"

redisContext *peek_connect(int port)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (!c || c->err)
        fail_msg("cannot connect to Redis on %d", port);
    return c;
}

redisContext *peek_redis_open(pid_t *pid, int *port)
{
    int p = ts_free_port();
    *pid = ts_redis_start(p);
    if (port)
        *port = p;
    if (*pid <= 0)
        return NULL;
    redisContext *c = redisConnect("127.0.0.1", p);
    if (c && !c->err)
        return c;
    redisFree(c);
    ts_kill(*pid, SIGKILL);
    *pid = 0;
    return NULL;
}

void peek_redis_close(redisContext *c, pid_t pid)
{
    redisFree(c);
    if (pid > 0)
        ts_kill(pid, SIGKILL);
}

static redisReply *command_v(redisContext *c, const char *fmt, va_list ap)
{
    redisReply *r = redisvCommand(c, fmt, ap);
    if (!r || r->type == REDIS_REPLY_ERROR)
        fail_msg("Redis: %s", r ? r->str : c->errstr);
    return r;
}

redisReply *peek_command(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = command_v(c, fmt, ap);
    va_end(ap);
    return r;
}

long long peek_integer(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = command_v(c, fmt, ap);
    va_end(ap);
    if (r->type != REDIS_REPLY_INTEGER)
        fail_msg("Redis: expected an integer for %s", fmt);
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

void peek_flushall(int port)
{
    redisContext *c = peek_connect(port);
    freeReplyObject(peek_command(c, "FLUSHALL"));
    redisFree(c);
}

long long peek_entries_added(redisContext *c, const char *stream)
{
    if (peek_integer(c, "EXISTS %s", stream) == 0)
        return 0;
    redisReply *r = peek_command(c, "XINFO STREAM %s", stream);
    long long n = -1;
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2)
        if (strcmp(r->element[i]->str, "entries-added") == 0)
            n = r->element[i + 1]->integer;
    freeReplyObject(r);
    if (n < 0)
        fail_msg("XINFO STREAM %s: no entries-added", stream);
    return n;
}

long long peek_events_added(redisContext *c)
{
    long long n = peek_entries_added(c, KEY_LEGACY_EVENTS);
    char cursor[32] = "0";
    do {
        redisReply *r = peek_command(c, "SCAN %s MATCH %s COUNT 1000 TYPE stream", cursor,
                                     KEY_ROOT "{*}:" KEY_ASSOC_EVENTS);
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        for (size_t i = 0; i < r->element[1]->elements; i++)
            n += peek_entries_added(c, r->element[1]->element[i]->str);
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    return n;
}

bool peek_dedup_exists(redisContext *c, const char *association, const char *webhook_id)
{
    return peek_integer(c, "EXISTS %s", key_dedup(association, webhook_id).s) == 1;
}

long long peek_dedup_ttl(redisContext *c, const char *association, const char *webhook_id)
{
    return peek_integer(c, "TTL %s", key_dedup(association, webhook_id).s);
}

bool peek_association_exists(redisContext *c, const char *association)
{
    return peek_integer(c, "EXISTS %s", key_association(association).s) == 1;
}

bool peek_refresh_lock_exists(redisContext *c, const char *association)
{
    return peek_integer(c, "EXISTS %s", key_refresh_lock(association).s) == 1;
}

long long peek_budget_served(redisContext *c, const char *app, const char *association)
{
    redisReply *r = redisCommand(c, "HGET %s %s", key_budget(app, "served").s, association);
    long long n = r && r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : -1;
    freeReplyObject(r);
    return n;
}

long long peek_budget_day(redisContext *c, const char *app, time_t at, long long *ttl)
{
    char what[32];
    struct tm tm;
    gmtime_r(&at, &tm);
    strftime(what, sizeof what, "day:%Y-%m-%d", &tm);
    struct key day = key_budget(app, what);
    redisReply *r = peek_command(c, "GET %s", day.s);
    long long n = r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : -1;
    freeReplyObject(r);
    if (ttl)
        *ttl = peek_integer(c, "TTL %s", day.s);
    return n;
}

json_object *peek_journal(redisContext *c, const char *association, const char *g)
{
    redisReply *r = peek_command(c, "HGET %s journal", key_group(association, g).s);
    json_object *j = r->type == REDIS_REPLY_STRING ? json_tokener_parse(r->str) : NULL;
    freeReplyObject(r);
    return j;
}

/* KEYS[1]: the association's schedule (key_dirty). ARGV: the lease keys' pattern
 * (or one key), the group to make due ('' = all), the reconcile lease ('' =
 * keep), KEY_DUE and the association (made due there too, as the repair would).
 * Parked entries are those due within a production lease (60 s) and a second:
 * a dead holder parks its groups at its lease's end; later entries (retries)
 * keep their time. */
static const char expire_script[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local held = {}\n"
    "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do\n"
    "  held[#held + 1] = k\n"
    "  redis.call('DEL', k)\n"
    "end\n"
    "if ARGV[3] ~= '' then redis.call('DEL', ARGV[3]) end\n"
    "local parked = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, now + 61000)\n"
    "for _, m in ipairs(parked) do\n"
    "  if ARGV[2] == '' or m == ARGV[2] then\n"
    "    redis.call('ZADD', KEYS[1], now, m)\n"
    "    redis.call('ZADD', ARGV[4], now, ARGV[5])\n"
    "  end\n"
    "end\n"
    "return held\n";

void peek_expire_dead_leases(redisContext *c, const char *association, const char *g, bool only_g)
{
    struct key want = key_lease(association, g);
    struct key all = key_lease(association, "*");
    redisReply *r =
        peek_command(c, "EVAL %s 1 %s %s %s %s %s %s", expire_script, key_dirty(association).s,
                     only_g ? want.s : all.s, only_g ? g : "",
                     only_g ? "" : key_reconcile_lease(association).s, KEY_DUE, association);
    bool found = false;
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
        found = found || strcmp(r->element[i]->str, want.s) == 0;
    freeReplyObject(r);
    if (!found)
        fail_msg("the dead ccsyncd held no lease on group %s", g);
}
