/* ccsim custom fields and tags: /v3/contact_custom_fields and /v3/contact_tags, the
 * values contacts hold for them, and the tagging activities
 * (/v3/activities/contacts_taggings_add, _remove; DELETE /contact_tags/{id} queues a
 * contacts_tags_delete activity). Limits as Constant Contact documents them: 100 custom
 * fields per account, 25 custom field values per contact, 50 tags per contact. */
#include "sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const FIELD_TYPES[] = {"string",  "date",          "number",       "currency",
                                          "boolean", "single_select", "multi_select", NULL};

static void grow_array(void **arr, size_t *cap, size_t n, size_t elem)
{
    if (n < *cap)
        return;
    *cap = *cap ? *cap * 2 : 16;
    *arr = realloc(*arr, *cap * elem);
}

/* ---- custom fields: state ---- */

struct sim_custom_field *sim_field_find(const char *id)
{
    for (size_t i = 0; i < sim.n_fields; i++)
        if (strcmp(sim.fields[i]->id, id) == 0)
            return sim.fields[i];
    return NULL;
}

/* Names are compared without regard to case, as labels are in CC's UI. */
struct sim_custom_field *sim_field_find_name(const char *name)
{
    for (size_t i = 0; i < sim.n_fields; i++)
        if (strcasecmp(sim.fields[i]->name, name) == 0)
            return sim.fields[i];
    return NULL;
}

static char *name_of_label(const char *label)
{
    char *name = strdup(label);
    for (char *p = name; *p; p++)
        if (*p == ' ')
            *p = '_';
    return name;
}

struct sim_custom_field *sim_field_create(const char *label, const char *type)
{
    struct sim_custom_field *f = calloc(1, sizeof *f);
    sim_uuid(f->id);
    f->label = strdup(label);
    f->name = name_of_label(label);
    snprintf(f->type, sizeof f->type, "%s", type);
    f->created_at = f->updated_at = sim_now_ms();
    grow_array((void **)&sim.fields, &sim.cap_fields, sim.n_fields, sizeof *sim.fields);
    sim.fields[sim.n_fields++] = f;
    return f;
}

static void field_free(struct sim_custom_field *f)
{
    free(f->label);
    free(f->name);
    free(f);
}

/* Sets (or, with v NULL, clears) a contact's value of f; a 26th value is dropped by
 * the caller's check (imports are refused before they get here). */
void sim_contact_set_field(struct sim_contact *c, struct sim_custom_field *f, const char *v)
{
    for (int i = 0; i < c->n_cf; i++) {
        if (c->cf[i].field != f)
            continue;
        if (v == NULL) {
            free(c->cf[i].value);
            c->cf[i] = c->cf[--c->n_cf];
        } else {
            sim_set_str(&c->cf[i].value, v);
        }
        return;
    }
    if (v == NULL || c->n_cf >= SIM_CUSTOM_FIELDS_PER_CONTACT)
        return;
    c->cf[c->n_cf].field = f;
    c->cf[c->n_cf].value = strdup(v);
    c->n_cf++;
}

/* ---- tags: state ---- */

struct sim_tag *sim_tag_find(const char *id)
{
    for (size_t i = 0; i < sim.n_tags; i++)
        if (sim.tags[i]->deleted_at == 0 && strcmp(sim.tags[i]->id, id) == 0)
            return sim.tags[i];
    return NULL;
}

struct sim_tag *sim_tag_find_name(const char *name)
{
    for (size_t i = 0; i < sim.n_tags; i++)
        if (sim.tags[i]->deleted_at == 0 && strcasecmp(sim.tags[i]->name, name) == 0)
            return sim.tags[i];
    return NULL;
}

struct sim_tag *sim_tag_create(const char *name, const char *source)
{
    struct sim_tag *t = calloc(1, sizeof *t);
    sim_uuid(t->id);
    t->name = strdup(name);
    t->source = source ? strdup(source) : NULL;
    t->created_at = t->updated_at = sim_now_ms();
    grow_array((void **)&sim.tags, &sim.cap_tags, sim.n_tags, sizeof *sim.tags);
    sim.tags[sim.n_tags++] = t;
    return t;
}

/* 0 when c carries t (already or now); -1 when c already has 50 tags. */
int sim_contact_tag(struct sim_contact *c, struct sim_tag *t)
{
    for (int i = 0; i < c->n_tags; i++)
        if (c->tags[i] == t)
            return 0;
    if (c->n_tags >= SIM_TAGS_PER_CONTACT)
        return -1;
    c->tags[c->n_tags++] = t;
    return 0;
}

void sim_contact_untag(struct sim_contact *c, const struct sim_tag *t)
{
    for (int i = 0; i < c->n_tags; i++) {
        if (c->tags[i] == t) {
            c->tags[i] = c->tags[--c->n_tags];
            return;
        }
    }
}

static long tag_count(const struct sim_tag *t)
{
    long n = 0;
    for (size_t i = 0; i < sim.n_contacts; i++)
        for (int k = 0; k < sim.contacts[i]->n_tags; k++)
            n += sim.contacts[i]->tags[k] == t;
    return n;
}

void sim_contact_extras_free(struct sim_contact *c)
{
    for (int i = 0; i < c->n_cf; i++)
        free(c->cf[i].value);
    c->n_cf = 0;
    c->n_tags = 0;
}

void sim_fields_free(void)
{
    for (size_t i = 0; i < sim.n_fields; i++)
        field_free(sim.fields[i]);
    for (size_t i = 0; i < sim.n_tags; i++) {
        free(sim.tags[i]->name);
        free(sim.tags[i]->source);
        free(sim.tags[i]);
    }
    free(sim.fields);
    free(sim.tags);
}

/* ---- JSON views ---- */

static void add_time(json_object *o, const char *key, int64_t ms)
{
    char buf[40];
    sim_format_time(ms, buf, sizeof buf);
    json_object_object_add(o, key, json_object_new_string(buf));
}

static json_object *field_json(const struct sim_custom_field *f)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "custom_field_id", json_object_new_string(f->id));
    json_object_object_add(o, "label", json_object_new_string(f->label));
    json_object_object_add(o, "name", json_object_new_string(f->name));
    json_object_object_add(o, "type", json_object_new_string(f->type));
    add_time(o, "created_at", f->created_at);
    add_time(o, "updated_at", f->updated_at);
    return o;
}

static json_object *tag_json(const struct sim_tag *t, bool with_count)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "tag_id", json_object_new_string(t->id));
    json_object_object_add(o, "name", json_object_new_string(t->name));
    if (t->source != NULL)
        json_object_object_add(o, "tag_source", json_object_new_string(t->source));
    if (with_count)
        json_object_object_add(o, "contacts_count", json_object_new_int64(tag_count(t)));
    add_time(o, "created_at", t->created_at);
    add_time(o, "updated_at", t->updated_at);
    return o;
}

/* Adds custom_fields and taggings to a contact's JSON, as include= asks. */
void sim_contact_extras_json(json_object *o, const struct sim_contact *c, bool with_fields,
                             bool with_tags)
{
    if (with_fields) {
        json_object *arr = json_object_new_array();
        for (int i = 0; i < c->n_cf; i++) {
            json_object *v = json_object_new_object();
            json_object_object_add(v, "custom_field_id",
                                   json_object_new_string(c->cf[i].field->id));
            json_object_object_add(v, "value", json_object_new_string(c->cf[i].value));
            json_object_array_add(arr, v);
        }
        json_object_object_add(o, "custom_fields", arr);
    }
    if (with_tags) {
        json_object *arr = json_object_new_array();
        for (int i = 0; i < c->n_tags; i++)
            json_object_array_add(arr, json_object_new_string(c->tags[i]->id));
        json_object_object_add(o, "taggings", arr);
    }
}

/* ---- request checks ---- */

/* The string at key, checked for presence (when required) and length 1..max; NULL
 * with an error noted otherwise. */
static const char *body_string(json_object *body, const char *key, size_t max, bool required,
                               json_object *errs)
{
    json_object *v;
    if (!json_object_object_get_ex(body, key, &v) || json_object_is_type(v, json_type_null)) {
        if (required)
            errs_add(errs, "json.field.required", "#/%s: is required", key);
        return NULL;
    }
    if (!json_object_is_type(v, json_type_string)) {
        errs_add(errs, "json.field.invalid", "#/%s: must be a string", key);
        return NULL;
    }
    const char *s = json_object_get_string(v);
    size_t n = strlen(s);
    if (n == 0 || n > max) {
        errs_add(errs, "json.field.invalid", "#/%s: must be 1 to %zu characters", key, max);
        return NULL;
    }
    return s;
}

static bool type_known(const char *type)
{
    for (size_t i = 0; FIELD_TYPES[i]; i++)
        if (strcmp(FIELD_TYPES[i], type) == 0)
            return true;
    return false;
}

static bool errors_answered(struct sim_resp *r, json_object *errs)
{
    if (json_object_array_length(errs) > 0) {
        resp_errors(r, 400, errs);
        return true;
    }
    json_object_put(errs);
    return false;
}

/* ---- /v3/contact_custom_fields ---- */

void fields_get_all(struct sim_req *q, struct sim_resp *r)
{
    int limit;
    if (req_limit(q, r, 50, 100, &limit) != 0)
        return;
    long offset = req_offset(q);
    json_object *arr = json_object_new_array();
    for (size_t i = (size_t)offset; i < sim.n_fields && (long)i < offset + limit; i++)
        json_object_array_add(arr, field_json(sim.fields[i]));
    json_object *o = json_object_new_object();
    json_object_object_add(o, "custom_fields", arr);
    if ((size_t)(offset + limit) < sim.n_fields)
        resp_next_link(r, o, q, "/v3/contact_custom_fields", offset + limit);
    r->status = 200;
    r->body = o;
}

void fields_create(struct sim_req *q, struct sim_resp *r)
{
    if (req_json_body(q, r) != 0)
        return;
    json_object *errs = json_object_new_array();
    const char *label = body_string(q->json, "label", 50, true, errs);
    const char *type = body_string(q->json, "type", 20, true, errs);
    if (type != NULL && !type_known(type))
        errs_add(errs, "json.field.invalid",
                 "#/type: must be one of string, date, number, currency, boolean, "
                 "single_select, multi_select");
    if (errors_answered(r, errs))
        return;
    char *name = name_of_label(label);
    bool taken = sim_field_find_name(name) != NULL;
    free(name);
    if (taken) {
        resp_error(r, 409, "conflict", "A custom field named %s already exists", label);
        return;
    }
    if (sim.n_fields >= SIM_CUSTOM_FIELDS_MAX) {
        resp_error(r, 400, "custom_fields.limit.reached",
                   "An account can have at most %d custom fields", SIM_CUSTOM_FIELDS_MAX);
        return;
    }
    r->status = 201;
    r->body = field_json(sim_field_create(label, type));
}

void fields_get(struct sim_req *q, struct sim_resp *r, const char *id)
{
    (void)q;
    struct sim_custom_field *f = sim_field_find(id);
    if (f == NULL) {
        resp_error(r, 404, "not.found", "Custom field %s was not found", id);
        return;
    }
    r->status = 200;
    r->body = field_json(f);
}

/* PUT replaces the label (the name follows it); the type cannot change. */
void fields_update(struct sim_req *q, struct sim_resp *r, const char *id)
{
    struct sim_custom_field *f = sim_field_find(id);
    if (f == NULL) {
        resp_error(r, 404, "not.found", "Custom field %s was not found", id);
        return;
    }
    if (req_json_body(q, r) != 0)
        return;
    json_object *errs = json_object_new_array();
    const char *label = body_string(q->json, "label", 50, true, errs);
    if (errors_answered(r, errs))
        return;
    char *name = name_of_label(label);
    struct sim_custom_field *other = sim_field_find_name(name);
    if (other != NULL && other != f) {
        free(name);
        resp_error(r, 409, "conflict", "A custom field named %s already exists", label);
        return;
    }
    free(f->name);
    f->name = name;
    sim_set_str(&f->label, label);
    f->updated_at = sim_now_ms();
    r->status = 200;
    r->body = field_json(f);
}

void fields_delete(struct sim_req *q, struct sim_resp *r, const char *id)
{
    (void)q;
    struct sim_custom_field *f = sim_field_find(id);
    if (f == NULL) {
        resp_error(r, 404, "not.found", "Custom field %s was not found", id);
        return;
    }
    for (size_t i = 0; i < sim.n_contacts; i++)
        sim_contact_set_field(sim.contacts[i], f, NULL);
    for (size_t i = 0; i < sim.n_fields; i++) {
        if (sim.fields[i] == f) {
            memmove(&sim.fields[i], &sim.fields[i + 1],
                    (sim.n_fields - i - 1) * sizeof *sim.fields);
            sim.n_fields--;
            break;
        }
    }
    field_free(f);
    r->status = 204;
}

/* ---- /v3/contact_tags ---- */

void tags_get_all(struct sim_req *q, struct sim_resp *r)
{
    int limit;
    if (req_limit(q, r, 50, 500, &limit) != 0)
        return;
    const char *ic = req_param(q, "include_count");
    if (ic && strcmp(ic, "true") && strcmp(ic, "false")) {
        resp_error(r, 400, "query.param.invalid", "include_count: must be true or false");
        return;
    }
    bool with_count = ic && strcmp(ic, "true") == 0;
    long offset = req_offset(q), seen = 0;
    bool more = false;
    json_object *arr = json_object_new_array();
    for (size_t i = 0; i < sim.n_tags; i++) {
        if (sim.tags[i]->deleted_at != 0 || seen++ < offset)
            continue;
        if ((long)json_object_array_length(arr) >= limit) {
            more = true;
            break;
        }
        json_object_array_add(arr, tag_json(sim.tags[i], with_count));
    }
    json_object *o = json_object_new_object();
    json_object_object_add(o, "tags", arr);
    if (more)
        resp_next_link(r, o, q, "/v3/contact_tags", offset + limit);
    r->status = 200;
    r->body = o;
}

void tags_create(struct sim_req *q, struct sim_resp *r)
{
    if (req_json_body(q, r) != 0)
        return;
    json_object *errs = json_object_new_array();
    const char *name = body_string(q->json, "name", 255, true, errs);
    const char *source = body_string(q->json, "tag_source", 255, false, errs);
    if (errors_answered(r, errs))
        return;
    if (sim_tag_find_name(name) != NULL) {
        resp_error(r, 409, "conflict", "A tag named %s already exists", name);
        return;
    }
    r->status = 201;
    r->body = tag_json(sim_tag_create(name, source), false);
}

void tags_get(struct sim_req *q, struct sim_resp *r, const char *id)
{
    struct sim_tag *t = sim_is_uuid(id) ? sim_tag_find(id) : NULL;
    if (t == NULL) {
        resp_error(r, 404, "not.found", "Tag %s was not found", id);
        return;
    }
    const char *ic = req_param(q, "include_count");
    r->status = 200;
    r->body = tag_json(t, ic && strcmp(ic, "true") == 0);
}

void tags_update(struct sim_req *q, struct sim_resp *r, const char *id)
{
    struct sim_tag *t = sim_is_uuid(id) ? sim_tag_find(id) : NULL;
    if (t == NULL) {
        resp_error(r, 404, "not.found", "Tag %s was not found", id);
        return;
    }
    if (req_json_body(q, r) != 0)
        return;
    json_object *errs = json_object_new_array();
    const char *name = body_string(q->json, "name", 255, true, errs);
    if (errors_answered(r, errs))
        return;
    struct sim_tag *other = sim_tag_find_name(name);
    if (other != NULL && other != t) {
        resp_error(r, 409, "conflict", "A tag named %s already exists", name);
        return;
    }
    sim_set_str(&t->name, name);
    t->updated_at = sim_now_ms();
    r->status = 200;
    r->body = tag_json(t, false);
}

/* DELETE queues a contacts_tags_delete activity (202); the tag goes when it completes. */
void tags_delete(struct sim_req *q, struct sim_resp *r, const char *id)
{
    (void)q;
    struct sim_tag *t = sim_is_uuid(id) ? sim_tag_find(id) : NULL;
    if (t == NULL || t->delete_pending) {
        resp_error(r, 404, "not.found", "Tag %s was not found", id);
        return;
    }
    t->delete_pending = true;
    json_object *input = json_object_new_object();
    json_object *ids = json_object_new_array();
    json_object_array_add(ids, json_object_new_string(t->id));
    json_object_object_add(input, "tag_ids", ids);
    struct sim_activity *a = sim_activity_create(ACT_TAG_DELETE, input, 1);
    r->status = 202;
    r->body = sim_activity_json(a);
    snprintf(r->location, sizeof r->location, "/v3/activities/%s", a->id);
}

/* ---- tagging activities ---- */

/* The first tag id in arr that is not a live tag, or NULL. */
static const char *missing_tag(json_object *arr)
{
    for (size_t i = 0; arr && i < json_object_array_length(arr); i++) {
        const char *id = json_object_get_string(json_object_array_get_idx(arr, i));
        if (sim_tag_find(id) == NULL)
            return id;
    }
    return NULL;
}

/* Checks an array of uuids at #/path with 1..max items; NULL when absent. */
static json_object *uuid_array(json_object *parent, const char *key, const char *path, size_t max,
                               json_object *errs)
{
    json_object *arr;
    if (!json_object_object_get_ex(parent, key, &arr) || json_object_is_type(arr, json_type_null))
        return NULL;
    if (!json_object_is_type(arr, json_type_array)) {
        errs_add(errs, "json.field.invalid", "#/%s: must be an array", path);
        return NULL;
    }
    size_t n = json_object_array_length(arr);
    if (n < 1 || n > max) {
        errs_add(errs, n < 1 ? "json.field.invalid" : "json.max.items.exceeded",
                 "#/%s: must have 1 to %zu items", path, max);
        return arr;
    }
    for (size_t i = 0; i < n; i++) {
        json_object *v = json_object_array_get_idx(arr, i);
        if (!json_object_is_type(v, json_type_string) || !sim_is_uuid(json_object_get_string(v))) {
            errs_add(errs, "json.field.invalid", "#/%s/%zu: must be a UUID", path, i);
            break;
        }
    }
    return arr;
}

/* POST /activities/contacts_taggings_add and _remove: source.contact_ids (≤ 500) is
 * the only source simulated; tag_ids 1..50 live tags (else 404). */
void activities_tagging(struct sim_req *q, struct sim_resp *r, bool add)
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
    json_object *tags = uuid_array(q->json, "tag_ids", "tag_ids", 50, errs);
    if (tags == NULL)
        errs_add(errs, "json.field.required", "#/tag_ids: is required");
    json_object *cids = NULL;
    if (source != NULL) {
        cids = uuid_array(source, "contact_ids", "source/contact_ids", 500, errs);
        int kinds = 0;
        static const char *const SOURCES[] = {"contact_ids",         "list_ids",       "tag_ids",
                                              "all_active_contacts", "new_subscriber", NULL};
        for (size_t i = 0; SOURCES[i]; i++)
            kinds += json_object_object_get(source, SOURCES[i]) != NULL;
        if (kinds != 1)
            errs_add(errs, "json.field.invalid",
                     "#/source: exactly one of contact_ids, list_ids, tag_ids, "
                     "all_active_contacts, new_subscriber is required");
        else if (cids == NULL)
            errs_add(errs, "json.field.invalid",
                     "#/source: the simulator supports source.contact_ids only");
    }
    if (errors_answered(r, errs))
        return;
    const char *missing = missing_tag(tags);
    if (missing != NULL) {
        resp_error(r, 404, "not.found", "#/tag_ids: tag %s was not found", missing);
        return;
    }
    if (sim_activities_queued() >= (size_t)sim.cfg.max_activities) {
        resp_error_object(r, 429, "too_many_requests",
                          "Too many activities are queued for this account; try again later");
        return;
    }
    struct sim_activity *a = sim_activity_create(add ? ACT_TAGGING_ADD : ACT_TAGGING_REMOVE,
                                                 q->json, (long)json_object_array_length(cids));
    q->json = NULL;
    r->status = 201;
    r->body = sim_activity_json(a);
}

void sim_settle_tagging(struct sim_activity *a, bool add)
{
    json_object *cids =
        json_object_object_get(json_object_object_get(a->input, "source"), "contact_ids");
    json_object *tags = json_object_object_get(a->input, "tag_ids");
    for (size_t i = 0; i < json_object_array_length(cids); i++) {
        const char *cid = json_object_get_string(json_object_array_get_idx(cids, i));
        struct sim_contact *c = sim_contact_find(cid);
        a->items_completed++;
        if (c == NULL || c->deleted_at != 0) {
            a->error_count++;
            errs_add(a->errors, NULL, "contact %s was not found", cid);
            continue;
        }
        for (size_t k = 0; k < json_object_array_length(tags); k++) {
            struct sim_tag *t =
                sim_tag_find(json_object_get_string(json_object_array_get_idx(tags, k)));
            if (t == NULL)
                continue;
            if (!add) {
                sim_contact_untag(c, t);
            } else if (sim_contact_tag(c, t) != 0) {
                a->error_count++;
                errs_add(a->errors, NULL, "contact %s already has %d tags", cid,
                         SIM_TAGS_PER_CONTACT);
                break;
            }
        }
    }
}

void sim_settle_tag_delete(struct sim_activity *a)
{
    json_object *ids = json_object_object_get(a->input, "tag_ids");
    for (size_t k = 0; k < json_object_array_length(ids); k++) {
        struct sim_tag *t = sim_tag_find(json_object_get_string(json_object_array_get_idx(ids, k)));
        a->items_completed++;
        if (t == NULL)
            continue;
        for (size_t i = 0; i < sim.n_contacts; i++)
            sim_contact_untag(sim.contacts[i], t);
        t->deleted_at = t->updated_at = sim_now_ms();
        t->delete_pending = false;
    }
}
