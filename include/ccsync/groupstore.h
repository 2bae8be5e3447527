/*
 * groupstore.h - a group's records in Redis, as the sync engine reads and
 * writes them: the group hash (its fact, list link, status, journal), its
 * applied state (what ccsync knows is on the CC list) and its members.
 *
 * The only code of the engine that talks to these keys; every key comes from
 * keys.h. Functions return STORE_OK or STORE_ERR (store.h): the reason stays in
 * the context (c->err) or was a command error, and the caller's run fails with
 * SYNC_REDIS.
 *
 * Group hash fields written here (facts.c writes the group fact): state,
 * list_id, list_name, list_state (active | deleted_in_cc), err_code, err_msg,
 * err_since, last_synced_at, c_* counts, pending, journal, resync, verify.
 * The writes of a sync take fence, the token of the group's lease its writer
 * holds: Redis refuses the write (an error starting FENCED) unless the lease
 * still holds it. NULL writes unfenced (no lease is held: tests, tools).
 *
 * Applied hash: normalized email -> JSON ["on"|"unsub"|"rej", contact_id,
 * first_name, last_name] and, when fields are mapped (§12), the fields digest as a
 * fifth element.
 */
#ifndef CCSYNC_GROUPSTORE_H
#define CCSYNC_GROUPSTORE_H

#include <stdbool.h>
#include <stddef.h>

#include "ccsync/ccapi.h"
#include "ccsync/plan.h"

struct redisContext;

#define LIST_NAME_MAX 255

/* The group hash as one sync sees it. */
struct group_state {
    bool exists; /* a group fact was folded (fact_ts is set) */
    char name[LIST_NAME_MAX + 1];
    bool sync;
    bool deleted;
    bool resync;
    bool verify;
    char list_id[CCAPI_ID_SIZE];
    char list_name[LIST_NAME_MAX + 1];
    bool list_deleted_in_cc;
    char journal[4096];
    long long gen;
};

int group_load(struct redisContext *c, const char *association, const char *group,
               struct group_state *gs);

/* 1 when a snapshot is being folded into the group right now, 0 not, STORE_ERR. */
int group_is_folding(struct redisContext *c, const char *association, const char *group);

/* The group's ids (the association's groups set). Caller frees with group_ids_free. */
int group_ids_load(struct redisContext *c, const char *association, char ***ids, size_t *n);
void group_ids_free(char **ids, size_t n);

/* Records an error for the status endpoint, with state (normally "error");
 * err_since keeps the first time this error was seen. */
int group_set_error(struct redisContext *c, const char *association, const char *group,
                    const char *fence, const char *state, const char *code, const char *message);
int group_clear_error(struct redisContext *c, const char *association, const char *group,
                      const char *fence);
/* state "syncing" while a sync runs; synced (with last_synced_at) when done. */
int group_set_syncing(struct redisContext *c, const char *association, const char *group,
                      const char *fence);
int group_set_synced(struct redisContext *c, const char *association, const char *group,
                     const char *fence);
/* The plan's counts and its pending operations, for the status endpoint. */
int group_write_counts(struct redisContext *c, const char *association, const char *group,
                       const char *fence, const struct plan *pl);
/* Sync off: no list, counts zero, no error. */
int group_set_disabled(struct redisContext *c, const char *association, const char *group,
                       const char *fence);
int group_clear_resync(struct redisContext *c, const char *association, const char *group,
                       const char *fence);
int group_clear_verify(struct redisContext *c, const char *association, const char *group,
                       const char *fence);
/* Reconcile doubts the list: the next sync reads it back first. */
int group_set_verify(struct redisContext *c, const char *association, const char *group);
/* The counts reconcile compares with CC's: 1 known (*in_list, *settled: nothing
 * pending and synced), 0 not recorded, STORE_ERR. */
int group_list_count(struct redisContext *c, const char *association, const char *group,
                     long *in_list, bool *settled);

/* The list link. Linking or unlinking a list forgets its applied state. */
int group_link_list(struct redisContext *c, const char *association, const char *group,
                    const char *fence, const char *list_id, const char *name);
int group_unlink_list(struct redisContext *c, const char *association, const char *group,
                      const char *fence, bool drop_journal);
int group_rename_list(struct redisContext *c, const char *association, const char *group,
                      const char *name);
int group_mark_list_deleted(struct redisContext *c, const char *association, const char *group,
                            const char *fence);

/* The rest of a sync's writes, fenced like the others (fence NULL: plain). The
 * retry count of a group whose sync failed (*attempts: the count after it). */
int group_count_attempt(struct redisContext *c, const char *association, const char *group,
                        const char *fence, long *attempts);
int group_clear_attempts(struct redisContext *c, const char *association, const char *group,
                         const char *fence);
/* The group's tag (§12): its id and name, forgotten with the contacts it tagged;
 * group_tag_append records (contact_id) or forgets (NULL) one tagged contact,
 * pipelined: the caller drains the reply. */
int group_tag_store(struct redisContext *c, const char *association, const char *group,
                    const char *fence, const char *tag_id, const char *tag_name);
int group_tag_forget(struct redisContext *c, const char *association, const char *group,
                     const char *fence);
void group_tag_append(struct redisContext *c, const char *association, const char *group,
                      const char *fence, const char *email, const char *contact_id);
/* facts_audit's entry, written only while fence holds the group's lease. */
int group_audit(struct redisContext *c, const char *association, const char *group,
                const char *fence, const char *action, const char *list_id, const char *list_name,
                const char *detail);
/* Forgets a deleted group whose list is gone, keeping its tombstone (see groupstore.c). */
int group_forget(struct redisContext *c, const char *association, const char *group,
                 const char *fence);

/* The journal field: the CC request in flight (journal.c says what it holds). */
int group_journal_write(struct redisContext *c, const char *association, const char *group,
                        const char *fence, const char *json);
int group_journal_clear(struct redisContext *c, const char *association, const char *group,
                        const char *fence);

/* ---- applied state ---- */

struct applied_set {
    size_t n;
    struct applied_contact *items;
    char **strings; /* owned: 5 per item */
};

int applied_load(struct redisContext *c, const char *association, const char *group,
                 struct applied_set *s);
void applied_free(struct applied_set *s);
/* Pipelined (redisAppendCommand): the caller reads the replies with store_drain
 * before its next command. status is "on", "unsub" or "rej". */
void applied_append_put(struct redisContext *c, const char *association, const char *group,
                        const char *fence, const char *email, const char *status,
                        const char *contact_id, const char *first_name, const char *last_name,
                        const char *fields);
void applied_append_remove(struct redisContext *c, const char *association, const char *group,
                           const char *fence, const char *email);
int applied_remove(struct redisContext *c, const char *association, const char *group,
                   const char *fence, const char *email);
/* 1 when the email has an entry, 0 not, STORE_ERR. */
int applied_has(struct redisContext *c, const char *association, const char *group,
                const char *email);
/* Records the contact id of an existing entry (none: nothing happens). */
int applied_set_contact_id(struct redisContext *c, const char *association, const char *group,
                           const char *fence, const char *email, const char *contact_id);
/* The same in a loaded set: item i's contact id becomes a copy of contact_id. */
int applied_note_contact_id(struct applied_set *s, size_t i, const char *contact_id);

/* ---- fields in flight (§12) ---- */

/* The fields digest of each contact of an import about to be sent (email -> digest),
 * pipelined: a read-back after a crash takes it as what CC holds for a contact the
 * import put on the list. Cleared with fields_sent_clear once the list is known.
 * Returns the commands appended (a command a few hundred contacts): the caller
 * drains as many replies. */
size_t fields_sent_append(struct redisContext *c, const char *association, const char *group,
                          const char *fence, const char *const *emails, const char *const *digests,
                          size_t n);
/* email -> digest of what is in flight (caller frees with fields_sent_free). */
struct fields_sent {
    size_t n;
    char **emails; /* sorted; each followed, after its NUL, by its digest */
};
int fields_sent_load(struct redisContext *c, const char *association, const char *group,
                     struct fields_sent *s);
const char *fields_sent_get(const struct fields_sent *s, const char *email);
void fields_sent_free(struct fields_sent *s);
int fields_sent_clear(struct redisContext *c, const char *association, const char *group,
                      const char *fence);

/* ---- members ---- */

struct member_set {
    size_t n;
    struct member_record *records;
    struct plan_member *members;
};

/* The group's active members with their records. */
int members_load(struct redisContext *c, const char *association, const char *group,
                 struct member_set *s);
void members_free(struct member_set *s);

#endif
