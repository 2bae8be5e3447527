/*
 * test_streams.c - each association's events wait only behind its own: one
 * association's backlog of thousands of webhooks does not hold back another's
 * next event (the workers take turns, a batch each). And what an earlier
 * release or a crash can leave behind is still folded: events in the single
 * stream of earlier releases (drained until empty, a dead consumer's entry
 * too), and an event whose place in the workers' line was lost.
 *
 * Counts, not wall-clock: how many of the backlog's events were folded before
 * the other association's event was.
 */
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

#include "ccsim_client.h"
#include "ccsync/keys.h"
#include "novi.h"
#include "peek.h"
#include "stack.h"
#include "status.h"
#include "testsupport.h"

#define OTHER "beta"
#define OTHER_SECRET "whsec_c2Vjb25kLXNlY3JldC1rZXktMDEyMzQ1Njc4OQ=="
/* ASSOC's backlog: webhooks queued before any worker runs. */
#define BACKLOG 4000
/* Events a worker reads of one association in one turn (worker.c). */
#define READ_BATCH 64
#define WORKERS 2

static redisContext *redis;

/* An ingest-only ccsyncd: webhooks are queued and wait, until the test starts
 * it again with workers. */
static int setup_ingest_only(void **state)
{
    (void)state;
    struct stack_options o = {.workers = STACK_NO_WORKERS};
    if (stack_start("test-streams", &o) != 0)
        return -1;
    redis = peek_connect(stack.redis_port);
    return 0;
}

/* Redis and ccsim; ccsyncd starts in the test, once Redis holds what an
 * earlier release or a crash would have left. */
static int setup_held_back(void **state)
{
    (void)state;
    struct stack_options o = {.workers = 1, .connect = STACK_SECRET_ONLY, .ccsyncd_later = true};
    if (stack_start("test-streams", &o) != 0)
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

static void post_as(const char *association, const char *secret, const char *type, const char *data,
                    long long at)
{
    char id[64];
    new_id(id, sizeof id);
    char *body = envelope(type, data, at);
    struct reply r = post_webhook_as(0, association, secret, id, body);
    if (r.status != 202)
        fail_msg("%s webhook %s of %s: %ld %s", type, id, association, r.status, r.body);
    reply_free(&r);
    free(body);
}

/* What the test sees at one instant (MULTI/EXEC): whether OTHER's group is
 * folded, and how many events wait in ASSOC's stream and the legacy one. */
struct snapshot {
    bool other_folded;
    long long waiting;
};

static struct snapshot snapshot(void)
{
    redisAppendCommand(redis, "MULTI");
    redisAppendCommand(redis, "EXISTS %s", key_group(OTHER, "g-beta").s);
    redisAppendCommand(redis, "XLEN %s", key_events(ASSOC).s);
    redisAppendCommand(redis, "XLEN %s", KEY_LEGACY_EVENTS);
    redisAppendCommand(redis, "EXEC");
    redisReply *r = NULL;
    for (int i = 0; i < 5; i++) {
        freeReplyObject(r);
        r = NULL;
        if (redisGetReply(redis, (void **)&r) != REDIS_OK)
            fail_msg("Redis: %s", redis->errstr);
    }
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3)
        fail_msg("Redis: MULTI/EXEC did not answer three counts");
    struct snapshot s = {r->element[0]->integer == 1,
                         r->element[1]->integer + r->element[2]->integer};
    freeReplyObject(r);
    return s;
}

static void test_a_backlog_of_one_association_does_not_hold_back_anothers_event(void **state)
{
    (void)state;
    long status;
    json_object *o = api_json("PUT", "/v1/associations/" OTHER,
                              "{\"webhook_secret\":\"" OTHER_SECRET "\"}", &status);
    assert_int_equal(status, 200);
    json_object_put(o);
    /* ASSOC's burst first (a bulk update in Novi), then OTHER's one event. */
    for (int i = 0; i < BACKLOG; i++) {
        char id[32], email[64];
        snprintf(id, sizeof id, "m-%d", i);
        snprintf(email, sizeof email, "m%d@example.com", i);
        post_as(ASSOC, SECRET, "customer.updated",
                member(id, email, "Pat", "Lee", groups_of("g-board")), 10);
    }
    post_as(
        OTHER, OTHER_SECRET, "group.updated",
        "{\"UniqueID\":\"g-beta\",\"GroupName\":\"Beta Board\",\"SyncToConstantContact\":false}",
        10);
    assert_int_equal(queue_pending(), BACKLOG + 1); /* nothing folded: no workers */
    assert_false(snapshot().other_folded);
    assert_true(metric_value("ccsync_queue_depth{state=\"stream\"}") == BACKLOG + 1);
    assert_true(metric_value("ccsync_queue_associations_ready") == 2); /* both in line */

    stack_kill_ccsyncd(0);
    stack.o.workers = WORKERS;
    assert_int_equal(stack_start_ccsyncd(0), 0);
    struct snapshot s;
    do
        s = snapshot();
    while (!s.other_folded);
    long long before = BACKLOG - s.waiting; /* ASSOC's events folded before OTHER's */
    print_message("%lld of %d queued events of association %s were folded before %s's one "
                  "event (%d workers, %d a turn)\n",
                  before, BACKLOG, ASSOC, OTHER, WORKERS, READ_BATCH);
    /* One association's flood: OTHER's event waited for the batches of ASSOC
     * the workers took first (one each, and one more turn of ASSOC's: WORKERS
     * + 1 batches at most; twice that for what the workers fold while the
     * test looks), not for the backlog (in one shared stream it waited for all
     * 4,000); the rest of the backlog was still queued. */
    assert_true(before <= 2 * (WORKERS + 1) * READ_BATCH);
    assert_true(s.waiting >= BACKLOG / 2);

    wait_folded(); /* and the backlog is folded too, every event */
    o = api_json("GET", "/v1/associations/" ASSOC "/members/m-3999", NULL, &status);
    assert_int_equal(status, 200);
    json_object_put(o);
    assert_int_equal(peek_integer(redis, "ZCARD %s", KEY_EVENTS_READY), 0);
    assert_int_equal(cc_requests(), 0); /* no group syncs: no Constant Contact call */
}

/* The group.updated event of group g at T0 + at: a body for the streams. */
static char *group_event(const char *g, long long at)
{
    char data[160];
    snprintf(data, sizeof data,
             "{\"UniqueID\":\"%s\",\"GroupName\":\"Group %s\",\"SyncToConstantContact\":false}", g,
             g);
    return envelope("group.updated", data, at);
}

static long group_status(const char *g)
{
    long status;
    json_object *o = get_group(g, &status);
    json_object_put(o);
    return status;
}

#define LEGACY_EVENTS 150

static void test_events_left_in_the_single_stream_of_an_earlier_release_are_folded(void **state)
{
    (void)state;
    /* As an earlier release left them: its consumer group, events not read
     * yet, and one read by a consumer that died. */
    freeReplyObject(peek_command(redis, "XGROUP CREATE %s workers 0 MKSTREAM", KEY_LEGACY_EVENTS));
    char *body = group_event("g-ghost", 1);
    freeReplyObject(peek_command(redis,
                                 "XADD %s * assoc %s id w-ghost type group.updated ts 1 body %s",
                                 KEY_LEGACY_EVENTS, ASSOC, body));
    free(body);
    freeReplyObject(peek_command(redis, "XREADGROUP GROUP workers ghost COUNT 1 STREAMS %s >",
                                 KEY_LEGACY_EVENTS));
    redisReply *p = peek_command(redis, "XPENDING %s workers - + 1", KEY_LEGACY_EVENTS);
    char ghost_id[64];
    snprintf(ghost_id, sizeof ghost_id, "%s", p->element[0]->element[0]->str);
    freeReplyObject(p);
    freeReplyObject(peek_command(redis, "XCLAIM %s workers ghost 0 %s IDLE 600000",
                                 KEY_LEGACY_EVENTS, ghost_id));
    for (int i = 0; i < LEGACY_EVENTS; i++) {
        char g[16];
        snprintf(g, sizeof g, "g-%d", i);
        body = group_event(g, 1);
        freeReplyObject(peek_command(redis,
                                     "XADD %s * assoc %s id w-%d type group.updated ts 1 body %s",
                                     KEY_LEGACY_EVENTS, ASSOC, i, body));
        free(body);
    }

    assert_int_equal(stack_start_service(), 0);
    wait_folded(); /* /v1/status counts the legacy stream's entries too */
    assert_int_equal(peek_integer(redis, "XLEN %s", KEY_LEGACY_EVENTS), 0);
    redisReply *r = peek_command(redis, "XPENDING %s workers", KEY_LEGACY_EVENTS);
    assert_int_equal(r->element[0]->integer, 0);
    freeReplyObject(r);
    assert_int_equal(group_status("g-0"), 200);
    assert_int_equal(group_status("g-149"), 200);
    assert_int_equal(group_status("g-ghost"), 200);
    long status;
    json_object *o = api_json("GET", "/v1/associations/" ASSOC "/groups", NULL, &status);
    assert_int_equal(status, 200);
    assert_int_equal(json_object_array_length(jget(o, "groups")), LEGACY_EVENTS + 1);
    json_object_put(o);
    o = api_json("GET", "/v1/status", NULL, &status);
    assert_int_equal(jpath_int(o, "queue.dead"), 0);
    json_object_put(o);
}

static bool group_folded(void *arg)
{
    return group_status(arg) == 200;
}

/* A process that died between its XADD and the ZADD that puts the
 * association in line: the event is in the stream, the line lacks it. */
static void test_an_event_whose_place_in_line_was_lost_is_found_by_the_sweep(void **state)
{
    (void)state;
    assert_int_equal(stack_start_service(), 0);
    char *body = group_event("g-lost", 1);
    freeReplyObject(peek_command(redis,
                                 "XADD %s * assoc %s id w-lost type group.updated ts 1 body %s",
                                 key_events(ASSOC).s, ASSOC, body));
    free(body);
    assert_int_equal(peek_integer(redis, "ZCARD %s", KEY_EVENTS_READY), 0);
    /* the sweep runs every 5 s */
    assert_true(ts_wait_for(group_folded, "g-lost", 15000, 50));
    assert_int_equal(queue_pending(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_a_backlog_of_one_association_does_not_hold_back_anothers_event, setup_ingest_only,
            stop_stack),
        cmocka_unit_test_setup_teardown(
            test_events_left_in_the_single_stream_of_an_earlier_release_are_folded, setup_held_back,
            stop_stack),
        cmocka_unit_test_setup_teardown(
            test_an_event_whose_place_in_line_was_lost_is_found_by_the_sweep, setup_held_back,
            stop_stack),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
