/*
 * fieldsync.c - the mapped fields of a round (§12): the association's mapping is
 * loaded once a round, its custom fields made in CC when missing, and what CC has
 * becomes the planner's plan_fields.
 *
 * A custom field is looked up once among the account's custom fields (one GET: an
 * account has at most 100) and created when CC has none of its name (one POST a
 * field); its id is kept in the mapping, so neither request is made again. Its type
 * is "date" when every value the round's members have for it is a date, else
 * "string". A refusal (the 100-field limit, a name CC will not take) is kept as the
 * entry's error, shown on the association as fields_error, and the entry is left
 * out of imports until an admin PUTs the mapping again.
 */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ccsync/engine.h"
#include "ccsync/fieldmap.h"
#include "ccsync/log.h"
#include "ccsync/store.h"

static bool entry_unresolved(const struct fieldmap_entry *e)
{
    return e->custom && e->cf_id[0] == '\0' && e->error[0] == '\0';
}

/* "date" when each of the round's members with a value for novi has a date. */
static const char *type_seen(struct run *const *runs, size_t n, const char *novi)
{
    size_t seen = 0;
    bool all_dates = true;
    for (size_t k = 0; k < n && all_dates; k++) {
        struct member_set ms;
        if (members_load(runs[k]->w->redis, runs[k]->association, runs[k]->group, &ms) != STORE_OK)
            return "string";
        for (size_t i = 0; i < ms.n && all_dates; i++) {
            const char *v = member_field_value(&ms.records[i], novi);
            if (v == NULL || v[0] == '\0')
                continue;
            seen++;
            all_dates = fieldmap_is_date(v);
        }
        members_free(&ms);
    }
    return seen > 0 && all_dates ? "date" : "string";
}

/* Creates entry e's custom field in CC; a refusal becomes e's error. */
static enum call_outcome create_field(struct run *const *runs, size_t n, struct fieldmap_entry *e)
{
    struct run *r = runs[0];
    const char *label = e->cc + 7;
    const char *type = type_seen(runs, n, e->novi);
    struct ccapi_custom_field made;
    struct ccapi_error err;
    struct cc_op op = {.kind = CC_FIELD_CREATE, .in.field_create = {label, type, &made}};
    enum call_outcome oc = cc_call(r->w, r->association, &op, &err);
    cc_op_clear(&op);
    if (oc == CALL_OK) {
        fieldmap_set_custom(e, made.id, made.name[0] ? made.name : label, type);
        log_info("custom_field_created", LOG_STR("association", r->association),
                 LOG_STR("name", e->column), LOG_STR("type", type));
    } else if (oc == CALL_FAILED && err.status != CCAPI_UNAUTHORIZED) {
        snprintf(e->error, sizeof e->error,
                 "Constant Contact refused to create custom field %s: %.150s", label,
                 err.message[0] ? err.message : "refused");
        log_warn("custom_field_refused", LOG_STR("association", r->association),
                 LOG_STR("name", label), LOG_STR("error", err.message));
        oc = CALL_OK; /* the others still sync; the admin sees fields_error */
    }
    return oc;
}

/* Resolves every custom entry CC has not been asked about: one GET, a POST each. */
static enum call_outcome resolve(struct run *const *runs, size_t n, struct fieldmap *m)
{
    struct run *r = runs[0];
    struct ccapi_custom_fields *have = malloc(sizeof *have);
    if (have == NULL)
        return CALL_RETRY;
    struct ccapi_error err;
    struct cc_op op = {.kind = CC_FIELDS_GET, .in.fields = {have}};
    enum call_outcome oc = cc_call(r->w, r->association, &op, &err);
    cc_op_clear(&op);
    for (size_t i = 0; oc == CALL_OK && i < m->n; i++) {
        struct fieldmap_entry *e = &m->e[i];
        if (!entry_unresolved(e))
            continue;
        char name[FIELDMAP_CUSTOM_NAME_MAX + 1];
        fieldmap_custom_name(e->cc + 7, name, sizeof name);
        for (size_t k = 0; k < have->n && e->cf_id[0] == '\0'; k++)
            if (strcasecmp(have->items[k].name, name) == 0 ||
                strcasecmp(have->items[k].label, e->cc + 7) == 0)
                fieldmap_set_custom(e, have->items[k].id, have->items[k].name, have->items[k].type);
        if (e->cf_id[0] == '\0')
            oc = create_field(runs, n, e);
    }
    free(have);
    return oc;
}

enum call_outcome fields_prepare(struct run *const *runs, size_t n, struct fieldmap *m)
{
    struct run *r = runs[0];
    if (fieldmap_load(r->w->redis, r->association, m) < 0)
        return CALL_REDIS;
    bool unresolved = false;
    for (size_t i = 0; i < m->n; i++)
        unresolved = unresolved || entry_unresolved(&m->e[i]);
    if (!unresolved)
        return CALL_OK;
    enum call_outcome oc = resolve(runs, n, m);
    /* What was learned is kept even when a later request failed: never asked twice.
     * Unless an admin PUT a mapping meanwhile: that one stands, and the next round
     * (the PUT made the groups due) resolves it, finding in CC what this one made. */
    int saved = fieldmap_save_if_unchanged(r->w->redis, r->association, m);
    if (saved < 0)
        return CALL_REDIS;
    if (saved == 0)
        log_info("field_map_changed_meanwhile", LOG_STR("association", r->association));
    return oc;
}

void fields_plan(const struct fieldmap *m, struct plan_field *items, struct plan_fields *pf)
{
    pf->n = 0;
    pf->items = items;
    pf->version = m->version;
    for (size_t i = 0; i < m->n; i++) {
        const struct fieldmap_entry *e = &m->e[i];
        if (!fieldmap_entry_ready(e))
            continue;
        items[pf->n++] = (struct plan_field){
            .novi = e->novi,
            .column = e->column,
            .max_chars = e->max_chars,
            .int_max = e->value == FIELD_INTEGER
                           ? (strcmp(e->column, "birthday_month") == 0 ? 12 : 31)
                           : 0,
            .date = e->value == FIELD_DATE,
        };
    }
}
