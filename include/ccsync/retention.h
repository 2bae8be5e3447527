/*
 * retention.h - what ccsync keeps only CCSYNC_RETENTION_DAYS: dead letters, and
 * the records (email, names) of members who left every group.
 */
#ifndef CCSYNC_RETENTION_H
#define CCSYNC_RETENTION_H

#include <stdint.h>

struct redisContext;

/* Members whose records one script deletes at most: a sweep is a series of
 * short scripts, whatever the backlog. */
#define RETENTION_BATCH 500

/*
 * Deletes what is older than retention_days at now_ms: dead letters (the
 * stream trimmed by age; their bodies expire by themselves) and the records of
 * members who left their last group before then and have not joined one since
 * (the record's time and group list stay, so that an older event arriving late
 * still loses to the newer facts). Idempotent: any process may run it, at any
 * time. Returns the records deleted, or -1 when Redis failed.
 */
long retention_sweep(struct redisContext *c, int retention_days, int64_t now_ms);

#endif
