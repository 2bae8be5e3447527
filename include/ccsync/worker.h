/*
 * worker.h - the worker threads: they take events from the stream, fold them
 * into state, and sync groups with Constant Contact.
 */
#ifndef CCSYNC_WORKER_H
#define CCSYNC_WORKER_H

#include <stdbool.h>

struct app;
struct engine;

/* Starts cfg->workers threads; app->workers_up counts those in their loop. */
struct engine *engine_start(struct app *app);
/* Asks the threads to stop, waits up to grace_ms, frees the engine. */
/* Returns true when every worker thread stopped within grace_ms; false when
 * some are still running (inside a Constant Contact call, say): the caller then
 * must not free what they use (libcurl's globals, the Redis pool). */
bool engine_stop(struct engine *e, long grace_ms);

#endif
