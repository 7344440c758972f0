// The exporter's HTTP pull client against the real collector server (collector/server.ts over a real
// Backlog), and against raw HTTP servers that misbehave: corrupt, truncated, oversized, gzip bomb,
// slow, refusing. Then the whole pipeline over HTTP with a bad collector among good ones.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { gzipSync } from 'node:zlib';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { Enricher, emptyClusterLookup } from '../exporter/enrich.js';
import { ExporterMetrics } from '../exporter/metrics.js';
import { Pipeline, staticDiscovery } from '../exporter/pipeline.js';
import { PrometheusSink } from '../exporter/prometheus-sink.js';
import { HttpCollectorClient } from '../exporter/pull.js';
import { FLOW_LABELS } from '../shared/config.js';
import type { Flow, PullResponse } from '../shared/flow.js';
import { metricsText } from '../shared/http.js';
import { silentLogger } from '../shared/log.js';
import { encodePullResponse, PullError } from '../shared/pull-contract.js';
import { startTestCollector } from './helpers/test-collector.js';

const flow = (dst: string, tx: number): Flow => ({
  src: '10.1.0.1',
  dst,
  proto: 6,
  txBytes: tx,
  rxBytes: 2 * tx,
  txPackets: 1,
  rxPackets: 2,
});

const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function collector(node: string, bootId?: string) {
  const c = await startTestCollector(node, { bootId });
  cleanup.push(() => c.close());
  return c;
}

/** A raw server whose every request is answered by `handle`; tracks sockets to close them all. */
async function standIn(handle: (req: IncomingMessage, res: ServerResponse) => void): Promise<string> {
  const srv: Server = createServer(handle);
  const sockets = new Set<Socket>();
  srv.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  cleanup.push(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => srv.close(() => r()));
  });
  return `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
}

const client = (url: string, over: { timeoutMs?: number; maxBytes?: number } = {}) =>
  new HttpCollectorClient(url, {
    timeoutMs: over.timeoutMs ?? 2000,
    maxBytes: over.maxBytes ?? 1 << 20,
    identity: 'test-exporter',
    leaseMs: 60_000,
  });

async function reason(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(PullError);
    return (err as PullError).reason;
  }
  return 'resolved';
}

const never = new AbortController().signal;

const response = (batches: PullResponse['batches']): PullResponse => ({
  version: 1,
  bootId: 'x',
  node: 'n',
  source: 'netfilter',
  batches,
});

describe('HttpCollectorClient against the collector server', () => {
  it('pulls (gzip) and acknowledges; a stale boot id is refused with reason boot', async () => {
    const c = await collector('node-1', 'boot-1');
    c.backlog.append(0, 5000, [flow('8.8.8.8', 10), flow('fd00::9', 20)]);
    c.backlog.append(5000, 10_000, [flow('1.1.1.1', 30)]);
    const cl = client(c.url);
    expect(cl.id).toBe(c.url);
    const r = await cl.pull(never);
    expect(r).toMatchObject({ version: 1, bootId: 'boot-1', node: 'node-1', source: 'netfilter' });
    expect(r.batches.map((b) => b.seq)).toEqual([1, 2]);
    expect(r.batches[0].flows).toEqual([flow('8.8.8.8', 10), flow('fd00::9', 20)]);
    await cl.ack('boot-1', 2, never);
    expect(c.backlog.stats().batches).toBe(0);
    expect(await reason(cl.ack('boot-0', 2, never))).toBe('boot');
  });

  it('sends Accept-Encoding: gzip and reads gzip bodies', async () => {
    let seen = '';
    const url = await standIn((req, res) => {
      seen = String(req.headers['accept-encoding']);
      res.writeHead(200, {
        'content-type': 'application/x-msgpack',
        'content-encoding': 'gzip',
        'podflow-lease': 'l1',
        'podflow-lease-seconds': '60',
      });
      res.end(
        gzipSync(encodePullResponse(response([{ seq: 1, from: 0, to: 1, flows: [flow('8.8.8.8', 1)] }]))),
      );
    });
    const r = await client(url).pull(never);
    expect(seen).toBe('gzip');
    expect(r.batches[0].flows[0].txBytes).toBe(1);
  });
});

describe('HttpCollectorClient refuses bad collectors', () => {
  const body = encodePullResponse(
    response([{ seq: 1, from: 0, to: 1, flows: Array.from({ length: 2000 }, (_, i) => flow('8.8.8.8', i)) }]),
  );

  it('corrupt body → decode', async () => {
    const url = await standIn((_q, res) => res.end(Buffer.from([0x85, 0xc1, 0xff, 0x00, 0x13])));
    expect(await reason(client(url).pull(never))).toBe('decode');
  });

  it('valid msgpack of the wrong shape → invalid', async () => {
    const bad = encodePullResponse({
      ...response([{ seq: 1, from: 0, to: 1, flows: [flow('not-an-ip', 1)] }]),
    });
    const url = await standIn((_q, res) => res.end(bad));
    expect(await reason(client(url).pull(never))).toBe('invalid');
  });

  it('truncated body (connection cut mid-way) → decode', async () => {
    const url = await standIn((req, res) => {
      res.writeHead(200, { 'content-length': body.length });
      res.write(body.subarray(0, body.length >> 1), () => req.socket.destroy());
    });
    expect(await reason(client(url).pull(never))).toBe('decode');
  });

  it('oversized body, streamed without Content-Length → oversized', async () => {
    let sent = 0;
    const url = await standIn((_q, res) => {
      const pump = () => {
        while (sent < 50 << 20) {
          sent += 64 << 10;
          if (!res.write(Buffer.alloc(64 << 10, 0x90))) return void res.once('drain', pump);
        }
        res.end();
      };
      pump();
    });
    expect(await reason(client(url, { maxBytes: 1 << 20 }).pull(never))).toBe('oversized');
    // Refused while streaming: far less than the 50 MiB were needed.
    expect(sent).toBeLessThan(20 << 20);
  });

  it('oversized by Content-Length → oversized', async () => {
    const url = await standIn((_q, res) => res.end(body));
    expect(await reason(client(url, { maxBytes: 4096 }).pull(never))).toBe('oversized');
  });

  it('gzip bomb: counted after decompression → oversized', async () => {
    const bomb = gzipSync(Buffer.alloc(64 << 20, 0x90));
    expect(bomb.length).toBeLessThan(1 << 20);
    const url = await standIn((_q, res) => {
      res.writeHead(200, { 'content-encoding': 'gzip' });
      res.end(bomb);
    });
    expect(await reason(client(url, { maxBytes: 1 << 20 }).pull(never))).toBe('oversized');
  });

  it('HTTP error → http; wrong version → version', async () => {
    const u1 = await standIn((_q, res) => {
      res.statusCode = 503;
      res.end('busy');
    });
    expect(await reason(client(u1).pull(never))).toBe('http');
    const v2 = encodePullResponse({ ...response([]), version: 2 as 1 });
    const u2 = await standIn((_q, res) => res.end(v2));
    expect(await reason(client(u2).pull(never))).toBe('version');
  });

  it('slow collector → timeout; nothing listening → network', async () => {
    const url = await standIn((_q, res) => {
      setTimeout(() => res.end(body), 3000).unref();
    });
    const began = Date.now();
    expect(await reason(client(url, { timeoutMs: 300 }).pull(never))).toBe('timeout');
    expect(Date.now() - began).toBeLessThan(1500);
    const gone = await standIn(() => {});
    await cleanup.pop()!();
    expect(await reason(client(gone).pull(never))).toBe('network');
  });
});

describe('Pipeline over HTTP', () => {
  it('pulls real collectors, skips a bad and a slow one, acknowledges the good ones', async () => {
    const good = await Promise.all([collector('n1'), collector('n2'), collector('n3')]);
    let total = 0;
    for (const [i, c] of good.entries()) {
      for (let b = 0; b < 3; b++) {
        const flows = Array.from({ length: 50 }, (_, k) => flow(`203.0.113.${k}`, 1 + i + b + k));
        total += flows.reduce((a, f) => a + f.txBytes, 0);
        c.backlog.append(b * 5000, (b + 1) * 5000, flows);
      }
    }
    const corrupt = await standIn((_q, res) => res.end(Buffer.from('garbage')));
    const slow = await standIn((_q, res) => {
      setTimeout(() => res.end(), 5000).unref();
    });
    const registry = new Registry();
    const metrics = new ExporterMetrics(registry);
    const prometheus = new PrometheusSink(
      { metricsPrefix: 'podflow', metricsLabels: [...FLOW_LABELS], metricsTtl: 0, metricsPodIps: false },
      { registry, metrics },
    );
    const clients = [...good.map((c) => c.url), corrupt, slow].map((u) => client(u, { timeoutMs: 500 }));
    const pipeline = new Pipeline(
      { exportInterval: 1000, pullConcurrency: 2, pullTimeout: 500 },
      {
        discovery: staticDiscovery(clients),
        enricher: new Enricher({ groupPublicIps: false }, { cluster: emptyClusterLookup, log: silentLogger }),
        sinks: [prometheus],
        log: silentLogger,
        metrics,
      },
    );
    const began = Date.now();
    const r = await pipeline.runOnce();
    // With two pulls at a time the slow collector holds one slot for its timeout, no more.
    expect(Date.now() - began).toBeLessThan(2500);
    expect(r).toMatchObject({ collectors: 5, pulled: 3, flows: 450, acked: 3 });
    for (const c of good) expect(c.backlog.stats().batches).toBe(0);
    const samples = (await metricsText(registry, prometheus))
      .split('\n')
      .filter((l) => l.startsWith('podflow_transmit_bytes_total{'));
    expect(samples.reduce((a, l) => a + Number(l.slice(l.lastIndexOf(' ') + 1)), 0)).toBe(total);
    const errors = await registry.getSingleMetricAsString('podflow_exporter_pull_errors_total');
    expect(errors).toContain(`{collector="${corrupt}",reason="decode"} 1`);
    expect(errors).toContain(`{collector="${slow}",reason="timeout"} 1`);
    expect(await pipeline.runOnce()).toMatchObject({ pulled: 3, flows: 0 });
    expect(samples).toHaveLength(150);
  });
});
