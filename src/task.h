/* task: one coroutine run by the runtime (an event handler or a timer callback).
 *
 * A task owns its Lua thread (held by a registry reference), resumes it in
 * protected mode with a traceback on error, enforces the CPU budget per run
 * slice and the handler timeout, and lets C bindings suspend it while their I/O
 * is pending. Its done callback runs exactly once; the task is freed after it.
 */
#ifndef LUAHOOK_TASK_H
#define LUAHOOK_TASK_H

#include <lua.h>
#include <stdint.h>

typedef struct task task_t;
typedef struct script script_t;

typedef enum task_status {
  TASK_OK = 0,   /* the function returned */
  TASK_ERROR,    /* it raised an error (message with traceback) */
  TASK_REJECTED, /* it called luahook.reject(reason) */
  TASK_TIMEOUT,  /* it was still suspended at the deadline and was abandoned */
} task_status;

/* Called once when the task has finished. err is NULL for TASK_OK, else a message
 * (valid only during the call). */
typedef void (*task_done_fn)(task_t *t, task_status st, const char *err, void *ud);

/* Called instead of any resume when a suspended task is abandoned (timeout or
 * shutdown): the binding must cancel its pending operation and never touch the
 * task again. */
typedef void (*task_cancel_fn)(void *op);

/* Creates a task whose thread is ready for the caller to push the function and
 * its arguments on (task_thread), then call task_run. timeout_ms 0 = none. */
task_t *task_new(script_t *s, uint64_t timeout_ms, task_done_fn done, void *ud);

/* First resume: runs the function pushed on the thread with nargs arguments. */
void task_run(task_t *t, int nargs);

/* The task's coroutine. */
lua_State *task_thread(task_t *t);

/* The task running on coroutine L, or NULL when L is not a task's thread (the
 * top-level chunk, or a coroutine the script created itself). */
task_t *task_from(lua_State *L);

/* For C bindings: the task on L that a suspending call (named what) can suspend,
 * or a Lua error that says why not (the script is loading, a coroutine of the
 * script's own, or a C boundary such as a metamethod or table.sort). */
task_t *task_require(lua_State *L, const char *what);

/* For C bindings: suspend the running task until task_resume. Use as
 * `return task_suspend(L, t, cancel, op);`. */
int task_suspend(lua_State *L, task_t *t, task_cancel_fn cancel, void *op);

/* For C bindings: resume a suspended task; the nres results have been pushed on
 * task_thread(t) first. May finish (and free) the task before it returns. */
void task_resume(task_t *t, int nres);

/* Abandons a task from outside (shutdown): cancels its pending operation and
 * reports TASK_TIMEOUT with the given reason. */
void task_abandon(task_t *t, const char *reason);

/* Data a binding may attach for logging: the id of the event being handled. */
void task_set_label(task_t *t, const char *label);
const char *task_label(const task_t *t);

/* Raised by luahook.reject(reason): marks the running task as rejected. */
int task_reject(lua_State *L);

#endif
