/* cmd_replay: `luahook replay SCRIPT FILE...` feeds event files (either schema)
 * through the script exactly as the daemon would, without HTTP: decode with
 * eventgrid, run with dispatch, one line per event on stdout. The loop runs
 * until the script's timers and calls are done, then the next file. */
#include "arena.h"
#include "commands.h"
#include "config.h"
#include "dispatch.h"
#include "eventgrid.h"
#include "log.h"
#include "script.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <uv.h>

typedef struct tally {
  int done; /* dispatch called done */
  long ok, unhandled, failed;
} tally;

static const char *outcome_word(const event_outcome *o) {
  switch (o->st) {
  case TASK_OK:
    return o->handled ? "ok" : "no-handler";
  case TASK_ERROR:
    return "error";
  case TASK_REJECTED:
    return "rejected";
  case TASK_TIMEOUT:
    return "timeout";
  }
  return "error";
}

/* Prints n bytes of s on one line: control characters (a newline in an id) are
 * escaped, so each event stays one line. */
static void put_clean(const char *s, size_t n) {
  for (size_t i = 0; i < n && s[i]; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x20 || c == 0x7f)
      printf("\\x%02x", c);
    else
      putchar(c);
  }
}

static void on_event(void *ud, const event_outcome *o) {
  tally *t = ud;
  if (o->st == TASK_OK) {
    if (o->handled)
      t->ok++;
    else
      t->unhandled++;
  } else {
    t->failed++;
  }
  put_clean(o->ev->id, strlen(o->ev->id));
  putchar(' ');
  put_clean(o->ev->type, strlen(o->ev->type));
  printf(" %s %.1fms", outcome_word(o), o->ms);
  if (o->err && o->st != TASK_OK) {
    putchar(' ');
    put_clean(o->err, strcspn(o->err, "\n"));
  }
  putchar('\n');
  fflush(stdout);
}

static void on_done(void *ud, int status, const char *reason) {
  (void)status;
  (void)reason;
  ((tally *)ud)->done = 1;
}

/* Reads a whole file ("-" = standard input). Returns a malloc'd buffer (with a
 * NUL after the data) or NULL with errno set. */
static char *read_all(const char *path, size_t *len) {
  FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 65536, n = 0;
  char *buf = malloc(cap);
  while (buf) {
    if (n + 1 >= cap) {
      char *nb = realloc(buf, cap * 2);
      if (!nb) {
        free(buf);
        buf = NULL;
        errno = ENOMEM;
        break;
      }
      buf = nb;
      cap *= 2;
    }
    size_t r = fread(buf + n, 1, cap - 1 - n, f);
    n += r;
    if (r == 0) {
      if (ferror(f)) {
        int e = errno ? errno : EIO;
        free(buf);
        buf = NULL;
        errno = e;
      }
      break;
    }
  }
  if (f != stdin) fclose(f);
  if (buf) {
    buf[n] = '\0';
    *len = n;
  }
  return buf;
}

static int usage_error(const char *msg) {
  fprintf(stderr, "luahook: %s\n", msg);
  return 2;
}

/* One file: decode, dispatch, run the loop. Returns 0 if every event was ok (or
 * had no handler), 1 otherwise. */
static int replay_file(script_t *s, uv_loop_t *loop, const char *path, tally *total) {
  size_t len = 0;
  char *body = read_all(path, &len);
  if (!body) {
    printf("%s: error: cannot read: %s\n", path, strerror(errno));
    return 1;
  }
  delivery d = {.body = body, .len = len, .content_type = "application/json"};
  batch_t b;
  decode_error e;
  if (eventgrid_decode(&d, &b, &e) != 0) {
    printf("%s: error: %s\n", path, e.msg);
    fflush(stdout);
    free(body);
    return 1;
  }
  if (b.kind == BATCH_VALIDATION) {
    printf("%s: validation event (validationCode %s): answered by the daemon, not "
           "dispatched\n",
           path, b.validation_code);
    fflush(stdout);
    batch_free(&b);
    free(body);
    return 0;
  }
  if (b.n == 0) fprintf(stderr, "luahook: %s: no events\n", path);

  tally t = {0};
  dispatch_meta m = {.delivery_count = -1};
  dispatch_cbs cbs = {.done = on_done, .event = on_event};
  if (dispatch_run(s, &b, &m, &cbs, &t) != 0) {
    batch_free(&b);
    free(body);
    printf("%s: error: no script generation loaded\n", path);
    return 1;
  }
  /* Until no handle is left: pending handlers, their timers and calls. */
  uv_run(loop, UV_RUN_DEFAULT);
  free(body); /* the batch (which points into body) was freed by dispatch */
  total->ok += t.ok;
  total->unhandled += t.unhandled;
  total->failed += t.failed;
  if (!t.done) {
    printf("%s: error: the loop stopped before every event had settled\n", path);
    return 1;
  }
  return t.failed ? 1 : 0;
}

int cmd_replay(int argc, char **argv) {
  config c;
  char err[512];
  char **files = NULL;
  int nfiles = 0;
  config_defaults(&c);
  int r = config_parse(&c, "replay", argc, argv, err, sizeof err, &files, &nfiles);
  if (r != 0) {
    config_free(&c);
    return r == 1 ? 0 : usage_error(err);
  }
  struct stat st;
  if (stat(c.script, &st) != 0 || !S_ISREG(st.st_mode)) {
    snprintf(err, sizeof err, "script not found: %s", c.script);
    config_free(&c);
    return usage_error(err);
  }
  if (nfiles == 0) {
    config_free(&c);
    return usage_error("missing FILE (see 'luahook replay --help')");
  }
  for (int i = 0; i < nfiles; i++) {
    if (strcmp(files[i], "-") == 0) continue;
    const char *why = NULL;
    if (stat(files[i], &st) != 0)
      why = strerror(errno);
    else if (S_ISDIR(st.st_mode))
      why = "is a directory";
    if (why) {
      snprintf(err, sizeof err, "cannot read %s: %s", files[i], why);
      config_free(&c);
      return usage_error(err);
    }
  }
  log_setup((log_level)c.log_level, (log_format)c.log_format);

  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) {
    config_free(&c);
    fprintf(stderr, "luahook: cannot create the event loop\n");
    return 1;
  }
  script_t *s = open_script(&c, &loop);
  int rc = 0;
  if (!s) {
    rc = 1;
  } else {
    char *lerr = NULL;
    if (script_load(s, &lerr) != 0) {
      fprintf(stderr, "%s\n", lerr ? lerr : "error loading the script");
      free(lerr);
      rc = 1;
    } else {
      tally total = {0};
      for (int i = 0; i < nfiles; i++)
        if (replay_file(s, &loop, files[i], &total)) rc = 1;
      fprintf(stderr,
              "luahook: replayed %d file%s: %ld ok, %ld without handler, %ld failed\n",
              nfiles, nfiles == 1 ? "" : "s", total.ok, total.unhandled, total.failed);
    }
    script_free(s);
  }
  /* Close callbacks of handles the script's bindings released. */
  dispatch_shutdown();
  uv_run(&loop, UV_RUN_NOWAIT);
  arena_drain_pool();
  if (uv_loop_close(&loop) != 0) log_debug("replay: handles still open at exit");
  config_free(&c);
  return rc;
}
