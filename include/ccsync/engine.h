/*
 * engine.h - what the sync engine's files share; private to them (sync.c,
 * cccall.c, lists.c, journal.c, round.c, reconcile.c). The public face is sync.h.
 *
 *   cccall.c     one CC call: budget, token, retries, leases kept alive while
 *                waiting; a call's outcome -> the group's sync result
 *   lists.c      a group's list: create (first free name), adopt a lost create,
 *                delete, forget, mark deleted in CC, ask CC about it
 *   journal.c    the journal of requests in flight, and recovery from it
 *   round.c      the round: several groups' list changes, sharing requests
 *   reconcile.c  reconcile, and when it is due
 *   sync.c       the entry points and a group's own steps before the round
 *
 * Ownership: a struct run belongs to the call of sync_groups (or
 * sync_reconcile) that made it, for that call only; the other files borrow it
 * and write its res, retry_ms and journal fields. A struct round belongs to
 * round_converge. A struct cc_op owns its results (op->out) from cc_call until
 * cc_op_clear; a caller that keeps a pointer from them sets it NULL in the op.
 */
#ifndef CCSYNC_ENGINE_H
#define CCSYNC_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ccsync/budget.h"
#include "ccsync/ccapi.h"
#include "ccsync/fieldmap.h"
#include "ccsync/groupstore.h"
#include "ccsync/sync.h"

#define ACTIVITY_WAIT_MAX_MS (15 * 60 * 1000)
/* Activities one group may have in flight in a round (its journal's room). */
#define ROUND_MAX_ACTIVITIES 32

/* ---- cccall.c: one CC call ---- */

enum call_outcome {
    CALL_OK = 0,
    CALL_FAILED,    /* err says why (not found, conflict, permanent, unauthorized) */
    CALL_UNCERTAIN, /* may have taken effect; not retried */
    CALL_RETRY,     /* transient trouble persisted: retry the sync later */
    CALL_QUOTA,
    CALL_LEASE_LOST,
    CALL_REDIS,
    CALL_STOPPED,
};

/* The CC operations the engine runs. Adding one: a kind here, its arguments
 * and result below, a row in cccall.c's table and a case in its dispatch. */
enum cc_op_kind {
    CC_LISTS_PAGE,    /* in.page -> out.lists */
    CC_LIST_FIND,     /* in.name -> out.lists */
    CC_LIST_GET,      /* in.list_id -> out.list */
    CC_LIST_CREATE,   /* in.create -> out.list */
    CC_LIST_DELETE,   /* in.list_id -> out.activity_id */
    CC_IMPORT,        /* in.import -> out.activity_id */
    CC_REMOVE,        /* in.remove -> out.activity_id */
    CC_ACTIVITY,      /* in.activity_id -> out.activity */
    CC_ACTIVITIES,    /* (newest page) -> out.activities */
    CC_CONTACTS_PAGE, /* in.contacts -> out.contacts */
    CC_CONTACTS_FIND, /* in.email -> out.contacts */
    CC_FIELDS_GET,    /* -> *in.fields.out (§12: custom fields) */
    CC_FIELD_CREATE,  /* in.field_create -> *in.field_create.out */
    CC_TAG_FIND,      /* in.tag -> *in.tag.out, *in.tag.found */
    CC_TAG_CREATE,    /* in.tag -> *in.tag.out */
    CC_TAG_RENAME,    /* in.tag (out.id: the tag, name: its new name) */
    CC_TAGGING,       /* in.tagging -> out.activity_id */
};

struct cc_op {
    enum cc_op_kind kind;
    enum budget_class cls; /* whose share of the day it spends; 0 is class 1 (changes) */
    union {                /* borrowed for the call */
        const char *next;  /* CC_LISTS_PAGE: NULL for the first page */
        const char *name;
        const char *list_id;
        const char *activity_id;
        const char *email;
        struct {
            const char *name;
            const char *description;
        } create;
        struct {
            const struct ccapi_import_contact *contacts;
            size_t n;
            const char *list_id;
            const struct ccapi_import_fields *fields; /* NULL: none mapped (§12) */
        } import;
        struct {
            const char *const *ids;
            size_t n;
            const char *const *lists; /* every id comes off every one of these */
            size_t n_lists;
        } remove;
        struct {
            const char *const *lists; /* contacts on any of these (1..25) */
            size_t n_lists;
            const char *next;
        } contacts;
        struct {
            struct ccapi_custom_fields *out; /* the caller's */
        } fields;
        struct {
            const char *label;
            const char *type;
            struct ccapi_custom_field *out; /* the caller's */
        } field_create;
        struct {
            const char *name;
            struct ccapi_tag *out; /* the caller's */
            bool *found;
        } tag;
        struct {
            bool add;
            const char *const *tags;
            size_t n_tags;
            const char *const *ids; /* contact ids, ≤ 500 */
            size_t n;
        } tagging;
    } in;
    union { /* owned by the op: cc_op_clear */
        struct ccapi_list_page lists;
        struct ccapi_list list;
        char activity_id[CCAPI_ID_SIZE];
        struct ccapi_activity activity;
        struct ccapi_activity_page activities;
        struct ccapi_contact_page contacts;
    } out;
};

/* Runs op once it may: waits for the shared budget, loads the token, retries
 * transient trouble with backoff, refreshes the token once after a 401, and
 * keeps w's leases alive all the while. */
enum call_outcome cc_call(struct sync_worker *w, const char *association, struct cc_op *op,
                          struct ccapi_error *err);
void cc_op_clear(struct cc_op *op);

/* Sleeps in short slices so that shutdown is seen; false when stopping. */
bool engine_pause(struct sync_worker *w, long ms);

/* ---- a group's run ---- */

struct run {
    struct sync_worker *w;
    const char *association;
    const char *group; /* NULL while reconcile reads the account's lists */
    /* The token of the group's lease, which fences every write of the run
     * (groupstore.h); NULL when w holds no lease on the group (reconcile). */
    const char *fence;
    struct group_state gs;
    int64_t retry_ms;
    enum sync_result res;    /* the group's outcome so far; SYNC_DONE while it goes on */
    bool converge;           /* its list changes are to run in the round */
    enum budget_class cls;   /* the share of the day its own requests spend (budget.h) */
    struct name_set **names; /* the account's list names, shared by a round's creates
                                (owned by sync_groups; NULL: lists_create reads its own) */
    /* The journal's activities in flight, as written ("" = sent, id not known). */
    size_t n_acts;
    char acts[ROUND_MAX_ACTIVITIES][CCAPI_ID_SIZE];
    char act_ops[ROUND_MAX_ACTIVITIES][8]; /* "import" or "remove" */
};

/* The one mapping from a call's outcome to a sync result. For a group it also
 * records what the status endpoint should show and sets r->retry_ms; what is
 * the action that failed ("create the list"). */
enum sync_result call_result(struct run *r, enum call_outcome oc, const struct ccapi_error *err,
                             const char *what);

/* ---- lists.c ---- */

struct name_set;
void lists_names_free(struct name_set *s);

enum sync_result lists_create(struct run *r);
/* A journaled create whose answer was lost: links the list it made, if any. */
enum sync_result lists_adopt_lost_create(struct run *r, bool *adopted);
enum sync_result lists_delete(struct run *r, const char *why);
enum sync_result lists_forget(struct run *r, const char *why);
enum sync_result lists_mark_deleted(struct run *r);
/* Asks CC for the run's list by id: *gone when CC says it is deleted or unknown. */
enum call_outcome lists_ask(struct run *r, bool *gone, struct ccapi_error *err);
/* After a 404: is the run's list gone (marked deleted), or was it something
 * else? first is the 404 of a request on this list alone, whose error stands
 * when the list is there; NULL when the request named several lists (one
 * still there is planned again). */
enum sync_result lists_check_gone(struct run *r, const struct ccapi_error *first);

/* ---- journal.c ---- */

bool journal_write(struct run *r, const char *json);
bool journal_clear(struct run *r);
/* Before a bulk request (op "import" or "remove"): one more activity, as "". */
bool journal_push(struct run *r, const char *op);
/* After it: its id; or, when CC refused it, the entry goes. */
bool journal_name_last(struct run *r, const char *activity);
bool journal_drop_last(struct run *r);
/* A journal left by an earlier run: finds out what CC did before anything else. */
enum sync_result journal_recover(struct run *r);

/* ---- fieldsync.c: the mapped fields of a round (§12) ---- */

/* Loads the association's mapping into m and makes the custom fields CC lacks
 * (runs: the round's groups, whose members decide a new field's type). */
enum call_outcome fields_prepare(struct run *const *runs, size_t n, struct fieldmap *m);
/* The entries CC has, as the planner takes them (items: FIELDMAP_MAX of room). */
void fields_plan(const struct fieldmap *m, struct plan_field *items, struct plan_fields *pf);

/* ---- tagsync.c: group tags (§12) ---- */

/* With group tags on (m), tags the contacts on each run's converged list with its
 * group's tag and untags those ccsync tagged that left. applied[i] is runs[i]'s
 * applied state as the round ended (its last plan's load: not loaded again);
 * the contact ids tags learn are recorded in it as in Redis. */
void tags_sync(struct run *const *runs, struct applied_set *const *applied, size_t n,
               const struct fieldmap *m);

/* ---- actcheck.c: activities whose outcome only refreshes counts ---- */

/* How long after a round left an association's first outstanding activity the
 * check of all of them is due: rounds within it share one request. */
#define ACTS_CHECK_AFTER_MS (10 * 1000LL)
/* Records n activities (groups[i]'s activity_ids[i]) a round did not wait for,
 * and makes the association's check due within ACTS_CHECK_AFTER_MS. */
int actcheck_defer(struct redisContext *c, const char *association, const char *const *activity_ids,
                   const char *const *groups, size_t n, int64_t now_ms);
/* Checks the outstanding activities of one association whose check is due, if
 * any, with one GET /activities; false when Redis failed. */
bool actcheck_due(struct sync_worker *w);

/* ---- round.c ---- */

/* Reads the run's list back from CC and rebuilds its applied state; the
 * requests spend class cls's share of the day. */
enum call_outcome round_verify_list(struct run *r, enum budget_class cls, struct ccapi_error *err);

/* The contacts a read-back found on a list: emails (normalized) and contact ids,
 * owned (listed_ids_free). */
struct listed_ids {
    size_t n, cap;
    char **emails;
    char **ids;
};
void listed_ids_free(struct listed_ids *l);
/* round_verify_list for a caller that holds the list's applied state already
 * (applied: used instead of loading it again, not changed) and wants the
 * contacts found on the list (*found, freed with listed_ids_free). */
enum call_outcome round_read_list(struct run *r, enum budget_class cls,
                                  const struct applied_set *applied, struct listed_ids *found,
                                  struct ccapi_error *err);
/* Makes the lists of runs (1..SYNC_MAX_GROUPS) match their groups, together. */
void round_converge(struct run *const *runs, size_t n);

#endif
