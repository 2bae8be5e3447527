/*
 * test_notify.c (integration) - notifications to the association's endpoint: a
 * list deleted in Constant Contact gives exactly one group.sync_error however
 * many reconcile rounds see it, the resync exactly one group.sync_recovered,
 * both signed with Standard Webhooks under the notification secret; a refused
 * delivery is retried under the same webhook-id; a list renamed in Constant
 * Contact is one list.renamed_in_constant_contact; and the SSRF guard refuses
 * private, loopback and non-http URLs unless CCSYNC_NOTIFY_ALLOW_PRIVATE=1.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ccsim_client.h"
#include "ccsync/webhook.h"
#include "novi.h"
#include "stack.h"
#include "status.h"
#include "testsupport.h"

#define NOTIFY_SECRET "whsec_c2VjcmV0LWZvci1ub3RpZmljYXRpb25zLTEyMzQ="
#define MAX_CALLS 32

/* The association's endpoint: records every POST, answers the first `refuse`
 * with 500 and the others with 204. */
static struct receiver {
    int fd, port, refuse;
    pthread_t thread;
    pthread_mutex_t lock;
    int n;
    struct call {
        char id[128], ts[32], sig[256];
        char *body;
        int answered;
    } calls[MAX_CALLS];
} rx = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void receive_one(int conn)
{
    char *headers = NULL, *body = NULL;
    long status = 0;
    if (ts_read_response(conn, 5000, &status, &headers, &body) != 0) {
        free(headers);
        free(body);
        return;
    }
    pthread_mutex_lock(&rx.lock);
    int answer = rx.n < rx.refuse ? 500 : 204;
    if (rx.n < MAX_CALLS) {
        struct call *c = &rx.calls[rx.n++];
        ts_header_value(headers, "webhook-id", c->id, sizeof c->id);
        ts_header_value(headers, "webhook-timestamp", c->ts, sizeof c->ts);
        ts_header_value(headers, "webhook-signature", c->sig, sizeof c->sig);
        c->body = body;
        c->answered = answer;
        body = NULL;
    }
    pthread_mutex_unlock(&rx.lock);
    char reply[128];
    int len = snprintf(reply, sizeof reply,
                       "HTTP/1.1 %d X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", answer);
    ts_send_all(conn, reply, (size_t)len);
    free(headers);
    free(body);
}

static void *receiver_main(void *arg)
{
    (void)arg;
    for (;;) {
        int conn = accept(rx.fd, NULL, NULL);
        if (conn < 0)
            return NULL;
        receive_one(conn);
        close(conn);
    }
}

static void receiver_start(int refuse)
{
    rx.refuse = refuse;
    rx.n = 0;
    rx.port = ts_free_port();
    rx.fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(rx.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)rx.port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(rx.fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(rx.fd, 16), 0);
    pthread_create(&rx.thread, NULL, receiver_main, NULL);
}

static int teardown(void **state)
{
    shutdown(rx.fd, SHUT_RDWR);
    close(rx.fd);
    pthread_join(rx.thread, NULL);
    for (int i = 0; i < rx.n; i++)
        free(rx.calls[i].body);
    return stack_stop(state);
}

static int setup_private(void **state)
{
    (void)state;
    struct stack_options o = {.reconcile_seconds = 1, .env = {"CCSYNC_NOTIFY_ALLOW_PRIVATE=1"}};
    return stack_start("test-notify", &o);
}

static int setup_private_minted(void **state)
{
    (void)state;
    struct stack_options o = {.reconcile_seconds = 1,
                              .connect = STACK_SECRET_ONLY,
                              .env = {"CCSYNC_NOTIFY_ALLOW_PRIVATE=1"}};
    return stack_start("test-notify", &o);
}

/* hour: the daily digest's hour (UTC), -1 for none. */
static void put_notifications_at(const char *url, int hour, long want)
{
    char body[512], digest[64] = "";
    if (hour >= 0)
        snprintf(digest, sizeof digest, ",\"daily_digest_hour_utc\":%d", hour);
    snprintf(body, sizeof body,
             "{\"notifications\":{\"url\":\"%s\",\"secret\":\"" NOTIFY_SECRET "\"%s}}", url,
             digest);
    struct reply r = api("PUT", "/v1/associations/" ASSOC, body);
    if (r.status != want)
        fail_msg("PUT notifications %s: %ld %s", url, r.status, r.body ? r.body : "");
    reply_free(&r);
}

static void put_notifications(const char *url, long want)
{
    put_notifications_at(url, -1, want);
}

static int calls(void)
{
    pthread_mutex_lock(&rx.lock);
    int n = rx.n;
    pthread_mutex_unlock(&rx.lock);
    return n;
}

static void wait_calls(int n)
{
    long deadline = ts_now_ms() + WAIT_MS;
    while (calls() < n && ts_now_ms() < deadline)
        ts_sleep_ms(50);
    assert_int_equal(calls(), n);
}

/* Call i: signed under the notification secret, of type, for group g. */
static void assert_call(int i, const char *type, const char *g, const char *code)
{
    struct call *c = &rx.calls[i];
    struct webhook_error err;
    if (webhook_verify(NOTIFY_SECRET, c->id, c->ts, c->sig, c->body, strlen(c->body),
                       (int64_t)time(NULL), &err) != 0)
        fail_msg("call %d is not signed right: %s", i, err.message);
    json_object *o = json_tokener_parse(c->body);
    assert_non_null(o);
    assert_string_equal(jstr(o, "type"), type);
    assert_string_equal(jpath_str(o, "data.association_id"), ASSOC);
    assert_string_equal(jpath_str(o, "data.group_id"), g);
    assert_string_equal(jpath_str(o, "data.code"), code);
    assert_non_null(jstr(o, "timestamp"));
    json_object_put(o);
}

static void test_a_deleted_list_notifies_once_and_its_resync_once(void **state)
{
    (void)state;
    char url[128], path[256], list_id[128];
    receiver_start(1); /* the first delivery is refused: it comes again */
    snprintf(url, sizeof url, "http://127.0.0.1:%d/events", rx.port);
    put_notifications(url, 200);
    struct reply r = api("GET", "/v1/associations/" ASSOC, NULL);
    assert_string_equal(jpath_str(r.json, "notifications.url"), url);
    assert_true(json_object_get_boolean(jpath(r.json, "notifications.secret_set")));
    assert_null(jpath(r.json, "notifications.daily_digest_hour_utc"));
    assert_null(strstr(r.body, NOTIFY_SECRET));
    reply_free(&r);

    send_group("board", "Board", true, 1);
    send_group("staff", "Staff", true, 1);
    send_members("board", 2, 1, member("m1", "ann@example.org", "Ann", "Lee", NULL));
    send_members("staff", 2, 1, member("m2", "bob@example.org", "Bob", "Ray", NULL));
    json_object_put(wait_synced("staff"));
    wait_synced_list("board", list_id, sizeof list_id);
    assert_int_equal(calls(), 0); /* syncing is no transition */
    snprintf(path, sizeof path, "/__sim/lists/%s/delete", list_id);
    sim_void("POST", path, NULL);
    json_object_put(wait_group_error("board", "list_deleted_in_constant_contact", "error"));
    wait_calls(2); /* refused, then retried after 1 s */
    wait_reconcile_rounds(3);
    assert_int_equal(calls(), 2); /* reconcile rounds see the same error: nothing new */
    assert_int_equal(rx.calls[0].answered, 500);
    assert_string_equal(rx.calls[0].id, rx.calls[1].id);
    assert_string_equal(rx.calls[0].body, rx.calls[1].body);
    assert_call(1, "group.sync_error", "board", "list_deleted_in_constant_contact");

    r = api("POST", "/v1/associations/" ASSOC "/groups/board/resync", NULL);
    assert_int_equal(r.status, 202);
    reply_free(&r);
    json_object *gs = wait_synced("board");
    assert_state(gs, "synced");
    json_object_put(gs);
    wait_calls(3);
    wait_reconcile_rounds(2);
    assert_int_equal(calls(), 3);
    assert_int_equal(rx.calls[2].answered, 204);
    assert_call(2, "group.sync_recovered", "board", "list_deleted_in_constant_contact");
    assert_string_not_equal(rx.calls[2].id, rx.calls[1].id);
}

static void test_a_list_renamed_in_cc_is_notified_once(void **state)
{
    (void)state;
    char url[128], path[256], list_id[128];
    receiver_start(0);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/events", rx.port);
    put_notifications(url, 200);
    send_group("board", "Board", true, 1);
    send_members("board", 2, 1, member("m1", "ann@example.org", "Ann", "Lee", NULL));
    wait_synced_list("board", list_id, sizeof list_id);
    snprintf(path, sizeof path, "/__sim/lists/%s/rename", list_id);
    sim_void("POST", path, "{\"name\":\"Board of Directors\"}");
    wait_calls(1);
    wait_reconcile_rounds(3);
    assert_int_equal(calls(), 1);
    json_object *o = json_tokener_parse(rx.calls[0].body);
    assert_string_equal(jstr(o, "type"), "list.renamed_in_constant_contact");
    assert_string_equal(jpath_str(o, "data.group_id"), "board");
    assert_string_equal(jpath_str(o, "data.list_id"), list_id);
    assert_string_equal(jpath_str(o, "data.old_name"), "Board");
    assert_string_equal(jpath_str(o, "data.new_name"), "Board of Directors");
    json_object_put(o);
    struct webhook_error err;
    struct call *c = &rx.calls[0];
    assert_int_equal(webhook_verify(NOTIFY_SECRET, c->id, c->ts, c->sig, c->body, strlen(c->body),
                                    (int64_t)time(NULL), &err),
                     0);
}

static const char *call_type(int i, char *out, size_t size)
{
    json_object *o = json_tokener_parse(rx.calls[i].body);
    snprintf(out, size, "%s/%s", jstr(o, "type"),
             jpath_str(o, "data.code") ? jpath_str(o, "data.code") : "");
    json_object_put(o);
    return out;
}

/* Constant Contact refuses the tokens: the connection and the group each say
 * so once; new tokens bring the group back. */
static void test_refused_tokens_are_notified_once(void **state)
{
    (void)state;
    char url[128], list_id[128], t[128], access[256], refresh[256];
    receiver_start(0);
    mint_tokens(access, refresh);
    put_tokens(access, refresh);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/events", rx.port);
    put_notifications(url, 200);
    send_group("board", "Board", true, 1);
    send_members("board", 2, 1, member("m1", "ann@example.org", "Ann", "Lee", NULL));
    wait_synced_list("board", list_id, sizeof list_id);
    sim_void("POST", "/__sim/tokens/expire", "{\"refresh\":true}");
    send_customer(member("m2", "bob@example.org", "Bob", "Ray", groups_of("board")), 3);
    json_object_put(wait_group_error("board", "constant_contact_unauthorized", "error"));
    wait_calls(2);
    assert_string_equal(call_type(0, t, sizeof t), "connection.unauthorized/");
    assert_string_equal(call_type(1, t, sizeof t),
                        "group.sync_error/constant_contact_unauthorized");
    mint_tokens(access, refresh);
    put_tokens(access, refresh);
    json_object_put(wait_synced("board"));
    wait_calls(3);
    wait_reconcile_rounds(2);
    assert_int_equal(calls(), 3);
    assert_string_equal(call_type(2, t, sizeof t),
                        "group.sync_recovered/constant_contact_unauthorized");
}

/* The digest comes once a day, at (or after) the association's hour: groups in
 * error, members not synced by reason, the budget used. */
static void test_the_daily_digest_comes_once(void **state)
{
    (void)state;
    char url[128];
    receiver_start(0);
    send_group("board", "Board", true, 1);
    send_members("board", 2, 3, member("m1", "ann@example.org", "Ann", "Lee", NULL),
                 member("m2", "not-an-email", "In", "Valid", NULL),
                 "{\"UniqueID\":\"m3\",\"FirstName\":\"No\"}");
    json_object_put(wait_synced("board"));
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/events", rx.port);
    put_notifications_at(url, tm.tm_hour, 200);
    wait_calls(1);
    wait_reconcile_rounds(2);
    assert_int_equal(calls(), 1);
    json_object *o = json_tokener_parse(rx.calls[0].body);
    assert_string_equal(jstr(o, "type"), "digest.daily");
    assert_int_equal(json_object_array_length(jpath(o, "data.groups_in_error")), 0);
    assert_int_equal(jpath_int(o, "data.members_not_synced.no_email"), 1);
    assert_int_equal(jpath_int(o, "data.members_not_synced.invalid_email"), 1);
    assert_int_equal(jpath_int(o, "data.members_not_synced.rejected"), 0);
    assert_true(jpath_int(o, "data.budget_used_today") > 0);
    json_object_put(o);
}

/* Without CCSYNC_NOTIFY_ALLOW_PRIVATE, what resolves to a private address is refused. */
static void test_private_and_non_http_urls_are_refused(void **state)
{
    (void)state;
    receiver_start(0);
    const char *refused[] = {"http://127.0.0.1:9/x",
                             "http://10.1.2.3/x",
                             "http://169.254.169.254/",
                             "http://[::1]/x",
                             "http://localhost/x",
                             "ftp://example.org/x",
                             "not a url"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        char body[512];
        snprintf(body, sizeof body,
                 "{\"notifications\":{\"url\":\"%s\",\"secret\":\"" NOTIFY_SECRET "\"}}",
                 refused[i]);
        struct reply r = api("PUT", "/v1/associations/" ASSOC, body);
        if (r.status != 400 || strcmp(jpath_str(r.json, "error.code"), "invalid_field") != 0)
            fail_msg("%s: %ld %s", refused[i], r.status, r.body ? r.body : "");
        reply_free(&r);
    }
    struct reply r = api("GET", "/v1/associations/" ASSOC, NULL);
    assert_null(jget(r.json, "notifications"));
    reply_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_a_deleted_list_notifies_once_and_its_resync_once,
                                        setup_private, teardown),
        cmocka_unit_test_setup_teardown(test_a_list_renamed_in_cc_is_notified_once, setup_private,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_refused_tokens_are_notified_once, setup_private_minted,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_the_daily_digest_comes_once, setup_private, teardown),
        cmocka_unit_test_setup_teardown(test_private_and_non_http_urls_are_refused, stack_setup,
                                        teardown),
    };
    const char *filter = getenv("TEST_FILTER");
    if (filter && *filter)
        cmocka_set_test_filter(filter);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
