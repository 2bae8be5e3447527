/*
 * test_members.c (integration) - why each member is, or is not, on the list:
 * GET .../groups/{g}/members with every status and its detail, the duplicate's
 * holder, filters and paging by UniqueID, the CSV report, and a group in error
 * whose counts and members keep following Novi while no CC work is done;
 * one member in every group, and its last events, applied or ignored and why.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "ccsim_client.h"
#include "novi.h"
#include "stack.h"
#include "status.h"
#include "testsupport.h"

#define MEMBERS "/v1/associations/" ASSOC "/groups/board/members"

static int setup_reconcile(void **state)
{
    (void)state;
    struct stack_options o = {.reconcile_seconds = 1};
    return stack_start("test-members", &o);
}

/* "id:status" of each member of a page, in order, comma-separated. */
static const char *page_summary(json_object *page, char *out, size_t size)
{
    json_object *list = jget(page, "members");
    assert_non_null(list);
    out[0] = '\0';
    for (size_t i = 0; i < json_object_array_length(list); i++) {
        json_object *m = json_object_array_get_idx(list, i);
        size_t len = strlen(out);
        snprintf(out + len, size - len, "%s%s:%s", i ? "," : "", jstr(m, "unique_id"),
                 jstr(m, "status"));
    }
    return out;
}

static json_object *members_page(const char *query, long want_status)
{
    char path[256];
    snprintf(path, sizeof path, MEMBERS "%s", query);
    long status;
    json_object *o = api_json("GET", path, NULL, &status);
    if (status != want_status)
        fail_msg("GET %s: %ld, want %ld", path, status, want_status);
    return o;
}

/* The member with unique_id in page. */
static json_object *member_of(json_object *page, const char *id)
{
    json_object *list = jget(page, "members");
    for (size_t i = 0; i < json_object_array_length(list); i++)
        if (strcmp(jstr(json_object_array_get_idx(list, i), "unique_id"), id) == 0)
            return json_object_array_get_idx(list, i);
    fail_msg("no member %s in the page", id);
    return NULL;
}

/* The fourteen members of test_sync's reasons test: every status once or more. */
static void send_every_reason(void)
{
    sim_void("POST", "/__sim/seed", "{\"contacts\":[{\"email\":\"gone@example.org\"}]}");
    sim_void("POST", "/__sim/unsubscribe", "{\"email\":\"gone@example.org\"}");
    send_group("board", "Board", true, 1);
    send_members(
        "board", 2, 14,
        "{\"UniqueID\":\"c1\",\"Email\":\"shared@example.org\",\"Company\":\"Acme\","
        "\"CustomerType\":\"Company\"}",
        member("p1", "SHARED@example.org", "Pat", "Doe", NULL),
        member("z9", "twin@example.org", "Zed", "Nine", NULL),
        member("a1", "twin@example.org", "Al", "One", NULL),
        "{\"UniqueID\":\"n1\",\"FirstName\":\"No\"}", "{\"UniqueID\":\"n2\",\"Email\":\"  \"}",
        "{\"UniqueID\":\"n3\",\"Email\":null}", member("i1", "not-an-email", "In", "Valid", NULL),
        member("i2", "two@@example.org", "In", "Valid", NULL),
        member("d1", "quiet@example.org", "Qu", "Iet", ",\"DoNotSendMarketingEmails\":true"),
        member("u1", "gone@example.org", "Go", "Ne", NULL),
        member("r1", "dot.@example.org", "Do", "T", NULL),
        member("k1", "kim@example.org", "Kim", "Ok", NULL),
        member("k2", "lou@example.org", "Lou", "Ok", NULL));
}

static void test_every_member_has_its_status_and_why(void **state)
{
    (void)state;
    char buf[1024];
    send_every_reason();
    json_object *gs = wait_synced("board");
    assert_counts(gs, 14, 3, 2, 2, 1, 1, 1, 4);
    json_object_put(gs);
    long long before = cc_requests();
    json_object *page = members_page("", 200);
    assert_string_equal(page_summary(page, buf, sizeof buf),
                        "a1:in_list,c1:duplicate_email,d1:do_not_email,i1:invalid_email,"
                        "i2:invalid_email,k1:in_list,k2:in_list,n1:no_email,n2:no_email,"
                        "n3:no_email,p1:in_list,r1:rejected,u1:unsubscribed,z9:duplicate_email");
    assert_null(jget(page, "next_cursor"));
    json_object *c1 = member_of(page, "c1"), *z9 = member_of(page, "z9");
    assert_string_equal(jstr(c1, "name"), "Acme");
    assert_string_equal(jstr(c1, "duplicate_of"), "p1");
    assert_string_equal(jstr(z9, "duplicate_of"), "a1");
    assert_string_equal(jstr(z9, "email"), "twin@example.org");
    assert_string_equal(jstr(z9, "since"), "2026-01-01T00:00:02Z");
    assert_string_equal(jstr(member_of(page, "p1"), "name"), "Pat Doe");
    assert_null(jget(member_of(page, "p1"), "detail"));
    assert_null(jget(member_of(page, "p1"), "duplicate_of"));
    assert_null(jget(member_of(page, "n1"), "email"));
    assert_string_equal(jstr(member_of(page, "u1"), "detail"),
                        "the contact unsubscribed in Constant Contact; ccsync never adds it back");
    assert_non_null(strstr(jstr(member_of(page, "r1"), "detail"), "refused"));
    assert_string_equal(jstr(member_of(page, "d1"), "detail"),
                        "DoNotSendMarketingEmails is set in Novi");
    json_object_put(page);
    assert_int_equal(cc_requests(), before); /* the member view asks CC nothing */
}

static void test_members_are_filtered_and_paged_by_unique_id(void **state)
{
    (void)state;
    char buf[1024];
    send_every_reason();
    json_object_put(wait_synced("board"));
    json_object *page = members_page("?status=no_email,invalid_email&limit=2", 200);
    assert_string_equal(page_summary(page, buf, sizeof buf), "i1:invalid_email,i2:invalid_email");
    char next[64];
    snprintf(next, sizeof next, "%s", jstr(page, "next_cursor"));
    assert_string_equal(next, "i2");
    json_object_put(page);
    page = members_page("?status=no_email,invalid_email&limit=2&cursor=i2", 200);
    assert_string_equal(page_summary(page, buf, sizeof buf), "n1:no_email,n2:no_email");
    assert_string_equal(jstr(page, "next_cursor"), "n2");
    json_object_put(page);
    page = members_page("?status=no_email,invalid_email&limit=2&cursor=n2", 200);
    assert_string_equal(page_summary(page, buf, sizeof buf), "n3:no_email");
    assert_null(jget(page, "next_cursor"));
    json_object_put(page);
    /* refused before Redis is asked */
    const char *bad[] = {"?status=gone", "?status=", "?limit=0", "?limit=1001", "?cursor=a%20b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        page = members_page(bad[i], 400);
        assert_string_equal(jpath_str(page, "error.code"), "invalid_parameter");
        json_object_put(page);
    }
    page = members_page("", 200);
    json_object_put(page);
    long status;
    page = api_json("GET", "/v1/associations/" ASSOC "/groups/nope/members", NULL, &status);
    assert_int_equal(status, 404);
    assert_string_equal(jpath_str(page, "error.code"), "unknown_group");
    json_object_put(page);
}

static void test_the_csv_report_has_the_same_rows(void **state)
{
    (void)state;
    send_group("board", "Board", true, 1);
    send_members("board", 2, 3, member("m1", "ann@example.org", "Ann", "Lee", NULL),
                 "{\"UniqueID\":\"m2\",\"Email\":\"ANN@example.org\",\"FirstName\":\"=cmd\","
                 "\"LastName\":\"\\\"Quoted, Name\\\"\"}",
                 "{\"UniqueID\":\"m3\",\"FirstName\":\"No\"}");
    json_object_put(wait_synced("board"));
    char url[512];
    snprintf(url, sizeof url, "%s" MEMBERS, stack.base[0]);
    const char *headers[] = {"Authorization: Bearer " ADMIN_TOKEN, "Accept: text/csv", NULL};
    struct reply r = http("GET", url, headers, NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.headers, "text/csv"));
    assert_string_equal(
        r.body,
        "unique_id,name,email,status,detail,duplicate_of,since\r\n"
        "m1,Ann Lee,ann@example.org,in_list,,,2026-01-01T00:00:02Z\r\n"
        "m2,\"'=cmd \"\"Quoted, Name\"\"\",ANN@example.org,duplicate_email,"
        "another member of the group has the same email address,m1,2026-01-01T00:00:02Z\r\n"
        "m3,No,,no_email,the member has no email address in Novi,,2026-01-01T00:00:02Z\r\n");
    reply_free(&r);
}

/* The list is deleted in CC, then a member joins: the group stays in error,
 * but its counts and member view follow Novi, and CC is asked nothing. */
static void test_a_group_in_error_keeps_its_counts_true(void **state)
{
    (void)state;
    char buf[1024], path[256], list_id[128];
    send_group("board", "Board", true, 1);
    send_members("board", 2, 2, member("m1", "ann@example.org", "Ann", "Lee", NULL),
                 member("m2", "bob@example.org", "Bob", "Ray", NULL));
    wait_synced_list("board", list_id, sizeof list_id);
    snprintf(path, sizeof path, "/__sim/lists/%s/delete", list_id);
    sim_void("POST", path, NULL);
    json_object *gs = wait_group_error("board", "list_deleted_in_constant_contact", "error");
    /* The worker records the error, then recounts (lists_mark_deleted): a read in
     * between still has the synced list's pending 0. */
    long long deadline = ts_now_ms() + WAIT_MS;
    long status;
    while (jint(gs, "pending_changes") != 2 && ts_now_ms() < deadline) {
        json_object_put(gs);
        ts_sleep_ms(50);
        gs = get_group("board", &status);
    }
    /* nothing is on a deleted list: both wait for a resync */
    assert_counts(gs, 2, 0, 0, 0, 0, 0, 0, 2);
    assert_int_equal(jint(gs, "pending_changes"), 2);
    json_object_put(gs);

    send_customer(member("m3", "cy@example.org", "Cy", "Lo", groups_of("board")), 3);
    send_customer(member("m4", NULL, "Di", "No", groups_of("board")), 3);
    wait_folded();
    deadline = ts_now_ms() + WAIT_MS;
    for (;;) {
        gs = get_group("board", &status);
        if (jpath_int(gs, "counts.members") == 4 || ts_now_ms() > deadline)
            break;
        json_object_put(gs);
        ts_sleep_ms(50);
    }
    assert_state(gs, "error");
    assert_string_equal(error_code(gs), "list_deleted_in_constant_contact");
    assert_counts(gs, 4, 1, 0, 0, 0, 0, 0, 3);
    assert_int_equal(jint(gs, "pending_changes"), 3);
    json_object_put(gs);
    json_object *page = members_page("", 200);
    assert_string_equal(page_summary(page, buf, sizeof buf),
                        "m1:pending,m2:pending,m3:pending,m4:no_email");
    assert_string_equal(jstr(member_of(page, "m3"), "detail"),
                        "waits for a resync: the group's list was deleted in Constant Contact");
    json_object_put(page);
    wait_reconcile_rounds(2);
    assert_int_equal(cc_endpoint("POST /v3/contact_lists"), 1); /* no list made on its own */
    assert_int_equal(cc_imports(), 1);
}

/* "Why is this member not on the list?", asked of the member: every group. */
static void test_one_member_in_every_group(void **state)
{
    (void)state;
    send_group("board", "Board", true, 1);
    send_group("club", "Club", true, 1);
    send_group("quiet", "Quiet", false, 1);
    send_members("board", 2, 2, member("m1", "ann@example.org", "Ann", "Lee", NULL),
                 member("m2", "ANN@example.org", "Fay", "Lee", NULL));
    send_members("club", 2, 1, member("m2", "ANN@example.org", "Fay", "Lee", NULL));
    send_members("quiet", 2, 1, member("m2", "ANN@example.org", "Fay", "Lee", NULL));
    json_object_put(wait_synced("board"));
    json_object_put(wait_synced("club"));
    long status;
    json_object *m = api_json("GET", "/v1/associations/" ASSOC "/members/m2", NULL, &status);
    assert_int_equal(status, 200);
    assert_string_equal(jstr(m, "unique_id"), "m2");
    assert_string_equal(jstr(m, "name"), "Fay Lee");
    assert_string_equal(jstr(m, "email"), "ANN@example.org");
    assert_int_equal(json_object_array_length(jget(m, "groups")), 3);
    assert_string_equal(jpath_str(m, "groups.0.group_id"), "board");
    assert_string_equal(jpath_str(m, "groups.0.status"), "duplicate_email");
    assert_string_equal(jpath_str(m, "groups.0.duplicate_of"), "m1");
    assert_string_equal(jpath_str(m, "groups.1.group_id"), "club");
    assert_string_equal(jpath_str(m, "groups.1.group_name"), "Club");
    assert_string_equal(jpath_str(m, "groups.1.status"), "in_list");
    assert_null(jpath(m, "groups.1.detail"));
    assert_string_equal(jpath_str(m, "groups.2.group_id"), "quiet");
    assert_null(jpath(m, "groups.2.status"));
    assert_string_equal(jpath_str(m, "groups.2.detail"),
                        "the group does not sync to Constant Contact");
    json_object_put(m);
    m = api_json("GET", "/v1/associations/" ASSOC "/members/nobody", NULL, &status);
    assert_int_equal(status, 404);
    assert_string_equal(jpath_str(m, "error.code"), "unknown_member");
    json_object_put(m);
}

/* ---- a member's last events ---- */

/* GET .../members/{id} (200 asserted); the caller frees it. */
/* GET .../members/{id}: its answer, and its status in *status. */
static json_object *member_try(const char *id, long *status)
{
    char path[256];
    snprintf(path, sizeof path, "/v1/associations/" ASSOC "/members/%s", id);
    return api_json("GET", path, NULL, status);
}

static json_object *member_get(const char *id)
{
    long status;
    json_object *m = member_try(id, &status);
    if (status != 200)
        fail_msg("GET .../members/%s: %ld", id, status);
    return m;
}

/* Polls the member until its history has entry i (404 while its events are
 * still queued); the last answer. */
static json_object *member_with_event(const char *id, int i)
{
    char want[16];
    snprintf(want, sizeof want, "events.%d", i);
    json_object *m = NULL;
    long status = 0;
    for (int tries = 0; tries < 500; tries++) {
        json_object_put(m);
        m = member_try(id, &status);
        if (status == 200 && jpath(m, want))
            return m;
        usleep(20000);
    }
    fail_msg("member %s has no %s (last answer %ld)", id, want, status);
    return m;
}

struct latest {
    const char *member, *event_id;
};

static bool latest_is(void *arg)
{
    struct latest *l = arg;
    char path[256];
    long status;
    snprintf(path, sizeof path, "/v1/associations/" ASSOC "/members/%s", l->member);
    json_object *m = api_json("GET", path, NULL, &status);
    const char *id = status == 200 ? jpath_str(m, "events.0.event_id") : NULL;
    bool done = id && strcmp(id, l->event_id) == 0;
    json_object_put(m);
    return done;
}

/* Waits until member's newest event is event_id, so the next event is folded after it. */
static void wait_latest(const char *member, const char *event_id)
{
    struct latest l = {member, event_id};
    if (!ts_wait_for(latest_is, &l, 10000, 20))
        fail_msg("%s's newest event never became %s", member, event_id);
}

/* customer.updated of record at T0 + at under webhook-id id; asserts the answer. */
static void post_customer(const char *id, const char *record, long long at, long want)
{
    char *body = envelope("customer.updated", record, at);
    long status = post_webhook(id, body);
    free(body);
    if (status != want)
        fail_msg("webhook %s: %ld, want %ld", id, status, want);
}

/* "outcome: why" of a member's event i. */
static const char *event_said(json_object *m, int i, char *out, size_t size)
{
    char path[64], why[64];
    snprintf(path, sizeof path, "events.%d.outcome", i);
    snprintf(why, sizeof why, "events.%d.why", i);
    snprintf(out, size, "%s: %s", jpath_str(m, path), jpath_str(m, why));
    return out;
}

static void test_a_member_s_events_say_applied_or_ignored_and_why(void **state)
{
    (void)state;
    send_group("board", "Board", true, 1);
    send_group("finance", "Finance", true, 1);
    wait_folded(); /* the history names the groups: both known before Ann's events */
    const char *ann_both =
        member("m1", "ann@example.org", "Ann", "Lee", groups_of("board,finance"));
    const char *ann_board = member("m1", "ann@example.org", "Ann", "Lee", groups_of("board"));
    const char *ann_finance = member("m1", "ann@example.org", "Ann", "Lee", groups_of("finance"));
    post_customer("ev-first", ann_both, 10, 202);
    wait_latest("m1", "ev-first");
    post_customer("ev-newer", ann_board, 20, 202);
    wait_latest("m1", "ev-newer");
    post_customer("ev-older", ann_finance, 5, 202);
    wait_latest("m1", "ev-older");
    /* a redelivery is answered "duplicate" and never folded: not in the history */
    post_customer("ev-first", ann_both, 10, 200);
    post_customer("ev-same", ann_board, 30, 202);
    wait_latest("m1", "ev-same");

    json_object *m = member_get("m1");
    char said[160];
    assert_int_equal(json_object_array_length(jget(m, "events")), 4);
    assert_string_equal(jpath_str(m, "events.0.event_id"), "ev-same");
    assert_string_equal(event_said(m, 0, said, sizeof said),
                        "applied: the same as the stored fact");
    assert_string_equal(jpath_str(m, "events.1.event_id"), "ev-older");
    assert_string_equal(event_said(m, 1, said, sizeof said), "ignored: older than the stored fact");
    assert_string_equal(jpath_str(m, "events.1.at"), "2026-01-01T00:00:05Z");
    assert_string_equal(jpath_str(m, "events.2.event_id"), "ev-newer");
    assert_string_equal(event_said(m, 2, said, sizeof said), "applied: left Finance");
    assert_string_equal(jpath_str(m, "events.3.event_id"), "ev-first");
    assert_string_equal(event_said(m, 3, said, sizeof said),
                        "applied: joined Board, Finance, new record");
    assert_string_equal(jpath_str(m, "events.3.type"), "customer.updated");
    assert_string_equal(jpath_str(m, "events.3.at"), "2026-01-01T00:00:10Z");
    const char *received = jpath_str(m, "events.3.received_at");
    assert_non_null(received);
    assert_int_equal(strncmp(received, "20", 2), 0); /* RFC 3339, ending in Z */
    assert_int_equal(received[strlen(received) - 1], 'Z');
    json_object_put(m);
}

static void test_only_the_last_twenty_events_are_kept(void **state)
{
    (void)state;
    send_group("board", "Board", true, 1);
    for (int i = 1; i <= 25; i++) {
        char id[32], first[32];
        snprintf(id, sizeof id, "ev-%02d", i);
        snprintf(first, sizeof first, "Ann%d", i);
        post_customer(id, member("m1", "ann@example.org", first, "Lee", groups_of("board")), 10 + i,
                      202);
        wait_latest("m1", id);
    }
    json_object *m = member_get("m1");
    json_object *events = jget(m, "events");
    assert_int_equal(json_object_array_length(events), 20);
    for (int i = 0; i < 20; i++) {
        char id[32];
        snprintf(id, sizeof id, "ev-%02d", 25 - i);
        json_object *e = json_object_array_get_idx(events, (size_t)i);
        assert_string_equal(jstr(e, "event_id"), id);
        assert_string_equal(jstr(e, "outcome"), "applied");
        assert_string_equal(jstr(e, "why"), "record updated");
    }
    json_object_put(m);
}

/* A snapshot records only the members whose membership it changed. */
static void test_a_snapshot_records_only_who_joined_or_left(void **state)
{
    (void)state;
    send_group("board", "Board", true, 1);
    wait_folded(); /* the history names the group: known before the snapshots */
    const char *ann = member("m1", "ann@example.org", "Ann", "Lee", NULL);
    const char *bob = member("m2", "bob@example.org", "Bob", "Ray", NULL);
    send_members("board", 10, 2, ann, bob);
    json_object_put(member_with_event("m2", 0)); /* both folded */
    send_members("board", 20, 2, ann, bob);      /* changes nobody: no entry */
    send_members("board", 30, 1, bob);           /* Ann left */
    json_object *m = member_with_event("m1", 1);
    char said[160];
    assert_int_equal(json_object_array_length(jget(m, "events")), 2);
    assert_string_equal(jpath_str(m, "events.0.type"), "group.members");
    assert_string_equal(event_said(m, 0, said, sizeof said),
                        "applied: left Board (not in the snapshot)");
    assert_string_equal(event_said(m, 1, said, sizeof said), "applied: joined Board, new record");
    json_object_put(m);
    m = member_get("m2");
    assert_int_equal(json_object_array_length(jget(m, "events")), 1);
    json_object_put(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_every_member_has_its_status_and_why, stack_setup,
                                        stack_stop),
        cmocka_unit_test_setup_teardown(test_members_are_filtered_and_paged_by_unique_id,
                                        stack_setup, stack_stop),
        cmocka_unit_test_setup_teardown(test_the_csv_report_has_the_same_rows, stack_setup,
                                        stack_stop),
        cmocka_unit_test_setup_teardown(test_one_member_in_every_group, stack_setup, stack_stop),
        cmocka_unit_test_setup_teardown(test_a_member_s_events_say_applied_or_ignored_and_why,
                                        stack_setup, stack_stop),
        cmocka_unit_test_setup_teardown(test_only_the_last_twenty_events_are_kept, stack_setup,
                                        stack_stop),
        cmocka_unit_test_setup_teardown(test_a_snapshot_records_only_who_joined_or_left,
                                        stack_setup, stack_stop),
        cmocka_unit_test_setup_teardown(test_a_group_in_error_keeps_its_counts_true,
                                        setup_reconcile, stack_stop),
    };
    const char *filter = getenv("TEST_FILTER");
    if (filter && *filter)
        cmocka_set_test_filter(filter);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
