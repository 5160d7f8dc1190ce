/* test_bind_json: the json module (encode/decode/null/array) through Lua, and
 * bind_json_push and json_utf8_valid directly from C. */
#include "check.h"
#include "bind_json.h"

#include <lauxlib.h>
#include <lualib.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Runs a Lua chunk named after the C line, so a failing assert points here. */
static void run_lua(lua_State *L, const char *code, int line) {
  char name[64];
  snprintf(name, sizeof name, "=%s:%d", __FILE__, line);
  if (luaL_loadbuffer(L, code, strlen(code), name) || lua_pcall(L, 0, 0, 0)) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    exit(1);
  }
}
#define LUA(code) run_lua(L, code, __LINE__)

static lua_State *new_state(void) {
  lua_State *L = luaL_newstate();
  CHECK(L != NULL);
  luaL_openlibs(L);
  bind_json_open(L);
  lua_setglobal(L, "json");
  return L;
}

static const char *prelude =
    "enc, dec = json.encode, json.decode\n"
    "function isarray(t) return getmetatable(t) == getmetatable(json.array()) end\n"
    "function deq(a, b)\n"
    "  if type(a) ~= type(b) then return false end\n"
    "  if type(a) == 'number' then return math.type(a) == math.type(b) and a == b end\n"
    "  if type(a) ~= 'table' then return a == b end\n"
    "  if isarray(a) ~= isarray(b) then return false end\n"
    "  for k, v in pairs(a) do if not deq(v, b[k]) then return false end end\n"
    "  for k in pairs(b) do if a[k] == nil then return false end end\n"
    "  return true\n"
    "end\n"
    "function rt(v) local s = assert(enc(v)); local r, err = dec(s);"
    "  assert(err == nil, err); return r, s end\n"
    "function fails(pat, f, ...) local v, err = f(...)\n" /* errors point at the caller */
    "  if v ~= nil then error('expected failure, got ' .. tostring(v), 2) end\n"
    "  if type(err) ~= 'string' or not err:find(pat, 1, true) then\n"
    "    error('error ' .. tostring(err) .. ' lacks ' .. pat, 2) end end\n";

static void test_strings(lua_State *L) {
  LUA("for _, s in ipairs{'', 'plain', 'h\\u{e9}llo w\\u{f6}rld \\u{2713} \\u{1F600}',"
      "  '\"\\\\/\\b\\f\\n\\r\\t', '\\1\\31\\127', '\\u{10FFFF}', string.rep('x\\n', "
      "5000)} do\n"
      "  assert(rt(s) == s, s) end\n"
      "assert(enc('\"') == [[\"\\\"\"]])\n"
      "assert(enc('a\\\\b') == [[\"a\\\\b\"]])\n"
      "assert(enc('\\n\\t\\r\\b\\f') == [[\"\\n\\t\\r\\b\\f\"]])\n"
      "assert(enc('\\1\\31') == [[\"\\u0001\\u001f\"]])\n"
      "assert(enc('a\\0b') == [[\"a\\u0000b\"]])\n"
      /* ...but cJSON cannot hold a NUL in a string, so decoding \u0000 fails */
      "fails('\\\\u0000 in a string is not supported', dec, enc('a\\0b'))\n"
      "assert(enc('\\127/\\u{e9}') == '\"\\127/\\u{e9}\"')\n" /* DEL, / and UTF-8 as is */
      "assert(dec([[\"\\u00e9\\u20AC\"]]) == '\\u{e9}\\u{20ac}')\n"
      "assert(dec([[\"\\ud83d\\ude00\"]]) == '\\u{1F600}')\n"
      "assert(dec([[\"\\/\\\"\\\\\\b\\f\\n\\r\\t\"]]) == '/\"\\\\\\b\\f\\n\\r\\t')\n"
      "assert(dec([[\"\\u001f\"]]) == '\\31')\n"
      "fails('invalid JSON', dec, [[\"\\ud800\"]])\n"        /* lone high surrogate */
      "fails('invalid JSON', dec, [[\"\\udc00\"]])\n"        /* lone low surrogate */
      "fails('invalid JSON', dec, [[\"\\ud800\\u0041\"]])\n" /* high + non-low */
      "fails('\\\\u0000', dec, [[\"a\\u0000b\"]])\n"         /* cJSON would cut it */
      "assert(dec([[\"a\\\\u0000b\"]]) == 'a\\\\u0000b')\n"  /* escaped backslash */
      "fails('control character in a string', dec, '\"a\\1b\"')\n"
      "fails('control character in a string', dec, '\"a\\nb\"')\n"
      "fails('invalid JSON', dec, [[\"\\x\"]])\n"
      "assert(enc({['k\"\\n'] = 'v'}) == [[{\"k\\\"\\n\":\"v\"}]])\n");
}

static void test_numbers(lua_State *L) {
  LUA("assert(enc(1) == '1' and enc(-7) == '-7' and enc(0) == '0')\n"
      "assert(enc(1.0) == '1.0' and enc(-0.0) == '-0.0' and enc(0.1) == '0.1')\n"
      "assert(enc(1e300) == '1e+300' and enc(-2.5) == '-2.5')\n"
      "assert(enc(2^53) == '9007199254740992.0')\n"
      "assert(enc(9007199254740993) == '9007199254740993')\n"
      "assert(enc(math.maxinteger) == '9223372036854775807')\n"
      "assert(enc(math.mininteger) == '-9223372036854775808')\n"
      "for _, x in ipairs{0.1, 1/3, 2/3, 1e-300, 5e-324, 1.7976931348623157e308, -1e-7,"
      "    123456.789, 2^53 + 2, 1e22, 3.0e15 + 0.5} do\n"
      "  local r, s = rt(x); assert(r == x, s) end\n"
      /* integers stay integers, exactly, up to 2^53 */
      "for _, i in ipairs{0, 1, -1, 42, 2^31, -(2^31), 9007199254740992,"
      "    -9007199254740992} do\n"
      "  i = math.tointeger(i); local r = rt(i)\n"
      "  assert(math.type(r) == 'integer' and r == i, i) end\n"
      "local v = dec('9007199254740992')\n"
      "assert(math.type(v) == 'integer' and v == 9007199254740992)\n"
      "v = dec('-9007199254740992')\n"
      "assert(math.type(v) == 'integer' and v == -9007199254740992)\n"
      /* beyond 2^53 cJSON only has a double */
      "v = dec('9007199254740994'); assert(math.type(v) == 'float' and v == 2^53 + 2)\n"
      "v = dec('1e300'); assert(math.type(v) == 'float' and v == 1e300)\n"
      "v = dec('1.5'); assert(math.type(v) == 'float' and v == 1.5)\n"
      "v = dec('-12'); assert(math.type(v) == 'integer' and v == -12)\n"
      "v = dec('1E2'); assert(math.type(v) == 'integer' and v == 100)\n"
      /* cJSON keeps no number text: an integral 1.0 comes back as an integer */
      "v = dec('1.0'); assert(math.type(v) == 'integer' and v == 1)\n"
      "v = dec('-0'); assert(math.type(v) == 'float' and 1/v == -math.huge)\n"
      "v = dec('-0.0'); assert(math.type(v) == 'float' and 1/v == -math.huge)\n"
      "v = rt(-0.0); assert(math.type(v) == 'float' and 1/v == -math.huge)\n"
      "v = dec('0'); assert(math.type(v) == 'integer' and v == 0)\n"
      "v = dec('1e999'); assert(v == math.huge)\n" /* cJSON overflows to inf */
      "fails('NaN', enc, 0/0)\n"
      "fails('inf', enc, math.huge)\n"
      "fails('inf', enc, {x = -math.huge})\n"
      "for _, s in ipairs{'01', '-01', '1.', '.5', '+1', '1e', '1e+', '-', '0x10', "
      "'1.5.3',"
      "    '[01]', '[1.]', 'NaN', 'Infinity', '-Infinity', '1ee5'} do\n"
      "  local r, err = dec(s); assert(r == nil and err, s) end\n");
}

static void test_null_and_containers(lua_State *L) {
  LUA("assert(type(json.null) == 'userdata' and tostring(json.null) == 'null')\n"
      "assert(dec('null') == json.null and enc(json.null) == 'null')\n"
      "assert(enc(nil) == 'null' and enc(true) == 'true' and enc(false) == 'false')\n"
      "assert(getmetatable(json.null) == 'json.null')\n"
      "local t = dec('[null, 1, null]')\n"
      "assert(#t == 3 and t[1] == json.null and t[3] == json.null and isarray(t))\n"
      "assert(enc(t) == '[null,1,null]')\n"
      "assert(enc({a = json.null}) == '{\"a\":null}')\n"
      "assert(dec('{\"a\":null}').a == json.null)\n"
      /* empty array and empty object keep their kind both ways */
      "assert(enc(dec('[]')) == '[]' and enc(dec('{}')) == '{}')\n"
      "assert(enc({}) == '{}' and enc(json.array()) == '[]')\n"
      "local o = dec('{\"a\":[],\"b\":{},\"c\":[[]]}')\n"
      "assert(isarray(o.a) and #o.a == 0 and not isarray(o.b) and next(o.b) == nil)\n"
      "assert(not isarray(o))\n"
      "assert(deq(dec(enc(o)), o))\n"
      "assert(enc({a = {}}) == '{\"a\":{}}' and enc({a = json.array()}) == "
      "'{\"a\":[]}')\n"
      "assert(enc(dec('[[],{}]')) == '[[],{}]')\n"
      /* sequences, marked arrays, objects */
      "assert(enc({1, 2, 3}) == '[1,2,3]' and enc({'a', {true}}) == '[\"a\",[true]]')\n"
      "local a = {1, 2}; assert(json.array(a) == a and enc(a) == '[1,2]')\n"
      "assert(json.array(a) == a)\n" /* idempotent */
      "assert(enc(json.array{1, nil, 3}) == '[1,null,3]')\n"
      "local h = json.array(); h[3] = 'x'; assert(enc(h) == '[null,null,\"x\"]')\n"
      "fails('non-index key', enc, json.array{1, x = 2})\n"
      "fails('non-index key', enc, json.array{[0] = 1})\n"
      "local sp = json.array(); sp[1e6] = 1; fails('sparse', enc, sp)\n"
      "local m = dec(assert(enc({1, 2, x = 3})))\n" /* mixed: an object */
      "assert(deq(m, {['1'] = 1, ['2'] = 2, x = 3}))\n"
      "m = dec(assert(enc({[1] = 'a', [3] = 'c'})))\n" /* not a sequence: an object */
      "assert(deq(m, {['1'] = 'a', ['3'] = 'c'}))\n"
      "fails('table key of type boolean', enc, {[true] = 1})\n"
      "fails('not a positive integer', enc, {[1.5] = 1})\n"
      "fails('not a positive integer', enc, {[0] = 1, x = 1})\n"
      "fails('not a positive integer', enc, {[-1] = 1})\n"
      "fails('table key of type table', enc, {[{}] = 1})\n"
      "fails('type function', enc, print)\n"
      "fails('type function', enc, {f = print})\n"
      "fails('type thread', enc, {coroutine.create(print)})\n"
      "fails('type userdata', enc, io.stdout)\n"
      "assert(not pcall(json.array, setmetatable({}, {})))\n"
      "assert(not pcall(json.array, 5))\n"
      "assert(not pcall(enc))\n"
      "assert(not pcall(dec))\n"
      "assert(not pcall(dec, {}))\n"
      /* object member order does not matter; duplicates: the last wins */
      "local d = dec('{\"k\":1,\"k\":2}'); assert(d.k == 2)\n"
      "local big = {}; for i = 1, 3000 do big['key' .. i] = json.array{i, i + 0.5, 'v' "
      ".. i} end\n"
      "assert(deq(rt(big), big))\n"
      "local seq = {}; for i = 1, 20000 do seq[i] = i end\n"
      "local s = assert(enc(seq)); assert(#s > 2048 and deq(dec(s), json.array(seq)))\n"
      "local long = string.rep('\\u{e9}\\1', 50000); assert(rt(long) == long)\n"
      "local ev = dec([[ "
      "{\"id\":\"1\",\"data\":{\"hubName\":\"chat\",\"n\":3,\"ok\":true,"
      "  \"list\":[1.25,\"x\",null]}} ]])\n"
      "assert(ev.id == '1' and ev.data.hubName == 'chat' and ev.data.n == 3)\n"
      "assert(ev.data.ok == true and ev.data.list[1] == 1.25 and ev.data.list[3] == "
      "json.null)\n"
      /* a shared (not cyclic) table is fine */
      "local sh = {1}; assert(enc({sh, sh}) == '[[1],[1]]')\n"
      /* other metatables are ignored: raw contents are encoded */
      "assert(enc(setmetatable({a = 1}, {__index = function() return 9 end})) =="
      "  '{\"a\":1}')\n");
}

static void test_limits_and_errors(lua_State *L) {
  LUA("local function nest(n) return string.rep('[', n) .. string.rep(']', n) end\n"
      "assert(dec(nest(128)))\n"
      "fails('nesting too deep', dec, nest(129))\n"
      "fails('nesting too deep', dec, string.rep('{\"a\":', 129) .. '1' .."
      "  string.rep('}', 129))\n"
      "assert(dec(string.rep('{\"a\":', 128) .. '1' .. string.rep('}', 128)))\n"
      "assert(dec(nest(200), {max_depth = 200}))\n"
      "fails('nesting too deep', dec, nest(11), {max_depth = 10})\n"
      "assert(dec(nest(1000), {max_depth = 1000}))\n"
      "fails('nesting too deep', dec, nest(1001), {max_depth = 1000})\n"
      "assert(dec('[\"[[[[\"]', {max_depth = 1}))\n" /* brackets in strings do not count
                                                      */
      "assert(not pcall(dec, '1', {max_depth = 0}))\n"
      "assert(not pcall(dec, '1', {max_depth = 1001}))\n"
      "assert(not pcall(dec, '1', 5))\n"
      "local function deep(n) local t = {} for _ = 2, n do t = {t} end return t end\n"
      "assert(enc(deep(3)) == '[[{}]]')\n"
      "assert(enc(deep(128)))\n"
      "fails('nesting too deep', enc, deep(129))\n"
      "assert(enc(deep(500), {max_depth = 500}))\n"
      "fails('nesting too deep', enc, deep(4), {max_depth = 3})\n"
      "assert(not pcall(enc, 1, {max_depth = -1}))\n"
      /* cycles */
      "local t = {}; t.self = t; fails('cycle', enc, t)\n"
      "local a, b = {}, {}; a[1] = b; b[1] = a; fails('cycle', enc, a)\n"
      "local c = json.array(); c[1] = c; fails('cycle', enc, c)\n"
      /* trailing garbage and malformed text */
      "assert(dec('[1] ') and dec(' \\t\\r\\n[1]\\n'))\n"
      "fails('invalid JSON at offset 4', dec, '[1] x')\n"
      "fails('invalid JSON', dec, '[1][2]')\n"
      "fails('invalid JSON', dec, '{\"a\":1}}')\n"
      "fails('control character', dec, '[1]\\0')\n"
      "fails('control character', dec, '[1]\\0garbage')\n"
      "fails('control character', dec, '\\1[1]')\n"
      "fails('unexpected end', dec, '')\n"
      "fails('unexpected end', dec, '  ')\n"
      "fails('unexpected end', dec, '[1,')\n"
      "fails('invalid JSON at offset 0: unterminated string', dec, '\"abc')\n"
      "fails('unterminated string', dec, '[\"abc\\\\\"]')\n"
      "for _, s in ipairs{'[1,]', '{\"a\":1,}', '[1 2]', 'tru', 'nul', \"'a'\", '{a:1}',"
      "    '{\"a\"}', '[', ']', '}'} do\n"
      "  local r, err = dec(s); assert(r == nil and err, s) end\n"
      /* invalid UTF-8 both ways */
      "for _, s in ipairs{'\\xff', '\\xc0\\xaf', '\\xc1\\xbf', '\\xe0\\x80\\xaf', "
      "'\\xed\\xa0\\x80',"
      "    '\\xed\\xbf\\xbf', '\\xf0\\x80\\x80\\xaf', '\\xf4\\x90\\x80\\x80', "
      "'\\xf5\\x80\\x80\\x80',"
      "    '\\x80', 'a\\xe2\\x82', '\\xe2\\x82'} do\n"
      "  fails('invalid UTF-8', dec, '\"' .. s .. '\"')\n"
      "  fails('invalid UTF-8', dec, '[\"ok\",\"' .. s .. '\"]')\n"
      "  fails('invalid UTF-8', enc, s)\n"
      "  fails('invalid UTF-8', enc, {[s] = 1})\n"
      "  fails('invalid UTF-8', enc, {'ok', {s}})\n"
      "end\n"
      "fails('invalid UTF-8', dec, '\\xff')\n");
}

/* An allocator that fails past a limit, to drive out-of-memory paths. */
typedef struct {
  size_t used, limit;
} mem_t;

static void *limited_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  mem_t *m = ud;
  size_t old = ptr ? osize : 0;
  if (nsize == 0) {
    free(ptr);
    m->used -= old;
    return NULL;
  }
  if (m->limit && nsize > old && m->used + (nsize - old) > m->limit) return NULL;
  void *p = realloc(ptr, nsize);
  if (p) m->used = m->used - old + nsize;
  return p;
}

static void test_out_of_memory(void) {
  mem_t m = {0, 0};
  lua_State *L = lua_newstate(limited_alloc, &m);
  CHECK(L != NULL);
  luaL_openlibs(L);
  bind_json_open(L);
  lua_setglobal(L, "json");
  LUA("big = {} for i = 1, 300 do big[i] = {k = 'v' .. i, n = i, a = {i, 0.5}} end\n"
      "text = json.encode(big)\n"
      "function try_enc() return json.encode(big) end\n"
      "function try_dec() return json.decode(text) end\n");
  lua_gc(L, LUA_GCCOLLECT);
  int failed_enc = 0, failed_dec = 0, ok = 0;
  for (size_t extra = 0; extra < 400000; extra += 997) {
    for (int which = 0; which < 2; which++) {
      lua_getglobal(L, which ? "try_dec" : "try_enc");
      m.limit = m.used + extra;
      int rc = lua_pcall(L, 0, 2, 0);
      m.limit = 0;
      /* encode returns nil, err; a failed allocation in Lua itself raises */
      if (rc != LUA_OK || lua_isnil(L, -2))
        *(which ? &failed_dec : &failed_enc) += 1;
      else
        ok++;
      lua_settop(L, 0);
      lua_gc(L, LUA_GCCOLLECT);
    }
  }
  CHECK(failed_enc > 0 && failed_dec > 0 && ok > 0);
  LUA("assert(json.decode(json.encode(big))[300].a[2] == 0.5)\n");
  lua_close(L);
  CHECK(m.used == 0);
}

static int push_protected(lua_State *L) {
  bind_json_push(L, lua_touserdata(L, 1));
  return 1;
}

static void test_push(lua_State *L) {
  const char *text = "{\"a\":[1,2.5,null,true,\"s\\u00e9\",-0,9007199254740992,1e300],"
                     "\"b\":{},\"c\":[],\"d\":false,\"e\":{\"f\":{\"g\":[[]]}}}";
  cJSON *root = cJSON_Parse(text);
  CHECK(root != NULL);
  int top = lua_gettop(L);
  bind_json_push(L, root);
  CHECK(lua_gettop(L) == top + 1);
  CHECK(lua_type(L, -1) == LUA_TTABLE);
  CHECK(lua_getfield(L, -1, "a") == LUA_TTABLE);
  CHECK(lua_rawlen(L, -1) == 8);
  CHECK(lua_rawgeti(L, -1, 1) == LUA_TNUMBER && lua_isinteger(L, -1));
  CHECK(lua_tointeger(L, -1) == 1);
  lua_pop(L, 1);
  CHECK(lua_rawgeti(L, -1, 2) == LUA_TNUMBER && !lua_isinteger(L, -1));
  CHECK(lua_tonumber(L, -1) == 2.5);
  lua_pop(L, 1);
  CHECK(lua_rawgeti(L, -1, 7) == LUA_TNUMBER && lua_isinteger(L, -1));
  CHECK(lua_tointeger(L, -1) == 9007199254740992LL);
  lua_pop(L, 1);
  CHECK(lua_rawgeti(L, -1, 5) == LUA_TSTRING);
  CHECK(strcmp(lua_tostring(L, -1), "s\xc3\xa9") == 0);
  lua_pop(L, 2);
  CHECK(lua_getfield(L, -1, "d") == LUA_TBOOLEAN && !lua_toboolean(L, -1));
  lua_pop(L, 1);
  lua_setglobal(L, "pushed");
  CHECK(lua_gettop(L) == top);
  LUA("local p = pushed\n"
      "assert(isarray(p.a) and isarray(p.c) and not isarray(p.b) and not isarray(p))\n"
      "assert(p.a[3] == json.null and p.a[4] == true and 1/p.a[6] == -math.huge)\n"
      "assert(math.type(p.a[8]) == 'float' and p.a[8] == 1e300)\n"
      "assert(isarray(p.e.f.g) and isarray(p.e.f.g[1]) and #p.e.f.g[1] == 0)\n"
      "assert(enc(p.b) == '{}' and enc(p.c) == '[]' and enc(p.e) == "
      "'{\"f\":{\"g\":[[]]}}')\n");
  cJSON_Delete(root);

  /* scalars, null and a NULL pointer */
  cJSON *n = cJSON_CreateNull(), *num = cJSON_CreateNumber(3),
        *str = cJSON_CreateString("x");
  bind_json_push(L, n);
  lua_getglobal(L, "json");
  lua_getfield(L, -1, "null");
  CHECK(lua_rawequal(L, -1, -3));
  lua_pop(L, 3);
  bind_json_push(L, num);
  CHECK(lua_isinteger(L, -1) && lua_tointeger(L, -1) == 3);
  bind_json_push(L, str);
  CHECK(lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "x") == 0);
  bind_json_push(L, NULL);
  CHECK(lua_isnil(L, -1));
  lua_pop(L, 3);
  CHECK(lua_gettop(L) == top);
  cJSON_Delete(n);
  cJSON_Delete(num);
  cJSON_Delete(str);

  /* The hard depth guard raises (in a protected call) instead of overflowing. */
  for (int depth = 1000; depth <= 1001; depth++) {
    cJSON *deep = cJSON_CreateArray(), *cur = deep;
    for (int i = 1; i < depth; i++) {
      cJSON *child = cJSON_CreateArray();
      cJSON_AddItemToArray(cur, child);
      cur = child;
    }
    lua_pushcfunction(L, push_protected);
    lua_pushlightuserdata(L, deep);
    int rc = lua_pcall(L, 1, 1, 0);
    CHECK(depth == 1000 ? rc == LUA_OK : rc != LUA_OK);
    if (rc != LUA_OK) CHECK(strstr(lua_tostring(L, -1), "nesting too deep") != NULL);
    lua_pop(L, 1);
    cJSON_Delete(deep);
  }
  CHECK(lua_gettop(L) == top);

  /* Works on a state where bind_json_open was never called, and agrees with it later. */
  lua_State *L2 = luaL_newstate();
  cJSON *arr = cJSON_Parse("[null]");
  bind_json_push(L2, arr);
  bind_json_open(L2);
  lua_getfield(L2, -1, "null");
  lua_rawgeti(L2, -3, 1);
  CHECK(lua_rawequal(L2, -1, -2));
  lua_pop(L2, 3);
  cJSON_Delete(arr);
  lua_close(L2);
}

#define VALID(lit)   CHECK(json_utf8_valid(lit, sizeof(lit) - 1) == 1)
#define INVALID(lit) CHECK(json_utf8_valid(lit, sizeof(lit) - 1) == 0)

static void test_utf8(void) {
  CHECK(json_utf8_valid("", 0) == 1);
  VALID("abc");
  VALID("\0");
  VALID("\x7f");
  VALID("\xc2\x80");         /* U+0080 */
  VALID("\xdf\xbf");         /* U+07FF */
  VALID("\xe0\xa0\x80");     /* U+0800 */
  VALID("\xe2\x82\xac");     /* euro */
  VALID("\xed\x9f\xbf");     /* U+D7FF */
  VALID("\xee\x80\x80");     /* U+E000 */
  VALID("\xef\xbf\xbf");     /* U+FFFF */
  VALID("\xf0\x90\x80\x80"); /* U+10000 */
  VALID("\xf0\x9f\x98\x80"); /* emoji */
  VALID("\xf4\x8f\xbf\xbf"); /* U+10FFFF */
  VALID("h\xc3\xa9llo w\xc3\xb6rld, 0123456789 \xe2\x9c\x93 long ascii run here");
  INVALID("\x80");
  INVALID("\xbf");
  INVALID("\xc0\x80"); /* overlong NUL */
  INVALID("\xc1\xbf");
  INVALID("\xc2");
  INVALID("\xc2\x41");
  INVALID("\xe0\x80\x80"); /* overlong */
  INVALID("\xe0\x9f\xbf");
  INVALID("\xed\xa0\x80"); /* surrogates */
  INVALID("\xed\xbf\xbf");
  INVALID("\xe2\x82");
  INVALID("\xf0\x80\x80\x80"); /* overlong */
  INVALID("\xf0\x8f\xbf\xbf");
  INVALID("\xf4\x90\x80\x80"); /* > U+10FFFF */
  INVALID("\xf5\x80\x80\x80");
  INVALID("\xf8\x88\x80\x80\x80");
  INVALID("\xfe");
  INVALID("\xff");
  INVALID("\xf0\x9f\x98");
  /* an error at every position of a longer, mostly ASCII buffer */
  char buf[40];
  memset(buf, 'a', sizeof buf);
  CHECK(json_utf8_valid(buf, sizeof buf) == 1);
  for (size_t i = 0; i < sizeof buf; i++) {
    buf[i] = (char)0xff;
    CHECK(json_utf8_valid(buf, sizeof buf) == 0);
    CHECK(json_utf8_valid(buf, i) == 1);
    buf[i] = 'a';
  }
  for (size_t i = 0; i + 2 <= sizeof buf; i++) {
    memcpy(buf + i, "\xc3\xa9", 2);
    CHECK(json_utf8_valid(buf, sizeof buf) == 1);
    CHECK(json_utf8_valid(buf, i + 1) == 0); /* cut in the middle */
    memset(buf + i, 'a', 2);
  }
}

int main(void) {
  lua_State *L = new_state();
  LUA(prelude);
  test_strings(L);
  test_numbers(L);
  test_null_and_containers(L);
  test_limits_and_errors(L);
  test_push(L);
  lua_close(L);
  test_out_of_memory();
  test_utf8();
  printf("test_bind_json: ok\n");
  return 0;
}
