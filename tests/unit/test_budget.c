/* test_budget.c - the budget planner's rules, one table per decision. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <limits.h>

#include <cmocka.h>

#include "ccsync/budget.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))
#define HOUR 3600

static struct budget_day day(long limit, long used, int64_t now_s, double rate)
{
    struct budget_day d = {
        .limit = limit, .used = used, .now_s = now_s, .recent_rate = rate, .reconcile_share = 0.2};
    return d;
}

/* ---- who spends the next request ---- */

struct pick_case {
    const char *name;
    struct budget_day day;
    struct budget_assoc assoc[3];
    size_t n;
    int want;                   /* index, or -1 */
    enum budget_class want_cls; /* when want >= 0 */
};

static void test_pick_follows_classes_then_least_used(void **state)
{
    (void)state;
    const struct pick_case cases[] = {
        {"class 1 goes before class 2, whoever used less",
         day(10000, 100, 9 * HOUR, 0.01),
         {{.pending = {0, 40}, .used_today = 0}, {.pending = {3}, .used_today = 90}},
         2,
         1,
         BUDGET_CHANGES},
        {"within a class the association that used least goes first",
         day(10000, 60, 9 * HOUR, 0.01),
         {{.pending = {5}, .used_today = 50}, {.pending = {5}, .used_today = 10}},
         2,
         1,
         BUDGET_CHANGES},
        {"a tie goes to the one served longest ago",
         day(10000, 20, 9 * HOUR, 0.01),
         {{.pending = {5}, .used_today = 10, .last_served_ms = 900},
          {.pending = {5}, .used_today = 10, .last_served_ms = 100}},
         2,
         1,
         BUDGET_CHANGES},
        {"a weight of 2 is entitled to twice the use",
         day(10000, 150, 9 * HOUR, 0.01),
         {{.pending = {5}, .used_today = 90, .weight = 2}, {.pending = {5}, .used_today = 60}},
         2,
         0,
         BUDGET_CHANGES},
        {"nobody has work", day(10000, 0, 9 * HOUR, 0), {{.used_today = 0}}, 1, -1, 0},
        {"the day is used up: not even class 1",
         day(1000, 1000, 20 * HOUR, 0),
         {{.pending = {1}}},
         1,
         -1,
         0},
        {"past the ceiling only class 1 may spend the reserve",
         day(1000, 960, 20 * HOUR, 0),
         {{.pending = {0, 50, 3, 2}}, {.pending = {2}, .used_today = 500}},
         2,
         1,
         BUDGET_CHANGES},
        {"past the ceiling a first sync waits",
         day(1000, 960, 20 * HOUR, 0),
         {{.pending = {0, 50, 3, 2}}},
         1,
         -1,
         0},
        {"refreshing counts waits while the day is not calm",
         day(1000, 500, 12 * HOUR, 0.02),
         {{.pending = {0, 0, 0, 4}}},
         1,
         -1,
         0},
        {"refreshing counts runs on a calm day",
         day(1000, 100, 12 * HOUR, 0.001),
         {{.pending = {0, 0, 0, 4}}},
         1,
         0,
         BUDGET_REFRESH},
        {"an association past its share waits while another has class-1 work",
         day(1000, 900, 12 * HOUR, 0.01),
         {{.pending = {200}, .used_today = 850}, {.pending = {100}, .used_today = 50}},
         2,
         1,
         BUDGET_CHANGES},
        {"reconcile goes to the least recently reconciled, not the least used",
         day(10000, 300, 12 * HOUR, 0.001),
         {{.pending = {0, 0, 1}, .used_today = 10, .last_reconcile_ms = 5000},
          {.pending = {0, 0, 1}, .used_today = 250, .last_reconcile_ms = 1000}},
         2,
         1,
         BUDGET_RECONCILE},
        {"an association never reconciled goes first",
         day(10000, 300, 12 * HOUR, 0.001),
         {{.pending = {0, 0, 1}, .used_today = 0, .last_reconcile_ms = 1000},
          {.pending = {0, 0, 1}, .used_today = 90},
          {.pending = {0, 0, 1}, .used_today = 5, .last_reconcile_ms = 2000}},
         3,
         1,
         BUDGET_RECONCILE},
        {"what the others leave may be used: alone, past its share, it goes on",
         day(1000, 900, 12 * HOUR, 0.001),
         {{.pending = {20}, .used_today = 850}, {.pending = {0}, .used_today = 50}},
         2,
         0,
         BUDGET_CHANGES},
    };
    for (size_t k = 0; k < N_OF(cases); k++) {
        const struct pick_case *c = &cases[k];
        enum budget_class cls = BUDGET_CLASSES;
        int got = budget_pick(&c->day, c->assoc, c->n, &cls);
        if (got != c->want || (got >= 0 && cls != c->want_cls))
            fail_msg("%s: picked %d class %d, want %d class %d", c->name, got, cls, c->want,
                     c->want_cls);
    }
}

static void test_reconcile_is_spread_over_the_day(void **state)
{
    (void)state;
    struct {
        const char *name;
        int64_t now_s;
        long reconcile_used;
        bool want;
    } cases[] = {
        /* 0.2 x 10,000 = 2,000 a day: by 00:00 an hour's worth, 83.3 */
        {"midnight: an hour's share", 0, 83, true},
        {"midnight: past an hour's share", 0, 84, false},
        {"noon: half a day and an hour", 12 * HOUR, 1083, true},
        {"noon: past it", 12 * HOUR, 1084, false},
        {"late evening: the whole share", 23 * HOUR + 1800, 1999, true},
        {"late evening: share spent", 23 * HOUR + 1800, 2000, false},
    };
    for (size_t k = 0; k < N_OF(cases); k++) {
        struct budget_day d = day(10000, cases[k].reconcile_used, cases[k].now_s, 0);
        d.used_by_class[BUDGET_RECONCILE] = cases[k].reconcile_used;
        if (budget_reconcile_allowed(&d) != cases[k].want)
            fail_msg("%s: allowed %d", cases[k].name, !cases[k].want);
        struct budget_assoc a = {.pending = {0, 0, 1}};
        enum budget_class cls;
        int got = budget_pick(&d, &a, 1, &cls);
        if (got != (cases[k].want ? 0 : -1))
            fail_msg("%s: pick %d", cases[k].name, got);
    }
}

/* ---- fair shares ---- */

static void test_fair_share_gives_unused_share_to_others(void **state)
{
    (void)state;
    struct {
        const char *name;
        long limit;
        struct budget_assoc assoc[3];
        size_t n;
        long want[3];
    } cases[] = {
        {"everyone's need fits: no cap",
         1000,
         {{.used_today = 100, .pending = {100}}, {.used_today = 100}},
         2,
         {LONG_MAX, LONG_MAX}},
        /* ceiling 950; B and C need 100 each, so A may have the other 750 */
        {"small needs are met and the rest goes to the big one",
         1000,
         {{.used_today = 500, .pending = {0, 2000}}, {.pending = {100}}, {.used_today = 100}},
         3,
         {750, 750, 750}},
        /* nobody fits: equal shares of 950 */
        {"two big needs split the day",
         1000,
         {{.pending = {0, 5000}}, {.pending = {0, 5000}}},
         2,
         {475, 475}},
        {"weights split it 2:1",
         900,
         {{.pending = {0, 5000}, .weight = 2}, {.pending = {0, 5000}, .weight = 1}},
         2,
         {570, 285}},
    };
    for (size_t k = 0; k < N_OF(cases); k++) {
        struct budget_day d = day(cases[k].limit, 0, 9 * HOUR, 0);
        for (size_t i = 0; i < cases[k].n; i++) {
            long got = budget_fair_share(&d, cases[k].assoc, cases[k].n, i);
            if (got != cases[k].want[i])
                fail_msg("%s: association %zu share %ld, want %ld", cases[k].name, i, got,
                         cases[k].want[i]);
        }
    }
}

static void test_short_day(void **state)
{
    (void)state;
    struct budget_assoc busy = {.pending = {0, 400}};
    struct budget_day calm = day(1000, 100, 12 * HOUR, 0.001);
    assert_false(budget_is_short(&calm, &busy, 1));
    struct budget_day waiting = day(1000, 600, 12 * HOUR, 0.001); /* 600 + 400 > 950 */
    assert_true(budget_is_short(&waiting, &busy, 1));
    struct budget_day fast = day(1000, 100, 12 * HOUR, 0.02); /* 100 + 864 > 950 */
    assert_true(budget_is_short(&fast, NULL, 0));
}

/* ---- coalescing ---- */

static void test_coalescing_widens_with_demand(void **state)
{
    (void)state;
    struct {
        const char *name;
        long used;
        int64_t now_s;
        double rate;
        int64_t current_ms;
        double elapsed_s;
        int64_t want_ms;
    } cases[] = {
        /* limit 10,000: calm is 8,000 */
        {"a calm day waits the base delay", 1000, 12 * HOUR, 0.05, 1000, 1, 1000}, /* 3,160 */
        {"a calm day brings a long wait back to base", 3680, 12 * HOUR, 0.1, 50000, 1, 1000},
        /* 4,320 left to 80%, 0.2/s x 43,200 s = 8,640 wanted: pressure 2 */
        {"pressure 2 doubles the wait over a window", 3680, 12 * HOUR, 0.2, 1000, 600, 2000},
        {"half a window: the square root of 2", 3680, 12 * HOUR, 0.2, 1000, 300, 1415},
        {"the wait keeps growing while the pressure lasts", 3680, 12 * HOUR, 0.2, 60000, 600,
         120000},
        {"more than a window still moves one step", 3680, 12 * HOUR, 0.2, 60000, 6000, 120000},
        /* past 80% the aim is 95%: 500 room, 0.1 x 3,600 = 360 wanted: 0.72 */
        {"past calm, under the ceiling's rate: the wait shrinks", 9000, 23 * HOUR, 0.1, 10000, 600,
         7200},
        {"it never shrinks below base", 9000, 23 * HOUR, 0.1, 1000, 600, 1000},
        /* 450 room, 0.5 x 3,600 = 1,800 wanted: pressure 4 */
        {"past calm, over the ceiling's rate", 9050, 23 * HOUR, 0.5, 1000, 600, 4000},
        {"at the ceiling every change waits the longest", 9500, 23 * HOUR, 0.1, 1000, 1, 3600000},
        {"never past the maximum", 9050, 23 * HOUR, 0.5, 3000000, 600, 3600000},
    };
    for (size_t k = 0; k < N_OF(cases); k++) {
        struct budget_day d = day(10000, cases[k].used, cases[k].now_s, cases[k].rate);
        int64_t got =
            budget_sync_delay_ms(&d, cases[k].current_ms, cases[k].elapsed_s, 1000, 3600000);
        if (got != cases[k].want_ms)
            fail_msg("%s: %lld ms, want %lld", cases[k].name, (long long)got,
                     (long long)cases[k].want_ms);
    }
}

/* ---- one-off work and pacing ---- */

static void test_one_off_work_is_projected_over_one_window(void **state)
{
    (void)state;
    struct {
        const char *name;
        long used;
        int64_t now_s;
        double rate, one_off;
        double want;
    } cases[] = {
        /* 0.1/s x 43,200 s left */
        {"steady work runs to midnight", 1000, 12 * HOUR, 0.1, 0, 1000 + 4320},
        /* a first sync's read-back: 0.1/s over one 600 s window only */
        {"a one-off job counts over one window", 1000, 12 * HOUR, 0.1, 0.1, 1000 + 60},
        {"mixed", 1000, 12 * HOUR, 0.3, 0.1, 1000 + 0.2 * 43200 + 60},
        {"near midnight the window is what is left", 1000, 86400 - 100, 0.1, 0.1, 1000 + 10},
        {"a one-off part above the whole is the whole", 1000, 12 * HOUR, 0.1, 0.5, 1000 + 60},
    };
    for (size_t k = 0; k < N_OF(cases); k++) {
        struct budget_day d = day(10000, cases[k].used, cases[k].now_s, cases[k].rate);
        d.one_off_rate = cases[k].one_off;
        double got = budget_projected(&d);
        if (got < cases[k].want - 1e-6 || got > cases[k].want + 1e-6)
            fail_msg("%s: projected %.3f, want %.3f", cases[k].name, got, cases[k].want);
    }
}

static void test_rounds_are_paced_at_the_widest_wait_or_past_calm(void **state)
{
    (void)state;
    struct {
        const char *name;
        long used;
        double rate, one_off;
        int64_t delay_ms;
        long pending, cost;
        bool want;
    } cases[] = {
        /* limit 10,000 at noon (43,200 s left): calm 8,000, ceiling 9,500 */
        {"a wait still widening on a day under calm is not held", 1000, 0.5, 0, 60000, 0, 3, true},
        {"at the widest wait the projection past the ceiling holds it", 1000, 0.5, 0, 3600000, 0, 3,
         false},
        {"at the widest wait within the ceiling it goes", 1000, 0.1, 0, 3600000, 0, 3, true},
        {"a first sync's burst does not hold rounds", 1000, 0.5, 0.45, 3600000, 0, 3, true},
        {"past calm a widening wait no longer lets rounds run into the reserve", 8100, 0.05, 0,
         60000, 0, 3, false},
        {"past calm, within the ceiling, it goes", 8100, 0.02, 0, 60000, 0, 3, true},
        {"never past the ceiling, even with nothing running", 9499, 0, 0, 3600000, 0, 3, false},
        {"rounds already queued count as committed", 9000, 0, 0, 3600000, 600, 3, false},
    };
    for (size_t k = 0; k < N_OF(cases); k++) {
        struct budget_day d = day(10000, cases[k].used, 12 * HOUR, cases[k].rate);
        d.one_off_rate = cases[k].one_off;
        bool got =
            budget_round_allowed(&d, cases[k].delay_ms, 3600000, cases[k].pending, cases[k].cost);
        if (got != cases[k].want)
            fail_msg("%s: %s, want %s", cases[k].name, got ? "starts" : "waits",
                     cases[k].want ? "starts" : "waits");
    }
}

/* ---- reconcile intervals ---- */

static void test_reconcile_interval_stretches_with_associations(void **state)
{
    (void)state;
    struct {
        const char *name;
        long limit;
        long idle, busy;
        int64_t floor_s;
        int64_t want_idle, want_busy;
    } cases[] = {
        /* 10 idle, 8,640 a day, 20%: 1,728 a day -> every 500 s: 1.2 a minute in all */
        {"ten idle associations", 8640, 10, 0, 3, 500, 250},
        {"few associations: the floor", 10000, 2, 0, 300, 300, 300},
        {"100 idle", 10000, 100, 0, 300, 4320, 2160},
        /* 90 idle + 10 busy: equal turns of 4,320 s take the share; a busy one may
         * have an extra turn 2,160 s after its last, out of what they leave */
        {"busy ones may be checked twice as often", 10000, 90, 10, 300, 4320, 2160},
        {"busy ones do not stretch the idle ones' turns", 10000, 0, 500, 300, 21600, 10800},
        {"2,000 associations", 10000, 2000, 0, 300, 86400, 43200},
    };
    for (size_t k = 0; k < N_OF(cases); k++) {
        struct budget_day d = day(cases[k].limit, 0, 0, 0);
        int64_t busy = -1;
        int64_t idle =
            budget_reconcile_interval_s(&d, cases[k].idle, cases[k].busy, cases[k].floor_s, &busy);
        if (idle != cases[k].want_idle || busy != cases[k].want_busy)
            fail_msg("%s: %lld/%lld s, want %lld/%lld", cases[k].name, (long long)idle,
                     (long long)busy, (long long)cases[k].want_idle, (long long)cases[k].want_busy);
    }
}

static void test_reconcile_share_holds_for_the_day(void **state)
{
    (void)state;
    /* Whatever the mix, a day of equal turns spends at most the share (a busy
     * association's extra turns only take what budget_reconcile_allowed leaves). */
    for (long idle = 0; idle <= 3000; idle += 250) {
        for (long busy = 0; busy <= 600; busy += 150) {
            struct budget_day d = day(10000, 0, 0, 0);
            int64_t busy_s;
            int64_t idle_s = budget_reconcile_interval_s(&d, idle, busy, 3, &busy_s);
            double per_day = (double)(idle + busy) * 86400.0 / (double)idle_s;
            if (per_day > 2000.0 + 1e-6 || busy_s * 2 < idle_s)
                fail_msg("%ld idle, %ld busy: %.1f reconcile requests a day", idle, busy, per_day);
        }
    }
}

/* ---- what to ask Constant Contact for ---- */

static void test_needed_daily_limit(void **state)
{
    (void)state;
    /* 0.1/s of syncs while changes waited 15 minutes, 0.02/s of the rest: for
     * 5 minutes the syncs cost three times as much. */
    assert_int_equal(budget_needed_daily_limit(0.1, 0.02, 900000, 300), 27648);
    /* already within 5 minutes: what is spent now */
    assert_int_equal(budget_needed_daily_limit(0.1, 0.02, 1000, 300), 10368);
    assert_int_equal(budget_needed_daily_limit(0, 0, 1000, 300), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pick_follows_classes_then_least_used),
        cmocka_unit_test(test_reconcile_is_spread_over_the_day),
        cmocka_unit_test(test_fair_share_gives_unused_share_to_others),
        cmocka_unit_test(test_short_day),
        cmocka_unit_test(test_coalescing_widens_with_demand),
        cmocka_unit_test(test_one_off_work_is_projected_over_one_window),
        cmocka_unit_test(test_rounds_are_paced_at_the_widest_wait_or_past_calm),
        cmocka_unit_test(test_reconcile_interval_stretches_with_associations),
        cmocka_unit_test(test_reconcile_share_holds_for_the_day),
        cmocka_unit_test(test_needed_daily_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
