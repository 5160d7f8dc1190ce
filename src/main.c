/* main: the luahook command: run, check, version (and the sub-command table). */
#include "commands.h"
#include "config.h"
#include "arena.h"
#include "bind_http.h"
#include "bind_timer.h"
#include "dispatch.h"
#include "log.h"
#include "router.h"
#include "script.h"
#include "server.h"
#include "task.h"
#include "watch.h"

#include <lauxlib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

typedef struct luahookd {
  config cfg;
  uv_loop_t *loop;
  script_t *script;
  router_t *router;
  server_t *server;
  uv_signal_t sigint, sigterm, sighup;
  uv_timer_t drain;
  watch_t *watch;
  int stopping;
  int grace_over;
  uint64_t stop_started;
} luahookd;

static int usage_error(const char *msg) {
  fprintf(stderr, "luahook: %s\n", msg);
  return 2;
}

/* Shared by run, check and replay: options, then the script must exist. */
static int parse(config *c, const char *cmd, int argc, char **argv, char ***extra,
                 int *nextra) {
  char err[512];
  config_defaults(c);
  int r = config_parse(c, cmd, argc, argv, err, sizeof err, extra, nextra);
  if (r == 1) return 1;
  if (r < 0) return usage_error(err) + 1; /* 3 -> exit 2 */
  struct stat st;
  if (stat(c->script, &st) != 0 || !S_ISREG(st.st_mode)) {
    snprintf(err, sizeof err, "script not found: %s", c->script);
    return usage_error(err) + 1;
  }
  log_setup((log_level)c->log_level, (log_format)c->log_format);
  return 0;
}

script_t *open_script(const config *c, uv_loop_t *loop) {
  script_opts so = {c->script, c->cpu_budget, c->cpu_slice_ms, c->lua_memory,
                    c->handler_timeout_ms};
  script_t *s = script_new(loop, &so);
  if (!s) fprintf(stderr, "luahook: cannot create the Lua state\n");
  return s;
}

/* ------------------------------------------------------------ run */

/* Shutdown, in steps: stop accepting and stop periodic timers; wait for the
 * requests in progress and their connections (up to --shutdown-grace-ms); run
 * on_shutdown(); then close everything so the loop ends and memory is freed. */
static void on_server_closed(void *arg) {
  luahookd *d = arg;
  d->server = NULL;
  watch_stop(d->watch);
  d->watch = NULL;
  uv_close((uv_handle_t *)&d->sigint, NULL);
  uv_close((uv_handle_t *)&d->sigterm, NULL);
  uv_close((uv_handle_t *)&d->sighup, NULL);
  uv_close((uv_handle_t *)&d->drain, NULL);
}

static void close_all(luahookd *d) {
  bind_timer_cancel_all();
  bind_http_shutdown();
  log_info("stopped");
  server_close(d->server, on_server_closed, d);
}

static void on_shutdown_done(task_t *t, task_status st, const char *err, void *ud) {
  (void)t;
  luahookd *d = ud;
  if (st != TASK_OK)
    log_write(LOG_ERROR, "on_shutdown failed", (log_kv[]){{"error", err}}, 1);
  if (d->grace_over) { /* requests still hang on: no clean teardown is possible */
    log_warn("exiting with requests still in progress");
    _exit(0);
  }
  close_all(d);
}

static void run_on_shutdown(luahookd *d) {
  gen_t *g = script_current(d->script);
  if (!g || !gen_has_hook(g, HOOK_SHUTDOWN)) {
    on_shutdown_done(NULL, TASK_OK, NULL, d);
    return;
  }
  uint64_t timeout = d->cfg.handler_timeout_ms ? d->cfg.handler_timeout_ms : 5000;
  task_t *t = task_new(d->script, timeout, on_shutdown_done, d);
  if (!t) {
    on_shutdown_done(NULL, TASK_ERROR, "out of memory", d);
    return;
  }
  gen_push_global(task_thread(t), g, "on_shutdown");
  task_run(t, 0);
}

static void drain_check(uv_timer_t *t) {
  luahookd *d = t->data;
  int busy = server_pending(d->server) + server_connections(d->server);
  if (busy && uv_now(d->loop) - d->stop_started < d->cfg.shutdown_grace_ms) return;
  uv_timer_stop(t);
  if (busy) {
    log_warn("shutdown grace period over with %d requests still in progress",
             server_pending(d->server));
    d->grace_over = server_pending(d->server) > 0;
  }
  run_on_shutdown(d);
}

static void on_stop_signal(uv_signal_t *h, int signum) {
  luahookd *d = h->data;
  if (d->stopping) {
    log_warn("second signal: exiting now");
    _exit(1);
  }
  d->stopping = 1;
  d->stop_started = uv_now(d->loop);
  log_info("%s: finishing requests in progress", signum == SIGINT ? "SIGINT" : "SIGTERM");
  server_stop_accepting(d->server);
  bind_timer_shutdown();
  uv_timer_start(&d->drain, drain_check, 0, 20);
}

static void reload(luahookd *d, const char *why) {
  char *err = NULL;
  uint64_t t0 = uv_hrtime();
  if (script_load(d->script, &err) == 0) {
    char ms[32], gen[16];
    snprintf(ms, sizeof ms, "%.1f", (double)(uv_hrtime() - t0) / 1e6);
    snprintf(gen, sizeof gen, "%u", gen_id(script_current(d->script)));
    log_write(LOG_INFO, "script reloaded",
              (log_kv[]){{"reason", why}, {"generation", gen}, {"ms", ms}}, 3);
    router_note_reload(d->router, NULL);
  } else {
    log_write(LOG_ERROR, "reload failed, previous code keeps serving",
              (log_kv[]){{"reason", why}, {"error", err}}, 2);
    router_note_reload(d->router, err);
    free(err);
  }
}

static void on_sighup(uv_signal_t *h, int signum) {
  (void)signum;
  luahookd *d = h->data;
  reload(d, "SIGHUP");
  watch_sync(d->watch);
}

static void on_file_change(void *ud, const char *what) {
  reload(ud, what);
}

static int is_loopback(const char *host) {
  return strncmp(host, "127.", 4) == 0 || strcmp(host, "::1") == 0 ||
         strcmp(host, "localhost") == 0;
}

static int cmd_run(int argc, char **argv) {
  luahookd d;
  memset(&d, 0, sizeof d);
  int r = parse(&d.cfg, "run", argc, argv, NULL, NULL);
  if (r) return r == 1 ? 0 : 2;
  signal(SIGPIPE, SIG_IGN);
  d.loop = uv_default_loop();
  d.script = open_script(&d.cfg, d.loop);
  if (!d.script) return 1;
  char *err = NULL;
  if (script_load(d.script, &err) != 0) {
    fprintf(stderr, "luahook: %s\n", err);
    free(err);
    script_free(d.script);
    config_free(&d.cfg);
    return 1;
  }
  d.router = router_new(&d.cfg, d.script);
  /* Signals first: a SIGTERM right after the listening line must stop us cleanly. */
  uv_signal_init(d.loop, &d.sigint);
  uv_signal_init(d.loop, &d.sigterm);
  uv_signal_init(d.loop, &d.sighup);
  uv_timer_init(d.loop, &d.drain);
  d.sigint.data = d.sigterm.data = d.sighup.data = d.drain.data = &d;
  uv_signal_start(&d.sigint, on_stop_signal, SIGINT);
  uv_signal_start(&d.sigterm, on_stop_signal, SIGTERM);
  uv_signal_start(&d.sighup, on_sighup, SIGHUP);

  server_opts so = {d.cfg.host,
                    d.cfg.port,
                    d.cfg.max_body,
                    d.cfg.max_header,
                    d.cfg.max_connections,
                    d.cfg.header_timeout_ms,
                    d.cfg.body_timeout_ms,
                    d.cfg.idle_timeout_ms};
  server_handler h = router_handler(d.router);
  d.server = server_new(d.loop, &so, &h);
  char msg[512];
  if (!d.router || !d.server || server_listen(d.server, msg, sizeof msg) != 0) {
    fprintf(stderr, "luahook: %s\n", d.server ? msg : "out of memory");
    return 1;
  }
  if (d.cfg.secrets.n == 0 && !is_loopback(d.cfg.host))
    log_warn("no --secret set while listening on %s: anyone who can reach this port can "
             "deliver events",
             d.cfg.host);
  char url[400];
  snprintf(url, sizeof url, "http://%s%s%s:%d%s", strchr(d.cfg.host, ':') ? "[" : "",
           d.cfg.host, strchr(d.cfg.host, ':') ? "]" : "", server_port(d.server),
           d.cfg.path);
  router_set_server(d.router, d.server);
  if (dispatch_set_dedup(d.cfg.dedup_window) != 0) {
    fprintf(stderr, "luahook: no memory for a dedup window of %zu events\n",
            d.cfg.dedup_window);
    return 1;
  }
  if (d.cfg.reload) d.watch = watch_start(d.loop, d.cfg.script, 0, on_file_change, &d);
  log_notice("listening on %s (script %s%s)", url, d.cfg.script,
             d.watch ? ", reloads on change" : "");

  uv_run(d.loop, UV_RUN_DEFAULT);
  router_free(d.router);
  script_free(d.script);
  dispatch_shutdown();
  uv_run(d.loop, UV_RUN_NOWAIT); /* close callbacks of the last handles */
  arena_drain_pool();
  uv_loop_close(d.loop);
  config_free(&d.cfg);
  return 0;
}

/* ------------------------------------------------------------ check */

static int cmd_check(int argc, char **argv) {
  config c;
  int r = parse(&c, "check", argc, argv, NULL, NULL);
  if (r) return r == 1 ? 0 : 2;
  uv_loop_t *loop = uv_default_loop();
  script_t *s = open_script(&c, loop);
  if (!s) return 1;
  char *err = NULL;
  int rc = 0;
  if (script_load(s, &err) != 0) {
    fprintf(stderr, "%s\n", err);
    free(err);
    rc = 1;
  } else {
    gen_t *g = script_current(s);
    printf("%s: ok; hooks:", c.script);
    int any = 0;
    for (int h = 0; h < HOOK_COUNT; h++)
      if (gen_has_hook(g, h)) {
        printf(" %s", script_hook_names[h]);
        any = 1;
      }
    printf("%s\n", any ? "" : " none (every event is acknowledged without a handler)");
  }
  script_free(s);
  uv_run(loop, UV_RUN_NOWAIT);
  uv_loop_close(loop);
  config_free(&c);
  return rc;
}

/* ------------------------------------------------------------ main */

static void usage(FILE *f) {
  fprintf(f, "usage: luahook <command> [arguments]\n\n"
             "commands:\n"
             "  run SCRIPT [options]        receive deliveries and run SCRIPT's hooks\n"
             "  check SCRIPT                compile and load SCRIPT, list its hooks\n"
             "  replay SCRIPT FILE...       run event files through SCRIPT without HTTP\n"
             "  send URL FILE...            deliver event files like Event Grid does\n"
             "  version                     print the version\n\n"
             "'luahook <command> --help' shows a command's options.\n");
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "run") == 0) return cmd_run(argc - 2, argv + 2);
  if (strcmp(cmd, "check") == 0) return cmd_check(argc - 2, argv + 2);
  if (strcmp(cmd, "replay") == 0) return cmd_replay(argc - 2, argv + 2);
  if (strcmp(cmd, "send") == 0) return cmd_send(argc - 2, argv + 2);
  if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
    printf("luahook %s (%s, libuv %s, llhttp)\n", LUAHOOK_VERSION, LUA_RELEASE,
           uv_version_string());
    return 0;
  }
  if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
    usage(stdout);
    return 0;
  }
  fprintf(stderr, "luahook: unknown command '%s' (see 'luahook --help')\n", cmd);
  return 2;
}
