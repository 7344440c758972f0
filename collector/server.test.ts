import { gunzipSync } from 'node:zlib';
import { pack, unpack } from 'msgpackr';
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Flow, PullResponse } from '../shared/flow.js';
import { createRegistry, type HttpServer } from '../shared/http.js';
import { silentLogger } from '../shared/log.js';
import { seededInt } from '../test/helpers/random.js';
import { rawHttp as raw } from '../test/helpers/raw-http.js';
import { Backlog } from './backlog.js';
import { createCollectorMetrics } from './metrics.js';
import { createCollectorServer } from './server.js';

const flow = (dst: string, tx: number): Flow => ({
  src: '10.1.0.1',
  dst,
  proto: 6,
  txBytes: tx,
  rxBytes: 2 * tx,
  txPackets: 1,
  rxPackets: 2,
});

/** What an exporter sends with every pull: its name (the lease holder). */
const AS_EXPORTER = { 'podflow-exporter': 'exporter-1' };

describe('collector server', () => {
  let backlog: Backlog;
  let server: HttpServer;
  let port: number;
  let registry: Registry;
  let ready: string | undefined;

  beforeEach(async () => {
    backlog = new Backlog({ backlogMaxFlows: 1000 }, { bootId: 'b00t' });
    registry = createRegistry();
    const metrics = createCollectorMetrics(registry, {
      backlog: () => backlog.stats(),
      source: () => ({ lostEvents: 3 }),
    });
    metrics.conntrackEntries.set(42);
    metrics.readDuration.observe(0.02);
    ready = 'first read not done';
    server = createCollectorServer(
      { listen: { host: '127.0.0.1', port: 0 } },
      {
        backlog,
        node: 'node-1',
        source: { name: 'netfilter' },
        metrics,
        log: silentLogger,
        registry,
        notReady: () => ready,
      },
    );
    port = (await server.start()).port;
  });

  afterEach(async () => {
    await server.close();
  });

  it('serves pending batches as msgpack, again until acknowledged, then no more', async () => {
    backlog.append(1000, 2000, [flow('10.2.0.1', 100), flow('10.2.0.2', 5)]);
    backlog.append(2000, 3000, [flow('10.2.0.1', 7)]);
    const first = await raw(port, 'GET', '/api/v1/flows', AS_EXPORTER);
    expect(first.status).toBe(200);
    const lease = String(first.headers['podflow-lease']);
    expect(first.headers['content-type']).toBe('application/x-msgpack');
    const decoded = unpack(first.body) as PullResponse;
    expect(decoded).toEqual({
      version: 1,
      bootId: 'b00t',
      node: 'node-1',
      source: 'netfilter',
      batches: [
        { seq: 1, from: 1000, to: 2000, flows: [flow('10.2.0.1', 100), flow('10.2.0.2', 5)] },
        { seq: 2, from: 2000, to: 3000, flows: [flow('10.2.0.1', 7)] },
      ],
      boundaries: [2],
      acked: 0,
      cursors: {},
    });
    // No ack (the exporter failed): the same batches come again.
    const again = unpack((await raw(port, 'GET', '/api/v1/flows', AS_EXPORTER)).body) as PullResponse;
    expect(again.batches.map((b) => b.seq)).toEqual([1, 2]);
    const ack = await raw(
      port,
      'POST',
      '/api/v1/ack',
      { 'content-type': 'application/x-msgpack' },
      pack({ bootId: 'b00t', seq: 2, lease }),
    );
    expect(ack.status).toBe(204);
    const after = unpack((await raw(port, 'GET', '/api/v1/flows', AS_EXPORTER)).body) as PullResponse;
    expect(after.batches).toEqual([]);
  });

  it('gzips when asked, and honours max_flows', async () => {
    backlog.append(0, 1, [flow('10.2.0.1', 1), flow('10.2.0.2', 2)]);
    backlog.append(1, 2, [flow('10.2.0.3', 3)]);
    const res = await raw(port, 'GET', '/api/v1/flows?max_flows=2', {
      ...AS_EXPORTER,
      'accept-encoding': 'gzip, deflate',
    });
    expect(res.status).toBe(200);
    expect(res.headers['content-encoding']).toBe('gzip');
    expect(res.headers.vary).toMatch(/Accept-Encoding/i);
    const decoded = unpack(gunzipSync(res.body)) as PullResponse;
    expect(decoded.batches.map((b) => b.seq)).toEqual([1]);
    const plain = await raw(port, 'GET', '/api/v1/flows?max_flows=1', AS_EXPORTER);
    expect(plain.headers['content-encoding']).toBeUndefined();
    expect((unpack(plain.body) as PullResponse).batches.map((b) => b.seq)).toEqual([1]);
    const bad = await raw(port, 'GET', '/api/v1/flows?max_flows=0', AS_EXPORTER);
    expect(bad.status).toBe(400);
    expect(bad.body.toString()).toMatch(/max_flows must be a whole number/);
  });

  it('refuses malformed acks with 400 and a reason, and leaves the backlog as it was', async () => {
    backlog.append(0, 1, [flow('10.2.0.1', 1)]);
    const lease = String((await raw(port, 'GET', '/api/v1/flows', AS_EXPORTER)).headers['podflow-lease']);
    const post = (body: Buffer, type = 'application/x-msgpack') =>
      raw(port, 'POST', '/api/v1/ack', { 'content-type': type }, body);
    const cases: [Buffer, number, RegExp][] = [
      [Buffer.alloc(0), 400, /empty body/],
      [Buffer.from([0xc1, 0xc1, 0xc1]), 400, /not msgpack/],
      [pack([1, 2]), 400, /expected a map/],
      [pack({ seq: 1 }), 400, /bootId must be a non-empty string/],
      [pack({ bootId: 'b00t', seq: -1, lease }), 400, /seq must be a non-negative integer/],
      [pack({ bootId: 'b00t', seq: 1.5, lease }), 400, /seq must be a non-negative integer/],
      [pack({ bootId: 'b00t', seq: '1', lease }), 400, /seq must be a non-negative integer/],
      [pack({ bootId: 'b00t', seq: 1 }), 400, /lease must name the lease/],
      [Buffer.alloc(10_000, 1), 413, /exceeds 4096 bytes/],
    ];
    for (const [body, status, message] of cases) {
      const res = await post(body);
      expect([res.status, res.body.toString()]).toEqual([status, expect.stringMatching(message)]);
    }
    const json = await post(Buffer.from('{"bootId":"b00t","seq":1}'), 'application/json');
    expect(json.status).toBe(415);
    // Another collector's boot id (this one restarted): 409, nothing dropped.
    const conflict = await post(pack({ bootId: 'other', seq: 1, lease }));
    expect(conflict.status).toBe(409);
    expect(conflict.body.toString()).toMatch(/not this collector's/);
    // ...without saying what this collector's boot id is.
    expect(conflict.body.toString()).not.toContain('b00t');
    // A lease that is not the current one: 409, nothing dropped.
    const stale = await post(pack({ bootId: 'b00t', seq: 1, lease: 'not-the-lease' }));
    expect([stale.status, stale.headers['podflow-conflict']]).toEqual([409, 'lease']);
    expect(backlog.stats().batches).toBe(1);
  });

  it('survives random ack bodies and query strings: always a 2xx/4xx, never a lost batch', async () => {
    backlog.append(0, 1, [flow('10.2.0.1', 1)]);
    backlog.append(1, 2, [flow('10.2.0.2', 1)]);
    // Seeded: failures reproduce.
    const rnd = seededInt(12345);
    const values: unknown[] = [
      null,
      true,
      0,
      -1,
      1.5,
      2 ** 60,
      '',
      'b00t',
      [],
      {},
      new Uint8Array(3),
      { a: 1 },
    ];
    const randomValue = (): unknown => {
      switch (rnd(4)) {
        case 0:
          return values[rnd(values.length)];
        case 1:
          return { bootId: values[rnd(values.length)], seq: values[rnd(values.length)] };
        case 2:
          return { bootId: 'b00t', seq: values[rnd(values.length)], extra: values[rnd(values.length)] };
        default:
          return Buffer.from(Array.from({ length: rnd(64) }, () => rnd(256)));
      }
    };
    for (let i = 0; i < 300; i++) {
      const v = randomValue();
      let body = Buffer.isBuffer(v) ? v : pack(v);
      // Sometimes cut a valid encoding short. Only `{bootId: "b00t", seq: 0}` may pass (204): it drops nothing.
      if (!Buffer.isBuffer(v) && rnd(3) === 0) body = body.subarray(0, rnd(body.length + 1));
      const res = await raw(port, 'POST', '/api/v1/ack', { 'content-type': 'application/x-msgpack' }, body);
      expect([204, 400, 409, 413], `body ${body.toString('hex')} → ${res.status} ${res.body}`).toContain(
        res.status,
      );
      // Every refusal says why.
      if (res.status !== 204) expect(res.body.length).toBeGreaterThan(0);
    }
    for (const q of ['', 'x', '-1', '1e3', '0x10', '9'.repeat(20), '%00', '1&max_flows=2']) {
      const res = await raw(port, 'GET', `/api/v1/flows?max_flows=${q}`, AS_EXPORTER);
      expect([200, 400]).toContain(res.status);
    }
    expect(backlog.stats()).toMatchObject({ batches: 2, flows: 2 });
  });

  it('answers /healthz always and /readyz only when ready', async () => {
    expect((await raw(port, 'GET', '/healthz')).status).toBe(200);
    const notReady = await raw(port, 'GET', '/readyz');
    expect(notReady.status).toBe(503);
    expect(notReady.body.toString()).toBe('not ready: first read not done\n');
    ready = undefined;
    expect((await raw(port, 'GET', '/readyz')).status).toBe(200);
    expect((await raw(port, 'GET', '/nope')).status).toBe(404);
  });

  it('exposes the self-metrics of the contract on /metrics', async () => {
    backlog.append(0, 1, [flow('10.2.0.1', 1), flow('10.2.0.2', 1)]);
    const pulled = await raw(port, 'GET', '/api/v1/flows', AS_EXPORTER);
    const lease = String(pulled.headers['podflow-lease']);
    await raw(port, 'POST', '/api/v1/ack', {}, pack({ bootId: 'b00t', seq: 1, lease }));
    backlog.append(1, 2, [flow('10.2.0.3', 1)]);
    const res = await raw(port, 'GET', '/metrics');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = res.body.toString();
    const value = (name: string) => {
      const m = new RegExp(`^${name.replace(/[{}"]/g, '\\$&')} (\\S+)$`, 'm').exec(text);
      return m ? Number(m[1]) : undefined;
    };
    expect(text).toContain('# TYPE podflow_collector_conntrack_entries gauge');
    expect(value('podflow_collector_conntrack_entries')).toBe(42);
    expect(text).toContain('# TYPE podflow_collector_read_duration_seconds histogram');
    expect(value('podflow_collector_read_duration_seconds_count')).toBe(1);
    expect(value('podflow_collector_backlog_batches')).toBe(1);
    expect(value('podflow_collector_backlog_flows')).toBe(1);
    expect(value('podflow_collector_pulls_total')).toBe(1);
    expect(value('podflow_collector_acks_total{result="ok"}')).toBe(1);
    expect(value('podflow_collector_lost_events_total')).toBe(3);
    expect(value('podflow_collector_dropped_flows_total')).toBe(0);
    expect(value('podflow_collector_backlog_merges_total')).toBe(0);
    expect(text).toMatch(/^process_resident_memory_bytes \d+/m);
  });

  it('registers nothing globally: two servers side by side keep their own metrics', () => {
    const other = new Registry();
    createCollectorMetrics(other, { backlog: () => backlog.stats() });
    expect(other.getSingleMetric('podflow_collector_conntrack_entries')).toBeDefined();
    expect(registry.getSingleMetric('podflow_collector_conntrack_entries')).not.toBe(
      other.getSingleMetric('podflow_collector_conntrack_entries'),
    );
  });
});

describe('collector server while starting', () => {
  it('answers the pull API 503 until its backlog is the one to serve (a --state-dir restore), then serves it', async () => {
    const backlog = new Backlog({ backlogMaxFlows: 1000 }, { bootId: 'fresh' });
    const registry = new Registry();
    let ready = false;
    const server = createCollectorServer(
      { listen: { host: '127.0.0.1', port: 0 } },
      {
        backlog,
        node: 'node-1',
        source: 'netfilter',
        metrics: createCollectorMetrics(registry, { backlog: () => backlog.stats() }),
        log: silentLogger,
        registry,
        notReady: () => undefined,
        pullable: () => ready,
      },
    );
    const { port } = await server.start();
    try {
      const early = await raw(port, 'GET', '/api/v1/flows', AS_EXPORTER);
      expect([early.status, early.headers['retry-after']]).toEqual([503, '1']);
      // Nothing about the backlog it is not going to serve, its boot id least of all.
      expect(early.body.toString()).not.toContain('fresh');
      const ack = await raw(port, 'POST', '/api/v1/ack', {}, pack({ bootId: 'fresh', seq: 0, lease: 'x' }));
      expect(ack.status).toBe(503);
      expect((await raw(port, 'GET', '/healthz')).status).toBe(200);
      ready = true;
      const served = await raw(port, 'GET', '/api/v1/flows', AS_EXPORTER);
      expect(served.status).toBe(200);
      expect((unpack(served.body) as PullResponse).bootId).toBe('fresh');
    } finally {
      await server.close();
    }
  });
});
