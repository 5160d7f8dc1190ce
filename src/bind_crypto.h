/* bind_crypto: the `crypto` module scripts use: HMAC-SHA256, SHA-256, base64 and
 * base64url, hex and random bytes, on top of OpenSSL libcrypto. No state of its own.
 */
#ifndef LUAHOOK_BIND_CRYPTO_H
#define LUAHOOK_BIND_CRYPTO_H

#include <lua.h>

/* luaopen-style: pushes the `crypto` module table. */
int bind_crypto_open(lua_State *L);

/* Base64 (url = 0) or base64url (url = 1) decoding, padding optional. out needs
 * crypto_base64_decoded_max(n) bytes. Returns 0 and *outlen, or -1 with the offset
 * of the first bad character in *bad (n when the length is impossible). */
size_t crypto_base64_decoded_max(size_t n);
int crypto_base64_decode(const char *s, size_t n, int url, unsigned char *out,
                         size_t *outlen, size_t *bad);

#endif
