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
#include <stddef.h>
#include <stdint.h>

#include "ccsync/lease.h"
#include "ccsync/ratelimit.h"

struct app;
struct ccapi;
struct redisContext;

/* Groups of one association synced together in one round: GET /contacts
 * reads up to 25 lists at once, so a shared read covers them all. */
#define SYNC_MAX_GROUPS 25

/* What one worker thread brings to a sync. */
struct sync_worker {
    struct app *app;
    struct redisContext *redis; /* the worker's own connection; NULL after an error */
    struct ccapi *cc;
    struct ratelimit_conf budget;
    const atomic_bool *stop;
    struct lease leases[SYNC_MAX_GROUPS]; /* the groups (or reconcile) this worker holds */
    size_t n_leases;
    int lease_ms;
    struct lease_keeper *keeper; /* the process's heartbeat (NULL: none); keeper_slot is ours */
    size_t keeper_slot;
    char token_association[72]; /* whose access token cc holds */
    char token[4096];
    struct budget_day day; /* the shared day as last read (sync_budget_day) */
    int64_t day_read_ms;   /* when (monotonic ms); 0: never */
    int64_t delay_ms;      /* the coalescing wait in force (budget_sync_delay_ms) */
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

/*
 * Syncs n (1..SYNC_MAX_GROUPS) groups of one association, whose leases w holds,
 * in one round: each group's own steps first (recovery, list create or delete,
 * resync), then their list changes together, so that they share CC requests:
 * one paged read learns contact ids for all of them, removals are merged
 * (plan_merge_removes), and one GET /activities reports on every import and
 * removal. results[i] and retry_ms[i] belong to group_ids[i].
 */
void sync_groups(struct sync_worker *w, const char *association, const char *const *group_ids,
                 size_t n, enum sync_result *results, int64_t *retry_ms);

/* Reconcile one association: one paged read of its lists; deleted and renamed
 * lists are noticed, and groups whose list count differs are queued to verify. */
enum sync_result sync_reconcile(struct sync_worker *w, const char *association);

/* Reconciles the association whose turn has come, if any, under its reconcile
 * lease (held in w->leases[0] meanwhile); every association is given a turn
 * each CCSYNC_RECONCILE_SECONDS. false when Redis failed. */
bool sync_reconcile_due(struct sync_worker *w);

/* The shared day as the planner sees it (budget.h), read from Redis at most
 * once a second per worker (every process shares the counts through Redis).
 * STORE_OK, or STORE_ERR with *d the last one read. */
int sync_budget_day(struct sync_worker *w, struct budget_day *d);

/* How long a group's changes wait to be coalesced now: CCSYNC_SYNC_DELAY_MS
 * while the day is calm, widened (up to CCSYNC_SYNC_DELAY_MAX_SECONDS) as the
 * projection nears the limit. */
int64_t sync_delay_ms(struct sync_worker *w);

/* Is the day calm (projected under BUDGET_CALM of the limit)? Class-4 work,
 * which only refreshes what ccsync knows, runs only then. */
bool sync_budget_calm(struct sync_worker *w);

/* May a round start now, as the budget stands? Once the coalescing wait is
 * at its widest, only while budget_may_start_round says so; a round that may
 * not waits, and its groups keep gathering changes. */
bool sync_may_start_round(struct sync_worker *w);

/* Someone asked for a reconcile of association (the API, the status page): it
 * is due at once, unless one was asked less than a minute ago. Returns 1 (due
 * now), 0 (one was asked at *asked_at_ms, less than a minute ago: that one
 * stands, no other is made) or STORE_ERR. *asked_at_ms: when the standing ask
 * was taken (Unix ms). */
int sync_reconcile_ask(struct redisContext *c, const char *association, int64_t *asked_at_ms);

/* The next reconcile of association (Unix ms), 0 when none is planned. */
int sync_reconcile_next_at(struct redisContext *c, const char *association, int64_t *at_ms);

/* Records that a round of association's groups ran now: reconcile may look at a
 * busy association twice as often, out of what the equal turns leave. */
void sync_note_activity(struct redisContext *c, const char *association);

/* Renews every lease held in w; false when one is no longer ours. */
bool sync_lease_renew(struct sync_worker *w);

/* Tells the heartbeat which leases w holds now (w->leases[0..n_leases)); call
 * it after taking leases and before giving them back. */
void sync_leases_held(struct sync_worker *w);

#endif
