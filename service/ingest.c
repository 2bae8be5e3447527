/*
 * ingest.c - the webhook endpoint and the durable enqueue behind it.
 *
 * A webhook is answered 2xx only after Redis has accepted it. To keep up with
 * the HTTP server, requests do not each wait for their own round trip: they are
 * suspended and handed to one pipeline thread, which sends every waiting job
 * on one connection as pipelined EVALSHA calls and answers each request when its
 * own reply arrives. Each call runs one script that sets the dedup key and
 * appends to the stream together, so an event is queued at most once per
 * webhook-id and never half-written. When Redis fails mid-batch the requests
 * without a reply get 503: the sender retries, and the dedup key then tells
 * whether the first attempt had landed (200 duplicate) or not (202 queued).
 * A body over CCSYNC_ENQUEUE_CHUNK_BYTES goes another way, in chunks and by
 * reference (staged.h), so that no one command carries it whole.
 * Each association has its own stream; after a batch's scripts one ZADD puts
 * their associations in the workers' line (queue.h), on the same connection,
 * so it always follows the XADDs it announces.
 */
#include "ccsync/ingest.h"

#include <hiredis/hiredis.h>
#include <json-c/json.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ccsync/app.h"
#include "ccsync/http.h"
#include "ccsync/keys.h"
#include "ccsync/log.h"
#include "ccsync/metrics.h"
#include "ccsync/model.h"
#include "ccsync/queue.h"
#include "ccsync/staged.h"
#include "ccsync/store.h"
#include "ccsync/webhook.h"

#define BATCH_MAX 1024
#define GROUP_SLOTS (2 * BATCH_MAX) /* the batch's associations, hashed (group_jobs) */
/* Pipeline threads: in replica mode two, so that one batch is sent while the
 * other waits for its replica (WAIT blocks its connection); else one. */
#define PIPES_MAX 2
#define CONNECT_TIMEOUT_MS 1000
#define RECONNECT_PAUSE_NS (250 * 1000000LL)
#define SECRET_CACHE_SLOTS 256
#define SECRET_CACHE_TTL_NS (10 * 1000000000LL)
#define SECRET_RECHECK_NS (1000000000LL)
#define WEBHOOK_ID_MAX 128
/* Unknown associations remembered, so that probing costs no Redis round trip. */
#define MISS_CACHE_SLOTS 1024
#define MISS_CACHE_TTL_NS (10 * 1000000000LL)
/* Per-association webhook buckets (CCSYNC_INGEST_RATE, CCSYNC_INGEST_BURST). */
#define BUCKET_SLOTS 4096

/* One call per association and batch: KEYS[1] the association's stream
 * (key_events), KEYS[2..n+1] the events' dedup keys; ARGV[1] ttl, ARGV[2]
 * assoc, then id, type, ts and body of each event. Answers one element per
 * event: its stream entry id, or nil for a webhook-id already seen (an earlier
 * event of the same call too). All keys are the association's: the line of
 * associations with events (KEY_EVENTS_READY, global) is written after it by
 * a plain command (queue_append_ready).
 * SET NX both tests and takes the webhook-id; a script's writes are not undone
 * when a later command fails, so when the XADD fails its dedup key is deleted
 * again before the error is answered: the sender's retry of an event that never
 * reached the stream must not be called a duplicate. Events before it in the
 * call are stored (their retry is a duplicate), those after it are not. */
const char ingest_enqueue_script[] =
    "local out = {}\n"
    "for i = 2, #KEYS do\n"
    "  local a = 3 + (i - 2) * 4\n"
    "  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[1]) then\n"
    "    local id = redis.pcall('XADD', KEYS[1], '*', 'assoc', ARGV[2], 'id', ARGV[a], "
    "'type', ARGV[a + 1], 'ts', ARGV[a + 2], 'body', ARGV[a + 3])\n"
    "    if type(id) == 'table' and id.err then\n"
    "      redis.call('DEL', KEYS[i])\n"
    "      return id\n"
    "    end\n"
    "    out[i - 1] = id\n"
    "  else\n"
    "    out[i - 1] = false\n"
    "  end\n"
    "end\n"
    "return out\n";

struct secret_entry {
    char association[CCSYNC_ASSOC_ID_MAX + 1];
    char secret[256];
    int64_t fetched_ns;
};

struct large_job;

struct miss_entry {
    char association[CCSYNC_ASSOC_ID_MAX + 1];
    int64_t seen_ns;
};

/* An association's webhook allowance: a token bucket refilled at the rate. */
struct bucket {
    char association[CCSYNC_ASSOC_ID_MAX + 1];
    double tokens;
    int64_t at_ns;
};

/* ---- a batch's commands in the Redis protocol ---- */

/* Built here and handed to hiredis in one piece: hiredis' own formatting (an
 * sds grown argument by argument, each length printed by a format string) cost
 * the pipeline thread more than the rest of its work for a webhook. */
struct resp_buf {
    char *s;
    size_t len, cap;
    bool failed; /* out of memory: the batch cannot be sent */
};

/* A batch's events of one association, in the order they came: one script
 * call. A body of RESP_COPY_MAX or more has a call of its own, handed to
 * hiredis as it is rather than copied into the batch's buffer. */
struct job_group {
    const char *association;
    struct ingest_job *head, *tail;
    int n;
    bool alone;
};

struct ingest;

/* A pipeline thread and what only it touches: its connection and its batch. */
struct pipe {
    struct ingest *in;
    pthread_t thread;
    bool started;
    redisContext *ctx;
    char sha[41];
    int64_t last_connect_failure_ns;
    int ready_appended;   /* the batch's ZADD of KEY_EVENTS_READY is in the pipeline */
    struct resp_buf resp; /* the batch being built */
    struct job_group groups[BATCH_MAX]; /* the batch by association (group_jobs) */
    int ngroups;
    uint16_t group_slot[GROUP_SLOTS]; /* 1 + index in groups; 0 free */
};

struct ingest {
    struct redis_target target;
    pthread_mutex_t lock; /* guards head, tail, stopping, stopped */
    pthread_cond_t wake;
    struct ingest_job *head, *tail;
    bool stopping;
    bool stopped; /* the threads are gone: a job submitted now is answered at once */
    /* large bodies waiting for the validation thread (also under lock) */
    struct large_job *large_head, *large_tail;
    pthread_cond_t large_wake;
    bool large_stopping, validator_running;
    pthread_t validator;
    struct pipe pipes[PIPES_MAX];
    int npipes;
    int replica_wait_ms; /* replica mode: WAIT 1 this long after each batch; 0 off */
    /* webhook secrets, read by every HTTP thread */
    pthread_mutex_t cache_lock; /* guards cache and misses */
    struct secret_entry cache[SECRET_CACHE_SLOTS];
    struct miss_entry misses[MISS_CACHE_SLOTS];
    pthread_mutex_t bucket_lock;
    struct bucket buckets[BUCKET_SLOTS];
};

static void *validator_main(void *arg);

static void finish(struct ingest_job *job, enum ingest_result result)
{
    job->result = result;
    job->done(job, job->arg);
}

/* snprintf(out, size, "%s", s) without the format machinery, which the hot
 * path paid for several times a webhook. size > 0. */
static void text_copy(char *out, size_t size, const char *s)
{
    size_t n = strnlen(s, size - 1);
    memcpy(out, s, n);
    out[n] = '\0';
}

static bool pipeline_connect(struct pipe *p)
{
    int64_t now = store_now_ns();
    if (now - p->last_connect_failure_ns < RECONNECT_PAUSE_NS)
        return false;
    char err[256];
    p->ctx = store_connect(&p->in->target, CONNECT_TIMEOUT_MS, err, sizeof err);
    if (p->ctx) {
        redisReply *r = redisCommand(p->ctx, "SCRIPT LOAD %s", ingest_enqueue_script);
        if (store_reply_ok(p->ctx, r) && r->type == REDIS_REPLY_STRING && r->len == 40) {
            memcpy(p->sha, r->str, 41);
            freeReplyObject(r);
            log_info("ingest_connected", LOG_STR("redis", p->in->target.host),
                     LOG_INT("port", p->in->target.port));
            return true;
        }
        snprintf(err, sizeof err, "SCRIPT LOAD failed");
        freeReplyObject(r);
        redisFree(p->ctx);
        p->ctx = NULL;
    }
    p->last_connect_failure_ns = now;
    metrics_inc("ccsync_redis_errors_total", "where=\"ingest\"");
    log_warn("ingest_redis_unavailable", LOG_STR("error", err));
    return false;
}

static void drop_connection(struct pipe *p, const char *why)
{
    log_warn("ingest_redis_failed", LOG_STR("error", why));
    metrics_inc("ccsync_redis_errors_total", "where=\"ingest\"");
    redisFree(p->ctx);
    p->ctx = NULL;
}

/* Appends the ZADD that puts the batch's associations (p->groups) in the
 * workers' line, after their scripts (a duplicate's too: harmless). Returns
 * the commands appended (0 or 1). */
static int append_ready(struct pipe *p)
{
    const char *associations[BATCH_MAX];
    for (int g = 0; g < p->ngroups; g++)
        associations[g] = p->groups[g].association;
    return queue_append_ready(p->ctx, associations, (size_t)p->ngroups, store_now_ns() / 1000);
}

/* A buffer this large is not kept for the next batch. */
#define RESP_KEEP_MAX (1024 * 1024)
/* A body this large goes to hiredis as it is rather than through the buffer. */
#define RESP_COPY_MAX (64 * 1024)

static bool resp_reserve(struct resp_buf *b, size_t n)
{
    if (b->failed)
        return false;
    if (b->len + n <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 16384;
    while (cap < b->len + n)
        cap *= 2;
    char *grown = realloc(b->s, cap);
    if (!grown) {
        b->failed = true;
        return false;
    }
    b->s = grown;
    b->cap = cap;
    return true;
}

/* "*N\r\n" (kind '*') or "$N\r\n" (kind '$'). */
static void resp_header(struct resp_buf *b, char kind, size_t n)
{
    char digits[24];
    size_t d = 0;
    do {
        digits[d++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    if (!resp_reserve(b, d + 3))
        return;
    b->s[b->len++] = kind;
    while (d)
        b->s[b->len++] = digits[--d];
    b->s[b->len++] = '\r';
    b->s[b->len++] = '\n';
}

/* Hands the batch to hiredis' output buffer; false when it could not be built. */
static bool resp_flush(struct pipe *p)
{
    struct resp_buf *b = &p->resp;
    bool ok = !b->failed &&
              (b->len == 0 || redisAppendFormattedCommand(p->ctx, b->s, b->len) == REDIS_OK);
    b->len = 0;
    b->failed = false;
    if (b->cap > RESP_KEEP_MAX) {
        free(b->s);
        *b = (struct resp_buf){0};
    }
    return ok;
}

static unsigned long id_hash(const char *association);

/* "$N\r\nARG\r\n". */
static void resp_arg(struct resp_buf *b, const char *s, size_t len)
{
    resp_header(b, '$', len);
    if (!resp_reserve(b, len + 2))
        return;
    memcpy(b->s + b->len, s, len);
    b->len += len;
    b->s[b->len++] = '\r';
    b->s[b->len++] = '\n';
}

static void resp_text(struct resp_buf *b, const char *s)
{
    resp_arg(b, s, strlen(s));
}

/* Sorts the jobs into p->groups by association (p->ngroups), keeping each
 * association's order. */
static void group_jobs(struct pipe *p, struct ingest_job *jobs)
{
    p->ngroups = 0;
    memset(p->group_slot, 0, sizeof p->group_slot);
    for (struct ingest_job *j = jobs, *next; j; j = next) {
        next = j->next;
        j->next = NULL;
        struct job_group *g = NULL;
        if (j->body_len < RESP_COPY_MAX) {
            size_t h = id_hash(j->association_id) % GROUP_SLOTS;
            while (p->group_slot[h] &&
                   strcmp(p->groups[p->group_slot[h] - 1].association, j->association_id) != 0)
                h = (h + 1) % GROUP_SLOTS;
            if (p->group_slot[h]) {
                g = &p->groups[p->group_slot[h] - 1];
            } else {
                g = &p->groups[p->ngroups++];
                *g = (struct job_group){.association = j->association_id};
                p->group_slot[h] = (uint16_t)p->ngroups;
            }
        } else {
            g = &p->groups[p->ngroups++];
            *g = (struct job_group){.association = j->association_id, .alone = true};
        }
        if (g->tail)
            g->tail->next = j;
        else
            g->head = j;
        g->tail = j;
        g->n++;
    }
}

/* The group's script call, in the batch's buffer (a large body: through hiredis). */
static bool append_group(struct pipe *p, const struct job_group *g)
{
    char ttl[16], numkeys[16];
    struct key stream = key_events(g->association);
    log_int_text(INGEST_DEDUP_TTL_SECONDS, ttl);
    log_int_text(1 + g->n, numkeys);
    if (g->alone) {
        struct ingest_job *j = g->head;
        char ts[32];
        struct key dedup = key_dedup(j->association_id, j->webhook_id);
        log_int_text(j->ts_ns, ts);
        const char *argv[] = {"EVALSHA",         p->sha,        "2",     stream.s, dedup.s, ttl,
                              j->association_id, j->webhook_id, j->type, ts,       j->body};
        size_t lens[11];
        for (int i = 0; i < 11; i++)
            lens[i] = strlen(argv[i]);
        lens[10] = j->body_len;
        return resp_flush(p) && redisAppendCommandArgv(p->ctx, 11, argv, lens) == REDIS_OK;
    }
    struct resp_buf *b = &p->resp;
    resp_header(b, '*', (size_t)(3 + 1 + g->n + 2 + 4 * g->n));
    resp_text(b, "EVALSHA");
    resp_text(b, p->sha);
    resp_text(b, numkeys);
    resp_text(b, stream.s);
    for (struct ingest_job *j = g->head; j; j = j->next) {
        struct key dedup = key_dedup(j->association_id, j->webhook_id);
        resp_text(b, dedup.s);
    }
    resp_text(b, ttl);
    resp_text(b, g->association);
    for (struct ingest_job *j = g->head; j; j = j->next) {
        char ts[32];
        log_int_text(j->ts_ns, ts);
        resp_text(b, j->webhook_id);
        resp_text(b, j->type);
        resp_text(b, ts);
        resp_arg(b, j->body, j->body_len);
    }
    return !b->failed;
}

/* Appends one enqueue script call per association (p->groups), the ZADD of
 * their associations (p->ready_appended) and, in replica mode, one WAIT for
 * the whole batch; false when the batch could not be built whole. */
static bool append_batch(struct pipe *p, struct ingest_job *jobs)
{
    size_t n = 0;
    p->ready_appended = 0;
    group_jobs(p, jobs);
    for (int g = 0; g < p->ngroups; g++) {
        if (!append_group(p, &p->groups[g]))
            return false;
        n += (size_t)p->groups[g].n;
    }
    if (!resp_flush(p))
        return false;
    p->ready_appended = append_ready(p); /* after the scripts it announces */
    if (p->in->replica_wait_ms > 0)
        redisAppendCommand(p->ctx, "WAIT 1 %d", p->in->replica_wait_ms);
    metrics_inc("ccsync_ingest_batches_total", "");
    metrics_add("ccsync_ingest_jobs_total", "", (double)n);
    return true;
}

/* Sets each of the group's jobs' result from the group's reply (NULL: none came);
 * true when Redis had lost the script (NOSCRIPT): the group is to be sent again. */
static bool group_outcome(struct pipe *p, struct job_group *g, redisReply *r)
{
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == (size_t)g->n) {
        size_t i = 0;
        for (struct ingest_job *j = g->head; j; j = j->next, i++) {
            redisReply *e = r->element[i];
            if (e->type == REDIS_REPLY_STRING) {
                text_copy(j->entry_id, sizeof j->entry_id, e->str);
                j->result = INGEST_QUEUED;
            } else {
                j->result = e->type == REDIS_REPLY_NIL ? INGEST_DUPLICATE : INGEST_UNAVAILABLE;
            }
        }
        return false;
    }
    if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0)
        return true;
    if (r) {
        log_error("ingest_enqueue_failed",
                  LOG_STR("error", r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply"));
        metrics_inc("ccsync_redis_errors_total", "where=\"ingest\"");
        if (store_reply_moved(p->ctx, r))
            drop_connection(p, p->ctx->errstr); /* a demoted primary: find the new one */
    }
    for (struct ingest_job *j = g->head; j; j = j->next)
        j->result = INGEST_UNAVAILABLE;
    return false;
}

/* Reads the reply to the batch's ZADD (append_ready). Its events are stored
 * whatever it says: when it failed, the sweep puts their associations in line. */
static void ready_reply(struct pipe *p)
{
    redisReply *r = NULL;
    int appended = p->ready_appended;
    p->ready_appended = 0;
    if (!appended || !p->ctx)
        return;
    if (redisGetReply(p->ctx, (void **)&r) != REDIS_OK || !r) {
        drop_connection(p, p->ctx->errstr);
        return;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        log_warn("ingest_ready_failed", LOG_STR("error", r->str));
        metrics_inc("ccsync_redis_errors_total", "where=\"ingest\"");
    }
    if (store_reply_moved(p->ctx, r))
        drop_connection(p, p->ctx->errstr); /* a demoted primary: find the new one */
    freeReplyObject(r);
}

/* Replica mode: did a replica confirm the batch? A batch no replica confirmed
 * is answered 503; Novi's retry is then deduplicated if the write survived. */
static bool batch_replicated(struct pipe *p)
{
    if (p->in->replica_wait_ms <= 0)
        return true;
    redisReply *r = NULL;
    if (!p->ctx || redisGetReply(p->ctx, (void **)&r) != REDIS_OK || !r) {
        if (p->ctx)
            drop_connection(p, p->ctx->errstr);
        return false;
    }
    bool ok = r->type == REDIS_REPLY_INTEGER && r->integer >= 1;
    if (!ok)
        metrics_inc("ccsync_ingest_unreplicated_batches_total", "");
    freeReplyObject(r);
    return ok;
}

/* Sends jobs as one pipeline and answers them; returns the jobs that met
 * NOSCRIPT (to retry once). */
static struct ingest_job *send_batch(struct pipe *p, struct ingest_job *jobs)
{
    struct ingest_job *retry = NULL, **retry_tail = &retry, *done = NULL, **done_tail = &done;
    if (!p->ctx && !pipeline_connect(p)) {
        for (struct ingest_job *next; jobs; jobs = next) {
            next = jobs->next;
            finish(jobs, INGEST_UNAVAILABLE);
        }
        return NULL;
    }
    if (!append_batch(p, jobs)) {
        /* Part of the batch may be in hiredis' buffer: never sent, with its connection. */
        drop_connection(p, "out of memory building a batch");
        for (int g = 0; g < p->ngroups; g++)
            for (struct ingest_job *j = p->groups[g].head, *next; j; j = next) {
                next = j->next;
                finish(j, INGEST_UNAVAILABLE);
            }
        return NULL;
    }
    for (int g = 0; g < p->ngroups; g++) {
        struct job_group *grp = &p->groups[g];
        redisReply *r = NULL;
        if (p->ctx && redisGetReply(p->ctx, (void **)&r) != REDIS_OK)
            r = NULL;
        if (!r && p->ctx)
            drop_connection(p, p->ctx->errstr);
        bool again = group_outcome(p, grp, r);
        freeReplyObject(r);
        for (struct ingest_job *j = grp->head, *next; j; j = next) {
            next = j->next;
            j->next = NULL;
            if (again) {
                *retry_tail = j;
                retry_tail = &j->next;
            } else {
                *done_tail = j;
                done_tail = &j->next;
            }
        }
    }
    ready_reply(p);
    bool replicated = batch_replicated(p);
    for (struct ingest_job *j = done, *next; j; j = next) {
        next = j->next;
        /* A duplicate is unconfirmed too: its dedup key may exist only on this
         * primary, if the first try was answered 503 for want of a replica. */
        finish(j, j->result != INGEST_UNAVAILABLE && !replicated ? INGEST_UNAVAILABLE : j->result);
    }
    return retry;
}

static void *pipeline_main(void *arg)
{
    struct pipe *p = arg;
    struct ingest *in = p->in;
    for (;;) {
        pthread_mutex_lock(&in->lock);
        while (!in->head && !in->stopping)
            pthread_cond_wait(&in->wake, &in->lock);
        struct ingest_job *jobs = in->head, *last = NULL;
        size_t n = 0;
        for (struct ingest_job *j = jobs; j && n < BATCH_MAX; j = j->next, n++)
            last = j;
        if (last) {
            in->head = last->next;
            if (!in->head)
                in->tail = NULL;
            last->next = NULL;
        }
        bool stop = in->stopping && !jobs;
        pthread_mutex_unlock(&in->lock);
        if (stop)
            break;
        struct ingest_job *retry = send_batch(p, jobs);
        if (retry) {
            /* Redis lost its scripts (restart, SCRIPT FLUSH): load again, resend once. */
            if (p->ctx) {
                redisFree(p->ctx);
                p->ctx = NULL;
            }
            p->last_connect_failure_ns = 0;
            retry = send_batch(p, retry);
            while (retry) {
                struct ingest_job *next = retry->next;
                finish(retry, INGEST_UNAVAILABLE);
                retry = next;
            }
        }
    }
    if (p->ctx)
        redisFree(p->ctx);
    free(p->resp.s);
    return NULL;
}

struct ingest *ingest_new(const struct redis_target *t, int replica_wait_ms)
{
    struct ingest *in = calloc(1, sizeof *in);
    if (!in)
        return NULL;
    in->target = *t;
    in->replica_wait_ms = replica_wait_ms;
    pthread_mutex_init(&in->lock, NULL);
    pthread_mutex_init(&in->cache_lock, NULL);
    pthread_mutex_init(&in->bucket_lock, NULL);
    pthread_cond_init(&in->wake, NULL);
    pthread_cond_init(&in->large_wake, NULL);
    in->npipes = replica_wait_ms > 0 ? PIPES_MAX : 1;
    for (int i = 0; i < in->npipes; i++) {
        in->pipes[i].in = in;
        in->pipes[i].started =
            pthread_create(&in->pipes[i].thread, NULL, pipeline_main, &in->pipes[i]) == 0;
        if (!in->pipes[i].started) {
            ingest_free(in); /* stops those that started */
            return NULL;
        }
    }
    in->validator_running = pthread_create(&in->validator, NULL, validator_main, in) == 0;
    return in;
}

void ingest_submit(struct ingest *in, struct ingest_job *job)
{
    job->next = NULL;
    job->result = INGEST_PENDING;
    pthread_mutex_lock(&in->lock);
    if (in->stopped) {
        pthread_mutex_unlock(&in->lock);
        finish(job, INGEST_UNAVAILABLE);
        return;
    }
    if (in->tail)
        in->tail->next = job;
    else
        in->head = job;
    in->tail = job;
    pthread_cond_signal(&in->wake);
    pthread_mutex_unlock(&in->lock);
}

void ingest_stop(struct ingest *in)
{
    if (!in)
        return;
    /* The validation thread first: what it still holds goes to the pipeline. */
    pthread_mutex_lock(&in->lock);
    bool validator = in->validator_running;
    in->large_stopping = true;
    in->validator_running = false;
    pthread_cond_signal(&in->large_wake);
    pthread_mutex_unlock(&in->lock);
    if (validator)
        pthread_join(in->validator, NULL);
    pthread_mutex_lock(&in->lock);
    bool joined = in->stopped;
    in->stopping = true;
    pthread_cond_broadcast(&in->wake);
    pthread_mutex_unlock(&in->lock);
    if (joined)
        return;
    for (int i = 0; i < in->npipes; i++)
        if (in->pipes[i].started)
            pthread_join(in->pipes[i].thread, NULL);
    pthread_mutex_lock(&in->lock);
    in->stopped = true;
    struct ingest_job *late = in->head; /* submitted between the thread's last look and now */
    in->head = in->tail = NULL;
    pthread_mutex_unlock(&in->lock);
    for (struct ingest_job *next; late; late = next) {
        next = late->next;
        finish(late, INGEST_UNAVAILABLE);
    }
}

void ingest_free(struct ingest *in)
{
    if (!in)
        return;
    ingest_stop(in);
    pthread_mutex_destroy(&in->lock);
    pthread_mutex_destroy(&in->cache_lock);
    pthread_mutex_destroy(&in->bucket_lock);
    pthread_cond_destroy(&in->large_wake);
    pthread_cond_destroy(&in->wake);
    free(in);
}

/* ---- webhook secrets: cached briefly so the hot path needs one round trip ---- */

static struct secret_entry *cache_slot(struct ingest *in, const char *association)
{
    unsigned long h = 5381;
    for (const char *p = association; *p; p++)
        h = h * 33 + (unsigned char)*p;
    return &in->cache[h % SECRET_CACHE_SLOTS];
}

/* Copies a cached secret no older than max_age_ns; true when found. */
static bool cache_lookup(struct ingest *in, const char *association, int64_t max_age_ns,
                         char *secret, size_t size)
{
    bool found = false;
    int64_t now = store_now_ns();
    pthread_mutex_lock(&in->cache_lock);
    struct secret_entry *e = cache_slot(in, association);
    if (strcmp(e->association, association) == 0 && now - e->fetched_ns < max_age_ns) {
        text_copy(secret, size, e->secret);
        found = true;
    }
    pthread_mutex_unlock(&in->cache_lock);
    return found;
}

static void cache_store(struct ingest *in, const char *association, const char *secret)
{
    pthread_mutex_lock(&in->cache_lock);
    struct secret_entry *e = cache_slot(in, association);
    snprintf(e->association, sizeof e->association, "%s", association);
    snprintf(e->secret, sizeof e->secret, "%s", secret);
    e->fetched_ns = store_now_ns();
    pthread_mutex_unlock(&in->cache_lock);
}

static unsigned long id_hash(const char *association)
{
    unsigned long h = 5381;
    for (const char *p = association; *p; p++)
        h = h * 33 + (unsigned char)*p;
    return h;
}

static struct miss_entry *miss_slot(struct ingest *in, const char *association)
{
    return &in->misses[id_hash(association) % MISS_CACHE_SLOTS];
}

/* Whether association was found unknown less than MISS_CACHE_TTL_NS ago. */
static bool miss_lookup(struct ingest *in, const char *association)
{
    pthread_mutex_lock(&in->cache_lock);
    struct miss_entry *e = miss_slot(in, association);
    bool hit =
        strcmp(e->association, association) == 0 && store_now_ns() - e->seen_ns < MISS_CACHE_TTL_NS;
    pthread_mutex_unlock(&in->cache_lock);
    return hit;
}

static void miss_store(struct ingest *in, const char *association)
{
    pthread_mutex_lock(&in->cache_lock);
    struct miss_entry *e = miss_slot(in, association);
    snprintf(e->association, sizeof e->association, "%s", association);
    e->seen_ns = store_now_ns();
    pthread_mutex_unlock(&in->cache_lock);
}

void ingest_forget_secret(struct ingest *in, const char *association_id)
{
    pthread_mutex_lock(&in->cache_lock);
    struct secret_entry *e = cache_slot(in, association_id);
    if (strcmp(e->association, association_id) == 0)
        memset(e, 0, sizeof *e);
    struct miss_entry *m = miss_slot(in, association_id);
    if (strcmp(m->association, association_id) == 0)
        memset(m, 0, sizeof *m);
    pthread_mutex_unlock(&in->cache_lock);
}

/* 1 found, 0 unknown association, -1 Redis unavailable, -2 the stored secret
 * does not open (its key left CCSYNC_SECRETS_KEY_FILE). */
static int fetch_secret(struct app *app, const char *association, char *secret, size_t size)
{
    char err[256];
    redisContext *c = store_pool_get(app->pool, err, sizeof err);
    if (!c)
        return -1;
    redisReply *r = store_command(c, "HGET %s webhook_secret", key_association(association).s);
    int found = -1;
    if (r && r->type == REDIS_REPLY_STRING) {
        /* sealed at rest (secrets.h) */
        bool opened = secrets_open(&app->cfg->secrets, association, "webhook_secret", r->str,
                                   secret, size) == 0;
        if (opened)
            cache_store(app->ingest, association, secret);
        found = opened ? 1 : -2;
    } else if (r && r->type == REDIS_REPLY_NIL) {
        miss_store(app->ingest, association);
        found = 0;
    }
    bool ok = r != NULL;
    freeReplyObject(r);
    store_pool_put(app->pool, c, ok);
    return found;
}

/* ---- the endpoint ---- */

struct webhook_job {
    struct ingest_job job;
    struct http_request *req;
    char association[CCSYNC_ASSOC_ID_MAX + 1];
    char webhook_id[WEBHOOK_ID_MAX + 1];
    char type[64];
};

static void count(const char *outcome)
{
    char labels[64];
    snprintf(labels, sizeof labels, "outcome=\"%s\"", outcome);
    metrics_inc("ccsync_webhooks_total", labels);
}

/* count() for an outcome spelled here: no label to format on the hot path. */
#define COUNT_LITERAL(outcome) metrics_inc("ccsync_webhooks_total", "outcome=\"" outcome "\"")

/* {"id":...,"status":...}, the bytes json-c would write, written directly: on
 * the hot path json-c's object, hash table and copies cost more than the rest
 * of the answer. id is a checked webhook-id or NULL; what is a plain word. */
static void reply_accepted(struct http_request *req, int status, const char *id, const char *what)
{
    size_t cap = 64 + strlen(what) + (id ? 6 * strlen(id) : 0), n = 0;
    char *out = malloc(cap);
    if (!out) {
        http_reply(req, 500, "application/json", NULL, 0);
        return;
    }
    out[n++] = '{';
    if (id) {
        memcpy(out + n, "\"id\":\"", 6);
        n += 6;
        for (const unsigned char *p = (const unsigned char *)id; *p; p++) {
            if (*p == '"' || *p == '\\') {
                out[n++] = '\\';
                out[n++] = (char)*p;
            } else if (*p < 0x20) {
                n += (size_t)snprintf(out + n, cap - n, "\\u%04x", *p);
            } else {
                out[n++] = (char)*p;
            }
        }
        out[n++] = '"';
        out[n++] = ',';
    }
    memcpy(out + n, "\"status\":\"", 10);
    n += 10;
    memcpy(out + n, what, strlen(what));
    n += strlen(what);
    out[n++] = '"';
    out[n++] = '}';
    http_reply(req, status, "application/json", out, n);
}

static void reply_unavailable(struct http_request *req)
{
    count("redis_unavailable");
    http_add_header(req, "Retry-After", "5");
    http_reply_error(req, 503, "redis_unavailable",
                     "the event store is unavailable; nothing was queued, retry later");
}

static void on_enqueued(struct ingest_job *job, void *arg)
{
    struct webhook_job *w = arg;
    struct http_request *req = w->req;
    switch (job->result) {
    case INGEST_QUEUED:
        COUNT_LITERAL("queued");
        reply_accepted(req, 202, w->webhook_id, "queued");
        break;
    case INGEST_DUPLICATE:
        COUNT_LITERAL("duplicate");
        reply_accepted(req, 200, w->webhook_id, "duplicate");
        break;
    default:
        reply_unavailable(req);
        break;
    }
    free(w);
    http_resume(req);
}

static bool valid_webhook_id(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > WEBHOOK_ID_MAX)
        return false;
    for (const char *p = id; *p; p++)
        if (*p <= ' ' || *p > '~')
            return false;
    return true;
}

/* The answer to an unknown association: a wrong signature's, after the same
 * work (webhook_verify_unknown), so association ids cannot be probed. */
static void reply_unknown(struct app *app, struct http_request *req)
{
    size_t len;
    struct webhook_error err;
    http_body(req, &len);
    webhook_verify_unknown(http_header(req, "webhook-id"), http_header(req, "webhook-timestamp"),
                           http_header(req, "webhook-signature"), len,
                           store_now_ns() / 1000000000LL, &err);
    count("unknown_association");
    http_reply_error(req, err.status, err.code, "%s", err.message);
}

/* The association's secret is sealed with a key no longer in the ring: the
 * operator's to fix (a key back in the file); Novi retries meanwhile. */
static void reply_secret_unreadable(struct http_request *req, const char *association)
{
    count("secret_unreadable");
    log_error("webhook_secret_unreadable", LOG_STR("association", association));
    http_add_header(req, "Retry-After", "60");
    http_reply_error(req, 503, "secret_unreadable",
                     "the association's webhook secret cannot be opened with the keys of "
                     "CCSYNC_SECRETS_KEY_FILE; retry later");
}

/* The association's webhook secret, cached (*cached) or read: 1 found, 0 no
 * such association (not answered: the caller answers as it must), -1 answered
 * (Redis unavailable, the secret does not open). */
static int lookup_secret(struct app *app, struct http_request *req, const char *association,
                         char *secret, size_t size, bool *cached)
{
    *cached = cache_lookup(app->ingest, association, SECRET_CACHE_TTL_NS, secret, size);
    if (*cached)
        return 1;
    int found =
        miss_lookup(app->ingest, association) ? 0 : fetch_secret(app, association, secret, size);
    if (found == -2)
        reply_secret_unreadable(req, association);
    else if (found < 0)
        reply_unavailable(req);
    return found < 0 ? -1 : found;
}

/* The association's webhook secret; false when the request was answered
 * (Redis unavailable, unknown association). */
static bool find_secret(struct app *app, struct http_request *req, const char *association,
                        char *secret, size_t size, bool *cached)
{
    int found = lookup_secret(app, req, association, secret, size, cached);
    if (found == 0)
        reply_unknown(app, req);
    return found == 1;
}

/* Takes one webhook from the association's bucket; false when it is empty,
 * with the seconds until one is back in *retry_after. */
static bool bucket_take(struct ingest *in, const struct config *cfg, const char *association,
                        int *retry_after)
{
    int64_t now = store_now_ns();
    pthread_mutex_lock(&in->bucket_lock);
    struct bucket *b = &in->buckets[id_hash(association) % BUCKET_SLOTS];
    if (strcmp(b->association, association) != 0) {
        snprintf(b->association, sizeof b->association, "%s", association);
        b->tokens = cfg->ingest_burst;
        b->at_ns = now;
    }
    b->tokens += (double)(now - b->at_ns) / 1e9 * cfg->ingest_rate;
    if (b->tokens > cfg->ingest_burst)
        b->tokens = cfg->ingest_burst;
    b->at_ns = now;
    bool taken = b->tokens >= 1.0;
    if (taken)
        b->tokens -= 1.0;
    else
        *retry_after = 1 + (int)((1.0 - b->tokens) / cfg->ingest_rate);
    pthread_mutex_unlock(&in->bucket_lock);
    return taken;
}

bool ingest_precheck(struct app *app, struct http_request *req)
{
    const char *association = http_param(req, 0);
    struct webhook_error err;
    if (webhook_check_headers(http_header(req, "webhook-id"), http_header(req, "webhook-timestamp"),
                              http_header(req, "webhook-signature"), store_now_ns() / 1000000000LL,
                              &err) != 0) {
        count(err.code);
        http_reply_error(req, err.status, err.code, "%s", err.message);
        return false;
    }
    if (atomic_load(&app->starting) || atomic_load(&app->draining))
        return true; /* the handler's own answer (503) comes before any Redis read */
    char secret[256];
    bool cached;
    int found = lookup_secret(app, req, association, secret, sizeof secret, &cached);
    OPENSSL_cleanse(secret, sizeof secret);
    if (found < 0)
        return false;
    if (found == 0) {
        http_discard_body(req); /* answered as a wrong signature once the body is in */
        return true;
    }
    int retry_after;
    if (!bucket_take(app->ingest, app->cfg, association, &retry_after)) {
        char value[16];
        snprintf(value, sizeof value, "%d", retry_after);
        count("rate_limited");
        http_add_header(req, "Retry-After", value);
        http_reply_error(req, 429, "too_many_webhooks",
                         "association %s sent more than %d webhooks at once (then %d a second); "
                         "retry later",
                         association, app->cfg->ingest_burst, app->cfg->ingest_rate);
        return false;
    }
    return true;
}

/* Checks the signature; false when the request was answered (refused). */
static bool verify(struct app *app, struct http_request *req, const char *association,
                   const char *msg_id, char *secret, size_t size, bool cached)
{
    size_t len;
    const char *body = http_body(req, &len);
    struct webhook_error err;
    int64_t now = store_now_ns() / 1000000000LL;
    const char *ts = http_header(req, "webhook-timestamp");
    const char *sig = http_header(req, "webhook-signature");
    int verified = webhook_verify(secret, msg_id, ts, sig, body, len, now, &err);
    if (verified != 0 && cached && strcmp(err.code, "invalid_signature") == 0 &&
        !cache_lookup(app->ingest, association, SECRET_RECHECK_NS, secret, size)) {
        /* The secret may have been rotated through another instance: look again. */
        if (fetch_secret(app, association, secret, size) > 0)
            verified = webhook_verify(secret, msg_id, ts, sig, body, len, now, &err);
    }
    if (verified != 0) {
        count(err.code);
        http_reply_error(req, err.status, err.code, "%s", err.message);
        return false;
    }
    return true;
}

/* Hands the event to the pipeline thread; the request is answered when its
 * reply arrives (on_enqueued). */
static int submit(struct app *app, struct http_request *req, const char *association,
                  const char *msg_id, const struct event *ev, bool suspended)
{
    struct webhook_job *w = calloc(1, sizeof *w);
    if (!w) {
        http_reply_error(req, 500, "internal", "out of memory");
        return HTTP_DONE;
    }
    w->req = req;
    text_copy(w->association, sizeof w->association, association);
    text_copy(w->webhook_id, sizeof w->webhook_id, msg_id);
    text_copy(w->type, sizeof w->type, event_type_name(ev->type));
    w->job.association_id = w->association;
    w->job.webhook_id = w->webhook_id;
    w->job.type = w->type;
    w->job.ts_ns = ev->ts_ns;
    w->job.body = http_body(req, &w->job.body_len);
    w->job.done = on_enqueued;
    w->job.arg = w;
    if (!suspended)
        http_suspend(req);
    ingest_submit(app->ingest, &w->job);
    return HTTP_SUSPENDED;
}

/* A body over CCSYNC_ENQUEUE_CHUNK_BYTES: staged in chunks and queued by
 * reference (staged.h) on this thread's own connection, so the pipeline's
 * commands never wait behind it; answered here (HTTP_DONE). */
static int submit_staged(struct app *app, struct http_request *req, const char *association,
                         const char *msg_id, const struct event *ev)
{
    char err[256];
    redisContext *c = store_pool_get(app->pool, err, sizeof err);
    if (!c) {
        reply_unavailable(req);
        return HTTP_DONE;
    }
    struct staged_event se = {association, msg_id, event_type_name(ev->type), ev->ts_ns, NULL, 0};
    se.body = http_body(req, &se.body_len);
    char entry_id[48];
    int result = staged_enqueue(c, &se, app->cfg->enqueue_chunk_bytes, app->ingest->replica_wait_ms,
                                entry_id, sizeof entry_id);
    store_pool_put(app->pool, c, c->err == 0);
    metrics_inc("ccsync_ingest_staged_total", "");
    if (result == INGEST_QUEUED) {
        count("queued");
        reply_accepted(req, 202, msg_id, "queued");
    } else if (result == INGEST_DUPLICATE) {
        count("duplicate");
        reply_accepted(req, 200, msg_id, "duplicate");
    } else {
        reply_unavailable(req);
    }
    return HTTP_DONE;
}

/* The secret, the signature and the body of a webhook; HTTP_DONE answered, or
 * HTTP_SUSPENDED handed to the pipeline. suspended: the request already is
 * (on the validation thread). */
static int check_and_submit(struct app *app, struct http_request *req, bool suspended)
{
    const char *association = http_param(req, 0);
    const char *msg_id = http_header(req, "webhook-id");
    char secret[256];
    bool cached;
    if (!find_secret(app, req, association, secret, sizeof secret, &cached) ||
        !verify(app, req, association, msg_id, secret, sizeof secret, cached))
        return HTTP_DONE;
    if (!valid_webhook_id(msg_id)) {
        count("invalid_webhook_id");
        http_reply_error(req, 400, "invalid_webhook_id",
                         "webhook-id must be 1-%d printable characters without spaces",
                         WEBHOOK_ID_MAX);
        return HTTP_DONE;
    }
    size_t len;
    const char *body = http_body(req, &len);
    struct event ev;
    struct webhook_error err;
    struct webhook_limits limits = {(size_t)app->cfg->max_groups_per_member,
                                    (size_t)app->cfg->max_snapshot_members};
    if (webhook_parse_event_limited(body, len, &limits, &ev, &err) != 0) {
        count(err.code);
        http_reply_error(req, err.status, err.code, "%s", err.message);
        return HTTP_DONE;
    }
    int rc = HTTP_DONE;
    if (ev.type == EVENT_UNKNOWN) {
        count("ignored");
        log_info("webhook_ignored", LOG_STR("association", association),
                 LOG_STR("webhook_id", msg_id), LOG_STR("type", ev.type_name));
        reply_accepted(req, 202, msg_id, "ignored");
    } else if (len > app->cfg->enqueue_chunk_bytes) {
        rc = submit_staged(app, req, association, msg_id, &ev);
    } else {
        rc = submit(app, req, association, msg_id, &ev, suspended);
    }
    event_clear(&ev);
    return rc;
}

/* ---- large bodies: checked on a thread of their own ---- */

/* Parsing a snapshot of 500,000 members takes seconds; on an HTTP thread it
 * would hold every connection that thread serves, other associations' too. A
 * body this large is suspended and checked by the validation thread instead. */
#define LARGE_BODY_BYTES (256 * 1024)

struct large_job {
    struct app *app;
    struct http_request *req;
    struct large_job *next;
};

static void *validator_main(void *arg)
{
    struct ingest *in = arg;
    for (;;) {
        pthread_mutex_lock(&in->lock);
        while (!in->large_head && !in->large_stopping)
            pthread_cond_wait(&in->large_wake, &in->lock);
        struct large_job *j = in->large_head;
        if (j) {
            in->large_head = j->next;
            if (!in->large_head)
                in->large_tail = NULL;
        }
        pthread_mutex_unlock(&in->lock);
        if (!j)
            break; /* stopping, and nothing left */
        if (check_and_submit(j->app, j->req, true) == HTTP_DONE)
            http_resume(j->req);
        free(j);
    }
    return NULL;
}

/* Hands a suspended request to the validation thread; false when it cannot
 * (stopped, out of memory): the caller checks it itself. */
static bool large_submit(struct ingest *in, struct app *app, struct http_request *req)
{
    struct large_job *j = calloc(1, sizeof *j);
    if (!j)
        return false;
    j->app = app;
    j->req = req;
    pthread_mutex_lock(&in->lock);
    bool open = in->validator_running && !in->large_stopping;
    if (open) {
        if (in->large_tail)
            in->large_tail->next = j;
        else
            in->large_head = j;
        in->large_tail = j;
        pthread_cond_signal(&in->large_wake);
    }
    pthread_mutex_unlock(&in->lock);
    if (!open)
        free(j);
    return open;
}

int ingest_handle_webhook(struct app *app, struct http_request *req)
{
    const char *association = http_param(req, 0);
    const char *msg_id = http_header(req, "webhook-id");
    http_set_log_field(req, "association", association);
    if (msg_id && valid_webhook_id(msg_id))
        http_set_log_field(req, "webhook_id", msg_id);

    if (atomic_load(&app->draining)) {
        count("draining");
        http_add_header(req, "Retry-After", "5");
        http_reply_error(req, 503, "shutting_down", "this instance is shutting down; retry");
        return HTTP_DONE;
    }
    if (http_body_discarded(req)) {
        reply_unknown(app, req);
        return HTTP_DONE;
    }
    size_t len;
    http_body(req, &len);
    if (len >= LARGE_BODY_BYTES) {
        http_suspend(req);
        if (large_submit(app->ingest, app, req))
            return HTTP_SUSPENDED;
        if (check_and_submit(app, req, true) == HTTP_DONE)
            http_resume(req);
        return HTTP_SUSPENDED;
    }
    return check_and_submit(app, req, false);
}
