// The command line: version, --help, usage errors (exit 2), check (exit 0/1 with
// file:line), and `run` refusing a broken script before it binds.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { runCli, writeScript, tmpDir, startDaemon, get, post, egEvent, SANITIZER_RE } from './lib.mjs';
import path from 'node:path';

const GOOD = `
function on_connected(ev) end
function on_disconnected(ev) end
function on_event(ev) end
`;
// syntax error on line 3
const SYNTAX = `function on_event(ev)
  local x = 1
  if x then x = = 2 end
end
`;
// runtime error while loading, on line 2
const RUNTIME = `local t = nil
local y = t.field
function on_event(ev) end
`;

const nonEmptyLines = (s) => s.split('\n').filter((l) => l.trim() !== '');

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

describe('cli', () => {
  it('version prints a version and exits 0', async () => {
    const r = await runCli(['version']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /\d+\.\d+\.\d+/, `stdout: ${r.stdout}`);
  });

  for (const sub of ['run', 'check']) {
    it(`${sub} --help prints usage on stdout and exits 0`, async () => {
      const r = await runCli([sub, '--help']);
      assert.equal(r.code, 0, `exit ${r.code}; stderr: ${r.stderr}`);
      assert.match(r.stdout, /usage/i, `stdout: ${r.stdout}`);
      assert.match(r.stdout, new RegExp(`\\b${sub}\\b`), 'usage names the sub-command');
      if (sub === 'run') {
        for (const opt of ['--listen', '--path', '--secret', '--max-body']) {
          assert.ok(r.stdout.includes(opt), `run --help mentions ${opt}`);
        }
      }
    });
  }

  it('run with an unknown option -> exit 2 and a one-line error', async () => {
    const script = writeScript(GOOD);
    const r = await runCli(['run', script, '--no-such-option', '--listen', '127.0.0.1:0'], { timeoutMs: 5000 });
    assert.equal(r.timedOut, false, 'must not start serving');
    assert.equal(r.code, 2, `exit ${r.code}; stderr: ${r.stderr}`);
    const lines = nonEmptyLines(r.stderr);
    assert.equal(lines.length, 1, `exactly one line on stderr:\n${r.stderr}`);
    assert.match(lines[0], /no-such-option/, 'the error names the option');
  });

  it('check with an unknown option -> exit 2 and a one-line error', async () => {
    const r = await runCli(['check', writeScript(GOOD), '--bogus']);
    assert.equal(r.code, 2, `exit ${r.code}; stderr: ${r.stderr}`);
    assert.equal(nonEmptyLines(r.stderr).length, 1, `one line:\n${r.stderr}`);
  });

  it('an option without its value -> exit 2', async () => {
    const r = await runCli(['run', writeScript(GOOD), '--listen'], { timeoutMs: 5000 });
    assert.equal(r.timedOut, false);
    assert.equal(r.code, 2, `exit ${r.code}; stderr: ${r.stderr}`);
    assert.equal(nonEmptyLines(r.stderr).length, 1, `one line:\n${r.stderr}`);
  });

  it('run without a script -> exit 2 and a one-line error', async () => {
    const r = await runCli(['run'], { timeoutMs: 5000 });
    assert.equal(r.timedOut, false);
    assert.equal(r.code, 2, `exit ${r.code}; stderr: ${r.stderr}`);
    assert.equal(nonEmptyLines(r.stderr).length, 1, `one line:\n${r.stderr}`);
  });

  it('check without a script -> exit 2', async () => {
    const r = await runCli(['check']);
    assert.equal(r.code, 2, `exit ${r.code}; stderr: ${r.stderr}`);
    assert.equal(nonEmptyLines(r.stderr).length, 1, `one line:\n${r.stderr}`);
  });

  it('an unknown sub-command -> exit 2', async () => {
    const r = await runCli(['frobnicate']);
    assert.equal(r.code, 2, `exit ${r.code}; stderr: ${r.stderr}`);
  });

  it('an invalid --max-body value -> exit 2', async () => {
    const r = await runCli(['run', writeScript(GOOD), '--listen', '127.0.0.1:0', '--max-body', 'lots'], { timeoutMs: 5000 });
    assert.equal(r.timedOut, false);
    assert.equal(r.code, 2, `exit ${r.code}; stderr: ${r.stderr}`);
  });

  it('an invalid --log-level value -> exit 2', async () => {
    const r = await runCli(['run', writeScript(GOOD), '--listen', '127.0.0.1:0', '--log-level', 'loud'], { timeoutMs: 5000 });
    assert.equal(r.timedOut, false);
    assert.equal(r.code, 2, `exit ${r.code}; stderr: ${r.stderr}`);
  });

  it('check on a good script -> exit 0', async () => {
    const r = await runCli(['check', writeScript(GOOD)]);
    assert.equal(r.code, 0, `stdout: ${r.stdout}\nstderr: ${r.stderr}`);
  });

  it('check on a script with a syntax error -> exit 1, file:line in the output', async () => {
    const script = writeScript(SYNTAX, { name: 'broken.lua' });
    const r = await runCli(['check', script]);
    assert.equal(r.code, 1, `exit ${r.code}`);
    assert.match(r.stdout + r.stderr, /broken\.lua:3\b/, `output: ${r.stdout}${r.stderr}`);
  });

  it('check on a script that fails while loading -> exit 1, file:line in the output', async () => {
    const script = writeScript(RUNTIME, { name: 'throws.lua' });
    const r = await runCli(['check', script]);
    assert.equal(r.code, 1, `exit ${r.code}`);
    assert.match(r.stdout + r.stderr, /throws\.lua:2\b/, `output: ${r.stdout}${r.stderr}`);
  });

  it('check on a missing file -> exit 1 (or 2) naming the file', async () => {
    const missing = path.join(tmpDir(), 'nope.lua');
    const r = await runCli(['check', missing]);
    assert.ok(r.code === 1 || r.code === 2, `exit ${r.code}`);
    assert.ok((r.stdout + r.stderr).includes('nope.lua'), `output names the file: ${r.stdout}${r.stderr}`);
  });

  it('run on a script with a syntax error exits 1 before binding the port', async () => {
    const script = writeScript(SYNTAX, { name: 'broken.lua' });
    const port = await freePort();
    const r = await runCli(['run', script, '--listen', `127.0.0.1:${port}`], { timeoutMs: 5000 });
    assert.equal(r.timedOut, false, 'must exit, not serve');
    assert.equal(r.code, 1, `exit ${r.code}; stderr: ${r.stderr}`);
    assert.match(r.stderr, /broken\.lua:3\b/);
    assert.doesNotMatch(r.stderr, /listening on/, 'never listened');
  });

  it('the listen address comes from --listen (fixed port) and LUAHOOK_LISTEN', async () => {
    const script = writeScript(GOOD);
    const p1 = await freePort();
    const d1 = await startDaemon({ script, listen: false, args: ['--listen', `127.0.0.1:${p1}`] });
    try {
      assert.equal(d1.port, p1);
      assert.equal((await get(p1, '/healthz')).status, 200);
    } finally { await d1.stop(); }
    const p2 = await freePort();
    const d2 = await startDaemon({ script, listen: false, env: { LUAHOOK_LISTEN: `127.0.0.1:${p2}` } });
    try {
      assert.equal(d2.port, p2);
      assert.equal((await get(p2, '/healthz')).status, 200);
    } finally { await d2.stop(); }
  });

  for (const level of ['debug', 'info', 'warn', 'error']) {
    it(`--listen 127.0.0.1:0 --log-level ${level}: the "listening on" line still tells the port`, async () => {
      const d = await startDaemon({ script: writeScript(GOOD), args: ['--log-level', level], timeoutMs: 3000 });
      try {
        assert.equal((await get(d.port, '/healthz')).status, 200);
      } finally { await d.stop(); }
    });
  }

  it('--log-format json: every stderr line is one JSON record', async () => {
    const script = writeScript(`function on_event(ev)\n  error("json-log-boom")\nend\n`, { name: 'jl.lua' });
    const d = await startDaemon({ script, args: ['--log-format', 'json'] });
    try {
      const r = await post(d.port, '/api/events', [egEvent({ id: 'json-log-1' })]);
      assert.equal(r.status, 500);
      await d.waitStderr(/json-log-boom/, 3000);
    } finally { await d.stop(); }
    const lines = d.stderr().split('\n').filter((l) => l.trim() !== '');
    for (const l of lines) assert.doesNotThrow(() => JSON.parse(l), `not a JSON record: ${l}`);
    const rec = lines.map((l) => JSON.parse(l)).find((o) => JSON.stringify(o).includes('json-log-boom'));
    assert.ok(JSON.stringify(rec).includes('json-log-1'), `the error record names the event id: ${JSON.stringify(rec)}`);
    assert.match(JSON.stringify(rec), /jl\.lua:2/, 'and the script file:line');
  });

  it('SIGTERM stops the daemon with exit 0', async () => {
    const d = await startDaemon({ script: writeScript(GOOD) });
    d.proc.kill('SIGTERM');
    const r = await Promise.race([d.exited, new Promise((res) => setTimeout(() => res(null), 5000))]);
    if (!r) { await d.stop(); assert.fail('still running 5 s after SIGTERM'); }
    assert.equal(r.code, 0, `exit ${JSON.stringify(r)}; stderr: ${d.stderr()}`);
    assert.doesNotMatch(d.stderr(), SANITIZER_RE);
  });

  it('SIGTERM stops the daemon promptly even with a periodic timer or a far one-shot timer pending', async () => {
    for (const body of ['timer.every(30, function() end)', 'timer.after(60000, function() end)']) {
      const d = await startDaemon({ script: writeScript(`${body}\nfunction on_event(ev) end\n`) });
      await new Promise((res) => setTimeout(res, 200));
      d.proc.kill('SIGTERM');
      const r = await Promise.race([d.exited, new Promise((res) => setTimeout(() => res(null), 3000))]);
      if (!r) {
        await d.stop(1000, { check: false });
        assert.fail(`[${body}] still running 3 s after SIGTERM; stderr:\n${d.stderr()}`);
      }
      assert.equal(r.code, 0, `[${body}] exit ${JSON.stringify(r)}`);
    }
  });
});
