/*
 * notify.h - notifications to an association's own endpoint: group.sync_error
 * when a group enters error, group.sync_recovered when it syncs again, each
 * once per transition, signed with Standard Webhooks under the association's
 * notification secret, kept in Redis until delivered and retried with backoff
 * for 24 h. Only http(s) URLs whose every address is public are called, unless
 * CCSYNC_NOTIFY_ALLOW_PRIVATE=1.
 */
#ifndef CCSYNC_NOTIFY_H
#define CCSYNC_NOTIFY_H

#include <stdbool.h>
#include <stddef.h>

struct app;
struct redisContext;
struct secrets_ring;

/* The secret of the notification settings is sealed at rest under this field name. */
#define NOTIFY_SECRET_FIELD "notify_secret"
struct json_object;

#define NOTIFY_URL_MAX 2048

/* The "notifications" object of PUT /v1/associations/{a}; strings borrowed. */
struct notify_config {
    const char *url;
    const char *secret;
    int digest_hour; /* -1: none */
};

/* Parses and checks a "notifications" object (a NULL object removes them).
 * 0, or -1 with why (a 400 message). */
int notify_config_parse(struct json_object *o, bool allow_private, struct notify_config *out,
                        bool *remove, char *why, size_t why_size);
/* Stores (or, remove, deletes) the association's notification settings. */
int notify_config_put(struct redisContext *c, const struct secrets_ring *ring,
                      const char *association, const struct notify_config *nc, bool remove);
/* {"url","secret_set","daily_digest_hour_utc"} or NULL (json-c reference). */
struct json_object *notify_config_view(struct redisContext *c, const char *association);

/* 0 when url is http(s) and every address its host resolves to may be called
 * (public, or allow_private); pin gets "host:port:address" for CURLOPT_RESOLVE,
 * so the address checked is the one called. -1 with why otherwise. */
int notify_url_check(const char *url, bool allow_private, char *pin, size_t pin_size, char *why,
                     size_t why_size);

/* Transitions, recorded by the engine's status writes (groupstore.c): each
 * appends an event only when it is a transition and notifications are set. */
int notify_group_error(struct redisContext *c, const char *association, const char *group,
                       const char *code, const char *message);
int notify_group_synced(struct redisContext *c, const char *association, const char *group);
/* list.renamed_in_constant_contact: reconcile saw the list's new name (once). */
int notify_list_renamed(struct redisContext *c, const char *association, const char *group,
                        const char *list_id, const char *old_name, const char *new_name);
/* connection.unauthorized: CC refused the tokens; once per set of tokens. */
int notify_connection_unauthorized(struct redisContext *c, const char *association,
                                   const char *message);

/* The delivery thread. */
struct notifier;
struct notifier *notify_start(struct app *app);
void notify_stop(struct notifier *n);

#endif
