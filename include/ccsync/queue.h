/*
 * queue.h - the event streams as workers use them.
 *
 * Each association has a stream of its own (key_events), so one association's
 * flood waits behind its own events, not behind the others'. KEY_EVENTS_READY
 * lists the associations whose stream has entries not yet delivered, in turn
 * order: a worker takes the first (queue_take), reads a bounded batch of its
 * stream, and puts it back at the end of the line when more may be left
 * (queue_turn_over), so that every association with events gets a batch in
 * turn. Then: a consumer group per stream, acknowledgement (and deletion) once
 * an event's facts are stored, reclaiming entries whose consumer died
 * (queue_sweep), the dead-letter stream KEY_DEAD_LETTERS for events that
 * cannot be applied, and the draining of KEY_LEGACY_EVENTS, the single stream
 * of earlier releases.
 *
 * The index is written after the stream, never before, and by plain commands
 * (no script touches a global key and an association's): ingest sends
 * "ZADD NX" after its XADD on the same connection; a worker takes an
 * association off the index before it reads its stream, so an event added
 * after that read is followed by a ZADD that puts the association back. What
 * a crash can leave out of the index (a process that died between its XADD and
 * its ZADD, or between a take and its turn-over) is put back by queue_sweep,
 * which each process runs every QUEUE_SWEEP_MS over every association.
 */
#ifndef CCSYNC_QUEUE_H
#define CCSYNC_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct redisContext;
struct redisReply;

#include "ccsync/keys.h"
#include "ccsync/model.h"

#define QUEUE_GROUP "workers"
#define QUEUE_MAX_DELIVERIES 5
#define QUEUE_RECLAIM_IDLE_MS 30000
/* How often each process looks at every association's stream: what the index
 * lacks, entries a dead consumer left. */
#define QUEUE_SWEEP_MS 5000

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

/* Creates stream's consumer group (and the stream) if missing. STORE_OK or STORE_ERR. */
int queue_ensure_group(struct redisContext *c, const char *stream);

/* New entries of stream for this consumer (blocking up to block_ms; 0 does
 * not block), or, with reclaim, entries idle longer than
 * QUEUE_RECLAIM_IDLE_MS taken over from dead consumers. A stream without its
 * consumer group gets one first. Returns the reply holding the entries (free
 * with freeReplyObject) and fills up to max entries; NULL when Redis failed. */
struct redisReply *queue_read(struct redisContext *c, const char *stream, const char *consumer,
                              bool reclaim, int block_ms, struct queue_entry *entries, size_t max,
                              size_t *n);

/* Times entry id of stream has been delivered (XPENDING), 0 when unknown. */
long queue_deliveries(struct redisContext *c, const char *stream, const char *id);

/* Resets entry id's idle time in stream, as this consumer's, without counting a
 * delivery: a worker folding a large event for longer than
 * QUEUE_RECLAIM_IDLE_MS keeps it from being reclaimed meanwhile. */
int queue_touch(struct redisContext *c, const char *stream, const char *consumer, const char *id);

/* Acknowledges and deletes an entry. STORE_OK or STORE_ERR. */
int queue_ack(struct redisContext *c, const char *stream, const char *id);

/* Acknowledges and deletes n entries in one round trip. STORE_OK or STORE_ERR. */
int queue_ack_many(struct redisContext *c, const char *stream, const char *const *ids, size_t n);

/* ---- whose turn: KEY_EVENTS_READY ---- */

/* Appends (no reply read) "ZADD NX": each of the n associations is in line
 * (at now_us, Unix µs: the end of the line) unless it already is. Sent after the
 * XADDs of their events on the same connection; the caller reads one reply.
 * Returns 1, the number of commands appended (0 when n is 0). */
int queue_append_ready(struct redisContext *c, const char *const *associations, size_t n,
                       int64_t now_us);

/* Takes the association first in line off the index into association
 * (CCSYNC_ASSOC_ID_MAX + 1 bytes), waiting up to block_ms for one (0: no
 * wait). 1 taken, 0 none, STORE_ERR. */
int queue_take(struct redisContext *c, int block_ms, char *association);

/* After a take: n entries were read of at most max. A full batch may have
 * left more: the association goes back in line, at its end (now_us). Fewer
 * means the stream had no more then; an event added since was followed by
 * its own ZADD. STORE_OK or STORE_ERR. */
int queue_turn_over(struct redisContext *c, const char *association, size_t n, size_t max,
                    int64_t now_us);

/* Pure: whether an association read n of at most max entries goes back in line. */
bool queue_more_may_be_left(size_t n, size_t max);

/* What the sweep found in one association's stream. */
struct queue_stream_state {
    bool undelivered;  /* entries not delivered to any consumer yet */
    bool idle_pending; /* entries delivered but idle QUEUE_RECLAIM_IDLE_MS or longer */
};

/* Pure: the sweep's decision for a stream: put it in line (undelivered), and
 * reclaim its idle entries. */
bool queue_sweep_needs_turn(const struct queue_stream_state *s);
bool queue_sweep_needs_reclaim(const struct queue_stream_state *s);

/*
 * Looks at every association's stream (and KEY_LEGACY_EVENTS): puts in line
 * those with undelivered entries that the index lacks, and calls reclaim for
 * each stream holding entries a consumer left idle (a dead consumer's). Sets
 * *legacy when KEY_LEGACY_EVENTS still holds entries. STORE_OK or STORE_ERR.
 */
int queue_sweep(struct redisContext *c, int64_t now_us, bool *legacy,
                int (*reclaim)(void *arg, const char *stream), void *arg);

/* Events not yet folded: the entries of every association's stream and of
 * KEY_LEGACY_EVENTS (an entry is deleted once folded). STORE_OK or STORE_ERR. */
int queue_depth(struct redisContext *c, long long *n);

/* Associations in line (KEY_EVENTS_READY's size), -1 when Redis failed. */
long long queue_ready_count(struct redisContext *c);

/* ---- dead letters ---- */

/* Dead letters kept at most (besides CCSYNC_RETENTION_DAYS): their bodies can
 * be CCSYNC_MAX_BODY_BYTES each. */
#define QUEUE_DEAD_LETTERS_MAX 10000

/* "A:ID": where a dead letter of association A whose entry was ID in A's
 * stream keeps its body (key_dead_body). IDs repeat across streams. */
void queue_dead_body_id(const char *association, const char *id, char *out, size_t size);

/* Moves an entry of stream to the dead-letter stream with the reason; its
 * body is kept apart (key_dead_body) for retention_days, and the dead-letter
 * stream is trimmed to retention_days and QUEUE_DEAD_LETTERS_MAX. The dead
 * letter is written before the entry is acknowledged: a crash in between
 * leaves the entry pending, and it is dead-lettered again (twice listed, never
 * lost). STORE_OK or STORE_ERR. */
int queue_dead_letter(struct redisContext *c, const char *stream, const struct queue_entry *e,
                      const char *reason, int retention_days);

/* Puts a dead letter back on its association's stream (and in line). 1 done,
 * 0 unknown id (or nothing left to redrive), STORE_ERR. */
int queue_redrive(struct redisContext *c, const char *dead_id);

#endif
