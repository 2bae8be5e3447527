/*
 * test_deadletters.c - events that cannot be applied go to the dead-letter
 * stream, where an admin lists them and re-drives them (DESIGN.md §2, issue 4 #7).
 *
 * Each test starts redis-server and ccsyncd (CCSYNCD_BIN, default $BUILD/ccsyncd)
 * on free ports; entries are put in the streams with the test's own Redis
 * connection, as a crash or an older ccsyncd would have left them.
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
#include "testsupport.h"

#define ADMIN_TOKEN "dead-letter-test-admin-token"
#define ASSOC "acme"
#define SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

static struct {
    int redis_port, http_port;
    pid_t redis_pid, ccsyncd_pid;
    char base[64];
    redisContext *redis;
} S;

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static const char *ccsyncd_bin(void)
{
    static char path[512];
    const char *bin = getenv("CCSYNCD_BIN");
    if (bin && *bin)
        return bin;
    const char *build = getenv("BUILD");
    snprintf(path, sizeof path, "%s/ccsyncd", build && *build ? build : "build");
    return path;
}

static redisReply *cmd(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(S.redis, fmt, ap);
    va_end(ap);
    if (!r || r->type == REDIS_REPLY_ERROR)
        fail_msg("redis: %s", r ? r->str : S.redis->errstr);
    return r;
}

static long long int_cmd(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(S.redis, fmt, ap);
    va_end(ap);
    if (!r || r->type != REDIS_REPLY_INTEGER)
        fail_msg("redis: expected an integer");
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

/* "entries-added" of XINFO STREAM: every entry ever added, deleted ones included. */
static long long entries_added(const char *stream)
{
    redisReply *r = cmd("XINFO STREAM %s", stream);
    long long n = -1;
    for (size_t i = 0; i + 1 < r->elements; i += 2)
        if (strcmp(r->element[i]->str, "entries-added") == 0)
            n = r->element[i + 1]->integer;
    freeReplyObject(r);
    return n;
}

static json_object *admin(const char *method, const char *path, long *status)
{
    char url[256];
    snprintf(url, sizeof url, "%s%s", S.base, path);
    const char *headers[] = {"Authorization: Bearer " ADMIN_TOKEN, "Content-Type: application/json",
                             NULL};
    char *body = NULL;
    const char *send = strcmp(method, "PUT") == 0 ? "{\"webhook_secret\":\"" SECRET "\"}" : NULL;
    if (ts_http(method, url, headers, send, status, &body) != 0)
        fail_msg("%s %s: no answer", method, path);
    json_object *o = body ? json_tokener_parse(body) : NULL;
    free(body);
    return o;
}

static const char *str_at(json_object *o, const char *key)
{
    json_object *v;
    return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : NULL;
}

static void start_ccsyncd(void)
{
    static char listen[64], redis_url[80], api_url[80];
    int cc_port = ts_free_port(); /* nobody listens there: no group here syncs */
    S.http_port = ts_free_port();
    snprintf(listen, sizeof listen, "CCSYNC_LISTEN=127.0.0.1:%d", S.http_port);
    snprintf(redis_url, sizeof redis_url, "CCSYNC_REDIS_URL=redis://127.0.0.1:%d/0", S.redis_port);
    snprintf(api_url, sizeof api_url, "CCSYNC_CC_API_URL=http://127.0.0.1:%d/v3", cc_port);
    char *env[] = {listen, redis_url, "CCSYNC_ADMIN_TOKEN=" ADMIN_TOKEN, api_url,
                   "CCSYNC_WORKERS=1", "CCSYNC_ASSOCIATION_ID=", NULL};
    char *argv[] = {(char *)ccsyncd_bin(), NULL};
    snprintf(S.base, sizeof S.base, "http://127.0.0.1:%d", S.http_port);
    S.ccsyncd_pid = ts_spawn_io(argv, env, "/dev/null", NULL);
    assert_true(S.ccsyncd_pid > 0);
    if (ts_wait_port(S.http_port, 10000) != 0)
        fail_msg("ccsyncd did not listen on %d", S.http_port);
    long status;
    json_object *o = admin("PUT", "/v1/associations/" ASSOC, &status);
    json_object_put(o);
    assert_int_equal(status, 200);
}

static int setup(void **state)
{
    (void)state;
    memset(&S, 0, sizeof S);
    S.redis_port = ts_free_port();
    S.redis_pid = ts_redis_start(S.redis_port);
    if (S.redis_pid < 0)
        return -1;
    S.redis = redisConnect("127.0.0.1", S.redis_port);
    return S.redis && !S.redis->err ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    if (S.ccsyncd_pid > 0) {
        int st = ts_kill(S.ccsyncd_pid, SIGTERM);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            fprintf(stderr, "ccsyncd exited with wait status %d\n", st);
    }
    if (S.redis)
        redisFree(S.redis);
    if (S.redis_pid > 0)
        ts_kill(S.redis_pid, SIGTERM);
    return 0;
}

/* Polls GET /v1/dead-letters until it lists n entries; returns the list (caller puts). */
static json_object *wait_dead_letters(size_t n)
{
    for (int i = 0; i < 200; i++) {
        long status;
        json_object *o = admin("GET", "/v1/dead-letters", &status);
        assert_int_equal(status, 200);
        json_object *list;
        if (json_object_object_get_ex(o, "dead_letters", &list) &&
            json_object_array_length(list) == n)
            return o;
        json_object_put(o);
        sleep_ms(50);
    }
    fail_msg("the dead-letter list never held %zu entries", n);
    return NULL;
}

static long long status_queue(const char *field)
{
    long status;
    json_object *o = admin("GET", "/v1/status", &status), *q, *v;
    assert_int_equal(status, 200);
    assert_true(json_object_object_get_ex(o, "queue", &q));
    assert_true(json_object_object_get_ex(q, field, &v));
    long long n = json_object_get_int64(v);
    json_object_put(o);
    return n;
}

static void test_unparseable_event_is_dead_lettered_and_listed(void **state)
{
    start_ccsyncd();
    redisReply *r = cmd("XADD ccsync:events * assoc %s id w-broken type group.updated ts 1 body %s",
                        ASSOC, "{not json");
    freeReplyObject(r);

    json_object *o = wait_dead_letters(1), *list, *e;
    json_object_object_get_ex(o, "dead_letters", &list);
    e = json_object_array_get_idx(list, 0);
    assert_string_equal(str_at(e, "association_id"), ASSOC);
    assert_string_equal(str_at(e, "webhook_id"), "w-broken");
    assert_string_equal(str_at(e, "type"), "group.updated");
    assert_string_equal(str_at(e, "reason"),
                        "malformed JSON at byte 1: quoted object property name expected");
    assert_string_equal(str_at(e, "body"), "{not json");
    json_object_put(o);

    /* out of the event stream, acknowledged, counted as dead */
    assert_int_equal(int_cmd("XLEN ccsync:events"), 0);
    r = cmd("XPENDING ccsync:events workers");
    assert_int_equal(r->element[0]->integer, 0);
    freeReplyObject(r);
    assert_int_equal(status_queue("dead"), 1);
    assert_int_equal(status_queue("pending"), 0);
}

static void test_event_delivered_too_often_is_dead_lettered(void **state)
{
    /* Left behind by consumers that died five times over: pending, long idle. */
    redisReply *r = cmd("XGROUP CREATE ccsync:events workers 0 MKSTREAM");
    freeReplyObject(r);
    r = cmd("XADD ccsync:events * assoc %s id w-poison type group.deleted ts 1 body %s", ASSOC,
            "{\"type\":\"group.deleted\",\"timestamp\":\"2026-11-27T10:00:00Z\",\"data\":{\"UniqueID\":\"g-1\"}}");
    char id[64];
    snprintf(id, sizeof id, "%s", r->str);
    freeReplyObject(r);
    r = cmd("XREADGROUP GROUP workers ghost COUNT 1 STREAMS ccsync:events >");
    freeReplyObject(r);
    r = cmd("XCLAIM ccsync:events workers ghost 0 %s IDLE 600000 RETRYCOUNT 6", id);
    freeReplyObject(r);

    start_ccsyncd();
    json_object *o = wait_dead_letters(1), *list, *e;
    json_object_object_get_ex(o, "dead_letters", &list);
    e = json_object_array_get_idx(list, 0);
    assert_string_equal(str_at(e, "webhook_id"), "w-poison");
    assert_string_equal(str_at(e, "reason"), "could not be applied after repeated attempts");
    assert_string_equal(str_at(e, "original_id"), id);
    json_object_put(o);
    assert_int_equal(int_cmd("XLEN ccsync:events"), 0);
}

static void test_redrive_applies_a_fixed_event_and_removes_the_dead_letter(void **state)
{
    start_ccsyncd();
    /* A dead letter whose cause is gone (say, an association created since). */
    redisReply *r = cmd(
        "XADD ccsync:events:dead * assoc %s id w-fixed type group.updated ts 1 body %s reason %s "
        "original_id 1-1",
        ASSOC,
        "{\"type\":\"group.updated\",\"timestamp\":\"2026-11-27T10:00:00Z\",\"data\":{\"UniqueID\":"
        "\"g-7\",\"GroupName\":\"Board\",\"SyncToConstantContact\":false}}",
        "test");
    char id[64], path[128];
    snprintf(id, sizeof id, "%s", r->str);
    freeReplyObject(r);
    long long added = entries_added("ccsync:events");

    long status;
    snprintf(path, sizeof path, "/v1/dead-letters/%s/redrive", id);
    json_object *o = admin("POST", path, &status);
    assert_int_equal(status, 202);
    assert_string_equal(str_at(o, "id"), id);
    assert_string_equal(str_at(o, "status"), "requeued");
    json_object_put(o);

    assert_int_equal(entries_added("ccsync:events"), added + 1);
    assert_int_equal(int_cmd("XLEN ccsync:events:dead"), 0);
    /* the worker folds it: the group exists, sync off */
    for (int i = 0; i < 200; i++) {
        o = admin("GET", "/v1/associations/" ASSOC "/groups/g-7", &status);
        if (status == 200)
            break;
        json_object_put(o);
        o = NULL;
        sleep_ms(50);
    }
    assert_int_equal(status, 200);
    assert_string_equal(str_at(o, "group_name"), "Board");
    assert_string_equal(str_at(o, "state"), "disabled");
    json_object_put(o);

    /* a second redrive of the same id finds nothing */
    o = admin("POST", path, &status);
    assert_int_equal(status, 404);
    json_object *err;
    assert_true(json_object_object_get_ex(o, "error", &err));
    assert_string_equal(str_at(err, "code"), "unknown_dead_letter");
    json_object_put(o);
}

static void test_redrive_refuses_an_id_that_is_not_a_stream_id(void **state)
{
    start_ccsyncd();
    long status;
    json_object *o = admin("POST", "/v1/dead-letters/1795773603512/redrive", &status), *err;
    assert_int_equal(status, 400);
    assert_true(json_object_object_get_ex(o, "error", &err));
    assert_string_equal(str_at(err, "code"), "invalid_path_parameter");
    json_object_put(o);
}

/* A count Redis refuses is not a zero: the status answers 503 until the key is sound again. */
static void test_status_answers_503_when_redis_refuses_a_count(void **state)
{
    start_ccsyncd();
    freeReplyObject(cmd("SET %s not-a-set", KEY_RETRYING));
    long status;
    json_object *o = admin("GET", "/v1/status", &status), *err;
    assert_int_equal(status, 503);
    assert_true(json_object_object_get_ex(o, "error", &err));
    assert_string_equal(str_at(err, "code"), "redis_unavailable");
    json_object_put(o);
    freeReplyObject(cmd("DEL %s", KEY_RETRYING));
    assert_int_equal(status_queue("retrying"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_unparseable_event_is_dead_lettered_and_listed, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_event_delivered_too_often_is_dead_lettered, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_redrive_applies_a_fixed_event_and_removes_the_dead_letter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redrive_refuses_an_id_that_is_not_a_stream_id, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_status_answers_503_when_redis_refuses_a_count, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
