/* Integration tests of the Constant Contact simulator (build/ccsim): each test states
 * one behaviour real Constant Contact has, drives it over HTTP and checks the exact
 * answer. The simulator is started once on a free port (CCSIM_BIN, default
 * $BUILD/ccsim) and reset through its control API before every test. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ccsim_client.h"
#include "reply.h"
#include "testsupport.h"

static pid_t sim_pid;
static char base[64];
static char token[256];

/* A request to ccsim (path under base); status 0 when no answer came. */
static struct reply call_full(const char *method, const char *path, const char *const *headers,
                              const char *body, size_t body_len, long timeout_ms)
{
    char url[4096];
    snprintf(url, sizeof url, "%s%s", base, path);
    return http_request(method, url, headers, body, body_len, timeout_ms);
}

/* A /v3 call with the current token and a JSON body. */
static struct reply api(const char *method, const char *path, const char *body)
{
    char auth[300];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
    const char *headers[] = {auth, "Content-Type: application/json", NULL};
    return call_full(method, path, headers, body, body ? strlen(body) : 0, 0);
}

static struct reply ctl(const char *method, const char *path, const char *body)
{
    char full[512];
    snprintf(full, sizeof full, "/__sim%s", path);
    return call_full(method, full, NULL, body, body ? strlen(body) : 0, 0);
}

static void ctl_ok(const char *method, const char *path, const char *body)
{
    struct reply r = ctl(method, path, body);
    assert_int_equal(r.status, 200);
    reply_free(&r);
}

static void mint_token(void)
{
    struct reply r = ctl("POST", "/tokens", NULL);
    assert_int_equal(r.status, 200);
    snprintf(token, sizeof token, "%s", jpath_str(r.json, "access_token"));
    reply_free(&r);
}

/* Creates a list by the API and copies its id into id. */
static void create_list(const char *name, char id[64])
{
    char body[256];
    snprintf(body, sizeof body, "{\"name\":\"%s\"}", name);
    struct reply r = api("POST", "/v3/contact_lists", body);
    assert_int_equal(r.status, 201);
    snprintf(id, 64, "%s", jpath_str(r.json, "list_id"));
    reply_free(&r);
}

static json_object *wait_activity(const char *id)
{
    char path[128];
    snprintf(path, sizeof path, "/v3/activities/%s", id);
    for (int i = 0; i < 200; i++) {
        struct reply r = api("GET", path, NULL);
        assert_int_equal(r.status, 200);
        if (strcmp(jpath_str(r.json, "state"), "completed") == 0) {
            return reply_take_json(&r);
        }
        reply_free(&r);
        ts_sleep_ms(25);
    }
    fail_msg("activity %s did not complete", id);
    return NULL;
}

/* Seeds through the control API; returns the seed answer. */
static json_object *seed(const char *body)
{
    struct reply r = ctl("POST", "/seed", body);
    assert_int_equal(r.status, 200);
    return reply_take_json(&r);
}

static int group_setup(void **state)
{
    (void)state;
    const char *args[] = {"--activity-ms", "100", NULL};
    sim_pid = ccsim_start(args, base, sizeof base);
    if (sim_pid <= 0) {
        fprintf(stderr, "cannot start ccsim (set CCSIM_BIN or BUILD)\n");
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    int status = ts_kill(sim_pid, SIGTERM);
    /* exit 0 also means the sanitizers found nothing at exit */
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "ccsim exited with status %d\n", status);
        return -1;
    }
    return 0;
}

static int reset_sim(void **state)
{
    (void)state;
    ctl_ok("POST", "/reset", NULL);
    ctl_ok("DELETE", "/faults", NULL);
    ctl_ok("POST", "/config",
           "{\"rate\":0,\"daily_limit\":0,\"activity_ms\":100,\"auth\":true,"
           "\"max_lists\":1000,\"max_activities\":1000,\"token_ttl\":86400}");
    mint_token();
    return 0;
}

/* ---- auth ---- */

static void test_request_without_token_is_401_single_object(void **state)
{
    (void)state;
    const char *headers[] = {NULL};
    struct reply r = call_full("GET", "/v3/contact_lists", headers, NULL, 0, 0);
    assert_int_equal(r.status, 401);
    assert_true(json_object_is_type(r.json, json_type_object));
    assert_string_equal(jpath_str(r.json, "error_key"), "unauthorized");
    reply_free(&r);
    snprintf(token, sizeof token, "not-a-token");
    r = api("GET", "/v3/contacts", NULL);
    assert_int_equal(r.status, 401);
    reply_free(&r);
}

static void test_access_token_expires(void **state)
{
    (void)state;
    struct reply r = ctl("POST", "/tokens", "{\"expires_in\":1}");
    assert_int_equal(jpath_int(r.json, "expires_in"), 1);
    snprintf(token, sizeof token, "%s", jpath_str(r.json, "access_token"));
    reply_free(&r);
    r = api("GET", "/v3/contact_lists", NULL);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    ts_sleep_ms(1100);
    r = api("GET", "/v3/contact_lists", NULL);
    assert_int_equal(r.status, 401);
    assert_string_equal(jpath_str(r.json, "error_key"), "unauthorized");
    reply_free(&r);
}

static void test_expire_all_tokens_control(void **state)
{
    (void)state;
    ctl_ok("POST", "/tokens/expire", NULL);
    struct reply r = api("GET", "/v3/contact_lists", NULL);
    assert_int_equal(r.status, 401);
    reply_free(&r);
}

static struct reply refresh(const char *refresh_token)
{
    char body[512];
    snprintf(body, sizeof body, "grant_type=refresh_token&refresh_token=%s", refresh_token);
    const char *headers[] = {"Authorization: Basic Y2xpZW50OnNlY3JldA==",
                             "Content-Type: application/x-www-form-urlencoded", NULL};
    return call_full("POST", "/oauth2/default/v1/token", headers, body, strlen(body), 0);
}

static void test_refresh_tokens_rotate_and_are_single_use(void **state)
{
    (void)state;
    struct reply minted = ctl("POST", "/tokens", NULL);
    char first[256];
    snprintf(first, sizeof first, "%s", jpath_str(minted.json, "refresh_token"));
    reply_free(&minted);

    struct reply r = refresh(first);
    assert_int_equal(r.status, 200);
    assert_string_equal(jpath_str(r.json, "token_type"), "Bearer");
    assert_int_equal(jpath_int(r.json, "expires_in"), 86400);
    assert_string_not_equal(jpath_str(r.json, "refresh_token"), first);
    snprintf(token, sizeof token, "%s", jpath_str(r.json, "access_token"));
    reply_free(&r);
    r = api("GET", "/v3/contact_lists", NULL);
    assert_int_equal(r.status, 200);
    reply_free(&r);

    r = refresh(first); /* spent */
    assert_int_equal(r.status, 400);
    assert_string_equal(jpath_str(r.json, "error"), "invalid_grant");
    assert_non_null(jpath_str(r.json, "error_description"));
    reply_free(&r);

    const char *no_client[] = {"Content-Type: application/x-www-form-urlencoded", NULL};
    r = call_full("POST", "/oauth2/default/v1/token", no_client, "grant_type=refresh_token", 24, 0);
    assert_int_equal(r.status, 401);
    assert_string_equal(jpath_str(r.json, "error"), "invalid_client");
    reply_free(&r);
}

/* ---- lists ---- */

static void test_list_names_are_unique(void **state)
{
    (void)state;
    char id[64];
    create_list("Board", id);
    assert_true(strlen(id) == 36 && id[14] == '4');
    struct reply r = api("POST", "/v3/contact_lists", "{\"name\":\"Board\"}");
    assert_int_equal(r.status, 409);
    assert_true(json_object_is_type(r.json, json_type_array));
    assert_string_equal(jpath_str(r.json, "0.error_key"), "conflict");
    reply_free(&r);
}

static void test_list_rename_to_a_name_in_use_is_409(void **state)
{
    (void)state;
    char a[64], b[64], path[128];
    create_list("Alpha", a);
    create_list("Beta", b);
    snprintf(path, sizeof path, "/v3/contact_lists/%s", b);
    struct reply r = api("PUT", path, "{\"name\":\"Alpha\"}");
    assert_int_equal(r.status, 409);
    assert_true(json_object_is_type(r.json, json_type_array));
    reply_free(&r);
    r = api("PUT", path, "{\"name\":\"Gamma\",\"description\":\"d\"}");
    assert_int_equal(r.status, 200);
    assert_string_equal(jpath_str(r.json, "name"), "Gamma");
    assert_string_equal(jpath_str(r.json, "list_id"), b);
    reply_free(&r);
}

static void test_at_most_1000_lists(void **state)
{
    (void)state;
    json_object *body = json_object_new_object();
    json_object *lists = json_object_new_array();
    for (int i = 0; i < 1000; i++) {
        char name[32];
        snprintf(name, sizeof name, "L%04d", i);
        json_object_array_add(lists, json_object_new_string(name));
    }
    json_object_object_add(body, "lists", lists);
    json_object_put(seed(json_object_to_json_string(body)));
    json_object_put(body);
    struct reply r = api("POST", "/v3/contact_lists", "{\"name\":\"one too many\"}");
    assert_int_equal(r.status, 400);
    assert_true(json_object_is_type(r.json, json_type_array));
    reply_free(&r);
}

static void test_list_delete_is_asynchronous(void **state)
{
    (void)state;
    char id[64], path[128];
    create_list("Doomed", id);
    snprintf(path, sizeof path, "/v3/contact_lists/%s", id);
    struct reply r = api("DELETE", path, NULL);
    assert_int_equal(r.status, 202);
    assert_string_equal(jpath_str(r.json, "state"), "initialized");
    char act[64], location[128];
    snprintf(act, sizeof act, "%s", jpath_str(r.json, "activity_id"));
    snprintf(location, sizeof location, "Location: /v3/activities/%s", act);
    assert_non_null(strstr(r.headers, location));
    assert_string_equal(strstr(jpath_str(r.json, "_links.self.href"), "/v3/activities/"),
                        location + strlen("Location: "));
    reply_free(&r);

    json_object *done = wait_activity(act);
    assert_int_equal(jpath_int(done, "status.list_count"), 1);
    assert_int_equal(jpath_int(done, "percent_done"), 100);
    json_object_put(done);

    r = api("GET", path, NULL);
    assert_int_equal(r.status, 404);
    assert_true(json_object_is_type(r.json, json_type_array));
    reply_free(&r);
    r = api("GET", "/v3/contact_lists", NULL);
    assert_int_equal(json_object_array_length(jpath(r.json, "lists")), 0);
    reply_free(&r);
    r = api("GET", "/v3/contact_lists?status=deleted", NULL);
    assert_int_equal(json_object_array_length(jpath(r.json, "lists")), 1);
    assert_string_equal(jpath_str(r.json, "lists.0.list_id"), id);
    assert_non_null(jpath_str(r.json, "lists.0.deleted_at"));
    reply_free(&r);
    r = api("GET", "/v3/contact_lists?status=all", NULL);
    assert_int_equal(json_object_array_length(jpath(r.json, "lists")), 1);
    reply_free(&r);
    r = api("GET", "/v3/contact_lists?status=active,deleted", NULL);
    assert_int_equal(json_object_array_length(jpath(r.json, "lists")), 1);
    reply_free(&r);
    r = api("GET", "/v3/contact_lists?status=gone", NULL);
    assert_int_equal(r.status, 400);
    reply_free(&r);
}

static void test_list_paging_by_cursor(void **state)
{
    (void)state;
    json_object_put(seed("{\"lists\":[\"P1\",\"P2\",\"P3\"]}"));
    struct reply r = api("GET", "/v3/contact_lists?limit=2", NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_object_array_length(jpath(r.json, "lists")), 2);
    const char *next = jpath_str(r.json, "_links.next.href");
    assert_non_null(next);
    assert_memory_equal(next, "/v3/contact_lists?cursor=", 25);
    char path[512];
    snprintf(path, sizeof path, "%s", next);
    reply_free(&r);
    r = api("GET", path, NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_object_array_length(jpath(r.json, "lists")), 1);
    assert_string_equal(jpath_str(r.json, "lists.0.name"), "P3");
    assert_null(jpath(r.json, "_links"));
    reply_free(&r);
    r = api("GET", "/v3/contact_lists?limit=0", NULL);
    assert_int_equal(r.status, 400);
    reply_free(&r);
    r = api("GET", "/v3/contact_lists?cursor=%21%21", NULL);
    assert_int_equal(r.status, 400);
    reply_free(&r);
}

static void test_list_membership_count_and_name_filter(void **state)
{
    (void)state;
    json_object_put(seed("{\"contacts\":[{\"email\":\"a@x.org\",\"lists\":[\"Club\"]},"
                         "{\"email\":\"b@x.org\",\"lists\":[\"Club\",\"Other\"]}]}"));
    struct reply r =
        api("GET", "/v3/contact_lists?name=Club&include_membership_count=active", NULL);
    assert_int_equal(json_object_array_length(jpath(r.json, "lists")), 1);
    assert_int_equal(jpath_int(r.json, "lists.0.membership_count"), 2);
    reply_free(&r);
    r = api("GET", "/v3/contact_lists", NULL);
    assert_null(jpath(r.json, "lists.0.membership_count"));
    reply_free(&r);
}

/* ---- contacts ---- */

static void test_contacts_unique_by_email_even_deleted(void **state)
{
    (void)state;
    const char *body = "{\"email_address\":{\"address\":\"Ann@Example.org\"},"
                       "\"first_name\":\"Ann\",\"create_source\":\"Account\"}";
    struct reply r = api("POST", "/v3/contacts", body);
    assert_int_equal(r.status, 201);
    char id[64], path[128];
    snprintf(id, sizeof id, "%s", jpath_str(r.json, "contact_id"));
    assert_string_equal(jpath_str(r.json, "email_address.address"), "ann@example.org");
    assert_string_equal(jpath_str(r.json, "email_address.permission_to_send"), "implicit");
    reply_free(&r);
    r = api("POST", "/v3/contacts", body);
    assert_int_equal(r.status, 409);
    assert_true(json_object_is_type(r.json, json_type_array));
    reply_free(&r);
    snprintf(path, sizeof path, "/v3/contacts/%s", id);
    r = api("DELETE", path, NULL);
    assert_int_equal(r.status, 204);
    reply_free(&r);
    r = api("POST", "/v3/contacts", body);
    assert_int_equal(r.status, 409); /* deleted contacts still own their address */
    reply_free(&r);
}

static void test_get_contacts_hides_deleted_unless_status_all(void **state)
{
    (void)state;
    json_object_put(seed("{\"contacts\":[{\"email\":\"live@x.org\"},"
                         "{\"email\":\"gone@x.org\",\"deleted\":true}]}"));
    struct reply r = api("GET", "/v3/contacts?email=gone@x.org", NULL);
    assert_int_equal(json_object_array_length(jpath(r.json, "contacts")), 0);
    reply_free(&r);
    r = api("GET", "/v3/contacts?email=gone@x.org&status=all", NULL);
    assert_int_equal(json_object_array_length(jpath(r.json, "contacts")), 1);
    assert_non_null(jpath_str(r.json, "contacts.0.deleted_at"));
    reply_free(&r);
    r = api("GET", "/v3/contacts", NULL);
    assert_int_equal(json_object_array_length(jpath(r.json, "contacts")), 1);
    assert_string_equal(jpath_str(r.json, "contacts.0.email_address.address"), "live@x.org");
    reply_free(&r);
    r = api("GET", "/v3/contacts?status=deleted,unsubscribed", NULL);
    assert_int_equal(json_object_array_length(jpath(r.json, "contacts")), 1);
    reply_free(&r);
    r = api("GET", "/v3/contacts?status=gone", NULL);
    assert_int_equal(r.status, 400);
    reply_free(&r);
}

static void test_get_contacts_filters_and_includes(void **state)
{
    (void)state;
    json_object *s = seed("{\"contacts\":[{\"email\":\"a@x.org\",\"lists\":[\"L1\"]},"
                          "{\"email\":\"b@x.org\",\"lists\":[\"L2\"]},"
                          "{\"email\":\"c@x.org\"}]}");
    char l1[64], query[256];
    struct reply r = api("GET", "/v3/contact_lists?name=L1", NULL);
    snprintf(l1, sizeof l1, "%s", jpath_str(r.json, "lists.0.list_id"));
    reply_free(&r);
    snprintf(query, sizeof query, "/v3/contacts?lists=%s&include=list_memberships", l1);
    r = api("GET", query, NULL);
    assert_int_equal(json_object_array_length(jpath(r.json, "contacts")), 1);
    assert_string_equal(jpath_str(r.json, "contacts.0.email_address.address"), "a@x.org");
    assert_string_equal(jpath_str(r.json, "contacts.0.list_memberships.0"), l1);
    reply_free(&r);
    r = api("GET", "/v3/contacts?email=B@X.org", NULL);
    assert_int_equal(json_object_array_length(jpath(r.json, "contacts")), 1);
    assert_null(jpath(r.json, "contacts.0.list_memberships"));
    reply_free(&r);
    r = api("GET", "/v3/contacts?limit=2&include_count=true", NULL);
    assert_int_equal(json_object_array_length(jpath(r.json, "contacts")), 2);
    assert_int_equal(jpath_int(r.json, "contacts_count"), 3);
    assert_non_null(jpath_str(r.json, "_links.next.href"));
    reply_free(&r);
    r = api("GET", "/v3/contacts?updated_after=2999-01-01T00:00:00Z", NULL);
    assert_int_equal(json_object_array_length(jpath(r.json, "contacts")), 0);
    reply_free(&r);
    r = api("GET", "/v3/contacts?updated_after=yesterday", NULL);
    assert_int_equal(r.status, 400);
    reply_free(&r);
    r = api("GET", "/v3/contacts?limit=501", NULL);
    assert_int_equal(r.status, 400);
    reply_free(&r);
    /* more than 25 lists in lists= */
    char many[2048] = "/v3/contacts?lists=";
    for (int i = 0; i < 26; i++)
        strcat(many, i ? ",11111111-2222-4333-8444-555555555555"
                       : "11111111-2222-4333-8444-555555555555");
    r = api("GET", many, NULL);
    assert_int_equal(r.status, 400);
    reply_free(&r);
    json_object_put(s);
}

static void test_put_contact_replaces_and_revives(void **state)
{
    (void)state;
    json_object *s = seed("{\"contacts\":[{\"email\":\"p@x.org\",\"first_name\":\"P\","
                          "\"last_name\":\"Q\",\"deleted\":true},{\"email\":\"o@x.org\"}]}");
    char path[128];
    snprintf(path, sizeof path, "/v3/contacts/%s", jpath_str(s, "contacts.0.contact_id"));
    struct reply r = api("PUT", path, "{\"first_name\":\"New\"}");
    assert_int_equal(r.status, 400); /* update_source is required */
    assert_non_null(strstr(jpath_str(r.json, "0.error_message"), "update_source"));
    reply_free(&r);
    r = api("PUT", path,
            "{\"email_address\":{\"address\":\"o@x.org\"},\"update_source\":\"Account\"}");
    assert_int_equal(r.status, 409);
    reply_free(&r);
    r = api("PUT", path, "{\"first_name\":\"New\",\"update_source\":\"Account\"}");
    assert_int_equal(r.status, 200);
    assert_string_equal(jpath_str(r.json, "first_name"), "New");
    assert_null(jpath(r.json, "last_name")); /* omitted core fields are cleared */
    assert_null(jpath(r.json, "deleted_at"));
    reply_free(&r);
    json_object_put(s);
}

/* ---- import and memberships ---- */

static json_object *post_activity(const char *path, const char *body, int expect)
{
    struct reply r = api("POST", path, body);
    assert_int_equal(r.status, expect);
    return reply_take_json(&r);
}

static void test_import_creates_contacts_and_adds_memberships(void **state)
{
    (void)state;
    char l1[64], body[512];
    create_list("Imported", l1);
    ctl_ok("POST", "/config", "{\"activity_ms\":400}");
    snprintf(body, sizeof body,
             "{\"import_data\":[{\"email\":\"i1@x.org\",\"first_name\":\"I\",\"last_name\":"
             "\"One\"},{\"email\":\"i2@x.org\"}],\"list_ids\":[\"%s\"]}",
             l1);
    json_object *a = post_activity("/v3/activities/contacts_json_import", body, 201);
    assert_string_equal(jpath_str(a, "state"), "initialized");
    assert_int_equal(jpath_int(a, "status.items_total_count"), 2);
    char id[64];
    snprintf(id, sizeof id, "%s", jpath_str(a, "activity_id"));
    json_object_put(a);
    /* nothing lands before the activity completes */
    struct reply r = api("GET", "/v3/contacts", NULL);
    assert_int_equal(json_object_array_length(jpath(r.json, "contacts")), 0);
    reply_free(&r);
    ts_sleep_ms(250);
    char path[128];
    snprintf(path, sizeof path, "/v3/activities/%s", id);
    r = api("GET", path, NULL);
    assert_string_equal(jpath_str(r.json, "state"), "processing");
    reply_free(&r);
    json_object *done = wait_activity(id);
    assert_int_equal(jpath_int(done, "status.items_total_count"), 2);
    assert_int_equal(jpath_int(done, "status.items_completed_count"), 2);
    assert_int_equal(jpath_int(done, "status.person_count"), 2);
    assert_int_equal(jpath_int(done, "status.error_count"), 0);
    assert_int_equal(jpath_int(done, "status.cannot_add_to_list_count"), 0);
    assert_int_equal(json_object_array_length(jpath(done, "activity_errors")), 0);
    json_object_put(done);
    r = api("GET", "/v3/contacts?email=i1@x.org&include=list_memberships", NULL);
    assert_string_equal(jpath_str(r.json, "contacts.0.first_name"), "I");
    assert_string_equal(jpath_str(r.json, "contacts.0.email_address.permission_to_send"),
                        "implicit");
    assert_string_equal(jpath_str(r.json, "contacts.0.email_address.opt_in_source"), "Account");
    assert_string_equal(jpath_str(r.json, "contacts.0.list_memberships.0"), l1);
    reply_free(&r);
}

static void test_import_never_adds_unsubscribed_contacts(void **state)
{
    (void)state;
    char l1[64], body[512];
    create_list("News", l1);
    json_object_put(seed("{\"contacts\":[{\"email\":\"u@x.org\"}]}"));
    struct reply r = ctl("POST", "/unsubscribe", "{\"email\":\"U@x.org\"}");
    assert_int_equal(r.status, 200);
    assert_string_equal(jpath_str(r.json, "email_address.permission_to_send"), "unsubscribed");
    assert_string_equal(jpath_str(r.json, "email_address.opt_out_source"), "Contact");
    reply_free(&r);
    snprintf(body, sizeof body,
             "{\"import_data\":[{\"email\":\"u@x.org\"},{\"email\":\"ok@x.org\"}],"
             "\"list_ids\":[\"%s\"]}",
             l1);
    json_object *a = post_activity("/v3/activities/contacts_json_import", body, 201);
    json_object *done = wait_activity(jpath_str(a, "activity_id"));
    assert_int_equal(jpath_int(done, "status.cannot_add_to_list_count"), 1);
    json_object_put(a);
    json_object_put(done);
    json_object *st = NULL;
    r = ctl("GET", "/state", NULL);
    st = r.json;
    assert_string_equal(jpath_str(st, "lists.0.name"), "News");
    assert_int_equal(json_object_array_length(jpath(st, "lists.0.members")), 1);
    assert_string_equal(jpath_str(st, "lists.0.members.0"), "ok@x.org");
    reply_free(&r);
}

static void test_import_invalid_email_is_a_per_item_error(void **state)
{
    (void)state;
    char l1[64], body[512];
    create_list("Mixed", l1);
    snprintf(body, sizeof body,
             "{\"import_data\":[{\"email\":\"no-at-sign.example.org\"},{\"email\":\"a@b@c.org\"},"
             "{\"email\":\"good@x.org\"}],\"list_ids\":[\"%s\"]}",
             l1);
    json_object *a = post_activity("/v3/activities/contacts_json_import", body, 201);
    json_object *done = wait_activity(jpath_str(a, "activity_id"));
    assert_int_equal(jpath_int(done, "status.error_count"), 2);
    assert_int_equal(jpath_int(done, "status.person_count"), 1);
    assert_int_equal(json_object_array_length(jpath(done, "activity_errors")), 2);
    assert_non_null(strstr(jpath_str(done, "activity_errors.0"), "no-at-sign.example.org"));
    json_object_put(a);
    json_object_put(done);
    struct reply r = api("GET", "/v3/contacts?status=all", NULL);
    assert_int_equal(json_object_array_length(jpath(r.json, "contacts")), 1);
    reply_free(&r);
}

static void test_import_request_limits(void **state)
{
    (void)state;
    char l1[64];
    create_list("Big", l1);
    /* no list_ids */
    json_object_put(post_activity("/v3/activities/contacts_json_import",
                                  "{\"import_data\":[{\"email\":\"a@x.org\"}]}", 400));
    /* empty list_ids */
    json_object *e =
        post_activity("/v3/activities/contacts_json_import",
                      "{\"import_data\":[{\"email\":\"a@x.org\"}],\"list_ids\":[]}", 400);
    assert_non_null(strstr(jpath_str(e, "0.error_message"), "list_ids"));
    json_object_put(e);
    /* 51 list_ids */
    json_object *body = json_object_new_object();
    json_object *rows = json_object_new_array();
    json_object *row = json_object_new_object();
    json_object_object_add(row, "email", json_object_new_string("a@x.org"));
    json_object_array_add(rows, row);
    json_object_object_add(body, "import_data", rows);
    json_object *ids = json_object_new_array();
    for (int i = 0; i < 51; i++)
        json_object_array_add(ids, json_object_new_string(l1));
    json_object_object_add(body, "list_ids", ids);
    json_object_put(post_activity("/v3/activities/contacts_json_import",
                                  json_object_to_json_string(body), 400));
    json_object_put(body);
    /* 40,001 contacts */
    size_t cap = 40001 * 40 + 256, len = 0;
    char *big = malloc(cap);
    len += (size_t)snprintf(big + len, cap - len, "{\"import_data\":[");
    for (int i = 0; i < 40001; i++)
        len +=
            (size_t)snprintf(big + len, cap - len, "%s{\"email\":\"c%d@x.org\"}", i ? "," : "", i);
    snprintf(big + len, cap - len, "],\"list_ids\":[\"%s\"]}", l1);
    e = post_activity("/v3/activities/contacts_json_import", big, 400);
    assert_non_null(strstr(jpath_str(e, "0.error_message"), "import_data"));
    json_object_put(e);
    free(big);
    /* 4 MB or more */
    cap = 4u * 1024 * 1024 + 1024;
    big = malloc(cap);
    len = (size_t)snprintf(big, cap, "{\"import_data\":[{\"email\":\"a@x.org\",\"first_name\":\"");
    memset(big + len, 'x', 4u * 1024 * 1024);
    len += 4u * 1024 * 1024;
    snprintf(big + len, cap - len, "\"}],\"list_ids\":[\"%s\"]}", l1);
    json_object_put(post_activity("/v3/activities/contacts_json_import", big, 400));
    free(big);
    /* a field past the document's maxLength */
    char body2[512];
    snprintf(body2, sizeof body2,
             "{\"import_data\":[{\"email\":\"a@x.org\",\"first_name\":\"%060d\"}],"
             "\"list_ids\":[\"%s\"]}",
             0, l1);
    e = post_activity("/v3/activities/contacts_json_import", body2, 400);
    assert_non_null(strstr(jpath_str(e, "0.error_message"), "#/import_data/0/first_name"));
    json_object_put(e);
}

static void test_add_and_remove_memberships(void **state)
{
    (void)state;
    json_object *s = seed("{\"lists\":[\"Target\"],\"contacts\":[{\"email\":\"m1@x.org\"},"
                          "{\"email\":\"m2@x.org\"}]}");
    char body[1024];
    snprintf(body, sizeof body,
             "{\"source\":{\"contact_ids\":[\"%s\",\"%s\"]},\"list_ids\":[\"%s\"]}",
             jpath_str(s, "contacts.0.contact_id"), jpath_str(s, "contacts.1.contact_id"),
             jpath_str(s, "lists.0.list_id"));
    json_object *a = post_activity("/v3/activities/add_list_memberships", body, 201);
    json_object *done = wait_activity(jpath_str(a, "activity_id"));
    assert_int_equal(jpath_int(done, "status.items_total_count"), 2);
    assert_int_equal(jpath_int(done, "status.items_completed_count"), 2);
    assert_int_equal(jpath_int(done, "status.list_count"), 1);
    json_object_put(a);
    json_object_put(done);
    struct reply r = ctl("GET", "/state", NULL);
    assert_int_equal(json_object_array_length(jpath(r.json, "lists.0.members")), 2);
    reply_free(&r);
    snprintf(body, sizeof body, "{\"source\":{\"contact_ids\":[\"%s\"]},\"list_ids\":[\"%s\"]}",
             jpath_str(s, "contacts.0.contact_id"), jpath_str(s, "lists.0.list_id"));
    a = post_activity("/v3/activities/remove_list_memberships", body, 201);
    json_object_put(wait_activity(jpath_str(a, "activity_id")));
    json_object_put(a);
    r = ctl("GET", "/state", NULL);
    assert_int_equal(json_object_array_length(jpath(r.json, "lists.0.members")), 1);
    assert_string_equal(jpath_str(r.json, "lists.0.members.0"), "m2@x.org");
    reply_free(&r);
    /* 501 contact ids */
    json_object *big = json_object_new_object();
    json_object *src = json_object_new_object();
    json_object *cids = json_object_new_array();
    for (int i = 0; i < 501; i++)
        json_object_array_add(cids, json_object_new_string(jpath_str(s, "contacts.0.contact_id")));
    json_object_object_add(src, "contact_ids", cids);
    json_object_object_add(big, "source", src);
    json_object *lids = json_object_new_array();
    json_object_array_add(lids, json_object_new_string(jpath_str(s, "lists.0.list_id")));
    json_object_object_add(big, "list_ids", lids);
    json_object *e =
        post_activity("/v3/activities/add_list_memberships", json_object_to_json_string(big), 400);
    assert_non_null(strstr(jpath_str(e, "0.error_message"), "source/contact_ids"));
    json_object_put(e);
    json_object_put(big);
    /* unknown list on remove → 404 */
    snprintf(body, sizeof body,
             "{\"source\":{\"contact_ids\":[\"%s\"]},\"list_ids\":"
             "[\"11111111-2222-4333-8444-555555555555\"]}",
             jpath_str(s, "contacts.0.contact_id"));
    json_object_put(post_activity("/v3/activities/remove_list_memberships", body, 404));
    json_object_put(s);
}

static void test_a_contact_is_on_at_most_50_lists(void **state)
{
    (void)state;
    json_object *body = json_object_new_object();
    json_object *contacts = json_object_new_array();
    json_object *c = json_object_new_object();
    json_object_object_add(c, "email", json_object_new_string("busy@x.org"));
    json_object *ls = json_object_new_array();
    for (int i = 0; i < 50; i++) {
        char name[16];
        snprintf(name, sizeof name, "M%02d", i);
        json_object_array_add(ls, json_object_new_string(name));
    }
    json_object_object_add(c, "lists", ls);
    json_object_array_add(contacts, c);
    json_object_object_add(body, "contacts", contacts);
    json_object *s = seed(json_object_to_json_string(body));
    json_object_put(body);
    char l51[64], req[512];
    create_list("M50", l51);
    snprintf(req, sizeof req, "{\"source\":{\"contact_ids\":[\"%s\"]},\"list_ids\":[\"%s\"]}",
             jpath_str(s, "contacts.0.contact_id"), l51);
    json_object *a = post_activity("/v3/activities/add_list_memberships", req, 201);
    json_object *done = wait_activity(jpath_str(a, "activity_id"));
    assert_int_equal(json_object_array_length(jpath(done, "activity_errors")), 1);
    json_object_put(a);
    json_object_put(done);
    struct reply r = api("GET", "/v3/contacts?email=busy@x.org&include=list_memberships", NULL);
    assert_int_equal(json_object_array_length(jpath(r.json, "contacts.0.list_memberships")), 50);
    reply_free(&r);
    json_object_put(s);
}

static void test_1000_queued_activities_is_429(void **state)
{
    (void)state;
    json_object *s = seed("{\"lists\":[\"Q\"],\"contacts\":[{\"email\":\"q@x.org\"}]}");
    ctl_ok("POST", "/config", "{\"activity_ms\":600000}");
    char body[512];
    snprintf(body, sizeof body, "{\"source\":{\"contact_ids\":[\"%s\"]},\"list_ids\":[\"%s\"]}",
             jpath_str(s, "contacts.0.contact_id"), jpath_str(s, "lists.0.list_id"));
    for (int i = 0; i < 1000; i++) {
        struct reply r = api("POST", "/v3/activities/add_list_memberships", body);
        assert_int_equal(r.status, 201);
        reply_free(&r);
    }
    struct reply r = api("POST", "/v3/activities/add_list_memberships", body);
    assert_int_equal(r.status, 429);
    assert_true(json_object_is_type(r.json, json_type_object));
    reply_free(&r);
    r = api("GET", "/v3/activities?limit=5", NULL);
    assert_int_equal(json_object_array_length(jpath(r.json, "activities")), 5);
    assert_non_null(jpath_str(r.json, "_links.next.href"));
    reply_free(&r);
    ctl_ok("POST", "/activities/complete", NULL);
    r = api("POST", "/v3/activities/add_list_memberships", body);
    assert_int_equal(r.status, 201);
    reply_free(&r);
    json_object_put(s);
}

/* ---- limits ---- */

static void test_fifth_request_in_a_second_is_throttled(void **state)
{
    (void)state;
    ctl_ok("POST", "/config", "{\"rate\":4}");
    ts_sleep_ms(1000);
    for (int i = 0; i < 4; i++) {
        struct reply r = api("GET", "/v3/contact_lists", NULL);
        assert_int_equal(r.status, 200);
        reply_free(&r);
    }
    struct reply r = api("GET", "/v3/contact_lists", NULL);
    assert_int_equal(r.status, 429);
    assert_string_equal(jpath_str(r.json, "error_key"), "throttled");
    reply_free(&r);
    ts_sleep_ms(1050);
    r = api("GET", "/v3/contact_lists", NULL);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    r = ctl("GET", "/counters", NULL);
    assert_int_equal(jpath_int(r.json, "throttled"), 1);
    assert_int_equal(jpath_int(r.json, "max_per_second"), 5);
    assert_int_equal(jpath_int(r.json, "by_endpoint.GET /v3/contact_lists"), 6);
    reply_free(&r);
}

static void test_daily_quota_resets_at_midnight_utc(void **state)
{
    (void)state;
    ctl_ok("POST", "/config", "{\"daily_limit\":3}");
    for (int i = 0; i < 3; i++) {
        struct reply r = api("GET", "/v3/contacts", NULL);
        assert_int_equal(r.status, 200);
        reply_free(&r);
    }
    struct reply r = api("GET", "/v3/contacts", NULL);
    assert_int_equal(r.status, 429);
    assert_string_equal(jpath_str(r.json, "error_key"), "quota_exceeded");
    reply_free(&r);
    ctl_ok("POST", "/advance_day", NULL);
    r = api("GET", "/v3/contacts", NULL);
    assert_int_equal(r.status, 200);
    reply_free(&r);
}

/* ---- validation ---- */

static void test_validation_names_the_field(void **state)
{
    (void)state;
    char auth[300];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
    const char *text[] = {auth, "Content-Type: text/plain", NULL};
    struct reply r = call_full("POST", "/v3/contact_lists", text, "{\"name\":\"x\"}", 12, 0);
    assert_int_equal(r.status, 415);
    assert_true(json_object_is_type(r.json, json_type_array));
    reply_free(&r);
    r = api("POST", "/v3/contact_lists", "{\"description\":\"no name\"}");
    assert_int_equal(r.status, 400);
    assert_true(json_object_is_type(r.json, json_type_array));
    assert_non_null(strstr(jpath_str(r.json, "0.error_message"), "name"));
    reply_free(&r);
    r = api("POST", "/v3/contact_lists", "{\"name\":");
    assert_int_equal(r.status, 400);
    reply_free(&r);
    r = api("POST", "/v3/contacts",
            "{\"email_address\":{\"address\":\"bad\"},\"create_source\":\"Account\"}");
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(jpath_str(r.json, "0.error_message"), "email_address/address"));
    reply_free(&r);
    r = api("POST", "/v3/contacts", "{\"email_address\":{\"address\":\"x@y.org\"}}");
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(jpath_str(r.json, "0.error_message"), "create_source"));
    reply_free(&r);
    r = api("GET", "/v3/contact_lists/not-a-uuid", NULL);
    assert_int_equal(r.status, 404);
    reply_free(&r);
    r = api("GET", "/v3/contacts?include=everything", NULL);
    assert_int_equal(r.status, 400);
    reply_free(&r);
}

/* ---- control API ---- */

static void test_admin_rename_and_delete(void **state)
{
    (void)state;
    char id[64], path[128];
    create_list("Admin", id);
    snprintf(path, sizeof path, "/lists/%s/rename", id);
    ctl_ok("POST", path, "{\"name\":\"Renamed in CC\"}");
    snprintf(path, sizeof path, "/v3/contact_lists/%s", id);
    struct reply r = api("GET", path, NULL);
    assert_string_equal(jpath_str(r.json, "name"), "Renamed in CC");
    reply_free(&r);
    snprintf(path, sizeof path, "/lists/%s/delete", id);
    ctl_ok("POST", path, NULL);
    snprintf(path, sizeof path, "/v3/contact_lists/%s", id);
    r = api("GET", path, NULL);
    assert_int_equal(r.status, 404);
    reply_free(&r);
}

static void test_injected_faults(void **state)
{
    (void)state;
    ctl_ok("POST", "/faults", "{\"mode\":\"status\",\"status\":503,\"count\":2}");
    for (int i = 0; i < 2; i++) {
        struct reply r = api("GET", "/v3/contact_lists", NULL);
        assert_int_equal(r.status, 503);
        reply_free(&r);
    }
    struct reply r = api("GET", "/v3/contact_lists", NULL);
    assert_int_equal(r.status, 200);
    reply_free(&r);

    ctl_ok("POST", "/faults", "{\"mode\":\"drop\",\"count\":1}");
    r = api("GET", "/v3/contact_lists", NULL);
    assert_int_equal(r.status, 0);
    reply_free(&r);

    /* a delay past the client's timeout: the client gives up, the list is created */
    ctl_ok("POST", "/faults", "{\"mode\":\"delay\",\"delay_ms\":700,\"count\":1}");
    char auth[300];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
    const char *headers[] = {auth, "Content-Type: application/json", NULL};
    r = call_full("POST", "/v3/contact_lists", headers, "{\"name\":\"Slow\"}", 15, 200);
    assert_int_equal(r.status, 0);
    reply_free(&r);
    ts_sleep_ms(800);
    r = api("GET", "/v3/contact_lists?name=Slow", NULL);
    assert_int_equal(json_object_array_length(jpath(r.json, "lists")), 1);
    reply_free(&r);

    ctl_ok("POST", "/faults", "{\"mode\":\"status\",\"status\":500,\"fraction\":1.0}");
    r = api("GET", "/v3/contacts", NULL);
    assert_int_equal(r.status, 500);
    reply_free(&r);
    ctl_ok("DELETE", "/faults", NULL);
    r = api("GET", "/v3/contacts", NULL);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    r = ctl("GET", "/counters", NULL);
    assert_int_equal(jpath_int(r.json, "faults"), 5);
    reply_free(&r);
}

static void test_request_log_records_requests(void **state)
{
    (void)state;
    struct reply r = api("POST", "/v3/contact_lists", "{\"name\":\"Logged\"}");
    reply_free(&r);
    r = api("GET", "/v3/contact_lists?limit=3", NULL);
    reply_free(&r);
    r = ctl("GET", "/log", NULL);
    assert_int_equal(json_object_array_length(jpath(r.json, "requests")), 2);
    assert_string_equal(jpath_str(r.json, "requests.0.method"), "POST");
    assert_string_equal(jpath_str(r.json, "requests.0.path"), "/v3/contact_lists");
    assert_int_equal(jpath_int(r.json, "requests.0.status"), 201);
    assert_string_equal(jpath_str(r.json, "requests.0.body"), "{\"name\":\"Logged\"}");
    assert_string_equal(jpath_str(r.json, "requests.1.path"), "/v3/contact_lists?limit=3");
    reply_free(&r);
    r = ctl("GET", "/log?since=1", NULL);
    assert_int_equal(json_object_array_length(jpath(r.json, "requests")), 1);
    reply_free(&r);
}

/* ---- custom fields and tags ---- */

/* The first error's key of a 4xx array body, after asserting the array shape. */
static void assert_error_array(const struct reply *r, int status, const char *key)
{
    assert_int_equal(r->status, status);
    assert_true(json_object_is_type(r->json, json_type_array));
    assert_string_equal(jpath_str(r->json, "0.error_key"), key);
}

static void create_field(const char *label, const char *type, char id[64])
{
    char body[256];
    snprintf(body, sizeof body, "{\"label\":\"%s\",\"type\":\"%s\"}", label, type);
    struct reply r = api("POST", "/v3/contact_custom_fields", body);
    assert_int_equal(r.status, 201);
    snprintf(id, 64, "%s", jpath_str(r.json, "custom_field_id"));
    reply_free(&r);
}

static void create_tag(const char *name, char id[64])
{
    char body[300];
    snprintf(body, sizeof body, "{\"name\":\"%s\"}", name);
    struct reply r = api("POST", "/v3/contact_tags", body);
    assert_int_equal(r.status, 201);
    snprintf(id, 64, "%s", jpath_str(r.json, "tag_id"));
    reply_free(&r);
}

static void test_custom_fields_crud_and_100_per_account(void **state)
{
    (void)state;
    char id[64], path[128];
    struct reply r =
        api("POST", "/v3/contact_custom_fields", "{\"label\":\"Member Type\",\"type\":\"string\"}");
    assert_int_equal(r.status, 201);
    assert_string_equal(jpath_str(r.json, "name"), "Member_Type");
    assert_string_equal(jpath_str(r.json, "label"), "Member Type");
    assert_string_equal(jpath_str(r.json, "type"), "string");
    snprintf(id, sizeof id, "%s", jpath_str(r.json, "custom_field_id"));
    reply_free(&r);
    r = api("POST", "/v3/contact_custom_fields", "{\"label\":\"member type\",\"type\":\"date\"}");
    assert_error_array(&r, 409, "conflict");
    reply_free(&r);
    r = api("POST", "/v3/contact_custom_fields", "{\"label\":\"X\"}");
    assert_error_array(&r, 400, "json.field.required");
    assert_non_null(strstr(jpath_str(r.json, "0.error_message"), "#/type"));
    reply_free(&r);
    snprintf(path, sizeof path, "/v3/contact_custom_fields/%s", id);
    r = api("PUT", path, "{\"label\":\"Member Kind\"}");
    assert_int_equal(r.status, 200);
    assert_string_equal(jpath_str(r.json, "name"), "Member_Kind");
    reply_free(&r);
    for (int i = 1; i < 100; i++) {
        char label[32], other[64];
        snprintf(label, sizeof label, "F%d", i);
        create_field(label, "string", other);
    }
    r = api("POST", "/v3/contact_custom_fields", "{\"label\":\"F100\",\"type\":\"string\"}");
    assert_error_array(&r, 400, "custom_fields.limit.reached");
    reply_free(&r);
    r = api("GET", "/v3/contact_custom_fields?limit=100", NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_object_array_length(jpath(r.json, "custom_fields")), 100);
    assert_null(jpath(r.json, "_links"));
    reply_free(&r);
    r = api("DELETE", path, NULL);
    assert_int_equal(r.status, 204);
    reply_free(&r);
    r = api("GET", path, NULL);
    assert_error_array(&r, 404, "not.found");
    reply_free(&r);
}

static void test_import_carries_custom_fields_and_reads_show_them(void **state)
{
    (void)state;
    char l1[64], fid[64], body[4096];
    create_list("Fields", l1);
    create_field("Member Type", "string", fid);
    snprintf(body, sizeof body,
             "{\"import_data\":[{\"email\":\"f@x.org\",\"cf:Member_Type\":\"Gold\"}],"
             "\"list_ids\":[\"%s\"]}",
             l1);
    json_object *a = post_activity(IMPORT_PATH, body, 201);
    json_object_put(wait_activity(jpath_str(a, "activity_id")));
    json_object_put(a);
    struct reply r = api("GET", "/v3/contacts?email=f@x.org&include=custom_fields", NULL);
    assert_int_equal(json_object_array_length(jpath(r.json, "contacts.0.custom_fields")), 1);
    assert_string_equal(jpath_str(r.json, "contacts.0.custom_fields.0.custom_field_id"), fid);
    assert_string_equal(jpath_str(r.json, "contacts.0.custom_fields.0.value"), "Gold");
    reply_free(&r);
    r = api("GET", "/v3/contacts?email=f@x.org", NULL); /* not asked for: not shown */
    assert_null(jpath(r.json, "contacts.0.custom_fields"));
    reply_free(&r);
    /* "" clears the value */
    snprintf(body, sizeof body,
             "{\"import_data\":[{\"email\":\"f@x.org\",\"cf:Member_Type\":\"\"}],"
             "\"list_ids\":[\"%s\"]}",
             l1);
    a = post_activity(IMPORT_PATH, body, 201);
    json_object_put(wait_activity(jpath_str(a, "activity_id")));
    json_object_put(a);
    r = api("GET", "/v3/contacts?email=f@x.org&include=custom_fields", NULL);
    assert_int_equal(json_object_array_length(jpath(r.json, "contacts.0.custom_fields")), 0);
    reply_free(&r);
    /* a field the account does not have is refused, naming the column */
    snprintf(body, sizeof body,
             "{\"import_data\":[{\"email\":\"f@x.org\",\"cf:Chapter\":\"N\"}],"
             "\"list_ids\":[\"%s\"]}",
             l1);
    r = api("POST", IMPORT_PATH, body);
    assert_error_array(&r, 400, "json.field.invalid");
    assert_non_null(strstr(jpath_str(r.json, "0.error_message"), "#/import_data/0/cf:Chapter"));
    reply_free(&r);
    /* 26 custom fields in a row are refused */
    size_t n = (size_t)snprintf(body, sizeof body, "{\"import_data\":[{\"email\":\"f@x.org\"");
    for (int i = 0; i < 26; i++) {
        char label[16], other[64];
        snprintf(label, sizeof label, "C%d", i);
        create_field(label, "string", other);
        n += (size_t)snprintf(body + n, sizeof body - n, ",\"cf:C%d\":\"v\"", i);
    }
    snprintf(body + n, sizeof body - n, "}],\"list_ids\":[\"%s\"]}", l1);
    r = api("POST", IMPORT_PATH, body);
    assert_error_array(&r, 400, "json.max.items.exceeded");
    assert_non_null(strstr(jpath_str(r.json, "0.error_message"), "at most 25 custom fields"));
    reply_free(&r);
}

static void test_tags_crud_and_taggings(void **state)
{
    (void)state;
    char tag[64], other[64], path[128], body[1024];
    create_tag("Novi: Board", tag);
    struct reply r = api("POST", "/v3/contact_tags", "{\"name\":\"novi: board\"}");
    assert_error_array(&r, 409, "conflict");
    reply_free(&r);
    json_object *s = seed("{\"contacts\":[{\"email\":\"t1@x.org\"},{\"email\":\"t2@x.org\"}]}");
    char c1[64], c2[64];
    snprintf(c1, sizeof c1, "%s", jpath_str(s, "contacts.0.contact_id"));
    snprintf(c2, sizeof c2, "%s", jpath_str(s, "contacts.1.contact_id"));
    json_object_put(s);
    snprintf(body, sizeof body,
             "{\"source\":{\"contact_ids\":[\"%s\",\"%s\"]},\"tag_ids\":[\"%s\"]}", c1, c2, tag);
    json_object *a = post_activity("/v3/activities/contacts_taggings_add", body, 201);
    json_object *done = wait_activity(jpath_str(a, "activity_id"));
    assert_int_equal(jpath_int(done, "status.items_total_count"), 2);
    assert_int_equal(jpath_int(done, "status.tags_count"), 1);
    json_object_put(done);
    json_object_put(a);
    snprintf(path, sizeof path, "/v3/contact_tags/%s?include_count=true", tag);
    r = api("GET", path, NULL);
    assert_int_equal(jpath_int(r.json, "contacts_count"), 2);
    reply_free(&r);
    snprintf(path, sizeof path, "/v3/contacts/%s?include=taggings", c1);
    r = api("GET", path, NULL);
    assert_string_equal(jpath_str(r.json, "taggings.0"), tag);
    reply_free(&r);
    snprintf(body, sizeof body, "{\"source\":{\"contact_ids\":[\"%s\"]},\"tag_ids\":[\"%s\"]}", c1,
             tag);
    a = post_activity("/v3/activities/contacts_taggings_remove", body, 201);
    json_object_put(wait_activity(jpath_str(a, "activity_id")));
    json_object_put(a);
    r = api("GET", path, NULL);
    assert_int_equal(json_object_array_length(jpath(r.json, "taggings")), 0);
    reply_free(&r);
    /* an unknown tag is 404; a source other than contact_ids is not simulated (400) */
    create_tag("Gone", other);
    snprintf(path, sizeof path, "/v3/contact_tags/%s", other);
    r = api("DELETE", path, NULL);
    assert_int_equal(r.status, 202);
    json_object_put(wait_activity(jpath_str(r.json, "activity_id")));
    reply_free(&r);
    snprintf(body, sizeof body, "{\"source\":{\"contact_ids\":[\"%s\"]},\"tag_ids\":[\"%s\"]}", c1,
             other);
    r = api("POST", "/v3/activities/contacts_taggings_add", body);
    assert_error_array(&r, 404, "not.found");
    reply_free(&r);
    snprintf(body, sizeof body, "{\"source\":{\"all_active_contacts\":true},\"tag_ids\":[\"%s\"]}",
             tag);
    r = api("POST", "/v3/activities/contacts_taggings_add", body);
    assert_error_array(&r, 400, "json.field.invalid");
    reply_free(&r);
    /* rename: PUT, and a taken name is 409 */
    create_tag("Other", other);
    snprintf(path, sizeof path, "/v3/contact_tags/%s", tag);
    r = api("PUT", path, "{\"name\":\"other\"}");
    assert_error_array(&r, 409, "conflict");
    reply_free(&r);
    r = api("PUT", path, "{\"name\":\"Novi: Directors\"}");
    assert_int_equal(r.status, 200);
    assert_string_equal(jpath_str(r.json, "name"), "Novi: Directors");
    reply_free(&r);
}

static void test_a_contact_carries_at_most_50_tags(void **state)
{
    (void)state;
    json_object *s = seed("{\"contacts\":[{\"email\":\"many@x.org\"}]}");
    char cid[64], body[4096];
    snprintf(cid, sizeof cid, "%s", jpath_str(s, "contacts.0.contact_id"));
    json_object_put(s);
    size_t n = (size_t)snprintf(body, sizeof body,
                                "{\"source\":{\"contact_ids\":[\"%s\"]},\"tag_ids\":[", cid);
    for (int i = 0; i < 50; i++) {
        char name[16], id[64];
        snprintf(name, sizeof name, "T%d", i);
        create_tag(name, id);
        n += (size_t)snprintf(body + n, sizeof body - n, "%s\"%s\"", i ? "," : "", id);
    }
    snprintf(body + n, sizeof body - n, "]}");
    json_object *a = post_activity("/v3/activities/contacts_taggings_add", body, 201);
    json_object *done = wait_activity(jpath_str(a, "activity_id"));
    assert_int_equal(json_object_array_length(jpath(done, "activity_errors")), 0);
    json_object_put(done);
    json_object_put(a);
    char extra[64];
    create_tag("T50", extra);
    snprintf(body, sizeof body, "{\"source\":{\"contact_ids\":[\"%s\"]},\"tag_ids\":[\"%s\"]}", cid,
             extra);
    a = post_activity("/v3/activities/contacts_taggings_add", body, 201);
    done = wait_activity(jpath_str(a, "activity_id"));
    assert_int_equal(json_object_array_length(jpath(done, "activity_errors")), 1);
    json_object_put(done);
    json_object_put(a);
    char path[128];
    snprintf(path, sizeof path, "/v3/contacts/%s?include=taggings", cid);
    struct reply r = api("GET", path, NULL);
    assert_int_equal(json_object_array_length(jpath(r.json, "taggings")), 50);
    reply_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_request_without_token_is_401_single_object, reset_sim),
        cmocka_unit_test_setup(test_access_token_expires, reset_sim),
        cmocka_unit_test_setup(test_expire_all_tokens_control, reset_sim),
        cmocka_unit_test_setup(test_refresh_tokens_rotate_and_are_single_use, reset_sim),
        cmocka_unit_test_setup(test_list_names_are_unique, reset_sim),
        cmocka_unit_test_setup(test_list_rename_to_a_name_in_use_is_409, reset_sim),
        cmocka_unit_test_setup(test_at_most_1000_lists, reset_sim),
        cmocka_unit_test_setup(test_list_delete_is_asynchronous, reset_sim),
        cmocka_unit_test_setup(test_list_paging_by_cursor, reset_sim),
        cmocka_unit_test_setup(test_list_membership_count_and_name_filter, reset_sim),
        cmocka_unit_test_setup(test_contacts_unique_by_email_even_deleted, reset_sim),
        cmocka_unit_test_setup(test_get_contacts_hides_deleted_unless_status_all, reset_sim),
        cmocka_unit_test_setup(test_get_contacts_filters_and_includes, reset_sim),
        cmocka_unit_test_setup(test_put_contact_replaces_and_revives, reset_sim),
        cmocka_unit_test_setup(test_import_creates_contacts_and_adds_memberships, reset_sim),
        cmocka_unit_test_setup(test_import_never_adds_unsubscribed_contacts, reset_sim),
        cmocka_unit_test_setup(test_import_invalid_email_is_a_per_item_error, reset_sim),
        cmocka_unit_test_setup(test_import_request_limits, reset_sim),
        cmocka_unit_test_setup(test_add_and_remove_memberships, reset_sim),
        cmocka_unit_test_setup(test_a_contact_is_on_at_most_50_lists, reset_sim),
        cmocka_unit_test_setup(test_1000_queued_activities_is_429, reset_sim),
        cmocka_unit_test_setup(test_fifth_request_in_a_second_is_throttled, reset_sim),
        cmocka_unit_test_setup(test_daily_quota_resets_at_midnight_utc, reset_sim),
        cmocka_unit_test_setup(test_validation_names_the_field, reset_sim),
        cmocka_unit_test_setup(test_admin_rename_and_delete, reset_sim),
        cmocka_unit_test_setup(test_injected_faults, reset_sim),
        cmocka_unit_test_setup(test_request_log_records_requests, reset_sim),
        cmocka_unit_test_setup(test_custom_fields_crud_and_100_per_account, reset_sim),
        cmocka_unit_test_setup(test_import_carries_custom_fields_and_reads_show_them, reset_sim),
        cmocka_unit_test_setup(test_tags_crud_and_taggings, reset_sim),
        cmocka_unit_test_setup(test_a_contact_carries_at_most_50_tags, reset_sim),
    };
    return cmocka_run_group_tests_name("ccsim", tests, group_setup, group_teardown);
}
