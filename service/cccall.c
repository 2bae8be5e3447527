/*
 * cccall.c - the policy for one Constant Contact call, the same for every
 * operation: wait for the shared budget (ratelimit.c), load the association's
 * token, retry transient trouble with jittered backoff, refresh the token once
 * after a 401, and keep the worker's leases alive while waiting, since a wait
 * can outlast a lease. Also the one place that turns a call's outcome into a
 * group's sync result and the error its status shows.
 */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ccsync/app.h"
#include "ccsync/config.h"
#include "ccsync/engine.h"
#include "ccsync/lease.h"
#include "ccsync/metrics.h"
#include "ccsync/oauth.h"
#include "ccsync/ratelimit.h"
#include "ccsync/store.h"

#define MAX_TRANSIENT_ATTEMPTS 5

/* ---- the operations ---- */

/* Per kind: the metrics label, and whether a request that may have taken
 * effect can be sent again (a read, or a delete: deleting twice is harmless). */
/* clang-format off */
static const struct {
    const char *name;
    bool may_repeat;
} cc_ops[] = {
    [CC_LISTS_PAGE] = {"lists_page", true},       [CC_LIST_FIND] = {"lists_find", true},
    [CC_LIST_GET] = {"list_get", true},           [CC_LIST_CREATE] = {"list_create", false},
    [CC_LIST_DELETE] = {"list_delete", true},     [CC_IMPORT] = {"contacts_import", false},
    [CC_REMOVE] = {"memberships_remove", false},  [CC_ACTIVITY] = {"activity_get", true},
    [CC_ACTIVITIES] = {"activities_list", true},  [CC_CONTACTS_PAGE] = {"contacts_page", true},
    [CC_CONTACTS_FIND] = {"contacts_find", true},
    [CC_FIELDS_GET] = {"custom_fields_get", true},
    [CC_FIELD_CREATE] = {"custom_field_create", false},
    [CC_TAG_FIND] = {"tags_find", true},
    [CC_TAG_CREATE] = {"tag_create", false},
    [CC_TAG_RENAME] = {"tag_rename", true},
    [CC_TAGGING] = {"taggings", false},
};
/* clang-format on */

void cc_op_clear(struct cc_op *op)
{
    switch (op->kind) {
    case CC_LISTS_PAGE:
    case CC_LIST_FIND:
        ccapi_list_page_clear(&op->out.lists);
        break;
    case CC_LIST_GET:
    case CC_LIST_CREATE:
        ccapi_list_clear(&op->out.list);
        break;
    case CC_ACTIVITY:
        ccapi_activity_clear(&op->out.activity);
        break;
    case CC_ACTIVITIES:
        ccapi_activity_page_clear(&op->out.activities);
        break;
    case CC_CONTACTS_PAGE:
    case CC_CONTACTS_FIND:
        ccapi_contact_page_clear(&op->out.contacts);
        break;
    case CC_LIST_DELETE:
    case CC_IMPORT:
    case CC_REMOVE:
    case CC_FIELDS_GET:
    case CC_FIELD_CREATE:
    case CC_TAG_FIND:
    case CC_TAG_CREATE:
    case CC_TAG_RENAME:
    case CC_TAGGING:
        break;
    }
}

/* The operations of §12 (custom fields, tags, taggings). */
static void cc_op_send_tagged(struct ccapi *cc, struct cc_op *op, struct ccapi_error *err)
{
    switch (op->kind) {
    case CC_FIELDS_GET:
        ccapi_custom_fields_get(cc, op->in.fields.out, err);
        break;
    case CC_FIELD_CREATE:
        ccapi_custom_field_create(cc, op->in.field_create.label, op->in.field_create.type,
                                  op->in.field_create.out, err);
        break;
    case CC_TAG_FIND:
        ccapi_tag_find(cc, op->in.tag.name, op->in.tag.out, op->in.tag.found, err);
        break;
    case CC_TAG_CREATE:
        ccapi_tag_create(cc, op->in.tag.name, "ccsync", op->in.tag.out, err);
        break;
    case CC_TAG_RENAME:
        ccapi_tag_rename(cc, op->in.tag.out->id, op->in.tag.name, err);
        break;
    case CC_TAGGING:
        ccapi_taggings(cc, op->in.tagging.add, op->in.tagging.tags, op->in.tagging.n_tags,
                       op->in.tagging.ids, op->in.tagging.n, op->out.activity_id, err);
        break;
    default:
        break;
    }
}

/* Sends op once; the result of an earlier attempt is dropped first. */
static void cc_op_send(struct ccapi *cc, struct cc_op *op, struct ccapi_error *err)
{
    cc_op_clear(op);
    switch (op->kind) {
    case CC_LISTS_PAGE:
        ccapi_lists_page(cc, op->in.next, &op->out.lists, err);
        break;
    case CC_LIST_FIND:
        ccapi_lists_find_by_name(cc, op->in.name, &op->out.lists, err);
        break;
    case CC_LIST_GET:
        ccapi_list_get(cc, op->in.list_id, &op->out.list, err);
        break;
    case CC_LIST_CREATE:
        ccapi_list_create(cc, op->in.create.name, op->in.create.description, &op->out.list, err);
        break;
    case CC_LIST_DELETE:
        ccapi_list_delete(cc, op->in.list_id, op->out.activity_id, err);
        break;
    case CC_IMPORT: {
        const char *lists[] = {op->in.import.list_id};
        ccapi_contacts_import_fields(cc, op->in.import.contacts, op->in.import.fields,
                                     op->in.import.n, lists, 1, op->out.activity_id, err);
        break;
    }
    case CC_REMOVE:
        ccapi_memberships_remove(cc, op->in.remove.ids, op->in.remove.n, op->in.remove.lists,
                                 op->in.remove.n_lists, op->out.activity_id, err);
        break;
    case CC_ACTIVITY:
        ccapi_activity_get(cc, op->in.activity_id, &op->out.activity, err);
        break;
    case CC_ACTIVITIES:
        ccapi_activities_page(cc, NULL, &op->out.activities, err);
        break;
    case CC_CONTACTS_PAGE:
        ccapi_contacts_page(cc, op->in.contacts.lists, op->in.contacts.n_lists, NULL,
                            op->in.contacts.next, &op->out.contacts, err);
        break;
    case CC_CONTACTS_FIND:
        ccapi_contacts_find_by_email(cc, op->in.email, &op->out.contacts, err);
        break;
    default:
        cc_op_send_tagged(cc, op, err);
        break;
    }
}

/* ---- time ---- */

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

bool engine_pause(struct sync_worker *w, long ms)
{
    while (ms > 0) {
        if (atomic_load(w->stop))
            return false;
        long slice = ms > 100 ? 100 : ms;
        sleep_ms(slice);
        ms -= slice;
    }
    return !atomic_load(w->stop);
}

static long backoff_ms(int attempt)
{
    long base = 500L << (attempt > 6 ? 6 : attempt);
    if (base > 30000)
        base = 30000;
    return base / 2 + rand() % (base / 2 + 1); /* jitter: half fixed, half random */
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the shared day ---- */

int sync_budget_day(struct sync_worker *w, struct budget_day *d)
{
    int64_t now = mono_ms();
    if (w->day_read_ms == 0 || now - w->day_read_ms >= 1000) {
        struct ratelimit_snapshot snap;
        if (ratelimit_snapshot(w->redis, &w->budget, &snap) != STORE_OK) {
            *d = w->day;
            return STORE_ERR;
        }
        ratelimit_budget_day(&snap, w->budget.daily_limit, w->app->cfg->reconcile_budget_share,
                             &w->day);
        const struct config *cfg = w->app->cfg;
        double elapsed = w->day_read_ms ? (double)(now - w->day_read_ms) / 1000.0 : 0;
        w->delay_ms = budget_sync_delay_ms(&w->day, w->delay_ms, elapsed, cfg->sync_delay_ms,
                                           (int64_t)cfg->sync_delay_max_seconds * 1000);
        w->day_read_ms = now;
    }
    *d = w->day;
    return STORE_OK;
}

int64_t sync_delay_ms(struct sync_worker *w)
{
    struct budget_day d;
    sync_budget_day(w, &d);
    int64_t base = w->app->cfg->sync_delay_ms;
    return w->delay_ms > base ? w->delay_ms : base;
}

bool sync_budget_calm(struct sync_worker *w)
{
    struct budget_day d;
    sync_budget_day(w, &d);
    return budget_projected(&d) <= (double)d.limit * BUDGET_CALM;
}

bool sync_may_start_round(struct sync_worker *w)
{
    struct budget_day d;
    sync_budget_day(w, &d);
    /* Paced once the wait is at its widest or the day is past calm
     * (budget_round_allowed): until then the wider wait is what keeps the day. */
    return budget_round_allowed(
        &d, w->delay_ms, (int64_t)w->app->cfg->sync_delay_max_seconds * 1000, 0, BUDGET_ROUND_COST);
}

/* ---- leases ---- */

bool sync_lease_renew(struct sync_worker *w)
{
    if (w->n_leases == 0)
        return true;
    return lease_renew(w->redis, w->leases, w->n_leases, w->lease_ms) == (int)w->n_leases;
}

void sync_leases_held(struct sync_worker *w)
{
    lease_keeper_hold(w->keeper, w->keeper_slot, w->leases, w->n_leases);
}

static enum call_outcome renew_or_fail(struct sync_worker *w)
{
    if (sync_lease_renew(w))
        return CALL_OK;
    return w->redis->err ? CALL_REDIS : CALL_LEASE_LOST;
}

/*
 * Sleeps ms (in slices, watching the stop flag) while keeping the worker's
 * leases alive: a wait for the shared budget or a 429's Retry-After can outlast
 * a lease, and a group whose lease lapsed could be claimed by another worker
 * while this one still acts on it. *renewed is when they were last renewed.
 */
static enum call_outcome wait_renewing(struct sync_worker *w, long ms, int64_t *renewed)
{
    long every = w->lease_ms / 3 > 0 ? w->lease_ms / 3 : 1;
    while (ms > 0) {
        if (atomic_load(w->stop))
            return CALL_STOPPED;
        if (mono_ms() - *renewed >= every) {
            enum call_outcome oc = renew_or_fail(w);
            if (oc != CALL_OK)
                return oc;
            *renewed = mono_ms();
        }
        long slice = ms > 100 ? 100 : ms;
        sleep_ms(slice);
        ms -= slice;
    }
    return atomic_load(w->stop) ? CALL_STOPPED : CALL_OK;
}

/* ---- the token ---- */

static void forget_token(struct sync_worker *w)
{
    w->token[0] = '\0';
    w->token_association[0] = '\0';
}

static bool load_token(struct sync_worker *w, const char *association, struct ccapi_error *err)
{
    if (strcmp(w->token_association, association) == 0 && w->token[0])
        return true;
    struct oauth_error oe;
    enum oauth_status rc =
        oauth_access_token(w->redis, w->app->cfg, association, w->token, sizeof w->token, &oe);
    if (rc != OAUTH_OK) {
        forget_token(w);
        err->status = (rc == OAUTH_UNAUTHORIZED || rc == OAUTH_NOT_CONNECTED) ? CCAPI_UNAUTHORIZED
                                                                              : CCAPI_TRANSIENT;
        snprintf(err->message, sizeof err->message, "%s", oe.message);
        return false;
    }
    snprintf(w->token_association, sizeof w->token_association, "%s", association);
    ccapi_set_token(w->cc, w->token);
    return true;
}

/* After a 401: a fresh token (CALL_OK: send again), or why there is none. */
static enum call_outcome refresh_token(struct sync_worker *w, const char *association,
                                       struct ccapi_error *err)
{
    struct oauth_error oe;
    char rejected[sizeof w->token];
    memcpy(rejected, w->token, sizeof rejected);
    enum oauth_status rc = oauth_after_unauthorized(w->redis, w->app->cfg, association, rejected,
                                                    w->token, sizeof w->token, &oe);
    memset(rejected, 0, sizeof rejected);
    if (rc != OAUTH_OK) {
        forget_token(w);
        snprintf(err->message, sizeof err->message, "%s", oe.message);
        if (rc == OAUTH_REDIS_ERROR)
            return CALL_REDIS;
        return (rc == OAUTH_UNAUTHORIZED || rc == OAUTH_NOT_CONNECTED) ? CALL_FAILED : CALL_RETRY;
    }
    ccapi_set_token(w->cc, w->token);
    return CALL_OK;
}

/* ---- one call ---- */

/* Waits until the shared budget grants a request (CALL_OK). */
static enum call_outcome take_budget(struct sync_worker *w, const char *association,
                                     enum budget_class cls, int64_t *renewed,
                                     struct ccapi_error *err)
{
    for (;;) {
        int64_t wait_ns = 0;
        enum ratelimit_result rl =
            ratelimit_acquire_class(w->redis, &w->budget, association, cls, &wait_ns);
        if (rl == RATELIMIT_GRANTED)
            return CALL_OK;
        if (rl == RATELIMIT_QUOTA) {
            err->status = CCAPI_QUOTA;
            return CALL_QUOTA;
        }
        if (rl != RATELIMIT_WAIT)
            return CALL_REDIS;
        enum call_outcome waited = wait_renewing(w, (long)(wait_ns / 1000000) + 1, renewed);
        if (waited != CALL_OK)
            return waited;
    }
}

/* Leases, token and budget before a request: CALL_OK when it may be sent. */
static enum call_outcome get_ready(struct sync_worker *w, const char *association,
                                   enum budget_class cls, int64_t *renewed, struct ccapi_error *err)
{
    enum call_outcome oc = renew_or_fail(w);
    if (oc != CALL_OK)
        return oc;
    *renewed = mono_ms();
    if (!load_token(w, association, err)) {
        if (w->redis->err)
            return CALL_REDIS;
        return err->status == CCAPI_UNAUTHORIZED ? CALL_FAILED : CALL_RETRY;
    }
    return take_budget(w, association, cls, renewed, err);
}

/* What to do after an answer: CALL_OK to send again, anything else ends the call
 * (*done). */
static enum call_outcome after_answer(struct sync_worker *w, const char *association,
                                      const struct cc_op *op, struct ccapi_error *err,
                                      int64_t *renewed, bool *refreshed, int *transient, bool *done)
{
    *done = true;
    switch (err->status) {
    case CCAPI_OK:
        oauth_mark_connected(w->redis, w->app->cfg, association, w->token);
        return CALL_OK;
    case CCAPI_UNAUTHORIZED:
        if (*refreshed)
            return CALL_FAILED;
        *refreshed = true;
        *done = false;
        return refresh_token(w, association, err);
    case CCAPI_THROTTLED:
        *done = false;
        return wait_renewing(w, err->retry_after_s > 0 ? err->retry_after_s * 1000 : 1000, renewed);
    case CCAPI_QUOTA:
        ratelimit_pause_until_midnight(w->redis, &w->budget, NULL);
        return CALL_QUOTA;
    case CCAPI_TRANSIENT:
        if (err->maybe_applied && !cc_ops[op->kind].may_repeat)
            return CALL_UNCERTAIN;
        if (++*transient >= MAX_TRANSIENT_ATTEMPTS)
            return CALL_RETRY;
        *done = false;
        return wait_renewing(w, backoff_ms(*transient), renewed);
    default:
        return CALL_FAILED;
    }
}

enum call_outcome cc_call(struct sync_worker *w, const char *association, struct cc_op *op,
                          struct ccapi_error *err)
{
    bool refreshed = false, done = false;
    int transient = 0;
    enum call_outcome oc;
    do {
        memset(err, 0, sizeof *err);
        int64_t renewed;
        oc = get_ready(w, association, op->cls, &renewed, err);
        if (oc != CALL_OK)
            return oc;
        cc_op_send(w->cc, op, err);
        char labels[128];
        snprintf(labels, sizeof labels, "op=\"%s\",outcome=\"%s\",class=\"%s\"",
                 cc_ops[op->kind].name, ccapi_status_name(err->status), budget_class_name(op->cls));
        metrics_inc("ccsync_cc_requests_total", labels);
        oc = after_answer(w, association, op, err, &renewed, &refreshed, &transient, &done);
    } while (!done && oc == CALL_OK);
    return oc;
}

/* ---- outcome -> sync result ---- */

/* CC's daily quota is used up: retry when the budget reopens. */
static enum sync_result quota_result(struct run *r)
{
    redisContext *c = r->w->redis;
    if (r->group)
        group_set_error(c, r->association, r->group, r->fence, "error",
                        "constant_contact_quota_exhausted",
                        "Constant Contact's daily request quota is used up; syncing resumes at "
                        "00:00 UTC");
    int64_t until = 0;
    ratelimit_paused_until(c, &r->w->budget, &until);
    int64_t now = store_now_ns();
    r->retry_ms = until > now ? (until - now) / 1000000 + 1000 : 60000;
    return SYNC_RETRY;
}

/* CC refused the request: the group rests in an error until it is retried. */
static enum sync_result refused_result(struct run *r, const struct ccapi_error *err,
                                       const char *what)
{
    redisContext *c = r->w->redis;
    if (err->status == CCAPI_UNAUTHORIZED) {
        if (r->group)
            group_set_error(c, r->association, r->group, r->fence, "error",
                            "constant_contact_unauthorized",
                            "Constant Contact refused ccsync's access: reconnect the account (PUT "
                            "new tokens for this association)");
        r->retry_ms = 3600 * 1000;
        return SYNC_RETRY;
    }
    char msg[400];
    snprintf(msg, sizeof msg, "Constant Contact refused to %s: %s", what, err->message);
    if (r->group)
        group_set_error(c, r->association, r->group, r->fence, "error", "constant_contact_rejected",
                        msg);
    r->retry_ms = 15 * 60 * 1000;
    return SYNC_RETRY;
}

enum sync_result call_result(struct run *r, enum call_outcome oc, const struct ccapi_error *err,
                             const char *what)
{
    char msg[400];
    switch (oc) {
    case CALL_OK:
        return SYNC_DONE;
    case CALL_QUOTA:
        return quota_result(r);
    case CALL_LEASE_LOST:
        return SYNC_LEASE_LOST;
    case CALL_REDIS:
        return SYNC_REDIS;
    case CALL_STOPPED:
        return SYNC_STOPPED;
    case CALL_FAILED:
        return refused_result(r, err, what);
    case CALL_RETRY:
    case CALL_UNCERTAIN:
        break;
    }
    snprintf(msg, sizeof msg, "Constant Contact did not answer as expected (%s); retrying",
             err->message[0] ? err->message : ccapi_status_name(err->status));
    if (r->group)
        group_set_error(r->w->redis, r->association, r->group, r->fence, "pending",
                        "constant_contact_unavailable", msg);
    r->retry_ms = 0;
    return SYNC_RETRY;
}
