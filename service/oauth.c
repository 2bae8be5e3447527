/*
 * oauth.c - access tokens for Constant Contact: when to refresh, and a
 * refresh that happens once however many threads and processes need it.
 *
 * Single flight: the association's refresh lock (key_refresh_lock) is a lease
 * (lease.h: SET NX PX with a token of the holder's, released only by its
 * holder, so a holder whose lock expired cannot delete the next one's). The holder
 * re-reads the association after taking the lock (the previous holder may have
 * just finished), calls the token endpoint, and stores the rotated refresh
 * token with the new access token in one script that first checks that the
 * credentials it replaces are still the stored ones (cred_version, bumped by
 * every change of the tokens): if an admin PUT new credentials meanwhile,
 * theirs stay. Tokens are stored sealed (store_secret_form) and compared by
 * that version, never by their stored form (each sealing of a value differs).
 * Threads that find the lock taken poll
 * until it is gone, then use what the holder stored; if the holder failed they
 * do not try again themselves (each try may spend the refresh token), they
 * report a transient failure and the worker retries later.
 */
#include "ccsync/oauth.h"

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ccsync/ccapi.h"
#include "ccsync/config.h"
#include "ccsync/keys.h"
#include "ccsync/lease.h"
#include "ccsync/log.h"
#include "ccsync/notify.h"
#include "ccsync/script.h"
#include "ccsync/secrets.h"
#include "ccsync/store.h"

#define LOCK_POLL_NS 20000000LL
/* Waiters give up a little after a dead holder's lock would have expired. */
#define LOCK_WAIT_NS ((OAUTH_LOCK_TTL_MS + 5000) * 1000000LL)
/* A token this close to its expiry is not handed out as a fallback. */
#define FALLBACK_MIN_LEFT_NS (30LL * 1000000000LL)

/* The credentials version a script compares: 0 for a record without one. */
#define LUA_SAME_VERSION "((redis.call('HGET', KEYS[1], 'cred_version') or '0') == ARGV[1])"

/* KEYS: association. ARGV: credentials version read, new access token, new
 * refresh token ("" when CC sent none: the old one stays valid), expires_at ns;
 * the tokens in their stored form. Returns 1 stored, 0 when the credentials
 * changed meanwhile (kept as they are). */
static const char store_script[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end\n"
    "if not " LUA_SAME_VERSION " then return 0 end\n"
    "redis.call('HSET', KEYS[1], 'cc_access_token', ARGV[2], 'cc_expires_at', ARGV[4])\n"
    "if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'cc_refresh_token', ARGV[3]) end\n"
    "redis.call('HINCRBY', KEYS[1], 'cred_version', 1)\n"
    "return 1\n";

/* KEYS: association. ARGV: credentials version the verdict is about, state,
 * message, now ns. A verdict about credentials that have since been replaced
 * is dropped. */
static const char state_script[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end\n"
    "if not " LUA_SAME_VERSION " then return 0 end\n"
    "redis.call('HSET', KEYS[1], 'cc_state', ARGV[2], 'cc_last_error', ARGV[3],\n"
    "           'cc_last_error_at', ARGV[4])\n"
    "return 1\n";

/* KEYS: association. ARGV: credentials version of the access token that worked. */
static const char connected_script[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end\n"
    "if not " LUA_SAME_VERSION " then return 0 end\n"
    "local state = redis.call('HGET', KEYS[1], 'cc_state')\n"
    "if state == 'connected' or state == 'unauthorized' then return 0 end\n"
    "redis.call('HSET', KEYS[1], 'cc_state', 'connected', 'cc_last_error', '')\n"
    "return 1\n";

const char *oauth_status_name(enum oauth_status status)
{
    switch (status) {
    case OAUTH_OK:
        return "ok";
    case OAUTH_TRANSIENT:
        return "transient";
    case OAUTH_UNAUTHORIZED:
        return "unauthorized";
    case OAUTH_NOT_CONNECTED:
        return "not_connected";
    case OAUTH_REDIS_ERROR:
        return "redis_error";
    }
    return "unknown";
}

static enum oauth_status fail(struct oauth_error *err, enum oauth_status status, const char *code,
                              const char *message)
{
    err->status = status;
    snprintf(err->code, sizeof err->code, "%s", code);
    size_t n = strnlen(message, sizeof err->message - 1);
    memcpy(err->message, message, n);
    err->message[n] = '\0';
    return status;
}

static enum oauth_status give(const char *access_token, char *token, size_t size,
                              struct oauth_error *err)
{
    size_t n = strlen(access_token);
    if (n >= size)
        return fail(err, OAUTH_TRANSIENT, "buffer_too_small", "access token buffer too small");
    memcpy(token, access_token, n + 1);
    err->status = OAUTH_OK;
    return OAUTH_OK;
}

static bool rejected_is(const struct association *a, const char *rejected)
{
    return rejected != NULL && strcmp(a->cc_access_token, rejected) == 0;
}

static bool needs_refresh(const struct association *a, const char *rejected, int64_t now)
{
    if (a->cc_access_token[0] == '\0' || rejected_is(a, rejected))
        return true;
    if (a->cc_expires_at_ns == 0)
        return true; /* unknown expiry: one refresh learns it */
    return a->cc_expires_at_ns - now < OAUTH_REFRESH_BEFORE_NS;
}

/* The stored token, when it is not the rejected one and has not expired yet. */
static bool still_usable(const struct association *a, const char *rejected, int64_t now)
{
    if (a->cc_access_token[0] == '\0' || rejected_is(a, rejected))
        return false;
    return a->cc_expires_at_ns == 0 || a->cc_expires_at_ns - now > FALLBACK_MIN_LEFT_NS;
}

/* Records a verdict on the credentials of version version. */
static int set_state(redisContext *c, const char *association, uint64_t version, const char *state,
                     const char *message)
{
    char now[32], v[24];
    struct key k = key_association(association);
    snprintf(now, sizeof now, "%lld", (long long)store_now_ns());
    snprintf(v, sizeof v, "%llu", (unsigned long long)version);
    const char *args[] = {k.s, v, state, message, now};
    redisReply *r = script_eval(c, state_script, 1, 5, args);
    int rc = store_reply_ok(c, r) ? STORE_OK : STORE_ERR;
    freeReplyObject(r);
    return rc;
}

static enum oauth_status redis_failed(struct oauth_error *err)
{
    return fail(err, OAUTH_REDIS_ERROR, "redis", "Redis failed while reading or storing tokens");
}

/* Loads the association; anything but 1 is the answer to give. */
static int load(redisContext *c, const struct config *cfg, const char *association,
                struct association *a, struct oauth_error *err)
{
    int found = store_association_get(c, &cfg->secrets, association, a);
    if (found < 0) {
        redis_failed(err);
        return -1;
    }
    if (found == 0) {
        fail(err, OAUTH_NOT_CONNECTED, "unknown_association", "unknown association");
        return 0;
    }
    return 1;
}

/* Waits until nobody holds the lock. 0 gone, 1 still held at the deadline, -1 Redis. */
static int lock_wait(redisContext *c, const char *key, int64_t deadline)
{
    for (;;) {
        redisReply *r = store_command(c, "EXISTS %s", key);
        if (!r || r->type != REDIS_REPLY_INTEGER) {
            freeReplyObject(r);
            return -1;
        }
        bool held = r->integer != 0;
        freeReplyObject(r);
        if (!held)
            return 0;
        if (store_now_ns() >= deadline)
            return 1;
        struct timespec ts = {0, LOCK_POLL_NS};
        nanosleep(&ts, NULL);
    }
}

/* The refresh failed without a verdict on the grant: the current token if it
 * still works for a while, else a transient failure. */
static enum oauth_status fall_back(const struct association *a, const char *rejected, char *token,
                                   size_t size, struct oauth_error *err)
{
    if (still_usable(a, rejected, store_now_ns())) {
        log_warn("cc_token_refresh_deferred", LOG_STR("association", a->id),
                 LOG_STR("reason", err->code));
        return give(a->cc_access_token, token, size, err);
    }
    err->status = OAUTH_TRANSIENT;
    return OAUTH_TRANSIENT;
}

/* Stores what the token endpoint gave; a holds the credentials it replaced. */
static enum oauth_status store_new_token(redisContext *c, const struct config *cfg,
                                         struct association *a, const struct ccapi_token *t,
                                         int64_t sent_at, char *token, size_t size,
                                         struct oauth_error *err)
{
    char expires[32], version[24];
    long expires_in = t->expires_in > 0 ? t->expires_in : OAUTH_DEFAULT_EXPIRES_IN_S;
    /* Counted from before the request, so the stored expiry is never late. */
    int64_t expires_at = sent_at + (int64_t)expires_in * 1000000000LL;
    struct key k = key_association(a->id);
    snprintf(expires, sizeof expires, "%lld", (long long)expires_at);
    snprintf(version, sizeof version, "%llu", (unsigned long long)a->credentials_version);
    char *access = store_secret_form(&cfg->secrets, a->id, "cc_access_token", t->access_token);
    char *refresh = t->refresh_token ? store_secret_form(&cfg->secrets, a->id, "cc_refresh_token",
                                                         t->refresh_token)
                                     : strdup("");
    const char *args[] = {k.s, version, access, refresh, expires};
    redisReply *r = access && refresh ? script_eval(c, store_script, 1, 5, args) : NULL;
    free(access);
    free(refresh);
    if (!store_reply_ok(c, r) || r->type != REDIS_REPLY_INTEGER) {
        freeReplyObject(r);
        /* The old refresh token is spent and the new one is lost with this
         * reply; the association will need new credentials if it never lands. */
        log_error("cc_token_refresh_not_stored", LOG_STR("association", a->id));
        return redis_failed(err);
    }
    bool stored = r->integer == 1;
    freeReplyObject(r);
    if (stored) {
        log_info("cc_token_refreshed", LOG_STR("association", a->id),
                 LOG_INT("expires_in_s", expires_in));
        return give(t->access_token, token, size, err);
    }
    /* New credentials were PUT while we refreshed: they win. */
    log_info("cc_token_refresh_superseded", LOG_STR("association", a->id));
    char id[sizeof a->id];
    memcpy(id, a->id, sizeof id);
    if (load(c, cfg, id, a, err) != 1)
        return err->status;
    if (a->cc_access_token[0] == '\0')
        return fail(err, OAUTH_NOT_CONNECTED, "no_access_token",
                    "no Constant Contact access token is stored");
    return give(a->cc_access_token, token, size, err);
}

/* The token endpoint did not give a token: CC refused the grant (reconnect),
 * our configuration is wrong, or it failed for now (the current token if it
 * still works, else retry later). */
static enum oauth_status refresh_failed(redisContext *c, const struct association *a,
                                        const struct ccapi_error *e, const char *rejected,
                                        char *token, size_t size, struct oauth_error *err)
{
    err->http_status = e->http_status;
    snprintf(err->code, sizeof err->code, "%s", e->error_key[0] ? e->error_key : "token_refresh");
    bool refused =
        e->status == CCAPI_UNAUTHORIZED ||
        (e->status == CCAPI_PERMANENT && (e->http_status == 400 || e->http_status == 401));
    if (refused) {
        /* Only the error key and status: CC's description might quote the token. */
        snprintf(err->message, sizeof err->message,
                 "Constant Contact refused to renew the access token (%s, HTTP %ld): "
                 "reconnect the Constant Contact account",
                 err->code, e->http_status);
        err->status = OAUTH_UNAUTHORIZED;
        log_warn("cc_token_refresh_refused", LOG_STR("association", a->id),
                 LOG_STR("error", err->code), LOG_INT("http_status", e->http_status));
        if (set_state(c, a->id, a->credentials_version, "unauthorized", err->message) != 0 ||
            notify_connection_unauthorized(c, a->id, err->message) != 0)
            return redis_failed(err);
        return OAUTH_UNAUTHORIZED;
    }
    if (e->status == CCAPI_PERMANENT) {
        /* The token endpoint or our configuration is wrong (404, 403, no client
         * id): nothing the association can fix, shown in its state meanwhile. */
        snprintf(err->message, sizeof err->message,
                 "cannot renew the Constant Contact access token (%s, HTTP %ld): check "
                 "CCSYNC_CC_TOKEN_URL and CCSYNC_CC_CLIENT_ID",
                 err->code, e->http_status);
        log_error("cc_token_refresh_failed", LOG_STR("association", a->id),
                  LOG_STR("error", err->code), LOG_INT("http_status", e->http_status));
        if (set_state(c, a->id, a->credentials_version, "error", err->message) != 0)
            return redis_failed(err);
    } else {
        snprintf(err->message, sizeof err->message,
                 "the Constant Contact token endpoint failed (%s, HTTP %ld); will retry", err->code,
                 e->http_status);
        log_warn("cc_token_refresh_failed", LOG_STR("association", a->id),
                 LOG_STR("error", err->code), LOG_INT("http_status", e->http_status));
    }
    err->status = OAUTH_TRANSIENT;
    return fall_back(a, rejected, token, size, err);
}

/* The lock is ours and a needs a refresh: call the token endpoint. */
static enum oauth_status refresh_locked(redisContext *c, const struct config *cfg,
                                        struct association *a, const char *rejected, char *token,
                                        size_t size, struct oauth_error *err)
{
    struct ccapi_token t;
    struct ccapi_error e;
    memset(&e, 0, sizeof e);
    struct ccapi *api =
        ccapi_new(cfg->cc_api_url[0] ? cfg->cc_api_url : cfg->cc_token_url, OAUTH_TOKEN_TIMEOUT_MS);
    if (!api)
        return fail(err, OAUTH_TRANSIENT, "out_of_memory", "cannot create an HTTP client");
    int64_t sent_at = store_now_ns();
    int rc = ccapi_token_refresh(api, cfg->cc_token_url, cfg->cc_client_id, cfg->cc_client_secret,
                                 a->cc_refresh_token, &t, &e);
    ccapi_free(api);
    if (rc == 0) {
        enum oauth_status s = store_new_token(c, cfg, a, &t, sent_at, token, size, err);
        ccapi_token_clear(&t);
        return s;
    }
    return refresh_failed(c, a, &e, rejected, token, size, err);
}

/* No refresh token: the stored token as long as it may work, else reconnect. */
static enum oauth_status without_refresh_token(redisContext *c, const struct association *a,
                                               const char *rejected, char *token, size_t size,
                                               struct oauth_error *err)
{
    if (still_usable(a, rejected, store_now_ns()))
        return give(a->cc_access_token, token, size, err);
    if (a->cc_access_token[0] == '\0')
        return fail(err, OAUTH_NOT_CONNECTED, "not_configured",
                    "no Constant Contact credentials are stored");
    fail(err, OAUTH_UNAUTHORIZED, "no_refresh_token",
         "the Constant Contact access token has expired or was refused and there is no refresh "
         "token: reconnect the Constant Contact account");
    if (set_state(c, a->id, a->credentials_version, "unauthorized", err->message) != 0 ||
        notify_connection_unauthorized(c, a->id, err->message) != 0)
        return redis_failed(err);
    return OAUTH_UNAUTHORIZED;
}

/* Answers from the stored credentials when no refresh is needed or possible;
 * true when *s is the answer. */
static bool answer_as_stored(redisContext *c, const struct association *a, const char *rejected,
                             char *token, size_t size, struct oauth_error *err,
                             enum oauth_status *s)
{
    if (strcmp(a->cc_state, "unauthorized") == 0) {
        *s = fail(err, OAUTH_UNAUTHORIZED, "unauthorized",
                  a->cc_last_error[0] ? a->cc_last_error
                                      : "Constant Contact refused the credentials: reconnect "
                                        "the Constant Contact account");
        return true;
    }
    if (!needs_refresh(a, rejected, store_now_ns())) {
        *s = give(a->cc_access_token, token, size, err);
        return true;
    }
    if (a->cc_refresh_token[0] == '\0') {
        *s = without_refresh_token(c, a, rejected, token, size, err);
        return true;
    }
    return false;
}

/* The lock is ours: look again (the previous holder may have refreshed just
 * before), and refresh when it is still needed. *again when the answer is to
 * be decided from the top, without the lock. */
static enum oauth_status with_lock(redisContext *c, const struct config *cfg,
                                   const char *association, struct association *a,
                                   const char *rejected, char *token, size_t size,
                                   struct oauth_error *err, bool *again)
{
    *again = false;
    if (load(c, cfg, association, a, err) != 1)
        return err->status;
    if (!needs_refresh(a, rejected, store_now_ns()) || strcmp(a->cc_state, "unauthorized") == 0 ||
        a->cc_refresh_token[0] == '\0') {
        *again = true;
        return OAUTH_OK;
    }
    return refresh_locked(c, cfg, a, rejected, token, size, err);
}

/* Another thread or process holds the lock: wait for it to go. true when it
 * went (look at what the holder stored); else *s is the answer. */
static bool wait_for_holder(redisContext *c, const struct key *lock, int64_t deadline,
                            const struct association *a, const char *rejected, char *token,
                            size_t size, struct oauth_error *err, enum oauth_status *s)
{
    int w = lock_wait(c, lock->s, deadline);
    if (w < 0) {
        *s = redis_failed(err);
        return false;
    }
    if (w > 0) {
        fail(err, OAUTH_TRANSIENT, "lock_timeout",
             "a concurrent token refresh is taking too long; will retry");
        *s = fall_back(a, rejected, token, size, err);
        return false;
    }
    return true;
}

static enum oauth_status obtain(redisContext *c, const struct config *cfg, const char *association,
                                const char *rejected, char *token, size_t size,
                                struct oauth_error *err)
{
    memset(err, 0, sizeof *err);
    if (size > 0)
        token[0] = '\0';
    struct association *a = malloc(sizeof *a);
    if (!a)
        return fail(err, OAUTH_TRANSIENT, "out_of_memory", "out of memory");
    struct key lock_key = key_refresh_lock(association);
    enum oauth_status s;
    bool waited = false, again = false;
    int64_t deadline = store_now_ns() + LOCK_WAIT_NS;
    for (;;) {
        if (load(c, cfg, association, a, err) != 1) {
            s = err->status;
            break;
        }
        if (answer_as_stored(c, a, rejected, token, size, err, &s))
            break;
        if (waited) {
            /* Another holder tried and did not succeed: do not spend the
             * refresh token again at once. */
            fail(err, OAUTH_TRANSIENT, "refresh_failed_elsewhere",
                 "a concurrent token refresh did not succeed; will retry");
            s = fall_back(a, rejected, token, size, err);
            break;
        }
        struct lease lock;
        int taken = lease_take(c, &lock, &lock_key, OAUTH_LOCK_TTL_MS);
        if (taken == 1) {
            s = with_lock(c, cfg, association, a, rejected, token, size, err, &again);
            lease_release(c, &lock);
            if (again)
                continue;
            break;
        }
        if (taken < 0) {
            s = redis_failed(err);
            break;
        }
        if (!wait_for_holder(c, &lock_key, deadline, a, rejected, token, size, err, &s))
            break;
        waited = true;
    }
    explicit_bzero(a, sizeof *a);
    free(a);
    return s;
}

enum oauth_status oauth_access_token(redisContext *c, const struct config *cfg,
                                     const char *association, char *token, size_t size,
                                     struct oauth_error *err)
{
    return obtain(c, cfg, association, NULL, token, size, err);
}

enum oauth_status oauth_after_unauthorized(redisContext *c, const struct config *cfg,
                                           const char *association, const char *rejected_token,
                                           char *token, size_t size, struct oauth_error *err)
{
    return obtain(c, cfg, association, rejected_token ? rejected_token : "", token, size, err);
}

/* 1 when the state may become connected: the stored access token is
 * access_token (version gets its credentials version); 0 nothing to do. */
static int connected_candidate(redisContext *c, const struct config *cfg, const char *association,
                               const char *access_token, char *version, size_t size)
{
    struct key k = key_association(association);
    redisReply *r = store_command(c, "HMGET %s cc_state cred_version cc_access_token", k.s);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3) {
        freeReplyObject(r);
        return -1;
    }
    const redisReply *state = r->element[0], *v = r->element[1], *stored = r->element[2];
    bool settled = state->type == REDIS_REPLY_STRING && (strcmp(state->str, "connected") == 0 ||
                                                         strcmp(state->str, "unauthorized") == 0);
    int rc = 0;
    if (!settled && stored->type == REDIS_REPLY_STRING) {
        size_t n = strlen(access_token) + 1;
        char *opened = malloc(n);
        if (opened &&
            secrets_open(&cfg->secrets, association, "cc_access_token", stored->str, opened, n) ==
                0 &&
            strcmp(opened, access_token) == 0) {
            snprintf(version, size, "%s", v->type == REDIS_REPLY_STRING ? v->str : "0");
            rc = 1;
        }
        if (opened)
            explicit_bzero(opened, n);
        free(opened);
    }
    freeReplyObject(r);
    return rc;
}

int oauth_mark_connected(redisContext *c, const struct config *cfg, const char *association,
                         const char *access_token)
{
    char version[24];
    int rc = connected_candidate(c, cfg, association, access_token, version, sizeof version);
    if (rc <= 0)
        return rc < 0 ? STORE_ERR : STORE_OK;
    struct key k = key_association(association);
    const char *args[] = {k.s, version};
    redisReply *r = script_eval(c, connected_script, 1, 2, args);
    rc = store_reply_ok(c, r) ? STORE_OK : STORE_ERR;
    freeReplyObject(r);
    return rc;
}
