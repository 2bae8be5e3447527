/* Integration tests of what ccsync keeps only CCSYNC_RETENTION_DAYS (README
 * "Limits"): dead letters (the stream trimmed by age and count, bodies kept apart
 * with a time to live, listings that never read bodies whole) and the records of
 * members who left every group.
 *
 * The stack (stack.h) starts with ccsyncd held back where a test seeds Redis
 * first, as an older ccsyncd would have left it; the retention sweep runs when
 * ccsyncd starts. No test makes a Constant Contact request (no group syncs). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <hiredis/hiredis.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ccsync/keys.h"
#include "ccsync/queue.h"
#include "novi.h"
#include "peek.h"
#include "stack.h"
#include "testsupport.h"

static redisContext *redis;

static int setup_held_back(void **state)
{
    (void)state;
    struct stack_options o = {.workers = 1, .ccsyncd_later = true};
    o.env[0] = "CCSYNC_RETENTION_DAYS=1";
    if (stack_start("test_retention", &o) != 0)
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

struct count_wait {
    const char *what;
    long long want;
};

static bool count_is(void *arg)
{
    struct count_wait *w = arg;
    return peek_integer(redis, w->what, KEY_DEAD_LETTERS) == w->want;
}

/* Dead letters older than the retention are deleted at start; younger stay. */
static void test_dead_letters_past_the_retention_are_deleted(void **state)
{
    (void)state;
    long long day_ago_ms = (long long)time(NULL) * 1000 - 86400 * 1000LL - 60000;
    freeReplyObject(peek_command(redis, "XADD %s %lld-0 assoc %s id w-old type t ts 1 body {}",
                                 KEY_DEAD_LETTERS, day_ago_ms, ASSOC));
    freeReplyObject(peek_command(redis, "XADD %s * assoc %s id w-new type t ts 1 body {}",
                                 KEY_DEAD_LETTERS, ASSOC));
    assert_int_equal(stack_start_service(), 0);
    struct count_wait w = {"XLEN %s", 1};
    assert_true(ts_wait_for(count_is, &w, 10000, 50));
    long status;
    json_object *o = api_json("GET", "/v1/dead-letters", NULL, &status);
    assert_int_equal(status, 200);
    assert_string_equal(jpath_str(o, "dead_letters.0.webhook_id"), "w-new");
    json_object_put(o);
}

/* A member who left every group more than the retention ago loses the record
 * (email, names); its time stays; one who joined a group again keeps it. */
static void test_records_of_members_gone_past_the_retention_are_deleted(void **state)
{
    (void)state;
    struct key gone = key_member(ASSOC, "m-gone"), back = key_member(ASSOC, "m-back");
    freeReplyObject(peek_command(redis, "HSET %s rec {\"e\":\"gone@example.org\"} ts 1", gone.s));
    freeReplyObject(peek_command(redis, "HSET %s rec {\"e\":\"back@example.org\"} ts 1", back.s));
    freeReplyObject(peek_command(redis, "SADD %s g-1", key_member_groups(ASSOC, "m-back").s));
    /* the member's history goes with its record */
    struct key gone_events = key_member_events(ASSOC, "m-gone");
    struct key back_events = key_member_events(ASSOC, "m-back");
    freeReplyObject(peek_command(redis, "LPUSH %s {} {}", gone_events.s));
    freeReplyObject(peek_command(redis, "LPUSH %s {}", back_events.s));
    freeReplyObject(peek_command(redis, "SADD %s %s", KEY_ASSOCIATIONS, ASSOC)); /* known before */
    long long old = (long long)time(NULL) * 1000 - 2 * 86400 * 1000LL;
    freeReplyObject(
        peek_command(redis, "ZADD %s %lld m-gone %lld m-back", key_removed(ASSOC).s, old, old));
    assert_int_equal(stack_start_service(), 0);
    for (int i = 0; i < 200 && peek_integer(redis, "HEXISTS %s rec", gone.s) == 1; i++)
        ts_sleep_ms(50);
    assert_int_equal(peek_integer(redis, "HEXISTS %s rec", gone.s), 0);
    assert_int_equal(peek_integer(redis, "HEXISTS %s ts", gone.s), 1);
    assert_int_equal(peek_integer(redis, "HEXISTS %s rec", back.s), 1);
    assert_int_equal(peek_integer(redis, "EXISTS %s", gone_events.s), 0);
    assert_int_equal(peek_integer(redis, "LLEN %s", back_events.s), 1);
    assert_int_equal(peek_integer(redis, "ZCARD %s", key_removed(ASSOC).s), 0);
}

static bool removed_has(void *arg)
{
    redisReply *r = peek_command(redis, "ZSCORE %s %s", key_removed(ASSOC).s, (const char *)arg);
    bool has = r->type == REDIS_REPLY_STRING;
    freeReplyObject(r);
    return has;
}

static bool removed_lacks(void *arg)
{
    return !removed_has(arg);
}

/* Leaving the last group notes the time; joining one again forgets it. */
static void test_member_leaving_every_group_is_noted_for_retention(void **state)
{
    (void)state;
    assert_int_equal(stack_start_service(), 0);
    send_customer(member("m-1", "ann@example.org", "Ann", "Lee", groups_of("g-1")), 10);
    send_event("customer.removed", "{\"UniqueID\":\"m-1\"}", 20);
    assert_true(ts_wait_for(removed_has, "m-1", 10000, 50));
    send_customer(member("m-1", "ann@example.org", "Ann", "Lee", groups_of("g-2")), 30);
    assert_true(ts_wait_for(removed_lacks, "m-1", 10000, 50));
}

/* A listing shows a bounded part of each body (4 MiB over the limit asked);
 * the redrive puts the whole body back on the queue. */
static void test_dead_letter_listing_shows_a_bounded_part_of_big_bodies(void **state)
{
    (void)state;
    assert_int_equal(stack_start_service(), 0);
    size_t len = 1024 * 1024;
    char *body = malloc(len + 1);
    memset(body, 'x', len);
    body[0] = '{';
    body[len] = '\0';
    freeReplyObject(peek_command(redis,
                                 "XADD %s * assoc %s id w-big type group.updated ts 1 body %s",
                                 key_events(ASSOC).s, ASSOC, body));
    freeReplyObject(peek_command(redis, "ZADD %s NX 1 %s", KEY_EVENTS_READY, ASSOC));
    struct count_wait w = {"XLEN %s", 1};
    assert_true(ts_wait_for(count_is, &w, 10000, 50));
    long status;
    json_object *o = api_json("GET", "/v1/dead-letters?limit=1000", NULL, &status), *e;
    assert_int_equal(status, 200);
    e = jpath(o, "dead_letters.0");
    assert_non_null(e);
    assert_int_equal(jint(e, "body_bytes"), (long long)len);
    assert_int_equal(strlen(jstr(e, "body_preview")), 4 * 1024 * 1024 / 1000);
    assert_null(jget(e, "body"));
    assert_true(json_object_get_boolean(jget(e, "body_truncated")));
    char path[128];
    snprintf(path, sizeof path, "/v1/dead-letters/%s/redrive", jstr(e, "id"));
    const char *original = jstr(e, "original_id");
    char body_id[KEY_MAX];
    queue_dead_body_id(ASSOC, original, body_id, sizeof body_id);
    long long ttl = peek_integer(redis, "TTL %s", key_dead_body(body_id).s);
    assert_true(ttl > 86400 - 60 && ttl <= 86400);
    /* Redriven, the whole body is back on the queue (and dead-lettered again). */
    long long added = peek_entries_added(redis, key_events(ASSOC).s);
    struct reply r = api("POST", path, NULL);
    assert_int_equal(r.status, 202);
    reply_free(&r);
    assert_int_equal(peek_entries_added(redis, key_events(ASSOC).s), added + 1);
    assert_true(ts_wait_for(count_is, &w, 10000, 50));
    json_object_put(o);
    o = api_json("GET", "/v1/dead-letters?limit=1", NULL, &status);
    assert_int_equal(jint(jpath(o, "dead_letters.0"), "body_bytes"), (long long)len);
    assert_int_equal(strlen(jpath_str(o, "dead_letters.0.body_preview")), 64 * 1024);
    json_object_put(o);
    free(body);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup_held_back, stop_stack)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_dead_letters_past_the_retention_are_deleted),
        T(test_records_of_members_gone_past_the_retention_are_deleted),
        T(test_member_leaving_every_group_is_noted_for_retention),
        T(test_dead_letter_listing_shows_a_bounded_part_of_big_bodies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
