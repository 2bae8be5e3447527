/*
 * facts.h - folding Novi's events into the desired state kept in Redis.
 *
 * Every fold is one Lua script, so it is atomic and safe to repeat: the newest
 * envelope timestamp wins per member record, per (group, member) membership and
 * per group fact, and a tie leaves the stored fact standing. A redelivered or
 * out-of-order event therefore changes nothing it should not. Groups whose
 * desired state changed are marked dirty in the association's schedule (due
 * after the coalescing delay) for a worker to sync, and the association is
 * woken in the global index of due associations (schedule.h).
 *
 * Keys (keys.h names them): the association's groups set, group facts
 * (key_group: name, sync, deleted, fact_ts, gen, next to the list link and sync
 * status sync.c writes), member records (key_member: rec, ts, gts, gset), each
 * member's groups (key_member_groups), each group's memberships
 * (key_group_members: member id -> "1|ts|join_ts" (in) or "0|ts" (out)) and
 * the audit list, and each member's history (key_member_events).
 * Timestamps are stored as fixed-width keys (facts_ts_key) that compare as
 * strings in time order; Lua numbers could not hold nanoseconds exactly.
 */
#ifndef CCSYNC_FACTS_H
#define CCSYNC_FACTS_H

#include <stddef.h>
#include <stdint.h>

#include "ccsync/model.h"

struct redisContext;

#define FACTS_TS_KEY_SIZE 23
/* key_group_folding exists while a group.members snapshot of G is being folded. */
#define FACTS_FOLDING_TTL_MS 30000

/*
 * A member's history: the script that folds a customer event also records,
 * in the same call, {"event_id","type","at","received_at","outcome","why"}
 * in key_member_events, keeping the newest FACTS_MEMBER_EVENTS. outcome is
 * "applied" (the fold stored the event as the newest fact, even when nothing
 * changed: why says so) or "ignored" (a newer or same-time fact stood). A
 * group.members snapshot records an entry only for the members whose
 * membership it changed (joined, or left by the sweep): a snapshot of 500,000
 * unchanged members writes no history. Group events touch no member.
 */
#define FACTS_MEMBER_EVENTS 20

/* Where a folded event came from, for the member's history. */
struct fold_origin {
    const char *event_id; /* the webhook-id */
    int64_t received_ns;  /* when ccsync accepted it (its queue entry's time) */
    /* Called between the chunks of a snapshot's fold (may be NULL): a fold of
     * 500,000 members takes longer than a queue entry may stay idle. */
    void (*progress)(void *arg);
    void *progress_arg;
};

/* "%012lld.%09d": seconds since 0001-01-01 and nanoseconds; sorts in time order. */
void facts_ts_key(int64_t ts_ns, char out[FACTS_TS_KEY_SIZE]);

/* The canonical JSON the store keeps for a record, and back. */
char *facts_record_json(const struct member_record *m);
int facts_record_parse(const char *json, const char *member_id, struct member_record *m);

/* Folds one parsed event of association; origin (NULL: no history is
 * recorded) names it in its members' histories. delay_ms is the coalescing delay for
 * groups it makes dirty. The association is woken (schedule_wake) before this
 * returns. STORE_OK, or STORE_ERR when Redis failed (retry the event). */
int facts_fold(struct redisContext *c, const char *association, const struct event *ev,
               const struct fold_origin *origin, int64_t now_ns, int delay_ms);

/*
 * Pipelined folding, for a worker's batch: appends ev's one script call to c
 * without reading its reply. Returns 1 appended, 0 when ev cannot go in a
 * pipeline (a group.members snapshot: fold it with facts_fold), -1 on failure.
 * Each appended call's reply is read, in order, with facts_fold_reply: 1 folded,
 * 0 the server lacked the script (fold that event again with facts_fold, which
 * loads it), -1 Redis failed. A folded event's *earliest is its association's
 * earliest due: wake the association with it (schedule_wake) before
 * acknowledging the event.
 */
int facts_fold_append(struct redisContext *c, const char *association, const struct event *ev,
                      const struct fold_origin *origin, int64_t now_ns, int delay_ms);
int facts_fold_reply(struct redisContext *c, int64_t *earliest);

/* Appends an audit entry (also used by the sync engine). STORE_OK or STORE_ERR. */
int facts_audit(struct redisContext *c, const char *association, const char *group_id,
                const char *action, const char *list_id, const char *list_name, const char *detail);

/* Marks a group dirty, due after delay_ms (kept earlier if already due sooner),
 * and wakes its association. STORE_OK or STORE_ERR. */
int facts_mark_dirty(struct redisContext *c, const char *association, const char *group_id,
                     int64_t now_ns, int delay_ms);

#endif
