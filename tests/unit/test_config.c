/* Tests of config_load (docs/: configuration): the defaults, each refused value with the
 * exact one-line message naming its variable, that no message ever echoes a
 * secret, and (last group) that ccsyncd itself stops with status 2 and that one
 * line on stderr. The environment is a table given through the lookup function,
 * so nothing here depends on the shell that runs the test. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "ccsync/config.h"
#include "testsupport.h"

#define ADMIN_TOKEN "admin-token-0123456789"
#define SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

/* ---- the fake environment ---- */

#define MAX_VARS 32
static const char *env_names[MAX_VARS];
static const char *env_values[MAX_VARS];
static int env_count;

static const char *fake_lookup(const char *name)
{
    for (int i = 0; i < env_count; i++)
        if (strcmp(env_names[i], name) == 0)
            return env_values[i];
    return NULL;
}

static void env_clear(void)
{
    env_count = 0;
}

static void env_set(const char *name, const char *value)
{
    for (int i = 0; i < env_count; i++) {
        if (strcmp(env_names[i], name) == 0) {
            env_values[i] = value;
            return;
        }
    }
    assert_true(env_count < MAX_VARS);
    env_names[env_count] = name;
    env_values[env_count] = value;
    env_count++;
}

/* The smallest valid environment: the admin token, and a word on secrets at
 * rest (here: plain text allowed, as for development; the key file has its own
 * tests below). */
static int setup_minimal(void **state)
{
    (void)state;
    env_clear();
    env_set("CCSYNC_ADMIN_TOKEN", ADMIN_TOKEN);
    env_set("CCSYNC_ALLOW_PLAINTEXT_SECRETS", "1");
    return 0;
}

static struct config cfg; /* large: not on the stack */
static char err[512];

static int load(void)
{
    memset(err, 0, sizeof err);
    return config_load(&cfg, fake_lookup, err, sizeof err);
}

/* Loads with name=value added to the minimal environment and expects -1 with exactly
 * message, on one line, echoing none of the secrets given (NULL-terminated). */
static void expect_refused_with(const char *name, const char *value, const char *message,
                                const char *const *secrets)
{
    env_set(name, value);
    int rc = load();
    if (rc != -1)
        fail_msg("%s=\"%s\" was accepted; expected: %s", name, value, message);
    assert_string_equal(err, message);
    assert_null(strchr(err, '\n'));
    for (size_t i = 0; secrets != NULL && secrets[i] != NULL; i++)
        if (strstr(err, secrets[i]) != NULL)
            fail_msg("the message for %s echoes the secret \"%s\": %s", name, secrets[i], err);
}

static void expect_refused(const char *name, const char *value, const char *message)
{
    expect_refused_with(name, value, message, NULL);
}

/* ---- defaults ---- */

static void test_defaults_of_design_section_3(void **state)
{
    (void)state;
    assert_int_equal(load(), 0);
    assert_string_equal(err, "");
    assert_string_equal(cfg.listen_host, "0.0.0.0");
    assert_int_equal(cfg.listen_port, 8080);
    assert_string_equal(cfg.redis_url, "redis://127.0.0.1:6379/0");
    assert_string_equal(cfg.redis.host, "127.0.0.1");
    assert_int_equal(cfg.redis.port, 6379);
    assert_int_equal(cfg.redis.db, 0);
    assert_string_equal(cfg.redis.password, "");
    assert_string_equal(cfg.redis.username, "");
    assert_string_equal(cfg.admin_token, ADMIN_TOKEN);
    assert_string_equal(cfg.cc_api_url, "https://api.cc.email/v3");
    assert_string_equal(cfg.cc_token_url,
                        "https://authz.constantcontact.com/oauth2/default/v1/token");
    assert_string_equal(cfg.cc_client_id, "");
    assert_string_equal(cfg.cc_client_secret, "");
    assert_true(cfg.cc_rate_per_sec == 4.0);
    assert_int_equal(cfg.cc_daily_limit, 10000);
    assert_int_equal(cfg.workers, 4);
    assert_int_equal(cfg.reconcile_seconds, 300);
    assert_int_equal(cfg.log_format, LOG_FORMAT_JSON);
    assert_int_equal(cfg.log_level, LOG_INFO);
    assert_int_equal(cfg.max_body_bytes, 16 * 1024 * 1024);
    assert_int_equal(cfg.shutdown_grace_seconds, 25);
    assert_int_equal(cfg.http_threads, (int)sysconf(_SC_NPROCESSORS_ONLN));
    assert_int_equal(cfg.sync_delay_ms, 1000);
    assert_string_equal(cfg.boot_association_id, "");
    assert_string_equal(cfg.boot_webhook_secret, "");
    assert_int_equal(cfg.request_deadline_seconds, 30);
    assert_int_equal(cfg.max_connections, 4096);
    assert_int_equal(cfg.max_connections_per_ip, 256);
    assert_int_equal(cfg.max_inflight_body_bytes, 256 * 1024 * 1024);
    assert_int_equal(cfg.max_groups_per_member, 1000);
    assert_int_equal(cfg.max_snapshot_members, 500000);
    assert_int_equal(cfg.retention_days, 30);
    assert_int_equal(cfg.ingest_rate, 100);
    assert_int_equal(cfg.ingest_burst, 6000);
}

static void test_limit_variables_are_read(void **state)
{
    (void)state;
    env_set("CCSYNC_REQUEST_DEADLINE_SECONDS", "5");
    env_set("CCSYNC_MAX_CONNECTIONS", "100");
    env_set("CCSYNC_MAX_CONNECTIONS_PER_IP", "10");
    env_set("CCSYNC_MAX_INFLIGHT_BODY_BYTES", "4096");
    env_set("CCSYNC_MAX_GROUPS_PER_MEMBER", "3");
    env_set("CCSYNC_MAX_SNAPSHOT_MEMBERS", "7");
    env_set("CCSYNC_RETENTION_DAYS", "2");
    env_set("CCSYNC_INGEST_RATE", "9");
    env_set("CCSYNC_INGEST_BURST", "11");
    assert_int_equal(load(), 0);
    assert_int_equal(cfg.request_deadline_seconds, 5);
    assert_int_equal(cfg.max_connections, 100);
    assert_int_equal(cfg.max_connections_per_ip, 10);
    assert_int_equal(cfg.max_inflight_body_bytes, 4096);
    assert_int_equal(cfg.max_groups_per_member, 3);
    assert_int_equal(cfg.max_snapshot_members, 7);
    assert_int_equal(cfg.retention_days, 2);
    assert_int_equal(cfg.ingest_rate, 9);
    assert_int_equal(cfg.ingest_burst, 11);
    env_set("CCSYNC_MAX_CONNECTIONS_PER_IP", "0");
    assert_int_equal(load(), -1);
    assert_string_equal(
        err, "CCSYNC_MAX_CONNECTIONS_PER_IP: \"0\" is not a whole number from 1 to 65536");
}

/* The most body bytes one Redis command carries (staged.h): 1 MiB unless set,
 * at least 1 KiB, at most 16 MiB. */
static void test_enqueue_chunk_bytes_is_read_and_bounded(void **state)
{
    (void)state;
    assert_int_equal(load(), 0);
    assert_int_equal(cfg.enqueue_chunk_bytes, 1048576);
    env_set("CCSYNC_ENQUEUE_CHUNK_BYTES", "4096");
    assert_int_equal(load(), 0);
    assert_int_equal(cfg.enqueue_chunk_bytes, 4096);
    env_set("CCSYNC_ENQUEUE_CHUNK_BYTES", "1023");
    assert_int_equal(load(), -1);
    assert_string_equal(
        err, "CCSYNC_ENQUEUE_CHUNK_BYTES: \"1023\" is not a whole number from 1024 to 16777216");
}

static void test_empty_value_counts_as_unset(void **state)
{
    (void)state;
    env_set("CCSYNC_LISTEN", "");
    env_set("CCSYNC_WORKERS", "");
    env_set("CCSYNC_LOG_LEVEL", "");
    assert_int_equal(load(), 0);
    assert_string_equal(cfg.listen_host, "0.0.0.0");
    assert_int_equal(cfg.listen_port, 8080);
    assert_int_equal(cfg.workers, 4);
    assert_int_equal(cfg.log_level, LOG_INFO);
}

static void test_every_variable_is_read(void **state)
{
    (void)state;
    env_set("CCSYNC_LISTEN", "127.0.0.1:9090");
    env_set("CCSYNC_REDIS_URL", "redis://redis.internal:6380/2");
    env_set("CCSYNC_CC_API_URL", "http://127.0.0.1:7000/v3/");
    env_set("CCSYNC_CC_TOKEN_URL", "http://127.0.0.1:7000/token");
    env_set("CCSYNC_CC_CLIENT_ID", "client-1");
    env_set("CCSYNC_CC_CLIENT_SECRET", "client-secret-1");
    env_set("CCSYNC_CC_RATE_PER_SEC", "0.5");
    env_set("CCSYNC_CC_DAILY_LIMIT", "250");
    env_set("CCSYNC_WORKERS", "256");
    env_set("CCSYNC_RECONCILE_SECONDS", "60");
    env_set("CCSYNC_LOG_FORMAT", "text");
    env_set("CCSYNC_LOG_LEVEL", "debug");
    env_set("CCSYNC_MAX_BODY_BYTES", "1024");
    env_set("CCSYNC_SHUTDOWN_GRACE_SECONDS", "3");
    env_set("CCSYNC_HTTP_THREADS", "2");
    env_set("CCSYNC_SYNC_DELAY_MS", "0");
    assert_int_equal(load(), 0);
    assert_string_equal(cfg.listen_host, "127.0.0.1");
    assert_int_equal(cfg.listen_port, 9090);
    assert_string_equal(cfg.redis.host, "redis.internal");
    assert_int_equal(cfg.redis.port, 6380);
    assert_int_equal(cfg.redis.db, 2);
    assert_string_equal(cfg.cc_api_url, "http://127.0.0.1:7000/v3"); /* trailing '/' dropped */
    assert_string_equal(cfg.cc_token_url, "http://127.0.0.1:7000/token");
    assert_string_equal(cfg.cc_client_id, "client-1");
    assert_string_equal(cfg.cc_client_secret, "client-secret-1");
    assert_true(cfg.cc_rate_per_sec == 0.5);
    assert_int_equal(cfg.cc_daily_limit, 250);
    assert_int_equal(cfg.workers, 256);
    assert_int_equal(cfg.reconcile_seconds, 60);
    assert_int_equal(cfg.log_format, LOG_FORMAT_TEXT);
    assert_int_equal(cfg.log_level, LOG_DEBUG);
    assert_int_equal(cfg.max_body_bytes, 1024);
    assert_int_equal(cfg.shutdown_grace_seconds, 3);
    assert_int_equal(cfg.http_threads, 2);
    assert_int_equal(cfg.sync_delay_ms, 0);
}

static void test_log_levels_and_formats(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        enum log_level level;
    } levels[] = {
        {"debug", LOG_DEBUG}, {"info", LOG_INFO}, {"warn", LOG_WARN}, {"error", LOG_ERROR}};
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++) {
        env_set("CCSYNC_LOG_LEVEL", levels[i].name);
        assert_int_equal(load(), 0);
        assert_int_equal(cfg.log_level, levels[i].level);
    }
    env_set("CCSYNC_LOG_FORMAT", "json");
    assert_int_equal(load(), 0);
    assert_int_equal(cfg.log_format, LOG_FORMAT_JSON);
}

/* ---- CCSYNC_LISTEN ---- */

static void test_listen_without_port_is_refused(void **state)
{
    (void)state;
    expect_refused("CCSYNC_LISTEN", "127.0.0.1",
                   "CCSYNC_LISTEN: \"127.0.0.1\" is not address:port (for example 0.0.0.0:8080)");
    expect_refused("CCSYNC_LISTEN", "127.0.0.1:",
                   "CCSYNC_LISTEN: \"127.0.0.1:\" is not address:port (for example 0.0.0.0:8080)");
    expect_refused("CCSYNC_LISTEN", ":8080",
                   "CCSYNC_LISTEN: \":8080\" is not address:port (for example 0.0.0.0:8080)");
}

static void test_listen_with_bad_port_is_refused(void **state)
{
    (void)state;
    expect_refused("CCSYNC_LISTEN", "0.0.0.0:0",
                   "CCSYNC_LISTEN: \"0.0.0.0:0\" is not address:port (for example 0.0.0.0:8080)");
    expect_refused(
        "CCSYNC_LISTEN", "0.0.0.0:65536",
        "CCSYNC_LISTEN: \"0.0.0.0:65536\" is not address:port (for example 0.0.0.0:8080)");
    expect_refused("CCSYNC_LISTEN", "0.0.0.0:80x",
                   "CCSYNC_LISTEN: \"0.0.0.0:80x\" is not address:port (for example 0.0.0.0:8080)");
    expect_refused("CCSYNC_LISTEN", "0.0.0.0:-1",
                   "CCSYNC_LISTEN: \"0.0.0.0:-1\" is not address:port (for example 0.0.0.0:8080)");
    env_set("CCSYNC_LISTEN", "0.0.0.0:65535");
    assert_int_equal(load(), 0);
    assert_int_equal(cfg.listen_port, 65535);
}

/* ---- CCSYNC_REDIS_URL ---- */

static void test_redis_url_forms_are_parsed(void **state)
{
    (void)state;
    static const struct {
        const char *url, *host, *username, *password;
        int port, db;
    } cases[] = {
        {"redis://cache", "cache", "", "", 6379, 0},
        {"redis://cache/", "cache", "", "", 6379, 0},
        {"redis://cache:6390", "cache", "", "", 6390, 0},
        {"redis://cache:6390/15", "cache", "", "", 6390, 15},
        {"redis://:pw@cache:6380/3", "cache", "", "pw", 6380, 3},
        {"redis://alice:pw@cache/1", "cache", "alice", "pw", 6379, 1},
        {"redis://:p@ss:w/rd@cache", "cache", "", "p@ss:w/rd", 6379, 0},
        {"redis://:@cache", "cache", "", "", 6379, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        env_set("CCSYNC_REDIS_URL", cases[i].url);
        if (load() != 0)
            fail_msg("%s refused: %s", cases[i].url, err);
        assert_string_equal(cfg.redis_url, cases[i].url);
        assert_string_equal(cfg.redis.host, cases[i].host);
        assert_string_equal(cfg.redis.username, cases[i].username);
        assert_string_equal(cfg.redis.password, cases[i].password);
        assert_int_equal(cfg.redis.port, cases[i].port);
        assert_int_equal(cfg.redis.db, cases[i].db);
    }
}

static void key_file(char path[64], const char *text);

static void test_redis_url_is_percent_decoded_and_takes_ipv6_hosts(void **state)
{
    (void)state;
    static const struct {
        const char *url, *host, *username, *password;
        int port, db;
    } cases[] = {
        {"redis://u%40x:p%3Aw%2F%40d@cache:6380/1", "cache", "u@x", "p:w/@d", 6380, 1},
        {"redis://:pa%25ss@[::1]:6379/0", "::1", "", "pa%ss", 6379, 0},
        {"redis://[::1]", "::1", "", "", 6379, 0},
        {"redis://[2001:db8::5]:7000/3", "2001:db8::5", "", "", 7000, 3},
        {"redis://ccsync:%F0%9F%94%91k@[fe80::1]/", "fe80::1", "ccsync", "\xF0\x9F\x94\x91k", 6379,
         0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct redis_target t;
        char why[128];
        if (config_parse_redis_url(cases[i].url, &t, why, sizeof why) != 0)
            fail_msg("%s refused: %s", cases[i].url, why);
        assert_string_equal(t.host, cases[i].host);
        assert_string_equal(t.username, cases[i].username);
        assert_string_equal(t.password, cases[i].password);
        assert_int_equal(t.port, cases[i].port);
        assert_int_equal(t.db, cases[i].db);
    }
    const char *const secrets[] = {"s3cr", NULL};
    expect_refused_with("CCSYNC_REDIS_URL", "redis://:s3cr%zz@cache",
                        "CCSYNC_REDIS_URL: credentials are too long or hold a bad % escape (write "
                        "%XX)",
                        secrets);
    expect_refused_with("CCSYNC_REDIS_URL", "redis://:s3cr%00t@cache",
                        "CCSYNC_REDIS_URL: credentials are too long or hold a bad % escape (write "
                        "%XX)",
                        secrets);
    expect_refused("CCSYNC_REDIS_URL", "redis://s3cr%4@cache",
                   "CCSYNC_REDIS_URL: credentials are too long or hold a bad % escape (write %XX)");
    expect_refused("CCSYNC_REDIS_URL", "redis://[::1",
                   "CCSYNC_REDIS_URL: has an IPv6 host without its closing ]");
    expect_refused("CCSYNC_REDIS_URL", "redis://[cache]:6379",
                   "CCSYNC_REDIS_URL: has a bad IPv6 host");
    expect_refused("CCSYNC_REDIS_URL", "redis://[]:6379", "CCSYNC_REDIS_URL: has a bad IPv6 host");
    expect_refused("CCSYNC_REDIS_URL", "redis://[::1]x",
                   "CCSYNC_REDIS_URL: is not "
                   "redis://[:password@]host[:port][/db]");
}

static void test_redis_password_may_come_from_a_file(void **state)
{
    (void)state;
    char path[64];
    key_file(path, "pw-from-file\n");
    env_set("CCSYNC_REDIS_URL", "redis://ccsync@redis:6379/0");
    env_set("CCSYNC_REDIS_PASSWORD_FILE", path);
    assert_int_equal(load(), 0);
    assert_string_equal(cfg.redis.username, "ccsync");
    assert_string_equal(cfg.redis.password, "pw-from-file");
    expect_refused("CCSYNC_REDIS_URL", "redis://ccsync:other@redis:6379/0",
                   "CCSYNC_REDIS_PASSWORD_FILE: is set but CCSYNC_REDIS_URL holds a password too; "
                   "keep one");
    unlink(path);
    env_set("CCSYNC_REDIS_URL", "redis://ccsync@redis:6379/0");
    char message[160];
    snprintf(message, sizeof message, "CCSYNC_REDIS_PASSWORD_FILE: cannot read %s", path);
    expect_refused("CCSYNC_REDIS_PASSWORD_FILE", path, message);
}

static void test_bad_redis_urls_are_refused_naming_the_variable(void **state)
{
    (void)state;
    expect_refused("CCSYNC_REDIS_URL", "http://cache:6379",
                   "CCSYNC_REDIS_URL: must start with redis://");
    expect_refused("CCSYNC_REDIS_URL", "rediss://cache:6379",
                   "CCSYNC_REDIS_URL: must start with redis://");
    expect_refused("CCSYNC_REDIS_URL", "cache:6379", "CCSYNC_REDIS_URL: must start with redis://");
    expect_refused("CCSYNC_REDIS_URL", "redis://", "CCSYNC_REDIS_URL: has no host");
    expect_refused("CCSYNC_REDIS_URL", "redis://:6379/0", "CCSYNC_REDIS_URL: has no host");
    expect_refused("CCSYNC_REDIS_URL", "redis://cache:", "CCSYNC_REDIS_URL: has a bad port");
    expect_refused("CCSYNC_REDIS_URL", "redis://cache:0", "CCSYNC_REDIS_URL: has a bad port");
    expect_refused("CCSYNC_REDIS_URL", "redis://cache:65536", "CCSYNC_REDIS_URL: has a bad port");
    expect_refused("CCSYNC_REDIS_URL", "redis://cache:63x9/0", "CCSYNC_REDIS_URL: has a bad port");
    expect_refused("CCSYNC_REDIS_URL", "redis://cache:123456789/0",
                   "CCSYNC_REDIS_URL: has a bad port");
    expect_refused("CCSYNC_REDIS_URL", "redis://cache/16",
                   "CCSYNC_REDIS_URL: has a bad database number (0-15)");
    expect_refused("CCSYNC_REDIS_URL", "redis://cache/-1",
                   "CCSYNC_REDIS_URL: has a bad database number (0-15)");
    expect_refused("CCSYNC_REDIS_URL", "redis://cache/db0",
                   "CCSYNC_REDIS_URL: has a bad database number (0-15)");
    expect_refused("CCSYNC_REDIS_URL", "redis://user@cache",
                   "CCSYNC_REDIS_URL: credentials must be written user:password@ or :password@");
}

static void test_redis_url_errors_never_echo_the_password(void **state)
{
    (void)state;
    const char *const secrets[] = {"Sup3rS3cret", NULL};
    expect_refused_with("CCSYNC_REDIS_URL", "redis://:Sup3rS3cret@cache:notaport/0",
                        "CCSYNC_REDIS_URL: has a bad port", secrets);
    expect_refused_with("CCSYNC_REDIS_URL", "redis://:Sup3rS3cret@cache:6379/99",
                        "CCSYNC_REDIS_URL: has a bad database number (0-15)", secrets);
    expect_refused_with("CCSYNC_REDIS_URL", "redis://admin:Sup3rS3cret@",
                        "CCSYNC_REDIS_URL: has no host", secrets);
    expect_refused_with("CCSYNC_REDIS_URL", "https://:Sup3rS3cret@cache",
                        "CCSYNC_REDIS_URL: must start with redis://", secrets);
}

/* ---- CCSYNC_ADMIN_TOKEN ---- */

static void test_missing_admin_token_is_refused(void **state)
{
    (void)state;
    env_clear();
    assert_int_equal(load(), -1);
    assert_string_equal(err, "CCSYNC_ADMIN_TOKEN: is required (the admin API's bearer token)");
    expect_refused("CCSYNC_ADMIN_TOKEN", "",
                   "CCSYNC_ADMIN_TOKEN: is required (the admin API's bearer token)");
}

static void test_short_admin_token_is_refused_without_echo(void **state)
{
    (void)state;
    const char *const secrets[] = {"short-token-15c", NULL};
    assert_int_equal(strlen("short-token-15c"), 15);
    expect_refused_with("CCSYNC_ADMIN_TOKEN", "short-token-15c",
                        "CCSYNC_ADMIN_TOKEN: must be at least 16 characters", secrets);
    env_set("CCSYNC_ADMIN_TOKEN", "token-of-16chars");
    assert_int_equal(load(), 0);
    assert_string_equal(cfg.admin_token, "token-of-16chars");
}

/* ---- numbers ---- */

static void test_rate_per_second_must_be_positive_number(void **state)
{
    (void)state;
    expect_refused("CCSYNC_CC_RATE_PER_SEC", "0",
                   "CCSYNC_CC_RATE_PER_SEC: \"0\" is not a number above 0 and at most 1000");
    expect_refused("CCSYNC_CC_RATE_PER_SEC", "abc",
                   "CCSYNC_CC_RATE_PER_SEC: \"abc\" is not a number above 0 and at most 1000");
    expect_refused("CCSYNC_CC_RATE_PER_SEC", "-2",
                   "CCSYNC_CC_RATE_PER_SEC: \"-2\" is not a number above 0 and at most 1000");
    expect_refused("CCSYNC_CC_RATE_PER_SEC", "4/s",
                   "CCSYNC_CC_RATE_PER_SEC: \"4/s\" is not a number above 0 and at most 1000");
    expect_refused("CCSYNC_CC_RATE_PER_SEC", "nan",
                   "CCSYNC_CC_RATE_PER_SEC: \"nan\" is not a number above 0 and at most 1000");
    expect_refused("CCSYNC_CC_RATE_PER_SEC", "1001",
                   "CCSYNC_CC_RATE_PER_SEC: \"1001\" is not a number above 0 and at most 1000");
}

static void test_workers_must_be_from_0_to_256(void **state)
{
    (void)state;
    expect_refused("CCSYNC_WORKERS", "-1",
                   "CCSYNC_WORKERS: \"-1\" is not a whole number from 0 to 256");
    expect_refused("CCSYNC_WORKERS", "257",
                   "CCSYNC_WORKERS: \"257\" is not a whole number from 0 to 256");
    expect_refused("CCSYNC_WORKERS", "two",
                   "CCSYNC_WORKERS: \"two\" is not a whole number from 0 to 256");
    expect_refused("CCSYNC_WORKERS", "4 ",
                   "CCSYNC_WORKERS: \"4 \" is not a whole number from 0 to 256");
}

/* 0 makes an ingest-only process: webhooks and the API, no worker threads. */
static void test_workers_zero_is_an_ingest_only_process(void **state)
{
    (void)state;
    env_set("CCSYNC_WORKERS", "0");
    assert_int_equal(load(), 0);
    assert_int_equal(cfg.workers, 0);
}

static void test_other_numbers_are_range_checked(void **state)
{
    (void)state;
    expect_refused("CCSYNC_CC_DAILY_LIMIT", "0",
                   "CCSYNC_CC_DAILY_LIMIT: \"0\" is not a whole number from 1 to 100000000");
    setup_minimal(NULL);
    expect_refused("CCSYNC_RECONCILE_SECONDS", "0",
                   "CCSYNC_RECONCILE_SECONDS: \"0\" is not a whole number from 1 to 604800");
    setup_minimal(NULL);
    expect_refused("CCSYNC_MAX_BODY_BYTES", "1023",
                   "CCSYNC_MAX_BODY_BYTES: \"1023\" is not a whole number from 1024 to 1073741824");
    setup_minimal(NULL);
    expect_refused("CCSYNC_SHUTDOWN_GRACE_SECONDS", "0",
                   "CCSYNC_SHUTDOWN_GRACE_SECONDS: \"0\" is not a whole number from 1 to 3600");
    setup_minimal(NULL);
    expect_refused("CCSYNC_HTTP_THREADS", "0",
                   "CCSYNC_HTTP_THREADS: \"0\" is not a whole number from 1 to 256");
    setup_minimal(NULL);
    expect_refused("CCSYNC_SYNC_DELAY_MS", "-1",
                   "CCSYNC_SYNC_DELAY_MS: \"-1\" is not a whole number from 0 to 3600000");
}

static void test_budget_plan_defaults_and_ranges(void **state)
{
    (void)state;
    assert_int_equal(load(), 0);
    assert_true(cfg.reconcile_budget_share == 0.2);
    assert_int_equal(cfg.sync_delay_max_seconds, 3600);
    env_set("CCSYNC_RECONCILE_BUDGET_SHARE", "0.05");
    env_set("CCSYNC_SYNC_DELAY_MAX_SECONDS", "60");
    assert_int_equal(load(), 0);
    assert_true(cfg.reconcile_budget_share == 0.05);
    assert_int_equal(cfg.sync_delay_max_seconds, 60);
    setup_minimal(NULL);
    expect_refused("CCSYNC_RECONCILE_BUDGET_SHARE", "0",
                   "CCSYNC_RECONCILE_BUDGET_SHARE: \"0\" is not a number above 0 and at most 1");
    setup_minimal(NULL);
    expect_refused("CCSYNC_RECONCILE_BUDGET_SHARE", "1.5",
                   "CCSYNC_RECONCILE_BUDGET_SHARE: \"1.5\" is not a number above 0 and at most 1");
    setup_minimal(NULL);
    expect_refused("CCSYNC_SYNC_DELAY_MAX_SECONDS", "0",
                   "CCSYNC_SYNC_DELAY_MAX_SECONDS: \"0\" is not a whole number from 1 to 86400");
}

/* ---- URLs and log settings ---- */

static void test_cc_urls_must_be_http(void **state)
{
    (void)state;
    expect_refused(
        "CCSYNC_CC_API_URL", "ftp://api.cc.email/v3",
        "CCSYNC_CC_API_URL: \"ftp://api.cc.email/v3\" is not an http:// or https:// URL");
    setup_minimal(NULL);
    expect_refused("CCSYNC_CC_TOKEN_URL", "authz.constantcontact.com",
                   "CCSYNC_CC_TOKEN_URL: \"authz.constantcontact.com\" is not an http:// or "
                   "https:// URL");
}

static void test_unknown_log_format_is_refused(void **state)
{
    (void)state;
    expect_refused("CCSYNC_LOG_FORMAT", "xml", "CCSYNC_LOG_FORMAT: \"xml\" is not json or text");
    expect_refused("CCSYNC_LOG_FORMAT", "JSON", "CCSYNC_LOG_FORMAT: \"JSON\" is not json or text");
}

static void test_unknown_log_level_is_refused(void **state)
{
    (void)state;
    expect_refused("CCSYNC_LOG_LEVEL", "loud",
                   "CCSYNC_LOG_LEVEL: \"loud\" is not debug, info, warn or error");
    expect_refused("CCSYNC_LOG_LEVEL", "warning",
                   "CCSYNC_LOG_LEVEL: \"warning\" is not debug, info, warn or error");
}

/* ---- bootstrap association ---- */

static void test_bootstrap_vars_without_association_id_are_refused(void **state)
{
    (void)state;
    const char *const secrets[] = {SECRET, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "access-tok-1",
                                   "refresh-tok-1", NULL};
    expect_refused_with("CCSYNC_WEBHOOK_SECRET", SECRET,
                        "CCSYNC_WEBHOOK_SECRET: is set but CCSYNC_ASSOCIATION_ID is not", secrets);
    setup_minimal(NULL);
    expect_refused_with("CCSYNC_CC_ACCESS_TOKEN", "access-tok-1",
                        "CCSYNC_CC_ACCESS_TOKEN: is set but CCSYNC_ASSOCIATION_ID is not", secrets);
    setup_minimal(NULL);
    expect_refused_with("CCSYNC_CC_REFRESH_TOKEN", "refresh-tok-1",
                        "CCSYNC_CC_REFRESH_TOKEN: is set but CCSYNC_ASSOCIATION_ID is not",
                        secrets);
}

static void test_bootstrap_secret_must_be_whsec_base64(void **state)
{
    (void)state;
    const char *const secrets[] = {"not-a-secret-value", "whsec_!!notbase64!!", NULL};
    env_set("CCSYNC_ASSOCIATION_ID", "acme");
    expect_refused_with("CCSYNC_WEBHOOK_SECRET", "not-a-secret-value",
                        "CCSYNC_WEBHOOK_SECRET: required with CCSYNC_ASSOCIATION_ID, as "
                        "whsec_<base64>",
                        secrets);
    expect_refused_with("CCSYNC_WEBHOOK_SECRET", "whsec_!!notbase64!!",
                        "CCSYNC_WEBHOOK_SECRET: required with CCSYNC_ASSOCIATION_ID, as "
                        "whsec_<base64>",
                        secrets);
    expect_refused("CCSYNC_WEBHOOK_SECRET", "",
                   "CCSYNC_WEBHOOK_SECRET: required with CCSYNC_ASSOCIATION_ID, as whsec_<base64>");
}

static void test_bootstrap_secret_is_24_to_64_bytes(void **state)
{
    (void)state;
    env_set("CCSYNC_ASSOCIATION_ID", "acme-1");
    env_set("CCSYNC_WEBHOOK_SECRET", "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYX");
    assert_int_equal(load(), 0);
    env_set(
        "CCSYNC_WEBHOOK_SECRET",
        "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+"
        "Pw==");
    assert_int_equal(load(), 0);
    expect_refused("CCSYNC_WEBHOOK_SECRET", "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRY=",
                   "CCSYNC_WEBHOOK_SECRET: must decode to 24-64 bytes (Standard Webhooks); this "
                   "one decodes to 23");
    expect_refused(
        "CCSYNC_WEBHOOK_SECRET",
        "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+"
        "P0A=",
        "CCSYNC_WEBHOOK_SECRET: must decode to 24-64 bytes (Standard Webhooks); this "
        "one decodes to 65");
}

static void test_bootstrap_association_id_and_expiry_are_checked(void **state)
{
    (void)state;
    env_set("CCSYNC_WEBHOOK_SECRET", SECRET);
    expect_refused(
        "CCSYNC_ASSOCIATION_ID", "acme corp",
        "CCSYNC_ASSOCIATION_ID: \"acme corp\" is not 1-64 characters of A-Z a-z 0-9 _ -");
    env_set("CCSYNC_ASSOCIATION_ID", "acme");
    expect_refused("CCSYNC_CC_EXPIRES_AT", "tomorrow",
                   "CCSYNC_CC_EXPIRES_AT: \"tomorrow\" is not an RFC 3339 date-time");
}

static void test_bootstrap_is_read_whole(void **state)
{
    (void)state;
    env_set("CCSYNC_ASSOCIATION_ID", "acme-1");
    env_set("CCSYNC_WEBHOOK_SECRET", SECRET);
    env_set("CCSYNC_CC_ACCESS_TOKEN", "access-tok-1");
    env_set("CCSYNC_CC_REFRESH_TOKEN", "refresh-tok-1");
    env_set("CCSYNC_CC_EXPIRES_AT", "2026-11-27T10:00:03Z");
    assert_int_equal(load(), 0);
    assert_string_equal(cfg.boot_association_id, "acme-1");
    assert_string_equal(cfg.boot_webhook_secret, SECRET);
    assert_string_equal(cfg.boot_cc_access_token, "access-tok-1");
    assert_string_equal(cfg.boot_cc_refresh_token, "refresh-tok-1");
    assert_string_equal(cfg.boot_cc_expires_at, "2026-11-27T10:00:03Z");
}

/* ---- ccsyncd itself ---- */

struct run {
    int status;
    char *out;
    char *err;
};

/* Runs ccsyncd with env (on top of ours, every CCSYNC_* of this test set) and waits. */
static struct run run_ccsyncd(char *const env[])
{
    char out_path[] = "/tmp/ccsync-test-config-out-XXXXXX";
    char err_path[] = "/tmp/ccsync-test-config-err-XXXXXX";
    int fo = mkstemp(out_path), fe = mkstemp(err_path);
    assert_true(fo >= 0 && fe >= 0);
    close(fo);
    close(fe);
    char bin[512];
    char *argv[] = {(char *)ts_bin_path("CCSYNCD_BIN", "ccsyncd", bin, sizeof bin), NULL};
    if (access(argv[0], X_OK) != 0)
        fail_msg("cannot run %s: build it, or set CCSYNCD_BIN", argv[0]);
    pid_t pid = ts_spawn_io(argv, env, out_path, err_path);
    assert_true(pid > 0);
    struct run r;
    r.status = ts_wait_exit(pid, 10000);
    if (r.status == -1) {
        ts_kill(pid, SIGKILL);
        fail_msg("ccsyncd did not exit within 10 s");
    }
    r.out = ts_read_file(out_path, NULL);
    r.err = ts_read_file(err_path, NULL);
    unlink(out_path);
    unlink(err_path);
    assert_non_null(r.out);
    assert_non_null(r.err);
    return r;
}

static void run_free(struct run *r)
{
    free(r->out);
    free(r->err);
}

/* Exit status 2, exactly line on stderr; a configuration error stops the process
 * before it logs anything, so stdout stays empty then (quiet_stdout). */
static void expect_exit_2(char *const env[], const char *line, bool quiet_stdout,
                          const char *secret)
{
    struct run r = run_ccsyncd(env);
    assert_true(WIFEXITED(r.status));
    assert_int_equal(WEXITSTATUS(r.status), 2);
    assert_string_equal(r.err, line);
    if (quiet_stdout)
        assert_string_equal(r.out, "");
    if (secret)
        assert_null(strstr(r.err, secret));
    run_free(&r);
}

static void test_ccsyncd_exits_2_with_one_line_naming_bad_variable(void **state)
{
    (void)state;
    char *const env[] = {"CCSYNC_ADMIN_TOKEN=" ADMIN_TOKEN, "CCSYNC_WORKERS=-1", NULL};
    expect_exit_2(env,
                  "ccsyncd: configuration error: CCSYNC_WORKERS: \"-1\" is not a whole number from "
                  "0 to 256\n",
                  true, NULL);
}

static void test_ccsyncd_exits_2_without_admin_token(void **state)
{
    (void)state;
    char *const env[] = {"CCSYNC_ADMIN_TOKEN=", NULL};
    expect_exit_2(env,
                  "ccsyncd: configuration error: CCSYNC_ADMIN_TOKEN: is required (the admin "
                  "API's bearer token)\n",
                  true, NULL);
}

static void test_ccsyncd_exit_line_hides_redis_password(void **state)
{
    (void)state;
    char *const env[] = {"CCSYNC_ADMIN_TOKEN=" ADMIN_TOKEN,
                         "CCSYNC_REDIS_URL=redis://:Sup3rS3cret@127.0.0.1:70000/0", NULL};
    expect_exit_2(env, "ccsyncd: configuration error: CCSYNC_REDIS_URL: has a bad port\n", true,
                  "Sup3rS3cret");
}

static void test_ccsyncd_exits_2_when_listen_address_is_not_ipv4(void **state)
{
    (void)state;
    char *const env[] = {"CCSYNC_ADMIN_TOKEN=" ADMIN_TOKEN,        "CCSYNC_LISTEN=localhost:1",
                         "CCSYNC_REDIS_URL=redis://127.0.0.1:1/0", "CCSYNC_WORKERS=1",
                         "CCSYNC_ALLOW_PLAINTEXT_SECRETS=1",       NULL};
    expect_exit_2(env, "ccsyncd: CCSYNC_LISTEN: \"localhost\" is not an IPv4 address\n", false,
                  NULL);
}

static void test_ccsyncd_exits_2_when_port_is_taken(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
    assert_int_equal(listen(fd, 1), 0);
    socklen_t len = sizeof addr;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
    int port = ntohs(addr.sin_port);
    char listen_var[64], line[160];
    snprintf(listen_var, sizeof listen_var, "CCSYNC_LISTEN=127.0.0.1:%d", port);
    snprintf(line, sizeof line,
             "ccsyncd: CCSYNC_LISTEN: cannot listen on 127.0.0.1:%d (Address already in use)\n",
             port);
    char *const env[] = {"CCSYNC_ADMIN_TOKEN=" ADMIN_TOKEN,        listen_var,
                         "CCSYNC_REDIS_URL=redis://127.0.0.1:1/0", "CCSYNC_WORKERS=1",
                         "CCSYNC_ALLOW_PLAINTEXT_SECRETS=1",       NULL};
    expect_exit_2(env, line, false, NULL);
    close(fd);
}

/* ---- secrets at rest: CCSYNC_SECRETS_KEY_FILE ---- */

#define KEY_A "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="

/* Writes text to a fresh file; its path goes into path. */
static void key_file(char path[64], const char *text)
{
    snprintf(path, 64, "/tmp/ccsync-test-config-key-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static void test_without_key_file_plaintext_must_be_allowed(void **state)
{
    (void)state;
    env_set("CCSYNC_ALLOW_PLAINTEXT_SECRETS", "");
    assert_int_equal(load(), -1);
    assert_string_equal(err, "CCSYNC_SECRETS_KEY_FILE: is required (a file of \"KEY_ID BASE64\" "
                             "lines; make one with scripts/make-secrets-key.sh), or set "
                             "CCSYNC_ALLOW_PLAINTEXT_SECRETS=1 for development");
    expect_refused("CCSYNC_ALLOW_PLAINTEXT_SECRETS", "yes",
                   "CCSYNC_ALLOW_PLAINTEXT_SECRETS: \"yes\" is not 0 or 1");
    env_set("CCSYNC_ALLOW_PLAINTEXT_SECRETS", "1");
    assert_int_equal(load(), 0);
    assert_int_equal(cfg.secrets.n, 0);
    assert_int_equal(cfg.allow_plaintext_secrets, 1);
}

static void test_key_file_is_read_into_the_ring(void **state)
{
    (void)state;
    char path[64];
    key_file(path,
             "# newest first\nk2 " KEY_A "\nk1 a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s=\n");
    env_set("CCSYNC_ALLOW_PLAINTEXT_SECRETS", "");
    env_set("CCSYNC_SECRETS_KEY_FILE", path);
    assert_int_equal(load(), 0);
    assert_int_equal(cfg.secrets.n, 2);
    assert_string_equal(cfg.secrets.keys[0].id, "k2");
    assert_string_equal(cfg.secrets.keys[1].id, "k1");
    assert_string_equal(cfg.secrets_key_file, path);
    unlink(path);
}

static void test_bad_key_file_is_refused_without_echoing_keys(void **state)
{
    (void)state;
    char path[64];
    const char *const secrets[] = {"c2hvcnQ=", NULL};
    key_file(path, "k1 c2hvcnQ=\n");
    expect_refused_with("CCSYNC_SECRETS_KEY_FILE", path,
                        "CCSYNC_SECRETS_KEY_FILE: line 1: the key must be 32 bytes in base64 "
                        "(openssl rand -base64 32)",
                        secrets);
    unlink(path);
    char missing[128];
    snprintf(missing, sizeof missing, "%s.gone", path);
    char message[256];
    snprintf(message, sizeof message, "CCSYNC_SECRETS_KEY_FILE: cannot read %s", missing);
    expect_refused("CCSYNC_SECRETS_KEY_FILE", missing, message);
    key_file(path, "# nothing yet\n");
    expect_refused("CCSYNC_SECRETS_KEY_FILE", path, "CCSYNC_SECRETS_KEY_FILE: holds no key");
    unlink(path);
}

static void test_admin_listen_is_optional_and_needs_a_port_of_its_own(void **state)
{
    (void)state;
    assert_int_equal(load(), 0);
    assert_int_equal(cfg.admin_listen_port, 0);
    env_set("CCSYNC_ADMIN_LISTEN", "127.0.0.1:9090");
    assert_int_equal(load(), 0);
    assert_string_equal(cfg.admin_listen_host, "127.0.0.1");
    assert_int_equal(cfg.admin_listen_port, 9090);
    expect_refused(
        "CCSYNC_ADMIN_LISTEN", "9090",
        "CCSYNC_ADMIN_LISTEN: \"9090\" is not address:port (for example 127.0.0.1:9090)");
    expect_refused("CCSYNC_ADMIN_LISTEN", "127.0.0.1:0",
                   "CCSYNC_ADMIN_LISTEN: \"127.0.0.1:0\" is not address:port (for example "
                   "127.0.0.1:9090)");
    expect_refused("CCSYNC_ADMIN_LISTEN", "127.0.0.1:8080",
                   "CCSYNC_ADMIN_LISTEN: port 8080 is CCSYNC_LISTEN's; give the admin listener a "
                   "port of its own");
}

static void test_ccsyncd_exits_2_without_key_file(void **state)
{
    (void)state;
    char *const env[] = {"CCSYNC_ADMIN_TOKEN=" ADMIN_TOKEN,
                         "CCSYNC_SECRETS_KEY_FILE=", "CCSYNC_ALLOW_PLAINTEXT_SECRETS=", NULL};
    expect_exit_2(env,
                  "ccsyncd: configuration error: CCSYNC_SECRETS_KEY_FILE: is required (a file of "
                  "\"KEY_ID BASE64\" lines; make one with scripts/make-secrets-key.sh), or set "
                  "CCSYNC_ALLOW_PLAINTEXT_SECRETS=1 for development\n",
                  true, NULL);
}

#define T(f) cmocka_unit_test_setup(f, setup_minimal)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_defaults_of_design_section_3),
        T(test_budget_plan_defaults_and_ranges),
        T(test_empty_value_counts_as_unset),
        T(test_every_variable_is_read),
        T(test_limit_variables_are_read),
        T(test_enqueue_chunk_bytes_is_read_and_bounded),
        T(test_log_levels_and_formats),
        T(test_listen_without_port_is_refused),
        T(test_listen_with_bad_port_is_refused),
        T(test_redis_url_forms_are_parsed),
        T(test_bad_redis_urls_are_refused_naming_the_variable),
        T(test_redis_url_is_percent_decoded_and_takes_ipv6_hosts),
        T(test_redis_password_may_come_from_a_file),
        T(test_redis_url_errors_never_echo_the_password),
        T(test_missing_admin_token_is_refused),
        T(test_short_admin_token_is_refused_without_echo),
        T(test_rate_per_second_must_be_positive_number),
        T(test_workers_must_be_from_0_to_256),
        T(test_workers_zero_is_an_ingest_only_process),
        T(test_other_numbers_are_range_checked),
        T(test_cc_urls_must_be_http),
        T(test_unknown_log_format_is_refused),
        T(test_unknown_log_level_is_refused),
        T(test_bootstrap_vars_without_association_id_are_refused),
        T(test_bootstrap_secret_must_be_whsec_base64),
        T(test_bootstrap_secret_is_24_to_64_bytes),
        T(test_bootstrap_association_id_and_expiry_are_checked),
        T(test_bootstrap_is_read_whole),
        T(test_ccsyncd_exits_2_with_one_line_naming_bad_variable),
        T(test_ccsyncd_exits_2_without_admin_token),
        T(test_ccsyncd_exit_line_hides_redis_password),
        T(test_ccsyncd_exits_2_when_listen_address_is_not_ipv4),
        T(test_ccsyncd_exits_2_when_port_is_taken),
        T(test_without_key_file_plaintext_must_be_allowed),
        T(test_key_file_is_read_into_the_ring),
        T(test_bad_key_file_is_refused_without_echoing_keys),
        T(test_ccsyncd_exits_2_without_key_file),
        T(test_admin_listen_is_optional_and_needs_a_port_of_its_own),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
