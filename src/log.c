/* log: formats records as text or JSON lines and writes each with one write(2)
 * to stderr, so lines from one process never interleave. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static log_level min_level = LOG_INFO;
static log_format format = LOG_TEXT;

static const char *const names[] = {"debug", "info", "warn", "error"};
static const char *const upper[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void log_setup(log_level min, log_format fmt) {
  min_level = min;
  format = fmt;
}

int log_enabled(log_level lv) {
  return lv >= min_level;
}

int log_level_parse(const char *s) {
  for (int i = 0; i < 4; i++)
    if (strcmp(s, names[i]) == 0) return i;
  return -1;
}

const char *log_level_name(log_level lv) {
  return names[lv];
}

/* A record is built on the stack and moves to the heap when it outgrows it; a
 * record past MAX_RECORD is cut (inside a value, keeping the line valid). */
#define MAX_RECORD (1024 * 1024)
#define RESERVE    64

typedef struct buf {
  char *data;
  size_t len, cap;
  int cut;
  char stack[8192];
} buf;

static int grow(buf *b, size_t need) {
  if (b->len + need + 1 <= b->cap) return 1; /* one byte kept for the newline */
  if (b->cut) return 0;
  size_t cap = b->cap * 2;
  while (cap < b->len + need + 1) cap *= 2;
  if (cap > MAX_RECORD) cap = MAX_RECORD;
  if (cap <= b->cap) {
    b->cut = 1;
    return 0;
  }
  /* the allocation keeps RESERVE bytes past cap for closing a cut record */
  char *p = b->data == b->stack ? malloc(cap + RESERVE) : realloc(b->data, cap + RESERVE);
  if (!p) {
    b->cut = 1;
    return 0;
  }
  if (b->data == b->stack) memcpy(p, b->stack, b->len);
  b->data = p;
  b->cap = cap;
  return b->len + need + 1 <= b->cap;
}

static void put(buf *b, const char *s, size_t n) {
  if (!grow(b, n)) return;
  memcpy(b->data + b->len, s, n);
  b->len += n;
}

static void puts_(buf *b, const char *s) {
  put(b, s, strlen(s));
}

/* JSON string body, escaped; invalid bytes pass through (the caller's text). */
static void put_json_str(buf *b, const char *s) {
  put(b, "\"", 1);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    char esc[8];
    if (c == '"' || c == '\\') {
      esc[0] = '\\';
      esc[1] = (char)c;
      put(b, esc, 2);
    } else if (c < 0x20) {
      snprintf(esc, sizeof esc, "\\u%04x", c);
      put(b, esc, 6);
    } else {
      put(b, s, 1);
    }
  }
  put(b, "\"", 1);
}

static int needs_quotes(const char *s) {
  if (*s == '\0') return 1;
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c <= ' ' || c == 0x7f || c == '"' || c == '=' || c == '\\') return 1;
  }
  return 0;
}

/* Text: a value is quoted when it holds spaces, quotes, '=' or control bytes, and
 * control bytes are escaped (\n, \t, \r, \xHH) in values and messages alike, so
 * nothing a script logs can forge another field or another line. */
static void put_text(buf *b, const char *s, int quoted) {
  if (quoted) put(b, "\"", 1);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    char esc[8];
    if (quoted && (c == '"' || c == '\\')) {
      esc[0] = '\\';
      esc[1] = (char)c;
      put(b, esc, 2);
    } else if (c == '\n') {
      put(b, "\\n", 2);
    } else if (c == '\t') {
      put(b, "\\t", 2);
    } else if (c == '\r') {
      put(b, "\\r", 2);
    } else if (c < 0x20 || c == 0x7f) {
      snprintf(esc, sizeof esc, "\\x%02x", c);
      put(b, esc, 4);
    } else {
      put(b, s, 1);
    }
  }
  if (quoted) put(b, "\"", 1);
}

static void put_text_value(buf *b, const char *s) {
  put_text(b, s, needs_quotes(s));
}

static void put_time(buf *b) {
  struct timeval tv;
  struct tm tm;
  char ts[40];
  gettimeofday(&tv, NULL);
  gmtime_r(&tv.tv_sec, &tm);
  size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(ts + n, sizeof ts - n, ".%03dZ", (int)(tv.tv_usec / 1000));
  puts_(b, ts);
}

/* Keys of the record itself: a field of the same name is written as "_<key>". */
static int reserved(const char *k) {
  return strcmp(k, "time") == 0 || strcmp(k, "level") == 0 || strcmp(k, "msg") == 0;
}

void log_write(log_level lv, const char *msg, const log_kv *kv, size_t nkv) {
  if (lv < min_level) return;
  buf b;
  b.data = b.stack;
  b.len = 0;
  b.cap = sizeof b.stack - RESERVE; /* room kept for closing a cut record */
  b.cut = 0;
  if (format == LOG_JSON) {
    puts_(&b, "{\"time\":\"");
    put_time(&b);
    puts_(&b, "\",\"level\":\"");
    puts_(&b, names[lv]);
    puts_(&b, "\",\"msg\":");
    put_json_str(&b, msg);
    for (size_t i = 0; i < nkv; i++) {
      if (!kv[i].value) continue;
      put(&b, ",", 1);
      if (reserved(kv[i].key)) {
        char k[80];
        snprintf(k, sizeof k, "_%s", kv[i].key);
        put_json_str(&b, k);
      } else {
        put_json_str(&b, kv[i].key);
      }
      put(&b, ":", 1);
      put_json_str(&b, kv[i].value);
    }
    if (b.cut) { /* close the value that was cut, then the object */
      b.cap += RESERVE;
      put(&b, "\"}", 2);
    } else {
      put(&b, "}", 1);
    }
  } else {
    put_time(&b);
    put(&b, " ", 1);
    puts_(&b, upper[lv]);
    put(&b, " ", 1);
    put_text(&b, msg, 0); /* a message cannot start a new line either */
    for (size_t i = 0; i < nkv; i++) {
      if (!kv[i].value) continue;
      put(&b, " ", 1);
      puts_(&b, kv[i].key);
      put(&b, "=", 1);
      put_text_value(&b, kv[i].value);
    }
  }
  if (b.cut && format == LOG_TEXT) {
    b.cap += RESERVE;
    put(&b, " (cut)", 6);
  }
  b.data[b.len++] = '\n';
  ssize_t r = write(STDERR_FILENO, b.data, b.len);
  (void)r;
  if (b.data != b.stack) free(b.data);
}

void log_msgf(log_level lv, const char *fmt, ...) {
  if (lv < min_level) return;
  char msg[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  log_write(lv, msg, NULL, 0);
}

void log_notice(const char *fmt, ...) {
  char msg[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  log_level saved = min_level;
  min_level = LOG_DEBUG;
  log_write(LOG_INFO, msg, NULL, 0);
  min_level = saved;
}
