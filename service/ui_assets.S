/*
 * ui_assets.S - the status page's files (service/ui/), embedded in ccsyncd so
 * that the page needs nothing from outside the binary. ui.c serves them.
 * Each file is NAME, NAME_end; the paths are relative to the repository's root,
 * where make runs.
 */
#define ASSET(name, path)                                                                          \
    .global name;                                                                                  \
    .global name##_end;                                                                            \
    .balign 16;                                                                                    \
    name:                                                                                          \
    .incbin path;                                                                                  \
    name##_end:

    .section .rodata
ASSET(ui_index_html, "service/ui/index.html")
ASSET(ui_app_js, "service/ui/app.js")
ASSET(ui_app_css, "service/ui/app.css")
ASSET(ui_icon_svg, "service/ui/icon.svg")

    .section .note.GNU-stack, "", @progbits
