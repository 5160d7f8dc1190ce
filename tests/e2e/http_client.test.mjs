// The `http` module (outbound requests from handlers) against node servers on
// 127.0.0.1: methods, bodies, headers, status, errors by class, TLS, connection
// reuse and limits under load, and that the daemon keeps serving while handlers wait.
import { describe, it, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import {
  RECORDER, startDaemon, runCli, writeScript, outPath, readRecords, clearOut, tmpDir,
  post, get, egEvent, sleep, waitFor,
} from './lib.mjs';

const EVENTS = '/api/events';
const NOTIFY = { 'aeg-event-type': 'Notification' };
const MAX_HOST_CONNECTIONS = 16;

// A handler per `op`; results go to record(op, ...).
const SCRIPT = `${RECORDER}
local T = os.getenv("TARGET")
local TLS = os.getenv("TLS_TARGET")
local CA = os.getenv("CA_FILE")
local CLOSED = os.getenv("CLOSED_PORT")

local function summary(res, err)
  if not res then return { err = err } end
  return { status = res.status, headers = res.headers, body = res.body }
end

local ops = {}
function ops.get()
  record("get", summary(http.get(T .. "/echo?q=1", { headers = { ["X-Test"] = "yes", Accept = "text/plain" } })))
end
function ops.request()
  record("request", summary(http.request{ method = "put", url = T .. "/echo", body = "plain body",
                                          headers = { ["Content-Type"] = "text/plain" } }))
end
function ops.post_table()
  record("post_table", summary(http.post(T .. "/echo", { a = 1, list = { 1, 2, 3 }, s = "x" })))
end
function ops.post_binary()
  record("post_binary", summary(http.post(T .. "/echo", "a\\0b\\0c", { headers = { ["content-type"] = "application/octet-stream" } })))
end
function ops.sequential()
  local bodies = {}
  for i = 1, 3 do
    local r = assert(http.get(T .. "/n/" .. i))
    bodies[#bodies + 1] = r.body
  end
  record("sequential", bodies)
end
function ops.pcall()
  local ok, res = pcall(http.get, T .. "/n/7")
  local ok2, e2 = pcall(function()
    local r = http.get(T .. "/n/8")
    error("raised after the yield with " .. r.body, 0)
  end)
  record("pcall", { ok = ok, body = res.body, ok2 = ok2, e2 = e2 })
end
function ops.status()
  record("status", summary(http.get(T .. "/status/404")))
end
function ops.multi()
  record("multi", summary(http.get(T .. "/multi")))
end
function ops.redirect()
  local a = http.get(T .. "/redirect")
  local b = http.get(T .. "/redirect", { follow_redirects = true })
  record("redirect", { a = a.status, loc = a.headers.location, b = b.status, b_body = b.body })
end
function ops.timeout()
  local t0 = timer and timer.now() or 0
  local res, err = http.get(T .. "/hang", { timeout_ms = 300 })
  record("timeout", { res = res, err = err, ms = timer and (timer.now() - t0) or -1 })
end
function ops.refused()
  record("refused", summary(http.get("http://127.0.0.1:" .. CLOSED .. "/")))
end
function ops.too_large()
  local a, ea = http.get(T .. "/big?n=2000", { max_body = 1000 })
  local b, eb = http.get(T .. "/bigchunked?n=5000", { max_body = 1000 })
  local c = http.get(T .. "/big?n=1000", { max_body = 1000 })
  record("too_large", { a = a, ea = ea, b = b, eb = eb, c_len = c and #c.body })
end
function ops.tls()
  local a, ea = http.get(TLS .. "/n/1")
  local b, eb = http.get(TLS .. "/n/2", { ca_file = CA })
  local c, ec = http.get(TLS .. "/n/3", { tls_verify = false })
  record("tls", { a = a, ea = ea, b = b and b.body, eb = eb, c = c and c.body, ec = ec })
end
function ops.misuse()
  local function e(f, ...) local ok, m = pcall(f, ...) return ok and "no error" or m end
  record("misuse", {
    unknown = e(http.request, { url = T, timeout = 5 }),
    nourl = e(http.request, {}),
    badheader = e(http.get, T, { headers = { ["X-A"] = "a\\r\\nInjected: 1" } }),
    badmethod = e(http.request, { url = T, method = "GET /x" }),
    badbody = e(http.post, T, print),
    coroutine = e(coroutine.wrap(function() return http.get(T) end)),
  })
end
function ops.conc(ev)
  local r, err = http.post(T .. "/conc", { id = ev.id })
  assert(r, err)
  assert(r.status == 200, r.status)
end
function ops.slow()
  local r = assert(http.get(T .. "/slow"))
  record("slow", r.body)
end

function on_event(ev)
  local f = ops[ev.data.op]
  assert(f, "no op " .. tostring(ev.data.op))
  f(ev)
end
`;

function startTarget(createServer, opts) {
  const stats = { open: 0, maxOpen: 0, connections: 0, requests: {}, hanging: [] };
  const handler = (req, res) => {
    const u = new URL(req.url, 'http://x');
    stats.requests[u.pathname] = (stats.requests[u.pathname] || 0) + 1;
    const parts = [];
    req.on('data', (d) => parts.push(d));
    req.on('end', () => {
      const body = Buffer.concat(parts);
      if (u.pathname === '/echo') {
        const out = JSON.stringify({
          method: req.method, url: req.url, headers: req.headers, len: body.length,
          hex: body.toString('hex'), text: body.toString('utf8'),
        });
        res.writeHead(200, { 'Content-Type': 'application/json', 'X-Reply': 'Echo' });
        res.end(out);
      } else if (u.pathname.startsWith('/n/')) {
        res.end(`n${u.pathname.slice(3)}`);
      } else if (u.pathname === '/status/404') {
        res.writeHead(404, { 'Content-Type': 'text/plain' });
        res.end('nope');
      } else if (u.pathname === '/multi') {
        res.setHeader('X-Multi', ['a', 'b']);
        res.setHeader('Set-Cookie', ['c1=1', 'c2=2']);
        res.end('m');
      } else if (u.pathname === '/redirect') {
        res.writeHead(302, { Location: '/n/redirected', 'X-First': 'only-on-302' });
        res.end();
      } else if (u.pathname === '/hang') {
        stats.hanging.push(res);
      } else if (u.pathname === '/big') {
        const n = Number(u.searchParams.get('n'));
        res.writeHead(200, { 'Content-Length': n });
        res.end('x'.repeat(n));
      } else if (u.pathname === '/bigchunked') {
        const n = Number(u.searchParams.get('n'));
        res.writeHead(200, { 'Content-Type': 'text/plain' });
        for (let i = 0; i < n; i += 500) res.write('y'.repeat(Math.min(500, n - i)));
        res.end();
      } else if (u.pathname === '/conc') {
        setTimeout(() => res.end('ok'), 5);
      } else if (u.pathname === '/slow') {
        setTimeout(() => res.end('slow done'), 2000);
      } else {
        res.writeHead(404);
        res.end();
      }
    });
  };
  const server = opts ? createServer(opts, handler) : createServer(handler);
  server.on('connection', (s) => {
    stats.connections++;
    stats.open++;
    stats.maxOpen = Math.max(stats.maxOpen, stats.open);
    s.on('close', () => { stats.open--; });
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve({ server, stats, port: server.address().port });
    });
  });
}

async function closedPort() {
  const s = net.createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const port = s.address().port;
  await new Promise((r) => s.close(r));
  return port;
}

function makeCert(dir) {
  const key = path.join(dir, 'key.pem');
  const cert = path.join(dir, 'cert.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key,
    '-out', cert, '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
    '-days', '1'], { stdio: 'ignore' });
  return { key, cert };
}

const deliver = (d, data, n = 1) =>
  post(d.port, EVENTS, Array.from({ length: n }, () => egEvent({ data })), NOTIFY, { timeoutMs: 20000 });

function rec(out, tag) {
  const r = readRecords(out).filter((x) => x.tag === tag);
  assert.equal(r.length, 1, `one ${tag} record: ${JSON.stringify(readRecords(out))}`);
  return r[0].value;
}

describe('http client', () => {
  let d;
  let out;
  let target;
  let tlsTarget;
  let certs;

  before(async () => {
    certs = makeCert(tmpDir());
    target = await startTarget(http.createServer);
    tlsTarget = await startTarget(https.createServer, {
      key: fs.readFileSync(certs.key), cert: fs.readFileSync(certs.cert),
    });
    out = outPath();
    d = await startDaemon({
      script: writeScript(SCRIPT),
      env: {
        OUT: out,
        TARGET: `http://127.0.0.1:${target.port}`,
        TLS_TARGET: `https://127.0.0.1:${tlsTarget.port}`,
        CA_FILE: certs.cert,
        CLOSED_PORT: String(await closedPort()),
        NO_PROXY: '*', no_proxy: '*',
      },
    });
  });
  after(async () => {
    await d?.stop();
    for (const t of [target, tlsTarget]) {
      if (!t) continue;
      for (const res of t.stats.hanging) res.destroy();
      t.server.closeAllConnections?.();
      t.server.close();
    }
  });
  beforeEach(() => clearOut(out));

  it('GET: status, lower-cased headers, body; request headers and User-Agent sent', async () => {
    const r = await deliver(d, { op: 'get' });
    assert.equal(r.status, 200, r.text);
    const v = rec(out, 'get');
    assert.equal(v.status, 200);
    assert.equal(v.headers['content-type'], 'application/json');
    assert.equal(v.headers['x-reply'], 'Echo');
    for (const k of Object.keys(v.headers)) assert.equal(k, k.toLowerCase());
    const echo = JSON.parse(v.body);
    assert.equal(echo.method, 'GET');
    assert.equal(echo.url, '/echo?q=1');
    assert.equal(echo.headers['x-test'], 'yes');
    assert.equal(echo.headers.accept, 'text/plain');
    assert.match(echo.headers['user-agent'], /^luahook\/\d+\.\d+\.\d+$/);
  });

  it('http.request with a method and a string body', async () => {
    assert.equal((await deliver(d, { op: 'request' })).status, 200);
    const echo = JSON.parse(rec(out, 'request').body);
    assert.equal(echo.method, 'PUT');
    assert.equal(echo.text, 'plain body');
    assert.equal(echo.headers['content-type'], 'text/plain');
    assert.equal(echo.headers.expect, undefined);
  });

  it('POST of a table: JSON body with Content-Type application/json', async () => {
    assert.equal((await deliver(d, { op: 'post_table' })).status, 200);
    const echo = JSON.parse(rec(out, 'post_table').body);
    assert.equal(echo.method, 'POST');
    assert.equal(echo.headers['content-type'], 'application/json');
    assert.deepEqual(JSON.parse(echo.text), { a: 1, list: [1, 2, 3], s: 'x' });
  });

  it('POST of a string with NUL bytes keeps every byte', async () => {
    assert.equal((await deliver(d, { op: 'post_binary' })).status, 200);
    const echo = JSON.parse(rec(out, 'post_binary').body);
    assert.equal(echo.len, 5);
    assert.equal(echo.hex, '6100620063');
    assert.equal(echo.headers['content-type'], 'application/octet-stream');
  });

  it('three sequential requests in one handler', async () => {
    assert.equal((await deliver(d, { op: 'sequential' })).status, 200);
    assert.deepEqual(rec(out, 'sequential'), ['n1', 'n2', 'n3']);
  });

  it('pcall(http.get, ...) works across the yield, errors after it are caught', async () => {
    assert.equal((await deliver(d, { op: 'pcall' })).status, 200);
    assert.deepEqual(rec(out, 'pcall'), { ok: true, body: 'n7', ok2: false, e2: 'raised after the yield with n8' });
  });

  it('non-2xx status is a response, not an error', async () => {
    await deliver(d, { op: 'status' });
    const v = rec(out, 'status');
    assert.equal(v.status, 404);
    assert.equal(v.body, 'nope');
  });

  it('repeated response headers are joined with ", "', async () => {
    await deliver(d, { op: 'multi' });
    const v = rec(out, 'multi');
    assert.equal(v.headers['x-multi'], 'a, b');
    assert.equal(v.headers['set-cookie'], 'c1=1, c2=2');
  });

  it('redirects are not followed unless asked', async () => {
    assert.equal((await deliver(d, { op: 'redirect' })).status, 200);
    assert.deepEqual(rec(out, 'redirect'), { a: 302, loc: '/n/redirected', b: 200, b_body: 'nredirected' });
  });

  it('timeout_ms -> nil, "timeout: ..."', async () => {
    assert.equal((await deliver(d, { op: 'timeout' })).status, 200);
    const v = rec(out, 'timeout');
    assert.equal(v.res, undefined);
    assert.match(v.err, /^timeout: /);
    if (v.ms >= 0) assert.ok(v.ms >= 290 && v.ms < 2000, `timed out after ${v.ms} ms`);
  });

  it('connection refused -> nil, "connect: ..."', async () => {
    await deliver(d, { op: 'refused' });
    assert.match(rec(out, 'refused').err, /^connect: /);
  });

  it('max_body exceeded -> nil, "too large: ..." (Content-Length and chunked)', async () => {
    await deliver(d, { op: 'too_large' });
    const v = rec(out, 'too_large');
    assert.equal(v.a, undefined);
    assert.match(v.ea, /^too large: /);
    assert.equal(v.b, undefined);
    assert.match(v.eb, /^too large: /);
    assert.equal(v.c_len, 1000);
  });

  it('HTTPS: a self-signed certificate is refused by default, accepted with ca_file', async () => {
    await deliver(d, { op: 'tls' });
    const v = rec(out, 'tls');
    assert.equal(v.a, undefined);
    assert.match(v.ea, /^tls: /);
    assert.equal(v.b, 'n2', v.eb);
    assert.equal(v.c, 'n3', v.ec);
  });

  it('misuse raises clear errors', async () => {
    assert.equal((await deliver(d, { op: 'misuse' })).status, 200);
    const v = rec(out, 'misuse');
    assert.match(v.unknown, /unknown option 'timeout'/);
    assert.match(v.nourl, /url must be a string/);
    assert.match(v.badheader, /line break/);
    assert.match(v.badmethod, /method must be/);
    assert.match(v.badbody, /body must be a string or a table/);
    assert.match(v.coroutine, /not inside a coroutine the script created/);
  });

  it('1000 outbound requests from 100 concurrent deliveries share at most 16 connections', async (t) => {
    const before = target.stats.requests['/conc'] || 0;
    target.stats.maxOpen = target.stats.open;
    const rs = await Promise.all(Array.from({ length: 100 }, () => deliver(d, { op: 'conc' }, 10)));
    const bad = rs.filter((r) => r.status !== 200);
    assert.equal(bad.length, 0, `failed: ${bad.map((r) => `${r.status} ${r.text}`).slice(0, 3).join('; ')}`);
    assert.equal((target.stats.requests['/conc'] || 0) - before, 1000);
    t.diagnostic(`max concurrent connections ${target.stats.maxOpen}, opened ${target.stats.connections}`);
    assert.ok(target.stats.maxOpen <= MAX_HOST_CONNECTIONS,
      `the target saw ${target.stats.maxOpen} concurrent connections`);
    assert.ok(target.stats.connections <= 100, `connections are reused (${target.stats.connections} opened)`);
  });

  it('while a handler waits on a slow target, /healthz answers fast', async () => {
    const slow = deliver(d, { op: 'slow' });
    await waitFor(() => (target.stats.requests['/slow'] || 0) > 0, 3000, 'the slow request to arrive');
    const t0 = Date.now();
    const h = await get(d.port, '/healthz', {}, { timeoutMs: 3000 });
    const ms = Date.now() - t0;
    assert.equal(h.status, 200);
    assert.ok(ms < 200, `/healthz took ${ms} ms`);
    const other = await deliver(d, { op: 'get' });
    assert.equal(other.status, 200);
    assert.ok(Date.now() - t0 < 1500, 'another delivery was served meanwhile');
    const r = await slow;
    assert.equal(r.status, 200);
    assert.equal(rec(out, 'slow'), 'slow done');
  });

  it('handler timeout abandons the transfer; the daemon stays healthy', async () => {
    const script = writeScript(`
function on_event(ev)
  local r, err = http.get(os.getenv("TARGET") .. "/hang", { timeout_ms = 5000 })
  error("not reached")
end`);
    const d2 = await startDaemon({
      script, args: ['--handler-timeout-ms', '300'],
      env: { TARGET: `http://127.0.0.1:${target.port}`, NO_PROXY: '*', no_proxy: '*' },
    });
    try {
      const t0 = Date.now();
      const r = await deliver(d2, { op: 'x' });
      const ms = Date.now() - t0;
      assert.equal(r.status, 500);
      assert.match(r.text, /timed out/);
      assert.ok(ms < 2000, `answered after ${ms} ms`);
      assert.equal((await get(d2.port, '/healthz')).status, 200);
    } finally {
      await d2.stop();
    }
  });

  it('http.request at the top level of the script: luahook check fails with a clear message', async () => {
    const script = writeScript('local r = http.request{ url = "http://127.0.0.1:1/" }\n');
    const r = await runCli(['check', script]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr, /http\.request can only be called from a handler or a timer callback, not while the script loads/);
    assert.match(r.stderr, /hook\.lua:1/);
  });
});
