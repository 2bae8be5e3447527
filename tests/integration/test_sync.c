/*
 * test_sync.c (integration) - the sync engine end to end: real redis-server, the
 * Constant Contact simulator (ccsim) and ccsyncd, driven over HTTP with signed
 * Novi webhooks, one test per behaviour of DESIGN.md §1, plus redelivered and
 * out-of-order events.
 *
 * Every test gets its own redis-server, ccsim and ccsyncd on free loopback ports
 * and the association "acme" connected with ccsim's development token. Tests
 * assert exactly: the emails on each CC list (ccsim's state dump), list names,
 * GroupStatus (state, counts, list, error code) and the audit log in order.
 *
 * Binaries: $CCSYNCD_BIN and $CCSIM_BIN, by default $BUILD/ccsyncd and
 * $BUILD/ccsim ($BUILD defaults to "build"). Logs of each test's processes go to
 * /tmp/ccsync-test-sync-<pid>/ (the folder is printed once).
 *
 * Waiting is bounded (30 s) only so that a broken engine cannot hang the suite;
 * no test asserts speed.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ccsync/webhook.h"
#include "testsupport.h"

#define ASSOC "acme"
#define SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define ADMIN_TOKEN "test-admin-token"
#define DEV_TOKEN "sim-dev-token"
#define WAIT_MS 30000
/* 2026-01-01T00:00:00Z: envelope timestamps are T0 + n seconds. */
#define T0 1767225600LL

/* ---- the stack under test ---- */

struct options {
    int sim_rate;          /* ccsim --rate: 4 is production, 0 off */
    int reconcile_seconds; /* CCSYNC_RECONCILE_SECONDS */
    bool dev_token;        /* connect "acme" with ccsim's never-expiring dev token */
};

static struct {
    pid_t redis_pid, sim_pid, ccsyncd_pid;
    int redis_port, sim_port, http_port;
    char sim_root[64]; /* http://127.0.0.1:PORT of ccsim */
    char base[64];     /* http://127.0.0.1:PORT of ccsyncd */
    char log_dir[128];
    int serial;
    long msg_serial;
} S;

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static const char *bin_path(const char *env_name, const char *name, char *out, size_t size)
{
    const char *v = getenv(env_name);
    if (v && *v) {
        snprintf(out, size, "%s", v);
    } else {
        const char *build = getenv("BUILD");
        snprintf(out, size, "%s/%s", build && *build ? build : "build", name);
    }
    return out;
}

/* Starts argv with env added and its stdout and stderr appended to log. */
static pid_t spawn_logged(char *const argv[], char *const env[], const char *log)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        close(fd);
    }
    for (size_t i = 0; env && env[i]; i++)
        putenv(env[i]);
    execvp(argv[0], argv);
    fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

static void log_path(char *out, size_t size, const char *what)
{
    snprintf(out, size, "%s/%02d-%s.log", S.log_dir, S.serial, what);
}

/* ---- HTTP ---- */

struct reply {
    long status;
    char *body;
    json_object *json;
};

static void reply_free(struct reply *r)
{
    free(r->body);
    json_object_put(r->json);
    memset(r, 0, sizeof *r);
}

static struct reply http(const char *method, const char *url, const char *const *headers,
                         const char *body)
{
    struct reply r = {0};
    if (ts_http(method, url, headers, body, &r.status, &r.body) != 0)
        fail_msg("%s %s: no answer", method, url);
    r.json = json_tokener_parse(r.body ? r.body : "");
    return r;
}

/* An admin call to ccsyncd. */
static struct reply api(const char *method, const char *path, const char *body)
{
    char url[512];
    snprintf(url, sizeof url, "%s%s", S.base, path);
    const char *headers[] = {"Authorization: Bearer " ADMIN_TOKEN,
                             "Content-Type: application/json", NULL};
    return http(method, url, headers, body);
}

/* A control call to ccsim; asserts a 200. */
static json_object *sim(const char *method, const char *path, const char *body)
{
    char url[512];
    snprintf(url, sizeof url, "%s%s", S.sim_root, path);
    const char *headers[] = {"Content-Type: application/json", NULL};
    struct reply r = http(method, url, headers, body);
    if (r.status != 200)
        fail_msg("ccsim %s %s: %ld %s", method, path, r.status, r.body ? r.body : "");
    json_object *j = r.json;
    r.json = NULL;
    reply_free(&r);
    return j;
}

static void sim_void(const char *method, const char *path, const char *body)
{
    json_object_put(sim(method, path, body));
}

/* ---- JSON access ---- */

static json_object *jget(json_object *o, const char *key)
{
    json_object *v = NULL;
    if (!o || !json_object_object_get_ex(o, key, &v))
        return NULL;
    return v;
}

static const char *jstr(json_object *o, const char *key)
{
    json_object *v = jget(o, key);
    return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

static long long jint(json_object *o, const char *key)
{
    json_object *v = jget(o, key);
    if (!v || !json_object_is_type(v, json_type_int))
        fail_msg("no integer \"%s\" in %s", key, o ? json_object_to_json_string(o) : "(null)");
    return json_object_get_int64(v);
}

/* ---- webhooks ---- */

static void rfc3339_at(long long seconds, char *out, size_t size)
{
    time_t t = (time_t)(T0 + seconds);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Posts body signed with webhook-id id; returns the HTTP status. */
static long post_webhook(const char *id, const char *body)
{
    char sig[128], ts_hdr[64], id_hdr[160], sig_hdr[200], url[256];
    int64_t now = (int64_t)time(NULL);
    assert_int_equal(webhook_sign(SECRET, id, now, body, strlen(body), sig, sizeof sig), 0);
    snprintf(ts_hdr, sizeof ts_hdr, "webhook-timestamp: %lld", (long long)now);
    snprintf(id_hdr, sizeof id_hdr, "webhook-id: %s", id);
    snprintf(sig_hdr, sizeof sig_hdr, "webhook-signature: %s", sig);
    const char *headers[] = {"Content-Type: application/json", id_hdr, ts_hdr, sig_hdr, NULL};
    snprintf(url, sizeof url, "%s/v1/associations/" ASSOC "/webhooks/novi", S.base);
    struct reply r = http("POST", url, headers, body);
    long status = r.status;
    if (status != 202 && status != 200)
        fail_msg("webhook %s: %ld %s", id, status, r.body ? r.body : "");
    reply_free(&r);
    return status;
}

/* The envelope of an event at T0 + at seconds; malloc'd. */
static char *envelope(const char *type, const char *data, long long at)
{
    char ts[40];
    rfc3339_at(at, ts, sizeof ts);
    size_t n = strlen(type) + strlen(data) + 128;
    char *body = malloc(n);
    snprintf(body, n, "{\"type\":\"%s\",\"timestamp\":\"%s\",\"data\":%s}", type, ts, data);
    return body;
}

/* Sends one event under a new webhook-id; asserts it was queued. */
static void send_event(const char *type, const char *data, long long at)
{
    char id[64];
    snprintf(id, sizeof id, "msg_%d_%ld", getpid(), ++S.msg_serial);
    char *body = envelope(type, data, at);
    assert_int_equal(post_webhook(id, body), 202);
    free(body);
}

/* Member record JSON (Email omitted when NULL); extra is appended inside the
 * object (",\"Groups\":[...]" and the like) or NULL. Rotating static buffers. */
static const char *member(const char *id, const char *email, const char *first, const char *last,
                          const char *extra)
{
    static char bufs[64][512];
    static int next;
    char *b = bufs[next++ % 64];
    char em[200] = "";
    if (email)
        snprintf(em, sizeof em, ",\"Email\":\"%s\"", email);
    snprintf(b, 512,
             "{\"UniqueID\":\"%s\"%s,\"FirstName\":\"%s\",\"LastName\":\"%s\","
             "\"CustomerType\":\"Person\",\"Active\":true%s}",
             id, em, first, last, extra ? extra : "");
    return b;
}

/* ",\"Groups\":[{...}]" for the ids in a comma-separated list ("" = none). */
static const char *groups_of(const char *csv)
{
    static char bufs[16][512];
    static int next;
    char *b = bufs[next++ % 16];
    size_t n = (size_t)snprintf(b, 512, ",\"Groups\":[");
    char copy[256];
    snprintf(copy, sizeof copy, "%s", csv);
    char *save = NULL;
    bool first = true;
    for (char *g = strtok_r(copy, ",", &save); g; g = strtok_r(NULL, ",", &save)) {
        n += (size_t)snprintf(b + n, 512 - n, "%s{\"UniqueID\":\"%s\",\"GroupName\":\"%s\"}",
                              first ? "" : ",", g, g);
        first = false;
    }
    snprintf(b + n, 512 - n, "]");
    return b;
}

static void send_group(const char *g, const char *name, bool sync, long long at)
{
    char data[512];
    snprintf(data, sizeof data, "{\"UniqueID\":\"%s\",\"GroupName\":\"%s\",\"SyncToConstantContact\":%s}",
             g, name, sync ? "true" : "false");
    send_event("group.updated", data, at);
}

/* group.members with the n member records given. */
static void send_members(const char *g, long long at, int n, ...)
{
    size_t cap = 256 + (size_t)n * 520;
    char *data = malloc(cap);
    size_t len = (size_t)snprintf(data, cap, "{\"UniqueID\":\"%s\",\"Members\":[", g);
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(data + len, cap - len, "%s%s", i ? "," : "", va_arg(ap, const char *));
    va_end(ap);
    snprintf(data + len, cap - len, "]}");
    send_event("group.members", data, at);
    free(data);
}

static void send_customer(const char *record, long long at)
{
    send_event("customer.updated", record, at);
}

/* ---- ccsyncd's view ---- */

static json_object *get_group(const char *g, long *status)
{
    char path[256];
    snprintf(path, sizeof path, "/v1/associations/" ASSOC "/groups/%s", g);
    struct reply r = api("GET", path, NULL);
    *status = r.status;
    json_object *j = r.json;
    r.json = NULL;
    reply_free(&r);
    return j;
}

static long long queue_pending(void)
{
    struct reply r = api("GET", "/v1/status", NULL);
    assert_int_equal(r.status, 200);
    long long n = jint(jget(r.json, "queue"), "pending");
    reply_free(&r);
    return n;
}

/* Waits until every queued event is folded (the stream is empty). */
static void wait_folded(void)
{
    long deadline = now_ms() + WAIT_MS;
    while (queue_pending() != 0) {
        if (now_ms() > deadline)
            fail_msg("events were not folded within %d ms", WAIT_MS);
        sleep_ms(20);
    }
}

static bool group_settled(json_object *gs)
{
    json_object *q = jget(gs, "changes_queued");
    return gs && jint(gs, "pending_changes") == 0 && q && !json_object_get_boolean(q);
}

/* Waits until the events are folded and the group's work is done: pending_changes
 * 0 and nothing queued. Returns its GroupStatus (the caller puts it). */
static json_object *wait_synced(const char *g)
{
    wait_folded();
    long deadline = now_ms() + WAIT_MS;
    for (;;) {
        long status;
        json_object *gs = get_group(g, &status);
        if (status == 200 && group_settled(gs))
            return gs;
        if (now_ms() > deadline)
            fail_msg("group %s did not settle within %d ms: %ld %s", g, WAIT_MS, status,
                     gs ? json_object_to_json_string(gs) : "");
        json_object_put(gs);
        sleep_ms(50);
    }
}

static const char *error_code(json_object *gs)
{
    json_object *e = jget(gs, "error");
    return e && json_object_is_type(e, json_type_object) ? jstr(e, "code") : NULL;
}

/* Waits until the group shows error code (NULL: no error) and state. */
static json_object *wait_group_error(const char *g, const char *code, const char *state)
{
    wait_folded();
    long deadline = now_ms() + WAIT_MS;
    for (;;) {
        long status;
        json_object *gs = get_group(g, &status);
        const char *c = status == 200 ? error_code(gs) : NULL;
        const char *st = status == 200 ? jstr(gs, "state") : NULL;
        if (status == 200 && c && strcmp(c, code) == 0 && st && strcmp(st, state) == 0)
            return gs;
        if (now_ms() > deadline)
            fail_msg("group %s did not show %s/%s within %d ms: %ld %s", g, state, code, WAIT_MS,
                     status, gs ? json_object_to_json_string(gs) : "");
        json_object_put(gs);
        sleep_ms(50);
    }
}

/* Waits until GET group answers 404 (a deleted group whose list is gone). */
static void wait_group_gone(const char *g)
{
    wait_folded();
    long deadline = now_ms() + WAIT_MS;
    for (;;) {
        long status;
        json_object *gs = get_group(g, &status);
        json_object_put(gs);
        if (status == 404)
            return;
        if (now_ms() > deadline)
            fail_msg("group %s still answers %ld after %d ms", g, status, WAIT_MS);
        sleep_ms(50);
    }
}

static void assert_counts(json_object *gs, long long members, long long no_email,
                          long long invalid_email, long long duplicate_email,
                          long long do_not_email, long long unsubscribed, long long rejected,
                          long long in_list)
{
    json_object *c = jget(gs, "counts");
    char got[256], want[256];
    snprintf(got, sizeof got, "members=%lld no_email=%lld invalid=%lld dup=%lld dne=%lld unsub=%lld rej=%lld in_list=%lld",
             jint(c, "members"), jint(c, "no_email"), jint(c, "invalid_email"),
             jint(c, "duplicate_email"), jint(c, "do_not_email"), jint(c, "unsubscribed"),
             jint(c, "rejected"), jint(c, "in_list"));
    snprintf(want, sizeof want, "members=%lld no_email=%lld invalid=%lld dup=%lld dne=%lld unsub=%lld rej=%lld in_list=%lld",
             members, no_email, invalid_email, duplicate_email, do_not_email, unsubscribed,
             rejected, in_list);
    assert_string_equal(got, want);
    assert_int_equal(members, no_email + invalid_email + duplicate_email + do_not_email +
                                  unsubscribed + rejected + in_list);
}

static void assert_state(json_object *gs, const char *state)
{
    assert_non_null(jstr(gs, "state"));
    assert_string_equal(jstr(gs, "state"), state);
}

/* The group's list_id and list name (both non-NULL, or fails). */
static const char *gs_list_id(json_object *gs)
{
    json_object *l = jget(gs, "list");
    if (!l || !json_object_is_type(l, json_type_object))
        fail_msg("group has no list: %s", json_object_to_json_string(gs));
    return jstr(l, "list_id");
}

static const char *gs_list_name(json_object *gs)
{
    json_object *l = jget(gs, "list");
    if (!l || !json_object_is_type(l, json_type_object))
        fail_msg("group has no list: %s", json_object_to_json_string(gs));
    return jstr(l, "name");
}

/* The audit actions of group g, oldest first, comma-separated, into out. */
static const char *audit_actions(const char *g, char *out, size_t size)
{
    struct reply r = api("GET", "/v1/associations/" ASSOC "/audit?limit=1000", NULL);
    assert_int_equal(r.status, 200);
    json_object *entries = jget(r.json, "entries");
    assert_non_null(entries);
    out[0] = '\0';
    size_t n = 0;
    for (size_t i = json_object_array_length(entries); i-- > 0;) {
        json_object *e = json_object_array_get_idx(entries, i);
        if (!jstr(e, "group_id") || strcmp(jstr(e, "group_id"), g) != 0)
            continue;
        n += (size_t)snprintf(out + n, size - n, "%s%s", n ? "," : "", jstr(e, "action"));
    }
    reply_free(&r);
    return out;
}

/* The list_id and list_name of the newest audit entry of g with action. */
static void audit_entry(const char *g, const char *action, char *list_id, char *list_name,
                        size_t size)
{
    struct reply r = api("GET", "/v1/associations/" ASSOC "/audit?limit=1000", NULL);
    assert_int_equal(r.status, 200);
    json_object *entries = jget(r.json, "entries");
    for (size_t i = 0; i < json_object_array_length(entries); i++) {
        json_object *e = json_object_array_get_idx(entries, i);
        if (jstr(e, "group_id") && strcmp(jstr(e, "group_id"), g) == 0 && jstr(e, "action") &&
            strcmp(jstr(e, "action"), action) == 0) {
            snprintf(list_id, size, "%s", jstr(e, "list_id") ? jstr(e, "list_id") : "");
            snprintf(list_name, size, "%s", jstr(e, "list_name") ? jstr(e, "list_name") : "");
            reply_free(&r);
            return;
        }
    }
    fail_msg("no audit entry %s for %s", action, g);
}

/* ---- ccsim's view ---- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorted, comma-separated strings of a JSON array (or of key in each object). */
static void join_sorted(json_object *arr, const char *key, char *out, size_t size)
{
    size_t n = arr ? json_object_array_length(arr) : 0;
    const char **v = calloc(n ? n : 1, sizeof *v);
    for (size_t i = 0; i < n; i++) {
        json_object *e = json_object_array_get_idx(arr, i);
        v[i] = key ? jstr(e, key) : json_object_get_string(e);
    }
    qsort(v, n, sizeof *v, cmp_str);
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(out + len, size - len, "%s%s", i ? "," : "", v[i]);
    free(v);
}

static bool list_active(json_object *l)
{
    const char *st = jstr(l, "status");
    return !st || strcmp(st, "active") == 0;
}

/* The active lists' names in CC, sorted and comma-separated. */
static const char *cc_list_names(char *out, size_t size)
{
    json_object *st = sim("GET", "/__sim/state", NULL);
    json_object *lists = jget(st, "lists"), *active = json_object_new_array();
    for (size_t i = 0; i < json_object_array_length(lists); i++) {
        json_object *l = json_object_array_get_idx(lists, i);
        if (list_active(l))
            json_object_array_add(active, json_object_get(l));
    }
    join_sorted(active, "name", out, size);
    json_object_put(active);
    json_object_put(st);
    return out;
}

/* The members (emails, sorted, comma-separated) of the CC list list_id, and its
 * name into name (may be NULL). Fails when the list is not active in CC. */
static const char *cc_members(const char *list_id, char *out, size_t size, char *name,
                              size_t name_size)
{
    json_object *st = sim("GET", "/__sim/state", NULL);
    json_object *lists = jget(st, "lists");
    for (size_t i = 0; i < json_object_array_length(lists); i++) {
        json_object *l = json_object_array_get_idx(lists, i);
        if (jstr(l, "list_id") && strcmp(jstr(l, "list_id"), list_id) == 0 && list_active(l)) {
            join_sorted(jget(l, "members"), NULL, out, size);
            if (name)
                snprintf(name, name_size, "%s", jstr(l, "name"));
            json_object_put(st);
            return out;
        }
    }
    fail_msg("list %s is not active in CC: %s", list_id, json_object_to_json_string(lists));
    return NULL;
}

/* Waits until CC's active lists are exactly names. A list delete is an activity
 * in CC: it lands after ccsync queued it (ccsim settles activities only when a
 * /v3 request comes, so the wait asks it to complete what is queued). */
static void wait_cc_list_names(const char *names)
{
    char buf[2048];
    long deadline = now_ms() + WAIT_MS;
    for (;;) {
        sim_void("POST", "/__sim/activities/complete", "{}");
        if (strcmp(cc_list_names(buf, sizeof buf), names) == 0)
            break;
        if (now_ms() > deadline)
            fail_msg("CC lists are \"%s\", not \"%s\"", buf, names);
        sleep_ms(50);
    }
}

/* "first last" of the CC contact with email, as CC holds them. */
static const char *cc_contact_names(const char *email, char *out, size_t size)
{
    json_object *st = sim("GET", "/__sim/state", NULL);
    json_object *cs = jget(st, "contacts");
    for (size_t i = 0; i < json_object_array_length(cs); i++) {
        json_object *c = json_object_array_get_idx(cs, i);
        if (jstr(c, "email") && strcmp(jstr(c, "email"), email) == 0) {
            snprintf(out, size, "%s %s", jstr(c, "first_name") ? jstr(c, "first_name") : "",
                     jstr(c, "last_name") ? jstr(c, "last_name") : "");
            json_object_put(st);
            return out;
        }
    }
    fail_msg("no contact %s in CC", email);
    return NULL;
}

static const char *cc_contact_permission(const char *email)
{
    static char perm[64];
    json_object *st = sim("GET", "/__sim/state", NULL);
    json_object *cs = jget(st, "contacts");
    for (size_t i = 0; i < json_object_array_length(cs); i++) {
        json_object *c = json_object_array_get_idx(cs, i);
        if (jstr(c, "email") && strcmp(jstr(c, "email"), email) == 0) {
            snprintf(perm, sizeof perm, "%s", jstr(c, "permission_to_send"));
            json_object_put(st);
            return perm;
        }
    }
    fail_msg("no contact %s in CC", email);
    return NULL;
}

/* /v3 requests ccsim has answered so far (all of them, whatever the status). */
static long long cc_requests(void)
{
    json_object *c = sim("GET", "/__sim/counters", NULL);
    long long n = jint(c, "total") + jint(c, "unauthorized");
    json_object_put(c);
    return n;
}

/* contacts_json_import requests ccsim has answered so far. */
static long long cc_imports(void)
{
    json_object *c = sim("GET", "/__sim/counters", NULL);
    json_object *v = jget(jget(c, "by_endpoint"), "POST /v3/activities/contacts_json_import");
    long long n = v ? json_object_get_int64(v) : 0;
    json_object_put(c);
    return n;
}

static long long cc_counter(const char *key)
{
    json_object *c = sim("GET", "/__sim/counters", NULL);
    long long n = jint(c, key);
    json_object_put(c);
    return n;
}

/* Requests ccsim has answered on one endpoint ("POST /v3/contact_lists"). */
static long long cc_endpoint(const char *endpoint)
{
    json_object *c = sim("GET", "/__sim/counters", NULL);
    json_object *v = jget(jget(c, "by_endpoint"), endpoint);
    long long n = v ? json_object_get_int64(v) : 0;
    json_object_put(c);
    return n;
}

/* The bodies of the remove_list_memberships requests ccsim logged after seq
 * since, as "contacts>lists" with each part's count, e.g. "3>3,1>1", in order. */
static void cc_remove_shapes(long long since, char *out, size_t size)
{
    char path[64];
    snprintf(path, sizeof path, "/__sim/log?since=%lld", since);
    json_object *log = sim("GET", path, NULL);
    json_object *reqs = jget(log, "requests");
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; reqs && i < json_object_array_length(reqs); i++) {
        json_object *q = json_object_array_get_idx(reqs, i);
        const char *p = jstr(q, "path");
        if (!p || strcmp(p, "/v3/activities/remove_list_memberships") != 0)
            continue;
        json_object *body = json_tokener_parse(jstr(q, "body"));
        size_t ids = json_object_array_length(jget(jget(body, "source"), "contact_ids"));
        size_t lists = json_object_array_length(jget(body, "list_ids"));
        len += (size_t)snprintf(out + len, size - len, "%s%zu>%zu", len ? "," : "", ids, lists);
        json_object_put(body);
    }
    json_object_put(log);
}

/* The sequence number the next request ccsim logs will have. */
static long long cc_log_next(void)
{
    json_object *log = sim("GET", "/__sim/log?since=0", NULL);
    long long n = jint(log, "next");
    json_object_put(log);
    return n;
}

/* ---- fixture ---- */

static void put_tokens(const char *access, const char *refresh)
{
    char body[1024];
    if (refresh)
        snprintf(body, sizeof body,
                 "{\"webhook_secret\":\"" SECRET "\",\"constant_contact\":{\"access_token\":\"%s\","
                 "\"refresh_token\":\"%s\",\"expires_at\":\"2099-01-01T00:00:00Z\"}}",
                 access, refresh);
    else
        snprintf(body, sizeof body,
                 "{\"webhook_secret\":\"" SECRET "\",\"constant_contact\":{\"access_token\":\"%s\","
                 "\"expires_at\":\"2099-01-01T00:00:00Z\"}}",
                 access);
    struct reply r = api("PUT", "/v1/associations/" ASSOC, body);
    if (r.status != 200)
        fail_msg("PUT association: %ld %s", r.status, r.body ? r.body : "");
    reply_free(&r);
}

/* A fresh token pair minted by ccsim; into access and refresh (256 bytes each). */
static void mint_tokens(char *access, char *refresh)
{
    json_object *t = sim("POST", "/__sim/tokens", "{}");
    snprintf(access, 256, "%s", jstr(t, "access_token"));
    snprintf(refresh, 256, "%s", jstr(t, "refresh_token"));
    json_object_put(t);
}

static int start_stack(const struct options *o)
{
    char ccsim[512], ccsyncd[512], log[256];
    bin_path("CCSIM_BIN", "ccsim", ccsim, sizeof ccsim);
    bin_path("CCSYNCD_BIN", "ccsyncd", ccsyncd, sizeof ccsyncd);
    if (access(ccsim, X_OK) != 0 || access(ccsyncd, X_OK) != 0) {
        fprintf(stderr, "test_sync: %s or %s missing (set CCSIM_BIN, CCSYNCD_BIN or BUILD)\n",
                ccsim, ccsyncd);
        return -1;
    }
    if (!S.log_dir[0]) {
        snprintf(S.log_dir, sizeof S.log_dir, "/tmp/ccsync-test-sync-%d", getpid());
        mkdir(S.log_dir, 0755);
        fprintf(stderr, "test_sync: process logs in %s\n", S.log_dir);
    }
    S.serial++;

    S.redis_port = ts_free_port();
    char rport[16];
    snprintf(rport, sizeof rport, "%d", S.redis_port);
    char *rargv[] = {"redis-server", "--port", rport, "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", NULL};
    log_path(log, sizeof log, "redis");
    S.redis_pid = spawn_logged(rargv, NULL, log);
    if (S.redis_pid <= 0 || ts_wait_port(S.redis_port, 10000) != 0)
        return -1;

    S.sim_port = ts_free_port();
    char listen[64], rate[16];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", S.sim_port);
    snprintf(rate, sizeof rate, "%d", o->sim_rate);
    char *sargv[] = {ccsim, "--listen", listen, "--dev-token", DEV_TOKEN, "--rate", rate, NULL};
    log_path(log, sizeof log, "ccsim");
    S.sim_pid = spawn_logged(sargv, NULL, log);
    if (S.sim_pid <= 0 || ts_wait_port(S.sim_port, 10000) != 0)
        return -1;
    snprintf(S.sim_root, sizeof S.sim_root, "http://127.0.0.1:%d", S.sim_port);

    static char e_listen[64], e_redis[80], e_api[96], e_token[128], e_reconcile[64];
    S.http_port = ts_free_port();
    snprintf(e_listen, sizeof e_listen, "CCSYNC_LISTEN=127.0.0.1:%d", S.http_port);
    snprintf(e_redis, sizeof e_redis, "CCSYNC_REDIS_URL=redis://127.0.0.1:%d/0", S.redis_port);
    snprintf(e_api, sizeof e_api, "CCSYNC_CC_API_URL=%s/v3", S.sim_root);
    snprintf(e_token, sizeof e_token, "CCSYNC_CC_TOKEN_URL=%s/oauth2/default/v1/token", S.sim_root);
    snprintf(e_reconcile, sizeof e_reconcile, "CCSYNC_RECONCILE_SECONDS=%d",
             o->reconcile_seconds ? o->reconcile_seconds : 3600);
    char *env[] = {e_listen, e_redis, "CCSYNC_ADMIN_TOKEN=" ADMIN_TOKEN, e_api, e_token,
                   "CCSYNC_SYNC_DELAY_MS=100", e_reconcile, "CCSYNC_WORKERS=2",
                   "CCSYNC_LOG_FORMAT=json", "CCSYNC_LOG_LEVEL=info", "CCSYNC_ASSOCIATION_ID=",
                   "CCSYNC_WEBHOOK_SECRET=", "CCSYNC_CC_ACCESS_TOKEN=", "CCSYNC_CC_REFRESH_TOKEN=",
                   "CCSYNC_CC_EXPIRES_AT=", "CCSYNC_CC_RATE_PER_SEC=4", "CCSYNC_CC_CLIENT_ID=ccsync-test",
                   NULL};
    char *cargv[] = {ccsyncd, NULL};
    log_path(log, sizeof log, "ccsyncd");
    S.ccsyncd_pid = spawn_logged(cargv, env, log);
    snprintf(S.base, sizeof S.base, "http://127.0.0.1:%d", S.http_port);
    if (S.ccsyncd_pid <= 0 || ts_wait_port(S.http_port, 10000) != 0)
        return -1;
    for (int i = 0;; i++) {
        long status = 0;
        char url[128], *body = NULL;
        snprintf(url, sizeof url, "%s/readyz", S.base);
        ts_http("GET", url, NULL, NULL, &status, &body);
        free(body);
        if (status == 200)
            break;
        if (i > 200)
            return -1;
        sleep_ms(50);
    }
    if (o->dev_token)
        put_tokens(DEV_TOKEN, NULL);
    return 0;
}

static int stop_stack(void **state)
{
    (void)state;
    if (S.ccsyncd_pid > 0)
        ts_kill(S.ccsyncd_pid, SIGTERM);
    if (S.sim_pid > 0)
        ts_kill(S.sim_pid, SIGTERM);
    if (S.redis_pid > 0)
        ts_kill(S.redis_pid, SIGTERM);
    S.ccsyncd_pid = S.sim_pid = S.redis_pid = 0;
    return 0;
}

/* Production limits on (4 requests/s), reconcile out of the way. */
static int setup_limits(void **state)
{
    (void)state;
    struct options o = {.sim_rate = 4, .dev_token = true};
    return start_stack(&o);
}

/* Tests not about limits: ccsim's rate limit off (ccsync still paces itself). */
static int setup_fast(void **state)
{
    (void)state;
    struct options o = {.sim_rate = 0, .dev_token = true};
    return start_stack(&o);
}

/* Reconcile every 2 s. */
static int setup_reconcile(void **state)
{
    (void)state;
    struct options o = {.sim_rate = 0, .reconcile_seconds = 2, .dev_token = true};
    return start_stack(&o);
}

/* No credentials stored yet: the test PUTs minted tokens. */
static int setup_no_token(void **state)
{
    (void)state;
    struct options o = {.sim_rate = 4, .dev_token = false};
    if (start_stack(&o) != 0)
        return -1;
    struct reply r = api("PUT", "/v1/associations/" ASSOC, "{\"webhook_secret\":\"" SECRET "\"}");
    long status = r.status;
    reply_free(&r);
    return status == 200 ? 0 : -1;
}

/* The group "board" ("Board", sync on) at T0+1 with members (T0+2). */
#define BOARD_ON() send_group("board", "Board", true, 1)

/* ==== §1.1 connection ==== */

static const char *assoc_state(void)
{
    static char st[64];
    struct reply r = api("GET", "/v1/associations/" ASSOC, NULL);
    assert_int_equal(r.status, 200);
    snprintf(st, sizeof st, "%s", jstr(jget(r.json, "constant_contact"), "state"));
    reply_free(&r);
    return st;
}

static void test_connection_shows_connected_after_a_sync(void **state)
{
    (void)state;
    assert_string_equal(assoc_state(), "unverified");
    BOARD_ON();
    send_members("board", 2, 1, member("m1", "ann@example.org", "Ann", "Lee", NULL));
    json_object *gs = wait_synced("board");
    assert_state(gs, "synced");
    assert_string_equal(assoc_state(), "connected");
    char buf[512];
    assert_string_equal(cc_members(gs_list_id(gs), buf, sizeof buf, NULL, 0), "ann@example.org");
    json_object_put(gs);
}

static void test_connection_expired_token_is_refreshed_and_sync_goes_on(void **state)
{
    (void)state;
    char access[256], refresh[256];
    mint_tokens(access, refresh);
    put_tokens(access, refresh);
    BOARD_ON();
    send_members("board", 2, 1, member("m1", "ann@example.org", "Ann", "Lee", NULL));
    json_object *gs = wait_synced("board");
    assert_state(gs, "synced");
    char list_id[128], buf[512];
    snprintf(list_id, sizeof list_id, "%s", gs_list_id(gs));
    json_object_put(gs);
    assert_int_equal(cc_counter("unauthorized"), 0);

    /* CC revokes the access token (it expired early); the refresh token still works. */
    sim_void("POST", "/__sim/tokens/expire", "{}");
    send_customer(member("m2", "bob@example.org", "Bob", "Ray", groups_of("board")), 3);
    gs = wait_synced("board");
    assert_state(gs, "synced");
    assert_null(error_code(gs));
    assert_string_equal(gs_list_id(gs), list_id);
    assert_string_equal(cc_members(list_id, buf, sizeof buf, NULL, 0),
                        "ann@example.org,bob@example.org");
    json_object_put(gs);
    assert_int_equal(cc_counter("unauthorized"), 1); /* one 401, then the refreshed token */
    assert_string_equal(assoc_state(), "connected");
}

static void test_connection_invalid_refresh_token_until_new_tokens_are_put(void **state)
{
    (void)state;
    char access[256], refresh[256], buf[512];
    mint_tokens(access, refresh);
    put_tokens(access, refresh);
    BOARD_ON();
    send_members("board", 2, 1, member("m1", "ann@example.org", "Ann", "Lee", NULL));
    json_object *gs = wait_synced("board");
    char list_id[128];
    snprintf(list_id, sizeof list_id, "%s", gs_list_id(gs));
    json_object_put(gs);

    /* Access and refresh tokens both spent: the account must be reconnected. */
    sim_void("POST", "/__sim/tokens/expire", "{\"refresh\":true}");
    send_customer(member("m2", "bob@example.org", "Bob", "Ray", groups_of("board")), 3);
    gs = wait_group_error("board", "constant_contact_unauthorized", "error");
    json_object_put(gs);
    assert_string_equal(assoc_state(), "unauthorized");
    assert_string_equal(cc_members(list_id, buf, sizeof buf, NULL, 0), "ann@example.org");

    /* An admin reconnects: the error clears and the pending change goes through. */
    mint_tokens(access, refresh);
    put_tokens(access, refresh);
    gs = wait_synced("board");
    assert_state(gs, "synced");
    assert_null(error_code(gs));
    assert_string_equal(gs_list_id(gs), list_id);
    assert_counts(gs, 2, 0, 0, 0, 0, 0, 0, 2);
    json_object_put(gs);
    assert_string_equal(cc_members(list_id, buf, sizeof buf, NULL, 0),
                        "ann@example.org,bob@example.org");
    assert_string_equal(assoc_state(), "connected");
}

/* ==== §1.2 naming ==== */

static void test_naming_takes_first_free_name(void **state)
{
    (void)state;
    sim_void("POST", "/__sim/seed", "{\"lists\":[\"Board\",\"Club\",\"Club - 1\"]}");
    send_group("board", "Board", true, 1);
    send_members("board", 2, 1, member("m1", "ann@example.org", "Ann", "Lee", NULL));
    json_object *gs = wait_synced("board");
    assert_string_equal(gs_list_name(gs), "Board - 1");
    char buf[512], name[256];
    assert_string_equal(cc_members(gs_list_id(gs), buf, sizeof buf, name, sizeof name),
                        "ann@example.org");
    assert_string_equal(name, "Board - 1");
    json_object_put(gs);

    send_group("club", "Club", true, 3);
    send_members("club", 4, 1, member("m2", "bob@example.org", "Bob", "Ray", NULL));
    gs = wait_synced("club");
    assert_string_equal(gs_list_name(gs), "Club - 2");
    json_object_put(gs);

    /* "Board" and "Board - 1" are taken now: a second group named Board gets "Board - 2". */
    send_group("board2", "Board", true, 5);
    send_members("board2", 6, 1, member("m3", "cy@example.org", "Cy", "Lo", NULL));
    gs = wait_synced("board2");
    assert_string_equal(gs_list_name(gs), "Board - 2");
    json_object_put(gs);

    send_group("fresh", "Fresh", true, 7);
    send_members("fresh", 8, 1, member("m4", "di@example.org", "Di", "Ma", NULL));
    gs = wait_synced("fresh");
    assert_string_equal(gs_list_name(gs), "Fresh");
    json_object_put(gs);

    assert_string_equal(cc_list_names(buf, sizeof buf),
                        "Board,Board - 1,Board - 2,Club,Club - 1,Club - 2,Fresh");
    char actions[512];
    assert_string_equal(audit_actions("board2", actions, sizeof actions), "sync_enabled,list_created");
}

/* ==== §1.3 first sync ==== */

static void test_first_sync_puts_every_usable_member_on_the_list(void **state)
{
    (void)state;
    enum { N = 60 };
    char *recs[N];
    size_t cap = 256 + N * 300;
    char *data = malloc(cap);
    size_t len = (size_t)snprintf(data, cap, "{\"UniqueID\":\"big\",\"Members\":[");
    char expected[N * 40];
    size_t elen = 0;
    /* m00..m59: every tenth without email, every tenth (+5) invalid; the rest usable.
     * m01 is a company record. Emails sort as their numbers. */
    const char **usable = calloc(N, sizeof *usable);
    size_t n_usable = 0;
    for (int i = 0; i < N; i++) {
        recs[i] = malloc(300);
        char email[64];
        snprintf(email, sizeof email, "member%02d@example.org", i);
        if (i % 10 == 0)
            snprintf(recs[i], 300, "{\"UniqueID\":\"m%02d\",\"FirstName\":\"F%d\"}", i, i);
        else if (i % 10 == 5)
            snprintf(recs[i], 300, "{\"UniqueID\":\"m%02d\",\"Email\":\"member%02d@nodot\"}", i, i);
        else if (i == 1)
            snprintf(recs[i], 300,
                     "{\"UniqueID\":\"m%02d\",\"Email\":\" Member01@Example.org \",\"Company\":\"Acme\","
                     "\"CustomerType\":\"Company\"}",
                     i);
        else
            snprintf(recs[i], 300,
                     "{\"UniqueID\":\"m%02d\",\"Email\":\"%s\",\"FirstName\":\"F%d\",\"LastName\":\"L%d\","
                     "\"CustomerType\":\"Person\",\"Active\":true}",
                     i, email, i, i);
        if (i % 10 != 0 && i % 10 != 5) {
            elen += (size_t)snprintf(expected + elen, sizeof expected - elen, "%s%s",
                                     n_usable ? "," : "", email);
            n_usable++;
        }
        len += (size_t)snprintf(data + len, cap - len, "%s%s", i ? "," : "", recs[i]);
        free(recs[i]);
    }
    free(usable);
    snprintf(data + len, cap - len, "]}");
    send_group("big", "Everyone", true, 1);
    send_event("group.members", data, 2);
    free(data);

    json_object *gs = wait_synced("big");
    assert_state(gs, "synced");
    assert_null(error_code(gs));
    assert_string_equal(gs_list_name(gs), "Everyone");
    assert_non_null(jstr(gs, "last_synced_at"));
    assert_counts(gs, N, 6, 6, 0, 0, 0, 0, 48);
    assert_int_equal(n_usable, 48);
    char *buf = malloc(8192);
    assert_string_equal(cc_members(gs_list_id(gs), buf, 8192, NULL, 0), expected);
    assert_string_equal(cc_contact_names("member01@example.org", buf, 8192), "Acme _");
    assert_string_equal(cc_contact_names("member02@example.org", buf, 8192), "F2 L2");
    free(buf);
    json_object_put(gs);
    /* ccsync paced itself: CC never answered 429 throttled. */
    assert_int_equal(cc_counter("throttled"), 0);
}

/* ==== §1.4 joins, leaves, email and name changes ==== */

static void test_join_leave_email_and_name_changes(void **state)
{
    (void)state;
    char buf[1024];
    BOARD_ON();
    send_members("board", 2, 4, member("m1", "ann@example.org", "Ann", "Lee", NULL),
                 member("m2", "bob@example.org", "Bob", "Ray", NULL),
                 member("m3", "cy@example.org", "Cy", "Lo", NULL),
                 member("m4", "di@example.org", "Di", "Ma", NULL));
    json_object *gs = wait_synced("board");
    char list_id[128];
    snprintf(list_id, sizeof list_id, "%s", gs_list_id(gs));
    json_object_put(gs);
    assert_string_equal(cc_members(list_id, buf, sizeof buf, NULL, 0),
                        "ann@example.org,bob@example.org,cy@example.org,di@example.org");

    /* m5 joins (customer.updated with the group), m2 leaves it (still a member
     * of another group), m3 is removed from Novi, m4 turns inactive. */
    send_customer(member("m5", "eve@example.org", "Eve", "Ng", groups_of("board")), 3);
    send_customer(member("m2", "bob@example.org", "Bob", "Ray", groups_of("other")), 3);
    send_event("customer.removed", "{\"UniqueID\":\"m3\"}", 3);
    send_customer("{\"UniqueID\":\"m4\",\"Email\":\"di@example.org\",\"Active\":false,"
                  "\"Groups\":[{\"UniqueID\":\"board\",\"GroupName\":\"Board\"}]}",
                  3);
    gs = wait_synced("board");
    assert_state(gs, "synced");
    assert_counts(gs, 2, 0, 0, 0, 0, 0, 0, 2);
    assert_string_equal(gs_list_id(gs), list_id);
    json_object_put(gs);
    assert_string_equal(cc_members(list_id, buf, sizeof buf, NULL, 0),
                        "ann@example.org,eve@example.org");

    /* m1 changes email: the old one leaves the list. m5 changes name. */
    send_customer(member("m1", "ann.lee@example.org", "Ann", "Lee", groups_of("board")), 4);
    send_customer(member("m5", "eve@example.org", "Evelyn", "Ng-Smith", groups_of("board")), 4);
    gs = wait_synced("board");
    assert_counts(gs, 2, 0, 0, 0, 0, 0, 0, 2);
    json_object_put(gs);
    assert_string_equal(cc_members(list_id, buf, sizeof buf, NULL, 0),
                        "ann.lee@example.org,eve@example.org");
    assert_string_equal(cc_contact_names("eve@example.org", buf, sizeof buf), "Evelyn Ng-Smith");
    assert_string_equal(cc_contact_names("ann.lee@example.org", buf, sizeof buf), "Ann Lee");

    /* m3 comes back; m4 turns active again. */
    send_customer(member("m3", "cy@example.org", "Cy", "Lo", groups_of("board")), 5);
    send_customer(member("m4", "di@example.org", "Di", "Ma", groups_of("board")), 5);
    gs = wait_synced("board");
    assert_counts(gs, 4, 0, 0, 0, 0, 0, 0, 4);
    json_object_put(gs);
    assert_string_equal(cc_members(list_id, buf, sizeof buf, NULL, 0),
                        "ann.lee@example.org,cy@example.org,di@example.org,eve@example.org");
    assert_string_equal(cc_list_names(buf, sizeof buf), "Board");
}

/* ==== §1.5 toggle off, group deleted ==== */

static void test_toggle_off_deletes_the_list_and_audits(void **state)
{
    (void)state;
    char buf[1024], actions[512];
    BOARD_ON();
    send_members("board", 2, 2, member("m1", "ann@example.org", "Ann", "Lee", NULL),
                 member("m2", "bob@example.org", "Bob", "Ray", NULL));
    json_object *gs = wait_synced("board");
    char list_id[128];
    snprintf(list_id, sizeof list_id, "%s", gs_list_id(gs));
    json_object_put(gs);
    assert_string_equal(cc_list_names(buf, sizeof buf), "Board");

    send_group("board", "Board", false, 3);
    gs = wait_synced("board");
    assert_state(gs, "disabled");
    assert_null(error_code(gs));
    assert_true(json_object_is_type(jget(gs, "list"), json_type_null));
    assert_false(json_object_get_boolean(jget(gs, "sync_enabled")));
    assert_counts(gs, 0, 0, 0, 0, 0, 0, 0, 0); /* no list, nothing counted on it */
    json_object_put(gs);
    wait_cc_list_names("");
    assert_string_equal(audit_actions("board", actions, sizeof actions),
                        "sync_enabled,list_created,sync_disabled,list_deleted");
    char id[128], name[256];
    audit_entry("board", "list_deleted", id, name, sizeof id);
    assert_string_equal(id, list_id);
    assert_string_equal(name, "Board");

    /* A member change while sync is off touches nothing in CC. */
    long long before = cc_requests();
    send_customer(member("m3", "cy@example.org", "Cy", "Lo", groups_of("board")), 4);
    gs = wait_synced("board");
    assert_state(gs, "disabled");
    json_object_put(gs);
    assert_int_equal(cc_requests(), before);
    assert_string_equal(cc_list_names(buf, sizeof buf), "");

    /* On again: a new list with every member. */
    send_group("board", "Board", true, 5);
    gs = wait_synced("board");
    assert_state(gs, "synced");
    assert_string_equal(gs_list_name(gs), "Board");
    assert_string_not_equal(gs_list_id(gs), list_id);
    assert_string_equal(cc_members(gs_list_id(gs), buf, sizeof buf, NULL, 0),
                        "ann@example.org,bob@example.org,cy@example.org");
    json_object_put(gs);
    assert_string_equal(audit_actions("board", actions, sizeof actions),
                        "sync_enabled,list_created,sync_disabled,list_deleted,sync_enabled,"
                        "list_created");
}

static void test_group_deleted_deletes_the_list_and_keeps_the_audit(void **state)
{
    (void)state;
    char buf[1024], actions[512];
    BOARD_ON();
    send_members("board", 2, 1, member("m1", "ann@example.org", "Ann", "Lee", NULL));
    send_group("club", "Club", true, 1);
    send_members("club", 2, 1, member("m1", "ann@example.org", "Ann", "Lee", NULL));
    json_object *gs = wait_synced("board");
    char list_id[128];
    snprintf(list_id, sizeof list_id, "%s", gs_list_id(gs));
    json_object_put(gs);
    json_object_put(wait_synced("club"));
    assert_string_equal(cc_list_names(buf, sizeof buf), "Board,Club");

    send_event("group.deleted", "{\"UniqueID\":\"board\"}", 3);
    wait_group_gone("board");
    wait_cc_list_names("Club");
    assert_string_equal(audit_actions("board", actions, sizeof actions),
                        "sync_enabled,list_created,group_deleted,list_deleted");
    char id[128], name[256];
    audit_entry("board", "list_deleted", id, name, sizeof id);
    assert_string_equal(id, list_id);
    assert_string_equal(name, "Board");
    struct reply r = api("GET", "/v1/associations/" ASSOC "/groups", NULL);
    assert_int_equal(r.status, 200);
    json_object *groups = jget(r.json, "groups");
    assert_int_equal(json_object_array_length(groups), 1);
    assert_string_equal(jstr(json_object_array_get_idx(groups, 0), "group_id"), "club");
    reply_free(&r);

    /* A late, older event of the deleted group does not bring it (or a list) back. */
    send_group("board", "Board", true, 2);
    send_customer(member("m2", "bob@example.org", "Bob", "Ray", groups_of("board,club")), 2);
    json_object_put(wait_synced("club"));
    sleep_ms(300);
    wait_group_gone("board");
    assert_string_equal(cc_list_names(buf, sizeof buf), "Club");
    assert_string_equal(audit_actions("board", actions, sizeof actions),
                        "sync_enabled,list_created,group_deleted,list_deleted");
}

/* ==== §1.6 list renamed in CC ==== */

static void test_list_renamed_in_cc_keeps_syncing_by_id(void **state)
{
    (void)state;
    char buf[1024], path[256], actions[512];
    BOARD_ON();
    send_members("board", 2, 1, member("m1", "ann@example.org", "Ann", "Lee", NULL));
    json_object *gs = wait_synced("board");
    char list_id[128];
    snprintf(list_id, sizeof list_id, "%s", gs_list_id(gs));
    json_object_put(gs);

    snprintf(path, sizeof path, "/__sim/lists/%s/rename", list_id);
    sim_void("POST", path, "{\"name\":\"Board of Directors\"}");
    long deadline = now_ms() + WAIT_MS;
    for (;;) {
        long status;
        gs = get_group("board", &status);
        if (strcmp(gs_list_name(gs), "Board of Directors") == 0)
            break;
        json_object_put(gs);
        if (now_ms() > deadline)
            fail_msg("the new name did not show");
        sleep_ms(100);
    }
    assert_string_equal(gs_list_id(gs), list_id);
    assert_state(gs, "synced");
    assert_null(error_code(gs));
    json_object_put(gs);
    assert_string_equal(audit_actions("board", actions, sizeof actions),
                        "sync_enabled,list_created,list_renamed_in_constant_contact");
    char id[128], name[256];
    audit_entry("board", "list_renamed_in_constant_contact", id, name, sizeof id);
    assert_string_equal(id, list_id);
    assert_string_equal(name, "Board of Directors");

    send_customer(member("m2", "bob@example.org", "Bob", "Ray", groups_of("board")), 3);
    gs = wait_synced("board");
    assert_string_equal(gs_list_id(gs), list_id);
    assert_string_equal(gs_list_name(gs), "Board of Directors");
    json_object_put(gs);
    assert_string_equal(cc_members(list_id, buf, sizeof buf, NULL, 0),
                        "ann@example.org,bob@example.org");
    assert_string_equal(cc_list_names(buf, sizeof buf), "Board of Directors");
    /* Later reconcile rounds do not audit the rename again. */
    sleep_ms(4500);
    assert_string_equal(audit_actions("board", actions, sizeof actions),
                        "sync_enabled,list_created,list_renamed_in_constant_contact");
}

/* ==== §1.7 list deleted in CC ==== */

static void test_list_deleted_in_cc_is_an_error_until_resync(void **state)
{
    (void)state;
    char buf[1024], path[256], actions[512];
    BOARD_ON();
    send_members("board", 2, 2, member("m1", "ann@example.org", "Ann", "Lee", NULL),
                 member("m2", "bob@example.org", "Bob", "Ray", NULL));
    json_object *gs = wait_synced("board");
    char list_id[128];
    snprintf(list_id, sizeof list_id, "%s", gs_list_id(gs));
    json_object_put(gs);

    snprintf(path, sizeof path, "/__sim/lists/%s/delete", list_id);
    sim_void("POST", path, NULL);
    sim_void("POST", "/__sim/seed", "{\"lists\":[\"Board - 1\"]}"); /* someone took that name */
    gs = wait_group_error("board", "list_deleted_in_constant_contact", "error");
    json_object *err = jget(gs, "error");
    assert_non_null(jstr(err, "message"));
    assert_non_null(strstr(jstr(err, "message"), "deleted in Constant Contact"));
    assert_non_null(jstr(err, "since"));
    json_object_put(gs);
    assert_string_equal(audit_actions("board", actions, sizeof actions),
                        "sync_enabled,list_created,list_missing");

    /* Events and reconcile rounds go by: no new list. */
    send_customer(member("m3", "cy@example.org", "Cy", "Lo", groups_of("board")), 3);
    send_event("customer.removed", "{\"UniqueID\":\"m2\"}", 3);
    wait_folded();
    sleep_ms(5000);
    assert_string_equal(cc_list_names(buf, sizeof buf), "Board - 1");
    gs = wait_group_error("board", "list_deleted_in_constant_contact", "error");
    json_object_put(gs);
    assert_string_equal(audit_actions("board", actions, sizeof actions),
                        "sync_enabled,list_created,list_missing");

    /* The admin resyncs: a new list by the free-name rule with today's members. */
    struct reply r = api("POST", "/v1/associations/" ASSOC "/groups/board/resync", NULL);
    assert_int_equal(r.status, 202);
    reply_free(&r);
    gs = wait_synced("board");
    assert_state(gs, "synced");
    assert_null(error_code(gs));
    assert_string_equal(gs_list_name(gs), "Board");
    assert_string_not_equal(gs_list_id(gs), list_id);
    assert_counts(gs, 2, 0, 0, 0, 0, 0, 0, 2);
    assert_string_equal(cc_members(gs_list_id(gs), buf, sizeof buf, NULL, 0),
                        "ann@example.org,cy@example.org");
    char id[128], name[256];
    audit_entry("board", "list_created", id, name, sizeof id);
    assert_string_equal(id, gs_list_id(gs));
    assert_string_equal(name, "Board");
    json_object_put(gs);
    assert_string_equal(audit_actions("board", actions, sizeof actions),
                        "sync_enabled,list_created,list_missing,resync_requested,list_created");
    assert_string_equal(cc_list_names(buf, sizeof buf), "Board,Board - 1");
}

/* The free-name rule on resync: the old name is taken by then. */
static void test_resync_after_list_deleted_takes_the_first_free_name(void **state)
{
    (void)state;
    char buf[1024], path[256];
    BOARD_ON();
    send_members("board", 2, 1, member("m1", "ann@example.org", "Ann", "Lee", NULL));
    json_object *gs = wait_synced("board");
    char list_id[128];
    snprintf(list_id, sizeof list_id, "%s", gs_list_id(gs));
    json_object_put(gs);
    snprintf(path, sizeof path, "/__sim/lists/%s/delete", list_id);
    sim_void("POST", path, NULL);
    sim_void("POST", "/__sim/seed", "{\"lists\":[\"Board\"]}");
    json_object_put(wait_group_error("board", "list_deleted_in_constant_contact", "error"));
    struct reply r = api("POST", "/v1/associations/" ASSOC "/groups/board/resync", NULL);
    assert_int_equal(r.status, 202);
    reply_free(&r);
    gs = wait_synced("board");
    assert_state(gs, "synced");
    assert_string_equal(gs_list_name(gs), "Board - 1");
    assert_string_equal(cc_members(gs_list_id(gs), buf, sizeof buf, NULL, 0), "ann@example.org");
    json_object_put(gs);
}

/* ==== §1.8 duplicates and reasons ==== */

static void test_duplicates_and_reasons_are_counted(void **state)
{
    (void)state;
    char buf[2048];
    /* Already unsubscribed in CC before ccsync imports anyone. */
    sim_void("POST", "/__sim/seed", "{\"contacts\":[{\"email\":\"gone@example.org\"}]}");
    sim_void("POST", "/__sim/unsubscribe", "{\"email\":\"gone@example.org\"}");
    BOARD_ON();
    send_members(
        "board", 2, 14,
        /* a company and a person share an email: the person wins (though "c1" < "p1") */
        "{\"UniqueID\":\"c1\",\"Email\":\"shared@example.org\",\"Company\":\"Acme\",\"CustomerType\":\"Company\"}",
        member("p1", "SHARED@example.org", "Pat", "Doe", NULL),
        /* two people, same email, joined at once: the smaller UniqueID wins */
        member("z9", "twin@example.org", "Zed", "Nine", NULL),
        member("a1", "twin@example.org", "Al", "One", NULL),
        /* no email, empty, null; invalid */
        "{\"UniqueID\":\"n1\",\"FirstName\":\"No\"}",
        "{\"UniqueID\":\"n2\",\"Email\":\"  \"}", "{\"UniqueID\":\"n3\",\"Email\":null}",
        member("i1", "not-an-email", "In", "Valid", NULL),
        member("i2", "two@@example.org", "In", "Valid", NULL),
        /* do not email */
        member("d1", "quiet@example.org", "Qu", "Iet", ",\"DoNotSendMarketingEmails\":true"),
        /* unsubscribed in CC */
        member("u1", "gone@example.org", "Go", "Ne", NULL),
        /* CC refuses this address (ccsync's rules accept it) */
        member("r1", "dot.@example.org", "Do", "T", NULL),
        /* two plain ones */
        member("k1", "kim@example.org", "Kim", "Ok", NULL),
        member("k2", "lou@example.org", "Lou", "Ok", NULL));
    json_object *gs = wait_synced("board");
    assert_state(gs, "synced");
    assert_counts(gs, 14, 3, 2, 2, 1, 1, 1, 4);
    assert_string_equal(cc_members(gs_list_id(gs), buf, sizeof buf, NULL, 0),
                        "kim@example.org,lou@example.org,shared@example.org,twin@example.org");
    assert_string_equal(cc_contact_names("shared@example.org", buf, sizeof buf), "Pat Doe");
    assert_string_equal(cc_contact_names("twin@example.org", buf, sizeof buf), "Al One");
    assert_string_equal(cc_contact_permission("gone@example.org"), "unsubscribed");
    char list_id[128];
    snprintf(list_id, sizeof list_id, "%s", gs_list_id(gs));
    json_object_put(gs);

    /* Earliest join wins: t1 joins before t0 although its UniqueID is larger. */
    send_customer(member("t9", "early@example.org", "Ear", "Ly", groups_of("board")), 3);
    send_customer(member("t0", "early@example.org", "Lat", "Er", groups_of("board")), 4);
    gs = wait_synced("board");
    assert_counts(gs, 16, 3, 2, 3, 1, 1, 1, 5);
    json_object_put(gs);
    assert_string_equal(cc_contact_names("early@example.org", buf, sizeof buf), "Ear Ly");

    /* The person leaves: the company record takes over the shared address. The
     * do-not-email member opts in; kim opts out (removed from the list). */
    send_customer(member("p1", "SHARED@example.org", "Pat", "Doe", groups_of("")), 5);
    send_customer(member("d1", "quiet@example.org", "Qu", "Iet", groups_of("board")), 5);
    send_customer(member("k1", "kim@example.org", "Kim", "Ok",
                         ",\"DoNotSendMarketingEmails\":true,\"Groups\":[{\"UniqueID\":\"board\"}]"),
                  5);
    gs = wait_synced("board");
    assert_counts(gs, 15, 3, 2, 2, 1, 1, 1, 5);
    json_object_put(gs);
    assert_string_equal(cc_members(list_id, buf, sizeof buf, NULL, 0),
                        "early@example.org,lou@example.org,quiet@example.org,shared@example.org,"
                        "twin@example.org");
    assert_string_equal(cc_contact_names("shared@example.org", buf, sizeof buf), "Acme _");
}

/* ==== §1.9 unsubscribed in CC ==== */

static void test_unsubscribed_in_cc_is_never_added_again(void **state)
{
    (void)state;
    char buf[1024];
    BOARD_ON();
    send_members("board", 2, 2, member("m1", "ann@example.org", "Ann", "Lee", NULL),
                 member("m2", "bob@example.org", "Bob", "Ray", NULL));
    json_object *gs = wait_synced("board");
    char list_id[128];
    snprintf(list_id, sizeof list_id, "%s", gs_list_id(gs));
    json_object_put(gs);

    sim_void("POST", "/__sim/unsubscribe", "{\"email\":\"bob@example.org\"}");
    /* Reconcile sees the list shrink; ccsync finds out and counts bob unsubscribed. */
    long deadline = now_ms() + WAIT_MS;
    for (;;) {
        gs = wait_synced("board");
        if (jint(jget(gs, "counts"), "unsubscribed") == 1)
            break;
        json_object_put(gs);
        if (now_ms() > deadline)
            fail_msg("the unsubscribe was not noticed");
        sleep_ms(200);
    }
    assert_counts(gs, 2, 0, 0, 0, 0, 1, 0, 1);
    json_object_put(gs);
    assert_string_equal(cc_members(list_id, buf, sizeof buf, NULL, 0), "ann@example.org");

    /* bob's record changes (name, then leaving and rejoining): still not added,
     * and nothing is imported for him again. */
    long long imports = cc_imports();
    send_customer(member("m2", "bob@example.org", "Robert", "Ray", groups_of("board")), 3);
    gs = wait_synced("board");
    assert_counts(gs, 2, 0, 0, 0, 0, 1, 0, 1);
    json_object_put(gs);
    send_customer(member("m2", "bob@example.org", "Robert", "Ray", groups_of("")), 4);
    send_customer(member("m2", "bob@example.org", "Robert", "Ray", groups_of("board")), 5);
    gs = wait_synced("board");
    assert_counts(gs, 2, 0, 0, 0, 0, 1, 0, 1);
    json_object_put(gs);
    sleep_ms(2500); /* a reconcile round too */
    gs = wait_synced("board");
    assert_state(gs, "synced");
    assert_counts(gs, 2, 0, 0, 0, 0, 1, 0, 1);
    json_object_put(gs);
    assert_string_equal(cc_members(list_id, buf, sizeof buf, NULL, 0), "ann@example.org");
    assert_string_equal(cc_contact_permission("bob@example.org"), "unsubscribed");
    assert_int_equal(cc_imports(), imports);
}

/* ==== §1.10 saving with no change ==== */

static void test_saving_a_group_without_change_makes_no_cc_request(void **state)
{
    (void)state;
    char buf[1024];
    BOARD_ON();
    send_members("board", 2, 2, member("m1", "ann@example.org", "Ann", "Lee", NULL),
                 member("m2", "bob@example.org", "Bob", "Ray", NULL));
    json_object *gs = wait_synced("board");
    char synced_at[64];
    snprintf(synced_at, sizeof synced_at, "%s", jstr(gs, "last_synced_at"));
    json_object_put(gs);
    long long before = cc_requests();
    sleep_ms(1100); /* a sync run from now on would show in last_synced_at */

    /* Novi saves the group again: same settings, same members, newer timestamps. */
    send_group("board", "Board", true, 10);
    send_members("board", 11, 2, member("m1", "ann@example.org", "Ann", "Lee", NULL),
                 member("m2", "bob@example.org", "Bob", "Ray", NULL));
    send_customer(member("m1", "ann@example.org", "Ann", "Lee", groups_of("board")), 12);
    gs = wait_synced("board");
    sleep_ms(500); /* longer than the coalescing delay */
    json_object_put(gs);
    gs = wait_synced("board");
    assert_state(gs, "synced");
    assert_string_equal(jstr(gs, "last_synced_at"), synced_at);
    assert_counts(gs, 2, 0, 0, 0, 0, 0, 0, 2);
    assert_string_equal(cc_members(gs_list_id(gs), buf, sizeof buf, NULL, 0),
                        "ann@example.org,bob@example.org");
    json_object_put(gs);
    assert_int_equal(cc_requests(), before);
}

/* ==== redelivery and order ==== */

static void test_same_event_delivered_twice_changes_nothing(void **state)
{
    (void)state;
    char buf[1024], actions[512];
    BOARD_ON();
    send_members("board", 2, 1, member("m1", "ann@example.org", "Ann", "Lee", NULL));
    json_object_put(wait_synced("board"));

    char *join = envelope("customer.updated",
                          member("m2", "bob@example.org", "Bob", "Ray", groups_of("board")), 3);
    assert_int_equal(post_webhook("msg_join_1", join), 202);
    json_object *gs = wait_synced("board");
    char list_id[128], synced_at[64];
    snprintf(list_id, sizeof list_id, "%s", gs_list_id(gs));
    snprintf(synced_at, sizeof synced_at, "%s", jstr(gs, "last_synced_at"));
    json_object_put(gs);
    long long before = cc_requests();
    sleep_ms(1100); /* a sync run from now on would show in last_synced_at */

    assert_int_equal(post_webhook("msg_join_1", join), 200); /* same id: a duplicate */
    assert_int_equal(post_webhook("msg_join_2", join), 202); /* Novi's retry, new id */
    char *toggle = envelope("group.updated",
                            "{\"UniqueID\":\"board\",\"GroupName\":\"Board\",\"SyncToConstantContact\":true}", 1);
    assert_int_equal(post_webhook("msg_group_again", toggle), 202);
    free(toggle);
    /* Same timestamp, other content: on a tie the stored fact stands. */
    send_customer(member("m2", "bob.tie@example.org", "Bobby", "Ray", groups_of("board")), 3);
    gs = wait_synced("board");
    sleep_ms(400);
    json_object_put(gs);
    gs = wait_synced("board");
    assert_string_equal(jstr(gs, "last_synced_at"), synced_at);
    assert_counts(gs, 2, 0, 0, 0, 0, 0, 0, 2);
    json_object_put(gs);
    assert_int_equal(cc_requests(), before);
    assert_string_equal(cc_members(list_id, buf, sizeof buf, NULL, 0),
                        "ann@example.org,bob@example.org");

    /* bob leaves; the join is delivered once more afterwards: he stays out. */
    send_customer(member("m2", "bob@example.org", "Bob", "Ray", groups_of("")), 4);
    json_object_put(wait_synced("board"));
    assert_int_equal(post_webhook("msg_join_3", join), 202);
    gs = wait_synced("board");
    assert_counts(gs, 1, 0, 0, 0, 0, 0, 0, 1);
    json_object_put(gs);
    assert_string_equal(cc_members(list_id, buf, sizeof buf, NULL, 0), "ann@example.org");
    assert_string_equal(audit_actions("board", actions, sizeof actions), "sync_enabled,list_created");
    free(join);
}

static void test_out_of_order_events_do_not_regress(void **state)
{
    (void)state;
    char buf[1024], actions[512];
    send_group("board", "Board", true, 20);
    wait_folded();
    send_group("board", "Board", false, 10); /* older: ignored */
    send_event("group.deleted", "{\"UniqueID\":\"board\"}", 15); /* older: ignored */
    send_members("board", 20, 2, member("m1", "ann@example.org", "Ann", "Lee", NULL),
                 member("m2", "bob@example.org", "Bob", "Ray", NULL));
    json_object *gs = wait_synced("board");
    assert_state(gs, "synced");
    char list_id[128];
    snprintf(list_id, sizeof list_id, "%s", gs_list_id(gs));
    json_object_put(gs);
    assert_string_equal(cc_members(list_id, buf, sizeof buf, NULL, 0),
                        "ann@example.org,bob@example.org");

    /* The newer facts first (folded before the older ones arrive): m1's new
     * email and name at 40; bob leaves at 40; cy joins at 50. */
    send_customer(member("m1", "ann.new@example.org", "Annie", "Lee", groups_of("board")), 40);
    send_customer(member("m2", "bob@example.org", "Bob", "Ray", groups_of("")), 40);
    send_customer(member("m3", "cy@example.org", "Cy", "Lo", groups_of("board")), 50);
    wait_folded();
    /* Then older ones: an update of m1 from 30, bob's join from 35, cy's
     * removal from 45, the group turned off at 19 and deleted at 18. */
    send_customer(member("m1", "ann.old@example.org", "Anna", "Lee", groups_of("board")), 30);
    send_customer(member("m2", "bob@example.org", "Bob", "Ray", groups_of("board")), 35);
    send_event("customer.removed", "{\"UniqueID\":\"m3\"}", 45);
    send_group("board", "Board", false, 19);
    send_event("group.deleted", "{\"UniqueID\":\"board\"}", 18);
    gs = wait_synced("board");
    assert_state(gs, "synced");
    assert_counts(gs, 2, 0, 0, 0, 0, 0, 0, 2);
    json_object_put(gs);
    assert_string_equal(cc_members(list_id, buf, sizeof buf, NULL, 0),
                        "ann.new@example.org,cy@example.org");
    assert_string_equal(cc_contact_names("ann.new@example.org", buf, sizeof buf), "Annie Lee");
    assert_string_equal(cc_list_names(buf, sizeof buf), "Board");
    assert_string_equal(audit_actions("board", actions, sizeof actions), "sync_enabled,list_created");
}

static void test_older_snapshot_does_not_override_newer_customer_update(void **state)
{
    (void)state;
    char buf[1024];
    BOARD_ON();
    send_members("board", 2, 2, member("m1", "ann@example.org", "Ann", "Lee", NULL),
                 member("m2", "bob@example.org", "Bob", "Ray", NULL));
    json_object *gs = wait_synced("board");
    char list_id[128];
    snprintf(list_id, sizeof list_id, "%s", gs_list_id(gs));
    json_object_put(gs);

    /* At 20: m1 leaves, m2 changes email, m3 joins. A snapshot taken at 10 arrives
     * later: m1 and m2 as before, without m3. */
    send_customer(member("m1", "ann@example.org", "Ann", "Lee", groups_of("")), 20);
    send_customer(member("m2", "bob.new@example.org", "Bob", "Ray", groups_of("board")), 20);
    send_customer(member("m3", "cy@example.org", "Cy", "Lo", groups_of("board")), 20);
    wait_folded();
    send_members("board", 10, 2, member("m1", "ann@example.org", "Ann", "Lee", NULL),
                 member("m2", "bob@example.org", "Bob", "Ray", NULL));
    gs = wait_synced("board");
    assert_counts(gs, 2, 0, 0, 0, 0, 0, 0, 2);
    json_object_put(gs);
    assert_string_equal(cc_members(list_id, buf, sizeof buf, NULL, 0),
                        "bob.new@example.org,cy@example.org");

    /* A newer snapshot does override: at 30 the group is m1 and m3. */
    send_members("board", 30, 2, member("m1", "ann@example.org", "Ann", "Lee", NULL),
                 member("m3", "cy@example.org", "Cy", "Lo", NULL));
    gs = wait_synced("board");
    assert_counts(gs, 2, 0, 0, 0, 0, 0, 0, 2);
    json_object_put(gs);
    assert_string_equal(cc_members(list_id, buf, sizeof buf, NULL, 0),
                        "ann@example.org,cy@example.org");
}

/* ==== several groups in one round (issue #4: burst efficiency) ==== */

/* Three synced groups of four; the member ids are g-a..g-d, emails a@g.org... */
static void three_groups_of_four(const char *groups[3])
{
    for (int g = 0; g < 3; g++) {
        char id[4][32], email[4][64];
        for (int i = 0; i < 4; i++) {
            snprintf(id[i], sizeof id[i], "%s-%c", groups[g], 'a' + i);
            snprintf(email[i], sizeof email[i], "%c@%s.org", 'a' + i, groups[g]);
        }
        send_group(groups[g], groups[g], true, 1);
        send_members(groups[g], 2, 4, member(id[0], email[0], "A", "A", NULL),
                     member(id[1], email[1], "B", "B", NULL),
                     member(id[2], email[2], "C", "C", NULL),
                     member(id[3], email[3], "D", "D", NULL));
    }
}

static void test_burst_over_groups_shares_requests(void **state)
{
    (void)state;
    char buf[1024];
    const char *groups[3] = {"g1", "g2", "g3"};
    three_groups_of_four(groups);
    char list_id[3][128];
    for (int g = 0; g < 3; g++) {
        json_object *gs = wait_synced(groups[g]);
        snprintf(list_id[g], sizeof list_id[g], "%s", gs_list_id(gs));
        json_object_put(gs);
    }
    long long before = cc_requests(), seq = cc_log_next();
    long long imports = cc_imports(),
              removes = cc_endpoint("POST /v3/activities/remove_list_memberships");
    long long lookups = cc_endpoint("GET /v3/contacts"), polls = cc_endpoint("GET /v3/activities");
    long long polls_by_id = cc_endpoint("GET /v3/activities/{activity_id}");

    /* The burst: in each group a leaves and e joins, as separate webhooks. */
    for (int g = 0; g < 3; g++) {
        char id[32], email[64];
        snprintf(id, sizeof id, "%s-a", groups[g]);
        snprintf(email, sizeof email, "a@%s.org", groups[g]);
        send_customer(member(id, email, "A", "A", groups_of("")), 3);
        snprintf(id, sizeof id, "%s-e", groups[g]);
        snprintf(email, sizeof email, "e@%s.org", groups[g]);
        send_customer(member(id, email, "E", "E", groups_of(groups[g])), 3);
    }
    for (int g = 0; g < 3; g++) {
        json_object *gs = wait_synced(groups[g]);
        assert_counts(gs, 4, 0, 0, 0, 0, 0, 0, 4);
        json_object_put(gs);
        char want[256];
        snprintf(want, sizeof want, "b@%s.org,c@%s.org,d@%s.org,e@%s.org", groups[g], groups[g],
                 groups[g], groups[g]);
        assert_string_equal(cc_members(list_id[g], buf, sizeof buf, NULL, 0), want);
    }
    /* One import per list, ONE removal for the three lists (the contact ids
     * are known from the first sync's read-back, so no lookup), and one
     * GET /activities reporting on all four activities. */
    assert_int_equal(cc_imports() - imports, 3);
    assert_int_equal(cc_endpoint("POST /v3/activities/remove_list_memberships") - removes, 1);
    cc_remove_shapes(seq, buf, sizeof buf);
    assert_string_equal(buf, "3>3");
    assert_int_equal(cc_endpoint("GET /v3/contacts") - lookups, 0);
    assert_int_equal(cc_endpoint("GET /v3/activities/{activity_id}") - polls_by_id, 0);
    assert_int_equal(cc_endpoint("GET /v3/activities") - polls, 1);
    assert_int_equal(cc_requests() - before, 5);
    assert_int_equal(cc_counter("throttled"), 0);
}

static void test_member_of_two_groups_leaving_one_stays_on_the_other(void **state)
{
    (void)state;
    char buf[1024];
    /* pat is in board and staff; bob only in board; sue only in staff. */
    send_group("board", "Board", true, 1);
    send_group("staff", "Staff", true, 1);
    send_members("board", 2, 2, member("pat", "pat@example.org", "Pat", "Poe", NULL),
                 member("bob", "bob@example.org", "Bob", "Ray", NULL));
    send_members("staff", 2, 2, member("pat", "pat@example.org", "Pat", "Poe", NULL),
                 member("sue", "sue@example.org", "Sue", "Sim", NULL));
    json_object *gs = wait_synced("board");
    char board[128], staff[128];
    snprintf(board, sizeof board, "%s", gs_list_id(gs));
    json_object_put(gs);
    gs = wait_synced("staff");
    snprintf(staff, sizeof staff, "%s", gs_list_id(gs));
    json_object_put(gs);
    long long seq = cc_log_next(), imports = cc_imports();

    /* In one burst pat leaves board (stays in staff) and sue leaves staff. One
     * request for both lists would take pat off staff too: two are needed. */
    send_customer(member("pat", "pat@example.org", "Pat", "Poe", groups_of("staff")), 3);
    send_customer(member("sue", "sue@example.org", "Sue", "Sim", groups_of("")), 3);
    gs = wait_synced("board");
    assert_counts(gs, 1, 0, 0, 0, 0, 0, 0, 1);
    json_object_put(gs);
    gs = wait_synced("staff");
    assert_counts(gs, 1, 0, 0, 0, 0, 0, 0, 1);
    json_object_put(gs);
    assert_string_equal(cc_members(board, buf, sizeof buf, NULL, 0), "bob@example.org");
    assert_string_equal(cc_members(staff, buf, sizeof buf, NULL, 0), "pat@example.org");
    cc_remove_shapes(seq, buf, sizeof buf);
    assert_string_equal(buf, "1>1,1>1");
    assert_int_equal(cc_imports(), imports); /* pat was never off staff: no re-import */

    /* Later pat leaves staff too and bob leaves board: nothing stays, so one
     * request takes both off both lists. */
    seq = cc_log_next();
    send_customer(member("pat", "pat@example.org", "Pat", "Poe", groups_of("")), 4);
    send_customer(member("bob", "bob@example.org", "Bob", "Ray", groups_of("")), 4);
    json_object_put(wait_synced("board"));
    json_object_put(wait_synced("staff"));
    assert_string_equal(cc_members(board, buf, sizeof buf, NULL, 0), "");
    assert_string_equal(cc_members(staff, buf, sizeof buf, NULL, 0), "");
    cc_remove_shapes(seq, buf, sizeof buf);
    assert_string_equal(buf, "2>2");
}

static void test_merged_removal_with_lost_answer_is_recovered_in_every_group(void **state)
{
    (void)state;
    char buf[1024];
    const char *groups[3] = {"g1", "g2", "g3"};
    three_groups_of_four(groups);
    char list_id[3][128];
    for (int g = 0; g < 3; g++) {
        json_object *gs = wait_synced(groups[g]);
        snprintf(list_id[g], sizeof list_id[g], "%s", gs_list_id(gs));
        json_object_put(gs);
    }
    /* The merged removal's answer is lost (a 502: CC may have acted). Each
     * group's journal holds it; each recovers and the lists end exact. */
    sim_void("POST", "/__sim/faults",
             "{\"mode\":\"status\",\"status\":502,\"count\":1,"
             "\"path_prefix\":\"/v3/activities/remove_list_memberships\"}");
    for (int g = 0; g < 3; g++) {
        char id[32], email[64];
        snprintf(id, sizeof id, "%s-a", groups[g]);
        snprintf(email, sizeof email, "a@%s.org", groups[g]);
        send_customer(member(id, email, "A", "A", groups_of("")), 3);
    }
    for (int g = 0; g < 3; g++) {
        json_object *gs = wait_synced(groups[g]);
        assert_state(gs, "synced");
        assert_null(error_code(gs));
        assert_counts(gs, 3, 0, 0, 0, 0, 0, 0, 3);
        json_object_put(gs);
        char want[256];
        snprintf(want, sizeof want, "b@%s.org,c@%s.org,d@%s.org", groups[g], groups[g], groups[g]);
        assert_string_equal(cc_members(list_id[g], buf, sizeof buf, NULL, 0), want);
    }
    assert_int_equal(cc_counter("faults"), 1);
}

/* The list was deleted in CC and a burst both removes and adds members before
 * reconcile notices: the removal's 404 marks the group list_deleted; the
 * import of the same pass is not sent to the gone list (CC would refuse it with
 * a 400, and the group's error would turn into constant_contact_rejected). */
static void test_list_deleted_in_cc_found_by_a_removal_stops_the_round(void **state)
{
    (void)state;
    char path[256], actions[512];
    BOARD_ON();
    send_members("board", 2, 2, member("m1", "ann@example.org", "Ann", "Lee", NULL),
                 member("m2", "bob@example.org", "Bob", "Ray", NULL));
    json_object *gs = wait_synced("board");
    char list_id[128];
    snprintf(list_id, sizeof list_id, "%s", gs_list_id(gs));
    json_object_put(gs);
    long long imports = cc_imports();

    snprintf(path, sizeof path, "/__sim/lists/%s/delete", list_id);
    sim_void("POST", path, NULL);
    /* One burst: ann leaves (a removal, her contact id known), cy joins (an import). */
    send_customer(member("m1", "ann@example.org", "Ann", "Lee", groups_of("")), 3);
    send_customer(member("m3", "cy@example.org", "Cy", "Lo", groups_of("board")), 3);
    gs = wait_group_error("board", "list_deleted_in_constant_contact", "error");
    json_object_put(gs);
    sleep_ms(2000);
    long status;
    gs = get_group("board", &status);
    assert_int_equal(status, 200);
    assert_string_equal(error_code(gs), "list_deleted_in_constant_contact");
    json_object_put(gs);
    assert_string_equal(audit_actions("board", actions, sizeof actions),
                        "sync_enabled,list_created,list_missing");
    assert_int_equal(cc_imports(), imports); /* nothing imported into the gone list */
}

/* A list create whose answer is lost (ccsyncd gives up after 30 s; ccsim makes
 * the list a moment later), and sync is turned off before the retry: the list
 * the lost create made is found by its reference and deleted, not left behind
 * in CC with nobody syncing it. */
static void test_sync_off_after_a_lost_create_deletes_the_list_it_made(void **state)
{
    (void)state;
    char actions[512];
    sim_void("POST", "/__sim/delays",
             "{\"endpoint\":\"POST /v3/contact_lists\",\"delay_ms\":30300,\"count\":1}");
    BOARD_ON();
    send_members("board", 2, 1, member("m1", "ann@example.org", "Ann", "Lee", NULL));
    sleep_ms(3000); /* the create is on its way */
    send_group("board", "Board", false, 3);
    wait_cc_list_names("Board"); /* the lost create lands */
    wait_cc_list_names("");
    json_object *gs = wait_synced("board");
    assert_state(gs, "disabled");
    json_object_put(gs);
    assert_string_equal(audit_actions("board", actions, sizeof actions),
                        "sync_enabled,sync_disabled,list_created,list_deleted");
}

/* A list create whose answer is lost, and an admin resyncs the group (it shows
 * no list yet) before the retry: the list the lost create made is adopted, not
 * left behind beside a second list "Board - 1". */
static void test_resync_after_a_lost_create_adopts_the_list_it_made(void **state)
{
    (void)state;
    char buf[1024];
    sim_void("POST", "/__sim/delays",
             "{\"endpoint\":\"POST /v3/contact_lists\",\"delay_ms\":30300,\"count\":1}");
    BOARD_ON();
    send_members("board", 2, 1, member("m1", "ann@example.org", "Ann", "Lee", NULL));
    sleep_ms(3000); /* the create is on its way */
    struct reply r = api("POST", "/v1/associations/" ASSOC "/groups/board/resync", NULL);
    assert_int_equal(r.status, 202);
    reply_free(&r);
    wait_cc_list_names("Board"); /* the lost create lands */
    json_object *gs = wait_synced("board");
    long deadline = now_ms() + WAIT_MS;
    while (strcmp(jstr(gs, "state"), "synced") != 0 && now_ms() < deadline) {
        json_object_put(gs);
        sleep_ms(200);
        gs = wait_synced("board");
    }
    assert_state(gs, "synced");
    assert_string_equal(gs_list_name(gs), "Board");
    assert_string_equal(cc_members(gs_list_id(gs), buf, sizeof buf, NULL, 0), "ann@example.org");
    json_object_put(gs);
    assert_string_equal(cc_list_names(buf, sizeof buf), "Board");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_connection_shows_connected_after_a_sync, setup_limits, stop_stack),
        cmocka_unit_test_setup_teardown(test_connection_expired_token_is_refreshed_and_sync_goes_on, setup_no_token, stop_stack),
        cmocka_unit_test_setup_teardown(test_connection_invalid_refresh_token_until_new_tokens_are_put, setup_no_token, stop_stack),
        cmocka_unit_test_setup_teardown(test_naming_takes_first_free_name, setup_limits, stop_stack),
        cmocka_unit_test_setup_teardown(test_first_sync_puts_every_usable_member_on_the_list, setup_limits, stop_stack),
        cmocka_unit_test_setup_teardown(test_join_leave_email_and_name_changes, setup_fast, stop_stack),
        cmocka_unit_test_setup_teardown(test_toggle_off_deletes_the_list_and_audits, setup_fast, stop_stack),
        cmocka_unit_test_setup_teardown(test_group_deleted_deletes_the_list_and_keeps_the_audit, setup_fast, stop_stack),
        cmocka_unit_test_setup_teardown(test_list_renamed_in_cc_keeps_syncing_by_id, setup_reconcile, stop_stack),
        cmocka_unit_test_setup_teardown(test_list_deleted_in_cc_is_an_error_until_resync, setup_reconcile, stop_stack),
        cmocka_unit_test_setup_teardown(test_resync_after_list_deleted_takes_the_first_free_name, setup_reconcile, stop_stack),
        cmocka_unit_test_setup_teardown(test_duplicates_and_reasons_are_counted, setup_fast, stop_stack),
        cmocka_unit_test_setup_teardown(test_unsubscribed_in_cc_is_never_added_again, setup_reconcile, stop_stack),
        cmocka_unit_test_setup_teardown(test_saving_a_group_without_change_makes_no_cc_request, setup_limits, stop_stack),
        cmocka_unit_test_setup_teardown(test_same_event_delivered_twice_changes_nothing, setup_fast, stop_stack),
        cmocka_unit_test_setup_teardown(test_out_of_order_events_do_not_regress, setup_fast, stop_stack),
        cmocka_unit_test_setup_teardown(test_older_snapshot_does_not_override_newer_customer_update, setup_fast, stop_stack),
        cmocka_unit_test_setup_teardown(test_burst_over_groups_shares_requests, setup_limits, stop_stack),
        cmocka_unit_test_setup_teardown(test_member_of_two_groups_leaving_one_stays_on_the_other, setup_fast, stop_stack),
        cmocka_unit_test_setup_teardown(test_merged_removal_with_lost_answer_is_recovered_in_every_group, setup_fast, stop_stack),
        cmocka_unit_test_setup_teardown(test_list_deleted_in_cc_found_by_a_removal_stops_the_round, setup_fast, stop_stack),
        cmocka_unit_test_setup_teardown(test_sync_off_after_a_lost_create_deletes_the_list_it_made, setup_fast, stop_stack),
        cmocka_unit_test_setup_teardown(test_resync_after_a_lost_create_adopts_the_list_it_made, setup_fast, stop_stack),
    };
    const char *filter = getenv("TEST_FILTER");
    if (filter && *filter)
        cmocka_set_test_filter(filter);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
