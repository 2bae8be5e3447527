/* ccsim OAuth2 token endpoint (/oauth2/default/v1/token), as Constant Contact's
 * authorization server answers it: refresh tokens rotate and are single use (a spent
 * one is 400 invalid_grant), errors are {error, error_description}, and the client
 * must authenticate (HTTP Basic client_id:secret, or client_id for PKCE). */
#include "sim.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void oauth_error(struct sim_resp *r, int status, const char *error, const char *desc)
{
    json_object_put(r->body);
    r->status = status;
    r->body = json_object_new_object();
    json_object_object_add(r->body, "error", json_object_new_string(error));
    json_object_object_add(r->body, "error_description", json_object_new_string(desc));
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
}

/* Copies the value of key in an application/x-www-form-urlencoded body into out;
 * false when absent. */
static bool form_value(const char *body, size_t len, const char *key, char *out, size_t outlen)
{
    size_t klen = strlen(key);
    size_t i = 0;
    while (i < len) {
        size_t end = i;
        while (end < len && body[end] != '&')
            end++;
        if (end - i > klen && strncmp(body + i, key, klen) == 0 && body[i + klen] == '=') {
            size_t o = 0;
            for (size_t p = i + klen + 1; p < end && o + 1 < outlen; p++) {
                if (body[p] == '+') {
                    out[o++] = ' ';
                } else if (body[p] == '%' && p + 2 < end && hexval(body[p + 1]) >= 0 &&
                           hexval(body[p + 2]) >= 0) {
                    out[o++] = (char)(hexval(body[p + 1]) * 16 + hexval(body[p + 2]));
                    p += 2;
                } else {
                    out[o++] = body[p];
                }
            }
            out[o] = '\0';
            return true;
        }
        i = end + 1;
    }
    return false;
}

static bool param(const struct sim_req *q, const char *key, char *out, size_t outlen)
{
    if (form_value(q->body ? q->body : "", q->body_len, key, out, outlen))
        return true;
    const char *v = req_param(q, key); /* CC's examples put them in the query string too */
    if (v == NULL)
        return false;
    snprintf(out, outlen, "%s", v);
    return true;
}

/* A new access token (ttl seconds; 0 = never expires) and a new refresh token, as the
 * token endpoint's JSON answer. */
json_object *oauth_issue_pair(long ttl_seconds)
{
    int64_t exp = ttl_seconds > 0 ? sim_now_ms() + ttl_seconds * 1000 : 0;
    struct sim_token *access = sim_token_add(false, exp);
    struct sim_token *refresh = sim_token_add(true, 0);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "token_type", json_object_new_string("Bearer"));
    json_object_object_add(o, "expires_in", json_object_new_int64(ttl_seconds));
    json_object_object_add(o, "access_token", json_object_new_string(access->value));
    json_object_object_add(o, "scope", json_object_new_string("contact_data offline_access"));
    json_object_object_add(o, "refresh_token", json_object_new_string(refresh->value));
    return o;
}

void oauth_token(struct sim_req *q, struct sim_resp *r)
{
    if (strcmp(q->method, "POST") != 0) {
        oauth_error(r, 405, "invalid_request", "Use POST");
        return;
    }
    if (q->body_len > 0 &&
        (q->content_type == NULL ||
         strncasecmp(q->content_type, "application/x-www-form-urlencoded", 33) != 0)) {
        oauth_error(r, 400, "invalid_request",
                    "Content-Type must be application/x-www-form-urlencoded");
        return;
    }
    char client_id[256];
    bool basic = q->authorization && strncasecmp(q->authorization, "Basic ", 6) == 0 &&
                 strlen(q->authorization) > 6;
    if (!basic && !param(q, "client_id", client_id, sizeof client_id)) {
        oauth_error(r, 401, "invalid_client", "Client authentication failed");
        return;
    }
    char grant[64], refresh[256];
    if (!param(q, "grant_type", grant, sizeof grant)) {
        oauth_error(r, 400, "invalid_request", "The grant_type parameter is required");
        return;
    }
    if (strcmp(grant, "refresh_token") != 0) {
        oauth_error(r, 400, "unsupported_grant_type",
                    "The simulator supports grant_type=refresh_token only");
        return;
    }
    if (!param(q, "refresh_token", refresh, sizeof refresh)) {
        oauth_error(r, 400, "invalid_request", "The refresh_token parameter is required");
        return;
    }
    struct sim_token *t = sim_token_find(refresh);
    if (t == NULL || !t->refresh || t->spent) {
        oauth_error(r, 400, "invalid_grant", "The refresh token is invalid or expired.");
        return;
    }
    t->spent = true;
    r->status = 200;
    r->body = oauth_issue_pair(sim.cfg.token_ttl);
}
