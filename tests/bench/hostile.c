/*
 * hostile.c - ccsyncd under hostile clients, measured (README "Limits"):
 *
 *   slow    2,000 connections from 127.0.0.2, each sending a byte of a request
 *           every 20 s (reopened when closed), and 200 from 127.0.0.3 announcing
 *           16 MiB bodies without valid webhook headers and sending them as fast
 *           as 64 KiB every 50 ms each goes (reopened when answered);
 *           meanwhile signed webhooks from 127.0.0.1, 20 a second. Reports
 *           ccsyncd's peak RSS and the webhooks' statuses, p50 and p99.
 *   snapshot  a group.members snapshot of N members (500,000) for association
 *           "acme", folded while association "other" sends webhooks (10 a
 *           second, from the send until the fold is done); then a snapshot of
 *           half of them (the sweep takes the rest out). Reports the
 *           snapshot's answer time, the fold's time, Redis's slowest commands
 *           (SLOWLOG, threshold 10 ms) and the other association's p50/p99.
 *           BENCH_REDIS_RT=1 runs redis-server SCHED_FIFO (root only), so that
 *           on a shared machine the slow log shows what commands cost, not
 *           the time Redis waited for a core.
 *
 *   probe   the answers' times: a signed member naming 100,000 groups (400 by
 *           the cap; best and median of 5), and a 64 KiB webhook with a wrong
 *           signature to a known association beside the same to an unknown
 *           one (N interleaved pairs; medians, p90 and their difference).
 *
 *   build/bench/hostile slow|snapshot|probe [SECONDS|MEMBERS|PAIRS]
 * with CCSYNCD_BIN, CCSIM_BIN (default build/...) and TEST_PORT_BASE as the
 * tests take them. Figures are printed, not judged; exit 1 only when the stack
 * did not start. No Constant Contact request is made (no group syncs).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ccsync/keys.h"
#include "ccsync/webhook.h"
#include "novi.h"
#include "peek.h"
#include "reply.h"
#include "stack.h"
#include "testsupport.h"

#define SLOW_CONNECTIONS 2000
#define BIG_CONNECTIONS 200
#define MAX_SAMPLES 100000

static atomic_bool stop, legit_stop;
static atomic_long slow_refused, big_answered, rss_peak_kb;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* A non-blocking connection to ccsyncd from the loopback address from. */
static int connect_from(const char *from)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in src = {.sin_family = AF_INET}, dst = {.sin_family = AF_INET};
    inet_pton(AF_INET, from, &src.sin_addr);
    inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr);
    dst.sin_port = htons((uint16_t)stack.http_port[0]);
    if (fd < 0 || bind(fd, (struct sockaddr *)&src, sizeof src) != 0 ||
        (connect(fd, (struct sockaddr *)&dst, sizeof dst) != 0 && errno != EINPROGRESS)) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* Whether the server closed or answered fd (read returns 0, or data). */
static bool server_done(int fd)
{
    char buf[512];
    ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    return n == 0 || n > 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

struct attacker {
    const char *from;
    int n;
    const char *head; /* sent at once (NULL: none); then chunk bytes every byte_every_s */
    size_t chunk;
    double byte_every_s;
    atomic_long *closed;
};

/* A request's first bytes, one of which a slow connection sends at a time. */
static const char slow_request[] =
    "POST /v1/associations/acme/webhooks/novi HTTP/1.1\r\nHost: x\r\n"
    "X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

static void *attack(void *arg)
{
    struct attacker *a = arg;
    int *fds = calloc((size_t)a->n, sizeof *fds);
    size_t *sent = calloc((size_t)a->n, sizeof *sent);
    double *next = calloc((size_t)a->n, sizeof *next);
    for (int i = 0; i < a->n; i++)
        fds[i] = -1;
    while (!atomic_load(&stop)) {
        double t = now_s();
        for (int i = 0; i < a->n; i++) {
            if (fds[i] >= 0 && server_done(fds[i])) {
                close(fds[i]);
                fds[i] = -1;
                atomic_fetch_add(a->closed, 1);
            }
            if (fds[i] < 0) {
                fds[i] = connect_from(a->from);
                sent[i] = 0;
                next[i] = t + 0.05; /* the first bytes once connected */
                continue;
            }
            if (t < next[i])
                continue;
            if (a->head && sent[i] == 0)
                send(fds[i], a->head, strlen(a->head), MSG_NOSIGNAL | MSG_DONTWAIT);
            static char body[64 * 1024];
            char byte = slow_request[sent[i] % (sizeof slow_request - 1)];
            if (a->head)
                send(fds[i], body, a->chunk, MSG_NOSIGNAL | MSG_DONTWAIT);
            else
                send(fds[i], &byte, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
            sent[i]++;
            next[i] = t + a->byte_every_s;
        }
        ts_sleep_ms(50);
    }
    for (int i = 0; i < a->n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    free(fds);
    free(sent);
    free(next);
    return NULL;
}

static void *rss_sampler(void *arg)
{
    (void)arg;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)stack.ccsyncd_pid[0]);
    while (!atomic_load(&stop)) {
        FILE *f = fopen(path, "r");
        char line[256];
        while (f && fgets(line, sizeof line, f)) {
            long kb;
            if (sscanf(line, "VmRSS: %ld kB", &kb) == 1 && kb > atomic_load(&rss_peak_kb))
                atomic_store(&rss_peak_kb, kb);
        }
        if (f)
            fclose(f);
        ts_sleep_ms(200);
    }
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Signed webhooks to assoc (its secret SECRET) at rate a second for seconds;
 * prints the count by status and p50/p99 in ms. */
static void legit(const char *assoc, double rate, double seconds, const char *label)
{
    static double ms[MAX_SAMPLES];
    int n = 0, ok = 0, other = 0;
    long last_other = 0;
    double end = now_s() + seconds;
    while (now_s() < end && n < MAX_SAMPLES && !atomic_load(&legit_stop)) {
        double t0 = now_s();
        char id[64], url[256], sig[128], h_id[128], h_ts[64], h_sig[160];
        new_id(id, sizeof id);
        char *body = envelope("group.deleted", "{\"UniqueID\":\"g-legit\"}", 1);
        long ts = (long)time(NULL);
        webhook_sign(SECRET, id, ts, body, strlen(body), sig, sizeof sig);
        snprintf(h_id, sizeof h_id, "webhook-id: %s", id);
        snprintf(h_ts, sizeof h_ts, "webhook-timestamp: %ld", ts);
        snprintf(h_sig, sizeof h_sig, "webhook-signature: %s", sig);
        const char *headers[] = {"Content-Type: application/json", h_id, h_ts, h_sig, NULL};
        snprintf(url, sizeof url, "%s/v1/associations/%s/webhooks/novi", stack.base[0], assoc);
        struct reply r = http_request("POST", url, headers, body, strlen(body), 0);
        ms[n++] = (now_s() - t0) * 1000;
        if (r.status == 202)
            ok++;
        else {
            other++;
            last_other = r.status;
        }
        reply_free(&r);
        free(body);
        double wait = 1.0 / rate - (now_s() - t0);
        if (wait > 0)
            ts_sleep_ms((long)(wait * 1000));
    }
    qsort(ms, (size_t)n, sizeof ms[0], cmp_double);
    printf("| %s | %d | %d (last %ld) | %.1f | %.1f | %.1f |\n", label, ok, other, last_other,
           n ? ms[n / 2] : 0, n ? ms[(n * 99) / 100] : 0, n ? ms[n - 1] : 0);
}

static void scenario_slow(double seconds)
{
    static atomic_long big_closed;
    struct attacker slow = {"127.0.0.2", SLOW_CONNECTIONS, NULL, 1, 20.0, &slow_refused};
    struct attacker big = {"127.0.0.3",
                           BIG_CONNECTIONS,
                           "POST /v1/associations/acme/webhooks/novi HTTP/1.1\r\nHost: x\r\n"
                           "Content-Type: application/json\r\nContent-Length: 16777216\r\n\r\n",
                           64 * 1024,
                           0.05,
                           &big_closed};
    pthread_t t[3];
    pthread_create(&t[0], NULL, attack, &slow);
    pthread_create(&t[1], NULL, attack, &big);
    pthread_create(&t[2], NULL, rss_sampler, NULL);
    ts_sleep_ms(3000); /* the attack in place */
    printf("| webhooks during the attack | 202 | other | p50 ms | p99 ms | max ms |\n"
           "|---|---|---|---|---|---|\n");
    legit(ASSOC, 20, seconds, "acme, from 127.0.0.1");
    atomic_store(&stop, true);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    atomic_store(&big_answered, atomic_load(&big_closed));
    printf("\nccsyncd peak RSS: %.1f MiB; slow connections closed by ccsyncd: %ld; "
           "16 MiB announcements answered and closed: %ld\n",
           (double)atomic_load(&rss_peak_kb) / 1024, atomic_load(&slow_refused),
           atomic_load(&big_answered));
}

/* group.members of g with members m0..m(n-1), minimal records; malloc'd. */
static char *snapshot(const char *g, long n, long long at)
{
    size_t cap = 128 + (size_t)n * 32, len = 0;
    char *data = malloc(cap);
    len += (size_t)snprintf(data, cap, "{\"UniqueID\":\"%s\",\"Members\":[", g);
    for (long i = 0; i < n; i++)
        len +=
            (size_t)snprintf(data + len, cap - len, "%s{\"UniqueID\":\"m%ld\"}", i ? "," : "", i);
    snprintf(data + len, cap - len, "]}");
    char *body = envelope("group.members", data, at);
    free(data);
    return body;
}

struct fold_wait {
    redisContext *c;
    long in;
};

/* The snapshot is folded: the stream holds no event and no fold is under way
 * (cheap questions: the bench must not be Redis's slowest client itself). */
static bool folded(void *arg)
{
    struct fold_wait *w = arg;
    return peek_integer(w->c, "XLEN %s", key_events(ASSOC).s) == 0 &&
           peek_integer(w->c, "EXISTS %s", key_group_folding(ASSOC, "g-big").s) == 0 &&
           peek_integer(w->c, "HLEN %s", key_group_members(ASSOC, "g-big").s) >= w->in;
}

/* Redis's slow log since the last call: how many commands took over 10 ms and
 * over 50 ms, and the slowest three. */
static void slowlog(redisContext *c)
{
    redisReply *r = peek_command(c, "SLOWLOG GET -1");
    long over10 = 0, over50 = 0;
    long long top[3] = {0, 0, 0};
    char name[3][96] = {"", "", ""};
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        const redisReply *e = r->element[i], *argv = e->element[3];
        long long us = e->element[2]->integer;
        over10++;
        over50 += us > 50000;
        for (int k = 0; k < 3; k++) {
            if (us <= top[k])
                continue;
            for (int m = 2; m > k; m--) {
                top[m] = top[m - 1];
                memcpy(name[m], name[m - 1], sizeof name[m]);
            }
            top[k] = us;
            snprintf(name[k], sizeof name[k], "%s %.40s %.40s", argv->element[0]->str,
                     argv->elements > 1 ? argv->element[1]->str : "",
                     argv->elements > 3 ? argv->element[3]->str : "");
            break;
        }
    }
    printf("  Redis commands over 10 ms: %ld; over 50 ms: %ld; slowest: %lld us (%s), %lld us "
           "(%s), %lld us (%s)\n",
           over10, over50, top[0], name[0], top[1], name[1], top[2], name[2]);
    freeReplyObject(r);
    freeReplyObject(peek_command(c, "SLOWLOG RESET"));
}

/* Sends a snapshot in a thread of its own, so the other association's webhooks run meanwhile. */
struct snap_send {
    char *body;
    long status;
    int attempts;
    double answered_ms; /* the last attempt's answer time */
};

/* As Novi does: a 503 is sent again (the same webhook-id) until it is taken. */
static void *send_snapshot(void *arg)
{
    struct snap_send *s = arg;
    char id[64];
    new_id(id, sizeof id);
    for (s->attempts = 1;; s->attempts++) {
        double t0 = now_s();
        s->status = post_webhook(id, s->body);
        s->answered_ms = (now_s() - t0) * 1000;
        if (s->status != 503 || s->attempts >= 10)
            break;
        ts_sleep_ms(1000);
    }
    return NULL;
}

/* The other association's webhooks, until legit_stop. */
static void *other_webhooks(void *arg)
{
    (void)arg;
    legit("other", 10, 3600, "other, from the send until folded");
    return NULL;
}

static void fold_one(redisContext *c, long members, long expect_in, long long at, const char *what)
{
    struct snap_send s = {snapshot("g-big", members, at), 0, 0, 0};
    printf("\n%s: %ld members, %zu bytes\n", what, members, strlen(s.body));
    printf("| webhooks of another association meanwhile | 202 | other | p50 ms | p99 ms | max ms "
           "|\n|---|---|---|---|---|---|\n");
    fflush(stdout);
    atomic_store(&legit_stop, false);
    double t0 = now_s();
    pthread_t t, other;
    pthread_create(&other, NULL, other_webhooks, NULL);
    pthread_create(&t, NULL, send_snapshot, &s);
    pthread_join(t, NULL);
    struct fold_wait w = {c, expect_in};
    bool done = ts_wait_for(folded, &w, 600000, 200);
    double fold_s = now_s() - t0;
    atomic_store(&legit_stop, true);
    pthread_join(other, NULL);
    printf("  answered %ld after %d attempt(s), the last in %.0f ms; folded %s in %.1f s (from the "
           "send)\n",
           s.status, s.attempts, s.answered_ms, done ? "" : "NOT", fold_s);
    slowlog(c);
    free(s.body);
}

static void scenario_snapshot(long members)
{
    redisContext *c = peek_connect(stack.redis_port);
    const char *rt = getenv("BENCH_REDIS_RT");
    if (rt && strcmp(rt, "1") == 0) {
        struct sched_param sp = {.sched_priority = 1};
        bool set = sched_setscheduler(stack.redis_pid, SCHED_FIFO, &sp) == 0;
        printf("redis-server SCHED_FIFO: %s\n", set ? "yes" : strerror(errno));
    }
    freeReplyObject(peek_command(c, "CONFIG SET slowlog-log-slower-than 10000"));
    freeReplyObject(peek_command(c, "CONFIG SET slowlog-max-len 100000"));
    freeReplyObject(peek_command(c, "SLOWLOG RESET"));
    char body[256];
    snprintf(body, sizeof body, "{\"webhook_secret\":\"%s\"}", SECRET);
    struct reply r = api("PUT", "/v1/associations/other", body);
    reply_free(&r);
    fold_one(c, members, members, 10, "snapshot");
    fold_one(c, members / 2, members / 2, 20, "snapshot of half (the sweep takes the rest out)");
    redisFree(c);
}

/* POST body to assoc's webhook URL signed with SECRET (wrong: one character of
 * the signature changed); the answer's status and its time in ms. */
static long timed_post(const char *assoc, const char *body, bool wrong, double *ms)
{
    char id[64], url[256], sig[128], h_id[128], h_ts[64], h_sig[160];
    new_id(id, sizeof id);
    long ts = (long)time(NULL);
    webhook_sign(SECRET, id, ts, body, strlen(body), sig, sizeof sig);
    if (wrong)
        sig[3] = sig[3] == 'A' ? 'B' : 'A';
    snprintf(h_id, sizeof h_id, "webhook-id: %s", id);
    snprintf(h_ts, sizeof h_ts, "webhook-timestamp: %ld", ts);
    snprintf(h_sig, sizeof h_sig, "webhook-signature: %s", sig);
    const char *headers[] = {"Content-Type: application/json", h_id, h_ts, h_sig, NULL};
    snprintf(url, sizeof url, "%s/v1/associations/%s/webhooks/novi", stack.base[0], assoc);
    double t0 = now_s();
    struct reply r = http_request("POST", url, headers, body, strlen(body), 0);
    *ms = (now_s() - t0) * 1000;
    long status = r.status;
    reply_free(&r);
    return status;
}

/* customer.updated of one member naming n groups; malloc'd. */
static char *member_with_groups(long n)
{
    size_t cap = 256 + (size_t)n * 32, len = 0;
    char *data = malloc(cap);
    len += (size_t)snprintf(data, cap, "{\"UniqueID\":\"m-big\",\"Groups\":[");
    for (long i = 0; i < n; i++)
        len +=
            (size_t)snprintf(data + len, cap - len, "%s{\"UniqueID\":\"g%ld\"}", i ? "," : "", i);
    snprintf(data + len, cap - len, "]}");
    char *body = envelope("customer.updated", data, 1);
    free(data);
    return body;
}

static void scenario_probe(int pairs)
{
    char *big = member_with_groups(100000);
    double ms[5];
    long status = 0;
    for (int i = 0; i < 5; i++)
        status = timed_post(ASSOC, big, false, &ms[i]);
    qsort(ms, 5, sizeof ms[0], cmp_double);
    printf("| a member naming 100,000 groups (%zu bytes) | %ld | best %.1f ms | median %.1f ms |\n",
           strlen(big), status, ms[0], ms[2]);
    free(big);

    char *event = envelope("group.deleted", "{\"UniqueID\":\"g-1\"}", 1);
    size_t len = 64 * 1024;
    char *body = malloc(len + 1);
    memset(body, ' ', len);
    memcpy(body, event, strlen(event));
    body[len] = '\0';
    free(event);
    double *known = calloc((size_t)pairs, sizeof *known),
           *unknown = calloc((size_t)pairs, sizeof *unknown);
    long sk = 0, su = 0;
    for (int i = 0; i < pairs; i++) {
        sk = timed_post(ASSOC, body, true, &known[i]);
        su = timed_post("nobody-here", body, true, &unknown[i]);
    }
    qsort(known, (size_t)pairs, sizeof *known, cmp_double);
    qsort(unknown, (size_t)pairs, sizeof *unknown, cmp_double);
    printf(
        "| 64 KiB, wrong signature, known association (%d) | %ld | median %.3f ms | p90 %.3f ms |\n"
        "| 64 KiB, unknown association (%d) | %ld | median %.3f ms | p90 %.3f ms |\n"
        "difference of the medians: %.3f ms\n",
        pairs, sk, known[pairs / 2], known[pairs * 9 / 10], pairs, su, unknown[pairs / 2],
        unknown[pairs * 9 / 10], known[pairs / 2] - unknown[pairs / 2]);
    free(known);
    free(unknown);
    free(body);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2 || (strcmp(argv[1], "slow") != 0 && strcmp(argv[1], "snapshot") != 0 &&
                     strcmp(argv[1], "probe") != 0)) {
        fprintf(stderr, "usage: %s slow [SECONDS] | snapshot [MEMBERS] | probe [PAIRS]\n", argv[0]);
        return 2;
    }
    bool slow = strcmp(argv[1], "slow") == 0, probe = strcmp(argv[1], "probe") == 0;
    struct stack_options o = {.workers = 2};
    o.env[0] = "CCSYNC_MAX_BODY_BYTES=16777216";
    o.env[1] = "CCSYNC_INGEST_BURST=100000";
    o.env[2] = "CCSYNC_LOG_LEVEL=warn";
    if (stack_start("bench-hostile", &o) != 0)
        return 1;
    if (slow)
        scenario_slow(argc > 2 ? atof(argv[2]) : 60);
    else if (probe)
        scenario_probe(argc > 2 ? atoi(argv[2]) : 201);
    else
        scenario_snapshot(argc > 2 ? atol(argv[2]) : 500000);
    stack_stop(NULL);
    return 0;
}
