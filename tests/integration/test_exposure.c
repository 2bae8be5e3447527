/* test_exposure.c - what ccsyncd shows to whom: with CCSYNC_ADMIN_LISTEN the public
 * listener (the webhook URL, open to the internet) serves webhooks, /livez and /readyz
 * only, and the admin API, the status page and /metrics answer on the admin listener. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "novi.h"
#include "reply.h"
#include "stack.h"
#include "testsupport.h"

static long status_of(const char *base, const char *method, const char *path, const char *body)
{
    char url[256];
    snprintf(url, sizeof url, "%s%s", base, path);
    const char *headers[] = {"Authorization: Bearer " ADMIN_TOKEN, "Content-Type: application/json",
                             NULL};
    struct reply r = http(method, url, headers, body);
    long status = r.status;
    if (status == 404 && strstr(path, "/webhooks/") == NULL &&
        !strstr(r.body ? r.body : "", "\"code\":\"not_found\""))
        fail_msg("%s %s: 404 without not_found: %s", method, path, r.body);
    reply_free(&r);
    return status;
}

static int setup_admin_listener(void **state)
{
    (void)state;
    struct stack_options o = {.admin_listener = true};
    return stack_start("test_exposure", &o);
}

static void test_public_listener_serves_only_webhooks_and_health(void **state)
{
    (void)state;
    const char *pub = stack.base[0];
    assert_int_not_equal(stack.admin_port[0], 0);
    assert_int_equal(status_of(pub, "GET", "/livez", NULL), 200);
    assert_int_equal(status_of(pub, "GET", "/readyz", NULL), 200);
    send_group("g-1", "Board", false, 1); /* a signed webhook: 202 */
    /* everything else is as if it did not exist, even with the operator's token */
    static const struct {
        const char *method, *path, *body;
    } hidden[] = {
        {"GET", "/metrics", NULL},
        {"GET", "/ui/", NULL},
        {"GET", "/ui/app.js", NULL},
        {"GET", "/v1/status", NULL},
        {"GET", "/v1/dead-letters", NULL},
        {"GET", "/v1/associations/" ASSOC, NULL},
        {"PUT", "/v1/associations/" ASSOC, "{\"webhook_secret\":\"" SECRET "\"}"},
        {"DELETE", "/v1/associations/" ASSOC, NULL}, /* 404, not 405: no route is hinted at */
        {"GET", "/v1/associations/" ASSOC "/groups", NULL},
        {"POST", "/v1/associations/" ASSOC "/tokens", "{\"scope\":\"read\"}"},
        {"POST", "/v1/associations/" ASSOC "/groups/g-1/resync", NULL},
    };
    for (size_t i = 0; i < sizeof hidden / sizeof hidden[0]; i++) {
        long status = status_of(pub, hidden[i].method, hidden[i].path, hidden[i].body);
        if (status != 404)
            fail_msg("public %s %s answered %ld, want 404", hidden[i].method, hidden[i].path,
                     status);
    }
}

static void test_admin_listener_serves_the_admin_api_status_page_and_metrics(void **state)
{
    (void)state;
    const char *adm = stack.admin_base[0];
    assert_string_not_equal(adm, stack.base[0]);
    assert_int_equal(status_of(adm, "GET", "/metrics", NULL), 200);
    assert_int_equal(status_of(adm, "GET", "/ui/", NULL), 200);
    assert_int_equal(status_of(adm, "GET", "/v1/status", NULL), 200);
    assert_int_equal(status_of(adm, "GET", "/v1/associations/" ASSOC, NULL), 200);
    assert_int_equal(status_of(adm, "GET", "/v1/associations/" ASSOC "/groups/g-1", NULL), 200);
    assert_int_equal(status_of(adm, "GET", "/readyz", NULL), 200);
    /* the operator's token is still needed there */
    char url[256];
    snprintf(url, sizeof url, "%s/v1/status", adm);
    struct reply r = http("GET", url, NULL, NULL);
    assert_int_equal(r.status, 401);
    reply_free(&r);
}

/* Standard Webhooks secrets are 24-64 bytes once decoded; the 400 names the field. */
static void test_a_webhook_secret_must_be_24_to_64_bytes(void **state)
{
    (void)state;
    static const struct {
        const char *secret, *message;
    } bad[] = {
        {"whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRY=",
         "webhook_secret must decode to 24-64 bytes (Standard Webhooks); this one decodes "
         "to 23"},
        {"whsec_"
         "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+P0A=",
         "webhook_secret must decode to 24-64 bytes (Standard Webhooks); this one decodes "
         "to 65"},
        {"whsec_YQ==", "webhook_secret must decode to 24-64 bytes (Standard Webhooks); this one "
                       "decodes to 1"},
    };
    char body[256];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(body, sizeof body, "{\"webhook_secret\":\"%s\"}", bad[i].secret);
        struct reply r = api("PUT", "/v1/associations/" ASSOC, body);
        assert_int_equal(r.status, 400);
        assert_string_equal(jpath_str(r.json, "error.code"), "invalid_field");
        assert_string_equal(jpath_str(r.json, "error.message"), bad[i].message);
        reply_free(&r);
    }
    const char *good[] = {
        "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYX",
        "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+"
        "Pw=="};
    for (size_t i = 0; i < 2; i++) {
        snprintf(body, sizeof body, "{\"webhook_secret\":\"%s\"}", good[i]);
        struct reply r = api("PUT", "/v1/associations/other", body);
        assert_int_equal(r.status, 200);
        reply_free(&r);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_public_listener_serves_only_webhooks_and_health),
        cmocka_unit_test(test_admin_listener_serves_the_admin_api_status_page_and_metrics),
        cmocka_unit_test(test_a_webhook_secret_must_be_24_to_64_bytes),
    };
    return cmocka_run_group_tests(tests, setup_admin_listener, stack_stop);
}
