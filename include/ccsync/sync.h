/*
 * sync.h - one group's sync: make its Constant Contact list match the planner's
 * decision, step by step, each step recorded in Redis before and after it runs.
 *
 * Run by a worker that holds the group's lease. Every step is idempotent or
 * journaled: a CC request that may have taken effect without ccsync hearing the
 * answer (a timeout, a crash) is never sent again blindly; the next run first
 * finds out what CC did (the list's members, the list by name) and plans the rest.
 */
#ifndef CCSYNC_SYNC_H
#define CCSYNC_SYNC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "ccsync/ratelimit.h"

struct app;
struct ccapi;
struct redisContext;

/* What one worker thread brings to a sync. */
struct sync_worker {
    struct app *app;
    struct redisContext *redis; /* the worker's own connection; NULL after an error */
    struct ccapi *cc;
    struct ratelimit_conf budget;
    const atomic_bool *stop;
    char lease_key[200];
    char lease_token[40];
    int lease_ms;
    char token_association[72]; /* whose access token cc holds */
    char token[4096];
};

enum sync_result {
    SYNC_DONE = 0,   /* the list matches (or the group rests in an error that waits for an admin) */
    SYNC_RETRY,      /* transient trouble: try again after *retry_ms */
    SYNC_LEASE_LOST, /* another worker took over: stop touching the group */
    SYNC_REDIS,      /* the worker's Redis connection failed: reconnect, retry */
    SYNC_STOPPED,    /* shutdown */
};

enum sync_result sync_group(struct sync_worker *w, const char *association, const char *group_id,
                            int64_t *retry_ms);

/* Reconcile one association: one paged read of its lists; deleted and renamed
 * lists are noticed, and groups whose list count differs are queued to verify. */
enum sync_result sync_reconcile(struct sync_worker *w, const char *association);

/* Renews the lease held in w; false when it is no longer ours. */
bool sync_lease_renew(struct sync_worker *w);

#endif
