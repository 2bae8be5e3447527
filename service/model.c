/*
 * model.c - the small rules every module shares about Novi's facts: which
 * identifiers are acceptable, how records and events release what they own, and
 * the wire names of event types. Pure: no I/O, no global state.
 */
#include <stdlib.h>
#include <string.h>

#include "ccsync/model.h"

/* Identifiers end up in Redis keys and URLs, so only a narrow, unambiguous
 * alphabet is accepted; anything else is refused where it enters. */
static bool id_char_ok(char c, bool allow_dot_colon)
{
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
        return true;
    if (c == '_' || c == '-')
        return true;
    return allow_dot_colon && (c == '.' || c == ':');
}

static bool id_valid(const char *s, size_t max, bool allow_dot_colon)
{
    size_t n = 0;

    if (s == NULL)
        return false;
    for (; s[n] != '\0'; n++) {
        if (n >= max || !id_char_ok(s[n], allow_dot_colon))
            return false;
    }
    return n >= 1;
}

bool ccsync_valid_unique_id(const char *s)
{
    return id_valid(s, CCSYNC_ID_MAX, true);
}

bool ccsync_valid_association_id(const char *s)
{
    return id_valid(s, CCSYNC_ASSOC_ID_MAX, false);
}

/* Leaves m zeroed so that clearing twice, or clearing a never-filled record, is
 * harmless: error paths can always clear without tracking how far they got. */
void member_record_clear(struct member_record *m)
{
    if (m == NULL)
        return;
    free(m->email);
    free(m->first_name);
    free(m->last_name);
    free(m->company);
    for (size_t i = 0; i < m->n_groups && m->groups != NULL; i++)
        free(m->groups[i].name);
    free(m->groups);
    for (size_t i = 0; i < m->n_fields && m->fields != NULL; i++) {
        free(m->fields[i].name);
        free(m->fields[i].value);
    }
    free(m->fields);
    memset(m, 0, sizeof *m);
}

/* Fields are sorted by name (webhook.c, facts.c), so a lookup is a binary search. */
const char *member_field_value(const struct member_record *m, const char *name)
{
    size_t lo = 0, hi = m->n_fields;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(m->fields[mid].name, name);
        if (c == 0)
            return m->fields[mid].value;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

void event_clear(struct event *ev)
{
    if (ev == NULL)
        return;
    member_record_clear(&ev->member);
    free(ev->group_name);
    for (size_t i = 0; i < ev->n_members && ev->members != NULL; i++)
        member_record_clear(&ev->members[i]);
    free(ev->members);
    memset(ev, 0, sizeof *ev);
}

const char *event_type_name(enum event_type t)
{
    switch (t) {
    case EVENT_CUSTOMER_CREATED:
        return "customer.created";
    case EVENT_CUSTOMER_UPDATED:
        return "customer.updated";
    case EVENT_CUSTOMER_REMOVED:
        return "customer.removed";
    case EVENT_GROUP_CREATED:
        return "group.created";
    case EVENT_GROUP_UPDATED:
        return "group.updated";
    case EVENT_GROUP_DELETED:
        return "group.deleted";
    case EVENT_GROUP_MEMBERS:
        return "group.members";
    case EVENT_UNKNOWN:
        break;
    }
    return "unknown";
}
