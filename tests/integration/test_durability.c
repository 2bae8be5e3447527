/* test_durability.c - what ccsyncd promises about acknowledged webhooks, with
 * real processes: the start-up judgement of Redis's persistence (log, status,
 * exit 2), the start before Redis answers, and a failover under Sentinel in
 * replica mode where every webhook answered 2xx survives. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "ccsync/keys.h"
#include "novi.h"
#include "peek.h"
#include "stack.h"
#include "testsupport.h"

/* ---- the start-up judgement ---- */

static void test_redis_without_aof_is_a_warning_in_the_log_and_the_status(void **state)
{
    (void)state;
    long status;
    json_object *o = api_json("GET", "/v1/status", NULL, &status);
    assert_int_equal(status, 200);
    assert_string_equal(jpath_str(o, "durability.mode"), "everysec");
    assert_false(json_object_get_boolean(jpath(o, "durability.ok")));
    json_object *w = jpath(o, "durability.warnings");
    assert_int_equal(json_object_array_length(w), 1);
    assert_non_null(
        strstr(json_object_get_string(json_object_array_get_idx(w, 0)), "appendonly no"));
    json_object_put(o);
    assert_int_equal(stack_log_count(0, "\"msg\":\"redis_durability\""), 1);
}

static int setup_aof(void **state)
{
    (void)state;
    struct stack_options o = {.aof = true, .env = {"CCSYNC_DURABILITY=always"}};
    return stack_start("test-durability", &o);
}

static void test_always_starts_on_a_redis_that_fsyncs_every_write(void **state)
{
    (void)state;
    long status;
    json_object *o = api_json("GET", "/v1/status", NULL, &status);
    assert_int_equal(status, 200);
    assert_string_equal(jpath_str(o, "durability.mode"), "always");
    assert_true(json_object_get_boolean(jpath(o, "durability.ok")));
    json_object_put(o);
    assert_int_equal(stack_log_count(0, "redis_durability"), 0);
}

/* ccsyncd with the stack's Redis and env; its exit status once it stopped by
 * itself within 20 s (-1 if it did not), its stderr in err. */
static int run_alone(char *const env[], char *err, size_t err_size)
{
    char bin[512], path[256];
    ts_bin_path("CCSYNCD_BIN", "ccsyncd", bin, sizeof bin);
    stack_log_path(path, sizeof path, "alone-stderr");
    char *argv[] = {bin, NULL};
    pid_t pid = ts_spawn_io(argv, env, NULL, path);
    int ws = ts_wait_exit(pid, 20000);
    if (ws == -1)
        ts_kill(pid, SIGKILL);
    char *text = ts_read_file(path, NULL);
    snprintf(err, err_size, "%s", text ? text : "");
    free(text);
    return ws != -1 && WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
}

static void test_always_refuses_a_redis_that_fsyncs_every_second(void **state)
{
    (void)state;
    char url[64], listen[64], err[1024];
    snprintf(url, sizeof url, "CCSYNC_REDIS_URL=redis://127.0.0.1:%d/0", stack.redis_port);
    snprintf(listen, sizeof listen, "CCSYNC_LISTEN=127.0.0.1:%d", ts_free_port());
    char *env[] = {url,
                   listen,
                   "CCSYNC_ADMIN_TOKEN=" ADMIN_TOKEN,
                   "CCSYNC_DURABILITY=always",
                   "CCSYNC_ALLOW_PLAINTEXT_SECRETS=1",
                   NULL};
    assert_int_equal(run_alone(env, err, sizeof err), 2);
    /* one line, naming the variable and what Redis has */
    assert_non_null(strstr(err, "ccsyncd: CCSYNC_DURABILITY: "));
    assert_non_null(strstr(err, "appendonly no"));
    assert_int_equal(strchr(err, '\n') - err + 1, (long)strlen(err));
}

/* ---- starting before Redis answers ---- */

static int setup_later(void **state)
{
    (void)state;
    struct stack_options o = {.ccsyncd_later = true};
    return stack_start("test-durability", &o);
}

static bool readyz_200(void *arg)
{
    (void)arg;
    struct reply r = api_at(0, "GET", "/readyz", NULL);
    bool ok = r.status == 200;
    reply_free(&r);
    return ok;
}

static void test_health_answers_while_redis_is_awaited_and_the_rest_says_starting(void **state)
{
    (void)state;
    kill(stack.redis_pid, SIGKILL);
    ts_kill(stack.redis_pid, SIGKILL);
    char ccsyncd[512], log[256];
    ts_bin_path("CCSYNCD_BIN", "ccsyncd", ccsyncd, sizeof ccsyncd);
    stack_log_path(log, sizeof log, "ccsyncd0");
    char url[64], listen[64];
    snprintf(url, sizeof url, "CCSYNC_REDIS_URL=redis://127.0.0.1:%d/0", stack.redis_port);
    snprintf(listen, sizeof listen, "CCSYNC_LISTEN=127.0.0.1:%d", stack.http_port[0]);
    char key_file[256];
    snprintf(key_file, sizeof key_file, "CCSYNC_SECRETS_KEY_FILE=%s", stack.key_file);
    char *env[] = {url, listen, "CCSYNC_ADMIN_TOKEN=" ADMIN_TOKEN, key_file, NULL};
    char *argv[] = {ccsyncd, NULL};
    stack.ccsyncd_pid[0] = ts_spawn_logged(argv, env, log);
    snprintf(stack.base[0], sizeof stack.base[0], "http://127.0.0.1:%d", stack.http_port[0]);
    assert_int_equal(ts_wait_port(stack.http_port[0], 10000), 0);

    struct reply r = api_at(0, "GET", "/livez", NULL);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    r = api_at(0, "GET", "/readyz", NULL);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.body, "starting"));
    reply_free(&r);
    r = api_at(0, "GET", "/v1/associations/" ASSOC, NULL);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.body, "\"code\":\"starting\""));
    reply_free(&r);
    char id[64];
    new_id(id, sizeof id);
    char *body = envelope("group.deleted", "{\"UniqueID\":\"g-1\"}", 1);
    assert_int_equal(post_webhook(id, body), 503);
    free(body);

    assert_int_equal(stack_start_redis(), 0);
    assert_true(ts_wait_for(readyz_200, NULL, 20000, 50));
}

/* ---- a failover under Sentinel, in replica mode ---- */

struct ha {
    pid_t replica, sentinel;
    int replica_port, sentinel_port;
    char dir[160];
};

static bool replica_in_sync(void *arg)
{
    redisContext *c = peek_connect(*(int *)arg);
    redisReply *r = redisCommand(c, "INFO replication");
    bool up = r && r->type == REDIS_REPLY_STRING && strstr(r->str, "master_link_status:up");
    freeReplyObject(r);
    redisFree(c);
    return up;
}

static void ha_start(struct ha *h)
{
    snprintf(h->dir, sizeof h->dir, "%s/ha", stack.log_dir);
    char mk[200];
    snprintf(mk, sizeof mk, "mkdir -p %s", h->dir);
    assert_int_equal(system(mk), 0);
    h->replica_port = ts_free_port();
    h->sentinel_port = ts_free_port();
    char primary[16];
    snprintf(primary, sizeof primary, "%d", stack.redis_port);
    char *replica_of[] = {"--replicaof", "127.0.0.1", primary, NULL};
    h->replica = ts_redis_start_in(h->replica_port, h->dir, replica_of);
    assert_true(h->replica > 0);
    assert_true(ts_wait_for(replica_in_sync, &h->replica_port, 10000, 50));
    h->sentinel = ts_sentinel_start(h->sentinel_port, stack.redis_port, h->dir);
    assert_true(h->sentinel > 0);
}

/*
 * Posts group.updated for group g-n under webhook-id w-n, as Novi retries: at
 * most tries times (0: until an answer other than 503, within WAIT_MS), every
 * pause_ms. Returns how many 503s came before another answer; *last gets the
 * last answer.
 */
static int post_webhook_n(int n, int tries, long pause_ms, long *last)
{
    char id[32], data[128];
    snprintf(id, sizeof id, "w-%d", n);
    snprintf(data, sizeof data,
             "{\"UniqueID\":\"g-%d\",\"GroupName\":\"G %d\",\"SyncToConstantContact\":false}", n,
             n);
    char *body = envelope("group.updated", data, 10 + n);
    int refused = 0;
    for (long deadline = ts_now_ms() + WAIT_MS; tries == 0 || refused < tries;
         ts_sleep_ms(pause_ms)) {
        *last = post_webhook(id, body);
        if (*last != 503)
            break;
        refused++;
        if (ts_now_ms() > deadline)
            fail_msg("webhook %s never accepted", id);
    }
    free(body);
    return refused;
}

/* Until accepted: 202, or 200 for a retry whose first try landed. */
static int post_until_accepted(int n)
{
    long last = 0;
    int refused = post_webhook_n(n, 0, 100, &last);
    assert_true(last == 202 || last == 200);
    return refused;
}

/* The Sentinel names the replica as the primary. */
static bool promoted(void *arg)
{
    const struct ha *h = arg;
    redisContext *c = peek_connect(h->sentinel_port);
    redisReply *r = redisCommand(c, "SENTINEL get-master-addr-by-name main");
    bool done = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
                atoi(r->element[1]->str) == h->replica_port;
    freeReplyObject(r);
    redisFree(c);
    return done;
}

static bool groups_listed(void *arg)
{
    long status;
    json_object *o = api_json("GET", "/v1/associations/" ASSOC "/groups", NULL, &status);
    bool all =
        status == 200 && json_object_array_length(jget(o, "groups")) == (size_t)(long)(intptr_t)arg;
    json_object_put(o);
    return all;
}

static void test_failover_in_replica_mode_loses_no_acknowledged_webhook(void **state)
{
    (void)state;
    struct ha h;
    ha_start(&h);
    char sentinels[64];
    snprintf(sentinels, sizeof sentinels, "CCSYNC_REDIS_SENTINELS=127.0.0.1:%d", h.sentinel_port);
    stack.o.env[0] = sentinels;
    stack.o.env[1] = "CCSYNC_REDIS_MASTER_NAME=main";
    stack.o.env[2] = "CCSYNC_DURABILITY=replica";
    assert_int_equal(stack_start_service(), 0);

    const int before = 20, after = 20;
    for (int n = 0; n < before; n++)
        assert_int_equal(post_until_accepted(n), 0); /* a replica confirms each batch */
    kill(stack.redis_pid, SIGKILL); /* the primary dies; the Sentinel promotes the replica */
    ts_kill(stack.redis_pid, SIGKILL);
    stack.redis_pid = 0;
    /* the promoted primary has no replica of its own: replica mode acknowledges
     * nothing no replica holds, so webhooks are answered 503 (Novi retries) for
     * as long as it has none, though ccsyncd found the new primary */
    assert_true(ts_wait_for(promoted, &h, WAIT_MS, 100));
    long last = 0;
    assert_int_equal(post_webhook_n(before, 15, 200, &last), 15); /* 15 tries over 3 s */
    assert_int_equal(last, 503);
    /* the old primary comes back (empty, as a host replaced): the Sentinel makes it
     * a replica of the new one, and webhooks are acknowledged again */
    assert_int_equal(stack_start_redis(), 0);
    for (int n = before; n < before + after; n++)
        post_until_accepted(n);

    /* every webhook answered 2xx before the failover is on the new primary */
    redisContext *c = peek_connect(h.replica_port);
    for (int n = 0; n < before; n++) {
        char id[32];
        snprintf(id, sizeof id, "w-%d", n);
        assert_int_equal(peek_integer(c, "EXISTS %s", key_dedup(ASSOC, id).s), 1);
    }
    redisFree(c);
    /* and every one, before and after, was folded: each made its group */
    assert_true(ts_wait_for(groups_listed, (void *)(intptr_t)(before + after), WAIT_MS, 100));
    ts_kill(h.sentinel, SIGTERM);
    ts_kill(h.replica, SIGTERM);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_redis_without_aof_is_a_warning_in_the_log_and_the_status, stack_setup, stack_stop),
        cmocka_unit_test_setup_teardown(test_always_starts_on_a_redis_that_fsyncs_every_write,
                                        setup_aof, stack_stop),
        cmocka_unit_test_setup_teardown(test_always_refuses_a_redis_that_fsyncs_every_second,
                                        stack_setup, stack_stop),
        cmocka_unit_test_setup_teardown(
            test_health_answers_while_redis_is_awaited_and_the_rest_says_starting, setup_later,
            stack_stop),
        cmocka_unit_test_setup_teardown(test_failover_in_replica_mode_loses_no_acknowledged_webhook,
                                        setup_later, stack_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
