/*
 * queue.h - the event stream as workers use it: a consumer group over
 * KEY_EVENTS, acknowledgement (and deletion) once an event's facts are
 * stored, reclaiming entries whose consumer died, and the dead-letter stream
 * KEY_DEAD_LETTERS for events that cannot be applied.
 */
#ifndef CCSYNC_QUEUE_H
#define CCSYNC_QUEUE_H

#include <stdbool.h>
#include <stddef.h>

struct redisContext;
struct redisReply;

#include "ccsync/keys.h"

#define QUEUE_GROUP "workers"
#define QUEUE_MAX_DELIVERIES 5
#define QUEUE_RECLAIM_IDLE_MS 30000

struct queue_entry {
    char id[48];
    const char *association; /* borrowed from the reply */
    const char *webhook_id;
    const char *type;
    const char *ts;
    const char *body;
    size_t body_len;
    /* a staged body (staged.h): body is NULL until the worker read it */
    const char *body_key;
    size_t body_bytes;
};

/* Creates the consumer group if it is missing. STORE_OK or STORE_ERR. */
int queue_ensure_group(struct redisContext *c);

/* New entries for this consumer (blocking up to block_ms), or, with reclaim,
 * entries idle longer than QUEUE_RECLAIM_IDLE_MS taken over from dead
 * consumers. Returns the reply holding the entries (free with freeReplyObject)
 * and fills up to max entries; NULL when Redis failed. */
struct redisReply *queue_read(struct redisContext *c, const char *consumer, bool reclaim,
                              int block_ms, struct queue_entry *entries, size_t max, size_t *n);

/* Times entry id has been delivered (XPENDING), 0 when unknown. */
long queue_deliveries(struct redisContext *c, const char *id);

/* Resets entry id's idle time, as this consumer's, without counting a
 * delivery: a worker folding a large event for longer than
 * QUEUE_RECLAIM_IDLE_MS keeps it from being reclaimed meanwhile. */
int queue_touch(struct redisContext *c, const char *consumer, const char *id);

/* Acknowledges and deletes an entry. STORE_OK or STORE_ERR. */
int queue_ack(struct redisContext *c, const char *id);

/* Acknowledges and deletes n entries in one round trip. STORE_OK or STORE_ERR. */
int queue_ack_many(struct redisContext *c, const char *const *ids, size_t n);

/* Dead letters kept at most (besides CCSYNC_RETENTION_DAYS): their bodies can
 * be CCSYNC_MAX_BODY_BYTES each. */
#define QUEUE_DEAD_LETTERS_MAX 10000

/* Moves an entry to the dead-letter stream with the reason, atomically; its
 * body is kept apart (key_dead_body) for retention_days, and the stream is
 * trimmed to retention_days and QUEUE_DEAD_LETTERS_MAX. STORE_OK or STORE_ERR. */
int queue_dead_letter(struct redisContext *c, const struct queue_entry *e, const char *reason,
                      int retention_days);

/* Puts a dead letter back on the event stream. 1 done, 0 unknown id, STORE_ERR. */
int queue_redrive(struct redisContext *c, const char *dead_id);

#endif
