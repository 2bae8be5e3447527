/*
 * memberstatus.c - every member's outcome in a group, for the member view and
 * for the counts of a group whose list is in error (memberstatus.h).
 *
 * The plan is the engine's own (plan_build over members_load and applied_load),
 * so a member's status here is the reason the engine counted. Only the list's
 * state is read differently: a list deleted in Constant Contact holds nobody,
 * so the plan is asked as for a group without a list, with only what CC said
 * about contacts kept (unsubscribed, rejected), never who was on the old list.
 */
#include "ccsync/memberstatus.h"

#include <stdlib.h>
#include <string.h>

#include "ccsync/engine.h"
#include "ccsync/fieldmap.h"
#include "ccsync/log.h"
#include "ccsync/store.h"

/* The association's field mapping as the engine plans with it: a contact whose
 * mapped fields differ from those sent is a change waiting, none else. */
struct member_fields {
    struct fieldmap map;
    struct plan_field items[FIELDMAP_MAX];
    struct plan_fields plan;
};

static int fields_load(struct redisContext *c, const char *association, struct member_status *ms)
{
    ms->fields = malloc(sizeof *ms->fields);
    if (ms->fields == NULL || fieldmap_load(c, association, &ms->fields->map) < 0)
        return STORE_ERR;
    fields_plan(&ms->fields->map, ms->fields->items, &ms->fields->plan);
    return STORE_OK;
}

/* The applied entries the plan is to see: all of them, or (list gone) those
 * that are facts about contacts rather than about the list. */
static int judged_entries(struct member_status *ms, bool list_gone, size_t *n)
{
    ms->judged = calloc(ms->applied.n ? ms->applied.n : 1, sizeof *ms->judged);
    if (!ms->judged)
        return STORE_ERR;
    *n = 0;
    for (size_t i = 0; i < ms->applied.n; i++)
        if (!list_gone || ms->applied.items[i].status != APPLIED_ON_LIST)
            ms->judged[(*n)++] = ms->applied.items[i];
    return STORE_OK;
}

int member_status_load(struct redisContext *c, const char *association, const char *group,
                       const struct group_state *gs, struct member_status *ms)
{
    memset(ms, 0, sizeof *ms);
    ms->listed = gs->sync && !gs->deleted;
    bool list_gone = gs->list_deleted_in_cc;
    struct plan_group pg = {.id = group, .name = gs->name, .sync_enabled = ms->listed};
    if (gs->list_id[0] && !list_gone)
        pg.list = (struct plan_list){PLAN_LIST_ACTIVE, gs->list_id, gs->list_name};
    size_t n_judged = 0;
    if (members_load(c, association, group, &ms->members) != STORE_OK ||
        applied_load(c, association, group, &ms->applied) != STORE_OK ||
        judged_entries(ms, list_gone, &n_judged) != STORE_OK ||
        fields_load(c, association, ms) != STORE_OK) {
        member_status_free(ms);
        return STORE_ERR;
    }
    pg.fields = &ms->fields->plan;
    struct plan_error err;
    if (plan_build(&pg, ms->members.members, ms->members.n, ms->judged, n_judged, NULL, &ms->plan,
                   &err) != 0) {
        log_error("member_status_plan_failed", LOG_STR("association", association),
                  LOG_STR("group", group), LOG_STR("error", err.message));
        member_status_free(ms);
        return STORE_ERR;
    }
    return STORE_OK;
}

void member_status_free(struct member_status *ms)
{
    plan_free(&ms->plan);
    free(ms->fields);
    ms->fields = NULL;
    free(ms->judged);
    ms->judged = NULL;
    applied_free(&ms->applied);
    members_free(&ms->members);
}

const char *member_status_name(const struct plan_outcome *o)
{
    return o->reason == PLAN_IN_LIST && o->pending ? "pending" : plan_reason_name(o->reason);
}

int member_status_recount(struct redisContext *c, const char *association, const char *group,
                          const char *fence, const struct group_state *gs)
{
    struct member_status ms;
    if (member_status_load(c, association, group, gs, &ms) != STORE_OK)
        return STORE_ERR;
    int rc = group_write_counts(c, association, group, fence, &ms.plan);
    member_status_free(&ms);
    return rc;
}
