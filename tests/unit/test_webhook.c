/*
 * test_webhook.c - the specification of what ccsync accepts from Novi: Standard
 * Webhooks signatures (docs/: webhooks, with the specification's test vector), the
 * event envelope and its field rules with the exact messages a client sees, and
 * RFC 3339 timestamps.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <stdbool.h>

#include <cmocka.h>

#include "ccsync/model.h"
#include "ccsync/webhook.h"

/* The Standard Webhooks specification's test vector. */
#define SPEC_SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define SPEC_ID "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define SPEC_TS_TEXT "1614265330"
#define SPEC_TS 1614265330
#define SPEC_BODY "{\"test\": 2432232314}"
#define SPEC_SIG "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

/* A 100-byte key (bytes 0..99): its base64 ends in "==", and because it is
 * longer than SHA-256's block it is hashed, so a decoder that kept the two
 * padding bytes as zeros would produce a different MAC. Expected values were
 * computed with Python's hmac module. */
#define LONG_SECRET                                                                                \
    "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+"   \
    "P0BBQkNERUZHSElKS0xNTk9QUVJTVFVWV1hZWltcXV5fYGFiYw=="
#define LONG_SECRET_SIG "v1,e6fA2UnPJit+x0pZmwBuBKzPGKf7cNVqlgEHytJiQV0="
#define LONG_SECRET_SIG_IF_PADDING_KEPT "v1,xH5Paj9Bv/cwz1umIg8XiHAMROUv9T7LsJXwlMf7dlY="

static int verify_spec(const char *secret, const char *id, const char *ts, const char *sig,
                       const char *body, int64_t now, struct webhook_error *err)
{
    memset(err, 0, sizeof *err);
    return webhook_verify(secret, id, ts, sig, body, body ? strlen(body) : 0, now, err);
}

static void assert_refused(int rc, const struct webhook_error *err, int status, const char *code,
                           const char *message)
{
    assert_int_equal(rc, -1);
    assert_int_equal(err->status, status);
    assert_string_equal(err->code, code);
    if (message != NULL)
        assert_string_equal(err->message, message);
}

/* ------------------------------------------------------------- signatures */

static void test_signature_accepts_spec_vector(void **state)
{
    struct webhook_error err;

    (void)state;
    assert_int_equal(
        verify_spec(SPEC_SECRET, SPEC_ID, SPEC_TS_TEXT, SPEC_SIG, SPEC_BODY, SPEC_TS, &err), 0);
}

static void test_sign_produces_spec_vector(void **state)
{
    char out[64];

    (void)state;
    assert_int_equal(
        webhook_sign(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY, strlen(SPEC_BODY), out, sizeof out),
        0);
    assert_string_equal(out, SPEC_SIG);
}

static void test_sign_refuses_a_buffer_too_small_or_a_bad_secret(void **state)
{
    char out[64];

    (void)state;
    assert_int_equal(webhook_sign(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY, strlen(SPEC_BODY), out,
                                  strlen(SPEC_SIG)),
                     -1);
    assert_int_equal(webhook_sign(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY, strlen(SPEC_BODY), out,
                                  strlen(SPEC_SIG) + 1),
                     0);
    assert_int_equal(webhook_sign("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", SPEC_ID, SPEC_TS, SPEC_BODY,
                                  strlen(SPEC_BODY), out, sizeof out),
                     -1);
}

static void test_signature_accepts_one_valid_entry_among_bad_ones(void **state)
{
    struct webhook_error err;
    const char *headers[] = {
        "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= " SPEC_SIG,
        SPEC_SIG " v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "v2,whatever v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= " SPEC_SIG " v1,short",
        "  " SPEC_SIG "  ",
    };

    (void)state;
    for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++) {
        print_message("header: %s\n", headers[i]);
        assert_int_equal(
            verify_spec(SPEC_SECRET, SPEC_ID, SPEC_TS_TEXT, headers[i], SPEC_BODY, SPEC_TS, &err),
            0);
    }
}

static void test_signature_ignores_other_versions_and_malformed_entries(void **state)
{
    struct webhook_error err;
    const char *headers[] = {
        "v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE",
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE==",
        "v1,G0HM9SSE+OTPJTGT/TMIKTSYZLE3UFJELVLNIOLJ1OE=",
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=,",
    };

    (void)state;
    for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++) {
        print_message("header: %s\n", headers[i]);
        assert_refused(
            verify_spec(SPEC_SECRET, SPEC_ID, SPEC_TS_TEXT, headers[i], SPEC_BODY, SPEC_TS, &err),
            &err, 401, "invalid_signature", "no webhook-signature entry matches");
    }
}

static void test_signature_rejects_wrong_secret(void **state)
{
    struct webhook_error err;

    (void)state;
    assert_refused(verify_spec("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSx", SPEC_ID, SPEC_TS_TEXT,
                               SPEC_SIG, SPEC_BODY, SPEC_TS, &err),
                   &err, 401, "invalid_signature", NULL);
}

static void test_signature_rejects_tampered_body_id_or_timestamp(void **state)
{
    struct webhook_error err;

    (void)state;
    assert_refused(verify_spec(SPEC_SECRET, SPEC_ID, SPEC_TS_TEXT, SPEC_SIG,
                               "{\"test\": 2432232315}", SPEC_TS, &err),
                   &err, 401, "invalid_signature", NULL);
    assert_refused(
        verify_spec(SPEC_SECRET, SPEC_ID, SPEC_TS_TEXT, SPEC_SIG, SPEC_BODY " ", SPEC_TS, &err),
        &err, 401, "invalid_signature", NULL);
    assert_refused(verify_spec(SPEC_SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJel", SPEC_TS_TEXT, SPEC_SIG,
                               SPEC_BODY, SPEC_TS, &err),
                   &err, 401, "invalid_signature", NULL);
    assert_refused(
        verify_spec(SPEC_SECRET, SPEC_ID, "1614265331", SPEC_SIG, SPEC_BODY, SPEC_TS, &err), &err,
        401, "invalid_signature", NULL);
}

static void test_signature_covers_the_body_by_length_not_by_nul(void **state)
{
    struct webhook_error err;
    const char body[] = "{\"test\": 2432232314}\0extra";

    (void)state;
    memset(&err, 0, sizeof err);
    assert_int_equal(webhook_verify(SPEC_SECRET, SPEC_ID, SPEC_TS_TEXT, SPEC_SIG, body,
                                    sizeof body - 1, SPEC_TS, &err),
                     -1);
    assert_string_equal(err.code, "invalid_signature");
}

static void test_signature_rejects_each_missing_header(void **state)
{
    struct webhook_error err;

    (void)state;
    assert_refused(verify_spec(SPEC_SECRET, NULL, SPEC_TS_TEXT, SPEC_SIG, SPEC_BODY, SPEC_TS, &err),
                   &err, 401, "missing_signature_headers", "webhook-id header is missing");
    assert_refused(verify_spec(SPEC_SECRET, "", SPEC_TS_TEXT, SPEC_SIG, SPEC_BODY, SPEC_TS, &err),
                   &err, 401, "missing_signature_headers", "webhook-id header is missing");
    assert_refused(verify_spec(SPEC_SECRET, SPEC_ID, NULL, SPEC_SIG, SPEC_BODY, SPEC_TS, &err),
                   &err, 401, "missing_signature_headers", "webhook-timestamp header is missing");
    assert_refused(verify_spec(SPEC_SECRET, SPEC_ID, "", SPEC_SIG, SPEC_BODY, SPEC_TS, &err), &err,
                   401, "missing_signature_headers", "webhook-timestamp header is missing");
    assert_refused(verify_spec(SPEC_SECRET, SPEC_ID, SPEC_TS_TEXT, NULL, SPEC_BODY, SPEC_TS, &err),
                   &err, 401, "missing_signature_headers", "webhook-signature header is missing");
    assert_refused(verify_spec(SPEC_SECRET, SPEC_ID, SPEC_TS_TEXT, "", SPEC_BODY, SPEC_TS, &err),
                   &err, 401, "missing_signature_headers", "webhook-signature header is missing");
}

static void test_signature_rejects_only_blank_signature_entries(void **state)
{
    struct webhook_error err;

    (void)state;
    assert_refused(verify_spec(SPEC_SECRET, SPEC_ID, SPEC_TS_TEXT, "   ", SPEC_BODY, SPEC_TS, &err),
                   &err, 401, "invalid_signature", NULL);
}

static void test_signature_accepts_timestamp_300_seconds_away(void **state)
{
    struct webhook_error err;

    (void)state;
    assert_int_equal(
        verify_spec(SPEC_SECRET, SPEC_ID, SPEC_TS_TEXT, SPEC_SIG, SPEC_BODY, SPEC_TS + 300, &err),
        0);
    assert_int_equal(
        verify_spec(SPEC_SECRET, SPEC_ID, SPEC_TS_TEXT, SPEC_SIG, SPEC_BODY, SPEC_TS - 300, &err),
        0);
}

static void test_signature_rejects_timestamp_301_seconds_away(void **state)
{
    struct webhook_error err;
    const char *msg = "webhook-timestamp is more than 300 seconds from now";

    (void)state;
    assert_refused(
        verify_spec(SPEC_SECRET, SPEC_ID, SPEC_TS_TEXT, SPEC_SIG, SPEC_BODY, SPEC_TS + 301, &err),
        &err, 401, "stale_timestamp", msg);
    assert_refused(
        verify_spec(SPEC_SECRET, SPEC_ID, SPEC_TS_TEXT, SPEC_SIG, SPEC_BODY, SPEC_TS - 301, &err),
        &err, 401, "stale_timestamp", msg);
}

static void test_signature_rejects_far_timestamps_without_overflow(void **state)
{
    struct webhook_error err;

    (void)state;
    assert_refused(verify_spec(SPEC_SECRET, SPEC_ID, "99999999999999999999999", SPEC_SIG, SPEC_BODY,
                               SPEC_TS, &err),
                   &err, 401, "stale_timestamp", NULL);
    assert_refused(verify_spec(SPEC_SECRET, SPEC_ID, "0", SPEC_SIG, SPEC_BODY, INT64_MAX, &err),
                   &err, 401, "stale_timestamp", NULL);
    assert_refused(
        verify_spec(SPEC_SECRET, SPEC_ID, "999999999999999", SPEC_SIG, SPEC_BODY, INT64_MIN, &err),
        &err, 401, "stale_timestamp", NULL);
}

static void test_signature_rejects_timestamp_that_is_not_all_digits(void **state)
{
    struct webhook_error err;
    const char *stamps[] = {"-1614265330",  "+1614265330", " 1614265330", "1614265330 ",
                            "1614265330.0", "0x60379df2",  "1614265330a"};

    (void)state;
    for (size_t i = 0; i < sizeof stamps / sizeof stamps[0]; i++) {
        print_message("timestamp: '%s'\n", stamps[i]);
        assert_refused(
            verify_spec(SPEC_SECRET, SPEC_ID, stamps[i], SPEC_SIG, SPEC_BODY, SPEC_TS, &err), &err,
            401, "invalid_signature", "webhook-timestamp must be Unix seconds (digits only)");
    }
}

static void test_signature_refuses_a_malformed_secret_as_a_server_error(void **state)
{
    struct webhook_error err;
    const char *secrets[] = {
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",       /* no prefix */
        "whsec_",                                 /* no key */
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS",  /* not a multiple of 4 */
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa!w", /* outside the alphabet */
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa w", /* white space inside */
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2La=aSw", /* padding in the middle */
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2La===",  /* three '=' */
        "whsec_====",
        "Whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        NULL,
    };

    (void)state;
    for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++) {
        print_message("secret: %s\n", secrets[i] ? secrets[i] : "(null)");
        assert_false(webhook_secret_valid(secrets[i]));
        assert_refused(
            verify_spec(secrets[i], SPEC_ID, SPEC_TS_TEXT, SPEC_SIG, SPEC_BODY, SPEC_TS, &err),
            &err, 500, "invalid_secret", NULL);
    }
}

static void test_secret_with_padding_uses_only_the_decoded_bytes(void **state)
{
    struct webhook_error err;
    const char *body = "{\"a\":1}";

    (void)state;
    assert_true(webhook_secret_valid(LONG_SECRET));
    assert_int_equal(
        verify_spec(LONG_SECRET, "msg_1", "1700000000", LONG_SECRET_SIG, body, 1700000000, &err),
        0);
    assert_refused(verify_spec(LONG_SECRET, "msg_1", "1700000000", LONG_SECRET_SIG_IF_PADDING_KEPT,
                               body, 1700000000, &err),
                   &err, 401, "invalid_signature", NULL);
}

/* A thread keeps its HMAC context and the key it last used: signatures under
 * two secrets, checked in turn, each hold under their own secret only. */
static void test_signatures_under_secrets_in_turn_hold_only_under_their_own(void **state)
{
    struct webhook_error err;
    const char *body = "{\"a\":1}";

    (void)state;
    for (int round = 0; round < 3; round++) {
        assert_int_equal(
            verify_spec(SPEC_SECRET, SPEC_ID, SPEC_TS_TEXT, SPEC_SIG, SPEC_BODY, SPEC_TS, &err), 0);
        assert_refused(
            verify_spec(LONG_SECRET, SPEC_ID, SPEC_TS_TEXT, SPEC_SIG, SPEC_BODY, SPEC_TS, &err),
            &err, 401, "invalid_signature", NULL);
        assert_int_equal(verify_spec(LONG_SECRET, "msg_1", "1700000000", LONG_SECRET_SIG, body,
                                     1700000000, &err),
                         0);
        assert_refused(verify_spec(SPEC_SECRET, "msg_1", "1700000000", LONG_SECRET_SIG, body,
                                   1700000000, &err),
                       &err, 401, "invalid_signature", NULL);
    }
}

static void test_secret_key_length_is_limited_to_128_bytes(void **state)
{
    char secret[256];
    unsigned char key[129];
    char b64[200];
    int n;

    (void)state;
    memset(key, 7, sizeof key);
    /* 128 bytes: accepted; 129 bytes: refused. */
    n = 0;
    {
        static const char alphabet[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for (size_t len = 128; len <= 129; len++) {
            size_t o = 0;
            for (size_t i = 0; i < len; i += 3) {
                unsigned v = (unsigned)key[i] << 16;
                if (i + 1 < len)
                    v |= (unsigned)key[i + 1] << 8;
                if (i + 2 < len)
                    v |= key[i + 2];
                b64[o++] = alphabet[(v >> 18) & 63];
                b64[o++] = alphabet[(v >> 12) & 63];
                b64[o++] = i + 1 < len ? alphabet[(v >> 6) & 63] : '=';
                b64[o++] = i + 2 < len ? alphabet[v & 63] : '=';
            }
            b64[o] = '\0';
            snprintf(secret, sizeof secret, "whsec_%s", b64);
            if (len == 128)
                assert_true(webhook_secret_valid(secret));
            else
                assert_false(webhook_secret_valid(secret));
            n++;
        }
    }
    assert_int_equal(n, 2);
    assert_true(webhook_secret_valid(SPEC_SECRET));
    assert_true(webhook_secret_valid("whsec_YQ=="));
}

/* ---------------------------------------------------------------- caps */

/* A body of n group entries for a customer.updated, or n members (each with
 * groups_each groups) for a group.members; malloc'd. */
static char *event_with(const char *type, size_t n, size_t groups_each)
{
    size_t cap = 256 + n * (64 + groups_each * 24), len = 0;
    char *b = malloc(cap);
    assert_non_null(b);
    bool members = strcmp(type, "group.members") == 0;
    len += (size_t)snprintf(b + len, cap - len,
                            "{\"type\":\"%s\",\"timestamp\":\"2026-11-27T10:00:03Z\",\"data\":"
                            "{\"UniqueID\":\"x-1\",\"%s\":[",
                            type, members ? "Members" : "Groups");
    for (size_t i = 0; i < n; i++) {
        len += (size_t)snprintf(b + len, cap - len, "%s{\"UniqueID\":\"%c%zu\"", i ? "," : "",
                                members ? 'm' : 'g', i);
        if (members && groups_each) {
            len += (size_t)snprintf(b + len, cap - len, ",\"Groups\":[");
            for (size_t k = 0; k < groups_each; k++)
                len += (size_t)snprintf(b + len, cap - len, "%s{\"UniqueID\":\"g%zu\"}",
                                        k ? "," : "", k);
            len += (size_t)snprintf(b + len, cap - len, "]");
        }
        len += (size_t)snprintf(b + len, cap - len, "}");
    }
    snprintf(b + len, cap - len, "]}}");
    return b;
}

static int parse_limited(const char *body, size_t max_groups, size_t max_members,
                         struct webhook_error *err)
{
    struct webhook_limits limits = {max_groups, max_members};
    struct event ev;
    int rc = webhook_parse_event_limited(body, strlen(body), &limits, &ev, err);
    if (rc == 0)
        event_clear(&ev);
    return rc;
}

static void test_member_with_more_groups_than_the_cap_is_refused_naming_the_field(void **state)
{
    (void)state;
    struct webhook_error err;
    char *at_cap = event_with("customer.updated", 3, 0),
         *over = event_with("customer.updated", 4, 0);
    assert_int_equal(parse_limited(at_cap, 3, 10, &err), 0);
    assert_int_equal(parse_limited(over, 3, 10, &err), -1);
    assert_int_equal(err.status, 400);
    assert_string_equal(err.code, "invalid_event");
    assert_string_equal(err.message, "data.Groups has 4 groups; at most 3 are accepted");
    free(at_cap);
    free(over);
}

static void test_snapshot_over_the_member_cap_is_refused_naming_the_field(void **state)
{
    (void)state;
    struct webhook_error err;
    char *at_cap = event_with("group.members", 5, 0), *over = event_with("group.members", 6, 0);
    assert_int_equal(parse_limited(at_cap, 3, 5, &err), 0);
    assert_int_equal(parse_limited(over, 3, 5, &err), -1);
    assert_string_equal(err.message, "data.Members has 6 members; at most 5 are accepted");
    free(at_cap);
    free(over);
}

static void test_snapshot_member_with_too_many_groups_is_refused(void **state)
{
    (void)state;
    struct webhook_error err;
    char *over = event_with("group.members", 2, 4);
    assert_int_equal(parse_limited(over, 3, 5, &err), -1);
    assert_string_equal(err.message, "data.Members[0].Groups has 4 groups; at most 3 are accepted");
    /* webhook_parse_event has no caps: what the door let in is read back whole. */
    struct event ev;
    assert_int_equal(webhook_parse_event(over, strlen(over), &ev, &err), 0);
    event_clear(&ev);
    free(over);
}

/* A key spelled with escapes passes the byte scan; the parsed tree is checked too. */
static void test_groups_key_spelled_with_escapes_is_capped_too(void **state)
{
    (void)state;
    struct webhook_error err;
    const char *body = "{\"type\":\"customer.updated\",\"timestamp\":\"2026-11-27T10:00:03Z\","
                       "\"data\":{\"UniqueID\":\"m-1\",\"Gr\\u006fups\":[{\"UniqueID\":\"a\"},"
                       "{\"UniqueID\":\"b\"}]}}";
    assert_int_equal(parse_limited(body, 1, 10, &err), -1);
    assert_string_equal(err.message, "data.Groups has 2 groups; at most 1 are accepted");
}

/* A body cut inside a string (after a backslash, too) is left to the parser:
 * the scan reads nothing past the body (found by fuzz_webhook). */
static void test_caps_scan_stops_at_a_string_cut_short(void **state)
{
    (void)state;
    static const char *const cut[] = {"{\"data\":{\"Groups", "{\"data\":{\"Gr\\"};
    for (size_t i = 0; i < sizeof cut / sizeof cut[0]; i++) {
        size_t len = strlen(cut[i]);
        char *exact = malloc(len); /* no terminator: an over-read is caught under ASan */
        memcpy(exact, cut[i], len);
        struct webhook_limits limits = {1, 1};
        struct webhook_error err;
        struct event ev;
        assert_int_equal(webhook_parse_event_limited(exact, len, &limits, &ev, &err), -1);
        assert_string_equal(err.code, "malformed_json");
        free(exact);
    }
}

/* 100,000 groups are refused at once: the cap is checked before any record is read. */
static void test_hundred_thousand_groups_are_refused_quickly(void **state)
{
    (void)state;
    struct webhook_error err;
    char *body = event_with("customer.updated", 100000, 0);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    assert_int_equal(parse_limited(body, 1000, 500000, &err), -1);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ms = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
    print_message("100,000 groups refused in %.1f ms (%zu bytes)\n", ms, strlen(body));
    assert_true(ms < 100.0);
    free(body);
}

/* ---------------------------------------------------------------- parsing */

static void parse_ok(const char *json, struct event *ev)
{
    struct webhook_error err;
    int rc;

    memset(&err, 0, sizeof err);
    rc = webhook_parse_event(json, strlen(json), ev, &err);
    if (rc != 0)
        print_error("refused (%d %s): %s\nbody: %s\n", err.status, err.code, err.message, json);
    assert_int_equal(rc, 0);
}

/* The body is refused with this code and exactly this message, and nothing
 * half-built is left in the event. */
static void assert_parse_refused(const char *json, size_t len, const char *code,
                                 const char *message)
{
    struct webhook_error err;
    struct event ev;
    int rc;

    memset(&err, 0, sizeof err);
    memset(&ev, 0x5a, sizeof ev);
    rc = webhook_parse_event(json, len, &ev, &err);
    if (rc != -1 || strcmp(err.message, message) != 0 || strcmp(err.code, code) != 0)
        print_error("body: %.*s\ngot %d %s: %s\n", (int)len, json, rc, err.code, err.message);
    assert_int_equal(rc, -1);
    assert_int_equal(err.status, 400);
    assert_string_equal(err.code, code);
    assert_string_equal(err.message, message);
    assert_null(ev.members);
    assert_null(ev.group_name);
    assert_null(ev.member.email);
    assert_null(ev.member.groups);
}

static void refused(const char *json, const char *message)
{
    assert_parse_refused(json, strlen(json), "invalid_event", message);
}

#define ENVELOPE(type, data)                                                                       \
    "{\"type\":\"" type "\",\"timestamp\":\"2026-11-27T10:00:03Z\",\"data\":" data "}"
#define TS_2026_11_27_10_00_03 INT64_C(1795773603000000000)

static void test_parse_customer_created_fills_every_member_field(void **state)
{
    struct event ev;

    (void)state;
    parse_ok(ENVELOPE("customer.created",
                      "{\"UniqueID\":\"m-1\",\"Email\":\" Ann@Example.org \",\"FirstName\":\"Ann\","
                      "\"LastName\":\"Lee\",\"Company\":\"Acme\",\"CustomerType\":\"Person\","
                      "\"Active\":true,\"DoNotSendMarketingEmails\":true,"
                      "\"Groups\":[{\"UniqueID\":\"g-1\",\"GroupName\":\"Board\"},"
                      "{\"UniqueID\":\"g.2:x\",\"GroupName\":null}],\"Extra\":[1,2]}"),
             &ev);
    assert_int_equal(ev.type, EVENT_CUSTOMER_CREATED);
    assert_string_equal(ev.type_name, "customer.created");
    assert_true(ev.ts_ns == TS_2026_11_27_10_00_03);
    assert_string_equal(ev.subject_id, "m-1");
    assert_string_equal(ev.member.id, "m-1");
    assert_string_equal(ev.member.email, " Ann@Example.org ");
    assert_string_equal(ev.member.first_name, "Ann");
    assert_string_equal(ev.member.last_name, "Lee");
    assert_string_equal(ev.member.company, "Acme");
    assert_int_equal(ev.member.type, CUSTOMER_PERSON);
    assert_true(ev.member.active);
    assert_true(ev.member.do_not_email);
    assert_true(ev.member.has_groups);
    assert_int_equal(ev.member.n_groups, 2);
    assert_string_equal(ev.member.groups[0].id, "g-1");
    assert_string_equal(ev.member.groups[0].name, "Board");
    assert_string_equal(ev.member.groups[1].id, "g.2:x");
    assert_null(ev.member.groups[1].name);
    assert_null(ev.group_name);
    assert_int_equal(ev.n_members, 0);
    event_clear(&ev);
    assert_null(ev.member.email);
}

static void test_parse_customer_updated_with_absent_and_null_fields_uses_defaults(void **state)
{
    struct event ev;

    (void)state;
    parse_ok(ENVELOPE("customer.updated",
                      "{\"UniqueID\":\"m-2\",\"Email\":null,\"FirstName\":null,\"LastName\":null,"
                      "\"Company\":null,\"CustomerType\":null,\"Active\":null,"
                      "\"DoNotSendMarketingEmails\":null,\"Groups\":null}"),
             &ev);
    assert_int_equal(ev.type, EVENT_CUSTOMER_UPDATED);
    assert_string_equal(ev.member.id, "m-2");
    assert_null(ev.member.email);
    assert_null(ev.member.first_name);
    assert_null(ev.member.last_name);
    assert_null(ev.member.company);
    assert_int_equal(ev.member.type, CUSTOMER_UNKNOWN);
    assert_true(ev.member.active);
    assert_false(ev.member.do_not_email);
    assert_false(ev.member.has_groups);
    assert_int_equal(ev.member.n_groups, 0);
    event_clear(&ev);

    parse_ok(ENVELOPE("customer.updated", "{\"UniqueID\":\"m-3\",\"CustomerType\":\"Company\","
                                          "\"Active\":false,\"Groups\":[]}"),
             &ev);
    assert_int_equal(ev.member.type, CUSTOMER_COMPANY);
    assert_false(ev.member.active);
    assert_true(ev.member.has_groups);
    assert_int_equal(ev.member.n_groups, 0);
    event_clear(&ev);
}

static void test_parse_customer_removed_and_group_deleted_carry_only_the_id(void **state)
{
    struct event ev;

    (void)state;
    parse_ok(ENVELOPE("customer.removed", "{\"UniqueID\":\"m-9\",\"Email\":5}"), &ev);
    assert_int_equal(ev.type, EVENT_CUSTOMER_REMOVED);
    assert_string_equal(ev.subject_id, "m-9");
    assert_null(ev.member.email);
    event_clear(&ev);

    parse_ok(ENVELOPE("group.deleted", "{\"UniqueID\":\"g-9\"}"), &ev);
    assert_int_equal(ev.type, EVENT_GROUP_DELETED);
    assert_string_equal(ev.type_name, "group.deleted");
    assert_string_equal(ev.subject_id, "g-9");
    event_clear(&ev);
}

static void test_parse_group_created_and_updated_carry_name_and_sync_flag(void **state)
{
    struct event ev;

    (void)state;
    parse_ok(ENVELOPE("group.created", "{\"UniqueID\":\"g-1\",\"GroupName\":\"Current Members "
                                       "with Zero Dues Balance\",\"SyncToConstantContact\":true}"),
             &ev);
    assert_int_equal(ev.type, EVENT_GROUP_CREATED);
    assert_string_equal(ev.subject_id, "g-1");
    assert_string_equal(ev.group_name, "Current Members with Zero Dues Balance");
    assert_true(ev.sync_enabled);
    event_clear(&ev);

    parse_ok(ENVELOPE("group.updated",
                      "{\"UniqueID\":\"g-1\",\"GroupName\":\"B\\u00f6rd \\\"x\\\"\","
                      "\"SyncToConstantContact\":false}"),
             &ev);
    assert_int_equal(ev.type, EVENT_GROUP_UPDATED);
    assert_string_equal(ev.group_name, "B\xc3\xb6rd \"x\"");
    assert_false(ev.sync_enabled);
    event_clear(&ev);
}

static void test_parse_group_members_carries_the_complete_membership(void **state)
{
    struct event ev;

    (void)state;
    parse_ok(ENVELOPE("group.members",
                      "{\"UniqueID\":\"g-7\",\"Members\":["
                      "{\"UniqueID\":\"m-1\",\"Email\":\"a@x.org\",\"CustomerType\":\"Person\"},"
                      "{\"UniqueID\":\"m-2\",\"Company\":\"Acme\",\"CustomerType\":\"Company\","
                      "\"DoNotSendMarketingEmails\":true,\"Active\":false,"
                      "\"Groups\":[{\"UniqueID\":\"g-7\",\"GroupName\":\"Seven\"}]}]}"),
             &ev);
    assert_int_equal(ev.type, EVENT_GROUP_MEMBERS);
    assert_string_equal(ev.subject_id, "g-7");
    assert_int_equal(ev.n_members, 2);
    assert_string_equal(ev.members[0].id, "m-1");
    assert_string_equal(ev.members[0].email, "a@x.org");
    assert_int_equal(ev.members[0].type, CUSTOMER_PERSON);
    assert_true(ev.members[0].active);
    assert_false(ev.members[0].has_groups);
    assert_string_equal(ev.members[1].id, "m-2");
    assert_null(ev.members[1].email);
    assert_string_equal(ev.members[1].company, "Acme");
    assert_int_equal(ev.members[1].type, CUSTOMER_COMPANY);
    assert_true(ev.members[1].do_not_email);
    assert_false(ev.members[1].active);
    assert_int_equal(ev.members[1].n_groups, 1);
    assert_string_equal(ev.members[1].groups[0].name, "Seven");
    event_clear(&ev);

    parse_ok(ENVELOPE("group.members", "{\"UniqueID\":\"g-8\",\"Members\":[]}"), &ev);
    assert_int_equal(ev.n_members, 0);
    assert_null(ev.members);
    event_clear(&ev);
}

static void test_parse_takes_the_timestamp_offset_into_account(void **state)
{
    struct event ev;

    (void)state;
    parse_ok("{\"type\":\"group.deleted\",\"timestamp\":\"2026-11-27T11:30:03.25+01:30\","
             "\"data\":{\"UniqueID\":\"g\"}}",
             &ev);
    assert_true(ev.ts_ns == TS_2026_11_27_10_00_03 + 250000000);
    event_clear(&ev);
}

static void test_parse_accepts_white_space_around_the_body(void **state)
{
    struct event ev;

    (void)state;
    parse_ok(" \r\n\t" ENVELOPE("group.deleted", "{\"UniqueID\":\"g\"}") " \r\n\t", &ev);
    assert_int_equal(ev.type, EVENT_GROUP_DELETED);
    event_clear(&ev);
}

static void test_parse_refuses_missing_envelope_fields_naming_them(void **state)
{
    (void)state;
    refused("{\"timestamp\":\"2026-11-27T10:00:03Z\",\"data\":{\"UniqueID\":\"g\"}}",
            "type is required");
    refused("{\"type\":null,\"timestamp\":\"2026-11-27T10:00:03Z\",\"data\":{}}",
            "type is required");
    refused("{\"type\":\"group.deleted\",\"data\":{\"UniqueID\":\"g\"}}", "timestamp is required");
    refused("{\"type\":\"group.deleted\",\"timestamp\":\"2026-11-27T10:00:03Z\"}",
            "data is required");
    refused("{\"type\":\"group.deleted\",\"timestamp\":\"2026-11-27T10:00:03Z\",\"data\":null}",
            "data is required");
}

static void test_parse_refuses_wrong_typed_envelope_fields_naming_them(void **state)
{
    (void)state;
    refused("{\"type\":7,\"timestamp\":\"2026-11-27T10:00:03Z\",\"data\":{}}",
            "type must be a string");
    refused("{\"type\":\"group.deleted\",\"timestamp\":1795773603,\"data\":{}}",
            "timestamp must be a string");
    refused("{\"type\":\"group.deleted\",\"timestamp\":\"2026-11-27 10:00:03Z\",\"data\":{}}",
            "timestamp must be an RFC 3339 date-time such as 2026-11-27T10:00:03Z");
    refused("{\"type\":\"group.deleted\",\"timestamp\":\"2026-11-27T10:00:03Z\",\"data\":[]}",
            "data must be an object");
    refused("{\"type\":\"group.deleted\",\"timestamp\":\"2026-11-27T10:00:03Z\",\"data\":\"x\"}",
            "data must be an object");
    refused("[1,2]", "the body must be a JSON object");
    refused("\"group.deleted\"", "the body must be a JSON object");
}

static void test_parse_refuses_missing_or_invalid_unique_id_for_every_known_type(void **state)
{
    const char *types[] = {"customer.created", "customer.updated", "customer.removed",
                           "group.created",    "group.updated",    "group.deleted",
                           "group.members"};
    char body[512];

    (void)state;
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        const char *fmt = "{\"type\":\"%s\",\"timestamp\":\"2026-11-27T10:00:03Z\",\"data\":%s}";

        snprintf(body, sizeof body, fmt, types[i], "{}");
        refused(body, "data.UniqueID is required");
        snprintf(body, sizeof body, fmt, types[i], "{\"UniqueID\":null}");
        refused(body, "data.UniqueID is required");
        snprintf(body, sizeof body, fmt, types[i], "{\"UniqueID\":12}");
        refused(body, "data.UniqueID must be a string");
        snprintf(body, sizeof body, fmt, types[i], "{\"UniqueID\":\"a b\"}");
        refused(body, "data.UniqueID must be 1-128 characters of A-Z a-z 0-9 _ . : -");
        snprintf(body, sizeof body, fmt, types[i], "{\"UniqueID\":\"\"}");
        refused(body, "data.UniqueID must be 1-128 characters of A-Z a-z 0-9 _ . : -");
    }
}

static void test_parse_refuses_group_settings_that_are_missing_or_wrong(void **state)
{
    (void)state;
    refused(ENVELOPE("group.created", "{\"UniqueID\":\"g\",\"SyncToConstantContact\":true}"),
            "data.GroupName is required");
    refused(ENVELOPE("group.updated",
                     "{\"UniqueID\":\"g\",\"GroupName\":null,\"SyncToConstantContact\":true}"),
            "data.GroupName is required");
    refused(ENVELOPE("group.created",
                     "{\"UniqueID\":\"g\",\"GroupName\":3,\"SyncToConstantContact\":true}"),
            "data.GroupName must be a string");
    refused(ENVELOPE("group.created",
                     "{\"UniqueID\":\"g\",\"GroupName\":\"\",\"SyncToConstantContact\":true}"),
            "data.GroupName must not be empty");
    refused(ENVELOPE("group.created", "{\"UniqueID\":\"g\",\"GroupName\":\"G\"}"),
            "data.SyncToConstantContact is required");
    refused(ENVELOPE("group.updated",
                     "{\"UniqueID\":\"g\",\"GroupName\":\"G\",\"SyncToConstantContact\":null}"),
            "data.SyncToConstantContact is required");
    refused(ENVELOPE("group.updated",
                     "{\"UniqueID\":\"g\",\"GroupName\":\"G\",\"SyncToConstantContact\":\"true\"}"),
            "data.SyncToConstantContact must be a boolean");
    refused(ENVELOPE("group.updated",
                     "{\"UniqueID\":\"g\",\"GroupName\":\"G\",\"SyncToConstantContact\":1}"),
            "data.SyncToConstantContact must be a boolean");
}

static void test_parse_refuses_group_members_that_are_missing_or_wrong(void **state)
{
    (void)state;
    refused(ENVELOPE("group.members", "{\"UniqueID\":\"g\"}"), "data.Members is required");
    refused(ENVELOPE("group.members", "{\"UniqueID\":\"g\",\"Members\":null}"),
            "data.Members is required");
    refused(ENVELOPE("group.members", "{\"UniqueID\":\"g\",\"Members\":{}}"),
            "data.Members must be an array");
    refused(ENVELOPE("group.members", "{\"UniqueID\":\"g\",\"Members\":[{\"UniqueID\":\"a\"},7]}"),
            "data.Members[1] must be an object");
    refused(ENVELOPE("group.members", "{\"UniqueID\":\"g\",\"Members\":[null]}"),
            "data.Members[0] must be an object");
    refused(ENVELOPE("group.members",
                     "{\"UniqueID\":\"g\",\"Members\":[{\"UniqueID\":\"a\"},{\"UniqueID\":\"b\"},"
                     "{\"UniqueID\":\"c\"},{\"Email\":\"d@x.org\"}]}"),
            "data.Members[3].UniqueID is required");
    refused(
        ENVELOPE("group.members",
                 "{\"UniqueID\":\"g\",\"Members\":[{\"UniqueID\":\"a\",\"Email\":\"a@x.org\"},"
                 "{\"UniqueID\":\"b\"},{\"UniqueID\":\"c\"},{\"UniqueID\":\"d\",\"Email\":[]}]}"),
        "data.Members[3].Email must be a string or null");
    refused(ENVELOPE("group.members",
                     "{\"UniqueID\":\"g\",\"Members\":[{\"UniqueID\":\"a\",\"Groups\":["
                     "{\"UniqueID\":\"g\"},{\"GroupName\":\"x\"}]}]}"),
            "data.Members[0].Groups[1].UniqueID is required");
}

static void test_parse_refuses_member_fields_of_the_wrong_type_naming_them(void **state)
{
    static const struct {
        const char *data;
        const char *message;
    } cases[] = {
        {"{\"UniqueID\":\"m\",\"Email\":1}", "data.Email must be a string or null"},
        {"{\"UniqueID\":\"m\",\"FirstName\":true}", "data.FirstName must be a string or null"},
        {"{\"UniqueID\":\"m\",\"LastName\":{}}", "data.LastName must be a string or null"},
        {"{\"UniqueID\":\"m\",\"Company\":[\"x\"]}", "data.Company must be a string or null"},
        {"{\"UniqueID\":\"m\",\"CustomerType\":\"person\"}",
         "data.CustomerType must be \"Person\", \"Company\" or null"},
        {"{\"UniqueID\":\"m\",\"CustomerType\":1}",
         "data.CustomerType must be \"Person\", \"Company\" or null"},
        {"{\"UniqueID\":\"m\",\"Active\":\"false\"}", "data.Active must be a boolean or null"},
        {"{\"UniqueID\":\"m\",\"Active\":0}", "data.Active must be a boolean or null"},
        {"{\"UniqueID\":\"m\",\"DoNotSendMarketingEmails\":\"yes\"}",
         "data.DoNotSendMarketingEmails must be a boolean or null"},
        {"{\"UniqueID\":\"m\",\"Groups\":{}}", "data.Groups must be an array or null"},
        {"{\"UniqueID\":\"m\",\"Groups\":[\"g-1\"]}", "data.Groups[0] must be an object"},
        {"{\"UniqueID\":\"m\",\"Groups\":[{\"UniqueID\":\"g\",\"GroupName\":1}]}",
         "data.Groups[0].GroupName must be a string or null"},
        {"{\"UniqueID\":\"m\",\"Groups\":[{\"UniqueID\":\"g/1\"}]}",
         "data.Groups[0].UniqueID must be 1-128 characters of A-Z a-z 0-9 _ . : -"},
        {"{\"UniqueID\":\"m\",\"Email\":\"a\\u0000b@x.org\"}",
         "data.Email must not contain a NUL character"},
        {"{\"UniqueID\":\"m\\u0000x\"}",
         "data.UniqueID must be 1-128 characters of A-Z a-z 0-9 _ . : -"},
    };
    char body[512];

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(
            body, sizeof body,
            "{\"type\":\"customer.updated\",\"timestamp\":\"2026-11-27T10:00:03Z\",\"data\":%s}",
            cases[i].data);
        refused(body, cases[i].message);
    }
}

/* ---------------------------------------------------- extra member fields */

static void test_parse_keeps_extra_fields_and_custom_fields_sorted_as_text(void **state)
{
    struct event ev;

    (void)state;
    parse_ok(ENVELOPE("customer.updated",
                      "{\"UniqueID\":\"m-1\",\"Phone\":\"555-0100\",\"MemberType\":\"Gold\","
                      "\"Dues\":12.50,\"Years\":7,\"Board\":true,\"Fax\":null,"
                      "\"Address\":{\"City\":\"Oslo\"},\"Tags\":[1],"
                      "\"CustomFields\":{\"Chapter\":\"North\",\"Votes\":3,\"Gone\":null}}"),
             &ev);
    const struct member_record *m = &ev.member;
    /* objects and arrays at the top level cannot be a CC field: skipped; null: no value */
    assert_int_equal(m->n_fields, 7);
    static const char *const names[] = {"Board", "CustomFields.Chapter", "CustomFields.Votes",
                                        "Dues",  "MemberType",           "Phone",
                                        "Years"};
    static const char *const values[] = {"true", "North", "3", "12.50", "Gold", "555-0100", "7"};
    for (size_t i = 0; i < 7; i++) {
        assert_string_equal(m->fields[i].name, names[i]);
        assert_string_equal(m->fields[i].value, values[i]);
    }
    assert_string_equal(member_field_value(m, "CustomFields.Chapter"), "North");
    assert_string_equal(member_field_value(m, "Years"), "7");
    assert_null(member_field_value(m, "Fax"));
    assert_null(member_field_value(m, "Chapter"));
    event_clear(&ev);
    assert_null(ev.member.fields);
}

static void test_parse_refuses_bad_extra_fields_naming_them(void **state)
{
    char body[8192], text[1100];

    (void)state;
    refused(ENVELOPE("customer.updated", "{\"UniqueID\":\"m\",\"CustomFields\":[]}"),
            "data.CustomFields must be an object or null");
    refused(ENVELOPE("customer.updated",
                     "{\"UniqueID\":\"m\",\"CustomFields\":{\"Chapter\":{\"a\":1}}}"),
            "data.CustomFields.Chapter must be a string, number, boolean or null");
    refused(ENVELOPE("group.members",
                     "{\"UniqueID\":\"g\",\"Members\":[{\"UniqueID\":\"m\",\"CustomFields\":"
                     "{\"Chapter\":[\"N\"]}}]}"),
            "data.Members[0].CustomFields.Chapter must be a string, number, boolean or null");
    refused(ENVELOPE("customer.updated", "{\"UniqueID\":\"m\",\"Phone\":\"a\\u0000b\"}"),
            "data.Phone must not contain a NUL character");
    memset(text, 'a', 1025);
    text[1025] = '\0';
    snprintf(body, sizeof body,
             ENVELOPE("customer.updated", "{\"UniqueID\":\"m\",\"CustomFields\":{\"C\":\"%s\"}}"),
             text);
    refused(body, "data.CustomFields.C is longer than 1024 bytes");
    size_t n = (size_t)snprintf(body, sizeof body,
                                "{\"type\":\"customer.updated\",\"timestamp\":"
                                "\"2026-11-27T10:00:03Z\",\"data\":{\"UniqueID\":\"m\"");
    for (int i = 0; i <= WEBHOOK_FIELDS_MAX; i++)
        n += (size_t)snprintf(body + n, sizeof body - n, ",\"F%03d\":1", i);
    snprintf(body + n, sizeof body - n, "}}");
    refused(body, "data.F256: a member may carry at most 256 extra fields");
}

static void test_parse_limits_text_fields_to_1024_bytes(void **state)
{
    char body[4096];
    char text[1100];
    struct event ev;

    (void)state;
    memset(text, 'a', 1024);
    text[1024] = '\0';
    snprintf(body, sizeof body,
             ENVELOPE("customer.updated", "{\"UniqueID\":\"m\",\"LastName\":\"%s\"}"), text);
    parse_ok(body, &ev);
    assert_int_equal(strlen(ev.member.last_name), 1024);
    event_clear(&ev);

    text[1024] = 'a';
    text[1025] = '\0';
    snprintf(body, sizeof body,
             ENVELOPE("customer.updated", "{\"UniqueID\":\"m\",\"LastName\":\"%s\"}"), text);
    refused(body, "data.LastName is longer than 1024 bytes");
}

static void test_parse_refuses_text_that_is_not_well_formed_utf8(void **state)
{
    struct event ev;

    (void)state;
    /* json-c lets these byte sequences through; ccsync must not pass them on. */
    refused(ENVELOPE("customer.updated", "{\"UniqueID\":\"m\",\"FirstName\":\"\xc0\xaf\"}"),
            "data.FirstName is not valid UTF-8");
    refused(ENVELOPE("customer.updated", "{\"UniqueID\":\"m\",\"LastName\":\"\xed\xa0\x80\"}"),
            "data.LastName is not valid UTF-8");
    refused(ENVELOPE("customer.updated", "{\"UniqueID\":\"m\",\"Company\":\"\xf4\x90\x80\x80\"}"),
            "data.Company is not valid UTF-8");
    refused(ENVELOPE("group.created", "{\"UniqueID\":\"g\",\"GroupName\":\"\xe0\x80\x80\","
                                      "\"SyncToConstantContact\":true}"),
            "data.GroupName is not valid UTF-8");
    /* Well-formed text of every length, and escaped surrogate pairs, pass. */
    parse_ok(ENVELOPE("customer.updated",
                      "{\"UniqueID\":\"m\",\"FirstName\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\","
                      "\"LastName\":\"\\ud83d\\ude00\"}"),
             &ev);
    assert_string_equal(ev.member.first_name, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    assert_string_equal(ev.member.last_name, "\xf0\x9f\x98\x80");
    event_clear(&ev);
}

static void test_parse_limits_unique_ids_to_128_characters(void **state)
{
    char body[512];
    char id[200];
    struct event ev;

    (void)state;
    memset(id, 'Z', 128);
    id[128] = '\0';
    snprintf(body, sizeof body, ENVELOPE("group.deleted", "{\"UniqueID\":\"%s\"}"), id);
    parse_ok(body, &ev);
    assert_string_equal(ev.subject_id, id);
    event_clear(&ev);

    id[128] = 'Z';
    id[129] = '\0';
    snprintf(body, sizeof body, ENVELOPE("group.deleted", "{\"UniqueID\":\"%s\"}"), id);
    refused(body, "data.UniqueID must be 1-128 characters of A-Z a-z 0-9 _ . : -");
}

static void test_parse_refuses_malformed_json(void **state)
{
    static const char *bodies[] = {
        "",
        "{",
        "{\"type\":",
        "not json",
        "{'type':'group.deleted'}",
        "{\"type\":\"group.deleted\",}",
        "{\"type\":\"group.deleted\" /* c */}",
        "{\"type\":\"gr\xff\xfeoup\"}",
        "\xef\xbb\xbf{}",
    };

    (void)state;
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        struct webhook_error err;
        struct event ev;

        print_message("body: %s\n", bodies[i]);
        memset(&err, 0, sizeof err);
        assert_int_equal(webhook_parse_event(bodies[i], strlen(bodies[i]), &ev, &err), -1);
        assert_int_equal(err.status, 400);
        assert_string_equal(err.code, "malformed_json");
        assert_true(strncmp(err.message, "malformed JSON", 14) == 0 ||
                    strcmp(err.message, "the body is empty") == 0);
    }
    assert_parse_refused("{", 1, "malformed_json", "malformed JSON: the body ends too early");
    assert_parse_refused(NULL, 0, "malformed_json", "the body is empty");
}

static void test_parse_refuses_trailing_garbage(void **state)
{
    static const char body[] = ENVELOPE("group.deleted", "{\"UniqueID\":\"g\"}");
    char buf[256];
    size_t n = strlen(body);

    (void)state;
    snprintf(buf, sizeof buf, "%sx", body);
    assert_parse_refused(buf, strlen(buf), "malformed_json",
                         "malformed JSON: unexpected data after the top-level value at byte 83");
    snprintf(buf, sizeof buf, "%s {}", body);
    assert_parse_refused(buf, strlen(buf), "malformed_json",
                         "malformed JSON: unexpected data after the top-level value at byte 84");
    /* A NUL after the object is data too: the length, not the NUL, ends the body. */
    memcpy(buf, body, n);
    buf[n] = '\0';
    buf[n + 1] = ' ';
    assert_parse_refused(buf, n + 2, "malformed_json",
                         "malformed JSON: unexpected data after the top-level value at byte 83");
}

static void test_parse_reads_only_body_len_bytes(void **state)
{
    static const char body[] = ENVELOPE("group.deleted", "{\"UniqueID\":\"g\"}") "garbage";
    struct webhook_error err;
    struct event ev;

    (void)state;
    assert_int_equal(webhook_parse_event(body, strlen(body) - strlen("garbage"), &ev, &err), 0);
    assert_int_equal(ev.type, EVENT_GROUP_DELETED);
    event_clear(&ev);
}

static void test_parse_ignores_unknown_type_with_valid_envelope(void **state)
{
    struct event ev;

    (void)state;
    parse_ok("{\"type\":\"invoice.paid\",\"timestamp\":\"2026-11-27T10:00:03Z\",\"data\":5}", &ev);
    assert_int_equal(ev.type, EVENT_UNKNOWN);
    assert_string_equal(ev.type_name, "invoice.paid");
    assert_true(ev.ts_ns == TS_2026_11_27_10_00_03);
    assert_string_equal(ev.subject_id, "");
    event_clear(&ev);

    parse_ok("{\"type\":\"Group.Deleted\",\"timestamp\":\"2026-11-27T10:00:03Z\"}", &ev);
    assert_int_equal(ev.type, EVENT_UNKNOWN);
    event_clear(&ev);

    parse_ok("{\"type\":\"group.deleted\\u0000\",\"timestamp\":\"2026-11-27T10:00:03Z\"}", &ev);
    assert_int_equal(ev.type, EVENT_UNKNOWN);
    assert_string_equal(ev.type_name, "group.deleted");
    event_clear(&ev);
}

static void test_parse_still_requires_type_and_timestamp_for_unknown_types(void **state)
{
    (void)state;
    refused("{\"type\":\"invoice.paid\",\"data\":{}}", "timestamp is required");
    refused("{\"type\":\"invoice.paid\",\"timestamp\":\"yesterday\",\"data\":{}}",
            "timestamp must be an RFC 3339 date-time such as 2026-11-27T10:00:03Z");
}

static void test_parse_keeps_a_long_type_name_cut_on_a_character_boundary(void **state)
{
    char body[512];
    char type[200];
    struct event ev;

    (void)state;
    /* 62 ASCII bytes, then "é" (2 bytes) would straddle the 63-byte limit. */
    memset(type, 'x', 62);
    strcpy(type + 62, "\xc3\xa9yyyy");
    snprintf(body, sizeof body, "{\"type\":\"%s\",\"timestamp\":\"2026-11-27T10:00:03Z\"}", type);
    parse_ok(body, &ev);
    assert_int_equal(ev.type, EVENT_UNKNOWN);
    assert_int_equal(strlen(ev.type_name), 62);
    event_clear(&ev);
}

/* ---------------------------------------------------------------- model */

static void test_unique_id_and_association_id_alphabets(void **state)
{
    char id[200];

    (void)state;
    assert_true(ccsync_valid_unique_id("aZ09_.:-"));
    assert_false(ccsync_valid_unique_id(""));
    assert_false(ccsync_valid_unique_id(NULL));
    assert_false(ccsync_valid_unique_id("a/b"));
    assert_false(ccsync_valid_unique_id("a b"));
    assert_false(ccsync_valid_unique_id("\xc3\xa9"));
    assert_true(ccsync_valid_association_id("assoc_1-A"));
    assert_false(ccsync_valid_association_id("assoc.1"));
    assert_false(ccsync_valid_association_id("a:1"));
    assert_false(ccsync_valid_association_id(""));
    assert_false(ccsync_valid_association_id(NULL));
    memset(id, 'a', sizeof id);
    id[128] = '\0';
    assert_true(ccsync_valid_unique_id(id));
    id[128] = 'a';
    id[129] = '\0';
    assert_false(ccsync_valid_unique_id(id));
    id[64] = '\0';
    assert_true(ccsync_valid_association_id(id));
    id[64] = 'a';
    id[65] = '\0';
    assert_false(ccsync_valid_association_id(id));
}

static void test_event_type_names_round_trip_through_the_parser(void **state)
{
    const enum event_type types[] = {
        EVENT_CUSTOMER_CREATED, EVENT_CUSTOMER_UPDATED, EVENT_CUSTOMER_REMOVED, EVENT_GROUP_CREATED,
        EVENT_GROUP_UPDATED,    EVENT_GROUP_DELETED,    EVENT_GROUP_MEMBERS};
    char body[512];

    (void)state;
    assert_string_equal(event_type_name(EVENT_UNKNOWN), "unknown");
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        struct event ev;

        snprintf(body, sizeof body,
                 "{\"type\":\"%s\",\"timestamp\":\"2026-11-27T10:00:03Z\",\"data\":{\"UniqueID\":"
                 "\"x\",\"GroupName\":\"G\",\"SyncToConstantContact\":true,\"Members\":[]}}",
                 event_type_name(types[i]));
        parse_ok(body, &ev);
        assert_int_equal(ev.type, types[i]);
        event_clear(&ev);
    }
}

static void test_clearing_an_event_twice_is_harmless(void **state)
{
    struct event ev;

    (void)state;
    parse_ok(ENVELOPE("group.members", "{\"UniqueID\":\"g\",\"Members\":[{\"UniqueID\":\"m\","
                                       "\"Email\":\"e@x.org\",\"Groups\":[{\"UniqueID\":\"g\","
                                       "\"GroupName\":\"G\"}]}]}"),
             &ev);
    event_clear(&ev);
    event_clear(&ev);
    assert_null(ev.members);
    assert_int_equal(ev.n_members, 0);
    member_record_clear(NULL);
    event_clear(NULL);
}

/* ---------------------------------------------------------------- RFC 3339 */

static int64_t parse_ns(const char *s)
{
    int64_t ns = 0;

    if (rfc3339_parse(s, &ns) != 0)
        fail_msg("refused: %s", s);
    return ns;
}

static void test_rfc3339_reads_utc_instants(void **state)
{
    (void)state;
    assert_true(parse_ns("1970-01-01T00:00:00Z") == 0);
    assert_true(parse_ns("2026-11-27T10:00:03Z") == TS_2026_11_27_10_00_03);
    assert_true(parse_ns("2026-11-27t10:00:03z") == TS_2026_11_27_10_00_03);
    assert_true(parse_ns("2021-02-25T15:02:10Z") == INT64_C(1614265330) * 1000000000);
    assert_true(parse_ns("1969-12-31T23:59:59Z") == -INT64_C(1000000000));
}

static void test_rfc3339_reads_fractional_seconds_of_one_to_nine_digits(void **state)
{
    (void)state;
    assert_true(parse_ns("1970-01-01T00:00:00.5Z") == 500000000);
    assert_true(parse_ns("1970-01-01T00:00:00.05Z") == 50000000);
    assert_true(parse_ns("1970-01-01T00:00:00.123456789Z") == 123456789);
    assert_true(parse_ns("1970-01-01T00:00:00.000000001Z") == 1);
    assert_true(parse_ns("1969-12-31T23:59:59.5Z") == -500000000);
    assert_true(parse_ns("2026-11-27T10:00:03.000Z") == TS_2026_11_27_10_00_03);
}

static void test_rfc3339_applies_offsets(void **state)
{
    (void)state;
    assert_true(parse_ns("2026-11-27T11:00:03+01:00") == TS_2026_11_27_10_00_03);
    assert_true(parse_ns("2026-11-27T04:30:03-05:30") == TS_2026_11_27_10_00_03);
    assert_true(parse_ns("2026-11-28T09:59:03+23:59") == TS_2026_11_27_10_00_03);
    assert_true(parse_ns("2026-11-27T10:00:03-00:00") == TS_2026_11_27_10_00_03);
    assert_true(parse_ns("2026-11-27T10:00:03+00:00") == TS_2026_11_27_10_00_03);
    /* Crossing a year boundary through the offset. */
    assert_true(parse_ns("1969-12-31T19:00:00-05:00") == 0);
}

static void test_rfc3339_knows_leap_years(void **state)
{
    int64_t ns;

    (void)state;
    assert_true(parse_ns("2024-02-29T00:00:00Z") - parse_ns("2024-02-28T00:00:00Z") ==
                INT64_C(86400) * 1000000000);
    assert_true(parse_ns("2024-03-01T00:00:00Z") - parse_ns("2024-02-29T00:00:00Z") ==
                INT64_C(86400) * 1000000000);
    assert_true(parse_ns("2000-02-29T12:00:00Z") == INT64_C(951825600) * 1000000000);
    assert_int_equal(rfc3339_parse("2023-02-29T00:00:00Z", &ns), -1);
    assert_int_equal(rfc3339_parse("1900-02-29T00:00:00Z", &ns), -1);
    assert_int_equal(rfc3339_parse("2100-02-29T00:00:00Z", &ns), -1);
    assert_int_equal(rfc3339_parse("2024-02-30T00:00:00Z", &ns), -1);
}

static void test_rfc3339_accepts_a_leap_second_as_the_next_second(void **state)
{
    (void)state;
    assert_true(parse_ns("2016-12-31T23:59:60Z") == parse_ns("2017-01-01T00:00:00Z"));
}

static void test_rfc3339_refuses_invalid_dates_and_times(void **state)
{
    static const char *bad[] = {
        "",
        "2026-11-27",
        "2026-11-27T10:00Z",
        "2026-11-27T10:00:03",
        "2026-11-27 10:00:03Z",
        "2026-11-27T10:00:03ZZ",
        "2026-11-27T10:00:03Z ",
        " 2026-11-27T10:00:03Z",
        "2026-13-01T00:00:00Z",
        "2026-00-01T00:00:00Z",
        "2026-04-31T00:00:00Z",
        "2026-01-32T00:00:00Z",
        "2026-01-00T00:00:00Z",
        "2026-01-01T24:00:00Z",
        "2026-01-01T00:60:00Z",
        "2026-01-01T00:00:61Z",
        "2026-01-01T00:00:00.Z",
        "2026-01-01T00:00:00.1234567890Z",
        "2026-01-01T00:00:00,5Z",
        "2026-01-01T00:00:00+24:00",
        "2026-01-01T00:00:00+01:60",
        "2026-01-01T00:00:00+0100",
        "2026-01-01T00:00:00+01",
        "2026-01-01T00:00:00UTC",
        "26-01-01T00:00:00Z",
        "+2026-01-01T00:00:00Z",
        "2026-1-01T00:00:00Z",
        "2026-01-01T0:00:00Z",
        "2026/01/01T00:00:00Z",
        "２026-01-01T00:00:00Z",
    };
    int64_t ns;

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        print_message("date-time: '%s'\n", bad[i]);
        assert_int_equal(rfc3339_parse(bad[i], &ns), -1);
    }
    assert_int_equal(rfc3339_parse(NULL, &ns), -1);
}

static void test_rfc3339_refuses_instants_outside_int64_nanoseconds(void **state)
{
    int64_t ns;

    (void)state;
    assert_true(parse_ns("2262-04-11T23:47:16.854775807Z") == INT64_MAX);
    assert_int_equal(rfc3339_parse("2262-04-11T23:47:16.854775808Z", &ns), -1);
    assert_true(parse_ns("1677-09-21T00:12:43.145224192Z") == INT64_MIN);
    assert_int_equal(rfc3339_parse("1677-09-21T00:12:43.145224191Z", &ns), -1);
    assert_int_equal(rfc3339_parse("9999-12-31T23:59:59Z", &ns), -1);
    assert_int_equal(rfc3339_parse("0000-01-01T00:00:00Z", &ns), -1);
}

static void test_rfc3339_formats_utc_whole_seconds(void **state)
{
    char out[32];

    (void)state;
    rfc3339_format(0, out, sizeof out);
    assert_string_equal(out, "1970-01-01T00:00:00Z");
    rfc3339_format(TS_2026_11_27_10_00_03 + 999999999, out, sizeof out);
    assert_string_equal(out, "2026-11-27T10:00:03Z");
    rfc3339_format(-1, out, sizeof out);
    assert_string_equal(out, "1969-12-31T23:59:59Z");
    rfc3339_format(parse_ns("2000-02-29T12:00:00Z"), out, sizeof out);
    assert_string_equal(out, "2000-02-29T12:00:00Z");
    rfc3339_format(INT64_MAX, out, sizeof out);
    assert_string_equal(out, "2262-04-11T23:47:16Z");
    rfc3339_format(INT64_MIN, out, sizeof out);
    assert_string_equal(out, "1677-09-21T00:12:43Z");
    rfc3339_format(0, out, 21);
    assert_string_equal(out, "1970-01-01T00:00:00Z");
    rfc3339_format(0, out, 5);
    assert_string_equal(out, "1970");
}

static void test_rfc3339_format_and_parse_round_trip(void **state)
{
    char out[32];

    (void)state;
    for (int64_t s = -INT64_C(9000000000); s < INT64_C(9000000000); s += INT64_C(86399 * 997)) {
        rfc3339_format(s * 1000000000, out, sizeof out);
        assert_true(parse_ns(out) == s * 1000000000);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signature_accepts_spec_vector),
        cmocka_unit_test(test_sign_produces_spec_vector),
        cmocka_unit_test(test_sign_refuses_a_buffer_too_small_or_a_bad_secret),
        cmocka_unit_test(test_signature_accepts_one_valid_entry_among_bad_ones),
        cmocka_unit_test(test_signature_ignores_other_versions_and_malformed_entries),
        cmocka_unit_test(test_signature_rejects_wrong_secret),
        cmocka_unit_test(test_signatures_under_secrets_in_turn_hold_only_under_their_own),
        cmocka_unit_test(test_signature_rejects_tampered_body_id_or_timestamp),
        cmocka_unit_test(test_signature_covers_the_body_by_length_not_by_nul),
        cmocka_unit_test(test_signature_rejects_each_missing_header),
        cmocka_unit_test(test_signature_rejects_only_blank_signature_entries),
        cmocka_unit_test(test_signature_accepts_timestamp_300_seconds_away),
        cmocka_unit_test(test_signature_rejects_timestamp_301_seconds_away),
        cmocka_unit_test(test_signature_rejects_far_timestamps_without_overflow),
        cmocka_unit_test(test_signature_rejects_timestamp_that_is_not_all_digits),
        cmocka_unit_test(test_signature_refuses_a_malformed_secret_as_a_server_error),
        cmocka_unit_test(test_secret_with_padding_uses_only_the_decoded_bytes),
        cmocka_unit_test(test_secret_key_length_is_limited_to_128_bytes),
        cmocka_unit_test(test_parse_customer_created_fills_every_member_field),
        cmocka_unit_test(test_parse_customer_updated_with_absent_and_null_fields_uses_defaults),
        cmocka_unit_test(test_parse_customer_removed_and_group_deleted_carry_only_the_id),
        cmocka_unit_test(test_parse_group_created_and_updated_carry_name_and_sync_flag),
        cmocka_unit_test(test_parse_group_members_carries_the_complete_membership),
        cmocka_unit_test(test_parse_takes_the_timestamp_offset_into_account),
        cmocka_unit_test(test_parse_keeps_extra_fields_and_custom_fields_sorted_as_text),
        cmocka_unit_test(test_parse_refuses_bad_extra_fields_naming_them),
        cmocka_unit_test(test_parse_accepts_white_space_around_the_body),
        cmocka_unit_test(test_parse_refuses_missing_envelope_fields_naming_them),
        cmocka_unit_test(test_parse_refuses_wrong_typed_envelope_fields_naming_them),
        cmocka_unit_test(test_parse_refuses_missing_or_invalid_unique_id_for_every_known_type),
        cmocka_unit_test(test_parse_refuses_group_settings_that_are_missing_or_wrong),
        cmocka_unit_test(test_parse_refuses_group_members_that_are_missing_or_wrong),
        cmocka_unit_test(test_parse_refuses_member_fields_of_the_wrong_type_naming_them),
        cmocka_unit_test(test_parse_limits_text_fields_to_1024_bytes),
        cmocka_unit_test(test_parse_refuses_text_that_is_not_well_formed_utf8),
        cmocka_unit_test(test_parse_limits_unique_ids_to_128_characters),
        cmocka_unit_test(test_parse_refuses_malformed_json),
        cmocka_unit_test(test_parse_refuses_trailing_garbage),
        cmocka_unit_test(test_parse_reads_only_body_len_bytes),
        cmocka_unit_test(test_parse_ignores_unknown_type_with_valid_envelope),
        cmocka_unit_test(test_parse_still_requires_type_and_timestamp_for_unknown_types),
        cmocka_unit_test(test_parse_keeps_a_long_type_name_cut_on_a_character_boundary),
        cmocka_unit_test(test_unique_id_and_association_id_alphabets),
        cmocka_unit_test(test_event_type_names_round_trip_through_the_parser),
        cmocka_unit_test(test_clearing_an_event_twice_is_harmless),
        cmocka_unit_test(test_rfc3339_reads_utc_instants),
        cmocka_unit_test(test_rfc3339_reads_fractional_seconds_of_one_to_nine_digits),
        cmocka_unit_test(test_rfc3339_applies_offsets),
        cmocka_unit_test(test_rfc3339_knows_leap_years),
        cmocka_unit_test(test_rfc3339_accepts_a_leap_second_as_the_next_second),
        cmocka_unit_test(test_rfc3339_refuses_invalid_dates_and_times),
        cmocka_unit_test(test_rfc3339_refuses_instants_outside_int64_nanoseconds),
        cmocka_unit_test(test_rfc3339_formats_utc_whole_seconds),
        cmocka_unit_test(test_rfc3339_format_and_parse_round_trip),
        cmocka_unit_test(test_member_with_more_groups_than_the_cap_is_refused_naming_the_field),
        cmocka_unit_test(test_snapshot_over_the_member_cap_is_refused_naming_the_field),
        cmocka_unit_test(test_snapshot_member_with_too_many_groups_is_refused),
        cmocka_unit_test(test_hundred_thousand_groups_are_refused_quickly),
        cmocka_unit_test(test_groups_key_spelled_with_escapes_is_capped_too),
        cmocka_unit_test(test_caps_scan_stops_at_a_string_cut_short),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
