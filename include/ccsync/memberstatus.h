/*
 * memberstatus.h - why each member of a group is, or is not, on its Constant
 * Contact list: the plan's outcome for every member, computed from the same
 * desired and applied state the engine plans with, so the member view and the
 * group's counts always agree.
 *
 * While the group's list is deleted in Constant Contact the desired state keeps
 * moving: the members are judged as for a group without a list (nothing is on
 * it; every member who belongs there waits for a resync, status pending), and
 * what CC said about contacts (unsubscribed, rejected) still stands.
 */
#ifndef CCSYNC_MEMBERSTATUS_H
#define CCSYNC_MEMBERSTATUS_H

#include <stdbool.h>

#include "ccsync/groupstore.h"
#include "ccsync/plan.h"

struct redisContext;

struct member_status {
    bool listed; /* sync on and not deleted: the group has, or should have, a list */
    struct member_set members;
    struct applied_set applied;
    struct applied_contact *judged; /* the applied entries the plan saw (borrowed strings) */
    struct plan plan;               /* plan.outcomes[i] belongs to members.records[i] */
    struct member_fields *fields;   /* the mapped fields the plan compared (as the engine) */
};

/* Loads group's members and applied state and plans them as gs says. STORE_OK,
 * or STORE_ERR (Redis failed, or the plan refused its input: logged). */
int member_status_load(struct redisContext *c, const char *association, const char *group,
                       const struct group_state *gs, struct member_status *ms);
void member_status_free(struct member_status *ms);

/* The status API's word for one outcome: "pending" for a member on its way to
 * the list, else plan_reason_name. */
const char *member_status_name(const struct plan_outcome *o);

/* Writes the group's counts as the member view sees them: used while the list
 * is deleted in CC, when the engine sends nothing but the counts stay true. */
int member_status_recount(struct redisContext *c, const char *association, const char *group,
                          const char *fence, const struct group_state *gs);

#endif
