/*
 * fuzz_admin.c - libFuzzer target for the admin API's JSON bodies: the checks
 * of PUT /v1/associations/{id} (webhook secret, Constant Contact tokens and
 * their expiry) and of POST .../tokens (scope, name), run over any bytes an
 * authenticated but careless or hostile client could send, parsed as http.c
 * parses them. Also the ?limit= of the listings. A check either accepts the
 * body or answers 4xx; anything else (a crash, a leak, a 5xx) is a finding.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "ccsync/admin.h"
#include "ccsync/http.h"
#include "fuzz_http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_answer(const struct http_request *req, bool accepted)
{
    if (accepted ? req->status != 0 : (req->status < 400 || req->status > 499))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1024 * 1024)
        return 0;
    json_tokener *tok = json_tokener_new();
    json_object *root = json_tokener_parse_ex(tok, (const char *)data, (int)size);
    bool complete = json_tokener_get_error(tok) == json_tokener_success &&
                    json_tokener_get_parse_end(tok) == size;
    json_tokener_free(tok);
    if (root && complete) {
        struct http_request update = {.json = root}, token = {.json = root};
        check_answer(&update, admin_check_update(&update));
        check_answer(&token, admin_check_token(&token));
    }
    json_object_put(root);
    char *limit = malloc(size + 1);
    if (!limit)
        abort();
    memcpy(limit, data, size);
    limit[size] = '\0';
    struct http_request listing = {.limit = limit};
    check_answer(&listing, admin_check_limit(&listing));
    free(limit);
    return 0;
}
