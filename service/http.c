/*
 * http.c - the libmicrohttpd daemon, the route table in one place, request
 * reading (headers, bounded bodies) and JSON answers.
 *
 * A request goes through its route's columns in order: the admin token (auth),
 * the path parameters, the body's headers and the body (body), the route's own
 * check, then what the handler needs (needs: a pooled Redis connection, the
 * path's association), which is taken here, refused here with 503 or 404, and
 * given back here, so handlers hold no connection bookkeeping.
 *
 * Limits are enforced before a body is read: a Content-Length over the limit is
 * answered 413 at once; a chunked body that grows past it is dropped and
 * answered 413. A webhook's headers, timestamp and association are looked at
 * first too (ingest_precheck). Bodies buffered at once are counted across the
 * process (CCSYNC_MAX_INFLIGHT_BODY_BYTES): a body that would go over is not
 * taken and is answered 503 with Retry-After. Every connection is tracked from
 * its start or its last answer, and one that has not finished a request within
 * CCSYNC_REQUEST_DEADLINE_SECONDS is shut down by the reaper thread (the
 * daemon's own timeout only counts idle time: a byte every 29 s kept it alive).
 * Connections are capped in all and per client address by the daemon.
 * Every answer, error or not, is logged once when the connection
 * finishes with it (route, status, association, webhook-id, duration).
 */
#include "ccsync/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <sys/socket.h>
#include <json-c/json.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "ccsync/admin.h"
#include "ccsync/app.h"
#include "ccsync/ingest.h"
#include "ccsync/log.h"
#include "ccsync/metrics.h"
#include "ccsync/model.h"
#include "ccsync/store.h"
#include "ccsync/tokens.h"

#define ADMIN_MAX_BODY (1024 * 1024)
#define MAX_PARAMS 2
#define MAX_EXTRA_HEADERS 4

/*
 * Who may call a route. AUTH_OPERATOR: CCSYNC_ADMIN_TOKEN only. AUTH_READ and
 * AUTH_WRITE: the operator's token, or an association token of the path's
 * association with that scope (write includes read); another association's
 * token, or a revoked one, is answered 404 as if the association did not exist,
 * and a read token asking to write 403.
 */
enum auth { AUTH_NONE, AUTH_SIGNATURE, AUTH_OPERATOR, AUTH_READ, AUTH_WRITE };
enum body_kind { BODY_NONE, BODY_JSON, BODY_WEBHOOK };

/*
 * What a handler needs before it runs. http.c takes it, answers for the handler
 * when it cannot (503 redis_unavailable, 404 unknown_association), hands it over
 * in the request (http_redis, http_association) and gives it back afterwards,
 * so no handler repeats that preamble. A route that suspends needs nothing.
 */
enum needs {
    NEEDS_NOTHING = 0,
    WANTS_REDIS = 1 << 0,                       /* a connection if Redis answers; runs either way */
    NEEDS_REDIS = 1 << 1,                       /* a connection, else 503 */
    NEEDS_ASSOCIATION = (1 << 2) | NEEDS_REDIS, /* and the path's association, else 404 */
};

typedef int (*handler_fn)(struct app *app, struct http_request *req);

struct route {
    const char *method;
    const char *pattern; /* segments; "{a}" association_id, "{g}" Novi id, "{e}" stream entry id */
    const char *name;    /* metrics/log label */
    enum auth auth;
    enum body_kind body;
    int needs;
    http_check_fn check; /* refuses what it can before Redis is asked; NULL: nothing to check */
    handler_fn handler;
};

/* The whole HTTP surface of ccsync. openapi/ccsync.yaml describes the same. */
// clang-format off
static const struct route routes[] = {
    /* {method, pattern, name, auth, body, needs, check, handler} */
    {"GET",  "/livez",                                 "livez",               AUTH_NONE,      BODY_NONE,    NEEDS_NOTHING,     NULL,                 admin_livez},
    {"GET",  "/readyz",                                "readyz",              AUTH_NONE,      BODY_NONE,    WANTS_REDIS,       NULL,                 admin_readyz},
    {"GET",  "/metrics",                               "metrics",             AUTH_NONE,      BODY_NONE,    WANTS_REDIS,       NULL,                 admin_metrics},
    {"GET",  "/ui",                                    "ui",                  AUTH_NONE,      BODY_NONE,    NEEDS_NOTHING,     NULL,                 ui_redirect},
    {"GET",  "/ui/",                                   "ui",                  AUTH_NONE,      BODY_NONE,    NEEDS_NOTHING,     NULL,                 ui_page},
    {"GET",  "/ui/app.js",                             "ui",                  AUTH_NONE,      BODY_NONE,    NEEDS_NOTHING,     NULL,                 ui_script},
    {"GET",  "/ui/app.css",                            "ui",                  AUTH_NONE,      BODY_NONE,    NEEDS_NOTHING,     NULL,                 ui_style},
    {"GET",  "/ui/icon.svg",                           "ui",                  AUTH_NONE,      BODY_NONE,    NEEDS_NOTHING,     NULL,                 ui_icon},
    {"POST", "/v1/associations/{a}/webhooks/novi",     "webhook",             AUTH_SIGNATURE, BODY_WEBHOOK, NEEDS_NOTHING,     NULL,                 ingest_handle_webhook},
    {"PUT",  "/v1/associations/{a}",                   "association_put",     AUTH_WRITE,     BODY_JSON,    NEEDS_REDIS,       admin_check_update,   admin_put_association},
    {"GET",  "/v1/associations/{a}",                   "association_get",     AUTH_READ,      BODY_NONE,    NEEDS_ASSOCIATION, NULL,                 admin_get_association},
    {"GET",  "/v1/associations/{a}/groups",            "groups_list",         AUTH_READ,      BODY_NONE,    NEEDS_ASSOCIATION, NULL,                 admin_list_groups},
    {"GET",  "/v1/associations/{a}/groups/{g}",        "group_get",           AUTH_READ,      BODY_NONE,    NEEDS_ASSOCIATION, NULL,                 admin_get_group},
    {"GET",  "/v1/associations/{a}/groups/{g}/members", "group_members",      AUTH_READ,      BODY_NONE,    NEEDS_ASSOCIATION, admin_check_members,  admin_list_members},
    {"POST", "/v1/associations/{a}/groups/{g}/resync", "group_resync",        AUTH_WRITE,     BODY_NONE,    NEEDS_ASSOCIATION, NULL,                 admin_resync_group},
    {"GET",  "/v1/associations/{a}/members/{m}",       "member_get",          AUTH_READ,      BODY_NONE,    NEEDS_ASSOCIATION, NULL,                 admin_get_member},
    {"POST", "/v1/associations/{a}/reconcile",         "association_reconcile", AUTH_READ,    BODY_NONE,    NEEDS_ASSOCIATION, NULL,                 admin_reconcile_association},
    {"GET",  "/v1/associations/{a}/audit",             "audit",               AUTH_READ,      BODY_NONE,    NEEDS_ASSOCIATION, admin_check_limit,    admin_audit},
    {"POST", "/v1/associations/{a}/tokens",            "token_create",        AUTH_WRITE,     BODY_JSON,    NEEDS_ASSOCIATION, admin_check_token,    admin_create_token},
    {"GET",  "/v1/associations/{a}/tokens",            "tokens_list",         AUTH_WRITE,     BODY_NONE,    NEEDS_ASSOCIATION, NULL,                 admin_list_tokens},
    {"DELETE", "/v1/associations/{a}/tokens/{t}",      "token_revoke",        AUTH_WRITE,     BODY_NONE,    NEEDS_ASSOCIATION, NULL,                 admin_revoke_token},
    {"GET",  "/v1/status",                             "status",              AUTH_OPERATOR,    BODY_NONE,    WANTS_REDIS,       NULL,                 admin_status},
    {"GET",  "/v1/dead-letters",                       "dead_letters_list",   AUTH_OPERATOR,    BODY_NONE,    NEEDS_REDIS,       admin_check_limit,    admin_list_dead_letters},
    {"POST", "/v1/dead-letters/{e}/redrive",           "dead_letter_redrive", AUTH_OPERATOR,    BODY_NONE,    NEEDS_REDIS,       admin_check_entry_id, admin_redrive_dead_letter},
};
// clang-format on

/*
 * ccsyncd accepts connections itself, in one thread, and hands them to the
 * daemon's thread pool (MHD_add_connection). Stopping to accept at shutdown is
 * then closing our own socket: libmicrohttpd 0.9.75's MHD_quiesce_daemon races
 * with its epoll worker threads (it can abort the process with "Failed to
 * remove listen FD from epoll set", seen under load at SIGTERM).
 */
/* A connection as the reaper sees it: its socket and since when it owes an
 * answer (its start, or the end of its last request). */
struct conn_track {
    struct conn_track *prev, *next;
    int fd;
    int64_t since_ns;
    bool reaped;
};

struct http_server {
    struct MHD_Daemon *daemon;
    struct app *app;
    atomic_int in_flight;
    int port;
    int listen_fd;
    pthread_t acceptor;
    bool acceptor_running;
    atomic_bool quiescing;
    /* CCSYNC_ADMIN_LISTEN: a second socket feeding the same daemon; admin_port is
     * 0 without it. A connection's local port says which socket it came through. */
    int admin_port;
    int admin_fd;
    pthread_t admin_acceptor;
    bool admin_acceptor_running;
    atomic_size_t body_bytes;   /* reserved by the bodies being buffered */
    pthread_mutex_t conns_lock; /* guards conns and every conn_track in it */
    struct conn_track conns;    /* list head */
    pthread_t reaper;
    bool reaper_running;
    atomic_bool reaper_stop;
};

struct extra_header {
    char name[32];
    char value[256]; /* the status page's Content-Security-Policy is about 200 */
};

struct http_request {
    struct http_server *srv;
    struct MHD_Connection *conn;
    const struct route *route;
    const char *route_name;
    char params[MAX_PARAMS][CCSYNC_ID_MAX + 1];
    size_t body_limit;
    char *body;
    size_t body_len, body_cap;
    size_t body_reserved; /* counted in srv->body_bytes until the request ends */
    bool too_large;
    bool over_capacity; /* the process's body budget was spent: 503 */
    bool discard;       /* the body is counted, not kept (http_discard_body) */
    bool suspended;
    atomic_bool answered_async;
    /* the answer */
    int status;
    char *resp;
    size_t resp_len;
    const char *content_type;
    struct extra_header headers[MAX_EXTRA_HEADERS];
    int n_headers;
    bool replied;
    /* what the route's needs took for the handler (given back after it) */
    struct redisContext *redis;
    char redis_error[256]; /* why there is no connection */
    struct association *association;
    struct json_object *json; /* a BODY_JSON route's body, parsed */
    enum http_access access;  /* who called: set in begin, or after the token check */
    bool public_only;         /* came through CCSYNC_LISTEN while CCSYNC_ADMIN_LISTEN is set */
    /* for the access log */
    struct timespec started;
    char log_association[CCSYNC_ASSOC_ID_MAX + 1];
    char log_webhook_id[130];
};

const char *http_header(struct http_request *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *http_query(struct http_request *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *http_param(struct http_request *req, int index)
{
    return (index >= 0 && index < MAX_PARAMS) ? req->params[index] : "";
}

const char *http_body(struct http_request *req, size_t *len)
{
    *len = req->body_len;
    return req->body ? req->body : "";
}

const char *http_route_name(struct http_request *req)
{
    return req->route_name;
}

struct redisContext *http_redis(struct http_request *req)
{
    return req->redis;
}

const char *http_redis_error(struct http_request *req)
{
    return req->redis_error;
}

enum http_access http_access(struct http_request *req)
{
    return req->access;
}

const struct association *http_association(struct http_request *req)
{
    return req->association;
}

struct json_object *http_json(struct http_request *req)
{
    return req->json;
}

/* snprintf(out, size, "%s", s) without the format machinery: every request
 * sets its log fields. size > 0. */
static void text_copy(char *out, size_t size, const char *s)
{
    if (!s)
        s = "";
    size_t n = strnlen(s, size - 1);
    memcpy(out, s, n);
    out[n] = '\0';
}

void http_set_log_field(struct http_request *req, const char *key, const char *value)
{
    if (strcmp(key, "association") == 0)
        text_copy(req->log_association, sizeof req->log_association, value);
    else if (strcmp(key, "webhook_id") == 0)
        text_copy(req->log_webhook_id, sizeof req->log_webhook_id, value);
}

void http_reply(struct http_request *req, int status, const char *content_type, char *body,
                size_t len)
{
    free(req->resp);
    req->status = status;
    req->content_type = content_type;
    req->resp = body;
    req->resp_len = len;
    req->replied = true;
}

void http_reply_json(struct http_request *req, int status, struct json_object *obj)
{
    const char *s = json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN |
                                                            JSON_C_TO_STRING_NOSLASHESCAPE);
    size_t len = strlen(s);
    char *copy = malloc(len + 1);
    if (copy)
        memcpy(copy, s, len + 1);
    json_object_put(obj);
    if (!copy) {
        http_reply(req, 500, "application/json", NULL, 0);
        return;
    }
    http_reply(req, status, "application/json", copy, len);
}

void http_reply_error(struct http_request *req, int status, const char *code, const char *fmt, ...)
{
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    json_object *err = json_object_new_object();
    json_object_object_add(err, "code", json_object_new_string(code));
    json_object_object_add(err, "message", json_object_new_string(message));
    json_object *root = json_object_new_object();
    json_object_object_add(root, "error", err);
    http_reply_json(req, status, root);
}

void http_reply_redis_unavailable(struct http_request *req, const char *why)
{
    http_add_header(req, "Retry-After", "5");
    http_reply_error(req, 503, "redis_unavailable", "the state store is unavailable: %s", why);
}

void http_add_header(struct http_request *req, const char *name, const char *value)
{
    if (req->n_headers >= MAX_EXTRA_HEADERS)
        return;
    struct extra_header *h = &req->headers[req->n_headers++];
    snprintf(h->name, sizeof h->name, "%s", name);
    snprintf(h->value, sizeof h->value, "%s", value);
}

void http_suspend(struct http_request *req)
{
    req->suspended = true;
    MHD_suspend_connection(req->conn);
}

void http_resume(struct http_request *req)
{
    atomic_store(&req->answered_async, true);
    MHD_resume_connection(req->conn);
}

void http_discard_body(struct http_request *req)
{
    req->discard = true;
}

bool http_body_discarded(struct http_request *req)
{
    return req->discard;
}

/* Reserves n more bytes of the process's body budget; false when it is spent. */
static bool body_reserve(struct http_request *req, size_t n)
{
    struct http_server *s = req->srv;
    size_t cap = s->app->cfg->max_inflight_body_bytes;
    size_t before = atomic_fetch_add(&s->body_bytes, n);
    if (before + n > cap) {
        atomic_fetch_sub(&s->body_bytes, n);
        return false;
    }
    req->body_reserved += n;
    return true;
}

static void body_release(struct http_request *req)
{
    atomic_fetch_sub(&req->srv->body_bytes, req->body_reserved);
    req->body_reserved = 0;
}

static void reply_over_capacity(struct http_request *req)
{
    metrics_inc("ccsync_http_bodies_refused_total", "");
    http_add_header(req, "Retry-After", "5");
    http_reply_error(req, 503, "server_busy",
                     "too many request bodies are being received at once; retry later");
}

/*
 * A JSON answer to a GET carries an ETag (FNV-1a of its bytes: it tells
 * answers apart, it does not protect anything), and a request whose
 * If-None-Match names it gets 304 with no body: a dashboard that polls the
 * groups every few seconds then moves almost nothing while nothing changed.
 */
static void conditional(struct http_request *req)
{
    if (req->status != 200 || !req->resp || !req->route || strcmp(req->route->method, "GET") != 0 ||
        !req->content_type || strcmp(req->content_type, "application/json") != 0 ||
        req->n_headers >= MAX_EXTRA_HEADERS)
        return;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < req->resp_len; i++)
        h = (h ^ (unsigned char)req->resp[i]) * 1099511628211ULL;
    char tag[24];
    snprintf(tag, sizeof tag, "\"%016llx\"", (unsigned long long)h);
    http_add_header(req, "ETag", tag);
    const char *asked = http_header(req, MHD_HTTP_HEADER_IF_NONE_MATCH);
    if (asked && strstr(asked, tag)) {
        free(req->resp);
        req->resp = NULL;
        req->resp_len = 0;
        req->content_type = NULL;
        req->status = 304;
    }
}

static enum MHD_Result send_reply(struct http_request *req)
{
    conditional(req);
    if (!req->resp && req->status != 204 && req->status != 304) {
        static const char fallback[] = "{\"error\":{\"code\":\"internal\",\"message\":\"the server "
                                       "could not build an answer\"}}";
        req->status = 500;
        req->resp = strdup(fallback);
        req->resp_len = req->resp ? strlen(req->resp) : 0;
        req->content_type = "application/json";
    }
    struct MHD_Response *r =
        MHD_create_response_from_buffer(req->resp_len, req->resp, MHD_RESPMEM_MUST_FREE);
    if (!r)
        return MHD_NO;
    req->resp = NULL; /* the response owns it now */
    if (req->content_type)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, req->content_type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    for (int i = 0; i < req->n_headers; i++)
        MHD_add_response_header(r, req->headers[i].name, req->headers[i].value);
    enum MHD_Result ret = MHD_queue_response(req->conn, (unsigned int)req->status, r);
    MHD_destroy_response(r);
    return ret;
}

/* Splits path into segments and matches it to pattern, filling params. */
static int match(const char *pattern, const char *path, char params[MAX_PARAMS][CCSYNC_ID_MAX + 1],
                 const char **bad_param)
{
    int n = 0;
    *bad_param = NULL;
    while (*pattern && *path) {
        if (*pattern != '/' || *path != '/')
            return 0;
        pattern++;
        path++;
        size_t plen = strcspn(pattern, "/"), slen = strcspn(path, "/");
        if (pattern[0] == '{') {
            if (n >= MAX_PARAMS)
                return 0;
            bool ok;
            if (pattern[1] == 'a')
                ok = slen <= CCSYNC_ASSOC_ID_MAX;
            else
                ok = slen <= CCSYNC_ID_MAX;
            if (!ok || slen == 0) {
                *bad_param = pattern;
                ok = false;
            }
            if (ok) {
                memcpy(params[n], path, slen);
                params[n][slen] = '\0';
                bool valid = pattern[1] == 'a' ? ccsync_valid_association_id(params[n])
                                               : ccsync_valid_unique_id(params[n]);
                if (!valid)
                    *bad_param = pattern;
            }
            n++;
        } else if (plen != slen || strncmp(pattern, path, plen) != 0) {
            return 0;
        }
        pattern += plen;
        path += slen;
    }
    if (*pattern || *path)
        return 0;
    return 1;
}

static const char *param_name(const char *pattern_segment)
{
    switch (pattern_segment[1]) {
    case 'a':
        return "association_id (1-64 characters of A-Z a-z 0-9 _ -)";
    case 'g':
        return "group_id (1-128 characters of A-Z a-z 0-9 _ . : -)";
    case 't':
        return "token_id";
    default:
        return "entry id";
    }
}

static const char *bearer(struct http_request *req)
{
    const char *h = http_header(req, MHD_HTTP_HEADER_AUTHORIZATION);
    return h && strncasecmp(h, "Bearer ", 7) == 0 ? h + 7 : NULL;
}

static bool admin_authorized(struct http_server *s, struct http_request *req)
{
    const char *given = bearer(req), *want = s->app->cfg->admin_token;
    if (!given)
        return false;
    size_t gl = strlen(given), wl = strlen(want);
    /* compare in constant time over the expected token's length */
    return gl == wl && CRYPTO_memcmp(given, want, wl) == 0;
}

/* Decides what begin can without Redis: the operator's token, or a token of the
 * association format, whose check waits for a connection (check_token). */
static bool authenticate(struct http_server *s, struct http_request *req)
{
    enum auth auth = req->route->auth;
    if (auth == AUTH_NONE || auth == AUTH_SIGNATURE)
        return true;
    if (admin_authorized(s, req)) {
        req->access = HTTP_ACCESS_OPERATOR;
        return true;
    }
    char id[TOKEN_ID_LEN + 1];
    if (auth == AUTH_OPERATOR || !tokens_parse(bearer(req), id))
        return false;
    req->access = HTTP_ACCESS_PENDING;
    return true;
}

/* An association token against the path's association: false when answered
 * (404 as if the association did not exist, 403 for a read token asked to
 * write, 503 when Redis failed). */
static bool check_token(struct http_request *req)
{
    enum token_scope scope;
    int rc = tokens_check(req->redis, req->params[0], bearer(req), store_now_ns(), &scope);
    if (rc == STORE_ERR) {
        http_reply_redis_unavailable(req, "the token could not be checked");
        return false;
    }
    if (rc == 0) {
        http_reply_error(req, 404, "unknown_association",
                         "no association %s for this token (or the token was revoked)",
                         req->params[0]);
        return false;
    }
    if (scope == TOKEN_READ && req->route->auth == AUTH_WRITE) {
        http_reply_error(req, 403, "forbidden",
                         "this token may only read; changing anything needs a write token");
        return false;
    }
    req->access = scope == TOKEN_WRITE ? HTTP_ACCESS_WRITE : HTTP_ACCESS_READ;
    return true;
}

static bool is_json_content_type(const char *ct)
{
    if (!ct)
        return false;
    while (*ct == ' ')
        ct++;
    size_t n = strcspn(ct, "; ");
    return n == strlen("application/json") && strncasecmp(ct, "application/json", n) == 0;
}

/*
 * With CCSYNC_ADMIN_LISTEN set, the public listener (the webhook URL Novi
 * calls, open to the internet) serves only these; the admin API, the status
 * page and /metrics answer there as if they did not exist. The admin listener
 * serves every route.
 */
static bool served_here(const struct http_request *req, const struct route *r)
{
    static const char *const public_routes[] = {"webhook", "livez", "readyz"};
    if (!req->public_only)
        return true;
    for (size_t i = 0; i < sizeof public_routes / sizeof public_routes[0]; i++)
        if (strcmp(r->name, public_routes[i]) == 0)
            return true;
    return false;
}

/* The local port of the connection (which listener it came through); 0 unknown. */
static int local_port(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    struct sockaddr_storage addr;
    socklen_t len = sizeof addr;
    if (!info || getsockname(info->connect_fd, (struct sockaddr *)&addr, &len) != 0)
        return 0;
    if (addr.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&addr)->sin_port);
    if (addr.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&addr)->sin6_port);
    return 0;
}

/* Finds the route of method and url; false (404 or 405 answered) when none.
 * *bad is the pattern segment of a path parameter that is not valid. */
static bool find_route(struct http_request *req, const char *url, const char *method,
                       const char **bad)
{
    char allowed[64] = "";
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        char params[MAX_PARAMS][CCSYNC_ID_MAX + 1] = {{0}};
        const char *b = NULL;
        if (!served_here(req, &routes[i]) || !match(routes[i].pattern, url, params, &b))
            continue;
        req->route_name = routes[i].name;
        if (strcmp(routes[i].method, method) != 0) {
            size_t n = strlen(allowed);
            snprintf(allowed + n, sizeof allowed - n, "%s%s", n ? ", " : "", routes[i].method);
            continue;
        }
        req->route = &routes[i];
        memcpy(req->params, params, sizeof params);
        *bad = b;
        return true;
    }
    if (allowed[0]) {
        http_add_header(req, "Allow", allowed);
        http_reply_error(req, 405, "method_not_allowed", "%s is not allowed on %s; use %s", method,
                         url, allowed);
    } else {
        req->route_name = "unknown";
        http_reply_error(req, 404, "not_found", "no such endpoint: %s %s", method, url);
    }
    return false;
}

/* A route with a body: its length and type, told by the headers before it comes. */
static void check_body_headers(struct http_server *s, struct http_request *req)
{
    req->body_limit =
        req->route->body == BODY_WEBHOOK ? s->app->cfg->max_body_bytes : ADMIN_MAX_BODY;
    const char *cl = http_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoull(cl, NULL, 10) > req->body_limit) {
        http_reply_error(req, 413, "body_too_large", "the body is %s bytes; the limit is %zu", cl,
                         req->body_limit);
        return;
    }
    if (!is_json_content_type(http_header(req, MHD_HTTP_HEADER_CONTENT_TYPE)))
        http_reply_error(req, 415, "unsupported_media_type",
                         "the body must be sent as Content-Type: application/json");
}

/* A body announced by Content-Length is reserved whole, once the request has
 * passed every check that needs no body; a chunked one as it grows. */
static void reserve_announced_body(struct http_request *req)
{
    const char *cl = http_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
    size_t n = cl ? (size_t)strtoull(cl, NULL, 10) : 0;
    if (n == 0 || req->discard)
        return;
    if (!body_reserve(req, n + 1)) {
        reply_over_capacity(req);
        return;
    }
    req->body = malloc(n + 1);
    if (req->body)
        req->body_cap = n + 1;
}

/* First call for a request: route it and refuse what can be refused before the body. */
static void begin(struct http_server *s, struct http_request *req, const char *url,
                  const char *method)
{
    const char *bad = NULL;
    req->public_only = s->admin_port > 0 && local_port(req->conn) != s->admin_port;
    if (!find_route(req, url, method, &bad))
        return;
    if (!authenticate(s, req)) {
        http_add_header(req, "WWW-Authenticate", "Bearer");
        http_reply_error(req, 401, "unauthorized",
                         req->route->auth == AUTH_OPERATOR
                             ? "missing or wrong token: send Authorization: Bearer "
                               "<CCSYNC_ADMIN_TOKEN> (this endpoint is the operator's)"
                             : "missing or wrong token: send Authorization: Bearer "
                               "<CCSYNC_ADMIN_TOKEN> or an association token");
        return;
    }
    if (bad) {
        http_reply_error(req, 400, "invalid_path_parameter", "the path's %s is not valid",
                         param_name(bad));
        return;
    }
    if (req->route->body == BODY_NONE)
        return;
    check_body_headers(s, req);
    if (!req->replied && req->route->body == BODY_WEBHOOK)
        ingest_precheck(s->app, req);
    if (!req->replied)
        reserve_announced_body(req);
}

/* Drops what was kept of the body; the request is answered without it. */
static void drop_body(struct http_request *req)
{
    free(req->body);
    req->body = NULL;
    req->body_len = req->body_cap = 0;
    body_release(req);
}

static void take_body(struct http_request *req, const char *data, size_t size)
{
    if (req->too_large || req->over_capacity)
        return;
    if (req->body_len + size > req->body_limit) {
        req->too_large = true;
        drop_body(req);
        return;
    }
    if (req->discard) {
        req->body_len += size;
        return;
    }
    if (req->body_len + size + 1 > req->body_cap) {
        size_t cap = req->body_cap ? req->body_cap : 4096;
        while (cap < req->body_len + size + 1)
            cap *= 2;
        if (cap > req->body_limit + 1)
            cap = req->body_limit + 1;
        if (cap > req->body_reserved && !body_reserve(req, cap - req->body_reserved)) {
            req->over_capacity = true;
            drop_body(req);
            return;
        }
        char *grown = realloc(req->body, cap);
        if (!grown) {
            req->over_capacity = true;
            drop_body(req);
            return;
        }
        req->body = grown;
        req->body_cap = cap;
    }
    memcpy(req->body + req->body_len, data, size);
    req->body_len += size;
    req->body[req->body_len] = '\0';
}

/* A BODY_JSON route's body as one JSON value; false (400 answered) when it is not. */
static bool parse_json_body(struct http_request *req)
{
    json_tokener *tok = json_tokener_new();
    json_object *root = json_tokener_parse_ex(tok, req->body ? req->body : "", (int)req->body_len);
    bool complete = json_tokener_get_error(tok) == json_tokener_success &&
                    json_tokener_get_parse_end(tok) == req->body_len;
    json_tokener_free(tok);
    if (!root || !complete) {
        json_object_put(root);
        http_reply_error(req, 400, "malformed_json", "the body is not valid JSON");
        return false;
    }
    req->json = root;
    return true;
}

/* Loads the path's association; false (404 or 503 answered) when it cannot. */
static bool take_association(struct http_request *req)
{
    const char *id = req->params[0];
    req->association = malloc(sizeof *req->association);
    int found = req->association ? store_association_get(req->redis, &req->srv->app->cfg->secrets,
                                                         id, req->association)
                                 : -1;
    if (found < 0)
        http_reply_redis_unavailable(req, "read failed");
    else if (found == 0)
        http_reply_error(req, 404, "unknown_association", "no association \"%s\"", id);
    return found == 1;
}

/* Takes what the route needs; false (answered) when the handler cannot run. */
static bool take_needs(struct app *app, struct http_request *req)
{
    int needs = req->route->needs;
    if (!(needs & (WANTS_REDIS | NEEDS_REDIS)))
        return true;
    req->redis = store_pool_get(app->pool, req->redis_error, sizeof req->redis_error);
    if (!req->redis) {
        if (needs & NEEDS_REDIS)
            http_reply_redis_unavailable(req, req->redis_error);
        return !(needs & NEEDS_REDIS);
    }
    if ((needs & NEEDS_ASSOCIATION) == NEEDS_ASSOCIATION)
        return take_association(req);
    return true;
}

/* Gives back what take_needs took; a connection that broke is closed. */
static void give_back(struct app *app, struct http_request *req)
{
    if (req->redis)
        store_pool_put(app->pool, req->redis, req->redis->err == 0);
    req->redis = NULL;
    free(req->association);
    req->association = NULL;
}

/* While ccsyncd starts (Redis not reached yet, or its key layout being
 * migrated), only the health endpoints answer; the rest say so and when to
 * come back, so nothing reads or writes a key of the old layout. */
static bool refused_while_starting(struct app *app, struct http_request *req)
{
    static const char *const open[] = {"livez", "readyz", "metrics", "ui"};
    if (!atomic_load(&app->starting))
        return false;
    for (size_t i = 0; i < sizeof open / sizeof open[0]; i++)
        if (strcmp(req->route->name, open[i]) == 0)
            return false;
    http_add_header(req, "Retry-After", "5");
    http_reply_error(req, 503, "starting",
                     "ccsyncd is starting: it waits for Redis and prepares its key layout");
    return true;
}

/* The body is complete: check the request, take what it needs, run its handler. */
static int run_route(struct app *app, struct http_request *req)
{
    const struct route *r = req->route;
    if (strstr(r->pattern, "{a}"))
        http_set_log_field(req, "association", req->params[0]);
    if (refused_while_starting(app, req))
        return HTTP_DONE;
    /* An association token is checked before anything else is looked at, so a
     * token learns nothing of a path it may not use; it needs Redis for that. */
    bool by_token = req->access == HTTP_ACCESS_PENDING;
    if (by_token && !(take_needs(app, req) && check_token(req))) {
        give_back(app, req);
        return HTTP_DONE;
    }
    if (r->body == BODY_JSON && !parse_json_body(req)) {
        give_back(app, req);
        return HTTP_DONE;
    }
    if (r->check && !r->check(req)) {
        give_back(app, req);
        return HTTP_DONE;
    }
    int ret = HTTP_DONE;
    if (by_token || take_needs(app, req))
        ret = r->handler(app, req);
    if (ret == HTTP_SUSPENDED)
        return ret; /* another thread answers now; a route that suspends takes nothing */
    give_back(app, req);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct http_server *s = cls;
    struct http_request *req = *con_cls;
    if (!req) {
        req = calloc(1, sizeof *req);
        if (!req)
            return MHD_NO;
        req->srv = s;
        req->conn = conn;
        req->route_name = "unknown";
        clock_gettime(CLOCK_MONOTONIC, &req->started);
        atomic_fetch_add(&s->in_flight, 1);
        *con_cls = req;
        begin(s, req, url, method);
        if (req->replied)
            return send_reply(req);
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!req->replied)
            take_body(req, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (req->suspended) {
        /* back from another thread, which set the answer before resuming us */
        if (!atomic_load(&req->answered_async))
            return MHD_YES;
        req->suspended = false;
        return send_reply(req);
    }
    if (req->replied)
        return send_reply(req);
    if (req->too_large) {
        http_reply_error(req, 413, "body_too_large", "the body is over the limit of %zu bytes",
                         req->body_limit);
        return send_reply(req);
    }
    if (req->over_capacity) {
        reply_over_capacity(req);
        return send_reply(req);
    }
    if (run_route(s->app, req) == HTTP_SUSPENDED)
        return MHD_YES;
    return send_reply(req);
}

/* ---- the deadline of a whole request ---- */

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* The daemon tells of each connection's start and end; the end comes before
 * its socket is closed, so the reaper never shuts a socket another took. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct http_server *s = cls;
    struct conn_track *t = *socket_context;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *info =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        t = calloc(1, sizeof *t);
        if (!t || !info) {
            free(t);
            return; /* untracked: only the idle timeout applies to it */
        }
        t->fd = info->connect_fd;
        t->since_ns = now_ns();
        pthread_mutex_lock(&s->conns_lock);
        t->next = s->conns.next;
        t->prev = &s->conns;
        s->conns.next->prev = t;
        s->conns.next = t;
        pthread_mutex_unlock(&s->conns_lock);
        *socket_context = t;
        return;
    }
    if (!t)
        return;
    pthread_mutex_lock(&s->conns_lock);
    t->prev->next = t->next;
    t->next->prev = t->prev;
    pthread_mutex_unlock(&s->conns_lock);
    free(t);
    *socket_context = NULL;
}

/* A request was answered: the connection's next request has its own deadline. */
static void restart_deadline(struct http_server *s, struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct conn_track *t = info ? info->socket_context : NULL;
    if (!t)
        return;
    pthread_mutex_lock(&s->conns_lock);
    t->since_ns = now_ns();
    pthread_mutex_unlock(&s->conns_lock);
}

/* Shuts down every connection past the deadline; the daemon then sees the
 * socket end and closes it as if the client had gone. */
static void *reaper_main(void *arg)
{
    struct http_server *s = arg;
    int64_t deadline = (int64_t)s->app->cfg->request_deadline_seconds * 1000000000LL;
    while (!atomic_load(&s->reaper_stop)) {
        struct timespec pause = {0, 250 * 1000000L};
        nanosleep(&pause, NULL);
        int64_t now = now_ns();
        int reaped = 0;
        pthread_mutex_lock(&s->conns_lock);
        for (struct conn_track *t = s->conns.next; t != &s->conns; t = t->next) {
            if (t->reaped || now - t->since_ns < deadline)
                continue;
            shutdown(t->fd, SHUT_RDWR);
            t->reaped = true;
            reaped++;
        }
        pthread_mutex_unlock(&s->conns_lock);
        if (reaped)
            metrics_add("ccsync_http_deadline_exceeded_total", "", reaped);
    }
    return NULL;
}

/* The request's counter and duration. The labels, route="R",status="S" and
 * route="R", are put together without snprintf: every request does it. status
 * is 0 (no answer) or three digits. */
static void count_request(const char *route, int status, double secs)
{
    char labels[128], code[4] = {'0', '\0'};
    if (status >= 100 && status <= 999) {
        code[0] = (char)('0' + status / 100);
        code[1] = (char)('0' + status / 10 % 10);
        code[2] = (char)('0' + status % 10);
        code[3] = '\0';
    }
    const char *parts[] = {"route=\"", route, "\"", ",status=\"", code, "\""};
    size_t n = 0, route_end = 0;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        text_copy(labels + n, sizeof labels - n, parts[i]);
        n += strlen(labels + n);
        if (i == 2)
            route_end = n;
    }
    metrics_inc("ccsync_http_requests_total", labels);
    labels[route_end] = '\0';
    metrics_observe("ccsync_http_request_duration_seconds", labels, secs);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct http_server *s = cls;
    struct http_request *req = *con_cls;
    if (!req)
        return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double secs = (double)(now.tv_sec - req->started.tv_sec) +
                  (double)(now.tv_nsec - req->started.tv_nsec) / 1e9;
    int status = req->replied ? req->status : 0;
    count_request(req->route_name, status, secs);
    /* A GET answered 200 or 304 (a probe, a scrape, a polling dashboard) is a
     * debug line: at info the log keeps what changed something or failed. */
    bool quiet =
        req->route && strcmp(req->route->method, "GET") == 0 && (status == 200 || status == 304);
    enum log_level level = quiet ? LOG_DEBUG : LOG_INFO;
    if (log_enabled(level)) {
        LOG_AT_(level, "http_request", LOG_STR("route", req->route_name), LOG_INT("status", status),
                LOG_STR("association", req->log_association[0] ? req->log_association : NULL),
                LOG_STR("webhook_id", req->log_webhook_id[0] ? req->log_webhook_id : NULL),
                LOG_INT("duration_us", (long long)(secs * 1e6)),
                LOG_STR("completed", toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "yes" : "no"));
    }
    json_object_put(req->json);
    free(req->body);
    body_release(req);
    free(req->resp);
    free(req);
    *con_cls = NULL;
    atomic_fetch_sub(&s->in_flight, 1);
    restart_deadline(s, conn);
}

static void on_mhd_error(void *cls, const char *fmt, va_list ap)
{
    char msg[256];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n')
        msg[--n] = '\0';
    log_warn("http_server", LOG_STR("detail", msg));
}

/* Accepts on listen_fd until quiescing and hands each connection to the daemon. */
static void accept_loop(struct http_server *s, int listen_fd)
{
    while (!atomic_load(&s->quiescing)) {
        struct sockaddr_storage peer;
        socklen_t len = sizeof peer;
        int fd = accept4(listen_fd, (struct sockaddr *)&peer, &len, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (atomic_load(&s->quiescing))
                break;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                log_warn("http_accept_failed", LOG_STR("error", strerror(errno)));
                struct timespec pause = {0, 100 * 1000000L};
                nanosleep(&pause, NULL);
                continue;
            }
            log_error("http_accept_stopped", LOG_STR("error", strerror(errno)));
            break;
        }
        /* MHD closes fd when it cannot take it */
        if (MHD_add_connection(s->daemon, fd, (struct sockaddr *)&peer, len) != MHD_YES)
            metrics_inc("ccsync_http_connections_refused_total", "");
    }
}

static void *acceptor_main(void *arg)
{
    struct http_server *s = arg;
    accept_loop(s, s->listen_fd);
    return NULL;
}

static void *admin_acceptor_main(void *arg)
{
    struct http_server *s = arg;
    accept_loop(s, s->admin_fd);
    return NULL;
}

/* Binds host:port (the variable name for the messages); the socket, or -1. */
static int open_socket(const char *name, const char *host, int want_port, int *port, char *err,
                       size_t err_size)
{
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)want_port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        snprintf(err, err_size, "%s: \"%s\" is not an IPv4 address", name, host);
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 1024) != 0) {
        snprintf(err, err_size, "%s: cannot listen on %s:%d (%s)", name, host, want_port,
                 strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    socklen_t len = sizeof addr;
    getsockname(fd, (struct sockaddr *)&addr, &len);
    *port = ntohs(addr.sin_port);
    return fd;
}

static int open_listener(const struct config *cfg, int *port, char *err, size_t err_size)
{
    return open_socket("CCSYNC_LISTEN", cfg->listen_host, cfg->listen_port, port, err, err_size);
}

/* The admin listener, when CCSYNC_ADMIN_LISTEN is set: 0, or -1 with err. */
static int start_admin_listener(struct http_server *s, char *err, size_t err_size)
{
    const struct config *cfg = s->app->cfg;
    s->admin_fd = -1;
    if (cfg->admin_listen_port <= 0)
        return 0;
    s->admin_fd = open_socket("CCSYNC_ADMIN_LISTEN", cfg->admin_listen_host, cfg->admin_listen_port,
                              &s->admin_port, err, err_size);
    if (s->admin_fd < 0)
        return -1;
    if (pthread_create(&s->admin_acceptor, NULL, admin_acceptor_main, s) != 0) {
        snprintf(err, err_size, "cannot start the admin listener's accept thread");
        close(s->admin_fd);
        s->admin_fd = -1;
        s->admin_port = 0;
        return -1;
    }
    s->admin_acceptor_running = true;
    return 0;
}

/*
 * A connection's memory for the request line, headers, a slice of the body
 * and the answer's headers. libmicrohttpd zeroes all of it after every request
 * (32 KiB by default: most of its own CPU a webhook); 16 KiB still holds far
 * more headers than any client of ccsync sends. Bodies stream through it in
 * slices, whatever their size.
 */
#define CONNECTION_MEMORY (16 * 1024)

/* Poll, not epoll: a suspended connection leaves an epoll set and comes back
 * (two epoll_ctl calls a webhook, which every webhook is); poll just skips it. */
static struct MHD_Daemon *start_daemon(struct http_server *s)
{
    const struct config *cfg = s->app->cfg;
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_NO_LISTEN_SOCKET |
                         MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    /* The idle timeout stays 30 s at most; the reaper enforces the whole deadline. */
    unsigned int idle =
        cfg->request_deadline_seconds < 30 ? (unsigned)cfg->request_deadline_seconds : 30u;
    return MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_error, s,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)cfg->http_threads, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned int)cfg->max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned int)cfg->max_connections_per_ip, MHD_OPTION_CONNECTION_TIMEOUT, idle,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONNECTION_MEMORY, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, s, MHD_OPTION_NOTIFY_CONNECTION, on_connection, s, MHD_OPTION_END);
}

struct http_server *http_start(struct app *app, char *err, size_t err_size)
{
    struct http_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, err_size, "out of memory");
        return NULL;
    }
    s->app = app;
    s->listen_fd = open_listener(app->cfg, &s->port, err, err_size);
    if (s->listen_fd < 0) {
        free(s);
        return NULL;
    }
    pthread_mutex_init(&s->conns_lock, NULL);
    s->conns.next = s->conns.prev = &s->conns;
    s->daemon = start_daemon(s);
    if (!s->daemon) {
        snprintf(err, err_size, "cannot start the HTTP server on %s:%d", app->cfg->listen_host,
                 s->port);
        close(s->listen_fd);
        pthread_mutex_destroy(&s->conns_lock);
        free(s);
        return NULL;
    }
    s->reaper_running = pthread_create(&s->reaper, NULL, reaper_main, s) == 0;
    if (!s->reaper_running || pthread_create(&s->acceptor, NULL, acceptor_main, s) != 0) {
        snprintf(err, err_size, "cannot start the HTTP accept and reaper threads");
        http_stop(s);
        return NULL;
    }
    s->acceptor_running = true;
    if (start_admin_listener(s, err, err_size) != 0) {
        http_stop(s);
        return NULL;
    }
    return s;
}

int http_admin_port(struct http_server *s)
{
    return s->admin_port;
}

int http_port(struct http_server *s)
{
    return s->port;
}

void http_quiesce(struct http_server *s)
{
    if (!s->acceptor_running)
        return;
    atomic_store(&s->quiescing, true);
    /* wakes the accept(2) in progress; new connections are refused from here */
    shutdown(s->listen_fd, SHUT_RDWR);
    pthread_join(s->acceptor, NULL);
    s->acceptor_running = false;
    close(s->listen_fd);
    s->listen_fd = -1;
    if (s->admin_acceptor_running) {
        shutdown(s->admin_fd, SHUT_RDWR);
        pthread_join(s->admin_acceptor, NULL);
        s->admin_acceptor_running = false;
        close(s->admin_fd);
        s->admin_fd = -1;
    }
}

int http_in_flight(struct http_server *s)
{
    return atomic_load(&s->in_flight);
}

void http_stop(struct http_server *s)
{
    if (!s)
        return;
    http_quiesce(s);
    if (s->reaper_running) {
        atomic_store(&s->reaper_stop, true);
        pthread_join(s->reaper, NULL);
    }
    MHD_stop_daemon(s->daemon);
    pthread_mutex_destroy(&s->conns_lock);
    free(s);
}
