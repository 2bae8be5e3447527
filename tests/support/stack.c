/* The stack under test: redis-server, ccsim and ccsyncd on free ports, with the
 * timings each test asks for. See stack.h. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ccsim_client.h"
#include "stack.h"
#include "testsupport.h"

struct stack stack;

void stack_log_path(char *out, size_t size, const char *what)
{
    snprintf(out, size, "%s/%02d-%s.log", stack.log_dir, stack.serial, what);
}

int stack_start_redis(void)
{
    char rport[16], log[256];
    snprintf(rport, sizeof rport, "%d", stack.redis_port);
    char *aof[] = {
        "redis-server", "--port",       rport,          "--bind", "127.0.0.1",     "--save", "",
        "--dir",        stack.data_dir, "--appendonly", "yes",    "--appendfsync", "always", NULL};
    /* --dir even without persistence: a Redis that becomes a replica writes the
     * primary's snapshot there, and one started in a folder holding a dump.rdb
     * would load it */
    char *mem[] = {"redis-server", "--port",       rport, "--bind",
                   "127.0.0.1",    "--save",       "",    "--dir",
                   stack.data_dir, "--appendonly", "no",  NULL};
    stack_log_path(log, sizeof log, "redis");
    if (stack.o.aof_everysec)
        aof[12] = "everysec";
    stack.redis_pid = ts_spawn_logged(stack.o.aof ? aof : mem, NULL, log);
    return stack.redis_pid > 0 && ts_wait_port(stack.redis_port, 10000) == 0 ? 0 : -1;
}

static int start_ccsim(void)
{
    char ccsim[512], listen[64], rate[16], act[16], log[256];
    ts_bin_path("CCSIM_BIN", "ccsim", ccsim, sizeof ccsim);
    stack.sim_port = ts_free_port();
    snprintf(listen, sizeof listen, "127.0.0.1:%d", stack.sim_port);
    snprintf(rate, sizeof rate, "%d", stack.o.sim_rate);
    snprintf(act, sizeof act, "%d", stack.o.activity_ms ? stack.o.activity_ms : 200);
    char *argv[] = {ccsim,    "--listen", listen,          "--dev-token", DEV_TOKEN,
                    "--rate", rate,       "--activity-ms", act,           NULL};
    stack_log_path(log, sizeof log, "ccsim");
    stack.sim_pid = ts_spawn_logged(argv, NULL, log);
    snprintf(stack.sim_root, sizeof stack.sim_root, "http://127.0.0.1:%d", stack.sim_port);
    return stack.sim_pid > 0 && ts_wait_port(stack.sim_port, 10000) == 0 ? 0 : -1;
}

static int or_default(int v, int dflt)
{
    return v ? v : dflt;
}

/* ccsyncd i's environment: the stack's ports and timings, then the test's own
 * overrides (putenv in order: a later entry wins). Kept in static storage. */
static char **ccsyncd_env(int i)
{
    static char vars[STACK_MAX_CCSYNCD][11][256];
    static char *env[STACK_MAX_CCSYNCD][24 + STACK_MAX_ENV];
    const struct stack_options *o = &stack.o;
    char(*v)[256] = vars[i];
    snprintf(v[0], 128, "CCSYNC_LISTEN=127.0.0.1:%d", stack.http_port[i]);
    snprintf(v[1], 128, "CCSYNC_REDIS_URL=redis://127.0.0.1:%d/0", stack.redis_port);
    snprintf(v[2], 128, "CCSYNC_CC_API_URL=%s/v3", stack.sim_root);
    snprintf(v[3], 128, "CCSYNC_CC_TOKEN_URL=%s/oauth2/default/v1/token", stack.sim_root);
    snprintf(v[4], 128, "CCSYNC_WORKERS=%d",
             o->workers == STACK_NO_WORKERS ? 0 : or_default(o->workers, 2));
    snprintf(v[5], 128, "CCSYNC_CC_RATE_PER_SEC=%d", or_default(o->cc_rate, 100));
    snprintf(v[6], 128, "CCSYNC_RECONCILE_SECONDS=%d", or_default(o->reconcile_seconds, 3600));
    snprintf(v[7], 128, "CCSYNC_LEASE_SECONDS=%d", or_default(o->lease_seconds, 15));
    snprintf(v[8], 128, "CCSYNC_SYNC_DELAY_MS=%d", or_default(o->sync_delay_ms, 100));
    snprintf(v[9], 256, "CCSYNC_SECRETS_KEY_FILE=%s", stack.key_file);
    if (stack.admin_port[i] > 0)
        snprintf(v[10], 256, "CCSYNC_ADMIN_LISTEN=127.0.0.1:%d", stack.admin_port[i]);
    else
        snprintf(v[10], 256, "CCSYNC_ADMIN_LISTEN=");
    static char *fixed[] = {
        "CCSYNC_ADMIN_TOKEN=" ADMIN_TOKEN, "CCSYNC_LOG_FORMAT=json", "CCSYNC_LOG_LEVEL=info",
        "CCSYNC_ASSOCIATION_ID=", "CCSYNC_WEBHOOK_SECRET=", "CCSYNC_CC_ACCESS_TOKEN=",
        "CCSYNC_CC_REFRESH_TOKEN=", "CCSYNC_CC_EXPIRES_AT=", "CCSYNC_CC_CLIENT_ID=ccsync-test",
        /* a day that never binds, so reconcile keeps to its floor
         * (reconcile_seconds); a budget test sets its own */
        "CCSYNC_CC_DAILY_LIMIT=100000000"};
    size_t n = 0;
    for (size_t k = 0; k < 11; k++)
        env[i][n++] = v[k];
    for (size_t k = 0; k < sizeof fixed / sizeof fixed[0]; k++)
        env[i][n++] = fixed[k];
    for (size_t k = 0; k < STACK_MAX_ENV && o->env[k]; k++)
        env[i][n++] = (char *)o->env[k];
    env[i][n] = NULL;
    return env[i];
}

static bool ccsyncd_ready(void *arg)
{
    int i = *(int *)arg;
    long status = 0;
    char url[128], *body = NULL;
    snprintf(url, sizeof url, "%s/readyz", stack.base[i]);
    ts_http("GET", url, NULL, NULL, &status, &body);
    free(body);
    return status == 200;
}

int stack_start_ccsyncd(int i)
{
    char ccsyncd[512], log[256], what[32];
    ts_bin_path("CCSYNCD_BIN", "ccsyncd", ccsyncd, sizeof ccsyncd);
    char *argv[] = {ccsyncd, NULL};
    snprintf(what, sizeof what, "ccsyncd%d", i);
    stack_log_path(log, sizeof log, what);
    stack.ccsyncd_pid[i] = stack.o.pausable ? ts_spawn_logged_apart(argv, ccsyncd_env(i), log)
                                            : ts_spawn_logged(argv, ccsyncd_env(i), log);
    snprintf(stack.base[i], sizeof stack.base[i], "http://127.0.0.1:%d", stack.http_port[i]);
    if (stack.admin_port[i] > 0)
        snprintf(stack.admin_base[i], sizeof stack.admin_base[i], "http://127.0.0.1:%d",
                 stack.admin_port[i]);
    else
        memcpy(stack.admin_base[i], stack.base[i], sizeof stack.admin_base[i]);
    if (stack.ccsyncd_pid[i] <= 0 || ts_wait_port(stack.http_port[i], 10000) != 0)
        return -1;
    return ts_wait_for(ccsyncd_ready, &i, 20000, 50) ? 0 : -1;
}

void stack_kill_ccsyncd(int i)
{
    assert_int_equal(kill(stack.ccsyncd_pid[i], SIGKILL), 0);
    assert_true(WIFSIGNALED(ts_kill(stack.ccsyncd_pid[i], SIGKILL)));
    stack.ccsyncd_pid[i] = 0;
}

static int connect_association(void)
{
    switch (stack.o.connect) {
    case STACK_MINTED_TOKEN:
        mint_tokens(stack.access, stack.refresh);
        put_tokens(stack.access, stack.refresh);
        return 0;
    case STACK_SECRET_ONLY: {
        struct reply r =
            api("PUT", "/v1/associations/" ASSOC, "{\"webhook_secret\":\"" SECRET "\"}");
        long status = r.status;
        reply_free(&r);
        return status == 200 ? 0 : -1;
    }
    default:
        put_tokens(DEV_TOKEN, NULL);
        return 0;
    }
}

static int make_dirs(const char *test)
{
    char ccsim[512], ccsyncd[512];
    ts_bin_path("CCSIM_BIN", "ccsim", ccsim, sizeof ccsim);
    ts_bin_path("CCSYNCD_BIN", "ccsyncd", ccsyncd, sizeof ccsyncd);
    if (access(ccsim, X_OK) != 0 || access(ccsyncd, X_OK) != 0) {
        fprintf(stderr, "%s: %s or %s missing (set CCSIM_BIN, CCSYNCD_BIN or BUILD)\n", test, ccsim,
                ccsyncd);
        return -1;
    }
    if (!stack.log_dir[0]) {
        snprintf(stack.log_dir, sizeof stack.log_dir, "/tmp/ccsync-%s-%d", test, getpid());
        mkdir(stack.log_dir, 0755);
        fprintf(stderr, "%s: process logs in %s\n", test, stack.log_dir);
    }
    stack.serial++;
    snprintf(stack.data_dir, sizeof stack.data_dir, "%s/%02d-redis-data", stack.log_dir,
             stack.serial);
    mkdir(stack.data_dir, 0755);
    snprintf(stack.key_file, sizeof stack.key_file, "%s/%02d-secrets.key", stack.log_dir,
             stack.serial);
    return stack_write_key_file(STACK_KEY_LINE "\n");
}

int stack_write_key_file(const char *text)
{
    FILE *f = fopen(stack.key_file, "w");
    if (!f)
        return -1;
    chmod(stack.key_file, 0600);
    bool ok = fputs(text, f) >= 0;
    return fclose(f) == 0 && ok ? 0 : -1;
}

int stack_start(const char *test, const struct stack_options *o)
{
    stack.o = *o;
    memset(stack.admin_port, 0, sizeof stack.admin_port);
    if (make_dirs(test) != 0)
        return -1;
    stack.redis_port = ts_free_port();
    if (stack_start_redis() != 0 || start_ccsim() != 0)
        return -1;
    return o->ccsyncd_later ? 0 : stack_start_service();
}

int stack_start_service(void)
{
    for (int i = 0; i < or_default(stack.o.n_ccsyncd, 1); i++) {
        stack.http_port[i] = ts_free_port();
        stack.admin_port[i] = stack.o.admin_listener ? ts_free_port() : 0;
        if (stack_start_ccsyncd(i) != 0)
            return -1;
    }
    return connect_association();
}

int stack_setup(void **state)
{
    (void)state;
    struct stack_options o = {0};
    return stack_start(program_invocation_short_name, &o);
}

int stack_stop(void **state)
{
    (void)state;
    for (int i = 0; i < STACK_MAX_CCSYNCD; i++) {
        if (stack.ccsyncd_pid[i] > 0)
            ts_kill(stack.ccsyncd_pid[i], SIGTERM);
        stack.ccsyncd_pid[i] = 0;
    }
    if (stack.sim_pid > 0)
        ts_kill(stack.sim_pid, SIGTERM);
    if (stack.redis_pid > 0)
        ts_kill(stack.redis_pid, SIGTERM);
    stack.sim_pid = stack.redis_pid = 0;
    return 0;
}

int stack_log_count(int i, const char *needle)
{
    char path[256], what[32];
    snprintf(what, sizeof what, "ccsyncd%d", i);
    stack_log_path(path, sizeof path, what);
    char *log = ts_read_file(path, NULL);
    int n = 0;
    for (const char *p = log ? strstr(log, needle) : NULL; p; p = strstr(p + 1, needle))
        n++;
    free(log);
    return n;
}

struct log_wait {
    int i, n;
    const char *needle;
};

static bool log_reached(void *arg)
{
    const struct log_wait *w = arg;
    return stack_log_count(w->i, w->needle) >= w->n;
}

void wait_log_count(int i, const char *needle, int n, long wait_ms)
{
    struct log_wait w = {i, n, needle};
    if (!ts_wait_for(log_reached, &w, wait_ms, 50))
        fail_msg("ccsyncd%d logged %s %d times within %ld ms, not %d", i, needle,
                 stack_log_count(i, needle), wait_ms, n);
}

void wait_reconcile_rounds(int n)
{
    int before = stack_log_count(0, LOG_RECONCILED);
    wait_log_count(0, LOG_RECONCILED, before + n, WAIT_MS);
}

struct reply api_at(int i, const char *method, const char *path, const char *body)
{
    char url[512];
    /* base[i] unless there is an admin listener (a test may point base[i] elsewhere) */
    snprintf(url, sizeof url, "%s%s", stack.admin_port[i] > 0 ? stack.admin_base[i] : stack.base[i],
             path);
    const char *headers[] = {"Authorization: Bearer " ADMIN_TOKEN, "Content-Type: application/json",
                             NULL};
    return http(method, url, headers, body);
}

struct reply api(const char *method, const char *path, const char *body)
{
    return api_at(0, method, path, body);
}

json_object *api_json(const char *method, const char *path, const char *body, long *status)
{
    struct reply r = api(method, path, body);
    *status = r.status;
    return reply_take_json(&r);
}

void put_tokens(const char *access, const char *refresh)
{
    char body[1024];
    snprintf(body, sizeof body,
             "{\"webhook_secret\":\"" SECRET "\",\"constant_contact\":{\"access_token\":\"%s\""
             "%s%s%s,\"expires_at\":\"2099-01-01T00:00:00Z\"}}",
             access, refresh ? ",\"refresh_token\":\"" : "", refresh ? refresh : "",
             refresh ? "\"" : "");
    struct reply r = api("PUT", "/v1/associations/" ASSOC, body);
    if (r.status != 200)
        fail_msg("PUT association: %ld %s", r.status, r.body ? r.body : "");
    reply_free(&r);
}

void mint_tokens(char *access, char *refresh)
{
    json_object *t = sim("POST", "/__sim/tokens", "{}");
    snprintf(access, 256, "%s", jstr(t, "access_token"));
    snprintf(refresh, 256, "%s", jstr(t, "refresh_token"));
    json_object_put(t);
}
