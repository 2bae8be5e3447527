/* ccsim control API under /__sim/: what a test or a benchmark needs to set the scene
 * and to look behind it (reset, tokens, seeding, admin actions in the CC web UI,
 * faults, counters, the request log, a state dump). Documented in README.md. These
 * requests are never limited, counted or logged. */
#include "sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_object *ok(void)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "ok", json_object_new_boolean(1));
    return o;
}

static const char *str_of(json_object *o, const char *key)
{
    json_object *v;
    if (o && json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string))
        return json_object_get_string(v);
    return NULL;
}

static bool int_of(json_object *o, const char *key, long *out)
{
    json_object *v;
    if (o && json_object_object_get_ex(o, key, &v) &&
        (json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double))) {
        *out = (long)json_object_get_int64(v);
        return true;
    }
    return false;
}

static void bad(struct sim_resp *r, const char *msg)
{
    resp_error(r, 400, "sim.bad_request", "%s", msg);
}

static void seed(json_object *body, struct sim_resp *r)
{
    json_object *out = json_object_new_object();
    json_object *lists_out = json_object_new_array();
    json_object *contacts_out = json_object_new_array();
    json_object *lists = json_object_object_get(body, "lists");
    for (size_t i = 0; lists && i < json_object_array_length(lists); i++) {
        json_object *l = json_object_array_get_idx(lists, i);
        const char *name = json_object_is_type(l, json_type_string) ? json_object_get_string(l)
                                                                    : str_of(l, "name");
        if (name == NULL)
            continue;
        struct sim_list *list = sim_list_find_name(name, NULL);
        if (list == NULL)
            list = sim_list_create(name, str_of(l, "description"), false);
        json_object *o = json_object_new_object();
        json_object_object_add(o, "name", json_object_new_string(list->name));
        json_object_object_add(o, "list_id", json_object_new_string(list->id));
        json_object_array_add(lists_out, o);
    }
    json_object *contacts = json_object_object_get(body, "contacts");
    for (size_t i = 0; contacts && i < json_object_array_length(contacts); i++) {
        json_object *c = json_object_array_get_idx(contacts, i);
        const char *email = str_of(c, "email");
        if (email == NULL)
            continue;
        struct sim_contact *ct = sim_contact_find_email(email);
        if (ct == NULL)
            ct = sim_contact_create(email, "Account");
        if (str_of(c, "first_name"))
            sim_set_str(&ct->first_name, str_of(c, "first_name"));
        if (str_of(c, "last_name"))
            sim_set_str(&ct->last_name, str_of(c, "last_name"));
        json_object *ls = json_object_object_get(c, "lists");
        for (size_t k = 0; ls && k < json_object_array_length(ls); k++) {
            const char *key = json_object_get_string(json_object_array_get_idx(ls, k));
            struct sim_list *l = sim_list_find(key);
            if (l == NULL)
                l = sim_list_find_name(key, NULL);
            if (l == NULL)
                l = sim_list_create(key, NULL, false);
            sim_contact_add_list(ct, l);
        }
        const char *perm = str_of(c, "permission_to_send");
        if (perm && strcmp(perm, "unsubscribed") == 0)
            sim_contact_unsubscribe(ct, "Contact");
        else if (perm)
            snprintf(ct->permission, sizeof ct->permission, "%s", perm);
        json_object *del = json_object_object_get(c, "deleted");
        if (del && json_object_get_boolean(del)) {
            sim_contact_remove_all_lists(ct);
            ct->deleted_at = sim_now_ms();
        }
        json_object *o = json_object_new_object();
        json_object_object_add(o, "email", json_object_new_string(ct->email));
        json_object_object_add(o, "contact_id", json_object_new_string(ct->id));
        json_object_array_add(contacts_out, o);
    }
    json_object_object_add(out, "lists", lists_out);
    json_object_object_add(out, "contacts", contacts_out);
    r->status = 200;
    r->body = out;
}

static void set_fault(json_object *body, struct sim_resp *r)
{
    struct sim_fault f;
    memset(&f, 0, sizeof f);
    const char *mode = str_of(body, "mode");
    long v;
    if (mode == NULL || strcmp(mode, "status") == 0) {
        f.mode = FAULT_STATUS;
        f.status = int_of(body, "status", &v) ? (int)v : 500;
        if (f.status != 500 && f.status != 503 && f.status != 429 && f.status != 502 &&
            f.status != 504) {
            bad(r, "status must be 429, 500, 502, 503 or 504");
            return;
        }
    } else if (strcmp(mode, "delay") == 0) {
        f.mode = FAULT_DELAY;
        f.delay_ms = int_of(body, "delay_ms", &v) ? (int)v : 30000;
    } else if (strcmp(mode, "drop") == 0) {
        f.mode = FAULT_DROP;
    } else {
        bad(r, "mode must be status, delay or drop");
        return;
    }
    json_object *frac;
    if (json_object_object_get_ex(body, "fraction", &frac)) {
        f.remaining = -1;
        f.fraction = json_object_get_double(frac);
    } else {
        f.remaining = int_of(body, "count", &v) ? v : 1;
    }
    const char *prefix = str_of(body, "path_prefix");
    if (prefix)
        snprintf(f.path_prefix, sizeof f.path_prefix, "%s", prefix);
    sim.fault = f;
    r->status = 200;
    r->body = ok();
}

static json_object *delays_json(void)
{
    json_object *arr = json_object_new_array();
    for (int i = 0; i < sim.n_delays; i++) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "endpoint", json_object_new_string(sim.delays[i].endpoint));
        json_object_object_add(o, "delay_ms", json_object_new_int(sim.delays[i].delay_ms));
        json_object_object_add(o, "remaining", json_object_new_int64(sim.delays[i].remaining));
        json_object_array_add(arr, o);
    }
    json_object *o = json_object_new_object();
    json_object_object_add(o, "delays", arr);
    return o;
}

/* Sets (or, with delay_ms 0, removes) the latency of one endpoint, named as the
 * counters name it: "POST /v3/contact_lists", "GET /v3/activities/{activity_id}". */
static void set_delay(json_object *body, struct sim_resp *r)
{
    const char *endpoint = str_of(body, "endpoint");
    long ms, count = -1;
    if (endpoint == NULL || strchr(endpoint, ' ') == NULL || strlen(endpoint) >= 128) {
        bad(r, "endpoint must be \"METHOD /path\" as /__sim/counters names it");
        return;
    }
    if (!int_of(body, "delay_ms", &ms) || ms < 0 || ms > 600000) {
        bad(r, "delay_ms must be 0 to 600000");
        return;
    }
    if (int_of(body, "count", &count) && count < 1) {
        bad(r, "count must be at least 1 (leave it out to delay until cleared)");
        return;
    }
    int i = 0;
    while (i < sim.n_delays && strcmp(sim.delays[i].endpoint, endpoint) != 0)
        i++;
    if (ms == 0) {
        if (i < sim.n_delays)
            sim.delays[i] = sim.delays[--sim.n_delays];
    } else {
        if (i == sim.n_delays) {
            if (sim.n_delays == SIM_DELAY_RULES) {
                bad(r, "too many delayed endpoints");
                return;
            }
            sim.n_delays++;
        }
        snprintf(sim.delays[i].endpoint, sizeof sim.delays[i].endpoint, "%s", endpoint);
        sim.delays[i].delay_ms = (int)ms;
        sim.delays[i].remaining = count;
    }
    r->status = 200;
    r->body = delays_json();
}

static json_object *counters(void)
{
    json_object *o = json_object_new_object();
    json_object *by = json_object_new_object();
    for (size_t i = 0; i < sim.n_counters; i++)
        json_object_object_add(by, sim.counters[i].name,
                               json_object_new_int64(sim.counters[i].count));
    json_object_object_add(o, "by_endpoint", by);
    json_object_object_add(o, "total", json_object_new_int64(sim.total));
    json_object_object_add(o, "throttled", json_object_new_int64(sim.throttled));
    json_object_object_add(o, "quota_exceeded", json_object_new_int64(sim.quota_exceeded));
    json_object_object_add(o, "unauthorized", json_object_new_int64(sim.unauthorized));
    json_object_object_add(o, "faults", json_object_new_int64(sim.faults_served));
    json_object_object_add(o, "max_per_second", json_object_new_int64(sim.max_per_second));
    json_object_object_add(o, "quota_used_today", json_object_new_int64(sim.quota_used));
    json_object_object_add(o, "activities_queued",
                           json_object_new_int64((int64_t)sim_activities_queued()));
    return o;
}

static json_object *request_log(const struct sim_req *q)
{
    const char *s = req_param(q, "since");
    uint64_t since = s ? strtoull(s, NULL, 10) : 0;
    json_object *arr = json_object_new_array();
    uint64_t first = sim.log_seq > SIM_LOG_CAP ? sim.log_seq - SIM_LOG_CAP : 0;
    for (uint64_t seq = first > since ? first : since; seq < sim.log_seq; seq++) {
        const struct sim_log_entry *e = &sim.log[seq % SIM_LOG_CAP];
        json_object *o = json_object_new_object();
        char ts[40];
        sim_format_time(e->ts, ts, sizeof ts);
        json_object_object_add(o, "seq", json_object_new_int64((int64_t)e->seq));
        json_object_object_add(o, "ts", json_object_new_string(ts));
        sim_format_time(e->arrived, ts, sizeof ts);
        json_object_object_add(o, "arrived", json_object_new_string(ts));
        json_object_object_add(o, "method", json_object_new_string(e->method));
        json_object_object_add(o, "path", json_object_new_string(e->path ? e->path : ""));
        json_object_object_add(o, "status", json_object_new_int(e->status));
        if (e->body)
            json_object_object_add(o, "body", json_object_new_string(e->body));
        json_object_array_add(arr, o);
    }
    json_object *o = json_object_new_object();
    json_object_object_add(o, "next", json_object_new_int64((int64_t)sim.log_seq));
    json_object_object_add(o, "requests", arr);
    return o;
}

static json_object *state_dump(void)
{
    json_object *o = json_object_new_object();
    json_object *lists = json_object_new_array();
    for (size_t i = 0; i < sim.n_lists; i++) {
        struct sim_list *l = sim.lists[i];
        json_object *lo = json_object_new_object();
        json_object_object_add(lo, "list_id", json_object_new_string(l->id));
        json_object_object_add(lo, "name", json_object_new_string(l->name));
        json_object_object_add(lo, "status",
                               json_object_new_string(l->deleted_at ? "deleted" : "active"));
        json_object *members = json_object_new_array();
        for (size_t k = 0; k < sim.n_contacts; k++)
            if (sim_contact_on_list(sim.contacts[k], l))
                json_object_array_add(members, json_object_new_string(sim.contacts[k]->email));
        json_object_object_add(lo, "members", members);
        json_object_array_add(lists, lo);
    }
    json_object *contacts = json_object_new_array();
    for (size_t k = 0; k < sim.n_contacts; k++) {
        struct sim_contact *c = sim.contacts[k];
        json_object *co = json_object_new_object();
        json_object_object_add(co, "contact_id", json_object_new_string(c->id));
        json_object_object_add(co, "email", json_object_new_string(c->email));
        if (c->first_name)
            json_object_object_add(co, "first_name", json_object_new_string(c->first_name));
        if (c->last_name)
            json_object_object_add(co, "last_name", json_object_new_string(c->last_name));
        json_object_object_add(co, "permission_to_send", json_object_new_string(c->permission));
        json_object_object_add(co, "deleted", json_object_new_boolean(c->deleted_at != 0));
        json_object *ls = json_object_new_array();
        for (int i = 0; i < c->n_lists; i++)
            json_object_array_add(ls, json_object_new_string(c->lists[i]->name));
        json_object_object_add(co, "lists", ls);
        json_object *cf = json_object_new_object();
        for (int i = 0; i < c->n_cf; i++)
            json_object_object_add(cf, c->cf[i].field->name,
                                   json_object_new_string(c->cf[i].value));
        json_object_object_add(co, "custom_fields", cf);
        json_object *tags = json_object_new_array();
        for (int i = 0; i < c->n_tags; i++)
            json_object_array_add(tags, json_object_new_string(c->tags[i]->name));
        json_object_object_add(co, "tags", tags);
        if (c->job_title)
            json_object_object_add(co, "job_title", json_object_new_string(c->job_title));
        if (c->company_name)
            json_object_object_add(co, "company_name", json_object_new_string(c->company_name));
        json_object_array_add(contacts, co);
    }
    json_object_object_add(o, "lists", lists);
    json_object_object_add(o, "contacts", contacts);
    json_object *fields = json_object_new_array();
    for (size_t i = 0; i < sim.n_fields; i++) {
        json_object *fo = json_object_new_object();
        json_object_object_add(fo, "custom_field_id", json_object_new_string(sim.fields[i]->id));
        json_object_object_add(fo, "name", json_object_new_string(sim.fields[i]->name));
        json_object_object_add(fo, "type", json_object_new_string(sim.fields[i]->type));
        json_object_array_add(fields, fo);
    }
    json_object_object_add(o, "custom_fields", fields);
    json_object *tags = json_object_new_array();
    for (size_t i = 0; i < sim.n_tags; i++) {
        if (sim.tags[i]->deleted_at != 0)
            continue;
        json_object *to = json_object_new_object();
        json_object_object_add(to, "tag_id", json_object_new_string(sim.tags[i]->id));
        json_object_object_add(to, "name", json_object_new_string(sim.tags[i]->name));
        json_object_array_add(tags, to);
    }
    json_object_object_add(o, "tags", tags);
    json_object_object_add(o, "activities_queued",
                           json_object_new_int64((int64_t)sim_activities_queued()));
    json_object_object_add(o, "activities_total", json_object_new_int64((int64_t)sim.n_activities));
    return o;
}

static void set_config(json_object *body, struct sim_resp *r)
{
    long v;
    if (int_of(body, "rate", &v))
        sim.cfg.rate = (int)v;
    if (int_of(body, "daily_limit", &v))
        sim.cfg.daily_limit = v;
    if (int_of(body, "activity_ms", &v))
        sim.cfg.activity_ms = (int)v;
    if (int_of(body, "token_ttl", &v))
        sim.cfg.token_ttl = v;
    if (int_of(body, "max_lists", &v))
        sim.cfg.max_lists = (int)v;
    if (int_of(body, "max_activities", &v))
        sim.cfg.max_activities = (int)v;
    json_object *a;
    if (json_object_object_get_ex(body, "auth", &a))
        sim.cfg.auth = json_object_get_boolean(a);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "rate", json_object_new_int(sim.cfg.rate));
    json_object_object_add(o, "daily_limit", json_object_new_int64(sim.cfg.daily_limit));
    json_object_object_add(o, "activity_ms", json_object_new_int(sim.cfg.activity_ms));
    json_object_object_add(o, "token_ttl", json_object_new_int64(sim.cfg.token_ttl));
    json_object_object_add(o, "max_lists", json_object_new_int(sim.cfg.max_lists));
    json_object_object_add(o, "max_activities", json_object_new_int(sim.cfg.max_activities));
    json_object_object_add(o, "auth", json_object_new_boolean(sim.cfg.auth));
    r->status = 200;
    r->body = o;
}

/* Moves the simulated clock to the next 00:00 UTC, which resets the daily quota. */
static void advance_day(struct sim_resp *r)
{
    int64_t now = sim_now_ms();
    int64_t next = (now / 86400000 + 1) * 86400000;
    sim.clock_offset_ms += next - now;
    r->status = 200;
    r->body = ok();
}

static void complete_activities(struct sim_resp *r)
{
    int64_t now = sim_now_ms();
    for (size_t i = sim.first_unsettled; i < sim.n_activities; i++) {
        sim.activities[i]->completed_at = now;
        if (sim.activities[i]->started_at > now)
            sim.activities[i]->started_at = now;
    }
    sim_activities_settle();
    r->status = 200;
    r->body = ok();
}

void control_handle(struct sim_req *q, struct sim_resp *r)
{
    const char *p = q->path + strlen("/__sim");
    bool post = strcmp(q->method, "POST") == 0;
    bool get = strcmp(q->method, "GET") == 0;
    json_object *body = NULL;
    if (q->body_len > 0) {
        body = json_tokener_parse(q->body);
        if (body == NULL || !json_object_is_type(body, json_type_object)) {
            json_object_put(body);
            bad(r, "the body must be a JSON object");
            return;
        }
    }
    q->json = body; /* freed by the caller */
    /* Activities complete with time, not when someone asks: a list whose delete
     * activity has run is gone from the dump even if no /v3 request came since. */
    sim_activities_settle();
    char id[64];
    if (post && strcmp(p, "/reset") == 0) {
        sim_state_reset();
        r->status = 200;
        r->body = ok();
    } else if (post && strcmp(p, "/tokens") == 0) {
        long ttl = sim.cfg.token_ttl;
        int_of(body, "expires_in", &ttl);
        r->status = 200;
        r->body = oauth_issue_pair(ttl);
    } else if (post && strcmp(p, "/tokens/expire") == 0) {
        json_object *refresh = body ? json_object_object_get(body, "refresh") : NULL;
        int64_t now = sim_now_ms();
        for (size_t i = 0; i < sim.n_tokens; i++) {
            struct sim_token *t = sim.tokens[i];
            if (!t->refresh && strcmp(t->value, sim.cfg.dev_token) != 0)
                t->expires_at = now - 1;
            else if (t->refresh && refresh && json_object_get_boolean(refresh))
                t->spent = true;
        }
        r->status = 200;
        r->body = ok();
    } else if (post && strcmp(p, "/seed") == 0) {
        if (body == NULL)
            bad(r, "a JSON body is required");
        else
            seed(body, r);
    } else if (post && sscanf(p, "/lists/%63[^/]/rename", id) == 1 &&
               strstr(p, "/rename") != NULL) {
        struct sim_list *l = sim_list_find(id);
        const char *name = str_of(body, "name");
        if (l == NULL || l->deleted_at) {
            resp_error(r, 404, "not.found", "list %s was not found", id);
        } else if (name == NULL) {
            bad(r, "name is required");
        } else {
            sim_set_str(&l->name, name);
            l->updated_at = sim_now_ms();
            r->status = 200;
            r->body = sim_list_json(l, true);
        }
    } else if (post && sscanf(p, "/lists/%63[^/]/delete", id) == 1 &&
               strstr(p, "/delete") != NULL) {
        struct sim_list *l = sim_list_find(id);
        if (l == NULL || l->deleted_at) {
            resp_error(r, 404, "not.found", "list %s was not found", id);
        } else {
            sim_list_delete_now(l);
            r->status = 200;
            r->body = ok();
        }
    } else if (post && strcmp(p, "/unsubscribe") == 0) {
        const char *email = str_of(body, "email");
        struct sim_contact *c = email ? sim_contact_find_email(email) : NULL;
        if (c == NULL) {
            resp_error(r, 404, "not.found", "no contact has that email");
        } else {
            sim_contact_unsubscribe(c, "Contact");
            r->status = 200;
            r->body = sim_contact_json(c, true);
        }
    } else if (post && strcmp(p, "/faults") == 0) {
        set_fault(body, r);
    } else if (strcmp(q->method, "DELETE") == 0 && strcmp(p, "/faults") == 0) {
        memset(&sim.fault, 0, sizeof sim.fault);
        r->status = 200;
        r->body = ok();
    } else if (post && strcmp(p, "/delays") == 0) {
        set_delay(body, r);
    } else if (get && strcmp(p, "/delays") == 0) {
        r->status = 200;
        r->body = delays_json();
    } else if (strcmp(q->method, "DELETE") == 0 && strcmp(p, "/delays") == 0) {
        sim.n_delays = 0;
        r->status = 200;
        r->body = delays_json();
    } else if (get && strcmp(p, "/counters") == 0) {
        r->status = 200;
        r->body = counters();
    } else if (get && strcmp(p, "/log") == 0) {
        r->status = 200;
        r->body = request_log(q);
    } else if (get && strcmp(p, "/state") == 0) {
        r->status = 200;
        r->body = state_dump();
    } else if (post && strcmp(p, "/advance_day") == 0) {
        advance_day(r);
    } else if (post && strcmp(p, "/config") == 0) {
        set_config(body, r);
    } else if (post && strcmp(p, "/activities/complete") == 0) {
        complete_activities(r);
    } else {
        resp_error(r, 404, "not.found", "no control endpoint %s %s", q->method, q->path);
    }
}
