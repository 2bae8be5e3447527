/* The stack under test: a redis-server, the Constant Contact simulator (ccsim)
 * and one or two ccsyncd processes on free loopback ports, with the association
 * ASSOC connected. Each test states the timings it needs (rates, lease,
 * reconcile, sync delay) in struct stack_options instead of sitting out
 * production values; any CCSYNC_* variable can be overridden through env.
 *
 * Binaries: $CCSYNCD_BIN and $CCSIM_BIN, by default $BUILD/ccsyncd and
 * $BUILD/ccsim. Process logs go to /tmp/ccsync-<test>-<pid>/NN-<process>.log
 * (the folder is printed once). */
#ifndef CCSYNC_TEST_STACK_H
#define CCSYNC_TEST_STACK_H

#include <stdbool.h>
#include <sys/types.h>

#include "reply.h"

#define ASSOC "acme"
#define SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define ADMIN_TOKEN "test-admin-token"
#define DEV_TOKEN "sim-dev-token"
#define STACK_MAX_CCSYNCD 2
#define STACK_MAX_ENV 8
/* Deadlines exist only so that a broken engine cannot hang the suite. */
#define WAIT_MS 60000

enum stack_connect {
    STACK_DEV_TOKEN = 0, /* ASSOC connected with ccsim's never-expiring dev token */
    STACK_MINTED_TOKEN,  /* a token pair minted by ccsim (stack.access, stack.refresh) */
    STACK_SECRET_ONLY,   /* only the webhook secret: the test PUTs tokens itself */
};

/* workers: an ingest-only ccsyncd (CCSYNC_WORKERS=0), whose events wait. */
#define STACK_NO_WORKERS (-1)

/* Zero means the default named beside each field. */
struct stack_options {
    int sim_rate;          /* ccsim --rate: 4 is production's limit; 0 off (default) */
    int cc_rate;           /* CCSYNC_CC_RATE_PER_SEC (default 100) */
    int activity_ms;       /* ccsim --activity-ms (default 200) */
    int workers;           /* CCSYNC_WORKERS (default 2; STACK_NO_WORKERS: 0, ingest only) */
    int reconcile_seconds; /* CCSYNC_RECONCILE_SECONDS (default 3600: out of the way) */
    int lease_seconds;     /* CCSYNC_LEASE_SECONDS (default 15, production's) */
    int sync_delay_ms;     /* CCSYNC_SYNC_DELAY_MS (default 100) */
    int n_ccsyncd;         /* processes on the one Redis (default 1) */
    bool aof;              /* Redis persists (AOF, fsync always) in the test's folder */
    bool aof_everysec;     /* with aof: appendfsync everysec (production's) instead */
    bool ccsyncd_later;    /* Redis and ccsim only: the test fills Redis first, then
                            * calls stack_start_service */
    bool admin_listener;   /* CCSYNC_ADMIN_LISTEN on a port of its own: api() goes there */
    bool pausable;         /* ccsyncd processes in process groups of their own
                            * (ts_spawn_logged_apart): for a test that SIGSTOPs one */
    enum stack_connect connect;
    const char *env[STACK_MAX_ENV]; /* more "CCSYNC_X=v" for ccsyncd, over the above */
};

struct stack {
    struct stack_options o;
    pid_t redis_pid, sim_pid, ccsyncd_pid[STACK_MAX_CCSYNCD];
    int redis_port, sim_port, http_port[STACK_MAX_CCSYNCD];
    char sim_root[64];                      /* http://127.0.0.1:PORT of ccsim */
    char base[STACK_MAX_CCSYNCD][64];       /* http://127.0.0.1:PORT of each ccsyncd */
    int admin_port[STACK_MAX_CCSYNCD];      /* with admin_listener, else 0 */
    char admin_base[STACK_MAX_CCSYNCD][64]; /* where api() goes: base, or the admin listener */
    char log_dir[128], data_dir[192];
    char key_file[192]; /* CCSYNC_SECRETS_KEY_FILE: STACK_KEY_LINE unless a test rewrites it */
    int serial;         /* the stack's number in this binary */
    long msg_serial;    /* webhook ids sent */
    char access[256], refresh[256]; /* minted tokens (STACK_MINTED_TOKEN) */
};

/* The one stack of the running test binary. */
extern struct stack stack;

/* Starts the stack for test (names the log folder); 0 or -1. */
int stack_start(const char *test, const struct stack_options *o);
/* A cmocka setup: the stack with every default (no CC rate limit in ccsim, a high
 * budget in ccsync), named after the test binary. */
int stack_setup(void **state);
/* With ccsyncd_later: starts the ccsyncd processes and connects ASSOC; 0 or -1. */
int stack_start_service(void);
/* Stops every process of the stack (a cmocka teardown). */
int stack_stop(void **state);

/* The stack's key ring: secrets are sealed at rest in every test, as in
 * production. A test that rotates keys rewrites the file and restarts ccsyncd. */
#define STACK_KEY_ID "test-1"
#define STACK_KEY_LINE STACK_KEY_ID " MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
/* Replaces stack.key_file's text (mode 0600); 0 or -1. */
int stack_write_key_file(const char *text);

/* (Re)starts Redis on stack.redis_port; 0 or -1. */
int stack_start_redis(void);
/* (Re)starts ccsyncd number i and waits until /readyz answers 200; 0 or -1. */
int stack_start_ccsyncd(int i);
/* SIGKILLs ccsyncd number i: no drain, no lease given back. */
void stack_kill_ccsyncd(int i);
/* The path of the log of process what in this stack's folder. */
void stack_log_path(char *out, size_t size, const char *what);

/* Lines of ccsyncd i's log (this stack's) that hold needle. */
int stack_log_count(int i, const char *needle);
/* Waits until ccsyncd i's log holds needle n times; fails after wait_ms. */
void wait_log_count(int i, const char *needle, int n, long wait_ms);
/* The line ccsyncd logs after each reconcile of an association. */
#define LOG_RECONCILED "\"msg\":\"reconciled\""
/* Waits for n more reconcile rounds of ccsyncd 0 (from now): lets a test show
 * that rounds went by without a change. */
void wait_reconcile_rounds(int n);

/* An admin call (bearer ADMIN_TOKEN) to ccsyncd number i, or to the first. */
struct reply api_at(int i, const char *method, const char *path, const char *body);
struct reply api(const char *method, const char *path, const char *body);
/* api() to the first ccsyncd, returning the parsed body (the caller puts it) and
 * the HTTP status into *status. */
json_object *api_json(const char *method, const char *path, const char *body, long *status);

/* PUT the association with SECRET and these tokens (refresh may be NULL). */
void put_tokens(const char *access, const char *refresh);
/* A fresh token pair minted by ccsim into access and refresh (256 bytes each). */
void mint_tokens(char *access, char *refresh);

#endif
