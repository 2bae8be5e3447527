/*
 * staged.c - webhook bodies too large for one Redis command (see staged.h).
 *
 * Every command here carries at most one chunk of the body, so none of them
 * holds Redis longer than copying a chunk takes (about a millisecond a MiB);
 * other clients' commands run between them. A staged body is a list of its
 * chunks, in order.
 */
#include "ccsync/staged.h"

#include <hiredis/hiredis.h>
#include <openssl/rand.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccsync/ingest.h"
#include "ccsync/keys.h"
#include "ccsync/queue.h"
#include "ccsync/log.h"
#include "ccsync/script.h"
#include "ccsync/store.h"

/* KEYS[1] dedup key, KEYS[2] stream, KEYS[3] the staging key; ARGV ttl, assoc,
 * id, type, ts, body length, chunks. Like ingest.c's enqueue script, with the
 * body by reference: a duplicate deletes what was staged for it; a staging key that is
 * not whole (it expired, Redis lost it; or it expired and a later RPUSH made
 * it again: it then has no expiry) queues nothing and answers an error, so the
 * sender retries. PERSIST: from now on the worker deletes it. */
static const char commit_script[] =
    "if redis.call('EXISTS', KEYS[1]) == 1 then\n"
    "  redis.call('DEL', KEYS[3])\n"
    "  return false\n"
    "end\n"
    "if redis.call('LLEN', KEYS[3]) ~= tonumber(ARGV[7]) or redis.call('PTTL', KEYS[3]) < 0 "
    "then\n"
    "  return redis.error_reply('STAGED the staged body is not whole')\n"
    "end\n"
    "redis.call('PERSIST', KEYS[3])\n"
    "local id = redis.call('XADD', KEYS[2], '*', 'assoc', ARGV[2], 'id', ARGV[3], 'type', "
    "ARGV[4], 'ts', ARGV[5], 'body_key', KEYS[3], 'body_bytes', ARGV[6])\n"
    "redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])\n"
    "return id\n";

/* A staging key no other attempt can name: two deliveries of one webhook at
 * once stage apart, and the dedup check picks one. */
static int new_key(const char *association, struct key *k)
{
    unsigned char raw[12];
    char token[2 * sizeof raw + 1];
    if (RAND_bytes(raw, sizeof raw) != 1)
        return STORE_ERR;
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(token + 2 * i, 3, "%02x", raw[i]);
    *k = key_staged(association, token);
    return k->cut ? STORE_ERR : STORE_OK;
}

/* Writes body to key a chunk a command, each a list element of its own:
 * writing one string instead makes Redis copy or zero-fill the whole string
 * as it grows, a command whose cost grows with the body. The first chunk is
 * pushed together with the expiry (MULTI), so no key is ever left without it. */
static int write_chunks(redisContext *c, const char *key, const char *body, size_t len,
                        size_t chunk)
{
    redisAppendCommand(c, "MULTI");
    redisAppendCommand(c, "RPUSH %s %b", key, body, len < chunk ? len : chunk);
    redisAppendCommand(c, "PEXPIRE %s %d", key, STAGED_TTL_MS);
    redisAppendCommand(c, "EXEC");
    if (store_drain(c, 4) != STORE_OK)
        return STORE_ERR;
    for (size_t off = chunk; off < len; off += chunk) {
        size_t n = len - off < chunk ? len - off : chunk;
        redisReply *r = redisCommand(c, "RPUSH %s %b", key, body + off, n);
        bool ok = store_reply_ok(c, r);
        freeReplyObject(r);
        if (!ok)
            return STORE_ERR;
    }
    return STORE_OK;
}

/* Runs the commit script: an enum ingest_result. */
static int commit(redisContext *c, const struct staged_event *ev, const char *key, size_t chunk,
                  char *entry_id, size_t entry_id_size)
{
    char ts[32], ttl[16], len[32], chunks[32];
    snprintf(ts, sizeof ts, "%lld", (long long)ev->ts_ns);
    snprintf(ttl, sizeof ttl, "%d", INGEST_DEDUP_TTL_SECONDS);
    snprintf(len, sizeof len, "%zu", ev->body_len);
    snprintf(chunks, sizeof chunks, "%zu", (ev->body_len + chunk - 1) / chunk);
    struct key dedup = key_dedup(ev->association, ev->webhook_id),
               events = key_events(ev->association);
    const char *args[] = {dedup.s,        events.s, key, ttl, ev->association,
                          ev->webhook_id, ev->type, ts,  len, chunks};
    redisReply *r = script_eval(c, commit_script, 3, 10, args);
    int result = INGEST_UNAVAILABLE;
    if (r && r->type == REDIS_REPLY_STRING) {
        snprintf(entry_id, entry_id_size, "%s", r->str);
        result = INGEST_QUEUED;
        /* In the workers' line after its XADD, as ingest's batches do (queue.h);
         * lost with a crash right here, the sweep finds the entry instead. */
        const char *assoc[] = {ev->association};
        if (queue_append_ready(c, assoc, 1, store_now_ns() / 1000) != 1 ||
            store_drain(c, 1) != STORE_OK)
            result = INGEST_UNAVAILABLE;
    } else if (r && r->type == REDIS_REPLY_NIL) {
        result = INGEST_DUPLICATE;
    } else {
        log_warn("ingest_staged_not_queued", LOG_STR("association", ev->association),
                 LOG_STR("webhook_id", ev->webhook_id),
                 LOG_STR("error", r && r->type == REDIS_REPLY_ERROR ? r->str : c->errstr));
    }
    freeReplyObject(r);
    return result;
}

/* Replica mode: did a replica confirm what this connection wrote? */
static bool replicated(redisContext *c, int replica_wait_ms)
{
    if (replica_wait_ms <= 0)
        return true;
    redisReply *r = redisCommand(c, "WAIT 1 %d", replica_wait_ms);
    bool ok = store_reply_ok(c, r) && r->type == REDIS_REPLY_INTEGER && r->integer >= 1;
    freeReplyObject(r);
    return ok;
}

int staged_enqueue(redisContext *c, const struct staged_event *ev, size_t chunk,
                   int replica_wait_ms, char *entry_id, size_t entry_id_size)
{
    struct key k;
    if (chunk == 0 || new_key(ev->association, &k) != STORE_OK)
        return INGEST_UNAVAILABLE;
    int result = INGEST_UNAVAILABLE;
    if (write_chunks(c, k.s, ev->body, ev->body_len, chunk) == STORE_OK)
        result = commit(c, ev, k.s, chunk, entry_id, entry_id_size);
    if (result == INGEST_UNAVAILABLE && c->err == 0)
        freeReplyObject(redisCommand(c, "DEL %s", k.s)); /* else it expires */
    /* A duplicate is unconfirmed too: its dedup key may be on this primary only. */
    if (result != INGEST_UNAVAILABLE && !replicated(c, replica_wait_ms))
        result = INGEST_UNAVAILABLE;
    return result;
}

/* How many chunks the staged body has: -1 Redis failed, 0 the key is gone. */
static long long staged_chunks(redisContext *c, const char *key)
{
    redisReply *r = redisCommand(c, "LLEN %s", key);
    long long n = store_reply_ok(c, r) && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    freeReplyObject(r);
    return n;
}

int staged_read(redisContext *c, const char *key, size_t bytes, char **body)
{
    *body = NULL;
    long long n = staged_chunks(c, key);
    if (n == 0)
        return 0;
    char *buf = n > 0 ? malloc(bytes + 1) : NULL;
    if (!buf)
        return STORE_ERR;
    size_t off = 0;
    bool ok = true;
    for (long long i = 0; i < n && ok; i++) {
        redisReply *r = redisCommand(c, "LINDEX %s %lld", key, i);
        ok = store_reply_ok(c, r) && r->type == REDIS_REPLY_STRING && (size_t)r->len <= bytes - off;
        if (ok) {
            memcpy(buf + off, r->str, r->len);
            off += r->len;
        }
        freeReplyObject(r);
    }
    if (!ok || off != bytes) {
        free(buf);
        return STORE_ERR;
    }
    buf[bytes] = '\0';
    *body = buf;
    return 1;
}
