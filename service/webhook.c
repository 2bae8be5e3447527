/*
 * webhook.c - what ccsync accepts from Novi: the Standard Webhooks signature
 * check, the parsing and validation of event envelopes into struct event, and
 * RFC 3339 timestamps. Pure functions over bytes (no I/O, no global state but a
 * cache of HMAC contexts, no locale or time zone), so the HTTP layer, the
 * workers, the tests and the fuzzer all call the same code.
 *
 * Limits, chosen so that a hostile body costs bounded work and every accepted
 * value fits where it is stored:
 *   - the body is parsed by json-c in strict mode with UTF-8 validation, at most
 *     JSON_TOKENER_DEFAULT_DEPTH (32) levels deep and at most INT_MAX bytes (the
 *     HTTP layer enforces the real cap, 16 MiB by default); only white space
 *     may follow the top-level object;
 *   - text fields (Email, FirstName, LastName, Company, GroupName) are at most
 *     WEBHOOK_TEXT_MAX bytes of well-formed UTF-8 and must not contain U+0000,
 *     which C strings cannot carry; other values are refused, naming the
 *     field, rather than silently cut or passed on to Constant Contact;
 *   - "type" is kept as sent, cut to 63 bytes on a UTF-8 boundary, for logs;
 *   - identifiers are checked by ccsync_valid_unique_id (model.h);
 *   - the secret's key is 1..WEBHOOK_KEY_MAX bytes of standard, padded base64.
 *
 * Decisions Novi's webhook documentation leaves open:
 *   - a required field that is JSON null counts as missing ("... is required");
 *   - an unknown type needs a string type and a valid timestamp only: its data
 *     may be anything or absent, so that Novi's new event types are ignored
 *     (202) instead of retried forever;
 *   - an unparsable webhook-timestamp (not all digits) is invalid_signature, as
 *     the Standard Webhooks libraries treat it; one of more than 15 digits is
 *     stale without being converted, so it cannot overflow;
 *   - json-c's strict mode still accepts NaN and Infinity as numbers; no field
 *     ccsync reads is a number, so they are refused by type where it matters.
 */
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "ccsync/webhook.h"

#define SECRET_PREFIX "whsec_"
#define SIGNATURE_PREFIX "v1,"
#define HMAC_SHA256_LEN 32
/* base64 of 32 bytes: 44 characters, one '=' of padding. */
#define SIGNATURE_B64_LEN 44
/* A timestamp header longer than this is not Unix seconds of this era; it is
 * refused as stale before it can overflow anything. */
#define TIMESTAMP_DIGITS_MAX 15

/* ---------------------------------------------------------------- errors */

static void error_set(struct webhook_error *err, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void error_set(struct webhook_error *err, int status, const char *code, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL)
        return;
    err->status = status;
    snprintf(err->code, sizeof err->code, "%s", code);
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
}

/* ---------------------------------------------------------------- secrets */

static bool b64_char_ok(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

/*
 * Decodes standard padded base64 into key. EVP_DecodeBlock does not report the
 * padding (it counts '=' as zero bytes) and tolerates surrounding white space,
 * so the text is checked here first: only the alphabet, a length that is a
 * multiple of 4, and at most two '=' at the very end.
 */
static int key_decode(const char *b64, size_t b64_len, unsigned char *key, size_t key_size,
                      size_t *key_len)
{
    size_t pad = 0;
    int n;

    if (b64_len == 0 || b64_len % 4 != 0 || b64_len / 4 * 3 > key_size || b64_len > INT_MAX)
        return -1;
    if (b64[b64_len - 1] == '=')
        pad++;
    if (b64[b64_len - 2] == '=')
        pad++;
    for (size_t i = 0; i < b64_len - pad; i++) {
        if (!b64_char_ok(b64[i]))
            return -1;
    }
    n = EVP_DecodeBlock(key, (const unsigned char *)b64, (int)b64_len);
    if (n < 0 || (size_t)n < pad || (size_t)n - pad == 0)
        return -1;
    *key_len = (size_t)n - pad;
    return 0;
}

static int secret_key(const char *secret, unsigned char *key, size_t key_size, size_t *key_len)
{
    size_t prefix_len = strlen(SECRET_PREFIX);

    if (secret == NULL || strncmp(secret, SECRET_PREFIX, prefix_len) != 0)
        return -1;
    return key_decode(secret + prefix_len, strlen(secret + prefix_len), key, key_size, key_len);
}

long webhook_secret_bytes(const char *secret)
{
    unsigned char key[WEBHOOK_KEY_MAX + 2];
    size_t key_len = 0;
    int rc = secret_key(secret, key, sizeof key, &key_len);

    OPENSSL_cleanse(key, sizeof key);
    return rc == 0 && key_len <= WEBHOOK_KEY_MAX ? (long)key_len : -1;
}

bool webhook_secret_valid(const char *secret)
{
    unsigned char key[WEBHOOK_KEY_MAX + 2];
    size_t key_len = 0;
    int rc = secret_key(secret, key, sizeof key, &key_len);

    OPENSSL_cleanse(key, sizeof key);
    return rc == 0 && key_len <= WEBHOOK_KEY_MAX;
}

/* ------------------------------------------------------------- signatures */

/*
 * OpenSSL 3 looks the HMAC implementation up by name on every EVP_MAC_fetch,
 * and a new context sets its digest by name again: on the webhook path that
 * was a good share of a request's CPU. So the implementation is fetched once,
 * and each thread keeps one context (freed when the thread ends) holding the
 * key it last used: the next webhook of the same association skips the key
 * setup too. The one state of this file, and only a cache: every MAC is the
 * one a fresh context gives.
 */
struct hmac_cache {
    EVP_MAC_CTX *ctx;
    unsigned char key[WEBHOOK_KEY_MAX];
    size_t key_len;
    bool keyed; /* ctx holds key */
};

static pthread_once_t hmac_once = PTHREAD_ONCE_INIT;
static EVP_MAC *hmac_impl;
static pthread_key_t hmac_thread_key;
static bool hmac_thread_key_made;

static void hmac_cache_free(void *arg)
{
    struct hmac_cache *c = arg;

    EVP_MAC_CTX_free(c->ctx);
    OPENSSL_cleanse(c, sizeof *c);
    free(c);
}

static void hmac_setup(void)
{
    hmac_impl = EVP_MAC_fetch(NULL, "HMAC", NULL);
    hmac_thread_key_made = pthread_key_create(&hmac_thread_key, hmac_cache_free) == 0;
}

/* A new HMAC-SHA256 context without a key, or NULL. */
static EVP_MAC_CTX *hmac_ctx_new(void)
{
    OSSL_PARAM params[2];
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(hmac_impl);

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();
    if (ctx != NULL && EVP_MAC_CTX_set_params(ctx, params) != 1) {
        EVP_MAC_CTX_free(ctx);
        ctx = NULL;
    }
    return ctx;
}

/* This thread's context, made on first use; NULL when it cannot be kept. */
static struct hmac_cache *hmac_thread_cache(void)
{
    struct hmac_cache *c;

    if (!hmac_thread_key_made)
        return NULL;
    c = pthread_getspecific(hmac_thread_key);
    if (c != NULL)
        return c;
    c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->ctx = hmac_ctx_new();
    if (c->ctx == NULL || pthread_setspecific(hmac_thread_key, c) != 0) {
        hmac_cache_free(c);
        return NULL;
    }
    return c;
}

/* Starts a MAC under key: the thread's context (rekeyed only for another key),
 * or a new one put in *own that the caller frees. NULL on failure. */
static EVP_MAC_CTX *hmac_start(const unsigned char *key, size_t key_len, EVP_MAC_CTX **own)
{
    struct hmac_cache *c;

    *own = NULL;
    pthread_once(&hmac_once, hmac_setup);
    if (hmac_impl == NULL)
        return NULL;
    c = hmac_thread_cache();
    if (c == NULL) {
        *own = hmac_ctx_new();
        return *own != NULL && EVP_MAC_init(*own, key, key_len, NULL) == 1 ? *own : NULL;
    }
    if (c->keyed && c->key_len == key_len && CRYPTO_memcmp(c->key, key, key_len) == 0 &&
        EVP_MAC_init(c->ctx, NULL, 0, NULL) == 1)
        return c->ctx;
    c->keyed = false;
    if (key_len > sizeof c->key || EVP_MAC_init(c->ctx, key, key_len, NULL) != 1)
        return NULL;
    memcpy(c->key, key, key_len);
    c->key_len = key_len;
    c->keyed = true;
    return c->ctx;
}

/* HMAC-SHA256 over "{id}.{timestamp}.{body}", fed in pieces so that the body
 * is never copied; body NULL stands for body_len zero bytes (webhook_verify_unknown). */
static int signature_compute(const unsigned char *key, size_t key_len, const char *msg_id,
                             const char *timestamp, const char *body, size_t body_len,
                             unsigned char mac[HMAC_SHA256_LEN])
{
    static const unsigned char zeros[4096];
    EVP_MAC_CTX *own;
    EVP_MAC_CTX *ctx = hmac_start(key, key_len, &own);
    size_t mac_len = 0;
    int rc = -1;

    if (ctx == NULL)
        goto done;
    if (EVP_MAC_update(ctx, (const unsigned char *)msg_id, strlen(msg_id)) != 1 ||
        EVP_MAC_update(ctx, (const unsigned char *)".", 1) != 1 ||
        EVP_MAC_update(ctx, (const unsigned char *)timestamp, strlen(timestamp)) != 1 ||
        EVP_MAC_update(ctx, (const unsigned char *)".", 1) != 1)
        goto done;
    if (body != NULL && body_len > 0 &&
        EVP_MAC_update(ctx, (const unsigned char *)body, body_len) != 1)
        goto done;
    for (size_t left = body == NULL ? body_len : 0, n; left > 0; left -= n) {
        n = left < sizeof zeros ? left : sizeof zeros;
        if (EVP_MAC_update(ctx, zeros, n) != 1)
            goto done;
    }
    if (EVP_MAC_final(ctx, mac, &mac_len, HMAC_SHA256_LEN) != 1 || mac_len != HMAC_SHA256_LEN)
        goto done;
    rc = 0;
done:
    EVP_MAC_CTX_free(own);
    return rc;
}

/* "v1," followed by the base64 of the MAC; out must hold SIGNATURE_B64_LEN + 4. */
static int signature_expected(const char *secret, const char *msg_id, const char *timestamp,
                              const char *body, size_t body_len, char *out)
{
    unsigned char key[WEBHOOK_KEY_MAX + 2];
    unsigned char mac[HMAC_SHA256_LEN];
    size_t key_len = 0;
    int rc = -1;

    if (secret_key(secret, key, sizeof key, &key_len) != 0 || key_len > WEBHOOK_KEY_MAX)
        goto done;
    if (signature_compute(key, key_len, msg_id, timestamp, body, body_len, mac) != 0)
        goto done;
    memcpy(out, SIGNATURE_PREFIX, strlen(SIGNATURE_PREFIX));
    EVP_EncodeBlock((unsigned char *)out + strlen(SIGNATURE_PREFIX), mac, HMAC_SHA256_LEN);
    rc = 0;
done:
    OPENSSL_cleanse(key, sizeof key);
    OPENSSL_cleanse(mac, sizeof mac);
    return rc;
}

int webhook_sign(const char *secret, const char *msg_id, int64_t timestamp, const char *body,
                 size_t body_len, char *out, size_t out_size)
{
    char ts[24];
    char sig[SIGNATURE_B64_LEN + 8];

    if (msg_id == NULL || (body == NULL && body_len > 0) || out == NULL ||
        out_size < strlen(SIGNATURE_PREFIX) + SIGNATURE_B64_LEN + 1)
        return -1;
    snprintf(ts, sizeof ts, "%" PRId64, timestamp);
    if (signature_expected(secret, msg_id, ts, body, body_len, sig) != 0)
        return -1;
    memcpy(out, sig, strlen(SIGNATURE_PREFIX) + SIGNATURE_B64_LEN + 1);
    return 0;
}

static bool header_missing(const char *h)
{
    return h == NULL || h[0] == '\0';
}

/* Whether any space-separated "v1,<base64>" entry equals expected. Every entry
 * of the right length is compared in constant time; the lengths themselves are
 * public. Entries of other versions ("v1a,...", "v2,...") are ignored. */
static bool signature_matches(const char *header, const char *expected)
{
    size_t expected_len = strlen(expected);
    bool matched = false;
    const char *p = header;

    while (*p != '\0') {
        size_t n;

        while (*p == ' ')
            p++;
        n = strcspn(p, " ");
        if (n == expected_len && CRYPTO_memcmp(p, expected, n) == 0)
            matched = true;
        p += n;
    }
    return matched;
}

int webhook_check_headers(const char *msg_id, const char *timestamp, const char *signatures,
                          int64_t now, struct webhook_error *err)
{
    int64_t ts = 0;
    size_t digits;

    if (header_missing(msg_id) || header_missing(timestamp) || header_missing(signatures)) {
        error_set(err, 401, "missing_signature_headers", "%s header is missing",
                  header_missing(msg_id)      ? "webhook-id"
                  : header_missing(timestamp) ? "webhook-timestamp"
                                              : "webhook-signature");
        return -1;
    }
    digits = strspn(timestamp, "0123456789");
    if (timestamp[digits] != '\0') {
        error_set(err, 401, "invalid_signature",
                  "webhook-timestamp must be Unix seconds (digits only)");
        return -1;
    }
    if (digits > TIMESTAMP_DIGITS_MAX) {
        error_set(err, 401, "stale_timestamp", "webhook-timestamp is more than %d seconds from now",
                  WEBHOOK_TOLERANCE_SECONDS);
        return -1;
    }
    for (size_t i = 0; i < digits; i++)
        ts = ts * 10 + (timestamp[i] - '0');
    /* ts is in [0, 10^15), so ts +/- the tolerance cannot overflow whatever now is. */
    if (now < ts - WEBHOOK_TOLERANCE_SECONDS || now > ts + WEBHOOK_TOLERANCE_SECONDS) {
        error_set(err, 401, "stale_timestamp", "webhook-timestamp is more than %d seconds from now",
                  WEBHOOK_TOLERANCE_SECONDS);
        return -1;
    }
    return 0;
}

int webhook_verify(const char *secret, const char *msg_id, const char *timestamp,
                   const char *signatures, const char *body, size_t body_len, int64_t now,
                   struct webhook_error *err)
{
    char expected[SIGNATURE_B64_LEN + 8];

    if (webhook_check_headers(msg_id, timestamp, signatures, now, err) != 0)
        return -1;
    if (body == NULL && body_len > 0) {
        error_set(err, 401, "invalid_signature", "no body to verify");
        return -1;
    }
    if (signature_expected(secret, msg_id, timestamp, body, body_len, expected) != 0) {
        error_set(err, 500, "invalid_secret",
                  "the association's webhook secret is not \"whsec_\" followed by base64");
        return -1;
    }
    if (!signature_matches(signatures, expected)) {
        error_set(err, 401, "invalid_signature", "no webhook-signature entry matches");
        return -1;
    }
    return 0;
}

/* An unknown association's webhook costs what a known one's with a wrong
 * signature does: an HMAC over as many bytes (zeros, under a key nobody holds)
 * and the comparison, so the time of the answer does not tell them apart. */
int webhook_verify_unknown(const char *msg_id, const char *timestamp, const char *signatures,
                           size_t body_len, int64_t now, struct webhook_error *err)
{
    static const unsigned char key[32] = {0x5a};
    unsigned char mac[HMAC_SHA256_LEN];
    char expected[SIGNATURE_B64_LEN + 8];

    if (webhook_check_headers(msg_id, timestamp, signatures, now, err) != 0)
        return -1;
    if (signature_compute(key, sizeof key, msg_id, timestamp, NULL, body_len, mac) != 0)
        memset(mac, 0, sizeof mac);
    memcpy(expected, SIGNATURE_PREFIX, strlen(SIGNATURE_PREFIX));
    EVP_EncodeBlock((unsigned char *)expected + strlen(SIGNATURE_PREFIX), mac, HMAC_SHA256_LEN);
    (void)signature_matches(signatures, expected);
    error_set(err, 401, "invalid_signature", "no webhook-signature entry matches");
    return -1;
}

/* ---------------------------------------------------------------- RFC 3339 */

static bool is_leap_year(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int64_t y, int m)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

    return m == 2 && is_leap_year(y) ? 29 : days[m - 1];
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
 * days_from_civil): exact for every year, and independent of TZ and locale,
 * which mktime/timegm are not. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;

    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

/* Reads exactly n digits at *p; -1 if any is not a digit. */
static int read_digits(const char **p, int n)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return -1;
        v = v * 10 + (c - '0');
    }
    *p += n;
    return v;
}

static bool expect_char(const char **p, char c)
{
    if (**p != c)
        return false;
    (*p)++;
    return true;
}

/*
 * date-time = YYYY-MM-DD ("T"/"t") hh:mm:ss [.1*9DIGIT] ("Z"/"z"/("+"/"-")hh:mm)
 * A leap second (ss = 60) is accepted, as RFC 3339 allows, and counts as the
 * first second of the next minute, as POSIX time does. Years 0000-9999 parse;
 * only those whose instant fits int64 nanoseconds (1677-2262) are accepted.
 */
/* YYYY-MM-DD, a real day of its month. */
static bool read_date(const char **p, int *year, int *month, int *day)
{
    *year = read_digits(p, 4);
    if (*year < 0 || !expect_char(p, '-'))
        return false;
    *month = read_digits(p, 2);
    if (*month < 1 || *month > 12 || !expect_char(p, '-'))
        return false;
    *day = read_digits(p, 2);
    return *day >= 1 && *day <= days_in_month(*year, *month);
}

/* ("T"/"t") hh:mm:ss, as seconds into the day (a leap second is the 86400th). */
static bool read_time(const char **p, int64_t *secs)
{
    if (**p != 'T' && **p != 't')
        return false;
    (*p)++;
    int hour = read_digits(p, 2);
    if (hour < 0 || hour > 23 || !expect_char(p, ':'))
        return false;
    int minute = read_digits(p, 2);
    if (minute < 0 || minute > 59 || !expect_char(p, ':'))
        return false;
    int second = read_digits(p, 2);
    if (second < 0 || second > 60)
        return false;
    *secs = hour * 3600 + minute * 60 + second;
    return true;
}

/* [.1*9DIGIT], as nanoseconds. */
static bool read_fraction(const char **p, int64_t *frac)
{
    *frac = 0;
    if (**p != '.')
        return true;
    int n = 0;
    (*p)++;
    while (**p >= '0' && **p <= '9') {
        if (++n > 9)
            return false;
        *frac = *frac * 10 + (*(*p)++ - '0');
    }
    if (n == 0)
        return false;
    for (; n < 9; n++)
        *frac *= 10;
    return true;
}

/* "Z"/"z" or ("+"/"-")hh:mm, as seconds east of UTC. */
static bool read_offset(const char **p, int64_t *offset)
{
    *offset = 0;
    if (**p == 'Z' || **p == 'z') {
        (*p)++;
        return true;
    }
    if (**p != '+' && **p != '-')
        return false;
    int sign = *(*p)++ == '+' ? 1 : -1;
    int off_h = read_digits(p, 2);
    if (off_h < 0 || off_h > 23 || !expect_char(p, ':'))
        return false;
    int off_m = read_digits(p, 2);
    if (off_m < 0 || off_m > 59)
        return false;
    *offset = (int64_t)sign * (off_h * 3600 + off_m * 60);
    return true;
}

/*
 * date-time = YYYY-MM-DD ("T"/"t") hh:mm:ss [.1*9DIGIT] ("Z"/"z"/("+"/"-")hh:mm)
 * A leap second (ss = 60) is accepted, as RFC 3339 allows, and counts as the
 * first second of the next minute, as POSIX time does. Years 0000-9999 parse;
 * only those whose instant fits int64 nanoseconds (1677-2262) are accepted.
 */
int rfc3339_parse(const char *s, int64_t *ns)
{
    const char *p = s;
    int year, month, day;
    int64_t time_s, frac, offset, out;

    if (s == NULL || ns == NULL)
        return -1;
    if (!read_date(&p, &year, &month, &day) || !read_time(&p, &time_s) ||
        !read_fraction(&p, &frac) || !read_offset(&p, &offset) || *p != '\0')
        return -1;

    /* Local time minus its offset is UTC. */
    int64_t secs = days_from_civil(year, month, day) * 86400 + time_s - offset;
    /* Before 1970 the fraction is borrowed from the next second up, so that the
     * earliest representable instant (1677-09-21T00:12:43.145224192Z) does not
     * overflow on the way. */
    if (secs < 0 && frac > 0) {
        secs += 1;
        frac -= 1000000000;
    }
    if (__builtin_mul_overflow(secs, (int64_t)1000000000, &out) ||
        __builtin_add_overflow(out, frac, &out))
        return -1;
    *ns = out;
    return 0;
}

void rfc3339_format(int64_t ns, char *out, size_t out_size)
{
    /* Floor, not truncation, so that instants before 1970 land in the right second. */
    int64_t secs = ns / 1000000000 - (ns % 1000000000 < 0);
    int64_t days = secs / 86400 - (secs % 86400 < 0);
    int64_t in_day = secs - days * 86400;
    int64_t year;
    int month, day;

    if (out == NULL || out_size == 0)
        return;
    civil_from_days(days, &year, &month, &day);
    snprintf(out, out_size, "%04" PRId64 "-%02d-%02dT%02d:%02d:%02dZ", year, month, day,
             (int)(in_day / 3600), (int)(in_day / 60 % 60), (int)(in_day % 60));
}

/* ------------------------------------------------------------ event fields */

/* The JSON path of a field for messages: "data.Members[3]" + "Email". */
struct field_path {
    char text[128];
};

/* Appends s to out at *len, cut to fit (as snprintf would). Paths are built
 * for every field of every event, not only for a message: snprintf was most
 * of the cost of checking a member. */
static void path_put(struct field_path *out, size_t *len, const char *s)
{
    size_t n = strlen(s), room = sizeof out->text - 1 - *len;

    if (n > room)
        n = room;
    memcpy(out->text + *len, s, n);
    *len += n;
    out->text[*len] = '\0';
}

static void path_key(struct field_path *out, const char *parent, const char *key)
{
    size_t len = 0;

    out->text[0] = '\0';
    path_put(out, &len, parent);
    path_put(out, &len, ".");
    path_put(out, &len, key);
}

static void path_index(struct field_path *out, const char *parent, const char *key, size_t i)
{
    char digits[24], index[28];
    size_t d = 0, n = 0, len = 0;

    do {
        digits[d++] = (char)('0' + i % 10);
        i /= 10;
    } while (i);
    index[n++] = '[';
    while (d)
        index[n++] = digits[--d];
    index[n++] = ']';
    index[n] = '\0';
    path_key(out, parent, key);
    len = strlen(out->text);
    path_put(out, &len, index);
}

static void invalid(struct webhook_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void invalid(struct webhook_error *err, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL)
        return;
    err->status = 400;
    snprintf(err->code, sizeof err->code, "invalid_event");
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
}

/* Lends the member of obj named key, or NULL when absent or JSON null. */
static json_object *field_get(json_object *obj, const char *key)
{
    json_object *v = NULL;

    if (!json_object_object_get_ex(obj, key, &v))
        return NULL;
    return v;
}

/*
 * Well-formed UTF-8 per RFC 3629 (Unicode Table 3-7): no overlong forms, no
 * surrogates, nothing above U+10FFFF. json-c's JSON_TOKENER_VALIDATE_UTF8 only
 * checks the shape of sequences and lets "\xc0\xaf" or "\xed\xa0\x80" through;
 * such bytes would later make Constant Contact refuse a whole import.
 */
static bool utf8_valid(const unsigned char *s, size_t len)
{
    size_t i = 0;

    while (i < len) {
        unsigned char c = s[i];
        unsigned char lo = 0x80, hi = 0xBF;
        size_t n;

        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            n = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2;
            if (c == 0xE0)
                lo = 0xA0; /* overlong */
            if (c == 0xED)
                hi = 0x9F; /* surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3;
            if (c == 0xF0)
                lo = 0x90; /* overlong */
            if (c == 0xF4)
                hi = 0x8F; /* above U+10FFFF */
        } else {
            return false;
        }
        if (len - i - 1 < n || s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (size_t k = 2; k <= n; k++) {
            if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                return false;
        }
        i += n + 1;
    }
    return true;
}

/* Checks a JSON string that will become a C string: no U+0000 inside, at most
 * max bytes, well-formed UTF-8. */
static int text_check(json_object *v, const char *path, size_t max, struct webhook_error *err)
{
    const char *s = json_object_get_string(v);
    size_t len = (size_t)json_object_get_string_len(v);

    if (strlen(s) != len) {
        invalid(err, "%s must not contain a NUL character", path);
        return -1;
    }
    if (len > max) {
        invalid(err, "%s is longer than %zu bytes", path, max);
        return -1;
    }
    if (!utf8_valid((const unsigned char *)s, len)) {
        invalid(err, "%s is not valid UTF-8", path);
        return -1;
    }
    return 0;
}

/* A required Novi UniqueID: present, a string, and valid (ccsync_valid_unique_id). */
static int id_required(json_object *obj, const char *parent, const char *key,
                       char out[CCSYNC_ID_MAX + 1], struct webhook_error *err)
{
    struct field_path path;
    json_object *v = field_get(obj, key);
    const char *s;

    path_key(&path, parent, key);
    if (v == NULL) {
        invalid(err, "%s is required", path.text);
        return -1;
    }
    if (!json_object_is_type(v, json_type_string)) {
        invalid(err, "%s must be a string", path.text);
        return -1;
    }
    s = json_object_get_string(v);
    if ((size_t)json_object_get_string_len(v) != strlen(s) || !ccsync_valid_unique_id(s)) {
        invalid(err, "%s must be 1-%d characters of A-Z a-z 0-9 _ . : -", path.text, CCSYNC_ID_MAX);
        return -1;
    }
    memcpy(out, s, strlen(s) + 1);
    return 0;
}

/* An optional text field: *out stays NULL when absent or null, else an owned copy. */
static int text_optional(json_object *obj, const char *parent, const char *key, char **out,
                         struct webhook_error *err)
{
    struct field_path path;
    json_object *v = field_get(obj, key);

    *out = NULL;
    if (v == NULL)
        return 0;
    path_key(&path, parent, key);
    if (!json_object_is_type(v, json_type_string)) {
        invalid(err, "%s must be a string or null", path.text);
        return -1;
    }
    if (text_check(v, path.text, WEBHOOK_TEXT_MAX, err) != 0)
        return -1;
    *out = strdup(json_object_get_string(v));
    if (*out == NULL) {
        invalid(err, "out of memory reading %s", path.text);
        return -1;
    }
    return 0;
}

/* An optional boolean: *out keeps its default when absent or null. */
static int bool_optional(json_object *obj, const char *parent, const char *key, bool *out,
                         struct webhook_error *err)
{
    struct field_path path;
    json_object *v = field_get(obj, key);

    if (v == NULL)
        return 0;
    if (!json_object_is_type(v, json_type_boolean)) {
        path_key(&path, parent, key);
        invalid(err, "%s must be a boolean or null", path.text);
        return -1;
    }
    *out = json_object_get_boolean(v);
    return 0;
}

static int customer_type_optional(json_object *obj, const char *parent, enum customer_type *out,
                                  struct webhook_error *err)
{
    struct field_path path;
    json_object *v = field_get(obj, "CustomerType");
    const char *s;

    *out = CUSTOMER_UNKNOWN;
    if (v == NULL)
        return 0;
    path_key(&path, parent, "CustomerType");
    s = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
    if (s != NULL && (size_t)json_object_get_string_len(v) == strlen(s)) {
        if (strcmp(s, "Person") == 0) {
            *out = CUSTOMER_PERSON;
            return 0;
        }
        if (strcmp(s, "Company") == 0) {
            *out = CUSTOMER_COMPANY;
            return 0;
        }
    }
    invalid(err, "%s must be \"Person\", \"Company\" or null", path.text);
    return -1;
}

/* "Groups": [{"UniqueID","GroupName"}]; absent or null leaves has_groups false. */
static int groups_optional(json_object *obj, const char *parent, struct member_record *m,
                           struct webhook_error *err)
{
    struct field_path path;
    json_object *v = field_get(obj, "Groups");
    size_t n;

    if (v == NULL)
        return 0;
    path_key(&path, parent, "Groups");
    if (!json_object_is_type(v, json_type_array)) {
        invalid(err, "%s must be an array or null", path.text);
        return -1;
    }
    m->has_groups = true;
    n = json_object_array_length(v);
    if (n == 0)
        return 0;
    m->groups = calloc(n, sizeof *m->groups);
    if (m->groups == NULL) {
        invalid(err, "out of memory reading %s", path.text);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        json_object *g = json_object_array_get_idx(v, i);
        struct field_path item;

        path_index(&item, parent, "Groups", i);
        if (!json_object_is_type(g, json_type_object)) {
            invalid(err, "%s must be an object", item.text);
            return -1;
        }
        /* Counted as soon as the slot exists, so that clearing frees its name. */
        m->n_groups = i + 1;
        if (id_required(g, item.text, "UniqueID", m->groups[i].id, err) != 0 ||
            text_optional(g, item.text, "GroupName", &m->groups[i].name, err) != 0)
            return -1;
    }
    return 0;
}

/* ---- extra member fields (§12) ---- */

/* The keys ccsync reads itself; every other top-level key is an extra field. */
static bool member_key_known(const char *key)
{
    static const char *const KNOWN[] = {
        "UniqueID", "Email",        "FirstName", "LastName",
        "Company",  "CustomerType", "Active",    "DoNotSendMarketingEmails",
        "Groups",   "CustomFields", NULL};
    for (size_t i = 0; KNOWN[i] != NULL; i++)
        if (strcmp(KNOWN[i], key) == 0)
            return true;
    return false;
}

static int field_compare(const void *a, const void *b)
{
    return strcmp(((const struct member_field *)a)->name, ((const struct member_field *)b)->name);
}

/* Adds field prefix+key with value v (a string, number or boolean; null adds nothing).
 * Objects and arrays: with strict (inside CustomFields) a 400, else skipped, since no
 * CC contact field can hold them. */
static int field_add(struct member_record *m, const char *parent, const char *prefix,
                     const char *key, json_object *v, bool strict, struct webhook_error *err)
{
    struct field_path path;
    snprintf(path.text, sizeof path.text, "%s.%s%s", parent, prefix, key);
    if (v == NULL || json_object_is_type(v, json_type_null))
        return 0;
    bool scalar =
        json_object_is_type(v, json_type_string) || json_object_is_type(v, json_type_int) ||
        json_object_is_type(v, json_type_double) || json_object_is_type(v, json_type_boolean);
    if (!scalar && !strict)
        return 0;
    if (!scalar) {
        invalid(err, "%s must be a string, number, boolean or null", path.text);
        return -1;
    }
    if (strlen(key) > WEBHOOK_FIELD_NAME_MAX ||
        !utf8_valid((const unsigned char *)key, strlen(key))) {
        invalid(err, "%s: a field name must be valid UTF-8 of at most %d bytes", path.text,
                WEBHOOK_FIELD_NAME_MAX);
        return -1;
    }
    if (json_object_is_type(v, json_type_string) &&
        text_check(v, path.text, WEBHOOK_TEXT_MAX, err) != 0)
        return -1;
    if (m->n_fields >= WEBHOOK_FIELDS_MAX) {
        invalid(err, "%s: a member may carry at most %d extra fields", path.text,
                WEBHOOK_FIELDS_MAX);
        return -1;
    }
    /* Numbers keep the text Novi sent ("12.50"), booleans become "true"/"false". */
    const char *text = json_object_is_type(v, json_type_string)
                           ? json_object_get_string(v)
                           : json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN);
    struct member_field *f = &m->fields[m->n_fields];
    size_t n = strlen(prefix) + strlen(key) + 1;
    f->name = malloc(n);
    f->value = strdup(text);
    if (f->name == NULL || f->value == NULL) {
        free(f->name);
        free(f->value);
        invalid(err, "out of memory reading %s", path.text);
        return -1;
    }
    snprintf(f->name, n, "%s%s", prefix, key);
    m->n_fields++;
    return 0;
}

/* Every top-level key ccsync does not read itself, and the CustomFields object, into
 * m->fields sorted by name (so equal records store equal text). */
static int fields_optional(json_object *obj, const char *parent, struct member_record *m,
                           struct webhook_error *err)
{
    json_object *custom = field_get(obj, "CustomFields");
    size_t cap = (size_t)json_object_object_length(obj);
    if (custom != NULL && !json_object_is_type(custom, json_type_null)) {
        if (!json_object_is_type(custom, json_type_object)) {
            invalid(err, "%s.CustomFields must be an object or null", parent);
            return -1;
        }
        cap += (size_t)json_object_object_length(custom);
    }
    size_t unknown = 0;
    json_object_object_foreach(obj, k0, v0)
    {
        (void)v0;
        unknown += !member_key_known(k0);
    }
    if (unknown == 0 && cap == (size_t)json_object_object_length(obj))
        return 0; /* the common record: nothing beyond the fields ccsync reads */
    if (cap > WEBHOOK_FIELDS_MAX + 16)
        cap = WEBHOOK_FIELDS_MAX + 16; /* field_add refuses the rest */
    m->fields = calloc(cap, sizeof *m->fields);
    if (m->fields == NULL) {
        invalid(err, "out of memory reading %s", parent);
        return -1;
    }
    json_object_object_foreach(obj, key, val)
    {
        if (!member_key_known(key) && field_add(m, parent, "", key, val, false, err) != 0)
            return -1;
    }
    if (custom != NULL && json_object_is_type(custom, json_type_object)) {
        json_object_object_foreach(custom, ckey, cval)
        {
            if (field_add(m, parent, "CustomFields.", ckey, cval, true, err) != 0)
                return -1;
        }
    }
    if (m->n_fields == 0) {
        free(m->fields);
        m->fields = NULL;
    }
    if (m->n_fields > 1)
        qsort(m->fields, m->n_fields, sizeof *m->fields, field_compare);
    return 0;
}

/* A member record at path (e.g. "data" or "data.Members[3]"). On -1 the record
 * may be partly filled; the caller clears it. */
static int member_parse(json_object *obj, const char *path, struct member_record *m,
                        struct webhook_error *err)
{
    m->active = true;
    if (id_required(obj, path, "UniqueID", m->id, err) != 0 ||
        text_optional(obj, path, "Email", &m->email, err) != 0 ||
        text_optional(obj, path, "FirstName", &m->first_name, err) != 0 ||
        text_optional(obj, path, "LastName", &m->last_name, err) != 0 ||
        text_optional(obj, path, "Company", &m->company, err) != 0 ||
        customer_type_optional(obj, path, &m->type, err) != 0 ||
        bool_optional(obj, path, "Active", &m->active, err) != 0 ||
        bool_optional(obj, path, "DoNotSendMarketingEmails", &m->do_not_email, err) != 0 ||
        groups_optional(obj, path, m, err) != 0 || fields_optional(obj, path, m, err) != 0)
        return -1;
    return 0;
}

static int group_settings_parse(json_object *data, struct event *ev, struct webhook_error *err)
{
    json_object *name = field_get(data, "GroupName");
    json_object *sync = field_get(data, "SyncToConstantContact");

    if (name == NULL) {
        invalid(err, "data.GroupName is required");
        return -1;
    }
    if (!json_object_is_type(name, json_type_string)) {
        invalid(err, "data.GroupName must be a string");
        return -1;
    }
    if (text_check(name, "data.GroupName", WEBHOOK_TEXT_MAX, err) != 0)
        return -1;
    /* A CC list cannot be named "", and every group has a name in Novi. */
    if (json_object_get_string_len(name) == 0) {
        invalid(err, "data.GroupName must not be empty");
        return -1;
    }
    if (sync == NULL) {
        invalid(err, "data.SyncToConstantContact is required");
        return -1;
    }
    if (!json_object_is_type(sync, json_type_boolean)) {
        invalid(err, "data.SyncToConstantContact must be a boolean");
        return -1;
    }
    ev->group_name = strdup(json_object_get_string(name));
    if (ev->group_name == NULL) {
        invalid(err, "out of memory reading data.GroupName");
        return -1;
    }
    ev->sync_enabled = json_object_get_boolean(sync);
    return 0;
}

static int group_members_parse(json_object *data, struct event *ev, struct webhook_error *err)
{
    json_object *members = field_get(data, "Members");
    size_t n;

    if (members == NULL) {
        invalid(err, "data.Members is required");
        return -1;
    }
    if (!json_object_is_type(members, json_type_array)) {
        invalid(err, "data.Members must be an array");
        return -1;
    }
    n = json_object_array_length(members);
    if (n == 0)
        return 0;
    ev->members = calloc(n, sizeof *ev->members);
    if (ev->members == NULL) {
        invalid(err, "out of memory reading data.Members");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        json_object *item = json_object_array_get_idx(members, i);
        struct field_path path;

        path_index(&path, "data", "Members", i);
        if (!json_object_is_type(item, json_type_object)) {
            invalid(err, "%s must be an object", path.text);
            return -1;
        }
        ev->n_members = i + 1;
        if (member_parse(item, path.text, &ev->members[i], err) != 0)
            return -1;
    }
    return 0;
}

static const struct {
    const char *name;
    enum event_type type;
} event_types[] = {
    {"customer.created", EVENT_CUSTOMER_CREATED}, {"customer.updated", EVENT_CUSTOMER_UPDATED},
    {"customer.removed", EVENT_CUSTOMER_REMOVED}, {"group.created", EVENT_GROUP_CREATED},
    {"group.updated", EVENT_GROUP_UPDATED},       {"group.deleted", EVENT_GROUP_DELETED},
    {"group.members", EVENT_GROUP_MEMBERS},
};

/* Exact match on the full JSON string, so "group.deleted\u0000x" is unknown. */
static enum event_type event_type_lookup(const char *s, size_t len)
{
    for (size_t i = 0; i < sizeof event_types / sizeof event_types[0]; i++) {
        if (strlen(event_types[i].name) == len && memcmp(event_types[i].name, s, len) == 0)
            return event_types[i].type;
    }
    return EVENT_UNKNOWN;
}

/* Keeps the type as sent for logs, cut on a UTF-8 character boundary. */
static void type_name_copy(char *out, size_t out_size, const char *s, size_t len)
{
    size_t n = len < out_size - 1 ? len : out_size - 1;

    if (n < len) {
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(out, s, n);
    out[n] = '\0'; /* an embedded U+0000 simply ends the copy early */
}

/* The envelope and the data of a known type. body is the parsed top-level object. */
/* The envelope's type (kept as sent, for logs) and timestamp. */
static int envelope_fill(json_object *body, struct event *ev, struct webhook_error *err)
{
    json_object *type = field_get(body, "type");
    json_object *ts = field_get(body, "timestamp");

    if (type == NULL) {
        invalid(err, "type is required");
        return -1;
    }
    if (!json_object_is_type(type, json_type_string)) {
        invalid(err, "type must be a string");
        return -1;
    }
    const char *type_s = json_object_get_string(type);
    size_t type_len = (size_t)json_object_get_string_len(type);
    type_name_copy(ev->type_name, sizeof ev->type_name, type_s, type_len);
    if (ts == NULL) {
        invalid(err, "timestamp is required");
        return -1;
    }
    if (!json_object_is_type(ts, json_type_string)) {
        invalid(err, "timestamp must be a string");
        return -1;
    }
    if ((size_t)json_object_get_string_len(ts) != strlen(json_object_get_string(ts)) ||
        rfc3339_parse(json_object_get_string(ts), &ev->ts_ns) != 0) {
        invalid(err, "timestamp must be an RFC 3339 date-time such as 2026-11-27T10:00:03Z");
        return -1;
    }
    ev->type = event_type_lookup(type_s, type_len);
    return 0;
}

/* The data object of a known type. */
static int data_fill(json_object *data, struct event *ev, struct webhook_error *err)
{
    switch (ev->type) {
    case EVENT_CUSTOMER_CREATED:
    case EVENT_CUSTOMER_UPDATED:
        if (member_parse(data, "data", &ev->member, err) != 0)
            return -1;
        memcpy(ev->subject_id, ev->member.id, sizeof ev->subject_id);
        return 0;
    case EVENT_GROUP_CREATED:
    case EVENT_GROUP_UPDATED:
        if (id_required(data, "data", "UniqueID", ev->subject_id, err) != 0)
            return -1;
        return group_settings_parse(data, ev, err);
    case EVENT_GROUP_MEMBERS:
        if (id_required(data, "data", "UniqueID", ev->subject_id, err) != 0)
            return -1;
        return group_members_parse(data, ev, err);
    case EVENT_CUSTOMER_REMOVED:
    case EVENT_GROUP_DELETED:
        return id_required(data, "data", "UniqueID", ev->subject_id, err);
    case EVENT_UNKNOWN:
        break;
    }
    return 0;
}

static int event_fill(json_object *body, struct event *ev, struct webhook_error *err)
{
    if (envelope_fill(body, ev, err) != 0)
        return -1;
    /* An unknown type is answered "ignored" so that Novi stops retrying; its data
     * is not ours to judge, so it may be anything, or absent. */
    if (ev->type == EVENT_UNKNOWN)
        return 0;
    json_object *data = field_get(body, "data");
    if (data == NULL) {
        invalid(err, "data is required");
        return -1;
    }
    if (!json_object_is_type(data, json_type_object)) {
        invalid(err, "data must be an object");
        return -1;
    }
    return data_fill(data, ev, err);
}

static bool json_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Parses the whole body as one JSON value; returns a new reference (the caller
 * puts it) or NULL with err set. */
static json_object *body_parse(const char *body, size_t body_len, struct webhook_error *err)
{
    json_tokener *tok;
    json_object *root;
    enum json_tokener_error jerr;
    size_t end;

    if (body == NULL || body_len == 0) {
        error_set(err, 400, "malformed_json", "the body is empty");
        return NULL;
    }
    if (body_len > INT_MAX) {
        error_set(err, 400, "malformed_json", "the body is too large to parse");
        return NULL;
    }
    tok = json_tokener_new();
    if (tok == NULL) {
        error_set(err, 500, "internal_error", "out of memory");
        return NULL;
    }
    /* Strict: only standard JSON (no comments, single quotes, trailing commas,
     * NaN); UTF-8 validated so that what is stored and sent on is valid text. */
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_ALLOW_TRAILING_CHARS |
                                    JSON_TOKENER_VALIDATE_UTF8);
    root = json_tokener_parse_ex(tok, body, (int)body_len);
    jerr = json_tokener_get_error(tok);
    end = json_tokener_get_parse_end(tok);
    if (root == NULL) {
        if (jerr == json_tokener_continue)
            error_set(err, 400, "malformed_json", "malformed JSON: the body ends too early");
        else
            error_set(err, 400, "malformed_json", "malformed JSON at byte %zu: %s", end,
                      json_tokener_error_desc(jerr));
        json_tokener_free(tok);
        return NULL;
    }
    json_tokener_free(tok);
    while (end < body_len && json_space(body[end]))
        end++;
    if (end < body_len) {
        error_set(err, 400, "malformed_json",
                  "malformed JSON: unexpected data after the top-level value at byte %zu", end);
        json_object_put(root);
        return NULL;
    }
    return root;
}

/*
 * The caps, checked on the raw bytes before json-c builds anything: json-c
 * takes some microseconds an object, so 100,000 group entries would cost most
 * of a second before a check on the parsed tree could refuse them. One pass
 * over the bytes follows the containers (strings and their escapes skipped)
 * and counts the entries of data.Groups, data.Members and each member's
 * Groups, judged when each array closes. A key spelled with escapes escapes this pass; limits_check
 * on the parsed tree catches it. Malformed JSON is left to the parser's messages.
 */
enum scan_role {
    ROLE_OTHER,
    ROLE_ROOT,
    ROLE_DATA,
    ROLE_GROUPS,
    ROLE_MEMBERS,
    ROLE_MEMBER,
    ROLE_MEMBER_GROUPS
};

struct scan_frame {
    enum scan_role role;
    bool is_array;
    char key;     /* object: the last key read: 'd' data, 'g' Groups, 'm' Members, 0 other */
    size_t count; /* array: entries begun */
    size_t index; /* ROLE_MEMBER: which member */
};

struct scan {
    struct scan_frame stack[64];
    int depth;
    bool expect_key; /* in an object, before a key */
    bool in_scalar;  /* inside a number, true, false or null */
};

static char scan_key(const char *k, size_t n)
{
    if (n == 4 && memcmp(k, "data", 4) == 0)
        return 'd';
    if (n == 6 && memcmp(k, "Groups", 6) == 0)
        return 'g';
    if (n == 7 && memcmp(k, "Members", 7) == 0)
        return 'm';
    return 0;
}

/* The role of a container opened (c is '{' or '[') inside the frame top. */
static enum scan_role scan_child(const struct scan_frame *top, char c)
{
    if (top == NULL)
        return c == '{' ? ROLE_ROOT : ROLE_OTHER;
    if (top->role == ROLE_ROOT && top->key == 'd' && c == '{')
        return ROLE_DATA;
    if (top->role == ROLE_DATA && c == '[')
        return top->key == 'g' ? ROLE_GROUPS : top->key == 'm' ? ROLE_MEMBERS : ROLE_OTHER;
    if (top->role == ROLE_MEMBERS && c == '{')
        return ROLE_MEMBER;
    if (top->role == ROLE_MEMBER && top->key == 'g' && c == '[')
        return ROLE_MEMBER_GROUPS;
    return ROLE_OTHER;
}

/* A value begins: one more entry of the array on top, if any. */
static void scan_value(struct scan *sc)
{
    if (sc->depth > 0 && sc->stack[sc->depth - 1].is_array)
        sc->stack[sc->depth - 1].count++;
}

/* The container on top closes: -1 with err when it held more than its cap. */
static int scan_close(struct scan *sc, const struct webhook_limits *limits,
                      struct webhook_error *err)
{
    const struct scan_frame *top = &sc->stack[--sc->depth];
    size_t n = top->count;
    if (top->role == ROLE_GROUPS && n > limits->max_groups_per_member) {
        invalid(err, "data.Groups has %zu groups; at most %zu are accepted", n,
                limits->max_groups_per_member);
        return -1;
    }
    if (top->role == ROLE_MEMBERS && n > limits->max_snapshot_members) {
        invalid(err, "data.Members has %zu members; at most %zu are accepted", n,
                limits->max_snapshot_members);
        return -1;
    }
    if (top->role == ROLE_MEMBER_GROUPS && n > limits->max_groups_per_member) {
        invalid(err, "data.Members[%zu].Groups has %zu groups; at most %zu are accepted",
                sc->stack[sc->depth - 1].index, n, limits->max_groups_per_member);
        return -1;
    }
    return 0;
}

static void scan_open(struct scan *sc, char c)
{
    struct scan_frame *top = sc->depth > 0 ? &sc->stack[sc->depth - 1] : NULL;
    struct scan_frame f = {scan_child(top, c), c == '[', 0, 0, 0};
    if (f.role == ROLE_MEMBER)
        f.index = top->count - 1;
    sc->stack[sc->depth++] = f;
    sc->expect_key = c == '{';
}

/* Skips the string that starts at body[i] ('"'); returns the index after it,
 * or 0 when it does not end within the body. */
static size_t scan_string(const char *body, size_t len, size_t i)
{
    for (i++; i < len; i++) {
        if (body[i] == '\\')
            i++;
        else if (body[i] == '"')
            return i + 1;
    }
    return 0;
}

/* 0 within the caps (or not JSON enough to tell), -1 with err over one. */
static int caps_scan(const char *body, size_t len, const struct webhook_limits *limits,
                     struct webhook_error *err)
{
    struct scan sc = {.depth = 0};
    for (size_t i = 0; i < len;) {
        char c = body[i];
        bool scalar = !(c == '"' || c == '{' || c == '[' || c == '}' || c == ']' || c == ',' ||
                        c == ':' || json_space(c));
        if (scalar && !sc.in_scalar)
            scan_value(&sc);
        sc.in_scalar = scalar;
        if (c == '"') {
            size_t end = scan_string(body, len, i);
            if (end == 0)
                return 0; /* the parser tells what is wrong */
            if (sc.depth > 0 && sc.expect_key) {
                sc.stack[sc.depth - 1].key = scan_key(body + i + 1, end - i - 2);
                sc.expect_key = false;
            } else {
                scan_value(&sc);
            }
            i = end;
            continue;
        }
        if (c == '{' || c == '[') {
            scan_value(&sc);
            if (sc.depth == (int)(sizeof sc.stack / sizeof sc.stack[0]))
                return 0; /* deeper than the parser accepts: it says so */
            scan_open(&sc, c);
        } else if ((c == '}' || c == ']') && sc.depth > 0) {
            if (scan_close(&sc, limits, err) != 0)
                return -1;
        } else if (c == ',' && sc.depth > 0 && !sc.stack[sc.depth - 1].is_array) {
            sc.expect_key = true;
        }
        i++;
    }
    return 0;
}

/* How many entries the array at key of obj holds (0 when it is not an array). */
static size_t array_length(json_object *obj, const char *key)
{
    json_object *v = field_get(obj, key);
    return v != NULL && json_object_is_type(v, json_type_array) ? json_object_array_length(v) : 0;
}

/* The caps of limits over the parsed body, before any record is read, so a
 * refused body costs its JSON parse and one pass over the arrays' lengths. */
static int limits_check(json_object *root, const struct webhook_limits *limits,
                        struct webhook_error *err)
{
    json_object *data = field_get(root, "data");
    if (data == NULL || !json_object_is_type(data, json_type_object))
        return 0;
    size_t n = array_length(data, "Groups");
    if (n > limits->max_groups_per_member) {
        invalid(err, "data.Groups has %zu groups; at most %zu are accepted", n,
                limits->max_groups_per_member);
        return -1;
    }
    json_object *members = field_get(data, "Members");
    if (members == NULL || !json_object_is_type(members, json_type_array))
        return 0;
    n = json_object_array_length(members);
    if (n > limits->max_snapshot_members) {
        invalid(err, "data.Members has %zu members; at most %zu are accepted", n,
                limits->max_snapshot_members);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        json_object *m = json_object_array_get_idx(members, i);
        size_t groups = json_object_is_type(m, json_type_object) ? array_length(m, "Groups") : 0;
        if (groups > limits->max_groups_per_member) {
            invalid(err, "data.Members[%zu].Groups has %zu groups; at most %zu are accepted", i,
                    groups, limits->max_groups_per_member);
            return -1;
        }
    }
    return 0;
}

int webhook_parse_event(const char *body, size_t body_len, struct event *ev,
                        struct webhook_error *err)
{
    static const struct webhook_limits none = {SIZE_MAX, SIZE_MAX};
    return webhook_parse_event_limited(body, body_len, &none, ev, err);
}

int webhook_parse_event_limited(const char *body, size_t body_len,
                                const struct webhook_limits *limits, struct event *ev,
                                struct webhook_error *err)
{
    json_object *root;
    int rc;

    if (ev == NULL)
        return -1;
    memset(ev, 0, sizeof *ev);
    bool capped =
        limits->max_groups_per_member != SIZE_MAX || limits->max_snapshot_members != SIZE_MAX;
    if (capped && body != NULL && caps_scan(body, body_len, limits, err) != 0)
        return -1;
    root = body_parse(body, body_len, err);
    if (root == NULL)
        return -1;
    if (!json_object_is_type(root, json_type_object)) {
        invalid(err, "the body must be a JSON object");
        json_object_put(root);
        return -1;
    }
    rc = limits_check(root, limits, err) != 0 ? -1 : event_fill(root, ev, err);
    json_object_put(root);
    if (rc != 0) {
        /* Nothing half-built reaches the caller. */
        event_clear(ev);
        return -1;
    }
    return 0;
}
