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

#define MAX_ROUNDS 8
#define MAX_TRANSIENT_ATTEMPTS 5
#define LIST_NAME_MAX 255
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
    char journal[1024];
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

static const char renew_script[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
    "  return redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "end\n"
    "return 0\n";

bool sync_lease_renew(struct sync_worker *w)
{
    if (!w->lease_key[0])
        return true;
    char ms[16];
    snprintf(ms, sizeof ms, "%d", w->lease_ms);
    const char *args[] = {w->lease_key, w->lease_token, ms};
    redisReply *r = script_eval(w->redis, renew_script, 1, 3, args);
    bool ok = store_reply_ok(w->redis, r) && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
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

static enum call_outcome cc_call(struct sync_worker *w, const char *association, const char *op,
                                 bool may_repeat, cc_fn fn, void *arg, struct ccapi_error *err)
{
    bool refreshed = false;
    int transient = 0;
    for (;;) {
        memset(err, 0, sizeof *err);
        if (!sync_lease_renew(w))
            return w->redis->err ? CALL_REDIS : CALL_LEASE_LOST;
        if (!load_token(w, association, err)) {
            if (w->redis->err)
                return CALL_REDIS;
            return err->status == CCAPI_UNAUTHORIZED ? CALL_FAILED : CALL_RETRY;
        }
        int64_t wait_ns = 0;
        enum ratelimit_result rl = ratelimit_wait(w->redis, &w->budget, association, w->stop, &wait_ns);
        if (rl == RATELIMIT_QUOTA) {
            err->status = CCAPI_QUOTA;
            return CALL_QUOTA;
        }
        if (rl == RATELIMIT_STOPPED)
            return CALL_STOPPED;
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
        case CCAPI_THROTTLED:
            if (!pause_ms(w, err->retry_after_s > 0 ? err->retry_after_s * 1000 : 1000))
                return CALL_STOPPED;
            continue;
        case CCAPI_QUOTA:
            ratelimit_pause_until_midnight(w->redis, &w->budget, NULL);
            return CALL_QUOTA;
        case CCAPI_TRANSIENT:
            if (err->maybe_applied && !may_repeat)
                return CALL_UNCERTAIN;
            if (++transient >= MAX_TRANSIENT_ATTEMPTS)
                return CALL_RETRY;
            if (!pause_ms(w, backoff_ms(transient)))
                return CALL_STOPPED;
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
    struct ccapi_list list;
};
static int do_list_create(struct sync_worker *w, void *arg, struct ccapi_error *err)
{
    struct list_create_call *a = arg;
    ccapi_list_clear(&a->list);
    return ccapi_list_create(w->cc, a->name, "Kept in step with a Novi group by ccsync", &a->list, err);
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
    const char *list_id;
    char activity[CCAPI_ID_SIZE];
};
static int do_remove(struct sync_worker *w, void *arg, struct ccapi_error *err)
{
    struct remove_call *a = arg;
    const char *lists[] = {a->list_id};
    return ccapi_memberships_remove(w->cc, a->ids, a->n, lists, 1, a->activity, err);
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
    const char *list_id;
    const char *email; /* lookup by email instead of the list */
    const char *next;
    struct ccapi_contact_page page;
};
static int do_contacts(struct sync_worker *w, void *arg, struct ccapi_error *err)
{
    struct contacts_call *a = arg;
    ccapi_contact_page_clear(&a->page);
    if (a->email)
        return ccapi_contacts_find_by_email(w->cc, a->email, &a->page, err);
    const char *lists[] = {a->list_id};
    return ccapi_contacts_page(w->cc, lists, 1, NULL, a->next, &a->page, err);
}

/* ---- sync context for one run ---- */

struct run {
    struct sync_worker *w;
    const char *association;
    const char *group;
    char p[128];
    struct group_state gs;
    int64_t retry_ms;
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
    return cmd(r->w->redis, "HDEL %sg:%s journal", r->p, r->group);
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
            snprintf(err->message, sizeof err->message, "activity %s did not finish", activity_id);
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
static enum call_outcome recover_create(struct run *r, const char *name, bool *adopted,
                                        struct ccapi_error *err)
{
    struct list_find_call f = {.name = name};
    *adopted = false;
    enum call_outcome oc = cc_call(r->w, r->association, "lists_find", true, do_list_find, &f, err);
    if (oc == CALL_OK) {
        for (size_t i = 0; i < f.page.n_lists; i++) {
            const struct ccapi_list *l = &f.page.lists[i];
            if (!l->deleted && strcmp(l->name, name) == 0) {
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

static enum sync_result create_list(struct run *r)
{
    struct ccapi_error err = {0};
    enum call_outcome oc;
    json_object *j = r->gs.journal[0] ? json_tokener_parse(r->gs.journal) : NULL;
    json_object *v;
    if (j && json_object_object_get_ex(j, "op", &v) &&
        strcmp(json_object_get_string(v), "create") == 0 &&
        json_object_object_get_ex(j, "name", &v)) {
        char name[LIST_NAME_MAX + 1];
        snprintf(name, sizeof name, "%s", json_object_get_string(v));
        bool adopted;
        oc = recover_create(r, name, &adopted, &err);
        if (oc != CALL_OK) {
            json_object_put(j);
            return call_failed(r, oc, &err, "look up a list");
        }
        if (adopted) {
            json_object_put(j);
            log_info("list_adopted", LOG_STR("association", r->association),
                     LOG_STR("group", r->group), LOG_STR("list_id", r->gs.list_id));
            return SYNC_DONE;
        }
    }
    json_object_put(j);

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
        json_object *jn = json_object_new_object();
        json_object_object_add(jn, "op", json_object_new_string("create"));
        json_object_object_add(jn, "name", json_object_new_string(name));
        bool journaled = write_journal(r, json_object_to_json_string(jn));
        json_object_put(jn);
        if (!journaled) {
            result = SYNC_REDIS;
            break;
        }
        struct list_create_call a = {.name = name};
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

/*
 * Reads every contact on the list and rebuilds the applied state from it:
 * contacts on the list are ON (with their contact_id); ON entries that are not
 * on the list any more are dropped (planned again: an unsubscribed contact is
 * then reported by CC's import and marked). UNSUB and REJ entries stay.
 * on_list (optional) receives the normalized emails found, for the caller.
 */
static enum call_outcome verify_list(struct run *r, struct ccapi_error *err)
{
    redisContext *c = r->w->redis;
    struct applied_set applied;
    if (load_applied(c, r->p, r->group, &applied) != 0)
        return CALL_REDIS;
    char *found = calloc(applied.n ? applied.n : 1, 1);
    struct contacts_call a = {.list_id = r->gs.list_id};
    char *next = NULL;
    size_t pending = 0;
    enum call_outcome oc;
    do {
        a.next = next;
        oc = cc_call(r->w, r->association, "contacts_page", true, do_contacts, &a, err);
        free(next);
        next = NULL;
        if (oc != CALL_OK)
            break;
        for (size_t i = 0; i < a.page.n_contacts; i++) {
            const struct ccapi_contact *ct = &a.page.contacts[i];
            char email[EMAIL_BUF_SIZE];
            if (!ct->email || email_normalize(ct->email, email, sizeof email) != 0)
                continue;
            bool on = false;
            for (size_t k = 0; k < ct->n_list_ids; k++)
                on = on || strcmp(ct->list_ids[k], r->gs.list_id) == 0;
            if (!on || ct->deleted)
                continue;
            const char *fn = ct->first_name, *ln = ct->last_name;
            for (size_t k = 0; k < applied.n; k++) {
                if (strcmp(applied.items[k].email, email) == 0) {
                    found[k] = 1;
                    fn = applied.items[k].first_name; /* what we sent stays the reference */
                    ln = applied.items[k].last_name;
                    break;
                }
            }
            put_applied(c, r->p, r->group, email, "on", ct->contact_id, fn, ln);
            pending++;
        }
        /* Read this page's replies now: the next cc_call talks to Redis on the
         * same connection (lease, budget) and would read them as its own. */
        if (!flush_replies(c, &pending)) {
            oc = CALL_REDIS;
            break;
        }
        if (a.page.next_href)
            next = strdup(a.page.next_href);
    } while (next);
    ccapi_contact_page_clear(&a.page);
    for (size_t k = 0; oc == CALL_OK && k < applied.n; k++) {
        if (!found[k] && applied.items[k].status == APPLIED_ON_LIST) {
            redisAppendCommand(c, "HDEL %sap:%s %s", r->p, r->group, applied.items[k].email);
            pending++;
        }
    }
    if (!flush_replies(c, &pending) && oc == CALL_OK)
        oc = CALL_REDIS;
    free(found);
    applied_free(&applied);
    return oc;
}

static const char set_cid_script[] =
    "local v = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "if not v then return 0 end\n"
    "local a = cjson.decode(v)\n"
    "a[2] = ARGV[2]\n"
    "redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(a))\n"
    "return 1\n";

/* LEARN: contact ids of contacts to remove. A few are looked up by email; more
 * than a page's worth are learned by reading the list (one request per 500). */
static enum call_outcome learn(struct run *r, const struct plan_op *op, size_t list_size,
                               struct ccapi_error *err)
{
    size_t pages = list_size / CCAPI_PAGE_LIMIT + 1;
    if (op->n_emails > pages)
        return verify_list(r, err);
    redisContext *c = r->w->redis;
    for (size_t i = 0; i < op->n_emails; i++) {
        struct contacts_call a = {.email = op->emails[i]};
        enum call_outcome oc = cc_call(r->w, r->association, "contacts_find", true, do_contacts, &a, err);
        if (oc != CALL_OK) {
            ccapi_contact_page_clear(&a.page);
            return oc;
        }
        bool on = false;
        const struct ccapi_contact *ct = a.page.n_contacts ? &a.page.contacts[0] : NULL;
        for (size_t k = 0; ct && k < ct->n_list_ids; k++)
            on = on || strcmp(ct->list_ids[k], r->gs.list_id) == 0;
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
            return CALL_REDIS;
    }
    return CALL_OK;
}

/* ---- the list was deleted in CC ---- */

static enum sync_result mark_list_deleted(struct run *r)
{
    redisContext *c = r->w->redis;
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

/* After a 404 on a list operation: is the list gone, or was it something else? */
static enum sync_result check_list_gone(struct run *r, const struct ccapi_error *first)
{
    struct ccapi_error err;
    struct list_get_call a = {.list_id = r->gs.list_id};
    enum call_outcome oc = cc_call(r->w, r->association, "list_get", true, do_list_get, &a, &err);
    bool deleted = a.list.deleted;
    ccapi_list_clear(&a.list);
    if ((oc == CALL_FAILED && err.status == CCAPI_NOT_FOUND) || (oc == CALL_OK && deleted))
        return mark_list_deleted(r);
    if (oc != CALL_OK)
        return call_failed(r, oc, &err, "read the list");
    return call_failed(r, CALL_FAILED, first, "update the list");
}

/* ---- the bulk operations ---- */

static bool journal_op(struct run *r, const char *op, const char *activity)
{
    json_object *j = json_object_new_object();
    json_object_object_add(j, "op", json_object_new_string(op));
    json_object_object_add(j, "activity", json_object_new_string(activity));
    bool ok = write_journal(r, json_object_to_json_string(j));
    json_object_put(j);
    return ok;
}

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

static enum sync_result run_import(struct run *r, const struct plan_op *op)
{
    redisContext *c = r->w->redis;
    struct ccapi_error err;
    struct ccapi_import_contact *cs = calloc(op->n_contacts, sizeof *cs);
    if (!cs)
        return SYNC_RETRY;
    for (size_t i = 0; i < op->n_contacts; i++) {
        cs[i].email = op->contacts[i].email;
        cs[i].first_name = op->contacts[i].first_name;
        cs[i].last_name = op->contacts[i].last_name;
    }
    if (!journal_op(r, "import", "")) {
        free(cs);
        return SYNC_REDIS;
    }
    struct import_call a = {.contacts = cs, .n = op->n_contacts, .list_id = r->gs.list_id};
    enum call_outcome oc = cc_call(r->w, r->association, "contacts_import", false, do_import, &a, &err);
    free(cs);
    if (oc == CALL_UNCERTAIN) {
        r->retry_ms = 1000; /* the journal makes the next run read the list back first */
        return SYNC_RETRY;
    }
    if (oc == CALL_FAILED && err.status == CCAPI_NOT_FOUND)
        return check_list_gone(r, &err);
    if (oc != CALL_OK) {
        clear_journal(r);
        return call_failed(r, oc, &err, "import contacts");
    }
    log_info("contacts_import_sent", LOG_STR("association", r->association),
             LOG_STR("group", r->group), LOG_STR("list_id", r->gs.list_id),
             LOG_INT("contacts", (long long)op->n_contacts), LOG_STR("activity", a.activity));
    if (!journal_op(r, "import", a.activity))
        return SYNC_REDIS;
    struct ccapi_activity act = {0};
    oc = wait_activity(r, a.activity, &act, &err);
    if (oc != CALL_OK)
        return call_failed(r, oc, &err, "report on an import");

    /* Rejected contacts are named in the activity's errors. */
    size_t appends = 0;
    char *rejected = calloc(op->n_contacts, 1);
    for (size_t e = 0; e < act.n_errors; e++) {
        char norm[EMAIL_BUF_SIZE];
        if (!act.errors[e].email || email_normalize(act.errors[e].email, norm, sizeof norm) != 0)
            continue;
        for (size_t i = 0; i < op->n_contacts; i++)
            if (strcmp(op->contacts[i].email, norm) == 0)
                rejected[i] = 1;
    }
    for (size_t i = 0; i < op->n_contacts; i++) {
        put_applied(c, r->p, r->group, op->contacts[i].email, rejected[i] ? "rej" : "on", "",
                    op->contacts[i].first_name, op->contacts[i].last_name);
        appends++;
    }
    bool ok = flush_appends(c, appends);
    bool finished_ok = act.state == CCAPI_ACTIVITY_COMPLETED;
    long cannot_add = act.cannot_add_to_list_count;
    ccapi_activity_clear(&act);
    if (!ok) {
        free(rejected);
        return SYNC_REDIS;
    }
    if (cannot_add > 0 || !finished_ok) {
        /* Some were not added (unsubscribed in CC), or the job did not finish:
         * read the list back; contacts of this import missing from it were
         * refused by CC as unsubscribed (never re-added). */
        oc = verify_list(r, &err);
        if (oc != CALL_OK) {
            free(rejected);
            return call_failed(r, oc, &err, "read the list");
        }
        appends = 0;
        for (size_t i = 0; finished_ok && i < op->n_contacts; i++) {
            if (rejected[i])
                continue;
            redisReply *rep = redisCommand(c, "HEXISTS %sap:%s %s", r->p, r->group,
                                           op->contacts[i].email);
            bool present = rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 1;
            if (rep)
                freeReplyObject(rep);
            if (!present) {
                put_applied(c, r->p, r->group, op->contacts[i].email, "unsub", "",
                            op->contacts[i].first_name, op->contacts[i].last_name);
                appends++;
                /* the next HEXISTS must not read this HSET's reply as its own */
                if (!flush_replies(c, &appends)) {
                    free(rejected);
                    return SYNC_REDIS;
                }
            }
        }
        if (!flush_appends(c, appends)) {
            free(rejected);
            return SYNC_REDIS;
        }
    }
    free(rejected);
    return clear_journal(r) ? SYNC_DONE : SYNC_REDIS;
}

static enum sync_result run_remove(struct run *r, const struct plan_op *op,
                                   const struct applied_set *applied)
{
    redisContext *c = r->w->redis;
    struct ccapi_error err;
    if (!journal_op(r, "remove", ""))
        return SYNC_REDIS;
    struct remove_call a = {.ids = op->contact_ids, .n = op->n_contact_ids, .list_id = r->gs.list_id};
    enum call_outcome oc = cc_call(r->w, r->association, "memberships_remove", false, do_remove, &a, &err);
    if (oc == CALL_UNCERTAIN) {
        r->retry_ms = 1000;
        return SYNC_RETRY;
    }
    if (oc == CALL_FAILED && err.status == CCAPI_NOT_FOUND)
        return check_list_gone(r, &err);
    if (oc != CALL_OK) {
        clear_journal(r);
        return call_failed(r, oc, &err, "remove contacts from the list");
    }
    log_info("memberships_remove_sent", LOG_STR("association", r->association),
             LOG_STR("group", r->group), LOG_STR("list_id", r->gs.list_id),
             LOG_INT("contacts", (long long)op->n_contact_ids), LOG_STR("activity", a.activity));
    if (!journal_op(r, "remove", a.activity))
        return SYNC_REDIS;
    struct ccapi_activity act = {0};
    oc = wait_activity(r, a.activity, &act, &err);
    bool completed = act.state == CCAPI_ACTIVITY_COMPLETED;
    ccapi_activity_clear(&act);
    if (oc != CALL_OK)
        return call_failed(r, oc, &err, "report on a removal");
    if (!completed) {
        oc = verify_list(r, &err);
        if (oc != CALL_OK)
            return call_failed(r, oc, &err, "read the list");
        return clear_journal(r) ? SYNC_DONE : SYNC_REDIS;
    }
    size_t appends = 0;
    for (size_t i = 0; i < op->n_contact_ids; i++) {
        for (size_t k = 0; k < applied->n; k++) {
            if (applied->items[k].contact_id && strcmp(applied->items[k].contact_id, op->contact_ids[i]) == 0) {
                redisAppendCommand(c, "HDEL %sap:%s %s", r->p, r->group, applied->items[k].email);
                appends++;
                break;
            }
        }
    }
    if (!flush_appends(c, appends))
        return SYNC_REDIS;
    return clear_journal(r) ? SYNC_DONE : SYNC_REDIS;
}

static enum sync_result delete_list(struct run *r, const char *why)
{
    struct ccapi_error err;
    struct list_delete_call a = {.list_id = r->gs.list_id};
    enum call_outcome oc = cc_call(r->w, r->association, "list_delete", true, do_list_delete, &a, &err);
    if (oc != CALL_OK && !(oc == CALL_FAILED && err.status == CCAPI_NOT_FOUND))
        return call_failed(r, oc, &err, "delete the list");
    redisContext *c = r->w->redis;
    bool ok = facts_audit(c, r->association, r->group, "list_deleted", r->gs.list_id,
                          r->gs.list_name, why) == 0 &&
              cmd(c, "HDEL %sg:%s list_id list_name list_state journal", r->p, r->group) &&
              cmd(c, "DEL %sap:%s", r->p, r->group);
    log_info("list_deleted", LOG_STR("association", r->association), LOG_STR("group", r->group),
             LOG_STR("list_id", r->gs.list_id), LOG_STR("reason", why));
    r->gs.list_id[0] = '\0';
    return ok ? SYNC_DONE : SYNC_REDIS;
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

/* A journal left by an earlier run: find out what CC did before anything else. */
static enum sync_result recover(struct run *r)
{
    json_object *j = json_tokener_parse(r->gs.journal);
    json_object *v;
    char op[16] = ""; /* a copy: it is logged after j is released */
    if (j && json_object_object_get_ex(j, "op", &v))
        snprintf(op, sizeof op, "%s", json_object_get_string(v));
    if (strcmp(op, "import") != 0 && strcmp(op, "remove") != 0) {
        json_object_put(j);
        return SYNC_DONE; /* "create" is recovered by create_list */
    }
    char activity[CCAPI_ID_SIZE] = "";
    if (json_object_object_get_ex(j, "activity", &v))
        snprintf(activity, sizeof activity, "%s", json_object_get_string(v));
    json_object_put(j);
    struct ccapi_error err;
    if (activity[0]) {
        struct ccapi_activity act = {0};
        enum call_outcome oc = wait_activity(r, activity, &act, &err);
        ccapi_activity_clear(&act);
        if (oc != CALL_OK && !(oc == CALL_FAILED && err.status == CCAPI_NOT_FOUND))
            return call_failed(r, oc, &err, "report on an earlier request");
    } else {
        /* The answer was lost before its activity id was written down: if the
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
             LOG_STR("journal", op), LOG_STR("activity", activity[0] ? activity : NULL));
    return clear_journal(r) ? SYNC_DONE : SYNC_REDIS;
}

static enum sync_result converge(struct run *r)
{
    redisContext *c = r->w->redis;
    for (int round = 0; round < MAX_ROUNDS; round++) {
        struct member_set members;
        struct applied_set applied;
        if (load_members(c, r->p, r->group, &members) != 0)
            return SYNC_REDIS;
        if (load_applied(c, r->p, r->group, &applied) != 0) {
            members_free(&members);
            return SYNC_REDIS;
        }
        struct plan_group pg = {.id = r->group, .name = r->gs.name, .sync_enabled = true,
                                .list = {PLAN_LIST_ACTIVE, r->gs.list_id, r->gs.list_name}};
        struct plan pl;
        struct plan_error perr;
        if (plan_build(&pg, members.members, members.n, applied.items, applied.n, NULL, &pl,
                       &perr) != 0) {
            log_error("plan_failed", LOG_STR("association", r->association),
                      LOG_STR("group", r->group), LOG_STR("error", perr.message));
            members_free(&members);
            applied_free(&applied);
            r->retry_ms = 60000;
            return SYNC_RETRY;
        }
        bool ok = write_counts(r, &pl);
        enum sync_result res = ok ? SYNC_DONE : SYNC_REDIS;
        if (ok && pl.n_ops == 0) {
            char now[32];
            rfc3339_format(store_now_ns(), now, sizeof now);
            ok = cmd(c, "HSET %sg:%s state synced last_synced_at %s", r->p, r->group, now) &&
                 clear_error(c, r->p, r->group);
            plan_free(&pl);
            members_free(&members);
            applied_free(&applied);
            return ok ? SYNC_DONE : SYNC_REDIS;
        }
        for (size_t i = 0; res == SYNC_DONE && i < pl.n_ops; i++) {
            const struct plan_op *op = &pl.ops[i];
            struct ccapi_error err;
            if (op->type == PLAN_OP_LEARN) {
                enum call_outcome oc = learn(r, op, applied.n, &err);
                if (oc == CALL_FAILED && err.status == CCAPI_NOT_FOUND)
                    res = check_list_gone(r, &err);
                else if (oc != CALL_OK)
                    res = call_failed(r, oc, &err, "look up contacts");
                break; /* plan again with what was learned */
            } else if (op->type == PLAN_OP_REMOVE) {
                res = run_remove(r, op, &applied);
            } else if (op->type == PLAN_OP_IMPORT) {
                res = run_import(r, op);
            }
            if (r->gs.list_deleted_in_cc)
                break;
        }
        plan_free(&pl);
        members_free(&members);
        applied_free(&applied);
        if (res != SYNC_DONE)
            return res;
        if (load_group(c, r->p, r->group, &r->gs) != 0)
            return SYNC_REDIS;
        if (r->gs.list_deleted_in_cc)
            return SYNC_DONE;
    }
    r->retry_ms = 1000;
    return SYNC_RETRY;
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

enum sync_result sync_group(struct sync_worker *w, const char *association, const char *group_id,
                            int64_t *retry_ms)
{
    struct run r = {.w = w, .association = association, .group = group_id, .retry_ms = 0};
    prefix_of(association, r.p, sizeof r.p);
    w->token_association[0] = '\0'; /* read the token afresh: it may be near expiry */
    redisContext *c = w->redis;
    if (load_group(c, r.p, group_id, &r.gs) != 0)
        return SYNC_REDIS;
    enum sync_result res = SYNC_DONE;
    if (!r.gs.exists)
        goto out;
    redisReply *folding = redisCommand(c, "EXISTS %sg:%s:folding", r.p, group_id);
    bool half_folded = folding && folding->type == REDIS_REPLY_INTEGER && folding->integer == 1;
    if (folding)
        freeReplyObject(folding);
    if (c->err)
        return SYNC_REDIS;
    if (half_folded) {
        r.retry_ms = 250; /* a snapshot is being folded: sync the whole of it */
        res = SYNC_RETRY;
        goto out;
    }
    if (r.gs.journal[0] && r.gs.list_id[0] && !r.gs.list_deleted_in_cc) {
        res = recover(&r);
        if (res != SYNC_DONE || r.gs.list_deleted_in_cc)
            goto out;
    }
    if (r.gs.deleted || !r.gs.sync) {
        if (r.gs.list_id[0] && !r.gs.list_deleted_in_cc) {
            res = delete_list(&r, r.gs.deleted ? "the group was deleted in Novi"
                                               : "sync to Constant Contact was turned off");
            if (res != SYNC_DONE)
                goto out;
        }
        if (r.gs.deleted) {
            char keys[3][300];
            snprintf(keys[0], sizeof keys[0], "%sg:%s", r.p, group_id);
            snprintf(keys[1], sizeof keys[1], "%sgm:%s", r.p, group_id);
            snprintf(keys[2], sizeof keys[2], "%sap:%s", r.p, group_id);
            char groups[200];
            snprintf(groups, sizeof groups, "%sgroups", r.p);
            const char *args[] = {keys[0], keys[1], keys[2], groups, group_id};
            redisReply *rep = script_eval(c, forget_group_script, 4, 5, args);
            res = store_reply_ok(c, rep) ? SYNC_DONE : SYNC_REDIS;
            if (rep)
                freeReplyObject(rep);
            goto out;
        }
        bool ok = cmd(c, "HSET %sg:%s state disabled pending 0", r.p, group_id) &&
                  cmd(c, "HDEL %sg:%s list_id list_name list_state journal resync", r.p, group_id) &&
                  cmd(c, "DEL %sap:%s", r.p, group_id) && clear_error(c, r.p, group_id);
        res = ok ? SYNC_DONE : SYNC_REDIS;
        goto out;
    }
    if (r.gs.resync) {
        struct ccapi_error err;
        if (r.gs.list_deleted_in_cc || !r.gs.list_id[0]) {
            if (!cmd(c, "HDEL %sg:%s list_id list_name list_state journal", r.p, group_id) ||
                !cmd(c, "DEL %sap:%s", r.p, group_id)) {
                res = SYNC_REDIS;
                goto out;
            }
            r.gs.list_id[0] = '\0';
            r.gs.list_deleted_in_cc = false;
            r.gs.journal[0] = '\0';
        } else {
            enum call_outcome oc = verify_list(&r, &err);
            if (oc == CALL_FAILED && err.status == CCAPI_NOT_FOUND) {
                res = check_list_gone(&r, &err);
                goto out;
            }
            if (oc != CALL_OK) {
                res = call_failed(&r, oc, &err, "read the list");
                goto out;
            }
        }
        if (!cmd(c, "HDEL %sg:%s resync", r.p, group_id) || !clear_error(c, r.p, group_id)) {
            res = SYNC_REDIS;
            goto out;
        }
    } else if (r.gs.list_deleted_in_cc) {
        goto out; /* waits for an admin: resync or toggle */
    } else if (r.gs.verify && r.gs.list_id[0]) {
        /* reconcile saw the list's size differ from what ccsync applied */
        struct ccapi_error err;
        enum call_outcome oc = verify_list(&r, &err);
        if (oc == CALL_FAILED && err.status == CCAPI_NOT_FOUND) {
            res = check_list_gone(&r, &err);
            goto out;
        }
        if (oc != CALL_OK) {
            res = call_failed(&r, oc, &err, "read the list");
            goto out;
        }
    }
    if (r.gs.verify && !cmd(c, "HDEL %sg:%s verify", r.p, group_id)) {
        res = SYNC_REDIS;
        goto out;
    }
    if (!cmd(c, "HSET %sg:%s state syncing", r.p, group_id)) {
        res = SYNC_REDIS;
        goto out;
    }
    if (!r.gs.list_id[0]) {
        res = create_list(&r);
        if (res != SYNC_DONE || !r.gs.list_id[0])
            goto out;
    }
    res = converge(&r);
out:
    *retry_ms = r.retry_ms;
    return res;
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
        if (!l || l->deleted) {
            res = mark_list_deleted(&r);
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
