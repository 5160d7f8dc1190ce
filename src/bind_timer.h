/* bind_timer: the `timer` module scripts use.
 *
 *   timer.after(ms, fn) -> handle   run fn once, ms from now
 *   timer.every(ms, fn) -> handle   run fn every ms (first run after ms)
 *   handle:cancel() -> bool         true if it was pending; idempotent. A dropped
 *                                   (collected) handle does not cancel: it still fires
 *   timer.sleep(ms)                 suspend the running handler / timer callback
 *   timer.now() -> ms               monotonic clock, float milliseconds
 *
 * Each callback run is its own task (coroutine) with the handler timeout and CPU
 * budget of handlers, so it may call suspending functions; an error in it is logged
 * and stops neither the loop nor the timer. A periodic timer belongs to the script
 * generation that created it: when it fires after another generation became current
 * it stops itself without running. A tick that comes while the previous run of the
 * same periodic timer is still suspended is skipped. One-shot timers always fire.
 *
 * Owns every pending timer (a list of them, so shutdown can find them) and the
 * uv_timer of every timer.sleep in progress.
 */
#ifndef LUAHOOK_BIND_TIMER_H
#define LUAHOOK_BIND_TIMER_H

#include <lua.h>

/* luaopen-style: pushes the `timer` module table. */
int bind_timer_open(lua_State *L);

/* Shutdown, step 1: cancels every periodic timer and lets pending one-shot timers
 * no longer keep the loop alive (they still fire if the loop runs until then). */
void bind_timer_shutdown(void);

/* Shutdown, step 2 (before script_free, or for `luahook check`): cancels every
 * timer still pending, one-shots included. Their handles are closed; run the loop
 * once more (UV_RUN_NOWAIT is enough) to free them. */
void bind_timer_cancel_all(void);

/* Timers pending (created, not yet fired or cancelled). */
int bind_timer_pending(void);

#endif
