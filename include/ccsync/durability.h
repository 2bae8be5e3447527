/*
 * durability.h - what Redis promises about an event ccsync acknowledged, and
 * whether that is what the operator asked for (CCSYNC_DURABILITY).
 *
 *   everysec  2xx once Redis accepted the event. Redis should have AOF on and
 *             maxmemory-policy noeviction: otherwise a crash loses everything
 *             since the last snapshot, or memory pressure evicts queued events.
 *             Said in the log and in /v1/status; ccsyncd still starts.
 *   always    Redis must fsync every write before it answers (appendonly yes,
 *             appendfsync always): checked at start, exit 2 if not.
 *   replica   after each pipelined batch, WAIT 1 CCSYNC_REPLICA_TIMEOUT_MS; a
 *             batch no replica confirmed is answered 503 (Novi retries, dedup
 *             answers the retry). A Redis without a connected replica is a
 *             warning at start: batches fail until one connects.
 *
 * durability_judge is pure (unit-tested); durability_read asks Redis.
 */
#ifndef CCSYNC_DURABILITY_H
#define CCSYNC_DURABILITY_H

#include <stdbool.h>
#include <stddef.h>

struct redisContext;

enum durability_mode {
    DURABILITY_EVERYSEC = 0,
    DURABILITY_ALWAYS,
    DURABILITY_REPLICA,
};

/* "everysec", "always", "replica"; -1 for anything else. */
int durability_mode_parse(const char *s);
const char *durability_mode_name(enum durability_mode m);

/* Redis's settings, as read at start. */
struct redis_persistence {
    bool known;        /* false: neither CONFIG GET nor INFO answered */
    bool aof;          /* appendonly yes */
    char fsync[16];    /* appendfsync: always, everysec, no */
    char eviction[32]; /* maxmemory-policy */
    int replicas;      /* connected replicas (INFO replication) */
};

#define DURABILITY_MAX_WARNINGS 4

struct durability_report {
    bool fatal; /* refuse to start (exit 2) */
    size_t n_warnings;
    char warnings[DURABILITY_MAX_WARNINGS][240]; /* each names the setting and its cost */
};

/* Judges p against mode; the report is empty when all is as it should be. */
void durability_judge(enum durability_mode mode, const struct redis_persistence *p,
                      struct durability_report *out);

/* Reads the settings: CONFIG GET where allowed, else INFO persistence, memory and
 * replication (managed Redis services often rename CONFIG). STORE_OK or
 * STORE_ERR (the connection failed; p->known false). */
int durability_read(struct redisContext *c, struct redis_persistence *p);

#endif
