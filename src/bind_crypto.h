/* bind_crypto: the `crypto` module scripts use: HMAC-SHA256, SHA-256, base64 and
 * base64url, hex and random bytes, on top of OpenSSL libcrypto. No state of its own.
 */
#ifndef LUAHOOK_BIND_CRYPTO_H
#define LUAHOOK_BIND_CRYPTO_H

#include <lua.h>

/* luaopen-style: pushes the `crypto` module table. */
int bind_crypto_open(lua_State *L);

#endif
