/*
 * worker.c - the worker threads' loop.
 *
 * Each thread, in turn: folds new events from the stream into state (and
 * acknowledges them), now and then reclaims events a dead consumer left
 * pending, syncs one due group under that group's lease, and reconciles an
 * association whose turn has come. All coordination goes through Redis, so
 * threads of several ccsyncd processes share the work the same way.
 *
 * ccsync:dirty    zset "assoc|group" -> due time (ms): groups to sync. While a
 *                 worker syncs a group the score is parked at the lease's end,
 *                 so the group comes back by itself if the worker dies.
 * ccsync:lease:*  one holder per group (SET NX PX, renewed on every CC call)
 * ccsync:retrying set of "assoc|group" whose last sync failed and will retry
 * ccsync:reconcile zset association -> next reconcile time (ms)
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
#include "ccsync/log.h"
#include "ccsync/metrics.h"
#include "ccsync/queue.h"
#include "ccsync/script.h"
#include "ccsync/store.h"
#include "ccsync/sync.h"
#include "ccsync/webhook.h"

#define READ_BATCH 64
#define LEASE_MS 60000
#define RECLAIM_EVERY_MS 5000
#define CC_TIMEOUT_MS 30000

struct engine {
    struct app *app;
    int n;
    pthread_t *threads;
    atomic_bool stop;
    atomic_int running;
};

struct worker_thread {
    struct engine *engine;
    int index;
};

static int64_t now_ms(void)
{
    return store_now_ns() / 1000000;
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
    log_error("event_dead_lettered", LOG_STR("entry", e->id), LOG_STR("association", e->association),
              LOG_STR("webhook_id", e->webhook_id), LOG_STR("reason", reason));
}

/*
 * Folds a batch of entries and acknowledges those whose facts are stored.
 * Events that fit one script call are folded in one pipeline (one round trip
 * for the batch); snapshots, events the server lacked a script for and dead
 * letters are handled one by one after it. Returns false when Redis failed:
 * entries not acknowledged stay pending and come back (folding is idempotent).
 */
static bool process_batch(struct sync_worker *w, const struct queue_entry *entries, size_t n,
                          bool reclaimed)
{
    redisContext *c = w->redis;
    struct event *events = calloc(n, sizeof *events);
    /* per entry: 0 to fold alone, 1 appended, 2 done (dead-lettered), 3 folded */
    char *how = calloc(n, 1);
    const char **acks = calloc(n, sizeof *acks);
    size_t n_acks = 0, appended = 0;
    bool ok = events && how && acks;
    int64_t now = store_now_ns();
    int delay = w->app->cfg->sync_delay_ms;

    for (size_t i = 0; ok && i < n; i++) {
        const struct queue_entry *e = &entries[i];
        struct webhook_error err;
        if (reclaimed && queue_deliveries(c, e->id) > QUEUE_MAX_DELIVERIES) {
            dead_letter_log(e, "too many attempts");
            ok = queue_dead_letter(c, e, "could not be applied after repeated attempts") == 0;
            how[i] = 2;
        } else if (!e->association || !e->body ||
                   webhook_parse_event(e->body, e->body_len, &events[i], &err) != 0) {
            const char *reason = e->body ? err.message : "entry has no body";
            dead_letter_log(e, reason);
            ok = queue_dead_letter(c, e, reason) == 0;
            how[i] = 2;
        }
    }
    for (size_t i = 0; ok && i < n; i++) {
        if (how[i] != 0)
            continue;
        int a = facts_fold_append(c, entries[i].association, &events[i], now, delay);
        if (a < 0)
            ok = false;
        how[i] = a == 1 ? 1 : 0;
        appended += a == 1;
    }
    for (size_t i = 0; i < n && appended > 0; i++) {
        if (how[i] != 1)
            continue;
        appended--;
        int r = facts_fold_reply(c);
        if (r < 0)
            ok = false;
        how[i] = r == 1 ? 3 : 0; /* NOSCRIPT: fold alone below */
    }
    for (size_t i = 0; ok && i < n; i++) {
        if (how[i] == 0) {
            if (facts_fold(c, entries[i].association, &events[i], now, delay) != 0) {
                count_event("redis_error");
                ok = false;
                break;
            }
            how[i] = 3;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (how && how[i] == 3) {
            count_event("folded");
            acks[n_acks++] = entries[i].id;
        }
        if (events)
            event_clear(&events[i]);
    }
    if (ok || !c->err)
        ok = queue_ack_many(c, acks, n_acks) == 0 && ok;
    free(events);
    free(how);
    free(acks);
    return ok;
}

static bool consume(struct sync_worker *w, const char *consumer, bool reclaim, int block_ms, bool *got)
{
    struct queue_entry entries[READ_BATCH];
    size_t n;
    *got = false;
    redisReply *r = queue_read(w->redis, consumer, reclaim, block_ms, entries, READ_BATCH, &n);
    if (!r)
        return false;
    bool ok = process_batch(w, entries, n, reclaim);
    *got = n > 0;
    freeReplyObject(r);
    return ok;
}

/* ---- group syncs ---- */

static const char release_script[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end\n"
    "return 0\n";

/* Ends a sync: drop the group from ccsync:dirty unless a change arrived meanwhile. */
static const char finish_script[] =
    "local gen = redis.call('HGET', KEYS[2], 'gen') or '0'\n"
    "if ARGV[2] == 'done' then\n"
    "  redis.call('SREM', KEYS[3], ARGV[1])\n"
    "  if gen == ARGV[3] then redis.call('ZREM', KEYS[1], ARGV[1])\n"
    "  else redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1]) end\n"
    "else\n"
    "  redis.call('SADD', KEYS[3], ARGV[1])\n"
    "  redis.call('ZADD', KEYS[1], ARGV[5], ARGV[1])\n"
    "end\n"
    "return 1\n";

static void release_lease(struct sync_worker *w)
{
    const char *args[] = {w->lease_key, w->lease_token};
    redisReply *r = script_eval(w->redis, release_script, 1, 2, args);
    if (r)
        freeReplyObject(r);
    w->lease_key[0] = '\0';
}

static bool take_lease(struct sync_worker *w, const char *member)
{
    snprintf(w->lease_key, sizeof w->lease_key, "ccsync:lease:%s", member);
    snprintf(w->lease_token, sizeof w->lease_token, "%d-%ld-%d", getpid(), (long)pthread_self() & 0xffff, rand());
    redisReply *r = redisCommand(w->redis, "SET %s %s NX PX %d", w->lease_key, w->lease_token, w->lease_ms);
    bool got = store_reply_ok(w->redis, r) && r->type == REDIS_REPLY_STATUS;
    if (r)
        freeReplyObject(r);
    if (!got)
        w->lease_key[0] = '\0';
    return got;
}

/* Syncs one due group if there is one; false when Redis failed. *worked says whether it did. */
static bool sync_due_group(struct sync_worker *w, bool *worked)
{
    redisContext *c = w->redis;
    *worked = false;
    redisReply *r = redisCommand(c, "ZRANGEBYSCORE " FACTS_DIRTY_KEY " -inf %lld LIMIT 0 8",
                                 (long long)now_ms());
    if (!store_reply_ok(c, r) || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        return false;
    }
    char member[256] = "";
    for (size_t i = 0; i < r->elements; i++) {
        if (take_lease(w, r->element[i]->str)) {
            snprintf(member, sizeof member, "%s", r->element[i]->str);
            break;
        }
    }
    freeReplyObject(r);
    if (!member[0])
        return true;
    *worked = true;

    char association[CCSYNC_ASSOC_ID_MAX + 1], group[CCSYNC_ID_MAX + 1], gkey[300];
    const char *bar = strchr(member, '|');
    if (!bar || (size_t)(bar - member) > CCSYNC_ASSOC_ID_MAX) {
        redisReply *z = redisCommand(c, "ZREM " FACTS_DIRTY_KEY " %s", member);
        if (z)
            freeReplyObject(z);
        release_lease(w);
        return true;
    }
    snprintf(association, sizeof association, "%.*s", (int)(bar - member), member);
    snprintf(group, sizeof group, "%s", bar + 1);
    snprintf(gkey, sizeof gkey, STORE_PREFIX "a:%s:g:%s", association, group);

    /* Park the entry at the lease's end: if this worker dies, the group returns. */
    redisReply *p = redisCommand(c, "ZADD " FACTS_DIRTY_KEY " XX %lld %s",
                                 (long long)(now_ms() + w->lease_ms), member);
    if (p)
        freeReplyObject(p);
    redisReply *g = redisCommand(c, "HGET %s gen", gkey);
    char gen[32] = "0";
    if (g && g->type == REDIS_REPLY_STRING)
        snprintf(gen, sizeof gen, "%s", g->str);
    if (g)
        freeReplyObject(g);
    if (c->err)
        return false;

    int64_t retry_ms = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    enum sync_result res = sync_group(w, association, group, &retry_ms);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    static const char *names[] = {"done", "retry", "lease_lost", "redis_error", "stopped"};
    char labels[48];
    snprintf(labels, sizeof labels, "outcome=\"%s\"", names[res]);
    metrics_inc("ccsync_syncs_total", labels);
    log_info("group_synced", LOG_STR("association", association), LOG_STR("group", group),
             LOG_STR("outcome", names[res]),
             LOG_INT("ms", (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000));
    if (res == SYNC_REDIS || c->err)
        return false;
    if (res == SYNC_DONE || res == SYNC_RETRY) {
        if (res == SYNC_RETRY && retry_ms <= 0) {
            redisReply *a = redisCommand(c, "HINCRBY %s attempts 1", gkey);
            long n = a && a->type == REDIS_REPLY_INTEGER ? (long)a->integer : 1;
            if (a)
                freeReplyObject(a);
            long base = 1000L << (n > 8 ? 8 : n);
            retry_ms = base / 2 + rand() % (base / 2 + 1);
        } else if (res == SYNC_DONE) {
            redisReply *a = redisCommand(c, "HDEL %s attempts", gkey);
            if (a)
                freeReplyObject(a);
        }
        char again[32], later[32];
        snprintf(again, sizeof again, "%lld", (long long)(now_ms() + w->app->cfg->sync_delay_ms));
        snprintf(later, sizeof later, "%lld", (long long)(now_ms() + retry_ms));
        const char *args[] = {FACTS_DIRTY_KEY, gkey, "ccsync:retrying", member,
                              res == SYNC_DONE ? "done" : "retry", gen, again, later};
        redisReply *f = script_eval(c, finish_script, 3, 8, args);
        if (f)
            freeReplyObject(f);
    }
    release_lease(w);
    return c->err == 0;
}

/* ---- reconcile ---- */

static bool reconcile_due(struct sync_worker *w)
{
    redisContext *c = w->redis;
    int64_t now = now_ms();
    /* Every association has a turn; new ones join at their first chance. */
    redisReply *a = redisCommand(c, "SMEMBERS " STORE_ASSOCIATIONS);
    if (!store_reply_ok(c, a)) {
        if (a)
            freeReplyObject(a);
        return false;
    }
    for (size_t i = 0; i < a->elements; i++) {
        redisReply *z = redisCommand(c, "ZADD ccsync:reconcile NX %lld %s",
                                     (long long)(now + (int64_t)w->app->cfg->reconcile_seconds * 1000),
                                     a->element[i]->str);
        if (z)
            freeReplyObject(z);
    }
    freeReplyObject(a);
    redisReply *r = redisCommand(c, "ZRANGEBYSCORE ccsync:reconcile -inf %lld LIMIT 0 1", (long long)now);
    if (!store_reply_ok(c, r) || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        return false;
    }
    char association[CCSYNC_ASSOC_ID_MAX + 1] = "", member[128];
    if (r->elements == 1)
        snprintf(association, sizeof association, "%s", r->element[0]->str);
    freeReplyObject(r);
    if (!association[0])
        return true;
    snprintf(member, sizeof member, "reconcile|%s", association);
    if (!take_lease(w, member))
        return true;
    redisReply *z = redisCommand(c, "ZADD ccsync:reconcile XX %lld %s",
                                 (long long)(now + (int64_t)w->app->cfg->reconcile_seconds * 1000),
                                 association);
    if (z)
        freeReplyObject(z);
    enum sync_result res = sync_reconcile(w, association);
    log_info("reconciled", LOG_STR("association", association), LOG_INT("result", res));
    release_lease(w);
    return res != SYNC_REDIS && c->err == 0;
}

/* ---- the thread ---- */

static void *worker_main(void *arg)
{
    struct worker_thread *t = arg;
    struct engine *e = t->engine;
    const struct config *cfg = e->app->cfg;
    struct sync_worker w = {.app = e->app, .stop = &e->stop, .lease_ms = LEASE_MS};
    ratelimit_conf_from_config(&w.budget, cfg);
    w.cc = ccapi_new(cfg->cc_api_url, CC_TIMEOUT_MS);
    char host[64] = "host", consumer[128];
    gethostname(host, sizeof host - 1);
    snprintf(consumer, sizeof consumer, "%s-%d-%d", host, getpid(), t->index);
    srand((unsigned)(time(NULL) ^ getpid() ^ (t->index << 16)));
    atomic_fetch_add(&e->app->workers_up, 1);
    int64_t next_reclaim = 0, next_reconcile = now_ms() + 1000;
    bool group_ready = false;
    char stale_key[sizeof w.lease_key] = "", stale_token[sizeof w.lease_token] = "";
    while (!atomic_load(&e->stop)) {
        if (!w.redis) {
            char err[256];
            w.redis = store_connect(&cfg->redis, 5000, err, sizeof err);
            if (!w.redis || queue_ensure_group(w.redis) != 0) {
                if (w.redis) {
                    redisFree(w.redis);
                    w.redis = NULL;
                }
                log_warn("worker_redis_unavailable", LOG_INT("worker", t->index), LOG_STR("error", err));
                sleep_ms(1000);
                continue;
            }
            group_ready = true;
            if (stale_key[0]) {
                snprintf(w.lease_key, sizeof w.lease_key, "%s", stale_key);
                snprintf(w.lease_token, sizeof w.lease_token, "%s", stale_token);
                release_lease(&w);
                stale_key[0] = '\0';
            }
        }
        bool ok = true, got = false, worked = false;
        ok = consume(&w, consumer, false, group_ready ? 200 : 0, &got);
        if (ok && now_ms() >= next_reclaim) {
            bool reclaimed;
            ok = consume(&w, consumer, true, 0, &reclaimed);
            next_reclaim = now_ms() + RECLAIM_EVERY_MS;
        }
        if (ok && !atomic_load(&e->stop))
            ok = sync_due_group(&w, &worked);
        if (ok && now_ms() >= next_reconcile) {
            ok = reconcile_due(&w);
            next_reconcile = now_ms() + 1000;
        }
        if (!ok) {
            log_warn("worker_redis_failed", LOG_INT("worker", t->index),
                     LOG_STR("error", w.redis && w.redis->err ? w.redis->errstr : "command failed"));
            metrics_inc("ccsync_redis_errors_total", "where=\"worker\"");
            if (w.redis)
                redisFree(w.redis);
            w.redis = NULL;
            /* A lease held when Redis failed is given back after reconnecting, so
             * the group need not wait for it to expire (e.g. after a Redis restart). */
            if (w.lease_key[0]) {
                snprintf(stale_key, sizeof stale_key, "%s", w.lease_key);
                snprintf(stale_token, sizeof stale_token, "%s", w.lease_token);
            }
            w.lease_key[0] = '\0';
            sleep_ms(200);
        }
    }
    if (w.redis)
        redisFree(w.redis);
    ccapi_free(w.cc);
    atomic_fetch_sub(&e->app->workers_up, 1);
    atomic_fetch_sub(&e->running, 1);
    free(t);
    return NULL;
}

struct engine *engine_start(struct app *app)
{
    struct engine *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->app = app;
    e->n = app->cfg->workers;
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

void engine_stop(struct engine *e, long grace_ms)
{
    if (!e)
        return;
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
        free(e->threads);
        free(e);
    } else {
        log_warn("workers_did_not_stop", LOG_INT("still_running", atomic_load(&e->running)));
    }
}
