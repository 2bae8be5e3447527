/*
 * test_actcheck.c (integration) - activities whose outcome only refreshes
 * counts: rounds that only import into a synced list do not wait for their
 * activities; every outstanding one of the association is checked later with
 * ONE GET /activities (service/actcheck.c), not one poll or more per round,
 * once the budget binds (a calm day's rounds still wait).
 * Real redis-server, ccsim and ccsyncd (tests/support's stack); the requests
 * are ccsim's own counters.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "ccsim_client.h"
#include "novi.h"
#include "reply.h"
#include "stack.h"
#include "status.h"
#include "testsupport.h"

static int setup(void **state)
{
    (void)state;
    /* A day of 100: the first sync's few requests a second project far past
     * 80% of it, so the budget binds (the check is for such days). */
    struct stack_options o = {.env = {"CCSYNC_CC_DAILY_LIMIT=100"}};
    return stack_start("test-actcheck", &o);
}

/* The account's activity polls, by id and listed together. */
static long long polls(void)
{
    return cc_endpoint("GET /v3/activities") + cc_endpoint("GET /v3/activities/{activity_id}");
}

/* Joins one member to the board and waits until the list shows it. */
static void join_and_wait(const char *id, const char *email, long long at, const char *want)
{
    char buf[1024], list_id[128];
    send_customer(member(id, email, "F", "L", groups_of("board")), at);
    wait_folded();
    wait_synced_list("board", list_id, sizeof list_id);
    /* the round did not wait: CC runs the import after the group shows synced */
    long deadline = ts_now_ms() + WAIT_MS;
    while (strcmp(cc_members(list_id, buf, sizeof buf, NULL, 0), want) != 0 &&
           ts_now_ms() < deadline)
        ts_sleep_ms(50);
    assert_string_equal(buf, want);
}

static void test_rounds_of_one_association_share_one_activity_check(void **state)
{
    (void)state;
    char list_id[128];
    send_group("board", "Board", true, 1);
    send_members("board", 2, 2, member("m1", "ann@example.org", "Ann", "Lee", NULL),
                 member("m2", "bob@example.org", "Bob", "Ray", NULL));
    wait_synced_list("board", list_id, sizeof list_id);
    /* the first sync's own requests (it waits for its import, then reads back) */
    ts_sleep_ms(3000);
    long long imports0 = cc_imports(), polls0 = polls();

    /* Three rounds, each one import into the synced list. */
    join_and_wait("m3", "cy@example.org", 3, "ann@example.org,bob@example.org,cy@example.org");
    join_and_wait("m4", "di@example.org", 4,
                  "ann@example.org,bob@example.org,cy@example.org,di@example.org");
    join_and_wait("m5", "eve@example.org", 5,
                  "ann@example.org,bob@example.org,cy@example.org,di@example.org,eve@example.org");
    assert_int_equal(cc_imports() - imports0, 3);
    assert_int_equal(polls() - polls0, 0); /* no round waited */

    /* The check comes due: one request for the three activities, and no more. */
    wait_endpoint("GET /v3/activities", cc_endpoint("GET /v3/activities") + 1, WAIT_MS);
    ts_sleep_ms(7000);
    assert_int_equal(polls() - polls0, 1);
    assert_int_equal(cc_imports() - imports0, 3);
    json_object *gs = wait_synced("board");
    assert_counts(gs, 5, 0, 0, 0, 0, 0, 0, 5);
    json_object_put(gs);
}

/* A contact CC could not add (unsubscribed there) is found by the shared check:
 * the group is read back and its next round, which waits for its import, counts
 * the contact unsubscribed; it is not imported a third time. */
static void test_a_contact_cc_could_not_add_is_found_by_the_check(void **state)
{
    (void)state;
    char list_id[128], buf[1024];
    send_group("board", "Board", true, 1);
    send_members("board", 2, 1, member("m1", "ann@example.org", "Ann", "Lee", NULL));
    wait_synced_list("board", list_id, sizeof list_id);
    sim_void(
        "POST", "/__sim/seed",
        "{\"contacts\":[{\"email\":\"bob@example.org\",\"permission_to_send\":\"unsubscribed\"}]}");
    ts_sleep_ms(3000);
    long long imports0 = cc_imports();

    send_customer(member("m2", "bob@example.org", "Bob", "Ray", groups_of("board")), 3);
    wait_folded();
    long deadline = ts_now_ms() + WAIT_MS;
    json_object *gs;
    for (;;) {
        gs = wait_synced("board");
        if (jint(jget(gs, "counts"), "unsubscribed") == 1)
            break;
        json_object_put(gs);
        if (ts_now_ms() > deadline)
            fail_msg("the contact CC could not add was not noticed");
        ts_sleep_ms(200);
    }
    assert_counts(gs, 2, 0, 0, 0, 0, 1, 0, 1);
    json_object_put(gs);
    ts_sleep_ms(12000);                           /* a later check finds nothing more to do */
    assert_int_equal(cc_imports() - imports0, 2); /* the deferred import, then the waited one */
    assert_string_equal(cc_members(list_id, buf, sizeof buf, NULL, 0), "ann@example.org");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rounds_of_one_association_share_one_activity_check,
                                        setup, stack_stop),
        cmocka_unit_test_setup_teardown(test_a_contact_cc_could_not_add_is_found_by_the_check,
                                        setup, stack_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
