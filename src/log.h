/* log: log records, one line each, to stderr, as text or JSON lines.
 *
 * A record is a level, a message and optional key/value fields:
 *   log_write(LOG_INFO, "listening", (log_kv[]){{"url", u}}, 1);
 * Text:  2026-12-03T18:00:00.123Z INFO listening url=http://...
 * JSON:  {"time":"...","level":"info","msg":"listening","url":"http://..."}
 */
#ifndef LUAHOOK_LOG_H
#define LUAHOOK_LOG_H

#include <stddef.h>

typedef enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR } log_level;
typedef enum log_format { LOG_TEXT, LOG_JSON } log_format;

typedef struct log_kv {
  const char *key;
  const char *value;
} log_kv;

void log_setup(log_level min, log_format fmt);
int log_enabled(log_level lv);
/* Parses "debug" | "info" | "warn" | "error"; returns -1 if unknown. */
int log_level_parse(const char *s);
const char *log_level_name(log_level lv);

void log_write(log_level lv, const char *msg, const log_kv *kv, size_t nkv);
/* printf-style message without fields. */
void log_msgf(log_level lv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* An info record written whatever the level: the start-up line with the address. */
void log_notice(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define log_debug(...) log_msgf(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  log_msgf(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_msgf(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msgf(LOG_ERROR, __VA_ARGS__)

#endif
