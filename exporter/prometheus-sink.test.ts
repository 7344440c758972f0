import { execFile } from 'node:child_process';
import { request } from 'node:http';
import { Counter, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { FLOW_LABELS, type FlowLabel } from '../shared/config.js';
import type { EnrichedFlow } from '../shared/flow.js';
import { HttpServer, metricsText } from '../shared/http.js';
import { silentLogger } from '../shared/log.js';
import { ManualClock } from '../test/fixtures/clock.js';
import { enriched, toInternet } from '../test/fixtures/flows.js';
import { Enricher, emptyClusterLookup } from './enrich.js';
import { OVERFLOW, PrometheusSink, type PrometheusSinkConfig } from './prometheus-sink.js';

const base = enriched();
const web2 = enriched({ srcIp: '10.0.1.6', srcPod: 'web-2', txBytes: 50, rxBytes: 7, cost: 0.125 });
const pub = enriched({
  ...toInternet,
  dstIp: '8.8.8.8',
  proto: 'UDP',
  txBytes: 60,
  rxBytes: 61,
  txPackets: 1,
  rxPackets: 1,
  cost: 0.5,
});

const config = (over: Partial<PrometheusSinkConfig> = {}): PrometheusSinkConfig => ({
  metricsPrefix: 'podflow',
  metricsLabels: [...FLOW_LABELS],
  metricsTtl: 600_000,
  metricsPodIps: false,
  ...over,
});

/** One counter's block of the /metrics text, without the trailing newline. */
async function block(registry: Registry, sink: PrometheusSink, name: string): Promise<string> {
  const text = await metricsText(registry, sink);
  const start = text.indexOf(`# HELP ${name} `);
  if (start < 0) return '';
  const end = text.indexOf('\n\n', start);
  return text.slice(start, end < 0 ? undefined : end).trimEnd();
}

async function render(cfg: PrometheusSinkConfig, pushes: EnrichedFlow[][], name: string): Promise<string> {
  const registry = new Registry();
  const sink = new PrometheusSink(cfg, { registry }, new ManualClock(1000));
  for (const p of pushes) await sink.push(p);
  return block(registry, sink, name);
}

const HELP_TX =
  '# HELP podflow_transmit_bytes_total Bytes sent by the local endpoint (src) to the peer (dst)\n# TYPE podflow_transmit_bytes_total counter\n';

describe('PrometheusSink text', () => {
  const cases: [string, PrometheusSinkConfig, EnrichedFlow[][], string, string][] = [
    [
      'all labels; pod peer has no dst_ip',
      config(),
      [[base]],
      'podflow_transmit_bytes_total',
      `${HELP_TX}podflow_transmit_bytes_total{src_namespace="shop",src_pod="web-1",src_workload="Deployment/web",src_node="node-a",src_zone="zone-a",src_region="region-1",dst_namespace="shop",dst_pod="db-0",dst_workload="StatefulSet/db",dst_node="node-b",dst_zone="zone-b",dst_region="region-1",dst_ip="",dst_dns_name="",dst_type="pod",traffic_class="cross-zone",cross_zone="true",proto="TCP"} 100`,
    ],
    [
      'metrics-pod-ips fills dst_ip for pods',
      config({ metricsLabels: ['dst_pod', 'dst_ip'], metricsPodIps: true }),
      [[base]],
      'podflow_transmit_bytes_total',
      `${HELP_TX}podflow_transmit_bytes_total{dst_pod="db-0",dst_ip="10.0.2.7"} 100`,
    ],
    [
      'public peers carry dst_ip',
      config({ metricsLabels: ['dst_ip', 'dst_type', 'proto'] }),
      [[pub]],
      'podflow_transmit_bytes_total',
      `${HELP_TX}podflow_transmit_bytes_total{dst_ip="8.8.8.8",dst_type="public",proto="UDP"} 60`,
    ],
    [
      'dropped labels aggregate series (two pods of one workload)',
      config({ metricsLabels: ['src_workload', 'dst_workload'] }),
      [[base, web2]],
      'podflow_transmit_bytes_total',
      `${HELP_TX}podflow_transmit_bytes_total{src_workload="Deployment/web",dst_workload="StatefulSet/db"} 150`,
    ],
    [
      'counters add up over pushes',
      config({ metricsLabels: ['src_pod'] }),
      [[base], [base, web2], [base]],
      'podflow_received_bytes_total',
      '# HELP podflow_received_bytes_total Bytes received by the local endpoint (src) from the peer (dst)\n# TYPE podflow_received_bytes_total counter\npodflow_received_bytes_total{src_pod="web-1"} 3000\npodflow_received_bytes_total{src_pod="web-2"} 7',
    ],
    [
      'packet counters',
      config({ metricsLabels: ['cross_zone'] }),
      [[base, pub]],
      'podflow_received_packets_total',
      '# HELP podflow_received_packets_total Packets received by the local endpoint (src) from the peer (dst)\n# TYPE podflow_received_packets_total counter\npodflow_received_packets_total{cross_zone="true"} 3\npodflow_received_packets_total{cross_zone="false"} 1',
    ],
    [
      'egressd names and labels: dst_ip always, dst_ip_type by address, src_ip',
      config({ metricsPrefix: 'egressd' }),
      [[base, pub]],
      'egressd_transmit_bytes_total',
      '# HELP egressd_transmit_bytes_total Bytes sent by the local endpoint (src) to the peer (dst)\n# TYPE egressd_transmit_bytes_total counter\negressd_transmit_bytes_total{cross_zone="true",dst_ip="10.0.2.7",dst_ip_type="private",dst_namespace="shop",dst_node="node-b",dst_pod="db-0",dst_zone="zone-b",proto="TCP",src_ip="10.0.1.5",src_namespace="shop",src_node="node-a",src_pod="web-1",src_zone="zone-a"} 100\negressd_transmit_bytes_total{cross_zone="false",dst_ip="8.8.8.8",dst_ip_type="public",dst_namespace="",dst_node="",dst_pod="",dst_zone="",proto="UDP",src_ip="10.0.1.5",src_namespace="shop",src_node="node-a",src_pod="web-1",src_zone="zone-a"} 60',
    ],
    [
      'egressd received bytes',
      config({ metricsPrefix: 'egressd' }),
      [[pub]],
      'egressd_received_bytes_total',
      '# HELP egressd_received_bytes_total Bytes received by the local endpoint (src) from the peer (dst)\n# TYPE egressd_received_bytes_total counter\negressd_received_bytes_total{cross_zone="false",dst_ip="8.8.8.8",dst_ip_type="public",dst_namespace="",dst_node="",dst_pod="",dst_zone="",proto="UDP",src_ip="10.0.1.5",src_namespace="shop",src_node="node-a",src_pod="web-1",src_zone="zone-a"} 61',
    ],
    [
      'the cost counter, by traffic class',
      config({ metricsLabels: ['traffic_class'] }),
      [[base, web2, pub], [pub]],
      'podflow_traffic_cost_total',
      '# HELP podflow_traffic_cost_total Cost of the bytes of the series under the price table (--cloud, --prices), USD\n# TYPE podflow_traffic_cost_total counter\npodflow_traffic_cost_total{traffic_class="cross-zone"} 0.375\npodflow_traffic_cost_total{traffic_class="internet"} 1',
    ],
    [
      'regions and classes are labels like the others, kept or cut by --metrics-labels',
      config({ metricsLabels: ['src_region', 'dst_region', 'traffic_class'] }),
      [[base, web2, pub]],
      'podflow_transmit_bytes_total',
      `${HELP_TX}podflow_transmit_bytes_total{src_region="region-1",dst_region="region-1",traffic_class="cross-zone"} 150\npodflow_transmit_bytes_total{src_region="region-1",dst_region="",traffic_class="internet"} 60`,
    ],
    [
      'label values are escaped',
      config({ metricsLabels: ['src_pod'] }),
      [[{ ...base, srcPod: 'a"b\\c\nd' }]],
      'podflow_transmit_bytes_total',
      `${HELP_TX}podflow_transmit_bytes_total{src_pod="a\\"b\\\\c\\nd"} 100`,
    ],
  ];
  it.each(cases)('%s', async (_name, cfg, pushes, metric, want) => {
    expect(await render(cfg, pushes, metric)).toBe(want);
  });

  it('egressd mode has no packet counters', async () => {
    const registry = new Registry();
    const sink = new PrometheusSink(config({ metricsPrefix: 'egressd' }), { registry });
    await sink.push([base]);
    const names = (await metricsText(registry, sink)).match(/^# TYPE \S+/gm);
    // No cost counter and no new labels either: egressd's output is what egressd users have.
    expect(names).toEqual(['# TYPE egressd_transmit_bytes_total', '# TYPE egressd_received_bytes_total']);
    expect(await metricsText(registry, sink)).not.toMatch(/region|traffic_class|cost/);
  });

  // --group-public-ips on the collector: the peer arrives as 0.0.0.0 / ::, and is the internet.
  it('labels grouped public peers public, in podflow and egressd mode', async () => {
    const enricher = new Enricher(
      { groupPublicIps: false },
      { cluster: emptyClusterLookup, log: silentLogger },
    );
    const grouped = [
      enricher.enrich(
        // A name learned on the node stays with the grouped address: bytes per external service.
        {
          src: '10.0.1.5',
          dst: '0.0.0.0',
          proto: 6,
          txBytes: 10,
          rxBytes: 20,
          txPackets: 1,
          rxPackets: 1,
          dstName: 'api.example.com',
        },
        'node-a',
        0,
        5,
      ),
      enricher.enrich(
        { src: 'fd00::5', dst: '::', proto: 17, txBytes: 30, rxBytes: 40, txPackets: 1, rxPackets: 1 },
        'node-a',
        0,
        5,
      ),
    ];
    const egressd = await render(
      config({ metricsPrefix: 'egressd' }),
      [grouped],
      'egressd_transmit_bytes_total',
    );
    expect(egressd).toContain('dst_ip="0.0.0.0",dst_ip_type="public",');
    expect(egressd).toContain('dst_ip="::",dst_ip_type="public",');
    expect(egressd).not.toContain('dst_ip_type="private"');
    const podflow = await render(config(), [grouped], 'podflow_transmit_bytes_total');
    expect(podflow).toContain('dst_ip="0.0.0.0",dst_dns_name="api.example.com",dst_type="public",');
    expect(podflow).toContain('dst_ip="::",dst_dns_name="",dst_type="public",');
    expect(podflow).not.toContain('dst_type="private"');
  });

  it('counts flows numbered by the enrich stage exactly as the same flows without numbers', async () => {
    const pods = new Map([
      [
        '10.0.1.5',
        {
          kind: 'pod' as const,
          name: 'web-1',
          namespace: 'shop',
          workload: 'Deployment/web',
          node: 'node-a',
          zone: 'zone-a',
        },
      ],
      [
        '10.0.2.7',
        {
          kind: 'pod' as const,
          name: 'db-0',
          namespace: 'shop',
          workload: 'StatefulSet/db',
          node: 'node-b',
          zone: 'zone-b',
        },
      ],
    ]);
    const enricher = new Enricher(
      { groupPublicIps: false },
      {
        cluster: { ...emptyClusterLookup, lookup: (ip) => pods.get(ip), nodeRegion: () => 'region-1' },
        log: silentLogger,
      },
    );
    const f = (src: string, dst: string, txBytes: number, dstName?: string) => ({
      src,
      dst,
      proto: txBytes % 2 === 0 ? 6 : 17,
      txBytes,
      rxBytes: 2 * txBytes,
      txPackets: 1,
      rxPackets: 1,
      ...(dstName !== undefined ? { dstName } : {}),
    });
    const pushes: EnrichedFlow[][] = [];
    for (let round = 0; round < 3; round++) {
      const out: EnrichedFlow[] = [];
      const flows = [
        f('10.0.1.5', '10.0.2.7', 10),
        f('10.0.2.7', '10.0.1.5', 11),
        f('10.0.1.5', '8.8.8.8', 12),
        f('10.0.1.5', '8.8.8.8', 14, 'dns.google'),
        f('192.168.0.9', '10.0.2.7', 16), // not a pod: the collector's node is the src
        f('10.0.1.5', '172.16.0.1', 18),
      ];
      enricher.enrichBatch({ seq: round, from: 0, to: 5000, flows }, 'node-c', out);
      pushes.push(out);
    }
    expect(pushes[2][0].srcPeer).toBeTypeOf('number');
    const plain = pushes.map((p) => p.map(({ srcPeer, dstPeer, ...rest }) => rest));
    for (const cfg of [config(), config({ metricsPrefix: 'egressd' }), config({ metricsPodIps: true })]) {
      const name = `${cfg.metricsPrefix}_transmit_bytes_total`;
      const numbered = await render(cfg, pushes, name);
      expect(numbered).toBe(await render(cfg, plain, name));
      expect(numbered).toContain('dst_pod="db-0"');
    }
  });

  it('summing transmit over all series gives the volume once', async () => {
    const registry = new Registry();
    const sink = new PrometheusSink(config(), { registry });
    const flows = [base, web2, pub];
    await sink.push(flows);
    const lines = (await block(registry, sink, 'podflow_transmit_bytes_total')).split('\n').slice(2);
    expect(lines).toHaveLength(3);
    expect(lines.reduce((a, l) => a + Number(l.split(' ').pop()), 0)).toBe(210);
  });
});

describe('PrometheusSink TTL', () => {
  it('removes series not updated for metrics-ttl, keeps fresh ones', async () => {
    const registry = new Registry();
    const clock = new ManualClock(0);
    const labels: FlowLabel[] = ['src_pod'];
    const sink = new PrometheusSink(
      config({ metricsLabels: labels, metricsTtl: 60_000 }),
      { registry },
      clock,
    );
    await sink.push([base, web2]);
    clock.t = 30_000;
    await sink.push([base]);
    clock.t = 61_000; // web-2 last seen at 0: expired; web-1 at 30s: kept
    await sink.push([]);
    expect(sink.seriesCount).toBe(1);
    expect(await block(registry, sink, 'podflow_transmit_bytes_total')).toBe(
      `${HELP_TX}podflow_transmit_bytes_total{src_pod="web-1"} 200`,
    );
    clock.t = 200_000;
    sink.expire();
    expect(await block(registry, sink, 'podflow_transmit_packets_total')).toBe(
      '# HELP podflow_transmit_packets_total Packets sent by the local endpoint (src) to the peer (dst)\n# TYPE podflow_transmit_packets_total counter',
    );
  });

  it('metrics-ttl 0 keeps series forever', async () => {
    const registry = new Registry();
    const clock = new ManualClock(0);
    const sink = new PrometheusSink(config({ metricsTtl: 0 }), { registry }, clock);
    await sink.push([base]);
    clock.t = 10 ** 12;
    await sink.push([]);
    expect(sink.seriesCount).toBe(1);
  });
});

describe('PrometheusSink and the Registry', () => {
  it('appends the flow counters to the registry text, after the self-metrics', async () => {
    const registry = new Registry();
    new Counter({ name: 'podflow_exporter_x_total', help: 'x', registers: [registry] }).inc(2);
    const sink = new PrometheusSink(config({ metricsLabels: ['proto'] }), { registry });
    await sink.push([base]);
    const text = await metricsText(registry, sink);
    expect(
      text.startsWith(
        '# HELP podflow_exporter_x_total x\n# TYPE podflow_exporter_x_total counter\npodflow_exporter_x_total 2\n\n# HELP podflow_transmit_bytes_total',
      ),
    ).toBe(true);
    expect(text.endsWith('podflow_traffic_cost_total{proto="TCP"} 0.25\n')).toBe(true);
    expect(text).not.toContain('\n\n\n');
  });

  it('refuses a second flow sink on the same registry', () => {
    const registry = new Registry();
    new Counter({ name: 'podflow_transmit_bytes_total', help: 'x', registers: [registry] });
    expect(() => new PrometheusSink(config(), { registry })).toThrow(/already registered/);
  });
});

describe('PrometheusSink series identity', () => {
  it('keeps 200,000 series apart (hash collisions are chained) with exact totals', async () => {
    const registry = new Registry();
    const sink = new PrometheusSink(config({ metricsLabels: ['src_pod', 'dst_ip'] }), { registry });
    const flows: EnrichedFlow[] = [];
    for (let i = 0; i < 200_000; i++) {
      flows.push({ ...pub, srcPod: `p${i % 500}`, dstIp: `203.0.${i >> 8}.${i & 255}`, txBytes: i });
    }
    await sink.push(flows);
    await sink.push(flows);
    expect(sink.seriesCount).toBe(200_000);
    const text = await block(registry, sink, 'podflow_transmit_bytes_total');
    const lines = text.split('\n').slice(2);
    expect(lines).toHaveLength(200_000);
    const got = new Map(
      lines.map((l) => [l.slice(0, l.lastIndexOf(' ')), Number(l.slice(l.lastIndexOf(' ') + 1))]),
    );
    for (const i of [0, 1, 255, 256, 99_999, 199_999]) {
      const key = `podflow_transmit_bytes_total{src_pod="p${i % 500}",dst_ip="203.0.${i >> 8}.${i & 255}"}`;
      expect(got.get(key)).toBe(2 * i);
    }
    expect([...got.values()].reduce((a, v) => a + v, 0)).toBe(2 * ((199_999 * 200_000) / 2));
  });

  it('expiry moves live series over expired ones; escaped and non-ASCII values survive a multi-MB render', async () => {
    const registry = new Registry();
    const clock = new ManualClock(0);
    const sink = new PrometheusSink(
      config({ metricsLabels: ['src_pod', 'dst_namespace'], metricsTtl: 60_000 }),
      { registry },
      clock,
    );
    const pod = (i: number) => `pod-ü-"${i}"\\x`;
    const flows = (pick: (i: number) => boolean, tx: (i: number) => number) =>
      Array.from({ length: 30_000 }, (_, i) => i)
        .filter(pick)
        .map((i) => ({ ...base, srcPod: pod(i), dstNamespace: 'ns-€', txBytes: tx(i) }));
    await sink.push(
      flows(
        () => true,
        (i) => i,
      ),
    );
    clock.t = 30_000;
    await sink.push(
      flows(
        (i) => i % 3 === 0,
        () => 1,
      ),
    );
    clock.t = 61_000;
    await sink.push([]);
    expect(sink.seriesCount).toBe(10_000);
    await sink.push(
      flows(
        (i) => i % 3 === 0,
        () => 2,
      ),
    );
    expect(sink.seriesCount).toBe(10_000);
    const text = await block(registry, sink, 'podflow_transmit_bytes_total');
    expect(Buffer.byteLength(await metricsText(registry, sink))).toBeGreaterThan(2 << 20);
    const lines = text.split('\n').slice(2);
    expect(lines).toHaveLength(10_000);
    const got = new Map(
      lines.map((l) => [l.slice(0, l.lastIndexOf(' ')), Number(l.slice(l.lastIndexOf(' ') + 1))]),
    );
    for (let i = 0; i < 30_000; i += 3) {
      const key = `podflow_transmit_bytes_total{src_pod="pod-ü-\\"${i}\\"\\\\x",dst_namespace="ns-€"}`;
      expect(got.get(key)).toBe(i + 3);
    }
  });

  it('re-interns label values after churn and still finds and counts series', async () => {
    const registry = new Registry();
    const clock = new ManualClock(0);
    const sink = new PrometheusSink(
      config({ metricsLabels: ['src_pod'], metricsTtl: 60_000 }),
      { registry },
      clock,
    );
    await sink.push(Array.from({ length: 5000 }, (_, i) => ({ ...base, srcPod: `old-${i}`, txBytes: 1 })));
    clock.t = 61_000;
    const fresh = Array.from({ length: 10 }, (_, i) => ({ ...base, srcPod: `new-${i}`, txBytes: i }));
    await sink.push(fresh);
    expect(sink.seriesCount).toBe(10);
    await sink.push(fresh);
    await sink.push([{ ...base, srcPod: 'old-7', txBytes: 5 }]);
    expect(sink.seriesCount).toBe(11);
    const lines = (await block(registry, sink, 'podflow_transmit_bytes_total')).split('\n').slice(2).sort();
    expect(lines).toEqual(
      [
        ...Array.from({ length: 10 }, (_, i) => `podflow_transmit_bytes_total{src_pod="new-${i}"} ${2 * i}`),
        'podflow_transmit_bytes_total{src_pod="old-7"} 5',
      ].sort(),
    );
  });
});

describe('PrometheusSink with numbered endpoints', () => {
  it('forgets what it remembered by number when label values are re-interned', async () => {
    const registry = new Registry();
    const clock = new ManualClock(0);
    const sink = new PrometheusSink(
      config({ metricsLabels: ['src_namespace', 'src_pod', 'dst_namespace', 'dst_pod'], metricsTtl: 60_000 }),
      { registry },
      clock,
    );
    const flow = (pod: string, peer: number, txBytes: number): EnrichedFlow => ({
      ...base,
      srcPod: pod,
      srcPeer: peer,
      dstPeer: 1,
      txBytes,
    });
    await sink.push(Array.from({ length: 5000 }, (_, i) => flow(`old-${i}`, 1000 + i, 1)));
    clock.t = 61_000;
    const fresh = Array.from({ length: 10 }, (_, i) => flow(`new-${i}`, 10 + i, i));
    await sink.push(fresh);
    await sink.push(fresh);
    // Its number was remembered with the ids before the renumbering.
    await sink.push([flow('old-7', 1007, 5)]);
    expect(sink.seriesCount).toBe(11);
    const lines = (await block(registry, sink, 'podflow_transmit_bytes_total')).split('\n').slice(2).sort();
    const line = (pod: string, n: number) =>
      `podflow_transmit_bytes_total{src_namespace="shop",src_pod="${pod}",dst_namespace="shop",dst_pod="db-0"} ${n}`;
    expect(lines).toEqual(
      [...Array.from({ length: 10 }, (_, i) => line(`new-${i}`, 2 * i)), line('old-7', 5)].sort(),
    );
  });
});

describe('PrometheusSink series limit', () => {
  it('sums flows of series beyond the limit into one _overflow_ series, totals exact', async () => {
    const registry = new Registry();
    const { ExporterMetrics } = await import('./metrics.js');
    const metrics = new ExporterMetrics(registry);
    const sink = new PrometheusSink(config({ metricsLabels: ['src_pod', 'proto'], maxSeries: 2 }), {
      registry,
      metrics,
    });
    const flows = [1, 2, 3, 4].map((i) => ({ ...base, srcPod: `p${i}`, txBytes: i * 10 }));
    await sink.push(flows);
    await sink.push([{ ...base, srcPod: 'p1', txBytes: 1 }]);
    expect(sink.seriesCount).toBe(2);
    expect(await block(registry, sink, 'podflow_transmit_bytes_total')).toBe(
      `${HELP_TX}podflow_transmit_bytes_total{src_pod="p1",proto="TCP"} 11\npodflow_transmit_bytes_total{src_pod="p2",proto="TCP"} 20\npodflow_transmit_bytes_total{src_pod="_overflow_",proto="_overflow_"} 70`,
    );
    // Cost too: 4 × 0.25 from the flows above, 0.25 in p1's series, 0.5 in p2's, 0.25 in the overflow.
    expect(await block(registry, sink, 'podflow_traffic_cost_total')).toContain(
      'podflow_traffic_cost_total{src_pod="p1",proto="TCP"} 0.5\npodflow_traffic_cost_total{src_pod="p2",proto="TCP"} 0.25\npodflow_traffic_cost_total{src_pod="_overflow_",proto="_overflow_"} 0.5',
    );
    expect(await registry.getSingleMetricAsString('podflow_exporter_flow_series_overflow_total')).toContain(
      'podflow_exporter_flow_series_overflow_total 2',
    );
  });
});

describe('PrometheusSink series limit with numbered endpoints', () => {
  it('at the limit, flows numbered by the enrich stage count exactly as the same flows without numbers, endpoints of equal labels alike', async () => {
    // 40 pods of two workloads on two nodes; peers: those pods, public and private addresses.
    const pods = new Map(
      Array.from({ length: 40 }, (_, i) => [
        `10.0.${i >> 4}.${(i & 15) + 10}`,
        {
          kind: 'pod' as const,
          name: `app-${i % 2}-${i}`,
          namespace: 'shop',
          workload: `Deployment/app-${i % 2}`,
          node: `node-${i % 2}`,
          zone: `zone-${i % 2}`,
        },
      ]),
    );
    const enricher = new Enricher(
      { groupPublicIps: false },
      {
        cluster: { ...emptyClusterLookup, lookup: (ip) => pods.get(ip), nodeRegion: () => 'region-1' },
        log: silentLogger,
      },
    );
    const ips = [...pods.keys()];
    const pushes: EnrichedFlow[][] = [];
    for (let round = 0; round < 3; round++) {
      const flows = [];
      for (let i = 0; i < 400; i++) {
        const dst =
          i % 5 === 0 ? `203.0.113.${i % 50}` : i % 7 === 0 ? `172.20.0.${i % 9}` : ips[(i * 7) % 40];
        flows.push({
          src: ips[i % 40],
          dst,
          proto: i % 3 === 0 ? 17 : 6,
          txBytes: 1000 + i + round,
          rxBytes: 7 * i,
          txPackets: 1,
          rxPackets: 2,
          ...(i % 11 === 0 ? { dstName: `n${i % 4}.example.com` } : {}),
        });
      }
      const out: EnrichedFlow[] = [];
      enricher.enrichBatch({ seq: round, from: 0, to: 5000, flows }, 'node-0', out);
      pushes.push(out);
    }
    const plain = pushes.map((p) => p.map(({ srcPeer, dstPeer, ...rest }) => rest));
    // Workload labels: many endpoints (every pod of a workload, every public address) share their
    // labels; with all labels, endpoints are told apart. Limits below and above what the flows need.
    for (const metricsLabels of [
      ['src_workload', 'src_zone', 'dst_workload', 'dst_type', 'proto'] as FlowLabel[],
      [...FLOW_LABELS],
    ]) {
      const unlimited = await render(config({ metricsLabels }), plain, 'podflow_transmit_bytes_total');
      const series = unlimited.split('\n').length - 2;
      expect(series).toBeGreaterThan(6);
      for (const maxSeries of [3, Math.floor(series / 2), series]) {
        const cfg = config({ metricsLabels, maxSeries });
        const numbered = await render(cfg, pushes, 'podflow_transmit_bytes_total');
        expect(numbered).toBe(await render(cfg, plain, 'podflow_transmit_bytes_total'));
        expect(numbered.includes('_overflow_')).toBe(maxSeries < series);
      }
    }
  });
});

describe('PrometheusSink --cluster-name', () => {
  it('puts cluster first on every series, the overflow series too, whatever the labels kept', async () => {
    const registry = new Registry();
    const sink = new PrometheusSink(
      config({ metricsLabels: ['src_pod', 'proto'], maxSeries: 1, clusterName: 'prod-"eu"' }),
      { registry },
    );
    await sink.push([base, web2]);
    expect(await block(registry, sink, 'podflow_transmit_bytes_total')).toBe(
      `${HELP_TX}podflow_transmit_bytes_total{cluster="prod-\\"eu\\"",src_pod="web-1",proto="TCP"} 100\npodflow_transmit_bytes_total{cluster="prod-\\"eu\\"",src_pod="_overflow_",proto="_overflow_"} 50`,
    );
    // Chunked (what /metrics serves) is the same text.
    expect(chunked(sink, '', 64).toString()).toBe(sink.render());
  });

  it('the totals pushed to remote write and OTLP carry it first too; NDJSON records as a field', async () => {
    const sink = new PrometheusSink(config({ metricsLabels: ['src_pod'], clusterName: 'c1' }), {
      registry: new Registry(),
    });
    await sink.push([base, web2]);
    const t = sink.totals();
    expect(t.labels).toEqual(['cluster', 'src_pod']);
    const series = Array.from({ length: t.count }, (_, s) =>
      t.labels.map((_, j) => t.values[j][t.ids[s * t.labels.length + j]]),
    );
    expect(series).toEqual([
      ['c1', 'web-1'],
      ['c1', 'web-2'],
    ]);
    const { ndjson } = await import('./encodings.js');
    const line = ndjson({ cluster: 'c1', fields: { env: 'x' } }).encode([base]) as string;
    expect(Object.keys(JSON.parse(line)).slice(0, 5)).toEqual([
      'env',
      'ts',
      'interval_seconds',
      'cluster',
      'src_ip',
    ]);
    expect(ndjson().encode([base])).not.toContain('cluster');
  });

  it('egressd mode carries it too; without it no cluster label at all', async () => {
    const egressd = await render(
      config({ metricsPrefix: 'egressd', clusterName: 'c1' }),
      [[base]],
      'egressd_transmit_bytes_total',
    );
    expect(egressd.split('\n')[2]).toMatch(/^egressd_transmit_bytes_total\{cluster="c1",cross_zone="true",/);
    expect(await render(config(), [[base]], 'podflow_transmit_bytes_total')).not.toContain('cluster=');
  });
});

/** All chunks of a response joined, made through two reused buffers of `size` bytes. */
function chunked(sink: PrometheusSink, head: string, size: number, into = true): Buffer {
  const text = sink.chunks(head, size);
  const bufs = [Buffer.alloc(size), Buffer.alloc(size)];
  const parts: Buffer[] = [];
  for (let i = 0; ; i++) {
    const c = text.next(into ? bufs[i & 1] : undefined);
    if (c === undefined) return Buffer.concat(parts);
    expect(c.length).toBeGreaterThan(0);
    // Whole lines only, so that a chunk never ends inside a UTF-8 character.
    expect(c[c.length - 1]).toBe(10);
    parts.push(Buffer.from(c));
  }
}

/** Series with escaped, non-ASCII and long label values, and the overflow series. */
async function awkwardSink(registry = new Registry()) {
  const sink = new PrometheusSink(config({ maxSeries: 2_000 }), { registry }, new ManualClock(1000));
  const flows: EnrichedFlow[] = [];
  for (let i = 0; i < 2_500; i++) {
    flows.push({
      ...base,
      srcPod: i % 7 === 0 ? `pod-ü-"${i}"\\x\n` : `web-${i}`,
      dstNamespace: i === 5 ? 'n'.repeat(3000) : 'ns-€',
      txBytes: i * 1e9,
      rxBytes: i === 7 ? 2 ** 60 : i,
    });
  }
  await sink.push(flows);
  return sink;
}

describe('PrometheusSink text in chunks', () => {
  it('chunks of any size join to the rendered text; a line longer than a chunk comes whole', async () => {
    const sink = await awkwardSink();
    const text = sink.render('# HELP x_total x\n# TYPE x_total counter\nx_total 1');
    expect(text).toContain(`src_pod="pod-ü-\\"7\\"\\\\x\\n"`);
    expect(text).toContain(`{${FLOW_LABELS.map((l) => `${l}="${OVERFLOW}"`).join(',')}} `);
    expect(text).toContain(` ${2 ** 60}\n`);
    expect(text).toContain(` ${7e9}\n`);
    for (const size of [64, 1000, 4096, 256 << 10]) {
      expect(chunked(sink, '# HELP x_total x\n# TYPE x_total counter\nx_total 1', size).toString()).toBe(
        text,
      );
    }
    expect(chunked(sink, '', 4096, false).toString()).toBe(sink.render());
    const egressd = new PrometheusSink(config({ metricsPrefix: 'egressd' }), { registry: new Registry() });
    await egressd.push([base, web2, pub]);
    const e = egressd.render();
    expect(e).toContain(
      'egressd_received_bytes_total{cross_zone="false",dst_ip="8.8.8.8",dst_ip_type="public",',
    );
    expect(chunked(egressd, '', 64).toString()).toBe(e);
  });

  it('a response in progress keeps the series as they were when it started', async () => {
    const clock = new ManualClock(0);
    const sink = new PrometheusSink(
      config({ metricsLabels: ['src_pod'], metricsTtl: 60_000 }),
      { registry: new Registry() },
      clock,
    );
    const pods = (from: number, to: number, tx: number) =>
      Array.from({ length: to - from }, (_, i) => ({ ...base, srcPod: `p${from + i}`, txBytes: tx }));
    await sink.push(pods(0, 5_000, 1));
    const before = sink.render();
    const text = sink.chunks('', 4096);
    const first = Buffer.from(text.next() as Buffer);
    // A round meanwhile: half the series expire (slots move), the rest count on, new values come.
    clock.t = 30_000;
    await sink.push(pods(2_500, 5_000, 5));
    clock.t = 61_000;
    await sink.push(pods(5_000, 9_000, 7));
    expect(sink.seriesCount).toBe(6_500);
    const parts = [first];
    for (let c = text.next(); c !== undefined; c = text.next()) parts.push(Buffer.from(c));
    expect(Buffer.concat(parts).toString()).toBe(before);
    expect(sink.render()).not.toBe(before);
  });

  it('/metrics serves the same text, self-metrics first, valid for promtool', async () => {
    const registry = new Registry();
    new Counter({ name: 'podflow_exporter_x_total', help: 'x', registers: [registry] }).inc(2);
    const sink = await awkwardSink(registry);
    const server = new HttpServer(
      { listen: { host: '127.0.0.1', port: 0 } },
      { registry, body: sink, notReady: () => undefined, log: silentLogger },
    );
    const { port } = await server.start();
    try {
      const body = await new Promise<Buffer>((resolve, reject) => {
        request({ host: '127.0.0.1', port, path: '/metrics', agent: false }, (res) => {
          const parts: Buffer[] = [];
          res.on('data', (d: Buffer) => parts.push(d));
          res.on('end', () => resolve(Buffer.concat(parts)));
        })
          .on('error', reject)
          .end();
      });
      const text = await metricsText(registry, sink);
      expect(body.toString()).toBe(text);
      expect(text.startsWith('# HELP podflow_exporter_x_total x\n')).toBe(true);
      const check = await new Promise<{ code: number; out: string }>((resolve) => {
        const p = execFile('promtool', ['check', 'metrics'], (err, stdout, stderr) =>
          resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr }),
        );
        p.stdin?.end(body);
      });
      expect(check).toEqual({ code: 0, out: '' });
    } finally {
      await server.close();
    }
  });
});

describe('PrometheusSink on the clock', () => {
  it('idle series go on the sweep timer also when no push comes; no timer is left once none is', async () => {
    const clock = new ManualClock(0);
    const registry = new Registry();
    const { ExporterMetrics } = await import('./metrics.js');
    const sink = new PrometheusSink(
      config({ metricsLabels: ['src_pod'], metricsTtl: 60_000 }),
      { registry, metrics: new ExporterMetrics(registry) },
      clock,
    );
    await sink.push([base, web2]);
    clock.advance(59_000);
    expect(sink.seriesCount).toBe(2);
    clock.advance(2_000);
    expect(sink.seriesCount).toBe(0);
    expect(await registry.getSingleMetricAsString('podflow_exporter_flow_series')).toContain(
      '\npodflow_exporter_flow_series 0',
    );
    expect(clock.pending).toBe(0);
    await sink.push([base]);
    expect(clock.pending).toBe(1);
    await sink.close(0);
    expect(clock.pending).toBe(0);
  });

  /** A sink that has seen a scraper (a complete response) and counted one flow since. */
  const scrapedThenCounted = async (clock: ManualClock) => {
    const sink = new PrometheusSink(
      config({ metricsLabels: ['proto'] }),
      { registry: new Registry() },
      clock,
    );
    sink.chunks('').done?.(true);
    await sink.push([base]);
    return sink;
  };

  it('closed while counts wait for a scrape: responses carry the families without series, nothing is released', async () => {
    const clock = new ManualClock(0);
    const sink = await scrapedThenCounted(clock);
    const calls: string[] = [];
    sink.onDurable(() => calls.push('a'));
    await sink.close(clock.now());
    const text = sink.render('');
    expect(text).toContain('# TYPE podflow_transmit_bytes_total counter');
    expect(text).not.toContain('podflow_transmit_bytes_total{');
    expect(calls).toEqual([]);
    // With nothing waiting, a closed sink serves its series as before.
    const idle = new PrometheusSink(
      config({ metricsLabels: ['proto'] }),
      { registry: new Registry() },
      clock,
    );
    await idle.push([base]);
    idle.onDurable(() => calls.push('b'));
    await idle.close(clock.now());
    expect(idle.render('')).toContain('podflow_transmit_bytes_total{proto="TCP"} 100');
    expect(calls).toEqual(['b']);
  });

  it('close waits until its deadline for responses begun before it: what they served is released', async () => {
    const clock = new ManualClock(0);
    const sink = await scrapedThenCounted(clock);
    const calls: string[] = [];
    sink.onDurable(() => calls.push('a'));
    const serving = sink.chunks('');
    let closed = false;
    const closing = sink.close(clock.now() + 5000).then(() => {
      closed = true;
    });
    await clock.elapse(100);
    expect(closed).toBe(false);
    serving.done?.(true);
    await closing;
    expect(calls).toEqual(['a']);
    // A response that never ends holds close only until the deadline.
    const stuck = await scrapedThenCounted(clock);
    stuck.chunks('');
    await clock.run(stuck.close(clock.now() + 2000));
  });

  it('a push is durable once a complete response began after it; abandoned or failed ones release nothing', () => {
    const clock = new ManualClock(0);
    const sink = new PrometheusSink(
      config({ metricsLabels: ['proto'] }),
      { registry: new Registry() },
      clock,
    );
    const calls: string[] = [];
    // No scraper seen yet: at once.
    sink.onDurable(() => calls.push('a'));
    expect(calls).toEqual(['a']);
    sink.chunks('').done?.(true);
    sink.onDurable(() => calls.push('b'));
    sink.chunks('');
    sink.chunks('').done?.(false);
    sink.onDurable(() => calls.push('c'));
    expect(calls).toEqual(['a']);
    const served = sink.chunks('');
    sink.onDurable(() => calls.push('d'));
    served.done?.(true);
    expect(calls).toEqual(['a', 'b', 'c']);
    // No complete scrape for longer than the grace: what waits is released with the new one.
    clock.t += 300_001;
    sink.onDurable(() => calls.push('e'));
    expect(calls).toEqual(['a', 'b', 'c', 'd', 'e']);
  });
});
