/* ccsim: the whole life of the simulator process. Reads the options, starts the
 * HTTP daemon, waits for SIGINT/SIGTERM, stops. */
#include "sim.h"

#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: ccsim --listen HOST:PORT [options]\n"
            "A Constant Contact v3 API simulator (see tests/ccsim/README.md).\n\n"
            "  --listen HOST:PORT     address to serve on (PORT 0 = any; the port is printed)\n"
            "  --rate N               requests per any 1-second window before 429 throttled\n"
            "                         (default 4; 0 = off)\n"
            "  --daily-limit N        requests per UTC day before 429 quota_exceeded\n"
            "                         (default 10000; 0 = off)\n"
            "  --no-limits            same as --rate 0 --daily-limit 0\n"
            "  --activity-ms MS       time an activity takes from initialized to completed\n"
            "                         (default 200; processing from half of it)\n"
            "  --token-ttl SECONDS    lifetime of issued access tokens (default 86400)\n"
            "  --max-lists N          active contact lists per account (default 1000)\n"
            "  --max-activities N     unfinished activities before 429 (default 1000)\n"
            "  --no-auth              accept requests without a Bearer token\n"
            "  --dev-token TOKEN      pre-register TOKEN as a never-expiring access token\n"
            "  --help                 this text\n");
}

static int parse_listen(const char *s, struct sim_config *cfg)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL || (size_t)(colon - s) >= sizeof cfg->host || colon == s)
        return -1;
    memcpy(cfg->host, s, (size_t)(colon - s));
    cfg->host[colon - s] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port < 0 || port > 65535)
        return -1;
    cfg->port = (int)port;
    return 0;
}

static long number_arg(const char *name, const char *s)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < 0) {
        fprintf(stderr, "ccsim: %s needs a non-negative integer\n", name);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    struct sim_config cfg = {
        .host = "127.0.0.1",
        .port = 0,
        .rate = 4,
        .daily_limit = 10000,
        .activity_ms = 200,
        .token_ttl = 86400,
        .max_lists = 1000,
        .max_activities = 1000,
        .auth = true,
    };
    bool have_listen = false;
    static const struct option opts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"rate", required_argument, NULL, 'r'},
        {"daily-limit", required_argument, NULL, 'd'},
        {"no-limits", no_argument, NULL, 'n'},
        {"activity-ms", required_argument, NULL, 'a'},
        {"token-ttl", required_argument, NULL, 't'},
        {"max-lists", required_argument, NULL, 'm'},
        {"max-activities", required_argument, NULL, 'q'},
        {"no-auth", no_argument, NULL, 'u'},
        {"dev-token", required_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'l':
            if (parse_listen(optarg, &cfg) != 0) {
                fprintf(stderr, "ccsim: --listen wants HOST:PORT\n");
                return 2;
            }
            have_listen = true;
            break;
        case 'r':
            cfg.rate = (int)number_arg("--rate", optarg);
            break;
        case 'd':
            cfg.daily_limit = number_arg("--daily-limit", optarg);
            break;
        case 'n':
            cfg.rate = 0;
            cfg.daily_limit = 0;
            break;
        case 'a':
            cfg.activity_ms = (int)number_arg("--activity-ms", optarg);
            break;
        case 't':
            cfg.token_ttl = number_arg("--token-ttl", optarg);
            break;
        case 'm':
            cfg.max_lists = (int)number_arg("--max-lists", optarg);
            break;
        case 'q':
            cfg.max_activities = (int)number_arg("--max-activities", optarg);
            break;
        case 'u':
            cfg.auth = false;
            break;
        case 'k':
            snprintf(cfg.dev_token, sizeof cfg.dev_token, "%s", optarg);
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!have_listen || optind != argc) {
        usage(stderr);
        return 2;
    }
    sim_state_init(&cfg);
    /* SIGINT and SIGTERM are blocked before the daemon's threads exist, so they
     * inherit the mask and only sigwait below takes them: a handler could run
     * on any thread and leave this one paused forever. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (http_start() != 0)
        return 1;
    printf("ccsim listening on %s:%d\n", sim.cfg.host, sim.cfg.port);
    fflush(stdout);
    int sig = 0;
    sigwait(&stop_signals, &sig);
    http_stop();
    pthread_mutex_lock(&sim.lock);
    sim_state_reset(); /* frees everything, so leak checkers stay quiet */
    pthread_mutex_unlock(&sim.lock);
    return 0;
}
