/*
 * reseal.h - brings every secret at rest under the key ring's first key: at
 * start, plain-text secrets (written before sealing existed, or while
 * CCSYNC_ALLOW_PLAINTEXT_SECRETS=1) are sealed, and values sealed with an
 * older key are sealed again with the first. That is both the one-time
 * migration to encryption at rest and the middle step of a key rotation (add a
 * key first in the file, restart, check /v1/status, drop the old line).
 *
 * Each value is replaced only if it is still the one read (a compare-and-set
 * script), so a PUT or a token refresh meanwhile wins, several processes may
 * run the pass at once, and a pass that dies midway is finished by the next.
 */
#ifndef CCSYNC_RESEAL_H
#define CCSYNC_RESEAL_H

#include <signal.h>
#include <stdbool.h>

struct redisContext;
struct config;
struct secrets_ring;

struct reseal_report {
    long long associations; /* association records looked at */
    long long sealed;       /* plain-text values this pass sealed */
    long long resealed;     /* values sealed with an older key, sealed again with the first */
    long long plaintext;    /* plain-text values left (no key ring) */
    long long old_key;      /* values left sealed with a key other than the first */
    long long unreadable;   /* values no key of the ring opens: their key left the file */
};

/* Counts what a pass would do, writing nothing (for /v1/status). STORE_OK or
 * STORE_ERR. */
int reseal_count(struct redisContext *c, const struct secrets_ring *ring,
                 struct reseal_report *report);

/* The pass: seals what ring can, counts the rest. STORE_OK or STORE_ERR. */
int reseal_run(struct redisContext *c, const struct secrets_ring *ring,
               struct reseal_report *report);

/* For main.c, after the layout migration: connects and runs the pass (or only
 * counts, without a ring), logs its outcome, and asks Redis to rewrite its AOF
 * when plain text was sealed, so the file stops holding it. STORE_OK, or
 * STORE_ERR when Redis failed (logged). */
int reseal_at_start(const struct config *cfg, struct reseal_report *report);

#endif
