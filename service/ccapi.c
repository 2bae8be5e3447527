/*
 * ccapi.c - the Constant Contact v3 client (see ccapi.h): builds request
 * bodies with json-c, performs exactly one HTTP request per call on the
 * thread's own libcurl handle, parses the answer and classifies failures.
 *
 * The first half of the file is pure (parsers, body builders, URL joining,
 * classification) and is what the unit tests exercise; the second half moves
 * bytes over HTTP.
 */
#include "ccsync/ccapi.h"

#include <curl/curl.h>
#include <json-c/json.h>
#include <limits.h>

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A CC answer larger than this is refused: a page of 500 contacts with list
 * memberships is about 1 MB. */
#define RESPONSE_MAX_BYTES (64u * 1024u * 1024u)
/* Connecting should be quick; a slow connect is better retried. */
#define CONNECT_TIMEOUT_MAX_MS 10000L

struct ccapi {
    CURL *curl;
    char *base_url; /* no trailing '/' */
    long timeout_ms;
    char *access_token; /* secret; wiped on change and free */
    char curl_error[CURL_ERROR_SIZE];
};

/* ------------------------------------------------------------------ */
/* errors                                                              */
/* ------------------------------------------------------------------ */

const char *ccapi_status_name(enum ccapi_status status)
{
    switch (status) {
    case CCAPI_OK:
        return "ok";
    case CCAPI_TRANSIENT:
        return "transient";
    case CCAPI_THROTTLED:
        return "throttled";
    case CCAPI_QUOTA:
        return "quota";
    case CCAPI_UNAUTHORIZED:
        return "unauthorized";
    case CCAPI_NOT_FOUND:
        return "not_found";
    case CCAPI_CONFLICT:
        return "conflict";
    case CCAPI_PERMANENT:
        return "permanent";
    }
    return "unknown";
}

static void copy_trunc(char *dst, size_t size, const char *src)
{
    if (size == 0)
        return;
    if (src == NULL)
        src = "";
    size_t n = strlen(src);
    if (n >= size)
        n = size - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static void error_reset(struct ccapi_error *err)
{
    memset(err, 0, sizeof(*err));
    err->retry_after_s = -1;
}

__attribute__((format(printf, 4, 5))) static void
error_set(struct ccapi_error *err, enum ccapi_status status, const char *key, const char *fmt, ...)
{
    if (err == NULL)
        return;
    error_reset(err);
    err->status = status;
    copy_trunc(err->error_key, sizeof(err->error_key), key);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
}

/* A parse failure of a body CC answered with 2xx. */
#define bad_response(err, ...) error_set((err), CCAPI_TRANSIENT, "bad_response", __VA_ARGS__)

/* Copies at most 120 printable ASCII characters of a non-JSON error body
 * (an HTML page of a proxy, say) so that the message still says something. */
static void body_snippet(char *dst, size_t size, const char *body)
{
    size_t j = 0;
    for (size_t i = 0; body != NULL && body[i] != '\0' && i < 120 && j + 1 < size; i++) {
        unsigned char ch = (unsigned char)body[i];
        dst[j++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : ' ';
    }
    if (size > 0)
        dst[j] = '\0';
}

static const char *json_get_string(struct json_object *o, const char *key)
{
    struct json_object *v;
    if (o == NULL || !json_object_is_type(o, json_type_object))
        return NULL;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

/* An integer member (a number written as 75.0 counts), or -1 when it is
 * absent, not a number, or a number no long holds (the cast would be undefined). */
static long json_get_long(struct json_object *o, const char *key)
{
    struct json_object *v;
    if (o == NULL || !json_object_is_type(o, json_type_object))
        return -1;
    if (!json_object_object_get_ex(o, key, &v))
        return -1;
    if (json_object_is_type(v, json_type_int))
        return (long)json_object_get_int64(v);
    if (json_object_is_type(v, json_type_double)) {
        double d = json_object_get_double(v);
        /* LONG_MIN <= d < -LONG_MIN: both bounds are exact doubles (powers of
         * two), unlike LONG_MAX; NaN fails both */
        return d >= (double)LONG_MIN && d < -(double)LONG_MIN ? (long)d : -1;
    }
    return -1;
}

static struct json_object *json_get(struct json_object *o, const char *key, enum json_type type)
{
    struct json_object *v;
    if (o == NULL || !json_object_is_type(o, json_type_object))
        return NULL;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, type))
        return NULL;
    return v;
}

/* Reads error_key/error_message (CC) or error/error_description (OAuth) from
 * an error body: an array (first entry) or a single object. */
static void error_body_read(const char *body, struct ccapi_error *err)
{
    struct json_object *root = body != NULL ? json_tokener_parse(body) : NULL;
    struct json_object *entry = root;
    if (root != NULL && json_object_is_type(root, json_type_array))
        entry = json_object_array_length(root) > 0 ? json_object_array_get_idx(root, 0) : NULL;

    const char *key = json_get_string(entry, "error_key");
    const char *message = json_get_string(entry, "error_message");
    if (key == NULL)
        key = json_get_string(entry, "error");
    if (message == NULL)
        message = json_get_string(entry, "error_description");
    if (message == NULL)
        message = json_get_string(entry, "message");

    if (key != NULL)
        copy_trunc(err->error_key, sizeof(err->error_key), key);
    if (message != NULL)
        snprintf(err->message, sizeof(err->message), "HTTP %ld: %s", err->http_status, message);
    else if (root == NULL && body != NULL && body[0] != '\0') {
        char snippet[128];
        body_snippet(snippet, sizeof(snippet), body);
        snprintf(err->message, sizeof(err->message), "HTTP %ld: %s", err->http_status, snippet);
    } else
        snprintf(err->message, sizeof(err->message), "HTTP %ld", err->http_status);
    if (err->error_key[0] == '\0')
        snprintf(err->error_key, sizeof(err->error_key), "http_%ld", err->http_status);
    json_object_put(root);
}

void ccapi_classify(long http_status, const char *body, long retry_after_s, struct ccapi_error *err)
{
    error_reset(err);
    err->http_status = http_status;
    err->retry_after_s = retry_after_s >= 0 ? retry_after_s : -1;
    if (http_status >= 200 && http_status < 300) {
        err->status = CCAPI_OK;
        return;
    }
    error_body_read(body, err);

    if (http_status == 401)
        err->status = CCAPI_UNAUTHORIZED;
    else if (http_status == 404)
        err->status = CCAPI_NOT_FOUND;
    else if (http_status == 409)
        err->status = CCAPI_CONFLICT;
    else if (http_status == 429)
        err->status = strcmp(err->error_key, "quota_exceeded") == 0 ? CCAPI_QUOTA : CCAPI_THROTTLED;
    else if (http_status == 408)
        err->status = CCAPI_TRANSIENT; /* the server gave up reading the request */
    else if (http_status >= 500 && http_status < 600) {
        /* CC may have acted before failing: a POST may have queued its job. */
        err->status = CCAPI_TRANSIENT;
        err->maybe_applied = true;
    } else
        err->status = CCAPI_PERMANENT; /* other 4xx, and 1xx/3xx we never expect */
}

void ccapi_classify_token(long http_status, const char *body, long retry_after_s,
                          struct ccapi_error *err)
{
    ccapi_classify(http_status, body, retry_after_s, err);
    if (http_status != 400 && http_status != 401 && http_status != 403 && http_status != 404)
        return;
    if (strcmp(err->error_key, "invalid_grant") == 0 ||
        strcmp(err->error_key, "invalid_client") == 0 ||
        strcmp(err->error_key, "unauthorized_client") == 0)
        err->status = CCAPI_UNAUTHORIZED;
    else
        err->status = CCAPI_PERMANENT;
}

/* Replaces every occurrence of secret in text (a NUL-terminated buffer of
 * size bytes) by "[redacted]". Short secrets are skipped: they would redact
 * ordinary words, and real tokens are long. */
static void redact(char *text, size_t size, const char *secret)
{
    static const char mark[] = "[redacted]";
    if (secret == NULL || strlen(secret) < 8)
        return;
    size_t secret_len = strlen(secret);
    char *hit = strstr(text, secret);
    while (hit != NULL) {
        char rest[512];
        copy_trunc(rest, sizeof(rest), hit + secret_len);
        size_t at = (size_t)(hit - text);
        snprintf(hit, size - at, "%s%s", mark, rest);
        size_t next = at + sizeof(mark) - 1;
        hit = next < strlen(text) ? strstr(text + next, secret) : NULL;
    }
}

static void error_redact(struct ccapi_error *err, const char *secret)
{
    redact(err->message, sizeof(err->message), secret);
    redact(err->error_key, sizeof(err->error_key), secret);
}

/* ------------------------------------------------------------------ */
/* pure helpers                                                        */
/* ------------------------------------------------------------------ */

/* Length of scheme://authority in url, or 0 when url is not absolute. */
static size_t origin_len(const char *url)
{
    const char *sep = strstr(url, "://");
    if (sep == NULL)
        return 0;
    for (const char *p = url; p < sep; p++)
        if (!isalpha((unsigned char)*p))
            return 0;
    const char *host = sep + 3;
    size_t n = strcspn(host, "/?#");
    if (n == 0)
        return 0;
    return (size_t)(host - url) + n;
}

static bool starts_with_segment(const char *s, const char *prefix)
{
    size_t n = strlen(prefix);
    return strncmp(s, prefix, n) == 0 && (s[n] == '/' || s[n] == '?' || s[n] == '\0');
}

char *ccapi_join_url(const char *base_url, const char *href)
{
    char *url = NULL;
    if (base_url == NULL || href == NULL || href[0] == '\0')
        return NULL;
    size_t base_len = strlen(base_url);
    while (base_len > 0 && base_url[base_len - 1] == '/')
        base_len--;
    size_t origin = origin_len(base_url);
    if (origin == 0 || origin > base_len)
        return NULL;

    if (origin_len(href) > 0) {
        /* Absolute: only on our own origin, the bearer token goes with it. */
        if (origin_len(href) != origin || strncasecmp(href, base_url, origin) != 0)
            return NULL;
        return strdup(href);
    }
    if (href[0] != '/' || href[1] == '/')
        return NULL; /* relative paths and //host are not what CC sends */
    int rc;
    if (starts_with_segment(href, "/v3"))
        rc = asprintf(&url, "%.*s%s", (int)base_len, base_url, href + 3);
    else
        rc = asprintf(&url, "%.*s%s", (int)origin, base_url, href);
    return rc < 0 ? NULL : url;
}

static bool email_delimiter(char ch)
{
    return ch == '\0' || isspace((unsigned char)ch) || strchr("\"'`<>()[]{},;:", ch) != NULL;
}

char *ccapi_email_in_message(const char *message)
{
    if (message == NULL)
        return NULL;
    for (const char *at = strchr(message, '@'); at != NULL; at = strchr(at + 1, '@')) {
        const char *start = at;
        while (start > message && !email_delimiter(start[-1]))
            start--;
        const char *end = at + 1;
        while (!email_delimiter(*end))
            end++;
        while (end > at + 1 && (end[-1] == '.' || end[-1] == '!' || end[-1] == '?'))
            end--; /* sentence punctuation after the address */
        /* a word with one '@' between a local part and a domain */
        size_t len = (size_t)(end - start);
        bool one_at = memchr(start, '@', (size_t)(at - start)) == NULL &&
                      memchr(at + 1, '@', (size_t)(end - at - 1)) == NULL;
        if (start < at && end > at + 1 && one_at)
            return strndup(start, len);
        at = end > at ? end - 1 : at; /* skip the rest of this word */
    }
    return NULL;
}

/* Bytes json-c writes for s as a JSON string with JSON_C_TO_STRING_PLAIN |
 * JSON_C_TO_STRING_NOSLASHESCAPE: two quotes, two-byte escapes for \b \n \r
 * \t \f " and backslash, \u00XX for other control characters, every other
 * byte (UTF-8 included) as it is. */
static size_t json_string_size(const char *s)
{
    size_t n = 2;
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p == '\b' || *p == '\n' || *p == '\r' || *p == '\t' || *p == '\f' || *p == '"' ||
            *p == '\\')
            n += 2;
        else if (*p < 0x20)
            n += 6;
        else
            n += 1;
    }
    return n;
}

size_t ccapi_import_contact_size(const struct ccapi_import_contact *contact)
{
    size_t n = strlen("{\"email\":") + json_string_size(contact->email ? contact->email : "");
    if (contact->first_name != NULL)
        n += strlen(",\"first_name\":") + json_string_size(contact->first_name);
    if (contact->last_name != NULL)
        n += strlen(",\"last_name\":") + json_string_size(contact->last_name);
    return n + 1;
}

/* Bytes a contact's mapped fields add: ,"column": + the value (a string, or for a
 * birthday an integer, never longer than its text). */
static size_t import_fields_size(const struct ccapi_import_fields *f)
{
    size_t n = 0;
    for (size_t i = 0; f != NULL && i < f->n; i++)
        if (f->values[i] != NULL)
            n += 2 + json_string_size(f->columns[i]) + json_string_size(f->values[i]);
    return n;
}

static size_t string_array_size(const char *const *items, size_t n)
{
    size_t size = 2 + (n > 0 ? n - 1 : 0);
    for (size_t i = 0; i < n; i++)
        size += json_string_size(items[i]);
    return size;
}

static size_t import_body_size(const struct ccapi_import_contact *contacts,
                               const struct ccapi_import_fields *fields, size_t n_contacts,
                               const char *const *list_ids, size_t n_lists)
{
    size_t size = strlen("{\"import_data\":[") + (n_contacts > 0 ? n_contacts - 1 : 0);
    for (size_t i = 0; i < n_contacts; i++)
        size += ccapi_import_contact_size(&contacts[i]) +
                import_fields_size(fields ? &fields[i] : NULL);
    size += strlen("],\"list_ids\":") + string_array_size(list_ids, n_lists);
    return size + 1;
}

size_t ccapi_import_body_size(const struct ccapi_import_contact *contacts, size_t n_contacts,
                              const char *const *list_ids, size_t n_lists)
{
    return import_body_size(contacts, NULL, n_contacts, list_ids, n_lists);
}

static struct json_object *string_array_new(const char *const *items, size_t n)
{
    struct json_object *array = json_object_new_array_ext((int)n);
    if (array == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        struct json_object *item = json_object_new_string(items[i] ? items[i] : "");
        if (item == NULL || json_object_array_add(array, item) != 0) {
            json_object_put(item);
            json_object_put(array);
            return NULL;
        }
    }
    return array;
}

/* Adds key: string to obj; takes nothing from the caller. */
static int add_string(struct json_object *obj, const char *key, const char *value)
{
    struct json_object *v = json_object_new_string(value);
    if (v == NULL || json_object_object_add(obj, key, v) != 0) {
        json_object_put(v);
        return -1;
    }
    return 0;
}

/* Serializes root compactly into a malloc'd string and releases root. */
static char *json_finish(struct json_object *root, size_t *len)
{
    size_t n = 0;
    const char *text = json_object_to_json_string_length(
        root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);
    char *copy = text != NULL ? strndup(text, n) : NULL;
    if (copy != NULL && len != NULL)
        *len = n;
    json_object_put(root);
    return copy;
}

/* The mapped fields of one import row: text, or an integer for the birthday columns. */
static int add_import_fields(struct json_object *item, const struct ccapi_import_fields *f)
{
    for (size_t i = 0; f != NULL && i < f->n; i++) {
        const char *col = f->columns[i], *v = f->values[i];
        if (v == NULL)
            continue;
        if (strncmp(col, "birthday_", 9) == 0) {
            struct json_object *n = json_object_new_int(atoi(v));
            if (n == NULL || json_object_object_add(item, col, n) != 0) {
                json_object_put(n);
                return -1;
            }
        } else if (add_string(item, col, v) != 0) {
            return -1;
        }
    }
    return 0;
}

static struct json_object *import_item_new(const struct ccapi_import_contact *contact,
                                           const struct ccapi_import_fields *fields)
{
    struct json_object *item = json_object_new_object();
    if (item == NULL)
        return NULL;
    if (add_string(item, "email", contact->email ? contact->email : "") != 0 ||
        (contact->first_name != NULL && add_string(item, "first_name", contact->first_name) != 0) ||
        (contact->last_name != NULL && add_string(item, "last_name", contact->last_name) != 0) ||
        add_import_fields(item, fields) != 0) {
        json_object_put(item);
        return NULL;
    }
    return item;
}

static char *import_body(const struct ccapi_import_contact *contacts,
                         const struct ccapi_import_fields *fields, size_t n_contacts,
                         const char *const *list_ids, size_t n_lists, size_t *len)
{
    struct json_object *root = json_object_new_object();
    struct json_object *data = json_object_new_array_ext((int)n_contacts);
    if (root == NULL || data == NULL || json_object_object_add(root, "import_data", data) != 0) {
        json_object_put(data);
        json_object_put(root);
        return NULL;
    }
    for (size_t i = 0; i < n_contacts; i++) {
        struct json_object *item = import_item_new(&contacts[i], fields ? &fields[i] : NULL);
        if (item == NULL || json_object_array_add(data, item) != 0) {
            json_object_put(item);
            json_object_put(root);
            return NULL;
        }
    }
    struct json_object *lists = string_array_new(list_ids, n_lists);
    if (lists == NULL || json_object_object_add(root, "list_ids", lists) != 0) {
        json_object_put(lists);
        json_object_put(root);
        return NULL;
    }
    return json_finish(root, len);
}

char *ccapi_import_body(const struct ccapi_import_contact *contacts, size_t n_contacts,
                        const char *const *list_ids, size_t n_lists, size_t *len)
{
    return import_body(contacts, NULL, n_contacts, list_ids, n_lists, len);
}

char *ccapi_memberships_body(const char *const *contact_ids, size_t n_contacts,
                             const char *const *list_ids, size_t n_lists)
{
    struct json_object *root = json_object_new_object();
    struct json_object *source = json_object_new_object();
    if (root == NULL || source == NULL || json_object_object_add(root, "source", source) != 0) {
        json_object_put(source);
        json_object_put(root);
        return NULL;
    }
    struct json_object *contacts = string_array_new(contact_ids, n_contacts);
    if (contacts == NULL || json_object_object_add(source, "contact_ids", contacts) != 0) {
        json_object_put(contacts);
        json_object_put(root);
        return NULL;
    }
    struct json_object *lists = string_array_new(list_ids, n_lists);
    if (lists == NULL || json_object_object_add(root, "list_ids", lists) != 0) {
        json_object_put(lists);
        json_object_put(root);
        return NULL;
    }
    return json_finish(root, NULL);
}

static char *list_create_body(const char *name, const char *description)
{
    struct json_object *root = json_object_new_object();
    struct json_object *favorite = json_object_new_boolean(0);
    if (root == NULL || favorite == NULL || add_string(root, "name", name) != 0 ||
        json_object_object_add(root, "favorite", favorite) != 0) {
        json_object_put(favorite);
        json_object_put(root);
        return NULL;
    }
    if (description != NULL && add_string(root, "description", description) != 0) {
        json_object_put(root);
        return NULL;
    }
    return json_finish(root, NULL);
}

/* Percent-encodes s for a query string or a form body: RFC 3986 unreserved
 * characters stay, every other byte becomes %XX. Malloc'd or NULL. */
static char *url_encode(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    char *out = malloc(strlen(s) * 3 + 1);
    if (out == NULL)
        return NULL;
    size_t j = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (isalnum(*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~') {
            out[j++] = (char)*p;
        } else {
            out[j++] = '%';
            out[j++] = hex[*p >> 4];
            out[j++] = hex[*p & 15];
        }
    }
    out[j] = '\0';
    return out;
}

static void free_secret(char *s)
{
    if (s == NULL)
        return;
    explicit_bzero(s, strlen(s));
    free(s);
}

char *ccapi_refresh_body(const char *refresh_token, const char *client_id, bool with_client_id)
{
    char *token = url_encode(refresh_token ? refresh_token : "");
    char *id = with_client_id ? url_encode(client_id ? client_id : "") : NULL;
    char *body = NULL;
    if (token != NULL && (!with_client_id || id != NULL)) {
        int rc = with_client_id
                     ? asprintf(&body, "grant_type=refresh_token&refresh_token=%s&client_id=%s",
                                token, id)
                     : asprintf(&body, "grant_type=refresh_token&refresh_token=%s", token);
        if (rc < 0)
            body = NULL;
    }
    free_secret(token);
    free(id);
    return body;
}

/* ------------------------------------------------------------------ */
/* parsers                                                             */
/* ------------------------------------------------------------------ */

/* Copies a CC identifier; -1 when absent, empty or too long for the buffer. */
static int copy_id(char dst[CCAPI_ID_SIZE], const char *id)
{
    if (id == NULL || id[0] == '\0' || strlen(id) >= CCAPI_ID_SIZE)
        return -1;
    memcpy(dst, id, strlen(id) + 1);
    return 0;
}

static struct json_object *parse_object(const char *json, const char *what, struct ccapi_error *err)
{
    struct json_object *root = json != NULL ? json_tokener_parse(json) : NULL;
    if (root == NULL || !json_object_is_type(root, json_type_object)) {
        json_object_put(root);
        bad_response(err, "%s: not a JSON object", what);
        return NULL;
    }
    return root;
}

/* _links.next.href, copied; *out NULL when there is none. -1 on allocation
 * failure or a wrong type. */
static int next_href_read(struct json_object *root, char **out, struct ccapi_error *err)
{
    *out = NULL;
    struct json_object *links = json_get(root, "_links", json_type_object);
    struct json_object *next = json_get(links, "next", json_type_object);
    const char *href = json_get_string(next, "href");
    if (next != NULL && href == NULL) {
        bad_response(err, "_links.next has no href");
        return -1;
    }
    if (href == NULL || href[0] == '\0')
        return 0;
    *out = strdup(href);
    if (*out == NULL) {
        bad_response(err, "out of memory");
        return -1;
    }
    return 0;
}

void ccapi_list_clear(struct ccapi_list *list)
{
    if (list == NULL)
        return;
    free(list->name);
    free(list->description);
    memset(list, 0, sizeof(*list));
}

void ccapi_list_page_clear(struct ccapi_list_page *page)
{
    if (page == NULL)
        return;
    for (size_t i = 0; i < page->n_lists; i++)
        ccapi_list_clear(&page->lists[i]);
    free(page->lists);
    free(page->next_href);
    memset(page, 0, sizeof(*page));
}

static int list_read(struct json_object *o, struct ccapi_list *out, struct ccapi_error *err)
{
    memset(out, 0, sizeof(*out));
    const char *name = json_get_string(o, "name");
    if (copy_id(out->list_id, json_get_string(o, "list_id")) != 0 || name == NULL) {
        bad_response(err, "list without a usable list_id or name");
        return -1;
    }
    out->name = strdup(name);
    if (out->name == NULL) {
        bad_response(err, "out of memory");
        return -1;
    }
    const char *description = json_get_string(o, "description");
    if (description != NULL && (out->description = strdup(description)) == NULL) {
        free(out->name);
        out->name = NULL;
        bad_response(err, "out of memory");
        return -1;
    }
    out->membership_count = json_get_long(o, "membership_count");
    copy_trunc(out->status, sizeof(out->status), json_get_string(o, "status"));
    copy_trunc(out->created_at, sizeof(out->created_at), json_get_string(o, "created_at"));
    copy_trunc(out->deleted_at, sizeof(out->deleted_at), json_get_string(o, "deleted_at"));
    out->deleted = strcmp(out->status, "deleted") == 0 || out->deleted_at[0] != '\0';
    return 0;
}

int ccapi_parse_list(const char *json, struct ccapi_list *out, struct ccapi_error *err)
{
    memset(out, 0, sizeof(*out));
    struct json_object *root = parse_object(json, "contact list", err);
    if (root == NULL)
        return -1;
    int rc = list_read(root, out, err);
    if (rc != 0)
        ccapi_list_clear(out);
    json_object_put(root);
    return rc;
}

/* The array member key of root: NULL with *ok true when absent (an empty
 * page), NULL with *ok false when it is not an array. */
static struct json_object *page_items(struct json_object *root, const char *key, bool *ok)
{
    struct json_object *v;
    *ok = true;
    if (!json_object_object_get_ex(root, key, &v) || json_object_is_type(v, json_type_null))
        return NULL;
    if (!json_object_is_type(v, json_type_array)) {
        *ok = false;
        return NULL;
    }
    return v;
}

/* What differs between CC's paged answers: the name of the items' array, the
 * size of one parsed item, and how to read and clear one. */
struct page_kind {
    const char *what;  /* for error messages: "contact list page" */
    const char *array; /* "lists", "activities", "contacts" */
    size_t item_size;
    int (*read)(struct json_object *o, void *item, struct ccapi_error *err);
    void (*clear)(void *item);
};

/* Parses {"<array>":[...],"_links":{"next":{"href"}}}. On success *items (owned,
 * NULL when empty), *n and *next_href are set; on failure they are NULL/0. */
static int parse_page(const char *json, const struct page_kind *k, void **items, size_t *n,
                      char **next_href, struct ccapi_error *err)
{
    *items = NULL;
    *n = 0;
    *next_href = NULL;
    struct json_object *root = parse_object(json, k->what, err);
    if (root == NULL)
        return -1;
    bool ok;
    struct json_object *array = page_items(root, k->array, &ok);
    size_t len = array != NULL ? json_object_array_length(array) : 0;
    char *base = NULL;
    if (!ok) {
        char why[64];
        snprintf(why, sizeof why, "%s is not an array", k->array);
        bad_response(err, why);
        goto error;
    }
    if (len > 0) {
        base = calloc(len, k->item_size);
        if (base == NULL) {
            bad_response(err, "out of memory");
            goto error;
        }
    }
    for (size_t i = 0; i < len; i++) {
        if (k->read(json_object_array_get_idx(array, i), base + i * k->item_size, err) != 0) {
            k->clear(base + i * k->item_size);
            goto error;
        }
        (*n)++;
    }
    if (next_href_read(root, next_href, err) != 0)
        goto error;
    json_object_put(root);
    *items = base;
    return 0;
error:
    for (size_t i = 0; i < *n; i++)
        k->clear(base + i * k->item_size);
    free(base);
    *n = 0;
    json_object_put(root);
    return -1;
}

static int list_read_item(struct json_object *o, void *item, struct ccapi_error *err)
{
    return list_read(o, item, err);
}

static void list_clear_item(void *item)
{
    ccapi_list_clear(item);
}

int ccapi_parse_list_page(const char *json, struct ccapi_list_page *out, struct ccapi_error *err)
{
    static const struct page_kind kind = {"contact list page", "lists", sizeof(struct ccapi_list),
                                          list_read_item, list_clear_item};
    void *items;
    memset(out, 0, sizeof(*out));
    int rc = parse_page(json, &kind, &items, &out->n_lists, &out->next_href, err);
    out->lists = items;
    return rc;
}

int ccapi_parse_activity_id(const char *json, char activity_id[CCAPI_ID_SIZE],
                            struct ccapi_error *err)
{
    activity_id[0] = '\0';
    struct json_object *root = parse_object(json, "activity", err);
    if (root == NULL)
        return -1;
    const char *id = json_get_string(root, "activity_id");
    if (id == NULL) {
        /* fall back on the last segment of _links.self.href */
        struct json_object *links = json_get(root, "_links", json_type_object);
        const char *href = json_get_string(json_get(links, "self", json_type_object), "href");
        const char *slash = href != NULL ? strrchr(href, '/') : NULL;
        id = slash != NULL ? slash + 1 : NULL;
    }
    int rc = copy_id(activity_id, id);
    if (rc != 0)
        bad_response(err, "activity without a usable activity_id");
    json_object_put(root);
    return rc;
}

enum ccapi_activity_state ccapi_activity_state_parse(const char *name)
{
    static const struct {
        const char *name;
        enum ccapi_activity_state state;
    } states[] = {
        {"initialized", CCAPI_ACTIVITY_INITIALIZED}, {"processing", CCAPI_ACTIVITY_PROCESSING},
        {"completed", CCAPI_ACTIVITY_COMPLETED},     {"cancelled", CCAPI_ACTIVITY_CANCELLED},
        {"failed", CCAPI_ACTIVITY_FAILED},           {"timed_out", CCAPI_ACTIVITY_TIMED_OUT},
    };
    for (size_t i = 0; name != NULL && i < sizeof(states) / sizeof(states[0]); i++)
        if (strcmp(name, states[i].name) == 0)
            return states[i].state;
    return CCAPI_ACTIVITY_UNKNOWN;
}

bool ccapi_activity_finished(enum ccapi_activity_state state)
{
    return state == CCAPI_ACTIVITY_COMPLETED || state == CCAPI_ACTIVITY_CANCELLED ||
           state == CCAPI_ACTIVITY_FAILED || state == CCAPI_ACTIVITY_TIMED_OUT;
}

void ccapi_activity_clear(struct ccapi_activity *activity)
{
    if (activity == NULL)
        return;
    for (size_t i = 0; i < activity->n_errors; i++) {
        free(activity->errors[i].message);
        free(activity->errors[i].email);
    }
    free(activity->errors);
    memset(activity, 0, sizeof(*activity));
}

void ccapi_activity_page_clear(struct ccapi_activity_page *page)
{
    if (page == NULL)
        return;
    for (size_t i = 0; i < page->n_activities; i++)
        ccapi_activity_clear(&page->activities[i]);
    free(page->activities);
    free(page->next_href);
    memset(page, 0, sizeof(*page));
}

/* One activity_errors entry: a string as documented, or an object with a
 * message and perhaps the email. Entries of other types are skipped. */
static int activity_error_read(struct json_object *entry, struct ccapi_activity *out,
                               struct ccapi_error *err)
{
    const char *message = NULL;
    const char *email = NULL;
    if (json_object_is_type(entry, json_type_string))
        message = json_object_get_string(entry);
    else if (json_object_is_type(entry, json_type_object)) {
        message = json_get_string(entry, "message");
        if (message == NULL)
            message = json_get_string(entry, "error_message");
        email = json_get_string(entry, "email");
        if (email == NULL)
            email = json_get_string(entry, "email_address");
        if (message == NULL)
            message = "";
    } else
        return 0;

    struct ccapi_activity_error *e = &out->errors[out->n_errors];
    e->message = strdup(message);
    e->email = email != NULL ? strdup(email) : ccapi_email_in_message(message);
    if (e->message == NULL || (email != NULL && e->email == NULL)) {
        free(e->message);
        free(e->email);
        bad_response(err, "out of memory");
        return -1;
    }
    out->n_errors++;
    return 0;
}

static int activity_read(struct json_object *o, struct ccapi_activity *out, struct ccapi_error *err)
{
    memset(out, 0, sizeof(*out));
    if (copy_id(out->activity_id, json_get_string(o, "activity_id")) != 0) {
        bad_response(err, "activity without a usable activity_id");
        return -1;
    }
    const char *state = json_get_string(o, "state");
    out->state = ccapi_activity_state_parse(state);
    copy_trunc(out->state_name, sizeof(out->state_name), state);
    out->percent_done = json_get_long(o, "percent_done");
    copy_trunc(out->created_at, sizeof(out->created_at), json_get_string(o, "created_at"));
    copy_trunc(out->completed_at, sizeof(out->completed_at), json_get_string(o, "completed_at"));

    struct json_object *status = json_get(o, "status", json_type_object);
    out->items_total_count = json_get_long(status, "items_total_count");
    out->items_completed_count = json_get_long(status, "items_completed_count");
    out->cannot_add_to_list_count = json_get_long(status, "cannot_add_to_list_count");
    out->error_count = json_get_long(status, "error_count");
    out->correctable_count = json_get_long(status, "correctable_count");
    out->person_count = json_get_long(status, "person_count");
    out->list_count = json_get_long(status, "list_count");

    struct json_object *errors = json_get(o, "activity_errors", json_type_array);
    size_t n = errors != NULL ? json_object_array_length(errors) : 0;
    if (n == 0)
        return 0;
    out->errors = calloc(n, sizeof(*out->errors));
    if (out->errors == NULL) {
        bad_response(err, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if (activity_error_read(json_object_array_get_idx(errors, i), out, err) != 0)
            return -1;
    return 0;
}

int ccapi_parse_activity(const char *json, struct ccapi_activity *out, struct ccapi_error *err)
{
    memset(out, 0, sizeof(*out));
    struct json_object *root = parse_object(json, "activity", err);
    if (root == NULL)
        return -1;
    int rc = activity_read(root, out, err);
    if (rc != 0)
        ccapi_activity_clear(out);
    json_object_put(root);
    return rc;
}

static int activity_read_item(struct json_object *o, void *item, struct ccapi_error *err)
{
    return activity_read(o, item, err);
}

static void activity_clear_item(void *item)
{
    ccapi_activity_clear(item);
}

int ccapi_parse_activity_page(const char *json, struct ccapi_activity_page *out,
                              struct ccapi_error *err)
{
    static const struct page_kind kind = {"activity page", "activities",
                                          sizeof(struct ccapi_activity), activity_read_item,
                                          activity_clear_item};
    void *items;
    memset(out, 0, sizeof(*out));
    int rc = parse_page(json, &kind, &items, &out->n_activities, &out->next_href, err);
    out->activities = items;
    return rc;
}

void ccapi_contact_clear(struct ccapi_contact *contact)
{
    if (contact == NULL)
        return;
    free(contact->email);
    free(contact->first_name);
    free(contact->last_name);
    free(contact->list_ids);
    memset(contact, 0, sizeof(*contact));
}

void ccapi_contact_page_clear(struct ccapi_contact_page *page)
{
    if (page == NULL)
        return;
    for (size_t i = 0; i < page->n_contacts; i++)
        ccapi_contact_clear(&page->contacts[i]);
    free(page->contacts);
    free(page->next_href);
    memset(page, 0, sizeof(*page));
}

/* strdup of an optional string: 0 with *dst NULL when src is NULL. */
static int dup_optional(char **dst, const char *src)
{
    *dst = NULL;
    if (src == NULL)
        return 0;
    *dst = strdup(src);
    return *dst != NULL ? 0 : -1;
}

static int contact_read(struct json_object *o, struct ccapi_contact *out, struct ccapi_error *err)
{
    memset(out, 0, sizeof(*out));
    if (copy_id(out->contact_id, json_get_string(o, "contact_id")) != 0) {
        bad_response(err, "contact without a usable contact_id");
        return -1;
    }
    struct json_object *email = json_get(o, "email_address", json_type_object);
    if (dup_optional(&out->email, json_get_string(email, "address")) != 0 ||
        dup_optional(&out->first_name, json_get_string(o, "first_name")) != 0 ||
        dup_optional(&out->last_name, json_get_string(o, "last_name")) != 0) {
        bad_response(err, "out of memory");
        return -1;
    }
    copy_trunc(out->permission_to_send, sizeof(out->permission_to_send),
               json_get_string(email, "permission_to_send"));
    out->deleted = json_get_string(o, "deleted_at") != NULL;

    struct json_object *lists = json_get(o, "list_memberships", json_type_array);
    size_t n = lists != NULL ? json_object_array_length(lists) : 0;
    if (n == 0)
        return 0;
    out->list_ids = calloc(n, sizeof(*out->list_ids));
    if (out->list_ids == NULL) {
        bad_response(err, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        struct json_object *id = json_object_array_get_idx(lists, i);
        const char *text =
            json_object_is_type(id, json_type_string) ? json_object_get_string(id) : NULL;
        if (copy_id(out->list_ids[out->n_list_ids], text) != 0) {
            bad_response(err, "contact %s: unusable list id in list_memberships", out->contact_id);
            return -1;
        }
        out->n_list_ids++;
    }
    return 0;
}

static int contact_read_item(struct json_object *o, void *item, struct ccapi_error *err)
{
    return contact_read(o, item, err);
}

static void contact_clear_item(void *item)
{
    ccapi_contact_clear(item);
}

int ccapi_parse_contact_page(const char *json, struct ccapi_contact_page *out,
                             struct ccapi_error *err)
{
    static const struct page_kind kind = {"contact page", "contacts", sizeof(struct ccapi_contact),
                                          contact_read_item, contact_clear_item};
    void *items;
    memset(out, 0, sizeof(*out));
    int rc = parse_page(json, &kind, &items, &out->n_contacts, &out->next_href, err);
    out->contacts = items;
    return rc;
}

void ccapi_token_clear(struct ccapi_token *token)
{
    if (token == NULL)
        return;
    free_secret(token->access_token);
    free_secret(token->refresh_token);
    memset(token, 0, sizeof(*token));
}

int ccapi_parse_token(const char *json, struct ccapi_token *out, struct ccapi_error *err)
{
    memset(out, 0, sizeof(*out));
    struct json_object *root = parse_object(json, "token response", err);
    if (root == NULL)
        return -1;
    const char *access = json_get_string(root, "access_token");
    const char *refresh = json_get_string(root, "refresh_token");
    int rc = -1;
    if (access == NULL || access[0] == '\0') {
        bad_response(err, "token response without access_token");
    } else if (dup_optional(&out->access_token, access) != 0 ||
               dup_optional(&out->refresh_token, refresh) != 0) {
        bad_response(err, "out of memory");
    } else {
        out->expires_in = json_get_long(root, "expires_in");
        copy_trunc(out->token_type, sizeof(out->token_type), json_get_string(root, "token_type"));
        rc = 0;
    }
    if (rc != 0)
        ccapi_token_clear(out);
    /* the parsed tree holds copies of the tokens: wipe them before release */
    struct json_object *v;
    if (json_object_object_get_ex(root, "access_token", &v) &&
        json_object_is_type(v, json_type_string))
        explicit_bzero((char *)json_object_get_string(v), (size_t)json_object_get_string_len(v));
    if (json_object_object_get_ex(root, "refresh_token", &v) &&
        json_object_is_type(v, json_type_string))
        explicit_bzero((char *)json_object_get_string(v), (size_t)json_object_get_string_len(v));
    json_object_put(root);
    return rc;
}

/* ------------------------------------------------------------------ */
/* HTTP                                                                */
/* ------------------------------------------------------------------ */

struct ccapi *ccapi_new(const char *base_url, long timeout_ms)
{
    if (base_url == NULL || base_url[0] == '\0')
        return NULL;
    struct ccapi *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->curl = curl_easy_init();
    c->base_url = strdup(base_url);
    if (c->curl == NULL || c->base_url == NULL) {
        ccapi_free(c);
        return NULL;
    }
    size_t n = strlen(c->base_url);
    while (n > 0 && c->base_url[n - 1] == '/')
        c->base_url[--n] = '\0';
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : 30000;
    return c;
}

void ccapi_free(struct ccapi *c)
{
    if (c == NULL)
        return;
    if (c->curl != NULL)
        curl_easy_cleanup(c->curl);
    free(c->base_url);
    free_secret(c->access_token);
    free(c);
}

int ccapi_set_token(struct ccapi *c, const char *access_token)
{
    char *copy = NULL;
    if (access_token != NULL) {
        copy = strdup(access_token);
        if (copy == NULL)
            return -1;
    }
    free_secret(c->access_token);
    c->access_token = copy;
    return 0;
}

struct response {
    char *body;
    size_t len;
    size_t cap;
    bool too_large;
};

static size_t response_write(char *data, size_t size, size_t nmemb, void *userdata)
{
    struct response *r = userdata;
    size_t n = size * nmemb;
    if (r->len + n + 1 > RESPONSE_MAX_BYTES) {
        r->too_large = true;
        return 0; /* makes curl stop with CURLE_WRITE_ERROR */
    }
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap > 0 ? r->cap : 16384;
        while (cap < r->len + n + 1)
            cap *= 2;
        char *body = realloc(r->body, cap);
        if (body == NULL)
            return 0;
        r->body = body;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    r->body[r->len] = '\0';
    return n;
}

/* Whether libcurl got as far as sending (part of) the request. */
static bool request_sent(CURL *curl)
{
    long request_size = 0;
    curl_off_t pretransfer = 0;
    curl_easy_getinfo(curl, CURLINFO_REQUEST_SIZE, &request_size);
    curl_easy_getinfo(curl, CURLINFO_PRETRANSFER_TIME_T, &pretransfer);
    return request_size > 0 || pretransfer > 0;
}

static void transport_error(struct ccapi *c, CURLcode rc, const struct response *resp,
                            struct ccapi_error *err)
{
    const char *detail = c->curl_error[0] != '\0' ? c->curl_error : curl_easy_strerror(rc);
    bool sent = request_sent(c->curl);
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
        error_set(err, CCAPI_TRANSIENT, "connect_failed", "%s", detail);
        sent = false;
        break;
    case CURLE_OPERATION_TIMEDOUT:
        error_set(err, CCAPI_TRANSIENT, "timeout", "%s", detail);
        break;
    case CURLE_WRITE_ERROR:
        if (resp->too_large) {
            error_set(err, CCAPI_PERMANENT, "response_too_large", "response larger than %u bytes",
                      RESPONSE_MAX_BYTES);
            break;
        }
        error_set(err, CCAPI_TRANSIENT, "out_of_memory", "%s", detail);
        break;
    default:
        error_set(err, CCAPI_TRANSIENT, "transport_error", "%s", detail);
        break;
    }
    err->curl_code = (int)rc;
    err->maybe_applied = sent;
}

/* Wipes the strings of a header list (one holds the bearer token) and frees it. */
static void headers_free(struct curl_slist *headers)
{
    for (struct curl_slist *h = headers; h != NULL; h = h->next)
        explicit_bzero(h->data, strlen(h->data));
    curl_slist_free_all(headers);
}

struct request {
    const char *method;       /* GET, POST, DELETE */
    const char *url;          /* absolute */
    const char *content_type; /* NULL when there is no body */
    const char *body;
    size_t body_len;
    bool bearer;      /* send the access token */
    const char *user; /* HTTP Basic, NULL for none */
    const char *password;
};

static struct curl_slist *headers_new(const struct ccapi *c, const struct request *req)
{
    struct curl_slist *headers = NULL;
    struct curl_slist *h = curl_slist_append(NULL, "Accept: application/json");
    headers = h;
    /* no "Expect: 100-continue" round trip before a large import body */
    if (h != NULL)
        h = curl_slist_append(headers, "Expect:");
    if (h != NULL && req->content_type != NULL) {
        char line[128];
        snprintf(line, sizeof(line), "Content-Type: %s", req->content_type);
        h = curl_slist_append(headers, line);
    }
    if (h != NULL && req->bearer) {
        char *line = NULL;
        if (asprintf(&line, "Authorization: Bearer %s", c->access_token) < 0)
            h = NULL;
        else {
            h = curl_slist_append(headers, line);
            free_secret(line);
        }
    }
    if (h == NULL) {
        headers_free(headers);
        return NULL;
    }
    return headers;
}

static void request_options(struct ccapi *c, const struct request *req, struct response *resp,
                            struct curl_slist *headers)
{
    CURL *curl = c->curl;
    curl_easy_reset(curl); /* keeps the connection cache */
    c->curl_error[0] = '\0';
    curl_easy_setopt(curl, CURLOPT_URL, req->url);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, c->timeout_ms);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
                     c->timeout_ms < CONNECT_TIMEOUT_MAX_MS ? c->timeout_ms
                                                            : CONNECT_TIMEOUT_MAX_MS);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, c->curl_error);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, response_write);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, resp);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "ccsync/1");
    curl_easy_setopt(curl, CURLOPT_ACCEPT_ENCODING, ""); /* large contact pages compress well */
    if (req->user != NULL) {
        curl_easy_setopt(curl, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(curl, CURLOPT_USERNAME, req->user);
        curl_easy_setopt(curl, CURLOPT_PASSWORD, req->password ? req->password : "");
    }
    if (strcmp(req->method, "POST") == 0) {
        /* On a reused connection that dies before an answer, libcurl resends
         * the request by itself: a second import job, or a second use of a
         * single-use refresh token. A fresh connection is never resent. */
        curl_easy_setopt(curl, CURLOPT_FRESH_CONNECT, 1L);
        curl_easy_setopt(curl, CURLOPT_POST, 1L);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, req->body ? req->body : "");
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    } else if (strcmp(req->method, "GET") != 0) {
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, req->method);
        if (req->body != NULL) { /* PUT /contact_tags/{id} (§12) */
            curl_easy_setopt(curl, CURLOPT_POSTFIELDS, req->body);
            curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        }
    }
}

/*
 * Performs one request. Returns 0 with resp->body (owned by resp, "" when
 * empty) on a 2xx; else -1 with err classified. token_endpoint selects the
 * OAuth classification. Secrets are redacted from err.
 */
static int perform(struct ccapi *c, const struct request *req, bool token_endpoint,
                   struct response *resp, struct ccapi_error *err)
{
    memset(resp, 0, sizeof(*resp));
    if (req->bearer && (c->access_token == NULL || c->access_token[0] == '\0')) {
        error_set(err, CCAPI_UNAUTHORIZED, "no_token", "no access token set");
        return -1;
    }
    struct curl_slist *headers = headers_new(c, req);
    if (headers == NULL) {
        error_set(err, CCAPI_TRANSIENT, "out_of_memory", "cannot build request headers");
        return -1;
    }
    request_options(c, req, resp, headers);
    CURLcode rc = curl_easy_perform(c->curl);
    /* the password option holds the client secret: drop it from the handle */
    if (req->user != NULL)
        curl_easy_setopt(c->curl, CURLOPT_PASSWORD, "");
    headers_free(headers);
    if (rc != CURLE_OK) {
        transport_error(c, rc, resp, err);
        free(resp->body);
        memset(resp, 0, sizeof(*resp));
        return -1;
    }
    long status = 0;
    curl_off_t retry_after = -1;
    curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
    if (curl_easy_getinfo(c->curl, CURLINFO_RETRY_AFTER, &retry_after) != CURLE_OK ||
        retry_after <= 0)
        retry_after = -1;
    if (resp->body == NULL) {
        resp->body = strdup("");
        if (resp->body == NULL) {
            error_set(err, CCAPI_TRANSIENT, "out_of_memory", "out of memory");
            err->maybe_applied = true;
            return -1;
        }
    }
    if (token_endpoint)
        ccapi_classify_token(status, resp->body, (long)retry_after, err);
    else
        ccapi_classify(status, resp->body, (long)retry_after, err);
    error_redact(err, c->access_token);
    if (err->status == CCAPI_OK)
        return 0;
    free(resp->body);
    memset(resp, 0, sizeof(*resp));
    return -1;
}

/* A 2xx body could not be parsed: CC may have acted (a POST queued its job). */
static void parsed_badly(struct ccapi_error *err, long http_status)
{
    err->http_status = http_status;
    err->maybe_applied = true;
}

static int api_get(struct ccapi *c, const char *url, struct response *resp, struct ccapi_error *err)
{
    struct request req = {.method = "GET", .url = url, .bearer = true};
    return perform(c, &req, false, resp, err);
}

static int api_send(struct ccapi *c, const char *method, const char *url, const char *json,
                    struct response *resp, struct ccapi_error *err)
{
    struct request req = {.method = method,
                          .url = url,
                          .content_type = json != NULL ? "application/json" : NULL,
                          .body = json,
                          .body_len = json != NULL ? strlen(json) : 0,
                          .bearer = true};
    return perform(c, &req, false, resp, err);
}

static long last_status(struct ccapi *c)
{
    long status = 0;
    curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
    return status;
}

/* base_url + path; path starts with '/'. Malloc'd or NULL. */
__attribute__((format(printf, 2, 3))) static char *api_url(struct ccapi *c, const char *fmt, ...)
{
    char *path = NULL;
    char *url = NULL;
    va_list ap;
    va_start(ap, fmt);
    int rc = vasprintf(&path, fmt, ap);
    va_end(ap);
    if (rc < 0)
        return NULL;
    if (asprintf(&url, "%s%s", c->base_url, path) < 0)
        url = NULL;
    free(path);
    return url;
}

/* The URL of the next page, or NULL with err set. */
static char *next_url(struct ccapi *c, const char *next_href, struct ccapi_error *err)
{
    char *url = ccapi_join_url(c->base_url, next_href);
    if (url == NULL)
        error_set(err, CCAPI_PERMANENT, "bad_request", "unusable next link");
    return url;
}

static int no_memory(struct ccapi_error *err)
{
    error_set(err, CCAPI_TRANSIENT, "out_of_memory", "out of memory");
    return -1;
}

int ccapi_lists_page(struct ccapi *c, const char *next_href, struct ccapi_list_page *out,
                     struct ccapi_error *err)
{
    memset(out, 0, sizeof(*out));
    char *url = next_href != NULL
                    ? next_url(c, next_href, err)
                    : api_url(c, "/contact_lists?limit=%d&status=all&include_membership_count=all",
                              CCAPI_PAGE_LIMIT);
    if (url == NULL)
        return next_href != NULL ? -1 : no_memory(err);
    struct response resp;
    int rc = api_get(c, url, &resp, err);
    free(url);
    if (rc != 0)
        return -1;
    rc = ccapi_parse_list_page(resp.body, out, err);
    if (rc != 0)
        parsed_badly(err, last_status(c));
    free(resp.body);
    return rc;
}

int ccapi_lists_find_by_name(struct ccapi *c, const char *name, struct ccapi_list_page *out,
                             struct ccapi_error *err)
{
    memset(out, 0, sizeof(*out));
    char *encoded = url_encode(name);
    char *url = encoded != NULL
                    ? api_url(c, "/contact_lists?name=%s&include_membership_count=all", encoded)
                    : NULL;
    free(encoded);
    if (url == NULL)
        return no_memory(err);
    struct response resp;
    int rc = api_get(c, url, &resp, err);
    free(url);
    if (rc != 0)
        return -1;
    rc = ccapi_parse_list_page(resp.body, out, err);
    if (rc != 0)
        parsed_badly(err, last_status(c));
    free(resp.body);
    return rc;
}

int ccapi_list_get(struct ccapi *c, const char *list_id, struct ccapi_list *out,
                   struct ccapi_error *err)
{
    memset(out, 0, sizeof(*out));
    char *encoded = url_encode(list_id);
    char *url = encoded != NULL
                    ? api_url(c, "/contact_lists/%s?include_membership_count=all", encoded)
                    : NULL;
    free(encoded);
    if (url == NULL)
        return no_memory(err);
    struct response resp;
    int rc = api_get(c, url, &resp, err);
    free(url);
    if (rc != 0)
        return -1;
    rc = ccapi_parse_list(resp.body, out, err);
    if (rc != 0)
        parsed_badly(err, last_status(c));
    free(resp.body);
    return rc;
}

int ccapi_list_create(struct ccapi *c, const char *name, const char *description,
                      struct ccapi_list *out, struct ccapi_error *err)
{
    memset(out, 0, sizeof(*out));
    char *body = list_create_body(name, description);
    char *url = api_url(c, "/contact_lists");
    if (body == NULL || url == NULL) {
        free(body);
        free(url);
        return no_memory(err);
    }
    struct response resp;
    int rc = api_send(c, "POST", url, body, &resp, err);
    free(body);
    free(url);
    if (rc != 0)
        return -1;
    rc = ccapi_parse_list(resp.body, out, err);
    if (rc != 0)
        parsed_badly(err, last_status(c));
    free(resp.body);
    return rc;
}

/* Sends json (or nothing) and reads the activity id of the 201/202 answer. */
static int activity_request(struct ccapi *c, const char *method, char *url, const char *json,
                            char activity_id[CCAPI_ID_SIZE], struct ccapi_error *err)
{
    struct response resp;
    int rc = api_send(c, method, url, json, &resp, err);
    if (rc != 0)
        return -1;
    rc = ccapi_parse_activity_id(resp.body, activity_id, err);
    if (rc != 0)
        parsed_badly(err, last_status(c));
    free(resp.body);
    return rc;
}

int ccapi_list_delete(struct ccapi *c, const char *list_id, char activity_id[CCAPI_ID_SIZE],
                      struct ccapi_error *err)
{
    activity_id[0] = '\0';
    char *encoded = url_encode(list_id);
    char *url = encoded != NULL ? api_url(c, "/contact_lists/%s", encoded) : NULL;
    free(encoded);
    if (url == NULL)
        return no_memory(err);
    int rc = activity_request(c, "DELETE", url, NULL, activity_id, err);
    free(url);
    return rc;
}

static int refuse(struct ccapi_error *err, const char *key, const char *message)
{
    error_set(err, CCAPI_PERMANENT, key, "%s", message);
    return -1;
}

int ccapi_contacts_import(struct ccapi *c, const struct ccapi_import_contact *contacts,
                          size_t n_contacts, const char *const *list_ids, size_t n_lists,
                          char activity_id[CCAPI_ID_SIZE], struct ccapi_error *err)
{
    return ccapi_contacts_import_fields(c, contacts, NULL, n_contacts, list_ids, n_lists,
                                        activity_id, err);
}

int ccapi_contacts_import_fields(struct ccapi *c, const struct ccapi_import_contact *contacts,
                                 const struct ccapi_import_fields *fields, size_t n_contacts,
                                 const char *const *list_ids, size_t n_lists,
                                 char activity_id[CCAPI_ID_SIZE], struct ccapi_error *err)
{
    activity_id[0] = '\0';
    if (n_contacts == 0 || n_lists == 0 || n_lists > CCAPI_MAX_LIST_IDS)
        return refuse(err, "bad_request", "import needs contacts and 1-50 lists");
    if (n_contacts > CCAPI_IMPORT_MAX_CONTACTS)
        return refuse(err, "request_too_large", "more than 40000 contacts in one import");
    for (size_t i = 0; i < n_contacts; i++)
        if (contacts[i].email == NULL || contacts[i].email[0] == '\0')
            return refuse(err, "bad_request", "import contact without email");
    if (import_body_size(contacts, fields, n_contacts, list_ids, n_lists) >= CCAPI_IMPORT_MAX_BYTES)
        return refuse(err, "request_too_large", "import body would reach 4 MB");
    char *body = import_body(contacts, fields, n_contacts, list_ids, n_lists, NULL);
    char *url = api_url(c, "/activities/contacts_json_import");
    int rc = body != NULL && url != NULL ? activity_request(c, "POST", url, body, activity_id, err)
                                         : no_memory(err);
    free(body);
    free(url);
    return rc;
}

static int memberships_change(struct ccapi *c, const char *path, const char *const *contact_ids,
                              size_t n_contacts, const char *const *list_ids, size_t n_lists,
                              char activity_id[CCAPI_ID_SIZE], struct ccapi_error *err)
{
    activity_id[0] = '\0';
    if (n_contacts == 0 || n_contacts > CCAPI_MEMBERSHIPS_MAX_CONTACTS || n_lists == 0 ||
        n_lists > CCAPI_MAX_LIST_IDS)
        return refuse(err, "bad_request", "membership change needs 1-500 contacts, 1-50 lists");
    char *body = ccapi_memberships_body(contact_ids, n_contacts, list_ids, n_lists);
    char *url = api_url(c, "%s", path);
    int rc = body != NULL && url != NULL ? activity_request(c, "POST", url, body, activity_id, err)
                                         : no_memory(err);
    free(body);
    free(url);
    return rc;
}

int ccapi_memberships_add(struct ccapi *c, const char *const *contact_ids, size_t n_contacts,
                          const char *const *list_ids, size_t n_lists,
                          char activity_id[CCAPI_ID_SIZE], struct ccapi_error *err)
{
    return memberships_change(c, "/activities/add_list_memberships", contact_ids, n_contacts,
                              list_ids, n_lists, activity_id, err);
}

int ccapi_memberships_remove(struct ccapi *c, const char *const *contact_ids, size_t n_contacts,
                             const char *const *list_ids, size_t n_lists,
                             char activity_id[CCAPI_ID_SIZE], struct ccapi_error *err)
{
    return memberships_change(c, "/activities/remove_list_memberships", contact_ids, n_contacts,
                              list_ids, n_lists, activity_id, err);
}

int ccapi_activity_get(struct ccapi *c, const char *activity_id, struct ccapi_activity *out,
                       struct ccapi_error *err)
{
    memset(out, 0, sizeof(*out));
    char *encoded = url_encode(activity_id);
    char *url = encoded != NULL ? api_url(c, "/activities/%s", encoded) : NULL;
    free(encoded);
    if (url == NULL)
        return no_memory(err);
    struct response resp;
    int rc = api_get(c, url, &resp, err);
    free(url);
    if (rc != 0)
        return -1;
    rc = ccapi_parse_activity(resp.body, out, err);
    if (rc != 0)
        parsed_badly(err, last_status(c));
    free(resp.body);
    return rc;
}

int ccapi_activities_page(struct ccapi *c, const char *next_href, struct ccapi_activity_page *out,
                          struct ccapi_error *err)
{
    memset(out, 0, sizeof(*out));
    char *url = next_href != NULL ? next_url(c, next_href, err)
                                  : api_url(c, "/activities?limit=%d", CCAPI_PAGE_LIMIT);
    if (url == NULL)
        return next_href != NULL ? -1 : no_memory(err);
    struct response resp;
    int rc = api_get(c, url, &resp, err);
    free(url);
    if (rc != 0)
        return -1;
    rc = ccapi_parse_activity_page(resp.body, out, err);
    if (rc != 0)
        parsed_badly(err, last_status(c));
    free(resp.body);
    return rc;
}

static int contacts_get(struct ccapi *c, char *url, struct ccapi_contact_page *out,
                        struct ccapi_error *err)
{
    struct response resp;
    int rc = api_get(c, url, &resp, err);
    free(url);
    if (rc != 0)
        return -1;
    rc = ccapi_parse_contact_page(resp.body, out, err);
    if (rc != 0)
        parsed_badly(err, last_status(c));
    free(resp.body);
    return rc;
}

/* "a,b,c" of the percent-encoded ids; malloc'd or NULL. */
static char *ids_csv(const char *const *ids, size_t n)
{
    size_t cap = 1;
    for (size_t i = 0; i < n; i++)
        cap += strlen(ids[i]) * 3 + 1;
    char *csv = malloc(cap);
    if (csv == NULL)
        return NULL;
    csv[0] = '\0';
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        char *id = url_encode(ids[i]);
        if (id == NULL) {
            free(csv);
            return NULL;
        }
        len += (size_t)snprintf(csv + len, cap - len, "%s%s", i > 0 ? "," : "", id);
        free(id);
    }
    return csv;
}

int ccapi_contacts_page(struct ccapi *c, const char *const *list_ids, size_t n_lists,
                        const char *updated_after, const char *next_href,
                        struct ccapi_contact_page *out, struct ccapi_error *err)
{
    memset(out, 0, sizeof(*out));
    if (next_href != NULL) {
        char *url = next_url(c, next_href, err);
        return url != NULL ? contacts_get(c, url, out, err) : -1;
    }
    if (n_lists == 0 || n_lists > CCAPI_CONTACTS_MAX_LISTS)
        return refuse(err, "bad_request", "contacts page needs 1-25 lists");
    char *csv = ids_csv(list_ids, n_lists);
    char *since = updated_after != NULL ? url_encode(updated_after) : NULL;
    char *url = NULL;
    if (csv != NULL && (updated_after == NULL || since != NULL))
        url = api_url(c, "/contacts?lists=%s&status=all&include=list_memberships&limit=%d%s%s", csv,
                      CCAPI_PAGE_LIMIT, since != NULL ? "&updated_after=" : "",
                      since != NULL ? since : "");
    free(csv);
    free(since);
    if (url == NULL)
        return no_memory(err);
    return contacts_get(c, url, out, err);
}

int ccapi_contacts_find_by_email(struct ccapi *c, const char *email, struct ccapi_contact_page *out,
                                 struct ccapi_error *err)
{
    memset(out, 0, sizeof(*out));
    char *encoded = url_encode(email);
    char *url = encoded != NULL
                    ? api_url(c, "/contacts?email=%s&status=all&include=list_memberships", encoded)
                    : NULL;
    free(encoded);
    if (url == NULL)
        return no_memory(err);
    return contacts_get(c, url, out, err);
}

int ccapi_token_refresh(struct ccapi *c, const char *token_url, const char *client_id,
                        const char *client_secret, const char *refresh_token,
                        struct ccapi_token *out, struct ccapi_error *err)
{
    memset(out, 0, sizeof(*out));
    if (token_url == NULL || refresh_token == NULL || refresh_token[0] == '\0' ||
        client_id == NULL || client_id[0] == '\0')
        return refuse(err, "bad_request", "token refresh needs a URL, client_id and refresh token");
    bool confidential = client_secret != NULL && client_secret[0] != '\0';
    char *body = ccapi_refresh_body(refresh_token, client_id, !confidential);
    if (body == NULL)
        return no_memory(err);
    struct request req = {.method = "POST",
                          .url = token_url,
                          .content_type = "application/x-www-form-urlencoded",
                          .body = body,
                          .body_len = strlen(body),
                          .user = confidential ? client_id : NULL,
                          .password = confidential ? client_secret : NULL};
    struct response resp;
    int rc = perform(c, &req, true, &resp, err);
    free_secret(body);
    if (rc != 0) {
        error_redact(err, refresh_token);
        error_redact(err, client_secret);
        return -1;
    }
    rc = ccapi_parse_token(resp.body, out, err);
    if (rc != 0)
        parsed_badly(err, last_status(c));
    free_secret(resp.body);
    return rc;
}

/* ------------------------------------------------------------------ */
/* custom fields and tags (§12)                                        */
/* ------------------------------------------------------------------ */

static void custom_field_read(struct json_object *o, struct ccapi_custom_field *f)
{
    memset(f, 0, sizeof *f);
    copy_trunc(f->id, sizeof f->id, json_get_string(o, "custom_field_id"));
    copy_trunc(f->name, sizeof f->name, json_get_string(o, "name"));
    copy_trunc(f->label, sizeof f->label, json_get_string(o, "label"));
    copy_trunc(f->type, sizeof f->type, json_get_string(o, "type"));
}

/* Sends a request and parses its 2xx JSON object answer into *root (caller puts). */
static int object_request(struct ccapi *c, const char *method, char *url, const char *json,
                          const char *what, struct json_object **root, struct ccapi_error *err)
{
    struct response resp;
    *root = NULL;
    int rc = json != NULL || strcmp(method, "GET") != 0 ? api_send(c, method, url, json, &resp, err)
                                                        : api_get(c, url, &resp, err);
    free(url);
    if (rc != 0)
        return -1;
    *root = parse_object(resp.body, what, err);
    if (*root == NULL)
        parsed_badly(err, last_status(c));
    free(resp.body);
    return *root != NULL ? 0 : -1;
}

static char *json_body_of(struct json_object *o)
{
    char *s = strdup(
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
    return s;
}

int ccapi_custom_fields_get(struct ccapi *c, struct ccapi_custom_fields *out,
                            struct ccapi_error *err)
{
    out->n = 0;
    char *url = api_url(c, "/contact_custom_fields?limit=%d", CCAPI_CUSTOM_FIELDS_MAX);
    if (url == NULL)
        return no_memory(err);
    struct json_object *root;
    if (object_request(c, "GET", url, NULL, "custom fields", &root, err) != 0)
        return -1;
    bool ok;
    struct json_object *arr = page_items(root, "custom_fields", &ok);
    for (size_t i = 0; arr && i < json_object_array_length(arr) && out->n < CCAPI_CUSTOM_FIELDS_MAX;
         i++) {
        struct json_object *o = json_object_array_get_idx(arr, i);
        if (json_object_is_type(o, json_type_object))
            custom_field_read(o, &out->items[out->n++]);
    }
    json_object_put(root);
    return 0;
}

int ccapi_custom_field_create(struct ccapi *c, const char *label, const char *type,
                              struct ccapi_custom_field *out, struct ccapi_error *err)
{
    memset(out, 0, sizeof *out);
    struct json_object *b = json_object_new_object();
    add_string(b, "label", label);
    add_string(b, "type", type);
    char *body = json_body_of(b);
    char *url = api_url(c, "/contact_custom_fields");
    if (body == NULL || url == NULL) {
        free(body);
        free(url);
        return no_memory(err);
    }
    struct json_object *root;
    int rc = object_request(c, "POST", url, body, "custom field", &root, err);
    free(body);
    if (rc == 0) {
        custom_field_read(root, out);
        json_object_put(root);
    }
    return rc;
}

static void tag_read(struct json_object *o, struct ccapi_tag *t)
{
    memset(t, 0, sizeof *t);
    copy_trunc(t->id, sizeof t->id, json_get_string(o, "tag_id"));
    copy_trunc(t->name, sizeof t->name, json_get_string(o, "name"));
    copy_trunc(t->source, sizeof t->source, json_get_string(o, "tag_source"));
}

int ccapi_tag_create(struct ccapi *c, const char *name, const char *source, struct ccapi_tag *out,
                     struct ccapi_error *err)
{
    struct json_object *b = json_object_new_object();
    add_string(b, "name", name);
    if (source != NULL)
        add_string(b, "tag_source", source);
    char *body = json_body_of(b);
    char *url = api_url(c, "/contact_tags");
    if (body == NULL || url == NULL) {
        free(body);
        free(url);
        return no_memory(err);
    }
    struct json_object *root;
    int rc = object_request(c, "POST", url, body, "tag", &root, err);
    free(body);
    if (rc == 0) {
        tag_read(root, out);
        json_object_put(root);
    }
    return rc;
}

int ccapi_tag_find(struct ccapi *c, const char *name, struct ccapi_tag *out, bool *found,
                   struct ccapi_error *err)
{
    *found = false;
    char *url = api_url(c, "/contact_tags?limit=500");
    while (url != NULL) {
        struct json_object *root;
        if (object_request(c, "GET", url, NULL, "tags", &root, err) != 0)
            return -1;
        bool ok;
        struct json_object *arr = page_items(root, "tags", &ok);
        for (size_t i = 0; arr && i < json_object_array_length(arr) && !*found; i++) {
            struct json_object *o = json_object_array_get_idx(arr, i);
            const char *n = json_get_string(o, "name");
            if (n != NULL && strcasecmp(n, name) == 0) {
                tag_read(o, out);
                *found = true;
            }
        }
        struct json_object *links = json_get(root, "_links", json_type_object);
        const char *href = json_get_string(json_get(links, "next", json_type_object), "href");
        url = !*found && href != NULL ? ccapi_join_url(c->base_url, href) : NULL;
        json_object_put(root);
    }
    return 0;
}

int ccapi_tag_rename(struct ccapi *c, const char *tag_id, const char *name, struct ccapi_error *err)
{
    struct json_object *b = json_object_new_object();
    add_string(b, "name", name);
    char *body = json_body_of(b);
    char *encoded = url_encode(tag_id);
    char *url = encoded != NULL ? api_url(c, "/contact_tags/%s", encoded) : NULL;
    free(encoded);
    if (body == NULL || url == NULL) {
        free(body);
        free(url);
        return no_memory(err);
    }
    struct json_object *root;
    int rc = object_request(c, "PUT", url, body, "tag", &root, err);
    free(body);
    json_object_put(root);
    return rc;
}

int ccapi_taggings(struct ccapi *c, bool add, const char *const *tag_ids, size_t n_tags,
                   const char *const *contact_ids, size_t n_contacts,
                   char activity_id[CCAPI_ID_SIZE], struct ccapi_error *err)
{
    activity_id[0] = '\0';
    if (n_contacts == 0 || n_contacts > CCAPI_MEMBERSHIPS_MAX_CONTACTS || n_tags == 0 ||
        n_tags > CCAPI_MAX_LIST_IDS)
        return refuse(err, "bad_request", "a tagging needs 1-500 contacts, 1-50 tags");
    struct json_object *b = json_object_new_object(), *source = json_object_new_object();
    json_object_object_add(source, "contact_ids", string_array_new(contact_ids, n_contacts));
    json_object_object_add(b, "source", source);
    json_object_object_add(b, "tag_ids", string_array_new(tag_ids, n_tags));
    char *body = json_body_of(b);
    char *url = api_url(c, add ? "/activities/contacts_taggings_add"
                               : "/activities/contacts_taggings_remove");
    int rc = body != NULL && url != NULL ? activity_request(c, "POST", url, body, activity_id, err)
                                         : no_memory(err);
    free(body);
    free(url);
    return rc;
}
