/*
 * script.h - running Lua scripts in Redis: EVALSHA, falling back to EVAL when
 * the server does not have the script cached yet (NOSCRIPT: a restart, a
 * failover, SCRIPT FLUSH). Scripts are how ccsync makes a read-check-write on
 * shared state atomic across threads and processes.
 */
#ifndef CCSYNC_SCRIPT_H
#define CCSYNC_SCRIPT_H

#include <stddef.h>

struct redisContext;
struct redisReply;

/*
 * Runs body with n_keys keys followed by the other arguments (args[0..n_args),
 * the keys first). Returns the reply (the caller frees it with
 * freeReplyObject), or NULL when the context failed (c->err; discard it). An
 * error raised by the script comes back as a REDIS_REPLY_ERROR reply.
 */
struct redisReply *script_eval(struct redisContext *c, const char *body, int n_keys, int n_args,
                               const char *const *args);
/* script_eval with each argument's length in lens (binary-safe); lens NULL: strlen. */
struct redisReply *script_eval_len(struct redisContext *c, const char *body, int n_keys, int n_args,
                                   const char *const *args, const size_t *lens);

#endif
