import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import type { ClusterLookup, Endpoint } from '../shared/cluster.js';
import type { EnrichedFlow, Flow } from '../shared/flow.js';
import { silentLogger } from '../shared/log.js';
import { Enricher, emptyClusterLookup } from './enrich.js';

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
  return { lookup: (ip) => ips.get(ip), nodeZone: (n) => zones.get(n) };
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
      dstIp: '10.1.1.1',
      dstPod: '',
      dstNamespace: '',
      dstWorkload: '',
      dstNode: '',
      dstZone: '',
      dstDnsName: '',
      dstType: 'private',
      crossZone: false,
      proto: 'TCP',
      txBytes: 100,
      rxBytes: 200,
      txPackets: 3,
      rxPackets: 4,
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
