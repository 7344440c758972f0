// Sharded exporters: real exporter processes over six real collector servers (the pull API, its
// lease and sink cursors). Shards split the collectors by the hash of their URL; a reshard from 2
// to 3 while flows keep coming, an exporter misconfigured onto a running shard, and a shard killed
// and taken over once its lease lapsed neither lose nor double a byte: the scraped Prometheus
// counters (each process's last scrape, as Prometheus sums instances) and the HTTP records
// (deduplicated by Idempotency-Key) both equal what the collectors were given.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shardOf } from '../exporter/shard.js';
import type { Flow } from '../shared/flow.js';
import { HttpReceiver } from './helpers/http-receiver.js';
import { type Podflow, startPodflow } from './helpers/podflow.js';
import { freePort } from './helpers/ports.js';
import { startTestCollector, type TestCollector } from './helpers/test-collector.js';
import { waitFor } from './helpers/wait.js';

const COLLECTORS = 6;
/** The shortest lease an exporter may ask for: the failover time of a killed shard. */
const LEASE_S = 10;

/** One exporter process, and what a scraper last saw of its flow counters. */
class Exporter {
  lastSeen = 0;
  private constructor(
    readonly name: string,
    readonly pf: Podflow,
  ) {}

  get log(): string {
    return this.pf.log;
  }

  static async start(name: string, urls: string[], sinkUrl: string, extra: string[]): Promise<Exporter> {
    const port = await freePort();
    const pf = startPodflow([
      'exporter',
      '--collectors',
      urls.join(','),
      '--pod-name',
      name,
      '--listen',
      `127.0.0.1:${port}`,
      '--export-interval',
      '200ms',
      '--pull-lease',
      `${LEASE_S}s`,
      '--http-sink-url',
      sinkUrl,
      '--cluster-name',
      'test-cluster',
      '--log-level',
      'info',
      ...extra,
    ]);
    await pf.ready();
    return new Exporter(name, pf);
  }

  /** The transmit-bytes series of one scrape: node → bytes, and the labels seen. */
  async scrape(): Promise<{ total: number; byNode: Map<string, number>; lines: string[] }> {
    const text = await (await fetch(`${this.pf.base}/metrics`)).text();
    const lines = text.split('\n').filter((l) => l.startsWith('podflow_transmit_bytes_total{'));
    const byNode = new Map<string, number>();
    let total = 0;
    for (const l of lines) {
      const v = Number(l.slice(l.lastIndexOf(' ') + 1));
      const node = /src_node="([^"]*)"/.exec(l)?.[1] ?? '';
      byNode.set(node, (byNode.get(node) ?? 0) + v);
      total += v;
    }
    // A process's counters only grow: its last complete scrape is what Prometheus holds of it.
    this.lastSeen = total;
    return { total, byNode, lines };
  }

  async stop(signal: 'SIGTERM' | 'SIGKILL'): Promise<void> {
    await this.pf.stop(signal);
  }
}

const flow = (tx: number): Flow => ({
  src: '10.0.0.1',
  dst: '8.8.8.8',
  proto: 6,
  txBytes: tx,
  rxBytes: 1,
  txPackets: 1,
  rxPackets: 1,
});

describe('sharded exporters', () => {
  const collectors: TestCollector[] = [];
  let rx: HttpReceiver;
  let urls: string[] = [];
  /** Every exporter process ever started: the ones stopped keep what was scraped of them. */
  const all: Exporter[] = [];
  let running: Exporter[] = [];
  let total = 0;
  let seq = 0;

  const nodes: string[] = [];

  beforeAll(async () => {
    // Ports are random, and so would be the split: one collector of every (shard of 2, shard of
    // 3) pair is kept, so that every shard has collectors before and after the reshard.
    const pairs = new Set<string>();
    for (let k = 0; collectors.length < COLLECTORS && k < 200; k++) {
      const c = await startTestCollector(`node-${k}`, { bootId: `boot-${k}` });
      const pair = `${shardOf(c.url, 2)}/${shardOf(c.url, 3)}`;
      if (pairs.has(pair)) {
        await c.close();
        continue;
      }
      pairs.add(pair);
      collectors.push(c);
      nodes.push(`node-${k}`);
    }
    expect(collectors).toHaveLength(COLLECTORS);
    urls = collectors.map((c) => c.url);
    rx = await HttpReceiver.start();
  });
  afterAll(async () => {
    await Promise.all(all.map((e) => e.stop('SIGKILL')));
    await rx.close();
    await Promise.all(collectors.map((c) => c.close()));
  });

  const start = async (name: string, extra: string[]) => {
    const e = await Exporter.start(name, urls, rx.url, extra);
    all.push(e);
    running.push(e);
    return e;
  };
  /** Stops one exporter; a last scrape first, as Prometheus scraped it while it ran. */
  const stop = async (e: Exporter, signal: 'SIGTERM' | 'SIGKILL') => {
    if (signal === 'SIGTERM') await e.scrape();
    running = running.filter((r) => r !== e);
    await e.stop(signal);
  };
  /** One new batch on every collector, each a different amount. */
  const append = () => {
    seq++;
    for (let i = 0; i < COLLECTORS; i++) {
      const tx = 1_000_000 * seq + 1000 * i + seq;
      total += tx;
      collectors[i].backlog.append(seq * 100, seq * 100 + 100, [flow(tx)]);
    }
  };
  const counted = () => all.reduce((s, e) => s + e.lastSeen, 0);
  const records = () => rx.dedupedRecords();
  const httpTotal = () => records().reduce((s, r) => s + Number(r.tx_bytes), 0);
  /** Scrapes the running exporters until everything is counted once and acknowledged. */
  const settle = async (what: string, timeoutMs = 20_000) => {
    await waitFor(
      what,
      async () => {
        for (const e of running) await e.scrape();
        const drained = collectors.every((c) => c.backlog.stats().batches === 0);
        return drained && counted() === total && httpTotal() === total ? true : undefined;
      },
      timeoutMs,
    ).catch((err: Error) => {
      throw new Error(
        `${err.message}: counted ${counted()}, http ${httpTotal()}, want ${total}; backlogs ${collectors.map((c) => c.backlog.stats().batches)}`,
      );
    });
  };
  /** The nodes whose flows each running exporter counted. */
  const split = async () => {
    const out = new Map<string, string[]>();
    for (const e of running) out.set(e.name, [...(await e.scrape()).byNode.keys()].sort());
    return out;
  };
  const expected = (total: number, names: string[]) =>
    new Map(
      names.map((name, shard) => [
        name,
        urls
          .map((u, i) => (shardOf(u, total) === shard ? nodes[i] : ''))
          .filter((n) => n !== '')
          .sort(),
      ]),
    );

  it('two shards split the collectors: each pulls its own, together all, cluster label and field set', async () => {
    // The shard comes from the StatefulSet ordinal of the pod name.
    await Promise.all([
      start('exporter-0', ['--total-shards', '2']),
      start('exporter-1', ['--total-shards', '2']),
    ]);
    append();
    await settle('two shards');
    expect(await split()).toEqual(expected(2, ['exporter-0', 'exporter-1']));
    for (const e of running) {
      for (const line of (await e.scrape()).lines)
        expect(line).toMatch(/^podflow_transmit_bytes_total\{cluster="test-cluster",src_namespace=/);
    }
    for (const r of records()) expect(r.cluster).toBe('test-cluster');
    expect(Object.keys(records()[0]).slice(0, 4)).toEqual(['ts', 'interval_seconds', 'cluster', 'src_ip']);
  });

  it('a reshard from 2 to 3 while flows keep coming: exact totals', async () => {
    const old = [...running];
    append();
    // A StatefulSet replaces its pods one name at a time; the collectors keep what was not acknowledged.
    for (const e of old) await stop(e, 'SIGTERM');
    append();
    await Promise.all([
      start('exporter-0', ['--total-shards', '3']),
      start('exporter-1', ['--total-shards', '3']),
      start('exporter-2', ['--total-shards', '3']),
    ]);
    append();
    await settle('three shards');
    expect(await split()).toEqual(expected(3, ['exporter-0', 'exporter-1', 'exporter-2']));
  });

  it('a second exporter on the same shard pulls nothing while the first holds the leases, and says why once', async () => {
    const twin = await start('exporter-0-twin', ['--total-shards', '3', '--shard', '0']);
    append();
    await settle('two exporters claim shard 0');
    await waitFor('the loser says why', async () =>
      /held by the pull lease/.test(twin.log) ? true : undefined,
    );
    expect((await twin.scrape()).lines).toEqual([]);
    const lines = twin.log.split('\n').filter((l) => l.includes('held by the pull lease'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain('exporter-0');
    expect(lines[0]).toContain('check --shard and --total-shards');
  });

  it('a shard killed: the twin takes its collectors over once the lease lapses, exact totals', async () => {
    const first = running.find((e) => e.name === 'exporter-0')!;
    const twin = running.find((e) => e.name === 'exporter-0-twin')!;
    // Killed at rest: every batch it counted was scraped and acknowledged (the kill inside a
    // round is test/exporter-restart.test.ts).
    await stop(first, 'SIGKILL');
    const killed = Date.now();
    append();
    const shard0 = expected(3, ['exporter-0'])!.get('exporter-0')!;
    await waitFor(
      'takeover',
      async () => {
        const nodes = [...(await twin.scrape()).byNode.keys()];
        return shard0.every((n) => nodes.includes(n)) ? true : undefined;
      },
      (LEASE_S + 10) * 1000,
    );
    const took = (Date.now() - killed) / 1000;
    // Not before the lease lapsed (the collectors refused the twin), and soon after.
    expect(took).toBeGreaterThan(LEASE_S - 2);
    expect(took).toBeLessThan(LEASE_S + 5);
    append();
    await settle('after the takeover');
    expect(twin.log).toMatch(/every collector of this exporter is pulled again/);
  }, 40_000);
});
