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
    long every;        /* ms between beats */
    struct key record; /* key_instance: what this instance holds ("" key: none) */
    lease_orphan_fn orphan;
    size_t n_slots;
    struct keeper_slot *slots;
    atomic_bool stop;
    atomic_bool changed; /* a slot changed: record it now, not at the next beat */
    pthread_t thread;
    redisContext *redis; /* the keeper thread's own */
};

static void keeper_sleep(struct lease_keeper *k, long ms)
{
    while (ms > 0 && !atomic_load(&k->stop) && !atomic_load(&k->changed)) {
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

static long long wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the instance's record: "BEAT_MS\nKEY\tTOKEN\n..." ---- */

/* Writes what every slot holds now under the instance's name, for lease time. */
static bool keeper_record(struct lease_keeper *k)
{
    if (!k->record.s[0])
        return true;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return true;
    fprintf(f, "%lld\n", wall_ms());
    for (size_t i = 0; i < k->n_slots; i++) {
        struct keeper_slot *s = &k->slots[i];
        pthread_mutex_lock(&s->mu);
        for (size_t j = 0; j < s->n; j++)
            if (!s->lost[j])
                fprintf(f, "%s\t%s\n", s->leases[j].key, s->leases[j].token);
        pthread_mutex_unlock(&s->mu);
    }
    fclose(f);
    redisReply *r = redisCommand(k->redis, "SET %s %b PX %d", k->record.s, text, len, k->ms);
    bool ok = store_reply_ok(k->redis, r);
    freeReplyObject(r);
    free(text);
    return ok;
}

/* The record's beat (ms), or -1 when there is none; *text gets the record (caller frees). */
static long long record_read(struct lease_keeper *k, char **text)
{
    *text = NULL;
    redisReply *r = store_command(k->redis, "GET %s", k->record.s);
    long long beat = -1;
    if (r && r->type == REDIS_REPLY_STRING) {
        *text = strdup(r->str);
        beat = atoll(r->str);
    }
    freeReplyObject(r);
    return beat;
}

/* Gives back each lease of a dead predecessor's record still holding its token. */
static int keeper_hand_back(struct lease_keeper *k, char *text)
{
    int n = 0;
    char *save = NULL;
    strtok_r(text, "\n", &save); /* the beat */
    for (char *line = strtok_r(NULL, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *tab = strchr(line, '\t');
        if (!tab)
            continue;
        struct lease l;
        snprintf(l.key, sizeof l.key, "%.*s", (int)(tab - line), line);
        snprintf(l.token, sizeof l.token, "%s", tab + 1);
        if (lease_release(k->redis, &l) != 1)
            continue; /* ran out or taken over meanwhile: not the predecessor's any more */
        n++;
        if (k->orphan)
            k->orphan(k->redis, l.key);
    }
    return n;
}

/*
 * A predecessor of this instance (same name) that was killed left its record:
 * once the record is stale (no beat for 3 beats: the holder is dead, not a twin
 * under the same name, whose beats go on), its leases are given back now rather
 * than CCSYNC_LEASE_SECONDS later. Returns false when Redis failed (try again).
 */
static bool keeper_adopt(struct lease_keeper *k)
{
    char *text = NULL;
    long long beat = record_read(k, &text);
    while (beat >= 0 && wall_ms() - beat < 3 * k->every && !atomic_load(&k->stop)) {
        free(text);
        /* Meanwhile this process's own leases are kept alive as usual. */
        for (size_t i = 0; i < k->n_slots; i++)
            if (!keeper_renew_slot(k, &k->slots[i]))
                return false;
        long left = (long)(3 * k->every - (wall_ms() - beat));
        atomic_store(&k->changed, false); /* recorded once the predecessor is dealt with */
        keeper_sleep(k, left < k->every ? left : k->every);
        long long again = record_read(k, &text);
        if (again != beat) {
            if (again >= 0)
                log_warn("instance_name_in_use", LOG_STR("record", k->record.s),
                         LOG_STR("why", "another live ccsyncd has this host and port"));
            free(text);
            return k->redis && !k->redis->err;
        }
    }
    if (beat >= 0 && text) {
        int n = keeper_hand_back(k, text);
        if (n > 0)
            log_info("leases_handed_back", LOG_INT("leases", n),
                     LOG_STR("why", "this instance was restarted: its predecessor's leases "
                                    "go back at once instead of running out"));
    }
    free(text);
    return k->redis && !k->redis->err;
}

/* One heartbeat: every slot's leases renewed and recorded; reconnects after a
 * failure. The first beat hands back a dead predecessor's leases first. */
static void keeper_beat(struct lease_keeper *k, bool *adopted)
{
    if (!k->redis) {
        char err[256] = "";
        k->redis = store_connect(k->target, 2000, err, sizeof err);
        if (!k->redis) {
            log_warn("lease_keeper_redis_unavailable", LOG_STR("error", err));
            return;
        }
    }
    bool ok = *adopted || !k->record.s[0] || keeper_adopt(k);
    *adopted = *adopted || ok;
    for (size_t i = 0; ok && i < k->n_slots; i++)
        ok = keeper_renew_slot(k, &k->slots[i]);
    if (ok && *adopted)
        ok = keeper_record(k);
    if (!ok) {
        metrics_inc("ccsync_redis_errors_total", "where=\"lease_keeper\"");
        redisFree(k->redis);
        k->redis = NULL;
    }
}

static void *keeper_main(void *arg)
{
    struct lease_keeper *k = arg;
    bool adopted = false;
    while (!atomic_load(&k->stop)) {
        atomic_store(&k->changed, false);
        keeper_beat(k, &adopted);
        keeper_sleep(k, k->every);
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

struct lease_keeper *lease_keeper_start(const struct redis_target *t, int ms, size_t n_slots,
                                        const char *instance, lease_orphan_fn orphan)
{
    struct lease_keeper *k = calloc(1, sizeof *k);
    if (!k)
        return NULL;
    k->target = t;
    k->ms = ms;
    k->every = ms / 3 > 1000 ? 1000 : (ms / 3 > 0 ? ms / 3 : 1);
    if (instance)
        k->record = key_instance(instance);
    k->orphan = orphan;
    k->slots = calloc(n_slots ? n_slots : 1, sizeof *k->slots);
    if (!k->slots) {
        free(k);
        return NULL;
    }
    k->n_slots = n_slots;
    for (size_t i = 0; i < n_slots; i++)
        pthread_mutex_init(&k->slots[i].mu, NULL);
    atomic_init(&k->stop, false);
    atomic_init(&k->changed, false);
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
    /* A kill right after a claim must still find the claim in the record. */
    atomic_store(&k->changed, true);
}
