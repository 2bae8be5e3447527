/*
 * lease.h - one holder at a time for a group's sync (or an association's
 * reconcile): a Redis key set with NX and a time to live, holding a token only
 * its holder knows. A holder that dies simply stops renewing, and the lease
 * runs out by itself.
 *
 * The keeper is each process's heartbeat: a thread of its own that renews
 * every lease the process's workers hold, so a lease lives as long as its
 * process does, however long a step takes, and runs out CCSYNC_LEASE_SECONDS
 * after a kill -9. The token is also the fence: the engine's writes carry it
 * and Redis refuses them once the lease is another's (groupstore.c).
 */
#ifndef CCSYNC_LEASE_H
#define CCSYNC_LEASE_H

#include <stddef.h>

#include "ccsync/keys.h"

struct redisContext;
struct redis_target;

#define LEASE_TOKEN_SIZE 40

struct lease {
    char key[KEY_MAX];
    char token[LEASE_TOKEN_SIZE];
};

/* A fresh token, different for every call in every thread and process. */
void lease_new_token(char out[LEASE_TOKEN_SIZE]);

/* Takes the lease named by key for ms with a new token. 1 taken, 0 someone
 * else holds it, STORE_ERR Redis failed. */
int lease_take(struct redisContext *c, struct lease *l, const struct key *key, int ms);

/* Renews each of n leases that is still ours. Returns how many were (n when
 * all), or STORE_ERR when Redis failed. */
int lease_renew(struct redisContext *c, const struct lease *leases, size_t n, int ms);

/* Gives a lease back. 1 it was ours, 0 it had run out or been taken over,
 * STORE_ERR Redis failed. */
int lease_release(struct redisContext *c, const struct lease *l);

/* 1 the lease is still l's (its token is in the key), 0 not, STORE_ERR. */
int lease_check(struct redisContext *c, const struct lease *l);

/* ---- the keeper (heartbeat) ---- */

struct lease_keeper;

/* What to do with a lease the keeper handed back for a dead predecessor (its
 * key): the worker's side makes the group due again. */
typedef void (*lease_orphan_fn)(struct redisContext *c, const char *lease_key);

/* Starts the heartbeat thread: every ms / 3 (at most every second) it renews
 * for ms each lease held in its n_slots slots (one a worker thread), on its own
 * connection to t, and records them under the instance's name (key_instance).
 * First, when instance (e.g. "host:port") names a predecessor that died holding
 * leases (its record stopped being renewed), it gives those back at once and
 * calls orphan for each, instead of letting them run out. NULL when the thread
 * could not start. */
struct lease_keeper *lease_keeper_start(const struct redis_target *t, int ms, size_t n_slots,
                                        const char *instance, lease_orphan_fn orphan);
/* Stops the thread (within ~100 ms) and frees the keeper; NULL is fine. */
void lease_keeper_stop(struct lease_keeper *k);
/* The leases of worker `slot` are now these n (0: it holds none). Copied. A
 * lease the keeper finds taken over is logged (lease_lost) and no longer
 * renewed; the worker learns it from its next renewal or fenced write. */
void lease_keeper_hold(struct lease_keeper *k, size_t slot, const struct lease *leases, size_t n);

#endif
