/*
 * fieldmap.h - an association's field mapping and group tags (§12 of the contract):
 * which Novi member fields go to which Constant Contact contact fields, the custom
 * fields ccsync made in CC for them, and whether synced groups tag their members.
 *
 * Parsing, the JSON kept in Redis and the view an admin reads are pure; load and
 * save talk to Redis (key_field_map). The engine resolves custom fields in CC
 * (round.c) and the planner sends the values (plan.c, struct plan_fields).
 */
#ifndef CCSYNC_FIELDMAP_H
#define CCSYNC_FIELDMAP_H

#include <stdbool.h>
#include <stddef.h>

struct json_object;
struct redisContext;

#define FIELDMAP_MAX 17             /* entries, as Novi's own sync allows */
#define FIELDMAP_NOVI_MAX 141       /* "CustomFields." + a 128-byte name */
#define FIELDMAP_CUSTOM_NAME_MAX 50 /* CC's label maxLength */
#define FIELDMAP_TAG_PREFIX_MAX 100
#define FIELDMAP_DEFAULT_PREFIX "Novi: "

enum fieldmap_value { FIELD_TEXT = 0, FIELD_INTEGER, FIELD_DATE };

struct fieldmap_entry {
    char novi[FIELDMAP_NOVI_MAX + 1]; /* "MemberType", "CustomFields.Chapter" */
    char cc[FIELDMAP_CUSTOM_NAME_MAX +
            16]; /* as the admin wrote it: "phone_number", "custom:Chapter" */
    bool custom;
    char column[FIELDMAP_CUSTOM_NAME_MAX +
                8];            /* import column: "phone", "cf:Chapter" ("" until resolved) */
    size_t max_chars;          /* CC's maxLength of the column */
    enum fieldmap_value value; /* how the column takes a value */
    char cf_id[40];            /* custom: CC's custom_field_id once known */
    char cf_type[16];          /* custom: "string" or "date" */
    char error[240];           /* CC refused the mapping: why ("" = fine) */
};

struct fieldmap {
    size_t n;
    struct fieldmap_entry e[FIELDMAP_MAX];
    bool group_tags;
    char tag_prefix[FIELDMAP_TAG_PREFIX_MAX + 1];
    char version[17]; /* hex digest of the (novi, cc) pairs: changes with the mapping */
    char stored[41];  /* SHA-1 of the stored JSON it was loaded from ("": none) */
};

/* A custom entry CC has: its id, its name in CC (the import column is "cf:" + name). */
void fieldmap_set_custom(struct fieldmap_entry *e, const char *cf_id, const char *cf_name,
                         const char *cf_type);

/* Whether entry i is sent: a standard field, or a custom field CC has (and no error). */
bool fieldmap_entry_ready(const struct fieldmap_entry *e);

/*
 * The "fields" array and "tags" object of an association's PUT (either NULL when
 * absent), applied over m (what is stored, or an empty map): "fields" replaces
 * the entries (custom fields already made in CC keep their ids; refusals are
 * forgotten, so a PUT retries them), "tags" replaces the tag settings. Returns 0,
 * or -1 with err naming the field ("fields[2].cc must be ...").
 */
int fieldmap_apply_put(struct fieldmap *m, struct json_object *fields, struct json_object *tags,
                       char *err, size_t err_size);

/* The stored JSON (malloc'd) and back (-1: not a field map). */
char *fieldmap_to_json(const struct fieldmap *m);
int fieldmap_from_json(const char *json, struct fieldmap *m);

/* Adds "fields", "fields_error" (null, or the refused mappings) and "tags" to an
 * association's view. */
void fieldmap_add_view(const struct fieldmap *m, struct json_object *view);

/* Redis: 1 loaded, 0 none stored (m empty, tags off), -1 Redis error. */
int fieldmap_load(struct redisContext *c, const char *association, struct fieldmap *m);
int fieldmap_save(struct redisContext *c, const char *association, const struct fieldmap *m);
/* Saves m only while the stored mapping is still the one m was loaded from
 * (m->stored), compared and set in one script: what a sync learned under one
 * mapping never overwrites a mapping an admin PUT meanwhile (its fields or its
 * tags). 1 saved, 0 not (the stored mapping changed), -1 Redis error. */
int fieldmap_save_if_unchanged(struct redisContext *c, const char *association,
                               const struct fieldmap *m);

/* Whether a value reads as a date CC's date fields take (YYYY-MM-DD or MM/DD/YYYY). */
bool fieldmap_is_date(const char *value);

/* CC's name of a custom field with label: blanks become underscores. */
void fieldmap_custom_name(const char *label, char *out, size_t size);

#endif
