/*
 * script.c - EVALSHA with EVAL as the fallback. The SHA1 of a script is
 * computed on each call (a microsecond) rather than cached, so the module keeps
 * no state and any thread may call it on its own context.
 */
#include "ccsync/script.h"

#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

#define SCRIPT_MAX_ARGS 32

static int script_sha1(const char *body, char hex[41])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_Digest(body, strlen(body), md, &len, EVP_sha1(), NULL) != 1 || len != 20)
        return -1;
    for (unsigned int i = 0; i < len; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return 0;
}

static redisReply *script_call(redisContext *c, const char *verb, const char *what, int n_keys,
                               int n_args, const char *const *args, const size_t *lens)
{
    const char *argv[SCRIPT_MAX_ARGS + 3];
    size_t argl[SCRIPT_MAX_ARGS + 3];
    char keys[16];
    snprintf(keys, sizeof keys, "%d", n_keys);
    argv[0] = verb;
    argv[1] = what;
    argv[2] = keys;
    for (int i = 0; i < 3; i++)
        argl[i] = strlen(argv[i]);
    for (int i = 0; i < n_args; i++) {
        argv[3 + i] = args[i];
        argl[3 + i] = lens ? lens[i] : strlen(args[i]);
    }
    return redisCommandArgv(c, n_args + 3, argv, argl);
}

redisReply *script_eval(redisContext *c, const char *body, int n_keys, int n_args,
                        const char *const *args)
{
    return script_eval_len(c, body, n_keys, n_args, args, NULL);
}

redisReply *script_eval_len(redisContext *c, const char *body, int n_keys, int n_args,
                            const char *const *args, const size_t *lens)
{
    char sha[41];
    if (n_args > SCRIPT_MAX_ARGS || n_keys > n_args)
        return NULL;
    if (script_sha1(body, sha) == 0) {
        redisReply *r = script_call(c, "EVALSHA", sha, n_keys, n_args, args, lens);
        if (!r || r->type != REDIS_REPLY_ERROR || strncmp(r->str, "NOSCRIPT", 8) != 0)
            return r;
        freeReplyObject(r);
    }
    /* EVAL also puts the script in the server's cache for the next EVALSHA. */
    return script_call(c, "EVAL", body, n_keys, n_args, args, lens);
}
