/* bind_json: the `json` module (encode, decode, null, array) and bind_json_push, the
 * cJSON -> Lua conversion used for event data. Decoding is json_parse (strict, into
 * an arena) and then bind_json_push; encoding writes straight
 * into a byte buffer (no cJSON tree). The null sentinel and the array metatable are
 * kept in the registry; nothing here has C-global mutable state.
 */
#include "bind_json.h"
#include "json_parse.h"

#include <lauxlib.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Registry keys (their addresses are the keys). */
static const char ARRAY_MT_KEY = 'a';
static const char NULL_KEY = 'n';

/* Upvalues shared by the module functions. */
#define UV_NULL     lua_upvalueindex(1)
#define UV_ARRAY_MT lua_upvalueindex(2)
#define UV_BOX_MT   lua_upvalueindex(3)

/* ---------------------------------------------------------------------------------
 * UTF-8 and the strict text check
 * ------------------------------------------------------------------------------- */

/* Length (2..4) of the well-formed multi-byte sequence at p (p[0] >= 0x80), or 0.
 * Ranges from the Unicode standard, table 3-7. */
size_t json_utf8_seq(const unsigned char *p, size_t avail) {
  unsigned c = p[0];
  unsigned lo = 0x80, hi = 0xBF;
  if (c < 0xC2) return 0; /* stray continuation byte or overlong lead */
  if (c < 0xE0) return avail >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
  if (c < 0xF0) {
    if (avail < 3) return 0;
    if (c == 0xE0)
      lo = 0xA0; /* overlong */
    else if (c == 0xED)
      hi = 0x9F; /* surrogates */
    return p[1] >= lo && p[1] <= hi && (p[2] & 0xC0) == 0x80 ? 3 : 0;
  }
  if (c < 0xF5) {
    if (avail < 4) return 0;
    if (c == 0xF0)
      lo = 0x90; /* overlong */
    else if (c == 0xF4)
      hi = 0x8F; /* above U+10FFFF */
    return p[1] >= lo && p[1] <= hi && (p[2] & 0xC0) == 0x80 && (p[3] & 0xC0) == 0x80 ? 4
                                                                                      : 0;
  }
  return 0;
}

int json_utf8_valid(const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s, *end = p + n;
  while (p < end) {
    if (end - p >= 8) {
      uint64_t w;
      memcpy(&w, p, 8);
      if (!(w & UINT64_C(0x8080808080808080))) {
        p += 8;
        continue;
      }
    }
    if (*p < 0x80) {
      p++;
      continue;
    }
    size_t l = json_utf8_seq(p, (size_t)(end - p));
    if (!l) return 0;
    p += l;
  }
  return 1;
}

/* ---------------------------------------------------------------------------------
 * cJSON -> Lua
 * ------------------------------------------------------------------------------- */

static int null_tostring(lua_State *L) {
  lua_pushliteral(L, "null");
  return 1;
}

/* Pushes json.null, creating it on first use. */
static void push_null(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &NULL_KEY) != LUA_TNIL) return;
  lua_pop(L, 1);
  lua_newuserdatauv(L, 0, 0);
  lua_createtable(L, 0, 3);
  lua_pushliteral(L, "json.null");
  lua_setfield(L, -2, "__name");
  lua_pushcfunction(L, null_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushliteral(L, "json.null");
  lua_setfield(L, -2, "__metatable"); /* scripts cannot reach or change it */
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &NULL_KEY);
}

/* Pushes the metatable that marks tables as JSON arrays, creating it on first use. */
static void push_array_mt(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &ARRAY_MT_KEY) != LUA_TNIL) return;
  lua_pop(L, 1);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "json.array");
  lua_setfield(L, -2, "__name");
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &ARRAY_MT_KEY);
}

static void push_number(lua_State *L, double d) {
  if (d >= -0x1p53 && d <= 0x1p53) {
    lua_Integer i = (lua_Integer)d;
    /* -0.0 stays a float so its sign survives. */
    if ((double)i == d && (i != 0 || !signbit(d))) {
      lua_pushinteger(L, i);
      return;
    }
  }
  lua_pushnumber(L, (lua_Number)d);
}

static int count_items(const cJSON *c) {
  int n = 0;
  for (; c && n < INT32_MAX; c = c->next) n++;
  return n;
}

/* mt and null are stack indices of the array metatable and json.null. */
static void push_value(lua_State *L, const cJSON *v, int depth, int mt, int null) {
  const cJSON *c;
  switch (v->type & 0xFF) {
  case cJSON_False:
    lua_pushboolean(L, 0);
    return;
  case cJSON_True:
    lua_pushboolean(L, 1);
    return;
  case cJSON_NULL:
    lua_pushvalue(L, null);
    return;
  case cJSON_Number:
    push_number(L, v->valuedouble);
    return;
  case cJSON_String:
  case cJSON_Raw:
    if (!v->valuestring) break;
    /* Not lua_pushstring: its address-keyed cache costs a strcmp per string and
     * never hits for freshly parsed text. */
    lua_pushlstring(L, v->valuestring, strlen(v->valuestring));
    return;
  case cJSON_Array: {
    lua_Integer i = 0;
    if (depth >= JSON_HARD_MAX_DEPTH || !lua_checkstack(L, 3))
      luaL_error(L, "json: nesting too deep");
    lua_createtable(L, count_items(v->child), 0);
    for (c = v->child; c; c = c->next) {
      push_value(L, c, depth + 1, mt, null);
      lua_rawseti(L, -2, ++i);
    }
    lua_pushvalue(L, mt);
    lua_setmetatable(L, -2);
    return;
  }
  case cJSON_Object:
    if (depth >= JSON_HARD_MAX_DEPTH || !lua_checkstack(L, 3))
      luaL_error(L, "json: nesting too deep");
    lua_createtable(L, 0, count_items(v->child));
    for (c = v->child; c; c = c->next) {
      if (!c->string) luaL_error(L, "json: object member without a name");
      lua_pushlstring(L, c->string, strlen(c->string));
      push_value(L, c, depth + 1, mt, null);
      lua_rawset(L, -3); /* duplicate names: the last one wins, as in JavaScript */
    }
    return;
  default:
    break;
  }
  luaL_error(L, "json: invalid cJSON node");
}

void bind_json_push(lua_State *L, const cJSON *v) {
  if (!v) {
    lua_pushnil(L);
    return;
  }
  int type = v->type & 0xFF;
  if (type == cJSON_NULL) {
    push_null(L);
  } else if (type == cJSON_Array || type == cJSON_Object) {
    luaL_checkstack(L, 6, "json: nesting too deep");
    int base = lua_gettop(L);
    push_array_mt(L);
    push_null(L);
    push_value(L, v, 0, base + 1, base + 2);
    lua_replace(L, base + 1);
    lua_settop(L, base + 1);
  } else {
    push_value(L, v, 0, 0, 0); /* scalars other than null need no helpers */
  }
}

/* ---------------------------------------------------------------------------------
 * json.decode
 * ------------------------------------------------------------------------------- */

/* A userdata that owns a parsed cJSON tree (decode) or the encoder's heap buffer,
 * so that a Lua error raised meanwhile (out of memory) cannot leak them: the GC
 * frees them then. On success they are freed at once. */
typedef struct box {
  arena_t *arena; /* a decoded tree */
  char *buf;      /* from the state's allocator, cap bytes */
  size_t cap;
} box_t;

static void box_release(lua_State *L, box_t *b) {
  arena_free(b->arena);
  b->arena = NULL;
  if (b->buf) {
    void *ud;
    lua_Alloc f = lua_getallocf(L, &ud);
    f(ud, b->buf, b->cap, 0);
  }
  b->buf = NULL;
  b->cap = 0;
}

static int box_gc(lua_State *L) {
  box_t *b = lua_touserdata(L, 1);
  if (b) box_release(L, b);
  return 0;
}

static box_t *new_box(lua_State *L) {
  box_t *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->arena = NULL;
  b->buf = NULL;
  b->cap = 0;
  lua_pushvalue(L, UV_BOX_MT);
  lua_setmetatable(L, -2);
  return b;
}

static int opt_max_depth(lua_State *L, int arg) {
  lua_Integer d = JSON_DEFAULT_MAX_DEPTH;
  if (lua_isnoneornil(L, arg)) return (int)d;
  luaL_checktype(L, arg, LUA_TTABLE);
  if (lua_getfield(L, arg, "max_depth") != LUA_TNIL) {
    int isnum;
    d = lua_tointegerx(L, -1, &isnum);
    luaL_argcheck(L, isnum && d >= 1 && d <= JSON_HARD_MAX_DEPTH, arg,
                  "max_depth must be an integer from 1 to 1000");
  }
  lua_pop(L, 1);
  return (int)d;
}

/* json.decode(s [, {max_depth = n}]) -> value | nil, err */
static int l_decode(lua_State *L) {
  size_t n, off = 0;
  const char *s = luaL_checklstring(L, 1, &n);
  int max_depth = opt_max_depth(L, 2);
  box_t *b = new_box(L); /* owns the arena even if pushing raises */
  if (!(b->arena = arena_new())) return luaL_error(L, "json: not enough memory");
  json_error err;
  cJSON *root = json_parse(s, n, b->arena, max_depth, NULL, NULL, &err);
  if (!root) {
    off = err.off;
    box_release(L, b);
    lua_pushnil(L);
    lua_pushfstring(L, "json: invalid JSON at offset %I: %s", (lua_Integer)off, err.msg);
    return 2;
  }
  bind_json_push(L, root);
  box_release(L, b);
  return 1;
}

/* ---------------------------------------------------------------------------------
 * json.encode
 * ------------------------------------------------------------------------------- */

#define ENC_INIT_BUF 2048

typedef struct enc {
  lua_State *L;
  char *p; /* output so far: init, or the heap buffer of box */
  size_t len, cap;
  box_t *box; /* created on the first growth past init */
  int box_idx;
  int max_depth;
  char err[96];
  const void *path[JSON_HARD_MAX_DEPTH]; /* tables being encoded, outermost first */
  char init[ENC_INIT_BUF];
} enc_t;

static int enc_error(enc_t *e, const char *fmt, const char *arg) {
  snprintf(e->err, sizeof e->err, fmt, arg);
  return -1;
}

/* Makes room for need more bytes. The heap buffer lives in a box userdata at a
 * fixed stack slot, so a Lua error cannot leak it and reentrant calls (from a __gc
 * that runs during an allocation) get their own. */
static int enc_grow(enc_t *e, size_t need) {
  lua_State *L = e->L;
  size_t cap = e->cap;
  void *ud;
  lua_Alloc f = lua_getallocf(L, &ud);
  while (cap - e->len < need) {
    if (cap > SIZE_MAX / 4) return enc_error(e, "json: %s", "output too large");
    cap *= 2;
  }
  if (!e->box) {
    e->box = new_box(L);
    lua_replace(L, e->box_idx);
  }
  char *np = f(ud, e->box->buf, e->box->cap, cap);
  if (!np) return enc_error(e, "json: %s", "not enough memory");
  if (!e->box->buf) memcpy(np, e->init, e->len);
  e->box->buf = e->p = np;
  e->box->cap = e->cap = cap;
  return 0;
}

#define RESERVE(e, n) ((e)->cap - (e)->len >= (n) ? 0 : enc_grow((e), (n)))

static int put(enc_t *e, const char *s, size_t n) {
  if (RESERVE(e, n)) return -1;
  memcpy(e->p + e->len, s, n);
  e->len += n;
  return 0;
}

static int putc_(enc_t *e, char c) {
  if (RESERVE(e, 1)) return -1;
  e->p[e->len++] = c;
  return 0;
}

static int enc_integer(enc_t *e, lua_Integer v) {
  char tmp[24], *q = tmp + sizeof tmp;
  lua_Unsigned u = v < 0 ? 0u - (lua_Unsigned)v : (lua_Unsigned)v;
  do {
    *--q = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  if (v < 0) *--q = '-';
  return put(e, q, (size_t)(tmp + sizeof tmp - q));
}

/* Shortest of %.15g, %.16g, %.17g that reads back as the same double; always with
 * a '.' or an exponent so that it decodes as a float again where possible. */
static int enc_float(enc_t *e, lua_Number x) {
  double d = (double)x;
  char tmp[40];
  int n = 0;
  if (!isfinite(d))
    return enc_error(e, "json: cannot encode %s", isnan(d) ? "NaN" : "inf");
  for (int prec = 15; prec <= 17; prec++) {
    n = snprintf(tmp, sizeof tmp, "%.*g", prec, d);
    if (prec == 17 || strtod(tmp, NULL) == d) break;
  }
  int plain = 1;
  for (int i = 0; i < n; i++) {
    if (tmp[i] == ',') tmp[i] = '.'; /* a locale decimal comma */
    if (tmp[i] == '.' || tmp[i] == 'e') plain = 0;
  }
  if (plain) {
    tmp[n++] = '.';
    tmp[n++] = '0';
  }
  return put(e, tmp, (size_t)n);
}

static const char hexdigits[] = "0123456789abcdef";

static int enc_string(enc_t *e, const char *str, size_t n) {
  const unsigned char *p = (const unsigned char *)str, *end = p + n;
  if (putc_(e, '"')) return -1;
  while (p < end) {
    const unsigned char *run = p;
    while (p < end) {
      unsigned c = *p;
      if (c >= 0x80) {
        size_t l = json_utf8_seq(p, (size_t)(end - p));
        if (!l) return enc_error(e, "json: %s", "invalid UTF-8 in string");
        p += l;
      } else if (c >= 0x20 && c != '"' && c != '\\') {
        p++;
      } else {
        break;
      }
    }
    if (p > run && put(e, (const char *)run, (size_t)(p - run))) return -1;
    if (p == end) break;

    char esc[6] = {'\\', 0, '0', '0', 0, 0};
    size_t el = 2;
    switch (*p) {
    case '"':
      esc[1] = '"';
      break;
    case '\\':
      esc[1] = '\\';
      break;
    case '\b':
      esc[1] = 'b';
      break;
    case '\f':
      esc[1] = 'f';
      break;
    case '\n':
      esc[1] = 'n';
      break;
    case '\r':
      esc[1] = 'r';
      break;
    case '\t':
      esc[1] = 't';
      break;
    default:
      esc[1] = 'u';
      esc[4] = hexdigits[*p >> 4];
      esc[5] = hexdigits[*p & 15];
      el = 6;
    }
    if (put(e, esc, el)) return -1;
    p++;
  }
  return putc_(e, '"');
}

static int enc_value(enc_t *e, int idx, int depth);

/* Encodes t[1..n] (absent elements as null) as an array. */
static int enc_array(enc_t *e, int idx, lua_Unsigned n, int depth) {
  lua_State *L = e->L;
  if (putc_(e, '[')) return -1;
  for (lua_Unsigned i = 1; i <= n; i++) {
    if (i > 1 && putc_(e, ',')) return -1;
    if (lua_rawgeti(L, idx, (lua_Integer)i) == LUA_TNIL) {
      if (put(e, "null", 4)) return -1;
    } else if (enc_value(e, lua_gettop(L), depth + 1)) {
      return -1;
    }
    lua_pop(L, 1);
  }
  return putc_(e, ']');
}

static int enc_object(enc_t *e, int idx, int depth) {
  lua_State *L = e->L;
  int first = 1;
  if (putc_(e, '{')) return -1;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (!first && putc_(e, ',')) return -1;
    first = 0;
    if (lua_type(L, -2) == LUA_TSTRING) {
      size_t kl;
      const char *k = lua_tolstring(L, -2, &kl);
      if (enc_string(e, k, kl)) return -1;
    } else if (lua_isinteger(L, -2) && lua_tointeger(L, -2) >= 1) {
      /* A positive integer key of a table that is not a sequence. */
      if (putc_(e, '"') || enc_integer(e, lua_tointeger(L, -2)) || putc_(e, '"'))
        return -1;
    } else {
      return enc_error(e, "json: cannot encode a table key of type %s",
                       lua_isnumber(L, -2) ? "number (not a positive integer)"
                                           : luaL_typename(L, -2));
    }
    if (putc_(e, ':') || enc_value(e, lua_gettop(L), depth + 1)) return -1;
    lua_pop(L, 1);
  }
  return putc_(e, '}');
}

/* For a table marked with json.array: every key must be a positive integer; the
 * array runs to the largest one, holes encode as null. */
static int enc_marked_array(enc_t *e, int idx, int depth) {
  lua_State *L = e->L;
  lua_Unsigned count = 0, max = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    lua_Integer k = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 0;
    if (k < 1) return enc_error(e, "json: %s", "json.array table has a non-index key");
    if ((lua_Unsigned)k > max) max = (lua_Unsigned)k;
    count++;
  }
  if (max > 2 * count + 64)
    return enc_error(e, "json: %s", "json.array table is too sparse");
  return enc_array(e, idx, max, depth);
}

/* 1 if t has exactly the keys 1..n. */
static int is_sequence(lua_State *L, int idx, lua_Unsigned n) {
  lua_Unsigned count = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    lua_Integer k = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 0;
    if (k < 1 || (lua_Unsigned)k > n) return 0; /* the caller pops the key */
    count++;
  }
  return count == n;
}

static int enc_table(enc_t *e, int idx, int depth) {
  lua_State *L = e->L;
  const void *self = lua_topointer(L, idx);
  for (int i = 0; i < depth; i++)
    if (e->path[i] == self) return enc_error(e, "json: %s", "cannot encode a cycle");
  if (depth >= e->max_depth || !lua_checkstack(L, 4))
    return enc_error(e, "json: %s", "nesting too deep");
  e->path[depth] = self;

  int top = lua_gettop(L), marked = 0;
  if (lua_getmetatable(L, idx)) {
    marked = lua_rawequal(L, -1, UV_ARRAY_MT);
    lua_pop(L, 1);
  }
  if (marked) return enc_marked_array(e, idx, depth);
  lua_Unsigned n = lua_rawlen(L, idx);
  int seq = n > 0 && is_sequence(L, idx, n);
  lua_settop(L, top); /* is_sequence may stop with a key on the stack */
  return seq ? enc_array(e, idx, n, depth) : enc_object(e, idx, depth);
}

/* depth: how many tables enclose the value at idx. */
static int enc_value(enc_t *e, int idx, int depth) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    return put(e, "null", 4);
  case LUA_TBOOLEAN:
    return lua_toboolean(L, idx) ? put(e, "true", 4) : put(e, "false", 5);
  case LUA_TNUMBER:
    return lua_isinteger(L, idx) ? enc_integer(e, lua_tointeger(L, idx))
                                 : enc_float(e, lua_tonumber(L, idx));
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    return enc_string(e, s, n);
  }
  case LUA_TTABLE:
    return enc_table(e, idx, depth);
  case LUA_TUSERDATA:
    if (lua_rawequal(L, idx, UV_NULL)) return put(e, "null", 4);
    break;
  default:
    break;
  }
  return enc_error(e, "json: cannot encode a value of type %s", luaL_typename(L, idx));
}

/* json.encode(v [, {max_depth = n}]) -> string | nil, err */
static int l_encode(lua_State *L) {
  enc_t e;
  luaL_checkany(L, 1);
  e.max_depth = opt_max_depth(L, 2);
  lua_settop(L, 2);
  lua_pushnil(L); /* slot 3: the heap buffer's box, once needed */
  e.L = L;
  e.p = e.init;
  e.len = 0;
  e.cap = sizeof e.init;
  e.box = NULL;
  e.box_idx = 3;
  e.err[0] = '\0';

  int rc = enc_value(&e, 1, 0);
  if (rc == 0)
    lua_pushlstring(L, e.p, e.len);
  else
    lua_pushnil(L);
  if (e.box) box_release(L, e.box); /* free a large buffer now, not at the next GC */
  if (rc == 0) return 1;
  lua_pushstring(L, e.err);
  return 2;
}

/* ---------------------------------------------------------------------------------
 * json.array and the module table
 * ------------------------------------------------------------------------------- */

/* json.array([t]) -> t, marked so that it encodes as a JSON array. */
static int l_array(lua_State *L) {
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  } else {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    if (lua_getmetatable(L, 1)) {
      luaL_argcheck(L, lua_rawequal(L, -1, UV_ARRAY_MT), 1,
                    "table already has another metatable");
      lua_pop(L, 1);
    }
  }
  lua_pushvalue(L, UV_ARRAY_MT);
  lua_setmetatable(L, 1);
  return 1;
}

int bind_json_open(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"encode", l_encode},
      {"decode", l_decode},
      {"array", l_array},
      {NULL, NULL},
  };
  lua_createtable(L, 0, 4);
  push_null(L);
  push_array_mt(L);
  lua_createtable(L, 0, 1); /* the box metatable */
  lua_pushcfunction(L, box_gc);
  lua_setfield(L, -2, "__gc");
  luaL_setfuncs(L, funcs, 3);
  push_null(L);
  lua_setfield(L, -2, "null");
  return 1;
}
