/*
 * reconcile.c - what changed in Constant Contact behind ccsync's back, and when
 * to look. Every CCSYNC_RECONCILE_SECONDS each association has its turn: one
 * paged read of the account's lists notices lists deleted in CC (the group
 * shows an error until an admin resyncs it), lists renamed in CC (the new name
 * is recorded and audited), and lists whose size differs from what ccsync
 * applied (the group is queued to read its list back).
 *
 * KEY_RECONCILE is a zset association -> next reconcile (ms); one worker at a
 * time reconciles an association, under its reconcile lease.
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

/* Moves the lists of one page into a. */
static void account_lists_take(struct account_lists *a, struct ccapi_list_page *page)
{
    for (size_t i = 0; i < page->n_lists; i++) {
        if (a->n == a->cap) {
            a->cap = a->cap ? a->cap * 2 : 64;
            a->lists = realloc(a->lists, a->cap * sizeof *a->lists);
        }
        a->lists[a->n++] = page->lists[i];
        page->lists[i].name = NULL; /* moved */
        page->lists[i].description = NULL;
    }
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
        account_lists_take(a, &op.out.lists);
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

/* Gives every association a turn (new ones join at their first chance) and
 * names the first whose turn has come, if any ("" when none). */
static int reconcile_next(redisContext *c, int64_t now, int64_t every_ms,
                          char association[CCSYNC_ASSOC_ID_MAX + 1])
{
    association[0] = '\0';
    redisReply *a = store_command(c, "SMEMBERS %s", KEY_ASSOCIATIONS);
    if (!a)
        return STORE_ERR;
    for (size_t i = 0; i < a->elements; i++)
        freeReplyObject(redisCommand(c, "ZADD %s NX %lld %s", KEY_RECONCILE,
                                     (long long)(now + every_ms), a->element[i]->str));
    freeReplyObject(a);
    redisReply *r =
        store_command(c, "ZRANGEBYSCORE %s -inf %lld LIMIT 0 1", KEY_RECONCILE, (long long)now);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        return STORE_ERR;
    }
    if (r->elements == 1)
        snprintf(association, CCSYNC_ASSOC_ID_MAX + 1, "%s", r->element[0]->str);
    freeReplyObject(r);
    return STORE_OK;
}

bool sync_reconcile_due(struct sync_worker *w)
{
    redisContext *c = w->redis;
    int64_t now = store_now_ns() / 1000000;
    int64_t every_ms = (int64_t)w->app->cfg->reconcile_seconds * 1000;
    char association[CCSYNC_ASSOC_ID_MAX + 1];
    if (reconcile_next(c, now, every_ms, association) != STORE_OK)
        return false;
    if (!association[0])
        return true;
    struct key lease = key_reconcile_lease(association);
    w->n_leases = 0;
    int taken = lease_take(c, &w->leases[0], &lease, w->lease_ms);
    if (taken != 1)
        return c->err == 0; /* another worker reconciles it */
    w->n_leases = 1;
    freeReplyObject(redisCommand(c, "ZADD %s XX %lld %s", KEY_RECONCILE,
                                 (long long)(now + every_ms), association));
    enum sync_result res = sync_reconcile(w, association);
    log_info("reconciled", LOG_STR("association", association), LOG_INT("result", res));
    lease_release(c, &w->leases[0]);
    w->n_leases = 0;
    return res != SYNC_REDIS && c->err == 0;
}
