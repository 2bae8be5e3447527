/* Novi AMS seen from a test: the events it sends (envelopes at T0 + n seconds),
 * member records, and webhooks signed with SECRET, posted to ccsyncd's
 * /v1/associations/ASSOC/webhooks/novi. The send_* helpers assert 202 (queued). */
#ifndef CCSYNC_TEST_NOVI_H
#define CCSYNC_TEST_NOVI_H

#include <stdbool.h>
#include <stddef.h>

#include "reply.h"

/* 2026-01-01T00:00:00Z: envelope timestamps are T0 + n seconds. */
#define T0 1767225600LL

/* T0 + seconds as RFC 3339 UTC. */
void rfc3339_at(long long seconds, char *out, size_t size);
/* The envelope of an event at T0 + at seconds; malloc'd. */
char *envelope(const char *type, const char *data, long long at);
/* A webhook-id not used before in this binary. */
void new_id(char *out, size_t size);

/* Posts body as association's webhook, signed with secret under webhook-id id,
 * to ccsyncd number i; the whole answer (the caller frees it). */
struct reply post_webhook_as(int i, const char *association, const char *secret, const char *id,
                             const char *body);
/* Posts body signed under webhook-id id to ccsyncd number i (or the first);
 * returns the HTTP status. */
long post_webhook_at(int i, const char *id, const char *body);
/* The same, with the whole answer (the caller frees it). */
struct reply post_webhook_reply_at(int i, const char *id, const char *body);
long post_webhook(const char *id, const char *body);

/* Sends one event under a new webhook-id; asserts it was queued (202). */
void send_event_at(int i, const char *type, const char *data, long long at);
void send_event(const char *type, const char *data, long long at);

/* A member record (Email omitted when NULL); extra is appended inside the object
 * (",\"Groups\":[...]" and the like) or NULL. member_json: malloc'd; member: one
 * of 64 rotating static buffers, for argument lists. */
char *member_json(const char *id, const char *email, const char *first, const char *last,
                  const char *extra);
const char *member(const char *id, const char *email, const char *first, const char *last,
                   const char *extra);
/* ",\"Groups\":[{...}]" for the ids in a comma-separated list ("" = none). */
const char *groups_of(const char *csv);

/* group.updated: the group's name and its sync switch. */
void send_group_at(int i, const char *g, const char *name, bool sync, long long at);
void send_group(const char *g, const char *name, bool sync, long long at);
/* group.members with the n member records given (const char *). */
void send_members(const char *g, long long at, int n, ...);
/* customer.updated with one member record. */
void send_customer(const char *record, long long at);

#endif
