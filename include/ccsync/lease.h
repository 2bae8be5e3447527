/*
 * lease.h - one holder at a time for a group's sync (or an association's
 * reconcile): a Redis key set with NX and a time to live, holding a token only
 * its holder knows. A holder that dies simply stops renewing, and the lease
 * runs out by itself.
 */
#ifndef CCSYNC_LEASE_H
#define CCSYNC_LEASE_H

#include <stddef.h>

#include "ccsync/keys.h"

struct redisContext;

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

#endif
