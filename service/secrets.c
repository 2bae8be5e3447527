/*
 * secrets.c - sealing secrets at rest with AES-256-GCM (see secrets.h), with
 * OpenSSL's EVP interface: a fresh 96-bit nonce from RAND_bytes for every
 * seal, the association and field as additional data, a 128-bit tag.
 */
#include "ccsync/secrets.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccsync/config.h"

#define NONCE_LEN 12
#define TAG_LEN 16

/* Standard base64 of exactly len bytes into out; the decoded length, or -1. */
static long b64_decode(const char *in, size_t in_len, unsigned char *out, size_t out_size)
{
    if (in_len == 0 || in_len % 4 != 0 || in_len / 4 * 3 > out_size)
        return -1;
    int n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)in_len);
    if (n < 0)
        return -1;
    if (in[in_len - 1] == '=')
        n--;
    if (in[in_len - 2] == '=')
        n--;
    return n;
}

static bool valid_key_id(const char *s, size_t len)
{
    if (len == 0 || len > SECRETS_KEY_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-", s[i]))
            return false;
    return true;
}

/* One "KEY_ID BASE64" line (already trimmed, len > 0) into ring. */
static int parse_line(const char *line, size_t len, int lineno, struct secrets_ring *ring,
                      char *err, size_t err_size)
{
    size_t id_len = strcspn(line, " \t");
    if (id_len >= len)
        return config_error(err, err_size, "line %d: write KEY_ID BASE64_OF_32_BYTES", lineno);
    if (!valid_key_id(line, id_len))
        return config_error(err, err_size, "line %d: a key id is 1-32 of A-Z a-z 0-9 _ . -",
                            lineno);
    const char *b64 = line + id_len;
    while (*b64 == ' ' || *b64 == '\t')
        b64++;
    struct secrets_key *k = &ring->keys[ring->n];
    unsigned char buf[48];
    if (b64_decode(b64, (size_t)(line + len - b64), buf, sizeof buf) != 32)
        return config_error(err, err_size,
                            "line %d: the key must be 32 bytes in base64 (openssl rand "
                            "-base64 32)",
                            lineno);
    for (size_t i = 0; i < ring->n; i++)
        if (strlen(ring->keys[i].id) == id_len && memcmp(ring->keys[i].id, line, id_len) == 0)
            return config_error(err, err_size, "line %d: key id %.*s is used twice", lineno,
                                (int)id_len, line);
    memcpy(k->id, line, id_len);
    k->id[id_len] = '\0';
    memcpy(k->key, buf, 32);
    OPENSSL_cleanse(buf, sizeof buf);
    ring->n++;
    return 0;
}

int secrets_ring_parse(const char *text, struct secrets_ring *ring, char *err, size_t err_size)
{
    memset(ring, 0, sizeof *ring);
    int lineno = 0;
    for (const char *p = text; *p;) {
        size_t len = strcspn(p, "\n");
        const char *next = p + len + (p[len] == '\n');
        lineno++;
        while (len > 0 && strchr(" \t\r", *p)) {
            p++;
            len--;
        }
        while (len > 0 && strchr(" \t\r", p[len - 1]))
            len--;
        if (len > 0 && *p != '#') {
            if (ring->n == SECRETS_MAX_KEYS)
                return config_error(err, err_size, "line %d: more than %d keys", lineno,
                                    SECRETS_MAX_KEYS);
            if (parse_line(p, len, lineno, ring, err, err_size) != 0)
                return -1;
        }
        p = next;
    }
    if (ring->n == 0)
        return config_error(err, err_size, "holds no key");
    return 0;
}

int secrets_ring_load(const char *path, struct secrets_ring *ring, char *err, size_t err_size)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return config_error(err, err_size, "cannot read %s", path);
    char text[SECRETS_MAX_KEYS * 128 + 4096];
    size_t n = fread(text, 1, sizeof text - 1, f);
    bool more = fgetc(f) != EOF;
    fclose(f);
    text[n] = '\0';
    int rc = more ? config_error(err, err_size, "%s is too long for a key file", path)
                  : secrets_ring_parse(text, ring, err, err_size);
    OPENSSL_cleanse(text, sizeof text);
    return rc;
}

bool secrets_is_sealed(const char *value)
{
    return value && strncmp(value, SECRETS_PREFIX, strlen(SECRETS_PREFIX)) == 0;
}

/* The additional data: association and field, NUL-separated. */
static size_t bind_to(const char *association, const char *field, unsigned char *out, size_t size)
{
    int n = snprintf((char *)out, size, "%s%c%s", association, '\0', field);
    return n < 0 || (size_t)n >= size ? 0 : (size_t)n;
}

/* GCM over in[0..len) with key and nonce; out gets len bytes (and tag on seal). */
static int gcm(bool seal, const unsigned char key[32], const unsigned char *nonce,
               const unsigned char *aad, size_t aad_len, const unsigned char *in, size_t len,
               unsigned char *out, unsigned char *tag)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n = 0, ok = ctx && EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce, seal) == 1;
    ok = ok && EVP_CipherUpdate(ctx, NULL, &n, aad, (int)aad_len) == 1;
    ok = ok && EVP_CipherUpdate(ctx, out, &n, in, (int)len) == 1;
    if (ok && !seal)
        ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, tag) == 1;
    ok = ok && EVP_CipherFinal_ex(ctx, out + n, &n) == 1; /* open: checks the tag */
    if (ok && seal)
        ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, tag) == 1;
    EVP_CIPHER_CTX_free(ctx);
    return ok ? 0 : -1;
}

char *secrets_seal(const struct secrets_ring *ring, const char *association, const char *field,
                   const char *plaintext)
{
    if (!ring || ring->n == 0)
        return NULL;
    size_t len = strlen(plaintext), raw_len = NONCE_LEN + len + TAG_LEN;
    unsigned char aad[256], *raw = malloc(raw_len);
    size_t aad_len = bind_to(association, field, aad, sizeof aad);
    char *out = malloc(strlen(SECRETS_PREFIX) + SECRETS_KEY_ID_MAX + 2 + 4 * (raw_len / 3 + 1) + 1);
    if (!raw || !out || !aad_len || RAND_bytes(raw, NONCE_LEN) != 1 ||
        gcm(true, ring->keys[0].key, raw, aad, aad_len, (const unsigned char *)plaintext, len,
            raw + NONCE_LEN, raw + NONCE_LEN + len) != 0) {
        free(raw);
        free(out);
        return NULL;
    }
    int n = sprintf(out, SECRETS_PREFIX "%s:", ring->keys[0].id);
    EVP_EncodeBlock((unsigned char *)out + n, raw, (int)raw_len);
    OPENSSL_cleanse(raw, raw_len);
    free(raw);
    return out;
}

static const struct secrets_key *find_key(const struct secrets_ring *ring, const char *id,
                                          size_t len)
{
    for (size_t i = 0; ring && i < ring->n; i++)
        if (strlen(ring->keys[i].id) == len && memcmp(ring->keys[i].id, id, len) == 0)
            return &ring->keys[i];
    return NULL;
}

int secrets_open(const struct secrets_ring *ring, const char *association, const char *field,
                 const char *value, char *out, size_t out_size)
{
    if (!secrets_is_sealed(value)) {
        if (strlen(value) >= out_size)
            return -2;
        strcpy(out, value);
        return 0;
    }
    const char *id = value + strlen(SECRETS_PREFIX), *colon = strchr(id, ':');
    const struct secrets_key *k = colon ? find_key(ring, id, (size_t)(colon - id)) : NULL;
    if (!k)
        return -1;
    size_t b64_len = strlen(colon + 1), max = b64_len / 4 * 3;
    unsigned char aad[256], *raw = malloc(max + 1);
    size_t aad_len = bind_to(association, field, aad, sizeof aad);
    long raw_len = raw ? b64_decode(colon + 1, b64_len, raw, max) : -1;
    int rc = -1;
    if (raw_len >= NONCE_LEN + TAG_LEN && aad_len) {
        size_t len = (size_t)raw_len - NONCE_LEN - TAG_LEN;
        if (len >= out_size)
            rc = -2;
        else if (gcm(false, k->key, raw, aad, aad_len, raw + NONCE_LEN, len, (unsigned char *)out,
                     raw + NONCE_LEN + len) == 0) {
            out[len] = '\0';
            rc = 0;
        }
    }
    if (rc == -1 && out_size)
        OPENSSL_cleanse(out, out_size);
    free(raw);
    return rc;
}

bool secrets_needs_reseal(const struct secrets_ring *ring, const char *value)
{
    if (!ring || ring->n == 0 || !value || !*value)
        return false;
    if (!secrets_is_sealed(value))
        return true;
    const char *id = value + strlen(SECRETS_PREFIX), *colon = strchr(id, ':');
    return !colon || strlen(ring->keys[0].id) != (size_t)(colon - id) ||
           memcmp(ring->keys[0].id, id, (size_t)(colon - id)) != 0;
}
