/* script: the Lua state, its allocator, the shared globals and the generations
 * of the user's script. */
#include "script.h"
#include "bind_crypto.h"
#include "bind_http.h"
#include "bind_json.h"
#include "bind_log.h"
#include "bind_timer.h"
#include "task.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const script_hook_names[HOOK_COUNT] = {"on_connected", "on_disconnected",
                                                   "on_event", "on_shutdown"};

struct gen {
  script_t *s;
  unsigned id;
  int refs;
  int env_ref;
  int hooks[HOOK_COUNT];
};

struct script {
  lua_State *L;
  uv_loop_t *loop;
  script_opts opts;
  char *path;
  size_t used;
  int enforce; /* depth of script_enter */
  gen_t *current;
  unsigned next_gen;
  task_t *running;
  thread_pool pool;
};

static const char SCRIPT_KEY = 'S'; /* registry key: the script_t of this state */

static void *l_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  script_t *s = ud;
  size_t old = ptr ? osize : 0;
  if (nsize == 0) {
    free(ptr);
    s->used -= old;
    return NULL;
  }
  if (s->enforce && s->opts.mem_limit && nsize > old &&
      s->used + (nsize - old) > s->opts.mem_limit)
    return NULL;
  void *p = realloc(ptr, nsize);
  if (!p) return NULL;
  s->used = s->used - old + nsize;
  return p;
}

static int l_panic(lua_State *L) {
  const char *msg = lua_tostring(L, -1);
  fprintf(stderr, "luahook: unprotected Lua error: %s\n", msg ? msg : "?");
  abort();
}

int script_traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* luahook.reject(reason): the event can never succeed; the request gets 400. */
static int l_reject(lua_State *L) {
  return task_reject(L);
}

static int l_ro_newindex(lua_State *L) {
  return luaL_error(L,
                    "cannot set global '%s' here: globals belong to the script's own "
                    "file (use local in modules)",
                    lua_tostring(L, 2));
}

typedef struct binding {
  const char *name;
  lua_CFunction open;
} binding;

static const binding bindings[] = {
    {"json", bind_json_open},   {"crypto", bind_crypto_open}, {"log", bind_log_open},
    {"timer", bind_timer_open}, {"http", bind_http_open},
};

/* The folder of the script ("." when it has none), pushed on L. */
static void push_dir(lua_State *L, const char *path) {
  const char *slash = strrchr(path, '/');
  if (slash)
    lua_pushlstring(L, path, (size_t)(slash - path));
  else
    lua_pushliteral(L, ".");
}

static void set_package_path(lua_State *L, const char *script_path) {
  const char *lua_dir = getenv("LUAHOOK_LUA_DIR");
  if (!lua_dir || !*lua_dir) lua_dir = LUAHOOK_LUA_DIR;
  lua_getglobal(L, "package");
  push_dir(L, script_path);
  const char *dir = lua_tostring(L, -1);
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s/?.lua;%s/?/init.lua", dir, dir, lua_dir,
                  lua_dir);
  lua_remove(L, -2);
  lua_setfield(L, -2, "path");
  lua_pushliteral(L, "");
  lua_setfield(L, -2, "cpath"); /* no native modules from the file system */
  lua_pop(L, 1);
}

static int open_state(lua_State *L) {
  script_t *s = lua_touserdata(L, 1);
  luaL_openlibs(L);
  lua_pushlightuserdata(L, s);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &SCRIPT_KEY);
  for (size_t i = 0; i < sizeof bindings / sizeof bindings[0]; i++) {
    luaL_requiref(L, bindings[i].name, bindings[i].open,
                  1); /* a global, and require()able */
    lua_pop(L, 1);
  }
  lua_createtable(L, 0, 2);
  lua_pushcfunction(L, l_reject);
  lua_setfield(L, -2, "reject");
  lua_pushliteral(L, LUAHOOK_VERSION);
  lua_setfield(L, -2, "version");
  lua_setglobal(L, "luahook");
  lua_newtable(L);
  lua_setglobal(L, "state");
  set_package_path(L, s->path);
  /* The shared globals are read-only; each generation writes to its own table. */
  lua_pushglobaltable(L);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, l_ro_newindex);
  lua_setfield(L, -2, "__newindex");
  lua_setmetatable(L, -2);
  lua_pop(L, 1);
  return 0;
}

script_t *script_new(uv_loop_t *loop, const script_opts *o) {
  script_t *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->loop = loop;
  s->opts = *o;
  s->path = strdup(o->path);
  s->opts.path = s->path;
  s->L = s->path ? lua_newstate(l_alloc, s) : NULL;
  if (!s->L) {
    free(s->path);
    free(s);
    return NULL;
  }
  lua_atpanic(s->L, l_panic);
  /* Threads copy the main thread's extra space, where task keeps its pointer:
   * coroutines the script makes itself must read NULL there, not garbage. */
  *(void **)lua_getextraspace(s->L) = NULL;
  lua_pushcfunction(s->L, open_state);
  lua_pushlightuserdata(s->L, s);
  if (lua_pcall(s->L, 1, 0, 0) != LUA_OK) {
    fprintf(stderr, "luahook: cannot set up Lua: %s\n", lua_tostring(s->L, -1));
    lua_close(s->L);
    free(s->path);
    free(s);
    return NULL;
  }
  return s;
}

static void gen_release(gen_t *g) {
  luaL_unref(g->s->L, LUA_REGISTRYINDEX, g->env_ref);
  free(g);
}

void script_free(script_t *s) {
  if (!s) return;
  /* The bindings' pending timers and transfers hold Lua references and libuv
   * handles: release them first (the caller runs the loop once more so the
   * handles' close callbacks can free them). */
  bind_timer_cancel_all();
  bind_http_shutdown();
  if (s->current) gen_unref(s->current);
  lua_close(s->L);
  free(s->path);
  free(s);
}

static void cpu_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  luaL_error(L, "cpu budget exceeded while loading the script");
}

/* Forgets modules loaded from the script's folder so the new generation's
 * require() reads them again. Modules from the shipped lua/ folder stay. */
static void forget_local_modules(script_t *s) {
  lua_State *L = s->L;
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "searchpath");
  lua_remove(L, -2);
  lua_pushnil(L);
  while (lua_next(L, -3)) { /* loaded, searchpath, key, value */
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING) continue;
    lua_pushvalue(L, -2);
    lua_pushvalue(L, -2);
    push_dir(L, s->path);
    lua_pushliteral(L, "/?.lua");
    lua_concat(L, 2);
    if (lua_pcall(L, 2, 1, 0) == LUA_OK && lua_type(L, -1) == LUA_TSTRING) {
      lua_pop(L, 1);
      lua_pushvalue(L, -1);
      lua_pushnil(L);
      lua_rawset(L, -5);
    } else {
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 2);
}

int script_load(script_t *s, char **err) {
  lua_State *L = s->L;
  int top = lua_gettop(L);
  *err = NULL;
  forget_local_modules(s);
  lua_pushcfunction(L, script_traceback);
  if (luaL_loadfilex(L, s->path, "t") != LUA_OK) {
    *err = strdup(lua_tostring(L, -1));
    lua_settop(L, top);
    return -1;
  }
  /* env = setmetatable({}, {__index = _G}); env._G = env */
  lua_createtable(L, 0, 8);
  lua_createtable(L, 0, 1);
  lua_pushglobaltable(L);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_setfield(L, -2, "_G");
  lua_pushvalue(L, -1);
  int env_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_setupvalue(L, -2, 1); /* the chunk's _ENV */

  if (s->opts.cpu_budget)
    lua_sethook(L, cpu_hook, LUA_MASKCOUNT,
                (int)(s->opts.cpu_budget > INT32_MAX ? INT32_MAX : s->opts.cpu_budget));
  script_enter(s);
  int rc = lua_pcall(L, 0, 0, top + 1);
  script_leave(s);
  lua_sethook(L, NULL, 0, 0);
  if (rc != LUA_OK) {
    const char *m = lua_tostring(L, -1);
    *err = strdup(m ? m : "error loading the script");
    luaL_unref(L, LUA_REGISTRYINDEX, env_ref);
    lua_settop(L, top);
    lua_gc(L, LUA_GCCOLLECT);
    return -1;
  }
  lua_settop(L, top);

  gen_t *g = calloc(1, sizeof *g);
  if (!g) {
    luaL_unref(L, LUA_REGISTRYINDEX, env_ref);
    *err = strdup("out of memory");
    return -1;
  }
  g->s = s;
  g->id = ++s->next_gen;
  g->refs = 1;
  g->env_ref = env_ref;
  for (int h = 0; h < HOOK_COUNT; h++) {
    gen_push_global(L, g, script_hook_names[h]);
    g->hooks[h] = lua_isfunction(L, -1);
    lua_pop(L, 1);
  }
  gen_t *old = s->current;
  s->current = g;
  if (old) gen_unref(old);
  return 0;
}

gen_t *script_current(script_t *s) {
  return s->current;
}

void gen_ref(gen_t *g) {
  g->refs++;
}

void gen_unref(gen_t *g) {
  if (--g->refs == 0) gen_release(g);
}

unsigned gen_id(const gen_t *g) {
  return g->id;
}

int gen_has_hook(const gen_t *g, int hook) {
  return g->hooks[hook];
}

void gen_push_global(lua_State *L, const gen_t *g, const char *name) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, g->env_ref);
  /* raw: the script may give its environment an __index that raises ("strict"
   * globals), and hooks are the script's own globals anyway */
  lua_pushstring(L, name);
  lua_rawget(L, -2);
  lua_remove(L, -2);
}

lua_State *script_lua(script_t *s) {
  return s->L;
}

uv_loop_t *script_loop(script_t *s) {
  return s->loop;
}

const script_opts *script_options(const script_t *s) {
  return &s->opts;
}

script_t *script_from(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &SCRIPT_KEY);
  script_t *s = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return s;
}

size_t script_memory(const script_t *s) {
  return s->used;
}

thread_pool *script_thread_pool(script_t *s) {
  return &s->pool;
}

task_t *script_running(const script_t *s) {
  return s->running;
}

void script_set_running(script_t *s, task_t *t) {
  s->running = t;
}

void script_enter(script_t *s) {
  s->enforce++;
}

void script_leave(script_t *s) {
  s->enforce--;
}
