/*
 * test_ccapi.c (integration) - the Constant Contact client against the CC
 * simulator (build/ccsim): every call the worker makes, end to end over HTTP,
 * and the classification of the failures the simulator can stage (409, 401,
 * 429 throttled and quota_exceeded, 5xx, a slow answer, a dropped connection,
 * a spent refresh token).
 *
 * The simulator binary is $CCSIM_BIN, else the ccsim beside this test's build
 * folder (<BUILD>/tests/integration/test_ccapi → <BUILD>/ccsim). Without it
 * the tests are skipped.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <json-c/json.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ccsync/ccapi.h"
#include "ccsim_client.h"
#include "testsupport.h"

struct sim {
    pid_t pid;
    char root[64];     /* http://127.0.0.1:PORT */
    char base_url[80]; /* root + /v3 */
    char token_url[128];
    char access_token[256];
    char refresh_token[256];
    struct ccapi *cc;
};

static struct sim the_sim;

/* POST root+path with a JSON body to the simulator's control API; returns
 * the parsed answer (the caller puts it) and asserts a 200. */
static struct json_object *sim_control(const char *path, const char *json)
{
    char url[256];
    snprintf(url, sizeof(url), "%s%s", the_sim.root, path);
    const char *headers[] = {"Content-Type: application/json", NULL};
    long status = 0;
    char *body = NULL;
    assert_int_equal(ts_http(json != NULL ? "POST" : "DELETE", url, headers, json, &status, &body),
                     0);
    assert_int_equal(status, 200);
    struct json_object *answer = json_tokener_parse(body != NULL ? body : "");
    free(body);
    return answer;
}

static void sim_control_void(const char *path, const char *json)
{
    json_object_put(sim_control(path, json));
}

static const char *json_str(struct json_object *o, const char *key)
{
    struct json_object *v;
    assert_true(json_object_object_get_ex(o, key, &v));
    return json_object_get_string(v);
}

static int start_sim(void **state)
{
    const char *args[] = {"--no-limits", "--activity-ms", "60", NULL};
    the_sim.pid = ccsim_start(args, the_sim.root, sizeof(the_sim.root));
    if (the_sim.pid == 0) {
        fprintf(stderr, "test_ccapi: no ccsim binary (set CCSIM_BIN): skipping\n");
        return 0;
    }
    if (the_sim.pid < 0)
        return -1;
    snprintf(the_sim.base_url, sizeof(the_sim.base_url), "%s/v3", the_sim.root);
    snprintf(the_sim.token_url, sizeof(the_sim.token_url), "%s/oauth2/default/v1/token",
             the_sim.root);
    return 0;
}

static int stop_sim(void **state)
{
    if (the_sim.pid > 0)
        ts_kill(the_sim.pid, SIGTERM);
    return 0;
}

/* Every test starts from an empty account, fresh tokens, no limits. */
static int test_setup(void **state)
{
    if (the_sim.pid <= 0)
        return 0;
    sim_control_void("/__sim/reset", "{}");
    sim_control_void("/__sim/config", "{\"rate\":0,\"daily_limit\":0,\"auth\":true}");
    struct json_object *pair = sim_control("/__sim/tokens", "{}");
    snprintf(the_sim.access_token, sizeof(the_sim.access_token), "%s",
             json_str(pair, "access_token"));
    snprintf(the_sim.refresh_token, sizeof(the_sim.refresh_token), "%s",
             json_str(pair, "refresh_token"));
    json_object_put(pair);
    the_sim.cc = ccapi_new(the_sim.base_url, 3000);
    assert_non_null(the_sim.cc);
    assert_int_equal(ccapi_set_token(the_sim.cc, the_sim.access_token), 0);
    return 0;
}

static int test_teardown(void **state)
{
    ccapi_free(the_sim.cc);
    the_sim.cc = NULL;
    if (the_sim.pid > 0) {
        char url[256];
        snprintf(url, sizeof(url), "%s/__sim/faults", the_sim.root);
        long status;
        char *body = NULL;
        ts_http("DELETE", url, NULL, NULL, &status, &body);
        free(body);
    }
    return 0;
}

#define NEED_SIM()                                                                                 \
    do {                                                                                           \
        if (the_sim.pid <= 0)                                                                      \
            skip();                                                                                \
    } while (0)

/* Polls an activity until it is finished (at most ~5 s). */
static void client_wait_activity(const char *activity_id, struct ccapi_activity *out)
{
    struct ccapi_error err;
    for (int i = 0; i < 100; i++) {
        assert_int_equal(ccapi_activity_get(the_sim.cc, activity_id, out, &err), 0);
        if (ccapi_activity_finished(out->state))
            return;
        ccapi_activity_clear(out);
        ts_sleep_ms(50);
    }
    fail_msg("activity %s did not finish", activity_id);
}

static void client_create_list(const char *name, struct ccapi_list *list)
{
    struct ccapi_error err;
    assert_int_equal(ccapi_list_create(the_sim.cc, name, "synced by ccsync", list, &err), 0);
    assert_string_equal(list->name, name);
    assert_true(strlen(list->list_id) > 0);
}

static void test_list_create_conflict_find_get(void **state)
{
    NEED_SIM();
    struct ccapi_list list, again, got;
    struct ccapi_error err;
    client_create_list("Current Members", &list);

    assert_int_equal(ccapi_list_create(the_sim.cc, "Current Members", NULL, &again, &err), -1);
    assert_int_equal(err.status, CCAPI_CONFLICT);
    assert_int_equal(err.http_status, 409);
    assert_false(err.maybe_applied);

    struct ccapi_list_page page;
    assert_int_equal(ccapi_lists_find_by_name(the_sim.cc, "Current Members", &page, &err), 0);
    assert_int_equal(page.n_lists, 1);
    assert_string_equal(page.lists[0].list_id, list.list_id);
    ccapi_list_page_clear(&page);

    assert_int_equal(ccapi_list_get(the_sim.cc, list.list_id, &got, &err), 0);
    assert_string_equal(got.name, "Current Members");
    assert_int_equal(got.membership_count, 0);
    assert_false(got.deleted);
    ccapi_list_clear(&got);

    assert_int_equal(ccapi_list_get(the_sim.cc, "00000000-0000-0000-0000-000000000000", &got, &err),
                     -1);
    assert_int_equal(err.status, CCAPI_NOT_FOUND);
    ccapi_list_clear(&list);
}

static void test_lists_pages_follow_next_links(void **state)
{
    NEED_SIM();
    /* 501 lists: one full page of 500, then a second page reached by _links.next */
    struct json_object *seed = json_object_new_object();
    struct json_object *names = json_object_new_array();
    for (int i = 0; i < 501; i++) {
        char name[32];
        snprintf(name, sizeof(name), "List %03d", i);
        json_object_array_add(names, json_object_new_string(name));
    }
    json_object_object_add(seed, "lists", names);
    sim_control_void("/__sim/seed", json_object_to_json_string(seed));
    json_object_put(seed);

    struct ccapi_list_page page;
    struct ccapi_error err;
    assert_int_equal(ccapi_lists_page(the_sim.cc, NULL, &page, &err), 0);
    assert_int_equal(page.n_lists, 500);
    assert_non_null(page.next_href);
    char *next = strdup(page.next_href);
    ccapi_list_page_clear(&page);
    assert_int_equal(ccapi_lists_page(the_sim.cc, next, &page, &err), 0);
    free(next);
    assert_int_equal(page.n_lists, 1);
    assert_null(page.next_href);
    ccapi_list_page_clear(&page);
}

static void test_import_poll_read_remove_delete(void **state)
{
    NEED_SIM();
    struct ccapi_list list;
    struct ccapi_error err;
    client_create_list("Board", &list);
    const char *lists[] = {list.list_id};
    const struct ccapi_import_contact contacts[] = {
        {"ann@example.com", "Ann", "Archer"},
        {"bob@example.com", "Bob", "Baker"},
        {"acme@example.com", "Acme Inc.", "_"},
    };
    char activity_id[CCAPI_ID_SIZE];
    assert_int_equal(ccapi_contacts_import(the_sim.cc, contacts, 3, lists, 1, activity_id, &err),
                     0);
    struct ccapi_activity a;
    client_wait_activity(activity_id, &a);
    assert_int_equal(a.state, CCAPI_ACTIVITY_COMPLETED);
    assert_int_equal(a.percent_done, 100);
    assert_int_equal(a.n_errors, 0);
    ccapi_activity_clear(&a);

    /* the activities list shows it too */
    struct ccapi_activity_page acts;
    assert_int_equal(ccapi_activities_page(the_sim.cc, NULL, &acts, &err), 0);
    bool seen = false;
    for (size_t i = 0; i < acts.n_activities; i++)
        seen = seen || strcmp(acts.activities[i].activity_id, activity_id) == 0;
    assert_true(seen);
    ccapi_activity_page_clear(&acts);

    struct ccapi_contact_page page;
    assert_int_equal(ccapi_contacts_page(the_sim.cc, lists, 1, NULL, NULL, &page, &err), 0);
    assert_int_equal(page.n_contacts, 3);
    char bob_id[CCAPI_ID_SIZE] = "";
    for (size_t i = 0; i < page.n_contacts; i++) {
        struct ccapi_contact *c = &page.contacts[i];
        assert_int_equal(c->n_list_ids, 1);
        assert_string_equal(c->list_ids[0], list.list_id);
        assert_string_equal(c->permission_to_send, "implicit");
        if (strcmp(c->email, "bob@example.com") == 0) {
            assert_string_equal(c->first_name, "Bob");
            assert_string_equal(c->last_name, "Baker");
            strcpy(bob_id, c->contact_id);
        }
    }
    assert_true(bob_id[0] != '\0');
    ccapi_contact_page_clear(&page);

    assert_int_equal(ccapi_contacts_find_by_email(the_sim.cc, "bob@example.com", &page, &err), 0);
    assert_int_equal(page.n_contacts, 1);
    assert_string_equal(page.contacts[0].contact_id, bob_id);
    ccapi_contact_page_clear(&page);

    const char *remove[] = {bob_id};
    assert_int_equal(ccapi_memberships_remove(the_sim.cc, remove, 1, lists, 1, activity_id, &err),
                     0);
    client_wait_activity(activity_id, &a);
    assert_int_equal(a.state, CCAPI_ACTIVITY_COMPLETED);
    ccapi_activity_clear(&a);
    assert_int_equal(ccapi_contacts_find_by_email(the_sim.cc, "bob@example.com", &page, &err), 0);
    assert_int_equal(page.n_contacts, 1);
    assert_int_equal(page.contacts[0].n_list_ids, 0);
    ccapi_contact_page_clear(&page);

    /* and back again with add_list_memberships */
    assert_int_equal(ccapi_memberships_add(the_sim.cc, remove, 1, lists, 1, activity_id, &err), 0);
    client_wait_activity(activity_id, &a);
    ccapi_activity_clear(&a);
    struct ccapi_list got;
    assert_int_equal(ccapi_list_get(the_sim.cc, list.list_id, &got, &err), 0);
    assert_int_equal(got.membership_count, 3);
    ccapi_list_clear(&got);

    assert_int_equal(ccapi_list_delete(the_sim.cc, list.list_id, activity_id, &err), 0);
    client_wait_activity(activity_id, &a);
    assert_int_equal(a.state, CCAPI_ACTIVITY_COMPLETED);
    ccapi_activity_clear(&a);
    assert_int_equal(ccapi_list_get(the_sim.cc, list.list_id, &got, &err), -1);
    assert_int_equal(err.status, CCAPI_NOT_FOUND);
    ccapi_list_clear(&list);
}

static void test_import_reports_unsubscribed_and_rejected_contacts(void **state)
{
    NEED_SIM();
    struct ccapi_list list;
    struct ccapi_error err;
    client_create_list("Volunteers", &list);
    sim_control_void("/__sim/seed", "{\"contacts\":[{\"email\":\"gone@example.com\"}]}");
    sim_control_void("/__sim/unsubscribe", "{\"email\":\"gone@example.com\"}");
    const char *lists[] = {list.list_id};
    const struct ccapi_import_contact contacts[] = {{"gone@example.com", "Gone", "Away"},
                                                    {"here@example.com", "Here", "Now"},
                                                    {"short.tld@example.c", "Short", "Tld"}};
    char activity_id[CCAPI_ID_SIZE];
    assert_int_equal(ccapi_contacts_import(the_sim.cc, contacts, 3, lists, 1, activity_id, &err),
                     0);
    struct ccapi_activity a;
    client_wait_activity(activity_id, &a);
    assert_int_equal(a.state, CCAPI_ACTIVITY_COMPLETED);
    assert_int_equal(a.cannot_add_to_list_count, 1);
    /* an address CC refuses is a per-item error that names it */
    assert_int_equal(a.error_count, 1);
    assert_int_equal(a.n_errors, 1);
    assert_non_null(a.errors[0].email);
    assert_string_equal(a.errors[0].email, "short.tld@example.c");
    ccapi_activity_clear(&a);

    struct ccapi_contact_page page;
    assert_int_equal(ccapi_contacts_find_by_email(the_sim.cc, "gone@example.com", &page, &err), 0);
    assert_int_equal(page.n_contacts, 1);
    assert_string_equal(page.contacts[0].permission_to_send, "unsubscribed");
    assert_int_equal(page.contacts[0].n_list_ids, 0);
    ccapi_contact_page_clear(&page);
    ccapi_list_clear(&list);
}

static void test_token_refresh_rotates_and_spent_token_is_refused(void **state)
{
    NEED_SIM();
    struct ccapi_token token;
    struct ccapi_error err;
    /* a PKCE app: client_id in the body, no secret */
    assert_int_equal(ccapi_token_refresh(the_sim.cc, the_sim.token_url, "ccsync-test", NULL,
                                         the_sim.refresh_token, &token, &err),
                     0);
    assert_non_null(token.access_token);
    assert_non_null(token.refresh_token);
    assert_string_not_equal(token.refresh_token, the_sim.refresh_token);
    assert_true(token.expires_in > 0);

    /* the new access token works */
    assert_int_equal(ccapi_set_token(the_sim.cc, token.access_token), 0);
    struct ccapi_list_page page;
    assert_int_equal(ccapi_lists_page(the_sim.cc, NULL, &page, &err), 0);
    ccapi_list_page_clear(&page);

    /* a confidential app authenticates with Basic, using the rotated token */
    struct ccapi_token second;
    assert_int_equal(ccapi_token_refresh(the_sim.cc, the_sim.token_url, "ccsync-test",
                                         "s3cret-value", token.refresh_token, &second, &err),
                     0);
    ccapi_token_clear(&second);

    /* the first refresh token was spent */
    assert_int_equal(ccapi_token_refresh(the_sim.cc, the_sim.token_url, "ccsync-test", NULL,
                                         the_sim.refresh_token, &second, &err),
                     -1);
    assert_int_equal(err.status, CCAPI_UNAUTHORIZED);
    assert_string_equal(err.error_key, "invalid_grant");
    assert_int_equal(err.http_status, 400);
    assert_null(strstr(err.message, the_sim.refresh_token));
    assert_null(second.access_token);
    ccapi_token_clear(&token);
}

static void test_expired_token_is_unauthorized(void **state)
{
    NEED_SIM();
    sim_control_void("/__sim/tokens/expire", "{}");
    struct ccapi_list_page page;
    struct ccapi_error err;
    assert_int_equal(ccapi_lists_page(the_sim.cc, NULL, &page, &err), -1);
    assert_int_equal(err.status, CCAPI_UNAUTHORIZED);
    assert_int_equal(err.http_status, 401);
    assert_string_equal(err.error_key, "unauthorized");
    assert_null(strstr(err.message, the_sim.access_token));
}

static void test_429_throttled_and_quota_exceeded(void **state)
{
    NEED_SIM();
    struct ccapi_list_page page;
    struct ccapi_error err;
    sim_control_void("/__sim/faults", "{\"mode\":\"status\",\"status\":429,\"count\":1}");
    assert_int_equal(ccapi_lists_page(the_sim.cc, NULL, &page, &err), -1);
    assert_int_equal(err.status, CCAPI_THROTTLED);
    assert_string_equal(err.error_key, "throttled");
    assert_false(err.maybe_applied);

    sim_control_void("/__sim/config", "{\"daily_limit\":1}");
    assert_int_equal(ccapi_lists_page(the_sim.cc, NULL, &page, &err), 0);
    ccapi_list_page_clear(&page);
    assert_int_equal(ccapi_lists_page(the_sim.cc, NULL, &page, &err), -1);
    assert_int_equal(err.status, CCAPI_QUOTA);
    assert_string_equal(err.error_key, "quota_exceeded");

    /* the real rate limit answers the same class */
    sim_control_void("/__sim/config", "{\"daily_limit\":0,\"rate\":1}");
    assert_int_equal(ccapi_lists_page(the_sim.cc, NULL, &page, &err), 0);
    ccapi_list_page_clear(&page);
    assert_int_equal(ccapi_lists_page(the_sim.cc, NULL, &page, &err), -1);
    assert_int_equal(err.status, CCAPI_THROTTLED);
}

static void test_server_errors_and_broken_connections(void **state)
{
    NEED_SIM();
    struct ccapi_list list;
    struct ccapi_error err;
    sim_control_void("/__sim/faults", "{\"mode\":\"status\",\"status\":503,\"count\":1}");
    assert_int_equal(ccapi_list_create(the_sim.cc, "Five Oh Three", NULL, &list, &err), -1);
    assert_int_equal(err.status, CCAPI_TRANSIENT);
    assert_int_equal(err.http_status, 503);
    assert_true(err.maybe_applied);

    /* the connection is closed without an answer: CC may have acted */
    sim_control_void("/__sim/faults", "{\"mode\":\"drop\",\"count\":1}");
    assert_int_equal(ccapi_list_create(the_sim.cc, "Dropped", NULL, &list, &err), -1);
    assert_int_equal(err.status, CCAPI_TRANSIENT);
    assert_int_equal(err.http_status, 0);
    assert_true(err.maybe_applied);
    /* libcurl did not resend the POST on its own (the connection was a reused
     * one before POSTs got fresh connections, and it did) */
    struct ccapi_list_page dropped;
    assert_int_equal(ccapi_lists_find_by_name(the_sim.cc, "Dropped", &dropped, &err), 0);
    assert_int_equal(dropped.n_lists, 0);
    ccapi_list_page_clear(&dropped);

    /* a slow answer: the client times out, the simulator still creates the list */
    struct ccapi *slow = ccapi_new(the_sim.base_url, 300);
    ccapi_set_token(slow, the_sim.access_token);
    sim_control_void("/__sim/faults", "{\"mode\":\"delay\",\"delay_ms\":800,\"count\":1}");
    assert_int_equal(ccapi_list_create(slow, "Slow", NULL, &list, &err), -1);
    assert_int_equal(err.status, CCAPI_TRANSIENT);
    assert_string_equal(err.error_key, "timeout");
    assert_true(err.maybe_applied);
    ccapi_free(slow);
    /* The simulator finishes the request after its delay; on a loaded machine that
     * can take longer than the delay itself, so look until it shows (bounded). */
    struct ccapi_list_page page = {0};
    for (int tries = 0; tries < 50; tries++) {
        ts_sleep_ms(200);
        ccapi_list_page_clear(&page);
        assert_int_equal(ccapi_lists_find_by_name(the_sim.cc, "Slow", &page, &err), 0);
        if (page.n_lists == 1)
            break;
    }
    assert_int_equal(page.n_lists, 1); /* why a retried POST must look first */
    ccapi_list_page_clear(&page);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_list_create_conflict_find_get, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_lists_pages_follow_next_links, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_import_poll_read_remove_delete, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_import_reports_unsubscribed_and_rejected_contacts,
                                        test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_token_refresh_rotates_and_spent_token_is_refused,
                                        test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_expired_token_is_unauthorized, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_429_throttled_and_quota_exceeded, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_server_errors_and_broken_connections, test_setup,
                                        test_teardown),
    };
    int failed = cmocka_run_group_tests(tests, start_sim, stop_sim);
    curl_global_cleanup();
    return failed;
}
