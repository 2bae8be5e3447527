/* test_tokens.c - association tokens against a real Redis: created once and
 * shown once, hashed at rest, valid only on their own association, revoked at
 * once, last use recorded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "ccsync/keys.h"
#include "ccsync/store.h"
#include "ccsync/tokens.h"
#include "peek.h"
#include "testsupport.h"

#define MINUTE_NS (60LL * 1000000000LL)

static pid_t redis_pid;
static redisContext *redis;

static int setup(void **state)
{
    (void)state;
    redis = peek_redis_open(&redis_pid, NULL);
    return redis ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    peek_redis_close(redis, redis_pid);
    return 0;
}

static void test_token_format(void **state)
{
    (void)state;
    char id[TOKEN_ID_LEN + 1];
    const char *good = "ccs_abcdefghij012345_"
                       "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    assert_true(tokens_parse(good, id));
    assert_string_equal(id, "abcdefghij012345");
    const char *bad[] = {
        "",
        "ccs_",
        "operator-token-0123456789",
        "ccs_abcdefghij012345-00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        "ccs_ABCDEFGHIJ012345_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        "ccs_abcdefghij012345_00112233445566778899aabbccddeeff00112233445566778899aabbccddeefg",
        "ccs_abcdefghij012345_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff0",
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++)
        if (tokens_parse(bad[k], id))
            fail_msg("\"%s\" taken for a token", bad[k]);
    assert_int_equal(tokens_scope_parse("read"), TOKEN_READ);
    assert_int_equal(tokens_scope_parse("write"), TOKEN_WRITE);
    assert_int_equal(tokens_scope_parse("admin"), TOKEN_NONE);
}

static void test_a_token_works_on_its_own_association_only(void **state)
{
    (void)state;
    struct token_record rec;
    char token[TOKEN_SIZE], id[TOKEN_ID_LEN + 1];
    assert_int_equal(tokens_create(redis, "assoc-1", TOKEN_READ, "dashboard", 1000, &rec, token),
                     STORE_OK);
    assert_true(tokens_parse(token, id));
    assert_string_equal(id, rec.id);
    enum token_scope scope;
    assert_int_equal(tokens_check(redis, "assoc-1", token, 2000, &scope), 1);
    assert_int_equal(scope, TOKEN_READ);
    assert_int_equal(tokens_check(redis, "assoc-2", token, 2000, &scope), 0);
    assert_int_equal(scope, TOKEN_NONE);
    /* the same id with another secret is not the token */
    char forged[TOKEN_SIZE];
    strcpy(forged, token);
    forged[TOKEN_SIZE - 2] = forged[TOKEN_SIZE - 2] == '0' ? '1' : '0';
    assert_int_equal(tokens_check(redis, "assoc-1", forged, 2000, &scope), 0);

    /* at rest: the hash, never the token or its secret */
    redisReply *r = redisCommand(redis, "HGET %s %s", key_tokens("assoc-1").s, rec.id);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_null(strstr(r->str, token + 5 + TOKEN_ID_LEN));
    char hash[65];
    tokens_hash(token, hash);
    assert_non_null(strstr(r->str, hash));
    freeReplyObject(r);
}

static void test_tokens_are_listed_without_secrets_and_revoked_at_once(void **state)
{
    (void)state;
    struct token_record a, b;
    char ta[TOKEN_SIZE], tb[TOKEN_SIZE];
    assert_int_equal(tokens_create(redis, "assoc-3", TOKEN_WRITE, "novi admin", 100, &a, ta),
                     STORE_OK);
    assert_int_equal(tokens_create(redis, "assoc-3", TOKEN_READ, "wallboard", 200, &b, tb),
                     STORE_OK);
    enum token_scope scope;
    assert_int_equal(tokens_check(redis, "assoc-3", tb, 5 * MINUTE_NS, &scope), 1);

    struct token_record *list;
    size_t n;
    assert_int_equal(tokens_list(redis, "assoc-3", &list, &n), STORE_OK);
    assert_int_equal(n, 2);
    assert_string_equal(list[0].name, "novi admin");
    assert_int_equal(list[0].scope, TOKEN_WRITE);
    assert_int_equal(list[0].created_at_ns, 100);
    assert_int_equal(list[0].last_used_at_ns, 0);
    assert_string_equal(list[1].name, "wallboard");
    assert_int_equal(list[1].last_used_at_ns, 5 * MINUTE_NS);
    free(list);

    /* a use within the minute is not written again */
    assert_int_equal(tokens_check(redis, "assoc-3", tb, 5 * MINUTE_NS + 30000000000LL, &scope), 1);
    assert_int_equal(tokens_list(redis, "assoc-3", &list, &n), STORE_OK);
    assert_int_equal(list[1].last_used_at_ns, 5 * MINUTE_NS);
    free(list);

    assert_int_equal(tokens_revoke(redis, "assoc-3", a.id), 1);
    assert_int_equal(tokens_check(redis, "assoc-3", ta, 6 * MINUTE_NS, &scope), 0);
    assert_int_equal(tokens_revoke(redis, "assoc-3", a.id), 0);
    assert_int_equal(tokens_revoke(redis, "assoc-4", b.id), 0); /* not across associations */
    assert_int_equal(tokens_check(redis, "assoc-3", tb, 6 * MINUTE_NS, &scope), 1);
    assert_int_equal(tokens_list(redis, "assoc-3", &list, &n), STORE_OK);
    assert_int_equal(n, 1);
    free(list);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_format),
        cmocka_unit_test(test_a_token_works_on_its_own_association_only),
        cmocka_unit_test(test_tokens_are_listed_without_secrets_and_revoked_at_once),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
