/*
 * tagsync.c - group tags (§12): with tags on, each synced group has a CC tag named
 * PREFIX + group name, made by ccsync (tag_source "ccsync") and renamed with the
 * group; the contacts on the group's list carry it, and those ccsync tagged lose it
 * when they leave the list. Contacts ccsync did not tag are never untagged, and
 * no other tag is touched.
 *
 * Runs after a group's list has converged in a round. The group hash keeps the tag
 * (tag_id, tag_name); key_group_tag holds the contacts ccsync tagged (email ->
 * contact id). The applied state is the one the round's last plan loaded (not
 * loaded again here). Tagging needs contact ids: those not known yet (joiners, a
 * first sync's contacts) are looked up by email, or the list is read back when
 * that takes no more requests (one per 500 contacts). Taggings go in
 * bulk, 500 contacts a request; adding a tag twice is harmless, so a tagging whose
 * answer was lost is simply sent again.
 */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccsync/engine.h"
#include "ccsync/keys.h"
#include "ccsync/log.h"
#include "ccsync/store.h"

#define TAG_NAME_MAX 255

/* The tag name for group name: prefix + name, cut to CC's 255 characters. */
static void tag_name_of(const struct fieldmap *m, const char *group_name, char *out, size_t size)
{
    snprintf(out, size, "%s%s", m->tag_prefix, group_name);
    size_t chars = 0, i = 0;
    for (; out[i]; i++) {
        bool starts = ((unsigned char)out[i] & 0xC0) != 0x80;
        if (starts && chars == TAG_NAME_MAX)
            break;
        chars += starts;
    }
    out[i] = '\0';
}

/* The group's tag as the group hash keeps it ("" when none). */
static int tag_load(struct run *r, char id[CCAPI_ID_SIZE], char name[TAG_NAME_MAX * 4 + 1])
{
    redisReply *x = store_command(r->w->redis, "HMGET %s tag_id tag_name",
                                  key_group(r->association, r->group).s);
    id[0] = name[0] = '\0';
    if (x == NULL || x->type != REDIS_REPLY_ARRAY || x->elements != 2) {
        freeReplyObject(x);
        return STORE_ERR;
    }
    if (x->element[0]->type == REDIS_REPLY_STRING)
        snprintf(id, CCAPI_ID_SIZE, "%s", x->element[0]->str);
    if (x->element[1]->type == REDIS_REPLY_STRING)
        snprintf(name, TAG_NAME_MAX * 4 + 1, "%s", x->element[1]->str);
    freeReplyObject(x);
    return STORE_OK;
}

static int tag_store(struct run *r, const char *id, const char *name)
{
    return group_tag_store(r->w->redis, r->association, r->group, r->fence, id, name);
}

/* Makes the group's tag (or adopts the one ccsync made when the answer was lost). */
static enum call_outcome tag_create(struct run *r, const char *name, char id[CCAPI_ID_SIZE])
{
    struct ccapi_tag tag;
    bool found = false;
    struct ccapi_error err;
    struct cc_op op = {.kind = CC_TAG_CREATE, .in.tag = {name, &tag, NULL}};
    enum call_outcome oc = cc_call(r->w, r->association, &op, &err);
    if (oc == CALL_FAILED && err.status == CCAPI_CONFLICT) {
        struct cc_op find = {.kind = CC_TAG_FIND, .in.tag = {name, &tag, &found}};
        oc = cc_call(r->w, r->association, &find, &err);
        if (oc == CALL_OK && !(found && strcmp(tag.source, "ccsync") == 0)) {
            log_warn("group_tag_taken", LOG_STR("association", r->association),
                     LOG_STR("group", r->group), LOG_STR("tag", name));
            return CALL_FAILED; /* someone else's tag: never used */
        }
    }
    if (oc == CALL_OK) {
        snprintf(id, CCAPI_ID_SIZE, "%s", tag.id);
        if (tag_store(r, tag.id, name) != STORE_OK)
            return CALL_REDIS;
        log_info("group_tag_created", LOG_STR("association", r->association),
                 LOG_STR("group", r->group), LOG_STR("tag", name));
    }
    return oc;
}

/* The tag exists under the group's present name: created or renamed if need be. */
static enum call_outcome tag_ensure(struct run *r, const struct fieldmap *m, char id[CCAPI_ID_SIZE])
{
    char want[TAG_NAME_MAX * 4 + 1], have[TAG_NAME_MAX * 4 + 1];
    tag_name_of(m, r->gs.name, want, sizeof want);
    if (tag_load(r, id, have) != STORE_OK)
        return CALL_REDIS;
    if (id[0] == '\0')
        return tag_create(r, want, id);
    if (strcmp(have, want) == 0)
        return CALL_OK;
    struct ccapi_tag tag;
    snprintf(tag.id, sizeof tag.id, "%s", id);
    struct ccapi_error err;
    struct cc_op op = {.kind = CC_TAG_RENAME, .in.tag = {want, &tag, NULL}};
    enum call_outcome oc = cc_call(r->w, r->association, &op, &err);
    if (oc == CALL_OK && tag_store(r, id, want) != STORE_OK)
        return CALL_REDIS;
    if (oc == CALL_OK)
        log_info("group_tag_renamed", LOG_STR("association", r->association),
                 LOG_STR("group", r->group), LOG_STR("tag", want));
    if (oc == CALL_FAILED && err.status == CCAPI_NOT_FOUND) {
        id[0] = '\0'; /* deleted in CC: made again, and every contact tagged again */
        if (group_tag_forget(r->w->redis, r->association, r->group, r->fence) != STORE_OK)
            return CALL_REDIS;
        return tag_create(r, want, id);
    }
    return oc;
}

/* ---- who carries the tag ---- */

struct tagged {
    redisReply *reply;   /* HGETALL: email, contact id, ... */
    const char **emails; /* sorted */
    size_t n;
};

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int tagged_load(struct run *r, struct tagged *t)
{
    memset(t, 0, sizeof *t);
    t->reply = store_command(r->w->redis, "HGETALL %s", key_group_tag(r->association, r->group).s);
    if (t->reply == NULL || t->reply->type != REDIS_REPLY_ARRAY)
        return STORE_ERR;
    t->n = t->reply->elements / 2;
    t->emails = calloc(t->n + 1, sizeof *t->emails);
    if (t->emails == NULL)
        return STORE_ERR;
    for (size_t i = 0; i < t->n; i++)
        t->emails[i] = t->reply->element[2 * i]->str;
    qsort(t->emails, t->n, sizeof *t->emails, str_cmp);
    return STORE_OK;
}

static void tagged_free(struct tagged *t)
{
    freeReplyObject(t->reply);
    free(t->emails);
}

static bool tagged_has(const struct tagged *t, const char *email)
{
    return t->n && bsearch(&email, t->emails, t->n, sizeof *t->emails, str_cmp) != NULL;
}

/* Sends one tagging request for ids (≤ 500) and records its contacts. */
static enum call_outcome tagging_send(struct run *r, const char *tag_id, bool add,
                                      const char **emails, const char **ids, size_t n)
{
    const char *tags[] = {tag_id};
    struct ccapi_error err;
    struct cc_op op = {.kind = CC_TAGGING, .in.tagging = {add, tags, 1, ids, n}};
    enum call_outcome oc = cc_call(r->w, r->association, &op, &err);
    if (oc != CALL_OK)
        return oc;
    for (size_t i = 0; i < n; i++)
        group_tag_append(r->w->redis, r->association, r->group, r->fence, emails[i],
                         add ? ids[i] : NULL);
    log_info(add ? "group_tag_added" : "group_tag_removed", LOG_STR("association", r->association),
             LOG_STR("group", r->group), LOG_INT("contacts", (long long)n),
             LOG_STR("activity", op.out.activity_id));
    return store_drain(r->w->redis, n) == STORE_OK ? CALL_OK : CALL_REDIS;
}

/* Sends the pending emails/ids in requests of 500. */
static enum call_outcome tagging_batches(struct run *r, const char *tag_id, bool add,
                                         const char **emails, const char **ids, size_t n)
{
    enum call_outcome oc = CALL_OK;
    for (size_t i = 0; i < n && oc == CALL_OK; i += CCAPI_MEMBERSHIPS_MAX_CONTACTS) {
        size_t k = n - i < CCAPI_MEMBERSHIPS_MAX_CONTACTS ? n - i : CCAPI_MEMBERSHIPS_MAX_CONTACTS;
        oc = tagging_send(r, tag_id, add, emails + i, ids + i, k);
    }
    return oc;
}

/* How many contacts on the list have no known contact id. */
static size_t ids_missing(const struct applied_set *a)
{
    size_t n = 0;
    for (size_t i = 0; i < a->n; i++)
        n += a->items[i].status == APPLIED_ON_LIST &&
             (!a->items[i].contact_id || !a->items[i].contact_id[0]);
    return n;
}

/* Looks up the missing contact ids by email, one request each: recorded in
 * Redis and in a. */
static enum call_outcome lookup_ids(struct run *r, struct applied_set *a)
{
    struct ccapi_error err;
    for (size_t i = 0; i < a->n; i++) {
        const struct applied_contact *c = &a->items[i];
        if (c->status != APPLIED_ON_LIST || (c->contact_id && c->contact_id[0]))
            continue;
        struct cc_op op = {.kind = CC_CONTACTS_FIND, .in.email = c->email};
        enum call_outcome oc = cc_call(r->w, r->association, &op, &err);
        const struct ccapi_contact_page *page = &op.out.contacts;
        int rc = STORE_OK;
        if (oc == CALL_OK && page->n_contacts > 0 && page->contacts[0].contact_id[0]) {
            rc = applied_set_contact_id(r->w->redis, r->association, r->group, r->fence, c->email,
                                        page->contacts[0].contact_id);
            if (rc == STORE_OK)
                rc = applied_note_contact_id(a, i, page->contacts[0].contact_id);
        }
        cc_op_clear(&op);
        if (oc != CALL_OK)
            return oc;
        if (rc != STORE_OK)
            return CALL_REDIS;
    }
    return CALL_OK;
}

/* The contacts on the list with their ids (borrowed from a or from found). */
struct on_list {
    const char **emails;
    const char **ids;
    size_t n;
};

/* Learns the missing contact ids (a lookup by email each, or the list read back
 * when that takes no more requests: plan_learn_by_reading) and lists the
 * contacts on the list with their ids. */
static enum call_outcome on_list_of(struct run *r, struct applied_set *a, struct listed_ids *found,
                                    struct on_list *on)
{
    size_t missing = ids_missing(a);
    enum call_outcome oc = CALL_OK;
    bool read = plan_learn_by_reading(missing, a->n, CCAPI_PAGE_LIMIT);
    struct ccapi_error err;
    if (read)
        oc = round_read_list(r, BUDGET_CHANGES, a, found, &err);
    else if (missing > 0)
        oc = lookup_ids(r, a);
    if (oc != CALL_OK)
        return oc;
    size_t cap = read ? found->n : a->n;
    on->emails = malloc((cap + 1) * sizeof *on->emails);
    on->ids = malloc((cap + 1) * sizeof *on->ids);
    on->n = 0;
    if (!on->emails || !on->ids)
        return CALL_RETRY;
    for (size_t i = 0; read && i < found->n; i++) {
        on->emails[on->n] = found->emails[i];
        on->ids[on->n++] = found->ids[i];
    }
    for (size_t i = 0; !read && i < a->n; i++) {
        const struct applied_contact *c = &a->items[i];
        if (c->status != APPLIED_ON_LIST || !c->contact_id || !c->contact_id[0])
            continue;
        on->emails[on->n] = c->email;
        on->ids[on->n++] = c->contact_id;
    }
    return CALL_OK;
}

/* Tags the list's contacts not tagged yet; untags those ccsync tagged that left. */
static enum call_outcome tags_converge(struct run *r, const char *tag_id, const struct on_list *on)
{
    struct tagged t;
    if (tagged_load(r, &t) != STORE_OK) {
        tagged_free(&t);
        return CALL_REDIS;
    }
    size_t cap = on->n + t.n + 1;
    const char **emails = malloc(cap * sizeof *emails), **ids = malloc(cap * sizeof *ids);
    const char **sorted = malloc(cap * sizeof *sorted);
    enum call_outcome oc = emails && ids && sorted ? CALL_OK : CALL_RETRY;
    size_t n = 0;
    for (size_t i = 0; oc == CALL_OK && i < on->n; i++) {
        sorted[i] = on->emails[i];
        if (!tagged_has(&t, on->emails[i])) {
            emails[n] = on->emails[i];
            ids[n++] = on->ids[i];
        }
    }
    if (oc == CALL_OK)
        oc = tagging_batches(r, tag_id, true, emails, ids, n);
    if (oc == CALL_OK)
        qsort(sorted, on->n, sizeof *sorted, str_cmp);
    n = 0;
    for (size_t i = 0; oc == CALL_OK && i < t.n; i++) {
        const char *email = t.reply->element[2 * i]->str;
        if (on->n && bsearch(&email, sorted, on->n, sizeof *sorted, str_cmp))
            continue;
        emails[n] = email;
        ids[n++] = t.reply->element[2 * i + 1]->str;
    }
    if (oc == CALL_OK)
        oc = tagging_batches(r, tag_id, false, emails, ids, n);
    free(emails);
    free(ids);
    free(sorted);
    tagged_free(&t);
    return oc;
}

/* One group's tag: a is its applied state as the round ended (not loaded again). */
static enum call_outcome tags_group(struct run *r, const struct fieldmap *m, struct applied_set *a)
{
    char tag_id[CCAPI_ID_SIZE];
    enum call_outcome oc = tag_ensure(r, m, tag_id);
    if (oc != CALL_OK)
        return oc;
    struct listed_ids found = {0};
    struct on_list on = {0};
    oc = on_list_of(r, a, &found, &on);
    if (oc == CALL_OK)
        oc = tags_converge(r, tag_id, &on);
    free(on.emails);
    free(on.ids);
    listed_ids_free(&found);
    return oc;
}

void tags_sync(struct run *const *runs, struct applied_set *const *applied, size_t n,
               const struct fieldmap *m)
{
    if (m == NULL || !m->group_tags)
        return;
    for (size_t i = 0; i < n; i++) {
        struct run *r = runs[i];
        if (r->res != SYNC_DONE || r->gs.list_deleted_in_cc || !r->gs.list_id[0])
            continue;
        enum call_outcome oc = tags_group(r, m, applied[i]);
        if (oc == CALL_FAILED)
            continue; /* logged; the list itself is in step: the group stays synced */
        if (oc != CALL_OK) {
            struct ccapi_error err = {0};
            r->res = call_result(r, oc, &err, "tag the group's contacts");
        }
    }
}
