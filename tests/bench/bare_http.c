/*
 * bare_http.c - the bare-HTTP ceiling of the ingest benchmark: a libmicrohttpd
 * server started with the same flags as service/http.c (internal polling thread
 * pool sized from the cores, epoll, suspend/resume, ITC) that reads any request
 * body and answers 200 with a small JSON body. Whatever ccsyncd does on top of
 * this (signature check, JSON validation, the Redis round trip) shows as the gap
 * between the two in tests/bench/run.sh.
 *
 * With "hop", each request is also suspended and handed to a second thread,
 * which resumes it at once, as ccsyncd hands a webhook to the thread that talks
 * to Redis: the cost of libmicrohttpd's suspend/resume alone, without any work.
 *
 *   bare_http PORT [THREADS [hop]]   THREADS defaults to the number of online cores
 *
 * Prints "listening on PORT" once it accepts; runs until SIGTERM or SIGINT.
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdbool.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static const char answer[] = "{\"status\":\"ok\"}";

/* "hop": suspended connections wait here for the resumer thread. */
struct waiting {
    struct MHD_Connection *conn;
    struct waiting *next;
};
static bool hop;
static pthread_mutex_t hop_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hop_wake = PTHREAD_COND_INITIALIZER;
static struct waiting *hop_head;

static void *resumer_main(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&hop_lock);
        while (!hop_head)
            pthread_cond_wait(&hop_wake, &hop_lock);
        struct waiting *w = hop_head;
        hop_head = NULL;
        pthread_mutex_unlock(&hop_lock);
        while (w) {
            struct waiting *next = w->next;
            MHD_resume_connection(w->conn);
            free(w);
            w = next;
        }
    }
    return NULL;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)cls, (void)url, (void)method, (void)version, (void)upload_data;
    /* First call: headers only. Then the body in pieces (discarded), then the end. */
    if (!*con_cls) {
        *con_cls = conn;
        return MHD_YES;
    }
    if (*upload_data_size) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (hop && *con_cls == conn) {
        struct waiting *w = malloc(sizeof *w);
        if (!w)
            return MHD_NO;
        *con_cls = (void *)answer; /* resumed once: answer on the next call */
        w->conn = conn;
        MHD_suspend_connection(conn);
        pthread_mutex_lock(&hop_lock);
        w->next = hop_head;
        hop_head = w;
        pthread_cond_signal(&hop_wake);
        pthread_mutex_unlock(&hop_lock);
        return MHD_YES;
    }
    /* A fresh response per request, as ccsyncd builds one (its cost belongs to both). */
    struct MHD_Response *r =
        MHD_create_response_from_buffer(sizeof answer - 1, (void *)answer, MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s PORT [THREADS [hop]]\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned int threads = argc > 2 && atoi(argv[2]) > 0 ? (unsigned int)atoi(argv[2])
                                                         : (unsigned int)(cores > 0 ? cores : 1);
    hop = argc > 3 && strcmp(argv[3], "hop") == 0;
    pthread_t resumer;
    if (hop && pthread_create(&resumer, NULL, resumer_main, NULL) != 0) {
        fprintf(stderr, "bare_http: cannot start the resumer thread\n");
        return 1;
    }

    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_ALLOW_SUSPEND_RESUME |
                         MHD_USE_ITC | MHD_USE_ERROR_LOG;
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_THREAD_POOL_SIZE, threads, MHD_OPTION_CONNECTION_LIMIT, 10000u,
        MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "bare_http: cannot listen on 127.0.0.1:%d\n", port);
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    printf("listening on %d (%u threads%s)\n", port, threads, hop ? ", suspend/resume hop" : "");
    fflush(stdout);
    while (!stop)
        pause();
    MHD_stop_daemon(d);
    return 0;
}
