/* test_keys.c - the key builders spell the layout the code and docs promise. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ccsync/keys.h"

static void test_group_keys_share_the_association_prefix(void **state)
{
    (void)state;
    struct key p = key_prefix("assoc-1");
    assert_string_equal(key_group("assoc-1", "g-1").s, strcat(p.s, KEY_GROUP "g-1"));
    p = key_prefix("assoc-1");
    assert_string_equal(key_applied("assoc-1", "g-1").s, strcat(p.s, KEY_APPLIED "g-1"));
    p = key_prefix("assoc-1");
    assert_string_equal(key_member_groups("assoc-1", "m-1").s,
                        strcat(p.s, KEY_MEMBER_GROUPS "m-1"));
    assert_false(key_group("assoc-1", "g-1").cut);
}

static void test_a_key_too_long_is_marked_cut(void **state)
{
    (void)state;
    char id[KEY_MAX + 10];
    memset(id, 'x', sizeof id - 1);
    id[sizeof id - 1] = '\0';
    struct key k = key_group("assoc-1", id);
    assert_true(k.cut);
    assert_int_equal(strlen(k.s), KEY_MAX - 1);
}

static void test_the_longest_ids_fit(void **state)
{
    (void)state;
    char assoc[65], id[129];
    memset(assoc, 'a', 64);
    assoc[64] = '\0';
    memset(id, 'i', 128);
    id[128] = '\0';
    assert_false(key_group_folding(assoc, id).cut);
    assert_false(key_group_members(assoc, id).cut);
    assert_false(key_lease(assoc, id).cut);
    assert_false(key_reconcile_lease(assoc).cut);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_group_keys_share_the_association_prefix),
        cmocka_unit_test(test_a_key_too_long_is_marked_cut),
        cmocka_unit_test(test_the_longest_ids_fit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
