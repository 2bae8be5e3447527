/* Test helpers: free ports, child processes, waiting for a listener, HTTP in one call.
 * See testsupport.h. */
#include "testsupport.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* Binds 127.0.0.1:port (0: any); the port bound, or 0. */
static int try_port(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons((uint16_t)port);
    socklen_t len = sizeof addr;
    int got = 0;
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) == 0 &&
        getsockname(fd, (struct sockaddr *)&addr, &len) == 0)
        got = ntohs(addr.sin_port);
    close(fd);
    return got;
}

/*
 * run-all.sh runs test binaries side by side and gives each its own range of
 * ports below the kernel's ephemeral range (TEST_PORT_BASE, TEST_PORT_SPAN): a
 * port a test frees to restart a server on (a ccsyncd killed and started again)
 * can then be taken neither by another binary's server nor by a client
 * connection's ephemeral port. Alone, a binary takes what the kernel gives.
 */
int ts_free_port(void)
{
    static int next; /* only the test's main thread asks */
    const char *base_s = getenv("TEST_PORT_BASE"), *span_s = getenv("TEST_PORT_SPAN");
    int base = base_s ? atoi(base_s) : 0, span = span_s ? atoi(span_s) : 200;
    if (base <= 0 || span <= 0)
        return try_port(0);
    for (int i = 0; i < span; i++) {
        int port = base + (next++ % span);
        if (try_port(port) == port)
            return port;
    }
    return 0;
}

pid_t ts_spawn(char *const argv[], char *const env[])
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid > 0)
        return pid;
    for (size_t i = 0; env != NULL && env[i] != NULL; i++)
        putenv(env[i]);
    execvp(argv[0], argv);
    fprintf(stderr, "ts_spawn: cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

void ts_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

long ts_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

bool ts_wait_for(bool (*done)(void *arg), void *arg, long timeout_ms, long every_ms)
{
    long deadline = ts_now_ms() + timeout_ms;
    for (;;) {
        if (done(arg))
            return true;
        if (ts_now_ms() > deadline)
            return false;
        ts_sleep_ms(every_ms);
    }
}

const char *ts_bin_path(const char *env_name, const char *name, char *out, size_t size)
{
    const char *v = getenv(env_name);
    if (v && *v) {
        snprintf(out, size, "%s", v);
    } else {
        const char *build = getenv("BUILD");
        snprintf(out, size, "%s/%s", build && *build ? build : "build", name);
    }
    return out;
}

/* The child of ts_spawn_logged(_apart): apart also puts it in a process group of
 * its own and has it killed when we die. */
static pid_t spawn_logged(char *const argv[], char *const env[], const char *log, bool apart)
{
    fflush(stdout);
    fflush(stderr);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid > 0 && apart)
        setpgid(pid, pid); /* also here: no window in which a signal to it finds it in ours */
    if (pid != 0)
        return pid;
    if (apart) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a signal to our group no longer reaches it */
        if (getppid() != parent)
            _exit(126); /* we died before prctl */
    }
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        close(fd);
    }
    for (size_t i = 0; env && env[i]; i++)
        putenv(env[i]);
    execvp(argv[0], argv);
    fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

pid_t ts_spawn_logged(char *const argv[], char *const env[], const char *log)
{
    return spawn_logged(argv, env, log, false);
}

pid_t ts_spawn_logged_apart(char *const argv[], char *const env[], const char *log)
{
    return spawn_logged(argv, env, log, true);
}

int ts_kill(pid_t pid, int sig)
{
    if (pid <= 0)
        return -1;
    kill(pid, sig);
    int status;
    for (int i = 0; i < 500; i++) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        if (r < 0)
            return -1;
        ts_sleep_ms(10);
    }
    kill(pid, SIGKILL);
    return waitpid(pid, &status, 0) == pid ? status : -1;
}

int ts_wait_port(int port, int timeout_ms)
{
    for (int waited = 0; waited <= timeout_ms; waited += 20) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0)
            return -1;
        struct sockaddr_in addr;
        memset(&addr, 0, sizeof addr);
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        addr.sin_port = htons((uint16_t)port);
        int ok = connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0;
        close(fd);
        if (ok)
            return 0;
        ts_sleep_ms(20);
    }
    return -1;
}

struct buffer {
    char *data;
    size_t len;
};

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct buffer *b = userdata;
    size_t n = size * nmemb;
    char *grown = realloc(b->data, b->len + n + 1);
    if (grown == NULL)
        return 0;
    b->data = grown;
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

int ts_http_full(const char *method, const char *url, const char *const *headers, const char *body,
                 size_t body_len, long timeout_ms, long *status, char **resp_body,
                 char **resp_headers)
{
    pthread_once(&curl_once, curl_init_once);
    *status = 0;
    *resp_body = NULL;
    if (resp_headers)
        *resp_headers = NULL;
    CURL *curl = curl_easy_init();
    if (curl == NULL)
        return -1;
    struct buffer out = {NULL, 0}, hdr = {NULL, 0};
    struct curl_slist *list = NULL;
    for (size_t i = 0; headers != NULL && headers[i] != NULL; i++)
        list = curl_slist_append(list, headers[i]);
    if (body != NULL) {
        bool typed = false;
        for (size_t i = 0; headers != NULL && headers[i] != NULL; i++)
            typed = typed || strncasecmp(headers[i], "Content-Type:", 13) == 0;
        if (!typed) /* no implicit form Content-Type: the caller says what it sends */
            list = curl_slist_append(list, "Content-Type:");
        list = curl_slist_append(list, "Expect:");
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms > 0 ? timeout_ms : 10000L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &out);
    if (resp_headers) {
        curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_data);
        curl_easy_setopt(curl, CURLOPT_HEADERDATA, &hdr);
    }
    CURLcode rc = curl_easy_perform(curl);
    if (rc == CURLE_OK)
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, status);
    curl_slist_free_all(list);
    curl_easy_cleanup(curl);
    *resp_body = out.data;
    if (resp_headers)
        *resp_headers = hdr.data;
    else
        free(hdr.data);
    return rc == CURLE_OK ? 0 : -1;
}

int ts_http(const char *method, const char *url, const char *const *headers, const char *body,
            long *status, char **resp_body)
{
    return ts_http_full(method, url, headers, body, body ? strlen(body) : 0, 0, status, resp_body,
                        NULL);
}

/* ---- processes with captured output, files, redis-server ---- */

static int redirect(int target_fd, const char *path)
{
    int fd = open(path ? path : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    int rc = dup2(fd, target_fd) < 0 ? -1 : 0;
    close(fd);
    return rc;
}

pid_t ts_spawn_io(char *const argv[], char *const env[], const char *stdout_path,
                  const char *stderr_path)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid > 0)
        return pid;
    if (redirect(STDOUT_FILENO, stdout_path) != 0 || redirect(STDERR_FILENO, stderr_path) != 0)
        _exit(126);
    for (size_t i = 0; env != NULL && env[i] != NULL; i++)
        putenv(env[i]);
    execvp(argv[0], argv);
    fprintf(stderr, "ts_spawn_io: cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

int ts_wait_exit(pid_t pid, int timeout_ms)
{
    if (pid <= 0)
        return -1;
    int status;
    for (int waited = 0;; waited += 10) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        if (r < 0 || waited >= timeout_ms)
            return -1;
        ts_sleep_ms(10);
    }
}

char *ts_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    struct buffer b = {NULL, 0};
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (on_data(chunk, 1, n, &b) != n) {
            free(b.data);
            fclose(f);
            return NULL;
        }
    }
    fclose(f);
    if (b.data == NULL)
        b.data = calloc(1, 1);
    if (len)
        *len = b.len;
    return b.data;
}

/* Starts argv (a redis-server) with its output in log (NULL: discarded) and
 * waits until port accepts; its pid, or -1. */
static pid_t redis_process(char *const argv[], int port, const char *log)
{
    pid_t pid = ts_spawn_io(argv, NULL, log, log);
    if (pid > 0 && ts_wait_port(port, 5000) != 0) {
        ts_kill(pid, SIGKILL);
        return -1;
    }
    return pid;
}

pid_t ts_redis_start_in(int port, const char *dir, char *const extra[])
{
    char port_s[16], tmp[] = "/tmp/ccsync-redis-XXXXXX", log[300] = "";
    snprintf(port_s, sizeof port_s, "%d", port);
    /* a folder of its own: never a dump.rdb left in (or loaded from) the working folder */
    if (!dir && !(dir = mkdtemp(tmp)))
        return -1;
    snprintf(log, sizeof log, "%s/redis-%d.log", dir, port);
    char *argv[40] = {"redis-server", "--port",     port_s,   "--bind",
                      "127.0.0.1",    "--save",     "",       "--dir",
                      (char *)dir,    "--loglevel", "warning"};
    size_t n = 11;
    for (size_t k = 0; extra && extra[k] && n < 39; k++)
        argv[n++] = extra[k];
    argv[n] = NULL;
    return redis_process(argv, port, log);
}

pid_t ts_redis_start(int port)
{
    char *no_aof[] = {"--appendonly", "no", NULL};
    return ts_redis_start_in(port, NULL, no_aof);
}

pid_t ts_sentinel_start(int port, int primary, const char *dir)
{
    char conf[300], log[300];
    snprintf(conf, sizeof conf, "%s/sentinel-%d.conf", dir, port);
    snprintf(log, sizeof log, "%s/sentinel-%d.log", dir, port);
    FILE *f = fopen(conf, "w");
    if (!f)
        return -1;
    fprintf(f,
            "port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor main 127.0.0.1 %d 1\n"
            "sentinel down-after-milliseconds main 1000\nsentinel failover-timeout main 10000\n",
            port, dir, primary);
    fclose(f);
    char *argv[] = {"redis-server", conf, "--sentinel", NULL};
    return redis_process(argv, port, log);
}

/* ---- raw HTTP ---- */

int ts_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons((uint16_t)port);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int ts_send_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static long elapsed_ms(const struct timespec *since)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - since->tv_sec) * 1000L + (now.tv_nsec - since->tv_nsec) / 1000000L;
}

/* Decodes a complete chunked body from src into a new buffer; -1 when incomplete. */
static int unchunk(const char *src, size_t len, struct buffer *out)
{
    size_t pos = 0;
    for (;;) {
        const char *eol = memmem(src + pos, len - pos, "\r\n", 2);
        if (eol == NULL)
            return -1;
        size_t size = strtoul(src + pos, NULL, 16);
        pos = (size_t)(eol - src) + 2;
        if (size == 0)
            return memmem(src + pos, len - pos, "\r\n", 2) ? 0 : -1;
        if (len - pos < size + 2)
            return -1;
        if (on_data((char *)src + pos, 1, size, out) != size)
            return -1;
        pos += size + 2;
    }
}

int ts_read_response(int fd, int timeout_ms, long *status, char **headers, char **body)
{
    struct buffer in = {NULL, 0};
    struct timespec started;
    clock_gettime(CLOCK_MONOTONIC, &started);
    *status = 0;
    if (headers)
        *headers = NULL;
    if (body)
        *body = NULL;
    int rc = -1;
    bool closed = false;
    for (;;) {
        const char *end = in.data ? strstr(in.data, "\r\n\r\n") : NULL;
        if (end != NULL) {
            size_t head_len = (size_t)(end - in.data) + 4;
            char cl[32];
            char te[64] = "";
            struct buffer content = {NULL, 0};
            char *head = strndup(in.data, head_len);
            bool chunked = ts_header_value(head, "Transfer-Encoding", te, sizeof te) == 0 &&
                           strcasecmp(te, "chunked") == 0;
            bool complete = false;
            if (chunked) {
                complete = unchunk(in.data + head_len, in.len - head_len, &content) == 0;
            } else if (ts_header_value(head, "Content-Length", cl, sizeof cl) == 0) {
                size_t want = strtoul(cl, NULL, 10);
                if (in.len - head_len >= want) {
                    complete = true;
                    if (want > 0)
                        on_data(in.data + head_len, 1, want, &content);
                }
            } else if (closed) {
                complete = true;
                if (in.len > head_len)
                    on_data(in.data + head_len, 1, in.len - head_len, &content);
            }
            if (complete) {
                *status = strtol(in.data + strcspn(in.data, " "), NULL, 10);
                if (content.data == NULL)
                    content.data = calloc(1, 1);
                if (headers)
                    *headers = head;
                else
                    free(head);
                if (body)
                    *body = content.data;
                else
                    free(content.data);
                rc = 0;
                break;
            }
            free(head);
            free(content.data);
        }
        long left = timeout_ms - elapsed_ms(&started);
        if (closed || left <= 0)
            break;
        struct pollfd p = {fd, POLLIN, 0};
        int ready = poll(&p, 1, (int)left);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready <= 0)
            break;
        char chunk[8192];
        ssize_t n = recv(fd, chunk, sizeof chunk, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            closed = true;
            continue;
        }
        if (on_data(chunk, 1, (size_t)n, &in) != (size_t)n)
            break;
    }
    free(in.data);
    return rc;
}

int ts_header_value(const char *headers, const char *name, char *out, size_t out_size)
{
    size_t name_len = strlen(name);
    for (const char *line = headers; line && *line;) {
        const char *eol = strstr(line, "\r\n");
        size_t line_len = eol ? (size_t)(eol - line) : strlen(line);
        if (line_len > name_len && line[name_len] == ':' &&
            strncasecmp(line, name, name_len) == 0) {
            const char *v = line + name_len + 1;
            const char *v_end = line + line_len;
            while (v < v_end && (*v == ' ' || *v == '\t'))
                v++;
            while (v_end > v && (v_end[-1] == ' ' || v_end[-1] == '\t'))
                v_end--;
            snprintf(out, out_size, "%.*s", (int)(v_end - v), v);
            return 0;
        }
        if (!eol)
            break;
        line = eol + 2;
    }
    return -1;
}
