/* HTTP answers as JSON for the integration tests: one request with its reply
 * parsed, short JSON accessors, and a growable set of strings. Failures end the
 * running cmocka test (fail_msg), so a test reads as its steps. */
#ifndef CCSYNC_TEST_REPLY_H
#define CCSYNC_TEST_REPLY_H

#include <json-c/json.h>
#include <stddef.h>

struct reply {
    long status;       /* 0 when no answer came */
    char *body;        /* NUL-terminated, or NULL */
    char *headers;     /* the response header block, or NULL */
    json_object *json; /* the body parsed, or NULL */
};

void reply_free(struct reply *r);
/* The parsed body, taken out of r (the caller puts it); r is freed. */
json_object *reply_take_json(struct reply *r);

/* One request with a body of len bytes (NULL: none) and a timeout (0: 10 s);
 * r.status 0 when no answer came. */
struct reply http_request(const char *method, const char *url, const char *const *headers,
                          const char *body, size_t len, long timeout_ms);
/* One request (30 s at most); fails the test when no answer comes. */
struct reply http(const char *method, const char *url, const char *const *headers,
                  const char *body);

/* o's member key, or NULL (o may be NULL). */
json_object *jget(json_object *o, const char *key);
/* o's string member key, or NULL. */
const char *jstr(json_object *o, const char *key);
/* o's integer member key; fails the test when there is none. */
long long jint(json_object *o, const char *key);

/* The value at a dotted path ("error.code", "lists.0.name": array indexes as
 * numbers), or NULL; its string form (any type), or NULL; its integer (fails the
 * test when absent). */
json_object *jpath(json_object *o, const char *path);
const char *jpath_str(json_object *o, const char *path);
long long jpath_int(json_object *o, const char *path);

/* A set of strings (owned copies). */
struct strv {
    size_t n, cap;
    char **v;
};

void strv_add(struct strv *s, const char *x);
void strv_free(struct strv *s);
void strv_sort(struct strv *s);
/* qsort comparator of C strings. */
int cmp_str(const void *a, const void *b);

/* Sorted, comma-separated strings of a JSON array (or of key in each object). */
void join_sorted(json_object *arr, const char *key, char *out, size_t size);

#endif
