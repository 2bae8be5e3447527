/*
 * ingest_parts.c - what one webhook costs in each part of the work ccsyncd does
 * for it, beside the same part done the cheapest way, measured in one run:
 *
 *   - the signature (webhook_verify: HMAC-SHA256 and a constant-time compare);
 *   - the body's validation (webhook_parse_event_limited), beside json-c's parse
 *     alone (json_tokener_parse), the library's share of it;
 *   - the request's log line (http.c writes one a webhook), to /dev/null;
 *   - Redis: CPU per event of the enqueue script as ingest sends it (one call per
 *     association and batch), beside the previous release's script (one call an
 *     event), XADD + SET without a script, and a bare XADD of the body (what the
 *     webdis peer of `make bench` does), each pipelined in batches of BATCH
 *     events, Redis's CPU read from /proc/<pid>/stat.
 *
 *   ingest_parts REDIS_PORT [BATCH]   (a redis-server of its own: its keys are flushed)
 *
 * The bench body is gen_webhooks's customer.updated of 300 bytes. Each figure is
 * the median of 5 rounds, in microseconds. Prints one markdown table.
 */
#include <hiredis/hiredis.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ccsync/ingest.h"
#include "ccsync/log.h"
#include "ccsync/webhook.h"

#define ROUNDS 5
#define SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define STREAM "ccsync:{bench}:events"

static const char body[] =
    "{\"type\":\"customer.updated\",\"timestamp\":\"2026-12-06T03:32:57.000000123Z\",\"data\":"
    "{\"UniqueID\":\"bench-123\",\"Email\":\"member123@example.org\",\"FirstName\":\"First123\","
    "\"LastName\":\"Last123\",\"CustomerType\":\"Person\",\"Active\":true,"
    "\"DoNotSendMarketingEmails\":false,"
    "\"Groups\":[{\"UniqueID\":\"bench-g3\",\"GroupName\":\"Bench 3\"}]}}";

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v)
{
    qsort(v, ROUNDS, sizeof *v, cmp_double);
    return v[ROUNDS / 2];
}

/* ---- in-process parts: µs a call ---- */

enum part { VERIFY, VALIDATE, JSON_PARSE, LOG_LINE };

static char sig[128], ts_text[32], id[64];

static int run_part(enum part p, long n)
{
    for (long i = 0; i < n; i++) {
        struct webhook_error err;
        switch (p) {
        case VERIFY:
            if (webhook_verify(SECRET, id, ts_text, sig, body, sizeof body - 1, atol(ts_text),
                               &err) != 0)
                return -1;
            break;
        case VALIDATE: {
            struct webhook_limits limits = {100, 100000};
            struct event ev;
            if (webhook_parse_event_limited(body, sizeof body - 1, &limits, &ev, &err) != 0)
                return -1;
            event_clear(&ev);
            break;
        }
        case JSON_PARSE: {
            json_object *o = json_tokener_parse(body);
            if (!o)
                return -1;
            json_object_put(o);
            break;
        }
        case LOG_LINE:
            log_info("http_request", LOG_STR("route", "webhook"), LOG_INT("status", 202),
                     LOG_STR("association", "bench"), LOG_STR("webhook_id", id),
                     LOG_INT("duration_us", 1234 + i % 100), LOG_STR("completed", "yes"));
            break;
        }
    }
    return 0;
}

static double time_part(enum part p, long n)
{
    double v[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = now_s();
        if (run_part(p, n) != 0) {
            fprintf(stderr, "ingest_parts: part %d failed\n", (int)p);
            exit(1);
        }
        v[r] = (now_s() - t0) * 1e6 / (double)n;
    }
    return median(v);
}

/* ---- Redis: CPU µs an event ---- */

enum redis_way { WAY_BATCH_SCRIPT, WAY_EVENT_SCRIPT, WAY_XADD_SET, WAY_BARE_XADD };

/* The previous release's script: one call an event. */
static const char event_script[] =
    "if redis.call('EXISTS', KEYS[1]) == 1 then return false end\n"
    "local id = redis.call('XADD', KEYS[2], '*', 'assoc', ARGV[2], 'id', ARGV[3], 'type', "
    "ARGV[4], 'ts', ARGV[5], 'body', ARGV[6])\n"
    "redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])\n"
    "return id\n";

static double redis_cpu_s(redisContext *c)
{
    redisReply *r = redisCommand(c, "INFO cpu");
    double sys = 0, user = 0;
    const char *p = r && r->type == REDIS_REPLY_STRING ? r->str : NULL;
    const char *s = p ? strstr(p, "used_cpu_sys:") : NULL,
               *u = p ? strstr(p, "used_cpu_user:") : NULL;
    if (s)
        sys = atof(s + strlen("used_cpu_sys:"));
    if (u)
        user = atof(u + strlen("used_cpu_user:"));
    freeReplyObject(r);
    return sys + user;
}

static char sha_batch[41], sha_event[41];
static long serial;

static void load(redisContext *c, const char *script, char sha[41])
{
    redisReply *r = redisCommand(c, "SCRIPT LOAD %s", script);
    if (!r || r->type != REDIS_REPLY_STRING || r->len != 40) {
        fprintf(stderr, "ingest_parts: SCRIPT LOAD failed\n");
        exit(1);
    }
    memcpy(sha, r->str, 41);
    freeReplyObject(r);
}

/* Appends one batch of k events the given way; returns the replies to read. */
static int append(redisContext *c, enum redis_way way, int k)
{
    char keys[256][64], ids[256][32], tss[256][24];
    for (int i = 0; i < k; i++) {
        long s = serial++;
        snprintf(ids[i], sizeof ids[i], "msg_%ld", s);
        snprintf(keys[i], sizeof keys[i], "ccsync:{bench}:dedup:msg_%ld", s);
        snprintf(tss[i], sizeof tss[i], "%ld", 1796528004000000000L + s);
    }
    const char *ttl = "604800";
    if (way == WAY_BATCH_SCRIPT) {
        static const char *argv[3 + 1 + 256 + 2 + 4 * 256];
        static size_t lens[3 + 1 + 256 + 2 + 4 * 256];
        char numkeys[16];
        snprintf(numkeys, sizeof numkeys, "%d", 1 + k);
        int n = 0;
        argv[n++] = "EVALSHA";
        argv[n++] = sha_batch;
        argv[n++] = numkeys;
        argv[n++] = STREAM;
        for (int i = 0; i < k; i++)
            argv[n++] = keys[i];
        argv[n++] = ttl;
        argv[n++] = "bench";
        for (int i = 0; i < k; i++) {
            argv[n++] = ids[i];
            argv[n++] = "customer.updated";
            argv[n++] = tss[i];
            argv[n++] = body;
        }
        for (int i = 0; i < n; i++)
            lens[i] = strlen(argv[i]);
        redisAppendCommandArgv(c, n, argv, lens);
        return 1;
    }
    for (int i = 0; i < k; i++) {
        if (way == WAY_EVENT_SCRIPT) {
            redisAppendCommand(c, "EVALSHA %s 2 %s %s %s %s %s %s %s %s", sha_event, keys[i],
                               STREAM, ttl, "bench", ids[i], "customer.updated", tss[i], body);
        } else if (way == WAY_XADD_SET) {
            redisAppendCommand(c, "XADD %s * assoc %s id %s type %s ts %s body %s", STREAM, "bench",
                               ids[i], "customer.updated", tss[i], body);
            redisAppendCommand(c, "SET %s 1 NX EX %s", keys[i], ttl);
        } else {
            redisAppendCommand(c, "XADD %s * body %s", STREAM, body);
        }
    }
    return way == WAY_XADD_SET ? 2 * k : k;
}

static double time_redis(redisContext *c, enum redis_way way, int batch, long events)
{
    double v[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        freeReplyObject(redisCommand(c, "FLUSHALL"));
        double cpu0 = redis_cpu_s(c);
        for (long done = 0; done < events; done += batch) {
            int replies = append(c, way, batch);
            for (int i = 0; i < replies; i++) {
                redisReply *rep = NULL;
                if (redisGetReply(c, (void **)&rep) != REDIS_OK || !rep ||
                    rep->type == REDIS_REPLY_ERROR) {
                    fprintf(stderr, "ingest_parts: %s\n", rep ? rep->str : c->errstr);
                    exit(1);
                }
                freeReplyObject(rep);
            }
        }
        v[r] = (redis_cpu_s(c) - cpu0) * 1e6 / (double)events;
    }
    return median(v);
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s REDIS_PORT [BATCH]\n", argv[0]);
        return 2;
    }
    int batch = argc == 3 ? atoi(argv[2]) : 20;
    if (batch < 1 || batch > 256) {
        fprintf(stderr, "ingest_parts: BATCH is 1-256\n");
        return 2;
    }
    snprintf(id, sizeof id, "msg_p5jXN8AQM9LWM0D4loKWxJek");
    snprintf(ts_text, sizeof ts_text, "%ld", (long)time(NULL));
    if (webhook_sign(SECRET, id, atol(ts_text), body, sizeof body - 1, sig, sizeof sig) != 0)
        return 1;
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    if (saved < 0 || !freopen("/dev/null", "w", stdout))
        return 1;
    log_init(LOG_FORMAT_JSON, LOG_INFO);
    log_start_writer();
    double verify = time_part(VERIFY, 200000), validate = time_part(VALIDATE, 200000);
    double parse = time_part(JSON_PARSE, 200000), line = time_part(LOG_LINE, 200000);
    log_stop_writer();
    fflush(stdout);
    if (dup2(saved, STDOUT_FILENO) < 0)
        return 1;

    redisContext *c = redisConnect("127.0.0.1", atoi(argv[1]));
    if (!c || c->err) {
        fprintf(stderr, "ingest_parts: cannot reach Redis on port %s\n", argv[1]);
        return 1;
    }
    load(c, ingest_enqueue_script, sha_batch);
    load(c, event_script, sha_event);
    long events = 100000 - 100000 % batch;
    double w[4];
    for (int way = 0; way < 4; way++)
        w[way] = time_redis(c, (enum redis_way)way, batch, events);
    freeReplyObject(redisCommand(c, "FLUSHALL"));
    redisFree(c);

    printf(
        "| part of a webhook's work | µs | the same part, cheaper | µs |\n|---|---:|---|---:|\n");
    printf("| signature: webhook_verify (HMAC-SHA256) | %.2f | – | – |\n", verify);
    printf("| validation: webhook_parse_event_limited | %.2f | json-c's parse alone | %.2f |\n",
           validate, parse);
    printf("| the request's log line (to /dev/null) | %.2f | – | – |\n", line);
    printf("| Redis CPU: ingest's script, a call per association and batch of %d | %.2f | the "
           "previous release's script, a call an event | %.2f |\n",
           batch, w[WAY_BATCH_SCRIPT], w[WAY_EVENT_SCRIPT]);
    printf("| Redis CPU: XADD + SET NX, no script (no atomic dedup) | %.2f | a bare XADD of the "
           "body (webdis's work) | %.2f |\n",
           w[WAY_XADD_SET], w[WAY_BARE_XADD]);
    return 0;
}
