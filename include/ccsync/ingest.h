/*
 * ingest.h - the durable enqueue of accepted webhooks, and the webhook endpoint.
 *
 * Requests hand their event to one pipeline thread. The thread takes every job
 * waiting, sends them to Redis on one connection as a pipeline of EVALSHA calls
 * (dedup + XADD in one script each), and completes each job when its own reply
 * arrives. This shares round trips between concurrent requests, which is what
 * lets ingest keep up with the HTTP server.
 */
#ifndef CCSYNC_INGEST_H
#define CCSYNC_INGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ccsync/config.h"

enum ingest_result {
    INGEST_PENDING = 0,
    INGEST_QUEUED,      /* new entry in the stream */
    INGEST_DUPLICATE,   /* webhook-id seen before: nothing queued */
    INGEST_UNAVAILABLE, /* Redis did not answer: nothing queued, the sender retries */
};

/* Dedup keys outlive every retry schedule of a webhook sender. */
#define INGEST_DEDUP_TTL_SECONDS (7 * 24 * 3600)

struct ingest_job {
    /* input, owned by the submitter and kept alive until done() runs */
    const char *association_id;
    const char *webhook_id;
    const char *type;
    int64_t ts_ns;
    const char *body;
    size_t body_len;
    /* output */
    enum ingest_result result;
    char entry_id[48]; /* stream entry id when queued */
    /* called once on the pipeline thread when result is set */
    void (*done)(struct ingest_job *job, void *arg);
    void *arg;
    struct ingest_job *next; /* private */
};

struct ingest;
/* replica_wait_ms > 0: after each pipelined batch, WAIT 1 replica_wait_ms, and a
 * batch no replica confirmed is answered 503 (CCSYNC_DURABILITY=replica). */
struct ingest *ingest_new(const struct redis_target *t, int replica_wait_ms);
void ingest_submit(struct ingest *in, struct ingest_job *job);
/* Finishes the jobs already submitted, then stops the thread; a job submitted
 * afterwards is answered INGEST_UNAVAILABLE at once. Called before the HTTP
 * daemon stops, so that no suspended request is left waiting. */
void ingest_stop(struct ingest *in);
/* ingest_stop, then frees (after the HTTP daemon, whose requests use it, stopped). */
void ingest_free(struct ingest *in);

struct app;
struct http_request;
/* POST /v1/associations/{association_id}/webhooks/novi */
int ingest_handle_webhook(struct app *app, struct http_request *req);
/* What a webhook is refused for before its body is read: a missing webhook-*
 * header or a stale timestamp (401), Redis unavailable (503), the association's
 * allowance spent (429 + Retry-After). An unknown association goes on with its
 * body discarded, to be answered as a wrong signature. False when answered. */
bool ingest_precheck(struct app *app, struct http_request *req);
/* The Lua script of one association's events of a batch (KEYS: the stream, then
 * each event's dedup key; ARGV: ttl, association, then id, type, ts and body of
 * each event); exported for tests/bench/ingest_parts.c, which times it. */
extern const char ingest_enqueue_script[];
/* Forget a cached webhook secret (after a PUT changed it). */
void ingest_forget_secret(struct ingest *in, const char *association_id);

#endif
