/*
 * journal.c - the journal of a group's CC requests in flight, and recovery
 * from one left behind.
 *
 * The journal (the group's "journal" field) holds the request that may have
 * taken effect without ccsync hearing the answer:
 *   {"op":"create","name":...,"ref":...}               (lists.c)
 *   {"op":"delete","list_id":...,"why":...}             (lists.c)
 *   {"op":"import"|"remove","activity":id,"activities":[id or "",...]}
 * It is written before each request and after it. A run that finds one left
 * behind (a crash, a timeout) first finds out what CC did: it waits for the
 * recorded activities, or reads the list back, before planning anything new.
 */
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "ccsync/app.h"
#include "ccsync/durability.h"
#include "ccsync/engine.h"
#include "ccsync/log.h"
#include "ccsync/store.h"

/* ---- writing it ---- */

/* In replica mode the journal must outlive a failover before the request it
 * announces is sent: otherwise a promoted replica that lacks it would plan the
 * request again and send it twice. One WAIT per journal write (a few per CC
 * bulk request, which the CC budget paces anyway); unconfirmed, the request is
 * not sent and the sync is retried. */
static bool journal_replicated(struct run *r)
{
    const struct config *cfg = r->w->app ? r->w->app->cfg : NULL;
    if (!cfg || cfg->durability != DURABILITY_REPLICA)
        return true;
    redisReply *w = store_command(r->w->redis, "WAIT 1 %d", cfg->replica_timeout_ms);
    bool ok = w && w->type == REDIS_REPLY_INTEGER && w->integer >= 1;
    freeReplyObject(w);
    if (!ok)
        log_warn("journal_not_replicated", LOG_STR("association", r->association),
                 LOG_STR("group", r->group),
                 LOG_STR("why", "no replica confirmed the journal: the request waits"));
    return ok;
}

bool journal_write(struct run *r, const char *json)
{
    snprintf(r->gs.journal, sizeof r->gs.journal, "%s", json);
    return group_journal_write(r->w->redis, r->association, r->group, r->fence, json) == STORE_OK &&
           journal_replicated(r);
}

bool journal_clear(struct run *r)
{
    r->gs.journal[0] = '\0';
    r->n_acts = 0;
    return group_journal_clear(r->w->redis, r->association, r->group, r->fence) == STORE_OK;
}

/* Writes {"op":"import"|"remove","activity":id,"activities":[...]}: op and
 * activity name the latest request, activities every activity of the group's
 * round that may be running in CC, "" for one sent whose answer (its id) is not
 * known. */
static bool journal_save(struct run *r)
{
    if (r->n_acts == 0)
        return journal_clear(r);
    json_object *j = json_object_new_object();
    json_object *a = json_object_new_array();
    for (size_t i = 0; i < r->n_acts; i++)
        json_object_array_add(a, json_object_new_string(r->acts[i]));
    json_object_object_add(j, "op", json_object_new_string(r->act_ops[r->n_acts - 1]));
    json_object_object_add(j, "activity", json_object_new_string(r->acts[r->n_acts - 1]));
    json_object_object_add(j, "activities", a);
    bool ok = journal_write(r, json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN));
    json_object_put(j);
    return ok;
}

bool journal_push(struct run *r, const char *op)
{
    snprintf(r->act_ops[r->n_acts], sizeof r->act_ops[0], "%s", op);
    r->acts[r->n_acts++][0] = '\0';
    return journal_save(r);
}

bool journal_name_last(struct run *r, const char *activity)
{
    snprintf(r->acts[r->n_acts - 1], sizeof r->acts[0], "%s", activity);
    return journal_save(r);
}

bool journal_drop_last(struct run *r)
{
    r->n_acts--;
    return journal_save(r);
}

/* ---- waiting for CC ---- */

/* Waits until a CC activity finishes. */
static enum call_outcome wait_activity(struct run *r, const char *activity_id,
                                       struct ccapi_error *err)
{
    long waited = 0, step = 200;
    struct cc_op op = {.kind = CC_ACTIVITY, .in.activity_id = activity_id};
    enum call_outcome oc = CALL_OK;
    for (;;) {
        if (!engine_pause(r->w, step)) {
            oc = CALL_STOPPED;
            break;
        }
        waited += step;
        oc = cc_call(r->w, r->association, &op, err);
        if (oc != CALL_OK || ccapi_activity_finished(op.out.activity.state))
            break;
        if (waited > ACTIVITY_WAIT_MAX_MS) {
            snprintf(err->message, sizeof err->message, "activity %.64s did not finish",
                     activity_id);
            oc = CALL_RETRY;
            break;
        }
        step = step < 2000 ? step * 2 : 2000;
    }
    cc_op_clear(&op);
    return oc;
}

/* Waits (bounded) until the account's recent activities have all finished. */
static enum call_outcome wait_account_activities(struct run *r, struct ccapi_error *err)
{
    long waited = 0, step = 500;
    for (;;) {
        struct cc_op op = {.kind = CC_ACTIVITIES};
        enum call_outcome oc = cc_call(r->w, r->association, &op, err);
        bool busy = false;
        for (size_t i = 0; oc == CALL_OK && i < op.out.activities.n_activities; i++)
            busy = busy || !ccapi_activity_finished(op.out.activities.activities[i].state);
        cc_op_clear(&op);
        if (oc != CALL_OK || !busy)
            return oc;
        if (waited >= ACTIVITY_WAIT_MAX_MS) {
            snprintf(err->message, sizeof err->message, "activities still running after %ld s",
                     waited / 1000);
            return CALL_RETRY;
        }
        if (!engine_pause(r->w, step))
            return CALL_STOPPED;
        waited += step;
        step = step < 4000 ? step * 2 : 4000;
    }
}

/* ---- recovery ---- */

/*
 * A journaled delete whose outcome is unknown: once the account's jobs have
 * finished, the list is either gone (the delete went through: forgotten, as
 * after a delete) or still there (it never arrived: the journal is dropped and
 * the group goes on from its present facts, deleting the list again if sync is
 * still off, keeping it if sync was turned back on).
 */
static enum sync_result recover_delete(struct run *r, const char *why)
{
    struct ccapi_error err;
    enum call_outcome oc = wait_account_activities(r, &err);
    if (oc != CALL_OK)
        return call_result(r, oc, &err, "list recent activities");
    bool gone;
    oc = lists_ask(r, &gone, &err);
    log_info("sync_recovered", LOG_STR("association", r->association), LOG_STR("group", r->group),
             LOG_STR("journal", "delete"), LOG_STR("list_id", r->gs.list_id),
             LOG_STR("list", gone            ? "deleted"
                             : oc == CALL_OK ? "still there"
                                             : "unknown"));
    if (gone)
        return lists_forget(r, why);
    if (oc != CALL_OK)
        return call_result(r, oc, &err, "read the list");
    return journal_clear(r) ? SYNC_DONE : SYNC_REDIS;
}

/* The activities a bulk request's journal names; older versions wrote no
 * "activities" (one request in flight). Returns how many. */
static size_t journal_activities(json_object *j, char acts[ROUND_MAX_ACTIVITIES][CCAPI_ID_SIZE])
{
    json_object *v;
    size_t n = 0;
    if (json_object_object_get_ex(j, "activities", &v) && json_object_is_type(v, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(v) && n < ROUND_MAX_ACTIVITIES; i++)
            snprintf(acts[n++], CCAPI_ID_SIZE, "%s",
                     json_object_get_string(json_object_array_get_idx(v, i)));
        return n;
    }
    acts[0][0] = '\0';
    if (json_object_object_get_ex(j, "activity", &v))
        snprintf(acts[0], CCAPI_ID_SIZE, "%s", json_object_get_string(v));
    return 1;
}

/* Bulk requests left in flight: waits for them, then reads the list back. */
static enum sync_result recover_bulk(struct run *r, const char *op,
                                     char acts[ROUND_MAX_ACTIVITIES][CCAPI_ID_SIZE], size_t n)
{
    struct ccapi_error err;
    bool lost = false;
    for (size_t i = 0; i < n; i++) {
        if (!acts[i][0]) {
            lost = true;
            continue;
        }
        enum call_outcome oc = wait_activity(r, acts[i], &err);
        if (oc != CALL_OK && !(oc == CALL_FAILED && err.status == CCAPI_NOT_FOUND))
            return call_result(r, oc, &err, "report on an earlier request");
    }
    if (lost) {
        /* An answer was lost before its activity id was written down: if the
         * request did reach CC, its job is among the account's unfinished ones.
         * Wait until none is left (they cannot be told apart by list), so the
         * read-back below sees what the lost request did. */
        enum call_outcome oc = wait_account_activities(r, &err);
        if (oc != CALL_OK)
            return call_result(r, oc, &err, "list recent activities");
    }
    enum call_outcome oc = round_verify_list(r, BUDGET_CHANGES, &err);
    if (oc == CALL_FAILED && err.status == CCAPI_NOT_FOUND)
        return lists_check_gone(r, &err);
    if (oc != CALL_OK)
        return call_result(r, oc, &err, "read the list");
    log_info("sync_recovered", LOG_STR("association", r->association), LOG_STR("group", r->group),
             LOG_STR("journal", op), LOG_INT("activities", (long long)n),
             LOG_STR("activity", n == 1 && acts[0][0] ? acts[0] : NULL));
    return journal_clear(r) ? SYNC_DONE : SYNC_REDIS;
}

enum sync_result journal_recover(struct run *r)
{
    json_object *j = json_tokener_parse(r->gs.journal);
    json_object *v;
    char op[16] = ""; /* a copy: it is logged after j is released */
    if (j && json_object_object_get_ex(j, "op", &v))
        snprintf(op, sizeof op, "%s", json_object_get_string(v));
    if (strcmp(op, "delete") == 0) {
        char why[256] = "the list delete sent before a restart went through";
        if (json_object_object_get_ex(j, "why", &v))
            snprintf(why, sizeof why, "%s", json_object_get_string(v));
        json_object_put(j);
        return recover_delete(r, why);
    }
    if (strcmp(op, "import") != 0 && strcmp(op, "remove") != 0) {
        json_object_put(j);
        return SYNC_DONE; /* "create" is recovered by lists_create */
    }
    char acts[ROUND_MAX_ACTIVITIES][CCAPI_ID_SIZE];
    size_t n = journal_activities(j, acts);
    json_object_put(j);
    return recover_bulk(r, op, acts, n);
}
