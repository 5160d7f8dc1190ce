/* script: the one lua_State of the process and the generations of the user's
 * script loaded into it.
 *
 * Each load runs the chunk in a fresh environment table whose reads fall back to
 * the shared, read-only globals (standard library and bindings); it becomes the
 * current generation only if the chunk ran without error. A generation is
 * reference-counted: a request or timer keeps the one it started with, so old
 * and new code never mix. `state` is one table shared by all generations.
 * The allocator counts the Lua heap and enforces --lua-memory inside protected
 * runs.
 */
#ifndef LUAHOOK_SCRIPT_H
#define LUAHOOK_SCRIPT_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct script script_t;
typedef struct gen gen_t;
typedef struct task task_t;

typedef struct script_opts {
  const char *path;
  uint64_t cpu_budget;   /* instructions per run slice, 0 = none */
  uint64_t cpu_slice_ms; /* wall time per run slice, 0 = none */
  size_t mem_limit;      /* bytes, 0 = none */
  uint64_t handler_timeout_ms;
} script_opts;

/* Hooks a generation may define. */
enum { HOOK_CONNECTED, HOOK_DISCONNECTED, HOOK_EVENT, HOOK_SHUTDOWN, HOOK_COUNT };
extern const char *const script_hook_names[HOOK_COUNT];

script_t *script_new(uv_loop_t *loop, const script_opts *o);
void script_free(script_t *s);

/* Compiles and runs the script file in a fresh environment; on success it becomes
 * the current generation and 0 is returned; otherwise the current one stays and
 * *err gets a malloc'd message with file:line (the caller frees it). */
int script_load(script_t *s, char **err);

gen_t *script_current(script_t *s); /* NULL before the first successful load */
void gen_ref(gen_t *g);
void gen_unref(gen_t *g);
unsigned gen_id(const gen_t *g);
int gen_has_hook(const gen_t *g, int hook);
/* Pushes generation g's global `name` on L (nil if unset). */
void gen_push_global(lua_State *L, const gen_t *g, const char *name);

lua_State *script_lua(script_t *s);
uv_loop_t *script_loop(script_t *s);
const script_opts *script_options(const script_t *s);
script_t *script_from(lua_State *L);
size_t script_memory(const script_t *s);

/* Finished coroutines kept for reuse by task (registry references). */
#define SCRIPT_THREAD_POOL 64
typedef struct thread_pool {
  int refs[SCRIPT_THREAD_POOL];
  int n;
} thread_pool;
thread_pool *script_thread_pool(script_t *s);

/* The task being resumed now (NULL between runs). Set by task. */
task_t *script_running(const script_t *s);
void script_set_running(script_t *s, task_t *t);

/* Inside protected runs the memory limit applies; outside (C pushing results on
 * a suspended thread) allocations are not refused, so C never hits a Lua error
 * where none can be caught. Nested: each enter has one leave. */
void script_enter(script_t *s);
void script_leave(script_t *s);

/* Message handler for lua_pcall: turns the error into "msg\nstack traceback:...". */
int script_traceback(lua_State *L);

#endif
