/* ccsim account state: lists, contacts, activities and tokens in memory, plus the
 * small helpers every endpoint shares (ids, timestamps, error bodies, paging).
 *
 * All of it is guarded by sim.lock, taken once per request in http.c. Activities
 * change the account only when they complete (settle), in the order they were
 * queued, as Constant Contact's background jobs do: a client that reads before the
 * activity has completed sees the old state. */
#include "sim.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

struct sim_state sim;

/* ---- time ---- */

int64_t sim_now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000 + sim.clock_offset_ms;
}

void sim_format_time(int64_t ms, char *out, size_t outlen)
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(out, outlen, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

void sim_format_date(int64_t ms, char *out, size_t outlen)
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(out, outlen, "%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
}

/* RFC 3339 date-time, as the document's format: date-time demands. */
int sim_parse_time(const char *s, int64_t *ms)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    int n = 0;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec, &n) != 6 ||
        n != 19)
        return -1;
    const char *p = s + n;
    long frac = 0;
    if (*p == '.') {
        p++;
        int digits = 0;
        while (isdigit((unsigned char)*p)) {
            if (digits < 3)
                frac = frac * 10 + (*p - '0');
            digits++;
            p++;
        }
        if (digits == 0)
            return -1;
        while (digits < 3) {
            frac *= 10;
            digits++;
        }
    }
    long tz = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int hh, mm, k = 0;
        if (sscanf(p + 1, "%2d:%2d%n", &hh, &mm, &k) != 2 || k != 5)
            return -1;
        tz = (hh * 60L + mm) * 60L * (*p == '+' ? 1 : -1);
        p += 6;
    } else {
        return -1;
    }
    if (*p != '\0' || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 ||
        tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    *ms = ((int64_t)timegm(&tm) - tz) * 1000 + frac;
    return 0;
}

/* ---- ids and tokens ---- */

static uint64_t rng_next(void)
{
    /* xorshift64*: enough for unique ids; seeded from the clock and pid at init. */
    uint64_t x = sim.rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    sim.rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

void sim_uuid(char out[37])
{
    uint8_t b[16];
    for (int i = 0; i < 16; i += 8) {
        uint64_t v = rng_next();
        memcpy(b + i, &v, 8);
    }
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

void sim_random_token(char *out, size_t len)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for (size_t i = 0; i + 1 < len; i++)
        out[i] = alphabet[rng_next() % 64];
    out[len - 1] = '\0';
}

double sim_random_unit(void)
{
    return (double)(rng_next() >> 11) / 9007199254740992.0;
}

bool sim_is_uuid(const char *s)
{
    if (s == NULL || strlen(s) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return false;
        } else if (!isxdigit((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

/* What Constant Contact rejects as an address: not exactly one '@', an empty local
 * part, a domain without a dot or with an empty label, white space or control
 * characters, more than 80 characters. */
bool sim_email_valid(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > 80)
        return false;
    const char *at = strchr(s, '@');
    if (at == NULL || at == s || strchr(at + 1, '@') != NULL)
        return false;
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= 0x20 || c == 0x7f || c == ',' || c == ';' || c == '<' || c == '>' || c == '(' ||
            c == ')' || c == '[' || c == ']' || c == '\\' || c == '"')
            return false;
    }
    const char *domain = at + 1;
    if (strchr(domain, '.') == NULL || domain[0] == '.' || s[len - 1] == '.' ||
        strstr(domain, "..") != NULL || at[-1] == '.' || s[0] == '.')
        return false;
    const char *tld = strrchr(domain, '.') + 1;
    return strlen(tld) >= 2;
}

char *sim_strdup_lower(const char *s)
{
    char *d = strdup(s);
    for (char *p = d; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return d;
}

void sim_set_str(char **field, const char *value)
{
    free(*field);
    *field = (value != NULL) ? strdup(value) : NULL;
}

/* ---- strmap ---- */

static const char TOMBSTONE[] = "";

static uint64_t str_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static void strmap_grow(struct strmap *m)
{
    struct strmap old = *m;
    m->cap = old.cap ? old.cap * 2 : 64;
    m->keys = calloc(m->cap, sizeof *m->keys);
    m->vals = calloc(m->cap, sizeof *m->vals);
    m->used = 0;
    for (size_t i = 0; i < old.cap; i++)
        if (old.keys[i] != NULL && old.keys[i] != TOMBSTONE)
            strmap_put(m, old.keys[i], old.vals[i]);
    free(old.keys);
    free(old.vals);
}

void strmap_put(struct strmap *m, const char *key, void *val)
{
    if ((m->used + 1) * 2 > m->cap)
        strmap_grow(m);
    size_t i = str_hash(key) & (m->cap - 1);
    size_t tomb = SIZE_MAX;
    while (m->keys[i] != NULL) {
        if (m->keys[i] == TOMBSTONE) {
            if (tomb == SIZE_MAX)
                tomb = i;
        } else if (strcmp(m->keys[i], key) == 0) {
            m->keys[i] = key;
            m->vals[i] = val;
            return;
        }
        i = (i + 1) & (m->cap - 1);
    }
    if (tomb != SIZE_MAX) {
        i = tomb;
    } else {
        m->used++;
    }
    m->keys[i] = key;
    m->vals[i] = val;
}

void *strmap_get(const struct strmap *m, const char *key)
{
    if (m->cap == 0)
        return NULL;
    size_t i = str_hash(key) & (m->cap - 1);
    while (m->keys[i] != NULL) {
        if (m->keys[i] != TOMBSTONE && strcmp(m->keys[i], key) == 0)
            return m->vals[i];
        i = (i + 1) & (m->cap - 1);
    }
    return NULL;
}

void strmap_del(struct strmap *m, const char *key)
{
    if (m->cap == 0)
        return;
    size_t i = str_hash(key) & (m->cap - 1);
    while (m->keys[i] != NULL) {
        if (m->keys[i] != TOMBSTONE && strcmp(m->keys[i], key) == 0) {
            m->keys[i] = TOMBSTONE;
            m->vals[i] = NULL;
            return;
        }
        i = (i + 1) & (m->cap - 1);
    }
}

void strmap_free(struct strmap *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

/* ---- whole state ---- */

static void grow(void **arr, size_t *cap, size_t n, size_t elem)
{
    if (n < *cap)
        return;
    *cap = *cap ? *cap * 2 : 64;
    *arr = realloc(*arr, *cap * elem);
}

static void state_free_entities(void)
{
    for (size_t i = 0; i < sim.n_lists; i++) {
        free(sim.lists[i]->name);
        free(sim.lists[i]->description);
        free(sim.lists[i]);
    }
    for (size_t i = 0; i < sim.n_contacts; i++) {
        struct sim_contact *c = sim.contacts[i];
        free(c->email);
        free(c->first_name);
        free(c->last_name);
        free(c->job_title);
        free(c->company_name);
        free(c->opt_out_reason);
        sim_contact_extras_free(c);
        free(c);
    }
    sim_fields_free();
    for (size_t i = 0; i < sim.n_activities; i++) {
        json_object_put(sim.activities[i]->input);
        json_object_put(sim.activities[i]->errors);
        free(sim.activities[i]);
    }
    for (size_t i = 0; i < sim.n_tokens; i++) {
        free(sim.tokens[i]->value);
        free(sim.tokens[i]);
    }
    for (size_t i = 0; i < SIM_LOG_CAP; i++) {
        free(sim.log[i].path);
        free(sim.log[i].body);
    }
    for (size_t i = 0; i < sim.n_counters; i++)
        free(sim.counters[i].name);
    free(sim.lists);
    free(sim.contacts);
    free(sim.activities);
    free(sim.tokens);
    free(sim.counters);
    strmap_free(&sim.list_by_id);
    strmap_free(&sim.contact_by_id);
    strmap_free(&sim.contact_by_email);
    strmap_free(&sim.activity_by_id);
    strmap_free(&sim.token_by_value);
}

void sim_state_init(const struct sim_config *cfg)
{
    memset(&sim, 0, sizeof sim);
    pthread_mutex_init(&sim.lock, NULL);
    sim.cfg = *cfg;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    sim.rng = ((uint64_t)tv.tv_sec << 20) ^ (uint64_t)tv.tv_usec ^ 0x9E3779B97F4A7C15ULL;
    FILE *f = fopen("/dev/urandom", "rb");
    if (f != NULL) {
        uint64_t seed;
        if (fread(&seed, sizeof seed, 1, f) == 1 && seed != 0)
            sim.rng = seed;
        fclose(f);
    }
    if (cfg->dev_token[0] != '\0') {
        struct sim_token *t = calloc(1, sizeof *t);
        t->value = strdup(cfg->dev_token);
        grow((void **)&sim.tokens, &sim.cap_tokens, sim.n_tokens, sizeof *sim.tokens);
        sim.tokens[sim.n_tokens++] = t;
        strmap_put(&sim.token_by_value, t->value, t);
    }
}

/* Forget the account, the tokens, the counters, the log, the faults and the delays;
 * keep the configuration (including the dev token) and the simulated clock. */
void sim_state_reset(void)
{
    struct sim_config cfg = sim.cfg;
    int64_t offset = sim.clock_offset_ms;
    uint64_t rng = sim.rng;
    state_free_entities();
    /* everything but the mutex, which the caller holds */
    memset((char *)&sim + offsetof(struct sim_state, cfg), 0,
           sizeof sim - offsetof(struct sim_state, cfg));
    sim.cfg = cfg;
    sim.rng = rng;
    sim.clock_offset_ms = offset;
    if (cfg.dev_token[0] != '\0') {
        struct sim_token *t = calloc(1, sizeof *t);
        t->value = strdup(cfg.dev_token);
        grow((void **)&sim.tokens, &sim.cap_tokens, sim.n_tokens, sizeof *sim.tokens);
        sim.tokens[sim.n_tokens++] = t;
        strmap_put(&sim.token_by_value, t->value, t);
    }
}

/* ---- lists ---- */

struct sim_list *sim_list_find(const char *id)
{
    return strmap_get(&sim.list_by_id, id);
}

struct sim_list *sim_list_find_name(const char *name, const struct sim_list *except)
{
    for (size_t i = 0; i < sim.n_lists; i++) {
        struct sim_list *l = sim.lists[i];
        if (l != except && l->deleted_at == 0 && strcasecmp(l->name, name) == 0)
            return l;
    }
    return NULL;
}

size_t sim_list_active_count(void)
{
    size_t n = 0;
    for (size_t i = 0; i < sim.n_lists; i++)
        if (sim.lists[i]->deleted_at == 0)
            n++;
    return n;
}

struct sim_list *sim_list_create(const char *name, const char *description, bool favorite)
{
    struct sim_list *l = calloc(1, sizeof *l);
    sim_uuid(l->id);
    l->name = strdup(name);
    l->description = description ? strdup(description) : NULL;
    l->favorite = favorite;
    l->created_at = l->updated_at = sim_now_ms();
    grow((void **)&sim.lists, &sim.cap_lists, sim.n_lists, sizeof *sim.lists);
    sim.lists[sim.n_lists++] = l;
    strmap_put(&sim.list_by_id, l->id, l);
    return l;
}

/* A deleted list loses its members; the contacts themselves stay. */
void sim_list_delete_now(struct sim_list *l)
{
    if (l->deleted_at != 0)
        return;
    for (size_t i = 0; i < sim.n_contacts; i++)
        sim_contact_remove_list(sim.contacts[i], l);
    l->deleted_at = l->updated_at = sim_now_ms();
    l->delete_pending = false;
}

/* ---- contacts ---- */

struct sim_contact *sim_contact_find(const char *id)
{
    return strmap_get(&sim.contact_by_id, id);
}

struct sim_contact *sim_contact_find_email(const char *email)
{
    char *lower = sim_strdup_lower(email);
    struct sim_contact *c = strmap_get(&sim.contact_by_email, lower);
    free(lower);
    return c;
}

struct sim_contact *sim_contact_create(const char *email, const char *source)
{
    struct sim_contact *c = calloc(1, sizeof *c);
    sim_uuid(c->id);
    c->email = sim_strdup_lower(email);
    c->created_at = c->updated_at = c->opt_in_date = sim_now_ms();
    snprintf(c->permission, sizeof c->permission, "implicit");
    snprintf(c->opt_in_source, sizeof c->opt_in_source, "%s", source);
    snprintf(c->create_source, sizeof c->create_source, "%s", source);
    snprintf(c->update_source, sizeof c->update_source, "%s", source);
    grow((void **)&sim.contacts, &sim.cap_contacts, sim.n_contacts, sizeof *sim.contacts);
    sim.contacts[sim.n_contacts++] = c;
    strmap_put(&sim.contact_by_id, c->id, c);
    strmap_put(&sim.contact_by_email, c->email, c);
    return c;
}

void sim_contact_set_email(struct sim_contact *c, const char *email)
{
    strmap_del(&sim.contact_by_email, c->email);
    free(c->email);
    c->email = sim_strdup_lower(email);
    strmap_put(&sim.contact_by_email, c->email, c);
}

bool sim_contact_on_list(const struct sim_contact *c, const struct sim_list *l)
{
    for (int i = 0; i < c->n_lists; i++)
        if (c->lists[i] == l)
            return true;
    return false;
}

/* 0 added or already there, -1 the contact is on 50 lists already. */
int sim_contact_add_list(struct sim_contact *c, struct sim_list *l)
{
    if (sim_contact_on_list(c, l))
        return 0;
    if (c->n_lists >= SIM_LISTS_PER_CONTACT)
        return -1;
    c->lists[c->n_lists++] = l;
    l->member_count++;
    c->updated_at = sim_now_ms();
    return 0;
}

void sim_contact_remove_list(struct sim_contact *c, struct sim_list *l)
{
    for (int i = 0; i < c->n_lists; i++) {
        if (c->lists[i] == l) {
            memmove(&c->lists[i], &c->lists[i + 1],
                    (size_t)(c->n_lists - i - 1) * sizeof c->lists[0]);
            c->n_lists--;
            l->member_count--;
            c->updated_at = sim_now_ms();
            return;
        }
    }
}

void sim_contact_remove_all_lists(struct sim_contact *c)
{
    while (c->n_lists > 0)
        sim_contact_remove_list(c, c->lists[0]);
}

void sim_contact_unsubscribe(struct sim_contact *c, const char *source)
{
    sim_contact_remove_all_lists(c);
    snprintf(c->permission, sizeof c->permission, "unsubscribed");
    snprintf(c->opt_out_source, sizeof c->opt_out_source, "%s", source);
    c->opt_out_date = c->updated_at = sim_now_ms();
}

/* ---- tokens ---- */

struct sim_token *sim_token_add(bool refresh, int64_t expires_at)
{
    struct sim_token *t = calloc(1, sizeof *t);
    char buf[64];
    sim_random_token(buf, refresh ? 44 : 64);
    t->value = strdup(buf);
    t->refresh = refresh;
    t->expires_at = expires_at;
    grow((void **)&sim.tokens, &sim.cap_tokens, sim.n_tokens, sizeof *sim.tokens);
    sim.tokens[sim.n_tokens++] = t;
    strmap_put(&sim.token_by_value, t->value, t);
    return t;
}

struct sim_token *sim_token_find(const char *value)
{
    return strmap_get(&sim.token_by_value, value);
}

/* ---- activities ---- */

struct sim_activity *sim_activity_create(enum sim_activity_kind kind, json_object *input,
                                         long items_total)
{
    struct sim_activity *a = calloc(1, sizeof *a);
    sim_uuid(a->id);
    a->kind = kind;
    a->input = input;
    a->items_total = items_total;
    a->created_at = sim_now_ms();
    a->started_at = a->created_at + sim.cfg.activity_ms / 2;
    a->completed_at = a->created_at + sim.cfg.activity_ms;
    grow((void **)&sim.activities, &sim.cap_activities, sim.n_activities, sizeof *sim.activities);
    sim.activities[sim.n_activities++] = a;
    strmap_put(&sim.activity_by_id, a->id, a);
    return a;
}

struct sim_activity *sim_activity_find(const char *id)
{
    return strmap_get(&sim.activity_by_id, id);
}

size_t sim_activities_queued(void)
{
    return sim.n_activities - sim.first_unsettled;
}

const char *sim_activity_state(const struct sim_activity *a)
{
    if (a->settled)
        return "completed";
    int64_t now = sim_now_ms();
    return now < a->started_at ? "initialized" : "processing";
}

static const char *json_str(json_object *obj, const char *key)
{
    json_object *v;
    if (json_object_object_get_ex(obj, key, &v) && json_object_is_type(v, json_type_string))
        return json_object_get_string(v);
    return NULL;
}

/* The row's cf:NAME columns (checked when the import was queued): "" clears a value. */
static void import_custom_fields(struct sim_contact *c, json_object *row)
{
    json_object_object_foreach(row, key, val)
    {
        if (strncmp(key, "cf:", 3) != 0 || !json_object_is_type(val, json_type_string))
            continue;
        struct sim_custom_field *f = sim_field_find_name(key + 3);
        if (f == NULL)
            continue; /* deleted since the import was queued */
        const char *v = json_object_get_string(val);
        sim_contact_set_field(c, f, v[0] ? v : NULL);
    }
}

static void settle_import(struct sim_activity *a)
{
    json_object *rows = json_object_object_get(a->input, "import_data");
    json_object *ids = json_object_object_get(a->input, "list_ids");
    size_t n = json_object_array_length(rows);
    for (size_t i = 0; i < n; i++) {
        json_object *row = json_object_array_get_idx(rows, i);
        const char *raw = json_str(row, "email");
        a->items_completed++;
        if (raw == NULL || raw[0] == '\0') {
            a->error_count++;
            errs_add(a->errors, NULL, "Line %zu: an email address is required", i + 1);
            continue;
        }
        if (!sim_email_valid(raw)) {
            a->error_count++;
            errs_add(a->errors, NULL, "Line %zu: email address %s is not valid", i + 1, raw);
            continue;
        }
        struct sim_contact *c = sim_contact_find_email(raw);
        if (c == NULL) {
            c = sim_contact_create(raw, "Account");
        } else {
            c->deleted_at = 0; /* importing a deleted contact restores it */
            snprintf(c->update_source, sizeof c->update_source, "Account");
            c->updated_at = sim_now_ms();
        }
        import_custom_fields(c, row);
        /* An import updates only the properties it carries. */
        static const char *const fields[] = {"first_name", "last_name", "job_title",
                                             "company_name"};
        char **slots[] = {&c->first_name, &c->last_name, &c->job_title, &c->company_name};
        for (size_t f = 0; f < 4; f++) {
            const char *v = json_str(row, fields[f]);
            if (v != NULL)
                sim_set_str(slots[f], v);
        }
        a->person_count++;
        if (strcmp(c->permission, "unsubscribed") == 0) {
            a->cannot_add++;
            continue;
        }
        bool too_many = false;
        for (size_t k = 0; k < json_object_array_length(ids); k++) {
            struct sim_list *l =
                sim_list_find(json_object_get_string(json_object_array_get_idx(ids, k)));
            if (l == NULL || l->deleted_at != 0)
                continue;
            if (sim_contact_add_list(c, l) != 0)
                too_many = true;
        }
        if (too_many) {
            a->error_count++;
            errs_add(a->errors, NULL, "Line %zu: contact %s is already a member of %d lists", i + 1,
                     c->email, SIM_LISTS_PER_CONTACT);
        }
    }
}

static void settle_membership(struct sim_activity *a, bool add)
{
    json_object *source = json_object_object_get(a->input, "source");
    json_object *cids = json_object_object_get(source, "contact_ids");
    json_object *ids = json_object_object_get(a->input, "list_ids");
    size_t nl = json_object_array_length(ids);
    a->list_count = (long)nl;
    for (size_t i = 0; i < json_object_array_length(cids); i++) {
        const char *cid = json_object_get_string(json_object_array_get_idx(cids, i));
        struct sim_contact *c = sim_contact_find(cid);
        a->items_completed++;
        if (c == NULL || c->deleted_at != 0) {
            a->error_count++;
            errs_add(a->errors, NULL, "contact %s was not found", cid);
            continue;
        }
        if (add && strcmp(c->permission, "unsubscribed") == 0)
            continue; /* unsubscribed contacts are never added to lists */
        for (size_t k = 0; k < nl; k++) {
            struct sim_list *l =
                sim_list_find(json_object_get_string(json_object_array_get_idx(ids, k)));
            if (l == NULL || l->deleted_at != 0)
                continue;
            if (!add) {
                sim_contact_remove_list(c, l);
            } else if (sim_contact_add_list(c, l) != 0) {
                a->error_count++;
                errs_add(a->errors, NULL, "contact %s is already a member of %d lists", cid,
                         SIM_LISTS_PER_CONTACT);
                break;
            }
        }
    }
}

static void settle_list_delete(struct sim_activity *a)
{
    json_object *ids = json_object_object_get(a->input, "list_ids");
    a->list_count = (long)json_object_array_length(ids);
    for (size_t k = 0; k < json_object_array_length(ids); k++) {
        const char *id = json_object_get_string(json_object_array_get_idx(ids, k));
        struct sim_list *l = sim_list_find(id);
        a->items_completed++;
        if (l == NULL || l->deleted_at != 0) {
            a->error_count++;
            errs_add(a->errors, NULL, "list %s was not found", id);
            continue;
        }
        sim_list_delete_now(l);
    }
}

/* Complete, in queue order, every activity whose time has come. */
void sim_activities_settle(void)
{
    int64_t now = sim_now_ms();
    while (sim.first_unsettled < sim.n_activities) {
        struct sim_activity *a = sim.activities[sim.first_unsettled];
        if (a->completed_at > now)
            break;
        a->errors = json_object_new_array();
        switch (a->kind) {
        case ACT_IMPORT:
            settle_import(a);
            break;
        case ACT_ADD:
            settle_membership(a, true);
            break;
        case ACT_REMOVE:
            settle_membership(a, false);
            break;
        case ACT_LIST_DELETE:
            settle_list_delete(a);
            break;
        case ACT_TAGGING_ADD:
            sim_settle_tagging(a, true);
            break;
        case ACT_TAGGING_REMOVE:
            sim_settle_tagging(a, false);
            break;
        case ACT_TAG_DELETE:
            sim_settle_tag_delete(a);
            break;
        }
        a->settled = true;
        sim.first_unsettled++;
    }
}

/* ---- JSON views ---- */

static void add_time(json_object *o, const char *key, int64_t ms)
{
    char buf[40];
    sim_format_time(ms, buf, sizeof buf);
    json_object_object_add(o, key, json_object_new_string(buf));
}

static void add_str(json_object *o, const char *key, const char *v)
{
    if (v != NULL)
        json_object_object_add(o, key, json_object_new_string(v));
}

json_object *sim_activity_json(const struct sim_activity *a)
{
    json_object *o = json_object_new_object();
    const char *state = sim_activity_state(a);
    bool done = a->settled;
    add_str(o, "activity_id", a->id);
    add_str(o, "state", state);
    add_time(o, "created_at", a->created_at);
    int64_t now = sim_now_ms();
    if (strcmp(state, "initialized") != 0)
        add_time(o, "started_at", a->started_at);
    if (done)
        add_time(o, "completed_at", a->completed_at);
    add_time(o, "updated_at",
             done ? a->completed_at : (now < a->started_at ? a->created_at : a->started_at));
    json_object_object_add(o, "percent_done",
                           json_object_new_int(done ? 100 : (now < a->started_at ? 0 : 50)));
    json_object *errs = json_object_new_array();
    if (done)
        for (size_t i = 0; i < json_object_array_length(a->errors); i++)
            json_object_array_add(errs, json_object_get(json_object_array_get_idx(a->errors, i)));
    json_object_object_add(o, "activity_errors", errs);
    json_object *status = json_object_new_object();
    if (a->kind == ACT_LIST_DELETE) {
        json_object_object_add(status, "list_count", json_object_new_int64(a->list_count));
    } else {
        json_object_object_add(status, "items_total_count", json_object_new_int64(a->items_total));
        json_object_object_add(status, "items_completed_count",
                               json_object_new_int64(done ? a->items_completed : 0));
    }
    if (a->kind == ACT_IMPORT) {
        json_object_object_add(status, "person_count",
                               json_object_new_int64(done ? a->person_count : 0));
        json_object_object_add(status, "error_count",
                               json_object_new_int64(done ? a->error_count : 0));
        json_object_object_add(status, "correctable_count", json_object_new_int(0));
        json_object_object_add(status, "cannot_add_to_list_count",
                               json_object_new_int64(done ? a->cannot_add : 0));
    } else if (a->kind == ACT_TAGGING_ADD || a->kind == ACT_TAGGING_REMOVE) {
        json_object_object_add(status, "tags_count",
                               json_object_new_int64((int64_t)json_object_array_length(
                                   json_object_object_get(a->input, "tag_ids"))));
    } else if (a->kind == ACT_ADD || a->kind == ACT_REMOVE) {
        json_object_object_add(status, "list_count",
                               json_object_new_int64(json_object_array_length(
                                   json_object_object_get(a->input, "list_ids"))));
    }
    json_object_object_add(o, "status", status);
    json_object *links = json_object_new_object();
    json_object *self = json_object_new_object();
    char href[96];
    snprintf(href, sizeof href, "/v3/activities/%s", a->id);
    add_str(self, "href", href);
    json_object_object_add(links, "self", self);
    json_object_object_add(o, "_links", links);
    return o;
}

json_object *sim_list_json(const struct sim_list *l, bool with_count)
{
    json_object *o = json_object_new_object();
    add_str(o, "list_id", l->id);
    add_str(o, "name", l->name);
    add_str(o, "description", l->description);
    json_object_object_add(o, "favorite", json_object_new_boolean(l->favorite));
    add_time(o, "created_at", l->created_at);
    add_time(o, "updated_at", l->updated_at);
    if (l->deleted_at != 0)
        add_time(o, "deleted_at", l->deleted_at);
    if (with_count)
        json_object_object_add(o, "membership_count",
                               json_object_new_int64((int64_t)l->member_count));
    return o;
}

json_object *sim_contact_json(const struct sim_contact *c, bool with_lists)
{
    json_object *o = json_object_new_object();
    add_str(o, "contact_id", c->id);
    json_object *e = json_object_new_object();
    add_str(e, "address", c->email);
    add_str(e, "permission_to_send", c->permission);
    add_time(e, "created_at", c->created_at);
    add_time(e, "updated_at", c->updated_at);
    add_str(e, "opt_in_source", c->opt_in_source);
    add_time(e, "opt_in_date", c->opt_in_date);
    if (c->opt_out_source[0] != '\0') {
        add_str(e, "opt_out_source", c->opt_out_source);
        add_time(e, "opt_out_date", c->opt_out_date);
        add_str(e, "opt_out_reason", c->opt_out_reason);
    }
    add_str(e, "confirm_status", "off");
    json_object_object_add(o, "email_address", e);
    add_str(o, "first_name", c->first_name);
    add_str(o, "last_name", c->last_name);
    add_str(o, "job_title", c->job_title);
    add_str(o, "company_name", c->company_name);
    add_str(o, "create_source", c->create_source);
    add_str(o, "update_source", c->update_source);
    add_time(o, "created_at", c->created_at);
    add_time(o, "updated_at", c->updated_at);
    if (c->deleted_at != 0) {
        char d[48];
        sim_format_date(c->deleted_at, d, sizeof d);
        add_str(o, "deleted_at", d);
    }
    if (with_lists) {
        json_object *arr = json_object_new_array();
        for (int i = 0; i < c->n_lists; i++)
            json_object_array_add(arr, json_object_new_string(c->lists[i]->id));
        json_object_object_add(o, "list_memberships", arr);
    }
    return o;
}

/* ---- error bodies ---- */

static json_object *error_item(const char *key, const char *msg)
{
    json_object *o = json_object_new_object();
    if (key != NULL)
        json_object_object_add(o, "error_key", json_object_new_string(key));
    json_object_object_add(o, "error_message", json_object_new_string(msg));
    return o;
}

/* Appends {error_key, error_message} to an array of errors; with key NULL, appends
 * the bare message (activity_errors are strings). */
void errs_add(json_object *errs, const char *key, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (key == NULL)
        json_object_array_add(errs, json_object_new_string(msg));
    else
        json_object_array_add(errs, error_item(key, msg));
}

void resp_error(struct sim_resp *r, int status, const char *key, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_object_put(r->body);
    r->status = status;
    r->body = json_object_new_array();
    json_object_array_add(r->body, error_item(key, msg));
}

void resp_error_object(struct sim_resp *r, int status, const char *key, const char *msg)
{
    json_object_put(r->body);
    r->status = status;
    r->body = error_item(key, msg);
}

void resp_errors(struct sim_resp *r, int status, json_object *errs)
{
    json_object_put(r->body);
    r->status = status;
    r->body = errs;
}

/* ---- request helpers ---- */

const char *req_param(const struct sim_req *q, const char *key)
{
    for (int i = 0; i < q->n_params; i++)
        if (strcmp(q->params[i].key, key) == 0)
            return q->params[i].value;
    return NULL;
}

static bool content_type_is_json(const char *ct)
{
    if (ct == NULL)
        return false;
    while (*ct == ' ')
        ct++;
    size_t n = strlen("application/json");
    return strncasecmp(ct, "application/json", n) == 0 &&
           (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/* 0 with q->json holding a parsed JSON object; -1 with r holding the 415 or 400. */
int req_json_body(struct sim_req *q, struct sim_resp *r)
{
    if (!content_type_is_json(q->content_type)) {
        resp_error(r, 415, "http.media_type.not_supported",
                   "Content-Type must be application/json");
        return -1;
    }
    if (q->body_len == 0) {
        resp_error(r, 400, "http.request.body.missing", "A request body is required");
        return -1;
    }
    struct json_tokener *tok = json_tokener_new();
    json_object *obj = json_tokener_parse_ex(tok, q->body, (int)q->body_len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t used = tok->char_offset;
    json_tokener_free(tok);
    if (obj == NULL || jerr != json_tokener_success) {
        json_object_put(obj);
        resp_error(r, 400, "json.parse.error", "The request body is not valid JSON");
        return -1;
    }
    while (used < q->body_len && (q->body[used] == ' ' || q->body[used] == '\n' ||
                                  q->body[used] == '\r' || q->body[used] == '\t'))
        used++;
    if (used != q->body_len || !json_object_is_type(obj, json_type_object)) {
        json_object_put(obj);
        resp_error(r, 400, "json.parse.error", "The request body must be a JSON object");
        return -1;
    }
    q->json = obj;
    return 0;
}

int req_limit(const struct sim_req *q, struct sim_resp *r, int def, int max, int *out)
{
    const char *s = req_param(q, "limit");
    if (s == NULL) {
        *out = def;
        return 0;
    }
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < 1 || v > max) {
        resp_error(r, 400, "query.param.invalid", "limit: must be an integer from 1 to %d", max);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static const char B64URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* A cursor carries the query it continues and the offset of the next page, so it is
 * opaque to the client and needs no server-side memory. */
char *cursor_encode(const struct sim_req *q, long offset)
{
    char plain[2048];
    size_t len = 0;
    for (int i = 0; i < q->n_params && len < sizeof plain - 64; i++) {
        if (strcmp(q->params[i].key, "offset") == 0)
            continue;
        len += (size_t)snprintf(plain + len, sizeof plain - len, "%s=%s\n", q->params[i].key,
                                q->params[i].value);
        if (len >= sizeof plain)
            len = sizeof plain - 1;
    }
    len += (size_t)snprintf(plain + len, sizeof plain - len, "offset=%ld\n", offset);
    if (len >= sizeof plain)
        len = sizeof plain - 1;
    char *out = malloc(len * 4 / 3 + 8);
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)(unsigned char)plain[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)(unsigned char)plain[i + 1] << 8;
        if (i + 2 < len)
            v |= (uint32_t)(unsigned char)plain[i + 2];
        out[o++] = B64URL[(v >> 18) & 63];
        out[o++] = B64URL[(v >> 12) & 63];
        if (i + 1 < len)
            out[o++] = B64URL[(v >> 6) & 63];
        if (i + 2 < len)
            out[o++] = B64URL[v & 63];
    }
    out[o] = '\0';
    return out;
}

long req_offset(const struct sim_req *q)
{
    const char *s = req_param(q, "offset");
    return s ? strtol(s, NULL, 10) : 0;
}

void resp_next_link(struct sim_resp *r, json_object *obj, const struct sim_req *q, const char *base,
                    long next_offset)
{
    (void)r;
    char *cursor = cursor_encode(q, next_offset);
    size_t n = strlen(base) + strlen(cursor) + 16;
    char *href = malloc(n);
    snprintf(href, n, "%s?cursor=%s", base, cursor);
    json_object *links = json_object_new_object();
    json_object *next = json_object_new_object();
    json_object_object_add(next, "href", json_object_new_string(href));
    json_object_object_add(links, "next", next);
    json_object_object_add(obj, "_links", links);
    free(cursor);
    free(href);
}
