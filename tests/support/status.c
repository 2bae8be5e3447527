/* ccsyncd's view, through its admin API: GroupStatus, the queue, the audit log;
 * waits on them with a deadline and exact assertions. See status.h. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stack.h"
#include "status.h"
#include "testsupport.h"

json_object *get_group(const char *g, long *status)
{
    char path[256];
    snprintf(path, sizeof path, "/v1/associations/" ASSOC "/groups/%s", g);
    return api_json("GET", path, NULL, status);
}

double metric_value(const char *series)
{
    char url[256];
    snprintf(url, sizeof url, "%s/metrics", stack.admin_base[0]);
    struct reply r = http("GET", url, NULL, NULL);
    assert_int_equal(r.status, 200);
    double v = -1;
    char needle[256];
    snprintf(needle, sizeof needle, "\n%s ", series);
    const char *at = strstr(r.body, needle);
    if (at)
        v = atof(at + strlen(needle));
    reply_free(&r);
    return v;
}

long long queue_pending(void)
{
    struct reply r = api("GET", "/v1/status", NULL);
    if (r.status != 200) {
        reply_free(&r);
        return -1; /* e.g. Redis still coming back */
    }
    long long n = jint(jget(r.json, "queue"), "pending");
    reply_free(&r);
    return n;
}

static bool folded(void *arg)
{
    (void)arg;
    return queue_pending() == 0;
}

void wait_folded(void)
{
    if (!ts_wait_for(folded, NULL, WAIT_MS, 20))
        fail_msg("events were not folded within %d ms", WAIT_MS);
}

bool group_settled(json_object *gs)
{
    json_object *q = jget(gs, "changes_queued");
    json_object *p = jget(gs, "pending_changes");
    return gs && p && json_object_get_int64(p) == 0 && q && !json_object_get_boolean(q);
}

/* What a wait on one group's GroupStatus looks for. */
struct group_wait {
    const char *g;
    bool (*done)(const struct group_wait *w, long status, json_object *gs);
    const char *code, *state; /* for wait_group_error */
    long status;              /* the last answer */
    json_object *gs;          /* the last GroupStatus (owned) */
};

static bool group_polled(void *arg)
{
    struct group_wait *w = arg;
    json_object_put(w->gs);
    w->gs = get_group(w->g, &w->status);
    return w->done(w, w->status, w->gs);
}

/* Folds, then polls g until w->done; fails with what after WAIT_MS. Returns the
 * last GroupStatus (the caller puts it). */
static json_object *wait_group(struct group_wait *w, const char *what)
{
    wait_folded();
    if (!ts_wait_for(group_polled, w, WAIT_MS, 50))
        fail_msg("group %s did not %s within %d ms: %ld %s", w->g, what, WAIT_MS, w->status,
                 w->gs ? json_object_to_json_string(w->gs) : "");
    return w->gs;
}

static bool settled(const struct group_wait *w, long status, json_object *gs)
{
    (void)w;
    return status == 200 && group_settled(gs);
}

json_object *wait_synced(const char *g)
{
    struct group_wait w = {.g = g, .done = settled};
    return wait_group(&w, "settle");
}

void wait_synced_list(const char *g, char *list_id, size_t size)
{
    json_object *gs = wait_synced(g);
    snprintf(list_id, size, "%s", gs_list_id(gs));
    json_object_put(gs);
}

const char *error_code(json_object *gs)
{
    json_object *e = jget(gs, "error");
    return e && json_object_is_type(e, json_type_object) ? jstr(e, "code") : NULL;
}

static bool shows_error(const struct group_wait *w, long status, json_object *gs)
{
    const char *c = status == 200 ? error_code(gs) : NULL;
    const char *st = status == 200 ? jstr(gs, "state") : NULL;
    return c && strcmp(c, w->code) == 0 && st && strcmp(st, w->state) == 0;
}

json_object *wait_group_error(const char *g, const char *code, const char *state)
{
    struct group_wait w = {.g = g, .done = shows_error, .code = code, .state = state};
    char what[160];
    snprintf(what, sizeof what, "show %s/%s", state, code);
    return wait_group(&w, what);
}

static bool gone(const struct group_wait *w, long status, json_object *gs)
{
    (void)w, (void)gs;
    return status == 404;
}

void wait_group_gone(const char *g)
{
    struct group_wait w = {.g = g, .done = gone};
    json_object_put(wait_group(&w, "answer 404"));
}

/* Waits until every event is folded and the groups' work is done. Returns the
 * GroupStatus of groups[0] (the caller puts it). */
json_object *wait_settled_n(const char *const *groups, size_t n, long wait_ms, tick_fn tick)
{
    long deadline = ts_now_ms() + wait_ms;
    for (;;) {
        if (tick)
            tick();
        bool all = queue_pending() == 0;
        json_object *first = NULL;
        for (size_t i = 0; all && i < n; i++) {
            long status;
            json_object *gs = get_group(groups[i], &status);
            const char *code = status == 200 ? jstr(jget(gs, "error"), "code") : NULL;
            if (code && strcmp(code, "constant_contact_unavailable") != 0)
                fail_msg("group %s in error (not one that retries soon): %s", groups[i],
                         json_object_to_json_string(gs));
            all = status == 200 && group_settled(gs);
            if (all && i == 0)
                first = gs;
            else
                json_object_put(gs);
        }
        if (all)
            return first;
        json_object_put(first);
        if (ts_now_ms() > deadline) {
            long status;
            json_object *gs = get_group(groups[0], &status);
            fail_msg("groups did not settle within %ld ms: %ld %s", wait_ms, status,
                     gs ? json_object_to_json_string(gs) : "");
        }
        ts_sleep_ms(50);
    }
}

json_object *wait_settled(const char *g, long wait_ms)
{
    const char *groups[] = {g};
    return wait_settled_n(groups, 1, wait_ms, NULL);
}

void assert_counts(json_object *gs, long long members, long long no_email, long long invalid_email,
                   long long duplicate_email, long long do_not_email, long long unsubscribed,
                   long long rejected, long long in_list)
{
    json_object *c = jget(gs, "counts");
    char got[256], want[256];
    snprintf(got, sizeof got,
             "members=%lld no_email=%lld invalid=%lld dup=%lld dne=%lld unsub=%lld rej=%lld "
             "in_list=%lld",
             jint(c, "members"), jint(c, "no_email"), jint(c, "invalid_email"),
             jint(c, "duplicate_email"), jint(c, "do_not_email"), jint(c, "unsubscribed"),
             jint(c, "rejected"), jint(c, "in_list"));
    snprintf(want, sizeof want,
             "members=%lld no_email=%lld invalid=%lld dup=%lld dne=%lld unsub=%lld rej=%lld "
             "in_list=%lld",
             members, no_email, invalid_email, duplicate_email, do_not_email, unsubscribed,
             rejected, in_list);
    assert_string_equal(got, want);
    assert_int_equal(members, no_email + invalid_email + duplicate_email + do_not_email +
                                  unsubscribed + rejected + in_list);
}

void assert_state(json_object *gs, const char *state)
{
    assert_non_null(jstr(gs, "state"));
    assert_string_equal(jstr(gs, "state"), state);
}

void assert_state_clean(json_object *gs, const char *state)
{
    const char *st = jstr(gs, "state");
    if (!st || strcmp(st, state) != 0)
        fail_msg("state %s, wanted %s: %s", st ? st : "(none)", state,
                 json_object_to_json_string(gs));
    json_object *e = jget(gs, "error");
    if (e && !json_object_is_type(e, json_type_null))
        fail_msg("group shows an error: %s", json_object_to_json_string(gs));
}

/* The group's list object, or fails. */
static json_object *gs_list_object(json_object *gs)
{
    json_object *l = jget(gs, "list");
    if (!l || !json_object_is_type(l, json_type_object) || !jstr(l, "list_id"))
        fail_msg("group has no list: %s", json_object_to_json_string(gs));
    return l;
}

const char *gs_list_id(json_object *gs)
{
    return jstr(gs_list_object(gs), "list_id");
}

const char *gs_list_name(json_object *gs)
{
    return jstr(gs_list_object(gs), "name");
}

void gs_list(json_object *gs, char *list_id, char *name, size_t size)
{
    snprintf(list_id, size, "%s", gs_list_id(gs));
    if (name)
        snprintf(name, size, "%s", gs_list_name(gs) ? gs_list_name(gs) : "");
}

/* The audit actions of group g, oldest first, comma-separated, into out. */
const char *audit_actions(const char *g, char *out, size_t size)
{
    struct reply r = api("GET", "/v1/associations/" ASSOC "/audit?limit=1000", NULL);
    assert_int_equal(r.status, 200);
    json_object *entries = jget(r.json, "entries");
    assert_non_null(entries);
    out[0] = '\0';
    size_t n = 0;
    for (size_t i = json_object_array_length(entries); i-- > 0;) {
        json_object *e = json_object_array_get_idx(entries, i);
        if (!jstr(e, "group_id") || strcmp(jstr(e, "group_id"), g) != 0)
            continue;
        n += (size_t)snprintf(out + n, size - n, "%s%s", n ? "," : "", jstr(e, "action"));
    }
    reply_free(&r);
    return out;
}

/* The list_id and list_name of the newest audit entry of g with action. */
void audit_entry(const char *g, const char *action, char *list_id, char *list_name, size_t size)
{
    struct reply r = api("GET", "/v1/associations/" ASSOC "/audit?limit=1000", NULL);
    assert_int_equal(r.status, 200);
    json_object *entries = jget(r.json, "entries");
    for (size_t i = 0; i < json_object_array_length(entries); i++) {
        json_object *e = json_object_array_get_idx(entries, i);
        if (jstr(e, "group_id") && strcmp(jstr(e, "group_id"), g) == 0 && jstr(e, "action") &&
            strcmp(jstr(e, "action"), action) == 0) {
            snprintf(list_id, size, "%s", jstr(e, "list_id") ? jstr(e, "list_id") : "");
            snprintf(list_name, size, "%s", jstr(e, "list_name") ? jstr(e, "list_name") : "");
            reply_free(&r);
            return;
        }
    }
    fail_msg("no audit entry %s for %s", action, g);
}
