/*
 * queue.c - Redis Streams for the workers (see queue.h): reading an
 * association's stream (or the legacy one) through its consumer group,
 * acknowledging, dead letters and their redrive. Whose turn it is to be read
 * is queue_turns.c's.
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
#include "ccsync/model.h"
#include "ccsync/script.h"
#include "ccsync/store.h"

int queue_ensure_group(redisContext *c, const char *stream)
{
    redisReply *r = redisCommand(c, "XGROUP CREATE %s %s 0 MKSTREAM", stream, QUEUE_GROUP);
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

static redisReply *read_command(redisContext *c, const char *stream, const char *consumer,
                                bool reclaim, int block_ms, size_t max)
{
    if (reclaim)
        return redisCommand(c, "XAUTOCLAIM %s %s %s %d 0-0 COUNT %d", stream, QUEUE_GROUP, consumer,
                            QUEUE_RECLAIM_IDLE_MS, (int)max);
    if (block_ms > 0)
        return redisCommand(c, "XREADGROUP GROUP %s %s COUNT %d BLOCK %d STREAMS %s >", QUEUE_GROUP,
                            consumer, (int)max, block_ms, stream);
    return redisCommand(c, "XREADGROUP GROUP %s %s COUNT %d STREAMS %s >", QUEUE_GROUP, consumer,
                        (int)max, stream);
}

/* The read, once more after creating the consumer group when the stream had
 * none (an association's first events, a stream deleted by hand). */
static redisReply *read_with_group(redisContext *c, const char *stream, const char *consumer,
                                   bool reclaim, int block_ms, size_t max)
{
    redisReply *r = read_command(c, stream, consumer, reclaim, block_ms, max);
    if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOGROUP", 7) == 0) {
        freeReplyObject(r);
        if (queue_ensure_group(c, stream) != STORE_OK)
            return NULL;
        r = read_command(c, stream, consumer, reclaim, block_ms, max);
    }
    if (!store_reply_ok(c, r)) {
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

redisReply *queue_read(redisContext *c, const char *stream, const char *consumer, bool reclaim,
                       int block_ms, struct queue_entry *entries, size_t max, size_t *n)
{
    *n = 0;
    redisReply *r = read_with_group(c, stream, consumer, reclaim, block_ms, max);
    if (!r)
        return NULL;
    if (reclaim) {
        if (r->type == REDIS_REPLY_ARRAY && r->elements >= 2 &&
            r->element[1]->type == REDIS_REPLY_ARRAY)
            collect(r->element[1], entries, max, n);
    } else if (r->type == REDIS_REPLY_ARRAY && r->elements == 1) {
        const redisReply *s = r->element[0];
        if (s->type == REDIS_REPLY_ARRAY && s->elements == 2)
            collect(s->element[1], entries, max, n);
    }
    return r;
}

long queue_deliveries(redisContext *c, const char *stream, const char *id)
{
    redisReply *r = store_command(c, "XPENDING %s %s %s %s 1", stream, QUEUE_GROUP, id, id);
    long n = 0;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
        r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements == 4)
        n = (long)r->element[0]->element[3]->integer;
    freeReplyObject(r);
    return n;
}

int queue_touch(redisContext *c, const char *stream, const char *consumer, const char *id)
{
    return store_exec(c, "XCLAIM %s %s %s 0 %s JUSTID", stream, QUEUE_GROUP, consumer, id);
}

int queue_ack(redisContext *c, const char *stream, const char *id)
{
    redisAppendCommand(c, "XACK %s %s %s", stream, QUEUE_GROUP, id);
    redisAppendCommand(c, "XDEL %s %s", stream, id);
    return store_drain(c, 2);
}

int queue_ack_many(redisContext *c, const char *stream, const char *const *ids, size_t n)
{
    if (n == 0)
        return STORE_OK;
    const char **argv = malloc((n + 3) * sizeof *argv);
    if (!argv)
        return STORE_ERR;
    argv[0] = "XACK";
    argv[1] = stream;
    argv[2] = QUEUE_GROUP;
    for (size_t i = 0; i < n; i++)
        argv[3 + i] = ids[i];
    redisAppendCommandArgv(c, (int)(n + 3), argv, NULL);
    argv[1] = "XDEL";
    argv[2] = stream;
    redisAppendCommandArgv(c, (int)(n + 2), argv + 1, NULL);
    free(argv);
    return store_drain(c, 2);
}

/* ---- dead letters ---- */

void queue_dead_body_id(const char *association, const char *id, char *out, size_t size)
{
    snprintf(out, size, "%s:%s", association ? association : "", id);
}

/* KEYS 1 dead letters, 2 the body's key. ARGV 1 original id, 2 assoc, 3 webhook
 * id, 4 type, 5 ts, 6 body, 7 reason, 8 oldest id kept (MINID), 9 the body's
 * time to live (s), 10 most entries kept, 11 the body's id (key_dead_body). The
 * body is kept apart from the entry, so a listing reads a bounded part of it;
 * the stream is trimmed by age and by count at each addition (approximately:
 * whole nodes at a time). Global keys only: the entry is acknowledged in its
 * association's stream afterwards (queue_dead_letter), after the
 * staging key of a staged body (staged.h) is deleted: a staged body is written
 * here whole, in one command (it was read and parsed, so only a fold that failed
 * QUEUE_MAX_DELIVERIES times brings it here). */
static const char dead_script[] =
    "redis.call('XADD', KEYS[1], 'MINID', '~', ARGV[8], '*', 'assoc', ARGV[2], 'id', ARGV[3], "
    "'type', ARGV[4], 'ts', ARGV[5], 'body_bytes', tostring(#ARGV[6]), 'reason', ARGV[7], "
    "'original_id', ARGV[1], 'body_id', ARGV[11])\n"
    "redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[10])\n"
    "redis.call('SET', KEYS[2], ARGV[6], 'EX', ARGV[9])\n"
    "return 1\n";

int queue_dead_letter(redisContext *c, const char *stream, const struct queue_entry *e,
                      const char *reason, int retention_days)
{
    char minid[32], ttl[24], max[24], body_id[KEY_MAX];
    int64_t keep_ms = (int64_t)retention_days * 86400 * 1000;
    snprintf(minid, sizeof minid, "%lld-0", (long long)(store_now_ns() / 1000000 - keep_ms));
    snprintf(ttl, sizeof ttl, "%lld", (long long)retention_days * 86400);
    snprintf(max, sizeof max, "%d", QUEUE_DEAD_LETTERS_MAX);
    queue_dead_body_id(e->association, e->id, body_id, sizeof body_id);
    struct key body_key = key_dead_body(body_id);
    const char *args[] = {KEY_DEAD_LETTERS,
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
                          body_id};
    size_t lens[13];
    for (int i = 0; i < 13; i++)
        lens[i] = strlen(args[i]);
    lens[7] = e->body ? e->body_len : 0;
    redisReply *r = script_eval_len(c, dead_script, 2, 13, args, lens);
    int rc = store_reply_ok(c, r) ? STORE_OK : STORE_ERR;
    freeReplyObject(r);
    /* The staging key goes before the ack: redelivered after a crash between
     * the two, an entry whose staged body is gone counts as folded before. */
    if (rc == STORE_OK && e->body_key && e->body_key[0])
        rc = store_exec(c, "DEL %s", e->body_key);
    return rc == STORE_OK ? queue_ack(c, stream, e->id) : rc;
}

/* A dead letter's fields, borrowed from its XRANGE reply. */
struct dead_letter {
    const char *assoc, *id, *type, *ts, *body, *body_id, *original_id;
    size_t body_len;
};

static void dead_letter_fields(const redisReply *f, struct dead_letter *d)
{
    memset(d, 0, sizeof *d);
    for (size_t i = 0; i + 1 < f->elements; i += 2) {
        const char *k = f->element[i]->str, *v = f->element[i + 1]->str;
        if (strcmp(k, "assoc") == 0)
            d->assoc = v;
        else if (strcmp(k, "id") == 0)
            d->id = v;
        else if (strcmp(k, "type") == 0)
            d->type = v;
        else if (strcmp(k, "ts") == 0)
            d->ts = v;
        else if (strcmp(k, "body_id") == 0)
            d->body_id = v;
        else if (strcmp(k, "original_id") == 0)
            d->original_id = v;
        else if (strcmp(k, "body") == 0) {
            d->body = v;
            d->body_len = f->element[i + 1]->len;
        }
    }
}

/* Appends the XADD of the dead letter to its association's stream and its
 * ZADD to the index; 2 commands. */
static void append_requeue(redisContext *c, const struct dead_letter *d, const char *body,
                           size_t body_len)
{
    struct key stream = key_events(d->assoc);
    const char *argv[] = {"XADD",
                          stream.s,
                          "*",
                          "assoc",
                          d->assoc,
                          "id",
                          d->id ? d->id : "",
                          "type",
                          d->type ? d->type : "",
                          "ts",
                          d->ts ? d->ts : "",
                          "body",
                          body};
    size_t lens[13];
    for (int i = 0; i < 13; i++)
        lens[i] = strlen(argv[i]);
    lens[12] = body_len;
    redisAppendCommandArgv(c, 13, argv, lens);
    queue_append_ready(c, &d->assoc, 1, store_now_ns() / 1000);
}

/* Steps, none of them a script across keys of two slots: the event goes back
 * to its association's stream and in line first, then the dead letter goes. A
 * crash in between leaves both (a second redrive folds it twice: harmless). */
static int redrive(redisContext *c, const char *dead_id, const struct dead_letter *d)
{
    if (!d->assoc || !ccsync_valid_association_id(d->assoc))
        return 0; /* never an association's (an entry without one): nowhere to go */
    redisReply *body = NULL;
    struct key bkey = key_dead_body(d->body_id ? d->body_id : d->original_id ? d->original_id : "");
    if (!d->body) {
        body = store_command(c, "GET %s", bkey.s);
        if (!body || body->type != REDIS_REPLY_STRING) {
            int rc = body ? 0 : STORE_ERR; /* the body expired: nothing to redrive */
            freeReplyObject(body);
            return rc;
        }
    }
    append_requeue(c, d, body ? body->str : d->body, body ? body->len : d->body_len);
    freeReplyObject(body);
    if (store_drain(c, 2) != STORE_OK)
        return STORE_ERR;
    redisAppendCommand(c, "XDEL %s %s", KEY_DEAD_LETTERS, dead_id);
    if (!d->body)
        redisAppendCommand(c, "DEL %s", bkey.s);
    return store_drain(c, d->body ? 1 : 2) == STORE_OK ? 1 : STORE_ERR;
}

int queue_redrive(redisContext *c, const char *dead_id)
{
    redisReply *r = redisCommand(c, "XRANGE %s %s %s", KEY_DEAD_LETTERS, dead_id, dead_id);
    int rc = STORE_ERR;
    if (r && c->err == 0 && r->type == REDIS_REPLY_ERROR && strstr(r->str, "Invalid stream ID"))
        rc = 0;
    else if (!store_reply_ok(c, r) || r->type != REDIS_REPLY_ARRAY)
        rc = STORE_ERR;
    else if (r->elements == 0 || r->element[0]->type != REDIS_REPLY_ARRAY ||
             r->element[0]->elements != 2 || r->element[0]->element[1]->type != REDIS_REPLY_ARRAY)
        rc = 0;
    else {
        struct dead_letter d;
        dead_letter_fields(r->element[0]->element[1], &d);
        rc = redrive(c, dead_id, &d);
    }
    freeReplyObject(r);
    return rc;
}
