/* test_budget.c - the shared Constant Contact day with the real processes,
 * scaled down: twenty associations on a day of 600 requests with reconcile's
 * floor at 2 s converge without running the day out, reconcile stays within
 * its share, and every association gets about the same part of the day; an
 * asked reconcile is done at once and at most once a minute. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include <hiredis/hiredis.h>

#include "ccsim_client.h"
#include "ccsync/ratelimit.h"
#include "ccsync/webhook.h"
#include "novi.h"
#include "peek.h"
#include "stack.h"
#include "status.h"
#include "testsupport.h"

#define N_ASSOC 20
#define MEMBERS 5
#define DAILY_LIMIT 600
#define SHARE 0.2

/* ---- more associations than the stack's one ---- */

static void assoc_name(int i, char *out, size_t size)
{
    if (i == 0)
        snprintf(out, size, "%s", ASSOC);
    else
        snprintf(out, size, "assoc-%02d", i);
}

static void put_association(const char *a)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/associations/%s", a);
    struct reply r =
        api("PUT", path,
            "{\"webhook_secret\":\"" SECRET "\",\"constant_contact\":{\"access_token\":"
            "\"" DEV_TOKEN "\",\"expires_at\":\"2099-01-01T00:00:00Z\"}}");
    if (r.status != 200 && r.status != 201)
        fail_msg("PUT %s: %ld %s", path, r.status, r.body ? r.body : "");
    reply_free(&r);
}

/* Posts one signed event to association a's webhook; asserts 202. */
static void send_to(const char *a, const char *type, const char *data, long long at)
{
    char *body = envelope(type, data, at);
    char id[64], sig[128], ts_hdr[64], id_hdr[160], sig_hdr[200], url[256];
    new_id(id, sizeof id);
    int64_t now = (int64_t)time(NULL);
    assert_int_equal(webhook_sign(SECRET, id, now, body, strlen(body), sig, sizeof sig), 0);
    snprintf(ts_hdr, sizeof ts_hdr, "webhook-timestamp: %lld", (long long)now);
    snprintf(id_hdr, sizeof id_hdr, "webhook-id: %s", id);
    snprintf(sig_hdr, sizeof sig_hdr, "webhook-signature: %s", sig);
    const char *headers[] = {"Content-Type: application/json", id_hdr, ts_hdr, sig_hdr, NULL};
    snprintf(url, sizeof url, "%s/v1/associations/%s/webhooks/novi", stack.base[0], a);
    struct reply r = http("POST", url, headers, body);
    if (r.status != 202)
        fail_msg("webhook to %s: %ld %s", a, r.status, r.body ? r.body : "");
    reply_free(&r);
    free(body);
}

/* Association a's group "g" named "Group <a>" with MEMBERS members, synced. */
static void send_group_of(const char *a)
{
    char data[4096];
    int n = snprintf(data, sizeof data, "{\"UniqueID\":\"g\",\"Members\":[");
    for (int m = 0; m < MEMBERS; m++) {
        char id[64], email[128];
        snprintf(id, sizeof id, "%s-m%d", a, m);
        snprintf(email, sizeof email, "m%d.%s@example.org", m, a);
        char *rec = member_json(id, email, "F", "L", NULL);
        n += snprintf(data + n, sizeof data - (size_t)n, "%s%s", m ? "," : "", rec);
        free(rec);
    }
    snprintf(data + n, sizeof data - (size_t)n, "]}");
    send_to(a, "group.members", data, 1);
    snprintf(data, sizeof data,
             "{\"UniqueID\":\"g\",\"GroupName\":\"Group %s\",\"SyncToConstantContact\":true}", a);
    send_to(a, "group.updated", data, 2);
}

/* Association a's group status, or NULL. */
static json_object *group_of(const char *a)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/associations/%s/groups/g", a);
    long status;
    json_object *gs = api_json("GET", path, NULL, &status);
    if (status != 200) {
        json_object_put(gs);
        return NULL;
    }
    return gs;
}

static bool all_synced(void)
{
    for (int i = 0; i < N_ASSOC; i++) {
        char a[32];
        assoc_name(i, a, sizeof a);
        json_object *gs = group_of(a);
        bool ok = gs && strcmp(jstr(gs, "state"), "synced") == 0 && group_settled(gs) &&
                  jpath_int(gs, "counts.in_list") == MEMBERS;
        if (gs && error_code(gs))
            fail_msg("%s shows error %s", a, error_code(gs));
        json_object_put(gs);
        if (!ok)
            return false;
    }
    return true;
}

static json_object *status_budget(void)
{
    long status;
    json_object *o = api_json("GET", "/v1/status", NULL, &status);
    assert_int_equal(status, 200);
    json_object *b = NULL;
    json_object_object_get_ex(o, "budget", &b);
    assert_non_null(b);
    json_object_get(b);
    json_object_put(o);
    return b;
}

static int setup_day(void **state)
{
    (void)state;
    struct stack_options o = {
        .workers = 4, .reconcile_seconds = 2, .env = {"CCSYNC_CC_DAILY_LIMIT=600"}};
    return stack_start("test-budget", &o);
}

static void test_twenty_associations_share_a_small_day(void **state)
{
    (void)state;
    time_t day = time(NULL) / 86400;
    /* CC's own quota the same as ccsync's: running the day out would show. */
    sim_void("POST", "/__sim/config", "{\"daily_limit\":600}");
    for (int i = 1; i < N_ASSOC; i++) {
        char a[32];
        assoc_name(i, a, sizeof a);
        put_association(a);
    }
    for (int i = 0; i < N_ASSOC; i++) {
        char a[32];
        assoc_name(i, a, sizeof a);
        send_group_of(a);
    }
    long deadline = ts_now_ms() + WAIT_MS;
    while (!all_synced()) {
        if (ts_now_ms() > deadline)
            fail_msg("not every association converged");
        ts_sleep_ms(200);
    }
    /* A while of idling with reconcile's floor at 2 s: before the budget was
     * planned, that was 20 list reads every 2 s. */
    long long lists_before = cc_endpoint("GET /v3/contact_lists");
    ts_sleep_ms(20000);
    long long lists_idle = cc_endpoint("GET /v3/contact_lists") - lists_before;

    /* Every list holds exactly its members. */
    for (int i = 0; i < N_ASSOC; i++) {
        char a[32], buf[1024], want[1024] = "";
        assoc_name(i, a, sizeof a);
        json_object *gs = group_of(a);
        for (int m = 0; m < MEMBERS; m++) {
            size_t len = strlen(want);
            snprintf(want + len, sizeof want - len, "%sm%d.%s@example.org", m ? "," : "", m, a);
        }
        assert_string_equal(cc_members(gs_list_id(gs), buf, sizeof buf, NULL, 0), want);
        assert_null(error_code(gs));
        json_object_put(gs);
    }
    /* The day's counts start again at 00:00 UTC: a run across it cannot judge them. */
    if (time(NULL) / 86400 != day) {
        print_message("the UTC day changed during the test: its counts are not judged\n");
        skip();
    }
    json_object *b = status_budget();
    long long used = jint(b, "used_today"), reconcile = jpath_int(b, "by_class.reconcile");
    print_message("budget: %s; list reads while idle: %lld\n", json_object_to_json_string(b),
                  lists_idle);
    /* No quota: ccsync kept under its ceiling, and CC never said quota_exceeded. */
    assert_int_equal(jint(b, "limit"), DAILY_LIMIT);
    assert_true(used < DAILY_LIMIT * 95 / 100);
    assert_int_equal(cc_counter("quota_exceeded"), 0);
    /* Reconcile within its share: what it may have used by now (its part of the
     * day so far plus an hour's), and ccsim saw no more list reads than that
     * plus the one read of names before the lists were created. */
    assert_true(reconcile <= (long long)(SHARE * DAILY_LIMIT * 2 / 24) + 1);
    assert_true(lists_idle <= reconcile);
    assert_true(cc_endpoint("GET /v3/contact_lists") <= N_ASSOC + reconcile);
    assert_int_equal(jpath_int(b, "by_class.changes") + jpath_int(b, "by_class.full_sync") +
                         reconcile + jpath_int(b, "by_class.refresh"),
                     used);
    json_object_put(b);

    /* Fairness: each association got about the same part of the day. */
    redisContext *c = peek_connect(stack.redis_port);
    struct ratelimit_conf rc = {.rate_per_sec = 100, .daily_limit = DAILY_LIMIT};
    snprintf(rc.app, sizeof rc.app, "ccsync-test");
    redisReply *pairs = NULL;
    assert_int_equal(ratelimit_by_association(c, &rc, &pairs), 0);
    assert_int_equal(pairs->elements, 2 * N_ASSOC);
    long lo = 1L << 30, hi = 0;
    for (size_t i = 0; i + 1 < pairs->elements; i += 2) {
        long n = strtol(pairs->element[i + 1]->str, NULL, 10);
        lo = n < lo ? n : lo;
        hi = n > hi ? n : hi;
    }
    print_message("requests per association: %ld..%ld\n", lo, hi);
    assert_true(lo > 0);
    assert_true(hi <= 2 * lo);
    freeReplyObject(pairs);
    redisFree(c);
}

/* ---- an asked reconcile ---- */

/* A read token of ASSOC (the status page's kind). */
static void read_token(char *out, size_t size)
{
    struct reply r = api("POST", "/v1/associations/" ASSOC "/tokens", "{\"scope\":\"read\"}");
    assert_int_equal(r.status, 201);
    snprintf(out, size, "%s", jstr(r.json, "token"));
    reply_free(&r);
}

static struct reply ask_reconcile(const char *token)
{
    char url[256], auth[300];
    snprintf(url, sizeof url, "%s/v1/associations/" ASSOC "/reconcile", stack.base[0]);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
    const char *headers[] = {auth, NULL};
    return http("POST", url, headers, NULL);
}

static void test_asked_reconcile_is_done_within_minutes_and_once_a_minute(void **state)
{
    (void)state;
    char token[128], list_id[128], path[256];
    read_token(token, sizeof token);
    send_group("board", "Board", true, 1);
    send_members("board", 2, 1, member("m1", "ann@example.org", "Ann", "Lee", NULL));
    wait_synced_list("board", list_id, sizeof list_id);
    /* One association on 600 a day: reconcile's share allows one every 720 s,
     * so none comes by itself during this test. */
    snprintf(path, sizeof path, "/__sim/lists/%s/delete", list_id);
    sim_void("POST", path, NULL);
    int reconciled = stack_log_count(0, LOG_RECONCILED);

    long long t0 = ts_now_ms();
    struct reply r = ask_reconcile(token);
    assert_int_equal(r.status, 202);
    assert_string_equal(jstr(r.json, "status"), "reconcile_queued");
    assert_string_equal(jstr(r.json, "association_id"), ASSOC);
    char first_at[40], first_done_by[40];
    snprintf(first_at, sizeof first_at, "%s", jstr(r.json, "reconcile_at"));
    snprintf(first_done_by, sizeof first_done_by, "%s", jstr(r.json, "done_by"));
    reply_free(&r);
    json_object *gs = wait_group_error("board", "list_deleted_in_constant_contact", "error");
    json_object_put(gs);
    assert_true(ts_now_ms() - t0 < 120000);
    wait_log_count(0, LOG_RECONCILED, reconciled + 1, WAIT_MS);

    /* Asked again within the minute: the standing ask answers (the same times),
     * and no reconcile is made. */
    r = ask_reconcile(token);
    assert_int_equal(r.status, 202);
    assert_string_equal(jstr(r.json, "status"), "reconcile_already_queued");
    assert_string_equal(jstr(r.json, "reconcile_at"), first_at);
    assert_string_equal(jstr(r.json, "done_by"), first_done_by);
    reply_free(&r);
    ts_sleep_ms(5000);
    assert_int_equal(stack_log_count(0, LOG_RECONCILED), reconciled + 1);
}

static int setup_one(void **state)
{
    (void)state;
    struct stack_options o = {.reconcile_seconds = 2, .env = {"CCSYNC_CC_DAILY_LIMIT=600"}};
    return stack_start("test-budget", &o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_twenty_associations_share_a_small_day, setup_day,
                                        stack_stop),
        cmocka_unit_test_setup_teardown(
            test_asked_reconcile_is_done_within_minutes_and_once_a_minute, setup_one, stack_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
