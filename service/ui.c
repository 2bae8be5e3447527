/*
 * ui.c - serves the status page (service/ui/, embedded by ui_assets.S): one
 * HTML page, its script and its style sheet, from ccsyncd's own origin.
 *
 * The Content-Security-Policy lets the page load only its own script and style
 * (no inline script or style, nothing from another origin) and talk only to
 * ccsyncd; the token the page is given never travels in a URL (it is read from
 * the fragment and sent as an Authorization header to the JSON API).
 */
#include <stdlib.h>
#include <string.h>

#include "ccsync/admin.h"
#include "ccsync/http.h"

extern const char ui_index_html[], ui_index_html_end[];
extern const char ui_app_js[], ui_app_js_end[];
extern const char ui_app_css[], ui_app_css_end[];
extern const char ui_icon_svg[], ui_icon_svg_end[];

#define UI_CSP                                                                                     \
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "                \
    "img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

static int serve(struct http_request *req, const char *start, const char *end, const char *type)
{
    size_t len = (size_t)(end - start);
    char *body = malloc(len ? len : 1);
    if (!body) {
        http_reply_error(req, 500, "internal", "out of memory");
        return HTTP_DONE;
    }
    memcpy(body, start, len);
    http_add_header(req, "Content-Security-Policy", UI_CSP);
    http_add_header(req, "X-Content-Type-Options", "nosniff");
    http_add_header(req, "Referrer-Policy", "no-referrer");
    http_reply(req, 200, type, body, len);
    return HTTP_DONE;
}

int ui_page(struct app *app, struct http_request *req)
{
    (void)app;
    return serve(req, ui_index_html, ui_index_html_end, "text/html; charset=utf-8");
}

int ui_script(struct app *app, struct http_request *req)
{
    (void)app;
    return serve(req, ui_app_js, ui_app_js_end, "text/javascript; charset=utf-8");
}

int ui_style(struct app *app, struct http_request *req)
{
    (void)app;
    return serve(req, ui_app_css, ui_app_css_end, "text/css; charset=utf-8");
}

/* The page's icon: without one a browser asks for /favicon.ico and logs a 404. */
int ui_icon(struct app *app, struct http_request *req)
{
    (void)app;
    return serve(req, ui_icon_svg, ui_icon_svg_end, "image/svg+xml");
}

/* /ui without its slash: the page's relative links need the folder. */
int ui_redirect(struct app *app, struct http_request *req)
{
    (void)app;
    http_add_header(req, "Location", "/ui/");
    http_reply_error(req, 308, "moved", "the status page is at /ui/");
    return HTTP_DONE;
}
