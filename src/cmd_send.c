/* cmd_send: `luahook send URL FILE...` delivers events to a running endpoint the
 * way Event Grid does: the SubscriptionValidation handshake first, then each file
 * (or a generated SignalR sample event) as a Notification POST with the aeg-*
 * headers. A command-line tool, not the daemon: blocking libcurl easy calls. */
#include "commands.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#define SEND_MAX_RESPONSE (256 * 1024)

typedef struct send_opts {
  const char *url;
  const char *secret;
  const char *sample; /* NULL, "connected" or "disconnected" */
  const char *hub, *user, *connection;
  const char *subscription;
  long timeout_ms;
  const char **files;
  int nfiles;
} send_opts;

typedef struct payload {
  const char *name; /* file name, or "sample" */
  char *body;
  size_t len;
  int cloudevents;
  char *event_id, *data_version,
      *metadata_version; /* for the aeg-* headers, may be NULL */
} payload;

typedef struct response {
  long status;
  char *body;
  size_t len;
  int truncated;
} response;

static void usage(FILE *f) {
  fprintf(
      f,
      "usage: luahook send URL FILE... [options]\n"
      "       luahook send URL --sample connected|disconnected [options]\n\n"
      "Delivers events to a running endpoint like Event Grid does: first the\n"
      "SubscriptionValidation handshake, then each FILE (an Event Grid array or\n"
      "CloudEvents JSON) as one Notification POST with the aeg-* headers.\n"
      "Prints '<FILE>: <status> <body>' per delivery; exit 1 unless all got 2xx.\n\n"
      "options:\n"
      "  --secret S                   send header aeg-sas-key: S (env LUAHOOK_SECRET)\n"
      "  --sample connected|disconnected\n"
      "                               also send a generated SignalR ClientConnection "
      "event\n"
      "  --hub H                      sample's hubName (default chat)\n"
      "  --user U                     sample's userId (default user-1)\n"
      "  --connection C               sample's connectionId (default random)\n"
      "  --subscription NAME          aeg-subscription-name (default LUAHOOK-SEND)\n"
      "  --timeout-ms N               time allowed per request (default 30000)\n"
      "  -h, --help                   show this help\n");
}

static int usage_error(const char *fmt, const char *arg) {
  fprintf(stderr, "luahook: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, " (see 'luahook send --help')\n");
  return 2;
}

/* ------------------------------------------------------------ ids and times */

static int random_bytes(unsigned char *b, int n) {
  if (RAND_bytes(b, n) != 1) {
    fprintf(stderr, "luahook: no random bytes from OpenSSL\n");
    return -1;
  }
  return 0;
}

/* A version 4 UUID: 36 characters plus NUL. */
static int uuid4(char out[37]) {
  unsigned char b[16];
  if (random_bytes(b, sizeof b)) return -1;
  b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
  b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
  snprintf(out, 37,
           "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
           b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
           b[13], b[14], b[15]);
  return 0;
}

/* A SignalR-like connection id: 16 random bytes as unpadded base64url (22 chars). */
static int connection_id(char out[23]) {
  static const char tbl[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  unsigned char b[18];
  if (random_bytes(b, 16)) return -1;
  b[16] = b[17] = 0;
  int o = 0;
  for (int i = 0; i < 18 && o < 22; i += 3) {
    unsigned v = (unsigned)b[i] << 16 | (unsigned)b[i + 1] << 8 | b[i + 2];
    for (int k = 3; k >= 0 && o < 22; k--) out[o++] = tbl[(v >> (6 * k)) & 63];
  }
  out[22] = '\0';
  return 0;
}

/* Now as Event Grid writes it: "2019-06-10T18:41:00.9584103Z". */
static void now_rfc3339(char out[64]) {
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  char base[32];
  strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(out, 64, "%s.%07dZ", base, (int)(ts.tv_nsec / 100 % 10000000));
}

/* ------------------------------------------------------------ payloads */

static char *dup_str(const char *s) {
  return s ? strdup(s) : NULL;
}

static void payload_free(payload *p) {
  free(p->body);
  free(p->event_id);
  free(p->data_version);
  free(p->metadata_version);
  memset(p, 0, sizeof *p);
}

static const char *str_field(const cJSON *o, const char *name) {
  const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, name);
  return cJSON_IsString(f) ? f->valuestring : NULL;
}

/* Looks at the content to pick the schema and the header values. A body that
 * is not JSON is still sent (as application/json): the receiver's answer to it
 * is what the user wants to see. */
static void inspect(payload *p) {
  cJSON *root = cJSON_ParseWithLength(p->body, p->len);
  if (!root) return;
  const cJSON *first = cJSON_IsArray(root) ? root->child : root;
  if (cJSON_IsObject(first)) {
    const char *spec = str_field(first, "specversion");
    p->event_id = dup_str(str_field(first, "id"));
    if (spec) {
      p->cloudevents = 1;
      p->metadata_version = dup_str(spec);
    } else {
      p->data_version = dup_str(str_field(first, "dataVersion"));
      p->metadata_version = dup_str(str_field(first, "metadataVersion"));
    }
  }
  cJSON_Delete(root);
}

static int read_file(const char *path, payload *p) {
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  size_t cap = 65536, n = 0;
  char *buf = malloc(cap);
  for (;;) {
    if (!buf) break;
    if (n == cap) {
      char *nb = realloc(buf, cap * 2);
      if (!nb) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = nb;
      cap *= 2;
    }
    size_t r = fread(buf + n, 1, cap - n, f);
    n += r;
    if (r == 0) break;
  }
  int bad = ferror(f);
  fclose(f);
  if (!buf || bad) {
    free(buf);
    errno = buf ? EIO : ENOMEM;
    return -1;
  }
  p->name = path;
  p->body = buf;
  p->len = n;
  inspect(p);
  return 0;
}

static cJSON *add_str(cJSON *o, const char *k, const char *v) {
  return cJSON_AddStringToObject(o, k, v);
}

#define SAMPLE_TOPIC                                                                     \
  "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/signalr-rg/"       \
  "providers/Microsoft.SignalRService/SignalR/signalr-resource"

/* The SignalR event of PROTOCOL.md 6.3 (Event Grid schema) with fresh values. */
static int make_sample(const send_opts *o, payload *p) {
  char id[37], now[64], conn[23], subject[512];
  if (uuid4(id) || (!o->connection && connection_id(conn))) return -1;
  now_rfc3339(now);
  int disc = strcmp(o->sample, "disconnected") == 0;
  snprintf(subject, sizeof subject, "/hub/%s", o->hub);
  cJSON *arr = cJSON_CreateArray(), *ev = cJSON_CreateObject(),
        *data = cJSON_CreateObject();
  int ok = arr && ev && data;
  if (ok) {
    cJSON_AddItemToArray(arr, ev);
    ok = add_str(ev, "topic", SAMPLE_TOPIC) && add_str(ev, "subject", subject) &&
         add_str(ev, "eventType",
                 disc ? "Microsoft.SignalRService.ClientConnectionDisconnected"
                      : "Microsoft.SignalRService.ClientConnectionConnected") &&
         add_str(ev, "eventTime", now) && add_str(ev, "id", id);
    if (ok) {
      cJSON_AddItemToObject(ev, "data", data);
      data = NULL;
      cJSON *d = cJSON_GetObjectItemCaseSensitive(ev, "data");
      ok = add_str(d, "timestamp", now) && add_str(d, "hubName", o->hub) &&
           add_str(d, "connectionId", o->connection ? o->connection : conn) &&
           add_str(d, "userId", o->user) &&
           (!disc || add_str(d, "errorMessage", "Internal server error.")) &&
           add_str(ev, "dataVersion", "1.0") && add_str(ev, "metadataVersion", "1");
    }
  } else {
    cJSON_Delete(ev);
  }
  cJSON_Delete(data);
  char *body = ok ? cJSON_PrintUnformatted(arr) : NULL;
  cJSON_Delete(arr);
  if (!body) {
    fprintf(stderr, "luahook: out of memory\n");
    return -1;
  }
  p->name = "sample";
  p->body = body;
  p->len = strlen(body);
  p->event_id = strdup(id);
  p->data_version = strdup("1.0");
  p->metadata_version = strdup("1");
  return 0;
}

/* Event Grid's validation event for this subscription. */
static char *make_validation(const send_opts *o, char code[37], char id_out[37]) {
  char now[64], token[37], url[1024];
  if (uuid4(code) || uuid4(id_out) || uuid4(token)) return NULL;
  now_rfc3339(now);
  snprintf(url, sizeof url,
           "https://rp-local.eventgrid.azure.net:553/eventsubscriptions/%s/validate?id=%s"
           "&t=%s&apiVersion=2018-05-01-preview&token=%s",
           o->subscription, code, now, token);
  cJSON *arr = cJSON_CreateArray(), *ev = cJSON_CreateObject(),
        *data = cJSON_CreateObject();
  if (!arr || !ev || !data) {
    cJSON_Delete(arr);
    cJSON_Delete(ev);
    cJSON_Delete(data);
    return NULL;
  }
  cJSON_AddItemToArray(arr, ev);
  add_str(ev, "id", id_out);
  add_str(ev, "topic", "/subscriptions/00000000-0000-0000-0000-000000000000");
  add_str(ev, "subject", "");
  add_str(data, "validationCode", code);
  add_str(data, "validationUrl", url);
  cJSON_AddItemToObject(ev, "data", data);
  add_str(ev, "eventType", "Microsoft.EventGrid.SubscriptionValidationEvent");
  add_str(ev, "eventTime", now);
  add_str(ev, "metadataVersion", "1");
  add_str(ev, "dataVersion", "1");
  char *s = cJSON_PrintUnformatted(arr);
  cJSON_Delete(arr);
  return s;
}

/* ------------------------------------------------------------ HTTP */

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud) {
  response *r = ud;
  size_t n = size * nmemb, room = SEND_MAX_RESPONSE - r->len;
  if (n > room) {
    r->truncated = 1;
    n = room;
  }
  if (n) {
    char *nb = realloc(r->body, r->len + n + 1);
    if (!nb) return 0;
    r->body = nb;
    memcpy(r->body + r->len, ptr, n);
    r->len += n;
    r->body[r->len] = '\0';
  }
  return size * nmemb;
}

static struct curl_slist *add_header(struct curl_slist *h, int *ok, const char *name,
                                     const char *value) {
  if (!value) return h;
  char line[1024];
  snprintf(line, sizeof line, "%s: %s", name, value);
  struct curl_slist *n = curl_slist_append(h, line);
  if (!n) {
    *ok = 0;
    return h;
  }
  return n;
}

/* One POST. Returns 0 with r filled, or -1 after printing why it could not be sent. */
static int post(CURL *c, const send_opts *o, const char *event_type, const payload *p,
                response *r) {
  memset(r, 0, sizeof *r);
  int ok = 1;
  struct curl_slist *h = NULL;
  h = add_header(h, &ok, "Content-Type",
                 p->cloudevents ? "application/cloudevents+json; charset=utf-8"
                                : "application/json; charset=utf-8");
  h = add_header(h, &ok, "aeg-event-type", event_type);
  h = add_header(h, &ok, "aeg-subscription-name", o->subscription);
  h = add_header(h, &ok, "aeg-delivery-count", "0");
  h = add_header(h, &ok, "aeg-data-version", p->data_version);
  h = add_header(h, &ok, "aeg-metadata-version", p->metadata_version);
  h = add_header(h, &ok, "aeg-output-event-id", p->event_id);
  h = add_header(h, &ok, "aeg-sas-key", o->secret);
  h = add_header(h, &ok, "Expect", ""); /* no 100-continue round trip */
  h = add_header(h, &ok, "Accept", ""); /* Event Grid may send none */
  if (!ok) {
    curl_slist_free_all(h);
    fprintf(stderr, "luahook: out of memory\n");
    return -1;
  }
  char errbuf[CURL_ERROR_SIZE] = "";
  curl_easy_setopt(c, CURLOPT_URL, o->url);
  curl_easy_setopt(c, CURLOPT_POST, 1L);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, p->body);
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)p->len);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, o->timeout_ms);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                   o->timeout_ms < 10000 ? o->timeout_ms : 10000L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_USERAGENT, "luahook-send/" LUAHOOK_VERSION);
  CURLcode rc = curl_easy_perform(c);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, NULL);
  curl_slist_free_all(h);
  if (rc != CURLE_OK) {
    fprintf(stderr, "luahook: cannot reach %s (sending %s): %s\n", o->url, p->name,
            errbuf[0] ? errbuf : curl_easy_strerror(rc));
    free(r->body);
    memset(r, 0, sizeof *r);
    return -1;
  }
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
  return 0;
}

/* The body as one printable line: trailing newlines dropped. */
static void print_body(const response *r) {
  size_t n = r->len;
  while (n && (r->body[n - 1] == '\n' || r->body[n - 1] == '\r')) n--;
  if (n) printf(" %.*s%s", (int)n, r->body, r->truncated ? "..." : "");
}

static int validate(CURL *c, const send_opts *o) {
  char code[37], id[37];
  payload p = {.name = "validation"};
  p.body = make_validation(o, code, id);
  if (!p.body) {
    fprintf(stderr, "luahook: cannot build the validation event\n");
    return -1;
  }
  p.len = strlen(p.body);
  p.event_id = strdup(id);
  p.data_version = strdup("1");
  p.metadata_version = strdup("1");
  response r;
  int rc = post(c, o, "SubscriptionValidation", &p, &r);
  payload_free(&p);
  if (rc) return -1;
  int ok = 0;
  if (r.status == 200 && r.body) {
    cJSON *j = cJSON_ParseWithLength(r.body, r.len);
    const char *got = cJSON_IsObject(j) ? str_field(j, "validationResponse") : NULL;
    ok = got && strcmp(got, code) == 0;
    cJSON_Delete(j);
  }
  if (ok) {
    printf("validation: ok\n");
  } else {
    printf("validation: failed (%ld", r.status);
    print_body(&r);
    printf(")\n");
  }
  fflush(stdout);
  free(r.body);
  return ok ? 0 : -1;
}

/* ------------------------------------------------------------ command */

static const char *first_secret(const char *env, char *buf, size_t n) {
  /* LUAHOOK_SECRET may list several (the daemon accepts any): send the first. */
  while (*env == ',') env++;
  size_t len = strcspn(env, ",");
  if (len == 0) return NULL;
  if (len >= n) len = n - 1;
  memcpy(buf, env, len);
  buf[len] = '\0';
  return buf;
}

static int parse_args(send_opts *o, int argc, char **argv, int *help) {
  static const char *const valued[] = {"secret",     "sample",       "hub",       "user",
                                       "connection", "subscription", "timeout-ms"};
  int npos = 0;
  *help = 0;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      *help = 1;
      return 0;
    }
    if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
      if (npos == 0)
        o->url = a;
      else
        o->files[o->nfiles++] = a;
      npos++;
      continue;
    }
    const char *name = a + 2, *eq = strchr(name, '=');
    size_t nl = eq ? (size_t)(eq - name) : strlen(name);
    int k = -1;
    for (int j = 0; j < (int)(sizeof valued / sizeof valued[0]); j++)
      if (strlen(valued[j]) == nl && strncmp(valued[j], name, nl) == 0) k = j;
    if (k < 0) return usage_error("unknown option '%s'", a);
    const char *v;
    if (eq)
      v = eq + 1;
    else if (i + 1 < argc)
      v = argv[++i];
    else
      return usage_error("--%s needs a value", valued[k]);
    switch (k) {
    case 0:
      o->secret = v;
      break;
    case 1:
      if (strcmp(v, "connected") != 0 && strcmp(v, "disconnected") != 0)
        return usage_error("--sample must be connected or disconnected, not '%s'", v);
      o->sample = v;
      break;
    case 2:
      o->hub = v;
      break;
    case 3:
      o->user = v;
      break;
    case 4:
      o->connection = v;
      break;
    case 5:
      o->subscription = v;
      break;
    case 6: {
      char *end;
      errno = 0;
      long n = strtol(v, &end, 10);
      if (end == v || *end || errno || n <= 0)
        return usage_error("invalid value for --timeout-ms: '%s'", v);
      o->timeout_ms = n;
      break;
    }
    }
  }
  if (!o->url) return usage_error("missing URL%s", "");
  if (strncasecmp(o->url, "http://", 7) != 0 && strncasecmp(o->url, "https://", 8) != 0)
    return usage_error("URL must start with http:// or https://: '%s'", o->url);
  if (o->nfiles == 0 && !o->sample) return usage_error("missing FILE or --sample%s", "");
  if (!*o->hub) return usage_error("--hub must not be empty%s", "");
  return 0;
}

int cmd_send(int argc, char **argv) {
  send_opts o = {.hub = "chat",
                 .user = "user-1",
                 .subscription = "LUAHOOK-SEND",
                 .timeout_ms = 30000};
  char envsecret[512];
  const char *env = getenv("LUAHOOK_SECRET");
  if (env && *env) o.secret = first_secret(env, envsecret, sizeof envsecret);
  o.files = calloc((size_t)argc + 1, sizeof *o.files);
  if (!o.files) return 1;
  int help, rc = parse_args(&o, argc, argv, &help);
  if (rc || help) {
    if (help) usage(stdout);
    free(o.files);
    return rc;
  }
  if (o.secret && !*o.secret) o.secret = NULL;

  /* Every file is read before anything is sent: a typo is a usage error. */
  int n = o.nfiles + (o.sample ? 1 : 0);
  payload *ps = calloc((size_t)n, sizeof *ps);
  if (!ps) {
    free(o.files);
    return 1;
  }
  rc = 0;
  for (int i = 0; i < o.nfiles && !rc; i++) {
    struct stat st;
    if (stat(o.files[i], &st) == 0 && S_ISDIR(st.st_mode)) {
      fprintf(stderr, "luahook: cannot read %s: is a directory\n", o.files[i]);
      rc = 2;
    } else if (read_file(o.files[i], &ps[i]) != 0) {
      fprintf(stderr, "luahook: cannot read %s: %s\n", o.files[i], strerror(errno));
      rc = 2;
    }
  }
  if (!rc && o.sample && make_sample(&o, &ps[o.nfiles])) rc = 1;

  CURL *c = NULL;
  int curl_up = 0;
  if (!rc) {
    curl_up = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
    if (!curl_up || !(c = curl_easy_init())) {
      fprintf(stderr, "luahook: cannot initialise libcurl\n");
      rc = 1;
    }
  }
  if (!rc && validate(c, &o) != 0) rc = 1;
  /* Like Event Grid, a refused delivery does not stop the next ones. */
  for (int i = 0, failed = 0; i < n && !rc; i++) {
    response r;
    if (post(c, &o, "Notification", &ps[i], &r) != 0) {
      rc = 1; /* unreachable: the next files would fail the same way */
      break;
    }
    printf("%s: %ld", ps[i].name, r.status);
    print_body(&r);
    putchar('\n');
    fflush(stdout);
    if (r.status < 200 || r.status > 299) failed = 1;
    free(r.body);
    if (i == n - 1 && failed) rc = 1;
  }
  if (c) curl_easy_cleanup(c);
  if (curl_up) curl_global_cleanup();
  for (int i = 0; i < n; i++) payload_free(&ps[i]);
  free(ps);
  free(o.files);
  return rc;
}
