/*
 * admin_tokens.c - the association token endpoints: create (the token is shown
 * once), list (never a secret), revoke. Routes of http.c's table, reached with
 * the operator's token or a write token of the same association.
 */
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ccsync/admin.h"
#include "ccsync/http.h"
#include "ccsync/log.h"
#include "ccsync/store.h"
#include "ccsync/tokens.h"

static json_object *time_of(int64_t ns)
{
    if (ns <= 0)
        return NULL;
    time_t s = (time_t)(ns / 1000000000LL);
    struct tm tm;
    gmtime_r(&s, &tm);
    char buf[32];
    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_object_new_string(buf);
}

static json_object *token_view(const struct token_record *t)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "token_id", json_object_new_string(t->id));
    json_object_object_add(o, "scope", json_object_new_string(tokens_scope_name(t->scope)));
    json_object_object_add(o, "name", json_object_new_string(t->name));
    json_object_object_add(o, "created_at", time_of(t->created_at_ns));
    return o;
}

/* {"scope":"read"|"write","name":"…"}: scope required, name optional (≤ 128). */
bool admin_check_token(struct http_request *req)
{
    json_object *body = http_json(req), *scope = NULL, *name = NULL;
    if (!json_object_is_type(body, json_type_object)) {
        http_reply_error(req, 400, "invalid_body", "the body must be a JSON object");
        return false;
    }
    json_object_object_foreach(body, key, value)
    {
        (void)value;
        if (strcmp(key, "scope") != 0 && strcmp(key, "name") != 0) {
            http_reply_error(req, 400, "invalid_body", "unknown field \"%s\" (scope, name)", key);
            return false;
        }
    }
    if (!json_object_object_get_ex(body, "scope", &scope) ||
        !json_object_is_type(scope, json_type_string) ||
        tokens_scope_parse(json_object_get_string(scope)) == TOKEN_NONE) {
        http_reply_error(req, 400, "invalid_body", "scope must be \"read\" or \"write\"");
        return false;
    }
    if (json_object_object_get_ex(body, "name", &name) &&
        (!json_object_is_type(name, json_type_string) ||
         strlen(json_object_get_string(name)) > TOKEN_NAME_MAX)) {
        http_reply_error(req, 400, "invalid_body", "name must be a string of at most %d bytes",
                         TOKEN_NAME_MAX);
        return false;
    }
    return true;
}

int admin_create_token(struct app *app, struct http_request *req)
{
    (void)app;
    json_object *body = http_json(req), *scope, *name = NULL;
    json_object_object_get_ex(body, "scope", &scope); /* admin_check_token accepted it */
    json_object_object_get_ex(body, "name", &name);
    struct token_record rec;
    char token[TOKEN_SIZE];
    if (tokens_create(
            http_redis(req), http_param(req, 0), tokens_scope_parse(json_object_get_string(scope)),
            name ? json_object_get_string(name) : "", store_now_ns(), &rec, token) != STORE_OK) {
        http_reply_redis_unavailable(req, "the token could not be stored");
        return HTTP_DONE;
    }
    log_info("token_created", LOG_STR("association", http_param(req, 0)),
             LOG_STR("token_id", rec.id), LOG_STR("scope", tokens_scope_name(rec.scope)));
    json_object *o = token_view(&rec);
    json_object_object_add(o, "token", json_object_new_string(token)); /* shown this once */
    http_reply_json(req, 201, o);
    return HTTP_DONE;
}

int admin_list_tokens(struct app *app, struct http_request *req)
{
    (void)app;
    struct token_record *list;
    size_t n;
    if (tokens_list(http_redis(req), http_param(req, 0), &list, &n) != STORE_OK) {
        http_reply_redis_unavailable(req, "read failed");
        return HTTP_DONE;
    }
    json_object *arr = json_object_new_array(), *o = json_object_new_object();
    for (size_t i = 0; i < n; i++) {
        json_object *t = token_view(&list[i]);
        json_object_object_add(t, "last_used_at", time_of(list[i].last_used_at_ns));
        json_object_array_add(arr, t);
    }
    free(list);
    json_object_object_add(o, "tokens", arr);
    http_reply_json(req, 200, o);
    return HTTP_DONE;
}

int admin_revoke_token(struct app *app, struct http_request *req)
{
    (void)app;
    int rc = tokens_revoke(http_redis(req), http_param(req, 0), http_param(req, 1));
    if (rc == STORE_ERR) {
        http_reply_redis_unavailable(req, "the token could not be revoked");
    } else if (rc == 0) {
        http_reply_error(req, 404, "unknown_token", "association %s has no token %s",
                         http_param(req, 0), http_param(req, 1));
    } else {
        log_info("token_revoked", LOG_STR("association", http_param(req, 0)),
                 LOG_STR("token_id", http_param(req, 1)));
        http_reply(req, 204, NULL, NULL, 0);
    }
    return HTTP_DONE;
}
