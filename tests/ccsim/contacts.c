/* ccsim /v3/contacts endpoints: contacts unique by email (deleted ones included, so a
 * POST for a deleted contact's address is 409), deleted contacts hidden from
 * GET /contacts unless status=all|deleted, PUT replaces core fields and revives a
 * deleted contact, at most 50 lists per contact. */
#include "sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const PERMISSIONS[] = {
    "explicit", "implicit", "not_set", "pending_confirmation", "temp_hold", "unsubscribed", NULL};
static const char *const STATUSES[] = {
    "all",       "active",       "deleted", "not_set", "pending_confirmation",
    "temp_hold", "unsubscribed", NULL};
static const char *const INCLUDES[] = {"custom_fields",
                                       "list_memberships",
                                       "phone_numbers",
                                       "street_addresses",
                                       "taggings",
                                       "notes",
                                       NULL};
static const char *const SMS_STATUSES[] = {
    "all", "explicit", "unsubscribed", "pending_confirmation", "not_set", NULL};

static bool in_set(const char *const *set, const char *s)
{
    for (; *set; set++)
        if (strcmp(*set, s) == 0)
            return true;
    return false;
}

/* Splits a csv into at most max items (copied into buf); -1 when a value is not in
 * set (set NULL = any) or there are too many. */
static int csv_split(const char *csv, char *buf, size_t buflen, const char **items, int max,
                     const char *const *set)
{
    snprintf(buf, buflen, "%s", csv);
    int n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        if (n >= max || (set != NULL && !in_set(set, tok)))
            return -1;
        items[n++] = tok;
    }
    return n;
}

static bool contact_matches_status(const struct sim_contact *c, const char *const *st, int n)
{
    if (n == 0)
        return c->deleted_at == 0;
    for (int i = 0; i < n; i++) {
        if (strcmp(st[i], "all") == 0)
            return true;
        if (strcmp(st[i], "deleted") == 0) {
            if (c->deleted_at != 0)
                return true;
            continue;
        }
        if (c->deleted_at != 0)
            continue;
        if (strcmp(st[i], "active") == 0) {
            if (strcmp(c->permission, "implicit") == 0 || strcmp(c->permission, "explicit") == 0)
                return true;
        } else if (strcmp(st[i], c->permission) == 0) {
            return true;
        }
    }
    return false;
}

/* Whether the include parameter (checked by the caller) names item. */
static bool include_has(const struct sim_req *q, const char *item)
{
    const char *s = req_param(q, "include");
    char buf[512];
    const char *items[16];
    int n = s ? csv_split(s, buf, sizeof buf, items, 16, NULL) : 0;
    for (int i = 0; i < n; i++)
        if (strcmp(items[i], item) == 0)
            return true;
    return false;
}

/* A contact's JSON with the custom fields and taggings include= asks for. */
static json_object *contact_view(const struct sim_req *q, const struct sim_contact *c,
                                 bool with_lists)
{
    json_object *o = sim_contact_json(c, with_lists);
    sim_contact_extras_json(o, c, include_has(q, "custom_fields"), include_has(q, "taggings"));
    return o;
}

static void check_time_param(const struct sim_req *q, const char *name, int64_t *out,
                             json_object *errs)
{
    const char *s = req_param(q, name);
    *out = 0;
    if (s != NULL && sim_parse_time(s, out) != 0)
        errs_add(errs, "query.param.invalid", "%s: must be an ISO-8601 date-time", name);
}

void contacts_get_all(struct sim_req *q, struct sim_resp *r)
{
    int limit;
    if (req_limit(q, r, 50, 500, &limit) != 0)
        return;
    json_object *errs = json_object_new_array();
    char sbuf[512], ibuf[512], lbuf[2048], smsbuf[256];
    const char *st[16], *inc[16], *lists[32], *sms[8];
    int nst = 0, ninc = 0, nlists = 0;
    const char *s = req_param(q, "status");
    if (s && (nst = csv_split(s, sbuf, sizeof sbuf, st, 16, STATUSES)) <= 0)
        errs_add(errs, "query.param.invalid",
                 "status: must be a comma-separated list of all, active, deleted, not_set, "
                 "pending_confirmation, temp_hold, unsubscribed");
    s = req_param(q, "include");
    if (s && (ninc = csv_split(s, ibuf, sizeof ibuf, inc, 16, INCLUDES)) <= 0)
        errs_add(errs, "query.param.invalid",
                 "include: must be a comma-separated list of custom_fields, list_memberships, "
                 "phone_numbers, street_addresses, taggings, notes");
    s = req_param(q, "sms_status");
    if (s && csv_split(s, smsbuf, sizeof smsbuf, sms, 8, SMS_STATUSES) <= 0)
        errs_add(errs, "query.param.invalid", "sms_status: invalid value");
    s = req_param(q, "lists");
    if (s) {
        nlists = csv_split(s, lbuf, sizeof lbuf, lists, 25, NULL);
        if (nlists <= 0) {
            errs_add(errs, "query.param.invalid", "lists: at most 25 comma-separated list ids");
        } else {
            for (int i = 0; i < nlists; i++)
                if (!sim_is_uuid(lists[i])) {
                    errs_add(errs, "query.param.invalid", "lists: %s is not a list id", lists[i]);
                    break;
                }
        }
    }
    int64_t ua, ub, ca, cb;
    check_time_param(q, "updated_after", &ua, errs);
    check_time_param(q, "updated_before", &ub, errs);
    check_time_param(q, "created_after", &ca, errs);
    check_time_param(q, "created_before", &cb, errs);
    const char *ic = req_param(q, "include_count");
    if (ic && strcmp(ic, "true") && strcmp(ic, "false"))
        errs_add(errs, "query.param.invalid", "include_count: must be true or false");
    const char *email = req_param(q, "email");
    if (json_object_array_length(errs) > 0) {
        resp_errors(r, 400, errs);
        return;
    }
    json_object_put(errs);
    bool with_lists = false;
    for (int i = 0; i < ninc; i++)
        if (strcmp(inc[i], "list_memberships") == 0)
            with_lists = true;
    bool want_total = ic && strcmp(ic, "true") == 0;
    struct sim_list *wanted[25];
    int nwanted = 0;
    for (int i = 0; i < nlists; i++) {
        struct sim_list *l = sim_list_find(lists[i]);
        if (l != NULL)
            wanted[nwanted++] = l;
    }
    long offset = req_offset(q), seen = 0, total = 0;
    bool more = false;
    json_object *arr = json_object_new_array();
    for (size_t i = 0; i < sim.n_contacts; i++) {
        struct sim_contact *c = sim.contacts[i];
        if (email && strcasecmp(c->email, email) != 0)
            continue;
        if (!contact_matches_status(c, st, nst))
            continue;
        if (nlists > 0) {
            bool member = false;
            for (int k = 0; k < nwanted && !member; k++)
                member = sim_contact_on_list(c, wanted[k]);
            if (!member)
                continue;
        }
        if ((ua && c->updated_at <= ua) || (ub && c->updated_at >= ub) ||
            (ca && c->created_at <= ca) || (cb && c->created_at >= cb))
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
        json_object_array_add(arr, contact_view(q, c, with_lists));
    }
    json_object *o = json_object_new_object();
    json_object_object_add(o, "contacts", arr);
    if (want_total)
        json_object_object_add(o, "contacts_count", json_object_new_int64(total));
    if (more)
        resp_next_link(r, o, q, "/v3/contacts", offset + limit);
    r->status = 200;
    r->body = o;
}

static void check_string(json_object *body, const char *key, size_t maxlen, json_object *errs)
{
    json_object *v;
    if (!json_object_object_get_ex(body, key, &v) || json_object_is_type(v, json_type_null))
        return;
    if (!json_object_is_type(v, json_type_string))
        errs_add(errs, "json.field.invalid", "#/%s: must be a string", key);
    else if (maxlen && strlen(json_object_get_string(v)) > maxlen)
        errs_add(errs, "json.field.invalid", "#/%s: must be at most %zu characters", key, maxlen);
}

static void check_int(json_object *body, const char *key, int lo, int hi, json_object *errs)
{
    json_object *v;
    if (!json_object_object_get_ex(body, key, &v) || json_object_is_type(v, json_type_null))
        return;
    if (!json_object_is_type(v, json_type_int) || json_object_get_int(v) < lo ||
        json_object_get_int(v) > hi)
        errs_add(errs, "json.field.invalid", "#/%s: must be an integer from %d to %d", key, lo, hi);
}

static void check_source(json_object *body, const char *key, json_object *errs)
{
    json_object *v;
    if (!json_object_object_get_ex(body, key, &v) || json_object_is_type(v, json_type_null)) {
        errs_add(errs, "json.field.required", "#/%s: is required", key);
        return;
    }
    const char *s = json_object_get_string(v);
    if (!json_object_is_type(v, json_type_string) ||
        (strcmp(s, "Account") != 0 && strcmp(s, "Contact") != 0))
        errs_add(errs, "json.field.invalid", "#/%s: must be Account or Contact", key);
}

/* Checks the fields createContact and updateContact share; email is set to the
 * address, or NULL when the body has none. */
static void check_contact_body(json_object *body, json_object *errs, const char **email)
{
    *email = NULL;
    check_string(body, "first_name", 50, errs);
    check_string(body, "last_name", 50, errs);
    check_string(body, "job_title", 50, errs);
    check_string(body, "company_name", 50, errs);
    check_string(body, "anniversary", 10, errs);
    check_int(body, "birthday_month", 1, 12, errs);
    check_int(body, "birthday_day", 1, 31, errs);
    json_object *e;
    if (json_object_object_get_ex(body, "email_address", &e) &&
        !json_object_is_type(e, json_type_null)) {
        json_object *a, *p;
        if (!json_object_is_type(e, json_type_object)) {
            errs_add(errs, "json.field.invalid", "#/email_address: must be an object");
        } else if (!json_object_object_get_ex(e, "address", &a) ||
                   !json_object_is_type(a, json_type_string)) {
            errs_add(errs, "json.field.required", "#/email_address/address: is required");
        } else if (strlen(json_object_get_string(a)) > 80) {
            errs_add(errs, "json.field.invalid",
                     "#/email_address/address: must be at most 80 characters");
        } else if (!sim_email_valid(json_object_get_string(a))) {
            errs_add(errs, "contacts.api.validation.error",
                     "#/email_address/address: %s is not a valid email address",
                     json_object_get_string(a));
        } else {
            *email = json_object_get_string(a);
        }
        if (json_object_is_type(e, json_type_object) &&
            json_object_object_get_ex(e, "permission_to_send", &p) &&
            (!json_object_is_type(p, json_type_string) ||
             !in_set(PERMISSIONS, json_object_get_string(p))))
            errs_add(errs, "json.field.invalid",
                     "#/email_address/permission_to_send: must be one of explicit, implicit, "
                     "not_set, pending_confirmation, temp_hold, unsubscribed");
    }
    json_object *lm;
    if (json_object_object_get_ex(body, "list_memberships", &lm) &&
        !json_object_is_type(lm, json_type_null)) {
        if (!json_object_is_type(lm, json_type_array)) {
            errs_add(errs, "json.field.invalid", "#/list_memberships: must be an array");
        } else if (json_object_array_length(lm) > SIM_LISTS_PER_CONTACT) {
            errs_add(errs, "json.field.invalid", "#/list_memberships: at most 50 items");
        } else {
            for (size_t i = 0; i < json_object_array_length(lm); i++) {
                json_object *id = json_object_array_get_idx(lm, i);
                const char *s = json_object_get_string(id);
                struct sim_list *l = json_object_is_type(id, json_type_string) && sim_is_uuid(s)
                                         ? sim_list_find(s)
                                         : NULL;
                if (l == NULL || l->deleted_at != 0)
                    errs_add(errs, "json.field.invalid",
                             "#/list_memberships/%zu: %s is not a list of this account", i,
                             s ? s : "null");
            }
        }
    }
}

static const char *get_str(json_object *body, const char *key)
{
    json_object *v;
    if (json_object_object_get_ex(body, key, &v) && json_object_is_type(v, json_type_string))
        return json_object_get_string(v);
    return NULL;
}

static void apply_memberships(struct sim_contact *c, json_object *lm)
{
    if (lm == NULL || !json_object_is_type(lm, json_type_array))
        return;
    sim_contact_remove_all_lists(c);
    if (strcmp(c->permission, "unsubscribed") == 0)
        return; /* an unsubscribed contact cannot be put on a list by the account */
    for (size_t i = 0; i < json_object_array_length(lm); i++)
        sim_contact_add_list(
            c, sim_list_find(json_object_get_string(json_object_array_get_idx(lm, i))));
}

static void apply_core(struct sim_contact *c, json_object *body)
{
    sim_set_str(&c->first_name, get_str(body, "first_name"));
    sim_set_str(&c->last_name, get_str(body, "last_name"));
    sim_set_str(&c->job_title, get_str(body, "job_title"));
    sim_set_str(&c->company_name, get_str(body, "company_name"));
}

void contacts_create(struct sim_req *q, struct sim_resp *r)
{
    if (req_json_body(q, r) != 0)
        return;
    json_object *errs = json_object_new_array();
    const char *email;
    check_source(q->json, "create_source", errs);
    check_contact_body(q->json, errs, &email);
    json_object *e = json_object_object_get(q->json, "email_address");
    if (e == NULL && get_str(q->json, "first_name") == NULL &&
        get_str(q->json, "last_name") == NULL)
        errs_add(errs, "json.field.required",
                 "#/email_address: an email_address, first_name or last_name is required");
    if (json_object_array_length(errs) > 0) {
        resp_errors(r, 400, errs);
        return;
    }
    json_object_put(errs);
    if (email == NULL) {
        /* The simulator keys contacts by email: a contact without one is not modelled. */
        resp_error(r, 400, "json.field.required", "#/email_address: is required");
        return;
    }
    struct sim_contact *existing = sim_contact_find_email(email);
    if (existing != NULL) {
        resp_error(r, 409, "conflict", "Email already exists for contact %s", existing->id);
        return;
    }
    const char *source = get_str(q->json, "create_source");
    struct sim_contact *c = sim_contact_create(email, source);
    const char *perm = get_str(e, "permission_to_send");
    if (perm != NULL)
        snprintf(c->permission, sizeof c->permission, "%s", perm);
    apply_core(c, q->json);
    apply_memberships(c, json_object_object_get(q->json, "list_memberships"));
    r->status = 201;
    r->body = sim_contact_json(c, false);
}

static bool include_lists(const struct sim_req *q, struct sim_resp *r, bool *with_lists)
{
    const char *s = req_param(q, "include");
    char buf[512];
    const char *inc[16];
    *with_lists = false;
    if (s == NULL)
        return true;
    int n = csv_split(s, buf, sizeof buf, inc, 16, INCLUDES);
    if (n <= 0) {
        resp_error(r, 400, "query.param.invalid",
                   "include: must be a comma-separated list of custom_fields, list_memberships, "
                   "phone_numbers, street_addresses, taggings, notes");
        return false;
    }
    for (int i = 0; i < n; i++)
        if (strcmp(inc[i], "list_memberships") == 0)
            *with_lists = true;
    return true;
}

static struct sim_contact *find_or_404(struct sim_resp *r, const char *id, bool allow_deleted)
{
    struct sim_contact *c = sim_contact_find(id);
    if (c == NULL || (!allow_deleted && c->deleted_at != 0)) {
        resp_error(r, 404, "not.found", "Contact %s was not found", id);
        return NULL;
    }
    return c;
}

void contacts_get(struct sim_req *q, struct sim_resp *r, const char *id)
{
    bool with_lists;
    if (!include_lists(q, r, &with_lists))
        return;
    struct sim_contact *c = find_or_404(r, id, false);
    if (c == NULL)
        return;
    r->status = 200;
    r->body = contact_view(q, c, with_lists);
}

void contacts_update(struct sim_req *q, struct sim_resp *r, const char *id)
{
    if (req_json_body(q, r) != 0)
        return;
    json_object *errs = json_object_new_array();
    const char *email;
    check_source(q->json, "update_source", errs);
    check_contact_body(q->json, errs, &email);
    if (json_object_array_length(errs) > 0) {
        resp_errors(r, 400, errs);
        return;
    }
    json_object_put(errs);
    struct sim_contact *c = find_or_404(r, id, true);
    if (c == NULL)
        return;
    if (email != NULL) {
        struct sim_contact *other = sim_contact_find_email(email);
        if (other != NULL && other != c) {
            resp_error(r, 409, "conflict", "Email already exists for contact %s", other->id);
            return;
        }
        if (strcasecmp(email, c->email) != 0)
            sim_contact_set_email(c, email);
    }
    const char *source = get_str(q->json, "update_source");
    snprintf(c->update_source, sizeof c->update_source, "%s", source);
    c->deleted_at = 0; /* a PUT revives a deleted contact */
    json_object *e = json_object_object_get(q->json, "email_address");
    const char *perm = e ? get_str(e, "permission_to_send") : NULL;
    /* Only the contact can opt back in: an Account update cannot resubscribe. */
    if (perm != NULL &&
        (strcmp(c->permission, "unsubscribed") != 0 || strcmp(source, "Contact") == 0)) {
        if (strcmp(perm, "unsubscribed") == 0 && strcmp(c->permission, "unsubscribed") != 0)
            sim_contact_unsubscribe(c, source);
        else
            snprintf(c->permission, sizeof c->permission, "%s", perm);
    }
    apply_core(c, q->json);
    apply_memberships(c, json_object_object_get(q->json, "list_memberships"));
    c->updated_at = sim_now_ms();
    r->status = 200;
    r->body = sim_contact_json(c, false);
}

void contacts_delete(struct sim_req *q, struct sim_resp *r, const char *id)
{
    struct sim_contact *c = find_or_404(r, id, false);
    if (c == NULL)
        return;
    sim_contact_remove_all_lists(c);
    c->deleted_at = c->updated_at = sim_now_ms();
    r->status = 204;
}
