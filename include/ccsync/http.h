/*
 * http.h - the HTTP server (libmicrohttpd, epoll, a thread pool), the route
 * table and the helpers handlers use to read a request and answer it.
 *
 * A handler returns HTTP_DONE after setting its answer with http_reply*, or
 * HTTP_SUSPENDED after http_suspend and handing the request to another thread,
 * which later calls http_reply* and then http_resume (never touching req after).
 *
 * A route's flags say what its handler needs (a Redis connection, the path's
 * association); http.c takes it before the handler runs, answers 503 or 404 in
 * its place when it cannot, and gives it back afterwards. A route may also name
 * a check, run first, that refuses a request without asking Redis.
 */
#ifndef CCSYNC_HTTP_H
#define CCSYNC_HTTP_H

#include <stdbool.h>
#include <stddef.h>

struct app;
struct association;
struct http_request;
struct redisContext;
struct http_server;
struct json_object;

enum { HTTP_DONE = 0, HTTP_SUSPENDED = 1 };

/* A route's check: true to go on, false after answering (a 4xx). */
typedef bool (*http_check_fn)(struct http_request *req);

struct http_server *http_start(struct app *app, char *err, size_t err_size);
/* Stop accepting new connections (readyz already answers 503 by then). */
void http_quiesce(struct http_server *s);
/* Requests in flight (being read, handled or answered). */
int http_in_flight(struct http_server *s);
void http_stop(struct http_server *s);
/* The port actually bound (useful with CCSYNC_LISTEN=...:0 in tests). */
int http_port(struct http_server *s);
/* The admin listener's port (CCSYNC_ADMIN_LISTEN), 0 when there is none. */
int http_admin_port(struct http_server *s);

const char *http_header(struct http_request *req, const char *name);
const char *http_query(struct http_request *req, const char *name);
/* Path parameters in route order: 0 association_id, 1 group_id / entry id. */
const char *http_param(struct http_request *req, int index);
const char *http_body(struct http_request *req, size_t *len);
const char *http_route_name(struct http_request *req);

/* What the route's flags took for the handler, lent for the handler's run.
 * http_redis is NULL only on a WANTS_REDIS route when Redis cannot be reached
 * (http_redis_error says why); http_association is set on NEEDS_ASSOCIATION
 * routes; http_json is a BODY_JSON route's body, parsed. */
struct redisContext *http_redis(struct http_request *req);
const char *http_redis_error(struct http_request *req);
const struct association *http_association(struct http_request *req);

/* Who is calling an authenticated route: the operator (CCSYNC_ADMIN_TOKEN) or
 * an association token of the path's association, with its scope. */
enum http_access {
    HTTP_ACCESS_NONE = 0,
    HTTP_ACCESS_PENDING, /* an association token not checked yet (http.c only) */
    HTTP_ACCESS_READ,
    HTTP_ACCESS_WRITE,
    HTTP_ACCESS_OPERATOR,
};
enum http_access http_access(struct http_request *req);
struct json_object *http_json(struct http_request *req);

/* Log fields a handler learns (the association, the webhook-id) for the access log. */
void http_set_log_field(struct http_request *req, const char *key, const char *value);

/* Takes ownership of body (malloc'd). */
void http_reply(struct http_request *req, int status, const char *content_type, char *body,
                size_t len);
/* Takes ownership of obj (a json-c reference). */
void http_reply_json(struct http_request *req, int status, struct json_object *obj);
/* {"error":{"code","message"}} */
void http_reply_error(struct http_request *req, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* 503 redis_unavailable with Retry-After: 5 ("the state store is unavailable: why"). */
void http_reply_redis_unavailable(struct http_request *req, const char *why);
void http_add_header(struct http_request *req, const char *name, const char *value);
/* Called by a handler before it hands req to another thread (then it returns
 * HTTP_SUSPENDED); the other thread answers with http_reply* and http_resume. */
void http_suspend(struct http_request *req);
void http_resume(struct http_request *req);

/* For a webhook's check before its body (ingest_precheck): the body is received
 * and counted but not kept (http_body then gives its length over no bytes). */
void http_discard_body(struct http_request *req);
bool http_body_discarded(struct http_request *req);

#endif
