/*
 * test_snapshots.c (integration) - large group.members snapshots: a body over
 * CCSYNC_ENQUEUE_CHUNK_BYTES is staged in Redis a chunk a command and queued
 * by reference, read back in chunks and folded in chunks, so no Redis command
 * carries a whole snapshot; and a SIGKILL of ccsyncd while it stages or folds
 * one loses nothing and applies nothing twice.
 *
 * The chunk is made small (a few KiB) so that a test-sized snapshot takes many
 * chunks. What each command carries is read from Redis's slow log with every
 * command logged (slowlog-log-slower-than 0): the log keeps each command's
 * arguments, cut at 128 bytes with "... (N more bytes)" and at 32 arguments
 * with "... (N more arguments)", which gives every command's real size, a
 * structural bound that does not depend on the machine's speed.
 * No Constant Contact request is made: the snapshot's group is not synced.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <cmocka.h>

#include <hiredis/hiredis.h>
#include <pthread.h>

#include "ccsync/keys.h"
#include "ccsync/queue.h"
#include "ccsync/webhook.h"
#include "novi.h"
#include "peek.h"
#include "reply.h"
#include "stack.h"
#include "testsupport.h"

#define GROUP "g-big"
#define STAGED_MATCH "ccsync:{" ASSOC "}:" KEY_STAGED "*"

/* group.members of GROUP with members m000000..m(n-1), minimal records;
 * the caller frees it. */
static char *snapshot_body(long n, long long at)
{
    size_t cap = 64 + (size_t)n * 32, len = 0;
    char *data = malloc(cap);
    assert_non_null(data);
    len += (size_t)snprintf(data, cap, "{\"UniqueID\":\"" GROUP "\",\"Members\":[");
    for (long i = 0; i < n; i++)
        len +=
            (size_t)snprintf(data + len, cap - len, "%s{\"UniqueID\":\"m%06ld\"}", i ? "," : "", i);
    snprintf(data + len, cap - len, "]}");
    char *body = envelope("group.members", data, at);
    free(data);
    return body;
}

static int start(long chunk)
{
    static char chunk_env[64];
    snprintf(chunk_env, sizeof chunk_env, "CCSYNC_ENQUEUE_CHUNK_BYTES=%ld", chunk);
    struct stack_options o = {.workers = 2};
    o.env[0] = chunk_env;
    return stack_start("test-snapshots", &o);
}

static int setup_4k(void **state)
{
    (void)state;
    return start(4096);
}

static int setup_1k(void **state)
{
    (void)state;
    return start(1024);
}

/* Staging keys of ASSOC now. */
static long staged_keys(redisContext *c)
{
    redisReply *r = peek_command(c, "KEYS %s", STAGED_MATCH);
    long n = r->type == REDIS_REPLY_ARRAY ? (long)r->elements : -1;
    freeReplyObject(r);
    return n;
}

struct folded_wait {
    redisContext *c;
    long members;
};

/* The snapshot is folded: every member in, nothing queued or pending, no fold
 * under way. */
static bool folded(void *arg)
{
    struct folded_wait *w = arg;
    return peek_integer(w->c, "HLEN %s", key_group_members(ASSOC, GROUP).s) == w->members &&
           peek_integer(w->c, "XLEN %s", key_events(ASSOC).s) == 0 &&
           peek_integer(w->c, "EXISTS %s", key_group_folding(ASSOC, GROUP).s) == 0;
}

/* Every one of n members is in GROUP, with one entry in its history (it joined
 * once), and nothing is left queued, pending or staged. */
static void assert_folded_once(redisContext *c, long n)
{
    struct folded_wait w = {c, n};
    assert_true(ts_wait_for(folded, &w, 120000, 50));
    long in = 0;
    char cursor[32] = "0";
    do {
        redisReply *r =
            peek_command(c, "HSCAN %s %s COUNT 1000", key_group_members(ASSOC, GROUP).s, cursor);
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        for (size_t i = 1; i < r->element[1]->elements; i += 2)
            in += r->element[1]->element[i]->str[0] == '1';
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    assert_int_equal(in, n);
    const long sample[] = {0, n / 2, n - 1};
    for (size_t i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof id, "m%06ld", sample[i]);
        assert_int_equal(peek_integer(c, "LLEN %s", key_member_events(ASSOC, id).s), 1);
    }
    redisReply *p = peek_command(c, "XPENDING %s %s", key_events(ASSOC).s, QUEUE_GROUP);
    assert_int_equal(p->element[0]->integer, 0);
    freeReplyObject(p);
}

/* The real size of one slow log argument: "xxx... (N more bytes)" is 128 + N. */
static long long arg_bytes(const redisReply *a)
{
    const char *more = strstr(a->str, "... (");
    long long n;
    if (more && sscanf(more, "... (%lld more bytes)", &n) == 1)
        return 128 + n;
    return (long long)a->len;
}

/* The largest argument and the most arguments of any command in the slow log,
 * and how many commands were logged. */
static char largest[128]; /* the command with the largest argument */

static void slowlog_sizes(redisContext *c, long long *max_bytes, long long *max_args, long *logged)
{
    redisReply *r = peek_command(c, "SLOWLOG GET -1");
    *max_bytes = *max_args = 0;
    *logged = (long)r->elements;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *argv = r->element[i]->element[3];
        long long args = (long long)argv->elements, more;
        const redisReply *last = argv->element[argv->elements - 1];
        if (sscanf(last->str, "... (%lld more arguments)", &more) == 1)
            args = args - 1 + more;
        *max_args = args > *max_args ? args : *max_args;
        /* a script's own text (SCRIPT LOAD, EVAL) is not data */
        const char *verb = argv->element[0]->str;
        size_t first = strcasecmp(verb, "SCRIPT") == 0 ? 3 : strcasecmp(verb, "EVAL") == 0 ? 2 : 0;
        for (size_t k = first; k < argv->elements; k++) {
            long long b = arg_bytes(argv->element[k]);
            if (b > *max_bytes)
                snprintf(largest, sizeof largest, "%s %.60s", verb,
                         argv->elements > 1 ? argv->element[1]->str : "");
            *max_bytes = b > *max_bytes ? b : *max_bytes;
        }
    }
    freeReplyObject(r);
}

/* 12,000 members (336 KB, past the 256 KiB that go to the validation thread)
 * with 4 KiB chunks: no command carries more than a chunk of the body or more
 * than a fold chunk's members; every member is folded once; the staging key is
 * gone; Novi's retry is a duplicate that stages nothing lasting. */
static void test_a_large_snapshot_is_staged_and_folded_in_chunks(void **state)
{
    (void)state;
    redisContext *c = peek_connect(stack.redis_port);
    freeReplyObject(peek_command(c, "CONFIG SET slowlog-max-len 1000000"));
    freeReplyObject(peek_command(c, "CONFIG SET slowlog-log-slower-than 0"));
    freeReplyObject(peek_command(c, "SLOWLOG RESET"));
    char *body = snapshot_body(12000, 10);
    assert_true(strlen(body) > 256 * 1024);
    char id[64];
    new_id(id, sizeof id);
    assert_int_equal(post_webhook(id, body), 202);
    assert_folded_once(c, 12000);
    freeReplyObject(peek_command(c, "CONFIG SET slowlog-log-slower-than 10000"));
    long long max_bytes, max_args;
    long logged;
    slowlog_sizes(c, &max_bytes, &max_args, &logged);
    assert_true(logged > 12000); /* every member's fold is in it */
    assert_true(logged < 1000000);
    print_message("slow log: %ld commands, largest argument %lld bytes (%s), most arguments %lld\n",
                  logged, max_bytes, largest, max_args);
    assert_true(max_bytes <= 4096);
    assert_true(max_args <= 1100); /* a sweep chunk: 4 + the members of one HSCAN */
    assert_int_equal(staged_keys(c), 0);

    assert_int_equal(post_webhook(id, body), 200);
    assert_int_equal(staged_keys(c), 0);
    free(body);
    redisFree(c);
}

struct send {
    const char *id;
    char *body;
    long status;
};

/* post_webhook without failing the test when no answer comes (0): the
 * process is killed while it reads or stages the body. */
static void *send_thread(void *arg)
{
    struct send *s = arg;
    char sig[128], ts_hdr[64], id_hdr[160], sig_hdr[200], url[256];
    long long now = (long long)time(NULL);
    webhook_sign(SECRET, s->id, now, s->body, strlen(s->body), sig, sizeof sig);
    snprintf(ts_hdr, sizeof ts_hdr, "webhook-timestamp: %lld", now);
    snprintf(id_hdr, sizeof id_hdr, "webhook-id: %s", s->id);
    snprintf(sig_hdr, sizeof sig_hdr, "webhook-signature: %s", sig);
    const char *headers[] = {"Content-Type: application/json", id_hdr, ts_hdr, sig_hdr, NULL};
    snprintf(url, sizeof url, "%s/v1/associations/" ASSOC "/webhooks/novi", stack.base[0]);
    struct reply r = http_request("POST", url, headers, s->body, strlen(s->body), 60000);
    s->status = r.status;
    reply_free(&r);
    return NULL;
}

static bool staging_begun(void *arg)
{
    return staged_keys(arg) > 0;
}

/* SIGKILL while a 40,000-member snapshot is written in 1 KiB chunks: nothing
 * is queued and the half-written staging key expires by itself; Novi's retry
 * of the same webhook is queued (not a duplicate) and folded exactly once. */
static void test_sigkill_mid_enqueue_queues_nothing_and_the_retry_folds_once(void **state)
{
    (void)state;
    redisContext *c = peek_connect(stack.redis_port);
    char id[64];
    new_id(id, sizeof id);
    struct send s = {id, snapshot_body(40000, 10), 0};
    pthread_t t;
    pthread_create(&t, NULL, send_thread, &s);
    assert_true(ts_wait_for(staging_begun, c, 60000, 1));
    stack_kill_ccsyncd(0);
    pthread_join(t, NULL);
    assert_int_not_equal(s.status, 202);
    assert_int_equal(staged_keys(c), 1);
    redisReply *k = peek_command(c, "KEYS %s", STAGED_MATCH);
    long long ttl = peek_integer(c, "PTTL %s", k->element[0]->str);
    assert_true(ttl > 0 && ttl <= 3600 * 1000);
    freeReplyObject(k);
    assert_int_equal(peek_integer(c, "XLEN %s", key_events(ASSOC).s), 0);
    assert_false(peek_dedup_exists(c, ASSOC, id));

    assert_int_equal(stack_start_ccsyncd(0), 0);
    assert_int_equal(post_webhook(id, s.body), 202);
    assert_folded_once(c, 40000);
    assert_int_equal(staged_keys(c), 1); /* the orphan, until it expires */
    assert_int_equal(post_webhook(id, s.body), 200);
    free(s.body);
    redisFree(c);
}

struct fold_progress {
    redisContext *c;
    long members;
};

static bool half_folded(void *arg)
{
    struct fold_progress *f = arg;
    long long n = peek_integer(f->c, "HLEN %s", key_group_members(ASSOC, GROUP).s);
    return n > 0 && n < f->members;
}

/* SIGKILL in the middle of a staged snapshot's fold: the event stays pending
 * with its staged body, is reclaimed by the restarted process and folded
 * again, which ends exactly as one fold would (each member joined once). */
static void test_sigkill_mid_fold_refolds_to_the_same_state(void **state)
{
    (void)state;
    redisContext *c = peek_connect(stack.redis_port);
    char id[64];
    new_id(id, sizeof id);
    char *body = snapshot_body(40000, 10);
    assert_int_equal(post_webhook(id, body), 202);
    struct fold_progress f = {c, 40000};
    assert_true(ts_wait_for(half_folded, &f, 60000, 1));
    stack_kill_ccsyncd(0);
    assert_true(peek_integer(c, "HLEN %s", key_group_members(ASSOC, GROUP).s) < 40000);
    assert_int_equal(staged_keys(c), 1);
    redisReply *k = peek_command(c, "KEYS %s", STAGED_MATCH);
    assert_int_equal(peek_integer(c, "PTTL %s", k->element[0]->str), -1); /* queued: kept */
    freeReplyObject(k);

    assert_int_equal(stack_start_ccsyncd(0), 0); /* reclaims it once idle 30 s */
    assert_folded_once(c, 40000);
    assert_int_equal(staged_keys(c), 0);
    assert_int_equal(peek_integer(c, "XLEN %s", KEY_DEAD_LETTERS), 0);
    free(body);
    redisFree(c);
}

static bool stream_empty(void *arg)
{
    return peek_integer(arg, "XLEN %s", key_events(ASSOC).s) == 0;
}

/* An entry whose staged body is gone was folded by a worker that died between
 * deleting the body and acknowledging: it is acknowledged, not dead-lettered. */
static void test_an_entry_whose_staged_body_is_gone_is_acknowledged(void **state)
{
    (void)state;
    redisContext *c = peek_connect(stack.redis_port);
    struct key gone = key_staged(ASSOC, "gone");
    freeReplyObject(peek_command(c,
                                 "XADD %s * assoc %s id msg-gone type group.members ts 1 "
                                 "body_key %s body_bytes 5000",
                                 key_events(ASSOC).s, ASSOC, gone.s));
    freeReplyObject(peek_command(c, "ZADD %s NX 1 %s", KEY_EVENTS_READY, ASSOC)); /* in line */
    assert_true(ts_wait_for(stream_empty, c, 20000, 20));
    assert_int_equal(peek_integer(c, "XLEN %s", KEY_DEAD_LETTERS), 0);
    redisReply *p = peek_command(c, "XPENDING %s %s", key_events(ASSOC).s, QUEUE_GROUP);
    assert_int_equal(p->element[0]->integer, 0);
    freeReplyObject(p);
    redisFree(c);
}

/* A staged event that cannot be folded (its two chunks are not JSON) is
 * dead-lettered with its body whole in the dead letter's body key, and no
 * staging key is left. */
static void test_a_staged_event_that_cannot_be_parsed_is_dead_lettered_whole(void **state)
{
    (void)state;
    redisContext *c = peek_connect(stack.redis_port);
    struct key staged = key_staged(ASSOC, "bad");
    char junk[5000];
    memset(junk, 'x', sizeof junk);
    freeReplyObject(
        peek_command(c, "RPUSH %s %b %b", staged.s, junk, (size_t)3000, junk, (size_t)2000));
    redisReply *x = peek_command(c,
                                 "XADD %s * assoc %s id msg-bad type group.members ts 1 "
                                 "body_key %s body_bytes 5000",
                                 key_events(ASSOC).s, ASSOC, staged.s);
    char original[48];
    snprintf(original, sizeof original, "%s", x->str);
    freeReplyObject(x);
    freeReplyObject(peek_command(c, "ZADD %s NX 1 %s", KEY_EVENTS_READY, ASSOC)); /* in line */
    assert_true(ts_wait_for(stream_empty, c, 20000, 20));
    assert_int_equal(peek_integer(c, "XLEN %s", KEY_DEAD_LETTERS), 1);
    assert_int_equal(staged_keys(c), 0);
    char body_id[KEY_MAX];
    queue_dead_body_id(ASSOC, original, body_id, sizeof body_id);
    struct key body = key_dead_body(body_id);
    assert_int_equal(peek_integer(c, "STRLEN %s", body.s), 5000);
    long long ttl = peek_integer(c, "TTL %s", body.s);
    assert_true(ttl > 29 * 86400 && ttl <= 30 * 86400);
    redisReply *d = peek_command(c, "XRANGE %s - +", KEY_DEAD_LETTERS);
    const redisReply *f = d->element[0]->element[1];
    bool bytes = false;
    for (size_t i = 0; i + 1 < f->elements; i += 2)
        if (strcmp(f->element[i]->str, "body_bytes") == 0)
            bytes = strcmp(f->element[i + 1]->str, "5000") == 0;
    assert_true(bytes);
    freeReplyObject(d);
    redisFree(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_a_large_snapshot_is_staged_and_folded_in_chunks,
                                        setup_4k, stack_stop),
        cmocka_unit_test_setup_teardown(
            test_sigkill_mid_enqueue_queues_nothing_and_the_retry_folds_once, setup_1k, stack_stop),
        cmocka_unit_test_setup_teardown(test_sigkill_mid_fold_refolds_to_the_same_state, setup_4k,
                                        stack_stop),
        cmocka_unit_test_setup_teardown(test_an_entry_whose_staged_body_is_gone_is_acknowledged,
                                        setup_4k, stack_stop),
        cmocka_unit_test_setup_teardown(
            test_a_staged_event_that_cannot_be_parsed_is_dead_lettered_whole, setup_4k, stack_stop),
    };
    const char *filter = getenv("TEST_FILTER");
    if (filter && *filter)
        cmocka_set_test_filter(filter);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
