/*
 * schedule.h - which groups wait for a sync and when, kept so that no script
 * touches two associations (a Redis Cluster moves an association, not a
 * schedule).
 *
 * key_dirty(A)  zset group -> due ms: A's groups to sync. Written only by
 *               scripts that hold nothing but A's keys: the folds (a changed
 *               group is due after the coalescing delay; an earlier due is
 *               kept), the claim (a claimed group is parked at its lease's end,
 *               so it comes back by itself if its worker dies) and the finish
 *               (done: removed unless it changed meanwhile; retry: due after
 *               the backoff).
 * KEY_DUE       zset A -> the earliest score in key_dirty(A): where workers
 *               look for work without visiting every association. Written only
 *               by plain commands, never inside a script with A's keys.
 *
 * The rule that keeps a wake-up from being lost: once its writers are done,
 * A's entry in KEY_DUE is never later than the earliest score in key_dirty(A).
 *  - A step that may make a group due sooner (a fold) runs its script, which
 *    returns A's earliest due even when it changed nothing, and then lowers A's
 *    entry to it (ZADD LT) before the event that caused it is acknowledged: a
 *    process that dies in between gets the event redelivered, which repeats it.
 *  - A step that may make A due later (a claim, a finish) sets A's entry to
 *    what its script returned, then reads key_dirty(A) again and lowers the
 *    entry to that: a fold that landed between the script and the set is seen
 *    by the read. The last set of A's entry is always followed by such a read,
 *    and a fold after the read lowers the entry itself.
 * An entry that is too early costs one claim that finds nothing and corrects
 * it. A process that dies between a set and its read can leave an entry late:
 * schedule_repair (each process, once a minute) puts every association's
 * earliest due back.
 */
#ifndef CCSYNC_SCHEDULE_H
#define CCSYNC_SCHEDULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ccsync/keys.h"
#include "ccsync/model.h"

struct redisContext;
struct redisReply;

/* No group of the association waits. */
#define SCHEDULE_NONE INT64_MAX

/* Lua: A's earliest due as a string, or false; p is A's key prefix. */
#define SCHEDULE_LUA_EARLIEST                                                                      \
    "local function earliest(p)\n"                                                                 \
    "  return redis.call('ZRANGE', p .. '" KEY_ASSOC_DIRTY "', 0, 0, 'WITHSCORES')[2] or false\n"  \
    "end\n"

/* A due time as a script returned it (a score string, or nil: SCHEDULE_NONE). */
int64_t schedule_parse_due(const struct redisReply *r);

/* Appends "lower A's entry in KEY_DUE to due_ms" to c's pipeline without
 * reading the reply. Returns the number of commands appended (0 for
 * SCHEDULE_NONE, else 1). */
int schedule_append_wake(struct redisContext *c, const char *association, int64_t due_ms);

/* Lowers A's entry in KEY_DUE to due_ms now. STORE_OK or STORE_ERR. */
int schedule_wake(struct redisContext *c, const char *association, int64_t due_ms);

/* Sets A's entry to due_ms (removes it for SCHEDULE_NONE), as a script just
 * saw it, then reads A's earliest due again and lowers the entry to it. */
int schedule_settle(struct redisContext *c, const char *association, int64_t due_ms);

/* Up to max associations due by now_ms, earliest first, into out. */
int schedule_due_associations(struct redisContext *c, int64_t now_ms,
                              char (*out)[CCSYNC_ASSOC_ID_MAX + 1], size_t max, size_t *n);

struct schedule_claim {
    char group[CCSYNC_ID_MAX + 1];
    char gen[32]; /* the group's change counter when claimed */
};

/*
 * Claims up to max of A's groups due by now_ms whose leases are free, at once
 * (so that workers racing for a burst's groups do not split it into several
 * rounds): takes each lease (key_lease) with token for lease_ms and parks the
 * group at the lease's end. A due group whose lease someone holds is parked at
 * that lease's end instead (its holder rewrites it when done). Then settles A's
 * entry in KEY_DUE. *n is the number claimed; STORE_OK or STORE_ERR.
 */
int schedule_claim(struct redisContext *c, const char *association, int64_t now_ms, int lease_ms,
                   const char *token, struct schedule_claim *out, size_t max, size_t *n);

/*
 * schedule_claim, but a due group whose changes are still arriving (its last
 * change's due, last_due, is after now_ms) is held back until they stop, for
 * at most quiet_cap_ms after it was first held (0: never held): a burst goes
 * to CC in one round.
 */
int schedule_claim_quiet(struct redisContext *c, const char *association, int64_t now_ms,
                         int lease_ms, int64_t quiet_cap_ms, const char *token,
                         struct schedule_claim *out, size_t max, size_t *n);

/*
 * Ends a claimed group's sync. done: the group leaves the schedule unless its
 * gen moved past gen (a change arrived meanwhile: due at due_ms); not done:
 * due at due_ms. *earliest gets A's earliest due afterwards (settle A with it
 * once every group of the round is finished). KEY_RETRYING is updated too
 * (plain commands: it is global).
 */
int schedule_finish(struct redisContext *c, const char *association, const char *group,
                    const char *gen, bool done, int64_t due_ms, int64_t *earliest);
/* The same, only while fence (the token of a sync's lease) holds the group's lease,
 * checked in the script: SCHEDULE_FENCED, and nothing written, when another holds it. */
#define SCHEDULE_FENCED 1
int schedule_finish_fenced(struct redisContext *c, const char *association, const char *group,
                           const char *gen, const char *fence, bool done, int64_t due_ms,
                           int64_t *earliest);

/* Makes a group that is in the schedule due at due_ms (a handed-back claim). */
int schedule_requeue(struct redisContext *c, const char *association, const char *group,
                     int64_t due_ms);

/* Whether the group waits for a sync (or is being synced). */
int schedule_queued(struct redisContext *c, const char *association, const char *group,
                    bool *queued);

/* Groups waiting for a sync, over every association. */
int schedule_waiting(struct redisContext *c, long long *n);

/* Puts every association's earliest due back into KEY_DUE (ZADD LT). */
int schedule_repair(struct redisContext *c);

#endif
