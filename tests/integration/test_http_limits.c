/* Integration tests of the limits against hostile input (README "Limits"): what is
 * refused before a body is read, the deadline of a whole request, connection caps,
 * the process-wide budget of buffered bodies, the per-association webhook
 * allowance, unknown associations answered as a wrong signature, and the dedup
 * key written only with its stream entry.
 *
 * Each test starts its own stack (Redis, ccsim, ccsyncd) with the limits it
 * needs made small, and talks to ccsyncd on raw sockets where a test needs to
 * hold a request half sent. No test makes a Constant Contact request: only
 * webhooks and the admin API are used. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <hiredis/hiredis.h>
#include <json-c/json.h>
#include <poll.h>
#include <pthread.h>
#include <sys/wait.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ccsync/keys.h"
#include "ccsync/webhook.h"
#include "ccsim_client.h"
#include "novi.h"
#include "peek.h"
#include "stack.h"
#include "status.h"
#include "testsupport.h"

static const char *const *test_env;

static int setup(void **state)
{
    (void)state;
    struct stack_options o = {.workers = 1};
    for (int i = 0; test_env && test_env[i] && i < STACK_MAX_ENV; i++)
        o.env[i] = test_env[i];
    return stack_start("test_http_limits", &o);
}

/* The headers of a webhook to ASSOC announcing len bytes, signed over body
 * (NULL: no webhook-* headers at all). */
static int webhook_head(char *out, size_t size, const char *assoc, const char *id, const char *body,
                        size_t len)
{
    char sig[128] = "";
    long now = (long)time(NULL);
    if (body)
        assert_int_equal(webhook_sign(SECRET, id, now, body, len, sig, sizeof sig), 0);
    char signed_part[512] = "";
    if (body)
        snprintf(signed_part, sizeof signed_part,
                 "webhook-id: %s\r\nwebhook-timestamp: %ld\r\nwebhook-signature: %s\r\n", id, now,
                 sig);
    return snprintf(out, size,
                    "POST /v1/associations/%s/webhooks/novi HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    "Content-Type: application/json\r\nContent-Length: %zu\r\n%s\r\n",
                    assoc, len, signed_part);
}

/* A connection to ccsyncd with head sent. */
static int open_with(const char *head)
{
    int fd = ts_connect(stack.http_port[0]);
    assert_true(fd >= 0);
    assert_int_equal(ts_send_all(fd, head, strlen(head)), 0);
    return fd;
}

/* Whether the server closed fd (or reset it) within timeout_ms. */
static bool closed_within(int fd, int timeout_ms)
{
    long until = ts_now_ms() + timeout_ms;
    char buf[4096];
    while (ts_now_ms() < until) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) == 1) {
            ssize_t n = read(fd, buf, sizeof buf);
            if (n <= 0)
                return true;
        }
    }
    return false;
}

/* A body of exactly len bytes: a valid event padded with spaces; malloc'd. */
static char *padded_event(size_t len)
{
    char *event = envelope("group.deleted", "{\"UniqueID\":\"g-1\"}", 1);
    char *body = malloc(len + 1);
    memset(body, ' ', len);
    memcpy(body, event, strlen(event));
    body[len] = '\0';
    free(event);
    return body;
}

static void test_webhook_without_its_headers_is_refused_before_its_body(void **state)
{
    (void)state;
    char head[1024];
    webhook_head(head, sizeof head, ASSOC, "x", NULL, 8 * 1024 * 1024);
    int fd = open_with(head); /* the 8 MiB body is never sent */
    long status;
    char *body = NULL;
    long t0 = ts_now_ms();
    assert_int_equal(ts_read_response(fd, 3000, &status, NULL, &body), 0);
    assert_int_equal(status, 401);
    assert_true(ts_now_ms() - t0 < 2000);
    json_object *o = json_tokener_parse(body);
    assert_string_equal(jpath_str(o, "error.code"), "missing_signature_headers");
    json_object_put(o);
    free(body);
    close(fd);
}

static void test_stale_webhook_is_refused_before_its_body(void **state)
{
    (void)state;
    char head[1024];
    int n = snprintf(head, sizeof head,
                     "POST /v1/associations/" ASSOC "/webhooks/novi HTTP/1.1\r\nHost: x\r\n"
                     "Content-Type: application/json\r\nContent-Length: 1000000\r\n"
                     "webhook-id: m1\r\nwebhook-timestamp: %ld\r\nwebhook-signature: v1,x\r\n\r\n",
                     (long)time(NULL) - 3600);
    assert_true(n > 0);
    int fd = open_with(head);
    long status;
    assert_int_equal(ts_read_response(fd, 3000, &status, NULL, NULL), 0);
    assert_int_equal(status, 401);
    close(fd);
}

static const char *const deadline_env[] = {"CCSYNC_REQUEST_DEADLINE_SECONDS=2", NULL};

/* A byte a second never lets the idle timeout fire; the deadline does. */
static void test_slow_request_is_cut_at_the_deadline(void **state)
{
    (void)state;
    int fd = ts_connect(stack.http_port[0]);
    assert_true(fd >= 0);
    const char *head = "GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
    long t0 = ts_now_ms();
    bool closed = false;
    for (size_t i = 0; i < strlen(head) && !closed; i++) {
        if (ts_send_all(fd, head + i, 1) != 0)
            break;
        closed = closed_within(fd, 400);
    }
    if (!closed)
        closed = closed_within(fd, 3000);
    long took = ts_now_ms() - t0;
    close(fd);
    assert_true(closed);
    assert_true(took >= 1800 && took < 4500);
    /* A request that finishes in time still works on a fresh connection. */
    struct reply r = api("GET", "/livez", NULL);
    assert_int_equal(r.status, 200);
    reply_free(&r);
}

static const char *const per_ip_env[] = {"CCSYNC_MAX_CONNECTIONS_PER_IP=4", NULL};

static void test_connections_from_one_address_are_capped(void **state)
{
    (void)state;
    /* Six held open (a request never finished) from 127.0.0.1, one at a time:
     * at most four stay open (fewer when the test's own HTTP client still
     * holds one), the others are closed at once. */
    int fds[6], open_now = 0;
    for (int i = 0; i < 6; i++) {
        fds[i] = open_with("GET /livez HTTP/1.1\r\nHost: x\r\n");
        ts_sleep_ms(100);
    }
    for (int i = 0; i < 6; i++)
        open_now += !closed_within(fds[i], 500);
    print_message("held open: %d of 6\n", open_now);
    assert_true(open_now <= 4 && open_now >= 3);
    for (int i = 0; i < 6; i++)
        close(fds[i]);
    /* Once they are gone the address is served again. */
    long status = 0;
    char url[128];
    snprintf(url, sizeof url, "%s/livez", stack.base[0]);
    for (int tries = 0; tries < 200 && status != 200; tries++) {
        char *body = NULL;
        if (ts_http("GET", url, NULL, NULL, &status, &body) != 0)
            status = 0;
        free(body);
        if (status != 200)
            ts_sleep_ms(50);
    }
    assert_int_equal(status, 200);
}

static const char *const budget_env[] = {"CCSYNC_MAX_INFLIGHT_BODY_BYTES=100000", NULL};

/* A body that would take the bodies buffered at once over the budget gets 503 +
 * Retry-After at once; once the first is done the second goes through. */
static void test_bodies_over_the_process_budget_get_503(void **state)
{
    (void)state;
    size_t len = 60000;
    char *body = padded_event(len);
    char head[1024], id1[64], id2[64];
    new_id(id1, sizeof id1);
    new_id(id2, sizeof id2);
    webhook_head(head, sizeof head, ASSOC, id1, body, len);
    int first = open_with(head); /* its body is not sent yet */
    ts_sleep_ms(200);
    webhook_head(head, sizeof head, ASSOC, id2, body, len);
    int second = open_with(head);
    long status;
    char *headers = NULL, *resp = NULL;
    assert_int_equal(ts_read_response(second, 3000, &status, &headers, &resp), 0);
    assert_int_equal(status, 503);
    char retry[16];
    assert_int_equal(ts_header_value(headers, "Retry-After", retry, sizeof retry), 0);
    assert_string_equal(retry, "5");
    json_object *o = json_tokener_parse(resp);
    assert_string_equal(jpath_str(o, "error.code"), "server_busy");
    json_object_put(o);
    free(headers);
    free(resp);
    close(second);
    assert_int_equal(ts_send_all(first, body, len), 0);
    assert_int_equal(ts_read_response(first, 5000, &status, NULL, NULL), 0);
    assert_int_equal(status, 202);
    close(first);
    /* The first body's bytes are given back once its connection is done with
     * it (just after its answer): the second, sent again as Retry-After says
     * (sooner here), is taken then. */
    long second_status = 503;
    for (int tries = 0; tries < 50 && second_status == 503; tries++) {
        second_status = post_webhook(id2, body);
        if (second_status == 503)
            ts_sleep_ms(100);
    }
    free(body);
    assert_int_equal(second_status, 202);
}

static const char *const allowance_env[] = {"CCSYNC_INGEST_RATE=1", "CCSYNC_INGEST_BURST=3", NULL};

static void test_association_over_its_allowance_gets_429(void **state)
{
    (void)state;
    char *body = envelope("group.deleted", "{\"UniqueID\":\"g-1\"}", 1);
    char id[64];
    for (int i = 0; i < 3; i++) {
        new_id(id, sizeof id);
        assert_int_equal(post_webhook(id, body), 202);
    }
    new_id(id, sizeof id);
    char head[1024];
    webhook_head(head, sizeof head, ASSOC, id, body, strlen(body));
    int fd = open_with(head);
    assert_int_equal(ts_send_all(fd, body, strlen(body)), 0);
    long status;
    char *headers = NULL, *resp = NULL;
    assert_int_equal(ts_read_response(fd, 3000, &status, &headers, &resp), 0);
    close(fd);
    assert_int_equal(status, 429);
    char retry[16];
    assert_int_equal(ts_header_value(headers, "Retry-After", retry, sizeof retry), 0);
    assert_string_equal(retry, "1");
    json_object *o = json_tokener_parse(resp);
    assert_string_equal(jpath_str(o, "error.code"), "too_many_webhooks");
    json_object_put(o);
    free(headers);
    free(resp);
    redisContext *c = peek_connect(stack.redis_port);
    assert_false(peek_dedup_exists(c, ASSOC, id));
    redisFree(c);
    /* A second later the bucket holds one again. */
    ts_sleep_ms(1100);
    assert_int_equal(post_webhook(id, body), 202);
    free(body);
}

/* A webhook to assoc whose signature matches nothing (for ASSOC a wrong one);
 * asserts 401 and returns the answer's body (malloc'd). */
static char *post_unsigned(const char *assoc, const char *body)
{
    char id[64], head[2048];
    new_id(id, sizeof id);
    webhook_head(head, sizeof head, assoc, id, body, strlen(body));
    char *v1 = strstr(head, "v1,");
    v1[3] = v1[3] == 'A' ? 'B' : 'A';
    int fd = ts_connect(stack.http_port[0]);
    assert_int_equal(ts_send_all(fd, head, strlen(head)), 0);
    assert_int_equal(ts_send_all(fd, body, strlen(body)), 0);
    long status;
    char *answer = NULL;
    assert_int_equal(ts_read_response(fd, 5000, &status, NULL, &answer), 0);
    close(fd);
    assert_int_equal(status, 401);
    return answer;
}

/* Unknown association and wrong signature: the same answer, byte for byte,
 * first seen and then from the negative cache. (Their times are compared in
 * the benchmark, `build/bench/hostile probe`, not here: a shared machine's
 * noise is no test.) */
static void test_unknown_association_is_answered_as_a_bad_signature(void **state)
{
    (void)state;
    char *body = padded_event(64 * 1024);
    for (int i = 0; i < 3; i++) {
        char *known = post_unsigned(ASSOC, body), *unknown = post_unsigned("nobody-here", body);
        assert_string_equal(unknown, known);
        assert_non_null(strstr(known, "\"code\":\"invalid_signature\""));
        free(known);
        free(unknown);
    }
    free(body);
}

/* An XADD that fails leaves no dedup key: the sender's retry is queued, not
 * called a duplicate of an event that never reached the stream. */
static void test_failed_enqueue_sets_no_dedup_key(void **state)
{
    (void)state;
    redisContext *c = peek_connect(stack.redis_port);
    struct key stream = key_events(ASSOC);
    /* the association's stream, if it has one yet, put aside */
    bool had = peek_integer(c, "EXISTS %s", stream.s) == 1;
    if (had)
        freeReplyObject(peek_command(c, "RENAME %s %s", stream.s, "ccsync:events-aside"));
    freeReplyObject(peek_command(c, "SET %s not-a-stream", stream.s));
    char *body = envelope("group.deleted", "{\"UniqueID\":\"g-1\"}", 1);
    char id[64];
    new_id(id, sizeof id);
    assert_int_equal(post_webhook(id, body), 503);
    assert_false(peek_dedup_exists(c, ASSOC, id));
    freeReplyObject(peek_command(c, "DEL %s", stream.s));
    if (had)
        freeReplyObject(peek_command(c, "RENAME %s %s", "ccsync:events-aside", stream.s));
    assert_int_equal(post_webhook(id, body), 202);
    assert_true(peek_dedup_exists(c, ASSOC, id));
    free(body);
    redisFree(c);
}

/* A customer.updated naming n groups; malloc'd. */
static char *member_with_groups(size_t n)
{
    size_t cap = 256 + n * 32, len = 0;
    char *data = malloc(cap);
    len += (size_t)snprintf(data, cap, "{\"UniqueID\":\"m-big\",\"Groups\":[");
    for (size_t i = 0; i < n; i++)
        len +=
            (size_t)snprintf(data + len, cap - len, "%s{\"UniqueID\":\"g%zu\"}", i ? "," : "", i);
    snprintf(data + len, cap - len, "]}");
    char *body = envelope("customer.updated", data, 1);
    free(data);
    return body;
}

static json_object *post_json(const char *body, long *status, double *ms)
{
    char id[64], url[256], sig[128], ts_hdr[64], id_hdr[160], sig_hdr[200];
    new_id(id, sizeof id);
    long now = (long)time(NULL);
    assert_int_equal(webhook_sign(SECRET, id, now, body, strlen(body), sig, sizeof sig), 0);
    snprintf(ts_hdr, sizeof ts_hdr, "webhook-timestamp: %ld", now);
    snprintf(id_hdr, sizeof id_hdr, "webhook-id: %s", id);
    snprintf(sig_hdr, sizeof sig_hdr, "webhook-signature: %s", sig);
    const char *headers[] = {"Content-Type: application/json", id_hdr, ts_hdr, sig_hdr, NULL};
    snprintf(url, sizeof url, "%s/v1/associations/" ASSOC "/webhooks/novi", stack.base[0]);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    struct reply r = http("POST", url, headers, body);
    clock_gettime(CLOCK_MONOTONIC, &b);
    *ms = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
    *status = r.status;
    return reply_take_json(&r);
}

static void test_member_over_the_group_cap_is_400_naming_the_field(void **state)
{
    (void)state;
    long status;
    double ms;
    char *at_cap = member_with_groups(1000), *over = member_with_groups(1001);
    json_object *o = post_json(at_cap, &status, &ms);
    assert_int_equal(status, 202);
    json_object_put(o);
    o = post_json(over, &status, &ms);
    assert_int_equal(status, 400);
    assert_string_equal(jpath_str(o, "error.code"), "invalid_event");
    assert_string_equal(jpath_str(o, "error.message"),
                        "data.Groups has 1001 groups; at most 1000 are accepted");
    json_object_put(o);
    free(at_cap);
    free(over);
}

/* Refused by the parser's cap, not after a fold: 400 naming the field, nothing
 * queued. (How fast is measured by `build/bench/hostile probe`.) */
static void test_member_with_100000_groups_is_400(void **state)
{
    (void)state;
    char *body = member_with_groups(100000);
    long status;
    double ms;
    json_object *o = post_json(body, &status, &ms);
    assert_int_equal(status, 400);
    assert_string_equal(jpath_str(o, "error.message"),
                        "data.Groups has 100000 groups; at most 1000 are accepted");
    json_object_put(o);
    print_message("100,000 groups (%zu bytes) answered 400 in %.1f ms\n", strlen(body), ms);
    assert_int_equal(queue_pending(), 0);
    free(body);
}

/* A body of 256 KiB or more is checked on ingest's validation thread, so that
 * its parse holds no HTTP thread: its answers are those of a small one. */
static void test_large_bodies_are_answered_like_small_ones(void **state)
{
    (void)state;
    size_t len = 300 * 1024;
    char *body = padded_event(len);
    char id[64];
    new_id(id, sizeof id);
    assert_int_equal(post_webhook(id, body), 202);
    assert_int_equal(post_webhook(id, body), 200); /* duplicate */
    char head[1024];
    new_id(id, sizeof id);
    webhook_head(head, sizeof head, ASSOC, id, body, len);
    char *v1 = strstr(head, "v1,");
    v1[3] = v1[3] == 'A' ? 'B' : 'A';
    int fd = open_with(head);
    assert_int_equal(ts_send_all(fd, body, len), 0);
    long status;
    assert_int_equal(ts_read_response(fd, 10000, &status, NULL, NULL), 0);
    close(fd);
    assert_int_equal(status, 401);
    body[0] = '[';
    new_id(id, sizeof id);
    assert_int_equal(post_webhook(id, body), 400);
    free(body);
}

static void *post_one(void *arg)
{
    char id[64];
    snprintf(id, sizeof id, "msg_shutdown_%ld", (long)(intptr_t)arg);
    char *body = envelope("group.deleted", "{\"UniqueID\":\"g-1\"}", 1);
    post_webhook(id, body); /* 202, 503 or a closed connection: any */
    free(body);
    return NULL;
}

static const char *const short_grace_env[] = {"CCSYNC_SHUTDOWN_GRACE_SECONDS=2", NULL};

/* SIGTERM while webhooks wait on a paused Redis: ingest answers them before
 * the HTTP daemon stops, so none is freed under the pipeline thread (under
 * ASan the old order was a use after free), and ccsyncd exits 0. */
static void test_sigterm_with_webhooks_waiting_on_redis_exits_0(void **state)
{
    (void)state;
    redisContext *c = peek_connect(stack.redis_port);
    freeReplyObject(peek_command(c, "CLIENT PAUSE 4000 WRITE"));
    pthread_t t[4];
    for (intptr_t i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, post_one, (void *)i);
    ts_sleep_ms(300);
    kill(stack.ccsyncd_pid[0], SIGTERM);
    int status = ts_wait_exit(stack.ccsyncd_pid[0], 20000);
    if (status >= 0)
        stack.ccsyncd_pid[0] = 0; /* gone; else stack_stop stops it */
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    freeReplyObject(peek_command(c, "CLIENT UNPAUSE"));
    redisFree(c);
    assert_true(status >= 0);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

#define T(f, env)                                                                                  \
    {                                                                                              \
#f, f, setup_##env, stack_stop, NULL                                                       \
    }
#define SETUP(env, list)                                                                           \
    static int setup_##env(void **state)                                                           \
    {                                                                                              \
        test_env = list;                                                                           \
        return setup(state);                                                                       \
    }
SETUP(plain, NULL)
SETUP(deadline, deadline_env)
SETUP(per_ip, per_ip_env)
SETUP(budget, budget_env)
SETUP(allowance, allowance_env)
SETUP(short_grace, short_grace_env)

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        T(test_webhook_without_its_headers_is_refused_before_its_body, plain),
        T(test_stale_webhook_is_refused_before_its_body, plain),
        T(test_slow_request_is_cut_at_the_deadline, deadline),
        T(test_connections_from_one_address_are_capped, per_ip),
        T(test_bodies_over_the_process_budget_get_503, budget),
        T(test_association_over_its_allowance_gets_429, allowance),
        T(test_unknown_association_is_answered_as_a_bad_signature, plain),
        T(test_failed_enqueue_sets_no_dedup_key, plain),
        T(test_member_over_the_group_cap_is_400_naming_the_field, plain),
        T(test_member_with_100000_groups_is_400, plain),
        T(test_sigterm_with_webhooks_waiting_on_redis_exits_0, short_grace),
        T(test_large_bodies_are_answered_like_small_ones, plain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
