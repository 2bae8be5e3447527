/*
 * admin.c - health endpoints and the association admin API.
 *
 * Secrets go into Redis and never come back out: the association view says
 * only whether each is set, with the token's expiry and the connection state.
 */
#include "ccsync/admin.h"

#include <hiredis/hiredis.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccsync/app.h"
#include "ccsync/facts.h"
#include "ccsync/queue.h"
#include "ccsync/ratelimit.h"
#include "ccsync/keys.h"
#include "ccsync/schedule.h"
#include "ccsync/http.h"
#include "ccsync/ingest.h"
#include "ccsync/log.h"
#include "ccsync/metrics.h"
#include "ccsync/script.h"
#include "ccsync/store.h"
#include "ccsync/webhook.h"

static json_object *time_or_null(int64_t ns)
{
    if (ns <= 0)
        return NULL;
    char buf[32];
    rfc3339_format(ns, buf, sizeof buf);
    return json_object_new_string(buf);
}

int admin_livez(struct app *app, struct http_request *req)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "status", json_object_new_string("alive"));
    http_reply_json(req, 200, o);
    return HTTP_DONE;
}

/* PING on a pooled connection: is Redis answering right now? */
static bool redis_answers(struct app *app, char *why, size_t size)
{
    redisContext *c = store_pool_get(app->pool, why, size);
    if (!c)
        return false;
    redisReply *r = redisCommand(c, "PING");
    bool ok = store_reply_ok(c, r);
    if (!ok)
        snprintf(why, size, "Redis did not answer PING: %s", c->err ? c->errstr : "error reply");
    if (r)
        freeReplyObject(r);
    store_pool_put(app->pool, c, ok);
    return ok;
}

int admin_readyz(struct app *app, struct http_request *req)
{
    char why[256] = "";
    bool draining = atomic_load(&app->draining);
    bool redis_ok = redis_answers(app, why, sizeof why);
    int workers = atomic_load(&app->workers_up);
    bool workers_ok = workers >= app->cfg->workers;
    json_object *o = json_object_new_object();
    json_object_object_add(o, "redis", json_object_new_string(redis_ok ? "ok" : "unreachable"));
    json_object_object_add(o, "workers", json_object_new_int(workers));
    json_object_object_add(o, "draining", json_object_new_boolean(draining));
    if (draining || !redis_ok || !workers_ok) {
        const char *reason = draining     ? "the process is shutting down"
                             : !redis_ok  ? why
                                          : "worker threads are not all running";
        json_object *err = json_object_new_object();
        json_object_object_add(err, "code", json_object_new_string("not_ready"));
        json_object_object_add(err, "message", json_object_new_string(reason));
        json_object_object_add(o, "error", err);
        json_object_object_add(o, "status", json_object_new_string("not_ready"));
        http_reply_json(req, 503, o);
    } else {
        json_object_object_add(o, "status", json_object_new_string("ready"));
        http_reply_json(req, 200, o);
    }
    return HTTP_DONE;
}

/* Queue depth is read from Redis at scrape time: the stream is shared by all
 * processes, so no process's own counter could say it. */
static void refresh_queue_gauges(struct app *app)
{
    char err[128];
    redisContext *c = store_pool_get(app->pool, err, sizeof err);
    if (!c)
        return;
    redisReply *r = redisCommand(c, "XLEN " STORE_EVENTS_STREAM);
    bool ok = store_reply_ok(c, r);
    if (ok && r->type == REDIS_REPLY_INTEGER)
        metrics_set("ccsync_queue_depth", "state=\"stream\"", (double)r->integer);
    if (r)
        freeReplyObject(r);
    store_pool_put(app->pool, c, ok);
}

int admin_metrics(struct app *app, struct http_request *req)
{
    refresh_queue_gauges(app);
    char *text;
    size_t len;
    if (metrics_render(&text, &len) != 0) {
        http_reply_error(req, 500, "internal", "could not render metrics");
        return HTTP_DONE;
    }
    http_reply(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    return HTTP_DONE;
}

static json_object *association_view(const struct association *a)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "association_id", json_object_new_string(a->id));
    json_object_object_add(o, "webhook_secret_set", json_object_new_boolean(a->webhook_secret[0]));
    json_object *cc = json_object_new_object();
    json_object_object_add(cc, "access_token_set", json_object_new_boolean(a->cc_access_token[0]));
    json_object_object_add(cc, "refresh_token_set",
                           json_object_new_boolean(a->cc_refresh_token[0]));
    json_object_object_add(cc, "expires_at", time_or_null(a->cc_expires_at_ns));
    json_object_object_add(cc, "state", json_object_new_string(a->cc_state));
    if (a->cc_last_error[0]) {
        json_object *e = json_object_new_object();
        json_object_object_add(e, "message", json_object_new_string(a->cc_last_error));
        json_object_object_add(e, "at", time_or_null(a->cc_last_error_at_ns));
        json_object_object_add(cc, "last_error", e);
    } else {
        json_object_object_add(cc, "last_error", NULL);
    }
    json_object_object_add(o, "constant_contact", cc);
    json_object_object_add(o, "created_at", time_or_null(a->created_at_ns));
    json_object_object_add(o, "updated_at", time_or_null(a->updated_at_ns));
    return o;
}

static void reply_store_unavailable(struct http_request *req, const char *why)
{
    http_add_header(req, "Retry-After", "5");
    http_reply_error(req, 503, "redis_unavailable", "the state store is unavailable: %s", why);
}

/* Reads and answers the association; 404 when unknown. */
static int answer_association(struct app *app, struct http_request *req, const char *id, int status)
{
    char err[256];
    redisContext *c = store_pool_get(app->pool, err, sizeof err);
    if (!c) {
        reply_store_unavailable(req, err);
        return HTTP_DONE;
    }
    struct association *a = malloc(sizeof *a);
    int found = a ? store_association_get(c, id, a) : -1;
    store_pool_put(app->pool, c, found >= 0);
    if (found < 0)
        reply_store_unavailable(req, "read failed");
    else if (found == 0)
        http_reply_error(req, 404, "unknown_association", "no association \"%s\"", id);
    else
        http_reply_json(req, status, association_view(a));
    free(a);
    return HTTP_DONE;
}

int admin_get_association(struct app *app, struct http_request *req)
{
    const char *id = http_param(req, 0);
    http_set_log_field(req, "association", id);
    return answer_association(app, req, id, 200);
}

/* Reads an optional string member; false (with the reply set) when it has the wrong type. */
static bool optional_string(struct http_request *req, json_object *obj, const char *key,
                            const char *path, size_t max, const char **out)
{
    json_object *v;
    *out = NULL;
    if (!json_object_object_get_ex(obj, key, &v) || v == NULL)
        return true;
    if (!json_object_is_type(v, json_type_string)) {
        http_reply_error(req, 400, "invalid_field", "%s must be a string", path);
        return false;
    }
    const char *s = json_object_get_string(v);
    if (*s == '\0' || strlen(s) > max) {
        http_reply_error(req, 400, "invalid_field", "%s must be 1-%zu characters", path, max);
        return false;
    }
    *out = s;
    return true;
}

static bool parse_update(struct http_request *req, json_object *root, struct association_update *u)
{
    memset(u, 0, sizeof *u);
    if (!json_object_is_type(root, json_type_object)) {
        http_reply_error(req, 400, "invalid_body", "the body must be a JSON object");
        return false;
    }
    json_object_object_foreach(root, key, val)
    {
        (void)val;
        if (strcmp(key, "webhook_secret") != 0 && strcmp(key, "constant_contact") != 0) {
            http_reply_error(req, 400, "invalid_field",
                             "unknown field \"%s\" (expected webhook_secret, constant_contact)", key);
            return false;
        }
    }
    if (!optional_string(req, root, "webhook_secret", "webhook_secret", 255, &u->webhook_secret))
        return false;
    if (u->webhook_secret && !webhook_secret_valid(u->webhook_secret)) {
        http_reply_error(req, 400, "invalid_field",
                         "webhook_secret must be whsec_ followed by base64 (as Novi shows it)");
        return false;
    }
    json_object *cc;
    if (!json_object_object_get_ex(root, "constant_contact", &cc) || cc == NULL)
        return true;
    if (!json_object_is_type(cc, json_type_object)) {
        http_reply_error(req, 400, "invalid_field", "constant_contact must be an object");
        return false;
    }
    json_object_object_foreach(cc, ckey, cval)
    {
        (void)cval;
        if (strcmp(ckey, "access_token") && strcmp(ckey, "refresh_token") &&
            strcmp(ckey, "expires_at")) {
            http_reply_error(req, 400, "invalid_field",
                             "unknown field \"constant_contact.%s\" (expected access_token, "
                             "refresh_token, expires_at)",
                             ckey);
            return false;
        }
    }
    const char *expires;
    if (!optional_string(req, cc, "access_token", "constant_contact.access_token",
                         ASSOC_TOKEN_MAX - 1, &u->cc_access_token) ||
        !optional_string(req, cc, "refresh_token", "constant_contact.refresh_token",
                         ASSOC_TOKEN_MAX - 1, &u->cc_refresh_token) ||
        !optional_string(req, cc, "expires_at", "constant_contact.expires_at", 64, &expires))
        return false;
    if (expires && rfc3339_parse(expires, &u->cc_expires_at_ns) != 0) {
        http_reply_error(req, 400, "invalid_field",
                         "constant_contact.expires_at must be an RFC 3339 date-time");
        return false;
    }
    if (!u->cc_access_token && !u->cc_refresh_token && !expires) {
        http_reply_error(req, 400, "invalid_field",
                         "constant_contact needs access_token, refresh_token or expires_at");
        return false;
    }
    u->has_cc = true;
    return true;
}

static int put_association(struct app *app, struct http_request *req, const char *id,
                           const struct association_update *u)
{
    char err[256];
    redisContext *c = store_pool_get(app->pool, err, sizeof err);
    if (!c) {
        reply_store_unavailable(req, err);
        return HTTP_DONE;
    }
    /* A new association cannot take webhooks without its secret. */
    redisReply *r = redisCommand(c, "EXISTS " STORE_PREFIX "a:%s", id);
    bool ok = store_reply_ok(c, r) && r->type == REDIS_REPLY_INTEGER;
    bool exists = ok && r->integer == 1;
    if (r)
        freeReplyObject(r);
    if (!ok) {
        store_pool_put(app->pool, c, false);
        reply_store_unavailable(req, "read failed");
        return HTTP_DONE;
    }
    if (!exists && !u->webhook_secret) {
        store_pool_put(app->pool, c, true);
        http_reply_error(req, 400, "invalid_field",
                         "webhook_secret is required when creating an association");
        return HTTP_DONE;
    }
    bool created;
    ok = store_association_put(c, id, u, store_now_ns(), &created) == 0;
    store_pool_put(app->pool, c, ok);
    if (!ok) {
        reply_store_unavailable(req, "write failed");
        return HTTP_DONE;
    }
    if (u->webhook_secret && app->ingest)
        ingest_forget_secret(app->ingest, id);
    log_info(created ? "association_created" : "association_updated", LOG_STR("association", id),
             LOG_INT("webhook_secret_changed", u->webhook_secret != NULL),
             LOG_INT("credentials_changed", u->has_cc));
    return answer_association(app, req, id, 200);
}

int admin_put_association(struct app *app, struct http_request *req)
{
    const char *id = http_param(req, 0);
    http_set_log_field(req, "association", id);
    size_t len;
    const char *body = http_body(req, &len);
    json_tokener *tok = json_tokener_new();
    json_object *root = json_tokener_parse_ex(tok, body, (int)len);
    bool complete = json_tokener_get_error(tok) == json_tokener_success &&
                    json_tokener_get_parse_end(tok) == len;
    json_tokener_free(tok);
    if (!root || !complete) {
        json_object_put(root);
        http_reply_error(req, 400, "malformed_json", "the body is not valid JSON");
        return HTTP_DONE;
    }
    struct association_update u;
    int ret = HTTP_DONE;
    if (parse_update(req, root, &u))
        ret = put_association(app, req, id, &u);
    json_object_put(root);
    return ret;
}

int admin_bootstrap_association(struct app *app, char *err, size_t err_size)
{
    const struct config *cfg = app->cfg;
    if (!cfg->boot_association_id[0])
        return 0;
    struct association_update u = {.webhook_secret = cfg->boot_webhook_secret};
    if (cfg->boot_cc_access_token[0] || cfg->boot_cc_refresh_token[0]) {
        u.has_cc = true;
        u.cc_access_token = cfg->boot_cc_access_token[0] ? cfg->boot_cc_access_token : NULL;
        u.cc_refresh_token = cfg->boot_cc_refresh_token[0] ? cfg->boot_cc_refresh_token : NULL;
        if (cfg->boot_cc_expires_at[0])
            rfc3339_parse(cfg->boot_cc_expires_at, &u.cc_expires_at_ns);
    }
    redisContext *c = store_pool_get(app->pool, err, err_size);
    if (!c)
        return -1;
    /* Only what differs is written, so a restart does not reset a connection
     * whose refresh token has rotated since. */
    struct association *a = calloc(1, sizeof *a);
    int found = a ? store_association_get(c, cfg->boot_association_id, a) : -1;
    if (found == 1) {
        if (strcmp(a->webhook_secret, cfg->boot_webhook_secret) == 0)
            u.webhook_secret = NULL;
        if (u.has_cc && a->credentials_version > 0)
            u.has_cc = false; /* tokens stored earlier rotate; the environment's are stale */
    }
    free(a);
    bool created = false;
    int rc = found < 0 ? -1 : store_association_put(c, cfg->boot_association_id, &u,
                                                     store_now_ns(), &created);
    store_pool_put(app->pool, c, rc == 0);
    if (rc != 0) {
        snprintf(err, err_size, "could not store association %s in Redis", cfg->boot_association_id);
        return -1;
    }
    log_info("association_bootstrapped", LOG_STR("association", cfg->boot_association_id),
             LOG_INT("created", created));
    return 0;
}

/* ---- groups, audit, service status, dead letters ---- */


static const char *group_fields[] = {
    "name",    "sync",           "deleted",      "list_id",        "list_name",     "list_state",
    "state",   "err_code",       "err_msg",      "err_since",      "c_members",     "c_no_email",
    "c_invalid_email", "c_duplicate_email", "c_do_not_email", "c_unsubscribed", "c_rejected",
    "c_in_list", "pending", "last_synced_at", "fact_ts"};
enum {
    GF_NAME, GF_SYNC, GF_DELETED, GF_LIST_ID, GF_LIST_NAME, GF_LIST_STATE, GF_STATE, GF_ERR_CODE,
    GF_ERR_MSG, GF_ERR_SINCE, GF_C_FIRST, GF_PENDING = GF_C_FIRST + 8, GF_LAST_SYNCED, GF_FACT_TS,
    GF_COUNT
};

static const char *str_of(redisReply *r, int i)
{
    redisReply *v = r->element[i];
    return v->type == REDIS_REPLY_STRING ? v->str : NULL;
}

static json_object *str_or_null(const char *s)
{
    return s && *s ? json_object_new_string(s) : NULL;
}

/* GroupStatus (DESIGN.md §4) from the group hash; NULL when there is no group fact. */
static json_object *group_view(redisReply *r, const char *group_id, bool dirty)
{
    if (!str_of(r, GF_FACT_TS))
        return NULL;
    const char *deleted = str_of(r, GF_DELETED);
    if (deleted && strcmp(deleted, "1") == 0 && !str_of(r, GF_LIST_ID))
        return NULL;
    json_object *o = json_object_new_object();
    json_object_object_add(o, "group_id", json_object_new_string(group_id));
    json_object_object_add(o, "group_name", json_object_new_string(str_of(r, GF_NAME) ? str_of(r, GF_NAME) : ""));
    bool sync = str_of(r, GF_SYNC) && strcmp(str_of(r, GF_SYNC), "1") == 0;
    json_object_object_add(o, "sync_enabled", json_object_new_boolean(sync));
    if (str_of(r, GF_LIST_ID)) {
        json_object *l = json_object_new_object();
        json_object_object_add(l, "list_id", json_object_new_string(str_of(r, GF_LIST_ID)));
        json_object_object_add(l, "name", str_or_null(str_of(r, GF_LIST_NAME)));
        json_object_object_add(o, "list", l);
    } else {
        json_object_object_add(o, "list", NULL);
    }
    const char *state = str_of(r, GF_STATE);
    const char *code = str_of(r, GF_ERR_CODE);
    if (!state)
        state = sync ? "pending" : "disabled";
    /* A transient error shows while the group waits to retry, state pending. */
    json_object_object_add(o, "state", json_object_new_string(state));
    if (code && *code) {
        json_object *e = json_object_new_object();
        json_object_object_add(e, "code", json_object_new_string(code));
        json_object_object_add(e, "message", str_or_null(str_of(r, GF_ERR_MSG)));
        json_object_object_add(e, "since", str_or_null(str_of(r, GF_ERR_SINCE)));
        json_object_object_add(o, "error", e);
    } else {
        json_object_object_add(o, "error", NULL);
    }
    static const char *count_names[] = {"members",     "no_email",        "invalid_email",
                                        "duplicate_email", "do_not_email", "unsubscribed",
                                        "rejected",    "in_list"};
    json_object *counts = json_object_new_object();
    for (int i = 0; i < 8; i++) {
        const char *v = str_of(r, GF_C_FIRST + i);
        json_object_object_add(counts, count_names[i], json_object_new_int64(v ? atoll(v) : 0));
    }
    json_object_object_add(o, "counts", counts);
    const char *pending = str_of(r, GF_PENDING);
    long long pend = pending ? atoll(pending) : 0;
    json_object_object_add(o, "pending_changes", json_object_new_int64(pend));
    json_object_object_add(o, "changes_queued", json_object_new_boolean(dirty));
    json_object_object_add(o, "last_synced_at", str_or_null(str_of(r, GF_LAST_SYNCED)));
    return o;
}

static redisReply *read_group(redisContext *c, const char *assoc, const char *g)
{
    char key[300];
    snprintf(key, sizeof key, STORE_PREFIX "a:%s:g:%s", assoc, g);
    const char *argv[2 + GF_COUNT];
    argv[0] = "HMGET";
    argv[1] = key;
    for (int i = 0; i < GF_COUNT; i++)
        argv[2 + i] = group_fields[i];
    redisReply *r = redisCommandArgv(c, 2 + GF_COUNT, argv, NULL);
    if (!store_reply_ok(c, r) || r->type != REDIS_REPLY_ARRAY || r->elements != GF_COUNT) {
        if (r)
            freeReplyObject(r);
        return NULL;
    }
    return r;
}

static bool group_dirty(redisContext *c, const char *assoc, const char *g)
{
    bool dirty = false;
    schedule_queued(c, assoc, g, &dirty);
    return dirty;
}

/* 1 the association exists, 0 not (404 answered), -1 Redis failed (503 answered). */
static int require_association(struct http_request *req, redisContext *c, const char *assoc)
{
    redisReply *r = redisCommand(c, "EXISTS " STORE_PREFIX "a:%s", assoc);
    bool ok = store_reply_ok(c, r) && r->type == REDIS_REPLY_INTEGER;
    int exists = ok ? (int)r->integer : -1;
    if (r)
        freeReplyObject(r);
    if (exists < 0)
        reply_store_unavailable(req, "read failed");
    else if (exists == 0)
        http_reply_error(req, 404, "unknown_association", "no association \"%s\"", assoc);
    return exists;
}

int admin_list_groups(struct app *app, struct http_request *req)
{
    const char *assoc = http_param(req, 0);
    http_set_log_field(req, "association", assoc);
    char err[256];
    redisContext *c = store_pool_get(app->pool, err, sizeof err);
    if (!c) {
        reply_store_unavailable(req, err);
        return HTTP_DONE;
    }
    bool ok = false;
    if (require_association(req, c, assoc) == 1) {
        redisReply *ids = redisCommand(c, "SMEMBERS " STORE_PREFIX "a:%s:groups", assoc);
        ok = store_reply_ok(c, ids) && ids->type == REDIS_REPLY_ARRAY;
        json_object *list = json_object_new_array();
        for (size_t i = 0; ok && i < ids->elements; i++) {
            redisReply *g = read_group(c, assoc, ids->element[i]->str);
            if (!g) {
                ok = false;
                break;
            }
            json_object *v = group_view(g, ids->element[i]->str, group_dirty(c, assoc, ids->element[i]->str));
            if (v)
                json_object_array_add(list, v);
            freeReplyObject(g);
        }
        if (ids)
            freeReplyObject(ids);
        if (ok) {
            json_object *o = json_object_new_object();
            json_object_object_add(o, "groups", list);
            http_reply_json(req, 200, o);
        } else {
            json_object_put(list);
            reply_store_unavailable(req, "read failed");
        }
    } else {
        ok = c->err == 0;
    }
    store_pool_put(app->pool, c, ok);
    return HTTP_DONE;
}

int admin_get_group(struct app *app, struct http_request *req)
{
    const char *assoc = http_param(req, 0), *g = http_param(req, 1);
    http_set_log_field(req, "association", assoc);
    char err[256];
    redisContext *c = store_pool_get(app->pool, err, sizeof err);
    if (!c) {
        reply_store_unavailable(req, err);
        return HTTP_DONE;
    }
    if (require_association(req, c, assoc) == 1) {
        redisReply *r = read_group(c, assoc, g);
        json_object *v = r ? group_view(r, g, group_dirty(c, assoc, g)) : NULL;
        if (!r)
            reply_store_unavailable(req, "read failed");
        else if (!v)
            http_reply_error(req, 404, "unknown_group", "no group \"%s\" in association \"%s\"", g, assoc);
        else
            http_reply_json(req, 200, v);
        if (r)
            freeReplyObject(r);
    }
    store_pool_put(app->pool, c, c->err == 0);
    return HTTP_DONE;
}

/* Flags the group for a full sync (a new list if it was deleted in CC) and queues it now. */
static const char resync_script[] =
    "if redis.call('HGET', KEYS[1], 'fact_ts') == false or redis.call('HGET', KEYS[1], 'deleted') == '1' then return 0 end\n"
    "if redis.call('HGET', KEYS[1], 'sync') ~= '1' then return -1 end\n"
    "redis.call('HSET', KEYS[1], 'resync', '1', 'state', 'pending')\n"
    "redis.call('HINCRBY', KEYS[1], 'gen', 1)\n"
    "redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])\n"
    "return 1\n";

int admin_resync_group(struct app *app, struct http_request *req)
{
    const char *assoc = http_param(req, 0), *g = http_param(req, 1);
    http_set_log_field(req, "association", assoc);
    char err[256];
    redisContext *c = store_pool_get(app->pool, err, sizeof err);
    if (!c) {
        reply_store_unavailable(req, err);
        return HTTP_DONE;
    }
    if (require_association(req, c, assoc) == 1) {
        char key[300], due[32];
        int64_t due_ms = store_now_ns() / 1000000;
        snprintf(key, sizeof key, STORE_PREFIX "a:%s:g:%s", assoc, g);
        snprintf(due, sizeof due, "%lld", (long long)due_ms);
        const char *args[] = {key, key_dirty(assoc).s, due, g};
        redisReply *r = script_eval(c, resync_script, 2, 4, args);
        long long rc = store_reply_ok(c, r) && r->type == REDIS_REPLY_INTEGER ? r->integer : -2;
        if (r)
            freeReplyObject(r);
        if (rc == 1 && schedule_wake(c, assoc, due_ms) != STORE_OK)
            rc = -2;
        if (rc == 1 && facts_audit(c, assoc, g, "resync_requested", NULL, NULL, "requested by an admin") != 0)
            rc = -2;
        if (rc == 1) {
            log_info("resync_requested", LOG_STR("association", assoc), LOG_STR("group", g));
            json_object *o = json_object_new_object();
            json_object_object_add(o, "group_id", json_object_new_string(g));
            json_object_object_add(o, "status", json_object_new_string("resync_queued"));
            http_reply_json(req, 202, o);
        } else if (rc == 0) {
            http_reply_error(req, 404, "unknown_group", "no group \"%s\" in association \"%s\"", g, assoc);
        } else if (rc == -1) {
            http_reply_error(req, 409, "sync_disabled",
                             "group \"%s\" does not sync to Constant Contact; turn its sync on in Novi", g);
        } else {
            reply_store_unavailable(req, "write failed");
        }
    }
    store_pool_put(app->pool, c, c->err == 0);
    return HTTP_DONE;
}

static bool parse_limit(struct http_request *req, long dflt, long max, long *out)
{
    const char *v = http_query(req, "limit");
    *out = dflt;
    if (!v)
        return true;
    char *end;
    long n = strtol(v, &end, 10);
    if (*v == '\0' || *end != '\0' || n < 1 || n > max) {
        http_reply_error(req, 400, "invalid_parameter", "limit must be a whole number from 1 to %ld", max);
        return false;
    }
    *out = n;
    return true;
}

int admin_audit(struct app *app, struct http_request *req)
{
    const char *assoc = http_param(req, 0);
    http_set_log_field(req, "association", assoc);
    long limit;
    if (!parse_limit(req, 100, 1000, &limit))
        return HTTP_DONE;
    char err[256];
    redisContext *c = store_pool_get(app->pool, err, sizeof err);
    if (!c) {
        reply_store_unavailable(req, err);
        return HTTP_DONE;
    }
    if (require_association(req, c, assoc) == 1) {
        redisReply *r = redisCommand(c, "LRANGE " STORE_PREFIX "a:%s:audit 0 %ld", assoc, limit - 1);
        if (store_reply_ok(c, r) && r->type == REDIS_REPLY_ARRAY) {
            json_object *entries = json_object_new_array();
            for (size_t i = 0; i < r->elements; i++) {
                json_object *e = json_tokener_parse(r->element[i]->str);
                if (e)
                    json_object_array_add(entries, e);
            }
            json_object *o = json_object_new_object();
            json_object_object_add(o, "entries", entries);
            http_reply_json(req, 200, o);
        } else {
            reply_store_unavailable(req, "read failed");
        }
        if (r)
            freeReplyObject(r);
    }
    store_pool_put(app->pool, c, c->err == 0);
    return HTTP_DONE;
}

static long long int_reply(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    long long v = r && r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
    if (r)
        freeReplyObject(r);
    return v;
}

int admin_status(struct app *app, struct http_request *req)
{
    char err[256];
    redisContext *c = store_pool_get(app->pool, err, sizeof err);
    json_object *o = json_object_new_object();
    json_object *redis = json_object_new_object();
    json_object_object_add(o, "redis", redis);
    json_object *workers = json_object_new_object();
    json_object_object_add(workers, "configured", json_object_new_int(app->cfg->workers));
    json_object_object_add(workers, "running", json_object_new_int(atomic_load(&app->workers_up)));
    json_object_object_add(o, "workers", workers);
    json_object_object_add(o, "draining", json_object_new_boolean(atomic_load(&app->draining)));
    if (!c) {
        json_object_object_add(redis, "status", json_object_new_string("unreachable"));
        json_object *e = json_object_new_object();
        json_object_object_add(e, "code", json_object_new_string("redis_unavailable"));
        json_object_object_add(e, "message", json_object_new_string(err));
        json_object_object_add(o, "error", e);
        http_add_header(req, "Retry-After", "5");
        http_reply_json(req, 503, o);
        return HTTP_DONE;
    }
    json_object_object_add(redis, "status", json_object_new_string("ok"));
    json_object *queue = json_object_new_object();
    json_object_object_add(queue, "pending", json_object_new_int64(int_reply(c, "XLEN " STORE_EVENTS_STREAM)));
    json_object_object_add(queue, "retrying", json_object_new_int64(int_reply(c, "SCARD ccsync:retrying")));
    json_object_object_add(queue, "dead", json_object_new_int64(int_reply(c, "XLEN " QUEUE_DEAD_STREAM)));
    long long waiting = -1;
    schedule_waiting(c, &waiting);
    json_object_object_add(queue, "groups_waiting", json_object_new_int64(waiting));
    json_object_object_add(o, "queue", queue);

    struct ratelimit_conf rc;
    ratelimit_conf_from_config(&rc, app->cfg);
    long used = 0;
    int64_t paused = 0;
    ratelimit_used_today(c, &rc, &used);
    ratelimit_paused_until(c, &rc, &paused);
    json_object *budget = json_object_new_object();
    json_object_object_add(budget, "used_today", json_object_new_int64(used));
    json_object_object_add(budget, "daily_limit", json_object_new_int64(app->cfg->cc_daily_limit));
    json_object_object_add(budget, "rate_per_sec", json_object_new_double(app->cfg->cc_rate_per_sec));
    json_object_object_add(budget, "paused_until", time_or_null(paused));
    json_object_object_add(o, "constant_contact_budget", budget);

    json_object *in_error = json_object_new_array();
    redisReply *assocs = redisCommand(c, "SMEMBERS " STORE_ASSOCIATIONS);
    for (size_t i = 0; assocs && assocs->type == REDIS_REPLY_ARRAY && i < assocs->elements; i++) {
        const char *a = assocs->element[i]->str;
        redisReply *ids = redisCommand(c, "SMEMBERS " STORE_PREFIX "a:%s:groups", a);
        json_object *groups = json_object_new_array();
        for (size_t k = 0; ids && ids->type == REDIS_REPLY_ARRAY && k < ids->elements; k++) {
            redisReply *code = redisCommand(c, "HMGET " STORE_PREFIX "a:%s:g:%s state err_code", a,
                                            ids->element[k]->str);
            if (code && code->type == REDIS_REPLY_ARRAY && code->elements == 2 &&
                code->element[0]->type == REDIS_REPLY_STRING &&
                strcmp(code->element[0]->str, "error") == 0) {
                json_object *g = json_object_new_object();
                json_object_object_add(g, "group_id", json_object_new_string(ids->element[k]->str));
                json_object_object_add(g, "code", str_or_null(code->element[1]->str));
                json_object_array_add(groups, g);
            }
            if (code)
                freeReplyObject(code);
        }
        if (ids)
            freeReplyObject(ids);
        if (json_object_array_length(groups) > 0) {
            json_object *e = json_object_new_object();
            json_object_object_add(e, "association_id", json_object_new_string(a));
            json_object_object_add(e, "groups", groups);
            json_object_array_add(in_error, e);
        } else {
            json_object_put(groups);
        }
    }
    if (assocs)
        freeReplyObject(assocs);
    json_object_object_add(o, "associations_in_error", in_error);
    bool ok = c->err == 0;
    store_pool_put(app->pool, c, ok);
    http_reply_json(req, 200, o);
    return HTTP_DONE;
}

int admin_list_dead_letters(struct app *app, struct http_request *req)
{
    long limit;
    if (!parse_limit(req, 100, 1000, &limit))
        return HTTP_DONE;
    char err[256];
    redisContext *c = store_pool_get(app->pool, err, sizeof err);
    if (!c) {
        reply_store_unavailable(req, err);
        return HTTP_DONE;
    }
    redisReply *r = redisCommand(c, "XREVRANGE " QUEUE_DEAD_STREAM " + - COUNT %ld", limit);
    bool ok = store_reply_ok(c, r) && r->type == REDIS_REPLY_ARRAY;
    if (ok) {
        json_object *list = json_object_new_array();
        for (size_t i = 0; i < r->elements; i++) {
            redisReply *item = r->element[i];
            json_object *e = json_object_new_object();
            json_object_object_add(e, "id", json_object_new_string(item->element[0]->str));
            redisReply *f = item->element[1];
            for (size_t k = 0; k + 1 < f->elements; k += 2) {
                const char *name = f->element[k]->str;
                const char *out = strcmp(name, "assoc") == 0 ? "association_id"
                                  : strcmp(name, "id") == 0  ? "webhook_id"
                                                             : name;
                if (strcmp(name, "body") == 0) {
                    json_object *body = json_tokener_parse(f->element[k + 1]->str);
                    json_object_object_add(e, "body", body ? body : json_object_new_string(f->element[k + 1]->str));
                } else {
                    json_object_object_add(e, out, json_object_new_string(f->element[k + 1]->str));
                }
            }
            json_object_array_add(list, e);
        }
        json_object *o = json_object_new_object();
        json_object_object_add(o, "dead_letters", list);
        http_reply_json(req, 200, o);
    } else {
        reply_store_unavailable(req, "read failed");
    }
    if (r)
        freeReplyObject(r);
    store_pool_put(app->pool, c, ok);
    return HTTP_DONE;
}

/* A stream entry id: milliseconds-sequence, both parts digits. */
static bool valid_entry_id(const char *id)
{
    size_t ms = strspn(id, "0123456789");
    return ms > 0 && id[ms] == '-' && id[ms + 1] != '\0' &&
           strspn(id + ms + 1, "0123456789") == strlen(id + ms + 1);
}

int admin_redrive_dead_letter(struct app *app, struct http_request *req)
{
    const char *id = http_param(req, 0);
    if (!valid_entry_id(id)) {
        http_reply_error(req, 400, "invalid_path_parameter",
                         "the dead letter id must be a stream entry id such as 1700000000000-0");
        return HTTP_DONE;
    }
    char err[256];
    redisContext *c = store_pool_get(app->pool, err, sizeof err);
    if (!c) {
        reply_store_unavailable(req, err);
        return HTTP_DONE;
    }
    int rc = queue_redrive(c, id);
    if (rc == 1) {
        log_info("dead_letter_redriven", LOG_STR("entry", id));
        json_object *o = json_object_new_object();
        json_object_object_add(o, "id", json_object_new_string(id));
        json_object_object_add(o, "status", json_object_new_string("requeued"));
        http_reply_json(req, 202, o);
    } else if (rc == 0) {
        http_reply_error(req, 404, "unknown_dead_letter", "no dead letter \"%s\"", id);
    } else {
        reply_store_unavailable(req, "write failed");
    }
    store_pool_put(app->pool, c, c->err == 0);
    return HTTP_DONE;
}
