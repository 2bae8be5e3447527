/*
 * schedule.c - the per-association sync schedule and the global index of due
 * associations (see schedule.h for the keys and the rule that keeps wake-ups).
 *
 * Scripts here get KEYS[1] = key_dirty(A) and A's key prefix, and build A's
 * other keys from the prefix and the KEY_* suffixes; a lease key is the
 * lease builder's spelling for the association (key_lease(A, "")) followed by
 * the group id. KEY_DUE and KEY_RETRYING are global, so they are only ever
 * written by plain commands after a script.
 */
#include "ccsync/schedule.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccsync/keys.h"
#include "ccsync/script.h"
#include "ccsync/store.h"

/* How many due entries of one association a claim looks at. */
#define CLAIM_SCAN 200

/*
 * KEYS[1] key_dirty(A). ARGV: prefix, lease prefix, now ms, lease ms, token,
 * max, scan, quiet cap ms. Returns {A's earliest due or nil, group, gen, group,
 * gen, ...}.
 *
 * A burst of changes that is still arriving (the group's last change asked for
 * a due after now: last_due, written by the folds) holds the group back until
 * it is quiet, but no longer than the cap after it was first held (first_due),
 * so a round sends a burst once instead of in every pass that catches part of
 * it.
 */
static const char claim_script[] = SCHEDULE_LUA_EARLIEST
    "local dirty, p, lp, now = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])\n"
    "local lease, token, max = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])\n"
    "local cap = tonumber(ARGV[8])\n"
    "local out = {false}\n"
    "local function held(g)\n"
    "  local gk = p .. '" KEY_GROUP "' .. g\n"
    "  local last = tonumber(redis.call('HGET', gk, 'last_due') or '0')\n"
    "  if cap <= 0 or last <= now then return false end\n"
    "  local first = tonumber(redis.call('HGET', gk, 'first_due') or '0')\n"
    "  if first == 0 then\n"
    "    first = now\n"
    "    redis.call('HSET', gk, 'first_due', string.format('%.0f', now))\n"
    "  end\n"
    "  if now - first >= cap then return false end\n"
    "  redis.call('ZADD', dirty, math.min(last, first + cap), g)\n"
    "  return true\n"
    "end\n"
    "local due = redis.call('ZRANGEBYSCORE', dirty, '-inf', now, 'LIMIT', 0, tonumber(ARGV[7]))\n"
    "for _, g in ipairs(due) do\n"
    "  if #out >= 1 + 2 * max then break end\n"
    "  if held(g) then\n"
    "  elseif redis.call('SET', lp .. g, token, 'NX', 'PX', lease) then\n"
    "    redis.call('HDEL', p .. '" KEY_GROUP "' .. g, 'first_due')\n"
    "    redis.call('ZADD', dirty, now + lease, g)\n"
    "    out[#out + 1] = g\n"
    "    out[#out + 1] = redis.call('HGET', p .. '" KEY_GROUP "' .. g, 'gen') or '0'\n"
    "  else\n"
    "    local left = redis.call('PTTL', lp .. g)\n"
    "    if left > 0 then redis.call('ZADD', dirty, now + left, g) end\n"
    "  end\n"
    "end\n"
    "out[1] = earliest(p)\n"
    "return out\n";

/* KEYS[1] key_dirty(A). ARGV: prefix, group, done|retry, gen when claimed, due ms.
 * Returns A's earliest due or nil. */
static const char finish_script[] = SCHEDULE_LUA_EARLIEST
    "local dirty, p, g = KEYS[1], ARGV[1], ARGV[2]\n"
    "if ARGV[6] and redis.call('GET', p .. '" KEY_LEASE "' .. g) ~= ARGV[6] then\n"
    "  return redis.error_reply('FENCED the group lease is held by another worker')\n"
    "end\n"
    "local gen = redis.call('HGET', p .. '" KEY_GROUP "' .. g, 'gen') or '0'\n"
    "if ARGV[3] == 'done' and gen == ARGV[4] then redis.call('ZREM', dirty, g)\n"
    "else redis.call('ZADD', dirty, ARGV[5], g) end\n"
    "return earliest(p)\n";

int64_t schedule_parse_due(const redisReply *r)
{
    if (!r || r->type != REDIS_REPLY_STRING)
        return SCHEDULE_NONE;
    return strtoll(r->str, NULL, 10);
}

int schedule_append_wake(redisContext *c, const char *association, int64_t due_ms)
{
    if (due_ms == SCHEDULE_NONE)
        return 0;
    redisAppendCommand(c, "ZADD %s LT %lld %s", KEY_DUE, (long long)due_ms, association);
    return 1;
}

int schedule_wake(redisContext *c, const char *association, int64_t due_ms)
{
    return store_drain(c, (size_t)schedule_append_wake(c, association, due_ms));
}

int schedule_settle(redisContext *c, const char *association, int64_t due_ms)
{
    if (due_ms == SCHEDULE_NONE)
        redisAppendCommand(c, "ZREM %s %s", KEY_DUE, association);
    else
        redisAppendCommand(c, "ZADD %s %lld %s", KEY_DUE, (long long)due_ms, association);
    redisAppendCommand(c, "ZRANGE %s 0 0 WITHSCORES", key_dirty(association).s);
    redisReply *set = NULL, *r = NULL;
    if (redisGetReply(c, (void **)&set) == REDIS_OK)
        redisGetReply(c, (void **)&r);
    bool ok = store_reply_ok(c, set) && store_reply_ok(c, r) && r->type == REDIS_REPLY_ARRAY;
    freeReplyObject(set);
    if (!ok) {
        freeReplyObject(r);
        return STORE_ERR;
    }
    int64_t now_earliest = r->elements == 2 ? schedule_parse_due(r->element[1]) : SCHEDULE_NONE;
    freeReplyObject(r);
    if (now_earliest >= due_ms)
        return STORE_OK;
    return schedule_wake(c, association, now_earliest);
}

int schedule_due_associations(redisContext *c, int64_t now_ms, char (*out)[CCSYNC_ASSOC_ID_MAX + 1],
                              size_t max, size_t *n)
{
    *n = 0;
    redisReply *r = store_command(c, "ZRANGEBYSCORE %s -inf %lld LIMIT 0 %d", KEY_DUE,
                                  (long long)now_ms, (int)max);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        return STORE_ERR;
    }
    for (size_t i = 0; i < r->elements && *n < max; i++) {
        const redisReply *a = r->element[i];
        if (a->type == REDIS_REPLY_STRING && a->len <= CCSYNC_ASSOC_ID_MAX)
            memcpy(out[(*n)++], a->str, a->len + 1);
    }
    freeReplyObject(r);
    return STORE_OK;
}

/* Copies the claimed groups of a claim script's reply; a group id too long to
 * be one of ours leaves the schedule and its lease is dropped. */
static void take_claimed(redisContext *c, const char *association, const redisReply *r,
                         struct schedule_claim *out, size_t max, size_t *n)
{
    for (size_t i = 1; i + 1 < r->elements && *n < max; i += 2) {
        const redisReply *g = r->element[i], *gen = r->element[i + 1];
        if (g->type != REDIS_REPLY_STRING)
            continue;
        if (g->len > CCSYNC_ID_MAX) {
            store_exec(c, "ZREM %s %s", key_dirty(association).s, g->str);
            store_exec(c, "DEL %s", key_lease(association, g->str).s);
            continue;
        }
        struct schedule_claim *e = &out[(*n)++];
        memcpy(e->group, g->str, g->len + 1);
        snprintf(e->gen, sizeof e->gen, "%s", gen->type == REDIS_REPLY_STRING ? gen->str : "0");
    }
}

int schedule_claim(redisContext *c, const char *association, int64_t now_ms, int lease_ms,
                   const char *token, struct schedule_claim *out, size_t max, size_t *n)
{
    return schedule_claim_quiet(c, association, now_ms, lease_ms, 0, token, out, max, n);
}

int schedule_claim_quiet(redisContext *c, const char *association, int64_t now_ms, int lease_ms,
                         int64_t quiet_cap_ms, const char *token, struct schedule_claim *out,
                         size_t max, size_t *n)
{
    char now[32], lease[16], most[16], scan[16], cap[32];
    snprintf(now, sizeof now, "%lld", (long long)now_ms);
    snprintf(lease, sizeof lease, "%d", lease_ms);
    snprintf(most, sizeof most, "%zu", max);
    snprintf(scan, sizeof scan, "%d", CLAIM_SCAN);
    snprintf(cap, sizeof cap, "%lld", (long long)quiet_cap_ms);
    struct key dirty = key_dirty(association), prefix = key_prefix(association),
               leases = key_lease(association, "");
    const char *args[] = {dirty.s, prefix.s, leases.s, now, lease, token, most, scan, cap};
    *n = 0;
    redisReply *r = script_eval(c, claim_script, 1, 9, args);
    if (!store_reply_ok(c, r) || r->type != REDIS_REPLY_ARRAY || r->elements < 1) {
        freeReplyObject(r);
        return STORE_ERR;
    }
    int64_t earliest = schedule_parse_due(r->element[0]);
    take_claimed(c, association, r, out, max, n);
    freeReplyObject(r);
    return schedule_settle(c, association, earliest);
}

int schedule_finish(redisContext *c, const char *association, const char *group, const char *gen,
                    bool done, int64_t due_ms, int64_t *earliest)
{
    return schedule_finish_fenced(c, association, group, gen, NULL, done, due_ms, earliest);
}

int schedule_finish_fenced(redisContext *c, const char *association, const char *group,
                           const char *gen, const char *fence, bool done, int64_t due_ms,
                           int64_t *earliest)
{
    char due[32];
    snprintf(due, sizeof due, "%lld", (long long)due_ms);
    struct key dirty = key_dirty(association), prefix = key_prefix(association),
               member = key_schedule_member(association, group);
    const char *args[] = {dirty.s, prefix.s, group, done ? "done" : "retry", gen, due, fence};
    redisReply *r = script_eval(c, finish_script, 1, fence ? 7 : 6, args);
    if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "FENCED", 6) == 0) {
        freeReplyObject(r);
        return SCHEDULE_FENCED; /* the next holder finishes it */
    }
    /* after the script: a fenced finish leaves the global set alone too */
    if (store_exec(c, "%s %s %s", done ? "SREM" : "SADD", KEY_RETRYING, member.s) != STORE_OK) {
        freeReplyObject(r);
        return STORE_ERR;
    }
    if (!store_reply_ok(c, r)) {
        freeReplyObject(r);
        return STORE_ERR;
    }
    *earliest = schedule_parse_due(r);
    freeReplyObject(r);
    return STORE_OK;
}

int schedule_requeue(redisContext *c, const char *association, const char *group, int64_t due_ms)
{
    redisAppendCommand(c, "ZADD %s XX %lld %s", key_dirty(association).s, (long long)due_ms, group);
    int n = 1 + schedule_append_wake(c, association, due_ms);
    return store_drain(c, (size_t)n);
}

int schedule_queued(redisContext *c, const char *association, const char *group, bool *queued)
{
    redisReply *r = store_command(c, "ZSCORE %s %s", key_dirty(association).s, group);
    *queued = r && r->type == REDIS_REPLY_STRING;
    bool r_ok = r != NULL;
    freeReplyObject(r);
    return r_ok ? STORE_OK : STORE_ERR;
}

/* Sends one command per association (fmt takes the association's dirty key)
 * and returns the replies in order, NULL when Redis failed. Caller frees. */
static redisReply **per_association(redisContext *c, const redisReply *ids, const char *fmt)
{
    redisReply **out = calloc(ids->elements + 1, sizeof *out);
    if (!out)
        return NULL;
    for (size_t i = 0; i < ids->elements; i++)
        redisAppendCommand(c, fmt, key_dirty(ids->element[i]->str).s);
    bool ok = true;
    for (size_t i = 0; i < ids->elements && c->err == 0; i++)
        ok = redisGetReply(c, (void **)&out[i]) == REDIS_OK && store_reply_ok(c, out[i]) && ok;
    ok = ok && c->err == 0;
    if (ok)
        return out;
    for (size_t i = 0; i < ids->elements; i++)
        freeReplyObject(out[i]);
    free(out);
    return NULL;
}

static void free_replies(redisReply **replies, size_t n)
{
    for (size_t i = 0; replies && i < n; i++)
        freeReplyObject(replies[i]);
    free(replies);
}

int schedule_waiting(redisContext *c, long long *n)
{
    *n = 0;
    redisReply *ids = store_command(c, "SMEMBERS %s", KEY_ASSOCIATIONS);
    if (!ids)
        return STORE_ERR;
    redisReply **counts = per_association(c, ids, "ZCARD %s");
    for (size_t i = 0; counts && i < ids->elements; i++)
        *n += counts[i]->type == REDIS_REPLY_INTEGER ? counts[i]->integer : 0;
    int rc = counts ? STORE_OK : STORE_ERR;
    free_replies(counts, ids->elements);
    freeReplyObject(ids);
    return rc;
}

int schedule_repair(redisContext *c)
{
    redisReply *ids = store_command(c, "SMEMBERS %s", KEY_ASSOCIATIONS);
    if (!ids)
        return STORE_ERR;
    redisReply **firsts = per_association(c, ids, "ZRANGE %s 0 0 WITHSCORES");
    size_t sent = 0;
    for (size_t i = 0; firsts && i < ids->elements; i++) {
        const redisReply *f = firsts[i];
        if (f->type == REDIS_REPLY_ARRAY && f->elements == 2)
            sent += (size_t)schedule_append_wake(c, ids->element[i]->str,
                                                 schedule_parse_due(f->element[1]));
    }
    int rc = firsts ? store_drain(c, sent) : STORE_ERR;
    free_replies(firsts, ids->elements);
    freeReplyObject(ids);
    return rc;
}
