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

/* The exact spellings: docs/redis-layout.md and migrate.c depend on them. */
static void test_every_association_key_carries_the_association_as_hash_tag(void **state)
{
    (void)state;
    assert_string_equal(key_prefix("A-1").s, "ccsync:{A-1}:");
    assert_string_equal(key_association("A-1").s, "ccsync:{A-1}:association");
    assert_string_equal(key_groups("A-1").s, "ccsync:{A-1}:groups");
    assert_string_equal(key_group("A-1", "g.1:x").s, "ccsync:{A-1}:g:g.1:x");
    assert_string_equal(key_group_folding("A-1", "g1").s, "ccsync:{A-1}:g:g1:folding");
    assert_string_equal(key_group_members("A-1", "g1").s, "ccsync:{A-1}:gm:g1");
    assert_string_equal(key_applied("A-1", "g1").s, "ccsync:{A-1}:ap:g1");
    assert_string_equal(key_member("A-1", "m1").s, "ccsync:{A-1}:m:m1");
    assert_string_equal(key_member_groups("A-1", "m1").s, "ccsync:{A-1}:mg:m1");
    assert_string_equal(key_audit("A-1").s, "ccsync:{A-1}:audit");
    assert_string_equal(key_dedup("A-1", "msg_1:2").s, "ccsync:{A-1}:dedup:msg_1:2");
    assert_string_equal(key_lease("A-1", "g1").s, "ccsync:{A-1}:lease:g1");
    assert_string_equal(key_reconcile_lease("A-1").s, "ccsync:{A-1}:reconcile-lease");
    assert_string_equal(key_refresh_lock("A-1").s, "ccsync:{A-1}:refresh-lock");
    assert_string_equal(key_dirty("A-1").s, "ccsync:{A-1}:dirty");
    assert_string_equal(key_events("A-1").s, "ccsync:{A-1}:events");
}

static void test_global_keys_keep_their_names(void **state)
{
    (void)state;
    assert_string_equal(KEY_LEGACY_EVENTS, "ccsync:events");
    assert_string_equal(KEY_EVENTS_READY, "ccsync:events:ready");
    assert_string_equal(KEY_DEAD_LETTERS, "ccsync:events:dead");
    assert_string_equal(KEY_ASSOCIATIONS, "ccsync:associations");
    assert_string_equal(KEY_CREDENTIALS, "ccsync:credentials");
    assert_string_equal(KEY_RETRYING, "ccsync:retrying");
    assert_string_equal(KEY_RECONCILE, "ccsync:reconcile");
    assert_string_equal(KEY_DUE, "ccsync:due");
    assert_string_equal(KEY_LAYOUT_VERSION, "ccsync:layout");
    assert_string_equal(KEY_MIGRATE_LOCK, "ccsync:migrate-lock");
    assert_string_equal(key_budget("app-1", "bucket").s, "ccsync:cc:{app-1}:bucket");
    assert_string_equal(key_budget("", "bucket").s, "ccsync:cc:{default}:bucket");
    assert_string_equal(key_schedule_member("A-1", "g1").s, "A-1|g1");
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

static void test_a_group_lease_key_names_its_association_and_group(void **state)
{
    (void)state;
    char a[72], g[160];
    assert_int_equal(key_lease_parse(key_lease("acme", "g:1}x").s, a, sizeof a, g, sizeof g), 0);
    assert_string_equal(a, "acme");
    assert_string_equal(g, "g:1}x");
    /* not a group's lease: the reconcile lease, another key, a short buffer */
    assert_int_equal(key_lease_parse(key_reconcile_lease("acme").s, a, sizeof a, g, sizeof g), -1);
    assert_int_equal(key_lease_parse(key_group("acme", "g1").s, a, sizeof a, g, sizeof g), -1);
    assert_int_equal(key_lease_parse(key_lease("acme", "g1").s, a, 4, g, sizeof g), -1);
    assert_string_equal(key_instance("host:8080").s, "ccsync:instance:host:8080");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_group_keys_share_the_association_prefix),
        cmocka_unit_test(test_every_association_key_carries_the_association_as_hash_tag),
        cmocka_unit_test(test_global_keys_keep_their_names),
        cmocka_unit_test(test_a_key_too_long_is_marked_cut),
        cmocka_unit_test(test_the_longest_ids_fit),
        cmocka_unit_test(test_a_group_lease_key_names_its_association_and_group),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
