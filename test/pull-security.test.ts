// The pull API as an attacker on the node network and a second exporter meet it: real collector
// HTTP servers (collector/server.ts) on loopback, real exporter clients and pipelines, raw requests.
// Each case is a finding measured on an open pull API: forged acks erased a node's flows, the 409
// told the boot id, two exporters on one collector delivered twice, a pull flood took a collector
// to 2.3 GB, and hostile payloads stuck in an exporter's counters.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { gunzipSync } from 'node:zlib';
import { pack, unpack } from 'msgpackr';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { Lease } from '../collector/lease.js';
import { Enricher, emptyClusterLookup } from '../exporter/enrich.js';
import { ExporterMetrics } from '../exporter/metrics.js';
import { Pipeline, staticDiscovery } from '../exporter/pipeline.js';
import { PrometheusSink } from '../exporter/prometheus-sink.js';
import { httpCollectorClients } from '../exporter/pull.js';
import type { Sink } from '../exporter/sink.js';
import { FLOW_LABELS } from '../shared/config.js';
import type { EnrichedFlow, Flow, PullResponse } from '../shared/flow.js';
import { metricsText } from '../shared/http.js';
import { silentLogger } from '../shared/log.js';
import { TokenFile } from '../shared/token.js';
import { ManualClock } from './fixtures/clock.js';
import { type RawAnswer as Answer, rawHttp as raw } from './helpers/raw-http.js';
import { startTestCollector, type TestCollector } from './helpers/test-collector.js';

const TOKEN = 'Zq3-token-of-the-exporter';
const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

function tokenFile(content = `${TOKEN}\n`): string {
  const dir = mkdtempSync(join(tmpdir(), 'pf-sec-'));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  const f = join(dir, 'token');
  writeFileSync(f, content);
  return f;
}

async function collector(opts: { lease?: Lease; metricsAuth?: boolean } = {}): Promise<TestCollector> {
  const c = await startTestCollector('node-1', {
    bootId: 'b00t-secret',
    tokens: new TokenFile(tokenFile(), { log: silentLogger }),
    ...opts,
  });
  cleanup.push(() => c.close());
  return c;
}

const flow = (dst: string, tx: number): Flow => ({
  src: '10.1.0.1',
  dst,
  proto: 6,
  txBytes: tx,
  rxBytes: 2 * tx,
  txPackets: 1,
  rxPackets: 2,
});

/** An exporter's pipeline: its own name, the token file, a Prometheus sink and any other sinks. */
function exporter(
  c: TestCollector,
  name: string,
  opts: { sinks?: Sink[]; leaseMs?: number; token?: string } = {},
) {
  const registry = new Registry();
  const metrics = new ExporterMetrics(registry);
  const prometheus = new PrometheusSink(
    { metricsPrefix: 'podflow', metricsLabels: [...FLOW_LABELS], metricsTtl: 0, metricsPodIps: false },
    { registry, metrics },
  );
  const client = httpCollectorClients(
    { pullTimeout: 5000, pullMaxBytes: 64 << 20, pullLease: opts.leaseMs ?? 60_000, podName: name },
    { token: new TokenFile(tokenFile(`${opts.token ?? TOKEN}\n`), { log: silentLogger }) },
  )(c.url);
  const pipeline = new Pipeline(
    { exportInterval: 1000, pullConcurrency: 4, pullTimeout: 5000 },
    {
      discovery: staticDiscovery([client]),
      enricher: new Enricher({ groupPublicIps: false }, { cluster: emptyClusterLookup, log: silentLogger }),
      sinks: [prometheus, ...(opts.sinks ?? [])],
      log: silentLogger,
      metrics,
    },
  );
  const txBytes = async () =>
    (await metricsText(registry, prometheus))
      .split('\n')
      .filter((l) => l.startsWith('podflow_transmit_bytes_total{'))
      .reduce((a, l) => a + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
  const pullErrors = async (reason: string) => {
    const m = new RegExp(`reason="${reason}"} (\\d+)`).exec(
      await registry.getSingleMetricAsString('podflow_exporter_pull_errors_total'),
    );
    return m ? Number(m[1]) : 0;
  };
  return { pipeline, client, txBytes, pullErrors };
}

/** A sink that takes its time: the round waits for it, as it waits for a slow HTTP receiver. */
class SlowSink implements Sink {
  readonly name = 'slow';
  bytes = 0;
  constructor(private readonly ms: number) {}
  async push(flows: readonly EnrichedFlow[]): Promise<void> {
    await new Promise((r) => setTimeout(r, this.ms));
    for (const f of flows) this.bytes += f.txBytes;
  }
  async close(): Promise<void> {}
}

describe('pull API without the token', () => {
  it('forged and replayed acks change nothing and disclose nothing; the exporter with the token delivers every byte', async () => {
    const c = await collector();
    let total = 0;
    for (let i = 1; i <= 3; i++) {
      c.backlog.append(i * 1000, (i + 1) * 1000, [flow('203.0.113.7', 100 * i)]);
      total += 100 * i;
    }
    const before = c.backlog.stats();
    // What an exporter's ack looks like; replayed by someone without the token.
    const forged = pack({ bootId: 'b00t-secret', seq: 3, lease: 'guessed' });
    const msgpack = { 'content-type': 'application/x-msgpack' };
    const attempts: [string, string, Record<string, string>, Buffer?][] = [
      ['GET', '/api/v1/flows', { 'podflow-exporter': 'attacker' }],
      ['POST', '/api/v1/ack', msgpack, forged],
      ['POST', '/api/v1/ack', { ...msgpack, authorization: 'Bearer wrong-token' }, forged],
      ['POST', '/api/v1/ack', { ...msgpack, authorization: `Basic ${TOKEN}` }, forged],
      ['POST', '/api/v1/ack', { ...msgpack, authorization: `Bearer ${TOKEN}x` }, forged],
      ['POST', '/api/v1/ack', msgpack, pack({ bootId: 'deadbeef', seq: 1 })],
      ['POST', '/api/v1/release', msgpack, pack({ lease: 'guessed' })],
      ['GET', '/api/v1/flows?max_flows=1', { authorization: 'Bearer ' }],
    ];
    for (const [method, path, headers, body] of attempts) {
      const res = await raw(c.url, method, path, headers, body);
      expect([method, path, res.status, res.body.toString()]).toEqual([method, path, 401, 'unauthorized\n']);
      expect(res.headers['www-authenticate']).toMatch(/^Bearer/);
    }
    expect(c.backlog.stats()).toEqual(before);
    // Probes stay open; /metrics too without --metrics-auth.
    expect((await raw(c.url, 'GET', '/healthz')).status).toBe(200);
    expect((await raw(c.url, 'GET', '/metrics')).body.toString()).toMatch(
      /podflow_collector_pull_refused_total\{reason="unauthorized"\} 8/,
    );

    const e = exporter(c, 'exporter-0');
    // An attacker keeps forging while the exporter works.
    let stop = false;
    const attacker = (async () => {
      let n = 0;
      while (!stop) {
        await raw(
          c.url,
          'POST',
          '/api/v1/ack',
          msgpack,
          pack({ bootId: 'b00t-secret', seq: 1000, lease: 'x' }),
        );
        n++;
      }
      return n;
    })();
    for (let round = 0; round < 3; round++) {
      await e.pipeline.runOnce();
      c.backlog.append(10_000 + round, 10_001 + round, [flow('203.0.113.8', 7)]);
      total += 7;
    }
    await e.pipeline.runOnce();
    stop = true;
    expect(await attacker).toBeGreaterThan(0);
    expect(await e.txBytes()).toBe(total);
    expect(c.backlog.stats().batches).toBe(0);
  });

  it('a wrong token on the exporter side: pulls refused as unauthorized, nothing acknowledged', async () => {
    const c = await collector();
    c.backlog.append(0, 1, [flow('203.0.113.7', 5)]);
    const e = exporter(c, 'exporter-0', { token: 'not-the-token' });
    const r = await e.pipeline.runOnce();
    expect(r).toMatchObject({ pulled: 0, acked: 0 });
    expect(await e.pullErrors('unauthorized')).toBe(1);
    expect(c.backlog.stats().batches).toBe(1);
  });

  it('--metrics-auth: /metrics wants the token, probes do not', async () => {
    const c = await collector({ metricsAuth: true });
    expect((await raw(c.url, 'GET', '/metrics')).status).toBe(401);
    expect((await raw(c.url, 'GET', '/metrics', { authorization: 'Bearer nope' })).status).toBe(401);
    const ok = await raw(c.url, 'GET', '/metrics', { authorization: `Bearer ${TOKEN}` });
    expect(ok.status).toBe(200);
    expect(ok.body.toString()).toContain('podflow_collector_backlog_flows');
    expect((await raw(c.url, 'GET', '/healthz')).status).toBe(200);
    expect((await raw(c.url, 'GET', '/readyz')).status).toBe(200);
  });
});

describe('one exporter at a time', () => {
  it('two exporters on one collector with a slow sink deliver every byte once', async () => {
    const c = await collector();
    const slowA = new SlowSink(300);
    const slowB = new SlowSink(300);
    const a = exporter(c, 'exporter-a', { sinks: [slowA] });
    const b = exporter(c, 'exporter-b', { sinks: [slowB] });
    let total = 0;
    for (let round = 0; round < 6; round++) {
      c.backlog.append(round * 1000, (round + 1) * 1000, [flow('203.0.113.7', 1000 + round)]);
      total += 1000 + round;
      // Both run their rounds at the same time, as two replicas would.
      await Promise.all([a.pipeline.runOnce(), b.pipeline.runOnce()]);
    }
    await Promise.all([a.pipeline.runOnce(), b.pipeline.runOnce()]);
    expect((await a.txBytes()) + (await b.txBytes())).toBe(total);
    expect(slowA.bytes + slowB.bytes).toBe(total);
    // B was turned away every round, told who holds the collector.
    expect(await b.txBytes()).toBe(0);
    expect(await b.pullErrors('leased')).toBe(7);
    const refused = await raw(c.url, 'GET', '/api/v1/flows', {
      authorization: `Bearer ${TOKEN}`,
      'podflow-exporter': 'exporter-b',
    });
    expect(refused.status).toBe(409);
    expect(refused.body.toString()).toMatch(/^leased by exporter exporter-a for another \d+s/);
    expect(Number(refused.headers['retry-after'])).toBeGreaterThan(50);
  });

  it('released at shutdown: the next exporter takes over at once; dead: once the lease lapsed, and the old ack is refused', async () => {
    const clock = new ManualClock(1_000_000);
    const c = await collector({ lease: new Lease({ minMs: 5000, maxMs: 600_000 }, clock) });
    const a = exporter(c, 'exporter-a', { leaseMs: 10_000 });
    const b = exporter(c, 'exporter-b', { leaseMs: 10_000 });
    c.backlog.append(0, 1, [flow('203.0.113.7', 10)]);
    await a.pipeline.runOnce();
    c.backlog.append(1, 2, [flow('203.0.113.7', 20)]);
    expect((await b.pipeline.runOnce()).pulled).toBe(0);
    await a.client.release(new AbortController().signal);
    expect((await b.pipeline.runOnce()).pulled).toBe(1);
    expect([await a.txBytes(), await b.txBytes()]).toEqual([10, 20]);

    // B dies without a word (no release). A waits until B's lease lapses, then takes over.
    c.backlog.append(2, 3, [flow('203.0.113.7', 40)]);
    // B pulled, and its ack is late: A has taken over by then.
    const pulledByB = await b.client.pull(new AbortController().signal);
    clock.advance(9_000);
    expect((await a.pipeline.runOnce()).pulled).toBe(0);
    clock.advance(2_000);
    expect((await a.pipeline.runOnce()).pulled).toBe(1);
    await expect(b.client.ack(pulledByB.bootId, 3, new AbortController().signal)).rejects.toMatchObject({
      reason: 'leased',
    });
    expect(await a.txBytes()).toBe(50);
    expect(c.backlog.stats().batches).toBe(0);
  });
});

/** Peak and current resident memory of a process, bytes (Linux /proc). */
async function memoryOf(pid: number): Promise<{ peak: number; now: number }> {
  const { readFile } = await import('node:fs/promises');
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1]) * 1024;
  return { peak: kb('VmHWM'), now: kb('VmRSS') };
}

describe('bounded memory under a pull flood', () => {
  it('40 gzip pulls at once of a 480k-flow backlog: one encoding shared, the rest 429, RSS bounded, /healthz answering', async () => {
    const token = tokenFile();
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', 'test/helpers/flood-collector.ts', token, '480000'],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    cleanup.push(async () => {
      if (child.exitCode === null) {
        child.kill('SIGKILL');
        await once(child, 'exit');
      }
    });
    const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
    const url = `http://127.0.0.1:${(JSON.parse(line) as { port: number }).port}`;
    const headers = {
      authorization: `Bearer ${TOKEN}`,
      'podflow-exporter': 'exporter-0',
      'accept-encoding': 'gzip',
    };
    const before = await memoryOf(child.pid!);
    // What one pull of the whole backlog costs: the yardstick for many at once.
    const first = await raw(url, 'GET', '/api/v1/flows', headers);
    expect(first.status).toBe(200);
    const single = await memoryOf(child.pid!);
    // The flood comes after the backlog changed (the exporter acknowledged a batch): one new body.
    const { bootId } = unpack(gunzipSync(first.body)) as PullResponse;
    const ack = await raw(
      url,
      'POST',
      '/api/v1/ack',
      { ...headers, 'content-type': 'application/x-msgpack' },
      pack({ bootId, seq: 1, lease: String(first.headers['podflow-lease']) }),
    );
    expect(ack.status).toBe(204);
    let healthMax = 0;
    let healthProbes = 0;
    let flooding = true;
    const health = (async () => {
      while (flooding) {
        const t = performance.now();
        expect((await raw(url, 'GET', '/healthz')).status).toBe(200);
        healthMax = Math.max(healthMax, performance.now() - t);
        healthProbes++;
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    const answers: Answer[] = [];
    for (let wave = 0; wave < 3; wave++) {
      answers.push(
        ...(await Promise.all(Array.from({ length: 40 }, () => raw(url, 'GET', '/api/v1/flows', headers)))),
      );
    }
    flooding = false;
    await health;
    const after = await memoryOf(child.pid!);

    const ok = answers.filter((a) => a.status === 200);
    const busy = answers.filter((a) => a.status === 429);
    expect(ok.length + busy.length).toBe(answers.length);
    expect(ok.length).toBeGreaterThanOrEqual(3);
    expect(busy.length).toBeGreaterThan(0);
    for (const b of busy) expect(b.headers['retry-after']).toBe('1');
    // Every pull of one backlog state got the very same body.
    for (const a of ok) expect(a.body.equals(ok[0]!.body)).toBe(true);
    expect(ok[0]!.body.length).toBeGreaterThan(1 << 20);
    const mib = (n: number) => (n / 2 ** 20).toFixed(0);
    console.log(
      `pull flood: ${ok.length} served, ${busy.length} × 429; RSS ${mib(before.now)} MiB before, ${mib(single.peak)} MiB peak after one pull, ${mib(after.peak)} MiB peak after the flood; slowest /healthz ${healthMax.toFixed(0)} ms`,
    );
    // Two backlog states, two encodings, whatever the number of pulls.
    const metrics = (await raw(url, 'GET', '/metrics')).body.toString();
    expect(metrics).toMatch(/^podflow_collector_pull_bodies_total 2$/m);
    expect(metrics).toMatch(
      new RegExp(`^podflow_collector_pull_refused_total\\{reason="busy"\\} ${busy.length}$`, 'm'),
    );
    // Without a shared body, 20 pulls at once took a collector with this backlog to 2.33 GB.
    expect(after.peak).toBeLessThan(512 * 2 ** 20);
    // /healthz answered every probe during the flood (its latency is printed above, a figure for
    // the docs, not a pass/fail: it depends on the machine).
    expect(healthProbes).toBeGreaterThan(5);
  });
});
