/*
 * plan.h - the planner: given what a group should look like in Constant Contact
 * (its members, from Novi's facts) and what ccsync knows it has applied to the
 * group's CC list, decides the CC operations that close the gap, and explains
 * every member that is not on the list. Pure: no I/O, no clock, no global state,
 * so every sync decision can be tested in microseconds.
 *
 * The decisions behind the rules are written at the top of service/plan.c.
 */
#ifndef CCSYNC_PLAN_H
#define CCSYNC_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ccsync/model.h"

/* ---- emails ------------------------------------------------------------ */

/* CC's limit on an email, in characters (UTF-8 code points). */
#define EMAIL_MAX_CHARS 80
/* A buffer that holds any usable normalized email and its NUL. */
#define EMAIL_BUF_SIZE (EMAIL_MAX_CHARS * 4 + 1)
/* contacts_json_import takes emails of at most 50 characters (its schema's
 * maxLength); a valid longer email is counted rejected and never imported. */
#define IMPORT_EMAIL_MAX_CHARS 50
/* CC's limit on first_name and last_name, in characters. */
#define CONTACT_NAME_MAX_CHARS 50

enum email_class {
    EMAIL_NONE = 0, /* absent, null, empty or only white space: counts no_email */
    EMAIL_INVALID,  /* counts invalid_email */
    EMAIL_OK,
};

/* Classifies a raw email (as Novi sent it; NULL allowed), after trimming
 * surrounding white space: invalid when it has not exactly one '@', an empty
 * local part, a domain without a dot, any white space or control character
 * inside, or more than EMAIL_MAX_CHARS characters. */
enum email_class email_classify(const char *email);

/* Writes email trimmed of surrounding white space and lowercased (ASCII) into
 * out: the form in which emails are compared and keyed (applied state in the
 * store, the planner's merge). Returns 0, or -1 when email is NULL or the result
 * does not fit in out_size (out is then ""). EMAIL_BUF_SIZE always fits an
 * email that email_classify calls EMAIL_OK. */
int email_normalize(const char *email, char *out, size_t out_size);

/* ---- contact names ------------------------------------------------------ */

/* The first and last name ccsync sends to CC for a member, exactly as the
 * planner compares them with what was sent before: a Company record gives
 * first = Company, last = "_"; any other record FirstName / LastName. Absent
 * fields give "". Each is cut to CONTACT_NAME_MAX_CHARS characters (never inside
 * a UTF-8 sequence). first and last need CONTACT_NAME_BUF_SIZE bytes. */
#define CONTACT_NAME_BUF_SIZE (CONTACT_NAME_MAX_CHARS * 4 + 1)
void plan_contact_names(const struct member_record *m, char *first, char *last);

/* ---- input --------------------------------------------------------------- */

enum plan_list_state {
    PLAN_LIST_NONE = 0,      /* ccsync has no list for the group */
    PLAN_LIST_ACTIVE,        /* list_id exists in CC as far as ccsync knows */
    PLAN_LIST_DELETED_IN_CC, /* error list_deleted_in_constant_contact */
};

struct plan_list {
    enum plan_list_state state;
    const char *list_id;   /* required when ACTIVE */
    const char *list_name; /* as last seen in CC; may be NULL */
};

/* A mapped contact field (§12): the member field novi ("MemberType",
 * "CustomFields.Chapter", or FirstName, LastName, Company, Email) goes to the import
 * column ("phone", "cf:Chapter"). Text is cut to max_chars characters and sent ""
 * when the member has none (so a cleared field clears in CC); an integer column
 * (int_max > 0: birthday_month 12, birthday_day 31) and a date column (date) are
 * left out unless the value is one. */
struct plan_field {
    const char *novi;
    const char *column;
    size_t max_chars;
    int int_max;
    bool date;
};

/* The association's mapped fields, those CC has (custom fields it made). version
 * changes with the mapping, so a changed mapping changes every contact's digest. */
struct plan_fields {
    size_t n;
    const struct plan_field *items;
    const char *version;
};

/* The group fact and its list link. Strings are borrowed for the call. */
struct plan_group {
    const char *id;
    const char *name; /* the name a new list gets (the caller applies "NAME - n") */
    bool sync_enabled;
    bool deleted;
    struct plan_list list;
    const struct plan_fields *fields; /* NULL or none: email and names only */
};

/* The fields digest plan_build compares for a member: "" without mapped fields, else
 * 16 hex digits over the mapping's version and the values sent. out: 17 bytes.
 * values (fields->n of them, arena or caller memory) get the values as sent. */
void plan_fields_digest(const struct plan_fields *fields, const char *const *values, char out[17]);

/* A member currently in the group and active. rec is borrowed. */
struct plan_member {
    const struct member_record *rec;
    int64_t join_ts_ns; /* timestamp of the fact that put the member in the group */
};

enum applied_status {
    APPLIED_ON_LIST = 0,  /* imported to the list (and not removed since) */
    APPLIED_UNSUBSCRIBED, /* CC says the contact unsubscribed: never re-added */
    APPLIED_REJECTED,     /* CC refused the contact as sent */
};

/* What ccsync knows it applied to the group's list, one per email. Strings are
 * borrowed for the call. email must be normalized (email_normalize) and unique
 * in the array; plan_build refuses the input otherwise. */
struct applied_contact {
    const char *email;
    const char *contact_id; /* "" (or NULL) when ccsync does not know it yet */
    const char *first_name; /* as last sent */
    const char *last_name;  /* as last sent */
    enum applied_status status;
    const char *fields; /* the fields digest as last sent; NULL or "" = none */
};

/* CC's bulk limits, parameters so that tests can use small ones. */
struct plan_limits {
    size_t import_max_contacts; /* contacts in one contacts_json_import */
    size_t import_max_bytes;    /* the estimated JSON body stays strictly below this */
    size_t remove_max_ids;      /* contact_ids in one remove_list_memberships */
};

/* 40,000 contacts, 4,000,000 bytes (CC says "< 4 MB"), 500 contact_ids. */
struct plan_limits plan_limits_default(void);

/* ---- output -------------------------------------------------------------- */

/* Why a member is, or is not, on the list. Each member has exactly one. */
enum plan_reason {
    PLAN_IN_LIST = 0,
    PLAN_NO_EMAIL,
    PLAN_INVALID_EMAIL,
    PLAN_DUPLICATE_EMAIL,
    PLAN_DO_NOT_EMAIL,
    PLAN_UNSUBSCRIBED,
    PLAN_REJECTED,
};

/* The status API's word for a reason: "in_list", "no_email", ... */
const char *plan_reason_name(enum plan_reason r);

/* Counts describe the desired outcome, the list as it will be once the plan's
 * operations have run: members = in_list + no_email + invalid_email +
 * duplicate_email + do_not_email + unsubscribed + rejected, always. */
struct plan_counts {
    size_t members;
    size_t no_email;
    size_t invalid_email;
    size_t duplicate_email;
    size_t do_not_email;
    size_t unsubscribed;
    size_t rejected;
    size_t in_list;
};

/* One member's outcome; plan.outcomes[i] belongs to members[i]. */
struct plan_outcome {
    enum plan_reason reason;
    bool pending; /* PLAN_IN_LIST but not there yet: part of an import op */
};

/* The work still to do on the list's contacts (what status calls
 * pending_changes is imports + removes). */
struct plan_pending {
    size_t imports; /* contacts in IMPORT ops */
    size_t removes; /* contacts to take off the list, known contact_id or not */
    size_t learns;  /* of those, the ones whose contact_id must be learned first */
};

enum plan_op_type {
    PLAN_OP_CREATE_LIST = 0, /* list_name */
    PLAN_OP_DELETE_LIST,     /* list_id */
    PLAN_OP_LEARN,           /* emails: find their contact_ids, then plan again */
    PLAN_OP_REMOVE,          /* list_id, contact_ids */
    PLAN_OP_IMPORT,          /* list_id, contacts */
};

/* "create_list", "delete_list", "learn", "remove", "import". */
const char *plan_op_type_name(enum plan_op_type t);

struct plan_contact {
    const char *email; /* normalized */
    const char *first_name;
    const char *last_name;
    /* the group's mapped fields: values[i] goes to fields->items[i].column (NULL: left
     * out); fields is the digest to record once the import has run */
    size_t n_fields;
    const char *const *columns;
    const char *const *values;
    const char *fields;
};

/* One CC operation. Only the fields of its type are set; all strings belong to
 * the plan and live until plan_free. */
struct plan_op {
    enum plan_op_type type;
    const char *list_id;   /* DELETE_LIST, REMOVE, IMPORT */
    const char *list_name; /* CREATE_LIST */

    size_t n_contacts; /* IMPORT */
    const struct plan_contact *contacts;
    size_t json_bytes; /* IMPORT: the body size estimate, >= the real one */

    size_t n_contact_ids; /* REMOVE */
    const char *const *contact_ids;

    size_t n_emails; /* LEARN */
    const char *const *emails;
};

struct plan_arena; /* private: the plan's memory */

/*
 * The plan for one group. Operations are in execution order: at most one of
 * CREATE_LIST or DELETE_LIST, alone; otherwise LEARN (at most one), then REMOVE
 * chunks, then IMPORT chunks. Every list inside is sorted by email, so the same
 * input always gives the same chunks. Each op is idempotent; after running any
 * prefix of them and updating the applied state, plan_build again yields the rest.
 */
struct plan {
    struct plan_counts counts;
    struct plan_pending pending;
    size_t n_outcomes; /* = number of members */
    struct plan_outcome *outcomes;
    size_t n_ops;
    struct plan_op *ops;
    struct plan_arena *arena;
};

struct plan_error {
    char code[48]; /* invalid_input, out_of_memory */
    char message[256];
};

/*
 * Plans one group's list.
 *   group      the group fact and its list link
 *   members    the group's active members (n_members of them; each record once)
 *   applied    what ccsync applied to the list (n_applied of them)
 *   limits     NULL for plan_limits_default()
 * Returns 0 with out filled (the caller calls plan_free), or -1 with err
 * (out is then empty and needs no plan_free, though calling it is harmless).
 */
int plan_build(const struct plan_group *group, const struct plan_member *members, size_t n_members,
               const struct applied_contact *applied, size_t n_applied,
               const struct plan_limits *limits, struct plan *out, struct plan_error *err);

/* Frees what plan_build allocated and empties p. NULL and an empty plan are fine. */
void plan_free(struct plan *p);

/* ---- several lists' removals in few requests ------------------------------ */

/*
 * CC's remove_list_memberships takes every one of its contact_ids off every one
 * of its list_ids. A round that syncs several groups of an association can
 * therefore merge their removals, as long as no request takes a contact off a
 * list it must stay on. plan_merge_removes cuts those requests.
 */

/* One contact to take off one list of the round. Strings are borrowed. */
struct plan_leave {
    const char *contact_id;
    const char *email; /* normalized: compared with the lists' held emails */
    size_t list;       /* index into the round's lists */
};

/* One list of the round: every email ccsync holds on it or is putting on it
 * (applied, whatever the status, and being imported), sorted by strcmp. A
 * contact may go into a request naming this list only when it is leaving this
 * list or its email is not held here (CC then has nothing to remove). */
struct plan_round_list {
    const char *const *held;
    size_t n_held;
};

/* One remove_list_memberships request: contact_ids x lists (indices). */
struct plan_remove_batch {
    size_t n_contact_ids;
    const char **contact_ids;
    size_t n_lists;
    size_t *lists;
};

struct plan_merged_removes {
    size_t n_batches;
    struct plan_remove_batch *batches;
    struct plan_arena *arena;
};

/*
 * Packs the leaves into requests of at most max_ids contacts and max_lists
 * lists such that every leave is in exactly one request naming both its
 * contact and its list, and every other (contact, list) pair a request names is
 * safe: the contact's email is not held on that list. First fit over contacts
 * sorted by contact_id, so the same input gives the same requests. A contact
 * leaving several lists travels in one request. Returns 0 with out filled
 * (free with plan_merged_removes_free), or -1 with err (invalid_input: a list
 * index out of range, a contact leaving more lists than max_lists; out_of_memory).
 */
int plan_merge_removes(const struct plan_leave *leaves, size_t n_leaves,
                       const struct plan_round_list *lists, size_t n_lists, size_t max_ids,
                       size_t max_lists, struct plan_merged_removes *out, struct plan_error *err);
void plan_merged_removes_free(struct plan_merged_removes *m);

/* ---- learning contact ids ------------------------------------------------- */

/*
 * Removals and untaggings name CC contact ids, which an import does not report.
 * They are learned either by a lookup by email each or by reading lists back
 * (GET /contacts?lists=..., page_size contacts a request). These two decide
 * which, counting requests only.
 */

/* Whether n_emails ids among lists holding n_listed contacts are learned by
 * reading the lists back: when that takes no more requests than the lookups
 * (a tie reads, which learns every id of the lists, not only these). */
bool plan_learn_by_reading(size_t n_emails, size_t n_listed, size_t page_size);

/*
 * After first syncs: which of the lists just filled (sizes[i] contacts each) to
 * read back at once, in one shared read, so that their later leaves need no
 * lookup. A list's first leave costs at least one request (a lookup), so a read
 * that costs at most one request per list it covers is never dearer; a larger
 * read waits until leaves need it (and then may be lookups only). The lists
 * chosen are the smallest ones whose read stays within that (their mean size
 * at most page_size); read[i] says whether list i is; returns how many.
 */
size_t plan_first_sync_readback(const size_t *sizes, size_t n, size_t page_size, bool *read);

#endif
