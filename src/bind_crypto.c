/* bind_crypto: the `crypto` module. Digests, HMAC and randomness come from OpenSSL
 * libcrypto; base64, base64url and hex are done here (OpenSSL's block decoder
 * neither reports the decoded length exactly nor knows the URL alphabet).
 * Wrong argument types raise; undecodable data returns nil, err.
 */
#include "bind_crypto.h"

#include <lauxlib.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <limits.h>
#include <stdint.h>
#include <string.h>

#define RANDOM_MAX (1024 * 1024)

static const char hexdigits[] = "0123456789abcdef";

static void hex_into(char *out, const unsigned char *in, size_t n) {
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = hexdigits[in[i] >> 4];
    out[2 * i + 1] = hexdigits[in[i] & 15];
  }
}

/* Pushes a digest as raw bytes or, if the option at arg is "hex", as lowercase hex. */
static void push_digest(lua_State *L, const unsigned char *md, size_t n, int hex) {
  char buf[2 * EVP_MAX_MD_SIZE];
  if (!hex) {
    lua_pushlstring(L, (const char *)md, n);
    return;
  }
  hex_into(buf, md, n);
  lua_pushlstring(L, buf, 2 * n);
}

static int check_format(lua_State *L, int arg) {
  static const char *const formats[] = {"raw", "hex", NULL};
  return luaL_checkoption(L, arg, "raw", formats);
}

static int fail(lua_State *L, const char *msg) {
  luaL_pushfail(L);
  lua_pushstring(L, msg);
  return 2;
}

/* crypto.hmac_sha256(key, msg [, "hex"]) -> 32 bytes or 64 hex digits */
static int l_hmac_sha256(lua_State *L) {
  size_t kl, ml;
  const char *key = luaL_checklstring(L, 1, &kl);
  const char *msg = luaL_checklstring(L, 2, &ml);
  int hex = check_format(L, 3);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdl = 0;
  luaL_argcheck(L, kl <= INT_MAX, 1, "key too long");
  if (!HMAC(EVP_sha256(), key, (int)kl, (const unsigned char *)msg, ml, md, &mdl))
    return fail(L, "crypto: HMAC-SHA256 failed");
  push_digest(L, md, mdl, hex);
  return 1;
}

/* crypto.sha256(msg [, "hex"]) -> 32 bytes or 64 hex digits */
static int l_sha256(lua_State *L) {
  size_t ml;
  const char *msg = luaL_checklstring(L, 1, &ml);
  int hex = check_format(L, 2);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdl = 0;
  if (!EVP_Digest(msg, ml, md, &mdl, EVP_sha256(), NULL))
    return fail(L, "crypto: SHA-256 failed");
  push_digest(L, md, mdl, hex);
  return 1;
}

/* crypto.hex_encode(s) -> lowercase hex */
static int l_hex_encode(lua_State *L) {
  size_t n;
  const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
  luaL_argcheck(L, n <= SIZE_MAX / 4, 1, "string too long");
  luaL_Buffer b;
  char *out = luaL_buffinitsize(L, &b, 2 * n);
  hex_into(out, s, n);
  luaL_pushresultsize(&b, 2 * n);
  return 1;
}

/* {======================================================================
 * base64 (RFC 4648 section 4) and base64url (section 5)
 * ======================================================================= */

static const char b64_std[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int b64_encode(lua_State *L, int url) {
  size_t n;
  const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
  const char *abc = url ? b64_url : b64_std;
  luaL_argcheck(L, n <= SIZE_MAX / 2, 1, "string too long");
  size_t full = n / 3, rest = n % 3;
  size_t outlen = 4 * full + (rest == 0 ? 0 : url ? rest + 1 : 4);
  luaL_Buffer b;
  char *o = luaL_buffinitsize(L, &b, outlen);
  for (size_t i = 0; i < full; i++, s += 3, o += 4) {
    uint32_t v = (uint32_t)s[0] << 16 | (uint32_t)s[1] << 8 | s[2];
    o[0] = abc[v >> 18];
    o[1] = abc[(v >> 12) & 63];
    o[2] = abc[(v >> 6) & 63];
    o[3] = abc[v & 63];
  }
  if (rest) {
    uint32_t v = (uint32_t)s[0] << 16 | (rest == 2 ? (uint32_t)s[1] << 8 : 0);
    o[0] = abc[v >> 18];
    o[1] = abc[(v >> 12) & 63];
    if (rest == 2)
      o[2] = abc[(v >> 6) & 63];
    else if (!url)
      o[2] = '=';
    if (!url) o[3] = '=';
  }
  luaL_pushresultsize(&b, outlen);
  return 1;
}

static int b64_value(unsigned char c, int url) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == (url ? '-' : '+')) return 62;
  if (c == (url ? '_' : '/')) return 63;
  return -1;
}

size_t crypto_base64_decoded_max(size_t n) {
  return n / 4 * 3 + 3;
}

/* Accepts the text with its padding or without it; nothing else (no whitespace).
 * Unused low bits of the last character are ignored. */
int crypto_base64_decode(const char *text, size_t n, int url, unsigned char *o,
                         size_t *outlen, size_t *bad) {
  const unsigned char *s = (const unsigned char *)text;
  size_t len = n;
  *bad = 0;
  if (n % 4 == 0 && n > 0 && s[n - 1] == '=') len -= s[n - 2] == '=' ? 2 : 1;
  if (len % 4 == 1) {
    *bad = n;
    return -1;
  }
  uint32_t acc = 0;
  size_t k = 0;
  for (size_t i = 0; i < len; i++) {
    int v = b64_value(s[i], url);
    if (v < 0) {
      *bad = i;
      return -1;
    }
    acc = acc << 6 | (uint32_t)v;
    if (i % 4 == 3) {
      o[k++] = (unsigned char)(acc >> 16);
      o[k++] = (unsigned char)(acc >> 8);
      o[k++] = (unsigned char)acc;
      acc = 0;
    }
  }
  if (len % 4 == 2) {
    o[k++] = (unsigned char)(acc >> 4);
  } else if (len % 4 == 3) {
    o[k++] = (unsigned char)(acc >> 10);
    o[k++] = (unsigned char)(acc >> 2);
  }
  *outlen = k;
  return 0;
}

static int b64_decode(lua_State *L, int url) {
  size_t n, k, bad;
  const char *s = luaL_checklstring(L, 1, &n);
  luaL_Buffer b;
  unsigned char *o =
      (unsigned char *)luaL_buffinitsize(L, &b, crypto_base64_decoded_max(n));
  if (crypto_base64_decode(s, n, url, o, &k, &bad) != 0) {
    luaL_pushfail(L);
    if (bad == n)
      lua_pushliteral(L, "crypto: invalid base64 length");
    else
      lua_pushfstring(L, "crypto: invalid base64 character at offset %I",
                      (lua_Integer)bad);
    return 2;
  }
  luaL_pushresultsize(&b, k);
  return 1;
}

static int l_base64_encode(lua_State *L) {
  return b64_encode(L, 0);
}
static int l_base64_decode(lua_State *L) {
  return b64_decode(L, 0);
}
static int l_base64url_encode(lua_State *L) {
  return b64_encode(L, 1);
}
static int l_base64url_decode(lua_State *L) {
  return b64_decode(L, 1);
}

/* }====================================================================== */

/* crypto.random_bytes(n) -> n bytes from the OpenSSL CSPRNG, 0 <= n <= 1 MiB */
static int l_random_bytes(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 0 && n <= RANDOM_MAX, 1, "must be from 0 to 1048576");
  luaL_Buffer b;
  unsigned char *out = (unsigned char *)luaL_buffinitsize(L, &b, (size_t)n);
  if (n > 0 && RAND_bytes(out, (int)n) != 1)
    return fail(L, "crypto: random generator failure");
  luaL_pushresultsize(&b, (size_t)n);
  return 1;
}

int bind_crypto_open(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"hmac_sha256", l_hmac_sha256},
      {"sha256", l_sha256},
      {"base64_encode", l_base64_encode},
      {"base64_decode", l_base64_decode},
      {"base64url_encode", l_base64url_encode},
      {"base64url_decode", l_base64url_decode},
      {"random_bytes", l_random_bytes},
      {"hex_encode", l_hex_encode},
      {NULL, NULL},
  };
  luaL_newlib(L, funcs);
  return 1;
}
