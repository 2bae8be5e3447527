/* Small helpers shared by the integration tests and benchmarks: a free TCP port,
 * child processes (start, stop), waiting for a port or a condition, and one-call
 * HTTP through libcurl. Nothing here knows about ccsync or Constant Contact: the
 * stack (stack.h), ccsim's control API (ccsim_client.h), Novi events (novi.h),
 * ccsyncd's status (status.h) and Redis peeks (peek.h) build on it. */
#ifndef CCSYNC_TESTSUPPORT_H
#define CCSYNC_TESTSUPPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

void ts_sleep_ms(long ms);

/* Milliseconds of a monotonic clock: for deadlines. */
long ts_now_ms(void);

/* Polls done(arg) every every_ms until it answers true (returns true) or
 * timeout_ms have passed (returns false). Tests wait for conditions this way,
 * never for a fixed time. */
bool ts_wait_for(bool (*done)(void *arg), void *arg, long timeout_ms, long every_ms);

/* The binary named by $env_name, else $BUILD/name ($BUILD defaults to "build"),
 * into out; returns out. */
const char *ts_bin_path(const char *env_name, const char *name, char *out, size_t size);

/* ts_spawn with the child's stdout and stderr appended to the file log. */
pid_t ts_spawn_logged(char *const argv[], char *const env[], const char *log);
/* ts_spawn_logged for a process a test SIGSTOPs: in a process group of its own, so
 * that it is never in an orphaned process group while we live (the kernel sends
 * SIGHUP then SIGCONT to each process of a group that becomes orphaned while one of
 * them is stopped: when the shell that started us exits, say, and our group's only
 * link to its session goes with it). Killed (SIGKILL) when we die, since a signal to
 * our process group no longer reaches it. */
pid_t ts_spawn_logged_apart(char *const argv[], char *const env[], const char *log);

/* A TCP port on 127.0.0.1 that was free a moment ago; 0 on failure. */
int ts_free_port(void);

/* Starts argv[0] (searched in PATH when it has no '/') with argv, its environment
 * being ours plus env (NULL-terminated "KEY=VALUE" strings, or NULL). Returns the
 * child's pid, or -1. */
pid_t ts_spawn(char *const argv[], char *const env[]);

/* Sends sig to pid and waits up to 5 s for it to exit, then SIGKILLs it. Returns its
 * wait status, or -1. */
int ts_kill(pid_t pid, int sig);

/* 0 once 127.0.0.1:port accepts a connection, -1 after timeout_ms. */
int ts_wait_port(int port, int timeout_ms);

/* One HTTP request. headers: NULL-terminated "Name: value" strings, or NULL; body:
 * NUL-terminated, or NULL for none (no Content-Type is added: pass one). On return
 * *status holds the HTTP status (0 when there was no answer) and *resp_body a
 * malloc'd NUL-terminated body the caller frees (may be NULL). Returns 0 when an
 * answer came, -1 on a transport error (refused, reset, timed out after 10 s). */
int ts_http(const char *method, const char *url, const char *const *headers, const char *body,
            long *status, char **resp_body);

/* ts_http with a body of body_len bytes (may hold NULs), a timeout in ms (0 = 10 s)
 * and, when resp_headers is not NULL, the response header block (malloc'd). */
int ts_http_full(const char *method, const char *url, const char *const *headers, const char *body,
                 size_t body_len, long timeout_ms, long *status, char **resp_body,
                 char **resp_headers);

/* ts_spawn with the child's stdout and stderr written to files (created or
 * truncated; NULL or "/dev/null" discards), so a test can read what it printed. */
pid_t ts_spawn_io(char *const argv[], char *const env[], const char *stdout_path,
                  const char *stderr_path);

/* Waits up to timeout_ms for pid to exit, without signalling it. Returns its wait
 * status, or -1 when it is still running (or is not our child). */
int ts_wait_exit(pid_t pid, int timeout_ms);

/* The whole file, malloc'd and NUL-terminated (the caller frees); *len (may be
 * NULL) gets its size. NULL when it cannot be read. */
char *ts_read_file(const char *path, size_t *len);

/* A throwaway redis-server on 127.0.0.1:port (no persistence, output discarded),
 * waited for until it accepts connections. Returns its pid, or -1. Stop it with
 * ts_kill. */
pid_t ts_redis_start(int port);
/* A redis-server on 127.0.0.1:port with its data and log in dir (NULL: a new
 * temporary folder) and the extra arguments (NULL-terminated, or NULL), waited
 * for. Returns its pid, or -1. */
pid_t ts_redis_start_in(int port, const char *dir, char *const extra[]);
/* A Redis Sentinel on 127.0.0.1:port watching the primary 127.0.0.1:primary
 * under the name "main", deciding alone (quorum 1, down after 1 s); its config
 * and log in dir. Returns its pid, or -1. */
pid_t ts_sentinel_start(int port, int primary, const char *dir);

/* Raw HTTP for what libcurl will not do (a body sent in pieces, chunked by hand,
 * one keep-alive connection kept across a server's state change). */

/* A connected TCP socket to 127.0.0.1:port, or -1. */
int ts_connect(int port);

/* Writes all len bytes; 0 or -1. */
int ts_send_all(int fd, const void *buf, size_t len);

/* Reads one HTTP/1.x response from fd within timeout_ms: *status, the header
 * block and the body (Content-Length, chunked, or up to the close), each malloc'd
 * and NUL-terminated (the caller frees; either pointer may be NULL to discard).
 * Returns 0, or -1 when no complete response came. */
int ts_read_response(int fd, int timeout_ms, long *status, char **headers, char **body);

/* The value of header name (case-insensitive) in a response header block, copied
 * into out without surrounding white space; 0, or -1 when absent. */
int ts_header_value(const char *headers, const char *name, char *out, size_t out_size);

#endif
