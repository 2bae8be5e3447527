/* HTTP answers as JSON, JSON accessors and string sets for the integration
 * tests. See reply.h. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reply.h"
#include "testsupport.h"

void reply_free(struct reply *r)
{
    free(r->body);
    free(r->headers);
    json_object_put(r->json);
    memset(r, 0, sizeof *r);
}

json_object *reply_take_json(struct reply *r)
{
    json_object *j = r->json;
    r->json = NULL;
    reply_free(r);
    return j;
}

struct reply http_request(const char *method, const char *url, const char *const *headers,
                          const char *body, size_t len, long timeout_ms)
{
    struct reply r = {0};
    if (ts_http_full(method, url, headers, body, len, timeout_ms, &r.status, &r.body, &r.headers) !=
        0)
        r.status = 0;
    if (r.body && r.body[0])
        r.json = json_tokener_parse(r.body);
    return r;
}

struct reply http(const char *method, const char *url, const char *const *headers, const char *body)
{
    struct reply r = http_request(method, url, headers, body, body ? strlen(body) : 0, 30000);
    if (r.status == 0)
        fail_msg("%s %s: no answer", method, url);
    return r;
}

json_object *jget(json_object *o, const char *key)
{
    json_object *v = NULL;
    if (!o || !json_object_object_get_ex(o, key, &v))
        return NULL;
    return v;
}

const char *jstr(json_object *o, const char *key)
{
    json_object *v = jget(o, key);
    return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

long long jint(json_object *o, const char *key)
{
    json_object *v = jget(o, key);
    if (!v || !json_object_is_type(v, json_type_int))
        fail_msg("no integer \"%s\" in %.500s", key, o ? json_object_to_json_string(o) : "(null)");
    return json_object_get_int64(v);
}

json_object *jpath(json_object *o, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    char *save = NULL;
    for (char *k = strtok_r(buf, ".", &save); k && o; k = strtok_r(NULL, ".", &save)) {
        if (json_object_is_type(o, json_type_array))
            o = json_object_array_get_idx(o, (size_t)atoi(k));
        else if (!json_object_object_get_ex(o, k, &o))
            return NULL;
    }
    return o;
}

const char *jpath_str(json_object *o, const char *path)
{
    json_object *v = jpath(o, path);
    return v ? json_object_get_string(v) : NULL;
}

long long jpath_int(json_object *o, const char *path)
{
    json_object *v = jpath(o, path);
    if (!v)
        fail_msg("no \"%s\" in %.500s", path, o ? json_object_to_json_string(o) : "(null)");
    return json_object_get_int64(v);
}

void strv_add(struct strv *s, const char *x)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 64;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
    }
    s->v[s->n++] = strdup(x);
}

void strv_free(struct strv *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}

int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

void strv_sort(struct strv *s)
{
    if (s->n)
        qsort(s->v, s->n, sizeof *s->v, cmp_str);
}

void join_sorted(json_object *arr, const char *key, char *out, size_t size)
{
    size_t n = arr ? json_object_array_length(arr) : 0;
    const char **v = calloc(n ? n : 1, sizeof *v);
    for (size_t i = 0; i < n; i++) {
        json_object *e = json_object_array_get_idx(arr, i);
        v[i] = key ? jstr(e, key) : json_object_get_string(e);
    }
    qsort(v, n, sizeof *v, cmp_str);
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(out + len, size - len, "%s%s", i ? "," : "", v[i]);
    free(v);
}
