/* Generated groups for the tests: member k of a group is "<prefix><k>". See
 * members.h. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "members.h"
#include "novi.h"

bool gen_special(int k, bool *no_email, bool *invalid)
{
    *no_email = k % 1000 == 7;
    *invalid = k % 1000 == 8;
    return *no_email || *invalid;
}

void gen_email(const char *prefix, int k, char *out, size_t size)
{
    snprintf(out, size, "%s%05d@example.org", prefix, k);
}

/* group.members data for members [from, to) of prefix. malloc'd. */
char *gen_members_data(const char *g, const char *prefix, int from, int to)
{
    size_t cap = 128 + (size_t)(to - from) * 200, len = 0;
    char *d = malloc(cap);
    len += (size_t)snprintf(d + len, cap - len, "{\"UniqueID\":\"%s\",\"Members\":[", g);
    for (int k = from; k < to; k++) {
        bool no_email, invalid;
        gen_special(k, &no_email, &invalid);
        char email[64];
        gen_email(prefix, k, email, sizeof email);
        if (invalid)
            snprintf(email, sizeof email, "%s%05d at example.org", prefix, k);
        len += (size_t)snprintf(d + len, cap - len,
                                "%s{\"UniqueID\":\"%s%05d\"%s%s%s,\"FirstName\":\"F%d\","
                                "\"LastName\":\"L%d\",\"CustomerType\":\"Person\",\"Active\":true}",
                                k > from ? "," : "", prefix, k, no_email ? "" : ",\"Email\":\"",
                                no_email ? "" : email, no_email ? "" : "\"", k, k);
    }
    snprintf(d + len, cap - len, "]}");
    return d;
}

void send_gen_member_at(int i, const char *g, const char *prefix, int k, bool in_group,
                        long long at)
{
    char data[512], email[64], id[64], groups[160];
    gen_email(prefix, k, email, sizeof email);
    snprintf(id, sizeof id, "%s%05d", prefix, k);
    snprintf(groups, sizeof groups, ",\"Groups\":[%s%s%s]", in_group ? "{\"UniqueID\":\"" : "",
             in_group ? g : "", in_group ? "\"}" : "");
    char fn[16], ln[16];
    snprintf(fn, sizeof fn, "F%d", k);
    snprintf(ln, sizeof ln, "L%d", k);
    char *m = member_json(id, email, fn, ln, groups);
    snprintf(data, sizeof data, "%s", m);
    free(m);
    send_event_at(i, "customer.updated", data, at);
}

void gen_expected(struct strv *out, const char *prefix, int from, int to)
{
    for (int k = from; k < to; k++) {
        bool no_email, invalid;
        if (gen_special(k, &no_email, &invalid))
            continue;
        char email[64];
        gen_email(prefix, k, email, sizeof email);
        strv_add(out, email);
    }
}

long long gen_expected_count(int from, int to)
{
    long long n = 0;
    bool no_email, invalid;
    for (int k = from; k < to; k++)
        n += !gen_special(k, &no_email, &invalid);
    return n;
}

/* Members of [from, to) without an email (no_email) or with an invalid one. */
static int count_special(int from, int to, bool want_no_email)
{
    int n = 0;
    bool no_email, invalid;
    for (int k = from; k < to; k++)
        n += gen_special(k, &no_email, &invalid) && (want_no_email ? no_email : invalid);
    return n;
}

int gen_no_email(int from, int to)
{
    return count_special(from, to, true);
}

int gen_invalid(int from, int to)
{
    return count_special(from, to, false);
}
