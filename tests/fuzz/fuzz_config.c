/*
 * fuzz_config.c - libFuzzer target for the configuration parser (config.c):
 * the environment as NAME=VALUE lines, read through config_load's lookup, and
 * the first line alone through config_parse_redis_url (the URL parser, which
 * also takes what an operator pastes). A value is refused with a message or
 * accepted; a crash, an overflow or a message that is not one line is a
 * finding.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ccsync/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_VARS 32

static struct {
    char *name[MAX_VARS], *value[MAX_VARS];
    int n;
} env;

static const char *lookup(const char *name)
{
    for (int i = env.n - 1; i >= 0; i--)
        if (strcmp(env.name[i], name) == 0)
            return env.value[i];
    return NULL;
}

/* Splits text (a NUL-terminated copy of the input) into NAME=VALUE lines. */
static void env_read(char *text)
{
    env.n = 0;
    for (char *line = text; line && env.n < MAX_VARS;) {
        char *next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        char *eq = strchr(line, '=');
        if (eq) {
            *eq = '\0';
            env.name[env.n] = line;
            env.value[env.n++] = eq + 1;
        }
        line = next;
    }
}

static void message_is_one_line(const char *err)
{
    if (strchr(err, '\n') || strlen(err) == 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        abort();
    memcpy(text, data, size);
    text[size] = '\0';
    char err[512];
    struct redis_target target;
    if (config_parse_redis_url(text, &target, err, sizeof err) != 0)
        message_is_one_line(err);
    env_read(text);
    if (lookup("CCSYNC_ADMIN_TOKEN") == NULL && env.n < MAX_VARS) {
        env.name[env.n] = "CCSYNC_ADMIN_TOKEN"; /* else every input stops at the first check */
        env.value[env.n++] = "fuzz-admin-token-0123456789";
    }
    static struct config cfg;
    if (config_load(&cfg, lookup, err, sizeof err) != 0)
        message_is_one_line(err);
    free(text);
    return 0;
}
