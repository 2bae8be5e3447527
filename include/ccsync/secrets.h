/*
 * secrets.h - secrets at rest: CC access and refresh tokens, webhook secrets
 * and notification secrets are stored in Redis sealed with AES-256-GCM, so a
 * Redis dump, an AOF file or a backup holds none of them in plain text.
 *
 * The key ring comes from CCSYNC_SECRETS_KEY_FILE: one key a line,
 * "KEY_ID BASE64_OF_32_BYTES" ('#' comments and blank lines allowed). The first
 * key seals; every key opens, so keys rotate: put a new key first, re-seal
 * (values sealed by an older key are re-sealed when next written, or all at
 * once by the re-seal pass), then drop the old line.
 *
 * A sealed value is "enc:v1:KEY_ID:BASE64(nonce[12] ciphertext tag[16])". The
 * association id and the field name are the GCM additional data, so a value
 * copied to another association or field does not open.
 */
#ifndef CCSYNC_SECRETS_H
#define CCSYNC_SECRETS_H

#include <stdbool.h>
#include <stddef.h>

#define SECRETS_MAX_KEYS 16
#define SECRETS_KEY_ID_MAX 32
#define SECRETS_PREFIX "enc:v1:"

struct secrets_key {
    char id[SECRETS_KEY_ID_MAX + 1]; /* [A-Za-z0-9_.-]{1,32} */
    unsigned char key[32];
};

struct secrets_ring {
    struct secrets_key keys[SECRETS_MAX_KEYS];
    size_t n; /* 0: no ring (plain text allowed for development only) */
};

/* Parses a key file's text. 0, or -1 with the problem and its line in err. */
int secrets_ring_parse(const char *text, struct secrets_ring *ring, char *err, size_t err_size);

/* Reads and parses the file at path. 0, or -1 with err. */
int secrets_ring_load(const char *path, struct secrets_ring *ring, char *err, size_t err_size);

/* True when value is in the sealed form (else it is plain text, from before
 * sealing or from a development setup without a ring). */
bool secrets_is_sealed(const char *value);

/* Seals plaintext for (association, field) with the ring's first key. A
 * malloc'd string the caller frees, or NULL (no ring, out of memory). */
char *secrets_seal(const struct secrets_ring *ring, const char *association, const char *field,
                   const char *plaintext);

/* Opens a sealed value into out (NUL-terminated). 0; -1 when the key is not in
 * the ring, the value was altered, or it belongs to another association or
 * field; -2 when out is too small. A plain-text value is copied as it is. */
int secrets_open(const struct secrets_ring *ring, const char *association, const char *field,
                 const char *value, char *out, size_t out_size);

/* True when value should be sealed again: plain text while a ring exists, or
 * sealed with a key other than the ring's first. */
bool secrets_needs_reseal(const struct secrets_ring *ring, const char *value);

#endif
