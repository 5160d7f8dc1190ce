/* Unit tests for eventgrid: decoding of both schemas, every refusal with its
 * index, the validation handshake, times and content types. */
#include "check.h"
#include "eventgrid.h"

static const char *CONNECTED =
    "[{\"topic\":\"/subscriptions/s/resourceGroups/rg/providers/Microsoft.SignalRService/"
    "SignalR/res\",\"subject\":\"/hub/chat\",\"eventType\":"
    "\"Microsoft.SignalRService.ClientConnectionConnected\",\"eventTime\":\"2019-06-"
    "10T18:41:"
    "00.9584103Z\",\"id\":\"831e1650\",\"data\":{\"timestamp\":\"2019-06-10T18:41:00."
    "9584103Z\","
    "\"hubName\":\"chat\",\"connectionId\":\"crH0\",\"userId\":\"user-1\"},"
    "\"dataVersion\":"
    "\"1.0\",\"metadataVersion\":\"1\"}]";

static int decode(const char *body, const char *ct, const char *aeg, batch_t *b,
                  decode_error *e) {
  delivery d = {
      .body = body, .len = strlen(body), .content_type = ct, .aeg_event_type = aeg};
  return eventgrid_decode(&d, b, e);
}

/* Decoding must fail with status and index, and the message must contain `word`. */
static void refused(const char *body, int status, long index, const char *word) {
  batch_t b;
  decode_error e;
  if (decode(body, "application/json", NULL, &b, &e) == 0) {
    fprintf(stderr, "accepted but should be refused: %s\n", body);
    exit(1);
  }
  if (e.status != status || e.index != index || !strstr(e.msg, word)) {
    fprintf(stderr, "body %s\n -> status %d index %ld msg '%s'; wanted %d %ld '%s'\n",
            body, e.status, e.index, e.msg, status, index, word);
    exit(1);
  }
  CHECK(b.root == NULL && b.events == NULL);
}

static void test_connected(void) {
  batch_t b;
  decode_error e;
  CHECK_INT(decode(CONNECTED, "application/json; charset=utf-8", "Notification", &b, &e),
            0);
  CHECK_INT(b.n, 1);
  CHECK_INT(b.kind, BATCH_NOTIFICATION);
  CHECK_INT(b.schema, SCHEMA_EVENTGRID);
  event_t *ev = &b.events[0];
  CHECK_INT(ev->kind, EV_CONNECTED);
  CHECK_STR(ev->id, "831e1650");
  CHECK_STR(ev->type, EG_TYPE_CONNECTED);
  CHECK_STR(ev->subject, "/hub/chat");
  CHECK_STR(ev->time, "2019-06-10T18:41:00.9584103Z");
  CHECK_STR(ev->data_version, "1.0");
  CHECK(strstr(ev->source, "SignalR/res") != NULL);
  CHECK(cJSON_IsObject(ev->data));
  /* raw is the exact text of the element */
  CHECK(ev->raw[0] == '{' && ev->raw[ev->raw_len - 1] == '}');
  CHECK_INT(ev->raw_len, strlen(CONNECTED) - 2);
  batch_free(&b);
}

static void test_batch_spans(void) {
  const char *body =
      " [ {\"id\":\"a\",\"eventType\":\"t\",\"eventTime\":\"2020-01-01T00:00:00Z\","
      "\"data\":{\"s\":\"]},[\\\"\"}} ,\n"
      "{\"id\":\"b\",\"eventType\":\"Microsoft.SignalRService.ClientConnection"
      "Disconnected\",\"eventTime\":\"2020-01-01T00:00:00+02:00\",\"data\":{"
      "\"hubName\":\"h\",\"connectionId\":\"c\",\"errorMessage\":\"x\"}}\t] ";
  batch_t b;
  decode_error e;
  CHECK_INT(decode(body, NULL, NULL, &b, &e), 0);
  CHECK_INT(b.n, 2);
  CHECK_INT(b.events[0].kind, EV_OTHER);
  CHECK_INT(b.events[1].kind, EV_DISCONNECTED);
  /* spans survive brackets and escaped quotes inside strings */
  CHECK(strncmp(b.events[0].raw, "{\"id\":\"a\"", 9) == 0);
  CHECK(b.events[0].raw[b.events[0].raw_len - 1] == '}');
  CHECK(strncmp(b.events[1].raw, "{\"id\":\"b\"", 9) == 0);
  CHECK(b.events[1].raw[b.events[1].raw_len - 1] == '}');
  CHECK(b.events[0].subject == NULL && b.events[0].source == NULL);
  batch_free(&b);
}

static void test_unicode(void) {
  const char *body =
      "[{\"id\":\"\xc3\xa9\\u00e9\\ud83d\\ude00\",\"eventType\":\"t\","
      "\"eventTime\":\"2020-01-01T00:00:00Z\",\"subject\":\"a\\nb\\\"c\"}]";
  batch_t b;
  decode_error e;
  CHECK_INT(decode(body, NULL, NULL, &b, &e), 0);
  CHECK_STR(b.events[0].id, "\xc3\xa9\xc3\xa9\xf0\x9f\x98\x80");
  CHECK_STR(b.events[0].subject, "a\nb\"c");
  batch_free(&b);
}

static void test_empty_and_other(void) {
  batch_t b;
  decode_error e;
  CHECK_INT(decode("[]", NULL, NULL, &b, &e), 0);
  CHECK_INT(b.n, 0);
  batch_free(&b);
  CHECK_INT(decode("[{\"id\":\"x\",\"eventType\":\"Custom.Thing\",\"eventTime\":"
                   "\"2020-02-29T23:59:59.5Z\",\"data\":\"just a string\"}]",
                   NULL, NULL, &b, &e),
            0);
  CHECK_INT(b.events[0].kind, EV_OTHER);
  CHECK(cJSON_IsString(b.events[0].data));
  batch_free(&b);
}

static void test_refusals(void) {
  refused("", 400, -1, "empty");
  refused("{", 400, -1, "not valid JSON");
  refused("[1,2", 400, -1, "not valid JSON");
  refused("[] x", 400, -1, "trailing");
  refused("[]\x01", 400, -1, "control character");
  refused("[01]", 400, -1, "invalid number");
  refused("[\"\xff\"]", 400, -1, "UTF-8");
  refused("[\"\xc0\xaf\"]", 400, -1, "UTF-8");     /* overlong */
  refused("[\"\xed\xa0\x80\"]", 400, -1, "UTF-8"); /* surrogate */
  refused("[\"a\0\"]", 400, -1, "not valid JSON"); /* strlen stops: see NUL test */
  refused("{\"id\":\"x\"}", 400, -1, "array");
  refused("\"str\"", 400, -1, "array");
  refused("[1]", 400, 0, "object");
  refused(
      "[{\"id\":\"a\",\"eventType\":\"t\",\"eventTime\":\"2020-01-01T00:00:00Z\"},[]]",
      400, 1, "object");
  refused("[{\"eventType\":\"t\",\"eventTime\":\"2020-01-01T00:00:00Z\"}]", 400, 0,
          "'id'");
  refused("[{\"id\":\"\",\"eventType\":\"t\",\"eventTime\":\"2020-01-01T00:00:00Z\"}]",
          400, 0, "'id'");
  refused("[{\"id\":7,\"eventType\":\"t\",\"eventTime\":\"2020-01-01T00:00:00Z\"}]", 400,
          0, "'id'");
  refused("[{\"id\":\"a\",\"eventTime\":\"2020-01-01T00:00:00Z\"}]", 400, 0,
          "'eventType'");
  refused("[{\"id\":\"a\",\"eventType\":\"t\"}]", 400, 0, "'eventTime'");
  refused("[{\"id\":\"a\",\"eventType\":\"t\",\"eventTime\":\"yesterday\"}]", 400, 0,
          "eventTime");
  refused("[{\"id\":\"a\",\"eventType\":\"t\",\"eventTime\":\"2021-02-29T00:00:00Z\"}]",
          400, 0, "eventTime");
  refused("[{\"id\":\"a\",\"eventType\":\"t\",\"eventTime\":\"2020-01-01T00:00:00Z\","
          "\"subject\":5}]",
          400, 0, "'subject'");
  refused("[{\"id\":\"a\",\"eventType\":\"Microsoft.SignalRService."
          "ClientConnectionConnected\","
          "\"eventTime\":\"2020-01-01T00:00:00Z\",\"data\":\"x\"}]",
          400, 0, "data");
  refused("[{\"id\":\"a\",\"eventType\":\"Microsoft.SignalRService."
          "ClientConnectionConnected\","
          "\"eventTime\":\"2020-01-01T00:00:00Z\",\"data\":{\"hubName\":\"h\"}}]",
          400, 0, "connectionId");
  refused("[{\"id\":\"a\",\"eventType\":\"Microsoft.SignalRService."
          "ClientConnectionDisconnected\","
          "\"eventTime\":\"2020-01-01T00:00:00Z\",\"data\":{\"connectionId\":\"c\"}}]",
          400, 0, "hubName");
  refused(
      "[{\"id\":\"a\",\"eventType\":\"t\",\"eventTime\":\"2020-01-01T00:00:00Z\"},"
      "{\"id\":\"v\",\"eventType\":\"Microsoft.EventGrid.SubscriptionValidationEvent\","
      "\"eventTime\":\"2020-01-01T00:00:00Z\",\"data\":{\"validationCode\":\"c\"}}]",
      400, 1, "alone");
  refused(
      "[{\"id\":\"v\",\"eventType\":\"Microsoft.EventGrid.SubscriptionValidationEvent\","
      "\"eventTime\":\"2020-01-01T00:00:00Z\",\"data\":{}}]",
      400, 0, "validationCode");
}

static void test_depth(void) {
  char body[512];
  /* [ {"id":..., "data": [[[[...]]]] } ] : depth 2 + k */
  for (int k = 60; k <= 70; k++) {
    int n = snprintf(
        body, sizeof body,
        "[{\"id\":\"a\",\"eventType\":\"t\",\"eventTime\":\"2020-01-01T00:00:00Z\","
        "\"data\":");
    for (int i = 0; i < k; i++) body[n++] = '[';
    for (int i = 0; i < k; i++) body[n++] = ']';
    n += snprintf(body + n, sizeof body - (size_t)n, "}]");
    batch_t b;
    decode_error e;
    int r = decode(body, NULL, NULL, &b, &e);
    if (2 + k <= EVENTGRID_MAX_DEPTH) {
      CHECK_INT(r, 0);
      batch_free(&b);
    } else {
      CHECK_INT(r, -1);
      CHECK(strstr(e.msg, "nesting") != NULL);
    }
  }
}

static void test_nul_byte(void) {
  static const char body[] =
      "[{\"id\":\"a\",\"eventType\":\"t\",\"eventTime\":\"2020-01-01T00:00:00Z\"}]\0x";
  delivery d = {.body = body, .len = sizeof body - 1};
  batch_t b;
  decode_error e;
  CHECK_INT(eventgrid_decode(&d, &b, &e), -1);
  CHECK(strstr(e.msg, "NUL") != NULL);
}

static void test_validation(void) {
  const char *body = "[{\"id\":\"2d17\",\"topic\":\"/subscriptions/x\",\"subject\":\"\","
                     "\"data\":{\"validationCode\":\"512d38b6\",\"validationUrl\":"
                     "\"https://rp-eastus2.eventgrid.azure.net:553/x\"},\"eventType\":"
                     "\"Microsoft.EventGrid.SubscriptionValidationEvent\",\"eventTime\":"
                     "\"2022-10-28T04:23:35.1981776Z\",\"metadataVersion\":\"1\","
                     "\"dataVersion\":\"1\"}]";
  batch_t b;
  decode_error e;
  CHECK_INT(decode(body, "application/json", "SubscriptionValidation", &b, &e), 0);
  CHECK_INT(b.kind, BATCH_VALIDATION);
  CHECK_STR(b.validation_code, "512d38b6");
  CHECK_STR(b.validation_url, "https://rp-eastus2.eventgrid.azure.net:553/x");
  size_t len = 0;
  char *resp = eventgrid_validation_response(&b, &len);
  CHECK_STR(resp, "{\"validationResponse\":\"512d38b6\"}");
  CHECK_INT(len, strlen(resp));
  free(resp);
  batch_free(&b);
  /* the header alone is not enough */
  CHECK_INT(decode(CONNECTED, NULL, "SubscriptionValidation", &b, &e), -1);
  CHECK_INT(e.status, 400);
  CHECK_INT(decode(CONNECTED, NULL, "Bogus", &b, &e), -1);
  CHECK(strstr(e.msg, "aeg-event-type") != NULL);
  CHECK_INT(decode(CONNECTED, NULL, "subscriptiondeletion", &b, &e), 0);
  batch_free(&b);
}

static void test_cloudevents(void) {
  const char *one =
      "{\"specversion\":\"1.0\",\"type\":\"Microsoft.SignalRService."
      "ClientConnectionConnected\",\"source\":\"/subscriptions/x\",\"id\":\"ce1\","
      "\"time\":\"2019-06-10T18:41:00.9584103Z\",\"subject\":\"/hub/chat\","
      "\"data\":{\"hubName\":\"chat\",\"connectionId\":\"c1\"}}";
  batch_t b;
  decode_error e;
  CHECK_INT(decode(one, "application/cloudevents+json; charset=utf-8", NULL, &b, &e), 0);
  CHECK_INT(b.n, 1);
  CHECK_INT(b.schema, SCHEMA_CLOUDEVENTS);
  CHECK_INT(b.events[0].kind, EV_CONNECTED);
  CHECK_STR(b.events[0].source, "/subscriptions/x");
  CHECK_INT(b.events[0].raw_len, strlen(one));
  batch_free(&b);
  CHECK_INT(decode("{\"specversion\":\"1.0\",\"type\":\"t\",\"id\":\"x\"}",
                   "application/cloudevents+json", NULL, &b, &e),
            -1);
  CHECK(strstr(e.msg, "'source'") != NULL);
}

static void test_times(void) {
  long long t;
  CHECK_INT(eventgrid_parse_time("1970-01-01T00:00:00Z", &t), 0);
  CHECK_INT(t, 0);
  CHECK_INT(eventgrid_parse_time("2019-06-10T18:41:00.9584103Z", &t), 0);
  CHECK_INT(t, 1560192060);
  CHECK_INT(eventgrid_parse_time("2019-06-10T20:41:00+02:00", &t), 0);
  CHECK_INT(t, 1560192060);
  CHECK_INT(eventgrid_parse_time("2019-06-10T18:41:00", &t), 0); /* no zone: UTC */
  CHECK_INT(t, 1560192060);
  CHECK_INT(eventgrid_parse_time("2019-06-10T18:41", &t), -1);
  CHECK_INT(eventgrid_parse_time("2019-13-10T18:41:00Z", &t), -1);
  CHECK_INT(eventgrid_parse_time("2019-06-10T18:41:00.Z", &t), -1);
  CHECK_INT(eventgrid_parse_time("2019-06-10T18:41:00Zjunk", &t), -1);
}

static void test_content_types(void) {
  CHECK(eventgrid_content_type_ok(NULL));
  CHECK(eventgrid_content_type_ok("application/json"));
  CHECK(eventgrid_content_type_ok("Application/JSON; charset=utf-8"));
  CHECK(eventgrid_content_type_ok("application/cloudevents-batch+json"));
  CHECK(!eventgrid_content_type_ok("text/plain"));
  CHECK(!eventgrid_content_type_ok("application/jsonx"));
  CHECK(!eventgrid_content_type_ok("application/x-www-form-urlencoded"));
}

int main(void) {
  test_connected();
  test_batch_spans();
  test_unicode();
  test_empty_and_other();
  test_refusals();
  test_depth();
  test_nul_byte();
  test_validation();
  test_cloudevents();
  test_times();
  test_content_types();
  puts("test_eventgrid: ok");
  return 0;
}
