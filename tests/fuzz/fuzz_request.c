/* fuzz_request: libFuzzer target for the whole request path (server -> router ->
 * eventgrid -> dispatch -> Lua) over a real loopback TCP connection.
 *
 * Once per process: a libuv loop, a temporary Lua script whose handlers do a little
 * work (read ev.data, json.encode/decode, error(), luahook.reject(), timer.sleep,
 * a CPU and a memory hog), script_load, router_new and server_new on 127.0.0.1 with
 * an ephemeral port and small limits.
 *
 * Per input: the bytes are a raw HTTP/1.1 client stream (possibly several
 * pipelined requests). A non-blocking client socket connects, writes them, shuts
 * down its write side and reads until the server closes, while the loop runs
 * (poll() on the client socket and the loop's backend fd). Then it checks:
 *   - the server closed the connection within 2 s (else: hang);
 *   - no request is left pending, no event in flight, and no libuv handle but the
 *     listener is left once the loop settles;
 *   - the response stream is well-formed HTTP/1.1 as parsed by llhttp (every final
 *     response has Content-Length, a known reason phrase, and there are no more
 *     final responses than requests + 1).
 * A response to HEAD must have no body (RFC 9110 9.3.2; finding F1): the oracle
 * knows each request's method from its own llhttp pass over the input.
 * LUAHOOK_FUZZ_LOG=1 turns the daemon's log on (stderr).
 * dictionary: http.dict (scripts/fuzz.sh passes it)
 * ctest smoke: 60 s
 */
#include "config.h"
#include "dispatch.h"
#include "log.h"
#include "router.h"
#include "script.h"
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <llhttp.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#define DEADLINE_NS (2000ull * 1000 * 1000)
#define MAX_METHODS 512

#define FAIL(...)                                                                        \
  do {                                                                                   \
    fprintf(stderr, "fuzz_request: check failed at %s:%d: ", __FILE__, __LINE__);        \
    fprintf(stderr, __VA_ARGS__);                                                        \
    fputc('\n', stderr);                                                                 \
    abort();                                                                             \
  } while (0)

static const char SCRIPT[] =
    "-- fuzz_request's script: handlers that touch the event as real ones do.\n"
    "heavy = 0 -- set to 1 by fuzz_reset before each input: one costly action\n"
    "function fuzz_reset() heavy = 1 end\n"
    "local function touch(ev)\n"
    "  local d = ev.data\n"
    "  local s = json.encode({id = ev.id, type = ev.type, subject = ev.subject,\n"
    "                        source = ev.source, time = ev.time, data = d})\n"
    "  if type(d) == 'table' then\n"
    "    local n = 0\n"
    "    for k, v in pairs(d) do n = n + 1; if n > 64 then break end end\n"
    "    if d.hubName then local _ = tostring(d.hubName) .. tostring(d.connectionId) "
    "end\n"
    "  end\n"
    "  if ev.raw and #ev.raw > 0 then json.decode(ev.raw) end\n"
    "  state.events = (state.events or 0) + 1\n"
    "  return s\n"
    "end\n"
    "function on_event(ev)\n"
    "  touch(ev)\n"
    "  local t = ev.type\n"
    "  if t == 'Fuzz.Error' then error('handler error for ' .. tostring(ev.id)) end\n"
    "  if t == 'Fuzz.Reject' then luahook.reject('rejected ' .. tostring(ev.id)) end\n"
    "  if t == 'Fuzz.Sleep' then timer.sleep(0) end\n"
    "  if t == 'Fuzz.Yield' then coroutine.yield() end\n"
    "  if t == 'Fuzz.Pcall' then pcall(error, {}) end\n"
    "  if heavy > 0 then\n"
    "    if t == 'Fuzz.Slow' then heavy = 0; timer.sleep(50) end -- past the timeout\n"
    "    if t == 'Fuzz.Loop' then heavy = 0; local x = 0; for i = 1, 1e8 do x = x + i "
    "end end\n"
    "    if t == 'Fuzz.Alloc' then heavy = 0; local a = {}\n"
    "      for i = 1, 1e6 do a[i] = string.rep('x', 64) .. i end end\n"
    "  end\n"
    "end\n"
    "function on_connected(ev)\n"
    "  touch(ev)\n"
    "  state.conns = (state.conns or 0) + 1\n"
    "end\n"
    "function on_disconnected(ev)\n"
    "  touch(ev)\n"
    "  state.conns = (state.conns or 0) - 1\n"
    "  if ev.data.errorMessage == 'boom' then error('disconnected: boom') end\n"
    "  if ev.data.errorMessage == 'reject' then luahook.reject('no') end\n"
    "end\n";

static uv_loop_t loop;
static config cfg;
static script_t *script;
static router_t *router;
static server_t *srv;
static int port;
static char script_path[64];

static void remove_script(void) {
  if (script_path[0]) unlink(script_path);
}

static void init(void) {
  signal(SIGPIPE, SIG_IGN);
  const char *lg = getenv("LUAHOOK_FUZZ_LOG");
  log_setup(lg && *lg == '1' ? LOG_DEBUG : (log_level)(LOG_ERROR + 1), LOG_TEXT);
  if (uv_loop_init(&loop) != 0) FAIL("uv_loop_init");

  snprintf(script_path, sizeof script_path, "/tmp/luahook-fuzz-XXXXXX.lua");
  int fd = mkstemps(script_path, 4);
  if (fd < 0) FAIL("mkstemps: %s", strerror(errno));
  atexit(remove_script);
  if (write(fd, SCRIPT, sizeof SCRIPT - 1) != (ssize_t)(sizeof SCRIPT - 1))
    FAIL("write script");
  close(fd);

  config_defaults(&cfg);
  cfg.script = script_path;
  snprintf(cfg.host, sizeof cfg.host, "127.0.0.1");
  cfg.port = 0;
  cfg.path = "/api/events";
  cfg.secrets.v[0] = "fuzz-secret";
  cfg.secrets.n = 1;
  cfg.subscriptions.v[0] = "fuzz-sub";
  cfg.subscriptions.n = 1;
  cfg.origins.v[0] = "eventgrid.azure.net";
  cfg.origins.n = 1;
  cfg.max_body = 64 * 1024;
  cfg.max_header = 4096;
  cfg.max_connections = 8;
  cfg.header_timeout_ms = 1000;
  cfg.body_timeout_ms = 1000;
  cfg.idle_timeout_ms = 1000;
  cfg.cpu_budget = 200000;
  cfg.lua_memory = 32u << 20;
  cfg.handler_timeout_ms = 20;

  script_opts so = {.path = cfg.script,
                    .cpu_budget = cfg.cpu_budget,
                    .mem_limit = cfg.lua_memory,
                    .handler_timeout_ms = cfg.handler_timeout_ms};
  script = script_new(&loop, &so);
  if (!script) FAIL("script_new");
  char *err = NULL;
  if (script_load(script, &err) != 0) FAIL("script_load: %s", err);
  router = router_new(&cfg, script);
  if (!router) FAIL("router_new");
  server_opts o = {.host = cfg.host,
                   .port = 0,
                   .max_body = cfg.max_body,
                   .max_header = cfg.max_header,
                   .max_connections = cfg.max_connections,
                   .header_timeout_ms = cfg.header_timeout_ms,
                   .body_timeout_ms = cfg.body_timeout_ms,
                   .idle_timeout_ms = cfg.idle_timeout_ms};
  server_handler h = router_handler(router);
  srv = server_new(&loop, &o, &h);
  if (!srv) FAIL("server_new");
  router_set_server(router, srv);
  char msg[256];
  if (server_listen(srv, msg, sizeof msg) != 0) FAIL("server_listen: %s", msg);
  port = server_port(srv);
}

/* Calls the script's fuzz_reset() (protected): one costly action per input. */
static void reset_script(void) {
  lua_State *L = script_lua(script);
  int top = lua_gettop(L);
  gen_push_global(L, script_current(script), "fuzz_reset");
  if (lua_pcall(L, 0, 0, 0) != LUA_OK) FAIL("fuzz_reset: %s", lua_tostring(L, -1));
  lua_settop(L, top);
}

/* ------------------------------------------------------------ the oracle */

typedef struct oracle {
  /* the request stream, as llhttp (the server's parser) sees it */
  llhttp_t req;
  llhttp_settings_t req_cb;
  int begun;
  int nmethods;
  unsigned char methods[MAX_METHODS];
  /* the response stream */
  llhttp_t resp;
  llhttp_settings_t resp_cb;
  int finals;
  char reason[64];
  size_t reason_len;
  const uint8_t *input;
  size_t input_len;
  size_t seen; /* response bytes */
} oracle;

static oracle orc;

static int rq_begin(llhttp_t *p) {
  (void)p;
  orc.begun++;
  return 0;
}

static int rq_headers(llhttp_t *p) {
  if (orc.nmethods < MAX_METHODS) orc.methods[orc.nmethods++] = llhttp_get_method(p);
  return 0;
}

static int rs_begin(llhttp_t *p) {
  (void)p;
  orc.reason_len = 0;
  return 0;
}

static int rs_status(llhttp_t *p, const char *at, size_t len) {
  (void)p;
  size_t room = sizeof orc.reason - 1 - orc.reason_len;
  if (len > room) len = room;
  memcpy(orc.reason + orc.reason_len, at, len);
  orc.reason_len += len;
  return 0;
}

static void dump_and_fail(const char *why) {
  FAIL("%s (response byte %zu, %d final responses, %d requests begun)", why, orc.seen,
       orc.finals, orc.begun);
}

static int rs_headers(llhttp_t *p) {
  int st = p->status_code;
  orc.reason[orc.reason_len] = '\0';
  if (st >= 100 && st < 200) return 0; /* interim (100 Continue): no body */
  if (strcmp(orc.reason, "Unknown") == 0) {
    fprintf(stderr, "status %d has no reason phrase in server_status_text\n", st);
    dump_and_fail("unknown status");
  }
  if (!(p->flags & F_CONTENT_LENGTH))
    dump_and_fail("final response without Content-Length");
  int k = orc.finals++;
  if (orc.finals > orc.begun + 1) dump_and_fail("more responses than requests");
  if (k < orc.nmethods && orc.methods[k] == HTTP_HEAD) return 1; /* no body follows */
  return 0;
}

static void oracle_start(const uint8_t *data, size_t size) {
  memset(&orc, 0, sizeof orc);
  llhttp_settings_init(&orc.req_cb);
  orc.req_cb.on_message_begin = rq_begin;
  orc.req_cb.on_headers_complete = rq_headers;
  llhttp_init(&orc.req, HTTP_REQUEST, &orc.req_cb);
  llhttp_execute(&orc.req, (const char *)data, size); /* stops at the first error */
  llhttp_settings_init(&orc.resp_cb);
  orc.resp_cb.on_message_begin = rs_begin;
  orc.resp_cb.on_status = rs_status;
  orc.resp_cb.on_headers_complete = rs_headers;
  llhttp_init(&orc.resp, HTTP_RESPONSE, &orc.resp_cb);
  orc.input = data;
  orc.input_len = size;
}

static void oracle_feed(const char *buf, size_t n) {
  orc.seen += n;
  llhttp_errno_t err = llhttp_execute(&orc.resp, buf, n);
  if (err == HPE_OK) return;
  fprintf(stderr, "llhttp: %s: %s\n", llhttp_errno_name(err),
          llhttp_get_error_reason(&orc.resp));
  dump_and_fail("malformed response stream");
}

/* ------------------------------------------------------------ the loop */

/* Active handles: a request must leave none behind. (Inactive ones may stay: the
 * dispatcher keeps its idle handle, stopped, for the life of the process.) */
static void count_handle(uv_handle_t *h, void *arg) {
  if (uv_is_active(h) && !uv_is_closing(h)) ++*(int *)arg;
}

static int handles(void) {
  int n = 0;
  uv_walk(&loop, count_handle, &n);
  return n;
}

/* Waits up to ms for the client socket (events) or the loop, then runs the loop. */
static void pump(int fd, short events, int ms) {
  struct pollfd p[2] = {{fd, events, 0}, {uv_backend_fd(&loop), POLLIN, 0}};
  int t = uv_backend_timeout(&loop);
  if (t < 0 || t > ms) t = ms;
  poll(fd >= 0 ? p : p + 1, fd >= 0 ? 2 : 1, t);
  uv_run(&loop, UV_RUN_NOWAIT);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static char buf[64 * 1024];
  if (!srv) init();
  reset_script();
  oracle_start(data, size);
  uint64_t deadline = uv_hrtime() + DEADLINE_NS;

  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) FAIL("socket: %s", strerror(errno));
  /* close() sends RST: no TIME_WAIT piles up over millions of connections */
  struct linger lg = {1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 && errno != EINPROGRESS)
    FAIL("connect: %s", strerror(errno));
  for (;;) { /* until connected */
    struct pollfd p = {fd, POLLOUT, 0};
    if (poll(&p, 1, 0) == 1) {
      int soerr = 0;
      socklen_t sl = sizeof soerr;
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
      if (soerr) FAIL("connect: %s", strerror(soerr));
      break;
    }
    if (uv_hrtime() > deadline) FAIL("connect timed out");
    pump(fd, POLLOUT, 10);
  }

  size_t off = 0;
  int shut = 0, eof = 0;
  while (!eof) {
    while (!shut) {
      if (off < size) {
        ssize_t n = send(fd, data + off, size - off, MSG_NOSIGNAL);
        if (n > 0) {
          off += (size_t)n;
          continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) break;
        off = size; /* reset by the server: stop writing */
      }
      shutdown(fd, SHUT_WR);
      shut = 1;
    }
    for (;;) {
      ssize_t n = recv(fd, buf, sizeof buf, 0);
      if (n > 0) {
        oracle_feed(buf, (size_t)n);
        continue;
      }
      if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) eof = 1;
      break;
    }
    if (eof) break;
    if (uv_hrtime() > deadline)
      FAIL("the server did not close the connection within 2 s (%zu of %zu bytes "
           "written, %zu response bytes read, pending %d, connections %d)",
           off, size, orc.seen, server_pending(srv), server_connections(srv));
    pump(fd, (short)(POLLIN | (shut ? 0 : POLLOUT)), 10);
  }
  close(fd);

  /* Let the server see the close and settle: nothing pending, only the listener. */
  for (;;) {
    uv_run(&loop, UV_RUN_NOWAIT);
    if (server_connections(srv) == 0 && server_pending(srv) == 0 &&
        dispatch_inflight() == 0 && handles() == 1)
      break;
    if (uv_hrtime() > deadline)
      FAIL("the loop did not settle within 2 s: pending %d, connections %d, events in "
           "flight %ld, handles %d (want 1: the listener)",
           server_pending(srv), server_connections(srv), dispatch_inflight(), handles());
    pump(-1, 0, 5);
  }
  return 0;
}
