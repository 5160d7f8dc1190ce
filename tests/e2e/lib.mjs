// Helpers for the luahook end-to-end and interop tests (node:test, Node >= 20).
//
// Everything here talks to the real binary ($LUAHOOK_BIN) over real sockets:
//   - tmp files: a per-test temp dir, Lua scripts, an OUT file scripts append to
//   - startDaemon(): spawn `luahook run SCRIPT --listen 127.0.0.1:0 ...`, wait for the
//     "listening on http://127.0.0.1:PORT" line, capture stderr, kill on stop()/exit
//   - RawConn / rawExchange(): exact bytes over node:net with an incremental HTTP/1.x
//     response parser (interim 1xx, Content-Length, chunked, read-until-close), for
//     pipelining, chunked uploads, 100-continue, slow clients and malformed requests
//   - request() / post() / get(): node:http with an Agent the caller controls
//   - RECORDER: a pure-Lua prelude giving scripts record(tag, value) (a JSON line in OUT)
//
// Every wait has a timeout; nothing here can hang a test file.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

export const ROOT = process.env.LUAHOOK_ROOT || path.resolve(here, '..', '..');
export const BIN = process.env.LUAHOOK_BIN || path.join(ROOT, 'build', 'luahook');
export const DATA = process.env.LUAHOOK_TEST_DATA || path.join(ROOT, 'tests', 'data');

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Reads a JSON file from tests/data. */
export function loadData(name) {
  return JSON.parse(fs.readFileSync(path.join(DATA, name), 'utf8'));
}

/** Raw text of a tests/data file (exact bytes, for "raw" comparisons). */
export function loadDataText(name) {
  return fs.readFileSync(path.join(DATA, name), 'utf8');
}

// ---------------------------------------------------------------------------------------
// temp files

const tmpDirs = [];

/** A fresh temp directory, removed when the test process exits. */
export function tmpDir(prefix = 'luahook-e2e-') {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  tmpDirs.push(d);
  return d;
}

/** Writes a script file and returns its absolute path. */
export function writeScript(code, { dir = tmpDir(), name = 'hook.lua' } = {}) {
  const p = path.join(dir, name);
  fs.writeFileSync(p, code);
  return p;
}

/** A path (not created) for an OUT file, in its own temp dir. */
export function outPath(dir = tmpDir()) {
  return path.join(dir, 'out.txt');
}

/** Lines of an OUT file ([] when the file doesn't exist). */
export function readOut(file) {
  let text;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if (e.code === 'ENOENT') return [];
    throw e;
  }
  return text.split('\n').filter((l) => l.length > 0);
}

/** Records written by RECORDER's record(tag, v): [{tag, value}] in file order. */
export function readRecords(file) {
  return readOut(file).map((line) => {
    const tab = line.indexOf('\t');
    if (tab < 0) return { tag: line, value: undefined, line };
    return { tag: line.slice(0, tab), value: JSON.parse(line.slice(tab + 1)), line };
  });
}

/** Empties an OUT file. */
export function clearOut(file) {
  fs.writeFileSync(file, '');
}

/**
 * Lua prelude for test scripts. Needs only the standard library. Gives:
 *   enc(v)            -> JSON text (tables with keys 1..n are arrays, others objects
 *                        with sorted keys; integers as %d, floats as %.17g; functions,
 *                        userdata (e.g. json.null) as the string "<type>")
 *   types(v)          -> the same shape with each leaf replaced by math.type/type
 *   record(tag, v)    -> appends "tag\t" .. enc(v) .. "\n" to $OUT
 *   evrec(ev)         -> a plain table of every contract field of ev (for record)
 */
export const RECORDER = String.raw`
local OUT = assert(os.getenv("OUT"), "OUT env var not set")
local function esc(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' elseif c == '\\' then return '\\\\'
    elseif c == '\n' then return '\\n' elseif c == '\r' then return '\\r'
    elseif c == '\t' then return '\\t' else return string.format('\\u%04x', c:byte()) end
  end) .. '"'
end
local function isarray(t)
  local n = 0
  for k in pairs(t) do
    if math.type(k) ~= 'integer' or k < 1 then return false end
    n = n + 1
  end
  for i = 1, n do if t[i] == nil then return false end end
  return n > 0
end
function enc(v)
  local tv = type(v)
  if tv == 'nil' then return 'null'
  elseif tv == 'boolean' then return tostring(v)
  elseif tv == 'number' then
    if math.type(v) == 'integer' then return string.format('%d', v) end
    if v ~= v or v == math.huge or v == -math.huge then return '"' .. tostring(v) .. '"' end
    return string.format('%.17g', v)
  elseif tv == 'string' then return esc(v)
  elseif tv == 'table' then
    local parts = {}
    if isarray(v) then
      for i = 1, #v do parts[#parts + 1] = enc(v[i]) end
      return '[' .. table.concat(parts, ',') .. ']'
    end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = tostring(k) end
    table.sort(keys)
    for _, k in ipairs(keys) do
      local val = v[k]
      if val == nil then val = v[tonumber(k)] end
      parts[#parts + 1] = esc(k) .. ':' .. enc(val)
    end
    return '{' .. table.concat(parts, ',') .. '}'
  else return esc('<' .. tv .. '>') end
end
function types(v)
  if type(v) == 'table' then
    local t = {}
    for k, x in pairs(v) do t[k] = types(x) end
    return t
  elseif type(v) == 'number' then return math.type(v)
  else return type(v) end
end
function record(tag, v)
  local f = assert(io.open(OUT, 'a'))
  f:write(tag, '\t', enc(v), '\n')
  f:close()
end
function evrec(ev)
  return { id = ev.id, type = ev.type, subject = ev.subject, time = ev.time,
           source = ev.source, data = ev.data, schema = ev.schema,
           data_version = ev.data_version, delivery_count = ev.delivery_count,
           delivery_count_type = math.type(ev.delivery_count),
           raw = ev.raw, data_types = types(ev.data) }
end
`;

// ---------------------------------------------------------------------------------------
// daemon

const live = new Set();
process.on('exit', () => {
  for (const p of live) {
    try { p.kill('SIGKILL'); } catch { /* gone */ }
  }
  for (const d of tmpDirs) {
    try { fs.rmSync(d, { recursive: true, force: true }); } catch { /* ignore */ }
  }
});

/** Environment for the daemon: ours minus any LUAHOOK_* option variables, plus extra. */
export function daemonEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('LUAHOOK_')) continue; // don't let the caller's options leak in
    env[k] = v;
  }
  return { ...env, ...extra };
}

function assertBin() {
  if (!fs.existsSync(BIN)) {
    throw new Error(`luahook binary not found at ${BIN} (set LUAHOOK_BIN)`);
  }
}

/**
 * Runs `luahook ...args` to completion. Returns {code, signal, stdout, stderr}.
 * Kills it after timeoutMs (then code is null and timedOut is true).
 */
export function runCli(args, { env = {}, timeoutMs = 10000, input } = {}) {
  assertBin();
  return new Promise((resolve, reject) => {
    const p = spawn(BIN, args, { env: daemonEnv(env), stdio: ['pipe', 'pipe', 'pipe'] });
    live.add(p);
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    p.stdout.setEncoding('utf8').on('data', (d) => { stdout += d; });
    p.stderr.setEncoding('utf8').on('data', (d) => { stderr += d; });
    const t = setTimeout(() => { timedOut = true; p.kill('SIGKILL'); }, timeoutMs);
    p.on('error', (e) => { clearTimeout(t); live.delete(p); reject(e); });
    p.on('close', (code, signal) => {
      clearTimeout(t);
      live.delete(p);
      const san = stderr.search(SANITIZER_RE);
      if (san >= 0) {
        reject(new Error(`sanitizer report from luahook ${args.join(' ')}:\n${stderr.slice(Math.max(0, san - 200), san + 6000)}`));
        return;
      }
      resolve({ code, signal, stdout, stderr, timedOut });
    });
    if (input !== undefined) p.stdin.end(input); else p.stdin.end();
  });
}

const LISTEN_RE = /listening on http:\/\/127\.0\.0\.1:(\d+)/;
export const SANITIZER_RE = /ERROR: (AddressSanitizer|LeakSanitizer)|runtime error: |WARNING: ThreadSanitizer/;

/**
 * Starts `luahook run SCRIPT --listen 127.0.0.1:0 ...args` and waits for its
 * "listening on http://127.0.0.1:PORT" line.
 * Returns {port, url(path), proc, stderr(), waitStderr(re, ms), exited, stop()}.
 */
export async function startDaemon({ script, args = [], env = {}, timeoutMs = 10000, listen = true } = {}) {
  assertBin();
  const argv = ['run', script];
  if (listen) argv.push('--listen', '127.0.0.1:0');
  argv.push(...args);
  const proc = spawn(BIN, argv, { env: daemonEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(proc);
  let err = '';
  let out = '';
  const watchers = new Set();
  const notify = () => { for (const w of watchers) w(); };
  proc.stderr.setEncoding('utf8').on('data', (d) => { err += d; notify(); });
  proc.stdout.setEncoding('utf8').on('data', (d) => { out += d; });
  let exitInfo = null;
  const exited = new Promise((resolve) => {
    proc.on('exit', (code, signal) => {
      exitInfo = { code, signal };
      live.delete(proc);
      notify();
      resolve(exitInfo);
    });
  });
  proc.on('error', (e) => { err += `\n[spawn error] ${e.message}\n`; notify(); });

  const waitStderr = (re, ms = 5000) => new Promise((resolve, reject) => {
    const check = () => {
      const m = err.match(re);
      if (m) { done(); resolve(m); return true; }
      return false;
    };
    const t = setTimeout(() => {
      done();
      reject(new Error(`timeout after ${ms} ms waiting for ${re} in daemon stderr:\n${err}`));
    }, ms);
    const w = () => { check(); };
    const done = () => { clearTimeout(t); watchers.delete(w); };
    if (!check()) watchers.add(w);
  });

  // Stops the daemon (SIGTERM, then SIGKILL after ms). Throws when the daemon had
  // died on its own before, or when its stderr holds a sanitizer report (ASan/UBSan/LSan
  // builds print those, LeakSanitizer only at exit).
  const stop = async (ms = 3000, { check = true } = {}) => {
    const diedEarly = exitInfo !== null;
    let r = exitInfo;
    if (!r) {
      proc.kill('SIGTERM');
      r = await Promise.race([exited, sleep(ms).then(() => null)]);
      if (!r) {
        proc.kill('SIGKILL');
        r = await exited;
        if (check) throw new Error(`luahook did not exit within ${ms} ms of SIGTERM; stderr tail:\n${err.slice(-3000)}`);
      }
    }
    if (check) {
      const san = err.search(SANITIZER_RE);
      if (san >= 0) throw new Error(`sanitizer report in luahook stderr:\n${err.slice(Math.max(0, san - 200), san + 6000)}`);
      if (diedEarly) throw new Error(`luahook died before stop() (${JSON.stringify(r)}); stderr tail:\n${err.slice(-3000)}`);
    }
    return r;
  };

  let port;
  try {
    const m = await Promise.race([
      waitStderr(LISTEN_RE, timeoutMs),
      exited.then((x) => {
        throw new Error(`luahook exited (${JSON.stringify(x)}) before listening; stderr:\n${err}`);
      }),
    ]);
    port = Number(m[1]);
  } catch (e) {
    await stop(3000, { check: false });
    throw e;
  }
  return {
    port,
    proc,
    url: (p = '/api/events') => `http://127.0.0.1:${port}${p}`,
    stderr: () => err,
    stdout: () => out,
    waitStderr,
    exited,
    exitInfo: () => exitInfo,
    stop,
  };
}

// ---------------------------------------------------------------------------------------
// raw HTTP over node:net

function indexOfCRLFCRLF(buf, from = 0) {
  return buf.indexOf('\r\n\r\n', from, 'latin1');
}

/**
 * Incremental HTTP/1.x response parser. feed(buf) returns newly completed responses.
 * Each: {status, reason, version, headers: {lower-name: value (joined by ", ")},
 *        rawHeaders: [[name, value]...], body: Buffer, text, interim: bool}
 * HEAD responses aren't supported (not used by the tests).
 */
export class ResponseParser {
  constructor() {
    this.buf = Buffer.alloc(0);
    this.cur = null; // response whose body is being read
    this.error = null;
  }

  feed(chunk) {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const done = [];
    for (;;) {
      const r = this._step();
      if (!r) break;
      done.push(r);
    }
    return done;
  }

  /** The peer closed: finishes a read-until-close body. */
  end() {
    if (this.cur && this.cur.mode === 'close') {
      const r = this._finish(this.buf);
      this.buf = Buffer.alloc(0);
      return [r];
    }
    return [];
  }

  _finish(body) {
    const r = this.cur.res;
    r.body = body;
    r.text = body.toString('utf8');
    this.cur = null;
    return r;
  }

  _step() {
    if (this.error) return null;
    if (!this.cur) {
      const end = indexOfCRLFCRLF(this.buf);
      if (end < 0) return null;
      const head = this.buf.subarray(0, end).toString('latin1');
      this.buf = this.buf.subarray(end + 4);
      const lines = head.split('\r\n');
      const m = lines[0].match(/^HTTP\/(\d\.\d) (\d{3})(?: (.*))?$/);
      if (!m) {
        this.error = new Error(`bad status line: ${JSON.stringify(lines[0])}`);
        return null;
      }
      const res = {
        version: m[1], status: Number(m[2]), reason: m[3] ?? '', headers: {}, rawHeaders: [],
        body: Buffer.alloc(0), text: '', interim: Number(m[2]) < 200, head,
      };
      for (const line of lines.slice(1)) {
        const c = line.indexOf(':');
        if (c <= 0) { this.error = new Error(`bad header line: ${JSON.stringify(line)}`); return null; }
        const name = line.slice(0, c).trim();
        const value = line.slice(c + 1).trim();
        res.rawHeaders.push([name, value]);
        const k = name.toLowerCase();
        res.headers[k] = k in res.headers ? `${res.headers[k]}, ${value}` : value;
      }
      if (res.interim || res.status === 204 || res.status === 304) return res;
      const te = (res.headers['transfer-encoding'] || '').toLowerCase();
      if (te.includes('chunked')) {
        this.cur = { res, mode: 'chunked', parts: [] };
      } else if ('content-length' in res.headers) {
        const n = Number(res.headers['content-length']);
        if (!Number.isInteger(n) || n < 0) {
          this.error = new Error(`bad content-length ${res.headers['content-length']}`);
          return null;
        }
        this.cur = { res, mode: 'length', n };
      } else {
        this.cur = { res, mode: 'close' };
        return null;
      }
    }
    const c = this.cur;
    if (c.mode === 'length') {
      if (this.buf.length < c.n) return null;
      const body = Buffer.from(this.buf.subarray(0, c.n));
      this.buf = this.buf.subarray(c.n);
      return this._finish(body);
    }
    if (c.mode === 'chunked') {
      for (;;) {
        const le = this.buf.indexOf('\r\n', 0, 'latin1');
        if (le < 0) return null;
        const size = parseInt(this.buf.subarray(0, le).toString('latin1').split(';')[0], 16);
        if (Number.isNaN(size)) { this.error = new Error('bad chunk size'); return null; }
        if (size === 0) {
          const te = indexOfCRLFCRLF(this.buf, le);
          // "0\r\n\r\n": trailer section ends right after the size line
          let endAt;
          if (this.buf.subarray(le, le + 4).toString('latin1') === '\r\n\r\n') endAt = le + 4;
          else if (te >= 0) endAt = te + 4;
          else return null;
          this.buf = this.buf.subarray(endAt);
          return this._finish(Buffer.concat(c.parts));
        }
        if (this.buf.length < le + 2 + size + 2) return null;
        c.parts.push(Buffer.from(this.buf.subarray(le + 2, le + 2 + size)));
        this.buf = this.buf.subarray(le + 2 + size + 2);
      }
    }
    return null; // mode 'close': wait for end()
  }
}

/**
 * One raw TCP connection with a response parser.
 *   const c = await RawConn.open(port);
 *   c.write('POST ... \r\n\r\n');
 *   const r = await c.response(3000);   // next response, interim (1xx) ones included
 *   const closed = await c.waitClosed(2000);
 */
export class RawConn {
  static open(port, { host = '127.0.0.1', timeoutMs = 3000 } = {}) {
    return new Promise((resolve, reject) => {
      const sock = net.connect({ port, host });
      const t = setTimeout(() => { sock.destroy(); reject(new Error('connect timeout')); }, timeoutMs);
      sock.once('connect', () => { clearTimeout(t); resolve(new RawConn(sock)); });
      sock.once('error', (e) => { clearTimeout(t); reject(e); });
    });
  }

  constructor(sock) {
    this.sock = sock;
    this.parser = new ResponseParser();
    this.responses = []; // parsed, not yet taken
    this.all = [];       // every parsed response
    this.raw = [];       // every received chunk
    this.closed = false; // peer ended / reset / socket closed
    this.closedAt = null;
    this.readEnded = false;
    this.error = null;
    this.waiters = new Set();
    sock.setNoDelay(true);
    sock.on('data', (d) => {
      this.raw.push(d);
      for (const r of this.parser.feed(d)) { this.responses.push(r); this.all.push(r); }
      this._wake();
    });
    const onEnd = () => {
      this.readEnded = true;
      for (const r of this.parser.end()) { this.responses.push(r); this.all.push(r); }
      this._markClosed();
    };
    sock.on('end', onEnd);
    sock.on('error', (e) => { this.error = e; this._markClosed(); });
    sock.on('close', () => { this._markClosed(); });
  }

  _markClosed() {
    if (!this.closed) { this.closed = true; this.closedAt = Date.now(); }
    this._wake();
  }

  _wake() { for (const w of [...this.waiters]) w(); }

  _until(pred, ms, what) {
    return new Promise((resolve, reject) => {
      let t;
      const w = () => {
        let v;
        try { v = pred(); } catch (e) { cleanup(); reject(e); return; }
        if (v !== undefined) { cleanup(); resolve(v); }
      };
      const cleanup = () => { clearTimeout(t); this.waiters.delete(w); };
      t = setTimeout(() => { cleanup(); reject(new Error(`timeout after ${ms} ms waiting for ${what}; received so far: ${JSON.stringify(this.rawText().slice(0, 2000))}`)); }, ms);
      this.waiters.add(w);
      w();
    });
  }

  /** All bytes received so far, as latin1 text. */
  rawText() { return Buffer.concat(this.raw).toString('latin1'); }

  /** Writes bytes (string is sent as latin1 unless it's a Buffer). Ignores EPIPE. */
  write(data) {
    if (this.sock.destroyed) return false;
    const buf = Buffer.isBuffer(data) ? data : Buffer.from(data, 'utf8');
    try { return this.sock.write(buf, () => {}); } catch { return false; }
  }

  /** Next response (interim ones included). Rejects on timeout or when closed first. */
  response(ms = 5000) {
    return this._until(() => {
      if (this.parser.error) throw this.parser.error;
      if (this.responses.length) return this.responses.shift();
      if (this.closed) throw new Error(`connection closed before a response; received: ${JSON.stringify(this.rawText().slice(0, 2000))}`);
      return undefined;
    }, ms, 'a response');
  }

  /** Next final (>= 200) response, skipping and returning interim ones in .interims. */
  async finalResponse(ms = 5000) {
    const deadline = Date.now() + ms;
    const interims = [];
    for (;;) {
      const r = await this.response(Math.max(1, deadline - Date.now()));
      if (!r.interim) { r.interims = interims; return r; }
      interims.push(r);
    }
  }

  /** Resolves true once the peer closed, false if still open after ms. */
  async waitClosed(ms = 2000) {
    try {
      await this._until(() => (this.closed ? true : undefined), ms, 'close');
      return true;
    } catch {
      return false;
    }
  }

  /** Resolves true if nothing (no byte) arrives within ms. */
  async quietFor(ms) {
    const n = this.raw.length;
    await sleep(ms);
    return this.raw.length === n;
  }

  destroy() { this.sock.destroy(); }
}

/**
 * Opens a connection, writes `data` (a string/Buffer, or an array of them written
 * with `gapMs` between), collects `responses` final responses, then waits up to
 * closeWaitMs to see whether the server closes.
 * Returns {responses (final only), interims, closed, raw}.
 */
export async function rawExchange(port, data, { responses = 1, timeoutMs = 5000, gapMs = 0, closeWaitMs = 0 } = {}) {
  const c = await RawConn.open(port);
  try {
    const parts = Array.isArray(data) ? data : [data];
    for (let i = 0; i < parts.length; i++) {
      if (i && gapMs) await sleep(gapMs);
      c.write(parts[i]);
    }
    const out = [];
    const interims = [];
    const deadline = Date.now() + timeoutMs;
    while (out.length < responses) {
      const r = await c.response(Math.max(1, deadline - Date.now()));
      if (r.interim) interims.push(r); else out.push(r);
    }
    const closed = closeWaitMs ? await c.waitClosed(closeWaitMs) : c.closed;
    return { responses: out, interims, closed, raw: c.rawText(), conn: c };
  } finally {
    c.destroy();
  }
}

/** Builds the bytes of an HTTP/1.1 request. body may be a string, Buffer or object (JSON). */
export function buildRequest({ method = 'POST', path: p = '/api/events', headers = {}, body, version = '1.1', contentLength = true } = {}) {
  let b = body;
  if (b !== undefined && !Buffer.isBuffer(b) && typeof b !== 'string') b = JSON.stringify(b);
  const bodyBuf = b === undefined ? Buffer.alloc(0) : Buffer.isBuffer(b) ? b : Buffer.from(b, 'utf8');
  const h = { Host: '127.0.0.1', ...headers };
  const lower = Object.keys(h).map((k) => k.toLowerCase());
  if (b !== undefined && contentLength && !lower.includes('content-length') && !lower.includes('transfer-encoding')) {
    h['Content-Length'] = String(bodyBuf.length);
  }
  if (b !== undefined && !lower.includes('content-type')) h['Content-Type'] = 'application/json';
  let head = `${method} ${p} HTTP/${version}\r\n`;
  for (const [k, v] of Object.entries(h)) {
    if (v === undefined || v === null) continue;
    head += `${k}: ${v}\r\n`;
  }
  head += '\r\n';
  return Buffer.concat([Buffer.from(head, 'latin1'), bodyBuf]);
}

/** Encodes a body as HTTP/1.1 chunks of the given sizes (remainder in the last chunk). */
export function chunked(body, sizes = [7, 13, 1]) {
  const buf = Buffer.isBuffer(body) ? body : Buffer.from(body, 'utf8');
  const parts = [];
  let off = 0;
  let i = 0;
  while (off < buf.length) {
    const n = Math.min(sizes[i % sizes.length] || buf.length, buf.length - off);
    parts.push(Buffer.from(`${n.toString(16)}\r\n`, 'latin1'), buf.subarray(off, off + n), Buffer.from('\r\n'));
    off += n;
    i++;
  }
  parts.push(Buffer.from('0\r\n\r\n'));
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------------------------------
// node:http

/**
 * One request with node:http. body: string | Buffer | any JSON value (stringified).
 * Returns {status, headers, body (Buffer), text, json()}. agent defaults to a
 * fresh non-keep-alive Agent (so every call is its own connection).
 */
export function request(port, { method = 'GET', path: p = '/', headers = {}, body, agent, timeoutMs = 10000 } = {}) {
  return new Promise((resolve, reject) => {
    let payload;
    if (body !== undefined) {
      payload = Buffer.isBuffer(body) ? body : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body), 'utf8');
    }
    const h = { ...headers };
    const lower = Object.keys(h).map((k) => k.toLowerCase());
    if (payload && !lower.includes('content-type')) h['Content-Type'] = 'application/json';
    if (payload && !lower.includes('content-length') && !lower.includes('transfer-encoding')) {
      h['Content-Length'] = String(payload.length);
    }
    const ownAgent = agent === undefined;
    const ag = ownAgent ? new http.Agent({ keepAlive: false }) : agent;
    const req = http.request({ host: '127.0.0.1', port, method, path: p, headers: h, agent: ag }, (res) => {
      const parts = [];
      res.on('data', (d) => parts.push(d));
      res.on('end', () => {
        clearTimeout(t);
        if (ownAgent) ag.destroy();
        const buf = Buffer.concat(parts);
        const text = buf.toString('utf8');
        resolve({
          status: res.statusCode,
          headers: res.headers,
          rawHeaders: res.rawHeaders,
          body: buf,
          text,
          json: () => JSON.parse(text),
        });
      });
      res.on('error', (e) => { clearTimeout(t); reject(e); });
    });
    const t = setTimeout(() => {
      req.destroy(new Error(`timeout after ${timeoutMs} ms: ${method} ${p}`));
    }, timeoutMs);
    req.on('error', (e) => { clearTimeout(t); if (ownAgent) ag.destroy(); reject(e); });
    if (payload) req.end(payload); else req.end();
  });
}

/** POST body (object -> JSON) to path. */
export function post(port, p, body, headers = {}, opts = {}) {
  return request(port, { ...opts, method: 'POST', path: p, body, headers });
}

export function get(port, p, headers = {}, opts = {}) {
  return request(port, { ...opts, method: 'GET', path: p, headers });
}

/** GET /healthz must answer 200 with a JSON body. Returns the response. */
export async function healthz(port) {
  const r = await get(port, '/healthz', {}, { timeoutMs: 3000 });
  return r;
}

// ---------------------------------------------------------------------------------------
// misc

/** Polls fn() until it returns a truthy value; returns it, or throws after ms. */
export async function waitFor(fn, ms = 3000, what = 'condition', step = 20) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timeout after ${ms} ms waiting for ${what}`);
    await sleep(step);
  }
}

/** Rejects after ms (for Promise.race). */
export function deadline(ms, what = 'operation') {
  return new Promise((_, reject) => setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms).unref());
}

let seq = 0;
/** A minimal valid Event Grid event (custom type unless overridden). */
export function egEvent(over = {}) {
  seq += 1;
  return {
    id: `ev-${process.pid}-${seq}`,
    topic: '/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.EventGrid/topics/t',
    subject: '/test',
    eventType: 'Contoso.Test.Something',
    eventTime: '2024-05-01T12:00:00Z',
    data: { n: seq },
    dataVersion: '1.0',
    metadataVersion: '1',
    ...over,
  };
}

/** A SignalR ClientConnectionConnected/Disconnected event. */
export function signalrEvent(kind = 'Connected', over = {}, dataOver = {}) {
  const data = {
    timestamp: '2024-05-01T12:00:00Z', hubName: 'chat', connectionId: `conn-${seq + 1}`, userId: 'user-1',
    ...(kind === 'Disconnected' ? { errorMessage: 'Internal server error.' } : {}),
    ...dataOver,
  };
  return egEvent({
    topic: '/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/signalr-rg/providers/Microsoft.SignalRService/SignalR/sr',
    subject: '/hub/chat',
    eventType: `Microsoft.SignalRService.ClientConnection${kind}`,
    data,
    ...over,
  });
}

/** 1-based line number of the first line of `text` containing `marker`. */
export function lineOf(text, marker) {
  const i = text.split('\n').findIndex((l) => l.includes(marker));
  if (i < 0) throw new Error(`marker ${marker} not in script`);
  return i + 1;
}

/** Checks the framing every luahook response must have: Content-Length matching the body. */
export function assertFraming(assert, r, what = '') {
  assert.ok('content-length' in r.headers, `${what} response has no Content-Length: ${JSON.stringify(r.headers)}`);
  assert.equal(Number(r.headers['content-length']), r.body.length, `${what} Content-Length matches the body`);
  assert.ok(!('transfer-encoding' in r.headers), `${what} response must not be chunked`);
}
