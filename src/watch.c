/* watch: one uv_fs_event on the script's folder and one debounce timer. */
#include "watch.h"
#include "log.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_DEBOUNCE_MS 20

struct watch {
  uv_fs_event_t ev;
  uv_timer_t timer;
  char *path;
  char *base; /* file name of the script inside its folder */
  unsigned debounce_ms;
  watch_cb cb;
  void *ud;
  int script_changed;
  int module_changed;
  char module[256];
  uint64_t hash;
  int have_hash;
  int closing;
};

/* FNV-1a of the file's bytes; returns -1 when it cannot be read (being replaced). */
static int file_hash(const char *path, uint64_t *out) {
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  uint64_t h = 1469598103934665603ULL;
  unsigned char buf[8192];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0)
    for (size_t i = 0; i < n; i++) h = (h ^ buf[i]) * 1099511628211ULL;
  int err = ferror(f);
  fclose(f);
  if (err) return -1;
  *out = h;
  return 0;
}

static void on_quiet(uv_timer_t *t) {
  watch_t *w = t->data;
  uint64_t h;
  if (file_hash(w->path, &h) != 0) {
    /* deleted and not recreated yet: the recreation brings another event */
    w->script_changed = w->module_changed = 0;
    return;
  }
  int script = w->script_changed && (!w->have_hash || h != w->hash);
  int module = w->module_changed;
  w->script_changed = w->module_changed = 0;
  if (!script && !module) return;
  w->hash = h;
  w->have_hash = 1;
  char what[320];
  if (script)
    snprintf(what, sizeof what, "%s changed", w->base);
  else
    snprintf(what, sizeof what, "%s changed", w->module);
  w->cb(w->ud, what);
}

static int is_lua_file(const char *name) {
  size_t n = strlen(name);
  return n > 4 && name[0] != '.' && strcmp(name + n - 4, ".lua") == 0;
}

static void on_fs_event(uv_fs_event_t *h, const char *name, int events, int status) {
  (void)events;
  watch_t *w = h->data;
  if (status < 0) {
    log_warn("watching %s failed: %s", w->path, uv_strerror(status));
    return;
  }
  if (!name) return;
  if (strcmp(name, w->base) == 0) {
    w->script_changed = 1;
  } else if (is_lua_file(name)) {
    w->module_changed = 1;
    snprintf(w->module, sizeof w->module, "%s", name);
  } else {
    return;
  }
  uv_timer_start(&w->timer, on_quiet, w->debounce_ms, 0);
}

watch_t *watch_start(uv_loop_t *loop, const char *script, unsigned debounce_ms,
                     watch_cb cb, void *ud) {
  watch_t *w = calloc(1, sizeof *w);
  if (!w) return NULL;
  w->path = strdup(script);
  const char *slash = strrchr(script, '/');
  w->base = strdup(slash ? slash + 1 : script);
  char *dir = slash ? strndup(script, (size_t)(slash - script)) : strdup(".");
  if (!w->path || !w->base || !dir) {
    free(dir);
    free(w->path);
    free(w->base);
    free(w);
    return NULL;
  }
  if (dir[0] == '\0') { /* "/x.lua" */
    free(dir);
    dir = strdup("/");
  }
  w->debounce_ms = debounce_ms ? debounce_ms : DEFAULT_DEBOUNCE_MS;
  w->cb = cb;
  w->ud = ud;
  uv_fs_event_init(loop, &w->ev);
  uv_timer_init(loop, &w->timer);
  w->ev.data = w->timer.data = w;
  int r = uv_fs_event_start(&w->ev, on_fs_event, dir, 0);
  if (r < 0) {
    log_warn("cannot watch %s for changes (%s): reload with SIGHUP", dir, uv_strerror(r));
    free(dir);
    watch_stop(w);
    return NULL;
  }
  free(dir);
  watch_sync(w);
  return w;
}

void watch_sync(watch_t *w) {
  if (w && file_hash(w->path, &w->hash) == 0) w->have_hash = 1;
}

static void on_closed(uv_handle_t *h) {
  watch_t *w = h->data;
  if (--w->closing > 0) return;
  free(w->path);
  free(w->base);
  free(w);
}

void watch_stop(watch_t *w) {
  if (!w) return;
  w->closing = 2;
  uv_close((uv_handle_t *)&w->ev, on_closed);
  uv_close((uv_handle_t *)&w->timer, on_closed);
}
