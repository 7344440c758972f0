import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import type { ClusterLookup, Endpoint } from '../shared/cluster.js';
import type { EnrichedFlow, Flow, TrafficClass } from '../shared/flow.js';
import { silentLogger } from '../shared/log.js';
import { loadDestinations } from './destinations.js';
import { classOf, type EnrichConfig, Enricher, emptyClusterLookup } from './enrich.js';
import { PRESETS } from './prices.js';

const pod = (name: string, ns: string, node: string, zone: string, workload = ''): Endpoint => ({
  kind: 'pod',
  name,
  namespace: ns,
  workload,
  node,
  zone,
});

/** A small cluster: two nodes in two zones, three pods, a host-network pod and a service. */
function cluster(): ClusterLookup {
  const ips = new Map<string, Endpoint>([
    ['10.0.1.5', pod('web-1', 'shop', 'node-a', 'zone-a', 'Deployment/web')],
    ['10.0.2.7', pod('db-0', 'shop', 'node-b', 'zone-b', 'StatefulSet/db')],
    ['10.0.1.9', pod('lonely', 'default', 'node-a', '')],
    ['fd00::1:5', pod('web-2', 'shop', 'node-a', 'zone-a', 'Deployment/web')],
    ['192.168.0.2', { kind: 'node', name: 'node-b', namespace: '', workload: '', node: 'node-b', zone: '' }],
    [
      '192.168.0.1',
      {
        kind: 'pod',
        name: 'agent',
        namespace: 'kube-system',
        workload: 'DaemonSet/agent',
        node: 'node-a',
        zone: '',
        hostNetwork: true,
      },
    ],
    [
      '10.96.0.10',
      { kind: 'service', name: 'dns', namespace: 'kube-system', workload: '', node: '', zone: '' },
    ],
  ]);
  const zones = new Map([
    ['node-a', 'zone-a'],
    ['node-b', 'zone-b'],
  ]);
  const regions = new Map([
    ['node-a', 'region-1'],
    ['node-b', 'region-1'],
  ]);
  return { lookup: (ip) => ips.get(ip), nodeZone: (n) => zones.get(n), nodeRegion: (n) => regions.get(n) };
}

const flow = (src: string, dst: string, proto = 6): Flow => ({
  src,
  dst,
  proto,
  txBytes: 100,
  rxBytes: 200,
  txPackets: 3,
  rxPackets: 4,
});

type Want = Partial<EnrichedFlow>;

describe('Enricher', () => {
  const cases: [string, Flow, string, boolean, Want][] = [
    [
      'pod to pod across zones',
      flow('10.0.1.5', '10.0.2.7'),
      'node-a',
      false,
      {
        srcPod: 'web-1',
        srcNamespace: 'shop',
        srcWorkload: 'Deployment/web',
        srcNode: 'node-a',
        srcZone: 'zone-a',
        dstIp: '10.0.2.7',
        dstPod: 'db-0',
        dstNamespace: 'shop',
        dstWorkload: 'StatefulSet/db',
        dstNode: 'node-b',
        dstZone: 'zone-b',
        dstType: 'pod',
        crossZone: true,
        proto: 'TCP',
      },
    ],
    [
      'pod without owner: workload is the pod name, zone from its node',
      flow('10.0.1.9', '10.0.1.5', 17),
      'node-a',
      false,
      { srcWorkload: 'lonely', srcZone: 'zone-a', dstZone: 'zone-a', crossZone: false, proto: 'UDP' },
    ],
    [
      'pod to node',
      flow('10.0.1.5', '192.168.0.2'),
      'node-a',
      false,
      { dstType: 'node', dstNode: 'node-b', dstZone: 'zone-b', dstPod: '', crossZone: true },
    ],
    [
      'host-network pod peer is reported as its node',
      flow('10.0.1.5', '192.168.0.1'),
      'node-a',
      false,
      { dstType: 'node', dstNode: 'node-a', dstPod: '', dstZone: 'zone-a', crossZone: false },
    ],
    [
      'public peer keeps its address',
      flow('10.0.1.5', '8.8.8.8'),
      'node-a',
      false,
      { dstType: 'public', dstIp: '8.8.8.8', dstZone: '', crossZone: false },
    ],
    [
      'public peer grouped',
      flow('10.0.1.5', '8.8.8.8'),
      'node-a',
      true,
      { dstType: 'public', dstIp: '0.0.0.0' },
    ],
    [
      'public IPv6 peer grouped',
      flow('fd00::1:5', '2001:4860::1', 58),
      'node-a',
      true,
      { srcPod: 'web-2', dstType: 'public', dstIp: '::', proto: 'ICMPv6' },
    ],
    // A collector with --group-public-ips sends the grouped peer itself: 0.0.0.0 and :: are "this
    // network" by address, but here they stand for the internet.
    [
      'public peer grouped by the collector (IPv4)',
      flow('10.0.1.5', '0.0.0.0'),
      'node-a',
      false,
      { dstType: 'public', dstIp: '0.0.0.0', dstPod: '', dstNode: '' },
    ],
    [
      'public peer grouped by the collector (IPv6)',
      flow('fd00::1:5', '::', 17),
      'node-a',
      false,
      { dstType: 'public', dstIp: '::', proto: 'UDP' },
    ],
    [
      'public peer grouped by the collector, the exporter grouping too',
      flow('10.0.1.5', '0.0.0.0'),
      'node-a',
      true,
      { dstType: 'public', dstIp: '0.0.0.0' },
    ],
    [
      'private peer outside the cluster is never grouped',
      flow('10.0.1.5', '172.16.4.4'),
      'node-a',
      true,
      { dstType: 'private', dstIp: '172.16.4.4', dstPod: '' },
    ],
    [
      'unknown src is the collector node',
      flow('192.168.77.1', '8.8.4.4', 132),
      'node-b',
      false,
      { srcPod: '', srcWorkload: '', srcNode: 'node-b', srcZone: 'zone-b', proto: 'SCTP' },
    ],
    [
      'ClusterIP that was not NATed is named as the service',
      flow('10.0.1.5', '10.96.0.10', 17),
      'node-a',
      false,
      {
        dstType: 'private',
        dstIp: '10.96.0.10',
        dstNamespace: 'kube-system',
        dstWorkload: 'Service/dns',
        dstDnsName: 'dns.kube-system.svc',
      },
    ],
    ['other protocol numbers', flow('10.0.1.5', '8.8.8.8', 47), 'node-a', false, { proto: '47' }],
  ];
  it.each(cases)('%s', (_name, f, node, group, want) => {
    const e = new Enricher({ groupPublicIps: group }, { cluster: cluster(), log: silentLogger });
    const out: EnrichedFlow[] = [];
    e.enrichBatch({ seq: 1, from: 1_700_000_000_000, to: 1_700_000_005_000, flows: [f] }, node, out);
    expect(out).toHaveLength(1);
    expect(out[0]).toMatchObject({
      ts: 1_700_000_005_000,
      intervalSeconds: 5,
      srcIp: f.src,
      txBytes: 100,
      rxBytes: 200,
      txPackets: 3,
      rxPackets: 4,
      ...want,
    });
  });

  it('names external peers by the DNS name the collector learned; cluster peers keep their own', () => {
    const e = new Enricher({ groupPublicIps: true }, { cluster: cluster(), log: silentLogger });
    const named = (dst: string) =>
      e.enrich({ ...flow('10.0.1.5', dst), dstName: 'api.example.com' }, 'node-a', 0, 5);
    expect(named('203.0.113.7')).toMatchObject({
      dstIp: '0.0.0.0',
      dstType: 'public',
      dstDnsName: 'api.example.com',
    });
    expect(named('172.16.0.9')).toMatchObject({ dstType: 'private', dstDnsName: 'api.example.com' });
    expect(named('10.0.2.7')).toMatchObject({ dstType: 'pod', dstPod: 'db-0', dstDnsName: '' });
    expect(named('10.96.0.10')).toMatchObject({ dstDnsName: 'dns.kube-system.svc' });
    expect(e.enrich(flow('10.0.1.5', '203.0.113.7'), 'node-a', 0, 5).dstDnsName).toBe('');
  });

  it('without Kubernetes: node is src, peers by address, cross_zone false', () => {
    const e = new Enricher({ groupPublicIps: false }, { cluster: emptyClusterLookup, log: silentLogger });
    const got = e.enrich(flow('192.168.1.10', '10.1.1.1'), 'laptop', 1000, 5);
    expect(got).toEqual({
      ts: 1000,
      intervalSeconds: 5,
      srcIp: '192.168.1.10',
      srcPod: '',
      srcNamespace: '',
      srcWorkload: '',
      srcNode: 'laptop',
      srcZone: '',
      srcRegion: '',
      dstIp: '10.1.1.1',
      dstPod: '',
      dstNamespace: '',
      dstWorkload: '',
      dstNode: '',
      dstZone: '',
      dstRegion: '',
      dstDnsName: '',
      dstType: 'private',
      crossZone: false,
      trafficClass: 'private',
      proto: 'TCP',
      txBytes: 100,
      rxBytes: 200,
      txPackets: 3,
      rxPackets: 4,
      cost: 0,
    });
  });

  it('logs an unresolved private peer once, not every tick', () => {
    const lines: string[] = [];
    const log = pino({ level: 'debug' }, { write: (s: string) => lines.push(s) });
    const e = new Enricher({ groupPublicIps: false }, { cluster: emptyClusterLookup, log });
    for (let tick = 0; tick < 5; tick++) {
      e.enrich(flow('10.0.0.1', '10.9.9.9'), 'n', tick, 5);
      e.enrich(flow('10.0.0.1', '10.9.9.8'), 'n', tick, 5);
      e.enrich(flow('10.0.0.1', '8.8.8.8'), 'n', tick, 5);
      e.enrich(flow('10.0.0.1', '0.0.0.0'), 'n', tick, 5);
    }
    const unresolved = lines.filter((l) => l.includes('not known to the cluster'));
    expect(unresolved).toHaveLength(2);
    expect(unresolved[0]).toContain('10.9.9.9');
    expect(unresolved[1]).toContain('10.9.9.8');
  });
});

describe('Enricher: answers kept by address', () => {
  /** A cluster whose answers the test changes; `notify` when it says so (onChange, timeless). */
  function changing(notify: boolean) {
    const ips = new Map<string, Endpoint>([['10.0.2.7', pod('db-0', 'shop', 'node-b', 'zone-b')]]);
    const listeners: ((ip?: string) => void)[] = [];
    const lookup: ClusterLookup = {
      lookup: (ip) => ips.get(ip),
      nodeZone: () => undefined,
      nodeRegion: () => undefined,
      ...(notify
        ? { onChange: (fn: (ip?: string) => void) => listeners.push(fn), timeless: () => true }
        : {}),
    };
    const set = (ip: string, e: Endpoint) => {
      ips.set(ip, e);
      for (const fn of listeners) fn(ip);
    };
    return { lookup, set, ips };
  }
  const batch = (flows: Flow[]) => ({ seq: 1, from: 0, to: 5000, flows });
  const run = (e: Enricher, flows: Flow[]) => {
    const out: EnrichedFlow[] = [];
    e.enrichBatch(batch(flows), 'node-a', out);
    return out;
  };

  it('gives every flow of an address the same answer and numbers, IPv4 and IPv6 alike', () => {
    const c = changing(true);
    c.ips.set('fd00::1:5', pod('web-2', 'shop', 'node-a', 'zone-a'));
    const e = new Enricher({ groupPublicIps: false }, { cluster: c.lookup, log: silentLogger });
    const out = run(e, [
      flow('fd00::1:5', '10.0.2.7'),
      flow('fd00::1:5', '8.8.8.8'),
      flow('fd00::1:5', '10.0.2.7', 17),
      flow('192.168.9.9', '8.8.8.8'),
    ]);
    expect(out.map((f) => [f.srcPod, f.dstPod, f.dstType])).toEqual([
      ['web-2', 'db-0', 'pod'],
      ['web-2', '', 'public'],
      ['web-2', 'db-0', 'pod'],
      ['', '', 'public'],
    ]);
    expect(out[2].dstPeer).toBe(out[0].dstPeer);
    expect(out[3].dstPeer).toBe(out[1].dstPeer);
    expect(out[1].srcPeer).toBe(out[0].srcPeer);
    expect(out[3].srcPeer).not.toBe(out[0].srcPeer); // the collector's node, not the pod
    expect(out[1].dstPeer).not.toBe(out[0].dstPeer);
    // A later batch: the same numbers while nothing changed.
    expect(run(e, [flow('fd00::1:5', '10.0.2.7')])[0].dstPeer).toBe(out[0].dstPeer);
  });

  it('answers alike from the addresses validation parsed (FlowBatch.addresses) and from the strings', () => {
    const c = changing(true);
    c.ips.set('fd00::1:5', pod('web-2', 'shop', 'node-a', 'zone-a'));
    const flows = [
      flow('fd00::1:5', '10.0.2.7'),
      flow('10.0.1.5', '8.8.8.8'),
      flow('192.168.9.9', 'fd00::9'),
      flow('10.0.1.5', '10.0.2.7', 17),
    ];
    const parsed = {
      ...batch(flows),
      addresses: new Float64Array([
        -1, 0x0a000207, 0x0a000105, 0x08080808, 0xc0a80909, -1, 0x0a000105, 0x0a000207,
      ]),
    };
    const plain: EnrichedFlow[] = [];
    new Enricher({ groupPublicIps: false }, { cluster: c.lookup, log: silentLogger }).enrichBatch(
      batch(flows),
      'node-a',
      plain,
    );
    const numbered: EnrichedFlow[] = [];
    new Enricher({ groupPublicIps: false }, { cluster: c.lookup, log: silentLogger }).enrichBatch(
      parsed,
      'node-a',
      numbered,
    );
    const strip = (fs: EnrichedFlow[]) => fs.map(({ srcPeer, dstPeer, ...rest }) => rest);
    expect(strip(numbered)).toEqual(strip(plain));
    expect(numbered.map((f) => [f.srcPod, f.dstPod, f.dstType])).toEqual([
      ['web-2', 'db-0', 'pod'],
      ['', '', 'public'],
      ['', '', 'private'],
      ['', 'db-0', 'pod'],
    ]);
  });

  it('follows the changes the cluster reports, address by address', () => {
    const c = changing(true);
    const e = new Enricher({ groupPublicIps: false }, { cluster: c.lookup, log: silentLogger });
    const [before] = run(e, [flow('10.0.1.5', '10.0.2.7')]);
    expect(before.dstPod).toBe('db-0');
    c.set('10.0.2.7', pod('db-1', 'shop', 'node-a', 'zone-a'));
    const [after] = run(e, [flow('10.0.1.5', '10.0.2.7')]);
    expect(after).toMatchObject({ dstPod: 'db-1', dstNode: 'node-a' });
    expect(after.dstPeer).not.toBe(before.dstPeer);
  });

  it('keeps thousands of addresses, each changed twice, answering for each its latest owner', () => {
    const c = changing(true);
    const e = new Enricher({ groupPublicIps: false }, { cluster: c.lookup, log: silentLogger });
    const ips = Array.from({ length: 3000 }, (_, i) => `10.1.${i >> 8}.${i & 255}`);
    const flows = ips.map((ip) => flow('10.0.1.5', ip));
    expect(run(e, flows).every((f) => f.dstType === 'private')).toBe(true);
    for (const owner of ['a', 'b']) {
      for (const [i, ip] of ips.entries()) c.set(ip, pod(`${owner}-${i}`, 'shop', 'node-b', 'zone-b'));
      const out = run(e, flows);
      expect(out.map((f) => f.dstPod)).toEqual(ips.map((_, i) => `${owner}-${i}`));
    }
  });

  it('keeps answers for one batch only when the cluster reports no changes', () => {
    const c = changing(false);
    const e = new Enricher({ groupPublicIps: false }, { cluster: c.lookup, log: silentLogger });
    expect(run(e, [flow('10.0.1.5', '10.0.2.7')])[0].dstPod).toBe('db-0');
    // Changed without a word: the next batch asks again.
    c.ips.set('10.0.2.7', pod('db-1', 'shop', 'node-a', 'zone-a'));
    expect(run(e, [flow('10.0.1.5', '10.0.2.7')])[0].dstPod).toBe('db-1');
  });
});

/**
 * A cluster in two regions: node-a and node-e share zone eu-west-1a, node-b is in eu-west-1b,
 * node-c in us-east-1, node-d has a region and no zone. node-b also has a public address.
 */
function regions(): ClusterLookup {
  const nodes: Record<string, [string, string]> = {
    'node-a': ['eu-west-1a', 'eu-west-1'],
    'node-b': ['eu-west-1b', 'eu-west-1'],
    'node-c': ['us-east-1a', 'us-east-1'],
    'node-d': ['', 'eu-west-1'],
    'node-e': ['eu-west-1a', 'eu-west-1'],
  };
  const p = (name: string, node: string) => pod(name, 'shop', node, nodes[node][0], `Deployment/${name}`);
  const ips = new Map<string, Endpoint>([
    ['10.0.1.1', p('a1', 'node-a')],
    ['fd00:1::1', p('a1', 'node-a')],
    ['10.0.1.2', p('a2', 'node-a')],
    ['10.0.2.1', p('b1', 'node-b')],
    ['fd00:2::1', p('b1', 'node-b')],
    ['10.0.3.1', p('c1', 'node-c')],
    ['10.0.4.1', p('d1', 'node-d')],
    ['10.0.5.1', p('e1', 'node-e')],
    // node-b's ExternalIP: a public address of the cluster's own.
    [
      '198.51.100.3',
      { kind: 'node', name: 'node-b', namespace: '', workload: '', node: 'node-b', zone: 'eu-west-1b' },
    ],
    [
      '10.96.0.10',
      { kind: 'service', name: 'dns', namespace: 'kube-system', workload: '', node: '', zone: '' },
    ],
  ]);
  return {
    lookup: (ip) => ips.get(ip),
    nodeZone: (n) => nodes[n]?.[0] || undefined,
    nodeRegion: (n) => nodes[n]?.[1] || undefined,
    providerOf: () => 'aws',
  };
}

const GIB = 2 ** 30;
const big = (src: string, dst: string): Flow => ({
  src,
  dst,
  proto: 6,
  txBytes: 3 * GIB,
  rxBytes: 2 * GIB,
  txPackets: 1,
  rxPackets: 1,
});

describe('traffic class and cost', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pf-enrich-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const ranges = join(dir, 'destinations.yaml');
  writeFileSync(
    ranges,
    [
      '- cidr: 10.20.0.0/16',
      '  name: billing-vpc',
      '  class: cross-zone',
      '- cidr: 203.0.113.0/24',
      '  name: partner-api',
      '- cidr: 2001:db8:77::/48',
      '  name: on-prem',
      '  class: private',
      `- aws-ip-ranges: ${new URL('../test/fixtures/ranges/aws-ip-ranges.json', import.meta.url).pathname}`,
      '',
    ].join('\n'),
  );
  const destinations = loadDestinations(ranges);
  const enricher = (config: Partial<EnrichConfig> = {}) =>
    new Enricher(
      { groupPublicIps: false, cloud: 'aws', ...config },
      { cluster: regions(), log: silentLogger, destinations },
    );

  // [case, src, dst, collector node, class, want], cost under the AWS preset = tx GiB × class price.
  const cases: [string, string, string, string, TrafficClass, Want][] = [
    ['same node', '10.0.1.1', '10.0.1.2', 'node-a', 'same-zone', { dstRegion: 'eu-west-1' }],
    ['same zone, other node', '10.0.1.1', '10.0.5.1', 'node-a', 'same-zone', { dstNode: 'node-e' }],
    [
      'cross-zone',
      '10.0.1.1',
      '10.0.2.1',
      'node-a',
      'cross-zone',
      { crossZone: true, srcRegion: 'eu-west-1' },
    ],
    ['cross-zone, IPv6', 'fd00:1::1', 'fd00:2::1', 'node-a', 'cross-zone', { dstPod: 'b1' }],
    ['cross-region', '10.0.1.1', '10.0.3.1', 'node-a', 'cross-region', { dstRegion: 'us-east-1' }],
    ['a zone missing', '10.0.1.1', '10.0.4.1', 'node-a', 'unknown', { dstZone: '', crossZone: false }],
    [
      "a node's public address is the node, not the internet",
      '10.0.1.1',
      '198.51.100.3',
      'node-a',
      'cross-zone',
      { dstType: 'node', dstNode: 'node-b' },
    ],
    ['internet', '10.0.1.1', '192.0.2.80', 'node-a', 'internet', { dstType: 'public', dstDnsName: '' }],
    ['internet, IPv6', 'fd00:1::1', '2001:4860::1', 'node-a', 'internet', { dstType: 'public' }],
    ['grouped public peer', '10.0.1.1', '0.0.0.0', 'node-a', 'internet', { dstIp: '0.0.0.0' }],
    [
      'private address outside the cluster',
      '10.0.1.1',
      '172.16.4.4',
      'node-a',
      'private',
      { dstType: 'private' },
    ],
    ['a ClusterIP before DNAT: backend unknown', '10.0.1.1', '10.96.0.10', 'node-a', 'unknown', {}],
    [
      'a destination range sets class and name',
      '10.0.1.1',
      '10.20.3.4',
      'node-a',
      'cross-zone',
      { dstType: 'private', dstDnsName: 'billing-vpc' },
    ],
    [
      'a destination range with a name only keeps the class of its address',
      '10.0.1.1',
      '203.0.113.9',
      'node-a',
      'internet',
      { dstType: 'public', dstDnsName: 'partner-api' },
    ],
    [
      'a destination range, IPv6',
      'fd00:1::1',
      '2001:db8:77::5',
      'node-a',
      'private',
      { dstType: 'public', dstDnsName: 'on-prem' },
    ],
    [
      'a cloud service in the same region is not internet',
      '10.0.1.1',
      '52.218.7.7',
      'node-a',
      'same-zone',
      { dstType: 'public', dstDnsName: 'aws/S3/eu-west-1' },
    ],
    [
      'the same service from another region',
      '10.0.3.1',
      '52.218.7.7',
      'node-c',
      'cross-region',
      { srcRegion: 'us-east-1', dstDnsName: 'aws/S3/eu-west-1' },
    ],
    [
      'EC2 public addresses in the region: the inter-zone rate',
      '10.0.1.1',
      '3.248.1.1',
      'node-a',
      'cross-zone',
      { dstDnsName: 'aws/EC2/eu-west-1' },
    ],
  ];
  it.each(cases)('%s', (_name, src, dst, node, cls, want) => {
    const got = enricher().enrich(big(src, dst), node, 0, 5);
    expect(got).toMatchObject({ trafficClass: cls, ...want });
    // Priced once, at the sender: tx only (rx from the internet is free in the preset).
    expect(got.cost).toBeCloseTo(3 * PRESETS.aws[cls], 12);
  });

  it('grouping on the exporter still matches the real address first', () => {
    const got = enricher({ groupPublicIps: true }).enrich(big('10.0.1.1', '52.218.7.7'), 'node-a', 0, 5);
    expect(got).toMatchObject({
      dstIp: '0.0.0.0',
      dstDnsName: 'aws/S3/eu-west-1',
      trafficClass: 'same-zone',
    });
  });

  it('a DNS name the peer already has is kept', () => {
    const got = enricher().enrich(big('10.0.1.1', '10.96.0.10'), 'node-a', 0, 5);
    expect(got.dstDnsName).toBe('dns.kube-system.svc');
  });

  it('--prices overrides per key; internet-ingress prices bytes received from the internet; nat-gateway=preset', () => {
    const e = enricher({ prices: { 'cross-zone': 0.05, 'internet-ingress': 0.01, 'nat-gateway': 'preset' } });
    expect(e.enrich(big('10.0.1.1', '10.0.2.1'), 'node-a', 0, 5).cost).toBeCloseTo(3 * 0.05, 12);
    // 3 GiB out at the internet price, 2 GiB in at the ingress price, 5 GiB through the NAT gateway.
    expect(e.enrich(big('10.0.1.1', '192.0.2.80'), 'node-a', 0, 5).cost).toBeCloseTo(
      3 * 0.09 + 2 * 0.01 + 5 * 0.045,
      12,
    );
    // NAT processing applies to public peers whatever their class (S3 through a NAT gateway).
    expect(e.enrich(big('10.0.1.1', '52.218.7.7'), 'node-a', 0, 5).cost).toBeCloseTo(5 * 0.045, 12);
    // Not to peers inside the VPC.
    expect(e.enrich(big('10.0.1.1', '172.16.4.4'), 'node-a', 0, 5).cost).toBeCloseTo(3 * 0.02, 12);
  });

  it('--cloud auto takes the preset of the nodes, none without a providerID', () => {
    const lines: string[] = [];
    const log = pino({ level: 'info' }, { write: (s: string) => lines.push(s) });
    let provider: string | undefined;
    const cluster = { ...regions(), providerOf: () => provider };
    const e = new Enricher({ groupPublicIps: false, cloud: 'auto' }, { cluster, log });
    expect(e.prices().preset).toBe('none');
    expect(e.enrich(big('10.0.1.1', '10.0.2.1'), 'node-a', 0, 5).cost).toBe(0);
    for (const [scheme, preset] of [
      ['gce', 'gcp'],
      ['azure', 'azure'],
      ['aws', 'aws'],
    ] as const) {
      provider = scheme;
      expect(e.prices().preset).toBe(preset);
      expect(e.enrich(big('10.0.1.1', '10.0.2.1'), 'node-a', 0, 5).cost).toBeCloseTo(
        3 * PRESETS[preset]['cross-zone'],
        12,
      );
    }
    expect(lines.filter((l) => l.includes('price preset chosen'))).toHaveLength(3);
    // Once each: the first preset too, none included.
    expect(lines.filter((l) => l.includes('price preset none'))).toHaveLength(1);
  });

  it('across nodes each side prices its own tx: a pair costs both directions once', () => {
    const e = enricher();
    const ab: Flow = { ...big('10.0.2.1', '10.0.1.1'), txBytes: GIB, rxBytes: 5 * GIB };
    const ba: Flow = { ...big('10.0.1.1', '10.0.2.1'), txBytes: 5 * GIB, rxBytes: GIB };
    const total = e.enrich(ab, 'node-b', 0, 5).cost + e.enrich(ba, 'node-a', 0, 5).cost;
    expect(total).toBeCloseTo(6 * PRESETS.aws['cross-zone'], 12);
  });
});

describe('classOf', () => {
  it.each([
    ['n1', 'z1', 'r1', 'n1', '', '', 'same-zone'],
    ['n1', 'z1', '', 'n2', 'z1', '', 'same-zone'],
    ['n1', 'z1', 'r1', 'n2', 'z2', 'r1', 'cross-zone'],
    ['n1', 'z1', '', 'n2', 'z2', '', 'unknown'],
    ['n1', '', 'r1', 'n2', '', 'r2', 'cross-region'],
    ['n1', 'z1', 'r1', 'n2', 'z2', 'r2', 'cross-region'],
    ['n1', '', 'r1', 'n2', 'z2', 'r1', 'unknown'],
  ])('%s %s %s → %s %s %s: %s', (sn, sz, sr, dn, dz, dr, want) => {
    expect(classOf(sn, sz, sr, dn, dz, dr)).toBe(want);
  });
});
