/*
 * ratelimit.c - the shared Constant Contact budget, in Redis.
 *
 * Every decision is one Lua script, so that all ccsyncd processes and threads
 * see one budget, and the script reads the Redis server's clock (TIME), so
 * that the hosts' clocks do not matter. Times inside the scripts are Unix
 * microseconds (they fit a Lua double exactly; nanoseconds would not).
 *
 * Keys, per CC application (the {app} braces are a Redis Cluster hash tag):
 *   ccsync:cc:{app}:bucket        next instant a grant is possible (µs): a token
 *                                 bucket with a burst of 1, i.e. grants at least
 *                                 1/rate + margin apart, so no sliding one-second
 *                                 window ever holds more than RATE of them
 *   ccsync:cc:{app}:day:YYYY-MM-DD requests granted that UTC day (expires after 2 days)
 *   ccsync:cc:{app}:paused_until  end of a quota_exceeded pause (µs), expires then
 *   ccsync:cc:{app}:waiting       ZSET: associations waiting for a grant, scored by
 *                                 the time of their last grant (0 = never served)
 *   ccsync:cc:{app}:seen          ZSET: when each waiting association last asked
 *   ccsync:cc:{app}:served        HASH: association → time of its last grant
 *   ccsync:cc:{app}:by-class:YYYY-MM-DD       HASH: class (1..4) → grants that day
 *   ccsync:cc:{app}:by-association:YYYY-MM-DD HASH: association → grants that day
 *   ccsync:cc:{app}:rate          HASH: t (µs), r1..r4: each class's recent rate,
 *                                 an exponential average (BUDGET_RATE_WINDOW_S)
 *   ccsync:cc:{app}:reconciled    HASH: association → time (s) of its last class-3
 *                                 grant (a reconcile's read of its lists)
 *
 * Fairness: only the head of "waiting" may take the next grant. The queue is
 * ordered by the class of the work (budget.h: changes before first syncs before
 * reconcile before refreshes), then by what the association was granted today,
 * least first (for reconcile, class 3: the least recently reconciled first, as
 * budget_pick does, so a busy association's turn is not pushed back by every
 * idle one's); once served an association leaves the queue and, if it still
 * has work, re-enters by its new count. Equal work thus takes turns, and one
 * association's big first sync cannot starve the others' changes. A waiter
 * that stops asking is dropped after a stale time so that it cannot hold the
 * queue. Past BUDGET_CEILING of the day only class 1 is granted.
 */
#include "ccsync/ratelimit.h"

#include <hiredis/hiredis.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ccsync/budget.h"
#include "ccsync/config.h"
#include "ccsync/keys.h"
#include "ccsync/script.h"
#include "ccsync/store.h"

#define SLEEP_SLICE_NS 100000000LL

/* The UTC date of a Unix second, as YYYY-MM-DD (H. Hinnant's civil_from_days). */
#define LUA_DAY_NAME                                                                               \
    "local function day_name(sec)\n"                                                               \
    "  local z = math.floor(sec / 86400) + 719468\n"                                               \
    "  local era = math.floor(z / 146097)\n"                                                       \
    "  local doe = z - era * 146097\n"                                                             \
    "  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)\n"           \
    "                          - math.floor(doe / 146096)) / 365)\n"                               \
    "  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))\n"              \
    "  local mp = math.floor((5 * doy + 2) / 153)\n"                                               \
    "  local d = doy - math.floor((153 * mp + 2) / 5) + 1\n"                                       \
    "  local m = mp < 10 and mp + 3 or mp - 9\n"                                                   \
    "  local y = yoe + era * 400\n"                                                                \
    "  if m <= 2 then y = y + 1 end\n"                                                             \
    "  return string.format('%04d-%02d-%02d', y, m, d)\n"                                          \
    "end\n"

/*
 * KEYS: bucket, waiting, seen, served, paused_until, rate, reconciled.
 * ARGV: 1 association, 2 interval µs, 3 daily limit, 4 stale µs, 5 day key
 * prefix, 6 class (1..4), 7 reserve (classes above 1 wait once the day's count
 * reaches it), 8 by-class prefix, 9 by-association prefix, 10 rate time
 * constant (s).
 * Returns {0, 0} granted, {1, wait µs} wait, {2, wait µs} quota or paused.
 * Big numbers go back to Redis through string.format: Lua's tostring keeps
 * only 14 digits.
 */
static const char acquire_script[] = LUA_DAY_NAME
    /* the decision */
    "local t = redis.call('TIME')\n"
    "local sec = tonumber(t[1])\n"
    "local now = sec * 1000000 + tonumber(t[2])\n"
    "local assoc, cls = ARGV[1], tonumber(ARGV[6])\n"
    "local interval = tonumber(ARGV[2])\n"
    "local paused = tonumber(redis.call('GET', KEYS[5]) or '0')\n"
    "if paused > now then return {2, paused - now} end\n"
    "local dname = day_name(sec)\n"
    "local day = ARGV[5] .. dname\n"
    "local by_class, by_assoc = ARGV[8] .. dname, ARGV[9] .. dname\n"
    "local used = tonumber(redis.call('GET', day) or '0')\n"
    "if used >= tonumber(ARGV[3]) then\n"
    "  return {2, (math.floor(sec / 86400) + 1) * 86400000000 - now}\n"
    "end\n"
    /* The reserve is class 1's: the others wait without holding the queue. */
    "if cls > 1 and used >= tonumber(ARGV[7]) then\n"
    "  redis.call('ZREM', KEYS[2], assoc)\n"
    "  return {1, 60000000}\n"
    "end\n"
    "local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf',\n"
    "                        '(' .. string.format('%.0f', now - tonumber(ARGV[4])))\n"
    "for _, a in ipairs(gone) do\n"
    "  redis.call('ZREM', KEYS[2], a)\n"
    "  redis.call('ZREM', KEYS[3], a)\n"
    "end\n"
    "redis.call('ZADD', KEYS[3], string.format('%.0f', now), assoc)\n"
    /* In line by class, then by what the association used today; an entry
     * keeps the best class any of its threads asked with. */
    "local mine = tonumber(redis.call('HGET', by_assoc, assoc) or '0')\n"
    "if cls == 3 then mine = tonumber(redis.call('HGET', KEYS[7], assoc) or '0') end\n"
    "redis.call('ZADD', KEYS[2], 'LT', string.format('%.0f', cls * 1e12 + mine), assoc)\n"
    "local free_at = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "if redis.call('ZRANGE', KEYS[2], 0, 0)[1] ~= assoc then\n"
    /* Not our turn: the head takes the next grant, so come back for the one after. */
    "  return {1, math.max(free_at - now, 0) + interval}\n"
    "end\n"
    "if now < free_at then return {1, free_at - now} end\n"
    "redis.call('SET', KEYS[1], string.format('%.0f', now + interval), 'PX',\n"
    "           math.ceil(interval / 1000) + 1000)\n"
    "redis.call('ZREM', KEYS[2], assoc)\n"
    "redis.call('ZREM', KEYS[3], assoc)\n"
    "redis.call('HSET', KEYS[4], assoc, string.format('%.0f', now))\n"
    "redis.call('PEXPIRE', KEYS[4], 86400000)\n"
    "if redis.call('INCR', day) == 1 then redis.call('EXPIRE', day, 172800) end\n"
    "redis.call('HINCRBY', by_class, ARGV[6], 1)\n"
    "redis.call('EXPIRE', by_class, 172800)\n"
    "redis.call('HINCRBY', by_assoc, assoc, 1)\n"
    "if cls == 3 then\n"
    "  redis.call('HSET', KEYS[7], assoc, sec)\n"
    "  redis.call('EXPIRE', KEYS[7], 172800)\n"
    "end\n"
    "redis.call('EXPIRE', by_assoc, 172800)\n"
    /* The recent rate by class: exponential averages with one time constant. */
    "local tau = tonumber(ARGV[10])\n"
    "local r = redis.call('HMGET', KEYS[6], 't', 'r1', 'r2', 'r3', 'r4')\n"
    "local decay = math.exp(-(now - tonumber(r[1] or now)) / (tau * 1000000))\n"
    "local out = {'t', string.format('%.0f', now)}\n"
    "for k = 1, 4 do\n"
    "  local v = tonumber(r[k + 1] or '0') * decay\n"
    "  if k == cls then v = v + 1 / tau end\n"
    "  out[#out + 1] = 'r' .. k\n"
    "  out[#out + 1] = string.format('%.12g', v)\n"
    "end\n"
    "redis.call('HSET', KEYS[6], unpack(out))\n"
    "redis.call('EXPIRE', KEYS[6], 172800)\n"
    "return {0, 0}\n";

/* KEYS: paused_until. Returns the end of the pause (µs) as a string. */
static const char pause_script[] =
    "local t = redis.call('TIME')\n"
    "local sec = tonumber(t[1])\n"
    "local now = sec * 1000000 + tonumber(t[2])\n"
    "local midnight = (math.floor(sec / 86400) + 1) * 86400000000\n"
    "local cur = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "if cur < midnight then\n"
    "  cur = midnight\n"
    "  redis.call('SET', KEYS[1], string.format('%.0f', cur), 'PX',\n"
    "             math.ceil((cur - now) / 1000))\n"
    "end\n"
    "return string.format('%.0f', cur)\n";

/* ARGV: day key prefix. Returns today's count. */
static const char used_script[] = LUA_DAY_NAME
    /* today's count */
    "local t = redis.call('TIME')\n"
    "return tonumber(redis.call('GET', ARGV[1] .. day_name(tonumber(t[1]))) or '0')\n";

/* ARGV: day prefix, by-class prefix, rate key, rate time constant (s).
 * Returns {used, c1..c4, r1..r4 (strings: requests a second now), seconds since
 * 00:00 UTC}. */
static const char snapshot_script[] = LUA_DAY_NAME
    /* today's counts and the decayed rates */
    "local t = redis.call('TIME')\n"
    "local sec = tonumber(t[1])\n"
    "local now = sec * 1000000 + tonumber(t[2])\n"
    "local dname = day_name(sec)\n"
    "local out = {tonumber(redis.call('GET', ARGV[1] .. dname) or '0')}\n"
    "local c = redis.call('HMGET', ARGV[2] .. dname, '1', '2', '3', '4')\n"
    "for k = 1, 4 do out[#out + 1] = tonumber(c[k] or '0') end\n"
    "local r = redis.call('HMGET', ARGV[3], 't', 'r1', 'r2', 'r3', 'r4')\n"
    "local decay = math.exp(-(now - tonumber(r[1] or now)) / (tonumber(ARGV[4]) * 1000000))\n"
    "for k = 1, 4 do\n"
    "  out[#out + 1] = string.format('%.12g', tonumber(r[k + 1] or '0') * decay)\n"
    "end\n"
    "out[#out + 1] = sec % 86400\n"
    "return out\n";

/* ARGV: by-association prefix. Returns today's hash association -> count. */
static const char by_association_script[] = LUA_DAY_NAME
    /* today's per-association counts */
    "local t = redis.call('TIME')\n"
    "return redis.call('HGETALL', ARGV[1] .. day_name(tonumber(t[1])))\n";

static bool app_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == n;
}

void ratelimit_conf_from_config(struct ratelimit_conf *rc, const struct config *cfg)
{
    memset(rc, 0, sizeof *rc);
    rc->rate_per_sec = cfg->cc_rate_per_sec;
    rc->daily_limit = cfg->cc_daily_limit;
    rc->margin_ns = RATELIMIT_DEFAULT_MARGIN_NS;
    /* A key-safe client id names the budget, so two CC applications sharing a
     * Redis keep separate budgets; anything else shares "default". */
    const char *app = app_name_ok(cfg->cc_client_id) ? cfg->cc_client_id : "default";
    memcpy(rc->app, app, strlen(app) + 1); /* at most 65 bytes: app_name_ok */
}

static int64_t interval_us(const struct ratelimit_conf *rc)
{
    double rate = rc->rate_per_sec > 0 ? rc->rate_per_sec : 1;
    return (int64_t)ceil(1e6 / rate) + rc->margin_ns / 1000;
}

enum ratelimit_result ratelimit_acquire(redisContext *c, const struct ratelimit_conf *rc,
                                        const char *association, int64_t *wait_ns)
{
    return ratelimit_acquire_class(c, rc, association, BUDGET_CHANGES, wait_ns);
}

enum ratelimit_result ratelimit_acquire_class(redisContext *c, const struct ratelimit_conf *rc,
                                              const char *association, enum budget_class cls,
                                              int64_t *wait_ns)
{
    char interval[32], limit[32], stale[32], klass[16], reserve[32], tau[32];
    struct key k_bucket = key_budget(rc->app, "bucket");
    struct key k_waiting = key_budget(rc->app, "waiting");
    struct key k_seen = key_budget(rc->app, "seen");
    struct key k_served = key_budget(rc->app, "served");
    struct key k_paused = key_budget(rc->app, "paused_until");
    struct key k_rate = key_budget(rc->app, "rate");
    struct key k_reconciled = key_budget(rc->app, "reconciled");
    struct key day_prefix = key_budget(rc->app, "day:");
    struct key class_prefix = key_budget(rc->app, "by-class:");
    struct key assoc_prefix = key_budget(rc->app, "by-association:");
    int64_t iv = interval_us(rc);
    int64_t stale_us =
        4 * iv > RATELIMIT_MIN_STALE_NS / 1000 ? 4 * iv : RATELIMIT_MIN_STALE_NS / 1000;
    snprintf(interval, sizeof interval, "%lld", (long long)iv);
    snprintf(limit, sizeof limit, "%ld", rc->daily_limit);
    snprintf(stale, sizeof stale, "%lld", (long long)stale_us);
    snprintf(klass, sizeof klass, "%d", (int)cls + 1);
    snprintf(reserve, sizeof reserve, "%ld", (long)floor((double)rc->daily_limit * BUDGET_CEILING));
    snprintf(tau, sizeof tau, "%.0f", BUDGET_RATE_WINDOW_S);
    const char *args[] = {
        k_bucket.s,     k_waiting.s, k_seen.s,       k_served.s,     k_paused.s, k_rate.s,
        k_reconciled.s, association, interval,       limit,          stale,      day_prefix.s,
        klass,          reserve,     class_prefix.s, assoc_prefix.s, tau};

    *wait_ns = 0;
    redisReply *r = script_eval(c, acquire_script, 7, 17, args);
    if (!store_reply_ok(c, r) || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_INTEGER || r->element[1]->type != REDIS_REPLY_INTEGER) {
        freeReplyObject(r);
        return RATELIMIT_ERROR;
    }
    long long code = r->element[0]->integer;
    *wait_ns = (int64_t)r->element[1]->integer * 1000;
    freeReplyObject(r);
    if (code == 0)
        return RATELIMIT_GRANTED;
    return code == 1 ? RATELIMIT_WAIT : RATELIMIT_QUOTA;
}

enum ratelimit_result ratelimit_wait(redisContext *c, const struct ratelimit_conf *rc,
                                     const char *association, const atomic_bool *stop,
                                     int64_t *wait_ns)
{
    int64_t wait = 0;
    enum ratelimit_result res;
    for (;;) {
        if (stop && atomic_load(stop)) {
            res = RATELIMIT_STOPPED;
            break;
        }
        res = ratelimit_acquire(c, rc, association, &wait);
        if (res != RATELIMIT_WAIT)
            break;
        while (wait > 0 && !(stop && atomic_load(stop))) {
            int64_t slice = wait < SLEEP_SLICE_NS ? wait : SLEEP_SLICE_NS;
            struct timespec ts = {(time_t)(slice / 1000000000LL), (long)(slice % 1000000000LL)};
            nanosleep(&ts, NULL);
            wait -= slice;
        }
    }
    if (wait_ns)
        *wait_ns = res == RATELIMIT_QUOTA ? wait : 0;
    return res;
}

int ratelimit_pause_until_midnight(redisContext *c, const struct ratelimit_conf *rc,
                                   int64_t *until_ns)
{
    struct key k_paused = key_budget(rc->app, "paused_until");
    const char *args[] = {k_paused.s};
    redisReply *r = script_eval(c, pause_script, 1, 1, args);
    if (!store_reply_ok(c, r) || r->type != REDIS_REPLY_STRING) {
        freeReplyObject(r);
        return STORE_ERR;
    }
    if (until_ns)
        *until_ns = strtoll(r->str, NULL, 10) * 1000;
    freeReplyObject(r);
    return STORE_OK;
}

int ratelimit_paused_until(redisContext *c, const struct ratelimit_conf *rc, int64_t *until_ns)
{
    struct key k_paused = key_budget(rc->app, "paused_until");
    redisReply *r = redisCommand(c, "GET %s", k_paused.s);
    if (!store_reply_ok(c, r) || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL)) {
        freeReplyObject(r);
        return STORE_ERR;
    }
    /* The key expires when the pause ends, so a present value is in the future. */
    *until_ns = r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) * 1000 : 0;
    freeReplyObject(r);
    return STORE_OK;
}

int ratelimit_used_today(redisContext *c, const struct ratelimit_conf *rc, long *used)
{
    struct key day_prefix = key_budget(rc->app, "day:");
    const char *args[] = {day_prefix.s};
    redisReply *r = script_eval(c, used_script, 0, 1, args);
    if (!store_reply_ok(c, r) || r->type != REDIS_REPLY_INTEGER) {
        freeReplyObject(r);
        return STORE_ERR;
    }
    *used = (long)r->integer;
    freeReplyObject(r);
    return STORE_OK;
}

static long reply_long(const redisReply *r)
{
    if (r->type == REDIS_REPLY_INTEGER)
        return (long)r->integer;
    return r->type == REDIS_REPLY_STRING ? strtol(r->str, NULL, 10) : 0;
}

int ratelimit_snapshot(redisContext *c, const struct ratelimit_conf *rc,
                       struct ratelimit_snapshot *s)
{
    struct key day_prefix = key_budget(rc->app, "day:");
    struct key class_prefix = key_budget(rc->app, "by-class:");
    struct key k_rate = key_budget(rc->app, "rate");
    char tau[32];
    snprintf(tau, sizeof tau, "%.0f", BUDGET_RATE_WINDOW_S);
    const char *args[] = {day_prefix.s, class_prefix.s, k_rate.s, tau};
    redisReply *r = script_eval(c, snapshot_script, 0, 4, args);
    if (!store_reply_ok(c, r) || r->type != REDIS_REPLY_ARRAY || r->elements != 10) {
        freeReplyObject(r);
        return STORE_ERR;
    }
    memset(s, 0, sizeof *s);
    s->used = reply_long(r->element[0]);
    for (int k = 0; k < BUDGET_CLASSES; k++) {
        s->used_by_class[k] = reply_long(r->element[1 + k]);
        s->rate_by_class[k] = r->element[5 + k]->type == REDIS_REPLY_STRING
                                  ? strtod(r->element[5 + k]->str, NULL)
                                  : 0;
    }
    s->now_s = reply_long(r->element[9]);
    freeReplyObject(r);
    return STORE_OK;
}

void ratelimit_budget_day(const struct ratelimit_snapshot *s, long daily_limit, double share,
                          struct budget_day *d)
{
    memset(d, 0, sizeof *d);
    d->limit = daily_limit > 0 ? daily_limit : 1;
    d->used = s->used;
    d->now_s = s->now_s;
    d->reconcile_share = share;
    for (int k = 0; k < BUDGET_CLASSES; k++) {
        d->used_by_class[k] = s->used_by_class[k];
        d->recent_rate += s->rate_by_class[k];
    }
    d->one_off_rate = s->rate_by_class[BUDGET_FULL_SYNC] + s->rate_by_class[BUDGET_REFRESH];
}

int ratelimit_by_association(redisContext *c, const struct ratelimit_conf *rc,
                             struct redisReply **pairs)
{
    struct key assoc_prefix = key_budget(rc->app, "by-association:");
    const char *args[] = {assoc_prefix.s};
    redisReply *r = script_eval(c, by_association_script, 0, 1, args);
    if (!store_reply_ok(c, r) || r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        return STORE_ERR;
    }
    *pairs = r;
    return STORE_OK;
}
