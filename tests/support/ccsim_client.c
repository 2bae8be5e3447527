/* Reading and steering the Constant Contact simulator through its control API
 * (/__sim/...): state, counters, the request log, delays. See ccsim_client.h. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ccsim_client.h"
#include "stack.h"
#include "testsupport.h"

/* A control call to ccsim; asserts a 200. */
pid_t ccsim_start(const char *const *args, char *root, size_t root_size)
{
    char bin[512], listen[64];
    ts_bin_path("CCSIM_BIN", "ccsim", bin, sizeof bin);
    if (access(bin, X_OK) != 0)
        return 0;
    int port = ts_free_port();
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    char *argv[12] = {bin, "--listen", listen};
    for (size_t i = 0; args && args[i] && i < 8; i++)
        argv[3 + i] = (char *)args[i];
    pid_t pid = ts_spawn(argv, NULL);
    if (pid <= 0 || ts_wait_port(port, 10000) != 0)
        return -1;
    snprintf(root, root_size, "http://127.0.0.1:%d", port);
    return pid;
}

json_object *sim(const char *method, const char *path, const char *body)
{
    char url[512];
    snprintf(url, sizeof url, "%s%s", stack.sim_root, path);
    const char *headers[] = {"Content-Type: application/json", NULL};
    struct reply r = http(method, url, headers, body);
    if (r.status != 200)
        fail_msg("ccsim %s %s: %ld %s", method, path, r.status, r.body ? r.body : "");
    return reply_take_json(&r);
}

void sim_void(const char *method, const char *path, const char *body)
{
    json_object_put(sim(method, path, body));
}

json_object *sim_v3(const char *method, const char *path, const char *body, long expect)
{
    char url[512];
    snprintf(url, sizeof url, "%s%s", stack.sim_root, path);
    const char *headers[] = {"Content-Type: application/json", "Authorization: Bearer " DEV_TOKEN,
                             NULL};
    struct reply r = http(method, url, headers, body);
    if (r.status != expect)
        fail_msg("ccsim %s %s: %ld %s", method, path, r.status, r.body ? r.body : "");
    return reply_take_json(&r);
}

/* Makes ccsim answer endpoint ("METHOD /v3/...", as its counters name it) after
 * delay_ms; count 0 = every such request until cleared. */
void sim_delay(const char *endpoint, int delay_ms, int count)
{
    char body[256];
    if (count > 0)
        snprintf(body, sizeof body, "{\"endpoint\":\"%s\",\"delay_ms\":%d,\"count\":%d}", endpoint,
                 delay_ms, count);
    else
        snprintf(body, sizeof body, "{\"endpoint\":\"%s\",\"delay_ms\":%d}", endpoint, delay_ms);
    sim_void("POST", "/__sim/delays", body);
}

long long cc_counter(const char *key)
{
    json_object *c = sim("GET", "/__sim/counters", NULL);
    long long n = jint(c, key);
    json_object_put(c);
    return n;
}

long long cc_endpoint(const char *name)
{
    json_object *c = sim("GET", "/__sim/counters", NULL);
    json_object *v = jget(jget(c, "by_endpoint"), name);
    long long n = v ? json_object_get_int64(v) : 0;
    json_object_put(c);
    return n;
}

/* /v3 requests ccsim has answered so far (all of them, whatever the status). */
long long cc_requests(void)
{
    json_object *c = sim("GET", "/__sim/counters", NULL);
    long long n = jint(c, "total") + jint(c, "unauthorized");
    json_object_put(c);
    return n;
}

/* contacts_json_import requests ccsim has answered so far. */
long long cc_imports(void)
{
    json_object *c = sim("GET", "/__sim/counters", NULL);
    json_object *v = jget(jget(c, "by_endpoint"), "POST /v3/activities/contacts_json_import");
    long long n = v ? json_object_get_int64(v) : 0;
    json_object_put(c);
    return n;
}

/* The sequence number the next request ccsim logs will have. */
long long cc_log_next(void)
{
    json_object *log = sim("GET", "/__sim/log?since=0", NULL);
    long long n = jint(log, "next");
    json_object_put(log);
    return n;
}

/* The bodies of the remove_list_memberships requests ccsim logged after seq
 * since, as "contacts>lists" with each part's count, e.g. "3>3,1>1", in order. */
void cc_remove_shapes(long long since, char *out, size_t size)
{
    char path[64];
    snprintf(path, sizeof path, "/__sim/log?since=%lld", since);
    json_object *log = sim("GET", path, NULL);
    json_object *reqs = jget(log, "requests");
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; reqs && i < json_object_array_length(reqs); i++) {
        json_object *q = json_object_array_get_idx(reqs, i);
        const char *p = jstr(q, "path");
        if (!p || strcmp(p, "/v3/activities/remove_list_memberships") != 0)
            continue;
        json_object *body = json_tokener_parse(jstr(q, "body"));
        size_t ids = json_object_array_length(jget(jget(body, "source"), "contact_ids"));
        size_t lists = json_object_array_length(jget(body, "list_ids"));
        len += (size_t)snprintf(out + len, size - len, "%s%zu>%zu", len ? "," : "", ids, lists);
        json_object_put(body);
    }
    json_object_put(log);
}

/* Requests of method whose path (with query) starts with path that ccsim has
 * answered (its log holds a request once it is answered, whatever the status). */
long long cc_answered(const char *method, const char *path)
{
    json_object *log = sim("GET", "/__sim/log?since=0", NULL);
    json_object *reqs = jget(log, "requests");
    long long n = 0;
    for (size_t i = 0; i < json_object_array_length(reqs); i++) {
        json_object *q = json_object_array_get_idx(reqs, i);
        const char *m = jstr(q, "method"), *p = jstr(q, "path");
        n += m && p && strcmp(m, method) == 0 && strncmp(p, path, strlen(path)) == 0;
    }
    json_object_put(log);
    return n;
}

void wait_answered(const char *method, const char *path, long long n, long wait_ms)
{
    long deadline = ts_now_ms() + wait_ms;
    while (cc_answered(method, path) < n) {
        if (ts_now_ms() > deadline)
            fail_msg("ccsim did not answer %lld× %s %s within %ld ms", n, method, path, wait_ms);
        ts_sleep_ms(20);
    }
}

/* Waits (polling ccsim tightly) until the endpoint's counter reaches n. */
void wait_endpoint(const char *name, long long n, long wait_ms)
{
    long deadline = ts_now_ms() + wait_ms;
    while (cc_endpoint(name) < n) {
        if (ts_now_ms() > deadline)
            fail_msg("no %lld× %s within %ld ms", n, name, wait_ms);
        ts_sleep_ms(2);
    }
}

/* Polls of activities (one by id, or the account's list) ccsim has seen. */
long long cc_activity_polls(void)
{
    return cc_endpoint("GET /v3/activities/{activity_id}") + cc_endpoint("GET /v3/activities");
}

bool list_active(json_object *l)
{
    const char *st = jstr(l, "status");
    return !st || strcmp(st, "active") == 0;
}

/* The active lists' names, sorted and comma-separated. */
const char *cc_list_names(json_object *st, char *out, size_t size)
{
    json_object *own = st ? NULL : sim("GET", "/__sim/state", NULL);
    json_object *lists = jget(st ? st : own, "lists");
    struct strv names = {0};
    for (size_t i = 0; i < json_object_array_length(lists); i++) {
        json_object *l = json_object_array_get_idx(lists, i);
        if (list_active(l))
            strv_add(&names, jstr(l, "name"));
    }
    strv_sort(&names);
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < names.n; i++)
        len += (size_t)snprintf(out + len, size - len, "%s%s", i ? "," : "", names.v[i]);
    strv_free(&names);
    json_object_put(own);
    return out;
}

/* The members (emails, sorted, comma-separated) of the CC list list_id, and its
 * name into name (may be NULL). Fails when the list is not active in CC. */
const char *cc_members(const char *list_id, char *out, size_t size, char *name, size_t name_size)
{
    json_object *st = sim("GET", "/__sim/state", NULL);
    json_object *lists = jget(st, "lists");
    for (size_t i = 0; i < json_object_array_length(lists); i++) {
        json_object *l = json_object_array_get_idx(lists, i);
        if (jstr(l, "list_id") && strcmp(jstr(l, "list_id"), list_id) == 0 && list_active(l)) {
            join_sorted(jget(l, "members"), NULL, out, size);
            if (name)
                snprintf(name, name_size, "%s", jstr(l, "name"));
            json_object_put(st);
            return out;
        }
    }
    fail_msg("list %s is not active in CC: %s", list_id, json_object_to_json_string(lists));
    return NULL;
}

/* Waits until CC's active lists are exactly names. A list delete is an activity
 * in CC: it lands after ccsync queued it (ccsim settles activities only when a
 * /v3 request comes, so the wait asks it to complete what is queued). */
void wait_cc_list_names(const char *names)
{
    char buf[2048];
    long deadline = ts_now_ms() + WAIT_MS;
    for (;;) {
        sim_void("POST", "/__sim/activities/complete", "{}");
        if (strcmp(cc_list_names(NULL, buf, sizeof buf), names) == 0)
            break;
        if (ts_now_ms() > deadline)
            fail_msg("CC lists are \"%s\", not \"%s\"", buf, names);
        ts_sleep_ms(50);
    }
}

/* The contact with email in a state dump; fails when CC has none. */
static json_object *find_contact(json_object *st, const char *email)
{
    json_object *cs = jget(st, "contacts");
    for (size_t i = 0; i < json_object_array_length(cs); i++) {
        json_object *c = json_object_array_get_idx(cs, i);
        if (jstr(c, "email") && strcmp(jstr(c, "email"), email) == 0)
            return c;
    }
    fail_msg("no contact %s in CC", email);
    return NULL;
}

const char *cc_contact_names(json_object *st, const char *email, char *out, size_t size)
{
    json_object *own = st ? NULL : sim("GET", "/__sim/state", NULL);
    json_object *c = find_contact(st ? st : own, email);
    snprintf(out, size, "%s %s", jstr(c, "first_name") ? jstr(c, "first_name") : "",
             jstr(c, "last_name") ? jstr(c, "last_name") : "");
    json_object_put(own);
    return out;
}

const char *cc_contact_permission(const char *email)
{
    static char perm[64];
    json_object *st = sim("GET", "/__sim/state", NULL);
    snprintf(perm, sizeof perm, "%s", jstr(find_contact(st, email), "permission_to_send"));
    json_object_put(st);
    return perm;
}

/* Asserts that the active CC list list_id holds exactly the emails of want. */
void assert_list_exact(json_object *st, const char *list_id, struct strv *want)
{
    json_object *lists = jget(st, "lists"), *found = NULL;
    for (size_t i = 0; i < json_object_array_length(lists); i++) {
        json_object *l = json_object_array_get_idx(lists, i);
        if (jstr(l, "list_id") && strcmp(jstr(l, "list_id"), list_id) == 0 && list_active(l))
            found = l;
    }
    if (!found)
        fail_msg("list %s is not active in CC", list_id);
    json_object *members = jget(found, "members");
    struct strv got = {0};
    for (size_t i = 0; i < json_object_array_length(members); i++)
        strv_add(&got, json_object_get_string(json_object_array_get_idx(members, i)));
    strv_sort(&got);
    strv_sort(want);
    size_t i = 0, k = 0, missing = 0, extra = 0;
    char first[256] = "";
    while (i < got.n || k < want->n) {
        int c = i >= got.n ? 1 : k >= want->n ? -1 : strcmp(got.v[i], want->v[k]);
        if (c == 0) {
            i++, k++;
        } else if (c < 0) {
            if (!first[0])
                snprintf(first, sizeof first, "extra %s", got.v[i]);
            extra++, i++;
        } else {
            if (!first[0])
                snprintf(first, sizeof first, "missing %s", want->v[k]);
            missing++, k++;
        }
    }
    size_t n_got = got.n;
    strv_free(&got);
    if (missing || extra)
        fail_msg("list %s holds %zu emails, wanted %zu: %zu missing, %zu extra (first: %s)",
                 list_id, n_got, want->n, missing, extra, first);
}

void accepted_read(const char *method, const char *path, struct accepted *a)
{
    memset(a, 0, sizeof *a);
    json_object *log = sim("GET", "/__sim/log?since=0", NULL);
    json_object *reqs = jget(log, "requests");
    if (jint(log, "next") > (long long)json_object_array_length(reqs) + 1)
        fail_msg("ccsim's request log overflowed (%lld requests): cannot count", jint(log, "next"));
    for (size_t i = 0; i < json_object_array_length(reqs); i++) {
        json_object *q = json_object_array_get_idx(reqs, i);
        const char *m = jstr(q, "method"), *p = jstr(q, "path");
        long long status = jint(q, "status");
        if (!m || !p || strcmp(m, method) != 0 || strncmp(p, path, strlen(path)) != 0 ||
            status < 200 || status > 299)
            continue;
        a->ok++;
        if (strcmp(path, "/v3/activities/remove_list_memberships") == 0) {
            json_object *body = jstr(q, "body") ? json_tokener_parse(jstr(q, "body")) : NULL;
            json_object *ids = jget(jget(body, "source"), "contact_ids");
            json_object *lists = jget(body, "list_ids");
            for (size_t l = 0; lists && ids && l < json_object_array_length(lists); l++)
                for (size_t r = 0; r < json_object_array_length(ids); r++) {
                    char pair[300];
                    snprintf(pair, sizeof pair, "%s %s",
                             json_object_get_string(json_object_array_get_idx(lists, l)),
                             json_object_get_string(json_object_array_get_idx(ids, r)));
                    strv_add(&a->pairs, pair);
                }
            json_object_put(body);
            continue;
        }
        if (strcmp(path, IMPORT_PATH) != 0)
            continue;
        json_object *body = jstr(q, "body") ? json_tokener_parse(jstr(q, "body")) : NULL;
        json_object *rows = jget(body, "import_data"), *lists = jget(body, "list_ids");
        if (!rows || !lists) {
            a->big_imports++;
        } else {
            for (size_t l = 0; l < json_object_array_length(lists); l++)
                for (size_t r = 0; r < json_object_array_length(rows); r++) {
                    char pair[300];
                    snprintf(pair, sizeof pair, "%s %s",
                             json_object_get_string(json_object_array_get_idx(lists, l)),
                             jstr(json_object_array_get_idx(rows, r), "email"));
                    strv_add(&a->pairs, pair);
                }
        }
        json_object_put(body);
    }
    json_object_put(log);
}

/* Fails when a (list, email) row was accepted twice. */
void assert_no_pair_twice(struct accepted *a)
{
    strv_sort(&a->pairs);
    for (size_t i = 1; i < a->pairs.n; i++)
        if (strcmp(a->pairs.v[i - 1], a->pairs.v[i]) == 0)
            fail_msg("accepted twice (list, contact): %s", a->pairs.v[i]);
}

/* Rows of every contacts_json_import CC accepted (the activities'
 * items_total_count), read through the /v3 API with ccsim's dev token: a row
 * imported twice counts twice. Call it last: it adds to ccsim's counters. */
long long cc_import_rows(void)
{
    long long rows = 0;
    char url[1024];
    snprintf(url, sizeof url, "%s/v3/activities?limit=500", stack.sim_root);
    for (;;) {
        const char *headers[] = {"Authorization: Bearer " DEV_TOKEN, NULL};
        struct reply r = http("GET", url, headers, NULL);
        if (r.status != 200)
            fail_msg("GET /v3/activities: %ld %s", r.status, r.body ? r.body : "");
        json_object *acts = jget(r.json, "activities");
        for (size_t i = 0; i < json_object_array_length(acts); i++) {
            json_object *status = jget(json_object_array_get_idx(acts, i), "status");
            if (jget(status, "person_count")) /* only imports report persons */
                rows += jint(status, "items_total_count");
        }
        json_object *next = jget(jget(jget(r.json, "_links"), "next"), "href");
        if (next)
            snprintf(url, sizeof url, "%s%s", stack.sim_root, json_object_get_string(next));
        reply_free(&r);
        if (!next)
            return rows;
    }
}

/*
 * Fails when two requests that change CC for the same list were in flight at
 * once (ccsim's log: arrived .. answered). Changing requests: POST, PUT and
 * DELETE under /v3; the lists a request changes are the body's list_ids
 * (imports, membership changes), the list id in the path, or the name a POST
 * /contact_lists creates. Returns how many such requests the log holds.
 */
int assert_no_overlapping_changes(void)
{
    json_object *log = sim("GET", "/__sim/log?since=0", NULL);
    json_object *reqs = jget(log, "requests");
    if (jint(log, "next") > (long long)json_object_array_length(reqs))
        fail_msg("ccsim's request log overflowed: cannot check overlaps");
    size_t n = json_object_array_length(reqs);
    struct change {
        struct strv lists;
        char arrived[32], answered[32], what[200];
    } *w = calloc(n ? n : 1, sizeof *w);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        json_object *q = json_object_array_get_idx(reqs, i);
        const char *m = jstr(q, "method"), *p = jstr(q, "path");
        if (!m || !p || strncmp(p, "/v3/", 4) != 0 || strcmp(m, "GET") == 0)
            continue;
        struct change *c = &w[k++];
        json_object *body = jstr(q, "body") ? json_tokener_parse(jstr(q, "body")) : NULL;
        json_object *lists = jget(body, "list_ids");
        char name[300];
        for (size_t l = 0; lists && l < json_object_array_length(lists); l++)
            strv_add(&c->lists, json_object_get_string(json_object_array_get_idx(lists, l)));
        if (c->lists.n == 0 && strncmp(p, "/v3/contact_lists/", 18) == 0) {
            strv_add(&c->lists, p + 18);
        } else if (c->lists.n == 0 && jstr(body, "name")) {
            snprintf(name, sizeof name, "name:%s", jstr(body, "name"));
            strv_add(&c->lists, name);
        } else if (c->lists.n == 0) {
            strv_add(&c->lists, p);
        }
        json_object_put(body);
        snprintf(c->arrived, sizeof c->arrived, "%s", jstr(q, "arrived"));
        snprintf(c->answered, sizeof c->answered, "%s", jstr(q, "ts"));
        snprintf(c->what, sizeof c->what, "%s %s (%s .. %s, %lld)", m, p, c->arrived, c->answered,
                 jint(q, "status"));
    }
    json_object_put(log);
    char msg[600] = "";
    for (size_t i = 0; i < k && !msg[0]; i++)
        for (size_t j = i + 1; j < k && !msg[0]; j++) {
            /* same-format UTC times in ms: string order is time order */
            if (strcmp(w[i].arrived, w[j].answered) >= 0 ||
                strcmp(w[j].arrived, w[i].answered) >= 0)
                continue;
            for (size_t a = 0; a < w[i].lists.n && !msg[0]; a++)
                for (size_t b = 0; b < w[j].lists.n && !msg[0]; b++)
                    if (strcmp(w[i].lists.v[a], w[j].lists.v[b]) == 0)
                        snprintf(msg, sizeof msg,
                                 "two changes to list %s in flight at once: %s and %s",
                                 w[i].lists.v[a], w[i].what, w[j].what);
        }
    for (size_t i = 0; i < k; i++)
        strv_free(&w[i].lists);
    free(w);
    if (msg[0])
        fail_msg("%s", msg);
    return (int)k;
}
