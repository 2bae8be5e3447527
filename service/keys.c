/*
 * keys.c - the Redis key layout (see keys.h): everything of association A
 * under "ccsync:{A}:", the braces making A Redis Cluster's hash tag.
 *
 * Release 1 spelled keys differently ("ccsync:a:A:...", "ccsync:lease:A|G",
 * "ccsync:dedup:A:ID", ...); migrate.c moves such a Redis to this layout once,
 * at start, before anything here is used.
 */
#include "ccsync/keys.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static struct key key_format(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static struct key key_format(const char *fmt, ...)
{
    struct key k;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(k.s, sizeof k.s, fmt, ap);
    va_end(ap);
    k.cut = n < 0 || (size_t)n >= sizeof k.s;
    return k;
}

#define ASSOC_KEY(suffix) KEY_ROOT "{%s}:" suffix

struct key key_prefix(const char *association)
{
    return key_format(ASSOC_KEY(""), association);
}

struct key key_association(const char *association)
{
    return key_format(ASSOC_KEY(KEY_ASSOCIATION), association);
}

struct key key_groups(const char *association)
{
    return key_format(ASSOC_KEY(KEY_GROUPS), association);
}

struct key key_group(const char *association, const char *group)
{
    return key_format(ASSOC_KEY(KEY_GROUP "%s"), association, group);
}

struct key key_group_folding(const char *association, const char *group)
{
    return key_format(ASSOC_KEY(KEY_GROUP "%s" KEY_FOLDING), association, group);
}

struct key key_group_members(const char *association, const char *group)
{
    return key_format(ASSOC_KEY(KEY_GROUP_MEMBERS "%s"), association, group);
}

struct key key_applied(const char *association, const char *group)
{
    return key_format(ASSOC_KEY(KEY_APPLIED "%s"), association, group);
}

struct key key_member(const char *association, const char *member)
{
    return key_format(ASSOC_KEY(KEY_MEMBER "%s"), association, member);
}

struct key key_member_groups(const char *association, const char *member)
{
    return key_format(ASSOC_KEY(KEY_MEMBER_GROUPS "%s"), association, member);
}

struct key key_member_events(const char *association, const char *member)
{
    return key_format(ASSOC_KEY(KEY_MEMBER_EVENTS "%s"), association, member);
}

struct key key_audit(const char *association)
{
    return key_format(ASSOC_KEY(KEY_AUDIT), association);
}

struct key key_field_map(const char *association)
{
    return key_format(ASSOC_KEY(KEY_FIELD_MAP), association);
}

struct key key_fields_sent(const char *association, const char *group)
{
    return key_format(ASSOC_KEY(KEY_FIELDS_SENT "%s"), association, group);
}

struct key key_group_tag(const char *association, const char *group)
{
    return key_format(ASSOC_KEY(KEY_GROUP_TAG "%s"), association, group);
}

struct key key_dedup(const char *association, const char *webhook_id)
{
    return key_format(ASSOC_KEY(KEY_DEDUP "%s"), association, webhook_id);
}

struct key key_lease(const char *association, const char *group)
{
    return key_format(ASSOC_KEY(KEY_LEASE "%s"), association, group);
}

struct key key_reconcile_lease(const char *association)
{
    return key_format(ASSOC_KEY(KEY_RECONCILE_LEASE), association);
}

struct key key_reconcile_asked(const char *association)
{
    return key_format(ASSOC_KEY(KEY_RECONCILE_ASKED), association);
}

struct key key_acts_out(const char *association)
{
    return key_format(ASSOC_KEY(KEY_ACTS_OUT), association);
}

struct key key_refresh_lock(const char *association)
{
    return key_format(ASSOC_KEY(KEY_REFRESH_LOCK), association);
}

struct key key_budget(const char *app, const char *what)
{
    return key_format(KEY_ROOT "cc:{%s}:%s", app && app[0] ? app : "default", what);
}

struct key key_schedule_member(const char *association, const char *group)
{
    return key_format("%s|%s", association, group);
}

struct key key_dirty(const char *association)
{
    return key_format(ASSOC_KEY(KEY_ASSOC_DIRTY), association);
}

struct key key_tokens(const char *association)
{
    return key_format(ASSOC_KEY(KEY_TOKENS), association);
}

struct key key_token_uses(const char *association)
{
    return key_format(ASSOC_KEY(KEY_TOKEN_USES), association);
}

struct key key_instance(const char *instance)
{
    return key_format(KEY_ROOT "instance:%s", instance);
}

int key_lease_parse(const char *key, char *association, size_t a_size, char *group, size_t g_size)
{
    size_t root = strlen(KEY_ROOT "{");
    if (strncmp(key, KEY_ROOT "{", root) != 0)
        return -1;
    const char *a = key + root;
    const char *close = strstr(a, "}:" KEY_LEASE);
    if (!close || (size_t)(close - a) >= a_size)
        return -1;
    const char *g = close + strlen("}:" KEY_LEASE);
    if (!g[0] || strlen(g) >= g_size)
        return -1;
    snprintf(association, a_size, "%.*s", (int)(close - a), a);
    snprintf(group, g_size, "%s", g);
    return 0;
}

struct key key_notify(const char *association)
{
    return key_format(ASSOC_KEY(KEY_NOTIFY), association);
}

struct key key_notify_events(const char *association)
{
    return key_format(ASSOC_KEY(KEY_NOTIFY_EVENTS), association);
}

struct key key_notify_lease(const char *association)
{
    return key_format(ASSOC_KEY(KEY_NOTIFY_LEASE), association);
}

struct key key_events(const char *association)
{
    return key_format(ASSOC_KEY(KEY_ASSOC_EVENTS), association);
}

struct key key_removed(const char *association)
{
    return key_format(ASSOC_KEY(KEY_REMOVED), association);
}

struct key key_staged(const char *association, const char *token)
{
    return key_format(ASSOC_KEY(KEY_STAGED "%s"), association, token);
}

struct key key_dead_body(const char *body_id)
{
    return key_format(KEY_DEAD_BODY "%s", body_id);
}
