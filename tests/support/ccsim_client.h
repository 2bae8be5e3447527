/* The Constant Contact simulator seen from a test: its control API (/__sim/...)
 * for state dumps, counters, the request log and per-endpoint delays, and the
 * exact assertions built on them (a list holds exactly these emails, no row
 * imported twice, no two changes to one list in flight at once). Everything
 * talks to stack.sim_root and fails the running test when ccsim does not answer
 * 200. */
#ifndef CCSYNC_TEST_CCSIM_CLIENT_H
#define CCSYNC_TEST_CCSIM_CLIENT_H

#include <stdbool.h>
#include <sys/types.h>

#include "reply.h"

#define IMPORT_PATH "/v3/activities/contacts_json_import"

/* Starts ccsim ($CCSIM_BIN, else $BUILD/ccsim) alone on a free port with the
 * options args (NULL-terminated, at most 8), waits until it listens and puts
 * http://127.0.0.1:PORT into root. Returns its pid, 0 when there is no ccsim
 * binary, -1 when it did not start. Stop it with ts_kill. */
pid_t ccsim_start(const char *const *args, char *root, size_t root_size);

/* A control call; asserts a 200 and returns the parsed body (the caller puts it). */
json_object *sim(const char *method, const char *path, const char *body);
void sim_void(const char *method, const char *path, const char *body);
/* A /v3 call as an admin in CC's UI would make it (ccsim's dev token); asserts the
 * status expect and returns the parsed body (the caller puts it). */
json_object *sim_v3(const char *method, const char *path, const char *body, long expect);

/* Makes ccsim answer endpoint ("METHOD /v3/...", as its counters name it) after
 * delay_ms; count 0 = every such request until cleared. */
void sim_delay(const char *endpoint, int delay_ms, int count);

/* ---- counters and the request log ---- */

/* A top-level counter of /__sim/counters ("throttled", "faults", ...). */
long long cc_counter(const char *key);
/* Requests answered on one endpoint ("POST /v3/contact_lists"). */
long long cc_endpoint(const char *endpoint);
/* /v3 requests answered so far, whatever the status. */
long long cc_requests(void);
/* contacts_json_import requests answered so far. */
long long cc_imports(void);
/* Polls of activities (one by id, or the account's list). */
long long cc_activity_polls(void);
/* The sequence number the next request ccsim logs will have. */
long long cc_log_next(void);
/* remove_list_memberships bodies logged from seq since on, as "contacts>lists"
 * each, e.g. "3>3,1>1", in order. */
void cc_remove_shapes(long long since, char *out, size_t size);
/* Requests of method whose path (with query) starts with path that ccsim has
 * answered (its log holds a request once it is answered). */
long long cc_answered(const char *method, const char *path);
void wait_answered(const char *method, const char *path, long long n, long wait_ms);
/* Waits (polling tightly) until the endpoint's counter reaches n. */
void wait_endpoint(const char *endpoint, long long n, long wait_ms);

/* ---- state: lists and contacts ---- */

bool list_active(json_object *l);
/* The active lists' names, sorted and comma-separated, from a state dump (st;
 * NULL: fetched now). */
const char *cc_list_names(json_object *st, char *out, size_t size);
/* The emails (sorted, comma-separated) of the active CC list list_id, and its
 * name into name (may be NULL). Fails when the list is not active. */
const char *cc_members(const char *list_id, char *out, size_t size, char *name, size_t name_size);
/* Waits until CC's active lists are exactly names (completing queued activities). */
void wait_cc_list_names(const char *names);
/* "first last" of the CC contact with email (st: a state dump, or NULL). */
const char *cc_contact_names(json_object *st, const char *email, char *out, size_t size);
/* The contact's permission_to_send (a static buffer). */
const char *cc_contact_permission(const char *email);
/* Asserts that the active list list_id of state dump st holds exactly want. */
void assert_list_exact(json_object *st, const char *list_id, struct strv *want);

/* ---- what CC accepted ---- */

/* Successful (2xx) requests of method + path from the request log; for imports
 * (bodies kept up to 16 KB) each accepted one is "big" (body cut) or parsed into
 * pairs "list_id email"; for remove_list_memberships, pairs "list_id contact_id". */
struct accepted {
    int ok;          /* 2xx answers */
    int big_imports; /* accepted imports whose body the log cut */
    struct strv pairs;
};
void accepted_read(const char *method, const char *path, struct accepted *a);
/* Fails when a (list, contact) pair was accepted twice. */
void assert_no_pair_twice(struct accepted *a);
/* Rows of every import CC accepted, read through /v3 (a row imported twice counts
 * twice). Call it last: it adds to ccsim's counters. */
long long cc_import_rows(void);
/* Fails when two requests changing the same list were in flight at once; returns
 * how many changing requests the log holds. */
int assert_no_overlapping_changes(void);

#endif
