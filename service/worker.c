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

/*
 * Claims due groups of one association at once, atomically (so that workers
 * racing for a burst's groups do not split them into several rounds): the
 * first due group whose lease is free decides the association; its other due
 * groups whose leases are free join, up to ARGV[4]. Each claimed group's lease
 * is taken, its ccsync:dirty entry parked at the lease's end (if the worker
 * dies, the group returns), and its gen read. Entries without '|' are dropped.
 * KEYS: ccsync:dirty. ARGV: now ms, lease ms, token, max, park-until ms, scan.
 * Returns {member, gen, member, gen, ...}.
 */
static const char claim_script[] =
    "local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, "
    "tonumber(ARGV[6]))\n"
    "local assoc = nil\n"
    "local out = {}\n"
    "for _, m in ipairs(due) do\n"
    "  local bar = string.find(m, '|', 1, true)\n"
    "  if not bar then\n"
    "    redis.call('ZREM', KEYS[1], m)\n"
    "  else\n"
    "    local a = string.sub(m, 1, bar - 1)\n"
    "    if (assoc == nil or a == assoc) and\n"
    "       redis.call('SET', 'ccsync:lease:' .. m, ARGV[3], 'NX', 'PX', ARGV[2]) then\n"
    "      assoc = a\n"
    "      redis.call('ZADD', KEYS[1], 'XX', ARGV[5], m)\n"
    "      local g = string.sub(m, bar + 1)\n"
    "      out[#out + 1] = m\n"
    "      out[#out + 1] = redis.call('HGET', 'ccsync:a:' .. a .. ':g:' .. g, 'gen') or '0'\n"
    "      if #out >= 2 * tonumber(ARGV[4]) then break end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return out\n";

/* Gives back one lease; true when it was still ours. */
static bool release_one(struct sync_worker *w, const struct lease *l)
{
    const char *args[] = {l->key, l->token};
    redisReply *r = script_eval(w->redis, release_script, 1, 2, args);
    bool ours = r && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    if (r)
        freeReplyObject(r);
    return ours;
}

static void release_leases(struct sync_worker *w)
{
    for (size_t i = 0; i < w->n_leases; i++)
        release_one(w, &w->leases[i]);
    w->n_leases = 0;
}

static void new_token(char *out, size_t size)
{
    snprintf(out, size, "%d-%ld-%d", getpid(), (long)pthread_self() & 0xffff, rand());
}

struct claimed {
    char member[256];
    char association[CCSYNC_ASSOC_ID_MAX + 1];
    char group[CCSYNC_ID_MAX + 1];
    char gkey[300];
    char gen[32];
};

/* Takes the due groups of one association (up to SYNC_MAX_GROUPS) with their
 * leases into w; their entries go to out. -1 when Redis failed. */
static int claim_due_groups(struct sync_worker *w, struct claimed *out)
{
    redisContext *c = w->redis;
    char token[40], now[32], lease[16], max[8], park[32];
    new_token(token, sizeof token);
    int64_t t = now_ms();
    snprintf(now, sizeof now, "%lld", (long long)t);
    snprintf(lease, sizeof lease, "%d", w->lease_ms);
    snprintf(max, sizeof max, "%d", SYNC_MAX_GROUPS);
    snprintf(park, sizeof park, "%lld", (long long)(t + w->lease_ms));
    const char *args[] = {FACTS_DIRTY_KEY, now, lease, token, max, park, "200"};
    redisReply *r = script_eval(c, claim_script, 1, 7, args);
    if (!store_reply_ok(c, r) || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        return -1;
    }
    int n = 0;
    w->n_leases = 0;
    for (size_t i = 0; i + 1 < r->elements && n < SYNC_MAX_GROUPS; i += 2) {
        const char *member = r->element[i]->str;
        struct lease *l = &w->leases[w->n_leases++];
        snprintf(l->key, sizeof l->key, "ccsync:lease:%s", member);
        snprintf(l->token, sizeof l->token, "%s", token);
        const char *bar = strchr(member, '|');
        if (!bar || (size_t)(bar - member) > CCSYNC_ASSOC_ID_MAX ||
            strlen(bar + 1) > CCSYNC_ID_MAX) {
            /* not a group we could sync: forget it */
            redisReply *z = redisCommand(c, "ZREM " FACTS_DIRTY_KEY " %s", member);
            if (z)
                freeReplyObject(z);
            release_one(w, l);
            w->n_leases--;
            continue;
        }
        struct claimed *e = &out[n++];
        snprintf(e->member, sizeof e->member, "%s", member);
        snprintf(e->association, sizeof e->association, "%.*s", (int)(bar - member), member);
        snprintf(e->group, sizeof e->group, "%s", bar + 1);
        snprintf(e->gkey, sizeof e->gkey, STORE_PREFIX "a:%s:g:%s", e->association, e->group);
        snprintf(e->gen, sizeof e->gen, "%s",
                 r->element[i + 1]->type == REDIS_REPLY_STRING ? r->element[i + 1]->str : "0");
    }
    freeReplyObject(r);
    return c->err ? -1 : n;
}

/* Records how one group's sync ended: done, or due again after its retry time. */
static void finish_group(struct sync_worker *w, const struct claimed *e, enum sync_result res,
                         int64_t retry_ms)
{
    redisContext *c = w->redis;
    if (res == SYNC_RETRY && retry_ms <= 0) {
        redisReply *a = redisCommand(c, "HINCRBY %s attempts 1", e->gkey);
        long n = a && a->type == REDIS_REPLY_INTEGER ? (long)a->integer : 1;
        if (a)
            freeReplyObject(a);
        long base = 1000L << (n > 8 ? 8 : n);
        retry_ms = base / 2 + rand() % (base / 2 + 1);
    } else if (res == SYNC_DONE) {
        redisReply *a = redisCommand(c, "HDEL %s attempts", e->gkey);
        if (a)
            freeReplyObject(a);
    }
    char again[32], later[32];
    snprintf(again, sizeof again, "%lld", (long long)(now_ms() + w->app->cfg->sync_delay_ms));
    snprintf(later, sizeof later, "%lld", (long long)(now_ms() + retry_ms));
    const char *args[] = {FACTS_DIRTY_KEY,
                          e->gkey,
                          "ccsync:retrying",
                          e->member,
                          res == SYNC_DONE ? "done" : "retry",
                          e->gen,
                          again,
                          later};
    redisReply *f = script_eval(c, finish_script, 3, 8, args);
    if (f)
        freeReplyObject(f);
}

/* Syncs the due groups of one association, if any, in one round; false when
 * Redis failed. *worked says whether it did. */
static bool sync_due_group(struct sync_worker *w, bool *worked)
{
    redisContext *c = w->redis;
    struct claimed *due = calloc(SYNC_MAX_GROUPS, sizeof *due);
    if (!due)
        return true;
    int n = claim_due_groups(w, due);
    *worked = n > 0;
    if (n <= 0) {
        free(due);
        return n == 0;
    }
    const char *groups[SYNC_MAX_GROUPS];
    enum sync_result results[SYNC_MAX_GROUPS];
    int64_t retry_ms[SYNC_MAX_GROUPS];
    for (int i = 0; i < n; i++)
        groups[i] = due[i].group;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    sync_groups(w, due[0].association, groups, (size_t)n, results, retry_ms);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    static const char *names[] = {"done", "retry", "lease_lost", "redis_error", "stopped"};
    long long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    bool redis_failed = false;
    for (int i = 0; i < n; i++) {
        char labels[48];
        snprintf(labels, sizeof labels, "outcome=\"%s\"", names[results[i]]);
        metrics_inc("ccsync_syncs_total", labels);
        log_info("group_synced", LOG_STR("association", due[i].association),
                 LOG_STR("group", due[i].group), LOG_STR("outcome", names[results[i]]),
                 LOG_INT("round_groups", n), LOG_INT("ms", ms));
        redis_failed = redis_failed || results[i] == SYNC_REDIS;
    }
    if (redis_failed || c->err) {
        free(due);
        return false; /* the leases are given back after reconnecting */
    }
    for (int i = 0; i < n; i++) {
        if (results[i] == SYNC_DONE || results[i] == SYNC_RETRY) {
            finish_group(w, &due[i], results[i], retry_ms[i]);
        } else if (results[i] == SYNC_LEASE_LOST && release_one(w, &w->leases[i])) {
            /* Another group's lease was lost, not this one's: it is due again soon. */
            finish_group(w, &due[i], SYNC_RETRY, w->app->cfg->sync_delay_ms);
            w->leases[i].key[0] = '\0';
        } else if (results[i] == SYNC_STOPPED && release_one(w, &w->leases[i])) {
            /* Shutdown: handed back due now, not when the claim's park ends
             * (up to a lease later), so the next process goes on at once. */
            redisReply *z = redisCommand(c, "ZADD " FACTS_DIRTY_KEY " XX %lld %s",
                                         (long long)now_ms(), due[i].member);
            if (z)
                freeReplyObject(z);
            w->leases[i].key[0] = '\0';
        }
    }
    for (int i = 0; i < n; i++)
        if (w->leases[i].key[0])
            release_one(w, &w->leases[i]);
    w->n_leases = 0;
    free(due);
    return c->err == 0;
}

/* ---- the thread ---- */

static void *worker_main(void *arg)
{
    struct worker_thread *t = arg;
    struct engine *e = t->engine;
    const struct config *cfg = e->app->cfg;
    struct sync_worker w = {.app = e->app, .stop = &e->stop, .lease_ms = cfg->lease_seconds * 1000};
    ratelimit_conf_from_config(&w.budget, cfg);
    w.cc = ccapi_new(cfg->cc_api_url, CC_TIMEOUT_MS);
    char host[64] = "host", consumer[128];
    gethostname(host, sizeof host - 1);
    snprintf(consumer, sizeof consumer, "%s-%d-%d", host, getpid(), t->index);
    srand((unsigned)(time(NULL) ^ getpid() ^ (t->index << 16)));
    atomic_fetch_add(&e->app->workers_up, 1);
    int64_t next_reclaim = 0, next_reconcile = now_ms() + 1000;
    bool group_ready = false;
    struct lease stale[SYNC_MAX_GROUPS];
    size_t n_stale = 0;
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
            if (n_stale > 0) {
                memcpy(w.leases, stale, n_stale * sizeof *stale);
                w.n_leases = n_stale;
                release_leases(&w);
                n_stale = 0;
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
            ok = sync_reconcile_due(&w);
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
            for (size_t i = 0; i < w.n_leases; i++)
                if (w.leases[i].key[0] && n_stale < SYNC_MAX_GROUPS)
                    stale[n_stale++] = w.leases[i];
            w.n_leases = 0;
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
