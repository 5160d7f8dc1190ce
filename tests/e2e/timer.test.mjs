// The `timer` module in the real daemon: timer.sleep suspends only its handler,
// timer.after runs after the response, errors in timer callbacks are logged and
// harmless, the handler timeout abandons a sleeping handler, and periodic timers of
// the old code stop at reload.
import { describe, it, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import {
  RECORDER, startDaemon, writeScript, outPath, readRecords, clearOut, post, get, egEvent,
  sleep, waitFor,
} from './lib.mjs';

const EVENTS = '/api/events';
const NOTIFY = { 'aeg-event-type': 'Notification' };

const SCRIPT = `${RECORDER}
local ops = {}
function ops.sleep(ev)
  local t0 = timer.now()
  timer.sleep(ev.data.ms)
  record("slept", { id = ev.id, ms = timer.now() - t0 })
end
function ops.quick(ev) record("quick", ev.id) end
function ops.after(ev)
  local t0 = timer.now()
  timer.after(ev.data.ms, function()
    record("after", { id = ev.id, ms = timer.now() - t0 })
    timer.sleep(10) -- callbacks are tasks: they may suspend
    record("after-slept", ev.id)
  end)
  record("handled", ev.id)
end
function ops.fail(ev)
  timer.after(10, function() error("boom from a timer callback") end)
  timer.after(60, function() record("next-timer", ev.id) end)
end
function ops.every(ev)
  local n, h = 0
  h = timer.every(20, function()
    n = n + 1
    record("every", n)
    if n == 3 then h:cancel() end
  end)
end
function on_event(ev) ops[ev.data.op](ev) end
`;

const deliver = (d, data, opts = {}) =>
  post(d.port, EVENTS, [egEvent({ data })], NOTIFY, { timeoutMs: 10000, ...opts });
const tagged = (out, tag) => readRecords(out).filter((r) => r.tag === tag).map((r) => r.value);

describe('timer', () => {
  let d;
  let out;
  before(async () => {
    out = outPath();
    d = await startDaemon({ script: writeScript(SCRIPT), env: { OUT: out } });
  });
  after(async () => { await d?.stop(); });
  beforeEach(() => clearOut(out));

  it('timer.sleep delays its response; other requests are served meanwhile', async () => {
    const t0 = Date.now();
    const slow = deliver(d, { op: 'sleep', ms: 600 }).then((r) => ({ r, ms: Date.now() - t0 }));
    await sleep(50);
    const t1 = Date.now();
    const quick = await deliver(d, { op: 'quick' });
    const quickMs = Date.now() - t1;
    const h = await get(d.port, '/healthz', {}, { timeoutMs: 3000 });
    assert.equal(quick.status, 200);
    assert.equal(h.status, 200);
    assert.ok(quickMs < 300, `a quick delivery took ${quickMs} ms while another slept`);
    assert.equal(tagged(out, 'slept').length, 0, 'the sleeper has not answered yet');
    const { r, ms } = await slow;
    assert.equal(r.status, 200, r.text);
    assert.ok(ms >= 590 && ms < 3000, `the sleeping delivery took ${ms} ms`);
    const [s] = tagged(out, 'slept');
    assert.ok(s.ms >= 600, `timer.now() measured ${s.ms} ms`);
  });

  it('timer.after fires after the request was answered', async () => {
    const t0 = Date.now();
    const r = await deliver(d, { op: 'after', ms: 300 });
    const answeredMs = Date.now() - t0;
    assert.equal(r.status, 200);
    assert.ok(answeredMs < 250, `answered after ${answeredMs} ms`);
    assert.equal(tagged(out, 'handled').length, 1);
    assert.equal(tagged(out, 'after').length, 0, 'not fired before the response');
    await waitFor(() => tagged(out, 'after-slept').length === 1, 3000, 'the after callback');
    const [a] = tagged(out, 'after');
    assert.ok(a.ms >= 299, `fired after ${a.ms} ms`);
  });

  it('timer.every fires until cancelled from its own callback', async () => {
    assert.equal((await deliver(d, { op: 'every' })).status, 200);
    await waitFor(() => tagged(out, 'every').length === 3, 3000, 'three ticks');
    await sleep(100);
    assert.deepEqual(tagged(out, 'every'), [1, 2, 3]);
  });

  it('an error in a timer callback is logged; the daemon and later timers go on', async () => {
    const r = await deliver(d, { op: 'fail' });
    assert.equal(r.status, 200, 'the handler itself succeeded');
    await d.waitStderr(/timer callback failed.*boom from a timer callback/, 3000);
    await waitFor(() => tagged(out, 'next-timer').length === 1, 3000, 'the next timer');
    assert.equal((await get(d.port, '/healthz')).status, 200);
    assert.equal((await deliver(d, { op: 'quick' })).status, 200);
  });
});

describe('timer: handler timeout', () => {
  it('a handler sleeping past --handler-timeout-ms gets 500 at the timeout; the daemon stays healthy', async () => {
    const out = outPath();
    const d = await startDaemon({
      script: writeScript(`${RECORDER}
function on_event(ev)
  timer.sleep(2000)
  record("woke", ev.id)
end`),
      args: ['--handler-timeout-ms', '300'],
      env: { OUT: out },
    });
    try {
      const t0 = Date.now();
      const r = await deliver(d, { op: 'x' });
      const ms = Date.now() - t0;
      assert.equal(r.status, 500);
      assert.match(r.text, /timed out/);
      assert.ok(ms >= 280 && ms < 1000, `answered after ${ms} ms`);
      assert.equal((await get(d.port, '/healthz')).status, 200);
      await sleep(2000); // past the abandoned sleep: it must never resume
      assert.deepEqual(readRecords(out), []);
      assert.equal((await get(d.port, '/healthz')).status, 200);
      assert.equal(d.exitInfo(), null);
    } finally {
      await d.stop();
    }
  });
});

describe('timer: reload', () => {
  it('periodic timers of the old code stop at reload; its pending one-shot still fires', async () => {
    const out = outPath();
    const v = (name) => `${RECORDER}
timer.every(30, function() record("tick", "${name}") end)
timer.after(700, function() record("once", "${name}") end)
function on_event(ev) record("event", "${name}") end
`;
    const script = writeScript(v('v1'));
    const d = await startDaemon({ script, env: { OUT: out } });
    try {
      await waitFor(() => readRecords(out).filter((r) => r.tag === 'tick').length >= 3, 3000, 'v1 ticks');
      fs.writeFileSync(script, v('v2'));
      d.proc.kill('SIGHUP');
      await d.waitStderr(/script reloaded/, 3000);
      await sleep(100); // a second reload from the file watcher may follow
      const v1Ticks = () => readRecords(out).filter((r) => r.tag === 'tick' && r.value === 'v1').length;
      const n = v1Ticks();
      await sleep(300);
      assert.equal(v1Ticks(), n, 'v1 ticks stopped at the reload');
      assert.ok(readRecords(out).some((r) => r.tag === 'tick' && r.value === 'v2'), 'v2 ticks');
      assert.equal((await deliver(d, { op: 'x' })).status, 200);
      assert.ok(readRecords(out).some((r) => r.tag === 'event' && r.value === 'v2'));
      await waitFor(() => readRecords(out).some((r) => r.tag === 'once' && r.value === 'v1'), 3000,
        'the old one-shot timer');
    } finally {
      await d.stop();
    }
  });
});
