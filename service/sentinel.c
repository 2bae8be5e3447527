/*
 * sentinel.c - asking Redis Sentinel where the primary is (see sentinel.h).
 */
#include "ccsync/sentinel.h"

#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccsync/config.h"

/* One "host:port" or "[v6]:port" of len bytes into a. */
static int parse_addr(const char *p, size_t len, struct sentinel_addr *a, char *err, size_t size)
{
    const char *host = p, *port = NULL;
    size_t hlen = len;
    if (len > 0 && *p == '[') {
        const char *close = memchr(p, ']', len);
        if (!close)
            return config_error(err, size, "\"%.*s\" opens [ without closing it", (int)len, p);
        host = p + 1;
        hlen = (size_t)(close - host);
        if (close + 1 < p + len) {
            if (close[1] != ':')
                return config_error(err, size, "\"%.*s\" must be [address]:port", (int)len, p);
            port = close + 2;
        }
    } else {
        const char *colon = memchr(p, ':', len);
        if (colon) {
            hlen = (size_t)(colon - p);
            port = colon + 1;
        }
    }
    if (hlen == 0 || hlen >= sizeof a->host)
        return config_error(err, size, "\"%.*s\" has no host", (int)len, p);
    memcpy(a->host, host, hlen);
    a->host[hlen] = '\0';
    a->port = 26379;
    if (port) {
        char digits[8] = "";
        size_t n = (size_t)(p + len - port);
        char *end;
        if (n == 0 || n >= sizeof digits)
            return config_error(err, size, "\"%.*s\" has a bad port", (int)len, p);
        memcpy(digits, port, n);
        long v = strtol(digits, &end, 10);
        if (*end || v < 1 || v > 65535)
            return config_error(err, size, "\"%.*s\" has a bad port", (int)len, p);
        a->port = (int)v;
    }
    return 0;
}

int sentinel_parse_list(const char *list, struct sentinel_set *s, char *err, size_t err_size)
{
    s->n = 0;
    for (const char *p = list; p && *p;) {
        size_t len = strcspn(p, ",");
        while (len > 0 && *p == ' ') {
            p++;
            len--;
        }
        while (len > 0 && p[len - 1] == ' ')
            len--;
        if (len == 0)
            return config_error(err, err_size, "an empty entry (write host:port,host:port)");
        if (s->n == SENTINEL_MAX)
            return config_error(err, err_size, "more than %d Sentinels", SENTINEL_MAX);
        if (parse_addr(p, len, &s->addr[s->n], err, err_size) != 0)
            return -1;
        s->n++;
        p += strcspn(p, ",");
        if (*p == ',')
            p++;
    }
    if (s->n == 0)
        return config_error(err, err_size, "names no Sentinel");
    return 0;
}

static redisContext *connect_to(const char *host, int port, int timeout_ms)
{
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    if (c && !c->err)
        redisSetTimeout(c, tv);
    return c;
}

/* Asks one Sentinel; 0 with the address, or -1. */
static int ask(const struct sentinel_addr *a, const char *name, int timeout_ms, char *host,
               size_t host_size, int *port)
{
    redisContext *c = connect_to(a->host, a->port, timeout_ms);
    if (!c || c->err) {
        redisFree(c);
        return -1;
    }
    redisReply *r = redisCommand(c, "SENTINEL get-master-addr-by-name %s", name);
    int rc = -1;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_STRING && r->element[1]->type == REDIS_REPLY_STRING) {
        snprintf(host, host_size, "%s", r->element[0]->str);
        *port = atoi(r->element[1]->str);
        rc = *port > 0 ? 0 : -1;
    }
    freeReplyObject(r);
    redisFree(c);
    return rc;
}

/* Does host:port say it is a primary? */
static bool is_primary(const char *host, int port, const char *username, const char *password,
                       int timeout_ms)
{
    redisContext *c = connect_to(host, port, timeout_ms);
    bool primary = false;
    if (c && !c->err) {
        redisReply *r = NULL;
        if (password[0])
            r = username[0] ? redisCommand(c, "AUTH %s %s", username, password)
                            : redisCommand(c, "AUTH %s", password);
        bool authed = !password[0] || (r && r->type != REDIS_REPLY_ERROR);
        freeReplyObject(r);
        r = authed ? redisCommand(c, "ROLE") : NULL;
        primary = r && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
                  r->element[0]->type == REDIS_REPLY_STRING &&
                  strcmp(r->element[0]->str, "master") == 0;
        freeReplyObject(r);
    }
    redisFree(c);
    return primary;
}

int sentinel_find_primary(const struct sentinel_set *s, const char *username, const char *password,
                          int timeout_ms, char *host, size_t host_size, int *port, char *err,
                          size_t err_size)
{
    size_t answered = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (ask(&s->addr[i], s->master_name, timeout_ms, host, host_size, port) != 0)
            continue;
        answered++;
        if (is_primary(host, *port, username, password, timeout_ms))
            return 0;
    }
    if (answered == 0)
        return config_error(err, err_size, "no Sentinel of %zu knows the primary \"%s\"", s->n,
                            s->master_name);
    return config_error(err, err_size,
                        "the Sentinels named %s:%d for \"%s\", which is not a primary (a "
                        "failover in progress?)",
                        host, *port, s->master_name);
}
