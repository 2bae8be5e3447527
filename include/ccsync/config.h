/*
 * config.h - the service's configuration, read from the environment once at
 * start and validated there. Nothing else in ccsync reads getenv.
 */
#ifndef CCSYNC_CONFIG_H
#define CCSYNC_CONFIG_H

#include <stddef.h>

#include "ccsync/secrets.h"
#include "ccsync/sentinel.h"

enum log_format { LOG_FORMAT_JSON = 0, LOG_FORMAT_TEXT };
enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

struct redis_target {
    char host[256];
    int port;
    char password[256]; /* "" when none; a secret */
    char username[128]; /* "" when none (Redis 6 ACL) */
    int db;
    /* When sentinels.n > 0, host and port are only the last primary seen: every
     * connection asks the Sentinels first (CCSYNC_REDIS_SENTINELS). */
    struct sentinel_set sentinels;
};

struct config {
    char listen_host[64];
    int listen_port;
    /* CCSYNC_ADMIN_LISTEN: when admin_listen_port > 0, the admin API, the status page
     * and /metrics are served there only; the public listener keeps webhooks and health. */
    char admin_listen_host[64];
    int admin_listen_port;
    char redis_url[600];
    struct redis_target redis;
    char admin_token[256]; /* secret */
    char cc_api_url[512];
    char cc_token_url[512];
    char cc_client_id[256];
    char cc_client_secret[256]; /* secret */
    double cc_rate_per_sec;
    long cc_daily_limit;
    int workers;
    int reconcile_seconds;
    enum log_format log_format;
    enum log_level log_level;
    size_t max_body_bytes;
    int shutdown_grace_seconds;
    int http_threads;
    int sync_delay_ms;      /* how long changes to a group are coalesced before a sync */
    int lease_seconds;      /* how long a worker holds a group (or a reconcile) without renewing */
    int durability;         /* enum durability_mode: CCSYNC_DURABILITY */
    int replica_timeout_ms; /* CCSYNC_REPLICA_TIMEOUT_MS: replica mode's WAIT */
    int notify_allow_private; /* CCSYNC_NOTIFY_ALLOW_PRIVATE=1: notify private addresses */

    /* Secrets at rest (CCSYNC_SECRETS_KEY_FILE): the key ring, read once at
     * start. secrets.n == 0 only with CCSYNC_ALLOW_PLAINTEXT_SECRETS=1. */
    char secrets_key_file[512];
    struct secrets_ring secrets;
    int allow_plaintext_secrets;
    double reconcile_budget_share; /* CCSYNC_RECONCILE_BUDGET_SHARE: reconcile's part of the day */
    int sync_delay_max_seconds;    /* CCSYNC_SYNC_DELAY_MAX_SECONDS: the widest coalescing wait */

    /* Limits against hostile input (README: "Limits"). */
    int request_deadline_seconds;   /* CCSYNC_REQUEST_DEADLINE_SECONDS: a whole request */
    int max_connections;            /* CCSYNC_MAX_CONNECTIONS: in all */
    int max_connections_per_ip;     /* CCSYNC_MAX_CONNECTIONS_PER_IP */
    size_t max_inflight_body_bytes; /* CCSYNC_MAX_INFLIGHT_BODY_BYTES: bodies buffered at once */
    int max_groups_per_member;      /* CCSYNC_MAX_GROUPS_PER_MEMBER */
    int max_snapshot_members;       /* CCSYNC_MAX_SNAPSHOT_MEMBERS */
    int retention_days;             /* CCSYNC_RETENTION_DAYS: dead letters, removed members */
    int ingest_rate;                /* CCSYNC_INGEST_RATE: an association's webhooks a second */
    int ingest_burst;               /* CCSYNC_INGEST_BURST: ... taken at once above the rate */
    size_t enqueue_chunk_bytes;     /* CCSYNC_ENQUEUE_CHUNK_BYTES: a larger body is staged */

    /* Optional bootstrap of one association (single-association deployments). */
    char boot_association_id[65];
    char boot_webhook_secret[256];
    char boot_cc_access_token[4096];
    char boot_cc_refresh_token[4096];
    char boot_cc_expires_at[64];
};

/* Where a variable's value comes from; getenv in production, a table in tests. */
typedef const char *(*config_lookup_fn)(const char *name);

/* Writes the message into err and returns -1: how every parser of configuration
 * (the environment, a Sentinel list, a key file) reports what is wrong. */
int config_error(char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Fills c from lookup. Returns 0, or -1 with one line naming the variable and
 * the problem in err (the caller prints it and exits with status 2). */
int config_load(struct config *c, config_lookup_fn lookup, char *err, size_t err_size);

/* Parses redis://[[user][:password]@]host[:port][/db] into t: user and password
 * percent-decoded, host a name, an IPv4 address or [IPv6]. 0 or -1. */
int config_parse_redis_url(const char *url, struct redis_target *t, char *err, size_t err_size);

#endif
