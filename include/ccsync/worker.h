/*
 * worker.h - the worker threads: they take events from the stream, fold them
 * into state, and sync groups with Constant Contact.
 */
#ifndef CCSYNC_WORKER_H
#define CCSYNC_WORKER_H

struct app;
struct engine;

/* Starts cfg->workers threads; app->workers_up counts those in their loop. */
struct engine *engine_start(struct app *app);
/* Asks the threads to stop, waits up to grace_ms, frees the engine. */
void engine_stop(struct engine *e, long grace_ms);

#endif
