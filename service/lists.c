/*
 * lists.c - a group's Constant Contact list: created under the first free name
 * of NAME, NAME - 1, NAME - 2, ...; a create whose answer was lost adopted by
 * the reference its description carries; deleted (journaled first) and
 * forgotten; marked deleted when someone deleted it in CC; and CC asked
 * whether it is still there.
 */
#include <json-c/json.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ccsync/engine.h"
#include "ccsync/facts.h"
#include "ccsync/log.h"
#include "ccsync/memberstatus.h"
#include "ccsync/store.h"

#define ACCOUNT_MAX_LISTS 1000
#define LIST_REF_SIZE 17 /* 16 hex digits and the NUL */

/* ---- the names in use ---- */

struct name_set {
    size_t n, cap;
    char **names;
    size_t active;
};

static void names_free(struct name_set *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->names[i]);
    free(s->names);
    memset(s, 0, sizeof *s);
}

/* Out of memory, the name is left out rather than the process crashed: a
 * taken name then looks free, and Constant Contact refuses it (409). */
static void names_add(struct name_set *s, const char *name)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        char **grown = realloc(s->names, cap * sizeof *grown);
        if (!grown)
            return;
        s->names = grown;
        s->cap = cap;
    }
    char *copy = strdup(name);
    if (copy)
        s->names[s->n++] = copy;
}

static bool names_has(const struct name_set *s, const char *name)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcasecmp(s->names[i], name) == 0)
            return true;
    return false;
}

/* Reads every active list's name (one request per 500 lists). */
static enum call_outcome read_list_names(struct run *r, struct name_set *s, struct ccapi_error *err)
{
    struct cc_op op = {.kind = CC_LISTS_PAGE};
    char *next = NULL;
    enum call_outcome oc;
    do {
        op.in.next = next;
        oc = cc_call(r->w, r->association, &op, err);
        free(next);
        next = NULL;
        if (oc != CALL_OK)
            break;
        for (size_t i = 0; i < op.out.lists.n_lists; i++) {
            if (op.out.lists.lists[i].deleted)
                continue;
            names_add(s, op.out.lists.lists[i].name);
            s->active++;
        }
        if (op.out.lists.next_href)
            next = strdup(op.out.lists.next_href);
    } while (next);
    cc_op_clear(&op);
    return oc;
}

static void candidate_name(const char *base, int n, char *out, size_t size)
{
    if (n == 0)
        snprintf(out, size, "%.*s", LIST_NAME_MAX, base);
    else
        snprintf(out, size, "%.*s - %d", LIST_NAME_MAX - 12, base, n);
}

/* ---- create ---- */

static bool link_list(struct run *r, const char *list_id, const char *name)
{
    struct redisContext *c = r->w->redis;
    snprintf(r->gs.list_id, sizeof r->gs.list_id, "%s", list_id);
    snprintf(r->gs.list_name, sizeof r->gs.list_name, "%s", name);
    r->gs.list_deleted_in_cc = false;
    return group_link_list(c, r->association, r->group, r->fence, list_id, name) == STORE_OK &&
           group_audit(c, r->association, r->group, r->fence, "list_created", list_id, name, "") ==
               0 &&
           journal_clear(r);
}

/*
 * A create whose answer was lost: adopts the list it made, if it made one. The
 * list is known by the reference its description carries, so a list of the
 * same name that someone else made meanwhile is never taken for it. (A journal
 * without a reference, from an older version, adopts by name.)
 */
static enum call_outcome recover_create(struct run *r, const char *name, const char *ref,
                                        bool *adopted, struct ccapi_error *err)
{
    struct cc_op op = {.kind = CC_LIST_FIND, .in.name = name};
    *adopted = false;
    enum call_outcome oc = cc_call(r->w, r->association, &op, err);
    for (size_t i = 0; oc == CALL_OK && i < op.out.lists.n_lists; i++) {
        const struct ccapi_list *l = &op.out.lists.lists[i];
        bool ours = !ref[0] || (l->description && strstr(l->description, ref));
        if (!l->deleted && strcmp(l->name, name) == 0 && ours) {
            if (!link_list(r, l->list_id, l->name))
                oc = CALL_REDIS;
            *adopted = true;
            break;
        }
    }
    cc_op_clear(&op);
    return oc;
}

/* A reference unique to one create request, for its list's description. */
static void new_create_ref(char out[LIST_REF_SIZE])
{
    unsigned char raw[8];
    if (RAND_bytes(raw, sizeof raw) != 1) {
        /* only makes the reference guessable, never reused within a run */
        int64_t now = store_now_ns();
        memcpy(raw, &now, sizeof raw);
    }
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
}

enum sync_result lists_adopt_lost_create(struct run *r, bool *adopted)
{
    enum sync_result res = SYNC_DONE;
    json_object *j = r->gs.journal[0] ? json_tokener_parse(r->gs.journal) : NULL;
    json_object *v;
    *adopted = false;
    if (j && json_object_object_get_ex(j, "op", &v) &&
        strcmp(json_object_get_string(v), "create") == 0 &&
        json_object_object_get_ex(j, "name", &v)) {
        char name[LIST_NAME_MAX + 1], ref[LIST_REF_SIZE] = "";
        snprintf(name, sizeof name, "%s", json_object_get_string(v));
        if (json_object_object_get_ex(j, "ref", &v))
            snprintf(ref, sizeof ref, "%s", json_object_get_string(v));
        struct ccapi_error err = {0};
        enum call_outcome oc = recover_create(r, name, ref, adopted, &err);
        if (oc != CALL_OK)
            res = call_result(r, oc, &err, "look up a list");
        else if (*adopted)
            log_info("list_adopted", LOG_STR("association", r->association),
                     LOG_STR("group", r->group), LOG_STR("list_id", r->gs.list_id));
    }
    json_object_put(j);
    return res;
}

/* Journals a create of name, its reference written into ref. */
static bool journal_create(struct run *r, const char *name, char ref[LIST_REF_SIZE])
{
    new_create_ref(ref);
    json_object *jn = json_object_new_object();
    json_object_object_add(jn, "op", json_object_new_string("create"));
    json_object_object_add(jn, "name", json_object_new_string(name));
    json_object_object_add(jn, "ref", json_object_new_string(ref));
    bool journaled = journal_write(r, json_object_to_json_string(jn));
    json_object_put(jn);
    return journaled;
}

/* Tries to create the list under name. *taken when CC says the name is in use
 * (then the next name is tried); else the run's result. */
static enum sync_result create_named(struct run *r, const char *name, bool *taken)
{
    char ref[LIST_REF_SIZE], description[128];
    *taken = false;
    if (!journal_create(r, name, ref))
        return SYNC_REDIS;
    snprintf(description, sizeof description, "Kept in step with a Novi group by ccsync (ref %s)",
             ref);
    struct cc_op op = {.kind = CC_LIST_CREATE, .in.create = {name, description}};
    struct ccapi_error err = {0};
    enum call_outcome oc = cc_call(r->w, r->association, &op, &err);
    if (oc == CALL_OK) {
        enum sync_result res =
            link_list(r, op.out.list.list_id, op.out.list.name) ? SYNC_DONE : SYNC_REDIS;
        log_info("list_created", LOG_STR("association", r->association), LOG_STR("group", r->group),
                 LOG_STR("list_id", op.out.list.list_id), LOG_STR("list_name", op.out.list.name));
        cc_op_clear(&op);
        return res;
    }
    cc_op_clear(&op);
    if (oc == CALL_FAILED && err.status == CCAPI_CONFLICT) {
        *taken = true; /* taken meanwhile */
        return SYNC_DONE;
    }
    if (oc == CALL_UNCERTAIN) {
        /* The journal keeps the name: the next run looks it up before creating. */
        r->retry_ms = 1000;
        return SYNC_RETRY;
    }
    journal_clear(r);
    return call_result(r, oc, &err, "create the list");
}

void lists_names_free(struct name_set *s)
{
    if (s)
        names_free(s);
    free(s);
}

/* The account's list names: read once for every create of the run's round
 * (r->names), so ten new groups cost one read, not ten. */
static enum call_outcome account_names(struct run *r, struct name_set **out,
                                       struct ccapi_error *err)
{
    if (r->names && *r->names) {
        *out = *r->names;
        return CALL_OK;
    }
    struct name_set *s = calloc(1, sizeof *s);
    if (!s)
        return CALL_RETRY;
    enum call_outcome oc = read_list_names(r, s, err);
    if (oc != CALL_OK) {
        lists_names_free(s);
        return oc;
    }
    if (r->names)
        *r->names = s;
    *out = s;
    return CALL_OK;
}

/* Creates the list under the first name not in names; the name made joins them. */
static enum sync_result create_first_free(struct run *r, struct name_set *names)
{
    enum sync_result res = SYNC_RETRY;
    for (int n = 0; n < 10000; n++) {
        char name[LIST_NAME_MAX + 1];
        candidate_name(r->gs.name[0] ? r->gs.name : r->group, n, name, sizeof name);
        if (names_has(names, name))
            continue;
        bool taken;
        res = create_named(r, name, &taken);
        names_add(names, name);
        if (!taken) {
            names->active += res == SYNC_DONE;
            break;
        }
        res = SYNC_RETRY;
    }
    return res;
}

enum sync_result lists_create(struct run *r)
{
    bool adopted;
    enum sync_result res = lists_adopt_lost_create(r, &adopted);
    if (res != SYNC_DONE || adopted)
        return res;
    struct name_set *names;
    struct ccapi_error err = {0};
    enum call_outcome oc = account_names(r, &names, &err);
    if (oc != CALL_OK)
        return call_result(r, oc, &err, "read the lists");
    res = names->active >= ACCOUNT_MAX_LISTS ? SYNC_RETRY : create_first_free(r, names);
    if (names->active >= ACCOUNT_MAX_LISTS && res == SYNC_RETRY) {
        group_set_error(r->w->redis, r->association, r->group, r->fence, "error",
                        "list_limit_reached",
                        "the Constant Contact account has 1,000 lists, its limit: delete lists "
                        "there, then resync this group");
        r->retry_ms = 3600 * 1000;
    }
    if (!r->names)
        lists_names_free(names);
    return res;
}

/* ---- gone from CC ---- */

enum sync_result lists_mark_deleted(struct run *r)
{
    struct redisContext *c = r->w->redis;
    /* Callers go on (prepare, the round's later requests): nothing more is sent
     * to this list, or a 400 on it would replace this error with another. */
    r->gs.list_deleted_in_cc = true;
    bool ok = group_mark_list_deleted(c, r->association, r->group, r->fence) == STORE_OK &&
              group_set_error(c, r->association, r->group, r->fence, "error",
                              "list_deleted_in_constant_contact",
                              "The Constant Contact list for this group was deleted in Constant "
                              "Contact. ccsync will not recreate it on its own: resync the group "
                              "(or turn its sync off and on) to create a new list.") == STORE_OK &&
              group_audit(c, r->association, r->group, r->fence, "list_missing", r->gs.list_id,
                          r->gs.list_name, "the list is gone from Constant Contact") == 0 &&
              journal_clear(r) &&
              member_status_recount(c, r->association, r->group, r->fence, &r->gs) ==
                  STORE_OK; /* list empty */
    log_warn("list_deleted_in_constant_contact", LOG_STR("association", r->association),
             LOG_STR("group", r->group), LOG_STR("list_id", r->gs.list_id));
    return ok ? SYNC_DONE : SYNC_REDIS;
}

enum call_outcome lists_ask(struct run *r, bool *gone, struct ccapi_error *err)
{
    struct cc_op op = {.kind = CC_LIST_GET, .cls = r->cls, .in.list_id = r->gs.list_id};
    enum call_outcome oc = cc_call(r->w, r->association, &op, err);
    *gone = (oc == CALL_FAILED && err->status == CCAPI_NOT_FOUND) ||
            (oc == CALL_OK && op.out.list.deleted);
    cc_op_clear(&op);
    return oc;
}

enum sync_result lists_check_gone(struct run *r, const struct ccapi_error *first)
{
    struct ccapi_error err;
    bool gone;
    enum call_outcome oc = lists_ask(r, &gone, &err);
    if (gone)
        return lists_mark_deleted(r);
    if (oc != CALL_OK)
        return call_result(r, oc, &err, "read the list");
    if (!first)
        return SYNC_DONE; /* this one is fine: it is planned again */
    return call_result(r, CALL_FAILED, first, "update the list");
}

/* ---- delete ---- */

/* The group's list is gone from CC (deleted by ccsync): forget it, audited. */
enum sync_result lists_forget(struct run *r, const char *why)
{
    struct redisContext *c = r->w->redis;
    bool ok = group_audit(c, r->association, r->group, r->fence, "list_deleted", r->gs.list_id,
                          r->gs.list_name, why) == 0 &&
              group_unlink_list(c, r->association, r->group, r->fence, true) == STORE_OK;
    log_info("list_deleted", LOG_STR("association", r->association), LOG_STR("group", r->group),
             LOG_STR("list_id", r->gs.list_id), LOG_STR("reason", why));
    r->gs.list_id[0] = '\0';
    r->gs.journal[0] = '\0';
    return ok ? SYNC_DONE : SYNC_REDIS;
}

/* Deletes the group's list; journaled first, so that a process that dies with
 * the DELETE in flight leaves the next one a note to find out what CC did. */
enum sync_result lists_delete(struct run *r, const char *why)
{
    json_object *jn = json_object_new_object();
    json_object_object_add(jn, "op", json_object_new_string("delete"));
    json_object_object_add(jn, "list_id", json_object_new_string(r->gs.list_id));
    json_object_object_add(jn, "why", json_object_new_string(why));
    bool journaled = journal_write(r, json_object_to_json_string(jn));
    json_object_put(jn);
    if (!journaled)
        return SYNC_REDIS;
    struct ccapi_error err;
    struct cc_op op = {.kind = CC_LIST_DELETE, .in.list_id = r->gs.list_id};
    enum call_outcome oc = cc_call(r->w, r->association, &op, &err);
    if (oc == CALL_UNCERTAIN) {
        r->retry_ms = 1000; /* the journal makes the next run look the list up first */
        return SYNC_RETRY;
    }
    if (oc != CALL_OK && !(oc == CALL_FAILED && err.status == CCAPI_NOT_FOUND)) {
        journal_clear(r);
        return call_result(r, oc, &err, "delete the list");
    }
    return lists_forget(r, why);
}
