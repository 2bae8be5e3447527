/*
 * worker.c - the worker threads' loop.
 *
 * Each thread, in turn: folds a batch of new events of the association whose
 * turn it is (queue_take: associations with events take turns, a batch each,
 * so one association's flood does not hold back the others') and acknowledges
 * them, syncs the due groups of one association under their leases, and
 * reconciles an association whose turn has come. The first thread of each
 * process also sweeps every association's stream now and then (what a crash
 * left out of the line, events a dead consumer left pending) and drains the
 * single stream of earlier releases while it holds events. All coordination
 * goes through Redis, so threads of several ccsyncd processes share the work
 * the same way.
 *
 * Which groups are due, and which associations have due groups, is kept by
 * schedule.c (per association, plus a global index of due associations);
 * leases by lease.c. KEY_RETRYING is the set of "assoc|group" whose last sync
 * failed and will retry; KEY_RECONCILE the next reconcile time of each
 * association.
 */
#include "ccsync/worker.h"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ccsync/app.h"
#include "ccsync/ccapi.h"
#include "ccsync/facts.h"
#include "ccsync/groupstore.h"
#include "ccsync/keys.h"
#include "ccsync/lease.h"
#include "ccsync/log.h"
#include "ccsync/metrics.h"
#include "ccsync/queue.h"
#include "ccsync/schedule.h"
#include "ccsync/staged.h"
#include "ccsync/store.h"
#include "ccsync/sync.h"
#include "ccsync/webhook.h"

/* Events a worker reads of one association in one turn: the most another
 * association's event waits behind it, per worker. */
#define READ_BATCH 64
/* How long a worker waits for an association to come in line. */
#define TAKE_BLOCK_MS 200
#define REPAIR_EVERY_MS 60000
#define CC_TIMEOUT_MS 30000
/* How many coalescing waits a burst still arriving may hold its group back. */
#define QUIET_CAP_FACTOR 10
/* Due associations a worker tries, earliest first, before it finds a free group. */
#define DUE_ASSOCIATIONS 8

struct engine {
    struct app *app;
    atomic_bool legacy; /* KEY_LEGACY_EVENTS holds events: every thread drains it */
    int n;
    pthread_t *threads;
    atomic_bool stop;
    atomic_int running;
    struct lease_keeper *keeper; /* renews the leases every thread holds */
};

struct worker_thread {
    struct engine *engine;
    int index;
};

static int64_t now_ms(void)
{
    return store_now_ns() / 1000000;
}

/* The line's scores (queue.h): microseconds, so that turns a moment apart
 * do not tie. */
static int64_t now_us(void)
{
    return store_now_ns() / 1000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- events ---- */

static void count_event(const char *outcome)
{
    char labels[64];
    snprintf(labels, sizeof labels, "outcome=\"%s\"", outcome);
    metrics_inc("ccsync_events_processed_total", labels);
}

static void dead_letter_log(const struct queue_entry *e, const char *reason)
{
    count_event("dead_letter");
    log_error("event_dead_lettered", LOG_STR("entry", e->id),
              LOG_STR("association", e->association), LOG_STR("webhook_id", e->webhook_id),
              LOG_STR("reason", reason));
}

/* What becomes of each entry of a batch. */
enum fate {
    FOLD_ALONE = 0, /* folded by itself (a snapshot, or the server lacked the script) */
    APPENDED,       /* its fold is in the pipeline */
    DEAD,           /* dead-lettered */
    FOLDED,         /* facts stored and its association woken (or about to be) */
};

struct batch {
    const char *stream; /* where the entries came from */
    const struct queue_entry *entries;
    size_t n;
    const char *consumer;
    struct event *events;
    enum fate *fate;
    int64_t *earliest; /* a pipelined fold's association's earliest due */
};

/* Dead-letters entries that can never be folded. STORE_ERR when Redis failed. */
static int screen(struct sync_worker *w, struct batch *b, bool reclaimed)
{
    redisContext *c = w->redis;
    for (size_t i = 0; i < b->n; i++) {
        const struct queue_entry *e = &b->entries[i];
        struct webhook_error err;
        const char *reason = NULL;
        if (reclaimed && queue_deliveries(c, b->stream, e->id) > QUEUE_MAX_DELIVERIES) {
            dead_letter_log(e, "too many attempts");
            reason = "could not be applied after repeated attempts";
        } else if (!e->association || !e->body ||
                   webhook_parse_event(e->body, e->body_len, &b->events[i], &err) != 0) {
            reason = e->body ? err.message : "entry has no body";
            dead_letter_log(e, reason);
        }
        if (reason) {
            b->fate[i] = DEAD;
            if (queue_dead_letter(c, b->stream, e, reason, w->app->cfg->retention_days) != STORE_OK)
                return STORE_ERR; /* a staged body went with it (queue.h) */
        }
    }
    return STORE_OK;
}

/* Is folded entry i the batch's first folded entry of its association? */
static bool first_of_association(const struct batch *b, size_t i)
{
    for (size_t j = 0; j < i; j++)
        if (b->fate[j] == FOLDED &&
            strcmp(b->entries[j].association, b->entries[i].association) == 0)
            return false;
    return true;
}

/* The earliest due reported by the batch's folded entries of i's association
 * (SCHEDULE_NONE, "nothing due", is the largest value, so min does it). */
static int64_t earliest_of_association(const struct batch *b, size_t i)
{
    int64_t due = b->earliest[i];
    for (size_t j = i + 1; j < b->n; j++)
        if (b->fate[j] == FOLDED &&
            strcmp(b->entries[j].association, b->entries[i].association) == 0 &&
            b->earliest[j] < due)
            due = b->earliest[j];
    return due;
}

/* Where entry e came from, for its members' histories: its webhook-id, and
 * when it entered the stream (its id's milliseconds). */
static struct fold_origin origin_of(const struct queue_entry *e)
{
    struct fold_origin o = {.event_id = e->webhook_id,
                            .received_ns = strtoll(e->id, NULL, 10) * 1000000LL};
    return o;
}

/* Folds the events that fit one script call in one pipeline (one round trip
 * for the batch), then wakes their associations. */
static int fold_pipelined(struct sync_worker *w, struct batch *b, int64_t now, int delay)
{
    redisContext *c = w->redis;
    size_t appended = 0, wakes = 0;
    int rc = STORE_OK;
    for (size_t i = 0; i < b->n && rc == STORE_OK; i++) {
        if (b->fate[i] != FOLD_ALONE)
            continue;
        struct fold_origin origin = origin_of(&b->entries[i]);
        int a = facts_fold_append(c, b->entries[i].association, &b->events[i], &origin, now, delay);
        rc = a < 0 ? STORE_ERR : STORE_OK;
        b->fate[i] = a == 1 ? APPENDED : FOLD_ALONE;
        appended += a == 1;
    }
    for (size_t i = 0; i < b->n && appended > 0; i++) {
        if (b->fate[i] != APPENDED)
            continue;
        appended--;
        int r = facts_fold_reply(c, &b->earliest[i]);
        rc = r < 0 ? STORE_ERR : rc;
        b->fate[i] = r == 1 ? FOLDED : FOLD_ALONE; /* NOSCRIPT: fold alone */
    }
    if (c->err)
        return STORE_ERR;
    /* Every folded event's association is woken before the event is
     * acknowledged; if waking fails they stay pending and come back. One wake
     * an association, at the earliest due its events reported. */
    for (size_t i = 0; i < b->n; i++)
        if (b->fate[i] == FOLDED && first_of_association(b, i))
            wakes += (size_t)schedule_append_wake(c, b->entries[i].association,
                                                  earliest_of_association(b, i));
    if (store_drain(c, wakes) != STORE_OK) {
        for (size_t i = 0; i < b->n; i++)
            if (b->fate[i] == FOLDED)
                b->fate[i] = FOLD_ALONE;
        return STORE_ERR;
    }
    return rc;
}

/* ---- staged bodies (staged.h) ---- */

/* An event being folded alone, kept claimed while its fold goes on. */
struct still_folding {
    redisContext *c;
    const char *stream;
    const char *consumer;
    const char *id;
    int64_t touched_ms;
};

/* fold_origin.progress: resets the entry's idle time now and then, so that no
 * other worker reclaims and folds again a snapshot whose fold takes long. A
 * failure is left to the fold's own next command to find. */
static void keep_claimed(void *arg)
{
    struct still_folding *f = arg;
    int64_t now = now_ms();
    if (now - f->touched_ms < QUEUE_RECLAIM_IDLE_MS / 6)
        return;
    f->touched_ms = now;
    queue_touch(f->c, f->stream, f->consumer, f->id);
}

/* Reads the staged bodies of entries (owned[i] holds entry i's, for the
 * caller to free). An entry whose staging key is gone was folded by a worker
 * that deleted its body and died before acknowledging it: acknowledged now and
 * dropped from entries. false when Redis failed (the entries stay pending). */
static bool read_staged(struct sync_worker *w, const char *stream, struct queue_entry *entries,
                        size_t *n, char **owned)
{
    size_t kept = 0;
    for (size_t i = 0; i < *n; i++) {
        struct queue_entry e = entries[i];
        char *body = NULL;
        if (e.body_key && !e.body) {
            int rc = staged_read(w->redis, e.body_key, e.body_bytes, &body);
            if (rc == STORE_ERR)
                return false;
            if (rc == 0) {
                count_event("folded_before");
                log_info("event_folded_before", LOG_STR("entry", e.id),
                         LOG_STR("association", e.association));
                if (queue_ack(w->redis, stream, e.id) != STORE_OK)
                    return false;
                continue;
            }
            e.body = body;
            e.body_len = e.body_bytes;
        }
        owned[kept] = body;
        entries[kept++] = e;
    }
    *n = kept;
    return true;
}

/* Deletes the staged bodies of the events folded, before they are
 * acknowledged: an entry left pending by a crash in between finds its body
 * gone, which says it was folded (read_staged). */
static int forget_staged(struct sync_worker *w, const struct batch *b)
{
    size_t n = 0;
    for (size_t i = 0; i < b->n; i++)
        if (b->fate[i] == FOLDED && b->entries[i].body_key) {
            redisAppendCommand(w->redis, "DEL %s", b->entries[i].body_key);
            n++;
        }
    return store_drain(w->redis, n);
}

/* Folds the rest one by one (facts_fold wakes the association itself). */
static int fold_alone(struct sync_worker *w, struct batch *b, int64_t now, int delay)
{
    for (size_t i = 0; i < b->n; i++) {
        if (b->fate[i] != FOLD_ALONE)
            continue;
        struct fold_origin origin = origin_of(&b->entries[i]);
        struct still_folding busy = {w->redis, b->stream, b->consumer, b->entries[i].id, now_ms()};
        origin.progress = keep_claimed;
        origin.progress_arg = &busy;
        if (facts_fold(w->redis, b->entries[i].association, &b->events[i], &origin, now, delay) !=
            STORE_OK) {
            count_event("redis_error");
            return STORE_ERR;
        }
        b->fate[i] = FOLDED;
    }
    return STORE_OK;
}

/* Acknowledges the folded and dead-lettered entries (the latter already are). */
static int acknowledge(struct sync_worker *w, const struct batch *b)
{
    const char **acks = calloc(b->n + 1, sizeof *acks);
    if (!acks)
        return STORE_ERR;
    size_t n_acks = 0;
    for (size_t i = 0; i < b->n; i++) {
        if (b->fate[i] == FOLDED) {
            count_event("folded");
            acks[n_acks++] = b->entries[i].id;
        }
    }
    int rc = queue_ack_many(w->redis, b->stream, acks, n_acks);
    free(acks);
    return rc;
}

/*
 * Folds a batch of entries and acknowledges those whose facts are stored and
 * whose associations are woken. Returns false when Redis failed: entries not
 * acknowledged stay pending and come back (folding is idempotent).
 */
static bool process_batch(struct sync_worker *w, const char *stream,
                          const struct queue_entry *entries, size_t n, bool reclaimed,
                          const char *consumer)
{
    struct batch b = {.stream = stream, .entries = entries, .n = n, .consumer = consumer};
    b.events = calloc(n + 1, sizeof *b.events);
    b.fate = calloc(n + 1, sizeof *b.fate);
    b.earliest = calloc(n + 1, sizeof *b.earliest);
    int64_t now = store_now_ns();
    int delay = (int)sync_delay_ms(w); /* widened as the day's budget tightens */
    int rc = b.events && b.fate && b.earliest ? STORE_OK : STORE_ERR;
    if (rc == STORE_OK)
        rc = screen(w, &b, reclaimed);
    if (rc == STORE_OK)
        rc = fold_pipelined(w, &b, now, delay);
    if (rc == STORE_OK)
        rc = fold_alone(w, &b, now, delay);
    if (rc == STORE_OK || w->redis->err == 0) {
        int acked = forget_staged(w, &b) == STORE_OK ? acknowledge(w, &b) : STORE_ERR;
        rc = acked == STORE_OK ? rc : STORE_ERR;
    }
    for (size_t i = 0; b.events && i < n; i++)
        event_clear(&b.events[i]);
    free(b.events);
    free(b.fate);
    free(b.earliest);
    return rc == STORE_OK;
}

/* Reads a batch of stream and folds it. turn_of: the association whose turn
 * this is, put back in line before the folding when the batch may have left
 * more, so that other workers can take its next batch meanwhile. *n: entries
 * read. */
static bool consume(struct sync_worker *w, const char *stream, const char *consumer, bool reclaim,
                    const char *turn_of, size_t *n)
{
    struct queue_entry entries[READ_BATCH];
    char *staged[READ_BATCH] = {NULL};
    redisReply *r = queue_read(w->redis, stream, consumer, reclaim, 0, entries, READ_BATCH, n);
    if (!r)
        return false;
    bool ok = !turn_of || queue_turn_over(w->redis, turn_of, *n, READ_BATCH, now_us()) == STORE_OK;
    ok = ok && read_staged(w, stream, entries, n, staged) &&
         process_batch(w, stream, entries, *n, reclaim, consumer);
    for (size_t i = 0; i < READ_BATCH; i++)
        free(staged[i]);
    freeReplyObject(r);
    return ok;
}

/* One turn of the association first in line (waiting up to block_ms for one):
 * a batch of its stream. */
static bool consume_turn(struct sync_worker *w, const char *consumer, int block_ms)
{
    char association[CCSYNC_ASSOC_ID_MAX + 1];
    int taken = queue_take(w->redis, block_ms, association);
    if (taken != 1)
        return taken == 0;
    size_t n;
    return consume(w, key_events(association).s, consumer, false, association, &n);
}

/* A batch of the single stream of earlier releases, while it holds events;
 * the sweep notices when it holds some again (an older process still writing). */
static bool consume_legacy(struct sync_worker *w, atomic_bool *legacy, const char *consumer)
{
    size_t n;
    if (!atomic_load(legacy))
        return true;
    bool ok = consume(w, KEY_LEGACY_EVENTS, consumer, false, NULL, &n);
    if (ok && !queue_more_may_be_left(n, READ_BATCH))
        atomic_store(legacy, false);
    return ok;
}

/* ---- group syncs ---- */

/* The groups of one association claimed for one round; leases[i] of the
 * worker is groups[i]'s. */
struct round {
    char association[CCSYNC_ASSOC_ID_MAX + 1];
    struct schedule_claim groups[SYNC_MAX_GROUPS];
    size_t n;
};

static void release_leases(struct sync_worker *w)
{
    size_t n = w->n_leases;
    w->n_leases = 0;
    sync_leases_held(w); /* before they go: the heartbeat must not think them lost */
    w->n_leases = n;
    for (size_t i = 0; i < w->n_leases; i++)
        if (w->leases[i].key[0])
            lease_release(w->redis, &w->leases[i]);
    w->n_leases = 0;
}

/* Claims the due groups of the earliest due association that has some whose
 * leases are free; their leases go to w. A group whose changes still arrive is
 * held back until they stop (at most QUIET_CAP_FACTOR coalescing waits), so a
 * burst costs one round. Once an association is due, its groups due within the
 * next half wait come along (they gather): two groups changed by webhooks a few
 * ms apart share one round, and so one removal request where they can. */
static int claim_round(struct sync_worker *w, struct round *r)
{
    char due[DUE_ASSOCIATIONS][CCSYNC_ASSOC_ID_MAX + 1];
    size_t n_due = 0;
    int64_t now = now_ms();
    char token[LEASE_TOKEN_SIZE];
    lease_new_token(token);
    r->n = 0;
    int64_t quiet_cap = QUIET_CAP_FACTOR * sync_delay_ms(w);
    int64_t most = (int64_t)w->app->cfg->sync_delay_max_seconds * 1000;
    quiet_cap = quiet_cap < most ? quiet_cap : most;
    int64_t gather = sync_delay_ms(w) / 2;
    int rc = schedule_due_associations(w->redis, now, due, DUE_ASSOCIATIONS, &n_due);
    for (size_t i = 0; i < n_due && r->n == 0 && rc == STORE_OK; i++) {
        snprintf(r->association, sizeof r->association, "%s", due[i]);
        rc = schedule_claim_quiet(w->redis, due[i], now + gather, w->lease_ms, quiet_cap, token,
                                  r->groups, SYNC_MAX_GROUPS, &r->n);
    }
    /* Even when settling failed after the claim, the leases are ours to give back. */
    for (size_t i = 0; i < r->n; i++) {
        snprintf(w->leases[i].key, sizeof w->leases[i].key, "%s",
                 key_lease(r->association, r->groups[i].group).s);
        snprintf(w->leases[i].token, sizeof w->leases[i].token, "%s", token);
    }
    w->n_leases = r->n;
    sync_leases_held(w);
    return rc;
}

/* Records how one group's sync ended: done, or due again after its retry time. */
static int finish_group(struct sync_worker *w, const struct round *r, size_t i,
                        enum sync_result res, int64_t retry_ms, int64_t *earliest)
{
    redisContext *c = w->redis;
    /* A lease already given back (the round lost another group's) was ours until then. */
    const char *g = r->groups[i].group, *fence = w->leases[i].key[0] ? w->leases[i].token : NULL;
    if (res == SYNC_RETRY && retry_ms <= 0) {
        long n;
        group_count_attempt(c, r->association, g, fence, &n);
        long base = 1000L << (n > 8 ? 8 : n);
        retry_ms = base / 2 + rand() % (base / 2 + 1);
    } else if (res == SYNC_DONE) {
        group_clear_attempts(c, r->association, g, fence);
    }
    bool done = res == SYNC_DONE;
    int64_t due = now_ms() + (done ? sync_delay_ms(w) : retry_ms);
    int rc =
        schedule_finish_fenced(c, r->association, g, r->groups[i].gen, fence, done, due, earliest);
    return rc == SCHEDULE_FENCED ? STORE_OK : rc; /* lost meanwhile: the holder finishes it */
}

/* Ends a round: each group done, due again, or handed back; the leases given
 * back; the association's entry in the index of due associations set to what
 * the last finish saw (schedule_settle). */
static int finish_round(struct sync_worker *w, const struct round *r,
                        const enum sync_result *results, const int64_t *retry_ms)
{
    redisContext *c = w->redis;
    int64_t earliest = SCHEDULE_NONE;
    bool finished = false;
    int rc = STORE_OK;
    size_t held = w->n_leases;
    w->n_leases = 0;
    sync_leases_held(w); /* given back below: no longer the heartbeat's */
    w->n_leases = held;
    for (size_t i = 0; i < r->n && rc == STORE_OK; i++) {
        struct lease *l = &w->leases[i];
        enum sync_result res = results[i];
        int64_t retry = retry_ms[i];
        if (res == SYNC_LEASE_LOST && lease_release(c, l) == 1) {
            /* Another group's lease was lost, not this one's: it is due again soon. */
            l->key[0] = '\0';
            res = SYNC_RETRY;
            retry = w->app->cfg->sync_delay_ms;
        } else if (res == SYNC_STOPPED && lease_release(c, l) == 1) {
            /* Shutdown: handed back due now, not when the claim's park ends
             * (up to a lease later), so the next process goes on at once. */
            l->key[0] = '\0';
            rc = schedule_requeue(c, r->association, r->groups[i].group, now_ms());
        }
        if (res == SYNC_DONE || res == SYNC_RETRY) {
            rc = finish_group(w, r, i, res, retry, &earliest);
            finished = true;
        }
    }
    if (rc != STORE_OK)
        return rc; /* the leases are given back after reconnecting */
    release_leases(w);
    return finished ? schedule_settle(c, r->association, earliest) : STORE_OK;
}

static void count_round(const struct round *r, const enum sync_result *results, long long ms)
{
    static const char *names[] = {"done", "retry", "lease_lost", "redis_error", "stopped"};
    for (size_t i = 0; i < r->n; i++) {
        char labels[48];
        snprintf(labels, sizeof labels, "outcome=\"%s\"", names[results[i]]);
        metrics_inc("ccsync_syncs_total", labels);
        log_info("group_synced", LOG_STR("association", r->association),
                 LOG_STR("group", r->groups[i].group), LOG_STR("outcome", names[results[i]]),
                 LOG_INT("round_groups", (long long)r->n), LOG_INT("ms", ms));
    }
}

/* Syncs the due groups of one association, if any, in one round; false when
 * Redis failed. *worked says whether it did. */
static bool sync_due_groups(struct sync_worker *w, bool *worked)
{
    *worked = false;
    if (!sync_may_start_round(w))
        return true; /* the day is short: the groups keep gathering changes */
    struct round *r = calloc(1, sizeof *r);
    if (!r)
        return true;
    int rc = claim_round(w, r);
    *worked = r->n > 0;
    if (rc != STORE_OK || r->n == 0) {
        free(r);
        return rc == STORE_OK;
    }
    const char *groups[SYNC_MAX_GROUPS];
    enum sync_result results[SYNC_MAX_GROUPS];
    int64_t retry_ms[SYNC_MAX_GROUPS];
    for (size_t i = 0; i < r->n; i++)
        groups[i] = r->groups[i].group;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    sync_groups(w, r->association, groups, r->n, results, retry_ms);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    sync_note_activity(w->redis, r->association); /* reconcile looks sooner at busy ones */
    count_round(r, results, (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000);
    bool redis_failed = w->redis->err != 0;
    for (size_t i = 0; i < r->n; i++)
        redis_failed = redis_failed || results[i] == SYNC_REDIS;
    /* After a Redis failure the leases are given back once reconnected. */
    if (!redis_failed)
        rc = finish_round(w, r, results, retry_ms);
    free(r);
    return !redis_failed && rc == STORE_OK && w->redis->err == 0;
}

/* ---- the thread ---- */

/* What one thread keeps from one turn of its loop to the next. */
struct thread_state {
    struct sync_worker w;
    atomic_bool *legacy; /* the engine's: KEY_LEGACY_EVENTS holds events */
    int index;
    char consumer[128];
    bool group_ready;
    int64_t next_sweep, next_reconcile, next_repair;
    struct lease stale[SYNC_MAX_GROUPS]; /* held when Redis failed: given back once reconnected */
    size_t n_stale;
};

/* Connects; gives back the leases held when the last connection failed, so
 * that their groups need not wait for them to expire (e.g. after a Redis restart). */
static bool reconnect(struct thread_state *s, const struct config *cfg)
{
    char err[256] = "";
    s->w.redis = store_connect(&cfg->redis, 5000, err, sizeof err);
    if (!s->w.redis) {
        log_warn("worker_redis_unavailable", LOG_INT("worker", s->index), LOG_STR("error", err));
        return false;
    }
    s->group_ready = true;
    if (s->n_stale > 0) {
        memcpy(s->w.leases, s->stale, s->n_stale * sizeof *s->stale);
        s->w.n_leases = s->n_stale;
        release_leases(&s->w);
        s->n_stale = 0;
    }
    return true;
}

static void drop_connection(struct thread_state *s)
{
    struct sync_worker *w = &s->w;
    log_warn("worker_redis_failed", LOG_INT("worker", s->index),
             LOG_STR("error", w->redis && w->redis->err ? w->redis->errstr : "command failed"));
    metrics_inc("ccsync_redis_errors_total", "where=\"worker\"");
    if (w->redis)
        redisFree(w->redis);
    w->redis = NULL;
    for (size_t i = 0; i < w->n_leases; i++)
        if (w->leases[i].key[0] && s->n_stale < SYNC_MAX_GROUPS)
            s->stale[s->n_stale++] = w->leases[i];
    w->n_leases = 0;
    sync_leases_held(w); /* the heartbeat goes on without them; they are given back later */
}

/* The sweep's callback: a batch of the entries of stream that a dead
 * consumer left, taken over and folded (or dead-lettered after too many). */
static int reclaim_stream(void *arg, const char *stream)
{
    struct thread_state *s = arg;
    size_t n;
    return consume(&s->w, stream, s->consumer, true, NULL, &n) ? STORE_OK : STORE_ERR;
}

/* Looks at every association's stream (queue_sweep): puts back in line what a
 * crash left out, reclaims what dead consumers left, notices the legacy stream. */
static bool sweep(struct thread_state *s)
{
    bool legacy;
    int rc = queue_sweep(s->w.redis, now_us(), &legacy, reclaim_stream, s);
    if (rc == STORE_OK && legacy)
        atomic_store(s->legacy, true);
    return rc == STORE_OK;
}

/* One turn of the loop; false when Redis failed. The first thread of each
 * process also sweeps the streams, and repairs the index of due associations
 * now and then (see schedule.h: a process that died mid-step can leave an
 * entry late). */
static bool turn(struct thread_state *s)
{
    bool worked;
    /* Wait for events only when nothing else is there to drain. */
    int block_ms = s->group_ready && !atomic_load(s->legacy) ? TAKE_BLOCK_MS : 0;
    bool ok = consume_turn(&s->w, s->consumer, block_ms);
    if (ok)
        ok = consume_legacy(&s->w, s->legacy, s->consumer);
    if (ok && s->index == 0 && now_ms() >= s->next_sweep) {
        ok = sweep(s);
        s->next_sweep = now_ms() + QUEUE_SWEEP_MS;
    }
    if (ok && s->index == 0 && now_ms() >= s->next_repair) {
        ok = schedule_repair(s->w.redis) == STORE_OK;
        s->next_repair = now_ms() + REPAIR_EVERY_MS;
    }
    if (ok && !atomic_load(s->w.stop))
        ok = sync_due_groups(&s->w, &worked);
    if (ok && now_ms() >= s->next_reconcile) {
        ok = sync_reconcile_due(&s->w);
        s->next_reconcile = now_ms() + 1000;
    }
    return ok;
}

static void *worker_main(void *arg)
{
    struct worker_thread *t = arg;
    struct engine *e = t->engine;
    const struct config *cfg = e->app->cfg;
    struct thread_state *s = calloc(1, sizeof *s);
    if (!s)
        goto out;
    s->w = (struct sync_worker){.app = e->app,
                                .stop = &e->stop,
                                .lease_ms = cfg->lease_seconds * 1000,
                                .keeper = e->keeper,
                                .keeper_slot = (size_t)t->index};
    s->index = t->index;
    s->legacy = &e->legacy;
    ratelimit_conf_from_config(&s->w.budget, cfg);
    s->w.cc = ccapi_new(cfg->cc_api_url, CC_TIMEOUT_MS);
    char host[64] = "host";
    gethostname(host, sizeof host - 1);
    snprintf(s->consumer, sizeof s->consumer, "%s-%d-%d", host, getpid(), t->index);
    srand((unsigned)(time(NULL) ^ getpid() ^ (t->index << 16)));
    s->next_reconcile = now_ms() + 1000;
    atomic_fetch_add(&e->app->workers_up, 1);
    while (!atomic_load(&e->stop)) {
        if (!s->w.redis && !reconnect(s, cfg)) {
            sleep_ms(1000);
            continue;
        }
        if (!turn(s)) {
            drop_connection(s);
            sleep_ms(200);
        }
    }
    if (s->w.redis)
        redisFree(s->w.redis);
    ccapi_free(s->w.cc);
    free(s);
    atomic_fetch_sub(&e->app->workers_up, 1);
out:
    atomic_fetch_sub(&e->running, 1);
    free(t);
    return NULL;
}

/* A lease the keeper gave back for this instance's killed predecessor: its
 * group is due now (it was parked until the lease's end). */
static void requeue_orphan(redisContext *c, const char *lease_key)
{
    char association[CCSYNC_ASSOC_ID_MAX + 1], group[KEY_MAX];
    if (key_lease_parse(lease_key, association, sizeof association, group, sizeof group) != 0)
        return; /* a reconcile lease: reconcile comes round by itself */
    schedule_requeue(c, association, group, now_ms());
}

struct engine *engine_start(struct app *app)
{
    struct engine *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->app = app;
    e->n = app->cfg->workers;
    /* The instance is its host and port: the same one restarted after a kill -9
     * takes its predecessor's groups back at once. */
    char host[64] = "host", instance[96];
    gethostname(host, sizeof host - 1);
    snprintf(instance, sizeof instance, "%s:%d", host, app->cfg->listen_port);
    e->keeper = lease_keeper_start(&app->cfg->redis, app->cfg->lease_seconds * 1000, (size_t)e->n,
                                   instance, requeue_orphan);
    e->threads = calloc((size_t)e->n, sizeof *e->threads);
    for (int i = 0; e->threads && i < e->n; i++) {
        struct worker_thread *t = calloc(1, sizeof *t);
        t->engine = e;
        t->index = i;
        atomic_fetch_add(&e->running, 1);
        if (pthread_create(&e->threads[i], NULL, worker_main, t) != 0) {
            atomic_fetch_sub(&e->running, 1);
            free(t);
        }
    }
    return e;
}

bool engine_stop(struct engine *e, long grace_ms)
{
    if (!e)
        return true;
    atomic_store(&e->stop, true);
    /* Threads see the flag within ~100 ms (sleeps and Redis blocks are short);
     * a sync interrupted mid-way leaves its journal and lease for the next. */
    long waited = 0;
    while (atomic_load(&e->running) > 0 && waited < grace_ms) {
        sleep_ms(20);
        waited += 20;
    }
    if (atomic_load(&e->running) == 0) {
        for (int i = 0; i < e->n; i++)
            pthread_join(e->threads[i], NULL);
        lease_keeper_stop(e->keeper);
        free(e->threads);
        free(e);
        return true;
    }
    log_warn("workers_did_not_stop", LOG_INT("still_running", atomic_load(&e->running)));
    return false;
}
