// The HTTP log sink against a real HTTP receiver on loopback.
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { HttpSink, type HttpSinkConfig, parseRetryAfter } from '../exporter/http-sink.js';
import { ExporterMetrics } from '../exporter/metrics.js';
import type { EnrichedFlow } from '../shared/flow.js';
import { silentLogger } from '../shared/log.js';
import { HttpReceiver } from './helpers/http-receiver.js';

const flow = (i: number, over: Partial<EnrichedFlow> = {}): EnrichedFlow => ({
  ts: Date.UTC(2026, 0, 2, 3, 4, 5, 0),
  intervalSeconds: 15,
  srcIp: '10.0.1.5',
  srcPod: 'web-1',
  srcNamespace: 'shop',
  srcWorkload: 'Deployment/web',
  srcNode: 'node-a',
  srcZone: 'zone-a',
  dstIp: `8.8.8.${i % 256}`,
  dstPod: '',
  dstNamespace: '',
  dstWorkload: '',
  dstNode: '',
  dstZone: '',
  dstDnsName: '',
  dstType: 'public',
  crossZone: false,
  proto: 'TCP',
  txBytes: 1000 + i,
  rxBytes: 2000 + i,
  txPackets: 10,
  rxPackets: 20,
  ...over,
});

let rx: HttpReceiver;
let registry: Registry;
let metrics: ExporterMetrics;
const sinks: HttpSink[] = [];

beforeEach(async () => {
  rx = await HttpReceiver.start();
  registry = new Registry();
  metrics = new ExporterMetrics(registry);
});
afterEach(async () => {
  for (const s of sinks.splice(0)) await s.close(Date.now());
  await rx.close();
});

function sink(over: Partial<HttpSinkConfig> = {}, env: NodeJS.ProcessEnv = {}): HttpSink {
  const s = new HttpSink(
    {
      httpSinkUrl: rx.url,
      httpSinkGzip: false,
      httpSinkHeaders: {},
      httpSinkTimeout: 2000,
      httpSinkMaxRetries: 5,
      httpSinkQueueMax: 1000,
      httpSinkBatchMax: 1000,
      retryBaseMs: 20,
      retryMaxMs: 5000,
      ...over,
    },
    { log: silentLogger, metrics, env },
  );
  sinks.push(s);
  return s;
}

// The ${NAME} syntax users write in --http-sink-headers, kept out of template-literal look-alikes.
const env = (name: string) => `$${'{'}${name}}`;

const metric = (name: string) => registry.getSingleMetricAsString(name);

describe('HTTP sink records', () => {
  it('posts NDJSON records of the contract with configured headers (env expanded)', async () => {
    const s = sink(
      { httpSinkHeaders: { Authorization: `Bearer ${env('TOKEN')}`, 'X-Team': 'net' } },
      { TOKEN: 's3cr3t' },
    );
    await s.push(
      [flow(1, { crossZone: true, dstType: 'pod', dstPod: 'db-0', dstDnsName: 'db.shop.svc' }), flow(2)],
      {
        id: 'abc',
      },
    );
    expect(rx.requests).toHaveLength(1);
    const req = rx.requests[0];
    expect(req.method).toBe('POST');
    expect(req.path).toBe('/ingest');
    expect(req.headers['content-type']).toBe('application/x-ndjson');
    expect(req.headers.authorization).toBe('Bearer s3cr3t');
    expect(req.headers['x-team']).toBe('net');
    expect(req.headers['idempotency-key']).toBe('abc');
    expect(req.headers['content-encoding']).toBeUndefined();
    const text = req.body.toString('utf8');
    expect(text.endsWith('\n')).toBe(true);
    const lines = text.trimEnd().split('\n');
    expect(lines).toHaveLength(2);
    expect(JSON.parse(lines[0])).toEqual({
      ts: '2026-01-02T03:04:05.000Z',
      interval_seconds: 15,
      src_ip: '10.0.1.5',
      src_pod: 'web-1',
      src_namespace: 'shop',
      src_workload: 'Deployment/web',
      src_node: 'node-a',
      src_zone: 'zone-a',
      dst_ip: '8.8.8.1',
      dst_pod: 'db-0',
      dst_namespace: '',
      dst_workload: '',
      dst_node: '',
      dst_zone: '',
      dst_dns_name: 'db.shop.svc',
      dst_type: 'pod',
      cross_zone: true,
      proto: 'TCP',
      tx_bytes: 1001,
      rx_bytes: 2001,
      tx_packets: 10,
      rx_packets: 20,
    });
    expect(JSON.parse(lines[1]).cross_zone).toBe(false);
  });

  it('refuses to start with a header that names an unset variable', () => {
    expect(() => sink({ httpSinkHeaders: { Authorization: `Bearer ${env('NOPE')}` } }, {})).toThrow(
      /header Authorization uses \$\{NOPE\} but NOPE is not set/,
    );
  });

  it('gzips the body when configured', async () => {
    await sink({ httpSinkGzip: true }).push([flow(1), flow(2), flow(3)]);
    const req = rx.requests[0];
    expect(req.headers['content-encoding']).toBe('gzip');
    expect(req.raw[0]).toBe(0x1f);
    expect(req.raw[1]).toBe(0x8b);
    expect(rx.acceptedRecords().map((r) => r.tx_bytes)).toEqual([1001, 1002, 1003]);
  });

  it('splits a push into POSTs of http-sink-batch-max records, each with its own stable key', async () => {
    const s = sink({ httpSinkBatchMax: 10 });
    const flows = Array.from({ length: 25 }, (_, i) => flow(i));
    rx.respond({ status: 503 });
    await s.push(flows, { id: 'k' });
    expect(rx.requests.map((r) => r.body.toString().trimEnd().split('\n').length)).toEqual([10, 10, 10, 5]);
    expect(rx.requests.map((r) => r.headers['idempotency-key'])).toEqual(['k-0', 'k-0', 'k-1', 'k-2']);
    expect(rx.acceptedRecords()).toHaveLength(25);
  });
});

describe('HTTP sink retries', () => {
  it('retries network errors and 5xx with the same Idempotency-Key, then resolves', async () => {
    rx.respond({ status: 500 }, { close: true }, { status: 502 }, { status: 503 });
    await sink().push([flow(1)]);
    expect(rx.requests.map((r) => r.answer)).toEqual([500, 'closed', 502, 503, 200]);
    const keys = new Set(rx.requests.map((r) => r.headers['idempotency-key']));
    expect(keys.size).toBe(1);
    expect([...keys][0]).toMatch(/^[0-9a-f-]{36}$/);
    expect(rx.acceptedRecords()).toHaveLength(1);
    expect(await metric('podflow_exporter_http_sink_requests_total')).toContain(
      'podflow_exporter_http_sink_requests_total{code="error"} 1',
    );
  });

  it('backs off exponentially between attempts', async () => {
    rx.respond({ status: 500 }, { status: 500 }, { status: 500 });
    await sink({ retryBaseMs: 100 }).push([flow(1)]);
    const gaps = rx.requests.slice(1).map((r, i) => r.at - rx.requests[i].at);
    // Jitter keeps each wait within [base·2^n / 2, base·2^n].
    expect(gaps[0]).toBeGreaterThanOrEqual(45);
    expect(gaps[1]).toBeGreaterThanOrEqual(95);
    expect(gaps[2]).toBeGreaterThanOrEqual(195);
  });

  it('honours 429 Retry-After in seconds', async () => {
    rx.respond({ status: 429, headers: { 'Retry-After': '1' } });
    await sink().push([flow(1)]);
    expect(rx.requests).toHaveLength(2);
    expect(rx.requests[1].at - rx.requests[0].at).toBeGreaterThanOrEqual(950);
  });

  it('honours 429 Retry-After as an HTTP date', async () => {
    const when = new Date(Math.ceil(Date.now() / 1000) * 1000 + 2000).toUTCString();
    rx.respond({ status: 429, headers: { 'Retry-After': when } });
    await sink().push([flow(1)]);
    expect(rx.requests).toHaveLength(2);
    expect(rx.requests[1].at).toBeGreaterThanOrEqual(Date.parse(when) - 50);
  });

  it('does not retry other 4xx: logged, counted as rejected, the push resolves', async () => {
    rx.respond({ status: 400, body: 'bad record' });
    await sink().push([flow(1), flow(2)]);
    expect(rx.requests).toHaveLength(1);
    expect(await metric('podflow_exporter_dropped_records_total')).toContain(
      'podflow_exporter_dropped_records_total{sink="http",reason="rejected"} 2',
    );
  });

  it('rejects once retries are exhausted', async () => {
    rx.otherwise({ status: 500 });
    await expect(sink({ httpSinkMaxRetries: 2 }).push([flow(1)])).rejects.toThrow(/answered 500/);
    expect(rx.requests).toHaveLength(3);
  });

  it('treats a slow receiver as a timeout and retries', async () => {
    rx.respond({ status: 200, delayMs: 1500 });
    await sink({ httpSinkTimeout: 300 }).push([flow(1)]);
    expect(rx.requests).toHaveLength(2);
    expect(rx.requests[0].headers['idempotency-key']).toBe(rx.requests[1].headers['idempotency-key']);
  });
});

describe('HTTP sink queue and shutdown', () => {
  it('refuses a push that would overflow http-sink-queue-max and counts the records', async () => {
    const s = sink({ httpSinkQueueMax: 5 });
    rx.respond({ status: 200, delayMs: 300 });
    const first = s.push([flow(1), flow(2), flow(3), flow(4)]);
    expect(s.queueSize).toBe(4);
    await expect(s.push([flow(5), flow(6)])).rejects.toThrow(/queue full/);
    await first;
    expect(s.queueSize).toBe(0);
    await s.push([flow(7)]);
    expect(await metric('podflow_exporter_dropped_records_total')).toContain(
      'podflow_exporter_dropped_records_total{sink="http",reason="queue_full"} 2',
    );
    expect(rx.acceptedRecords().map((r) => r.tx_bytes)).toEqual([1001, 1002, 1003, 1004, 1007]);
  });

  it('shutdown flushes what is queued when the deadline allows', async () => {
    const s = sink();
    rx.respond({ status: 200, delayMs: 200 }, { status: 200, delayMs: 200 });
    const a = s.push([flow(1)]);
    const b = s.push([flow(2)]);
    await s.close(Date.now() + 5000);
    await expect(Promise.all([a, b])).resolves.toBeDefined();
    expect(rx.acceptedRecords()).toHaveLength(2);
    await expect(s.push([flow(3)])).rejects.toThrow(/shutting down/);
  });

  it('shutdown gives up at the deadline and rejects what was not sent', async () => {
    const s = sink();
    rx.otherwise({ status: 200, delayMs: 5000 });
    const p = s.push([flow(1)]);
    const q = s.push([flow(2)]);
    const began = Date.now();
    await s.close(began + 300);
    expect(Date.now() - began).toBeLessThan(1500);
    await expect(p).rejects.toThrow(/deadline/);
    await expect(q).rejects.toThrow(/deadline/);
  });
});

describe('parseRetryAfter', () => {
  const now = Date.parse('Wed, 21 Oct 2015 07:28:00 GMT');
  it.each([
    ['120', 120_000],
    [' 0 ', 0],
    ['Wed, 21 Oct 2015 07:28:30 GMT', 30_000],
    ['Wed, 21 Oct 2015 07:00:00 GMT', 0],
    ['soon', undefined],
    ['-5', undefined],
  ])('%s → %s', (v, want) => {
    expect(parseRetryAfter(v, now)).toBe(want);
  });
});
