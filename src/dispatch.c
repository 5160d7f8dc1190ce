/* dispatch: one batch at a time walks its events; a handler that suspends
 * parks the walk until its task finishes. Completions that arrive synchronously
 * are folded into a loop, so a large batch of quick handlers never recurses. */
#include "dispatch.h"
#include "bind_crypto.h"
#include "bind_json.h"
#include "dedup.h"
#include "log.h"
#include "metrics.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

typedef struct run {
  script_t *s;
  gen_t *gen;
  batch_t batch;
  dispatch_meta meta;
  dispatch_cbs cbs;
  void *ud;
  size_t next; /* next event to start */
  int in_loop; /* inside advance(): a synchronous finish must not recurse */
  int settled; /* the current event finished while in_loop */
  int errors, rejects;
  int aeg_ref; /* the ev.aeg table shared by the batch's events, or LUA_NOREF */
  struct run *next_deferred;
  char reason[512];
} run;

static long inflight;
static dedup_t *window;

/* A batch whose handlers keep finishing without suspending gives the loop back
 * after SLICE_NS: it waits in this queue, which an idle handle (it keeps the loop
 * from blocking in poll) drains on the next turn, after I/O has been served. */
#define SLICE_NS 2000000
static uv_idle_t idle;
static int idle_ready;
static run *deferred, *deferred_tail;

long dispatch_inflight(void) {
  return inflight;
}

int dispatch_set_dedup(size_t n) {
  dedup_free(window);
  window = n ? dedup_new(n) : NULL;
  return n && !window ? -1 : 0;
}

void dispatch_shutdown(void) {
  dedup_free(window);
  window = NULL;
  if (idle_ready) {
    uv_close((uv_handle_t *)&idle, NULL);
    idle_ready = 0;
  }
}

static metric_kind kind_of(const event_t *ev) {
  return ev->kind == EV_CONNECTED      ? MK_CONNECTED
         : ev->kind == EV_DISCONNECTED ? MK_DISCONNECTED
                                       : MK_OTHER;
}

static void set_str(lua_State *L, const char *k, const char *v) {
  if (!v) return;
  lua_pushstring(L, v);
  lua_setfield(L, -2, k);
}

/* CloudEvents extras: datacontenttype, data from data_base64 or the binary-mode
 * body, and every extension attribute in ev.extensions. */
static void push_cloudevent(lua_State *L, const event_t *ev) {
  set_str(L, "datacontenttype", ev->datacontenttype);
  const cJSON *spec = cJSON_GetObjectItemCaseSensitive(ev->obj, "specversion");
  if (cJSON_IsString(spec)) set_str(L, "specversion", spec->valuestring);
  const cJSON *ds = cJSON_GetObjectItemCaseSensitive(ev->obj, "dataschema");
  if (cJSON_IsString(ds)) set_str(L, "dataschema", ds->valuestring);
  if (ev->data_base64) {
    size_t n = strlen(ev->data_base64), k = 0, bad;
    luaL_Buffer b;
    unsigned char *o =
        (unsigned char *)luaL_buffinitsize(L, &b, crypto_base64_decoded_max(n));
    crypto_base64_decode(ev->data_base64, n, 0, o, &k, &bad); /* validated when decoded */
    luaL_pushresultsize(&b, k);
    lua_setfield(L, -2, "data");
  } else if (ev->bin_data) {
    lua_pushlstring(L, ev->bin_data, ev->bin_len);
    lua_setfield(L, -2, "data");
  }
  lua_newtable(L);
  for (const cJSON *c = ev->obj->child; c; c = c->next) {
    if (!c->string || eventgrid_is_ce_attribute(c->string)) continue;
    bind_json_push(L, c);
    lua_setfield(L, -2, c->string);
  }
  lua_setfield(L, -2, "extensions");
}

/* Builds the event table; runs inside lua_pcall so memory errors are caught. */
/* The event table is built by a C closure whose upvalues hold the field names and
 * a few values every event repeats, already interned: no string lookup per field. */
enum {
  K_ID = 1,
  K_TYPE,
  K_SUBJECT,
  K_TIME,
  K_SOURCE,
  K_DATA_VERSION,
  K_SCHEMA,
  K_DATA,
  K_DELIVERY_COUNT,
  K_AEG,
  K_RAW,
  V_EVENTGRID,
  V_CLOUDEVENTS,
  V_CONNECTED,
  V_DISCONNECTED,
  N_UPVALUES = V_DISCONNECTED
};
static const char *const upvalue_text[N_UPVALUES] = {"id",
                                                     "type",
                                                     "subject",
                                                     "time",
                                                     "source",
                                                     "data_version",
                                                     "schema",
                                                     "data",
                                                     "delivery_count",
                                                     "aeg",
                                                     "raw",
                                                     "eventgrid",
                                                     "cloudevents",
                                                     EG_TYPE_CONNECTED,
                                                     EG_TYPE_DISCONNECTED};

static void set_up(lua_State *L, int key, const char *v) {
  if (!v) return;
  lua_pushvalue(L, lua_upvalueindex(key));
  lua_pushstring(L, v);
  lua_rawset(L, -3);
}

/* Pops the value on top into field key of the table below it. */
static void put_up(lua_State *L, int key) {
  lua_pushvalue(L, lua_upvalueindex(key));
  lua_insert(L, -2);
  lua_rawset(L, -3);
}

static int push_event(lua_State *L) {
  const event_t *ev = lua_touserdata(L, 1);
  const run *r = lua_touserdata(L, 2);
  lua_createtable(L, 0, 12);
  set_up(L, K_ID, ev->id);
  if (ev->kind == EV_OTHER) {
    set_up(L, K_TYPE, ev->type);
  } else {
    lua_pushvalue(
        L, lua_upvalueindex(ev->kind == EV_CONNECTED ? V_CONNECTED : V_DISCONNECTED));
    put_up(L, K_TYPE);
  }
  set_up(L, K_SUBJECT, ev->subject);
  set_up(L, K_TIME, ev->time);
  set_up(L, K_SOURCE, ev->source);
  set_up(L, K_DATA_VERSION, ev->data_version);
  lua_pushvalue(L, lua_upvalueindex(r->batch.schema == SCHEMA_CLOUDEVENTS ? V_CLOUDEVENTS
                                                                          : V_EVENTGRID));
  put_up(L, K_SCHEMA);
  if (ev->data) {
    bind_json_push(L, ev->data);
    put_up(L, K_DATA);
  }
  if (r->meta.delivery_count >= 0) {
    lua_pushinteger(L, r->meta.delivery_count);
    put_up(L, K_DELIVERY_COUNT);
  }
  if (r->aeg_ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->aeg_ref);
    put_up(L, K_AEG);
  }
  lua_pushlstring(L, ev->raw, ev->raw_len);
  put_up(L, K_RAW);
  if (r->batch.schema == SCHEMA_CLOUDEVENTS) push_cloudevent(L, ev);
  return 1;
}

static const char BUILDER_KEY = 'B'; /* registry: the push_event closure */

static void push_builder(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &BUILDER_KEY) == LUA_TFUNCTION) return;
  lua_pop(L, 1);
  for (int i = 0; i < N_UPVALUES; i++) lua_pushstring(L, upvalue_text[i]);
  lua_pushcclosure(L, push_event, N_UPVALUES);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &BUILDER_KEY);
}

static void finish_run(run *r) {
  int status = r->errors ? 500 : r->rejects ? 400 : 200;
  r->cbs.done(r->ud, status, status == 200 ? NULL : r->reason);
  if (r->aeg_ref != LUA_NOREF)
    luaL_unref(script_lua(r->s), LUA_REGISTRYINDEX, r->aeg_ref);
  gen_unref(r->gen);
  batch_free(&r->batch);
  free(r);
}

static void note(run *r, const event_t *ev, task_status st, const char *err, int handled,
                 int duplicate, uint64_t t0) {
  inflight--;
  double secs = (double)(uv_hrtime() - t0) / 1e9;
  metric_outcome mo = duplicate             ? MO_DUPLICATE
                      : st == TASK_ERROR    ? MO_ERROR
                      : st == TASK_TIMEOUT  ? MO_TIMEOUT
                      : st == TASK_REJECTED ? MO_REJECTED
                      : handled             ? MO_OK
                                            : MO_NO_HANDLER;
  metrics_event(kind_of(ev), mo, handled ? secs : -1);
  if (st == TASK_OK && !duplicate) dedup_add(window, ev->source, ev->id);
  if (st == TASK_ERROR || st == TASK_TIMEOUT) {
    r->errors++;
    log_write(LOG_ERROR, "handler failed",
              (log_kv[]){{"event", ev->id}, {"type", ev->type}, {"error", err}}, 3);
  } else if (st == TASK_REJECTED) {
    r->rejects++;
    log_write(LOG_WARN, "event rejected",
              (log_kv[]){{"event", ev->id}, {"type", ev->type}, {"reason", err}}, 3);
  }
  if (err && !r->reason[0]) {
    /* The first line of the first failure is the request's reason. */
    size_t n = strcspn(err, "\n");
    if (n >= sizeof r->reason) n = sizeof r->reason - 1;
    memcpy(r->reason, err, n);
    r->reason[n] = '\0';
  }
  if (r->cbs.event) {
    event_outcome o = {ev, st, err, handled, duplicate, secs * 1e3};
    r->cbs.event(r->ud, &o);
  }
}

static void advance(run *r);

typedef struct ctx {
  run *r;
  size_t index;
  uint64_t t0;
} ctx;

static void on_task_done(task_t *t, task_status st, const char *err, void *ud) {
  (void)t;
  ctx *c = ud;
  run *r = c->r;
  note(r, &r->batch.events[c->index], st, err, 1, 0, c->t0);
  free(c);
  if (r->in_loop) {
    r->settled = 1;
    return;
  }
  advance(r);
}

/* Starts event r->next. Returns 1 if it settled synchronously. */
static int start_event(run *r) {
  const event_t *ev = &r->batch.events[r->next];
  size_t index = r->next++;
  uint64_t t0 = uv_hrtime();
  int hook = ev->kind == EV_CONNECTED      ? HOOK_CONNECTED
             : ev->kind == EV_DISCONNECTED ? HOOK_DISCONNECTED
                                           : HOOK_EVENT;
  if (dedup_has(window, ev->source, ev->id)) {
    log_write(LOG_DEBUG, "duplicate event skipped", (log_kv[]){{"event", ev->id}}, 1);
    note(r, ev, TASK_OK, NULL, 0, 1, t0);
    return 1;
  }
  if (!gen_has_hook(r->gen, hook)) {
    log_write(LOG_DEBUG, "no handler for event",
              (log_kv[]){{"event", ev->id},
                         {"type", ev->type},
                         {"hook", script_hook_names[hook]}},
              3);
    note(r, ev, TASK_OK, NULL, 0, 0, t0);
    return 1;
  }
  ctx *c = malloc(sizeof *c);
  task_t *t =
      c ? task_new(r->s, script_options(r->s)->handler_timeout_ms, on_task_done, c)
        : NULL;
  if (!t) {
    free(c);
    note(r, ev, TASK_ERROR, "out of memory", 0, 0, t0);
    return 1;
  }
  *c = (ctx){r, index, t0};
  task_set_label(t, ev->id);
  lua_State *co = task_thread(t);
  gen_push_global(co, r->gen, script_hook_names[hook]);
  push_builder(co);
  lua_pushlightuserdata(co, (void *)ev);
  lua_pushlightuserdata(co, r);
  script_enter(r->s);
  int rc = lua_pcall(co, 2, 1, 0);
  script_leave(r->s);
  if (rc != LUA_OK) { /* could not even build the event: fail it through the task */
    lua_settop(co, 0);
    lua_pushcfunction(co, lua_error);
    lua_pushliteral(co, "not enough memory to build the event table");
  }
  r->settled = 0;
  task_run(t, 1);
  return r->settled;
}

static void on_idle(uv_idle_t *h) {
  run *list = deferred;
  deferred = deferred_tail = NULL;
  uv_idle_stop(h);
  while (list) {
    run *r = list;
    list = r->next_deferred;
    advance(r);
  }
}

static void defer(run *r) {
  if (!idle_ready) {
    uv_idle_init(script_loop(r->s), &idle);
    idle_ready = 1;
  }
  r->next_deferred = NULL;
  if (deferred_tail)
    deferred_tail->next_deferred = r;
  else
    deferred = r;
  deferred_tail = r;
  uv_idle_start(&idle, on_idle);
}

static void advance(run *r) {
  uint64_t t0 = uv_hrtime();
  r->in_loop = 1;
  while (r->next < r->batch.n) {
    if (!start_event(r)) { /* suspended: on_task_done continues the walk */
      r->in_loop = 0;
      return;
    }
    if (r->next < r->batch.n && uv_hrtime() - t0 > SLICE_NS) {
      r->in_loop = 0;
      defer(r);
      return;
    }
  }
  r->in_loop = 0;
  finish_run(r);
}

static int build_aeg(lua_State *L) {
  const dispatch_meta *m = lua_touserdata(L, 1);
  lua_createtable(L, 0, 6);
  set_str(L, "subscription_name", m->subscription_name);
  set_str(L, "event_type", m->event_type);
  set_str(L, "metadata_version", m->metadata_version);
  set_str(L, "data_version", m->data_version);
  set_str(L, "output_event_id", m->output_event_id);
  if (m->delivery_count >= 0) {
    lua_pushinteger(L, m->delivery_count);
    lua_setfield(L, -2, "delivery_count");
  }
  return 1;
}

/* One ev.aeg table per batch (the headers are the batch's), built in protected mode. */
static void make_aeg(run *r) {
  lua_State *L = script_lua(r->s);
  lua_pushcfunction(L, build_aeg);
  lua_pushlightuserdata(L, &r->meta);
  script_enter(r->s);
  int rc = lua_pcall(L, 1, 1, 0);
  script_leave(r->s);
  if (rc == LUA_OK)
    r->aeg_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  else
    lua_pop(L, 1);
}

int dispatch_run(script_t *s, batch_t *b, const dispatch_meta *m, const dispatch_cbs *cbs,
                 void *ud) {
  gen_t *g = script_current(s);
  if (!g) return -1;
  run *r = calloc(1, sizeof *r);
  if (!r) return -1;
  r->s = s;
  r->gen = g;
  gen_ref(g);
  r->batch = *b;
  memset(b, 0, sizeof *b);
  r->meta = *m;
  r->cbs = *cbs;
  r->ud = ud;
  r->aeg_ref = LUA_NOREF;
  inflight += (long)r->batch.n;
  if (r->batch.n && (m->subscription_name || m->event_type || m->metadata_version ||
                     m->data_version || m->output_event_id || m->delivery_count >= 0))
    make_aeg(r);
  advance(r);
  return 0;
}
