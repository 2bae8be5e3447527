/*
 * http_stub.c - http.h for the fuzz targets: a request is only what a fuzz
 * target puts in it (a parsed JSON body, path parameters), and an answer is
 * only kept (status, code), so that the admin API's checks run over fuzzed
 * bodies without a daemon. Linked instead of service/http.c.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "ccsync/http.h"
#include "fuzz_http.h"

struct http_server *http_start(struct app *app, char *err, size_t err_size)
{
    (void)app;
    snprintf(err, err_size, "no HTTP server in a fuzz target");
    return NULL;
}

void http_quiesce(struct http_server *s)
{
    (void)s;
}

int http_in_flight(struct http_server *s)
{
    (void)s;
    return 0;
}

void http_stop(struct http_server *s)
{
    (void)s;
}

int http_port(struct http_server *s)
{
    (void)s;
    return 0;
}

const char *http_header(struct http_request *req, const char *name)
{
    (void)req;
    (void)name;
    return NULL;
}

const char *http_query(struct http_request *req, const char *name)
{
    return strcmp(name, "limit") == 0 ? req->limit : NULL;
}

const char *http_param(struct http_request *req, int index)
{
    return index == 0 ? "fuzz" : "g-1";
}

const char *http_body(struct http_request *req, size_t *len)
{
    *len = 0;
    (void)req;
    return "";
}

const char *http_route_name(struct http_request *req)
{
    (void)req;
    return "fuzz";
}

struct redisContext *http_redis(struct http_request *req)
{
    (void)req;
    return NULL;
}

const char *http_redis_error(struct http_request *req)
{
    (void)req;
    return "no Redis in a fuzz target";
}

const struct association *http_association(struct http_request *req)
{
    (void)req;
    return NULL;
}

enum http_access http_access(struct http_request *req)
{
    (void)req;
    return HTTP_ACCESS_OPERATOR;
}

struct json_object *http_json(struct http_request *req)
{
    return req->json;
}

void http_set_log_field(struct http_request *req, const char *key, const char *value)
{
    (void)req;
    (void)key;
    (void)value;
}

void http_reply(struct http_request *req, int status, const char *content_type, char *body,
                size_t len)
{
    (void)content_type;
    (void)len;
    free(body);
    req->status = status;
}

void http_reply_json(struct http_request *req, int status, struct json_object *obj)
{
    json_object_put(obj);
    req->status = status;
}

void http_reply_error(struct http_request *req, int status, const char *code, const char *fmt, ...)
{
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    req->status = status;
    snprintf(req->code, sizeof req->code, "%s", code);
}

void http_reply_redis_unavailable(struct http_request *req, const char *why)
{
    http_reply_error(req, 503, "redis_unavailable", "%s", why);
}

void http_add_header(struct http_request *req, const char *name, const char *value)
{
    (void)req;
    (void)name;
    (void)value;
}

void http_suspend(struct http_request *req)
{
    (void)req;
}

void http_resume(struct http_request *req)
{
    (void)req;
}

void http_discard_body(struct http_request *req)
{
    (void)req;
}

bool http_body_discarded(struct http_request *req)
{
    (void)req;
    return false;
}
