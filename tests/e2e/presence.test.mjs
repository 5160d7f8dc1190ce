// examples/presence.lua run by the real daemon against the fake SignalR service
// (fake-signalr.mjs): welcome + connectionCount on connect, nothing on duplicates,
// count and userOffline (after the grace period) on disconnect, no ghosts under
// out-of-order delivery, no userOffline after a quick reconnect, and a failing service
// failing the event (HTTP 500) with a retry that finishes only what was left.
import { describe, it, before, after, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT, startDaemon, post, signalrEvent, sleep, runCli, tmpDir } from './lib.mjs';
import { startFakeSignalR } from './fake-signalr.mjs';

const SCRIPT = path.join(ROOT, 'examples', 'presence.lua');
const NOTIFY = { 'aeg-event-type': 'Notification' };
const GRACE_MS = 300;
const WELCOME = { text: 'Welcome to Serverless Chat', sender: '__SYSTEM__' };

const T0 = Date.parse('2024-05-01T12:00:00Z');
const ts = (ms) => new Date(T0 + ms).toISOString().replace(/\.(\d{3})Z$/, '.$10000Z'); // 7 digits like the service

function connected(id, user, atMs, over = {}) {
  return signalrEvent('Connected', over, { connectionId: id, userId: user, timestamp: ts(atMs) });
}
function disconnected(id, user, atMs, over = {}, dataOver = {}) {
  return signalrEvent('Disconnected', over, { connectionId: id, userId: user, timestamp: ts(atMs), ...dataOver });
}

const welcome = (id) => ({ to: `connection:${id}`, target: 'newMessage', arguments: [WELCOME] });
const count = (n) => ({ to: 'hub', target: 'connectionCount', arguments: [n] });
const offline = (user) => ({ to: 'hub', target: 'userOffline', arguments: [user] });

describe('examples/presence.lua', () => {
  let fake;
  let d;

  before(async () => {
    fake = await startFakeSignalR();
  });
  after(async () => {
    if (fake) await fake.stop();
  });
  beforeEach(async () => {
    fake.reset();
    d = await startDaemon({
      script: SCRIPT,
      env: { AzureSignalRConnectionString: fake.connectionString(), PRESENCE_GRACE_MS: String(GRACE_MS) },
    });
  });
  afterEach(async () => {
    if (d) await d.stop();
    d = null;
  });

  const sends = () => fake.sends().map(({ to, target, arguments: args }) => ({ to, target, arguments: args }));

  async function deliver(events, want = 200) {
    const r = await post(d.port, '/api/events', Array.isArray(events) ? events : [events], NOTIFY);
    assert.equal(r.status, want, `delivery answered ${r.status} ${r.text}\n${d.stderr().slice(-3000)}`);
    return r;
  }

  it('welcome, counts and userOffline, exactly and in order; duplicates send nothing', async () => {
    const c1 = connected('c1', 'alice', 0);
    await deliver(c1);
    assert.deepEqual(sends(), [welcome('c1'), count(1)]);
    const hub = fake.sends()[0].hub;
    assert.equal(hub, 'chat');
    assert.deepEqual(JSON.parse(fake.sends()[0].body), { target: 'newMessage', arguments: [WELCOME] });
    assert.equal(fake.sends()[1].body, '{"target":"connectionCount","arguments":[1]}');

    await deliver(c1); // the same event again (Event Grid redelivery)
    await deliver(connected('c1', 'alice', 0)); // the same connection under another event id
    assert.deepEqual(sends(), [welcome('c1'), count(1)], 'a duplicate connected event sends nothing');

    await deliver(connected('c2', 'bob', 10));
    await deliver(disconnected('c1', 'alice', 20));
    assert.deepEqual(sends(), [welcome('c1'), count(1), welcome('c2'), count(2), count(1)]);
    await fake.waitFor(() => fake.sends().length === 6, 3000, 'userOffline');
    assert.deepEqual(sends().at(-1), offline('alice'));
    assert.equal(fake.sends().at(-1).body, '{"target":"userOffline","arguments":["alice"]}');

    await deliver(disconnected('c1', 'alice', 20)); // duplicate disconnect
    await deliver(connected('c3', 'alice', 30)); // alice back later
    await sleep(GRACE_MS + 200);
    assert.deepEqual(sends(), [
      welcome('c1'), count(1), welcome('c2'), count(2), count(1), offline('alice'), welcome('c3'), count(2),
    ]);
    for (const c of fake.calls) {
      assert.equal(c.authError, null);
      assert.equal(c.status, 202);
      assert.equal(c.claims.aud, `${fake.base}${c.path}`);
    }
  });

  it('a reconnect within the grace period sends no userOffline', async () => {
    await deliver(connected('a1', 'carol', 0));
    await deliver(disconnected('a1', 'carol', 100));
    await sleep(GRACE_MS / 3);
    await deliver(connected('a2', 'carol', 200));
    await sleep(GRACE_MS * 2 + 200);
    assert.deepEqual(sends(), [welcome('a1'), count(1), count(0), welcome('a2'), count(1)]);

    // the user's other connection closing leaves her online: no timer either
    await deliver(connected('a3', 'carol', 300));
    await deliver(disconnected('a2', 'carol', 400));
    await sleep(GRACE_MS * 2 + 200);
    assert.deepEqual(sends().slice(5), [welcome('a3'), count(2), count(1)]);
  });

  it('out of order: a disconnect before its connect leaves no ghost', async () => {
    await deliver(connected('x0', 'dave', 0));
    // x1's disconnect (at 60) arrives before its connect (at 50)
    await deliver(disconnected('x1', 'erin', 60));
    assert.deepEqual(sends(), [welcome('x0'), count(1)], 'nothing changed, nothing sent');
    await deliver(connected('x1', 'erin', 50));
    assert.deepEqual(sends(), [welcome('x0'), count(1)], 'the late connect is ignored');
    await deliver(connected('x2', 'frank', 70));
    assert.deepEqual(sends().slice(2), [welcome('x2'), count(2)], 'x1 is not counted');
    // a connected event redelivered after its disconnect does not bring it back
    await deliver(disconnected('x2', 'frank', 80));
    await deliver(connected('x2', 'frank', 70));
    await deliver(connected('x3', 'gina', 90));
    assert.deepEqual(sends().slice(4), [count(1), welcome('x3'), count(2)]);
    await sleep(GRACE_MS + 300);
    assert.deepEqual(sends().slice(7), [offline('frank')], 'erin never was online: no userOffline for her');
  });

  it('out of order inside one batch, and a stale disconnect of an older incarnation', async () => {
    await deliver([disconnected('y1', 'hal', 20), connected('y1', 'hal', 10), connected('y2', 'ivy', 30)]);
    assert.deepEqual(sends(), [welcome('y2'), count(1)]);
    // a disconnect older than the connection it names is ignored
    await deliver(connected('y3', 'jo', 100));
    await deliver(disconnected('y3', 'jo', 90));
    assert.deepEqual(sends().slice(2), [welcome('y3'), count(2)]);
  });

  it('a failing SignalR service fails the event (500); the retry sends only what is left', async () => {
    fake.respond = () => ({ status: 500, code: 'Error.Internal', message: 'down' });
    const ev = connected('f1', 'kim', 0);
    await deliver(ev, 500);
    assert.match(d.stderr(), /welcome to f1 failed: signalr: 500 Error.Internal: down/);
    fake.respond = null;
    await deliver(ev, 200);
    assert.deepEqual(sends(), [welcome('f1'), count(1)]);

    // the count broadcast fails after the welcome went out: the retry sends the count only
    fake.respond = (c) => (c.route?.kind === 'hub' ? { status: 503, code: 'Error.Busy', message: 'busy' } : null);
    const ev2 = connected('f2', 'lee', 10);
    await deliver(ev2, 500);
    assert.deepEqual(sends().slice(2), [welcome('f2')]);
    fake.respond = null;
    await deliver(ev2, 200);
    assert.deepEqual(sends().slice(2), [welcome('f2'), count(2)]);

    // a disconnect whose count broadcast fails is retried too, and then goes on to userOffline
    fake.respond = () => ({ status: 500, code: 'Error.Internal', message: 'down' });
    const ev3 = disconnected('f2', 'lee', 20);
    await deliver(ev3, 500);
    fake.respond = null;
    await deliver(ev3, 200);
    await fake.waitFor(() => fake.sends().length === 6, 3000, 'userOffline');
    assert.deepEqual(sends().slice(4), [count(1), offline('lee')]);
  });

  it('concurrent connects: the last count broadcast carries the final count', async () => {
    fake.delayMs = 20;
    const evs = Array.from({ length: 8 }, (_, i) => connected(`p${i}`, `u${i}`, i));
    await Promise.all(evs.map((e) => deliver(e)));
    const s = sends();
    assert.equal(s.filter((x) => x.target === 'newMessage').length, 8);
    const counts = s.filter((x) => x.target === 'connectionCount').map((x) => x.arguments[0]);
    assert.ok(counts.length >= 1 && counts.length <= 8, JSON.stringify(counts));
    assert.equal(counts.at(-1), 8, `counts ${JSON.stringify(counts)}`);
    for (let i = 1; i < counts.length; i++) assert.ok(counts[i] > counts[i - 1], `counts increase: ${JSON.stringify(counts)}`);
  });

  it('state and grace timers survive a reload (SIGHUP)', async () => {
    await d.stop();
    const copy = path.join(tmpDir(), 'presence.lua');
    fs.copyFileSync(SCRIPT, copy);
    d = await startDaemon({
      script: copy,
      env: { AzureSignalRConnectionString: fake.connectionString(), PRESENCE_GRACE_MS: String(GRACE_MS) },
    });
    await deliver(connected('r1', 'mia', 0));
    await deliver(connected('r2', 'ned', 10));
    await deliver(disconnected('r2', 'ned', 20)); // ned's grace timer starts in generation 1
    await deliver(disconnected('r1', 'mia', 30)); // mia's too
    d.proc.kill('SIGHUP');
    await d.waitStderr(/script reloaded[^\n]*generation=2/, 3000);
    await deliver(connected('r1', 'mia', 0)); // a duplicate after the reload: still known
    await deliver(connected('r3', 'mia', 40)); // mia is back: the old generation's timer is cancelled
    await sleep(GRACE_MS * 2 + 200);
    // (ned's userOffline may come before or after r3's messages, depending on timing)
    assert.deepEqual(sends().filter((x) => x.target !== 'userOffline'), [
      welcome('r1'), count(1), welcome('r2'), count(2), count(1), count(0), welcome('r3'), count(1),
    ]);
    assert.deepEqual(sends().filter((x) => x.target === 'userOffline'), [offline('ned')]);
  });

  it('replays the example event files (luahook replay): session, out of order, CloudEvents', async () => {
    const ev = (f) => path.join(ROOT, 'examples', 'events', f);
    const r = await runCli(['replay', SCRIPT, ev('session.json'), ev('out-of-order.json'), ev('connected-cloudevents.json')], {
      env: { AzureSignalRConnectionString: fake.connectionString(), PRESENCE_GRACE_MS: '100' },
    });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(sends(), [
      welcome('conn-alice-1'), count(1), welcome('conn-bob-1'), count(2), count(1), offline('alice'),
      welcome('crH0uxVSvP61p5wkFY1x1B'), count(2),
    ]);
  });

  it('refuses to start without a connection string', async () => {
    const r = await runCli(['check', SCRIPT], { env: { AzureSignalRConnectionString: '' } });
    assert.equal(r.code, 1);
    assert.match(r.stderr + r.stdout, /connection string is missing/);
    const ok = await runCli(['check', SCRIPT], { env: { AzureSignalRConnectionString: fake.connectionString() } });
    assert.equal(ok.code, 0, ok.stderr);
  });
});
