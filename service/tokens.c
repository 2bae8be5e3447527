/*
 * tokens.c - association tokens (see tokens.h). A record is a small JSON
 * object in the association's token hash, written once:
 *   {"hash":"<hex sha-256>","scope":"read","name":"…","created_at":ns}
 * and when it was last used lives beside it (key_token_uses), so recording a
 * use never rewrites the record.
 */
#include "ccsync/tokens.h"

#include <hiredis/hiredis.h>
#include <json-c/json.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccsync/keys.h"
#include "ccsync/store.h"

enum token_scope tokens_scope_parse(const char *s)
{
    if (s && strcmp(s, "read") == 0)
        return TOKEN_READ;
    if (s && strcmp(s, "write") == 0)
        return TOKEN_WRITE;
    return TOKEN_NONE;
}

const char *tokens_scope_name(enum token_scope s)
{
    return s == TOKEN_WRITE ? "write" : s == TOKEN_READ ? "read" : "none";
}

static bool all_of(const char *s, size_t len, const char *set)
{
    for (size_t i = 0; i < len; i++)
        if (!s[i] || !strchr(set, s[i]))
            return false;
    return true;
}

bool tokens_parse(const char *bearer, char id[TOKEN_ID_LEN + 1])
{
    if (!bearer || strlen(bearer) != TOKEN_SIZE - 1 || strncmp(bearer, "ccs_", 4) != 0 ||
        bearer[4 + TOKEN_ID_LEN] != '_')
        return false;
    if (!all_of(bearer + 4, TOKEN_ID_LEN, "abcdefghijklmnopqrstuvwxyz0123456789") ||
        !all_of(bearer + 5 + TOKEN_ID_LEN, TOKEN_SECRET_LEN, "0123456789abcdef"))
        return false;
    memcpy(id, bearer + 4, TOKEN_ID_LEN);
    id[TOKEN_ID_LEN] = '\0';
    return true;
}

void tokens_hash(const char *token, char out[65])
{
    unsigned char md[32];
    unsigned int len = 0;
    EVP_Digest(token, strlen(token), md, &len, EVP_sha256(), NULL);
    for (unsigned i = 0; i < 32; i++)
        sprintf(out + 2 * i, "%02x", md[i]);
    out[64] = '\0';
}

static int random_token(char id[TOKEN_ID_LEN + 1], char token[TOKEN_SIZE])
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    unsigned char raw[TOKEN_ID_LEN + 32];
    if (RAND_bytes(raw, sizeof raw) != 1)
        return STORE_ERR;
    for (int i = 0; i < TOKEN_ID_LEN; i++)
        id[i] = alphabet[raw[i] % 36]; /* ids need to be unique, not uniform */
    id[TOKEN_ID_LEN] = '\0';
    int n = snprintf(token, TOKEN_SIZE, "ccs_%s_", id);
    for (int i = 0; i < 32; i++)
        sprintf(token + n + 2 * i, "%02x", raw[TOKEN_ID_LEN + i]);
    OPENSSL_cleanse(raw, sizeof raw);
    return STORE_OK;
}

static char *record_json(const struct token_record *r)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "hash", json_object_new_string(r->hash));
    json_object_object_add(o, "scope", json_object_new_string(tokens_scope_name(r->scope)));
    json_object_object_add(o, "name", json_object_new_string(r->name));
    json_object_object_add(o, "created_at", json_object_new_int64(r->created_at_ns));
    char *s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
    return s;
}

static int record_parse(const char *id, const char *json, struct token_record *r)
{
    json_object *o = json_tokener_parse(json), *v;
    memset(r, 0, sizeof *r);
    snprintf(r->id, sizeof r->id, "%s", id);
    if (!o)
        return STORE_ERR;
    if (json_object_object_get_ex(o, "hash", &v))
        snprintf(r->hash, sizeof r->hash, "%s", json_object_get_string(v));
    if (json_object_object_get_ex(o, "scope", &v))
        r->scope = tokens_scope_parse(json_object_get_string(v));
    if (json_object_object_get_ex(o, "name", &v))
        snprintf(r->name, sizeof r->name, "%s", json_object_get_string(v));
    if (json_object_object_get_ex(o, "created_at", &v))
        r->created_at_ns = json_object_get_int64(v);
    json_object_put(o);
    return strlen(r->hash) == 64 && r->scope != TOKEN_NONE ? STORE_OK : STORE_ERR;
}

int tokens_create(redisContext *c, const char *association, enum token_scope scope,
                  const char *name, int64_t now_ns, struct token_record *rec,
                  char token_out[TOKEN_SIZE])
{
    memset(rec, 0, sizeof *rec);
    for (int attempt = 0; attempt < 3; attempt++) {
        if (random_token(rec->id, token_out) != STORE_OK)
            return STORE_ERR;
        tokens_hash(token_out, rec->hash);
        rec->scope = scope;
        snprintf(rec->name, sizeof rec->name, "%s", name ? name : "");
        rec->created_at_ns = now_ns;
        char *json = record_json(rec);
        redisReply *r =
            store_command(c, "HSETNX %s %s %s", key_tokens(association).s, rec->id, json);
        free(json);
        if (!r)
            return STORE_ERR;
        bool added = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
        freeReplyObject(r);
        if (added)
            return STORE_OK;
    }
    return STORE_ERR; /* three id collisions in a row: the random source is broken */
}

static int by_created(const void *a, const void *b)
{
    const struct token_record *x = a, *y = b;
    if (x->created_at_ns != y->created_at_ns)
        return x->created_at_ns < y->created_at_ns ? -1 : 1;
    return strcmp(x->id, y->id);
}

static int last_used(redisContext *c, const char *association, const char *id, int64_t *at)
{
    redisReply *r = store_command(c, "HGET %s %s", key_token_uses(association).s, id);
    if (!r)
        return STORE_ERR;
    *at = r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : 0;
    freeReplyObject(r);
    return STORE_OK;
}

int tokens_list(redisContext *c, const char *association, struct token_record **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    redisReply *r = store_command(c, "HGETALL %s", key_tokens(association).s);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        return STORE_ERR;
    }
    *out = calloc(r->elements / 2 + 1, sizeof **out);
    if (!*out) {
        freeReplyObject(r);
        return STORE_ERR;
    }
    for (size_t i = 0; i + 1 < r->elements; i += 2)
        if (record_parse(r->element[i]->str, r->element[i + 1]->str, &(*out)[*n]) == STORE_OK)
            (*n)++;
    freeReplyObject(r);
    for (size_t i = 0; i < *n; i++)
        if (last_used(c, association, (*out)[i].id, &(*out)[i].last_used_at_ns) != STORE_OK)
            return STORE_ERR;
    qsort(*out, *n, sizeof **out, by_created);
    return STORE_OK;
}

int tokens_revoke(redisContext *c, const char *association, const char *token_id)
{
    redisReply *r = store_command(c, "HDEL %s %s", key_tokens(association).s, token_id);
    int rc = r && r->type == REDIS_REPLY_INTEGER ? (int)r->integer : STORE_ERR;
    freeReplyObject(r);
    if (rc == 1) /* its record is gone, so nothing reads this any more: best effort */
        freeReplyObject(redisCommand(c, "HDEL %s %s", key_token_uses(association).s, token_id));
    return rc;
}

int tokens_check(redisContext *c, const char *association, const char *bearer, int64_t now_ns,
                 enum token_scope *scope)
{
    char id[TOKEN_ID_LEN + 1], hash[65];
    *scope = TOKEN_NONE;
    if (!tokens_parse(bearer, id))
        return 0;
    redisReply *r = store_command(c, "HGET %s %s", key_tokens(association).s, id);
    if (!r)
        return STORE_ERR;
    struct token_record rec;
    bool found = r->type == REDIS_REPLY_STRING && record_parse(id, r->str, &rec) == STORE_OK;
    freeReplyObject(r);
    tokens_hash(bearer, hash);
    if (!found || CRYPTO_memcmp(hash, rec.hash, 64) != 0)
        return 0;
    *scope = rec.scope;
    int64_t used = 0;
    if (last_used(c, association, id, &used) == STORE_OK && now_ns - used >= TOKEN_TOUCH_NS)
        freeReplyObject(redisCommand(c, "HSET %s %s %lld", key_token_uses(association).s, id,
                                     (long long)now_ns)); /* a missed touch costs nothing */
    return 1;
}
