/* ccsyncd's view, through its admin API (GET .../groups/G, /v1/status, the
 * audit log): GroupStatus readers, waits on a condition with a deadline (events
 * folded, a group settled, an error shown, a group gone) and exact assertions
 * (counts, state). Every GroupStatus returned is the caller's to put. */
#ifndef CCSYNC_TEST_STATUS_H
#define CCSYNC_TEST_STATUS_H

#include <stdbool.h>
#include <stddef.h>

#include "reply.h"

/* GET the group's status; *status gets the HTTP status. */
json_object *get_group(const char *g, long *status);
/* /v1/status queue.pending, or -1 when ccsyncd cannot answer (Redis away). */
long long queue_pending(void);
/* The value of the exact series line "name{labels} " (or "name ") in ccsyncd's
 * /metrics; -1 when absent. */
double metric_value(const char *series);
/* Waits until every queued event is folded (the stream is empty). */
void wait_folded(void);
/* pending_changes 0 and nothing queued. */
bool group_settled(json_object *gs);
/* Folded, then the group settled (whatever its state). */
json_object *wait_synced(const char *g);
/* wait_synced, then the group's CC list id copied into list_id. */
void wait_synced_list(const char *g, char *list_id, size_t size);
/* The error code the GroupStatus shows, or NULL. */
const char *error_code(json_object *gs);
/* Folded, then the group shows error code in state. */
json_object *wait_group_error(const char *g, const char *code, const char *state);
/* Folded, then GET group answers 404 (a deleted group whose list is gone). */
void wait_group_gone(const char *g);

/* Called between polls while waiting (fault rotation and the like); may be NULL. */
typedef void (*tick_fn)(void);
/* Every event folded and every group settled within wait_ms; fails at once when
 * a group shows an error other than constant_contact_unavailable (which retries).
 * Returns groups[0]'s GroupStatus. */
json_object *wait_settled_n(const char *const *groups, size_t n, long wait_ms, tick_fn tick);
json_object *wait_settled(const char *g, long wait_ms);

/* The counts exactly, and that they add up to members. */
void assert_counts(json_object *gs, long long members, long long no_email, long long invalid_email,
                   long long duplicate_email, long long do_not_email, long long unsubscribed,
                   long long rejected, long long in_list);
void assert_state(json_object *gs, const char *state);
/* The state, and no error shown. */
void assert_state_clean(json_object *gs, const char *state);

/* The group's CC list id and name (fails when it has no list). */
const char *gs_list_id(json_object *gs);
const char *gs_list_name(json_object *gs);
/* Both copied, into buffers of size bytes (name may be NULL). */
void gs_list(json_object *gs, char *list_id, char *name, size_t size);

/* The audit actions of group g, oldest first, comma-separated, into out. */
const char *audit_actions(const char *g, char *out, size_t size);
/* The list_id and list_name of the newest audit entry of g with action. */
void audit_entry(const char *g, const char *action, char *list_id, char *list_name, size_t size);

#endif
