// Sharded exporters on a six-node cluster end to end (test/helpers/cluster.ts): real collectors on
// every node, and in the control namespace exporters run as the chart's StatefulSet runs them
// (Kubernetes discovery, `--total-shards`, the shard from the ordinal of `--pod-name
// podflow-exporter-N`, collectors split by the hash of their node name), each process scraped by
// a real Prometheus as an instance of its own. Pods on every node talk to the next node's pod (TCP
// and UDP) while the shards change: 3 shards; a reshard to 2 rolled as a StatefulSet rolls; a
// shard killed (SIGKILL) and restarted under its name; a second exporter configured onto a running
// shard. Every time, Prometheus (summed over every process that ever ran: the last value of each
// instance's counters) and the HTTP records (once per Idempotency-Key) hold exactly the bytes the
// nodes' conntrack counted, per pod pair.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shardOf } from '../exporter/shard.js';
import { Cluster, type Exporter, type NodeDef } from './helpers/cluster.js';
import { requireRoot, runClient, startServer, type TrafficServer } from './helpers/netns.js';

const root = requireRoot();

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// Node names picked for their hash (exporter/shard.ts): two per shard of 3, three per shard of 2,
// and every shard of 2 takes collectors from two shards of 3.
const NODES = ['node-a', 'node-e', 'node-f', 'node-h', 'node-l', 'node-m'];
const SPLIT_3 = {
  'podflow-exporter-0': ['node-a', 'node-m'],
  'podflow-exporter-1': ['node-e', 'node-h'],
  'podflow-exporter-2': ['node-f', 'node-l'],
};
const SPLIT_2 = {
  'podflow-exporter-0': ['node-a', 'node-f', 'node-l'],
  'podflow-exporter-1': ['node-e', 'node-h', 'node-m'],
};
const LEASE_S = 10;
const CLUSTER = 'shop-test';

/** One pod per node: app-<letter>-0 at 10.244.<n>.5. */
const PODS = NODES.map((node, i) => ({
  node,
  name: `app-${node.slice(-1)}-0`,
  ip: `10.244.${i + 1}.5`,
}));
/** A node's underlay address, where its collector listens (port 9470). */
const nodeIp = (node: string) => `10.250.0.${NODES.indexOf(node) + 2}`;

describe.skipIf(!root)('sharded exporters on a six-node cluster', () => {
  const c = new Cluster({
    nodes: PODS.map(
      (p, i): NodeDef => ({
        name: p.node,
        zone: `zone-${i % 3}`,
        region: 'region-1',
        ip: nodeIp(p.node),
        podCidrs: [`10.244.${i + 1}.0/24`],
        pods: [
          { name: p.name, namespace: 'shop', workload: `StatefulSet/${p.name.slice(0, -2)}`, ips: [p.ip] },
        ],
      }),
    ),
    exporterArgs: ['--pull-lease', `${LEASE_S}s`, '--cluster-name', CLUSTER],
    // Every exporter process on a port of its own: 9471 and up, in the order they start.
    exporterPorts: Array.from({ length: 10 }, (_, i) => 9471 + i),
  });
  let nextPort = 9471;
  /** Every exporter process ever started, and those running, by pod name. */
  const all: Exporter[] = [];
  const running = new Map<string, Exporter>();
  const start = async (name: string, args: string[]) => {
    const e = await c.startExporter({ name, port: nextPort++, args });
    all.push(e);
    running.set(name, e);
    return e;
  };
  const stop = async (name: string, signal: 'SIGTERM' | 'SIGKILL') => {
    const e = running.get(name)!;
    running.delete(name);
    await e.stop(signal);
    return e;
  };
  const srv = new Map<string, { tcp: TrafficServer; udp: TrafficServer }>();

  beforeAll(async () => {
    await c.start();
    for (const p of PODS) {
      const [tcp, udp] = await Promise.all([
        startServer(c.ns(p.name), 'tcp', p.ip),
        startServer(c.ns(p.name), 'udp', p.ip),
      ]);
      srv.set(p.name, { tcp, udp });
    }
  }, 60_000);
  afterAll(() => c.close());

  /**
   * Every pod sends to the next node's pod, TCP and UDP, `count` times `holdMs` apart (a few seconds
   * of traffic with a pause: it goes on while the shards change).
   */
  const traffic = async (send: number, receive: number, count: number, holdMs = 0) => {
    const results = await Promise.all(
      PODS.flatMap((p, i) => {
        const peer = PODS[(i + 1) % PODS.length]!;
        const s = srv.get(peer.name)!;
        return [
          runClient(c.ns(p.name), 'tcp', peer.ip, s.tcp.port, { send, receive, count, holdMs }),
          runClient(c.ns(p.name), 'udp', peer.ip, s.udp.port, {
            send: 700 + i,
            receive: 300 + i,
            count: Math.ceil(count / 2),
            holdMs,
          }),
        ];
      }),
    );
    for (const r of results) expect(r.failed).toBe(0);
  };

  /** Bytes each pod sent to its neighbours, as its node's conntrack counted them (`src>dst`). */
  const conntrack = async (): Promise<Record<string, number>> => {
    const out: Record<string, number> = {};
    for (const [i, p] of PODS.entries()) {
      for (const q of [PODS[(i + 1) % PODS.length]!, PODS[(i + PODS.length - 1) % PODS.length]!]) {
        out[`${p.name}>${q.name}`] = await c.sentBy(p.node, p.ip, q.ip);
      }
    }
    return sorted(out);
  };
  const sorted = (o: Record<string, number>) =>
    Object.fromEntries(Object.entries(o).sort(([a], [b]) => a.localeCompare(b)));
  const PAIRS = `cluster="${CLUSTER}",src_pod=~"app-.-0",dst_pod=~"app-.-0"`;
  /**
   * What Prometheus holds per pod pair, summed over every exporter process that ever ran: the last
   * value of each instance's counters. A stopped process's series end in stale markers; range
   * vectors leave those out, so its last real value stays in last_over_time for the whole range.
   */
  const prometheus = async (): Promise<Record<string, number>> => {
    const rows = await c.prom.query(
      `sum by (src_pod, dst_pod) (last_over_time(podflow_transmit_bytes_total{${PAIRS}}[1h]))`,
    );
    return sorted(Object.fromEntries(rows.map((r) => [`${r.metric.src_pod}>${r.metric.dst_pod}`, r.value])));
  };
  const http = (): Record<string, number> => {
    const out: Record<string, number> = {};
    for (const r of c.deliveredRecords()) {
      if (typeof r.src_pod !== 'string' || !r.src_pod.startsWith('app-')) continue;
      expect(r.cluster).toBe(CLUSTER);
      const k = `${r.src_pod}>${r.dst_pod}`;
      out[k] = (out[k] ?? 0) + Number(r.tx_bytes);
    }
    return sorted(out);
  };
  /** Waits until Prometheus and the HTTP records both equal conntrack's counts, pair by pair. */
  const exact = async (what: string) => {
    // The collectors read every 500 ms: the last connections are in their tables by now.
    await sleep(600);
    const want = await conntrack();
    const got = async () => JSON.stringify({ prometheus: await prometheus(), http: http() });
    const wanted = JSON.stringify({ prometheus: want, http: want });
    await c.waitFor(
      what,
      async () => ((await got()) === wanted ? true : undefined),
      20_000,
      async () => `${await got()}, want ${JSON.stringify(want)}`,
    );
    // The same total read another way: every raw sample of every instance, a drop taken as a reset.
    const total = Object.values(want).reduce((a, b) => a + b, 0);
    expect(await c.prom.counted(`podflow_transmit_bytes_total{${PAIRS}}`)).toBe(total);
    return want;
  };
  /** The nodes whose pods' flows each running exporter serves (the src_node of its series). */
  const pulledBy = async (): Promise<Record<string, string[]>> => {
    const rows = await c.prom.query(`group by (instance, src_node) (podflow_transmit_bytes_total{${PAIRS}})`);
    const out: Record<string, string[]> = {};
    for (const [name, e] of [...running].sort(([a], [b]) => a.localeCompare(b))) {
      out[name] = rows
        .filter((r) => r.metric.instance === e.address)
        .map((r) => r.metric.src_node!)
        .sort();
    }
    return out;
  };
  /** Waits until every running exporter's series name exactly the nodes of `split`. */
  const splitIs = (split: Record<string, string[]>) =>
    c.waitFor(
      'each shard to serve its own nodes',
      async () => (JSON.stringify(await pulledBy()) === JSON.stringify(split) ? true : undefined),
      10_000,
      async () => `${JSON.stringify(await pulledBy())}, want ${JSON.stringify(split)}`,
    );

  it('3 shards over 6 nodes: each pulls the collectors of its node-name hash, totals exact', async () => {
    // The split the test relies on is the hash's (stable: no platform or version changes it).
    for (const [total, split] of [
      [3, SPLIT_3],
      [2, SPLIT_2],
    ] as const) {
      for (const [name, nodes] of Object.entries(split)) {
        for (const n of nodes) expect(shardOf(n, total), `${n} of ${total}`).toBe(Number(name.slice(-1)));
      }
    }
    // As a StatefulSet starts them: one pod at a time, the shard from the ordinal.
    for (const name of Object.keys(SPLIT_3)) await start(name, ['--total-shards', '3']);
    await traffic(20_000, 3_000, 3);
    const want = await exact('3 shards: Prometheus and HTTP records to match conntrack');
    // Both nodes of a pair route its packets: each collector reports its own pod's side, once.
    expect(Object.keys(want)).toHaveLength(12);
    for (const v of Object.values(want)) expect(v).toBeGreaterThan(3 * 3_000);
    await splitIs(SPLIT_3);
    for (const e of running.values()) {
      expect(e.log()).toContain(`"shard":"${e.name.slice(-1)} of 3"`);
      expect(e.log()).not.toContain('held by the pull lease');
    }
  }, 40_000);

  it('a reshard from 3 to 2 while traffic flows, rolled as a StatefulSet rolls: totals exact', async () => {
    const flowing = traffic(9_000, 2_000, 12, 300);
    await sleep(500);
    // Scaled down and updated with the new total: the highest ordinal goes first, then each pod is
    // replaced in reverse order. SIGTERM: a stopping shard flushes and lets go of its leases.
    const old2 = await stop('podflow-exporter-2', 'SIGTERM');
    await stop('podflow-exporter-1', 'SIGTERM');
    const new1 = await start('podflow-exporter-1', ['--total-shards', '2']);
    // node-m moves from shard 0 of 3 to shard 1 of 2: the old shard 0 still runs and holds its lease.
    await c.waitFor('the new shard 1 to meet the old shard 0', async () =>
      new1.log().includes('held by the pull lease of another exporter (podflow-exporter-0)')
        ? true
        : undefined,
    );
    await stop('podflow-exporter-0', 'SIGTERM');
    await start('podflow-exporter-0', ['--total-shards', '2']);
    await flowing;
    // It took node-m once the old shard 0 let go of it.
    await c.waitFor('shard 1 to pull node-m', async () =>
      new1.log().includes('every collector of this exporter is pulled again') ? true : undefined,
    );
    await traffic(5_000, 1_000, 1);
    await exact('after the reshard: Prometheus and HTTP records to match conntrack');
    await splitIs(SPLIT_2);
    // A stopped process: gone from instant queries (stale), still whole in range vectors.
    const old = `podflow_transmit_bytes_total{${PAIRS},instance="${old2.address}"}`;
    expect(await c.q(`count(${old})`)).toBe(0);
    expect(await c.q(`count(last_over_time(${old}[1h]))`)).toBeGreaterThan(0);
  }, 40_000);

  it('a shard killed (SIGKILL) during traffic and restarted under its name: its leases back at once, totals exact', async () => {
    const flowing = traffic(7_000, 1_500, 10, 250);
    await sleep(1_200);
    await stop('podflow-exporter-1', 'SIGKILL');
    // The collectors still hold shard 1's lease for up to 10 s; the restarted pod has the same name,
    // so they grant it to it at once (a pod of another name would wait for the lapse).
    const restarted = Date.now();
    const again = await start('podflow-exporter-1', ['--total-shards', '2']);
    await c.waitFor('the restarted shard to pull its collectors', async () => {
      const { stdout } = await c.ctl.exec('curl', ['-s', `http://${again.address}/metrics`]);
      const pulled = SPLIT_2['podflow-exporter-1'].filter((n) =>
        stdout
          .split('\n')
          .some(
            (l) =>
              l.startsWith(`podflow_exporter_pulls_total{collector="http://${nodeIp(n)}:9470"} `) &&
              Number(l.slice(l.lastIndexOf(' ') + 1)) > 0,
          ),
      );
      return pulled.length === 3 ? true : undefined;
    });
    const took = Date.now() - restarted;
    expect(took).toBeLessThan((LEASE_S / 2) * 1000);
    expect(again.log()).not.toContain('held by the pull lease');
    await flowing;
    await traffic(5_000, 1_000, 1);
    await exact('after the kill and restart: Prometheus and HTTP records to match conntrack');
    await splitIs(SPLIT_2);
  }, 40_000);

  /** Pulls a node's collector refused because another exporter held its lease, from its /metrics. */
  const refusedLeased = async (node: string): Promise<number> => {
    const { stdout } = await c.ctl.exec('curl', ['-s', `http://${nodeIp(node)}:9470/metrics`]);
    const m = /^podflow_collector_pull_refused_total\{reason="leased"\} (\d+)/m.exec(stdout);
    if (!m) throw new Error(`no podflow_collector_pull_refused_total{reason="leased"} on ${node}`);
    return Number(m[1]);
  };

  it('two exporters configured to the same shard: the lease answers, nothing doubled, the loser says why once', async () => {
    const shard0 = SPLIT_2['podflow-exporter-0'];
    const before = await Promise.all(shard0.map(refusedLeased));
    const twin = await start('podflow-exporter-twin', ['--total-shards', '2', '--shard', '0']);
    await traffic(6_000, 1_200, 6, 200);
    await exact('with two exporters on shard 0: Prometheus and HTTP records to match conntrack');
    // Every collector of shard 0 turned the twin away, round after round.
    const after = await Promise.all(shard0.map(refusedLeased));
    for (const [i, n] of after.entries()) expect(n - before[i]!, shard0[i]).toBeGreaterThanOrEqual(2);
    // The twin pulled nothing: no series of its own.
    expect(await c.q(`count(podflow_transmit_bytes_total{instance="${twin.address}"})`)).toBe(0);
    const lines = twin
      .log()
      .split('\n')
      .filter((l) => l.includes('held by the pull lease'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(
      '3 collector(s) held by the pull lease of another exporter (podflow-exporter-0)',
    );
    expect(lines[0]).toContain('check --shard and --total-shards');
    await splitIs({ ...SPLIT_2, 'podflow-exporter-twin': [] });
  }, 40_000);
});
