/*
 * tokens.h - association tokens: what a dashboard or Novi's admin holds instead
 * of the operator's token. "ccs_<token_id>_<secret>", shown once when created;
 * Redis keeps only its SHA-256, in the association's token hash, so a token
 * works only on its own association's paths (on another it is unknown: 404),
 * and revoking it is one HDEL that every process sees at the next request.
 *
 * Scopes: read (GETs of the association, its groups, members, audit and the
 * status page) and write (read, plus resync, reconcile, PUT association and
 * tokens).
 */
#ifndef CCSYNC_TOKENS_H
#define CCSYNC_TOKENS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct redisContext;

#define TOKEN_ID_LEN 16     /* [a-z0-9] */
#define TOKEN_SECRET_LEN 64 /* hex of 32 random bytes */
#define TOKEN_SIZE (4 + TOKEN_ID_LEN + 1 + TOKEN_SECRET_LEN + 1)
#define TOKEN_NAME_MAX 128
/* last_used_at is written at most this often per token, not on every request. */
#define TOKEN_TOUCH_NS (60LL * 1000000000LL)

enum token_scope {
    TOKEN_NONE = 0,
    TOKEN_READ,
    TOKEN_WRITE,
};

struct token_record {
    char id[TOKEN_ID_LEN + 1];
    char hash[65]; /* hex SHA-256 of the whole token */
    enum token_scope scope;
    char name[TOKEN_NAME_MAX + 1];
    int64_t created_at_ns;
    int64_t last_used_at_ns; /* 0: never */
};

/* "read" / "write" and back (TOKEN_NONE for anything else). */
enum token_scope tokens_scope_parse(const char *s);
const char *tokens_scope_name(enum token_scope s);

/* Splits a bearer value of our format into its id; false when it is not one
 * (then it may be the operator's token). */
bool tokens_parse(const char *bearer, char id[TOKEN_ID_LEN + 1]);

/* Hex SHA-256 of token. */
void tokens_hash(const char *token, char out[65]);

/* Creates a token of scope for association; the token itself (shown once) goes
 * to token_out, its record to rec. STORE_OK or STORE_ERR. */
int tokens_create(struct redisContext *c, const char *association, enum token_scope scope,
                  const char *name, int64_t now_ns, struct token_record *rec,
                  char token_out[TOKEN_SIZE]);

/* The association's tokens (without secrets), oldest first; *out malloc'd
 * (caller frees), *n set. STORE_OK or STORE_ERR. */
int tokens_list(struct redisContext *c, const char *association, struct token_record **out,
                size_t *n);

/* 1 revoked, 0 no such token, STORE_ERR. */
int tokens_revoke(struct redisContext *c, const char *association, const char *token_id);

/* Checks bearer against association's tokens: 1 valid (*scope set; last_used_at
 * touched at most every TOKEN_TOUCH_NS), 0 not a valid token of this
 * association, STORE_ERR Redis failed. Compared in constant time. */
int tokens_check(struct redisContext *c, const char *association, const char *bearer,
                 int64_t now_ns, enum token_scope *scope);

#endif
