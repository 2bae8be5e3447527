/*
 * migrate.h - brings a Redis written by release 1 to the key layout of keys.h,
 * once, at start, before the service reads or writes any key.
 *
 * KEY_LAYOUT_VERSION records the layout a Redis holds. A Redis without it is
 * release 1's (or empty); migrate_run moves every key and sets it. Stop every
 * release-1 process before the first start of this release: one still running
 * would keep writing the old names, which nothing reads any more.
 */
#ifndef CCSYNC_MIGRATE_H
#define CCSYNC_MIGRATE_H

#include <signal.h>
#include <stdbool.h>

struct redisContext;
struct redis_target;

/* The layout keys.h spells. Release 1's (no marker) counts as 1. */
#define MIGRATE_LAYOUT 2

/* How long the migration lock lives without a renewal: a migrating process that
 * dies is taken over by a waiting one after at most this long. */
#define MIGRATE_LOCK_MS 30000

struct migrate_report {
    bool migrated;      /* this call did the work; false when another process had */
    long long renamed;  /* keys moved to their new name */
    long long gone;     /* keys found by SCAN and gone by RENAME: a run before had moved them */
    long long skipped;  /* release-1 names whose association id is not valid: left alone */
    long long schedule; /* entries moved from release 1's ccsync:dirty */
};

/*
 * Brings the Redis behind c to MIGRATE_LAYOUT. Idempotent and resumable: a run
 * that died midway is finished by the next one. When several processes start
 * at once one migrates (under KEY_MIGRATE_LOCK) and the others wait until the
 * layout marker is set, or the lock runs out and one of them takes over.
 * STORE_OK once the marker says MIGRATE_LAYOUT; STORE_ERR when Redis failed
 * (c->err or an error reply, logged), Redis holds a newer layout, or *stop
 * became non-zero while waiting (stop may be NULL). report may be NULL.
 */
int migrate_run(struct redisContext *c, const volatile sig_atomic_t *stop,
                struct migrate_report *report);

/*
 * For main.c: connects to t and runs migrate_run, waiting (and saying so in the
 * log) while Redis cannot be reached and trying again after a connection broke.
 * STORE_OK when done; STORE_ERR when the migration failed for another reason
 * (logged) or *stop became non-zero first.
 */
int migrate_at_start(const struct redis_target *t, const volatile sig_atomic_t *stop);

#endif
