/* eventgrid: turns a delivery's body into a validated batch of events, all or
 * nothing, and recognises the subscription handshakes. Knows nothing of sockets
 * or Lua, so the daemon, `luahook replay` and the fuzz targets share it.
 *
 * Schemas: Event Grid (a JSON array of events) and CloudEvents 1.0 in structured
 * mode (one object, or an array as some senders do), batched mode, and binary
 * mode (attributes in ce-* headers, the data in the body).
 */
#ifndef LUAHOOK_EVENTGRID_H
#define LUAHOOK_EVENTGRID_H

#include <cjson/cJSON.h>
#include <stddef.h>

#define EVENTGRID_MAX_DEPTH 64

#define EG_TYPE_CONNECTED    "Microsoft.SignalRService.ClientConnectionConnected"
#define EG_TYPE_DISCONNECTED "Microsoft.SignalRService.ClientConnectionDisconnected"
#define EG_TYPE_VALIDATION   "Microsoft.EventGrid.SubscriptionValidationEvent"
#define EG_TYPE_DELETED      "Microsoft.EventGrid.SubscriptionDeletedEvent"

typedef enum ev_kind { EV_CONNECTED, EV_DISCONNECTED, EV_OTHER } ev_kind;
typedef enum ev_schema { SCHEMA_EVENTGRID, SCHEMA_CLOUDEVENTS } ev_schema;

typedef enum batch_kind {
  BATCH_NOTIFICATION, /* events for the script */
  BATCH_VALIDATION,   /* Event Grid SubscriptionValidationEvent: answered in C */
} batch_kind;

typedef struct event {
  const char *id, *type, *subject, *time, *source, *data_version; /* NULL if absent */
  const cJSON *data;                                              /* NULL if absent */
  const cJSON *obj;                                               /* the whole event */
  const char *datacontenttype;                                    /* CloudEvents */
  const char *data_base64; /* CloudEvents binary data, validated base64 text */
  const char *bin_data;    /* binary mode, data that is not JSON: the body bytes */
  size_t bin_len;
  const char *raw; /* the event's JSON text inside the body (not NUL-terminated) */
  size_t raw_len;
  ev_kind kind;
} event_t;

typedef struct batch {
  cJSON *root; /* every string the events point to is in this tree */
  void *arena; /* which lives in this arena (arena_t) */
  event_t *events;
  size_t n;
  ev_schema schema;
  batch_kind kind;
  const char *validation_code; /* BATCH_VALIDATION */
  const char *validation_url;  /* BATCH_VALIDATION, may be NULL */
} batch_t;

typedef struct delivery {
  const char *body;
  size_t len;
  const char *content_type;   /* NULL when absent */
  const char *aeg_event_type; /* NULL when absent */
  /* All request headers, for CloudEvents binary mode (may be 0 / NULL). */
  size_t nheaders;
  const char *const *hnames;
  const char *const *hvalues;
} delivery;

typedef struct decode_error {
  int status; /* 400 or 415 */
  long index; /* event index the problem is in, or -1 */
  char msg[256];
} decode_error;

/* Decodes d into b. Returns 0, or -1 with e filled; b is then empty. The batch
 * keeps pointers into d->body (raw), which must outlive it. */
int eventgrid_decode(const delivery *d, batch_t *b, decode_error *e);
void batch_free(batch_t *b);

/* Is the media type one this module decodes? ("application/json; charset=utf-8" yes).
 * In CloudEvents binary mode (a ce-specversion header) any content type is data. */
int eventgrid_content_type_ok(const char *content_type);

/* Is the media type JSON (application/json, text/json, any +json), or absent? */
int eventgrid_is_json_type(const char *content_type);

/* Is name one of the CloudEvents context attributes this module maps to event_t
 * fields (the others of an event object are extensions)? */
int eventgrid_is_ce_attribute(const char *name);

/* Parses an RFC 3339 time ("2019-06-10T18:41:00.9584103Z"; without a zone it is
 * UTC). Returns 0 and seconds since the epoch (fraction dropped), or -1. */
int eventgrid_parse_time(const char *s, long long *epoch);

/* Percent-decodes s[0..n) into out (room for n + 1 bytes; NUL-terminated), '+' as a
 * space when plus_is_space (query strings). Returns the decoded length; a '%' not
 * followed by two hex digits stands for itself. */
size_t eventgrid_percent_decode(const char *s, size_t n, char *out, int plus_is_space);

/* The JSON body of the validation answer: {"validationResponse":"<code>"}, malloc'd. */
char *eventgrid_validation_response(const batch_t *b, size_t *len);

#endif
