// Budgets, end to end: a buggy script must not take the daemon down.
// --cpu-budget (instructions per run slice), --lua-memory, --handler-timeout-ms, and
// start-up errors. Written against DESIGN.md ("Budgets", "Lua contract"), not the code.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import {
  RECORDER, startDaemon, runCli, writeScript, outPath, readRecords, post, get, egEvent,
  sleep, waitFor, lineOf, tmpDir,
} from './lib.mjs';

const EVENTS = '/api/events';
const NOTIFY = { 'aeg-event-type': 'Notification' };

const SCRIPT = `${RECORDER}
local actions = {}
function actions.spin() while true do end end
function actions.pcall_spin()
  local ok, err = pcall(function() while true do end end)
  record("after_pcall", tostring(err))
end
function actions.pcall_forever()
  while true do pcall(function() while true do end end) end
end
function actions.xpcall_spin()
  xpcall(function() while true do end end, function(e) return e end)
  record("after_xpcall", true)
end
function actions.slices()
  -- ~5 x 300k instructions: more than one budget in total, less than one per slice
  local n = 0
  for s = 1, 5 do
    for i = 1, 300000 do n = n + 1 end
    timer.sleep(1)
  end
  record("slices_done", n)
end
function actions.alloc()
  local t = {}
  local i = 0
  while true do
    i = i + 1
    t[i] = string.rep("x", 1000) .. i
  end
end
function actions.big_string()
  local s = string.rep("y", 200 * 1024 * 1024)
  record("big_string", #s)
end
function actions.sleep_long() timer.sleep(5000); record("woke", "sleep_long") end
function actions.sleep_late() timer.sleep(700); record("late", "sleep_late") end
function actions.sleep_forever() while true do timer.sleep(10) end end
function actions.busy_slices() while true do for i = 1, 100000 do end timer.sleep(1) end end
function on_event(ev)
  local a = type(ev.data) == "table" and ev.data.action
  if a and actions[a] then
    record("started", ev.id)
    return actions[a]()
  end
  record("ok", ev.id)
end
`;

/** Time an async fn: {ms, value}. */
async function timed(fn) {
  const t0 = process.hrtime.bigint();
  const value = await fn();
  return { ms: Number(process.hrtime.bigint() - t0) / 1e6, value };
}

async function healthJson(port) {
  const r = await get(port, '/healthz', {}, { timeoutMs: 3000 });
  assert.equal(r.status, 200, r.text);
  return r.json();
}

describe('budgets', () => {
  let d;
  let out;
  before(async () => {
    out = outPath();
    d = await startDaemon({
      script: writeScript(SCRIPT),
      env: { OUT: out },
      args: ['--cpu-budget', '1000000', '--lua-memory', '32m', '--handler-timeout-ms', '300'],
    });
  });
  after(async () => { await d?.stop(); });

  const send = (action, opts = {}) => post(d.port, EVENTS, [egEvent(action ? { data: { action } } : {})], NOTIFY, { timeoutMs: 5000, ...opts });

  /** A normal event is acknowledged and its handler ran. */
  async function normalOk(what) {
    const e = egEvent();
    const r = await post(d.port, EVENTS, [e], NOTIFY, { timeoutMs: 3000 });
    assert.equal(r.status, 200, `normal event after ${what}: ${r.status} ${r.text}`);
    assert.ok(readRecords(out).some((x) => x.tag === 'ok' && x.value === e.id), `handler ran for ${e.id} after ${what}`);
  }

  /** Sends a bad event; once its handler started, polls /healthz, which must answer fast. */
  async function badWithHealthz(action, { polls = 3 } = {}) {
    const e = egEvent({ data: { action } });
    const bad = post(d.port, EVENTS, [e], NOTIFY, { timeoutMs: 5000 });
    let settled = false;
    bad.finally(() => { settled = true; }).catch(() => {});
    // wait for the handler to start (or to be over already, for the quick ones)
    await waitFor(() => settled || readRecords(out).some((x) => x.tag === 'started' && x.value === e.id), 3000,
      `handler for ${action} started`, 2);
    const lat = [];
    for (let i = 0; i < polls; i++) {
      const { ms, value } = await timed(() => get(d.port, '/healthz', {}, { timeoutMs: 3000 }));
      assert.equal(value.status, 200, value.text);
      lat.push(ms);
    }
    const r = await bad;
    return { r, lat };
  }

  it('an infinite loop fails with "cpu budget exceeded" (500); /healthz stays fast meanwhile', async () => {
    const { r, lat } = await badWithHealthz('spin');
    assert.equal(r.status, 500, r.text);
    await waitFor(() => /cpu budget exceeded/.test(r.text + d.stderr()), 1000, '"cpu budget exceeded" in the body or the log');
    for (const ms of lat) assert.ok(ms < 300, `/healthz took ${ms.toFixed(1)} ms during the loop (${lat})`);
    await normalOk('an infinite loop');
  });

  it('other connections are served while infinite loops are killed', async () => {
    const bad = Array.from({ length: 6 }, () => send('spin'));
    const good = [];
    for (let i = 0; i < 10; i++) {
      const e = egEvent();
      good.push(post(d.port, EVENTS, [e], NOTIFY, { timeoutMs: 3000 }).then((r) => ({ r, e })));
    }
    const health = timed(() => get(d.port, '/healthz', {}, { timeoutMs: 3000 }));
    for (const r of await Promise.all(bad)) assert.equal(r.status, 500, r.text);
    for (const { r, e } of await Promise.all(good)) assert.equal(r.status, 200, `${e.id}: ${r.text}`);
    const h = await health;
    assert.equal(h.value.status, 200);
    assert.ok(h.ms < 300, `/healthz took ${h.ms.toFixed(1)} ms`);
  });

  it('pcall cannot swallow the cpu budget', async () => {
    for (const action of ['pcall_spin', 'pcall_forever', 'xpcall_spin']) {
      const { ms, value: r } = await timed(() => send(action));
      assert.equal(r.status, 500, `${action}: ${r.status} ${r.text}`);
      assert.ok(ms < 2000, `${action} took ${ms} ms`);
    }
    const tags = readRecords(out).map((x) => x.tag);
    assert.ok(!tags.includes('after_pcall'), 'code after a pcall-caught budget error did not go on');
    assert.ok(!tags.includes('after_xpcall'), 'code after an xpcall-caught budget error did not go on');
    await normalOk('pcall-wrapped infinite loops');
  });

  it('the cpu budget is per run slice: work split by suspensions succeeds', async () => {
    const r = await send('slices');
    assert.equal(r.status, 200, r.text);
    assert.ok(readRecords(out).some((x) => x.tag === 'slices_done' && x.value === 1500000));
  });

  it('unbounded allocation fails (500), the daemon lives, the memory comes back', async () => {
    const before = (await healthJson(d.port)).lua_memory_bytes;
    assert.equal(typeof before, 'number', 'lua_memory_bytes in /healthz');
    const { r, lat } = await badWithHealthz('alloc', { polls: 2 });
    assert.equal(r.status, 500, r.text);
    for (const ms of lat) assert.ok(ms < 300, `/healthz took ${ms.toFixed(1)} ms during the allocation (${lat})`);
    assert.equal(d.exitInfo(), null, 'daemon still running');
    // the garbage of the failed handler is collectable: it goes back below ~8 MB
    let last;
    await waitFor(async () => {
      await normalOk('an unbounded allocation');
      last = (await healthJson(d.port)).lua_memory_bytes;
      return last < 8 * 1024 * 1024;
    }, 3000, 'lua_memory_bytes back below 8 MB', 100).catch((e) => {
      throw new Error(`${e.message}: last lua_memory_bytes=${last} (before: ${before})`);
    });

    // one huge allocation (over the limit by itself)
    const r2 = await send('big_string');
    assert.equal(r2.status, 500, r2.text);
    assert.ok(!readRecords(out).some((x) => x.tag === 'big_string'));
    await normalOk('a 200 MB string');

    // and again: the limit holds for repeated offenders
    for (let i = 0; i < 3; i++) {
      const r3 = await send('alloc');
      assert.equal(r3.status, 500, r3.text);
    }
    await normalOk('repeated unbounded allocations');
    await waitFor(async () => (await healthJson(d.port)).lua_memory_bytes < 8 * 1024 * 1024, 3000,
      'lua_memory_bytes back below 8 MB after repeated allocations', 100);
  });

  it('a handler sleeping past --handler-timeout-ms is abandoned: 500 in time', async () => {
    for (const action of ['sleep_long', 'sleep_forever', 'busy_slices']) {
      const { r, lat } = await badWithHealthz(action, { polls: 2 });
      assert.equal(r.status, 500, `${action}: ${r.text}`);
      for (const ms of lat) assert.ok(ms < 300, `/healthz took ${ms.toFixed(1)} ms during ${action}`);
    }
    for (const action of ['sleep_long', 'sleep_forever', 'busy_slices']) {
      const { ms, value: r } = await timed(() => send(action));
      assert.equal(r.status, 500, `${action}: ${r.text}`);
      assert.ok(ms >= 250, `${action} answered after ${ms.toFixed(0)} ms: too early for a 300 ms timeout`);
      assert.ok(ms < 1500, `${action} answered after ${ms.toFixed(0)} ms`);
    }
    await normalOk('handler timeouts');
  });

  it('an abandoned handler does not run on later', async () => {
    const { ms, value: r } = await timed(() => send('sleep_late'));
    assert.equal(r.status, 500, r.text);
    assert.ok(ms < 650, `answered after ${ms} ms`);
    await sleep(700);
    assert.ok(!readRecords(out).some((x) => x.tag === 'late'), 'the abandoned handler went on after its timeout');
    assert.equal(d.exitInfo(), null, 'daemon still running');
    await normalOk('an abandoned handler');
  });

  it('budgets are reported in the log', () => {
    assert.match(d.stderr(), /cpu budget exceeded/);
    assert.match(d.stderr(), /memory/i);
    assert.match(d.stderr(), /timed? ?out/i);
  });
});

describe('suspending handlers let the loop go on', () => {
  it('a handler looping over timer.sleep(0) does not starve other connections', { timeout: 20000 }, async () => {
    const out = outPath();
    const d = await startDaemon({
      script: writeScript(`${RECORDER}
function on_event(ev)
  record("started", ev.id)
  -- 600 short CPU slices (50k instructions each), each followed by a suspension
  for s = 1, 600 do
    for i = 1, 50000 do end
    timer.sleep(0)
  end
  record("done", ev.id)
end
`),
      env: { OUT: out },
    });
    try {
      const e = egEvent();
      const p = post(d.port, EVENTS, [e], NOTIFY, { timeoutMs: 10000 });
      await waitFor(() => readRecords(out).some((x) => x.tag === 'started'), 3000, 'the handler started', 2);
      const lat = [];
      for (let i = 0; i < 3; i++) {
        const { ms, value } = await timed(() => get(d.port, '/healthz', {}, { timeoutMs: 5000 }));
        assert.equal(value.status, 200, value.text);
        lat.push(ms);
      }
      const r = await p;
      const doneFirst = readRecords(out).findIndex((x) => x.tag === 'done');
      for (const ms of lat) {
        assert.ok(ms < 50, `/healthz took ${ms.toFixed(1)} ms while a handler looped over timer.sleep(0) (${lat.map((x) => x.toFixed(1))}); the handler ${doneFirst >= 0 ? 'finished' : 'had not finished'}`);
      }
      assert.equal(r.status, 200, r.text);
    } finally {
      await d.stop();
    }
  });
});

// ---------------------------------------------------------------------------------------
// start-up errors

/** A port nothing listens on right now. */
async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Resolves true when a TCP connect to port succeeds. */
function canConnect(port) {
  return new Promise((resolve) => {
    const c = net.connect({ port, host: '127.0.0.1' });
    const t = setTimeout(() => { c.destroy(); resolve(false); }, 500);
    c.once('connect', () => { clearTimeout(t); c.destroy(); resolve(true); });
    c.once('error', () => { clearTimeout(t); resolve(false); });
  });
}

/** Runs `luahook run script --listen 127.0.0.1:PORT`, probing the port while it runs. */
async function runBroken(script, extra = []) {
  const port = await freePort();
  let bound = false;
  let done = false;
  const prober = (async () => {
    while (!done) {
      if (await canConnect(port)) bound = true;
      await sleep(20);
    }
  })();
  const res = await runCli(['run', script, '--listen', `127.0.0.1:${port}`, ...extra], { timeoutMs: 10000 });
  done = true;
  await prober;
  const after = await canConnect(port);
  return { ...res, port, bound, after };
}

describe('start-up errors', () => {
  it('a syntax error: exit 1 with file:line, the port never bound', async () => {
    const text = `function on_event(ev)
  local x = = 1 -- @@SYNTAX
end
`;
    const script = writeScript(text);
    const r = await runBroken(script);
    assert.equal(r.timedOut, false, 'luahook exited by itself');
    assert.equal(r.code, 1, `exit code; stderr:\n${r.stderr}`);
    assert.match(r.stderr, new RegExp(`hook\\.lua:${lineOf(text, '@@SYNTAX')}:`));
    assert.doesNotMatch(r.stderr, /listening on/);
    assert.equal(r.bound, false, 'the port was bound while luahook ran');
    assert.equal(r.after, false, 'something listens on the port after luahook exited');
  });

  it('a runtime error at top level: exit 1 with file:line, the port never bound', async () => {
    const text = `function on_event(ev) end
-- spend ~300 ms first, so that a port bound too early would be seen
local t0 = os.clock()
while os.clock() - t0 < 0.3 do end
local cfg = nil
local x = cfg.port -- @@RUNTIME
`;
    const script = writeScript(text);
    const r = await runBroken(script, ['--cpu-budget', '0']);
    assert.equal(r.timedOut, false, 'luahook exited by itself');
    assert.equal(r.code, 1, `exit code; stderr:\n${r.stderr}`);
    assert.match(r.stderr, new RegExp(`hook\\.lua:${lineOf(text, '@@RUNTIME')}:`));
    assert.doesNotMatch(r.stderr, /listening on/);
    assert.equal(r.bound, false, 'the port was bound while the script was loading');
    assert.equal(r.after, false);
  });

  it('error("...") at top level: exit 1 with file:line', async () => {
    const dir = tmpDir();
    const text = `local x = 1
error("refusing to start") -- @@ERR
`;
    const script = writeScript(text, { dir, name: 'start.lua' });
    const r = await runBroken(script);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`start\\.lua:${lineOf(text, '@@ERR')}: refusing to start`));
    assert.equal(r.bound, false);
  });

  it('an infinite loop at top level hits the cpu budget at start-up: exit 1', async () => {
    const text = `while true do end -- @@LOOP
function on_event(ev) end
`;
    const script = writeScript(text);
    const r = await runBroken(script, ['--cpu-budget', '1000000']);
    assert.equal(r.timedOut, false, 'luahook exited by itself');
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /cpu budget exceeded/);
    assert.match(r.stderr, new RegExp(`hook\\.lua:${lineOf(text, '@@LOOP')}`));
    assert.equal(r.bound, false);
  });
});
