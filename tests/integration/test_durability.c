/* test_durability.c - what ccsyncd promises about acknowledged webhooks, with
 * real processes: the start-up judgement of Redis's persistence (log, status,
 * exit 2), the start before Redis answers, and a failover under Sentinel in
 * replica mode where every webhook answered 2xx survives.
 *
 * The bursts: (a) 5,000 webhooks sent by four senders that retry every 503 as
 * Novi does; the Redis primary is SIGKILLed half-way and Sentinel promotes one
 * of its two replicas. Every webhook answered 2xx is on the new primary once
 * (0 lost), the others were answered 503 until the failover was over, ccsyncd
 * went on without a restart and the ten groups' CC lists are exact. The 503
 * window is printed. (b) The same without replica in everysec mode, Redis
 * restarted from its AOF: the acknowledged events lost are counted and
 * printed (the figure the documentation quotes), and must add up. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "ccsim_client.h"
#include "ccsync/keys.h"
#include "ccsync/webhook.h"
#include "members.h"
#include "novi.h"
#include "peek.h"
#include "stack.h"
#include "status.h"
#include "testsupport.h"

/* ---- the start-up judgement ---- */

static void test_redis_without_aof_is_a_warning_in_the_log_and_the_status(void **state)
{
    (void)state;
    long status;
    json_object *o = api_json("GET", "/v1/status", NULL, &status);
    assert_int_equal(status, 200);
    assert_string_equal(jpath_str(o, "durability.mode"), "everysec");
    assert_false(json_object_get_boolean(jpath(o, "durability.ok")));
    json_object *w = jpath(o, "durability.warnings");
    assert_int_equal(json_object_array_length(w), 1);
    assert_non_null(
        strstr(json_object_get_string(json_object_array_get_idx(w, 0)), "appendonly no"));
    json_object_put(o);
    assert_int_equal(stack_log_count(0, "\"msg\":\"redis_durability\""), 1);
}

static int setup_aof(void **state)
{
    (void)state;
    struct stack_options o = {.aof = true, .env = {"CCSYNC_DURABILITY=always"}};
    return stack_start("test-durability", &o);
}

static void test_always_starts_on_a_redis_that_fsyncs_every_write(void **state)
{
    (void)state;
    long status;
    json_object *o = api_json("GET", "/v1/status", NULL, &status);
    assert_int_equal(status, 200);
    assert_string_equal(jpath_str(o, "durability.mode"), "always");
    assert_true(json_object_get_boolean(jpath(o, "durability.ok")));
    json_object_put(o);
    assert_int_equal(stack_log_count(0, "redis_durability"), 0);
}

/* ccsyncd with the stack's Redis and env; its exit status once it stopped by
 * itself within 20 s (-1 if it did not), its stderr in err. */
static int run_alone(char *const env[], char *err, size_t err_size)
{
    char bin[512], path[256];
    ts_bin_path("CCSYNCD_BIN", "ccsyncd", bin, sizeof bin);
    stack_log_path(path, sizeof path, "alone-stderr");
    char *argv[] = {bin, NULL};
    pid_t pid = ts_spawn_io(argv, env, NULL, path);
    int ws = ts_wait_exit(pid, 20000);
    if (ws == -1)
        ts_kill(pid, SIGKILL);
    char *text = ts_read_file(path, NULL);
    snprintf(err, err_size, "%s", text ? text : "");
    free(text);
    return ws != -1 && WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
}

static void test_always_refuses_a_redis_that_fsyncs_every_second(void **state)
{
    (void)state;
    char url[64], listen[64], err[1024];
    snprintf(url, sizeof url, "CCSYNC_REDIS_URL=redis://127.0.0.1:%d/0", stack.redis_port);
    snprintf(listen, sizeof listen, "CCSYNC_LISTEN=127.0.0.1:%d", ts_free_port());
    char *env[] = {url,
                   listen,
                   "CCSYNC_ADMIN_TOKEN=" ADMIN_TOKEN,
                   "CCSYNC_DURABILITY=always",
                   "CCSYNC_ALLOW_PLAINTEXT_SECRETS=1",
                   NULL};
    assert_int_equal(run_alone(env, err, sizeof err), 2);
    /* one line, naming the variable and what Redis has */
    assert_non_null(strstr(err, "ccsyncd: CCSYNC_DURABILITY: "));
    assert_non_null(strstr(err, "appendonly no"));
    assert_int_equal(strchr(err, '\n') - err + 1, (long)strlen(err));
}

/* ---- starting before Redis answers ---- */

static int setup_later(void **state)
{
    (void)state;
    struct stack_options o = {.ccsyncd_later = true};
    return stack_start("test-durability", &o);
}

static bool readyz_200(void *arg)
{
    (void)arg;
    struct reply r = api_at(0, "GET", "/readyz", NULL);
    bool ok = r.status == 200;
    reply_free(&r);
    return ok;
}

static void test_health_answers_while_redis_is_awaited_and_the_rest_says_starting(void **state)
{
    (void)state;
    kill(stack.redis_pid, SIGKILL);
    ts_kill(stack.redis_pid, SIGKILL);
    stack.redis_pid = 0; /* reaped: its pid may be another process's by stack_stop */
    char ccsyncd[512], log[256];
    ts_bin_path("CCSYNCD_BIN", "ccsyncd", ccsyncd, sizeof ccsyncd);
    stack_log_path(log, sizeof log, "ccsyncd0");
    char url[64], listen[64];
    snprintf(url, sizeof url, "CCSYNC_REDIS_URL=redis://127.0.0.1:%d/0", stack.redis_port);
    snprintf(listen, sizeof listen, "CCSYNC_LISTEN=127.0.0.1:%d", stack.http_port[0]);
    char key_file[256];
    snprintf(key_file, sizeof key_file, "CCSYNC_SECRETS_KEY_FILE=%s", stack.key_file);
    char *env[] = {url, listen, "CCSYNC_ADMIN_TOKEN=" ADMIN_TOKEN, key_file, NULL};
    char *argv[] = {ccsyncd, NULL};
    stack.ccsyncd_pid[0] = ts_spawn_logged(argv, env, log);
    snprintf(stack.base[0], sizeof stack.base[0], "http://127.0.0.1:%d", stack.http_port[0]);
    assert_int_equal(ts_wait_port(stack.http_port[0], 10000), 0);

    struct reply r = api_at(0, "GET", "/livez", NULL);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    r = api_at(0, "GET", "/readyz", NULL);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.body, "starting"));
    reply_free(&r);
    r = api_at(0, "GET", "/v1/associations/" ASSOC, NULL);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.body, "\"code\":\"starting\""));
    reply_free(&r);
    char id[64];
    new_id(id, sizeof id);
    char *body = envelope("group.deleted", "{\"UniqueID\":\"g-1\"}", 1);
    assert_int_equal(post_webhook(id, body), 503);
    free(body);

    assert_int_equal(stack_start_redis(), 0);
    assert_true(ts_wait_for(readyz_200, NULL, 20000, 50));
}

/* ---- a failover under Sentinel, in replica mode ---- */

struct ha {
    pid_t replica, sentinel;
    int replica_port, sentinel_port;
    char dir[160];
};

static bool replica_in_sync(void *arg)
{
    redisContext *c = peek_connect(*(int *)arg);
    redisReply *r = redisCommand(c, "INFO replication");
    bool up = r && r->type == REDIS_REPLY_STRING && strstr(r->str, "master_link_status:up");
    freeReplyObject(r);
    redisFree(c);
    return up;
}

static void ha_start(struct ha *h)
{
    snprintf(h->dir, sizeof h->dir, "%s/ha", stack.log_dir);
    char mk[200];
    snprintf(mk, sizeof mk, "mkdir -p %s", h->dir);
    assert_int_equal(system(mk), 0);
    h->replica_port = ts_free_port();
    h->sentinel_port = ts_free_port();
    char primary[16];
    snprintf(primary, sizeof primary, "%d", stack.redis_port);
    char *replica_of[] = {"--replicaof", "127.0.0.1", primary, NULL};
    h->replica = ts_redis_start_in(h->replica_port, h->dir, replica_of);
    assert_true(h->replica > 0);
    assert_true(ts_wait_for(replica_in_sync, &h->replica_port, 10000, 50));
    h->sentinel = ts_sentinel_start(h->sentinel_port, stack.redis_port, h->dir);
    assert_true(h->sentinel > 0);
}

/*
 * Posts group.updated for group g-n under webhook-id w-n, as Novi retries: at
 * most tries times (0: until an answer other than 503, within WAIT_MS), every
 * pause_ms. Returns how many 503s came before another answer; *last gets the
 * last answer.
 */
static int post_webhook_n(int n, int tries, long pause_ms, long *last)
{
    char id[32], data[128];
    snprintf(id, sizeof id, "w-%d", n);
    snprintf(data, sizeof data,
             "{\"UniqueID\":\"g-%d\",\"GroupName\":\"G %d\",\"SyncToConstantContact\":false}", n,
             n);
    char *body = envelope("group.updated", data, 10 + n);
    int refused = 0;
    for (long deadline = ts_now_ms() + WAIT_MS; tries == 0 || refused < tries;
         ts_sleep_ms(pause_ms)) {
        *last = post_webhook(id, body);
        if (*last != 503)
            break;
        refused++;
        if (ts_now_ms() > deadline)
            fail_msg("webhook %s never accepted", id);
    }
    free(body);
    return refused;
}

/* Until accepted: 202, or 200 for a retry whose first try landed. */
static int post_until_accepted(int n)
{
    long last = 0;
    int refused = post_webhook_n(n, 0, 100, &last);
    assert_true(last == 202 || last == 200);
    return refused;
}

/* The Sentinel names the replica as the primary. */
static bool promoted(void *arg)
{
    const struct ha *h = arg;
    redisContext *c = peek_connect(h->sentinel_port);
    redisReply *r = redisCommand(c, "SENTINEL get-master-addr-by-name main");
    bool done = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
                atoi(r->element[1]->str) == h->replica_port;
    freeReplyObject(r);
    redisFree(c);
    return done;
}

static bool groups_listed(void *arg)
{
    long status;
    json_object *o = api_json("GET", "/v1/associations/" ASSOC "/groups", NULL, &status);
    bool all =
        status == 200 && json_object_array_length(jget(o, "groups")) == (size_t)(long)(intptr_t)arg;
    json_object_put(o);
    return all;
}

static void test_failover_in_replica_mode_loses_no_acknowledged_webhook(void **state)
{
    (void)state;
    struct ha h;
    ha_start(&h);
    char sentinels[64];
    snprintf(sentinels, sizeof sentinels, "CCSYNC_REDIS_SENTINELS=127.0.0.1:%d", h.sentinel_port);
    stack.o.env[0] = sentinels;
    stack.o.env[1] = "CCSYNC_REDIS_MASTER_NAME=main";
    stack.o.env[2] = "CCSYNC_DURABILITY=replica";
    assert_int_equal(stack_start_service(), 0);

    const int before = 20, after = 20;
    for (int n = 0; n < before; n++)
        assert_int_equal(post_until_accepted(n), 0); /* a replica confirms each batch */
    kill(stack.redis_pid, SIGKILL); /* the primary dies; the Sentinel promotes the replica */
    ts_kill(stack.redis_pid, SIGKILL);
    stack.redis_pid = 0;
    /* the promoted primary has no replica of its own: replica mode acknowledges
     * nothing no replica holds, so webhooks are answered 503 (Novi retries) for
     * as long as it has none, though ccsyncd found the new primary */
    assert_true(ts_wait_for(promoted, &h, WAIT_MS, 100));
    long last = 0;
    assert_int_equal(post_webhook_n(before, 15, 200, &last), 15); /* 15 tries over 3 s */
    assert_int_equal(last, 503);
    /* the old primary comes back (empty, as a host replaced): the Sentinel makes it
     * a replica of the new one, and webhooks are acknowledged again */
    assert_int_equal(stack_start_redis(), 0);
    for (int n = before; n < before + after; n++)
        post_until_accepted(n);

    /* every webhook answered 2xx before the failover is on the new primary */
    redisContext *c = peek_connect(h.replica_port);
    for (int n = 0; n < before; n++) {
        char id[32];
        snprintf(id, sizeof id, "w-%d", n);
        assert_int_equal(peek_integer(c, "EXISTS %s", key_dedup(ASSOC, id).s), 1);
    }
    redisFree(c);
    /* and every one, before and after, was folded: each made its group */
    assert_true(ts_wait_for(groups_listed, (void *)(intptr_t)(before + after), WAIT_MS, 100));
    ts_kill(h.sentinel, SIGTERM);
    ts_kill(h.replica, SIGTERM);
}

/* ---- bursts through a failover (a) and a restart (b) ---- */

#define BURST 5000
#define BURST_GROUPS 10
#define PER_GROUP (BURST / BURST_GROUPS)
#define SENDERS 4
#define BURST_DEADLINE_MS 180000

/* What the senders saw. Each sender writes only its own webhooks' slots; the
 * rest is atomic or under mu. */
struct burst {
    int final[BURST];   /* the last answer: 202, or 200 for a retry that had landed */
    int refused[BURST]; /* 503s before it */
    bool acked_before_kill[BURST];
    atomic_int acked;
    atomic_int others; /* answers neither 2xx nor 503 (no answer included) */
    atomic_bool killed;
    pthread_mutex_t mu;
    long first_503, last_503; /* ts_now_ms() */
};

struct sender {
    struct burst *b;
    int index;
};

/* Member k of the burst joins group bg<k / PER_GROUP>: the webhook body (malloc'd). */
static char *burst_body(int k)
{
    char id[32], email[64], fn[16], ln[16], groups[64];
    snprintf(id, sizeof id, "b%05d", k);
    gen_email("b", k, email, sizeof email);
    snprintf(fn, sizeof fn, "F%d", k);
    snprintf(ln, sizeof ln, "L%d", k);
    snprintf(groups, sizeof groups, ",\"Groups\":[{\"UniqueID\":\"bg%d\"}]", k / PER_GROUP);
    char *data = member_json(id, email, fn, ln, groups);
    char *body = envelope("customer.updated", data, 100);
    free(data);
    return body;
}

/* One signed POST of webhook burst-k, thread-safe (no cmocka calls): the status, 0 when none. */
static long burst_post(int k, const char *body)
{
    char id[32], sig[128], ts_hdr[64], id_hdr[64], sig_hdr[200], url[256];
    snprintf(id, sizeof id, "burst-%d", k);
    int64_t now = (int64_t)time(NULL);
    if (webhook_sign(SECRET, id, now, body, strlen(body), sig, sizeof sig) != 0)
        return 0;
    snprintf(ts_hdr, sizeof ts_hdr, "webhook-timestamp: %lld", (long long)now);
    snprintf(id_hdr, sizeof id_hdr, "webhook-id: %s", id);
    snprintf(sig_hdr, sizeof sig_hdr, "webhook-signature: %s", sig);
    const char *headers[] = {"Content-Type: application/json", id_hdr, ts_hdr, sig_hdr, NULL};
    snprintf(url, sizeof url, "%s/v1/associations/" ASSOC "/webhooks/novi", stack.base[0]);
    long status = 0;
    char *resp = NULL;
    ts_http_full("POST", url, headers, body, strlen(body), 10000, &status, &resp, NULL);
    free(resp);
    return status;
}

/* Sends webhooks index, index + SENDERS, ...; each until 2xx, as Novi retries. */
static void *sender_main(void *arg)
{
    struct sender *s = arg;
    struct burst *b = s->b;
    long deadline = ts_now_ms() + BURST_DEADLINE_MS;
    for (int k = s->index; k < BURST; k += SENDERS) {
        char *body = burst_body(k);
        for (;;) {
            long st = burst_post(k, body);
            if (st == 200 || st == 202) {
                b->final[k] = (int)st;
                b->acked_before_kill[k] = !atomic_load(&b->killed);
                atomic_fetch_add(&b->acked, 1);
                break;
            }
            if (st == 503) {
                b->refused[k]++;
                pthread_mutex_lock(&b->mu);
                long now = ts_now_ms();
                if (!b->first_503)
                    b->first_503 = now;
                b->last_503 = now;
                pthread_mutex_unlock(&b->mu);
            } else {
                atomic_fetch_add(&b->others, 1);
            }
            if (ts_now_ms() > deadline)
                break;
            ts_sleep_ms(50);
        }
        free(body);
    }
    return NULL;
}

static bool half_acked(void *arg)
{
    struct burst *b = arg;
    return atomic_load(&b->acked) >= BURST / 2;
}

/* Ten groups synced to CC, then the burst; kill() runs once half of it was
 * acknowledged. Returns when every sender is done. */
static void burst_run(struct burst *b, void (*kill_primary)(void))
{
    for (int j = 0; j < BURST_GROUPS; j++) {
        char g[16], name[32];
        snprintf(g, sizeof g, "bg%d", j);
        snprintf(name, sizeof name, "Burst %d", j);
        send_group(g, name, true, 2);
    }
    pthread_mutex_init(&b->mu, NULL);
    pthread_t threads[SENDERS];
    struct sender senders[SENDERS];
    for (int i = 0; i < SENDERS; i++) {
        senders[i] = (struct sender){b, i};
        assert_int_equal(pthread_create(&threads[i], NULL, sender_main, &senders[i]), 0);
    }
    assert_true(ts_wait_for(half_acked, b, WAIT_MS, 5));
    atomic_store(&b->killed, true);
    kill_primary();
    for (int i = 0; i < SENDERS; i++)
        pthread_join(threads[i], NULL);
    pthread_mutex_destroy(&b->mu);
}

/* Webhooks of the burst whose dedup key (written with the event, in one script)
 * Redis at port lacks, among those answered 2xx. */
static int acked_missing(int port, const struct burst *b)
{
    redisContext *c = peek_connect(port);
    int missing = 0;
    for (int k = 0; k < BURST; k++) {
        char id[32];
        snprintf(id, sizeof id, "burst-%d", k);
        if (b->final[k] && peek_integer(c, "EXISTS %s", key_dedup(ASSOC, id).s) != 1)
            missing++;
    }
    redisFree(c);
    return missing;
}

/* Each group's CC list holds exactly its PER_GROUP members. */
static void assert_burst_groups_exact(void)
{
    for (int j = 0; j < BURST_GROUPS; j++) {
        char g[16], name[32];
        snprintf(g, sizeof g, "bg%d", j);
        snprintf(name, sizeof name, "Burst %d", j);
        json_object *gs = wait_settled(g, WAIT_MS);
        assert_state_clean(gs, "synced");
        assert_counts(gs, PER_GROUP, 0, 0, 0, 0, 0, 0, PER_GROUP);
        json_object *st = sim("GET", "/__sim/state", NULL);
        struct strv want = {0};
        for (int k = j * PER_GROUP; k < (j + 1) * PER_GROUP; k++) {
            char email[64];
            gen_email("b", k, email, sizeof email);
            strv_add(&want, email);
        }
        assert_list_exact(st, gs_list_id(gs), &want);
        strv_free(&want);
        json_object_put(st);
        json_object_put(gs);
    }
    /* CC took each member once: the failover made nothing go twice. */
    struct accepted lists, imports;
    accepted_read("POST", "/v3/contact_lists", &lists);
    accepted_read("POST", IMPORT_PATH, &imports);
    fprintf(stderr, "test_durability: CC requests %lld, lists created %d, imports %d\n",
            cc_requests(), lists.ok, imports.ok);
    assert_int_equal(lists.ok, BURST_GROUPS);
    assert_no_pair_twice(&imports);
    strv_free(&lists.pairs);
    strv_free(&imports.pairs);
    assert_int_equal(cc_import_rows(), BURST);
}

static struct ha burst_ha;
static int burst_replica2_port;
static pid_t burst_replica2;

static void kill_primary_for_failover(void)
{
    kill(stack.redis_pid, SIGKILL);
    ts_kill(stack.redis_pid, SIGKILL);
    stack.redis_pid = 0;
}

/* The Sentinel knows both replicas (it learns them from the primary's INFO). */
static bool sentinel_sees_two_replicas(void *arg)
{
    (void)arg;
    redisContext *c = peek_connect(burst_ha.sentinel_port);
    redisReply *r = redisCommand(c, "SENTINEL REPLICAS main");
    bool two = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2;
    freeReplyObject(r);
    redisFree(c);
    return two;
}

static int sentinel_primary_port(void)
{
    redisContext *c = peek_connect(burst_ha.sentinel_port);
    redisReply *r = redisCommand(c, "SENTINEL get-master-addr-by-name main");
    int port = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 ? atoi(r->element[1]->str) : 0;
    freeReplyObject(r);
    redisFree(c);
    return port;
}

static int setup_burst(void **state)
{
    (void)state;
    struct stack_options o = {.ccsyncd_later = true, .cc_rate = 100, .workers = 2};
    return stack_start("test-durability", &o);
}

static void test_failover_mid_burst_of_5000_loses_no_acknowledged_webhook(void **state)
{
    (void)state;
    ha_start(&burst_ha);
    /* A second replica, so that the promoted one has a replica at once. */
    char dir2[200], primary[16];
    snprintf(dir2, sizeof dir2, "%s/replica2", burst_ha.dir);
    char mk[240];
    snprintf(mk, sizeof mk, "mkdir -p %s", dir2);
    assert_int_equal(system(mk), 0);
    snprintf(primary, sizeof primary, "%d", stack.redis_port);
    char *replica_of[] = {"--replicaof", "127.0.0.1", primary, NULL};
    burst_replica2_port = ts_free_port();
    burst_replica2 = ts_redis_start_in(burst_replica2_port, dir2, replica_of);
    assert_true(burst_replica2 > 0);
    assert_true(ts_wait_for(replica_in_sync, &burst_replica2_port, 10000, 50));
    assert_true(ts_wait_for(sentinel_sees_two_replicas, NULL, 30000, 200));
    char sentinels[64];
    snprintf(sentinels, sizeof sentinels, "CCSYNC_REDIS_SENTINELS=127.0.0.1:%d",
             burst_ha.sentinel_port);
    stack.o.env[0] = sentinels;
    stack.o.env[1] = "CCSYNC_REDIS_MASTER_NAME=main";
    stack.o.env[2] = "CCSYNC_DURABILITY=replica";
    assert_int_equal(stack_start_service(), 0);
    pid_t ccsyncd = stack.ccsyncd_pid[0];

    static struct burst b;
    memset(&b, 0, sizeof b);
    burst_run(&b, kill_primary_for_failover);

    int port = sentinel_primary_port();
    assert_true(port == burst_ha.replica_port || port == burst_replica2_port);
    int refused = 0, acked = 0, before = 0;
    for (int k = 0; k < BURST; k++) {
        refused += b.refused[k];
        acked += b.final[k] != 0;
        before += b.acked_before_kill[k];
    }
    fprintf(stderr,
            "test_durability (a): %d webhooks, %d acknowledged before the kill; 503 window "
            "%ld ms (%d answers 503, then 2xx on retry); %d other answers\n",
            BURST, before, b.last_503 - b.first_503, refused, atomic_load(&b.others));
    assert_int_equal(acked, BURST);               /* every one acknowledged in the end */
    assert_int_equal(atomic_load(&b.others), 0);  /* each answer was 2xx or 503 */
    assert_int_equal(acked_missing(port, &b), 0); /* 0 lost */
    /* Exactly once: the stream took each event one time (10 group events before). */
    redisContext *c = peek_connect(port);
    assert_int_equal(peek_events_added(c), BURST_GROUPS + BURST);
    assert_int_equal(peek_entries_added(c, KEY_DEAD_LETTERS), 0);
    redisFree(c);
    /* ccsyncd went on without a restart, and the groups converge exactly. */
    assert_int_equal(stack.ccsyncd_pid[0], ccsyncd);
    assert_int_equal(kill(ccsyncd, 0), 0);
    assert_int_equal(stack_log_count(0, "\"msg\":\"started\""), 1);
    assert_burst_groups_exact();
    ts_kill(burst_ha.sentinel, SIGTERM);
    ts_kill(burst_ha.replica, SIGTERM);
    ts_kill(burst_replica2, SIGTERM);
}

static int setup_everysec(void **state)
{
    (void)state;
    struct stack_options o = {.aof = true, .aof_everysec = true, .cc_rate = 100, .workers = 2};
    return stack_start("test-durability", &o);
}

/* SIGKILL, then Redis started again at once from its AOF (as a supervisor would). */
static void kill_and_restart_primary(void)
{
    kill(stack.redis_pid, SIGKILL);
    ts_kill(stack.redis_pid, SIGKILL);
    stack.redis_pid = 0;
    ts_sleep_ms(500);
    assert_int_equal(stack_start_redis(), 0);
}

static void test_redis_killed_mid_burst_in_everysec_mode_counts_lost_events(void **state)
{
    (void)state;
    pid_t ccsyncd = stack.ccsyncd_pid[0];
    static struct burst b;
    memset(&b, 0, sizeof b);
    burst_run(&b, kill_and_restart_primary);
    int acked = 0, before = 0, refused = 0;
    for (int k = 0; k < BURST; k++) {
        acked += b.final[k] != 0;
        before += b.acked_before_kill[k];
        refused += b.refused[k];
    }
    int lost = acked_missing(stack.redis_port, &b);
    fprintf(stderr,
            "test_durability (b): everysec, Redis SIGKILLed after %d of %d webhooks were "
            "acknowledged and restarted from its AOF: %d acknowledged events lost; 503 window "
            "%ld ms (%d answers 503)\n",
            before, BURST, lost, b.last_503 - b.first_503, refused);
    assert_int_equal(acked, BURST);
    assert_int_equal(atomic_load(&b.others), 0);
    /* The count adds up: a lost event was acknowledged before the kill, and the
     * stream holds every other event once. */
    assert_true(lost <= before);
    redisContext *c = peek_connect(stack.redis_port);
    assert_int_equal(peek_events_added(c), BURST_GROUPS + BURST - lost);
    redisFree(c);
    assert_int_equal(kill(ccsyncd, 0), 0);
    if (lost == 0)
        assert_burst_groups_exact();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_redis_without_aof_is_a_warning_in_the_log_and_the_status, stack_setup, stack_stop),
        cmocka_unit_test_setup_teardown(test_always_starts_on_a_redis_that_fsyncs_every_write,
                                        setup_aof, stack_stop),
        cmocka_unit_test_setup_teardown(test_always_refuses_a_redis_that_fsyncs_every_second,
                                        stack_setup, stack_stop),
        cmocka_unit_test_setup_teardown(
            test_health_answers_while_redis_is_awaited_and_the_rest_says_starting, setup_later,
            stack_stop),
        cmocka_unit_test_setup_teardown(test_failover_in_replica_mode_loses_no_acknowledged_webhook,
                                        setup_later, stack_stop),
        cmocka_unit_test_setup_teardown(
            test_failover_mid_burst_of_5000_loses_no_acknowledged_webhook, setup_burst, stack_stop),
        cmocka_unit_test_setup_teardown(
            test_redis_killed_mid_burst_in_everysec_mode_counts_lost_events, setup_everysec,
            stack_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
