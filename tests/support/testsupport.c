/* Test helpers: free ports, child processes, waiting for a listener, HTTP in one call.
 * See testsupport.h. */
#include "testsupport.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

int ts_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof addr;
    int port = 0;
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) == 0 &&
        getsockname(fd, (struct sockaddr *)&addr, &len) == 0)
        port = ntohs(addr.sin_port);
    close(fd);
    return port;
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

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
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
        sleep_ms(10);
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
        sleep_ms(20);
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

int ts_http_full(const char *method, const char *url, const char *const *headers,
                 const char *body, size_t body_len, long timeout_ms, long *status,
                 char **resp_body, char **resp_headers)
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
    return ts_http_full(method, url, headers, body, body ? strlen(body) : 0, 0, status,
                        resp_body, NULL);
}
