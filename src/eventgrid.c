/* eventgrid: validation and decoding of delivery bodies. One strict JSON parse
 * into the batch's arena (json_parse, which also gives each element's span), then
 * per-event field checks. The first problem found is reported with the event's
 * index. */
#include "eventgrid.h"
#include "arena.h"
#include "bind_crypto.h"
#include "bind_json.h"
#include "json_parse.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct span {
  size_t off, len;
} span;

static int fail(decode_error *e, int status, long index, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(decode_error *e, int status, long index, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->msg, sizeof e->msg, fmt, ap);
  va_end(ap);
  e->status = status;
  e->index = index;
  return -1;
}

static int is_ws(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

typedef struct spanvec {
  span *v;
  size_t n, cap;
  int oom;
} spanvec;

static void add_span(void *ud, size_t off, size_t len) {
  spanvec *sp = ud;
  if (sp->n == sp->cap) {
    size_t cap = sp->cap ? sp->cap * 2 : 16;
    span *nv = realloc(sp->v, cap * sizeof *nv);
    if (!nv) {
      sp->oom = 1;
      return;
    }
    sp->v = nv;
    sp->cap = cap;
  }
  sp->v[sp->n++] = (span){off, len};
}

static const char *str_field(const cJSON *obj, const char *name) {
  const cJSON *f = cJSON_GetObjectItemCaseSensitive(obj, name);
  return cJSON_IsString(f) ? f->valuestring : NULL;
}

/* An optional string field: absent or null is fine, any other type is not. */
/* Finds the members named in names[] in one pass over the object (the first of a
 * repeated name wins, as with cJSON_GetObjectItemCaseSensitive). */
static void members(const cJSON *o, const char *const *names, const cJSON **out, int n) {
  for (int k = 0; k < n; k++) out[k] = NULL;
  for (const cJSON *c = o->child; c; c = c->next)
    for (int k = 0; k < n; k++)
      if (!out[k] && c->string[0] == names[k][0] && strcmp(c->string, names[k]) == 0) {
        out[k] = c;
        break;
      }
}

/* An optional string member f: absent or null is fine, any other type is not. */
static int opt_str(const cJSON *f, const char *name, const char **out, long i,
                   decode_error *e) {
  *out = NULL;
  if (!f || cJSON_IsNull(f)) return 0;
  if (!cJSON_IsString(f))
    return fail(e, 400, i, "event %ld: '%s' must be a string", i, name);
  *out = f->valuestring;
  return 0;
}

static int req_str(const cJSON *f, const char *name, const char **out, long i,
                   decode_error *e) {
  if (!f) return fail(e, 400, i, "event %ld: missing '%s'", i, name);
  if (!cJSON_IsString(f) || f->valuestring[0] == '\0')
    return fail(e, 400, i, "event %ld: '%s' must be a non-empty string", i, name);
  *out = f->valuestring;
  return 0;
}

static int digits(const char *s, int n, int *out) {
  int v = 0;
  for (int k = 0; k < n; k++) {
    if (!isdigit((unsigned char)s[k])) return -1;
    v = v * 10 + (s[k] - '0');
  }
  *out = v;
  return 0;
}

static long long days_from_civil(int y, int m, int d) {
  y -= m <= 2;
  long long era = (y >= 0 ? y : y - 399) / 400;
  long long yoe = y - era * 400;
  long long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

int eventgrid_parse_time(const char *s, long long *epoch) {
  static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  int Y, M, D, h, m, sec;
  if (strlen(s) < 19 || digits(s, 4, &Y) || s[4] != '-' || digits(s + 5, 2, &M) ||
      s[7] != '-' || digits(s + 8, 2, &D) ||
      (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || digits(s + 11, 2, &h) ||
      s[13] != ':' || digits(s + 14, 2, &m) || s[16] != ':' || digits(s + 17, 2, &sec))
    return -1;
  if (M < 1 || M > 12 || D < 1 || D > mdays[M - 1] || h > 23 || m > 59 || sec > 60)
    return -1;
  if (M == 2 && D == 29 && !((Y % 4 == 0 && Y % 100 != 0) || Y % 400 == 0)) return -1;
  const char *p = s + 19;
  if (*p == '.') {
    p++;
    if (!isdigit((unsigned char)*p)) return -1;
    while (isdigit((unsigned char)*p)) p++;
  }
  long long off = 0;
  if (*p == 'Z' || *p == 'z') {
    p++;
  } else if (*p == '+' || *p == '-') {
    int oh, om;
    if (digits(p + 1, 2, &oh) || p[3] != ':' || digits(p + 4, 2, &om) || oh > 23 ||
        om > 59)
      return -1;
    off = (oh * 3600LL + om * 60) * (*p == '-' ? -1 : 1);
    p += 6;
  }
  if (*p != '\0') return -1;
  *epoch = days_from_civil(Y, M, D) * 86400 + h * 3600LL + m * 60LL + sec - off;
  return 0;
}

static int media_is(const char *ct, const char *type) {
  size_t n = strlen(type);
  while (*ct == ' ') ct++;
  if (strncasecmp(ct, type, n) != 0) return 0;
  ct += n;
  while (*ct == ' ' || *ct == '\t') ct++;
  return *ct == '\0' || *ct == ';';
}

int eventgrid_content_type_ok(const char *ct) {
  if (!ct) return 1;
  if (media_is(ct, "application/json") || media_is(ct, "text/json")) return 1;
  if (media_is(ct, "application/cloudevents+json") ||
      media_is(ct, "application/cloudevents-batch+json"))
    return 1;
  return 0;
}

int eventgrid_is_json_type(const char *ct) {
  if (!ct) return 1;
  while (*ct == ' ') ct++;
  size_t n = strcspn(ct, ";");
  while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t')) n--;
  if ((n == 16 && strncasecmp(ct, "application/json", 16) == 0) ||
      (n == 9 && strncasecmp(ct, "text/json", 9) == 0))
    return 1;
  return n > 5 && strncasecmp(ct + n - 5, "+json", 5) == 0;
}

static const char *const ce_attributes[] = {
    "specversion",     "id",         "source", "type",       "subject", "time",
    "datacontenttype", "dataschema", "data",   "data_base64"};

int eventgrid_is_ce_attribute(const char *name) {
  for (size_t i = 0; i < sizeof ce_attributes / sizeof ce_attributes[0]; i++)
    if (strcmp(name, ce_attributes[i]) == 0) return 1;
  return 0;
}

static int check_signalr_data(const event_t *ev, long i, decode_error *e) {
  const cJSON *d = ev->data;
  if (!cJSON_IsObject(d))
    return fail(e, 400, i, "event %ld: SignalR event 'data' must be an object", i);
  if (!str_field(d, "hubName"))
    return fail(e, 400, i, "event %ld: SignalR event needs a string 'data.hubName'", i);
  if (!str_field(d, "connectionId"))
    return fail(e, 400, i, "event %ld: SignalR event needs a string 'data.connectionId'",
                i);
  return 0;
}

enum { EG_ID, EG_TYPE, EG_TIME, EG_SUBJECT, EG_TOPIC, EG_DATAVERSION, EG_DATA, EG_N };
static const char *const eg_names[EG_N] = {"id",    "eventType",   "eventTime", "subject",
                                           "topic", "dataVersion", "data"};

static int decode_eventgrid_event(const cJSON *o, event_t *ev, long i, decode_error *e) {
  const cJSON *f[EG_N];
  long long t;
  members(o, eg_names, f, EG_N);
  if (req_str(f[EG_ID], "id", &ev->id, i, e) ||
      req_str(f[EG_TYPE], "eventType", &ev->type, i, e))
    return -1;
  if (!f[EG_TIME]) return fail(e, 400, i, "event %ld: missing 'eventTime'", i);
  if (!cJSON_IsString(f[EG_TIME]) || eventgrid_parse_time(f[EG_TIME]->valuestring, &t))
    return fail(e, 400, i, "event %ld: 'eventTime' is not an RFC 3339 time", i);
  ev->time = f[EG_TIME]->valuestring;
  if (opt_str(f[EG_SUBJECT], "subject", &ev->subject, i, e) ||
      opt_str(f[EG_TOPIC], "topic", &ev->source, i, e) ||
      opt_str(f[EG_DATAVERSION], "dataVersion", &ev->data_version, i, e))
    return -1;
  ev->data = f[EG_DATA];
  return 0;
}

enum {
  CE_SPEC,
  CE_ID,
  CE_SOURCE,
  CE_TYPE,
  CE_SUBJECT,
  CE_TIME,
  CE_SCHEMA,
  CE_DCT,
  CE_B64,
  CE_DATA,
  CE_N
};
static const char *const ce_names[CE_N] = {
    "specversion", "id",         "source",          "type",        "subject",
    "time",        "dataschema", "datacontenttype", "data_base64", "data"};

static int decode_cloudevent(const cJSON *o, event_t *ev, long i, decode_error *e) {
  const cJSON *f[CE_N];
  const char *spec = NULL, *schema = NULL;
  long long t;
  members(o, ce_names, f, CE_N);
  if (req_str(f[CE_SPEC], "specversion", &spec, i, e) ||
      req_str(f[CE_ID], "id", &ev->id, i, e) ||
      req_str(f[CE_SOURCE], "source", &ev->source, i, e) ||
      req_str(f[CE_TYPE], "type", &ev->type, i, e))
    return -1;
  if (strcmp(spec, "1.0") != 0)
    return fail(e, 400, i, "event %ld: unsupported specversion '%s'", i, spec);
  if (opt_str(f[CE_SUBJECT], "subject", &ev->subject, i, e) ||
      opt_str(f[CE_TIME], "time", &ev->time, i, e) ||
      opt_str(f[CE_SCHEMA], "dataschema", &schema, i, e) ||
      opt_str(f[CE_DCT], "datacontenttype", &ev->datacontenttype, i, e) ||
      opt_str(f[CE_B64], "data_base64", &ev->data_base64, i, e))
    return -1;
  if (ev->time && eventgrid_parse_time(ev->time, &t))
    return fail(e, 400, i, "event %ld: 'time' is not an RFC 3339 time", i);
  ev->data = cJSON_IsNull(f[CE_DATA]) ? NULL : f[CE_DATA]; /* null means unset */
  if (ev->data_base64) {
    if (ev->data)
      return fail(e, 400, i, "event %ld: 'data' and 'data_base64' are exclusive", i);
    size_t n = strlen(ev->data_base64), k, bad;
    unsigned char *tmp = malloc(crypto_base64_decoded_max(n));
    int r = tmp ? crypto_base64_decode(ev->data_base64, n, 0, tmp, &k, &bad) : -1;
    free(tmp);
    if (r) return fail(e, 400, i, "event %ld: 'data_base64' is not valid base64", i);
  }
  return 0;
}

static int classify(batch_t *b, decode_error *e) {
  for (size_t k = 0; k < b->n; k++) {
    event_t *ev = &b->events[k];
    long i = (long)k;
    if (strcmp(ev->type, EG_TYPE_CONNECTED) == 0) {
      ev->kind = EV_CONNECTED;
    } else if (strcmp(ev->type, EG_TYPE_DISCONNECTED) == 0) {
      ev->kind = EV_DISCONNECTED;
    } else {
      ev->kind = EV_OTHER;
      if (strcmp(ev->type, EG_TYPE_VALIDATION) == 0) {
        if (b->n != 1)
          return fail(e, 400, i,
                      "event %ld: a validation event must be alone in its batch", i);
        const char *code =
            cJSON_IsObject(ev->data) ? str_field(ev->data, "validationCode") : 0;
        if (!code)
          return fail(e, 400, i,
                      "event %ld: validation event needs a string "
                      "'data.validationCode'",
                      i);
        b->kind = BATCH_VALIDATION;
        b->validation_code = code;
        b->validation_url = str_field(ev->data, "validationUrl");
      }
      continue;
    }
    if (check_signalr_data(ev, i, e)) return -1;
  }
  return 0;
}

/* Strict JSON text parsed into arena a (see json_parse.h). With sp, also the
 * spans of a top-level array's elements. */
static int parse_json(const char *text, size_t len, cJSON **out, arena_t *a, spanvec *sp,
                      decode_error *e) {
  if (memchr(text, '\0', len)) return fail(e, 400, -1, "body contains a NUL byte");
  json_error je;
  cJSON *root =
      json_parse(text, len, a, EVENTGRID_MAX_DEPTH, sp ? add_span : NULL, sp, &je);
  if (sp && sp->oom) return fail(e, 500, -1, "out of memory");
  if (!root) {
    if (strcmp(je.msg, "out of memory") == 0) return fail(e, 500, -1, "out of memory");
    if (strstr(je.msg, "UTF-8"))
      return fail(e, 400, -1, "body is not valid UTF-8 (at byte %zu)", je.off);
    if (strstr(je.msg, "nesting"))
      return fail(e, 400, -1, "JSON nesting deeper than %d levels", EVENTGRID_MAX_DEPTH);
    if (strstr(je.msg, "trailing"))
      return fail(e, 400, -1, "trailing data after the JSON value at byte %zu", je.off);
    return fail(e, 400, -1, "body is not valid JSON: %s (at byte %zu)", je.msg, je.off);
  }
  *out = root;
  return 0;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

size_t eventgrid_percent_decode(const char *s, size_t n, char *out, int plus_is_space) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    int h1, h2;
    if (s[i] == '%' && i + 2 < n && (h1 = hexval(s[i + 1])) >= 0 &&
        (h2 = hexval(s[i + 2])) >= 0) {
      out[k++] = (char)(h1 * 16 + h2);
      i += 2;
    } else {
      out[k++] = plus_is_space && s[i] == '+' ? ' ' : s[i];
    }
  }
  out[k] = '\0';
  return k;
}

/* Adds attribute `name` to o: the header value, percent-decoded (UTF-8, no NUL). */
static int add_attribute(arena_t *a, cJSON *o, const char *name, const char *hv) {
  size_t vl = strlen(hv);
  char *v = arena_alloc(a, vl + 1);
  cJSON *s = json_new(a, cJSON_String);
  char *key = json_strndup(a, name, strlen(name));
  if (!v || !s || !key) return -1;
  size_t k = eventgrid_percent_decode(hv, vl, v, 0);
  if (strlen(v) != k || !json_utf8_valid(v, k)) return 1;
  s->valuestring = v;
  json_append(o, s, key);
  return 0;
}

/* CloudEvents binary mode: the attributes come from ce-* headers (percent-encoded),
 * datacontenttype from Content-Type, the data from the body. The event is built as
 * the object structured mode would have carried, then checked the same way. */
static int decode_binary(const delivery *d, batch_t *b, decode_error *e) {
  arena_t *a = arena_new();
  cJSON *o = a ? json_new(a, cJSON_Object) : NULL;
  char name[64];
  b->arena = a;
  if (!o) {
    batch_free(b);
    return fail(e, 500, -1, "out of memory");
  }
  b->root = o;
  for (size_t h = 0; h < d->nheaders; h++) {
    const char *hn = d->hnames[h], *hv = d->hvalues[h];
    if (strncasecmp(hn, "ce-", 3) != 0) continue;
    size_t n = strlen(hn + 3);
    int good = n > 0 && n < sizeof name;
    for (size_t k = 0; good && k < n; k++) {
      char c = (char)tolower((unsigned char)hn[3 + k]);
      good = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
      name[k] = c;
    }
    if (!good) {
      batch_free(b);
      return fail(e, 400, 0, "invalid CloudEvents header name '%.64s'", hn);
    }
    name[n] = '\0';
    if (strcmp(name, "datacontenttype") == 0 || strcmp(name, "data") == 0 ||
        strcmp(name, "data_base64") == 0) {
      batch_free(b);
      return fail(e, 400, 0, "header '%s' must not be sent in binary mode", hn);
    }
    if (cJSON_GetObjectItemCaseSensitive(o, name)) continue; /* the first one wins */
    int r = add_attribute(a, o, name, hv);
    if (r) {
      batch_free(b);
      return r < 0
                 ? fail(e, 500, -1, "out of memory")
                 : fail(e, 400, 0, "header '%s' is not valid percent-encoded UTF-8", hn);
    }
  }
  if (d->content_type) {
    cJSON *ct = json_new(a, cJSON_String);
    char *key = json_strndup(a, "datacontenttype", 15);
    if (!ct || !key ||
        !(ct->valuestring = json_strndup(a, d->content_type, strlen(d->content_type)))) {
      batch_free(b);
      return fail(e, 500, -1, "out of memory");
    }
    json_append(o, ct, key);
  }
  int json_data = d->len > 0 && eventgrid_is_json_type(d->content_type);
  if (json_data) {
    cJSON *data = NULL;
    char *key = json_strndup(a, "data", 4);
    if (!key) {
      batch_free(b);
      return fail(e, 500, -1, "out of memory");
    }
    if (parse_json(d->body, d->len, &data, a, NULL, e)) {
      batch_free(b);
      return -1;
    }
    json_append(o, data, key);
  }
  b->schema = SCHEMA_CLOUDEVENTS;
  b->events = calloc(1, sizeof *b->events);
  if (!b->events) {
    batch_free(b);
    return fail(e, 500, -1, "out of memory");
  }
  b->n = 1;
  event_t *ev = &b->events[0];
  ev->obj = o;
  ev->raw = d->body;
  ev->raw_len = d->len;
  if (decode_cloudevent(o, ev, 0, e) || classify(b, e)) {
    batch_free(b);
    return -1;
  }
  if (!json_data && d->len > 0) {
    ev->bin_data = d->body;
    ev->bin_len = d->len;
  }
  return 0;
}

int eventgrid_decode(const delivery *d, batch_t *b, decode_error *e) {
  memset(b, 0, sizeof *b);
  e->index = -1;
  e->msg[0] = '\0';
  const char *ct = d->content_type;
  int binary = 0;
  for (size_t h = 0; h < d->nheaders; h++)
    if (strcasecmp(d->hnames[h], "ce-specversion") == 0) binary = 1;
  if (binary && !(ct && (media_is(ct, "application/cloudevents+json") ||
                         media_is(ct, "application/cloudevents-batch+json"))))
    return decode_binary(d, b, e);
  if (!eventgrid_content_type_ok(ct))
    return fail(e, 415, -1,
                "unsupported content type '%s': send application/json or "
                "application/cloudevents+json",
                ct);
  int ce_structured = ct && media_is(ct, "application/cloudevents+json");
  int ce_batch = ct && media_is(ct, "application/cloudevents-batch+json");

  const char *aeg = d->aeg_event_type;
  int want_validation = 0;
  if (aeg && *aeg) {
    if (strcasecmp(aeg, "SubscriptionValidation") == 0)
      want_validation = 1;
    else if (strcasecmp(aeg, "Notification") != 0 &&
             strcasecmp(aeg, "SubscriptionDeletion") != 0 &&
             strcasecmp(aeg, "Unsubscribe") != 0)
      return fail(e, 400, -1, "unknown aeg-event-type '%s'", aeg);
  }

  if (d->len == 0) return fail(e, 400, -1, "empty body: expected a JSON array of events");
  cJSON *root = NULL;
  spanvec sp = {0};
  arena_t *a = arena_new();
  if (!a) return fail(e, 500, -1, "out of memory");
  if (parse_json(d->body, d->len, &root, a, &sp, e)) {
    free(sp.v);
    arena_free(a);
    return -1;
  }
  b->arena = a;
  span *spans = sp.v;
  size_t nspans = sp.n;
  b->root = root;
  int is_array = cJSON_IsArray(root);
  size_t n = is_array ? (size_t)cJSON_GetArraySize(root) : 1;
  if (!is_array) {
    /* A single CloudEvent in structured mode; an Event Grid delivery is an array. */
    if (!cJSON_IsObject(root) || ce_batch ||
        (!ce_structured && !str_field(root, "specversion"))) {
      free(spans);
      batch_free(b);
      return fail(e, 400, -1, "body must be a JSON array of events");
    }
  }
  if (is_array && nspans != n) { /* cannot happen for a clean parse; be safe */
    free(spans);
    batch_free(b);
    return fail(e, 400, -1, "body is not valid JSON");
  }
  b->events = n ? calloc(n, sizeof *b->events) : NULL;
  if (n && !b->events) {
    free(spans);
    batch_free(b);
    return fail(e, 500, -1, "out of memory");
  }
  b->n = n;

  /* The schema is the content type's, else the first event's shape. */
  const cJSON *first = is_array ? root->child : root;
  int ce = ce_structured || ce_batch || (first && str_field(first, "specversion"));
  b->schema = ce ? SCHEMA_CLOUDEVENTS : SCHEMA_EVENTGRID;

  long i = 0;
  for (const cJSON *o = first; o && i < (long)n; o = is_array ? o->next : NULL, i++) {
    event_t *ev = &b->events[i];
    if (!cJSON_IsObject(o)) {
      free(spans);
      batch_free(b);
      return fail(e, 400, i, "event %ld: must be a JSON object", i);
    }
    ev->obj = o;
    if (is_array) {
      ev->raw = d->body + spans[i].off;
      ev->raw_len = spans[i].len;
    } else { /* the whole body, without surrounding white space */
      size_t from = 0, to = d->len;
      while (from < to && is_ws(d->body[from])) from++;
      while (to > from && is_ws(d->body[to - 1])) to--;
      ev->raw = d->body + from;
      ev->raw_len = to - from;
    }
    int r = ce ? decode_cloudevent(o, ev, i, e) : decode_eventgrid_event(o, ev, i, e);
    if (r) {
      free(spans);
      batch_free(b);
      return -1;
    }
  }
  free(spans);
  if (classify(b, e)) {
    batch_free(b);
    return -1;
  }
  if (want_validation && b->kind != BATCH_VALIDATION) {
    batch_free(b);
    return fail(e, 400, -1,
                "aeg-event-type is SubscriptionValidation but the body holds no "
                "validation event");
  }
  return 0;
}

void batch_free(batch_t *b) {
  arena_free(b->arena); /* the tree lives in it */
  free(b->events);
  memset(b, 0, sizeof *b);
}

char *eventgrid_validation_response(const batch_t *b, size_t *len) {
  cJSON *o = cJSON_CreateObject();
  if (!o || !cJSON_AddStringToObject(o, "validationResponse", b->validation_code)) {
    cJSON_Delete(o);
    return NULL;
  }
  char *s = cJSON_PrintUnformatted(o);
  cJSON_Delete(o);
  if (s) *len = strlen(s);
  return s;
}
