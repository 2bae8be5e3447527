/*
 * group_metrics.c - the ccsync_groups{state,error_code} gauges: how many groups
 * of every association are in each state, with their error code, so that a
 * Grafana panel and an alert ("a list was deleted in Constant Contact") need no
 * JSON. Counted from Redis at scrape time, so every process reports the same
 * numbers (alert on max(), not sum()).
 *
 * A group counts as GET .../groups shows it: one without a group fact, or a
 * deleted one whose list is gone (a tombstone), does not count; one without a
 * state yet is pending (sync on) or disabled.
 */
#include "ccsync/admin.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <string.h>

#include "ccsync/keys.h"
#include "ccsync/metrics.h"
#include "ccsync/store.h"

#define TALLY_MAX 64

static const char *const states[] = {"pending", "syncing", "synced", "error", "disabled"};

struct tally {
    size_t n;
    char labels[TALLY_MAX][128];
    const char *label_ptrs[TALLY_MAX];
    double count[TALLY_MAX];
};

/* A label value from Redis, kept only when it is a plain code (no escaping needed). */
static const char *plain(const redisReply *v)
{
    if (!v || v->type != REDIS_REPLY_STRING || v->len == 0 || v->len > 64)
        return "";
    return strspn(v->str, "abcdefghijklmnopqrstuvwxyz0123456789_") == v->len ? v->str : "other";
}

static void tally_add(struct tally *t, const char *state, const char *code, double n)
{
    char labels[128];
    snprintf(labels, sizeof labels, "state=\"%s\",error_code=\"%s\"", state, code);
    for (size_t i = 0; i < t->n; i++) {
        if (strcmp(t->labels[i], labels) == 0) {
            t->count[i] += n;
            return;
        }
    }
    if (t->n == TALLY_MAX)
        return;
    snprintf(t->labels[t->n], sizeof t->labels[t->n], "%s", labels);
    t->label_ptrs[t->n] = t->labels[t->n];
    t->count[t->n++] = n;
}

/* One group's HMGET reply: state err_code sync deleted list_id fact_ts. */
static void tally_group(struct tally *t, const redisReply *r)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 6)
        return;
    bool has_fact = r->element[5]->type == REDIS_REPLY_STRING;
    bool deleted =
        r->element[3]->type == REDIS_REPLY_STRING && strcmp(r->element[3]->str, "1") == 0;
    bool has_list = r->element[4]->type == REDIS_REPLY_STRING && r->element[4]->len > 0;
    if (!has_fact || (deleted && !has_list))
        return;
    const char *state = plain(r->element[0]);
    if (!*state) {
        bool sync =
            r->element[2]->type == REDIS_REPLY_STRING && strcmp(r->element[2]->str, "1") == 0;
        state = sync ? "pending" : "disabled";
    }
    tally_add(t, state, plain(r->element[1]), 1);
}

/* Tallies the groups of association a (one pipelined HMGET a group). */
static int tally_association(redisContext *c, const char *a, struct tally *t)
{
    redisReply *ids = store_command(c, "SMEMBERS %s", key_groups(a).s);
    if (!ids || ids->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(ids);
        return STORE_ERR;
    }
    for (size_t i = 0; i < ids->elements; i++)
        redisAppendCommand(c, "HMGET %s state err_code sync deleted list_id fact_ts",
                           key_group(a, ids->element[i]->str).s);
    int rc = STORE_OK;
    for (size_t i = 0; i < ids->elements; i++) {
        redisReply *r = NULL;
        if (redisGetReply(c, (void **)&r) != REDIS_OK) {
            rc = STORE_ERR;
            break;
        }
        tally_group(t, r);
        freeReplyObject(r);
    }
    freeReplyObject(ids);
    return rc;
}

int group_metrics_refresh(redisContext *c)
{
    if (!c)
        return STORE_ERR;
    struct tally t = {0};
    for (size_t i = 0; i < sizeof states / sizeof states[0]; i++)
        tally_add(&t, states[i], "", 0); /* every state has a series, 0 or not */
    redisReply *assocs = store_command(c, "SMEMBERS %s", KEY_ASSOCIATIONS);
    int rc = assocs && assocs->type == REDIS_REPLY_ARRAY ? STORE_OK : STORE_ERR;
    for (size_t i = 0; rc == STORE_OK && i < assocs->elements; i++)
        rc = tally_association(c, assocs->element[i]->str, &t);
    freeReplyObject(assocs);
    if (rc == STORE_OK) /* a failed read keeps the last numbers rather than zeros */
        metrics_set_all("ccsync_groups", t.n, t.label_ptrs, t.count);
    return rc;
}
