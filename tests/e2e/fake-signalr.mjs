// A fake Azure SignalR Service data-plane REST API (api-version 2022-06-01) for the
// e2e tests: a real node:http server on 127.0.0.1 that
//   - checks every call's access token the way the service documents it: Bearer JWT,
//     HS256 over the UTF-8 bytes of the AccessKey, aud == the request URL without its
//     query (scheme://host:port/path as sent), exp in the future and at most
//     maxLifetimeS ahead; a bad token gets 401 with an ErrorDetail body;
//   - checks api-version=2022-06-01, hub names (^[A-Za-z][A-Za-z0-9_`,.[\]]{0,127}$),
//     group lengths and :send bodies ({"target": string, "arguments": array});
//   - answers like the service: 202 for sends, 200/404 for existence (HEAD), 200 or 204
//     for group and close operations, ErrorDetail JSON + x-ms-error-code on errors;
//   - keeps a small model (connections, users, groups) tests can fill and inspect;
//   - records every call: {method, path (raw), segments (decoded), query (name -> [values]),
//     body (text), json (parsed), token, claims, route, status}.
// `fake.respond = (call) => ({status, code, message, headers, body}) | null` overrides
// the answer (error injection); `fake.delayMs` delays every answer.

import http from 'node:http';
import crypto from 'node:crypto';

export const API_VERSION = '2022-06-01';
const HUB_RE = /^[A-Za-z][A-Za-z0-9_`,.[\]]{0,127}$/;

function b64urlDecode(s) {
  if (!/^[A-Za-z0-9_-]*$/.test(s)) throw new Error('not base64url');
  return Buffer.from(s, 'base64url');
}

/** Verifies a HS256 JWT; returns {claims, header} or throws with the reason. */
export function verifyJwt(jwt, key, { aud, nowS = Date.now() / 1000, maxLifetimeS = 3600 } = {}) {
  const parts = jwt.split('.');
  if (parts.length !== 3) throw new Error('token is not a JWS compact serialization');
  const header = JSON.parse(b64urlDecode(parts[0]).toString('utf8'));
  if (header.alg !== 'HS256') throw new Error(`alg ${header.alg} is not HS256`);
  const want = crypto.createHmac('sha256', Buffer.from(key, 'utf8')).update(`${parts[0]}.${parts[1]}`).digest();
  const got = b64urlDecode(parts[2]);
  if (got.length !== want.length || !crypto.timingSafeEqual(got, want)) throw new Error('bad signature');
  const claims = JSON.parse(b64urlDecode(parts[1]).toString('utf8'));
  if (aud !== undefined && claims.aud !== aud) throw new Error(`aud ${JSON.stringify(claims.aud)} != ${JSON.stringify(aud)}`);
  if (!Number.isInteger(claims.exp)) throw new Error('exp missing or not an integer');
  if (claims.exp <= nowS) throw new Error(`token expired (exp ${claims.exp}, now ${Math.floor(nowS)})`);
  if (claims.exp > nowS + maxLifetimeS + 5) throw new Error(`exp ${claims.exp} is more than ${maxLifetimeS} s ahead`);
  return { header, claims };
}

function setOf(map, key) {
  let s = map.get(key);
  if (!s) { s = new Set(); map.set(key, s); }
  return s;
}

export class FakeSignalR {
  constructor({ accessKey = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/abcd=', maxLifetimeS = 3600 } = {}) {
    this.accessKey = accessKey;
    this.maxLifetimeS = maxLifetimeS;
    this.calls = [];
    this.respond = null;
    this.delayMs = 0;
    // model, per lower-cased hub: connectionId -> userId; group -> Set(connectionId);
    // user -> Set(group)
    this.connections = new Map();
    this.groups = new Map();
    this.userGroups = new Map();
    this.waiters = new Set();
    this.server = http.createServer((req, res) => this._handle(req, res));
  }

  async start() {
    await new Promise((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = this.server.address().port;
    this.base = `http://127.0.0.1:${this.port}`;
    return this;
  }

  async stop() {
    this.server.closeAllConnections?.();
    await new Promise((resolve) => this.server.close(() => resolve()));
  }

  connectionString({ key = this.accessKey, extra = '' } = {}) {
    return `Endpoint=${this.base};AccessKey=${key};Version=1.0;${extra}`;
  }

  reset() {
    this.calls = [];
    this.respond = null;
    this.delayMs = 0;
    this.connections.clear();
    this.groups.clear();
    this.userGroups.clear();
  }

  /** Model helpers. */
  addConnection(hub, id, user = '') {
    const h = hub.toLowerCase();
    if (!this.connections.has(h)) this.connections.set(h, new Map());
    this.connections.get(h).set(id, user);
  }

  _conns(hub) {
    return this.connections.get(hub) || new Map();
  }

  /** The :send calls as {to: 'hub'|'user:x'|'connection:x'|'group:x', hub, target, arguments, excluded}. */
  sends() {
    return this.calls.filter((c) => c.route?.op === 'send' && c.status === 202).map((c) => ({
      hub: c.route.hub,
      to: c.route.kind === 'hub' ? 'hub' : `${c.route.kind}:${c.route.id}`,
      target: c.json.target,
      arguments: c.json.arguments,
      excluded: c.query.excluded || [],
      body: c.body,
    }));
  }

  /** Waits until pred(calls) is truthy (or throws after ms). */
  waitFor(pred, ms = 5000, what = 'calls') {
    return new Promise((resolve, reject) => {
      const check = () => {
        const v = pred(this.calls);
        if (v) { cleanup(); resolve(v); return true; }
        return false;
      };
      const t = setTimeout(() => {
        cleanup();
        reject(new Error(`fake SignalR: timeout after ${ms} ms waiting for ${what}; calls:\n${JSON.stringify(this.calls.map((c) => [c.method, c.path, c.status, c.body]), null, 1)}`));
      }, ms);
      const cleanup = () => { clearTimeout(t); this.waiters.delete(check); };
      if (!check()) this.waiters.add(check);
    });
  }

  _notify() {
    for (const w of [...this.waiters]) w();
  }

  _handle(req, res) {
    const parts = [];
    req.on('data', (d) => parts.push(d));
    req.on('end', () => {
      const body = Buffer.concat(parts).toString('utf8');
      const answer = () => {
        const call = this._record(req, body);
        const r = this._answer(call, req);
        call.status = r.status;
        const headers = { ...(r.headers || {}) };
        let out = '';
        if (r.code !== undefined || r.message !== undefined) {
          if (r.code && !('x-ms-error-code' in headers)) headers['x-ms-error-code'] = r.code;
          if (r.noBody !== true) {
            out = JSON.stringify({ code: r.code, message: r.message, target: null, details: null, inner: null });
            headers['Content-Type'] = 'application/json; charset=utf-8';
          }
        }
        if (r.body !== undefined) out = r.body;
        if (req.method === 'HEAD') out = '';
        this.calls.push(call);
        res.writeHead(r.status, headers);
        res.end(out);
        this._notify();
      };
      if (this.delayMs > 0) setTimeout(answer, this.delayMs); else answer();
    });
  }

  _record(req, body) {
    const u = new URL(req.url, this.base);
    const query = {};
    for (const [k, v] of u.searchParams) (query[k] ||= []).push(v);
    let json;
    try { json = body ? JSON.parse(body) : undefined; } catch { json = undefined; }
    const auth = req.headers.authorization || '';
    const token = auth.startsWith('Bearer ') ? auth.slice(7) : null;
    return {
      method: req.method,
      url: req.url,
      path: u.pathname, // raw, as sent (percent-encoded)
      segments: u.pathname.split('/').slice(1).map((s) => decodeURIComponent(s)),
      query,
      headers: req.headers,
      contentType: req.headers['content-type'],
      body,
      json,
      token,
      claims: null,
      authError: null,
      route: null,
      status: 0,
      at: Date.now(),
    };
  }

  // Routes of PROTOCOL.md 7.2 (2022-06-01).
  _route(method, seg) {
    const n = seg.length;
    if (n === 2 && seg[0] === 'api' && seg[1] === 'health' && method === 'HEAD') return { op: 'health' };
    if (n < 3 || seg[0] !== 'api' || seg[1] !== 'hubs') return null;
    const hub = seg[2];
    const r = (o) => ({ hub, ...o });
    const rest = seg.slice(3);
    const m = rest.length;
    if (m === 1 && rest[0] === ':send' && method === 'POST') return r({ op: 'send', kind: 'hub' });
    if (m === 1 && rest[0] === ':closeConnections' && method === 'POST') return r({ op: 'closeAll', kind: 'hub' });
    if (m === 3 && ['users', 'connections', 'groups'].includes(rest[0]) && rest[2] === ':send' && method === 'POST') {
      return r({ op: 'send', kind: rest[0].slice(0, -1), id: rest[1] });
    }
    if (m === 3 && ['users', 'groups'].includes(rest[0]) && rest[2] === ':closeConnections' && method === 'POST') {
      return r({ op: 'closeAll', kind: rest[0].slice(0, -1), id: rest[1] });
    }
    if (m === 2 && rest[0] === 'connections') {
      if (method === 'HEAD') return r({ op: 'exists', kind: 'connection', id: rest[1] });
      if (method === 'DELETE') return r({ op: 'close', kind: 'connection', id: rest[1] });
    }
    if (m === 2 && rest[0] === 'users' && method === 'HEAD') return r({ op: 'exists', kind: 'user', id: rest[1] });
    if (m === 2 && rest[0] === 'groups' && method === 'HEAD') return r({ op: 'exists', kind: 'group', id: rest[1] });
    if (m === 4 && rest[0] === 'groups' && rest[2] === 'connections' && (method === 'PUT' || method === 'DELETE')) {
      return r({ op: method === 'PUT' ? 'addConnToGroup' : 'removeConnFromGroup', group: rest[1], id: rest[3] });
    }
    if (m === 3 && rest[0] === 'connections' && rest[2] === 'groups' && method === 'DELETE') {
      return r({ op: 'removeConnFromAllGroups', id: rest[1] });
    }
    if (m === 4 && rest[0] === 'users' && rest[2] === 'groups' && ['HEAD', 'PUT', 'DELETE'].includes(method)) {
      return r({ op: { HEAD: 'userInGroup', PUT: 'addUserToGroup', DELETE: 'removeUserFromGroup' }[method], user: rest[1], group: rest[3] });
    }
    if (m === 3 && rest[0] === 'users' && rest[2] === 'groups' && method === 'DELETE') {
      return r({ op: 'removeUserFromAllGroups', user: rest[1] });
    }
    return null;
  }

  _answer(call, req) {
    // authentication first, like the service
    if (!call.token) return { status: 401, code: 'Error.Unauthorized', message: 'Authorization header with a Bearer token is required.' };
    try {
      const aud = `${this.base}${call.path}`;
      const { claims } = verifyJwt(call.token, this.accessKey, { aud, maxLifetimeS: this.maxLifetimeS });
      call.claims = claims;
    } catch (e) {
      call.authError = e.message;
      return { status: 401, code: 'Error.Unauthorized', message: `Invalid token: ${e.message}` };
    }
    if ((call.query['api-version'] || []).join() !== API_VERSION) {
      return { status: 400, code: 'Error.InvalidApiVersion', message: `api-version must be ${API_VERSION}` };
    }
    let route;
    try { route = this._route(call.method, call.segments); } catch { route = null; }
    call.route = route;
    if (!route) return { status: 404, code: 'Error.NotFound', message: `No route for ${call.method} ${call.path}` };
    if (route.hub !== undefined && !HUB_RE.test(route.hub)) {
      return { status: 400, code: 'Error.InvalidHubName', message: `Invalid hub name '${route.hub}'.` };
    }
    const g = route.group ?? (route.kind === 'group' ? route.id : undefined);
    if (g !== undefined && (g.length < 1 || g.length > 1024)) {
      return { status: 400, code: 'Error.InvalidGroupName', message: 'Group name length must be 1..1024.' };
    }
    if (this.respond) {
      const r = this.respond(call);
      if (r) return r;
    }
    const hub = route.hub?.toLowerCase();
    switch (route.op) {
      case 'health': return { status: 200 };
      case 'send': {
        if (!/^application\/json/.test(call.contentType || '')) {
          return { status: 415, code: 'Error.UnsupportedMediaType', message: 'Content-Type must be application/json.' };
        }
        const j = call.json;
        if (!j || typeof j.target !== 'string' || !j.target || !Array.isArray(j.arguments)) {
          return { status: 400, code: 'Error.InvalidPayload', message: 'Body must be {"target": string, "arguments": array}.' };
        }
        return { status: 202 };
      }
      case 'exists': {
        const conns = this._conns(hub);
        let found = false;
        if (route.kind === 'connection') found = conns.has(route.id);
        if (route.kind === 'user') found = [...conns.values()].includes(route.id);
        if (route.kind === 'group') found = (this.groups.get(`${hub}/${route.id}`)?.size || 0) > 0;
        return found ? { status: 200 } : { status: 404 };
      }
      case 'close': {
        const conns = this._conns(hub);
        conns.delete(route.id);
        return { status: 200 };
      }
      case 'closeAll': return { status: 204 };
      case 'addConnToGroup': {
        if (!this._conns(hub).has(route.id)) {
          return { status: 404, code: 'Warning.Connection.NotExisted', message: `Connection '${route.id}' does not exist.` };
        }
        setOf(this.groups, `${hub}/${route.group}`).add(route.id);
        return { status: 200 };
      }
      case 'removeConnFromGroup':
        this.groups.get(`${hub}/${route.group}`)?.delete(route.id);
        return { status: 200 };
      case 'removeConnFromAllGroups':
        for (const [k, s] of this.groups) if (k.startsWith(`${hub}/`)) s.delete(route.id);
        return { status: 200 };
      case 'userInGroup':
        return setOf(this.userGroups, `${hub}/${route.user}`).has(route.group) ? { status: 200 } : { status: 404 };
      case 'addUserToGroup':
        setOf(this.userGroups, `${hub}/${route.user}`).add(route.group);
        return { status: 200 };
      case 'removeUserFromGroup':
        setOf(this.userGroups, `${hub}/${route.user}`).delete(route.group);
        return { status: 204 };
      case 'removeUserFromAllGroups':
        this.userGroups.delete(`${hub}/${route.user}`);
        return { status: 204 };
      default:
        return { status: 500, code: 'Error.Internal', message: 'unhandled route' };
    }
  }
}

/** Starts a fake service; returns it (fake.base, fake.connectionString(), fake.calls...). */
export async function startFakeSignalR(opts) {
  return new FakeSignalR(opts).start();
}
