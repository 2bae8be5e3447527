/* test_migrate.c - the start-up migration from release 1's key layout, run on a
 * Redis that release 1 filled (tests/fixtures/release1.keys, made by
 * tests/fixtures/make-release1.sh): every key moves with its value and time to
 * live, a second run changes nothing, processes starting at once agree, a run
 * that died midway is finished, and ccsyncd on the migrated Redis answers as
 * release 1 did. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>
#include <json-c/json.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ccsync/migrate.h"
#include "ccsync/store.h"
#include "ccsync/webhook.h"
#include "peek.h"
#include "testsupport.h"

#define FIXTURE_KEYS "tests/fixtures/release1.keys"
#define FIXTURE_API "tests/fixtures/release1-api.json"
#define ASSOC "rel1"
#define SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define MAX_KEYS 256

/* One key as the fixture loaded it, read back just before migrating. */
struct old_key {
    char name[512];
    char *dump; /* DUMP payload */
    size_t dump_len;
    long long pttl; /* -1: no time to live */
};

static struct {
    int port;
    pid_t redis_pid;
    pid_t ccsyncd_pid;
    redisContext *c;
    struct old_key keys[MAX_KEYS];
    size_t n_keys;
} S;

/* ---- Redis ---- */

static redisReply *cmd(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(S.c, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    if (r->type == REDIS_REPLY_ERROR)
        fail_msg("Redis: %s", r->str);
    return r;
}

static long long cmd_int(const char *fmt, const char *arg)
{
    redisReply *r = cmd(fmt, arg);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

static long long dbsize(void)
{
    redisReply *r = cmd("DBSIZE");
    long long n = r->integer;
    freeReplyObject(r);
    return n;
}

static int setup(void **state)
{
    (void)state;
    S.c = peek_redis_open(&S.redis_pid, &S.port);
    return S.c ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < S.n_keys; i++)
        free(S.keys[i].dump);
    S.n_keys = 0;
    redisFree(S.c);
    S.c = NULL;
    if (S.ccsyncd_pid > 0)
        ts_kill(S.ccsyncd_pid, SIGTERM);
    S.ccsyncd_pid = 0;
    if (S.redis_pid > 0)
        ts_kill(S.redis_pid, SIGTERM);
    S.redis_pid = 0;
    return 0;
}

/* ---- the fixture ---- */

static size_t unhex(const char *hex, size_t n, char *out)
{
    size_t len = 0;
    for (size_t i = 0; i + 1 < n; i += 2) {
        unsigned v;
        assert_int_equal(sscanf(hex + i, "%2x", &v), 1);
        out[len++] = (char)v;
    }
    return len;
}

/* RESTOREs every key of the fixture with its recorded time to live. */
static void load_release1(void)
{
    char *text = ts_read_file(FIXTURE_KEYS, NULL);
    if (!text)
        fail_msg("cannot read %s (run the test from the repository's root)", FIXTURE_KEYS);
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *sp1 = strchr(line, ' ');
        assert_non_null(sp1);
        char *sp2 = strchr(sp1 + 1, ' ');
        assert_non_null(sp2);
        long long pttl = strtoll(sp1 + 1, NULL, 10);
        char key[512], *payload = malloc(strlen(sp2));
        size_t key_len = unhex(line, (size_t)(sp1 - line), key);
        size_t payload_len = unhex(sp2 + 1, strlen(sp2 + 1), payload);
        redisReply *r =
            cmd("RESTORE %b %lld %b", key, key_len, pttl > 0 ? pttl : 0LL, payload, payload_len);
        freeReplyObject(r);
        free(payload);
    }
    free(text);
}

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Every key now in Redis, with its DUMP and PTTL, into S.keys. */
static void snapshot(void)
{
    for (size_t i = 0; i < S.n_keys; i++)
        free(S.keys[i].dump);
    S.n_keys = 0;
    redisReply *all = cmd("KEYS *"); /* a test's own small Redis */
    assert_true(all->elements <= MAX_KEYS);
    for (size_t i = 0; i < all->elements; i++) {
        struct old_key *k = &S.keys[S.n_keys++];
        snprintf(k->name, sizeof k->name, "%s", all->element[i]->str);
        redisReply *d = cmd("DUMP %s", k->name);
        k->dump = malloc(d->len);
        memcpy(k->dump, d->str, d->len);
        k->dump_len = d->len;
        freeReplyObject(d);
        k->pttl = cmd_int("PTTL %s", k->name);
    }
    freeReplyObject(all);
}

/* The name keys.h gives a release-1 key, spelled out here by hand so that this
 * test checks the layout rather than repeating the code. */
static void expected_name(const char *old, char *out, size_t size)
{
    const char *p = ASSOC;
    if (strcmp(old, "ccsync:a:" ASSOC) == 0)
        snprintf(out, size, "ccsync:{%s}:association", p);
    else if (starts_with(old, "ccsync:a:" ASSOC ":"))
        snprintf(out, size, "ccsync:{%s}:%s", p, old + strlen("ccsync:a:" ASSOC ":"));
    else if (starts_with(old, "ccsync:dedup:" ASSOC ":"))
        snprintf(out, size, "ccsync:{%s}:dedup:%s", p, old + strlen("ccsync:dedup:" ASSOC ":"));
    else if (starts_with(old, "ccsync:lease:" ASSOC "|"))
        snprintf(out, size, "ccsync:{%s}:lease:%s", p, old + strlen("ccsync:lease:" ASSOC "|"));
    else if (strcmp(old, "ccsync:lease:reconcile:" ASSOC) == 0)
        snprintf(out, size, "ccsync:{%s}:reconcile-lease", p);
    else if (strcmp(old, "ccsync:lock:refresh:" ASSOC) == 0)
        snprintf(out, size, "ccsync:{%s}:refresh-lock", p);
    else
        snprintf(out, size, "%s", old);
}

static long long count_matching(const char *pattern)
{
    long long n = 0;
    char cursor[32] = "0";
    do {
        redisReply *r = cmd("SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        n += (long long)r->element[1]->elements;
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    return n;
}

static void assert_score(const char *key, const char *member, const char *want)
{
    redisReply *r = cmd("ZSCORE %s %s", key, member);
    if (r->type != REDIS_REPLY_STRING)
        fail_msg("no %s in %s", member, key);
    assert_string_equal(r->str, want);
    freeReplyObject(r);
}

/* What a complete migration of the fixture leaves, against S.keys taken before
 * it: every key under its new name with the same DUMP and a TTL kept; release
 * 1's schedule split per association; the marker; nothing of the old names. */
static void assert_fixture_migrated(void)
{
    size_t renamed = 0;
    char due_board[64] = "", due_east[64] = "";
    for (size_t i = 0; i < S.n_keys; i++) {
        const struct old_key *k = &S.keys[i];
        if (strcmp(k->name, "ccsync:dirty") == 0)
            continue;
        char name[600];
        expected_name(k->name, name, sizeof name);
        renamed += strcmp(name, k->name) != 0;
        redisReply *d = cmd("DUMP %s", name);
        if (d->type != REDIS_REPLY_STRING)
            fail_msg("%s: no %s after the migration", k->name, name);
        if (d->len != k->dump_len || memcmp(d->str, k->dump, d->len) != 0)
            fail_msg("%s: %s does not hold the old value", k->name, name);
        freeReplyObject(d);
        long long pttl = cmd_int("PTTL %s", name);
        if (k->pttl < 0)
            assert_int_equal(pttl, -1);
        else if (pttl <= 0 || pttl > k->pttl)
            fail_msg("%s: PTTL %lld after, %lld before", name, pttl, k->pttl);
    }
    assert_int_equal(renamed, 31); /* the fixture's keys of association rel1 */

    /* release 1's schedule: "rel1|ch.1:east" due D, "rel1|board" due D + 100 */
    redisReply *r = cmd("ZRANGE ccsync:{" ASSOC "}:dirty 0 -1 WITHSCORES");
    assert_int_equal(r->elements, 4);
    assert_string_equal(r->element[0]->str, "ch.1:east");
    assert_string_equal(r->element[2]->str, "board");
    snprintf(due_east, sizeof due_east, "%s", r->element[1]->str);
    snprintf(due_board, sizeof due_board, "%s", r->element[3]->str);
    freeReplyObject(r);
    assert_int_equal(strtoll(due_board, NULL, 10) - strtoll(due_east, NULL, 10), 100);
    assert_score("ccsync:due", ASSOC, due_east);
    assert_int_equal(cmd_int("ZCARD %s", "ccsync:due"), 1);

    r = cmd("GET ccsync:layout");
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_string_equal(r->str, "2");
    freeReplyObject(r);
    assert_int_equal(count_matching("ccsync:a:*"), 0);
    assert_int_equal(count_matching("ccsync:dedup:*"), 0);
    assert_int_equal(count_matching("ccsync:lease:*"), 0);
    assert_int_equal(count_matching("ccsync:lock:*"), 0);
    assert_int_equal(cmd_int("EXISTS %s", "ccsync:dirty"), 0);
    assert_int_equal(cmd_int("EXISTS %s", "ccsync:migrate-lock"), 0);
    /* nothing else: the old keys, less ccsync:dirty, plus dirty, due and the marker */
    assert_int_equal(dbsize(), (long long)S.n_keys + 2);
}

/* The schedule entries the fixture holds, read before migrating. */
static void assert_fixture_loaded(void)
{
    assert_int_equal(S.n_keys, 38);
    assert_int_equal(cmd_int("ZCARD %s", "ccsync:dirty"), 2);
    assert_true(cmd_int("PTTL %s", "ccsync:lease:" ASSOC "|board") > 0);
    assert_true(cmd_int("PTTL %s", "ccsync:dedup:" ASSOC ":msg_release1_duplicate") > 0);
}

/* ---- (a) one run moves everything ---- */

static void test_release1_redis_is_moved_key_by_key_with_values_and_ttls(void **state)
{
    (void)state;
    load_release1();
    snapshot();
    assert_fixture_loaded();

    struct migrate_report rep;
    assert_int_equal(migrate_run(S.c, NULL, &rep), STORE_OK);
    assert_true(rep.migrated);
    assert_int_equal(rep.renamed, 31);
    assert_int_equal(rep.schedule, 2);
    assert_int_equal(rep.skipped, 0);
    assert_fixture_migrated();
}

/* ---- (b) a second run changes nothing ---- */

static void test_a_second_run_changes_nothing(void **state)
{
    (void)state;
    load_release1();
    assert_int_equal(migrate_run(S.c, NULL, NULL), STORE_OK);
    snapshot();
    struct old_key first[MAX_KEYS];
    size_t n = S.n_keys;
    memcpy(first, S.keys, n * sizeof first[0]);
    S.n_keys = 0; /* first[] owns the dumps now */

    struct migrate_report rep;
    assert_int_equal(migrate_run(S.c, NULL, &rep), STORE_OK);
    assert_false(rep.migrated);
    assert_int_equal(rep.renamed + rep.gone + rep.schedule + rep.skipped, 0);
    snapshot();
    assert_int_equal(S.n_keys, n);
    for (size_t i = 0; i < n; i++) {
        const struct old_key *k = &first[i];
        redisReply *d = cmd("DUMP %s", k->name);
        assert_int_equal(d->type, REDIS_REPLY_STRING);
        assert_memory_equal(d->str, k->dump, k->dump_len);
        freeReplyObject(d);
        free(first[i].dump);
    }
}

/* ---- resumable ---- */

/* A run that died midway: some keys and one schedule entry moved, no marker. */
static void test_a_run_that_died_midway_is_finished_by_the_next(void **state)
{
    (void)state;
    load_release1();
    snapshot();
    freeReplyObject(cmd("RENAME ccsync:a:" ASSOC " ccsync:{" ASSOC "}:association"));
    freeReplyObject(cmd("RENAME ccsync:a:" ASSOC ":g:ch.1:east ccsync:{" ASSOC "}:g:ch.1:east"));
    freeReplyObject(cmd("RENAME ccsync:lease:" ASSOC "|board ccsync:{" ASSOC "}:lease:board"));
    redisReply *due = cmd("ZSCORE ccsync:dirty " ASSOC "|ch.1:east");
    freeReplyObject(cmd("ZADD ccsync:{" ASSOC "}:dirty %s ch.1:east", due->str));
    freeReplyObject(cmd("ZADD ccsync:due LT %s " ASSOC, due->str)); /* died before the ZREM */
    freeReplyObject(due);
    /* and its lock ran out */

    struct migrate_report rep;
    assert_int_equal(migrate_run(S.c, NULL, &rep), STORE_OK);
    assert_true(rep.migrated);
    assert_int_equal(rep.renamed, 28);
    assert_int_equal(rep.schedule, 2);
    assert_fixture_migrated();
}

/* The lock of a process that died while migrating runs out; a waiting process takes over. */
static void test_a_dead_migrators_lock_is_taken_over_when_it_runs_out(void **state)
{
    (void)state;
    load_release1();
    snapshot();
    freeReplyObject(cmd("SET ccsync:migrate-lock dead-process PX 700"));
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct migrate_report rep;
    assert_int_equal(migrate_run(S.c, NULL, &rep), STORE_OK);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long waited_ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    assert_true(waited_ms >= 600);
    assert_true(rep.migrated);
    assert_fixture_migrated();
}

/* ---- (c) several processes at once ---- */

struct racer {
    pthread_t thread;
    int rc;
    struct migrate_report rep;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    redisContext *c = redisConnect("127.0.0.1", S.port);
    r->rc = c && !c->err ? migrate_run(c, NULL, &r->rep) : STORE_ERR;
    redisFree(c);
    return NULL;
}

static void test_processes_starting_at_once_migrate_once(void **state)
{
    (void)state;
    load_release1();
    snapshot();
    struct racer racers[4];
    memset(racers, 0, sizeof racers);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&racers[i].thread, NULL, race, &racers[i]), 0);
    int migrated = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(racers[i].thread, NULL);
        assert_int_equal(racers[i].rc, STORE_OK);
        migrated += racers[i].rep.migrated;
    }
    assert_int_equal(migrated, 1);
    assert_fixture_migrated();
}

/* ---- (d) a fresh Redis ---- */

static void test_a_fresh_redis_gets_only_the_marker(void **state)
{
    (void)state;
    struct migrate_report rep;
    assert_int_equal(migrate_run(S.c, NULL, &rep), STORE_OK);
    assert_true(rep.migrated);
    assert_int_equal(rep.renamed + rep.schedule + rep.skipped, 0);
    assert_int_equal(dbsize(), 1);
    redisReply *r = cmd("GET ccsync:layout");
    assert_string_equal(r->str, "2");
    freeReplyObject(r);
}

static void test_a_newer_layout_is_refused_untouched(void **state)
{
    (void)state;
    load_release1();
    freeReplyObject(cmd("SET ccsync:layout 3"));
    snapshot();
    size_t before = S.n_keys;
    assert_int_equal(migrate_run(S.c, NULL, NULL), STORE_ERR);
    assert_int_equal(dbsize(), (long long)before);
    assert_int_equal(cmd_int("EXISTS %s", "ccsync:a:" ASSOC), 1);
}

/* ---- (e) ccsyncd on the migrated Redis answers as release 1 did ---- */

static bool readyz_200(void *arg)
{
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/readyz", *(int *)arg);
    long status = 0;
    char *body = NULL;
    ts_http("GET", url, NULL, NULL, &status, &body);
    free(body);
    return status == 200;
}

static json_object *api_get(int port, const char *path)
{
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    const char *headers[] = {"Authorization: Bearer migrate-admin-token", NULL};
    long status = 0;
    char *body = NULL;
    assert_int_equal(ts_http("GET", url, headers, NULL, &status, &body), 0);
    if (status != 200)
        fail_msg("GET %s: %ld %s", path, status, body ? body : "");
    json_object *j = json_tokener_parse(body);
    free(body);
    assert_non_null(j);
    return j;
}

static int by_group_id(const void *a, const void *b)
{
    json_object *x = *(json_object *const *)a, *y = *(json_object *const *)b, *gx, *gy;
    json_object_object_get_ex(x, "group_id", &gx);
    json_object_object_get_ex(y, "group_id", &gy);
    return strcmp(json_object_get_string(gx), json_object_get_string(gy));
}

/* Added to GroupStatus since release 1: when the next sync is due, and what it
 * waits for (never the budget here: the day is nearly unused). */
static void drop_budget_fields(json_object *group)
{
    if (!json_object_is_type(group, json_type_object) ||
        !json_object_object_get_ex(group, "group_id", NULL))
        return;
    json_object *waiting;
    assert_true(json_object_object_get_ex(group, "next_sync_at", NULL));
    assert_true(json_object_object_get_ex(group, "waiting_for", &waiting));
    assert_null(waiting);
    json_object_object_del(group, "next_sync_at");
    json_object_object_del(group, "waiting_for");
}

/* Groups come from a set: the same groups in any order are the same answer. */
static void assert_same_json(json_object *want, json_object *got, const char *what)
{
    drop_budget_fields(got);
    json_object *groups;
    if (json_object_is_type(got, json_type_object) &&
        json_object_object_get_ex(got, "groups", &groups) &&
        json_object_is_type(groups, json_type_array))
        for (size_t i = 0; i < json_object_array_length(groups); i++)
            drop_budget_fields(json_object_array_get_idx(groups, i));
    /* added since release 1: what the caller may do (the operator, here) */
    if (json_object_is_type(got, json_type_object) &&
        json_object_object_get_ex(got, "access", NULL)) {
        assert_string_equal(json_object_get_string(json_object_object_get(got, "access")),
                            "operator");
        json_object_object_del(got, "access");
    }
    json_object *wg, *gg;
    if (json_object_object_get_ex(want, "groups", &wg) &&
        json_object_object_get_ex(got, "groups", &gg) && json_object_is_type(wg, json_type_array) &&
        json_object_is_type(gg, json_type_array)) {
        json_object_array_sort(wg, by_group_id);
        json_object_array_sort(gg, by_group_id);
    }
    if (!json_object_equal(want, got))
        fail_msg("%s differs from release 1's answer:\nrelease 1: %s\nnow:       %s", what,
                 json_object_to_json_string(want), json_object_to_json_string(got));
}

static pid_t start_ccsyncd(int http_port, const char *log)
{
    const char *bin = getenv("CCSYNCD_BIN");
    char path[256];
    snprintf(path, sizeof path, "%s", bin && *bin ? bin : "build/ccsyncd");
    static char e_listen[64], e_redis[80], e_api[96], e_token[128];
    int dead = ts_free_port(); /* no CC at all: nothing is due, nothing may call it */
    snprintf(e_listen, sizeof e_listen, "CCSYNC_LISTEN=127.0.0.1:%d", http_port);
    snprintf(e_redis, sizeof e_redis, "CCSYNC_REDIS_URL=redis://127.0.0.1:%d/0", S.port);
    snprintf(e_api, sizeof e_api, "CCSYNC_CC_API_URL=http://127.0.0.1:%d/v3", dead);
    snprintf(e_token, sizeof e_token,
             "CCSYNC_CC_TOKEN_URL=http://127.0.0.1:%d/oauth2/default/v1/token", dead);
    char *env[] = {e_listen,
                   e_redis,
                   "CCSYNC_ADMIN_TOKEN=migrate-admin-token",
                   "CCSYNC_ALLOW_PLAINTEXT_SECRETS=1",
                   e_api,
                   e_token,
                   "CCSYNC_WORKERS=1",
                   "CCSYNC_LOG_FORMAT=json",
                   "CCSYNC_LOG_LEVEL=info",
                   "CCSYNC_ASSOCIATION_ID=",
                   "CCSYNC_WEBHOOK_SECRET=",
                   "CCSYNC_CC_ACCESS_TOKEN=",
                   "CCSYNC_CC_REFRESH_TOKEN=",
                   "CCSYNC_CC_EXPIRES_AT=",
                   NULL};
    char *argv[] = {path, NULL};
    pid_t pid = ts_spawn_io(argv, env, log, NULL);
    assert_true(pid > 0);
    assert_int_equal(ts_wait_port(http_port, 10000), 0);
    /* it listens at once and answers 503 "starting" until the layout is migrated */
    assert_true(ts_wait_for(readyz_200, &http_port, 20000, 50));
    return pid;
}

static void post_duplicate(int port, json_object *want)
{
    json_object *dup, *id, *answer, *status;
    assert_true(json_object_object_get_ex(want, "duplicate", &dup));
    assert_true(json_object_object_get_ex(dup, "webhook_id", &id));
    assert_true(json_object_object_get_ex(dup, "answer", &answer));
    assert_true(json_object_object_get_ex(dup, "status", &status));
    const char *body = "{\"type\":\"customer.removed\",\"timestamp\":\"2026-12-05T00:00:00Z\","
                       "\"data\":{\"UniqueID\":\"m4\"}}";
    char sig[128], h_id[160], h_ts[64], h_sig[200], url[256];
    int64_t now = (int64_t)time(NULL);
    assert_int_equal(
        webhook_sign(SECRET, json_object_get_string(id), now, body, strlen(body), sig, sizeof sig),
        0);
    snprintf(h_id, sizeof h_id, "webhook-id: %s", json_object_get_string(id));
    snprintf(h_ts, sizeof h_ts, "webhook-timestamp: %lld", (long long)now);
    snprintf(h_sig, sizeof h_sig, "webhook-signature: %s", sig);
    const char *headers[] = {"Content-Type: application/json", h_id, h_ts, h_sig, NULL};
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/associations/" ASSOC "/webhooks/novi", port);
    long got_status = 0;
    char *got = NULL;
    assert_int_equal(ts_http("POST", url, headers, body, &got_status, &got), 0);
    assert_int_equal(got_status, json_object_get_int(status));
    json_object *j = json_tokener_parse(got ? got : "");
    assert_same_json(answer, j, "the repeated delivery's answer");
    json_object_put(j);
    free(got);
}

static void test_ccsyncd_on_a_release1_redis_answers_as_release1_did(void **state)
{
    (void)state;
    load_release1();
    /* The next reconcile fell due long ago by now; this test wants the API's view,
     * not a reconcile against a Constant Contact that never held these lists. */
    freeReplyObject(cmd("ZADD ccsync:reconcile XX 99999999999999 " ASSOC));
    json_object *want = json_object_from_file(FIXTURE_API);
    assert_non_null(want);

    char log[128];
    snprintf(log, sizeof log, "/tmp/ccsync-test-migrate-%d.log", getpid());
    int port = ts_free_port();
    S.ccsyncd_pid = start_ccsyncd(port, log);
    const struct {
        const char *field, *path;
    } views[] = {
        {"association", "/v1/associations/" ASSOC},
        {"groups", "/v1/associations/" ASSOC "/groups"},
        {"audit", "/v1/associations/" ASSOC "/audit"},
    };
    for (size_t i = 0; i < sizeof views / sizeof views[0]; i++) {
        json_object *w, *got = api_get(port, views[i].path);
        assert_true(json_object_object_get_ex(want, views[i].field, &w));
        assert_same_json(w, got, views[i].path);
        json_object_put(got);
    }
    post_duplicate(port, want);
    ts_kill(S.ccsyncd_pid, SIGTERM);
    S.ccsyncd_pid = 0;
    json_object_put(want);

    char *out = ts_read_file(log, NULL);
    assert_non_null(out);
    assert_non_null(strstr(out, "layout_migrated"));
    free(out);
    unlink(log);
    assert_int_equal(count_matching("ccsync:a:*"), 0);
    redisReply *r = cmd("GET ccsync:layout");
    assert_string_equal(r->str, "2");
    freeReplyObject(r);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_release1_redis_is_moved_key_by_key_with_values_and_ttls),
        T(test_a_second_run_changes_nothing),
        T(test_a_run_that_died_midway_is_finished_by_the_next),
        T(test_a_dead_migrators_lock_is_taken_over_when_it_runs_out),
        T(test_processes_starting_at_once_migrate_once),
        T(test_a_fresh_redis_gets_only_the_marker),
        T(test_a_newer_layout_is_refused_untouched),
        T(test_ccsyncd_on_a_release1_redis_answers_as_release1_did),
    };
    const char *filter = getenv("TEST_FILTER");
    if (filter && *filter)
        cmocka_set_test_filter(filter);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
