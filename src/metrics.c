/* metrics: plain counters in static storage (one loop, one thread) and a
 * renderer for the Prometheus text format, version 0.0.4. */
#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                0.25,   0.5,   1,      2.5,   5,    10,    25};
#define NBOUNDS (sizeof bounds / sizeof bounds[0])

static uint64_t requests[600];
static uint64_t events[MK_COUNT][MO_COUNT];
static uint64_t hist[NBOUNDS + 1]; /* per bucket, not cumulative; last = +Inf */
static double hist_sum;
static uint64_t hist_count;
static uint64_t reloads[2];
static uint64_t outbound[MC_COUNT];
static uint64_t timer_errors;

static const char *const kind_names[MK_COUNT] = {"connected", "disconnected", "other"};
static const char *const outcome_names[MO_COUNT] = {"ok",      "error",     "rejected",
                                                    "timeout", "duplicate", "no_handler"};
static const char *const call_names[MC_COUNT] = {"ok",  "timeout",   "dns",  "connect",
                                                 "tls", "too_large", "error"};

void metrics_request(int status) {
  if (status >= 100 && status < 600) requests[status]++;
}

void metrics_event(metric_kind k, metric_outcome o, double seconds) {
  events[k][o]++;
  if (seconds < 0) return;
  size_t i = 0;
  while (i < NBOUNDS && seconds > bounds[i]) i++;
  hist[i]++;
  hist_sum += seconds;
  hist_count++;
}

void metrics_reload(int ok) {
  reloads[ok ? 0 : 1]++;
}

void metrics_outbound(metric_call c) {
  outbound[c]++;
}

void metrics_timer_error(void) {
  timer_errors++;
}

typedef struct out {
  char *p;
  size_t len, cap;
  int oom;
} out;

static void put(out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(out *o, const char *fmt, ...) {
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = o->oom ? -1 : vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
      o->oom = 1;
      return;
    }
    if ((size_t)n < o->cap - o->len) {
      o->len += (size_t)n;
      return;
    }
    size_t cap = o->cap * 2 + (size_t)n;
    char *np = realloc(o->p, cap);
    if (!np) {
      o->oom = 1;
      return;
    }
    o->p = np;
    o->cap = cap;
  }
}

char *metrics_render(const metrics_gauges *g, size_t *len) {
  out o = {malloc(4096), 0, 4096, 0};
  if (!o.p) return NULL;
  put(&o, "# HELP luahook_requests_total HTTP requests answered, by status code.\n"
          "# TYPE luahook_requests_total counter\n");
  for (int s = 100; s < 600; s++)
    if (requests[s])
      put(&o, "luahook_requests_total{code=\"%d\"} %llu\n", s,
          (unsigned long long)requests[s]);
  put(&o, "# HELP luahook_events_total Events by type and outcome.\n"
          "# TYPE luahook_events_total counter\n");
  for (int k = 0; k < MK_COUNT; k++)
    for (int r = 0; r < MO_COUNT; r++)
      put(&o, "luahook_events_total{type=\"%s\",outcome=\"%s\"} %llu\n", kind_names[k],
          outcome_names[r], (unsigned long long)events[k][r]);
  put(&o, "# HELP luahook_dedup_hits_total Redelivered events skipped because they had "
          "succeeded.\n# TYPE luahook_dedup_hits_total counter\n");
  uint64_t dups = 0;
  for (int k = 0; k < MK_COUNT; k++) dups += events[k][MO_DUPLICATE];
  put(&o, "luahook_dedup_hits_total %llu\n", (unsigned long long)dups);
  put(&o, "# HELP luahook_handler_duration_seconds Time from an event's start to its "
          "settling.\n# TYPE luahook_handler_duration_seconds histogram\n");
  uint64_t cum = 0;
  for (size_t i = 0; i < NBOUNDS; i++) {
    cum += hist[i];
    put(&o, "luahook_handler_duration_seconds_bucket{le=\"%g\"} %llu\n", bounds[i],
        (unsigned long long)cum);
  }
  cum += hist[NBOUNDS];
  put(&o, "luahook_handler_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
      (unsigned long long)cum);
  put(&o, "luahook_handler_duration_seconds_sum %.6f\n", hist_sum);
  put(&o, "luahook_handler_duration_seconds_count %llu\n",
      (unsigned long long)hist_count);
  put(&o,
      "# HELP luahook_events_in_flight Events accepted and not finished.\n"
      "# TYPE luahook_events_in_flight gauge\nluahook_events_in_flight %ld\n",
      g->inflight_events);
  put(&o,
      "# HELP luahook_reloads_total Script loads after start-up, by result.\n"
      "# TYPE luahook_reloads_total counter\n"
      "luahook_reloads_total{result=\"ok\"} %llu\n"
      "luahook_reloads_total{result=\"error\"} %llu\n",
      (unsigned long long)reloads[0], (unsigned long long)reloads[1]);
  put(&o,
      "# HELP luahook_script_generation The generation of the script serving now.\n"
      "# TYPE luahook_script_generation gauge\nluahook_script_generation %u\n",
      g->generation);
  put(&o,
      "# HELP luahook_lua_heap_bytes Bytes allocated by the Lua state.\n"
      "# TYPE luahook_lua_heap_bytes gauge\nluahook_lua_heap_bytes %zu\n",
      g->lua_bytes);
  put(&o, "# HELP luahook_outbound_requests_total Outbound HTTP calls by outcome.\n"
          "# TYPE luahook_outbound_requests_total counter\n");
  for (int c = 0; c < MC_COUNT; c++)
    put(&o, "luahook_outbound_requests_total{outcome=\"%s\"} %llu\n", call_names[c],
        (unsigned long long)outbound[c]);
  put(&o,
      "# HELP luahook_outbound_requests_active Outbound HTTP calls in progress.\n"
      "# TYPE luahook_outbound_requests_active gauge\nluahook_outbound_requests_active "
      "%ld\n",
      g->outbound_active);
  put(&o,
      "# HELP luahook_timer_errors_total Timer callbacks that failed.\n"
      "# TYPE luahook_timer_errors_total counter\nluahook_timer_errors_total %llu\n",
      (unsigned long long)timer_errors);
  put(&o,
      "# HELP luahook_connections Open client connections.\n"
      "# TYPE luahook_connections gauge\nluahook_connections %d\n",
      g->connections);
  if (o.oom) {
    free(o.p);
    return NULL;
  }
  *len = o.len;
  return o.p;
}
