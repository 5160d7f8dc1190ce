// Reload latency under load: saves the handler N times (alternating save styles),
// measures the time from each save to /healthz reporting the new generation, while
// a client keeps posting events on keep-alive connections and counts every answer
// that is not 200. Prints one RESULT line.
//   node bench/reload.mjs LUAHOOK_BIN [SAVES]
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';

const [bin, savesArg] = process.argv.slice(2);
const SAVES = Number(savesArg || 20);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luahook-reload-'));
const script = path.join(dir, 'handler.lua');
const source = (v) => `local online = state.online or {}\nstate.online = online\n` +
  `function on_connected(ev) online[ev.data.hubName] = (online[ev.data.hubName] or 0) + 1 end -- v${v}\n` +
  `function on_disconnected(ev) online[ev.data.hubName] = (online[ev.data.hubName] or 0) - 1 end\n`;
fs.writeFileSync(script, source(0));

const proc = spawn(bin, ['run', script, '--listen', '127.0.0.1:0', '--log-level', 'warn'], { stdio: ['ignore', 'ignore', 'pipe'] });
let port;
await new Promise((resolve, reject) => {
  const t = setTimeout(() => reject(new Error('no listening line')), 5000);
  proc.stderr.on('data', (d) => {
    const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(d.toString());
    if (m && !port) { port = Number(m[1]); clearTimeout(t); resolve(); }
  });
});

const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
function request(method, p, body) {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, path: p, method, agent,
      headers: body ? { 'content-type': 'application/json', 'aeg-event-type': 'Notification' } : {} }, (res) => {
      let data = '';
      res.on('data', (c) => { data += c; });
      res.on('end', () => resolve({ status: res.statusCode, data }));
    });
    req.on('error', (e) => resolve({ status: 0, data: String(e) }));
    req.end(body);
  });
}

let sent = 0, failed = 0, running = true, seq = 0;
async function client() {
  while (running) {
    const id = `r-${process.pid}-${seq++}`;
    const body = JSON.stringify([{ id, eventType: 'Microsoft.SignalRService.ClientConnectionConnected',
      eventTime: new Date().toISOString(), subject: '/hub/chat',
      data: { hubName: 'chat', connectionId: id, userId: 'u' } }]);
    const r = await request('POST', '/api/events', body);
    sent++;
    if (r.status !== 200) failed++;
  }
}
const generation = async () => JSON.parse((await request('GET', '/healthz')).data).generation;

const clients = [client(), client(), client(), client()];
const lat = [];
let gen = await generation();
for (let i = 1; i <= SAVES; i++) {
  await new Promise((r) => setTimeout(r, 150));
  const text = source(i);
  const t0 = process.hrtime.bigint();
  switch (i % 3) { // write in place / temp file renamed over / truncate then write
    case 0: fs.writeFileSync(script, text); break;
    case 1: fs.writeFileSync(script + '.tmp', text); fs.renameSync(script + '.tmp', script); break;
    default: fs.truncateSync(script, 0); fs.appendFileSync(script, text); break;
  }
  let ms = Infinity;
  while (Number(process.hrtime.bigint() - t0) / 1e6 < 3000) {
    const g = await generation();
    if (g > gen) { gen = g; ms = Number(process.hrtime.bigint() - t0) / 1e6; break; }
  }
  lat.push(ms);
}
running = false;
await Promise.all(clients);
proc.kill('SIGTERM');
agent.destroy();
fs.rmSync(dir, { recursive: true, force: true });
lat.sort((a, b) => a - b);
const median = lat[Math.floor(lat.length / 2)];
console.log(`RESULT saves=${SAVES} median_ms=${median.toFixed(1)} worst_ms=${lat[lat.length - 1].toFixed(1)} requests=${sent} failed=${failed}`);
process.exit(failed ? 1 : 0);
