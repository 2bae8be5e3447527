/*
 * test_queue.c - the event streams against a real redis-server (queue.h),
 * with the workers' steps done one by one so each count is exact:
 * associations take turns a batch each, whatever their backlog; an event
 * added after an association's last read puts it back in line; the sweep puts
 * back what a crash left out of the line and hands over a dead consumer's
 * entries; the depth counts every stream; dead letters of two associations
 * whose entries have the same id keep both bodies, and a redrive puts the
 * event back on its association's stream and in line. The pure decisions are
 * tests/unit/test_queue_turns.c's.
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

#include "ccsync/keys.h"
#include "ccsync/queue.h"
#include "ccsync/store.h"
#include "peek.h"
#include "testsupport.h"

#define BATCH 64

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

static int64_t now_us(void)
{
    return store_now_ns() / 1000;
}

static long long integer(const char *fmt, const char *key)
{
    redisReply *r = redisCommand(S.c, fmt, key);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long n = r->integer;
    freeReplyObject(r);
    return n;
}

/* n events of association a, queued as ingest queues them: XADD to its
 * stream, then the ZADD that puts it in line, on the same connection. */
static void enqueue(const char *a, int n)
{
    for (int i = 0; i < n; i++)
        redisAppendCommand(S.c, "XADD %s * assoc %s id w-%d type group.updated ts 1 body {}",
                           key_events(a).s, a, i);
    int sent = n + queue_append_ready(S.c, &a, 1, now_us());
    assert_int_equal(store_drain(S.c, (size_t)sent), STORE_OK);
}

/* One worker's turn: takes the association first in line, reads a batch,
 * puts it back in line if the batch was full, acknowledges what it read.
 * Returns the entries read; *who the association ("" when none was in line). */
static size_t turn(char *who)
{
    who[0] = '\0';
    char a[CCSYNC_ASSOC_ID_MAX + 1];
    int taken = queue_take(S.c, 0, a);
    assert_true(taken == 0 || taken == 1);
    if (taken == 0)
        return 0;
    snprintf(who, CCSYNC_ASSOC_ID_MAX + 1, "%s", a);
    struct queue_entry e[BATCH];
    size_t n;
    struct key stream = key_events(a);
    redisReply *r = queue_read(S.c, stream.s, "w1", false, 0, e, BATCH, &n);
    assert_non_null(r);
    assert_int_equal(queue_turn_over(S.c, a, n, BATCH, now_us()), STORE_OK);
    const char *ids[BATCH];
    for (size_t i = 0; i < n; i++)
        ids[i] = e[i].id;
    assert_int_equal(queue_ack_many(S.c, stream.s, ids, n), STORE_OK);
    freeReplyObject(r);
    return n;
}

static void test_associations_take_turns_a_batch_each(void **state)
{
    (void)state;
    enqueue("a", 200); /* a flood first */
    enqueue("b", 1);   /* then one event each of two others */
    enqueue("c", 1);
    char who[CCSYNC_ASSOC_ID_MAX + 1];
    /* a's first batch, then b and c before a's second: at most one batch of
     * a's ahead of them, whatever a's backlog */
    assert_int_equal(turn(who), BATCH);
    assert_string_equal(who, "a");
    assert_int_equal(turn(who), 1);
    assert_string_equal(who, "b");
    assert_int_equal(turn(who), 1);
    assert_string_equal(who, "c");
    assert_int_equal(integer("XLEN %s", key_events("a").s), 200 - BATCH);
    /* one more event of b meanwhile: b joins the line behind a */
    enqueue("b", 1);
    assert_int_equal(turn(who), BATCH);
    assert_string_equal(who, "a");
    assert_int_equal(turn(who), 1);
    assert_string_equal(who, "b");
    assert_int_equal(turn(who), BATCH);
    assert_string_equal(who, "a");
    assert_int_equal(turn(who), 200 - 3 * BATCH);
    assert_string_equal(who, "a");
    /* drained: no one is left in line */
    assert_int_equal(turn(who), 0);
    assert_string_equal(who, "");
    assert_int_equal(integer("ZCARD %s", KEY_EVENTS_READY), 0);
    long long depth;
    assert_int_equal(queue_depth(S.c, &depth), STORE_OK);
    assert_int_equal(depth, 0);
}

static void test_a_flood_does_not_move_its_association_up_the_line(void **state)
{
    (void)state;
    enqueue("a", 1);
    enqueue("b", 1);
    enqueue("a", 500); /* a already in line: it keeps its place, b stays next */
    char who[CCSYNC_ASSOC_ID_MAX + 1];
    assert_int_equal(turn(who), BATCH);
    assert_string_equal(who, "a");
    assert_int_equal(turn(who), 1);
    assert_string_equal(who, "b");
}

static void test_an_event_added_after_the_last_read_puts_its_association_back(void **state)
{
    (void)state;
    enqueue("a", 3);
    char who[CCSYNC_ASSOC_ID_MAX + 1];
    assert_int_equal(turn(who), 3); /* fewer than a batch: a leaves the line */
    assert_int_equal(integer("ZCARD %s", KEY_EVENTS_READY), 0);
    enqueue("a", 1); /* its XADD came after that read; its ZADD puts a back */
    assert_int_equal(turn(who), 1);
    assert_string_equal(who, "a");
}

/* The sweep's callback: the streams it was handed, and the entries reclaimed. */
struct reclaimed {
    char streams[4][KEY_MAX];
    size_t n_streams, n_entries;
};

static int reclaim(void *arg, const char *stream)
{
    struct reclaimed *r = arg;
    snprintf(r->streams[r->n_streams++], KEY_MAX, "%s", stream);
    struct queue_entry e[BATCH];
    size_t n;
    redisReply *reply = queue_read(S.c, stream, "sweeper", true, 0, e, BATCH, &n);
    assert_non_null(reply);
    r->n_entries += n;
    freeReplyObject(reply);
    return STORE_OK;
}

static void test_the_sweep_mends_the_line_and_hands_over_a_dead_consumers_entries(void **state)
{
    (void)state;
    assert_int_equal(store_exec(S.c, "SADD %s a b c", KEY_ASSOCIATIONS), STORE_OK);
    /* a: a process died between its XADD and its ZADD */
    enqueue("a", 2);
    assert_int_equal(store_exec(S.c, "ZREM %s a", KEY_EVENTS_READY), STORE_OK);
    /* b: two entries read by a consumer that died long ago, none undelivered */
    enqueue("b", 2);
    char who[CCSYNC_ASSOC_ID_MAX + 1];
    assert_int_equal(queue_take(S.c, 0, who), 1);
    struct queue_entry e[BATCH];
    size_t n;
    struct key b = key_events("b");
    freeReplyObject(queue_read(S.c, b.s, "ghost", false, 0, e, BATCH, &n));
    assert_int_equal(n, 2);
    redisReply *r = redisCommand(S.c, "XCLAIM %s %s ghost 0 %s %s IDLE 600000 JUSTID", b.s,
                                 QUEUE_GROUP, e[0].id, e[1].id);
    freeReplyObject(r);
    /* c: read by a live consumer a moment ago (not idle): left alone */
    enqueue("c", 1);
    assert_int_equal(queue_take(S.c, 0, who), 1);
    struct key c = key_events("c");
    freeReplyObject(queue_read(S.c, c.s, "alive", false, 0, e, BATCH, &n));
    /* the legacy stream still holds an entry */
    assert_int_equal(
        store_exec(S.c, "XADD %s * assoc a id w-old type t ts 1 body {}", KEY_LEGACY_EVENTS),
        STORE_OK);

    struct reclaimed got = {0};
    bool legacy = false;
    assert_int_equal(queue_sweep(S.c, now_us(), &legacy, reclaim, &got), STORE_OK);
    assert_true(legacy);
    assert_int_equal(integer("ZCARD %s", KEY_EVENTS_READY), 1);
    assert_int_equal(integer("ZRANK %s a", KEY_EVENTS_READY), 0);
    assert_int_equal(got.n_streams, 1);
    assert_string_equal(got.streams[0], b.s);
    assert_int_equal(got.n_entries, 2);
    long long depth;
    assert_int_equal(queue_depth(S.c, &depth), STORE_OK);
    assert_int_equal(depth, 2 + 2 + 1 + 1); /* a, b, c and the legacy stream */
}

static void test_dead_letters_of_two_associations_with_the_same_entry_id_keep_both(void **state)
{
    (void)state;
    /* stream ids are per stream: two associations' entries may share one */
    struct queue_entry a = {"1-1", "a", "w-a", "group.updated", "1", "body of a", 9, NULL, 0};
    struct queue_entry b = {"1-1", "b", "w-b", "group.updated", "1", "body of b", 9, NULL, 0};
    assert_int_equal(store_exec(S.c, "XADD %s 1-1 assoc a body x", key_events("a").s), STORE_OK);
    assert_int_equal(store_exec(S.c, "XADD %s 1-1 assoc b body x", key_events("b").s), STORE_OK);
    assert_int_equal(queue_dead_letter(S.c, key_events("a").s, &a, "test", 30), STORE_OK);
    assert_int_equal(queue_dead_letter(S.c, key_events("b").s, &b, "test", 30), STORE_OK);
    assert_int_equal(integer("XLEN %s", key_events("a").s), 0);
    assert_int_equal(integer("XLEN %s", KEY_DEAD_LETTERS), 2);
    char body_id[KEY_MAX];
    queue_dead_body_id("a", "1-1", body_id, sizeof body_id);
    redisReply *r = redisCommand(S.c, "GET %s", key_dead_body(body_id).s);
    assert_string_equal(r->str, "body of a");
    freeReplyObject(r);

    /* b's redriven: back on b's stream, b in line; a's dead letter untouched */
    r = redisCommand(S.c, "XREVRANGE %s + - COUNT 1", KEY_DEAD_LETTERS);
    char dead_id[48];
    snprintf(dead_id, sizeof dead_id, "%s", r->element[0]->element[0]->str);
    freeReplyObject(r);
    assert_int_equal(queue_redrive(S.c, dead_id), 1);
    assert_int_equal(queue_redrive(S.c, dead_id), 0);
    r = redisCommand(S.c, "XRANGE %s - +", key_events("b").s);
    assert_int_equal(r->elements, 1);
    struct queue_entry got;
    memset(&got, 0, sizeof got);
    const redisReply *f = r->element[0]->element[1];
    for (size_t i = 0; i + 1 < f->elements; i += 2)
        if (strcmp(f->element[i]->str, "body") == 0)
            got.body = f->element[i + 1]->str;
    assert_string_equal(got.body, "body of b");
    freeReplyObject(r);
    assert_int_equal(integer("ZRANK %s b", KEY_EVENTS_READY), 0);
    assert_int_equal(integer("XLEN %s", KEY_DEAD_LETTERS), 1);
    r = redisCommand(S.c, "GET %s", key_dead_body(body_id).s);
    assert_string_equal(r->str, "body of a");
    freeReplyObject(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_associations_take_turns_a_batch_each, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_flood_does_not_move_its_association_up_the_line,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_an_event_added_after_the_last_read_puts_its_association_back, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_the_sweep_mends_the_line_and_hands_over_a_dead_consumers_entries, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_dead_letters_of_two_associations_with_the_same_entry_id_keep_both, setup,
            teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
