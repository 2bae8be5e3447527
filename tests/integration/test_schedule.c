/*
 * test_schedule.c - the sync schedule against a real redis-server: a group
 * made dirty wakes its association in the global index, a claim takes due
 * groups with free leases and parks them, a group whose lease someone holds is
 * parked at that lease's end, a fold that lands between a claim's script and
 * its settle is not lost, a finish takes a group out or makes it due again,
 * and the repair puts back an association's earliest due.
 */
#include <hiredis/hiredis.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ccsync/keys.h"
#include "ccsync/schedule.h"
#include "ccsync/store.h"
#include "peek.h"
#include "testsupport.h"

#define LEASE_MS 60000

static struct {
    pid_t redis_pid;
    redisContext *c;
} S;

static int setup(void **state)
{
    (void)state;
    S.c = peek_redis_open(&S.redis_pid, NULL);
    return S.c ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    peek_redis_close(S.c, S.redis_pid);
    S.c = NULL;
    return 0;
}

static int64_t now_ms(void)
{
    return store_now_ns() / 1000000;
}

/* A zset member's score, or -1 when it is absent. */
static long long score(const char *key, const char *member)
{
    redisReply *r = redisCommand(S.c, "ZSCORE %s %s", key, member);
    assert_non_null(r);
    long long s = r->type == REDIS_REPLY_STRING ? atoll(r->str) : -1;
    freeReplyObject(r);
    return s;
}

/* Puts group g of association a in the schedule, due at due_ms, as a fold's
 * script does (without waking the association). */
static void dirty(const char *a, const char *g, int64_t due_ms)
{
    assert_int_equal(store_exec(S.c, "ZADD %s %lld %s", key_dirty(a).s, (long long)due_ms, g),
                     STORE_OK);
}

static void test_wake_lowers_the_association_entry_only(void **state)
{
    (void)state;
    assert_int_equal(schedule_wake(S.c, "a1", 5000), STORE_OK);
    assert_int_equal(schedule_wake(S.c, "a1", 9000), STORE_OK);
    assert_int_equal(score(KEY_DUE, "a1"), 5000);
    assert_int_equal(schedule_wake(S.c, "a1", 1000), STORE_OK);
    assert_int_equal(score(KEY_DUE, "a1"), 1000);
    assert_int_equal(schedule_wake(S.c, "a1", SCHEDULE_NONE), STORE_OK);
    assert_int_equal(score(KEY_DUE, "a1"), 1000);
}

static void test_claim_takes_due_groups_and_parks_them_at_the_lease_end(void **state)
{
    (void)state;
    int64_t now = now_ms();
    dirty("a1", "g1", now - 10);
    dirty("a1", "g2", now - 5);
    dirty("a1", "later", now + 30000);
    assert_int_equal(schedule_wake(S.c, "a1", now - 10), STORE_OK);
    struct schedule_claim got[4];
    size_t n = 0;
    assert_int_equal(schedule_claim(S.c, "a1", now, LEASE_MS, "tok", got, 4, &n), STORE_OK);
    assert_int_equal(n, 2);
    assert_string_equal(got[0].group, "g1");
    assert_string_equal(got[1].group, "g2");
    assert_int_equal(score(key_dirty("a1").s, "g1"), now + LEASE_MS);
    assert_int_equal(score(key_dirty("a1").s, "g2"), now + LEASE_MS);
    redisReply *r = redisCommand(S.c, "GET %s", key_lease("a1", "g1").s);
    assert_string_equal(r->str, "tok");
    freeReplyObject(r);
    /* The association is due next when its not yet due group is. */
    assert_int_equal(score(KEY_DUE, "a1"), now + 30000);
}

static void test_claim_takes_at_most_max_groups_and_leaves_the_rest_due(void **state)
{
    (void)state;
    int64_t now = now_ms();
    for (int i = 0; i < 5; i++) {
        char g[8];
        snprintf(g, sizeof g, "g%d", i);
        dirty("a1", g, now - 100 + i);
    }
    struct schedule_claim got[3];
    size_t n = 0;
    assert_int_equal(schedule_claim(S.c, "a1", now, LEASE_MS, "tok", got, 3, &n), STORE_OK);
    assert_int_equal(n, 3);
    assert_int_equal(score(KEY_DUE, "a1"), now - 100 + 3);
}

static void test_burst_still_arriving_is_held_until_quiet_or_the_cap(void **state)
{
    (void)state;
    int64_t now = now_ms();
    dirty("a1", "burst", now - 10);
    dirty("a1", "quiet", now - 10);
    /* burst's last change asked to be due 500 ms from now: it is still arriving. */
    assert_int_equal(
        store_exec(S.c, "HSET %s last_due %lld", key_group("a1", "burst").s, (long long)now + 500),
        STORE_OK);
    assert_int_equal(
        store_exec(S.c, "HSET %s last_due %lld", key_group("a1", "quiet").s, (long long)now - 10),
        STORE_OK);
    struct schedule_claim got[4];
    size_t n = 0;
    assert_int_equal(schedule_claim_quiet(S.c, "a1", now, LEASE_MS, 10000, "tok", got, 4, &n),
                     STORE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(got[0].group, "quiet");
    assert_int_equal(score(key_dirty("a1").s, "burst"), now + 500); /* when it goes quiet */
    /* Still arriving 9 s later: held only up to the cap after it was first held. */
    assert_int_equal(store_exec(S.c, "HSET %s last_due %lld", key_group("a1", "burst").s,
                                (long long)now + 20000),
                     STORE_OK);
    assert_int_equal(
        schedule_claim_quiet(S.c, "a1", now + 9000, LEASE_MS, 10000, "tok", got, 4, &n), STORE_OK);
    assert_int_equal(n, 0);
    assert_int_equal(score(key_dirty("a1").s, "burst"), now + 10000);
    assert_int_equal(
        schedule_claim_quiet(S.c, "a1", now + 10000, LEASE_MS, 10000, "tok", got, 4, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(got[0].group, "burst");
    /* A plain claim never holds. */
    dirty("a1", "again", now - 10);
    assert_int_equal(
        store_exec(S.c, "HSET %s last_due %lld", key_group("a1", "again").s, (long long)now + 500),
        STORE_OK);
    assert_int_equal(schedule_claim(S.c, "a1", now, LEASE_MS, "tok", got, 4, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(got[0].group, "again");
}

static void test_group_whose_lease_is_held_is_parked_at_that_lease_end(void **state)
{
    (void)state;
    int64_t now = now_ms();
    assert_int_equal(store_exec(S.c, "SET %s other PX 5000", key_lease("a1", "g1").s), STORE_OK);
    dirty("a1", "g1", now - 10);
    struct schedule_claim got[2];
    size_t n = 9;
    assert_int_equal(schedule_claim(S.c, "a1", now, LEASE_MS, "tok", got, 2, &n), STORE_OK);
    assert_int_equal(n, 0);
    long long parked = score(key_dirty("a1").s, "g1");
    assert_true(parked > now + 4000 && parked <= now + 5000);
    assert_int_equal(score(KEY_DUE, "a1"), parked);
}

/* The race the settle's second read is for: a fold lands after the claim
 * script saw the association (its earliest due then: far) and before the
 * worker sets the association's entry to that. */
static void test_fold_between_claim_script_and_settle_is_not_lost(void **state)
{
    (void)state;
    int64_t now = now_ms();
    dirty("a1", "g1", now + LEASE_MS);                                /* parked by the claim */
    dirty("a1", "g2", now + 1000);                                    /* the fold's script... */
    assert_int_equal(schedule_wake(S.c, "a1", now + 1000), STORE_OK); /* ...and its wake */
    assert_int_equal(schedule_settle(S.c, "a1", now + LEASE_MS), STORE_OK);
    assert_int_equal(score(KEY_DUE, "a1"), now + 1000);
}

static void test_settle_of_an_empty_schedule_removes_the_association(void **state)
{
    (void)state;
    assert_int_equal(schedule_wake(S.c, "a1", 1000), STORE_OK);
    assert_int_equal(schedule_settle(S.c, "a1", SCHEDULE_NONE), STORE_OK);
    assert_int_equal(score(KEY_DUE, "a1"), -1);
}

static void test_finish_done_takes_the_group_out_unless_it_changed(void **state)
{
    (void)state;
    int64_t now = now_ms(), earliest = 0;
    dirty("a1", "same", now);
    dirty("a1", "changed", now);
    assert_int_equal(store_exec(S.c, "HSET %s gen 2", key_group("a1", "changed").s), STORE_OK);
    assert_int_equal(schedule_finish(S.c, "a1", "same", "0", true, now + 700, &earliest), STORE_OK);
    assert_int_equal(score(key_dirty("a1").s, "same"), -1);
    assert_int_equal(schedule_finish(S.c, "a1", "changed", "1", true, now + 700, &earliest),
                     STORE_OK);
    assert_int_equal(score(key_dirty("a1").s, "changed"), now + 700);
    assert_int_equal(earliest, now + 700);
}

static void test_finish_retry_is_due_later_and_counted_retrying(void **state)
{
    (void)state;
    int64_t now = now_ms(), earliest = 0;
    dirty("a1", "g1", now);
    assert_int_equal(schedule_finish(S.c, "a1", "g1", "0", false, now + 4000, &earliest), STORE_OK);
    assert_int_equal(score(key_dirty("a1").s, "g1"), now + 4000);
    redisReply *r =
        redisCommand(S.c, "SISMEMBER %s %s", KEY_RETRYING, key_schedule_member("a1", "g1").s);
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
    assert_int_equal(schedule_finish(S.c, "a1", "g1", "0", true, now, &earliest), STORE_OK);
    assert_int_equal(earliest, SCHEDULE_NONE);
    r = redisCommand(S.c, "SCARD %s", KEY_RETRYING);
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
}

static void test_due_associations_come_earliest_first(void **state)
{
    (void)state;
    int64_t now = now_ms();
    assert_int_equal(schedule_wake(S.c, "late", now - 100), STORE_OK);
    assert_int_equal(schedule_wake(S.c, "early", now - 200), STORE_OK);
    assert_int_equal(schedule_wake(S.c, "future", now + 100000), STORE_OK);
    char due[4][CCSYNC_ASSOC_ID_MAX + 1];
    size_t n = 0;
    assert_int_equal(schedule_due_associations(S.c, now, due, 4, &n), STORE_OK);
    assert_int_equal(n, 2);
    assert_string_equal(due[0], "early");
    assert_string_equal(due[1], "late");
}

static void test_repair_puts_back_a_lost_entry_and_counts_waiting_groups(void **state)
{
    (void)state;
    assert_int_equal(store_exec(S.c, "SADD %s a1 a2", KEY_ASSOCIATIONS), STORE_OK);
    dirty("a1", "g1", 3000);
    dirty("a1", "g2", 2000);
    dirty("a2", "g1", 9000);
    assert_int_equal(schedule_wake(S.c, "a2", 5000), STORE_OK);
    assert_int_equal(schedule_repair(S.c), STORE_OK);
    assert_int_equal(score(KEY_DUE, "a1"), 2000);
    assert_int_equal(score(KEY_DUE, "a2"), 5000); /* early is kept: never late */
    long long waiting = 0;
    assert_int_equal(schedule_waiting(S.c, &waiting), STORE_OK);
    assert_int_equal(waiting, 3);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_wake_lowers_the_association_entry_only),
        T(test_claim_takes_due_groups_and_parks_them_at_the_lease_end),
        T(test_claim_takes_at_most_max_groups_and_leaves_the_rest_due),
        T(test_burst_still_arriving_is_held_until_quiet_or_the_cap),
        T(test_group_whose_lease_is_held_is_parked_at_that_lease_end),
        T(test_fold_between_claim_script_and_settle_is_not_lost),
        T(test_settle_of_an_empty_schedule_removes_the_association),
        T(test_finish_done_takes_the_group_out_unless_it_changed),
        T(test_finish_retry_is_due_later_and_counted_retrying),
        T(test_due_associations_come_earliest_first),
        T(test_repair_puts_back_a_lost_entry_and_counts_waiting_groups),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
