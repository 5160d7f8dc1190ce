/* task: coroutine runs. The thread is anchored in the registry; the task
 * pointer sits in the thread's extra space so bindings find it from their
 * lua_State. A deadline timer is armed only when the task first suspends: a
 * task that finishes in one slice costs no timer at all. */
#include "task.h"
#include "log.h"
#include "script.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

static const char REJECT_KEY = 'R';

struct task {
  script_t *s;
  lua_State *co;
  int ref;
  task_done_fn done;
  void *ud;
  uint64_t timeout_ms;
  uint64_t started;
  uv_timer_t *deadline;
  task_cancel_fn cancel;
  void *op;
  int suspended;
  int rejected;
  int cpu_killed;
  uint64_t slice_start; /* uv_hrtime() when the current run slice began */
  uint64_t slice_instr; /* instructions counted in it so far */
  char *reason;
  const char *label;
};

static void **slot(lua_State *L) {
  return (void **)lua_getextraspace(L);
}

task_t *task_from(lua_State *L) {
  return *slot(L);
}

lua_State *task_thread(task_t *t) {
  return t->co;
}

void task_set_label(task_t *t, const char *label) {
  t->label = label;
}

const char *task_label(const task_t *t) {
  return t->label;
}

task_t *task_new(script_t *s, uint64_t timeout_ms, task_done_fn done, void *ud) {
  task_t *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  lua_State *L = script_lua(s);
  t->s = s;
  t->done = done;
  t->ud = ud;
  t->timeout_ms = timeout_ms;
  thread_pool *pool = script_thread_pool(s);
  if (pool->n) { /* a finished coroutine, clean and ready */
    t->ref = pool->refs[--pool->n];
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
    t->co = lua_tothread(L, -1);
    lua_pop(L, 1);
  } else {
    if (!lua_checkstack(L, 1)) {
      free(t);
      return NULL;
    }
    t->co = lua_newthread(L);
    t->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  *slot(t->co) = t;
  return t;
}

/* Gives the thread back to the pool when it can run again (it returned or raised
 * an error: not when it was abandoned while suspended), else lets it go. */
static void release_thread(task_t *t, int reusable) {
  lua_State *L = script_lua(t->s);
  thread_pool *pool = script_thread_pool(t->s);
  if (reusable && pool->n < SCRIPT_THREAD_POOL &&
      (lua_status(t->co) == LUA_OK || lua_resetthread(t->co) == LUA_OK)) {
    lua_settop(t->co, 0);
    lua_sethook(t->co, NULL, 0, 0);
    pool->refs[pool->n++] = t->ref;
    return;
  }
  luaL_unref(L, LUA_REGISTRYINDEX, t->ref);
}

static void close_timer(uv_handle_t *h) {
  free(h);
}

static void finish(task_t *t, task_status st, const char *err) {
  if (t->deadline) {
    uv_close((uv_handle_t *)t->deadline, close_timer);
    t->deadline = NULL;
  }
  *slot(t->co) = NULL;
  t->done(t, st, err, t->ud);
  release_thread(t, st != TASK_TIMEOUT);
  free(t->reason);
  free(t);
}

/* The count hook runs every CHECK_EVERY instructions (or every cpu_budget, if
 * smaller) and fails the slice once it has run cpu_budget instructions or
 * cpu_slice_ms of wall time: time catches work done inside C functions
 * (allocation, string building), which instructions do not count. */
#define CHECK_EVERY 10000

static int hook_interval(const script_opts *o) {
  uint64_t n = o->cpu_slice_ms ? CHECK_EVERY : o->cpu_budget;
  if (o->cpu_budget && o->cpu_budget < n) n = o->cpu_budget;
  return n > INT32_MAX ? INT32_MAX : (int)n;
}

static void cpu_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  script_t *s = script_from(L);
  task_t *t = script_running(s);
  const script_opts *o = script_options(s);
  if (t && !t->cpu_killed) {
    t->slice_instr += (uint64_t)hook_interval(o);
    int over = o->cpu_budget && t->slice_instr >= o->cpu_budget;
    if (!over && o->cpu_slice_ms)
      over = uv_hrtime() - t->slice_start > o->cpu_slice_ms * 1000000ULL;
    if (!over) return;
    t->cpu_killed = 1;
  }
  /* Raise again on every instruction from now on, so a pcall in the script
   * cannot swallow the kill. */
  lua_sethook(L, cpu_hook, LUA_MASKCOUNT, 1);
  luaL_error(L, "cpu budget exceeded");
}

static void on_deadline(uv_timer_t *timer) {
  task_t *t = timer->data;
  if (!t->suspended) return;
  char msg[128];
  snprintf(msg, sizeof msg, "handler timed out after %llu ms",
           (unsigned long long)t->timeout_ms);
  task_abandon(t, msg);
}

static void arm_deadline(task_t *t) {
  if (!t->timeout_ms || t->deadline) return;
  uv_loop_t *loop = script_loop(t->s);
  uint64_t elapsed = uv_now(loop) - t->started;
  uint64_t left = elapsed >= t->timeout_ms ? 0 : t->timeout_ms - elapsed;
  t->deadline = malloc(sizeof *t->deadline);
  if (!t->deadline) return; /* without a timer the handler can only finish by itself */
  uv_timer_init(loop, t->deadline);
  t->deadline->data = t;
  uv_timer_start(t->deadline, on_deadline, left, 0);
}

static void step(task_t *t, int nargs) {
  script_t *s = t->s;
  lua_State *L = script_lua(s);
  const script_opts *o = script_options(s);
  int nres = 0;
  if (o->cpu_budget || o->cpu_slice_ms) {
    t->slice_start = uv_hrtime();
    t->slice_instr = 0;
    lua_sethook(t->co, cpu_hook, LUA_MASKCOUNT, hook_interval(o));
  }
  task_t *outer = script_running(s);
  script_set_running(s, t);
  script_enter(s);
  int st = lua_resume(t->co, L, nargs, &nres);
  script_leave(s);
  script_set_running(s, outer);

  if (st == LUA_YIELD) {
    lua_pop(t->co, nres);
    if (t->suspended) {
      arm_deadline(t);
      return;
    }
    finish(t, TASK_ERROR,
           "coroutine.yield() from a handler: only suspending calls "
           "(http, timer.sleep) may yield");
    return;
  }
  /* Rejected only if the reject is what ended the run: a script that caught it
   * and then failed otherwise (or returned) is judged by that. */
  if (st != LUA_OK && t->rejected && lua_touserdata(t->co, -1) == &REJECT_KEY) {
    finish(t, TASK_REJECTED, t->reason ? t->reason : "rejected");
    return;
  }
  if (st == LUA_OK) {
    finish(t, TASK_OK, NULL);
    return;
  }
  const char *msg = lua_tostring(t->co, -1);
  if (t->cpu_killed && (!msg || !strstr(msg, "cpu budget exceeded")))
    msg = "cpu budget exceeded"; /* the script's pcall swallowed the first one */
  else if (st == LUA_ERRMEM)
    msg = "not enough memory (lua memory limit reached)";
  else if (!msg)
    msg = "(error object is not a string)";
  /* A slice killed for its budget usually leaves much garbage behind: give the
   * memory back now rather than at some later collection. */
  int collect = t->cpu_killed || st == LUA_ERRMEM;
  luaL_traceback(L, t->co, msg, 0);
  finish(t, TASK_ERROR, lua_tostring(L, -1));
  lua_pop(L, 1);
  if (collect) lua_gc(L, LUA_GCCOLLECT);
}

void task_run(task_t *t, int nargs) {
  t->started = uv_now(script_loop(t->s));
  step(t, nargs);
}

task_t *task_require(lua_State *L, const char *what) {
  task_t *t = task_from(L);
  if (!t) {
    if (script_running(script_from(L)))
      luaL_error(L,
                 "%s can only be called from a handler or a timer callback, not inside "
                 "a coroutine the script created",
                 what);
    luaL_error(L,
               "%s can only be called from a handler or a timer callback, not while the "
               "script loads",
               what);
  }
  if (!lua_isyieldable(L))
    luaL_error(L,
               "%s cannot suspend here (inside a metamethod, an iterator or a C function "
               "such as table.sort or string.gsub)",
               what);
  return t;
}

int task_suspend(lua_State *L, task_t *t, task_cancel_fn cancel, void *op) {
  if (!lua_isyieldable(L)) /* before any state changes: the binding must not wait */
    return luaL_error(L, "cannot suspend here (inside a metamethod or a C function)");
  t->suspended = 1;
  t->cancel = cancel;
  t->op = op;
  return lua_yield(L, 0);
}

void task_resume(task_t *t, int nres) {
  t->suspended = 0;
  t->cancel = NULL;
  t->op = NULL;
  step(t, nres);
}

void task_abandon(task_t *t, const char *reason) {
  if (t->cancel) t->cancel(t->op);
  t->cancel = NULL;
  t->suspended = 0;
  finish(t, TASK_TIMEOUT, reason);
}

int task_reject(lua_State *L) {
  const char *why = luaL_optstring(L, 1, "rejected");
  task_t *t = task_from(L);
  if (!t) return luaL_error(L, "luahook.reject() can only be called from a handler");
  if (!t->rejected) {
    t->rejected = 1;
    t->reason = strdup(why);
  }
  lua_pushlightuserdata(L, (void *)&REJECT_KEY); /* the error value that marks a reject */
  return lua_error(L);
}
