/* bind_json: the `json` module scripts use (json.encode, json.decode, json.null,
 * json.array) and the one cJSON -> Lua conversion the runtime uses for event data.
 *
 * Arrays become sequences that carry a shared metatable (so an empty array encodes
 * back as []); null becomes the json.null sentinel; integral numbers within +-2^53
 * become Lua integers. It owns no C state: the sentinel and the array metatable live
 * in the Lua registry.
 */
#ifndef LUAHOOK_BIND_JSON_H
#define LUAHOOK_BIND_JSON_H

#include <cjson/cJSON.h>
#include <lua.h>
#include <stddef.h>

/* Default and hard nesting limits (containers inside containers). */
#define JSON_DEFAULT_MAX_DEPTH 128
#define JSON_HARD_MAX_DEPTH    1000

/* Converts v to a Lua value and pushes it. May raise a Lua error (out of memory,
 * nesting beyond JSON_HARD_MAX_DEPTH), so call it inside a protected call. */
void bind_json_push(lua_State *L, const cJSON *v);

/* luaopen-style: pushes the `json` module table. */
int bind_json_open(lua_State *L);

/* 1 if s[0..n) is well-formed UTF-8 (no overlongs, no surrogates, nothing above
 * U+10FFFF), else 0. NUL bytes are valid UTF-8. */
int json_utf8_valid(const char *s, size_t n);

/* Length of the well-formed UTF-8 sequence at p (a lead byte >= 0x80), or 0. */
size_t json_utf8_seq(const unsigned char *p, size_t avail);

#endif
