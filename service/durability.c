/*
 * durability.c - checking that Redis keeps what ccsync acknowledges (see
 * durability.h). Judged once at start; the result goes to the log and to
 * /v1/status, so an operator sees a Redis that would lose acknowledged events
 * before it does.
 */
#include "ccsync/durability.h"

#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccsync/store.h"

static const char *const mode_names[] = {"everysec", "always", "replica"};

int durability_mode_parse(const char *s)
{
    for (int m = 0; m < (int)(sizeof mode_names / sizeof mode_names[0]); m++)
        if (s && strcmp(s, mode_names[m]) == 0)
            return m;
    return -1;
}

const char *durability_mode_name(enum durability_mode m)
{
    return m >= DURABILITY_EVERYSEC && m <= DURABILITY_REPLICA ? mode_names[m] : "unknown";
}

static void warn(struct durability_report *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void warn(struct durability_report *out, const char *fmt, ...)
{
    if (out->n_warnings >= DURABILITY_MAX_WARNINGS)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->warnings[out->n_warnings++], sizeof out->warnings[0], fmt, ap);
    va_end(ap);
}

void durability_judge(enum durability_mode mode, const struct redis_persistence *p,
                      struct durability_report *out)
{
    memset(out, 0, sizeof *out);
    if (!p->known) {
        warn(out, "Redis's persistence settings could not be read (CONFIG and INFO refused): "
                  "nothing is known about what survives a crash");
        out->fatal = mode == DURABILITY_ALWAYS;
        return;
    }
    if (mode == DURABILITY_ALWAYS && !(p->aof && strcmp(p->fsync, "always") == 0)) {
        warn(out,
             "CCSYNC_DURABILITY=always needs Redis with appendonly yes and appendfsync "
             "always; it has appendonly %s, appendfsync %s",
             p->aof ? "yes" : "no", p->fsync[0] ? p->fsync : "unknown");
        out->fatal = true;
    } else if (!p->aof) {
        warn(out, "Redis has appendonly no: a crash of Redis loses every event acknowledged "
                  "since its last snapshot; set appendonly yes");
    } else if (strcmp(p->fsync, "no") == 0) {
        warn(out, "Redis has appendfsync no: a crash of its host loses the events the kernel "
                  "had not yet written (often 30 s); set appendfsync everysec or always");
    }
    if (strcmp(p->eviction, "noeviction") != 0)
        warn(out,
             "Redis has maxmemory-policy %s: under memory pressure it may evict queued "
             "events and sync state; set maxmemory-policy noeviction",
             p->eviction[0] ? p->eviction : "unknown");
    if (mode == DURABILITY_REPLICA && p->replicas < 1)
        warn(out, "CCSYNC_DURABILITY=replica but Redis has no connected replica: every webhook "
                  "is answered 503 until one connects");
}

/* "name:value" from an INFO text, copied into out; false when absent. */
static bool info_field(const char *info, const char *name, char *out, size_t size)
{
    size_t len = strlen(name);
    for (const char *line = info; line && *line; line = strchr(line, '\n')) {
        if (*line == '\n')
            line++;
        if (strncmp(line, name, len) == 0 && line[len] == ':') {
            const char *v = line + len + 1;
            size_t n = strcspn(v, "\r\n");
            snprintf(out, size, "%.*s", (int)(n < size ? n : size - 1), v);
            return true;
        }
    }
    return false;
}

/* CONFIG GET name into out; false when refused (renamed, ACL) or absent. */
static bool config_get(redisContext *c, const char *name, char *out, size_t size)
{
    redisReply *r = store_command(c, "CONFIG GET %s", name);
    bool ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
              r->element[1]->type == REDIS_REPLY_STRING;
    if (ok)
        snprintf(out, size, "%s", r->element[1]->str);
    freeReplyObject(r);
    return ok;
}

static bool read_info(redisContext *c, struct redis_persistence *p)
{
    redisReply *r = store_command(c, "INFO");
    if (!r || r->type != REDIS_REPLY_STRING) {
        freeReplyObject(r);
        return false;
    }
    char v[64] = "";
    bool any = false;
    if (info_field(r->str, "aof_enabled", v, sizeof v)) {
        p->aof = strcmp(v, "1") == 0;
        any = true;
    }
    if (!p->eviction[0] && info_field(r->str, "maxmemory_policy", v, sizeof v))
        snprintf(p->eviction, sizeof p->eviction, "%s", v);
    if (info_field(r->str, "connected_slaves", v, sizeof v))
        p->replicas = atoi(v);
    freeReplyObject(r);
    return any;
}

int durability_read(redisContext *c, struct redis_persistence *p)
{
    memset(p, 0, sizeof *p);
    char aof[16] = "";
    bool by_config = config_get(c, "appendonly", aof, sizeof aof);
    if (c->err)
        return STORE_ERR;
    if (by_config) {
        p->aof = strcmp(aof, "yes") == 0;
        config_get(c, "appendfsync", p->fsync, sizeof p->fsync);
        config_get(c, "maxmemory-policy", p->eviction, sizeof p->eviction);
    }
    bool by_info = read_info(c, p);
    if (c->err)
        return STORE_ERR;
    p->known = by_config || by_info;
    return STORE_OK;
}
