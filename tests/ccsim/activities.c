/* ccsim /v3/activities endpoints: the bulk jobs (JSON import, add and remove list
 * memberships, list delete) and their status reports. A POST validates and queues an
 * activity (201, state initialized); its effect lands when it completes
 * (state.c: sim_activities_settle). cfg.max_activities unfinished ones → 429. */
#include "sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Import columns the document lists, with their maxLength (0 = none). */
static const struct {
    const char *name;
    size_t max;
} IMPORT_FIELDS[] = {
    {"email", 50},
    {"first_name", 50},
    {"last_name", 50},
    {"job_title", 50},
    {"company_name", 50},
    {"anniversary", 0},
    {"phone", 50},
    {"home_phone", 50},
    {"work_phone", 50},
    {"mobile_phone", 50},
    {"other_phone", 50},
    {"street", 255},
    {"street2", 255},
    {"city", 50},
    {"state", 50},
    {"zip", 50},
    {"country", 50},
    {"home_street", 255},
    {"home_street2", 255},
    {"home_city", 50},
    {"home_state", 50},
    {"home_zip", 50},
    {"home country", 50},
    {"work_street", 255},
    {"work_street2", 255},
    {"work_city", 50},
    {"work_state", 50},
    {"work_zip", 50},
    {"work_country", 50},
    {"other_street", 255},
    {"other_street2", 255},
    {"other_city", 50},
    {"other_state", 50},
    {"other_zip", 50},
    {"other_country", 50},
    {"sms_number", 16},
    {"sms_consent_date", 16},
};

/* Checks a row's cf:NAME columns: at most 25, strings of at most 255 characters, each
 * naming a custom field of the account. */
static void check_custom_columns(json_object *row, size_t i, json_object *errs)
{
    int n = 0;
    json_object_object_foreach(row, key, val)
    {
        if (strncmp(key, "cf:", 3) != 0)
            continue;
        if (++n == SIM_CUSTOM_FIELDS_PER_CONTACT + 1)
            errs_add(errs, "json.max.items.exceeded",
                     "#/import_data/%zu: a contact can carry at most %d custom fields", i,
                     SIM_CUSTOM_FIELDS_PER_CONTACT);
        if (json_object_is_type(val, json_type_null))
            continue;
        if (!json_object_is_type(val, json_type_string))
            errs_add(errs, "json.field.invalid", "#/import_data/%zu/%s: must be a string", i, key);
        else if (strlen(json_object_get_string(val)) > 255)
            errs_add(errs, "json.field.invalid",
                     "#/import_data/%zu/%s: must be at most 255 characters", i, key);
        else if (sim_field_find_name(key + 3) == NULL)
            errs_add(errs, "json.field.invalid",
                     "#/import_data/%zu/%s: custom field %s was not found", i, key, key + 3);
    }
}

/* Checks an array of list ids at #/path: min..max uuids; with must_exist, each one a
 * live list of the account (else a 404-class error is noted in *missing). */
static json_object *check_ids(json_object *parent, const char *key, const char *path, size_t min,
                              size_t max, bool required, json_object *errs)
{
    json_object *arr;
    if (!json_object_object_get_ex(parent, key, &arr) || json_object_is_type(arr, json_type_null)) {
        if (required)
            errs_add(errs, "json.field.required", "#/%s: is required", path);
        return NULL;
    }
    if (!json_object_is_type(arr, json_type_array)) {
        errs_add(errs, "json.field.invalid", "#/%s: must be an array", path);
        return NULL;
    }
    size_t n = json_object_array_length(arr);
    if (n < min)
        errs_add(errs, "json.field.invalid", "#/%s: must have at least %zu items", path, min);
    if (n > max)
        errs_add(errs, "json.max.items.exceeded", "#/%s: must have at most %zu items", path, max);
    for (size_t i = 0; i < n && n <= max; i++) {
        json_object *v = json_object_array_get_idx(arr, i);
        if (!json_object_is_type(v, json_type_string) || !sim_is_uuid(json_object_get_string(v))) {
            errs_add(errs, "json.field.invalid", "#/%s/%zu: must be a UUID", path, i);
            break;
        }
    }
    return arr;
}

/* The first list id in arr that is not a live list, or NULL. */
static const char *missing_list(json_object *arr)
{
    for (size_t i = 0; arr && i < json_object_array_length(arr); i++) {
        const char *id = json_object_get_string(json_object_array_get_idx(arr, i));
        struct sim_list *l = sim_list_find(id);
        if (l == NULL || l->deleted_at != 0)
            return id;
    }
    return NULL;
}

static bool queue_full(struct sim_resp *r)
{
    if (sim_activities_queued() < (size_t)sim.cfg.max_activities)
        return false;
    resp_error_object(r, 429, "too_many_requests",
                      "Too many activities are queued for this account; try again later");
    return true;
}

static void created(struct sim_resp *r, struct sim_activity *a)
{
    r->status = 201;
    r->body = sim_activity_json(a);
}

void activities_import(struct sim_req *q, struct sim_resp *r)
{
    if (q->body_len >= SIM_IMPORT_MAX_BYTES) {
        resp_error(r, 400, "request.body.too.large",
                   "#/import_data: the request body must be smaller than 4 MB");
        return;
    }
    if (req_json_body(q, r) != 0)
        return;
    json_object *errs = json_object_new_array();
    json_object *rows;
    if (!json_object_object_get_ex(q->json, "import_data", &rows) ||
        json_object_is_type(rows, json_type_null)) {
        errs_add(errs, "json.field.required", "#/import_data: is required");
        rows = NULL;
    } else if (!json_object_is_type(rows, json_type_array)) {
        errs_add(errs, "json.field.invalid", "#/import_data: must be an array");
        rows = NULL;
    } else if (json_object_array_length(rows) == 0) {
        errs_add(errs, "json.field.invalid", "#/import_data: must have at least 1 item");
    } else if (json_object_array_length(rows) > SIM_IMPORT_MAX_CONTACTS) {
        errs_add(errs, "json.max.items.exceeded", "#/import_data: must have at most %d items",
                 SIM_IMPORT_MAX_CONTACTS);
    }
    size_t n = rows ? json_object_array_length(rows) : 0;
    for (size_t i = 0; i < n && n <= SIM_IMPORT_MAX_CONTACTS; i++) {
        json_object *row = json_object_array_get_idx(rows, i);
        if (!json_object_is_type(row, json_type_object)) {
            errs_add(errs, "json.field.invalid", "#/import_data/%zu: must be an object", i);
            continue;
        }
        for (size_t f = 0; f < sizeof IMPORT_FIELDS / sizeof IMPORT_FIELDS[0]; f++) {
            json_object *v;
            if (!json_object_object_get_ex(row, IMPORT_FIELDS[f].name, &v) ||
                json_object_is_type(v, json_type_null))
                continue;
            if (!json_object_is_type(v, json_type_string))
                errs_add(errs, "json.field.invalid", "#/import_data/%zu/%s: must be a string", i,
                         IMPORT_FIELDS[f].name);
            else if (IMPORT_FIELDS[f].max &&
                     strlen(json_object_get_string(v)) > IMPORT_FIELDS[f].max)
                errs_add(errs, "json.field.invalid",
                         "#/import_data/%zu/%s: must be at most %zu characters", i,
                         IMPORT_FIELDS[f].name, IMPORT_FIELDS[f].max);
        }
        check_custom_columns(row, i, errs);
        json_object *v;
        if ((json_object_object_get_ex(row, "birthday_month", &v) &&
             !json_object_is_type(v, json_type_int)) ||
            (json_object_object_get_ex(row, "birthday_day", &v) &&
             !json_object_is_type(v, json_type_int)))
            errs_add(errs, "json.field.invalid", "#/import_data/%zu: birthdays are integers", i);
        if (json_object_array_length(errs) >= 100)
            break;
    }
    json_object *ids = check_ids(q->json, "list_ids", "list_ids", 1, 50, true, errs);
    if (json_object_array_length(errs) > 0) {
        resp_errors(r, 400, errs);
        return;
    }
    json_object_put(errs);
    const char *missing = missing_list(ids);
    if (missing != NULL) {
        resp_error(r, 400, "json.field.invalid", "#/list_ids: list %s was not found", missing);
        return;
    }
    if (queue_full(r))
        return;
    struct sim_activity *a = sim_activity_create(ACT_IMPORT, q->json, (long)n);
    q->json = NULL; /* the activity owns it now */
    created(r, a);
}

/* Shared by add_list_memberships and remove_list_memberships. */
static void membership_activity(struct sim_req *q, struct sim_resp *r, bool add)
{
    if (req_json_body(q, r) != 0)
        return;
    json_object *errs = json_object_new_array();
    json_object *source;
    if (!json_object_object_get_ex(q->json, "source", &source) ||
        !json_object_is_type(source, json_type_object)) {
        errs_add(errs, "json.field.required", "#/source: is required");
        source = NULL;
    }
    json_object *ids = check_ids(q->json, "list_ids", "list_ids", 1, 50, true, errs);
    long items = 0;
    if (source != NULL) {
        json_object *cids =
            check_ids(source, "contact_ids", "source/contact_ids", 1, 500, false, errs);
        json_object *slists = check_ids(source, "list_ids", "source/list_ids", 1, 50, false, errs);
        json_object *all = json_object_object_get(source, "all_active_contacts");
        json_object *tags = check_ids(source, "tag_ids", "source/tag_ids", 1, 50, false, errs);
        int kinds = (cids != NULL) + (slists != NULL) + (all && json_object_get_boolean(all)) +
                    (tags != NULL) + (json_object_object_get(source, "segment_id") != NULL) +
                    (json_object_object_get(source, "engagement_level") != NULL);
        if (kinds != 1)
            errs_add(errs, "json.field.invalid",
                     "#/source: exactly one of contact_ids, list_ids, all_active_contacts, "
                     "tag_ids, segment_id, engagement_level is required");
        else if (cids == NULL)
            errs_add(errs, "json.field.invalid",
                     "#/source: the simulator supports source.contact_ids only");
        items = cids ? (long)json_object_array_length(cids) : 0;
    }
    if (json_object_array_length(errs) > 0) {
        resp_errors(r, 400, errs);
        return;
    }
    json_object_put(errs);
    const char *missing = missing_list(ids);
    if (missing != NULL) {
        resp_error(r, add ? 400 : 404, add ? "json.field.invalid" : "not.found",
                   "#/list_ids: list %s was not found", missing);
        return;
    }
    if (queue_full(r))
        return;
    struct sim_activity *a = sim_activity_create(add ? ACT_ADD : ACT_REMOVE, q->json, items);
    q->json = NULL;
    created(r, a);
}

void activities_add_members(struct sim_req *q, struct sim_resp *r)
{
    membership_activity(q, r, true);
}

void activities_remove_members(struct sim_req *q, struct sim_resp *r)
{
    membership_activity(q, r, false);
}

void activities_list_delete(struct sim_req *q, struct sim_resp *r)
{
    if (req_json_body(q, r) != 0)
        return;
    json_object *errs = json_object_new_array();
    json_object *ids = check_ids(q->json, "list_ids", "list_ids", 1, 100, true, errs);
    if (json_object_array_length(errs) > 0) {
        resp_errors(r, 400, errs);
        return;
    }
    json_object_put(errs);
    if (queue_full(r))
        return;
    for (size_t i = 0; i < json_object_array_length(ids); i++) {
        struct sim_list *l =
            sim_list_find(json_object_get_string(json_object_array_get_idx(ids, i)));
        if (l != NULL)
            l->delete_pending = true;
    }
    struct sim_activity *a =
        sim_activity_create(ACT_LIST_DELETE, q->json, (long)json_object_array_length(ids));
    a->list_count = (long)json_object_array_length(ids);
    q->json = NULL;
    created(r, a);
}

void activities_get(struct sim_req *q, struct sim_resp *r, const char *id)
{
    struct sim_activity *a = sim_activity_find(id);
    if (a == NULL) {
        resp_error(r, 404, "not.found", "Activity %s was not found", id);
        return;
    }
    r->status = 200;
    r->body = sim_activity_json(a);
}

void activities_get_all(struct sim_req *q, struct sim_resp *r)
{
    int limit;
    if (req_limit(q, r, 50, 500, &limit) != 0)
        return;
    const char *state = req_param(q, "state");
    static const char *const STATES[] = {"processing", "completed", "cancelled", "failed",
                                         "timed_out"};
    bool ok = state == NULL;
    for (size_t i = 0; !ok && i < 5; i++)
        ok = strcmp(state, STATES[i]) == 0;
    if (!ok) {
        resp_error(r, 400, "query.param.invalid",
                   "state: must be one of processing, completed, cancelled, failed, timed_out");
        return;
    }
    long offset = req_offset(q), seen = 0;
    bool more = false;
    json_object *arr = json_object_new_array();
    for (size_t k = sim.n_activities; k-- > 0;) { /* newest first */
        struct sim_activity *a = sim.activities[k];
        if (state && strcmp(state, sim_activity_state(a)) != 0)
            continue;
        if (seen++ < offset)
            continue;
        if ((long)json_object_array_length(arr) >= limit) {
            more = true;
            break;
        }
        json_object_array_add(arr, sim_activity_json(a));
    }
    json_object *o = json_object_new_object();
    json_object_object_add(o, "activities", arr);
    if (more)
        resp_next_link(r, o, q, "/v3/activities", offset + limit);
    r->status = 200;
    r->body = o;
}
