/* test_secrets.c - secrets sealed at rest: they open only for their own
 * association and field, with a key of the ring, unaltered; keys rotate. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ccsync/secrets.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))
/* 32 bytes each: "0123456789abcdef0123456789abcdef" and 32 x 'k' */
#define KEY_A "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
#define KEY_B "a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s="

static void ring_of(const char *text, struct secrets_ring *ring)
{
    char err[200] = "";
    if (secrets_ring_parse(text, ring, err, sizeof err) != 0)
        fail_msg("ring: %s", err);
}

static void test_a_sealed_secret_opens_for_its_own_association_and_field(void **state)
{
    (void)state;
    struct secrets_ring ring;
    ring_of("# ccsync keys\n2026-12 " KEY_A "\n", &ring);
    char *sealed = secrets_seal(&ring, "assoc-1", "cc_refresh_token", "rt-secret-value");
    assert_non_null(sealed);
    assert_true(secrets_is_sealed(sealed));
    assert_non_null(strstr(sealed, "enc:v1:2026-12:"));
    assert_null(strstr(sealed, "rt-secret-value"));
    char out[64];
    assert_int_equal(secrets_open(&ring, "assoc-1", "cc_refresh_token", sealed, out, sizeof out),
                     0);
    assert_string_equal(out, "rt-secret-value");
    /* bound to association and field */
    assert_int_equal(secrets_open(&ring, "assoc-2", "cc_refresh_token", sealed, out, sizeof out),
                     -1);
    assert_int_equal(secrets_open(&ring, "assoc-1", "cc_access_token", sealed, out, sizeof out),
                     -1);
    /* too small a buffer says so */
    assert_int_equal(secrets_open(&ring, "assoc-1", "cc_refresh_token", sealed, out, 8), -2);
    /* two seals of one value differ (a fresh nonce each time) */
    char *again = secrets_seal(&ring, "assoc-1", "cc_refresh_token", "rt-secret-value");
    assert_string_not_equal(sealed, again);
    free(again);
    free(sealed);
}

static void test_an_altered_secret_does_not_open(void **state)
{
    (void)state;
    struct secrets_ring ring;
    ring_of("k1 " KEY_A "\n", &ring);
    char *sealed = secrets_seal(&ring, "a", "webhook_secret", "whsec_abc");
    char out[64];
    size_t len = strlen(sealed);
    for (size_t i = strlen("enc:v1:k1:"); i < len; i += 3) {
        char *bad = strdup(sealed);
        bad[i] = bad[i] == 'A' ? 'B' : 'A';
        int rc = secrets_open(&ring, "a", "webhook_secret", bad, out, sizeof out);
        if (rc == 0)
            fail_msg("altered at %zu, still opened: %s", i, out);
        free(bad);
    }
    assert_int_equal(secrets_open(&ring, "a", "webhook_secret", "enc:v1:k1:", out, sizeof out), -1);
    assert_int_equal(secrets_open(&ring, "a", "webhook_secret", "enc:v1:k9:AAAA", out, sizeof out),
                     -1);
    free(sealed);
}

static void test_keys_rotate(void **state)
{
    (void)state;
    struct secrets_ring old_ring, both, new_ring;
    ring_of("old " KEY_A "\n", &old_ring);
    ring_of("new " KEY_B "\nold " KEY_A "\n", &both);
    ring_of("new " KEY_B "\n", &new_ring);
    char *by_old = secrets_seal(&old_ring, "a", "cc_access_token", "at-1");
    char out[64];
    /* 1. the new key goes first: old values still open, and are due a re-seal */
    assert_int_equal(secrets_open(&both, "a", "cc_access_token", by_old, out, sizeof out), 0);
    assert_string_equal(out, "at-1");
    assert_true(secrets_needs_reseal(&both, by_old));
    /* 2. re-sealed with the new key */
    char *by_new = secrets_seal(&both, "a", "cc_access_token", out);
    assert_non_null(strstr(by_new, "enc:v1:new:"));
    assert_false(secrets_needs_reseal(&both, by_new));
    /* 3. the old key is dropped: the re-sealed value opens, the old one no longer */
    assert_int_equal(secrets_open(&new_ring, "a", "cc_access_token", by_new, out, sizeof out), 0);
    assert_string_equal(out, "at-1");
    assert_int_equal(secrets_open(&new_ring, "a", "cc_access_token", by_old, out, sizeof out), -1);
    free(by_old);
    free(by_new);
}

static void test_plain_text_from_before_is_read_and_due_a_seal(void **state)
{
    (void)state;
    struct secrets_ring ring, none = {0};
    ring_of("k " KEY_A "\n", &ring);
    char out[64];
    assert_false(secrets_is_sealed("whsec_plain"));
    assert_int_equal(secrets_open(&ring, "a", "webhook_secret", "whsec_plain", out, sizeof out), 0);
    assert_string_equal(out, "whsec_plain");
    assert_true(secrets_needs_reseal(&ring, "whsec_plain"));
    assert_false(secrets_needs_reseal(&none, "whsec_plain"));
    assert_false(secrets_needs_reseal(&ring, ""));
    assert_null(secrets_seal(&none, "a", "webhook_secret", "x"));
}

static void test_key_file_errors_name_the_line(void **state)
{
    (void)state;
    struct {
        const char *text, *says;
    } cases[] = {
        {"", "holds no key"},
        {"# only a comment\n\n", "holds no key"},
        {"k1\n", "line 1: write KEY_ID BASE64"},
        {"k1 " KEY_A "\nk 2 " KEY_B "\n", "line 2: the key must be 32 bytes"},
        {"k1 c2hvcnQ=\n", "line 1: the key must be 32 bytes"},
        {"k1 " KEY_A "\nk1 " KEY_B "\n", "line 2: key id k1 is used twice"},
        {"k/1 " KEY_A "\n", "line 1: a key id is"},
        {"k1 !!!!" KEY_A "\n", "line 1: the key must be 32 bytes"},
    };
    for (size_t k = 0; k < N_OF(cases); k++) {
        struct secrets_ring ring;
        char err[200] = "";
        if (secrets_ring_parse(cases[k].text, &ring, err, sizeof err) != -1 ||
            !strstr(err, cases[k].says))
            fail_msg("case %zu: \"%s\", want \"%s\"", k, err, cases[k].says);
    }
    struct secrets_ring ring;
    ring_of("  a " KEY_A "  \r\n\n# comment\n\tb\t" KEY_B "\n", &ring);
    assert_int_equal(ring.n, 2);
    assert_string_equal(ring.keys[0].id, "a");
    assert_memory_equal(ring.keys[1].key, "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk", 32);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_sealed_secret_opens_for_its_own_association_and_field),
        cmocka_unit_test(test_an_altered_secret_does_not_open),
        cmocka_unit_test(test_keys_rotate),
        cmocka_unit_test(test_plain_text_from_before_is_read_and_due_a_seal),
        cmocka_unit_test(test_key_file_errors_name_the_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
