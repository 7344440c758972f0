// The HTTP log sink against a real HTTP receiver on loopback, alone, in the pipeline with the
// Prometheus sink, and in a `podflow exporter` process.
import type { Logger } from 'pino';
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Backlog } from '../collector/backlog.js';
import { Enricher, emptyClusterLookup } from '../exporter/enrich.js';
import { HttpSink, type HttpSinkConfig, parseRetryAfter, partsOf, toRecord } from '../exporter/http-sink.js';
import { InProcessCollectorClient } from '../exporter/in-process.js';
import { ExporterMetrics } from '../exporter/metrics.js';
import { Pipeline, staticDiscovery } from '../exporter/pipeline.js';
import { PrometheusSink } from '../exporter/prometheus-sink.js';
import { type CollectorClient, PullError } from '../exporter/pull.js';
import { FLOW_LABELS } from '../shared/config.js';
import type { EnrichedFlow, Flow } from '../shared/flow.js';
import { metricsText } from '../shared/http.js';
import { silentLogger } from '../shared/log.js';
import { enriched, toInternet } from './fixtures/flows.js';
import { HttpReceiver } from './helpers/http-receiver.js';
import { startPodflow } from './helpers/podflow.js';
import { freePort } from './helpers/ports.js';
import { seededInt } from './helpers/random.js';
import { startTestCollector } from './helpers/test-collector.js';
import { waitFor } from './helpers/wait.js';
import { captureLogger } from './kube-api-server/harness.js';

const flow = (i: number, over: Partial<EnrichedFlow> = {}): EnrichedFlow =>
  enriched({
    ts: Date.UTC(2026, 0, 2, 3, 4, 5, 0),
    intervalSeconds: 15,
    ...toInternet,
    dstIp: `8.8.8.${i % 256}`,
    txBytes: 1000 + i,
    rxBytes: 2000 + i,
    txPackets: 10,
    rxPackets: 20,
    cost: 0,
    ...over,
  });

/** Internet egress at the AWS preset's price, as the enricher would price these records. */
const price = (f: EnrichedFlow) => f.txBytes * 0.09 * 2 ** -30;
const priced = (i: number, over: Partial<EnrichedFlow> = {}): EnrichedFlow => {
  const f = flow(i, over);
  f.cost = over.cost ?? price(f);
  return f;
};

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

function sink(
  over: Partial<HttpSinkConfig> = {},
  env: NodeJS.ProcessEnv = {},
  log: Logger = silentLogger,
): HttpSink {
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
    { log, metrics, env, price },
  );
  sinks.push(s);
  return s;
}

/** Sum of one metric's samples in Prometheus text (labelled or not). */
const sumOf = (text: string, name: string) =>
  text
    .split('\n')
    .filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `))
    .reduce((a, l) => a + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);

const txOf = (records: Record<string, unknown>[]) => records.reduce((a, r) => a + Number(r.tx_bytes), 0);

/**
 * The export side as `podflow exporter` wires it (enrich → Prometheus sink and HTTP sink), over
 * in-process collectors, with the HTTP sink posting to the test's receiver.
 */
function exportGraph(clients: CollectorClient[], over: Partial<HttpSinkConfig> = {}, exportInterval = 1000) {
  const prometheus = new PrometheusSink(
    { metricsPrefix: 'podflow', metricsLabels: [...FLOW_LABELS], metricsTtl: 0, metricsPodIps: false },
    { registry },
  );
  const pipeline = new Pipeline(
    { exportInterval, pullConcurrency: 4, pullTimeout: 1000 },
    {
      discovery: staticDiscovery(clients),
      enricher: new Enricher({ groupPublicIps: false }, { cluster: emptyClusterLookup, log: silentLogger }),
      sinks: [prometheus, sink(over)],
      log: silentLogger,
      metrics,
    },
  );
  const promTx = async () => sumOf(await metricsText(registry, prometheus), 'podflow_transmit_bytes_total');
  return { pipeline, promTx };
}

/** A collector's backlog fed by hand, and `n` distinct flows per tick with known bytes. */
function traffic(backlogMaxFlows = 1_000_000) {
  const backlog = new Backlog({ backlogMaxFlows });
  const client = new InProcessCollectorClient(backlog, { node: 'n1', source: 'netfilter' });
  let t = 0;
  const fed = { sent: 0 };
  const tick = (n: number) => {
    const flows: Flow[] = Array.from({ length: n }, (_, i) => ({
      src: '10.0.1.5',
      dst: `192.0.${t % 256}.${i}`,
      proto: 6,
      txBytes: 1000 * t + i + 1,
      rxBytes: i,
      txPackets: 1,
      rxPackets: 1,
    }));
    for (const f of flows) fed.sent += f.txBytes;
    backlog.append(t * 1000, (t + 1) * 1000, flows);
    t++;
  };
  return { backlog, client, tick, fed };
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
      [
        flow(1, {
          crossZone: true,
          dstType: 'pod',
          dstPod: 'db-0',
          dstDnsName: 'db.shop.svc',
          dstRegion: 'region-2',
          trafficClass: 'cross-region',
          cost: 0.375,
        }),
        flow(2),
      ],
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
    const want = {
      ts: '2026-01-02T03:04:05.000Z',
      interval_seconds: 15,
      src_ip: '10.0.1.5',
      src_pod: 'web-1',
      src_namespace: 'shop',
      src_workload: 'Deployment/web',
      src_node: 'node-a',
      src_zone: 'zone-a',
      src_region: 'region-1',
      dst_ip: '8.8.8.1',
      dst_pod: 'db-0',
      dst_namespace: '',
      dst_workload: '',
      dst_node: '',
      dst_zone: '',
      dst_region: 'region-2',
      dst_dns_name: 'db.shop.svc',
      dst_type: 'pod',
      traffic_class: 'cross-region',
      cross_zone: true,
      proto: 'TCP',
      tx_bytes: 1001,
      rx_bytes: 2001,
      tx_packets: 10,
      rx_packets: 20,
      cost: 0.375,
    };
    // The contract's field order, not only its fields.
    expect(lines[0]).toBe(JSON.stringify(want));
    expect(JSON.parse(lines[1])).toMatchObject({
      cross_zone: false,
      traffic_class: 'internet',
      dst_region: '',
    });
    expect(JSON.parse(lines[1]).cost).toBe(0);
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

  it('a split push is summed per flow and cut by flow: each key holds the same bytes however it was batched', async () => {
    const s = sink({ httpSinkBatchMax: 10 });
    // Three intervals of the same 25 flows (75 records), then the same bytes as one merged interval.
    const end = Date.UTC(2026, 0, 2, 3, 4, 5, 0);
    const ticks = [0, 1, 2].flatMap((t) =>
      Array.from({ length: 25 }, (_, i) =>
        priced(i, { ts: end - (2 - t) * 5000, intervalSeconds: 5, txBytes: 100 * t + i, rxBytes: 7 * t }),
      ),
    );
    const merged = Array.from({ length: 25 }, (_, i) =>
      priced(i, {
        ts: end,
        intervalSeconds: 15,
        txBytes: 300 + 3 * i,
        rxBytes: 21,
        txPackets: 30,
        rxPackets: 60,
      }),
    );
    await s.push(ticks, { id: 'k' });
    await s.push(merged, { id: 'k' });
    expect(rx.requests.map((r) => r.headers['idempotency-key'])).toEqual([
      'k-0',
      'k-1',
      'k-2',
      'k-0',
      'k-1',
      'k-2',
    ]);
    // Same key, byte-identical body: a receiver that took `k-1` the first time loses and doubles nothing.
    for (let i = 0; i < 3; i++) expect(rx.requests[i + 3]!.body.equals(rx.requests[i]!.body)).toBe(true);
    const recs = rx.acceptedRecords().slice(0, 25);
    expect(recs.map((r) => r.dst_ip)).toEqual(Array.from({ length: 25 }, (_, i) => `8.8.8.${i}`).sort());
    for (const r of recs) {
      expect(r).toMatchObject({ ts: new Date(end).toISOString(), interval_seconds: 15, rx_bytes: 21 });
      expect(r.tx_bytes).toBe(300 + 3 * Number(String(r.dst_ip).split('.')[3]));
      // Priced from the summed bytes, not summed: the same number as the merged batch's.
      expect(r.cost).toBe(price(merged.find((f) => f.dstIp === r.dst_ip)!));
    }
  });

  it('a receiver that took part of a push before the exporter died: after the collector merged the batches, nothing is lost or doubled', async () => {
    // The collector's backlog: 30 flows a tick, 100 at most, so that a fourth tick folds ticks 1 and 2
    // (already offered together with tick 3) into one batch.
    const backlog = new Backlog({ backlogMaxFlows: 100 });
    const tick = (t: number): Flow[] =>
      Array.from({ length: 30 }, (_, i) => ({
        src: '10.0.1.5',
        dst: `192.0.2.${i}`,
        proto: 17,
        txBytes: 1000 * t + i,
        rxBytes: 10 * t + i,
        txPackets: 1,
        rxPackets: 2,
      }));
    let sent = 0;
    for (const t of [1, 2, 3]) {
      const flows = tick(t);
      sent += flows.reduce((a, f) => a + f.txBytes, 0);
      backlog.append(t * 5000, (t + 1) * 5000, flows);
    }
    const exporter = (ackFails: boolean) => {
      const inner = new InProcessCollectorClient(backlog, { node: 'n1', source: 'netfilter' });
      const client = {
        id: inner.id,
        pull: (sig: AbortSignal) => inner.pull(sig),
        ack: ackFails
          ? async () => {
              throw new PullError('network', 'ack: the exporter died first');
            }
          : (boot: string, seq: number, sig: AbortSignal) => inner.ack(boot, seq, sig),
      };
      return new Pipeline(
        { exportInterval: 1000, pullConcurrency: 1, pullTimeout: 1000 },
        {
          discovery: staticDiscovery([client]),
          enricher: new Enricher(
            { groupPublicIps: false },
            { cluster: emptyClusterLookup, log: silentLogger },
          ),
          sinks: [sink({ httpSinkBatchMax: 10, httpSinkMaxRetries: 0 })],
          log: silentLogger,
        },
      );
    };
    // The first exporter: the receiver takes the first request, then fails; nothing is acknowledged.
    rx.respond({ status: 200 }).otherwise({ status: 503 });
    expect((await exporter(true).runOnce()).failedSinks).toEqual(['http']);
    await rx.waitFor(3);
    expect(rx.requests.map((r) => r.answer)).toEqual([200, 503, 503]);
    // More traffic while no exporter runs: the bound folds the offered ticks 1 and 2 together.
    const t4 = tick(4);
    sent += t4.reduce((a, f) => a + f.txBytes, 0);
    backlog.append(20_000, 25_000, t4);
    expect(backlog.stats().merges).toBe(1);
    // The next exporter process, the receiver healthy again.
    rx.otherwise({ status: 200 });
    expect((await exporter(false).runOnce()).acked).toBe(1);
    expect(backlog.stats().batches).toBe(0);
    // A receiver honouring Idempotency-Key keeps the first accepted body of each key.
    const byKey = new Map<string, Buffer>();
    for (const r of rx.requests) {
      const key = String(r.headers['idempotency-key']);
      if (r.answer === 200 && !byKey.has(key)) byKey.set(key, r.body);
    }
    const first = String(rx.requests[0]!.headers['idempotency-key']);
    expect(rx.requests.filter((r) => r.headers['idempotency-key'] === first).map((r) => r.answer)).toEqual([
      200, 200,
    ]);
    const kept = [...byKey.values()].flatMap((b) =>
      b
        .toString()
        .trimEnd()
        .split('\n')
        .map((l) => JSON.parse(l)),
    );
    expect(kept.reduce((a, r) => a + Number(r.tx_bytes), 0)).toBe(sent);
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
      'podflow_exporter_http_sink_requests_total{code="error",sink="http"} 1',
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

  it('does not retry a batch answered 400 (malformed): counted as rejected, the push resolves', async () => {
    rx.respond({ status: 400, body: 'bad record' });
    await sink().push([flow(1), flow(2)]);
    expect(rx.requests).toHaveLength(1);
    expect(await metric('podflow_exporter_dropped_records_total')).toContain(
      'podflow_exporter_dropped_records_total{sink="http",reason="rejected"} 2',
    );
  });

  it('keeps and retries what a receiver answers 401, 403, 404, 408, 429 or 5xx, under the same key', async () => {
    rx.respond(...[401, 403, 404, 408, 429, 500, 503].map((status) => ({ status, body: 'not now' })));
    await sink({ httpSinkMaxRetries: 7 }).push([flow(1), flow(2)], { id: 'k' });
    expect(rx.requests.map((r) => r.answer)).toEqual([401, 403, 404, 408, 429, 500, 503, 200]);
    expect(new Set(rx.requests.map((r) => r.headers['idempotency-key']))).toEqual(new Set(['k']));
    expect(rx.acceptedRecords().map((r) => r.tx_bytes)).toEqual([1001, 1002]);
    expect(await metric('podflow_exporter_dropped_records_total')).not.toContain('sink="http"');
  });

  it('a 401 that outlasts the retries fails the push with what the receiver said', async () => {
    rx.otherwise({ status: 401, body: '{"error":"token expired"}' });
    await expect(sink({ httpSinkMaxRetries: 1 }).push([flow(1)])).rejects.toThrow(
      /answered 401: \{"error":"token expired"\}/,
    );
    expect(rx.requests).toHaveLength(2);
    expect(await metric('podflow_exporter_dropped_records_total')).not.toContain('sink="http"');
  });

  it('a batch answered 400 or 422 is dropped and counted; each status is logged once, with the start of the answer', async () => {
    const cap = captureLogger();
    const s = sink({}, {}, cap.log);
    const said = `{"error":"field dst_zone: unknown zone","detail":"${'x'.repeat(500)}"}`;
    rx.respond(
      { status: 400, body: said },
      { status: 400, body: said },
      { status: 422, body: 'unprocessable' },
      { status: 422, body: 'unprocessable' },
    );
    for (let i = 0; i < 4; i++) await s.push([flow(i), flow(i + 10)]);
    expect(rx.requests.map((r) => r.answer)).toEqual([400, 400, 422, 422]);
    expect(await metric('podflow_exporter_dropped_records_total')).toContain(
      'podflow_exporter_dropped_records_total{sink="http",reason="rejected"} 8',
    );
    const logged = cap.lines.filter((l) => String(l.msg).includes('malformed'));
    expect(logged.map((l) => l.status)).toEqual([400, 422]);
    const answer = String(logged[0]!.answer);
    expect(answer.startsWith('{"error":"field dst_zone: unknown zone"')).toBe(true);
    expect(answer.length).toBeLessThanOrEqual(201);
    expect(logged[1]!.answer).toBe('unprocessable');
  });

  it('413 halves a request down to what the receiver takes; a lone record it still refuses is dropped, counted, logged once', async () => {
    const cap = captureLogger();
    const s = sink({ httpSinkBatchMax: 10 }, {}, cap.log);
    // At most 3 records per request, and never the one for 8.8.8.13.
    rx.otherwise(({ lines }) =>
      lines.length > 3 || lines.some((l) => l.includes('"dst_ip":"8.8.8.13"'))
        ? { status: 413, body: 'request entity too large: 3 records at most' }
        : { status: 200 },
    );
    const flows = Array.from({ length: 25 }, (_, i) => flow(i));
    await s.push(flows, { id: 'k' });
    const taken = rx.requests.filter((r) => r.answer === 200);
    expect(rx.acceptedRecords().map((r) => r.dst_ip)).toEqual(
      expect.arrayContaining(flows.filter((f) => f.dstIp !== '8.8.8.13').map((f) => f.dstIp)),
    );
    expect(rx.acceptedRecords()).toHaveLength(24);
    for (const r of taken) expect(r.body.toString().trimEnd().split('\n').length).toBeLessThanOrEqual(3);
    // Each piece has a key of its own, derived from its request's (k-<part>.<half>...).
    const keys = taken.map((r) => String(r.headers['idempotency-key']));
    expect(new Set(keys).size).toBe(keys.length);
    for (const k of keys) expect(k).toMatch(/^k-[0-2](\.[01])+$/);
    expect(await metric('podflow_exporter_dropped_records_total')).toContain(
      'podflow_exporter_dropped_records_total{sink="http",reason="too_large"} 1',
    );
    // The same push offered again is cut the same way: same keys, same bodies.
    const before = rx.requests.length;
    await s.push(flows, { id: 'k' });
    const again = rx.requests.slice(before);
    expect(again.map((r) => [r.headers['idempotency-key'], r.body.toString()])).toEqual(
      rx.requests.slice(0, before).map((r) => [r.headers['idempotency-key'], r.body.toString()]),
    );
    expect(cap.lines.filter((l) => String(l.msg).includes('malformed'))).toHaveLength(1);
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

  it('a push larger than http-sink-queue-max is taken in pieces into an empty queue; others wait their turn', async () => {
    const s = sink({ httpSinkQueueMax: 100, httpSinkBatchMax: 10 });
    let most = 0;
    rx.otherwise(() => {
      most = Math.max(most, s.queueSize);
      return { status: 200, delayMs: 2 };
    });
    const flows = Array.from({ length: 480 }, (_, i) => flow(i, { dstIp: `10.9.${i >> 8}.${i & 255}` }));
    const big = s.push(flows, { id: 'big' });
    // While its requests wait for room, nothing else is taken: it would hold the big one back.
    await expect(s.push([flow(1)])).rejects.toThrow(/queue full.*waiting for room/);
    await big;
    expect(rx.requests).toHaveLength(48);
    expect(rx.requests.map((r) => r.headers['idempotency-key'])).toEqual(
      Array.from({ length: 48 }, (_, i) => `big-${i}`),
    );
    expect(most).toBeLessThanOrEqual(100);
    expect(txOf(rx.acceptedRecords())).toBe(flows.reduce((a, f) => a + f.txBytes, 0));
    await s.push([flow(1)]);
    expect(rx.requests).toHaveLength(49);
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

describe('HTTP sink in the pipeline: exactly once, whatever the receiver answers', () => {
  it('a receiver refusing the token for a while (401): nothing is acknowledged or lost, every record arrives once', async () => {
    const { backlog, client, tick, fed } = traffic();
    const { pipeline, promTx } = exportGraph([client], { httpSinkMaxRetries: 2, httpSinkBatchMax: 10 });
    rx.otherwise({ status: 401, body: '{"error":"token expired"}' });
    for (let round = 0; round < 3; round++) {
      tick(25);
      const r = await pipeline.runOnce();
      expect(r).toMatchObject({ failedSinks: ['http'], acked: 0 });
      expect(await promTx()).toBe(fed.sent);
    }
    expect(backlog.stats().batches).toBe(3);
    expect(rx.requests.every((r) => r.answer === 401)).toBe(true);
    // The token is back.
    rx.otherwise({ status: 200 });
    tick(5);
    const r = await pipeline.runOnce();
    expect(r).toMatchObject({ failedSinks: [], acked: 1 });
    expect(backlog.stats().batches).toBe(0);
    expect(txOf(rx.dedupedRecords())).toBe(fed.sent);
    expect(await promTx()).toBe(fed.sent);
    expect(await metric('podflow_exporter_dropped_records_total')).not.toContain('sink="http"');
  });

  it('a stretch larger than the queue (an exporter that was away): taken in pieces, offered again under the same keys, nothing doubled', async () => {
    const { backlog, client, tick, fed } = traffic();
    // Away for 12 ticks: one stretch of 480 flows, the queue holds 100.
    for (let t = 0; t < 12; t++) tick(40);
    const { pipeline, promTx } = exportGraph([client], {
      httpSinkQueueMax: 100,
      httpSinkBatchMax: 10,
      httpSinkMaxRetries: 0,
    });
    // A short outage in the middle of the first offer.
    let n = 0;
    rx.otherwise(() => (++n > 20 && n <= 25 ? { status: 503 } : { status: 200 }));
    let r = await pipeline.runOnce();
    expect(r).toMatchObject({ failedSinks: ['http'], acked: 0 });
    expect(rx.requests).toHaveLength(48);
    tick(3);
    r = await pipeline.runOnce();
    expect(r).toMatchObject({ failedSinks: [], acked: 1 });
    expect(backlog.stats().batches).toBe(0);
    // The second offer of the stretch: the same 48 keys with the same bodies, then the new stretch.
    const byKey = new Map<string, string>();
    for (const q of rx.requests.slice(0, 48))
      byKey.set(String(q.headers['idempotency-key']), q.body.toString());
    for (const q of rx.requests.slice(48, 96)) {
      expect(q.body.toString()).toBe(byKey.get(String(q.headers['idempotency-key'])));
    }
    expect(rx.requests).toHaveLength(97);
    expect(rx.dedupedRecords()).toHaveLength(483);
    expect(txOf(rx.dedupedRecords())).toBe(fed.sent);
    expect(await promTx()).toBe(fed.sent);
  });

  it('a receiver that hangs 30 s delays only the HTTP sink: Prometheus counts every round, the collector waits for its ack', async () => {
    const { backlog, client, tick, fed } = traffic();
    const { pipeline, promTx } = exportGraph([client], { httpSinkTimeout: 60_000 }, 300);
    rx.respond({ status: 200, delayMs: 30_000 });
    const took: number[] = [];
    for (let round = 0; round < 6; round++) {
      tick(5);
      const began = performance.now();
      const r = await pipeline.runOnce();
      took.push(performance.now() - began);
      expect(await promTx()).toBe(fed.sent);
      expect(r.acked).toBe(0);
      if (round > 0) expect(r.busySinks).toEqual(['http']);
    }
    // One request, hanging: nothing of the collector was pushed again while it was in flight.
    expect(rx.requests).toHaveLength(1);
    expect(Math.max(...took)).toBeLessThan(2000);
    expect(backlog.stats().batches).toBe(6);
    // The receiver comes back: the hung connection is cut, the retry is answered, the first stretch
    // is acknowledged as soon as it is taken, without waiting for a round.
    rx.cut();
    await waitFor('first stretch acknowledged', async () =>
      backlog.stats().batches === 5 ? true : undefined,
    );
    tick(5);
    const r = await pipeline.runOnce();
    expect(r).toMatchObject({ failedSinks: [], busySinks: [], acked: 1 });
    expect(backlog.stats().batches).toBe(0);
    expect(txOf(rx.dedupedRecords())).toBe(fed.sent);
    expect(txOf(rx.acceptedRecords())).toBe(fed.sent);
    expect(await promTx()).toBe(fed.sent);
  });
});

describe('podflow exporter with a hung HTTP receiver', () => {
  const cleanup: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f();
  });

  it('keeps counting every round for Prometheus; the collector keeps the batches until the receiver takes them', async () => {
    const c = await startTestCollector('node-1');
    cleanup.push(() => c.close());
    rx.respond({ status: 200, delayMs: 30_000 });
    const port = await freePort();
    const child = startPodflow(
      [
        'exporter',
        '--collectors',
        c.url,
        '--listen',
        `127.0.0.1:${port}`,
        '--export-interval',
        '300ms',
        '--http-sink-url',
        rx.url,
        '--http-sink-timeout',
        '60s',
      ],
      { stderr: 'ignore' },
    );
    cleanup.push(async () => {
      await child.stop('SIGKILL');
    });
    let sent = 0;
    let t = 0;
    const feed = () => {
      const tx = 100 + t;
      sent += tx;
      c.backlog.append(t * 300, (t + 1) * 300, [
        { src: '10.0.0.1', dst: '8.8.8.8', proto: 17, txBytes: tx, rxBytes: 1, txPackets: 1, rxPackets: 1 },
      ]);
      t++;
    };
    feed();
    const traffic = setInterval(feed, 200);
    cleanup.push(async () => clearInterval(traffic));
    const { base } = child;
    await child.ready('/readyz');
    await rx.waitFor(1);
    const scrape = async () => {
      const text = await (await fetch(`${base}/metrics`)).text();
      return {
        tx: sumOf(text, 'podflow_transmit_bytes_total'),
        rounds: sumOf(text, 'podflow_exporter_cycle_duration_seconds_count'),
      };
    };
    // While the receiver hangs: every 600 ms, rounds went on and counted the new traffic.
    let last = await scrape();
    for (let i = 0; i < 6; i++) {
      await new Promise((r) => setTimeout(r, 600));
      const now = await scrape();
      expect(now.rounds).toBeGreaterThan(last.rounds);
      expect(now.tx).toBeGreaterThan(last.tx);
      last = now;
    }
    expect(rx.requests).toHaveLength(1);
    expect(c.backlog.stats().batches).toBeGreaterThan(5);
    clearInterval(traffic);
    // The receiver comes back: everything is posted once, the collector acknowledged (once a scrape
    // served the last counts too, as Prometheus keeps scraping).
    rx.cut();
    await waitFor('collector acknowledged', async () => {
      await scrape();
      return c.backlog.stats().batches === 0 ? true : undefined;
    });
    expect(txOf(rx.dedupedRecords())).toBe(sent);
    await waitFor('metrics caught up', async () => ((await scrape()).tx === sent ? true : undefined));
    const { code } = await child.stop('SIGTERM');
    expect(code).toBe(0);
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

const zero = { txBytes: 0, rxBytes: 0, txPackets: 0, rxPackets: 0, cost: 0 };

interface Batch {
  from: number;
  to: number;
  flows: Map<string, EnrichedFlow>;
}

/** What the collector's backlog does at its bound: `b` folded into `a`, summed per flow. */
function merge(a: Batch, b: Batch): Batch {
  const flows = new Map<string, EnrichedFlow>();
  const to = Math.max(a.to, b.to);
  const from = Math.min(a.from, b.from);
  for (const f of [...a.flows.values(), ...b.flows.values()]) {
    const k = `${f.dstIp} ${f.proto}`;
    const seen = flows.get(k);
    if (seen === undefined) flows.set(k, { ...f, ts: to, intervalSeconds: (to - from) / 1000 });
    else {
      seen.txBytes += f.txBytes;
      seen.rxBytes += f.rxBytes;
      seen.txPackets += f.txPackets;
      seen.rxPackets += f.rxPackets;
      seen.cost += f.cost;
    }
  }
  return { from, to, flows };
}

const flat = (batches: Batch[]) => batches.flatMap((b) => [...b.flows.values()]);
const body = (parts: (readonly EnrichedFlow[])[]) => parts.map((p) => p.map((f) => toRecord(f)).join('\n'));

describe('HTTP sink requests of a push (partsOf)', () => {
  it('a push that fits is one part, as it came', () => {
    const flows = [flow(1)];
    const parts = partsOf(flows, 10);
    expect(parts).toHaveLength(1);
    expect(parts[0]).toBe(flows);
  });

  it('random stretches merged at random: every part has the same records after any merges', () => {
    for (let seed = 1; seed <= 300; seed++) {
      const r = seededInt(seed);
      const max = 1 + r(12);
      // The collector appends no batch for a tick without flows.
      const batches: Batch[] = [];
      for (let t = 0, n = 1 + r(6); t < n; t++) {
        const flows = new Map<string, EnrichedFlow>();
        for (let i = 0, m = 1 + r(25); i < m; i++) {
          const dstIp = `192.0.2.${r(40)}`;
          const proto = r(2) === 0 ? 'TCP' : 'UDP';
          const k = `${dstIp} ${proto}`;
          const f =
            flows.get(k) ?? flow(0, { ts: (t + 1) * 5000, intervalSeconds: 5, dstIp, proto, ...zero });
          f.txBytes += 1 + r(1000);
          f.rxBytes += r(1000);
          f.txPackets += 1;
          f.rxPackets += r(3);
          // Multiples of 1/1024: sums are exact in any order.
          f.cost += r(1000) / 1024;
          flows.set(k, f);
        }
        batches.push({ from: t * 5000, to: (t + 1) * 5000, flows });
      }
      const before = flat(batches);
      const keys = new Set(before.map((f) => `${f.dstIp} ${f.proto}`)).size;
      const first = partsOf(before, max);
      // Merge adjacent batches at random, as a backlog at its bound would, until one is left.
      while (batches.length > 1) {
        const i = r(batches.length - 1);
        batches.splice(i, 2, merge(batches[i]!, batches[i + 1]!));
        const again = partsOf(flat(batches), max);
        expect(again.length, `seed ${seed}`).toBe(first.length);
        if (first.length > 1) expect(body(again), `seed ${seed}`).toEqual(body(first));
        else {
          // One part, one key: the totals are what a receiver dedups on.
          const sum = (p: readonly EnrichedFlow[]) => p.reduce((a, f) => a + f.txBytes * 1e6 + f.rxBytes, 0);
          expect(sum(again[0]!), `seed ${seed}`).toBe(sum(first[0]!));
        }
      }
      // Parts never hold more than `max` records, and as few parts as the distinct flows allow.
      for (const p of first) expect(p.length).toBeLessThanOrEqual(max);
      expect(first.length).toBe(before.length <= max ? 1 : Math.ceil(keys / max));
    }
  });
});
