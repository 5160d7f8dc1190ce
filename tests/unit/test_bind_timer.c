/* test_bind_timer: the timer module on a real uv loop and script_t: ordering,
 * cancel, every, sleep, errors in callbacks, timeouts, generations at reload,
 * shutdown. Tasks are driven directly (task_new/task_run), as dispatch does. */
#include "check.h"
#include "bind_timer.h"
#include "log.h"
#include "script.h"
#include "task.h"

#include <lauxlib.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

static uv_loop_t loop;
static script_t *S;
static char dir[64];
static char path[128];

static void write_script(const char *code) {
  FILE *f = fopen(path, "w");
  CHECK(f != NULL);
  fputs(code, f);
  fclose(f);
}

static void load(const char *code) {
  char *err = NULL;
  write_script(code);
  if (script_load(S, &err) != 0) {
    fprintf(stderr, "load failed: %s\n", err);
    exit(1);
  }
}

/* ------------------------------------------------------------ tasks */

static int ntasks_done;
static task_status last_st;
static char last_err[4096];

static void on_done(task_t *t, task_status st, const char *err, void *ud) {
  (void)t;
  (void)ud;
  ntasks_done++;
  last_st = st;
  snprintf(last_err, sizeof last_err, "%s", err ? err : "");
}

/* Runs Lua code as a task. The chunk's _ENV is the current generation's globals,
 * so it sees the script's functions (rec, out, ...). */
static void run_task_env(const char *code, const char *env) {
  task_t *t = task_new(S, script_options(S)->handler_timeout_ms, on_done, NULL);
  CHECK(t != NULL);
  lua_State *co = task_thread(t);
  CHECK(luaL_loadstring(co, code) == LUA_OK);
  if (env && strcmp(env, "base") == 0) { /* like a function from a module */
    lua_pushglobaltable(co);
    CHECK(lua_setupvalue(co, -2, 1) != NULL);
  } else if (env) { /* _ENV = state[env] */
    lua_getglobal(co, "state");
    lua_getfield(co, -1, env);
    lua_remove(co, -2);
    CHECK(lua_setupvalue(co, -2, 1) != NULL);
  } else { /* like a handler the script defined: the current generation */
    gen_push_global(co, script_current(S), "_G");
    CHECK(lua_setupvalue(co, -2, 1) != NULL);
  }
  task_run(t, 0);
}

static void run_task(const char *code) {
  run_task_env(code, NULL);
}

/* Evaluates a Lua expression in the current generation (outside any task) and
 * returns it as a static string. */
static const char *eval(const char *expr) {
  static char buf[4096];
  lua_State *L = script_lua(S);
  char code[1024];
  snprintf(code, sizeof code, "return tostring(%s)", expr);
  CHECK(luaL_loadstring(L, code) == LUA_OK);
  gen_push_global(L, script_current(S), "_G");
  CHECK(lua_setupvalue(L, -2, 1) != NULL);
  if (lua_pcall(L, 0, 1, 0) != LUA_OK) {
    fprintf(stderr, "eval %s: %s\n", expr, lua_tostring(L, -1));
    exit(1);
  }
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

static void stop_loop(uv_timer_t *t) {
  uv_stop(t->loop);
}

/* Runs the loop for ms milliseconds (or until nothing is left, if sooner). */
static void run_for(uint64_t ms) {
  uv_timer_t t;
  uv_timer_init(&loop, &t);
  uv_timer_start(&t, stop_loop, ms, 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&loop, UV_RUN_NOWAIT);
}

/* ------------------------------------------------------------ stderr capture */

static int saved_stderr = -1;
static char cap_path[128];

static void capture_begin(void) {
  fflush(stderr);
  snprintf(cap_path, sizeof cap_path, "%s/stderr.txt", dir);
  int fd = open(cap_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  CHECK(fd >= 0);
  saved_stderr = dup(2);
  dup2(fd, 2);
  close(fd);
}

static char *capture_end(void) {
  fflush(stderr);
  dup2(saved_stderr, 2);
  close(saved_stderr);
  static char buf[16384];
  FILE *f = fopen(cap_path, "r");
  CHECK(f != NULL);
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = '\0';
  fclose(f);
  fputs(buf, stderr); /* keep it visible in the test log */
  return buf;
}

/* ------------------------------------------------------------ tests */

static const char *BASE = "out = {}\n"
                          "function rec(x) out[#out + 1] = tostring(x) end\n"
                          "function got() return table.concat(out, ',') end\n";

static void test_order(void) {
  load(BASE);
  run_task("timer.after(30, function() rec(30) end)\n"
           "timer.after(10, function() rec(10) end)\n"
           "timer.after(20, function() rec(20) end)\n"
           "timer.after(0, function() rec(0) end)\n");
  CHECK(ntasks_done == 1 && last_st == TASK_OK);
  CHECK(bind_timer_pending() == 4);
  uv_run(&loop, UV_RUN_DEFAULT); /* returns once every timer fired */
  EXPECT_EQ("got()", "0,10,20,30");
  CHECK(bind_timer_pending() == 0);
}

static void test_cancel(void) {
  load(BASE);
  run_task("local h = timer.after(10, function() rec('cancelled') end)\n"
           "rec(tostring(h):match('pending') and 'pending' or tostring(h))\n"
           "rec(h:cancel())\n"
           "rec(h:cancel())\n" /* idempotent */
           "rec(tostring(h))\n"
           /* a dropped handle still fires */
           "timer.after(5, function() rec('dropped fired') end)\n"
           "collectgarbage() collectgarbage()\n"
           "local h2 = timer.after(1, function() rec('fired') end)\n"
           "state.h2 = h2\n");
  uv_run(&loop, UV_RUN_DEFAULT);
  EXPECT_EQ("got()", "pending,true,false,timer (done),fired,dropped fired");
  EXPECT_EQ("state.h2:cancel()", "false"); /* cancel after firing: a no-op */
  EXPECT_EQ("(function() state.h2 = nil return 1 end)()", "1");
}

static void test_every(void) {
  load(BASE);
  run_task("local n, h = 0\n"
           "h = timer.every(5, function()\n"
           "  n = n + 1; rec('e' .. n)\n"
           "  if n == 4 then rec(h:cancel()) end\n"
           "end)\n");
  uv_run(&loop, UV_RUN_DEFAULT);
  EXPECT_EQ("got()", "e1,e2,e3,e4,true");
  /* every(0) is clamped to 1 ms instead of spinning */
  run_task("local n, h = 0\n"
           "h = timer.every(0, function() n = n + 1 if n == 3 then h:cancel() rec('z3') "
           "end end)");
  uv_run(&loop, UV_RUN_DEFAULT);
  EXPECT_EQ("got()", "e1,e2,e3,e4,true,z3");
}

static void test_sleep(void) {
  load(BASE);
  ntasks_done = 0;
  run_task("local t0 = timer.now()\n"
           "rec(math.type(t0))\n"
           "timer.sleep(50)\n"
           "local el = timer.now() - t0\n"
           "rec(el >= 50 and el < 1000 and 'ok' or el)\n"
           "timer.sleep(0)\n"
           "rec('zero')\n"
           /* pcall across the yield */
           "local ok, e = pcall(timer.sleep, 1)\n"
           "rec(ok)\n");
  CHECK(ntasks_done == 0); /* suspended */
  run_task("rec('other task ran meanwhile')");
  CHECK(ntasks_done == 1);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(ntasks_done == 2 && last_st == TASK_OK);
  EXPECT_EQ("got()", "float,other task ran meanwhile,ok,zero,true");
  /* timer callbacks are tasks too: they may sleep */
  run_task("timer.after(1, function() timer.sleep(5) rec('slept in callback') end)");
  uv_run(&loop, UV_RUN_DEFAULT);
  EXPECT_EQ("out[#out]", "slept in callback");
}

static void test_errors(void) {
  load(BASE);
  capture_begin();
  run_task("timer.after(5, function() error('boom in timer') end)\n"
           "timer.after(10, function() rec('next fired') end)\n"
           "local n, h = 0\n"
           "h = timer.every(3, function() n = n + 1\n"
           "  if n == 3 then h:cancel() end\n"
           "  error('periodic boom ' .. n) end)\n");
  uv_run(&loop, UV_RUN_DEFAULT);
  char *log = capture_end();
  EXPECT_EQ("got()", "next fired");
  CHECK(strstr(log, "timer callback failed") != NULL);
  CHECK(strstr(log, "boom in timer") != NULL);
  CHECK(strstr(log, "stack traceback") != NULL);
  CHECK(strstr(log, "periodic boom 3") != NULL); /* errors do not stop a periodic timer */
}

static void test_bad_args(void) {
  load(BASE);
  ntasks_done = 0;
  run_task(
      "local function err(f, ...) local ok, e = pcall(f, ...) assert(not ok) return e "
      "end\n"
      "rec(err(timer.after, -1, print):match('bad argument #1') ~= nil)\n"
      "rec(err(timer.after, 0/0, print):match('bad argument #1') ~= nil)\n"
      "rec(err(timer.after, 'x', print):match('bad argument #1') ~= nil)\n"
      "rec(err(timer.every, 10):match('bad argument #2') ~= nil)\n"
      "rec(err(timer.sleep, -5):match('bad argument #1') ~= nil)\n"
      "rec(err(coroutine.wrap(function() timer.sleep(1) end)):match("
      "'not inside a coroutine the script created') ~= nil)\n"
      "rec(err(table.sort, {1, 2, 3}, function(a, b) timer.sleep(1) return a < b end)"
      ":match('cannot suspend here') ~= nil)\n");
  CHECK(ntasks_done == 1);
  if (last_st != TASK_OK) fprintf(stderr, "%s\n", last_err);
  CHECK(last_st == TASK_OK);
  EXPECT_EQ("got()", "true,true,true,true,true,true,true");
  /* the task must not have been left half-suspended by the refused sleeps */
  uv_run(&loop, UV_RUN_DEFAULT);
  /* timer.sleep while the script loads */
  char *err = NULL;
  write_script("timer.sleep(10)\n");
  CHECK(script_load(S, &err) != 0);
  CHECK(strstr(err, "timer.sleep can only be called from a handler or a timer callback, "
                    "not while the script loads") != NULL);
  free(err);
}

static void test_timeout(void) {
  script_opts o = *script_options(S);
  script_t *old = S;
  o.handler_timeout_ms = 100;
  S = script_new(&loop, &o);
  CHECK(S != NULL);
  load(BASE);
  capture_begin();
  uint64_t t0 = uv_hrtime();
  run_task("timer.after(1, function() timer.sleep(5000) rec('not reached') end)\n"
           "timer.after(150, function() rec('later timer fired') end)\n");
  uv_run(&loop, UV_RUN_DEFAULT); /* the abandoned sleep must not keep the loop */
  double ms = (double)(uv_hrtime() - t0) / 1e6;
  char *log = capture_end();
  CHECK(ms < 2000);
  EXPECT_EQ("got()", "later timer fired");
  CHECK(strstr(log, "timer callback failed") != NULL);
  CHECK(strstr(log, "timed out after 100 ms") != NULL);
  script_free(S);
  S = old;
}

static const char *GEN_V1 =
    "out = {}\n"
    "function rec(x) out[#out + 1] = tostring(x) end\n"
    "function got() return table.concat(out, ',') end\n"
    "state.v1 = 0; state.v2 = 0; state.h1 = 0; state.once = 0; state.failed = 0\n"
    "timer.every(5, function() state.v1 = state.v1 + 1 end)\n"
    "timer.after(60, function() state.once = state.once + 1 end)\n"
    "function make_periodic() timer.every(5, function() state.h1 = state.h1 + 1 end) "
    "end\n";

static const char *GEN_V2 = "timer.every(5, function() state.v2 = state.v2 + 1 end)\n"
                            "function got() return 'v2' end\n";

static const char *GEN_BROKEN =
    "timer.every(1, function() state.failed = state.failed + 1 end)\n"
    "timer.after(1, function() state.failed = state.failed + 1 end)\n"
    "error('broken edit')\n";

static int to_int(const char *s) {
  return atoi(s);
}

static void test_generations(void) {
  load(GEN_V1);
  run_task("make_periodic()");
  run_task("state.env1 = _ENV"); /* to play an in-flight v1 handler after the reload */
  run_for(40);
  int v1 = to_int(eval("state.v1")), h1 = to_int(eval("state.h1"));
  CHECK(v1 >= 2);
  CHECK(h1 >= 2);
  CHECK(to_int(eval("state.once")) == 0);

  /* a broken edit: its timers never run, v1's keep going */
  char *err = NULL;
  write_script(GEN_BROKEN);
  CHECK(script_load(S, &err) != 0);
  CHECK(strstr(err, "broken edit") != NULL);
  free(err);
  run_for(30);
  CHECK(to_int(eval("state.failed")) == 0);
  CHECK(to_int(eval("state.v1")) > v1);
  CHECK(to_int(eval("state.h1")) > h1);

  /* a good reload: v1's periodic timers (made at load and in a handler) stop, v2's
   * runs, v1's pending one-shot still fires */
  load(GEN_V2);
  EXPECT_EQ("got()", "v2");
  v1 = to_int(eval("state.v1"));
  h1 = to_int(eval("state.h1"));
  run_for(60);
  CHECK(to_int(eval("state.v1")) == v1);
  CHECK(to_int(eval("state.h1")) == h1);
  CHECK(to_int(eval("state.v2")) >= 3);
  CHECK(to_int(eval("state.once")) == 1);
  CHECK(to_int(eval("state.failed")) == 0);
  CHECK(bind_timer_pending() == 1); /* only v2's periodic timer is left */

  /* a v1 handler still running after the reload makes a periodic timer: it is v1's
   * and stops at its first tick without running */
  run_task_env("timer.every(5, function() state.late = (state.late or 0) + 1 end)",
               "env1");
  /* a handler from a module (_ENV = the shared globals) counts as current */
  run_task_env("timer.every(5, function() state.mod = (state.mod or 0) + 1 end)", "base");
  run_for(40);
  EXPECT_EQ("state.late", "nil");
  CHECK(to_int(eval("state.mod")) >= 2);
  CHECK(bind_timer_pending() == 2);
  bind_timer_cancel_all();
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(bind_timer_pending() == 0);
}

static void test_shutdown(void) {
  load(BASE);
  run_task("timer.every(5, function() rec('tick') end)\n"
           "timer.after(60000, function() rec('late') end)\n"
           "timer.after(1, function() rec('soon') end)\n");
  run_for(20);
  CHECK(bind_timer_pending() == 2);
  uint64_t t0 = uv_hrtime();
  bind_timer_shutdown(); /* periodic gone, the one-shot no longer holds the loop */
  CHECK(bind_timer_pending() == 1);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK((uv_hrtime() - t0) / 1000000 < 1000);
  EXPECT_EQ("out[1]", "soon");
  bind_timer_cancel_all();
  CHECK(bind_timer_pending() == 0);
  uv_run(&loop, UV_RUN_NOWAIT);
}

int main(void) {
  snprintf(dir, sizeof dir, "/tmp/luahook-timer-XXXXXX");
  CHECK(mkdtemp(dir) != NULL);
  snprintf(path, sizeof path, "%s/hook.lua", dir);
  write_script("");
  CHECK(uv_loop_init(&loop) == 0);
  log_setup(LOG_DEBUG, LOG_TEXT);
  script_opts o = {.path = path, .cpu_budget = 1000000, .handler_timeout_ms = 2000};
  S = script_new(&loop, &o);
  CHECK(S != NULL);

  test_order();
  test_cancel();
  test_every();
  test_sleep();
  test_errors();
  test_bad_args();
  test_timeout();
  test_generations();
  test_shutdown();

  script_free(S);
  CHECK(uv_loop_close(&loop) == 0);
  unlink(path);
  unlink(cap_path);
  rmdir(dir);
  printf("test_bind_timer: ok\n");
  return 0;
}
