/*
 * log.h - structured logs: one JSON object a line on stdout (or key=value text).
 *
 *   log_info("webhook_accepted", LOG_STR("association", id), LOG_INT("status", 202));
 *
 * Thread safe: a line is built in a buffer and never interleaves with another.
 * Never pass a secret as a value.
 */
#ifndef CCSYNC_LOG_H
#define CCSYNC_LOG_H

#include <stddef.h>

#include "ccsync/config.h"

struct log_kv {
    const char *key; /* NULL marks the unused leading slot of the macros */
    const char *str; /* string value; NULL leaves the field out */
    long long num;
    int is_num;
};

#define LOG_STR(k, v) ((struct log_kv){(k), (v), 0, 0})
#define LOG_INT(k, v) ((struct log_kv){(k), NULL, (long long)(v), 1})

void log_init(enum log_format format, enum log_level level);
/* From here on lines are buffered and written by a thread (warn and error at once). */
void log_start_writer(void);
/* Flushes and stops that thread; lines are written directly again. */
void log_stop_writer(void);
int log_enabled(enum log_level level);
void log_emit(enum log_level level, const char *msg, size_t n, const struct log_kv *kv);

/* The decimal digits of v, NUL-terminated, into out (at least 21 bytes); their
 * count. Without printf: the log line and ingest's hot path use it. */
size_t log_int_text(long long v, char *out);

#define LOG_AT_(lvl, msg, ...)                                                                     \
    do {                                                                                           \
        if (log_enabled(lvl)) {                                                                    \
            const struct log_kv kv_[] = {{0}, __VA_ARGS__};                                        \
            log_emit((lvl), (msg), sizeof kv_ / sizeof kv_[0], kv_);                               \
        }                                                                                          \
    } while (0)

#define log_debug(msg, ...) LOG_AT_(LOG_DEBUG, msg, __VA_ARGS__)
#define log_info(msg, ...) LOG_AT_(LOG_INFO, msg, __VA_ARGS__)
#define log_warn(msg, ...) LOG_AT_(LOG_WARN, msg, __VA_ARGS__)
#define log_error(msg, ...) LOG_AT_(LOG_ERROR, msg, __VA_ARGS__)

#endif
