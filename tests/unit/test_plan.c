/*
 * test_plan.c - the planner's behaviour, as the design (docs/) states it: which
 * CC operations a group's members and the applied state lead to, and why each
 * member is or is not on the list.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccsync/plan.h"

/* ---- building inputs ------------------------------------------------------ */

/* Records point at string literals, so tests never call member_record_clear. */
static struct member_record person(const char *id, const char *email, const char *first,
                                   const char *last)
{
    struct member_record m;
    memset(&m, 0, sizeof(m));
    snprintf(m.id, sizeof(m.id), "%s", id);
    m.email = (char *)email;
    m.first_name = (char *)first;
    m.last_name = (char *)last;
    m.type = CUSTOMER_PERSON;
    m.active = true;
    return m;
}

static struct member_record company(const char *id, const char *email, const char *name)
{
    struct member_record m = person(id, email, NULL, NULL);
    m.company = (char *)name;
    m.type = CUSTOMER_COMPANY;
    return m;
}

static struct plan_group synced_group(void)
{
    struct plan_group g = {
        .id = "g-1",
        .name = "Board",
        .sync_enabled = true,
        .deleted = false,
        .list = {.state = PLAN_LIST_ACTIVE, .list_id = "list-1", .list_name = "Board"},
    };
    return g;
}

static struct applied_contact applied(const char *email, const char *contact_id, const char *first,
                                      const char *last, enum applied_status status)
{
    struct applied_contact a = {email, contact_id, first, last, status, NULL};
    return a;
}

#define MAX_MEMBERS 16

/* Plans recs[0..n) joined at times 100, 200, ... in array order; must succeed. */
static void plan_for(const struct plan_group *g, const struct member_record *recs, size_t n,
                     const struct applied_contact *app, size_t n_app,
                     const struct plan_limits *limits, struct plan *p)
{
    struct plan_member members[MAX_MEMBERS];
    assert_true(n <= MAX_MEMBERS);
    for (size_t i = 0; i < n; i++)
        members[i] = (struct plan_member){&recs[i], (int64_t)(i + 1) * 100};
    struct plan_error err;
    int rc = plan_build(g, members, n, app, n_app, limits, p, &err);
    if (rc != 0)
        fail_msg("plan_build: %s: %s", err.code, err.message);
}

/* ---- checking outputs --------------------------------------------------- */

static void assert_counts(const struct plan *p, size_t members, size_t no_email,
                          size_t invalid_email, size_t duplicate_email, size_t do_not_email,
                          size_t unsubscribed, size_t rejected, size_t in_list)
{
    assert_int_equal(p->counts.members, members);
    assert_int_equal(p->counts.no_email, no_email);
    assert_int_equal(p->counts.invalid_email, invalid_email);
    assert_int_equal(p->counts.duplicate_email, duplicate_email);
    assert_int_equal(p->counts.do_not_email, do_not_email);
    assert_int_equal(p->counts.unsubscribed, unsubscribed);
    assert_int_equal(p->counts.rejected, rejected);
    assert_int_equal(p->counts.in_list, in_list);
}

static void assert_contact(const struct plan_op *op, size_t i, const char *email, const char *first,
                           const char *last)
{
    assert_int_equal(op->type, PLAN_OP_IMPORT);
    assert_true(i < op->n_contacts);
    assert_string_equal(op->contacts[i].email, email);
    assert_string_equal(op->contacts[i].first_name, first);
    assert_string_equal(op->contacts[i].last_name, last);
}

static void assert_reason(const struct plan *p, size_t i, enum plan_reason r, bool pending)
{
    assert_true(i < p->n_outcomes);
    assert_string_equal(plan_reason_name(p->outcomes[i].reason), plan_reason_name(r));
    assert_int_equal(p->outcomes[i].pending, pending);
}

/* ---- first sync, joins, leaves, changes --------------------------------- */

static void test_sync_on_without_list_creates_list_only(void **state)
{
    struct plan_group g = synced_group();
    g.list = (struct plan_list){PLAN_LIST_NONE, NULL, NULL};
    struct member_record recs[] = {person("m-1", "ann@example.com", "Ann", "Lee")};
    struct plan p;
    plan_for(&g, recs, 1, NULL, 0, NULL, &p);

    assert_int_equal(p.n_ops, 1);
    assert_int_equal(p.ops[0].type, PLAN_OP_CREATE_LIST);
    assert_string_equal(p.ops[0].list_name, "Board");
    assert_counts(&p, 1, 0, 0, 0, 0, 0, 0, 1);
    assert_int_equal(p.pending.imports, 1);
    plan_free(&p);
}

static void test_first_sync_imports_every_usable_member(void **state)
{
    struct plan_group g = synced_group();
    struct member_record recs[] = {
        person("m-1", "zed@example.com", "Zed", "Ng"),
        person("m-2", NULL, "No", "Mail"),
        person("m-3", "  Ann@Example.COM ", "Ann", "Lee"),
        person("m-4", "bob@example.com", NULL, NULL),
    };
    struct plan p;
    plan_for(&g, recs, 4, NULL, 0, NULL, &p);

    assert_int_equal(p.n_ops, 1);
    assert_string_equal(plan_op_type_name(p.ops[0].type), "import");
    assert_string_equal(p.ops[0].list_id, "list-1");
    assert_int_equal(p.ops[0].n_contacts, 3);
    assert_contact(&p.ops[0], 0, "ann@example.com", "Ann", "Lee");
    assert_contact(&p.ops[0], 1, "bob@example.com", "", "");
    assert_contact(&p.ops[0], 2, "zed@example.com", "Zed", "Ng");
    assert_counts(&p, 4, 1, 0, 0, 0, 0, 0, 3);
    assert_int_equal(p.pending.imports, 3);
    assert_int_equal(p.pending.removes, 0);
    assert_reason(&p, 0, PLAN_IN_LIST, true);
    assert_reason(&p, 1, PLAN_NO_EMAIL, false);
    plan_free(&p);
}

static void test_join_imports_one_contact(void **state)
{
    struct plan_group g = synced_group();
    struct member_record recs[] = {
        person("m-1", "ann@example.com", "Ann", "Lee"),
        person("m-2", "bob@example.com", "Bob", "Ray"),
        person("m-3", "cat@example.com", "Cat", "Poe"),
    };
    struct applied_contact app[] = {
        applied("ann@example.com", "c-ann", "Ann", "Lee", APPLIED_ON_LIST),
        applied("cat@example.com", "c-cat", "Cat", "Poe", APPLIED_ON_LIST),
    };
    struct plan p;
    plan_for(&g, recs, 3, app, 2, NULL, &p);

    assert_int_equal(p.n_ops, 1);
    assert_int_equal(p.ops[0].n_contacts, 1);
    assert_contact(&p.ops[0], 0, "bob@example.com", "Bob", "Ray");
    assert_counts(&p, 3, 0, 0, 0, 0, 0, 0, 3);
    assert_reason(&p, 0, PLAN_IN_LIST, false);
    assert_reason(&p, 1, PLAN_IN_LIST, true);
    plan_free(&p);
}

/* 52 characters: valid for CC (at most 80) but longer than its bulk import takes. */
#define LONG_EMAIL "abcdefghijklmnopqrstuvwxyz0123456789abcd@example.com"

static void test_email_longer_than_import_limit_counted_rejected_not_imported(void **state)
{
    struct plan_group g = synced_group();
    struct member_record recs[] = {
        person("m-1", "ann@example.com", "Ann", "Lee"),
        person("m-2", LONG_EMAIL, "Lon", "Gest"),
    };
    struct plan p;
    assert_int_equal(strlen(LONG_EMAIL), 52);
    plan_for(&g, recs, 2, NULL, 0, NULL, &p);

    assert_int_equal(p.n_ops, 1);
    assert_int_equal(p.ops[0].type, PLAN_OP_IMPORT);
    assert_int_equal(p.ops[0].n_contacts, 1);
    assert_contact(&p.ops[0], 0, "ann@example.com", "Ann", "Lee");
    assert_counts(&p, 2, 0, 0, 0, 0, 0, 1, 1);
    assert_reason(&p, 1, PLAN_REJECTED, false);
    plan_free(&p);
}

static void test_leave_removes_by_contact_id(void **state)
{
    struct plan_group g = synced_group();
    struct member_record recs[] = {person("m-1", "ann@example.com", "Ann", "Lee")};
    struct applied_contact app[] = {
        applied("ann@example.com", "c-ann", "Ann", "Lee", APPLIED_ON_LIST),
        applied("bob@example.com", "c-bob", "Bob", "Ray", APPLIED_ON_LIST),
    };
    struct plan p;
    plan_for(&g, recs, 1, app, 2, NULL, &p);

    assert_int_equal(p.n_ops, 1);
    assert_string_equal(plan_op_type_name(p.ops[0].type), "remove");
    assert_string_equal(p.ops[0].list_id, "list-1");
    assert_int_equal(p.ops[0].n_contact_ids, 1);
    assert_string_equal(p.ops[0].contact_ids[0], "c-bob");
    assert_counts(&p, 1, 0, 0, 0, 0, 0, 0, 1);
    assert_int_equal(p.pending.removes, 1);
    assert_int_equal(p.pending.learns, 0);
    plan_free(&p);
}

static void test_email_change_removes_old_and_imports_new(void **state)
{
    struct plan_group g = synced_group();
    struct member_record recs[] = {person("m-1", "ann@new.example.com", "Ann", "Lee")};
    struct applied_contact app[] = {
        applied("ann@old.example.com", "c-old", "Ann", "Lee", APPLIED_ON_LIST),
    };
    struct plan p;
    plan_for(&g, recs, 1, app, 1, NULL, &p);

    assert_int_equal(p.n_ops, 2);
    assert_int_equal(p.ops[0].type, PLAN_OP_REMOVE);
    assert_int_equal(p.ops[0].n_contact_ids, 1);
    assert_string_equal(p.ops[0].contact_ids[0], "c-old");
    assert_int_equal(p.ops[1].n_contacts, 1);
    assert_contact(&p.ops[1], 0, "ann@new.example.com", "Ann", "Lee");
    assert_counts(&p, 1, 0, 0, 0, 0, 0, 0, 1);
    plan_free(&p);
}

static void test_email_case_and_spaces_are_not_a_change(void **state)
{
    struct plan_group g = synced_group();
    struct member_record recs[] = {person("m-1", "\t ANN@Example.com  ", "Ann", "Lee")};
    struct applied_contact app[] = {
        applied("ann@example.com", "c-ann", "Ann", "Lee", APPLIED_ON_LIST),
    };
    struct plan p;
    plan_for(&g, recs, 1, app, 1, NULL, &p);

    assert_int_equal(p.n_ops, 0);
    assert_counts(&p, 1, 0, 0, 0, 0, 0, 0, 1);
    plan_free(&p);
}

static void test_name_change_reimports(void **state)
{
    struct plan_group g = synced_group();
    struct member_record recs[] = {
        person("m-1", "ann@example.com", "Ann", "Lee-Park"),
        person("m-2", "bob@example.com", "Robert", "Ray"),
    };
    struct applied_contact app[] = {
        applied("ann@example.com", "c-ann", "Ann", "Lee", APPLIED_ON_LIST),
        applied("bob@example.com", "c-bob", "Bob", "Ray", APPLIED_ON_LIST),
    };
    struct plan p;
    plan_for(&g, recs, 2, app, 2, NULL, &p);

    assert_int_equal(p.n_ops, 1);
    assert_int_equal(p.ops[0].n_contacts, 2);
    assert_contact(&p.ops[0], 0, "ann@example.com", "Ann", "Lee-Park");
    assert_contact(&p.ops[0], 1, "bob@example.com", "Robert", "Ray");
    assert_counts(&p, 2, 0, 0, 0, 0, 0, 0, 2);
    assert_reason(&p, 0, PLAN_IN_LIST, true);
    plan_free(&p);
}

static void test_company_record_uses_company_as_first_name(void **state)
{
    struct plan_group g = synced_group();
    struct member_record recs[] = {company("co-1", "info@acme.example", "Acme Corp")};
    recs[0].first_name = "Ignored"; /* a company's own names are not sent */
    recs[0].last_name = "Ignored";
    struct plan p;
    plan_for(&g, recs, 1, NULL, 0, NULL, &p);

    assert_int_equal(p.n_ops, 1);
    assert_contact(&p.ops[0], 0, "info@acme.example", "Acme Corp", "_");
    plan_free(&p);

    /* Sent once, the same names are not a change. */
    struct applied_contact app[] = {
        applied("info@acme.example", "c-acme", "Acme Corp", "_", APPLIED_ON_LIST),
    };
    plan_for(&g, recs, 1, app, 1, NULL, &p);
    assert_int_equal(p.n_ops, 0);
    plan_free(&p);
}

static void test_names_cut_to_cc_limit_of_50_characters(void **state)
{
    char first[CONTACT_NAME_BUF_SIZE], last[CONTACT_NAME_BUF_SIZE];
    /* 60 ASCII characters -> the first 50. */
    struct member_record m = person(
        "m-1", "a@b.c", "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijKLMNOPQRST", NULL);
    plan_contact_names(&m, first, last);
    assert_string_equal(first, "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghij");
    assert_string_equal(last, "");

    /* 51 two-byte characters (é) -> 50 of them, never half of one. */
    char long_name[51 * 2 + 1] = "";
    for (int i = 0; i < 51; i++)
        strcat(long_name, "\xc3\xa9");
    m.last_name = long_name;
    plan_contact_names(&m, first, last);
    assert_int_equal(strlen(last), 100);
    assert_memory_equal(last, long_name, 100);
}

/* ---- duplicates ------------------------------------------------------------ */

static void test_duplicate_person_beats_company(void **state)
{
    struct plan_group g = synced_group();
    struct member_record recs[] = {
        company("co-1", "shared@example.com", "Acme"), /* joined first */
        person("m-9", "SHARED@example.com", "Ann", "Lee"),
    };
    struct plan p;
    plan_for(&g, recs, 2, NULL, 0, NULL, &p);

    assert_int_equal(p.n_ops, 1);
    assert_int_equal(p.ops[0].n_contacts, 1);
    assert_contact(&p.ops[0], 0, "shared@example.com", "Ann", "Lee");
    assert_counts(&p, 2, 0, 0, 1, 0, 0, 0, 1);
    assert_reason(&p, 0, PLAN_DUPLICATE_EMAIL, false);
    assert_reason(&p, 1, PLAN_IN_LIST, true);
    plan_free(&p);
}

static void test_duplicate_earliest_join_wins(void **state)
{
    struct plan_group g = synced_group();
    struct member_record recs[] = {
        person("m-1", "shared@example.com", "Late", "Joiner"),
        person("m-2", "shared@example.com", "Early", "Joiner"),
    };
    struct plan_member members[] = {{&recs[0], 2000}, {&recs[1], 1000}};
    struct plan p;
    struct plan_error err;
    assert_int_equal(plan_build(&g, members, 2, NULL, 0, NULL, &p, &err), 0);

    assert_int_equal(p.ops[0].n_contacts, 1);
    assert_contact(&p.ops[0], 0, "shared@example.com", "Early", "Joiner");
    assert_reason(&p, 0, PLAN_DUPLICATE_EMAIL, false);
    assert_reason(&p, 1, PLAN_IN_LIST, true);
    assert_counts(&p, 2, 0, 0, 1, 0, 0, 0, 1);
    plan_free(&p);
}

static void test_duplicate_tie_smaller_unique_id_wins(void **state)
{
    /* Byte order: "M-2" < "m-1" < "m-10"; all joined at the same time. */
    struct plan_group g = synced_group();
    struct member_record recs[] = {
        person("m-10", "shared@example.com", "Ten", "X"),
        person("m-1", "shared@example.com", "One", "X"),
        person("M-2", "shared@example.com", "Two", "X"),
    };
    struct plan_member members[] = {{&recs[0], 500}, {&recs[1], 500}, {&recs[2], 500}};
    struct plan p;
    struct plan_error err;
    assert_int_equal(plan_build(&g, members, 3, NULL, 0, NULL, &p, &err), 0);

    assert_int_equal(p.ops[0].n_contacts, 1);
    assert_contact(&p.ops[0], 0, "shared@example.com", "Two", "X");
    assert_counts(&p, 3, 0, 0, 2, 0, 0, 0, 1);
    assert_reason(&p, 2, PLAN_IN_LIST, true);
    plan_free(&p);
}

static void test_duplicate_loser_leaving_changes_nothing(void **state)
{
    /* The winner stays; the loser's departure must not remove the shared email. */
    struct plan_group g = synced_group();
    struct member_record recs[] = {person("m-1", "shared@example.com", "Ann", "Lee")};
    struct applied_contact app[] = {
        applied("shared@example.com", "c-1", "Ann", "Lee", APPLIED_ON_LIST),
    };
    struct plan p;
    plan_for(&g, recs, 1, app, 1, NULL, &p);
    assert_int_equal(p.n_ops, 0);
    plan_free(&p);
}

/* ---- do not email, unsubscribed, rejected --------------------------------- */

static void test_do_not_email_not_imported_and_removed_if_on_list(void **state)
{
    struct plan_group g = synced_group();
    struct member_record recs[] = {
        person("m-1", "ann@example.com", "Ann", "Lee"), /* on the list, turns it on */
        person("m-2", "bob@example.com", "Bob", "Ray"), /* new, has it on */
    };
    recs[0].do_not_email = true;
    recs[1].do_not_email = true;
    struct applied_contact app[] = {
        applied("ann@example.com", "c-ann", "Ann", "Lee", APPLIED_ON_LIST),
    };
    struct plan p;
    plan_for(&g, recs, 2, app, 1, NULL, &p);

    assert_int_equal(p.n_ops, 1);
    assert_int_equal(p.ops[0].type, PLAN_OP_REMOVE);
    assert_int_equal(p.ops[0].n_contact_ids, 1);
    assert_string_equal(p.ops[0].contact_ids[0], "c-ann");
    assert_counts(&p, 2, 0, 0, 0, 2, 0, 0, 0);
    assert_reason(&p, 0, PLAN_DO_NOT_EMAIL, false);
    plan_free(&p);
}

static void test_do_not_email_winner_keeps_mailbox_off_list(void **state)
{
    /* Same mailbox: the winner asked not to be emailed, so the loser is not
     * imported in its place. */
    struct plan_group g = synced_group();
    struct member_record recs[] = {
        person("m-1", "shared@example.com", "Ann", "Lee"),
        person("m-2", "shared@example.com", "Bob", "Lee"),
    };
    recs[0].do_not_email = true;
    struct plan p;
    plan_for(&g, recs, 2, NULL, 0, NULL, &p);

    assert_int_equal(p.n_ops, 0);
    assert_counts(&p, 2, 0, 0, 1, 1, 0, 0, 0);
    plan_free(&p);
}

static void test_unsubscribed_never_reimported(void **state)
{
    struct plan_group g = synced_group();
    struct member_record recs[] = {
        person("m-1", "ann@example.com", "Ann", "Lee"),
        person("m-2", "bob@example.com", "Robert", "Ray"), /* name changed since */
    };
    struct applied_contact app[] = {
        applied("ann@example.com", "c-ann", "Ann", "Lee", APPLIED_UNSUBSCRIBED),
        applied("bob@example.com", "c-bob", "Bob", "Ray", APPLIED_UNSUBSCRIBED),
    };
    struct plan p;
    plan_for(&g, recs, 2, app, 2, NULL, &p);

    assert_int_equal(p.n_ops, 0);
    assert_counts(&p, 2, 0, 0, 0, 0, 2, 0, 0);
    assert_reason(&p, 1, PLAN_UNSUBSCRIBED, false);
    plan_free(&p);

    /* Leaving and coming back changes nothing either; leaving removes nothing. */
    plan_for(&g, recs, 0, app, 2, NULL, &p);
    assert_int_equal(p.n_ops, 0);
    plan_free(&p);
}

static void test_rejected_not_retried_until_names_change(void **state)
{
    struct plan_group g = synced_group();
    struct member_record recs[] = {
        person("m-1", "ann@example.com", "Ann", "Lee"),
        person("m-2", "bob@example.com", "Robert", "Ray"),
    };
    struct applied_contact app[] = {
        applied("ann@example.com", "", "Ann", "Lee", APPLIED_REJECTED),
        applied("bob@example.com", "", "Bob", "Ray", APPLIED_REJECTED),
    };
    struct plan p;
    plan_for(&g, recs, 2, app, 2, NULL, &p);

    assert_int_equal(p.n_ops, 1);
    assert_int_equal(p.ops[0].n_contacts, 1);
    assert_contact(&p.ops[0], 0, "bob@example.com", "Robert", "Ray");
    assert_counts(&p, 2, 0, 0, 0, 0, 0, 1, 1);
    assert_reason(&p, 0, PLAN_REJECTED, false);
    assert_reason(&p, 1, PLAN_IN_LIST, true);
    plan_free(&p);
}

/* ---- emails ----------------------------------------------------------------- */

struct email_case {
    const char *email;
    enum email_class expected;
};

static void test_email_classify_rules(void **state)
{
    static const char eighty[] = /* 80 characters */
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@example.com";
    static const char eighty_one[] =
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@example.com";
    /* 80 characters of which 10 are two-byte: 90 bytes, still valid. */
    static const char eighty_utf8[] = "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                                      "\xc3\xa9\xc3\xa9\xc3\xa9"
                                      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                                      "@example.com";
    const struct email_case cases[] = {
        {NULL, EMAIL_NONE},
        {"", EMAIL_NONE},
        {" \t\r\n", EMAIL_NONE},
        {"ann@example.com", EMAIL_OK},
        {"  Ann.Lee+news@Mail.Example.COM\n", EMAIL_OK},
        {"ann.example.com", EMAIL_INVALID},     /* no '@' */
        {"ann@@example.com", EMAIL_INVALID},    /* two '@' */
        {"ann@lee@example.com", EMAIL_INVALID}, /* two '@' */
        {"@example.com", EMAIL_INVALID},        /* empty local part */
        {"ann@localhost", EMAIL_INVALID},       /* domain without a dot */
        {"ann@", EMAIL_INVALID},                /* empty domain */
        {"ann lee@example.com", EMAIL_INVALID}, /* space inside */
        {"ann@exa\tmple.com", EMAIL_INVALID},   /* tab inside */
        {"ann@exa\x01mple.com", EMAIL_INVALID}, /* control character */
        {"ann@exa\x7fmple.com", EMAIL_INVALID}, /* DEL */
        {eighty, EMAIL_OK},
        {eighty_one, EMAIL_INVALID}, /* over 80 characters */
        {eighty_utf8, EMAIL_OK},
    };
    assert_int_equal(strlen(eighty), 80);
    assert_int_equal(strlen(eighty_one), 81);
    assert_int_equal(strlen(eighty_utf8), 90);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        enum email_class got = email_classify(cases[i].email);
        if (got != cases[i].expected)
            fail_msg("case %zu \"%s\": got %d, want %d", i,
                     cases[i].email ? cases[i].email : "(null)", got, cases[i].expected);
    }
}

static void test_email_normalize_trims_and_lowercases(void **state)
{
    char out[EMAIL_BUF_SIZE];
    assert_int_equal(email_normalize("  Ann.LEE@Example.COM \r\n", out, sizeof(out)), 0);
    assert_string_equal(out, "ann.lee@example.com");
    assert_int_equal(email_normalize("\xc3\x89T\xc3\x89@x.org", out, sizeof(out)), 0);
    assert_string_equal(out, "\xc3\x89t\xc3\x89@x.org"); /* non-ASCII left as is */

    char small[6];
    assert_int_equal(email_normalize("a@b.co", small, sizeof(small)), -1);
    assert_string_equal(small, "");
    assert_int_equal(email_normalize(NULL, out, sizeof(out)), -1);
}

static void test_missing_and_invalid_emails_counted(void **state)
{
    struct plan_group g = synced_group();
    struct member_record recs[] = {
        person("m-1", NULL, "Null", "Email"),
        person("m-2", "", "Empty", "Email"),
        person("m-3", "   ", "Blank", "Email"),
        person("m-4", "no-at.example.com", "No", "At"),
        person("m-5", "a@b@example.com", "Two", "Ats"),
        person("m-6", "@example.com", "Empty", "Local"),
        person("m-7", "ann@localhost", "Dotless", "Domain"),
        person("m-8", "ann lee@example.com", "Space", "Inside"),
        person("m-9", "ann@exa\x02mple.com", "Control", "Char"),
        person("m-10",
               "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@example.com",
               "Too", "Long"),
        person("m-11", "ok@example.com", "Ok", "Fine"),
    };
    struct plan p;
    plan_for(&g, recs, 11, NULL, 0, NULL, &p);

    assert_counts(&p, 11, 3, 7, 0, 0, 0, 0, 1);
    for (size_t i = 0; i < 3; i++)
        assert_reason(&p, i, PLAN_NO_EMAIL, false);
    for (size_t i = 3; i < 10; i++)
        assert_reason(&p, i, PLAN_INVALID_EMAIL, false);
    assert_int_equal(p.n_ops, 1);
    assert_int_equal(p.ops[0].n_contacts, 1);
    assert_contact(&p.ops[0], 0, "ok@example.com", "Ok", "Fine");
    plan_free(&p);
}

/* ---- group and list states --------------------------------------------------- */

struct state_case {
    const char *name;
    bool sync_enabled;
    bool deleted;
    enum plan_list_state list;
    int expected_op; /* -1: no op at all */
};

static void test_group_and_list_states(void **state)
{
    const struct state_case cases[] = {
        {"sync on, no list", true, false, PLAN_LIST_NONE, PLAN_OP_CREATE_LIST},
        {"toggled off", false, false, PLAN_LIST_ACTIVE, PLAN_OP_DELETE_LIST},
        {"deleted", true, true, PLAN_LIST_ACTIVE, PLAN_OP_DELETE_LIST},
        {"deleted, sync off", false, true, PLAN_LIST_ACTIVE, PLAN_OP_DELETE_LIST},
        {"sync off, no list", false, false, PLAN_LIST_NONE, -1},
        {"deleted, no list", true, true, PLAN_LIST_NONE, -1},
        {"list deleted in CC", true, false, PLAN_LIST_DELETED_IN_CC, -1},
        {"off, list deleted in CC", false, false, PLAN_LIST_DELETED_IN_CC, -1},
    };
    struct member_record recs[] = {person("m-1", "new@example.com", "New", "One")};
    struct applied_contact app[] = {
        applied("gone@example.com", "c-gone", "Gone", "One", APPLIED_ON_LIST),
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct plan_group g = synced_group();
        g.sync_enabled = cases[i].sync_enabled;
        g.deleted = cases[i].deleted;
        g.list.state = cases[i].list;
        struct plan p;
        plan_for(&g, recs, 1, app, cases[i].list == PLAN_LIST_NONE ? 0 : 1, NULL, &p);
        if (cases[i].expected_op < 0) {
            if (p.n_ops != 0)
                fail_msg("%s: %zu ops, want none", cases[i].name, p.n_ops);
        } else if (p.n_ops != 1 || (int)p.ops[0].type != cases[i].expected_op) {
            fail_msg("%s: %zu ops, first %s", cases[i].name, p.n_ops,
                     p.n_ops ? plan_op_type_name(p.ops[0].type) : "-");
        }
        plan_free(&p);
    }
}

static void test_toggle_off_deletes_list(void **state)
{
    struct plan_group g = synced_group();
    g.sync_enabled = false;
    struct member_record recs[] = {person("m-1", "new@example.com", "New", "One")};
    struct applied_contact app[] = {
        applied("gone@example.com", "c-gone", "Gone", "One", APPLIED_ON_LIST),
    };
    struct plan p;
    plan_for(&g, recs, 1, app, 1, NULL, &p);

    assert_int_equal(p.n_ops, 1);
    assert_string_equal(plan_op_type_name(p.ops[0].type), "delete_list");
    assert_string_equal(p.ops[0].list_id, "list-1");
    assert_int_equal(p.pending.imports, 0);
    assert_int_equal(p.pending.removes, 0);
    assert_reason(&p, 0, PLAN_IN_LIST, false);
    plan_free(&p);
}

static void test_group_deleted_deletes_list(void **state)
{
    struct plan_group g = synced_group();
    g.deleted = true;
    struct plan p;
    plan_for(&g, NULL, 0, NULL, 0, NULL, &p);

    assert_int_equal(p.n_ops, 1);
    assert_int_equal(p.ops[0].type, PLAN_OP_DELETE_LIST);
    assert_string_equal(p.ops[0].list_id, "list-1");
    plan_free(&p);
}

static void test_list_deleted_in_cc_plans_nothing(void **state)
{
    struct plan_group g = synced_group();
    g.list.state = PLAN_LIST_DELETED_IN_CC;
    struct member_record recs[] = {
        person("m-1", "ann@example.com", "Ann", "Lee"),
        person("m-2", "bob@example.com", "Bob", "Ray"),
    };
    struct applied_contact app[] = {
        applied("ann@example.com", "c-ann", "Ann", "Lee", APPLIED_ON_LIST),
        applied("zed@example.com", "c-zed", "Zed", "Ng", APPLIED_ON_LIST),
    };
    struct plan p;
    plan_for(&g, recs, 2, app, 2, NULL, &p);

    assert_int_equal(p.n_ops, 0);
    assert_int_equal(p.pending.imports, 0);
    assert_int_equal(p.pending.removes, 0);
    assert_counts(&p, 2, 0, 0, 0, 0, 0, 0, 2);
    assert_reason(&p, 1, PLAN_IN_LIST, false);
    plan_free(&p);
}

static void test_no_change_plans_no_op(void **state)
{
    struct plan_group g = synced_group();
    struct member_record recs[] = {
        person("m-1", "ann@example.com", "Ann", "Lee"),
        company("co-1", "info@acme.example", "Acme"),
        person("m-2", NULL, "No", "Mail"),
        person("m-3", "bob@example.com", "Bob", "Ray"),
    };
    recs[3].do_not_email = true;
    struct applied_contact app[] = {
        applied("info@acme.example", "", "Acme", "_", APPLIED_ON_LIST),
        applied("ann@example.com", "c-ann", "Ann", "Lee", APPLIED_ON_LIST),
    };
    struct plan p;
    plan_for(&g, recs, 4, app, 2, NULL, &p);

    assert_int_equal(p.n_ops, 0);
    assert_int_equal(p.pending.imports + p.pending.removes + p.pending.learns, 0);
    assert_counts(&p, 4, 1, 0, 0, 1, 0, 0, 2);
    plan_free(&p);
}

/* ---- chunks ------------------------------------------------------------------- */

static void test_import_chunks_at_contact_and_byte_limits(void **state)
{
    struct plan_group g = synced_group();
    g.list.list_id = "L";
    /* Each contact "xN@e.co" with names "F" "L" is 64 + 9 + 3 + 3 = 79 bytes;
     * the body around them 128 + 3 = 131. */
    struct member_record recs[] = {
        person("m-1", "x1@e.co", "F", "L"), person("m-2", "x2@e.co", "F", "L"),
        person("m-3", "x3@e.co", "F", "L"), person("m-4", "x4@e.co", "F", "L"),
        person("m-5", "x5@e.co", "F", "L"),
    };
    struct plan p;

    /* Contact limit only. */
    struct plan_limits by_count = {
        .import_max_contacts = 2, .import_max_bytes = 1000000, .remove_max_ids = 500};
    plan_for(&g, recs, 5, NULL, 0, &by_count, &p);
    assert_int_equal(p.n_ops, 3);
    assert_int_equal(p.ops[0].n_contacts, 2);
    assert_int_equal(p.ops[1].n_contacts, 2);
    assert_int_equal(p.ops[2].n_contacts, 1);
    assert_contact(&p.ops[1], 0, "x3@e.co", "F", "L");
    assert_contact(&p.ops[2], 0, "x5@e.co", "F", "L");
    assert_int_equal(p.ops[0].json_bytes, 131 + 2 * 79);
    plan_free(&p);

    /* Byte limit: 131 + 3 * 79 = 368 must stay strictly below the limit. */
    struct plan_limits at_368 = {
        .import_max_contacts = 100, .import_max_bytes = 368, .remove_max_ids = 500};
    plan_for(&g, recs, 5, NULL, 0, &at_368, &p);
    assert_int_equal(p.n_ops, 3);
    assert_int_equal(p.ops[0].n_contacts, 2);
    assert_int_equal(p.ops[1].n_contacts, 2);
    assert_int_equal(p.ops[2].n_contacts, 1);
    plan_free(&p);

    struct plan_limits at_369 = at_368;
    at_369.import_max_bytes = 369;
    plan_for(&g, recs, 5, NULL, 0, &at_369, &p);
    assert_int_equal(p.n_ops, 2);
    assert_int_equal(p.ops[0].n_contacts, 3);
    assert_int_equal(p.ops[0].json_bytes, 368);
    assert_int_equal(p.ops[1].n_contacts, 2);
    assert_contact(&p.ops[1], 0, "x4@e.co", "F", "L");
    plan_free(&p);

    /* Escapes count: a '"' costs 2 bytes, a control character 6. */
    recs[0].first_name = "\"\x01"; /* 2 + 2 + 6 = 10 instead of 3: +7 */
    plan_for(&g, recs, 5, NULL, 0, &at_369, &p);
    assert_int_equal(p.ops[0].n_contacts, 2);
    assert_int_equal(p.ops[0].json_bytes, 131 + 86 + 79);
    plan_free(&p);

    /* A contact larger than the limit still travels, alone. */
    struct plan_limits tiny = {
        .import_max_contacts = 100, .import_max_bytes = 10, .remove_max_ids = 500};
    plan_for(&g, recs, 5, NULL, 0, &tiny, &p);
    assert_int_equal(p.n_ops, 5);
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(p.ops[i].n_contacts, 1);
    plan_free(&p);
}

/* Serializes an IMPORT op as the executor will (json-c) and fails if any
 * layout is longer than the planner's estimate. */
static void assert_estimate_covers_json_c(const struct plan_op *op)
{
    json_object *body = json_object_new_object();
    json_object *data = json_object_new_array();
    for (size_t i = 0; i < op->n_contacts; i++) {
        json_object *c = json_object_new_object();
        json_object_object_add(c, "email", json_object_new_string(op->contacts[i].email));
        json_object_object_add(c, "first_name", json_object_new_string(op->contacts[i].first_name));
        json_object_object_add(c, "last_name", json_object_new_string(op->contacts[i].last_name));
        json_object_array_add(data, c);
    }
    json_object_object_add(body, "import_data", data);
    json_object *ids = json_object_new_array();
    json_object_array_add(ids, json_object_new_string(op->list_id));
    json_object_object_add(body, "list_ids", ids);

    const int flags[] = {JSON_C_TO_STRING_PLAIN, JSON_C_TO_STRING_SPACED};
    for (size_t i = 0; i < 2; i++) {
        size_t real = strlen(json_object_to_json_string_ext(body, flags[i]));
        if (real > op->json_bytes)
            fail_msg("flags %d: json-c wrote %zu bytes, estimate %zu", flags[i], real,
                     op->json_bytes);
    }
    json_object_put(body);
}

static void test_json_estimate_is_not_below_json_c_output(void **state)
{
    struct plan_group g = synced_group();
    g.list.list_id = "04fe9a97-a579-43c5-bb1a-58ed29bf0a6a";
    /* Contacts made of what json-c escapes ('/' too, by default). Each is also
     * planned alone, where a per-byte undercount would exceed the estimate's
     * fixed slack. */
    static const char slashes[] = "//////////////////////////////////////////////////";
    /* 44 + 5 characters: within the import's 50-character email limit */
    static const char slash_email[] = "////////////////////////////////////////////@x.co";
    static const char controls[] = "\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0e\x0f\x10\x11\x12"
                                   "\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f";
    static const char quotes[] = "\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"";
    static const char backslashes[] = "\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\";
    struct member_record recs[] = {
        person("m-1", "a/b@x.co", "Quote\"Back\\slash/", "Tab\tNew\nCtl\x01\x1f"),
        person("m-2", "\xc3\xa9@x.co", "\xc3\x89lodie", "D\xc3\xa9j\xc3\xa0"),
        company("co-1", "c@x.co", "</script>"),
        person("m-4", slash_email, slashes, slashes),
        person("m-5", "e@x.co", controls, controls),
        person("m-6", "f@x.co", quotes, backslashes),
    };
    const size_t n = sizeof(recs) / sizeof(recs[0]);
    struct plan p;
    plan_for(&g, recs, n, NULL, 0, NULL, &p);
    assert_int_equal(p.n_ops, 1);
    assert_int_equal(p.ops[0].n_contacts, n);
    assert_estimate_covers_json_c(&p.ops[0]);
    plan_free(&p);

    for (size_t i = 0; i < n; i++) {
        plan_for(&g, &recs[i], 1, NULL, 0, NULL, &p);
        assert_int_equal(p.n_ops, 1);
        assert_estimate_covers_json_c(&p.ops[0]);
        plan_free(&p);
    }
}

static void test_remove_chunks_at_500(void **state)
{
    enum { N = 1001 }; /* 500 + 500 + 1 */
    static char emails[N][32], ids[N][32];
    static struct applied_contact app[N];
    for (size_t i = 0; i < N; i++) {
        /* Reverse order in the input: the plan sorts by email. */
        size_t k = N - 1 - i;
        snprintf(emails[i], sizeof(emails[i]), "u%05zu@example.com", k);
        snprintf(ids[i], sizeof(ids[i]), "c-%05zu", k);
        app[i] = applied(emails[i], ids[i], "U", "X", APPLIED_ON_LIST);
    }
    struct plan_group g = synced_group();
    struct plan p;
    plan_for(&g, NULL, 0, app, N, NULL, &p);

    assert_int_equal(p.n_ops, 3);
    assert_int_equal(p.ops[0].n_contact_ids, 500);
    assert_int_equal(p.ops[1].n_contact_ids, 500);
    assert_int_equal(p.ops[2].n_contact_ids, 1);
    assert_string_equal(p.ops[0].contact_ids[0], "c-00000");
    assert_string_equal(p.ops[0].contact_ids[499], "c-00499");
    assert_string_equal(p.ops[1].contact_ids[0], "c-00500");
    assert_string_equal(p.ops[2].contact_ids[0], "c-01000");
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(p.ops[i].type, PLAN_OP_REMOVE);
        assert_string_equal(p.ops[i].list_id, "list-1");
    }
    assert_int_equal(p.pending.removes, N);
    plan_free(&p);
}

static void test_unknown_contact_id_needs_learn(void **state)
{
    struct plan_group g = synced_group();
    struct member_record recs[] = {
        person("m-1", "new@example.com", "New", "One"),
        person("m-2", "quiet@example.com", "Quiet", "One"),
    };
    recs[1].do_not_email = true;
    struct applied_contact app[] = {
        applied("zed@example.com", "", "Zed", "Ng", APPLIED_ON_LIST),
        applied("quiet@example.com", NULL, "Quiet", "One", APPLIED_ON_LIST),
        applied("known@example.com", "c-known", "Known", "One", APPLIED_ON_LIST),
        applied("gone@example.com", "", "Gone", "One", APPLIED_REJECTED),
    };
    struct plan p;
    plan_for(&g, recs, 2, app, 4, NULL, &p);

    assert_int_equal(p.n_ops, 3);
    assert_string_equal(plan_op_type_name(p.ops[0].type), "learn");
    assert_int_equal(p.ops[0].n_emails, 2);
    assert_string_equal(p.ops[0].emails[0], "quiet@example.com");
    assert_string_equal(p.ops[0].emails[1], "zed@example.com");
    assert_int_equal(p.ops[1].type, PLAN_OP_REMOVE);
    assert_int_equal(p.ops[1].n_contact_ids, 1);
    assert_string_equal(p.ops[1].contact_ids[0], "c-known");
    assert_contact(&p.ops[2], 0, "new@example.com", "New", "One");
    assert_int_equal(p.pending.removes, 3);
    assert_int_equal(p.pending.learns, 2);
    assert_int_equal(p.pending.imports, 1);
    plan_free(&p);
}

/* ---- counts, determinism, bad input, scale ----------------------------------------- */

static void test_counts_sum_to_members(void **state)
{
    struct plan_group g = synced_group();
    struct member_record recs[] = {
        person("m-1", NULL, "A", "A"),                /* no_email */
        person("m-2", "bad", "B", "B"),               /* invalid_email */
        person("m-3", "dup@example.com", "C", "C"),   /* winner, in_list (new) */
        company("co-4", "dup@example.com", "D Inc"),  /* duplicate_email */
        person("m-5", "dne@example.com", "E", "E"),   /* do_not_email */
        person("m-6", "unsub@example.com", "F", "F"), /* unsubscribed */
        person("m-7", "rej@example.com", "G", "G"),   /* rejected */
        person("m-8", "on@example.com", "H", "H"),    /* in_list (there) */
    };
    recs[4].do_not_email = true;
    struct applied_contact app[] = {
        applied("unsub@example.com", "c-6", "F", "F", APPLIED_UNSUBSCRIBED),
        applied("rej@example.com", "", "G", "G", APPLIED_REJECTED),
        applied("on@example.com", "c-8", "H", "H", APPLIED_ON_LIST),
    };
    struct plan p;
    plan_for(&g, recs, 8, app, 3, NULL, &p);

    assert_counts(&p, 8, 1, 1, 1, 1, 1, 1, 2);
    const struct plan_counts *k = &p.counts;
    assert_int_equal(k->members, k->in_list + k->no_email + k->invalid_email + k->duplicate_email +
                                     k->do_not_email + k->unsubscribed + k->rejected);
    const enum plan_reason want[] = {PLAN_NO_EMAIL,        PLAN_INVALID_EMAIL, PLAN_IN_LIST,
                                     PLAN_DUPLICATE_EMAIL, PLAN_DO_NOT_EMAIL,  PLAN_UNSUBSCRIBED,
                                     PLAN_REJECTED,        PLAN_IN_LIST};
    for (size_t i = 0; i < 8; i++)
        assert_reason(&p, i, want[i], i == 2);
    plan_free(&p);
}

static void test_replan_with_shuffled_input_gives_same_ops(void **state)
{
    struct plan_group g = synced_group();
    struct member_record recs[] = {
        person("m-1", "d@x.co", "D", "D"), person("m-2", "b@x.co", "B", "B"),
        person("m-3", "e@x.co", "E", "E"), person("m-4", "a@x.co", "A", "A"),
        person("m-5", "c@x.co", "C", "C"),
    };
    struct member_record shuffled[] = {recs[2], recs[4], recs[0], recs[3], recs[1]};
    struct plan_limits limits = {
        .import_max_contacts = 2, .import_max_bytes = 100000, .remove_max_ids = 500};
    struct plan p1, p2;
    plan_for(&g, recs, 5, NULL, 0, &limits, &p1);
    plan_for(&g, shuffled, 5, NULL, 0, &limits, &p2);

    assert_int_equal(p1.n_ops, 3);
    assert_int_equal(p2.n_ops, 3);
    for (size_t i = 0; i < p1.n_ops; i++) {
        assert_int_equal(p1.ops[i].n_contacts, p2.ops[i].n_contacts);
        for (size_t j = 0; j < p1.ops[i].n_contacts; j++)
            assert_string_equal(p1.ops[i].contacts[j].email, p2.ops[i].contacts[j].email);
    }
    assert_contact(&p1.ops[0], 0, "a@x.co", "A", "A");
    assert_contact(&p1.ops[2], 0, "e@x.co", "E", "E");
    plan_free(&p1);
    plan_free(&p2);
}

static void test_bad_applied_state_is_refused(void **state)
{
    struct plan_group g = synced_group();
    struct plan p;
    struct plan_error err;

    struct applied_contact upper[] = {
        applied("Ann@example.com", "c-1", "Ann", "Lee", APPLIED_ON_LIST),
    };
    assert_int_equal(plan_build(&g, NULL, 0, upper, 1, NULL, &p, &err), -1);
    assert_string_equal(err.code, "invalid_input");
    assert_int_equal(p.n_ops, 0);
    plan_free(&p); /* harmless */

    struct applied_contact twice[] = {
        applied("ann@example.com", "c-1", "Ann", "Lee", APPLIED_ON_LIST),
        applied("ann@example.com", "c-2", "Ann", "Lee", APPLIED_ON_LIST),
    };
    assert_int_equal(plan_build(&g, NULL, 0, twice, 2, NULL, &p, &err), -1);
    assert_string_equal(err.code, "invalid_input");
    assert_non_null(strstr(err.message, "twice"));

    g.list.list_id = NULL;
    assert_int_equal(plan_build(&g, NULL, 0, NULL, 0, NULL, &p, &err), -1);
    assert_string_equal(err.code, "invalid_input");
}

static void test_large_group_plans_in_one_pass(void **state)
{
    /* 60,000 members, half already on the list (one in ten renamed), 5,000
     * applied contacts who left: the shape of a big first sync or recalculation. */
    enum { N = 60000, GONE = 5000 };
    struct member_record *recs = calloc(N, sizeof(*recs));
    struct plan_member *members = calloc(N, sizeof(*members));
    struct applied_contact *app = calloc(N / 2 + GONE, sizeof(*app));
    char(*emails)[40] = calloc(N + GONE, sizeof(*emails));
    char(*ids)[24] = calloc(N + GONE, sizeof(*ids));
    assert_non_null(recs);
    assert_non_null(emails);
    size_t n_app = 0;
    for (size_t i = 0; i < N + GONE; i++) {
        size_t k = (i * 7919) % (N + GONE); /* a permutation: input in no order */
        snprintf(emails[i], sizeof(emails[i]), "member%06zu@example.com", k);
        snprintf(ids[i], sizeof(ids[i]), "c-%zu", k);
        if (k >= N) {
            app[n_app++] = applied(emails[i], ids[i], "F", "L", APPLIED_ON_LIST);
            continue;
        }
        recs[k] = person(ids[i], emails[i], "F", "L");
        members[k] = (struct plan_member){&recs[k], (int64_t)k};
        if (k % 2 == 0)
            app[n_app++] =
                applied(emails[i], ids[i], "F", k % 20 == 0 ? "Old" : "L", APPLIED_ON_LIST);
    }
    struct plan_group g = synced_group();
    struct plan p;
    struct plan_error err;
    assert_int_equal(plan_build(&g, members, N, app, n_app, NULL, &p, &err), 0);

    assert_int_equal(p.counts.in_list, N);
    assert_int_equal(p.pending.imports, N / 2 + N / 20);
    assert_int_equal(p.pending.removes, GONE);
    size_t removes = 0, imports = 0;
    for (size_t i = 0; i < p.n_ops; i++) {
        if (p.ops[i].type == PLAN_OP_REMOVE)
            removes += p.ops[i].n_contact_ids;
        if (p.ops[i].type == PLAN_OP_IMPORT) {
            imports += p.ops[i].n_contacts;
            assert_true(p.ops[i].n_contacts <= 40000);
            assert_true(p.ops[i].json_bytes < 4000000);
        }
    }
    assert_int_equal(removes, GONE);
    assert_int_equal(imports, N / 2 + N / 20);
    plan_free(&p);
    free(recs);
    free(members);
    free(app);
    free(emails);
    free(ids);
}

/* ---- merged removals (plan_merge_removes) --------------------------------- */

/* "c1,c2>0,1" per request: its contact ids, then its list indices. */
static void batches_text(const struct plan_merged_removes *m, char *out, size_t size)
{
    size_t len = 0;
    out[0] = '\0';
    for (size_t k = 0; k < m->n_batches; k++) {
        const struct plan_remove_batch *b = &m->batches[k];
        len += (size_t)snprintf(out + len, size - len, "%s", k ? " | " : "");
        for (size_t i = 0; i < b->n_contact_ids; i++)
            len += (size_t)snprintf(out + len, size - len, "%s%s", i ? "," : "", b->contact_ids[i]);
        len += (size_t)snprintf(out + len, size - len, ">");
        for (size_t i = 0; i < b->n_lists; i++)
            len += (size_t)snprintf(out + len, size - len, "%s%zu", i ? "," : "", b->lists[i]);
    }
}

static void test_merge_removes_of_disjoint_groups_is_one_request(void **state)
{
    (void)state;
    /* Three lists; each loses its own members, who are on no other list. */
    const char *held0[] = {"a@x.org", "b@x.org", "keep0@x.org"};
    const char *held1[] = {"c@x.org", "keep1@x.org"};
    const char *held2[] = {"d@x.org", "keep2@x.org"};
    struct plan_round_list lists[] = {{held0, 3}, {held1, 2}, {held2, 2}};
    struct plan_leave leaves[] = {{"id-b", "b@x.org", 0},
                                  {"id-a", "a@x.org", 0},
                                  {"id-c", "c@x.org", 1},
                                  {"id-d", "d@x.org", 2}};
    struct plan_merged_removes m;
    struct plan_error err;
    assert_int_equal(plan_merge_removes(leaves, 4, lists, 3, 500, 50, &m, &err), 0);
    char text[256];
    batches_text(&m, text, sizeof text);
    assert_string_equal(text, "id-a,id-b,id-c,id-d>0,1,2");
    plan_merged_removes_free(&m);
}

static void test_merge_removes_never_takes_a_contact_off_a_list_it_stays_on(void **state)
{
    (void)state;
    /* both@ is in groups 0 and 1 and leaves only 0; c@ leaves 1. Sending both
     * in one request for lists 0,1 would take both@ off list 1. */
    const char *held0[] = {"both@x.org"};
    const char *held1[] = {"both@x.org", "c@x.org"};
    struct plan_round_list lists[] = {{held0, 1}, {held1, 2}};
    struct plan_leave leaves[] = {{"id-both", "both@x.org", 0}, {"id-c", "c@x.org", 1}};
    struct plan_merged_removes m;
    assert_int_equal(plan_merge_removes(leaves, 2, lists, 2, 500, 50, &m, NULL), 0);
    char text[256];
    batches_text(&m, text, sizeof text);
    assert_string_equal(text, "id-both>0 | id-c>1");
    plan_merged_removes_free(&m);

    /* A member importing to list 1 (held there) is protected the same way. */
    const char *held1b[] = {"both@x.org"};
    struct plan_round_list lists_b[] = {{NULL, 0}, {held1b, 1}};
    struct plan_leave leaves_b[] = {{"id-both", "both@x.org", 0}, {"id-e", "e@x.org", 1}};
    assert_int_equal(plan_merge_removes(leaves_b, 2, lists_b, 2, 500, 50, &m, NULL), 0);
    batches_text(&m, text, sizeof text);
    assert_string_equal(text, "id-both>0 | id-e>1");
    plan_merged_removes_free(&m);
}

static void test_merge_removes_contact_leaving_two_lists_goes_once(void **state)
{
    (void)state;
    const char *held0[] = {"a@x.org"};
    const char *held1[] = {"a@x.org", "b@x.org"};
    struct plan_round_list lists[] = {{held0, 1}, {held1, 2}};
    struct plan_leave leaves[] = {{"id-a", "a@x.org", 1},
                                  {"id-a", "a@x.org", 0},
                                  {"id-b", "b@x.org", 1},
                                  {"id-a", "a@x.org", 0}};
    struct plan_merged_removes m;
    assert_int_equal(plan_merge_removes(leaves, 4, lists, 2, 500, 50, &m, NULL), 0);
    char text[256];
    batches_text(&m, text, sizeof text);
    assert_string_equal(text, "id-a,id-b>0,1");
    plan_merged_removes_free(&m);
}

static void test_merge_removes_respects_request_limits(void **state)
{
    (void)state;
    struct plan_round_list lists[3] = {{NULL, 0}, {NULL, 0}, {NULL, 0}};
    struct plan_leave leaves[5] = {{"id-1", "1@x.org", 0},
                                   {"id-2", "2@x.org", 1},
                                   {"id-3", "3@x.org", 2},
                                   {"id-4", "4@x.org", 0},
                                   {"id-5", "5@x.org", 1}};
    struct plan_merged_removes m;
    char text[256];
    assert_int_equal(plan_merge_removes(leaves, 5, lists, 3, 2, 50, &m, NULL), 0);
    batches_text(&m, text, sizeof text);
    assert_string_equal(text, "id-1,id-2>0,1 | id-3,id-4>0,2 | id-5>1");
    plan_merged_removes_free(&m);
    assert_int_equal(plan_merge_removes(leaves, 5, lists, 3, 500, 2, &m, NULL), 0);
    batches_text(&m, text, sizeof text);
    assert_string_equal(text, "id-1,id-2,id-4,id-5>0,1 | id-3>2");
    plan_merged_removes_free(&m);

    struct plan_leave bad = {"id-9", "9@x.org", 3};
    struct plan_error err;
    assert_int_equal(plan_merge_removes(&bad, 1, lists, 3, 500, 50, &m, &err), -1);
    assert_string_equal(err.code, "invalid_input");
    assert_int_equal(m.n_batches, 0);
}

/* ---- mapped fields (§12) -------------------------------------------------- */

static const struct plan_field FIELD_ITEMS[] = {
    {.novi = "CustomFields.Chapter", .column = "cf:Chapter", .max_chars = 255},
    {.novi = "Phone", .column = "phone", .max_chars = 5},
    {.novi = "BirthMonth", .column = "birthday_month", .max_chars = 2, .int_max = 12},
    {.novi = "Wedding", .column = "anniversary", .max_chars = 10, .date = true},
};
static const struct plan_fields FIELDS_V1 = {4, FIELD_ITEMS, "v1"};
static const struct plan_fields FIELDS_V2 = {4, FIELD_ITEMS, "v2"};

/* A person with extra fields (sorted by name, as webhook.c keeps them). */
static struct member_record with_fields(struct member_record m, struct member_field *f, size_t n)
{
    m.fields = f;
    m.n_fields = n;
    return m;
}

/* The digest plan_build computes for values (n = FIELDS_V1.n). */
static void digest_of(const struct plan_fields *pf, const char *const *values, char out[17])
{
    plan_fields_digest(pf, values, out);
    assert_int_equal(strlen(out), 16);
}

static void test_field_change_alone_is_imported_with_its_values(void **state)
{
    (void)state;
    struct plan_group g = synced_group();
    g.fields = &FIELDS_V1;
    struct member_field f[] = {{(char *)"BirthMonth", (char *)"07"},
                               {(char *)"CustomFields.Chapter", (char *)"North"},
                               {(char *)"Phone", (char *)"555-0100"},
                               {(char *)"Wedding", (char *)"June"}};
    struct member_record recs[] = {with_fields(person("m-1", "ann@x.org", "Ann", "Lee"), f, 4)};
    /* as applied before: Chapter was "South" */
    const char *before[] = {"South", "555-0", "7", NULL};
    char old[17];
    digest_of(&FIELDS_V1, before, old);
    struct applied_contact app[] = {applied("ann@x.org", "c-1", "Ann", "Lee", APPLIED_ON_LIST)};
    app[0].fields = old;
    struct plan p;
    plan_for(&g, recs, 1, app, 1, NULL, &p);

    assert_int_equal(p.n_ops, 1);
    assert_contact(&p.ops[0], 0, "ann@x.org", "Ann", "Lee");
    const struct plan_contact *c = &p.ops[0].contacts[0];
    assert_int_equal(c->n_fields, 4);
    assert_string_equal(c->columns[0], "cf:Chapter");
    assert_string_equal(c->values[0], "North");
    assert_string_equal(c->values[1], "555-0"); /* cut to the column's 5 characters */
    assert_string_equal(c->values[2], "7");     /* a month, as a whole number */
    assert_null(c->values[3]);                  /* not a date: left out */
    assert_int_equal(p.pending.imports, 1);
    assert_int_equal(p.pending.removes, 0);
    assert_reason(&p, 0, PLAN_IN_LIST, true);
    char now[17];
    const char *after[] = {"North", "555-0", "7", NULL};
    digest_of(&FIELDS_V1, after, now);
    assert_string_equal(c->fields, now);
    plan_free(&p);

    /* once applied with that digest, nothing is left to do */
    app[0].fields = now;
    plan_for(&g, recs, 1, app, 1, NULL, &p);
    assert_int_equal(p.n_ops, 0);
    assert_reason(&p, 0, PLAN_IN_LIST, false);
    plan_free(&p);
}

static void test_field_values_missing_text_clears_and_bad_numbers_stay_out(void **state)
{
    (void)state;
    struct plan_group g = synced_group();
    g.fields = &FIELDS_V1;
    struct member_field f[] = {{(char *)"BirthMonth", (char *)"13"},
                               {(char *)"Wedding", (char *)"2020-06-01"}};
    struct member_record recs[] = {with_fields(person("m-1", "ann@x.org", "Ann", "Lee"), f, 2)};
    struct plan p;
    plan_for(&g, recs, 1, NULL, 0, NULL, &p);
    const struct plan_contact *c = &p.ops[0].contacts[0];
    assert_string_equal(c->values[0], ""); /* no Chapter: "" clears it in CC */
    assert_string_equal(c->values[1], "");
    assert_null(c->values[2]); /* month 13 */
    assert_string_equal(c->values[3], "2020-06-01");
    plan_free(&p);
}

static void test_changed_mapping_reimports_every_synced_contact_once(void **state)
{
    (void)state;
    struct plan_group g = synced_group();
    g.fields = &FIELDS_V1;
    struct member_record recs[] = {person("m-1", "ann@x.org", "Ann", "Lee"),
                                   person("m-2", "bob@x.org", "Bob", "Ng")};
    const char *none[] = {"", "", NULL, NULL};
    char v1[17];
    digest_of(&FIELDS_V1, none, v1);
    struct applied_contact app[] = {applied("ann@x.org", "c-1", "Ann", "Lee", APPLIED_ON_LIST),
                                    applied("bob@x.org", "c-2", "Bob", "Ng", APPLIED_ON_LIST)};
    app[0].fields = app[1].fields = v1;
    struct plan p;
    plan_for(&g, recs, 2, app, 2, NULL, &p);
    assert_int_equal(p.n_ops, 0); /* same mapping, same values: no request */
    plan_free(&p);

    g.fields = &FIELDS_V2; /* the admin changed the mapping: same values, new version */
    plan_for(&g, recs, 2, app, 2, NULL, &p);
    assert_int_equal(p.n_ops, 1);
    assert_int_equal(p.ops[0].n_contacts, 2);
    assert_int_equal(p.pending.removes, 0);
    plan_free(&p);
}

static void test_shared_email_gets_the_duplicate_winners_fields(void **state)
{
    (void)state;
    struct plan_group g = synced_group();
    g.fields = &FIELDS_V1;
    struct member_field early[] = {{(char *)"CustomFields.Chapter", (char *)"First"}};
    struct member_field late[] = {{(char *)"CustomFields.Chapter", (char *)"Second"}};
    /* joined at 100 and 200: the earlier join wins the email, and its fields go */
    struct member_record recs[] = {with_fields(company("m-0", "x@x.org", "Acme"), late, 1),
                                   with_fields(person("m-2", "x@x.org", "Z", "Z"), early, 1),
                                   with_fields(person("m-3", "x@x.org", "Y", "Y"), late, 1)};
    struct plan p;
    plan_for(&g, recs, 3, NULL, 0, NULL, &p);
    assert_int_equal(p.ops[0].n_contacts, 1);
    assert_contact(&p.ops[0], 0, "x@x.org", "Z", "Z");
    assert_string_equal(p.ops[0].contacts[0].values[0], "First");
    plan_free(&p);
}

static void test_without_mapped_fields_nothing_changes(void **state)
{
    (void)state;
    struct plan_group g = synced_group(); /* fields NULL */
    struct member_field f[] = {{(char *)"CustomFields.Chapter", (char *)"North"}};
    struct member_record recs[] = {with_fields(person("m-1", "ann@x.org", "Ann", "Lee"), f, 1)};
    struct applied_contact app[] = {applied("ann@x.org", "c-1", "Ann", "Lee", APPLIED_ON_LIST)};
    struct plan p;
    plan_for(&g, recs, 1, app, 1, NULL, &p);
    assert_int_equal(p.n_ops, 0);
    plan_free(&p);
    plan_for(&g, recs, 1, NULL, 0, NULL, &p);
    assert_int_equal(p.ops[0].contacts[0].n_fields, 0);
    assert_string_equal(p.ops[0].contacts[0].fields, "");
    plan_free(&p);
}

static void test_import_chunks_count_the_fields_bytes(void **state)
{
    (void)state;
    struct plan_group g = synced_group();
    g.fields = &FIELDS_V1;
    char big[256];
    memset(big, 'v', 255);
    big[255] = '\0';
    struct member_field f[] = {{(char *)"CustomFields.Chapter", big}};
    struct member_record recs[] = {with_fields(person("m-1", "a@x.org", "A", "A"), f, 1),
                                   with_fields(person("m-2", "b@x.org", "B", "B"), f, 1)};
    /* room for one contact with its 255-byte field, not for two */
    struct plan_limits lim = {
        .import_max_contacts = 100, .import_max_bytes = 800, .remove_max_ids = 500};
    struct plan p;
    plan_for(&g, recs, 2, NULL, 0, &lim, &p);
    assert_int_equal(p.n_ops, 2);
    assert_int_equal(p.ops[0].n_contacts, 1);
    assert_int_equal(p.ops[1].n_contacts, 1);
    plan_free(&p);
    lim.import_max_bytes = 4000;
    plan_for(&g, recs, 2, NULL, 0, &lim, &p);
    assert_int_equal(p.n_ops, 1);
    plan_free(&p);
}

/* ---- learning contact ids ---- */

static void test_learning_ids_reads_the_lists_only_when_that_takes_no_more_requests(void **state)
{
    (void)state;
    /* 10,000 contacts: 20 pages. 19 lookups are fewer; at 20 the read ties and
     * learns every id. */
    assert_false(plan_learn_by_reading(1, 10000, 500));
    assert_false(plan_learn_by_reading(19, 10000, 500));
    assert_true(plan_learn_by_reading(20, 10000, 500));
    assert_true(plan_learn_by_reading(500, 10000, 500));
    /* a list of 4: one page, the same as one lookup */
    assert_true(plan_learn_by_reading(1, 4, 500));
    assert_false(plan_learn_by_reading(0, 4, 500));    /* nothing to learn: nothing read */
    assert_false(plan_learn_by_reading(2, 1001, 500)); /* 3 pages */
    assert_true(plan_learn_by_reading(3, 1001, 500));
}

static void test_first_syncs_read_back_at_once_only_at_one_request_a_list(void **state)
{
    (void)state;
    bool read[5];
    /* one list of 10,000 (first:10000): 20 pages for one list: not now */
    size_t big[] = {10000};
    assert_int_equal(plan_first_sync_readback(big, 1, 500, read), 0);
    assert_false(read[0]);
    /* one list of 1,000: 2 pages > 1 */
    size_t thousand[] = {1000};
    assert_int_equal(plan_first_sync_readback(thousand, 1, 500, read), 0);
    /* one list of 500, and of 4: a page each */
    size_t page[] = {500}, four[] = {4};
    assert_int_equal(plan_first_sync_readback(page, 1, 500, read), 1);
    assert_true(read[0]);
    assert_int_equal(plan_first_sync_readback(four, 1, 500, read), 1);
    /* ten lists of 100 (the burst bench's set-up): 2 pages for 10 lists */
    size_t ten[10] = {100, 100, 100, 100, 100, 100, 100, 100, 100, 100};
    bool read10[10];
    assert_int_equal(plan_first_sync_readback(ten, 10, 500, read10), 10);
    /* the small lists are read together, the large one waits: 100, 300, 600 and
     * 800 (1,800 contacts) take 4 pages for 4 lists; with 5,000, 14 for 5 */
    size_t mixed[] = {5000, 600, 100, 300, 800};
    assert_int_equal(plan_first_sync_readback(mixed, 5, 500, read), 4);
    assert_false(read[0]);
    assert_true(read[1] && read[2] && read[3] && read[4]);
    size_t none[] = {0};
    assert_int_equal(plan_first_sync_readback(none, 0, 500, read), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sync_on_without_list_creates_list_only),
        cmocka_unit_test(test_first_sync_imports_every_usable_member),
        cmocka_unit_test(test_join_imports_one_contact),
        cmocka_unit_test(test_leave_removes_by_contact_id),
        cmocka_unit_test(test_email_change_removes_old_and_imports_new),
        cmocka_unit_test(test_email_case_and_spaces_are_not_a_change),
        cmocka_unit_test(test_name_change_reimports),
        cmocka_unit_test(test_company_record_uses_company_as_first_name),
        cmocka_unit_test(test_names_cut_to_cc_limit_of_50_characters),
        cmocka_unit_test(test_duplicate_person_beats_company),
        cmocka_unit_test(test_duplicate_earliest_join_wins),
        cmocka_unit_test(test_duplicate_tie_smaller_unique_id_wins),
        cmocka_unit_test(test_duplicate_loser_leaving_changes_nothing),
        cmocka_unit_test(test_do_not_email_not_imported_and_removed_if_on_list),
        cmocka_unit_test(test_do_not_email_winner_keeps_mailbox_off_list),
        cmocka_unit_test(test_unsubscribed_never_reimported),
        cmocka_unit_test(test_rejected_not_retried_until_names_change),
        cmocka_unit_test(test_email_classify_rules),
        cmocka_unit_test(test_email_normalize_trims_and_lowercases),
        cmocka_unit_test(test_missing_and_invalid_emails_counted),
        cmocka_unit_test(test_email_longer_than_import_limit_counted_rejected_not_imported),
        cmocka_unit_test(test_group_and_list_states),
        cmocka_unit_test(test_toggle_off_deletes_list),
        cmocka_unit_test(test_group_deleted_deletes_list),
        cmocka_unit_test(test_list_deleted_in_cc_plans_nothing),
        cmocka_unit_test(test_no_change_plans_no_op),
        cmocka_unit_test(test_import_chunks_at_contact_and_byte_limits),
        cmocka_unit_test(test_json_estimate_is_not_below_json_c_output),
        cmocka_unit_test(test_remove_chunks_at_500),
        cmocka_unit_test(test_unknown_contact_id_needs_learn),
        cmocka_unit_test(test_counts_sum_to_members),
        cmocka_unit_test(test_replan_with_shuffled_input_gives_same_ops),
        cmocka_unit_test(test_bad_applied_state_is_refused),
        cmocka_unit_test(test_large_group_plans_in_one_pass),
        cmocka_unit_test(test_merge_removes_of_disjoint_groups_is_one_request),
        cmocka_unit_test(test_merge_removes_never_takes_a_contact_off_a_list_it_stays_on),
        cmocka_unit_test(test_merge_removes_contact_leaving_two_lists_goes_once),
        cmocka_unit_test(test_merge_removes_respects_request_limits),
        cmocka_unit_test(test_field_change_alone_is_imported_with_its_values),
        cmocka_unit_test(test_field_values_missing_text_clears_and_bad_numbers_stay_out),
        cmocka_unit_test(test_changed_mapping_reimports_every_synced_contact_once),
        cmocka_unit_test(test_shared_email_gets_the_duplicate_winners_fields),
        cmocka_unit_test(test_without_mapped_fields_nothing_changes),
        cmocka_unit_test(test_import_chunks_count_the_fields_bytes),
        cmocka_unit_test(test_learning_ids_reads_the_lists_only_when_that_takes_no_more_requests),
        cmocka_unit_test(test_first_syncs_read_back_at_once_only_at_one_request_a_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
