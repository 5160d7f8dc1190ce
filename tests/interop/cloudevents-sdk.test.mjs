// Interop: the official CloudEvents JavaScript SDK (`cloudevents` on npm) produces the
// HTTP messages (binary and structured mode, HTTP.binary / HTTP.structured and the
// emitterFor(httpTransport(url)) emitter); node's fetch / the SDK's transport deliver them
// to a real luahook; the Lua handler must see what the SDK itself reads back from the
// same message (HTTP.toEvent).
import { describe, it, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { CloudEvent, HTTP, Mode, emitterFor, httpTransport } from 'cloudevents';
import {
  RECORDER, startDaemon, writeScript, outPath, readRecords, clearOut, waitFor,
} from '../e2e/lib.mjs';

const SCRIPT = `${RECORDER}
local function hex(s) return (s:gsub('.', function(c) return string.format('%02x', c:byte()) end)) end
local function full(ev)
  local r = evrec(ev)
  r.specversion = ev.specversion
  r.datacontenttype = ev.datacontenttype
  r.dataschema = ev.dataschema
  r.extensions = ev.extensions
  r.ext_types = types(ev.extensions)
  if type(ev.data) == 'string' then
    r.data_hex = hex(ev.data)
    if not utf8.len(ev.data) then r.data = nil end
  end
  if type(ev.raw) == 'string' and not utf8.len(ev.raw) then r.raw = nil end
  return r
end
function on_connected(ev) record('connected', full(ev)) end
function on_disconnected(ev) record('disconnected', full(ev)) end
function on_event(ev)
  if type(ev.data) == 'table' and ev.data.fail then error('asked to fail') end
  record('event', full(ev))
end
`;

const SIGNALR_SOURCE = '/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.SignalRService/SignalR/sr';

/** POSTs an SDK message ({headers, body}) with node's fetch. */
async function send(url, message) {
  const res = await fetch(url, {
    method: 'POST',
    headers: message.headers,
    body: message.body,
    signal: AbortSignal.timeout(5000),
  });
  return { status: res.status, text: await res.text() };
}

/** The handler's view must match the SDK's own reading of the message. */
function checkAgainstSdk(rec, message, { tag }) {
  const sdk = HTTP.toEvent({ headers: message.headers, body: message.body });
  assert.equal(rec.tag, tag, `hook for ${sdk.type}`);
  const v = rec.value;
  assert.equal(v.id, sdk.id, 'id');
  assert.equal(v.type, sdk.type, 'type');
  assert.equal(v.source, sdk.source, 'source');
  assert.equal(v.specversion, sdk.specversion, 'specversion');
  assert.equal(v.subject, sdk.subject, 'subject');
  assert.equal(new Date(v.time).getTime(), new Date(sdk.time).getTime(), `time ${v.time} vs ${sdk.time}`);
  assert.equal(v.schema, 'cloudevents');
  return { v, sdk };
}

describe('interop: cloudevents SDK -> luahook', () => {
  let d;
  let out;
  before(async () => {
    out = outPath();
    d = await startDaemon({ script: writeScript(SCRIPT), env: { OUT: out } });
  });
  after(async () => { await d?.stop(); });
  beforeEach(() => clearOut(out));

  const custom = (over = {}) => new CloudEvent({
    type: 'com.contoso.order.created',
    source: '/contoso/orders',
    subject: 'orders/42',
    dataschema: 'https://contoso.example/schemas/order.json',
    data: { orderId: 42, total: 12.5, items: ['a', 'b'], gift: false },
    traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
    tenant: 'contoso',
    ...over,
  });

  for (const [mode, encode] of [['binary', HTTP.binary], ['structured', HTTP.structured]]) {
    it(`HTTP.${mode}(ce) + fetch: on_event sees type, source, id, data and extensions`, async () => {
      const ce = custom();
      const message = encode(ce);
      const r = await send(d.url(), message);
      assert.equal(r.status, 200, r.text);
      const recs = readRecords(out);
      assert.equal(recs.length, 1, JSON.stringify(recs));
      const { v, sdk } = checkAgainstSdk(recs[0], message, { tag: 'event' });
      assert.equal(v.id, ce.id);
      assert.deepEqual(v.data, ce.data, 'data decoded into a table');
      assert.deepEqual(v.data_types, { orderId: 'integer', total: 'float', items: ['string', 'string'], gift: 'boolean' });
      assert.equal(v.dataschema, sdk.dataschema);
      // binary mode: Content-Type; structured mode: the attribute, which the SDK leaves out
      // for JSON data (absent means application/json)
      assert.ok(v.datacontenttype === undefined || /^application\/json/.test(v.datacontenttype), `datacontenttype ${v.datacontenttype}`);
      if (mode === 'binary') assert.match(v.datacontenttype, /^application\/json/);
      assert.deepEqual(v.extensions, { traceparent: ce.traceparent, tenant: 'contoso' }, 'extensions, and only those');
    });

    it(`HTTP.${mode}(ce): a SignalR Connected CloudEvent reaches on_connected`, async () => {
      const ce = new CloudEvent({
        type: 'Microsoft.SignalRService.ClientConnectionConnected',
        source: SIGNALR_SOURCE,
        subject: '/hub/chat',
        data: { timestamp: new Date().toISOString(), hubName: 'chat', connectionId: `sdk-${mode}`, userId: 'sdk-user' },
      });
      const message = encode(ce);
      const r = await send(d.url(), message);
      assert.equal(r.status, 200, r.text);
      const recs = readRecords(out);
      assert.equal(recs.length, 1);
      const { v } = checkAgainstSdk(recs[0], message, { tag: 'connected' });
      assert.deepEqual(v.data, ce.data);
    });

    it(`HTTP.${mode}(ce): Disconnected reaches on_disconnected`, async () => {
      const ce = new CloudEvent({
        type: 'Microsoft.SignalRService.ClientConnectionDisconnected',
        source: SIGNALR_SOURCE,
        subject: '/hub/chat',
        data: { timestamp: new Date().toISOString(), hubName: 'chat', connectionId: `sdk-d-${mode}`, errorMessage: 'bye' },
      });
      const r = await send(d.url(), encode(ce));
      assert.equal(r.status, 200, r.text);
      const recs = readRecords(out);
      assert.deepEqual(recs.map((x) => [x.tag, x.value.id]), [['disconnected', ce.id]]);
      assert.equal(recs[0].value.data.errorMessage, 'bye');
    });

    it(`HTTP.${mode}(ce) with a text/plain string: ev.data is the string`, async () => {
      const ce = new CloudEvent({ type: 'com.contoso.note', source: '/notes', datacontenttype: 'text/plain', data: 'hello wörld' });
      const r = await send(d.url(), encode(ce));
      assert.equal(r.status, 200, `${mode} text/plain: ${r.status} ${r.text}`);
      const [rec] = readRecords(out);
      assert.equal(rec.value.data, 'hello wörld');
      assert.equal(rec.value.datacontenttype, 'text/plain');
    });

    it(`HTTP.${mode}(ce) with bytes (application/octet-stream): ev.data holds them`, async () => {
      const bytes = Buffer.from([0, 1, 2, 0xff, 0xfe, 0x80, 0x7f]);
      const ce = new CloudEvent({ type: 'com.contoso.blob', source: '/blobs', datacontenttype: 'application/octet-stream', data: bytes });
      const message = encode(ce);
      if (mode === 'structured') assert.ok(String(message.body).includes('data_base64'), 'the SDK uses data_base64');
      const r = await send(d.url(), message);
      assert.equal(r.status, 200, `${mode} octet-stream: ${r.status} ${r.text}`);
      const [rec] = readRecords(out);
      assert.equal(rec.value.data_hex, bytes.toString('hex'));
    });

    it(`HTTP.${mode}(ce): a handler error -> 500 for the sender`, async () => {
      const r = await send(d.url(), encode(custom({ data: { fail: true } })));
      assert.equal(r.status, 500, r.text);
    });
  }

  it('extension values: binary mode carries them as strings, structured mode keeps JSON types', async () => {
    const ext = { count: 5, flag: true, label: 'x y' };
    const a = custom({ ...ext });
    const b = custom({ ...ext });
    assert.equal((await send(d.url(), HTTP.binary(a))).status, 200);
    assert.equal((await send(d.url(), HTTP.structured(b))).status, 200);
    const recs = readRecords(out);
    assert.equal(recs.length, 2);
    const [bin, str] = recs.map((x) => x.value);
    assert.deepEqual({ count: bin.extensions.count, flag: bin.extensions.flag, label: bin.extensions.label },
      { count: '5', flag: 'true', label: 'x y' });
    assert.deepEqual({ count: str.extensions.count, flag: str.extensions.flag, label: str.extensions.label }, ext);
    assert.equal(str.ext_types.count, 'integer');
  });

  for (const mode of [Mode.BINARY, Mode.STRUCTURED]) {
    it(`emitterFor(httpTransport(url), {mode: ${mode}}) delivers`, async () => {
      const emit = emitterFor(httpTransport(d.url()), { mode });
      const ce = custom({ subject: `emitter/${mode}` });
      const res = await Promise.race([
        emit(ce),
        new Promise((_, rej) => setTimeout(() => rej(new Error('emit took more than 5 s')), 5000).unref()),
      ]);
      assert.equal(res.body, '', 'empty 200 body');
      await waitFor(() => readRecords(out).length >= 1, 2000, 'the handler ran');
      const recs = readRecords(out);
      assert.deepEqual(recs.map((x) => [x.tag, x.value.id, x.value.subject]), [['event', ce.id, `emitter/${mode}`]]);
      assert.deepEqual(recs[0].value.data, ce.data);
      assert.equal(recs[0].value.extensions.tenant, 'contoso');
    });
  }

  it('the same SDK event sent twice (binary, then structured) runs once (dedup on source + id)', async () => {
    const ce = custom();
    assert.equal((await send(d.url(), HTTP.binary(ce))).status, 200);
    assert.equal((await send(d.url(), HTTP.structured(ce))).status, 200);
    assert.equal(readRecords(out).length, 1);
  });

  it('a batch of SDK events (toJSON) as application/cloudevents-batch+json runs in order', async () => {
    const evs = [custom({ subject: 's1' }), custom({ subject: 's2' }), custom({ subject: 's3' })];
    const r = await send(d.url(), {
      headers: { 'content-type': 'application/cloudevents-batch+json; charset=utf-8' },
      body: JSON.stringify(evs.map((e) => e.toJSON())),
    });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(readRecords(out).map((x) => [x.value.id, x.value.subject]), evs.map((e) => [e.id, e.subject]));
  });
});
