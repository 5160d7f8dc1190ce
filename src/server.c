/* server: connections, parsing, limits, timeouts and responses.
 *
 * A connection holds one request at a time. The parser pauses after each
 * complete request until it is answered, so pipelined requests are answered in
 * order and a client cannot make the server buffer more than one request. Each
 * connection has one timer, used for the phase it is in: idle (between
 * requests), head, body, or lingering after a closing response.
 */
#include "server.h"
#include "log.h"
#include "metrics.h"

#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define READ_CHUNK (64 * 1024)
#define MAX_WRITES 16          /* queued responses before the parser waits */
#define LINGER_MS  2000        /* reading and dropping after a closing response */
#define PREALLOC   (64 * 1024) /* body room made before the body arrives */

typedef struct hdr {
  uint32_t name, value; /* offsets into head */
} hdr;

typedef struct conn conn;

struct request {
  conn *c;
  char *head; /* url '\0' name '\0' value '\0' ... */
  size_t head_len, head_cap;
  size_t url_end;
  uint32_t path, query;
  hdr hdrs[SERVER_MAX_HEADERS];
  size_t nhdrs;
  int in_field;  /* the parser is inside a header name */
  int head_done; /* headers complete: later header callbacks are trailers */
  char method[24];
  char *body;
  size_t body_len, body_cap;
  int in_handler;
  int responded;
  int discard;
  int body_done;
  int expect_continue;
  long events;
  uint64_t t0;
};

/* PH_NEW: a fresh connection gets the head timeout for its first byte; PH_IDLE:
 * a keep-alive connection between requests gets the idle timeout; PH_DRAIN: the
 * connection waits for its responses to be written (a client that stops reading
 * gets the body timeout, then is closed). */
enum phase { PH_NEW, PH_IDLE, PH_HEAD, PH_BODY, PH_HANDLER, PH_DRAIN, PH_LINGER };

struct conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  server_t *srv;
  llhttp_t parser;
  request_t req;
  char *in;
  size_t in_len, in_off, in_cap;
  int refs;
  int closing;
  int reading;
  int in_execute;
  int paused;
  int close_after_write;
  int writes;
  int abort_status; /* set by a callback that stops the parser */
  enum phase phase;
  conn *prev, *next;
};

struct server {
  uv_loop_t *loop;
  uv_tcp_t listener;
  server_opts opts;
  char host[256];
  server_handler h;
  llhttp_settings_t settings;
  conn *conns;
  int nconns; /* open */
  int nalloc; /* not yet freed */
  int pending;
  int port;
  int listening;
  int listener_open;
  int stopping;
  void (*closed_cb)(void *);
  void *closed_arg;
};

typedef struct wreq {
  uv_write_t w;
  conn *c;
  size_t len;
  char data[];
} wreq;

const char *server_status_text(int status) {
  switch (status) {
  case 100:
    return "Continue";
  case 200:
    return "OK";
  case 202:
    return "Accepted";
  case 204:
    return "No Content";
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 403:
    return "Forbidden";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 408:
    return "Request Timeout";
  case 413:
    return "Content Too Large";
  case 415:
    return "Unsupported Media Type";
  case 429:
    return "Too Many Requests";
  case 431:
    return "Request Header Fields Too Large";
  case 500:
    return "Internal Server Error";
  case 501:
    return "Not Implemented";
  case 503:
    return "Service Unavailable";
  default:
    return "Unknown";
  }
}

/* ------------------------------------------------------------ lifetime */

static void maybe_closed(server_t *s);

static void conn_unref(conn *c) {
  if (--c->refs > 0) return;
  server_t *s = c->srv;
  free(c->req.head);
  free(c->req.body);
  free(c->in);
  free(c);
  s->nalloc--;
  maybe_closed(s);
}

/* server_close's callback runs once every connection is freed and the listener
 * is closed. */
static void maybe_closed(server_t *s) {
  if (!s->closed_cb || s->nalloc > 0 || s->listener_open) return;
  void (*cb)(void *) = s->closed_cb;
  void *arg = s->closed_arg;
  free(s);
  cb(arg);
}

static void on_handle_closed(uv_handle_t *h) {
  conn_unref(h->data);
}

static void conn_close(conn *c) {
  if (c->closing) return;
  c->closing = 1;
  server_t *s = c->srv;
  if (c->prev)
    c->prev->next = c->next;
  else
    s->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  s->nconns--;
  uv_close((uv_handle_t *)&c->timer, on_handle_closed);
  uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

/* ------------------------------------------------------------ timers */

static void on_timeout(uv_timer_t *t);

static void arm(conn *c, enum phase ph) {
  c->phase = ph;
  uint64_t ms = 0;
  switch (ph) {
  case PH_NEW:
    ms = c->srv->opts.header_timeout_ms;
    break;
  case PH_IDLE:
    ms = c->srv->opts.idle_timeout_ms;
    break;
  case PH_HEAD:
    ms = c->srv->opts.header_timeout_ms;
    break;
  case PH_BODY:
  case PH_DRAIN:
    ms = c->srv->opts.body_timeout_ms;
    break;
  case PH_LINGER:
    ms = LINGER_MS;
    break;
  case PH_HANDLER:
    ms = 0;
    break;
  }
  if (ms)
    uv_timer_start(&c->timer, on_timeout, ms, 0);
  else
    uv_timer_stop(&c->timer);
}

/* ------------------------------------------------------------ writing */

static void process(conn *c);
static void linger(conn *c);
static void read_start(conn *c);

static void on_written(uv_write_t *w, int status) {
  wreq *wr = (wreq *)w;
  conn *c = wr->c;
  free(wr);
  c->writes--;
  if (c->closing) return;
  if (status < 0) {
    conn_close(c);
    return;
  }
  if (c->close_after_write) {
    if (c->writes == 0) linger(c);
    return;
  }
  if (!c->in_execute) process(c);
}

/* Queues wr (whose data and len are filled in) on the connection. */
static void queue_write(conn *c, wreq *wr) {
  wr->c = c;
  uv_buf_t b = uv_buf_init(wr->data, (unsigned)wr->len);
  c->writes++;
  if (uv_write(&wr->w, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0) {
    c->writes--;
    free(wr);
    conn_close(c);
  }
}

static void write_raw(conn *c, const char *data, size_t len) {
  wreq *wr = malloc(sizeof *wr + len);
  if (!wr) {
    conn_close(c);
    return;
  }
  memcpy(wr->data, data, len);
  wr->len = len;
  queue_write(c, wr);
}

/* Head and body in one write. A response to HEAD says how long the body would be
 * and sends none. */
static void send_response(conn *c, int status, const char *ctype, const char *body,
                          size_t len, const char *extra, int close, int head_only) {
  char head[1024];
  int n = snprintf(head, sizeof head,
                   "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\nConnection: %s\r\n%s%s%s%s",
                   status, server_status_text(status), len,
                   close ? "close" : "keep-alive", ctype ? "Content-Type: " : "",
                   ctype ? ctype : "", ctype ? "\r\n" : "", extra ? extra : "");
  if (n < 0 || (size_t)n + 2 >= sizeof head) n = (int)sizeof head - 3;
  memcpy(head + n, "\r\n", 2);
  n += 2;
  size_t blen = head_only ? 0 : len;
  wreq *wr = malloc(sizeof *wr + (size_t)n + blen);
  if (!wr) {
    conn_close(c);
    return;
  }
  memcpy(wr->data, head, (size_t)n);
  if (blen) memcpy(wr->data + n, body, blen);
  wr->len = (size_t)n + blen;
  if (close) { /* then only the writes remain: bounded by the drain time */
    c->close_after_write = 1;
    arm(c, PH_DRAIN);
  }
  queue_write(c, wr);
}

static void access_log(const request_t *r, int status);

/* An answer from the HTTP layer itself (timeouts, limits, malformed requests):
 * it closes the connection. */
static void send_error(conn *c, int status, const char *msg) {
  metrics_request(status);
  if (log_enabled(LOG_INFO)) access_log(&c->req, status);
  char body[256];
  int n = snprintf(body, sizeof body, "{\"error\":\"%s\"}", msg);
  send_response(c, status, "application/json", body, (size_t)n, NULL, 1, 0);
}

static void access_log(const request_t *r, int status) {
  char st[8], ms[32], ev[24];
  const char *path = r->url_end ? request_path(r) : NULL; /* NULL: not parsed yet */
  snprintf(st, sizeof st, "%d", status);
  snprintf(ms, sizeof ms, "%.2f", (double)(uv_hrtime() - r->t0) / 1e6);
  snprintf(ev, sizeof ev, "%ld", r->events);
  log_write(LOG_INFO, "request",
            (log_kv[]){{"method", r->method[0] ? r->method : NULL},
                       {"path", path},
                       {"status", st},
                       {"events", r->events >= 0 ? ev : NULL},
                       {"ms", ms}},
            5);
}

void request_respond(request_t *r, int status, const char *ctype, const char *body,
                     size_t len, const char *extra, int close_after) {
  conn *c = r->c;
  if (r->responded) return;
  r->responded = 1;
  int was_pending = r->in_handler;
  if (was_pending) {
    r->in_handler = 0;
    c->srv->pending--;
  }
  metrics_request(status);
  if (log_enabled(LOG_INFO)) access_log(r, status);
  if (!c->closing) {
    /* CONNECT and Upgrade requests are never continued: their answer closes */
    int close = close_after || c->srv->stopping ||
                !llhttp_should_keep_alive(&c->parser) ||
                strcmp(r->method, "CONNECT") == 0 || request_header(r, "upgrade");
    if (!r->body_done) {
      /* Answered from the head: drop the body, or close when it is too large or the
       * client is waiting for our go-ahead (it may never send the body). */
      if (r->expect_continue || status == 413)
        close = 1;
      else
        r->discard = 1;
    }
    send_response(c, status, ctype, body, len, extra, close,
                  strcmp(r->method, "HEAD") == 0);
  }
  if (was_pending) {
    if (!c->closing && !c->in_execute && !c->close_after_write) process(c);
    conn_unref(c);
  }
}

/* ------------------------------------------------------------ closing gently */

static void on_shutdown(uv_shutdown_t *req, int status) {
  (void)status;
  free(req);
}

/* After a response that closes the connection: send FIN, then read and drop
 * whatever the client still sends for a while, so it sees our response rather
 * than a reset. */
static void linger(conn *c) {
  if (c->closing || c->phase == PH_LINGER) return;
  arm(c, PH_LINGER);
  uv_shutdown_t *sh = malloc(sizeof *sh);
  if (!sh || uv_shutdown(sh, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
    free(sh);
    conn_close(c);
    return;
  }
  read_start(c);
}

static void on_timeout(uv_timer_t *t) {
  conn *c = t->data;
  switch (c->phase) {
  case PH_HEAD:
  case PH_BODY:
    /* one answer per request: one that was answered from its head just closes */
    if (!c->close_after_write && !c->req.in_handler && !c->req.responded) {
      log_write(LOG_INFO, "request timed out",
                (log_kv[]){{"phase", c->phase == PH_HEAD ? "head" : "body"}}, 1);
      send_error(c, 408, "request not received in time"); /* drains, lingers, closes */
      return;
    }
    conn_close(c);
    return;
  case PH_NEW:
  case PH_IDLE:
  case PH_DRAIN:
  case PH_LINGER:
    conn_close(c);
    return;
  case PH_HANDLER:
    return;
  }
}

/* ------------------------------------------------------------ parser callbacks */

static int head_append(conn *c, const char *at, size_t len) {
  request_t *r = &c->req;
  if (r->head_len + len + 1 > c->srv->opts.max_header) {
    c->abort_status = 431;
    return HPE_USER;
  }
  if (r->head_len + len + 1 > r->head_cap) {
    size_t cap = r->head_cap ? r->head_cap : 1024;
    while (cap < r->head_len + len + 1) cap *= 2;
    char *p = realloc(r->head, cap);
    if (!p) {
      c->abort_status = 500;
      return HPE_USER;
    }
    r->head = p;
    r->head_cap = cap;
  }
  memcpy(r->head + r->head_len, at, len);
  r->head_len += len;
  return 0;
}

static int on_message_begin(llhttp_t *p) {
  conn *c = p->data;
  request_t *r = &c->req;
  r->head_len = r->body_len = r->nhdrs = r->url_end = 0;
  r->in_field = r->in_handler = r->responded = r->discard = r->body_done = r->head_done =
      0;
  r->expect_continue = 0;
  r->events = -1;
  r->method[0] = '\0';
  r->t0 = uv_hrtime();
  arm(c, PH_HEAD);
  return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
  return head_append(p->data, at, len);
}

static int on_url_complete(llhttp_t *p) {
  conn *c = p->data;
  request_t *r = &c->req;
  if (head_append(c, "", 1)) return HPE_USER;
  r->url_end = r->head_len;
  char *q = memchr(r->head, '?', r->head_len - 1);
  r->path = 0;
  if (q) {
    *q = '\0';
    r->query = (uint32_t)(q + 1 - r->head);
  } else {
    r->query = (uint32_t)(r->head_len - 1); /* the terminating NUL: "" */
  }
  return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
  conn *c = p->data;
  request_t *r = &c->req;
  if (r->head_done) return 0; /* chunked trailers are not request headers */
  if (!r->in_field) {
    if (r->nhdrs == SERVER_MAX_HEADERS) {
      c->abort_status = 431;
      return HPE_USER;
    }
    r->hdrs[r->nhdrs].name = (uint32_t)r->head_len;
    r->in_field = 1;
  }
  return head_append(c, at, len);
}

static int on_header_field_complete(llhttp_t *p) {
  conn *c = p->data;
  request_t *r = &c->req;
  if (r->head_done) return 0;
  if (head_append(c, "", 1)) return HPE_USER;
  r->hdrs[r->nhdrs].value = (uint32_t)r->head_len;
  r->in_field = 0;
  return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  conn *c = p->data;
  return c->req.head_done ? 0 : head_append(c, at, len);
}

static int on_header_value_complete(llhttp_t *p) {
  conn *c = p->data;
  request_t *r = &c->req;
  if (r->head_done) return 0;
  if (head_append(c, "", 1)) return HPE_USER;
  r->nhdrs++;
  return 0;
}

static int on_headers_complete(llhttp_t *p) {
  conn *c = p->data;
  request_t *r = &c->req;
  server_t *s = c->srv;
  r->head_done = 1;
  snprintf(r->method, sizeof r->method, "%s", llhttp_method_name(llhttp_get_method(p)));
  const char *expect = request_header(r, "expect");
  r->expect_continue = expect && strcasecmp(expect, "100-continue") == 0 &&
                       p->http_major == 1 && p->http_minor >= 1;
  if ((p->flags & F_CONTENT_LENGTH) && p->content_length > s->opts.max_body) {
    request_respond(r, 413, "application/json",
                    "{\"error\":\"request body larger than the limit\"}", 46, NULL, 1);
    return HPE_PAUSED;
  }
  s->h.on_head(r, s->h.ud);
  int has_body =
      (p->flags & F_CHUNKED) || ((p->flags & F_CONTENT_LENGTH) && p->content_length);
  if (r->responded) {
    if (c->close_after_write) return HPE_PAUSED;
    if (has_body) arm(c, PH_BODY); /* discarded, with the time a body gets */
    return 0;                      /* then the next request follows */
  }
  if (r->expect_continue && has_body) {
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    write_raw(c, cont, sizeof cont - 1);
  }
  if (has_body) arm(c, PH_BODY);
  /* Room for the announced body, up to PREALLOC: memory follows the bytes that
   * actually arrive, not what a client claims it will send. */
  if ((p->flags & F_CONTENT_LENGTH) && p->content_length > r->body_cap) {
    size_t want = p->content_length < PREALLOC ? (size_t)p->content_length : PREALLOC;
    if (want > r->body_cap) {
      char *b = realloc(r->body, want);
      if (!b) {
        c->abort_status = 500;
        return -1;
      }
      r->body = b;
      r->body_cap = want;
    }
  }
  return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  conn *c = p->data;
  request_t *r = &c->req;
  if (r->discard) return 0;
  if (r->body_len + len > c->srv->opts.max_body) {
    c->abort_status = 413;
    return HPE_USER;
  }
  if (r->body_len + len > r->body_cap) {
    size_t cap = r->body_cap ? r->body_cap : 4096;
    while (cap < r->body_len + len) cap *= 2;
    if (cap > c->srv->opts.max_body) cap = c->srv->opts.max_body;
    char *b = realloc(r->body, cap);
    if (!b) {
      c->abort_status = 500;
      return HPE_USER;
    }
    r->body = b;
    r->body_cap = cap;
  }
  memcpy(r->body + r->body_len, at, len);
  r->body_len += len;
  return 0;
}

static int on_message_complete(llhttp_t *p) {
  conn *c = p->data;
  request_t *r = &c->req;
  server_t *s = c->srv;
  r->body_done = 1;
  if (r->responded) { /* answered from the head; its body is now drained */
    arm(c, PH_IDLE);
    return c->writes >= MAX_WRITES ? HPE_PAUSED : 0;
  }
  arm(c, PH_HANDLER);
  r->in_handler = 1;
  s->pending++;
  c->refs++;
  s->h.on_request(r, s->h.ud);
  return HPE_PAUSED;
}

/* ------------------------------------------------------------ reading */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)hint;
  conn *c = h->data;
  if (c->phase == PH_LINGER) { /* dropped anyway: reuse the start of the buffer */
    c->in_len = c->in_off = 0;
  }
  if (c->in_cap - c->in_len < READ_CHUNK / 2) {
    size_t cap = c->in_len + READ_CHUNK;
    char *p = realloc(c->in, cap);
    if (!p) {
      *buf = uv_buf_init(NULL, 0);
      return;
    }
    c->in = p;
    c->in_cap = cap;
  }
  *buf = uv_buf_init(c->in + c->in_len, (unsigned)(c->in_cap - c->in_len));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
  (void)buf;
  conn *c = st->data;
  if (n < 0) {
    conn_close(c); /* a pending request still finishes; its answer is dropped */
    return;
  }
  if (n == 0) return;
  if (c->phase == PH_LINGER || c->close_after_write)
    return; /* dropped: nothing more is parsed */
  c->in_len += (size_t)n;
  process(c);
}

static void read_start(conn *c) {
  if (c->reading || c->closing) return;
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0) c->reading = 1;
}

/* An idle keep-alive connection keeps no large buffers from its last request. */
static void trim(conn *c) {
  request_t *r = &c->req;
  if (r->body_cap > PREALLOC) {
    free(r->body);
    r->body = NULL;
    r->body_cap = 0;
  }
  if (c->in_cap > 2 * READ_CHUNK) {
    free(c->in);
    c->in = NULL;
    c->in_cap = 0;
  }
}

static void read_stop(conn *c) {
  if (!c->reading) return;
  uv_read_stop((uv_stream_t *)&c->tcp);
  c->reading = 0;
}

static void parse_error(conn *c, llhttp_errno_t err) {
  int status = c->abort_status ? c->abort_status : 400;
  char msg[160];
  if (status == 413)
    snprintf(msg, sizeof msg, "request body larger than the limit");
  else if (status == 431)
    snprintf(msg, sizeof msg, "request head too large");
  else if (status == 500)
    snprintf(msg, sizeof msg, "out of memory");
  else
    snprintf(msg, sizeof msg, "malformed HTTP request: %s", llhttp_errno_name(err));
  log_write(LOG_INFO, "bad request", (log_kv[]){{"error", msg}}, 1);
  send_error(c, status, msg);
}

/* Feeds buffered input to the parser until it is consumed or the connection must
 * wait (a request is being handled, too many writes are queued, or it closes). */
static void process(conn *c) {
  while (!c->closing && !c->close_after_write) {
    if (c->req.in_handler) {
      read_stop(c);
      return;
    }
    if (c->writes >= MAX_WRITES) { /* the client is not reading its answers */
      read_stop(c);
      arm(c, PH_DRAIN);
      return;
    }
    if (c->paused) {
      llhttp_resume(&c->parser);
      c->paused = 0;
    }
    if (c->in_off >= c->in_len) {
      c->in_off = c->in_len = 0;
      if (c->phase == PH_HANDLER) {
        arm(c, PH_IDLE);
        trim(c);
      }
      read_start(c);
      return;
    }
    const char *start = c->in + c->in_off;
    c->in_execute = 1;
    llhttp_errno_t err = llhttp_execute(&c->parser, start, c->in_len - c->in_off);
    c->in_execute = 0;
    if (err == HPE_OK) {
      c->in_off = c->in_len;
      continue;
    }
    if (err == HPE_PAUSED) {
      c->in_off = (size_t)(llhttp_get_error_pos(&c->parser) - c->in);
      c->paused = 1;
      continue;
    }
    read_stop(c);
    /* in a handler: cannot happen (the parser pauses after a request); answered
     * already (CONNECT, Upgrade): one answer per request, so just close */
    if (c->req.in_handler || (c->req.responded && c->abort_status == 0)) {
      if (c->writes)
        c->close_after_write = 1;
      else
        conn_close(c);
      return;
    }
    parse_error(c, err);
    return;
  }
}

/* ------------------------------------------------------------ accepting */

/* At the connection limit, a connection that is waiting for a request gives
 * its place to the new one: the oldest such goes (the list is newest first).
 * Idle sockets then cannot lock out clients that have something to send. */
static int evict_idle(server_t *s, conn *fresh) {
  conn *victim = NULL;
  for (conn *c = s->conns; c; c = c->next)
    if (c != fresh && (c->phase == PH_NEW || c->phase == PH_IDLE) && !c->req.in_handler &&
        c->writes == 0 && !c->close_after_write)
      victim = c;
  if (!victim) return 0;
  log_write(LOG_DEBUG, "closing an idle connection for a new one", NULL, 0);
  conn_close(victim);
  return 1;
}

static void on_connection(uv_stream_t *ls, int status) {
  server_t *s = ls->data;
  if (status < 0) {
    log_warn("accept failed: %s", uv_strerror(status));
    return;
  }
  conn *c = calloc(1, sizeof *c);
  if (!c) return;
  c->srv = s;
  uv_tcp_init(s->loop, &c->tcp);
  uv_timer_init(s->loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  c->refs = 2;
  c->req.c = c;
  c->req.t0 = uv_hrtime();
  c->next = s->conns;
  if (s->conns) s->conns->prev = c;
  s->conns = c;
  s->nconns++;
  s->nalloc++;
  if (uv_accept(ls, (uv_stream_t *)&c->tcp) < 0) {
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  llhttp_init(&c->parser, HTTP_REQUEST, &s->settings);
  c->parser.data = c;
  if (s->nconns > s->opts.max_connections && !evict_idle(s, c)) {
    log_write(LOG_WARN, "connection refused: too many connections", NULL, 0);
    send_error(c, 503, "too many connections");
    return;
  }
  arm(c, PH_NEW);
  read_start(c);
}

server_t *server_new(uv_loop_t *loop, const server_opts *o, const server_handler *h) {
  server_t *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->loop = loop;
  s->opts = *o;
  snprintf(s->host, sizeof s->host, "%s", o->host);
  s->opts.host = s->host;
  s->h = *h;
  llhttp_settings_init(&s->settings);
  s->settings.on_message_begin = on_message_begin;
  s->settings.on_url = on_url;
  s->settings.on_url_complete = on_url_complete;
  s->settings.on_header_field = on_header_field;
  s->settings.on_header_field_complete = on_header_field_complete;
  s->settings.on_header_value = on_header_value;
  s->settings.on_header_value_complete = on_header_value_complete;
  s->settings.on_headers_complete = on_headers_complete;
  s->settings.on_body = on_body;
  s->settings.on_message_complete = on_message_complete;
  return s;
}

int server_listen(server_t *s, char *err, size_t errlen) {
  struct sockaddr_storage addr;
  int r = uv_ip4_addr(s->host, s->opts.port, (struct sockaddr_in *)&addr);
  if (r < 0) r = uv_ip6_addr(s->host, s->opts.port, (struct sockaddr_in6 *)&addr);
  if (r < 0) {
    snprintf(err, errlen, "invalid listen address '%s' (use an IP address)", s->host);
    return r;
  }
  uv_tcp_init(s->loop, &s->listener);
  s->listener.data = s;
  s->listener_open = 1;
  s->listening = 1; /* the handle is open: server_close will close it */
  r = uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0);
  if (r == 0) r = uv_listen((uv_stream_t *)&s->listener, 511, on_connection);
  if (r < 0) {
    snprintf(err, errlen, "cannot listen on %s:%d: %s", s->host, s->opts.port,
             uv_strerror(r));
    return r;
  }
  struct sockaddr_storage name;
  int len = sizeof name;
  uv_tcp_getsockname(&s->listener, (struct sockaddr *)&name, &len);
  s->port = ntohs(name.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&name)->sin6_port
                                             : ((struct sockaddr_in *)&name)->sin_port);
  return 0;
}

int server_port(const server_t *s) {
  return s->port;
}

int server_connections(const server_t *s) {
  return s->nconns;
}

int server_pending(const server_t *s) {
  return s->pending;
}

static void on_listener_closed(uv_handle_t *h) {
  server_t *s = h->data;
  s->listener_open = 0;
  maybe_closed(s);
}

void server_stop_accepting(server_t *s) {
  s->stopping = 1;
  if (s->listening) {
    s->listening = 0;
    uv_close((uv_handle_t *)&s->listener, on_listener_closed);
  }
  /* idle keep-alive connections have nothing to finish */
  for (conn *c = s->conns, *next; c; c = next) {
    next = c->next;
    if ((c->phase == PH_IDLE || c->phase == PH_NEW) && !c->req.in_handler &&
        c->writes == 0)
      conn_close(c);
  }
}

void server_close(server_t *s, void (*cb)(void *), void *arg) {
  s->closed_cb = cb;
  s->closed_arg = arg;
  if (s->listening) {
    s->listening = 0;
    uv_close((uv_handle_t *)&s->listener, on_listener_closed);
  }
  while (s->conns) conn_close(s->conns);
  maybe_closed(s);
}

/* ------------------------------------------------------------ request accessors */

const char *request_method(const request_t *r) {
  return r->method;
}

const char *request_path(const request_t *r) {
  return r->head ? r->head + r->path : "";
}

const char *request_query(const request_t *r) {
  return r->head ? r->head + r->query : "";
}

const char *request_header(const request_t *r, const char *name) {
  for (size_t i = 0; i < r->nhdrs; i++)
    if (strcasecmp(r->head + r->hdrs[i].name, name) == 0)
      return r->head + r->hdrs[i].value;
  return NULL;
}

size_t request_header_count(const request_t *r) {
  return r->nhdrs;
}

void request_header_at(const request_t *r, size_t i, const char **name,
                       const char **value) {
  *name = r->head + r->hdrs[i].name;
  *value = r->head + r->hdrs[i].value;
}

const char *request_body(const request_t *r, size_t *len) {
  *len = r->body_len;
  return r->body ? r->body : "";
}

void request_set_events(request_t *r, long n) {
  r->events = n;
}
