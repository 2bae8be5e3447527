/* test_access.c - association tokens over HTTP: created once and shown once,
 * listed without secrets, scoped (read, write), valid only on their own
 * association (404 elsewhere), refused for the operator's endpoints, and
 * revoked at once in every process. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "novi.h"
#include "stack.h"
#include "status.h"
#include "testsupport.h"

#define OTHER "other-assoc"

/* A request to ccsyncd number i with token (NULL: none). */
static struct reply as(int i, const char *token, const char *method, const char *path,
                       const char *body)
{
    char url[512], auth[300];
    snprintf(url, sizeof url, "%s%s", stack.base[i], path);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token ? token : "");
    const char *headers[] = {token ? auth : "X-None: 1", "Content-Type: application/json", NULL};
    return http(method, url, headers, body);
}

static long status_as(const char *token, const char *method, const char *path, const char *body)
{
    struct reply r = as(0, token, method, path, body);
    long status = r.status;
    reply_free(&r);
    return status;
}

/* A new token of scope for association; its secret form into out. */
static void new_token(const char *association, const char *scope, const char *name, char *out,
                      size_t size, char *id, size_t id_size)
{
    char path[128], body[128];
    snprintf(path, sizeof path, "/v1/associations/%s/tokens", association);
    snprintf(body, sizeof body, "{\"scope\":\"%s\",\"name\":\"%s\"}", scope, name);
    struct reply r = as(0, ADMIN_TOKEN, "POST", path, body);
    assert_int_equal(r.status, 201);
    assert_string_equal(jstr(r.json, "scope"), scope);
    assert_string_equal(jstr(r.json, "name"), name);
    assert_non_null(jstr(r.json, "created_at"));
    snprintf(out, size, "%s", jstr(r.json, "token"));
    snprintf(id, id_size, "%s", jstr(r.json, "token_id"));
    assert_int_equal(strncmp(out, "ccs_", 4), 0);
    assert_non_null(strstr(out, id));
    reply_free(&r);
}

static int setup(void **state)
{
    (void)state;
    struct stack_options o = {.n_ccsyncd = 2};
    if (stack_start("test-access", &o) != 0)
        return -1;
    struct reply r =
        as(0, ADMIN_TOKEN, "PUT", "/v1/associations/" OTHER, "{\"webhook_secret\":\"" SECRET "\"}");
    int rc = r.status == 201 || r.status == 200 ? 0 : -1;
    reply_free(&r);
    return rc;
}

static void test_a_read_token_reads_its_association_and_changes_nothing(void **state)
{
    (void)state;
    char token[128], id[32];
    new_token(ASSOC, "read", "wallboard", token, sizeof token, id, sizeof id);
    send_group("g1", "Board", false, 1);
    wait_folded(); /* g1 known: its member view is 200, not 404 */
    assert_int_equal(status_as(token, "GET", "/v1/associations/" ASSOC, NULL), 200);
    struct reply r = as(0, token, "GET", "/v1/associations/" ASSOC, NULL);
    assert_string_equal(jstr(r.json, "access"), "read");
    reply_free(&r);
    assert_int_equal(status_as(token, "GET", "/v1/associations/" ASSOC "/groups", NULL), 200);
    assert_int_equal(status_as(token, "GET", "/v1/associations/" ASSOC "/audit", NULL), 200);
    assert_int_equal(status_as(token, "GET", "/v1/associations/" ASSOC "/groups/g1/members", NULL),
                     200);
    /* every write route: 403 forbidden */
    const char *writes[][3] = {
        {"PUT", "/v1/associations/" ASSOC, "{\"webhook_secret\":\"" SECRET "\"}"},
        {"POST", "/v1/associations/" ASSOC "/groups/g1/resync", NULL},
        {"POST", "/v1/associations/" ASSOC "/tokens", "{\"scope\":\"write\"}"},
        {"GET", "/v1/associations/" ASSOC "/tokens", NULL},
        {"DELETE", "/v1/associations/" ASSOC "/tokens/abcdefghij012345", NULL},
    };
    for (size_t k = 0; k < sizeof writes / sizeof writes[0]; k++) {
        r = as(0, token, writes[k][0], writes[k][1], writes[k][2]);
        if (r.status != 403 || strcmp(jpath_str(r.json, "error.code"), "forbidden") != 0)
            fail_msg("%s %s with a read token: %ld %s", writes[k][0], writes[k][1], r.status,
                     r.body ? r.body : "");
        reply_free(&r);
    }
}

static void test_a_token_on_another_association_is_as_if_it_did_not_exist(void **state)
{
    (void)state;
    char token[128], id[32];
    new_token(ASSOC, "write", "novi", token, sizeof token, id, sizeof id);
    struct reply mine = as(0, token, "GET", "/v1/associations/" OTHER, NULL);
    struct reply none = as(0, token, "GET", "/v1/associations/no-such-assoc", NULL);
    assert_int_equal(mine.status, 404);
    assert_int_equal(none.status, 404);
    assert_string_equal(jpath_str(mine.json, "error.code"), "unknown_association");
    assert_string_equal(jpath_str(none.json, "error.code"), "unknown_association");
    reply_free(&mine);
    reply_free(&none);
    assert_int_equal(
        status_as(token, "POST", "/v1/associations/" OTHER "/tokens", "{\"scope\":\"read\"}"), 404);
}

static void test_operator_endpoints_refuse_association_tokens(void **state)
{
    (void)state;
    char token[128], id[32];
    new_token(ASSOC, "write", "novi", token, sizeof token, id, sizeof id);
    assert_int_equal(status_as(token, "GET", "/v1/status", NULL), 401);
    assert_int_equal(status_as(token, "GET", "/v1/dead-letters", NULL), 401);
    assert_int_equal(status_as(NULL, "GET", "/v1/associations/" ASSOC, NULL), 401);
    assert_int_equal(status_as("not-a-token", "GET", "/v1/associations/" ASSOC, NULL), 401);
}

static void test_a_write_token_manages_tokens_and_revocation_is_at_once_everywhere(void **state)
{
    (void)state;
    char writer[128], writer_id[32], reader[128], reader_id[32];
    new_token(ASSOC, "write", "novi admin", writer, sizeof writer, writer_id, sizeof writer_id);
    /* the writer makes a read token and lists both: no secret in the list */
    struct reply r = as(0, writer, "POST", "/v1/associations/" ASSOC "/tokens",
                        "{\"scope\":\"read\",\"name\":\"board screen\"}");
    assert_int_equal(r.status, 201);
    snprintf(reader, sizeof reader, "%s", jstr(r.json, "token"));
    snprintf(reader_id, sizeof reader_id, "%s", jstr(r.json, "token_id"));
    reply_free(&r);
    assert_int_equal(status_as(reader, "GET", "/v1/associations/" ASSOC "/groups", NULL), 200);
    r = as(0, writer, "GET", "/v1/associations/" ASSOC "/tokens", NULL);
    assert_int_equal(r.status, 200);
    assert_null(strstr(r.body, reader + 5 + 16)); /* the secret part */
    assert_null(strstr(r.body, writer + 5 + 16));
    assert_non_null(strstr(r.body, reader_id));
    assert_non_null(strstr(r.body, "\"board screen\""));
    assert_non_null(strstr(r.body, "\"last_used_at\""));
    reply_free(&r);

    /* revoked through process 0: refused by process 1 at once */
    struct reply on1 = as(1, reader, "GET", "/v1/associations/" ASSOC, NULL);
    assert_int_equal(on1.status, 200);
    reply_free(&on1);
    char path[128];
    snprintf(path, sizeof path, "/v1/associations/" ASSOC "/tokens/%s", reader_id);
    assert_int_equal(status_as(writer, "DELETE", path, NULL), 204);
    on1 = as(1, reader, "GET", "/v1/associations/" ASSOC, NULL);
    assert_int_equal(on1.status, 404);
    reply_free(&on1);
    assert_int_equal(status_as(writer, "DELETE", path, NULL), 404);
    /* a bad body names the problem */
    r = as(0, writer, "POST", "/v1/associations/" ASSOC "/tokens", "{\"scope\":\"admin\"}");
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(jpath_str(r.json, "error.message"), "scope"));
    reply_free(&r);
    /* the writer may resync and PUT */
    assert_int_equal(
        status_as(writer, "PUT", "/v1/associations/" ASSOC, "{\"webhook_secret\":\"" SECRET "\"}"),
        200);
}

/* A polling dashboard's conditional GET: 304 and no body while nothing changed. */
static void test_an_unchanged_answer_is_304_to_a_conditional_get(void **state)
{
    (void)state;
    send_group("g1", "Board", false, 1);
    char tag[64] = "", again[64], url[256], inm[128];
    snprintf(url, sizeof url, "%s/v1/associations/" ASSOC "/groups", stack.base[0]);
    const char *headers[] = {"Authorization: Bearer " ADMIN_TOKEN, inm, NULL};
    /* while the event is being folded the answer may still change under us: each
     * 200 brings the tag of the answer of the moment, until one holds */
    struct reply r;
    for (long deadline = ts_now_ms() + WAIT_MS;; ts_sleep_ms(50)) {
        snprintf(inm, sizeof inm, "If-None-Match: %s", tag[0] ? tag : "\"none\"");
        r = http("GET", url, headers, NULL);
        if (r.status == 304)
            break;
        assert_int_equal(r.status, 200);
        assert_int_equal(ts_header_value(r.headers, "ETag", tag, sizeof tag), 0);
        reply_free(&r);
        if (ts_now_ms() > deadline)
            fail_msg("the groups' answer never held still");
    }
    assert_true(r.body == NULL || r.body[0] == '\0');
    reply_free(&r);
    /* the group changes: a new answer, a new tag */
    send_group("g1", "Board of Directors", false, 2);
    for (long deadline = ts_now_ms() + WAIT_MS;; ts_sleep_ms(50)) {
        r = http("GET", url, headers, NULL);
        if (r.status == 200)
            break;
        assert_int_equal(r.status, 304);
        reply_free(&r);
        if (ts_now_ms() > deadline)
            fail_msg("the renamed group never changed the answer");
    }
    assert_non_null(strstr(r.body, "Board of Directors"));
    assert_int_equal(ts_header_value(r.headers, "ETag", again, sizeof again), 0);
    assert_string_not_equal(tag, again);
    reply_free(&r);
}

/* The status page: served by ccsyncd itself, with a policy that allows nothing
 * inline and nothing from elsewhere. */
static void test_the_status_page_is_self_contained(void **state)
{
    (void)state;
    char csp[512], type[128];
    struct reply r = as(0, NULL, "GET", "/ui/", NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(ts_header_value(r.headers, "Content-Type", type, sizeof type), 0);
    assert_string_equal(type, "text/html; charset=utf-8");
    assert_int_equal(ts_header_value(r.headers, "Content-Security-Policy", csp, sizeof csp), 0);
    assert_non_null(strstr(csp, "default-src 'none'"));
    assert_non_null(strstr(csp, "script-src 'self'"));
    assert_null(strstr(csp, "unsafe-inline"));
    /* the whole policy arrives (a cut one drops the last directives and warns) */
    assert_string_equal(csp, "default-src 'none'; script-src 'self'; style-src 'self'; "
                             "connect-src 'self'; img-src 'self'; base-uri 'none'; "
                             "form-action 'self'; frame-ancestors 'none'");
    assert_non_null(strstr(r.body, "<script src=\"app.js\" defer></script>"));
    assert_null(strstr(r.body, "<script>")); /* no inline script */
    assert_null(strstr(r.body, "style="));   /* no inline style */
    assert_null(strstr(r.body, "http://"));
    assert_null(strstr(r.body, "https://"));
    reply_free(&r);
    const char *files[][2] = {{"/ui/app.js", "text/javascript; charset=utf-8"},
                              {"/ui/app.css", "text/css; charset=utf-8"}};
    for (size_t k = 0; k < 2; k++) {
        r = as(0, NULL, "GET", files[k][0], NULL);
        assert_int_equal(r.status, 200);
        assert_int_equal(ts_header_value(r.headers, "Content-Type", type, sizeof type), 0);
        assert_string_equal(type, files[k][1]);
        assert_true(strlen(r.body) > 1000);
        reply_free(&r);
    }
    r = as(0, NULL, "GET", "/ui", NULL);
    assert_int_equal(r.status, 308);
    assert_int_equal(ts_header_value(r.headers, "Location", type, sizeof type), 0);
    assert_string_equal(type, "/ui/");
    reply_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_a_read_token_reads_its_association_and_changes_nothing,
                                        setup, stack_stop),
        cmocka_unit_test_setup_teardown(
            test_a_token_on_another_association_is_as_if_it_did_not_exist, setup, stack_stop),
        cmocka_unit_test_setup_teardown(test_operator_endpoints_refuse_association_tokens, setup,
                                        stack_stop),
        cmocka_unit_test_setup_teardown(
            test_a_write_token_manages_tokens_and_revocation_is_at_once_everywhere, setup,
            stack_stop),
        cmocka_unit_test_setup_teardown(test_the_status_page_is_self_contained, setup, stack_stop),
        cmocka_unit_test_setup_teardown(test_an_unchanged_answer_is_304_to_a_conditional_get, setup,
                                        stack_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
