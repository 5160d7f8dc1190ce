/* bind_http: libcurl multi-socket on the libuv loop.
 *
 * curl tells us which sockets to watch (on_socket -> one uv_poll each) and when
 * to wake it (on_curl_timer -> one uv_timer); we hand readiness back with
 * curl_multi_socket_action and then collect finished transfers with
 * curl_multi_info_read. A transfer (`req`) belongs to one suspended task; it ends
 * in exactly one of: complete() (results pushed, task resumed), cancel_req() (the
 * task was abandoned: everything released, the task never touched again).
 * Lua never runs inside a curl callback: completions are handled after
 * curl_multi_socket_action returned.
 */
#include "bind_http.h"
#include "log.h"
#include "metrics.h"
#include "script.h"
#include "task.h"

#include <ctype.h>
#include <curl/curl.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#define DEFAULT_TIMEOUT_MS 10000
#define DEFAULT_MAX_BODY   (16u * 1024 * 1024)
#define MAX_REDIRECTS      10
#define MAX_HEADER_BYTES   (256u * 1024) /* all response header lines together */

typedef struct buf {
  char *p;
  size_t len, cap;
} buf;

typedef struct req req;
struct req {
  CURL *easy;
  script_t *s;
  task_t *task;
  struct curl_slist *headers;
  char *body; /* our copy of the request body (may hold NULs) */
  buf resp;   /* response body */
  buf head;   /* header lines of the last response */
  size_t max_body;
  int too_large, oom;
  char errbuf[CURL_ERROR_SIZE];
  req *prev, *next;
};

typedef struct sock sock;
struct sock {
  uv_poll_t poll; /* first: freed through it in the close callback */
  curl_socket_t fd;
  sock *prev, *next;
};

static struct {
  CURLM *multi;
  uv_loop_t *loop;
  uv_timer_t timer;
  int timer_open;
  int global_init;
  int shut;
  int active;
  req *reqs;
  sock *socks;
} H;

static void free_closed(uv_handle_t *h) {
  free(h);
}

static int buf_add(buf *b, const char *p, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + n + 1) cap *= 2;
    char *q = realloc(b->p, cap);
    if (!q) return -1;
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->len, p, n);
  b->len += n;
  b->p[b->len] = '\0';
  return 0;
}

/* ------------------------------------------------------------------ transfers */

static void req_free(req *r) {
  if (r->easy) curl_easy_cleanup(r->easy);
  curl_slist_free_all(r->headers);
  free(r->body);
  free(r->resp.p);
  free(r->head.p);
  free(r);
}

/* Takes the transfer out of the multi handle and our list. */
static void detach(req *r) {
  curl_multi_remove_handle(H.multi, r->easy);
  if (r->prev)
    r->prev->next = r->next;
  else
    H.reqs = r->next;
  if (r->next) r->next->prev = r->prev;
  H.active--;
}

/* The task was abandoned (handler timeout, shutdown). */
static void cancel_req(void *op) {
  req *r = op;
  metrics_outbound(H.shut ? MC_ERROR : MC_TIMEOUT);
  detach(r);
  req_free(r);
}

static size_t on_write(char *p, size_t size, size_t n, void *ud) {
  req *r = ud;
  size_t len = size * n;
  if (r->max_body && (r->resp.len + len > r->max_body)) {
    r->too_large = 1;
    return CURL_WRITEFUNC_ERROR;
  }
  if (buf_add(&r->resp, p, len) != 0) {
    r->oom = 1;
    return CURL_WRITEFUNC_ERROR;
  }
  return len;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
  req *r = ud;
  size_t len = size * n;
  if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
    r->head.len = 0; /* a new response (after a redirect or a 1xx): start over */
    return len;
  }
  if (r->head.len + len > MAX_HEADER_BYTES) return 0;
  if (buf_add(&r->head, p, len) != 0) {
    r->oom = 1;
    return 0;
  }
  return len;
}

/* The class of a failed transfer: the metric and the prefix of the message. */
static metric_call err_class(const req *r, CURLcode c) {
  if (r->too_large || c == CURLE_FILESIZE_EXCEEDED) return MC_TOO_LARGE;
  switch (c) {
  case CURLE_OPERATION_TIMEDOUT:
    return MC_TIMEOUT;
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
    return MC_DNS;
  case CURLE_COULDNT_CONNECT:
    return MC_CONNECT;
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_ENGINE_NOTFOUND:
  case CURLE_SSL_ENGINE_SETFAILED:
  case CURLE_SSL_ENGINE_INITFAILED:
  case CURLE_SSL_SHUTDOWN_FAILED:
  case CURLE_SSL_CRL_BADFILE:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
  case CURLE_SSL_INVALIDCERTSTATUS:
  case CURLE_SSL_CLIENTCERT:
  case CURLE_USE_SSL_FAILED:
    return MC_TLS;
  default:
    return MC_ERROR;
  }
}

static const char *const class_names[MC_COUNT] = {
    [MC_OK] = "ok",           [MC_TIMEOUT] = "timeout", [MC_DNS] = "dns",
    [MC_CONNECT] = "connect", [MC_TLS] = "tls",         [MC_TOO_LARGE] = "too large",
    [MC_ERROR] = "error"};

/* Sets field k of the table on top to the header value v, joining repeats. */
static void add_header(lua_State *L, const char *k, size_t klen, const char *v,
                       size_t vlen, const char *sep) {
  lua_pushlstring(L, k, klen);
  lua_pushvalue(L, -1);
  if (lua_rawget(L, -3) == LUA_TSTRING) {
    lua_pushstring(L, sep);
    lua_pushlstring(L, v, vlen);
    lua_concat(L, 3);
  } else {
    lua_pop(L, 1);
    lua_pushlstring(L, v, vlen);
  }
  lua_rawset(L, -3);
}

/* Pushes the headers table parsed from the raw header lines. */
static void push_headers(lua_State *L, const buf *b) {
  lua_newtable(L);
  const char *p = b->p, *end = b->p + b->len;
  char name[256];
  size_t nlen = 0; /* the previous field's name, for obsolete line folding */
  while (p && p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    const char *next = eol ? eol + 1 : end;
    if (!eol) eol = end;
    if (eol > p && eol[-1] == '\r') eol--;
    if (eol > p && (*p == ' ' || *p == '\t')) {
      while (p < eol && (*p == ' ' || *p == '\t')) p++;
      if (nlen && p < eol) add_header(L, name, nlen, p, (size_t)(eol - p), " ");
    } else if (eol > p) {
      const char *colon = memchr(p, ':', (size_t)(eol - p));
      nlen = 0;
      if (colon && colon > p && (size_t)(colon - p) < sizeof name) {
        for (const char *q = p; q < colon; q++)
          name[nlen++] = (char)tolower((unsigned char)*q);
        while (nlen && (name[nlen - 1] == ' ' || name[nlen - 1] == '\t')) nlen--;
        const char *v = colon + 1, *ve = eol;
        while (v < ve && (*v == ' ' || *v == '\t')) v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
        if (nlen) add_header(L, name, nlen, v, (size_t)(ve - v), ", ");
      }
    }
    p = next;
  }
}

typedef struct outcome {
  req *r;
  CURLcode code;
} outcome;

/* pcall'd on the main thread: pushes res, or nil and the error message. */
static int push_outcome(lua_State *L) {
  const outcome *o = lua_touserdata(L, 1);
  req *r = o->r;
  if (o->code != CURLE_OK) {
    const char *cls = class_names[err_class(r, o->code)];
    lua_pushnil(L);
    if (r->too_large || o->code == CURLE_FILESIZE_EXCEEDED)
      lua_pushfstring(L, "too large: the response body exceeds max_body (%I bytes)",
                      (lua_Integer)r->max_body);
    else if (r->oom)
      lua_pushstring(L, "error: out of memory while receiving the response");
    else
      lua_pushfstring(L, "%s: %s", cls,
                      r->errbuf[0] ? r->errbuf : curl_easy_strerror(o->code));
    return 2;
  }
  long status = 0;
  curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, status);
  lua_setfield(L, -2, "status");
  push_headers(L, &r->head);
  lua_setfield(L, -2, "headers");
  lua_pushlstring(L, r->resp.p ? r->resp.p : "", r->resp.len);
  lua_setfield(L, -2, "body");
  return 1;
}

/* Builds the results on the main thread (protected) and moves them to the task's
 * suspended thread, where no call may run. Returns their number. */
static int push_results(req *r, CURLcode code) {
  lua_State *co = task_thread(r->task);
  lua_State *L = script_lua(r->s);
  int top = lua_gettop(L);
  outcome o = {r, code};
  lua_pushcfunction(L, push_outcome);
  lua_pushlightuserdata(L, &o);
  if (lua_pcall(L, 1, LUA_MULTRET, 0) != LUA_OK) {
    lua_pushnil(L); /* the error object: "not enough memory", preallocated by Lua */
    lua_insert(L, -2);
  }
  int n = lua_gettop(L) - top;
  if (!lua_checkstack(co, n)) { /* cannot grow the thread: give it nothing */
    lua_settop(L, top);
    return 0;
  }
  lua_xmove(L, co, n);
  return n;
}

static void complete(req *r, CURLcode code) {
  metrics_outbound(code == CURLE_OK ? MC_OK : err_class(r, code));
  detach(r);
  task_t *t = r->task;
  int n = push_results(r, code);
  req_free(r);
  task_resume(t, n);
}

static void check_done(void) {
  CURLMsg *m;
  int left;
  while (H.multi && (m = curl_multi_info_read(H.multi, &left))) {
    if (m->msg != CURLMSG_DONE) continue;
    CURLcode code = m->data.result;
    char *priv = NULL;
    curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
    if (priv)
      complete((req *)priv, code); /* may run Lua, which may start new transfers */
  }
}

/* ------------------------------------------------------------------ curl <-> uv */

static void on_poll(uv_poll_t *p, int status, int events) {
  sock *s = (sock *)p;
  int flags = 0, running = 0;
  if (!H.multi) return;
  if (status < 0) flags |= CURL_CSELECT_ERR;
  if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  curl_multi_socket_action(H.multi, s->fd, flags, &running);
  check_done();
}

static void sock_close(sock *s) {
  if (s->prev)
    s->prev->next = s->next;
  else
    H.socks = s->next;
  if (s->next) s->next->prev = s->prev;
  uv_poll_stop(&s->poll);
  uv_close((uv_handle_t *)&s->poll, free_closed);
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
  (void)easy;
  (void)userp;
  sock *s = socketp;
  if (what == CURL_POLL_REMOVE) {
    if (s) {
      if (H.multi) curl_multi_assign(H.multi, fd, NULL);
      sock_close(s);
    }
    return 0;
  }
  if (!s) {
    s = calloc(1, sizeof *s);
    if (!s) return -1;
    if (uv_poll_init_socket(H.loop, &s->poll, fd) != 0) {
      free(s);
      return -1;
    }
    s->fd = fd;
    s->next = H.socks;
    if (H.socks) H.socks->prev = s;
    H.socks = s;
    curl_multi_assign(H.multi, fd, s);
  }
  int ev = 0;
  if (what & CURL_POLL_IN) ev |= UV_READABLE;
  if (what & CURL_POLL_OUT) ev |= UV_WRITABLE;
  uv_poll_start(&s->poll, ev, on_poll);
  return 0;
}

static void on_timeout(uv_timer_t *t) {
  (void)t;
  int running = 0;
  if (!H.multi) return;
  curl_multi_socket_action(H.multi, CURL_SOCKET_TIMEOUT, 0, &running);
  check_done();
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp) {
  (void)multi;
  (void)userp;
  if (timeout_ms < 0)
    uv_timer_stop(&H.timer);
  else
    uv_timer_start(&H.timer, on_timeout, (uint64_t)timeout_ms, 0);
  return 0;
}

static const char *multi_init(uv_loop_t *loop) {
  if (H.multi)
    return H.loop == loop ? NULL : "error: http is bound to another event loop";
  if (!H.global_init) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
      return "error: cannot initialise libcurl";
    H.global_init = 1;
  }
  H.multi = curl_multi_init();
  if (!H.multi) return "error: cannot initialise libcurl";
  H.loop = loop;
  uv_timer_init(loop, &H.timer);
  H.timer_open = 1;
  curl_multi_setopt(H.multi, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(H.multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
  curl_multi_setopt(H.multi, CURLMOPT_MAX_HOST_CONNECTIONS,
                    (long)HTTP_DEFAULT_MAX_HOST_CONNECTIONS);
  curl_multi_setopt(H.multi, CURLMOPT_MAXCONNECTS, (long)HTTP_DEFAULT_MAX_CONNECTIONS);
  return NULL;
}

/* ------------------------------------------------------------------ Lua API */

/* What a request asks for; the strings stay on the Lua stack while we use them. */
typedef struct spec {
  const char *url;
  char method[32];
  const char *body;
  size_t body_len;
  int has_body, json_body;
  int headers_idx; /* 0 when none */
  lua_Integer timeout_ms;
  int follow, verify;
  const char *ca_file;
  lua_Integer max_body;
} spec;

static const char *const known[] = {
    "method",           "url",        "headers", "body",     "timeout_ms",
    "follow_redirects", "tls_verify", "ca_file", "max_body", NULL};

static int is_token(const char *s, size_t n) {
  if (n == 0) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c <= 32 || c >= 127 || strchr("\"(),/:;<=>?@[\\]{}", c)) return 0;
  }
  return 1;
}

static int has_ctl(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0') return 1;
  return 0;
}

static lua_Integer opt_int(lua_State *L, int t, const char *k, lua_Integer def,
                           const char *what) {
  lua_Integer v = def;
  int ty = lua_getfield(L, t, k);
  if (ty != LUA_TNIL) {
    int isnum = 0;
    lua_Number x = lua_tonumberx(L, -1, &isnum);
    if (!isnum || !(x >= 0) || x > 9.0e15)
      luaL_error(L, "%s: option '%s' must be a number >= 0", what, k);
    v = (lua_Integer)x;
  }
  lua_pop(L, 1);
  return v;
}

static int opt_bool(lua_State *L, int t, const char *k, int def, const char *what) {
  int ty = lua_getfield(L, t, k);
  int v = def;
  if (ty == LUA_TBOOLEAN)
    v = lua_toboolean(L, -1);
  else if (ty != LUA_TNIL)
    luaL_error(L, "%s: option '%s' must be a boolean", what, k);
  lua_pop(L, 1);
  return v;
}

/* Reads and checks the options table at t; leaves what must stay alive (the url,
 * body, ca_file strings, the headers table) on the stack. Raises on misuse. */
static void read_spec(lua_State *L, int t, spec *sp, const char *what) {
  memset(sp, 0, sizeof *sp);
  lua_pushnil(L);
  while (lua_next(L, t)) {
    lua_pop(L, 1);
    int ok = 0;
    if (lua_type(L, -1) == LUA_TSTRING)
      for (int i = 0; known[i]; i++) ok |= strcmp(lua_tostring(L, -1), known[i]) == 0;
    if (!ok)
      luaL_error(L, "%s: unknown option '%s'", what,
                 lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1)
                                                : luaL_typename(L, -1));
  }
  if (lua_getfield(L, t, "url") != LUA_TSTRING)
    luaL_error(L, "%s: url must be a string", what);
  sp->url = lua_tostring(L, -1);
  if (has_ctl(sp->url, lua_rawlen(L, -1)))
    luaL_error(L, "%s: url contains control characters", what);

  int bt = lua_getfield(L, t, "body");
  if (bt == LUA_TTABLE) {
    /* json.encode from the shared globals (the script cannot shadow it there) */
    lua_getglobal(L, "json");
    if (lua_getfield(L, -1, "encode") != LUA_TFUNCTION)
      luaL_error(L, "%s: json.encode is not available", what);
    lua_remove(L, -2);
    lua_pushvalue(L, -2);
    lua_call(L, 1, 2);
    if (lua_type(L, -2) != LUA_TSTRING)
      luaL_error(L, "%s: cannot encode the body as JSON: %s", what,
                 lua_isstring(L, -1) ? lua_tostring(L, -1) : "?");
    lua_pop(L, 1);
    lua_replace(L, -2);
    sp->json_body = 1;
    bt = LUA_TSTRING;
  } else if (bt == LUA_TNUMBER) {
    lua_tostring(L, -1);
    bt = LUA_TSTRING;
  } else if (bt != LUA_TNIL && bt != LUA_TSTRING) {
    luaL_error(L, "%s: body must be a string or a table (sent as JSON), not %s", what,
               luaL_typename(L, -1));
  }
  if (bt == LUA_TSTRING) {
    sp->has_body = 1;
    sp->body = lua_tolstring(L, -1, &sp->body_len);
  }

  if (lua_getfield(L, t, "method") != LUA_TNIL) {
    size_t n;
    const char *m = lua_tolstring(L, -1, &n);
    if (!m || lua_type(L, -1) != LUA_TSTRING || !is_token(m, n) || n >= sizeof sp->method)
      luaL_error(L, "%s: method must be an HTTP method name such as \"PUT\"", what);
    for (size_t i = 0; i <= n; i++) sp->method[i] = (char)toupper((unsigned char)m[i]);
  } else {
    strcpy(sp->method, sp->has_body ? "POST" : "GET");
  }
  lua_pop(L, 1);

  /* headers: checked and copied into a table of strings, so that building the
   * curl list later needs no Lua allocation (nothing can raise then) */
  int ht = lua_getfield(L, t, "headers");
  if (ht == LUA_TTABLE) {
    int src = lua_gettop(L);
    lua_newtable(L);
    sp->headers_idx = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, src)) {
      size_t kn = 0, vn = 0;
      const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &kn) : NULL;
      if (!k || !is_token(k, kn))
        luaL_error(L, "%s: header names must be strings of token characters", what);
      int vt = lua_type(L, -1);
      if (vt != LUA_TSTRING && vt != LUA_TNUMBER)
        luaL_error(L, "%s: header '%s' must be a string or a number", what, k);
      lua_pushvalue(L, -2);
      lua_pushvalue(L, -2);
      const char *v = lua_tolstring(L, -1, &vn); /* converts the copy, not the key */
      if (has_ctl(v, vn))
        luaL_error(L, "%s: header '%s' contains a line break or NUL", what, k);
      lua_rawset(L, sp->headers_idx);
      lua_pop(L, 1);
    }
  } else if (ht != LUA_TNIL) {
    luaL_error(L, "%s: headers must be a table", what);
  } else {
    lua_pop(L, 1);
  }

  sp->timeout_ms = opt_int(L, t, "timeout_ms", DEFAULT_TIMEOUT_MS, what);
  sp->max_body = opt_int(L, t, "max_body", DEFAULT_MAX_BODY, what);
  sp->follow = opt_bool(L, t, "follow_redirects", 0, what);
  sp->verify = opt_bool(L, t, "tls_verify", 1, what);
  int ct = lua_getfield(L, t, "ca_file");
  if (ct == LUA_TSTRING)
    sp->ca_file = lua_tostring(L, -1);
  else if (ct != LUA_TNIL)
    luaL_error(L, "%s: ca_file must be a string", what);
  else
    lua_pop(L, 1);
}

/* Builds the curl header list. Returns -1 on allocation failure. */
static int build_headers(lua_State *L, const spec *sp, struct curl_slist **out) {
  int has_ct = 0, has_expect = 0;
  struct curl_slist *l = NULL, *n;
  if (sp->headers_idx) {
    lua_pushnil(L);
    while (lua_next(L, sp->headers_idx)) {
      size_t kn, vn;
      const char *k = lua_tolstring(L, -2, &kn); /* both strings: no conversion */
      const char *v = lua_tolstring(L, -1, &vn);
      if (strcasecmp(k, "content-type") == 0) has_ct = 1;
      if (strcasecmp(k, "expect") == 0) has_expect = 1;
      char *line = malloc(kn + vn + 3);
      if (!line) {
        lua_pop(L, 2);
        goto fail;
      }
      /* "Name;" is curl's way of sending a header with an empty value */
      if (vn == 0)
        snprintf(line, kn + 3, "%s;", k);
      else
        snprintf(line, kn + vn + 3, "%s: %s", k, v);
      n = curl_slist_append(l, line);
      free(line);
      lua_pop(L, 1);
      if (!n) {
        lua_pop(L, 1);
        goto fail;
      }
      l = n;
    }
  }
  if (sp->has_body && !has_ct) {
    /* a table body is JSON; a string body gets no type unless set (curl would
     * otherwise claim application/x-www-form-urlencoded) */
    n = curl_slist_append(l, sp->json_body ? "Content-Type: application/json"
                                           : "Content-Type:");
    if (!n) goto fail;
    l = n;
  }
  if (!has_expect) { /* no "Expect: 100-continue" round trip for large bodies */
    n = curl_slist_append(l, "Expect:");
    if (!n) goto fail;
    l = n;
  }
  *out = l;
  return 0;
fail:
  curl_slist_free_all(l);
  return -1;
}

static int fail_now(lua_State *L, const char *msg) {
  metrics_outbound(MC_ERROR);
  lua_pushnil(L);
  lua_pushstring(L, msg);
  return 2;
}

/* Starts the request described by the table at t and suspends the task. */
static int start(lua_State *L, int t, const char *what) {
  task_t *task = task_require(L, what);
  spec sp;
  read_spec(L, t, &sp, what);
  if (H.shut) return fail_now(L, "error: shutting down");
  const char *ierr = multi_init(script_loop(script_from(L)));
  if (ierr) return fail_now(L, ierr);

  req *r = calloc(1, sizeof *r);
  if (!r) return fail_now(L, "error: out of memory");
  r->task = task;
  r->s = script_from(L);
  r->max_body = (size_t)sp.max_body;
  r->easy = curl_easy_init();
  if (sp.has_body) {
    r->body = malloc(sp.body_len ? sp.body_len : 1);
    if (r->body) memcpy(r->body, sp.body, sp.body_len);
  }
  if (!r->easy || (sp.has_body && !r->body) || build_headers(L, &sp, &r->headers) != 0) {
    req_free(r);
    return fail_now(L, "error: out of memory");
  }
  CURL *e = r->easy;
  curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)r);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
  curl_easy_setopt(e, CURLOPT_URL, sp.url);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_USERAGENT, "luahook/" LUAHOOK_VERSION);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)sp.timeout_ms);
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, sp.follow ? 1L : 0L);
  curl_easy_setopt(e, CURLOPT_MAXREDIRS, (long)MAX_REDIRECTS);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, sp.verify ? 1L : 0L);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, sp.verify ? 2L : 0L);
  if (sp.ca_file) curl_easy_setopt(e, CURLOPT_CAINFO, sp.ca_file);
  if (sp.max_body)
    curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)sp.max_body);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
  if (sp.has_body) {
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)sp.body_len);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
    if (strcmp(sp.method, "POST") != 0)
      curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, sp.method);
  } else if (strcmp(sp.method, "GET") == 0) {
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
  } else if (strcmp(sp.method, "HEAD") == 0) {
    curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
  } else if (strcmp(sp.method, "POST") == 0) {
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
  } else {
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, sp.method);
  }

  CURLMcode mc = curl_multi_add_handle(H.multi, e);
  if (mc != CURLM_OK) {
    req_free(r);
    metrics_outbound(MC_ERROR);
    lua_pushnil(L);
    lua_pushfstring(L, "error: %s", curl_multi_strerror(mc));
    return 2;
  }
  r->next = H.reqs;
  if (H.reqs) H.reqs->prev = r;
  H.reqs = r;
  H.active++;
  return task_suspend(L, task, cancel_req, r);
}

/* http.request{...} */
static int l_request(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  return start(L, 1, "http.request");
}

/* A fresh options table: a copy of opts (at arg opts_arg, optional) plus url and,
 * when given, method and body. Leaves it on top and returns its index. */
static int merged(lua_State *L, int opts_arg, const char *method, int body_arg) {
  const char *url = luaL_checkstring(L, 1);
  if (!lua_isnoneornil(L, opts_arg)) luaL_checktype(L, opts_arg, LUA_TTABLE);
  lua_newtable(L);
  int t = lua_gettop(L);
  if (!lua_isnoneornil(L, opts_arg)) {
    lua_pushnil(L);
    while (lua_next(L, opts_arg)) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, t);
    }
  }
  lua_pushstring(L, url);
  lua_setfield(L, t, "url");
  if (lua_getfield(L, t, "method") == LUA_TNIL) {
    lua_pushstring(L, method);
    lua_setfield(L, t, "method");
  }
  lua_pop(L, 1);
  if (body_arg) {
    lua_pushvalue(L, body_arg);
    lua_setfield(L, t, "body");
  }
  return t;
}

/* http.get(url [, opts]) */
static int l_get(lua_State *L) {
  return start(L, merged(L, 2, "GET", 0), "http.get");
}

/* http.post(url, body [, opts]) */
static int l_post(lua_State *L) {
  lua_settop(L, 3);
  return start(L, merged(L, 3, "POST", 2), "http.post");
}

int bind_http_open(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"request", l_request}, {"get", l_get}, {"post", l_post}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  return 1;
}

/* ------------------------------------------------------------------ process-wide */

int bind_http_active(void) {
  return H.active;
}

void bind_http_shutdown(void) {
  H.shut = 1;
  while (H.reqs) /* cancel_req unlinks it; the done callback may not start new ones */
    task_abandon(H.reqs->task, "shutting down: the outbound HTTP request was aborted");
  if (H.multi) {
    curl_multi_cleanup(H.multi); /* closes cached connections (on_socket REMOVE) */
    H.multi = NULL;
  }
  while (H.socks) sock_close(H.socks);
  if (H.timer_open) {
    uv_close((uv_handle_t *)&H.timer, NULL);
    H.timer_open = 0;
  }
  if (H.global_init) {
    curl_global_cleanup();
    H.global_init = 0;
  }
}
