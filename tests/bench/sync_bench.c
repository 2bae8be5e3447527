/*
 * sync_bench.c - the sync-efficiency benchmark: how many Constant Contact
 * requests, and how many seconds, ccsync needs to make lists match their groups,
 * beside the naive cost of one request per member change. Run by
 * tests/bench/run.sh.
 *
 *   sync_bench CCSYNCD CCSIM LOG_DIR SCENARIO...
 *     first:N          a group of N members whose sync is turned on (first sync)
 *     burst:N:G        G groups of 100 members each, synced; then N single-member
 *                      changes as separate customer.updated webhooks (half leave a
 *                      group, half join one), spread evenly over the G groups
 *     first:N:F        first:N with F mapped fields (§12; 1..17: job_title and the
 *                      custom field Chapter first, then standard and custom fields)
 *     fields:N:G       G groups of 100 members with 2 mapped fields, synced; then N
 *                      field changes (Chapter) as customer.updated webhooks of members
 *                      who stay, spread evenly over the G groups
 *     arrive:N:G:S     G new groups turned on, then N joins into them (customer.updated,
 *                      join i to group i % G) sent at an even pace over S seconds
 *                      while the workers run, as Novi delivers a bulk change: the
 *                      burst reaches ccsync while rounds are already under way
 *     waves:W:G:L      G synced groups of 100 members on a day of L requests (small
 *                      enough that the budget binds); then W waves 2 s apart of one
 *                      join into each group, a round each: rounds that only import
 *                      share one activity check per association (service/actcheck.c)
 *                      instead of polling their own; counted once no check is due
 *
 * Every scenario gets a fresh redis-server, ccsim (production limits: 4 requests
 * per second, 10,000 a day; 200 ms activities) and ccsyncd (defaults but for the
 * bootstrap association "bench" connected with ccsim's dev token) on free
 * loopback ports, so its counters start at zero. Converged means: every event
 * folded (queue pending 0), each group's GroupStatus has pending_changes 0 and
 * changes_queued false, and ccsim's list holds exactly the expected emails.
 * Requests are ccsim's own counters (GET /__sim/counters), read once no request
 * has reached ccsim for 3 s after convergence, so trailing requests (the
 * read-back of small lists' contact ids after their first syncs, done after the
 * groups show synced) are counted too.
 *
 * Each wait for convergence gives up after $SYNC_BENCH_TIMEOUT seconds (240).
 *
 * Prints one markdown table row per scenario as it finishes (the header first),
 * then each scenario's requests by endpoint. Exits 1 only when something broke
 * (a process did not start, a webhook was refused, a scenario did not converge).
 */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "ccsync/keys.h"
#include "ccsync/webhook.h"
#include "reply.h"
#include "testsupport.h"

#define ASSOC "bench"
#define SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define ADMIN_TOKEN "bench-admin-token-0123456789"
#define DEV_TOKEN "bench-sim-dev-token"
#define CC_RATE 4.0
#define BURST_GROUP_SIZE 100
#define SENDER_THREADS 8

static struct {
    const char *ccsyncd_bin, *ccsim_bin, *log_dir;
    pid_t redis_pid, sim_pid, ccsyncd_pid;
    int redis_port, sim_port, http_port;
    char sim_root[64], base[64];
    long msg_serial;
    double timeout_s;     /* per convergence wait: $SYNC_BENCH_TIMEOUT, default 240 */
    char breakdown[8192]; /* requests by endpoint, per scenario, printed at the end */
    int fields;           /* mapped fields of the running scenario (§12), 0 = none */
    long daily_limit;     /* CCSYNC_CC_DAILY_LIMIT of the running scenario, 0 = default */
    const char *chapter;  /* the value members send for CustomFields.Chapter */
} S;

/* The mapping of first:N:F and fields:N:G: Novi field -> CC field, F of them. */
static const char *const FIELD_MAP[][2] = {
    {"Title", "job_title"},
    {"CustomFields.Chapter", "custom:Chapter"},
    {"Phone", "phone_number"},
    {"City", "city"},
    {"State", "state"},
    {"Zip", "zip"},
    {"Country", "country"},
    {"Street", "street"},
    {"HomePhone", "home_phone"},
    {"WorkPhone", "work_phone"},
    {"MobilePhone", "mobile_phone"},
    {"Org", "company_name"},
    {"CustomFields.F1", "custom:Field 1"},
    {"CustomFields.F2", "custom:Field 2"},
    {"CustomFields.F3", "custom:Field 3"},
    {"CustomFields.F4", "custom:Field 4"},
    {"CustomFields.F5", "custom:Field 5"},
};
#define FIELD_MAP_MAX (int)(sizeof FIELD_MAP / sizeof FIELD_MAP[0])

/* ",\"Title\":...,\"CustomFields\":{...}" for the first S.fields mapped fields. */
static void member_fields(char *out, size_t size, const char *uid)
{
    size_t len = 0;
    char custom[1024];
    size_t clen = 0;
    out[0] = custom[0] = '\0';
    for (int i = 0; i < S.fields && i < FIELD_MAP_MAX; i++) {
        const char *novi = FIELD_MAP[i][0];
        const char *value = i == 1 ? S.chapter : uid;
        if (strncmp(novi, "CustomFields.", 13) == 0)
            clen += (size_t)snprintf(custom + clen, sizeof custom - clen, "%s\"%s\":\"%s\"",
                                     clen ? "," : "", novi + 13, value);
        else
            len += (size_t)snprintf(out + len, size - len, ",\"%s\":\"%s\"", novi, value);
    }
    if (clen)
        snprintf(out + len, size - len, ",\"CustomFields\":{%s}", custom);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void stack_stop(void);

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "sync_bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    stack_stop();
    exit(1);
}

/* ---- HTTP ---- */

/* One request; dies on a transport error. Returns the parsed JSON body (or NULL). */
static json_object *http_json(const char *method, const char *url, const char *const *headers,
                              const char *body, size_t body_len, long *status)
{
    char *resp = NULL;
    if (ts_http_full(method, url, headers, body, body_len, 120000, status, &resp, NULL) != 0)
        die("%s %s: no answer", method, url);
    json_object *j = resp ? json_tokener_parse(resp) : NULL;
    free(resp);
    return j;
}

static json_object *api_get(const char *path, long *status)
{
    char url[512];
    snprintf(url, sizeof url, "%s%s", S.base, path);
    const char *headers[] = {"Authorization: Bearer " ADMIN_TOKEN, NULL};
    return http_json("GET", url, headers, NULL, 0, status);
}

static json_object *sim_get(const char *path)
{
    char url[512];
    long status;
    snprintf(url, sizeof url, "%s%s", S.sim_root, path);
    json_object *j = http_json("GET", url, NULL, NULL, 0, &status);
    if (status != 200)
        die("ccsim GET %s: %ld", path, status);
    return j;
}

static long long jint_or_minus1(json_object *o, const char *key)
{
    json_object *v = jget(o, key);
    return v ? json_object_get_int64(v) : -1;
}

/* ---- webhooks ---- */

/* The envelope timestamp: wall-clock now, made strictly increasing, so every event
 * is newer than the ones sent before it (newest envelope wins in ccsync). */
static long long next_ts_ns(void)
{
    static long long last;
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long v = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    pthread_mutex_lock(&lock);
    if (v <= last)
        v = last + 1;
    last = v;
    pthread_mutex_unlock(&lock);
    return v;
}

/* A malloc'd envelope around data (which may be long). */
static char *envelope(const char *type, const char *data, size_t *len)
{
    long long ns = next_ts_ns();
    time_t secs = (time_t)(ns / 1000000000LL);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char stamp[40];
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    size_t cap = strlen(data) + strlen(type) + 128;
    char *body = malloc(cap);
    *len = (size_t)snprintf(body, cap, "{\"type\":\"%s\",\"timestamp\":\"%s.%09lldZ\",\"data\":%s}",
                            type, stamp, ns % 1000000000LL, data);
    return body;
}

/* Signs and posts one webhook under a fresh webhook-id; dies unless 202. */
static void post_event(const char *type, const char *data)
{
    size_t len;
    char *body = envelope(type, data, &len);
    char id[64], sig[128], id_h[100], ts_h[64], sig_h[200], url[256];
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&lock);
    long serial = ++S.msg_serial;
    pthread_mutex_unlock(&lock);
    snprintf(id, sizeof id, "msg_bench_%d_%ld", (int)getpid(), serial);
    long long now = (long long)time(NULL);
    if (webhook_sign(SECRET, id, now, body, len, sig, sizeof sig) != 0)
        die("webhook_sign failed");
    snprintf(id_h, sizeof id_h, "webhook-id: %s", id);
    snprintf(ts_h, sizeof ts_h, "webhook-timestamp: %lld", now);
    snprintf(sig_h, sizeof sig_h, "webhook-signature: %s", sig);
    const char *headers[] = {"Content-Type: application/json", id_h, ts_h, sig_h, NULL};
    snprintf(url, sizeof url, "%s/v1/associations/" ASSOC "/webhooks/novi", S.base);
    long status;
    json_object *j = http_json("POST", url, headers, body, len, &status);
    if (status != 202)
        die("webhook %s (%s): HTTP %ld %s", id, type, status,
            j ? json_object_to_json_string(j) : "");
    json_object_put(j);
    free(body);
}

static void member_json(char *out, size_t size, const char *uid, const char *email,
                        const char *groups_json)
{
    char fields[2048];
    member_fields(fields, sizeof fields, uid);
    snprintf(out, size,
             "{\"UniqueID\":\"%s\",\"Email\":\"%s\",\"FirstName\":\"F%s\",\"LastName\":\"L%s\","
             "\"CustomerType\":\"Person\",\"Active\":true,\"DoNotSendMarketingEmails\":false%s%s}",
             uid, email, uid, uid, fields, groups_json ? groups_json : "");
}

static void member_email(char *out, size_t size, const char *group, int i)
{
    snprintf(out, size, "%.40s.m%d@bench.example.org", group, i);
}

/* group.members for group with members m0..m(n-1), then group.updated turning sync on. */
static void send_group(const char *group, int n)
{
    size_t cap = 256 + (size_t)n * (256 + 40 * (size_t)S.fields), len;
    char *data = malloc(cap);
    len = (size_t)snprintf(data, cap, "{\"UniqueID\":\"%s\",\"Members\":[", group);
    for (int i = 0; i < n; i++) {
        char uid[64], email[128];
        snprintf(uid, sizeof uid, "%s-m%d", group, i);
        member_email(email, sizeof email, group, i);
        if (i)
            data[len++] = ',';
        member_json(data + len, cap - len, uid, email, NULL);
        len += strlen(data + len);
    }
    snprintf(data + len, cap - len, "]}");
    post_event("group.members", data);
    free(data);
    char g[256];
    snprintf(g, sizeof g,
             "{\"UniqueID\":\"%s\",\"GroupName\":\"Bench %s\",\"SyncToConstantContact\":true}",
             group, group);
    post_event("group.updated", g);
}

/* ---- the stack ---- */

static void stack_stop(void)
{
    if (S.ccsyncd_pid > 0)
        ts_kill(S.ccsyncd_pid, SIGTERM);
    if (S.sim_pid > 0)
        ts_kill(S.sim_pid, SIGTERM);
    if (S.redis_pid > 0)
        ts_kill(S.redis_pid, SIGTERM);
    S.ccsyncd_pid = S.sim_pid = S.redis_pid = 0;
}

/* PUTs the first S.fields entries of FIELD_MAP as the association's mapping. */
static void put_mapping(void)
{
    if (S.fields == 0)
        return;
    char body[4096], url[256];
    size_t len = (size_t)snprintf(body, sizeof body, "{\"fields\":[");
    for (int i = 0; i < S.fields && i < FIELD_MAP_MAX; i++)
        len += (size_t)snprintf(body + len, sizeof body - len, "%s{\"novi\":\"%s\",\"cc\":\"%s\"}",
                                i ? "," : "", FIELD_MAP[i][0], FIELD_MAP[i][1]);
    snprintf(body + len, sizeof body - len, "]}");
    snprintf(url, sizeof url, "%s/v1/associations/" ASSOC, S.base);
    const char *headers[] = {"Authorization: Bearer " ADMIN_TOKEN, "Content-Type: application/json",
                             NULL};
    long status;
    json_object_put(http_json("PUT", url, headers, body, strlen(body), &status));
    if (status != 200)
        die("PUT the field mapping: %ld", status);
}

static void stack_start(const char *tag)
{
    char log[512];
    S.redis_port = ts_free_port();
    S.redis_pid = ts_redis_start(S.redis_port);
    if (S.redis_pid < 0)
        die("redis-server did not start");

    S.sim_port = ts_free_port();
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", S.sim_port);
    char *sim_argv[] = {(char *)S.ccsim_bin, "--listen", listen, "--dev-token", DEV_TOKEN, NULL};
    snprintf(log, sizeof log, "%s/%s-ccsim.log", S.log_dir, tag);
    S.sim_pid = ts_spawn_logged(sim_argv, NULL, log);
    if (S.sim_pid < 0 || ts_wait_port(S.sim_port, 10000) != 0)
        die("ccsim did not start (see %s)", log);
    snprintf(S.sim_root, sizeof S.sim_root, "http://127.0.0.1:%d", S.sim_port);

    S.http_port = ts_free_port();
    char e_listen[64], e_redis[96], e_api[128], e_tok[128];
    snprintf(e_listen, sizeof e_listen, "CCSYNC_LISTEN=127.0.0.1:%d", S.http_port);
    snprintf(e_redis, sizeof e_redis, "CCSYNC_REDIS_URL=redis://127.0.0.1:%d/0", S.redis_port);
    snprintf(e_api, sizeof e_api, "CCSYNC_CC_API_URL=%s/v3", S.sim_root);
    snprintf(e_tok, sizeof e_tok, "CCSYNC_CC_TOKEN_URL=%s/oauth2/default/v1/token", S.sim_root);
    char e_limit[64] = "CCSYNC_LOG_LEVEL=info";
    if (S.daily_limit > 0)
        snprintf(e_limit, sizeof e_limit, "CCSYNC_CC_DAILY_LIMIT=%ld", S.daily_limit);
    char *env[] = {e_listen,
                   e_redis,
                   e_api,
                   e_tok,
                   e_limit,
                   "CCSYNC_ADMIN_TOKEN=" ADMIN_TOKEN,
                   "CCSYNC_ALLOW_PLAINTEXT_SECRETS=1",
                   "CCSYNC_ASSOCIATION_ID=" ASSOC,
                   "CCSYNC_WEBHOOK_SECRET=" SECRET,
                   "CCSYNC_CC_ACCESS_TOKEN=" DEV_TOKEN,
                   "CCSYNC_CC_EXPIRES_AT=2099-01-01T00:00:00Z",
                   "CCSYNC_LOG_FORMAT=json",
                   NULL};
    char *argv[] = {(char *)S.ccsyncd_bin, NULL};
    snprintf(log, sizeof log, "%s/%s-ccsyncd.log", S.log_dir, tag);
    S.ccsyncd_pid = ts_spawn_logged(argv, env, log);
    if (S.ccsyncd_pid < 0 || ts_wait_port(S.http_port, 10000) != 0)
        die("ccsyncd did not start (see %s)", log);
    snprintf(S.base, sizeof S.base, "http://127.0.0.1:%d", S.http_port);
    for (int i = 0; i < 100; i++) {
        long status;
        json_object *j = api_get("/readyz", &status);
        json_object_put(j);
        if (status == 200) {
            put_mapping();
            return;
        }
        ts_sleep_ms(100);
    }
    die("ccsyncd not ready (see %s)", log);
}

/* ---- convergence ---- */

static long long queue_pending(void)
{
    long status;
    json_object *j = api_get("/v1/status", &status);
    long long n = status == 200 ? jint_or_minus1(jget(j, "queue"), "pending") : -1;
    json_object_put(j);
    return n;
}

/* Whether the group's GroupStatus is settled with in_list == expect; its list_id
 * is copied out. */
static bool group_settled(const char *group, long long expect, char *list_id, size_t size)
{
    char path[256];
    long status;
    snprintf(path, sizeof path, "/v1/associations/" ASSOC "/groups/%s", group);
    json_object *gs = api_get(path, &status);
    json_object *q = jget(gs, "changes_queued");
    json_object *list = jget(gs, "list");
    bool ok = status == 200 && jint_or_minus1(gs, "pending_changes") == 0 && q &&
              !json_object_get_boolean(q) &&
              jint_or_minus1(jget(gs, "counts"), "in_list") == expect && list &&
              jget(list, "list_id");
    if (ok)
        snprintf(list_id, size, "%s", json_object_get_string(jget(list, "list_id")));
    json_object_put(gs);
    return ok;
}

/* Whether ccsim's list list_id holds exactly the emails expected (sorted in place). */
static bool sim_list_exact(json_object *state, const char *list_id, const char **expected, size_t n)
{
    json_object *lists = jget(state, "lists");
    for (size_t i = 0; lists && i < json_object_array_length(lists); i++) {
        json_object *l = json_object_array_get_idx(lists, i);
        json_object *id = jget(l, "list_id");
        if (!id || strcmp(json_object_get_string(id), list_id) != 0)
            continue;
        json_object *members = jget(l, "members");
        if (!members || json_object_array_length(members) != n)
            return false;
        const char **got = malloc((n ? n : 1) * sizeof *got);
        for (size_t k = 0; k < n; k++)
            got[k] = json_object_get_string(json_object_array_get_idx(members, k));
        qsort(got, n, sizeof *got, cmp_str);
        qsort(expected, n, sizeof *expected, cmp_str);
        bool same = true;
        for (size_t k = 0; k < n && same; k++)
            same = got[k] && strcasecmp(got[k], expected[k]) == 0;
        free(got);
        return same;
    }
    return false;
}

struct want {
    const char *group;
    const char **emails; /* the exact list expected in ccsim */
    size_t n;
};

/* Says on stderr what each group and ccsim show, for a scenario that broke. */
static void report_unconverged(struct want *w, int n_groups)
{
    fprintf(stderr, "sync_bench: queue pending %lld\n", queue_pending());
    json_object *state = sim_get("/__sim/state");
    for (int g = 0; g < n_groups; g++) {
        char path[256];
        long status;
        snprintf(path, sizeof path, "/v1/associations/" ASSOC "/groups/%s", w[g].group);
        json_object *gs = api_get(path, &status);
        fprintf(stderr, "sync_bench: group %s expects %zu: HTTP %ld %s\n", w[g].group, w[g].n,
                status, gs ? json_object_to_json_string(gs) : "");
        json_object *list = jget(gs, "list");
        json_object *lid = jget(list, "list_id");
        json_object *lists = jget(state, "lists");
        for (size_t i = 0; lid && lists && i < json_object_array_length(lists); i++) {
            json_object *l = json_object_array_get_idx(lists, i);
            if (strcmp(json_object_get_string(jget(l, "list_id")), json_object_get_string(lid)))
                continue;
            json_object *m = jget(l, "members");
            size_t n = m ? json_object_array_length(m) : 0;
            fprintf(stderr, "sync_bench:   ccsim list holds %zu:", n);
            for (size_t k = 0; k < n && k < 8; k++)
                fprintf(stderr, " %s", json_object_get_string(json_object_array_get_idx(m, k)));
            fprintf(stderr, "%s\n", n > 8 ? " ..." : "");
        }
        json_object_put(gs);
    }
    json_object_put(state);
}

/* Polls until every group converged; returns seconds since t0, or -1 after timeout_s. */
static double wait_converged(struct want *w, int n_groups, double t0, double timeout_s)
{
    for (;;) {
        double t = now_s();
        if (t - t0 > timeout_s) {
            report_unconverged(w, n_groups);
            return -1;
        }
        if (queue_pending() != 0) {
            ts_sleep_ms(100);
            continue;
        }
        bool all = true;
        char ids[64][128];
        for (int g = 0; g < n_groups && all; g++)
            all = group_settled(w[g].group, (long long)w[g].n, ids[g], sizeof ids[g]);
        if (all) {
            json_object *state = sim_get("/__sim/state");
            for (int g = 0; g < n_groups && all; g++)
                all = sim_list_exact(state, ids[g], w[g].emails, w[g].n);
            json_object_put(state);
            if (all)
                return t - t0;
        }
        ts_sleep_ms(100);
    }
}

/* ---- counters and the table ---- */

struct counters {
    long long total, throttled, quota, max_per_second;
    json_object *by_endpoint; /* owned */
};

static struct counters read_counters(void)
{
    struct counters c = {0};
    json_object *j = sim_get("/__sim/counters");
    c.total = jint_or_minus1(j, "total");
    c.throttled = jint_or_minus1(j, "throttled");
    c.quota = jint_or_minus1(j, "quota_exceeded");
    c.max_per_second = jint_or_minus1(j, "max_per_second");
    c.by_endpoint = json_object_get(jget(j, "by_endpoint"));
    json_object_put(j);
    return c;
}

/* The counters once ccsim has seen no request for 3 s. */
static struct counters read_counters_quiet(void)
{
    long long last = -1;
    for (;;) {
        struct counters c = read_counters();
        if (c.total == last)
            return c;
        last = c.total;
        json_object_put(c.by_endpoint);
        ts_sleep_ms(3000);
    }
}

/* "POST /v3/contact_lists 1, ..." for the requests in after but not in before. */
static void describe(const char *scenario, json_object *before, json_object *after)
{
    size_t len = strlen(S.breakdown);
    len += (size_t)snprintf(S.breakdown + len, sizeof S.breakdown - len, "- %s:", scenario);
    bool any = false;
    json_object_object_foreach(after, k, v)
    {
        json_object *b = jget(before, k);
        long long n = json_object_get_int64(v) - (b ? json_object_get_int64(b) : 0);
        if (n > 0 && len < sizeof S.breakdown - 200) {
            len += (size_t)snprintf(S.breakdown + len, sizeof S.breakdown - len, "%s %s ×%lld",
                                    any ? "," : "", k, n);
            any = true;
        }
    }
    snprintf(S.breakdown + len, sizeof S.breakdown - len, "%s\n", any ? "" : " none");
}

static void print_header(void)
{
    printf("| scenario | member changes N | CC requests | target ≤ 10+N/500 | naive requests "
           "(1/change) | seconds to converge | naive seconds at 4 req/s | throttled 429 | max "
           "req in any 1 s |\n");
    printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    fflush(stdout);
}

static void print_row(const char *scenario, long n, long long requests, double secs,
                      long long throttled, long long max_per_s)
{
    printf("| %s | %ld | %lld | %ld | %ld | %.1f | %.0f | %lld | %lld |\n", scenario, n, requests,
           10 + n / 500, n, secs, (double)n / CC_RATE, throttled, max_per_s);
    fflush(stdout);
}

/* ---- scenarios ---- */

static void scenario_first(long n, int fields)
{
    char tag[64], group[64], scenario[96];
    S.fields = fields;
    S.chapter = "North";
    snprintf(tag, sizeof tag, "first-%ld-%d", n, fields);
    snprintf(group, sizeof group, "first%ld", n);
    if (fields)
        snprintf(scenario, sizeof scenario, "first sync, %ld members, %d mapped fields", n, fields);
    else
        snprintf(scenario, sizeof scenario, "first sync, %ld members", n);
    stack_start(tag);
    struct counters c0 = read_counters();

    const char **emails = malloc((size_t)n * sizeof *emails);
    for (long i = 0; i < n; i++) {
        char e[128];
        member_email(e, sizeof e, group, (int)i);
        emails[i] = strdup(e);
    }
    struct want w = {group, emails, (size_t)n};
    double t0 = now_s();
    send_group(group, (int)n);
    double secs = wait_converged(&w, 1, t0, S.timeout_s);
    if (secs < 0)
        die("%s: did not converge within %.0f s (logs in %s)", scenario, S.timeout_s, S.log_dir);
    struct counters c = read_counters_quiet();
    print_row(scenario, n, c.total - c0.total, secs, c.throttled, c.max_per_second);
    describe(scenario, c0.by_endpoint, c.by_endpoint);
    json_object_put(c0.by_endpoint);
    json_object_put(c.by_endpoint);
    for (long i = 0; i < n; i++)
        free((void *)emails[i]);
    free(emails);
    stack_stop();
    S.fields = 0;
}

struct burst_job {
    char **types, **datas;
    int from, to;
};

static void *burst_sender(void *arg)
{
    struct burst_job *j = arg;
    for (int i = j->from; i < j->to; i++)
        post_event(j->types[i], j->datas[i]);
    return NULL;
}

/* Waits until the groups of w hold exactly their members; the seconds since t0. */
static double converge_or_die(const char *scenario, struct want *w, int groups, double t0)
{
    double secs = wait_converged(w, groups, t0, S.timeout_s);
    if (secs < 0)
        die("%s: did not converge within %.0f s (logs in %s)", scenario, S.timeout_s, S.log_dir);
    return secs;
}

/* Frees a scenario's n events (types, datas) and the emails of its groups' wants. */
static void free_scenario(char **types, char **datas, long n, struct want *w, int groups)
{
    for (long i = 0; i < n; i++)
        free(datas[i]);
    free(datas);
    free(types);
    for (int g = 0; g < groups; g++) {
        for (size_t i = 0; i < w[g].n; i++)
            free((void *)w[g].emails[i]);
        free(w[g].emails);
    }
}

/* The scenario's row and breakdown: the requests since c0 (freed here). */
static void report_row(const char *scenario, long n, double secs, struct counters *c0)
{
    struct counters c = read_counters_quiet();
    print_row(scenario, n, c.total - c0->total, secs, c.throttled, c.max_per_second);
    describe(scenario, c0->by_endpoint, c.by_endpoint);
    json_object_put(c0->by_endpoint);
    json_object_put(c.by_endpoint);
}

static void scenario_burst(long n, int groups)
{
    char tag[64], scenario[128];
    snprintf(tag, sizeof tag, "burst-%ld", n);
    snprintf(scenario, sizeof scenario, "burst: %ld single-member changes over %d groups", n,
             groups);
    if (groups > 64 || n % (2 * groups) != 0 || n / groups > 2 * BURST_GROUP_SIZE)
        die("burst:%ld:%d: N must split into joins and leaves evenly over ≤ 64 groups", n, groups);
    stack_start(tag);

    /* Set up: G synced groups of 100 members each (not counted). */
    struct want w[64];
    char names[64][32];
    int per = (int)(n / groups); /* changes per group: per/2 leave, per/2 join */
    for (int g = 0; g < groups; g++) {
        snprintf(names[g], sizeof names[g], "burst%d", g);
        w[g].group = names[g];
        w[g].n = BURST_GROUP_SIZE;
        w[g].emails = malloc(BURST_GROUP_SIZE * sizeof *w[g].emails);
        for (int i = 0; i < BURST_GROUP_SIZE; i++) {
            char e[128];
            member_email(e, sizeof e, names[g], i);
            w[g].emails[i] = strdup(e);
        }
        send_group(names[g], BURST_GROUP_SIZE);
    }
    double t_setup = now_s();
    if (wait_converged(w, groups, t_setup, S.timeout_s) < 0)
        die("%s: the set-up did not converge (logs in %s)", scenario, S.log_dir);
    struct counters c0 = read_counters_quiet();

    /* The burst: change i goes to group i % G; the first half of each group's
     * changes are leaves of members m0.., the second half joins of new members. */
    char **types = calloc((size_t)n, sizeof *types), **datas = calloc((size_t)n, sizeof *datas);
    for (long i = 0; i < n; i++) {
        int g = (int)(i % groups), k = (int)(i / groups);
        char uid[64], email[128], groups_json[160], data[1024];
        if (k < per / 2) {
            snprintf(uid, sizeof uid, "%s-m%d", names[g], k);
            member_email(email, sizeof email, names[g], k);
            snprintf(groups_json, sizeof groups_json, ",\"Groups\":[]");
        } else {
            snprintf(uid, sizeof uid, "%s-n%d", names[g], k);
            snprintf(email, sizeof email, "%s.n%d@bench.example.org", names[g], k);
            snprintf(groups_json, sizeof groups_json,
                     ",\"Groups\":[{\"UniqueID\":\"%s\",\"GroupName\":\"Bench %s\"}]", names[g],
                     names[g]);
        }
        member_json(data, sizeof data, uid, email, groups_json);
        types[i] = "customer.updated";
        datas[i] = strdup(data);
    }
    /* Expected after it: members m<per/2>.. stay, the joiners n<per/2>.. are added.
     * (The set-up's arrays were sorted in place: build them again.) */
    for (int g = 0; g < groups; g++) {
        size_t k = 0;
        for (int i = 0; i < BURST_GROUP_SIZE; i++)
            free((void *)w[g].emails[i]);
        for (int i = per / 2; i < BURST_GROUP_SIZE; i++) {
            char e[128];
            member_email(e, sizeof e, names[g], i);
            w[g].emails[k++] = strdup(e);
        }
        for (int i = per / 2; i < per; i++) {
            char e[128];
            snprintf(e, sizeof e, "%.40s.n%d@bench.example.org", names[g], i);
            w[g].emails[k++] = strdup(e);
        }
        w[g].n = k;
    }
    pthread_t th[SENDER_THREADS];
    struct burst_job jobs[SENDER_THREADS];
    double t0 = now_s();
    for (int t = 0; t < SENDER_THREADS; t++) {
        jobs[t] = (struct burst_job){types, datas, (int)(n * t / SENDER_THREADS),
                                     (int)(n * (t + 1) / SENDER_THREADS)};
        pthread_create(&th[t], NULL, burst_sender, &jobs[t]);
    }
    for (int t = 0; t < SENDER_THREADS; t++)
        pthread_join(th[t], NULL);
    double sent = now_s() - t0;
    long long setup = c0.total;
    report_row(scenario, n, converge_or_die(scenario, w, groups, t0), &c0);
    size_t len = strlen(S.breakdown);
    snprintf(S.breakdown + len, sizeof S.breakdown - len,
             "  (the %ld webhooks were sent in %.2f s by %d threads; the set-up of %d groups × %d "
             "members before it took %lld requests, not counted above)\n",
             n, sent, SENDER_THREADS, groups, BURST_GROUP_SIZE, setup);
    free_scenario(types, datas, n, w, groups);
    stack_stop();
}

/* Sends jobs' webhooks at an even pace: webhook i leaves at t0 + i × spacing. */
struct paced_job {
    char **types, **datas;
    int from, to, step;
    double t0, spacing;
};

static void *paced_sender(void *arg)
{
    struct paced_job *j = arg;
    for (int i = j->from; i < j->to; i += j->step) {
        double wait = j->t0 + i * j->spacing - now_s();
        if (wait > 0)
            ts_sleep_ms((long)(wait * 1000));
        post_event(j->types[i], j->datas[i]);
    }
    return NULL;
}

static void scenario_arrive(long n, int groups, double secs)
{
    char tag[64], scenario[128];
    snprintf(tag, sizeof tag, "arrive-%ld", n);
    snprintf(scenario, sizeof scenario, "arriving: %ld joins into %d new groups over %.0f s", n,
             groups, secs);
    if (groups > 64 || n % groups != 0)
        die("arrive:%ld:%d: N must split evenly over ≤ 64 groups", n, groups);
    stack_start(tag);
    struct counters c0 = read_counters();
    struct want w[64];
    char names[64][32];
    long per = n / groups;
    char **types = calloc((size_t)n, sizeof *types), **datas = calloc((size_t)n, sizeof *datas);
    for (int g = 0; g < groups; g++) {
        snprintf(names[g], sizeof names[g], "arrive%d", g);
        w[g] = (struct want){names[g], calloc((size_t)per, sizeof(char *)), 0};
    }
    for (long i = 0; i < n; i++) {
        int g = (int)(i % groups);
        char uid[64], email[128], groups_json[160], data[1024];
        snprintf(uid, sizeof uid, "%s-j%ld", names[g], i);
        snprintf(email, sizeof email, "%s.j%ld@bench.example.org", names[g], i);
        snprintf(groups_json, sizeof groups_json,
                 ",\"Groups\":[{\"UniqueID\":\"%s\",\"GroupName\":\"Bench %s\"}]", names[g],
                 names[g]);
        member_json(data, sizeof data, uid, email, groups_json);
        types[i] = "customer.updated";
        datas[i] = strdup(data);
        w[g].emails[w[g].n++] = strdup(email);
    }
    double t0 = now_s();
    for (int g = 0; g < groups; g++) {
        char on[256];
        snprintf(on, sizeof on,
                 "{\"UniqueID\":\"%.31s\",\"GroupName\":\"Bench %.31s\","
                 "\"SyncToConstantContact\":true}",
                 names[g], names[g]);
        post_event("group.updated", on);
    }
    pthread_t th[SENDER_THREADS];
    struct paced_job jobs[SENDER_THREADS];
    for (int t = 0; t < SENDER_THREADS; t++) {
        jobs[t] = (struct paced_job){types, datas, t, (int)n, SENDER_THREADS, now_s(), secs / n};
        pthread_create(&th[t], NULL, paced_sender, &jobs[t]);
    }
    for (int t = 0; t < SENDER_THREADS; t++)
        pthread_join(th[t], NULL);
    double sent = now_s() - t0;
    report_row(scenario, n, converge_or_die(scenario, w, groups, t0), &c0);
    size_t len = strlen(S.breakdown);
    snprintf(S.breakdown + len, sizeof S.breakdown - len,
             "  (the %d groups were turned on and the %ld joins sent over %.2f s, counted from "
             "the first webhook)\n",
             groups, n, sent);
    free_scenario(types, datas, n, w, groups);
    stack_stop();
}

/* How many of the contacts of emails[0..n) hold chapter in CC's custom field Chapter. */
static long chapters_in_cc(const char *chapter)
{
    json_object *st = sim_get("/__sim/state"), *contacts = jget(st, "contacts");
    long n = 0;
    for (size_t i = 0; i < json_object_array_length(contacts); i++) {
        json_object *v =
            jget(jget(json_object_array_get_idx(contacts, i), "custom_fields"), "Chapter");
        n += v && strcmp(json_object_get_string(v), chapter) == 0;
    }
    json_object_put(st);
    return n;
}

/* groups groups PREFIX0.. of BURST_GROUP_SIZE members each, sent and synced
 * (dies otherwise); w[g] wants them, with room for extra more emails. */
static void synced_groups(const char *scenario, const char *prefix, int groups, int extra,
                          struct want *w, char (*names)[32])
{
    for (int g = 0; g < groups; g++) {
        snprintf(names[g], sizeof names[g], "%s%d", prefix, g);
        w[g].group = names[g];
        w[g].n = BURST_GROUP_SIZE;
        w[g].emails = calloc((size_t)(BURST_GROUP_SIZE + extra), sizeof *w[g].emails);
        for (int i = 0; i < BURST_GROUP_SIZE; i++) {
            char e[128];
            member_email(e, sizeof e, names[g], i);
            w[g].emails[i] = strdup(e);
        }
        send_group(names[g], BURST_GROUP_SIZE);
    }
    if (wait_converged(w, groups, now_s(), S.timeout_s) < 0)
        die("%s: the set-up did not converge (logs in %s)", scenario, S.log_dir);
}

/* G synced groups of 100 members with 2 mapped fields; then N members change their
 * Chapter (staying in their group), N/G in each group. */
static void scenario_fields(long n, int groups)
{
    char tag[64], scenario[128];
    snprintf(tag, sizeof tag, "fields-%ld", n);
    snprintf(scenario, sizeof scenario, "fields: %ld field changes over %d groups", n, groups);
    if (groups > 64 || n % groups != 0 || n / groups > BURST_GROUP_SIZE)
        die("fields:%ld:%d: N must split evenly over ≤ 64 groups, ≤ 100 each", n, groups);
    S.fields = 2;
    S.chapter = "North";
    stack_start(tag);
    struct want w[64];
    char names[64][32];
    synced_groups(scenario, "fields", groups, 0, w, names);
    struct counters c0 = read_counters_quiet();
    S.chapter = "South";
    char **types = calloc((size_t)n, sizeof *types), **datas = calloc((size_t)n, sizeof *datas);
    for (long i = 0; i < n; i++) {
        int g = (int)(i % groups), k = (int)(i / groups);
        char uid[64], email[128], groups_json[160], data[2048];
        snprintf(uid, sizeof uid, "%s-m%d", names[g], k);
        member_email(email, sizeof email, names[g], k);
        snprintf(groups_json, sizeof groups_json,
                 ",\"Groups\":[{\"UniqueID\":\"%s\",\"GroupName\":\"Bench %s\"}]", names[g],
                 names[g]);
        member_json(data, sizeof data, uid, email, groups_json);
        types[i] = "customer.updated";
        datas[i] = strdup(data);
    }
    pthread_t th[SENDER_THREADS];
    struct burst_job jobs[SENDER_THREADS];
    double t0 = now_s();
    for (int t = 0; t < SENDER_THREADS; t++) {
        jobs[t] = (struct burst_job){types, datas, (int)(n * t / SENDER_THREADS),
                                     (int)(n * (t + 1) / SENDER_THREADS)};
        pthread_create(&th[t], NULL, burst_sender, &jobs[t]);
    }
    for (int t = 0; t < SENDER_THREADS; t++)
        pthread_join(th[t], NULL);
    /* the sets were sorted in place by the set-up's check: still the same members */
    double secs = converge_or_die(scenario, w, groups, t0);
    long changed = chapters_in_cc("South");
    if (changed != n)
        die("%s: %ld contacts hold the new value in CC, not %ld (logs in %s)", scenario, changed, n,
            S.log_dir);
    report_row(scenario, n, secs, &c0);
    free_scenario(types, datas, n, w, groups);
    stack_stop();
    S.fields = 0;
}

/* Waits until no association's activity check is due any more (KEY_ACTS_DUE
 * empty): the deferred checks are then counted too. */
static void wait_no_check_due(void)
{
    redisContext *c = redisConnect("127.0.0.1", S.redis_port);
    for (int i = 0; c && !c->err && i < 600; i++) {
        redisReply *r = redisCommand(c, "ZCARD %s", KEY_ACTS_DUE);
        bool none = r && r->type == REDIS_REPLY_INTEGER && r->integer == 0;
        freeReplyObject(r);
        if (none)
            break;
        ts_sleep_ms(100);
    }
    if (c)
        redisFree(c);
}

/* G synced groups of 100 members on a day of `limit`; then W waves 2 s apart,
 * each one join into every group. */
static void scenario_waves(int waves, int groups, long limit)
{
    char tag[64], scenario[160];
    snprintf(tag, sizeof tag, "waves-%d", waves);
    snprintf(scenario, sizeof scenario,
             "waves: %d rounds 2 s apart, one join into each of %d groups, on a day of %ld", waves,
             groups, limit);
    if (groups > 64 || waves < 1)
        die("waves:%d:%d:%ld: at most 64 groups", waves, groups, limit);
    S.daily_limit = limit;
    stack_start(tag);
    struct want w[64];
    char names[64][32];
    synced_groups(scenario, "waves", groups, waves, w, names);
    struct counters c0 = read_counters_quiet();
    double t0 = now_s();
    for (int k = 0; k < waves; k++) {
        double wait = t0 + 2.0 * k - now_s();
        if (wait > 0)
            ts_sleep_ms((long)(wait * 1000));
        for (int g = 0; g < groups; g++) {
            char uid[64], email[128], groups_json[160], data[1024];
            snprintf(uid, sizeof uid, "%.31s-w%d", names[g], k);
            snprintf(email, sizeof email, "%.31s.w%d@bench.example.org", names[g], k);
            snprintf(groups_json, sizeof groups_json,
                     ",\"Groups\":[{\"UniqueID\":\"%.31s\",\"GroupName\":\"Bench %.31s\"}]",
                     names[g], names[g]);
            member_json(data, sizeof data, uid, email, groups_json);
            post_event("customer.updated", data);
            w[g].emails[w[g].n++] = strdup(email);
        }
    }
    double secs = converge_or_die(scenario, w, groups, t0);
    wait_no_check_due();
    report_row(scenario, (long)waves * groups, secs, &c0);
    for (int g = 0; g < groups; g++) {
        for (size_t i = 0; i < w[g].n; i++)
            free((void *)w[g].emails[i]);
        free(w[g].emails);
    }
    stack_stop();
    S.daily_limit = 0;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr,
                "usage: %s CCSYNCD CCSIM LOG_DIR first:N|burst:N:G|arrive:N:G:S|waves:W:G:L ...\n",
                argv[0]);
        return 2;
    }
    S.ccsyncd_bin = argv[1];
    S.ccsim_bin = argv[2];
    S.log_dir = argv[3];
    const char *t = getenv("SYNC_BENCH_TIMEOUT");
    S.timeout_s = t && atof(t) > 0 ? atof(t) : 240;
    mkdir(S.log_dir, 0755);
    signal(SIGPIPE, SIG_IGN);
    print_header();
    for (int i = 4; i < argc; i++) {
        long n;
        int g;
        int f = 0;
        double secs;
        long limit;
        if (sscanf(argv[i], "arrive:%ld:%d:%lf", &n, &g, &secs) == 3 && n > 0 && g > 0 && secs > 0)
            scenario_arrive(n, g, secs);
        else if (sscanf(argv[i], "waves:%ld:%d:%ld", &n, &g, &limit) == 3 && n > 0 && g > 0 &&
                 limit > 0)
            scenario_waves((int)n, g, limit);
        else if (sscanf(argv[i], "first:%ld:%d", &n, &f) == 2 && n > 0 && f > 0 &&
                 f <= FIELD_MAP_MAX)
            scenario_first(n, f);
        else if (sscanf(argv[i], "first:%ld", &n) == 1 && n > 0)
            scenario_first(n, 0);
        else if (sscanf(argv[i], "fields:%ld:%d", &n, &g) == 2 && n > 0 && g > 0)
            scenario_fields(n, g);
        else if (sscanf(argv[i], "burst:%ld:%d", &n, &g) == 2 && n > 0 && g > 0)
            scenario_burst(n, g);
        else
            die("unknown scenario %s", argv[i]);
    }
    printf("\nCC requests by endpoint:\n%s", S.breakdown);
    return 0;
}
