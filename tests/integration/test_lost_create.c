/*
 * test_lost_create.c (integration) - a list create whose answer is lost:
 * ccsim delays its answer past ccsyncd's CC timeout (30 s) and makes the list
 * a moment later. Whatever the admin or Novi do before ccsyncd retries, the
 * list the lost create made is found by its reference: deleted when sync was
 * turned off, adopted on a resync, never left behind beside a second list.
 * (The rest of the sync's behaviour is test_sync.c's; these two tests wait out
 * the timeout, so they run as a binary of their own, side by side with it.)
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ccsim_client.h"
#include "novi.h"
#include "stack.h"
#include "status.h"
#include "testsupport.h"

/* A list create whose answer is lost (ccsyncd gives up after 30 s; ccsim makes
 * the list a moment later), and sync is turned off before the retry: the list
 * the lost create made is found by its reference and deleted, not left behind
 * in CC with nobody syncing it. */
static void test_sync_off_after_a_lost_create_deletes_the_list_it_made(void **state)
{
    (void)state;
    char actions[512];
    sim_void("POST", "/__sim/delays",
             "{\"endpoint\":\"POST /v3/contact_lists\",\"delay_ms\":30300,\"count\":1}");
    send_group("board", "Board", true, 1);
    send_members("board", 2, 1, member("m1", "ann@example.org", "Ann", "Lee", NULL));
    wait_endpoint("POST /v3/contact_lists", 1, WAIT_MS); /* the create is on its way */
    send_group("board", "Board", false, 3);
    wait_cc_list_names("Board"); /* the lost create lands */
    wait_cc_list_names("");
    json_object *gs = wait_synced("board");
    assert_state(gs, "disabled");
    json_object_put(gs);
    assert_string_equal(audit_actions("board", actions, sizeof actions),
                        "sync_enabled,sync_disabled,list_created,list_deleted");
}

/* A list create whose answer is lost, and an admin resyncs the group (it shows
 * no list yet) before the retry: the list the lost create made is adopted, not
 * left behind beside a second list "Board - 1". */
static void test_resync_after_a_lost_create_adopts_the_list_it_made(void **state)
{
    (void)state;
    char buf[1024];
    sim_void("POST", "/__sim/delays",
             "{\"endpoint\":\"POST /v3/contact_lists\",\"delay_ms\":30300,\"count\":1}");
    send_group("board", "Board", true, 1);
    send_members("board", 2, 1, member("m1", "ann@example.org", "Ann", "Lee", NULL));
    wait_endpoint("POST /v3/contact_lists", 1, WAIT_MS); /* the create is on its way */
    struct reply r = api("POST", "/v1/associations/" ASSOC "/groups/board/resync", NULL);
    assert_int_equal(r.status, 202);
    reply_free(&r);
    wait_cc_list_names("Board"); /* the lost create lands */
    json_object *gs = wait_synced("board");
    long deadline = ts_now_ms() + WAIT_MS;
    while (strcmp(jstr(gs, "state"), "synced") != 0 && ts_now_ms() < deadline) {
        json_object_put(gs);
        ts_sleep_ms(200);
        gs = wait_synced("board");
    }
    assert_state(gs, "synced");
    assert_string_equal(gs_list_name(gs), "Board");
    assert_string_equal(cc_members(gs_list_id(gs), buf, sizeof buf, NULL, 0), "ann@example.org");
    json_object_put(gs);
    assert_string_equal(cc_list_names(NULL, buf, sizeof buf), "Board");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sync_off_after_a_lost_create_deletes_the_list_it_made,
                                        stack_setup, stack_stop),
        cmocka_unit_test_setup_teardown(test_resync_after_a_lost_create_adopts_the_list_it_made,
                                        stack_setup, stack_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
