/*
 * retention.c - deletes what ccsync keeps only CCSYNC_RETENTION_DAYS (see
 * retention.h). main.c runs a sweep at start and then every
 * RETENTION_INTERVAL; each step is one short command or script, so a backlog
 * of any size never holds Redis for long.
 */
#include "ccsync/retention.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>

#include "ccsync/keys.h"
#include "ccsync/script.h"
#include "ccsync/store.h"

/* KEYS 1 the association's removed-members zset. ARGV 1 the association's
 * prefix, 2 cutoff (ms), 3 batch. A member who joined a group again keeps
 * the record (the member fold also takes it out of the zset then). The
 * member's history (its events, with their ids and times) goes with the record. */
static const char purge_script[] =
    "local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])\n"
    "local n = 0\n"
    "for _, m in ipairs(ids) do\n"
    "  if redis.call('SCARD', ARGV[1] .. '" KEY_MEMBER_GROUPS "' .. m) == 0 then\n"
    "    n = n + redis.call('HDEL', ARGV[1] .. '" KEY_MEMBER "' .. m, 'rec')\n"
    "    redis.call('DEL', ARGV[1] .. '" KEY_MEMBER_EVENTS "' .. m)\n"
    "  end\n"
    "  redis.call('ZREM', KEYS[1], m)\n"
    "end\n"
    "return {#ids, n}\n";

/* One association's removed members past the cutoff; records deleted or -1. */
static long purge_association(redisContext *c, const char *association, int64_t cutoff_ms)
{
    char cutoff[32], batch[16];
    snprintf(cutoff, sizeof cutoff, "%lld", (long long)cutoff_ms);
    snprintf(batch, sizeof batch, "%d", RETENTION_BATCH);
    struct key removed = key_removed(association), prefix = key_prefix(association);
    long deleted = 0;
    for (;;) {
        const char *args[] = {removed.s, prefix.s, cutoff, batch};
        redisReply *r = script_eval(c, purge_script, 1, 4, args);
        bool ok = store_reply_ok(c, r) && r->type == REDIS_REPLY_ARRAY && r->elements == 2;
        long long seen = ok ? r->element[0]->integer : 0;
        deleted += ok ? (long)r->element[1]->integer : 0;
        freeReplyObject(r);
        if (!ok)
            return -1;
        if (seen < RETENTION_BATCH)
            return deleted;
    }
}

long retention_sweep(redisContext *c, int retention_days, int64_t now_ms)
{
    int64_t cutoff = now_ms - (int64_t)retention_days * 86400 * 1000;
    /* "~" drops whole nodes cheaply, however many; the exact trim then only
     * walks what is left of the oldest node. */
    if (store_exec(c, "XTRIM %s MINID ~ %lld-0", KEY_DEAD_LETTERS, (long long)cutoff) != STORE_OK ||
        store_exec(c, "XTRIM %s MINID %lld-0", KEY_DEAD_LETTERS, (long long)cutoff) != STORE_OK)
        return -1;
    redisReply *ids = store_command(c, "SMEMBERS %s", KEY_ASSOCIATIONS);
    if (!ids || ids->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(ids);
        return -1;
    }
    long deleted = 0;
    for (size_t i = 0; i < ids->elements && deleted >= 0; i++) {
        long n = purge_association(c, ids->element[i]->str, cutoff);
        deleted = n < 0 ? -1 : deleted + n;
    }
    freeReplyObject(ids);
    return deleted;
}
