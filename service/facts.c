/*
 * facts.c - Novi events → desired state in Redis (see facts.h for the keys).
 *
 * Scripts decide newest-wins inside Redis, where the stored facts are, so two
 * workers folding events of the same member at once cannot interleave badly.
 * A group.members snapshot is folded in chunks (one script per chunk of
 * members, then a sweep, a chunk of the group's members a script, that takes out
 * every member whose membership is older than the snapshot), so no command's
 * cost grows with the snapshot or with every member the group ever had;
 * a crash between chunks is healed by folding the redelivered event again.
 */
#include "ccsync/facts.h"

#include <hiredis/hiredis.h>
#include <json-c/json.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccsync/keys.h"
#include "ccsync/schedule.h"
#include "ccsync/store.h"
#include "ccsync/webhook.h"

#define SNAPSHOT_CHUNK 500
/* Members of a group a sweep script judges at once (an HSCAN COUNT). */
#define SWEEP_CHUNK 500

/* Seconds from 0001-01-01 to 1970-01-01, so every RFC 3339 year is positive. */
#define EPOCH_OFFSET_S 62135596800LL

void facts_ts_key(int64_t ts_ns, char out[FACTS_TS_KEY_SIZE])
{
    int64_t s = ts_ns / 1000000000LL, ns = ts_ns % 1000000000LL;
    if (ns < 0) {
        ns += 1000000000LL;
        s -= 1;
    }
    snprintf(out, FACTS_TS_KEY_SIZE, "%012lld.%09lld", (long long)(s + EPOCH_OFFSET_S),
             (long long)ns);
}

static void add_str(json_object *o, const char *k, const char *v)
{
    if (v)
        json_object_object_add(o, k, json_object_new_string(v));
}

char *facts_record_json(const struct member_record *m)
{
    json_object *o = json_object_new_object();
    add_str(o, "e", m->email);
    add_str(o, "f", m->first_name);
    add_str(o, "l", m->last_name);
    add_str(o, "c", m->company);
    json_object_object_add(o, "t", json_object_new_int(m->type));
    json_object_object_add(o, "d", json_object_new_boolean(m->do_not_email));
    if (m->n_fields > 0) {
        /* in the record's (sorted) order, so an unchanged record stores the same text */
        json_object *x = json_object_new_object();
        for (size_t i = 0; i < m->n_fields; i++)
            add_str(x, m->fields[i].name, m->fields[i].value);
        json_object_object_add(o, "x", x);
    }
    char *s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
    return s;
}

static char *get_str(json_object *o, const char *k)
{
    json_object *v;
    if (!json_object_object_get_ex(o, k, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return strdup(json_object_get_string(v));
}

/* The extra fields of a stored record ("x": {name: value}), sorted by name. */
static void record_fields_parse(json_object *x, struct member_record *m)
{
    size_t n = (size_t)json_object_object_length(x);
    if (n == 0)
        return;
    m->fields = calloc(n, sizeof *m->fields);
    if (m->fields == NULL)
        return;
    json_object_object_foreach(x, key, val)
    {
        if (!json_object_is_type(val, json_type_string))
            continue;
        m->fields[m->n_fields].name = strdup(key);
        m->fields[m->n_fields].value = strdup(json_object_get_string(val));
        m->n_fields++;
    }
}

int facts_record_parse(const char *json, const char *member_id, struct member_record *m)
{
    memset(m, 0, sizeof *m);
    json_object *o = json_tokener_parse(json);
    if (!o || !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        return -1;
    }
    snprintf(m->id, sizeof m->id, "%s", member_id);
    m->email = get_str(o, "e");
    m->first_name = get_str(o, "f");
    m->last_name = get_str(o, "l");
    m->company = get_str(o, "c");
    json_object *v;
    if (json_object_object_get_ex(o, "t", &v))
        m->type = (enum customer_type)json_object_get_int(v);
    if (json_object_object_get_ex(o, "d", &v))
        m->do_not_email = json_object_get_boolean(v);
    m->active = true;
    if (json_object_object_get_ex(o, "x", &v) && json_object_is_type(v, json_type_object))
        record_fields_parse(v, m);
    json_object_put(o);
    return 0;
}

/* Shared Lua: noting when a member left its last group (retention.c deletes
 * the record CCSYNC_RETENTION_DAYS later; joining a group again forgets it);
 * marking a group dirty in the association's schedule (coalesced:
 * an earlier due time is kept), and the association's earliest due, which
 * every fold returns, changed or not, for the caller to wake the association
 * with (schedule.h). The latest due asked for is kept as last_due: the claim
 * lets a burst that is still arriving end before its round starts (schedule.c). */
#define LUA_COMMON                                                                                 \
    SCHEDULE_LUA_EARLIEST                                                                          \
    "local function removed(p, mid)\n"                                                             \
    "  if redis.call('SCARD', p .. '" KEY_MEMBER_GROUPS "' .. mid) == 0 then\n"                    \
    "    local t = redis.call('TIME')\n"                                                           \
    "    redis.call('ZADD', p .. '" KEY_REMOVED                                                    \
    "', 'NX', t[1] * 1000 + math.floor(t[2] / 1000), mid)\n"                                       \
    "  else\n"                                                                                     \
    "    redis.call('ZREM', p .. '" KEY_REMOVED "', mid)\n"                                        \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "local function mark(p, assoc, g, due)\n"                                                      \
    "  redis.call('ZADD', p .. '" KEY_ASSOC_DIRTY "', 'LT', due, g)\n"                             \
    "  redis.call('HINCRBY', p .. '" KEY_GROUP "' .. g, 'gen', 1)\n"                               \
    "  redis.call('HSET', p .. '" KEY_GROUP "' .. g, 'last_due', due)\n"                           \
    "end\n"

/* Shared Lua: recording an entry of a member's history (facts.h), head being
 * the entry's JSON up to its outcome ("" records nothing); and a group's name
 * for a why, its id when it has none. */
#define LUA_HISTORY                                                                                \
    "local function history(p, mid, head, outcome, why)\n"                                         \
    "  if head == '' then return end\n"                                                            \
    "  local hk = p .. '" KEY_MEMBER_EVENTS "' .. mid\n"                                           \
    "  redis.call('LPUSH', hk, head .. ',\"outcome\":\"' .. outcome .. '\",\"why\":' .. "          \
    "cjson.encode(why) .. '}')\n"                                                                  \
    "  redis.call('LTRIM', hk, 0, " MEMBER_EVENTS_LAST ")\n"                                       \
    "end\n"                                                                                        \
    "local function group_name(p, g)\n"                                                            \
    "  local n = redis.call('HGET', p .. '" KEY_GROUP "' .. g, 'name')\n"                          \
    "  if n and n ~= '' then return n end\n"                                                       \
    "  return g\n"                                                                                 \
    "end\n"

#define MEMBER_EVENTS_LAST "19" /* FACTS_MEMBER_EVENTS - 1, for LTRIM */
_Static_assert(FACTS_MEMBER_EVENTS == 20, "MEMBER_EVENTS_LAST follows FACTS_MEMBER_EVENTS");

/* Member fold, its why: what the fold decided, in a few words. joined, left
 * and kept list group names (kept: a change the event asked for that a stored
 * fact no older beat); recchanged is false, 'new record' or 'record updated';
 * older/tie say what beat an event that changed nothing. */
#define LUA_WHY                                                                                    \
    "local function why_of(applied, joined, left, kept, recchanged, older, tie)\n"                 \
    "  if not applied then\n"                                                                      \
    "    if older then return 'ignored', 'older than the stored fact' end\n"                       \
    "    if tie then return 'ignored', 'the same time as the stored fact' end\n"                   \
    "    return 'ignored', 'nothing to change'\n"                                                  \
    "  end\n"                                                                                      \
    "  local parts = {}\n"                                                                         \
    "  if #joined > 0 then parts[#parts + 1] = 'joined ' .. table.concat(joined, ', ') end\n"      \
    "  if #left > 0 then parts[#parts + 1] = 'left ' .. table.concat(left, ', ') end\n"            \
    "  if recchanged then parts[#parts + 1] = recchanged end\n"                                    \
    "  if #kept > 0 then\n"                                                                        \
    "    parts[#parts + 1] = 'the stored fact stands for ' .. table.concat(kept, ', ')\n"          \
    "  end\n"                                                                                      \
    "  if #parts == 0 then return 'applied', 'the same as the stored fact' end\n"                  \
    "  return 'applied', table.concat(parts, ', ')\n"                                              \
    "end\n"

/*
 * Member fold. ARGV: 1 prefix, 2 member id, 3 ts key, 4 record JSON or "",
 * 5 mode (groups | out_all | in_one | out_one | keep), 6 due (ms), 7 association,
 * 8 history head (LUA_HISTORY; "" none), 9.. group ids (the target set for
 * "groups", the one group for in_one/out_one).
 * Linear in the groups named and held: the stored group list ("gset",
 * ",g1,g2,") is read into a table once and written with table.concat, never
 * searched per group; the member's own hash is written after the loops. The
 * history entry is written by this same call, so an event is in the history
 * if and only if it was folded; a snapshot's (in_one, out_one) only when it
 * moved the member in or out of the group.
 */
static const char member_script[] = LUA_COMMON LUA_HISTORY LUA_WHY
    "local p, mid, ts, rec, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]\n"
    "local due, assoc, head = tonumber(ARGV[6]), ARGV[7], ARGV[8]\n"
    "local mkey, mgkey = p .. '" KEY_MEMBER "' .. mid, p .. '" KEY_MEMBER_GROUPS "' .. mid\n"
    "local dirty = {}\n"
    "local joined, left, kept, wrote, older, tie = {}, {}, {}, false, false, false\n"
    "local function beaten(stored)\n"
    "  if stored > ts then older = true else tie = true end\n"
    "end\n"
    "local cur = redis.call('HMGET', mkey, 'ts', 'rec', 'gts', 'gset')\n"
    "local mfields = {}\n"
    "local recchanged = false\n"
    "if rec ~= '' and ((not cur[1]) or ts > cur[1]) then\n"
    "  mfields = {'rec', rec, 'ts', ts}\n"
    "  if cur[2] ~= rec then recchanged = cur[2] and 'record updated' or 'new record' end\n"
    "elseif rec ~= '' then\n"
    "  beaten(cur[1])\n"
    "  if cur[2] ~= rec then kept[#kept + 1] = 'the record' end\n"
    "end\n"
    "local gts, gset = cur[3], cur[4] or ''\n"
    "local named = nil\n"
    "local function in_gset(g)\n"
    "  if not named then\n"
    "    named = {}\n"
    "    for x in string.gmatch(gset, '[^,]+') do named[x] = true end\n"
    "  end\n"
    "  return named[g]\n"
    "end\n"
    "local function setm(g, inflag)\n"
    "  local gm = p .. '" KEY_GROUP_MEMBERS "' .. g\n"
    "  local cur = redis.call('HGET', gm, mid)\n"
    "  local curin, join = false, ts\n"
    "  if cur then curin = string.sub(cur, 1, 1) == '1' end\n"
    "  local function beat(stored)\n"
    "    beaten(stored)\n"
    "    if inflag ~= curin then kept[#kept + 1] = group_name(p, g) end\n"
    "  end\n"
    "  if cur then\n"
    "    if string.sub(cur, 3, 24) >= ts then beat(string.sub(cur, 3, 24)); return end\n"
    "    if curin then join = string.sub(cur, 26) end\n"
    "  end\n"
    /* A newer fact that did not name this member in g beats an older join even
     * when it was folded first: the member's own group list (or removal), or
     * the group's newest snapshot. */
    "  if inflag and gts and gts >= ts and not in_gset(g) then\n"
    "    beat(gts); return\n"
    "  end\n"
    "  local snap = redis.call('HGET', p .. '" KEY_GROUP "' .. g, 'snap_ts')\n"
    "  if inflag and snap and snap >= ts then beat(snap); return end\n"
    "  wrote = true\n"
    "  if inflag then\n"
    "    redis.call('HSET', gm, mid, '1|' .. ts .. '|' .. join)\n"
    "    redis.call('SADD', mgkey, g)\n"
    "    if not curin then dirty[g] = true; joined[#joined + 1] = group_name(p, g) end\n"
    "  else\n"
    "    redis.call('HSET', gm, mid, '0|' .. ts)\n"
    "    redis.call('SREM', mgkey, g)\n"
    "    if curin then dirty[g] = true; left[#left + 1] = group_name(p, g) end\n"
    "  end\n"
    "end\n"
    "if (mode == '" KEY_GROUPS "' or mode == 'out_all') then\n"
    "  if (not gts) or ts > gts then\n"
    "    local list = ','\n"
    "    if mode == '" KEY_GROUPS "' and #ARGV >= 9 then\n"
    "      list = ',' .. table.concat(ARGV, ',', 9, #ARGV) .. ','\n"
    "    end\n"
    "    mfields[#mfields + 1] = 'gts'; mfields[#mfields + 1] = ts\n"
    "    mfields[#mfields + 1] = 'gset'; mfields[#mfields + 1] = list\n"
    "    gts, gset, named = ts, list, nil\n"
    "  else beaten(gts)\n"
    "  end\n"
    "end\n"
    "if mode == '" KEY_GROUPS "' then\n"
    "  local target = {}\n"
    "  for i = 9, #ARGV do target[ARGV[i]] = true end\n"
    "  local current = redis.call('SMEMBERS', mgkey)\n"
    "  for i = 9, #ARGV do setm(ARGV[i], true) end\n"
    "  for _, g in ipairs(current) do if not target[g] then setm(g, false) end end\n"
    "elseif mode == 'out_all' then\n"
    "  for _, g in ipairs(redis.call('SMEMBERS', mgkey)) do setm(g, false) end\n"
    "elseif mode == 'in_one' then setm(ARGV[9], true)\n"
    "elseif mode == 'out_one' then setm(ARGV[9], false)\n"
    "end\n"
    "if #mfields > 0 then redis.call('HSET', mkey, unpack(mfields)) end\n"
    "if recchanged then\n"
    "  for _, g in ipairs(redis.call('SMEMBERS', mgkey)) do dirty[g] = true end\n"
    "end\n"
    "removed(p, mid)\n"
    "if (mode ~= 'in_one' and mode ~= 'out_one') or #joined + #left > 0 then\n"
    "  history(p, mid, head, why_of(#mfields > 0 or wrote, joined, left, kept, recchanged, "
    "older, tie))\n"
    "end\n"
    "local n = 0\n"
    "for g, _ in pairs(dirty) do if due then mark(p, assoc, g, due) end; n = n + 1 end\n"
    "return {n, earliest(p)}\n";

/* Snapshot sweep, begun: the group's snapshot time. ARGV: 1 prefix, 2 group, 3 ts key. */
static const char sweep_start_script[] =
    "local gk = ARGV[1] .. '" KEY_GROUP "' .. ARGV[2]\n"
    "local snap = redis.call('HGET', gk, 'snap_ts')\n"
    "if (not snap) or ARGV[3] > snap then redis.call('HSET', gk, 'snap_ts', ARGV[3]) end\n"
    "return 1\n";

/* Snapshot sweep, one chunk of the group's members (as HSCAN gave them): each
 * one in the group by a fact older than the snapshot is taken out, and that is
 * recorded in its history. ARGV: 1 prefix, 2 group, 3 ts key, 4 history head
 * (LUA_HISTORY), 5.. member ids. Returns how many were taken out. */
static const char sweep_chunk_script[] = LUA_COMMON LUA_HISTORY
    "local p, g, ts, head = ARGV[1], ARGV[2], ARGV[3], ARGV[4]\n"
    "local gm = p .. '" KEY_GROUP_MEMBERS "' .. g\n"
    "local out, why = 0, nil\n"
    "for i = 5, #ARGV do\n"
    "  local v = redis.call('HGET', gm, ARGV[i])\n"
    "  if v and string.sub(v, 1, 1) == '1' and string.sub(v, 3, 24) < ts then\n"
    "    redis.call('HSET', gm, ARGV[i], '0|' .. ts)\n"
    "    redis.call('SREM', p .. '" KEY_MEMBER_GROUPS "' .. ARGV[i], g)\n"
    "    removed(p, ARGV[i])\n"
    "    why = why or ('left ' .. group_name(p, g) .. ' (not in the snapshot)')\n"
    "    history(p, ARGV[i], head, 'applied', why)\n"
    "    out = out + 1\n"
    "  end\n"
    "end\n"
    "return out\n";

/* Snapshot sweep, done. ARGV: 1 prefix, 2 group, 3 due, 4 association, 5 "1"
 * when the chunks or the sweep changed the group (they leave marking it dirty
 * to this step, so no sync starts on a half-folded snapshot). */
static const char sweep_script[] =
    LUA_COMMON "local p, g, due, assoc = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]\n"
               "if ARGV[5] == '1' then mark(p, assoc, g, due) end\n"
               "return {tonumber(ARGV[5]), earliest(p)}\n";

/*
 * Group fact. ARGV: 1 prefix, 2 group, 3 ts key, 4 kind (upsert|delete), 5 name,
 * 6 sync (0|1), 7 due, 8 association, 9 now (RFC 3339).
 * A new or changed fact is audited (sync_enabled, sync_disabled, group_deleted)
 * and makes the group dirty; an unchanged save does nothing (no CC call).
 */
static const char group_script[] = LUA_COMMON
    "local p, g, ts, kind, name, sync = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]\n"
    "local due, assoc, now = tonumber(ARGV[7]), ARGV[8], ARGV[9]\n"
    "local gk = p .. '" KEY_GROUP "' .. g\n"
    "local cur = redis.call('HMGET', gk, 'fact_ts', 'sync', 'deleted', 'name', 'list_id', "
    "'list_name')\n"
    "if cur[1] and cur[1] >= ts then return {0, earliest(p)} end\n"
    "local function audit(action)\n"
    "  local e = cjson.encode({at = now, group_id = g, action = action, list_id = cur[5] or "
    "cjson.null, list_name = cur[6] or cjson.null, detail = ''})\n"
    "  redis.call('LPUSH', p .. '" KEY_AUDIT "', e)\n"
    "  redis.call('LTRIM', p .. '" KEY_AUDIT "', 0, 9999)\n"
    "end\n"
    "local wasdeleted, wassync = cur[3] == '1', cur[2] == '1'\n"
    "if kind == 'delete' then\n"
    "  redis.call('HSET', gk, 'fact_ts', ts, 'deleted', '1')\n"
    "  if not wasdeleted and cur[1] then audit('group_deleted'); mark(p, assoc, g, due) end\n"
    "  return {1, earliest(p)}\n"
    "end\n"
    "redis.call('HSET', gk, 'fact_ts', ts, 'deleted', '0', 'name', name, 'sync', sync)\n"
    "redis.call('SADD', p .. '" KEY_GROUPS "', g)\n"
    "local nowsync = sync == '1'\n"
    "if nowsync and (wasdeleted or not wassync) then audit('sync_enabled') end\n"
    "if (not nowsync) and wassync and not wasdeleted then audit('sync_disabled') end\n"
    "if wasdeleted or nowsync ~= wassync or (nowsync and cur[4] ~= name) then\n"
    "  if not nowsync and not cur[5] then\n"
    "    redis.call('HSET', gk, 'state', 'disabled')\n"
    "  else\n"
    "    redis.call('HSET', gk, 'state', 'pending')\n"
    "  end\n"
    "  mark(p, assoc, g, due)\n"
    "end\n"
    "return {1, earliest(p)}\n";

static const char audit_script[] =
    "local e = cjson.encode({at = ARGV[2], group_id = ARGV[3], action = ARGV[4], "
    "list_id = ARGV[5] ~= '' and ARGV[5] or cjson.null, list_name = ARGV[6] ~= '' and ARGV[6] "
    "or cjson.null, detail = ARGV[7]})\n"
    "redis.call('LPUSH', ARGV[1] .. '" KEY_AUDIT "', e)\n"
    "redis.call('LTRIM', ARGV[1] .. '" KEY_AUDIT "', 0, 9999)\n"
    "return 1\n";

static const char dirty_script[] = LUA_COMMON "mark(ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]))\n"
                                              "return {1, earliest(ARGV[1])}\n";

/*
 * Scripts here take any number of arguments (a member's groups), so they are
 * sent with EVALSHA on an argv built for the call, falling back to EVAL when the
 * server does not have the script (it then caches it for the next EVALSHA).
 */
static void script_sha(const char *body, char hex[41])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_Digest(body, strlen(body), md, &len, EVP_sha1(), NULL);
    for (unsigned int i = 0; i < 20; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

/* Appends one script call without waiting for its reply. The scripts build
 * the association's keys from its prefix; key (one of them) is declared so
 * that a Redis Cluster sends the call to the association's node. */
static int append_script(redisContext *c, const char *verb, const char *what, const char *key,
                         int n_args, const char *const *args)
{
    const char **argv = malloc((size_t)(n_args + 4) * sizeof *argv);
    if (!argv)
        return STORE_ERR;
    argv[0] = verb;
    argv[1] = what;
    argv[2] = "1";
    argv[3] = key;
    for (int i = 0; i < n_args; i++)
        argv[4 + i] = args[i];
    int rc = redisAppendCommandArgv(c, n_args + 4, argv, NULL) == REDIS_OK ? STORE_OK : STORE_ERR;
    free(argv);
    return rc;
}

/* Reads one reply; 1 ok, 0 NOSCRIPT, -1 failure. A fold's reply is {result,
 * the association's earliest due}: that due goes to *due (may be NULL). */
static int read_script_reply(redisContext *c, int64_t *due)
{
    redisReply *r = NULL;
    if (redisGetReply(c, (void **)&r) != REDIS_OK || !r)
        return -1;
    int rc = 1;
    if (r->type == REDIS_REPLY_ERROR)
        rc = strncmp(r->str, "NOSCRIPT", 8) == 0 ? 0 : -1;
    if (due)
        *due = r->type == REDIS_REPLY_ARRAY && r->elements == 2 ? schedule_parse_due(r->element[1])
                                                                : SCHEDULE_NONE;
    freeReplyObject(r);
    return rc;
}

static int run(redisContext *c, const char *script, const char *key, int n_args,
               const char *const *args, int64_t *due)
{
    char sha[41];
    script_sha(script, sha);
    if (append_script(c, "EVALSHA", sha, key, n_args, args) != 0)
        return STORE_ERR;
    int rc = read_script_reply(c, due);
    if (rc == 0) {
        if (append_script(c, "EVAL", script, key, n_args, args) != 0)
            return STORE_ERR;
        rc = read_script_reply(c, due);
    }
    return rc == 1 ? STORE_OK : STORE_ERR;
}

/* run() for a script that answers one integer, into *n. */
static int run_count(redisContext *c, const char *script, const char *key, int n_args,
                     const char *const *args, int64_t *n)
{
    char sha[41];
    script_sha(script, sha);
    for (int attempt = 0; attempt < 2; attempt++) {
        if (append_script(c, attempt ? "EVAL" : "EVALSHA", attempt ? script : sha, key, n_args,
                          args) != STORE_OK)
            return STORE_ERR;
        redisReply *r = NULL;
        if (redisGetReply(c, (void **)&r) != REDIS_OK || !r)
            return STORE_ERR;
        bool noscript = r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0;
        bool ok = r->type == REDIS_REPLY_INTEGER;
        if (ok)
            *n = r->integer;
        freeReplyObject(r);
        if (!noscript)
            return ok ? STORE_OK : STORE_ERR;
    }
    return STORE_ERR;
}

/* run(), or with append_only only the EVALSHA appended (the caller reads the reply). */
static int run_or_append(redisContext *c, bool append_only, const char *script, const char *key,
                         int n_args, const char *const *args, int64_t *due)
{
    if (!append_only)
        return run(c, script, key, n_args, args, due);
    char sha[41];
    script_sha(script, sha);
    return append_script(c, "EVALSHA", sha, key, n_args, args);
}

int facts_audit(redisContext *c, const char *association, const char *group_id, const char *action,
                const char *list_id, const char *list_name, const char *detail)
{
    char now[32];
    struct key p = key_prefix(association);
    rfc3339_format(store_now_ns(), now, sizeof now);
    const char *args[] = {p.s,
                          now,
                          group_id,
                          action,
                          list_id ? list_id : "",
                          list_name ? list_name : "",
                          detail ? detail : ""};
    return run(c, audit_script, key_audit(association).s, 7, args, NULL);
}

int facts_mark_dirty(redisContext *c, const char *association, const char *group_id, int64_t now_ns,
                     int delay_ms)
{
    char due[32];
    struct key p = key_prefix(association);
    snprintf(due, sizeof due, "%lld", (long long)(now_ns / 1000000 + delay_ms));
    const char *args[] = {p.s, association, group_id, due};
    int64_t earliest;
    if (run(c, dirty_script, key_dirty(association).s, 4, args, &earliest) != STORE_OK)
        return STORE_ERR;
    return schedule_wake(c, association, earliest);
}

/* The script arguments of one member fold; the caller frees *args and *rec. */
static int member_args(const char *p, const char *association, const struct member_record *m,
                       const char *ts, const char *due, const char *mode, const char *one_group,
                       const char *head, const char ***args, char **rec, int *n_args)
{
    *rec = facts_record_json(m);
    size_t n_groups = strcmp(mode, "groups") == 0 ? m->n_groups : (one_group ? 1 : 0);
    *args = calloc(8 + n_groups, sizeof **args);
    if (!*rec || !*args) {
        free(*rec);
        free(*args);
        return STORE_ERR;
    }
    const char **a = *args;
    a[0] = p;
    a[1] = m->id;
    a[2] = ts;
    a[3] = *rec;
    a[4] = mode;
    a[5] = due;
    a[6] = association;
    a[7] = head;
    for (size_t i = 0; i < n_groups; i++)
        a[8 + i] = one_group ? one_group : m->groups[i].id;
    *n_args = (int)(8 + n_groups);
    return STORE_OK;
}

static int fold_member(redisContext *c, bool append_only, const char *p, const char *association,
                       const struct member_record *m, const char *ts, const char *due,
                       const char *mode, const char *head, int64_t *earliest)
{
    const char **args;
    char *rec;
    int n;
    if (member_args(p, association, m, ts, due, mode, NULL, head, &args, &rec, &n) != STORE_OK)
        return STORE_ERR;
    int rc =
        run_or_append(c, append_only, member_script, key_dirty(association).s, n, args, earliest);
    free(args);
    free(rec);
    return rc;
}

/* Folds members [start, end) of a snapshot as one pipeline, without marking
 * the group dirty ("" due: the sweep does, so no sync starts on a half-folded
 * snapshot). *changed is set when one of them changed the group. */
static int fold_snapshot_chunk(redisContext *c, const char *sha, const char *p,
                               const char *association, const struct event *ev, const char *ts,
                               const char *head, size_t start, size_t end, bool *changed)
{
    size_t sent = 0;
    int rc = STORE_OK;
    for (size_t i = start; i < end && rc == STORE_OK; i++) {
        const struct member_record *m = &ev->members[i];
        const char **args;
        char *rec;
        int n;
        rc = member_args(p, association, m, ts, "", m->active ? "in_one" : "out_one",
                         ev->subject_id, head, &args, &rec, &n);
        if (rc == STORE_OK) {
            rc = append_script(c, "EVALSHA", sha, key_dirty(association).s, n, args);
            free(args);
            free(rec);
            sent += rc == STORE_OK;
        }
    }
    for (size_t i = 0; i < sent; i++) {
        redisReply *r = NULL;
        if (redisGetReply(c, (void **)&r) != REDIS_OK || !r || r->type != REDIS_REPLY_ARRAY ||
            r->elements != 2 || r->element[0]->type != REDIS_REPLY_INTEGER)
            rc = STORE_ERR;
        else if (r->element[0]->integer > 0)
            *changed = true;
        freeReplyObject(r);
    }
    return rc;
}

/* One HSCAN reply's members (field, value pairs) judged by one script; only
 * those in the group ("1|...") can be taken out, so only they are sent. */
static int sweep_chunk(redisContext *c, const char *p, const char *association, const char *group,
                       const char *ts, const char *head, const redisReply *kv, bool *changed)
{
    const char **args = malloc((4 + kv->elements / 2) * sizeof *args);
    if (!args)
        return STORE_ERR;
    int n = 0;
    args[n++] = p;
    args[n++] = group;
    args[n++] = ts;
    args[n++] = head;
    for (size_t i = 0; i + 1 < kv->elements; i += 2)
        if (kv->element[i + 1]->type == REDIS_REPLY_STRING && kv->element[i + 1]->str[0] == '1')
            args[n++] = kv->element[i]->str;
    int64_t out = 0;
    int rc = n > 4 ? run_count(c, sweep_chunk_script, key_dirty(association).s, n, args, &out)
                   : STORE_OK;
    free(args);
    if (out > 0)
        *changed = true;
    return rc;
}

/* Tells the caller a snapshot's fold goes on (fold_origin.progress). */
static void progress(const struct fold_origin *origin)
{
    if (origin && origin->progress)
        origin->progress(origin->progress_arg);
}

/* Takes out of the group every member a fact older than the snapshot put
 * there, SWEEP_CHUNK members a script (HSCAN's cursor between them), so no
 * command reads every member the group ever had. Members folded by a newer
 * fact meanwhile keep their place: each chunk re-reads what it judges. */
static int sweep(redisContext *c, const char *p, const char *association, const char *group,
                 const char *ts, const char *head, const struct fold_origin *origin, bool *changed)
{
    const char *start[] = {p, group, ts};
    if (run(c, sweep_start_script, key_dirty(association).s, 3, start, NULL) != STORE_OK)
        return STORE_ERR;
    struct key gm = key_group_members(association, group);
    struct key folding = key_group_folding(association, group);
    char cursor[32] = "0";
    int rc = STORE_OK;
    do {
        redisReply *r = redisCommand(c, "HSCAN %s %s COUNT %d", gm.s, cursor, SWEEP_CHUNK);
        if (!store_reply_ok(c, r) || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[1]->type != REDIS_REPLY_ARRAY) {
            freeReplyObject(r);
            return STORE_ERR;
        }
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        rc = sweep_chunk(c, p, association, group, ts, head, r->element[1], changed);
        freeReplyObject(r);
        progress(origin);
        /* the group stays unsynced while the sweep goes on (sync.c) */
        if (rc == STORE_OK)
            rc = store_exec(c, "SET %s 1 PX %d", folding.s, FACTS_FOLDING_TTL_MS);
    } while (rc == STORE_OK && strcmp(cursor, "0") != 0);
    return rc;
}

/*
 * A group.members snapshot: every member's fold is pipelined, SNAPSHOT_CHUNK
 * calls a round trip; then the sweep. The script is made known to the server
 * first, so EVALSHA cannot meet NOSCRIPT in the middle of a chunk (if it did,
 * after a SCRIPT FLUSH, the fold fails and the redelivered event is folded again).
 */
static int fold_snapshot(redisContext *c, const char *p, const char *association,
                         const struct event *ev, const char *ts, const char *due, const char *head,
                         const struct fold_origin *origin, int64_t *earliest)
{
    char sha[41];
    script_sha(member_script, sha);
    if (store_exec(c, "SCRIPT LOAD %s", member_script) != STORE_OK)
        return STORE_ERR;
    bool changed = false;
    struct key folding = key_group_folding(association, ev->subject_id);
    for (size_t start = 0; start < ev->n_members; start += SNAPSHOT_CHUNK) {
        /* While a snapshot is half folded the group is not synced (sync.c waits
         * for this marker; it expires should this worker die). */
        if (store_exec(c, "SET %s 1 PX %d", folding.s, FACTS_FOLDING_TTL_MS) != STORE_OK)
            return STORE_ERR;
        size_t end =
            start + SNAPSHOT_CHUNK < ev->n_members ? start + SNAPSHOT_CHUNK : ev->n_members;
        if (fold_snapshot_chunk(c, sha, p, association, ev, ts, head, start, end, &changed) !=
            STORE_OK)
            return STORE_ERR;
        progress(origin);
    }
    if (sweep(c, p, association, ev->subject_id, ts, head, origin, &changed) != STORE_OK)
        return STORE_ERR;
    const char *args[] = {p, ev->subject_id, due, association, changed ? "1" : "0"};
    int rc = run(c, sweep_script, key_dirty(association).s, 5, args, earliest);
    return store_exec(c, "DEL %s", folding.s) == STORE_OK ? rc : STORE_ERR;
}

/* ns as RFC 3339 in UTC, with the fraction of a second when there is one
 * ("2026-12-05T10:00:00.25Z"), so the history shows the time the fold compared. */
static void time_format(int64_t ns, char *out, size_t size)
{
    rfc3339_format(ns, out, size);
    int64_t frac = ns % 1000000000LL;
    size_t len = strlen(out);
    if (frac <= 0 || len < 2)
        return;
    char digits[16];
    snprintf(digits, sizeof digits, ".%09lld", (long long)frac);
    for (size_t n = strlen(digits); digits[n - 1] == '0'; n--)
        digits[n - 1] = '\0';
    snprintf(out + len - 1, size - (len - 1), "%sZ", digits);
}

/* The head of ev's history entries (LUA_HISTORY): its JSON object without
 * the closing brace, for the script to add outcome and why; "" (no history)
 * without an origin. The caller frees it; NULL when out of memory. */
static char *history_head(const struct event *ev, const struct fold_origin *origin)
{
    if (!origin || ev->type == EVENT_UNKNOWN)
        return strdup("");
    char at[48], received[48];
    time_format(ev->ts_ns, at, sizeof at);
    time_format(origin->received_ns, received, sizeof received);
    json_object *o = json_object_new_object();
    add_str(o, "event_id", origin->event_id ? origin->event_id : "");
    add_str(o, "type", ev->type_name);
    add_str(o, "at", at);
    add_str(o, "received_at", received);
    const char *text =
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    char *head = strndup(text, strlen(text) - 1); /* without the "}" */
    json_object_put(o);
    return head;
}

/* Folds ev, or with append_only appends its one script call (never for a
 * snapshot). Without append_only, *earliest gets the association's earliest due. */
static int fold(redisContext *c, bool append_only, const char *association, const struct event *ev,
                const struct fold_origin *origin, const char *head, int64_t now_ns, int delay_ms,
                int64_t *earliest)
{
    char ts[FACTS_TS_KEY_SIZE], due[32], now[32];
    struct key prefix = key_prefix(association);
    const char *p = prefix.s;
    facts_ts_key(ev->ts_ns, ts);
    snprintf(due, sizeof due, "%lld", (long long)(now_ns / 1000000 + delay_ms));
    rfc3339_format(now_ns, now, sizeof now);
    *earliest = SCHEDULE_NONE;

    switch (ev->type) {
    case EVENT_CUSTOMER_CREATED:
    case EVENT_CUSTOMER_UPDATED: {
        const struct member_record *m = &ev->member;
        const char *mode = !m->active ? "out_all" : m->has_groups ? "groups" : "keep";
        return fold_member(c, append_only, p, association, m, ts, due, mode, head, earliest);
    }
    case EVENT_CUSTOMER_REMOVED: {
        const char *args[] = {p, ev->subject_id, ts, "", "out_all", due, association, head};
        return run_or_append(c, append_only, member_script, key_dirty(association).s, 8, args,
                             earliest);
    }
    case EVENT_GROUP_CREATED:
    case EVENT_GROUP_UPDATED:
    case EVENT_GROUP_DELETED: {
        bool del = ev->type == EVENT_GROUP_DELETED;
        const char *args[] = {p,
                              ev->subject_id,
                              ts,
                              del ? "delete" : "upsert",
                              del ? "" : (ev->group_name ? ev->group_name : ""),
                              ev->sync_enabled ? "1" : "0",
                              due,
                              association,
                              now};
        return run_or_append(c, append_only, group_script, key_dirty(association).s, 9, args,
                             earliest);
    }
    case EVENT_GROUP_MEMBERS:
        return append_only ? STORE_ERR
                           : fold_snapshot(c, p, association, ev, ts, due, head, origin, earliest);
    default:
        return append_only ? STORE_ERR : STORE_OK;
    }
}

int facts_fold(redisContext *c, const char *association, const struct event *ev,
               const struct fold_origin *origin, int64_t now_ns, int delay_ms)
{
    int64_t earliest;
    char *head = history_head(ev, origin);
    int rc = head ? fold(c, false, association, ev, origin, head, now_ns, delay_ms, &earliest)
                  : STORE_ERR;
    free(head);
    if (rc != STORE_OK)
        return STORE_ERR;
    return schedule_wake(c, association, earliest);
}

int facts_fold_append(redisContext *c, const char *association, const struct event *ev,
                      const struct fold_origin *origin, int64_t now_ns, int delay_ms)
{
    if (ev->type == EVENT_GROUP_MEMBERS || ev->type == EVENT_UNKNOWN)
        return 0;
    int64_t unused;
    char *head = history_head(ev, origin);
    int rc =
        head ? fold(c, true, association, ev, origin, head, now_ns, delay_ms, &unused) : STORE_ERR;
    free(head);
    return rc == STORE_OK ? 1 : STORE_ERR;
}

int facts_fold_reply(redisContext *c, int64_t *earliest)
{
    return read_script_reply(c, earliest);
}
