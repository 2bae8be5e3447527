/*
 * admin.h - the handlers of the health endpoints, the association admin API,
 * group status, audit, service status and dead letters. Each is a route of
 * http.c's table and follows its handler contract.
 */
#ifndef CCSYNC_ADMIN_H
#define CCSYNC_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

struct app;
struct config;
struct http_request;
struct json_object;
struct redisContext;

int admin_livez(struct app *app, struct http_request *req);
int admin_readyz(struct app *app, struct http_request *req);
int admin_metrics(struct app *app, struct http_request *req);
int admin_put_association(struct app *app, struct http_request *req);
int admin_get_association(struct app *app, struct http_request *req);
int admin_list_groups(struct app *app, struct http_request *req);
int admin_get_group(struct app *app, struct http_request *req);
int admin_resync_group(struct app *app, struct http_request *req);
int admin_audit(struct app *app, struct http_request *req);
int admin_status(struct app *app, struct http_request *req);
int admin_list_dead_letters(struct app *app, struct http_request *req);
int admin_redrive_dead_letter(struct app *app, struct http_request *req);
/* The shared budget (admin_budget.c): ask for a reconcile; /v1/status budget. */
int admin_reconcile_association(struct app *app, struct http_request *req);
struct json_object *admin_budget_view(struct redisContext *c, const struct config *cfg);
/* Whether the budget holds changes back now (the projection is past
 * BUDGET_CALM, so the coalescing wait is widened and rounds may be held):
 * then queued groups show waiting_for "budget". */
bool admin_budget_binds(struct redisContext *c, const struct config *cfg);
/* Sets the budget gauges of GET /metrics (used by class, projected, limit). */
void admin_budget_gauges(struct redisContext *c, const struct config *cfg);
/* Adds next_sync_at and waiting_for to a GroupStatus (state pending while it
 * waits for the budget). */
void admin_budget_group(struct redisContext *c, const char *association, const char *group,
                        bool budget_binds, struct json_object *view);
/* Association tokens (admin_tokens.c). */
int admin_create_token(struct app *app, struct http_request *req);
int admin_list_tokens(struct app *app, struct http_request *req);
int admin_revoke_token(struct app *app, struct http_request *req);

/* A group's members with their status, JSON or CSV (admin_members.c). */
int admin_list_members(struct app *app, struct http_request *req);
int admin_get_member(struct app *app, struct http_request *req); /* one member, every group */

/* The ccsync_groups{state,error_code} gauges, counted in Redis (group_metrics.c). */
struct redisContext;
int group_metrics_refresh(struct redisContext *c);

/* The status page (ui.c): GET /ui/, /ui/app.js, /ui/app.css, /ui/icon.svg; /ui redirects. */
int ui_page(struct app *app, struct http_request *req);
int ui_script(struct app *app, struct http_request *req);
int ui_style(struct app *app, struct http_request *req);
int ui_icon(struct app *app, struct http_request *req);
int ui_redirect(struct app *app, struct http_request *req);

/* Route checks, run before Redis is asked: true to go on, false after a 400. */
bool admin_check_update(struct http_request *req);   /* a PUT association body */
bool admin_check_limit(struct http_request *req);    /* ?limit= */
bool admin_check_entry_id(struct http_request *req); /* a dead letter's stream entry id */
bool admin_check_token(struct http_request *req);    /* a POST tokens body */
bool admin_check_members(struct http_request *req);  /* ?status=&limit=&cursor= of members */

/* Creates or updates the association named by CCSYNC_ASSOCIATION_ID at start. */
int admin_bootstrap_association(struct app *app, char *err, size_t err_size);

#endif
