/* test_exposure.c - what ccsyncd shows to whom: with CCSYNC_ADMIN_LISTEN the public
 * listener (the webhook URL, open to the internet) serves webhooks, /livez and /readyz
 * only, and the admin API, the status page and /metrics answer on the admin listener;
 * a new webhook secret is 24-64 bytes; and ccsyncd does everything it does as the
 * Redis user of the Docker deployment (docker/redis-ccsync.acl), which Redis lets do
 * nothing else. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <hiredis/hiredis.h>

#include "ccsim_client.h"
#include "ccsync/keys.h"
#include "novi.h"
#include "peek.h"
#include "reply.h"
#include "status.h"
#include "stack.h"
#include "testsupport.h"

static long status_of(const char *base, const char *method, const char *path, const char *body)
{
    char url[256];
    snprintf(url, sizeof url, "%s%s", base, path);
    const char *headers[] = {"Authorization: Bearer " ADMIN_TOKEN, "Content-Type: application/json",
                             NULL};
    struct reply r = http(method, url, headers, body);
    long status = r.status;
    if (status == 404 && strstr(path, "/webhooks/") == NULL &&
        !strstr(r.body ? r.body : "", "\"code\":\"not_found\""))
        fail_msg("%s %s: 404 without not_found: %s", method, path, r.body);
    reply_free(&r);
    return status;
}

static int setup_admin_listener(void **state)
{
    (void)state;
    struct stack_options o = {.admin_listener = true};
    return stack_start("test_exposure", &o);
}

static void test_public_listener_serves_only_webhooks_and_health(void **state)
{
    (void)state;
    const char *pub = stack.base[0];
    assert_int_not_equal(stack.admin_port[0], 0);
    assert_int_equal(status_of(pub, "GET", "/livez", NULL), 200);
    assert_int_equal(status_of(pub, "GET", "/readyz", NULL), 200);
    send_group("g-1", "Board", false, 1); /* a signed webhook: 202 */
    /* everything else is as if it did not exist, even with the operator's token */
    static const struct {
        const char *method, *path, *body;
    } hidden[] = {
        {"GET", "/metrics", NULL},
        {"GET", "/ui/", NULL},
        {"GET", "/ui/app.js", NULL},
        {"GET", "/v1/status", NULL},
        {"GET", "/v1/dead-letters", NULL},
        {"GET", "/v1/associations/" ASSOC, NULL},
        {"PUT", "/v1/associations/" ASSOC, "{\"webhook_secret\":\"" SECRET "\"}"},
        {"DELETE", "/v1/associations/" ASSOC, NULL}, /* 404, not 405: no route is hinted at */
        {"GET", "/v1/associations/" ASSOC "/groups", NULL},
        {"POST", "/v1/associations/" ASSOC "/tokens", "{\"scope\":\"read\"}"},
        {"POST", "/v1/associations/" ASSOC "/groups/g-1/resync", NULL},
    };
    for (size_t i = 0; i < sizeof hidden / sizeof hidden[0]; i++) {
        long status = status_of(pub, hidden[i].method, hidden[i].path, hidden[i].body);
        if (status != 404)
            fail_msg("public %s %s answered %ld, want 404", hidden[i].method, hidden[i].path,
                     status);
    }
}

static void test_admin_listener_serves_the_admin_api_status_page_and_metrics(void **state)
{
    (void)state;
    const char *adm = stack.admin_base[0];
    assert_string_not_equal(adm, stack.base[0]);
    assert_int_equal(status_of(adm, "GET", "/metrics", NULL), 200);
    assert_int_equal(status_of(adm, "GET", "/ui/", NULL), 200);
    assert_int_equal(status_of(adm, "GET", "/v1/status", NULL), 200);
    assert_int_equal(status_of(adm, "GET", "/v1/associations/" ASSOC, NULL), 200);
    assert_int_equal(status_of(adm, "GET", "/v1/associations/" ASSOC "/groups/g-1", NULL), 200);
    assert_int_equal(status_of(adm, "GET", "/readyz", NULL), 200);
    /* the operator's token is still needed there */
    char url[256];
    snprintf(url, sizeof url, "%s/v1/status", adm);
    struct reply r = http("GET", url, NULL, NULL);
    assert_int_equal(r.status, 401);
    reply_free(&r);
}

/* Standard Webhooks secrets are 24-64 bytes once decoded; the 400 names the field. */
static void test_a_webhook_secret_must_be_24_to_64_bytes(void **state)
{
    (void)state;
    static const struct {
        const char *secret, *message;
    } bad[] = {
        {"whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRY=",
         "webhook_secret must decode to 24-64 bytes (Standard Webhooks); this one decodes "
         "to 23"},
        {"whsec_"
         "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+P0A=",
         "webhook_secret must decode to 24-64 bytes (Standard Webhooks); this one decodes "
         "to 65"},
        {"whsec_YQ==", "webhook_secret must decode to 24-64 bytes (Standard Webhooks); this one "
                       "decodes to 1"},
    };
    char body[256];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(body, sizeof body, "{\"webhook_secret\":\"%s\"}", bad[i].secret);
        struct reply r = api("PUT", "/v1/associations/" ASSOC, body);
        assert_int_equal(r.status, 400);
        assert_string_equal(jpath_str(r.json, "error.code"), "invalid_field");
        assert_string_equal(jpath_str(r.json, "error.message"), bad[i].message);
        reply_free(&r);
    }
    const char *good[] = {
        "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYX",
        "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+"
        "Pw=="};
    for (size_t i = 0; i < 2; i++) {
        snprintf(body, sizeof body, "{\"webhook_secret\":\"%s\"}", good[i]);
        struct reply r = api("PUT", "/v1/associations/other", body);
        assert_int_equal(r.status, 200);
        reply_free(&r);
    }
}

/* ---- a Redis at an IPv6 address ---- */

static bool ready_at(void *url)
{
    long status = 0;
    char *body = NULL;
    ts_http("GET", url, NULL, NULL, &status, &body);
    free(body);
    return status == 200;
}

static void test_redis_at_an_ipv6_address_is_reached(void **state)
{
    (void)state;
    int rport = ts_free_port(), hport = ts_free_port();
    char port[16], url[128], listen[64], ready[96];
    snprintf(port, sizeof port, "%d", rport);
    char *redis[] = {"redis-server", "--bind", "::1", "--port", port, "--save", "", NULL};
    pid_t rpid = ts_spawn(redis, NULL);
    snprintf(url, sizeof url, "CCSYNC_REDIS_URL=redis://[::1]:%d/0", rport);
    snprintf(listen, sizeof listen, "CCSYNC_LISTEN=127.0.0.1:%d", hport);
    char bin[512];
    char *argv[] = {(char *)ts_bin_path("CCSYNCD_BIN", "ccsyncd", bin, sizeof bin), NULL};
    char *env[] = {url,
                   listen,
                   "CCSYNC_ADMIN_TOKEN=" ADMIN_TOKEN,
                   "CCSYNC_WORKERS=1",
                   "CCSYNC_ALLOW_PLAINTEXT_SECRETS=1",
                   "CCSYNC_SECRETS_KEY_FILE=",
                   NULL};
    pid_t pid = ts_spawn(argv, env);
    snprintf(ready, sizeof ready, "http://127.0.0.1:%d/readyz", hport);
    bool ok = ts_wait_for(ready_at, ready, 20000, 50); /* 200 needs Redis reached */
    ts_kill(pid, SIGTERM);
    ts_kill(rpid, SIGTERM);
    assert_true(ok);
}

/* ---- the Docker deployment's Redis user ---- */

#define ACL_FILE "docker/redis-ccsync.acl"
#define CCSYNC_PASSWORD "ccsync-acl-test-password"

/* ACL SETUSER ccsync on >password RULES..., the rules read from docker/redis-ccsync.acl
 * as docker/redis-start.sh reads them (every line but comments). */
static void create_ccsync_user(redisContext *c)
{
    char path[512];
    const char *root = getenv("CCSYNC_ROOT");
    snprintf(path, sizeof path, "%s%s" ACL_FILE, root ? root : "", root ? "/" : "");
    char *text = ts_read_file(path, NULL);
    if (!text)
        fail_msg("cannot read %s (run from the repository, or set CCSYNC_ROOT)", path);
    const char *argv[64] = {"ACL", "SETUSER", "ccsync", "on", ">" CCSYNC_PASSWORD};
    int argc = 5;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#')
            continue;
        char *in = NULL;
        for (char *rule = strtok_r(line, " ", &in); rule && argc < 64;
             rule = strtok_r(NULL, " ", &in))
            argv[argc++] = rule;
    }
    redisReply *r = redisCommandArgv(c, argc, argv, NULL);
    assert_non_null(r);
    if (r->type == REDIS_REPLY_ERROR)
        fail_msg("ACL SETUSER: %s", r->str);
    freeReplyObject(r);
    free(text);
}

static int setup_acl(void **state)
{
    (void)state;
    static char url[128], password_file[256];
    struct stack_options o = {
        .aof = true, .ccsyncd_later = true, .reconcile_seconds = 1, .connect = STACK_MINTED_TOKEN};
    if (stack_start("test_exposure", &o) != 0)
        return -1;
    redisContext *c = peek_connect(stack.redis_port);
    create_ccsync_user(c);
    freeReplyObject(peek_command(c, "ACL LOG RESET"));
    /* a release before sealing left this association's secret in plain text: the start
     * seals it and asks for BGREWRITEAOF, as the ccsync user */
    freeReplyObject(peek_command(c, "HSET %s webhook_secret %s cc_state not_configured",
                                 key_association("plain").s, SECRET));
    freeReplyObject(peek_command(c, "SADD %s plain", KEY_ASSOCIATIONS));
    redisFree(c);
    snprintf(password_file, sizeof password_file, "%s/redis-password", stack.log_dir);
    FILE *f = fopen(password_file, "w");
    fputs(CCSYNC_PASSWORD "\n", f);
    fclose(f);
    snprintf(url, sizeof url, "CCSYNC_REDIS_URL=redis://ccsync@127.0.0.1:%d/0", stack.redis_port);
    static char file_var[300];
    snprintf(file_var, sizeof file_var, "CCSYNC_REDIS_PASSWORD_FILE=%s", password_file);
    stack.o.env[0] = url;
    stack.o.env[1] = file_var;
    return stack_start_service();
}

static long long acl_denials(void)
{
    redisContext *c = peek_connect(stack.redis_port);
    redisReply *r = peek_command(c, "ACL LOG");
    long long n = (long long)r->elements;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        for (size_t k = 0; k + 1 < e->elements; k += 2)
            if (e->element[k + 1]->type == REDIS_REPLY_STRING)
                fprintf(stderr, "ACL LOG %zu: %s=%s\n", i, e->element[k]->str,
                        e->element[k + 1]->str);
    }
    freeReplyObject(r);
    redisFree(c);
    return n;
}

static void test_ccsync_needs_nothing_its_redis_user_may_not_do(void **state)
{
    (void)state;
    /* a sync: group on, members in, one leaves, a resync, a token refresh */
    send_group("board", "Board", true, 1);
    send_members("board", 2, 2, member("m1", "ann@example.org", "Ann", "Lee", NULL),
                 member("m2", "bo@example.org", "Bo", "Ng", NULL));
    json_object *gs = wait_synced("board");
    json_object_put(gs);
    send_event("customer.removed", "{\"UniqueID\":\"m2\"}", 3);
    struct reply r = api("PUT", "/v1/associations/" ASSOC,
                         "{\"constant_contact\":{\"expires_at\":\"2020-01-01T00:00:00Z\"}}");
    assert_int_equal(r.status, 200);
    reply_free(&r);
    r = api("POST", "/v1/associations/" ASSOC "/groups/board/resync", NULL);
    assert_int_equal(r.status, 202);
    reply_free(&r);
    wait_reconcile_rounds(2);
    gs = wait_synced("board");
    assert_int_equal(jpath_int(gs, "counts.in_list"), 1);
    json_object_put(gs);
    assert_true(cc_endpoint("POST /oauth2/default/v1/token") >= 1); /* the refresh ran */
    /* the admin API: tokens, audit, status, dead letters, metrics */
    r = api("POST", "/v1/associations/" ASSOC "/tokens", "{\"scope\":\"read\",\"name\":\"t\"}");
    assert_int_equal(r.status, 201);
    char path[160];
    snprintf(path, sizeof path, "/v1/associations/" ASSOC "/tokens/%s", jstr(r.json, "token_id"));
    reply_free(&r);
    static const char *const reads[] = {"/v1/associations/" ASSOC "/tokens",
                                        "/v1/associations/" ASSOC "/audit?limit=10",
                                        "/v1/status",
                                        "/v1/dead-letters?limit=5",
                                        "/metrics",
                                        "/readyz",
                                        "/v1/associations/plain"};
    for (size_t i = 0; i < sizeof reads / sizeof reads[0]; i++) {
        r = api("GET", reads[i], NULL);
        if (r.status != 200)
            fail_msg("GET %s: %ld %s", reads[i], r.status, r.body);
        reply_free(&r);
    }
    r = api("DELETE", path, NULL);
    assert_int_equal(r.status, 204);
    reply_free(&r);
    /* the start sealed the plain-text secret (and rewrote the AOF) as user ccsync */
    assert_int_equal(stack_log_count(0, "\"sealed_now\":1"), 1);
    assert_int_equal(stack_log_count(0, "secrets_aof_not_rewritten"), 0);
    /* a restart: the layout check, the sealing pass, the durability checks again */
    ts_kill(stack.ccsyncd_pid[0], SIGTERM);
    stack.ccsyncd_pid[0] = 0;
    assert_int_equal(stack_start_ccsyncd(0), 0);
    assert_int_equal(stack_log_count(0, "NOPERM"), 0);
    assert_int_equal(stack_log_count(0, "redis_durability"), 0); /* INFO, CONFIG GET allowed */
    assert_int_equal(acl_denials(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_public_listener_serves_only_webhooks_and_health),
        cmocka_unit_test(test_admin_listener_serves_the_admin_api_status_page_and_metrics),
        cmocka_unit_test(test_a_webhook_secret_must_be_24_to_64_bytes),
        cmocka_unit_test(test_redis_at_an_ipv6_address_is_reached),
    };
    int failed = cmocka_run_group_tests(tests, setup_admin_listener, stack_stop);
    const struct CMUnitTest acl[] = {
        cmocka_unit_test(test_ccsync_needs_nothing_its_redis_user_may_not_do),
    };
    return failed + cmocka_run_group_tests(acl, setup_acl, stack_stop);
}
