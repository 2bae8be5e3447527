/*
 * test_lease.c - leases, their heartbeat and the fence on a sync's writes,
 * against a real redis-server (no ccsyncd): the keeper keeps a lease alive
 * past its time to live and lets it run out once stopped; a lease another
 * holder took is not renewed; every kind of write of a sync (a plain field, the
 * journal, a pipelined applied entry, a script's write, the group's forget) is
 * refused with FENCED once the group's lease holds another token, and goes
 * through while it holds the writer's (the retry count, the schedule's finish,
 * the group tag, the fields in flight and the audit too); the same instance restarted after a
 * kill gives back its predecessor's leases at once, a live twin's never.
 */
#include <hiredis/hiredis.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ccsync/config.h"
#include "ccsync/groupstore.h"
#include "ccsync/keys.h"
#include "ccsync/lease.h"
#include "ccsync/schedule.h"
#include "ccsync/store.h"
#include "peek.h"
#include "testsupport.h"

#define A "acme"
#define G "g1"

static struct {
    pid_t redis_pid;
    int port;
    redisContext *c;
} S;

static int setup(void **state)
{
    (void)state;
    S.c = peek_redis_open(&S.redis_pid, &S.port);
    return S.c ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    peek_redis_close(S.c, S.redis_pid);
    S.c = NULL;
    return 0;
}

/* The string value of a key ("" when none) into out. */
static const char *get(const char *key, char *out, size_t size)
{
    redisReply *r = redisCommand(S.c, "GET %s", key);
    snprintf(out, size, "%s", r && r->type == REDIS_REPLY_STRING ? r->str : "");
    freeReplyObject(r);
    return out;
}

static const char *hget(const char *key, const char *field, char *out, size_t size)
{
    redisReply *r = redisCommand(S.c, "HGET %s %s", key, field);
    snprintf(out, size, "%s", r && r->type == REDIS_REPLY_STRING ? r->str : "");
    freeReplyObject(r);
    return out;
}

static long long integer(const char *fmt, const char *arg)
{
    redisReply *r = redisCommand(S.c, fmt, arg);
    long long v = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -99;
    freeReplyObject(r);
    return v;
}

static void take(struct lease *l, int ms)
{
    struct key k = key_lease(A, G);
    assert_int_equal(lease_take(S.c, l, &k, ms), 1);
}

static void test_keeper_renews_a_held_lease_and_lets_it_go_when_stopped(void **state)
{
    (void)state;
    struct redis_target t = {.host = "127.0.0.1", .port = S.port};
    struct lease l;
    take(&l, 600);
    struct lease_keeper *k = lease_keeper_start(&t, 600, 2, NULL, NULL);
    assert_non_null(k);
    lease_keeper_hold(k, 1, &l, 1);
    ts_sleep_ms(1500); /* 2.5 lease times */
    char v[64];
    assert_string_equal(get(l.key, v, sizeof v), l.token);
    assert_int_equal(lease_check(S.c, &l), 1);

    /* Handed back (hold of none): no longer renewed, it runs out. */
    lease_keeper_hold(k, 1, &l, 0);
    ts_sleep_ms(1000);
    assert_string_equal(get(l.key, v, sizeof v), "");
    assert_int_equal(lease_check(S.c, &l), 0);
    lease_keeper_stop(k);
}

static void test_keeper_does_not_renew_a_lease_taken_over(void **state)
{
    (void)state;
    struct redis_target t = {.host = "127.0.0.1", .port = S.port};
    struct lease l;
    take(&l, 5000);
    struct lease_keeper *k = lease_keeper_start(&t, 600, 1, NULL, NULL);
    lease_keeper_hold(k, 0, &l, 1);
    /* Another holder took it (as after our pause): 700 ms to live, its own. */
    redisReply *r = redisCommand(S.c, "SET %s other-token PX 700", l.key);
    freeReplyObject(r);
    ts_sleep_ms(1200);
    char v[64];
    assert_string_equal(get(l.key, v, sizeof v), ""); /* ran out: we did not extend it */
    assert_int_equal(lease_check(S.c, &l), 0);
    lease_keeper_stop(k);
}

/* The orphan callback's calls (the keeper thread writes, the test reads after stopping it). */
static int orphans;
static char orphan_key[KEY_MAX];

static void count_orphan(redisContext *c, const char *lease_key)
{
    (void)c;
    orphans++;
    snprintf(orphan_key, sizeof orphan_key, "%s", lease_key);
}

static void test_restarted_instance_gives_back_its_killed_predecessor_s_leases_at_once(void **state)
{
    (void)state;
    struct redis_target t = {.host = "127.0.0.1", .port = S.port};
    struct lease l;
    take(&l, 9000);
    struct lease_keeper *dead = lease_keeper_start(&t, 9000, 1, "host-a:8080", NULL);
    lease_keeper_hold(dead, 0, &l, 1);
    ts_sleep_ms(1300);       /* a beat recorded the lease under the instance's name */
    lease_keeper_stop(dead); /* as killed: nothing given back, the record stays */
    assert_int_equal(lease_check(S.c, &l), 1);

    orphans = 0;
    long t0 = ts_now_ms();
    struct lease_keeper *next = lease_keeper_start(&t, 9000, 1, "host-a:8080", count_orphan);
    while (lease_check(S.c, &l) == 1 && ts_now_ms() - t0 < 8000)
        ts_sleep_ms(50);
    long ms = ts_now_ms() - t0;
    lease_keeper_stop(next);
    assert_int_equal(lease_check(S.c, &l), 0);
    assert_true(ms < 4000); /* three beats of silence, not the 9 s lease */
    assert_int_equal(orphans, 1);
    assert_string_equal(orphan_key, l.key);
}

static void test_a_live_twin_with_the_same_name_keeps_its_leases(void **state)
{
    (void)state;
    struct redis_target t = {.host = "127.0.0.1", .port = S.port};
    struct lease l;
    take(&l, 9000);
    struct lease_keeper *live = lease_keeper_start(&t, 9000, 1, "host-b:8080", NULL);
    lease_keeper_hold(live, 0, &l, 1);
    ts_sleep_ms(1300);
    orphans = 0;
    struct lease_keeper *twin = lease_keeper_start(&t, 9000, 1, "host-b:8080", count_orphan);
    ts_sleep_ms(4500);
    lease_keeper_stop(twin);
    assert_int_equal(lease_check(S.c, &l), 1);
    assert_int_equal(orphans, 0);
    lease_keeper_stop(live);
}

static void test_writes_of_a_sync_are_refused_once_the_lease_is_another_s(void **state)
{
    (void)state;
    struct lease l;
    take(&l, 60000);
    struct key group = key_group(A, G), applied = key_applied(A, G);
    char v[256];

    /* Ours: every write goes through. */
    assert_int_equal(group_set_syncing(S.c, A, G, l.token), STORE_OK);
    assert_int_equal(group_journal_write(S.c, A, G, l.token, "{\"op\":\"import\"}"), STORE_OK);
    applied_append_put(S.c, A, G, l.token, "a@x.org", "on", "c1", "Ann", "Lee", NULL);
    assert_int_equal(store_drain(S.c, 1), STORE_OK);
    assert_int_equal(applied_set_contact_id(S.c, A, G, l.token, "a@x.org", "c2"), STORE_OK);
    assert_string_equal(hget(group.s, "state", v, sizeof v), "syncing");
    assert_string_equal(hget(applied.s, "a@x.org", v, sizeof v), "[\"on\",\"c2\",\"Ann\",\"Lee\"]");

    /* Taken over: each kind of write is refused and changes nothing. */
    redisReply *r = redisCommand(S.c, "SET %s new-holder", l.key);
    freeReplyObject(r);
    assert_int_equal(group_set_synced(S.c, A, G, l.token), STORE_ERR);
    assert_int_equal(group_journal_clear(S.c, A, G, l.token), STORE_ERR);
    assert_int_equal(group_link_list(S.c, A, G, l.token, "L9", "Other"), STORE_ERR);
    applied_append_put(S.c, A, G, l.token, "b@x.org", "on", "c3", "", "", NULL);
    applied_append_remove(S.c, A, G, l.token, "a@x.org");
    assert_int_equal(store_drain(S.c, 2), STORE_ERR);
    assert_int_equal(applied_set_contact_id(S.c, A, G, l.token, "a@x.org", "c4"), STORE_ERR);
    assert_int_equal(applied_remove(S.c, A, G, l.token, "a@x.org"), STORE_ERR);
    r = redisCommand(S.c, "HSET %s deleted 1", group.s);
    freeReplyObject(r);
    assert_int_equal(group_forget(S.c, A, G, l.token), STORE_ERR);

    assert_false(S.c->err); /* a refusal is an answer, not a broken connection */
    assert_string_equal(hget(group.s, "state", v, sizeof v), "syncing");
    assert_string_equal(hget(group.s, "journal", v, sizeof v), "{\"op\":\"import\"}");
    assert_string_equal(hget(group.s, "list_id", v, sizeof v), "");
    assert_int_equal(integer("HLEN %s", applied.s), 1);
    assert_string_equal(hget(applied.s, "a@x.org", v, sizeof v), "[\"on\",\"c2\",\"Ann\",\"Lee\"]");

    /* Unfenced (no lease held: tools, tests) writes as before. */
    assert_int_equal(group_journal_clear(S.c, A, G, NULL), STORE_OK);
    assert_string_equal(hget(group.s, "journal", v, sizeof v), "");
}

/* The rest of a sync's writes (the retry count, the schedule's finish, the group
 * tag, the fields in flight, the audit): through while the lease is the writer's,
 * refused and unchanged once it is another's. */
static void test_finish_tags_fields_and_audit_are_fenced_too(void **state)
{
    (void)state;
    struct lease l;
    take(&l, 60000);
    struct key group = key_group(A, G), tagged = key_group_tag(A, G), sent = key_fields_sent(A, G),
               audit = key_audit(A), dirty = key_dirty(A);
    const char *emails[] = {"a@x.org"}, *digests[] = {"d1"};
    char v[256];
    long n = 0;
    int64_t earliest;
    redisReply *r = redisCommand(S.c, "ZADD %s 5 %s", dirty.s, G);
    freeReplyObject(r);

    assert_int_equal(group_count_attempt(S.c, A, G, l.token, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_int_equal(group_tag_store(S.c, A, G, l.token, "t1", "novi Board"), STORE_OK);
    group_tag_append(S.c, A, G, l.token, "a@x.org", "c1");
    fields_sent_append(S.c, A, G, l.token, emails, digests, 1);
    assert_int_equal(store_drain(S.c, 2), STORE_OK);
    assert_int_equal(group_audit(S.c, A, G, l.token, "list_created", "L1", "Board", ""), STORE_OK);
    assert_int_equal(schedule_finish_fenced(S.c, A, G, "0", l.token, false, 7000, &earliest),
                     STORE_OK);
    assert_int_equal(earliest, 7000);

    r = redisCommand(S.c, "SET %s new-holder", l.key);
    freeReplyObject(r);
    assert_int_equal(group_count_attempt(S.c, A, G, l.token, &n), STORE_ERR);
    assert_int_equal(group_clear_attempts(S.c, A, G, l.token), STORE_ERR);
    assert_int_equal(group_tag_store(S.c, A, G, l.token, "t2", "novi Other"), STORE_ERR);
    group_tag_append(S.c, A, G, l.token, "a@x.org", NULL);
    group_tag_append(S.c, A, G, l.token, "b@x.org", "c2");
    fields_sent_append(S.c, A, G, l.token, emails, digests, 1);
    assert_int_equal(store_drain(S.c, 3), STORE_ERR);
    assert_int_equal(fields_sent_clear(S.c, A, G, l.token), STORE_ERR);
    assert_int_equal(group_tag_forget(S.c, A, G, l.token), STORE_ERR);
    assert_int_equal(group_audit(S.c, A, G, l.token, "list_deleted", "L1", "Board", ""), STORE_ERR);
    assert_int_equal(schedule_finish_fenced(S.c, A, G, "0", l.token, true, 9000, &earliest),
                     SCHEDULE_FENCED);

    assert_false(S.c->err);
    assert_string_equal(hget(group.s, "attempts", v, sizeof v), "1");
    assert_string_equal(hget(group.s, "tag_id", v, sizeof v), "t1");
    assert_string_equal(hget(group.s, "tag_name", v, sizeof v), "novi Board");
    assert_int_equal(integer("HLEN %s", tagged.s), 1);
    assert_string_equal(hget(tagged.s, "a@x.org", v, sizeof v), "c1");
    assert_string_equal(hget(sent.s, "a@x.org", v, sizeof v), "d1");
    assert_int_equal(integer("LLEN %s", audit.s), 1);
    r = redisCommand(S.c, "ZSCORE %s %s", dirty.s, G);
    assert_string_equal(r->str, "7000");
    freeReplyObject(r);
    assert_int_equal(integer("SISMEMBER " KEY_RETRYING " %s", key_schedule_member(A, G).s), 1);
}

/* The fields in flight of a 10,000-contact import (§12: 17 fields make two imports
 * of 5,000; 40,000 is CC's limit) are all written under the lease: the fenced
 * write's unpack takes about 8,000 values, so they go in commands of 500. */
static void test_fields_in_flight_of_a_large_import_are_written_fenced(void **state)
{
    (void)state;
    struct lease l;
    take(&l, 60000);
    enum { N = 10000 };
    static char email[N][32];
    const char **emails = malloc(N * sizeof *emails), **digests = malloc(N * sizeof *digests);
    for (int i = 0; i < N; i++) {
        snprintf(email[i], sizeof email[i], "m%d@x.org", i);
        emails[i] = email[i];
        digests[i] = "d1";
    }
    size_t commands = fields_sent_append(S.c, A, G, l.token, emails, digests, N);
    assert_int_equal(commands, N / 500);
    assert_int_equal(store_drain(S.c, commands), STORE_OK);
    assert_int_equal(integer("HLEN %s", key_fields_sent(A, G).s), N);
    free(emails);
    free(digests);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_keeper_renews_a_held_lease_and_lets_it_go_when_stopped,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_keeper_does_not_renew_a_lease_taken_over, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_writes_of_a_sync_are_refused_once_the_lease_is_another_s, setup, teardown),
        cmocka_unit_test_setup_teardown(test_finish_tags_fields_and_audit_are_fenced_too, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fields_in_flight_of_a_large_import_are_written_fenced,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_restarted_instance_gives_back_its_killed_predecessor_s_leases_at_once, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_a_live_twin_with_the_same_name_keeps_its_leases, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
