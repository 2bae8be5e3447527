/* Small helpers shared by the integration tests and benchmarks: a free TCP port,
 * child processes (start, stop), waiting for a port to accept, and one-call HTTP
 * through libcurl. Nothing here knows about ccsync or Constant Contact. */
#ifndef CCSYNC_TESTSUPPORT_H
#define CCSYNC_TESTSUPPORT_H

#include <stddef.h>
#include <sys/types.h>

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
int ts_http_full(const char *method, const char *url, const char *const *headers,
                 const char *body, size_t body_len, long timeout_ms, long *status,
                 char **resp_body, char **resp_headers);

#endif
