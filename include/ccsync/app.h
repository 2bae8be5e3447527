/*
 * app.h - what the HTTP handlers share: the configuration, the Redis pool, the
 * ingest pipeline and the process's life-cycle flags. One instance, made by
 * main.c; the flags are atomics because every thread reads them.
 */
#ifndef CCSYNC_APP_H
#define CCSYNC_APP_H

#include <stdatomic.h>
#include <stdint.h>

#include "ccsync/config.h"
#include "ccsync/durability.h"

struct store_pool;
struct ingest;
struct engine;

struct app {
    const struct config *cfg;
    struct store_pool *pool;
    struct ingest *ingest;
    struct engine *engine;     /* the worker threads; NULL in tests of the HTTP side alone */
    struct notifier *notifier; /* notifications' delivery thread (notify.c); may be NULL */
    atomic_bool starting;      /* Redis not reached or its layout migrating: only health answers */
    atomic_bool draining;      /* SIGTERM seen: readyz 503, no new work */
    atomic_int workers_up;     /* worker threads running their loop */
    int64_t started_at_ns;
    /* What Redis's settings promise for acknowledged events, judged at start
     * against CCSYNC_DURABILITY; shown in /v1/status. Written before any thread. */
    struct durability_report durability;
};

#endif
