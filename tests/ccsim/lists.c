/* ccsim /v3/contact_lists endpoints: unique names (case-insensitive, 409 with an
 * array body), at most cfg.max_lists active lists, asynchronous DELETE (202 + an
 * activity), deleted lists 404 by id but listed with status=deleted|all. */
#include "sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool parse_bool(const char *s, bool *out)
{
    if (strcmp(s, "true") == 0)
        *out = true;
    else if (strcmp(s, "false") == 0)
        *out = false;
    else
        return false;
    return true;
}

/* status= takes comma-separated values (all, active, deleted). */
static int parse_status(const char *csv, bool *live, bool *deleted)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%s", csv);
    char *save = NULL;
    int n = 0;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save), n++) {
        if (strcmp(tok, "all") == 0)
            *live = *deleted = true;
        else if (strcmp(tok, "active") == 0)
            *live = true;
        else if (strcmp(tok, "deleted") == 0)
            *deleted = true;
        else
            return -1;
    }
    return n > 0 ? 0 : -1;
}

void lists_get_all(struct sim_req *q, struct sim_resp *r)
{
    int limit;
    /* The schema allows 1000, the text says 500: accept the schema, serve at most 500. */
    if (req_limit(q, r, 50, 1000, &limit) != 0)
        return;
    if (limit > 500)
        limit = 500;
    const char *status = req_param(q, "status");
    const char *name = req_param(q, "name");
    const char *count = req_param(q, "include_membership_count");
    const char *include_count = req_param(q, "include_count");
    bool want_total = false;
    json_object *errs = json_object_new_array();
    bool want_live = status == NULL, want_deleted = false;
    if (status != NULL && parse_status(status, &want_live, &want_deleted) != 0)
        errs_add(errs, "query.param.invalid",
                 "status: must be a comma-separated list of all, active, deleted");
    if (count && strcmp(count, "all") && strcmp(count, "active"))
        errs_add(errs, "query.param.invalid",
                 "include_membership_count: must be one of all, active");
    if (include_count && !parse_bool(include_count, &want_total))
        errs_add(errs, "query.param.invalid", "include_count: must be true or false");
    const char *channel = req_param(q, "channel_type");
    if (channel && strcmp(channel, "email") && strcmp(channel, "sms"))
        errs_add(errs, "query.param.invalid", "channel_type: must be one of email, sms");
    if (json_object_array_length(errs) > 0) {
        resp_errors(r, 400, errs);
        return;
    }
    json_object_put(errs);
    long offset = req_offset(q);
    long seen = 0, total = 0;
    json_object *arr = json_object_new_array();
    bool more = false;
    for (size_t i = 0; i < sim.n_lists; i++) {
        struct sim_list *l = sim.lists[i];
        bool deleted = l->deleted_at != 0;
        if ((deleted && !want_deleted) || (!deleted && !want_live))
            continue;
        if (name != NULL && strcasecmp(l->name, name) != 0)
            continue;
        total++;
        if (seen++ < offset)
            continue;
        if ((long)json_object_array_length(arr) >= limit) {
            more = true;
            if (!want_total)
                break;
            continue;
        }
        json_object_array_add(arr, sim_list_json(l, count != NULL));
    }
    json_object *o = json_object_new_object();
    json_object_object_add(o, "lists", arr);
    if (want_total)
        json_object_object_add(o, "lists_count", json_object_new_int64(total));
    if (more)
        resp_next_link(r, o, q, "/v3/contact_lists", offset + limit);
    r->status = 200;
    r->body = o;
}

/* Checks a createList/updateList body; adds field errors to errs. */
static void validate_list_body(json_object *body, json_object *errs)
{
    json_object *v;
    if (!json_object_object_get_ex(body, "name", &v) || json_object_is_type(v, json_type_null)) {
        errs_add(errs, "json.field.required", "#/name: is required");
    } else if (!json_object_is_type(v, json_type_string)) {
        errs_add(errs, "json.field.invalid", "#/name: must be a string");
    } else {
        const char *s = json_object_get_string(v);
        size_t len = strlen(s);
        size_t blank = strspn(s, " \t\r\n");
        if (len == 0 || blank == len)
            errs_add(errs, "json.field.invalid", "#/name: must not be blank");
        else if (len > 255)
            errs_add(errs, "json.field.invalid", "#/name: must be at most 255 characters");
    }
    if (json_object_object_get_ex(body, "favorite", &v) &&
        !json_object_is_type(v, json_type_boolean))
        errs_add(errs, "json.field.invalid", "#/favorite: must be a boolean");
    if (json_object_object_get_ex(body, "description", &v) &&
        !json_object_is_type(v, json_type_string) && !json_object_is_type(v, json_type_null))
        errs_add(errs, "json.field.invalid", "#/description: must be a string");
}

void lists_create(struct sim_req *q, struct sim_resp *r)
{
    if (req_json_body(q, r) != 0)
        return;
    json_object *errs = json_object_new_array();
    validate_list_body(q->json, errs);
    if (json_object_array_length(errs) > 0) {
        resp_errors(r, 400, errs);
        return;
    }
    json_object_put(errs);
    const char *name = json_object_get_string(json_object_object_get(q->json, "name"));
    if (sim_list_find_name(name, NULL) != NULL) {
        resp_error(r, 409, "conflict", "The list name %s is already in use", name);
        return;
    }
    if ((int)sim_list_active_count() >= sim.cfg.max_lists) {
        resp_error(r, 400, "contact_lists.limit.exceeded",
                   "The account already has the maximum of %d contact lists",
                   sim.cfg.max_lists);
        return;
    }
    json_object *d = json_object_object_get(q->json, "description");
    json_object *f = json_object_object_get(q->json, "favorite");
    struct sim_list *l = sim_list_create(name, d ? json_object_get_string(d) : NULL,
                                         f ? json_object_get_boolean(f) : false);
    r->status = 201;
    r->body = sim_list_json(l, false);
}

static struct sim_list *live_list(struct sim_resp *r, const char *id)
{
    struct sim_list *l = sim_is_uuid(id) ? sim_list_find(id) : NULL;
    if (l == NULL || l->deleted_at != 0) {
        resp_error(r, 404, "not.found", "Contact list %s was not found", id);
        return NULL;
    }
    return l;
}

void lists_get(struct sim_req *q, struct sim_resp *r, const char *id)
{
    const char *count = req_param(q, "include_membership_count");
    if (count && strcmp(count, "all") && strcmp(count, "active")) {
        resp_error(r, 400, "query.param.invalid",
                   "include_membership_count: must be one of all, active");
        return;
    }
    struct sim_list *l = live_list(r, id);
    if (l == NULL)
        return;
    r->status = 200;
    r->body = sim_list_json(l, count != NULL);
}

void lists_update(struct sim_req *q, struct sim_resp *r, const char *id)
{
    if (req_json_body(q, r) != 0)
        return;
    json_object *errs = json_object_new_array();
    validate_list_body(q->json, errs);
    if (json_object_array_length(errs) > 0) {
        resp_errors(r, 400, errs);
        return;
    }
    json_object_put(errs);
    struct sim_list *l = live_list(r, id);
    if (l == NULL)
        return;
    const char *name = json_object_get_string(json_object_object_get(q->json, "name"));
    if (sim_list_find_name(name, l) != NULL) {
        resp_error(r, 409, "conflict", "The list name %s is already in use", name);
        return;
    }
    /* PUT replaces: what the body leaves out is reset. */
    sim_set_str(&l->name, name);
    json_object *d = json_object_object_get(q->json, "description");
    sim_set_str(&l->description, d ? json_object_get_string(d) : NULL);
    json_object *f = json_object_object_get(q->json, "favorite");
    l->favorite = f ? json_object_get_boolean(f) : false;
    l->updated_at = sim_now_ms();
    r->status = 200;
    r->body = sim_list_json(l, false);
}

void lists_delete(struct sim_req *q, struct sim_resp *r, const char *id)
{
    struct sim_list *l = live_list(r, id);
    if (l == NULL)
        return;
    if (sim_activities_queued() >= (size_t)sim.cfg.max_activities) {
        resp_error_object(r, 429, "too_many_requests",
                          "Too many activities are queued for this account");
        return;
    }
    json_object *input = json_object_new_object();
    json_object *ids = json_object_new_array();
    json_object_array_add(ids, json_object_new_string(l->id));
    json_object_object_add(input, "list_ids", ids);
    l->delete_pending = true;
    struct sim_activity *a = sim_activity_create(ACT_LIST_DELETE, input, 1);
    a->list_count = 1;
    r->status = 202;
    r->body = sim_activity_json(a);
    snprintf(r->location, sizeof r->location, "/v3/activities/%s", a->id);
}
