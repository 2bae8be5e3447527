/* ccsim HTTP front: the libmicrohttpd daemon, the route table, and what Constant
 * Contact's gateway does before an endpoint sees a request, in this order:
 * injected faults and per-endpoint delays, Bearer authentication (401), the
 * per-second rate limit (429 throttled) and the daily quota (429 quota_exceeded).
 * It also keeps the counters and the request log the control API shows. */
#include "sim.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct MHD_Daemon *daemon_handle;

/* Per-request upload buffer (libmicrohttpd's con_cls). */
struct upload {
    char *body;
    size_t len, cap;
    size_t total; /* bytes the client sent, even past SIM_MAX_BODY */
};

/* ---- query parameters and cursors ---- */

static void param_add(struct sim_req *q, const char *key, const char *value)
{
    if (q->n_params >= (int)(sizeof q->params / sizeof q->params[0]))
        return;
    q->params[q->n_params].key = strdup(key);
    q->params[q->n_params].value = strdup(value ? value : "");
    q->n_params++;
}

static void params_free(struct sim_req *q)
{
    for (int i = 0; i < q->n_params; i++) {
        free(q->params[i].key);
        free(q->params[i].value);
    }
    q->n_params = 0;
}

static enum MHD_Result collect_param(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    (void)kind;
    struct sim_req *q = cls;
    /* offset is internal to cursors: a client cannot page by offset on CC. */
    if (strcmp(key, "offset") != 0)
        param_add(q, key, value);
    return MHD_YES;
}

static int b64url_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* Replaces the request's parameters by the ones the cursor carries; -1 if it is not
 * a cursor this simulator issued. */
static int cursor_apply(struct sim_req *q, const char *cursor)
{
    size_t n = strlen(cursor);
    char *plain = malloc(n + 4);
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64url_value(cursor[i]);
        if (v < 0) {
            free(plain);
            return -1;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            plain[o++] = (char)((acc >> bits) & 0xff);
        }
    }
    plain[o] = '\0';
    if (o == 0 || plain[o - 1] != '\n' || strstr(plain, "offset=") == NULL) {
        free(plain);
        return -1;
    }
    params_free(q);
    char *save = NULL;
    for (char *line = strtok_r(plain, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *eq = strchr(line, '=');
        if (eq == NULL)
            continue;
        *eq = '\0';
        param_add(q, line, eq + 1);
    }
    free(plain);
    return 0;
}

/* ---- counters and log ---- */

static void count_endpoint(const char *name)
{
    for (size_t i = 0; i < sim.n_counters; i++) {
        if (strcmp(sim.counters[i].name, name) == 0) {
            sim.counters[i].count++;
            return;
        }
    }
    if (sim.n_counters == sim.cap_counters) {
        sim.cap_counters = sim.cap_counters ? sim.cap_counters * 2 : 32;
        sim.counters = realloc(sim.counters, sim.cap_counters * sizeof *sim.counters);
    }
    sim.counters[sim.n_counters].name = strdup(name);
    sim.counters[sim.n_counters].count = 1;
    sim.n_counters++;
}

static void note_arrival(int64_t now)
{
    while (sim.arrivals_n > 0 &&
           sim.arrivals[(sim.arrivals_head + SIM_RATE_RING - sim.arrivals_n) % SIM_RATE_RING] <=
               now - 1000)
        sim.arrivals_n--;
    sim.arrivals[sim.arrivals_head] = now;
    sim.arrivals_head = (sim.arrivals_head + 1) % SIM_RATE_RING;
    if (sim.arrivals_n < SIM_RATE_RING)
        sim.arrivals_n++;
    if ((long)sim.arrivals_n > sim.max_per_second)
        sim.max_per_second = (long)sim.arrivals_n;
}

static void log_request(const struct sim_req *q, const char *query, int status, int64_t arrived)
{
    struct sim_log_entry *e = &sim.log[sim.log_seq % SIM_LOG_CAP];
    free(e->path);
    free(e->body);
    e->seq = sim.log_seq++;
    e->arrived = arrived;
    e->ts = sim_now_ms();
    snprintf(e->method, sizeof e->method, "%s", q->method);
    size_t n = strlen(q->path) + strlen(query) + 2;
    e->path = malloc(n);
    snprintf(e->path, n, "%s%s%s", q->path, query[0] ? "?" : "", query);
    e->body = NULL;
    if (q->body_len > 0) {
        size_t len = q->body_len < SIM_LOG_BODY_MAX ? q->body_len : SIM_LOG_BODY_MAX;
        e->body = malloc(len + 1);
        memcpy(e->body, q->body, len);
        e->body[len] = '\0';
    }
    e->status = status;
}

/* ---- gateway behaviour ---- */

/* The fault to apply to this request, consuming one of its count. */
static enum sim_fault_mode fault_take(const char *path, struct sim_fault *out)
{
    struct sim_fault *f = &sim.fault;
    if (f->mode == FAULT_NONE)
        return FAULT_NONE;
    if (f->path_prefix[0] != '\0' && strncmp(path, f->path_prefix, strlen(f->path_prefix)) != 0)
        return FAULT_NONE;
    if (f->remaining == 0)
        return FAULT_NONE;
    if (f->remaining > 0) {
        f->remaining--;
    } else {
        double x = sim_random_unit();
        if (x >= f->fraction)
            return FAULT_NONE;
    }
    *out = *f;
    if (f->remaining == 0)
        f->mode = FAULT_NONE;
    sim.faults_served++;
    return out->mode;
}

/* The latency configured for endpoint ("METHOD /v3/..."), consuming one of its count. */
static int delay_take(const char *endpoint)
{
    for (int i = 0; i < sim.n_delays; i++) {
        struct sim_delay *d = &sim.delays[i];
        if (strcmp(d->endpoint, endpoint) != 0)
            continue;
        int ms = d->delay_ms;
        if (d->remaining > 0 && --d->remaining == 0)
            sim.delays[i] = sim.delays[--sim.n_delays]; /* spent */
        return ms;
    }
    return 0;
}

/* 0 when the Bearer token is good (or auth is off); else r holds the 401. */
static int check_auth(const struct sim_req *q, struct sim_resp *r)
{
    if (!sim.cfg.auth)
        return 0;
    const char *h = q->authorization;
    if (h != NULL && strncasecmp(h, "Bearer ", 7) == 0) {
        struct sim_token *t = sim_token_find(h + 7);
        if (t != NULL && !t->refresh && (t->expires_at == 0 || t->expires_at > sim_now_ms()))
            return 0;
    }
    sim.unauthorized++;
    resp_error_object(r, 401, "unauthorized", "Unauthorized");
    return -1;
}

static int check_limits(struct sim_resp *r, int64_t now)
{
    if (sim.cfg.rate > 0) {
        size_t rate = (size_t)sim.cfg.rate < SIM_RATE_RING ? (size_t)sim.cfg.rate : SIM_RATE_RING;
        while (sim.accepted_n > 0 &&
               sim.accepted[(sim.accepted_head + SIM_RATE_RING - sim.accepted_n) % SIM_RATE_RING] <=
                   now - 1000)
            sim.accepted_n--;
        if (sim.accepted_n >= rate) {
            sim.throttled++;
            resp_error_object(r, 429, "throttled", "Too many requests: the limit is 4 per second");
            return -1;
        }
    }
    long day = (long)(now / 86400000);
    if (day != sim.quota_day) {
        sim.quota_day = day;
        sim.quota_used = 0;
    }
    if (sim.cfg.daily_limit > 0 && sim.quota_used >= sim.cfg.daily_limit) {
        sim.quota_exceeded++;
        resp_error_object(r, 429, "quota_exceeded",
                          "The daily request quota of the application is exhausted");
        return -1;
    }
    sim.quota_used++;
    if (sim.cfg.rate > 0) {
        sim.accepted[sim.accepted_head] = now;
        sim.accepted_head = (sim.accepted_head + 1) % SIM_RATE_RING;
        if (sim.accepted_n < SIM_RATE_RING)
            sim.accepted_n++;
    }
    return 0;
}

/* ---- routing ---- */

enum route_kind {
    R_NONE,
    R_LISTS,
    R_LIST,
    R_CONTACTS,
    R_CONTACT,
    R_ACTS,
    R_ACT,
    R_IMPORT,
    R_ADD,
    R_REMOVE,
    R_LIST_DELETE,
    R_FIELDS,
    R_FIELD,
    R_TAGS,
    R_TAG,
    R_TAGGING_ADD,
    R_TAGGING_REMOVE
};

static enum route_kind route_of(const char *path, const char **id, const char **name)
{
    static const struct {
        const char *path;
        enum route_kind kind;
        const char *name;
    } fixed[] = {
        {"/v3/contact_lists", R_LISTS, "/v3/contact_lists"},
        {"/v3/contacts", R_CONTACTS, "/v3/contacts"},
        {"/v3/activities", R_ACTS, "/v3/activities"},
        {"/v3/activities/contacts_json_import", R_IMPORT, "/v3/activities/contacts_json_import"},
        {"/v3/activities/add_list_memberships", R_ADD, "/v3/activities/add_list_memberships"},
        {"/v3/activities/remove_list_memberships", R_REMOVE,
         "/v3/activities/remove_list_memberships"},
        {"/v3/activities/list_delete", R_LIST_DELETE, "/v3/activities/list_delete"},
        {"/v3/contact_custom_fields", R_FIELDS, "/v3/contact_custom_fields"},
        {"/v3/contact_tags", R_TAGS, "/v3/contact_tags"},
        {"/v3/activities/contacts_taggings_add", R_TAGGING_ADD,
         "/v3/activities/contacts_taggings_add"},
        {"/v3/activities/contacts_taggings_remove", R_TAGGING_REMOVE,
         "/v3/activities/contacts_taggings_remove"},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        if (strcmp(path, fixed[i].path) == 0) {
            *name = fixed[i].name;
            return fixed[i].kind;
        }
    }
    static const struct {
        const char *prefix;
        enum route_kind kind;
        const char *name;
    } with_id[] = {
        {"/v3/contact_lists/", R_LIST, "/v3/contact_lists/{list_id}"},
        {"/v3/contacts/", R_CONTACT, "/v3/contacts/{contact_id}"},
        {"/v3/activities/", R_ACT, "/v3/activities/{activity_id}"},
        {"/v3/contact_custom_fields/", R_FIELD, "/v3/contact_custom_fields/{custom_field_id}"},
        {"/v3/contact_tags/", R_TAG, "/v3/contact_tags/{tag_id}"},
    };
    for (size_t i = 0; i < sizeof with_id / sizeof with_id[0]; i++) {
        size_t n = strlen(with_id[i].prefix);
        if (strncmp(path, with_id[i].prefix, n) == 0 && path[n] != '\0' &&
            strchr(path + n, '/') == NULL) {
            *id = path + n;
            *name = with_id[i].name;
            return with_id[i].kind;
        }
    }
    *name = "other";
    return R_NONE;
}

static void method_not_allowed(struct sim_resp *r, const struct sim_req *q)
{
    resp_error(r, 405, "http.method.not_allowed", "%s is not allowed on %s", q->method, q->path);
}

static void dispatch_v3(struct sim_req *q, struct sim_resp *r, enum route_kind kind, const char *id)
{
    const char *m = q->method;
    bool get = strcmp(m, "GET") == 0, post = strcmp(m, "POST") == 0;
    bool put = strcmp(m, "PUT") == 0, del = strcmp(m, "DELETE") == 0;
    switch (kind) {
    case R_LISTS:
        get ? lists_get_all(q, r) : post ? lists_create(q, r) : method_not_allowed(r, q);
        break;
    case R_LIST:
        get   ? lists_get(q, r, id)
        : put ? lists_update(q, r, id)
        : del ? lists_delete(q, r, id)
              : method_not_allowed(r, q);
        break;
    case R_CONTACTS:
        get ? contacts_get_all(q, r) : post ? contacts_create(q, r) : method_not_allowed(r, q);
        break;
    case R_CONTACT:
        get   ? contacts_get(q, r, id)
        : put ? contacts_update(q, r, id)
        : del ? contacts_delete(q, r, id)
              : method_not_allowed(r, q);
        break;
    case R_ACTS:
        get ? activities_get_all(q, r) : method_not_allowed(r, q);
        break;
    case R_ACT:
        get ? activities_get(q, r, id) : method_not_allowed(r, q);
        break;
    case R_IMPORT:
        post ? activities_import(q, r) : method_not_allowed(r, q);
        break;
    case R_ADD:
        post ? activities_add_members(q, r) : method_not_allowed(r, q);
        break;
    case R_REMOVE:
        post ? activities_remove_members(q, r) : method_not_allowed(r, q);
        break;
    case R_LIST_DELETE:
        post ? activities_list_delete(q, r) : method_not_allowed(r, q);
        break;
    case R_FIELDS:
        get ? fields_get_all(q, r) : post ? fields_create(q, r) : method_not_allowed(r, q);
        break;
    case R_FIELD:
        get   ? fields_get(q, r, id)
        : put ? fields_update(q, r, id)
        : del ? fields_delete(q, r, id)
              : method_not_allowed(r, q);
        break;
    case R_TAGS:
        get ? tags_get_all(q, r) : post ? tags_create(q, r) : method_not_allowed(r, q);
        break;
    case R_TAG:
        get   ? tags_get(q, r, id)
        : put ? tags_update(q, r, id)
        : del ? tags_delete(q, r, id)
              : method_not_allowed(r, q);
        break;
    case R_TAGGING_ADD:
        post ? activities_tagging(q, r, true) : method_not_allowed(r, q);
        break;
    case R_TAGGING_REMOVE:
        post ? activities_tagging(q, r, false) : method_not_allowed(r, q);
        break;
    case R_NONE:
        resp_error(r, 404, "not.found", "No resource at %s", q->path);
        break;
    }
}

static void query_string(const struct sim_req *q, char *out, size_t outlen)
{
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; i < q->n_params && len < outlen; i++)
        len += (size_t)snprintf(out + len, outlen - len, "%s%s=%s", i ? "&" : "", q->params[i].key,
                                q->params[i].value);
}

/* Runs one complete request; sets *drop when the connection is to be cut. */
static void handle(struct sim_req *q, struct sim_resp *r, bool *drop)
{
    bool v3 = strncmp(q->path, "/v3/", 4) == 0;
    bool token = strcmp(q->path, "/oauth2/default/v1/token") == 0;
    if (strncmp(q->path, "/__sim/", 7) == 0) {
        pthread_mutex_lock(&sim.lock);
        control_handle(q, r);
        pthread_mutex_unlock(&sim.lock);
        return;
    }
    const char *id = NULL, *name = "other";
    enum route_kind kind = v3 ? route_of(q->path, &id, &name) : R_NONE;
    char counter[128], query[1024];
    snprintf(counter, sizeof counter, "%s %s", q->method,
             token ? "/oauth2/default/v1/token" : name);
    query_string(q, query, sizeof query);

    pthread_mutex_lock(&sim.lock);
    int64_t now = sim_now_ms(), arrived = now;
    sim.total++;
    count_endpoint(counter);
    if (v3)
        note_arrival(now);
    struct sim_fault fault;
    enum sim_fault_mode mode = (v3 || token) ? fault_take(q->path, &fault) : FAULT_NONE;
    if (mode == FAULT_DROP) {
        log_request(q, query, 0, arrived);
        pthread_mutex_unlock(&sim.lock);
        *drop = true;
        return;
    }
    if (mode == FAULT_STATUS) {
        if (fault.status == 429)
            resp_error_object(r, 429, "throttled", "Too many requests");
        else
            resp_error(r, fault.status,
                       fault.status == 503 ? "service.unavailable" : "server.error",
                       "Injected fault %d", fault.status);
        log_request(q, query, r->status, arrived);
        pthread_mutex_unlock(&sim.lock);
        return;
    }
    int delay_ms = (v3 || token) ? delay_take(counter) : 0;
    if (mode == FAULT_DELAY)
        delay_ms += fault.delay_ms;
    if (delay_ms > 0) {
        /* The request still happens after the delay, as on a slow server whose client
         * gave up: the client cannot know whether it took effect. */
        pthread_mutex_unlock(&sim.lock);
        usleep((useconds_t)delay_ms * 1000);
        pthread_mutex_lock(&sim.lock);
        now = sim_now_ms();
    }
    const char *cursor = req_param(q, "cursor");
    if (token) {
        oauth_token(q, r);
    } else if (!v3) {
        resp_error(r, 404, "not.found", "No resource at %s", q->path);
    } else if (check_auth(q, r) == 0 && check_limits(r, now) == 0) {
        if (cursor != NULL && cursor_apply(q, cursor) != 0) {
            resp_error(r, 400, "query.param.invalid", "cursor: not a valid cursor");
        } else {
            sim_activities_settle();
            dispatch_v3(q, r, kind, id);
        }
    }
    log_request(q, query, r->status, arrived);
    pthread_mutex_unlock(&sim.lock);
}

/* ---- libmicrohttpd glue ---- */

static enum MHD_Result send_response(struct MHD_Connection *conn, struct sim_resp *r)
{
    const char *text = "";
    char *copy = NULL;
    if (r->body != NULL) {
        text = json_object_to_json_string_ext(r->body, JSON_C_TO_STRING_PLAIN |
                                                           JSON_C_TO_STRING_NOSLASHESCAPE);
        copy = strdup(text);
    }
    struct MHD_Response *resp =
        copy ? MHD_create_response_from_buffer(strlen(copy), copy, MHD_RESPMEM_MUST_FREE)
             : MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (copy)
        MHD_add_response_header(resp, "Content-Type", "application/json");
    if (r->location[0] != '\0')
        MHD_add_response_header(resp, "Location", r->location);
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **con_cls)
{
    (void)cls;
    (void)version;
    struct upload *up = *con_cls;
    if (up == NULL) {
        up = calloc(1, sizeof *up);
        *con_cls = up;
        return MHD_YES;
    }
    if (*upload_size > 0) {
        up->total += *upload_size;
        if (up->len + *upload_size <= SIM_MAX_BODY) {
            if (up->len + *upload_size + 1 > up->cap) {
                up->cap = (up->len + *upload_size + 1) * 2;
                up->body = realloc(up->body, up->cap);
            }
            memcpy(up->body + up->len, upload_data, *upload_size);
            up->len += *upload_size;
            up->body[up->len] = '\0';
        }
        *upload_size = 0;
        return MHD_YES;
    }
    struct sim_req q;
    memset(&q, 0, sizeof q);
    q.method = method;
    q.path = url;
    q.body = up->body ? up->body : "";
    q.body_len = up->total;
    q.content_type = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
    q.authorization = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, collect_param, &q);
    struct sim_resp r;
    memset(&r, 0, sizeof r);
    r.status = 500;
    bool drop = false;
    if (up->total > SIM_MAX_BODY && strcmp(url, "/v3/activities/contacts_json_import") != 0) {
        resp_error(&r, 413, "request.body.too.large", "The request body is too large");
    } else {
        if (up->total > up->len)
            q.body_len = up->total; /* handlers see the size, not the dropped bytes */
        handle(&q, &r, &drop);
    }
    enum MHD_Result ret = MHD_NO;
    if (!drop) {
        pthread_mutex_lock(&sim.lock);
        ret = send_response(conn, &r);
        json_object_put(r.body);
        json_object_put(q.json);
        pthread_mutex_unlock(&sim.lock);
    } else {
        pthread_mutex_lock(&sim.lock);
        json_object_put(r.body);
        json_object_put(q.json);
        pthread_mutex_unlock(&sim.lock);
    }
    params_free(&q);
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    struct upload *up = *con_cls;
    if (up != NULL) {
        free(up->body);
        free(up);
        *con_cls = NULL;
    }
}

int http_start(void)
{
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)sim.cfg.port);
    if (inet_pton(AF_INET, sim.cfg.host, &addr.sin_addr) != 1) {
        fprintf(stderr, "ccsim: bad listen address %s\n", sim.cfg.host);
        return -1;
    }
    /* A thread per connection: an injected delay then stalls only its own connection,
     * as a slow upstream would, and keep-alive clients still get thousands of rps. */
    daemon_handle = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG,
        (uint16_t)sim.cfg.port, NULL, NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR, &addr,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)300, MHD_OPTION_CONNECTION_LIMIT, (unsigned)2000, MHD_OPTION_LISTEN_BACKLOG_SIZE,
        (unsigned)1024, MHD_OPTION_END);
    if (daemon_handle == NULL) {
        fprintf(stderr, "ccsim: cannot listen on %s:%d\n", sim.cfg.host, sim.cfg.port);
        return -1;
    }
    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info(daemon_handle, MHD_DAEMON_INFO_BIND_PORT);
    if (info != NULL && info->port != 0)
        sim.cfg.port = info->port;
    return 0;
}

void http_stop(void)
{
    if (daemon_handle != NULL)
        MHD_stop_daemon(daemon_handle);
    daemon_handle = NULL;
}
