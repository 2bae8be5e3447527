/*
 * actcheck.c - the check of an association's outstanding activities: imports
 * whose outcome only refreshes counts, sent by rounds that did not wait for
 * them (round.c records their contacts as on the list at once). Every
 * activity an association left outstanding since the last check is looked up
 * in ONE request, GET /activities (the account's newest 500 with their state
 * and errors), when the check is due, instead of each round polling its own:
 * several rounds of one association within ACTS_CHECK_AFTER_MS share it.
 *
 * An import that completed with no error and every contact added is done. One
 * that CC rejected contacts of, could not add some to (unsubscribed in CC), or
 * that did not complete, has its group read back by the group's next sync
 * (verify), which waits for its own imports and records what CC did. An
 * activity still running is checked again later; one the page no longer shows
 * after ACTS_LOST_MS is treated as not known (read back).
 *
 * key_acts_out(A) holds them (activity id -> "sent ms|group"); KEY_ACTS_DUE says
 * when each association's check is due. A worker takes a due check by removing
 * the entry (ZREM: one taker) and puts it back when something is left.
 */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccsync/engine.h"
#include "ccsync/facts.h"
#include "ccsync/keys.h"
#include "ccsync/log.h"
#include "ccsync/store.h"

/* A check left with activities still running looks again this much later. */
#define ACTS_RECHECK_MS (5 * 1000LL)
/* A check CC or the budget could not answer is tried again this much later. */
#define ACTS_RETRY_MS (60 * 1000LL)
/* An activity the newest page has not shown for this long is not known. */
#define ACTS_LOST_MS (30 * 60 * 1000LL)

int actcheck_defer(redisContext *c, const char *association, const char *const *activity_ids,
                   const char *const *groups, size_t n, int64_t now_ms)
{
    struct key out = key_acts_out(association);
    for (size_t i = 0; i < n; i++)
        redisAppendCommand(c, "HSET %s %s %lld|%s", out.s, activity_ids[i], (long long)now_ms,
                           groups[i]);
    /* NX: a later round does not push the check back, so rounds within the
     * window share it */
    redisAppendCommand(c, "ZADD %s NX %lld %s", KEY_ACTS_DUE,
                       (long long)(now_ms + ACTS_CHECK_AFTER_MS), association);
    return store_drain(c, n + 1);
}

/* What an activity's outcome means for its group: true when it is done and
 * nothing is left to record; false when the group is to be read back. */
static bool activity_clean(const struct ccapi_activity *a)
{
    return a->state == CCAPI_ACTIVITY_COMPLETED && a->n_errors == 0 &&
           a->cannot_add_to_list_count <= 0 && a->error_count <= 0;
}

/* The group is read back by its next sync, which records what CC did. */
static void read_back_later(redisContext *c, const char *association, const char *group,
                            const char *activity, const char *why)
{
    log_info("activity_outcome_read_back", LOG_STR("association", association),
             LOG_STR("group", group), LOG_STR("activity", activity), LOG_STR("why", why));
    group_set_verify(c, association, group);
    facts_mark_dirty(c, association, group, store_now_ns(), 0);
}

/* Settles outstanding activity id ("sent|group") against the page; true when it
 * leaves the outstanding set. */
static bool settle_one(redisContext *c, const char *association, const char *id, const char *value,
                       const struct ccapi_activity_page *page, int64_t now)
{
    const char *bar = strchr(value, '|');
    const char *group = bar ? bar + 1 : "";
    int64_t sent = strtoll(value, NULL, 10);
    const struct ccapi_activity *a = NULL;
    for (size_t k = 0; k < page->n_activities && !a; k++)
        if (strcmp(page->activities[k].activity_id, id) == 0)
            a = &page->activities[k];
    if (a && !ccapi_activity_finished(a->state))
        return false;
    if (!a && now - sent < ACTS_LOST_MS)
        return false;
    if (!a)
        read_back_later(c, association, group, id, "not shown by CC any more");
    else if (!activity_clean(a))
        read_back_later(c, association, group, id, "rejected or not added contacts");
    return true;
}

/* One GET /activities for every outstanding activity of the association.
 * Returns when the next check is due (SCHEDULE-style: INT64_MAX when none). */
static int64_t check_association(struct sync_worker *w, const char *association, int64_t now)
{
    redisContext *c = w->redis;
    struct key out = key_acts_out(association);
    redisReply *all = store_command(c, "HGETALL %s", out.s);
    if (!all || all->type != REDIS_REPLY_ARRAY || all->elements == 0) {
        freeReplyObject(all);
        return INT64_MAX;
    }
    struct cc_op op = {.kind = CC_ACTIVITIES, .cls = BUDGET_REFRESH};
    struct ccapi_error err;
    w->token_association[0] = '\0'; /* read the token afresh */
    enum call_outcome oc = cc_call(w, association, &op, &err);
    size_t left = all->elements / 2;
    for (size_t i = 0; oc == CALL_OK && i + 1 < all->elements; i += 2) {
        const char *id = all->element[i]->str, *value = all->element[i + 1]->str;
        if (settle_one(c, association, id, value, &op.out.activities, now)) {
            freeReplyObject(redisCommand(c, "HDEL %s %s", out.s, id));
            left--;
        }
    }
    cc_op_clear(&op);
    freeReplyObject(all);
    if (oc != CALL_OK)
        return now + ACTS_RETRY_MS;
    return left > 0 ? now + ACTS_RECHECK_MS : INT64_MAX;
}

bool actcheck_due(struct sync_worker *w)
{
    redisContext *c = w->redis;
    int64_t now = store_now_ns() / 1000000;
    redisReply *r =
        store_command(c, "ZRANGEBYSCORE %s -inf %lld LIMIT 0 1", KEY_ACTS_DUE, (long long)now);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        return false;
    }
    char association[CCSYNC_ASSOC_ID_MAX + 1] = "";
    if (r->elements == 1 && r->element[0]->len <= CCSYNC_ASSOC_ID_MAX)
        memcpy(association, r->element[0]->str, r->element[0]->len + 1);
    freeReplyObject(r);
    if (!association[0])
        return true;
    redisReply *taken = store_command(c, "ZREM %s %s", KEY_ACTS_DUE, association);
    bool mine = taken && taken->type == REDIS_REPLY_INTEGER && taken->integer == 1;
    freeReplyObject(taken);
    if (!mine)
        return c->err == 0; /* another worker checks it */
    int64_t next = check_association(w, association, now);
    if (next != INT64_MAX)
        freeReplyObject(
            redisCommand(c, "ZADD %s NX %lld %s", KEY_ACTS_DUE, (long long)next, association));
    return c->err == 0;
}
