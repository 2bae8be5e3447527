/*
 * sync.c - runs one group's sync against Constant Contact (see sync.h).
 *
 * The loop: read the desired state (members, records) and the applied state
 * (what ccsync knows is on the list) from Redis, ask plan.c what to do, run the
 * operations, write down what they did, and plan again until nothing is left.
 *
 * Group hash fields written here (facts.c writes the group fact): state,
 * list_id, list_name, list_state (active | deleted_in_cc), err_code, err_msg,
 * err_since, last_synced_at, c_* counts, pending, journal, resync.
 * Applied hash ap:{G}: normalized email -> JSON ["on"|"unsub"|"rej", contact_id,
 * first_name, last_name].
 *
 * The journal (group field "journal") holds the CC request in flight:
 * {"op":"create","name":...} or {"op":"import"|"remove","activity":id|""}.
 * A run that finds a journal left behind (crash, timeout) first finds out what
 * CC did: it waits for the recorded activity, or reads the list back, before
 * planning anything new.
 */
#include "ccsync/sync.h"

#include <hiredis/hiredis.h>
#include <json-c/json.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "ccsync/app.h"
#include "ccsync/ccapi.h"
#include "ccsync/facts.h"
#include "ccsync/log.h"
#include "ccsync/metrics.h"
#include "ccsync/oauth.h"
#include "ccsync/plan.h"
#include "ccsync/script.h"
#include "ccsync/store.h"
#include "ccsync/webhook.h"

/* One shared read names every list of a round; one merged removal may too. */
_Static_assert(SYNC_MAX_GROUPS <= CCAPI_CONTACTS_MAX_LISTS, "a round's lists fit one GET /contacts");
_Static_assert(SYNC_MAX_GROUPS <= CCAPI_MAX_LIST_IDS, "a round's lists fit one removal");

#define MAX_ROUNDS 8
#define MAX_TRANSIENT_ATTEMPTS 5
#define LIST_NAME_MAX 255
#define LIST_REF_SIZE 17 /* 16 hex digits and the NUL */
#define ACTIVITY_WAIT_MAX_MS (15 * 60 * 1000)

/* ---- small helpers ---- */

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Sleeps in short slices so that shutdown is seen; false when stopping. */
static bool pause_ms(struct sync_worker *w, long ms)
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

static void prefix_of(const char *association, char *out, size_t size)
{
    snprintf(out, size, STORE_PREFIX "a:%s:", association);
}

struct group_state {
    bool exists;
    char name[LIST_NAME_MAX + 1];
    bool sync;
    bool deleted;
    bool resync;
    bool verify;
    char list_id[CCAPI_ID_SIZE];
    char list_name[LIST_NAME_MAX + 1];
    bool list_deleted_in_cc;
    char journal[4096];
    long long gen;
};

static void field_copy(char *dst, size_t size, const redisReply *v)
{
    dst[0] = '\0';
    if (v && v->type == REDIS_REPLY_STRING)
        snprintf(dst, size, "%.*s", (int)v->len, v->str);
}

static int load_group(redisContext *c, const char *p, const char *g, struct group_state *gs)
{
    memset(gs, 0, sizeof *gs);
    redisReply *r = redisCommand(c,
                                 "HMGET %sg:%s name sync deleted resync list_id list_name list_state "
                                 "journal gen fact_ts verify",
                                 p, g);
    if (!store_reply_ok(c, r) || r->type != REDIS_REPLY_ARRAY || r->elements != 11) {
        if (r)
            freeReplyObject(r);
        return -1;
    }
    char buf[32];
    gs->exists = r->element[9]->type == REDIS_REPLY_STRING;
    field_copy(gs->name, sizeof gs->name, r->element[0]);
    field_copy(buf, sizeof buf, r->element[1]);
    gs->sync = strcmp(buf, "1") == 0;
    field_copy(buf, sizeof buf, r->element[2]);
    gs->deleted = strcmp(buf, "1") == 0;
    field_copy(buf, sizeof buf, r->element[3]);
    gs->resync = strcmp(buf, "1") == 0;
    field_copy(gs->list_id, sizeof gs->list_id, r->element[4]);
    field_copy(gs->list_name, sizeof gs->list_name, r->element[5]);
    field_copy(buf, sizeof buf, r->element[6]);
    gs->list_deleted_in_cc = strcmp(buf, "deleted_in_cc") == 0;
    field_copy(gs->journal, sizeof gs->journal, r->element[7]);
    field_copy(buf, sizeof buf, r->element[8]);
    gs->gen = atoll(buf);
    field_copy(buf, sizeof buf, r->element[10]);
    gs->verify = strcmp(buf, "1") == 0;
    freeReplyObject(r);
    return 0;
}

/* Runs one command whose reply is not needed; false when Redis failed. */
static bool cmd(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    bool ok = store_reply_ok(c, r);
    if (r)
        freeReplyObject(r);
    return ok;
}

static bool set_error(redisContext *c, const char *p, const char *g, const char *code,
                      const char *message)
{
    char now[32];
    rfc3339_format(store_now_ns(), now, sizeof now);
    /* err_since stays at the first time this error was seen */
    return cmd(c, "HSETNX %sg:%s err_since %s", p, g, now) &&
           cmd(c, "HSET %sg:%s state error err_code %s err_msg %s", p, g, code, message);
}

static bool clear_error(redisContext *c, const char *p, const char *g)
{
    return cmd(c, "HDEL %sg:%s err_code err_msg err_since", p, g);
}

/* ---- the lease ---- */

/* KEYS: the leases; ARGV: their tokens, then the lease time. Renews each that
 * is still ours; returns how many were. */
static const char renew_script[] =
    "local n = 0\n"
    "for i, k in ipairs(KEYS) do\n"
    "  if redis.call('GET', k) == ARGV[i] then\n"
    "    redis.call('PEXPIRE', k, ARGV[#KEYS + 1])\n"
    "    n = n + 1\n"
    "  end\n"
    "end\n"
    "return n\n";

bool sync_lease_renew(struct sync_worker *w)
{
    if (w->n_leases == 0)
        return true;
    char ms[16];
    snprintf(ms, sizeof ms, "%d", w->lease_ms);
    const char *args[2 * SYNC_MAX_GROUPS + 1];
    size_t n = w->n_leases;
    for (size_t i = 0; i < n; i++) {
        args[i] = w->leases[i].key;
        args[n + i] = w->leases[i].token;
    }
    args[2 * n] = ms;
    redisReply *r = script_eval(w->redis, renew_script, (int)n, (int)(2 * n + 1), args);
    bool ok = store_reply_ok(w->redis, r) && r->type == REDIS_REPLY_INTEGER &&
              r->integer == (long long)n;
    if (r)
        freeReplyObject(r);
    return ok;
}

/* ---- one CC call: budget, token, retries ---- */

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

typedef int (*cc_fn)(struct sync_worker *w, void *arg, struct ccapi_error *err);

static bool load_token(struct sync_worker *w, const char *association, struct ccapi_error *err)
{
    if (strcmp(w->token_association, association) == 0 && w->token[0])
        return true;
    struct oauth_error oe;
    enum oauth_status rc =
        oauth_access_token(w->redis, w->app->cfg, association, w->token, sizeof w->token, &oe);
    if (rc != OAUTH_OK) {
        w->token[0] = '\0';
        w->token_association[0] = '\0';
        err->status = (rc == OAUTH_UNAUTHORIZED || rc == OAUTH_NOT_CONNECTED) ? CCAPI_UNAUTHORIZED
                                                                              : CCAPI_TRANSIENT;
        snprintf(err->message, sizeof err->message, "%s", oe.message);
        return false;
    }
    snprintf(w->token_association, sizeof w->token_association, "%s", association);
    ccapi_set_token(w->cc, w->token);
    return true;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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
            if (!sync_lease_renew(w))
                return w->redis->err ? CALL_REDIS : CALL_LEASE_LOST;
            *renewed = mono_ms();
        }
        long slice = ms > 100 ? 100 : ms;
        sleep_ms(slice);
        ms -= slice;
    }
    return atomic_load(w->stop) ? CALL_STOPPED : CALL_OK;
}

static enum call_outcome cc_call(struct sync_worker *w, const char *association, const char *op,
                                 bool may_repeat, cc_fn fn, void *arg, struct ccapi_error *err)
{
    bool refreshed = false;
    int transient = 0;
    for (;;) {
        memset(err, 0, sizeof *err);
        if (!sync_lease_renew(w))
            return w->redis->err ? CALL_REDIS : CALL_LEASE_LOST;
        int64_t renewed = mono_ms();
        if (!load_token(w, association, err)) {
            if (w->redis->err)
                return CALL_REDIS;
            return err->status == CCAPI_UNAUTHORIZED ? CALL_FAILED : CALL_RETRY;
        }
        enum ratelimit_result rl;
        for (;;) {
            int64_t wait_ns = 0;
            rl = ratelimit_acquire(w->redis, &w->budget, association, &wait_ns);
            if (rl != RATELIMIT_WAIT)
                break;
            enum call_outcome waited = wait_renewing(w, (long)(wait_ns / 1000000) + 1, &renewed);
            if (waited != CALL_OK)
                return waited;
        }
        if (rl == RATELIMIT_QUOTA) {
            err->status = CCAPI_QUOTA;
            return CALL_QUOTA;
        }
        if (rl != RATELIMIT_GRANTED)
            return CALL_REDIS;
        fn(w, arg, err);
        char labels[96];
        snprintf(labels, sizeof labels, "op=\"%s\",outcome=\"%s\"", op, ccapi_status_name(err->status));
        metrics_inc("ccsync_cc_requests_total", labels);
        switch (err->status) {
        case CCAPI_OK:
            oauth_mark_connected(w->redis, association, w->token);
            return CALL_OK;
        case CCAPI_UNAUTHORIZED: {
            if (refreshed)
                return CALL_FAILED;
            refreshed = true;
            struct oauth_error oe;
            char rejected[sizeof w->token];
            memcpy(rejected, w->token, sizeof rejected);
            enum oauth_status rc = oauth_after_unauthorized(w->redis, w->app->cfg, association,
                                                            rejected, w->token, sizeof w->token, &oe);
            memset(rejected, 0, sizeof rejected);
            if (rc != OAUTH_OK) {
                w->token[0] = '\0';
                w->token_association[0] = '\0';
                snprintf(err->message, sizeof err->message, "%s", oe.message);
                if (rc == OAUTH_REDIS_ERROR)
                    return CALL_REDIS;
                return (rc == OAUTH_UNAUTHORIZED || rc == OAUTH_NOT_CONNECTED) ? CALL_FAILED
                                                                               : CALL_RETRY;
            }
            ccapi_set_token(w->cc, w->token);
            continue;
        }
        case CCAPI_THROTTLED: {
            enum call_outcome waited = wait_renewing(
                w, err->retry_after_s > 0 ? err->retry_after_s * 1000 : 1000, &renewed);
            if (waited != CALL_OK)
                return waited;
            continue;
        }
        case CCAPI_QUOTA:
            ratelimit_pause_until_midnight(w->redis, &w->budget, NULL);
            return CALL_QUOTA;
        case CCAPI_TRANSIENT:
            if (err->maybe_applied && !may_repeat)
                return CALL_UNCERTAIN;
            if (++transient >= MAX_TRANSIENT_ATTEMPTS)
                return CALL_RETRY;
            enum call_outcome waited = wait_renewing(w, backoff_ms(transient), &renewed);
            if (waited != CALL_OK)
                return waited;
            continue;
        default:
            return CALL_FAILED;
        }
    }
}

/* ---- CC operations as cc_fn ---- */

struct list_page_call {
    const char *next;
    struct ccapi_list_page page;
};
static int do_lists_page(struct sync_worker *w, void *arg, struct ccapi_error *err)
{
    struct list_page_call *a = arg;
    ccapi_list_page_clear(&a->page);
    return ccapi_lists_page(w->cc, a->next, &a->page, err);
}

struct list_create_call {
    const char *name;
    const char *description;
    struct ccapi_list list;
};
static int do_list_create(struct sync_worker *w, void *arg, struct ccapi_error *err)
{
    struct list_create_call *a = arg;
    ccapi_list_clear(&a->list);
    return ccapi_list_create(w->cc, a->name, a->description, &a->list, err);
}

struct list_find_call {
    const char *name;
    struct ccapi_list_page page;
};
static int do_list_find(struct sync_worker *w, void *arg, struct ccapi_error *err)
{
    struct list_find_call *a = arg;
    ccapi_list_page_clear(&a->page);
    return ccapi_lists_find_by_name(w->cc, a->name, &a->page, err);
}

struct list_get_call {
    const char *list_id;
    struct ccapi_list list;
};
static int do_list_get(struct sync_worker *w, void *arg, struct ccapi_error *err)
{
    struct list_get_call *a = arg;
    ccapi_list_clear(&a->list);
    return ccapi_list_get(w->cc, a->list_id, &a->list, err);
}

struct list_delete_call {
    const char *list_id;
    char activity[CCAPI_ID_SIZE];
};
static int do_list_delete(struct sync_worker *w, void *arg, struct ccapi_error *err)
{
    struct list_delete_call *a = arg;
    return ccapi_list_delete(w->cc, a->list_id, a->activity, err);
}

struct import_call {
    const struct ccapi_import_contact *contacts;
    size_t n;
    const char *list_id;
    char activity[CCAPI_ID_SIZE];
};
static int do_import(struct sync_worker *w, void *arg, struct ccapi_error *err)
{
    struct import_call *a = arg;
    const char *lists[] = {a->list_id};
    return ccapi_contacts_import(w->cc, a->contacts, a->n, lists, 1, a->activity, err);
}

struct remove_call {
    const char *const *ids;
    size_t n;
    const char *const *lists; /* every id comes off every one of these */
    size_t n_lists;
    char activity[CCAPI_ID_SIZE];
};
static int do_remove(struct sync_worker *w, void *arg, struct ccapi_error *err)
{
    struct remove_call *a = arg;
    return ccapi_memberships_remove(w->cc, a->ids, a->n, a->lists, a->n_lists, a->activity, err);
}

struct activity_call {
    const char *id;
    struct ccapi_activity act;
};
static int do_activity(struct sync_worker *w, void *arg, struct ccapi_error *err)
{
    struct activity_call *a = arg;
    ccapi_activity_clear(&a->act);
    return ccapi_activity_get(w->cc, a->id, &a->act, err);
}

struct contacts_call {
    const char *const *lists; /* contacts on any of these (1..25) */
    size_t n_lists;
    const char *email; /* lookup by email instead of the lists */
    const char *next;
    struct ccapi_contact_page page;
};
static int do_contacts(struct sync_worker *w, void *arg, struct ccapi_error *err)
{
    struct contacts_call *a = arg;
    ccapi_contact_page_clear(&a->page);
    if (a->email)
        return ccapi_contacts_find_by_email(w->cc, a->email, &a->page, err);
    return ccapi_contacts_page(w->cc, a->lists, a->n_lists, NULL, a->next, &a->page, err);
}

/* ---- sync context for one run ---- */

/* Activities one group may have in flight in a round (its journal's room). */
#define ROUND_MAX_ACTIVITIES 32

struct run {
    struct sync_worker *w;
    const char *association;
    const char *group;
    char p[128];
    struct group_state gs;
    int64_t retry_ms;
    enum sync_result res; /* the group's outcome so far; SYNC_DONE while it goes on */
    bool converge;        /* its list changes are to run in the round */
    /* The journal's activities in flight, as written ("" = sent, id not known). */
    size_t n_acts;
    char acts[ROUND_MAX_ACTIVITIES][CCAPI_ID_SIZE];
    char act_ops[ROUND_MAX_ACTIVITIES][8]; /* "import" or "remove" */
};

/* Maps a failed call to the run's result, recording what status should show. */
static enum sync_result call_failed(struct run *r, enum call_outcome oc,
                                    const struct ccapi_error *err, const char *what)
{
    redisContext *c = r->w->redis;
    char msg[400];
    switch (oc) {
    case CALL_QUOTA:
        set_error(c, r->p, r->group, "constant_contact_quota_exhausted",
                  "Constant Contact's daily request quota is used up; syncing resumes at 00:00 UTC");
        {
            int64_t until = 0;
            ratelimit_paused_until(c, &r->w->budget, &until);
            int64_t now = store_now_ns();
            r->retry_ms = until > now ? (until - now) / 1000000 + 1000 : 60000;
        }
        return SYNC_RETRY;
    case CALL_LEASE_LOST:
        return SYNC_LEASE_LOST;
    case CALL_REDIS:
        return SYNC_REDIS;
    case CALL_STOPPED:
        return SYNC_STOPPED;
    case CALL_FAILED:
        if (err->status == CCAPI_UNAUTHORIZED) {
            set_error(c, r->p, r->group, "constant_contact_unauthorized",
                      "Constant Contact refused ccsync's access: reconnect the account (PUT new "
                      "tokens for this association)");
            r->retry_ms = 3600 * 1000;
            return SYNC_RETRY;
        }
        snprintf(msg, sizeof msg, "Constant Contact refused to %s: %s", what, err->message);
        set_error(c, r->p, r->group, "constant_contact_rejected", msg);
        r->retry_ms = 15 * 60 * 1000;
        return SYNC_RETRY;
    default: /* CALL_RETRY, CALL_UNCERTAIN */
        snprintf(msg, sizeof msg, "Constant Contact did not answer as expected (%s); retrying",
                 err->message[0] ? err->message : ccapi_status_name(err->status));
        {
            char now[32];
            rfc3339_format(store_now_ns(), now, sizeof now);
            cmd(c, "HSETNX %sg:%s err_since %s", r->p, r->group, now);
            cmd(c, "HSET %sg:%s state pending err_code constant_contact_unavailable err_msg %s",
                r->p, r->group, msg);
        }
        r->retry_ms = 0;
        return SYNC_RETRY;
    }
}

static bool write_journal(struct run *r, const char *json)
{
    snprintf(r->gs.journal, sizeof r->gs.journal, "%s", json);
    return cmd(r->w->redis, "HSET %sg:%s journal %s", r->p, r->group, json);
}

static bool clear_journal(struct run *r)
{
    r->gs.journal[0] = '\0';
    r->n_acts = 0;
    return cmd(r->w->redis, "HDEL %sg:%s journal", r->p, r->group);
}

/* Writes the journal {"op":"import"|"remove","activity":id,"activities":[...]}:
 * op and activity name the latest request, activities every activity of the
 * group's round that may be running in CC, "" for one sent whose answer (its
 * id) is not known. Written before each request and after it. */
static bool journal_save(struct run *r)
{
    if (r->n_acts == 0)
        return clear_journal(r);
    json_object *j = json_object_new_object();
    json_object *a = json_object_new_array();
    for (size_t i = 0; i < r->n_acts; i++)
        json_object_array_add(a, json_object_new_string(r->acts[i]));
    json_object_object_add(j, "op", json_object_new_string(r->act_ops[r->n_acts - 1]));
    json_object_object_add(j, "activity", json_object_new_string(r->acts[r->n_acts - 1]));
    json_object_object_add(j, "activities", a);
    bool ok = write_journal(r, json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN));
    json_object_put(j);
    return ok;
}

/* Before a request (op "import" or "remove"): one more activity, journaled as "". */
static bool journal_push(struct run *r, const char *op)
{
    snprintf(r->act_ops[r->n_acts], sizeof r->act_ops[0], "%s", op);
    r->acts[r->n_acts++][0] = '\0';
    return journal_save(r);
}

/* After it: its id (or, when CC refused it, nothing: the entry goes). */
static bool journal_name_last(struct run *r, const char *activity)
{
    snprintf(r->acts[r->n_acts - 1], sizeof r->acts[0], "%s", activity);
    return journal_save(r);
}

static bool journal_drop_last(struct run *r)
{
    r->n_acts--;
    return journal_save(r);
}

/* Waits until a CC activity finishes; fills *act. */
static enum call_outcome wait_activity(struct run *r, const char *activity_id,
                                       struct ccapi_activity *act, struct ccapi_error *err)
{
    long waited = 0, step = 200;
    struct activity_call a = {.id = activity_id};
    for (;;) {
        if (!pause_ms(r->w, step)) {
            ccapi_activity_clear(&a.act);
            return CALL_STOPPED;
        }
        waited += step;
        enum call_outcome oc = cc_call(r->w, r->association, "activity_get", true, do_activity, &a, err);
        if (oc != CALL_OK) {
            ccapi_activity_clear(&a.act);
            return oc;
        }
        if (ccapi_activity_finished(a.act.state)) {
            *act = a.act;
            return CALL_OK;
        }
        if (waited > ACTIVITY_WAIT_MAX_MS) {
            ccapi_activity_clear(&a.act);
            snprintf(err->message, sizeof err->message, "activity %.64s did not finish", activity_id);
            return CALL_RETRY;
        }
        step = step < 2000 ? step * 2 : 2000;
    }
}

/* ---- applied state ---- */

static char *applied_json(const char *st, const char *cid, const char *fn, const char *ln)
{
    json_object *a = json_object_new_array();
    json_object_array_add(a, json_object_new_string(st));
    json_object_array_add(a, json_object_new_string(cid ? cid : ""));
    json_object_array_add(a, json_object_new_string(fn ? fn : ""));
    json_object_array_add(a, json_object_new_string(ln ? ln : ""));
    char *s = strdup(json_object_to_json_string_ext(a, JSON_C_TO_STRING_PLAIN));
    json_object_put(a);
    return s;
}

struct applied_set {
    size_t n;
    struct applied_contact *items;
    char **strings; /* owned: 4 per item */
};

static void applied_free(struct applied_set *s)
{
    for (size_t i = 0; i < s->n * 4; i++)
        free(s->strings[i]);
    free(s->strings);
    free(s->items);
    memset(s, 0, sizeof *s);
}

static int load_applied(redisContext *c, const char *p, const char *g, struct applied_set *s)
{
    memset(s, 0, sizeof *s);
    redisReply *r = redisCommand(c, "HGETALL %sap:%s", p, g);
    if (!store_reply_ok(c, r) || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        return -1;
    }
    size_t n = r->elements / 2;
    s->items = calloc(n ? n : 1, sizeof *s->items);
    s->strings = calloc(n ? n * 4 : 1, sizeof *s->strings);
    if (!s->items || !s->strings) {
        freeReplyObject(r);
        applied_free(s);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        json_object *a = json_tokener_parse(r->element[2 * i + 1]->str);
        if (!a || !json_object_is_type(a, json_type_array) || json_object_array_length(a) != 4) {
            json_object_put(a);
            continue;
        }
        char **str = &s->strings[s->n * 4];
        str[0] = strdup(r->element[2 * i]->str);
        for (int k = 1; k < 4; k++)
            str[k] = strdup(json_object_get_string(json_object_array_get_idx(a, (size_t)k)));
        const char *st = json_object_get_string(json_object_array_get_idx(a, 0));
        struct applied_contact *ac = &s->items[s->n++];
        ac->email = str[0];
        ac->contact_id = str[1];
        ac->first_name = str[2];
        ac->last_name = str[3];
        ac->status = strcmp(st, "unsub") == 0 ? APPLIED_UNSUBSCRIBED
                     : strcmp(st, "rej") == 0 ? APPLIED_REJECTED
                                              : APPLIED_ON_LIST;
        json_object_put(a);
    }
    freeReplyObject(r);
    return 0;
}

/* ---- members ---- */

struct member_set {
    size_t n;
    struct member_record *records;
    struct plan_member *members;
};

static void members_free(struct member_set *s)
{
    for (size_t i = 0; i < s->n; i++)
        member_record_clear(&s->records[i]);
    free(s->records);
    free(s->members);
    memset(s, 0, sizeof *s);
}

static int64_t ts_key_to_ns(const char *key)
{
    long long s = 0, ns = 0;
    sscanf(key, "%lld.%lld", &s, &ns);
    return (s - 62135596800LL) * 1000000000LL + ns;
}

static int load_members(redisContext *c, const char *p, const char *g, struct member_set *s)
{
    memset(s, 0, sizeof *s);
    redisReply *r = redisCommand(c, "HGETALL %sgm:%s", p, g);
    if (!store_reply_ok(c, r) || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        return -1;
    }
    size_t n = r->elements / 2;
    s->records = calloc(n ? n : 1, sizeof *s->records);
    s->members = calloc(n ? n : 1, sizeof *s->members);
    int64_t *joins = calloc(n ? n : 1, sizeof *joins);
    const char **ids = calloc(n ? n : 1, sizeof *ids);
    size_t k = 0;
    int rc = 0;
    if (!s->records || !s->members || !joins || !ids) {
        rc = -1;
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        const char *v = r->element[2 * i + 1]->str;
        if (v[0] != '1' || strlen(v) < 47)
            continue;
        ids[k] = r->element[2 * i]->str;
        joins[k] = ts_key_to_ns(v + 25);
        redisAppendCommand(c, "HGET %sm:%s rec", p, ids[k]);
        k++;
    }
    for (size_t i = 0; i < k; i++) {
        redisReply *rec = NULL;
        if (redisGetReply(c, (void **)&rec) != REDIS_OK || !rec) {
            rc = -1;
            goto done;
        }
        if (rec->type == REDIS_REPLY_STRING &&
            facts_record_parse(rec->str, ids[i], &s->records[s->n]) == 0) {
            s->members[s->n].join_ts_ns = joins[i];
            s->n++;
        }
        freeReplyObject(rec);
    }
    for (size_t i = 0; i < s->n; i++)
        s->members[i].rec = &s->records[i];
done:
    free(joins);
    free(ids);
    freeReplyObject(r);
    if (rc != 0)
        members_free(s);
    return rc;
}

/* ---- list creation: the first free name of NAME, NAME - 1, NAME - 2, ... ---- */

#define ACCOUNT_MAX_LISTS 1000

struct name_set {
    size_t n, cap;
    char **names;
    size_t active;
};

static void names_free(struct name_set *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->names[i]);
    free(s->names);
    memset(s, 0, sizeof *s);
}

static bool names_has(const struct name_set *s, const char *name)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcasecmp(s->names[i], name) == 0)
            return true;
    return false;
}

/* Reads every active list's name (one request per 500 lists). */
static enum call_outcome read_list_names(struct run *r, struct name_set *s, struct ccapi_error *err)
{
    struct list_page_call a = {0};
    char *next = NULL;
    enum call_outcome oc;
    do {
        a.next = next;
        oc = cc_call(r->w, r->association, "lists_page", true, do_lists_page, &a, err);
        free(next);
        next = NULL;
        if (oc != CALL_OK)
            break;
        for (size_t i = 0; i < a.page.n_lists; i++) {
            if (a.page.lists[i].deleted)
                continue;
            if (s->n == s->cap) {
                s->cap = s->cap ? s->cap * 2 : 64;
                s->names = realloc(s->names, s->cap * sizeof *s->names);
            }
            s->names[s->n++] = strdup(a.page.lists[i].name);
            s->active++;
        }
        if (a.page.next_href)
            next = strdup(a.page.next_href);
    } while (next);
    ccapi_list_page_clear(&a.page);
    return oc;
}

static void candidate_name(const char *base, int n, char *out, size_t size)
{
    if (n == 0)
        snprintf(out, size, "%.*s", LIST_NAME_MAX, base);
    else
        snprintf(out, size, "%.*s - %d", LIST_NAME_MAX - 12, base, n);
}

static bool link_list(struct run *r, const char *list_id, const char *name)
{
    redisContext *c = r->w->redis;
    snprintf(r->gs.list_id, sizeof r->gs.list_id, "%s", list_id);
    snprintf(r->gs.list_name, sizeof r->gs.list_name, "%s", name);
    r->gs.list_deleted_in_cc = false;
    return cmd(c, "HSET %sg:%s list_id %s list_name %s list_state active", r->p, r->group, list_id,
               name) &&
           cmd(c, "DEL %sap:%s", r->p, r->group) &&
           facts_audit(c, r->association, r->group, "list_created", list_id, name, "") == 0 &&
           clear_journal(r);
}

/* Finds out whether a create whose answer was lost made the list. */
/*
 * A create whose answer was lost: adopts the list it made, if it made one. The
 * list is known by the reference its description carries, so a list of the
 * same name that someone else made meanwhile is never taken for it. (A journal
 * without a reference, from an older version, adopts by name.)
 */
static enum call_outcome recover_create(struct run *r, const char *name, const char *ref,
                                        bool *adopted, struct ccapi_error *err)
{
    struct list_find_call f = {.name = name};
    *adopted = false;
    enum call_outcome oc = cc_call(r->w, r->association, "lists_find", true, do_list_find, &f, err);
    if (oc == CALL_OK) {
        for (size_t i = 0; i < f.page.n_lists; i++) {
            const struct ccapi_list *l = &f.page.lists[i];
            bool ours = !ref[0] || (l->description && strstr(l->description, ref));
            if (!l->deleted && strcmp(l->name, name) == 0 && ours) {
                if (!link_list(r, l->list_id, l->name))
                    oc = CALL_REDIS;
                *adopted = true;
                break;
            }
        }
    }
    ccapi_list_page_clear(&f.page);
    return oc;
}

/* A reference unique to one create request, for its list's description. */
static void new_create_ref(char out[LIST_REF_SIZE])
{
    unsigned char raw[8];
    if (RAND_bytes(raw, sizeof raw) != 1) {
        /* only makes the reference guessable, never reused within a run */
        int64_t now = store_now_ns();
        memcpy(raw, &now, sizeof raw);
    }
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
}

/* A journaled create whose answer was lost: links the list it made, if it made
 * one (*adopted). Nothing to do without such a journal. */
static enum sync_result adopt_lost_create(struct run *r, bool *adopted)
{
    enum sync_result res = SYNC_DONE;
    json_object *j = r->gs.journal[0] ? json_tokener_parse(r->gs.journal) : NULL;
    json_object *v;
    *adopted = false;
    if (j && json_object_object_get_ex(j, "op", &v) &&
        strcmp(json_object_get_string(v), "create") == 0 &&
        json_object_object_get_ex(j, "name", &v)) {
        char name[LIST_NAME_MAX + 1], ref[LIST_REF_SIZE] = "";
        snprintf(name, sizeof name, "%s", json_object_get_string(v));
        if (json_object_object_get_ex(j, "ref", &v))
            snprintf(ref, sizeof ref, "%s", json_object_get_string(v));
        struct ccapi_error err = {0};
        enum call_outcome oc = recover_create(r, name, ref, adopted, &err);
        if (oc != CALL_OK)
            res = call_failed(r, oc, &err, "look up a list");
        else if (*adopted)
            log_info("list_adopted", LOG_STR("association", r->association),
                     LOG_STR("group", r->group), LOG_STR("list_id", r->gs.list_id));
    }
    json_object_put(j);
    return res;
}

static enum sync_result create_list(struct run *r)
{
    struct ccapi_error err = {0};
    enum call_outcome oc;
    bool adopted;
    enum sync_result adopt = adopt_lost_create(r, &adopted);
    if (adopt != SYNC_DONE || adopted)
        return adopt;

    struct name_set names = {0};
    oc = read_list_names(r, &names, &err);
    if (oc != CALL_OK) {
        names_free(&names);
        return call_failed(r, oc, &err, "read the lists");
    }
    if (names.active >= ACCOUNT_MAX_LISTS) {
        names_free(&names);
        set_error(r->w->redis, r->p, r->group, "list_limit_reached",
                  "the Constant Contact account has 1,000 lists, its limit: delete lists there, "
                  "then resync this group");
        r->retry_ms = 3600 * 1000;
        return SYNC_RETRY;
    }
    enum sync_result result = SYNC_RETRY;
    for (int n = 0; n < 10000; n++) {
        char name[LIST_NAME_MAX + 1];
        candidate_name(r->gs.name[0] ? r->gs.name : r->group, n, name, sizeof name);
        if (names_has(&names, name))
            continue;
        char ref[LIST_REF_SIZE], description[128];
        new_create_ref(ref);
        snprintf(description, sizeof description,
                 "Kept in step with a Novi group by ccsync (ref %s)", ref);
        json_object *jn = json_object_new_object();
        json_object_object_add(jn, "op", json_object_new_string("create"));
        json_object_object_add(jn, "name", json_object_new_string(name));
        json_object_object_add(jn, "ref", json_object_new_string(ref));
        bool journaled = write_journal(r, json_object_to_json_string(jn));
        json_object_put(jn);
        if (!journaled) {
            result = SYNC_REDIS;
            break;
        }
        struct list_create_call a = {.name = name, .description = description};
        oc = cc_call(r->w, r->association, "list_create", false, do_list_create, &a, &err);
        if (oc == CALL_OK) {
            result = link_list(r, a.list.list_id, a.list.name) ? SYNC_DONE : SYNC_REDIS;
            log_info("list_created", LOG_STR("association", r->association),
                     LOG_STR("group", r->group), LOG_STR("list_id", a.list.list_id),
                     LOG_STR("list_name", a.list.name));
            ccapi_list_clear(&a.list);
            break;
        }
        ccapi_list_clear(&a.list);
        if (oc == CALL_FAILED && err.status == CCAPI_CONFLICT) {
            names.names = realloc(names.names, (names.n + 1) * sizeof *names.names);
            names.names[names.n++] = strdup(name); /* taken meanwhile: try the next name */
            continue;
        }
        if (oc == CALL_UNCERTAIN) {
            /* The journal keeps the name: the next run looks it up before creating. */
            r->retry_ms = 1000;
            result = SYNC_RETRY;
            break;
        }
        clear_journal(r);
        result = call_failed(r, oc, &err, "create the list");
        break;
    }
    names_free(&names);
    return result;
}

/* ---- reading the list back: what CC really holds ---- */

/* One applied entry, written or replaced. */
static void put_applied(redisContext *c, const char *p, const char *g, const char *email,
                        const char *st, const char *cid, const char *fn, const char *ln)
{
    char *v = applied_json(st, cid, fn, ln);
    redisAppendCommand(c, "HSET %sap:%s %s %s", p, g, email, v);
    free(v);
}

/* Reads the replies of *pending appended commands; false when Redis failed. */
static bool flush_replies(redisContext *c, size_t *pending)
{
    bool ok = true;
    for (; *pending > 0; (*pending)--) {
        redisReply *rep = NULL;
        if (redisGetReply(c, (void **)&rep) != REDIS_OK)
            ok = false;
        if (rep)
            freeReplyObject(rep);
        if (!ok) {
            *pending = 0;
            break;
        }
    }
    return ok;
}

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
    struct applied_set applied;
    const struct applied_contact **sorted;
    char *found; /* per sorted entry */
};

static void readback_free(struct readback *b)
{
    applied_free(&b->applied);
    free(b->sorted);
    free(b->found);
}

/* Records the contacts of one page that are on b's list. Returns the number of
 * commands appended to c. */
static size_t readback_page(redisContext *c, struct readback *b, size_t n,
                            const struct ccapi_contact_page *page)
{
    size_t pending = 0;
    for (size_t i = 0; i < page->n_contacts; i++) {
        const struct ccapi_contact *ct = &page->contacts[i];
        char email[EMAIL_BUF_SIZE];
        if (!ct->email || ct->deleted || email_normalize(ct->email, email, sizeof email) != 0)
            continue;
        for (size_t k = 0; k < n; k++) {
            bool on = false;
            for (size_t l = 0; l < ct->n_list_ids && !on; l++)
                on = strcmp(ct->list_ids[l], b[k].r->gs.list_id) == 0;
            if (!on)
                continue;
            const char *fn = ct->first_name, *ln = ct->last_name;
            const struct applied_contact **hit = b[k].applied.n
                                                     ? bsearch(email, b[k].sorted, b[k].applied.n,
                                                               sizeof *b[k].sorted, applied_key_cmp)
                                                     : NULL;
            if (hit) {
                b[k].found[hit - b[k].sorted] = 1;
                fn = (*hit)->first_name; /* what we sent stays the reference */
                ln = (*hit)->last_name;
            }
            put_applied(c, b[k].r->p, b[k].r->group, email, "on", ct->contact_id, fn, ln);
            pending++;
        }
    }
    return pending;
}

/*
 * Reads every contact on the lists of rs (1..CCAPI_CONTACTS_MAX_LISTS groups) in
 * one paged read (GET /contacts?lists=a,b,...) and rebuilds each group's applied
 * state from it: contacts on a list are ON (with their contact_id); ON entries
 * that are not on the list any more are dropped (planned again: an unsubscribed
 * contact is then reported by CC's import and marked). UNSUB and REJ entries
 * stay. A 404 (a list gone) fails the whole read: the caller reads the lists
 * one by one to tell which.
 */
static enum call_outcome verify_lists(struct run *const *rs, size_t n, struct ccapi_error *err)
{
    redisContext *c = rs[0]->w->redis;
    struct readback *b = calloc(n, sizeof *b);
    const char *lists[CCAPI_CONTACTS_MAX_LISTS];
    enum call_outcome oc = CALL_OK;
    if (!b)
        return CALL_RETRY;
    for (size_t k = 0; k < n && oc == CALL_OK; k++) {
        b[k].r = rs[k];
        lists[k] = rs[k]->gs.list_id;
        if (load_applied(c, rs[k]->p, rs[k]->group, &b[k].applied) != 0) {
            oc = CALL_REDIS;
            break;
        }
        size_t m = b[k].applied.n;
        b[k].sorted = calloc(m ? m : 1, sizeof *b[k].sorted);
        b[k].found = calloc(m ? m : 1, 1);
        if (!b[k].sorted || !b[k].found) {
            oc = CALL_RETRY;
            break;
        }
        for (size_t i = 0; i < m; i++)
            b[k].sorted[i] = &b[k].applied.items[i];
        qsort(b[k].sorted, m, sizeof *b[k].sorted, applied_ptr_cmp);
    }
    struct contacts_call a = {.lists = lists, .n_lists = n};
    char *next = NULL;
    size_t pending = 0;
    while (oc == CALL_OK) {
        a.next = next;
        oc = cc_call(rs[0]->w, rs[0]->association, "contacts_page", true, do_contacts, &a, err);
        free(next);
        next = NULL;
        if (oc != CALL_OK)
            break;
        pending += readback_page(c, b, n, &a.page);
        /* Read this page's replies now: the next cc_call talks to Redis on the
         * same connection (lease, budget) and would read them as its own. */
        if (!flush_replies(c, &pending)) {
            oc = CALL_REDIS;
            break;
        }
        if (!a.page.next_href)
            break;
        next = strdup(a.page.next_href);
    }
    ccapi_contact_page_clear(&a.page);
    for (size_t k = 0; oc == CALL_OK && k < n; k++) {
        for (size_t i = 0; i < b[k].applied.n; i++) {
            if (!b[k].found[i] && b[k].sorted[i]->status == APPLIED_ON_LIST) {
                redisAppendCommand(c, "HDEL %sap:%s %s", rs[k]->p, rs[k]->group,
                                   b[k].sorted[i]->email);
                pending++;
            }
        }
        if (!flush_replies(c, &pending))
            oc = CALL_REDIS;
    }
    for (size_t k = 0; k < n; k++)
        readback_free(&b[k]);
    free(b);
    return oc;
}

static enum call_outcome verify_list(struct run *r, struct ccapi_error *err)
{
    return verify_lists(&r, 1, err);
}

static const char set_cid_script[] = "local v = redis.call('HGET', KEYS[1], ARGV[1])\n"
                                     "if not v then return 0 end\n"
                                     "local a = cjson.decode(v)\n"
                                     "a[2] = ARGV[2]\n"
                                     "redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(a))\n"
                                     "return 1\n";

/* ---- the list was deleted in CC ---- */

static enum sync_result mark_list_deleted(struct run *r)
{
    redisContext *c = r->w->redis;
    /* Callers go on (prepare, the round's later requests): nothing more is sent
     * to this list, or a 400 on it would replace this error with another. */
    r->gs.list_deleted_in_cc = true;
    bool ok = cmd(c, "HSET %sg:%s list_state deleted_in_cc", r->p, r->group) &&
              set_error(c, r->p, r->group, "list_deleted_in_constant_contact",
                        "The Constant Contact list for this group was deleted in Constant "
                        "Contact. ccsync will not recreate it on its own: resync the group "
                        "(or turn its sync off and on) to create a new list.") &&
              facts_audit(c, r->association, r->group, "list_missing", r->gs.list_id,
                          r->gs.list_name, "the list is gone from Constant Contact") == 0 &&
              clear_journal(r);
    log_warn("list_deleted_in_constant_contact", LOG_STR("association", r->association),
             LOG_STR("group", r->group), LOG_STR("list_id", r->gs.list_id));
    return ok ? SYNC_DONE : SYNC_REDIS;
}

/* Asks CC for the run's list by id: *gone when CC says it is deleted or unknown. */
static enum call_outcome ask_list(struct run *r, bool *gone, struct ccapi_error *err)
{
    struct list_get_call a = {.list_id = r->gs.list_id};
    enum call_outcome oc = cc_call(r->w, r->association, "list_get", true, do_list_get, &a, err);
    *gone = (oc == CALL_FAILED && err->status == CCAPI_NOT_FOUND) || (oc == CALL_OK && a.list.deleted);
    ccapi_list_clear(&a.list);
    return oc;
}

/* After a 404 on a list operation: is the list gone, or was it something else? */
static enum sync_result check_list_gone(struct run *r, const struct ccapi_error *first)
{
    struct ccapi_error err;
    bool gone;
    enum call_outcome oc = ask_list(r, &gone, &err);
    if (gone)
        return mark_list_deleted(r);
    if (oc != CALL_OK)
        return call_failed(r, oc, &err, "read the list");
    return call_failed(r, CALL_FAILED, first, "update the list");
}

/* ---- the bulk operations ---- */

static bool flush_appends(redisContext *c, size_t n)
{
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        redisReply *rep = NULL;
        if (redisGetReply(c, (void **)&rep) != REDIS_OK)
            return false;
        ok = ok && rep && rep->type != REDIS_REPLY_ERROR;
        freeReplyObject(rep);
    }
    return ok;
}

/* The group's list is gone from CC (deleted by ccsync): forget it, audited. */
static enum sync_result forget_list(struct run *r, const char *why)
{
    redisContext *c = r->w->redis;
    bool ok = facts_audit(c, r->association, r->group, "list_deleted", r->gs.list_id,
                          r->gs.list_name, why) == 0 &&
              cmd(c, "HDEL %sg:%s list_id list_name list_state journal", r->p, r->group) &&
              cmd(c, "DEL %sap:%s", r->p, r->group);
    log_info("list_deleted", LOG_STR("association", r->association), LOG_STR("group", r->group),
             LOG_STR("list_id", r->gs.list_id), LOG_STR("reason", why));
    r->gs.list_id[0] = '\0';
    r->gs.journal[0] = '\0';
    return ok ? SYNC_DONE : SYNC_REDIS;
}

/* Deletes the group's list; journaled first, so that a process that dies with
 * the DELETE in flight leaves the next one a note to find out what CC did. */
static enum sync_result delete_list(struct run *r, const char *why)
{
    json_object *jn = json_object_new_object();
    json_object_object_add(jn, "op", json_object_new_string("delete"));
    json_object_object_add(jn, "list_id", json_object_new_string(r->gs.list_id));
    json_object_object_add(jn, "why", json_object_new_string(why));
    bool journaled = write_journal(r, json_object_to_json_string(jn));
    json_object_put(jn);
    if (!journaled)
        return SYNC_REDIS;
    struct ccapi_error err;
    struct list_delete_call a = {.list_id = r->gs.list_id};
    enum call_outcome oc = cc_call(r->w, r->association, "list_delete", true, do_list_delete, &a, &err);
    if (oc == CALL_UNCERTAIN) {
        r->retry_ms = 1000; /* the journal makes the next run look the list up first */
        return SYNC_RETRY;
    }
    if (oc != CALL_OK && !(oc == CALL_FAILED && err.status == CCAPI_NOT_FOUND)) {
        clear_journal(r);
        return call_failed(r, oc, &err, "delete the list");
    }
    return forget_list(r, why);
}


/* ---- the run ---- */

static bool write_counts(struct run *r, const struct plan *pl)
{
    const struct plan_counts *k = &pl->counts;
    return cmd(r->w->redis,
               "HSET %sg:%s c_members %lld c_no_email %lld c_invalid_email %lld "
               "c_duplicate_email %lld c_do_not_email %lld c_unsubscribed %lld c_rejected %lld "
               "c_in_list %lld pending %lld",
               r->p, r->group, (long long)k->members, (long long)k->no_email,
               (long long)k->invalid_email, (long long)k->duplicate_email,
               (long long)k->do_not_email, (long long)k->unsubscribed, (long long)k->rejected,
               (long long)k->in_list, (long long)(pl->pending.imports + pl->pending.removes));
}

struct activities_call {
    struct ccapi_activity_page page;
};
static int do_activities(struct sync_worker *w, void *arg, struct ccapi_error *err)
{
    struct activities_call *a = arg;
    ccapi_activity_page_clear(&a->page);
    return ccapi_activities_page(w->cc, NULL, &a->page, err);
}

/* Waits (bounded) until the account's recent activities have all finished. */
static enum call_outcome wait_account_activities(struct run *r, struct ccapi_error *err)
{
    long waited = 0, step = 500;
    for (;;) {
        struct activities_call a = {0};
        enum call_outcome oc =
            cc_call(r->w, r->association, "activities_list", true, do_activities, &a, err);
        bool busy = false;
        for (size_t i = 0; oc == CALL_OK && i < a.page.n_activities; i++)
            busy = busy || !ccapi_activity_finished(a.page.activities[i].state);
        ccapi_activity_page_clear(&a.page);
        if (oc != CALL_OK || !busy)
            return oc;
        if (waited >= ACTIVITY_WAIT_MAX_MS) {
            snprintf(err->message, sizeof err->message, "activities still running after %ld s",
                     waited / 1000);
            return CALL_RETRY;
        }
        if (!pause_ms(r->w, step))
            return CALL_STOPPED;
        waited += step;
        step = step < 4000 ? step * 2 : 4000;
    }
}

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
        return call_failed(r, oc, &err, "list recent activities");
    bool gone;
    oc = ask_list(r, &gone, &err);
    log_info("sync_recovered", LOG_STR("association", r->association), LOG_STR("group", r->group),
             LOG_STR("journal", "delete"), LOG_STR("list_id", r->gs.list_id),
             LOG_STR("list", gone ? "deleted" : oc == CALL_OK ? "still there" : "unknown"));
    if (gone)
        return forget_list(r, why);
    if (oc != CALL_OK)
        return call_failed(r, oc, &err, "read the list");
    return clear_journal(r) ? SYNC_DONE : SYNC_REDIS;
}

/* A journal left by an earlier run: find out what CC did before anything else.
 * {"op":"import"|"remove","activity":id or "","activities":[id or ""...]} or
 * {"op":"delete","list_id","why"}; older versions wrote no "activities" (one
 * request in flight). */
static enum sync_result recover(struct run *r)
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
        return SYNC_DONE; /* "create" is recovered by create_list */
    }
    size_t n = 0;
    char acts[ROUND_MAX_ACTIVITIES][CCAPI_ID_SIZE];
    if (json_object_object_get_ex(j, "activities", &v) && json_object_is_type(v, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(v) && n < ROUND_MAX_ACTIVITIES; i++)
            snprintf(acts[n++], sizeof acts[0], "%s",
                     json_object_get_string(json_object_array_get_idx(v, i)));
    } else {
        acts[n][0] = '\0';
        if (json_object_object_get_ex(j, "activity", &v))
            snprintf(acts[n], sizeof acts[0], "%s", json_object_get_string(v));
        n++;
    }
    json_object_put(j);
    struct ccapi_error err;
    bool lost = false;
    for (size_t i = 0; i < n; i++) {
        if (!acts[i][0]) {
            lost = true;
            continue;
        }
        struct ccapi_activity act = {0};
        enum call_outcome oc = wait_activity(r, acts[i], &act, &err);
        ccapi_activity_clear(&act);
        if (oc != CALL_OK && !(oc == CALL_FAILED && err.status == CCAPI_NOT_FOUND))
            return call_failed(r, oc, &err, "report on an earlier request");
    }
    if (lost) {
        /* An answer was lost before its activity id was written down: if the
         * request did reach CC, its job is among the account's unfinished ones.
         * Wait until none is left (they cannot be told apart by list), so the
         * read-back below sees what the lost request did. */
        enum call_outcome oc = wait_account_activities(r, &err);
        if (oc != CALL_OK)
            return call_failed(r, oc, &err, "list recent activities");
    }
    enum call_outcome oc = verify_list(r, &err);
    if (oc == CALL_FAILED && err.status == CCAPI_NOT_FOUND)
        return check_list_gone(r, &err);
    if (oc != CALL_OK)
        return call_failed(r, oc, &err, "read the list");
    log_info("sync_recovered", LOG_STR("association", r->association), LOG_STR("group", r->group),
             LOG_STR("journal", op), LOG_INT("activities", (long long)n),
             LOG_STR("activity", n == 1 && acts[0][0] ? acts[0] : NULL));
    return clear_journal(r) ? SYNC_DONE : SYNC_REDIS;
}

/* ---- the round: several groups' list changes, sharing requests ---- */

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
    bool first_sync; /* nothing applied before this pass */
    bool readback;   /* read the list back once the activities are known */
    bool learn_ids;  /* a first sync's import finished: read the list back once synced */
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

struct round {
    struct round_group *groups;
    size_t n;
    struct round_group **active; /* this pass's groups with work: the merge's lists */
    size_t n_active;
    struct plan_merged_removes merged;
    struct round_activity *acts;
    size_t n_acts, cap_acts;
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
}

/* A failure shared by groups: each records it in its status. */
static void groups_failed(struct round_group *const *gs, size_t n, enum call_outcome oc,
                          const struct ccapi_error *err, const char *what)
{
    for (size_t i = 0; i < n; i++)
        if (gs[i]->r->res == SYNC_DONE)
            gs[i]->r->res = call_failed(gs[i]->r, oc, err, what);
}

/* Plans one group; false when it has nothing to send this pass. */
static bool plan_group(struct round_group *g)
{
    struct run *r = g->r;
    redisContext *c = r->w->redis;
    if (load_members(c, r->p, r->group, &g->members) != 0 ||
        load_applied(c, r->p, r->group, &g->applied) != 0) {
        r->res = SYNC_REDIS;
        return false;
    }
    struct plan_group pg = {.id = r->group,
                            .name = r->gs.name,
                            .sync_enabled = true,
                            .list = {PLAN_LIST_ACTIVE, r->gs.list_id, r->gs.list_name}};
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
    if (!write_counts(r, &g->pl)) {
        r->res = SYNC_REDIS;
        return false;
    }
    if (g->pl.n_ops == 0) {
        char now[32];
        rfc3339_format(store_now_ns(), now, sizeof now);
        bool ok = cmd(c, "HSET %sg:%s state synced last_synced_at %s", r->p, r->group, now) &&
                  clear_error(c, r->p, r->group);
        r->res = ok ? SYNC_DONE : SYNC_REDIS;
        g->settled = ok;
        return false;
    }
    g->first_sync = g->applied.n == 0;
    g->by_cid = calloc(g->applied.n ? g->applied.n : 1, sizeof *g->by_cid);
    if (!g->by_cid) {
        r->res = SYNC_RETRY;
        return false;
    }
    for (size_t i = 0; i < g->applied.n; i++)
        if (g->applied.items[i].contact_id && g->applied.items[i].contact_id[0])
            g->by_cid[g->n_by_cid++] = &g->applied.items[i];
    qsort(g->by_cid, g->n_by_cid, sizeof *g->by_cid, cid_ptr_cmp);
    return true;
}

/* After a 404 naming one of several lists: is r's list the one gone? */
static enum sync_result list_still_there(struct run *r)
{
    struct ccapi_error err;
    bool gone;
    enum call_outcome oc = ask_list(r, &gone, &err);
    if (gone)
        return mark_list_deleted(r);
    if (oc != CALL_OK)
        return call_failed(r, oc, &err, "read the list");
    return SYNC_DONE; /* this one is fine: it is planned again */
}

/* Reads back the lists of gs (1..25) in one paged read; a 404 is sorted out
 * list by list. */
static void read_back(struct round_group *const *gs, size_t n)
{
    if (n == 0)
        return;
    struct run *rs[SYNC_MAX_GROUPS];
    for (size_t i = 0; i < n; i++)
        rs[i] = gs[i]->r;
    struct ccapi_error err;
    enum call_outcome oc = verify_lists(rs, n, &err);
    if (oc == CALL_FAILED && err.status == CCAPI_NOT_FOUND) {
        for (size_t i = 0; i < n; i++) {
            oc = n == 1 ? oc : verify_list(rs[i], &err);
            if (oc == CALL_FAILED && err.status == CCAPI_NOT_FOUND)
                rs[i]->res = check_list_gone(rs[i], &err);
            else if (oc != CALL_OK)
                rs[i]->res = call_failed(rs[i], oc, &err, "read the list");
        }
        return;
    }
    if (oc != CALL_OK)
        groups_failed(gs, n, oc, &err, "read the list");
}

/* LEARN: contact ids of contacts to remove, for every group that needs some.
 * A few are looked up by email; more than a read of the lists would take are
 * learned by reading the lists together (one request per 500 contacts). */
static void learn_round(struct round_group *const *gs, size_t n)
{
    size_t emails = 0, listed = 0;
    for (size_t i = 0; i < n; i++) {
        emails += gs[i]->pl.ops[0].n_emails;
        listed += gs[i]->applied.n;
    }
    if (emails > listed / CCAPI_PAGE_LIMIT + 1) {
        read_back(gs, n);
        return;
    }
    for (size_t k = 0; k < n; k++) {
        struct run *r = gs[k]->r;
        redisContext *c = r->w->redis;
        const struct plan_op *op = &gs[k]->pl.ops[0];
        for (size_t i = 0; i < op->n_emails && r->res == SYNC_DONE; i++) {
            struct ccapi_error err;
            struct contacts_call a = {.email = op->emails[i]};
            enum call_outcome oc =
                cc_call(r->w, r->association, "contacts_find", true, do_contacts, &a, &err);
            if (oc != CALL_OK) {
                ccapi_contact_page_clear(&a.page);
                groups_failed(gs + k, n - k, oc, &err, "look up contacts");
                return;
            }
            bool on = false;
            const struct ccapi_contact *ct = a.page.n_contacts ? &a.page.contacts[0] : NULL;
            for (size_t l = 0; ct && l < ct->n_list_ids; l++)
                on = on || strcmp(ct->list_ids[l], r->gs.list_id) == 0;
            bool ok;
            if (on) {
                char key[300];
                snprintf(key, sizeof key, "%sap:%s", r->p, r->group);
                const char *args[] = {key, op->emails[i], ct->contact_id};
                redisReply *rep = script_eval(c, set_cid_script, 1, 3, args);
                ok = store_reply_ok(c, rep);
                if (rep)
                    freeReplyObject(rep);
            } else {
                /* not on the list any more: nothing to remove */
                ok = cmd(c, "HDEL %sap:%s %s", r->p, r->group, op->emails[i]);
            }
            ccapi_contact_page_clear(&a.page);
            if (!ok)
                r->res = SYNC_REDIS;
        }
    }
}

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

/* Sends the pass's removals, merged across its groups (plan_merge_removes).
 * Each request is journaled in every group it touches, with the same id. */
static void send_removes(struct round *rd)
{
    size_t n_leaves = 0;
    for (size_t k = 0; k < rd->n_active; k++)
        for (size_t i = 0; i < rd->active[k]->pl.n_ops; i++)
            if (rd->active[k]->pl.ops[i].type == PLAN_OP_REMOVE)
                n_leaves += rd->active[k]->pl.ops[i].n_contact_ids;
    if (n_leaves == 0)
        return;
    struct plan_leave *leaves = calloc(n_leaves, sizeof *leaves);
    struct plan_round_list lists[SYNC_MAX_GROUPS] = {{0}};
    const char **held[SYNC_MAX_GROUPS] = {0};
    size_t n = 0;
    bool ok = leaves != NULL;
    for (size_t k = 0; ok && k < rd->n_active; k++) {
        const struct round_group *g = rd->active[k];
        held[k] = held_emails(g, &lists[k].n_held);
        lists[k].held = held[k];
        ok = held[k] != NULL;
        for (size_t i = 0; ok && i < g->pl.n_ops; i++) {
            const struct plan_op *op = &g->pl.ops[i];
            for (size_t c = 0; op->type == PLAN_OP_REMOVE && c < op->n_contact_ids; c++) {
                const struct applied_contact *a = by_contact_id(g, op->contact_ids[c]);
                if (a)
                    leaves[n++] = (struct plan_leave){a->contact_id, a->email, k};
            }
        }
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
    if (!ok) {
        for (size_t k = 0; k < rd->n_active; k++) {
            rd->active[k]->r->retry_ms = 60000;
            rd->active[k]->r->res = SYNC_RETRY;
        }
        return;
    }
    for (size_t b = 0; b < rd->merged.n_batches; b++) {
        const struct plan_remove_batch *pb = &rd->merged.batches[b];
        struct round_group *gs[SYNC_MAX_GROUPS];
        const char *list_ids[SYNC_MAX_GROUPS];
        bool go = true;
        for (size_t l = 0; l < pb->n_lists; l++) {
            gs[l] = rd->active[pb->lists[l]];
            list_ids[l] = gs[l]->r->gs.list_id;
            go = go && gs[l]->r->res == SYNC_DONE && !gs[l]->r->gs.list_deleted_in_cc &&
                 gs[l]->r->n_acts < ROUND_MAX_ACTIVITIES;
        }
        if (!go)
            continue; /* planned again in the next pass */
        for (size_t l = 0; l < pb->n_lists; l++) {
            if (!journal_push(gs[l]->r, "remove")) {
                gs[l]->r->res = SYNC_REDIS;
                return;
            }
        }
        struct remove_call a = {.ids = pb->contact_ids,
                                .n = pb->n_contact_ids,
                                .lists = list_ids,
                                .n_lists = pb->n_lists};
        struct ccapi_error err;
        struct run *r0 = gs[0]->r;
        enum call_outcome oc =
            cc_call(r0->w, r0->association, "memberships_remove", false, do_remove, &a, &err);
        if (oc == CALL_OK) {
            log_info("memberships_remove_sent", LOG_STR("association", r0->association),
                     LOG_INT("lists", (long long)pb->n_lists),
                     LOG_INT("contacts", (long long)pb->n_contact_ids),
                     LOG_STR("activity", a.activity));
            struct round_activity ra = {.import = false, .batch = b};
            snprintf(ra.id, sizeof ra.id, "%s", a.activity);
            for (size_t l = 0; l < pb->n_lists; l++)
                if (!journal_name_last(gs[l]->r, a.activity))
                    gs[l]->r->res = SYNC_REDIS;
            if (!round_add_activity(rd, &ra))
                for (size_t l = 0; l < pb->n_lists; l++)
                    gs[l]->r->res = SYNC_RETRY; /* the journal has it: recovered next run */
            continue;
        }
        if (oc == CALL_UNCERTAIN) {
            /* The journals keep "": the next run waits, then reads the lists back. */
            for (size_t l = 0; l < pb->n_lists; l++) {
                gs[l]->r->retry_ms = 1000;
                gs[l]->r->res = SYNC_RETRY;
            }
            continue;
        }
        if (oc == CALL_LEASE_LOST) {
            /* Another worker may own these groups now: their journals are its. */
            groups_failed(gs, pb->n_lists, oc, &err, "remove contacts from the list");
            continue;
        }
        for (size_t l = 0; l < pb->n_lists; l++)
            if (!journal_drop_last(gs[l]->r))
                gs[l]->r->res = SYNC_REDIS;
        if (oc == CALL_FAILED && err.status == CCAPI_NOT_FOUND) {
            for (size_t l = 0; l < pb->n_lists; l++)
                if (gs[l]->r->res == SYNC_DONE)
                    gs[l]->r->res = pb->n_lists == 1 ? check_list_gone(gs[l]->r, &err)
                                                     : list_still_there(gs[l]->r);
            continue;
        }
        groups_failed(gs, pb->n_lists, oc, &err, "remove contacts from the list");
    }
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
                r->n_acts >= ROUND_MAX_ACTIVITIES)
                break;
            struct ccapi_import_contact *cs = calloc(op->n_contacts, sizeof *cs);
            if (!cs) {
                r->res = SYNC_RETRY;
                break;
            }
            for (size_t c = 0; c < op->n_contacts; c++) {
                cs[c].email = op->contacts[c].email;
                cs[c].first_name = op->contacts[c].first_name;
                cs[c].last_name = op->contacts[c].last_name;
            }
            if (!journal_push(r, "import")) {
                free(cs);
                r->res = SYNC_REDIS;
                break;
            }
            struct ccapi_error err;
            struct import_call a = {.contacts = cs, .n = op->n_contacts, .list_id = r->gs.list_id};
            enum call_outcome oc =
                cc_call(r->w, r->association, "contacts_import", false, do_import, &a, &err);
            free(cs);
            if (oc == CALL_UNCERTAIN) {
                r->retry_ms = 1000; /* the journal makes the next run read the list back first */
                r->res = SYNC_RETRY;
                break;
            }
            if (oc == CALL_LEASE_LOST) {
                r->res = SYNC_LEASE_LOST; /* the journal is the new owner's now */
                break;
            }
            if (oc != CALL_OK) {
                if (!journal_drop_last(r))
                    r->res = SYNC_REDIS;
                else if (oc == CALL_FAILED && err.status == CCAPI_NOT_FOUND)
                    r->res = check_list_gone(r, &err);
                else
                    r->res = call_failed(r, oc, &err, "import contacts");
                break;
            }
            log_info("contacts_import_sent", LOG_STR("association", r->association),
                     LOG_STR("group", r->group), LOG_STR("list_id", r->gs.list_id),
                     LOG_INT("contacts", (long long)op->n_contacts),
                     LOG_STR("activity", a.activity));
            struct round_activity ra = {.import = true, .g = g, .op = op};
            snprintf(ra.id, sizeof ra.id, "%s", a.activity);
            if (!journal_name_last(r, a.activity))
                r->res = SYNC_REDIS;
            else if (!round_add_activity(rd, &ra))
                r->res = SYNC_RETRY;
        }
    }
}

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
        if (!pause_ms(r->w, step))
            return CALL_STOPPED;
        waited += step;
        step = step < 2000 ? step * 2 : 2000;
        struct activities_call a = {0};
        enum call_outcome oc =
            cc_call(r->w, r->association, "activities_list", true, do_activities, &a, err);
        size_t missing = 0;
        if (oc == CALL_OK)
            round_match_page(rd, &a.page, &missing);
        ccapi_activity_page_clear(&a.page);
        if (oc != CALL_OK)
            return oc;
        for (size_t i = 0; missing > 0 && i < rd->n_acts; i++) {
            struct round_activity *ra = &rd->acts[i];
            if (ra->done)
                continue;
            struct activity_call one = {.id = ra->id};
            oc = cc_call(r->w, r->association, "activity_get", true, do_activity, &one, err);
            if (oc == CALL_OK && ccapi_activity_finished(one.act.state)) {
                ra->act = one.act;
                ra->done = true;
            } else {
                ccapi_activity_clear(&one.act);
            }
            if (oc != CALL_OK)
                return oc;
        }
    }
}

/* An import has finished: its contacts are ON, but those CC named in its
 * errors (REJ). Some not added (unsubscribed in CC) or an unfinished job: the
 * list is read back. */
static bool import_settled(struct round_activity *ra)
{
    struct round_group *g = ra->g;
    struct run *r = g->r;
    redisContext *c = r->w->redis;
    const struct plan_op *op = ra->op;
    size_t appends = 0;
    for (size_t i = 0; i < op->n_contacts; i++) {
        bool rejected = false;
        for (size_t e = 0; e < ra->act.n_errors && !rejected; e++) {
            char norm[EMAIL_BUF_SIZE];
            rejected = ra->act.errors[e].email &&
                       email_normalize(ra->act.errors[e].email, norm, sizeof norm) == 0 &&
                       strcmp(op->contacts[i].email, norm) == 0;
        }
        put_applied(c, r->p, r->group, op->contacts[i].email, rejected ? "rej" : "on", "",
                    op->contacts[i].first_name, op->contacts[i].last_name);
        appends++;
    }
    bool completed = ra->act.state == CCAPI_ACTIVITY_COMPLETED;
    if (ra->act.cannot_add_to_list_count > 0 || !completed)
        g->readback = true;
    ra->check_unsub = completed && ra->act.cannot_add_to_list_count > 0;
    return flush_appends(c, appends);
}

/* Contacts of an import that CC could not add and the read-back did not find
 * on the list are unsubscribed in CC: never imported again. */
static bool mark_unsubscribed(struct round_activity *ra)
{
    struct run *r = ra->g->r;
    redisContext *c = r->w->redis;
    const struct plan_op *op = ra->op;
    for (size_t i = 0; i < op->n_contacts; i++) {
        redisReply *rep =
            redisCommand(c, "HEXISTS %sap:%s %s", r->p, r->group, op->contacts[i].email);
        bool present = rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 1;
        if (rep)
            freeReplyObject(rep);
        if (c->err)
            return false;
        if (present)
            continue;
        /* flushed at once: the next HEXISTS must not read this HSET's reply */
        size_t pending = 1;
        put_applied(c, r->p, r->group, op->contacts[i].email, "unsub", "",
                    op->contacts[i].first_name, op->contacts[i].last_name);
        if (!flush_replies(c, &pending))
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
                redisAppendCommand(c, "HDEL %sap:%s %s", r->p, r->group, a->email);
                appends++;
            }
        }
        if (!flush_appends(c, appends))
            return false;
    }
    return true;
}

/* Everything the pass sent has finished: record it, read back what needs it. */
static void settle(struct round *rd)
{
    for (size_t i = 0; i < rd->n_acts; i++) {
        struct round_activity *ra = &rd->acts[i];
        bool ok =
            ra->import ? ra->g->r->res != SYNC_DONE || import_settled(ra) : remove_settled(rd, ra);
        if (!ok) {
            for (size_t k = 0; k < rd->n_active; k++)
                rd->active[k]->r->res = SYNC_REDIS;
            return;
        }
    }
    struct round_group *back[SYNC_MAX_GROUPS];
    size_t n = 0;
    for (size_t i = 0; i < rd->n_acts; i++) {
        struct round_group *g = rd->acts[i].import ? rd->acts[i].g : NULL;
        if (g && g->first_sync)
            g->learn_ids = true; /* see learn_ids_after_sync */
    }
    for (size_t k = 0; k < rd->n_active; k++) {
        if (rd->active[k]->readback && rd->active[k]->r->res == SYNC_DONE &&
            !rd->active[k]->r->gs.list_deleted_in_cc) {
            back[n++] = rd->active[k];
            rd->active[k]->learn_ids = false; /* this read learns them */
        }
    }
    read_back(back, n);
    for (size_t i = 0; i < rd->n_acts; i++) {
        struct round_activity *ra = &rd->acts[i];
        if (ra->import && ra->check_unsub && ra->g->r->res == SYNC_DONE && !mark_unsubscribed(ra))
            ra->g->r->res = SYNC_REDIS;
    }
    for (size_t k = 0; k < rd->n_active; k++) {
        struct run *r = rd->active[k]->r;
        if (r->res == SYNC_DONE && r->n_acts > 0 && !clear_journal(r))
            r->res = SYNC_REDIS;
    }
}

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
 * A first sync ends by reading its list back, after the group shows synced:
 * that confirms what CC holds and records every contact id, so that later
 * leaves need no lookup (a burst's removals then cost their merged requests
 * only). The read costs a request per 500 contacts, as many as the import's
 * share of the budget. The groups read back are planned once more (nothing to
 * do, unless CC differs). Returns false when no group needed it.
 */
static bool learn_ids_after_sync(struct round *rd)
{
    struct round_group *back[SYNC_MAX_GROUPS];
    size_t n = 0;
    for (size_t i = 0; i < rd->n; i++) {
        struct round_group *g = &rd->groups[i];
        if (g->learn_ids && g->settled && g->r->res == SYNC_DONE && !g->r->gs.list_deleted_in_cc)
            back[n++] = g;
        g->learn_ids = false;
    }
    read_back(back, n);
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

/*
 * Makes the lists of runs match their groups, together: plan each, learn the
 * contact ids they need in one read, send removals (merged) and imports, wait
 * for all of them with GET /activities, record what they did, and plan again
 * until no group has anything left. Each run's res says how its group ended.
 */
static void converge_round(struct run *const *runs, size_t n)
{
    struct round rd = {0};
    rd.groups = calloc(n, sizeof *rd.groups);
    rd.active = calloc(n, sizeof *rd.active);
    if (!rd.groups || !rd.active) {
        for (size_t i = 0; i < n; i++)
            runs[i]->res = SYNC_RETRY;
        free(rd.groups);
        free(rd.active);
        return;
    }
    rd.n = n;
    for (size_t i = 0; i < n; i++)
        rd.groups[i].r = runs[i];
    int pass;
    for (pass = 0; pass < MAX_ROUNDS; pass++) {
        struct round_group *learners[SYNC_MAX_GROUPS];
        size_t n_learn = 0;
        for (size_t i = 0; i < n; i++) {
            struct round_group *g = &rd.groups[i];
            if (g->r->res != SYNC_DONE || g->settled || g->r->gs.list_deleted_in_cc)
                continue;
            if (!plan_group(g))
                continue;
            rd.active[rd.n_active++] = g;
            if (g->pl.ops[0].type == PLAN_OP_LEARN)
                learners[n_learn++] = g;
        }
        if (round_broken(&rd)) {
            round_pass_free(&rd);
            break;
        }
        if (rd.n_active == 0) {
            round_pass_free(&rd);
            if (learn_ids_after_sync(&rd) && !round_broken(&rd))
                continue;
            break;
        }
        if (n_learn > 0) {
            learn_round(learners, n_learn); /* the others go on in the next pass */
        } else {
            send_removes(&rd);
            send_imports(&rd);
            if (!round_broken(&rd)) {
                struct ccapi_error err = {0};
                enum call_outcome oc = wait_round(&rd, rd.active[0]->r, &err);
                if (oc == CALL_OK) {
                    settle(&rd);
                } else {
                    /* The journals keep the activities: the next run recovers. */
                    for (size_t k = 0; k < rd.n_active; k++)
                        if (rd.active[k]->r->n_acts > 0)
                            groups_failed(&rd.active[k], 1, oc, &err, "report on a bulk request");
                }
            }
        }
        for (size_t k = 0; k < rd.n_active; k++) {
            struct run *r = rd.active[k]->r;
            if (r->res == SYNC_DONE && load_group(r->w->redis, r->p, r->group, &r->gs) != 0)
                r->res = SYNC_REDIS;
        }
        round_pass_free(&rd);
        if (round_broken(&rd))
            break;
    }
    for (size_t i = 0; pass == MAX_ROUNDS && i < n; i++) {
        struct round_group *g = &rd.groups[i];
        if (g->r->res == SYNC_DONE && !g->settled && !g->r->gs.list_deleted_in_cc) {
            g->r->retry_ms = 1000;
            g->r->res = SYNC_RETRY;
        }
    }
    free(rd.acts);
    free(rd.groups);
    free(rd.active);
}

/*
 * Forgets a deleted group whose list is gone, keeping a tombstone (fact_ts,
 * deleted, gen): without it a late group.created/updated older than the
 * deletion would bring the group, and a new CC list, back. Does nothing when a
 * newer fact revived the group since it was loaded.
 * KEYS: g:{G}, gm:{G}, ap:{G}, groups. ARGV: group id.
 */
static const char forget_group_script[] =
    "local f = redis.call('HMGET', KEYS[1], 'deleted', 'fact_ts', 'gen')\n"
    "if f[1] ~= '1' then return 0 end\n"
    "redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])\n"
    "redis.call('HSET', KEYS[1], 'deleted', '1', 'fact_ts', f[2], 'gen', f[3] or '0')\n"
    "redis.call('SREM', KEYS[4], ARGV[1])\n"
    "return 1\n";

/*
 * One group's own steps before its list changes: a journal left behind is
 * recovered, a deleted or switched-off group's list is deleted, a resync or a
 * reconcile's doubt reads the list back, a new list is created. Sets
 * r->converge when the group's list changes are to run in the round.
 */
static enum sync_result prepare(struct run *r)
{
    const char *group_id = r->group;
    redisContext *c = r->w->redis;
    if (load_group(c, r->p, group_id, &r->gs) != 0)
        return SYNC_REDIS;
    enum sync_result res = SYNC_DONE;
    if (!r->gs.exists)
        goto out;
    redisReply *folding = redisCommand(c, "EXISTS %sg:%s:folding", r->p, group_id);
    bool half_folded = folding && folding->type == REDIS_REPLY_INTEGER && folding->integer == 1;
    if (folding)
        freeReplyObject(folding);
    if (c->err)
        return SYNC_REDIS;
    if (half_folded) {
        r->retry_ms = 250; /* a snapshot is being folded: sync the whole of it */
        res = SYNC_RETRY;
        goto out;
    }
    if (r->gs.journal[0] && r->gs.list_id[0] && !r->gs.list_deleted_in_cc) {
        res = recover(r);
        if (res != SYNC_DONE || r->gs.list_deleted_in_cc)
            goto out;
    }
    if (r->gs.deleted || !r->gs.sync) {
        if (r->gs.journal[0] && !r->gs.list_id[0]) {
            /* A create whose answer was lost may have made a list: it goes too. */
            bool adopted;
            res = adopt_lost_create(r, &adopted);
            if (res != SYNC_DONE)
                goto out;
        }
        if (r->gs.list_id[0] && !r->gs.list_deleted_in_cc) {
            res = delete_list(r, r->gs.deleted ? "the group was deleted in Novi"
                                               : "sync to Constant Contact was turned off");
            if (res != SYNC_DONE)
                goto out;
        }
        if (r->gs.deleted) {
            char keys[3][300];
            snprintf(keys[0], sizeof keys[0], "%sg:%s", r->p, group_id);
            snprintf(keys[1], sizeof keys[1], "%sgm:%s", r->p, group_id);
            snprintf(keys[2], sizeof keys[2], "%sap:%s", r->p, group_id);
            char groups[200];
            snprintf(groups, sizeof groups, "%sgroups", r->p);
            const char *args[] = {keys[0], keys[1], keys[2], groups, group_id};
            redisReply *rep = script_eval(c, forget_group_script, 4, 5, args);
            res = store_reply_ok(c, rep) ? SYNC_DONE : SYNC_REDIS;
            if (rep)
                freeReplyObject(rep);
            goto out;
        }
        /* The counts describe the list: with sync off there is none, as for a
         * group that never synced. */
        bool ok = cmd(c,
                      "HSET %sg:%s state disabled pending 0 c_members 0 c_no_email 0 "
                      "c_invalid_email 0 c_duplicate_email 0 c_do_not_email 0 c_unsubscribed 0 "
                      "c_rejected 0 c_in_list 0",
                      r->p, group_id) &&
                  cmd(c, "HDEL %sg:%s list_id list_name list_state journal resync", r->p, group_id) &&
                  cmd(c, "DEL %sap:%s", r->p, group_id) && clear_error(c, r->p, group_id);
        res = ok ? SYNC_DONE : SYNC_REDIS;
        goto out;
    }
    if (r->gs.resync) {
        struct ccapi_error err;
        if (r->gs.list_deleted_in_cc || !r->gs.list_id[0]) {
            /* A group that has no list yet keeps its journal: a lost create's,
             * whose list create_list adopts instead of making a second one. */
            bool drop_journal = r->gs.list_deleted_in_cc;
            if (!cmd(c, "HDEL %sg:%s list_id list_name list_state", r->p, group_id) ||
                (drop_journal && !cmd(c, "HDEL %sg:%s journal", r->p, group_id)) ||
                !cmd(c, "DEL %sap:%s", r->p, group_id)) {
                res = SYNC_REDIS;
                goto out;
            }
            r->gs.list_id[0] = '\0';
            r->gs.list_deleted_in_cc = false;
            if (drop_journal)
                r->gs.journal[0] = '\0';
        } else {
            enum call_outcome oc = verify_list(r, &err);
            if (oc == CALL_FAILED && err.status == CCAPI_NOT_FOUND) {
                res = check_list_gone(r, &err);
                goto out;
            }
            if (oc != CALL_OK) {
                res = call_failed(r, oc, &err, "read the list");
                goto out;
            }
        }
        if (!cmd(c, "HDEL %sg:%s resync", r->p, group_id) || !clear_error(c, r->p, group_id)) {
            res = SYNC_REDIS;
            goto out;
        }
    } else if (r->gs.list_deleted_in_cc) {
        goto out; /* waits for an admin: resync or toggle */
    } else if (r->gs.verify && r->gs.list_id[0]) {
        /* reconcile saw the list's size differ from what ccsync applied */
        struct ccapi_error err;
        enum call_outcome oc = verify_list(r, &err);
        if (oc == CALL_FAILED && err.status == CCAPI_NOT_FOUND) {
            res = check_list_gone(r, &err);
            goto out;
        }
        if (oc != CALL_OK) {
            res = call_failed(r, oc, &err, "read the list");
            goto out;
        }
    }
    if (r->gs.verify && !cmd(c, "HDEL %sg:%s verify", r->p, group_id)) {
        res = SYNC_REDIS;
        goto out;
    }
    if (!cmd(c, "HSET %sg:%s state syncing", r->p, group_id)) {
        res = SYNC_REDIS;
        goto out;
    }
    if (!r->gs.list_id[0]) {
        res = create_list(r);
        if (res != SYNC_DONE || !r->gs.list_id[0])
            goto out;
    }
    r->converge = true;
out:
    return res;
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
    size_t n_conv = 0;
    enum sync_result broken = SYNC_DONE;
    w->token_association[0] = '\0'; /* read the token afresh: it may be near expiry */
    for (size_t i = 0; runs && i < n; i++) {
        struct run *r = &runs[i];
        *r = (struct run){.w = w, .association = association, .group = group_ids[i]};
        prefix_of(association, r->p, sizeof r->p);
        /* After the worker's own failure (Redis, lease, shutdown) the others stop too. */
        r->res = broken != SYNC_DONE ? broken : prepare(r);
        if (r->res == SYNC_REDIS || r->res == SYNC_LEASE_LOST || r->res == SYNC_STOPPED)
            broken = r->res;
        if (r->res == SYNC_DONE && r->converge && n_conv < SYNC_MAX_GROUPS)
            converging[n_conv++] = r;
    }
    if (runs && broken == SYNC_DONE && n_conv > 0)
        converge_round(converging, n_conv);
    for (size_t i = 0; i < n; i++) {
        results[i] = runs ? runs[i].res : SYNC_RETRY;
        retry_ms[i] = runs ? runs[i].retry_ms : 1000;
    }
    free(runs);
}

/* ---- reconcile: deleted and renamed lists, and lists whose size drifted ---- */

enum sync_result sync_reconcile(struct sync_worker *w, const char *association)
{
    redisContext *c = w->redis;
    char p[128];
    prefix_of(association, p, sizeof p);
    redisReply *groups = redisCommand(c, "SMEMBERS %sgroups", p);
    if (!store_reply_ok(c, groups) || groups->type != REDIS_REPLY_ARRAY) {
        if (groups)
            freeReplyObject(groups);
        return SYNC_REDIS;
    }
    enum sync_result res = SYNC_DONE;
    struct run r = {.w = w, .association = association};
    w->token_association[0] = '\0';
    snprintf(r.p, sizeof r.p, "%s", p);
    struct ccapi_list_page all = {0};
    size_t n_lists = 0, cap = 0;
    struct ccapi_list *lists = NULL;
    bool any = false;
    for (size_t i = 0; i < groups->elements && !any; i++) {
        struct group_state gs;
        if (load_group(c, p, groups->element[i]->str, &gs) == 0 && gs.list_id[0] &&
            !gs.list_deleted_in_cc)
            any = true;
    }
    if (any) {
        /* One paged read covers every list of the account. */
        struct list_page_call a = {0};
        char *next = NULL;
        struct ccapi_error err;
        do {
            a.next = next;
            enum call_outcome oc = cc_call(w, association, "lists_page", true, do_lists_page, &a, &err);
            free(next);
            next = NULL;
            if (oc != CALL_OK) {
                res = oc == CALL_REDIS ? SYNC_REDIS : oc == CALL_STOPPED ? SYNC_STOPPED : SYNC_RETRY;
                break;
            }
            for (size_t i = 0; i < a.page.n_lists; i++) {
                if (n_lists == cap) {
                    cap = cap ? cap * 2 : 64;
                    lists = realloc(lists, cap * sizeof *lists);
                }
                lists[n_lists] = a.page.lists[i];
                a.page.lists[i].name = NULL; /* moved */
                a.page.lists[i].description = NULL;
                n_lists++;
            }
            if (a.page.next_href)
                next = strdup(a.page.next_href);
        } while (next);
        ccapi_list_page_clear(&a.page);
    }
    for (size_t i = 0; any && res == SYNC_DONE && i < groups->elements; i++) {
        const char *g = groups->element[i]->str;
        r.group = g;
        if (load_group(c, p, g, &r.gs) != 0) {
            res = SYNC_REDIS;
            break;
        }
        if (!r.gs.list_id[0] || r.gs.list_deleted_in_cc || r.gs.deleted || !r.gs.sync)
            continue;
        const struct ccapi_list *l = NULL;
        for (size_t k = 0; k < n_lists; k++)
            if (strcmp(lists[k].list_id, r.gs.list_id) == 0)
                l = &lists[k];
        if (l && l->deleted) {
            res = mark_list_deleted(&r);
            continue;
        }
        if (!l) {
            /* Not on the pages read: deleted, or made by a round after the page
             * was read. Asking for it by id tells which (one request, rarely);
             * when CC does not say, the next reconcile looks again. */
            struct ccapi_error err;
            bool gone;
            enum call_outcome oc = ask_list(&r, &gone, &err);
            if (gone)
                res = mark_list_deleted(&r);
            else if (oc == CALL_REDIS)
                res = SYNC_REDIS;
            else if (oc == CALL_STOPPED)
                res = SYNC_STOPPED;
            else if (oc == CALL_LEASE_LOST)
                res = SYNC_LEASE_LOST;
            continue;
        }
        if (l->name && strcmp(l->name, r.gs.list_name) != 0) {
            char detail[600];
            snprintf(detail, sizeof detail, "renamed from \"%s\"", r.gs.list_name);
            if (!cmd(c, "HSET %sg:%s list_name %s", p, g, l->name) ||
                facts_audit(c, association, g, "list_renamed_in_constant_contact", r.gs.list_id,
                            l->name, detail) != 0)
                res = SYNC_REDIS;
        }
        redisReply *k = redisCommand(c, "HMGET %sg:%s c_in_list pending state", p, g);
        if (store_reply_ok(c, k) && k->type == REDIS_REPLY_ARRAY && k->elements == 3 &&
            k->element[0]->type == REDIS_REPLY_STRING && l->membership_count >= 0) {
            long in_list = atol(k->element[0]->str);
            bool settled = k->element[1]->type == REDIS_REPLY_STRING &&
                           strcmp(k->element[1]->str, "0") == 0 &&
                           k->element[2]->type == REDIS_REPLY_STRING &&
                           strcmp(k->element[2]->str, "synced") == 0;
            if (settled && in_list != l->membership_count) {
                cmd(c, "HSET %sg:%s verify 1", p, g);
                facts_mark_dirty(c, association, g, store_now_ns(), 0);
            }
        }
        if (k)
            freeReplyObject(k);
    }
    for (size_t k = 0; k < n_lists; k++)
        ccapi_list_clear(&lists[k]);
    free(lists);
    ccapi_list_page_clear(&all);
    freeReplyObject(groups);
    return res;
}
