/* metrics: the daemon's counters and the Prometheus text rendering of them.
 * A leaf module: others report into it; it knows nothing of them. */
#ifndef LUAHOOK_METRICS_H
#define LUAHOOK_METRICS_H

#include <stddef.h>
#include <stdint.h>

typedef enum metric_kind {
  MK_CONNECTED,
  MK_DISCONNECTED,
  MK_OTHER,
  MK_COUNT
} metric_kind;

typedef enum metric_outcome {
  MO_OK,
  MO_ERROR,
  MO_REJECTED,
  MO_TIMEOUT,
  MO_DUPLICATE,
  MO_NO_HANDLER,
  MO_COUNT
} metric_outcome;

typedef enum metric_call {
  MC_OK, /* a response came back, whatever its status */
  MC_TIMEOUT,
  MC_DNS,
  MC_CONNECT,
  MC_TLS,
  MC_TOO_LARGE,
  MC_ERROR,
  MC_COUNT
} metric_call;

/* Values owned elsewhere, read when /metrics is rendered. */
typedef struct metrics_gauges {
  long inflight_events;
  size_t lua_bytes;
  int connections;
  unsigned generation;
  long outbound_active;
} metrics_gauges;

void metrics_request(int status);
void metrics_event(metric_kind k, metric_outcome o,
                   double seconds); /* seconds < 0: none */
void metrics_reload(int ok);
void metrics_outbound(metric_call c);
void metrics_timer_error(void);

/* The text exposition format; malloc'd, *len set. */
char *metrics_render(const metrics_gauges *g, size_t *len);

#endif
