/*
 * fuzz_redis_url.c - libFuzzer target for the Redis URL parser alone
 * (config_parse_redis_url): redis://[[user]:password@]host[:port][/db], any
 * bytes. Accepted, the target must be a host, a port in 1-65535 and a
 * database in 0-15; refused, a one-line message.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ccsync/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *url = malloc(size + 1);
    if (!url)
        abort();
    memcpy(url, data, size);
    url[size] = '\0';
    struct redis_target t;
    char err[256];
    if (config_parse_redis_url(url, &t, err, sizeof err) == 0) {
        if (t.host[0] == '\0' || t.port < 1 || t.port > 65535 || t.db < 0 || t.db > 15)
            abort();
    } else if (strchr(err, '\n') || err[0] == '\0') {
        abort();
    }
    free(url);
    return 0;
}
