/* watch: notices edits of the script and of the .lua files beside it, however
 * the editor saves (write in place, truncate and write, write a temporary file
 * and rename it over, delete and recreate), and reports each finished change
 * once. Watches the folder, not the file, so a rename never loses the watch;
 * waits for the folder to be quiet for a moment (debounce); and reports a change
 * of the script only when its content differs from the last one reported. */
#ifndef LUAHOOK_WATCH_H
#define LUAHOOK_WATCH_H

#include <uv.h>

typedef struct watch watch_t;
typedef void (*watch_cb)(void *ud, const char *what);

/* Starts watching; returns NULL with a logged warning when the folder cannot be
 * watched. debounce_ms 0 means the default (20 ms). */
watch_t *watch_start(uv_loop_t *loop, const char *script, unsigned debounce_ms,
                     watch_cb cb, void *ud);
/* Remembers the script's current content as already loaded (after a load that
 * did not come from the watch, e.g. at start-up or on SIGHUP). */
void watch_sync(watch_t *w);
void watch_stop(watch_t *w);

#endif
