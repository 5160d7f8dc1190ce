/* Unit tests for json_parse: the strict grammar, strings and escapes, numbers,
 * element spans, error offsets, and agreement with cJSON on what both accept. */
#include "check.h"
#include "json_parse.h"

#include <math.h>

static arena_t *A;

static cJSON *ok(const char *s) {
  json_error e;
  cJSON *v = json_parse(s, strlen(s), A, 64, NULL, NULL, &e);
  if (!v) {
    fprintf(stderr, "refused %s: %s at %zu\n", s, e.msg, e.off);
    exit(1);
  }
  return v;
}

static void bad(const char *s, const char *word, size_t off) {
  json_error e;
  if (json_parse(s, strlen(s), A, 64, NULL, NULL, &e)) {
    fprintf(stderr, "accepted but should be refused: %s\n", s);
    exit(1);
  }
  if (!strstr(e.msg, word) || e.off != off) {
    fprintf(stderr, "%s -> '%s' at %zu; wanted '%s' at %zu\n", s, e.msg, e.off, word,
            off);
    exit(1);
  }
}

/* Same shape and values as cJSON's own parse of the text. */
static int same(const cJSON *a, const cJSON *b) {
  if ((a->type & 0xFF) != (b->type & 0xFF)) return 0;
  if ((a->string == NULL) != (b->string == NULL)) return 0;
  if (a->string && strcmp(a->string, b->string) != 0) return 0;
  if (cJSON_IsString(a) && strcmp(a->valuestring, b->valuestring) != 0) return 0;
  if (cJSON_IsNumber(a) &&
      (a->valuedouble != b->valuedouble || a->valueint != b->valueint ||
       signbit(a->valuedouble) != signbit(b->valuedouble)))
    return 0;
  const cJSON *x = a->child, *y = b->child;
  for (; x && y; x = x->next, y = y->next)
    if (!same(x, y)) return 0;
  return x == NULL && y == NULL;
}

static void agrees(const char *s) {
  cJSON *mine = ok(s), *ref = cJSON_Parse(s);
  CHECK(ref != NULL);
  if (!same(mine, ref)) {
    fprintf(stderr, "differs from cJSON: %s\n", s);
    exit(1);
  }
  cJSON_Delete(ref);
}

typedef struct spans {
  size_t off[8], len[8];
  int n;
} spans;

static void on_elem(void *ud, size_t off, size_t len) {
  spans *sp = ud;
  sp->off[sp->n] = off;
  sp->len[sp->n++] = len;
}

int main(void) {
  A = arena_new();
  agrees("{\"a\":1,\"b\":[true,false,null],\"c\":\"x\",\"d\":{}}");
  agrees("[1, -0, 0.5, 1e3, -2.5E-3, 123456789012345, 9007199254740993, 1e308]");
  agrees("[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\", \"\\u00e9\\u20ac\\ud83d\\ude00\", "
         "\"\xc3\xa9\xe2\x82\xac\"]");
  agrees("  [ ]  ");
  agrees("\"just a string\"");
  agrees("{\"dup\":1,\"dup\":2}");
  agrees("[2147483648, -2147483649, 3.7, -3.7]");

  /* escapes decode to the right bytes */
  cJSON *v = ok("\"a\\u0041\\n\\ud834\\udd1e\"");
  CHECK_STR(v->valuestring, "aA\n\xf0\x9d\x84\x9e");
  /* duplicate keys: the first wins on lookup, both are kept */
  v = ok("{\"k\":1,\"k\":2}");
  CHECK_INT(cJSON_GetObjectItemCaseSensitive(v, "k")->valueint, 1);
  CHECK_INT(cJSON_GetArraySize(v), 2);

  bad("", "unexpected end", 0);
  bad("[1,]", "unexpected character", 3);
  bad("[1 2]", "expected ','", 3);
  bad("{\"a\" 1}", "expected ':'", 5);
  bad("{1:2}", "string key", 1);
  bad("[01]", "invalid number", 1);
  bad("[1.]", "invalid number", 1);
  bad("[-]", "invalid number", 1);
  bad("[.5]", "unexpected character", 1);
  bad("[1e]", "invalid number", 1);
  bad("[tru]", "unexpected character", 1);
  bad("[nul", "unexpected character", 1);
  bad("\"abc", "unterminated", 0);
  bad("\"a\tb\"", "control character", 2);
  bad("\"\\x\"", "invalid escape", 1);
  bad("\"\\u12\"", "invalid escape", 1);
  bad("\"\\ud800\"", "invalid escape", 1); /* high surrogate alone */
  bad("\"\\udc00\"", "invalid escape", 1); /* low surrogate alone */
  bad("\"\\ud800\\u0041\"", "invalid escape", 1);
  bad("\"\\u0000\"", "\\u0000", 1);
  bad("\"\xff\"", "UTF-8", 1);
  bad("\"\xc0\x80\"", "UTF-8", 1);         /* overlong NUL */
  bad("\"\xed\xa0\x80\"", "UTF-8", 1);     /* encoded surrogate */
  bad("\"\xf4\x90\x80\x80\"", "UTF-8", 1); /* above U+10FFFF */
  bad("[1] x", "trailing", 4);
  bad("[1]\x01", "control character", 3);
  bad("\xef\xbb\xbf[1]", "unexpected character", 0); /* a BOM is not JSON */

  /* depth: 64 levels pass, 65 do not */
  char deep[200];
  memset(deep, '[', 64);
  memset(deep + 64, ']', 64);
  deep[128] = '\0';
  ok(deep);
  memset(deep, '[', 65);
  memset(deep + 65, ']', 65);
  deep[130] = '\0';
  bad(deep, "nesting", 64);

  /* spans of a top-level array's elements, trimmed */
  const char *arr = " [ {\"a\":\"],[\"} ,\n 12 , \"s\" ,[1,[2]] ] ";
  spans sp = {0};
  json_error e;
  CHECK(json_parse(arr, strlen(arr), A, 64, on_elem, &sp, &e) != NULL);
  CHECK_INT(sp.n, 4);
  CHECK(strncmp(arr + sp.off[0], "{\"a\":\"],[\"}", sp.len[0]) == 0 && sp.len[0] == 11);
  CHECK(strncmp(arr + sp.off[1], "12", sp.len[1]) == 0 && sp.len[1] == 2);
  CHECK(strncmp(arr + sp.off[2], "\"s\"", sp.len[2]) == 0 && sp.len[2] == 3);
  CHECK(strncmp(arr + sp.off[3], "[1,[2]]", sp.len[3]) == 0 && sp.len[3] == 7);
  /* nested arrays and a root object report nothing */
  sp.n = 0;
  CHECK(json_parse("{\"a\":[1,2]}", 11, A, 64, on_elem, &sp, &e) != NULL);
  CHECK_INT(sp.n, 0);

  /* hand-built trees */
  cJSON *o = json_new(A, cJSON_Object), *s = json_new(A, cJSON_String);
  s->valuestring = json_strndup(A, "v", 1);
  json_append(o, s, json_strndup(A, "k", 1));
  CHECK_STR(cJSON_GetObjectItemCaseSensitive(o, "k")->valuestring, "v");

  arena_free(A);
  arena_drain_pool();
  puts("test_json_parse: ok");
  return 0;
}
