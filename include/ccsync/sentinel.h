/*
 * sentinel.h - finding the Redis primary through Redis Sentinel
 * (CCSYNC_REDIS_SENTINELS, CCSYNC_REDIS_MASTER_NAME).
 *
 * Every new connection asks again, so after a failover the next connection
 * goes to the new primary without a restart; a connection that meets READONLY,
 * MASTERDOWN or LOADING is dropped (store.c), which is what makes it ask.
 * A Sentinel's answer is checked with ROLE on the address it gave: in the
 * middle of a failover one Sentinel may still name the old primary.
 */
#ifndef CCSYNC_SENTINEL_H
#define CCSYNC_SENTINEL_H

#include <stddef.h>

#define SENTINEL_MAX 8

struct sentinel_addr {
    char host[256];
    int port;
};

struct sentinel_set {
    struct sentinel_addr addr[SENTINEL_MAX];
    size_t n;
    char master_name[128];
};

/* Parses "host:port,host:port,[v6addr]:port" (port 26379 when left out) into s.
 * 0, or -1 with the problem in err. */
int sentinel_parse_list(const char *list, struct sentinel_set *s, char *err, size_t err_size);

/*
 * The primary's address: asks each Sentinel in turn for master_name and keeps
 * the first answer whose ROLE says master. password and username (may be "")
 * authenticate to the primary, not to the Sentinels. 0, or -1 with why in err
 * (no Sentinel answered, none knows the name, or none named a primary).
 */
int sentinel_find_primary(const struct sentinel_set *s, const char *username, const char *password,
                          int timeout_ms, char *host, size_t host_size, int *port, char *err,
                          size_t err_size);

#endif
