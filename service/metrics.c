/*
 * metrics.c - the process's counters, gauges and histograms, and their
 * Prometheus text rendering.
 *
 * Global mutable state lives here on purpose (with main.c, the only place): one table guarded by
 * one mutex. Series are few (routes x statuses, outcomes, CC endpoints), so an
 * open-addressing table of fixed size is enough.
 */
#include "ccsync/metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define METRICS_MAX_SERIES 1024
#define METRICS_BUCKETS 12

enum metric_kind { KIND_COUNTER = 0, KIND_GAUGE, KIND_HISTOGRAM };

struct series {
    char name[64];
    char labels[192];
    enum metric_kind kind;
    double value; /* counter/gauge value; histogram sum */
    unsigned long long count;
    unsigned long long buckets[METRICS_BUCKETS];
};

/* Upper bounds in seconds: request and CC call latencies. */
static const double bucket_bounds[METRICS_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                      0.05,   0.1,   0.25,   0.5,   1,    2.5};

static const struct {
    const char *name;
    const char *help;
} metric_help[] = {
    {"ccsync_http_requests_total", "HTTP requests answered, by route and status."},
    {"ccsync_http_request_duration_seconds", "Time from request start to answer, by route."},
    {"ccsync_webhooks_total",
     "Novi webhooks by outcome (queued, duplicate, ignored, or why refused)."},
    {"ccsync_redis_errors_total", "Redis commands or connections that failed, by where."},
    {"ccsync_queue_depth", "Entries in the event stream not yet acknowledged, by state."},
    {"ccsync_queue_associations_ready",
     "Associations in line for a worker: their streams hold events not yet read."},
    {"ccsync_ingest_batch_size", "Webhooks enqueued per pipelined Redis round trip."},
    {"ccsync_cc_requests_total",
     "Constant Contact requests, by operation, outcome and budget class."},
    {"ccsync_events_processed_total", "Events folded into state by the workers, by outcome."},
    {"ccsync_syncs_total", "Group syncs run, by outcome."},
    {"ccsync_leases_lost_total", "Leases the heartbeat found taken over or expired."},
    {"ccsync_fenced_writes_total",
     "Writes of a sync Redis refused: the group lease was another's."},
    {"ccsync_groups",
     "Groups of every association by state and error code (\"\" without one), read from Redis "
     "at scrape time: the same in every process."},
    {"ccsync_cc_budget_used_today", "Constant Contact requests granted today (UTC), by class."},
    {"ccsync_cc_budget_projected_today",
     "Today's requests projected to midnight UTC: used + recent rate x time left."},
    {"ccsync_cc_budget_daily_limit", "CCSYNC_CC_DAILY_LIMIT: requests a UTC day, shared."},
};

static pthread_mutex_t metrics_lock = PTHREAD_MUTEX_INITIALIZER;
static struct series table[METRICS_MAX_SERIES];
static size_t used;

static unsigned long hash(const char *a, const char *b)
{
    unsigned long h = 5381;
    for (; *a; a++)
        h = h * 33 + (unsigned char)*a;
    h = h * 33 + '|';
    for (; *b; b++)
        h = h * 33 + (unsigned char)*b;
    return h;
}

/* Called with metrics_lock held. Returns NULL when the table is full. */
static struct series *find(const char *name, const char *labels, enum metric_kind kind)
{
    if (!labels)
        labels = "";
    unsigned long i = hash(name, labels) % METRICS_MAX_SERIES;
    for (size_t probes = 0; probes < METRICS_MAX_SERIES; probes++) {
        struct series *s = &table[i];
        if (s->name[0] == '\0') {
            if (used >= METRICS_MAX_SERIES * 3 / 4)
                return NULL;
            snprintf(s->name, sizeof s->name, "%s", name);
            snprintf(s->labels, sizeof s->labels, "%s", labels);
            s->kind = kind;
            used++;
            return s;
        }
        if (strcmp(s->name, name) == 0 && strcmp(s->labels, labels) == 0)
            return s;
        i = (i + 1) % METRICS_MAX_SERIES;
    }
    return NULL;
}

void metrics_add(const char *name, const char *labels, double delta)
{
    pthread_mutex_lock(&metrics_lock);
    struct series *s = find(name, labels, KIND_COUNTER);
    if (s)
        s->value += delta;
    pthread_mutex_unlock(&metrics_lock);
}

void metrics_inc(const char *name, const char *labels)
{
    metrics_add(name, labels, 1);
}

void metrics_set(const char *name, const char *labels, double value)
{
    pthread_mutex_lock(&metrics_lock);
    struct series *s = find(name, labels, KIND_GAUGE);
    if (s)
        s->value = value;
    pthread_mutex_unlock(&metrics_lock);
}

void metrics_set_all(const char *name, size_t n, const char *const *labels, const double *values)
{
    pthread_mutex_lock(&metrics_lock);
    for (size_t i = 0; i < METRICS_MAX_SERIES; i++)
        if (table[i].kind == KIND_GAUGE && strcmp(table[i].name, name) == 0)
            table[i].value = 0; /* a series that is gone reads 0 rather than its last value */
    for (size_t i = 0; i < n; i++) {
        struct series *s = find(name, labels[i], KIND_GAUGE);
        if (s)
            s->value = values[i];
    }
    pthread_mutex_unlock(&metrics_lock);
}

void metrics_observe(const char *name, const char *labels, double value)
{
    pthread_mutex_lock(&metrics_lock);
    struct series *s = find(name, labels, KIND_HISTOGRAM);
    if (s) {
        s->value += value;
        s->count++;
        for (int b = 0; b < METRICS_BUCKETS; b++)
            if (value <= bucket_bounds[b])
                s->buckets[b]++;
    }
    pthread_mutex_unlock(&metrics_lock);
}

double metrics_get(const char *name, const char *labels)
{
    double v = 0;
    pthread_mutex_lock(&metrics_lock);
    struct series *s = find(name, labels, KIND_COUNTER);
    if (s)
        v = s->kind == KIND_HISTOGRAM ? (double)s->count : s->value;
    pthread_mutex_unlock(&metrics_lock);
    return v;
}

void metrics_reset(void)
{
    pthread_mutex_lock(&metrics_lock);
    memset(table, 0, sizeof table);
    used = 0;
    pthread_mutex_unlock(&metrics_lock);
}

static int by_name_then_labels(const void *a, const void *b)
{
    const struct series *x = *(const struct series *const *)a,
                        *y = *(const struct series *const *)b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->labels, y->labels);
}

static const char *help_for(const char *name)
{
    for (size_t i = 0; i < sizeof metric_help / sizeof metric_help[0]; i++)
        if (strcmp(metric_help[i].name, name) == 0)
            return metric_help[i].help;
    return name;
}

static void labels_with(char *out, size_t size, const char *labels, const char *extra)
{
    if (*labels && *extra)
        snprintf(out, size, "{%s,%s}", labels, extra);
    else if (*labels || *extra)
        snprintf(out, size, "{%s}", *labels ? labels : extra);
    else
        out[0] = '\0';
}

/* One series in the exposition format; a histogram as its buckets, sum and count. */
static void render_series(FILE *f, const struct series *s)
{
    char lb[256], extra[48];
    if (s->kind != KIND_HISTOGRAM) {
        labels_with(lb, sizeof lb, s->labels, "");
        fprintf(f, "%s%s %.17g\n", s->name, lb, s->value);
        return;
    }
    for (int b = 0; b < METRICS_BUCKETS; b++) {
        snprintf(extra, sizeof extra, "le=\"%g\"", bucket_bounds[b]);
        labels_with(lb, sizeof lb, s->labels, extra);
        fprintf(f, "%s_bucket%s %llu\n", s->name, lb, s->buckets[b]);
    }
    labels_with(lb, sizeof lb, s->labels, "le=\"+Inf\"");
    fprintf(f, "%s_bucket%s %llu\n", s->name, lb, s->count);
    labels_with(lb, sizeof lb, s->labels, "");
    fprintf(f, "%s_sum%s %.17g\n%s_count%s %llu\n", s->name, lb, s->value, s->name, lb, s->count);
}

/* The n series of order, sorted, each name's HELP and TYPE before its first. */
static void render_all(FILE *f, struct series **order, size_t n)
{
    static const char *kinds[] = {"counter", "gauge", "histogram"};
    const char *last = "";
    for (size_t i = 0; i < n; i++) {
        const struct series *s = order[i];
        if (strcmp(last, s->name) != 0) {
            fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", s->name, help_for(s->name), s->name,
                    kinds[s->kind]);
            last = s->name;
        }
        render_series(f, s);
    }
}

int metrics_render(char **out, size_t *out_len)
{
    /* A copy of the table, so the lock is not held while the text is written. */
    struct series *snapshot = malloc(sizeof table);
    struct series **order = malloc(sizeof(struct series *) * METRICS_MAX_SERIES);
    char *text = NULL;
    size_t len = 0;
    FILE *f = snapshot && order ? open_memstream(&text, &len) : NULL;
    if (!f) {
        free(snapshot);
        free(order);
        return -1;
    }
    pthread_mutex_lock(&metrics_lock);
    memcpy(snapshot, table, sizeof table);
    pthread_mutex_unlock(&metrics_lock);

    size_t n = 0;
    for (size_t i = 0; i < METRICS_MAX_SERIES; i++)
        if (snapshot[i].name[0])
            order[n++] = &snapshot[i];
    qsort(order, n, sizeof order[0], by_name_then_labels);
    render_all(f, order, n);
    fclose(f);
    free(snapshot);
    free(order);
    *out = text;
    *out_len = len;
    return 0;
}
