/* Novi AMS seen from a test: event envelopes, member records, and webhooks signed
 * with the association's secret and sent to ccsyncd. See novi.h. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ccsync/webhook.h"
#include "novi.h"
#include "stack.h"

void rfc3339_at(long long seconds, char *out, size_t size)
{
    time_t t = (time_t)(T0 + seconds);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

struct reply post_webhook_as(int i, const char *association, const char *secret, const char *id,
                             const char *body)
{
    char sig[128], ts_hdr[64], id_hdr[160], sig_hdr[200], url[256];
    int64_t now = (int64_t)time(NULL);
    assert_int_equal(webhook_sign(secret, id, now, body, strlen(body), sig, sizeof sig), 0);
    snprintf(ts_hdr, sizeof ts_hdr, "webhook-timestamp: %lld", (long long)now);
    snprintf(id_hdr, sizeof id_hdr, "webhook-id: %s", id);
    snprintf(sig_hdr, sizeof sig_hdr, "webhook-signature: %s", sig);
    const char *headers[] = {"Content-Type: application/json", id_hdr, ts_hdr, sig_hdr, NULL};
    snprintf(url, sizeof url, "%s/v1/associations/%s/webhooks/novi", stack.base[i], association);
    return http("POST", url, headers, body);
}

struct reply post_webhook_reply_at(int i, const char *id, const char *body)
{
    return post_webhook_as(i, ASSOC, SECRET, id, body);
}

long post_webhook_at(int i, const char *id, const char *body)
{
    struct reply r = post_webhook_reply_at(i, id, body);
    long status = r.status;
    reply_free(&r);
    return status;
}

long post_webhook(const char *id, const char *body)
{
    return post_webhook_at(0, id, body);
}

char *envelope(const char *type, const char *data, long long at)
{
    char ts[40];
    rfc3339_at(at, ts, sizeof ts);
    size_t n = strlen(type) + strlen(data) + 128;
    char *body = malloc(n);
    snprintf(body, n, "{\"type\":\"%s\",\"timestamp\":\"%s\",\"data\":%s}", type, ts, data);
    return body;
}

void new_id(char *out, size_t size)
{
    snprintf(out, size, "msg_%d_%d_%ld", getpid(), stack.serial, ++stack.msg_serial);
}

void send_event_at(int i, const char *type, const char *data, long long at)
{
    char id[64];
    new_id(id, sizeof id);
    char *body = envelope(type, data, at);
    long status = post_webhook_at(i, id, body);
    if (status != 202)
        fail_msg("webhook %s %s: %ld", type, id, status);
    free(body);
}

void send_event(const char *type, const char *data, long long at)
{
    send_event_at(0, type, data, at);
}

char *member_json(const char *id, const char *email, const char *first, const char *last,
                  const char *extra)
{
    char em[200] = "", *b = malloc(1024);
    if (email)
        snprintf(em, sizeof em, ",\"Email\":\"%s\"", email);
    snprintf(b, 1024,
             "{\"UniqueID\":\"%s\"%s,\"FirstName\":\"%s\",\"LastName\":\"%s\","
             "\"CustomerType\":\"Person\",\"Active\":true%s}",
             id, em, first, last, extra ? extra : "");
    return b;
}

const char *member(const char *id, const char *email, const char *first, const char *last,
                   const char *extra)
{
    static char bufs[64][1024];
    static int next;
    char *b = bufs[next++ % 64], *m = member_json(id, email, first, last, extra);
    snprintf(b, 1024, "%s", m);
    free(m);
    return b;
}

const char *groups_of(const char *csv)
{
    static char bufs[16][512];
    static int next;
    char *b = bufs[next++ % 16];
    size_t n = (size_t)snprintf(b, 512, ",\"Groups\":[");
    char copy[256];
    snprintf(copy, sizeof copy, "%s", csv);
    char *save = NULL;
    bool first = true;
    for (char *g = strtok_r(copy, ",", &save); g; g = strtok_r(NULL, ",", &save)) {
        n += (size_t)snprintf(b + n, 512 - n, "%s{\"UniqueID\":\"%s\",\"GroupName\":\"%s\"}",
                              first ? "" : ",", g, g);
        first = false;
    }
    snprintf(b + n, 512 - n, "]");
    return b;
}

void send_group_at(int i, const char *g, const char *name, bool sync, long long at)
{
    char data[512];
    snprintf(data, sizeof data,
             "{\"UniqueID\":\"%s\",\"GroupName\":\"%s\",\"SyncToConstantContact\":%s}", g, name,
             sync ? "true" : "false");
    send_event_at(i, "group.updated", data, at);
}

void send_group(const char *g, const char *name, bool sync, long long at)
{
    send_group_at(0, g, name, sync, at);
}

void send_members(const char *g, long long at, int n, ...)
{
    size_t cap = 256 + (size_t)n * 520;
    char *data = malloc(cap);
    size_t len = (size_t)snprintf(data, cap, "{\"UniqueID\":\"%s\",\"Members\":[", g);
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++)
        len +=
            (size_t)snprintf(data + len, cap - len, "%s%s", i ? "," : "", va_arg(ap, const char *));
    va_end(ap);
    snprintf(data + len, cap - len, "]}");
    send_event("group.members", data, at);
    free(data);
}

void send_customer(const char *record, long long at)
{
    send_event("customer.updated", record, at);
}
