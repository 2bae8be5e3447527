/* ccsim: a Constant Contact v3 API simulator for tests, benchmarks and the demo.
 *
 * Shared declarations of the simulator: its configuration, the in-memory account
 * state (lists, contacts, activities, tokens) guarded by one mutex, and the request
 * and response shapes the endpoint handlers work on. Every handler runs with
 * sim.lock held, so none of them locks anything itself. */
#ifndef CCSIM_SIM_H
#define CCSIM_SIM_H

#include <json-c/json.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SIM_LISTS_PER_CONTACT 50
#define SIM_MAX_BODY (8u * 1024u * 1024u)
#define SIM_IMPORT_MAX_BYTES (4u * 1024u * 1024u)
#define SIM_IMPORT_MAX_CONTACTS 40000
#define SIM_RATE_RING 65536
#define SIM_LOG_CAP 4096
#define SIM_LOG_BODY_MAX 16384
#define SIM_DELAY_RULES 16
#define SIM_CUSTOM_FIELDS_MAX 100        /* custom fields per account */
#define SIM_CUSTOM_FIELDS_PER_CONTACT 25 /* cf: columns in an import row, values a contact holds   \
                                          */
#define SIM_TAGS_PER_CONTACT 50

struct sim_config {
    char host[64];
    int port;
    int rate;            /* requests per second window; 0 = off */
    long daily_limit;    /* requests per UTC day; 0 = off */
    int activity_ms;     /* time from initialized to completed */
    long token_ttl;      /* seconds an access token lives */
    int max_lists;       /* active lists per account */
    int max_activities;  /* queued (unfinished) activities before 429 */
    bool auth;           /* require a Bearer token */
    char dev_token[256]; /* a never-expiring access token, "" = none */
};

/* Open-addressing map from a string to a pointer; keys are borrowed from the
 * values they index, so the map never frees them. */
struct strmap {
    const char **keys;
    void **vals;
    size_t cap;
    size_t used; /* live + tombstones */
};

struct sim_list {
    char id[37];
    char *name;
    char *description;
    bool favorite;
    int64_t created_at, updated_at, deleted_at; /* ms since epoch; deleted_at 0 = live */
    size_t member_count;
    bool delete_pending; /* an activity will delete it */
};

/* A custom field of the account; name is the label with blanks replaced by '_'. */
struct sim_custom_field {
    char id[37];
    char *label;
    char *name;
    char type[24];
    int64_t created_at, updated_at;
};

/* A contact tag; deleted_at is set when a contacts_tags_delete activity completes. */
struct sim_tag {
    char id[37];
    char *name;
    char *source;
    int64_t created_at, updated_at, deleted_at;
    bool delete_pending;
};

struct sim_cf_value {
    struct sim_custom_field *field;
    char *value;
};

struct sim_contact {
    char id[37];
    char *email; /* lowercase */
    char *first_name, *last_name, *job_title, *company_name;
    char permission[24];
    char opt_in_source[16];
    char opt_out_source[16];
    char *opt_out_reason;
    char create_source[16];
    char update_source[16];
    int64_t created_at, updated_at, opt_in_date, opt_out_date, deleted_at;
    struct sim_list *lists[SIM_LISTS_PER_CONTACT];
    int n_lists;
    struct sim_cf_value cf[SIM_CUSTOM_FIELDS_PER_CONTACT];
    int n_cf;
    struct sim_tag *tags[SIM_TAGS_PER_CONTACT];
    int n_tags;
};

enum sim_activity_kind {
    ACT_IMPORT,
    ACT_ADD,
    ACT_REMOVE,
    ACT_LIST_DELETE,
    ACT_TAGGING_ADD,
    ACT_TAGGING_REMOVE,
    ACT_TAG_DELETE
};

struct sim_activity {
    char id[37];
    enum sim_activity_kind kind;
    int64_t created_at, started_at, completed_at;
    bool settled;
    json_object *input;  /* owned: the validated request body */
    json_object *errors; /* owned: array of strings once settled */
    long items_total, items_completed, person_count, error_count, cannot_add, list_count;
};

struct sim_token {
    char *value;
    bool refresh;       /* a refresh token, else an access token */
    bool spent;         /* a used refresh token */
    int64_t expires_at; /* ms; 0 = never */
};

enum sim_fault_mode { FAULT_NONE, FAULT_STATUS, FAULT_DELAY, FAULT_DROP };

struct sim_fault {
    enum sim_fault_mode mode;
    int status;
    long remaining; /* requests left to hit; -1 = use fraction */
    double fraction;
    int delay_ms;
    char path_prefix[128];
};

/* Per-endpoint latency (control API /__sim/delays): requests to endpoint wait
 * delay_ms before they are processed, like a slow Constant Contact. */
struct sim_delay {
    char endpoint[128]; /* "METHOD /v3/..." as the counters name it */
    int delay_ms;
    long remaining; /* requests left to delay; -1 = until cleared */
};

struct sim_log_entry {
    uint64_t seq;
    int64_t arrived; /* when the request came in (before any delay) */
    int64_t ts;      /* when it was answered */
    char method[8];
    char *path; /* with query */
    char *body; /* truncated */
    int status;
};

struct sim_counter {
    char *name;
    long count;
};

struct sim_state {
    pthread_mutex_t lock;
    struct sim_config cfg;
    int64_t clock_offset_ms;

    struct sim_list **lists;
    size_t n_lists, cap_lists;
    struct strmap list_by_id;

    struct sim_contact **contacts;
    size_t n_contacts, cap_contacts;
    struct strmap contact_by_id, contact_by_email;

    struct sim_custom_field **fields; /* a deleted field is removed from the array */
    size_t n_fields, cap_fields;

    struct sim_tag **tags;
    size_t n_tags, cap_tags;

    struct sim_activity **activities;
    size_t n_activities, cap_activities, first_unsettled;
    struct strmap activity_by_id;

    struct sim_token **tokens;
    size_t n_tokens, cap_tokens;
    struct strmap token_by_value;

    /* limits */
    int64_t accepted[SIM_RATE_RING]; /* ring of accepted request times */
    size_t accepted_head, accepted_n;
    int64_t arrivals[SIM_RATE_RING]; /* ring of arrival times for max_per_second */
    size_t arrivals_head, arrivals_n;
    long quota_day, quota_used;

    /* counters */
    struct sim_counter *counters;
    size_t n_counters, cap_counters;
    long total, throttled, quota_exceeded, unauthorized, faults_served, max_per_second;

    struct sim_log_entry log[SIM_LOG_CAP];
    uint64_t log_seq;

    struct sim_fault fault;
    struct sim_delay delays[SIM_DELAY_RULES];
    int n_delays;
    uint64_t rng;
};

extern struct sim_state sim;

/* A request as the handlers see it: query parameters are copied out (and replaced by
 * the ones a cursor carries), the body is borrowed. */
struct sim_param {
    char *key;
    char *value;
};

struct sim_req {
    const char *method;
    const char *path; /* without query, e.g. /v3/contacts */
    const char *body;
    size_t body_len;
    const char *content_type;
    const char *authorization;
    struct sim_param params[32];
    int n_params;
    json_object *json; /* owned: parsed body, when the handler asked for it */
};

struct sim_resp {
    int status;
    json_object *body; /* owned */
    char location[128];
    bool drop;
};

/* state.c */
int64_t sim_now_ms(void);
void sim_format_time(int64_t ms, char *out, size_t outlen);
void sim_format_date(int64_t ms, char *out, size_t outlen);
int sim_parse_time(const char *s, int64_t *ms);
void sim_uuid(char out[37]);
void sim_random_token(char *out, size_t len);
double sim_random_unit(void);
bool sim_is_uuid(const char *s);
bool sim_email_valid(const char *s);
char *sim_strdup_lower(const char *s);
void strmap_put(struct strmap *m, const char *key, void *val);
void *strmap_get(const struct strmap *m, const char *key);
void strmap_del(struct strmap *m, const char *key);
void strmap_free(struct strmap *m);
void sim_state_init(const struct sim_config *cfg);
void sim_state_reset(void);
struct sim_list *sim_list_find(const char *id);
struct sim_list *sim_list_find_name(const char *name, const struct sim_list *except);
size_t sim_list_active_count(void);
struct sim_list *sim_list_create(const char *name, const char *description, bool favorite);
void sim_list_delete_now(struct sim_list *l);
struct sim_contact *sim_contact_find(const char *id);
struct sim_contact *sim_contact_find_email(const char *email);
struct sim_contact *sim_contact_create(const char *email, const char *source);
void sim_contact_set_email(struct sim_contact *c, const char *email);
int sim_contact_add_list(struct sim_contact *c, struct sim_list *l);
void sim_contact_remove_list(struct sim_contact *c, struct sim_list *l);
bool sim_contact_on_list(const struct sim_contact *c, const struct sim_list *l);
void sim_contact_remove_all_lists(struct sim_contact *c);
void sim_contact_unsubscribe(struct sim_contact *c, const char *source);
void sim_set_str(char **field, const char *value);
struct sim_token *sim_token_add(bool refresh, int64_t expires_at);
struct sim_token *sim_token_find(const char *value);
struct sim_activity *sim_activity_create(enum sim_activity_kind kind, json_object *input,
                                         long items_total);
struct sim_activity *sim_activity_find(const char *id);
size_t sim_activities_queued(void);
void sim_activities_settle(void);
const char *sim_activity_state(const struct sim_activity *a);
json_object *sim_activity_json(const struct sim_activity *a);
json_object *sim_list_json(const struct sim_list *l, bool with_count);
json_object *sim_contact_json(const struct sim_contact *c, bool with_lists);
void sim_contact_extras_json(json_object *o, const struct sim_contact *c, bool with_fields,
                             bool with_tags);

/* fields.c: custom fields and tags of the account, and their values on contacts */
struct sim_custom_field *sim_field_find(const char *id);
struct sim_custom_field *sim_field_find_name(const char *name);
struct sim_custom_field *sim_field_create(const char *label, const char *type);
struct sim_tag *sim_tag_find(const char *id);
struct sim_tag *sim_tag_find_name(const char *name);
struct sim_tag *sim_tag_create(const char *name, const char *source);
void sim_contact_set_field(struct sim_contact *c, struct sim_custom_field *f, const char *v);
int sim_contact_tag(struct sim_contact *c, struct sim_tag *t);
void sim_contact_untag(struct sim_contact *c, const struct sim_tag *t);
void sim_fields_free(void);
void sim_contact_extras_free(struct sim_contact *c);
void sim_settle_tagging(struct sim_activity *a, bool add);
void sim_settle_tag_delete(struct sim_activity *a);

/* errors and request helpers (state.c) */
void resp_error(struct sim_resp *r, int status, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void resp_error_object(struct sim_resp *r, int status, const char *key, const char *msg);
void errs_add(json_object *errs, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void resp_errors(struct sim_resp *r, int status, json_object *errs);
const char *req_param(const struct sim_req *q, const char *key);
int req_json_body(struct sim_req *q, struct sim_resp *r);
int req_limit(const struct sim_req *q, struct sim_resp *r, int def, int max, int *out);
char *cursor_encode(const struct sim_req *q, long offset);
void resp_next_link(struct sim_resp *r, json_object *obj, const struct sim_req *q, const char *base,
                    long next_offset);
long req_offset(const struct sim_req *q);

/* handlers: lists.c, contacts.c, activities.c, control.c, oauth.c */
void lists_get_all(struct sim_req *q, struct sim_resp *r);
void lists_create(struct sim_req *q, struct sim_resp *r);
void lists_get(struct sim_req *q, struct sim_resp *r, const char *id);
void lists_update(struct sim_req *q, struct sim_resp *r, const char *id);
void lists_delete(struct sim_req *q, struct sim_resp *r, const char *id);
void contacts_get_all(struct sim_req *q, struct sim_resp *r);
void contacts_create(struct sim_req *q, struct sim_resp *r);
void contacts_get(struct sim_req *q, struct sim_resp *r, const char *id);
void contacts_update(struct sim_req *q, struct sim_resp *r, const char *id);
void contacts_delete(struct sim_req *q, struct sim_resp *r, const char *id);
void activities_import(struct sim_req *q, struct sim_resp *r);
void activities_add_members(struct sim_req *q, struct sim_resp *r);
void activities_remove_members(struct sim_req *q, struct sim_resp *r);
void activities_list_delete(struct sim_req *q, struct sim_resp *r);
void activities_get(struct sim_req *q, struct sim_resp *r, const char *id);
void activities_tagging(struct sim_req *q, struct sim_resp *r, bool add);
void fields_get_all(struct sim_req *q, struct sim_resp *r);
void fields_create(struct sim_req *q, struct sim_resp *r);
void fields_get(struct sim_req *q, struct sim_resp *r, const char *id);
void fields_update(struct sim_req *q, struct sim_resp *r, const char *id);
void fields_delete(struct sim_req *q, struct sim_resp *r, const char *id);
void tags_get_all(struct sim_req *q, struct sim_resp *r);
void tags_create(struct sim_req *q, struct sim_resp *r);
void tags_get(struct sim_req *q, struct sim_resp *r, const char *id);
void tags_update(struct sim_req *q, struct sim_resp *r, const char *id);
void tags_delete(struct sim_req *q, struct sim_resp *r, const char *id);
void activities_get_all(struct sim_req *q, struct sim_resp *r);
void control_handle(struct sim_req *q, struct sim_resp *r);
void oauth_token(struct sim_req *q, struct sim_resp *r);
json_object *oauth_issue_pair(long ttl_seconds);

/* http.c */
int http_start(void);
void http_stop(void);

#endif
