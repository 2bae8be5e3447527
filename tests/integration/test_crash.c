/*
 * test_crash.c (integration) - the group lease and SIGKILL at each point of a
 * sync: real redis-server, the Constant Contact simulator (ccsim) and ccsyncd,
 * driven over HTTP with signed webhooks. (test_resilience.c has the crashes of
 * big syncs, restarts, faults and concurrency; see there for what "exact" means.)
 *
 *   g) the group lease: one process's import (then removal) of a group is in
 *      flight, slowed by ccsim, when a change makes the group due again; the
 *      other workers of both processes must leave it alone (never two changes
 *      to one list in flight at once, each row imported and each contact
 *      removed once)
 *   h) SIGKILL while a list create is in flight (ccsim creates it after the
 *      death: adopted, not "NAME - 1"); while a removal is in flight, and while
 *      an accepted removal's activity runs; while one removal for two groups'
 *      lists is in flight; between two groups' imports; while a list delete is
 *      in flight; while an import is in flight and again while the next
 *      process recovers (reads the list back); once an import is accepted and
 *      again while the next process waits for its activity. A process killed
 *      holding a group's lease keeps it from a live second process until the
 *      lease expires, then the live one finishes the group.
 *
 * The tests of (h) kill ccsyncd up to twice each; they wait until ccsim has
 * answered what was in flight and then do what the lease's expiry would
 * (expire_dead_leases: the dead holder's lease expires, the group it parked is
 * due), asserting that the dead process did hold the group's lease.
 *
 * Crash points are made with ccsim's per-endpoint delays (/__sim/delays): the
 * request has arrived (ccsim's counter) but is not processed yet when ccsyncd
 * is killed, and takes effect in CC afterwards. Redis is read directly (peek.h)
 * only to check the journal the dead process left (what it had in flight) and
 * the lease it held. Process logs go to /tmp/ccsync-test-crash-<pid>/.
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
#include "members.h"
#include "novi.h"
#include "peek.h"
#include "stack.h"
#include "status.h"
#include "testsupport.h"

/* ---- what a killed process left: its journal, its leases ---- */

/* What the lease's expiry would do after a holder's death, done now (peek.h). */
static void expire_dead_leases(const char *g, bool only_g)
{
    redisContext *c = peek_connect(stack.redis_port);
    peek_expire_dead_leases(c, ASSOC, g, only_g);
    redisFree(c);
}

/* Whether a journal names an activity id: "activity", or one of "activities". */
static bool journal_has_activity(json_object *j)
{
    const char *a = jstr(j, "activity");
    bool has = a && a[0];
    json_object *all = jget(j, "activities");
    for (size_t i = 0;
         all && json_object_is_type(all, json_type_array) && i < json_object_array_length(all);
         i++) {
        const char *x = json_object_get_string(json_object_array_get_idx(all, i));
        has = has || (x && x[0]);
    }
    return has;
}

/* Asserts the journal ccsyncd left for group g (the CC request it had in flight):
 * its op, and for a create the list name, else whether the activity id was
 * written down (want_activity) or not yet. */
static void assert_journal(const char *g, const char *op, const char *name, bool want_activity)
{
    redisContext *c = peek_connect(stack.redis_port);
    json_object *j = peek_journal(c, ASSOC, g);
    redisFree(c);
    const char *got_op = jstr(j, "op");
    bool ok = got_op && strcmp(got_op, op) == 0;
    if (ok && name)
        ok = jstr(j, "name") && strcmp(jstr(j, "name"), name) == 0;
    else if (ok)
        ok = journal_has_activity(j) == want_activity;
    if (!ok)
        fail_msg("journal of %s at the kill: %s; wanted op %s%s%s", g,
                 j ? json_object_to_json_string(j) : "(none)", op,
                 name            ? " for "
                 : want_activity ? " with its activity"
                                 : " without an activity",
                 name ? name : "");
    json_object_put(j);
}

/* ==== g) one group, one worker at a time: the lease across two processes ==== */

#define REMOVE_PATH "/v3/activities/remove_list_memberships"

static int setup_lease(void **state)
{
    (void)state;
    struct stack_options o = {
        .sim_rate = 0, .cc_rate = 100, .activity_ms = 300, .workers = 2, .n_ccsyncd = 2};
    return stack_start("test-crash", &o);
}

/* Members [0, n) of prefix, minus the leavers [0, gone), plus the joiner n when
 * joined: the emails that belong on the list, and the GroupStatus counts. */
static void expect_members(const char *prefix, int n, int gone, bool joined, struct strv *want,
                           int *members, int *no, int *inv)
{
    *members = *no = *inv = 0;
    for (int k = gone; k < n + (joined ? 1 : 0); k++) {
        bool ne, iv;
        (*members)++;
        if (gen_special(k, &ne, &iv)) {
            *no += ne;
            *inv += iv;
            continue;
        }
        char email[64];
        gen_email(prefix, k, email, sizeof email);
        strv_add(want, email);
    }
}

/* The group is synced and its list (named name_want) holds exactly members
 * [gone, n) of prefix, plus n when joined; the account's active lists are
 * all_lists (sorted, comma-separated; NULL: that one list). */
static void assert_group_exact_among(const char *g, const char *name_want, const char *all_lists,
                                     const char *prefix, int n, int gone, bool joined)
{
    long status;
    json_object *gs = get_group(g, &status);
    assert_int_equal(status, 200);
    assert_state_clean(gs, "synced");
    struct strv want = {0};
    int members, no, inv;
    expect_members(prefix, n, gone, joined, &want, &members, &no, &inv);
    assert_counts(gs, members, no, inv, 0, 0, 0, 0, members - no - inv);
    char list_id[128], name[128];
    gs_list(gs, list_id, name, sizeof list_id);
    json_object_put(gs);
    assert_string_equal(name, name_want);
    json_object *st = sim("GET", "/__sim/state", NULL);
    char names[512];
    assert_string_equal(cc_list_names(st, names, sizeof names), all_lists ? all_lists : name_want);
    assert_list_exact(st, list_id, &want);
    strv_free(&want);
    json_object_put(st);
}

static void assert_group_exact(const char *g, const char *name_want, const char *prefix, int n,
                               int gone, bool joined)
{
    assert_group_exact_among(g, name_want, NULL, prefix, n, gone, joined);
}

/*
 * Process A is in the middle of group G's import (ccsim takes 3 s to answer it)
 * when a member joins G, which makes G due again at once; the other workers of
 * A and of process B see it due and must leave it to A's lease. Then the same
 * with a removal in flight and a second member leaving. Without the lease a
 * second worker recovers A's journal, reads the list back (A's request has not
 * landed yet) and sends the whole import, or the first removal again, while A's
 * is still in flight.
 */
static void test_lease_one_worker_per_group_across_two_processes(void **state)
{
    (void)state;
    const int n = 40;
    sim_delay("POST " IMPORT_PATH, 3000, 0);
    send_group_at(0, "G", "Lease Group", true, 1);
    char *data = gen_members_data("G", "l", 0, n);
    send_event_at(1, "group.members", data, 2);
    free(data);

    /* A's import is in flight: member n joins (sent to the other process). */
    wait_endpoint("POST " IMPORT_PATH, 1, WAIT_MS);
    send_gen_member_at(1, "G", "l", n, true, 3);
    json_object_put(wait_settled("G", 2 * WAIT_MS));
    assert_no_overlapping_changes();
    long long sent = cc_endpoint("POST " IMPORT_PATH);
    if (sent != 2)
        fail_msg("%lld imports sent, wanted 2: the snapshot, then the joiner", sent);
    assert_group_exact("G", "Lease Group", "l", n, 0, true);

    /* A removal in flight: member 0 leaves, and while CC is removing it, member 1. */
    sim_void("DELETE", "/__sim/delays", NULL);
    sim_delay("POST " REMOVE_PATH, 3000, 0);
    send_gen_member_at(0, "G", "l", 0, false, 4);
    wait_endpoint("POST " REMOVE_PATH, 1, WAIT_MS);
    send_gen_member_at(1, "G", "l", 1, false, 5);
    json_object_put(wait_settled("G", 2 * WAIT_MS));
    sim_void("DELETE", "/__sim/delays", NULL);
    assert_no_overlapping_changes();
    sent = cc_endpoint("POST " REMOVE_PATH);
    if (sent != 2)
        fail_msg("%lld removals sent, wanted 2: member 0, then member 1", sent);

    /* Never two changes to the list in flight at once. */
    assert_true(assert_no_overlapping_changes() >= 5); /* create, 2 imports, 2 removals */
    struct accepted lists, imports, removes;
    accepted_read("POST", "/v3/contact_lists", &lists);
    accepted_read("POST", IMPORT_PATH, &imports);
    accepted_read("POST", REMOVE_PATH, &removes);
    assert_int_equal(lists.ok, 1);
    /* Each usable member's row once: the snapshot's import, then the joiner's. */
    assert_int_equal(imports.ok, 2);
    assert_no_pair_twice(&imports);
    assert_int_equal(imports.pairs.n, (size_t)(n - gen_no_email(0, n) - gen_invalid(0, n) + 1));
    /* Each leaver removed once, one request each. */
    assert_int_equal(removes.ok, 2);
    assert_no_pair_twice(&removes);
    assert_int_equal(removes.pairs.n, 2);
    strv_free(&lists.pairs);
    strv_free(&imports.pairs);
    strv_free(&removes.pairs);
    assert_group_exact("G", "Lease Group", "l", n, 2, true);
}

/*
 * Process A dies with group G's import in flight. Process B, alive on the same
 * Redis, gets a change to G at once: it must leave G alone while A's lease
 * lives (no CC request at all), and finish G by itself once the lease has
 * expired: recover what A had sent (read the list back, not import again),
 * then add the joiner.
 */
static void
test_lease_of_a_killed_process_holds_until_it_expires_then_the_other_finishes(void **state)
{
    (void)state;
    const int n = 50;
    /* Only A runs when G's first sync starts, so A holds G's lease. */
    stack_kill_ccsyncd(1);
    sim_delay("POST " IMPORT_PATH, 2000, 1);
    char *data = gen_members_data("T", "t", 0, n);
    send_event("group.members", data, 2);
    free(data);
    send_group_at(0, "T", "Takeover", true, 3);
    wait_endpoint("POST " IMPORT_PATH, 1, WAIT_MS);
    stack_kill_ccsyncd(0);
    assert_journal("T", "import", NULL, false);
    wait_answered("POST", IMPORT_PATH, 1, WAIT_MS);

    /* B starts; a member joins G through it: G is due, its lease still A's. */
    assert_int_equal(stack_start_ccsyncd(1), 0);
    snprintf(stack.base[0], sizeof stack.base[0], "%s", stack.base[1]); /* api() talks to B now */
    long long before = cc_requests();
    send_gen_member_at(1, "T", "t", n, true, 4);
    wait_folded();
    ts_sleep_ms(2000); /* B's workers poll the due group many times meanwhile */
    long long during = cc_requests() - before;
    if (during != 0)
        fail_msg("B sent %lld CC requests while the dead A's lease on the group lived", during);

    /* A's lease expires (fast-forwarded): B syncs G alone. */
    expire_dead_leases("T", true);
    json_object_put(wait_settled("T", WAIT_MS));
    assert_group_exact("T", "Takeover", "t", n, 0, true);
    struct accepted lists, imports;
    accepted_read("POST", "/v3/contact_lists", &lists);
    accepted_read("POST", IMPORT_PATH, &imports);
    assert_int_equal(lists.ok, 1);
    assert_no_pair_twice(&imports);
    assert_int_equal(imports.ok, 2); /* A's snapshot import (landed after A died), B's joiner */
    assert_int_equal(imports.pairs.n, (size_t)(n - gen_no_email(0, n) - gen_invalid(0, n) + 1));
    strv_free(&lists.pairs);
    strv_free(&imports.pairs);
    assert_no_overlapping_changes();
}

/* ==== h) SIGKILL at other points of a sync; a second SIGKILL during recovery ==== */

static int setup_crash(void **state)
{
    (void)state;
    struct stack_options o = {.sim_rate = 0, .cc_rate = 100, .activity_ms = 300, .workers = 2};
    return stack_start("test-crash", &o);
}

/* group.members of [0, n) of prefix for g, folded, then sync turned on. */
static void first_sync_starts(const char *g, const char *name, const char *prefix, int n)
{
    char *data = gen_members_data(g, prefix, 0, n);
    send_event("group.members", data, 2);
    free(data);
    wait_folded();
    send_group_at(0, g, name, true, 3);
}

/* After a SIGKILL: once ccsim has answered what was in flight, what the dead
 * holder's lease expiry would do, then a new ccsyncd. */
static void restart_after_kill(const char *g)
{
    expire_dead_leases(g, false);
    assert_int_equal(stack_start_ccsyncd(0), 0);
}

static void test_sigkill_while_list_create_in_flight_adopts_the_list(void **state)
{
    (void)state;
    const int n = 60;
    /* ccsim creates the list 2 s after the request came, when ccsyncd is dead. */
    sim_delay("POST /v3/contact_lists", 2000, 1);
    first_sync_starts("C", "Crash Create", "k", n);
    wait_endpoint("POST /v3/contact_lists", 1, WAIT_MS);
    stack_kill_ccsyncd(0);
    assert_journal("C", "create", "Crash Create", false);
    wait_answered("POST", "/v3/contact_lists", 1, WAIT_MS);

    restart_after_kill("C");
    json_object_put(wait_settled("C", WAIT_MS));

    /* The list the lost request made was adopted: no "Crash Create - 1". */
    assert_group_exact("C", "Crash Create", "k", n, 0, false);
    struct accepted lists, imports;
    accepted_read("POST", "/v3/contact_lists", &lists);
    accepted_read("POST", IMPORT_PATH, &imports);
    assert_int_equal(cc_endpoint("POST /v3/contact_lists"), 1);
    assert_int_equal(lists.ok, 1);
    assert_int_equal(imports.ok, 1);
    assert_no_pair_twice(&imports);
    assert_int_equal(imports.pairs.n, (size_t)(n - gen_no_email(0, n) - gen_invalid(0, n)));
    strv_free(&lists.pairs);
    strv_free(&imports.pairs);
    assert_no_overlapping_changes();
}

static void test_sigkill_while_removal_in_flight_and_while_its_activity_runs(void **state)
{
    (void)state;
    const int n = 60;
    first_sync_starts("R", "Crash Remove", "q", n);
    json_object_put(wait_settled("R", WAIT_MS));

    /* 1. Members 0 and 1 leave; ccsim removes them 2 s after the request came,
     * when ccsyncd is dead. The journal says a removal was sent, not its activity. */
    sim_delay("POST " REMOVE_PATH, 2000, 1);
    send_gen_member_at(0, "R", "q", 0, false, 4);
    send_gen_member_at(0, "R", "q", 1, false, 4);
    wait_endpoint("POST " REMOVE_PATH, 1, WAIT_MS);
    stack_kill_ccsyncd(0);
    assert_journal("R", "remove", NULL, false);
    wait_answered("POST", REMOVE_PATH, 1, WAIT_MS);
    restart_after_kill("R");
    send_gen_member_at(0, "R", "q", 2, false, 5);
    json_object_put(wait_settled("R", WAIT_MS));
    assert_group_exact("R", "Crash Remove", "q", n, 3, false);

    /* 2. Member 3 leaves; CC accepts the removal, its activity takes 6 s, and
     * ccsyncd dies while polling it (the activity id is in the journal). */
    sim_void("POST", "/__sim/config", "{\"activity_ms\":6000}");
    send_gen_member_at(0, "R", "q", 3, false, 6);
    wait_answered("POST", REMOVE_PATH, 3, WAIT_MS);
    long long polls = cc_activity_polls();
    long deadline = ts_now_ms() + WAIT_MS;
    while (cc_activity_polls() <= polls) {
        if (ts_now_ms() > deadline)
            fail_msg("ccsyncd did not ask CC about its removal within %d ms", WAIT_MS);
        ts_sleep_ms(2);
    }
    stack_kill_ccsyncd(0);
    assert_journal("R", "remove", NULL, true);
    assert_true(cc_counter("activities_queued") >= 1); /* unfinished at the kill */
    sim_void("POST", "/__sim/config", "{\"activity_ms\":300}");
    restart_after_kill("R");
    send_gen_member_at(0, "R", "q", n, true, 7);
    json_object_put(wait_settled("R", WAIT_MS));

    assert_group_exact("R", "Crash Remove", "q", n, 4, true);
    struct accepted lists, imports, removes;
    accepted_read("POST", "/v3/contact_lists", &lists);
    accepted_read("POST", IMPORT_PATH, &imports);
    accepted_read("POST", REMOVE_PATH, &removes);
    assert_int_equal(lists.ok, 1);
    assert_int_equal(imports.ok, 2); /* the snapshot, the joiner */
    assert_no_pair_twice(&imports);
    /* members 0 and 1 in the request in flight at the first kill, 2, then 3: each
     * contact removed once, none sent again after a crash */
    assert_no_pair_twice(&removes);
    assert_int_equal(removes.ok, 3);
    assert_int_equal(removes.pairs.n, 4);
    strv_free(&lists.pairs);
    strv_free(&imports.pairs);
    strv_free(&removes.pairs);
    assert_no_overlapping_changes();
}

static void test_second_sigkill_during_recovery_still_one_import(void **state)
{
    (void)state;
    const int n = 120;
    /* 1. Killed while the first import is in flight: ccsim accepts it 2 s later. */
    sim_delay("POST " IMPORT_PATH, 2000, 1);
    first_sync_starts("D", "Crash Twice", "d", n);
    wait_endpoint("POST " IMPORT_PATH, 1, WAIT_MS);
    stack_kill_ccsyncd(0);
    assert_journal("D", "import", NULL, false);
    wait_answered("POST", IMPORT_PATH, 1, WAIT_MS);

    /* 2. Killed again while recovering: reading the list back takes ccsim 3 s. */
    sim_delay("GET /v3/contacts", 3000, 1);
    restart_after_kill("D");
    wait_endpoint("GET /v3/contacts", 1, WAIT_MS);
    stack_kill_ccsyncd(0);
    assert_journal("D", "import", NULL, false);

    /* 3. The third process recovers; a member joins and one leaves meanwhile. */
    restart_after_kill("D");
    send_gen_member_at(0, "D", "d", n, true, 4);
    send_gen_member_at(0, "D", "d", 0, false, 4);
    json_object_put(wait_settled("D", WAIT_MS));

    assert_group_exact("D", "Crash Twice", "d", n, 1, true);
    struct accepted lists, imports;
    accepted_read("POST", "/v3/contact_lists", &lists);
    accepted_read("POST", IMPORT_PATH, &imports);
    assert_int_equal(lists.ok, 1);
    /* the snapshot's import once (never resent after either crash), the joiner */
    assert_int_equal(imports.ok, 2);
    assert_int_equal(imports.big_imports, 0);
    assert_no_pair_twice(&imports);
    assert_int_equal(imports.pairs.n, (size_t)(n - gen_no_email(0, n) - gen_invalid(0, n) + 1));
    strv_free(&lists.pairs);
    strv_free(&imports.pairs);
    assert_no_overlapping_changes();
}

static void test_second_sigkill_while_recovery_waits_for_the_recorded_import(void **state)
{
    (void)state;
    const int n = 120;
    /* 1. Killed once CC has accepted the import and ccsyncd asks about its
     * activity (8 s long, so that it still runs at the second kill even on a
     * slow machine): the journal names the activity. */
    sim_void("POST", "/__sim/config", "{\"activity_ms\":8000}");
    first_sync_starts("W", "Crash Waiting", "w", n);
    wait_answered("POST", IMPORT_PATH, 1, WAIT_MS);
    long long polls = cc_activity_polls();
    long deadline = ts_now_ms() + WAIT_MS;
    while (cc_activity_polls() <= polls) {
        if (ts_now_ms() > deadline)
            fail_msg("ccsyncd did not ask CC about its import within %d ms", WAIT_MS);
        ts_sleep_ms(2);
    }
    stack_kill_ccsyncd(0);
    assert_journal("W", "import", NULL, true);

    /* 2. Killed again while the next process waits for that activity: its first
     * poll of it is delayed 1.5 s, and it dies with the poll in flight. */
    sim_delay("GET /v3/activities/{activity_id}", 1500, 1);
    sim_delay("GET /v3/activities", 1500, 1);
    polls = cc_activity_polls();
    restart_after_kill("W");
    deadline = ts_now_ms() + WAIT_MS;
    while (cc_activity_polls() <= polls) {
        if (ts_now_ms() > deadline)
            fail_msg("the restarted ccsyncd did not ask CC about the import within %d ms", WAIT_MS);
        ts_sleep_ms(2);
    }
    stack_kill_ccsyncd(0);
    assert_journal("W", "import", NULL, true);
    assert_true(cc_counter("activities_queued") >= 1); /* still running at the second kill */
    sim_void("DELETE", "/__sim/delays", NULL);
    sim_void("POST", "/__sim/config", "{\"activity_ms\":300}");

    /* 3. The third process recovers; a member joins and one leaves meanwhile. */
    restart_after_kill("W");
    send_gen_member_at(0, "W", "w", n, true, 4);
    send_gen_member_at(0, "W", "w", 0, false, 4);
    json_object_put(wait_settled("W", WAIT_MS));

    assert_group_exact("W", "Crash Waiting", "w", n, 1, true);
    struct accepted lists, imports;
    accepted_read("POST", "/v3/contact_lists", &lists);
    accepted_read("POST", IMPORT_PATH, &imports);
    assert_int_equal(lists.ok, 1);
    assert_no_pair_twice(&imports);
    assert_int_equal(imports.ok, 2); /* the snapshot once, the joiner */
    assert_int_equal(imports.pairs.n, (size_t)(n - gen_no_email(0, n) - gen_invalid(0, n) + 1));
    strv_free(&lists.pairs);
    strv_free(&imports.pairs);
    assert_no_overlapping_changes();
}

/*
 * Two groups with the same members; two members leave both. One removal names
 * both lists (removals are merged across the groups of a round) and is in
 * flight when ccsyncd dies. The next process recovers both groups: each
 * contact leaves each list once, nothing is sent again.
 */
static void test_sigkill_while_a_removal_for_two_lists_is_in_flight(void **state)
{
    (void)state;
    const int n = 30;
    const char *groups[] = {"M1", "M2"};
    for (int g = 0; g < 2; g++) {
        char *data = gen_members_data(groups[g], "mm", 0, n);
        send_event("group.members", data, 2);
        free(data);
    }
    send_group_at(0, "M1", "Merged One", true, 3);
    send_group_at(0, "M2", "Merged Two", true, 3);
    json_object_put(wait_settled_n(groups, 2, WAIT_MS, NULL));

    sim_delay("POST " REMOVE_PATH, 2000, 1);
    send_gen_member_at(0, "M1", "mm", 0, false, 4); /* "Groups": [] leaves both */
    send_gen_member_at(0, "M1", "mm", 1, false, 4);
    wait_endpoint("POST " REMOVE_PATH, 1, WAIT_MS);
    stack_kill_ccsyncd(0);
    wait_answered("POST", REMOVE_PATH, 1, WAIT_MS);
    struct accepted removes;
    accepted_read("POST", REMOVE_PATH, &removes);
    fprintf(stderr,
            "test_resilience: the removal in flight at the kill: %zu (list, contact) pairs\n",
            removes.pairs.n);
    strv_free(&removes.pairs);
    assert_journal("M1", "remove", NULL, false);
    assert_journal("M2", "remove", NULL, false);
    restart_after_kill("M1");
    json_object_put(wait_settled_n(groups, 2, WAIT_MS, NULL));

    assert_group_exact_among("M1", "Merged One", "Merged One,Merged Two", "mm", n, 2, false);
    assert_group_exact_among("M2", "Merged Two", "Merged One,Merged Two", "mm", n, 2, false);
    struct accepted lists, imports;
    accepted_read("POST", "/v3/contact_lists", &lists);
    accepted_read("POST", IMPORT_PATH, &imports);
    accepted_read("POST", REMOVE_PATH, &removes);
    assert_int_equal(lists.ok, 2);
    assert_int_equal(imports.ok, 2); /* one per list */
    assert_no_pair_twice(&imports);
    assert_no_pair_twice(&removes);
    assert_int_equal(removes.pairs.n, 4); /* 2 contacts x 2 lists, once each */
    strv_free(&lists.pairs);
    strv_free(&imports.pairs);
    strv_free(&removes.pairs);
    assert_no_overlapping_changes();
}

/*
 * Two groups' first syncs: ccsim takes 2 s to answer each import. ccsyncd dies
 * when the second import has arrived (the first answered, its activity maybe
 * written down; the second in flight). Both land; the next process recovers
 * both lists without importing again.
 */
static void test_sigkill_between_two_groups_imports(void **state)
{
    (void)state;
    const int n = 40;
    const char *groups[] = {"I1", "I2"};
    const char *prefix[] = {"ia", "ib"};
    sim_delay("POST " IMPORT_PATH, 2000, 2);
    for (int g = 0; g < 2; g++) {
        char *data = gen_members_data(groups[g], prefix[g], 0, n);
        send_event("group.members", data, 2);
        free(data);
    }
    wait_folded();
    send_group_at(0, "I1", "Imports One", true, 3);
    send_group_at(0, "I2", "Imports Two", true, 3);
    wait_endpoint("POST " IMPORT_PATH, 2, WAIT_MS);
    stack_kill_ccsyncd(0);
    wait_answered("POST", IMPORT_PATH, 2, WAIT_MS);
    restart_after_kill(groups[0]);
    json_object_put(wait_settled_n(groups, 2, WAIT_MS, NULL));

    assert_group_exact_among("I1", "Imports One", "Imports One,Imports Two", "ia", n, 0, false);
    assert_group_exact_among("I2", "Imports Two", "Imports One,Imports Two", "ib", n, 0, false);
    struct accepted lists, imports;
    accepted_read("POST", "/v3/contact_lists", &lists);
    accepted_read("POST", IMPORT_PATH, &imports);
    assert_int_equal(lists.ok, 2);
    assert_no_pair_twice(&imports);
    assert_int_equal(imports.ok, 2); /* one per list, never again after the crash */
    assert_int_equal(imports.pairs.n, (size_t)(2 * (n - gen_no_email(0, n) - gen_invalid(0, n))));
    strv_free(&lists.pairs);
    strv_free(&imports.pairs);
    assert_no_overlapping_changes();
}

static void test_sigkill_while_list_delete_in_flight_list_deleted_once(void **state)
{
    (void)state;
    const int n = 20;
    first_sync_starts("X", "Crash Delete", "x", n);
    json_object_put(wait_settled("X", WAIT_MS));

    /* Sync is turned off; ccsim deletes the list 2 s after the request came,
     * when ccsyncd is dead (the audit entry is not written yet). */
    sim_delay("DELETE /v3/contact_lists/{list_id}", 2000, 1);
    send_group_at(0, "X", "Crash Delete", false, 5);
    wait_endpoint("DELETE /v3/contact_lists/{list_id}", 1, WAIT_MS);
    stack_kill_ccsyncd(0);
    wait_answered("DELETE", "/v3/contact_lists/", 1, WAIT_MS);
    restart_after_kill("X");
    json_object *gs = wait_settled("X", WAIT_MS);
    const char *st = jstr(gs, "state");
    if (!st || strcmp(st, "disabled") != 0)
        fail_msg("group after the restart: %s", json_object_to_json_string(gs));
    json_object_put(gs);

    json_object *sim_state = sim("GET", "/__sim/state", NULL);
    char names[512];
    assert_string_equal(cc_list_names(sim_state, names, sizeof names), "");
    json_object_put(sim_state);
    char actions[512];
    assert_string_equal(audit_actions("X", actions, sizeof actions),
                        "sync_enabled,list_created,sync_disabled,list_deleted");
    struct accepted lists;
    accepted_read("POST", "/v3/contact_lists", &lists);
    assert_int_equal(lists.ok, 1); /* never recreated */
    strv_free(&lists.pairs);
    assert_no_overlapping_changes();
}

/*
 * Sync is turned off, ccsyncd dies with the list DELETE in flight, sync is
 * turned back on. The delete is journaled, so the next process finds out that
 * it went through (once the account's jobs finish, the list is gone) and makes
 * a new list. Without the journal it found sync on and the old list_id, planned
 * nothing (its applied state still said everyone was on the list) and showed
 * "synced" with a list that no longer existed.
 */
static void
test_sigkill_while_list_delete_in_flight_then_sync_on_again_makes_a_new_list(void **state)
{
    (void)state;
    const int n = 20;
    first_sync_starts("Y", "Crash Toggle", "y", n);
    json_object_put(wait_settled("Y", WAIT_MS));

    sim_delay("DELETE /v3/contact_lists/{list_id}", 3000, 1);
    send_group_at(0, "Y", "Crash Toggle", false, 5);
    wait_endpoint("DELETE /v3/contact_lists/{list_id}", 1, WAIT_MS);
    send_group_at(0, "Y", "Crash Toggle", true, 6);
    wait_folded();
    stack_kill_ccsyncd(0);
    wait_answered("DELETE", "/v3/contact_lists/", 1, WAIT_MS);
    restart_after_kill("Y");
    json_object *gs = wait_settled("Y", WAIT_MS);

    /* The new list is "Crash Toggle", or "Crash Toggle - 1" if the old one's
     * name was not free yet (its delete activity still running). */
    assert_state_clean(gs, "synced");
    char list_id[128], name[128];
    gs_list(gs, list_id, name, sizeof list_id);
    json_object_put(gs);
    json_object *st = sim("GET", "/__sim/state", NULL);
    char names[512];
    cc_list_names(st, names, sizeof names);
    if (strcmp(names, name) != 0 ||
        (strcmp(name, "Crash Toggle") != 0 && strcmp(name, "Crash Toggle - 1") != 0))
        fail_msg("group Y shows list \"%s\" (%s); CC's active lists: \"%s\"", name, list_id, names);
    json_object_put(st);
    assert_group_exact("Y", name, "y", n, 0, false);
    struct accepted lists;
    accepted_read("POST", "/v3/contact_lists", &lists);
    assert_int_equal(lists.ok, 2); /* the first list, deleted; the new one */
    strv_free(&lists.pairs);
    assert_no_overlapping_changes();
}

/*
 * The create is in flight when ccsyncd dies; meanwhile a CC admin makes a list
 * of that name (with a contact of their own), so ccsync's request is refused
 * (409). The next process must not adopt the admin's list (it would put the
 * group's members on it, take the admin's contact off, and delete the whole
 * list when sync is turned off): a list is adopted only when its description
 * carries the reference journaled with the create. Expected: the group gets
 * "NAME - 1" (the name is taken, §1.2), and the admin's list is left as it was.
 */
static void
test_sigkill_while_list_create_in_flight_never_adopts_a_list_ccsync_did_not_make(void **state)
{
    (void)state;
    const int n = 20;
    sim_delay("POST /v3/contact_lists", 2000, 1);
    first_sync_starts("Z", "Crash Taken", "z", n);
    wait_endpoint("POST /v3/contact_lists", 1, WAIT_MS);
    stack_kill_ccsyncd(0);
    sim_void("POST", "/__sim/seed",
             "{\"lists\":[\"Crash Taken\"],\"contacts\":[{\"email\":\"admin@example.org\","
             "\"lists\":[\"Crash Taken\"]}]}");
    wait_answered("POST", "/v3/contact_lists", 1, WAIT_MS);
    restart_after_kill("Z");
    json_object_put(wait_settled("Z", WAIT_MS));

    assert_group_exact_among("Z", "Crash Taken - 1", "Crash Taken,Crash Taken - 1", "z", n, 0,
                             false);
    json_object *st = sim("GET", "/__sim/state", NULL);
    json_object *lists = jget(st, "lists");
    for (size_t i = 0; i < json_object_array_length(lists); i++) {
        json_object *l = json_object_array_get_idx(lists, i);
        if (strcmp(jstr(l, "name"), "Crash Taken") != 0)
            continue;
        struct strv want = {0};
        strv_add(&want, "admin@example.org");
        assert_list_exact(st, jstr(l, "list_id"), &want);
        strv_free(&want);
    }
    json_object_put(st);
}

/*
 * After syncs that sent bulk requests, SIGTERM drains ccsyncd and it exits 0
 * (§2 Shutdown). Under AddressSanitizer the exit status also says whether
 * LeakSanitizer found leaks at exit (it makes the status 1): this is how a
 * round's activity array that was never freed was found.
 */
static void test_sigterm_after_bulk_syncs_exits_0(void **state)
{
    (void)state;
    const int n = 20;
    first_sync_starts("E", "Exit Clean", "e", n);
    json_object_put(wait_settled("E", WAIT_MS));
    send_gen_member_at(0, "E", "e", 0, false, 4);
    send_gen_member_at(0, "E", "e", n, true, 4);
    json_object_put(wait_settled("E", WAIT_MS));
    assert_group_exact("E", "Exit Clean", "e", n, 1, true);

    int status = ts_kill(stack.ccsyncd_pid[0], SIGTERM);
    stack.ccsyncd_pid[0] = 0;
    char log[256];
    stack_log_path(log, sizeof log, "ccsyncd0");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("ccsyncd after SIGTERM: %s %d (wanted exit 0; see %s)",
                 WIFEXITED(status) ? "exit" : "signal",
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), log);
}

/* Activities that run 8 s, so that a SIGTERM finds the round waiting for one. */
/* Member k of the fields test: Title "Dr", CustomFields.Chapter chapter, in group F. */
static const char *field_member(int k, const char *chapter)
{
    char id[16], email[64], extra[256];
    snprintf(id, sizeof id, "f%02d", k);
    snprintf(email, sizeof email, "f%02d@example.org", k);
    snprintf(extra, sizeof extra, ",\"Title\":\"Dr\",\"CustomFields\":{\"Chapter\":\"%s\"}%s",
             chapter, groups_of("F"));
    return member(id, email, "F", id, extra);
}

/* Every contact of F holds chapter in CC's custom field Chapter. */
static void assert_chapters(int n, const char *chapter)
{
    json_object *st = sim("GET", "/__sim/state", NULL);
    json_object *contacts = jget(st, "contacts");
    int seen = 0;
    for (size_t i = 0; i < json_object_array_length(contacts); i++) {
        json_object *c = json_object_array_get_idx(contacts, i);
        assert_string_equal(jstr(jget(c, "custom_fields"), "Chapter"), chapter);
        seen++;
    }
    assert_int_equal(seen, n);
    json_object_put(st);
}

/* §12: a field change's import is in flight when ccsyncd dies (CC runs it after the
 * death). The next process reads the list back and takes the fields it had sent as
 * what CC holds: nothing is imported twice, and CC holds the new values. */
static void test_sigkill_mid_import_with_fields_imports_once(void **state)
{
    (void)state;
    const int n = 20;
    struct reply r = api("PUT", "/v1/associations/" ASSOC,
                         "{\"fields\":[{\"novi\":\"Title\",\"cc\":\"job_title\"},"
                         "{\"novi\":\"CustomFields.Chapter\",\"cc\":\"custom:Chapter\"}]}");
    assert_int_equal(r.status, 200);
    reply_free(&r);
    send_group("F", "Crash Fields", true, 1);
    for (int k = 0; k < n; k++)
        send_customer(field_member(k, "North"), 2);
    json_object_put(wait_settled("F", WAIT_MS));
    assert_chapters(n, "North");

    /* the field change's import reaches CC 2 s after ccsyncd died */
    sim_delay("POST " IMPORT_PATH, 2000, 1);
    for (int k = 0; k < n; k++)
        send_customer(field_member(k, "South"), 3);
    wait_endpoint("POST " IMPORT_PATH, 2, WAIT_MS);
    stack_kill_ccsyncd(0);
    assert_journal("F", "import", NULL, false);
    wait_answered("POST", IMPORT_PATH, 2, WAIT_MS);

    restart_after_kill("F");
    json_object *gs = wait_settled("F", WAIT_MS);
    assert_state_clean(gs, "synced");
    assert_counts(gs, n, 0, 0, 0, 0, 0, 0, n);
    json_object_put(gs);
    assert_chapters(n, "South");
    struct accepted imports;
    accepted_read("POST", IMPORT_PATH, &imports);
    assert_int_equal(imports.ok, 2); /* the first sync, the change: never sent again */
    assert_int_equal(cc_endpoint("POST /v3/contact_custom_fields"), 1);
    strv_free(&imports.pairs);
    assert_no_overlapping_changes();
}

static int setup_slow_activity(void **state)
{
    (void)state;
    struct stack_options o = {.sim_rate = 0, .cc_rate = 100, .activity_ms = 8000, .workers = 2};
    return stack_start("test-crash", &o);
}

/*
 * SIGTERM while a round waits for its import's activity: the worker stops
 * between steps and gives the group back due at once, so a ccsyncd started
 * right after finishes it (recovering the journaled import) without first
 * waiting out the 60 s its claim parked the group for.
 */
static void test_sigterm_mid_round_hands_the_group_back_at_once(void **state)
{
    (void)state;
    const int n = 20;
    first_sync_starts("T", "Term Mid Round", "t", n);
    wait_endpoint("POST " IMPORT_PATH, 1, WAIT_MS);
    int status = ts_kill(stack.ccsyncd_pid[0], SIGTERM);
    stack.ccsyncd_pid[0] = 0;
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(stack_start_ccsyncd(0), 0);
    long t0 = ts_now_ms();
    json_object_put(wait_settled("T", WAIT_MS));
    long took = ts_now_ms() - t0;
    if (took > 30000)
        fail_msg("the group was synced %ld ms after the restart (its claim's park, not the work)",
                 took);
    assert_group_exact("T", "Term Mid Round", "t", n, 0, false);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (getenv("TEST_FILTER")) /* e.g. TEST_FILTER='*redis*' runs one test */
        cmocka_set_test_filter(getenv("TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_lease_one_worker_per_group_across_two_processes,
                                        setup_lease, stack_stop),
        cmocka_unit_test_setup_teardown(
            test_lease_of_a_killed_process_holds_until_it_expires_then_the_other_finishes,
            setup_lease, stack_stop),
        cmocka_unit_test_setup_teardown(test_sigkill_while_list_create_in_flight_adopts_the_list,
                                        setup_crash, stack_stop),
        cmocka_unit_test_setup_teardown(
            test_sigkill_while_removal_in_flight_and_while_its_activity_runs, setup_crash,
            stack_stop),
        cmocka_unit_test_setup_teardown(test_second_sigkill_during_recovery_still_one_import,
                                        setup_crash, stack_stop),
        cmocka_unit_test_setup_teardown(
            test_second_sigkill_while_recovery_waits_for_the_recorded_import, setup_crash,
            stack_stop),
        cmocka_unit_test_setup_teardown(test_sigkill_while_list_delete_in_flight_list_deleted_once,
                                        setup_crash, stack_stop),
        cmocka_unit_test_setup_teardown(test_sigkill_while_a_removal_for_two_lists_is_in_flight,
                                        setup_crash, stack_stop),
        cmocka_unit_test_setup_teardown(test_sigkill_between_two_groups_imports, setup_crash,
                                        stack_stop),
        cmocka_unit_test_setup_teardown(
            test_sigkill_while_list_delete_in_flight_then_sync_on_again_makes_a_new_list,
            setup_crash, stack_stop),
        cmocka_unit_test_setup_teardown(
            test_sigkill_while_list_create_in_flight_never_adopts_a_list_ccsync_did_not_make,
            setup_crash, stack_stop),
        cmocka_unit_test_setup_teardown(test_sigkill_mid_import_with_fields_imports_once,
                                        setup_crash, stack_stop),
        cmocka_unit_test_setup_teardown(test_sigterm_after_bulk_syncs_exits_0, setup_crash,
                                        stack_stop),
        cmocka_unit_test_setup_teardown(test_sigterm_mid_round_hands_the_group_back_at_once,
                                        setup_slow_activity, stack_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
