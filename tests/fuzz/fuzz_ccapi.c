/*
 * fuzz_ccapi.c - libFuzzer target for the parsers of Constant Contact's
 * answers (ccapi.c): lists and their pages, activities and their pages, an
 * activity id, contact pages, and the token endpoint's answer. Constant
 * Contact is trusted, but a proxy, an outage page or a changed API can put
 * any bytes there. The first byte picks the parser; the rest is the body,
 * NUL-terminated as curl's buffer is. Every output is cleared whatever the
 * result, as the callers do, so ASan catches a leak or a double free.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ccsync/ccapi.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void parse(unsigned which, const char *json)
{
    struct ccapi_error err;
    switch (which % 7) {
    case 0: {
        struct ccapi_list out = {0};
        ccapi_parse_list(json, &out, &err);
        ccapi_list_clear(&out);
        break;
    }
    case 1: {
        struct ccapi_list_page out = {0};
        ccapi_parse_list_page(json, &out, &err);
        ccapi_list_page_clear(&out);
        break;
    }
    case 2: {
        char id[CCAPI_ID_SIZE];
        ccapi_parse_activity_id(json, id, &err);
        break;
    }
    case 3: {
        struct ccapi_activity out = {0};
        ccapi_parse_activity(json, &out, &err);
        ccapi_activity_clear(&out);
        break;
    }
    case 4: {
        struct ccapi_activity_page out = {0};
        ccapi_parse_activity_page(json, &out, &err);
        ccapi_activity_page_clear(&out);
        break;
    }
    case 5: {
        struct ccapi_contact_page out = {0};
        ccapi_parse_contact_page(json, &out, &err);
        ccapi_contact_page_clear(&out);
        break;
    }
    default: {
        struct ccapi_token out = {0};
        ccapi_parse_token(json, &out, &err);
        ccapi_token_clear(&out);
        break;
    }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    char *json = malloc(size);
    if (!json)
        abort();
    memcpy(json, data + 1, size - 1);
    json[size - 1] = '\0';
    parse(data[0], json);
    free(json);
    return 0;
}
