// A two-node cluster end to end (test/helpers/cluster.ts), the cases test/e2e-cluster.test.ts leaves
// out: two pods on one node (both ends local to one collector, routed through the node), a pod talking
// to a public host through its node's masquerade, IPv6 pods across nodes, and faults: the exporter
// killed with SIGKILL and restarted, the HTTP sink refusing (503) for a few rounds, and a collector
// restarted as a rolling update does (SIGTERM, then a new process with a new boot id). Every
// expectation is what the nodes' conntrack counted, byte for byte.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FLOW_LABELS } from '../shared/config.js';
import { Cluster, txOf } from './helpers/cluster.js';
import { conntrackEntries } from './helpers/conntrack-table.js';
import { kill, requireRoot, runClient, startServer, type TrafficServer } from './helpers/netns.js';

const root = requireRoot();

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// node-a (zone-a): web (Deployment) and cache (StatefulSet) side by side, and a dual-stack pod.
const WEB = '10.244.1.5';
const CACHE = '10.244.1.6';
const V6_A = 'fd00:244:1::5';
// node-b (zone-b): an IPv6-only pod.
const V6_B = 'fd00:244:2::7';
// A host on the internet, as far as podflow can tell (documentation range, behind node-a).
const PUBLIC = '203.0.113.10';
const NODE_A_EGRESS = '203.0.113.1';

/** Prometheus stores an empty label as no label: put the contract's empty strings back. */
const labelsOf = (metric: Record<string, string>): Record<string, string> => {
  const out: Record<string, string> = {};
  for (const l of FLOW_LABELS) out[l] = metric[l] ?? '';
  return out;
};

describe.skipIf(!root)('two-node cluster end to end: one-node pods, public peers, IPv6, faults', () => {
  const c = new Cluster({
    nodes: [
      {
        name: 'node-a',
        zone: 'zone-a',
        region: 'region-1',
        ip: '10.250.0.2',
        ip6: 'fd00:250::2',
        podCidrs: ['10.244.1.0/24', 'fd00:244:1::/64'],
        pods: [
          { name: 'web-5f7c9-x1', namespace: 'shop', workload: 'Deployment/web', ips: [WEB] },
          { name: 'cache-0', namespace: 'shop', workload: 'StatefulSet/cache', ips: [CACHE] },
          { name: 'api-6d8b4-a', namespace: 'edge', workload: 'Deployment/api', ips: ['10.244.1.7', V6_A] },
        ],
      },
      {
        name: 'node-b',
        zone: 'zone-b',
        region: 'region-1',
        ip: '10.250.0.3',
        ip6: 'fd00:250::3',
        podCidrs: ['10.244.2.0/24', 'fd00:244:2::/64'],
        pods: [{ name: 'store-0', namespace: 'edge', workload: 'StatefulSet/store', ips: [V6_B] }],
      },
    ],
    publicHost: { ip: PUBLIC, via: 'node-a', nodeIp: NODE_A_EGRESS },
    // The public host's range named (the class stays internet); another range classed.
    destinations: '- cidr: 203.0.113.0/24\n  name: partner-api\n- cidr: 198.51.100.0/24\n  class: private\n',
    // A refused push gives up within a round or two; the pipeline offers it again next round.
    exporterArgs: ['--http-sink-max-retries', '1'],
  });
  const srv: Record<string, TrafficServer> = {};

  beforeAll(async () => {
    await c.start();
    [srv.cacheTcp, srv.cacheUdp, srv.pubTcp, srv.v6Tcp] = await Promise.all([
      startServer(c.ns('cache-0'), 'tcp', CACHE),
      startServer(c.ns('cache-0'), 'udp', CACHE),
      startServer(c.ns('public'), 'tcp', PUBLIC),
      startServer(c.ns('store-0'), 'tcp', V6_B),
    ]);
  }, 60_000);
  afterAll(() => c.close());

  // What each phase's traffic totals to, per pair, as conntrack counted it (cumulative). Two pods of
  // one node: node-a's table (their traffic is routed through it); IPv6: each pod's own node.
  const want = { webCache: 0, cacheWeb: 0, v6ab: 0, v6ba: 0 };
  const readWant = async () => {
    want.webCache = await c.sentBy('node-a', WEB, CACHE);
    want.cacheWeb = await c.sentBy('node-a', CACHE, WEB);
    want.v6ab = await c.sentBy('node-a', V6_A, V6_B);
    want.v6ba = await c.sentBy('node-b', V6_B, V6_A);
  };
  const M = {
    webCache: 'podflow_transmit_bytes_total{src_pod="web-5f7c9-x1",dst_pod="cache-0"}',
    cacheWeb: 'podflow_transmit_bytes_total{src_pod="cache-0",dst_pod="web-5f7c9-x1"}',
    v6ab: 'podflow_transmit_bytes_total{src_pod="api-6d8b4-a",dst_pod="store-0"}',
    v6ba: 'podflow_transmit_bytes_total{src_pod="store-0",dst_pod="api-6d8b4-a"}',
  };
  const httpTotals = () => {
    const recs = c.deliveredRecords();
    return {
      webCache: txOf(recs, 'web-5f7c9-x1', 'cache-0'),
      cacheWeb: txOf(recs, 'cache-0', 'web-5f7c9-x1'),
      v6ab: txOf(recs, 'api-6d8b4-a', 'store-0'),
      v6ba: txOf(recs, 'store-0', 'api-6d8b4-a'),
    };
  };
  const waitHttpExact = (what: string) =>
    c.waitFor(
      what,
      async () => (JSON.stringify(httpTotals()) === JSON.stringify(want) ? true : undefined),
      20_000,
      () => `http ${JSON.stringify(httpTotals())}, want ${JSON.stringify(want)}`,
    );
  /** Waits until the PromQL sums of `queries` are `expected`. */
  const waitProm = (what: string, queries: string[], expected: number[]) => {
    const now = async () => (await Promise.all(queries.map((m) => c.q(`sum(${m})`)))).join(',');
    return c.waitFor(
      what,
      async () => ((await now()) === expected.join(',') ? true : undefined),
      20_000,
      async () => `${await now()}, want ${expected.join(',')}`,
    );
  };

  /** Pod traffic of the fault phases: two pods on node-a (TCP) and the IPv6 pair across nodes. */
  const podTraffic = async (send: number, receive: number) => {
    const results = await Promise.all([
      runClient(c.ns('web-5f7c9-x1'), 'tcp', CACHE, srv.cacheTcp!.port, { send, receive, count: 2 }),
      runClient(c.ns('api-6d8b4-a'), 'tcp', V6_B, srv.v6Tcp!.port, { send: send + 111, receive, count: 2 }),
    ]);
    for (const r of results) expect(r).toMatchObject({ failed: 0, connections: 2 });
  };

  it('two pods on one node, a public host and IPv6 pods: labelled, and exactly what conntrack counted', async () => {
    const web = c.ns('web-5f7c9-x1');
    const results = await Promise.all([
      runClient(web, 'tcp', CACHE, srv.cacheTcp!.port, { send: 12_000, receive: 2_500, count: 3 }),
      runClient(web, 'udp', CACHE, srv.cacheUdp!.port, { send: 900, receive: 300, count: 2 }),
      runClient(web, 'tcp', PUBLIC, srv.pubTcp!.port, { send: 5_000, receive: 40_000, count: 2 }),
      runClient(c.ns('api-6d8b4-a'), 'tcp', V6_B, srv.v6Tcp!.port, { send: 7_777, receive: 1_234, count: 3 }),
    ]);
    for (const r of results) expect(r.failed).toBe(0);
    await sleep(600);
    await readWant();
    const webPub = await c.sentBy('node-a', WEB, PUBLIC);
    const pubWeb = await c.sentBy('node-a', PUBLIC, WEB);
    // Conntrack counted at least the payloads (plus headers): the traffic really passed the nodes.
    expect(want.webCache).toBeGreaterThan(3 * 12_000 + 2 * 900);
    expect(want.cacheWeb).toBeGreaterThan(3 * 2_500 + 2 * 300);
    expect(webPub).toBeGreaterThan(2 * 5_000);
    expect(pubWeb).toBeGreaterThan(2 * 40_000);
    expect(want.v6ab).toBeGreaterThan(3 * 7_777);
    expect(want.v6ba).toBeGreaterThan(3 * 1_234);
    // The public host saw the node, not the pod: node-a masqueraded, and its table's reply tuple
    // holds the node's address. podflow must still give these bytes to the pod.
    const toPub = (await conntrackEntries(c.ns('node-a'))).filter(
      (e) => e.origSrc === WEB && e.replySrc === PUBLIC,
    );
    expect(toPub.length).toBe(2);
    for (const e of toPub) expect(e.replyDst).toBe(NODE_A_EGRESS);

    const pubM = `podflow_transmit_bytes_total{src_pod="web-5f7c9-x1",dst_ip="${PUBLIC}"}`;
    await waitProm(
      'Prometheus to match conntrack',
      [M.webCache, M.cacheWeb, pubM, M.v6ab, M.v6ba],
      [want.webCache, want.cacheWeb, webPub, want.v6ab, want.v6ba],
    );

    // One node, both ends local: each pod reports what it sent, and the bytes on the wire count once.
    const pair = '{src_pod=~"web-5f7c9-x1|cache-0",dst_pod=~"web-5f7c9-x1|cache-0"}';
    expect(await c.q(`sum(podflow_transmit_bytes_total${pair})`)).toBe(want.webCache + want.cacheWeb);
    expect(await c.q(`sum(podflow_received_bytes_total${pair})`)).toBe(want.webCache + want.cacheWeb);
    expect(await c.q('sum(podflow_received_bytes_total{src_pod="cache-0",dst_pod="web-5f7c9-x1"})')).toBe(
      want.webCache,
    );
    const local = await c.prom.query(`podflow_transmit_bytes_total${pair}`);
    expect(local.map((s) => `${s.metric.src_pod}>${s.metric.dst_pod} ${s.metric.proto}`).sort()).toEqual([
      'cache-0>web-5f7c9-x1 TCP',
      'cache-0>web-5f7c9-x1 UDP',
      'web-5f7c9-x1>cache-0 TCP',
      'web-5f7c9-x1>cache-0 UDP',
    ]);
    for (const s of local) {
      expect(labelsOf(s.metric)).toMatchObject({
        src_namespace: 'shop',
        src_node: 'node-a',
        src_zone: 'zone-a',
        dst_namespace: 'shop',
        dst_node: 'node-a',
        dst_zone: 'zone-a',
        dst_type: 'pod',
        dst_ip: '',
        traffic_class: 'same-zone',
        cross_zone: 'false',
      });
      expect(s.metric.src_workload).toBe(
        s.metric.src_pod === 'cache-0' ? 'StatefulSet/cache' : 'Deployment/web',
      );
    }

    // The public host: its address, no pod, no node, no zone.
    const pubSeries = await c.prom.query(
      `podflow_transmit_bytes_total{src_pod="web-5f7c9-x1",dst_type="public"}`,
    );
    expect(pubSeries).toHaveLength(1);
    expect(labelsOf(pubSeries[0]!.metric)).toMatchObject({
      src_workload: 'Deployment/web',
      src_node: 'node-a',
      dst_ip: PUBLIC,
      dst_type: 'public',
      dst_pod: '',
      dst_node: '',
      dst_zone: '',
      traffic_class: 'internet',
      cross_zone: 'false',
      proto: 'TCP',
    });
    // Priced at its sender: the pod's bytes out at the AWS preset's internet price, the bytes in free.
    const pubCost = await c.q(`sum(podflow_traffic_cost_total{src_pod="web-5f7c9-x1",dst_ip="${PUBLIC}"})`);
    expect(Math.abs(pubCost - (webPub / 2 ** 30) * 0.09) / pubCost).toBeLessThan(1e-9);
    expect(await c.q(`sum(podflow_received_bytes_total{src_pod="web-5f7c9-x1",dst_ip="${PUBLIC}"})`)).toBe(
      pubWeb,
    );
    // The node's egress address is no peer of anybody: the masqueraded bytes are all the pod's.
    expect(await c.q(`count(podflow_transmit_bytes_total{dst_ip="${NODE_A_EGRESS}"})`)).toBe(0);

    // IPv6 pods across nodes and zones: pods, not "private" ULA addresses.
    const v6 = await c.prom.query('podflow_transmit_bytes_total{src_namespace="edge"}');
    expect(v6.map((s) => `${s.metric.src_pod}>${s.metric.dst_pod}`).sort()).toEqual([
      'api-6d8b4-a>store-0',
      'store-0>api-6d8b4-a',
    ]);
    for (const s of v6) {
      expect(labelsOf(s.metric)).toMatchObject({
        dst_type: 'pod',
        dst_ip: '',
        traffic_class: 'cross-zone',
        cross_zone: 'true',
        proto: 'TCP',
      });
    }
    expect(v6.find((s) => s.metric.src_pod === 'store-0')!.metric).toMatchObject({
      src_workload: 'StatefulSet/store',
      src_node: 'node-b',
      src_zone: 'zone-b',
      dst_workload: 'Deployment/api',
      dst_node: 'node-a',
      dst_zone: 'zone-a',
    });
    expect(await c.q('count(podflow_transmit_bytes_total{dst_type="private",dst_ip=~"fd00:244:.*"})')).toBe(
      0,
    );
    // Both nodes routed the IPv6 connections; each collector reported only its own pod's side.
    expect(await c.sentBy('node-b', V6_A, V6_B)).toBe(want.v6ab);
    expect(await c.q('sum(podflow_transmit_bytes_total{src_namespace="edge"})')).toBe(want.v6ab + want.v6ba);
    expect(await c.q('sum(podflow_received_bytes_total{src_namespace="edge"})')).toBe(want.v6ab + want.v6ba);

    // The HTTP records: the same bytes, with the public address and JSON booleans.
    await waitHttpExact('HTTP records to match conntrack');
    const recs = c.deliveredRecords();
    const pubRecs = recs.filter((r) => r.src_pod === 'web-5f7c9-x1' && r.dst_ip === PUBLIC);
    expect(pubRecs.reduce((a, r) => a + Number(r.tx_bytes), 0)).toBe(webPub);
    expect(pubRecs.reduce((a, r) => a + Number(r.rx_bytes), 0)).toBe(pubWeb);
    for (const r of pubRecs)
      expect(r).toMatchObject({
        src_ip: WEB,
        dst_type: 'public',
        dst_pod: '',
        cross_zone: false,
        // Named by the destinations file, the class its address gives.
        dst_dns_name: 'partner-api',
        traffic_class: 'internet',
      });
    const v6Rec = recs.find((r) => r.src_pod === 'api-6d8b4-a')!;
    expect(v6Rec).toMatchObject({ src_ip: V6_A, dst_ip: V6_B, dst_type: 'pod', cross_zone: true });
  }, 60_000);

  // What the first exporter process had counted when it was killed (its Prometheus counters).
  const before = { webCache: 0, cacheWeb: 0, v6ab: 0, v6ba: 0 };

  it('exporter killed (SIGKILL) and restarted: the collectors kept the backlog, totals stay exact', async () => {
    // Everything so far was delivered (previous test). One more round makes sure it was also
    // acknowledged: a batch delivered but not acknowledged when the exporter dies is offered again by
    // the next process as part of a longer range, under another Idempotency-Key.
    await sleep(1_500);
    before.webCache = await c.q(`sum(${M.webCache})`);
    before.v6ab = await c.q(`sum(${M.v6ab})`);
    before.cacheWeb = await c.q(`sum(${M.cacheWeb})`);
    before.v6ba = await c.q(`sum(${M.v6ba})`);
    expect(before).toEqual(want);
    const exporter = c.exporter!;
    await kill(exporter, 'SIGKILL');
    expect(exporter.signalCode).toBe('SIGKILL');
    const requestsAtKill = c.rx.requests.length;

    await podTraffic(9_000, 3_100);
    await sleep(1_500);
    await readWant();
    expect(want.webCache - before.webCache).toBeGreaterThan(2 * 9_000);
    // Nobody was exporting: nothing reached the receiver meanwhile.
    expect(c.rx.requests.length).toBe(requestsAtKill);

    await c.startExporter();
    await waitHttpExact('HTTP records after the restart to match conntrack');
    // The new process counts from 0: its counters hold exactly the traffic sent while none ran.
    await waitProm(
      'Prometheus to scrape the new exporter',
      [M.webCache, M.v6ab],
      [want.webCache - before.webCache, want.v6ab - before.v6ab],
    );
  }, 40_000);

  it('HTTP sink answering 503 for a few rounds: retried under the same key, nothing lost or doubled', async () => {
    const rx = c.rx;
    const from = rx.requests.length;
    rx.otherwise({ status: 503 });
    await podTraffic(4_321, 5_555);
    await sleep(600);
    await readWant();
    const hasNewPodBytes = (body: Buffer) => body.includes('"src_pod":"web-5f7c9-x1","src_namespace"');
    // Refused at least three times. (Whether the new pod traffic is among the refused records depends
    // on timing: a refused push is offered again alone, before anything newer, so when a push was
    // already pending as the outage began, the new traffic waits behind it until the receiver is back.)
    await c.waitFor(
      'refused pushes',
      async () => {
        const refused = rx.requests.slice(from).filter((r) => r.answer === 503);
        return refused.length >= 3 ? refused : undefined;
      },
      15_000,
      () => `${rx.requests.length - from} requests since`,
    );
    // Prometheus is a sink of its own: it took the batches while the HTTP sink refused them.
    await waitProm(
      'Prometheus during the outage',
      [M.webCache, M.v6ab],
      [want.webCache - before.webCache, want.v6ab - before.v6ab],
    );
    // Nothing of the new traffic was accepted by the receiver yet.
    expect(rx.requests.slice(from).filter((r) => r.answer === 200 && hasNewPodBytes(r.body))).toEqual([]);
    const refusedKeys = new Set(
      rx.requests
        .slice(from)
        .filter((r) => r.answer === 503)
        .map((r) => String(r.headers['idempotency-key'])),
    );

    rx.otherwise({ status: 200 });
    await waitHttpExact('HTTP records after the receiver recovered');
    // A refused batch came again under the same key and was then taken.
    const accepted = rx.requests.slice(from).filter((r) => r.answer === 200);
    expect(accepted.some((r) => refusedKeys.has(String(r.headers['idempotency-key'])))).toBe(true);
    // Counted once everywhere: a few more rounds change nothing.
    await sleep(2_500);
    expect(httpTotals()).toEqual(want);
    expect(await c.q(`sum(${M.webCache})`)).toBe(want.webCache - before.webCache);
    expect(await c.q(`sum(${M.v6ab})`)).toBe(want.v6ab - before.v6ab);
  }, 40_000);

  it('a collector restarted (rolling update): its last read is exported, the new boot counts from its first read', async () => {
    // Connections that end just before the SIGTERM: only the stopping collector's last read has them.
    await podTraffic(2_222, 1_111);
    const { exitCode } = await c.restartCollector('node-a');
    // It exits 0 only once an exporter took everything it had (else at its shutdown timeout, 1).
    expect(exitCode).toBe(0);
    // The new process (a new boot id) finds every earlier connection still in node-a's table: they are
    // history to it, not new traffic. Only what comes after its first read is its to report.
    await podTraffic(3_333, 777);
    await sleep(600);
    await readWant();
    await waitHttpExact('HTTP records after the collector restart');
    await waitProm(
      'Prometheus after the collector restart',
      [M.webCache, M.cacheWeb, M.v6ab, M.v6ba],
      [
        want.webCache - before.webCache,
        want.cacheWeb - before.cacheWeb,
        want.v6ab - before.v6ab,
        want.v6ba - before.v6ba,
      ],
    );
    // And it stays so.
    await sleep(2_500);
    expect(httpTotals()).toEqual(want);
    expect(await c.q(`sum(${M.webCache})`)).toBe(want.webCache - before.webCache);
  }, 60_000);
});
