/*
 * reconcile.c - what changed in Constant Contact behind ccsync's back, and when
 * to look. Reconcile spends at most CCSYNC_RECONCILE_BUDGET_SHARE of the day's
 * budget, spread over every association in equal turns (budget_reconcile_interval_s:
 * never more often than CCSYNC_RECONCILE_SECONDS), an association with a round in
 * the last hour twice as often with what the equal turns leave, and one somebody
 * asked about (the API, the status page) at once, at most once a minute. Each turn is one
 * paged read of the account's lists notices lists deleted in CC (the group
 * shows an error until an admin resyncs it), lists renamed in CC (the new name
 * is recorded and audited), and lists whose size differs from what ccsync
 * applied (the group is queued to read its list back).
 *
 * KEY_RECONCILE is a zset association -> next reconcile (ms); one worker at a
 * time reconciles an association, under its reconcile lease. KEY_ACTIVE says
 * when each association last had a round; key_reconcile_asked marks an ask.
 */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccsync/app.h"
#include "ccsync/config.h"
#include "ccsync/engine.h"
#include "ccsync/facts.h"
#include "ccsync/keys.h"
#include "ccsync/lease.h"
#include "ccsync/log.h"
#include "ccsync/model.h"
#include "ccsync/store.h"

/* ---- reconcile one association ---- */

/* Every list of the account, as one paged read found them. */
struct account_lists {
    size_t n, cap;
    struct ccapi_list *lists;
};

static void account_lists_free(struct account_lists *a)
{
    for (size_t k = 0; k < a->n; k++)
        ccapi_list_clear(&a->lists[k]);
    free(a->lists);
}

static const struct ccapi_list *account_list(const struct account_lists *a, const char *list_id)
{
    const struct ccapi_list *l = NULL;
    for (size_t k = 0; k < a->n; k++)
        if (strcmp(a->lists[k].list_id, list_id) == 0)
            l = &a->lists[k];
    return l;
}

/* Moves the lists of one page into a; false when out of memory (a keeps what
 * it had, and a partial read must not be judged: a list missing from it is not
 * deleted). */
static bool account_lists_take(struct account_lists *a, struct ccapi_list_page *page)
{
    for (size_t i = 0; i < page->n_lists; i++) {
        if (a->n == a->cap) {
            size_t cap = a->cap ? a->cap * 2 : 64;
            struct ccapi_list *grown = realloc(a->lists, cap * sizeof *grown);
            if (grown == NULL)
                return false;
            a->lists = grown;
            a->cap = cap;
        }
        a->lists[a->n++] = page->lists[i];
        page->lists[i].name = NULL; /* moved */
        page->lists[i].description = NULL;
    }
    return true;
}

/* One paged read covers every list of the account. */
static enum sync_result read_account_lists(struct run *r, struct account_lists *a)
{
    struct cc_op op = {.kind = CC_LISTS_PAGE, .cls = BUDGET_RECONCILE};
    char *next = NULL;
    struct ccapi_error err;
    enum call_outcome oc;
    do {
        op.in.next = next;
        oc = cc_call(r->w, r->association, &op, &err);
        free(next);
        next = NULL;
        if (oc != CALL_OK)
            break;
        if (!account_lists_take(a, &op.out.lists)) {
            cc_op_clear(&op);
            return SYNC_RETRY; /* the next reconcile reads them again */
        }
        if (op.out.lists.next_href)
            next = strdup(op.out.lists.next_href);
    } while (next);
    cc_op_clear(&op);
    return call_result(r, oc, &err, "read the lists"); /* r->group is NULL: nothing recorded */
}

/* True when some group of the association has a list in CC to look at. */
static bool any_list(redisContext *c, const char *association, char **ids, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct group_state gs;
        if (group_load(c, association, ids[i], &gs) == STORE_OK && gs.list_id[0] &&
            !gs.list_deleted_in_cc)
            return true;
    }
    return false;
}

/* A list not on the pages read: deleted, or made by a round after the page was
 * read. Asking for it by id tells which (one request, rarely); when CC does not
 * say, the next reconcile looks again. */
static enum sync_result ask_unseen(struct run *r)
{
    struct ccapi_error err;
    bool gone;
    enum call_outcome oc = lists_ask(r, &gone, &err);
    if (gone)
        return lists_mark_deleted(r);
    /* CC's own trouble waits for the next reconcile: the group records nothing.
     * The worker's (Redis, lease, shutdown) ends this one. */
    const char *group = r->group;
    r->group = NULL;
    enum sync_result res = call_result(r, oc, &err, "read the list");
    r->group = group;
    return res == SYNC_RETRY ? SYNC_DONE : res;
}

/* A list renamed in CC: the new name is recorded and audited. */
static enum sync_result note_rename(struct run *r, const struct ccapi_list *l)
{
    redisContext *c = r->w->redis;
    if (!l->name || strcmp(l->name, r->gs.list_name) == 0)
        return SYNC_DONE;
    char detail[600];
    snprintf(detail, sizeof detail, "renamed from \"%s\"", r->gs.list_name);
    if (group_rename_list(c, r->association, r->group, l->name) != STORE_OK ||
        facts_audit(c, r->association, r->group, "list_renamed_in_constant_contact", r->gs.list_id,
                    l->name, detail) != 0)
        return SYNC_REDIS;
    return SYNC_DONE;
}

/* A synced list whose size in CC differs from what ccsync applied is read back
 * by the group's next sync. */
static void note_drift(struct run *r, const struct ccapi_list *l)
{
    redisContext *c = r->w->redis;
    long in_list;
    bool settled;
    if (l->membership_count < 0 ||
        group_list_count(c, r->association, r->group, &in_list, &settled) != 1)
        return;
    if (settled && in_list != l->membership_count) {
        group_set_verify(c, r->association, r->group);
        facts_mark_dirty(c, r->association, r->group, store_now_ns(), 0);
    }
}

static enum sync_result reconcile_group(struct run *r, const struct account_lists *a)
{
    if (group_load(r->w->redis, r->association, r->group, &r->gs) != STORE_OK)
        return SYNC_REDIS;
    if (!r->gs.list_id[0] || r->gs.list_deleted_in_cc || r->gs.deleted || !r->gs.sync)
        return SYNC_DONE;
    const struct ccapi_list *l = account_list(a, r->gs.list_id);
    if (l && l->deleted)
        return lists_mark_deleted(r);
    if (!l)
        return ask_unseen(r);
    enum sync_result res = note_rename(r, l);
    note_drift(r, l);
    return res;
}

enum sync_result sync_reconcile(struct sync_worker *w, const char *association)
{
    redisContext *c = w->redis;
    char **ids;
    size_t n;
    if (group_ids_load(c, association, &ids, &n) != STORE_OK)
        return SYNC_REDIS;
    enum sync_result res = SYNC_DONE;
    struct run r = {.w = w, .association = association, .cls = BUDGET_RECONCILE};
    struct account_lists lists = {0};
    w->token_association[0] = '\0'; /* read the token afresh: it may be near expiry */
    if (any_list(c, association, ids, n)) {
        res = read_account_lists(&r, &lists);
        for (size_t i = 0; res == SYNC_DONE && i < n; i++) {
            r.group = ids[i];
            res = reconcile_group(&r, &lists);
        }
    }
    account_lists_free(&lists);
    group_ids_free(ids, n);
    return res;
}

/* ---- when ---- */

/* How far back a round counts as recent activity. */
#define ACTIVE_WINDOW_MS (3600 * 1000LL)
/* How many turns to come a look for a busy association's extra turn reads. */
#define EXTRA_TURN_SCAN 16
/* A reconcile the share cannot afford now is looked at again this much later. */
#define SHARE_RETRY_MS (60 * 1000LL)
/* How long an ask holds off the next one. */
#define ASK_PENDING "pending"
#define ASK_EVERY_MS (60 * 1000LL)

void sync_note_activity(redisContext *c, const char *association)
{
    freeReplyObject(redisCommand(c, "ZADD %s %lld %s", KEY_ACTIVE,
                                 (long long)(store_now_ns() / 1000000), association));
}

int sync_reconcile_ask(redisContext *c, const char *association, int64_t *asked_at_ms)
{
    struct key asked = key_reconcile_asked(association);
    int64_t now = store_now_ns() / 1000000;
    /* "pending:MS" until reconciled, then "done:MS": when the ask was taken; the
     * key lives as long as the ask stands */
    redisReply *r = store_command(c, "SET %s " ASK_PENDING ":%lld NX GET PX %lld", asked.s,
                                  (long long)now, (long long)ASK_EVERY_MS);
    if (!r || (r->type != REDIS_REPLY_NIL && r->type != REDIS_REPLY_STRING)) {
        freeReplyObject(r);
        return STORE_ERR;
    }
    bool taken = r->type == REDIS_REPLY_NIL;
    const char *at = taken ? NULL : strchr(r->str, ':');
    *asked_at_ms = at && strtoll(at + 1, NULL, 10) > 0 ? strtoll(at + 1, NULL, 10) : now;
    freeReplyObject(r);
    if (!taken)
        return 0;
    if (store_exec(c, "ZADD %s LT %lld %s", KEY_RECONCILE, (long long)now, association) != STORE_OK)
        return STORE_ERR;
    return 1;
}

int sync_reconcile_next_at(redisContext *c, const char *association, int64_t *at_ms)
{
    redisReply *r = store_command(c, "ZSCORE %s %s", KEY_RECONCILE, association);
    if (!r)
        return STORE_ERR;
    *at_ms = r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : 0;
    freeReplyObject(r);
    return STORE_OK;
}

/* Reconcile's intervals now (ms): idle, its share of the day spread over every
 * association in equal turns, one page each; busy, when one with a round in the
 * last hour may have an extra turn out of what they leave. Never below
 * CCSYNC_RECONCILE_SECONDS. */
static int reconcile_intervals(struct sync_worker *w, int64_t now, int64_t *idle_ms,
                               int64_t *busy_ms)
{
    redisContext *c = w->redis;
    redisAppendCommand(c, "SCARD %s", KEY_ASSOCIATIONS);
    redisAppendCommand(c, "ZCOUNT %s %lld +inf", KEY_ACTIVE, (long long)(now - ACTIVE_WINDOW_MS));
    long long counts[2] = {0, 0};
    for (int i = 0; i < 2; i++) {
        redisReply *r = NULL;
        if (redisGetReply(c, (void **)&r) != REDIS_OK)
            return STORE_ERR;
        counts[i] = r && r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
        freeReplyObject(r);
    }
    long busy = (long)(counts[1] < counts[0] ? counts[1] : counts[0]);
    struct budget_day d;
    sync_budget_day(w, &d);
    int64_t busy_s;
    int64_t idle_s = budget_reconcile_interval_s(&d, (long)counts[0] - busy, busy,
                                                 w->app->cfg->reconcile_seconds, &busy_s);
    *idle_ms = idle_s * 1000;
    *busy_ms = busy_s * 1000;
    return STORE_OK;
}

/* Whether association is busy (a round since busy_since) and was last
 * reconciled (its last reconcile grant, ratelimit.c) before last_before: only
 * then is an extra turn due (a new association has its equal turn first). */
static bool extra_turn_due(struct sync_worker *w, const char *association, int64_t busy_since,
                           int64_t last_before)
{
    redisContext *c = w->redis;
    redisReply *act = store_command(c, "ZSCORE %s %s", KEY_ACTIVE, association);
    bool busy = act && act->type == REDIS_REPLY_STRING && strtoll(act->str, NULL, 10) >= busy_since;
    freeReplyObject(act);
    if (!busy)
        return false;
    redisReply *last =
        store_command(c, "HGET %s %s", key_budget(w->budget.app, "reconciled").s, association);
    bool due = last && last->type == REDIS_REPLY_STRING &&
               strtoll(last->str, NULL, 10) * 1000 <= last_before;
    freeReplyObject(last);
    return due;
}

/* The first association of KEY_RECONCILE scored up to max_score ("" when none);
 * with want_busy, the first whose extra turn is due (extra_turn_due). The score
 * is the next equal turn, so the first is the least recently reconciled. */
static int first_turn(struct sync_worker *w, int64_t max_score, bool want_busy, int64_t busy_since,
                      int64_t last_before, char association[CCSYNC_ASSOC_ID_MAX + 1])
{
    association[0] = '\0';
    redisReply *r = store_command(w->redis, "ZRANGEBYSCORE %s -inf %lld LIMIT 0 %d", KEY_RECONCILE,
                                  (long long)max_score, want_busy ? EXTRA_TURN_SCAN : 1);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        return STORE_ERR;
    }
    for (size_t i = 0; i < r->elements && !association[0]; i++)
        if (!want_busy || extra_turn_due(w, r->element[i]->str, busy_since, last_before))
            snprintf(association, CCSYNC_ASSOC_ID_MAX + 1, "%s", r->element[i]->str);
    freeReplyObject(r);
    return STORE_OK;
}

/* Gives every association a turn (a new one at a random point of the interval,
 * so that many do not come due together) and names the association whose turn
 * it is, if any ("" when none): an equal turn that has come (the least recently
 * reconciled first); else, while reconcile's share has room, a busy association
 * reconciled at least busy_ms ago (its extra turn). */
static int reconcile_next(struct sync_worker *w, int64_t now, int64_t every_ms, int64_t busy_ms,
                          char association[CCSYNC_ASSOC_ID_MAX + 1])
{
    redisContext *c = w->redis;
    association[0] = '\0';
    redisReply *a = store_command(c, "SMEMBERS %s", KEY_ASSOCIATIONS);
    if (!a)
        return STORE_ERR;
    for (size_t i = 0; i < a->elements; i++)
        freeReplyObject(redisCommand(c, "ZADD %s NX %lld %s", KEY_RECONCILE,
                                     (long long)(now + rand() % (every_ms > 0 ? every_ms : 1)),
                                     a->element[i]->str));
    freeReplyObject(a);
    int rc = first_turn(w, now, false, 0, 0, association);
    struct budget_day d;
    if (rc != STORE_OK || association[0] || busy_ms >= every_ms)
        return rc;
    sync_budget_day(w, &d);
    if (!budget_reconcile_allowed(&d))
        return STORE_OK;
    return first_turn(w, now + every_ms - busy_ms, true, now - ACTIVE_WINDOW_MS, now - busy_ms,
                      association);
}

/* When association's next equal turn is (the interval from now); a minute later
 * when reconcile's share cannot afford it now and nobody asked. *go says
 * whether to reconcile it now. */
static int64_t next_turn(struct sync_worker *w, const char *association, int64_t now,
                         int64_t idle_ms, bool *go)
{
    redisContext *c = w->redis;
    redisReply *asked = redisCommand(c, "GET %s", key_reconcile_asked(association).s);
    bool pending = asked && asked->type == REDIS_REPLY_STRING &&
                   strncmp(asked->str, ASK_PENDING, strlen(ASK_PENDING)) == 0;
    char done[48] = ""; /* the ask stays (its time too) until it expires: once a minute */
    if (pending)
        snprintf(done, sizeof done, "done%s", asked->str + strlen(ASK_PENDING));
    freeReplyObject(asked);
    struct budget_day d;
    sync_budget_day(w, &d);
    *go = pending || budget_reconcile_allowed(&d);
    if (!*go)
        return now + SHARE_RETRY_MS;
    if (pending)
        freeReplyObject(
            redisCommand(c, "SET %s %s KEEPTTL XX", key_reconcile_asked(association).s, done));
    return now + idle_ms;
}

bool sync_reconcile_due(struct sync_worker *w)
{
    redisContext *c = w->redis;
    /* The same once-a-second look serves the checks of activities that rounds
     * left outstanding (actcheck.c): due ones go first, they are cheap. */
    if (!actcheck_due(w))
        return false;
    int64_t now = store_now_ns() / 1000000;
    int64_t idle_ms, busy_ms;
    char association[CCSYNC_ASSOC_ID_MAX + 1];
    if (reconcile_intervals(w, now, &idle_ms, &busy_ms) != STORE_OK ||
        reconcile_next(w, now, idle_ms, busy_ms, association) != STORE_OK)
        return false;
    if (!association[0])
        return true;
    struct key lease = key_reconcile_lease(association);
    w->n_leases = 0;
    int taken = lease_take(c, &w->leases[0], &lease, w->lease_ms);
    if (taken != 1)
        return c->err == 0; /* another worker reconciles it */
    w->n_leases = 1;
    sync_leases_held(w);
    bool go;
    int64_t next = next_turn(w, association, now, idle_ms, &go);
    freeReplyObject(
        redisCommand(c, "ZADD %s XX %lld %s", KEY_RECONCILE, (long long)next, association));
    enum sync_result res = SYNC_DONE;
    if (go) {
        res = sync_reconcile(w, association);
        log_info("reconciled", LOG_STR("association", association), LOG_INT("result", res),
                 LOG_INT("next_in_s", (long long)((next - now) / 1000)));
    }
    w->n_leases = 0;
    sync_leases_held(w);
    lease_release(c, &w->leases[0]);
    return res != SYNC_REDIS && c->err == 0;
}
