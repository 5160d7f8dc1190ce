// HTTP/1.1 behaviour of the receiver: framing, keep-alive, pipelining, 100-continue,
// limits, bad bodies (all-or-nothing 400s), content types, the secret, malformed
// requests and slow clients. After every request that should fail, /healthz must
// still answer 200.
import { describe, it, before, after, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import {
  RECORDER, startDaemon, writeScript, outPath, readRecords, readOut, clearOut, loadData,
  post, get, egEvent, signalrEvent, assertFraming, RawConn, rawExchange, buildRequest,
  chunked, sleep,
} from './lib.mjs';

const EVENTS = '/api/events';
const NOTIFY = { 'aeg-event-type': 'Notification' };
const MAX_BODY = 65536;

const SCRIPT = `${RECORDER}
local function handle(kind, ev)
  local d = ev.data
  if type(d) == "table" and d.action == "reject" then luahook.reject("rejected " .. ev.id) end
  if type(d) == "table" and d.action == "fail" then error("failed " .. ev.id) end
  record(kind, { id = ev.id, type = ev.type })
end
function on_connected(ev) handle("connected", ev) end
function on_disconnected(ev) handle("disconnected", ev) end
function on_event(ev) handle("event", ev) end
`;

const ids = (out) => readRecords(out).map((r) => r.value.id);

async function assertAlive(d, what = '') {
  const h = await get(d.port, '/healthz', {}, { timeoutMs: 3000 });
  assert.equal(h.status, 200, `/healthz after ${what}: ${h.status} ${h.text}`);
}

/** When the server closed the connection after a response, that response must say so. */
function assertCloseAnnounced(r, closed, what = '') {
  if (closed) {
    assert.match(r.headers.connection || '', /close/i,
      `${what}: the server closed the connection, so the response must carry "Connection: close" (got ${JSON.stringify(r.headers.connection)})`);
  }
}

function validationEvent(data = { validationCode: 'vc-1', validationUrl: 'https://example.invalid/v' }) {
  return egEvent({ eventType: 'Microsoft.EventGrid.SubscriptionValidationEvent', subject: '', data });
}

// ---------------------------------------------------------------------------------------

describe('http: framing, keep-alive, pipelining, chunked, 100-continue, limits', () => {
  let d;
  let out;
  before(async () => {
    out = outPath();
    d = await startDaemon({ script: writeScript(SCRIPT), env: { OUT: out }, args: ['--max-body', String(MAX_BODY)] });
  });
  after(async () => { await d?.stop(); });
  beforeEach(() => clearOut(out));
  afterEach(async () => { await assertAlive(d); });

  it('chunked request body (several chunks, several writes, a trailer)', async () => {
    const e = egEvent();
    const body = chunked(JSON.stringify([e]), [5, 17, 1, 64]);
    const head = buildRequest({ headers: { ...NOTIFY, 'Transfer-Encoding': 'chunked' }, contentLength: false });
    const c = await RawConn.open(d.port);
    try {
      c.write(head);
      for (let i = 0; i < body.length; i += 40) {
        c.write(body.subarray(i, Math.min(i + 40, body.length)));
        await sleep(10);
      }
      const r = await c.finalResponse(5000);
      assert.equal(r.status, 200, r.text);
      assertFraming(assert, r);
      assert.deepEqual(ids(out), [e.id]);
      // chunk extensions + trailer fields on a second request of the same connection
      clearOut(out);
      const e2 = egEvent();
      const js = JSON.stringify([e2]);
      c.write(buildRequest({ headers: { ...NOTIFY, 'Transfer-Encoding': 'chunked' }, contentLength: false }));
      c.write(`${Buffer.byteLength(js).toString(16)};ext=1\r\n${js}\r\n0\r\nX-Trailer: yes\r\n\r\n`);
      const r2 = await c.finalResponse(5000);
      assert.equal(r2.status, 200, r2.text);
      assert.deepEqual(ids(out), [e2.id]);
    } finally { c.destroy(); }
  });

  it('keep-alive: 3 requests on one connection, each answered, connection kept', async () => {
    const c = await RawConn.open(d.port);
    try {
      const evs = [egEvent(), egEvent(), egEvent()];
      for (const [i, e] of evs.entries()) {
        c.write(buildRequest({ body: [e], headers: NOTIFY }));
        const r = await c.finalResponse(5000);
        assert.equal(r.status, 200, `request ${i}: ${r.text}`);
        assertFraming(assert, r, `request ${i}`);
        assert.doesNotMatch(r.headers.connection || '', /close/i, `request ${i} keeps the connection`);
        assert.equal(c.closed, false, `connection still open after request ${i}`);
      }
      c.write(buildRequest({ method: 'GET', path: '/healthz' }));
      assert.equal((await c.finalResponse(3000)).status, 200);
      assert.deepEqual(ids(out), evs.map((e) => e.id));
    } finally { c.destroy(); }
  });

  it('Connection: close from the client -> "Connection: close" answer, then closed', async () => {
    const { responses, closed } = await rawExchange(d.port,
      buildRequest({ body: [egEvent()], headers: { ...NOTIFY, Connection: 'close' } }), { closeWaitMs: 2000 });
    assert.equal(responses[0].status, 200);
    assertFraming(assert, responses[0]);
    assert.match(responses[0].headers.connection || '', /close/i);
    assert.equal(closed, true, 'server closes after answering');
  });

  it('HTTP/1.0 request: answered, then closed (or kept only if it said keep-alive)', async () => {
    const { responses, closed } = await rawExchange(d.port,
      buildRequest({ version: '1.0', method: 'GET', path: '/healthz' }), { closeWaitMs: 2000 });
    assert.equal(responses[0].status, 200);
    assertFraming(assert, responses[0]);
    assert.doesNotMatch(responses[0].headers.connection || '', /keep-alive/i);
    assert.equal(closed, true, 'HTTP/1.0 without keep-alive is closed after the response');

    const c = await RawConn.open(d.port);
    try {
      c.write(buildRequest({ version: '1.0', body: [egEvent()], headers: { ...NOTIFY, Connection: 'keep-alive' } }));
      const r = await c.finalResponse(5000);
      assert.equal(r.status, 200);
      const kept = /keep-alive/i.test(r.headers.connection || '');
      const closed2 = await c.waitClosed(1000);
      assert.equal(closed2, !kept, `Connection: ${r.headers.connection} but the connection was ${closed2 ? 'closed' : 'kept'}`);
    } finally { c.destroy(); }
  });

  it('a request sent one byte at a time is parsed correctly', async () => {
    const e = egEvent();
    const bytes = buildRequest({ body: [e], headers: NOTIFY });
    const c = await RawConn.open(d.port);
    try {
      for (let i = 0; i < bytes.length; i += 1) {
        c.write(bytes.subarray(i, i + 1));
        if (i % 8 === 0) await sleep(1);
      }
      const r = await c.finalResponse(5000);
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(ids(out), [e.id]);
    } finally { c.destroy(); }
  });

  it('a request pipelined after "Connection: close" is not processed', async () => {
    const e1 = egEvent();
    const e2 = egEvent();
    const bytes = Buffer.concat([
      buildRequest({ body: [e1], headers: { ...NOTIFY, Connection: 'close' } }),
      buildRequest({ body: [e2], headers: NOTIFY }),
    ]);
    const { responses, closed, raw } = await rawExchange(d.port, bytes, { responses: 1, closeWaitMs: 2000 });
    assert.equal(responses[0].status, 200);
    assert.equal(closed, true, 'closed after the Connection: close request');
    assert.equal(raw.match(/HTTP\/1\.1 \d{3}/g).length, 1, `exactly one response: ${raw}`);
    assert.deepEqual(ids(out), [e1.id], 'the request after Connection: close never ran');
  });

  it('pipelining: 4 requests in one write -> 4 responses in order', async () => {
    const e1 = egEvent();
    const e2 = egEvent({ data: { action: 'reject' } });
    const e3 = egEvent();
    const bytes = Buffer.concat([
      buildRequest({ body: [e1], headers: NOTIFY }),
      buildRequest({ method: 'GET', path: '/nope' }),
      buildRequest({ body: [e2], headers: NOTIFY }),
      buildRequest({ body: [e3], headers: NOTIFY }),
    ]);
    const { responses, closed } = await rawExchange(d.port, bytes, { responses: 4, timeoutMs: 5000 });
    assert.deepEqual(responses.map((r) => r.status), [200, 404, 400, 200]);
    responses.forEach((r, i) => assertFraming(assert, r, `response ${i}`));
    assert.equal(closed, false);
    assert.deepEqual(ids(out), [e1.id, e3.id]);
  });

  it('pipelining: 100 mixed requests in one write -> 100 responses in order', async () => {
    const reqs = [];
    const want = [];
    const evIds = [];
    for (let i = 0; i < 100; i++) {
      if (i % 3 === 0) { reqs.push(buildRequest({ method: 'GET', path: '/healthz' })); want.push(200); }
      else if (i % 3 === 1) { const e = egEvent(); evIds.push(e.id); reqs.push(buildRequest({ body: [e], headers: NOTIFY })); want.push(200); }
      else { reqs.push(buildRequest({ body: 'not json', headers: NOTIFY })); want.push(400); }
    }
    const { responses } = await rawExchange(d.port, Buffer.concat(reqs), { responses: 100, timeoutMs: 10000 });
    assert.deepEqual(responses.map((r) => r.status), want);
    assert.deepEqual(ids(out), evIds);
  });

  it('pipelining: three 10-event batches in one write, 30 handler runs in order', async () => {
    // distinct ids per copy: the daemon may (by design) skip event ids it already handled
    const copies = [1, 2, 3].map((k) => loadData('eventgrid-batch-10.json').map((e) => ({ ...e, id: `${e.id}-p${k}` })));
    const bytes = Buffer.concat(copies.map((b) => buildRequest({ body: JSON.stringify(b), headers: NOTIFY })));
    const { responses } = await rawExchange(d.port, bytes, { responses: 3, timeoutMs: 8000 });
    assert.deepEqual(responses.map((r) => r.status), [200, 200, 200]);
    assert.deepEqual(ids(out), copies.flat().map((e) => e.id));
  });

  it('Expect: 100-continue -> "HTTP/1.1 100 Continue" before the body, then 200', async () => {
    const e = egEvent();
    const body = JSON.stringify([e]);
    const c = await RawConn.open(d.port);
    try {
      c.write(buildRequest({ headers: { ...NOTIFY, Expect: '100-continue', 'Content-Length': String(Buffer.byteLength(body)) } }));
      const interim = await c.response(3000);
      assert.equal(interim.status, 100, `expected 100 Continue, got ${interim.status}`);
      assert.match(c.rawText(), /^HTTP\/1\.1 100 Continue\r\n/);
      assert.deepEqual(ids(out), [], 'nothing ran before the body was sent');
      c.write(body);
      const r = await c.finalResponse(5000);
      assert.equal(r.status, 200, r.text);
      assertFraming(assert, r);
      assert.deepEqual(ids(out), [e.id]);
    } finally { c.destroy(); }
  });

  it('Expect: 100-continue with a chunked body -> 100, then 200', async () => {
    const e = egEvent();
    const c = await RawConn.open(d.port);
    try {
      c.write(buildRequest({ headers: { ...NOTIFY, Expect: '100-continue', 'Transfer-Encoding': 'chunked' }, contentLength: false }));
      const interim = await c.response(3000);
      assert.equal(interim.status, 100);
      c.write(chunked(JSON.stringify([e])));
      const r = await c.finalResponse(5000);
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(ids(out), [e.id]);
    } finally { c.destroy(); }
  });

  it('Expect: 100-continue with an oversize Content-Length -> 413 without 100, closed', async () => {
    const c = await RawConn.open(d.port);
    try {
      c.write(buildRequest({ headers: { ...NOTIFY, Expect: '100-continue', 'Content-Length': String(MAX_BODY * 4) } }));
      const r = await c.response(3000);
      assert.equal(r.status, 413, `expected a final 413 instead of ${r.status}`);
      assertFraming(assert, r);
      const closed = await c.waitClosed(2000);
      assert.equal(closed, true, 'connection closed after 413');
      assertCloseAnnounced(r, closed, '413');
    } finally { c.destroy(); }
  });

  it('Expect: 100-continue with a non-JSON Content-Type -> 415 (with or without a 100 first)', async () => {
    const c = await RawConn.open(d.port);
    try {
      c.write(buildRequest({ headers: { Expect: '100-continue', 'Content-Type': 'text/plain', 'Content-Length': '2' } }));
      let r = await c.response(3000);
      if (r.status === 100) { c.write('[]'); r = await c.finalResponse(3000); }
      assert.equal(r.status, 415, r.text);
    } finally { c.destroy(); }
  });

  it('Content-Length over --max-body -> 413 at once (before the body), connection closed', async () => {
    const c = await RawConn.open(d.port);
    try {
      c.write(buildRequest({ headers: { ...NOTIFY, 'Content-Length': String(MAX_BODY + 1) } }));
      c.write('[');
      const r = await c.response(3000);
      assert.equal(r.status, 413, r.text);
      assertFraming(assert, r);
      const closed = await c.waitClosed(2000);
      assert.equal(closed, true, 'connection closed after 413');
      assertCloseAnnounced(r, closed, '413');
    } finally { c.destroy(); }
    assert.deepEqual(ids(out), []);
  });

  it('a body of exactly --max-body bytes is accepted', async () => {
    const e = egEvent();
    let js = JSON.stringify([e]);
    js += ' '.repeat(MAX_BODY - Buffer.byteLength(js));
    assert.equal(Buffer.byteLength(js), MAX_BODY);
    const r = await post(d.port, EVENTS, js, NOTIFY);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(ids(out), [e.id]);
  });

  it('chunked body growing past --max-body -> 413 as soon as it passes, connection closed', async () => {
    const c = await RawConn.open(d.port);
    let sent = 0;
    try {
      c.write(buildRequest({ headers: { ...NOTIFY, 'Transfer-Encoding': 'chunked' }, contentLength: false }));
      const piece = '[' + ' '.repeat(8191);
      let got = null;
      for (let i = 0; i < 40 && !got; i++) {
        if (c.closed) break;
        const data = i === 0 ? piece : ' '.repeat(8192);
        c.write(`2000\r\n${data}\r\n`);
        sent += 8192;
        await sleep(25);
        if (c.responses.length) got = c.responses[0];
      }
      const r = got ?? await c.response(3000);
      assert.equal(r.status, 413, r.text);
      assert.ok(sent <= MAX_BODY + 3 * 8192, `413 came only after ${sent} body bytes (limit ${MAX_BODY})`);
      const closed = await c.waitClosed(2000);
      assert.equal(closed, true, 'connection closed after 413');
      assertCloseAnnounced(r, closed, '413');
    } finally { c.destroy(); }
    assert.deepEqual(ids(out), []);
  });
});

// ---------------------------------------------------------------------------------------

describe('http: bad bodies -> 400 JSON error, no handler runs (all or nothing)', () => {
  let d;
  let out;
  before(async () => {
    out = outPath();
    d = await startDaemon({ script: writeScript(SCRIPT), env: { OUT: out }, args: ['--max-body', String(MAX_BODY)] });
  });
  after(async () => { await d?.stop(); });
  beforeEach(() => clearOut(out));
  afterEach(async () => { await assertAlive(d); });

  const good = () => egEvent();
  const goodSR = () => signalrEvent('Connected');
  const js = (v) => JSON.stringify(v);
  const wrap = (inner) => `[${js(good())},${inner}]`;
  const nested = (n) => `[{"id":"deep","eventType":"T","eventTime":"2024-01-01T00:00:00Z","data":${'['.repeat(n)}${']'.repeat(n)}}]`;
  const utf8Bad = (bytes) => Buffer.concat([
    Buffer.from(`[{"id":"u1","eventType":"T","eventTime":"2024-01-01T00:00:00Z","subject":"a`),
    Buffer.from(bytes), Buffer.from('b","data":{}}]'),
  ]);

  const JSONERR = /json|pars|syntax|unexpected|invalid|malformed/i;
  const cases = [
    { name: 'not JSON at all', body: 'this is not json', kw: JSONERR },
    { name: 'truncated JSON', body: `[${js(good())}`, kw: JSONERR },
    { name: 'empty body', body: '', kw: /empty|json|pars|body/i },
    { name: 'trailing garbage after the array', body: `[${js(good())}]x`, kw: /json|trailing|garbage|pars|unexpected/i },
    { name: 'two JSON documents', body: `[${js(good())}] [${js(good())}]`, kw: /json|trailing|garbage|pars|unexpected/i },
    { name: 'invalid UTF-8: 0xFF byte', body: utf8Bad([0xff]), kw: /utf-?8|encoding/i },
    { name: 'invalid UTF-8: overlong encoding of "/"', body: utf8Bad([0xc0, 0xaf]), kw: /utf-?8|encoding/i },
    { name: 'invalid UTF-8: UTF-16 surrogate (CESU-8)', body: utf8Bad([0xed, 0xa0, 0x80]), kw: /utf-?8|encoding/i },
    { name: 'invalid UTF-8: truncated sequence', body: utf8Bad([0xe2, 0x82]), kw: /utf-?8|encoding/i },
    { name: 'invalid UTF-8: code point above U+10FFFF', body: utf8Bad([0xf4, 0x90, 0x80, 0x80]), kw: /utf-?8|encoding/i },
    { name: 'invalid UTF-8 in a second event', body: Buffer.concat([Buffer.from(`[${js(good())},`), utf8Bad([0x80]).subarray(1)]), kw: /utf-?8|encoding/i },
    { name: 'nesting deeper than 64 (200 levels)', body: nested(200), kw: /nest|depth|deep/i },
    { name: 'nesting 30000 levels (no stack overflow)', body: nested(30000), kw: /nest|depth|deep/i },
    { name: 'an object instead of an array', body: js(good()), kw: /array/i },
    { name: 'a number instead of an array', body: '42', kw: /array/i },
    { name: 'null instead of an array', body: 'null', kw: /array/i },
    { name: 'a string instead of an array', body: '"[]"', kw: /array/i },
    { name: 'array element is a number', body: wrap('42'), kw: /object/i, index: 1 },
    { name: 'array element is an array', body: wrap(js([good()])), kw: /object/i, index: 1 },
    { name: 'array element is null', body: wrap('null'), kw: /object/i, index: 1 },
    { name: 'event without id', body: wrap(js({ ...good(), id: undefined })), kw: /\bid\b/, index: 1 },
    { name: 'event with empty id', body: wrap(js({ ...good(), id: '' })), kw: /\bid\b/, index: 1 },
    { name: 'event with numeric id', body: wrap(js({ ...good(), id: 7 })), kw: /\bid\b/, index: 1 },
    { name: 'event without eventType', body: wrap(js({ ...good(), eventType: undefined })), kw: /eventType/i, index: 1 },
    { name: 'event with empty eventType', body: wrap(js({ ...good(), eventType: '' })), kw: /eventType/i, index: 1 },
    { name: 'event with non-string eventType', body: wrap(js({ ...good(), eventType: ['x'] })), kw: /eventType/i, index: 1 },
    { name: 'event without eventTime', body: wrap(js({ ...good(), eventTime: undefined })), kw: /eventTime|time/i, index: 1 },
    { name: 'eventTime "yesterday"', body: wrap(js({ ...good(), eventTime: 'yesterday' })), kw: /eventTime|time/i, index: 1 },
    { name: 'eventTime empty', body: wrap(js({ ...good(), eventTime: '' })), kw: /eventTime|time/i, index: 1 },
    { name: 'eventTime a number', body: wrap(js({ ...good(), eventTime: 1717171717 })), kw: /eventTime|time/i, index: 1 },
    { name: 'eventTime month 13', body: wrap(js({ ...good(), eventTime: '2019-13-10T18:41:00Z' })), kw: /eventTime|time/i, index: 1 },
    { name: 'eventTime hour 25', body: wrap(js({ ...good(), eventTime: '2019-06-10T25:41:00Z' })), kw: /eventTime|time/i, index: 1 },
    { name: 'eventTime with garbage after it', body: wrap(js({ ...good(), eventTime: '2019-06-10T18:41:00Zjunk' })), kw: /eventTime|time/i, index: 1 },
    { name: 'SignalR event whose data is a string', body: wrap(js({ ...goodSR(), data: 'hello' })), kw: /data|hubName|connectionId/i, index: 1 },
    { name: 'SignalR event without data', body: wrap(js({ ...goodSR(), data: undefined })), kw: /data|hubName|connectionId/i, index: 1 },
    { name: 'SignalR event without hubName', body: wrap(js(signalrEvent('Disconnected', {}, { hubName: undefined }))), kw: /hubName/i, index: 1 },
    { name: 'SignalR event with numeric connectionId', body: wrap(js(signalrEvent('Connected', {}, { connectionId: 12 }))), kw: /connectionId/i, index: 1 },
    { name: 'SignalR event without connectionId', body: wrap(js(signalrEvent('Connected', {}, { connectionId: undefined }))), kw: /connectionId/i, index: 1 },
    { name: 'validation event mixed with another event', body: js([good(), validationEvent()]), kw: /validation/i },
    { name: 'validation event mixed with another event (validation header)', body: js([validationEvent(), good()]), headers: { 'aeg-event-type': 'SubscriptionValidation' }, kw: /validation/i },
    { name: 'validation event without data.validationCode', body: js([validationEvent({ validationUrl: 'https://x.invalid' })]), kw: /validationCode/i, index: 0 },
    { name: 'validation event with numeric validationCode (header form)', body: js([validationEvent({ validationCode: 5 })]), headers: { 'aeg-event-type': 'SubscriptionValidation' }, kw: /validationCode/i, index: 0 },
    { name: 'validation event without data (header form)', body: js([{ ...validationEvent(), data: undefined }]), headers: { 'aeg-event-type': 'SubscriptionValidation' }, kw: /validationCode|data/i, index: 0 },
    { name: 'unknown aeg-event-type value', body: js([good()]), headers: { 'aeg-event-type': 'Bogus' }, kw: /aeg-event-type|event.?type/i },
  ];

  for (const c of cases) {
    it(`${c.name} -> 400`, async () => {
      const r = await post(d.port, EVENTS, c.body, c.headers ?? NOTIFY);
      assert.equal(r.status, 400, `status ${r.status}, body ${r.text}`);
      assertFraming(assert, r);
      assert.match(r.headers['content-type'] || '', /^application\/json/i, 'error body is JSON');
      let j;
      assert.doesNotThrow(() => { j = JSON.parse(r.text); }, `error body parses as JSON: ${r.text}`);
      assert.equal(typeof j.error, 'string', `"error" is a string: ${r.text}`);
      assert.match(j.error, c.kw, `error message names the problem: ${j.error}`);
      if (c.index !== undefined) assert.equal(j.index, c.index, `"index" of the offending event: ${r.text}`);
      assert.deepEqual(readRecords(out), [], 'no handler ran for any event of the request');
    });
  }

  it('empty array [] -> 200, nothing runs', async () => {
    const r = await post(d.port, EVENTS, '[]', NOTIFY);
    assert.equal(r.status, 200, r.text);
    assertFraming(assert, r);
    assert.deepEqual(readRecords(out), []);
  });

  it('whitespace around the array is fine', async () => {
    const e = good();
    const r = await post(d.port, EVENTS, ` \r\n\t[ ${js(e)} ]\n\n `, NOTIFY);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(ids(out), [e.id]);
  });

  it('moderate nesting (30 levels inside data) is fine', async () => {
    let data = 1;
    for (let i = 0; i < 30; i++) data = { k: [data] };
    const e = egEvent({ data });
    const r = await post(d.port, EVENTS, [e], NOTIFY);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(ids(out), [e.id]);
  });

  it('a SignalR event without userId (anonymous client) is fine', async () => {
    const e = signalrEvent('Connected', {}, { userId: undefined });
    const r = await post(d.port, EVENTS, [e], NOTIFY);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(ids(out), [e.id]);
  });
});

// ---------------------------------------------------------------------------------------

describe('http: content types', () => {
  let d;
  let out;
  before(async () => {
    out = outPath();
    d = await startDaemon({ script: writeScript(SCRIPT), env: { OUT: out } });
  });
  after(async () => { await d?.stop(); });
  beforeEach(() => clearOut(out));
  afterEach(async () => { await assertAlive(d); });

  for (const ct of ['text/plain', 'application/xml', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'text/json-ish', 'application/jsonx']) {
    it(`Content-Type ${ct} -> 415`, async () => {
      const r = await post(d.port, EVENTS, [egEvent()], { ...NOTIFY, 'Content-Type': ct });
      assert.equal(r.status, 415, r.text);
      assertFraming(assert, r);
      assert.deepEqual(readRecords(out), []);
    });
  }

  for (const ct of ['application/json', 'application/json; charset=utf-8', 'application/json;charset=UTF-8', 'Application/JSON', 'application/json; foo="bar"']) {
    it(`Content-Type ${ct} is JSON -> 200`, async () => {
      const e = egEvent();
      const r = await post(d.port, EVENTS, [e], { ...NOTIFY, 'Content-Type': ct });
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(ids(out), [e.id]);
    });
  }

  it('no Content-Type at all is taken as JSON -> 200', async () => {
    const e = egEvent();
    const { responses } = await rawExchange(d.port, buildRequest({ body: [e], headers: { ...NOTIFY, 'Content-Type': undefined } }));
    assert.equal(responses[0].status, 200, responses[0].text);
    assert.deepEqual(ids(out), [e.id]);
  });

  it('application/cloudevents+json and cloudevents-batch+json are not refused as media types', async () => {
    const ce = { specversion: '1.0', id: 'ce-1', source: '/test', type: 'Contoso.Test', time: '2024-01-01T00:00:00Z', data: { a: 1 } };
    const r1 = await post(d.port, EVENTS, ce, { 'Content-Type': 'application/cloudevents+json; charset=utf-8' });
    assert.notEqual(r1.status, 415, r1.text);
    const r2 = await post(d.port, EVENTS, [ce], { 'Content-Type': 'application/cloudevents-batch+json; charset=utf-8' });
    assert.notEqual(r2.status, 415, r2.text);
  });
});

// ---------------------------------------------------------------------------------------

describe('http: --secret', () => {
  const SECRET = 's3cr3t-Key_1';
  let d;
  let out;
  before(async () => {
    out = outPath();
    d = await startDaemon({ script: writeScript(SCRIPT), env: { OUT: out }, args: ['--secret', SECRET] });
  });
  after(async () => { await d?.stop(); });
  beforeEach(() => clearOut(out));

  const denied = [
    ['no credential', EVENTS, {}],
    ['wrong ?code=', `${EVENTS}?code=nope`, {}],
    ['empty ?code=', `${EVENTS}?code=`, {}],
    ['?code= prefix of the secret', `${EVENTS}?code=${SECRET.slice(0, -1)}`, {}],
    ['?code= secret plus a byte', `${EVENTS}?code=${SECRET}x`, {}],
    ['wrong aeg-sas-key', EVENTS, { 'aeg-sas-key': 'nope' }],
    ['aeg-sas-key prefix of the secret', EVENTS, { 'aeg-sas-key': SECRET.slice(0, -1) }],
    ['secret in another query parameter', `${EVENTS}?key=${SECRET}`, {}],
    ['secret in another header', EVENTS, { 'x-functions-key': SECRET }],
  ];
  for (const [name, p, h] of denied) {
    it(`${name} -> 401, no handler`, async () => {
      const r = await post(d.port, p, [egEvent()], { ...NOTIFY, ...h });
      assert.equal(r.status, 401, r.text);
      assertFraming(assert, r);
      assert.deepEqual(readRecords(out), []);
    });
  }

  it('the right secret in ?code= -> 200', async () => {
    const e = egEvent();
    const r = await post(d.port, `${EVENTS}?code=${SECRET}`, [e], NOTIFY);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(ids(out), [e.id]);
  });

  it('the right secret in ?code= among other query parameters -> 200', async () => {
    const e = egEvent();
    const r = await post(d.port, `${EVENTS}?api-version=2018-01-01&code=${SECRET}&z=1`, [e], NOTIFY);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(ids(out), [e.id]);
  });

  it('the right secret in aeg-sas-key -> 200', async () => {
    const e = egEvent();
    const r = await post(d.port, EVENTS, [e], { ...NOTIFY, 'aeg-sas-key': SECRET });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(ids(out), [e.id]);
  });

  it('validation handshake also needs the secret', async () => {
    const [v] = loadData('eventgrid-validation.json');
    const h = { 'aeg-event-type': 'SubscriptionValidation' };
    const r1 = await post(d.port, EVENTS, [v], h);
    assert.equal(r1.status, 401, r1.text);
    const r2 = await post(d.port, `${EVENTS}?code=${SECRET}`, [v], h);
    assert.equal(r2.status, 200, r2.text);
    assert.deepEqual(r2.json(), { validationResponse: v.data.validationCode });
  });

  it('Expect: 100-continue without the secret -> 401 without a 100', async () => {
    const c = await RawConn.open(d.port);
    try {
      c.write(buildRequest({ headers: { ...NOTIFY, Expect: '100-continue', 'Content-Length': '2' } }));
      const r = await c.response(3000);
      assert.equal(r.status, 401, `expected a final 401 instead of ${r.status}`);
    } finally { c.destroy(); }
  });

  it('the secret does not leak into the log', async () => {
    await post(d.port, `${EVENTS}?code=${SECRET}`, [egEvent()], NOTIFY);
    await post(d.port, `${EVENTS}?code=${SECRET}x`, [egEvent()], NOTIFY);
    assert.ok(!d.stderr().includes(SECRET), 'stderr must not contain the secret');
  });
});

describe('http: secret from LUAHOOK_SECRET, and URL-encoded secrets', () => {
  let d1;
  let d2;
  const ENVSECRET = 'from-env-42';
  const SPECIAL = 'a/b=c+d&e';
  before(async () => {
    d1 = await startDaemon({ script: writeScript('function on_event(ev) end'), env: { LUAHOOK_SECRET: ENVSECRET } });
    d2 = await startDaemon({ script: writeScript('function on_event(ev) end'), args: ['--secret', SPECIAL] });
  });
  after(async () => { await d1?.stop(); await d2?.stop(); });

  it('LUAHOOK_SECRET works like --secret', async () => {
    assert.equal((await post(d1.port, EVENTS, [egEvent()], NOTIFY)).status, 401);
    assert.equal((await post(d1.port, `${EVENTS}?code=wrong`, [egEvent()], NOTIFY)).status, 401);
    assert.equal((await post(d1.port, `${EVENTS}?code=${ENVSECRET}`, [egEvent()], NOTIFY)).status, 200);
    assert.equal((await post(d1.port, EVENTS, [egEvent()], { ...NOTIFY, 'aeg-sas-key': ENVSECRET })).status, 200);
  });

  it('?code= is percent-decoded before comparing', async () => {
    const r = await post(d2.port, `${EVENTS}?code=${encodeURIComponent(SPECIAL)}`, [egEvent()], NOTIFY);
    assert.equal(r.status, 200, `secret ${SPECIAL} sent as ${encodeURIComponent(SPECIAL)}: ${r.text}`);
    const r2 = await post(d2.port, EVENTS, [egEvent()], { ...NOTIFY, 'aeg-sas-key': SPECIAL });
    assert.equal(r2.status, 200, r2.text);
    const r3 = await post(d2.port, `${EVENTS}?code=a/b`, [egEvent()], NOTIFY);
    assert.equal(r3.status, 401, r3.text);
  });
});

// ---------------------------------------------------------------------------------------

describe('http: malformed requests -> 400 and closed', () => {
  let d;
  before(async () => { d = await startDaemon({ script: writeScript('function on_event(ev) end') }); });
  after(async () => { await d?.stop(); });
  afterEach(async () => { await assertAlive(d); });

  const bad = [
    ['garbage request line', 'GARBAGE\r\n\r\n'],
    ['garbage request line (binary)', Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x0d, 0x0a, 0x0d, 0x0a])],
    ['header line without a colon', 'POST /api/events HTTP/1.1\r\nHost: x\r\nThisIsNotAHeader\r\n\r\n'],
    ['non-numeric Content-Length', 'POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n'],
    ['Content-Length and Transfer-Encoding: chunked together', 'POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n[]\r\n0\r\n\r\n'],
    ['two different Content-Length headers', 'POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n[] '],
    ['bad chunk size', 'POST /api/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n[]\r\n0\r\n\r\n'],
    ['NUL in the request target', 'GET /health\0z HTTP/1.1\r\nHost: x\r\n\r\n'],
  ];
  for (const [name, bytes] of bad) {
    it(`${name} -> 400, connection closed`, async () => {
      const c = await RawConn.open(d.port);
      try {
        c.write(bytes);
        const r = await c.response(3000);
        assert.equal(r.status, 400, `${r.status} ${r.text}`);
        assertFraming(assert, r);
        const closed = await c.waitClosed(2000);
        assert.equal(closed, true, 'connection closed after a malformed request');
        assertCloseAnnounced(r, closed, name);
      } finally { c.destroy(); }
    });
  }

  it('200 connections reset right after connecting (some mid-request) do not hurt the daemon', async () => {
    const done = [];
    for (let i = 0; i < 200; i++) {
      done.push(new Promise((resolve) => {
        const s = net.connect(d.port, '127.0.0.1');
        s.on('error', () => resolve());
        s.on('close', () => resolve());
        s.on('connect', () => {
          if (i % 2) s.write('POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n[{');
          s.resetAndDestroy();
        });
      }));
    }
    await Promise.race([Promise.all(done), sleep(5000)]);
    await sleep(100);
  });

  it('a 200 KB header -> 431 (or 400/413) and closed', async () => {
    const c = await RawConn.open(d.port);
    try {
      c.write(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(200 * 1024)}\r\n\r\n`);
      const r = await c.response(3000);
      assert.ok([431, 400, 413].includes(r.status), `status ${r.status}`);
      assert.equal(await c.waitClosed(2000), true, 'closed');
    } finally { c.destroy(); }
  });

  it('a client that disconnects mid-body does not hurt the daemon', async () => {
    const c = await RawConn.open(d.port);
    c.write(buildRequest({ headers: { ...NOTIFY, 'Content-Length': '1000' } }));
    c.write('[{"id":"half');
    await sleep(50);
    c.destroy();
    await sleep(50);
  });
});

// ---------------------------------------------------------------------------------------

describe('http: slow clients', () => {
  let d;
  before(async () => {
    d = await startDaemon({ script: writeScript('function on_event(ev) end'), args: ['--header-timeout-ms', '1000', '--body-timeout-ms', '1000'] });
  });
  after(async () => { await d?.stop(); });
  afterEach(async () => { await assertAlive(d); });

  it('one header byte per 300 ms is cut off (408 or close) while another client is served', async () => {
    const slow = await RawConn.open(d.port);
    const t0 = Date.now();
    const bytes = Buffer.from('POST /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa');
    let i = 0;
    const dripper = setInterval(() => {
      if (i < bytes.length && !slow.closed) slow.write(bytes.subarray(i, ++i));
    }, 300);
    try {
      await sleep(500);
      const t1 = Date.now();
      const r = await post(d.port, EVENTS, [egEvent()], NOTIFY, { timeoutMs: 3000 });
      assert.equal(r.status, 200, 'the other client is served meanwhile');
      assert.ok(Date.now() - t1 < 900, `the other client waited ${Date.now() - t1} ms`);
      const closed = await slow.waitClosed(4000);
      const elapsed = Date.now() - t0;
      assert.equal(closed, true, `slow client still connected after ${elapsed} ms (header timeout 1000 ms)`);
      assert.ok(elapsed >= 700, `cut off too early (${elapsed} ms)`);
      assert.ok(elapsed < 3500, `cut off too late (${elapsed} ms)`);
      if (slow.all.length) assert.equal(slow.all[0].status, 408, `only 408 may be answered: ${slow.all[0].status}`);
    } finally {
      clearInterval(dripper);
      slow.destroy();
    }
  });

  it('a body that stalls is cut off after --body-timeout-ms (408 or close)', async () => {
    const c = await RawConn.open(d.port);
    const t0 = Date.now();
    try {
      c.write(buildRequest({ headers: { ...NOTIFY, 'Content-Length': '100' } }));
      c.write('[{"id":');
      const closed = await c.waitClosed(4000);
      const elapsed = Date.now() - t0;
      assert.equal(closed, true, `stalled body still connected after ${elapsed} ms`);
      assert.ok(elapsed >= 700 && elapsed < 3500, `cut off after ${elapsed} ms (body timeout 1000 ms)`);
      if (c.all.length) assert.equal(c.all[0].status, 408);
    } finally { c.destroy(); }
  });

  it('a connection that never sends anything is closed', async () => {
    const c = await RawConn.open(d.port);
    try {
      assert.equal(await c.waitClosed(4000), true, 'silent connection closed');
    } finally { c.destroy(); }
  });
});

describe('http: idle keep-alive connections', () => {
  let d;
  before(async () => {
    d = await startDaemon({ script: writeScript('function on_event(ev) end'), args: ['--header-timeout-ms', '5000', '--idle-timeout-ms', '1000'] });
  });
  after(async () => { await d?.stop(); });
  afterEach(async () => { await assertAlive(d); });

  it('an idle keep-alive connection is closed after --idle-timeout-ms, not before', async () => {
    const c = await RawConn.open(d.port);
    try {
      c.write(buildRequest({ method: 'GET', path: '/healthz' }));
      assert.equal((await c.finalResponse(3000)).status, 200);
      const t0 = Date.now();
      await sleep(400);
      c.write(buildRequest({ method: 'GET', path: '/healthz' }));
      const r = await c.finalResponse(3000).catch((e) => e);
      assert.ok(!(r instanceof Error), `connection idle 400 ms < 1000 ms must still work: ${r}`);
      assert.equal(r.status, 200);
      const closed = await c.waitClosed(4000);
      assert.equal(closed, true, 'idle connection closed');
      const idle = c.closedAt - t0 - 400;
      assert.ok(idle >= 800, `closed after ${idle} ms idle, before the 1000 ms idle timeout`);
    } finally { c.destroy(); }
  });
});

describe('http: defaults sized for Event Grid (1 MB batches)', () => {
  let d;
  let out;
  before(async () => {
    out = outPath();
    d = await startDaemon({ script: writeScript(`${RECORDER}\nfunction on_event(ev) local f = io.open(os.getenv("OUT"), "a"); f:write(ev.id, "\\n"); f:close() end\n`), env: { OUT: out } });
  });
  after(async () => { await d?.stop(); });
  beforeEach(() => clearOut(out));
  afterEach(async () => { await assertAlive(d); });

  it('a 1 MiB body is accepted with the default --max-body', async () => {
    const e = egEvent({ data: { pad: '' } });
    const base = Buffer.byteLength(JSON.stringify([e]));
    e.data.pad = 'x'.repeat(1024 * 1024 - base);
    const body = JSON.stringify([e]);
    assert.equal(Buffer.byteLength(body), 1024 * 1024);
    const r = await post(d.port, EVENTS, body, NOTIFY, { timeoutMs: 10000 });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(readOut(out), [e.id]);
  });

  it('a 1000-event batch runs every event in order', async () => {
    const evs = Array.from({ length: 1000 }, (_, i) => egEvent({ id: `big-${i}` }));
    const r = await post(d.port, EVENTS, evs, NOTIFY, { timeoutMs: 20000 });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(readOut(out), evs.map((e) => e.id));
  });
});

describe('http: --max-connections', () => {
  let d;
  before(async () => {
    d = await startDaemon({ script: writeScript('function on_event(ev) end'), args: ['--max-connections', '3'] });
  });
  after(async () => { await d?.stop(); });

  it('never more than N connections: an extra one is refused (503/closed) or an idle one makes room', async () => {
    const held = [];
    try {
      for (let i = 0; i < 3; i++) held.push(await RawConn.open(d.port));
      await sleep(100);
      assert.ok(held.every((c) => !c.closed), 'connections within the limit stay open');
      const r = await post(d.port, EVENTS, [egEvent()], NOTIFY, { timeoutMs: 3000 }).catch((e) => e);
      await sleep(100);
      const open = held.filter((c) => !c.closed).length;
      if (!(r instanceof Error) && r.status === 200) {
        assert.ok(open <= 2, `the 4th connection was served while all 3 idle ones stayed open (${open})`);
      } else {
        assert.ok(r instanceof Error || r.status === 503, `4th connection: ${r.status ?? r.message}`);
      }
    } finally {
      for (const c of held) c.destroy();
    }
    await sleep(200);
    assert.equal((await post(d.port, EVENTS, [egEvent()], NOTIFY, { timeoutMs: 3000 })).status, 200);
  });

  it('with N connections busy (mid-request), an extra one is refused (503 or closed), none is dropped', async () => {
    const busy = [];
    try {
      for (let i = 0; i < 3; i++) {
        const c = await RawConn.open(d.port);
        c.write(buildRequest({ headers: { ...NOTIFY, 'Content-Length': '600' } }));
        c.write('[');
        busy.push(c);
      }
      await sleep(150);
      const r = await post(d.port, EVENTS, [egEvent()], NOTIFY, { timeoutMs: 3000 }).catch((e) => e);
      assert.ok(r instanceof Error || r.status === 503, `extra connection must not be served, got ${r.status ?? r.message}`);
      if (!(r instanceof Error)) assertFraming(assert, r);
      assert.ok(busy.every((c) => !c.closed), 'busy connections are not dropped for a new one');
      // the busy ones can still finish their requests
      for (const c of busy) {
        const e = JSON.stringify([egEvent()]);
        c.write(e.slice(1) + ' '.repeat(600 - Buffer.byteLength(e))); // '[' was sent already
      }
      for (const c of busy) assert.equal((await c.finalResponse(3000)).status, 200);
    } finally {
      for (const c of busy) c.destroy();
    }
    await sleep(200);
    assert.equal((await post(d.port, EVENTS, [egEvent()], NOTIFY, { timeoutMs: 3000 })).status, 200);
    await assertAlive(d);
  });
});
