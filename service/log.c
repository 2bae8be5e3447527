/*
 * log.c - one JSON object a line on stdout, or "key=value" text for people
 * reading a terminal. Each line is assembled in a local buffer, so lines from
 * different threads never interleave.
 *
 * Once log_start_writer() has run (ccsyncd does it at start), lines are
 * appended to a shared buffer that a writer thread flushes every 20 ms or when
 * it fills: one write(2) for many lines instead of one a request, which the
 * webhook path feels. Warnings and errors are flushed at once, and
 * log_stop_writer() flushes everything at exit. Like metrics.c, this file keeps
 * process-wide state on purpose (one buffer, guarded by one mutex).
 */
#include "ccsync/log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Set once at start, before threads exist; read-only afterwards. */
static atomic_int log_fmt = LOG_FORMAT_JSON;
static atomic_int log_min = LOG_INFO;

static const char *level_names[] = {"debug", "info", "warn", "error"};

#define LOG_BUFFER_SIZE (256 * 1024)
#define LOG_FLUSH_AT (64 * 1024)
#define LOG_FLUSH_EVERY_MS 20

static struct {
    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t wake;
    char buf[LOG_BUFFER_SIZE];
    size_t len;
    bool running, stopping;
    pthread_t thread;
} writer = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

static void write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDOUT_FILENO, p, n);
        if (w <= 0)
            return; /* nowhere better to report a failed log write */
        p += w;
        n -= (size_t)w;
    }
}

/* Called with writer.lock held; writes the buffer out (the lock is kept, so
 * lines stay in order). */
static void flush_locked(void)
{
    write_all(writer.buf, writer.len);
    writer.len = 0;
}

static void *writer_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&writer.lock);
    while (!writer.stopping) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += LOG_FLUSH_EVERY_MS * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&writer.wake, &writer.lock, &until);
        if (writer.len > 0)
            flush_locked();
    }
    flush_locked();
    pthread_mutex_unlock(&writer.lock);
    return NULL;
}

void log_start_writer(void)
{
    pthread_mutex_lock(&writer.lock);
    if (!writer.running && pthread_create(&writer.thread, NULL, writer_main, NULL) == 0)
        writer.running = true;
    pthread_mutex_unlock(&writer.lock);
}

void log_stop_writer(void)
{
    pthread_mutex_lock(&writer.lock);
    bool running = writer.running;
    writer.stopping = true;
    pthread_cond_signal(&writer.wake);
    pthread_mutex_unlock(&writer.lock);
    if (running)
        pthread_join(writer.thread, NULL);
    pthread_mutex_lock(&writer.lock);
    writer.running = false;
    writer.stopping = false;
    flush_locked();
    pthread_mutex_unlock(&writer.lock);
}

static void output(enum log_level level, const char *line, size_t n)
{
    pthread_mutex_lock(&writer.lock);
    if (!writer.running) {
        pthread_mutex_unlock(&writer.lock);
        write_all(line, n);
        return;
    }
    if (writer.len + n > sizeof writer.buf)
        flush_locked(); /* the writer fell behind: write in this thread rather than drop */
    memcpy(writer.buf + writer.len, line, n);
    writer.len += n;
    if (level >= LOG_WARN)
        flush_locked();
    else if (writer.len >= LOG_FLUSH_AT)
        pthread_cond_signal(&writer.wake);
    pthread_mutex_unlock(&writer.lock);
}

void log_init(enum log_format format, enum log_level level)
{
    atomic_store(&log_fmt, (int)format);
    atomic_store(&log_min, (int)level);
}

int log_enabled(enum log_level level)
{
    return (int)level >= atomic_load(&log_min);
}

struct line {
    char buf[8192];
    size_t len;
};

static void put(struct line *l, const char *s, size_t n)
{
    if (l->len + n >= sizeof l->buf - 2) /* keep room for "}\n" */
        n = sizeof l->buf - 2 - l->len - 1;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void puts_(struct line *l, const char *s)
{
    put(l, s, strlen(s));
}

/* Runs of characters that need no escape are copied at once: a request's line
 * is written on the webhook path. */
static void put_json_string(struct line *l, const char *s)
{
    put(l, "\"", 1);
    const unsigned char *run = (const unsigned char *)s, *p = run;
    for (; *p; p++) {
        if (*p != '"' && *p != '\\' && *p >= 0x20)
            continue;
        put(l, (const char *)run, (size_t)(p - run));
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            put(l, esc, 2);
        } else {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            put(l, esc, 6);
        }
        run = p + 1;
    }
    put(l, (const char *)run, (size_t)(p - run));
    put(l, "\"", 1);
}

size_t log_int_text(long long v, char *out)
{
    char rev[24];
    size_t n = 0, len = 0;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        rev[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        out[len++] = '-';
    while (n)
        out[len++] = rev[--n];
    out[len] = '\0';
    return len;
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" of now into ts (at least 32 bytes). The part
 * before the milliseconds is kept for the second it names, per thread:
 * strftime is the larger part of a line's cost. */
static void format_now(char ts[32])
{
    static _Thread_local time_t cached_sec = -1;
    static _Thread_local char cached[24];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (now.tv_sec != cached_sec) {
        struct tm tm;
        gmtime_r(&now.tv_sec, &tm);
        if (strftime(cached, sizeof cached, "%Y-%m-%dT%H:%M:%S", &tm) == 0)
            cached[0] = '\0';
        cached_sec = now.tv_sec;
    }
    size_t n = strlen(cached);
    long ms = now.tv_nsec / 1000000;
    memcpy(ts, cached, n);
    ts[n++] = '.';
    ts[n++] = (char)('0' + ms / 100);
    ts[n++] = (char)('0' + ms / 10 % 10);
    ts[n++] = (char)('0' + ms % 10);
    ts[n++] = 'Z';
    ts[n] = '\0';
}

static void put_text_value(struct line *l, const char *s)
{
    if (strpbrk(s, " \"=\t\n") == NULL && *s) {
        puts_(l, s);
        return;
    }
    put_json_string(l, s);
}

void log_emit(enum log_level level, const char *msg, size_t n, const struct log_kv *kv)
{
    struct line l; /* not zeroed: 8 KiB, written before it is read */
    l.len = 0;
    char ts[32], num[32];
    format_now(ts);

    int json = atomic_load(&log_fmt) == LOG_FORMAT_JSON;
    if (json) {
        puts_(&l, "{\"ts\":\"");
        puts_(&l, ts);
        puts_(&l, "\",\"level\":\"");
        puts_(&l, level_names[level]);
        puts_(&l, "\",\"msg\":");
        put_json_string(&l, msg);
    } else {
        puts_(&l, ts);
        puts_(&l, " ");
        puts_(&l, level_names[level]);
        puts_(&l, " ");
        puts_(&l, msg);
    }
    for (size_t i = 0; i < n; i++) {
        if (!kv[i].key || (!kv[i].is_num && !kv[i].str))
            continue; /* absent values are left out rather than written as null */
        if (json) {
            puts_(&l, ",");
            put_json_string(&l, kv[i].key);
            puts_(&l, ":");
        } else {
            puts_(&l, " ");
            puts_(&l, kv[i].key);
            puts_(&l, "=");
        }
        if (kv[i].is_num) {
            put(&l, num, log_int_text(kv[i].num, num));
        } else if (json) {
            put_json_string(&l, kv[i].str);
        } else {
            put_text_value(&l, kv[i].str);
        }
    }
    if (json)
        l.buf[l.len++] = '}';
    l.buf[l.len++] = '\n';
    output(level, l.buf, l.len);
}
