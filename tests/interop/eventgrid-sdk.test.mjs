// Interop: the official @azure/eventgrid publisher client (EventGridPublisherClient,
// Event Grid schema, key credential -> `aeg-sas-key` header, `?api-version=...` query)
// delivers to a real luahook started with --secret = the key.
import { describe, it, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { EventGridPublisherClient } from '@azure/eventgrid';
import { AzureKeyCredential } from '@azure/core-auth';
import {
  RECORDER, startDaemon, writeScript, outPath, readRecords, clearOut,
} from '../e2e/lib.mjs';

const KEY = 'c2VjcmV0LWtleS1mb3ItdGVzdHM=';

const SCRIPT = `${RECORDER}
function on_connected(ev) record("connected", evrec(ev)) end
function on_disconnected(ev) record("disconnected", evrec(ev)) end
function on_event(ev) record("event", evrec(ev)) end
`;

const clientOpts = { allowInsecureConnection: true, retryOptions: { maxRetries: 0 } };

describe('interop: @azure/eventgrid EventGridPublisherClient -> luahook', () => {
  let d;
  let out;
  before(async () => {
    out = outPath();
    d = await startDaemon({ script: writeScript(SCRIPT), env: { OUT: out }, args: ['--secret', KEY] });
  });
  after(async () => { await d?.stop(); });
  beforeEach(() => clearOut(out));

  it('send() of two SignalR events reaches on_connected / on_disconnected with their ids', async () => {
    const client = new EventGridPublisherClient(d.url('/api/events'), 'EventGrid', new AzureKeyCredential(KEY), clientOpts);
    const when = new Date('2024-06-01T08:30:00.123Z');
    const events = [
      {
        id: 'sdk-connected-1',
        eventType: 'Microsoft.SignalRService.ClientConnectionConnected',
        subject: '/hub/chat',
        dataVersion: '1.0',
        eventTime: when,
        data: { timestamp: when.toISOString(), hubName: 'chat', connectionId: 'sdk-conn-1', userId: 'sdk-user' },
      },
      {
        id: 'sdk-disconnected-1',
        eventType: 'Microsoft.SignalRService.ClientConnectionDisconnected',
        subject: '/hub/chat',
        dataVersion: '1.0',
        data: { timestamp: when.toISOString(), hubName: 'chat', connectionId: 'sdk-conn-1', userId: 'sdk-user', errorMessage: 'bye' },
      },
    ];
    await Promise.race([
      client.send(events),
      new Promise((_, rej) => setTimeout(() => rej(new Error('send() took more than 10 s')), 10000).unref()),
    ]);
    const recs = readRecords(out);
    assert.deepEqual(recs.map((r) => [r.tag, r.value.id]), [
      ['connected', 'sdk-connected-1'],
      ['disconnected', 'sdk-disconnected-1'],
    ]);
    const [c, x] = recs.map((r) => r.value);
    assert.equal(c.type, events[0].eventType);
    assert.equal(c.subject, '/hub/chat');
    assert.equal(c.data_version, '1.0');
    assert.equal(c.schema, 'eventgrid');
    assert.deepEqual(c.data, events[0].data);
    assert.equal(new Date(c.time).getTime(), when.getTime(), `ev.time ${c.time} is the SDK's eventTime`);
    assert.deepEqual(x.data, events[1].data);
    assert.equal(x.data.errorMessage, 'bye');
    assert.equal(JSON.parse(c.raw).id, 'sdk-connected-1');
    assert.ok(typeof x.time === 'string' && !Number.isNaN(Date.parse(x.time)), 'SDK-stamped eventTime accepted');
  });

  it('a custom event type from the SDK reaches on_event; generated ids work', async () => {
    const client = new EventGridPublisherClient(d.url('/api/events'), 'EventGrid', new AzureKeyCredential(KEY), clientOpts);
    await client.send([{ eventType: 'Contoso.Items.ItemReceived', subject: 'items/1', dataVersion: '2.0', data: { n: 5, f: 0.5, tags: ['a', 'b'] } }]);
    const recs = readRecords(out);
    assert.equal(recs.length, 1);
    assert.equal(recs[0].tag, 'event');
    assert.match(recs[0].value.id, /^[0-9a-f-]{36}$/i, 'the SDK-generated UUID arrives as ev.id');
    assert.deepEqual(recs[0].value.data, { n: 5, f: 0.5, tags: ['a', 'b'] });
    assert.deepEqual(recs[0].value.data_types, { n: 'integer', f: 'float', tags: ['string', 'string'] });
  });

  it('a wrong key -> the SDK reports 401 and no handler runs', async () => {
    const client = new EventGridPublisherClient(d.url('/api/events'), 'EventGrid', new AzureKeyCredential('wrong-key'), clientOpts);
    await assert.rejects(
      client.send([{ eventType: 'Microsoft.SignalRService.ClientConnectionConnected', subject: '/hub/chat', dataVersion: '1.0', data: { hubName: 'chat', connectionId: 'x' } }]),
      (err) => {
        assert.equal(err.statusCode, 401, `statusCode ${err.statusCode}: ${err.message}`);
        return true;
      },
    );
    assert.deepEqual(readRecords(out), []);
  });
});
