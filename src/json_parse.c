/* json_parse: a recursive-descent parser over a byte range. Plain string bytes
 * are skipped through a lookup table; a string without escapes is copied once;
 * one with escapes is measured, then decoded. Numbers with up to 15 digits and
 * no fraction or exponent are converted exactly without strtod. */
#include "json_parse.h"
#include "bind_json.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

typedef struct parser {
  const unsigned char *p, *start, *end;
  arena_t *a;
  int depth, max_depth;
  json_elem_fn elem;
  void *ud;
  json_error *err;
} parser;

/* Bytes that stand for themselves inside a string: printable ASCII but '"' and '\\'. */
static const unsigned char plain[256] = {
#define R16(v) v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v
    R16(0), R16(0), 1,      1,      0,      1,      1,      1,      1,      1,
    1,      1,      1,      1,      1,      1,      1,      1, /* 0x20: '"' */
    R16(1), R16(1), 1,      1,      1,      1,      1,      1,      1,      1,
    1,      1,      1,      1,      0,      1,      1,      1, /* 0x50: '\\' */
    R16(1), R16(1), R16(0), R16(0), R16(0), R16(0), R16(0), R16(0), R16(0), R16(0),
#undef R16
};

static void *fail(parser *ps, const unsigned char *at, const char *msg);

static cJSON *node(parser *ps, int type) {
  cJSON *n = json_new(ps->a, type);
  return n ? n : fail(ps, ps->p, "out of memory");
}

static void *fail(parser *ps, const unsigned char *at, const char *msg) {
  if (!ps->err->msg) {
    ps->err->msg = msg;
    ps->err->off = (size_t)(at - ps->start);
  }
  return NULL;
}

static void skip_ws(parser *ps) {
  while (ps->p < ps->end &&
         (*ps->p == ' ' || *ps->p == '\n' || *ps->p == '\r' || *ps->p == '\t'))
    ps->p++;
}

static int hex4(const unsigned char *p, unsigned *out) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    unsigned c = p[i], d;
    if (c >= '0' && c <= '9')
      d = c - '0';
    else if (c >= 'a' && c <= 'f')
      d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
      d = c - 'A' + 10;
    else
      return -1;
    v = v << 4 | d;
  }
  *out = v;
  return 0;
}

static size_t utf8_len(unsigned cp) {
  return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
}

static size_t put_utf8(unsigned char *o, unsigned cp) {
  if (cp < 0x80) {
    o[0] = (unsigned char)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (unsigned char)(0xC0 | cp >> 6);
    o[1] = (unsigned char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (unsigned char)(0xE0 | cp >> 12);
    o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[2] = (unsigned char)(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = (unsigned char)(0xF0 | cp >> 18);
  o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
  o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
  o[3] = (unsigned char)(0x80 | (cp & 0x3F));
  return 4;
}

/* One escape at p (p[0] == '\\'): its code point and length, or -1. A \u high
 * surrogate must be followed by a \u low surrogate. */
static int escape(parser *ps, const unsigned char *p, unsigned *cp, size_t *len) {
  if (ps->end - p < 2) return -1;
  switch (p[1]) {
  case '"':
    *cp = '"';
    break;
  case '\\':
    *cp = '\\';
    break;
  case '/':
    *cp = '/';
    break;
  case 'b':
    *cp = '\b';
    break;
  case 'f':
    *cp = '\f';
    break;
  case 'n':
    *cp = '\n';
    break;
  case 'r':
    *cp = '\r';
    break;
  case 't':
    *cp = '\t';
    break;
  case 'u': {
    unsigned u, lo;
    if (ps->end - p < 6 || hex4(p + 2, &u)) return -1;
    if (u >= 0xDC00 && u <= 0xDFFF) return -1; /* a lone low surrogate */
    if (u >= 0xD800 && u <= 0xDBFF) {
      if (ps->end - p < 12 || p[6] != '\\' || p[7] != 'u' || hex4(p + 8, &lo) ||
          lo < 0xDC00 || lo > 0xDFFF)
        return -1;
      *cp = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
      *len = 12;
      return 0;
    }
    *cp = u;
    *len = 6;
    return 0;
  }
  default:
    return -1;
  }
  *len = 2;
  return 0;
}

/* The string at ps->p (an opening quote), as a NUL-terminated arena copy. */
static char *string(parser *ps) {
  const unsigned char *s = ++ps->p, *p = s;
  size_t shrink = 0; /* escapes are longer than what they stand for */
  int escaped = 0;
  for (;;) { /* measure and validate */
    while (p < ps->end && plain[*p]) p++;
    if (p >= ps->end) return fail(ps, s - 1, "unterminated string");
    if (*p == '"') break;
    if (*p == '\\') {
      unsigned cp;
      size_t len;
      if (escape(ps, p, &cp, &len)) return fail(ps, p, "invalid escape in a string");
      if (cp == 0) return fail(ps, p, "\\u0000 in a string is not supported");
      shrink += len - utf8_len(cp);
      p += len;
      escaped = 1;
    } else if (*p < 0x20) {
      return fail(ps, p, "control character in a string");
    } else {
      size_t l = json_utf8_seq(p, (size_t)(ps->end - p));
      if (!l) return fail(ps, p, "invalid UTF-8");
      p += l;
    }
  }
  size_t n = (size_t)(p - s) - shrink;
  char *out = arena_alloc(ps->a, n + 1);
  if (!out) return fail(ps, s, "out of memory");
  if (!escaped) {
    memcpy(out, s, n);
  } else {
    unsigned char *o = (unsigned char *)out;
    for (const unsigned char *q = s; q < p;) {
      if (*q != '\\') {
        *o++ = *q++;
        continue;
      }
      unsigned cp;
      size_t len;
      escape(ps, q, &cp, &len);
      o += put_utf8(o, cp);
      q += len;
    }
  }
  out[n] = '\0';
  ps->p = p + 1;
  return out;
}

static int is_digit(unsigned c) {
  return c >= '0' && c <= '9';
}

static cJSON *number(parser *ps) {
  const unsigned char *s = ps->p, *p = s, *e = ps->end;
  int neg = 0, simple = 1;
  if (p < e && *p == '-') {
    neg = 1;
    p++;
  }
  const unsigned char *digits = p;
  if (p < e && *p == '0')
    p++;
  else if (p < e && is_digit(*p))
    while (p < e && is_digit(*p)) p++;
  else
    return fail(ps, s, "invalid number");
  size_t ndig = (size_t)(p - digits);
  if (p < e && *p == '.') {
    simple = 0;
    if (++p >= e || !is_digit(*p)) return fail(ps, s, "invalid number");
    while (p < e && is_digit(*p)) p++;
  }
  if (p < e && (*p == 'e' || *p == 'E')) {
    simple = 0;
    p++;
    if (p < e && (*p == '+' || *p == '-')) p++;
    if (p >= e || !is_digit(*p)) return fail(ps, s, "invalid number");
    while (p < e && is_digit(*p)) p++;
  }
  if (p < e &&
      (is_digit(*p) || *p == '.' || *p == 'e' || *p == 'E' || *p == '+' || *p == '-'))
    return fail(ps, s, "invalid number");
  cJSON *n = node(ps, cJSON_Number);
  if (!n) return NULL;
  double d;
  if (simple && ndig <= 15) { /* exact in a double */
    long long v = 0;
    for (const unsigned char *q = digits; q < p; q++) v = v * 10 + (*q - '0');
    d = (double)(neg ? -v : v);
    if (neg && v == 0) d = -0.0;
  } else {
    char buf[64], *tmp = buf;
    size_t len = (size_t)(p - s);
    if (len >= sizeof buf && !(tmp = arena_alloc(ps->a, len + 1)))
      return fail(ps, s, "out of memory");
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    d = strtod(tmp, NULL); /* the grammar was checked; the C locale is in force */
  }
  n->valuedouble = d;
  n->valueint = d >= INT_MAX ? INT_MAX : d <= (double)INT_MIN ? INT_MIN : (int)d;
  ps->p = p;
  return n;
}

static cJSON *value(parser *ps, int root);

cJSON *json_new(arena_t *a, int type) {
  cJSON *n = arena_alloc(a, sizeof *n);
  if (n) {
    memset(n, 0, sizeof *n);
    n->type = type;
  }
  return n;
}

char *json_strndup(arena_t *a, const char *s, size_t n) {
  char *p = arena_alloc(a, n + 1);
  if (p) {
    memcpy(p, s, n);
    p[n] = '\0';
  }
  return p;
}

/* In O(1): cJSON keeps the last child in child->prev. */
void json_append(cJSON *parent, cJSON *child, char *key) {
  cJSON *first = parent->child;
  child->string = key;
  if (!first) {
    parent->child = child;
    child->prev = child;
    return;
  }
  first->prev->next = child;
  child->prev = first->prev;
  first->prev = child;
}

static cJSON *container(parser *ps, int object, int root) {
  const unsigned char *open = ps->p;
  if (++ps->depth > ps->max_depth) return fail(ps, open, "nesting too deep");
  cJSON *n = node(ps, object ? cJSON_Object : cJSON_Array);
  if (!n) return NULL;
  unsigned char close = object ? '}' : ']';
  ps->p++;
  skip_ws(ps);
  if (ps->p < ps->end && *ps->p == close) {
    ps->p++;
    ps->depth--;
    return n;
  }
  for (;;) {
    char *key = NULL;
    if (object) {
      if (ps->p >= ps->end || *ps->p != '"')
        return fail(ps, ps->p,
                    ps->p >= ps->end ? "unexpected end" : "expected a string key");
      if (!(key = string(ps))) return NULL;
      skip_ws(ps);
      if (ps->p >= ps->end || *ps->p != ':') return fail(ps, ps->p, "expected ':'");
      ps->p++;
      skip_ws(ps);
    }
    const unsigned char *vstart = ps->p;
    cJSON *child = value(ps, 0);
    if (!child) return NULL;
    if (root && ps->elem)
      ps->elem(ps->ud, (size_t)(vstart - ps->start), (size_t)(ps->p - vstart));
    json_append(n, child, key);
    skip_ws(ps);
    if (ps->p >= ps->end) return fail(ps, ps->p, "unexpected end");
    if (*ps->p == ',') {
      ps->p++;
      skip_ws(ps);
      continue;
    }
    if (*ps->p == close) {
      ps->p++;
      ps->depth--;
      return n;
    }
    return fail(ps, ps->p, object ? "expected ',' or '}'" : "expected ',' or ']'");
  }
}

static cJSON *literal(parser *ps, const char *word, int type) {
  size_t len = strlen(word);
  if ((size_t)(ps->end - ps->p) < len || memcmp(ps->p, word, len) != 0)
    return fail(ps, ps->p, "unexpected character");
  cJSON *n = node(ps, type);
  if (n) {
    if (type == cJSON_True) n->valueint = 1;
    ps->p += len;
  }
  return n;
}

static cJSON *value(parser *ps, int root) {
  if (ps->p >= ps->end) return fail(ps, ps->p, "unexpected end");
  switch (*ps->p) {
  case '{':
    return container(ps, 1, 0);
  case '[':
    return container(ps, 0, root);
  case '"': {
    cJSON *n = node(ps, cJSON_String);
    if (n && !(n->valuestring = string(ps))) return NULL;
    return n;
  }
  case 't':
    return literal(ps, "true", cJSON_True);
  case 'f':
    return literal(ps, "false", cJSON_False);
  case 'n':
    return literal(ps, "null", cJSON_NULL);
  default:
    if (*ps->p == '-' || is_digit(*ps->p)) return number(ps);
    if (*ps->p >= 0x80 && !json_utf8_seq(ps->p, (size_t)(ps->end - ps->p)))
      return fail(ps, ps->p, "invalid UTF-8");
    if (*ps->p < 0x20) return fail(ps, ps->p, "control character");
    return fail(ps, ps->p, "unexpected character");
  }
}

cJSON *json_parse(const char *s, size_t n, arena_t *a, int max_depth, json_elem_fn elem,
                  void *ud, json_error *err) {
  parser ps = {(const unsigned char *)s,
               (const unsigned char *)s,
               (const unsigned char *)s + n,
               a,
               0,
               max_depth,
               elem,
               ud,
               err};
  err->msg = NULL;
  err->off = 0;
  skip_ws(&ps);
  cJSON *root = value(&ps, 1);
  if (!root) return NULL;
  skip_ws(&ps);
  if (ps.p != ps.end) {
    if (*ps.p >= 0x80 && !json_utf8_seq(ps.p, (size_t)(ps.end - ps.p)))
      return fail(&ps, ps.p, "invalid UTF-8");
    return fail(&ps, ps.p,
                *ps.p < 0x20 ? "control character" : "trailing data after the value");
  }
  return root;
}
