/* config: one table of options drives parsing, environment variables and usage
 * text, so the three can never disagree. */
#include "config.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum kind {
  K_STR,
  K_LISTEN,
  K_SIZE,
  K_MS,
  K_INT,
  K_U64,
  K_FLAG_OFF,
  K_LEVEL,
  K_FORMAT,
  K_LIST
};

typedef struct option {
  const char *name; /* without "--"; env var is LUAHOOK_ + upper(name with _) */
  enum kind kind;
  size_t offset;
  const char *arg;
  const char *help;
} option;

#define OFF(f) offsetof(config, f)

static const option options[] = {
    {"listen", K_LISTEN, 0, "HOST:PORT", "address to listen on (default 127.0.0.1:8080)"},
    {"path", K_STR, OFF(path), "PATH", "delivery path (default /api/events)"},
    {"secret", K_LIST, OFF(secrets), "S",
     "require ?code=S or header aeg-sas-key: S; repeat, or separate with commas, to "
     "accept several"},
    {"max-body", K_SIZE, OFF(max_body), "BYTES", "largest request body (default 1088k)"},
    {"max-header", K_SIZE, OFF(max_header), "BYTES",
     "largest request head (default 16k)"},
    {"max-connections", K_INT, OFF(max_connections), "N",
     "open connections (default 1024)"},
    {"header-timeout-ms", K_MS, OFF(header_timeout_ms), "MS",
     "time to receive a request's head (default 10000)"},
    {"body-timeout-ms", K_MS, OFF(body_timeout_ms), "MS",
     "time to receive a request's body (default 30000)"},
    {"idle-timeout-ms", K_MS, OFF(idle_timeout_ms), "MS",
     "keep-alive idle time (default 75000)"},
    {"no-reload", K_FLAG_OFF, OFF(reload), NULL, "do not watch the script for changes"},
    {"log-level", K_LEVEL, OFF(log_level), "LEVEL",
     "debug|info|warn|error (default info)"},
    {"log-format", K_FORMAT, OFF(log_format), "FMT", "text|json (default text)"},
    {"cpu-budget", K_U64, OFF(cpu_budget), "N",
     "Lua instructions a handler may run between suspensions (default 50000000, 0 = "
     "none)"},
    {"cpu-slice-ms", K_MS, OFF(cpu_slice_ms), "MS",
     "wall time a handler may run between suspensions (default 200, 0 = none)"},
    {"lua-memory", K_SIZE, OFF(lua_memory), "BYTES",
     "Lua heap limit (default 256m, 0 = none)"},
    {"handler-timeout-ms", K_MS, OFF(handler_timeout_ms), "MS",
     "a handler still running after this fails (default 25000)"},
    {"max-inflight", K_SIZE, OFF(max_inflight), "N",
     "events accepted and not finished; past it deliveries get 503 (default 10000)"},
    {"dedup-window", K_SIZE, OFF(dedup_window), "N",
     "successful events remembered to skip redeliveries (default 100000, 0 = off)"},
    {"shutdown-grace-ms", K_MS, OFF(shutdown_grace_ms), "MS",
     "on SIGTERM, time for requests in progress (default 30000)"},
    {"subscription", K_LIST, OFF(subscriptions), "NAME",
     "answer validation only for these subscription names (repeatable)"},
    {"allowed-origin", K_LIST, OFF(origins), "ORIGIN",
     "CloudEvents webhook origins to consent to (repeatable; default any)"},
};
#define NOPTIONS (sizeof options / sizeof options[0])

void config_defaults(config *c) {
  memset(c, 0, sizeof *c);
  snprintf(c->host, sizeof c->host, "127.0.0.1");
  c->port = 8080;
  c->path = "/api/events";
  c->max_body = 1088 * 1024; /* Event Grid's 1 MB plus headroom */
  c->max_header = 16 * 1024;
  c->max_connections = 1024;
  c->header_timeout_ms = 10000;
  c->body_timeout_ms = 30000;
  c->idle_timeout_ms = 75000;
  c->reload = 1;
  c->log_level = LOG_INFO;
  c->log_format = LOG_TEXT;
  c->cpu_budget = 50000000;
  c->cpu_slice_ms = 200;
  c->lua_memory = 256u * 1024 * 1024;
  c->handler_timeout_ms = 25000;
  c->max_inflight = 10000;
  c->dedup_window = 100000;
  c->shutdown_grace_ms = 30000;
}

int config_parse_size(const char *s, size_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (end == s || errno || *s == '-') return -1;
  unsigned long long mul = 1;
  switch (tolower((unsigned char)*end)) {
  case '\0':
    break;
  case 'k':
    mul = 1024ULL;
    end++;
    break;
  case 'm':
    mul = 1024ULL * 1024;
    end++;
    break;
  case 'g':
    mul = 1024ULL * 1024 * 1024;
    end++;
    break;
  default:
    return -1;
  }
  if (*end == 'b' || *end == 'B') end++;
  if (*end != '\0' || v > SIZE_MAX / mul) return -1;
  *out = (size_t)(v * mul);
  return 0;
}

static int parse_u64(const char *s, uint64_t *out) {
  char *end;
  errno = 0;
  if (*s == '-' || *s == '\0') return -1;
  unsigned long long v = strtoull(s, &end, 10);
  if (*end != '\0' || errno) return -1;
  *out = v;
  return 0;
}

static int parse_listen(config *c, const char *s) {
  const char *colon = strrchr(s, ':');
  if (!colon) return -1;
  size_t hl = (size_t)(colon - s);
  const char *h = s;
  if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') { /* [::1]:8080 */
    h++;
    hl -= 2;
  }
  if (hl == 0 || hl >= sizeof c->host) return -1;
  uint64_t port;
  if (parse_u64(colon + 1, &port) || port > 65535) return -1;
  memcpy(c->host, h, hl);
  c->host[hl] = '\0';
  c->port = (int)port;
  return 0;
}

static int add_list(strlist *l, const char *name, const char *s, char *err,
                    size_t errlen) {
  /* "a,b,c": each non-empty piece is a value, copied; config_free frees them. */
  while (*s) {
    const char *comma = strchr(s, ',');
    size_t n = comma ? (size_t)(comma - s) : strlen(s);
    if (n > 0) {
      if (l->n == CONFIG_MAX_LIST) {
        snprintf(err, errlen, "at most %d values for --%s", CONFIG_MAX_LIST, name);
        return -1;
      }
      l->v[l->n++] = strndup(s, n);
    }
    s += n;
    if (*s == ',') s++;
  }
  return 0;
}

static void clear_list(strlist *l) {
  for (int i = 0; i < l->n; i++) free((void *)l->v[i]);
  l->n = 0;
}

static int apply(config *c, const option *o, const char *v, char *err, size_t errlen) {
  char *base = (char *)c;
  switch (o->kind) {
  case K_STR:
    *(const char **)(base + o->offset) = v;
    return 0;
  case K_LISTEN:
    if (parse_listen(c, v) == 0) return 0;
    break;
  case K_SIZE:
    if (config_parse_size(v, (size_t *)(base + o->offset)) == 0) return 0;
    break;
  case K_MS:
  case K_U64:
    if (parse_u64(v, (uint64_t *)(base + o->offset)) == 0) return 0;
    break;
  case K_INT: {
    uint64_t n;
    if (parse_u64(v, &n) == 0 && n > 0 && n < 1000000) {
      *(int *)(base + o->offset) = (int)n;
      return 0;
    }
    break;
  }
  case K_FLAG_OFF:
    *(int *)(base + o->offset) = 0;
    return 0;
  case K_LEVEL: {
    int lv = log_level_parse(v);
    if (lv >= 0) {
      *(int *)(base + o->offset) = lv;
      return 0;
    }
    break;
  }
  case K_FORMAT:
    if (strcmp(v, "text") == 0 || strcmp(v, "json") == 0) {
      *(int *)(base + o->offset) = strcmp(v, "json") == 0 ? LOG_JSON : LOG_TEXT;
      return 0;
    }
    break;
  case K_LIST:
    return add_list((strlist *)(base + o->offset), o->name, v, err, errlen);
  }
  snprintf(err, errlen, "invalid value for --%s: '%s'", o->name, v);
  return -1;
}

static void env_name(const option *o, char *out, size_t n) {
  size_t i = (size_t)snprintf(out, n, "LUAHOOK_");
  for (const char *p = o->name; *p && i + 1 < n; p++)
    out[i++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
  out[i] = '\0';
}

static const option *find(const char *name, size_t len) {
  for (size_t i = 0; i < NOPTIONS; i++)
    if (strlen(options[i].name) == len && strncmp(options[i].name, name, len) == 0)
      return &options[i];
  return NULL;
}

void config_usage(const char *cmd) {
  if (strcmp(cmd, "run") == 0)
    printf("usage: luahook run SCRIPT [options]\n\nRuns the daemon: receives Event Grid "
           "deliveries and calls SCRIPT's hooks.\n\noptions (each also read from "
           "LUAHOOK_<NAME>, e.g. LUAHOOK_MAX_BODY):\n");
  else if (strcmp(cmd, "check") == 0)
    printf(
        "usage: luahook check SCRIPT [options]\n\nCompiles and loads SCRIPT, prints the "
        "hooks it defines; exit 1 with file:line on error.\n\noptions:\n");
  else
    printf(
        "usage: luahook replay SCRIPT FILE... [options]\n\nFeeds event files through the "
        "script without HTTP; one line per event; exit 1 if any failed.\n\noptions:\n");
  for (size_t i = 0; i < NOPTIONS; i++) {
    char left[64];
    snprintf(left, sizeof left, "--%s%s%s", options[i].name, options[i].arg ? " " : "",
             options[i].arg ? options[i].arg : "");
    printf("  %-28s %s\n", left, options[i].help);
  }
  printf("  %-28s %s\n", "-h, --help", "show this help");
}

int config_parse(config *c, const char *cmd, int argc, char **argv, char *err,
                 size_t errlen, char ***extra, int *nextra) {
  for (size_t i = 0; i < NOPTIONS; i++) {
    char name[64];
    env_name(&options[i], name, sizeof name);
    const char *v = getenv(name);
    if (!v || (!*v && options[i].kind != K_STR)) continue;
    if (options[i].kind == K_FLAG_OFF && strcmp(v, "1") != 0 && strcmp(v, "true") != 0)
      continue;
    if (apply(c, &options[i], v, err, errlen) < 0) {
      snprintf(err, errlen, "invalid value in %s: '%s'", name, v);
      return -1;
    }
  }
  /* A list given on the command line replaces the environment's. */
  const option *cli_lists[NOPTIONS];
  int ncli_lists = 0;
  int npos = 0;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      config_usage(cmd);
      return 1;
    }
    if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
      argv[npos++] = argv[i]; /* positionals are compacted to the front */
      continue;
    }
    const char *name = a + 2, *eq = strchr(name, '=');
    const option *o = find(name, eq ? (size_t)(eq - name) : strlen(name));
    if (!o) {
      snprintf(err, errlen, "unknown option '%s' (see 'luahook %s --help')", a, cmd);
      return -1;
    }
    const char *v = NULL;
    if (o->kind == K_FLAG_OFF) {
      if (eq) {
        snprintf(err, errlen, "--%s takes no value", o->name);
        return -1;
      }
    } else if (eq) {
      v = eq + 1;
    } else if (i + 1 < argc) {
      v = argv[++i];
    } else {
      snprintf(err, errlen, "--%s needs a value", o->name);
      return -1;
    }
    if (o->kind == K_LIST) {
      int seen = 0;
      for (int k = 0; k < ncli_lists; k++) seen |= cli_lists[k] == o;
      if (!seen) {
        cli_lists[ncli_lists++] = o;
        clear_list((strlist *)((char *)c + o->offset));
      }
    }
    if (apply(c, o, v, err, errlen) < 0) return -1;
  }
  if (npos == 0) {
    snprintf(err, errlen, "missing SCRIPT (see 'luahook %s --help')", cmd);
    return -1;
  }
  c->script = argv[0];
  if (extra) {
    *extra = argv + 1;
    *nextra = npos - 1;
  } else if (npos > 1) {
    snprintf(err, errlen, "unexpected argument '%s'", argv[1]);
    return -1;
  }
  if (c->path[0] != '/') {
    snprintf(err, errlen, "--path must start with '/'");
    return -1;
  }
  return 0;
}

void config_free(config *c) {
  clear_list(&c->secrets);
  clear_list(&c->subscriptions);
  clear_list(&c->origins);
}
