/*
 * round.c - the round: several groups' list changes made together, so that
 * they share CC requests. Each pass plans every group (plan.c), learns the
 * contact ids its removals need (one paged read of all the lists, or a few
 * lookups by email), sends the removals merged across lists
 * (plan_merge_removes) and one import per list, waits for every activity with
 * one GET /activities, records what they did in the applied state, reads back
 * the lists that need it, and plans again until no group has anything left.
 *
 * Reading a list back (GET /contacts?lists=...) is also how recovery and
 * resync find out what CC really holds: round_verify_list.
 */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccsync/engine.h"
#include "ccsync/log.h"
#include "ccsync/plan.h"
#include "ccsync/store.h"
#include "ccsync/webhook.h"

/* One shared read names every list of a round; one merged removal may too. */
_Static_assert(SYNC_MAX_GROUPS <= CCAPI_CONTACTS_MAX_LISTS,
               "a round's lists fit one GET /contacts");
_Static_assert(SYNC_MAX_GROUPS <= CCAPI_MAX_LIST_IDS, "a round's lists fit one removal");

#define MAX_ROUNDS 8

/* ---- reading lists back: what CC really holds ---- */

static int applied_ptr_cmp(const void *pa, const void *pb)
{
    const struct applied_contact *a = *(const struct applied_contact *const *)pa;
    const struct applied_contact *b = *(const struct applied_contact *const *)pb;
    return strcmp(a->email, b->email);
}

static int applied_key_cmp(const void *key, const void *elem)
{
    return strcmp((const char *)key, (*(const struct applied_contact *const *)elem)->email);
}

/* One list being read back: its applied state, sorted by email, and which
 * entries CC showed. */
struct readback {
    struct run *r;
    const struct applied_set *applied; /* own, or the caller's */
    struct applied_set own;
    struct fields_sent sent; /* fields of an import in flight (§12) */
    const struct applied_contact **sorted;
    char *found;               /* per sorted entry */
    struct listed_ids *listed; /* the caller's: the contacts found (or NULL) */
    bool oom;                  /* listed misses some */
};

static void readback_free(struct readback *b)
{
    applied_free(&b->own);
    fields_sent_free(&b->sent);
    free(b->sorted);
    free(b->found);
}

void listed_ids_free(struct listed_ids *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->emails[i]);
        free(l->ids[i]);
    }
    free(l->emails);
    free(l->ids);
    memset(l, 0, sizeof *l);
}

static bool listed_add(struct listed_ids *l, const char *email, const char *id)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        char **e = realloc(l->emails, cap * sizeof *e);
        if (e)
            l->emails = e;
        char **d = e ? realloc(l->ids, cap * sizeof *d) : NULL;
        if (!d)
            return false;
        l->ids = d;
        l->cap = cap;
    }
    l->emails[l->n] = strdup(email);
    l->ids[l->n] = strdup(id);
    if (!l->emails[l->n] || !l->ids[l->n]) {
        free(l->emails[l->n]);
        free(l->ids[l->n]);
        return false;
    }
    l->n++;
    return true;
}

/* Sorts the applied state of the list read back: the caller's (given), or
 * loaded. */
static enum call_outcome readback_load(struct readback *b, struct run *r,
                                       const struct applied_set *given)
{
    b->r = r;
    b->applied = given ? given : &b->own;
    if ((!given && applied_load(r->w->redis, r->association, r->group, &b->own) != STORE_OK) ||
        fields_sent_load(r->w->redis, r->association, r->group, &b->sent) != STORE_OK)
        return CALL_REDIS;
    size_t m = b->applied->n;
    b->sorted = calloc(m ? m : 1, sizeof *b->sorted);
    b->found = calloc(m ? m : 1, 1);
    if (!b->sorted || !b->found)
        return CALL_RETRY;
    for (size_t i = 0; i < m; i++)
        b->sorted[i] = &b->applied->items[i];
    qsort(b->sorted, m, sizeof *b->sorted, applied_ptr_cmp);
    return CALL_OK;
}

/* Records one contact that CC shows on b's list. Returns the commands appended. */
static size_t readback_contact(redisContext *c, struct readback *b, const char *email,
                               const struct ccapi_contact *ct)
{
    bool on = false;
    for (size_t l = 0; l < ct->n_list_ids && !on; l++)
        on = strcmp(ct->list_ids[l], b->r->gs.list_id) == 0;
    if (!on)
        return 0;
    if (b->listed && !listed_add(b->listed, email, ct->contact_id))
        b->oom = true;
    const char *fn = ct->first_name, *ln = ct->last_name, *fields = "";
    const struct applied_contact **hit =
        b->applied->n ? bsearch(email, b->sorted, b->applied->n, sizeof *b->sorted, applied_key_cmp)
                      : NULL;
    if (hit) {
        b->found[hit - b->sorted] = 1;
        fn = (*hit)->first_name; /* what we sent stays the reference */
        ln = (*hit)->last_name;
        fields = (*hit)->fields;
    }
    /* an import in flight that CC ran: its fields are what CC holds now */
    const char *sent = fields_sent_get(&b->sent, email);
    if (sent != NULL)
        fields = sent;
    applied_append_put(c, b->r->association, b->r->group, b->r->fence, email, "on", ct->contact_id,
                       fn, ln, fields);
    return 1;
}

/* Records the contacts of one page that are on the lists of b. Returns the
 * number of commands appended to c. */
static size_t readback_page(redisContext *c, struct readback *b, size_t n,
                            const struct ccapi_contact_page *page)
{
    size_t pending = 0;
    for (size_t i = 0; i < page->n_contacts; i++) {
        const struct ccapi_contact *ct = &page->contacts[i];
        char email[EMAIL_BUF_SIZE];
        if (!ct->email || ct->deleted || email_normalize(ct->email, email, sizeof email) != 0)
            continue;
        for (size_t k = 0; k < n; k++)
            pending += readback_contact(c, &b[k], email, ct);
    }
    return pending;
}

/* Pages through the contacts on the lists of b, recording each. */
static enum call_outcome readback_read(struct readback *b, size_t n, enum budget_class cls,
                                       struct ccapi_error *err)
{
    struct run *r0 = b[0].r;
    redisContext *c = r0->w->redis;
    const char *lists[CCAPI_CONTACTS_MAX_LISTS];
    for (size_t k = 0; k < n; k++)
        lists[k] = b[k].r->gs.list_id;
    struct cc_op op = {.kind = CC_CONTACTS_PAGE, .cls = cls, .in.contacts = {lists, n, NULL}};
    char *next = NULL;
    enum call_outcome oc;
    for (;;) {
        op.in.contacts.next = next;
        oc = cc_call(r0->w, r0->association, &op, err);
        free(next);
        next = NULL;
        if (oc != CALL_OK)
            break;
        /* Read this page's replies now: the next cc_call talks to Redis on the
         * same connection (lease, budget) and would read them as its own. */
        if (store_drain(c, readback_page(c, b, n, &op.out.contacts)) != STORE_OK) {
            oc = CALL_REDIS;
            break;
        }
        if (!op.out.contacts.next_href)
            break;
        next = strdup(op.out.contacts.next_href);
    }
    cc_op_clear(&op);
    return oc;
}

/* ON entries CC did not show are not on the list any more: dropped. */
static enum call_outcome readback_drop_missing(struct readback *b, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        redisContext *c = b[k].r->w->redis;
        size_t pending = 0;
        for (size_t i = 0; i < b[k].applied->n; i++) {
            if (!b[k].found[i] && b[k].sorted[i]->status == APPLIED_ON_LIST) {
                applied_append_remove(c, b[k].r->association, b[k].r->group, b[k].r->fence,
                                      b[k].sorted[i]->email);
                pending++;
            }
        }
        if (store_drain(c, pending) != STORE_OK)
            return CALL_REDIS;
    }
    return CALL_OK;
}

/*
 * Reads every contact on the lists of rs (1..CCAPI_CONTACTS_MAX_LISTS groups) in
 * one paged read (GET /contacts?lists=a,b,...) and rebuilds each group's applied
 * state from it: contacts on a list are ON (with their contact_id); ON entries
 * that are not on the list any more are dropped (planned again: an unsubscribed
 * contact is then reported by CC's import and marked). UNSUB and REJ entries
 * stay. A 404 (a list gone) fails the whole read: the caller reads the lists
 * one by one to tell which. With one list, given is its applied state as the
 * caller holds it (NULL: loaded here) and listed, when not NULL, gets the
 * contacts found on it.
 */
static enum call_outcome verify_lists(struct run *const *rs, size_t n, enum budget_class cls,
                                      const struct applied_set *given, struct listed_ids *listed,
                                      struct ccapi_error *err)
{
    struct readback *b = calloc(n, sizeof *b);
    if (!b)
        return CALL_RETRY;
    enum call_outcome oc = CALL_OK;
    for (size_t k = 0; k < n && oc == CALL_OK; k++) {
        b[k].listed = n == 1 ? listed : NULL;
        oc = readback_load(&b[k], rs[k], n == 1 ? given : NULL);
    }
    if (oc == CALL_OK)
        oc = readback_read(b, n, cls, err);
    if (oc == CALL_OK && n == 1 && b[0].oom)
        oc = CALL_RETRY;
    if (oc == CALL_OK)
        oc = readback_drop_missing(b, n);
    for (size_t k = 0; k < n && oc == CALL_OK; k++)
        if (b[k].sent.n > 0 && fields_sent_clear(rs[k]->w->redis, rs[k]->association, rs[k]->group,
                                                 rs[k]->fence) != STORE_OK)
            oc = CALL_REDIS;
    for (size_t k = 0; k < n; k++)
        readback_free(&b[k]);
    free(b);
    return oc;
}

enum call_outcome round_verify_list(struct run *r, enum budget_class cls, struct ccapi_error *err)
{
    return verify_lists(&r, 1, cls, NULL, NULL, err);
}

enum call_outcome round_read_list(struct run *r, enum budget_class cls,
                                  const struct applied_set *applied, struct listed_ids *found,
                                  struct ccapi_error *err)
{
    memset(found, 0, sizeof *found);
    return verify_lists(&r, 1, cls, applied, found, err);
}

/* ---- the round's state ---- */

/* One converging group of a round, and this pass's input and plan. */
struct round_group {
    struct run *r;
    bool settled; /* its plan is empty: synced */
    bool planned;
    struct member_set members;
    struct applied_set applied;
    const struct applied_contact **by_cid; /* applied entries with a contact_id, by id */
    size_t n_by_cid;
    struct plan pl;
    bool first_sync;          /* nothing applied before this pass */
    bool readback;            /* read the list back once the activities are known */
    bool learn_ids;           /* a first sync's import finished: read the list back once synced? */
    size_t imported;          /* contacts its first sync's imports put on the list */
    bool fields_noted;        /* this pass noted fields in flight (fields_sent) */
    struct applied_set final; /* the applied state its last, empty plan saw (tags) */
    const struct plan_fields *fields; /* the round's mapped fields (§12) */
};

/* An activity the round waits for. */
struct round_activity {
    char id[CCAPI_ID_SIZE];
    bool import;
    struct round_group *g; /* import: its group and op */
    const struct plan_op *op;
    size_t batch; /* remove: its request in round.merged */
    bool done;
    bool check_unsub; /* import: CC could not add some (unsubscribed) */
    struct ccapi_activity act;
};

/* Owned by round_converge; the runs are borrowed from sync_groups. */
struct round {
    struct round_group *groups;
    size_t n;
    struct round_group **active; /* this pass's groups with work: the merge's lists */
    size_t n_active;
    struct plan_merged_removes merged;
    struct round_activity *acts;
    size_t n_acts, cap_acts;
    struct fieldmap *map; /* the association's field mapping (§12) */
    struct plan_field field_items[FIELDMAP_MAX];
    struct plan_fields fields;
};

static int cid_ptr_cmp(const void *pa, const void *pb)
{
    const struct applied_contact *a = *(const struct applied_contact *const *)pa;
    const struct applied_contact *b = *(const struct applied_contact *const *)pb;
    return strcmp(a->contact_id, b->contact_id);
}

static int cid_key_cmp(const void *key, const void *elem)
{
    return strcmp((const char *)key, (*(const struct applied_contact *const *)elem)->contact_id);
}

static const struct applied_contact *by_contact_id(const struct round_group *g, const char *cid)
{
    const struct applied_contact **hit =
        g->n_by_cid ? bsearch(cid, g->by_cid, g->n_by_cid, sizeof *g->by_cid, cid_key_cmp) : NULL;
    return hit ? *hit : NULL;
}

static int str_ptr_cmp(const void *pa, const void *pb)
{
    return strcmp(*(const char *const *)pa, *(const char *const *)pb);
}

static void group_pass_free(struct round_group *g)
{
    if (g->planned)
        plan_free(&g->pl);
    members_free(&g->members);
    applied_free(&g->applied);
    free(g->by_cid);
    g->by_cid = NULL;
    g->n_by_cid = 0;
    g->planned = false;
    g->readback = false;
    g->fields_noted = false;
}

/* A failure shared by groups: each records it in its status. */
static void groups_failed(struct round_group *const *gs, size_t n, enum call_outcome oc,
                          const struct ccapi_error *err, const char *what)
{
    for (size_t i = 0; i < n; i++)
        if (gs[i]->r->res == SYNC_DONE)
            gs[i]->r->res = call_result(gs[i]->r, oc, err, what);
}

/* Groups to sync again after retry_ms. */
static void groups_retry(struct round_group *const *gs, size_t n, int64_t retry_ms)
{
    for (size_t i = 0; i < n; i++) {
        gs[i]->r->retry_ms = retry_ms;
        gs[i]->r->res = SYNC_RETRY;
    }
}

/* ---- PLAN ---- */

/* Indexes the applied entries that have a contact id, for the removals. */
static bool index_by_contact_id(struct round_group *g)
{
    g->by_cid = calloc(g->applied.n ? g->applied.n : 1, sizeof *g->by_cid);
    if (!g->by_cid)
        return false;
    for (size_t i = 0; i < g->applied.n; i++)
        if (g->applied.items[i].contact_id && g->applied.items[i].contact_id[0])
            g->by_cid[g->n_by_cid++] = &g->applied.items[i];
    qsort(g->by_cid, g->n_by_cid, sizeof *g->by_cid, cid_ptr_cmp);
    return true;
}

/* Plans one group; false when it has nothing to send this pass. */
static bool plan_group(struct round_group *g)
{
    struct run *r = g->r;
    redisContext *c = r->w->redis;
    /* A snapshot that began folding after the group's own steps: plan all of it,
     * not the members folded so far (prepare checked before the round began). */
    int folding = group_is_folding(c, r->association, r->group);
    if (folding != 0) {
        r->res = folding == STORE_ERR ? SYNC_REDIS : SYNC_RETRY;
        r->retry_ms = 250;
        return false;
    }
    if (members_load(c, r->association, r->group, &g->members) != STORE_OK ||
        applied_load(c, r->association, r->group, &g->applied) != STORE_OK) {
        r->res = SYNC_REDIS;
        return false;
    }
    struct plan_group pg = {.id = r->group,
                            .name = r->gs.name,
                            .sync_enabled = true,
                            .list = {PLAN_LIST_ACTIVE, r->gs.list_id, r->gs.list_name},
                            .fields = g->fields};
    struct plan_error perr;
    if (plan_build(&pg, g->members.members, g->members.n, g->applied.items, g->applied.n, NULL,
                   &g->pl, &perr) != 0) {
        log_error("plan_failed", LOG_STR("association", r->association), LOG_STR("group", r->group),
                  LOG_STR("error", perr.message));
        r->retry_ms = 60000;
        r->res = SYNC_RETRY;
        return false;
    }
    g->planned = true;
    if (group_write_counts(c, r->association, r->group, r->fence, &g->pl) != STORE_OK) {
        r->res = SYNC_REDIS;
        return false;
    }
    if (g->pl.n_ops == 0) {
        bool ok = group_set_synced(c, r->association, r->group, r->fence) == STORE_OK;
        r->res = ok ? SYNC_DONE : SYNC_REDIS;
        g->settled = ok;
        /* what the list holds as the round ends: kept for the tags (round_tags) */
        applied_free(&g->final);
        g->final = g->applied;
        memset(&g->applied, 0, sizeof g->applied);
        return false;
    }
    g->first_sync = g->applied.n == 0;
    if (!index_by_contact_id(g)) {
        r->res = SYNC_RETRY;
        return false;
    }
    return true;
}

/* ---- LEARN ---- */

/* Reads back the lists of gs (1..25) in one paged read; a 404 is sorted out
 * list by list. */
static void read_back(struct round_group *const *gs, size_t n, enum budget_class cls)
{
    if (n == 0)
        return;
    struct run *rs[SYNC_MAX_GROUPS];
    for (size_t i = 0; i < n; i++)
        rs[i] = gs[i]->r;
    struct ccapi_error err;
    enum call_outcome oc = verify_lists(rs, n, cls, NULL, NULL, &err);
    if (oc == CALL_FAILED && err.status == CCAPI_NOT_FOUND) {
        for (size_t i = 0; i < n; i++) {
            oc = n == 1 ? oc : round_verify_list(rs[i], cls, &err);
            if (oc == CALL_FAILED && err.status == CCAPI_NOT_FOUND)
                rs[i]->res = lists_check_gone(rs[i], &err);
            else if (oc != CALL_OK)
                rs[i]->res = call_result(rs[i], oc, &err, "read the list");
        }
        return;
    }
    if (oc != CALL_OK)
        groups_failed(gs, n, oc, &err, "read the list");
}

/* Looks up one email's contact: its id is recorded, or, when it is not on the
 * list any more, its entry goes (nothing to remove). */
static enum call_outcome learn_one(struct run *r, const char *email, struct ccapi_error *err)
{
    redisContext *c = r->w->redis;
    struct cc_op op = {.kind = CC_CONTACTS_FIND, .in.email = email};
    enum call_outcome oc = cc_call(r->w, r->association, &op, err);
    if (oc != CALL_OK) {
        cc_op_clear(&op);
        return oc;
    }
    const struct ccapi_contact_page *page = &op.out.contacts;
    const struct ccapi_contact *ct = page->n_contacts ? &page->contacts[0] : NULL;
    bool on = false;
    for (size_t l = 0; ct && l < ct->n_list_ids; l++)
        on = on || strcmp(ct->list_ids[l], r->gs.list_id) == 0;
    int rc =
        on ? applied_set_contact_id(c, r->association, r->group, r->fence, email, ct->contact_id)
           : applied_remove(c, r->association, r->group, r->fence, email);
    cc_op_clear(&op);
    if (rc != STORE_OK)
        r->res = SYNC_REDIS;
    return CALL_OK;
}

/* LEARN: contact ids of contacts to remove, for every group that needs some.
 * A few are looked up by email; as many as a read of the lists would take, or
 * more, are learned by reading the lists together (one request per 500
 * contacts), which learns every id of those lists. */
static void learn_round(struct round_group *const *gs, size_t n)
{
    size_t emails = 0, listed = 0;
    for (size_t i = 0; i < n; i++) {
        emails += gs[i]->pl.ops[0].n_emails;
        listed += gs[i]->applied.n;
    }
    if (plan_learn_by_reading(emails, listed, CCAPI_PAGE_LIMIT)) {
        read_back(gs, n, BUDGET_CHANGES);
        return;
    }
    for (size_t k = 0; k < n; k++) {
        struct run *r = gs[k]->r;
        const struct plan_op *op = &gs[k]->pl.ops[0];
        for (size_t i = 0; i < op->n_emails && r->res == SYNC_DONE; i++) {
            struct ccapi_error err;
            enum call_outcome oc = learn_one(r, op->emails[i], &err);
            if (oc != CALL_OK) {
                groups_failed(gs + k, n - k, oc, &err, "look up contacts");
                return;
            }
        }
    }
}

/* ---- SEND ---- */

static bool round_add_activity(struct round *rd, const struct round_activity *a)
{
    if (rd->n_acts == rd->cap_acts) {
        size_t cap = rd->cap_acts ? rd->cap_acts * 2 : 16;
        struct round_activity *acts = realloc(rd->acts, cap * sizeof *acts);
        if (!acts)
            return false;
        rd->acts = acts;
        rd->cap_acts = cap;
    }
    rd->acts[rd->n_acts++] = *a;
    return true;
}

/* The emails a group's list holds or is getting, sorted: the merge must not
 * send any of them to that list's removal unless it is leaving. */
static const char **held_emails(const struct round_group *g, size_t *n)
{
    size_t cap = g->applied.n + g->pl.pending.imports + 1;
    const char **held = malloc(cap * sizeof *held);
    *n = 0;
    if (!held)
        return NULL;
    for (size_t i = 0; i < g->applied.n; i++)
        held[(*n)++] = g->applied.items[i].email;
    for (size_t i = 0; i < g->pl.n_ops; i++) {
        const struct plan_op *op = &g->pl.ops[i];
        for (size_t k = 0; op->type == PLAN_OP_IMPORT && k < op->n_contacts && *n < cap; k++)
            held[(*n)++] = op->contacts[k].email;
    }
    qsort(held, *n, sizeof *held, str_ptr_cmp);
    return held;
}

static size_t count_leaves(const struct round *rd)
{
    size_t n = 0;
    for (size_t k = 0; k < rd->n_active; k++)
        for (size_t i = 0; i < rd->active[k]->pl.n_ops; i++)
            if (rd->active[k]->pl.ops[i].type == PLAN_OP_REMOVE)
                n += rd->active[k]->pl.ops[i].n_contact_ids;
    return n;
}

/* The leaves of active group k (those whose contact ids are known). */
static size_t collect_leaves(const struct round *rd, size_t k, struct plan_leave *leaves)
{
    const struct round_group *g = rd->active[k];
    size_t n = 0;
    for (size_t i = 0; i < g->pl.n_ops; i++) {
        const struct plan_op *op = &g->pl.ops[i];
        for (size_t c = 0; op->type == PLAN_OP_REMOVE && c < op->n_contact_ids; c++) {
            const struct applied_contact *a = by_contact_id(g, op->contact_ids[c]);
            if (a)
                leaves[n++] = (struct plan_leave){a->contact_id, a->email, k};
        }
    }
    return n;
}

/* Merges the pass's removals across its groups into rd->merged. */
static bool merge_removes(struct round *rd, size_t n_leaves)
{
    struct plan_leave *leaves = calloc(n_leaves, sizeof *leaves);
    struct plan_round_list lists[SYNC_MAX_GROUPS] = {{0}};
    const char **held[SYNC_MAX_GROUPS] = {0};
    size_t n = 0;
    bool ok = leaves != NULL;
    for (size_t k = 0; ok && k < rd->n_active; k++) {
        held[k] = held_emails(rd->active[k], &lists[k].n_held);
        lists[k].held = held[k];
        ok = held[k] != NULL;
        if (ok)
            n += collect_leaves(rd, k, leaves + n);
    }
    struct plan_error perr;
    if (ok && plan_merge_removes(leaves, n, lists, rd->n_active, CCAPI_MEMBERSHIPS_MAX_CONTACTS,
                                 CCAPI_MAX_LIST_IDS, &rd->merged, &perr) != 0) {
        log_error("merge_failed", LOG_STR("association", rd->active[0]->r->association),
                  LOG_STR("error", perr.message));
        ok = false;
    }
    free(leaves);
    for (size_t k = 0; k < rd->n_active; k++)
        free(held[k]);
    return ok;
}

/* A removal request failed: each group it named learns how. */
static void remove_failed(struct round_group *const *gs, size_t n, enum call_outcome oc,
                          const struct ccapi_error *err)
{
    if (oc == CALL_UNCERTAIN) {
        /* The journals keep "": the next run waits, then reads the lists back. */
        groups_retry(gs, n, 1000);
        return;
    }
    if (oc != CALL_LEASE_LOST) {
        /* (After a lost lease another worker may own these groups: their
         * journals are its.) */
        for (size_t l = 0; l < n; l++)
            if (!journal_drop_last(gs[l]->r))
                gs[l]->r->res = SYNC_REDIS;
        if (oc == CALL_FAILED && err->status == CCAPI_NOT_FOUND) {
            for (size_t l = 0; l < n; l++)
                if (gs[l]->r->res == SYNC_DONE)
                    gs[l]->r->res = lists_check_gone(gs[l]->r, n == 1 ? err : NULL);
            return;
        }
    }
    groups_failed(gs, n, oc, err, "remove contacts from the list");
}

/* Sends merged removal b, journaled in every group it touches with the same
 * id. false when Redis failed while journaling: the round stops sending. */
static bool send_remove(struct round *rd, size_t b)
{
    const struct plan_remove_batch *pb = &rd->merged.batches[b];
    struct round_group *gs[SYNC_MAX_GROUPS];
    const char *list_ids[SYNC_MAX_GROUPS];
    for (size_t l = 0; l < pb->n_lists; l++) {
        gs[l] = rd->active[pb->lists[l]];
        list_ids[l] = gs[l]->r->gs.list_id;
        if (gs[l]->r->res != SYNC_DONE || gs[l]->r->gs.list_deleted_in_cc ||
            gs[l]->r->n_acts >= ROUND_MAX_ACTIVITIES)
            return true; /* planned again in the next pass */
    }
    for (size_t l = 0; l < pb->n_lists; l++) {
        if (!journal_push(gs[l]->r, "remove")) {
            gs[l]->r->res = SYNC_REDIS;
            return false;
        }
    }
    struct cc_op op = {.kind = CC_REMOVE,
                       .in.remove = {pb->contact_ids, pb->n_contact_ids, list_ids, pb->n_lists}};
    struct ccapi_error err;
    struct run *r0 = gs[0]->r;
    enum call_outcome oc = cc_call(r0->w, r0->association, &op, &err);
    if (oc != CALL_OK) {
        remove_failed(gs, pb->n_lists, oc, &err);
        return true;
    }
    log_info("memberships_remove_sent", LOG_STR("association", r0->association),
             LOG_INT("lists", (long long)pb->n_lists),
             LOG_INT("contacts", (long long)pb->n_contact_ids),
             LOG_STR("activity", op.out.activity_id));
    struct round_activity ra = {.import = false, .batch = b};
    snprintf(ra.id, sizeof ra.id, "%s", op.out.activity_id);
    for (size_t l = 0; l < pb->n_lists; l++)
        if (!journal_name_last(gs[l]->r, op.out.activity_id))
            gs[l]->r->res = SYNC_REDIS;
    if (!round_add_activity(rd, &ra))
        for (size_t l = 0; l < pb->n_lists; l++)
            gs[l]->r->res = SYNC_RETRY; /* the journal has it: recovered next run */
    return true;
}

/* Sends the pass's removals, merged across its groups (plan_merge_removes). */
static void send_removes(struct round *rd)
{
    size_t n_leaves = count_leaves(rd);
    if (n_leaves == 0)
        return;
    if (!merge_removes(rd, n_leaves)) {
        groups_retry(rd->active, rd->n_active, 60000);
        return;
    }
    for (size_t b = 0; b < rd->merged.n_batches; b++)
        if (!send_remove(rd, b))
            return;
}

/* Before an import with mapped fields: the digest each contact will have in CC, for
 * a read-back after a crash (groupstore.h, fields_sent). */
static bool note_fields_sent(struct round_group *g, const struct plan_op *op)
{
    struct run *r = g->r;
    if (op->n_contacts == 0 || op->contacts[0].fields[0] == '\0')
        return true;
    g->fields_noted = true;
    const char **emails = malloc(op->n_contacts * sizeof *emails);
    const char **digests = malloc(op->n_contacts * sizeof *digests);
    bool ok = emails && digests;
    for (size_t i = 0; ok && i < op->n_contacts; i++) {
        emails[i] = op->contacts[i].email;
        digests[i] = op->contacts[i].fields;
    }
    if (ok) {
        size_t commands = fields_sent_append(r->w->redis, r->association, r->group, r->fence,
                                             emails, digests, op->n_contacts);
        ok = store_drain(r->w->redis, commands) == STORE_OK;
    }
    free(emails);
    free(digests);
    return ok;
}

/* Sends one import of group g; false when the group sends nothing more. */
static bool send_import(struct round *rd, struct round_group *g, const struct plan_op *op)
{
    struct run *r = g->r;
    struct ccapi_import_contact *cs = calloc(op->n_contacts, sizeof *cs);
    struct ccapi_import_fields *fs = calloc(op->n_contacts, sizeof *fs);
    if (!cs || !fs) {
        free(cs);
        free(fs);
        r->res = SYNC_RETRY;
        return false;
    }
    for (size_t c = 0; c < op->n_contacts; c++) {
        cs[c].email = op->contacts[c].email;
        cs[c].first_name = op->contacts[c].first_name;
        cs[c].last_name = op->contacts[c].last_name;
        fs[c].n = op->contacts[c].n_fields;
        fs[c].columns = op->contacts[c].columns;
        fs[c].values = op->contacts[c].values;
    }
    if (!note_fields_sent(g, op) || !journal_push(r, "import")) {
        free(cs);
        free(fs);
        r->res = SYNC_REDIS;
        return false;
    }
    struct ccapi_error err;
    /* A first sync's import is class 2: a new list waits behind others' changes. */
    struct cc_op cop = {.kind = CC_IMPORT,
                        .cls = g->first_sync ? BUDGET_FULL_SYNC : BUDGET_CHANGES,
                        .in.import = {cs, op->n_contacts, r->gs.list_id, fs}};
    enum call_outcome oc = cc_call(r->w, r->association, &cop, &err);
    free(cs);
    free(fs);
    if (oc == CALL_UNCERTAIN) {
        r->retry_ms = 1000; /* the journal makes the next run read the list back first */
        r->res = SYNC_RETRY;
        return false;
    }
    if (oc == CALL_LEASE_LOST) {
        r->res = SYNC_LEASE_LOST; /* the journal is the new owner's now */
        return false;
    }
    if (oc != CALL_OK) {
        if (!journal_drop_last(r))
            r->res = SYNC_REDIS;
        else if (oc == CALL_FAILED && err.status == CCAPI_NOT_FOUND)
            r->res = lists_check_gone(r, &err);
        else
            r->res = call_result(r, oc, &err, "import contacts");
        return false;
    }
    log_info("contacts_import_sent", LOG_STR("association", r->association),
             LOG_STR("group", r->group), LOG_STR("list_id", r->gs.list_id),
             LOG_INT("contacts", (long long)op->n_contacts),
             LOG_STR("activity", cop.out.activity_id));
    struct round_activity ra = {.import = true, .g = g, .op = op};
    snprintf(ra.id, sizeof ra.id, "%s", cop.out.activity_id);
    if (!journal_name_last(r, cop.out.activity_id))
        r->res = SYNC_REDIS;
    else if (!round_add_activity(rd, &ra))
        r->res = SYNC_RETRY;
    return true;
}

/* Sends the pass's imports: one per list (contacts_json_import adds every
 * contact to every list it names, so lists cannot share one). */
static void send_imports(struct round *rd)
{
    for (size_t k = 0; k < rd->n_active; k++) {
        struct round_group *g = rd->active[k];
        struct run *r = g->r;
        for (size_t i = 0; i < g->pl.n_ops; i++) {
            const struct plan_op *op = &g->pl.ops[i];
            if (op->type != PLAN_OP_IMPORT)
                continue;
            if (r->res != SYNC_DONE || r->gs.list_deleted_in_cc ||
                r->n_acts >= ROUND_MAX_ACTIVITIES || !send_import(rd, g, op))
                break;
        }
    }
}

/* ---- WAIT ---- */

/* Finds the round's unfinished activities in a page of the account's recent
 * ones; *missing counts those the page does not show at all. */
static void round_match_page(struct round *rd, struct ccapi_activity_page *page, size_t *missing)
{
    *missing = 0;
    for (size_t i = 0; i < rd->n_acts; i++) {
        struct round_activity *ra = &rd->acts[i];
        if (ra->done)
            continue;
        bool seen = false;
        for (size_t k = 0; k < page->n_activities && !seen; k++) {
            struct ccapi_activity *act = &page->activities[k];
            if (strcmp(act->activity_id, ra->id) != 0)
                continue;
            seen = true;
            if (ccapi_activity_finished(act->state)) {
                ra->act = *act; /* moved: the page forgets its errors */
                act->errors = NULL;
                act->n_errors = 0;
                ra->done = true;
            }
        }
        *missing += !seen;
    }
}

/* Asks about each unfinished activity by id (it fell out of the page). */
static enum call_outcome ask_missing(struct round *rd, struct run *r, struct ccapi_error *err)
{
    for (size_t i = 0; i < rd->n_acts; i++) {
        struct round_activity *ra = &rd->acts[i];
        if (ra->done)
            continue;
        struct cc_op op = {.kind = CC_ACTIVITY, .in.activity_id = ra->id};
        enum call_outcome oc = cc_call(r->w, r->association, &op, err);
        if (oc == CALL_OK && ccapi_activity_finished(op.out.activity.state)) {
            ra->act = op.out.activity; /* moved */
            ra->done = true;
        } else {
            cc_op_clear(&op);
        }
        if (oc != CALL_OK)
            return oc;
    }
    return CALL_OK;
}

/* Waits until every activity of the round has finished, asking about all of
 * them at once (GET /activities lists the account's newest 500 with their
 * state, counts and errors); one that has fallen out of that page is asked
 * about by id. */
static enum call_outcome wait_round(struct round *rd, struct run *r, struct ccapi_error *err)
{
    long waited = 0, step = 200;
    for (;;) {
        size_t left = 0;
        for (size_t i = 0; i < rd->n_acts; i++)
            left += !rd->acts[i].done;
        if (left == 0)
            return CALL_OK;
        if (waited > ACTIVITY_WAIT_MAX_MS) {
            snprintf(err->message, sizeof err->message, "%zu activities did not finish", left);
            return CALL_RETRY;
        }
        if (!engine_pause(r->w, step))
            return CALL_STOPPED;
        waited += step;
        step = step < 2000 ? step * 2 : 2000;
        struct cc_op op = {.kind = CC_ACTIVITIES};
        enum call_outcome oc = cc_call(r->w, r->association, &op, err);
        size_t missing = 0;
        if (oc == CALL_OK)
            round_match_page(rd, &op.out.activities, &missing);
        cc_op_clear(&op);
        if (oc == CALL_OK && missing > 0)
            oc = ask_missing(rd, r, err);
        if (oc != CALL_OK)
            return oc;
    }
}

/* ---- SETTLE ---- */

/* An import has finished: its contacts are ON, but those CC named in its
 * errors (REJ). Some not added (unsubscribed in CC) or an unfinished job: the
 * list is read back. */
static bool import_settled(struct round_activity *ra)
{
    struct round_group *g = ra->g;
    struct run *r = g->r;
    redisContext *c = r->w->redis;
    const struct plan_op *op = ra->op;
    for (size_t i = 0; i < op->n_contacts; i++) {
        bool rejected = false;
        for (size_t e = 0; e < ra->act.n_errors && !rejected; e++) {
            char norm[EMAIL_BUF_SIZE];
            rejected = ra->act.errors[e].email &&
                       email_normalize(ra->act.errors[e].email, norm, sizeof norm) == 0 &&
                       strcmp(op->contacts[i].email, norm) == 0;
        }
        applied_append_put(c, r->association, r->group, r->fence, op->contacts[i].email,
                           rejected ? "rej" : "on", "", op->contacts[i].first_name,
                           op->contacts[i].last_name, op->contacts[i].fields);
    }
    bool completed = ra->act.state == CCAPI_ACTIVITY_COMPLETED;
    if (ra->act.cannot_add_to_list_count > 0 || !completed)
        g->readback = true;
    ra->check_unsub = completed && ra->act.cannot_add_to_list_count > 0;
    return store_drain(c, op->n_contacts) == STORE_OK;
}

/* Contacts of an import that CC could not add and the read-back did not find
 * on the list are unsubscribed in CC: never imported again. */
static bool mark_unsubscribed(struct round_activity *ra)
{
    struct run *r = ra->g->r;
    redisContext *c = r->w->redis;
    const struct plan_op *op = ra->op;
    for (size_t i = 0; i < op->n_contacts; i++) {
        int present = applied_has(c, r->association, r->group, op->contacts[i].email);
        if (c->err)
            return false;
        if (present == 1)
            continue;
        /* drained at once: the next HEXISTS must not read this HSET's reply */
        applied_append_put(c, r->association, r->group, r->fence, op->contacts[i].email, "unsub",
                           "", op->contacts[i].first_name, op->contacts[i].last_name,
                           op->contacts[i].fields);
        if (store_drain(c, 1) != STORE_OK)
            return false;
    }
    return true;
}

/* A removal has finished: its contacts leave the applied state of each group
 * it took them from (or, if it did not complete, those lists are read back). */
static bool remove_settled(struct round *rd, const struct round_activity *ra)
{
    const struct plan_remove_batch *pb = &rd->merged.batches[ra->batch];
    bool completed = ra->act.state == CCAPI_ACTIVITY_COMPLETED;
    for (size_t l = 0; l < pb->n_lists; l++) {
        struct round_group *g = rd->active[pb->lists[l]];
        struct run *r = g->r;
        if (r->res != SYNC_DONE)
            continue;
        if (!completed) {
            g->readback = true;
            continue;
        }
        redisContext *c = r->w->redis;
        size_t appends = 0;
        for (size_t i = 0; i < pb->n_contact_ids; i++) {
            const struct applied_contact *a = by_contact_id(g, pb->contact_ids[i]);
            if (a) {
                applied_append_remove(c, r->association, r->group, r->fence, a->email);
                appends++;
            }
        }
        if (store_drain(c, appends) != STORE_OK)
            return false;
    }
    return true;
}

/* Records what each finished activity did; false when Redis failed. */
static bool settle_activities(struct round *rd)
{
    for (size_t i = 0; i < rd->n_acts; i++) {
        struct round_activity *ra = &rd->acts[i];
        bool ok =
            ra->import ? ra->g->r->res != SYNC_DONE || import_settled(ra) : remove_settled(rd, ra);
        if (!ok)
            return false;
    }
    return true;
}

/* Everything the pass sent has finished: record it, read back what needs it. */
static void settle(struct round *rd)
{
    if (!settle_activities(rd)) {
        for (size_t k = 0; k < rd->n_active; k++)
            rd->active[k]->r->res = SYNC_REDIS;
        return;
    }
    struct round_group *back[SYNC_MAX_GROUPS];
    size_t n = 0;
    for (size_t i = 0; i < rd->n_acts; i++) {
        struct round_group *g = rd->acts[i].import ? rd->acts[i].g : NULL;
        if (g && g->first_sync) {
            g->learn_ids = true; /* see learn_ids_after_sync */
            g->imported += rd->acts[i].op->n_contacts;
        }
    }
    for (size_t k = 0; k < rd->n_active; k++) {
        if (rd->active[k]->readback && rd->active[k]->r->res == SYNC_DONE &&
            !rd->active[k]->r->gs.list_deleted_in_cc) {
            back[n++] = rd->active[k];
            rd->active[k]->learn_ids = false; /* this read learns them */
        }
    }
    read_back(back, n, BUDGET_CHANGES);
    for (size_t i = 0; i < rd->n_acts; i++) {
        struct round_activity *ra = &rd->acts[i];
        if (ra->import && ra->check_unsub && ra->g->r->res == SYNC_DONE && !mark_unsubscribed(ra))
            ra->g->r->res = SYNC_REDIS;
    }
    for (size_t k = 0; k < rd->n_active; k++) {
        struct run *r = rd->active[k]->r;
        /* What was in flight is known now (the applied state has it): the fields
         * noted for a read-back after a crash go first, then the journal. */
        if (r->res == SYNC_DONE && rd->active[k]->fields_noted &&
            fields_sent_clear(r->w->redis, r->association, r->group, r->fence) != STORE_OK)
            r->res = SYNC_REDIS;
        if (r->res == SYNC_DONE && r->n_acts > 0 && !journal_clear(r))
            r->res = SYNC_REDIS;
    }
}

/* ---- the passes ---- */

static void round_pass_free(struct round *rd)
{
    for (size_t i = 0; i < rd->n_acts; i++)
        ccapi_activity_clear(&rd->acts[i].act);
    rd->n_acts = 0;
    plan_merged_removes_free(&rd->merged);
    for (size_t i = 0; i < rd->n; i++)
        group_pass_free(&rd->groups[i]);
    rd->n_active = 0;
}

/*
 * A first sync may end by reading its list back, after the group shows synced:
 * that records every contact id, so that later leaves need no lookup. It is
 * done only where it costs at most a request per list read
 * (plan_first_sync_readback: small lists, read together), since each list's
 * first leave would cost a request anyway. A larger list is not read: a later
 * removal learns the ids it needs then (learn_round: a lookup each, or the list
 * read back when that takes no more requests). The groups read back are planned
 * once more (nothing to do, unless CC differs). Returns false when no group
 * was read.
 */
static bool learn_ids_after_sync(struct round *rd)
{
    struct round_group *cand[SYNC_MAX_GROUPS], *back[SYNC_MAX_GROUPS];
    size_t sizes[SYNC_MAX_GROUPS], n_cand = 0, n = 0;
    bool chosen[SYNC_MAX_GROUPS];
    /* Class 4: only while the day is calm; else a later leave looks its contact up. */
    bool calm = rd->n > 0 && sync_budget_calm(rd->groups[0].r->w);
    for (size_t i = 0; i < rd->n; i++) {
        struct round_group *g = &rd->groups[i];
        if (calm && g->learn_ids && g->settled && g->r->res == SYNC_DONE &&
            !g->r->gs.list_deleted_in_cc && n_cand < SYNC_MAX_GROUPS) {
            sizes[n_cand] = g->imported;
            cand[n_cand++] = g;
        }
        g->learn_ids = false;
    }
    plan_first_sync_readback(sizes, n_cand, CCAPI_PAGE_LIMIT, chosen);
    for (size_t i = 0; i < n_cand; i++)
        if (chosen[i])
            back[n++] = cand[i];
    read_back(back, n, BUDGET_REFRESH);
    for (size_t i = 0; i < n; i++)
        back[i]->settled = false;
    return n > 0;
}

/* A failure of the worker itself (Redis, lease, shutdown) ends the round for all. */
static bool round_broken(struct round *rd)
{
    enum sync_result worst = SYNC_DONE;
    for (size_t i = 0; i < rd->n; i++) {
        enum sync_result res = rd->groups[i].r->res;
        if (res == SYNC_REDIS || res == SYNC_LEASE_LOST || res == SYNC_STOPPED)
            worst = res;
    }
    if (rd->n > 0 && rd->groups[0].r->w->redis->err)
        worst = SYNC_REDIS;
    if (worst == SYNC_DONE)
        return false;
    for (size_t i = 0; i < rd->n; i++)
        if (rd->groups[i].r->res == SYNC_DONE && !rd->groups[i].settled)
            rd->groups[i].r->res = worst;
    return true;
}

/* Plans the groups still at work; the learners (PLAN_OP_LEARN first) go to
 * learners. Returns how many. */
static size_t plan_pass(struct round *rd, struct round_group **learners)
{
    size_t n_learn = 0;
    for (size_t i = 0; i < rd->n; i++) {
        struct round_group *g = &rd->groups[i];
        if (g->r->res != SYNC_DONE || g->settled || g->r->gs.list_deleted_in_cc)
            continue;
        if (!plan_group(g))
            continue;
        rd->active[rd->n_active++] = g;
        if (g->pl.ops[0].type == PLAN_OP_LEARN)
            learners[n_learn++] = g;
    }
    return n_learn;
}

/*
 * Whether nothing waits on the outcome of the pass's activities: only imports
 * (a removal's outcome drops entries), none a first sync's (which reads its list
 * back), none with mapped fields (a crash read-back needs their digests), none
 * after a read-back this run (verify: what CC rejected or could not add must be
 * recorded by this round, or the next would send it again), every group still
 * going. Their outcome then only refreshes counts (class 4): on a calm day the
 * round still waits, so that "synced" means CC holds the list; once the budget
 * binds the requests are worth more than that and the check is shared.
 */
static bool pass_outcome_is_counts(const struct round *rd)
{
    if (rd->n_acts == 0 || rd->n_active == 0 || sync_budget_calm(rd->active[0]->r->w))
        return false;
    for (size_t i = 0; i < rd->n_acts; i++) {
        const struct round_activity *ra = &rd->acts[i];
        const struct run *r = ra->import ? ra->g->r : NULL;
        if (!r || ra->g->first_sync || r->gs.verify || r->res != SYNC_DONE || !ra->id[0] ||
            ra->op->n_contacts == 0 || ra->op->contacts[0].fields[0] != '\0')
            return false;
    }
    return rd->n_acts > 0;
}

/* Records the pass's imports as done without waiting for them: their contacts
 * are on the list, and actcheck.c checks the activities later, every
 * outstanding one of the association with one request (a rejection or a
 * contact CC could not add then has the group read back). The outstanding
 * record is written before the journal goes, so a crash between keeps either. */
static bool defer_pass(struct round *rd)
{
    struct run *r0 = rd->acts[0].g->r;
    redisContext *c = r0->w->redis;
    const char **ids = calloc(rd->n_acts, sizeof *ids),
               **groups = calloc(rd->n_acts, sizeof *groups);
    bool ok = ids && groups;
    for (size_t i = 0; ok && i < rd->n_acts; i++) {
        ids[i] = rd->acts[i].id;
        groups[i] = rd->acts[i].g->r->group;
    }
    ok = ok && actcheck_defer(c, r0->association, ids, groups, rd->n_acts,
                              store_now_ns() / 1000000) == STORE_OK;
    free(ids);
    free(groups);
    for (size_t i = 0; ok && i < rd->n_acts; i++) {
        const struct round_activity *ra = &rd->acts[i];
        struct run *r = ra->g->r;
        for (size_t k = 0; k < ra->op->n_contacts; k++)
            applied_append_put(c, r->association, r->group, r->fence, ra->op->contacts[k].email,
                               "on", "", ra->op->contacts[k].first_name,
                               ra->op->contacts[k].last_name, ra->op->contacts[k].fields);
        ok = store_drain(c, ra->op->n_contacts) == STORE_OK;
    }
    for (size_t k = 0; ok && k < rd->n_active; k++)
        if (rd->active[k]->r->n_acts > 0)
            ok = journal_clear(rd->active[k]->r);
    return ok;
}

/* SEND, WAIT and SETTLE for the pass's planned changes. */
static void send_pass(struct round *rd)
{
    send_removes(rd);
    send_imports(rd);
    if (round_broken(rd))
        return;
    if (pass_outcome_is_counts(rd)) {
        if (!defer_pass(rd))
            for (size_t k = 0; k < rd->n_active; k++)
                rd->active[k]->r->res = SYNC_REDIS;
        return;
    }
    struct ccapi_error err = {0};
    enum call_outcome oc = wait_round(rd, rd->active[0]->r, &err);
    if (oc == CALL_OK) {
        settle(rd);
        return;
    }
    /* The journals keep the activities: the next run recovers. */
    for (size_t k = 0; k < rd->n_active; k++)
        if (rd->active[k]->r->n_acts > 0)
            groups_failed(&rd->active[k], 1, oc, &err, "report on a bulk request");
}

/* One pass; true when another is to follow. */
static bool round_pass(struct round *rd)
{
    struct round_group *learners[SYNC_MAX_GROUPS];
    size_t n_learn = plan_pass(rd, learners);
    if (round_broken(rd)) {
        round_pass_free(rd);
        return false;
    }
    if (rd->n_active == 0) {
        round_pass_free(rd);
        return learn_ids_after_sync(rd) && !round_broken(rd);
    }
    if (n_learn > 0)
        learn_round(learners, n_learn); /* the others go on in the next pass */
    else
        send_pass(rd);
    for (size_t k = 0; k < rd->n_active; k++) {
        struct run *r = rd->active[k]->r;
        if (r->res == SYNC_DONE &&
            group_load(r->w->redis, r->association, r->group, &r->gs) != STORE_OK)
            r->res = SYNC_REDIS;
    }
    round_pass_free(rd);
    return !round_broken(rd);
}

/* The round's mapped fields: custom fields made in CC first. False when the round
 * cannot go on (each group's result says why). */
static bool round_fields(struct round *rd, struct run *const *runs, size_t n)
{
    rd->map = malloc(sizeof *rd->map);
    if (rd->map == NULL)
        return false;
    enum call_outcome oc = fields_prepare(runs, n, rd->map);
    if (oc != CALL_OK) {
        struct ccapi_error err = {0};
        for (size_t i = 0; i < n; i++)
            if (runs[i]->res == SYNC_DONE)
                runs[i]->res = call_result(runs[i], oc, &err, "create custom fields");
        free(rd->map);
        rd->map = NULL;
        return true; /* nothing to converge: every group has its result */
    }
    fields_plan(rd->map, rd->field_items, &rd->fields);
    return true;
}

/* Group tags (§12) on the groups whose lists converged. */
static void round_tags(struct round *rd)
{
    struct run **done = calloc(rd->n ? rd->n : 1, sizeof *done);
    struct applied_set **applied = calloc(rd->n ? rd->n : 1, sizeof *applied);
    size_t n = 0;
    for (size_t i = 0; done && applied && i < rd->n; i++) {
        if (rd->groups[i].settled && rd->groups[i].r->res == SYNC_DONE) {
            applied[n] = &rd->groups[i].final;
            done[n++] = rd->groups[i].r;
        }
    }
    if (n > 0)
        tags_sync(done, applied, n, rd->map);
    free(done);
    free(applied);
}

void round_converge(struct run *const *runs, size_t n)
{
    struct round rd = {.n = n};
    rd.groups = calloc(n, sizeof *rd.groups);
    rd.active = calloc(n, sizeof *rd.active);
    bool ready = rd.groups && rd.active;
    int pass = 0;
    for (size_t i = 0; ready && i < n; i++) {
        rd.groups[i].r = runs[i];
        rd.groups[i].fields = &rd.fields;
    }
    if (ready)
        ready = round_fields(&rd, runs, n);
    while (ready && pass < MAX_ROUNDS && round_pass(&rd))
        pass++;
    if (ready)
        round_tags(&rd);
    for (size_t i = 0; i < n; i++) {
        if (!ready)
            runs[i]->res = SYNC_RETRY;
        else if (pass == MAX_ROUNDS && runs[i]->res == SYNC_DONE && !rd.groups[i].settled &&
                 !runs[i]->gs.list_deleted_in_cc) {
            runs[i]->retry_ms = 1000;
            runs[i]->res = SYNC_RETRY;
        }
    }
    for (size_t i = 0; rd.groups && i < n; i++)
        applied_free(&rd.groups[i].final);
    free(rd.acts);
    free(rd.groups);
    free(rd.active);
    free(rd.map);
}
