/*
 * webhook.h - Standard Webhooks signature verification and parsing of Novi's
 * event envelopes. Pure functions over bytes: no I/O, no global state, so they
 * can be unit tested and fuzzed.
 */
#ifndef CCSYNC_WEBHOOK_H
#define CCSYNC_WEBHOOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ccsync/model.h"

#define WEBHOOK_TOLERANCE_SECONDS 300
/* Longest accepted text field (Email, FirstName, LastName, Company, GroupName), bytes. */
#define WEBHOOK_TEXT_MAX 1024
/* A member's extra fields (§12: other top-level keys and CustomFields): at most this
 * many with a value, each name at most WEBHOOK_FIELD_NAME_MAX bytes. */
#define WEBHOOK_FIELDS_MAX 256
#define WEBHOOK_FIELD_NAME_MAX 128
/* Longest accepted HMAC key (the decoded part of "whsec_..."), bytes. */
#define WEBHOOK_KEY_MAX 128

/* Why a webhook was refused: the HTTP status to answer, a stable code for
 * metrics and clients, and a message for a person that names the problem. */
struct webhook_error {
    int status;
    char code[48];
    char message[256];
};

/*
 * Checks the three Standard Webhooks headers against the body.
 *   secret        the association's "whsec_<base64>" secret
 *   msg_id        webhook-id header (NULL when absent)
 *   timestamp     webhook-timestamp header, Unix seconds (NULL when absent)
 *   signatures    webhook-signature header: space-separated "v1,<base64>" (NULL when absent)
 *   now           the current Unix time in seconds
 * Returns 0 when one v1 signature matches (constant-time compare) and the
 * timestamp is within WEBHOOK_TOLERANCE_SECONDS of now; else -1 with err filled
 * (status 401; codes: missing_signature_headers, stale_timestamp,
 * invalid_signature; a malformed secret is status 500 code invalid_secret).
 */
int webhook_verify(const char *secret, const char *msg_id, const char *timestamp,
                   const char *signatures, const char *body, size_t body_len, int64_t now,
                   struct webhook_error *err);

/* The part of webhook_verify that needs no body and no secret: the three
 * headers present and the timestamp within the tolerance; checked before a
 * body is read. 0, or -1 with err as webhook_verify fills it. */
int webhook_check_headers(const char *msg_id, const char *timestamp, const char *signatures,
                          int64_t now, struct webhook_error *err);

/* The answer to a webhook of an unknown association: webhook_check_headers's,
 * else always -1 with invalid_signature, as a wrong signature is answered, after
 * the same work (an HMAC over body_len bytes), so neither the answer nor its
 * time tells whether the association exists. */
int webhook_verify_unknown(const char *msg_id, const char *timestamp, const char *signatures,
                           size_t body_len, int64_t now, struct webhook_error *err);

/* Whether secret is "whsec_" + standard padded base64 of 1..WEBHOOK_KEY_MAX
 * bytes: what webhook_verify accepts. For checking a secret when it is set. */
bool webhook_secret_valid(const char *secret);

/* Standard Webhooks: a new secret's key is 24 to 64 bytes (checked when a secret
 * is given, by PUT or the bootstrap; a stored shorter one still verifies). */
#define WEBHOOK_SECRET_MIN_BYTES 24
#define WEBHOOK_SECRET_MAX_BYTES 64

/* The number of bytes secret's key decodes to, or -1 when secret is not
 * "whsec_" + standard padded base64. */
long webhook_secret_bytes(const char *secret);

/* Computes "v1,<base64>" for the given inputs into out (at least 64 bytes).
 * Used by tests, the demo and the benchmark to sign what they send. */
int webhook_sign(const char *secret, const char *msg_id, int64_t timestamp, const char *body,
                 size_t body_len, char *out, size_t out_size);

/*
 * Parses and validates an envelope {"type","timestamp","data"}.
 * Returns 0 with ev filled (caller calls event_clear) for a known type;
 * returns 0 with ev->type == EVENT_UNKNOWN for a well-formed envelope of an
 * unknown type (answered 202 ignored); returns -1 with err (status 400, code
 * malformed_json or invalid_event, message naming the field such as
 * "data.Members[3].UniqueID is required") when the body is not acceptable.
 */
int webhook_parse_event(const char *body, size_t body_len, struct event *ev,
                        struct webhook_error *err);

/* Caps on what one event may carry (CCSYNC_MAX_GROUPS_PER_MEMBER,
 * CCSYNC_MAX_SNAPSHOT_MEMBERS). */
struct webhook_limits {
    size_t max_groups_per_member; /* a member record's Groups */
    size_t max_snapshot_members;  /* a group.members event's Members */
};

/* webhook_parse_event with the caps of limits: an event over one is refused
 * with status 400, code invalid_event and a message naming the field, its
 * count and the cap ("data.Groups has 100000 groups; at most 1000 are
 * accepted"). webhook_parse_event has no caps (the worker re-reads events the
 * door accepted under whatever caps held then). */
int webhook_parse_event_limited(const char *body, size_t body_len,
                                const struct webhook_limits *limits, struct event *ev,
                                struct webhook_error *err);

/* RFC 3339 date-time (fractional seconds optional, any offset, 'Z' or 'z')
 * to nanoseconds since the Unix epoch. Returns 0 or -1 when invalid. */
int rfc3339_parse(const char *s, int64_t *ns);

/* Formats ns as "YYYY-MM-DDTHH:MM:SSZ" (UTC, whole seconds) into out (>= 21 bytes). */
void rfc3339_format(int64_t ns, char *out, size_t out_size);

#endif
