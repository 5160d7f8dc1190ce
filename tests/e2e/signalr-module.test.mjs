// lua/luahook/signalr.lua (the Azure SignalR REST client) run by the real daemon against
// the fake service of fake-signalr.mjs: connection-string parsing, every method's
// method / path / query / body, the JWT (signature, aud, exp) and its cache, existence
// answers, error mapping, transport errors and misuse.
import { describe, it, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import {
  RECORDER, startDaemon, writeScript, outPath, readRecords, clearOut, post, egEvent,
} from './lib.mjs';
import { startFakeSignalR, verifyJwt } from './fake-signalr.mjs';

const NOTIFY = { 'aeg-event-type': 'Notification' };

const SCRIPT = `${RECORDER}
local signalr = require "luahook.signalr"
local c = assert(signalr.new(os.getenv("CS"), { timeout_ms = 3000 }))

local function res(...)
  local r = table.pack(...)
  return { res = r[1], err = r[2], detail = r[3], n = r.n }
end

local ops = {}
function ops.parse(d)
  local out = {}
  for i, cs in ipairs(d.cases) do
    local p, err = signalr.parse_connection_string(cs)
    out[i] = p and { endpoint = p.endpoint, rest = p.rest_endpoint, key = p.access_key,
                     version = p.version, port = p.port } or { err = err }
  end
  return out
end
function ops.new_errors(d)
  local out = {}
  for i, cs in ipairs(d.cases) do
    local cl, err = signalr.new(cs)
    out[i] = { ok = cl ~= nil, err = err }
  end
  return out
end
-- d.calls: list of {method, args...}; json.null stands for nil
function ops.call(d)
  local client = c
  if d.cs then client = assert(signalr.new(d.cs, d.opts)) end
  local target = client
  if d.hub_view then target = client:hub(d.hub_view) end
  local out = {}
  for i, call in ipairs(d.calls) do
    local args = {}
    for j = 2, #call do
      local v = call[j]
      if v == json.null then v = nil end
      args[j - 1] = v
    end
    local f = target[call[1]]
    out[i] = res(f(target, table.unpack(args, 1, #call - 1)))
  end
  return out
end
function ops.misuse(d)
  local out = {}
  for i, call in ipairs(d.calls) do
    local args = {}
    for j = 2, #call do
      local v = call[j]
      if v == json.null then v = nil end
      args[j - 1] = v
    end
    local ok, err = pcall(c[call[1]], c, table.unpack(args, 1, #call - 1))
    out[i] = { ok = ok, err = tostring(err) }
  end
  return out
end
function ops.encode(d)
  local out = {}
  for i, s in ipairs(d.strings) do out[i] = signalr.url_encode(s) end
  return out
end

function on_event(ev)
  record(ev.data.op, ops[ev.data.op](ev.data))
end
`;

describe('luahook.signalr module', () => {
  let fake;
  let d;
  let out;
  let closedPort;

  before(async () => {
    fake = await startFakeSignalR();
    const srv = net.createServer();
    await new Promise((r) => srv.listen(0, '127.0.0.1', r));
    closedPort = srv.address().port;
    await new Promise((r) => srv.close(r));
    out = outPath();
    const script = writeScript(SCRIPT);
    d = await startDaemon({ script, env: { OUT: out, CS: fake.connectionString() } });
  });
  after(async () => {
    if (d) await d.stop();
    if (fake) await fake.stop();
  });
  beforeEach(() => {
    fake.reset();
    clearOut(out);
  });

  async function op(name, data) {
    const r = await post(d.port, '/api/events', [egEvent({ eventType: 'Test.Op', data: { op: name, ...data } })], NOTIFY);
    assert.equal(r.status, 200, `op ${name}: ${r.text}\n${d.stderr().slice(-2000)}`);
    const recs = readRecords(out).filter((x) => x.tag === name);
    assert.equal(recs.length, 1, `one record for ${name}`);
    clearOut(out);
    return recs[0].value;
  }
  const call = (calls, extra = {}) => op('call', { calls, ...extra });

  it('parses connection strings like the SDK (case-insensitive keys, trim, Port, trailing /)', async () => {
    const v = await op('parse', {
      cases: [
        'Endpoint=https://x.service.signalr.net;AccessKey=abc+/=;Version=1.0;',
        ' endpoint = https://x.service.signalr.net/ ; ACCESSKEY=k==;version=1.0',
        'Endpoint=http://localhost;Port=8080;AccessKey=k;Version=1.0;',
        'Endpoint=https://x.service.signalr.net;Port=443;AccessKey=k;Version=1.0;',
        'Endpoint=http://localhost:5000;Port=6000;AccessKey=k;Version=1.0;',
        'Endpoint=https://x.service.signalr.net;AccessKey=k;Version=1.0;ServerEndpoint=https://inner.example:8443/',
        'AccessKey=k;Version=1.0;',
        'Endpoint=https://x.service.signalr.net;Version=1.0;',
        'Endpoint=https://x.service.signalr.net;AccessKey=;Version=1.0;',
        'Endpoint=https://x.service.signalr.net;AccessKey=k;Version=2.0;',
        'Endpoint=https://x.service.signalr.net;AccessKey=k;Port=http;',
        'Endpoint=https://x.service.signalr.net;AccessKey=k;endpoint=https://y;',
        'Endpoint=https://x.service.signalr.net;AuthType=azure.msi;ClientId=abc;Version=1.0;',
        'Endpoint=ftp://x;AccessKey=k;',
        'garbage',
        '',
      ],
    });
    assert.deepEqual(v[0], { endpoint: 'https://x.service.signalr.net', rest: 'https://x.service.signalr.net', key: 'abc+/=', version: '1.0' });
    assert.deepEqual(v[1], { endpoint: 'https://x.service.signalr.net', rest: 'https://x.service.signalr.net', key: 'k==', version: '1.0' });
    assert.deepEqual(v[2], { endpoint: 'http://localhost:8080', rest: 'http://localhost:8080', key: 'k', version: '1.0', port: 8080 });
    assert.equal(v[3].endpoint, 'https://x.service.signalr.net', 'the default port is not written');
    assert.equal(v[4].endpoint, 'http://localhost:6000', 'Port replaces the URL port');
    assert.equal(v[5].rest, 'https://inner.example:8443', 'REST calls go to ServerEndpoint');
    assert.match(v[6].err, /^signalr: connection string: Endpoint is missing/);
    assert.match(v[7].err, /AccessKey is missing/);
    assert.match(v[8].err, /AccessKey is missing/);
    assert.match(v[9].err, /Version=2.0 is not supported/);
    assert.match(v[10].err, /Port 'http' is not a port number/);
    assert.match(v[11].err, /duplicate key 'endpoint'/);
    assert.match(v[12].err, /AuthType=azure.msi is not supported/);
    assert.match(v[13].err, /not an http\(s\) URL/);
    assert.match(v[14].err, /'garbage' is not key=value/);
    assert.match(v[15].err, /connection string is missing/);

    const n = await op('new_errors', { cases: ['AccessKey=k;', ''] });
    assert.deepEqual(n.map((x) => x.ok), [false, false]);
    assert.match(n[0].err, /Endpoint is missing/);
  });

  it('percent-encodes path segments', async () => {
    const v = await op('encode', { strings: ['a b/c?d#e%f', 'Az09-._~', 'ü', '.', '..'] });
    assert.deepEqual(v, ['a%20b%2Fc%3Fd%23e%25f', 'Az09-._~', '%C3%BC', '%2E', '%2E%2E']);
  });

  it('sends: broadcast, to user / connection / group, with exact paths, query and bodies', async () => {
    const v = await call([
      ['broadcast', 'Chat', 'newMessage', [{ text: 'hi' }, 2, 'x']],
      ['broadcast', 'chat', 'ping', [], { excluded: ['c-1', 'c 2'] }],
      ['send_to_user', 'chat', 'user/1 ü', 'm', ['a']],
      ['send_to_connection', 'chat', 'conn+1=', 'm', null],
      ['send_to_group', 'chat', 'group #1', 'm', [null, true], { excluded: ['c-3'] }],
    ]);
    assert.deepEqual(v.map((x) => x.res), [true, true, true, true, true], JSON.stringify(v));
    const calls = fake.calls;
    assert.equal(calls.length, 5);
    for (const c of calls) {
      assert.equal(c.method, 'POST');
      assert.equal(c.status, 202, `${c.path}: ${c.authError}`);
      assert.deepEqual(c.query['api-version'], ['2022-06-01']);
      assert.match(c.contentType, /^application\/json/);
      assert.equal(c.claims.aud, `${fake.base}${c.path}`);
    }
    assert.equal(calls[0].path, '/api/hubs/chat/:send', 'the hub is lower-cased');
    assert.deepEqual(calls[0].json, { target: 'newMessage', arguments: [{ text: 'hi' }, 2, 'x'] });
    assert.ok(calls[0].body.startsWith('{"target":"newMessage","arguments":['), calls[0].body);
    assert.equal(calls[1].body, '{"target":"ping","arguments":[]}');
    assert.deepEqual(calls[1].query.excluded, ['c-1', 'c 2']);
    assert.equal(calls[2].path, '/api/hubs/chat/users/user%2F1%20%C3%BC/:send');
    assert.deepEqual(calls[2].segments, ['api', 'hubs', 'chat', 'users', 'user/1 ü', ':send']);
    assert.equal(calls[3].path, '/api/hubs/chat/connections/conn%2B1%3D/:send');
    assert.equal(calls[3].body, '{"target":"m","arguments":[]}');
    assert.equal(calls[4].path, '/api/hubs/chat/groups/group%20%231/:send');
    assert.equal(calls[4].body, '{"target":"m","arguments":[null,true]}');
    assert.deepEqual(calls[4].query.excluded, ['c-3']);
    assert.deepEqual(fake.sends().map((s) => s.to), ['hub', 'hub', 'user:user/1 ü', 'connection:conn+1=', 'group:group #1']);
  });

  it('groups, users and closing: methods, paths, query, success statuses', async () => {
    fake.addConnection('chat', 'c1', 'u1');
    const v = await call([
      ['add_connection_to_group', 'chat', 'g1', 'c1'],
      ['remove_connection_from_group', 'chat', 'g1', 'c1'],
      ['remove_connection_from_all_groups', 'chat', 'c1'],
      ['add_user_to_group', 'chat', 'g1', 'u1', { ttl: 60 }],
      ['add_user_to_group', 'chat', 'g2', 'u1'],
      ['remove_user_from_group', 'chat', 'g1', 'u1'],
      ['remove_user_from_all_groups', 'chat', 'u1'],
      ['close_connection', 'chat', 'c1', 'bye now'],
      ['close_connection', 'chat', 'c2'],
      ['close_all_connections', 'chat', { excluded: ['c9'], reason: 'maintenance' }],
      ['close_group_connections', 'chat', 'g1'],
      ['close_user_connections', 'chat', 'u1'],
    ]);
    assert.deepEqual(v.map((x) => x.res), Array(12).fill(true), JSON.stringify(v));
    const got = fake.calls.map((c) => [c.method, c.path, c.status]);
    assert.deepEqual(got, [
      ['PUT', '/api/hubs/chat/groups/g1/connections/c1', 200],
      ['DELETE', '/api/hubs/chat/groups/g1/connections/c1', 200],
      ['DELETE', '/api/hubs/chat/connections/c1/groups', 200],
      ['PUT', '/api/hubs/chat/users/u1/groups/g1', 200],
      ['PUT', '/api/hubs/chat/users/u1/groups/g2', 200],
      ['DELETE', '/api/hubs/chat/users/u1/groups/g1', 204],
      ['DELETE', '/api/hubs/chat/users/u1/groups', 204],
      ['DELETE', '/api/hubs/chat/connections/c1', 200],
      ['DELETE', '/api/hubs/chat/connections/c2', 200],
      ['POST', '/api/hubs/chat/:closeConnections', 204],
      ['POST', '/api/hubs/chat/groups/g1/:closeConnections', 204],
      ['POST', '/api/hubs/chat/users/u1/:closeConnections', 204],
    ]);
    const c = fake.calls;
    assert.deepEqual(c[3].query.ttl, ['60']);
    assert.equal(c[4].query.ttl, undefined);
    assert.deepEqual(c[7].query.reason, ['bye now']);
    assert.equal(c[8].query.reason, undefined);
    assert.deepEqual(c[9].query, { 'api-version': ['2022-06-01'], excluded: ['c9'], reason: ['maintenance'] });
    assert.equal(c[0].headers['content-length'], '0', 'PUT without a body says Content-Length: 0');
    for (const x of c) assert.equal(x.claims.aud, `${fake.base}${x.path}`);
  });

  it('existence: 200 -> true, 404 -> false (connection, user, group, user in group, health)', async () => {
    fake.addConnection('chat', 'c1', 'u1');
    fake.groups.set('chat/g1', new Set(['c1']));
    fake.userGroups.set('chat/u1', new Set(['g1']));
    const v = await call([
      ['connection_exists', 'chat', 'c1'],
      ['connection_exists', 'chat', 'c2'],
      ['user_exists', 'Chat', 'u1'],
      ['user_exists', 'chat', 'u2'],
      ['group_exists', 'chat', 'g1'],
      ['group_exists', 'chat', 'g2'],
      ['user_in_group', 'chat', 'g1', 'u1'],
      ['user_in_group', 'chat', 'g2', 'u1'],
      ['health'],
    ]);
    assert.deepEqual(v.map((x) => x.res), [true, false, true, false, true, false, true, false, true], JSON.stringify(v));
    assert.deepEqual(v.map((x) => x.n), [1, 1, 1, 1, 1, 1, 1, 1, 1]);
    assert.deepEqual(fake.calls.map((c) => [c.method, c.path]), [
      ['HEAD', '/api/hubs/chat/connections/c1'],
      ['HEAD', '/api/hubs/chat/connections/c2'],
      ['HEAD', '/api/hubs/chat/users/u1'],
      ['HEAD', '/api/hubs/chat/users/u2'],
      ['HEAD', '/api/hubs/chat/groups/g1'],
      ['HEAD', '/api/hubs/chat/groups/g2'],
      ['HEAD', '/api/hubs/chat/users/u1/groups/g1'],
      ['HEAD', '/api/hubs/chat/users/u1/groups/g2'],
      ['HEAD', '/api/health'],
    ]);
    // an existence check that fails otherwise is nil, err
    fake.respond = () => ({ status: 403, code: 'Error.Forbidden', message: 'no' });
    const [e] = await call([['connection_exists', 'chat', 'c1']]);
    assert.equal(e.res, undefined, 'nil');
    assert.equal(e.err, 'signalr: 403 Error.Forbidden', 'HEAD has no body: the code comes from x-ms-error-code');
  });

  it('JWT: HS256 with the key bytes, aud = URL without query, exp soon; cached per audience', async () => {
    const v = await call([
      ['send_to_connection', 'chat', 'c1', 'm', []],
      ['send_to_connection', 'chat', 'c1', 'm', []],
      ['broadcast', 'chat', 'm', [], { excluded: ['x'] }],
      ['broadcast', 'chat', 'm', []],
      ['send_to_connection', 'chat', 'c2', 'm', []],
    ]);
    assert.ok(v.every((x) => x.res === true), JSON.stringify(v));
    const [a, b, c, dd, e] = fake.calls;
    const now = Date.now() / 1000;
    for (const x of fake.calls) {
      assert.equal(x.authError, null);
      const { header, claims } = verifyJwt(x.token, fake.accessKey, { aud: `${fake.base}${x.path}` });
      assert.equal(header.alg, 'HS256');
      assert.ok(claims.exp > now + 60 && claims.exp <= now + 3600, `exp ${claims.exp} now ${now}`);
      assert.ok(!claims.aud.includes('?'), 'aud has no query');
    }
    assert.equal(a.token, b.token, 'the token is cached across calls to the same URL');
    assert.equal(c.token, dd.token, 'the query is not part of the audience');
    assert.notEqual(a.token, e.token, 'another URL has its own audience');
    assert.equal(a.claims.aud, `${fake.base}/api/hubs/chat/connections/c1/:send`);
  });

  it('a token signed with another key is refused by the fake (and mapped to an error)', async () => {
    const cs = fake.connectionString({ key: 'not-the-key' });
    const [r] = await call([['broadcast', 'chat', 'm', []]], { cs });
    assert.equal(r.res, undefined, 'nil');
    assert.match(r.err, /^signalr: 401 Error\.Unauthorized: Invalid token: bad signature$/);
    assert.equal(r.detail.status, 401);
    assert.equal(r.detail.code, 'Error.Unauthorized');
  });

  it('Port from the connection string, application and a hub-bound view', async () => {
    const cs = `Endpoint=http://127.0.0.1/;Port=${fake.port};AccessKey=${fake.accessKey};Version=1.0;`;
    const v = await call([
      ['send_to_user', 'u1', 'm', [1]],
      ['connection_exists', 'c1'],
    ], { cs, opts: { application: 'app1' }, hub_view: 'MyHub' });
    assert.deepEqual(v.map((x) => x.res), [true, false], JSON.stringify(v));
    assert.equal(fake.calls[0].path, '/api/hubs/myhub/users/u1/:send');
    assert.deepEqual(fake.calls[0].query, { 'api-version': ['2022-06-01'], application: ['app1'] });
    assert.equal(fake.calls[0].claims.aud, `http://127.0.0.1:${fake.port}/api/hubs/myhub/users/u1/:send`);

    const w = await call([['broadcast', null, 'm', []]], { cs: fake.connectionString(), opts: { hub: 'Default' } });
    assert.equal(w[0].res, true);
    assert.equal(fake.calls[2].path, '/api/hubs/default/:send', 'opts.hub is used when hub is nil');
  });

  it('errors: ErrorDetail body, x-ms-error-code header only, plain text; transport errors pass through', async () => {
    let mode = 'detail';
    fake.respond = () => {
      if (mode === 'detail') return { status: 404, code: 'Warning.Connection.NotExisted', message: "Connection 'c9' does not exist." };
      if (mode === 'header') return { status: 500, code: 'Error.Internal', noBody: true };
      if (mode === 'text') return { status: 503, body: 'Service Unavailable\n' };
      return null;
    };
    const [a] = await call([['add_connection_to_group', 'chat', 'g', 'c9']]);
    assert.equal(a.res, undefined, 'nil');
    assert.equal(a.err, "signalr: 404 Warning.Connection.NotExisted: Connection 'c9' does not exist.");
    assert.deepEqual({ status: a.detail.status, code: a.detail.code, message: a.detail.message },
      { status: 404, code: 'Warning.Connection.NotExisted', message: "Connection 'c9' does not exist." });
    mode = 'header';
    const [b] = await call([['broadcast', 'chat', 'm', []]]);
    assert.equal(b.err, 'signalr: 500 Error.Internal');
    mode = 'text';
    const [c] = await call([['send_to_user', 'chat', 'u', 'm', []]]);
    assert.equal(c.err, 'signalr: 503: Service Unavailable');

    const cs = `Endpoint=http://127.0.0.1:${closedPort};AccessKey=k;Version=1.0;`;
    const [t] = await call([['broadcast', 'chat', 'm', []]], { cs });
    assert.equal(t.res, undefined, 'nil');
    assert.match(t.err, /^connect: /, 'the http error passes through');
    assert.deepEqual(t.detail, { transport: true });
  });

  it('misuse raises with a clear message', async () => {
    const v = await op('misuse', {
      calls: [
        ['broadcast', '1chat', 'm', []],
        ['broadcast', 'chat/x', 'm', []],
        ['broadcast', null, 'm', []],
        ['broadcast', 'chat', '', []],
        ['broadcast', 'chat', 'm', 'not a list'],
        ['send_to_user', 'chat', '', 'm', []],
        ['send_to_group', 'chat', 'x'.repeat(1025), 'm', []],
        ['add_user_to_group', 'chat', 'g', 'u', { ttl: -1 }],
        ['broadcast', `a${'b'.repeat(128)}`, 'm', []],
      ],
    });
    assert.ok(v.every((x) => x.ok === false), JSON.stringify(v));
    assert.match(v[0].err, /invalid hub name "1chat"/);
    assert.match(v[1].err, /invalid hub name/);
    assert.match(v[2].err, /hub must be a string/);
    assert.match(v[3].err, /target must be a non-empty string/);
    assert.match(v[4].err, /args must be a list/);
    assert.match(v[5].err, /user must be a non-empty string/);
    assert.match(v[6].err, /group is longer than 1024/);
    assert.match(v[7].err, /ttl must be/);
    assert.match(v[8].err, /invalid hub name/);
    assert.equal(fake.calls.length, 0, 'nothing was sent');
  });
});
