/* dispatch: runs a decoded batch through the script: one task per event, in
 * order, each handled by the generation that was current when the batch
 * started, and reduces the outcomes to one HTTP status (200, 400 or 500).
 * Knows nothing of sockets: the daemon, `luahook replay` and tests drive it. */
#ifndef LUAHOOK_DISPATCH_H
#define LUAHOOK_DISPATCH_H

#include "eventgrid.h"
#include "script.h"
#include "task.h"

/* What the delivery's aeg-* headers said (NULL when absent); ev.aeg in Lua. */
typedef struct dispatch_meta {
  long delivery_count; /* aeg-delivery-count, -1 when absent */
  const char *subscription_name, *event_type, *metadata_version, *data_version,
      *output_event_id;
} dispatch_meta;

/* Outcome of one event, for callers that report per event (replay). */
typedef struct event_outcome {
  const event_t *ev;
  task_status st; /* TASK_OK also when no handler is defined */
  const char *err;
  int handled;   /* a handler ran */
  int duplicate; /* skipped: it had already succeeded */
  double ms;
} event_outcome;

typedef struct dispatch_cbs {
  /* Once, when every event has settled: status 200/400/500 and a short reason
   * (NULL for 200), valid during the call. */
  void (*done)(void *ud, int status, const char *reason);
  void (*event)(void *ud, const event_outcome *o); /* optional, per event */
} dispatch_cbs;

/* Takes ownership of *b (moved). Calls cbs->done exactly once, possibly before it
 * returns. Returns 0, or -1 when no script generation is loaded (done not called). */
int dispatch_run(script_t *s, batch_t *b, const dispatch_meta *m, const dispatch_cbs *cbs,
                 void *ud);

/* Events accepted and not yet settled, across all batches. */
long dispatch_inflight(void);

/* The dedup window: successful events remembered (0 turns it off). Returns -1 if
 * the memory cannot be had. */
int dispatch_set_dedup(size_t window);
void dispatch_shutdown(void);

#endif
