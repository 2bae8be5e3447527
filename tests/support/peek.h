/* The one place where tests look into (or write to) Redis behind ccsyncd's
 * back. Every key comes from include/ccsync/keys.h, so when the layout or the
 * schedule changes, the peeks change here and nowhere else. Keep them few: a
 * test should assert what the API and ccsim show; a peek is for what neither
 * can show (the journal a killed process left, the lease it held, a key's TTL).
 * Every function fails the running test on a Redis error. */
#ifndef CCSYNC_TEST_PEEK_H
#define CCSYNC_TEST_PEEK_H

#include <hiredis/hiredis.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <sys/types.h>
#include <time.h>

/* A connection to 127.0.0.1:port (2 s timeout); the caller frees it. */
redisContext *peek_connect(int port);
/* A cmocka setup's Redis: a throwaway redis-server on a free port (ts_redis_start)
 * and a connection to it; NULL when either failed (a started server is stopped
 * again). *pid and, unless port is NULL, *port say which. */
redisContext *peek_redis_open(pid_t *pid, int *port);
/* The teardown's: frees c (NULL too) and kills the server peek_redis_open started. */
void peek_redis_close(redisContext *c, pid_t pid);
/* One command; fails on an error reply. The caller frees the reply. */
redisReply *peek_command(redisContext *c, const char *fmt, ...);
/* One command whose reply is an integer. */
long long peek_integer(redisContext *c, const char *fmt, ...);

/* Empties the Redis on port (FLUSHALL): a fixture between tests of one server. */
void peek_flushall(int port);

/* XINFO STREAM's entries-added (every entry ever added); 0 without the stream. */
long long peek_entries_added(redisContext *c, const char *stream);

/* Entries ever added to the event streams: every association's
 * (key_events) and the legacy one's (KEY_LEGACY_EVENTS). */
long long peek_events_added(redisContext *c);

/* The webhook id's dedup key: whether it exists, its TTL in seconds. */
bool peek_dedup_exists(redisContext *c, const char *association, const char *webhook_id);
long long peek_dedup_ttl(redisContext *c, const char *association, const char *webhook_id);
/* Whether the association's hash / its token refresh lock exist. */
bool peek_association_exists(redisContext *c, const char *association);
bool peek_refresh_lock_exists(redisContext *c, const char *association);

/* The shared CC budget of CC application app: the association's field of the
 * "served" hash, -1 when absent or on any error (it never fails the test, so a
 * thread other than cmocka's may call it); the request count of the UTC day
 * holding the time at (-1 when absent) and that key's TTL. */
long long peek_budget_served(redisContext *c, const char *app, const char *association);
long long peek_budget_day(redisContext *c, const char *app, time_t at, long long *ttl);

/* The journal ccsyncd left in group g's hash (what it had in flight), parsed;
 * NULL when there is none. The caller puts it. */
json_object *peek_journal(redisContext *c, const char *association, const char *g);

/*
 * What the lease time after a holder's death does, done now so that a test can
 * crash ccsyncd several times in well under a lease: the dead holder's leases
 * expire and the groups it parked are due. With only_g, only group g's lease
 * (other processes may be alive and hold others); else every lease of the
 * association, so call it only while no ccsyncd runs. Fails unless g's lease was
 * still held (the dead process did hold it).
 */
void peek_expire_dead_leases(redisContext *c, const char *association, const char *g, bool only_g);

#endif
