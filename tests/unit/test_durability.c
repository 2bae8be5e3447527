/* test_durability.c - what ccsyncd says (or refuses) about Redis's persistence,
 * and how a Sentinel list is read. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ccsync/durability.h"
#include "ccsync/sentinel.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static void test_mode_names(void **state)
{
    (void)state;
    assert_int_equal(durability_mode_parse("everysec"), DURABILITY_EVERYSEC);
    assert_int_equal(durability_mode_parse("always"), DURABILITY_ALWAYS);
    assert_int_equal(durability_mode_parse("replica"), DURABILITY_REPLICA);
    assert_int_equal(durability_mode_parse("sometimes"), -1);
    assert_int_equal(durability_mode_parse(NULL), -1);
    assert_string_equal(durability_mode_name(DURABILITY_REPLICA), "replica");
}

static void test_judge(void **state)
{
    (void)state;
    struct {
        const char *name;
        enum durability_mode mode;
        struct redis_persistence p;
        bool fatal;
        size_t warnings;
        const char *first; /* a part of the first warning */
    } cases[] = {
        {"everysec as it should be",
         DURABILITY_EVERYSEC,
         {true, true, "everysec", "noeviction", 0},
         false,
         0,
         NULL},
        {"AOF off: warned, starts",
         DURABILITY_EVERYSEC,
         {true, false, "everysec", "noeviction", 0},
         false,
         1,
         "appendonly no"},
        {"fsync no: warned",
         DURABILITY_EVERYSEC,
         {true, true, "no", "noeviction", 0},
         false,
         1,
         "appendfsync no"},
        {"eviction: warned",
         DURABILITY_EVERYSEC,
         {true, true, "everysec", "allkeys-lru", 0},
         false,
         1,
         "maxmemory-policy allkeys-lru"},
        {"both wrong: two warnings",
         DURABILITY_EVERYSEC,
         {true, false, "everysec", "volatile-lru", 0},
         false,
         2,
         "appendonly no"},
        {"always as it should be",
         DURABILITY_ALWAYS,
         {true, true, "always", "noeviction", 0},
         false,
         0,
         NULL},
        {"always against everysec: refuses",
         DURABILITY_ALWAYS,
         {true, true, "everysec", "noeviction", 0},
         true,
         1,
         "appendfsync everysec"},
        {"always against AOF off: refuses",
         DURABILITY_ALWAYS,
         {true, false, "always", "noeviction", 0},
         true,
         1,
         "appendonly no"},
        {"always, settings unreadable: refuses", DURABILITY_ALWAYS, {false}, true, 1, "could not"},
        {"everysec, settings unreadable: warned",
         DURABILITY_EVERYSEC,
         {false},
         false,
         1,
         "could not"},
        {"replica with a replica",
         DURABILITY_REPLICA,
         {true, true, "everysec", "noeviction", 1},
         false,
         0,
         NULL},
        {"replica without one: warned",
         DURABILITY_REPLICA,
         {true, true, "everysec", "noeviction", 0},
         false,
         1,
         "no connected replica"},
    };
    for (size_t k = 0; k < N_OF(cases); k++) {
        struct durability_report r;
        durability_judge(cases[k].mode, &cases[k].p, &r);
        if (r.fatal != cases[k].fatal || r.n_warnings != cases[k].warnings)
            fail_msg("%s: fatal %d, %zu warnings", cases[k].name, r.fatal, r.n_warnings);
        if (cases[k].first && !strstr(r.warnings[0], cases[k].first))
            fail_msg("%s: \"%s\" does not say \"%s\"", cases[k].name, r.warnings[0],
                     cases[k].first);
    }
}

static void test_sentinel_list(void **state)
{
    (void)state;
    struct sentinel_set s;
    char err[200];
    assert_int_equal(
        sentinel_parse_list("10.0.0.1:26379, sentinel-2:5000,[::1]:26380,s4", &s, err, sizeof err),
        0);
    assert_int_equal(s.n, 4);
    assert_string_equal(s.addr[0].host, "10.0.0.1");
    assert_int_equal(s.addr[0].port, 26379);
    assert_string_equal(s.addr[1].host, "sentinel-2");
    assert_int_equal(s.addr[1].port, 5000);
    assert_string_equal(s.addr[2].host, "::1");
    assert_int_equal(s.addr[2].port, 26380);
    assert_string_equal(s.addr[3].host, "s4");
    assert_int_equal(s.addr[3].port, 26379);

    struct {
        const char *list, *says;
    } bad[] = {
        {"", "names no Sentinel"}, {"a:1,,b:2", "empty entry"},
        {"a:0", "bad port"},       {"a:65536", "bad port"},
        {"a:x1", "bad port"},      {"[::1:26379", "without closing"},
        {":26379", "no host"},     {"a,b,c,d,e,f,g,h,i", "more than 8"},
    };
    for (size_t k = 0; k < N_OF(bad); k++) {
        err[0] = '\0';
        if (sentinel_parse_list(bad[k].list, &s, err, sizeof err) != -1 ||
            !strstr(err, bad[k].says))
            fail_msg("\"%s\": \"%s\", want \"%s\"", bad[k].list, err, bad[k].says);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mode_names),
        cmocka_unit_test(test_judge),
        cmocka_unit_test(test_sentinel_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
