/* fuzz_json: differential libFuzzer target for json_parse, the JSON parser of the
 * request path and of json.decode (src/json_parse.c), against a reference: the
 * strict RFC 8259 token check below (what json_text_check did before json_parse
 * replaced it, plus a check of \u escapes) followed by cJSON_ParseWithLengthOpts
 * with nothing but white space after the value.
 *
 * Input: the JSON text, as is (it ends where libFuzzer's buffer ends, so any read
 * past it is an ASan report). Checks:
 *   - both accept or both refuse, at the same depth limit (64, the decoder's), save
 *     for cJSON's known limits: it skips a leading UTF-8 BOM (json_parse refuses
 *     it) and refuses numbers longer than 63 characters (json_parse reads them);
 *   - when both accept, the trees are equal (types, member names and order, strings
 *     byte for byte, numbers bit for bit);
 *   - a refusal has a message and an offset within the text;
 *   - for a top-level array, one element span per element, trimmed, inside the
 *     text, and each span parses on its own to the same value as its element.
 * The arena hides overflows between its allocations from ASan; the string
 * comparison with cJSON's copies is what catches a wrong length there.
 * dictionary: fuzz_decode.dict
 * ctest smoke: 15 s
 */
#include "arena.h"
#include "bind_json.h"
#include "json_parse.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEPTH     64
#define MAX_SPANS 4096

#define FAIL(...)                                                                        \
  do {                                                                                   \
    fprintf(stderr, "fuzz_json: check failed at %s:%d: ", __FILE__, __LINE__);           \
    fprintf(stderr, __VA_ARGS__);                                                        \
    fputc('\n', stderr);                                                                 \
    abort();                                                                             \
  } while (0)

typedef struct spans {
  size_t n;
  size_t off[MAX_SPANS], len[MAX_SPANS];
} spans;

static spans sp;

static void on_elem(void *ud, size_t off, size_t len) {
  spans *s = ud;
  if (s->n < MAX_SPANS) {
    s->off[s->n] = off;
    s->len[s->n] = len;
  }
  s->n++;
}

static int is_ws(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Structural equality in member order (cJSON_Compare is not reflexive when an object
 * has duplicate names). Returns NULL or what differs. */
static const char *diff(const cJSON *a, const cJSON *b) {
  if ((a->type & 0xFF) != (b->type & 0xFF)) return "type";
  if ((a->string == NULL) != (b->string == NULL)) return "member name presence";
  if (a->string && strcmp(a->string, b->string) != 0) return "member name";
  if (cJSON_IsNumber(a) && memcmp(&a->valuedouble, &b->valuedouble, sizeof(double)) != 0)
    return "number";
  if (cJSON_IsString(a) && strcmp(a->valuestring, b->valuestring) != 0) return "string";
  const cJSON *x = a->child, *y = b->child;
  for (; x && y; x = x->next, y = y->next) {
    const char *d = diff(x, y);
    if (d) return d;
  }
  return x || y ? "number of children" : NULL;
}

/* A run of number characters longer than cJSON's 63-byte number buffer. */
static int has_long_number(const unsigned char *s, size_t n) {
  size_t run = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = s[i];
    if ((c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '+' ||
        c == '-') {
      if (++run >= 63) return 1;
    } else {
      run = 0;
    }
  }
  return 0;
}

static int is_digit(unsigned c) {
  return c >= '0' && c <= '9';
}

static int is_hex(unsigned c) {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Length of the RFC 8259 number at p, or 0 if it is not one (or is followed by
 * another number character: cJSON would read "01" or "1." as numbers). */
static size_t number_len(const unsigned char *p, size_t n) {
  size_t i = 0;
  if (i < n && p[i] == '-') i++;
  if (i < n && p[i] == '0')
    i++;
  else if (i < n && is_digit(p[i]))
    while (i < n && is_digit(p[i])) i++;
  else
    return 0;
  if (i < n && p[i] == '.') {
    i++;
    if (!(i < n && is_digit(p[i]))) return 0;
    while (i < n && is_digit(p[i])) i++;
  }
  if (i < n && (p[i] == 'e' || p[i] == 'E')) {
    i++;
    if (i < n && (p[i] == '+' || p[i] == '-')) i++;
    if (!(i < n && is_digit(p[i]))) return 0;
    while (i < n && is_digit(p[i])) i++;
  }
  if (i < n && (is_digit(p[i]) || p[i] == '.' || p[i] == 'e' || p[i] == 'E' ||
                p[i] == '+' || p[i] == '-'))
    return 0;
  return i;
}

/* What cJSON does not check: UTF-8, control characters, number tokens, escapes
 * (cJSON 1.7.15 reads a \u with a non-hex digit as U+0000 and cuts the string
 * there), \u0000, and the depth. 1 if the text passes. */
static int ref_check(const unsigned char *p, size_t n, int max_depth) {
  size_t i = 0, l;
  int depth = 0;
  while (i < n) {
    unsigned c = p[i];
    if (c == '"') {
      for (i++;;) {
        if (i >= n) return 0;
        c = p[i];
        if (c == '"') break;
        if (c == '\\') {
          if (i + 1 >= n) return 0;
          if (p[i + 1] == 'u') {
            if (n - i < 6 || !is_hex(p[i + 2]) || !is_hex(p[i + 3]) ||
                !is_hex(p[i + 4]) || !is_hex(p[i + 5]))
              return 0;
            if (memcmp(p + i + 2, "0000", 4) == 0) return 0;
            i += 6;
          } else {
            if (p[i + 1] == 0 || !strchr("\"\\/bfnrt", p[i + 1])) return 0;
            i += 2;
          }
        } else if (c < 0x20) {
          return 0;
        } else if (c < 0x80) {
          i++;
        } else {
          if (!(l = json_utf8_seq(p + i, n - i))) return 0;
          i += l;
        }
      }
      i++; /* the closing quote */
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return 0;
      i++;
    } else if (c == ']' || c == '}') {
      depth--; /* may go negative on malformed text, which cJSON refuses */
      i++;
    } else if (c == '-' || is_digit(c)) {
      if (!(l = number_len(p + i, n - i))) return 0;
      i += l;
    } else if (c < 0x20) {
      if (c != '\t' && c != '\n' && c != '\r') return 0;
      i++;
    } else if (c >= 0x80) {
      if (!(l = json_utf8_seq(p + i, n - i))) return 0;
      i += l;
    } else {
      i++;
    }
  }
  return 1;
}

/* The reference: strict token check, then cJSON, then only white space. */
static cJSON *ref_parse(const char *s, size_t n) {
  if (n == 0 || memchr(s, '\0', n)) return NULL;
  if (!ref_check((const unsigned char *)s, n, DEPTH)) return NULL;
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(s, n, &end, 0);
  if (!root) return NULL;
  for (const char *p = end; p < s + n; p++)
    if (!is_ws((unsigned char)*p)) {
      cJSON_Delete(root);
      return NULL;
    }
  return root;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *s = size ? (const char *)data : "";
  arena_t *a = arena_new();
  if (!a) abort();
  json_error err;
  sp.n = 0;
  cJSON *mine = json_parse(s, size, a, DEPTH, on_elem, &sp, &err);
  cJSON *ref = ref_parse(s, size);

  int bom = size >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0;
  int long_num = has_long_number(data, size);
  if (!mine) {
    if (!err.msg) FAIL("refused without a message");
    if (err.off > size) FAIL("error offset %zu past the end (%zu)", err.off, size);
    if (strcmp(err.msg, "out of memory") == 0) FAIL("out of memory on %zu bytes", size);
    if (ref && !bom)
      FAIL("json_parse refuses what the reference accepts: %s at %zu", err.msg, err.off);
  } else {
    if (!ref && !long_num && !bom) FAIL("json_parse accepts what the reference refuses");
    if (ref) {
      const char *d = diff(mine, ref);
      if (d) FAIL("trees differ (%s)", d);
    }
    if (cJSON_IsArray(mine)) {
      size_t count = 0;
      for (const cJSON *c = mine->child; c; c = c->next) count++;
      if (sp.n != count) FAIL("%zu element spans for %zu elements", sp.n, count);
      size_t i = 0;
      for (const cJSON *c = mine->child; c && i < MAX_SPANS; c = c->next, i++) {
        size_t off = sp.off[i], len = sp.len[i];
        if (len == 0 || off > size || len > size - off)
          FAIL("span %zu (%zu+%zu) outside the text (%zu)", i, off, len, size);
        if (is_ws(data[off]) || is_ws(data[off + len - 1]))
          FAIL("span %zu not trimmed", i);
        arena_t *a2 = arena_new();
        json_error e2;
        cJSON *again = json_parse(s + off, len, a2, DEPTH, NULL, NULL, &e2);
        if (!again) FAIL("span %zu does not parse alone: %s at %zu", i, e2.msg, e2.off);
        const char *d = diff(again, c);
        if (d) FAIL("span %zu parses to another value (%s)", i, d);
        arena_free(a2);
      }
    } else if (sp.n != 0) {
      FAIL("%zu element spans for a root that is not an array", sp.n);
    }
  }
  cJSON_Delete(ref);
  arena_free(a);
  return 0;
}
