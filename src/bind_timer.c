/* bind_timer: timer.after / timer.every / timer.sleep / timer.now.
 *
 * A pending timer is a `tmr` (uv_timer_t first, freed in its close callback) on
 * one list. The handle scripts get is a small userdata pointing at the tmr; the
 * two point at each other so that whichever goes first (the collected handle, or
 * the fired/cancelled timer) unlinks itself, and __gc never cancels.
 *
 * Generations. A periodic timer belongs to the generation whose code created it:
 *  - inside a timer callback: that callback's generation;
 *  - inside a handler: the generation whose environment the handler's function
 *    has as _ENV (compared with the current one at creation time);
 *  - while a script loads (no task runs): the new generation is not current yet
 *    and has no id, so the timer keeps the loading chunk's environment and is
 *    matched with the current generation when it first fires. A timer whose load
 *    failed is dropped then without running.
 */
#include "bind_timer.h"
#include "log.h"
#include "metrics.h"
#include "script.h"
#include "task.h"

#include <lauxlib.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define HANDLE_MT "luahook.timer"

typedef struct tmr tmr;
typedef struct tref tref;
typedef struct trun trun;

struct tmr {
  uv_timer_t h; /* first: the close callback frees the tmr through it */
  script_t *s;
  int fn_ref;
  int env_ref;      /* the loading chunk's environment, until resolved */
  unsigned prev_id; /* current generation when a loading chunk created it */
  unsigned gen;     /* owning generation; 0 = one that is not (or no more) current */
  int resolved;     /* gen is known */
  uint64_t every;   /* period in ms, 0 for a one-shot timer */
  tref *ref;        /* the script's handle, while it is alive */
  trun *busy;       /* run of a periodic timer still in progress */
  tmr *prev, *next;
};

struct tref {
  tmr *t; /* NULL once the timer fired or was cancelled */
};

/* One callback run (a task). */
struct trun {
  task_t *task;
  tmr *t; /* a periodic timer, while it is alive */
  unsigned gen;
  trun *prev, *next;
};

static tmr *timers;
static trun *runs;
static int npending;
static int shutting_down;

/* ------------------------------------------------------------------ helpers */

static void list_add_tmr(tmr *t) {
  t->prev = NULL;
  t->next = timers;
  if (timers) timers->prev = t;
  timers = t;
  npending++;
}

static void list_del_tmr(tmr *t) {
  if (t->prev)
    t->prev->next = t->next;
  else
    timers = t->next;
  if (t->next) t->next->prev = t->prev;
  t->prev = t->next = NULL;
  npending--;
}

static void free_closed(uv_handle_t *h) {
  free(h); /* the uv_timer_t is the first member of its owner */
}

/* Ends a pending timer: releases its Lua references and closes its handle. */
static void timer_close(tmr *t) {
  lua_State *L = script_lua(t->s);
  list_del_tmr(t);
  luaL_unref(L, LUA_REGISTRYINDEX, t->fn_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, t->env_ref);
  t->fn_ref = t->env_ref = LUA_NOREF;
  if (t->ref) t->ref->t = NULL;
  if (t->busy) t->busy->t = NULL;
  uv_close((uv_handle_t *)&t->h, free_closed);
}

/* Milliseconds argument: a number >= 0 (fractions round up). */
static uint64_t check_ms(lua_State *L, int arg) {
  lua_Number v = luaL_checknumber(L, arg);
  if (!(v >= 0) || v > 9.0e15) luaL_argerror(L, arg, "expected milliseconds >= 0");
  return (uint64_t)ceil(v);
}

/* Pushes the _ENV of the outermost Lua function on L's stack (the loading chunk,
 * or a handler's function) and returns 1, or pushes nothing and returns 0. */
static int push_creator_env(lua_State *L) {
  lua_Debug ar;
  int last = 0;
  while (lua_getstack(L, last + 1, &ar)) last++;
  if (last == 0 || !lua_getstack(L, last, &ar) || !lua_getinfo(L, "f", &ar)) return 0;
  if (lua_type(L, -1) != LUA_TFUNCTION || lua_iscfunction(L, -1)) {
    lua_pop(L, 1);
    return 0;
  }
  for (int i = 1;; i++) {
    const char *name = lua_getupvalue(L, -1, i);
    if (!name) break;
    if (strcmp(name, "_ENV") == 0 && lua_type(L, -1) == LUA_TTABLE) {
      lua_remove(L, -2);
      return 1;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return 0;
}

/* pcall'd: is the table at 1 the environment of generation (light userdata) 2? */
static int env_is_gen(lua_State *L) {
  gen_push_global(L, lua_touserdata(L, 2), "_G");
  lua_pushboolean(L, lua_rawequal(L, 1, -1));
  return 1;
}

/* Is the environment on top of L (popped) the current generation's? */
static int env_is_current(lua_State *L, script_t *s) {
  gen_t *g = script_current(s);
  if (!g) {
    lua_pop(L, 1);
    return 0;
  }
  lua_pushcfunction(L, env_is_gen);
  lua_insert(L, -2);
  lua_pushlightuserdata(L, g);
  int ok = lua_pcall(L, 2, 1, 0) == LUA_OK && lua_toboolean(L, -1);
  lua_pop(L, 1);
  return ok;
}

/* Like env_is_current, but leaves the environment on the stack. */
static int env_is_current_keep(lua_State *L, script_t *s) {
  lua_pushvalue(L, -1);
  return env_is_current(L, s);
}

/* Does the table on top look like a generation's environment (script_load makes
 * them with a metatable whose __index is the shared globals)? */
static int is_gen_env(lua_State *L) {
  if (!lua_getmetatable(L, -1)) return 0;
  lua_pushliteral(L, "__index");
  lua_rawget(L, -2);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  int yes = lua_rawequal(L, -1, -2);
  lua_pop(L, 3);
  return yes;
}

static trun *run_of(task_t *t) {
  for (trun *r = runs; r; r = r->next)
    if (r->task == t) return r;
  return NULL;
}

/* Decides which generation a new timer belongs to (see the top of the file). */
static void assign_gen(lua_State *L, script_t *s, tmr *t) {
  task_t *running = script_running(s);
  gen_t *cur = script_current(s);
  trun *r = running ? run_of(running) : NULL;
  if (r) {
    t->gen = r->gen;
    t->resolved = 1;
    return;
  }
  if (!push_creator_env(L)) {
    t->gen = cur ? gen_id(cur) : 0;
    t->resolved = 1;
    return;
  }
  if (running) {
    /* A handler: its code belongs to the current generation or to an older one.
     * Functions from modules (_ENV = the shared globals) or with an environment of
     * their own cannot tell: they count as current. */
    int old = !env_is_current_keep(L, s) && is_gen_env(L);
    lua_pop(L, 1);
    t->gen = cur && !old ? gen_id(cur) : 0;
    t->resolved = 1;
    return;
  }
  t->env_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* loading: decide at the first fire */
  t->prev_id = cur ? gen_id(cur) : 0;
  t->resolved = 0;
}

/* First fire of a timer made while a chunk loaded. Returns 0 if that load failed
 * (the timer is dropped). */
static int resolve(tmr *t) {
  lua_State *L = script_lua(t->s);
  gen_t *cur = script_current(t->s);
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->env_ref);
  int match = env_is_current(L, t->s);
  luaL_unref(L, LUA_REGISTRYINDEX, t->env_ref);
  t->env_ref = LUA_NOREF;
  t->resolved = 1;
  if (match) {
    t->gen = gen_id(cur);
    return 1;
  }
  t->gen = 0;
  /* Not current: either a later load replaced it, or it never became current. Only
   * the second is certain when at most one generation came after the one we saw. */
  return cur && gen_id(cur) > t->prev_id + 1;
}

/* ------------------------------------------------------------------ callbacks */

static void on_run_done(task_t *task, task_status st, const char *err, void *ud) {
  (void)task;
  trun *r = ud;
  char gen[16];
  snprintf(gen, sizeof gen, "%u", r->gen);
  if (st == TASK_ERROR || st == TASK_TIMEOUT) metrics_timer_error();
  if (st == TASK_ERROR || st == TASK_TIMEOUT)
    log_write(LOG_ERROR, "timer callback failed",
              (log_kv[]){{"generation", gen}, {"error", err}}, 2);
  else if (st == TASK_REJECTED)
    log_write(LOG_WARN, "luahook.reject() in a timer callback has no effect",
              (log_kv[]){{"generation", gen}, {"reason", err}}, 2);
  if (r->t) r->t->busy = NULL;
  if (r->prev)
    r->prev->next = r->next;
  else
    runs = r->next;
  if (r->next) r->next->prev = r->prev;
  free(r);
}

static void on_fire(uv_timer_t *h) {
  tmr *t = (tmr *)h;
  script_t *s = t->s;
  if (t->fn_ref == LUA_NOREF) { /* its creation failed half-way */
    timer_close(t);
    return;
  }
  if (!t->resolved && !resolve(t)) {
    log_write(LOG_DEBUG, "timer of a script load that failed dropped", NULL, 0);
    timer_close(t);
    return;
  }
  if (t->every) {
    gen_t *cur = script_current(s);
    if (!cur || gen_id(cur) != t->gen) {
      char gen[16];
      snprintf(gen, sizeof gen, "%u", t->gen);
      log_write(LOG_DEBUG, "periodic timer of a replaced generation stopped",
                (log_kv[]){{"generation", gen}}, 1);
      timer_close(t);
      return;
    }
    if (t->busy) {
      log_write(LOG_DEBUG, "periodic timer tick skipped: the previous run is still going",
                NULL, 0);
      return;
    }
  }
  trun *r = calloc(1, sizeof *r);
  task_t *task =
      r ? task_new(s, script_options(s)->handler_timeout_ms, on_run_done, r) : NULL;
  if (!task) {
    free(r);
    log_write(LOG_ERROR, "timer callback not run: out of memory", NULL, 0);
    if (!t->every) timer_close(t);
    return;
  }
  r->task = task;
  r->gen = t->gen;
  r->next = runs;
  if (runs) runs->prev = r;
  runs = r;
  lua_State *co = task_thread(task);
  lua_rawgeti(co, LUA_REGISTRYINDEX, t->fn_ref);
  if (t->every) {
    t->busy = r;
    r->t = t;
  } else {
    timer_close(t); /* fired: the task's stack keeps the function alive now */
  }
  task_set_label(task, "timer");
  task_run(task, 0);
}

/* ------------------------------------------------------------------ Lua API */

static int create(lua_State *L, int periodic) {
  uint64_t ms = check_ms(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (periodic && ms == 0) ms = 1; /* a 0 ms period would spin the loop */
  script_t *s = script_from(L);
  lua_settop(L, 2);
  tref *ref = lua_newuserdatauv(L, sizeof *ref, 0);
  ref->t = NULL;
  luaL_setmetatable(L, HANDLE_MT);
  tmr *t = calloc(1, sizeof *t);
  if (!t) return luaL_error(L, "not enough memory for a timer");
  t->s = s;
  t->fn_ref = t->env_ref = LUA_NOREF;
  t->every = periodic ? ms : 0;
  t->resolved = 1; /* gen 0 until assign_gen decides */
  /* Lua allocations below may raise: the timer is already listed and started, and
   * one without a function is dropped when it fires instead of leaking. */
  uv_timer_init(script_loop(s), &t->h);
  uv_timer_start(&t->h, on_fire, ms ? ms : 1, t->every); /* see l_sleep */
  list_add_tmr(t);
  t->ref = ref;
  ref->t = t;
  lua_pushvalue(L, 2);
  t->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  assign_gen(L, s, t);
  if (shutting_down) uv_unref((uv_handle_t *)&t->h);
  return 1;
}

static int l_after(lua_State *L) {
  return create(L, 0);
}

static int l_every(lua_State *L) {
  return create(L, 1);
}

/* handle:cancel() -> true if it was pending, false if it had fired or was cancelled */
static int l_cancel(lua_State *L) {
  tref *ref = luaL_checkudata(L, 1, HANDLE_MT);
  int pending = ref->t != NULL;
  if (pending) timer_close(ref->t);
  lua_pushboolean(L, pending);
  return 1;
}

static int l_handle_gc(lua_State *L) {
  tref *ref = luaL_checkudata(L, 1, HANDLE_MT);
  if (ref->t) ref->t->ref = NULL; /* the timer still fires */
  ref->t = NULL;
  return 0;
}

static int l_handle_tostring(lua_State *L) {
  tref *ref = luaL_checkudata(L, 1, HANDLE_MT);
  if (!ref->t)
    lua_pushstring(L, "timer (done)");
  else
    lua_pushfstring(L, "timer (%s, pending)", ref->t->every ? "every" : "after");
  return 1;
}

typedef struct sleeper {
  uv_timer_t h; /* first */
  task_t *task;
  uint64_t wake_ns; /* uv_hrtime() at which the sleep is over */
} sleeper;

static void on_wake(uv_timer_t *h) {
  sleeper *sp = (sleeper *)h;
  uint64_t now = uv_hrtime();
  if (now < sp->wake_ns) { /* loop time is whole ms and cached: never wake early */
    uv_timer_start(h, on_wake, (sp->wake_ns - now + 999999) / 1000000, 0);
    return;
  }
  task_t *t = sp->task;
  uv_close((uv_handle_t *)h, free_closed);
  task_resume(t, 0);
}

static void cancel_sleep(void *op) {
  sleeper *sp = op;
  uv_close((uv_handle_t *)&sp->h, free_closed);
}

static int l_sleep(lua_State *L) {
  uint64_t ms = check_ms(L, 1);
  task_t *t = task_require(L, "timer.sleep");
  sleeper *sp = malloc(sizeof *sp);
  if (!sp) return luaL_error(L, "not enough memory for timer.sleep");
  uv_loop_t *loop = script_loop(script_from(L));
  sp->task = t;
  uint64_t now = uv_hrtime();
  sp->wake_ns = ms < (UINT64_MAX - now) / 1000000 ? now + ms * 1000000 : UINT64_MAX;
  uv_timer_init(loop, &sp->h);
  uv_update_time(loop);
  /* libuv runs a timer that is already due in the same pass: 0 ms would never let
   * the loop poll for I/O in between, so a sleep lasts at least 1 ms. */
  uv_timer_start(&sp->h, on_wake, ms ? ms : 1, 0);
  return task_suspend(L, t, cancel_sleep, sp);
}

static int l_now(lua_State *L) {
  lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e6);
  return 1;
}

int bind_timer_open(lua_State *L) {
  static const luaL_Reg methods[] = {{"cancel", l_cancel}, {NULL, NULL}};
  static const luaL_Reg funcs[] = {{"after", l_after},
                                   {"every", l_every},
                                   {"sleep", l_sleep},
                                   {"now", l_now},
                                   {NULL, NULL}};
  if (luaL_newmetatable(L, HANDLE_MT)) {
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_handle_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_handle_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "timer");
    lua_setfield(L, -2, "__name");
  }
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}

/* ------------------------------------------------------------------ shutdown */

void bind_timer_shutdown(void) {
  shutting_down = 1;
  tmr *t = timers;
  while (t) {
    tmr *next = t->next;
    if (t->every)
      timer_close(t);
    else
      uv_unref((uv_handle_t *)&t->h);
    t = next;
  }
}

void bind_timer_cancel_all(void) {
  shutting_down = 1;
  while (timers) timer_close(timers);
}

int bind_timer_pending(void) {
  return npending;
}
