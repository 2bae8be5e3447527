/* Integration tests of ccsyncd's front door (docs/: ingest, the admin API, webhooks): the
 * association admin API, signed webhooks into the Redis stream, every refusal of §5 with its status
 * and code, health and metrics, a Redis outage, SIGTERM, and the logs.
 *
 * Every test gets its own redis-server and ccsyncd on free loopback ports
 * (CCSYNCD_BIN, default $BUILD/ccsyncd), with association "acme" created through
 * the admin API. The CC API URLs point at a port nobody listens on, so no test
 * touches the network.
 *
 * The worker threads consume and delete stream entries, so "queued once" and
 * "nothing queued" are measured with the stream's entries-added counter (every
 * XADD ever, deleted entries included) and with the dedup key of the webhook-id. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ccsync/webhook.h"
#include "ccsync/keys.h"
#include "peek.h"
#include "reply.h"
#include "testsupport.h"

#define ASSOC "acme"
#define SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define SECRET_KEY_B64 "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define OTHER_SECRET "whsec_c2Vjb25kLXNlY3JldC1rZXktMDEyMzQ1Njc4OQ=="
#define ADMIN_TOKEN "admin-token-for-tests-0123456789"
#define WRONG_TOKEN "admin-token-for-tests-9876543210"
#define CC_ACCESS "cc-access-SECRET-4f1d2a"
#define CC_REFRESH "cc-refresh-SECRET-9b8c7d"
#define MAX_BODY 2048
#define GRACE_SECONDS 10
#define TS "2026-11-27T10:00:03Z"

/* ---- the stack under test: one redis-server and one ccsyncd ---- */

static struct {
    int redis_port;
    pid_t redis_pid;
    int http_port;
    pid_t ccsyncd_pid;
    char log_path[64]; /* ccsyncd's stdout: the JSON log */
    char err_path[64]; /* ccsyncd's stderr: empty unless something went wrong (sanitizers) */
    char base[64];
    redisContext *redis; /* the test's own connection, for inspection */
} S;

static int msg_counter;

static redisContext *redis(void)
{
    if (S.redis && S.redis->err) {
        redisFree(S.redis);
        S.redis = NULL;
    }
    if (!S.redis) {
        struct timeval tv = {2, 0};
        S.redis = redisConnectWithTimeout("127.0.0.1", S.redis_port, tv);
        assert_non_null(S.redis);
        assert_int_equal(S.redis->err, 0);
    }
    return S.redis;
}

/* ---- HTTP ---- */

static struct reply call(const char *method, const char *path, const char *const *headers,
                         const char *body, size_t len)
{
    char url[1024];
    snprintf(url, sizeof url, "%s%s", S.base, path);
    return http_request(method, url, headers, body, len, 0);
}

static struct reply admin(const char *method, const char *path, const char *body)
{
    const char *headers[] = {"Authorization: Bearer " ADMIN_TOKEN, "Content-Type: application/json",
                             NULL};
    return call(method, path, headers, body, body ? strlen(body) : 0);
}

static void header_of(const struct reply *r, const char *name, char *out, size_t size)
{
    if (ts_header_value(r->headers, name, out, size) != 0)
        fail_msg("no %s header in:\n%s", name, r->headers ? r->headers : "(none)");
}

/* The error reply of the admin API (docs/): exactly {"error":{"code","message"}}. message
 * NULL: any message. */
static void check_error(const char *what, const struct reply *r, long status, const char *code,
                        const char *message)
{
    if (r->status != status)
        fail_msg("%s: status %ld, expected %ld; body %s", what, r->status, status,
                 r->body ? r->body : "(none)");
    if (!r->json || !json_object_is_type(r->json, json_type_object) ||
        json_object_object_length(r->json) != 1 || !jget(r->json, "error") ||
        json_object_object_length(jget(r->json, "error")) != 2)
        fail_msg("%s: not {\"error\":{\"code\",\"message\"}}: %s", what, r->body ? r->body : "");
    const char *got_code = jpath_str(r->json, "error.code"),
               *got_msg = jpath_str(r->json, "error.message");
    if (!got_code || strcmp(got_code, code) != 0)
        fail_msg("%s: code %s, expected %s", what, got_code ? got_code : "(none)", code);
    if (!got_msg || (message && strcmp(got_msg, message) != 0))
        fail_msg("%s: message \"%s\", expected \"%s\"", what, got_msg ? got_msg : "(none)",
                 message ? message : "(any)");
    char ct[128];
    header_of(r, "Content-Type", ct, sizeof ct);
    assert_string_equal(ct, "application/json");
}

/* ---- webhooks ---- */

static const char *next_id(void)
{
    static char id[64];
    snprintf(id, sizeof id, "msg_%d_%d", getpid(), ++msg_counter);
    return id;
}

/* An envelope; the result lives until eight more have been made. */
static char *event_body(const char *type, const char *data)
{
    static char bodies[8][2048];
    static int next;
    char *body = bodies[next++ % 8];
    snprintf(body, sizeof bodies[0], "{\"type\":\"%s\",\"timestamp\":\"" TS "\",\"data\":%s}", type,
             data);
    return body;
}

/* Sends body to the webhook endpoint of assoc; NULL for any header omits it. */
static struct reply post_raw(const char *assoc, const char *content_type, const char *id,
                             const char *timestamp, const char *signature, const char *body,
                             size_t len)
{
    char h_ct[128], h_id[256], h_ts[64], h_sig[512], path[256];
    const char *headers[5];
    int n = 0;
    if (content_type) {
        snprintf(h_ct, sizeof h_ct, "Content-Type: %s", content_type);
        headers[n++] = h_ct;
    }
    if (id) {
        snprintf(h_id, sizeof h_id, "webhook-id: %s", id);
        headers[n++] = h_id;
    }
    if (timestamp) {
        snprintf(h_ts, sizeof h_ts, "webhook-timestamp: %s", timestamp);
        headers[n++] = h_ts;
    }
    if (signature) {
        snprintf(h_sig, sizeof h_sig, "webhook-signature: %s", signature);
        headers[n++] = h_sig;
    }
    headers[n] = NULL;
    snprintf(path, sizeof path, "/v1/associations/%s/webhooks/novi", assoc);
    return call("POST", path, headers, body, len);
}

static void sign(const char *secret, const char *id, long ts, const char *body, size_t len,
                 char *sig, size_t size)
{
    assert_int_equal(webhook_sign(secret, id, ts, body, len, sig, size), 0);
}

/* A correctly signed webhook (secret, now) of len bytes. */
static struct reply post_signed_len(const char *assoc, const char *secret, const char *id,
                                    const char *body, size_t len)
{
    char sig[128], ts[32];
    long now = (long)time(NULL);
    sign(secret, id, now, body, len, sig, sizeof sig);
    snprintf(ts, sizeof ts, "%ld", now);
    return post_raw(assoc, "application/json", id, ts, sig, body, len);
}

static struct reply post_signed(const char *id, const char *body)
{
    return post_signed_len(ASSOC, SECRET, id, body, strlen(body));
}

/* ---- what landed in Redis ---- */

static void check_queued(const char *what, const struct reply *r, const char *id)
{
    if (r->status != 202 || !r->json || json_object_object_length(r->json) != 2 ||
        !jpath_str(r->json, "id") || strcmp(jpath_str(r->json, "id"), id) != 0 ||
        !jpath_str(r->json, "status") || strcmp(jpath_str(r->json, "status"), "queued") != 0)
        fail_msg("%s: expected 202 {\"id\":\"%s\",\"status\":\"queued\"}, got %ld %s", what, id,
                 r->status, r->body ? r->body : "(none)");
}

/* A refused webhook: status, code, message (NULL: any), and nothing in Redis. */
static void check_refused(const char *what, struct reply *r, long status, const char *code,
                          const char *message, const char *id, long long added_before)
{
    check_error(what, r, status, code, message);
    if (peek_events_added(redis()) != added_before)
        fail_msg("%s: refused with %ld but an entry was added to the stream", what, status);
    if (id && peek_dedup_exists(redis(), ASSOC, id))
        fail_msg("%s: refused with %ld but the dedup key of %s was set", what, status, id);
}

/* ---- starting and stopping ---- */

static struct reply get_ready(void)
{
    return call("GET", "/readyz", NULL, NULL, 0);
}

static void put_association(const char *assoc, const char *secret)
{
    char path[128], body[256];
    snprintf(path, sizeof path, "/v1/associations/%s", assoc);
    snprintf(body, sizeof body, "{\"webhook_secret\":\"%s\"}", secret);
    struct reply r = admin("PUT", path, body);
    if (r.status != 200)
        fail_msg("PUT %s: %ld %s", path, r.status, r.body ? r.body : "");
    reply_free(&r);
}

static void start_ccsyncd(void)
{
    static char listen[64], redis_url[80], api_url[80], token_url[80], body_limit[48], grace[48];
    int cc_port = ts_free_port(); /* nobody listens there */
    S.http_port = ts_free_port();
    assert_true(S.http_port > 0 && cc_port > 0);
    snprintf(listen, sizeof listen, "CCSYNC_LISTEN=127.0.0.1:%d", S.http_port);
    snprintf(redis_url, sizeof redis_url, "CCSYNC_REDIS_URL=redis://127.0.0.1:%d/0", S.redis_port);
    snprintf(api_url, sizeof api_url, "CCSYNC_CC_API_URL=http://127.0.0.1:%d/v3", cc_port);
    snprintf(token_url, sizeof token_url, "CCSYNC_CC_TOKEN_URL=http://127.0.0.1:%d/token", cc_port);
    snprintf(body_limit, sizeof body_limit, "CCSYNC_MAX_BODY_BYTES=%d", MAX_BODY);
    snprintf(grace, sizeof grace, "CCSYNC_SHUTDOWN_GRACE_SECONDS=%d", GRACE_SECONDS);
    char *env[] = {listen,
                   redis_url,
                   "CCSYNC_ADMIN_TOKEN=" ADMIN_TOKEN,
                   "CCSYNC_ALLOW_PLAINTEXT_SECRETS=1",
                   api_url,
                   token_url,
                   "CCSYNC_WORKERS=1",
                   "CCSYNC_HTTP_THREADS=2",
                   "CCSYNC_LOG_FORMAT=json",
                   "CCSYNC_LOG_LEVEL=info",
                   body_limit,
                   grace,
                   "CCSYNC_ASSOCIATION_ID=",
                   "CCSYNC_WEBHOOK_SECRET=",
                   "CCSYNC_CC_ACCESS_TOKEN=",
                   "CCSYNC_CC_REFRESH_TOKEN=",
                   NULL};
    snprintf(S.base, sizeof S.base, "http://127.0.0.1:%d", S.http_port);
    snprintf(S.log_path, sizeof S.log_path, "/tmp/ccsync-test-ingest-%d-XXXXXX", getpid());
    snprintf(S.err_path, sizeof S.err_path, "/tmp/ccsync-test-ingest-err-%d-XXXXXX", getpid());
    int fd = mkstemp(S.log_path);
    assert_true(fd >= 0);
    close(fd);
    fd = mkstemp(S.err_path);
    assert_true(fd >= 0);
    close(fd);
    char bin[512];
    char *argv[] = {(char *)ts_bin_path("CCSYNCD_BIN", "ccsyncd", bin, sizeof bin), NULL};
    if (access(argv[0], X_OK) != 0)
        fail_msg("cannot run %s: build it, or set CCSYNCD_BIN", argv[0]);
    S.ccsyncd_pid = ts_spawn_io(argv, env, S.log_path, S.err_path);
    assert_true(S.ccsyncd_pid > 0);
    if (ts_wait_port(S.http_port, 10000) != 0)
        fail_msg("ccsyncd did not listen on %d", S.http_port);
}

static void wait_ready(void)
{
    for (int i = 0; i < 200; i++) {
        struct reply r = get_ready();
        long status = r.status;
        reply_free(&r);
        if (status == 200)
            return;
        ts_sleep_ms(50);
    }
    fail_msg("ccsyncd did not become ready");
}

static int setup(void **state)
{
    (void)state;
    memset(&S, 0, sizeof S);
    S.redis_port = ts_free_port();
    S.redis_pid = ts_redis_start(S.redis_port);
    if (S.redis_pid < 0)
        return -1;
    start_ccsyncd();
    wait_ready();
    put_association(ASSOC, SECRET);
    return 0;
}

/* SIGTERM; ccsyncd must exit 0 (a sanitizer finding or a leak would not). */
static void stop_ccsyncd(void)
{
    if (S.ccsyncd_pid <= 0)
        return;
    int status = ts_kill(S.ccsyncd_pid, SIGTERM);
    S.ccsyncd_pid = 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("ccsyncd did not exit 0 on SIGTERM (wait status %d)", status);
}

/* Whatever ccsyncd wrote on stderr: nothing, or the test fails. */
static int check_stderr(void)
{
    size_t len = 0;
    char *text = ts_read_file(S.err_path, &len);
    int rc = 0;
    if (text && len > 0) {
        fprintf(stderr, "ccsyncd wrote on stderr:\n%s\n", text);
        rc = -1;
    }
    free(text);
    return rc;
}

static int teardown(void **state)
{
    (void)state;
    int rc = 0;
    if (S.ccsyncd_pid > 0) {
        int status = ts_kill(S.ccsyncd_pid, SIGTERM);
        S.ccsyncd_pid = 0;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "ccsyncd did not exit 0 on SIGTERM (wait status %d)\n", status);
            rc = -1;
        }
    }
    if (S.err_path[0] && check_stderr() != 0)
        rc = -1;
    if (S.redis)
        redisFree(S.redis);
    S.redis = NULL;
    if (S.redis_pid > 0)
        ts_kill(S.redis_pid, SIGTERM);
    S.redis_pid = 0;
    if (S.log_path[0])
        unlink(S.log_path);
    if (S.err_path[0])
        unlink(S.err_path);
    return rc;
}

/* ---- the admin API ---- */

static void test_put_association_answers_redacted_view(void **state)
{
    (void)state;
    struct reply r = admin("PUT", "/v1/associations/beta",
                           "{\"webhook_secret\":\"" SECRET "\",\"constant_contact\":{"
                           "\"access_token\":\"" CC_ACCESS "\",\"refresh_token\":\"" CC_REFRESH
                           "\",\"expires_at\":\"2026-12-01T00:00:00Z\"}}");
    assert_int_equal(r.status, 200);
    assert_null(strstr(r.body, SECRET_KEY_B64));
    assert_null(strstr(r.body, CC_ACCESS));
    assert_null(strstr(r.body, CC_REFRESH));
    assert_string_equal(jpath_str(r.json, "association_id"), "beta");
    assert_true(json_object_get_boolean(jget(r.json, "webhook_secret_set")));
    assert_null(jget(r.json, "webhook_secret"));
    json_object *cc = jget(r.json, "constant_contact");
    assert_non_null(cc);
    assert_null(jget(cc, "access_token"));
    assert_null(jget(cc, "refresh_token"));
    assert_true(json_object_is_type(jget(cc, "access_token_set"), json_type_boolean));
    assert_true(json_object_get_boolean(jget(cc, "access_token_set")));
    assert_true(json_object_get_boolean(jget(cc, "refresh_token_set")));
    assert_string_equal(jpath_str(cc, "expires_at"), "2026-12-01T00:00:00Z");
    assert_string_equal(jpath_str(cc, "state"), "unverified");
    reply_free(&r);

    r = admin("GET", "/v1/associations/beta", NULL);
    assert_int_equal(r.status, 200);
    assert_null(strstr(r.body, SECRET_KEY_B64));
    assert_null(strstr(r.body, CC_ACCESS));
    assert_null(strstr(r.body, CC_REFRESH));
    assert_string_equal(jpath_str(r.json, "association_id"), "beta");
    assert_true(json_object_get_boolean(jget(r.json, "webhook_secret_set")));
    assert_true(
        json_object_get_boolean(jget(jget(r.json, "constant_contact"), "access_token_set")));
    reply_free(&r);

    /* an association made with its secret only has no CC credentials */
    r = admin("GET", "/v1/associations/" ASSOC, NULL);
    assert_int_equal(r.status, 200);
    cc = jget(r.json, "constant_contact");
    assert_false(json_object_get_boolean(jget(cc, "access_token_set")));
    assert_false(json_object_get_boolean(jget(cc, "refresh_token_set")));
    assert_string_equal(jpath_str(cc, "state"), "not_configured");
    reply_free(&r);
}

static void test_put_association_refuses_bad_input(void **state)
{
    (void)state;
    struct reply r = admin("PUT", "/v1/associations/gamma", "{}");
    check_error("new association without secret", &r, 400, "invalid_field",
                "webhook_secret is required when creating an association");
    reply_free(&r);
    r = admin("PUT", "/v1/associations/gamma", "{\"webhook_secret\":\"plain-text-secret\"}");
    check_error("secret not whsec_", &r, 400, "invalid_field",
                "webhook_secret must be whsec_ followed by base64 (as Novi shows it)");
    reply_free(&r);
    r = admin("PUT", "/v1/associations/gamma", "{\"webhook_secret\":");
    check_error("malformed JSON", &r, 400, "malformed_json", "the body is not valid JSON");
    reply_free(&r);
    r = admin("GET", "/v1/associations/gamma", NULL);
    check_error("never created", &r, 404, "unknown_association", "no association \"gamma\"");
    reply_free(&r);
}

static void test_admin_endpoints_require_the_bearer_token(void **state)
{
    (void)state;
    static const struct {
        const char *method, *path;
    } endpoints[] = {
        {"PUT", "/v1/associations/" ASSOC},
        {"GET", "/v1/associations/" ASSOC},
        {"GET", "/v1/associations/" ASSOC "/groups"},
        {"GET", "/v1/associations/" ASSOC "/groups/g-1"},
        {"POST", "/v1/associations/" ASSOC "/groups/g-1/resync"},
        {"GET", "/v1/associations/" ASSOC "/audit"},
        {"GET", "/v1/status"},
        {"GET", "/v1/dead-letters"},
    };
    static const char *auths[] = {
        NULL,
        "Authorization: Bearer " WRONG_TOKEN,
        "Authorization: Bearer " ADMIN_TOKEN "x",
        "Authorization: Bearer admin-token-for-tests-012345678",
        "Authorization: Bearer ",
        "Authorization: Basic " ADMIN_TOKEN,
        "Authorization: " ADMIN_TOKEN,
    };
    const char *body = "{\"webhook_secret\":\"" OTHER_SECRET "\"}";
    for (size_t e = 0; e < sizeof endpoints / sizeof endpoints[0]; e++) {
        for (size_t a = 0; a < sizeof auths / sizeof auths[0]; a++) {
            const char *headers[] = {"Content-Type: application/json", auths[a], NULL};
            bool has_body = strcmp(endpoints[e].method, "PUT") == 0;
            struct reply r = call(endpoints[e].method, endpoints[e].path, headers,
                                  has_body ? body : NULL, has_body ? strlen(body) : 0);
            char what[256];
            snprintf(what, sizeof what, "%s %s with %s", endpoints[e].method, endpoints[e].path,
                     auths[a] ? auths[a] : "no Authorization");
            bool operator_only = strncmp(endpoints[e].path, "/v1/associations/", 17) != 0;
            check_error(what, &r, 401, "unauthorized",
                        operator_only ? "missing or wrong token: send Authorization: Bearer "
                                        "<CCSYNC_ADMIN_TOKEN> (this endpoint is the operator's)"
                                      : "missing or wrong token: send Authorization: Bearer "
                                        "<CCSYNC_ADMIN_TOKEN> or an association token");
            char www[64];
            header_of(&r, "WWW-Authenticate", www, sizeof www);
            assert_string_equal(www, "Bearer");
            reply_free(&r);
        }
    }
    /* the refused PUTs changed nothing: the first secret still verifies */
    const char *id = next_id();
    struct reply r = post_signed(id, event_body("group.deleted", "{\"UniqueID\":\"g-1\"}"));
    check_queued("signed with the original secret", &r, id);
    reply_free(&r);
    r = admin("GET", "/v1/status", NULL);
    assert_int_equal(r.status, 200);
    reply_free(&r);
}

static void test_unknown_path_is_404_and_wrong_method_405(void **state)
{
    (void)state;
    struct reply r = call("GET", "/v2/nothing", NULL, NULL, 0);
    check_error("unknown path", &r, 404, "not_found", "no such endpoint: GET /v2/nothing");
    reply_free(&r);
    r = call("POST", "/v1/associations/" ASSOC "/webhooks/novi/extra", NULL, NULL, 0);
    check_error("path longer than a route", &r, 404, "not_found",
                "no such endpoint: POST /v1/associations/" ASSOC "/webhooks/novi/extra");
    reply_free(&r);

    char allow[32];
    r = call("GET", "/v1/associations/" ASSOC "/webhooks/novi", NULL, NULL, 0);
    check_error("GET on the webhook", &r, 405, "method_not_allowed",
                "GET is not allowed on /v1/associations/" ASSOC "/webhooks/novi; use POST");
    header_of(&r, "Allow", allow, sizeof allow);
    assert_string_equal(allow, "POST");
    reply_free(&r);
    r = call("DELETE", "/livez", NULL, NULL, 0);
    check_error("DELETE /livez", &r, 405, "method_not_allowed",
                "DELETE is not allowed on /livez; use GET");
    header_of(&r, "Allow", allow, sizeof allow);
    assert_string_equal(allow, "GET");
    reply_free(&r);
}

static void test_invalid_association_id_in_path_is_400(void **state)
{
    (void)state;
    long long before = peek_events_added(redis());
    const char *id = next_id();
    const char *body = event_body("group.deleted", "{\"UniqueID\":\"g-1\"}");
    struct reply r = post_signed_len("acme.corp", SECRET, id, body, strlen(body));
    check_refused("association_id with a dot", &r, 400, "invalid_path_parameter",
                  "the path's association_id (1-64 characters of A-Z a-z 0-9 _ -) is not valid",
                  NULL, before);
    reply_free(&r);
    r = admin("GET", "/v1/associations/" ASSOC "/groups/g%20x", NULL);
    check_error("group_id with a space", &r, 400, "invalid_path_parameter",
                "the path's group_id (1-128 characters of A-Z a-z 0-9 _ . : -) is not valid");
    reply_free(&r);
}

/* ---- health and metrics ---- */

static void test_livez_and_readyz_answer_200(void **state)
{
    (void)state;
    struct reply r = call("GET", "/livez", NULL, NULL, 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(jpath_str(r.json, "status"), "alive");
    reply_free(&r);
    r = get_ready();
    assert_int_equal(r.status, 200);
    assert_string_equal(jpath_str(r.json, "status"), "ready");
    assert_string_equal(jpath_str(r.json, "redis"), "ok");
    assert_int_equal(json_object_get_int(jget(r.json, "workers")), 1);
    assert_false(json_object_get_boolean(jget(r.json, "draining")));
    reply_free(&r);
}

static void expect_metric(const char *text, const char *line)
{
    char needle[256];
    snprintf(needle, sizeof needle, "\n%s\n", line);
    if (!strstr(text, needle))
        fail_msg("metrics lack the line \"%s\":\n%s", line, text);
}

/* Request counters are bumped when the server has finished with a connection,
 * which may be just after the client has its answer: wait for them briefly. */
static void expect_metric_soon(const char *line)
{
    char needle[256];
    snprintf(needle, sizeof needle, "\n%s\n", line);
    for (int i = 0; i < 100; i++) {
        struct reply r = call("GET", "/metrics", NULL, NULL, 0);
        bool found = r.body && strstr(r.body, needle);
        reply_free(&r);
        if (found)
            return;
        ts_sleep_ms(30);
    }
    fail_msg("metrics never showed the line \"%s\"", line);
}

static void test_metrics_count_each_webhook_outcome(void **state)
{
    (void)state;
    const char *id = next_id();
    const char *body = event_body("group.deleted", "{\"UniqueID\":\"g-1\"}");
    struct reply r = post_signed(id, body);
    check_queued("first", &r, id);
    reply_free(&r);
    r = post_signed(id, body); /* duplicate */
    assert_int_equal(r.status, 200);
    reply_free(&r);
    const char *id2 = next_id();
    r = post_signed_len(ASSOC, OTHER_SECRET, id2, body, strlen(body)); /* invalid_signature */
    assert_int_equal(r.status, 401);
    reply_free(&r);
    r = post_signed(next_id(), event_body("member.merged", "{}")); /* ignored */
    assert_int_equal(r.status, 202);
    reply_free(&r);
    r = post_signed_len("nobody", SECRET, next_id(), body, strlen(body)); /* unknown_association */
    assert_int_equal(r.status, 401);
    reply_free(&r);
    r = post_signed(next_id(), "{\"type\":\"group.deleted\"}"); /* invalid_event */
    assert_int_equal(r.status, 400);
    reply_free(&r);
    r = post_raw(ASSOC, "text/plain", "x", "1", "v1,x", body, strlen(body)); /* 415 */
    assert_int_equal(r.status, 415);
    reply_free(&r);

    r = call("GET", "/metrics", NULL, NULL, 0);
    assert_int_equal(r.status, 200);
    char ct[128];
    header_of(&r, "Content-Type", ct, sizeof ct);
    assert_string_equal(ct, "text/plain; version=0.0.4; charset=utf-8");
    expect_metric(r.body, "# TYPE ccsync_webhooks_total counter");
    expect_metric(r.body, "ccsync_webhooks_total{outcome=\"queued\"} 1");
    expect_metric(r.body, "ccsync_webhooks_total{outcome=\"duplicate\"} 1");
    expect_metric(r.body, "ccsync_webhooks_total{outcome=\"invalid_signature\"} 1");
    expect_metric(r.body, "ccsync_webhooks_total{outcome=\"ignored\"} 1");
    expect_metric(r.body, "ccsync_webhooks_total{outcome=\"unknown_association\"} 1");
    expect_metric(r.body, "ccsync_webhooks_total{outcome=\"invalid_event\"} 1");
    assert_null(strstr(r.body, "outcome=\"redis_unavailable\""));
    reply_free(&r);
    expect_metric_soon("ccsync_http_requests_total{route=\"webhook\",status=\"202\"} 2");
    expect_metric_soon("ccsync_http_requests_total{route=\"webhook\",status=\"200\"} 1");
    expect_metric_soon("ccsync_http_requests_total{route=\"webhook\",status=\"415\"} 1");
}

/* ---- accepted webhooks ---- */

static void test_signed_webhook_is_queued_exactly_once(void **state)
{
    (void)state;
    long long before = peek_events_added(redis());
    const char *id = next_id();
    struct reply r = post_signed(
        id, event_body("customer.created",
                       "{\"UniqueID\":\"m-1\",\"Email\":\"ann@example.org\",\"FirstName\":\"Ann\","
                       "\"LastName\":\"Lee\",\"CustomerType\":\"Person\",\"Active\":true,"
                       "\"DoNotSendMarketingEmails\":false,"
                       "\"Groups\":[{\"UniqueID\":\"g-1\",\"GroupName\":\"Board\"}]}"));
    check_queued("customer.created", &r, id);
    char ct[64];
    header_of(&r, "Content-Type", ct, sizeof ct);
    assert_string_equal(ct, "application/json");
    reply_free(&r);
    assert_int_equal(peek_events_added(redis()), before + 1);
    assert_true(peek_dedup_exists(redis(), ASSOC, id));
    /* the dedup key expires (7 days), it does not stay forever */
    assert_in_range(peek_dedup_ttl(redis(), ASSOC, id), 7 * 24 * 3600 - 60, 7 * 24 * 3600);
}

static void test_every_known_type_with_its_required_fields_is_queued(void **state)
{
    (void)state;
    static const struct {
        const char *type, *data;
    } events[] = {
        {"customer.created", "{\"UniqueID\":\"m-1\"}"},
        {"customer.updated", "{\"UniqueID\":\"m-1\",\"Email\":null,\"Groups\":null}"},
        {"customer.removed", "{\"UniqueID\":\"m-1\"}"},
        {"group.created",
         "{\"UniqueID\":\"g-1\",\"GroupName\":\"Board\",\"SyncToConstantContact\":false}"},
        {"group.updated",
         "{\"UniqueID\":\"g-1\",\"GroupName\":\"Board\",\"SyncToConstantContact\":false}"},
        {"group.deleted", "{\"UniqueID\":\"g-1\"}"},
        {"group.members", "{\"UniqueID\":\"g-1\",\"Members\":[{\"UniqueID\":\"m-1\"},"
                          "{\"UniqueID\":\"m-2\",\"Email\":\"b@example.org\"}]}"},
        {"group.members", "{\"UniqueID\":\"g-2\",\"Members\":[]}"},
    };
    long long before = peek_events_added(redis());
    for (size_t i = 0; i < sizeof events / sizeof events[0]; i++) {
        const char *id = next_id();
        struct reply r = post_signed(id, event_body(events[i].type, events[i].data));
        check_queued(events[i].type, &r, id);
        reply_free(&r);
        assert_int_equal(peek_events_added(redis()), before + (long long)i + 1);
    }
}

static void test_repeated_webhook_id_is_duplicate_and_not_queued(void **state)
{
    (void)state;
    long long before = peek_events_added(redis());
    const char *id = next_id();
    const char *body = event_body("group.deleted", "{\"UniqueID\":\"g-1\"}");
    struct reply r = post_signed(id, body);
    check_queued("first delivery", &r, id);
    reply_free(&r);
    for (int i = 0; i < 2; i++) {
        r = post_signed(id, i == 0 ? body : event_body("group.deleted", "{\"UniqueID\":\"g-9\"}"));
        assert_int_equal(r.status, 200);
        assert_int_equal(json_object_object_length(r.json), 2);
        assert_string_equal(jpath_str(r.json, "id"), id);
        assert_string_equal(jpath_str(r.json, "status"), "duplicate");
        reply_free(&r);
    }
    assert_int_equal(peek_events_added(redis()), before + 1);

    /* the key is per association: the same id for another association is new */
    put_association("beta", SECRET);
    r = post_signed_len("beta", SECRET, id, body, strlen(body));
    check_queued("same id, other association", &r, id);
    reply_free(&r);
    assert_int_equal(peek_events_added(redis()), before + 2);
}

/* Webhooks that arrive together are enqueued by one script call per association
 * and batch: a webhook-id repeated within the call is queued once. */
#define SAME_ID_SENDERS 16

struct same_id_sender {
    pthread_barrier_t *start;
    const char *assoc, *id, *body;
    long status;
    char outcome[32];
};

static void *send_same_id(void *arg)
{
    struct same_id_sender *s = arg;
    pthread_barrier_wait(s->start);
    struct reply r = post_signed_len(s->assoc, SECRET, s->id, s->body, strlen(s->body));
    s->status = r.status;
    snprintf(s->outcome, sizeof s->outcome, "%s",
             r.json && jpath_str(r.json, "status") ? jpath_str(r.json, "status") : "?");
    reply_free(&r);
    return NULL;
}

static void test_same_id_sent_at_once_is_queued_once(void **state)
{
    (void)state;
    put_association("beta", SECRET);
    long long before = peek_events_added(redis());
    char ids[2][64];
    snprintf(ids[0], sizeof ids[0], "%s", next_id());
    snprintf(ids[1], sizeof ids[1], "%s", next_id());
    const char *body = event_body("group.deleted", "{\"UniqueID\":\"g-1\"}");
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 2 * SAME_ID_SENDERS);
    struct same_id_sender senders[2 * SAME_ID_SENDERS];
    pthread_t threads[2 * SAME_ID_SENDERS];
    /* Two ids, each sent 16 times at once, half of them for acme and half for beta. */
    for (int i = 0; i < 2 * SAME_ID_SENDERS; i++) {
        senders[i] = (struct same_id_sender){
            &start, i % 2 ? "beta" : ASSOC, ids[i / SAME_ID_SENDERS], body, 0, ""};
        assert_int_equal(pthread_create(&threads[i], NULL, send_same_id, &senders[i]), 0);
    }
    int queued[2][2] = {{0, 0}, {0, 0}}, duplicates = 0;
    for (int i = 0; i < 2 * SAME_ID_SENDERS; i++) {
        pthread_join(threads[i], NULL);
        if (senders[i].status == 202 && strcmp(senders[i].outcome, "queued") == 0)
            queued[i / SAME_ID_SENDERS][i % 2]++;
        else if (senders[i].status == 200 && strcmp(senders[i].outcome, "duplicate") == 0)
            duplicates++;
        else
            fail_msg("sender %d: %ld %s", i, senders[i].status, senders[i].outcome);
    }
    pthread_barrier_destroy(&start);
    /* once per id and association, every other sending a duplicate */
    for (int k = 0; k < 2; k++)
        for (int a = 0; a < 2; a++)
            if (queued[k][a] != 1)
                fail_msg("id %d of %s: queued %d times", k, a ? "beta" : ASSOC, queued[k][a]);
    assert_int_equal(duplicates, 2 * SAME_ID_SENDERS - 4);
    assert_int_equal(peek_events_added(redis()), before + 4);
}

/* The stream refuses an event (here: its key holds a string): answered 503, and
 * the webhook-id is not taken, so the sender's retry is queued, not a duplicate. */
static void test_event_the_stream_refused_is_queued_on_retry(void **state)
{
    (void)state;
    const char *id = next_id();
    const char *body = event_body("group.deleted", "{\"UniqueID\":\"g-1\"}");
    struct key stream = key_events(ASSOC);
    redisReply *x = redisCommand(redis(), "SET %s not-a-stream", stream.s);
    assert_non_null(x);
    assert_int_equal(x->type, REDIS_REPLY_STATUS);
    freeReplyObject(x);
    struct reply r = post_signed(id, body);
    check_error("the stream's key holds a string", &r, 503, "redis_unavailable", NULL);
    reply_free(&r);
    assert_false(peek_dedup_exists(redis(), ASSOC, id));
    x = redisCommand(redis(), "DEL %s", stream.s);
    freeReplyObject(x);
    long long before = peek_events_added(redis()); /* the workers may have made it again */
    r = post_signed(id, body);
    check_queued("the retry", &r, id);
    reply_free(&r);
    assert_int_equal(peek_events_added(redis()), before + 1);
}

/* Redis lost the enqueue script (SCRIPT FLUSH, a restart): loaded again and the
 * webhook queued once. */
static void test_webhook_after_script_flush_is_queued_once(void **state)
{
    (void)state;
    long long before = peek_events_added(redis());
    const char *body = event_body("group.deleted", "{\"UniqueID\":\"g-1\"}");
    const char *id = next_id();
    struct reply r = post_signed(id, body); /* the script is loaded */
    check_queued("before SCRIPT FLUSH", &r, id);
    reply_free(&r);
    redisReply *x = redisCommand(redis(), "SCRIPT FLUSH");
    assert_non_null(x);
    freeReplyObject(x);
    id = next_id();
    r = post_signed(id, body);
    check_queued("after SCRIPT FLUSH", &r, id);
    reply_free(&r);
    assert_int_equal(peek_events_added(redis()), before + 2);
}

static void test_body_of_exactly_the_limit_is_queued(void **state)
{
    (void)state;
    char body[MAX_BODY + 1];
    const char *event = event_body("group.deleted", "{\"UniqueID\":\"g-1\"}");
    memset(body, ' ', MAX_BODY);
    memcpy(body, event, strlen(event));
    body[MAX_BODY] = '\0';
    long long before = peek_events_added(redis());
    const char *id = next_id();
    struct reply r = post_signed_len(ASSOC, SECRET, id, body, MAX_BODY);
    check_queued("body of the limit", &r, id);
    reply_free(&r);
    assert_int_equal(peek_events_added(redis()), before + 1);
}

static void test_json_content_type_with_charset_is_accepted(void **state)
{
    (void)state;
    const char *id = next_id();
    const char *body = event_body("group.deleted", "{\"UniqueID\":\"g-1\"}");
    char sig[128], ts[32];
    long now = (long)time(NULL);
    sign(SECRET, id, now, body, strlen(body), sig, sizeof sig);
    snprintf(ts, sizeof ts, "%ld", now);
    struct reply r =
        post_raw(ASSOC, "Application/JSON; charset=utf-8", id, ts, sig, body, strlen(body));
    check_queued("Application/JSON; charset=utf-8", &r, id);
    reply_free(&r);
}

static void test_webhook_signed_at_edge_of_tolerance_is_queued(void **state)
{
    (void)state;
    const char *body = event_body("group.deleted", "{\"UniqueID\":\"g-1\"}");
    long offsets[] = {-290, 290};
    for (size_t i = 0; i < 2; i++) {
        char id[64], sig[128], ts[32];
        snprintf(id, sizeof id, "%s", next_id());
        long when = (long)time(NULL) + offsets[i];
        sign(SECRET, id, when, body, strlen(body), sig, sizeof sig);
        snprintf(ts, sizeof ts, "%ld", when);
        struct reply r = post_raw(ASSOC, "application/json", id, ts, sig, body, strlen(body));
        check_queued(offsets[i] < 0 ? "290 s old" : "290 s ahead", &r, id);
        reply_free(&r);
    }
}

static void test_multiple_signatures_one_valid_is_queued(void **state)
{
    (void)state;
    const char *id = next_id();
    const char *body = event_body("group.deleted", "{\"UniqueID\":\"g-1\"}");
    char sig[128], both[300], ts[32];
    long now = (long)time(NULL);
    sign(SECRET, id, now, body, strlen(body), sig, sizeof sig);
    snprintf(both, sizeof both, "v1,bm90IHRoZSByaWdodCBzaWduYXR1cmUgYXQgYWxsIQ== %s", sig);
    snprintf(ts, sizeof ts, "%ld", now);
    struct reply r = post_raw(ASSOC, "application/json", id, ts, both, body, strlen(body));
    check_queued("rotated secrets: two signatures", &r, id);
    reply_free(&r);
}

static void test_unknown_type_is_ignored_and_not_queued(void **state)
{
    (void)state;
    long long before = peek_events_added(redis());
    const char *id = next_id();
    struct reply r = post_signed(id, "{\"type\":\"member.merged\",\"timestamp\":\"" TS
                                     "\",\"data\":{\"anything\":[1,2,3]}}");
    assert_int_equal(r.status, 202);
    assert_string_equal(jpath_str(r.json, "status"), "ignored");
    json_object_object_foreach(r.json, key, val)
    {
        (void)val;
        if (strcmp(key, "status") != 0 && strcmp(key, "id") != 0)
            fail_msg("unexpected member \"%s\" in %s", key, r.body);
    }
    reply_free(&r);
    assert_int_equal(peek_events_added(redis()), before);
    assert_false(peek_dedup_exists(redis(), ASSOC, id));
}

static void test_secret_change_takes_effect_at_once(void **state)
{
    (void)state;
    const char *body = event_body("group.deleted", "{\"UniqueID\":\"g-1\"}");
    const char *id = next_id();
    struct reply r = post_signed(id, body); /* caches the first secret */
    check_queued("before the change", &r, id);
    reply_free(&r);
    put_association(ASSOC, OTHER_SECRET);
    long long before = peek_events_added(redis());
    id = next_id();
    r = post_signed_len(ASSOC, SECRET, id, body, strlen(body));
    check_refused("signed with the old secret", &r, 401, "invalid_signature",
                  "no webhook-signature entry matches", id, before);
    reply_free(&r);
    r = post_signed_len(ASSOC, OTHER_SECRET, id, body, strlen(body));
    check_queued("signed with the new secret", &r, id);
    reply_free(&r);
}

/* ---- refused webhooks ---- */

struct refusal {
    const char *name;
    const char *body;
    const char *code;
    const char *message; /* NULL: any */
};

static void expect_all_refused_400(const struct refusal *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        long long before = peek_events_added(redis());
        const char *id = next_id();
        struct reply r = post_signed(id, cases[i].body);
        check_refused(cases[i].name, &r, 400, cases[i].code, cases[i].message, id, before);
        reply_free(&r);
    }
}

static void test_malformed_json_is_400(void **state)
{
    (void)state;
    static const struct refusal cases[] = {
        {"empty body", "", "malformed_json", "the body is empty"},
        {"cut short", "{\"type\":\"group.deleted\",", "malformed_json",
         "malformed JSON: the body ends too early"},
        {"not JSON", "type=group.deleted", "malformed_json", NULL},
        {"single quotes", "{'type':'group.deleted'}", "malformed_json", NULL},
        {"trailing comma", "{\"type\":\"group.deleted\",}", "malformed_json", NULL},
        {"two values", "{\"type\":\"x\",\"timestamp\":\"" TS "\"} {}", "malformed_json",
         "malformed JSON: unexpected data after the top-level value at byte 48"},
        {"invalid UTF-8", "{\"type\":\"x\xff\",\"timestamp\":\"" TS "\"}", "malformed_json", NULL},
        {"an array", "[{\"type\":\"group.deleted\"}]", "invalid_event",
         "the body must be a JSON object"},
    };
    expect_all_refused_400(cases, sizeof cases / sizeof cases[0]);
}

static void test_missing_required_field_is_400_naming_it(void **state)
{
    (void)state;
#define ENV(type, data) "{\"type\":\"" type "\",\"timestamp\":\"" TS "\",\"data\":" data "}"
    static const struct refusal cases[] = {
        {"no type", "{\"timestamp\":\"" TS "\",\"data\":{\"UniqueID\":\"g-1\"}}", "invalid_event",
         "type is required"},
        {"no timestamp", "{\"type\":\"group.deleted\",\"data\":{\"UniqueID\":\"g-1\"}}",
         "invalid_event", "timestamp is required"},
        {"no data", "{\"type\":\"group.deleted\",\"timestamp\":\"" TS "\"}", "invalid_event",
         "data is required"},
        {"null type", "{\"type\":null,\"timestamp\":\"" TS "\",\"data\":{}}", "invalid_event",
         "type is required"},
        {"customer.created without UniqueID", ENV("customer.created", "{\"Email\":\"a@b.org\"}"),
         "invalid_event", "data.UniqueID is required"},
        {"customer.updated without UniqueID", ENV("customer.updated", "{}"), "invalid_event",
         "data.UniqueID is required"},
        {"customer.removed without UniqueID", ENV("customer.removed", "{}"), "invalid_event",
         "data.UniqueID is required"},
        {"customer.created with null UniqueID", ENV("customer.created", "{\"UniqueID\":null}"),
         "invalid_event", "data.UniqueID is required"},
        {"group member without UniqueID",
         ENV("customer.updated", "{\"UniqueID\":\"m-1\",\"Groups\":[{\"UniqueID\":\"g-1\"},"
                                 "{\"GroupName\":\"x\"}]}"),
         "invalid_event", "data.Groups[1].UniqueID is required"},
        {"group.created without UniqueID",
         ENV("group.created", "{\"GroupName\":\"Board\",\"SyncToConstantContact\":true}"),
         "invalid_event", "data.UniqueID is required"},
        {"group.created without GroupName",
         ENV("group.created", "{\"UniqueID\":\"g-1\",\"SyncToConstantContact\":true}"),
         "invalid_event", "data.GroupName is required"},
        {"group.created without SyncToConstantContact",
         ENV("group.created", "{\"UniqueID\":\"g-1\",\"GroupName\":\"Board\"}"), "invalid_event",
         "data.SyncToConstantContact is required"},
        {"group.updated without GroupName",
         ENV("group.updated", "{\"UniqueID\":\"g-1\",\"SyncToConstantContact\":false}"),
         "invalid_event", "data.GroupName is required"},
        {"group.updated without SyncToConstantContact",
         ENV("group.updated", "{\"UniqueID\":\"g-1\",\"GroupName\":\"Board\"}"), "invalid_event",
         "data.SyncToConstantContact is required"},
        {"group.deleted without UniqueID", ENV("group.deleted", "{}"), "invalid_event",
         "data.UniqueID is required"},
        {"group.members without UniqueID", ENV("group.members", "{\"Members\":[]}"),
         "invalid_event", "data.UniqueID is required"},
        {"group.members without Members", ENV("group.members", "{\"UniqueID\":\"g-1\"}"),
         "invalid_event", "data.Members is required"},
        {"group.members member without UniqueID",
         ENV("group.members", "{\"UniqueID\":\"g-1\",\"Members\":[{\"UniqueID\":\"m-1\"},"
                              "{\"UniqueID\":\"m-2\"},{\"Email\":\"c@example.org\"}]}"),
         "invalid_event", "data.Members[2].UniqueID is required"},
    };
    expect_all_refused_400(cases, sizeof cases / sizeof cases[0]);
}

static void test_field_of_wrong_json_type_is_400(void **state)
{
    (void)state;
    static const struct refusal cases[] = {
        {"type a number", "{\"type\":5,\"timestamp\":\"" TS "\",\"data\":{}}", "invalid_event",
         "type must be a string"},
        {"timestamp a number",
         "{\"type\":\"group.deleted\",\"timestamp\":1764237603,"
         "\"data\":{\"UniqueID\":\"g-1\"}}",
         "invalid_event", "timestamp must be a string"},
        {"timestamp not RFC 3339",
         "{\"type\":\"group.deleted\",\"timestamp\":\"27/11/"
         "2026\",\"data\":{\"UniqueID\":\"g-1\"}}",
         "invalid_event", "timestamp must be an RFC 3339 date-time such as 2026-11-27T10:00:03Z"},
        {"data an array", ENV("group.deleted", "[]"), "invalid_event", "data must be an object"},
        {"UniqueID a number", ENV("customer.removed", "{\"UniqueID\":42}"), "invalid_event",
         "data.UniqueID must be a string"},
        {"UniqueID with a space", ENV("customer.removed", "{\"UniqueID\":\"m 1\"}"),
         "invalid_event", "data.UniqueID must be 1-128 characters of A-Z a-z 0-9 _ . : -"},
        {"Email a number", ENV("customer.created", "{\"UniqueID\":\"m-1\",\"Email\":5}"),
         "invalid_event", "data.Email must be a string or null"},
        {"Active a string", ENV("customer.updated", "{\"UniqueID\":\"m-1\",\"Active\":\"yes\"}"),
         "invalid_event", "data.Active must be a boolean or null"},
        {"CustomerType unknown",
         ENV("customer.updated", "{\"UniqueID\":\"m-1\",\"CustomerType\":\"Robot\"}"),
         "invalid_event", "data.CustomerType must be \"Person\", \"Company\" or null"},
        {"Groups an object", ENV("customer.updated", "{\"UniqueID\":\"m-1\",\"Groups\":{}}"),
         "invalid_event", "data.Groups must be an array or null"},
        {"GroupName a number",
         ENV("group.created",
             "{\"UniqueID\":\"g-1\",\"GroupName\":7,\"SyncToConstantContact\":true}"),
         "invalid_event", "data.GroupName must be a string"},
        {"SyncToConstantContact a string",
         ENV("group.updated",
             "{\"UniqueID\":\"g-1\",\"GroupName\":\"Board\",\"SyncToConstantContact\":\"true\"}"),
         "invalid_event", "data.SyncToConstantContact must be a boolean"},
        {"Members an object", ENV("group.members", "{\"UniqueID\":\"g-1\",\"Members\":{}}"),
         "invalid_event", "data.Members must be an array"},
        {"a member a string", ENV("group.members", "{\"UniqueID\":\"g-1\",\"Members\":[\"m-1\"]}"),
         "invalid_event", "data.Members[0] must be an object"},
    };
#undef ENV
    expect_all_refused_400(cases, sizeof cases / sizeof cases[0]);
}

static void test_bad_signature_is_401(void **state)
{
    (void)state;
    const char *body = event_body("group.deleted", "{\"UniqueID\":\"g-1\"}");
    const char *other_body = event_body("group.deleted", "{\"UniqueID\":\"g-2\"}");
    long now = (long)time(NULL);
    char ts[32], sig[128], wrong[128];
    snprintf(ts, sizeof ts, "%ld", now);
    long long before = peek_events_added(redis());

    const char *id = next_id();
    sign(SECRET, id, now, other_body, strlen(other_body), sig, sizeof sig);
    struct reply r = post_raw(ASSOC, "application/json", id, ts, sig, body, strlen(body));
    check_refused("signature of another body", &r, 401, "invalid_signature",
                  "no webhook-signature entry matches", id, before);
    reply_free(&r);

    sign(SECRET, "msg_other", now, body, strlen(body), sig, sizeof sig);
    r = post_raw(ASSOC, "application/json", id, ts, sig, body, strlen(body));
    check_refused("signature of another webhook-id", &r, 401, "invalid_signature",
                  "no webhook-signature entry matches", id, before);
    reply_free(&r);

    sign(SECRET, id, now - 1, body, strlen(body), sig, sizeof sig);
    r = post_raw(ASSOC, "application/json", id, ts, sig, body, strlen(body));
    check_refused("signature of another timestamp", &r, 401, "invalid_signature",
                  "no webhook-signature entry matches", id, before);
    reply_free(&r);

    sign(OTHER_SECRET, id, now, body, strlen(body), sig, sizeof sig);
    r = post_raw(ASSOC, "application/json", id, ts, sig, body, strlen(body));
    check_refused("signed with another secret", &r, 401, "invalid_signature",
                  "no webhook-signature entry matches", id, before);
    reply_free(&r);

    sign(SECRET, id, now, body, strlen(body), sig, sizeof sig);
    snprintf(wrong, sizeof wrong, "v2,%s", sig + 3);
    r = post_raw(ASSOC, "application/json", id, ts, wrong, body, strlen(body));
    check_refused("right HMAC, v2 scheme", &r, 401, "invalid_signature",
                  "no webhook-signature entry matches", id, before);
    reply_free(&r);

    r = post_raw(ASSOC, "application/json", id, "17x", sig, body, strlen(body));
    check_refused("timestamp not digits", &r, 401, "invalid_signature",
                  "webhook-timestamp must be Unix seconds (digits only)", id, before);
    reply_free(&r);
}

static void test_missing_signature_header_is_401_naming_it(void **state)
{
    (void)state;
    const char *body = event_body("group.deleted", "{\"UniqueID\":\"g-1\"}");
    const char *id = next_id();
    long now = (long)time(NULL);
    char ts[32], sig[128];
    snprintf(ts, sizeof ts, "%ld", now);
    sign(SECRET, id, now, body, strlen(body), sig, sizeof sig);
    long long before = peek_events_added(redis());
    struct reply r = post_raw(ASSOC, "application/json", NULL, ts, sig, body, strlen(body));
    check_refused("no webhook-id", &r, 401, "missing_signature_headers",
                  "webhook-id header is missing", id, before);
    reply_free(&r);
    r = post_raw(ASSOC, "application/json", id, NULL, sig, body, strlen(body));
    check_refused("no webhook-timestamp", &r, 401, "missing_signature_headers",
                  "webhook-timestamp header is missing", id, before);
    reply_free(&r);
    r = post_raw(ASSOC, "application/json", id, ts, NULL, body, strlen(body));
    check_refused("no webhook-signature", &r, 401, "missing_signature_headers",
                  "webhook-signature header is missing", id, before);
    reply_free(&r);
    r = post_raw(ASSOC, "application/json", NULL, NULL, NULL, body, strlen(body));
    check_refused("no headers at all", &r, 401, "missing_signature_headers",
                  "webhook-id header is missing", id, before);
    reply_free(&r);
}

static void test_stale_timestamp_is_401(void **state)
{
    (void)state;
    const char *body = event_body("group.deleted", "{\"UniqueID\":\"g-1\"}");
    long offsets[] = {-301, 301, -86400};
    long long before = peek_events_added(redis());
    for (size_t i = 0; i < sizeof offsets / sizeof offsets[0]; i++) {
        char id[64], sig[128], ts[32], what[64];
        snprintf(id, sizeof id, "%s", next_id());
        long when = (long)time(NULL) + offsets[i];
        sign(SECRET, id, when, body, strlen(body), sig, sizeof sig);
        snprintf(ts, sizeof ts, "%ld", when);
        snprintf(what, sizeof what, "signed now%+ld s", offsets[i]);
        struct reply r = post_raw(ASSOC, "application/json", id, ts, sig, body, strlen(body));
        check_refused(what, &r, 401, "stale_timestamp",
                      "webhook-timestamp is more than 300 seconds from now", id, before);
        reply_free(&r);
    }
}

/* An unknown association is answered as a wrong signature (status, code, message),
 * so association ids cannot be probed; the dedup key is not set. */
static void test_unknown_association_is_401_like_a_bad_signature(void **state)
{
    (void)state;
    const char *body = event_body("group.deleted", "{\"UniqueID\":\"g-1\"}");
    const char *id = next_id();
    long long before = peek_events_added(redis());
    for (int attempt = 0; attempt < 2; attempt++) { /* the second from the negative cache */
        struct reply r = post_signed_len("nobody", SECRET, id, body, strlen(body));
        check_refused("unknown association", &r, 401, "invalid_signature",
                      "no webhook-signature entry matches", NULL, before);
        reply_free(&r);
    }
    struct reply bad = post_signed_len(ASSOC, OTHER_SECRET, id, body, strlen(body));
    struct reply unknown = post_signed_len("nobody", SECRET, id, body, strlen(body));
    assert_int_equal(bad.status, unknown.status);
    assert_string_equal(bad.body, unknown.body);
    reply_free(&bad);
    reply_free(&unknown);
    assert_false(peek_dedup_exists(redis(), "nobody", id));
}

static void test_body_over_the_limit_is_413(void **state)
{
    (void)state;
    char body[MAX_BODY + 2];
    const char *event = event_body("group.deleted", "{\"UniqueID\":\"g-1\"}");
    memset(body, ' ', MAX_BODY + 1);
    memcpy(body, event, strlen(event));
    body[MAX_BODY + 1] = '\0';
    long long before = peek_events_added(redis());
    const char *id = next_id();
    struct reply r = post_signed_len(ASSOC, SECRET, id, body, MAX_BODY + 1);
    check_refused("one byte over", &r, 413, "body_too_large",
                  "the body is 2049 bytes; the limit is 2048", id, before);
    reply_free(&r);
}

/* Sends a signed webhook chunked (no Content-Length) on a raw connection. */
static void post_chunked(const char *id, const char *body, size_t len, size_t chunk, long *status,
                         char **resp_body)
{
    char sig[128], head[1024];
    long now = (long)time(NULL);
    sign(SECRET, id, now, body, len, sig, sizeof sig);
    int n = snprintf(head, sizeof head,
                     "POST /v1/associations/" ASSOC "/webhooks/novi HTTP/1.1\r\n"
                     "Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     "Transfer-Encoding: chunked\r\nwebhook-id: %s\r\n"
                     "webhook-timestamp: %ld\r\nwebhook-signature: %s\r\n\r\n",
                     id, now, sig);
    int fd = ts_connect(S.http_port);
    assert_true(fd >= 0);
    assert_int_equal(ts_send_all(fd, head, (size_t)n), 0);
    for (size_t off = 0; off < len; off += chunk) {
        size_t size = len - off < chunk ? len - off : chunk;
        char size_line[32];
        int m = snprintf(size_line, sizeof size_line, "%zx\r\n", size);
        assert_int_equal(ts_send_all(fd, size_line, (size_t)m), 0);
        assert_int_equal(ts_send_all(fd, body + off, size), 0);
        assert_int_equal(ts_send_all(fd, "\r\n", 2), 0);
    }
    ts_send_all(fd, "0\r\n\r\n", 5); /* the server may have closed after answering */
    assert_int_equal(ts_read_response(fd, 10000, status, NULL, resp_body), 0);
    close(fd);
}

static void test_chunked_body_within_the_limit_is_queued(void **state)
{
    (void)state;
    const char *body = event_body("group.deleted", "{\"UniqueID\":\"g-1\"}");
    const char *id = next_id();
    long long before = peek_events_added(redis());
    long status;
    char *resp;
    post_chunked(id, body, strlen(body), 16, &status, &resp);
    assert_int_equal(status, 202);
    json_object *o = json_tokener_parse(resp);
    assert_string_equal(jpath_str(o, "status"), "queued");
    json_object_put(o);
    free(resp);
    assert_int_equal(peek_events_added(redis()), before + 1);
}

static void test_chunked_body_over_the_limit_is_413(void **state)
{
    (void)state;
    char body[3 * MAX_BODY];
    const char *event = event_body("group.deleted", "{\"UniqueID\":\"g-1\"}");
    memset(body, ' ', sizeof body);
    memcpy(body, event, strlen(event));
    const char *id = next_id();
    long long before = peek_events_added(redis());
    long status;
    char *resp;
    post_chunked(id, body, sizeof body, 1000, &status, &resp);
    struct reply r = {status, resp, strdup("Content-Type: application/json\r\n"),
                      json_tokener_parse(resp)};
    check_refused("chunked, 6144 bytes", &r, 413, "body_too_large",
                  "the body is over the limit of 2048 bytes", id, before);
    reply_free(&r);
}

static void test_wrong_content_type_is_415(void **state)
{
    (void)state;
    const char *body = event_body("group.deleted", "{\"UniqueID\":\"g-1\"}");
    static const char *types[] = {"text/plain", "application/x-www-form-urlencoded",
                                  "application/jsonx", "application/json-patch+json", NULL};
    long long before = peek_events_added(redis());
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        const char *id = next_id();
        char sig[128], ts[32], what[96];
        long now = (long)time(NULL);
        sign(SECRET, id, now, body, strlen(body), sig, sizeof sig);
        snprintf(ts, sizeof ts, "%ld", now);
        snprintf(what, sizeof what, "Content-Type %s", types[i] ? types[i] : "absent");
        struct reply r = post_raw(ASSOC, types[i], id, ts, sig, body, strlen(body));
        check_refused(what, &r, 415, "unsupported_media_type",
                      "the body must be sent as Content-Type: application/json", id, before);
        reply_free(&r);
    }
}

/* ---- Redis outage ---- */

static void test_redis_outage_answers_503_then_recovers(void **state)
{
    (void)state;
    const char *body = event_body("group.deleted", "{\"UniqueID\":\"g-1\"}");
    const char *id = next_id();
    struct reply r = post_signed(id, body);
    check_queued("before the outage", &r, id);
    reply_free(&r);

    redisFree(S.redis);
    S.redis = NULL;
    int status = ts_kill(S.redis_pid, SIGKILL);
    assert_true(WIFSIGNALED(status));
    S.redis_pid = 0;

    char during[64];
    snprintf(during, sizeof during, "%s", next_id());
    char retry_after[16];
    for (int i = 0; i < 2;
         i++) { /* the first finds the old connection dead, the next cannot connect */
        r = post_signed(during, body);
        check_error("webhook while Redis is down", &r, 503, "redis_unavailable",
                    "the event store is unavailable; nothing was queued, retry later");
        header_of(&r, "Retry-After", retry_after, sizeof retry_after);
        assert_string_equal(retry_after, "5");
        reply_free(&r);
    }
    /* an association not in the secret cache: unknown is not decidable, so 503 too */
    r = post_signed_len("beta", SECRET, next_id(), body, strlen(body));
    assert_int_equal(r.status, 503);
    header_of(&r, "Retry-After", retry_after, sizeof retry_after);
    assert_string_equal(retry_after, "5");
    reply_free(&r);

    r = get_ready();
    assert_int_equal(r.status, 503);
    assert_string_equal(jpath_str(r.json, "status"), "not_ready");
    assert_string_equal(jpath_str(r.json, "redis"), "unreachable");
    assert_string_equal(jpath_str(r.json, "error.code"), "not_ready");
    reply_free(&r);
    r = call("GET", "/livez", NULL, NULL, 0);
    assert_int_equal(r.status, 200);
    reply_free(&r);

    /* Redis back on the same port (empty: no persistence), ccsyncd untouched */
    S.redis_pid = ts_redis_start(S.redis_port);
    assert_true(S.redis_pid > 0);
    wait_ready();
    put_association(ASSOC, SECRET);
    ts_sleep_ms(300); /* past the pipeline's pause between reconnection attempts */
    long long before = peek_events_added(redis());
    r = post_signed(during, body); /* Novi's retry of the refused delivery */
    check_queued("retry after Redis is back", &r, during);
    reply_free(&r);
    assert_int_equal(peek_events_added(redis()), before + 1);
    assert_true(peek_dedup_exists(redis(), ASSOC, during));
    assert_int_equal(ts_wait_exit(S.ccsyncd_pid, 0), -1); /* never restarted */

    r = call("GET", "/metrics", NULL, NULL, 0);
    expect_metric(r.body, "ccsync_webhooks_total{outcome=\"redis_unavailable\"} 3");
    expect_metric(r.body, "ccsync_webhooks_total{outcome=\"queued\"} 2");
    reply_free(&r);
}

/* ---- SIGTERM ---- */

struct in_flight {
    pthread_t thread;
    char id[64];
    const char *body;
    struct reply reply;
};

static void *send_in_flight(void *arg)
{
    struct in_flight *f = arg;
    f->reply = post_signed(f->id, f->body);
    return NULL;
}

/* GET path on an open keep-alive connection. */
static long get_on(int fd, const char *path, char **body)
{
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", path);
    assert_int_equal(ts_send_all(fd, req, (size_t)n), 0);
    long status;
    assert_int_equal(ts_read_response(fd, 5000, &status, NULL, body), 0);
    return status;
}

/* Starts a signed webhook on a raw connection: headers and the first half of the body. */
static int start_upload(const char *id, const char *body, size_t len)
{
    char sig[128], head[1024];
    long now = (long)time(NULL);
    sign(SECRET, id, now, body, len, sig, sizeof sig);
    int n = snprintf(head, sizeof head,
                     "POST /v1/associations/" ASSOC "/webhooks/novi HTTP/1.1\r\n"
                     "Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nwebhook-id: %s\r\n"
                     "webhook-timestamp: %ld\r\nwebhook-signature: %s\r\n\r\n",
                     len, id, now, sig);
    int fd = ts_connect(S.http_port);
    assert_true(fd >= 0);
    assert_int_equal(ts_send_all(fd, head, (size_t)n), 0);
    assert_int_equal(ts_send_all(fd, body, len / 2), 0);
    return fd;
}

/*
 * At SIGTERM three requests are open: a webhook waiting for Redis in the enqueue
 * step (Redis pauses writes for 700 ms, under the pipeline's 1 s timeout), a
 * webhook whose body is still arriving, and an idle keep-alive connection. The
 * first completes 202 and is queued; while the second keeps the process draining,
 * new connections are refused and readyz on the old connection says 503; the
 * second, finished late, is answered 503 shutting_down with Retry-After and not
 * queued; then ccsyncd exits 0 well within its grace period.
 */
static void test_sigterm_drains_requests_in_flight_and_exits_0(void **state)
{
    (void)state;
    int keep = ts_connect(S.http_port);
    assert_true(keep >= 0);
    char *text;
    assert_int_equal(get_on(keep, "/livez", &text), 200);
    free(text);

    const char *late_body = event_body("group.deleted", "{\"UniqueID\":\"g-2\"}");
    char late_id[64];
    snprintf(late_id, sizeof late_id, "%s", next_id());
    int late = start_upload(late_id, late_body, strlen(late_body));

    long long before = peek_events_added(redis());
    redisReply *p = redisCommand(redis(), "CLIENT PAUSE 700 WRITE");
    assert_int_equal(p->type, REDIS_REPLY_STATUS);
    freeReplyObject(p);
    struct in_flight f = {.body = event_body("group.deleted", "{\"UniqueID\":\"g-1\"}")};
    snprintf(f.id, sizeof f.id, "%s", next_id());
    assert_int_equal(pthread_create(&f.thread, NULL, send_in_flight, &f), 0);
    ts_sleep_ms(200);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(kill(S.ccsyncd_pid, SIGTERM), 0);

    pthread_join(f.thread, NULL);
    check_queued("webhook waiting for Redis at SIGTERM", &f.reply, f.id);
    reply_free(&f.reply);
    assert_int_equal(peek_events_added(redis()), before + 1);
    assert_true(peek_dedup_exists(redis(), ASSOC, f.id));

    ts_sleep_ms(300);
    assert_int_equal(ts_wait_exit(S.ccsyncd_pid, 0), -1); /* still waiting for the upload */
    int refused = ts_connect(S.http_port);
    if (refused >= 0)
        close(refused);
    assert_int_equal(refused, -1);
    assert_int_equal(get_on(keep, "/readyz", &text), 503);
    json_object *o = json_tokener_parse(text);
    assert_string_equal(jpath_str(o, "status"), "not_ready");
    assert_true(json_object_get_boolean(jget(o, "draining")));
    assert_string_equal(jpath_str(o, "redis"), "ok");
    assert_string_equal(jpath_str(o, "error.message"), "the process is shutting down");
    json_object_put(o);
    free(text);

    size_t len = strlen(late_body);
    assert_int_equal(ts_send_all(late, late_body + len / 2, len - len / 2), 0);
    long status;
    char *headers, *resp;
    assert_int_equal(ts_read_response(late, 5000, &status, &headers, &resp), 0);
    close(late);
    struct reply r = {status, resp, headers, json_tokener_parse(resp)};
    check_refused("upload finished during the drain", &r, 503, "shutting_down",
                  "this instance is shutting down; retry", late_id, before + 1);
    char retry_after[16];
    header_of(&r, "Retry-After", retry_after, sizeof retry_after);
    assert_string_equal(retry_after, "5");
    reply_free(&r);

    int exit_status = ts_wait_exit(S.ccsyncd_pid, GRACE_SECONDS * 1000);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_true(exit_status != -1);
    S.ccsyncd_pid = 0;
    assert_true(WIFEXITED(exit_status));
    assert_int_equal(WEXITSTATUS(exit_status), 0);
    assert_true(t1.tv_sec - t0.tv_sec < GRACE_SECONDS);
    close(keep);

    char *log = ts_read_file(S.log_path, NULL);
    assert_non_null(log);
    assert_non_null(strstr(log, "\"msg\":\"draining\",\"signal\":\"SIGTERM\""));
    assert_non_null(strstr(log, "\"msg\":\"stopped\""));
    free(log);
}

/* ---- logs ---- */

static void test_logs_are_json_lines_without_secrets(void **state)
{
    (void)state;
    struct reply r = admin("PUT", "/v1/associations/" ASSOC,
                           "{\"constant_contact\":{\"access_token\":\"" CC_ACCESS
                           "\",\"refresh_token\":\"" CC_REFRESH "\"}}");
    assert_int_equal(r.status, 200);
    reply_free(&r);
    const char *body = event_body("group.deleted", "{\"UniqueID\":\"g-1\"}");
    char good[64], bad[64];
    snprintf(good, sizeof good, "%s", next_id());
    snprintf(bad, sizeof bad, "%s", next_id());
    r = post_signed(good, body);
    check_queued("logged webhook", &r, good);
    reply_free(&r);
    r = post_signed_len(ASSOC, OTHER_SECRET, bad, body, strlen(body));
    assert_int_equal(r.status, 401);
    reply_free(&r);
    const char *wrong[] = {"Authorization: Bearer " WRONG_TOKEN, NULL};
    r = call("GET", "/v1/status", wrong, NULL, 0);
    assert_int_equal(r.status, 401);
    reply_free(&r);
    r = admin("PUT", "/v1/associations/" ASSOC, "{\"webhook_secret\":\"" OTHER_SECRET "\"}");
    assert_int_equal(r.status, 200);
    reply_free(&r);
    stop_ccsyncd(); /* every line written */

    char *log = ts_read_file(S.log_path, NULL);
    assert_non_null(log);
    static const char *secrets[] = {SECRET_KEY_B64, "c2Vjb25kLXNlY3JldC1rZXktMDEyMzQ1Njc4OQ",
                                    ADMIN_TOKEN,    WRONG_TOKEN,
                                    CC_ACCESS,      CC_REFRESH};
    for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++)
        if (strstr(log, secrets[i]))
            fail_msg("the log holds the secret %s", secrets[i]);

    bool saw_queued = false, saw_refused = false, saw_put = false, saw_admin_401 = false;
    int lines = 0;
    char *save = NULL;
    for (char *line = strtok_r(log, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lines++;
        json_tokener *tok = json_tokener_new();
        json_object *o = json_tokener_parse_ex(tok, line, (int)strlen(line));
        bool whole = json_tokener_get_error(tok) == json_tokener_success &&
                     json_tokener_get_parse_end(tok) == strlen(line);
        json_tokener_free(tok);
        if (!o || !whole || !json_object_is_type(o, json_type_object))
            fail_msg("not one JSON object: %s", line);
        if (!jpath_str(o, "ts") || !jpath_str(o, "level") || !jpath_str(o, "msg"))
            fail_msg("no ts, level or msg: %s", line);
        const char *msg = jpath_str(o, "msg"), *route = jpath_str(o, "route"),
                   *wid = jpath_str(o, "webhook_id");
        const char *assoc = jpath_str(o, "association");
        int status = json_object_get_int(jget(o, "status"));
        if (strcmp(msg, "http_request") == 0 && route && strcmp(route, "webhook") == 0) {
            if (status == 202 && wid && strcmp(wid, good) == 0 && assoc &&
                strcmp(assoc, ASSOC) == 0)
                saw_queued = true;
            if (status == 401 && wid && strcmp(wid, bad) == 0 && assoc && strcmp(assoc, ASSOC) == 0)
                saw_refused = true;
        }
        if (strcmp(msg, "http_request") == 0 && route && strcmp(route, "association_put") == 0 &&
            status == 200 && assoc && strcmp(assoc, ASSOC) == 0)
            saw_put = true;
        if (strcmp(msg, "http_request") == 0 && route && strcmp(route, "status") == 0 &&
            status == 401)
            saw_admin_401 = true;
        json_object_put(o);
    }
    free(log);
    assert_true(lines > 0);
    assert_true(saw_queued);
    assert_true(saw_refused);
    assert_true(saw_put);
    assert_true(saw_admin_401);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        T(test_put_association_answers_redacted_view),
        T(test_put_association_refuses_bad_input),
        T(test_admin_endpoints_require_the_bearer_token),
        T(test_unknown_path_is_404_and_wrong_method_405),
        T(test_invalid_association_id_in_path_is_400),
        T(test_livez_and_readyz_answer_200),
        T(test_metrics_count_each_webhook_outcome),
        T(test_signed_webhook_is_queued_exactly_once),
        T(test_every_known_type_with_its_required_fields_is_queued),
        T(test_repeated_webhook_id_is_duplicate_and_not_queued),
        T(test_same_id_sent_at_once_is_queued_once),
        T(test_event_the_stream_refused_is_queued_on_retry),
        T(test_webhook_after_script_flush_is_queued_once),
        T(test_body_of_exactly_the_limit_is_queued),
        T(test_json_content_type_with_charset_is_accepted),
        T(test_webhook_signed_at_edge_of_tolerance_is_queued),
        T(test_multiple_signatures_one_valid_is_queued),
        T(test_unknown_type_is_ignored_and_not_queued),
        T(test_secret_change_takes_effect_at_once),
        T(test_malformed_json_is_400),
        T(test_missing_required_field_is_400_naming_it),
        T(test_field_of_wrong_json_type_is_400),
        T(test_bad_signature_is_401),
        T(test_missing_signature_header_is_401_naming_it),
        T(test_stale_timestamp_is_401),
        T(test_unknown_association_is_401_like_a_bad_signature),
        T(test_body_over_the_limit_is_413),
        T(test_chunked_body_within_the_limit_is_queued),
        T(test_chunked_body_over_the_limit_is_413),
        T(test_wrong_content_type_is_415),
        T(test_redis_outage_answers_503_then_recovers),
        T(test_sigterm_drains_requests_in_flight_and_exits_0),
        T(test_logs_are_json_lines_without_secrets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
