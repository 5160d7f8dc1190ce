// Interop: the official @azure/eventgrid publisher client in CloudEvents mode
// (EventGridPublisherClient(url, "CloudEvent", AzureKeyCredential)). The SDK POSTs a JSON
// array as `application/cloudevents-batch+json; charset=utf-8` with the key in the
// `aeg-sas-key` header and `?api-version=...` in the query; a real luahook started with
// --secret = the key must run each event as a CloudEvent and check the key.
import { describe, it, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { EventGridPublisherClient } from '@azure/eventgrid';
import { AzureKeyCredential } from '@azure/core-auth';
import {
  RECORDER, startDaemon, writeScript, outPath, readRecords, clearOut,
} from '../e2e/lib.mjs';

const KEY = 'Y2xvdWRldmVudHMta2V5LWZvci10ZXN0cw==';

const SCRIPT = `${RECORDER}
local function hex(s) return (s:gsub('.', function(c) return string.format('%02x', c:byte()) end)) end
local function full(ev)
  local r = evrec(ev)
  r.specversion = ev.specversion
  r.datacontenttype = ev.datacontenttype
  r.dataschema = ev.dataschema
  r.extensions = ev.extensions
  if type(ev.data) == 'string' then
    r.data_hex = hex(ev.data)
    if not utf8.len(ev.data) then r.data = nil end
  end
  return r
end
function on_connected(ev) record('connected', full(ev)) end
function on_disconnected(ev) record('disconnected', full(ev)) end
function on_event(ev)
  if type(ev.data) == 'table' and ev.data.fail then error('asked to fail') end
  record('event', full(ev))
end
`;

const clientOpts = { allowInsecureConnection: true, retryOptions: { maxRetries: 0 } };
const SIGNALR_SOURCE = '/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.SignalRService/SignalR/sr';

function withTimeout(p, ms = 10000, what = 'send()') {
  return Promise.race([
    p,
    new Promise((_, rej) => setTimeout(() => rej(new Error(`${what} took more than ${ms} ms`)), ms).unref()),
  ]);
}

describe('interop: @azure/eventgrid EventGridPublisherClient("CloudEvent") -> luahook', () => {
  let d;
  let out;
  let client;
  before(async () => {
    out = outPath();
    d = await startDaemon({ script: writeScript(SCRIPT), env: { OUT: out }, args: ['--secret', KEY] });
    client = new EventGridPublisherClient(d.url('/api/events'), 'CloudEvent', new AzureKeyCredential(KEY), clientOpts);
  });
  after(async () => { await d?.stop(); });
  beforeEach(() => clearOut(out));

  it('what the SDK sends: a cloudevents-batch+json array with aeg-sas-key (checked against a plain server)', async () => {
    let seen;
    const srv = http.createServer((req, res) => {
      let b = '';
      req.on('data', (c) => { b += c; });
      req.on('end', () => { seen = { url: req.url, headers: req.headers, body: b }; res.writeHead(200); res.end(); });
    });
    await new Promise((r) => srv.listen(0, '127.0.0.1', r));
    try {
      const c = new EventGridPublisherClient(`http://127.0.0.1:${srv.address().port}/api/events`, 'CloudEvent', new AzureKeyCredential(KEY), clientOpts);
      await withTimeout(c.send([{ type: 'a.b', source: '/s', data: { x: 1 } }]));
    } finally {
      srv.close();
    }
    assert.match(seen.headers['content-type'], /^application\/cloudevents-batch\+json/);
    assert.equal(seen.headers['aeg-sas-key'], KEY);
    assert.ok(Array.isArray(JSON.parse(seen.body)), 'the body is an array');
  });

  it('SignalR Connected / Disconnected and a custom type reach their hooks as CloudEvents', async () => {
    const when = new Date('2024-06-01T08:30:00.123Z');
    const events = [
      {
        type: 'Microsoft.SignalRService.ClientConnectionConnected',
        source: SIGNALR_SOURCE,
        subject: '/hub/chat',
        id: 'eg-ce-connected-1',
        time: when,
        data: { timestamp: when.toISOString(), hubName: 'chat', connectionId: 'eg-ce-conn', userId: 'eg-ce-user' },
      },
      {
        type: 'Contoso.Items.ItemReceived',
        source: '/contoso/items',
        subject: 'items/7',
        dataschema: 'https://contoso.example/item.json',
        data: { n: 7, f: 0.5, tags: ['a'] },
        extensionAttributes: { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', tenant: 'contoso' },
      },
      {
        type: 'Microsoft.SignalRService.ClientConnectionDisconnected',
        source: SIGNALR_SOURCE,
        subject: '/hub/chat',
        id: 'eg-ce-disconnected-1',
        data: { timestamp: when.toISOString(), hubName: 'chat', connectionId: 'eg-ce-conn', errorMessage: 'bye' },
      },
    ];
    await withTimeout(client.send(events));
    const recs = readRecords(out);
    assert.deepEqual(recs.map((r) => r.tag), ['connected', 'event', 'disconnected'], JSON.stringify(recs));
    const [c, x, dis] = recs.map((r) => r.value);

    assert.equal(c.id, 'eg-ce-connected-1');
    assert.equal(c.type, events[0].type);
    assert.equal(c.source, SIGNALR_SOURCE);
    assert.equal(c.subject, '/hub/chat');
    assert.equal(c.schema, 'cloudevents');
    assert.equal(c.specversion, '1.0');
    assert.equal(new Date(c.time).getTime(), when.getTime(), `ev.time ${c.time}`);
    assert.deepEqual(c.data, events[0].data);
    assert.equal(JSON.parse(c.raw).id, 'eg-ce-connected-1', 'ev.raw is that element of the array');

    assert.match(x.id, /^[0-9a-f-]{36}$/i, 'the SDK-generated id arrives');
    assert.ok(typeof x.time === 'string' && !Number.isNaN(Date.parse(x.time)), 'SDK-stamped time');
    assert.equal(x.source, '/contoso/items');
    assert.equal(x.dataschema, 'https://contoso.example/item.json');
    assert.deepEqual(x.data, { n: 7, f: 0.5, tags: ['a'] });
    assert.deepEqual(x.data_types, { n: 'integer', f: 'float', tags: ['string'] });
    assert.deepEqual(x.extensions, events[1].extensionAttributes, 'extensionAttributes -> ev.extensions');

    assert.equal(dis.id, 'eg-ce-disconnected-1');
    assert.equal(dis.data.errorMessage, 'bye');
  });

  it('binary data (Uint8Array) travels as data_base64 and arrives as bytes', async () => {
    const bytes = new Uint8Array([0, 1, 2, 0xff, 0x80, 0x41]);
    await withTimeout(client.send([{ type: 'Contoso.Blob', source: '/blobs', data: bytes, datacontenttype: 'application/octet-stream' }]));
    const [rec] = readRecords(out);
    assert.equal(rec.tag, 'event');
    assert.equal(rec.value.data_hex, Buffer.from(bytes).toString('hex'));
    assert.equal(rec.value.datacontenttype, 'application/octet-stream');
    assert.deepEqual(rec.value.extensions, {});
  });

  it('a handler error -> the SDK reports 500', async () => {
    await assert.rejects(
      withTimeout(client.send([{ type: 'Contoso.Fail', source: '/f', data: { fail: true } }])),
      (err) => { assert.equal(err.statusCode, 500, `${err.statusCode}: ${err.message}`); return true; },
    );
  });

  it('the same event sent again (same source + id) runs once', async () => {
    const e = { type: 'Contoso.Once', source: '/once', id: 'eg-ce-once-1', data: { k: 1 } };
    await withTimeout(client.send([e]));
    await withTimeout(client.send([e]));
    assert.deepEqual(readRecords(out).map((r) => r.value.id), ['eg-ce-once-1']);
  });

  it('a wrong key -> 401 for the SDK and no handler runs', async () => {
    const bad = new EventGridPublisherClient(d.url('/api/events'), 'CloudEvent', new AzureKeyCredential('wrong-key'), clientOpts);
    await assert.rejects(
      withTimeout(bad.send([{ type: 'Microsoft.SignalRService.ClientConnectionConnected', source: SIGNALR_SOURCE, data: { hubName: 'chat', connectionId: 'x' } }])),
      (err) => { assert.equal(err.statusCode, 401, `${err.statusCode}: ${err.message}`); return true; },
    );
    assert.deepEqual(readRecords(out), []);
  });

  it('a second accepted key (--secret a --secret b) works with the SDK too', async () => {
    const d2 = await startDaemon({ script: writeScript(SCRIPT), env: { OUT: out }, args: ['--secret', 'old-key', '--secret', KEY] });
    try {
      for (const k of ['old-key', KEY]) {
        const c = new EventGridPublisherClient(d2.url('/api/events'), 'CloudEvent', new AzureKeyCredential(k), clientOpts);
        await withTimeout(c.send([{ type: 'Contoso.Rotate', source: '/rotate', data: { key: k === KEY ? 'new' : 'old' } }]));
      }
      assert.deepEqual(readRecords(out).map((r) => r.value.data.key), ['old', 'new']);
    } finally {
      await d2.stop();
    }
  });
});
