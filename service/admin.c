/*
 * admin.c - health endpoints and the association admin API: associations,
 * group status, audit, service status and dead letters.
 *
 * Each handler is a route of http.c's table, whose flags take what the handler
 * needs before it runs (a Redis connection, the path's association) and answer
 * 503 or 404 in its place; its check, when it has one, has refused what can be
 * refused without Redis. So a handler here only reads, writes and answers.
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
#include "ccsync/fieldmap.h"
#include "ccsync/http.h"
#include "ccsync/ingest.h"
#include "ccsync/keys.h"
#include "ccsync/log.h"
#include "ccsync/metrics.h"
#include "ccsync/notify.h"
#include "ccsync/queue.h"
#include "ccsync/ratelimit.h"
#include "ccsync/reseal.h"
#include "ccsync/schedule.h"
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

static json_object *str_or_null(const char *s)
{
    return s && *s ? json_object_new_string(s) : NULL;
}

/* ---- health ---- */

int admin_livez(struct app *app, struct http_request *req)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "status", json_object_new_string("alive"));
    http_reply_json(req, 200, o);
    return HTTP_DONE;
}

/* PING on the route's connection: is Redis answering right now? */
static bool redis_answers(struct http_request *req, char *why, size_t size)
{
    redisContext *c = http_redis(req);
    if (!c) {
        snprintf(why, size, "%s", http_redis_error(req));
        return false;
    }
    redisReply *r = redisCommand(c, "PING");
    bool ok = store_reply_ok(c, r);
    if (!ok)
        snprintf(why, size, "Redis did not answer PING: %s", c->err ? c->errstr : "error reply");
    freeReplyObject(r);
    return ok;
}

static json_object *error_object(const char *code, const char *message)
{
    json_object *e = json_object_new_object();
    json_object_object_add(e, "code", json_object_new_string(code));
    json_object_object_add(e, "message", json_object_new_string(message));
    return e;
}

int admin_readyz(struct app *app, struct http_request *req)
{
    char why[256] = "";
    bool draining = atomic_load(&app->draining), starting = atomic_load(&app->starting);
    bool redis_ok = redis_answers(req, why, sizeof why);
    int workers = atomic_load(&app->workers_up);
    bool workers_ok = workers >= app->cfg->workers;
    json_object *o = json_object_new_object();
    json_object_object_add(o, "redis", json_object_new_string(redis_ok ? "ok" : "unreachable"));
    json_object_object_add(o, "workers", json_object_new_int(workers));
    json_object_object_add(o, "draining", json_object_new_boolean(draining));
    if (draining || starting || !redis_ok || !workers_ok) {
        const char *reason = draining    ? "the process is shutting down"
                             : starting  ? "the process is starting (Redis and its key layout)"
                             : !redis_ok ? why
                                         : "worker threads are not all running";
        json_object_object_add(o, "error", error_object("not_ready", reason));
        json_object_object_add(o, "status", json_object_new_string("not_ready"));
        http_reply_json(req, 503, o);
    } else {
        json_object_object_add(o, "status", json_object_new_string("ready"));
        http_reply_json(req, 200, o);
    }
    return HTTP_DONE;
}

/* Queue depth is read from Redis at scrape time: the streams are shared by all
 * processes, so no process's own counter could say it. */
static void refresh_queue_gauges(redisContext *c)
{
    if (!c)
        return;
    long long n;
    if (queue_depth(c, &n) == STORE_OK)
        metrics_set("ccsync_queue_depth", "state=\"stream\"", (double)n);
    long long ready = queue_ready_count(c);
    if (ready >= 0)
        metrics_set("ccsync_queue_associations_ready", "", (double)ready);
}

int admin_metrics(struct app *app, struct http_request *req)
{
    refresh_queue_gauges(http_redis(req));
    group_metrics_refresh(http_redis(req));
    admin_budget_gauges(http_redis(req), app->cfg);
    char *text;
    size_t len;
    if (metrics_render(&text, &len) != 0) {
        http_reply_error(req, 500, "internal", "could not render metrics");
        return HTTP_DONE;
    }
    http_reply(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    return HTTP_DONE;
}

/* ---- associations ---- */

/* ---- the field mapping and group tags (fieldmap.h) ---- */

/* The PUT's "fields" and "tags" applied over m; false with a 400 answered. */
static bool apply_field_map(struct http_request *req, json_object *root, struct fieldmap *m)
{
    json_object *fields = NULL, *tags = NULL;
    json_object_object_get_ex(root, "fields", &fields);
    json_object_object_get_ex(root, "tags", &tags);
    char err[400];
    if (fieldmap_apply_put(m, fields, tags, err, sizeof err) != 0) {
        http_reply_error(req, 400, "invalid_field", "%s", err);
        return false;
    }
    return true;
}

static bool check_field_map(struct http_request *req, json_object *root)
{
    struct fieldmap *m = calloc(1, sizeof *m);
    bool ok = m != NULL && apply_field_map(req, root, m);
    if (m == NULL)
        http_reply_error(req, 503, "out_of_memory", "out of memory");
    free(m);
    return ok;
}

/* Every group of the association is due: a new mapping or tag setting reaches each
 * synced contact once (the plan sees the changed digest). */
static int mark_groups_due(redisContext *c, const char *id)
{
    redisReply *r = store_command(c, "SMEMBERS %s", key_groups(id).s);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        return STORE_ERR;
    }
    int rc = STORE_OK;
    for (size_t i = 0; i < r->elements && rc == STORE_OK; i++)
        rc = facts_mark_dirty(c, id, r->element[i]->str, store_now_ns(), 0);
    freeReplyObject(r);
    return rc;
}

/* Stores the PUT's field mapping and tags (when it has any) over what is stored. */
static int put_field_map(struct http_request *req, redisContext *c, const char *id)
{
    json_object *root = http_json(req), *v;
    if (!json_object_object_get_ex(root, "fields", &v) &&
        !json_object_object_get_ex(root, "tags", &v))
        return STORE_OK;
    struct fieldmap *m = malloc(sizeof *m);
    if (m == NULL)
        return STORE_ERR;
    int rc = fieldmap_load(c, id, m) < 0 ? STORE_ERR : STORE_OK;
    char before[17];
    bool tags_before = m->group_tags;
    memcpy(before, m->version, sizeof before);
    if (rc == STORE_OK && !apply_field_map(req, root, m))
        rc = STORE_ERR; /* admin_check_update accepted it: cannot happen */
    if (rc == STORE_OK)
        rc = fieldmap_save(c, id, m);
    if (rc == STORE_OK && (strcmp(before, m->version) != 0 || tags_before != m->group_tags))
        rc = mark_groups_due(c, id);
    free(m);
    return rc;
}

/* Adds the association's field mapping and tags to its view. */
static void add_field_map_view(redisContext *c, const char *id, json_object *view)
{
    struct fieldmap *m = malloc(sizeof *m);
    /* only once set: an association without them answers as release 1 did */
    if (m != NULL && c != NULL && fieldmap_load(c, id, m) == 1)
        fieldmap_add_view(m, view);
    free(m);
}

static json_object *connection_view(const struct association *a)
{
    json_object *cc = json_object_new_object();
    json_object_object_add(cc, "access_token_set", json_object_new_boolean(a->cc_access_token[0]));
    json_object_object_add(cc, "refresh_token_set",
                           json_object_new_boolean(a->cc_refresh_token[0]));
    json_object_object_add(cc, "expires_at", time_or_null(a->cc_expires_at_ns));
    json_object_object_add(cc, "state", json_object_new_string(a->cc_state));
    json_object *e = NULL;
    if (a->cc_last_error[0]) {
        e = json_object_new_object();
        json_object_object_add(e, "message", json_object_new_string(a->cc_last_error));
        json_object_object_add(e, "at", time_or_null(a->cc_last_error_at_ns));
    }
    json_object_object_add(cc, "last_error", e);
    return cc;
}

static json_object *association_view(const struct association *a)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "association_id", json_object_new_string(a->id));
    json_object_object_add(o, "webhook_secret_set", json_object_new_boolean(a->webhook_secret[0]));
    json_object_object_add(o, "constant_contact", connection_view(a));
    json_object_object_add(o, "created_at", time_or_null(a->created_at_ns));
    json_object_object_add(o, "updated_at", time_or_null(a->updated_at_ns));
    /* only when it happens: a secret whose key left CCSYNC_SECRETS_KEY_FILE reads as unset */
    if (a->unreadable_secrets > 0)
        json_object_object_add(o, "secrets_unreadable", json_object_new_int(a->unreadable_secrets));
    return o;
}

/* Adds the notification settings (never the secret), when there are any, to an
 * association view. */
static json_object *with_notifications(json_object *view, redisContext *c, const char *id)
{
    json_object *n = notify_config_view(c, id);
    if (n)
        json_object_object_add(view, "notifications", n);
    return view;
}

int admin_get_association(struct app *app, struct http_request *req)
{
    static const char *const access[] = {[HTTP_ACCESS_READ] = "read",
                                         [HTTP_ACCESS_WRITE] = "write",
                                         [HTTP_ACCESS_OPERATOR] = "operator"};
    json_object *o = with_notifications(association_view(http_association(req)), http_redis(req),
                                        http_param(req, 0));
    add_field_map_view(http_redis(req), http_association(req)->id, o);
    enum http_access a = http_access(req);
    /* what the caller may do: a dashboard shows Resync only to write access */
    if (a >= HTTP_ACCESS_READ && a <= HTTP_ACCESS_OPERATOR)
        json_object_object_add(o, "access", json_object_new_string(access[a]));
    http_reply_json(req, 200, o);
    return HTTP_DONE;
}

/* Reads and answers the association; 404 when unknown. */
static int answer_association(struct http_request *req, const struct config *cfg, redisContext *c,
                              const char *id)
{
    struct association *a = malloc(sizeof *a);
    int found = a ? store_association_get(c, &cfg->secrets, id, a) : -1;
    if (found < 0)
        http_reply_redis_unavailable(req, "read failed");
    else if (found == 0)
        http_reply_error(req, 404, "unknown_association", "no association \"%s\"", id);
    else {
        json_object *view = with_notifications(association_view(a), c, id);
        add_field_map_view(c, id, view);
        http_reply_json(req, 200, view);
    }
    free(a);
    return HTTP_DONE;
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

/* True when every member of obj is one of known (NULL-terminated); else 400 naming it. */
static bool only_known_fields(struct http_request *req, json_object *obj, const char *path,
                              const char *const *known, const char *expected)
{
    json_object_object_foreach(obj, key, val)
    {
        (void)val;
        size_t i = 0;
        while (known[i] && strcmp(known[i], key) != 0)
            i++;
        if (!known[i]) {
            http_reply_error(req, 400, "invalid_field", "unknown field \"%s%s\" (expected %s)",
                             path, key, expected);
            return false;
        }
    }
    return true;
}

/* The "constant_contact" object of a PUT; u points into cc. */
static bool parse_connection(struct http_request *req, json_object *cc,
                             struct association_update *u)
{
    static const char *const known[] = {"access_token", "refresh_token", "expires_at", NULL};
    if (!json_object_is_type(cc, json_type_object)) {
        http_reply_error(req, 400, "invalid_field", "constant_contact must be an object");
        return false;
    }
    if (!only_known_fields(req, cc, "constant_contact.", known,
                           "access_token, refresh_token, expires_at"))
        return false;
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

/* The body of a PUT; u points into root. False with a 400 answered. */
static bool parse_update(struct http_request *req, json_object *root, struct association_update *u)
{
    static const char *const known[] = {"webhook_secret", "constant_contact", "fields",
                                        "tags",           "notifications",    NULL};
    memset(u, 0, sizeof *u);
    if (!json_object_is_type(root, json_type_object)) {
        http_reply_error(req, 400, "invalid_body", "the body must be a JSON object");
        return false;
    }
    if (!only_known_fields(req, root, "", known,
                           "webhook_secret, constant_contact, fields, tags, notifications"))
        return false;
    if (!check_field_map(req, root))
        return false;
    if (!optional_string(req, root, "webhook_secret", "webhook_secret", 255, &u->webhook_secret))
        return false;
    if (u->webhook_secret && !webhook_secret_valid(u->webhook_secret)) {
        http_reply_error(req, 400, "invalid_field",
                         "webhook_secret must be whsec_ followed by base64 (as Novi shows it)");
        return false;
    }
    long bytes = u->webhook_secret ? webhook_secret_bytes(u->webhook_secret) : 0;
    if (u->webhook_secret &&
        (bytes < WEBHOOK_SECRET_MIN_BYTES || bytes > WEBHOOK_SECRET_MAX_BYTES)) {
        http_reply_error(req, 400, "invalid_field",
                         "webhook_secret must decode to %d-%d bytes (Standard Webhooks); this one "
                         "decodes to %ld",
                         WEBHOOK_SECRET_MIN_BYTES, WEBHOOK_SECRET_MAX_BYTES, bytes);
        return false;
    }
    json_object *cc;
    if (!json_object_object_get_ex(root, "constant_contact", &cc) || cc == NULL)
        return true;
    return parse_connection(req, cc, u);
}

bool admin_check_update(struct http_request *req)
{
    struct association_update u;
    return parse_update(req, http_json(req), &u);
}

/* 1 the association exists, 0 not, -1 Redis failed. */
static int association_exists(redisContext *c, const char *id)
{
    redisReply *r = store_command(c, "EXISTS %s", key_association(id).s);
    int exists = r && r->type == REDIS_REPLY_INTEGER ? r->integer == 1 : -1;
    freeReplyObject(r);
    return exists;
}

int admin_put_association(struct app *app, struct http_request *req)
{
    const char *id = http_param(req, 0);
    redisContext *c = http_redis(req);
    struct association_update u;
    parse_update(req, http_json(req), &u); /* admin_check_update has accepted it */
    int exists = association_exists(c, id);
    if (exists < 0) {
        http_reply_redis_unavailable(req, "read failed");
        return HTTP_DONE;
    }
    /* A new association cannot take webhooks without its secret. */
    if (!exists && !u.webhook_secret) {
        http_reply_error(req, 400, "invalid_field",
                         "webhook_secret is required when creating an association");
        return HTTP_DONE;
    }
    json_object *notifications;
    bool has_notifications =
        json_object_object_get_ex(http_json(req), "notifications", &notifications);
    struct notify_config nc;
    bool remove_notifications;
    char why[512];
    if (has_notifications && notify_config_parse(notifications, app->cfg->notify_allow_private, &nc,
                                                 &remove_notifications, why, sizeof why) != 0) {
        http_reply_error(req, 400, "invalid_field", "%s", why);
        return HTTP_DONE;
    }
    bool created;
    if (store_association_put(c, &app->cfg->secrets, id, &u, store_now_ns(), &created) !=
            STORE_OK ||
        (has_notifications &&
         notify_config_put(c, &app->cfg->secrets, id, &nc, remove_notifications) != STORE_OK)) {
        http_reply_redis_unavailable(req, "write failed");
        return HTTP_DONE;
    }
    if (put_field_map(req, c, id) != STORE_OK) {
        http_reply_redis_unavailable(req, "write failed");
        return HTTP_DONE;
    }
    if (u.webhook_secret && app->ingest)
        ingest_forget_secret(app->ingest, id);
    log_info(created ? "association_created" : "association_updated", LOG_STR("association", id),
             LOG_INT("webhook_secret_changed", u.webhook_secret != NULL),
             LOG_INT("credentials_changed", u.has_cc));
    return answer_association(req, app->cfg, c, id);
}

/* The environment's association as an update (tokens only when some are given). */
static void bootstrap_update(const struct config *cfg, struct association_update *u)
{
    memset(u, 0, sizeof *u);
    u->webhook_secret = cfg->boot_webhook_secret;
    if (!cfg->boot_cc_access_token[0] && !cfg->boot_cc_refresh_token[0])
        return;
    u->has_cc = true;
    u->cc_access_token = cfg->boot_cc_access_token[0] ? cfg->boot_cc_access_token : NULL;
    u->cc_refresh_token = cfg->boot_cc_refresh_token[0] ? cfg->boot_cc_refresh_token : NULL;
    if (cfg->boot_cc_expires_at[0])
        rfc3339_parse(cfg->boot_cc_expires_at, &u->cc_expires_at_ns);
}

/* Only what differs is written, so a restart does not reset a connection whose
 * refresh token has rotated since. -1 when Redis failed. */
static int drop_unchanged(redisContext *c, const struct config *cfg, struct association_update *u)
{
    struct association *a = calloc(1, sizeof *a);
    int found = a ? store_association_get(c, &cfg->secrets, cfg->boot_association_id, a) : -1;
    if (found == 1) {
        if (strcmp(a->webhook_secret, cfg->boot_webhook_secret) == 0)
            u->webhook_secret = NULL;
        if (u->has_cc && a->credentials_version > 0)
            u->has_cc = false; /* tokens stored earlier rotate; the environment's are stale */
    }
    free(a);
    return found < 0 ? -1 : 0;
}

int admin_bootstrap_association(struct app *app, char *err, size_t err_size)
{
    const struct config *cfg = app->cfg;
    if (!cfg->boot_association_id[0])
        return 0;
    struct association_update u;
    bootstrap_update(cfg, &u);
    redisContext *c = store_pool_get(app->pool, err, err_size);
    if (!c)
        return -1;
    bool created = false;
    int rc = drop_unchanged(c, cfg, &u);
    if (rc == 0)
        rc = store_association_put(c, &cfg->secrets, cfg->boot_association_id, &u, store_now_ns(),
                                   &created);
    store_pool_put(app->pool, c, rc == 0);
    if (rc != 0) {
        snprintf(err, err_size, "could not store association %s in Redis",
                 cfg->boot_association_id);
        return -1;
    }
    log_info("association_bootstrapped", LOG_STR("association", cfg->boot_association_id),
             LOG_INT("created", created));
    return 0;
}

/* ---- groups ---- */

/* The group hash fields the status readers ask for (HMGET), in reply order.
 * The count fields are the JSON counts' names with "c_" in front. */
#define GROUP_FIELDS(X)                                                                            \
    X(GF_NAME, "name")                                                                             \
    X(GF_SYNC, "sync")                                                                             \
    X(GF_DELETED, "deleted")                                                                       \
    X(GF_LIST_ID, "list_id")                                                                       \
    X(GF_LIST_NAME, "list_name")                                                                   \
    X(GF_LIST_STATE, "list_state")                                                                 \
    X(GF_STATE, "state")                                                                           \
    X(GF_ERR_CODE, "err_code")                                                                     \
    X(GF_ERR_MSG, "err_msg")                                                                       \
    X(GF_ERR_SINCE, "err_since")                                                                   \
    X(GF_C_MEMBERS, "c_members")                                                                   \
    X(GF_C_NO_EMAIL, "c_no_email")                                                                 \
    X(GF_C_INVALID_EMAIL, "c_invalid_email")                                                       \
    X(GF_C_DUPLICATE_EMAIL, "c_duplicate_email")                                                   \
    X(GF_C_DO_NOT_EMAIL, "c_do_not_email")                                                         \
    X(GF_C_UNSUBSCRIBED, "c_unsubscribed")                                                         \
    X(GF_C_REJECTED, "c_rejected")                                                                 \
    X(GF_C_IN_LIST, "c_in_list")                                                                   \
    X(GF_PENDING, "pending")                                                                       \
    X(GF_LAST_SYNCED, "last_synced_at")                                                            \
    X(GF_FACT_TS, "fact_ts")                                                                       \
    X(GF_TAG_ID, "tag_id")                                                                         \
    X(GF_TAG_NAME, "tag_name")

#define GROUP_FIELD_ENUM(id, field) id,
#define GROUP_FIELD_NAME(id, field) field,
enum group_field { GROUP_FIELDS(GROUP_FIELD_ENUM) GF_COUNT };
static const char *const group_fields[GF_COUNT] = {GROUP_FIELDS(GROUP_FIELD_NAME)};

/* HMGET of n fields of the group hash from first on; the reply's element i is
 * field first + i. NULL when Redis failed. Caller frees. */
static redisReply *read_group(redisContext *c, const char *assoc, const char *g,
                              enum group_field first, int n)
{
    struct key key = key_group(assoc, g);
    const char *argv[2 + GF_COUNT] = {"HMGET", key.s};
    for (int i = 0; i < n; i++)
        argv[2 + i] = group_fields[first + i];
    redisReply *r = redisCommandArgv(c, 2 + n, argv, NULL);
    if (!store_reply_ok(c, r) || r->type != REDIS_REPLY_ARRAY || r->elements != (size_t)n) {
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

static const char *str_of(redisReply *r, enum group_field f)
{
    redisReply *v = r->element[f];
    return v->type == REDIS_REPLY_STRING ? v->str : NULL;
}

static bool is_one(const char *v)
{
    return v && strcmp(v, "1") == 0;
}

static bool group_dirty(redisContext *c, const char *assoc, const char *g)
{
    bool dirty = false;
    schedule_queued(c, assoc, g, &dirty);
    return dirty;
}

static json_object *list_view(redisReply *r)
{
    if (!str_of(r, GF_LIST_ID))
        return NULL;
    json_object *l = json_object_new_object();
    json_object_object_add(l, "list_id", json_object_new_string(str_of(r, GF_LIST_ID)));
    json_object_object_add(l, "name", str_or_null(str_of(r, GF_LIST_NAME)));
    return l;
}

/* A transient error shows too, while the group waits to retry in state pending. */
static json_object *group_error_view(redisReply *r)
{
    const char *code = str_of(r, GF_ERR_CODE);
    if (!code || !*code)
        return NULL;
    json_object *e = json_object_new_object();
    json_object_object_add(e, "code", json_object_new_string(code));
    json_object_object_add(e, "message", str_or_null(str_of(r, GF_ERR_MSG)));
    json_object_object_add(e, "since", str_or_null(str_of(r, GF_ERR_SINCE)));
    return e;
}

static json_object *counts_view(redisReply *r)
{
    json_object *counts = json_object_new_object();
    for (int f = GF_C_MEMBERS; f <= GF_C_IN_LIST; f++) {
        const char *v = str_of(r, f);
        json_object_object_add(counts, group_fields[f] + strlen("c_"),
                               json_object_new_int64(v ? atoll(v) : 0));
    }
    return counts;
}

/* The group's CC tag (§12), or NULL when it has none. */
static json_object *tag_view(redisReply *r)
{
    const char *id = str_of(r, GF_TAG_ID);
    if (id == NULL || id[0] == '\0')
        return NULL;
    json_object *t = json_object_new_object();
    json_object_object_add(t, "tag_id", json_object_new_string(id));
    json_object_object_add(t, "name", str_or_null(str_of(r, GF_TAG_NAME)));
    return t;
}

/* GroupStatus (docs/) from the group hash; NULL when there is no group fact. */
static json_object *group_view(redisReply *r, const char *group_id, bool dirty)
{
    if (!str_of(r, GF_FACT_TS) || (is_one(str_of(r, GF_DELETED)) && !str_of(r, GF_LIST_ID)))
        return NULL;
    const char *name = str_of(r, GF_NAME), *state = str_of(r, GF_STATE);
    const char *pending = str_of(r, GF_PENDING);
    bool sync = is_one(str_of(r, GF_SYNC));
    json_object *o = json_object_new_object();
    json_object_object_add(o, "group_id", json_object_new_string(group_id));
    json_object_object_add(o, "group_name", json_object_new_string(name ? name : ""));
    json_object_object_add(o, "sync_enabled", json_object_new_boolean(sync));
    json_object_object_add(o, "list", list_view(r));
    if (!state)
        state = sync ? "pending" : "disabled";
    json_object_object_add(o, "state", json_object_new_string(state));
    json_object_object_add(o, "error", group_error_view(r));
    json_object_object_add(o, "counts", counts_view(r));
    json_object_object_add(o, "pending_changes",
                           json_object_new_int64(pending ? atoll(pending) : 0));
    json_object_object_add(o, "changes_queued", json_object_new_boolean(dirty));
    json_object_object_add(o, "last_synced_at", str_or_null(str_of(r, GF_LAST_SYNCED)));
    json_object *tag = tag_view(r); /* only with group tags: else as release 1 */
    if (tag != NULL)
        json_object_object_add(o, "tag", tag);
    return o;
}

/* Adds group g's view to list (nothing when it has no group fact). */
static int add_group_view(redisContext *c, const char *assoc, const char *g, json_object *list,
                          bool budget_binds)
{
    redisReply *r = read_group(c, assoc, g, 0, GF_COUNT);
    if (!r)
        return STORE_ERR;
    json_object *v = group_view(r, g, group_dirty(c, assoc, g));
    if (v)
        admin_budget_group(c, assoc, g, budget_binds, v);
    if (v)
        json_object_array_add(list, v);
    freeReplyObject(r);
    return STORE_OK;
}

int admin_list_groups(struct app *app, struct http_request *req)
{
    const char *assoc = http_param(req, 0);
    redisContext *c = http_redis(req);
    redisReply *ids = store_command(c, "SMEMBERS %s", key_groups(assoc).s);
    json_object *list = ids && ids->type == REDIS_REPLY_ARRAY ? json_object_new_array() : NULL;
    bool binds = admin_budget_binds(c, app->cfg);
    for (size_t i = 0; list && i < ids->elements; i++) {
        if (add_group_view(c, assoc, ids->element[i]->str, list, binds) != STORE_OK) {
            json_object_put(list);
            list = NULL;
        }
    }
    freeReplyObject(ids);
    if (!list) {
        http_reply_redis_unavailable(req, "read failed");
        return HTTP_DONE;
    }
    json_object *o = json_object_new_object();
    json_object_object_add(o, "groups", list);
    http_reply_json(req, 200, o);
    return HTTP_DONE;
}

int admin_get_group(struct app *app, struct http_request *req)
{
    const char *assoc = http_param(req, 0), *g = http_param(req, 1);
    redisContext *c = http_redis(req);
    redisReply *r = read_group(c, assoc, g, 0, GF_COUNT);
    json_object *v = r ? group_view(r, g, group_dirty(c, assoc, g)) : NULL;
    if (v)
        admin_budget_group(c, assoc, g, admin_budget_binds(c, app->cfg), v);
    if (!r)
        http_reply_redis_unavailable(req, "read failed");
    else if (!v)
        http_reply_error(req, 404, "unknown_group", "no group \"%s\" in association \"%s\"", g,
                         assoc);
    else
        http_reply_json(req, 200, v);
    freeReplyObject(r);
    return HTTP_DONE;
}

/* Flags the group for a full sync (a new list if it was deleted in CC) and queues it now. */
static const char resync_script[] =
    "if redis.call('HGET', KEYS[1], 'fact_ts') == false or redis.call('HGET', KEYS[1], "
    "'deleted') == '1' then return 0 end\n"
    "if redis.call('HGET', KEYS[1], 'sync') ~= '1' then return -1 end\n"
    "redis.call('HSET', KEYS[1], 'resync', '1', 'state', 'pending')\n"
    "redis.call('HINCRBY', KEYS[1], 'gen', 1)\n"
    "redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])\n"
    "return 1\n";

enum resync { RESYNC_QUEUED, RESYNC_NO_GROUP, RESYNC_SYNC_OFF, RESYNC_FAILED };

static enum resync request_resync(redisContext *c, const char *assoc, const char *g)
{
    struct key group = key_group(assoc, g), dirty = key_dirty(assoc);
    char due[32];
    int64_t due_ms = store_now_ns() / 1000000;
    snprintf(due, sizeof due, "%lld", (long long)due_ms);
    const char *args[] = {group.s, dirty.s, due, g};
    redisReply *r = script_eval(c, resync_script, 2, 4, args);
    long long rc = store_reply_ok(c, r) && r->type == REDIS_REPLY_INTEGER ? r->integer : -2;
    freeReplyObject(r);
    if (rc == 0)
        return RESYNC_NO_GROUP;
    if (rc == -1)
        return RESYNC_SYNC_OFF;
    if (rc != 1 || schedule_wake(c, assoc, due_ms) != STORE_OK ||
        facts_audit(c, assoc, g, "resync_requested", NULL, NULL, "requested by an admin") != 0)
        return RESYNC_FAILED;
    return RESYNC_QUEUED;
}

int admin_resync_group(struct app *app, struct http_request *req)
{
    const char *assoc = http_param(req, 0), *g = http_param(req, 1);
    switch (request_resync(http_redis(req), assoc, g)) {
    case RESYNC_QUEUED: {
        log_info("resync_requested", LOG_STR("association", assoc), LOG_STR("group", g));
        json_object *o = json_object_new_object();
        json_object_object_add(o, "group_id", json_object_new_string(g));
        json_object_object_add(o, "status", json_object_new_string("resync_queued"));
        http_reply_json(req, 202, o);
        break;
    }
    case RESYNC_NO_GROUP:
        http_reply_error(req, 404, "unknown_group", "no group \"%s\" in association \"%s\"", g,
                         assoc);
        break;
    case RESYNC_SYNC_OFF:
        http_reply_error(req, 409, "sync_disabled",
                         "group \"%s\" does not sync to Constant Contact; turn its sync on in Novi",
                         g);
        break;
    case RESYNC_FAILED:
        http_reply_redis_unavailable(req, "write failed");
        break;
    }
    return HTTP_DONE;
}

/* ---- audit ---- */

#define LIMIT_DEFAULT 100
#define LIMIT_MAX 1000

/* ?limit=, from 1 to LIMIT_MAX; false when it is given but not such a number. */
static bool parse_limit(struct http_request *req, long *out)
{
    const char *v = http_query(req, "limit");
    *out = LIMIT_DEFAULT;
    if (!v)
        return true;
    char *end;
    long n = strtol(v, &end, 10);
    if (*v == '\0' || *end != '\0' || n < 1 || n > LIMIT_MAX)
        return false;
    *out = n;
    return true;
}

bool admin_check_limit(struct http_request *req)
{
    long limit;
    if (parse_limit(req, &limit))
        return true;
    http_reply_error(req, 400, "invalid_parameter", "limit must be a whole number from 1 to %d",
                     LIMIT_MAX);
    return false;
}

int admin_audit(struct app *app, struct http_request *req)
{
    const char *assoc = http_param(req, 0);
    long limit;
    parse_limit(req, &limit); /* admin_check_limit has accepted it */
    redisReply *r =
        store_command(http_redis(req), "LRANGE %s 0 %ld", key_audit(assoc).s, limit - 1);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        http_reply_redis_unavailable(req, "read failed");
        return HTTP_DONE;
    }
    json_object *entries = json_object_new_array();
    for (size_t i = 0; i < r->elements; i++) {
        json_object *e = json_tokener_parse(r->element[i]->str);
        if (e)
            json_object_array_add(entries, e);
    }
    freeReplyObject(r);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "entries", entries);
    http_reply_json(req, 200, o);
    return HTTP_DONE;
}

/* ---- service status ---- */

/* The queue's counts in the status: each one command answering an integer. */
static const struct {
    const char *name;
    const char *command;
    const char *key;
} queue_counts[] = {
    /* "pending" comes first, summed over the streams (queue_depth) */
    {"retrying", "SCARD", KEY_RETRYING},
    {"dead", "XLEN", KEY_DEAD_LETTERS},
};

/* The integer answer of "command key" into *n. STORE_ERR, why saying what
 * Redis answered, when the command failed: a count Redis refused is no zero. */
static int int_reply(redisContext *c, const char *command, const char *key, long long *n, char *why,
                     size_t size)
{
    redisReply *r = redisCommand(c, "%s %s", command, key);
    int rc = store_reply_ok(c, r) && r->type == REDIS_REPLY_INTEGER ? STORE_OK : STORE_ERR;
    if (rc == STORE_OK)
        *n = r->integer;
    else
        snprintf(why, size, "%s %s: %s", command, key,
                 c->err                              ? c->errstr
                 : r && r->type == REDIS_REPLY_ERROR ? r->str
                                                     : "not a count");
    freeReplyObject(r);
    return rc;
}

/* {"pending": n, ...}; NULL (why says what failed) when a count could not be read. */
static json_object *queue_view(redisContext *c, char *why, size_t size)
{
    json_object *queue = json_object_new_object();
    long long pending;
    if (queue_depth(c, &pending) != STORE_OK) {
        snprintf(why, size, "the event streams could not be counted: %s",
                 c->err ? c->errstr : "error reply");
        json_object_put(queue);
        return NULL;
    }
    json_object_object_add(queue, "pending", json_object_new_int64(pending));
    for (size_t i = 0; i < sizeof queue_counts / sizeof queue_counts[0]; i++) {
        long long n;
        if (int_reply(c, queue_counts[i].command, queue_counts[i].key, &n, why, size) != STORE_OK) {
            json_object_put(queue);
            return NULL;
        }
        json_object_object_add(queue, queue_counts[i].name, json_object_new_int64(n));
    }
    long long waiting = 0; /* groups due, summed over the associations' schedules */
    if (schedule_waiting(c, &waiting) != STORE_OK) {
        snprintf(why, size, "the schedule could not be read: %s",
                 c->err ? c->errstr : "error reply");
        json_object_put(queue);
        return NULL;
    }
    json_object_object_add(queue, "groups_waiting", json_object_new_int64(waiting));
    return queue;
}

static json_object *budget_view(redisContext *c, const struct config *cfg)
{
    struct ratelimit_conf rc;
    ratelimit_conf_from_config(&rc, cfg);
    long used = 0;
    int64_t paused = 0;
    ratelimit_used_today(c, &rc, &used);
    ratelimit_paused_until(c, &rc, &paused);
    json_object *budget = json_object_new_object();
    json_object_object_add(budget, "used_today", json_object_new_int64(used));
    json_object_object_add(budget, "daily_limit", json_object_new_int64(cfg->cc_daily_limit));
    json_object_object_add(budget, "rate_per_sec", json_object_new_double(cfg->cc_rate_per_sec));
    json_object_object_add(budget, "paused_until", time_or_null(paused));
    return budget;
}

/* The association's groups in state error: [{"group_id", "code"}]. */
static json_object *groups_in_error(redisContext *c, const char *assoc)
{
    _Static_assert(GF_ERR_CODE == GF_STATE + 1, "state and err_code are read together");
    json_object *groups = json_object_new_array();
    redisReply *ids = redisCommand(c, "SMEMBERS %s", key_groups(assoc).s);
    for (size_t k = 0; ids && ids->type == REDIS_REPLY_ARRAY && k < ids->elements; k++) {
        const char *g = ids->element[k]->str;
        redisReply *r = read_group(c, assoc, g, GF_STATE, 2);
        const redisReply *state = r ? r->element[0] : NULL;
        if (state && state->type == REDIS_REPLY_STRING && strcmp(state->str, "error") == 0) {
            json_object *e = json_object_new_object();
            json_object_object_add(e, "group_id", json_object_new_string(g));
            json_object_object_add(e, "code", str_or_null(r->element[1]->str));
            json_object_array_add(groups, e);
        }
        freeReplyObject(r);
    }
    freeReplyObject(ids);
    return groups;
}

/* [{"association_id", "groups": [...]}] for the associations with a group in error. */
static json_object *associations_in_error(redisContext *c)
{
    json_object *in_error = json_object_new_array();
    redisReply *assocs = redisCommand(c, "SMEMBERS %s", KEY_ASSOCIATIONS);
    for (size_t i = 0; assocs && assocs->type == REDIS_REPLY_ARRAY && i < assocs->elements; i++) {
        const char *a = assocs->element[i]->str;
        json_object *groups = groups_in_error(c, a);
        if (json_object_array_length(groups) == 0) {
            json_object_put(groups);
            continue;
        }
        json_object *e = json_object_new_object();
        json_object_object_add(e, "association_id", json_object_new_string(a));
        json_object_object_add(e, "groups", groups);
        json_object_array_add(in_error, e);
    }
    freeReplyObject(assocs);
    return in_error;
}

/* What the status says with or without Redis: redis (its status added later), workers, draining. */
static json_object *status_view(struct app *app, json_object **redis)
{
    json_object *o = json_object_new_object();
    *redis = json_object_new_object();
    json_object_object_add(o, "redis", *redis);
    json_object *workers = json_object_new_object();
    json_object_object_add(workers, "configured", json_object_new_int(app->cfg->workers));
    json_object_object_add(workers, "running", json_object_new_int(atomic_load(&app->workers_up)));
    json_object_object_add(o, "workers", workers);
    json_object_object_add(o, "draining", json_object_new_boolean(atomic_load(&app->draining)));
    return o;
}

static int reply_status_unavailable(struct http_request *req, json_object *o, json_object *redis,
                                    const char *why)
{
    json_object_object_add(redis, "status", json_object_new_string("unreachable"));
    json_object_object_add(redis, "error", json_object_new_string(why)); /* as openapi says */
    json_object_object_add(o, "error", error_object("redis_unavailable", why));
    http_add_header(req, "Retry-After", "5");
    http_reply_json(req, 503, o);
    return HTTP_DONE;
}

/* Secrets at rest: sealed or not, under which key, and what a start-up pass
 * would still have to do (counted now, so a rotation can be watched). */
static json_object *secrets_view(const struct config *cfg, redisContext *c)
{
    json_object *s = json_object_new_object();
    bool sealed = cfg->secrets.n > 0;
    json_object_object_add(s, "at_rest", json_object_new_string(sealed ? "sealed" : "plaintext"));
    json_object_object_add(s, "key_id",
                           sealed ? json_object_new_string(cfg->secrets.keys[0].id) : NULL);
    json_object_object_add(s, "keys", json_object_new_int((int)cfg->secrets.n));
    struct reseal_report r;
    if (reseal_count(c, &cfg->secrets, &r) == STORE_OK) {
        json_object_object_add(s, "plaintext_values", json_object_new_int64(r.plaintext));
        json_object_object_add(s, "old_key_values", json_object_new_int64(r.old_key));
        json_object_object_add(s, "unreadable_values", json_object_new_int64(r.unreadable));
    }
    if (!sealed)
        json_object_object_add(
            s, "warning",
            json_object_new_string("secrets are stored in plain text "
                                   "(CCSYNC_ALLOW_PLAINTEXT_SECRETS=1): set "
                                   "CCSYNC_SECRETS_KEY_FILE outside development"));
    return s;
}

/* {"mode","ok","warnings":[…]}: what Redis's settings promise, judged at start. */
static json_object *durability_view(const struct app *app)
{
    json_object *d = json_object_new_object(), *w = json_object_new_array();
    json_object_object_add(d, "mode",
                           json_object_new_string(durability_mode_name(app->cfg->durability)));
    json_object_object_add(d, "ok", json_object_new_boolean(app->durability.n_warnings == 0));
    for (size_t i = 0; i < app->durability.n_warnings; i++)
        json_object_array_add(w, json_object_new_string(app->durability.warnings[i]));
    json_object_object_add(d, "warnings", w);
    return d;
}

int admin_status(struct app *app, struct http_request *req)
{
    redisContext *c = http_redis(req);
    json_object *redis, *o = status_view(app, &redis);
    json_object_object_add(o, "durability", durability_view(app));
    if (!c)
        return reply_status_unavailable(req, o, redis, http_redis_error(req));
    char why[256];
    json_object *queue = queue_view(c, why, sizeof why);
    if (!queue)
        return reply_status_unavailable(req, o, redis, why);
    json_object_object_add(redis, "status", json_object_new_string("ok"));
    json_object_object_add(o, "queue", queue);
    json_object_object_add(o, "constant_contact_budget", budget_view(c, app->cfg));
    json_object_object_add(o, "budget", admin_budget_view(c, app->cfg));
    json_object_object_add(o, "associations_in_error", associations_in_error(c));
    json_object_object_add(o, "secrets", secrets_view(app->cfg, c));
    http_reply_json(req, 200, o);
    return HTTP_DONE;
}

/* ---- dead letters ---- */

/* What a listing shows of all its bodies together; each shows at most
 * DEAD_LETTER_BODY_SHOWN, less when the listing is long, so a listing of
 * bodies of 16 MiB each stays a few MiB. */
#define DEAD_LETTERS_SHOWN_TOTAL (4 * 1024 * 1024)
#define DEAD_LETTER_BODY_SHOWN (64 * 1024)

/* Adds the body: parsed when whole and JSON; else what is shown of it as
 * "body_preview" with "body_truncated". */
static void dead_letter_body(json_object *e, const char *body, size_t shown, size_t whole)
{
    if (shown >= whole) {
        json_object *parsed = json_tokener_parse(body);
        json_object_object_add(e, "body", parsed ? parsed : json_object_new_string(body));
        return;
    }
    json_object_object_add(e, "body_preview", json_object_new_string_len(body, (int)shown));
    json_object_object_add(e, "body_truncated", json_object_new_boolean(true));
}

/* One dead letter: its id and the event's fields; body is what was read of its
 * body (inline in an earlier release's entry, else from its own key). */
static json_object *dead_letter_view(const redisReply *item, const redisReply *body, size_t each)
{
    json_object *e = json_object_new_object();
    json_object_object_add(e, "id", json_object_new_string(item->element[0]->str));
    const redisReply *f = item->element[1];
    size_t whole = 0;
    for (size_t k = 0; k + 1 < f->elements; k += 2) {
        const char *name = f->element[k]->str, *value = f->element[k + 1]->str;
        size_t len = f->element[k + 1]->len;
        if (strcmp(name, "body") == 0) {
            dead_letter_body(e, value, len < each ? len : each, len);
            json_object_object_add(e, "body_bytes", json_object_new_int64((int64_t)len));
            continue;
        }
        if (strcmp(name, "body_id") == 0)
            continue; /* where the body is kept: Redis's business */
        if (strcmp(name, "body_bytes") == 0) {
            whole = strtoull(value, NULL, 10);
            json_object_object_add(e, "body_bytes", json_object_new_int64((int64_t)whole));
            continue;
        }
        const char *out = strcmp(name, "assoc") == 0 ? "association_id"
                          : strcmp(name, "id") == 0  ? "webhook_id"
                                                     : name;
        json_object_object_add(e, out, json_object_new_string(value));
    }
    if (body && body->type == REDIS_REPLY_STRING)
        dead_letter_body(e, body->str, body->len, whole);
    return e;
}

/* Where a dead letter keeps its body apart (key_dead_body): its body_id, or an
 * earlier release's original id; NULL when the body is inline. */
static const char *apart_body_id(const redisReply *item)
{
    const redisReply *f = item->element[1];
    const char *original = NULL, *body_id = NULL;
    for (size_t k = 0; k + 1 < f->elements; k += 2) {
        if (strcmp(f->element[k]->str, "body") == 0)
            return NULL;
        if (strcmp(f->element[k]->str, "original_id") == 0)
            original = f->element[k + 1]->str;
        if (strcmp(f->element[k]->str, "body_id") == 0)
            body_id = f->element[k + 1]->str;
    }
    return body_id ? body_id : original;
}

/* Reads what is shown of each listed dead letter's body kept apart, pipelined:
 * bodies[i] is entry i's (NULL when inline or gone). false when Redis failed. */
static bool read_bodies(redisContext *c, const redisReply *list, size_t each, redisReply **bodies)
{
    size_t sent = 0;
    char last[24]; /* hiredis's format knows no %zu */
    snprintf(last, sizeof last, "%zu", each - 1);
    for (size_t i = 0; i < list->elements; i++) {
        const char *id = apart_body_id(list->element[i]);
        if (id && redisAppendCommand(c, "GETRANGE %s 0 %s", key_dead_body(id).s, last) == REDIS_OK)
            sent++;
    }
    bool ok = true;
    for (size_t i = 0; i < list->elements; i++) {
        bodies[i] = NULL;
        if (!apart_body_id(list->element[i]) || sent == 0)
            continue;
        sent--;
        if (redisGetReply(c, (void **)&bodies[i]) != REDIS_OK)
            ok = false;
    }
    return ok && c->err == 0;
}

int admin_list_dead_letters(struct app *app, struct http_request *req)
{
    long limit;
    parse_limit(req, &limit); /* admin_check_limit has accepted it */
    size_t each = DEAD_LETTERS_SHOWN_TOTAL / (size_t)limit;
    if (each > DEAD_LETTER_BODY_SHOWN)
        each = DEAD_LETTER_BODY_SHOWN;
    redisContext *c = http_redis(req);
    redisReply *r = store_command(c, "XREVRANGE %s + - COUNT %ld", KEY_DEAD_LETTERS, limit);
    redisReply **bodies =
        r && r->type == REDIS_REPLY_ARRAY ? calloc(r->elements + 1, sizeof *bodies) : NULL;
    if (!bodies || !read_bodies(c, r, each, bodies)) {
        for (size_t i = 0; bodies && i < r->elements; i++)
            freeReplyObject(bodies[i]);
        free(bodies);
        freeReplyObject(r);
        http_reply_redis_unavailable(req, "read failed");
        return HTTP_DONE;
    }
    json_object *list = json_object_new_array();
    for (size_t i = 0; i < r->elements; i++) {
        json_object_array_add(list, dead_letter_view(r->element[i], bodies[i], each));
        freeReplyObject(bodies[i]);
    }
    free(bodies);
    freeReplyObject(r);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "dead_letters", list);
    http_reply_json(req, 200, o);
    return HTTP_DONE;
}

/* A stream entry id: milliseconds-sequence, both parts digits. */
static bool valid_entry_id(const char *id)
{
    size_t ms = strspn(id, "0123456789");
    return ms > 0 && id[ms] == '-' && id[ms + 1] != '\0' &&
           strspn(id + ms + 1, "0123456789") == strlen(id + ms + 1);
}

bool admin_check_entry_id(struct http_request *req)
{
    if (valid_entry_id(http_param(req, 0)))
        return true;
    http_reply_error(req, 400, "invalid_path_parameter",
                     "the dead letter id must be a stream entry id such as 1700000000000-0");
    return false;
}

int admin_redrive_dead_letter(struct app *app, struct http_request *req)
{
    const char *id = http_param(req, 0);
    int rc = queue_redrive(http_redis(req), id);
    if (rc == 1) {
        log_info("dead_letter_redriven", LOG_STR("entry", id));
        json_object *o = json_object_new_object();
        json_object_object_add(o, "id", json_object_new_string(id));
        json_object_object_add(o, "status", json_object_new_string("requeued"));
        http_reply_json(req, 202, o);
    } else if (rc == 0) {
        http_reply_error(req, 404, "unknown_dead_letter", "no dead letter \"%s\"", id);
    } else {
        http_reply_redis_unavailable(req, "write failed");
    }
    return HTTP_DONE;
}
