/*
 * admin_members.c - GET /v1/associations/{a}/groups/{g}/members: every member
 * of a group with its status (in_list, pending, or why it is not on the list),
 * paged by UniqueID, as JSON or (Accept: text/csv) as the "email sync report".
 *
 * GET /v1/associations/{a}/members/{m}: one member's record, its status in
 * every group it is in, and its last events as the folds recorded them
 * (applied or ignored, and why: facts.h).
 *
 * The statuses come from memberstatus.c, the engine's own plan, so a page adds
 * up to the group's counts. A group whose sync is off has no list and no
 * counts: its page is empty, as its counts are zero.
 */
#include <hiredis/hiredis.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccsync/admin.h"
#include "ccsync/facts.h"
#include "ccsync/http.h"
#include "ccsync/keys.h"
#include "ccsync/memberstatus.h"
#include "ccsync/model.h"
#include "ccsync/store.h"
#include "ccsync/webhook.h"

#define PAGE_DEFAULT 100
#define PAGE_MAX 1000
#define STATUS_MAX 8

static const char *const statuses[] = {"in_list",         "pending",      "no_email",
                                       "invalid_email",   "do_not_email", "unsubscribed",
                                       "duplicate_email", "rejected"};
#define N_STATUSES (sizeof statuses / sizeof statuses[0])

/* What the query asks: which statuses (all when none), from where, how many. */
struct member_query {
    bool want[N_STATUSES];
    bool any;
    const char *cursor; /* the last UniqueID of the previous page, or NULL */
    long limit;         /* 0: no limit (a CSV report without ?limit) */
};

static int status_index(const char *s, size_t len)
{
    for (size_t i = 0; i < N_STATUSES; i++)
        if (strlen(statuses[i]) == len && strncmp(statuses[i], s, len) == 0)
            return (int)i;
    return -1;
}

/* ?status=a,b: false when a name is not a status. */
static bool parse_statuses(const char *v, struct member_query *q)
{
    if (!v)
        return true;
    while (*v) {
        size_t len = strcspn(v, ",");
        int i = status_index(v, len);
        if (i < 0)
            return false;
        q->want[i] = q->any = true;
        v += len + (v[len] == ',');
    }
    return q->any;
}

static bool wants_csv(struct http_request *req)
{
    const char *accept = http_header(req, "Accept");
    return accept && strstr(accept, "text/csv") != NULL;
}

/* The query, or false with what is wrong in why. */
static bool parse_query(struct http_request *req, struct member_query *q, const char **why)
{
    memset(q, 0, sizeof *q);
    q->limit = wants_csv(req) ? 0 : PAGE_DEFAULT;
    if (!parse_statuses(http_query(req, "status"), q)) {
        *why = "status must be one or more (comma-separated) of in_list, pending, no_email, "
               "invalid_email, duplicate_email, do_not_email, unsubscribed, rejected";
        return false;
    }
    const char *limit = http_query(req, "limit");
    if (limit) {
        char *end;
        q->limit = strtol(limit, &end, 10);
        if (*limit == '\0' || *end != '\0' || q->limit < 1 || q->limit > PAGE_MAX) {
            *why = "limit must be a whole number from 1 to 1000";
            return false;
        }
    }
    q->cursor = http_query(req, "cursor");
    if (q->cursor && !ccsync_valid_unique_id(q->cursor)) {
        *why = "cursor must be the next_cursor of the previous page";
        return false;
    }
    return true;
}

bool admin_check_members(struct http_request *req)
{
    struct member_query q;
    const char *why;
    if (parse_query(req, &q, &why))
        return true;
    http_reply_error(req, 400, "invalid_parameter", "%s", why);
    return false;
}

/* ---- one member's row ---- */

struct member_row {
    const char *unique_id;
    char name[256];
    const char *email; /* as Novi sent it; NULL when absent */
    const char *status;
    const char *detail;       /* NULL when in_list */
    const char *duplicate_of; /* the UniqueID whose email this is, for duplicate_email */
    char since[40];           /* when the member joined the group */
};

static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

static const char *detail_of(const struct member_status *ms, const struct group_state *gs, size_t i)
{
    const struct plan_outcome *o = &ms->plan.outcomes[i];
    const struct member_record *m = &ms->members.records[i];
    switch (o->reason) {
    case PLAN_IN_LIST:
        if (!o->pending)
            return NULL;
        return gs->list_deleted_in_cc ? "waits for a resync: the group's list was deleted in "
                                        "Constant Contact"
                                      : "to be added to the list by the next sync";
    case PLAN_NO_EMAIL:
        return "the member has no email address in Novi";
    case PLAN_INVALID_EMAIL:
        return "the email address in Novi is not a valid address";
    case PLAN_DUPLICATE_EMAIL:
        return "another member of the group has the same email address";
    case PLAN_DO_NOT_EMAIL:
        return "DoNotSendMarketingEmails is set in Novi";
    case PLAN_UNSUBSCRIBED:
        return "the contact unsubscribed in Constant Contact; ccsync never adds it back";
    case PLAN_REJECTED:
        if (m->email && utf8_chars(m->email) > IMPORT_EMAIL_MAX_CHARS)
            return "Constant Contact's import takes emails of at most 50 characters";
        return "Constant Contact refused the contact as sent; retried when its email or name "
               "changes";
    }
    return NULL;
}

/* "FirstName LastName", or the company's name for a company record. */
static void member_name(const struct member_record *m, char *out, size_t size)
{
    if (m->type == CUSTOMER_COMPANY && m->company)
        snprintf(out, size, "%s", m->company);
    else
        snprintf(out, size, "%s%s%s", m->first_name ? m->first_name : "",
                 m->first_name && m->last_name ? " " : "", m->last_name ? m->last_name : "");
}

static void row_of(const struct member_status *ms, const struct group_state *gs, size_t i,
                   const char *duplicate_of, struct member_row *row)
{
    const struct member_record *m = &ms->members.records[i];
    memset(row, 0, sizeof *row);
    row->unique_id = m->id;
    member_name(m, row->name, sizeof row->name);
    row->email = m->email;
    row->status = member_status_name(&ms->plan.outcomes[i]);
    row->detail = detail_of(ms, gs, i);
    row->duplicate_of = duplicate_of;
    rfc3339_format(ms->members.members[i].join_ts_ns, row->since, sizeof row->since);
}

/* ---- the page: members sorted by UniqueID, filtered ---- */

struct page {
    const struct member_status *ms;
    size_t *order; /* member indexes by UniqueID */
    size_t n_rows, *rows;
    bool more;              /* members after the page */
    struct holder *holders; /* who holds each email (duplicate_of), built when needed */
    size_t n_holders;
};

struct holder;
static const struct member_status *sort_subject;

static int by_unique_id(const void *a, const void *b)
{
    const struct member_record *r = sort_subject->members.records;
    return strcmp(r[*(const size_t *)a].id, r[*(const size_t *)b].id);
}

static bool wanted(const struct member_query *q, const char *status)
{
    return !q->any || q->want[status_index(status, strlen(status))];
}

/* Chooses the page's rows; false when out of memory. qsort has no context
 * argument in C11: sort_subject is set for the call only, under a lock. */
static bool page_select(struct page *p, const struct member_query *q)
{
    static pthread_mutex_t sort_lock = PTHREAD_MUTEX_INITIALIZER;
    size_t n = p->ms->listed ? p->ms->members.n : 0; /* no list, no counts: nobody */
    p->order = malloc((n ? n : 1) * sizeof *p->order);
    p->rows = malloc((n ? n : 1) * sizeof *p->rows);
    if (!p->order || !p->rows)
        return false;
    for (size_t i = 0; i < n; i++)
        p->order[i] = i;
    pthread_mutex_lock(&sort_lock);
    sort_subject = p->ms;
    qsort(p->order, n, sizeof *p->order, by_unique_id);
    pthread_mutex_unlock(&sort_lock);
    for (size_t k = 0; k < n; k++) {
        size_t i = p->order[k];
        if (q->cursor && strcmp(p->ms->members.records[i].id, q->cursor) <= 0)
            continue;
        if (!wanted(q, member_status_name(&p->ms->plan.outcomes[i])))
            continue;
        if (q->limit && p->n_rows == (size_t)q->limit) {
            p->more = true;
            break;
        }
        p->rows[p->n_rows++] = i;
    }
    return true;
}

struct holder {
    char *email; /* normalized */
    const char *unique_id;
};

static int by_email(const void *a, const void *b)
{
    return strcmp(((const struct holder *)a)->email, ((const struct holder *)b)->email);
}

/* Every member who is not a duplicate and has a usable email, by email. */
static void holders_build(struct page *p)
{
    const struct member_status *ms = p->ms;
    p->holders = calloc(ms->members.n ? ms->members.n : 1, sizeof *p->holders);
    for (size_t k = 0; p->holders && k < ms->members.n; k++) {
        char buf[EMAIL_BUF_SIZE];
        const char *e = ms->members.records[k].email;
        if (ms->plan.outcomes[k].reason == PLAN_DUPLICATE_EMAIL || email_classify(e) != EMAIL_OK ||
            email_normalize(e, buf, sizeof buf) != 0)
            continue;
        p->holders[p->n_holders].email = strdup(buf);
        p->holders[p->n_holders].unique_id = ms->members.records[k].id;
        if (p->holders[p->n_holders].email)
            p->n_holders++;
    }
    if (p->holders)
        qsort(p->holders, p->n_holders, sizeof *p->holders, by_email);
}

/* The UniqueID of the member whose email duplicate i shares (built once a page). */
static const char *duplicate_of(struct page *p, size_t i)
{
    if (!p->holders)
        holders_build(p);
    char buf[EMAIL_BUF_SIZE];
    if (!p->holders || email_normalize(p->ms->members.records[i].email, buf, sizeof buf) != 0)
        return NULL;
    struct holder key = {.email = buf};
    const struct holder *h = bsearch(&key, p->holders, p->n_holders, sizeof key, by_email);
    return h ? h->unique_id : NULL;
}

static void page_free(struct page *p)
{
    for (size_t k = 0; k < p->n_holders; k++)
        free(p->holders[k].email);
    free(p->holders);
    free(p->order);
    free(p->rows);
}

/* ---- answers ---- */

static json_object *str_or_null(const char *s)
{
    return s && *s ? json_object_new_string(s) : NULL;
}

static json_object *row_json(const struct member_row *row)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "unique_id", json_object_new_string(row->unique_id));
    json_object_object_add(o, "name", json_object_new_string(row->name));
    json_object_object_add(o, "email", str_or_null(row->email));
    json_object_object_add(o, "status", json_object_new_string(row->status));
    json_object_object_add(o, "detail", str_or_null(row->detail));
    json_object_object_add(o, "duplicate_of", str_or_null(row->duplicate_of));
    json_object_object_add(o, "since", str_or_null(row->since));
    return o;
}

/* The member at the page's row k. */
static void page_row(struct page *p, const struct group_state *gs, size_t k, struct member_row *row)
{
    size_t i = p->rows[k];
    bool dup = p->ms->plan.outcomes[i].reason == PLAN_DUPLICATE_EMAIL;
    row_of(p->ms, gs, i, dup ? duplicate_of(p, i) : NULL, row);
}

static const char *next_cursor(const struct page *p)
{
    return p->more && p->n_rows ? p->ms->members.records[p->rows[p->n_rows - 1]].id : NULL;
}

static void answer_json(struct http_request *req, struct page *p, const struct group_state *gs)
{
    json_object *list = json_object_new_array();
    for (size_t k = 0; k < p->n_rows; k++) {
        struct member_row row;
        page_row(p, gs, k, &row);
        json_object_array_add(list, row_json(&row));
    }
    json_object *o = json_object_new_object();
    json_object_object_add(o, "members", list);
    json_object_object_add(o, "next_cursor", str_or_null(next_cursor(p)));
    http_reply_json(req, 200, o);
}

/* ---- CSV ---- */

struct text {
    char *s;
    size_t len, cap;
    bool failed;
};

static void text_add(struct text *t, const char *s, size_t n)
{
    if (t->failed)
        return;
    if (t->len + n + 1 > t->cap) {
        size_t cap = (t->len + n + 1) * 2;
        char *grown = realloc(t->s, cap);
        if (!grown) {
            t->failed = true;
            return;
        }
        t->s = grown;
        t->cap = cap;
    }
    memcpy(t->s + t->len, s, n);
    t->len += n;
    t->s[t->len] = '\0';
}

/* One CSV field (RFC 4180). A value a spreadsheet would run as a formula
 * (=, +, -, @ first) gets a leading apostrophe: names come from Novi. */
static void csv_field(struct text *t, const char *v, bool last)
{
    v = v ? v : "";
    bool quote = strpbrk(v, ",\"\r\n") != NULL;
    if (quote)
        text_add(t, "\"", 1);
    if (v[0] && strchr("=+-@", v[0]))
        text_add(t, "'", 1);
    for (const char *c = v; *c; c++) {
        text_add(t, c, 1);
        if (*c == '"')
            text_add(t, "\"", 1); /* a quote inside is doubled */
    }
    if (quote)
        text_add(t, "\"", 1);
    text_add(t, last ? "\r\n" : ",", last ? 2 : 1);
}

static void answer_csv(struct http_request *req, struct page *p, const struct group_state *gs)
{
    struct text t = {0};
    static const char header[] = "unique_id,name,email,status,detail,duplicate_of,since\r\n";
    text_add(&t, header, strlen(header));
    for (size_t k = 0; k < p->n_rows; k++) {
        struct member_row row;
        page_row(p, gs, k, &row);
        const char *fields[] = {row.unique_id, row.name,         row.email, row.status,
                                row.detail,    row.duplicate_of, row.since};
        for (size_t f = 0; f < 7; f++)
            csv_field(&t, fields[f], f == 6);
    }
    if (t.failed) {
        free(t.s);
        http_reply_error(req, 500, "internal", "out of memory");
        return;
    }
    if (next_cursor(p))
        http_add_header(req, "Next-Cursor", next_cursor(p));
    http_add_header(req, "Content-Disposition", "attachment; filename=\"members.csv\"");
    http_reply(req, 200, "text/csv; charset=utf-8", t.s, t.len);
}

int admin_list_members(struct app *app, struct http_request *req)
{
    (void)app;
    const char *assoc = http_param(req, 0), *g = http_param(req, 1);
    struct member_query q;
    const char *why;
    parse_query(req, &q, &why); /* admin_check_members has accepted it */
    struct group_state *gs = malloc(sizeof *gs);
    if (!gs || group_load(http_redis(req), assoc, g, gs) != STORE_OK) {
        free(gs);
        http_reply_redis_unavailable(req, "read failed");
        return HTTP_DONE;
    }
    if (!gs->exists || (gs->deleted && !gs->list_id[0])) {
        free(gs);
        http_reply_error(req, 404, "unknown_group", "no group \"%s\" in association \"%s\"", g,
                         assoc);
        return HTTP_DONE;
    }
    struct member_status ms;
    if (member_status_load(http_redis(req), assoc, g, gs, &ms) != STORE_OK) {
        free(gs);
        http_reply_redis_unavailable(req, "read failed");
        return HTTP_DONE;
    }
    struct page p = {.ms = &ms};
    if (!page_select(&p, &q))
        http_reply_error(req, 500, "internal", "out of memory");
    else if (wants_csv(req))
        answer_csv(req, &p, gs);
    else
        answer_json(req, &p, gs);
    page_free(&p);
    member_status_free(&ms);
    free(gs);
    return HTTP_DONE;
}

/* ---- one member in every group: GET /v1/associations/{a}/members/{m} ---- */

/* The member's status in group g ({"group_id","group_name","status",...}), or
 * NULL when the group is gone or the member is not in it. STORE_ERR in *rc. */
static json_object *member_in_group(redisContext *c, const char *assoc, const char *g,
                                    const char *member, int *rc)
{
    struct group_state *gs = malloc(sizeof *gs);
    struct member_status ms = {0};
    json_object *o = NULL;
    *rc = gs && group_load(c, assoc, g, gs) == STORE_OK ? STORE_OK : STORE_ERR;
    if (*rc == STORE_OK && gs->exists && !(gs->deleted && !gs->list_id[0]))
        *rc = member_status_load(c, assoc, g, gs, &ms);
    for (size_t i = 0; *rc == STORE_OK && i < ms.members.n && !o; i++) {
        if (strcmp(ms.members.records[i].id, member) != 0)
            continue;
        struct page p = {.ms = &ms};
        bool dup = ms.plan.outcomes[i].reason == PLAN_DUPLICATE_EMAIL;
        struct member_row row;
        row_of(&ms, gs, i, dup ? duplicate_of(&p, i) : NULL, &row);
        o = json_object_new_object();
        json_object_object_add(o, "group_id", json_object_new_string(g));
        json_object_object_add(o, "group_name", json_object_new_string(gs->name));
        /* a group whose sync is off has no list to be on */
        json_object_object_add(o, "status", ms.listed ? json_object_new_string(row.status) : NULL);
        json_object_object_add(
            o, "detail",
            str_or_null(ms.listed ? row.detail : "the group does not sync to Constant Contact"));
        json_object_object_add(o, "duplicate_of", str_or_null(ms.listed ? row.duplicate_of : NULL));
        json_object_object_add(o, "since", str_or_null(row.since));
        page_free(&p);
    }
    member_status_free(&ms);
    free(gs);
    return o;
}

/* The member's record ({"unique_id","name","email"}) or NULL when none is stored. */
static json_object *member_view(redisContext *c, const char *assoc, const char *member, int *rc)
{
    redisReply *r = store_command(c, "HGET %s rec", key_member(assoc, member).s);
    *rc = r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_NIL) ? STORE_OK : STORE_ERR;
    struct member_record m = {0};
    json_object *o = NULL;
    if (*rc == STORE_OK && r->type == REDIS_REPLY_STRING &&
        facts_record_parse(r->str, member, &m) == 0) {
        char name[256];
        member_name(&m, name, sizeof name);
        o = json_object_new_object();
        json_object_object_add(o, "unique_id", json_object_new_string(member));
        json_object_object_add(o, "name", json_object_new_string(name));
        json_object_object_add(o, "email", str_or_null(m.email));
        member_record_clear(&m);
    }
    freeReplyObject(r);
    return o;
}

/* The member's history ({"event_id",...,"outcome","why"}), newest first, into
 * events; STORE_ERR when Redis failed. An entry that is not JSON is skipped. */
static int member_events(redisContext *c, const char *assoc, const char *member,
                         json_object *events)
{
    redisReply *r = store_command(c, "LRANGE %s 0 %d", key_member_events(assoc, member).s,
                                  FACTS_MEMBER_EVENTS - 1);
    int rc = r && r->type == REDIS_REPLY_ARRAY ? STORE_OK : STORE_ERR;
    for (size_t i = 0; rc == STORE_OK && i < r->elements; i++) {
        json_object *e = r->element[i]->type == REDIS_REPLY_STRING
                             ? json_tokener_parse(r->element[i]->str)
                             : NULL;
        if (e)
            json_object_array_add(events, e);
    }
    freeReplyObject(r);
    return rc;
}

static int by_reply_string(const void *a, const void *b)
{
    return strcmp((*(redisReply *const *)a)->str, (*(redisReply *const *)b)->str);
}

int admin_get_member(struct app *app, struct http_request *req)
{
    (void)app;
    const char *assoc = http_param(req, 0), *member = http_param(req, 1);
    redisContext *c = http_redis(req);
    int rc;
    json_object *o = member_view(c, assoc, member, &rc);
    redisReply *ids =
        rc == STORE_OK ? store_command(c, "SMEMBERS %s", key_member_groups(assoc, member).s) : NULL;
    json_object *groups = json_object_new_array();
    rc = ids && ids->type == REDIS_REPLY_ARRAY ? STORE_OK : STORE_ERR;
    if (rc == STORE_OK && ids->elements > 1) /* a set: in group id order, every time the same */
        qsort(ids->element, ids->elements, sizeof *ids->element, by_reply_string);
    for (size_t i = 0; rc == STORE_OK && i < ids->elements; i++) {
        json_object *g = member_in_group(c, assoc, ids->element[i]->str, member, &rc);
        if (g)
            json_object_array_add(groups, g);
    }
    freeReplyObject(ids);
    json_object *events = json_object_new_array();
    if (rc == STORE_OK && o)
        rc = member_events(c, assoc, member, events);
    if (rc != STORE_OK) {
        http_reply_redis_unavailable(req, "read failed");
    } else if (!o) {
        http_reply_error(req, 404, "unknown_member", "no member \"%s\" in association \"%s\"",
                         member, assoc);
    } else {
        json_object_object_add(o, "groups", groups);
        json_object_object_add(o, "events", events);
        groups = events = NULL;
        http_reply_json(req, 200, o);
        o = NULL;
    }
    json_object_put(groups);
    json_object_put(events);
    json_object_put(o);
    return HTTP_DONE;
}
