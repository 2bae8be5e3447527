/*
 * test_ratelimit.c - the shared CC budget against a real redis-server: the
 * per-second spacing seen across connections and threads, the daily limit,
 * the quota_exceeded pause, and round-robin fairness between associations.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ccsync/ratelimit.h"
#include "peek.h"
#include "testsupport.h"

static int redis_port;
static pid_t redis_pid;

/* Redis server time in µs: the clock the budget is kept in. */
static int64_t redis_time_us(redisContext *c)
{
    redisReply *r = redisCommand(c, "TIME");
    int64_t t = -1;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2)
        t = strtoll(r->element[0]->str, NULL, 10) * 1000000 + strtoll(r->element[1]->str, NULL, 10);
    if (r)
        freeReplyObject(r);
    return t;
}

static int start_redis(void **state)
{
    redis_port = ts_free_port();
    if (redis_port == 0)
        return -1;
    redis_pid = ts_redis_start(redis_port);
    if (redis_pid < 0)
        return -1;
    return 0;
}

static int stop_redis(void **state)
{
    ts_kill(redis_pid, SIGTERM);
    return 0;
}

static int flush(void **state)
{
    peek_flushall(redis_port);
    return 0;
}

static struct ratelimit_conf conf(double rate, long daily)
{
    struct ratelimit_conf rc;
    memset(&rc, 0, sizeof rc);
    rc.rate_per_sec = rate;
    rc.daily_limit = daily;
    rc.margin_ns = RATELIMIT_DEFAULT_MARGIN_NS;
    snprintf(rc.app, sizeof rc.app, "test-app");
    return rc;
}

/* ---- spacing across threads and connections ---- */

#define MAX_GRANTS 256

struct spacing_run {
    const struct ratelimit_conf *rc;
    const char *association;
    int64_t until_us; /* Redis time at which the thread stops asking */
    pthread_mutex_t *lock;
    int64_t *grants; /* shared: grant instants (µs, Redis clock) */
    int *n_grants;
    atomic_int *failures;
};

static void *spacing_thread(void *arg)
{
    struct spacing_run *run = arg;
    redisContext *c = redisConnect("127.0.0.1", redis_port);
    /* cmocka asserts only on the main thread: failures are counted here. */
    while (c && !c->err && redis_time_us(c) < run->until_us) {
        if (ratelimit_wait(c, run->rc, run->association, NULL, NULL) != RATELIMIT_GRANTED) {
            atomic_fetch_add(run->failures, 1);
            break;
        }
        /* The instant the script granted, read back from Redis: each thread
         * has its own association, so nobody else overwrites it meanwhile. */
        long long served = peek_budget_served(c, run->rc->app, run->association);
        pthread_mutex_lock(run->lock);
        if (served >= 0 && *run->n_grants < MAX_GRANTS)
            run->grants[(*run->n_grants)++] = served;
        else
            atomic_fetch_add(run->failures, 1);
        pthread_mutex_unlock(run->lock);
    }
    if (c)
        redisFree(c);
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void test_no_more_than_rate_grants_in_any_sliding_second(void **state)
{
    struct ratelimit_conf rc = conf(4, 10000);
    redisContext *c = peek_connect(redis_port);
    int64_t until = redis_time_us(c) + 3000000;
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    int64_t grants[MAX_GRANTS];
    int n = 0;
    atomic_int failures = 0;
    const char *assocs[] = {"assoc-a", "assoc-b", "assoc-c"};
    struct spacing_run runs[3];
    pthread_t threads[3];
    for (int i = 0; i < 3; i++) {
        runs[i] = (struct spacing_run){&rc, assocs[i], until, &lock, grants, &n, &failures};
        assert_int_equal(pthread_create(&threads[i], NULL, spacing_thread, &runs[i]), 0);
    }
    for (int i = 0; i < 3; i++)
        pthread_join(threads[i], NULL);
    assert_int_equal(atomic_load(&failures), 0);

    qsort(grants, (size_t)n, sizeof grants[0], cmp_i64);
    /* It does grant: about 3 s / 270 ms; a loose floor, this is no speed test. */
    assert_true(n >= 6);
    int64_t spacing_us = 250000 + RATELIMIT_DEFAULT_MARGIN_NS / 1000;
    for (int i = 1; i < n; i++)
        assert_true(grants[i] - grants[i - 1] >= spacing_us);
    /* Any 5 consecutive grants span more than one second: no window of 1 s
     * holds more than 4. */
    for (int i = 4; i < n; i++)
        assert_true(grants[i] - grants[i - 4] > 1000000);

    long used = 0;
    assert_int_equal(ratelimit_used_today(c, &rc, &used), 0);
    assert_int_equal(used, n);
    redisFree(c);
}

/* ---- the daily limit ---- */

static void test_daily_limit_answers_quota_until_midnight_utc(void **state)
{
    struct ratelimit_conf rc = conf(1000, 3);
    redisContext *c = peek_connect(redis_port);
    for (int i = 0; i < 3; i++)
        assert_int_equal(ratelimit_wait(c, &rc, "assoc-a", NULL, NULL), RATELIMIT_GRANTED);

    int64_t wait_ns = -1;
    assert_int_equal(ratelimit_acquire(c, &rc, "assoc-a", &wait_ns), RATELIMIT_QUOTA);
    int64_t now = redis_time_us(c);
    int64_t midnight = (now / 1000000 / 86400 + 1) * 86400 * 1000000LL;
    /* Computed by the script a moment before "now". */
    assert_true(wait_ns >= (midnight - now) * 1000);
    assert_true(wait_ns - (midnight - now) * 1000 < 1000000000LL);
    /* Another association is refused too: the budget is the application's. */
    assert_int_equal(ratelimit_acquire(c, &rc, "assoc-b", &wait_ns), RATELIMIT_QUOTA);
    assert_int_equal(ratelimit_wait(c, &rc, "assoc-b", NULL, &wait_ns), RATELIMIT_QUOTA);
    assert_true(wait_ns > 0);

    long used = 0;
    assert_int_equal(ratelimit_used_today(c, &rc, &used), 0);
    assert_int_equal(used, 3);

    /* The counter is keyed by today's UTC date and lives two days. */
    long long ttl = 0;
    assert_int_equal(peek_budget_day(c, "test-app", (time_t)(now / 1000000), &ttl), 3);
    assert_true(ttl > 172700 && ttl <= 172800);
    redisFree(c);
}

/* ---- the quota_exceeded pause ---- */

static void test_pause_until_midnight_stops_every_connection(void **state)
{
    struct ratelimit_conf rc = conf(1000, 10000);
    redisContext *one = peek_connect(redis_port);
    redisContext *other = peek_connect(redis_port);
    int64_t until = 0, seen = -1, wait_ns = 0;

    assert_int_equal(ratelimit_paused_until(other, &rc, &seen), 0);
    assert_int_equal(seen, 0);
    assert_int_equal(ratelimit_acquire(other, &rc, "assoc-b", &wait_ns), RATELIMIT_GRANTED);

    assert_int_equal(ratelimit_pause_until_midnight(one, &rc, &until), 0);
    int64_t now = redis_time_us(other);
    int64_t midnight_ns = (now / 1000000 / 86400 + 1) * 86400 * 1000000000LL;
    assert_true(until == midnight_ns);

    assert_int_equal(ratelimit_paused_until(other, &rc, &seen), 0);
    assert_true(seen == midnight_ns);
    assert_int_equal(ratelimit_acquire(other, &rc, "assoc-b", &wait_ns), RATELIMIT_QUOTA);
    assert_true(wait_ns > 0 && wait_ns <= midnight_ns - now * 1000 + 1000000000LL);
    assert_true(wait_ns >= midnight_ns - now * 1000 - 1000000000LL);

    /* Nothing was counted while paused, and pausing again changes nothing. */
    long used = -1;
    assert_int_equal(ratelimit_used_today(other, &rc, &used), 0);
    assert_int_equal(used, 1);
    assert_int_equal(ratelimit_pause_until_midnight(other, &rc, &until), 0);
    assert_true(until == midnight_ns);
    redisFree(one);
    redisFree(other);
}

/* ---- fairness ---- */

#define FAIR_GRANTS 12

struct fair_run {
    const struct ratelimit_conf *rc;
    const char *association;
    pthread_mutex_t *lock;
    const char **order; /* shared: the association of each grant, in order */
    int *n;
    int *failures;
    atomic_bool *stop;
};

static void *fair_thread(void *arg)
{
    struct fair_run *run = arg;
    redisContext *c = redisConnect("127.0.0.1", redis_port);
    while (c && !c->err) {
        enum ratelimit_result res = ratelimit_wait(c, run->rc, run->association, run->stop, NULL);
        if (res == RATELIMIT_STOPPED)
            break;
        pthread_mutex_lock(run->lock);
        if (res != RATELIMIT_GRANTED) {
            *run->failures += 1;
            atomic_store(run->stop, true);
        }
        /* Grants are 120 ms apart: recording right after is in grant order. */
        if (res == RATELIMIT_GRANTED && *run->n < FAIR_GRANTS)
            run->order[(*run->n)++] = run->association;
        if (*run->n == FAIR_GRANTS)
            atomic_store(run->stop, true);
        pthread_mutex_unlock(run->lock);
    }
    if (c)
        redisFree(c);
    return NULL;
}

static void test_two_associations_take_turns_however_many_threads_ask(void **state)
{
    struct ratelimit_conf rc = conf(10, 10000);
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    const char *order[FAIR_GRANTS];
    int n = 0, failures = 0;
    atomic_bool stop = false;
    /* "busy" asks with three threads, "quiet" with one: still one grant each in turn. */
    struct fair_run runs[4] = {
        {&rc, "busy", &lock, order, &n, &failures, &stop},
        {&rc, "busy", &lock, order, &n, &failures, &stop},
        {&rc, "busy", &lock, order, &n, &failures, &stop},
        {&rc, "quiet", &lock, order, &n, &failures, &stop},
    };
    pthread_t threads[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, fair_thread, &runs[i]), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(threads[i], NULL);

    assert_int_equal(failures, 0);
    assert_int_equal(n, FAIR_GRANTS);
    for (int i = 1; i < FAIR_GRANTS; i++)
        assert_string_not_equal(order[i], order[i - 1]);
}

static void test_waiter_that_vanished_stops_holding_the_queue(void **state)
{
    struct ratelimit_conf rc = conf(10, 10000);
    redisContext *c = peek_connect(redis_port);
    int64_t wait_ns = 0;
    assert_int_equal(ratelimit_acquire(c, &rc, "served", &wait_ns), RATELIMIT_GRANTED);
    /* "gone" was never served, so it is first in line; it asks once and never again. */
    assert_int_equal(ratelimit_acquire(c, &rc, "gone", &wait_ns), RATELIMIT_WAIT);
    int64_t start = redis_time_us(c), waited = 0;
    /* Not ratelimit_wait: without the stale rule this would wait forever. */
    for (;;) {
        enum ratelimit_result res = ratelimit_acquire(c, &rc, "served", &wait_ns);
        if (res != RATELIMIT_WAIT) {
            assert_int_equal(res, RATELIMIT_GRANTED);
            break;
        }
        waited = redis_time_us(c) - start;
        assert_true(waited < RATELIMIT_MIN_STALE_NS / 1000 + 2000000);
        struct timespec ts = {0, (long)wait_ns};
        nanosleep(&ts, NULL);
    }
    waited = redis_time_us(c) - start;
    /* Held up until "gone" went stale, then served. */
    assert_true(waited >= RATELIMIT_MIN_STALE_NS / 1000 - 200000);
    assert_true(waited < RATELIMIT_MIN_STALE_NS / 1000 + 2000000);
    redisFree(c);
}

static void test_wait_gives_up_when_told_to_stop(void **state)
{
    struct ratelimit_conf rc = conf(0.5, 10000);
    redisContext *c = peek_connect(redis_port);
    atomic_bool stop = false;
    assert_int_equal(ratelimit_wait(c, &rc, "assoc-a", &stop, NULL), RATELIMIT_GRANTED);
    atomic_store(&stop, true);
    assert_int_equal(ratelimit_wait(c, &rc, "assoc-a", &stop, NULL), RATELIMIT_STOPPED);
    redisFree(c);
}

/* Sleeps until the bucket allows the next grant (wait_ns as the budget said). */
static void nap_ns(int64_t wait_ns)
{
    struct timespec ts = {(time_t)(wait_ns / 1000000000LL), (long)(wait_ns % 1000000000LL)};
    nanosleep(&ts, NULL);
}

static void test_class_goes_before_least_used_and_every_grant_is_counted(void **state)
{
    struct ratelimit_conf rc = conf(10, 10000);
    redisContext *c = peek_connect(redis_port);
    int64_t wait_ns = 0;
    assert_int_equal(ratelimit_acquire(c, &rc, "busy", &wait_ns), RATELIMIT_GRANTED);
    /* "poller" (never served, class 3) asks first; "busy" (served once, class 1) after. */
    assert_int_equal(ratelimit_acquire_class(c, &rc, "poller", BUDGET_RECONCILE, &wait_ns),
                     RATELIMIT_WAIT);
    assert_int_equal(ratelimit_acquire_class(c, &rc, "busy", BUDGET_CHANGES, &wait_ns),
                     RATELIMIT_WAIT);
    nap_ns(wait_ns);
    /* Class 1 first, although "busy" used more today. */
    assert_int_equal(ratelimit_acquire_class(c, &rc, "poller", BUDGET_RECONCILE, &wait_ns),
                     RATELIMIT_WAIT);
    assert_int_equal(ratelimit_acquire_class(c, &rc, "busy", BUDGET_CHANGES, &wait_ns),
                     RATELIMIT_GRANTED);
    enum ratelimit_result res;
    while ((res = ratelimit_acquire_class(c, &rc, "poller", BUDGET_RECONCILE, &wait_ns)) ==
           RATELIMIT_WAIT)
        nap_ns(wait_ns);
    assert_int_equal(res, RATELIMIT_GRANTED);

    struct ratelimit_snapshot snap;
    assert_int_equal(ratelimit_snapshot(c, &rc, &snap), 0);
    assert_int_equal(snap.used, 3);
    assert_int_equal(snap.used_by_class[BUDGET_CHANGES], 2);
    assert_int_equal(snap.used_by_class[BUDGET_FULL_SYNC], 0);
    assert_int_equal(snap.used_by_class[BUDGET_RECONCILE], 1);
    /* Three grants within a second: each adds 1/600 to its class's rate. */
    assert_true(snap.rate_by_class[BUDGET_CHANGES] > 1.9 / BUDGET_RATE_WINDOW_S);
    assert_true(snap.rate_by_class[BUDGET_CHANGES] < 2.0 / BUDGET_RATE_WINDOW_S + 1e-9);
    struct redisReply *pairs = NULL;
    assert_int_equal(ratelimit_by_association(c, &rc, &pairs), 0);
    assert_int_equal(pairs->elements, 4);
    for (size_t i = 0; i < pairs->elements; i += 2)
        assert_string_equal(pairs->element[i + 1]->str,
                            strcmp(pairs->element[i]->str, "busy") == 0 ? "2" : "1");
    freeReplyObject(pairs);
    redisFree(c);
}

static void test_reserve_past_the_ceiling_is_for_class_1(void **state)
{
    struct ratelimit_conf rc = conf(1000, 20); /* ceiling 95%: 19 */
    redisContext *c = peek_connect(redis_port);
    int64_t wait_ns = 0;
    for (int i = 0; i < 19; i++)
        assert_int_equal(ratelimit_wait(c, &rc, "assoc-a", NULL, NULL), RATELIMIT_GRANTED);
    assert_int_equal(ratelimit_acquire_class(c, &rc, "assoc-b", BUDGET_FULL_SYNC, &wait_ns),
                     RATELIMIT_WAIT);
    assert_int_equal(wait_ns, 60000000000LL);
    assert_int_equal(ratelimit_acquire_class(c, &rc, "assoc-b", BUDGET_REFRESH, &wait_ns),
                     RATELIMIT_WAIT);
    enum ratelimit_result res;
    while ((res = ratelimit_acquire_class(c, &rc, "assoc-b", BUDGET_CHANGES, &wait_ns)) ==
           RATELIMIT_WAIT)
        nap_ns(wait_ns);
    assert_int_equal(res, RATELIMIT_GRANTED);
    assert_int_equal(ratelimit_acquire_class(c, &rc, "assoc-b", BUDGET_CHANGES, &wait_ns),
                     RATELIMIT_QUOTA);
    redisFree(c);
}

static void test_redis_failure_is_an_error(void **state)
{
    struct ratelimit_conf rc = conf(4, 10000);
    redisContext *c = peek_connect(redis_port);
    freeReplyObject(redisCommand(c, "CLIENT KILL SKIPME no"));
    int64_t wait_ns = 0;
    assert_int_equal(ratelimit_acquire(c, &rc, "assoc-a", &wait_ns), RATELIMIT_ERROR);
    redisFree(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_no_more_than_rate_grants_in_any_sliding_second, flush),
        cmocka_unit_test_setup(test_daily_limit_answers_quota_until_midnight_utc, flush),
        cmocka_unit_test_setup(test_pause_until_midnight_stops_every_connection, flush),
        cmocka_unit_test_setup(test_two_associations_take_turns_however_many_threads_ask, flush),
        cmocka_unit_test_setup(test_waiter_that_vanished_stops_holding_the_queue, flush),
        cmocka_unit_test_setup(test_class_goes_before_least_used_and_every_grant_is_counted, flush),
        cmocka_unit_test_setup(test_reserve_past_the_ceiling_is_for_class_1, flush),
        cmocka_unit_test_setup(test_wait_gives_up_when_told_to_stop, flush),
        cmocka_unit_test_setup(test_redis_failure_is_an_error, flush),
    };
    return cmocka_run_group_tests(tests, start_redis, stop_redis);
}
