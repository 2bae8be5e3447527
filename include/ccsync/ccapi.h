/*
 * ccapi.h - the Constant Contact v3 client: one HTTP request per call, parsed
 * results, and every failure put in a class the worker can act on.
 *
 * The client does no rate limiting, no retrying and no token refresh on its
 * own: the worker takes a budget token before each call, and decides from the
 * error class what to do next (service/cccall.c). One client per thread; it
 * owns one libcurl easy handle (CURLOPT_NOSIGNAL is set). curl_global_init
 * must have been called once, before any thread, by main.
 *
 * The JSON parsers and request-body builders are pure functions over strings
 * (ccapi_parse_*, ccapi_*_body, ccapi_classify, ccapi_join_url) so they can be
 * tested without a network.
 *
 * Returns: 0 on success; -1 with *err filled (err must not be NULL; its
 * status says what the caller should do). A struct to fill is zeroed first,
 * and holds nothing to free after a failure.
 *
 * Memory: a function that fills a struct passed by the caller makes the caller
 * the owner of every pointer in it; release with the matching *_clear. A
 * returned char * is the caller's to free(). Input pointers are only borrowed.
 *
 * Secrets: the access token, refresh tokens and the client secret never
 * appear in a struct ccapi_error (they are redacted from any text copied from
 * a response).
 */
#ifndef CCSYNC_CCAPI_H
#define CCSYNC_CCAPI_H

#include <stdbool.h>
#include <stddef.h>

/* Constant Contact's limits (its v3 API documentation and OpenAPI document). */
#define CCAPI_IMPORT_MAX_CONTACTS 40000
/* The import endpoint silently drops what follows its first 4 MB; we stay
 * below 4,000,000 bytes so that either reading of "MB" is safe. */
#define CCAPI_IMPORT_MAX_BYTES 4000000u
#define CCAPI_MEMBERSHIPS_MAX_CONTACTS 500
#define CCAPI_MAX_LIST_IDS 50       /* list_ids of an import or membership activity */
#define CCAPI_CONTACTS_MAX_LISTS 25 /* lists= filter of GET /contacts */
#define CCAPI_PAGE_LIMIT 500

/* Room for a CC identifier (UUIDs, 36 characters). A longer one in a response
 * is treated as a malformed response, never truncated. */
#define CCAPI_ID_SIZE 64
#define CCAPI_TIME_SIZE 40 /* ISO-8601 timestamps as CC sends them */

/* ---- errors ---- */

enum ccapi_status {
    CCAPI_OK = 0,
    CCAPI_TRANSIENT, /* 5xx, timeout, connection error, unreadable 2xx body: retry with backoff */
    CCAPI_THROTTLED, /* 429 throttled (or 429 without a known key): retry after a short wait */
    CCAPI_QUOTA,     /* 429 quota_exceeded: no CC work until 00:00 UTC */
    CCAPI_UNAUTHORIZED, /* 401 (refresh once); for a token refresh: grant refused, reconnect */
    CCAPI_NOT_FOUND,    /* 404 */
    CCAPI_CONFLICT,     /* 409 (list name taken); the message is never interpreted */
    CCAPI_PERMANENT,    /* any other 4xx, or a request refused before sending */
};

struct ccapi_error {
    enum ccapi_status status;
    long http_status; /* 0 when no HTTP answer was received */
    /* True when the request may have reached CC and taken effect: a timeout or
     * broken connection after sending, a 5xx, or an unreadable 2xx body. A POST
     * with maybe_applied must not be blindly retried: a retry queues a second
     * activity. False when CC cannot have acted on it
     * (connection refused, DNS failure, 4xx, 429). */
    bool maybe_applied;
    long retry_after_s; /* Retry-After in seconds (date form converted); -1 when absent */
    int curl_code;      /* CURLcode when the transport failed, else 0 */
    char error_key[64]; /* CC's error_key / OAuth error, or ours: timeout, connect_failed,
                           bad_response, request_too_large, no_token, ... */
    char message[256];  /* for people and logs; truncated; never holds a secret */
};

/* "ok", "transient", "throttled", "quota", "unauthorized", "not_found",
 * "conflict", "permanent". */
const char *ccapi_status_name(enum ccapi_status status);

/*
 * Classifies an HTTP answer. body (may be NULL) is read for CC's error shapes:
 * an array of {error_key,error_message} (400/404/409), a single object with
 * error_key (401, 429) or the OAuth {error,error_description}. retry_after_s is
 * the parsed Retry-After header or -1. Fills every field of err (status
 * CCAPI_OK for 2xx).
 */
void ccapi_classify(long http_status, const char *body, long retry_after_s,
                    struct ccapi_error *err);
/* The same for an answer of the OAuth token endpoint: 400/401 with error
 * invalid_grant, invalid_client or unauthorized_client is CCAPI_UNAUTHORIZED
 * (the grant is refused: reconnect, do not retry with that refresh token);
 * any other 4xx but 429 is CCAPI_PERMANENT. */
void ccapi_classify_token(long http_status, const char *body, long retry_after_s,
                          struct ccapi_error *err);

/* ---- pure helpers ---- */

/*
 * Resolves a _links.next.href against the API base URL, which points at the
 * version root (https://api.cc.email/v3). CC's hrefs are paths from the host
 * that start with the version root ("/v3/contact_lists?cursor=..."): the "/v3"
 * is replaced by base_url, so a base URL with another path (a simulator or a
 * proxy) still works. Another path starting with "/" is joined to base_url's
 * scheme and host. An absolute URL is accepted only on base_url's origin (the
 * access token must not leave for another host). Returns a malloc'd URL, or
 * NULL when href is unusable.
 */
char *ccapi_join_url(const char *base_url, const char *href);

/* Extracts an email address named in an activity error message (the first
 * word with exactly one '@', stripped of surrounding quotes and sentence
 * punctuation). Best effort, as CC's wording is not documented: trust it only
 * when it equals (ignoring case) an email that was sent. Returns a malloc'd
 * string or NULL when there is none. */
char *ccapi_email_in_message(const char *message);

/* ---- the client ---- */

struct ccapi;

/* base_url: the CC API version root, e.g. https://api.cc.email/v3 (copied).
 * timeout_ms: the whole request's timeout (connecting is capped lower).
 * Returns NULL on allocation failure or an empty base_url. */
struct ccapi *ccapi_new(const char *base_url, long timeout_ms);
/* Frees the client; the access token is wiped from memory first. NULL is ok. */
void ccapi_free(struct ccapi *c);
/* Sets the bearer token for the following calls (copied; the old one wiped).
 * NULL clears it: calls then fail with CCAPI_UNAUTHORIZED, error_key no_token,
 * without a request. Returns 0, or -1 on allocation failure. */
int ccapi_set_token(struct ccapi *c, const char *access_token);

/* ---- contact lists ---- */

struct ccapi_list {
    char list_id[CCAPI_ID_SIZE];
    char *name;            /* owned */
    char *description;     /* owned; NULL when absent */
    long membership_count; /* -1 when absent */
    char status[16];       /* "" when absent; "deleted", "active" when CC says */
    bool deleted;          /* status "deleted" or deleted_at present */
    char created_at[CCAPI_TIME_SIZE];
    char deleted_at[CCAPI_TIME_SIZE]; /* "" when absent */
};

struct ccapi_list_page {
    size_t n_lists;
    struct ccapi_list *lists; /* owned array */
    char *next_href;          /* owned; _links.next.href, NULL on the last page */
};

void ccapi_list_clear(struct ccapi_list *list);
void ccapi_list_page_clear(struct ccapi_list_page *page);

/* Parses one list (a GET /contact_lists/{id} or POST 201 body). list_id and
 * name are required. Returns 0, or -1 with err (CCAPI_TRANSIENT, bad_response). */
int ccapi_parse_list(const char *json, struct ccapi_list *out, struct ccapi_error *err);
/* Parses a GET /contact_lists body ({"lists":[...],"_links":{"next":{"href"}}}). */
int ccapi_parse_list_page(const char *json, struct ccapi_list_page *out, struct ccapi_error *err);

/*
 * One page of every list, deleted ones included: next_href NULL for the first
 * page (GET /contact_lists?limit=500&status=all&include_membership_count=all),
 * else the previous page's next_href. Returns 0 with *out filled, else -1.
 */
int ccapi_lists_page(struct ccapi *c, const char *next_href, struct ccapi_list_page *out,
                     struct ccapi_error *err);
/* GET /contact_lists?name=... (with membership counts): the lists CC matches
 * to name. The caller compares names itself. */
int ccapi_lists_find_by_name(struct ccapi *c, const char *name, struct ccapi_list_page *out,
                             struct ccapi_error *err);
/* GET /contact_lists/{list_id}?include_membership_count=all. 404 → CCAPI_NOT_FOUND. */
int ccapi_list_get(struct ccapi *c, const char *list_id, struct ccapi_list *out,
                   struct ccapi_error *err);
/* POST /contact_lists {"name","favorite":false,"description"} → 201 with the
 * list. A taken name is CCAPI_CONFLICT. description may be NULL (omitted). */
int ccapi_list_create(struct ccapi *c, const char *name, const char *description,
                      struct ccapi_list *out, struct ccapi_error *err);
/* DELETE /contact_lists/{list_id} → 202; the deletion runs as an activity
 * whose id is written to activity_id. 404 → CCAPI_NOT_FOUND. */
int ccapi_list_delete(struct ccapi *c, const char *list_id, char activity_id[CCAPI_ID_SIZE],
                      struct ccapi_error *err);

/* ---- bulk activities ---- */

/* A contact to import; pointers are borrowed. first_name/last_name NULL are
 * left out of the body (CC then keeps what it has). */
struct ccapi_import_contact {
    const char *email;
    const char *first_name;
    const char *last_name;
};

/* A contact's mapped fields (§12): columns[i] ("phone", "cf:Chapter") takes values[i];
 * a NULL value is left out. birthday_month and birthday_day are sent as integers. */
struct ccapi_import_fields {
    size_t n;
    const char *const *columns;
    const char *const *values;
};

/* Bytes one contact adds to the import body, its separating comma excluded.
 * Exact for the serializer below, so a planner can fill a chunk up to
 * CCAPI_IMPORT_MAX_BYTES: body size = ccapi_import_body_size(). */
size_t ccapi_import_contact_size(const struct ccapi_import_contact *contact);
/* Exact size in bytes of the body ccapi_import_body() makes. */
size_t ccapi_import_body_size(const struct ccapi_import_contact *contacts, size_t n_contacts,
                              const char *const *list_ids, size_t n_lists);
/* {"import_data":[{"email","first_name","last_name"}...],"list_ids":[...]},
 * compact. Returns a malloc'd string (*len set when len is not NULL), NULL on
 * allocation failure. */
char *ccapi_import_body(const struct ccapi_import_contact *contacts, size_t n_contacts,
                        const char *const *list_ids, size_t n_lists, size_t *len);
/* {"source":{"contact_ids":[...]},"list_ids":[...]}; malloc'd or NULL. */
char *ccapi_memberships_body(const char *const *contact_ids, size_t n_contacts,
                             const char *const *list_ids, size_t n_lists);

/*
 * POST /activities/contacts_json_import → 201; activity_id filled. Refused
 * before sending (CCAPI_PERMANENT, error_key request_too_large or
 * bad_request) when n_contacts is 0 or over CCAPI_IMPORT_MAX_CONTACTS, the
 * body is CCAPI_IMPORT_MAX_BYTES or more, or n_lists is not 1..50.
 * A 429 here may also mean 1,000 queued activities (error_key says which).
 */
int ccapi_contacts_import(struct ccapi *c, const struct ccapi_import_contact *contacts,
                          size_t n_contacts, const char *const *list_ids, size_t n_lists,
                          char activity_id[CCAPI_ID_SIZE], struct ccapi_error *err);
/* The same with each contact's mapped fields (fields[i] for contacts[i]; fields NULL:
 * none). The body-size rules count them too. */
int ccapi_contacts_import_fields(struct ccapi *c, const struct ccapi_import_contact *contacts,
                                 const struct ccapi_import_fields *fields, size_t n_contacts,
                                 const char *const *list_ids, size_t n_lists,
                                 char activity_id[CCAPI_ID_SIZE], struct ccapi_error *err);
/* POST /activities/add_list_memberships, ≤ 500 contact_ids, 1..50 lists. */
int ccapi_memberships_add(struct ccapi *c, const char *const *contact_ids, size_t n_contacts,
                          const char *const *list_ids, size_t n_lists,
                          char activity_id[CCAPI_ID_SIZE], struct ccapi_error *err);
/* POST /activities/remove_list_memberships, ≤ 500 contact_ids, 1..50 lists. */
int ccapi_memberships_remove(struct ccapi *c, const char *const *contact_ids, size_t n_contacts,
                             const char *const *list_ids, size_t n_lists,
                             char activity_id[CCAPI_ID_SIZE], struct ccapi_error *err);

/* Parses the activity_id out of a 201/202 activity body (activity_id, else
 * the last segment of _links.self.href). */
int ccapi_parse_activity_id(const char *json, char activity_id[CCAPI_ID_SIZE],
                            struct ccapi_error *err);

enum ccapi_activity_state {
    CCAPI_ACTIVITY_UNKNOWN = 0, /* a state this client does not know: keep polling */
    CCAPI_ACTIVITY_INITIALIZED,
    CCAPI_ACTIVITY_PROCESSING,
    CCAPI_ACTIVITY_COMPLETED,
    CCAPI_ACTIVITY_CANCELLED,
    CCAPI_ACTIVITY_FAILED,
    CCAPI_ACTIVITY_TIMED_OUT,
};

/* True for completed, cancelled, failed and timed_out: polling can stop. */
bool ccapi_activity_finished(enum ccapi_activity_state state);
enum ccapi_activity_state ccapi_activity_state_parse(const char *name);

/* One entry of activity_errors. CC documents plain strings; an object entry
 * ({"message",...,"email"}) is read too. */
struct ccapi_activity_error {
    char *message; /* owned; never NULL */
    char *email;   /* owned; the address the error names, NULL when none found */
};

struct ccapi_activity {
    char activity_id[CCAPI_ID_SIZE];
    enum ccapi_activity_state state;
    char state_name[24]; /* as sent (truncated), for logs */
    long percent_done;   /* -1 when absent */
    /* status counters; -1 when absent */
    long items_total_count;
    long items_completed_count;
    long cannot_add_to_list_count; /* import: previously unsubscribed contacts */
    long error_count;
    long correctable_count;
    long person_count;
    long list_count;
    char created_at[CCAPI_TIME_SIZE];
    char completed_at[CCAPI_TIME_SIZE];
    size_t n_errors;
    struct ccapi_activity_error *errors; /* owned array */
};

struct ccapi_activity_page {
    size_t n_activities;
    struct ccapi_activity *activities; /* owned array */
    char *next_href;                   /* owned; NULL on the last page */
};

void ccapi_activity_clear(struct ccapi_activity *activity);
void ccapi_activity_page_clear(struct ccapi_activity_page *page);

/* Parses GET /activities/{id} (also a 201/202 activity body). */
int ccapi_parse_activity(const char *json, struct ccapi_activity *out, struct ccapi_error *err);
/* Parses GET /activities ({"activities":[...],"_links"}). */
int ccapi_parse_activity_page(const char *json, struct ccapi_activity_page *out,
                              struct ccapi_error *err);

/* GET /activities/{activity_id}. */
int ccapi_activity_get(struct ccapi *c, const char *activity_id, struct ccapi_activity *out,
                       struct ccapi_error *err);
/* GET /activities?limit=500 (next_href NULL) or the next page: the account's
 * recent activities, so many can be polled with one request. */
int ccapi_activities_page(struct ccapi *c, const char *next_href, struct ccapi_activity_page *out,
                          struct ccapi_error *err);

/* ---- contacts ---- */

struct ccapi_contact {
    char contact_id[CCAPI_ID_SIZE];
    char *email;      /* owned; email_address.address as CC has it; NULL when absent */
    char *first_name; /* owned; NULL when absent */
    char *last_name;  /* owned; NULL when absent */
    /* email_address.permission_to_send: explicit, implicit, not_set,
     * pending_confirmation, temp_hold, unsubscribed; "" when absent. */
    char permission_to_send[24];
    bool deleted; /* deleted_at present (seen with status=all) */
    size_t n_list_ids;
    char (*list_ids)[CCAPI_ID_SIZE]; /* owned array: list_memberships */
};

struct ccapi_contact_page {
    size_t n_contacts;
    struct ccapi_contact *contacts; /* owned array */
    char *next_href;                /* owned; NULL on the last page */
};

void ccapi_contact_clear(struct ccapi_contact *contact);
void ccapi_contact_page_clear(struct ccapi_contact_page *page);

/* Parses a GET /contacts body ({"contacts":[...],"_links"}). */
int ccapi_parse_contact_page(const char *json, struct ccapi_contact_page *out,
                             struct ccapi_error *err);

/*
 * One page of the contacts on any of list_ids (1..25), every status, with
 * their list memberships: GET /contacts?lists=a,b&status=all&
 * include=list_memberships&limit=500[&updated_after=ISO-8601]. With next_href
 * set, the other arguments are ignored and that page is fetched.
 */
int ccapi_contacts_page(struct ccapi *c, const char *const *list_ids, size_t n_lists,
                        const char *updated_after, const char *next_href,
                        struct ccapi_contact_page *out, struct ccapi_error *err);
/* GET /contacts?email=...&status=all&include=list_memberships: the contact
 * with this address, deleted or not (0 or 1 contact in out). */
int ccapi_contacts_find_by_email(struct ccapi *c, const char *email, struct ccapi_contact_page *out,
                                 struct ccapi_error *err);

/* ---- OAuth2 token refresh ---- */

struct ccapi_token {
    char *access_token;  /* owned, secret */
    char *refresh_token; /* owned, secret; CC rotates it: the old one is spent */
    long expires_in;     /* seconds; -1 when absent */
    char token_type[16];
};

/* Wipes and frees the secrets. */
void ccapi_token_clear(struct ccapi_token *token);
/* Parses a token endpoint 200 body. access_token is required; refresh_token
 * is NULL when CC sent none (then the old one stays valid). */
int ccapi_parse_token(const char *json, struct ccapi_token *out, struct ccapi_error *err);
/* application/x-www-form-urlencoded body of a refresh:
 * grant_type=refresh_token&refresh_token=...[&client_id=...] (client_id only
 * when with_client_id). Malloc'd (a secret: wipe before free) or NULL. */
char *ccapi_refresh_body(const char *refresh_token, const char *client_id, bool with_client_id);

/*
 * POST token_url with grant_type=refresh_token. A confidential app
 * (client_secret set) authenticates with HTTP Basic client_id:client_secret;
 * a PKCE app (client_secret NULL or "") sends client_id in the body. Does not
 * use or change the client's access token. Classes: 400/401 with error
 * invalid_grant, invalid_client or unauthorized_client → CCAPI_UNAUTHORIZED
 * (the association must reconnect; do not retry with the same refresh token);
 * other 4xx → CCAPI_PERMANENT; 429 → CCAPI_THROTTLED; 5xx/transport →
 * CCAPI_TRANSIENT (maybe_applied: the refresh token may already be spent).
 */
int ccapi_token_refresh(struct ccapi *c, const char *token_url, const char *client_id,
                        const char *client_secret, const char *refresh_token,
                        struct ccapi_token *out, struct ccapi_error *err);

/* ---- custom fields and tags (§12) ---- */

#define CCAPI_CUSTOM_FIELDS_MAX 100 /* per account: one page of GET /contact_custom_fields */

struct ccapi_custom_field {
    char id[CCAPI_ID_SIZE];
    char name[64];
    char label[64];
    char type[24];
};

struct ccapi_custom_fields {
    size_t n;
    struct ccapi_custom_field items[CCAPI_CUSTOM_FIELDS_MAX];
};

/* GET /contact_custom_fields?limit=100: every custom field of the account. */
int ccapi_custom_fields_get(struct ccapi *c, struct ccapi_custom_fields *out,
                            struct ccapi_error *err);
/* POST /contact_custom_fields {"label","type"} → 201. */
int ccapi_custom_field_create(struct ccapi *c, const char *label, const char *type,
                              struct ccapi_custom_field *out, struct ccapi_error *err);

struct ccapi_tag {
    char id[CCAPI_ID_SIZE];
    char name[256];
    char source[32]; /* tag_source: "ccsync" for the tags ccsync makes */
};

/* POST /contact_tags {"name","tag_source"} → 201. */
int ccapi_tag_create(struct ccapi *c, const char *name, const char *source, struct ccapi_tag *out,
                     struct ccapi_error *err);
/* Pages GET /contact_tags (500 a page) for the tag named name (case-insensitive):
 * *found tells whether there is one. */
int ccapi_tag_find(struct ccapi *c, const char *name, struct ccapi_tag *out, bool *found,
                   struct ccapi_error *err);
/* PUT /contact_tags/{tag_id} {"name"}. */
int ccapi_tag_rename(struct ccapi *c, const char *tag_id, const char *name,
                     struct ccapi_error *err);
/* POST /activities/contacts_taggings_add (add) or _remove: tag_ids on ≤ 500
 * source.contact_ids → 201; activity_id filled. */
int ccapi_taggings(struct ccapi *c, bool add, const char *const *tag_ids, size_t n_tags,
                   const char *const *contact_ids, size_t n_contacts,
                   char activity_id[CCAPI_ID_SIZE], struct ccapi_error *err);

#endif
