/* test_sentinel.c - finding the Redis primary through real Sentinels, again
 * after a failover, and reading a real Redis's persistence settings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "ccsync/durability.h"
#include "ccsync/sentinel.h"
#include "ccsync/store.h"
#include "testsupport.h"

/* Whether the Redis at *port answers INFO with needle in section. */
static bool info_says(int port, const char *command, const char *needle)
{
    redisContext *c = redisConnect("127.0.0.1", port);
    redisReply *r = c && !c->err ? redisCommand(c, command) : NULL;
    bool yes = r && r->type == REDIS_REPLY_STRING && strstr(r->str, needle);
    freeReplyObject(r);
    redisFree(c);
    return yes;
}

static bool replica_in_sync(void *arg)
{
    return info_says(*(int *)arg, "INFO replication", "master_link_status:up");
}

/* The Sentinel learned the replica from the primary's INFO (every 10 s at
 * first): only a replica it knows can be promoted. */
static bool sentinel_knows_a_replica(void *arg)
{
    return info_says(*(int *)arg, "INFO sentinel", "slaves=1");
}

/* The servers a test started and has not stopped: its teardown stops them, so
 * a failed assertion leaves none running. */
static pid_t running[8];

static pid_t started(pid_t pid)
{
    for (size_t i = 0; pid > 0 && i < sizeof running / sizeof running[0]; i++)
        if (running[i] == 0) {
            running[i] = pid;
            break;
        }
    return pid;
}

static void stop(pid_t pid, int sig)
{
    for (size_t i = 0; i < sizeof running / sizeof running[0]; i++)
        if (running[i] == pid)
            running[i] = 0;
    ts_kill(pid, sig);
}

static int stop_all(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof running / sizeof running[0]; i++)
        if (running[i] > 0)
            stop(running[i], SIGKILL);
    return 0;
}

static void test_primary_found_and_found_again_after_failover(void **state)
{
    (void)state;
    char dir[] = "/tmp/ccsync-sentinel-XXXXXX";
    assert_non_null(mkdtemp(dir));
    int p1 = ts_free_port(), p2 = ts_free_port(), ps = ts_free_port(), dead = ts_free_port();
    char p1_s[16];
    snprintf(p1_s, sizeof p1_s, "%d", p1);
    pid_t primary = started(ts_redis_start_in(p1, dir, NULL));
    char *replica_args[] = {"--replicaof", "127.0.0.1", p1_s, NULL};
    pid_t replica = started(ts_redis_start_in(p2, dir, replica_args));
    pid_t sentinel = started(ts_sentinel_start(ps, p1, dir));
    assert_true(primary > 0 && replica > 0 && sentinel > 0);
    /* On a loaded machine the replica may still be syncing, or unknown to the
     * Sentinel, when the primary dies: then no failover can follow. */
    assert_true(ts_wait_for(replica_in_sync, &p2, 20000, 50));
    assert_true(ts_wait_for(sentinel_knows_a_replica, &ps, 30000, 100));

    struct sentinel_set set;
    char list[128], err[256], host[256];
    int port = 0;
    /* the first Sentinel named is down: the next one answers */
    snprintf(list, sizeof list, "127.0.0.1:%d,127.0.0.1:%d", dead, ps);
    assert_int_equal(sentinel_parse_list(list, &set, err, sizeof err), 0);
    snprintf(set.master_name, sizeof set.master_name, "main");
    assert_int_equal(
        sentinel_find_primary(&set, "", "", 1000, host, sizeof host, &port, err, sizeof err), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, p1);

    stop(primary, SIGKILL); /* the primary dies: the Sentinel promotes the replica */
    int found = -1;
    for (int i = 0; i < 300 && found != 0; i++) {
        ts_sleep_ms(100);
        found = sentinel_find_primary(&set, "", "", 500, host, sizeof host, &port, err, sizeof err);
        /* until the failover the Sentinel still names the dead primary: never taken */
        if (found == 0)
            assert_int_equal(port, p2);
    }
    assert_int_equal(found, 0);
    assert_int_equal(port, p2);

    snprintf(set.master_name, sizeof set.master_name, "other");
    assert_int_equal(
        sentinel_find_primary(&set, "", "", 500, host, sizeof host, &port, err, sizeof err), -1);
    assert_non_null(strstr(err, "no Sentinel of 2 knows the primary \"other\""));
    stop(sentinel, SIGTERM);
    stop(replica, SIGTERM);
    char rm[300];
    snprintf(rm, sizeof rm, "rm -rf %s", dir);
    assert_int_equal(system(rm), 0);
}

static void read_settings(int port, struct redis_persistence *p)
{
    redisContext *c = redisConnect("127.0.0.1", port);
    assert_true(c && !c->err);
    assert_int_equal(durability_read(c, p), STORE_OK);
    redisFree(c);
}

static void test_persistence_settings_read_from_redis(void **state)
{
    (void)state;
    char dir[] = "/tmp/ccsync-aof-XXXXXX";
    assert_non_null(mkdtemp(dir));
    int port = ts_free_port();
    char *aof[] = {"--appendonly", "yes", "--appendfsync", "always", NULL};
    pid_t pid = started(ts_redis_start_in(port, dir, aof));
    assert_true(pid > 0);
    struct redis_persistence p;
    read_settings(port, &p);
    assert_true(p.known);
    assert_true(p.aof);
    assert_string_equal(p.fsync, "always");
    assert_string_equal(p.eviction, "noeviction");
    assert_int_equal(p.replicas, 0);
    stop(pid, SIGTERM);

    port = ts_free_port();
    char *lru[] = {"--appendonly", "no", "--maxmemory-policy", "allkeys-lru", NULL};
    pid = started(ts_redis_start_in(port, NULL, lru));
    read_settings(port, &p);
    assert_false(p.aof);
    assert_string_equal(p.eviction, "allkeys-lru");
    struct durability_report r;
    durability_judge(DURABILITY_EVERYSEC, &p, &r);
    assert_int_equal(r.n_warnings, 2);
    stop(pid, SIGTERM);

    /* CONFIG renamed away, as managed services do: INFO still tells AOF and policy */
    port = ts_free_port();
    char *renamed[] = {"--appendonly", "no", "--rename-command", "CONFIG", "", NULL};
    pid = started(ts_redis_start_in(port, NULL, renamed));
    read_settings(port, &p);
    assert_true(p.known);
    assert_false(p.aof);
    assert_string_equal(p.fsync, "");
    assert_string_equal(p.eviction, "noeviction");
    durability_judge(DURABILITY_ALWAYS, &p, &r);
    assert_true(r.fatal);
    stop(pid, SIGTERM);
    char rm[300];
    snprintf(rm, sizeof rm, "rm -rf %s", dir);
    assert_int_equal(system(rm), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_primary_found_and_found_again_after_failover, stop_all),
        cmocka_unit_test_teardown(test_persistence_settings_read_from_redis, stop_all),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
