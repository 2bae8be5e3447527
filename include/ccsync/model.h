/*
 * model.h - the facts ccsync works with, in the words of Novi and of the user:
 * members, groups and the events that carry them. Shared by the webhook parser
 * (which produces them from bytes), the store (which keeps them in Redis) and the
 * planner (which decides from them). No I/O here.
 */
#ifndef CCSYNC_MODEL_H
#define CCSYNC_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Novi UniqueIDs: 1-128 characters of [A-Za-z0-9_.:-]. */
#define CCSYNC_ID_MAX 128
/* association_id: 1-64 characters of [A-Za-z0-9_-]. */
#define CCSYNC_ASSOC_ID_MAX 64

bool ccsync_valid_unique_id(const char *s);
bool ccsync_valid_association_id(const char *s);

enum customer_type { CUSTOMER_UNKNOWN = 0, CUSTOMER_PERSON, CUSTOMER_COMPANY };

struct group_ref {
    char id[CCSYNC_ID_MAX + 1];
    char *name; /* owned; NULL when absent or null */
};

/* A member record as Novi sends it. Every string is owned by the record and is
 * NULL when the field was absent or null. */
struct member_record {
    char id[CCSYNC_ID_MAX + 1];
    char *email;
    char *first_name;
    char *last_name;
    char *company;
    enum customer_type type;
    bool active;         /* false only when "Active": false */
    bool do_not_email;   /* "DoNotSendMarketingEmails": true */
    bool has_groups;     /* "Groups" was present (an array) */
    size_t n_groups;
    struct group_ref *groups; /* owned array of n_groups */
};

void member_record_clear(struct member_record *m);

enum event_type {
    EVENT_UNKNOWN = 0,
    EVENT_CUSTOMER_CREATED,
    EVENT_CUSTOMER_UPDATED,
    EVENT_CUSTOMER_REMOVED,
    EVENT_GROUP_CREATED,
    EVENT_GROUP_UPDATED,
    EVENT_GROUP_DELETED,
    EVENT_GROUP_MEMBERS,
};

const char *event_type_name(enum event_type t);

/* A parsed, validated Novi event. ts_ns is the envelope timestamp in nanoseconds
 * since the Unix epoch (UTC). */
struct event {
    enum event_type type;
    char type_name[64];     /* as sent, truncated; for logs of unknown types */
    int64_t ts_ns;
    char subject_id[CCSYNC_ID_MAX + 1]; /* data.UniqueID: member or group */

    /* customer.created/updated */
    struct member_record member;

    /* group.created/updated */
    char *group_name;       /* owned */
    bool sync_enabled;

    /* group.members: the complete membership */
    size_t n_members;
    struct member_record *members; /* owned array */
};

void event_clear(struct event *ev);

#endif
