// The core receiver, end to end: Event Grid deliveries -> Lua hooks -> HTTP status.
// Written against DESIGN.md / PROTOCOL.md (sections 1, 2, 6), not against the code.
import { describe, it, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  RECORDER, startDaemon, writeScript, outPath, readRecords, readOut, clearOut, loadData, loadDataText,
  post, get, request, egEvent, signalrEvent, lineOf, assertFraming, rawExchange, buildRequest,
} from './lib.mjs';

const EVENTS = '/api/events';
const NOTIFY = { 'aeg-event-type': 'Notification' };

const SCRIPT = `${RECORDER}
local function fail(id)
  error("boom " .. id)                                   -- @@ERROR_LINE
end
function on_connected(ev) record("connected", evrec(ev)) end
function on_disconnected(ev) record("disconnected", evrec(ev)) end
function on_event(ev)
  local d = ev.data
  if type(d) == "table" and d.action == "fail" then
    fail(ev.id)                                          -- @@CALL_LINE
  end
  if type(d) == "table" and d.action == "reject" then
    luahook.reject("rejected by test " .. ev.id)
  end
  local r = evrec(ev)
  r.null_data = (json ~= nil and json.null ~= nil and ev.data == json.null) or nil
  record("event", r)
end
`;

/** The record a handler should have made for Event Grid event `e`. */
function checkEvent(rec, e, { tag, deliveryCount } = {}) {
  assert.equal(rec.tag, tag, `handler for ${e.eventType}`);
  const v = rec.value;
  assert.equal(v.id, e.id, 'ev.id');
  assert.equal(v.type, e.eventType, 'ev.type');
  assert.equal(v.subject, e.subject, 'ev.subject');
  assert.equal(v.time, e.eventTime, 'ev.time is the eventTime text');
  assert.equal(v.source, e.topic, 'ev.source is the topic');
  assert.equal(v.schema, 'eventgrid', 'ev.schema');
  assert.equal(v.data_version, e.dataVersion, 'ev.data_version');
  assert.deepEqual(v.data, e.data, 'ev.data decoded');
  assert.equal(typeof v.raw, 'string', 'ev.raw is a string');
  assert.deepEqual(JSON.parse(v.raw), e, 'ev.raw parses back to the same event');
  if (deliveryCount === undefined) {
    assert.equal(v.delivery_count, undefined, 'no ev.delivery_count without aeg-delivery-count');
  } else {
    assert.equal(v.delivery_count, deliveryCount, 'ev.delivery_count from aeg-delivery-count');
    assert.equal(v.delivery_count_type, 'integer', 'ev.delivery_count is an integer');
  }
}

describe('receiver: Event Grid deliveries reach the Lua hooks', () => {
  let d;
  let out;
  before(async () => {
    out = outPath();
    d = await startDaemon({ script: writeScript(SCRIPT), env: { OUT: out }, args: ['--log-level', 'debug'] });
  });
  after(async () => { await d?.stop(); });
  beforeEach(() => clearOut(out));

  it('the seed Connected event reaches on_connected with every field intact', async () => {
    const text = loadDataText('eventgrid-connected.json');
    const [e] = loadData('eventgrid-connected.json');
    const r = await post(d.port, EVENTS, text, { ...NOTIFY, 'Content-Type': 'application/json; charset=utf-8', 'aeg-delivery-count': '2' });
    assert.equal(r.status, 200, r.text);
    assertFraming(assert, r);
    const recs = readRecords(out);
    assert.equal(recs.length, 1, JSON.stringify(recs));
    checkEvent(recs[0], e, { tag: 'connected', deliveryCount: 2 });
    const data = recs[0].value.data;
    assert.equal(data.userId, 'user-eymwyo23');
    assert.equal(data.hubName, 'chat');
    assert.equal(data.connectionId, 'crH0uxVSvP61p5wkFY1x1A');
    assert.equal(data.timestamp, '2019-06-10T18:41:00.9584103Z');
    assert.deepEqual(recs[0].value.data_types,
      { timestamp: 'string', hubName: 'string', connectionId: 'string', userId: 'string' });
  });

  it('aeg-delivery-count 0 (first attempt, as observed) gives ev.delivery_count == 0', async () => {
    const e = signalrEvent('Connected');
    const r = await post(d.port, EVENTS, [e], { ...NOTIFY, 'aeg-delivery-count': '0' });
    assert.equal(r.status, 200, r.text);
    checkEvent(readRecords(out)[0], e, { tag: 'connected', deliveryCount: 0 });
  });

  it('the seed Disconnected event reaches on_disconnected with errorMessage', async () => {
    // The doc's Connected and Disconnected examples share one id; a daemon that skips
    // ids it already handled (DESIGN: dedup window) rightly would skip this one, so it
    // gets a daemon of its own.
    const out2 = outPath();
    const d2 = await startDaemon({ script: writeScript(SCRIPT), env: { OUT: out2 } });
    try {
      const text = loadDataText('eventgrid-disconnected.json');
      const [e] = loadData('eventgrid-disconnected.json');
      const r = await post(d2.port, EVENTS, text, NOTIFY);
      assert.equal(r.status, 200, r.text);
      const recs = readRecords(out2);
      assert.equal(recs.length, 1, JSON.stringify(recs));
      checkEvent(recs[0], e, { tag: 'disconnected' });
      assert.equal(recs[0].value.data.errorMessage, 'Internal server error.');
    } finally { await d2.stop(); }
  });

  it('any other event type reaches on_event', async () => {
    const e = egEvent({ eventType: 'Microsoft.Storage.BlobCreated', subject: '/blobs/x', data: { api: 'PutBlob', size: 12 } });
    const r = await post(d.port, EVENTS, [e], NOTIFY);
    assert.equal(r.status, 200, r.text);
    const recs = readRecords(out);
    assert.equal(recs.length, 1, JSON.stringify(recs));
    checkEvent(recs[0], e, { tag: 'event' });
  });

  it('a delivery without aeg-event-type header is a notification too', async () => {
    const e = signalrEvent('Disconnected');
    const r = await post(d.port, EVENTS, [e]);
    assert.equal(r.status, 200, r.text);
    checkEvent(readRecords(out)[0], e, { tag: 'disconnected' });
  });

  it('data of a custom event may be any JSON value: string, number, null, absent', async () => {
    const evs = [
      egEvent({ data: 'hello' }), egEvent({ data: 42 }), egEvent({ data: -1.25 }), egEvent({ data: [1, 'two'] }),
      egEvent({ data: true }), egEvent({ data: null }), egEvent({ data: undefined, subject: undefined, dataVersion: undefined }),
    ];
    const r = await post(d.port, EVENTS, evs, NOTIFY);
    assert.equal(r.status, 200, r.text);
    const recs = readRecords(out).map((x) => x.value);
    assert.deepEqual(recs.map((v) => v.id), evs.map((e) => e.id));
    assert.equal(recs[0].data, 'hello');
    assert.equal(recs[1].data, 42);
    assert.equal(recs[1].data_types, 'integer');
    assert.equal(recs[2].data, -1.25);
    assert.equal(recs[2].data_types, 'float');
    assert.deepEqual(recs[3].data, [1, 'two']);
    assert.equal(recs[4].data, true);
    assert.equal(recs[5].null_data, true, 'JSON null data is json.null (DESIGN: "null is json.null")');
    assert.equal(recs[6].data, undefined, 'absent data -> nil');
    assert.equal(recs[6].subject, undefined, 'absent subject -> nil');
    assert.equal(recs[6].data_version, undefined, 'absent dataVersion -> nil');
    assert.deepEqual(JSON.parse(recs[6].raw), JSON.parse(JSON.stringify(evs[6])));
  });

  it('Event Grid header names are case-insensitive (AEG-EVENT-TYPE, AEG-DELIVERY-COUNT)', async () => {
    const [v] = loadData('eventgrid-validation.json');
    const r = await post(d.port, EVENTS, [v], { 'AEG-EVENT-TYPE': 'SubscriptionValidation' });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json(), { validationResponse: v.data.validationCode });
    const e = egEvent();
    const r2 = await post(d.port, EVENTS, [e], { 'Aeg-Event-Type': 'Notification', 'AEG-DELIVERY-COUNT': '4' });
    assert.equal(r2.status, 200, r2.text);
    checkEvent(readRecords(out)[0], e, { tag: 'event', deliveryCount: 4 });
  });

  it('a 10-event mixed batch runs every event, in order, in the right hook', async () => {
    const text = loadDataText('eventgrid-batch-10.json');
    const batch = loadData('eventgrid-batch-10.json');
    const r = await post(d.port, EVENTS, text, { ...NOTIFY, 'aeg-delivery-count': '1' });
    assert.equal(r.status, 200, r.text);
    const recs = readRecords(out);
    assert.deepEqual(recs.map((x) => x.value.id), batch.map((e) => e.id), 'events ran in batch order');
    const tagOf = (t) => (t === 'Microsoft.SignalRService.ClientConnectionConnected' ? 'connected'
      : t === 'Microsoft.SignalRService.ClientConnectionDisconnected' ? 'disconnected' : 'event');
    batch.forEach((e, i) => checkEvent(recs[i], e, { tag: tagOf(e.eventType), deliveryCount: 1 }));
    // integers -> Lua integers, fractions -> floats
    const nums = recs[6].value;
    assert.equal(nums.id, 'batch-07');
    assert.deepEqual(nums.data_types, {
      int: 'integer', neg: 'integer', zero: 'integer', maxsafe: 'integer', half: 'float', negfrac: 'float',
      list: ['integer', 'integer', 'integer'], nested: { deeper: { deepest: ['boolean', 'string', 'integer'] } },
    });
    assert.match(recs[6].line, /"maxsafe":9007199254740991[,}]/, '2^53-1 stays exact');
    // unicode and escapes survive
    assert.equal(recs[4].value.subject, '/blobServices/default/containers/c/blobs/r\u00e9sum\u00e9 \u2713.txt');
    assert.equal(recs[4].value.data.note, 'tab\there "quoted" \\ backslash, emoji \u{1F600}');
    assert.equal(recs[4].value.data_version, '', 'empty dataVersion is kept');
  });

  it('eventTime without a zone (UTC) and with an offset is accepted', async () => {
    const a = egEvent({ eventTime: '2024-05-01T12:00:00' });
    const b = egEvent({ eventTime: '2024-05-01T12:00:00.123456789+05:30' });
    const r = await post(d.port, EVENTS, [a, b], NOTIFY);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(readRecords(out).map((x) => x.value.time), [a.eventTime, b.eventTime]);
  });

  it('a handler error -> 500, logged with the event id and a traceback with file:line', async () => {
    const e = egEvent({ data: { action: 'fail' } });
    const r = await post(d.port, EVENTS, [e], NOTIFY);
    assert.equal(r.status, 500, r.text);
    assertFraming(assert, r);
    assert.equal(readRecords(out).length, 0, 'the failing handler recorded nothing');
    const errLine = lineOf(SCRIPT, '@@ERROR_LINE');
    const callLine = lineOf(SCRIPT, '@@CALL_LINE');
    await d.waitStderr(new RegExp(`boom ${e.id}`), 3000);
    const lines = d.stderr().split('\n').filter((l) => l.includes(`boom ${e.id}`));
    const rec = lines.find((l) => l.includes(`hook.lua:${errLine}`) && l.includes(`hook.lua:${callLine}`));
    assert.ok(rec, `one log record with the error (hook.lua:${errLine}) and a traceback through on_event (hook.lua:${callLine}); got:\n${lines.join('\n')}`);
    assert.match(rec, /traceback/i, 'the record carries a traceback');
    const idMentioned = d.stderr().split('\n').some((l) => l.includes(e.id) && /error|fail/i.test(l));
    assert.ok(idMentioned, 'the event id is logged with the error');
  });

  it('a handler error in a batch -> 500 for the whole request', async () => {
    const r = await post(d.port, EVENTS, [egEvent(), egEvent({ data: { action: 'fail' } })], NOTIFY);
    assert.equal(r.status, 500, r.text);
  });

  it('luahook.reject(reason) -> 400', async () => {
    const e = egEvent({ data: { action: 'reject' } });
    const r = await post(d.port, EVENTS, [e], NOTIFY);
    assert.equal(r.status, 400, r.text);
    assertFraming(assert, r);
    assert.equal(readRecords(out).length, 0, 'reject ends the handler');
  });

  it('validation handshake (aeg-event-type header): exact JSON answer, no handler', async () => {
    const text = loadDataText('eventgrid-validation.json');
    const [v] = loadData('eventgrid-validation.json');
    const r = await post(d.port, EVENTS, text, {
      'aeg-event-type': 'SubscriptionValidation', 'aeg-subscription-name': 'MYEVENTSUB',
      'aeg-metadata-version': '1', 'aeg-data-version': '1', 'aeg-delivery-count': '0',
      'Content-Type': 'application/json; charset=utf-8',
    });
    assert.equal(r.status, 200, r.text);
    assertFraming(assert, r);
    assert.match(r.headers['content-type'] || '', /^application\/json/i);
    assert.deepEqual(r.json(), { validationResponse: v.data.validationCode });
    assert.deepEqual(readRecords(out), [], 'the script is never called for validation');
    await d.waitStderr(/rp-eastus2\.eventgrid\.azure\.net/, 3000).catch(() => {
      assert.fail('validationUrl is logged (DESIGN: "validationUrl logged")');
    });
  });

  it('validation handshake recognised by event type alone (no header)', async () => {
    const v = egEvent({
      eventType: 'Microsoft.EventGrid.SubscriptionValidationEvent',
      data: { validationCode: 'code-\u00e9-"quoted"-\\', validationUrl: 'https://example.invalid/validate?id=1' },
    });
    const r = await post(d.port, EVENTS, [v]);
    assert.equal(r.status, 200, r.text);
    assertFraming(assert, r);
    assert.deepEqual(r.json(), { validationResponse: v.data.validationCode }, 'code is JSON-escaped correctly');
    assert.deepEqual(readRecords(out), []);
  });

  it('query parameters on the events path are fine (?api-version=...)', async () => {
    const e = egEvent();
    const r = await post(d.port, `${EVENTS}?api-version=2018-01-01&x=1`, [e], NOTIFY);
    assert.equal(r.status, 200, r.text);
    assert.equal(readRecords(out)[0]?.value.id, e.id);
  });

  it('unknown path -> 404', async () => {
    for (const [method, p] of [['GET', '/'], ['GET', '/nope'], ['POST', '/nope'], ['POST', '/api/events/x'], ['POST', '/api']]) {
      const r = await request(d.port, { method, path: p, body: method === 'POST' ? [egEvent()] : undefined });
      assert.equal(r.status, 404, `${method} ${p}: ${r.status} ${r.text}`);
      assertFraming(assert, r, `${method} ${p}`);
    }
    assert.deepEqual(readRecords(out), []);
  });

  it('wrong method on the events path -> 405 with Allow: POST', async () => {
    for (const method of ['GET', 'PUT', 'DELETE', 'PATCH']) {
      const r = await request(d.port, { method, path: EVENTS });
      assert.equal(r.status, 405, `${method} ${EVENTS}: ${r.status} ${r.text}`);
      assertFraming(assert, r, method);
      assert.ok(r.headers.allow, `${method}: Allow header present`);
      assert.ok(r.headers.allow.split(/\s*,\s*/).includes('POST'), `Allow lists POST: ${r.headers.allow}`);
    }
  });

  it('wrong method on /healthz -> 405 with Allow listing GET', async () => {
    const r = await request(d.port, { method: 'POST', path: '/healthz', body: [] });
    assert.equal(r.status, 405, r.text);
    assert.ok((r.headers.allow || '').split(/\s*,\s*/).includes('GET'), `Allow: ${r.headers.allow}`);
  });

  it('GET /healthz -> 200 JSON', async () => {
    const r = await get(d.port, '/healthz');
    assert.equal(r.status, 200, r.text);
    assertFraming(assert, r);
    assert.match(r.headers['content-type'] || '', /^application\/json/i);
    assert.doesNotThrow(() => r.json(), `healthz body is JSON: ${r.text}`);
  });

  it('20 concurrent deliveries over separate connections -> 20 x 200', async () => {
    const evs = Array.from({ length: 20 }, (_, i) => egEvent({ id: `par-${i}` }));
    const rs = await Promise.all(evs.map((e) => post(d.port, EVENTS, [e], NOTIFY)));
    assert.deepEqual(rs.map((r) => r.status), evs.map(() => 200));
    const seen = readRecords(out).map((x) => x.value.id).sort();
    assert.deepEqual(seen, evs.map((e) => e.id).sort(), 'every handler ran exactly once');
  });

  it('the same HTTP exchange over raw bytes: status line, Content-Length, Connection', async () => {
    const e = egEvent();
    const { responses } = await rawExchange(d.port, buildRequest({ body: [e], headers: NOTIFY }), { timeoutMs: 5000 });
    const r = responses[0];
    assert.equal(r.version, '1.1');
    assert.equal(r.status, 200);
    assertFraming(assert, r);
    assert.notEqual((r.headers.connection || '').toLowerCase(), 'close', 'keep-alive by default in HTTP/1.1');
  });
});

describe('receiver: a script without handlers', () => {
  let d;
  before(async () => { d = await startDaemon({ script: writeScript('-- no handlers at all\nlocal x = 1\n') }); });
  after(async () => { await d?.stop(); });

  it('connected, disconnected and other events all get 200', async () => {
    for (const e of [signalrEvent('Connected'), signalrEvent('Disconnected'), egEvent()]) {
      const r = await post(d.port, EVENTS, [e], NOTIFY);
      assert.equal(r.status, 200, `${e.eventType}: ${r.status} ${r.text}`);
    }
    const r = await post(d.port, EVENTS, loadDataText('eventgrid-batch-10.json'), NOTIFY);
    assert.equal(r.status, 200, r.text);
  });
});

describe('receiver: --path', () => {
  let d;
  let out;
  before(async () => {
    out = outPath();
    d = await startDaemon({ script: writeScript(`${RECORDER}\nfunction on_event(ev) record("event", evrec(ev)) end\n`), env: { OUT: out }, args: ['--path', '/hooks/eg'] });
  });
  after(async () => { await d?.stop(); });

  it('deliveries go to the configured path; the default path is then unknown', async () => {
    const e = egEvent();
    const r = await post(d.port, '/hooks/eg', [e], NOTIFY);
    assert.equal(r.status, 200, r.text);
    assert.equal(readRecords(out)[0]?.value.id, e.id);
    const r2 = await post(d.port, EVENTS, [egEvent()], NOTIFY);
    assert.equal(r2.status, 404, r2.text);
    const h = await get(d.port, '/healthz');
    assert.equal(h.status, 200);
    assert.equal(readRecords(out).length, 1);
  });
});

describe('receiver: budgets (a buggy script must not take the daemon down)', () => {
  let d;
  const BUDGET_SCRIPT = `
function on_event(ev)
  local k = ev.data.kind
  if k == "cpu" then while true do end end
  if k == "mem" then local t = {} while true do t[#t + 1] = string.rep("x", 1000000) .. #t end end
  if k == "table" then error({ code = 1 }) end
  if k == "nil" then error() end
end
`;
  before(async () => { d = await startDaemon({ script: writeScript(BUDGET_SCRIPT, { name: 'budget.lua' }) }); });
  after(async () => { await d?.stop(); });

  for (const kind of ['cpu', 'mem', 'table', 'nil']) {
    it(`a handler that fails by ${kind} -> 500, logged, daemon keeps serving`, async () => {
      const e = egEvent({ data: { kind } });
      const r = await post(d.port, EVENTS, [e], NOTIFY, { timeoutMs: 20000 });
      assert.equal(r.status, 500, r.text);
      assertFraming(assert, r);
      await d.waitStderr(new RegExp(`${e.id}.*budget\\.lua:\\d+|budget\\.lua:\\d+.*${e.id}`), 3000);
      assert.equal((await get(d.port, '/healthz')).status, 200);
      const ok = egEvent({ data: { kind: 'none' } });
      assert.equal((await post(d.port, EVENTS, [ok], NOTIFY)).status, 200, 'the next delivery works');
    });
  }
});

// DESIGN.md: "an event whose handler already succeeded is not run again while it is in a
// bounded dedup window, so a batch redelivered after one failure re-runs only the failed
// event."
describe('receiver: dedup window (DESIGN)', () => {
  let d;
  let out;
  const DEDUP_SCRIPT = `
local failed_once = false
function on_event(ev)
  local f = assert(io.open(os.getenv("OUT"), "a"))
  f:write(ev.id, "\\n")
  f:close()
  if type(ev.data) == "table" and ev.data.fail_once and not failed_once then
    failed_once = true
    error("failing once: " .. ev.id)
  end
end
`;
  before(async () => {
    out = outPath();
    d = await startDaemon({ script: writeScript(DEDUP_SCRIPT), env: { OUT: out } });
  });
  after(async () => { await d?.stop(); });
  beforeEach(() => clearOut(out));

  it('an event delivered twice runs once; both deliveries get 200', async () => {
    const e = egEvent();
    assert.equal((await post(d.port, EVENTS, [e], NOTIFY)).status, 200);
    assert.equal((await post(d.port, EVENTS, [e], { ...NOTIFY, 'aeg-delivery-count': '1' })).status, 200);
    assert.deepEqual(readOut(out), [e.id]);
  });

  it('a batch redelivered after one failure re-runs only the failed event', async () => {
    const a = egEvent();
    const b = egEvent({ data: { fail_once: true } });
    const c = egEvent();
    assert.equal((await post(d.port, EVENTS, [a, b, c], NOTIFY)).status, 500);
    clearOut(out);
    assert.equal((await post(d.port, EVENTS, [a, b, c], { ...NOTIFY, 'aeg-delivery-count': '1' })).status, 200);
    assert.deepEqual(readOut(out), [b.id]);
  });
});
