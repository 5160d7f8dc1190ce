/* test_bind_crypto: the crypto module against published vectors (RFC 4231
 * HMAC-SHA256, FIPS 180 SHA-256 examples, RFC 4648 base64), plus base64url, hex,
 * random_bytes and argument handling. */
#include "check.h"
#include "bind_crypto.h"

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

static const char *prelude =
    "function unhex(h) return (h:gsub('..', function(x) return string.char(tonumber(x, "
    "16)) "
    "end)) end\n"
    "function fails(pat, f, ...) local v, err = f(...)\n" /* errors point at the caller */
    "  if v ~= nil then error('expected failure, got ' .. tostring(v), 2) end\n"
    "  if type(err) ~= 'string' or not err:find(pat, 1, true) then\n"
    "    error('error ' .. tostring(err) .. ' lacks ' .. pat, 2) end end\n"
    "function raises(f, ...) if pcall(f, ...) then error('expected an error', 2) end "
    "end\n";

/* RFC 4231 section 4: test cases 1-4, 6 and 7 (5 is a truncated output). */
static void test_hmac(lua_State *L) {
  LUA("local h = crypto.hmac_sha256\n"
      "local cases = {\n"
      "  {string.rep('\\x0b', 20), 'Hi There',\n"
      "   'b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7'},\n"
      "  {'Jefe', 'what do ya want for nothing?',\n"
      "   '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843'},\n"
      "  {string.rep('\\xaa', 20), string.rep('\\xdd', 50),\n"
      "   '773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe'},\n"
      "  {unhex('0102030405060708090a0b0c0d0e0f10111213141516171819'), "
      "string.rep('\\xcd', "
      "50),\n"
      "   '82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b'},\n"
      "  {string.rep('\\xaa', 131), 'Test Using Larger Than Block-Size Key - Hash Key "
      "First',\n"
      "   '60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54'},\n"
      "  {string.rep('\\xaa', 131), 'This is a test using a larger than block-size key "
      "and a "
      "larger than block-size data. The key needs to be hashed before being used by the "
      "HMAC "
      "algorithm.',\n"
      "   '9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2'},\n"
      "}\n"
      "assert(#unhex('0102030405060708090a0b0c0d0e0f10111213141516171819') == 25)\n"
      "for i, c in ipairs(cases) do\n"
      "  assert(h(c[1], c[2], 'hex') == c[3], 'case ' .. i)\n"
      "  local raw = h(c[1], c[2]); assert(#raw == 32 and raw == unhex(c[3]), 'raw ' .. "
      "i)\n"
      "  assert(h(c[1], c[2], 'raw') == raw)\n"
      "end\n"
      "assert(#h('', '') == 32 and #h('', '', 'hex') == 64)\n"
      "assert(h('k', 'a\\0b', 'hex') ~= h('k', 'a', 'hex'))\n" /* binary-safe */
      "raises(h, 'k')\n"
      "raises(h, nil, 'm')\n"
      "raises(h, {}, 'm')\n"
      "raises(h, 'k', 'm', 'base64')\n");
}

static void test_sha256(lua_State *L) {
  LUA("local s = crypto.sha256\n"
      "assert(s('abc', 'hex') =="
      "  'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad')\n"
      "assert(s('', 'hex') =="
      "  'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855')\n"
      "assert(s('abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq', 'hex') =="
      "  '248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1')\n"
      "assert(s(string.rep('a', 1000000), 'hex') =="
      "  'cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0')\n"
      "assert(s('abc') == "
      "unhex('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'))\n"
      "assert(#s('x') == 32 and s('x', 'raw') == s('x'))\n"
      "raises(s)\n"
      "raises(s, {})\n"
      "raises(s, 'abc', 'HEX')\n");
}

static void test_base64(lua_State *L) {
  LUA("local e, d = crypto.base64_encode, crypto.base64_decode\n"
      "local ue, ud = crypto.base64url_encode, crypto.base64url_decode\n"
      /* RFC 4648 section 10 */
      "local v = {{'', ''}, {'f', 'Zg=='}, {'fo', 'Zm8='}, {'foo', 'Zm9v'},"
      "  {'foob', 'Zm9vYg=='}, {'fooba', 'Zm9vYmE='}, {'foobar', 'Zm9vYmFy'}}\n"
      "for _, c in ipairs(v) do\n"
      "  assert(e(c[1]) == c[2], c[1])\n"
      "  assert(d(c[2]) == c[1], c[2])\n"
      "  local bare = c[2]:gsub('=', '')\n"
      "  assert(d(bare) == c[1], bare)\n" /* padding is optional */
      "  assert(ue(c[1]) == bare and ud(bare) == c[1] and ud(c[2]) == c[1])\n"
      "end\n"
      /* the two alphabets differ in 62 and 63 */
      "local b = '\\xfb\\xff\\xbf'\n"
      "assert(e(b) == '+/+/' and ue(b) == '-_-_')\n"
      "assert(d('+/+/') == b and ud('-_-_') == b)\n"
      "fails('invalid base64 character at offset 0', d, '-_-_')\n"
      "fails('invalid base64 character at offset 0', ud, '+/+/')\n"
      "assert(ue('\\xff') == '_w' and e('\\xff') == '/w==')\n"
      /* every length and every byte value round-trips */
      "local all = {} for i = 0, 255 do all[#all + 1] = string.char(i) end\n"
      "all = table.concat(all)\n"
      "for n = 0, #all do local s = all:sub(1, n)\n"
      "  assert(d(e(s)) == s and ud(ue(s)) == s, n)\n"
      "  assert(#e(s) == 4 * math.ceil(n / 3) and not ue(s):find('[=+/]'))\n"
      "end\n"
      "local big = crypto.random_bytes(100000); assert(d(e(big)) == big)\n"
      /* invalid input */
      "fails('invalid base64 length', d, 'Z')\n"
      "fails('invalid base64 length', d, 'Zm9vY')\n"
      "fails('invalid base64 character at offset 2', d, 'Zm=v')\n"
      "fails('invalid base64 character', d, 'Zg=')\n" /* padding must complete 4 */
      "fails('invalid base64 length', d, 'Zg===')\n"
      "fails('invalid base64 character', d, '====')\n"
      "fails('invalid base64 character', d, 'Zm9\\n')\n" /* no whitespace */
      "fails('invalid base64 character', d, 'Zm 9')\n"
      "fails('invalid base64 character', d, 'Zm9\\0')\n"
      "fails('invalid base64 character', d, 'Zm9\\xff')\n"
      "fails('invalid base64 character at offset 4', ud, 'Zm9v=Zm9')\n"
      "raises(e)\n"
      "raises(d, {})\n"
      "raises(ue, nil)\n"
      "raises(ud, function() end)\n");
}

static void test_hex_and_random(lua_State *L) {
  LUA("local x = crypto.hex_encode\n"
      "assert(x('') == '' and x('\\0\\1\\x7f\\x80\\xfe\\xff') == '00017f80feff')\n"
      "assert(x('abc') == '616263')\n"
      "raises(x)\n"
      "local r = crypto.random_bytes\n"
      "assert(r(0) == '')\n"
      "for _, n in ipairs{1, 16, 32, 1000, 1048576} do assert(#r(n) == n) end\n"
      "local seen = {}\n"
      "for i = 1, 100 do local s = r(16); assert(not seen[s]); seen[s] = true end\n"
      "local a, b = r(32), r(32); assert(a ~= b)\n"
      "local zeros = 0; for i = 1, 4096 do if r(1) == '\\0' then zeros = zeros + 1 end "
      "end\n"
      "assert(zeros < 64)\n" /* expect ~16 */
      "raises(r, -1)\n"
      "raises(r, 1048577)\n"
      "raises(r, 1.5)\n"
      "raises(r, 'x')\n"
      "raises(r)\n");
}

int main(void) {
  lua_State *L = luaL_newstate();
  CHECK(L != NULL);
  luaL_openlibs(L);
  int top = lua_gettop(L);
  CHECK(bind_crypto_open(L) == 1);
  CHECK(lua_gettop(L) == top + 1 && lua_type(L, -1) == LUA_TTABLE);
  lua_setglobal(L, "crypto");
  LUA(prelude);
  LUA("for _, f in ipairs{'hmac_sha256', 'sha256', 'base64_encode', 'base64_decode',"
      "  'base64url_encode', 'base64url_decode', 'random_bytes', 'hex_encode'} do\n"
      "  assert(type(crypto[f]) == 'function', f) end\n");
  test_hmac(L);
  test_sha256(L);
  test_base64(L);
  test_hex_and_random(L);
  lua_close(L);
  printf("test_bind_crypto: ok\n");
  return 0;
}
