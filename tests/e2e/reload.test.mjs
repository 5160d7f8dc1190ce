// Hot reload, end to end: the script (and .lua files beside it) edited while the
// daemon serves, however the editor saves; broken edits; fresh environments; `state`;
// timers across a reload; SIGHUP; --no-reload.
// Written against DESIGN.md ("Hot reload", "Lua contract"), not against the code.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import {
  startDaemon, tmpDir, writeScript, outPath, readOut, post, get, egEvent, sleep, waitFor,
  lineOf,
} from './lib.mjs';

const EVENTS = '/api/events';
const NOTIFY = { 'aeg-event-type': 'Notification' };
const RELOADED_RE = /script reloaded reason="?([^"\n]*?)"? generation=(\d+) ms=/g;
const FAILED_RE = /reload failed, previous code keeps serving[^\n]*\n?/g;

// ---------------------------------------------------------------------------------------
// the four ways editors save a file

let tmpSeq = 0;

/** Overwrites the bytes in place (no O_TRUNC), then cuts off any old tail. */
function saveInPlace(file, text) {
  const buf = Buffer.from(text, 'utf8');
  const fd = fs.openSync(file, 'r+');
  try {
    fs.writeSync(fd, buf, 0, buf.length, 0);
    fs.ftruncateSync(fd, buf.length);
  } finally {
    fs.closeSync(fd);
  }
}

/** Truncates to 0 bytes, then writes the new text in two pieces (like `cat > file`). */
async function saveTruncateWrite(file, text) {
  const buf = Buffer.from(text, 'utf8');
  const fd = fs.openSync(file, 'w'); // O_TRUNC
  try {
    await sleep(5);
    const half = Math.floor(buf.length / 2);
    fs.writeSync(fd, buf, 0, half);
    await sleep(10);
    fs.writeSync(fd, buf, half, buf.length - half);
  } finally {
    fs.closeSync(fd);
  }
}

/** Writes a temp file in the same folder and renames it over (atomic save). */
async function saveRename(file, text) {
  tmpSeq += 1;
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${tmpSeq}.tmp`);
  fs.writeFileSync(tmp, text);
  await sleep(5);
  fs.renameSync(tmp, file);
}

/** Deletes the file, then creates it again. */
async function saveDeleteRecreate(file, text) {
  fs.unlinkSync(file);
  await sleep(15);
  fs.writeFileSync(file, text);
}

const SAVES = [
  ['write in place', saveInPlace],
  ['truncate then write', saveTruncateWrite],
  ['temp file + rename', saveRename],
  ['delete and recreate', saveDeleteRecreate],
];

// ---------------------------------------------------------------------------------------
// helpers

function countReloaded(stderr) {
  return [...stderr.matchAll(RELOADED_RE)];
}
/** The reload-related lines of the daemon's stderr (request log lines left out). */
function reloadLog(stderr) {
  return stderr.split('\n').filter((l) => /reload|listening|SIGHUP|error/i.test(l) && !/ request method=/.test(l)).join('\n');
}
function failedLines(stderr) {
  return stderr.match(FAILED_RE) || [];
}

/** /healthz as JSON (asserts 200). */
async function health(port) {
  const r = await get(port, '/healthz', {}, { timeoutMs: 3000 });
  assert.equal(r.status, 200, `/healthz: ${r.text}`);
  return r.json();
}

/** The Lua script for one version of the load test's hook. */
function versionScript(v, pad = '') {
  return `-- version ${v}${pad}
local OUT = assert(os.getenv("OUT"))
VERSION = ${v}
function on_event(ev)
  -- suspend, so that requests are in flight (between events of a batch) when a reload lands
  timer.sleep(2)
  local f = assert(io.open(OUT, "a"))
  f:write(VERSION, ",", ev.id, "\\n")
  f:close()
end
`;
}

/** Broken: a syntax error on a known line. Returns {text, line}. */
function syntaxErrorScript(v) {
  const text = `-- version ${v} (syntax error)
local OUT = assert(os.getenv("OUT"))
function on_event(ev)
  local f = assert(io.open(OUT, "a"))
  f:write(${v}, ",", ev.id, "\\n")
  f:close()
end end -- @@SYNTAX
`;
  return { text, line: lineOf(text, '@@SYNTAX') };
}

/** Broken: compiles, defines a handler, then raises at top level. */
function runtimeErrorScript(v) {
  const text = `-- version ${v} (runtime error at load)
local OUT = assert(os.getenv("OUT"))
VERSION = ${v}
function on_event(ev)
  local f = assert(io.open(OUT, "a"))
  f:write(VERSION, ",", ev.id, "\\n")
  f:close()
end
local cfg = nil
local port = cfg.port -- @@RUNTIME
`;
  return { text, line: lineOf(text, '@@RUNTIME') };
}

/** Parses OUT lines "version,id" into a Map id -> [versions]. */
function handledBy(out) {
  const m = new Map();
  for (const line of readOut(out)) {
    const c = line.indexOf(',');
    const v = Number(line.slice(0, c));
    const id = line.slice(c + 1);
    if (!m.has(id)) m.set(id, []);
    m.get(id).push(v);
  }
  return m;
}

// ---------------------------------------------------------------------------------------

describe('reload under load', () => {
  let d;
  after(async () => { await d?.stop(); });

  it('20 saves in every style, some broken: no request fails, each event runs once, in one version', { timeout: 60000 }, async (t) => {
    const dir = tmpDir();
    const out = outPath(dir);
    const script = writeScript(versionScript(1), { dir });
    d = await startDaemon({ script, env: { OUT: out } });

    const h0 = await health(d.port);
    assert.equal(h0.generation, 1, JSON.stringify(h0));
    assert.equal(h0.last_reload_error, null, JSON.stringify(h0));
    assert.equal(typeof h0.loaded_at, 'string', JSON.stringify(h0));

    // --- two clients, each sequential over its own keep-alive connection
    let stop = false;
    const failures = [];
    const clients = ['A', 'B'].map((name, ci) => {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      const sent = []; // [{ids:[...], status}] in send order
      const run = (async () => {
        let n = 0;
        while (!stop) {
          const batch = [];
          const size = 1 + ((n + ci) % 3); // batches of 1..3 events
          for (let i = 0; i < size; i++) {
            n += 1;
            batch.push(egEvent({ id: `${name}-${n}`, data: { client: name, n } }));
          }
          const rec = { ids: batch.map((e) => e.id), status: null };
          sent.push(rec);
          try {
            const r = await post(d.port, EVENTS, batch, NOTIFY, { agent, timeoutMs: 5000 });
            rec.status = r.status;
            if (r.status !== 200) failures.push(`${name}: ${rec.ids} -> ${r.status} ${r.text}`);
          } catch (e) {
            rec.status = -1;
            failures.push(`${name}: ${rec.ids} -> ${e.message}`);
          }
        }
        agent.destroy();
      })();
      return { name, sent, run, agent };
    });

    const lastVersionSeen = () => {
      const lines = readOut(out);
      const seen = new Set();
      for (const l of lines) seen.add(Number(l.slice(0, l.indexOf(','))));
      return seen;
    };

    try {
      await waitFor(() => lastVersionSeen().has(1), 3000, 'version 1 handling events');

      // --- 20 saves: mostly valid, every 4th or so broken (both kinds)
      const plan = [];
      for (let i = 0; i < 20; i++) {
        const kind = i === 4 || i === 13 ? 'syntax' : i === 8 || i === 17 ? 'runtime' : 'valid';
        plan.push(kind);
      }
      const broken = new Set();
      let valid = 0;
      let currentGoodVersion = 1;
      const reloadsBefore = countReloaded(d.stderr()).length;
      assert.equal(reloadsBefore, 0, `no reload before the first save:\n${reloadLog(d.stderr())}`);

      for (let i = 0; i < plan.length; i++) {
        const v = i + 2; // version number written by this save
        const [style, save] = SAVES[i % SAVES.length];
        const kind = plan[i];
        const failsBefore = failedLines(d.stderr()).length;
        const reloadsNow = countReloaded(d.stderr()).length;
        const t0 = Date.now();
        if (kind === 'valid') {
          // vary the length so in-place writes sometimes shrink, sometimes grow the file
          await save(script, versionScript(v, ' '.repeat((i * 37) % 200)));
          valid += 1;
          await waitFor(() => lastVersionSeen().has(v), 2000,
            `save #${i + 1} (${style}): version ${v} handling events\nstderr:\n${reloadLog(d.stderr())}`);
          currentGoodVersion = v;
          await waitFor(() => countReloaded(d.stderr()).length > reloadsNow, 1000,
            `save #${i + 1} (${style}): a "script reloaded" line`);
          await sleep(Math.max(0, 250 - (Date.now() - t0))); // a second reload would show by now
          assert.equal(countReloaded(d.stderr()).length, reloadsNow + 1,
            `save #${i + 1} (${style}) must reload exactly once; stderr:\n${reloadLog(d.stderr())}`);
          assert.equal(failedLines(d.stderr()).length, failsBefore,
            `save #${i + 1} (${style}) of a valid file must not report a failed reload (of a half-written file?); stderr:\n${reloadLog(d.stderr())}`);
          const m = countReloaded(d.stderr()).at(-1);
          assert.equal(m[1], 'hook.lua changed', `reason of save #${i + 1}: ${m[0]}`);
        } else {
          broken.add(v);
          const { text, line } = kind === 'syntax' ? syntaxErrorScript(v) : runtimeErrorScript(v);
          await save(script, text);
          await waitFor(() => failedLines(d.stderr()).length > failsBefore, 2000,
            `save #${i + 1} (${style}, ${kind} error): a "reload failed" line\nstderr:\n${reloadLog(d.stderr())}`);
          const fl = failedLines(d.stderr()).at(-1);
          assert.match(fl, new RegExp(`error="[^"]*hook\\.lua:${line}:`),
            `save #${i + 1} (${style}, ${kind}): the error names hook.lua:${line}: ${fl}`);
          const h = await health(d.port);
          assert.equal(typeof h.last_reload_error, 'string', `last_reload_error after broken save #${i + 1}: ${JSON.stringify(h)}`);
          assert.match(h.last_reload_error, new RegExp(`hook\\.lua:${line}:`), JSON.stringify(h));
          // the previous version keeps serving: an event sent from now on is handled by it
          const probe = egEvent({ id: `probe-${v}` });
          const r = await post(d.port, EVENTS, [probe], NOTIFY, { timeoutMs: 5000 });
          assert.equal(r.status, 200, `probe after broken save #${i + 1}: ${r.text}`);
          assert.deepEqual(handledBy(out).get(probe.id), [currentGoodVersion],
            `after broken save #${i + 1} the probe is handled by version ${currentGoodVersion}`);
        }
        // let the debounce settle so that every save is its own reload
        const wait = 300 - (Date.now() - t0);
        if (wait > 0) await sleep(wait);
      }
      await sleep(300);
      stop = true;
      await Promise.race([
        Promise.all(clients.map((c) => c.run)),
        sleep(8000).then(() => { throw new Error('clients did not stop'); }),
      ]);

      // --- not one request failed
      assert.deepEqual(failures, [], `failed requests:\n${failures.slice(0, 20).join('\n')}`);

      // --- every event handled exactly once, by one version; a request by one version
      const byId = handledBy(out);
      let total = 0;
      for (const c of clients) {
        let prev = 0;
        assert.ok(c.sent.length > 40, `client ${c.name} sent only ${c.sent.length} requests`);
        for (const req of c.sent) {
          const versions = [];
          for (const id of req.ids) {
            const vs = byId.get(id);
            assert.ok(vs, `event ${id} (status ${req.status}) was never handled`);
            assert.equal(vs.length, 1, `event ${id} handled ${vs.length} times: versions ${vs}`);
            versions.push(vs[0]);
            total += 1;
          }
          assert.equal(new Set(versions).size, 1,
            `request ${req.ids} handled by more than one version: ${versions}`);
          const v = versions[0];
          assert.ok(!broken.has(v), `event ${req.ids} handled by broken version ${v}`);
          assert.ok(v >= prev, `client ${c.name}: version went back from ${prev} to ${v} at ${req.ids}`);
          prev = v;
        }
      }
      assert.ok(total > 100, `only ${total} events were sent`);
      t.diagnostic(`${clients.map((c) => `${c.name}: ${c.sent.length} requests`).join(', ')}; ${total} events; ${valid} valid and ${broken.size} broken saves`);
      const allSeen = new Set([...byId.values()].flat());
      for (const b of broken) assert.ok(!allSeen.has(b), `broken version ${b} handled events`);

      // --- exactly one reload per save
      const reloads = countReloaded(d.stderr());
      assert.equal(reloads.length, valid,
        `"script reloaded" lines: ${reloads.length}, valid saves: ${valid}\n${reloadLog(d.stderr())}`);
      assert.equal(failedLines(d.stderr()).length, broken.size,
        `"reload failed" lines vs broken saves\n${reloadLog(d.stderr())}`);
      const gens = reloads.map((m) => Number(m[2]));
      for (let i = 1; i < gens.length; i++) {
        assert.ok(gens[i] > gens[i - 1], `generations increase: ${gens}`);
      }
      const h = await health(d.port);
      assert.equal(h.generation, gens.at(-1), `/healthz generation is the last reloaded one: ${JSON.stringify(h)}`);
    } finally {
      stop = true;
      for (const c of clients) c.agent.destroy();
      await Promise.race([Promise.allSettled(clients.map((c) => c.run)), sleep(6000)]);
    }
  });
});

describe('modules and environments', () => {
  it('editing a required module beside the script brings its new code in', { timeout: 20000 }, async () => {
    const dir = tmpDir();
    const out = outPath(dir);
    writeScript('return { v = "helper-1" }\n', { dir, name: 'helper.lua' });
    const script = writeScript(`local OUT = assert(os.getenv("OUT"))
local helper = require "helper"
function on_event(ev)
  local f = assert(io.open(OUT, "a"))
  f:write(helper.v, ",", ev.id, "\\n")
  f:close()
end
`, { dir });
    const d = await startDaemon({ script, env: { OUT: out } });
    try {
      const send = async () => {
        const e = egEvent();
        const r = await post(d.port, EVENTS, [e], NOTIFY, { timeoutMs: 5000 });
        assert.equal(r.status, 200, r.text);
        assert.ok(readOut(out).at(-1).endsWith(`,${e.id}`), `event ${e.id} handled`);
      };
      const lastRaw = () => readOut(out).at(-1);
      await send();
      assert.match(lastRaw(), /^helper-1,/);

      await saveRename(path.join(dir, 'helper.lua'), 'return { v = "helper-2" }\n');
      await d.waitStderr(/script reloaded reason="?helper\.lua changed"? generation=2/, 2000);
      await waitFor(async () => { await send(); return lastRaw().startsWith('helper-2,'); }, 2000,
        'events handled with helper.lua version 2');

      // a second edit, in place this time
      saveInPlace(path.join(dir, 'helper.lua'), 'return { v = "helper-3" }\n');
      await d.waitStderr(/generation=3/, 2000);
      await send();
      assert.match(lastRaw(), /^helper-3,/);

      // a broken module: the reload fails with helper.lua:line, helper-3 keeps serving
      fs.writeFileSync(path.join(dir, 'helper.lua'), 'local x = \nreturn { v = "helper-4" }\n+\n');
      await d.waitStderr(/reload failed, previous code keeps serving[^\n]*helper\.lua:2:/, 2000);
      await send();
      assert.match(lastRaw(), /^helper-3,/);
      assert.equal(countReloaded(d.stderr()).length, 2, d.stderr());
    } finally {
      await d.stop();
    }
  });

  it('a new version runs in a fresh environment; state survives', { timeout: 20000 }, async () => {
    const dir = tmpDir();
    const out = outPath(dir);
    const script = writeScript(`local OUT = assert(os.getenv("OUT"))
LEAK = "from v1"
function helper_v1() return 1 end
state.x = "kept"
state.loads = (state.loads or 0) + 1
function on_event(ev)
  local f = assert(io.open(OUT, "a"))
  f:write("v1 ", tostring(LEAK), "\\n")
  f:close()
end
`, { dir });
    const d = await startDaemon({ script, env: { OUT: out } });
    try {
      let r = await post(d.port, EVENTS, [egEvent()], NOTIFY);
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(readOut(out), ['v1 from v1']);

      await saveRename(script, `local OUT = assert(os.getenv("OUT"))
local at_load = tostring(LEAK) .. " " .. type(helper_v1) .. " " .. tostring(on_event)
state.loads = (state.loads or 0) + 1
function on_event(ev)
  local f = assert(io.open(OUT, "a"))
  f:write("v2 LEAK=", tostring(LEAK), " at_load=", at_load, " state.x=", tostring(state.x),
          " loads=", tostring(state.loads), "\\n")
  f:close()
end
`);
      await d.waitStderr(/script reloaded[^\n]*generation=2/, 2000);
      r = await post(d.port, EVENTS, [egEvent()], NOTIFY);
      assert.equal(r.status, 200, r.text);
      assert.equal(readOut(out).at(-1), 'v2 LEAK=nil at_load=nil nil nil state.x=kept loads=2',
        'v1 globals (LEAK, helper_v1, on_event) are not visible to v2; state is shared');
    } finally {
      await d.stop();
    }
  });

  it('a reload whose chunk fails half-way leaves nothing of it behind', { timeout: 20000 }, async () => {
    const dir = tmpDir();
    const out = outPath(dir);
    const script = writeScript(`local OUT = assert(os.getenv("OUT"))
function on_event(ev)
  local f = assert(io.open(OUT, "a")); f:write("v1\\n"); f:close()
end
`, { dir });
    const d = await startDaemon({ script, env: { OUT: out } });
    try {
      const text = `local OUT = assert(os.getenv("OUT"))
state.half = "written by the broken version"
function on_event(ev)
  local f = assert(io.open(OUT, "a")); f:write("broken\\n"); f:close()
end
function on_connected(ev) end
error("refusing to load") -- @@ERR
`;
      await saveRename(script, text);
      await d.waitStderr(new RegExp(`reload failed[^\\n]*hook\\.lua:${lineOf(text, '@@ERR')}: refusing to load`), 2000);
      const r = await post(d.port, EVENTS, [egEvent()], NOTIFY);
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(readOut(out), ['v1']);
      const h = await health(d.port);
      assert.equal(h.generation, 1, JSON.stringify(h));
      assert.match(String(h.last_reload_error), /refusing to load/);
    } finally {
      await d.stop();
    }
  });

  it('a new version that loops forever or exhausts memory at load fails under the budgets; the old one serves on', { timeout: 20000 }, async () => {
    const dir = tmpDir();
    const out = outPath(dir);
    const script = writeScript(versionScript(1), { dir });
    const d = await startDaemon({ script, env: { OUT: out }, args: ['--cpu-budget', '1000000', '--lua-memory', '32m'] });
    try {
      const send = async () => {
        const e = egEvent();
        const { ms, value: r } = await (async () => {
          const t0 = Date.now();
          const v = await post(d.port, EVENTS, [e], NOTIFY, { timeoutMs: 3000 });
          return { ms: Date.now() - t0, value: v };
        })();
        assert.equal(r.status, 200, r.text);
        return { v: handledBy(out).get(e.id)[0], ms };
      };
      const loop = 'state.n = 1\nwhile true do end -- @@LOOP\nfunction on_event(ev) end\n';
      await saveRename(script, loop);
      await d.waitStderr(/reload failed[^\n]*cpu budget exceeded/, 3000);
      assert.match(failedLines(d.stderr()).at(-1), new RegExp(`hook\\.lua:${lineOf(loop, '@@LOOP')}`));
      assert.equal((await send()).v, 1);

      const bomb = 'local t = {}\nfor i = 1, math.huge do t[i] = string.rep("x", 1000) .. i end\nfunction on_event(ev) end\n';
      await saveRename(script, bomb);
      await waitFor(() => failedLines(d.stderr()).length === 2, 3000, `the memory bomb's reload failing\n${reloadLog(d.stderr())}`);
      assert.match(failedLines(d.stderr()).at(-1), /memory/i);
      assert.equal((await send()).v, 1);
      assert.equal(countReloaded(d.stderr()).length, 0, reloadLog(d.stderr()));

      // and a good version still comes in afterwards
      await saveRename(script, versionScript(2));
      await d.waitStderr(/script reloaded[^\n]*generation=2/, 2000);
      assert.equal((await send()).v, 2);
    } finally {
      await d.stop();
    }
  });
});

describe('timers across a reload', () => {
  it('periodic timers of the old version stop at the swap; its pending one-shot still fires', { timeout: 20000 }, async () => {
    const dir = tmpDir();
    const out = outPath(dir);
    const script = writeScript(`local OUT = assert(os.getenv("OUT"))
local n = 0
timer.every(50, function()
  n = n + 1
  log.info("tick-v1", n)
end)
timer.after(600, function()
  log.info("oneshot-v1", tostring(V2ONLY))
  local f = assert(io.open(OUT, "a")); f:write("oneshot v1 V2ONLY=", tostring(V2ONLY), "\\n"); f:close()
end)
function on_event(ev) end
`, { dir });
    const d = await startDaemon({ script, env: { OUT: out } });
    try {
      await sleep(200);
      await saveRename(script, `local n = 0
V2ONLY = true
local t = timer.every(50, function()
  n = n + 1
  log.info("tick-v2", n)
end)
function on_event(ev)
  if type(ev.data) == "table" and ev.data.action == "cancel" then t:cancel() end
end
`);
      await d.waitStderr(/script reloaded[^\n]*generation=2/, 2000);
      await waitFor(() => readOut(out).length > 0, 2000, 'the v1 one-shot timer');
      await sleep(400); // plenty of time for stray v1 ticks to show up

      const lines = d.stderr().split('\n');
      const ts = (l) => Date.parse(l.slice(0, l.indexOf(' ')));
      const reloadLine = lines.find((l) => /script reloaded/.test(l));
      const tReload = ts(reloadLine);
      const v1 = lines.filter((l) => /tick-v1 \d+/.test(l));
      const v2 = lines.filter((l) => /tick-v2 \d+/.test(l));
      const reloadIdx = lines.indexOf(reloadLine);
      const v1After = lines.slice(reloadIdx + 1).filter((l) => /tick-v1 \d+/.test(l));
      assert.ok(v1.length >= 2, `v1 ticked before the reload:\n${d.stderr()}`);
      assert.ok(v1After.length <= 1, `v1 ticks after the reload line:\n${v1After.join('\n')}`);
      for (const l of v1After) {
        assert.ok(ts(l) - tReload <= 60, `a v1 tick long after the reload: ${l} (reload: ${reloadLine})`);
      }
      assert.ok(v2.length >= 4, `the new version's periodic timer runs:\n${d.stderr()}`);
      assert.deepEqual(readOut(out), ['oneshot v1 V2ONLY=nil'],
        'the one-shot of v1 fired, in v1\'s environment');

      // cancel v2's timer so that the daemon has nothing left to run: it must then stop
      // on SIGTERM (the stopped v1 timer must not keep the loop alive either)
      const r = await post(d.port, EVENTS, [egEvent({ data: { action: 'cancel' } })], NOTIFY);
      assert.equal(r.status, 200, r.text);
      const nTicks = d.stderr().match(/tick-v2 \d+/g).length;
      await sleep(150);
      assert.ok(d.stderr().match(/tick-v2 \d+/g).length <= nTicks + 1, 'handle:cancel() stops a periodic timer');
    } finally {
      await d.stop();
    }
  });
});

describe('SIGHUP and --no-reload', () => {
  it('--no-reload: edits do nothing; SIGHUP reloads', { timeout: 20000 }, async () => {
    const dir = tmpDir();
    const out = outPath(dir);
    const script = writeScript(versionScript(1), { dir });
    const d = await startDaemon({ script, env: { OUT: out }, args: ['--no-reload'] });
    try {
      const send = async () => {
        const e = egEvent();
        const r = await post(d.port, EVENTS, [e], NOTIFY);
        assert.equal(r.status, 200, r.text);
        return handledBy(out).get(e.id)[0];
      };
      assert.equal(await send(), 1);
      for (const [, save] of SAVES) await save(script, versionScript(2));
      await sleep(600);
      assert.equal(await send(), 1, 'with --no-reload the edit is not picked up');
      assert.equal(countReloaded(d.stderr()).length, 0, d.stderr());
      assert.equal((await health(d.port)).generation, 1);

      d.proc.kill('SIGHUP');
      await d.waitStderr(/script reloaded reason="?SIGHUP"? generation=2/, 2000);
      assert.equal(await send(), 2, 'SIGHUP brought in version 2');
      assert.equal((await health(d.port)).generation, 2);

      // a broken file on SIGHUP: reported, version 2 keeps serving
      const { text, line } = syntaxErrorScript(3);
      fs.writeFileSync(script, text);
      d.proc.kill('SIGHUP');
      await d.waitStderr(new RegExp(`reload failed[^\\n]*reason="?SIGHUP"?[^\\n]*hook\\.lua:${line}:`), 2000);
      assert.equal(await send(), 2);
      const h = await health(d.port);
      assert.match(String(h.last_reload_error), new RegExp(`hook\\.lua:${line}:`));
      assert.equal(countReloaded(d.stderr()).length, 1, d.stderr());
    } finally {
      await d.stop();
    }
  });

  it('SIGHUP reloads while watching too, without a second reload from the watcher', { timeout: 20000 }, async () => {
    const dir = tmpDir();
    const out = outPath(dir);
    const script = writeScript(versionScript(1), { dir });
    const d = await startDaemon({ script, env: { OUT: out } });
    try {
      d.proc.kill('SIGHUP');
      await d.waitStderr(/script reloaded reason="?SIGHUP"? generation=2/, 2000);
      await sleep(400);
      assert.equal(countReloaded(d.stderr()).length, 1, d.stderr());
      const e = egEvent();
      const r = await post(d.port, EVENTS, [e], NOTIFY);
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(handledBy(out).get(e.id), [1]);
    } finally {
      await d.stop();
    }
  });
});
