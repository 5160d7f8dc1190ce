// examples/hello.lua (what scripts/run.sh runs) and the README's two-minute tour,
// driven the way a user does it: the real binary, `luahook send`, and an edit of the
// script while it serves.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT, startDaemon, runCli, tmpDir, post, waitFor, loadDataText } from './lib.mjs';

const NOTIFY = { 'aeg-event-type': 'Notification', 'content-type': 'application/json' };

describe('examples/hello.lua', () => {
  let d;
  after(async () => { await d?.stop(); });

  it('logs every kind of event and acknowledges it', async () => {
    const script = path.join(ROOT, 'examples', 'hello.lua');
    const check = await runCli(['check', script]);
    assert.equal(check.code, 0, check.stderr);
    assert.match(check.stdout, /on_connected on_disconnected on_event/);
    d = await startDaemon({ script, args: ['--no-reload'] });
    for (const f of ['connected.json', 'disconnected.json']) {
      const body = fs.readFileSync(path.join(ROOT, 'examples', 'events', f), 'utf8');
      const r = await post(d.port, '/api/events', body, NOTIFY);
      assert.equal(r.status, 200, `${f}: ${r.text}`);
    }
    const other = JSON.stringify([{ id: 'hello-3', eventType: 'Contoso.Thing', subject: '/x',
      eventTime: '2026-01-01T00:00:00Z', data: {} }]);
    assert.equal((await post(d.port, '/api/events', other, NOTIFY)).status, 200);
    await waitFor(() => /INFO online chat user-eymwyo23 crH0uxVSvP61p5wkFY1x1A/.test(d.stderr()) &&
      /INFO offline chat crH0uxVSvP61p5wkFY1x1A Internal server error\./.test(d.stderr()) &&
      /INFO event Contoso\.Thing \/x hello-3/.test(d.stderr()), 3000, 'the three log lines');
  });
});

describe('the README tour', () => {
  let d;
  after(async () => { await d?.stop(); });

  // The handler exactly as README.md shows it.
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const tour = /Write a handler, `chat\.lua`:\s*```lua\n([\s\S]*?)```/.exec(readme);

  it('the README has the tour handler', () => { assert.ok(tour, 'chat.lua block in README.md'); });

  it('send --sample, then an edit that reloads, then a broken edit that does not', async () => {
    const dir = tmpDir();
    const script = path.join(dir, 'chat.lua');
    fs.writeFileSync(script, tour[1]);
    d = await startDaemon({ script });
    const sent = await runCli(['send', d.url(), '--sample', 'connected', '--user', 'alice']);
    assert.equal(sent.code, 0, sent.stdout + sent.stderr);
    assert.match(sent.stdout, /validation: ok/);
    assert.match(sent.stdout, /sample: 200/);
    await waitFor(() => /INFO online alice .*online=1/.test(d.stderr()), 3000, 'the online line');

    fs.writeFileSync(script, tour[1].replace('"online"', '"hello"'));
    await waitFor(() => /script reloaded reason="chat\.lua changed" generation=2/.test(d.stderr()), 3000, 'the reload');
    await runCli(['send', d.url(), '--sample', 'connected', '--user', 'bob']);
    await waitFor(() => /INFO hello bob .*online=2/.test(d.stderr()), 3000, 'new code, state kept');

    fs.writeFileSync(script, 'function on_connected(ev\n');
    await waitFor(() => /reload failed, previous code keeps serving .*chat\.lua:\d+:/.test(d.stderr()), 3000, 'the failed reload');
    await runCli(['send', d.url(), '--sample', 'connected', '--user', 'carol']);
    await waitFor(() => /INFO hello carol .*online=3/.test(d.stderr()), 3000, 'old code still serving');

    const replay = await runCli(['replay', path.join(ROOT, 'examples', 'hello.lua'),
      path.join(ROOT, 'examples', 'events', 'connected.json')]);
    assert.equal(replay.code, 0, replay.stderr);
    assert.match(replay.stdout, /Microsoft\.SignalRService\.ClientConnectionConnected ok/);
  });
});
