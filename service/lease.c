/*
 * lease.c - leases in Redis (see lease.h). Renewing and releasing check the
 * token inside a script, so a holder whose lease ran out and was taken over can
 * neither extend nor delete the new holder's lease. The keeper at the end is
 * the process's heartbeat.
 */
#include "ccsync/lease.h"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "ccsync/log.h"
#include "ccsync/metrics.h"
#include "ccsync/script.h"
#include "ccsync/store.h"

/* KEYS: the leases; ARGV: their tokens, then the lease time. */
static const char renew_script[] = "local n = 0\n"
                                   "for i, k in ipairs(KEYS) do\n"
                                   "  if redis.call('GET', k) == ARGV[i] then\n"
                                   "    redis.call('PEXPIRE', k, ARGV[#KEYS + 1])\n"
                                   "    n = n + 1\n"
                                   "  end\n"
                                   "end\n"
                                   "return n\n";

/* The same, one answer a lease: 1 renewed, 0 another's (or gone). */
static const char renew_each_script[] = "local held = {}\n"
                                        "for i, k in ipairs(KEYS) do\n"
                                        "  held[i] = 0\n"
                                        "  if redis.call('GET', k) == ARGV[i] then\n"
                                        "    redis.call('PEXPIRE', k, ARGV[#KEYS + 1])\n"
                                        "    held[i] = 1\n"
                                        "  end\n"
                                        "end\n"
                                        "return held\n";

static const char release_script[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end\n"
    "return 0\n";

void lease_new_token(char out[LEASE_TOKEN_SIZE])
{
    unsigned char b[16];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) {
        /* No entropy yet (early boot): unique enough within this host. */
        snprintf(out, LEASE_TOKEN_SIZE, "%d-%lx-%d", getpid(), (unsigned long)pthread_self(),
                 rand());
        return;
    }
    for (size_t i = 0; i < sizeof b; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

int lease_take(redisContext *c, struct lease *l, const struct key *key, int ms)
{
    snprintf(l->key, sizeof l->key, "%s", key->s);
    lease_new_token(l->token);
    redisReply *r = redisCommand(c, "SET %s %s NX PX %d", l->key, l->token, ms);
    if (!store_reply_ok(c, r)) {
        freeReplyObject(r);
        return STORE_ERR;
    }
    int got = r->type == REDIS_REPLY_STATUS;
    freeReplyObject(r);
    return got;
}

int lease_renew(redisContext *c, const struct lease *leases, size_t n, int ms)
{
    if (n == 0)
        return 0;
    const char **args = malloc((2 * n + 1) * sizeof *args);
    if (!args)
        return STORE_ERR;
    char ttl[16];
    snprintf(ttl, sizeof ttl, "%d", ms);
    for (size_t i = 0; i < n; i++) {
        args[i] = leases[i].key;
        args[n + i] = leases[i].token;
    }
    args[2 * n] = ttl;
    redisReply *r = script_eval(c, renew_script, (int)n, (int)(2 * n + 1), args);
    free(args);
    int rc = STORE_ERR;
    if (store_reply_ok(c, r) && r->type == REDIS_REPLY_INTEGER)
        rc = (int)r->integer;
    freeReplyObject(r);
    return rc;
}

int lease_release(redisContext *c, const struct lease *l)
{
    const char *args[] = {l->key, l->token};
    redisReply *r = script_eval(c, release_script, 1, 2, args);
    int rc = STORE_ERR;
    if (store_reply_ok(c, r) && r->type == REDIS_REPLY_INTEGER)
        rc = r->integer == 1;
    freeReplyObject(r);
    return rc;
}

int lease_check(redisContext *c, const struct lease *l)
{
    redisReply *r = store_command(c, "GET %s", l->key);
    if (!r)
        return STORE_ERR;
    int ours = r->type == REDIS_REPLY_STRING && strcmp(r->str, l->token) == 0;
    freeReplyObject(r);
    return ours;
}

/* Renews each of n (<= SCRIPT's 32 arguments: 15) leases; held[i] 1 when
 * leases[i] was still ours. STORE_OK or STORE_ERR. */
static int renew_each(redisContext *c, const struct lease *leases, size_t n, int ms, int *held)
{
    const char *args[31];
    char ttl[16];
    snprintf(ttl, sizeof ttl, "%d", ms);
    for (size_t i = 0; i < n; i++) {
        args[i] = leases[i].key;
        args[n + i] = leases[i].token;
    }
    args[2 * n] = ttl;
    redisReply *r = script_eval(c, renew_each_script, (int)n, (int)(2 * n + 1), args);
    int rc = STORE_ERR;
    if (store_reply_ok(c, r) && r->type == REDIS_REPLY_ARRAY && r->elements == n) {
        for (size_t i = 0; i < n; i++)
            held[i] = r->element[i]->type == REDIS_REPLY_INTEGER && r->element[i]->integer == 1;
        rc = STORE_OK;
    }
    freeReplyObject(r);
    return rc;
}

/* ---- the keeper ---- */

#define KEEPER_SLOT_MAX 32 /* leases a slot holds: a round's groups (see sync.h) */
#define KEEPER_BATCH 15    /* leases renewed by one script call */

/* One worker's leases. The worker writes them (lease_keeper_hold), the keeper
 * reads them and marks the lost ones; both under mu. gen tells the keeper
 * whether the leases it renewed are still the slot's when it marks them. */
struct keeper_slot {
    pthread_mutex_t mu;
    struct lease leases[KEEPER_SLOT_MAX];
    bool lost[KEEPER_SLOT_MAX];
    size_t n;
    unsigned long gen;
};

struct lease_keeper {
    const struct redis_target *target;
    int ms;
    size_t n_slots;
    struct keeper_slot *slots;
    atomic_bool stop;
    pthread_t thread;
    redisContext *redis; /* the keeper thread's own */
};

static void keeper_sleep(struct lease_keeper *k, long ms)
{
    while (ms > 0 && !atomic_load(&k->stop)) {
        long slice = ms > 100 ? 100 : ms;
        struct timespec ts = {0, slice * 1000000L};
        nanosleep(&ts, NULL);
        ms -= slice;
    }
}

/* Marks leases[from..from+n) of slot s lost where held says so, if the slot
 * still holds what was renewed (gen), and logs each once. */
static void keeper_mark(struct keeper_slot *s, unsigned long gen, size_t from, size_t n,
                        const int *held)
{
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; s->gen == gen && i < n; i++) {
        if (held[i] || s->lost[from + i])
            continue;
        s->lost[from + i] = true;
        log_warn("lease_lost", LOG_STR("lease", s->leases[from + i].key),
                 LOG_STR("why", "taken over or expired: the holder stops and writes nothing"));
        metrics_inc("ccsync_leases_lost_total", "");
    }
    pthread_mutex_unlock(&s->mu);
}

/* Renews the leases of one slot; false when Redis failed. */
static bool keeper_renew_slot(struct lease_keeper *k, struct keeper_slot *s)
{
    struct lease leases[KEEPER_SLOT_MAX];
    size_t n = 0;
    pthread_mutex_lock(&s->mu);
    unsigned long gen = s->gen;
    for (size_t i = 0; i < s->n; i++)
        leases[i] = s->leases[i];
    n = s->n;
    pthread_mutex_unlock(&s->mu);
    /* A lost lease is renewed again harmlessly (the script sees another token). */
    for (size_t from = 0; from < n; from += KEEPER_BATCH) {
        size_t m = n - from < KEEPER_BATCH ? n - from : KEEPER_BATCH;
        int held[KEEPER_BATCH];
        if (renew_each(k->redis, &leases[from], m, k->ms, held) != STORE_OK)
            return false;
        keeper_mark(s, gen, from, m, held);
    }
    return true;
}

/* One heartbeat: every slot's leases renewed; reconnects after a failure. */
static void keeper_beat(struct lease_keeper *k)
{
    if (!k->redis) {
        char err[256] = "";
        k->redis = store_connect(k->target, 2000, err, sizeof err);
        if (!k->redis) {
            log_warn("lease_keeper_redis_unavailable", LOG_STR("error", err));
            return;
        }
    }
    for (size_t i = 0; i < k->n_slots; i++) {
        if (!keeper_renew_slot(k, &k->slots[i])) {
            metrics_inc("ccsync_redis_errors_total", "where=\"lease_keeper\"");
            redisFree(k->redis);
            k->redis = NULL;
            return;
        }
    }
}

static void *keeper_main(void *arg)
{
    struct lease_keeper *k = arg;
    long every = k->ms / 3 > 0 ? k->ms / 3 : 1;
    while (!atomic_load(&k->stop)) {
        keeper_beat(k);
        keeper_sleep(k, every);
    }
    if (k->redis)
        redisFree(k->redis);
    return NULL;
}

static void keeper_free(struct lease_keeper *k)
{
    for (size_t i = 0; k->slots && i < k->n_slots; i++)
        pthread_mutex_destroy(&k->slots[i].mu);
    free(k->slots);
    free(k);
}

struct lease_keeper *lease_keeper_start(const struct redis_target *t, int ms, size_t n_slots)
{
    struct lease_keeper *k = calloc(1, sizeof *k);
    if (!k)
        return NULL;
    k->target = t;
    k->ms = ms;
    k->slots = calloc(n_slots ? n_slots : 1, sizeof *k->slots);
    if (!k->slots) {
        free(k);
        return NULL;
    }
    k->n_slots = n_slots;
    for (size_t i = 0; i < n_slots; i++)
        pthread_mutex_init(&k->slots[i].mu, NULL);
    atomic_init(&k->stop, false);
    if (pthread_create(&k->thread, NULL, keeper_main, k) != 0) {
        keeper_free(k);
        return NULL;
    }
    return k;
}

void lease_keeper_stop(struct lease_keeper *k)
{
    if (!k)
        return;
    atomic_store(&k->stop, true);
    pthread_join(k->thread, NULL);
    keeper_free(k);
}

void lease_keeper_hold(struct lease_keeper *k, size_t slot, const struct lease *leases, size_t n)
{
    if (!k || slot >= k->n_slots)
        return;
    struct keeper_slot *s = &k->slots[slot];
    if (n > KEEPER_SLOT_MAX)
        n = KEEPER_SLOT_MAX;
    pthread_mutex_lock(&s->mu);
    s->n = 0;
    for (size_t i = 0; i < n; i++) {
        if (!leases[i].key[0])
            continue; /* given back already */
        s->leases[s->n] = leases[i];
        s->lost[s->n++] = false;
    }
    s->gen++;
    pthread_mutex_unlock(&s->mu);
}
