/*
 * fuzz_webhook.c - libFuzzer target for everything ccsync does with the bytes of
 * an unauthenticated webhook request: the signature check over the three
 * headers and the body (and the answer to an unknown association), and the
 * parsing of the body into an event, without caps and under caps.
 *
 * Input layout: "<webhook-id>\n<webhook-timestamp>\n<webhook-signature>\n<body>".
 * A missing line leaves that header absent (NULL). The body keeps any bytes,
 * NULs included, and is passed by length without a terminator, as the HTTP layer
 * does, so that ASan catches reads past body_len.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ccsync/webhook.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define FUZZ_NOW 1614265330

/* Cuts the next '\n'-terminated line off *p as a new C string, or NULL when no
 * newline is left. */
static char *line_take(const uint8_t **p, size_t *left)
{
    const uint8_t *nl = memchr(*p, '\n', *left);
    size_t n;
    char *s;

    if (nl == NULL)
        return NULL;
    n = (size_t)(nl - *p);
    s = malloc(n + 1);
    if (s == NULL)
        abort();
    memcpy(s, *p, n);
    s[n] = '\0';
    *p += n + 1;
    *left -= n + 1;
    return s;
}

static void check_event(const struct event *ev)
{
    /* What the parser promises its callers: ids valid, arrays as long as said. */
    if (ev->type != EVENT_UNKNOWN && !ccsync_valid_unique_id(ev->subject_id))
        abort();
    if ((ev->n_members == 0) != (ev->members == NULL))
        abort();
    for (size_t i = 0; i < ev->n_members; i++) {
        if (!ccsync_valid_unique_id(ev->members[i].id))
            abort();
        for (size_t j = 0; j < ev->members[i].n_groups; j++) {
            if (!ccsync_valid_unique_id(ev->members[i].groups[j].id))
                abort();
        }
    }
    if ((ev->type == EVENT_GROUP_CREATED || ev->type == EVENT_GROUP_UPDATED) &&
        (ev->group_name == NULL || ev->group_name[0] == '\0'))
        abort();
    if (strlen(ev->type_name) >= sizeof ev->type_name)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *p = data;
    size_t left = size;
    char *id = line_take(&p, &left);
    char *ts = line_take(&p, &left);
    char *sig = line_take(&p, &left);
    /* An exact-size copy: no terminator, so over-reads are caught. */
    char *body = malloc(left ? left : 1);
    struct webhook_error err;
    struct event ev;
    char out[64];

    if (body == NULL)
        abort();
    memcpy(body, p, left);

    memset(&err, 0, sizeof err);
    if (webhook_verify(FUZZ_SECRET, id, ts, sig, body, left, FUZZ_NOW, &err) != 0 &&
        (err.status == 0 || err.code[0] == '\0' || err.message[0] == '\0'))
        abort();
    /* The fuzzed id doubles as a secret, to exercise the secret decoder. */
    if (id != NULL) {
        if (webhook_secret_valid(id) !=
            (webhook_sign(id, "msg", FUZZ_NOW, body, left, out, sizeof out) == 0))
            abort();
    }

    memset(&err, 0, sizeof err);
    if (webhook_parse_event(body, left, &ev, &err) == 0) {
        char when[32];
        int64_t again;

        check_event(&ev);
        /* Formatting floors to whole seconds; parsing that back must give the
         * same second (except in the first second of int64 time, whose floor
         * lies outside the range). */
        rfc3339_format(ev.ts_ns, when, sizeof when);
        if (ev.ts_ns >= INT64_MIN + 1000000000 &&
            (rfc3339_parse(when, &again) != 0 ||
             again / 1000000000 != ev.ts_ns / 1000000000 - (ev.ts_ns % 1000000000 < 0)))
            abort();
        event_clear(&ev);
    } else if (err.status != 400 || err.message[0] == '\0') {
        abort();
    }

    /* Under small caps (the scan of the raw bytes, then the tree): accepted
     * only what the uncapped parse accepts, and within the caps. */
    static const struct webhook_limits caps = {2, 3};
    memset(&err, 0, sizeof err);
    if (webhook_parse_event_limited(body, left, &caps, &ev, &err) == 0) {
        check_event(&ev);
        if (ev.member.n_groups > caps.max_groups_per_member ||
            ev.n_members > caps.max_snapshot_members)
            abort();
        for (size_t i = 0; i < ev.n_members; i++)
            if (ev.members[i].n_groups > caps.max_groups_per_member)
                abort();
        event_clear(&ev);
    } else if (err.status != 400 || err.message[0] == '\0') {
        abort();
    }
    /* An unknown association's answer: always refused, never a crash. */
    if (webhook_verify_unknown(id, ts, sig, left, FUZZ_NOW, &err) == 0 || err.status != 401)
        abort();

    /* The timestamp line is also a candidate RFC 3339 date-time. */
    if (ts != NULL) {
        int64_t ns;
        (void)rfc3339_parse(ts, &ns);
    }

    free(body);
    free(sig);
    free(ts);
    free(id);
    return 0;
}
