/* config: the daemon's settings: defaults, command-line options and their
 * LUAHOOK_* environment variables (an option on the command line wins). */
#ifndef LUAHOOK_CONFIG_H
#define LUAHOOK_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define CONFIG_MAX_LIST 16

/* A list option: repeat it, or separate values with commas. */
typedef struct strlist {
  const char *v[CONFIG_MAX_LIST];
  int n;
} strlist;

typedef struct config {
  const char *script;
  char host[256];
  int port;
  const char *path;
  strlist secrets;       /* accepted secrets; none = open */
  strlist subscriptions; /* validation only for these (case-insensitive); none = any */
  strlist origins;       /* CloudEvents origins to consent to; none = any */
  size_t max_body;
  size_t max_header;
  int max_connections;
  uint64_t header_timeout_ms; /* from the first byte of a request to its last header */
  uint64_t body_timeout_ms;   /* for the whole body once headers are in */
  uint64_t idle_timeout_ms;   /* keep-alive connection with no request */
  int reload;
  int log_level;
  int log_format;
  uint64_t cpu_budget;   /* Lua instructions per run slice; 0 = none */
  uint64_t cpu_slice_ms; /* wall time per run slice; 0 = none */
  size_t lua_memory;     /* bytes; 0 = none */
  uint64_t handler_timeout_ms;
  size_t max_inflight;        /* events accepted and not settled; past it 503 */
  size_t dedup_window;        /* successful events remembered; 0 = off */
  uint64_t shutdown_grace_ms; /* SIGTERM: time given to requests in progress */
} config;

void config_defaults(config *c);

/* Parses argv (options and one positional SCRIPT) for `run`, `check` or `replay`,
 * after reading the environment. On error writes a one-line message into err and
 * returns -1; returns 1 for --help (usage printed), 0 on success. extra/nextra
 * receive further positionals (replay's files). */
int config_parse(config *c, const char *cmd, int argc, char **argv, char *err,
                 size_t errlen, char ***extra, int *nextra);

void config_usage(const char *cmd);

/* Frees what parsing allocated (list values). */
void config_free(config *c);

/* Parses "1048576", "512k", "1m", "2g" (powers of 1024). */
int config_parse_size(const char *s, size_t *out);

#endif
