/*
 * main.c - the life of ccsyncd on one screen: read the configuration, connect,
 * start the HTTP server and the workers, wait for SIGTERM/SIGINT, drain, exit 0.
 *
 *   ccsyncd                 run the service (configuration from the environment)
 *   ccsyncd --healthcheck   GET /readyz on this configuration's port; exit 0 when 200
 *   ccsyncd --version
 */
#include <curl/curl.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ccsync/admin.h"
#include "ccsync/app.h"
#include "ccsync/config.h"
#include "ccsync/durability.h"
#include "ccsync/http.h"
#include "ccsync/ingest.h"
#include "ccsync/log.h"
#include "ccsync/migrate.h"
#include "ccsync/notify.h"
#include "ccsync/reseal.h"
#include "ccsync/retention.h"
#include "ccsync/store.h"
#include "ccsync/worker.h"

#define CCSYNC_VERSION "0.1.0"
/* How often the retention sweep runs (a multiple of the main loop's 100 ms). */
#define RETENTION_INTERVAL_MS (10 * 60 * 1000L)

/* The only state a signal handler touches. */
static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

static const char *env_lookup(const char *name)
{
    return getenv(name);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static size_t discard(char *p, size_t size, size_t n, void *u)
{
    (void)p;
    (void)u;
    return size * n;
}

static int healthcheck(const struct config *cfg)
{
    char url[128];
    const char *host = strcmp(cfg->listen_host, "0.0.0.0") == 0 ? "127.0.0.1" : cfg->listen_host;
    snprintf(url, sizeof url, "http://%s:%d/readyz", host, cfg->listen_port);
    CURL *h = curl_easy_init();
    if (!h)
        return 1;
    long status = 0;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 3000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    CURLcode rc = curl_easy_perform(h);
    if (rc == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    printf("%s %ld\n", url, status);
    return status == 200 ? 0 : 1;
}

/* Deletes what is kept only CCSYNC_RETENTION_DAYS (retention.h): at start,
 * then every RETENTION_INTERVAL_MS; any process may, so every process does. */
static void sweep_expired(struct app *app)
{
    char err[256];
    redisContext *c = store_pool_get(app->pool, err, sizeof err);
    if (!c)
        return;
    long n = retention_sweep(c, app->cfg->retention_days, store_now_ns() / 1000000);
    snprintf(err, sizeof err, "%s", c->err ? c->errstr : "error reply");
    store_pool_put(app->pool, c, c->err == 0);
    if (n > 0)
        log_info("retention_swept", LOG_INT("member_records_deleted", n));
    else if (n < 0)
        log_warn("retention_failed", LOG_STR("error", err));
}

/* Runs until SIGTERM or SIGINT; Redis may come up after us, so the bootstrap
 * association is written once it answers. */
static void wait_for_signal(struct app *app)
{
    char err[512];
    bool bootstrapped = app->cfg->boot_association_id[0] == '\0';
    long waited_ms = 0;
    while (!stop_signal) {
        if (!bootstrapped && waited_ms % 2000 == 0) {
            bootstrapped = admin_bootstrap_association(app, err, sizeof err) == 0;
            if (!bootstrapped)
                log_warn("bootstrap_failed", LOG_STR("error", err));
        }
        if (waited_ms % RETENTION_INTERVAL_MS == 0)
            sweep_expired(app);
        sleep_ms(100);
        waited_ms += 100;
    }
}

/* Drain: readyz turns 503, no new connections, in-flight requests finish,
 * workers finish their step or hand it back, then everything stops. */
static void drain(struct app *app, struct http_server *http)
{
    const struct config *cfg = app->cfg;
    log_info("draining", LOG_STR("signal", stop_signal == SIGINT ? "SIGINT" : "SIGTERM"),
             LOG_INT("grace_seconds", cfg->shutdown_grace_seconds));
    atomic_store(&app->draining, true);
    http_quiesce(http);
    long grace_ms = (long)cfg->shutdown_grace_seconds * 1000;
    long spent = 0;
    while (http_in_flight(http) > 0 && spent < grace_ms / 2) {
        sleep_ms(20);
        spent += 20;
    }
    bool workers_stopped = engine_stop(app->engine, grace_ms - spent);
    notify_stop(app->notifier);
    /* Ingest answers what it holds before the daemon goes, so no suspended
     * request is left waiting on it; it is freed only after the daemon, whose
     * threads may still submit (answered at once by then). */
    ingest_stop(app->ingest);
    http_stop(http);
    ingest_free(app->ingest);
    /* A worker still inside a CC call uses libcurl and a pooled connection:
     * the process exits under it instead of freeing them. */
    if (workers_stopped) {
        store_pool_free(app->pool);
        curl_global_cleanup();
    }
    log_info("stopped", LOG_INT("drain_ms", spent));
}

/* Reads Redis's persistence settings and judges them against CCSYNC_DURABILITY:
 * each shortfall is logged; one that the mode cannot accept stops the start. */
static int check_durability(const struct config *cfg, struct durability_report *out)
{
    char err[512];
    redisContext *c = store_connect(&cfg->redis, 5000, err, sizeof err);
    struct redis_persistence p = {0};
    if (!c || durability_read(c, &p) != STORE_OK)
        p.known = false;
    if (c)
        redisFree(c);
    durability_judge((enum durability_mode)cfg->durability, &p, out);
    for (size_t i = 0; i < out->n_warnings; i++)
        log_warn("redis_durability", LOG_STR("mode", durability_mode_name(cfg->durability)),
                 LOG_STR("warning", out->warnings[i]));
    if (!out->fatal)
        return 0;
    fprintf(stderr, "ccsyncd: CCSYNC_DURABILITY: %s\n", out->warnings[0]);
    return -1;
}

static int run(const struct config *cfg)
{
    log_init(cfg->log_format, cfg->log_level);
    log_start_writer();
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    static struct app app;
    char err[512];
    app.cfg = cfg;
    app.started_at_ns = store_now_ns();
    atomic_store(&app.starting, true);
    app.pool = store_pool_new(&cfg->redis, 2000);
    app.ingest = ingest_new(&cfg->redis,
                            cfg->durability == DURABILITY_REPLICA ? cfg->replica_timeout_ms : 0);
    if (!app.pool || !app.ingest) {
        fprintf(stderr, "ccsyncd: out of memory at start\n");
        return 1;
    }
    /* Listening first: a bad address fails at once, and /livez answers while
     * Redis is awaited; everything else answers 503 until the start is done. */
    struct http_server *http = http_start(&app, err, sizeof err);
    if (!http) {
        fprintf(stderr, "ccsyncd: %s\n", err);
        return 2;
    }
    /* Redis in this release's key layout before anything reads or writes a key;
     * then every secret at rest sealed under the key file's first key. */
    struct reseal_report sealing;
    int rc = migrate_at_start(&cfg->redis, &stop_signal) != STORE_OK ? (stop_signal ? 0 : 1)
             : check_durability(cfg, &app.durability) != 0           ? 2
             : reseal_at_start(cfg, &sealing) != STORE_OK            ? 1
                                                                     : -1;
    if (rc >= 0) {
        http_stop(http);
        ingest_free(app.ingest);
        store_pool_free(app.pool);
        curl_global_cleanup();
        log_stop_writer();
        return rc;
    }
    atomic_store(&app.starting, false);
    app.engine = engine_start(&app);
    app.notifier = notify_start(&app);
    log_info("started", LOG_STR("version", CCSYNC_VERSION), LOG_STR("listen", cfg->listen_host),
             LOG_INT("port", http_port(http)), LOG_INT("admin_port", http_admin_port(http)),
             LOG_STR("redis_host", cfg->redis.host), LOG_INT("redis_port", cfg->redis.port),
             LOG_INT("workers", cfg->workers), LOG_STR("cc_api_url", cfg->cc_api_url));
    wait_for_signal(&app);
    drain(&app, http);
    log_stop_writer();
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("ccsyncd %s\n", CCSYNC_VERSION);
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "--healthcheck") != 0) {
        fprintf(stderr, "usage: ccsyncd [--healthcheck | --version]; configuration comes from "
                        "CCSYNC_* environment variables (see README.md)\n");
        return 2;
    }
    static struct config cfg;
    char err[512];
    if (config_load(&cfg, env_lookup, err, sizeof err) != 0) {
        fprintf(stderr, "ccsyncd: configuration error: %s\n", err);
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (argc > 1) {
        int rc = healthcheck(&cfg);
        curl_global_cleanup();
        return rc;
    }
    return run(&cfg);
}
