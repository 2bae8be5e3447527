/*
 * test_queue_turns.c - the pure decisions of the workers' turns (queue.h): an
 * association read a full batch goes back in line, one read less does not;
 * the sweep puts in line a stream with undelivered entries and reclaims one
 * with idle ones; dead letters' bodies are keyed by association and entry id.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ccsync/queue.h"

#define BATCH 64

static void test_a_full_batch_goes_back_in_line_a_short_one_does_not(void **state)
{
    (void)state;
    assert_true(queue_more_may_be_left(BATCH, BATCH));
    assert_false(queue_more_may_be_left(BATCH - 1, BATCH));
    assert_false(queue_more_may_be_left(0, BATCH));
}

static void test_the_sweep_lines_up_undelivered_and_reclaims_idle_entries(void **state)
{
    (void)state;
    struct queue_stream_state s = {.undelivered = true, .idle_pending = false};
    assert_true(queue_sweep_needs_turn(&s));
    assert_false(queue_sweep_needs_reclaim(&s));
    s = (struct queue_stream_state){.undelivered = false, .idle_pending = true};
    assert_false(queue_sweep_needs_turn(&s));
    assert_true(queue_sweep_needs_reclaim(&s));
    s = (struct queue_stream_state){0};
    assert_false(queue_sweep_needs_turn(&s));
    assert_false(queue_sweep_needs_reclaim(&s));
}

static void test_a_dead_letters_body_is_named_by_association_and_entry(void **state)
{
    (void)state;
    char id[64];
    queue_dead_body_id("acme", "17-3", id, sizeof id);
    assert_string_equal(id, "acme:17-3");
    queue_dead_body_id(NULL, "17-3", id, sizeof id); /* an entry without one */
    assert_string_equal(id, ":17-3");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_full_batch_goes_back_in_line_a_short_one_does_not),
        cmocka_unit_test(test_the_sweep_lines_up_undelivered_and_reclaims_idle_entries),
        cmocka_unit_test(test_a_dead_letters_body_is_named_by_association_and_entry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
