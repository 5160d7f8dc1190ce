/* test_bind_http: the http module against a tiny HTTP server on the same uv loop:
 * a request round trip (status, headers, body with NULs), misuse outside a task,
 * cancellation when the task is abandoned, and shutdown with a transfer in flight.
 * The loop must close cleanly afterwards (every uv handle released). Most of the
 * behaviour (errors by class, TLS, limits, load) is covered by e2e/http_client. */
#include "check.h"
#include "bind_http.h"
#include "bind_timer.h"
#include "log.h"
#include "script.h"
#include "task.h"

#include <lauxlib.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

static uv_loop_t loop;
static script_t *S;
static char dir[64], path[128];

/* ------------------------------------------------------------ a tiny server */

typedef struct conn {
  uv_tcp_t tcp; /* first */
  char buf[65536];
  size_t len;
  int answered;
  struct conn *next;
} conn;

static uv_tcp_t listener;
static int port;
static conn *conns;
static int hanging; /* requests to /hang received */

static void conn_closed(uv_handle_t *h) {
  conn *c = (conn *)h;
  for (conn **p = &conns; *p; p = &(*p)->next)
    if (*p == c) {
      *p = c->next;
      break;
    }
  free(c);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  (void)hint;
  conn *c = (conn *)h;
  b->base = c->buf + c->len;
  b->len = sizeof c->buf - c->len - 1;
}

typedef struct wreq {
  uv_write_t w;
  char data[70000];
} wreq;

static void on_written(uv_write_t *w, int status) {
  (void)status;
  uv_close((uv_handle_t *)w->handle, conn_closed);
  free(w);
}

static void respond(conn *c, const char *status, const char *extra, const char *body,
                    size_t blen) {
  wreq *w = malloc(sizeof *w);
  CHECK(w != NULL);
  int n = snprintf(w->data, sizeof w->data,
                   "HTTP/1.1 %s\r\nContent-Length: %zu\r\nConnection: close\r\n%s\r\n",
                   status, blen, extra);
  memcpy(w->data + n, body, blen);
  uv_buf_t b = uv_buf_init(w->data, (unsigned)(n + (int)blen));
  uv_write(&w->w, (uv_stream_t *)&c->tcp, &b, 1, on_written);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  (void)b;
  conn *c = (conn *)s;
  if (n < 0) {
    if (!uv_is_closing((uv_handle_t *)s)) uv_close((uv_handle_t *)s, conn_closed);
    return;
  }
  c->len += (size_t)n;
  c->buf[c->len] = '\0';
  char *end = strstr(c->buf, "\r\n\r\n");
  if (!end || c->answered) return;
  size_t clen = 0;
  char *cl = strcasestr(c->buf, "\r\ncontent-length:");
  if (cl && cl < end) clen = strtoul(cl + 17, NULL, 10);
  const char *body = end + 4;
  if ((size_t)(c->buf + c->len - body) < clen) return;
  c->answered = 1;
  if (strncmp(c->buf, "GET /hang ", 10) == 0) {
    hanging++;
    return;
  }
  if (strncmp(c->buf, "POST /echo ", 11) == 0) {
    respond(c, "201 Created",
            "X-Echo: 1\r\nX-Echo: 2\r\nContent-Type: application/x-test\r\n", body, clen);
    return;
  }
  respond(c, "200 OK", "Content-Type: text/plain\r\n", "hello", 5);
}

static void on_conn(uv_stream_t *srv, int status) {
  CHECK(status == 0);
  conn *c = calloc(1, sizeof *c);
  CHECK(c != NULL);
  uv_tcp_init(&loop, &c->tcp);
  CHECK(uv_accept(srv, (uv_stream_t *)&c->tcp) == 0);
  c->next = conns;
  conns = c;
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void server_start(void) {
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", 0, &a);
  uv_tcp_init(&loop, &listener);
  CHECK(uv_tcp_bind(&listener, (struct sockaddr *)&a, 0) == 0);
  CHECK(uv_listen((uv_stream_t *)&listener, 64, on_conn) == 0);
  struct sockaddr_in got;
  int len = sizeof got;
  uv_tcp_getsockname(&listener, (struct sockaddr *)&got, &len);
  port = ntohs(got.sin_port);
}

static void server_stop(void) {
  uv_close((uv_handle_t *)&listener, NULL);
  for (conn *c = conns; c; c = c->next)
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
      uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

/* ------------------------------------------------------------ tasks */

static int ndone;
static task_status last_st;
static char last_err[2048];

static void on_done(task_t *t, task_status st, const char *err, void *ud) {
  (void)t;
  (void)ud;
  ndone++;
  last_st = st;
  snprintf(last_err, sizeof last_err, "%s", err ? err : "");
}

static void run_task(const char *code) {
  char full[4096];
  snprintf(full, sizeof full, "local BASE = 'http://127.0.0.1:%d'\n%s", port, code);
  task_t *t = task_new(S, script_options(S)->handler_timeout_ms, on_done, NULL);
  CHECK(t != NULL);
  lua_State *co = task_thread(t);
  CHECK(luaL_loadstring(co, full) == LUA_OK);
  gen_push_global(co, script_current(S), "_G");
  CHECK(lua_setupvalue(co, -2, 1) != NULL);
  task_run(t, 0);
}

static const char *eval(const char *expr) {
  static char buf[4096];
  lua_State *L = script_lua(S);
  char code[512];
  snprintf(code, sizeof code, "return tostring(%s)", expr);
  CHECK(luaL_loadstring(L, code) == LUA_OK);
  gen_push_global(L, script_current(S), "_G");
  CHECK(lua_setupvalue(L, -2, 1) != NULL);
  CHECK(lua_pcall(L, 0, 1, 0) == LUA_OK);
  snprintf(buf, sizeof buf, "%s", lua_tostring(L, -1));
  lua_pop(L, 1);
  return buf;
}

#define EXPECT_EQ(expr, want)                                                            \
  do {                                                                                   \
    const char *got_ = eval(expr);                                                       \
    if (strcmp(got_, want) != 0) {                                                       \
      fprintf(stderr, "%s:%d: %s = '%s', want '%s'\n", __FILE__, __LINE__, expr, got_,   \
              want);                                                                     \
      exit(1);                                                                           \
    }                                                                                    \
  } while (0)

/* Runs the loop until cond() holds (checked every 5 ms), at most ms. */
static int (*wait_cond)(void);
static void poll_cond(uv_timer_t *t) {
  if (wait_cond()) uv_stop(t->loop);
}
static void run_until(int (*cond)(void), uint64_t ms) {
  uv_timer_t t;
  uint64_t t0 = uv_hrtime();
  wait_cond = cond;
  uv_timer_init(&loop, &t);
  uv_timer_start(&t, poll_cond, 5, 5);
  while (!cond() && (uv_hrtime() - t0) / 1000000 < ms) uv_run(&loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&loop, UV_RUN_NOWAIT);
  CHECK(cond());
}

static script_t *spare; /* a second script, freed last */
static int want_done;
static int done_reached(void) {
  return ndone >= want_done;
}
static int hang_reached(void) {
  return hanging >= 1;
}

/* ------------------------------------------------------------ tests */

static void test_roundtrip(void) {
  ndone = 0;
  run_task(
      "local r = assert(http.get(BASE .. '/x'))\n"
      "out.get = r.status .. ' ' .. r.body .. ' ' .. r.headers['content-type']\n"
      "local p, err = http.post(BASE .. '/echo', 'a\\0b')\n"
      "assert(p, err)\n"
      "out.post = p.status .. ' ' .. #p.body .. ' ' .. p.headers['x-echo'] .. ' ' .. "
      "(p.body == 'a\\0b' and 'same' or 'different')\n"
      "local j = assert(http.post(BASE .. '/echo', {k = 'v'}))\n"
      "out.json = j.body\n");
  CHECK(ndone == 0);
  CHECK(bind_http_active() == 1);
  want_done = 1;
  run_until(done_reached, 5000);
  if (last_st != TASK_OK) fprintf(stderr, "%s\n", last_err);
  CHECK(last_st == TASK_OK);
  EXPECT_EQ("out.get", "200 hello text/plain");
  EXPECT_EQ("out.post", "201 3 1, 2 same");
  EXPECT_EQ("out.json", "{\"k\":\"v\"}");
  CHECK(bind_http_active() == 0);
}

static void test_misuse(void) {
  char *err = NULL;
  FILE *f = fopen(path, "w");
  fputs("http.get('http://127.0.0.1:1/')\n", f);
  fclose(f);
  CHECK(script_load(S, &err) != 0);
  CHECK(strstr(err, "http.get can only be called from a handler or a timer callback, not "
                    "while the script loads") != NULL);
  free(err);
  ndone = 0;
  run_task("local ok, e = pcall(http.request, {url = BASE, bogus = 1})\n"
           "assert(not ok and e:find(\"unknown option 'bogus'\"), e)\n"
           "ok, e = pcall(http.get, BASE, {headers = {['X-A'] = 'x\\ny'}})\n"
           "assert(not ok and e:find('line break'), e)\n");
  CHECK(ndone == 1);
  if (last_st != TASK_OK) fprintf(stderr, "%s\n", last_err);
  CHECK(last_st == TASK_OK);
  CHECK(bind_http_active() == 0);
}

/* The task times out while its request hangs: the transfer is cancelled and freed. */
static void test_cancel(void) {
  script_opts o = *script_options(S);
  o.handler_timeout_ms = 100;
  script_t *old = S;
  S = script_new(&loop, &o);
  CHECK(S != NULL);
  char *err = NULL;
  FILE *f = fopen(path, "w");
  fputs("out = {}\n", f);
  fclose(f);
  CHECK(script_load(S, &err) == 0);
  ndone = 0;
  hanging = 0;
  run_task("http.get(BASE .. '/hang')\nout.after = 'resumed'\n");
  CHECK(bind_http_active() == 1);
  want_done = 1;
  run_until(done_reached, 3000);
  CHECK(last_st == TASK_TIMEOUT);
  CHECK(hanging == 1);
  CHECK(bind_http_active() == 0);
  EXPECT_EQ("out.after", "nil");
  /* script_free shuts the process-wide http binding down: keep this script
   * until the end */
  spare = S;
  S = old;
}

static void test_shutdown(void) {
  ndone = 0;
  hanging = 0;
  run_task("local r, e = http.get(BASE .. '/hang')\nout.after = 'resumed'\n");
  run_until(hang_reached, 3000);
  CHECK(ndone == 0 && bind_http_active() == 1);
  bind_http_shutdown();
  CHECK(ndone == 1 && last_st == TASK_TIMEOUT);
  CHECK(strstr(last_err, "shutting down") != NULL);
  CHECK(bind_http_active() == 0);
  EXPECT_EQ("out.after", "nil");
  /* later requests fail at once */
  run_task("local r, e = http.get(BASE .. '/x')\nout.late = tostring(r) .. ' ' .. e\n");
  CHECK(ndone == 2 && last_st == TASK_OK);
  EXPECT_EQ("out.late", "nil error: shutting down");
  bind_http_shutdown(); /* idempotent */
}

int main(void) {
  snprintf(dir, sizeof dir, "/tmp/luahook-http-XXXXXX");
  CHECK(mkdtemp(dir) != NULL);
  snprintf(path, sizeof path, "%s/hook.lua", dir);
  FILE *f = fopen(path, "w");
  fputs("out = {}\n", f);
  fclose(f);
  setenv("NO_PROXY", "*", 1);
  CHECK(uv_loop_init(&loop) == 0);
  log_setup(LOG_DEBUG, LOG_TEXT);
  script_opts o = {.path = path, .cpu_budget = 1000000, .handler_timeout_ms = 5000};
  S = script_new(&loop, &o);
  CHECK(S != NULL);
  char *err = NULL;
  CHECK(script_load(S, &err) == 0);
  server_start();

  test_roundtrip();
  test_cancel();
  test_shutdown();
  test_misuse();

  server_stop();
  bind_timer_cancel_all();
  uv_run(&loop, UV_RUN_DEFAULT); /* every handle closes: nothing may keep the loop */
  script_free(spare);
  script_free(S);
  uv_run(&loop, UV_RUN_NOWAIT);
  CHECK(uv_loop_close(&loop) == 0);
  unlink(path);
  rmdir(dir);
  printf("test_bind_http: ok\n");
  return 0;
}
