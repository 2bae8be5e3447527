/*
 * staged.c - webhook bodies too large for one Redis command (see staged.h).
 *
 * Every command here carries at most one chunk of the body, so none of them
 * holds Redis longer than copying a chunk takes (about a millisecond a MiB);
 * other clients' commands run between them.
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
#include "ccsync/script.h"
#include "ccsync/store.h"

/* KEYS[1] dedup key, KEYS[2] stream, KEYS[3] the staging key; ARGV ttl, assoc,
 * id, type, ts, body length. Like ingest.c's enqueue script, with the body by
 * reference: a duplicate deletes what was staged for it; a staging key that is
 * not whole (it expired, Redis lost it; or it expired and a later SETRANGE
 * made it again, zero-filled: it then has no expiry) queues nothing and
 * answers an error, so the sender retries. PERSIST: from now on the worker
 * deletes it. */
static const char commit_script[] =
    "if redis.call('EXISTS', KEYS[1]) == 1 then\n"
    "  redis.call('DEL', KEYS[3])\n"
    "  return false\n"
    "end\n"
    "if redis.call('STRLEN', KEYS[3]) ~= tonumber(ARGV[6]) or redis.call('PTTL', KEYS[3]) < 0 "
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

/* The chunk written k-th: the first (its SET starts the expiry), then the
 * last, which sizes the string whole at once, then the ones between, each
 * written in place. Appending instead would let Redis copy the growing
 * string again and again: a command's cost would grow with the body. */
static size_t chunk_in_order(size_t k, size_t n_chunks)
{
    return k == 0 ? 0 : k == 1 ? n_chunks - 1 : k - 1;
}

/* Writes body to key a chunk a command. */
static int write_chunks(redisContext *c, const char *key, const char *body, size_t len,
                        size_t chunk)
{
    size_t n_chunks = (len + chunk - 1) / chunk;
    for (size_t k = 0; k < n_chunks; k++) {
        size_t off = chunk_in_order(k, n_chunks) * chunk;
        size_t n = len - off < chunk ? len - off : chunk;
        redisReply *r = k == 0 ? redisCommand(c, "SET %s %b PX %d", key, body, n, STAGED_TTL_MS)
                               : redisCommand(c, "SETRANGE %s %llu %b", key,
                                              (unsigned long long)off, body + off, n);
        bool ok = store_reply_ok(c, r);
        freeReplyObject(r);
        if (!ok)
            return STORE_ERR;
    }
    return STORE_OK;
}

/* Runs the commit script: an enum ingest_result. */
static int commit(redisContext *c, const struct staged_event *ev, const char *key, char *entry_id,
                  size_t entry_id_size)
{
    char ts[32], ttl[16], len[32];
    snprintf(ts, sizeof ts, "%lld", (long long)ev->ts_ns);
    snprintf(ttl, sizeof ttl, "%d", INGEST_DEDUP_TTL_SECONDS);
    snprintf(len, sizeof len, "%zu", ev->body_len);
    struct key dedup = key_dedup(ev->association, ev->webhook_id);
    const char *args[] = {dedup.s,        KEY_EVENTS, key, ttl, ev->association,
                          ev->webhook_id, ev->type,   ts,  len};
    redisReply *r = script_eval(c, commit_script, 3, 9, args);
    int result = INGEST_UNAVAILABLE;
    if (r && r->type == REDIS_REPLY_STRING) {
        snprintf(entry_id, entry_id_size, "%s", r->str);
        result = INGEST_QUEUED;
    } else if (r && r->type == REDIS_REPLY_NIL) {
        result = INGEST_DUPLICATE;
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
        result = commit(c, ev, k.s, entry_id, entry_id_size);
    if (result == INGEST_UNAVAILABLE && c->err == 0)
        freeReplyObject(redisCommand(c, "DEL %s", k.s)); /* else it expires */
    /* A duplicate is unconfirmed too: its dedup key may be on this primary only. */
    if (result != INGEST_UNAVAILABLE && !replicated(c, replica_wait_ms))
        result = INGEST_UNAVAILABLE;
    return result;
}

/* The staged body's length: -1 Redis failed, 0 the key is gone. */
static long long staged_length(redisContext *c, const char *key)
{
    redisReply *r = redisCommand(c, "STRLEN %s", key);
    long long n = store_reply_ok(c, r) && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    freeReplyObject(r);
    return n;
}

int staged_read(redisContext *c, const char *key, size_t bytes, size_t chunk, char **body)
{
    *body = NULL;
    long long len = staged_length(c, key);
    if (len == 0)
        return 0;
    if (len < 0 || (size_t)len != bytes || chunk == 0)
        return STORE_ERR;
    char *buf = malloc(bytes + 1);
    if (!buf)
        return STORE_ERR;
    for (size_t off = 0; off < bytes; off += chunk) {
        size_t n = bytes - off < chunk ? bytes - off : chunk;
        redisReply *r = redisCommand(c, "GETRANGE %s %llu %llu", key, (unsigned long long)off,
                                     (unsigned long long)(off + n - 1));
        bool ok = store_reply_ok(c, r) && r->type == REDIS_REPLY_STRING && (size_t)r->len == n;
        if (ok)
            memcpy(buf + off, r->str, n);
        freeReplyObject(r);
        if (!ok) {
            free(buf);
            return STORE_ERR;
        }
    }
    buf[bytes] = '\0';
    *body = buf;
    return 1;
}
