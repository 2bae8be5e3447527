/*
 * oauth.h - a usable Constant Contact access token for an association,
 * refreshed before it expires and after CC answers 401.
 *
 * Refresh tokens rotate and are single use, so a refresh is single-flight
 * across threads and processes: one holder of a Redis lock calls the token
 * endpoint, everyone else waits for it and reads the result from Redis.
 * Tokens never appear in logs, errors or association error messages.
 */
#ifndef CCSYNC_OAUTH_H
#define CCSYNC_OAUTH_H

#include <stddef.h>

struct redisContext;
struct config;

/* An access token expiring sooner than this is refreshed before use. */
#define OAUTH_REFRESH_BEFORE_NS (300LL * 1000000000LL)
/* The token endpoint request's timeout, and the refresh lock's lifetime (the
 * lock outlives the request, so it cannot expire under a live holder). */
#define OAUTH_TOKEN_TIMEOUT_MS 15000
#define OAUTH_LOCK_TTL_MS 30000
/* Expiry assumed when the token endpoint sends no expires_in (CC documents
 * 24 h; refreshing early costs nothing from the CC budget, late costs a 401). */
#define OAUTH_DEFAULT_EXPIRES_IN_S 3600

enum oauth_status {
    OAUTH_OK = 0,
    OAUTH_TRANSIENT,     /* token endpoint unreachable, 5xx, 429, or a concurrent refresh
                            failed or took too long: retry later with backoff */
    OAUTH_UNAUTHORIZED,  /* the grant is refused (invalid_grant, any 400/401 of the token
                            endpoint) or the token expired with no refresh token: cc_state
                            is "unauthorized" until an admin PUTs new credentials */
    OAUTH_NOT_CONNECTED, /* unknown association, or no Constant Contact credentials */
    OAUTH_REDIS_ERROR,   /* Redis failed: discard the context */
};

struct oauth_error {
    enum oauth_status status;
    long http_status;  /* the token endpoint's answer, 0 when none */
    char code[64];     /* e.g. invalid_grant, timeout, lock_timeout, redis */
    char message[256]; /* for people and logs; never holds a secret */
};

/* "ok", "transient", "unauthorized", "not_connected", "redis_error". */
const char *oauth_status_name(enum oauth_status status);

/*
 * Copies a usable access token of association into token (size bytes).
 * Refreshes it first when it is missing, expires within
 * OAUTH_REFRESH_BEFORE_NS, or its expiry is unknown (a PUT without
 * expires_at: one refresh learns it, and costs nothing from the CC budget).
 * When a refresh fails transiently but the current token has not expired yet,
 * that token is returned (OAUTH_OK). Returns the status, also in err->status.
 */
enum oauth_status oauth_access_token(struct redisContext *c, const struct config *cfg,
                                     const char *association, char *token, size_t size,
                                     struct oauth_error *err);

/*
 * CC answered 401 to rejected_token. When the stored token differs (another
 * thread or process refreshed it, or an admin PUT new credentials) that one is
 * returned without a refresh; otherwise the token is refreshed (single-flight).
 * Call it once per failed request: a second 401 with the new token is a
 * failure of that request, not a reason to refresh again.
 */
enum oauth_status oauth_after_unauthorized(struct redisContext *c, const struct config *cfg,
                                           const char *association, const char *rejected_token,
                                           char *token, size_t size, struct oauth_error *err);

/*
 * A CC call with access_token succeeded: cc_state becomes "connected" and
 * cc_last_error is cleared, unless the stored token has changed meanwhile or
 * the state is "unauthorized" (only new credentials clear that). Cheap when
 * already connected (one read, no write). Returns STORE_OK or STORE_ERR.
 */
int oauth_mark_connected(struct redisContext *c, const struct config *cfg, const char *association,
                         const char *access_token);

#endif
