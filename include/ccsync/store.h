/*
 * store.h - Redis connections and the association records kept in Redis.
 *
 * A hiredis context is used by one thread at a time and is discarded after any
 * error (hiredis does not recover a context). store_pool hands contexts to the
 * HTTP handlers; worker threads own theirs.
 */
#ifndef CCSYNC_STORE_H
#define CCSYNC_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ccsync/config.h"
#include "ccsync/keys.h"

struct redisContext;
struct redisReply;

/* Connects, authenticates and selects the database. NULL with err on failure. */
struct redisContext *store_connect(const struct redis_target *t, int timeout_ms, char *err,
                                   size_t err_size);

/*
 * The error vocabulary of the Redis plumbing, as in Redis and hiredis: a
 * function returns STORE_OK or STORE_ERR, and the reason stays where hiredis
 * keeps it (c->err and c->errstr for the connection, the reply's text for a
 * command error, which the function logs or passes on once). Enums are kept for
 * results a caller branches on. freeReplyObject accepts NULL: no guard needed.
 */
#define STORE_OK 0
#define STORE_ERR -1

/* True when r is READONLY, MASTERDOWN or LOADING: the server is no longer (or not
 * yet) a usable primary. The context is then failed (c->err set), so that its
 * owner drops it like a broken connection and reconnects, through Sentinel when
 * configured, to the primary of the moment. */
bool store_reply_moved(struct redisContext *c, const struct redisReply *r);

/* True when the reply is usable (not NULL, not an error) and the context is
 * healthy. Calls store_reply_moved first. */
bool store_reply_ok(struct redisContext *c, struct redisReply *r);

/* Runs one command; the reply when it is usable, else NULL (the reply, if
 * any, is freed; c->err says whether the connection broke). Caller frees. */
struct redisReply *store_command(struct redisContext *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Runs one command whose reply is not needed. STORE_OK or STORE_ERR. */
int store_exec(struct redisContext *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Reads the replies of n pipelined commands. STORE_OK when every one arrived
 * and none was an error; all n are read either way unless the connection broke. */
int store_drain(struct redisContext *c, size_t n);

struct store_pool;
struct store_pool *store_pool_new(const struct redis_target *t, int timeout_ms);
void store_pool_free(struct store_pool *p);
/* A connected context, or NULL when Redis cannot be reached (err says why). */
struct redisContext *store_pool_get(struct store_pool *p, char *err, size_t err_size);
/* Gives a context back; one that saw an error (ok false) is closed instead. */
void store_pool_put(struct store_pool *p, struct redisContext *c, bool ok);

#define ASSOC_TOKEN_MAX 4096

struct association {
    char id[65];
    char webhook_secret[256];               /* secret */
    char cc_access_token[ASSOC_TOKEN_MAX];  /* secret */
    char cc_refresh_token[ASSOC_TOKEN_MAX]; /* secret */
    int64_t cc_expires_at_ns;               /* 0 when unknown */
    char cc_state[32]; /* not_configured, unverified, connected, unauthorized, error */
    char cc_last_error[512];
    int64_t cc_last_error_at_ns;
    int64_t created_at_ns;
    int64_t updated_at_ns;
    uint64_t credentials_version; /* bumped whenever tokens change */
    int unreadable_secrets;       /* secrets that did not open (their key left the ring): left "" */
};

struct secrets_ring;

/* The fields of the association record that hold secrets (sealed at rest). */
#define STORE_N_SECRET_FIELDS 3
extern const char *const store_secret_fields[STORE_N_SECRET_FIELDS];

/* 1 found, 0 unknown association, STORE_ERR Redis error. The secrets are
 * opened with ring (NULL or empty: only plain-text values read). */
int store_association_get(struct redisContext *c, const struct secrets_ring *ring, const char *id,
                          struct association *a);

/* A secret of association id's field as it is stored: sealed with ring's first
 * key, or a copy when there is no ring (CCSYNC_ALLOW_PLAINTEXT_SECRETS). The
 * caller frees it; NULL when out of memory or sealing failed. */
char *store_secret_form(const struct secrets_ring *ring, const char *id, const char *field,
                        const char *value);

/* The parts of a PUT; NULL fields are left as they are. */
struct association_update {
    const char *webhook_secret;
    bool has_cc;
    const char *cc_access_token;
    const char *cc_refresh_token;
    int64_t cc_expires_at_ns; /* 0: not given */
};

/* Creates or updates: the association's own keys atomically in one script,
 * then the global ones (the set of associations, the credentials stream, the
 * index of due associations) in commands that are safe to repeat. Secrets are
 * stored sealed with ring (store_secret_form). STORE_OK
 * (*created says which) or STORE_ERR. */
int store_association_put(struct redisContext *c, const struct secrets_ring *ring, const char *id,
                          const struct association_update *u, int64_t now_ns, bool *created);

int64_t store_now_ns(void);

#endif
