/*
 * test_sync.c (integration) - the sync engine end to end: real redis-server, the
 * Constant Contact simulator (ccsim) and ccsyncd, driven over HTTP with signed
 * Novi webhooks, one test per behaviour of the sync (docs/), plus redelivered and
 * out-of-order events.
 *
 * Every test gets its own redis-server, ccsim and ccsyncd on free loopback ports
 * and the association "acme" connected with ccsim's development token. Tests
 * assert exactly: the emails on each CC list (ccsim's state dump), list names,
 * GroupStatus (state, counts, list, error code) and the audit log in order.
 *
 * The stack, ccsim's control API, Novi events and the status assertions are
 * tests/support's (stack.h, ccsim_client.h, novi.h, status.h); logs of each
 * test's processes go to /tmp/ccsync-test-sync-<pid>/. Only the tests of pacing
 * (setup_limits) run ccsync at production's 4 requests/s; the others at a high rate.
 *
 * Waiting is bounded only so that a broken engine cannot hang the suite; no
 * test asserts speed. A create whose answer is lost (30 s of ccsyncd's CC
 * timeout each) is test_lost_create.c's, so that the suite runs it side by side.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ccsim_client.h"
#include "members.h"
#include "novi.h"
#include "stack.h"
#include "status.h"
#include "testsupport.h"

/* Tests of pacing: ccsync at production's 4 requests/s, ccsim allowing 5 (a
 * quarter for the machine's jitter); they assert that CC never throttled ccsync. (At 4
 * in ccsim too, a loaded machine that delays one request's arrival by 250 ms
 * bunches it with the next into a 429 that pacing could not have avoided.) */
static int setup_limits(void **state)
{
    (void)state;
    struct stack_options o = {.sim_rate = 5, .cc_rate = 4};
    return stack_start("test-sync", &o);
}

/* Reconcile every second. */
static int setup_reconcile(void **state)
{
    (void)state;
    /* A budget so large that reconcile's share allows the 1 s floor. */
    struct stack_options o = {.reconcile_seconds = 1, .env = {"CCSYNC_CC_DAILY_LIMIT=100000000"}};
    return stack_start("test-sync", &o);
}

/* A coalescing window of 1.5 s, so that changes posted one after another are
 * folded into the same window even on a loaded machine (100 ms is not). */
static int setup_wide_window(void **state)
{
    (void)state;
    struct stack_options o = {.sync_delay_ms = 1500};
    return stack_start("test-sync", &o);
}

/* No credentials stored yet, only the webhook secret: the test PUTs tokens. */
static int setup_no_token(void **state)
{
    (void)state;
    struct stack_options o = {.connect = STACK_SECRET_ONLY};
    return stack_start("test-sync", &o);
}

/* The group "board" ("Board", sync on) at T0+1 with members (T0+2). */
#define BOARD_ON() send_group("board", "Board", true, 1)

/* ==== §1.1 connection ==== */

static const char *assoc_state(void)
{
    static char st[64];
    struct reply r = api("GET", "/v1/associations/" ASSOC, NULL);
    assert_int_equal(r.status, 200);
    snprintf(st, sizeof st, "%s", jstr(jget(r.json, "constant_contact"), "state"));
    reply_free(&r);
    return st;
}

static void test_connection_shows_connected_after_a_sync(void **state)
{
    (void)state;
    assert_string_equal(assoc_state(), "unverified");
    BOARD_ON();
    send_members("board", 2, 1, member("m1", "ann@example.org", "Ann", "Lee", NULL));
    json_object *gs = wait_synced("board");
    assert_state(gs, "synced");
    assert_string_equal(assoc_state(), "connected");
    char buf[512];
    assert_string_equal(cc_members(gs_list_id(gs), buf, sizeof buf, NULL, 0), "ann@example.org");
    json_object_put(gs);
}

static void test_connection_expired_token_is_refreshed_and_sync_goes_on(void **state)
{
    (void)state;
    char access[256], refresh[256];
    mint_tokens(access, refresh);
    put_tokens(access, refresh);
    BOARD_ON();
    send_members("board", 2, 1, member("m1", "ann@example.org", "Ann", "Lee", NULL));
    json_object *gs = wait_synced("board");
    assert_state(gs, "synced");
    char list_id[128], buf[512];
    snprintf(list_id, sizeof list_id, "%s", gs_list_id(gs));
    json_object_put(gs);
    assert_int_equal(cc_counter("unauthorized"), 0);

    /* CC revokes the access token (it expired early); the refresh token still works. */
    sim_void("POST", "/__sim/tokens/expire", "{}");
    send_customer(member("m2", "bob@example.org", "Bob", "Ray", groups_of("board")), 3);
    gs = wait_synced("board");
    assert_state(gs, "synced");
    assert_null(error_code(gs));
    assert_string_equal(gs_list_id(gs), list_id);
    assert_string_equal(cc_members(list_id, buf, sizeof buf, NULL, 0),
                        "ann@example.org,bob@example.org");
    json_object_put(gs);
    assert_int_equal(cc_counter("unauthorized"), 1); /* one 401, then the refreshed token */
    assert_string_equal(assoc_state(), "connected");
}

static void test_connection_invalid_refresh_token_until_new_tokens_are_put(void **state)
{
    (void)state;
    char access[256], refresh[256], buf[512];
    mint_tokens(access, refresh);
    put_tokens(access, refresh);
    BOARD_ON();
    send_members("board", 2, 1, member("m1", "ann@example.org", "Ann", "Lee", NULL));
    char list_id[128];
    wait_synced_list("board", list_id, sizeof list_id);

    /* Access and refresh tokens both spent: the account must be reconnected. */
    sim_void("POST", "/__sim/tokens/expire", "{\"refresh\":true}");
    send_customer(member("m2", "bob@example.org", "Bob", "Ray", groups_of("board")), 3);
    json_object *gs = wait_group_error("board", "constant_contact_unauthorized", "error");
    json_object_put(gs);
    assert_string_equal(assoc_state(), "unauthorized");
    assert_string_equal(cc_members(list_id, buf, sizeof buf, NULL, 0), "ann@example.org");

    /* An admin reconnects: the error clears and the pending change goes through. */
    mint_tokens(access, refresh);
    put_tokens(access, refresh);
    gs = wait_synced("board");
    assert_state(gs, "synced");
    assert_null(error_code(gs));
    assert_string_equal(gs_list_id(gs), list_id);
    assert_counts(gs, 2, 0, 0, 0, 0, 0, 0, 2);
    json_object_put(gs);
    assert_string_equal(cc_members(list_id, buf, sizeof buf, NULL, 0),
                        "ann@example.org,bob@example.org");
    assert_string_equal(assoc_state(), "connected");
}

/* ==== §1.2 naming ==== */

static void test_naming_takes_first_free_name(void **state)
{
    (void)state;
    sim_void("POST", "/__sim/seed", "{\"lists\":[\"Board\",\"Club\",\"Club - 1\"]}");
    send_group("board", "Board", true, 1);
    send_members("board", 2, 1, member("m1", "ann@example.org", "Ann", "Lee", NULL));
    json_object *gs = wait_synced("board");
    assert_string_equal(gs_list_name(gs), "Board - 1");
    char buf[512], name[256];
    assert_string_equal(cc_members(gs_list_id(gs), buf, sizeof buf, name, sizeof name),
                        "ann@example.org");
    assert_string_equal(name, "Board - 1");
    json_object_put(gs);

    send_group("club", "Club", true, 3);
    send_members("club", 4, 1, member("m2", "bob@example.org", "Bob", "Ray", NULL));
    gs = wait_synced("club");
    assert_string_equal(gs_list_name(gs), "Club - 2");
    json_object_put(gs);

    /* "Board" and "Board - 1" are taken now: a second group named Board gets "Board - 2". */
    send_group("board2", "Board", true, 5);
    send_members("board2", 6, 1, member("m3", "cy@example.org", "Cy", "Lo", NULL));
    gs = wait_synced("board2");
    assert_string_equal(gs_list_name(gs), "Board - 2");
    json_object_put(gs);

    send_group("fresh", "Fresh", true, 7);
    send_members("fresh", 8, 1, member("m4", "di@example.org", "Di", "Ma", NULL));
    gs = wait_synced("fresh");
    assert_string_equal(gs_list_name(gs), "Fresh");
    json_object_put(gs);

    assert_string_equal(cc_list_names(NULL, buf, sizeof buf),
                        "Board,Board - 1,Board - 2,Club,Club - 1,Club - 2,Fresh");
    char actions[512];
    assert_string_equal(audit_actions("board2", actions, sizeof actions),
                        "sync_enabled,list_created");
}

/* ==== §1.3 first sync ==== */

static void test_first_sync_puts_every_usable_member_on_the_list(void **state)
{
    (void)state;
    enum { N = 60 };
    char *recs[N];
    size_t cap = 256 + N * 300;
    char *data = malloc(cap);
    size_t len = (size_t)snprintf(data, cap, "{\"UniqueID\":\"big\",\"Members\":[");
    char expected[N * 40];
    size_t elen = 0;
    /* m00..m59: every tenth without email, every tenth (+5) invalid; the rest usable.
     * m01 is a company record. Emails sort as their numbers. */
    const char **usable = calloc(N, sizeof *usable);
    size_t n_usable = 0;
    for (int i = 0; i < N; i++) {
        recs[i] = malloc(300);
        char email[64];
        snprintf(email, sizeof email, "member%02d@example.org", i);
        if (i % 10 == 0)
            snprintf(recs[i], 300, "{\"UniqueID\":\"m%02d\",\"FirstName\":\"F%d\"}", i, i);
        else if (i % 10 == 5)
            snprintf(recs[i], 300, "{\"UniqueID\":\"m%02d\",\"Email\":\"member%02d@nodot\"}", i, i);
        else if (i == 1)
            snprintf(
                recs[i], 300,
                "{\"UniqueID\":\"m%02d\",\"Email\":\" Member01@Example.org \",\"Company\":\"Acme\","
                "\"CustomerType\":\"Company\"}",
                i);
        else
            snprintf(recs[i], 300,
                     "{\"UniqueID\":\"m%02d\",\"Email\":\"%s\",\"FirstName\":\"F%d\",\"LastName\":"
                     "\"L%d\","
                     "\"CustomerType\":\"Person\",\"Active\":true}",
                     i, email, i, i);
        if (i % 10 != 0 && i % 10 != 5) {
            elen += (size_t)snprintf(expected + elen, sizeof expected - elen, "%s%s",
                                     n_usable ? "," : "", email);
            n_usable++;
        }
        len += (size_t)snprintf(data + len, cap - len, "%s%s", i ? "," : "", recs[i]);
        free(recs[i]);
    }
    free(usable);
    snprintf(data + len, cap - len, "]}");
    send_group("big", "Everyone", true, 1);
    send_event("group.members", data, 2);
    free(data);

    json_object *gs = wait_synced("big");
    assert_state(gs, "synced");
    assert_null(error_code(gs));
    assert_string_equal(gs_list_name(gs), "Everyone");
    assert_non_null(jstr(gs, "last_synced_at"));
    assert_counts(gs, N, 6, 6, 0, 0, 0, 0, 48);
    assert_int_equal(n_usable, 48);
    char *buf = malloc(8192);
    assert_string_equal(cc_members(gs_list_id(gs), buf, 8192, NULL, 0), expected);
    assert_string_equal(cc_contact_names(NULL, "member01@example.org", buf, 8192), "Acme _");
    assert_string_equal(cc_contact_names(NULL, "member02@example.org", buf, 8192), "F2 L2");
    free(buf);
    json_object_put(gs);
    /* ccsync paced itself: CC never answered 429 throttled. */
    assert_int_equal(cc_counter("throttled"), 0);
}

/* ==== §1.4 joins, leaves, email and name changes ==== */

static void test_join_leave_email_and_name_changes(void **state)
{
    (void)state;
    char buf[1024];
    BOARD_ON();
    send_members("board", 2, 4, member("m1", "ann@example.org", "Ann", "Lee", NULL),
                 member("m2", "bob@example.org", "Bob", "Ray", NULL),
                 member("m3", "cy@example.org", "Cy", "Lo", NULL),
                 member("m4", "di@example.org", "Di", "Ma", NULL));
    char list_id[128];
    wait_synced_list("board", list_id, sizeof list_id);
    assert_string_equal(cc_members(list_id, buf, sizeof buf, NULL, 0),
                        "ann@example.org,bob@example.org,cy@example.org,di@example.org");

    /* m5 joins (customer.updated with the group), m2 leaves it (still a member
     * of another group), m3 is removed from Novi, m4 turns inactive. */
    send_customer(member("m5", "eve@example.org", "Eve", "Ng", groups_of("board")), 3);
    send_customer(member("m2", "bob@example.org", "Bob", "Ray", groups_of("other")), 3);
    send_event("customer.removed", "{\"UniqueID\":\"m3\"}", 3);
    send_customer("{\"UniqueID\":\"m4\",\"Email\":\"di@example.org\",\"Active\":false,"
                  "\"Groups\":[{\"UniqueID\":\"board\",\"GroupName\":\"Board\"}]}",
                  3);
    json_object *gs = wait_synced("board");
    assert_state(gs, "synced");
    assert_counts(gs, 2, 0, 0, 0, 0, 0, 0, 2);
    assert_string_equal(gs_list_id(gs), list_id);
    json_object_put(gs);
    assert_string_equal(cc_members(list_id, buf, sizeof buf, NULL, 0),
                        "ann@example.org,eve@example.org");

    /* m1 changes email: the old one leaves the list. m5 changes name. */
    send_customer(member("m1", "ann.lee@example.org", "Ann", "Lee", groups_of("board")), 4);
    send_customer(member("m5", "eve@example.org", "Evelyn", "Ng-Smith", groups_of("board")), 4);
    gs = wait_synced("board");
    assert_counts(gs, 2, 0, 0, 0, 0, 0, 0, 2);
    json_object_put(gs);
    assert_string_equal(cc_members(list_id, buf, sizeof buf, NULL, 0),
                        "ann.lee@example.org,eve@example.org");
    assert_string_equal(cc_contact_names(NULL, "eve@example.org", buf, sizeof buf),
                        "Evelyn Ng-Smith");
    assert_string_equal(cc_contact_names(NULL, "ann.lee@example.org", buf, sizeof buf), "Ann Lee");

    /* m3 comes back; m4 turns active again. */
    send_customer(member("m3", "cy@example.org", "Cy", "Lo", groups_of("board")), 5);
    send_customer(member("m4", "di@example.org", "Di", "Ma", groups_of("board")), 5);
    gs = wait_synced("board");
    assert_counts(gs, 4, 0, 0, 0, 0, 0, 0, 4);
    json_object_put(gs);
    assert_string_equal(cc_members(list_id, buf, sizeof buf, NULL, 0),
                        "ann.lee@example.org,cy@example.org,di@example.org,eve@example.org");
    assert_string_equal(cc_list_names(NULL, buf, sizeof buf), "Board");
}

/* ==== §1.5 toggle off, group deleted ==== */

static void test_toggle_off_deletes_the_list_and_audits(void **state)
{
    (void)state;
    char buf[1024], actions[512];
    BOARD_ON();
    send_members("board", 2, 2, member("m1", "ann@example.org", "Ann", "Lee", NULL),
                 member("m2", "bob@example.org", "Bob", "Ray", NULL));
    char list_id[128];
    wait_synced_list("board", list_id, sizeof list_id);
    assert_string_equal(cc_list_names(NULL, buf, sizeof buf), "Board");

    send_group("board", "Board", false, 3);
    json_object *gs = wait_synced("board");
    assert_state(gs, "disabled");
    assert_null(error_code(gs));
    assert_true(json_object_is_type(jget(gs, "list"), json_type_null));
    assert_false(json_object_get_boolean(jget(gs, "sync_enabled")));
    assert_counts(gs, 0, 0, 0, 0, 0, 0, 0, 0); /* no list, nothing counted on it */
    json_object_put(gs);
    wait_cc_list_names("");
    assert_string_equal(audit_actions("board", actions, sizeof actions),
                        "sync_enabled,list_created,sync_disabled,list_deleted");
    char id[128], name[256];
    audit_entry("board", "list_deleted", id, name, sizeof id);
    assert_string_equal(id, list_id);
    assert_string_equal(name, "Board");

    /* A member change while sync is off touches nothing in CC. */
    long long before = cc_requests();
    send_customer(member("m3", "cy@example.org", "Cy", "Lo", groups_of("board")), 4);
    gs = wait_synced("board");
    assert_state(gs, "disabled");
    json_object_put(gs);
    assert_int_equal(cc_requests(), before);
    assert_string_equal(cc_list_names(NULL, buf, sizeof buf), "");

    /* On again: a new list with every member. */
    send_group("board", "Board", true, 5);
    gs = wait_synced("board");
    assert_state(gs, "synced");
    assert_string_equal(gs_list_name(gs), "Board");
    assert_string_not_equal(gs_list_id(gs), list_id);
    assert_string_equal(cc_members(gs_list_id(gs), buf, sizeof buf, NULL, 0),
                        "ann@example.org,bob@example.org,cy@example.org");
    json_object_put(gs);
    assert_string_equal(audit_actions("board", actions, sizeof actions),
                        "sync_enabled,list_created,sync_disabled,list_deleted,sync_enabled,"
                        "list_created");
}

static void test_group_deleted_deletes_the_list_and_keeps_the_audit(void **state)
{
    (void)state;
    char buf[1024], actions[512];
    BOARD_ON();
    send_members("board", 2, 1, member("m1", "ann@example.org", "Ann", "Lee", NULL));
    send_group("club", "Club", true, 1);
    send_members("club", 2, 1, member("m1", "ann@example.org", "Ann", "Lee", NULL));
    char list_id[128];
    wait_synced_list("board", list_id, sizeof list_id);
    json_object_put(wait_synced("club"));
    assert_string_equal(cc_list_names(NULL, buf, sizeof buf), "Board,Club");

    send_event("group.deleted", "{\"UniqueID\":\"board\"}", 3);
    wait_group_gone("board");
    wait_cc_list_names("Club");
    assert_string_equal(audit_actions("board", actions, sizeof actions),
                        "sync_enabled,list_created,group_deleted,list_deleted");
    char id[128], name[256];
    audit_entry("board", "list_deleted", id, name, sizeof id);
    assert_string_equal(id, list_id);
    assert_string_equal(name, "Board");
    struct reply r = api("GET", "/v1/associations/" ASSOC "/groups", NULL);
    assert_int_equal(r.status, 200);
    json_object *groups = jget(r.json, "groups");
    assert_int_equal(json_object_array_length(groups), 1);
    assert_string_equal(jstr(json_object_array_get_idx(groups, 0), "group_id"), "club");
    reply_free(&r);

    /* A late, older event of the deleted group does not bring it (or a list) back. */
    send_group("board", "Board", true, 2);
    send_customer(member("m2", "bob@example.org", "Bob", "Ray", groups_of("board,club")), 2);
    json_object_put(wait_synced("club"));
    ts_sleep_ms(300);
    wait_group_gone("board");
    assert_string_equal(cc_list_names(NULL, buf, sizeof buf), "Club");
    assert_string_equal(audit_actions("board", actions, sizeof actions),
                        "sync_enabled,list_created,group_deleted,list_deleted");
}

/* ==== §1.6 list renamed in CC ==== */

static void test_list_renamed_in_cc_keeps_syncing_by_id(void **state)
{
    (void)state;
    char buf[1024], path[256], actions[512];
    BOARD_ON();
    send_members("board", 2, 1, member("m1", "ann@example.org", "Ann", "Lee", NULL));
    char list_id[128];
    wait_synced_list("board", list_id, sizeof list_id);

    snprintf(path, sizeof path, "/__sim/lists/%s/rename", list_id);
    sim_void("POST", path, "{\"name\":\"Board of Directors\"}");
    long deadline = ts_now_ms() + WAIT_MS;
    json_object *gs;
    for (;;) {
        long status;
        gs = get_group("board", &status);
        if (strcmp(gs_list_name(gs), "Board of Directors") == 0)
            break;
        json_object_put(gs);
        if (ts_now_ms() > deadline)
            fail_msg("the new name did not show");
        ts_sleep_ms(100);
    }
    assert_string_equal(gs_list_id(gs), list_id);
    assert_state(gs, "synced");
    assert_null(error_code(gs));
    json_object_put(gs);
    assert_string_equal(audit_actions("board", actions, sizeof actions),
                        "sync_enabled,list_created,list_renamed_in_constant_contact");
    char id[128], name[256];
    audit_entry("board", "list_renamed_in_constant_contact", id, name, sizeof id);
    assert_string_equal(id, list_id);
    assert_string_equal(name, "Board of Directors");

    send_customer(member("m2", "bob@example.org", "Bob", "Ray", groups_of("board")), 3);
    gs = wait_synced("board");
    assert_string_equal(gs_list_id(gs), list_id);
    assert_string_equal(gs_list_name(gs), "Board of Directors");
    json_object_put(gs);
    assert_string_equal(cc_members(list_id, buf, sizeof buf, NULL, 0),
                        "ann@example.org,bob@example.org");
    assert_string_equal(cc_list_names(NULL, buf, sizeof buf), "Board of Directors");
    /* Later reconcile rounds do not audit the rename again. */
    wait_reconcile_rounds(3); /* two whole rounds */
    assert_string_equal(audit_actions("board", actions, sizeof actions),
                        "sync_enabled,list_created,list_renamed_in_constant_contact");
}

/* ==== §1.7 list deleted in CC ==== */

static void test_list_deleted_in_cc_is_an_error_until_resync(void **state)
{
    (void)state;
    char buf[1024], path[256], actions[512];
    BOARD_ON();
    send_members("board", 2, 2, member("m1", "ann@example.org", "Ann", "Lee", NULL),
                 member("m2", "bob@example.org", "Bob", "Ray", NULL));
    char list_id[128];
    wait_synced_list("board", list_id, sizeof list_id);

    snprintf(path, sizeof path, "/__sim/lists/%s/delete", list_id);
    sim_void("POST", path, NULL);
    sim_void("POST", "/__sim/seed", "{\"lists\":[\"Board - 1\"]}"); /* someone took that name */
    json_object *gs = wait_group_error("board", "list_deleted_in_constant_contact", "error");
    json_object *err = jget(gs, "error");
    assert_non_null(jstr(err, "message"));
    assert_non_null(strstr(jstr(err, "message"), "deleted in Constant Contact"));
    assert_non_null(jstr(err, "since"));
    json_object_put(gs);
    assert_string_equal(audit_actions("board", actions, sizeof actions),
                        "sync_enabled,list_created,list_missing");

    /* Events and reconcile rounds go by: no new list. */
    send_customer(member("m3", "cy@example.org", "Cy", "Lo", groups_of("board")), 3);
    send_event("customer.removed", "{\"UniqueID\":\"m2\"}", 3);
    wait_folded();
    wait_reconcile_rounds(3); /* two whole rounds */
    assert_string_equal(cc_list_names(NULL, buf, sizeof buf), "Board - 1");
    gs = wait_group_error("board", "list_deleted_in_constant_contact", "error");
    json_object_put(gs);
    assert_string_equal(audit_actions("board", actions, sizeof actions),
                        "sync_enabled,list_created,list_missing");

    /* The admin resyncs: a new list by the free-name rule with today's members. */
    struct reply r = api("POST", "/v1/associations/" ASSOC "/groups/board/resync", NULL);
    assert_int_equal(r.status, 202);
    reply_free(&r);
    gs = wait_synced("board");
    assert_state(gs, "synced");
    assert_null(error_code(gs));
    assert_string_equal(gs_list_name(gs), "Board");
    assert_string_not_equal(gs_list_id(gs), list_id);
    assert_counts(gs, 2, 0, 0, 0, 0, 0, 0, 2);
    assert_string_equal(cc_members(gs_list_id(gs), buf, sizeof buf, NULL, 0),
                        "ann@example.org,cy@example.org");
    char id[128], name[256];
    audit_entry("board", "list_created", id, name, sizeof id);
    assert_string_equal(id, gs_list_id(gs));
    assert_string_equal(name, "Board");
    json_object_put(gs);
    assert_string_equal(audit_actions("board", actions, sizeof actions),
                        "sync_enabled,list_created,list_missing,resync_requested,list_created");
    assert_string_equal(cc_list_names(NULL, buf, sizeof buf), "Board,Board - 1");
}

/* The free-name rule on resync: the old name is taken by then. */
static void test_resync_after_list_deleted_takes_the_first_free_name(void **state)
{
    (void)state;
    char buf[1024], path[256];
    BOARD_ON();
    send_members("board", 2, 1, member("m1", "ann@example.org", "Ann", "Lee", NULL));
    char list_id[128];
    wait_synced_list("board", list_id, sizeof list_id);
    snprintf(path, sizeof path, "/__sim/lists/%s/delete", list_id);
    sim_void("POST", path, NULL);
    sim_void("POST", "/__sim/seed", "{\"lists\":[\"Board\"]}");
    json_object_put(wait_group_error("board", "list_deleted_in_constant_contact", "error"));
    struct reply r = api("POST", "/v1/associations/" ASSOC "/groups/board/resync", NULL);
    assert_int_equal(r.status, 202);
    reply_free(&r);
    json_object *gs = wait_synced("board");
    assert_state(gs, "synced");
    assert_string_equal(gs_list_name(gs), "Board - 1");
    assert_string_equal(cc_members(gs_list_id(gs), buf, sizeof buf, NULL, 0), "ann@example.org");
    json_object_put(gs);
}

/* ==== §1.8 duplicates and reasons ==== */

static void test_duplicates_and_reasons_are_counted(void **state)
{
    (void)state;
    char buf[2048];
    /* Already unsubscribed in CC before ccsync imports anyone. */
    sim_void("POST", "/__sim/seed", "{\"contacts\":[{\"email\":\"gone@example.org\"}]}");
    sim_void("POST", "/__sim/unsubscribe", "{\"email\":\"gone@example.org\"}");
    BOARD_ON();
    send_members(
        "board", 2, 14,
        /* a company and a person share an email: the person wins (though "c1" < "p1") */
        "{\"UniqueID\":\"c1\",\"Email\":\"shared@example.org\",\"Company\":\"Acme\","
        "\"CustomerType\":\"Company\"}",
        member("p1", "SHARED@example.org", "Pat", "Doe", NULL),
        /* two people, same email, joined at once: the smaller UniqueID wins */
        member("z9", "twin@example.org", "Zed", "Nine", NULL),
        member("a1", "twin@example.org", "Al", "One", NULL),
        /* no email, empty, null; invalid */
        "{\"UniqueID\":\"n1\",\"FirstName\":\"No\"}", "{\"UniqueID\":\"n2\",\"Email\":\"  \"}",
        "{\"UniqueID\":\"n3\",\"Email\":null}", member("i1", "not-an-email", "In", "Valid", NULL),
        member("i2", "two@@example.org", "In", "Valid", NULL),
        /* do not email */
        member("d1", "quiet@example.org", "Qu", "Iet", ",\"DoNotSendMarketingEmails\":true"),
        /* unsubscribed in CC */
        member("u1", "gone@example.org", "Go", "Ne", NULL),
        /* CC refuses this address (ccsync's rules accept it) */
        member("r1", "dot.@example.org", "Do", "T", NULL),
        /* two plain ones */
        member("k1", "kim@example.org", "Kim", "Ok", NULL),
        member("k2", "lou@example.org", "Lou", "Ok", NULL));
    json_object *gs = wait_synced("board");
    assert_state(gs, "synced");
    assert_counts(gs, 14, 3, 2, 2, 1, 1, 1, 4);
    assert_string_equal(cc_members(gs_list_id(gs), buf, sizeof buf, NULL, 0),
                        "kim@example.org,lou@example.org,shared@example.org,twin@example.org");
    assert_string_equal(cc_contact_names(NULL, "shared@example.org", buf, sizeof buf), "Pat Doe");
    assert_string_equal(cc_contact_names(NULL, "twin@example.org", buf, sizeof buf), "Al One");
    assert_string_equal(cc_contact_permission("gone@example.org"), "unsubscribed");
    char list_id[128];
    snprintf(list_id, sizeof list_id, "%s", gs_list_id(gs));
    json_object_put(gs);

    /* Earliest join wins: t1 joins before t0 although its UniqueID is larger. */
    send_customer(member("t9", "early@example.org", "Ear", "Ly", groups_of("board")), 3);
    send_customer(member("t0", "early@example.org", "Lat", "Er", groups_of("board")), 4);
    gs = wait_synced("board");
    assert_counts(gs, 16, 3, 2, 3, 1, 1, 1, 5);
    json_object_put(gs);
    assert_string_equal(cc_contact_names(NULL, "early@example.org", buf, sizeof buf), "Ear Ly");

    /* The person leaves: the company record takes over the shared address. The
     * do-not-email member opts in; kim opts out (removed from the list). */
    send_customer(member("p1", "SHARED@example.org", "Pat", "Doe", groups_of("")), 5);
    send_customer(member("d1", "quiet@example.org", "Qu", "Iet", groups_of("board")), 5);
    send_customer(
        member("k1", "kim@example.org", "Kim", "Ok",
               ",\"DoNotSendMarketingEmails\":true,\"Groups\":[{\"UniqueID\":\"board\"}]"),
        5);
    gs = wait_synced("board");
    assert_counts(gs, 15, 3, 2, 2, 1, 1, 1, 5);
    json_object_put(gs);
    assert_string_equal(cc_members(list_id, buf, sizeof buf, NULL, 0),
                        "early@example.org,lou@example.org,quiet@example.org,shared@example.org,"
                        "twin@example.org");
    assert_string_equal(cc_contact_names(NULL, "shared@example.org", buf, sizeof buf), "Acme _");
}

/* ==== §1.9 unsubscribed in CC ==== */

static void test_unsubscribed_in_cc_is_never_added_again(void **state)
{
    (void)state;
    char buf[1024];
    BOARD_ON();
    send_members("board", 2, 2, member("m1", "ann@example.org", "Ann", "Lee", NULL),
                 member("m2", "bob@example.org", "Bob", "Ray", NULL));
    char list_id[128];
    wait_synced_list("board", list_id, sizeof list_id);

    sim_void("POST", "/__sim/unsubscribe", "{\"email\":\"bob@example.org\"}");
    /* Reconcile sees the list shrink; ccsync finds out and counts bob unsubscribed. */
    long deadline = ts_now_ms() + WAIT_MS;
    json_object *gs;
    for (;;) {
        gs = wait_synced("board");
        if (jint(jget(gs, "counts"), "unsubscribed") == 1)
            break;
        json_object_put(gs);
        if (ts_now_ms() > deadline)
            fail_msg("the unsubscribe was not noticed");
        ts_sleep_ms(200);
    }
    assert_counts(gs, 2, 0, 0, 0, 0, 1, 0, 1);
    json_object_put(gs);
    assert_string_equal(cc_members(list_id, buf, sizeof buf, NULL, 0), "ann@example.org");

    /* bob's record changes (name, then leaving and rejoining): still not added,
     * and nothing is imported for him again. */
    long long imports = cc_imports();
    send_customer(member("m2", "bob@example.org", "Robert", "Ray", groups_of("board")), 3);
    gs = wait_synced("board");
    assert_counts(gs, 2, 0, 0, 0, 0, 1, 0, 1);
    json_object_put(gs);
    send_customer(member("m2", "bob@example.org", "Robert", "Ray", groups_of("")), 4);
    send_customer(member("m2", "bob@example.org", "Robert", "Ray", groups_of("board")), 5);
    gs = wait_synced("board");
    assert_counts(gs, 2, 0, 0, 0, 0, 1, 0, 1);
    json_object_put(gs);
    wait_reconcile_rounds(2); /* a whole reconcile round too */
    gs = wait_synced("board");
    assert_state(gs, "synced");
    assert_counts(gs, 2, 0, 0, 0, 0, 1, 0, 1);
    json_object_put(gs);
    assert_string_equal(cc_members(list_id, buf, sizeof buf, NULL, 0), "ann@example.org");
    assert_string_equal(cc_contact_permission("bob@example.org"), "unsubscribed");
    assert_int_equal(cc_imports(), imports);
}

/* ==== §1.10 saving with no change ==== */

static void test_saving_a_group_without_change_makes_no_cc_request(void **state)
{
    (void)state;
    char buf[1024];
    BOARD_ON();
    send_members("board", 2, 2, member("m1", "ann@example.org", "Ann", "Lee", NULL),
                 member("m2", "bob@example.org", "Bob", "Ray", NULL));
    json_object *gs = wait_synced("board");
    char synced_at[64];
    snprintf(synced_at, sizeof synced_at, "%s", jstr(gs, "last_synced_at"));
    json_object_put(gs);
    long long before = cc_requests();
    ts_sleep_ms(1100); /* a sync run from now on would show in last_synced_at */

    /* Novi saves the group again: same settings, same members, newer timestamps. */
    send_group("board", "Board", true, 10);
    send_members("board", 11, 2, member("m1", "ann@example.org", "Ann", "Lee", NULL),
                 member("m2", "bob@example.org", "Bob", "Ray", NULL));
    send_customer(member("m1", "ann@example.org", "Ann", "Lee", groups_of("board")), 12);
    gs = wait_synced("board");
    ts_sleep_ms(500); /* longer than the coalescing delay */
    json_object_put(gs);
    gs = wait_synced("board");
    assert_state(gs, "synced");
    assert_string_equal(jstr(gs, "last_synced_at"), synced_at);
    assert_counts(gs, 2, 0, 0, 0, 0, 0, 0, 2);
    assert_string_equal(cc_members(gs_list_id(gs), buf, sizeof buf, NULL, 0),
                        "ann@example.org,bob@example.org");
    json_object_put(gs);
    assert_int_equal(cc_requests(), before);
}

/* ==== redelivery and order ==== */

static void test_same_event_delivered_twice_changes_nothing(void **state)
{
    (void)state;
    char buf[1024], actions[512];
    BOARD_ON();
    send_members("board", 2, 1, member("m1", "ann@example.org", "Ann", "Lee", NULL));
    json_object_put(wait_synced("board"));

    char *join = envelope("customer.updated",
                          member("m2", "bob@example.org", "Bob", "Ray", groups_of("board")), 3);
    assert_int_equal(post_webhook("msg_join_1", join), 202);
    json_object *gs = wait_synced("board");
    char list_id[128], synced_at[64];
    snprintf(list_id, sizeof list_id, "%s", gs_list_id(gs));
    snprintf(synced_at, sizeof synced_at, "%s", jstr(gs, "last_synced_at"));
    json_object_put(gs);
    long long before = cc_requests();
    ts_sleep_ms(1100); /* a sync run from now on would show in last_synced_at */

    assert_int_equal(post_webhook("msg_join_1", join), 200); /* same id: a duplicate */
    assert_int_equal(post_webhook("msg_join_2", join), 202); /* Novi's retry, new id */
    char *toggle = envelope(
        "group.updated",
        "{\"UniqueID\":\"board\",\"GroupName\":\"Board\",\"SyncToConstantContact\":true}", 1);
    assert_int_equal(post_webhook("msg_group_again", toggle), 202);
    free(toggle);
    /* Same timestamp, other content: on a tie the stored fact stands. */
    send_customer(member("m2", "bob.tie@example.org", "Bobby", "Ray", groups_of("board")), 3);
    gs = wait_synced("board");
    ts_sleep_ms(400);
    json_object_put(gs);
    gs = wait_synced("board");
    assert_string_equal(jstr(gs, "last_synced_at"), synced_at);
    assert_counts(gs, 2, 0, 0, 0, 0, 0, 0, 2);
    json_object_put(gs);
    assert_int_equal(cc_requests(), before);
    assert_string_equal(cc_members(list_id, buf, sizeof buf, NULL, 0),
                        "ann@example.org,bob@example.org");

    /* bob leaves; the join is delivered once more afterwards: he stays out. */
    send_customer(member("m2", "bob@example.org", "Bob", "Ray", groups_of("")), 4);
    json_object_put(wait_synced("board"));
    assert_int_equal(post_webhook("msg_join_3", join), 202);
    gs = wait_synced("board");
    assert_counts(gs, 1, 0, 0, 0, 0, 0, 0, 1);
    json_object_put(gs);
    assert_string_equal(cc_members(list_id, buf, sizeof buf, NULL, 0), "ann@example.org");
    assert_string_equal(audit_actions("board", actions, sizeof actions),
                        "sync_enabled,list_created");
    free(join);
}

static void test_out_of_order_events_do_not_regress(void **state)
{
    (void)state;
    char buf[1024], actions[512];
    send_group("board", "Board", true, 20);
    wait_folded();
    send_group("board", "Board", false, 10);                     /* older: ignored */
    send_event("group.deleted", "{\"UniqueID\":\"board\"}", 15); /* older: ignored */
    send_members("board", 20, 2, member("m1", "ann@example.org", "Ann", "Lee", NULL),
                 member("m2", "bob@example.org", "Bob", "Ray", NULL));
    json_object *gs = wait_synced("board");
    assert_state(gs, "synced");
    char list_id[128];
    snprintf(list_id, sizeof list_id, "%s", gs_list_id(gs));
    json_object_put(gs);
    assert_string_equal(cc_members(list_id, buf, sizeof buf, NULL, 0),
                        "ann@example.org,bob@example.org");

    /* The newer facts first (folded before the older ones arrive): m1's new
     * email and name at 40; bob leaves at 40; cy joins at 50. */
    send_customer(member("m1", "ann.new@example.org", "Annie", "Lee", groups_of("board")), 40);
    send_customer(member("m2", "bob@example.org", "Bob", "Ray", groups_of("")), 40);
    send_customer(member("m3", "cy@example.org", "Cy", "Lo", groups_of("board")), 50);
    wait_folded();
    /* Then older ones: an update of m1 from 30, bob's join from 35, cy's
     * removal from 45, the group turned off at 19 and deleted at 18. */
    send_customer(member("m1", "ann.old@example.org", "Anna", "Lee", groups_of("board")), 30);
    send_customer(member("m2", "bob@example.org", "Bob", "Ray", groups_of("board")), 35);
    send_event("customer.removed", "{\"UniqueID\":\"m3\"}", 45);
    send_group("board", "Board", false, 19);
    send_event("group.deleted", "{\"UniqueID\":\"board\"}", 18);
    gs = wait_synced("board");
    assert_state(gs, "synced");
    assert_counts(gs, 2, 0, 0, 0, 0, 0, 0, 2);
    json_object_put(gs);
    assert_string_equal(cc_members(list_id, buf, sizeof buf, NULL, 0),
                        "ann.new@example.org,cy@example.org");
    assert_string_equal(cc_contact_names(NULL, "ann.new@example.org", buf, sizeof buf),
                        "Annie Lee");
    assert_string_equal(cc_list_names(NULL, buf, sizeof buf), "Board");
    assert_string_equal(audit_actions("board", actions, sizeof actions),
                        "sync_enabled,list_created");
}

static void test_older_snapshot_does_not_override_newer_customer_update(void **state)
{
    (void)state;
    char buf[1024];
    BOARD_ON();
    send_members("board", 2, 2, member("m1", "ann@example.org", "Ann", "Lee", NULL),
                 member("m2", "bob@example.org", "Bob", "Ray", NULL));
    char list_id[128];
    wait_synced_list("board", list_id, sizeof list_id);

    /* At 20: m1 leaves, m2 changes email, m3 joins. A snapshot taken at 10 arrives
     * later: m1 and m2 as before, without m3. */
    send_customer(member("m1", "ann@example.org", "Ann", "Lee", groups_of("")), 20);
    send_customer(member("m2", "bob.new@example.org", "Bob", "Ray", groups_of("board")), 20);
    send_customer(member("m3", "cy@example.org", "Cy", "Lo", groups_of("board")), 20);
    wait_folded();
    send_members("board", 10, 2, member("m1", "ann@example.org", "Ann", "Lee", NULL),
                 member("m2", "bob@example.org", "Bob", "Ray", NULL));
    json_object *gs = wait_synced("board");
    assert_counts(gs, 2, 0, 0, 0, 0, 0, 0, 2);
    json_object_put(gs);
    assert_string_equal(cc_members(list_id, buf, sizeof buf, NULL, 0),
                        "bob.new@example.org,cy@example.org");

    /* A newer snapshot does override: at 30 the group is m1 and m3. */
    send_members("board", 30, 2, member("m1", "ann@example.org", "Ann", "Lee", NULL),
                 member("m3", "cy@example.org", "Cy", "Lo", NULL));
    gs = wait_synced("board");
    assert_counts(gs, 2, 0, 0, 0, 0, 0, 0, 2);
    json_object_put(gs);
    assert_string_equal(cc_members(list_id, buf, sizeof buf, NULL, 0),
                        "ann@example.org,cy@example.org");
}

/* ==== several groups in one round (issue #4: burst efficiency) ==== */

/* Three synced groups of four; the member ids are g-a..g-d, emails a@g.org... */
static void three_groups_of_four(const char *groups[3])
{
    for (int g = 0; g < 3; g++) {
        char id[4][32], email[4][64];
        for (int i = 0; i < 4; i++) {
            snprintf(id[i], sizeof id[i], "%s-%c", groups[g], 'a' + i);
            snprintf(email[i], sizeof email[i], "%c@%s.org", 'a' + i, groups[g]);
        }
        send_group(groups[g], groups[g], true, 1);
        send_members(groups[g], 2, 4, member(id[0], email[0], "A", "A", NULL),
                     member(id[1], email[1], "B", "B", NULL),
                     member(id[2], email[2], "C", "C", NULL),
                     member(id[3], email[3], "D", "D", NULL));
    }
}

static void test_burst_over_groups_shares_requests(void **state)
{
    (void)state;
    char buf[1024];
    const char *groups[3] = {"g1", "g2", "g3"};
    three_groups_of_four(groups);
    char list_id[3][128];
    for (int g = 0; g < 3; g++) {
        json_object *gs = wait_synced(groups[g]);
        snprintf(list_id[g], sizeof list_id[g], "%s", gs_list_id(gs));
        json_object_put(gs);
    }
    long long before = cc_requests(), seq = cc_log_next();
    long long imports = cc_imports(),
              removes = cc_endpoint("POST /v3/activities/remove_list_memberships");
    long long lookups = cc_endpoint("GET /v3/contacts"), polls = cc_endpoint("GET /v3/activities");
    long long polls_by_id = cc_endpoint("GET /v3/activities/{activity_id}");

    /* The burst: in each group a leaves and e joins, as separate webhooks. */
    for (int g = 0; g < 3; g++) {
        char id[32], email[64];
        snprintf(id, sizeof id, "%s-a", groups[g]);
        snprintf(email, sizeof email, "a@%s.org", groups[g]);
        send_customer(member(id, email, "A", "A", groups_of("")), 3);
        snprintf(id, sizeof id, "%s-e", groups[g]);
        snprintf(email, sizeof email, "e@%s.org", groups[g]);
        send_customer(member(id, email, "E", "E", groups_of(groups[g])), 3);
    }
    for (int g = 0; g < 3; g++) {
        json_object *gs = wait_synced(groups[g]);
        assert_counts(gs, 4, 0, 0, 0, 0, 0, 0, 4);
        json_object_put(gs);
        char want[256];
        snprintf(want, sizeof want, "b@%s.org,c@%s.org,d@%s.org,e@%s.org", groups[g], groups[g],
                 groups[g], groups[g]);
        assert_string_equal(cc_members(list_id[g], buf, sizeof buf, NULL, 0), want);
    }
    /* One import per list, ONE removal for the three lists (the contact ids
     * are known from the first sync's read-back, so no lookup), and one
     * GET /activities reporting on all four activities. */
    assert_int_equal(cc_imports() - imports, 3);
    assert_int_equal(cc_endpoint("POST /v3/activities/remove_list_memberships") - removes, 1);
    cc_remove_shapes(seq, buf, sizeof buf);
    assert_string_equal(buf, "3>3");
    assert_int_equal(cc_endpoint("GET /v3/contacts") - lookups, 0);
    assert_int_equal(cc_endpoint("GET /v3/activities/{activity_id}") - polls_by_id, 0);
    assert_int_equal(cc_endpoint("GET /v3/activities") - polls, 1);
    assert_int_equal(cc_requests() - before, 5);
    assert_int_equal(cc_counter("throttled"), 0);
}

/* ==== contact ids: learned when a removal needs them (issue #14) ==== */

#define LAZY_N 1200 /* 1,196 usable: 3 pages of 500 */

/* Members [from, LAZY_N) of "lazy" as the group's snapshot at at; waits until synced. */
static void lazy_snapshot(int from, long long at)
{
    char *data = gen_members_data("lazy", "z", from, LAZY_N);
    send_event("group.members", data, at);
    free(data);
    json_object *gs = wait_settled("lazy", WAIT_MS);
    assert_counts(gs, LAZY_N - from, gen_no_email(from, LAZY_N), gen_invalid(from, LAZY_N), 0, 0, 0,
                  0, gen_expected_count(from, LAZY_N));
    json_object_put(gs);
}

/* ccsim's counters of the endpoints a sync of one list uses, and its total. */
struct lazy_counts {
    long long lists_get, lists_post, imports, contacts, removes, polls, total;
};

static struct lazy_counts lazy_counts_now(void)
{
    return (struct lazy_counts){cc_endpoint("GET /v3/contact_lists"),
                                cc_endpoint("POST /v3/contact_lists"),
                                cc_imports(),
                                cc_endpoint("GET /v3/contacts"),
                                cc_endpoint("POST /v3/activities/remove_list_memberships"),
                                cc_activity_polls(),
                                cc_requests()};
}

static void assert_lazy_counts(const struct lazy_counts *from, long long contacts,
                               long long removes, long long imports)
{
    struct lazy_counts now = lazy_counts_now();
    assert_int_equal(now.contacts - from->contacts, contacts);
    assert_int_equal(now.removes - from->removes, removes);
    assert_int_equal(now.imports - from->imports, imports);
    assert_int_equal(now.polls - from->polls, 1); /* one GET /activities reports on them */
    assert_int_equal(now.total - from->total, contacts + removes + imports + 1 +
                                                  (now.lists_get - from->lists_get) +
                                                  (now.lists_post - from->lists_post));
}

/* A first sync of a list larger than a page does not read it back for contact ids
 * (3 requests here, 20 for 10,000): a removal learns what it needs then, a lookup
 * a contact, or the list read back once that takes no more requests, after which
 * every id is known. */
static void test_contact_ids_are_learned_when_a_removal_needs_them(void **state)
{
    (void)state;
    struct lazy_counts c0 = lazy_counts_now();
    char *data = gen_members_data("lazy", "z", 0, LAZY_N);
    send_event("group.members", data, 2);
    free(data);
    wait_folded();
    send_group("lazy", "Lazy", true, 3);
    json_object_put(wait_settled("lazy", WAIT_MS));

    /* 1 leaves: one lookup, one removal. (A read-back after the first sync would
     * show here as 3 more GET /contacts: it comes after the group shows synced, and
     * the group's next round waits for it.) */
    struct lazy_counts c1 = lazy_counts_now();
    lazy_snapshot(1, 4);
    /* the first sync: the list's names, its create, one import, one report */
    assert_int_equal(c1.lists_post - c0.lists_post, 1);
    assert_int_equal(c1.imports - c0.imports, 1);
    assert_int_equal(c1.polls - c0.polls, 1);
    assert_int_equal(c1.total - c0.total, 3 + (c1.lists_get - c0.lists_get));
    assert_lazy_counts(&c1, 1, 1, 0);

    /* 3 leave: three lookups would cost as much as the list's 3 pages, which learn
     * every id: the list is read */
    struct lazy_counts c2 = lazy_counts_now();
    lazy_snapshot(4, 5);
    assert_lazy_counts(&c2, 3, 1, 0);

    /* 1 more leaves: its id is known */
    struct lazy_counts c3 = lazy_counts_now();
    lazy_snapshot(5, 6);
    assert_lazy_counts(&c3, 0, 1, 0);
    assert_int_equal(cc_counter("throttled"), 0);
}

static void test_member_of_two_groups_leaving_one_stays_on_the_other(void **state)
{
    (void)state;
    char buf[1024];
    /* pat is in board and staff; bob only in board; sue only in staff. */
    send_group("board", "Board", true, 1);
    send_group("staff", "Staff", true, 1);
    send_members("board", 2, 2, member("pat", "pat@example.org", "Pat", "Poe", NULL),
                 member("bob", "bob@example.org", "Bob", "Ray", NULL));
    send_members("staff", 2, 2, member("pat", "pat@example.org", "Pat", "Poe", NULL),
                 member("sue", "sue@example.org", "Sue", "Sim", NULL));
    json_object *gs = wait_synced("board");
    char board[128], staff[128];
    snprintf(board, sizeof board, "%s", gs_list_id(gs));
    json_object_put(gs);
    gs = wait_synced("staff");
    snprintf(staff, sizeof staff, "%s", gs_list_id(gs));
    json_object_put(gs);
    long long seq = cc_log_next(), imports = cc_imports();

    /* In one burst pat leaves board (stays in staff) and sue leaves staff. One
     * request for both lists would take pat off staff too: two are needed. */
    send_customer(member("pat", "pat@example.org", "Pat", "Poe", groups_of("staff")), 3);
    send_customer(member("sue", "sue@example.org", "Sue", "Sim", groups_of("")), 3);
    gs = wait_synced("board");
    assert_counts(gs, 1, 0, 0, 0, 0, 0, 0, 1);
    json_object_put(gs);
    gs = wait_synced("staff");
    assert_counts(gs, 1, 0, 0, 0, 0, 0, 0, 1);
    json_object_put(gs);
    assert_string_equal(cc_members(board, buf, sizeof buf, NULL, 0), "bob@example.org");
    assert_string_equal(cc_members(staff, buf, sizeof buf, NULL, 0), "pat@example.org");
    cc_remove_shapes(seq, buf, sizeof buf);
    assert_string_equal(buf, "1>1,1>1");
    assert_int_equal(cc_imports(), imports); /* pat was never off staff: no re-import */

    /* Later pat leaves staff too and bob leaves board: nothing stays, so one
     * request takes both off both lists. */
    seq = cc_log_next();
    send_customer(member("pat", "pat@example.org", "Pat", "Poe", groups_of("")), 4);
    send_customer(member("bob", "bob@example.org", "Bob", "Ray", groups_of("")), 4);
    json_object_put(wait_synced("board"));
    json_object_put(wait_synced("staff"));
    assert_string_equal(cc_members(board, buf, sizeof buf, NULL, 0), "");
    assert_string_equal(cc_members(staff, buf, sizeof buf, NULL, 0), "");
    cc_remove_shapes(seq, buf, sizeof buf);
    assert_string_equal(buf, "2>2");
}

static void test_merged_removal_with_lost_answer_is_recovered_in_every_group(void **state)
{
    (void)state;
    char buf[1024];
    const char *groups[3] = {"g1", "g2", "g3"};
    three_groups_of_four(groups);
    char list_id[3][128];
    for (int g = 0; g < 3; g++) {
        json_object *gs = wait_synced(groups[g]);
        snprintf(list_id[g], sizeof list_id[g], "%s", gs_list_id(gs));
        json_object_put(gs);
    }
    /* The merged removal's answer is lost (a 502: CC may have acted). Each
     * group's journal holds it; each recovers and the lists end exact. */
    sim_void("POST", "/__sim/faults",
             "{\"mode\":\"status\",\"status\":502,\"count\":1,"
             "\"path_prefix\":\"/v3/activities/remove_list_memberships\"}");
    for (int g = 0; g < 3; g++) {
        char id[32], email[64];
        snprintf(id, sizeof id, "%s-a", groups[g]);
        snprintf(email, sizeof email, "a@%s.org", groups[g]);
        send_customer(member(id, email, "A", "A", groups_of("")), 3);
    }
    for (int g = 0; g < 3; g++) {
        json_object *gs = wait_synced(groups[g]);
        assert_state(gs, "synced");
        assert_null(error_code(gs));
        assert_counts(gs, 3, 0, 0, 0, 0, 0, 0, 3);
        json_object_put(gs);
        char want[256];
        snprintf(want, sizeof want, "b@%s.org,c@%s.org,d@%s.org", groups[g], groups[g], groups[g]);
        assert_string_equal(cc_members(list_id[g], buf, sizeof buf, NULL, 0), want);
    }
    assert_int_equal(cc_counter("faults"), 1);
}

/* The list was deleted in CC and a burst both removes and adds members before
 * reconcile notices: the removal's 404 marks the group list_deleted; the
 * import of the same pass is not sent to the gone list (CC would refuse it with
 * a 400, and the group's error would turn into constant_contact_rejected). */
static void test_list_deleted_in_cc_found_by_a_removal_stops_the_round(void **state)
{
    (void)state;
    char path[256], actions[512];
    BOARD_ON();
    send_members("board", 2, 2, member("m1", "ann@example.org", "Ann", "Lee", NULL),
                 member("m2", "bob@example.org", "Bob", "Ray", NULL));
    char list_id[128];
    wait_synced_list("board", list_id, sizeof list_id);
    long long imports = cc_imports();

    snprintf(path, sizeof path, "/__sim/lists/%s/delete", list_id);
    sim_void("POST", path, NULL);
    /* One burst: ann leaves (a removal, her contact id known), cy joins (an import). */
    send_customer(member("m1", "ann@example.org", "Ann", "Lee", groups_of("")), 3);
    send_customer(member("m3", "cy@example.org", "Cy", "Lo", groups_of("board")), 3);
    json_object *gs = wait_group_error("board", "list_deleted_in_constant_contact", "error");
    json_object_put(gs);
    ts_sleep_ms(2000);
    long status;
    gs = get_group("board", &status);
    assert_int_equal(status, 200);
    assert_string_equal(error_code(gs), "list_deleted_in_constant_contact");
    json_object_put(gs);
    assert_string_equal(audit_actions("board", actions, sizeof actions),
                        "sync_enabled,list_created,list_missing");
    assert_int_equal(cc_imports(), imports); /* nothing imported into the gone list */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_connection_shows_connected_after_a_sync, stack_setup,
                                        stack_stop),
        cmocka_unit_test_setup_teardown(test_connection_expired_token_is_refreshed_and_sync_goes_on,
                                        setup_no_token, stack_stop),
        cmocka_unit_test_setup_teardown(
            test_connection_invalid_refresh_token_until_new_tokens_are_put, setup_no_token,
            stack_stop),
        cmocka_unit_test_setup_teardown(test_naming_takes_first_free_name, stack_setup, stack_stop),
        cmocka_unit_test_setup_teardown(test_first_sync_puts_every_usable_member_on_the_list,
                                        setup_limits, stack_stop),
        cmocka_unit_test_setup_teardown(test_join_leave_email_and_name_changes, stack_setup,
                                        stack_stop),
        cmocka_unit_test_setup_teardown(test_toggle_off_deletes_the_list_and_audits, stack_setup,
                                        stack_stop),
        cmocka_unit_test_setup_teardown(test_group_deleted_deletes_the_list_and_keeps_the_audit,
                                        stack_setup, stack_stop),
        cmocka_unit_test_setup_teardown(test_list_renamed_in_cc_keeps_syncing_by_id,
                                        setup_reconcile, stack_stop),
        cmocka_unit_test_setup_teardown(test_list_deleted_in_cc_is_an_error_until_resync,
                                        setup_reconcile, stack_stop),
        cmocka_unit_test_setup_teardown(test_resync_after_list_deleted_takes_the_first_free_name,
                                        setup_reconcile, stack_stop),
        cmocka_unit_test_setup_teardown(test_duplicates_and_reasons_are_counted, stack_setup,
                                        stack_stop),
        cmocka_unit_test_setup_teardown(test_unsubscribed_in_cc_is_never_added_again,
                                        setup_reconcile, stack_stop),
        cmocka_unit_test_setup_teardown(test_saving_a_group_without_change_makes_no_cc_request,
                                        stack_setup, stack_stop),
        cmocka_unit_test_setup_teardown(test_same_event_delivered_twice_changes_nothing,
                                        stack_setup, stack_stop),
        cmocka_unit_test_setup_teardown(test_out_of_order_events_do_not_regress, stack_setup,
                                        stack_stop),
        cmocka_unit_test_setup_teardown(test_older_snapshot_does_not_override_newer_customer_update,
                                        stack_setup, stack_stop),
        cmocka_unit_test_setup_teardown(test_burst_over_groups_shares_requests, setup_limits,
                                        stack_stop),
        cmocka_unit_test_setup_teardown(test_contact_ids_are_learned_when_a_removal_needs_them,
                                        stack_setup, stack_stop),
        cmocka_unit_test_setup_teardown(test_member_of_two_groups_leaving_one_stays_on_the_other,
                                        setup_wide_window, stack_stop),
        cmocka_unit_test_setup_teardown(
            test_merged_removal_with_lost_answer_is_recovered_in_every_group, stack_setup,
            stack_stop),
        cmocka_unit_test_setup_teardown(test_list_deleted_in_cc_found_by_a_removal_stops_the_round,
                                        stack_setup, stack_stop),
    };
    const char *filter = getenv("TEST_FILTER");
    if (filter && *filter)
        cmocka_set_test_filter(filter);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
