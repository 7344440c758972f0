// A three-node cluster end to end (test/helpers/cluster.ts): nodes are network namespaces running real
// `podflow collector`s that take their pods from the test API server, pods are namespaces of their
// own routed through their node, and the control namespace runs `podflow exporter`, a real Prometheus
// and the HTTP sink's way to a real receiver. Pod-to-pod traffic of known sizes across nodes and
// zones must show up with pod, workload, node and zone labels, byte for byte what the nodes' conntrack
// counted, in Prometheus and in the HTTP records, and once: both nodes route (and track) the
// connection, each collector reports only its own pod's side. A third node shares node-a's zone:
// traffic between those two nodes is cross-node but not cross-zone. All three are in one region and
// carry an AWS providerID: --cloud auto prices the traffic with the AWS preset, checked through
// Prometheus against the bytes conntrack counted. A DNS server in a pod stands in for CoreDNS: a pod
// resolves the names of hosts outside the cluster (behind node-a's masquerade) before it talks to
// them, and node-a's collector names those peers by the names asked (`dst_dns_name`).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster, txOf } from './helpers/cluster.js';
import { requireRoot, runClient, startServer } from './helpers/netns.js';

const root = requireRoot();

const WEB = '10.244.1.5';
const DB = '10.244.2.7';
const QUEUE = '10.244.3.9';
const COREDNS = '10.244.2.53';
// Hosts on the internet as far as podflow can tell (documentation range, behind node-a), named by
// the cluster's DNS server only.
const API_HOST = '203.0.113.10';
const FILES_HOST = '203.0.113.11';

describe.skipIf(!root)('three-node cluster end to end', () => {
  const c = new Cluster({
    nodes: [
      {
        name: 'node-a',
        zone: 'zone-a',
        region: 'region-1',
        ip: '10.250.0.2',
        podCidrs: ['10.244.1.0/24'],
        pods: [{ name: 'web-5f7c9-x1', namespace: 'shop', workload: 'Deployment/web', ips: [WEB] }],
      },
      {
        name: 'node-b',
        zone: 'zone-b',
        region: 'region-1',
        ip: '10.250.0.3',
        podCidrs: ['10.244.2.0/24'],
        pods: [
          { name: 'db-0', namespace: 'shop', workload: 'StatefulSet/db', ips: [DB] },
          {
            name: 'coredns-5d78c-k8dns',
            namespace: 'kube-system',
            workload: 'Deployment/coredns',
            ips: [COREDNS],
          },
        ],
      },
      {
        name: 'node-c',
        zone: 'zone-a',
        region: 'region-1',
        ip: '10.250.0.4',
        podCidrs: ['10.244.3.0/24'],
        pods: [{ name: 'queue-7d9f8-q2', namespace: 'jobs', workload: 'Deployment/queue', ips: [QUEUE] }],
      },
    ],
    publicHost: { ip: API_HOST, via: 'node-a', nodeIp: '203.0.113.1' },
    dns: {
      pod: 'coredns-5d78c-k8dns',
      // TTL 0 (dnsmasq's default for its own records): the name lasts --dns-grace (60 s).
      records: [`host-record=api.partner.test,${API_HOST}`, `host-record=files.partner.test,${FILES_HOST}`],
    },
    // Prometheus asks for gzip: every scrape below goes through the compressed /metrics.
    exporterArgs: ['--metrics-gzip'],
  });

  beforeAll(() => c.start(), 60_000);
  afterAll(() => c.close());

  it('pod-to-pod traffic across zones, labelled and counted exactly once per direction', async () => {
    const db = c.ns('db-0');
    const [tcp, udp] = await Promise.all([startServer(db, 'tcp', DB), startServer(db, 'udp', DB)]);
    const web = c.ns('web-5f7c9-x1');
    const results = await Promise.all([
      runClient(web, 'tcp', DB, tcp.port, { send: 20_000, receive: 3_000, count: 4 }),
      runClient(web, 'udp', DB, udp.port, { send: 700, receive: 1_500, count: 3 }),
    ]);
    for (const r of results) expect(r.failed).toBe(0);
    await new Promise((r) => setTimeout(r, 1000));
    const aSent = await c.sentBy('node-a', WEB, DB);
    const bSent = await c.sentBy('node-b', DB, WEB);
    expect(aSent).toBeGreaterThan(4 * 20_000 + 3 * 700);
    expect(bSent).toBeGreaterThan(4 * 3_000 + 3 * 1_500);
    // Both nodes routed every packet of these connections, so both collectors read them: what each
    // reports must be its own pod's side only.
    expect(await c.sentBy('node-b', WEB, DB)).toBe(aSent);
    expect(await c.sentBy('node-a', DB, WEB)).toBe(bSent);

    const fromA = 'podflow_transmit_bytes_total{src_pod="web-5f7c9-x1",dst_pod="db-0"}';
    const fromB = 'podflow_transmit_bytes_total{src_pod="db-0",dst_pod="web-5f7c9-x1"}';
    const now = async () => `${await c.q(`sum(${fromA})`)}/${await c.q(`sum(${fromB})`)}`;
    await c.waitFor(
      'Prometheus to see both directions',
      async () => ((await now()) === `${aSent}/${bSent}` ? true : undefined),
      45_000,
      async () => `${await now()}, want ${aSent}/${bSent}`,
    );
    // What A sent, B received: the two nodes agree, and each byte appears once per direction.
    expect(await c.q('sum(podflow_received_bytes_total{src_pod="db-0",dst_pod="web-5f7c9-x1"})')).toBe(aSent);
    expect(await c.q('sum(podflow_received_bytes_total{src_pod="web-5f7c9-x1",dst_pod="db-0"})')).toBe(bSent);
    // Summed over every series of the pair, transmit is the traffic volume once: a collector that
    // also reported the other node's pod as its own would add it a second time.
    const pair = '{src_pod=~"web-5f7c9-x1|db-0",dst_pod=~"web-5f7c9-x1|db-0"}';
    expect(await c.q(`sum(podflow_transmit_bytes_total${pair})`)).toBe(aSent + bSent);
    expect(await c.q(`sum(podflow_received_bytes_total${pair})`)).toBe(aSent + bSent);

    const series = await c.prom.query(fromA);
    const labels = series.map((s) => s.metric);
    expect(labels.map((l) => l.proto).sort()).toEqual(['TCP', 'UDP']);
    for (const l of labels) {
      expect(l).toMatchObject({
        src_namespace: 'shop',
        src_workload: 'Deployment/web',
        src_node: 'node-a',
        src_zone: 'zone-a',
        dst_namespace: 'shop',
        dst_workload: 'StatefulSet/db',
        dst_node: 'node-b',
        dst_zone: 'zone-b',
        src_region: 'region-1',
        dst_region: 'region-1',
        dst_type: 'pod',
        traffic_class: 'cross-zone',
        cross_zone: 'true',
      });
    }
    // The cost of the pair: each side's tx at the AWS preset's cross-zone price (0.02 per GiB).
    const cost = await c.q(`sum(podflow_traffic_cost_total${pair})`);
    const want = ((aSent + bSent) / 2 ** 30) * 0.02;
    expect(cost).toBeGreaterThan(0);
    expect(Math.abs(cost - want) / want).toBeLessThan(1e-9);
    expect(await c.q(`count(podflow_traffic_cost_total${pair})`)).toBe(4);
    expect(await c.q('sum(podflow_exporter_pulls_total)')).toBeGreaterThan(0);
    const { stdout: head } = await c.ctl.exec('curl', [
      '-s',
      '-D',
      '-',
      '-o',
      '/dev/null',
      '-H',
      'Accept-Encoding: gzip',
      'http://127.0.0.1:9471/metrics',
    ]);
    expect(head.toLowerCase()).toContain('content-encoding: gzip');
    expect(await c.q('count(podflow_exporter_pulls_total)')).toBe(3);

    // The HTTP log sink: the same bytes, once per Idempotency-Key, as records with the same labels.
    const http = () => {
      const recs = c.deliveredRecords();
      return `${txOf(recs, 'web-5f7c9-x1', 'db-0')}/${txOf(recs, 'db-0', 'web-5f7c9-x1')}`;
    };
    await c.waitFor(
      'HTTP records',
      async () => (http() === `${aSent}/${bSent}` ? true : undefined),
      45_000,
      () => `${http()}, want ${aSent}/${bSent}`,
    );
    const recs = c.deliveredRecords();
    const rxOfA = recs
      .filter((r) => r.src_pod === 'web-5f7c9-x1' && r.dst_pod === 'db-0')
      .reduce((a, r) => a + Number(r.rx_bytes), 0);
    expect(rxOfA).toBe(bSent);
    const rec = recs.find((r) => r.src_pod === 'db-0')!;
    expect(rec).toMatchObject({
      src_ip: DB,
      dst_ip: WEB,
      src_workload: 'StatefulSet/db',
      src_node: 'node-b',
      dst_workload: 'Deployment/web',
      dst_node: 'node-a',
      src_region: 'region-1',
      dst_region: 'region-1',
      traffic_class: 'cross-zone',
      cross_zone: true,
    });
    const recCost = recs
      .filter((r) => r.src_pod === 'db-0' && r.dst_pod === 'web-5f7c9-x1')
      .reduce((a, r) => a + Number(r.cost), 0);
    expect(Math.abs(recCost - (bSent / 2 ** 30) * 0.02) / recCost).toBeLessThan(1e-9);
  }, 120_000);

  it('pods on two nodes of one zone: cross-node, not cross-zone, counted once', async () => {
    const queue = c.ns('queue-7d9f8-q2');
    const tcp = await startServer(queue, 'tcp', QUEUE);
    const r = await runClient(c.ns('web-5f7c9-x1'), 'tcp', QUEUE, tcp.port, {
      send: 6_543,
      receive: 2_100,
      count: 3,
    });
    expect(r).toMatchObject({ failed: 0, connections: 3 });
    await new Promise((res) => setTimeout(res, 1000));
    const aSent = await c.sentBy('node-a', WEB, QUEUE);
    const cSent = await c.sentBy('node-c', QUEUE, WEB);
    expect(aSent).toBeGreaterThan(3 * 6_543);
    expect(cSent).toBeGreaterThan(3 * 2_100);
    expect(await c.sentBy('node-c', WEB, QUEUE)).toBe(aSent);

    const pair = '{src_pod=~"web-5f7c9-x1|queue-7d9f8-q2",dst_pod=~"web-5f7c9-x1|queue-7d9f8-q2"}';
    const now = async () =>
      [
        await c.q('sum(podflow_transmit_bytes_total{src_pod="web-5f7c9-x1",dst_pod="queue-7d9f8-q2"})'),
        await c.q('sum(podflow_transmit_bytes_total{src_pod="queue-7d9f8-q2",dst_pod="web-5f7c9-x1"})'),
        await c.q(`sum(podflow_transmit_bytes_total${pair})`),
      ].join('/');
    const want = `${aSent}/${cSent}/${aSent + cSent}`;
    await c.waitFor(
      'Prometheus to see the same-zone pair',
      async () => ((await now()) === want ? true : undefined),
      45_000,
      async () => `${await now()}, want ${want}`,
    );
    const series = await c.prom.query(`podflow_transmit_bytes_total${pair}`);
    expect(series.map((s) => `${s.metric.src_node}>${s.metric.dst_node}`).sort()).toEqual([
      'node-a>node-c',
      'node-c>node-a',
    ]);
    for (const s of series) {
      expect(s.metric).toMatchObject({
        src_zone: 'zone-a',
        dst_zone: 'zone-a',
        dst_type: 'pod',
        traffic_class: 'same-zone',
        cross_zone: 'false',
      });
    }
    // Same zone: free in every preset.
    expect(await c.q(`count(podflow_traffic_cost_total${pair})`)).toBe(2);
    expect(await c.q(`sum(podflow_traffic_cost_total${pair})`)).toBe(0);
    expect(series.find((s) => s.metric.src_pod === 'queue-7d9f8-q2')!.metric).toMatchObject({
      src_namespace: 'jobs',
      src_workload: 'Deployment/queue',
      dst_workload: 'Deployment/web',
    });
  }, 60_000);

  it('peers outside the cluster named by what the pod resolved first (UDP and TCP lookups)', async () => {
    const pub = c.ns('public');
    await pub.addAddress('eth0', `${FILES_HOST}/32`);
    const [tcp, udp] = await Promise.all([
      startServer(pub, 'tcp', API_HOST),
      startServer(pub, 'udp', FILES_HOST),
    ]);
    // As an application does: look the name up, then connect to the address it got.
    expect(await c.resolve('web-5f7c9-x1', 'api.partner.test')).toEqual([API_HOST]);
    expect(await c.resolve('web-5f7c9-x1', 'files.partner.test', { transport: 'tcp' })).toEqual([FILES_HOST]);
    const web = c.ns('web-5f7c9-x1');
    const results = await Promise.all([
      runClient(web, 'tcp', API_HOST, tcp.port, { send: 4_321, receive: 12_000, count: 2 }),
      runClient(web, 'udp', FILES_HOST, udp.port, { send: 900, receive: 1_400, count: 3 }),
    ]);
    for (const r of results) expect(r.failed).toBe(0);
    await new Promise((r) => setTimeout(r, 1000));
    const toApi = await c.sentBy('node-a', WEB, API_HOST);
    const toFiles = await c.sentBy('node-a', WEB, FILES_HOST);
    expect(toApi).toBeGreaterThan(2 * 4_321);
    expect(toFiles).toBeGreaterThan(3 * 900);

    const api = 'podflow_transmit_bytes_total{src_pod="web-5f7c9-x1",dst_dns_name="api.partner.test"}';
    const files = 'podflow_transmit_bytes_total{src_pod="web-5f7c9-x1",dst_dns_name="files.partner.test"}';
    const now = async () => `${await c.q(`sum(${api})`)}/${await c.q(`sum(${files})`)}`;
    await c.waitFor(
      'Prometheus to see the named peers',
      async () => ((await now()) === `${toApi}/${toFiles}` ? true : undefined),
      30_000,
      async () => `${await now()}, want ${toApi}/${toFiles}`,
    );
    const series = await c.prom.query(
      `podflow_transmit_bytes_total{src_pod="web-5f7c9-x1",dst_type="public"}`,
    );
    expect(series.map((s) => `${s.metric.proto} ${s.metric.dst_ip} ${s.metric.dst_dns_name}`).sort()).toEqual(
      [`TCP ${API_HOST} api.partner.test`, `UDP ${FILES_HOST} files.partner.test`],
    );

    // The HTTP records: every one to these hosts carries the name, the bytes are conntrack's.
    const named = (host: string, name: string) => {
      const recs = c.deliveredRecords().filter((r) => r.src_pod === 'web-5f7c9-x1' && r.dst_ip === host);
      const bytes = recs.filter((r) => r.dst_dns_name === name).reduce((a, r) => a + Number(r.tx_bytes), 0);
      return `${recs.length > 0 && recs.every((r) => r.dst_dns_name === name)}/${bytes}`;
    };
    const http = () => `${named(API_HOST, 'api.partner.test')} ${named(FILES_HOST, 'files.partner.test')}`;
    await c.waitFor(
      'HTTP records with the names',
      async () => (http() === `true/${toApi} true/${toFiles}` ? true : undefined),
      30_000,
      () => `${http()}, want true/${toApi} true/${toFiles}`,
    );
    await Promise.all([tcp.stop(), udp.stop()]);
  }, 60_000);
});
