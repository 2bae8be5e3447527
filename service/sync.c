/*
 * sync.c - the entry points of one group's sync against Constant Contact (see
 * sync.h), and a group's own steps before its list changes join the round.
 *
 * The loop: read the desired state (members, records) and the applied state
 * (what ccsync knows is on the list) from Redis, ask plan.c what to do, run the
 * operations, write down what they did, and plan again until nothing is left.
 * engine.h maps the other rooms: the CC-call policy (cccall.c), the list
 * (lists.c), the journal and recovery (journal.c), the round (round.c),
 * reconcile (reconcile.c) and the group's records (groupstore.c).
 */
#include "ccsync/sync.h"

#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

#include "ccsync/engine.h"
#include "ccsync/log.h"
#include "ccsync/memberstatus.h"
#include "ccsync/store.h"

/* Reads the list back (resync, or reconcile's doubt); a 404 is looked into.
 * The group goes no further when the list turns out gone (list_deleted_in_cc). */
static enum sync_result read_list_back(struct run *r)
{
    struct ccapi_error err;
    enum call_outcome oc = round_verify_list(r, BUDGET_FULL_SYNC, &err);
    if (oc == CALL_FAILED && err.status == CCAPI_NOT_FOUND)
        return lists_check_gone(r, &err);
    return call_result(r, oc, &err, "read the list");
}

/* A deleted or switched-off group: its list goes; a deleted group is then
 * forgotten (but for its tombstone), a switched-off one shows disabled. */
static enum sync_result prepare_off(struct run *r)
{
    struct redisContext *c = r->w->redis;
    enum sync_result res = SYNC_DONE;
    if (r->gs.journal[0] && !r->gs.list_id[0]) {
        /* A create whose answer was lost may have made a list: it goes too. */
        bool adopted;
        res = lists_adopt_lost_create(r, &adopted);
        if (res != SYNC_DONE)
            return res;
    }
    if (r->gs.list_id[0] && !r->gs.list_deleted_in_cc) {
        res = lists_delete(r, r->gs.deleted ? "the group was deleted in Novi"
                                            : "sync to Constant Contact was turned off");
        if (res != SYNC_DONE)
            return res;
    }
    int rc = r->gs.deleted ? group_forget(c, r->association, r->group, r->fence)
                           : group_set_disabled(c, r->association, r->group, r->fence);
    return rc == STORE_OK ? SYNC_DONE : SYNC_REDIS;
}

/* An admin asked for a resync: a list deleted in CC (or none yet) is
 * forgotten, so that a new one is made; a list still there is read back. */
static enum sync_result prepare_resync(struct run *r)
{
    struct redisContext *c = r->w->redis;
    if (r->gs.list_deleted_in_cc || !r->gs.list_id[0]) {
        /* A group that has no list yet keeps its journal: a lost create's,
         * whose list lists_create adopts instead of making a second one. */
        bool drop_journal = r->gs.list_deleted_in_cc;
        if (group_unlink_list(c, r->association, r->group, r->fence, drop_journal) != STORE_OK)
            return SYNC_REDIS;
        r->gs.list_id[0] = '\0';
        r->gs.list_deleted_in_cc = false;
        if (drop_journal)
            r->gs.journal[0] = '\0';
    } else {
        enum sync_result res = read_list_back(r);
        if (res != SYNC_DONE || r->gs.list_deleted_in_cc)
            return res;
    }
    if (group_clear_resync(c, r->association, r->group, r->fence) != STORE_OK ||
        group_clear_error(c, r->association, r->group, r->fence) != STORE_OK)
        return SYNC_REDIS;
    return SYNC_DONE;
}

/* A synced-on group: resync or verify as asked, then its list (created if
 * need be) joins the round (r->converge). */
static enum sync_result prepare_on(struct run *r)
{
    struct redisContext *c = r->w->redis;
    enum sync_result res = SYNC_DONE;
    if (r->gs.resync)
        res = prepare_resync(r);
    else if (r->gs.list_deleted_in_cc) /* waits for an admin (resync or toggle); its counts
                                          follow the members meanwhile */
        return member_status_recount(c, r->association, r->group, r->fence, &r->gs) == STORE_OK
                   ? SYNC_DONE
                   : SYNC_REDIS;
    else if (r->gs.verify && r->gs.list_id[0])
        res = read_list_back(r); /* reconcile saw the list's size differ from what was applied */
    if (res != SYNC_DONE || r->gs.list_deleted_in_cc)
        return res;
    if ((r->gs.verify && group_clear_verify(c, r->association, r->group, r->fence) != STORE_OK) ||
        group_set_syncing(c, r->association, r->group, r->fence) != STORE_OK)
        return SYNC_REDIS;
    if (!r->gs.list_id[0]) {
        res = lists_create(r);
        if (res != SYNC_DONE || !r->gs.list_id[0])
            return res;
    }
    r->converge = true;
    return SYNC_DONE;
}

/*
 * One group's own steps before its list changes: a journal left behind is
 * recovered, a deleted or switched-off group's list is deleted, a resync or a
 * reconcile's doubt reads the list back, a new list is created. Sets
 * r->converge when the group's list changes are to run in the round.
 */
static enum sync_result prepare(struct run *r)
{
    struct redisContext *c = r->w->redis;
    if (group_load(c, r->association, r->group, &r->gs) != STORE_OK)
        return SYNC_REDIS;
    if (!r->gs.exists)
        return SYNC_DONE;
    int folding = group_is_folding(c, r->association, r->group);
    if (folding == STORE_ERR)
        return SYNC_REDIS;
    if (folding) {
        r->retry_ms = 250; /* a snapshot is being folded: sync the whole of it */
        return SYNC_RETRY;
    }
    if (r->gs.journal[0] && r->gs.list_id[0] && !r->gs.list_deleted_in_cc) {
        enum sync_result res = journal_recover(r);
        if (res != SYNC_DONE || r->gs.list_deleted_in_cc)
            return res;
    }
    if (r->gs.deleted || !r->gs.sync)
        return prepare_off(r);
    return prepare_on(r);
}

/* The token of w's lease on the group, or NULL when w holds none. */
static const char *lease_token(struct sync_worker *w, const char *association, const char *group)
{
    struct key key = key_lease(association, group);
    for (size_t i = 0; i < w->n_leases; i++)
        if (strcmp(w->leases[i].key, key.s) == 0)
            return w->leases[i].token;
    return NULL;
}

/*
 * A write refused by its fence comes back as a command error on a healthy
 * connection, which the engine's steps report as SYNC_REDIS: when the lease is
 * indeed no longer ours, the run's outcome is SYNC_LEASE_LOST, and the worker
 * neither reconnects nor touches the group again.
 */
static void notice_lost_lease(struct run *r)
{
    redisContext *c = r->w->redis;
    if (r->res != SYNC_REDIS || !r->fence || !c || c->err)
        return;
    struct lease l;
    snprintf(l.key, sizeof l.key, "%s", key_lease(r->association, r->group).s);
    snprintf(l.token, sizeof l.token, "%s", r->fence);
    if (lease_check(c, &l) != 0)
        return;
    r->res = SYNC_LEASE_LOST;
}

/* Says once per group that this process stopped its sync for another's lease. */
static void log_lost_lease(const struct run *r)
{
    if (r->res == SYNC_LEASE_LOST)
        log_warn("sync_lease_lost", LOG_STR("association", r->association),
                 LOG_STR("group", r->group),
                 LOG_STR("why", "another worker holds the group: this one stops its round"));
}

enum sync_result sync_group(struct sync_worker *w, const char *association, const char *group_id,
                            int64_t *retry_ms)
{
    enum sync_result res;
    sync_groups(w, association, &group_id, 1, &res, retry_ms);
    return res;
}

void sync_groups(struct sync_worker *w, const char *association, const char *const *group_ids,
                 size_t n, enum sync_result *results, int64_t *retry_ms)
{
    struct run *runs = calloc(n, sizeof *runs);
    struct run *converging[SYNC_MAX_GROUPS];
    struct name_set *names = NULL; /* read by the first create, shared by the others */
    size_t n_conv = 0;
    enum sync_result broken = SYNC_DONE;
    w->token_association[0] = '\0'; /* read the token afresh: it may be near expiry */
    for (size_t i = 0; runs && i < n; i++) {
        struct run *r = &runs[i];
        *r = (struct run){.w = w,
                          .association = association,
                          .group = group_ids[i],
                          .fence = lease_token(w, association, group_ids[i]),
                          .names = &names};
        /* After the worker's own failure (Redis, lease, shutdown) the others stop too. */
        r->res = broken != SYNC_DONE ? broken : prepare(r);
        notice_lost_lease(r);
        if (r->res == SYNC_REDIS || r->res == SYNC_LEASE_LOST || r->res == SYNC_STOPPED)
            broken = r->res;
        if (r->res == SYNC_DONE && r->converge && n_conv < SYNC_MAX_GROUPS)
            converging[n_conv++] = r;
    }
    if (runs && broken == SYNC_DONE && n_conv > 0)
        round_converge(converging, n_conv);
    for (size_t i = 0; runs && i < n; i++) {
        notice_lost_lease(&runs[i]);
        log_lost_lease(&runs[i]);
    }
    for (size_t i = 0; i < n; i++) {
        results[i] = runs ? runs[i].res : SYNC_RETRY;
        retry_ms[i] = runs ? runs[i].retry_ms : 1000;
    }
    lists_names_free(names);
    free(runs);
}
