/* server: the HTTP/1.1 side of the daemon. Accepts TCP connections on the libuv
 * loop, parses requests with llhttp (Content-Length and chunked bodies,
 * keep-alive, pipelining, Expect: 100-continue), enforces the limits (head size,
 * body size while reading, connection count) and timeouts (idle, head, body),
 * and writes responses with Content-Length and Connection headers.
 *
 * It knows nothing of routes or Lua: for each request it calls on_head when the
 * head is in (the handler may answer at once, e.g. 404 or 401, and the body is
 * then never buffered) and on_request when the body is in. The handler answers
 * exactly once with request_respond, now or later; until then the connection
 * reads no further requests.
 */
#ifndef LUAHOOK_SERVER_H
#define LUAHOOK_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define SERVER_MAX_HEADERS 100 /* more make a request 431 */

typedef struct server server_t;
typedef struct request request_t;

typedef struct server_opts {
  const char *host;
  int port; /* 0 = any free port */
  size_t max_body;
  size_t max_header;
  int max_connections;
  uint64_t header_timeout_ms;
  uint64_t body_timeout_ms;
  uint64_t idle_timeout_ms;
} server_opts;

typedef struct server_handler {
  void (*on_head)(request_t *req, void *ud); /* may call request_respond */
  void (*on_request)(request_t *req,
                     void *ud); /* must call request_respond, now or later */
  void *ud;
} server_handler;

server_t *server_new(uv_loop_t *loop, const server_opts *o, const server_handler *h);
/* Binds and listens. Returns 0 or a libuv error code; err gets a message. */
int server_listen(server_t *s, char *err, size_t errlen);
int server_port(const server_t *s);
/* Stops accepting new connections; open ones go on. */
void server_stop_accepting(server_t *s);
/* Closes every connection; cb runs when all handles are closed and s is freed. */
void server_close(server_t *s, void (*cb)(void *), void *arg);
int server_connections(const server_t *s);
/* Requests handed to on_request and not answered yet. */
int server_pending(const server_t *s);

const char *request_method(const request_t *r);
const char *request_path(const request_t *r);  /* without the query */
const char *request_query(const request_t *r); /* after '?', or "" */
/* First header of that name (case-insensitive), or NULL. */
const char *request_header(const request_t *r, const char *name);
size_t request_header_count(const request_t *r);
void request_header_at(const request_t *r, size_t i, const char **name,
                       const char **value);
const char *request_body(const request_t *r, size_t *len);
/* Events the request carried, for the access log line. */
void request_set_events(request_t *r, long n);

/* Answers the request. extra_headers is "Name: value\r\n"... or NULL. The body is
 * copied. A response given from on_head means the body will not be processed:
 * the server discards it (or closes the connection when it is too large or the
 * client waits for 100-continue). close_after forces Connection: close. */
void request_respond(request_t *r, int status, const char *content_type, const char *body,
                     size_t len, const char *extra_headers, int close_after);

const char *server_status_text(int status);

#endif
