/*
 * queue_turns.c - whose turn it is to have its stream read (see queue.h):
 * KEY_EVENTS_READY, the line of associations with events not yet delivered;
 * the sweep that mends what a crash left out of it and finds entries a dead
 * consumer left; the queue's depth over every stream.
 *
 * Fairness: a worker takes the association first in line and reads at most a
 * batch of its stream; one with more goes back to the end of the line (its
 * score: now). An association joins the line at its end (ZADD NX now) and one
 * already in it keeps its place, however many events it adds. So when B's one
 * event arrives behind A's 50,000, B waits for the batches of A that workers
 * already hold and at most one more turn of A's: A is back in line behind B
 * after its next turn.
 */
#include "ccsync/queue.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccsync/keys.h"
#include "ccsync/store.h"

/* Associations whose streams one pipeline looks at. */
#define SWEEP_CHUNK 256

bool queue_more_may_be_left(size_t n, size_t max)
{
    return n >= max;
}

bool queue_sweep_needs_turn(const struct queue_stream_state *s)
{
    return s->undelivered;
}

bool queue_sweep_needs_reclaim(const struct queue_stream_state *s)
{
    return s->idle_pending;
}

int queue_append_ready(redisContext *c, const char *const *associations, size_t n, int64_t now_us)
{
    if (n == 0)
        return 0;
    const char **argv = malloc((2 * n + 3) * sizeof *argv);
    char score[24];
    snprintf(score, sizeof score, "%lld", (long long)now_us);
    if (!argv) {
        /* Still one command, so the caller's count holds: the index for the
         * first; the sweep adds any other. */
        redisAppendCommand(c, "ZADD %s NX %s %s", KEY_EVENTS_READY, score, associations[0]);
        return 1;
    }
    argv[0] = "ZADD";
    argv[1] = KEY_EVENTS_READY;
    argv[2] = "NX";
    for (size_t i = 0; i < n; i++) {
        argv[3 + 2 * i] = score;
        argv[4 + 2 * i] = associations[i];
    }
    redisAppendCommandArgv(c, (int)(2 * n + 3), argv, NULL);
    free(argv);
    return 1;
}

int queue_take(redisContext *c, int block_ms, char *association)
{
    redisReply *r;
    if (block_ms > 0)
        r = store_command(c, "BZPOPMIN %s %.3f", KEY_EVENTS_READY, block_ms / 1000.0);
    else
        r = store_command(c, "ZPOPMIN %s", KEY_EVENTS_READY);
    if (!r)
        return STORE_ERR;
    /* BZPOPMIN: [key, member, score] or nil; ZPOPMIN: [member, score] or []. */
    const redisReply *member = NULL;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 3)
        member = r->element[1];
    else if (r->type == REDIS_REPLY_ARRAY && r->elements == 2)
        member = r->element[0];
    int taken = member && member->type == REDIS_REPLY_STRING && member->len <= CCSYNC_ASSOC_ID_MAX;
    if (taken)
        snprintf(association, CCSYNC_ASSOC_ID_MAX + 1, "%s", member->str);
    freeReplyObject(r);
    return taken;
}

int queue_turn_over(redisContext *c, const char *association, size_t n, size_t max, int64_t now_us)
{
    if (!queue_more_may_be_left(n, max))
        return STORE_OK;
    return store_exec(c, "ZADD %s %lld %s", KEY_EVENTS_READY, (long long)now_us, association);
}

long long queue_ready_count(redisContext *c)
{
    redisReply *r = store_command(c, "ZCARD %s", KEY_EVENTS_READY);
    long long n = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    freeReplyObject(r);
    return n;
}

/* ---- the sweep ---- */

/* KEYS[1] a stream; ARGV[1] the idle time (ms) after which a pending entry's
 * consumer is taken for dead. Returns {undelivered, idle pending}, each 0 or 1:
 * entries after the group's last delivered id, entries pending that long. */
static const char state_script[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0} end\n"
    "local groups = redis.pcall('XINFO', 'GROUPS', KEYS[1])\n"
    "if groups.err then return {0, 0} end\n"
    "local last\n"
    "for _, g in ipairs(groups) do\n"
    "  local name, id\n"
    "  for i = 1, #g, 2 do\n"
    "    if g[i] == 'name' then name = g[i + 1] end\n"
    "    if g[i] == 'last-delivered-id' then id = g[i + 1] end\n"
    "  end\n"
    "  if name == '" QUEUE_GROUP "' then last = id end\n"
    "end\n"
    "if not last then\n"
    "  return {redis.call('XLEN', KEYS[1]) > 0 and 1 or 0, 0}\n"
    "end\n"
    "local after = redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', 1)\n"
    "local idle = redis.call('XPENDING', KEYS[1], '" QUEUE_GROUP
    "', 'IDLE', ARGV[1], '-', '+', 1)\n"
    "return {#after > 0 and 1 or 0, #idle > 0 and 1 or 0}\n";

static void parse_state(const redisReply *r, struct queue_stream_state *s)
{
    memset(s, 0, sizeof *s);
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
        s->undelivered = r->element[0]->integer != 0;
        s->idle_pending = r->element[1]->integer != 0;
    }
}

/* Reads the state of n streams in one pipeline. STORE_OK or STORE_ERR. */
static int stream_states(redisContext *c, const char *sha, const char *const *streams, size_t n,
                         struct queue_stream_state *out)
{
    char idle[16];
    snprintf(idle, sizeof idle, "%d", QUEUE_RECLAIM_IDLE_MS);
    for (size_t i = 0; i < n; i++)
        redisAppendCommand(c, "EVALSHA %s 1 %s %s", sha, streams[i], idle);
    int rc = STORE_OK;
    for (size_t i = 0; i < n; i++) {
        redisReply *r = NULL;
        if (redisGetReply(c, (void **)&r) != REDIS_OK || !r)
            return STORE_ERR;
        if (r->type == REDIS_REPLY_ERROR)
            rc = STORE_ERR;
        parse_state(r, &out[i]);
        freeReplyObject(r);
    }
    return rc;
}

/* One chunk of associations: their states, and the line joined by those with
 * undelivered entries. */
static int sweep_chunk(redisContext *c, const char *sha, const redisReply *ids, size_t from,
                       size_t n, int64_t now_us, struct queue_stream_state *states)
{
    struct key *keys = calloc(n, sizeof *keys);
    const char **streams = calloc(n, sizeof *streams), **turns = calloc(n, sizeof *turns);
    int rc = keys && streams && turns ? STORE_OK : STORE_ERR;
    for (size_t i = 0; rc == STORE_OK && i < n; i++) {
        keys[i] = key_events(ids->element[from + i]->str);
        streams[i] = keys[i].s;
    }
    if (rc == STORE_OK)
        rc = stream_states(c, sha, streams, n, states + from);
    size_t n_turns = 0;
    for (size_t i = 0; rc == STORE_OK && i < n; i++)
        if (queue_sweep_needs_turn(&states[from + i]))
            turns[n_turns++] = ids->element[from + i]->str;
    if (rc == STORE_OK && n_turns > 0)
        rc = store_drain(c, (size_t)queue_append_ready(c, turns, n_turns, now_us));
    free(keys);
    free(streams);
    free(turns);
    return rc;
}

static char *load_state_script(redisContext *c, char sha[41])
{
    redisReply *r = store_command(c, "SCRIPT LOAD %s", state_script);
    bool ok = r && r->type == REDIS_REPLY_STRING && r->len == 40;
    if (ok)
        memcpy(sha, r->str, 41);
    freeReplyObject(r);
    return ok ? sha : NULL;
}

int queue_sweep(redisContext *c, int64_t now_us, bool *legacy,
                int (*reclaim)(void *arg, const char *stream), void *arg)
{
    char sha[41];
    *legacy = false;
    redisReply *ids = store_command(c, "SMEMBERS %s", KEY_ASSOCIATIONS);
    if (!ids || ids->type != REDIS_REPLY_ARRAY || !load_state_script(c, sha)) {
        freeReplyObject(ids);
        return STORE_ERR;
    }
    struct queue_stream_state *states = calloc(ids->elements + 1, sizeof *states), old;
    const char *legacy_key = KEY_LEGACY_EVENTS;
    int rc = states ? stream_states(c, sha, &legacy_key, 1, &old) : STORE_ERR;
    for (size_t from = 0; rc == STORE_OK && from < ids->elements; from += SWEEP_CHUNK) {
        size_t n = ids->elements - from < SWEEP_CHUNK ? ids->elements - from : SWEEP_CHUNK;
        rc = sweep_chunk(c, sha, ids, from, n, now_us, states);
    }
    /* Reclaiming reads and folds: only once every reply above is in. */
    for (size_t i = 0; rc == STORE_OK && i < ids->elements; i++)
        if (queue_sweep_needs_reclaim(&states[i]))
            rc = reclaim(arg, key_events(ids->element[i]->str).s);
    if (rc == STORE_OK) {
        *legacy = queue_sweep_needs_turn(&old);
        if (queue_sweep_needs_reclaim(&old))
            rc = reclaim(arg, KEY_LEGACY_EVENTS);
    }
    free(states);
    freeReplyObject(ids);
    return rc;
}

/* ---- depth ---- */

static int add_lengths(redisContext *c, const redisReply *ids, size_t from, size_t n,
                       long long *total)
{
    for (size_t i = 0; i < n; i++)
        redisAppendCommand(c, "XLEN %s", key_events(ids->element[from + i]->str).s);
    int rc = STORE_OK;
    for (size_t i = 0; i < n; i++) {
        redisReply *r = NULL;
        if (redisGetReply(c, (void **)&r) != REDIS_OK || !r)
            return STORE_ERR;
        if (r->type == REDIS_REPLY_INTEGER)
            *total += r->integer;
        else
            rc = STORE_ERR; /* a count Redis refused is no zero */
        freeReplyObject(r);
    }
    return rc;
}

int queue_depth(redisContext *c, long long *n)
{
    *n = 0;
    redisReply *old = store_command(c, "XLEN %s", KEY_LEGACY_EVENTS);
    redisReply *ids = old ? store_command(c, "SMEMBERS %s", KEY_ASSOCIATIONS) : NULL;
    int rc = ids && ids->type == REDIS_REPLY_ARRAY && old->type == REDIS_REPLY_INTEGER ? STORE_OK
                                                                                       : STORE_ERR;
    if (rc == STORE_OK)
        *n = old->integer;
    for (size_t from = 0; rc == STORE_OK && from < ids->elements; from += SWEEP_CHUNK) {
        size_t k = ids->elements - from < SWEEP_CHUNK ? ids->elements - from : SWEEP_CHUNK;
        rc = add_lengths(c, ids, from, k, n);
    }
    freeReplyObject(old);
    freeReplyObject(ids);
    return rc;
}
