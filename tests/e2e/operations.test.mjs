// Operating the daemon, end to end against the real binary: the dedup window, --max-inflight
// backpressure (503 + Retry-After), GET /metrics and /healthz (values checked exactly against
// what the test sent), --log-format json with the access log, graceful shutdown (SIGTERM,
// on_shutdown, --shutdown-grace-ms, a second SIGTERM) and slow or idle clients.
// Written against DESIGN.md and PROTOCOL.md section 4, not against the code.
import { describe, it, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import {
  RECORDER, startDaemon, writeScript, outPath, readRecords, clearOut, tmpDir,
  post, get, egEvent, signalrEvent, RawConn, buildRequest, sleep, waitFor, SANITIZER_RE,
} from './lib.mjs';

const EVENTS = '/api/events';
const NOTIFY = { 'aeg-event-type': 'Notification' };
const CE = 'application/cloudevents+json; charset=utf-8';

/** Parses Prometheus text: {`name{labels}` or `name`: number}. Checks every line's shape. */
function parseMetrics(text) {
  const m = {};
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const x = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$/);
    assert.ok(x, `metrics line has the Prometheus text shape: ${JSON.stringify(line)}`);
    assert.ok(!(x[1] in m), `metric ${x[1]} appears once`);
    const v = Number(x[2]);
    assert.ok(!Number.isNaN(v) || x[2] === '+Inf', `value of ${x[1]}: ${x[2]}`);
    m[x[1]] = v;
  }
  return m;
}

async function scrape(port) {
  const r = await get(port, '/metrics', {}, { timeoutMs: 3000 });
  assert.equal(r.status, 200, r.text);
  assert.match(r.headers['content-type'] || '', /^text\/plain/);
  return { text: r.text, m: parseMetrics(r.text) };
}

const ev = (id, over = {}) => egEvent({ id, ...over });

/** Runs per id from 'run' records in OUT. */
function runsById(out) {
  const n = {};
  for (const r of readRecords(out)) if (r.tag === 'run') n[r.value.id] = (n[r.value.id] || 0) + 1;
  return n;
}

// ---------------------------------------------------------------------------------------

const DEDUP_SCRIPT = `${RECORDER}
local FLAG = assert(os.getenv('FLAG'))
local function flagged()
  local f = io.open(FLAG)
  if f then f:close() return true end
  return false
end
local function handle(ev)
  record('run', { id = ev.id, source = ev.source })
  local d = ev.data
  if type(d) == 'table' and d.fail and flagged() then error('failing while the flag is set: ' .. ev.id) end
  if type(d) == 'table' and d.reject then luahook.reject('rejected ' .. ev.id) end
end
on_connected = handle
on_disconnected = handle
on_event = handle
`;

describe('dedup window', () => {
  let d;
  let off;
  let small;
  let out;
  let flag;
  before(async () => {
    const dir = tmpDir();
    out = path.join(dir, 'out.txt');
    flag = path.join(dir, 'flag');
    const script = writeScript(DEDUP_SCRIPT);
    const env = { OUT: out, FLAG: flag };
    [d, off, small] = await Promise.all([
      startDaemon({ script, env }),
      startDaemon({ script, env, args: ['--dedup-window', '0'] }),
      startDaemon({ script, env, args: ['--dedup-window', '2'] }),
    ]);
  });
  after(async () => { await Promise.all([d?.stop(), off?.stop(), small?.stop()]); });
  beforeEach(() => { clearOut(out); fs.rmSync(flag, { force: true }); });

  it('a batch where event 2 fails -> 500; redelivered after the fix -> 200 and only event 2 runs again', async () => {
    const batch = [ev('dd-1'), ev('dd-2', { data: { fail: true } }), ev('dd-3')];
    fs.writeFileSync(flag, '1');
    let r = await post(d.port, EVENTS, batch, { ...NOTIFY, 'aeg-delivery-count': '0' });
    assert.equal(r.status, 500, r.text);
    assert.deepEqual(runsById(out), { 'dd-1': 1, 'dd-2': 1, 'dd-3': 1 }, 'every event of the batch ran once');

    fs.rmSync(flag);
    r = await post(d.port, EVENTS, batch, { ...NOTIFY, 'aeg-delivery-count': '1' });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(runsById(out), { 'dd-1': 1, 'dd-2': 2, 'dd-3': 1 }, 'only the failed event ran again');

    r = await post(d.port, EVENTS, batch, { ...NOTIFY, 'aeg-delivery-count': '2' });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(runsById(out), { 'dd-1': 1, 'dd-2': 2, 'dd-3': 1 }, 'a third delivery runs nothing');
  });

  it('an event that keeps failing runs on every delivery (failures are not remembered)', async () => {
    fs.writeFileSync(flag, '1');
    const batch = [ev('keeps-failing', { data: { fail: true } })];
    for (let i = 0; i < 3; i++) {
      const r = await post(d.port, EVENTS, batch, NOTIFY);
      assert.equal(r.status, 500, r.text);
    }
    assert.deepEqual(runsById(out), { 'keeps-failing': 3 });
  });

  it('a rejected event is not remembered either', async () => {
    const batch = [ev('rejected-1', { data: { reject: true } })];
    for (let i = 0; i < 2; i++) {
      const r = await post(d.port, EVENTS, batch, NOTIFY);
      assert.equal(r.status, 400, r.text);
    }
    assert.deepEqual(runsById(out), { 'rejected-1': 2 });
  });

  it('the key is source + id: the same id from another source runs', async () => {
    const a = ev('same-id', { topic: '/topics/a' });
    const b = ev('same-id', { topic: '/topics/b' });
    assert.equal((await post(d.port, EVENTS, [a], NOTIFY)).status, 200);
    assert.equal((await post(d.port, EVENTS, [b], NOTIFY)).status, 200);
    assert.equal((await post(d.port, EVENTS, [a, b], NOTIFY)).status, 200);
    const runs = readRecords(out).filter((r) => r.tag === 'run').map((r) => r.value.source);
    assert.deepEqual(runs, ['/topics/a', '/topics/b']);
  });

  it('CloudEvents are deduplicated too (source + id), across structured and binary mode', async () => {
    const e = { specversion: '1.0', id: 'ce-dup-1', source: '/ce/src', type: 'Contoso.X', data: { n: 1 } };
    assert.equal((await post(d.port, EVENTS, JSON.stringify(e), { 'Content-Type': CE })).status, 200);
    assert.equal((await post(d.port, EVENTS, JSON.stringify(e), { 'Content-Type': CE })).status, 200);
    const bin = await post(d.port, EVENTS, '{"n":1}', {
      'Content-Type': 'application/json', 'ce-specversion': '1.0', 'ce-id': 'ce-dup-1', 'ce-source': '/ce/src', 'ce-type': 'Contoso.X',
    });
    assert.equal(bin.status, 200, bin.text);
    assert.deepEqual(runsById(out), { 'ce-dup-1': 1 });
  });

  it('the same event twice in one batch runs once', async () => {
    const e = ev('twice-in-batch');
    const r = await post(d.port, EVENTS, [e, e], NOTIFY);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(runsById(out), { 'twice-in-batch': 1 });
  });

  it('--dedup-window 0: a redelivered batch runs every event again', async () => {
    const batch = [ev('off-1'), ev('off-2')];
    for (let i = 0; i < 2; i++) assert.equal((await post(off.port, EVENTS, batch, NOTIFY)).status, 200);
    assert.deepEqual(runsById(out), { 'off-1': 2, 'off-2': 2 });
  });

  it('--dedup-window 2: only the 2 most recent successes are remembered', async () => {
    for (const id of ['w-a', 'w-b', 'w-c']) assert.equal((await post(small.port, EVENTS, [ev(id)], NOTIFY)).status, 200);
    assert.equal((await post(small.port, EVENTS, [ev('w-c')], NOTIFY)).status, 200);
    assert.equal((await post(small.port, EVENTS, [ev('w-b')], NOTIFY)).status, 200);
    assert.deepEqual(runsById(out), { 'w-a': 1, 'w-b': 1, 'w-c': 1 }, 'b and c are still in the window');
    assert.equal((await post(small.port, EVENTS, [ev('w-a')], NOTIFY)).status, 200);
    assert.deepEqual(runsById(out), { 'w-a': 2, 'w-b': 1, 'w-c': 1 }, 'a had been pushed out');
  });
});

// ---------------------------------------------------------------------------------------

const SLEEP_SCRIPT = `${RECORDER}
function on_event(ev)
  record('start', ev.id)
  timer.sleep((type(ev.data) == 'table' and ev.data.ms) or 500)
  record('end', ev.id)
end
`;

describe('backpressure: --max-inflight', () => {
  let d;
  let out;
  before(async () => {
    out = outPath();
    d = await startDaemon({ script: writeScript(SLEEP_SCRIPT), env: { OUT: out }, args: ['--max-inflight', '2'] });
  });
  after(async () => { await d?.stop(); });
  beforeEach(() => clearOut(out));

  const started = (id) => readRecords(out).some((r) => r.tag === 'start' && r.value === id);

  it('past the limit -> 503 with Retry-After: 30 and nothing runs; served again once idle', async () => {
    const pa = post(d.port, EVENTS, [ev('bp-a', { data: { ms: 700 } })], NOTIFY);
    await waitFor(() => started('bp-a'), 3000, 'bp-a started');

    const b = [ev('bp-b1', { data: { ms: 10 } }), ev('bp-b2', { data: { ms: 10 } })];
    let r = await post(d.port, EVENTS, b, NOTIFY);
    assert.equal(r.status, 503, `1 in progress + 2 new > 2: ${r.status} ${r.text}`);
    assert.equal(r.headers['retry-after'], '30');
    assert.equal(typeof r.json().error, 'string');

    const pc = post(d.port, EVENTS, [ev('bp-c', { data: { ms: 500 } })], NOTIFY);
    await waitFor(() => started('bp-c'), 3000, 'bp-c started (1 + 1 <= 2 is accepted)');

    const { m } = await scrape(d.port);
    assert.equal(m.luahook_events_in_flight, 2, 'two events in flight');

    r = await post(d.port, EVENTS, [ev('bp-d', { data: { ms: 10 } })], NOTIFY);
    assert.equal(r.status, 503, `2 in progress + 1 new > 2: ${r.status}`);
    assert.equal(r.headers['retry-after'], '30');

    assert.equal((await pa).status, 200);
    assert.equal((await pc).status, 200);
    const ids = readRecords(out).map((x) => x.value);
    assert.ok(!ids.includes('bp-b1') && !ids.includes('bp-b2') && !ids.includes('bp-d'), `refused deliveries ran nothing: ${ids}`);

    r = await post(d.port, EVENTS, b, NOTIFY);
    assert.equal(r.status, 200, 'the refused batch is served once the others finished');
    r = await post(d.port, EVENTS, [ev('bp-d', { data: { ms: 10 } })], NOTIFY);
    assert.equal(r.status, 200);
    const { m: m2 } = await scrape(d.port);
    assert.equal(m2.luahook_events_in_flight, 0);
    assert.equal(m2['luahook_requests_total{code="503"}'], 2);
  });

  it('with nothing in progress, a batch larger than the limit is still served', async () => {
    const batch = [1, 2, 3].map((i) => ev(`big-${i}`, { data: { ms: 10 } }));
    const r = await post(d.port, EVENTS, batch, NOTIFY);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(readRecords(out).filter((x) => x.tag === 'end').map((x) => x.value), ['big-1', 'big-2', 'big-3']);
  });

  it('health and metrics are answered while the daemon is at its limit', async () => {
    const pa = post(d.port, EVENTS, [ev('hm-a', { data: { ms: 600 } }), ev('hm-b', { data: { ms: 10 } })], NOTIFY);
    await waitFor(() => started('hm-a'), 3000, 'hm-a started');
    const h = await get(d.port, '/healthz', {}, { timeoutMs: 2000 });
    assert.equal(h.status, 200);
    assert.equal(h.json().events_in_flight, 2);
    const r = await post(d.port, EVENTS, [ev('hm-c')], NOTIFY);
    assert.equal(r.status, 503);
    assert.equal((await pa).status, 200);
  });
});

// ---------------------------------------------------------------------------------------

const METRICS_SCRIPT = `${RECORDER}
function on_connected(ev)
  if ev.data.userId == 'boom' then error('boom') end
  record('connected', ev.id)
end
-- no on_disconnected: those events count as no_handler
function on_event(ev)
  local mode = type(ev.data) == 'table' and ev.data.mode
  if mode == 'reject' then luahook.reject('not for us') end
  if mode == 'slow' then timer.sleep(2000) end
  if mode == 'get' then
    local res, err = http.get(ev.data.url, { timeout_ms = 2000 })
    record('get', { status = res and res.status, err = err })
  end
end
`;

describe('GET /metrics and /healthz', () => {
  let d;
  let out;
  let script;
  before(async () => {
    out = outPath();
    script = writeScript(METRICS_SCRIPT);
    d = await startDaemon({ script, env: { OUT: out }, args: ['--handler-timeout-ms', '200', '--no-reload'] });
  });
  after(async () => { await d?.stop(); });

  it('a fresh daemon: every series present, counters at 0', async () => {
    const { m } = await scrape(d.port);
    for (const t of ['connected', 'disconnected', 'other']) {
      for (const o of ['ok', 'error', 'rejected', 'timeout', 'duplicate', 'no_handler']) {
        assert.equal(m[`luahook_events_total{type="${t}",outcome="${o}"}`], 0, `${t}/${o}`);
      }
    }
    assert.equal(m.luahook_dedup_hits_total, 0);
    assert.equal(m.luahook_handler_duration_seconds_count, 0);
    assert.equal(m.luahook_handler_duration_seconds_sum, 0);
    assert.equal(m['luahook_handler_duration_seconds_bucket{le="+Inf"}'], 0);
    assert.equal(m.luahook_events_in_flight, 0);
    assert.equal(m['luahook_reloads_total{result="ok"}'], 0);
    assert.equal(m['luahook_reloads_total{result="error"}'], 0);
    assert.ok(m.luahook_lua_heap_bytes > 1000, `lua heap ${m.luahook_lua_heap_bytes}`);
    assert.ok(m.luahook_connections >= 1, 'the scrape itself is a connection');
    assert.ok(Object.keys(m).some((k) => k.startsWith('luahook_outbound_requests_total{outcome=')));
    assert.ok(!Object.keys(m).some((k) => k.startsWith('luahook_requests_total')), 'no request answered before this one');
  });

  it('counts exactly what was sent', async () => {
    const c = (id, user = 'u') => signalrEvent('Connected', { id }, { userId: user });
    const s = async (body, want, headers = NOTIFY) => {
      const r = await post(d.port, EVENTS, body, headers);
      assert.equal(r.status, want, `${JSON.stringify(body).slice(0, 80)}: ${r.text}`);
    };
    await s([c('m-c1'), c('m-c2'), c('m-c3')], 200);      // 3 connected ok
    await s([c('m-c4', 'boom')], 500);                     // 1 connected error
    await s([c('m-c1'), c('m-c2')], 200);                  // 2 connected duplicates
    await s([signalrEvent('Disconnected', { id: 'm-d1' })], 200); // 1 disconnected no_handler
    await s('this is not json', 400);                      // bad request 1
    const noId = egEvent();
    delete noId.id;
    await s([noId], 400);                                  // bad request 2
    await s([egEvent({ id: 'm-r1', data: { mode: 'reject' } })], 400); // 1 other rejected
    await s([egEvent({ id: 'm-t1', data: { mode: 'slow' } })], 500);   // 1 other timeout
    const nf = await get(d.port, '/nope');                 // 404
    assert.equal(nf.status, 404);

    const { m } = await scrape(d.port);
    const want = {
      connected: { ok: 3, error: 1, rejected: 0, timeout: 0, duplicate: 2, no_handler: 0 },
      disconnected: { ok: 0, error: 0, rejected: 0, timeout: 0, duplicate: 0, no_handler: 1 },
      other: { ok: 0, error: 0, rejected: 1, timeout: 1, duplicate: 0, no_handler: 0 },
    };
    for (const [t, outcomes] of Object.entries(want)) {
      for (const [o, n] of Object.entries(outcomes)) {
        assert.equal(m[`luahook_events_total{type="${t}",outcome="${o}"}`], n, `events_total ${t}/${o}`);
      }
    }
    const codes = Object.fromEntries(Object.entries(m)
      .filter(([k]) => k.startsWith('luahook_requests_total'))
      .map(([k, v]) => [k.match(/code="(\d+)"/)[1], v]));
    assert.deepEqual(codes, { 200: 4, 400: 3, 404: 1, 500: 2 }, 'requests_total by code (the first scrape is one 200)');
    assert.equal(m.luahook_dedup_hits_total, 2);

    // handler durations: the 6 events whose handler ran (3 ok, 1 error, 1 reject, 1 timeout)
    assert.equal(m.luahook_handler_duration_seconds_count, 6);
    assert.equal(m['luahook_handler_duration_seconds_bucket{le="+Inf"}'], 6);
    const buckets = Object.entries(m)
      .filter(([k]) => k.startsWith('luahook_handler_duration_seconds_bucket'))
      .map(([k, v]) => [k.match(/le="([^"]+)"/)[1], v]);
    assert.ok(buckets.length >= 5, 'several buckets');
    for (let i = 1; i < buckets.length; i++) {
      assert.ok(buckets[i][1] >= buckets[i - 1][1], `buckets are cumulative: ${JSON.stringify(buckets)}`);
    }
    const le = (x) => buckets.find(([b]) => Number(b) === x)?.[1];
    assert.equal(le(0.1), 5, `five quick handlers under 0.1 s: ${JSON.stringify(buckets)}`);
    assert.equal(le(1), 6, `the timed-out one (200 ms) under 1 s: ${JSON.stringify(buckets)}`);
    const sum = m.luahook_handler_duration_seconds_sum;
    assert.ok(sum >= 0.19 && sum < 1.5, `duration sum ${sum} includes the 200 ms timeout`);
    assert.equal(m.luahook_events_in_flight, 0);

    const { m: m2 } = await scrape(d.port);
    assert.equal(m2['luahook_requests_total{code="200"}'], 5, 'the previous scrape counted once');
  });

  it('outbound calls are counted by outcome', async () => {
    const srv = http.createServer((req, res) => { res.writeHead(204); res.end(); });
    await new Promise((r) => srv.listen(0, '127.0.0.1', r));
    const closed = net.createServer();
    await new Promise((r) => closed.listen(0, '127.0.0.1', r));
    const deadPort = closed.address().port;
    await new Promise((r) => closed.close(r));
    try {
      const before = (await scrape(d.port)).m;
      const okUrl = `http://127.0.0.1:${srv.address().port}/x`;
      const bad = `http://127.0.0.1:${deadPort}/`;
      clearOut(out);
      const r = await post(d.port, EVENTS, [
        egEvent({ data: { mode: 'get', url: okUrl } }),
        egEvent({ data: { mode: 'get', url: okUrl } }),
        egEvent({ data: { mode: 'get', url: bad } }),
      ], NOTIFY);
      assert.equal(r.status, 200, r.text);
      const gets = readRecords(out).filter((x) => x.tag === 'get').map((x) => x.value);
      assert.deepEqual(gets.map((g) => g.status ?? 'err'), [204, 204, 'err'], JSON.stringify(gets));
      const { m } = await scrape(d.port);
      const delta = (o) => m[`luahook_outbound_requests_total{outcome="${o}"}`] - before[`luahook_outbound_requests_total{outcome="${o}"}`];
      assert.equal(delta('ok'), 2);
      const outcomes = Object.keys(m).filter((k) => k.startsWith('luahook_outbound_requests_total{')).map((k) => k.match(/outcome="([^"]+)"/)[1]);
      const failed = outcomes.filter((o) => o !== 'ok').reduce((a, o) => a + delta(o), 0);
      assert.equal(failed, 1, 'one failed call');
      assert.ok(delta('connect') === 1 || delta('error') === 1, 'a refused connection counts as connect (or error)');
    } finally {
      srv.close();
    }
  });

  it('GET /healthz: JSON with status ok and the in-flight count', async () => {
    const r = await get(d.port, '/healthz');
    assert.equal(r.status, 200);
    assert.match(r.headers['content-type'] || '', /json/);
    const j = r.json();
    assert.equal(j.status, 'ok');
    assert.equal(j.events_in_flight, 0);
  });

  it('reloads are counted: a good SIGHUP reload -> ok 1, a broken one -> error 1', async () => {
    d.proc.kill('SIGHUP');
    await d.waitStderr(/script reloaded/, 3000);
    let { m } = await scrape(d.port);
    assert.equal(m['luahook_reloads_total{result="ok"}'], 1);
    assert.equal(m['luahook_reloads_total{result="error"}'], 0);
    const good = fs.readFileSync(script, 'utf8');
    fs.writeFileSync(script, `${good}\nfunction broken(\n`);
    try {
      d.proc.kill('SIGHUP');
      await d.waitStderr(/reload failed/, 3000);
      ({ m } = await scrape(d.port));
      assert.equal(m['luahook_reloads_total{result="ok"}'], 1);
      assert.equal(m['luahook_reloads_total{result="error"}'], 1);
      const h = (await get(d.port, '/healthz')).json();
      assert.equal(typeof h.last_reload_error, 'string');
    } finally {
      fs.writeFileSync(script, good);
    }
  });
});

// ---------------------------------------------------------------------------------------

const LOG_SCRIPT = `
function on_event(ev)
  local d = ev.data
  if d.mode == 'log' then log.info('hello from lua', { user = 'u1', n = 3 }) end
  if d.mode == 'error' then error('multi\\nline\\nerror') end
  if d.mode == 'long' then log.warn(string.rep('x', 20000)) end
  if d.mode == 'quotes' then log.info('a "quoted" \\\\ back\\tslash \\1 ctl') end
  if d.mode == 'spoof' then log.info('real message', { msg = 'spoofed', level = 'error', time = 'never' }) end
end
`;

describe('--log-format json', () => {
  let d;
  before(async () => {
    d = await startDaemon({ script: writeScript(LOG_SCRIPT), args: ['--log-format', 'json', '--max-body', '4096', '--header-timeout-ms', '500'] });
  });
  after(async () => { await d?.stop(); });

  const lines = () => d.stderr().split('\n').filter((l) => l.length > 0);
  const parsed = () => lines().map((l) => {
    try { return JSON.parse(l); } catch { return { unparsable: l }; }
  });

  it('every line is one JSON object with time, level, msg; access log per request', async () => {
    const sent = [
      [{ method: 'POST', path: EVENTS, body: [egEvent({ data: { mode: 'log' } }), egEvent({ data: { mode: 'x' } })] }, 200, 2],
      [{ method: 'POST', path: EVENTS, body: [egEvent({ data: { mode: 'error' } })] }, 500, 1],
      [{ method: 'POST', path: EVENTS, body: 'nope' }, 400],
      [{ method: 'GET', path: '/nowhere' }, 404],
      [{ method: 'GET', path: '/healthz' }, 200],
      [{ method: 'POST', path: EVENTS, body: [egEvent({ data: { mode: 'quotes' } })] }, 200, 1],
      [{ method: 'POST', path: EVENTS, body: 'x'.repeat(5000) }, 413],
    ];
    for (const [req, want] of sent) {
      const r = req.method === 'GET'
        ? await get(d.port, req.path)
        : await post(d.port, req.path, typeof req.body === 'string' ? req.body : JSON.stringify(req.body), NOTIFY);
      assert.equal(r.status, want, `${req.method} ${req.path}: ${r.text}`);
    }
    await waitFor(() => parsed().filter((x) => x.msg === 'request').length >= sent.length, 3000, 'access-log lines');
    const all = parsed();
    for (const x of all) {
      assert.ok(!x.unparsable, `not a JSON line: ${JSON.stringify(x.unparsable)}`);
      assert.equal(typeof x, 'object');
      assert.match(x.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/, `time of ${JSON.stringify(x)}`);
      assert.ok(['debug', 'info', 'warn', 'error'].includes(x.level), `level of ${JSON.stringify(x)}`);
      assert.equal(typeof x.msg, 'string');
    }
    assert.ok(all.some((x) => /listening on http:\/\/127\.0\.0\.1:\d+/.test(x.msg)), 'the listening line is JSON too');

    const access = all.filter((x) => x.msg === 'request');
    for (const a of access) {
      assert.equal(a.level, 'info');
      for (const k of ['method', 'path', 'status', 'ms']) assert.ok(k in a, `access log has ${k}: ${JSON.stringify(a)}`);
      assert.ok(Number.isFinite(Number(a.ms)) && Number(a.ms) >= 0, `ms ${a.ms}`);
    }
    const summary = access.map((a) => [a.method, a.path, Number(a.status), a.events === undefined ? undefined : Number(a.events)]);
    const has = (row) => summary.some((s) => JSON.stringify(s) === JSON.stringify(row));
    assert.ok(has(['POST', EVENTS, 200, 2]), `a 2-event 200: ${JSON.stringify(summary)}`);
    assert.ok(has(['POST', EVENTS, 500, 1]), `the failing delivery: ${JSON.stringify(summary)}`);
    assert.ok(summary.some(([m, p, s]) => m === 'POST' && p === EVENTS && s === 400), 'the 400');
    assert.ok(summary.some(([m, p, s]) => m === 'GET' && p === '/nowhere' && s === 404), 'the 404');
    assert.ok(summary.some(([m, p, s]) => m === 'GET' && p === '/healthz' && s === 200), 'the healthz');
    assert.ok(summary.some(([m, p, s]) => m === 'POST' && p === EVENTS && s === 413), 'the 413');

    const fromLua = all.find((x) => x.msg === 'hello from lua');
    assert.ok(fromLua, 'log.info from Lua is a JSON line');
    assert.equal(fromLua.level, 'info');
    assert.equal(fromLua.user, 'u1');
    assert.equal(String(fromLua.n), '3');
    const failed = all.find((x) => x.level === 'error' && JSON.stringify(x).includes('multi\\nline\\nerror'));
    assert.ok(failed, 'the handler error (with newlines) is one JSON line');
    assert.ok(all.some((x) => x.msg === 'a "quoted" \\ back\tslash \u0001 ctl'), 'quotes, backslashes, control characters escaped');
  });

  it('requests refused by the HTTP layer (408, 431, malformed 400) get an access-log line too', async () => {
    const before = parsed().filter((x) => x.msg === 'request').length;
    const slow = await RawConn.open(d.port);
    slow.write(`POST ${EVENTS} HTTP/1.1\r\nHo`);
    const big = await RawConn.open(d.port);
    big.write(`GET /healthz HTTP/1.1\r\nX-Big: ${'a'.repeat(20000)}\r\n\r\n`);
    const bad = await RawConn.open(d.port);
    bad.write('BLAH / HTTP/1.1\r\n\r\n');
    try {
      const codes = (await Promise.all([slow.response(3000), big.response(3000), bad.response(3000)])).map((r) => r.status);
      assert.equal(codes[0], 408);
      assert.ok([400, 431].includes(codes[1]), `big head -> ${codes[1]}`);
      assert.equal(codes[2], 400);
      await sleep(100);
      const access = parsed().filter((x) => x.msg === 'request').slice(before).map((x) => Number(x.status));
      assert.deepEqual(access.sort(), codes.sort(),
        'one access-log line per answered request (requests_total counts these, so the log should too)');
    } finally {
      for (const c of [slow, big, bad]) c.destroy();
    }
  });

  it('a 20 KB message from Lua still gives one valid JSON line', async () => {
    const r = await post(d.port, EVENTS, [egEvent({ data: { mode: 'long' } })], NOTIFY);
    assert.equal(r.status, 200);
    await waitFor(() => lines().some((l) => l.includes('xxxxxxxxxx')), 2000, 'the long line');
    const line = lines().find((l) => l.includes('xxxxxxxxxx'));
    let x;
    assert.doesNotThrow(() => { x = JSON.parse(line); }, `long line is not JSON (length ${line.length}, ends ${JSON.stringify(line.slice(-40))})`);
    assert.equal(x.level, 'warn');
    assert.match(x.msg, /^x+/);
  });

  it('fields named msg/level/time from Lua do not overwrite the record\'s own', async () => {
    const r = await post(d.port, EVENTS, [egEvent({ data: { mode: 'spoof' } })], NOTIFY);
    assert.equal(r.status, 200);
    await waitFor(() => lines().some((l) => l.includes('spoofed')), 2000, 'the spoof line');
    const line = lines().find((l) => l.includes('spoofed'));
    const x = JSON.parse(line);
    assert.equal(x.msg, 'real message', `line: ${line}`);
    assert.equal(x.level, 'info', `line: ${line}`);
    assert.notEqual(x.time, 'never', `line: ${line}`);
  });
});

// ---------------------------------------------------------------------------------------

const SHUTDOWN_SCRIPT = `${RECORDER}
function on_event(ev)
  record('start', ev.id)
  timer.sleep(ev.data.ms or 1000)
  record('done', ev.id)
end
function on_shutdown()
  record('shutdown', 'bye')
end
`;

/** Resolves 'refused' when a TCP connect is refused, 'open' when it connects. */
function tryConnect(port) {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    const t = setTimeout(() => { s.destroy(); resolve('timeout'); }, 1000);
    s.once('connect', () => { clearTimeout(t); s.destroy(); resolve('open'); });
    s.once('error', (e) => { clearTimeout(t); resolve(e.code === 'ECONNREFUSED' ? 'refused' : e.code); });
  });
}

describe('graceful shutdown', () => {
  const daemons = [];
  after(async () => {
    for (const x of daemons) {
      await x.stop(3000, { check: false });
      const san = x.stderr().search(SANITIZER_RE);
      assert.ok(san < 0, `sanitizer report:\n${x.stderr().slice(san, san + 3000)}`);
    }
  });

  it('SIGTERM during a handler: the client still gets its 200, on_shutdown runs, exit 0', async () => {
    const out = outPath();
    const d = await startDaemon({ script: writeScript(SHUTDOWN_SCRIPT), env: { OUT: out } });
    daemons.push(d);
    const idle = await RawConn.open(d.port); // a keep-alive connection with nothing to do
    idle.write(buildRequest({ method: 'GET', path: '/healthz' }));
    assert.equal((await idle.response(2000)).status, 200);

    const p = post(d.port, EVENTS, [egEvent({ id: 'in-progress', data: { ms: 1000 } })], NOTIFY);
    await waitFor(() => readRecords(out).some((r) => r.tag === 'start'), 3000, 'handler started');
    const t0 = Date.now();
    d.proc.kill('SIGTERM');
    await waitFor(async () => (await tryConnect(d.port)) === 'refused', 1000, 'new connections refused after SIGTERM');
    assert.ok(await idle.waitClosed(1000), 'the idle keep-alive connection is closed');

    const r = await p;
    assert.equal(r.status, 200, `in-progress delivery answered: ${r.text}`);
    const ex = await Promise.race([d.exited, sleep(4000).then(() => null)]);
    assert.ok(ex, 'exited after the request finished');
    assert.equal(ex.code, 0, `exit ${JSON.stringify(ex)}`);
    assert.ok(Date.now() - t0 < 3000, 'exit soon after the handler finished');
    assert.deepEqual(readRecords(out).map((x) => [x.tag, x.value]),
      [['start', 'in-progress'], ['done', 'in-progress'], ['shutdown', 'bye']]);
  });

  it('SIGTERM with nothing in progress: on_shutdown runs, exit 0 promptly', async () => {
    const out = outPath();
    const d = await startDaemon({ script: writeScript(SHUTDOWN_SCRIPT), env: { OUT: out } });
    daemons.push(d);
    assert.equal((await post(d.port, EVENTS, [egEvent({ data: { ms: 1 } })], NOTIFY)).status, 200);
    const t0 = Date.now();
    d.proc.kill('SIGTERM');
    const ex = await Promise.race([d.exited, sleep(3000).then(() => null)]);
    assert.ok(ex, 'exited');
    assert.equal(ex.code, 0);
    assert.ok(Date.now() - t0 < 1500, `took ${Date.now() - t0} ms`);
    assert.deepEqual(readRecords(out).map((x) => x.tag), ['start', 'done', 'shutdown']);
  });

  it('a second SIGTERM exits at once', async () => {
    const out = outPath();
    const d = await startDaemon({ script: writeScript(SHUTDOWN_SCRIPT), env: { OUT: out } });
    daemons.push(d);
    const p = post(d.port, EVENTS, [egEvent({ data: { ms: 8000 } })], NOTIFY, { timeoutMs: 10000 }).catch((e) => e);
    await waitFor(() => readRecords(out).some((r) => r.tag === 'start'), 3000, 'handler started');
    d.proc.kill('SIGTERM');
    await sleep(200);
    assert.equal(d.exitInfo(), null, 'still draining after the first SIGTERM');
    const t0 = Date.now();
    d.proc.kill('SIGTERM');
    const ex = await Promise.race([d.exited, sleep(1000).then(() => null)]);
    assert.ok(ex, 'exited within 1 s of the second SIGTERM');
    assert.ok(Date.now() - t0 < 1000);
    const r = await p;
    assert.ok(r instanceof Error || r.status !== 200, 'the interrupted delivery was not acknowledged');
  });

  it('--shutdown-grace-ms bounds the wait for a slow handler; on_shutdown still runs', async () => {
    const out = outPath();
    const d = await startDaemon({ script: writeScript(SHUTDOWN_SCRIPT), env: { OUT: out }, args: ['--shutdown-grace-ms', '300'] });
    daemons.push(d);
    const p = post(d.port, EVENTS, [egEvent({ data: { ms: 5000 } })], NOTIFY, { timeoutMs: 8000 }).catch((e) => e);
    await waitFor(() => readRecords(out).some((r) => r.tag === 'start'), 3000, 'handler started');
    const t0 = Date.now();
    d.proc.kill('SIGTERM');
    const ex = await Promise.race([d.exited, sleep(3000).then(() => null)]);
    assert.ok(ex, 'exited within 3 s although the handler wanted 5 s');
    assert.ok(Date.now() - t0 < 2000, `took ${Date.now() - t0} ms with a 300 ms grace`);
    const r = await p;
    assert.ok(r instanceof Error || r.status !== 200, 'the unfinished delivery was not acknowledged with 200');
    assert.deepEqual(readRecords(out).map((x) => x.tag), ['start', 'shutdown']);
  });
});

// ---------------------------------------------------------------------------------------

describe('slow and idle clients', () => {
  let d;
  let out;
  before(async () => {
    out = outPath();
    d = await startDaemon({
      script: writeScript(`${RECORDER}\nfunction on_event(ev) record('event', ev.id) end\n`),
      env: { OUT: out },
      args: ['--header-timeout-ms', '1000', '--body-timeout-ms', '1000', '--max-connections', '20'],
    });
  });
  after(async () => { await d?.stop(); });

  it('a byte-per-300ms header, a stalled body and 40 idle sockets: others are served at once, the slow ones cut off', async () => {
    const t0 = Date.now();
    const conns = [];
    try {
      // slow header: one byte every 300 ms, forever
      const slowHead = await RawConn.open(d.port);
      conns.push(slowHead);
      const headBytes = buildRequest({ body: [egEvent({ id: 'never-1' })], headers: NOTIFY });
      const slowStart = Date.now();
      slowHead.write(headBytes.subarray(0, 1));
      let i = 1;
      const drip = setInterval(() => {
        if (slowHead.closed || i >= headBytes.length) { clearInterval(drip); return; }
        slowHead.write(headBytes.subarray(i, i + 1));
        i += 1;
      }, 300);
      // stalled body: Content-Length 100, 10 bytes sent
      const stalled = await RawConn.open(d.port);
      conns.push(stalled);
      const stalledStart = Date.now();
      stalled.write(`POST ${EVENTS} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n[{"id":"a"`);
      // let both reach the server before the flood: a connection that has sent nothing
      // yet may rightly give its place to a new one at --max-connections
      await sleep(100);
      // 40 sockets that never send anything
      const idle = await Promise.all(Array.from({ length: 40 }, () => RawConn.open(d.port)));
      conns.push(...idle);

      // normal clients, during all that
      const lat = [];
      for (let k = 0; k < 5; k++) {
        const s = Date.now();
        const r = await post(d.port, EVENTS, [egEvent({ id: `normal-${k}` })], NOTIFY, { timeoutMs: 3000 });
        lat.push(Date.now() - s);
        assert.equal(r.status, 200, r.text);
        await sleep(150);
      }
      assert.ok(Math.max(...lat) < 500, `normal requests served promptly: ${lat} ms`);

      // the slow ones are cut off by the timeouts
      assert.ok(await slowHead.waitClosed(Math.max(1, 2600 - (Date.now() - t0))), 'the slow header was cut off');
      assert.ok(slowHead.closedAt - slowStart < 2600, `slow header closed after ${slowHead.closedAt - slowStart} ms`);
      assert.ok(slowHead.closedAt - slowStart >= 800, `not before the header timeout (${slowHead.closedAt - slowStart} ms)`);
      clearInterval(drip);
      assert.ok(await stalled.waitClosed(Math.max(1, 2600 - (Date.now() - stalledStart))), 'the stalled body was cut off');
      assert.ok(stalled.closedAt - stalledStart >= 800, `not before the body timeout (${stalled.closedAt - stalledStart} ms)`);
      if (stalled.all.length) assert.equal(stalled.all[0].status, 408, 'a response to the stalled body is 408');
      if (slowHead.all.length) assert.equal(slowHead.all[0].status, 408, 'a response to the slow header is 408');
      const idleClosed = await Promise.all(idle.map((c) => c.waitClosed(Math.max(1, 2600 - (Date.now() - t0)))));
      assert.equal(idleClosed.filter((x) => !x).length, 0, 'every idle socket was closed within ~2.5 s');

      const ids = readRecords(out).map((x) => x.value);
      assert.deepEqual(ids, ['normal-0', 'normal-1', 'normal-2', 'normal-3', 'normal-4'], 'only the normal deliveries ran');
      const { m } = await scrape(d.port);
      assert.ok(m.luahook_connections <= 3, `connections back down: ${m.luahook_connections}`);
    } finally {
      for (const c of conns) c.destroy();
    }
  });
});
