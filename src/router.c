/* router: request -> answer. Everything decided from the head (route, method,
 * secret, content type) is answered before the body is read. */
#include "router.h"
#include "bind_http.h"
#include "dispatch.h"
#include "eventgrid.h"
#include "log.h"
#include "metrics.h"

#include <cjson/cJSON.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

struct router {
  const config *cfg;
  script_t *s;
  server_t *server;
  time_t started;
  time_t loaded_at;
  char *reload_error;
  unsigned long reloads_ok, reloads_failed;
};

router_t *router_new(const config *cfg, script_t *s) {
  router_t *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->cfg = cfg;
  r->s = s;
  r->started = r->loaded_at = time(NULL);
  return r;
}

void router_free(router_t *r) {
  if (!r) return;
  free(r->reload_error);
  free(r);
}

void router_set_server(router_t *r, server_t *s) {
  r->server = s;
}

void router_note_reload(router_t *r, const char *err) {
  metrics_reload(err == NULL);
  free(r->reload_error);
  r->reload_error = err ? strdup(err) : NULL;
  if (err) {
    r->reloads_failed++;
  } else {
    r->reloads_ok++;
    r->loaded_at = time(NULL);
  }
}

static void respond_json(request_t *req, int status, cJSON *o, const char *extra) {
  char *s = o ? cJSON_PrintUnformatted(o) : NULL;
  if (s)
    request_respond(req, status, "application/json", s, strlen(s), extra, 0);
  else
    request_respond(req, 500, NULL, NULL, 0, NULL, 1);
  free(s);
  cJSON_Delete(o);
}

static void respond_error(request_t *req, int status, const char *msg, long index,
                          const char *extra) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "error", msg);
  if (index >= 0) cJSON_AddNumberToObject(o, "index", (double)index);
  respond_json(req, status, o, extra);
}

/* ------------------------------------------------------------ secret */

/* The percent-decoded value of query parameter `name`, in out; 0 if found (a value
 * too long for out is not). */
static int query_param(const char *q, const char *name, char *out, size_t outlen) {
  size_t nl = strlen(name);
  while (*q) {
    const char *amp = strchr(q, '&');
    size_t len = amp ? (size_t)(amp - q) : strlen(q);
    if (len > nl && strncmp(q, name, nl) == 0 && q[nl] == '=' && len - nl - 1 < outlen) {
      eventgrid_percent_decode(q + nl + 1, len - nl - 1, out, 1);
      return 0;
    }
    q += len;
    if (*q == '&') q++;
  }
  return -1;
}

/* Compares digests, so the time taken says nothing about the secret's length or
 * its first differing byte. */
static int secret_equal(const char *given, const char *secret) {
  unsigned char a[32], b[32];
  unsigned int la = 0, lb = 0;
  EVP_Digest(given, strlen(given), a, &la, EVP_sha256(), NULL);
  EVP_Digest(secret, strlen(secret), b, &lb, EVP_sha256(), NULL);
  return la == 32 && lb == 32 && CRYPTO_memcmp(a, b, 32) == 0;
}

static int authorized(const router_t *r, const request_t *req) {
  if (r->cfg->secrets.n == 0) return 1;
  char code[512];
  const char *cands[2];
  int n = 0;
  if (query_param(request_query(req), "code", code, sizeof code) == 0) cands[n++] = code;
  const char *hdr = request_header(req, "aeg-sas-key");
  if (hdr) cands[n++] = hdr;
  int ok = 0;
  for (int i = 0; i < n; i++)
    for (int k = 0; k < r->cfg->secrets.n; k++)
      ok |= secret_equal(cands[i], r->cfg->secrets.v[k]);
  return ok;
}

/* ------------------------------------------------------------ routes */

static void healthz(router_t *r, request_t *req) {
  cJSON *o = cJSON_CreateObject();
  gen_t *g = script_current(r->s);
  char ts[32];
  struct tm tm;
  gmtime_r(&r->loaded_at, &tm);
  strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
  cJSON_AddStringToObject(o, "status", "ok");
  cJSON_AddStringToObject(o, "version", LUAHOOK_VERSION);
  cJSON_AddNumberToObject(o, "generation", g ? gen_id(g) : 0);
  cJSON_AddStringToObject(o, "loaded_at", ts);
  if (r->reload_error)
    cJSON_AddStringToObject(o, "last_reload_error", r->reload_error);
  else
    cJSON_AddNullToObject(o, "last_reload_error");
  cJSON_AddNumberToObject(o, "uptime_s", (double)(time(NULL) - r->started));
  cJSON_AddNumberToObject(o, "events_in_flight", (double)dispatch_inflight());
  cJSON_AddNumberToObject(o, "lua_memory_bytes", (double)script_memory(r->s));
  respond_json(req, 200, o, NULL);
}

static int in_list(const strlist *l, const char *v) {
  for (int i = 0; i < l->n; i++)
    if (strcasecmp(l->v[i], v) == 0) return 1;
  return 0;
}

/* CloudEvents webhook abuse protection: consent to the origin that asks, when it
 * is allowed (any, unless --allowed-origin lists some). */
static void options_handshake(router_t *r, request_t *req) {
  const char *origin = request_header(req, "webhook-request-origin");
  char extra[512];
  if (!origin) {
    request_respond(req, 200, NULL, NULL, 0, "Allow: POST, OPTIONS\r\n", 0);
    return;
  }
  if (r->cfg->origins.n && !in_list(&r->cfg->origins, origin)) {
    log_write(LOG_WARN, "webhook origin refused", (log_kv[]){{"origin", origin}}, 1);
    respond_error(req, 403, "origin not allowed", -1, "Allow: POST, OPTIONS\r\n");
    return;
  }
  snprintf(extra, sizeof extra,
           "WebHook-Allowed-Origin: %.300s\r\nWebHook-Allowed-Rate: *\r\nAllow: POST, "
           "OPTIONS\r\n",
           origin);
  log_write(LOG_INFO, "webhook handshake answered", (log_kv[]){{"origin", origin}}, 1);
  request_respond(req, 200, NULL, NULL, 0, extra, 0);
}

static void on_head(request_t *req, void *ud) {
  router_t *r = ud;
  const char *m = request_method(req), *path = request_path(req);
  if (strcmp(path, r->cfg->path) == 0) {
    if (strcmp(m, "POST") != 0 && strcmp(m, "OPTIONS") != 0) {
      respond_error(req, 405, "method not allowed: deliveries are POSTed", -1,
                    "Allow: POST, OPTIONS\r\n");
      return;
    }
    if (!authorized(r, req)) {
      log_write(LOG_WARN, "unauthorized delivery",
                (log_kv[]){{"method", m}, {"path", path}}, 2);
      respond_error(req, 401,
                    "missing or wrong secret (query 'code' or header 'aeg-sas-key')", -1,
                    NULL);
      return;
    }
    /* in CloudEvents binary mode any content type is the data's */
    if (strcmp(m, "POST") == 0 && !request_header(req, "ce-specversion") &&
        !eventgrid_content_type_ok(request_header(req, "content-type"))) {
      respond_error(req, 415,
                    "unsupported content type: send application/json or "
                    "application/cloudevents+json",
                    -1, NULL);
      return;
    }
    return; /* read the body */
  }
  if (strcmp(path, "/healthz") == 0 || strcmp(path, "/metrics") == 0) {
    if (strcmp(m, "GET") != 0 && strcmp(m, "HEAD") != 0)
      respond_error(req, 405, "method not allowed", -1, "Allow: GET, HEAD\r\n");
    return;
  }
  respond_error(req, 404, "not found", -1, NULL);
}

static void on_dispatched(void *ud, int status, const char *reason) {
  request_t *req = ud;
  if (status == 200)
    request_respond(req, 200, NULL, NULL, 0, NULL, 0);
  else
    respond_error(req, status, reason ? reason : "handler failed", -1, NULL);
}

static int is_deletion(const char *aeg) {
  return aeg && (strcasecmp(aeg, "SubscriptionDeletion") == 0 ||
                 strcasecmp(aeg, "Unsubscribe") == 0);
}

static void answer_validation(router_t *r, request_t *req, batch_t *b) {
  const char *sub = request_header(req, "aeg-subscription-name");
  if (r->cfg->subscriptions.n && !(sub && in_list(&r->cfg->subscriptions, sub))) {
    log_write(LOG_WARN, "subscription validation refused: not in --subscription",
              (log_kv[]){{"subscription", sub ? sub : "(none)"}}, 1);
    respond_error(req, 403, "subscription not allowed", -1, NULL);
    return;
  }
  log_write(LOG_INFO, "subscription validation answered",
            (log_kv[]){{"subscription", sub}, {"validation_url", b->validation_url}}, 2);
  size_t len = 0;
  char *body = eventgrid_validation_response(b, &len);
  if (body)
    request_respond(req, 200, "application/json", body, len, NULL, 0);
  else
    respond_error(req, 500, "out of memory", -1, NULL);
  free(body);
}

static void deliveries(router_t *r, request_t *req) {
  const char *names[SERVER_MAX_HEADERS], *values[SERVER_MAX_HEADERS];
  size_t nh = request_header_count(req);
  for (size_t i = 0; i < nh; i++) request_header_at(req, i, &names[i], &values[i]);
  delivery d = {.content_type = request_header(req, "content-type"),
                .aeg_event_type = request_header(req, "aeg-event-type"),
                .nheaders = nh,
                .hnames = names,
                .hvalues = values};
  d.body = request_body(req, &d.len);
  if (is_deletion(d.aeg_event_type)) {
    log_write(LOG_INFO, "subscription deletion notice",
              (log_kv[]){{"subscription", request_header(req, "aeg-subscription-name")},
                         {"aeg-event-type", d.aeg_event_type}},
              2);
    if (d.len == 0) { /* nothing to hand to the script */
      request_respond(req, 200, NULL, NULL, 0, NULL, 0);
      return;
    }
  }
  batch_t b;
  decode_error e;
  if (eventgrid_decode(&d, &b, &e) != 0) {
    log_write(LOG_INFO, "delivery refused", (log_kv[]){{"error", e.msg}}, 1);
    respond_error(req, e.status, e.msg, e.index, NULL);
    return;
  }
  request_set_events(req, (long)b.n);
  if (b.kind == BATCH_VALIDATION) {
    answer_validation(r, req, &b);
    batch_free(&b);
    return;
  }
  long busy = dispatch_inflight();
  if (busy > 0 && (size_t)busy + b.n > r->cfg->max_inflight) {
    batch_free(&b);
    log_write(LOG_WARN, "busy: delivery deferred with 503", NULL, 0);
    respond_error(req, 503, "too many events in progress, retry later", -1,
                  "Retry-After: 30\r\n");
    return;
  }
  for (size_t i = 0; i < b.n; i++)
    if (strcmp(b.events[i].type, EG_TYPE_DELETED) == 0) {
      const cJSON *id =
          cJSON_GetObjectItemCaseSensitive(b.events[i].data, "eventSubscriptionId");
      log_write(
          LOG_INFO, "subscription deleted",
          (log_kv[]){{"event_subscription", cJSON_IsString(id) ? id->valuestring : NULL}},
          1);
    }
  dispatch_meta m = {.delivery_count = -1,
                     .subscription_name = request_header(req, "aeg-subscription-name"),
                     .event_type = d.aeg_event_type,
                     .metadata_version = request_header(req, "aeg-metadata-version"),
                     .data_version = request_header(req, "aeg-data-version"),
                     .output_event_id = request_header(req, "aeg-output-event-id")};
  const char *dc = request_header(req, "aeg-delivery-count");
  if (dc) {
    char *end;
    long v = strtol(dc, &end, 10);
    if (end != dc && *end == '\0' && v >= 0) m.delivery_count = v;
  }
  dispatch_cbs cbs = {.done = on_dispatched};
  if (dispatch_run(r->s, &b, &m, &cbs, req) != 0) {
    batch_free(&b);
    respond_error(req, 503, "no script loaded", -1, "Retry-After: 30\r\n");
  }
}

static void metrics(router_t *r, request_t *req) {
  gen_t *g = script_current(r->s);
  metrics_gauges gg = {.inflight_events = dispatch_inflight(),
                       .lua_bytes = script_memory(r->s),
                       .connections = r->server ? server_connections(r->server) : 0,
                       .generation = g ? gen_id(g) : 0,
                       .outbound_active = bind_http_active()};
  size_t len = 0;
  char *text = metrics_render(&gg, &len);
  if (!text) {
    respond_error(req, 500, "out of memory", -1, NULL);
    return;
  }
  request_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, NULL,
                  0);
  free(text);
}

static void on_request(request_t *req, void *ud) {
  router_t *r = ud;
  const char *m = request_method(req), *path = request_path(req);
  if (strcmp(path, "/healthz") == 0) {
    healthz(r, req);
    return;
  }
  if (strcmp(path, "/metrics") == 0) {
    metrics(r, req);
    return;
  }
  if (strcmp(m, "OPTIONS") == 0) {
    options_handshake(r, req);
    return;
  }
  deliveries(r, req);
}

server_handler router_handler(router_t *r) {
  return (server_handler){on_head, on_request, r};
}
