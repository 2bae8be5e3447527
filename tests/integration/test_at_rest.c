/* test_at_rest.c - secrets at rest (CCSYNC_SECRETS_KEY_FILE): after a PUT no
 * key, value or AOF byte of Redis holds a webhook secret or a Constant Contact
 * token in plain text; plain text found at start is sealed once (and the AOF
 * rewritten); keys rotate (add first, restart, drop the old); without a key
 * file ccsyncd runs only when told to, and says so. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "ccsync/keys.h"
#include "novi.h"
#include "peek.h"
#include "reply.h"
#include "stack.h"
#include "testsupport.h"

#define SECRET_B64 "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" /* SECRET without whsec_ */
#define NOTIFY_SECRET_B64 "bm90aWZ5LXNlY3JldC1vZi0yNC1ieXRlcyE="
#define NOTIFY_SECRET "whsec_" NOTIFY_SECRET_B64
#define NEW_KEY_LINE "k2 a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s="
#define STRANGER_KEY_LINE "k3 c3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3M="

/* ---- everything Redis holds, as bytes ---- */

struct bytes {
    char *p;
    size_t n;
};

static void add(struct bytes *b, const char *p, size_t n)
{
    b->p = realloc(b->p, b->n + n + 1);
    assert_non_null(b->p);
    memcpy(b->p + b->n, p, n);
    b->n += n;
    b->p[b->n] = '\n';
}

static void add_reply(struct bytes *b, const redisReply *r)
{
    if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS)
        add(b, r->str, r->len);
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
        add_reply(b, r->element[i]);
}

/* Every key's name, DUMP and value read by its type. */
static void dump_key(redisContext *c, const char *key, struct bytes *b)
{
    static const struct {
        const char *type, *read;
    } reads[] = {{"string", "GET %s"},
                 {"hash", "HGETALL %s"},
                 {"list", "LRANGE %s 0 -1"},
                 {"set", "SMEMBERS %s"},
                 {"zset", "ZRANGE %s 0 -1 WITHSCORES"},
                 {"stream", "XRANGE %s - +"}};
    add(b, key, strlen(key));
    redisReply *r = peek_command(c, "DUMP %s", key);
    add_reply(b, r);
    freeReplyObject(r);
    redisReply *t = peek_command(c, "TYPE %s", key);
    for (size_t i = 0; i < sizeof reads / sizeof reads[0]; i++) {
        if (strcmp(t->str, reads[i].type) != 0)
            continue;
        r = peek_command(c, reads[i].read, key);
        add_reply(b, r);
        freeReplyObject(r);
    }
    freeReplyObject(t);
}

static struct bytes dump_redis(void)
{
    struct bytes b = {NULL, 0};
    redisContext *c = peek_connect(stack.redis_port);
    char cursor[32] = "0";
    do {
        redisReply *r = peek_command(c, "SCAN %s COUNT 1000", cursor);
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        for (size_t i = 0; i < r->element[1]->elements; i++)
            dump_key(c, r->element[1]->element[i]->str, &b);
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    redisFree(c);
    return b;
}

/* Every file under dir (the AOF's base and increments, an RDB if any). */
static void add_files(struct bytes *b, const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        if (S_ISDIR(st.st_mode)) {
            add_files(b, path);
            continue;
        }
        size_t n;
        char *text = ts_read_file(path, &n);
        assert_non_null(text);
        add(b, text, n);
        free(text);
    }
    closedir(d);
}

static void assert_absent(const struct bytes *b, const char *what, const char *where)
{
    if (memmem(b->p, b->n, what, strlen(what)))
        fail_msg("%s holds \"%s\" in plain text", where, what);
}

static void assert_no_plain_secret(const char *const *secrets)
{
    struct bytes redis = dump_redis(), files = {NULL, 0};
    add_files(&files, stack.data_dir);
    assert_true(files.n > 0); /* the AOF is there */
    for (size_t i = 0; secrets[i]; i++) {
        assert_absent(&redis, secrets[i], "Redis");
        assert_absent(&files, secrets[i], stack.data_dir);
    }
    free(redis.p);
    free(files.p);
}

/* ---- helpers ---- */

/* A stored secret: a field of the association's record, or "notify" for the
 * notification settings' secret. */
static char *field(const char *name)
{
    redisContext *c = peek_connect(stack.redis_port);
    redisReply *r = strcmp(name, "notify") == 0
                        ? peek_command(c, "HGET %s secret", key_notify(ASSOC).s)
                        : peek_command(c, "HGET %s %s", key_association(ASSOC).s, name);
    char *v = r->type == REDIS_REPLY_STRING ? strdup(r->str) : NULL;
    freeReplyObject(r);
    redisFree(c);
    return v;
}

static void assert_sealed_with(const char *name, const char *key_id)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "enc:v1:%s:", key_id);
    char *v = field(name);
    assert_non_null(v);
    if (strncmp(v, prefix, strlen(prefix)) != 0)
        fail_msg("%s is stored as \"%.40s...\", not sealed with %s", name, v, key_id);
    free(v);
}

static void restart_ccsyncd(void)
{
    ts_kill(stack.ccsyncd_pid[0], SIGTERM);
    stack.ccsyncd_pid[0] = 0;
    assert_int_equal(stack_start_ccsyncd(0), 0);
}

static json_object *status_secrets(void)
{
    long status;
    json_object *o = api_json("GET", "/v1/status", NULL, &status);
    assert_int_equal(status, 200);
    json_object *s = json_object_get(jget(o, "secrets"));
    json_object_put(o);
    assert_non_null(s);
    return s;
}

static void assert_status_counts(const char *key_id, int plaintext, int old_key, int unreadable)
{
    json_object *s = status_secrets();
    assert_string_equal(jstr(s, "at_rest"), "sealed");
    assert_string_equal(jstr(s, "key_id"), key_id);
    assert_int_equal(jint(s, "plaintext_values"), plaintext);
    assert_int_equal(jint(s, "old_key_values"), old_key);
    assert_int_equal(jint(s, "unreadable_values"), unreadable);
    json_object_put(s);
}

static long webhook_status(void)
{
    char id[64];
    new_id(id, sizeof id);
    char *body =
        envelope("group.updated",
                 "{\"UniqueID\":\"g-1\",\"GroupName\":\"G\",\"SyncToConstantContact\":false}", 1);
    long status = post_webhook(id, body);
    free(body);
    return status;
}

/* ---- tests ---- */

static int setup_minted(void **state)
{
    (void)state;
    struct stack_options o = {.aof = true, .connect = STACK_MINTED_TOKEN};
    return stack_start("test_at_rest", &o);
}

static void test_after_a_put_no_secret_is_in_redis_or_its_aof_in_plain_text(void **state)
{
    (void)state;
    assert_sealed_with("webhook_secret", STACK_KEY_ID);
    assert_sealed_with("cc_access_token", STACK_KEY_ID);
    assert_sealed_with("cc_refresh_token", STACK_KEY_ID);
    /* the sealed secrets open: a signed webhook is accepted, the API says they are set */
    assert_int_equal(webhook_status(), 202);
    long status;
    json_object *a = api_json("GET", "/v1/associations/" ASSOC, NULL, &status);
    assert_int_equal(status, 200);
    assert_true(json_object_get_boolean(jpath(a, "webhook_secret_set")));
    assert_true(json_object_get_boolean(jpath(a, "constant_contact.access_token_set")));
    assert_true(json_object_get_boolean(jpath(a, "constant_contact.refresh_token_set")));
    assert_null(jget(a, "secrets_unreadable"));
    json_object_put(a);
    /* the notification settings' secret too */
    struct reply r = api(
        "PUT", "/v1/associations/" ASSOC,
        "{\"notifications\":{\"url\":\"https://8.8.8.8/hook\",\"secret\":\"" NOTIFY_SECRET "\"}}");
    assert_int_equal(r.status, 200);
    assert_true(json_object_get_boolean(jpath(r.json, "notifications.secret_set")));
    reply_free(&r);
    const char *secrets[] = {SECRET,        SECRET_B64,        stack.access, stack.refresh,
                             NOTIFY_SECRET, NOTIFY_SECRET_B64, NULL};
    assert_no_plain_secret(secrets);
    assert_status_counts(STACK_KEY_ID, 0, 0, 0);
}

static int setup_later(void **state)
{
    (void)state;
    struct stack_options o = {.aof = true, .ccsyncd_later = true};
    return stack_start("test_at_rest", &o);
}

static bool aof_rewritten(void *arg)
{
    (void)arg;
    redisContext *c = peek_connect(stack.redis_port);
    redisReply *r = peek_command(c, "INFO persistence");
    bool done = strstr(r->str, "aof_rewrite_in_progress:0") &&
                strstr(r->str, "aof_rewrite_scheduled:0") &&
                strstr(r->str, "aof_last_bgrewrite_status:ok");
    freeReplyObject(r);
    redisFree(c);
    return done;
}

/* Release 2 before sealing wrote the secrets as they came. */
static void write_plain_association(void)
{
    redisContext *c = peek_connect(stack.redis_port);
    freeReplyObject(peek_command(c,
                                 "HSET %s webhook_secret %s cc_access_token %s "
                                 "cc_refresh_token %s cc_state unverified cred_version 1",
                                 key_association(ASSOC).s, SECRET, DEV_TOKEN,
                                 "plain-refresh-token-1"));
    freeReplyObject(peek_command(c, "SADD %s %s", KEY_ASSOCIATIONS, ASSOC));
    freeReplyObject(peek_command(c, "SET %s 2", KEY_LAYOUT_VERSION));
    redisFree(c);
}

static void test_plain_text_found_at_start_is_sealed_once_and_the_aof_rewritten(void **state)
{
    (void)state;
    write_plain_association();
    char *before = field("webhook_secret");
    assert_string_equal(before, SECRET);
    free(before);
    stack.http_port[0] = ts_free_port();
    assert_int_equal(stack_start_ccsyncd(0), 0);
    wait_log_count(0, "\"msg\":\"secrets_sealed\"", 1, WAIT_MS);
    assert_int_equal(stack_log_count(0, "\"sealed_now\":3"), 1);
    assert_sealed_with("webhook_secret", STACK_KEY_ID);
    assert_sealed_with("cc_access_token", STACK_KEY_ID);
    assert_sealed_with("cc_refresh_token", STACK_KEY_ID);
    assert_int_equal(webhook_status(), 202); /* the sealed secret still verifies */
    assert_true(ts_wait_for(aof_rewritten, NULL, WAIT_MS, 50));
    const char *secrets[] = {SECRET, SECRET_B64, DEV_TOKEN, "plain-refresh-token-1", NULL};
    assert_no_plain_secret(secrets);
    assert_status_counts(STACK_KEY_ID, 0, 0, 0);

    /* a second start finds nothing to do and changes nothing */
    char *sealed = field("cc_refresh_token");
    restart_ccsyncd();
    wait_log_count(0, "\"sealed_now\":0", 1, WAIT_MS);
    char *again = field("cc_refresh_token");
    assert_string_equal(again, sealed);
    free(again);
    free(sealed);
}

static void test_keys_rotate_add_first_restart_then_drop_the_old(void **state)
{
    (void)state;
    char *old = field("webhook_secret");
    struct reply r = api(
        "PUT", "/v1/associations/" ASSOC,
        "{\"notifications\":{\"url\":\"https://8.8.8.8/hook\",\"secret\":\"" NOTIFY_SECRET "\"}}");
    assert_int_equal(r.status, 200);
    reply_free(&r);
    assert_sealed_with("notify", STACK_KEY_ID);
    /* 1. the new key first, the old one still there: every value is sealed again */
    assert_int_equal(stack_write_key_file(NEW_KEY_LINE "\n" STACK_KEY_LINE "\n"), 0);
    restart_ccsyncd();
    wait_log_count(0, "\"resealed_now\":4", 1, WAIT_MS);
    assert_sealed_with("webhook_secret", "k2");
    assert_sealed_with("cc_access_token", "k2");
    assert_sealed_with("cc_refresh_token", "k2");
    assert_sealed_with("notify", "k2");
    assert_status_counts("k2", 0, 0, 0);
    /* 2. the old key dropped: everything still opens */
    assert_int_equal(stack_write_key_file(NEW_KEY_LINE "\n"), 0);
    restart_ccsyncd();
    assert_int_equal(webhook_status(), 202);
    assert_status_counts("k2", 0, 0, 0);
    /* a value sealed with a key no longer in the file does not open, and says so */
    redisContext *c = peek_connect(stack.redis_port);
    freeReplyObject(peek_command(c, "HSET %s webhook_secret %s", key_association(ASSOC).s, old));
    redisFree(c);
    free(old);
    assert_int_equal(stack_write_key_file(NEW_KEY_LINE "\n"), 0);
    restart_ccsyncd();
    assert_int_equal(stack_log_count(0, "\"msg\":\"secret_unreadable\""), 1);
    assert_int_equal(webhook_status(), 503); /* the operator's to fix: Novi retries meanwhile */
    assert_int_equal(stack_log_count(0, "\"msg\":\"webhook_secret_unreadable\""), 1);
    assert_status_counts("k2", 0, 0, 1);
    long status;
    json_object *a = api_json("GET", "/v1/associations/" ASSOC, NULL, &status);
    assert_int_equal(jint(a, "secrets_unreadable"), 1);
    assert_false(json_object_get_boolean(jget(a, "webhook_secret_set")));
    json_object_put(a);
}

static int setup_plaintext(void **state)
{
    (void)state;
    struct stack_options o = {
        .env = {"CCSYNC_SECRETS_KEY_FILE=", "CCSYNC_ALLOW_PLAINTEXT_SECRETS=1"}};
    return stack_start("test_at_rest", &o);
}

static void test_without_a_key_file_secrets_stay_plain_and_status_and_log_warn(void **state)
{
    (void)state;
    char *v = field("webhook_secret");
    assert_string_equal(v, SECRET);
    free(v);
    assert_int_equal(stack_log_count(0, "\"msg\":\"secrets_stored_in_plain_text\""), 1);
    json_object *s = status_secrets();
    assert_string_equal(jstr(s, "at_rest"), "plaintext");
    assert_null(jget(s, "key_id"));
    assert_int_equal(jint(s, "plaintext_values"), 2); /* the secret and the dev token */
    assert_non_null(strstr(jstr(s, "warning"), "CCSYNC_ALLOW_PLAINTEXT_SECRETS=1"));
    json_object_put(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_after_a_put_no_secret_is_in_redis_or_its_aof_in_plain_text, setup_minted,
            stack_stop),
        cmocka_unit_test_setup_teardown(
            test_plain_text_found_at_start_is_sealed_once_and_the_aof_rewritten, setup_later, NULL),
        cmocka_unit_test_teardown(test_keys_rotate_add_first_restart_then_drop_the_old, stack_stop),
        cmocka_unit_test_setup_teardown(
            test_without_a_key_file_secrets_stay_plain_and_status_and_log_warn, setup_plaintext,
            stack_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
