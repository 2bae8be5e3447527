/*
 * reseal.c - the pass that puts every secret at rest under the key ring's
 * first key (see reseal.h): the one-time sealing of plain-text secrets and
 * the re-sealing step of a key rotation.
 *
 * It walks the set of associations (SSCAN, a batch at a time), reads each
 * record's secret fields (store.h: store_secret_fields) in one pipelined round
 * trip a batch, and replaces a value only through a compare-and-set script.
 * Plain text stays the same plain text: the credentials version is not bumped
 * (nothing that compares it needs to notice).
 */
#include "ccsync/reseal.h"

#include <hiredis/hiredis.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccsync/config.h"
#include "ccsync/keys.h"
#include "ccsync/log.h"
#include "ccsync/notify.h"
#include "ccsync/script.h"
#include "ccsync/secrets.h"
#include "ccsync/store.h"

#define BATCH 100
#define CONNECT_TIMEOUT_MS 5000

/* KEYS: the association. ARGV: field, value read, value to write. 1 written,
 * 0 the field changed meanwhile (left as it is). */
static const char cas_script[] = "if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then\n"
                                 "  return 0\n"
                                 "end\n"
                                 "redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])\n"
                                 "return 1\n";

struct pass {
    redisContext *c;
    const struct secrets_ring *ring;
    bool write;
    struct reseal_report *rep;
};

/* Where a secret is stored: the hash and its field, and the field name it is
 * sealed under (bound to it with the association). */
struct secret_at {
    struct key key;
    const char *hash_field;
    const char *field;
};

/* Replaces value by its sealing under the first key: 1 done, 0 changed
 * meanwhile, -1 unreadable, STORE_ERR - 1 (-2) Redis. */
static int reseal_value(struct pass *p, const char *association, const struct secret_at *at,
                        const char *value)
{
    const char *field = at->field;
    size_t n = strlen(value) + 1;
    char *plain = malloc(n);
    if (!plain)
        return -1;
    int rc = -1;
    if (secrets_open(p->ring, association, field, value, plain, n) == 0) {
        char *sealed = secrets_seal(p->ring, association, field, plain);
        const char *args[] = {at->key.s, at->hash_field, value, sealed};
        redisReply *r = sealed ? script_eval(p->c, cas_script, 1, 4, args) : NULL;
        rc = store_reply_ok(p->c, r) && r->type == REDIS_REPLY_INTEGER ? (int)r->integer : -2;
        freeReplyObject(r);
        free(sealed);
    }
    OPENSSL_cleanse(plain, n);
    free(plain);
    return rc;
}

/* True when a key of ring opens value. */
static bool opens(const struct secrets_ring *ring, const char *association, const char *field,
                  const char *value)
{
    size_t n = strlen(value) + 1;
    char *plain = malloc(n);
    bool ok = plain && secrets_open(ring, association, field, value, plain, n) == 0;
    if (plain)
        OPENSSL_cleanse(plain, n);
    free(plain);
    return ok;
}

/* Judges one stored value, and seals it when the pass writes. */
static int one_value(struct pass *p, const char *association, const struct secret_at *at,
                     const redisReply *v)
{
    const char *field = at->field;
    if (v->type != REDIS_REPLY_STRING || v->len == 0)
        return STORE_OK;
    bool sealed = secrets_is_sealed(v->str), ring = p->ring && p->ring->n > 0;
    if (!ring) {
        (*(sealed ? &p->rep->unreadable : &p->rep->plaintext))++;
        return STORE_OK;
    }
    if (!secrets_needs_reseal(p->ring, v->str))
        return STORE_OK;
    if (!p->write) {
        bool ok = !sealed || opens(p->ring, association, field, v->str);
        (*(!ok ? &p->rep->unreadable : sealed ? &p->rep->old_key : &p->rep->plaintext))++;
        return STORE_OK;
    }
    int rc = reseal_value(p, association, at, v->str);
    if (rc == -2)
        return STORE_ERR;
    if (rc == -1) {
        p->rep->unreadable++;
        log_error("secret_unreadable", LOG_STR("association", association), LOG_STR("field", field),
                  LOG_STR("doing", "left as it is: put its key back in CCSYNC_SECRETS_KEY_FILE, "
                                   "or PUT the association's secrets again"));
    } else if (rc == 1) {
        (*(sealed ? &p->rep->resealed : &p->rep->sealed))++;
    }
    return STORE_OK;
}

/* The secrets of one association: its record's fields, then its notification
 * settings' secret (got: the HMGET's reply, then the HGET's). */
static int one_association(struct pass *p, const char *id, redisReply *const *got)
{
    if (got[0]->type != REDIS_REPLY_ARRAY || got[0]->elements != STORE_N_SECRET_FIELDS ||
        (got[1]->type != REDIS_REPLY_STRING && got[1]->type != REDIS_REPLY_NIL))
        return STORE_ERR;
    p->rep->associations++;
    int rc = STORE_OK;
    for (size_t f = 0; rc == STORE_OK && f < STORE_N_SECRET_FIELDS; f++) {
        struct secret_at at = {key_association(id), store_secret_fields[f], store_secret_fields[f]};
        rc = one_value(p, id, &at, got[0]->element[f]);
    }
    struct secret_at notify = {key_notify(id), "secret", NOTIFY_SECRET_FIELD};
    return rc == STORE_OK ? one_value(p, id, &notify, got[1]) : rc;
}

/* The secrets of a batch of associations, read in one round trip. */
static int one_batch(struct pass *p, const redisReply *ids)
{
    size_t n = 2 * ids->elements;
    for (size_t i = 0; i < ids->elements; i++) {
        redisAppendCommand(p->c, "HMGET %s %s %s %s", key_association(ids->element[i]->str).s,
                           store_secret_fields[0], store_secret_fields[1], store_secret_fields[2]);
        redisAppendCommand(p->c, "HGET %s secret", key_notify(ids->element[i]->str).s);
    }
    redisReply **got = calloc(n + 1, sizeof *got);
    int rc = got ? STORE_OK : STORE_ERR;
    for (size_t i = 0; rc == STORE_OK && i < n; i++)
        if (redisGetReply(p->c, (void **)&got[i]) != REDIS_OK || !got[i])
            rc = STORE_ERR;
    for (size_t i = 0; rc == STORE_OK && i < ids->elements; i++)
        rc = one_association(p, ids->element[i]->str, &got[2 * i]);
    for (size_t i = 0; got && i < n; i++)
        freeReplyObject(got[i]);
    free(got);
    return rc;
}

static int walk(struct pass *p)
{
    memset(p->rep, 0, sizeof *p->rep);
    char cursor[32] = "0";
    do {
        redisReply *r =
            store_command(p->c, "SSCAN %s %s COUNT %d", KEY_ASSOCIATIONS, cursor, BATCH);
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            freeReplyObject(r);
            return STORE_ERR;
        }
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        int rc = one_batch(p, r->element[1]);
        freeReplyObject(r);
        if (rc != STORE_OK)
            return rc;
    } while (strcmp(cursor, "0") != 0);
    return STORE_OK;
}

int reseal_count(redisContext *c, const struct secrets_ring *ring, struct reseal_report *report)
{
    struct pass p = {c, ring, false, report};
    return walk(&p);
}

int reseal_run(redisContext *c, const struct secrets_ring *ring, struct reseal_report *report)
{
    struct pass p = {c, ring, ring && ring->n > 0, report};
    return walk(&p);
}

/* Plain text sealed now still sits in the AOF's older commands: a rewrite
 * leaves only the current values. Backups taken before still hold it. */
static void rewrite_aof(redisContext *c)
{
    redisReply *r = redisCommand(c, "BGREWRITEAOF");
    if (!store_reply_ok(c, r))
        log_warn("secrets_aof_not_rewritten",
                 LOG_STR("error", r && r->type == REDIS_REPLY_ERROR ? r->str : c->errstr),
                 LOG_STR("doing", "run BGREWRITEAOF on Redis: its AOF still holds the plain text"));
    freeReplyObject(r);
}

static void log_outcome(const struct config *cfg, const struct reseal_report *r)
{
    if (cfg->secrets.n == 0)
        log_warn("secrets_stored_in_plain_text",
                 LOG_STR("why", "CCSYNC_ALLOW_PLAINTEXT_SECRETS=1 and no CCSYNC_SECRETS_KEY_FILE"),
                 LOG_INT("plaintext_values", r->plaintext),
                 LOG_INT("unreadable_values", r->unreadable));
    else
        log_info("secrets_sealed", LOG_STR("key_id", cfg->secrets.keys[0].id),
                 LOG_INT("associations", r->associations), LOG_INT("sealed_now", r->sealed),
                 LOG_INT("resealed_now", r->resealed), LOG_INT("unreadable_values", r->unreadable));
}

int reseal_at_start(const struct config *cfg, struct reseal_report *report)
{
    char err[256];
    redisContext *c = store_connect(&cfg->redis, CONNECT_TIMEOUT_MS, err, sizeof err);
    if (!c) {
        log_error("secrets_pass_failed", LOG_STR("error", err));
        return STORE_ERR;
    }
    int rc = reseal_run(c, &cfg->secrets, report);
    if (rc == STORE_OK && report->sealed > 0)
        rewrite_aof(c);
    if (rc == STORE_OK)
        log_outcome(cfg, report);
    else
        log_error("secrets_pass_failed", LOG_STR("error", c->err ? c->errstr : "unexpected reply"));
    redisFree(c);
    return rc;
}
