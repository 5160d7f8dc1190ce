/* bind_http: the `http` module scripts use: outbound HTTP(S) with libcurl's
 * multi-socket API driven by the libuv loop (uv_poll per socket, one uv_timer).
 *
 *   http.request{method=, url=, headers={}, body=, timeout_ms=, follow_redirects=,
 *                tls_verify=, ca_file=, max_body=}
 *     -> res {status=, headers={lower-case name = value}, body=} | nil, err
 *   http.get(url [, opts])          http.post(url, body [, opts])
 *
 * Suspends the calling task until the response is complete. err starts with its
 * class: "timeout:", "dns:", "connect:", "tls:", "too large:" or "error:". Misuse
 * (no task, bad options) raises. One CURLM for the process: connections are reused
 * and capped per host. Owns the CURLM, its socket watchers and timer, and every
 * transfer in progress.
 */
#ifndef LUAHOOK_BIND_HTTP_H
#define LUAHOOK_BIND_HTTP_H

#include <lua.h>

#define HTTP_DEFAULT_MAX_HOST_CONNECTIONS 16
#define HTTP_DEFAULT_MAX_CONNECTIONS      64 /* the connection cache */

/* luaopen-style: pushes the `http` module table. */
int bind_http_open(lua_State *L);

/* Aborts every transfer in progress (its task is abandoned with TASK_TIMEOUT and
 * the reason "shutting down..."; no Lua runs), closes cached connections and
 * cleans libcurl up. Later requests fail with "error: shutting down". Closing the
 * uv handles completes on the next loop run. Idempotent. */
void bind_http_shutdown(void);

/* Transfers in progress (for metrics). */
int bind_http_active(void);

#endif
