/*
 * test_status_metrics.c (integration) - what a dashboard reads without JSON:
 * the ccsync_groups{state,error_code} gauges follow the groups (a list deleted
 * in Constant Contact shows as one group in error with that code, and clears
 * after the resync), and a polling dashboard's GETs are logged at debug, not info.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ccsim_client.h"
#include "novi.h"
#include "stack.h"
#include "status.h"
#include "testsupport.h"

static int setup_reconcile(void **state)
{
    (void)state;
    struct stack_options o = {.reconcile_seconds = 1};
    return stack_start("test-status-metrics", &o);
}

#define DELETED "ccsync_groups{state=\"error\",error_code=\"list_deleted_in_constant_contact\"}"
#define SYNCED "ccsync_groups{state=\"synced\",error_code=\"\"}"
#define DISABLED "ccsync_groups{state=\"disabled\",error_code=\"\"}"

static void test_groups_gauge_shows_a_deleted_list_until_resync(void **state)
{
    (void)state;
    char path[256], list_id[128];
    send_group("board", "Board", true, 1);
    send_group("staff", "Staff", true, 1);
    send_group("old", "Old", false, 1);
    send_members("board", 2, 1, member("m1", "ann@example.org", "Ann", "Lee", NULL));
    send_members("staff", 2, 1, member("m2", "bob@example.org", "Bob", "Ray", NULL));
    json_object_put(wait_synced("staff"));
    wait_synced_list("board", list_id, sizeof list_id);
    assert_true(metric_value(SYNCED) == 2);
    assert_true(metric_value(DISABLED) == 1);
    assert_true(metric_value(DELETED) == -1);

    snprintf(path, sizeof path, "/__sim/lists/%s/delete", list_id);
    sim_void("POST", path, NULL);
    json_object_put(wait_group_error("board", "list_deleted_in_constant_contact", "error"));
    assert_true(metric_value(DELETED) == 1);
    assert_true(metric_value(SYNCED) == 1);

    struct reply r = api("POST", "/v1/associations/" ASSOC "/groups/board/resync", NULL);
    assert_int_equal(r.status, 202);
    reply_free(&r);
    json_object *gs = wait_synced("board");
    assert_state(gs, "synced");
    json_object_put(gs);
    assert_true(metric_value(DELETED) == 0); /* the series stays, at 0: an alert resolves */
    assert_true(metric_value(SYNCED) == 2);
}

/* A dashboard polls: its GETs are debug lines; a write and an error stay info. */
static void test_status_gets_are_logged_at_debug(void **state)
{
    (void)state;
    send_group("board", "Board", false, 1);
    wait_folded();
    for (int i = 0; i < 3; i++) {
        struct reply r = api("GET", "/v1/associations/" ASSOC "/groups", NULL);
        assert_int_equal(r.status, 200);
        reply_free(&r);
    }
    struct reply r = api("GET", "/v1/associations/" ASSOC "/groups/nope", NULL);
    assert_int_equal(r.status, 404);
    reply_free(&r);
    r = api("POST", "/v1/associations/" ASSOC "/groups/board/resync", NULL);
    assert_int_equal(r.status, 409);
    reply_free(&r);
    wait_log_count(0, "\"route\":\"group_resync\"", 1, WAIT_MS);
    /* at the default level (info) none of the successful GETs is logged */
    assert_int_equal(stack_log_count(0, "\"route\":\"groups_list\""), 0);
    assert_int_equal(stack_log_count(0, "\"route\":\"group_get\""), 1);
    assert_int_equal(stack_log_count(0, "\"route\":\"status\""), 0);
}

/* With CCSYNC_LOG_LEVEL=debug the same GETs are there, as debug lines. */
static int setup_debug(void **state)
{
    (void)state;
    struct stack_options o = {.env = {"CCSYNC_LOG_LEVEL=debug"}};
    return stack_start("test-status-metrics", &o);
}

static void test_status_gets_show_at_debug_level(void **state)
{
    (void)state;
    struct reply r = api("GET", "/v1/associations/" ASSOC "/groups", NULL);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    wait_log_count(0, "\"level\":\"debug\",\"msg\":\"http_request\",\"route\":\"groups_list\"", 1,
                   WAIT_MS);
    assert_int_equal(stack_log_count(0, "\"route\":\"groups_list\""), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_groups_gauge_shows_a_deleted_list_until_resync,
                                        setup_reconcile, stack_stop),
        cmocka_unit_test_setup_teardown(test_status_gets_are_logged_at_debug, stack_setup,
                                        stack_stop),
        cmocka_unit_test_setup_teardown(test_status_gets_show_at_debug_level, setup_debug,
                                        stack_stop),
    };
    const char *filter = getenv("TEST_FILTER");
    if (filter && *filter)
        cmocka_set_test_filter(filter);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
