/* router: what a request means. Routes (the delivery path, /healthz), the
 * CloudEvents OPTIONS handshake, the secret, content types, decoding, the
 * Event Grid validation answer, dispatch to the script, and the status code of
 * every answer. Sits between server (bytes) and dispatch (Lua). */
#ifndef LUAHOOK_ROUTER_H
#define LUAHOOK_ROUTER_H

#include "config.h"
#include "script.h"
#include "server.h"

typedef struct router router_t;

router_t *router_new(const config *cfg, script_t *s);
void router_free(router_t *r);
/* The handler to give the server. */
server_handler router_handler(router_t *r);
/* The server, for its connection count in /metrics. */
void router_set_server(router_t *r, server_t *s);
/* Records the outcome of a reload for /healthz (err NULL on success). */
void router_note_reload(router_t *r, const char *err);

#endif
