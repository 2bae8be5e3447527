/* fuzz_http.h - the request of the fuzz targets' http.h (http_stub.c). */
#ifndef CCSYNC_FUZZ_HTTP_H
#define CCSYNC_FUZZ_HTTP_H

struct json_object;

struct http_request {
    struct json_object *json; /* the body, parsed (lent) */
    const char *limit;        /* ?limit= */
    int status;               /* the answer, 0 when none was set */
    char code[64];
};

#endif
