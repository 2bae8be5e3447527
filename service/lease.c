/*
 * lease.c - leases in Redis (see lease.h). Renewing and releasing check the
 * token inside a script, so a holder whose lease ran out and was taken over can
 * neither extend nor delete the new holder's lease.
 */
#include "ccsync/lease.h"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <unistd.h>

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
