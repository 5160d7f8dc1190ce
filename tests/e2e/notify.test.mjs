// examples/notify.lua run by the real daemon against a fake chat incoming webhook
// (a node:http server): retries with backoff until a post succeeds, fails the event
// (HTTP 500) only when every try failed, and posts nothing for clean disconnects.
import { describe, it, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import path from 'node:path';
import { ROOT, startDaemon, post, signalrEvent, sleep, runCli } from './lib.mjs';

const SCRIPT = path.join(ROOT, 'examples', 'notify.lua');
const NOTIFY = { 'aeg-event-type': 'Notification' };
const TRIES = 3;
const BACKOFF_MS = 100;
const TIMEOUT_MS = 400;

describe('examples/notify.lua', () => {
  let hook;
  let base;
  let posts = [];
  let plan = []; // per post, in order: a status code, or 'hang'; afterwards 200
  let d;

  before(async () => {
    hook = http.createServer((req, res) => {
      const parts = [];
      req.on('data', (c) => parts.push(c));
      req.on('end', () => {
        const body = Buffer.concat(parts).toString('utf8');
        posts.push({ method: req.method, url: req.url, headers: req.headers, body, at: Date.now() });
        const what = plan.length ? plan.shift() : 200;
        if (what === 'hang') return; // never answers: the client's timeout must fire
        res.writeHead(what, { 'Content-Type': 'text/plain' });
        res.end(what === 200 ? 'ok' : 'invalid_token');
      });
    });
    await new Promise((r) => hook.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${hook.address().port}`;
    d = await startDaemon({
      script: SCRIPT,
      env: {
        NOTIFY_WEBHOOK_URL: `${base}/services/T000/B000/XXXX`,
        NOTIFY_TRIES: String(TRIES),
        NOTIFY_BACKOFF_MS: String(BACKOFF_MS),
        NOTIFY_TIMEOUT_MS: String(TIMEOUT_MS),
      },
    });
  });
  after(async () => {
    if (d) await d.stop();
    hook?.closeAllConnections?.();
    if (hook) await new Promise((r) => hook.close(r));
  });
  beforeEach(() => {
    posts = [];
    plan = [];
  });

  async function deliver(events) {
    return post(d.port, '/api/events', Array.isArray(events) ? events : [events], NOTIFY, { timeoutMs: 15000 });
  }

  it('fails twice then succeeds: one event, 200, three posts with backoff', async () => {
    plan = [500, 503];
    const ev = signalrEvent('Disconnected', {}, { connectionId: 'conn-err-1', userId: 'alice', errorMessage: 'Connection reset <by> peer & co' });
    const r = await deliver(ev);
    assert.equal(r.status, 200, `${r.text}\n${d.stderr().slice(-2000)}`);
    assert.equal(posts.length, 3);
    for (const p of posts) {
      assert.equal(p.method, 'POST');
      assert.equal(p.url, '/services/T000/B000/XXXX');
      assert.match(p.headers['content-type'], /^application\/json/);
      const j = JSON.parse(p.body);
      assert.deepEqual(Object.keys(j), ['text']);
      assert.match(j.text, /conn-err-1/);
      assert.match(j.text, /alice/);
      assert.match(j.text, /hub chat/);
      assert.match(j.text, /Connection reset &lt;by&gt; peer &amp; co/);
    }
    assert.equal(posts[0].body, posts[2].body, 'the same message each try');
    assert.ok(posts[1].at - posts[0].at >= BACKOFF_MS - 10, `first backoff ${posts[1].at - posts[0].at} ms`);
    assert.ok(posts[2].at - posts[1].at >= 2 * BACKOFF_MS - 10, `second backoff ${posts[2].at - posts[1].at} ms`);
  });

  it('always failing: 500 after the configured number of tries', async () => {
    plan = Array(10).fill(502);
    const r = await deliver(signalrEvent('Disconnected', {}, { connectionId: 'conn-err-2', errorMessage: 'Internal server error.' }));
    assert.equal(r.status, 500);
    assert.equal(posts.length, TRIES);
    assert.match(d.stderr(), /webhook notification failed: HTTP 502 invalid_token/);
    // Event Grid's redelivery succeeds once the webhook is back
    plan = [];
    posts = [];
    const again = await deliver(signalrEvent('Disconnected', {}, { connectionId: 'conn-err-2', errorMessage: 'Internal server error.' }));
    assert.equal(again.status, 200);
    assert.equal(posts.length, 1);
  });

  it('a timed-out try is retried', async () => {
    plan = ['hang'];
    const t0 = Date.now();
    const r = await deliver(signalrEvent('Disconnected', {}, { connectionId: 'conn-err-3', errorMessage: 'x' }));
    assert.equal(r.status, 200);
    assert.equal(posts.length, 2);
    assert.ok(Date.now() - t0 >= TIMEOUT_MS, 'waited for the timeout');
  });

  it('a non-retryable answer (400) stops the tries and fails the event', async () => {
    plan = [400];
    const r = await deliver(signalrEvent('Disconnected', {}, { connectionId: 'conn-err-4', errorMessage: 'x' }));
    assert.equal(r.status, 500);
    assert.equal(posts.length, 1);
  });

  it('replays the example event files (luahook replay)', async () => {
    const ev = (f) => path.join(ROOT, 'examples', 'events', f);
    const r = await runCli(['replay', SCRIPT, ev('connected.json'), ev('disconnected.json'), ev('disconnected-clean.json'), ev('session.json')], {
      env: { NOTIFY_WEBHOOK_URL: `${base}/replay` },
    });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(posts.map((p) => JSON.parse(p.body).text.match(/closed with an error: (.*) \(at/)[1]),
      ['Internal server error.', 'Connection closed with an error.']);
  });

  it('refuses to start without NOTIFY_WEBHOOK_URL', async () => {
    const r = await runCli(['check', SCRIPT], { env: { NOTIFY_WEBHOOK_URL: '' } });
    assert.equal(r.code, 1);
    assert.match(r.stderr + r.stdout, /NOTIFY_WEBHOOK_URL must be set/);
  });

  it('clean disconnects and connects post nothing', async () => {
    const clean = signalrEvent('Disconnected', {}, { connectionId: 'conn-ok-1' });
    delete clean.data.errorMessage;
    const r = await deliver([
      clean,
      signalrEvent('Disconnected', {}, { connectionId: 'conn-ok-2', errorMessage: '' }),
      signalrEvent('Disconnected', {}, { connectionId: 'conn-ok-3', errorMessage: null }),
      signalrEvent('Connected', {}, { connectionId: 'conn-ok-4' }),
    ]);
    assert.equal(r.status, 200, r.text);
    await sleep(100);
    assert.equal(posts.length, 0);
  });
});
