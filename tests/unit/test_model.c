/* Unit tests of the member record as ccsync keeps it: extra fields (§12) stored with the
 * record in Redis (facts.c's record text) and looked up by name (model.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccsync/facts.h"
#include "ccsync/model.h"
#include "ccsync/webhook.h"

/* Parses a customer.updated carrying data; the caller clears ev. */
static void parse_member(const char *data, struct event *ev)
{
    char body[2048];
    struct webhook_error err;
    snprintf(body, sizeof body,
             "{\"type\":\"customer.updated\",\"timestamp\":\"2026-11-27T10:00:03Z\",\"data\":%s}",
             data);
    assert_int_equal(webhook_parse_event(body, strlen(body), ev, &err), 0);
}

static void test_extra_fields_round_trip_through_the_stored_record(void **state)
{
    (void)state;
    struct event ev;
    parse_member("{\"UniqueID\":\"m\",\"Email\":\"a@x.org\",\"Phone\":\"555\","
                 "\"CustomFields\":{\"Chapter\":\"North\"},\"Dues\":1.5}",
                 &ev);
    char *text = facts_record_json(&ev.member);
    assert_string_equal(text, "{\"e\":\"a@x.org\",\"t\":0,\"d\":false,\"x\":{\"CustomFields."
                              "Chapter\":\"North\",\"Dues\":\"1.5\",\"Phone\":\"555\"}}");
    struct member_record back;
    assert_int_equal(facts_record_parse(text, "m", &back), 0);
    assert_int_equal(back.n_fields, 3);
    assert_string_equal(member_field_value(&back, "CustomFields.Chapter"), "North");
    assert_string_equal(member_field_value(&back, "Dues"), "1.5");
    assert_string_equal(member_field_value(&back, "Phone"), "555");
    assert_null(member_field_value(&back, "Fax"));
    member_record_clear(&back);
    free(text);
    event_clear(&ev);
}

/* The fold compares stored text: the same fields in another order are no change. */
static void test_equal_records_store_equal_text_whatever_the_key_order(void **state)
{
    (void)state;
    struct event a, b;
    parse_member("{\"UniqueID\":\"m\",\"Zeta\":\"1\",\"Alpha\":\"2\",\"CustomFields\":{\"Y\":"
                 "\"3\",\"X\":\"4\"}}",
                 &a);
    parse_member("{\"CustomFields\":{\"X\":\"4\",\"Y\":\"3\"},\"Alpha\":\"2\",\"UniqueID\":\"m\","
                 "\"Zeta\":\"1\"}",
                 &b);
    char *ta = facts_record_json(&a.member), *tb = facts_record_json(&b.member);
    assert_string_equal(ta, tb);
    free(ta);
    free(tb);
    event_clear(&a);
    event_clear(&b);
}

static void test_a_record_without_extra_fields_stores_no_x(void **state)
{
    (void)state;
    struct event ev;
    parse_member("{\"UniqueID\":\"m\",\"Email\":\"a@x.org\",\"CustomFields\":null}", &ev);
    char *text = facts_record_json(&ev.member);
    assert_null(strstr(text, "\"x\""));
    free(text);
    event_clear(&ev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_extra_fields_round_trip_through_the_stored_record),
        cmocka_unit_test(test_equal_records_store_equal_text_whatever_the_key_order),
        cmocka_unit_test(test_a_record_without_extra_fields_stores_no_x),
    };
    return cmocka_run_group_tests_name("model", tests, NULL, NULL);
}
