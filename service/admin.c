/*
 * admin.c - health endpoints and the association admin API.
 *
 * Secrets go into Redis and never come back out: the association view says
 * only whether each is set, with the token's expiry and the connection state.
 */
#include "ccsync/admin.h"

#include <hiredis/hiredis.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccsync/app.h"
#include "ccsync/http.h"
#include "ccsync/ingest.h"
#include "ccsync/log.h"
#include "ccsync/metrics.h"
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
    char sig[128];
    if (u->webhook_secret && webhook_sign(u->webhook_secret, "x", 0, "", 0, sig, sizeof sig) != 0) {
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
    if (!u->cc_access_token && !u->cc_refresh_token) {
        http_reply_error(req, 400, "invalid_field",
                         "constant_contact needs access_token or refresh_token");
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
