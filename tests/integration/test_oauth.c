/*
 * test_oauth.c - token refresh against a real redis-server and a fake OAuth
 * token endpoint (libmicrohttpd, in this binary) that behaves like Constant
 * Contact's: each refresh rotates the refresh token, and a spent one is
 * answered 400 {"error":"invalid_grant"}.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <curl/curl.h>
#include <hiredis/hiredis.h>
#include <microhttpd.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ccsync/config.h"
#include "ccsync/keys.h"
#include "ccsync/oauth.h"
#include "ccsync/store.h"
#include "peek.h"
#include "testsupport.h"

#define SECOND 1000000000LL

static int redis_port;
static pid_t redis_pid;
static struct config cfg;

/* ---- the fake token endpoint ---- */

static struct {
    pthread_mutex_t lock;
    struct MHD_Daemon *daemon;
    int port;
    int calls;
    int generation;         /* the last issued tokens are access-N / refresh-N */
    char valid_refresh[64]; /* the one refresh token that works now */
    int delay_ms;           /* before answering: lets concurrent callers pile up */
    unsigned fail_status;   /* answer this (e.g. 503) instead, when not 0 */
    void (*during)(void);   /* run while the request is in flight */
} fake = {.lock = PTHREAD_MUTEX_INITIALIZER};

struct upload {
    char body[4096];
    size_t len;
};

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *json)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(json), (void *)json, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(resp, "Content-Type", "application/json");
    enum MHD_Result ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* The refresh_token parameter of a form body ("" when absent). */
static void form_refresh_token(const char *body, char *out, size_t size)
{
    out[0] = '\0';
    const char *p = body;
    while (p && *p) {
        const char *end = strchr(p, '&');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n > 14 && strncmp(p, "refresh_token=", 14) == 0 && n - 14 < size) {
            memcpy(out, p + 14, n - 14);
            out[n - 14] = '\0';
        }
        p = end ? end + 1 : NULL;
    }
}

static enum MHD_Result token_endpoint(void *cls, struct MHD_Connection *conn, const char *url,
                                      const char *method, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **con_cls)
{
    struct upload *up = *con_cls;
    if (!up) {
        up = calloc(1, sizeof *up);
        *con_cls = up;
        return up ? MHD_YES : MHD_NO;
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        if (up->len + n < sizeof up->body) {
            memcpy(up->body + up->len, upload_data, n);
            up->len += n;
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    char refresh[64];
    form_refresh_token(up->body, refresh, sizeof refresh);
    free(up);
    *con_cls = NULL;

    pthread_mutex_lock(&fake.lock);
    fake.calls++;
    int delay_ms = fake.delay_ms;
    unsigned fail_status = fake.fail_status;
    void (*during)(void) = fake.during;
    pthread_mutex_unlock(&fake.lock);

    if (delay_ms > 0) {
        struct timespec ts = {delay_ms / 1000, (delay_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (during)
        during();
    if (strcmp(method, "POST") != 0 || strcmp(url, "/token") != 0)
        return reply(conn, 404, "{\"error\":\"not_found\"}");
    if (fail_status)
        return reply(conn, fail_status, "{\"error\":\"server_error\"}");

    char json[256];
    pthread_mutex_lock(&fake.lock);
    bool valid = refresh[0] && strcmp(refresh, fake.valid_refresh) == 0;
    if (valid) {
        fake.generation++;
        snprintf(fake.valid_refresh, sizeof fake.valid_refresh, "refresh-%d", fake.generation);
        snprintf(json, sizeof json,
                 "{\"access_token\":\"access-%d\",\"refresh_token\":\"refresh-%d\","
                 "\"token_type\":\"Bearer\",\"expires_in\":86400}",
                 fake.generation, fake.generation);
    }
    pthread_mutex_unlock(&fake.lock);
    if (!valid)
        return reply(conn, 400,
                     "{\"error\":\"invalid_grant\",\"error_description\":\"The refresh token is "
                     "invalid or expired.\"}");
    return reply(conn, 200, json);
}

static int fake_calls(void)
{
    pthread_mutex_lock(&fake.lock);
    int n = fake.calls;
    pthread_mutex_unlock(&fake.lock);
    return n;
}

/* ---- Redis ---- */

static int start_all(void **state)
{
    redis_port = ts_free_port();
    fake.port = ts_free_port();
    if (redis_port == 0 || fake.port == 0)
        return -1;
    redis_pid = ts_redis_start(redis_port);
    if (redis_pid < 0)
        return -1;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    fake.daemon =
        MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION,
                         (uint16_t)fake.port, NULL, NULL, token_endpoint, NULL, MHD_OPTION_END);
    if (!fake.daemon)
        return -1;
    snprintf(cfg.cc_token_url, sizeof cfg.cc_token_url, "http://127.0.0.1:%d/token", fake.port);
    snprintf(cfg.cc_api_url, sizeof cfg.cc_api_url, "http://127.0.0.1:%d/v3", fake.port);
    snprintf(cfg.cc_client_id, sizeof cfg.cc_client_id, "client-1");
    snprintf(cfg.cc_client_secret, sizeof cfg.cc_client_secret, "secret-1");
    /* tokens are sealed at rest, as in production */
    char why[128];
    return secrets_ring_parse("t1 MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n", &cfg.secrets,
                              why, sizeof why);
}

static int stop_all(void **state)
{
    MHD_stop_daemon(fake.daemon);
    curl_global_cleanup();
    ts_kill(redis_pid, SIGTERM);
    return 0;
}

static int reset(void **state)
{
    peek_flushall(redis_port);
    pthread_mutex_lock(&fake.lock);
    fake.calls = 0;
    fake.generation = 0;
    snprintf(fake.valid_refresh, sizeof fake.valid_refresh, "refresh-0");
    fake.delay_ms = 0;
    fake.fail_status = 0;
    fake.during = NULL;
    pthread_mutex_unlock(&fake.lock);
    return 0;
}

/* An admin PUT of credentials, as the admin API does it. */
static void put_credentials(const char *id, const char *access, const char *refresh,
                            int64_t expires_at_ns)
{
    redisContext *c = peek_connect(redis_port);
    struct association_update u = {.has_cc = true,
                                   .cc_access_token = access,
                                   .cc_refresh_token = refresh,
                                   .cc_expires_at_ns = expires_at_ns};
    bool created;
    assert_int_equal(store_association_put(c, &cfg.secrets, id, &u, store_now_ns(), &created), 0);
    redisFree(c);
}

static struct association *get_association(const char *id)
{
    static struct association a;
    redisContext *c = peek_connect(redis_port);
    assert_int_equal(store_association_get(c, &cfg.secrets, id, &a), 1);
    redisFree(c);
    return &a;
}

/* ---- tests ---- */

struct caller {
    pthread_barrier_t *start;
    enum oauth_status status;
    char token[ASSOC_TOKEN_MAX];
};

static void *ask_for_token(void *arg)
{
    struct caller *who = arg;
    redisContext *c = redisConnect("127.0.0.1", redis_port);
    struct oauth_error err;
    pthread_barrier_wait(who->start);
    who->status = oauth_access_token(c, &cfg, "assoc-1", who->token, sizeof who->token, &err);
    redisFree(c);
    return NULL;
}

static void test_expiring_token_is_refreshed_once_for_four_threads(void **state)
{
    int64_t now = store_now_ns();
    put_credentials("assoc-1", "access-0", "refresh-0", now + 60 * SECOND);
    fake.delay_ms = 300;
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 4);
    struct caller callers[4];
    pthread_t threads[4];
    for (int i = 0; i < 4; i++) {
        callers[i] = (struct caller){.start = &start, .status = -1};
        assert_int_equal(pthread_create(&threads[i], NULL, ask_for_token, &callers[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(threads[i], NULL);
    pthread_barrier_destroy(&start);

    assert_int_equal(fake_calls(), 1);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(callers[i].status, OAUTH_OK);
        assert_string_equal(callers[i].token, "access-1");
    }
    struct association *a = get_association("assoc-1");
    assert_string_equal(a->cc_access_token, "access-1");
    assert_string_equal(a->cc_refresh_token, "refresh-1");
    assert_true(a->cc_expires_at_ns >= now + 86400 * SECOND);
    assert_true(a->cc_expires_at_ns <= store_now_ns() + 86400 * SECOND);
    redisContext *c = peek_connect(redis_port);
    assert_false(peek_refresh_lock_exists(c, "assoc-1")); /* released */
    /* the rotated tokens are stored sealed, not as CC sent them */
    redisReply *r =
        peek_command(c, "HMGET %s cc_access_token cc_refresh_token", key_association("assoc-1").s);
    assert_true(strncmp(r->element[0]->str, "enc:v1:t1:", 10) == 0);
    assert_true(strncmp(r->element[1]->str, "enc:v1:t1:", 10) == 0);
    freeReplyObject(r);
    redisFree(c);
}

static void test_failed_refresh_is_not_repeated_by_the_threads_that_waited(void **state)
{
    /* Expired: nothing to fall back on. Each retry might spend the refresh
     * token, so the waiters report a transient failure instead of retrying. */
    put_credentials("assoc-1", "access-0", "refresh-0", store_now_ns() - SECOND);
    fake.delay_ms = 300;
    fake.fail_status = 503;
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 4);
    struct caller callers[4];
    pthread_t threads[4];
    for (int i = 0; i < 4; i++) {
        callers[i] = (struct caller){.start = &start, .status = -1};
        assert_int_equal(pthread_create(&threads[i], NULL, ask_for_token, &callers[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(threads[i], NULL);
    pthread_barrier_destroy(&start);

    assert_int_equal(fake_calls(), 1);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(callers[i].status, OAUTH_TRANSIENT);
        assert_string_equal(callers[i].token, "");
    }
    assert_string_equal(get_association("assoc-1")->cc_refresh_token, "refresh-0");
}

static void test_token_far_from_expiry_is_used_as_is(void **state)
{
    put_credentials("assoc-1", "access-0", "refresh-0", store_now_ns() + 3600 * SECOND);
    redisContext *c = peek_connect(redis_port);
    char token[ASSOC_TOKEN_MAX];
    struct oauth_error err;
    assert_int_equal(oauth_access_token(c, &cfg, "assoc-1", token, sizeof token, &err), OAUTH_OK);
    assert_string_equal(token, "access-0");
    assert_int_equal(fake_calls(), 0);
    redisFree(c);
}

static void test_token_of_unknown_expiry_is_refreshed_to_learn_it(void **state)
{
    put_credentials("assoc-1", "access-0", "refresh-0", 0);
    redisContext *c = peek_connect(redis_port);
    char token[ASSOC_TOKEN_MAX];
    struct oauth_error err;
    assert_int_equal(oauth_access_token(c, &cfg, "assoc-1", token, sizeof token, &err), OAUTH_OK);
    assert_string_equal(token, "access-1");
    assert_int_equal(oauth_access_token(c, &cfg, "assoc-1", token, sizeof token, &err), OAUTH_OK);
    assert_string_equal(token, "access-1");
    assert_int_equal(fake_calls(), 1);
    redisFree(c);
}

static void test_unauthorized_with_a_stale_token_uses_the_newer_one(void **state)
{
    /* Another worker already refreshed: access-0 was rejected, access-5 is stored. */
    put_credentials("assoc-1", "access-5", "refresh-0", store_now_ns() + 3600 * SECOND);
    redisContext *c = peek_connect(redis_port);
    char token[ASSOC_TOKEN_MAX];
    struct oauth_error err;
    assert_int_equal(
        oauth_after_unauthorized(c, &cfg, "assoc-1", "access-0", token, sizeof token, &err),
        OAUTH_OK);
    assert_string_equal(token, "access-5");
    assert_int_equal(fake_calls(), 0);

    /* The stored token itself rejected: exactly one refresh. */
    assert_int_equal(
        oauth_after_unauthorized(c, &cfg, "assoc-1", "access-5", token, sizeof token, &err),
        OAUTH_OK);
    assert_string_equal(token, "access-1");
    assert_int_equal(fake_calls(), 1);
    assert_string_equal(get_association("assoc-1")->cc_refresh_token, "refresh-1");
    redisFree(c);
}

static void test_invalid_grant_marks_the_association_unauthorized(void **state)
{
    put_credentials("assoc-1", "access-0", "refresh-spent", store_now_ns() + 60 * SECOND);
    redisContext *c = peek_connect(redis_port);
    char token[ASSOC_TOKEN_MAX];
    struct oauth_error err;
    assert_int_equal(oauth_access_token(c, &cfg, "assoc-1", token, sizeof token, &err),
                     OAUTH_UNAUTHORIZED);
    assert_int_equal(err.status, OAUTH_UNAUTHORIZED);
    assert_string_equal(err.code, "invalid_grant");
    assert_int_equal(err.http_status, 400);
    assert_string_equal(token, "");
    assert_int_equal(fake_calls(), 1);

    struct association *a = get_association("assoc-1");
    assert_string_equal(a->cc_state, "unauthorized");
    assert_string_equal(a->cc_last_error,
                        "Constant Contact refused to renew the access token (invalid_grant, "
                        "HTTP 400): reconnect the Constant Contact account");
    assert_true(a->cc_last_error_at_ns > 0);
    assert_null(strstr(err.message, "refresh-spent"));
    assert_null(strstr(err.message, "access-0"));
    assert_string_equal(a->cc_refresh_token, "refresh-spent"); /* kept for the admin to replace */

    /* No more attempts with a refused grant until new credentials arrive. */
    assert_int_equal(oauth_access_token(c, &cfg, "assoc-1", token, sizeof token, &err),
                     OAUTH_UNAUTHORIZED);
    assert_int_equal(fake_calls(), 1);

    /* New credentials clear it. */
    put_credentials("assoc-1", "access-new", "refresh-0", store_now_ns() + 3600 * SECOND);
    assert_int_equal(oauth_access_token(c, &cfg, "assoc-1", token, sizeof token, &err), OAUTH_OK);
    assert_string_equal(token, "access-new");
    redisFree(c);
}

/* Runs on the fake endpoint's thread: no cmocka asserts here; the test checks
 * the stored result. */
static void put_during_refresh(void)
{
    redisContext *c = peek_connect(redis_port);
    struct association_update u = {.has_cc = true,
                                   .cc_access_token = "access-put",
                                   .cc_refresh_token = "refresh-put",
                                   .cc_expires_at_ns = store_now_ns() + 3600 * SECOND};
    bool created;
    store_association_put(c, &cfg.secrets, "assoc-1", &u, store_now_ns(), &created);
    redisFree(c);
}

static void test_credentials_put_during_a_refresh_win(void **state)
{
    put_credentials("assoc-1", "access-0", "refresh-0", store_now_ns() + 60 * SECOND);
    fake.during = put_during_refresh;
    redisContext *c = peek_connect(redis_port);
    char token[ASSOC_TOKEN_MAX];
    struct oauth_error err;
    assert_int_equal(oauth_access_token(c, &cfg, "assoc-1", token, sizeof token, &err), OAUTH_OK);
    assert_string_equal(token, "access-put");
    assert_int_equal(fake_calls(), 1);
    struct association *a = get_association("assoc-1");
    assert_string_equal(a->cc_access_token, "access-put");
    assert_string_equal(a->cc_refresh_token, "refresh-put");
    assert_string_equal(a->cc_state, "unverified");
    redisFree(c);
}

static void test_endpoint_outage_keeps_a_still_valid_token_and_is_transient_after(void **state)
{
    fake.fail_status = 503;
    put_credentials("assoc-1", "access-0", "refresh-0", store_now_ns() + 120 * SECOND);
    redisContext *c = peek_connect(redis_port);
    char token[ASSOC_TOKEN_MAX];
    struct oauth_error err;
    assert_int_equal(oauth_access_token(c, &cfg, "assoc-1", token, sizeof token, &err), OAUTH_OK);
    assert_string_equal(token, "access-0");
    assert_int_equal(fake_calls(), 1);

    put_credentials("assoc-1", "access-0", "refresh-0", store_now_ns() - SECOND);
    assert_int_equal(oauth_access_token(c, &cfg, "assoc-1", token, sizeof token, &err),
                     OAUTH_TRANSIENT);
    assert_int_equal(err.http_status, 503);
    assert_int_equal(fake_calls(), 2);
    struct association *a = get_association("assoc-1");
    assert_string_equal(a->cc_state, "unverified"); /* an outage says nothing of the grant */
    assert_string_equal(a->cc_refresh_token, "refresh-0");
    redisFree(c);
}

static void test_unknown_association_and_missing_credentials(void **state)
{
    redisContext *c = peek_connect(redis_port);
    char token[ASSOC_TOKEN_MAX];
    struct oauth_error err;
    assert_int_equal(oauth_access_token(c, &cfg, "nobody", token, sizeof token, &err),
                     OAUTH_NOT_CONNECTED);

    /* Expired, and nothing to refresh it with. */
    put_credentials("assoc-1", "access-0", "", store_now_ns() - SECOND);
    assert_int_equal(oauth_access_token(c, &cfg, "assoc-1", token, sizeof token, &err),
                     OAUTH_UNAUTHORIZED);
    assert_string_equal(get_association("assoc-1")->cc_state, "unauthorized");
    assert_int_equal(fake_calls(), 0);
    redisFree(c);
}

static void test_successful_call_marks_the_association_connected(void **state)
{
    put_credentials("assoc-1", "access-0", "refresh-0", store_now_ns() + 3600 * SECOND);
    redisContext *c = peek_connect(redis_port);
    /* A call made with a token that is no longer the stored one proves nothing. */
    assert_int_equal(oauth_mark_connected(c, &cfg, "assoc-1", "access-old"), 0);
    assert_string_equal(get_association("assoc-1")->cc_state, "unverified");
    assert_int_equal(oauth_mark_connected(c, &cfg, "assoc-1", "access-0"), 0);
    assert_string_equal(get_association("assoc-1")->cc_state, "connected");
    assert_string_equal(get_association("assoc-1")->cc_last_error, "");
    /* Unknown associations are not created. */
    assert_int_equal(oauth_mark_connected(c, &cfg, "nobody", "access-0"), 0);
    assert_false(peek_association_exists(c, "nobody"));
    redisFree(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_expiring_token_is_refreshed_once_for_four_threads, reset),
        cmocka_unit_test_setup(test_failed_refresh_is_not_repeated_by_the_threads_that_waited,
                               reset),
        cmocka_unit_test_setup(test_token_far_from_expiry_is_used_as_is, reset),
        cmocka_unit_test_setup(test_token_of_unknown_expiry_is_refreshed_to_learn_it, reset),
        cmocka_unit_test_setup(test_unauthorized_with_a_stale_token_uses_the_newer_one, reset),
        cmocka_unit_test_setup(test_invalid_grant_marks_the_association_unauthorized, reset),
        cmocka_unit_test_setup(test_credentials_put_during_a_refresh_win, reset),
        cmocka_unit_test_setup(
            test_endpoint_outage_keeps_a_still_valid_token_and_is_transient_after, reset),
        cmocka_unit_test_setup(test_unknown_association_and_missing_credentials, reset),
        cmocka_unit_test_setup(test_successful_call_marks_the_association_connected, reset),
    };
    return cmocka_run_group_tests(tests, start_all, stop_all);
}
