/*
 * test_deadletters.c - events that cannot be applied go to the dead-letter
 * stream, where an admin lists them and re-drives them (docs/: the queue and its dead letters).
 *
 * Each test starts the stack (stack.h) with ccsyncd held back: entries are put in
 * the streams first with the test's own Redis connection (peek.h), as a crash or
 * an older ccsyncd would have left them.
 */
#include <hiredis/hiredis.h>
#include <json-c/json.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "ccsync/keys.h"
#include "peek.h"
#include "stack.h"
#include "testsupport.h"

/* The test's own connection to the stack's Redis, for what it puts there. */
static redisContext *redis;

/* Redis and ccsim; ccsyncd starts in the test, once the streams hold what a crash
 * or an older ccsyncd would have left. */
static int setup_held_back(void **state)
{
    (void)state;
    struct stack_options o = {.workers = 1, .connect = STACK_SECRET_ONLY, .ccsyncd_later = true};
    if (stack_start("test-deadletters", &o) != 0)
        return -1;
    redis = peek_connect(stack.redis_port);
    return 0;
}

static int stop_stack(void **state)
{
    redisFree(redis);
    redis = NULL;
    return stack_stop(state);
}

/* Polls GET /v1/dead-letters until it lists n entries; returns the list (caller puts). */
static json_object *wait_dead_letters(size_t n)
{
    for (int i = 0; i < 200; i++) {
        long status;
        json_object *o = api_json("GET", "/v1/dead-letters", NULL, &status);
        assert_int_equal(status, 200);
        json_object *list;
        if (json_object_object_get_ex(o, "dead_letters", &list) &&
            json_object_array_length(list) == n)
            return o;
        json_object_put(o);
        ts_sleep_ms(50);
    }
    fail_msg("the dead-letter list never held %zu entries", n);
    return NULL;
}

static long long status_queue(const char *field)
{
    long status;
    json_object *o = api_json("GET", "/v1/status", NULL, &status), *q, *v;
    assert_int_equal(status, 200);
    assert_true(json_object_object_get_ex(o, "queue", &q));
    assert_true(json_object_object_get_ex(q, field, &v));
    long long n = json_object_get_int64(v);
    json_object_put(o);
    return n;
}

static void test_unparseable_event_is_dead_lettered_and_listed(void **state)
{
    assert_int_equal(stack_start_service(), 0);
    /* queued as ingest queues: the association's stream, then its place in line */
    redisReply *r =
        peek_command(redis, "XADD %s * assoc %s id w-broken type group.updated ts 1 body %s",
                     key_events(ASSOC).s, ASSOC, "{not json");
    freeReplyObject(r);
    freeReplyObject(peek_command(redis, "ZADD %s NX 1 %s", KEY_EVENTS_READY, ASSOC));

    json_object *o = wait_dead_letters(1), *list, *e;
    json_object_object_get_ex(o, "dead_letters", &list);
    e = json_object_array_get_idx(list, 0);
    assert_string_equal(jstr(e, "association_id"), ASSOC);
    assert_string_equal(jstr(e, "webhook_id"), "w-broken");
    assert_string_equal(jstr(e, "type"), "group.updated");
    assert_string_equal(jstr(e, "reason"),
                        "malformed JSON at byte 1: quoted object property name expected");
    assert_string_equal(jstr(e, "body"), "{not json");
    json_object_put(o);

    /* out of the event stream, acknowledged, counted as dead */
    assert_int_equal(peek_integer(redis, "XLEN %s", key_events(ASSOC).s), 0);
    r = peek_command(redis, "XPENDING %s workers", key_events(ASSOC).s);
    assert_int_equal(r->element[0]->integer, 0);
    freeReplyObject(r);
    assert_int_equal(status_queue("dead"), 1);
    assert_int_equal(status_queue("pending"), 0);
}

static void test_event_delivered_too_often_is_dead_lettered(void **state)
{
    /* Left behind by consumers that died five times over: pending, long idle. */
    struct key stream = key_events(ASSOC);
    redisReply *r = peek_command(redis, "XGROUP CREATE %s workers 0 MKSTREAM", stream.s);
    freeReplyObject(r);
    r = peek_command(redis, "XADD %s * assoc %s id w-poison type group.deleted ts 1 body %s",
                     stream.s, ASSOC,
                     "{\"type\":\"group.deleted\",\"timestamp\":\"2026-11-27T10:00:00Z\",\"data\":{"
                     "\"UniqueID\":\"g-1\"}}");
    char id[64];
    snprintf(id, sizeof id, "%s", r->str);
    freeReplyObject(r);
    r = peek_command(redis, "XREADGROUP GROUP workers ghost COUNT 1 STREAMS %s >", stream.s);
    freeReplyObject(r);
    r = peek_command(redis, "XCLAIM %s workers ghost 0 %s IDLE 600000 RETRYCOUNT 6", stream.s, id);
    freeReplyObject(r);

    assert_int_equal(stack_start_service(), 0);
    json_object *o = wait_dead_letters(1), *list, *e;
    json_object_object_get_ex(o, "dead_letters", &list);
    e = json_object_array_get_idx(list, 0);
    assert_string_equal(jstr(e, "webhook_id"), "w-poison");
    assert_string_equal(jstr(e, "reason"), "could not be applied after repeated attempts");
    assert_string_equal(jstr(e, "original_id"), id);
    json_object_put(o);
    assert_int_equal(peek_integer(redis, "XLEN %s", stream.s), 0);
}

static void test_redrive_applies_a_fixed_event_and_removes_the_dead_letter(void **state)
{
    assert_int_equal(stack_start_service(), 0);
    /* A dead letter whose cause is gone (say, an association created since). */
    redisReply *r = peek_command(
        redis,
        "XADD %s * assoc %s id w-fixed type group.updated ts 1 body %s reason %s "
        "original_id 1-1",
        KEY_DEAD_LETTERS, ASSOC,
        "{\"type\":\"group.updated\",\"timestamp\":\"2026-11-27T10:00:00Z\",\"data\":{\"UniqueID\":"
        "\"g-7\",\"GroupName\":\"Board\",\"SyncToConstantContact\":false}}",
        "test");
    char id[64], path[128];
    snprintf(id, sizeof id, "%s", r->str);
    freeReplyObject(r);
    long long added = peek_entries_added(redis, key_events(ASSOC).s);

    long status;
    snprintf(path, sizeof path, "/v1/dead-letters/%s/redrive", id);
    json_object *o = api_json("POST", path, NULL, &status);
    assert_int_equal(status, 202);
    assert_string_equal(jstr(o, "id"), id);
    assert_string_equal(jstr(o, "status"), "requeued");
    json_object_put(o);

    assert_int_equal(peek_entries_added(redis, key_events(ASSOC).s), added + 1);
    assert_int_equal(peek_integer(redis, "XLEN %s", KEY_DEAD_LETTERS), 0);
    /* the worker folds it: the group exists, sync off */
    for (int i = 0; i < 200; i++) {
        o = api_json("GET", "/v1/associations/" ASSOC "/groups/g-7", NULL, &status);
        if (status == 200)
            break;
        json_object_put(o);
        o = NULL;
        ts_sleep_ms(50);
    }
    assert_int_equal(status, 200);
    assert_string_equal(jstr(o, "group_name"), "Board");
    assert_string_equal(jstr(o, "state"), "disabled");
    json_object_put(o);

    /* a second redrive of the same id finds nothing */
    o = api_json("POST", path, NULL, &status);
    assert_int_equal(status, 404);
    json_object *err;
    assert_true(json_object_object_get_ex(o, "error", &err));
    assert_string_equal(jstr(err, "code"), "unknown_dead_letter");
    json_object_put(o);
}

static void test_redrive_refuses_an_id_that_is_not_a_stream_id(void **state)
{
    assert_int_equal(stack_start_service(), 0);
    long status;
    json_object *o = api_json("POST", "/v1/dead-letters/1795773603512/redrive", NULL, &status),
                *err;
    assert_int_equal(status, 400);
    assert_true(json_object_object_get_ex(o, "error", &err));
    assert_string_equal(jstr(err, "code"), "invalid_path_parameter");
    json_object_put(o);
}

/* A count Redis refuses is not a zero: the status answers 503 until the key is sound again. */
static void test_status_answers_503_when_redis_refuses_a_count(void **state)
{
    assert_int_equal(stack_start_service(), 0);
    freeReplyObject(redisCommand(redis, "SET %s not-a-set", KEY_RETRYING));
    long status;
    json_object *o = api_json("GET", "/v1/status", NULL, &status), *err;
    assert_int_equal(status, 503);
    assert_true(json_object_object_get_ex(o, "error", &err));
    assert_string_equal(jstr(err, "code"), "redis_unavailable");
    json_object_put(o);
    freeReplyObject(redisCommand(redis, "DEL %s", KEY_RETRYING));
    assert_int_equal(status_queue("retrying"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_unparseable_event_is_dead_lettered_and_listed,
                                        setup_held_back, stop_stack),
        cmocka_unit_test_setup_teardown(test_event_delivered_too_often_is_dead_lettered,
                                        setup_held_back, stop_stack),
        cmocka_unit_test_setup_teardown(
            test_redrive_applies_a_fixed_event_and_removes_the_dead_letter, setup_held_back,
            stop_stack),
        cmocka_unit_test_setup_teardown(test_redrive_refuses_an_id_that_is_not_a_stream_id,
                                        setup_held_back, stop_stack),
        cmocka_unit_test_setup_teardown(test_status_answers_503_when_redis_refuses_a_count,
                                        setup_held_back, stop_stack),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
