/*
 * plan.c - the planner: desired state (a group's members) + applied state (what
 * ccsync knows it put on the group's CC list) -> the CC operations that make the
 * list match, and one reason for every member. Pure: no I/O, no clock, no
 * globals; the worker runs it, executes the ops, records what it applied and
 * plans again until the plan is empty.
 *
 * Decisions (beyond the sync rules in docs/, which this file follows):
 *
 * - Which ops, by group state:
 *     deleted or sync off, list ACTIVE    -> DELETE_LIST only
 *     deleted or sync off, no list / list deleted in CC -> nothing
 *     sync on, no list                    -> CREATE_LIST(group name) only; the
 *                                            caller picks the free "NAME - n" and
 *                                            plans again
 *     sync on, list DELETED_IN_CC         -> nothing (error state; ccsync never
 *                                            recreates a list on its own)
 *     sync on, list ACTIVE                -> LEARN, REMOVE..., IMPORT... as needed;
 *                                            nothing at all when nothing differs.
 * - Counts and outcomes are computed the same way in every state, from the members
 *   and the applied state, and describe the desired outcome (the list once the
 *   plan has run), so members = sum of the other counts always. A member to be
 *   imported counts in_list and its outcome is marked pending. Work still to do
 *   is in plan.pending (zero when the group is not being synced or its list is in
 *   error, where nothing will happen until an admin acts).
 * - Each member gets exactly one reason, decided in this order: no_email,
 *   invalid_email; then among members with a usable email, per normalized email,
 *   one winner (Person before Company, then earliest join, then smaller UniqueID by
 *   strcmp, then input position so that even duplicate input is deterministic);
 *   the others are duplicate_email. The winner is do_not_email, else unsubscribed
 *   (applied UNSUBSCRIBED, whatever the names), else rejected (applied REJECTED with
 *   the same names as sent), else in_list. A record whose CustomerType is absent is
 *   treated as a Person.
 * - Removal: an email applied ON_LIST is removed when no member's usable email is
 *   it any more (the member left, changed or lost the email) or when the member
 *   who wins it is do_not_email. UNSUBSCRIBED and REJECTED entries are not on the
 *   list, so they are never removed; the caller keeps them so that a member who
 *   comes back is still not re-added.
 * - Removal needs the CC contact_id. Those without one go into a single LEARN op
 *   (the executor finds the ids in bulk, records them - or drops the applied entry
 *   when CC has no such contact - and plans again); those with one go into REMOVE
 *   chunks in the same plan.
 * - Learning ids (plan_learn_by_reading, plan_first_sync_readback): by requests
 *   alone. A lookup a contact or a page of 500 contacts a request, whichever is
 *   fewer; after first syncs, only a read that costs at most a request per list
 *   (what the first leave of each list would cost anyway) runs at once.
 * - Import: a winner not applied, applied ON_LIST with other names or other
 *   fields, or REJECTED with other names or fields (email changes reach a new
 *   email, so they import too). The names are exactly what plan_contact_names
 *   gives: cut to CC's 50 characters here, so the executor sends, and records,
 *   exactly what the next plan compares with.
 * - Mapped fields (§12): each contact's values are computed here (cut to the
 *   column's length, "" for a text field the member lacks so that CC clears it) and
 *   summed up in a digest of the mapping's version and the values; the applied
 *   state keeps the digest as sent. A different digest is a change to import, with
 *   no membership change needed: the import to a list the contact is on updates it.
 *   A changed mapping changes every digest, so every synced contact is imported
 *   once. Without mapped fields the digest is "" and nothing differs from before.
 *   The duplicate rule decides whose fields a shared email gets: the winner's.
 * - Chunks: IMPORT holds at most import_max_contacts and its estimated JSON body
 *   stays below import_max_bytes. The estimate is an upper bound of the
 *   contacts_json_import body {"import_data":[{"email","first_name","last_name"}],
 *   "list_ids":[id]} as json-c writes it, plain or spaced, escaped '/' included:
 *   every string byte is counted as its longest escape. A single contact larger
 *   than the byte limit (impossible with CC's limits: emails <= 80 and names <= 50
 *   characters) travels alone rather than never. REMOVE holds at most
 *   remove_max_ids. Every list is sorted by email (strcmp of the normalized
 *   email), so a replan after a crash cuts the same chunks.
 * - Applied emails must be normalized and unique: the store keys them so. A
 *   violation is a bug upstream and is refused (invalid_input), not guessed at.
 * - Emails: white space is the ASCII set (isspace in the C locale); lowercasing is
 *   ASCII only (other bytes are kept as sent); length is counted in UTF-8 code
 *   points; inside, any byte <= 0x20 or 0x7f makes an email invalid.
 * - Cost: O(n log n) in members + applied (two sorts and a linear merge); all
 *   strings of a plan live in one arena freed by plan_free.
 */
#include "ccsync/plan.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccsync/fieldmap.h"

/* ---- the plan's memory: one arena, freed at once ------------------------ */

struct arena_block {
    struct arena_block *next;
    size_t used;
    size_t size;
    max_align_t data[];
};

struct plan_arena {
    struct arena_block *head;
};

#define ARENA_BLOCK_BYTES (64 * 1024)

static void *arena_alloc(struct plan_arena *a, size_t n)
{
    size_t align = alignof(max_align_t);
    n = (n + align - 1) / align * align;
    if (n == 0)
        n = align;
    struct arena_block *b = a->head;
    if (b == NULL || b->size - b->used < n) {
        size_t size = n > ARENA_BLOCK_BYTES ? n : ARENA_BLOCK_BYTES;
        b = malloc(sizeof(*b) + size);
        if (b == NULL)
            return NULL;
        b->next = a->head;
        b->used = 0;
        b->size = size;
        a->head = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    return p;
}

static char *arena_strdup(struct plan_arena *a, const char *s)
{
    size_t len = strlen(s);
    char *p = arena_alloc(a, len + 1);
    if (p != NULL)
        memcpy(p, s, len + 1);
    return p;
}

static void arena_free(struct plan_arena *a)
{
    if (a == NULL)
        return;
    struct arena_block *b = a->head;
    while (b != NULL) {
        struct arena_block *next = b->next;
        free(b);
        b = next;
    }
    free(a);
}

/* ---- emails --------------------------------------------------------------- */

/* The C locale's isspace, without depending on the process locale. */
static bool is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* Finds the email without its surrounding white space: [*start, *start + *len). */
static void email_trim(const char *email, const char **start, size_t *len)
{
    const char *b = email;
    while (is_space((unsigned char)*b))
        b++;
    const char *e = b + strlen(b);
    while (e > b && is_space((unsigned char)e[-1]))
        e--;
    *start = b;
    *len = (size_t)(e - b);
}

enum email_class email_classify(const char *email)
{
    if (email == NULL)
        return EMAIL_NONE;
    const char *s;
    size_t len;
    email_trim(email, &s, &len);
    if (len == 0)
        return EMAIL_NONE;

    size_t chars = 0, ats = 0, at = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7f)
            return EMAIL_INVALID;
        if ((c & 0xC0) != 0x80) /* not a UTF-8 continuation byte */
            chars++;
        if (c == '@') {
            ats++;
            at = i;
        }
    }
    if (chars > EMAIL_MAX_CHARS || ats != 1 || at == 0)
        return EMAIL_INVALID;
    if (memchr(s + at + 1, '.', len - at - 1) == NULL)
        return EMAIL_INVALID;
    return EMAIL_OK;
}

int email_normalize(const char *email, char *out, size_t out_size)
{
    if (out_size == 0)
        return -1;
    out[0] = '\0';
    if (email == NULL)
        return -1;
    const char *s;
    size_t len;
    email_trim(email, &s, &len);
    if (len >= out_size)
        return -1;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        out[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    out[len] = '\0';
    return 0;
}

/* ---- contact names ---------------------------------------------------------- */

/* Copies s (NULL -> "") cut to CONTACT_NAME_MAX_CHARS code points. */
static void name_copy(const char *s, char *out)
{
    size_t chars = 0, i = 0;
    if (s != NULL) {
        for (; s[i] != '\0'; i++) {
            bool starts_char = ((unsigned char)s[i] & 0xC0) != 0x80;
            if (starts_char && chars == CONTACT_NAME_MAX_CHARS)
                break;
            if (starts_char)
                chars++;
            out[i] = s[i];
        }
    }
    out[i] = '\0';
}

void plan_contact_names(const struct member_record *m, char *first, char *last)
{
    if (m->type == CUSTOMER_COMPANY) {
        name_copy(m->company, first);
        name_copy("_", last);
    } else {
        name_copy(m->first_name, first);
        name_copy(m->last_name, last);
    }
}

/* ---- names for people and logs ---------------------------------------------- */

const char *plan_reason_name(enum plan_reason r)
{
    switch (r) {
    case PLAN_IN_LIST:
        return "in_list";
    case PLAN_NO_EMAIL:
        return "no_email";
    case PLAN_INVALID_EMAIL:
        return "invalid_email";
    case PLAN_DUPLICATE_EMAIL:
        return "duplicate_email";
    case PLAN_DO_NOT_EMAIL:
        return "do_not_email";
    case PLAN_UNSUBSCRIBED:
        return "unsubscribed";
    case PLAN_REJECTED:
        return "rejected";
    }
    return "unknown";
}

const char *plan_op_type_name(enum plan_op_type t)
{
    switch (t) {
    case PLAN_OP_CREATE_LIST:
        return "create_list";
    case PLAN_OP_DELETE_LIST:
        return "delete_list";
    case PLAN_OP_LEARN:
        return "learn";
    case PLAN_OP_REMOVE:
        return "remove";
    case PLAN_OP_IMPORT:
        return "import";
    }
    return "unknown";
}

struct plan_limits plan_limits_default(void)
{
    struct plan_limits l = {
        .import_max_contacts = 40000,
        .import_max_bytes = 4000000,
        .remove_max_ids = 500,
    };
    return l;
}

/* ---- the JSON size estimate ------------------------------------------------- */

/* Fixed bytes of one contact object beyond its three string values, spaced
 * output and the separating comma included: {"email":,"first_name":,"last_name":}
 * is 37 bytes compact, about 50 spaced. */
#define IMPORT_CONTACT_OVERHEAD 64
/* Fixed bytes of the body beyond the contacts and the list_id string. */
#define IMPORT_BODY_OVERHEAD 128

/* An upper bound of s as a JSON string, quotes included. */
static size_t json_string_bytes(const char *s)
{
    size_t n = 2;
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p < 0x20 || *p == 0x7f)
            n += 6; /* \u00XX */
        else if (*p == '"' || *p == '\\' || *p == '/')
            n += 2;
        else
            n += 1;
    }
    return n;
}

static size_t import_contact_bytes(const struct plan_contact *c)
{
    size_t n = IMPORT_CONTACT_OVERHEAD + json_string_bytes(c->email) +
               json_string_bytes(c->first_name) + json_string_bytes(c->last_name);
    for (size_t i = 0; i < c->n_fields; i++)
        if (c->values[i] != NULL)
            n += 4 + json_string_bytes(c->columns[i]) + json_string_bytes(c->values[i]);
    return n;
}

/* ---- mapped fields ------------------------------------------------------------ */

static uint64_t fnv1a(uint64_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

void plan_fields_digest(const struct plan_fields *fields, const char *const *values, char out[17])
{
    out[0] = '\0';
    if (fields == NULL || fields->n == 0)
        return;
    const char *version = fields->version ? fields->version : "";
    uint64_t h = fnv1a(14695981039346656037ULL, version, strlen(version) + 1);
    for (size_t i = 0; i < fields->n; i++) {
        const char *col = fields->items[i].column;
        h = fnv1a(h, col, strlen(col) + 1);
        h = values[i] ? fnv1a(h, values[i], strlen(values[i]) + 1) : fnv1a(h, "\x01", 1);
    }
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}

/* The member's value of novi: the record's own fields by their Novi names, else an
 * extra field (webhook.c keeps them). NULL when it has none. */
static const char *member_value(const struct member_record *m, const char *novi)
{
    if (strcmp(novi, "Email") == 0)
        return m->email;
    if (strcmp(novi, "FirstName") == 0)
        return m->first_name;
    if (strcmp(novi, "LastName") == 0)
        return m->last_name;
    if (strcmp(novi, "Company") == 0)
        return m->company;
    return member_field_value(m, novi);
}

/* s cut to max code points (never inside a UTF-8 sequence), in the arena. */
static char *cut_copy(struct plan_arena *a, const char *s, size_t max)
{
    size_t chars = 0, i = 0;
    for (; s[i] != '\0'; i++) {
        bool starts_char = ((unsigned char)s[i] & 0xC0) != 0x80;
        if (starts_char && chars == max)
            break;
        chars += starts_char;
    }
    char *p = arena_alloc(a, i + 1);
    if (p != NULL) {
        memcpy(p, s, i);
        p[i] = '\0';
    }
    return p;
}

/* A whole number 1..max as text ("07" → "7"); -1 when raw is not one. */
static int small_int(const char *raw, int max)
{
    int v = 0;
    if (raw == NULL || raw[0] == '\0')
        return -1;
    for (const char *p = raw; *p; p++) {
        if (*p < '0' || *p > '9' || v > max)
            return -1;
        v = v * 10 + (*p - '0');
    }
    return v >= 1 && v <= max ? v : -1;
}

/* The value sent for field f (in the arena); *out NULL when it is left out. */
static int field_value(struct plan_arena *a, const struct plan_field *f, const char *raw,
                       const char **out)
{
    *out = NULL;
    if (f->int_max > 0) {
        int v = small_int(raw, f->int_max);
        char buf[16];
        if (v < 0)
            return 0;
        snprintf(buf, sizeof buf, "%d", v);
        *out = arena_strdup(a, buf);
    } else if (f->date) {
        if (raw == NULL || !fieldmap_is_date(raw))
            return 0;
        *out = arena_strdup(a, raw);
    } else {
        *out = cut_copy(a, raw ? raw : "", f->max_chars);
    }
    return *out != NULL ? 0 : -1;
}

/* ---- building a plan ------------------------------------------------------ */

/* A member with a usable email, competing for it. */
struct candidate {
    const char *email; /* normalized, in the arena */
    const struct plan_member *member;
    size_t index; /* in the members array */
};

/* Work in progress of plan_build, so that helpers stay short. */
struct builder {
    const struct plan_group *group;
    const struct plan_member *members;
    size_t n_members;
    struct plan_limits limits;
    struct plan *out;
    struct plan_error *err;
    size_t ops_cap;

    struct candidate *winners; /* one per usable email, sorted by email */
    size_t n_winners;
    const struct applied_contact **applied; /* sorted by email */
    size_t n_applied;

    struct plan_contact *imports; /* sorted by email */
    size_t n_imports;
    const char **columns;                   /* the mapped fields' columns, shared by every import */
    const struct applied_contact **removes; /* sorted by email */
    size_t n_removes;
};

static int fail(struct builder *b, const char *code, const char *fmt, const char *arg)
{
    snprintf(b->err->code, sizeof(b->err->code), "%s", code);
    snprintf(b->err->message, sizeof(b->err->message), fmt, arg);
    return -1;
}

static int fail_oom(struct builder *b)
{
    return fail(b, "out_of_memory", "%s", "out of memory while planning");
}

static const char *or_empty(const char *s)
{
    return s == NULL ? "" : s;
}

static int customer_rank(const struct member_record *m)
{
    return m->type == CUSTOMER_COMPANY ? 1 : 0; /* a Person (or unknown) first */
}

/* Orders candidates by email, then best claim on it first. */
static int candidate_cmp(const void *pa, const void *pb)
{
    const struct candidate *a = pa, *b = pb;
    int c = strcmp(a->email, b->email);
    if (c != 0)
        return c;
    int ra = customer_rank(a->member->rec), rb = customer_rank(b->member->rec);
    if (ra != rb)
        return ra < rb ? -1 : 1;
    if (a->member->join_ts_ns != b->member->join_ts_ns)
        return a->member->join_ts_ns < b->member->join_ts_ns ? -1 : 1;
    c = strcmp(a->member->rec->id, b->member->rec->id);
    if (c != 0)
        return c;
    return a->index < b->index ? -1 : a->index > b->index;
}

static int applied_cmp(const void *pa, const void *pb)
{
    const struct applied_contact *a = *(const struct applied_contact *const *)pa;
    const struct applied_contact *b = *(const struct applied_contact *const *)pb;
    return strcmp(a->email, b->email);
}

static int validate_input(struct builder *b, const struct applied_contact *applied,
                          size_t n_applied)
{
    const struct plan_group *g = b->group;
    if (g == NULL)
        return fail(b, "invalid_input", "%s", "no group given");
    if (g->sync_enabled && !g->deleted && g->list.state == PLAN_LIST_NONE &&
        (g->name == NULL || g->name[0] == '\0'))
        return fail(b, "invalid_input", "group %s has no name for its new list", or_empty(g->id));
    if (g->list.state == PLAN_LIST_ACTIVE &&
        (g->list.list_id == NULL || g->list.list_id[0] == '\0'))
        return fail(b, "invalid_input", "group %s has an active list without list_id",
                    or_empty(g->id));
    for (size_t i = 0; i < b->n_members; i++) {
        if (b->members[i].rec == NULL)
            return fail(b, "invalid_input", "group %s has a member without a record",
                        or_empty(g->id));
    }
    if (b->limits.import_max_contacts == 0 || b->limits.import_max_bytes == 0 ||
        b->limits.remove_max_ids == 0)
        return fail(b, "invalid_input", "%s", "plan limits must be positive");

    char buf[EMAIL_BUF_SIZE];
    for (size_t i = 0; i < n_applied; i++) {
        const char *e = applied[i].email;
        if (e == NULL || e[0] == '\0' || email_normalize(e, buf, sizeof(buf)) != 0 ||
            strcmp(buf, e) != 0)
            return fail(b, "invalid_input", "applied email \"%.200s\" is not normalized",
                        or_empty(e));
    }
    return 0;
}

/* Classifies every member's email; the usable ones become candidates. */
static int collect_candidates(struct builder *b, struct candidate *cands, size_t *n_cands)
{
    char buf[EMAIL_BUF_SIZE];
    *n_cands = 0;
    for (size_t i = 0; i < b->n_members; i++) {
        const struct member_record *m = b->members[i].rec;
        enum email_class cls = email_classify(m->email);
        if (cls == EMAIL_NONE) {
            b->out->outcomes[i].reason = PLAN_NO_EMAIL;
            continue;
        }
        /* An OK email is at most 80 code points, so it always fits buf. */
        if (cls == EMAIL_INVALID || email_normalize(m->email, buf, sizeof(buf)) != 0) {
            b->out->outcomes[i].reason = PLAN_INVALID_EMAIL;
            continue;
        }
        char *email = arena_strdup(b->out->arena, buf);
        if (email == NULL)
            return fail_oom(b);
        cands[*n_cands] = (struct candidate){.email = email, .member = &b->members[i], .index = i};
        (*n_cands)++;
    }
    return 0;
}

/* Keeps the first (best) candidate of each email; the rest are duplicates. */
static void pick_winners(struct builder *b, struct candidate *cands, size_t n_cands)
{
    qsort(cands, n_cands, sizeof(*cands), candidate_cmp);
    size_t n = 0;
    for (size_t i = 0; i < n_cands; i++) {
        if (n > 0 && strcmp(cands[n - 1].email, cands[i].email) == 0) {
            b->out->outcomes[cands[i].index].reason = PLAN_DUPLICATE_EMAIL;
            continue;
        }
        cands[n++] = cands[i];
    }
    b->winners = cands;
    b->n_winners = n;
}

static int sort_applied(struct builder *b, const struct applied_contact *applied, size_t n_applied)
{
    b->applied = malloc((n_applied ? n_applied : 1) * sizeof(*b->applied));
    if (b->applied == NULL)
        return fail_oom(b);
    for (size_t i = 0; i < n_applied; i++)
        b->applied[i] = &applied[i];
    b->n_applied = n_applied;
    qsort(b->applied, n_applied, sizeof(*b->applied), applied_cmp);
    for (size_t i = 1; i < n_applied; i++) {
        if (strcmp(b->applied[i - 1]->email, b->applied[i]->email) == 0)
            return fail(b, "invalid_input", "applied email \"%.200s\" appears twice",
                        b->applied[i]->email);
    }
    return 0;
}

/* The winner's mapped field values and their digest (values NULL without fields). */
static int member_fields(struct builder *b, const struct member_record *m, const char ***values,
                         char digest[17])
{
    const struct plan_fields *f = b->group->fields;
    *values = NULL;
    digest[0] = '\0';
    if (f == NULL || f->n == 0)
        return 0;
    if (b->columns == NULL) {
        b->columns = arena_alloc(b->out->arena, f->n * sizeof *b->columns);
        if (b->columns == NULL)
            return fail_oom(b);
        for (size_t i = 0; i < f->n; i++)
            b->columns[i] = f->items[i].column;
    }
    *values = arena_alloc(b->out->arena, f->n * sizeof **values);
    if (*values == NULL)
        return fail_oom(b);
    for (size_t i = 0; i < f->n; i++)
        if (field_value(b->out->arena, &f->items[i], member_value(m, f->items[i].novi),
                        &(*values)[i]) != 0)
            return fail_oom(b);
    plan_fields_digest(f, *values, digest);
    return 0;
}

static int add_import(struct builder *b, const struct candidate *w, const char *first,
                      const char *last, const char **values, const char *digest)
{
    struct plan_contact *c = &b->imports[b->n_imports];
    memset(c, 0, sizeof *c);
    c->email = w->email;
    c->first_name = arena_strdup(b->out->arena, first);
    c->last_name = arena_strdup(b->out->arena, last);
    c->fields = arena_strdup(b->out->arena, digest);
    if (c->first_name == NULL || c->last_name == NULL || c->fields == NULL)
        return fail_oom(b);
    if (values != NULL) {
        c->n_fields = b->group->fields->n;
        c->columns = b->columns;
        c->values = values;
    }
    b->n_imports++;
    b->out->outcomes[w->index].pending = true;
    return 0;
}

static void add_remove(struct builder *b, const struct applied_contact *a)
{
    b->removes[b->n_removes++] = a;
}

/* Characters (not bytes) of a UTF-8 string. */
static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

/* Decides one winning email; a is what was applied for it, or NULL. */
static int decide_winner(struct builder *b, const struct candidate *w,
                         const struct applied_contact *a)
{
    struct plan_outcome *o = &b->out->outcomes[w->index];
    if (w->member->rec->do_not_email) {
        o->reason = PLAN_DO_NOT_EMAIL;
        if (a != NULL && a->status == APPLIED_ON_LIST)
            add_remove(b, a);
        return 0;
    }
    if (a != NULL && a->status == APPLIED_UNSUBSCRIBED) {
        o->reason = PLAN_UNSUBSCRIBED;
        return 0;
    }
    if (utf8_chars(w->email) > IMPORT_EMAIL_MAX_CHARS && !(a && a->status == APPLIED_ON_LIST)) {
        /* Valid for CC (up to 80) but longer than its bulk import takes: one such
         * address would make CC refuse the whole import, so it is not sent. */
        o->reason = PLAN_REJECTED;
        return 0;
    }
    char first[CONTACT_NAME_BUF_SIZE], last[CONTACT_NAME_BUF_SIZE], digest[17];
    plan_contact_names(w->member->rec, first, last);
    const char **values;
    if (member_fields(b, w->member->rec, &values, digest) != 0)
        return -1;
    bool same = a != NULL && strcmp(or_empty(a->first_name), first) == 0 &&
                strcmp(or_empty(a->last_name), last) == 0 &&
                strcmp(or_empty(a->fields), digest) == 0;
    if (a != NULL && a->status == APPLIED_REJECTED && same) {
        o->reason = PLAN_REJECTED;
        return 0;
    }
    o->reason = PLAN_IN_LIST;
    if (a != NULL && a->status == APPLIED_ON_LIST && same)
        return 0;
    return add_import(b, w, first, last, values, digest);
}

/* Walks winners and applied contacts together, both sorted by email. */
static int merge(struct builder *b)
{
    b->imports = arena_alloc(b->out->arena, (b->n_winners + 1) * sizeof(*b->imports));
    b->removes = malloc((b->n_applied + 1) * sizeof(*b->removes));
    if (b->imports == NULL || b->removes == NULL)
        return fail_oom(b);
    size_t i = 0, j = 0;
    while (i < b->n_winners || j < b->n_applied) {
        int c;
        if (i == b->n_winners)
            c = 1;
        else if (j == b->n_applied)
            c = -1;
        else
            c = strcmp(b->winners[i].email, b->applied[j]->email);
        if (c > 0) { /* applied, no longer wanted */
            if (b->applied[j]->status == APPLIED_ON_LIST)
                add_remove(b, b->applied[j]);
            j++;
            continue;
        }
        if (decide_winner(b, &b->winners[i], c == 0 ? b->applied[j] : NULL) != 0)
            return -1;
        i++;
        if (c == 0)
            j++;
    }
    return 0;
}

static void count_outcomes(struct plan *p)
{
    struct plan_counts *k = &p->counts;
    k->members = p->n_outcomes;
    for (size_t i = 0; i < p->n_outcomes; i++) {
        switch (p->outcomes[i].reason) {
        case PLAN_IN_LIST:
            k->in_list++;
            break;
        case PLAN_NO_EMAIL:
            k->no_email++;
            break;
        case PLAN_INVALID_EMAIL:
            k->invalid_email++;
            break;
        case PLAN_DUPLICATE_EMAIL:
            k->duplicate_email++;
            break;
        case PLAN_DO_NOT_EMAIL:
            k->do_not_email++;
            break;
        case PLAN_UNSUBSCRIBED:
            k->unsubscribed++;
            break;
        case PLAN_REJECTED:
            k->rejected++;
            break;
        }
    }
}

static struct plan_op *push_op(struct builder *b, enum plan_op_type type)
{
    struct plan *p = b->out;
    if (p->n_ops == b->ops_cap) {
        size_t cap = b->ops_cap ? b->ops_cap * 2 : 4;
        struct plan_op *ops = realloc(p->ops, cap * sizeof(*ops));
        if (ops == NULL) {
            fail_oom(b);
            return NULL;
        }
        p->ops = ops;
        b->ops_cap = cap;
    }
    struct plan_op *op = &p->ops[p->n_ops++];
    memset(op, 0, sizeof(*op));
    op->type = type;
    return op;
}

static int emit_learn_and_removes(struct builder *b, const char *list_id)
{
    struct plan_arena *arena = b->out->arena;
    const char **ids = arena_alloc(arena, (b->n_removes + 1) * sizeof(*ids));
    const char **emails = arena_alloc(arena, (b->n_removes + 1) * sizeof(*emails));
    if (ids == NULL || emails == NULL)
        return fail_oom(b);
    size_t n_ids = 0, n_emails = 0;
    for (size_t i = 0; i < b->n_removes; i++) {
        const struct applied_contact *a = b->removes[i];
        const char *s = arena_strdup(
            arena, a->contact_id != NULL && a->contact_id[0] != '\0' ? a->contact_id : a->email);
        if (s == NULL)
            return fail_oom(b);
        if (a->contact_id != NULL && a->contact_id[0] != '\0')
            ids[n_ids++] = s;
        else
            emails[n_emails++] = s;
    }
    b->out->pending.removes = b->n_removes;
    b->out->pending.learns = n_emails;

    if (n_emails > 0) {
        struct plan_op *op = push_op(b, PLAN_OP_LEARN);
        if (op == NULL)
            return -1;
        op->n_emails = n_emails;
        op->emails = emails;
    }
    for (size_t i = 0; i < n_ids; i += b->limits.remove_max_ids) {
        struct plan_op *op = push_op(b, PLAN_OP_REMOVE);
        if (op == NULL)
            return -1;
        op->list_id = list_id;
        op->contact_ids = ids + i;
        op->n_contact_ids =
            n_ids - i < b->limits.remove_max_ids ? n_ids - i : b->limits.remove_max_ids;
    }
    return 0;
}

static int emit_imports(struct builder *b, const char *list_id)
{
    size_t body = IMPORT_BODY_OVERHEAD + json_string_bytes(list_id);
    size_t i = 0;
    b->out->pending.imports = b->n_imports;
    while (i < b->n_imports) {
        struct plan_op *op = push_op(b, PLAN_OP_IMPORT);
        if (op == NULL)
            return -1;
        op->list_id = list_id;
        op->contacts = &b->imports[i];
        op->json_bytes = body;
        while (i < b->n_imports && op->n_contacts < b->limits.import_max_contacts) {
            size_t bytes = import_contact_bytes(&b->imports[i]);
            if (op->n_contacts > 0 && op->json_bytes + bytes >= b->limits.import_max_bytes)
                break;
            op->json_bytes += bytes;
            op->n_contacts++;
            i++;
        }
    }
    return 0;
}

/* Turns the group's state and the merge's findings into ops. */
static int emit_ops(struct builder *b)
{
    const struct plan_group *g = b->group;
    struct plan_arena *arena = b->out->arena;
    bool wanted = g->sync_enabled && !g->deleted;

    if (!wanted || g->list.state == PLAN_LIST_DELETED_IN_CC) {
        /* Nothing will be imported or removed: no outcome is pending. */
        for (size_t i = 0; i < b->out->n_outcomes; i++)
            b->out->outcomes[i].pending = false;
        if (wanted || g->list.state != PLAN_LIST_ACTIVE)
            return 0;
        struct plan_op *op = push_op(b, PLAN_OP_DELETE_LIST);
        if (op == NULL)
            return -1;
        op->list_id = arena_strdup(arena, g->list.list_id);
        return op->list_id == NULL ? fail_oom(b) : 0;
    }
    if (g->list.state == PLAN_LIST_NONE) {
        b->out->pending.imports = b->n_imports;
        b->out->pending.removes = b->n_removes;
        struct plan_op *op = push_op(b, PLAN_OP_CREATE_LIST);
        if (op == NULL)
            return -1;
        op->list_name = arena_strdup(arena, g->name);
        return op->list_name == NULL ? fail_oom(b) : 0;
    }
    const char *list_id = arena_strdup(arena, g->list.list_id);
    if (list_id == NULL)
        return fail_oom(b);
    if (emit_learn_and_removes(b, list_id) != 0)
        return -1;
    return emit_imports(b, list_id);
}

int plan_build(const struct plan_group *group, const struct plan_member *members, size_t n_members,
               const struct applied_contact *applied, size_t n_applied,
               const struct plan_limits *limits, struct plan *out, struct plan_error *err)
{
    struct plan_error scratch;
    struct builder b = {
        .group = group,
        .members = members,
        .n_members = n_members,
        .limits = limits != NULL ? *limits : plan_limits_default(),
        .out = out,
        .err = err != NULL ? err : &scratch,
    };
    memset(out, 0, sizeof(*out));
    memset(b.err, 0, sizeof(*b.err));
    struct candidate *cands = NULL;

    if (validate_input(&b, applied, n_applied) != 0)
        goto error;
    out->arena = calloc(1, sizeof(*out->arena));
    out->outcomes = calloc(n_members ? n_members : 1, sizeof(*out->outcomes));
    cands = malloc((n_members ? n_members : 1) * sizeof(*cands));
    if (out->arena == NULL || out->outcomes == NULL || cands == NULL) {
        fail_oom(&b);
        goto error;
    }
    out->n_outcomes = n_members;

    size_t n_cands;
    if (collect_candidates(&b, cands, &n_cands) != 0)
        goto error;
    pick_winners(&b, cands, n_cands);
    if (sort_applied(&b, applied, n_applied) != 0 || merge(&b) != 0)
        goto error;
    count_outcomes(out);
    if (emit_ops(&b) != 0)
        goto error;

    free(cands);
    free(b.applied);
    free(b.removes);
    return 0;

error:
    free(cands);
    free(b.applied);
    free(b.removes);
    plan_free(out);
    return -1;
}

void plan_free(struct plan *p)
{
    if (p == NULL)
        return;
    free(p->outcomes);
    free(p->ops);
    arena_free(p->arena);
    memset(p, 0, sizeof(*p));
}

/* ---- merging removals of several lists ------------------------------------ */

/* A contact of the round: the lists it leaves and those it must not be sent to. */
struct leaver {
    const char *contact_id;
    const char *email;
    bool *leaves;    /* [n_lists] */
    bool *forbidden; /* [n_lists]: email held there and not leaving */
    size_t n_leaves;
};

struct batch_build {
    bool *lists;     /* [n_lists] named by the request */
    bool *forbidden; /* [n_lists] union of its contacts' forbidden lists */
    size_t n_lists;
    size_t n_contacts;
};

static int leave_cmp(const void *pa, const void *pb)
{
    const struct plan_leave *a = *(const struct plan_leave *const *)pa;
    const struct plan_leave *b = *(const struct plan_leave *const *)pb;
    int c = strcmp(a->contact_id, b->contact_id);
    if (c != 0)
        return c;
    return a->list < b->list ? -1 : a->list > b->list;
}

static int held_cmp(const void *key, const void *elem)
{
    return strcmp((const char *)key, *(const char *const *)elem);
}

static bool list_holds(const struct plan_round_list *l, const char *email)
{
    return l->n_held > 0 && bsearch(email, l->held, l->n_held, sizeof(*l->held), held_cmp) != NULL;
}

/* Whether leaver c can join batch b without breaking a contact's stay. */
static bool batch_fits(const struct batch_build *b, const struct leaver *c, size_t n_lists,
                       size_t max_ids, size_t max_lists)
{
    if (b->n_contacts >= max_ids)
        return false;
    size_t named = b->n_lists;
    for (size_t k = 0; k < n_lists; k++) {
        bool in_b = b->lists[k];
        if (c->leaves[k] && b->forbidden[k])
            return false; /* a contact of b must stay on k */
        if (c->forbidden[k] && (in_b || c->leaves[k]))
            return false; /* c must stay on a list b names */
        if (c->leaves[k] && !in_b)
            named++;
    }
    return named <= max_lists;
}

static void batch_add(struct batch_build *b, const struct leaver *c, size_t n_lists)
{
    for (size_t k = 0; k < n_lists; k++) {
        if (c->leaves[k] && !b->lists[k]) {
            b->lists[k] = true;
            b->n_lists++;
        }
        b->forbidden[k] = b->forbidden[k] || c->forbidden[k];
    }
    b->n_contacts++;
}

/* One plan_merge_removes at work: its input and its scratch arrays. */
struct merge {
    const struct plan_leave *leaves;
    size_t n_leaves;
    const struct plan_round_list *lists;
    size_t n_lists, max_ids, max_lists;
    struct builder b; /* only its err */
    const struct plan_leave **sorted;
    struct leaver *cs; /* one per contact id */
    size_t n_cs;
    struct batch_build *bs;
    size_t n_bs;
    size_t *batch_of; /* [n_cs]: the batch each leaver went into */
    bool *flags;      /* the leavers' flags, then the batches' */
};

static int merge_alloc(struct merge *m, struct plan_merged_removes *out)
{
    size_t n = m->n_leaves ? m->n_leaves : 1;
    m->sorted = malloc(n * sizeof(*m->sorted));
    m->cs = calloc(n, sizeof(*m->cs));
    m->batch_of = calloc(n, sizeof(*m->batch_of));
    m->bs = calloc(n, sizeof(*m->bs));
    m->flags = calloc(n * 4 * (m->n_lists ? m->n_lists : 1), sizeof(*m->flags));
    out->arena = calloc(1, sizeof(*out->arena));
    if (m->sorted == NULL || m->cs == NULL || m->batch_of == NULL || m->bs == NULL ||
        m->flags == NULL || out->arena == NULL)
        return fail_oom(&m->b);
    return 0;
}

static void merge_free(struct merge *m)
{
    free(m->sorted);
    free(m->cs);
    free(m->batch_of);
    free(m->bs);
    free(m->flags);
}

/* Checks the limits and the leaves, and sorts the leaves by contact, then list. */
static int sort_leaves(struct merge *m)
{
    if (m->max_ids == 0 || m->max_lists == 0)
        return fail(&m->b, "invalid_input", "%s", "merge limits must be positive");
    for (size_t i = 0; i < m->n_leaves; i++) {
        const struct plan_leave *l = &m->leaves[i];
        if (l->list >= m->n_lists || l->contact_id == NULL || l->contact_id[0] == '\0' ||
            l->email == NULL)
            return fail(&m->b, "invalid_input",
                        "leave of \"%.200s\" names no known list or contact", or_empty(l->email));
        m->sorted[i] = l;
    }
    qsort(m->sorted, m->n_leaves, sizeof(*m->sorted), leave_cmp);
    return 0;
}

/* One leaver per contact id, its flags in flags[]: the lists it leaves, then
 * those it must not be named with. */
static int gather_leavers(struct merge *m)
{
    size_t n_lists = m->n_lists;
    for (size_t i = 0; i < m->n_leaves; i++) {
        const struct plan_leave *l = m->sorted[i];
        if (m->n_cs == 0 || strcmp(m->cs[m->n_cs - 1].contact_id, l->contact_id) != 0) {
            struct leaver *c = &m->cs[m->n_cs];
            c->contact_id = l->contact_id;
            c->email = l->email;
            c->leaves = m->flags + m->n_cs * 2 * n_lists;
            c->forbidden = c->leaves + n_lists;
            m->n_cs++;
        }
        struct leaver *c = &m->cs[m->n_cs - 1];
        if (!c->leaves[l->list]) {
            c->leaves[l->list] = true;
            c->n_leaves++;
        }
    }
    for (size_t i = 0; i < m->n_cs; i++) {
        struct leaver *c = &m->cs[i];
        if (c->n_leaves > m->max_lists)
            return fail(&m->b, "invalid_input",
                        "contact %.200s leaves more lists than one request takes", c->contact_id);
        for (size_t k = 0; k < n_lists; k++)
            c->forbidden[k] = !c->leaves[k] && list_holds(&m->lists[k], c->email);
    }
    return 0;
}

/* First fit. Batch flags follow the leavers' flags in flags[]. */
static void first_fit(struct merge *m)
{
    size_t n_lists = m->n_lists;
    bool *batch_flags = m->flags + m->n_leaves * 2 * n_lists;
    for (size_t i = 0; i < m->n_cs; i++) {
        size_t k = 0;
        while (k < m->n_bs && !batch_fits(&m->bs[k], &m->cs[i], n_lists, m->max_ids, m->max_lists))
            k++;
        if (k == m->n_bs) {
            m->bs[k].lists = batch_flags + k * 2 * n_lists;
            m->bs[k].forbidden = m->bs[k].lists + n_lists;
            m->n_bs++;
        }
        batch_add(&m->bs[k], &m->cs[i], n_lists);
        m->batch_of[i] = k;
    }
}

/* The batches as requests, allocated in out's arena. */
static int emit_batches(struct merge *m, struct plan_merged_removes *out)
{
    size_t n_bs = m->n_bs;
    out->batches = arena_alloc(out->arena, (n_bs ? n_bs : 1) * sizeof(*out->batches));
    if (out->batches == NULL)
        return fail_oom(&m->b);
    memset(out->batches, 0, (n_bs ? n_bs : 1) * sizeof(*out->batches));
    for (size_t k = 0; k < n_bs; k++) {
        struct plan_remove_batch *pb = &out->batches[k];
        pb->contact_ids = arena_alloc(out->arena, m->bs[k].n_contacts * sizeof(*pb->contact_ids));
        pb->lists = arena_alloc(out->arena, m->bs[k].n_lists * sizeof(*pb->lists));
        if (pb->contact_ids == NULL || pb->lists == NULL)
            return fail_oom(&m->b);
        for (size_t l = 0; l < m->n_lists; l++)
            if (m->bs[k].lists[l])
                pb->lists[pb->n_lists++] = l;
    }
    for (size_t i = 0; i < m->n_cs; i++) {
        struct plan_remove_batch *pb = &out->batches[m->batch_of[i]];
        const char *id = arena_strdup(out->arena, m->cs[i].contact_id);
        if (id == NULL)
            return fail_oom(&m->b);
        pb->contact_ids[pb->n_contact_ids++] = id;
    }
    out->n_batches = n_bs;
    return 0;
}

int plan_merge_removes(const struct plan_leave *leaves, size_t n_leaves,
                       const struct plan_round_list *lists, size_t n_lists, size_t max_ids,
                       size_t max_lists, struct plan_merged_removes *out, struct plan_error *err)
{
    struct plan_error scratch;
    struct merge m = {.leaves = leaves,
                      .n_leaves = n_leaves,
                      .lists = lists,
                      .n_lists = n_lists,
                      .max_ids = max_ids,
                      .max_lists = max_lists,
                      .b = {.err = err != NULL ? err : &scratch}};
    memset(out, 0, sizeof(*out));
    memset(m.b.err, 0, sizeof(*m.b.err));
    int rc = merge_alloc(&m, out);
    if (rc == 0)
        rc = sort_leaves(&m);
    if (rc == 0)
        rc = gather_leavers(&m);
    if (rc == 0) {
        first_fit(&m);
        rc = emit_batches(&m, out);
    }
    merge_free(&m);
    if (rc != 0)
        plan_merged_removes_free(out);
    return rc;
}

void plan_merged_removes_free(struct plan_merged_removes *m)
{
    if (m == NULL)
        return;
    arena_free(m->arena);
    memset(m, 0, sizeof(*m));
}

/* ---- learning contact ids ---- */

bool plan_learn_by_reading(size_t n_emails, size_t n_listed, size_t page_size)
{
    size_t pages = page_size ? (n_listed + page_size - 1) / page_size : n_listed;
    return n_emails > 0 && pages <= n_emails;
}

struct sized_list {
    size_t size, index;
};

static int by_size(const void *pa, const void *pb)
{
    const struct sized_list *a = pa, *b = pb;
    if (a->size != b->size)
        return a->size < b->size ? -1 : 1;
    return a->index < b->index ? -1 : a->index > b->index;
}

size_t plan_first_sync_readback(const size_t *sizes, size_t n, size_t page_size, bool *read)
{
    for (size_t i = 0; i < n; i++)
        read[i] = false;
    struct sized_list *order = malloc((n ? n : 1) * sizeof *order);
    if (order == NULL)
        return 0; /* nothing read now: the leaves learn what they need */
    for (size_t i = 0; i < n; i++)
        order[i] = (struct sized_list){sizes[i], i};
    qsort(order, n, sizeof *order, by_size);
    /* The prefix means only grow (sorted by size), so the lists that fit are a
     * prefix: the smallest k with sum <= k * page_size. */
    size_t sum = 0, k = 0;
    while (k < n && sum + order[k].size <= (k + 1) * page_size) {
        sum += order[k].size;
        read[order[k++].index] = true;
    }
    free(order);
    return k;
}
