/*
 * test_fields.c (integration) - member fields and their mapping to Constant
 * Contact contact fields (§12), end to end: real redis-server, ccsim and ccsyncd.
 *
 * Every test gets its own stack (tests/support/stack.h) with the association
 * "acme". The mapping is PUT on the association; webhooks carry the fields; ccsim's
 * state dump shows what CC holds (custom field values by name, job_title) and its
 * counters how many requests it took. Process logs: /tmp/ccsync-test-fields-<pid>/.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccsim_client.h"
#include "members.h"
#include "novi.h"
#include "stack.h"
#include "status.h"
#include "testsupport.h"

#define FIELDS_PATH "/v3/contact_custom_fields"

static int setup(void **state)
{
    (void)state;
    struct stack_options o = {0};
    return stack_start("test-fields", &o);
}

/* PUTs the association's mapping (a JSON array) and asserts 200. */
static void put_fields(const char *fields)
{
    char body[2048];
    snprintf(body, sizeof body, "{\"fields\":%s}", fields);
    struct reply r = api("PUT", "/v1/associations/" ASSOC, body);
    if (r.status != 200)
        fail_msg("PUT fields: %ld %s", r.status, r.body ? r.body : "");
    reply_free(&r);
}

/* A member of group g with Title and CustomFields.Chapter. */
static const char *member_with(const char *id, const char *title, const char *chapter,
                               const char *g)
{
    char email[64], extra[512];
    snprintf(email, sizeof email, "%s@x.org", id);
    snprintf(extra, sizeof extra, ",\"Title\":\"%s\",\"CustomFields\":{\"Chapter\":\"%s\"}%s",
             title, chapter, groups_of(g));
    return member(id, email, "F", id, extra);
}

/* What CC holds for the contact with email: a custom field's value by name (or
 * job_title with key "job_title"); "" when none. */
static const char *cc_value(json_object *st, const char *email, const char *key, char *out,
                            size_t size)
{
    json_object *contacts = jget(st, "contacts");
    out[0] = '\0';
    for (size_t i = 0; i < json_object_array_length(contacts); i++) {
        json_object *c = json_object_array_get_idx(contacts, i);
        if (strcmp(jstr(c, "email"), email) != 0)
            continue;
        json_object *v = strcmp(key, "job_title") == 0 ? jget(c, "job_title")
                                                       : jget(jget(c, "custom_fields"), key);
        if (v != NULL)
            snprintf(out, size, "%s", json_object_get_string(v));
    }
    return out;
}

/* Every contact of ids[0..n) holds chapter and title in CC. */
static void assert_cc_values(const char *const *ids, size_t n, const char *chapter,
                             const char *title)
{
    json_object *st = sim("GET", "/__sim/state", NULL);
    for (size_t i = 0; i < n; i++) {
        char email[64], v[128];
        snprintf(email, sizeof email, "%s@x.org", ids[i]);
        assert_string_equal(cc_value(st, email, "Chapter", v, sizeof v), chapter);
        if (title)
            assert_string_equal(cc_value(st, email, "job_title", v, sizeof v), title);
    }
    json_object_put(st);
}

static const char *const G1[] = {"a1", "a2", "a3", "a4", "a5"};
static const char *const G2[] = {"b1", "b2", "b3", "b4", "b5"};

/* Groups g1 and g2, five members each, every member with chapter and title. */
static void two_groups(const char *chapter, long long at)
{
    send_group("g1", "One", true, 1);
    send_group("g2", "Two", true, 1);
    for (int i = 0; i < 5; i++) {
        send_customer(member_with(G1[i], "Dr", chapter, "g1"), at);
        send_customer(member_with(G2[i], "Dr", chapter, "g2"), at);
    }
}

static void wait_both(void)
{
    const char *groups[] = {"g1", "g2"};
    json_object_put(wait_settled_n(groups, 2, WAIT_MS, NULL));
}

/* ---- webhooks ---- */

static void test_a_bad_extra_field_is_refused_naming_it(void **state)
{
    (void)state;
    char id[64];
    new_id(id, sizeof id);
    char *body = envelope("customer.updated",
                          "{\"UniqueID\":\"m1\",\"CustomFields\":{\"Chapter\":{\"x\":1}}}", 2);
    struct reply r = post_webhook_reply_at(0, id, body);
    free(body);
    assert_int_equal(r.status, 400);
    assert_string_equal(jpath_str(r.json, "error.message"),
                        "data.CustomFields.Chapter must be a string, number, boolean or null");
    reply_free(&r);
    /* the same with good fields is queued */
    send_customer(member_with("m1", "Dr", "North", ""), 2);
}

/* ---- the mapping ---- */

static void test_mapping_is_checked_and_shown_on_the_association(void **state)
{
    (void)state;
    struct reply r = api("PUT", "/v1/associations/" ASSOC,
                         "{\"fields\":[{\"novi\":\"Phone\",\"cc\":\"fax_number\"}]}");
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(jpath_str(r.json, "error.message"), "fields[0].cc must be"));
    reply_free(&r);
    r = api("PUT", "/v1/associations/" ASSOC,
            "{\"fields\":[{\"novi\":\"A\",\"cc\":\"job_title\"},{\"novi\":\"B\",\"cc\":"
            "\"job_title\"}]}");
    assert_int_equal(r.status, 400);
    assert_string_equal(jpath_str(r.json, "error.message"),
                        "fields[1].cc maps to the same contact field as fields[0]");
    reply_free(&r);
    put_fields("[{\"novi\":\"Phone\",\"cc\":\"phone_number\"},{\"novi\":\"CustomFields.Chapter\","
               "\"cc\":\"custom:Chapter\"}]");
    r = api("GET", "/v1/associations/" ASSOC, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(jpath_str(r.json, "fields.0.cc"), "phone_number");
    assert_string_equal(jpath_str(r.json, "fields.0.state"), "ready");
    assert_string_equal(jpath_str(r.json, "fields.1.cc"), "custom:Chapter");
    assert_string_equal(jpath_str(r.json, "fields.1.state"), "pending"); /* not made in CC yet */
    assert_null(jget(r.json, "fields_error"));
    assert_false(json_object_get_boolean(jpath(r.json, "tags.group_tags")));
    reply_free(&r);
}

/* ---- field changes in bulk ---- */

static void test_field_change_reaches_cc_in_one_bulk_request_per_list(void **state)
{
    (void)state;
    put_fields("[{\"novi\":\"Title\",\"cc\":\"job_title\"},{\"novi\":\"CustomFields.Chapter\","
               "\"cc\":\"custom:Chapter\"}]");
    two_groups("North", 2);
    wait_both();
    assert_cc_values(G1, 5, "North", "Dr");
    assert_cc_values(G2, 5, "North", "Dr");
    /* the custom field: looked up once, created once */
    assert_int_equal(cc_endpoint("GET " FIELDS_PATH), 1);
    assert_int_equal(cc_endpoint("POST " FIELDS_PATH), 1);

    long long before = cc_requests(), imports = cc_imports();
    long long removes = cc_endpoint("POST /v3/activities/remove_list_memberships");
    for (int i = 0; i < 5; i++) {
        send_customer(member_with(G1[i], "Dr", "South", "g1"), 3);
        send_customer(member_with(G2[i], "Dr", "South", "g2"), 3);
    }
    wait_both();
    assert_cc_values(G1, 5, "South", "Dr");
    assert_cc_values(G2, 5, "South", "Dr");
    /* one import per list, nothing removed, one GET /activities for both */
    assert_int_equal(cc_imports() - imports, 2);
    assert_int_equal(cc_endpoint("POST /v3/activities/remove_list_memberships") - removes, 0);
    assert_int_equal(cc_requests() - before, 3);
    assert_int_equal(cc_endpoint("POST " FIELDS_PATH), 1);
    /* the member view plans with the mapping too: nobody waits once CC has the fields */
    struct reply mv = api("GET", "/v1/associations/" ASSOC "/groups/g1/members", NULL);
    assert_int_equal(mv.status, 200);
    json_object *list = jget(mv.json, "members");
    assert_int_equal(json_object_array_length(list), 5);
    for (size_t i = 0; i < 5; i++)
        assert_string_equal(jstr(json_object_array_get_idx(list, i), "status"), "in_list");
    reply_free(&mv);

    /* an older fact does not win; the same record again is no change: no request */
    before = cc_requests();
    send_customer(member_with("a1", "Dr", "Older", "g1"), 2);
    send_customer(member_with("a2", "Dr", "South", "g1"), 4);
    wait_both();
    assert_cc_values(G1, 5, "South", "Dr");
    assert_int_equal(cc_requests() - before, 0);
}

static void test_mapping_change_updates_every_synced_contact_once(void **state)
{
    (void)state;
    put_fields("[{\"novi\":\"Title\",\"cc\":\"job_title\"}]");
    two_groups("North", 2);
    wait_both();
    assert_cc_values(G1, 5, "", "Dr");
    long long rows = cc_import_rows(); /* first: it makes requests itself */
    long long before = cc_requests(), imports = cc_imports();

    put_fields("[{\"novi\":\"Title\",\"cc\":\"job_title\"},{\"novi\":\"CustomFields.Chapter\","
               "\"cc\":\"custom:Chapter\"}]");
    wait_both();
    assert_cc_values(G1, 5, "North", "Dr");
    assert_cc_values(G2, 5, "North", "Dr");
    /* one GET and one POST for the custom field, one import per list holding every
     * contact once, one GET /activities */
    assert_int_equal(cc_imports() - imports, 2);
    assert_int_equal(cc_endpoint("GET " FIELDS_PATH), 1);
    assert_int_equal(cc_endpoint("POST " FIELDS_PATH), 1);
    assert_int_equal(cc_requests() - before, 5);
    /* cc_import_rows reads the activities through /v3: last */
    assert_int_equal(cc_import_rows() - rows, 10);
}

static void test_a_refused_custom_field_shows_as_fields_error(void **state)
{
    (void)state;
    /* the account already has CC's 100 custom fields */
    for (int i = 0; i < 100; i++) {
        char body[96];
        snprintf(body, sizeof body, "{\"label\":\"Other %d\",\"type\":\"string\"}", i);
        json_object_put(sim_v3("POST", FIELDS_PATH, body, 201));
    }
    put_fields("[{\"novi\":\"Title\",\"cc\":\"job_title\"},{\"novi\":\"CustomFields.Chapter\","
               "\"cc\":\"custom:Chapter\"}]");
    two_groups("North", 2);
    wait_both();
    assert_cc_values(G1, 5, "", "Dr"); /* the other mapping still syncs */
    struct reply r = api("GET", "/v1/associations/" ASSOC, NULL);
    assert_string_equal(jpath_str(r.json, "fields.1.state"), "refused");
    assert_string_equal(jpath_str(r.json, "fields_error.0.cc"), "custom:Chapter");
    assert_non_null(strstr(jpath_str(r.json, "fields_error.0.message"),
                           "Constant Contact refused to create custom field Chapter"));
    reply_free(&r);
    assert_int_equal(cc_endpoint("POST " FIELDS_PATH), 101); /* tried once */
}

/* ---- group tags ---- */

/* The CC tags (names, sorted, comma-separated) of the contact with email, once CC
 * has run the taggings queued (ccsync does not wait for them). */
static const char *cc_tags(const char *email, char *out, size_t size)
{
    sim_void("POST", "/__sim/activities/complete", NULL);
    json_object *st = sim("GET", "/__sim/state", NULL), *contacts = jget(st, "contacts");
    out[0] = '\0';
    for (size_t i = 0; i < json_object_array_length(contacts); i++) {
        json_object *c = json_object_array_get_idx(contacts, i);
        if (strcmp(jstr(c, "email"), email) == 0)
            join_sorted(jget(c, "tags"), NULL, out, size);
    }
    json_object_put(st);
    return out;
}

static const char *cc_contact_id(const char *email)
{
    static char id[64];
    json_object *st = sim("GET", "/__sim/state", NULL), *contacts = jget(st, "contacts");
    id[0] = '\0';
    for (size_t i = 0; i < json_object_array_length(contacts); i++) {
        json_object *c = json_object_array_get_idx(contacts, i);
        if (strcmp(jstr(c, "email"), email) == 0)
            snprintf(id, sizeof id, "%s", jstr(c, "contact_id"));
    }
    json_object_put(st);
    return id;
}

/* What an admin does in CC's UI: tag the contacts (emails) with the tag named name
 * (made when tag_id is NULL). */
static void admin_tags(const char *name, const char *const *emails, size_t n)
{
    char body[1024], id[64];
    snprintf(body, sizeof body, "{\"name\":\"%s\"}", name);
    json_object *t = sim_v3("POST", "/v3/contact_tags", body, 201);
    snprintf(id, sizeof id, "%s", jstr(t, "tag_id"));
    json_object_put(t);
    size_t len = (size_t)snprintf(body, sizeof body, "{\"source\":{\"contact_ids\":[");
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(body + len, sizeof body - len, "%s\"%s\"", i ? "," : "",
                                cc_contact_id(emails[i]));
    snprintf(body + len, sizeof body - len, "]},\"tag_ids\":[\"%s\"]}", id);
    json_object_put(sim_v3("POST", "/v3/activities/contacts_taggings_add", body, 201));
    sim_void("POST", "/__sim/activities/complete", NULL);
}

static void test_group_tag_follows_joins_leaves_and_renames_never_admin_tags(void **state)
{
    (void)state;
    char buf[256];
    struct reply r = api("PUT", "/v1/associations/" ASSOC,
                         "{\"tags\":{\"group_tags\":true,\"prefix\":\"Novi: \"}}");
    assert_int_equal(r.status, 200);
    assert_true(json_object_get_boolean(jpath(r.json, "tags.group_tags")));
    reply_free(&r);
    send_group("g1", "One", true, 1);
    send_customer(member_with("a1", "Dr", "N", "g1"), 2);
    send_customer(member_with("a2", "Dr", "N", "g1"), 2);
    json_object *gs = wait_settled("g1", WAIT_MS);
    assert_string_equal(jpath_str(gs, "tag.name"), "Novi: One");
    char tag_id[64];
    snprintf(tag_id, sizeof tag_id, "%s", jpath_str(gs, "tag.tag_id"));
    json_object_put(gs);
    assert_string_equal(cc_tags("a1@x.org", buf, sizeof buf), "Novi: One");
    assert_string_equal(cc_tags("a2@x.org", buf, sizeof buf), "Novi: One");
    assert_int_equal(cc_endpoint("POST /v3/contact_tags"), 1);
    assert_int_equal(cc_endpoint("POST /v3/activities/contacts_taggings_add"), 1);

    /* an admin tags a1 "VIP" by hand, and gives a contact of no group the group's tag */
    json_object_put(sim("POST", "/__sim/seed", "{\"contacts\":[{\"email\":\"x@x.org\"}]}"));
    const char *vip[] = {"a1@x.org"}, *outsider[] = {"x@x.org"};
    admin_tags("VIP", vip, 1);
    char body[256];
    snprintf(body, sizeof body, "{\"source\":{\"contact_ids\":[\"%s\"]},\"tag_ids\":[\"%s\"]}",
             cc_contact_id(outsider[0]), tag_id);
    json_object_put(sim_v3("POST", "/v3/activities/contacts_taggings_add", body, 201));
    sim_void("POST", "/__sim/activities/complete", NULL);

    /* a1 leaves, a3 joins */
    long long removes = cc_endpoint("POST /v3/activities/contacts_taggings_remove");
    send_customer(member_with("a1", "Dr", "N", ""), 3);
    send_customer(member_with("a3", "Dr", "N", "g1"), 3);
    json_object_put(wait_settled("g1", WAIT_MS));
    assert_string_equal(cc_tags("a1@x.org", buf, sizeof buf), "VIP"); /* the admin's stays */
    assert_string_equal(cc_tags("a2@x.org", buf, sizeof buf), "Novi: One");
    assert_string_equal(cc_tags("a3@x.org", buf, sizeof buf), "Novi: One");
    assert_string_equal(cc_tags("x@x.org", buf, sizeof buf), "Novi: One"); /* not ccsync's */
    assert_int_equal(cc_endpoint("POST /v3/activities/contacts_taggings_remove") - removes, 1);

    /* the group is renamed: so is its tag, the same tag */
    send_group("g1", "Uno", true, 4);
    gs = wait_settled("g1", WAIT_MS);
    assert_string_equal(jpath_str(gs, "tag.name"), "Novi: Uno");
    assert_string_equal(jpath_str(gs, "tag.tag_id"), tag_id);
    json_object_put(gs);
    assert_string_equal(cc_tags("a2@x.org", buf, sizeof buf), "Novi: Uno");
    assert_int_equal(cc_endpoint("POST /v3/contact_tags"), 2); /* ccsync's one, the admin's */
}

/* An admin PUTs a mapping (here: group tags on) while a sync is making a custom
 * field of the mapping before it: the sync's save of the field's id must not put
 * the older mapping back. The next round resolves the new one, finding the field
 * the first made (no second POST), and tags the group. */
static void test_a_sync_never_overwrites_a_mapping_put_meanwhile(void **state)
{
    (void)state;
    char buf[256];
    put_fields("[{\"novi\":\"CustomFields.Chapter\",\"cc\":\"custom:Chapter\"}]");
    sim_delay("POST " FIELDS_PATH, 1500, 1);
    send_group("g1", "One", true, 1);
    send_customer(member_with("a1", "Dr", "North", "g1"), 2);
    wait_endpoint("POST " FIELDS_PATH, 1, WAIT_MS); /* CC is making it: 1.5 s */
    struct reply r = api("PUT", "/v1/associations/" ASSOC,
                         "{\"tags\":{\"group_tags\":true,\"prefix\":\"Novi: \"}}");
    assert_int_equal(r.status, 200);
    reply_free(&r);

    json_object *gs = wait_settled("g1", WAIT_MS);
    r = api("GET", "/v1/associations/" ASSOC, NULL);
    assert_true(json_object_get_boolean(jpath(r.json, "tags.group_tags")));
    assert_string_equal(jpath_str(r.json, "fields.0.state"), "ready");
    reply_free(&r);
    assert_non_null(jpath(gs, "tag.name"));
    assert_string_equal(jpath_str(gs, "tag.name"), "Novi: One");
    json_object_put(gs);
    assert_int_equal(cc_endpoint("POST " FIELDS_PATH), 1);
    assert_int_equal(cc_endpoint("GET " FIELDS_PATH), 2); /* each mapping looked once */
    const char *a1[] = {"a1"};
    assert_cc_values(a1, 1, "North", NULL);
    assert_string_equal(cc_tags("a1@x.org", buf, sizeof buf), "Novi: One");
}

/* Group tags on a list larger than a page: the first sync's contacts get their ids
 * from one read of the list (3 pages for 1,196), a later joiner's from one lookup. */
static void test_group_tag_learns_ids_by_the_fewest_requests(void **state)
{
    (void)state;
    char buf[256], email[64];
    struct reply r = api("PUT", "/v1/associations/" ASSOC,
                         "{\"tags\":{\"group_tags\":true,\"prefix\":\"Novi: \"}}");
    assert_int_equal(r.status, 200);
    reply_free(&r);
    char *data = gen_members_data("big", "z", 0, 1200);
    send_event("group.members", data, 2);
    free(data);
    wait_folded();
    send_group("big", "Big", true, 3);
    json_object_put(wait_settled("big", WAIT_MS));
    assert_int_equal(cc_endpoint("GET /v3/contacts"), 3);
    assert_int_equal(cc_endpoint("POST /v3/activities/contacts_taggings_add"), 3);
    gen_email("z", 1199, email, sizeof email);
    assert_string_equal(cc_tags(email, buf, sizeof buf), "Novi: Big");

    long long before = cc_requests(), polls = cc_activity_polls();
    send_gen_member_at(0, "big", "z", 1200, true, 4);
    json_object *gs = wait_settled("big", WAIT_MS);
    assert_int_equal(json_object_get_int(jpath(gs, "counts.in_list")), gen_expected_count(0, 1201));
    json_object_put(gs);
    /* the import and its report, one lookup, one tagging */
    assert_int_equal(cc_endpoint("GET /v3/contacts"), 4);
    assert_int_equal(cc_endpoint("POST /v3/activities/contacts_taggings_add"), 4);
    assert_int_equal(cc_activity_polls() - polls, 1);
    assert_int_equal(cc_requests() - before, 4);
    gen_email("z", 1200, email, sizeof email);
    assert_string_equal(cc_tags(email, buf, sizeof buf), "Novi: Big");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_a_bad_extra_field_is_refused_naming_it, setup,
                                        stack_stop),
        cmocka_unit_test_setup_teardown(test_mapping_is_checked_and_shown_on_the_association, setup,
                                        stack_stop),
        cmocka_unit_test_setup_teardown(test_field_change_reaches_cc_in_one_bulk_request_per_list,
                                        setup, stack_stop),
        cmocka_unit_test_setup_teardown(test_mapping_change_updates_every_synced_contact_once,
                                        setup, stack_stop),
        cmocka_unit_test_setup_teardown(test_a_refused_custom_field_shows_as_fields_error, setup,
                                        stack_stop),
        cmocka_unit_test_setup_teardown(
            test_group_tag_follows_joins_leaves_and_renames_never_admin_tags, setup, stack_stop),
        cmocka_unit_test_setup_teardown(test_a_sync_never_overwrites_a_mapping_put_meanwhile, setup,
                                        stack_stop),
        cmocka_unit_test_setup_teardown(test_group_tag_learns_ids_by_the_fewest_requests, setup,
                                        stack_stop),
    };
    return cmocka_run_group_tests_name("fields", tests, NULL, NULL);
}
