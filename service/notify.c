/*
 * notify.c - notifications to an association's endpoint (notify.h).
 *
 * Durable: a transition is appended to the association's stream
 * (ccsync:{A}:notify:events) by the same script that records it in the group
 * hash (field notified_error), so it is sent once however many processes run.
 * One process at a time delivers an association's stream (its notify-lease),
 * oldest first: an entry is deleted once the endpoint answered 2xx; a failure
 * waits 1 s, 2 s, 4 s ... (at most 10 min) before the next try, and an entry
 * older than 24 h is dropped with a warning. Later entries wait behind a
 * failing one, so the endpoint sees transitions in order.
 *
 * SSRF guard: the URL must be http(s); its host is resolved here and every
 * address must be public (not loopback, private, link-local, shared, multicast
 * or unspecified) unless CCSYNC_NOTIFY_ALLOW_PRIVATE=1; curl is then pinned to
 * the address checked (CURLOPT_RESOLVE) and follows no redirect.
 */
#include "ccsync/notify.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <hiredis/hiredis.h>
#include <json-c/json.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ccsync/app.h"
#include "ccsync/config.h"
#include "ccsync/keys.h"
#include "ccsync/lease.h"
#include "ccsync/log.h"
#include "ccsync/ratelimit.h"
#include "ccsync/script.h"
#include "ccsync/secrets.h"
#include "ccsync/store.h"
#include "ccsync/webhook.h"

#define RETRY_MAX_MS (10 * 60 * 1000)
#define GIVE_UP_MS (24LL * 3600 * 1000)
#define LEASE_MS 30000
#define STREAM_MAX "10000"

/* ---- the SSRF guard ---- */

static bool private_v4(const unsigned char *a)
{
    return a[0] == 0 || a[0] == 10 || a[0] == 127 || a[0] >= 224 ||
           (a[0] == 100 && (a[1] & 0xC0) == 64) || (a[0] == 169 && a[1] == 254) ||
           (a[0] == 172 && (a[1] & 0xF0) == 16) || (a[0] == 192 && a[1] == 168) ||
           (a[0] == 192 && a[1] == 0 && a[2] == 0) || (a[0] == 198 && (a[1] & 0xFE) == 18);
}

static bool private_address(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return private_v4((const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr);
    if (sa->sa_family != AF_INET6)
        return true;
    const unsigned char *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const unsigned char zero[15] = {0};
    if (memcmp(a, mapped, 12) == 0)
        return private_v4(a + 12);
    bool loopback_or_any = memcmp(a, zero, 15) == 0 && (a[15] == 1 || a[15] == 0);
    return loopback_or_any || (a[0] & 0xFE) == 0xFC || (a[0] == 0xFE && (a[1] & 0xC0) == 0x80) ||
           a[0] == 0xFF;
}

/* host, port and scheme of url into the buffers; -1 when it is no http(s) URL. */
static int url_parts(const char *url, char *host, size_t host_size, long *port)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *h = NULL, *p = NULL;
    int rc = -1;
    if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &h, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_PORT, &p, CURLU_DEFAULT_PORT) == CURLUE_OK &&
        (strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0) && strlen(h) < host_size) {
        /* an IPv6 literal comes in brackets */
        size_t n = strlen(h);
        bool bracket = h[0] == '[' && n > 2;
        snprintf(host, host_size, "%.*s", (int)(bracket ? n - 2 : n), bracket ? h + 1 : h);
        *port = atol(p);
        rc = 0;
    }
    curl_free(scheme);
    curl_free(h);
    curl_free(p);
    curl_url_cleanup(u);
    return rc;
}

int notify_url_check(const char *url, bool allow_private, char *pin, size_t pin_size, char *why,
                     size_t why_size)
{
    char host[256], addr[INET6_ADDRSTRLEN] = "";
    long port;
    if (strlen(url) > NOTIFY_URL_MAX || url_parts(url, host, sizeof host, &port) != 0) {
        snprintf(why, why_size, "notifications.url must be an http or https URL");
        return -1;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res) {
        snprintf(why, why_size, "notifications.url: the host \"%s\" does not resolve", host);
        return -1;
    }
    int rc = 0;
    for (struct addrinfo *ai = res; ai && rc == 0; ai = ai->ai_next) {
        if (!allow_private && private_address(ai->ai_addr)) {
            snprintf(why, why_size,
                     "notifications.url: \"%s\" resolves to a private, loopback or link-local "
                     "address (allowed only with CCSYNC_NOTIFY_ALLOW_PRIVATE=1)",
                     host);
            rc = -1;
        }
    }
    const void *a = res->ai_family == AF_INET
                        ? (const void *)&((struct sockaddr_in *)res->ai_addr)->sin_addr
                        : (const void *)&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr;
    inet_ntop(res->ai_family, a, addr, sizeof addr);
    snprintf(pin, pin_size, res->ai_family == AF_INET6 ? "%s:%ld:[%s]" : "%s:%ld:%s", host, port,
             addr);
    freeaddrinfo(res);
    return rc;
}

/* ---- settings ---- */

int notify_config_parse(json_object *o, bool allow_private, struct notify_config *out, bool *remove,
                        char *why, size_t why_size)
{
    memset(out, 0, sizeof *out);
    out->digest_hour = -1;
    *remove = o == NULL;
    if (*remove)
        return 0;
    json_object *url, *secret, *hour;
    if (!json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, "url", &url) ||
        !json_object_is_type(url, json_type_string) ||
        !json_object_object_get_ex(o, "secret", &secret) ||
        !json_object_is_type(secret, json_type_string)) {
        snprintf(why, why_size,
                 "notifications must be {\"url\",\"secret\"[,\"daily_digest_hour_utc\"]} or null");
        return -1;
    }
    json_object_object_foreach(o, key, val)
    {
        (void)val;
        if (strcmp(key, "url") && strcmp(key, "secret") && strcmp(key, "daily_digest_hour_utc")) {
            snprintf(why, why_size, "unknown field \"notifications.%.64s\"", key);
            return -1;
        }
    }
    out->url = json_object_get_string(url);
    out->secret = json_object_get_string(secret);
    if (!webhook_secret_valid(out->secret)) {
        snprintf(why, why_size, "notifications.secret must be whsec_ followed by base64");
        return -1;
    }
    if (json_object_object_get_ex(o, "daily_digest_hour_utc", &hour) && hour) {
        int h = json_object_get_int(hour);
        if (!json_object_is_type(hour, json_type_int) || h < 0 || h > 23) {
            snprintf(why, why_size, "notifications.daily_digest_hour_utc must be 0-23");
            return -1;
        }
        out->digest_hour = h;
    }
    char pin[512];
    return notify_url_check(out->url, allow_private, pin, sizeof pin, why, why_size);
}

int notify_config_put(redisContext *c, const struct secrets_ring *ring, const char *association,
                      const struct notify_config *nc, bool remove)
{
    struct key key = key_notify(association);
    if (remove)
        return store_exec(c, "DEL %s", key.s);
    char hour[8];
    snprintf(hour, sizeof hour, "%d", nc->digest_hour);
    /* sealed at rest like the association's own secrets, bound to this field */
    char *secret = store_secret_form(ring, association, NOTIFY_SECRET_FIELD, nc->secret);
    if (secret == NULL)
        return STORE_ERR;
    int rc = store_exec(c, "HSET %s url %s secret %s digest_hour %s", key.s, nc->url, secret, hour);
    free(secret);
    return rc;
}

json_object *notify_config_view(redisContext *c, const char *association)
{
    redisReply *r = store_command(c, "HMGET %s url secret digest_hour", key_notify(association).s);
    json_object *o = NULL;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
        r->element[0]->type == REDIS_REPLY_STRING) {
        o = json_object_new_object();
        json_object_object_add(o, "url", json_object_new_string(r->element[0]->str));
        json_object_object_add(o, "secret_set",
                               json_object_new_boolean(r->element[1]->type == REDIS_REPLY_STRING));
        int h = r->element[2]->type == REDIS_REPLY_STRING ? atoi(r->element[2]->str) : -1;
        json_object_object_add(o, "daily_digest_hour_utc", h >= 0 ? json_object_new_int(h) : NULL);
    }
    freeReplyObject(r);
    return o;
}

/* ---- transitions ---- */

/* KEYS: group hash, notify settings, events. ARGV: group id, code, message, at.
 * Once per error: a group that stays in error (every sync, every reconcile)
 * finds notified_error already set. */
static const char error_script[] =
    "if redis.call('HGET', KEYS[1], 'notified_error') == ARGV[2] then return 0 end\n"
    "redis.call('HSET', KEYS[1], 'notified_error', ARGV[2])\n"
    "if redis.call('HEXISTS', KEYS[2], 'url') == 0 then return 0 end\n"
    "redis.call('XADD', KEYS[3], 'MAXLEN', '~', '" STREAM_MAX "', '*', 'type', "
    "'group.sync_error', 'group_id', ARGV[1], 'code', ARGV[2], 'message', ARGV[3], 'at', ARGV[4])\n"
    "return 1\n";

/* The same KEYS; ARGV: group id, at. Recovered: synced after a notified error. */
static const char synced_script[] =
    "local code = redis.call('HGET', KEYS[1], 'notified_error')\n"
    "if not code then return 0 end\n"
    "redis.call('HDEL', KEYS[1], 'notified_error')\n"
    "if redis.call('HEXISTS', KEYS[2], 'url') == 0 then return 0 end\n"
    "redis.call('XADD', KEYS[3], 'MAXLEN', '~', '" STREAM_MAX "', '*', 'type', "
    "'group.sync_recovered', 'group_id', ARGV[1], 'code', code, 'at', ARGV[2])\n"
    "return 1\n";

static int run_transition(redisContext *c, const char *script, const char *association,
                          const char *group, const char *code, const char *message)
{
    struct key g = key_group(association, group), n = key_notify(association),
               e = key_notify_events(association);
    char at[40];
    rfc3339_format(store_now_ns(), at, sizeof at);
    const char *with_code[] = {g.s, n.s, e.s, group, code, message, at};
    const char *without[] = {g.s, n.s, e.s, group, at};
    redisReply *r =
        code ? script_eval(c, script, 3, 7, with_code) : script_eval(c, script, 3, 5, without);
    int rc = store_reply_ok(c, r) ? STORE_OK : STORE_ERR;
    freeReplyObject(r);
    return rc;
}

int notify_group_error(redisContext *c, const char *association, const char *group,
                       const char *code, const char *message)
{
    return run_transition(c, error_script, association, group, code, message ? message : "");
}

int notify_group_synced(redisContext *c, const char *association, const char *group)
{
    return run_transition(c, synced_script, association, group, NULL, NULL);
}

/* KEYS: notify settings, events, association. ARGV: type, at, then field
 * names and values. An event that is its own transition (a rename seen once). */
static const char event_script[] =
    "if redis.call('HEXISTS', KEYS[1], 'url') == 0 then return 0 end\n"
    "redis.call('XADD', KEYS[2], 'MAXLEN', '~', '" STREAM_MAX "', '*', 'type', ARGV[1], 'at', "
    "ARGV[2], unpack(ARGV, 3))\n"
    "return 1\n";

/* KEYS: notify settings, events, association. ARGV: at, message. Once per set
 * of credentials: new tokens (a PUT) change cred_version. */
static const char unauthorized_script[] =
    "if redis.call('HEXISTS', KEYS[1], 'url') == 0 then return 0 end\n"
    "local v = redis.call('HGET', KEYS[3], 'cred_version') or '0'\n"
    "if redis.call('HGET', KEYS[1], 'unauthorized_cred') == v then return 0 end\n"
    "redis.call('HSET', KEYS[1], 'unauthorized_cred', v)\n"
    "redis.call('XADD', KEYS[2], 'MAXLEN', '~', '" STREAM_MAX "', '*', 'type', "
    "'connection.unauthorized', 'at', ARGV[1], 'message', ARGV[2])\n"
    "return 1\n";

/* Runs an event script: ARGV is type (when not NULL), the time, then args. */
static int run_event(redisContext *c, const char *script, const char *association, const char *type,
                     size_t n_args, const char *const *args)
{
    struct key n = key_notify(association), e = key_notify_events(association),
               a = key_association(association);
    char at[40];
    rfc3339_format(store_now_ns(), at, sizeof at);
    const char *argv[3 + 2 + 8] = {n.s, e.s, a.s};
    size_t k = 3;
    if (type)
        argv[k++] = type;
    argv[k++] = at;
    for (size_t i = 0; i < n_args && k < sizeof argv / sizeof argv[0]; i++)
        argv[k++] = args[i];
    redisReply *r = script_eval(c, script, 3, (int)k, argv);
    int rc = store_reply_ok(c, r) ? STORE_OK : STORE_ERR;
    freeReplyObject(r);
    return rc;
}

int notify_list_renamed(redisContext *c, const char *association, const char *group,
                        const char *list_id, const char *old_name, const char *new_name)
{
    const char *args[] = {"group_id", group,    "list_id",  list_id,
                          "old_name", old_name, "new_name", new_name};
    return run_event(c, event_script, association, "list.renamed_in_constant_contact", 8, args);
}

int notify_connection_unauthorized(redisContext *c, const char *association, const char *message)
{
    const char *args[] = {message};
    return run_event(c, unauthorized_script, association, NULL, 1, args);
}

/* ---- the daily digest ---- */

struct notifier {
    struct app *app;
    pthread_t thread;
    atomic_bool stop;
};

/* KEYS: notify settings, events, association. ARGV: today, at, digest JSON.
 * Once a day: the first process past the hour records the day. */
static const char digest_script[] =
    "if redis.call('HEXISTS', KEYS[1], 'url') == 0 then return 0 end\n"
    "if redis.call('HGET', KEYS[1], 'digest_day') == ARGV[1] then return 0 end\n"
    "redis.call('HSET', KEYS[1], 'digest_day', ARGV[1])\n"
    "redis.call('XADD', KEYS[2], 'MAXLEN', '~', '" STREAM_MAX "', '*', 'type', 'digest.daily', "
    "'at', ARGV[2], 'data_json', ARGV[3])\n"
    "return 1\n";

static const char *const reasons[] = {"no_email",     "invalid_email", "duplicate_email",
                                      "do_not_email", "unsubscribed",  "rejected"};

static const char *reply_str(const redisReply *v)
{
    return v->type == REDIS_REPLY_STRING ? v->str : "";
}

/* Adds group g's error (if in error) to errors and its counts to sums. */
static void digest_group(redisContext *c, const char *association, const char *g,
                         json_object *errors, long long sums[6])
{
    redisReply *r = store_command(c,
                                  "HMGET %s state err_code c_no_email c_invalid_email "
                                  "c_duplicate_email c_do_not_email c_unsubscribed c_rejected",
                                  key_group(association, g).s);
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 8) {
        if (strcmp(reply_str(r->element[0]), "error") == 0) {
            json_object *e = json_object_new_object();
            json_object_object_add(e, "group_id", json_object_new_string(g));
            json_object_object_add(e, "code", json_object_new_string(reply_str(r->element[1])));
            json_object_array_add(errors, e);
        }
        for (int k = 0; k < 6; k++)
            sums[k] += atoll(reply_str(r->element[2 + k]));
    }
    freeReplyObject(r);
}

/* {"groups_in_error":[{group_id,code}],"members_not_synced":{reason:n},"budget_used_today"} */
static json_object *digest_of(struct notifier *n, redisContext *c, const char *association)
{
    json_object *errors = json_object_new_array(), *not_synced = json_object_new_object();
    long long sums[6] = {0};
    redisReply *ids = store_command(c, "SMEMBERS %s", key_groups(association).s);
    for (size_t i = 0; ids && ids->type == REDIS_REPLY_ARRAY && i < ids->elements; i++)
        digest_group(c, association, ids->element[i]->str, errors, sums);
    freeReplyObject(ids);
    for (int k = 0; k < 6; k++)
        json_object_object_add(not_synced, reasons[k], json_object_new_int64(sums[k]));
    struct ratelimit_conf rc;
    ratelimit_conf_from_config(&rc, n->app->cfg);
    long used = 0;
    ratelimit_used_today(c, &rc, &used);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "groups_in_error", errors);
    json_object_object_add(o, "members_not_synced", not_synced);
    json_object_object_add(o, "budget_used_today", json_object_new_int64(used));
    return o;
}

/* Records the day's digest once the association's hour (UTC) has come. */
static void digest_if_due(struct notifier *n, redisContext *c, const char *association)
{
    redisReply *r = store_command(c, "HMGET %s digest_hour digest_day", key_notify(association).s);
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    char today[16];
    strftime(today, sizeof today, "%Y-%m-%d", &tm);
    bool due = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
               r->element[0]->type == REDIS_REPLY_STRING && atoi(r->element[0]->str) >= 0 &&
               tm.tm_hour >= atoi(r->element[0]->str) &&
               strcmp(reply_str(r->element[1]), today) != 0;
    freeReplyObject(r);
    if (!due)
        return;
    json_object *d = digest_of(n, c, association);
    struct key k1 = key_notify(association), k2 = key_notify_events(association),
               k3 = key_association(association);
    char at[40];
    rfc3339_format(store_now_ns(), at, sizeof at);
    const char *args[] = {k1.s,  k2.s, k3.s,
                          today, at,   json_object_to_json_string_ext(d, JSON_C_TO_STRING_PLAIN)};
    freeReplyObject(script_eval(c, digest_script, 3, 6, args));
    json_object_put(d);
}

/* ---- delivery ---- */

/* What delivering an association's stream needs from its settings. */
struct target {
    char url[NOTIFY_URL_MAX + 1];
    char secret[256];
    char retry_id[64]; /* the entry that failed last, "" when none */
    long long retry_at_ms;
    long attempts;
};

static void copy_field(char *out, size_t size, const redisReply *v)
{
    snprintf(out, size, "%s", v->type == REDIS_REPLY_STRING ? v->str : "");
}

/* 1 with t filled, 0 no notifications, STORE_ERR. */
static int target_load(redisContext *c, const struct secrets_ring *ring, const char *association,
                       struct target *t)
{
    redisReply *r = store_command(c, "HMGET %s url secret retry_id retry_at attempts",
                                  key_notify(association).s);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 5) {
        freeReplyObject(r);
        return STORE_ERR;
    }
    copy_field(t->url, sizeof t->url, r->element[0]);
    const redisReply *sv = r->element[1];
    if (sv->type != REDIS_REPLY_STRING || secrets_open(ring, association, NOTIFY_SECRET_FIELD,
                                                       sv->str, t->secret, sizeof t->secret) != 0)
        t->secret[0] = '\0'; /* unset, or its key left the ring: nothing is sent unsigned */
    copy_field(t->retry_id, sizeof t->retry_id, r->element[2]);
    char n[32];
    copy_field(n, sizeof n, r->element[3]);
    t->retry_at_ms = atoll(n);
    copy_field(n, sizeof n, r->element[4]);
    t->attempts = atol(n);
    freeReplyObject(r);
    return t->url[0] && t->secret[0] ? 1 : 0;
}

static const char *field(const redisReply *fields, const char *name)
{
    for (size_t i = 0; i + 1 < fields->elements; i += 2)
        if (strcmp(fields->element[i]->str, name) == 0)
            return fields->element[i + 1]->str;
    return NULL;
}

/* The notification as the endpoint gets it (malloc'd JSON): every field of the
 * entry but its type and time goes into data. */
static char *entry_body(const redisReply *fields, const char *association)
{
    json_object *data = json_object_new_object(), *o = json_object_new_object();
    json_object_object_add(data, "association_id", json_object_new_string(association));
    for (size_t i = 0; i + 1 < fields->elements; i += 2) {
        const char *name = fields->element[i]->str;
        const char *value = fields->element[i + 1]->str;
        json_object *parsed = strcmp(name, "data_json") == 0 ? json_tokener_parse(value) : NULL;
        if (parsed && json_object_is_type(parsed, json_type_object)) {
            json_object_object_foreach(parsed, key, v) /* the digest's structured parts */
            {
                json_object_object_add(data, key, json_object_get(v));
            }
        }
        json_object_put(parsed);
        if (strcmp(name, "type") != 0 && strcmp(name, "at") != 0 && strcmp(name, "data_json") != 0)
            json_object_object_add(data, name, json_object_new_string(value));
    }
    const char *type = field(fields, "type"), *at = field(fields, "at");
    json_object_object_add(o, "type", json_object_new_string(type ? type : ""));
    json_object_object_add(o, "timestamp", json_object_new_string(at ? at : ""));
    json_object_object_add(o, "data", data);
    char *body = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
    return body;
}

static size_t discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

/* POSTs body, signed, to the pinned address; true on a 2xx answer. */
static bool post(const struct target *t, const char *pin, const char *id, const char *body,
                 char *why, size_t why_size)
{
    char sig[128], ts[32], h_id[128], h_ts[64], h_sig[160];
    long long now = store_now_ns() / 1000000000LL;
    snprintf(ts, sizeof ts, "%lld", now);
    if (webhook_sign(t->secret, id, now, body, strlen(body), sig, sizeof sig) != 0) {
        snprintf(why, why_size, "the notification secret cannot sign");
        return false;
    }
    snprintf(h_id, sizeof h_id, "webhook-id: %s", id);
    snprintf(h_ts, sizeof h_ts, "webhook-timestamp: %s", ts);
    snprintf(h_sig, sizeof h_sig, "webhook-signature: %s", sig);
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
    headers = curl_slist_append(headers, h_id);
    headers = curl_slist_append(headers, h_ts);
    headers = curl_slist_append(headers, h_sig);
    struct curl_slist *resolve = curl_slist_append(NULL, pin);
    CURL *h = curl_easy_init();
    long status = 0;
    CURLcode rc = CURLE_FAILED_INIT;
    if (h && headers && resolve) {
        curl_easy_setopt(h, CURLOPT_URL, t->url);
        curl_easy_setopt(h, CURLOPT_RESOLVE, resolve);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
        curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
        rc = curl_easy_perform(h);
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    }
    if (rc != CURLE_OK)
        snprintf(why, why_size, "%s", curl_easy_strerror(rc));
    else if (status < 200 || status > 299)
        snprintf(why, why_size, "the endpoint answered %ld", status);
    curl_easy_cleanup(h);
    curl_slist_free_all(headers);
    curl_slist_free_all(resolve);
    return rc == CURLE_OK && status >= 200 && status <= 299;
}

/* Sends one entry; false when the association's delivery stops here (a failure
 * waits for its retry; later entries wait behind it). */
static bool deliver_entry(struct notifier *n, redisContext *c, const char *association,
                          struct target *t, const redisReply *entry)
{
    const char *id = entry->element[0]->str;
    long long now = store_now_ns() / 1000000;
    if (strcmp(t->retry_id, id) == 0 && now < t->retry_at_ms)
        return false;
    struct key events = key_notify_events(association), settings = key_notify(association);
    if (now - atoll(id) > GIVE_UP_MS) {
        log_warn("notification_dropped", LOG_STR("association", association), LOG_STR("entry", id),
                 LOG_STR("reason", "not delivered within 24 h"));
        return store_exec(c, "XDEL %s %s", events.s, id) == STORE_OK;
    }
    char why[600] = "", pin[600], webhook_id[96];
    snprintf(webhook_id, sizeof webhook_id, "ntf_%s", id);
    char *body = entry_body(entry->element[1], association);
    bool ok = body &&
              notify_url_check(t->url, n->app->cfg->notify_allow_private, pin, sizeof pin, why,
                               sizeof why) == 0 &&
              post(t, pin, webhook_id, body, why, sizeof why);
    free(body);
    if (ok) {
        log_info("notification_sent", LOG_STR("association", association), LOG_STR("entry", id));
        return store_exec(c, "XDEL %s %s", events.s, id) == STORE_OK &&
               store_exec(c, "HDEL %s retry_id retry_at attempts", settings.s) == STORE_OK;
    }
    long attempts = strcmp(t->retry_id, id) == 0 ? t->attempts + 1 : 1;
    long long delay = attempts > 20 ? RETRY_MAX_MS : 1000LL << (attempts - 1);
    if (delay > RETRY_MAX_MS)
        delay = RETRY_MAX_MS;
    log_warn("notification_failed", LOG_STR("association", association), LOG_STR("entry", id),
             LOG_STR("error", why), LOG_INT("attempts", attempts), LOG_INT("retry_in_ms", delay));
    store_exec(c, "HSET %s retry_id %s retry_at %lld attempts %ld", settings.s, id, now + delay,
               attempts);
    return false;
}

/* Delivers what association has waiting, under its lease (one process at a time). */
static void deliver_association(struct notifier *n, redisContext *c, const char *association)
{
    struct target *t = calloc(1, sizeof *t);
    if (!t || target_load(c, &n->app->cfg->secrets, association, t) != 1) {
        free(t);
        return;
    }
    redisReply *r = store_command(c, "XRANGE %s - + COUNT 20", key_notify_events(association).s);
    struct lease l;
    struct key lease_key = key_notify_lease(association);
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
        lease_take(c, &l, &lease_key, LEASE_MS) == 1) {
        /* within half the lease: a slow endpoint (10 s a try) cannot outlast it */
        long long until = store_now_ns() / 1000000 + LEASE_MS / 2;
        for (size_t i = 0; i < r->elements && !atomic_load(&n->stop); i++)
            if (store_now_ns() / 1000000 > until ||
                !deliver_entry(n, c, association, t, r->element[i]))
                break;
        lease_release(c, &l);
    }
    freeReplyObject(r);
    free(t);
}

static void *notifier_main(void *arg)
{
    struct notifier *n = arg;
    redisContext *c = NULL;
    char err[256];
    while (!atomic_load(&n->stop)) {
        if (!c)
            c = store_connect(&n->app->cfg->redis, 2000, err, sizeof err);
        redisReply *assocs = c ? store_command(c, "SMEMBERS %s", KEY_ASSOCIATIONS) : NULL;
        for (size_t i = 0; assocs && assocs->type == REDIS_REPLY_ARRAY && i < assocs->elements;
             i++) {
            digest_if_due(n, c, assocs->element[i]->str);
            deliver_association(n, c, assocs->element[i]->str);
        }
        freeReplyObject(assocs);
        if (c && c->err) {
            redisFree(c);
            c = NULL;
        }
        for (int k = 0; k < 5 && !atomic_load(&n->stop); k++) {
            struct timespec ts = {0, 50 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    if (c)
        redisFree(c);
    return NULL;
}

struct notifier *notify_start(struct app *app)
{
    struct notifier *n = calloc(1, sizeof *n);
    if (!n)
        return NULL;
    n->app = app;
    if (pthread_create(&n->thread, NULL, notifier_main, n) != 0) {
        free(n);
        return NULL;
    }
    return n;
}

void notify_stop(struct notifier *n)
{
    if (!n)
        return;
    atomic_store(&n->stop, true);
    pthread_join(n->thread, NULL);
    free(n);
}
