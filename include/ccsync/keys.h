/*
 * keys.h - the one place that names Redis keys.
 *
 * Every key that belongs to an association starts with "ccsync:{A}:", A being
 * the association id, so the part in braces is Redis Cluster's hash tag: all of
 * an association's keys live in one slot and a script may touch any of them.
 * No script touches two associations. The few keys that belong to no
 * association (the index of associations with events ready, the dead letters,
 * the schedule's index, the shared CC budget) are global and named here too.
 *
 * Release 1 named keys otherwise ("ccsync:a:A:...", a global "ccsync:dirty");
 * migrate.c, the only file that still spells those names, moves them here once.
 *
 * A builder returns a struct holding the key, so it can be used in place:
 *     redisCommand(c, "HGET %s name", key_group(assoc, group).s);
 * (C11 keeps such a temporary alive to the end of the full expression.)
 * Lua scripts receive the association's prefix (key_prefix) and append the
 * KEY_* suffixes below, so C and Lua spell each key the same way.
 *
 * docs/redis-layout.md lists every key, who writes it and how long it lives.
 */
#ifndef CCSYNC_KEYS_H
#define CCSYNC_KEYS_H

#include <stdbool.h>
#include <stddef.h>

/* Long enough for the prefix, a 64-character association id, a 128-character
 * Novi id and any suffix; ids longer than that are refused at the door. */
#define KEY_MAX 400

struct key {
    char s[KEY_MAX];
    bool cut; /* an id longer than the limits ingest enforces: the key was cut short */
};

#define KEY_ROOT "ccsync:"

/* Suffixes under an association's prefix (Lua uses them too). */
#define KEY_ASSOCIATION "association" /* hash: secrets, CC connection state */
#define KEY_GROUPS "groups"           /* set: group ids with a group fact */
#define KEY_GROUP "g:"                /* + G, hash: group fact, list link, status, journal */
#define KEY_FOLDING ":folding"        /* after a group key: a snapshot is being folded */
#define KEY_GROUP_MEMBERS "gm:"       /* + G, hash: member -> "1|ts|join" or "0|ts" */
#define KEY_APPLIED "ap:"             /* + G, hash: email -> contact as applied in CC */
#define KEY_MEMBER "m:"               /* + M, hash: rec, ts */
#define KEY_MEMBER_GROUPS "mg:"       /* + M, set: the member's groups */
#define KEY_AUDIT "audit"             /* list: audit entries, newest first */
#define KEY_FIELD_MAP "fieldmap"      /* string: the association's field mapping and tags (JSON) */
#define KEY_FIELDS_SENT "fs:"         /* + G, hash: email -> fields digest of an import in flight */
#define KEY_GROUP_TAG "gt:"           /* + G, hash: email -> contact id, contacts ccsync tagged */
#define KEY_DEDUP "dedup:"            /* + webhook id: seen recently */
#define KEY_LEASE "lease:"            /* + G: one worker syncs G */
#define KEY_RECONCILE_LEASE "reconcile-lease" /* one worker reconciles the association */
/* string "pending" or "done", expires a minute after someone asked for a
 * reconcile (POST .../reconcile): at most one ask a minute */
#define KEY_RECONCILE_ASKED "reconcile-asked"
#define KEY_REFRESH_LOCK "refresh-lock" /* one process refreshes the CC token */
/* zset G -> due ms: the association's groups to sync; a group being synced is
 * parked at its lease's end. Written by scripts with the association's other
 * keys (folds, claim, finish: schedule.h). */
#define KEY_ASSOC_DIRTY "dirty"
#define KEY_TOKENS "tokens"         /* hash: token id -> the token's record (hash, scope, name) */
#define KEY_TOKEN_USES "token-uses" /* hash: token id -> when it was last used (ns) */
/* zset M -> ms when the member left its last group: its record is deleted
 * CCSYNC_RETENTION_DAYS later (retention.c), unless it joins a group again. */
#define KEY_REMOVED "removed"
/* + M, list: the member's last FACTS_MEMBER_EVENTS folded events (JSON),
 * newest first (facts.c); deleted with the member's record (retention.c). */
#define KEY_MEMBER_EVENTS "mev:"
/* hash activity id -> "G|sent ms": imports whose outcome only refreshes counts,
 * sent by rounds that did not wait for them; checked together, one GET
 * /activities for the association, when KEY_ACTS_DUE says (actcheck.c). */
#define KEY_ACTS_OUT "acts-out"
/* + a random token, list of chunks: a webhook body too large for one command, written
 * a chunk a command (staged.c). Expires unless queued; once queued, its stream
 * entry names it, and the worker that folded the event deletes it. */
#define KEY_STAGED "staged:"
/* stream: the association's accepted webhooks (assoc, id, type, ts, body),
 * consumer group "workers" (queue.h). An entry is deleted once folded. */
#define KEY_ASSOC_EVENTS "events"

/* Notifications (notify.c): the settings and delivery state (hash), the
 * notifications not delivered yet (stream), the lease of the process
 * delivering them. */
#define KEY_NOTIFY "notify"
#define KEY_NOTIFY_EVENTS "notify:events"
#define KEY_NOTIFY_LEASE "notify-lease"

/* Global keys. */
/* The one stream of accepted webhooks of earlier releases, for every
 * association: no longer written, drained by the workers until empty (queue.h). */
#define KEY_LEGACY_EVENTS KEY_ROOT "events"
/* zset A -> when A joined the line (µs): the associations whose stream
 * (key_events) has entries not yet delivered. Written by plain commands only,
 * after the XADD (ingest) or after a read (the workers' turn): queue.h. */
#define KEY_EVENTS_READY KEY_ROOT "events:ready"
#define KEY_DEAD_LETTERS KEY_ROOT "events:dead" /* stream of events that could not be applied */
/* + "A:ID", the association and the event's id in its stream (an earlier
 * release's: ID alone): a dead letter's body, apart from its entry so that a
 * listing never reads bodies whole; expires after CCSYNC_RETENTION_DAYS. */
#define KEY_DEAD_BODY KEY_ROOT "events:dead:body:"
#define KEY_ASSOCIATIONS KEY_ROOT "associations" /* set of association ids */
#define KEY_CREDENTIALS KEY_ROOT "credentials"   /* stream: an entry when a PUT changes tokens */
/* set "A|G": last sync failed, will retry. Only plain commands write it (never a
 * script with an association's keys), after the finish script. */
#define KEY_RETRYING KEY_ROOT "retrying"
#define KEY_RECONCILE KEY_ROOT "reconcile" /* zset A -> next reconcile ms */
/* zset A -> when a round of its groups last ran (ms): recent activity or errors
 * make reconcile look sooner. Plain commands only. */
#define KEY_ACTIVE KEY_ROOT "active"
#define KEY_LAYOUT_VERSION KEY_ROOT "layout"     /* the layout this Redis holds (migrate.c) */
#define KEY_MIGRATE_LOCK KEY_ROOT "migrate-lock" /* one process migrates, the others wait */
/* zset A -> the earliest due ms in key_dirty(A): where workers find due
 * associations. Only plain commands write it, after a script that saw
 * key_dirty(A): ZADD LT after a fold; after a claim or finish, ZADD of what the
 * script saw, then a re-read of key_dirty(A) and ZADD LT (schedule.h). */
#define KEY_DUE KEY_ROOT "due"
/* zset A -> when A's outstanding activities (key_acts_out) are next checked
 * (ms). Plain commands only. */
#define KEY_ACTS_DUE KEY_ROOT "acts-due"

/* "ccsync:{A}:" */
struct key key_prefix(const char *association);

struct key key_association(const char *association);
struct key key_groups(const char *association);
struct key key_group(const char *association, const char *group);
struct key key_group_folding(const char *association, const char *group);
struct key key_group_members(const char *association, const char *group);
struct key key_applied(const char *association, const char *group);
struct key key_member(const char *association, const char *member);
struct key key_member_groups(const char *association, const char *member);
struct key key_member_events(const char *association, const char *member);
struct key key_audit(const char *association);
struct key key_field_map(const char *association);
struct key key_fields_sent(const char *association, const char *group);
struct key key_group_tag(const char *association, const char *group);
struct key key_dedup(const char *association, const char *webhook_id);
struct key key_lease(const char *association, const char *group);
struct key key_reconcile_lease(const char *association);
struct key key_reconcile_asked(const char *association);
struct key key_acts_out(const char *association);
struct key key_refresh_lock(const char *association);
struct key key_dirty(const char *association);
struct key key_tokens(const char *association);
struct key key_token_uses(const char *association);
struct key key_notify(const char *association);
struct key key_notify_events(const char *association);
struct key key_notify_lease(const char *association);
struct key key_events(const char *association);

/* "ccsync:instance:NAME": the leases one ccsyncd (named by its host and port)
 * holds, written by its heartbeat, so that the same instance restarted after a
 * kill -9 hands them back at once (lease.c). Global: a process holds leases of
 * many associations. */
struct key key_instance(const char *instance);
/* The association and group of a group's lease key; -1 when key is not one. */
int key_lease_parse(const char *key, char *association, size_t a_size, char *group, size_t g_size);

struct key key_removed(const char *association);
struct key key_dead_body(const char *body_id);
struct key key_staged(const char *association, const char *token);

/* The shared CC budget's keys: "ccsync:cc:{APP}:WHAT" (global: one key a CC
 * application, shared by every association). */
struct key key_budget(const char *app, const char *what);

/* "A|G", how KEY_RETRYING (and release 1's KEY_DIRTY) names a group. */
struct key key_schedule_member(const char *association, const char *group);

#endif
