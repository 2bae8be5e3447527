/*
 * ratelimit.h - the Constant Contact budget: RATE requests per second and
 * DAILY requests per UTC day per CC application key, kept in Redis and shared
 * by every ccsyncd process and thread.
 *
 * Take one grant before each CC API request (token-endpoint calls are outside
 * the budget). Waiting requests are served by class (budget.h), then to the
 * association that used least today.
 * Every decision uses the Redis server's clock, so the clocks of the hosts
 * running ccsyncd do not matter.
 */
#ifndef CCSYNC_RATELIMIT_H
#define CCSYNC_RATELIMIT_H

#include <stdatomic.h>
#include <stdint.h>

#include "ccsync/budget.h"

struct redisContext;
struct redisReply;
struct config;

/*
 * Spacing added to 1/RATE between two grants. A grant is taken in Redis, and
 * CC sees the request a little later; how much later varies (thread wake-up,
 * Redis reply, connection reuse or not). RATE+1 requests only fit in CC's
 * one-second window if the first one was delayed RATE*margin more than the
 * last one, so 20 ms absorbs 80 ms of jitter at 4/s for 7% of the rate
 * (3.64/s); the daily limit (10,000 = 42 min at 4/s) binds long before that
 * loss matters.
 */
#define RATELIMIT_DEFAULT_MARGIN_NS 20000000LL

/* An association whose waiting thread has not asked again for this long is
 * dropped from the queue (its thread died, or stopped waiting), so it no
 * longer holds up the others. It keeps its turn when it comes back. */
#define RATELIMIT_MIN_STALE_NS 2000000000LL

struct ratelimit_conf {
    double rate_per_sec; /* CCSYNC_CC_RATE_PER_SEC, > 0 */
    long daily_limit;    /* CCSYNC_CC_DAILY_LIMIT, > 0 */
    int64_t margin_ns;   /* added to 1/rate between grants */
    char app[72];        /* names the shared budget: the CC client id ("default" if unset) */
};

enum ratelimit_result {
    RATELIMIT_GRANTED = 0, /* send the request now */
    RATELIMIT_WAIT,        /* sleep *wait_ns, then ask again */
    RATELIMIT_QUOTA,       /* daily limit reached or CC said quota_exceeded: no CC work
                              until 00:00 UTC, *wait_ns from now */
    RATELIMIT_ERROR,       /* Redis failed: discard the context */
    RATELIMIT_STOPPED,     /* ratelimit_wait only: the stop flag was raised */
};

/* The budget of cfg (rate, daily limit, client id) with the default margin. */
void ratelimit_conf_from_config(struct ratelimit_conf *rc, const struct config *cfg);

/*
 * One attempt to take a grant for association (an id; the queue is fair
 * between associations, not threads). GRANTED also counts the request for
 * today. WAIT and QUOTA set *wait_ns; a thread that got WAIT must ask again
 * soon (within RATELIMIT_MIN_STALE_NS), or others stop waiting for it.
 */
enum ratelimit_result ratelimit_acquire(struct redisContext *c, const struct ratelimit_conf *rc,
                                        const char *association, int64_t *wait_ns);

/*
 * The same for a request of class cls (budget.h): the queue is ordered by
 * class, then by what each association was granted today (least first), and
 * every grant is counted by day, class and association. Classes above
 * BUDGET_CHANGES wait (without holding the queue) once the day's count reaches
 * BUDGET_CEILING of the limit: the rest is class 1's reserve. ratelimit_acquire
 * is this with BUDGET_CHANGES.
 */
enum ratelimit_result ratelimit_acquire_class(struct redisContext *c,
                                              const struct ratelimit_conf *rc,
                                              const char *association, enum budget_class cls,
                                              int64_t *wait_ns);

/*
 * Blocks until a grant, sleeping as told between attempts in slices of at
 * most 100 ms so that a raised *stop (shutdown) is seen quickly. Returns
 * GRANTED, QUOTA (*wait_ns set: the caller records it in status before
 * sleeping), ERROR or STOPPED. wait_ns may be NULL.
 */
enum ratelimit_result ratelimit_wait(struct redisContext *c, const struct ratelimit_conf *rc,
                                     const char *association, const atomic_bool *stop,
                                     int64_t *wait_ns);

/* CC answered 429 quota_exceeded: pause CC work in every process until the
 * next 00:00 UTC (Redis time). *until_ns (may be NULL) gets that instant, Unix
 * ns. A pause already reaching further is kept. Returns STORE_OK or STORE_ERR. */
int ratelimit_pause_until_midnight(struct redisContext *c, const struct ratelimit_conf *rc,
                                   int64_t *until_ns);

/* The end of the current pause (Unix ns), or 0 when CC work is not paused.
 * Returns STORE_OK or STORE_ERR. */
int ratelimit_paused_until(struct redisContext *c, const struct ratelimit_conf *rc,
                           int64_t *until_ns);

/* Requests granted so far in the current UTC day. Returns STORE_OK or STORE_ERR. */
int ratelimit_used_today(struct redisContext *c, const struct ratelimit_conf *rc, long *used);

/* Today's use as every process sees it: counts by class and the recent rate
 * of each (an exponential average over BUDGET_RATE_WINDOW_S, decayed to now). */
struct ratelimit_snapshot {
    long used;
    long used_by_class[BUDGET_CLASSES];
    double rate_by_class[BUDGET_CLASSES]; /* requests a second */
    int64_t now_s;                        /* seconds since 00:00 UTC (Redis time) */
};

int ratelimit_snapshot(struct redisContext *c, const struct ratelimit_conf *rc,
                       struct ratelimit_snapshot *s);

/* The planner's view of the day from a snapshot (budget.h). */
void ratelimit_budget_day(const struct ratelimit_snapshot *s, long daily_limit, double share,
                          struct budget_day *d);

/* Today's grants by association: *pairs gets an array reply of association,
 * count, ... (the caller frees it). STORE_OK or STORE_ERR. */
int ratelimit_by_association(struct redisContext *c, const struct ratelimit_conf *rc,
                             struct redisReply **pairs);

#endif
