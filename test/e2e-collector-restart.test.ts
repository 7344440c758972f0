// A collector restarted while traffic flows, with `--state-dir` (test/helpers/cluster.ts gives each
// node's collector a directory of its own): once as a rolling update does it (SIGTERM), once as a
// crash (SIGKILL) followed by a few seconds without any collector on the node. A long TCP transfer
// and a stream of short connections run across every restart. The HTTP sink's records and
// Prometheus must equal what the nodes' conntrack counted, byte for byte: nothing lost (the
// restarted process continues from the counts the old one saved, and counts connections it does
// not know in full), nothing doubled (the same boot id and seqs: the exporter skips what it has).
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster, type LogRecord } from './helpers/cluster.js';
import { sentBy } from './helpers/conntrack-table.js';
import { HttpReceiver } from './helpers/http-receiver.js';
import {
  cleanupAll,
  createPair,
  httpStatus,
  kill,
  requireRoot,
  runClient,
  startServer,
  type TrafficServer,
} from './helpers/netns.js';
import { startPodflow } from './helpers/podflow.js';
import { relayIntoNetns } from './helpers/relay.js';
import { waitFor } from './helpers/wait.js';

const root = requireRoot();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// node-a: the client pod and a server pod beside it; node-b: a server pod.
const WEB = '10.244.1.5';
const CACHE = '10.244.1.6';
const STORE = '10.244.2.7';
const PODS = { web: 'web-5f7c9-x1', cache: 'cache-0', store: 'store-0' };

type Pair = 'webStore' | 'storeWeb' | 'webCache' | 'cacheWeb';

describe.skipIf(!root)('collector restarted with --state-dir while traffic flows: every byte once', () => {
  const c = new Cluster({
    nodes: [
      {
        name: 'node-a',
        zone: 'zone-a',
        ip: '10.250.0.2',
        podCidrs: ['10.244.1.0/24'],
        pods: [
          { name: PODS.web, namespace: 'shop', workload: 'Deployment/web', ips: [WEB] },
          { name: PODS.cache, namespace: 'shop', workload: 'StatefulSet/cache', ips: [CACHE] },
        ],
      },
      {
        name: 'node-b',
        zone: 'zone-b',
        ip: '10.250.0.3',
        podCidrs: ['10.244.2.0/24'],
        pods: [{ name: PODS.store, namespace: 'shop', workload: 'StatefulSet/store', ips: [STORE] }],
      },
    ],
    stateDir: true,
  });
  const srv: Record<string, TrafficServer> = {};

  beforeAll(async () => {
    await c.start();
    [srv.store, srv.cache] = await Promise.all([
      startServer(c.ns(PODS.store), 'tcp', STORE),
      startServer(c.ns(PODS.cache), 'tcp', CACHE),
    ]);
  }, 60_000);
  afterAll(() => c.close());

  /** Per pair, as conntrack counted it (cumulative): each pod's side from its own node's table. */
  const conntrack = async (): Promise<Record<Pair, number>> => ({
    webStore: await c.sentBy('node-a', WEB, STORE),
    storeWeb: await c.sentBy('node-b', STORE, WEB),
    webCache: await c.sentBy('node-a', WEB, CACHE),
    cacheWeb: await c.sentBy('node-a', CACHE, WEB),
  });
  const tx = (recs: LogRecord[], src: string, dst: string) =>
    recs.filter((r) => r.src_pod === src && r.dst_pod === dst).reduce((a, r) => a + Number(r.tx_bytes), 0);
  const http = (): Record<Pair, number> => {
    const recs = c.deliveredRecords();
    return {
      webStore: tx(recs, PODS.web, PODS.store),
      storeWeb: tx(recs, PODS.store, PODS.web),
      webCache: tx(recs, PODS.web, PODS.cache),
      cacheWeb: tx(recs, PODS.cache, PODS.web),
    };
  };
  const prom = async (): Promise<Record<Pair, number>> => {
    const q = (src: string, dst: string) =>
      c.q(`sum(podflow_transmit_bytes_total{src_pod="${src}",dst_pod="${dst}"})`);
    return {
      webStore: await q(PODS.web, PODS.store),
      storeWeb: await q(PODS.store, PODS.web),
      webCache: await q(PODS.web, PODS.cache),
      cacheWeb: await q(PODS.cache, PODS.web),
    };
  };

  /**
   * Traffic across a restart of node-a's collector: one TCP connection sending 240 KB in 160 pieces
   * over ~8 s, and short connections one after the other for about as long. The restart begins
   * after 1.5 s. Returns what conntrack counted once all of it is over.
   */
  const acrossRestart = async (restart: () => Promise<unknown>): Promise<Record<Pair, number>> => {
    const traffic = Promise.all([
      runClient(c.ns(PODS.web), 'tcp', STORE, srv.store!.port, {
        send: 240_000,
        receive: 31_000,
        paceMs: 50,
        chunks: 160,
      }),
      runClient(c.ns(PODS.web), 'tcp', CACHE, srv.cache!.port, {
        send: 3_000,
        receive: 1_200,
        count: 120,
        holdMs: 50,
      }),
      runClient(c.ns(PODS.web), 'tcp', STORE, srv.store!.port, {
        send: 700,
        receive: 5_000,
        count: 80,
        holdMs: 80,
      }),
    ]);
    await sleep(1_500);
    await restart();
    const results = await traffic;
    expect(results.map((r) => r.failed)).toEqual([0, 0, 0]);
    expect(results.map((r) => r.connections)).toEqual([1, 120, 80]);
    await sleep(700);
    return conntrack();
  };

  const waitExact = async (what: string, want: Record<Pair, number>) => {
    await c.waitFor(
      `HTTP records ${what}`,
      async () => (JSON.stringify(http()) === JSON.stringify(want) ? true : undefined),
      25_000,
      () => `${JSON.stringify(http())}, want ${JSON.stringify(want)}`,
    );
    await c.waitFor(
      `Prometheus ${what}`,
      async () => (JSON.stringify(await prom()) === JSON.stringify(want) ? true : undefined),
      25_000,
      async () => `${JSON.stringify(await prom())}, want ${JSON.stringify(want)}`,
    );
    // And it stays so: nothing comes twice later.
    await sleep(2_500);
    expect(http()).toEqual(want);
    expect(await prom()).toEqual(want);
  };

  const bootIds = (): string[] =>
    [...c.log.matchAll(/\[node-a\] .*"bootId":"([0-9a-f]+)".*"collecting"/g)].map((m) => m[1]!);

  it('SIGTERM (rolling update) in the middle of the traffic', async () => {
    const want = await acrossRestart(async () => {
      const { exitCode } = await c.restartCollector('node-a');
      expect(exitCode).toBe(0);
    });
    // Real traffic passed: at least the payloads.
    expect(want.webStore).toBeGreaterThan(240_000 + 80 * 700);
    expect(want.storeWeb).toBeGreaterThan(31_000 + 80 * 5_000);
    expect(want.webCache).toBeGreaterThan(120 * 3_000);
    await waitExact('after the SIGTERM restart', want);
    expect(c.log).toContain('--state-dir: continuing where the previous process left off');
    const ids = bootIds();
    expect(ids).toHaveLength(2);
    expect(ids[1]).toBe(ids[0]);
  }, 90_000);

  it('SIGKILL, then 4 s without a collector, in the middle of the traffic', async () => {
    const before = await conntrack();
    const want = await acrossRestart(async () => {
      const { signal } = await c.restartCollector('node-a', { signal: 'SIGKILL', downMs: 4_000 });
      expect(signal).toBe('SIGKILL');
    });
    expect(want.webStore - before.webStore).toBeGreaterThan(240_000 + 80 * 700);
    expect(want.webCache - before.webCache).toBeGreaterThan(120 * 3_000);
    await waitExact('after the SIGKILL restart', want);
    const ids = bootIds();
    expect(ids).toHaveLength(3);
    expect(new Set(ids).size).toBe(1);
  }, 90_000);
});

describe('--state-dir that cannot be used', () => {
  it('stops start-up with one line naming the option', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pf-state-cli-'));
    try {
      const file = join(dir, 'a-file');
      await writeFile(file, 'x');
      const child = startPodflow([
        'collector',
        '--listen',
        '127.0.0.1:0',
        '--state-dir',
        join(file, 'state'),
      ]);
      const { code } = await child.exit;
      expect(code).toBe(1);
      const lines = child.log.trim().split('\n');
      const state = join(file, 'state');
      expect(lines.at(-1)).toMatch(
        new RegExp(`^podflow: --state-dir ${state}: cannot create or write the directory \\(ENOTDIR: .*\\)$`),
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 30_000);
});

describe.skipIf(!root)('podflow standalone restarted with --state-dir', () => {
  it('SIGKILL in the middle of the traffic, 2 s down: the HTTP sink gets every byte conntrack counted, once', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pf-standalone-state-'));
    const rx = await HttpReceiver.start();
    const { a: host, b: peer, a4, b4 } = await createPair(232);
    try {
      // Closed connections stay in the table: conntrack's totals are cumulative to the end.
      for (const k of ['tcp_timeout_time_wait', 'tcp_timeout_close']) {
        await host.sysctl(`net.netfilter.nf_conntrack_${k}`, 600);
      }
      const relay = await relayIntoNetns(host, 9601, Number(new URL(rx.url).port), dir);
      const srv = await startServer(peer, 'tcp', b4);
      const bin = new URL('../bin/podflow.js', import.meta.url).pathname;
      let log = '';
      const start = () => {
        const p = host.spawn(
          process.execPath,
          [
            bin,
            'standalone',
            '--listen',
            '127.0.0.1:9471',
            '--node-name',
            'solo',
            '--interval',
            '500ms',
            '--export-interval',
            '1s',
            '--http-sink-url',
            'http://127.0.0.1:9601/ingest',
            '--state-dir',
            join(dir, 'state'),
          ],
          { HOME: dir, KUBECONFIG: join(dir, 'none') },
        );
        p.stderr?.on('data', (d) => {
          log += d;
        });
        return p;
      };
      const ready = () =>
        waitFor('standalone ready', async () => {
          const status = await httpStatus(host, 'http://127.0.0.1:9471/readyz');
          return status === 200 ? true : undefined;
        });
      let proc = start();
      await ready();
      const traffic = Promise.all([
        runClient(host, 'tcp', b4, srv.port, { send: 200_000, receive: 20_000, paceMs: 50, chunks: 100 }),
        runClient(host, 'tcp', b4, srv.port, { send: 2_000, receive: 9_000, count: 60, holdMs: 60 }),
      ]);
      await sleep(1_500);
      await kill(proc, 'SIGKILL');
      await sleep(2_000);
      proc = start();
      await ready();
      expect((await traffic).map((r) => r.failed)).toEqual([0, 0]);
      await sleep(700);
      const want = { tx: await sentBy(host, a4, b4), rx: await sentBy(host, b4, a4) };
      expect(want.tx).toBeGreaterThan(200_000 + 60 * 2_000);
      // Once per Idempotency-Key: a push the killed process made may come again under the same key.
      const got = () => {
        const byKey = new Map<string, Buffer>();
        for (const r of rx.requests)
          if (r.answer === 200) byKey.set(String(r.headers['idempotency-key']), r.body);
        const t = { tx: 0, rx: 0 };
        for (const body of byKey.values()) {
          for (const line of body.toString().split('\n')) {
            if (line === '') continue;
            const rec = JSON.parse(line) as LogRecord;
            if (rec.src_ip !== a4 || rec.dst_ip !== b4) continue;
            t.tx += Number(rec.tx_bytes);
            t.rx += Number(rec.rx_bytes);
          }
        }
        return t;
      };
      await waitFor('the HTTP sink to get every byte once', async () =>
        JSON.stringify(got()) === JSON.stringify(want) ? true : undefined,
      ).catch((err: Error) => {
        throw new Error(
          `${err.message}: got ${JSON.stringify(got())}, want ${JSON.stringify(want)}; log: ${log.slice(-2000)}`,
        );
      });
      await sleep(2_500);
      expect(got()).toEqual(want);
      expect(log).toContain('--state-dir: continuing where the previous process left off');
      await kill(proc, 'SIGTERM');
      await srv.stop();
      await relay.close();
    } finally {
      await cleanupAll();
      await rx.close();
      await rm(dir, { recursive: true, force: true });
    }
  }, 90_000);
});
