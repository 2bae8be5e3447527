/* Generated groups for the tests of size and crashes: member k of a group is
 * "<prefix><k>" (UniqueID prefix%05d, email prefix%05d@example.org, names Fk Lk),
 * and every k % 1000 == 7 has no email, every k % 1000 == 8 an invalid one, so
 * what belongs on the list and the GroupStatus counts follow from the range. */
#ifndef CCSYNC_TEST_MEMBERS_H
#define CCSYNC_TEST_MEMBERS_H

#include <stdbool.h>
#include <stddef.h>

#include "reply.h"

/* Whether member k has no email (k % 1000 == 7) or an invalid one (== 8). */
bool gen_special(int k, bool *no_email, bool *invalid);

/* Member k's (valid) email address. */
void gen_email(const char *prefix, int k, char *out, size_t size);

/* group.members data for members [from, to) of prefix; malloc'd. */
char *gen_members_data(const char *g, const char *prefix, int from, int to);

/* A customer.updated for member k of prefix joining (or leaving: in_group false) g. */
void send_gen_member_at(int i, const char *g, const char *prefix, int k, bool in_group,
                        long long at);

/* The emails of members [from, to) of prefix that belong on a list. */
void gen_expected(struct strv *out, const char *prefix, int from, int to);

/* How many of members [from, to) belong on a list, have no email, an invalid one. */
long long gen_expected_count(int from, int to);
int gen_no_email(int from, int to);
int gen_invalid(int from, int to);

#endif
