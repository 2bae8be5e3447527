/*
 * groupstore.c - a group's records in Redis for the sync engine (see
 * groupstore.h): the group hash, its applied state and its members. Keys come
 * from keys.h only; the engine's other files never format a command on them.
 *
 * Every write of a sync is fenced: it runs inside a script that first checks
 * that the group's lease still holds the writer's token (fence), so a process
 * that stalled past its lease (a pause, a swap storm) while another took the
 * group over writes nothing when it wakes up; Redis answers FENCED instead.
 */
#include "ccsync/groupstore.h"

#include <hiredis/hiredis.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccsync/facts.h"
#include "ccsync/keys.h"
#include "ccsync/log.h"
#include "ccsync/metrics.h"
#include "ccsync/model.h"
#include "ccsync/notify.h"
#include "ccsync/script.h"
#include "ccsync/store.h"
#include "ccsync/webhook.h"

/* Runs a command answered by an integer: its value, or STORE_ERR. */
static long long integer_command(redisContext *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static long long integer_command(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    long long v = STORE_ERR;
    if (store_reply_ok(c, r) && r->type == REDIS_REPLY_INTEGER)
        v = r->integer;
    freeReplyObject(r);
    return v;
}

/* A hash's fields and values (HGETALL), or NULL. Caller frees. */
static redisReply *hash_read(redisContext *c, const struct key *key)
{
    redisReply *r = store_command(c, "HGETALL %s", key->s);
    if (r && r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

static void field_copy(char *dst, size_t size, const redisReply *v)
{
    dst[0] = '\0';
    if (v && v->type == REDIS_REPLY_STRING)
        snprintf(dst, size, "%.*s", (int)v->len, v->str);
}

static bool field_is(const redisReply *v, const char *value)
{
    return v->type == REDIS_REPLY_STRING && strcmp(v->str, value) == 0;
}

/* ---- fenced writes ---- */

/* KEYS[1] the group's lease, KEYS[2] the key written. ARGV[1] the writer's
 * token, ARGV[2] the command, ARGV[3..] its arguments after the key. */
static const char fenced_script[] =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then\n"
    "  return redis.error_reply('FENCED the group lease is held by another worker')\n"
    "end\n"
    "return redis.call(ARGV[2], KEYS[2], unpack(ARGV, 3))\n";

#define WRITE_MAX_ARGS 24

/* The argument vector of one write: EVAL's (from "2": the key count) when
 * fenced, else the plain command's. Returns the count. */
static int write_argv(const char **argv, const struct key *lease, const struct key *key,
                      const char *fence, const char *cmd, int n, const char *const *args)
{
    int k = 0;
    if (fence) {
        argv[k++] = "2";
        argv[k++] = lease->s;
        argv[k++] = key->s;
        argv[k++] = fence;
        argv[k++] = cmd;
    } else {
        argv[k++] = cmd;
        argv[k++] = key->s;
    }
    for (int i = 0; i < n; i++)
        argv[k++] = args[i];
    return k;
}

/* Runs cmd on key with n arguments; fenced by the group's lease when fence
 * (the writer's token) is given, plain when NULL (no lease is held: a test, or
 * a caller that is not a sync). STORE_OK, or STORE_ERR (FENCED logged). */
static redisReply *group_write_reply(redisContext *c, const char *association, const char *group,
                                     const char *fence, const struct key *key, const char *cmd,
                                     int n, const char *const *args)
{
    const char *argv[WRITE_MAX_ARGS + 5];
    if (n > WRITE_MAX_ARGS)
        return NULL;
    struct key lease = key_lease(association, group);
    int k = write_argv(argv, &lease, key, fence, cmd, n, args);
    redisReply *r = fence ? script_eval(c, fenced_script, 2, k - 1, argv + 1)
                          : redisCommandArgv(c, k, argv, NULL);
    if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "FENCED", 6) == 0) {
        log_warn("write_fenced", LOG_STR("association", association), LOG_STR("group", group),
                 LOG_STR("command", cmd), LOG_STR("why", "the group lease is another's"));
        metrics_inc("ccsync_fenced_writes_total", "");
    }
    return r;
}

static int group_write(redisContext *c, const char *association, const char *group,
                       const char *fence, const struct key *key, const char *cmd, int n,
                       const char *const *args)
{
    redisReply *r = group_write_reply(c, association, group, fence, key, cmd, n, args);
    int rc = store_reply_ok(c, r) ? STORE_OK : STORE_ERR;
    freeReplyObject(r);
    return rc;
}

/* The same, pipelined (redisAppendCommandArgv): the caller drains the reply.
 * EVAL rather than EVALSHA: a pipeline cannot fall back after NOSCRIPT. */
static void group_append_write(redisContext *c, const char *association, const char *group,
                               const char *fence, const struct key *key, const char *cmd, int n,
                               const char *const *args)
{
    const char *argv[WRITE_MAX_ARGS + 7];
    struct key lease = key_lease(association, group);
    int k = 0;
    if (fence) {
        argv[k++] = "EVAL";
        argv[k++] = fenced_script;
    }
    k += write_argv(argv + k, &lease, key, fence, cmd, n, args);
    redisAppendCommandArgv(c, k, argv, NULL);
}

/* A write of string arguments, NULL-terminated. */
#define GROUP_WRITE(c, a, g, fence, key, cmd, ...)                                                 \
    group_write_v(c, a, g, fence, key, cmd, (const char *const[]){__VA_ARGS__, NULL})

static int group_write_v(redisContext *c, const char *association, const char *group,
                         const char *fence, const struct key *key, const char *cmd,
                         const char *const *args)
{
    int n = 0;
    while (args[n])
        n++;
    return group_write(c, association, group, fence, key, cmd, n, args);
}

/* ---- the group hash ---- */

int group_load(redisContext *c, const char *association, const char *group, struct group_state *gs)
{
    memset(gs, 0, sizeof *gs);
    redisReply *r = store_command(c,
                                  "HMGET %s name sync deleted resync list_id list_name list_state "
                                  "journal gen fact_ts verify",
                                  key_group(association, group).s);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 11) {
        freeReplyObject(r);
        return STORE_ERR;
    }
    char gen[32];
    gs->exists = r->element[9]->type == REDIS_REPLY_STRING;
    field_copy(gs->name, sizeof gs->name, r->element[0]);
    gs->sync = field_is(r->element[1], "1");
    gs->deleted = field_is(r->element[2], "1");
    gs->resync = field_is(r->element[3], "1");
    field_copy(gs->list_id, sizeof gs->list_id, r->element[4]);
    field_copy(gs->list_name, sizeof gs->list_name, r->element[5]);
    gs->list_deleted_in_cc = field_is(r->element[6], "deleted_in_cc");
    field_copy(gs->journal, sizeof gs->journal, r->element[7]);
    field_copy(gen, sizeof gen, r->element[8]);
    gs->gen = atoll(gen);
    gs->verify = field_is(r->element[10], "1");
    freeReplyObject(r);
    return STORE_OK;
}

int group_is_folding(redisContext *c, const char *association, const char *group)
{
    long long n = integer_command(c, "EXISTS %s", key_group_folding(association, group).s);
    return n < 0 ? STORE_ERR : n == 1;
}

int group_ids_load(redisContext *c, const char *association, char ***ids, size_t *n)
{
    *ids = NULL;
    *n = 0;
    redisReply *r = store_command(c, "SMEMBERS %s", key_groups(association).s);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        return STORE_ERR;
    }
    *ids = calloc(r->elements ? r->elements : 1, sizeof **ids);
    for (size_t i = 0; *ids && i < r->elements; i++)
        (*ids)[(*n)++] = strdup(r->element[i]->str);
    freeReplyObject(r);
    return *ids ? STORE_OK : STORE_ERR;
}

void group_ids_free(char **ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
}

int group_set_error(redisContext *c, const char *association, const char *group, const char *fence,
                    const char *state, const char *code, const char *message)
{
    char now[32];
    rfc3339_format(store_now_ns(), now, sizeof now);
    struct key key = key_group(association, group);
    if (GROUP_WRITE(c, association, group, fence, &key, "HSETNX", "err_since", now) != STORE_OK ||
        GROUP_WRITE(c, association, group, fence, &key, "HSET", "state", state, "err_code", code,
                    "err_msg", message) != STORE_OK)
        return STORE_ERR;
    /* a group entering error is a notification (notify.c: once per error) */
    return strcmp(state, "error") == 0 ? notify_group_error(c, association, group, code, message)
                                       : STORE_OK;
}

int group_clear_error(redisContext *c, const char *association, const char *group,
                      const char *fence)
{
    struct key key = key_group(association, group);
    return GROUP_WRITE(c, association, group, fence, &key, "HDEL", "err_code", "err_msg",
                       "err_since");
}

int group_set_syncing(redisContext *c, const char *association, const char *group,
                      const char *fence)
{
    struct key key = key_group(association, group);
    return GROUP_WRITE(c, association, group, fence, &key, "HSET", "state", "syncing");
}

int group_set_synced(redisContext *c, const char *association, const char *group, const char *fence)
{
    char now[32];
    rfc3339_format(store_now_ns(), now, sizeof now);
    struct key key = key_group(association, group);
    if (GROUP_WRITE(c, association, group, fence, &key, "HSET", "state", "synced", "last_synced_at",
                    now) != STORE_OK ||
        notify_group_synced(c, association, group) != STORE_OK) /* recovered, if it was in error */
        return STORE_ERR;
    return group_clear_error(c, association, group, fence);
}

int group_write_counts(redisContext *c, const char *association, const char *group,
                       const char *fence, const struct plan *pl)
{
    const struct plan_counts *k = &pl->counts;
    long long v[] = {(long long)k->members,
                     (long long)k->no_email,
                     (long long)k->invalid_email,
                     (long long)k->duplicate_email,
                     (long long)k->do_not_email,
                     (long long)k->unsubscribed,
                     (long long)k->rejected,
                     (long long)k->in_list,
                     (long long)(pl->pending.imports + pl->pending.removes)};
    static const char *fields[] = {"c_members",         "c_no_email",     "c_invalid_email",
                                   "c_duplicate_email", "c_do_not_email", "c_unsubscribed",
                                   "c_rejected",        "c_in_list",      "pending"};
    enum { N = sizeof v / sizeof v[0] };
    char nums[N][24];
    const char *args[2 * N];
    for (int i = 0; i < N; i++) {
        snprintf(nums[i], sizeof nums[i], "%lld", v[i]);
        args[2 * i] = fields[i];
        args[2 * i + 1] = nums[i];
    }
    struct key key = key_group(association, group);
    return group_write(c, association, group, fence, &key, "HSET", 2 * N, args);
}

int group_set_disabled(redisContext *c, const char *association, const char *group,
                       const char *fence)
{
    struct key key = key_group(association, group), applied = key_applied(association, group);
    /* The counts describe the list: with sync off there is none, as for a
     * group that never synced. */
    if (GROUP_WRITE(c, association, group, fence, &key, "HSET", "state", "disabled", "pending", "0",
                    "c_members", "0", "c_no_email", "0", "c_invalid_email", "0",
                    "c_duplicate_email", "0", "c_do_not_email", "0", "c_unsubscribed", "0",
                    "c_rejected", "0", "c_in_list", "0") != STORE_OK ||
        GROUP_WRITE(c, association, group, fence, &key, "HDEL", "list_id", "list_name",
                    "list_state", "journal", "resync") != STORE_OK ||
        group_write(c, association, group, fence, &applied, "DEL", 0, NULL) != STORE_OK)
        return STORE_ERR;
    return group_clear_error(c, association, group, fence);
}

int group_clear_resync(redisContext *c, const char *association, const char *group,
                       const char *fence)
{
    struct key key = key_group(association, group);
    return GROUP_WRITE(c, association, group, fence, &key, "HDEL", "resync");
}

int group_clear_verify(redisContext *c, const char *association, const char *group,
                       const char *fence)
{
    struct key key = key_group(association, group);
    return GROUP_WRITE(c, association, group, fence, &key, "HDEL", "verify");
}

int group_set_verify(redisContext *c, const char *association, const char *group)
{
    return store_exec(c, "HSET %s verify 1", key_group(association, group).s);
}

int group_list_count(redisContext *c, const char *association, const char *group, long *in_list,
                     bool *settled)
{
    redisReply *k =
        store_command(c, "HMGET %s c_in_list pending state", key_group(association, group).s);
    if (!k)
        return STORE_ERR;
    int rc = 0;
    if (k->type == REDIS_REPLY_ARRAY && k->elements == 3 &&
        k->element[0]->type == REDIS_REPLY_STRING) {
        *in_list = atol(k->element[0]->str);
        *settled = field_is(k->element[1], "0") && field_is(k->element[2], "synced");
        rc = 1;
    }
    freeReplyObject(k);
    return rc;
}

int group_link_list(redisContext *c, const char *association, const char *group, const char *fence,
                    const char *list_id, const char *name)
{
    struct key key = key_group(association, group), applied = key_applied(association, group);
    if (GROUP_WRITE(c, association, group, fence, &key, "HSET", "list_id", list_id, "list_name",
                    name, "list_state", "active") != STORE_OK)
        return STORE_ERR;
    return group_write(c, association, group, fence, &applied, "DEL", 0, NULL);
}

int group_unlink_list(redisContext *c, const char *association, const char *group,
                      const char *fence, bool drop_journal)
{
    struct key key = key_group(association, group), applied = key_applied(association, group);
    if (GROUP_WRITE(c, association, group, fence, &key, "HDEL", "list_id", "list_name",
                    "list_state") != STORE_OK ||
        (drop_journal &&
         GROUP_WRITE(c, association, group, fence, &key, "HDEL", "journal") != STORE_OK))
        return STORE_ERR;
    return group_write(c, association, group, fence, &applied, "DEL", 0, NULL);
}

int group_rename_list(redisContext *c, const char *association, const char *group, const char *name)
{
    struct key key = key_group(association, group);
    redisReply *r = store_command(c, "HMGET %s list_id list_name", key.s);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        freeReplyObject(r);
        return STORE_ERR;
    }
    const redisReply *id = r->element[0], *old = r->element[1];
    int rc = store_exec(c, "HSET %s list_name %s", key.s, name);
    /* a rename seen by reconcile is a notification (notify.c) */
    if (rc == STORE_OK)
        rc = notify_list_renamed(c, association, group,
                                 id->type == REDIS_REPLY_STRING ? id->str : "",
                                 old->type == REDIS_REPLY_STRING ? old->str : "", name);
    freeReplyObject(r);
    return rc;
}

int group_mark_list_deleted(redisContext *c, const char *association, const char *group,
                            const char *fence)
{
    struct key key = key_group(association, group);
    return GROUP_WRITE(c, association, group, fence, &key, "HSET", "list_state", "deleted_in_cc");
}

/* ---- the rest of a sync's writes: retries, tags, audit ---- */

int group_count_attempt(redisContext *c, const char *association, const char *group,
                        const char *fence, long *attempts)
{
    struct key key = key_group(association, group);
    const char *args[] = {"attempts", "1"};
    redisReply *r = group_write_reply(c, association, group, fence, &key, "HINCRBY", 2, args);
    int rc = store_reply_ok(c, r) && r->type == REDIS_REPLY_INTEGER ? STORE_OK : STORE_ERR;
    *attempts = rc == STORE_OK ? (long)r->integer : 1;
    freeReplyObject(r);
    return rc;
}

int group_clear_attempts(redisContext *c, const char *association, const char *group,
                         const char *fence)
{
    struct key key = key_group(association, group);
    return GROUP_WRITE(c, association, group, fence, &key, "HDEL", "attempts");
}

int group_tag_store(redisContext *c, const char *association, const char *group, const char *fence,
                    const char *tag_id, const char *tag_name)
{
    struct key key = key_group(association, group);
    return GROUP_WRITE(c, association, group, fence, &key, "HSET", "tag_id", tag_id, "tag_name",
                       tag_name);
}

int group_tag_forget(redisContext *c, const char *association, const char *group, const char *fence)
{
    struct key tagged = key_group_tag(association, group), key = key_group(association, group);
    if (group_write(c, association, group, fence, &tagged, "DEL", 0, NULL) != STORE_OK)
        return STORE_ERR;
    return GROUP_WRITE(c, association, group, fence, &key, "HDEL", "tag_id", "tag_name");
}

void group_tag_append(redisContext *c, const char *association, const char *group,
                      const char *fence, const char *email, const char *contact_id)
{
    struct key key = key_group_tag(association, group);
    const char *args[] = {email, contact_id};
    group_append_write(c, association, group, fence, &key, contact_id ? "HSET" : "HDEL",
                       contact_id ? 2 : 1, args);
}

/* KEYS[1] the group's lease, KEYS[2] key_audit. ARGV[1] the writer's token,
 * ARGV[2..7] facts_audit's entry (at, group, action, list id, list name,
 * detail), encoded as facts.c's audit script does. */
static const char audit_fenced_script[] =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then\n"
    "  return redis.error_reply('FENCED the group lease is held by another worker')\n"
    "end\n"
    "local e = cjson.encode({at = ARGV[2], group_id = ARGV[3], action = ARGV[4], "
    "list_id = ARGV[5] ~= '' and ARGV[5] or cjson.null, list_name = ARGV[6] ~= '' and ARGV[6] "
    "or cjson.null, detail = ARGV[7]})\n"
    "redis.call('LPUSH', KEYS[2], e)\n"
    "redis.call('LTRIM', KEYS[2], 0, 9999)\n"
    "return 1\n";

int group_audit(redisContext *c, const char *association, const char *group, const char *fence,
                const char *action, const char *list_id, const char *list_name, const char *detail)
{
    if (!fence)
        return facts_audit(c, association, group, action, list_id, list_name, detail);
    char now[32];
    rfc3339_format(store_now_ns(), now, sizeof now);
    struct key lease = key_lease(association, group), audit = key_audit(association);
    const char *args[] = {lease.s,
                          audit.s,
                          fence,
                          now,
                          group,
                          action,
                          list_id ? list_id : "",
                          list_name ? list_name : "",
                          detail ? detail : ""};
    redisReply *r = script_eval(c, audit_fenced_script, 2, 9, args);
    if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "FENCED", 6) == 0) {
        log_warn("write_fenced", LOG_STR("association", association), LOG_STR("group", group),
                 LOG_STR("command", "audit"), LOG_STR("why", "the group lease is another's"));
        metrics_inc("ccsync_fenced_writes_total", "");
    }
    int rc = store_reply_ok(c, r) ? STORE_OK : STORE_ERR;
    freeReplyObject(r);
    return rc;
}

/*
 * Forgets a deleted group whose list is gone, keeping a tombstone (fact_ts,
 * deleted, gen): without it a late group.created/updated older than the
 * deletion would bring the group, and a new CC list, back. Does nothing when a
 * newer fact revived the group since it was loaded.
 * KEYS: the group, its members, its applied state, the groups set, the group's
 * lease. ARGV: group id, the writer's token ("" when unfenced).
 */
static const char forget_group_script[] =
    "if ARGV[2] ~= '' and redis.call('GET', KEYS[5]) ~= ARGV[2] then\n"
    "  return redis.error_reply('FENCED the group lease is held by another worker')\n"
    "end\n"
    "local f = redis.call('HMGET', KEYS[1], 'deleted', 'fact_ts', 'gen')\n"
    "if f[1] ~= '1' then return 0 end\n"
    "redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])\n"
    "redis.call('HSET', KEYS[1], 'deleted', '1', 'fact_ts', f[2], 'gen', f[3] or '0')\n"
    "redis.call('SREM', KEYS[4], ARGV[1])\n"
    "return 1\n";

int group_forget(redisContext *c, const char *association, const char *group, const char *fence)
{
    struct key keys[] = {key_group(association, group), key_group_members(association, group),
                         key_applied(association, group), key_groups(association),
                         key_lease(association, group)};
    const char *args[] = {keys[0].s, keys[1].s, keys[2].s,         keys[3].s,
                          keys[4].s, group,     fence ? fence : ""};
    redisReply *r = script_eval(c, forget_group_script, 5, 7, args);
    int rc = store_reply_ok(c, r) ? STORE_OK : STORE_ERR;
    freeReplyObject(r);
    return rc;
}

int group_journal_write(redisContext *c, const char *association, const char *group,
                        const char *fence, const char *json)
{
    struct key key = key_group(association, group);
    return GROUP_WRITE(c, association, group, fence, &key, "HSET", "journal", json);
}

int group_journal_clear(redisContext *c, const char *association, const char *group,
                        const char *fence)
{
    struct key key = key_group(association, group);
    return GROUP_WRITE(c, association, group, fence, &key, "HDEL", "journal");
}

/* ---- applied state ---- */

void applied_free(struct applied_set *s)
{
    for (size_t i = 0; i < s->n * 5; i++)
        free(s->strings[i]);
    free(s->strings);
    free(s->items);
    memset(s, 0, sizeof *s);
}

/* Adds one entry ["on"|"unsub"|"rej", cid, first, last(, fields digest)] of email to
 * s; a malformed entry is skipped. */
static void applied_add(struct applied_set *s, const char *email, const char *json)
{
    json_object *a = json_tokener_parse(json);
    size_t len = a && json_object_is_type(a, json_type_array) ? json_object_array_length(a) : 0;
    if (len != 4 && len != 5) {
        json_object_put(a);
        return;
    }
    char **str = &s->strings[s->n * 5];
    str[0] = strdup(email);
    for (size_t k = 1; k < len; k++)
        str[k] = strdup(json_object_get_string(json_object_array_get_idx(a, k)));
    str[4] = len == 5 ? str[4] : strdup("");
    const char *st = json_object_get_string(json_object_array_get_idx(a, 0));
    struct applied_contact *ac = &s->items[s->n++];
    ac->email = str[0];
    ac->contact_id = str[1];
    ac->first_name = str[2];
    ac->last_name = str[3];
    ac->fields = str[4];
    ac->status = strcmp(st, "unsub") == 0 ? APPLIED_UNSUBSCRIBED
                 : strcmp(st, "rej") == 0 ? APPLIED_REJECTED
                                          : APPLIED_ON_LIST;
    json_object_put(a);
}

int applied_load(redisContext *c, const char *association, const char *group, struct applied_set *s)
{
    memset(s, 0, sizeof *s);
    struct key key = key_applied(association, group);
    redisReply *r = hash_read(c, &key);
    if (!r)
        return STORE_ERR;
    size_t n = r->elements / 2;
    s->items = calloc(n ? n : 1, sizeof *s->items);
    s->strings = calloc(n ? n * 5 : 1, sizeof *s->strings);
    if (!s->items || !s->strings) {
        freeReplyObject(r);
        applied_free(s);
        return STORE_ERR;
    }
    for (size_t i = 0; i < n; i++)
        applied_add(s, r->element[2 * i]->str, r->element[2 * i + 1]->str);
    freeReplyObject(r);
    return STORE_OK;
}

/* Without mapped fields the entry keeps its four elements, as before §12. */
static char *applied_json(const char *st, const char *cid, const char *fn, const char *ln,
                          const char *fields)
{
    json_object *a = json_object_new_array();
    json_object_array_add(a, json_object_new_string(st));
    json_object_array_add(a, json_object_new_string(cid ? cid : ""));
    json_object_array_add(a, json_object_new_string(fn ? fn : ""));
    json_object_array_add(a, json_object_new_string(ln ? ln : ""));
    if (fields != NULL && fields[0] != '\0')
        json_object_array_add(a, json_object_new_string(fields));
    char *s = strdup(json_object_to_json_string_ext(a, JSON_C_TO_STRING_PLAIN));
    json_object_put(a);
    return s;
}

void applied_append_put(redisContext *c, const char *association, const char *group,
                        const char *fence, const char *email, const char *status,
                        const char *contact_id, const char *first_name, const char *last_name,
                        const char *fields)
{
    char *v = applied_json(status, contact_id, first_name, last_name, fields);
    struct key key = key_applied(association, group);
    const char *args[] = {email, v};
    group_append_write(c, association, group, fence, &key, "HSET", 2, args);
    free(v);
}

void applied_append_remove(redisContext *c, const char *association, const char *group,
                           const char *fence, const char *email)
{
    struct key key = key_applied(association, group);
    group_append_write(c, association, group, fence, &key, "HDEL", 1, &email);
}

int applied_remove(redisContext *c, const char *association, const char *group, const char *fence,
                   const char *email)
{
    struct key key = key_applied(association, group);
    return group_write(c, association, group, fence, &key, "HDEL", 1, &email);
}

int applied_has(redisContext *c, const char *association, const char *group, const char *email)
{
    long long n = integer_command(c, "HEXISTS %s %s", key_applied(association, group).s, email);
    return n < 0 ? STORE_ERR : n == 1;
}

/* KEYS: the applied hash, the group's lease. ARGV: email, contact id, the
 * writer's token ("" when unfenced). */
static const char set_cid_script[] =
    "if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[3] then\n"
    "  return redis.error_reply('FENCED the group lease is held by another worker')\n"
    "end\n"
    "local v = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "if not v then return 0 end\n"
    "local a = cjson.decode(v)\n"
    "a[2] = ARGV[2]\n"
    "redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(a))\n"
    "return 1\n";

int applied_set_contact_id(redisContext *c, const char *association, const char *group,
                           const char *fence, const char *email, const char *contact_id)
{
    struct key key = key_applied(association, group), lease = key_lease(association, group);
    const char *args[] = {key.s, lease.s, email, contact_id, fence ? fence : ""};
    redisReply *r = script_eval(c, set_cid_script, 2, 5, args);
    int rc = store_reply_ok(c, r) ? STORE_OK : STORE_ERR;
    freeReplyObject(r);
    return rc;
}

int applied_note_contact_id(struct applied_set *s, size_t i, const char *contact_id)
{
    char *id = strdup(contact_id);
    if (id == NULL || i >= s->n) {
        free(id);
        return STORE_ERR;
    }
    free(s->strings[i * 5 + 1]);
    s->strings[i * 5 + 1] = id;
    s->items[i].contact_id = id;
    return STORE_OK;
}

/* ---- fields in flight (§12) ---- */

/* Pairs a command of fields_sent_append: Lua's unpack (the fenced write) takes
 * at most about 8,000 values, and a short command keeps Redis free for others. */
#define FIELDS_SENT_CHUNK 500

size_t fields_sent_append(redisContext *c, const char *association, const char *group,
                          const char *fence, const char *const *emails, const char *const *digests,
                          size_t n)
{
    struct key key = key_fields_sent(association, group), lease = key_lease(association, group);
    const char **argv = malloc((2 * FIELDS_SENT_CHUNK + 7) * sizeof *argv);
    if (argv == NULL) {
        /* nothing known: the read-back re-sends */
        group_append_write(c, association, group, fence, &key, "DEL", 0, NULL);
        return 1;
    }
    size_t commands = 0;
    for (size_t from = 0; from < n; from += FIELDS_SENT_CHUNK) {
        size_t to = n - from < FIELDS_SENT_CHUNK ? n : from + FIELDS_SENT_CHUNK;
        int k = 0;
        if (fence)
            argv[k++] = "EVAL";
        if (fence)
            argv[k++] = fenced_script;
        k += write_argv(argv + k, &lease, &key, fence, "HSET", 0, NULL);
        for (size_t i = from; i < to; i++) {
            argv[k++] = emails[i];
            argv[k++] = digests[i];
        }
        redisAppendCommandArgv(c, k, argv, NULL);
        commands++;
    }
    free(argv);
    return commands;
}

static int fields_sent_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int fields_sent_load(redisContext *c, const char *association, const char *group,
                     struct fields_sent *s)
{
    memset(s, 0, sizeof *s);
    struct key key = key_fields_sent(association, group);
    redisReply *r = hash_read(c, &key);
    if (!r)
        return STORE_ERR;
    size_t n = r->elements / 2;
    /* pairs kept together: emails[i] and digests[i] in one array of 2n, sorted by email */
    char **pairs = calloc(n ? 2 * n : 1, sizeof *pairs);
    if (pairs == NULL) {
        freeReplyObject(r);
        return STORE_ERR;
    }
    for (size_t i = 0; i < n; i++) {
        size_t el = strlen(r->element[2 * i]->str) + 1;
        pairs[i] = malloc(el + strlen(r->element[2 * i + 1]->str) + 1);
        if (pairs[i] == NULL) {
            s->emails = pairs;
            s->n = i;
            fields_sent_free(s);
            freeReplyObject(r);
            return STORE_ERR;
        }
        memcpy(pairs[i], r->element[2 * i]->str, el);
        strcpy(pairs[i] + el, r->element[2 * i + 1]->str);
    }
    freeReplyObject(r);
    qsort(pairs, n, sizeof *pairs, fields_sent_cmp);
    s->emails = pairs;
    s->n = n;
    return STORE_OK;
}

static int fields_sent_key_cmp(const void *key, const void *elem)
{
    return strcmp((const char *)key, *(char *const *)elem);
}

const char *fields_sent_get(const struct fields_sent *s, const char *email)
{
    char **hit =
        s->n ? bsearch(email, s->emails, s->n, sizeof *s->emails, fields_sent_key_cmp) : NULL;
    return hit && *hit ? *hit + strlen(*hit) + 1 : NULL;
}

void fields_sent_free(struct fields_sent *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->emails[i]);
    free(s->emails);
    memset(s, 0, sizeof *s);
}

int fields_sent_clear(redisContext *c, const char *association, const char *group,
                      const char *fence)
{
    struct key key = key_fields_sent(association, group);
    return group_write(c, association, group, fence, &key, "DEL", 0, NULL);
}

/* ---- members ---- */

void members_free(struct member_set *s)
{
    for (size_t i = 0; i < s->n; i++)
        member_record_clear(&s->records[i]);
    free(s->records);
    free(s->members);
    memset(s, 0, sizeof *s);
}

static int64_t ts_key_to_ns(const char *key)
{
    long long s = 0, ns = 0;
    sscanf(key, "%lld.%lld", &s, &ns);
    return (s - 62135596800LL) * 1000000000LL + ns;
}

/* Reads the records of the k members named by ids (one pipelined HGET each). */
static int members_read_records(redisContext *c, const char *association, const char **ids,
                                const int64_t *joins, size_t k, struct member_set *s)
{
    for (size_t i = 0; i < k; i++)
        redisAppendCommand(c, "HGET %s rec", key_member(association, ids[i]).s);
    for (size_t i = 0; i < k; i++) {
        redisReply *rec = NULL;
        if (redisGetReply(c, (void **)&rec) != REDIS_OK || !rec)
            return STORE_ERR;
        if (rec->type == REDIS_REPLY_STRING &&
            facts_record_parse(rec->str, ids[i], &s->records[s->n]) == 0) {
            s->members[s->n].join_ts_ns = joins[i];
            s->n++;
        }
        freeReplyObject(rec);
    }
    for (size_t i = 0; i < s->n; i++)
        s->members[i].rec = &s->records[i];
    return STORE_OK;
}

int members_load(redisContext *c, const char *association, const char *group, struct member_set *s)
{
    memset(s, 0, sizeof *s);
    struct key key = key_group_members(association, group);
    redisReply *r = hash_read(c, &key);
    if (!r)
        return STORE_ERR;
    size_t n = r->elements / 2;
    s->records = calloc(n ? n : 1, sizeof *s->records);
    s->members = calloc(n ? n : 1, sizeof *s->members);
    int64_t *joins = calloc(n ? n : 1, sizeof *joins);
    const char **ids = calloc(n ? n : 1, sizeof *ids);
    int rc = STORE_ERR;
    if (s->records && s->members && joins && ids) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            const char *v = r->element[2 * i + 1]->str; /* "1|ts|join": an active member */
            if (v[0] != '1' || strlen(v) < 47)
                continue;
            ids[k] = r->element[2 * i]->str;
            joins[k++] = ts_key_to_ns(v + 25);
        }
        rc = members_read_records(c, association, ids, joins, k, s);
    }
    free(joins);
    free(ids);
    freeReplyObject(r);
    if (rc != STORE_OK)
        members_free(s);
    return rc;
}
