/*
 * queue.c - Redis Streams for the workers (see queue.h).
 *
 * An entry is acknowledged and deleted only after its facts are stored, so a
 * worker that dies mid-event leaves it pending; another worker reclaims it with
 * XAUTOCLAIM once it has been idle for QUEUE_RECLAIM_IDLE_MS. Folding is
 * idempotent, so an event applied twice changes nothing.
 */
#include "ccsync/queue.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccsync/keys.h"
#include "ccsync/script.h"
#include "ccsync/store.h"

int queue_ensure_group(redisContext *c)
{
    redisReply *r = redisCommand(c, "XGROUP CREATE %s %s 0 MKSTREAM", KEY_EVENTS, QUEUE_GROUP);
    /* BUSYGROUP: it exists already */
    bool ok =
        r && c->err == 0 && (r->type != REDIS_REPLY_ERROR || strncmp(r->str, "BUSYGROUP", 9) == 0);
    freeReplyObject(r);
    return ok ? STORE_OK : STORE_ERR;
}

static void fill_entry(const redisReply *item, struct queue_entry *e)
{
    memset(e, 0, sizeof *e);
    snprintf(e->id, sizeof e->id, "%s", item->element[0]->str);
    const redisReply *fields = item->element[1];
    if (fields->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t i = 0; i + 1 < fields->elements; i += 2) {
        const char *k = fields->element[i]->str;
        const redisReply *v = fields->element[i + 1];
        if (strcmp(k, "assoc") == 0)
            e->association = v->str;
        else if (strcmp(k, "id") == 0)
            e->webhook_id = v->str;
        else if (strcmp(k, "type") == 0)
            e->type = v->str;
        else if (strcmp(k, "ts") == 0)
            e->ts = v->str;
        else if (strcmp(k, "body") == 0) {
            e->body = v->str;
            e->body_len = v->len;
        } else if (strcmp(k, "body_key") == 0)
            e->body_key = v->str;
        else if (strcmp(k, "body_bytes") == 0)
            e->body_bytes = (size_t)strtoull(v->str, NULL, 10);
    }
}

static void collect(const redisReply *list, struct queue_entry *entries, size_t max, size_t *n)
{
    for (size_t i = 0; i < list->elements && *n < max; i++) {
        const redisReply *item = list->element[i];
        /* a deleted entry still pending comes back with nil fields */
        if (item->type != REDIS_REPLY_ARRAY || item->elements != 2 ||
            item->element[1]->type != REDIS_REPLY_ARRAY)
            continue;
        fill_entry(item, &entries[(*n)++]);
    }
}

redisReply *queue_read(redisContext *c, const char *consumer, bool reclaim, int block_ms,
                       struct queue_entry *entries, size_t max, size_t *n)
{
    *n = 0;
    redisReply *r;
    if (reclaim)
        r = store_command(c, "XAUTOCLAIM %s %s %s %d 0-0 COUNT %d", KEY_EVENTS, QUEUE_GROUP,
                          consumer, QUEUE_RECLAIM_IDLE_MS, (int)max);
    else
        r = store_command(c, "XREADGROUP GROUP %s %s COUNT %d BLOCK %d STREAMS %s >", QUEUE_GROUP,
                          consumer, (int)max, block_ms, KEY_EVENTS);
    if (!r)
        return NULL;
    if (reclaim) {
        if (r->type == REDIS_REPLY_ARRAY && r->elements >= 2 &&
            r->element[1]->type == REDIS_REPLY_ARRAY)
            collect(r->element[1], entries, max, n);
    } else if (r->type == REDIS_REPLY_ARRAY && r->elements == 1) {
        const redisReply *stream = r->element[0];
        if (stream->type == REDIS_REPLY_ARRAY && stream->elements == 2)
            collect(stream->element[1], entries, max, n);
    }
    return r;
}

long queue_deliveries(redisContext *c, const char *id)
{
    redisReply *r = store_command(c, "XPENDING %s %s %s %s 1", KEY_EVENTS, QUEUE_GROUP, id, id);
    long n = 0;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
        r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements == 4)
        n = (long)r->element[0]->element[3]->integer;
    freeReplyObject(r);
    return n;
}

int queue_touch(redisContext *c, const char *consumer, const char *id)
{
    return store_exec(c, "XCLAIM %s %s %s 0 %s JUSTID", KEY_EVENTS, QUEUE_GROUP, consumer, id);
}

int queue_ack(redisContext *c, const char *id)
{
    redisAppendCommand(c, "XACK %s %s %s", KEY_EVENTS, QUEUE_GROUP, id);
    redisAppendCommand(c, "XDEL %s %s", KEY_EVENTS, id);
    return store_drain(c, 2);
}

int queue_ack_many(redisContext *c, const char *const *ids, size_t n)
{
    if (n == 0)
        return STORE_OK;
    const char **argv = malloc((n + 3) * sizeof *argv);
    if (!argv)
        return STORE_ERR;
    argv[0] = "XACK";
    argv[1] = KEY_EVENTS;
    argv[2] = QUEUE_GROUP;
    for (size_t i = 0; i < n; i++)
        argv[3 + i] = ids[i];
    redisAppendCommandArgv(c, (int)(n + 3), argv, NULL);
    argv[1] = "XDEL";
    argv[2] = KEY_EVENTS;
    redisAppendCommandArgv(c, (int)(n + 2), argv + 1, NULL);
    free(argv);
    return store_drain(c, 2);
}

/* KEYS 1 events, 2 dead letters, 3 the body's key. ARGV 1 original id, 2 assoc,
 * 3 webhook id, 4 type, 5 ts, 6 body, 7 reason, 8 oldest id kept (MINID), 9 the
 * body's time to live (s), 10 most entries kept, 11 the staging key of a staged
 * body (staged.h), deleted with it, or "". The body is kept apart from the
 * entry, so a listing reads a bounded part of it; the stream is trimmed by age
 * and by count at each addition (approximately: whole nodes at a time). A
 * staged body is written here whole, in one command: it was read and parsed,
 * so only a fold that failed QUEUE_MAX_DELIVERIES times brings it here. */
static const char dead_script[] =
    "redis.call('XADD', KEYS[2], 'MINID', '~', ARGV[8], '*', 'assoc', ARGV[2], 'id', ARGV[3], "
    "'type', ARGV[4], 'ts', ARGV[5], 'body_bytes', tostring(#ARGV[6]), 'reason', ARGV[7], "
    "'original_id', ARGV[1])\n"
    "redis.call('XTRIM', KEYS[2], 'MAXLEN', '~', ARGV[10])\n"
    "redis.call('SET', KEYS[3], ARGV[6], 'EX', ARGV[9])\n"
    "if ARGV[11] ~= '' then redis.call('DEL', ARGV[11]) end\n"
    "redis.call('XACK', KEYS[1], '" QUEUE_GROUP "', ARGV[1])\n"
    "redis.call('XDEL', KEYS[1], ARGV[1])\n"
    "return 1\n";

int queue_dead_letter(redisContext *c, const struct queue_entry *e, const char *reason,
                      int retention_days)
{
    char minid[32], ttl[24], max[24];
    int64_t keep_ms = (int64_t)retention_days * 86400 * 1000;
    snprintf(minid, sizeof minid, "%lld-0", (long long)(store_now_ns() / 1000000 - keep_ms));
    snprintf(ttl, sizeof ttl, "%lld", (long long)retention_days * 86400);
    snprintf(max, sizeof max, "%d", QUEUE_DEAD_LETTERS_MAX);
    struct key body_key = key_dead_body(e->id);
    const char *args[] = {KEY_EVENTS,
                          KEY_DEAD_LETTERS,
                          body_key.s,
                          e->id,
                          e->association ? e->association : "",
                          e->webhook_id ? e->webhook_id : "",
                          e->type ? e->type : "",
                          e->ts ? e->ts : "",
                          e->body ? e->body : "",
                          reason,
                          minid,
                          ttl,
                          max,
                          e->body_key ? e->body_key : ""};
    size_t lens[14];
    for (int i = 0; i < 14; i++)
        lens[i] = strlen(args[i]);
    lens[8] = e->body ? e->body_len : 0;
    redisReply *r = script_eval_len(c, dead_script, 3, 14, args, lens);
    int rc = store_reply_ok(c, r) ? STORE_OK : STORE_ERR;
    freeReplyObject(r);
    return rc;
}

/* The entry's body is inline (a dead letter of an earlier release) or in its
 * own key; a body that expired leaves nothing to redrive (0). */
static const char redrive_script[] =
    "local e = redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[1])\n"
    "if #e == 0 then return 0 end\n"
    "local f = e[1][2]\n"
    "local m = {}\n"
    "for i = 1, #f, 2 do m[f[i]] = f[i + 1] end\n"
    "local body, bkey = m['body'], nil\n"
    "if not body then\n"
    "  bkey = '" KEY_DEAD_BODY "' .. (m['original_id'] or '')\n"
    "  body = redis.call('GET', bkey)\n"
    "  if not body then return 0 end\n"
    "end\n"
    "redis.call('XADD', KEYS[1], '*', 'assoc', m['assoc'], 'id', m['id'], 'type', m['type'], "
    "'ts', m['ts'], 'body', body)\n"
    "redis.call('XDEL', KEYS[2], ARGV[1])\n"
    "if bkey then redis.call('DEL', bkey) end\n"
    "return 1\n";

int queue_redrive(redisContext *c, const char *dead_id)
{
    const char *args[] = {KEY_EVENTS, KEY_DEAD_LETTERS, dead_id};
    redisReply *r = script_eval(c, redrive_script, 2, 3, args);
    int rc = STORE_ERR;
    if (store_reply_ok(c, r) && r->type == REDIS_REPLY_INTEGER)
        rc = (int)r->integer;
    else if (r && r->type == REDIS_REPLY_ERROR && strstr(r->str, "Invalid stream ID"))
        rc = 0;
    freeReplyObject(r);
    return rc;
}
