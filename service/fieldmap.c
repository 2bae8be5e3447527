/*
 * fieldmap.c - an association's field mapping and group tags (fieldmap.h): the PUT's
 * rules, the JSON kept under key_field_map, the admin's view.
 *
 * Standard targets are the columns contacts_json_import accepts (the document's
 * import_data properties), so a mapping can never make CC refuse an import for an
 * unknown column; "phone_number" is accepted as the contact resource's name for
 * "phone". Custom targets ("custom:NAME") become CC custom fields named NAME with
 * blanks as underscores, created by the engine when missing.
 */
#include "ccsync/fieldmap.h"

#include <hiredis/hiredis.h>
#include <json-c/json.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccsync/keys.h"
#include "ccsync/script.h"
#include "ccsync/store.h"

static const struct {
    const char *cc;
    const char *column;
    size_t max_chars;
    enum fieldmap_value value;
} STANDARD[] = {
    {"phone_number", "phone", 50, FIELD_TEXT},
    {"phone", "phone", 50, FIELD_TEXT},
    {"home_phone", "home_phone", 50, FIELD_TEXT},
    {"work_phone", "work_phone", 50, FIELD_TEXT},
    {"mobile_phone", "mobile_phone", 50, FIELD_TEXT},
    {"other_phone", "other_phone", 50, FIELD_TEXT},
    {"job_title", "job_title", 50, FIELD_TEXT},
    {"company_name", "company_name", 50, FIELD_TEXT},
    {"street", "street", 255, FIELD_TEXT},
    {"street2", "street2", 255, FIELD_TEXT},
    {"city", "city", 50, FIELD_TEXT},
    {"state", "state", 50, FIELD_TEXT},
    {"zip", "zip", 50, FIELD_TEXT},
    {"country", "country", 50, FIELD_TEXT},
    {"home_street", "home_street", 255, FIELD_TEXT},
    {"home_street2", "home_street2", 255, FIELD_TEXT},
    {"home_city", "home_city", 50, FIELD_TEXT},
    {"home_state", "home_state", 50, FIELD_TEXT},
    {"home_zip", "home_zip", 50, FIELD_TEXT},
    {"work_street", "work_street", 255, FIELD_TEXT},
    {"work_street2", "work_street2", 255, FIELD_TEXT},
    {"work_city", "work_city", 50, FIELD_TEXT},
    {"work_state", "work_state", 50, FIELD_TEXT},
    {"work_zip", "work_zip", 50, FIELD_TEXT},
    {"work_country", "work_country", 50, FIELD_TEXT},
    {"other_street", "other_street", 255, FIELD_TEXT},
    {"other_street2", "other_street2", 255, FIELD_TEXT},
    {"other_city", "other_city", 50, FIELD_TEXT},
    {"other_state", "other_state", 50, FIELD_TEXT},
    {"other_zip", "other_zip", 50, FIELD_TEXT},
    {"other_country", "other_country", 50, FIELD_TEXT},
    {"birthday_month", "birthday_month", 2, FIELD_INTEGER},
    {"birthday_day", "birthday_day", 2, FIELD_INTEGER},
    {"anniversary", "anniversary", 10, FIELD_DATE},
};
#define N_STANDARD (sizeof STANDARD / sizeof STANDARD[0])

/* CC custom field values are at most 255 characters (import cf: columns). */
#define CUSTOM_VALUE_MAX 255

bool fieldmap_entry_ready(const struct fieldmap_entry *e)
{
    return e->error[0] == '\0' && e->column[0] != '\0';
}

void fieldmap_custom_name(const char *label, char *out, size_t size)
{
    snprintf(out, size, "%s", label);
    for (char *p = out; *p; p++)
        if (*p == ' ')
            *p = '_';
}

void fieldmap_set_custom(struct fieldmap_entry *e, const char *cf_id, const char *cf_name,
                         const char *cf_type)
{
    snprintf(e->cf_id, sizeof e->cf_id, "%s", cf_id);
    snprintf(e->column, sizeof e->column, "cf:%s", cf_name);
    snprintf(e->cf_type, sizeof e->cf_type, "%s", cf_type);
    e->error[0] = '\0';
}

/* Fills e's target from its cc text; -1 when cc is not a target ccsync can map. */
static int entry_target(struct fieldmap_entry *e)
{
    if (strncmp(e->cc, "custom:", 7) == 0) {
        const char *label = e->cc + 7;
        size_t n = strlen(label);
        if (n == 0 || n > FIELDMAP_CUSTOM_NAME_MAX)
            return -1;
        for (const unsigned char *p = (const unsigned char *)label; *p; p++)
            if (*p < 0x20 || *p == 0x7f)
                return -1;
        e->custom = true;
        e->max_chars = CUSTOM_VALUE_MAX;
        e->value = FIELD_TEXT;
        e->column[0] = '\0'; /* known once CC has the field */
        return 0;
    }
    for (size_t i = 0; i < N_STANDARD; i++) {
        if (strcmp(STANDARD[i].cc, e->cc) == 0) {
            snprintf(e->column, sizeof e->column, "%s", STANDARD[i].column);
            e->max_chars = STANDARD[i].max_chars;
            e->value = STANDARD[i].value;
            return 0;
        }
    }
    return -1;
}

static uint64_t fnv1a(uint64_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static void compute_version(struct fieldmap *m)
{
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < m->n; i++) {
        h = fnv1a(h, m->e[i].novi, strlen(m->e[i].novi) + 1);
        h = fnv1a(h, m->e[i].cc, strlen(m->e[i].cc) + 1);
    }
    snprintf(m->version, sizeof m->version, "%016llx", (unsigned long long)h);
}

/* A string member of obj at most max bytes, at least 1; NULL otherwise. */
static const char *string_of(struct json_object *obj, const char *key, size_t max)
{
    struct json_object *v;
    if (!json_object_object_get_ex(obj, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    const char *s = json_object_get_string(v);
    size_t n = strlen(s);
    return n >= 1 && n <= max && n == (size_t)json_object_get_string_len(v) ? s : NULL;
}

/* One entry of the PUT's fields; old is the stored map (its custom field ids carry over). */
static int parse_entry(struct json_object *item, size_t i, const struct fieldmap *old,
                       struct fieldmap_entry *e, char *err, size_t err_size)
{
    memset(e, 0, sizeof *e);
    if (!json_object_is_type(item, json_type_object) || json_object_object_length(item) != 2) {
        snprintf(err, err_size, "fields[%zu] must be an object {\"novi\",\"cc\"}", i);
        return -1;
    }
    const char *novi = string_of(item, "novi", FIELDMAP_NOVI_MAX);
    const char *cc = string_of(item, "cc", sizeof e->cc - 1);
    if (novi == NULL) {
        snprintf(err, err_size, "fields[%zu].novi must be a Novi field name of 1-%d bytes", i,
                 FIELDMAP_NOVI_MAX);
        return -1;
    }
    snprintf(e->novi, sizeof e->novi, "%s", novi);
    snprintf(e->cc, sizeof e->cc, "%s", cc ? cc : "");
    if (cc == NULL || entry_target(e) != 0) {
        snprintf(err, err_size,
                 "fields[%zu].cc must be a contact field contacts_json_import accepts "
                 "(phone_number, job_title, company_name, an address field, birthday_month, "
                 "birthday_day, anniversary) or custom:NAME (NAME 1-%d characters)",
                 i, FIELDMAP_CUSTOM_NAME_MAX);
        return -1;
    }
    for (size_t k = 0; old && e->custom && k < old->n; k++) {
        if (strcmp(old->e[k].cc, e->cc) == 0 && old->e[k].cf_id[0]) {
            memcpy(e->cf_id, old->e[k].cf_id, sizeof e->cf_id);
            memcpy(e->cf_type, old->e[k].cf_type, sizeof e->cf_type);
            memcpy(e->column, old->e[k].column, sizeof e->column);
        }
    }
    return 0;
}

static int parse_fields(struct fieldmap *m, struct json_object *fields, char *err, size_t err_size)
{
    if (!json_object_is_type(fields, json_type_array)) {
        snprintf(err, err_size, "fields must be an array");
        return -1;
    }
    size_t n = json_object_array_length(fields);
    if (n > FIELDMAP_MAX) {
        snprintf(err, err_size, "fields may have at most %d entries", FIELDMAP_MAX);
        return -1;
    }
    struct fieldmap_entry *e = calloc(FIELDMAP_MAX, sizeof *e);
    if (e == NULL) {
        snprintf(err, err_size, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (parse_entry(json_object_array_get_idx(fields, i), i, m, &e[i], err, err_size) != 0) {
            free(e);
            return -1;
        }
        for (size_t k = 0; k < i; k++) {
            if (strcmp(e[k].cc, e[i].cc) == 0 ||
                (e[k].column[0] && strcmp(e[k].column, e[i].column) == 0)) {
                snprintf(err, err_size,
                         "fields[%zu].cc maps to the same contact field as fields[%zu]", i, k);
                free(e);
                return -1;
            }
        }
    }
    memcpy(m->e, e, FIELDMAP_MAX * sizeof *e);
    m->n = n;
    free(e);
    return 0;
}

static int parse_tags(struct fieldmap *m, struct json_object *tags, char *err, size_t err_size)
{
    struct json_object *on, *prefix;
    if (!json_object_is_type(tags, json_type_object) ||
        !json_object_object_get_ex(tags, "group_tags", &on) ||
        !json_object_is_type(on, json_type_boolean)) {
        snprintf(err, err_size, "tags must be an object {\"group_tags\":true|false,\"prefix\"}");
        return -1;
    }
    json_object_object_foreach(tags, key, val)
    {
        (void)val;
        if (strcmp(key, "group_tags") != 0 && strcmp(key, "prefix") != 0) {
            snprintf(err, err_size, "unknown field \"tags.%s\" (expected group_tags, prefix)", key);
            return -1;
        }
    }
    const char *p = FIELDMAP_DEFAULT_PREFIX;
    if (json_object_object_get_ex(tags, "prefix", &prefix) && prefix != NULL) {
        p = json_object_is_type(prefix, json_type_string) ? json_object_get_string(prefix) : NULL;
        if (p == NULL || strlen(p) > FIELDMAP_TAG_PREFIX_MAX) {
            snprintf(err, err_size, "tags.prefix must be a string of at most %d bytes",
                     FIELDMAP_TAG_PREFIX_MAX);
            return -1;
        }
    }
    m->group_tags = json_object_get_boolean(on);
    snprintf(m->tag_prefix, sizeof m->tag_prefix, "%s", p);
    return 0;
}

int fieldmap_apply_put(struct fieldmap *m, struct json_object *fields, struct json_object *tags,
                       char *err, size_t err_size)
{
    if (fields != NULL && parse_fields(m, fields, err, err_size) != 0)
        return -1;
    if (tags != NULL && parse_tags(m, tags, err, err_size) != 0)
        return -1;
    compute_version(m);
    return 0;
}

/* ---- stored JSON ---- */

static void add_str(struct json_object *o, const char *k, const char *v)
{
    json_object_object_add(o, k, json_object_new_string(v));
}

char *fieldmap_to_json(const struct fieldmap *m)
{
    struct json_object *o = json_object_new_object(), *arr = json_object_new_array();
    for (size_t i = 0; i < m->n; i++) {
        const struct fieldmap_entry *e = &m->e[i];
        struct json_object *x = json_object_new_object();
        add_str(x, "novi", e->novi);
        add_str(x, "cc", e->cc);
        add_str(x, "column", e->column);
        add_str(x, "cf_id", e->cf_id);
        add_str(x, "cf_type", e->cf_type);
        add_str(x, "error", e->error);
        json_object_array_add(arr, x);
    }
    json_object_object_add(o, "fields", arr);
    json_object_object_add(o, "group_tags", json_object_new_boolean(m->group_tags));
    add_str(o, "prefix", m->tag_prefix);
    char *s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
    return s;
}

static void copy_str(struct json_object *o, const char *k, char *out, size_t size)
{
    struct json_object *v;
    out[0] = '\0';
    if (json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string))
        snprintf(out, size, "%s", json_object_get_string(v));
}

int fieldmap_from_json(const char *json, struct fieldmap *m)
{
    memset(m, 0, sizeof *m);
    struct json_object *o = json_tokener_parse(json), *arr, *v;
    if (o == NULL || !json_object_object_get_ex(o, "fields", &arr) ||
        !json_object_is_type(arr, json_type_array)) {
        json_object_put(o);
        return -1;
    }
    for (size_t i = 0; i < json_object_array_length(arr) && m->n < FIELDMAP_MAX; i++) {
        struct json_object *x = json_object_array_get_idx(arr, i);
        struct fieldmap_entry *e = &m->e[m->n];
        copy_str(x, "novi", e->novi, sizeof e->novi);
        copy_str(x, "cc", e->cc, sizeof e->cc);
        if (entry_target(e) != 0)
            continue;
        copy_str(x, "column", e->column, sizeof e->column);
        copy_str(x, "cf_id", e->cf_id, sizeof e->cf_id);
        copy_str(x, "cf_type", e->cf_type, sizeof e->cf_type);
        copy_str(x, "error", e->error, sizeof e->error);
        m->n++;
    }
    m->group_tags = json_object_object_get_ex(o, "group_tags", &v) && json_object_get_boolean(v);
    copy_str(o, "prefix", m->tag_prefix, sizeof m->tag_prefix);
    json_object_put(o);
    compute_version(m);
    return 0;
}

void fieldmap_add_view(const struct fieldmap *m, struct json_object *view)
{
    struct json_object *arr = json_object_new_array(), *errors = json_object_new_array();
    for (size_t i = 0; i < m->n; i++) {
        const struct fieldmap_entry *e = &m->e[i];
        struct json_object *x = json_object_new_object();
        add_str(x, "novi", e->novi);
        add_str(x, "cc", e->cc);
        if (e->custom)
            json_object_object_add(x, "custom_field_id",
                                   e->cf_id[0] ? json_object_new_string(e->cf_id) : NULL);
        add_str(x, "state",
                e->error[0]               ? "refused"
                : fieldmap_entry_ready(e) ? "ready"
                                          : "pending");
        json_object_array_add(arr, x);
        if (e->error[0]) {
            struct json_object *r = json_object_new_object();
            add_str(r, "novi", e->novi);
            add_str(r, "cc", e->cc);
            add_str(r, "message", e->error);
            json_object_array_add(errors, r);
        }
    }
    json_object_object_add(view, "fields", arr);
    if (json_object_array_length(errors) == 0) {
        json_object_put(errors);
        errors = NULL;
    }
    json_object_object_add(view, "fields_error", errors);
    struct json_object *tags = json_object_new_object();
    json_object_object_add(tags, "group_tags", json_object_new_boolean(m->group_tags));
    add_str(tags, "prefix",
            m->tag_prefix[0] || m->group_tags ? m->tag_prefix : FIELDMAP_DEFAULT_PREFIX);
    json_object_object_add(view, "tags", tags);
}

/* ---- Redis ---- */

/* The SHA-1 (hex) of a stored mapping, as Redis's redis.sha1hex gives it. */
static void stored_digest(const char *json, size_t len, char out[41])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    out[0] = '\0';
    if (EVP_Digest(json, len, md, &n, EVP_sha1(), NULL) != 1 || n != 20)
        return;
    for (unsigned int i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

int fieldmap_load(redisContext *c, const char *association, struct fieldmap *m)
{
    memset(m, 0, sizeof *m);
    snprintf(m->tag_prefix, sizeof m->tag_prefix, "%s", FIELDMAP_DEFAULT_PREFIX);
    compute_version(m);
    redisReply *r = store_command(c, "GET %s", key_field_map(association).s);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        freeReplyObject(r);
        return -1;
    }
    int found = r->type == REDIS_REPLY_STRING && fieldmap_from_json(r->str, m) == 0;
    if (r->type == REDIS_REPLY_STRING)
        stored_digest(r->str, r->len, m->stored);
    freeReplyObject(r);
    return found;
}

int fieldmap_save(redisContext *c, const char *association, const struct fieldmap *m)
{
    char *json = fieldmap_to_json(m);
    if (json == NULL)
        return STORE_ERR;
    int rc = store_exec(c, "SET %s %s", key_field_map(association).s, json);
    free(json);
    return rc;
}

/* KEYS[1] the mapping. ARGV[1] the digest of the mapping the writer loaded ("":
 * none was stored), ARGV[2] the new one. 1 saved, 0 changed meanwhile. */
static const char save_if_script[] = "local cur = redis.call('GET', KEYS[1])\n"
                                     "local d = cur and redis.sha1hex(cur) or ''\n"
                                     "if d ~= ARGV[1] then return 0 end\n"
                                     "redis.call('SET', KEYS[1], ARGV[2])\n"
                                     "return 1\n";

int fieldmap_save_if_unchanged(redisContext *c, const char *association, const struct fieldmap *m)
{
    char *json = fieldmap_to_json(m);
    if (json == NULL)
        return -1;
    struct key key = key_field_map(association);
    const char *args[] = {key.s, m->stored, json};
    redisReply *r = script_eval(c, save_if_script, 1, 3, args);
    free(json);
    int rc = r && r->type == REDIS_REPLY_INTEGER ? (int)r->integer : -1;
    freeReplyObject(r);
    return rc;
}

/* YYYY-MM-DD or MM/DD/YYYY with plausible month and day. */
bool fieldmap_is_date(const char *v)
{
    int y, mo, d, n = 0;
    if (v == NULL)
        return false;
    if (sscanf(v, "%4d-%2d-%2d%n", &y, &mo, &d, &n) == 3 && n == 10 && v[n] == '\0')
        return mo >= 1 && mo <= 12 && d >= 1 && d <= 31;
    n = 0;
    if (sscanf(v, "%2d/%2d/%4d%n", &mo, &d, &y, &n) == 3 && n == 10 && v[n] == '\0')
        return mo >= 1 && mo <= 12 && d >= 1 && d <= 31;
    return false;
}
