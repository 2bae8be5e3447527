/*
 * migrate.c - moves a Redis from release 1's key layout to keys.h's, once, at
 * start (see migrate.h). The only file that still spells release 1's names:
 *
 *   release 1                         now
 *   ccsync:a:A                        ccsync:{A}:association
 *   ccsync:a:A:REST                   ccsync:{A}:REST  (groups, g:G, g:G:folding, gm:G,
 *                                                       ap:G, m:M, mg:M, audit)
 *   ccsync:dedup:A:ID                 ccsync:{A}:dedup:ID
 *   ccsync:lease:A|G                  ccsync:{A}:lease:G
 *   ccsync:lease:reconcile:A          ccsync:{A}:reconcile-lease
 *   ccsync:lock:refresh:A             ccsync:{A}:refresh-lock
 *   ccsync:dirty (zset A|G -> due)    ccsync:{A}:dirty (G -> due) and ccsync:due (A -> earliest)
 *
 * Global keys (events, associations, credentials, retrying, reconcile, the CC
 * budget) keep their names. Association ids have no ':' and no '|', so a name
 * is split at the first of those after the id; group and webhook ids may hold
 * ':' and stay whole in REST.
 *
 * Why it is done this way:
 * - RENAME moves a key in O(1) with its value and its time to live. It is given
 *   only names SCAN returned, and "no such key" then means an earlier run (or a
 *   second SCAN answer for the same name) moved it already: counted, not an
 *   error. So a run that died midway is finished by the next one.
 * - Leases and the refresh lock are moved, not dropped. A release-1 process
 *   stopped properly leaves none; one that died leaves them with their time to
 *   live, and moving them keeps the group untouched until they run out, as
 *   release 1 itself would have. A release-1 process still running against the
 *   rule finds its lease gone under the old name and gives the group up rather
 *   than sharing it with a new process.
 * - The schedule moves entry by entry, added to the new keys before it leaves
 *   ccsync:dirty: a run that dies in between finds the entry again and adds it
 *   again with the same score (ZADD LT keeps the earliest due per association).
 * - The layout marker is written last. A Redis without it is migrated (again),
 *   which finds nothing left to move.
 * - One process migrates, under KEY_MIGRATE_LOCK (a lease renewed after every
 *   batch); the others wait for the marker, and take over when the lock runs
 *   out because its holder died.
 * - Release 1 must be stopped before this release first starts: it would keep
 *   writing the old names, which nothing reads once the marker is set.
 */
#include "ccsync/migrate.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ccsync/config.h"
#include "ccsync/keys.h"
#include "ccsync/lease.h"
#include "ccsync/log.h"
#include "ccsync/model.h"
#include "ccsync/store.h"

/* Release 1's names. */
#define R1_ASSOCIATION KEY_ROOT "a:"
#define R1_DEDUP KEY_ROOT "dedup:"
#define R1_LEASE KEY_ROOT "lease:"
#define R1_RECONCILE_LEASE "reconcile:" /* after R1_LEASE */
#define R1_REFRESH_LOCK KEY_ROOT "lock:refresh:"
#define R1_DIRTY KEY_ROOT "dirty"

#define SCAN_COUNT 500
#define SCHEDULE_BATCH 200
#define WAIT_MS 100
#define CONNECT_TIMEOUT_MS 5000
#define BUSY 1 /* another process holds the migration lock (or took it over from us) */

struct run {
    redisContext *c;
    struct lease lock;
    struct migrate_report *rep;
    char why[256]; /* what failed, logged once by migrate_run */
};

enum name { NAME_OURS, NAME_OTHER, NAME_INVALID };

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Copies the association id at the start of s, up to the first end character
 * or the string's end, into id. Returns what follows the id (the end character
 * or ""), or NULL when there is no valid id. */
static const char *split_association(const char *s, char end, char id[CCSYNC_ASSOC_ID_MAX + 1])
{
    size_t n = 0;
    while (s[n] && s[n] != end) {
        char ch = s[n];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '_' || ch == '-';
        if (!ok || n == CCSYNC_ASSOC_ID_MAX)
            return NULL;
        id[n] = ch;
        n++;
    }
    id[n] = '\0';
    return n > 0 ? s + n : NULL;
}

/* key_prefix + a suffix release 1 spelled as keys.h does (KEY_GROUP "G", KEY_AUDIT, ...). */
static void suffixed(struct key *out, const char *association, const char *suffix)
{
    struct key p = key_prefix(association);
    int n = snprintf(out->s, sizeof out->s, "%s%s", p.s, suffix);
    out->cut = p.cut || n < 0 || (size_t)n >= sizeof out->s;
}

/* The new name of a release-1 key. NAME_OTHER for a key release 1 did not
 * name per association (a global key, or one already in the new layout). */
static enum name new_name(const char *old, struct key *out)
{
    char a[CCSYNC_ASSOC_ID_MAX + 1];
    const char *rest;
    if (starts_with(old, R1_ASSOCIATION)) {
        if (!(rest = split_association(old + strlen(R1_ASSOCIATION), ':', a)))
            return NAME_INVALID;
        if (*rest == '\0')
            *out = key_association(a);
        else
            suffixed(out, a, rest + 1);
    } else if (starts_with(old, R1_DEDUP)) {
        if (!(rest = split_association(old + strlen(R1_DEDUP), ':', a)) || !rest[0] || !rest[1])
            return NAME_INVALID;
        *out = key_dedup(a, rest + 1);
    } else if (starts_with(old, R1_LEASE)) {
        const char *s = old + strlen(R1_LEASE);
        if ((rest = split_association(s, '|', a)) && rest[0] == '|' && rest[1])
            *out = key_lease(a, rest + 1);
        else if (starts_with(s, R1_RECONCILE_LEASE) &&
                 (rest = split_association(s + strlen(R1_RECONCILE_LEASE), '\0', a)))
            *out = key_reconcile_lease(a);
        else
            return NAME_INVALID;
    } else if (starts_with(old, R1_REFRESH_LOCK)) {
        if (!split_association(old + strlen(R1_REFRESH_LOCK), '\0', a))
            return NAME_INVALID;
        *out = key_refresh_lock(a);
    } else {
        return NAME_OTHER;
    }
    return out->cut ? NAME_INVALID : NAME_OURS;
}

static int fail(struct run *m, const char *what, redisReply *r)
{
    const char *reason = m->c->err                           ? m->c->errstr
                         : r && r->type == REDIS_REPLY_ERROR ? r->str
                         : r                                 ? "unexpected reply"
                                                             : "no reply";
    snprintf(m->why, sizeof m->why, "%s: %s", what, reason);
    freeReplyObject(r);
    return STORE_ERR;
}

/* Renews the migration lock after a batch: STORE_OK, BUSY or STORE_ERR. */
static int keep_lock(struct run *m)
{
    int held = lease_renew(m->c, &m->lock, 1, MIGRATE_LOCK_MS);
    if (held == STORE_ERR)
        return fail(m, "renewing the migration lock", NULL);
    return held == 1 ? STORE_OK : BUSY;
}

/* RENAMEs the keys of one SCAN answer that have a new name, pipelined. */
static int rename_found(struct run *m, redisReply *found)
{
    size_t n = 0;
    for (size_t i = 0; i < found->elements; i++) {
        const char *old = found->element[i]->str;
        struct key to;
        enum name kind = new_name(old, &to);
        if (kind == NAME_INVALID)
            m->rep->skipped++;
        if (kind != NAME_OURS)
            continue;
        redisAppendCommand(m->c, "RENAME %s %s", old, to.s);
        n++;
    }
    int rc = STORE_OK;
    for (size_t i = 0; i < n; i++) {
        redisReply *r = NULL;
        if (redisGetReply(m->c, (void **)&r) != REDIS_OK)
            return fail(m, "RENAME", NULL);
        if (r->type != REDIS_REPLY_ERROR)
            m->rep->renamed++;
        else if (strstr(r->str, "no such key"))
            m->rep->gone++;
        else if (rc == STORE_OK) {
            rc = fail(m, "RENAME", r); /* frees r; the other replies are read all the same */
            continue;
        }
        freeReplyObject(r);
    }
    return rc;
}

static int move_keys(struct run *m)
{
    char cursor[32] = "0";
    do {
        redisReply *r =
            redisCommand(m->c, "SCAN %s MATCH " KEY_ROOT "* COUNT %d", cursor, SCAN_COUNT);
        if (!store_reply_ok(m->c, r) || r->type != REDIS_REPLY_ARRAY || r->elements != 2)
            return fail(m, "SCAN", r);
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        int rc = rename_found(m, r->element[1]);
        freeReplyObject(r);
        if (rc == STORE_OK)
            rc = keep_lock(m);
        if (rc != STORE_OK)
            return rc;
    } while (strcmp(cursor, "0") != 0);
    return STORE_OK;
}

/* Moves up to SCHEDULE_BATCH entries of ccsync:dirty. *left: entries remain. */
static int move_schedule_batch(struct run *m, bool *left)
{
    redisReply *r = redisCommand(m->c, "ZRANGE " R1_DIRTY " 0 %d WITHSCORES", SCHEDULE_BATCH - 1);
    if (!store_reply_ok(m->c, r) || r->type != REDIS_REPLY_ARRAY)
        return fail(m, "ZRANGE " R1_DIRTY, r);
    size_t commands = 0;
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const char *member = r->element[i]->str, *due = r->element[i + 1]->str;
        char a[CCSYNC_ASSOC_ID_MAX + 1];
        const char *bar = split_association(member, '|', a);
        if (bar && bar[0] == '|' && bar[1]) {
            redisAppendCommand(m->c, "ZADD %s %s %s", key_dirty(a).s, due, bar + 1);
            redisAppendCommand(m->c, "ZADD " KEY_DUE " LT %s %s", due, a);
            commands += 2;
            m->rep->schedule++;
        } else {
            m->rep->skipped++; /* release 1 dropped such entries unsynced too */
        }
        redisAppendCommand(m->c, "ZREM " R1_DIRTY " %s", member);
        commands++;
    }
    *left = r->elements > 0;
    freeReplyObject(r);
    if (store_drain(m->c, commands) != STORE_OK)
        return fail(m, "moving " R1_DIRTY, NULL);
    return STORE_OK;
}

static int move_schedule(struct run *m)
{
    for (bool left = true; left;) {
        int rc = move_schedule_batch(m, &left);
        if (rc == STORE_OK)
            rc = keep_lock(m);
        if (rc != STORE_OK)
            return rc;
    }
    return STORE_OK;
}

/* The layout the Redis holds: 1 without a marker, -1 when Redis failed. */
static int layout_of(struct run *m)
{
    redisReply *r = redisCommand(m->c, "GET " KEY_LAYOUT_VERSION);
    if (!store_reply_ok(m->c, r)) {
        fail(m, "GET " KEY_LAYOUT_VERSION, r);
        return -1;
    }
    char *end = NULL;
    long v = r->type == REDIS_REPLY_STRING ? strtol(r->str, &end, 10) : 1;
    bool ok = r->type == REDIS_REPLY_NIL || (end && end != r->str && *end == '\0' && v > 0);
    if (!ok) {
        fail(m, KEY_LAYOUT_VERSION " is not a layout number", r);
        return -1;
    }
    freeReplyObject(r);
    return v > 1000 ? 1000 : (int)v;
}

static int too_new(struct run *m, int layout)
{
    if (layout > 0)
        snprintf(m->why, sizeof m->why,
                 "Redis holds key layout %d, newer than this release's %d: run a newer release",
                 layout, MIGRATE_LAYOUT);
    return STORE_ERR;
}

/* The migration proper, lock held. STORE_OK, BUSY or STORE_ERR. */
static int migrate_locked(struct run *m)
{
    int layout = layout_of(m); /* again: a holder before us may have just finished */
    if (layout != 1)
        return layout == MIGRATE_LAYOUT ? STORE_OK : too_new(m, layout);
    int rc = move_keys(m);
    if (rc == STORE_OK)
        rc = move_schedule(m);
    if (rc != STORE_OK)
        return rc;
    redisReply *r = redisCommand(m->c, "SET " KEY_LAYOUT_VERSION " %d", MIGRATE_LAYOUT);
    if (!store_reply_ok(m->c, r))
        return fail(m, "SET " KEY_LAYOUT_VERSION, r);
    freeReplyObject(r);
    m->rep->migrated = true;
    log_info("layout_migrated", LOG_INT("layout", MIGRATE_LAYOUT),
             LOG_INT("keys_renamed", m->rep->renamed), LOG_INT("keys_gone", m->rep->gone),
             LOG_INT("schedule_entries", m->rep->schedule),
             LOG_INT("skipped_invalid", m->rep->skipped));
    return STORE_OK;
}

/* One attempt: STORE_OK done, BUSY another process is at it, STORE_ERR failed. */
static int attempt(struct run *m)
{
    int layout = layout_of(m);
    if (layout == MIGRATE_LAYOUT || layout < 0)
        return layout < 0 ? STORE_ERR : STORE_OK;
    if (layout > MIGRATE_LAYOUT)
        return too_new(m, layout);
    const struct key lock_key = {KEY_MIGRATE_LOCK, false};
    int got = lease_take(m->c, &m->lock, &lock_key, MIGRATE_LOCK_MS);
    if (got == STORE_ERR)
        return fail(m, "taking the migration lock", NULL);
    if (got == 0)
        return BUSY;
    int rc = migrate_locked(m);
    if (rc != BUSY)
        lease_release(m->c, &m->lock); /* on a broken connection it runs out by itself */
    return rc;
}

int migrate_run(redisContext *c, const volatile sig_atomic_t *stop, struct migrate_report *report)
{
    struct migrate_report unused;
    struct run m = {.c = c, .rep = report ? report : &unused};
    memset(m.rep, 0, sizeof *m.rep);
    int rc;
    while ((rc = attempt(&m)) == BUSY) {
        if (stop && *stop)
            return STORE_ERR; /* asked to stop while another process migrates */
        sleep_ms(WAIT_MS);
    }
    if (rc != STORE_OK)
        log_error("layout_migration_failed", LOG_STR("error", m.why));
    return rc;
}

int migrate_at_start(const struct redis_target *t, const volatile sig_atomic_t *stop)
{
    bool told = false;
    while (!*stop) {
        char err[256];
        redisContext *c = store_connect(t, CONNECT_TIMEOUT_MS, err, sizeof err);
        if (c) {
            int rc = migrate_run(c, stop, NULL);
            bool broke = c->err != 0;
            redisFree(c);
            if (rc == STORE_OK || !broke)
                return rc;
            snprintf(err, sizeof err, "the connection broke during the layout migration");
        }
        if (!told)
            log_warn("redis_unreachable_at_start", LOG_STR("error", err),
                     LOG_STR("doing", "trying again every second"));
        told = true;
        sleep_ms(1000);
    }
    return STORE_ERR;
}
