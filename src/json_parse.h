/* json_parse: the request path's JSON parser. One strict pass over the text
 * (RFC 8259: UTF-8, no raw control characters, well-formed numbers and escapes,
 * nothing after the value, a depth limit) that builds a cJSON tree inside an
 * arena: no malloc per node, nothing to free but the arena. The tree is an
 * ordinary cJSON tree for reading (cJSON_GetObjectItemCaseSensitive, child/next);
 * it must never be given to cJSON_Delete or to cJSON's editing functions.
 *
 * Strings are NUL-terminated, so a "\u0000" escape is refused. Duplicate keys are
 * kept in order (lookups find the first, as with cJSON).
 */
#ifndef LUAHOOK_JSON_PARSE_H
#define LUAHOOK_JSON_PARSE_H

#include "arena.h"

#include <cjson/cJSON.h>
#include <stddef.h>

/* Called for each element of a top-level array with its byte span (trimmed). */
typedef void (*json_elem_fn)(void *ud, size_t off, size_t len);

typedef struct json_error {
  const char *msg; /* static text */
  size_t off;      /* byte offset of the problem */
} json_error;

/* Parses s[0..n) into a; returns the root, or NULL with *err set (on an arena
 * allocation failure msg is "out of memory"). */
cJSON *json_parse(const char *s, size_t n, arena_t *a, int max_depth, json_elem_fn elem,
                  void *ud, json_error *err);

/* Building trees in an arena by hand (NULL when out of memory). */
cJSON *json_new(arena_t *a, int type);
char *json_strndup(arena_t *a, const char *s, size_t n);
/* Appends child to an array or object (key: the member name, or NULL). */
void json_append(cJSON *parent, cJSON *child, char *key);

#endif
