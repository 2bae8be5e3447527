/*
 * staged.h - webhook bodies too large for one Redis command.
 *
 * A body over CCSYNC_ENQUEUE_CHUNK_BYTES (a snapshot of 500,000 members is
 * 11 MB) sent whole in the enqueue script held Redis for up to 2 s, every
 * other client waiting. Such a body is instead written to a staging key
 * (KEY_STAGED, a list of its chunks) a chunk a command; then one small script
 * checks the dedup key and queues a stream entry that names the staging key
 * (fields body_key and body_bytes instead of body). Until that script ran, the staging key expires
 * by itself: a crash between chunks leaves an orphan that goes away, never a
 * queued event whose body is incomplete. Workers read the body back a chunk a
 * command and delete the key once the event is folded, before acknowledging
 * it; an entry whose staging key is gone was therefore folded already.
 */
#ifndef CCSYNC_STAGED_H
#define CCSYNC_STAGED_H

#include <stddef.h>
#include <stdint.h>

struct redisContext;

/* How long a staging key lives until its event is queued: far longer than
 * writing it takes, short enough that orphans do not pile up. */
#define STAGED_TTL_MS (3600 * 1000)

struct staged_event {
    const char *association;
    const char *webhook_id;
    const char *type;
    int64_t ts_ns;
    const char *body;
    size_t body_len;
};

/* Stages ev's body in chunks of chunk bytes and queues it, deduplicated by
 * its webhook id; with replica_wait_ms > 0 a replica must confirm it (WAIT).
 * Returns an enum ingest_result: INGEST_QUEUED (the stream entry's id in
 * entry_id), INGEST_DUPLICATE (the staged body deleted again) or
 * INGEST_UNAVAILABLE (nothing queued; c->err set when the context is broken). */
int staged_enqueue(struct redisContext *c, const struct staged_event *ev, size_t chunk,
                   int replica_wait_ms, char *entry_id, size_t entry_id_size);

/* Reads the staged body at key, of bytes bytes, a chunk a command (the chunk
 * size it was staged with), into *body (malloc'd, NUL-terminated; the caller
 * frees it). 1 read; 0 the key is gone (its event was folded: see above);
 * STORE_ERR Redis failed or the body is not the size its entry says. */
int staged_read(struct redisContext *c, const char *key, size_t bytes, char **body);

#endif
