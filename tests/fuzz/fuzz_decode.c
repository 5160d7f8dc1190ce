/* fuzz_decode: libFuzzer target for eventgrid_decode and the cJSON -> Lua path.
 *
 * Input: byte 0 (sel) selects the delivery's headers, the rest is the body. With
 * k = sel & 0x7f:
 *   content type   = CTYPES[k % 5]       (NULL, application/json, cloudevents+json,
 *                                         cloudevents-batch+json, text/plain)
 *   aeg-event-type = AEGS[(k / 5) % 4]   (NULL, Notification, SubscriptionValidation,
 *                                         junk)
 *   sel & 0x80: the rest starts with extra request headers, "Name: value\n" lines
 *   up to an empty line (CloudEvents binary mode: ce-specversion, ce-id, ...); the
 *   body follows the empty line.
 * The body is passed without a copy: it ends exactly where libFuzzer's buffer ends,
 * so any read past it is an ASan report.
 *
 * On success the batch's invariants are checked (see check_batch), the validation
 * answer is built, and every event's data goes through bind_json_push, json.encode
 * and json.decode inside lua_pcall on one long-lived lua_State. Any broken invariant
 * aborts with a message (a finding).
 * dictionary: fuzz_decode.dict
 * ctest smoke: 30 s
 */
#include "arena.h"
#include "bind_json.h"
#include "eventgrid.h"
#include "json_parse.h"

#include <cjson/cJSON.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const CTYPES[] = {NULL, "application/json",
                                     "application/cloudevents+json",
                                     "application/cloudevents-batch+json", "text/plain"};
static const char *const AEGS[] = {NULL, "Notification", "SubscriptionValidation",
                                   "Bogus"};

#define FAIL(...)                                                                        \
  do {                                                                                   \
    fprintf(stderr, "fuzz_decode: invariant broken at %s:%d: ", __FILE__, __LINE__);     \
    fprintf(stderr, __VA_ARGS__);                                                        \
    fputc('\n', stderr);                                                                 \
    abort();                                                                             \
  } while (0)

#define ENSURE(cond)                                                                     \
  do {                                                                                   \
    if (!(cond)) FAIL("%s", #cond);                                                      \
  } while (0)

static lua_State *L;
static unsigned long iterations;

/* 1 if any number in the tree is not finite (json.encode refuses those). */
static int has_nonfinite(const cJSON *v) {
  for (; v; v = v->next) {
    if (cJSON_IsNumber(v) && !isfinite(v->valuedouble)) return 1;
    if (v->child && has_nonfinite(v->child)) return 1;
  }
  return 0;
}

/* Runs in lua_pcall: arg 1 = the cJSON node (light userdata), arg 2 = 1 if the
 * encoder may refuse it. Pushes the data, encodes it, decodes the encoding. */
static int l_roundtrip(lua_State *LL) {
  const cJSON *data = lua_touserdata(LL, 1);
  int may_fail = lua_toboolean(LL, 2);
  bind_json_push(LL, data);
  int v = lua_gettop(LL);
  if (data && lua_isnil(LL, v)) return luaL_error(LL, "bind_json_push pushed nil");
  lua_getglobal(LL, "json");
  lua_getfield(LL, -1, "encode");
  lua_pushvalue(LL, v);
  lua_call(LL, 1, 2);
  if (lua_isnil(LL, -2)) {
    if (may_fail) return 0;
    return luaL_error(LL, "json.encode refused pushed event data: %s",
                      lua_tostring(LL, -1));
  }
  size_t n1;
  const char *s1 = lua_tolstring(LL, -2, &n1);
  lua_getfield(LL, -3, "decode");
  lua_pushvalue(LL, -3);
  lua_call(LL, 1, 2);
  if (lua_isnil(LL, -2))
    return luaL_error(LL, "json.decode refused json.encode's output (%s): %s",
                      lua_tostring(LL, -1), s1);
  /* Encoding the decoded value again must give text of the same length (key order
   * may differ between two tables, lengths cannot). */
  lua_getfield(LL, -5, "encode");
  lua_pushvalue(LL, -3);
  lua_call(LL, 1, 2);
  size_t n2 = 0;
  if (!lua_tolstring(LL, -2, &n2) || n2 != n1)
    return luaL_error(LL, "json re-encode differs in length (%d vs %d): %s", (int)n1,
                      (int)n2, s1);
  return 0;
}

static void lua_setup(void) {
  L = luaL_newstate();
  if (!L) abort();
  luaL_openlibs(L);
  luaL_requiref(L, "json", bind_json_open, 1);
  lua_pop(L, 1);
}

static void push_data(const event_t *ev) {
  lua_settop(L, 0);
  lua_pushcfunction(L, l_roundtrip);
  lua_pushlightuserdata(L, (void *)ev->data);
  lua_pushboolean(L, ev->data && has_nonfinite(ev->data));
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    const char *m = lua_tostring(L, -1);
    /* Only a memory error would be acceptable; nesting is bounded by the decoder. */
    FAIL("Lua conversion failed: %s", m ? m : "(non-string error)");
  }
  lua_settop(L, 0);
}

/* The delivery as the harness built it, for the checks. */
typedef struct input {
  delivery d;
  int binary; /* a ce-specversion header and no structured/batch content type */
} input;

static int is_ws(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Structural equality in member order (cJSON_Compare is not reflexive when an object
 * has duplicate names). */
static int same_tree(const cJSON *a, const cJSON *b) {
  if ((a->type & 0xFF) != (b->type & 0xFF)) return 0;
  if ((a->string == NULL) != (b->string == NULL)) return 0;
  if (a->string && strcmp(a->string, b->string) != 0) return 0;
  if (cJSON_IsNumber(a))
    return memcmp(&a->valuedouble, &b->valuedouble, sizeof(double)) == 0;
  if (cJSON_IsString(a)) return strcmp(a->valuestring, b->valuestring) == 0;
  const cJSON *x = a->child, *y = b->child;
  for (; x && y; x = x->next, y = y->next)
    if (!same_tree(x, y)) return 0;
  return x == NULL && y == NULL;
}

static void check_raw_span(const event_t *ev, size_t i) {
  /* json_parse, the decoder's own parser (fuzz_json checks it against cJSON) */
  arena_t *a = arena_new();
  json_error je;
  if (!a) abort();
  cJSON *again =
      json_parse(ev->raw, ev->raw_len, a, EVENTGRID_MAX_DEPTH, NULL, NULL, &je);
  if (!again)
    FAIL("event %zu: raw span does not parse (%s at %zu): %.*s", i, je.msg, je.off,
         (int)ev->raw_len, ev->raw);
  if (!same_tree(again, ev->obj))
    FAIL("event %zu: raw span is not the event's text: %.*s", i, (int)ev->raw_len,
         ev->raw);
  arena_free(a);
}

static void check_event(const input *in, const batch_t *b, size_t i, int is_array) {
  const delivery *d = &in->d;
  const event_t *ev = &b->events[i];
  ENSURE(ev->id && ev->id[0]);
  ENSURE(ev->type && ev->type[0]);
  ENSURE(ev->obj && cJSON_IsObject(ev->obj));
  ENSURE(ev->raw || ev->raw_len == 0);
  if (ev->raw_len)
    ENSURE(ev->raw >= d->body && ev->raw_len <= d->len &&
           (size_t)(ev->raw - d->body) <= d->len - ev->raw_len);
  if (in->binary) {
    ENSURE(b->n == 1 && ev->raw == d->body && ev->raw_len == d->len);
    if (ev->bin_data)
      ENSURE(ev->bin_data == d->body && ev->bin_len == d->len && ev->data == NULL);
  } else {
    const char *r = ev->raw;
    size_t rl = ev->raw_len;
    /* Finding F2 (see tests/fuzz/findings/): before a single object the decoder
     * keeps a UTF-8 BOM in raw. Tolerated here so fuzzing goes on; the regression
     * test checks it. */
    if (!is_array && rl >= 3 && memcmp(r, "\xEF\xBB\xBF", 3) == 0) {
      r += 3, rl -= 3;
      while (rl > 0 && is_ws(*r)) r++, rl--;
    }
    ENSURE(rl > 0 && r[0] == '{' && r[rl - 1] == '}');
    if (!is_array) {
      /* the whole body without the white space around it */
      const char *p = d->body; /* white space, or a BOM first (if raw skips it) */
      if (ev->raw - p >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0) p += 3;
      for (; p < ev->raw; p++) ENSURE(is_ws(*p));
      for (p = ev->raw + ev->raw_len; p < d->body + d->len; p++) ENSURE(is_ws(*p));
    }
    /* The raw span must be this event's own text: it parses to the same object. */
    check_raw_span(ev, i);
    ENSURE(ev->bin_data == NULL);
  }

  ev_kind want = strcmp(ev->type, EG_TYPE_CONNECTED) == 0      ? EV_CONNECTED
                 : strcmp(ev->type, EG_TYPE_DISCONNECTED) == 0 ? EV_DISCONNECTED
                                                               : EV_OTHER;
  ENSURE(ev->kind == want);
  if (ev->kind != EV_OTHER) {
    ENSURE(cJSON_IsObject(ev->data));
    ENSURE(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(ev->data, "hubName")));
    ENSURE(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(ev->data, "connectionId")));
  }
  long long t;
  if (b->schema == SCHEMA_EVENTGRID) {
    ENSURE(ev->time && eventgrid_parse_time(ev->time, &t) == 0);
  } else {
    ENSURE(ev->source && ev->source[0]);
    if (ev->time) ENSURE(eventgrid_parse_time(ev->time, &t) == 0);
    if (ev->data_base64) ENSURE(ev->data == NULL);
  }
}

static void check_batch(const input *in, const batch_t *b) {
  const delivery *d = &in->d;
  ENSURE(b->root);
  int is_array = cJSON_IsArray(b->root);
  if (in->binary) {
    ENSURE(b->schema == SCHEMA_CLOUDEVENTS && b->n == 1 && !is_array);
  } else {
    ENSURE(json_utf8_valid(d->body, d->len));
    if (is_array) {
      ENSURE(b->n == (size_t)cJSON_GetArraySize(b->root));
    } else {
      ENSURE(cJSON_IsObject(b->root) && b->n == 1);
      ENSURE(!(d->content_type && strstr(d->content_type, "batch")));
    }
    if (d->content_type && strstr(d->content_type, "cloudevents"))
      ENSURE(b->schema == SCHEMA_CLOUDEVENTS);
  }
  ENSURE(b->n == 0 ? b->events == NULL : b->events != NULL);
  for (size_t i = 0; i < b->n; i++) check_event(in, b, i, is_array);

  if (b->kind == BATCH_VALIDATION) {
    ENSURE(b->n == 1);
    ENSURE(strcmp(b->events[0].type, EG_TYPE_VALIDATION) == 0);
    ENSURE(b->validation_code);
    size_t len = 0;
    char *resp = eventgrid_validation_response(b, &len);
    ENSURE(resp && len == strlen(resp));
    cJSON *o = cJSON_Parse(resp);
    ENSURE(o);
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(o, "validationResponse");
    ENSURE(cJSON_IsString(code) && strcmp(code->valuestring, b->validation_code) == 0);
    cJSON_Delete(o);
    free(resp);
  } else {
    ENSURE(b->kind == BATCH_NOTIFICATION);
    ENSURE(b->validation_code == NULL);
    for (size_t i = 0; i < b->n; i++)
      ENSURE(strcmp(b->events[i].type, EG_TYPE_VALIDATION) != 0);
    /* (binary mode does not look at aeg-event-type) */
    if (!in->binary)
      ENSURE(!(d->aeg_event_type &&
               strcmp(d->aeg_event_type, "SubscriptionValidation") == 0));
  }
}

#define MAX_HDRS 16

/* Splits "Name: value\n"... "\n" off the front of p[0..n) into names/values (copied,
 * NUL-terminated, into buf). Returns the number of bytes the header block took. */
static size_t split_headers(const char *p, size_t n, char *buf, const char **names,
                            const char **values, size_t *nh) {
  size_t i = 0, o = 0;
  *nh = 0;
  while (i < n) {
    const char *nl = memchr(p + i, '\n', n - i);
    size_t len = nl ? (size_t)(nl - (p + i)) : n - i;
    size_t next = nl ? i + len + 1 : n;
    if (len == 0) return next; /* the empty line: the body follows */
    const char *colon = memchr(p + i, ':', len);
    if (colon && *nh < MAX_HDRS) {
      size_t kl = (size_t)(colon - (p + i)), vs = kl + 1;
      if (vs < len && p[i + vs] == ' ') vs++;
      names[*nh] = buf + o;
      memcpy(buf + o, p + i, kl);
      o += kl;
      buf[o++] = '\0';
      values[*nh] = buf + o;
      memcpy(buf + o, p + i + vs, len - vs);
      o += len - vs;
      buf[o++] = '\0';
      ++*nh;
    }
    i = next;
  }
  return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static char *hbuf;
  static size_t hcap;
  if (size < 1) return 0;
  if (!L) lua_setup();
  unsigned sel = data[0], k = sel & 0x7f;
  input in;
  memset(&in, 0, sizeof in);
  delivery *d = &in.d;
  d->content_type = CTYPES[k % 5];
  d->aeg_event_type = AEGS[(k / 5) % 4];
  const char *rest = (const char *)data + 1;
  size_t nrest = size - 1;

  const char *names[MAX_HDRS + 2], *values[MAX_HDRS + 2];
  size_t nh = 0;
  if (sel & 0x80) {
    if (hcap < 2 * nrest + 2) {
      free(hbuf);
      hcap = 2 * nrest + 2;
      hbuf = malloc(hcap);
      if (!hbuf) abort();
    }
    size_t used = split_headers(rest, nrest, hbuf, names, values, &nh);
    rest += used;
    nrest -= used;
    for (size_t h = 0; h < nh; h++)
      if (strcasecmp(names[h], "ce-specversion") == 0) in.binary = 1;
    if (d->content_type && strstr(d->content_type, "cloudevents")) in.binary = 0;
  }
  /* As the router does: every request header, content-type and aeg-event-type too. */
  if (d->content_type) names[nh] = "content-type", values[nh++] = d->content_type;
  if (d->aeg_event_type) names[nh] = "aeg-event-type", values[nh++] = d->aeg_event_type;
  d->nheaders = nh;
  d->hnames = names;
  d->hvalues = values;
  d->body = nrest ? rest : (const char *)data + size; /* never dereferenced when empty */
  d->len = nrest;

  batch_t b;
  decode_error e;
  memset(&e, 0x5a, sizeof e); /* the decoder must set what it reports */
  int rc = eventgrid_decode(d, &b, &e);
  if (rc != 0) {
    ENSURE(rc == -1);
    ENSURE(b.root == NULL && b.events == NULL && b.n == 0);
    ENSURE(e.status == 400 || e.status == 415 || e.status == 500);
    ENSURE(e.index >= -1);
    ENSURE(memchr(e.msg, '\0', sizeof e.msg) && e.msg[0]);
    if (e.status == 415) ENSURE(!eventgrid_content_type_ok(d->content_type));
    return 0;
  }
  ENSURE(rc == 0);
  check_batch(&in, &b);
  for (size_t i = 0; i < b.n; i++) push_data(&b.events[i]);
  batch_free(&b);
  ENSURE(b.root == NULL && b.events == NULL && b.n == 0);
  if (++iterations % 512 == 0) lua_gc(L, LUA_GCCOLLECT);
  return 0;
}
