/*
 * admin_budget.c - the shared budget as a person sees and asks about it: the
 * reconcile endpoint (POST /v1/associations/{a}/reconcile) and /v1/status's
 * budget object (used, projected, by class, top associations, the daily limit
 * the workload would need).
 *
 * Asking for a reconcile changes nothing in the association's data (it reads
 * the account's lists sooner, at most once a minute), so a read token may ask:
 * the status page does on opening. A second ask within the minute answers 429
 * with Retry-After, so a caller always knows whether its ask was taken.
 */
#include <hiredis/hiredis.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "ccsync/admin.h"
#include "ccsync/app.h"
#include "ccsync/budget.h"
#include "ccsync/config.h"
#include "ccsync/http.h"
#include "ccsync/keys.h"
#include "ccsync/log.h"
#include "ccsync/metrics.h"
#include "ccsync/ratelimit.h"
#include "ccsync/store.h"
#include "ccsync/sync.h"
#include "ccsync/webhook.h"

/* An asked reconcile is done within this (the worker looks every second). */
#define RECONCILE_WITHIN_MS (120 * 1000LL)
/* Associations shown by /v1/status budget.top_associations. */
#define TOP_ASSOCIATIONS 10
/* The latency needed_daily_limit aims at. */
#define NEEDED_LATENCY_S 300

static json_object *time_at_ms(int64_t ms)
{
    char buf[40];
    rfc3339_format(ms * 1000000, buf, sizeof buf);
    return json_object_new_string(buf);
}

int admin_reconcile_association(struct app *app, struct http_request *req)
{
    (void)app;
    const char *assoc = http_param(req, 0);
    int64_t asked_at = 0;
    int rc = sync_reconcile_ask(http_redis(req), assoc, &asked_at);
    if (rc == STORE_ERR) {
        http_reply_redis_unavailable(req, "write failed");
        return HTTP_DONE;
    }
    /* Asked again within the minute (a second dashboard, a reload): the standing
     * ask answers, so no request is spent twice and no caller sees an error. */
    if (rc == 1)
        log_info("reconcile_requested", LOG_STR("association", assoc));
    json_object *o = json_object_new_object();
    json_object_object_add(o, "association_id", json_object_new_string(assoc));
    json_object_object_add(
        o, "status",
        json_object_new_string(rc == 1 ? "reconcile_queued" : "reconcile_already_queued"));
    json_object_object_add(o, "reconcile_at", time_at_ms(asked_at));
    json_object_object_add(o, "done_by", time_at_ms(asked_at + RECONCILE_WITHIN_MS));
    http_reply_json(req, 202, o);
    return HTTP_DONE;
}

/* ---- /v1/status budget ---- */

struct assoc_use {
    const char *id;
    long used;
};

static int use_cmp(const void *pa, const void *pb)
{
    const struct assoc_use *a = pa, *b = pb;
    if (a->used != b->used)
        return a->used < b->used ? 1 : -1;
    return strcmp(a->id, b->id);
}

/* The associations that used most today, most first. */
static json_object *top_associations(redisContext *c, const struct ratelimit_conf *rc)
{
    json_object *arr = json_object_new_array();
    redisReply *pairs = NULL;
    if (ratelimit_by_association(c, rc, &pairs) != STORE_OK)
        return arr;
    size_t n = pairs->elements / 2;
    struct assoc_use *u = calloc(n + 1, sizeof *u);
    for (size_t i = 0; u && i < n; i++)
        u[i] = (struct assoc_use){pairs->element[2 * i]->str,
                                  strtol(pairs->element[2 * i + 1]->str, NULL, 10)};
    if (u)
        qsort(u, n, sizeof *u, use_cmp);
    for (size_t i = 0; u && i < n && i < TOP_ASSOCIATIONS; i++) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "association_id", json_object_new_string(u[i].id));
        json_object_object_add(o, "used_today", json_object_new_int64(u[i].used));
        json_object_array_add(arr, o);
    }
    free(u);
    freeReplyObject(pairs);
    return arr;
}

json_object *admin_budget_view(redisContext *c, const struct config *cfg)
{
    struct ratelimit_conf rc;
    ratelimit_conf_from_config(&rc, cfg);
    struct ratelimit_snapshot snap;
    if (ratelimit_snapshot(c, &rc, &snap) != STORE_OK)
        return NULL;
    struct budget_day d;
    ratelimit_budget_day(&snap, cfg->cc_daily_limit, cfg->reconcile_budget_share, &d);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "used_today", json_object_new_int64(d.used));
    json_object_object_add(o, "projected_today",
                           json_object_new_int64((int64_t)(budget_projected(&d) + 0.5)));
    json_object_object_add(o, "limit", json_object_new_int64(d.limit));
    double sync_rate = snap.rate_by_class[BUDGET_CHANGES] + snap.rate_by_class[BUDGET_FULL_SYNC];
    double other_rate = d.recent_rate - sync_rate;
    int64_t delay = budget_sync_delay_ms(&d, cfg->sync_delay_ms, 0, cfg->sync_delay_ms,
                                         (int64_t)cfg->sync_delay_max_seconds * 1000);
    json_object_object_add(o, "needed_daily_limit",
                           json_object_new_int64(budget_needed_daily_limit(
                               sync_rate, other_rate, delay, NEEDED_LATENCY_S)));
    json_object *by = json_object_new_object();
    for (int k = 0; k < BUDGET_CLASSES; k++)
        json_object_object_add(by, budget_class_name((enum budget_class)k),
                               json_object_new_int64(d.used_by_class[k]));
    json_object_object_add(o, "by_class", by);
    json_object_object_add(o, "top_associations", top_associations(c, &rc));
    return o;
}

/* ---- GroupStatus ---- */

bool admin_budget_binds(redisContext *c, const struct config *cfg)
{
    struct ratelimit_conf rc;
    ratelimit_conf_from_config(&rc, cfg);
    struct ratelimit_snapshot snap;
    if (ratelimit_snapshot(c, &rc, &snap) != STORE_OK)
        return false;
    struct budget_day d;
    ratelimit_budget_day(&snap, cfg->cc_daily_limit, cfg->reconcile_budget_share, &d);
    return budget_projected(&d) > (double)d.limit * BUDGET_CALM;
}

void admin_budget_group(redisContext *c, const char *association, const char *group,
                        bool budget_binds, json_object *view)
{
    redisReply *r = redisCommand(c, "ZSCORE %s %s", key_dirty(association).s, group);
    int64_t due = r && r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : 0;
    freeReplyObject(r);
    json_object_object_add(view, "next_sync_at", due > 0 ? time_at_ms(due) : NULL);
    json_object *state = NULL;
    json_object_object_get_ex(view, "state", &state);
    const char *now = state ? json_object_get_string(state) : "";
    /* An error or a disabled group shows as it is: the budget is not why it waits. */
    bool waiting =
        due > 0 && budget_binds && strcmp(now, "error") != 0 && strcmp(now, "disabled") != 0;
    json_object_object_add(view, "waiting_for", waiting ? json_object_new_string("budget") : NULL);
    if (waiting)
        json_object_object_add(view, "state", json_object_new_string("pending"));
}

/* ---- /metrics ---- */

void admin_budget_gauges(redisContext *c, const struct config *cfg)
{
    struct ratelimit_conf rc;
    ratelimit_conf_from_config(&rc, cfg);
    struct ratelimit_snapshot snap;
    if (!c || ratelimit_snapshot(c, &rc, &snap) != STORE_OK)
        return;
    struct budget_day d;
    ratelimit_budget_day(&snap, cfg->cc_daily_limit, cfg->reconcile_budget_share, &d);
    for (int k = 0; k < BUDGET_CLASSES; k++) {
        char labels[48];
        snprintf(labels, sizeof labels, "class=\"%s\"", budget_class_name((enum budget_class)k));
        metrics_set("ccsync_cc_budget_used_today", labels, (double)d.used_by_class[k]);
    }
    metrics_set("ccsync_cc_budget_projected_today", "", budget_projected(&d));
    metrics_set("ccsync_cc_budget_daily_limit", "", (double)d.limit);
}
