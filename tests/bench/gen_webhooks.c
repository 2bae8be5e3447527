/*
 * gen_webhooks.c - pre-generates the signed Novi webhooks that wrk sends in the
 * ingest benchmark, so that the load generator spends no time on HMACs and every
 * request is one ccsyncd must accept and queue: a distinct webhook-id, the
 * webhook-timestamp of now (the run must start and end within the 300 s window)
 * and a valid customer.updated envelope signed with webhook_sign().
 *
 *   gen_webhooks SECRET ASSOCIATION HOST:PORT COUNT FILES OUT_PREFIX [METHOD TARGET]
 *
 * METHOD TARGET replace the request line's "POST /v1/associations/A/webhooks/novi"
 * so that a peer of the benchmark is sent the very same signed requests at a
 * path of its own (webdis: a PUT of "XADD <stream> * body", to which it appends
 * the request's body as the last argument).
 * Writes FILES files OUT_PREFIX.0 .. OUT_PREFIX.<FILES-1> (one per wrk thread, so
 * no two threads send the same webhook-id), request i going to file i % FILES.
 * Each file is complete raw HTTP/1.1 requests, each followed by one NUL byte
 * (tests/bench/webhooks.lua splits on it). Prints the body size range.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ccsync/webhook.h"

int main(int argc, char **argv)
{
    if (argc != 7 && argc != 9) {
        fprintf(stderr,
                "usage: %s SECRET ASSOCIATION HOST:PORT COUNT FILES OUT_PREFIX [METHOD TARGET]\n",
                argv[0]);
        return 2;
    }
    const char *secret = argv[1], *assoc = argv[2], *host = argv[3], *prefix = argv[6];
    long count = atol(argv[4]);
    int files = atoi(argv[5]);
    if (count <= 0 || files <= 0 || files > 64 || !webhook_secret_valid(secret)) {
        fprintf(stderr, "gen_webhooks: bad COUNT, FILES or SECRET\n");
        return 2;
    }
    char target[512];
    snprintf(target, sizeof target, "/v1/associations/%s/webhooks/novi", assoc);
    const char *method = argc == 9 ? argv[7] : "POST", *request_path = argc == 9 ? argv[8] : target;
    FILE *out[64];
    for (int f = 0; f < files; f++) {
        char path[1024];
        snprintf(path, sizeof path, "%s.%d", prefix, f);
        out[f] = fopen(path, "wb");
        if (!out[f]) {
            perror(path);
            return 1;
        }
    }

    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t ts = (int64_t)now.tv_sec;
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    char stamp[40];
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    /* A run tag keeps webhook-ids distinct from those of earlier runs on the same Redis. */
    unsigned long tag = (unsigned long)now.tv_sec * 1000003UL ^ (unsigned long)now.tv_nsec;

    size_t min_body = (size_t)-1, max_body = 0;
    for (long i = 0; i < count; i++) {
        char body[1024], id[64], sig[128];
        /* A member record as Novi sends it, in one of 10 groups (none of them synced,
         * so the workers fold facts but never call Constant Contact). Distinct
         * nanoseconds keep every envelope distinct too. */
        int n = snprintf(body, sizeof body,
                         "{\"type\":\"customer.updated\",\"timestamp\":\"%s.%09ldZ\",\"data\":"
                         "{\"UniqueID\":\"bench-%ld\",\"Email\":\"member%ld@example.org\","
                         "\"FirstName\":\"First%ld\",\"LastName\":\"Last%ld\","
                         "\"CustomerType\":\"Person\",\"Active\":true,"
                         "\"DoNotSendMarketingEmails\":false,"
                         "\"Groups\":[{\"UniqueID\":\"bench-g%ld\",\"GroupName\":\"Bench %ld\"}]}}",
                         stamp, (long)(i % 1000000000L), i, i, i, i, i % 10, i % 10);
        snprintf(id, sizeof id, "msg_%lx_%ld", tag, i);
        if (webhook_sign(secret, id, ts, body, (size_t)n, sig, sizeof sig) != 0) {
            fprintf(stderr, "gen_webhooks: webhook_sign failed\n");
            return 1;
        }
        if ((size_t)n < min_body)
            min_body = (size_t)n;
        if ((size_t)n > max_body)
            max_body = (size_t)n;
        FILE *o = out[i % files];
        fprintf(o,
                "%s %s HTTP/1.1\r\n"
                "Host: %s\r\n"
                "Content-Type: application/json\r\n"
                "webhook-id: %s\r\n"
                "webhook-timestamp: %" PRId64 "\r\n"
                "webhook-signature: %s\r\n"
                "Content-Length: %d\r\n"
                "\r\n"
                "%s",
                method, request_path, host, id, ts, sig, n, body);
        fputc('\0', o);
    }
    for (int f = 0; f < files; f++) {
        if (fclose(out[f]) != 0) {
            perror("gen_webhooks: write");
            return 1;
        }
    }
    printf("generated %ld signed webhooks (timestamp %" PRId64
           ", bodies %zu-%zu bytes) in %d files\n",
           count, ts, min_body, max_body, files);
    return 0;
}
