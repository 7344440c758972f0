// The exporter's Kubernetes cluster view (exporter/kube-cluster.ts): the compact records it keeps of
// each object (what a real API object gives, and what a broken one gives without throwing), and the
// answers of lookup() as pods come, go and hand their IPs on, with the test API server and a clock
// the test moves. The whole start-up path is in test/kube-cluster.test.ts.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../shared/log.js';
import { ManualClock } from '../test/fixtures/clock.js';
import { type Harness, startHarness, until } from '../test/kube-api-server/harness.js';
import { job, node, pod, replicaSet, service } from '../test/kube-api-server/objects.js';
import { KubeCluster, toNodeRecord, toOwnedRecord, toPodRecord, toServiceRecord } from './kube-cluster.js';

const T0 = Date.parse('2026-06-01T12:00:00Z');
const iso = (ms: number) => new Date(ms).toISOString();

describe('records of API objects', () => {
  it('a pod: every IP (v4, v6), node, host network, owner, template hash, start, ended by phase', () => {
    const r = toPodRecord(
      pod({
        name: 'api-7d9f8b6c5d-x2x9q',
        namespace: 'shop',
        node: 'n1',
        ips: ['10.244.1.5', 'fd00:10:244:1::5'],
        owner: { kind: 'ReplicaSet', name: 'api-7d9f8b6c5d' },
        startTime: iso(T0),
      }),
    );
    expect(r).toMatchObject({
      metadata: { name: 'api-7d9f8b6c5d-x2x9q', namespace: 'shop' },
      ips: ['10.244.1.5', 'fd00:10:244:1::5'],
      node: 'n1',
      hostNetwork: false,
      ended: false,
      owner: { kind: 'ReplicaSet', name: 'api-7d9f8b6c5d' },
      hash: '7d9f8b6c5d',
      start: T0,
    });
    expect(toPodRecord(pod({ name: 'done', ips: ['10.244.1.6'], phase: 'Succeeded' })).ended).toBe(true);
    expect(toPodRecord(pod({ name: 'crashed', ips: ['10.244.1.7'], phase: 'Failed' })).ended).toBe(true);
    expect(toPodRecord(pod({ name: 'h', ips: ['10.0.0.1'], hostNetwork: true })).hostNetwork).toBe(true);
  });

  it('a pod with only status.podIP (older API servers) has that one IP; without start time, its creation', () => {
    const r = toPodRecord({
      metadata: { name: 'old', namespace: 'default', creationTimestamp: iso(T0 - 5000) },
      spec: { nodeName: 'n2' },
      status: { phase: 'Running', podIP: '10.244.2.9' },
    });
    expect(r.ips).toEqual(['10.244.2.9']);
    expect(r.start).toBe(T0 - 5000);
    expect(r.owner).toBeUndefined();
  });

  it('broken objects give empty records, never an exception', () => {
    for (const bad of [
      null,
      undefined,
      42,
      'pod',
      {},
      { status: { podIPs: [null, { ip: 7 }, { ip: '' }] } },
    ]) {
      expect(toPodRecord(bad)).toMatchObject({ ips: [], node: '', hostNetwork: false, ended: false });
      expect(toNodeRecord(bad)).toMatchObject({ ips: [], zone: '', region: '', provider: '' });
      expect(toServiceRecord(bad).ips).toEqual([]);
      expect(toOwnedRecord(bad).owner).toBeUndefined();
    }
  });

  it('a node: internal and external addresses (not its host name), zone, region, cloud from providerID', () => {
    const addresses = { internalIPs: ['10.0.0.1', 'fd00::1'], externalIPs: ['203.0.113.1'] };
    const r = toNodeRecord(node({ name: 'n1', zone: 'eu-west-1a', region: 'eu-west-1', ...addresses }));
    expect(r).toMatchObject({
      metadata: { name: 'n1' },
      ips: ['10.0.0.1', 'fd00::1', '203.0.113.1'],
      zone: 'eu-west-1a',
      region: 'eu-west-1',
      provider: 'aws',
    });
    expect(toNodeRecord(node({ name: 'g', providerID: 'GCE://proj/zone/vm' })).provider).toBe('gce');
    expect(toNodeRecord(node({ name: 'kind', providerID: '' })).provider).toBe('');
    expect(toNodeRecord(node({ name: 'odd', providerID: 'no-scheme' })).provider).toBe('');
  });

  it('a service: every ClusterIP, none for a headless one; owned objects: their controller', () => {
    expect(toServiceRecord(service('api', 'shop', ['10.96.0.10', 'fd00:96::10'])).ips).toEqual([
      '10.96.0.10',
      'fd00:96::10',
    ]);
    expect(toServiceRecord({ spec: { clusterIP: '10.96.0.11' } }).ips).toEqual(['10.96.0.11']);
    expect(toServiceRecord({ spec: { clusterIP: 'None', clusterIPs: ['None'] } }).ips).toEqual([]);
    expect(
      toOwnedRecord(replicaSet('api-7d9f8b6c5d', 'shop', { kind: 'Deployment', name: 'api' })).owner,
    ).toEqual({
      kind: 'Deployment',
      name: 'api',
    });
    expect(toOwnedRecord(job('migrate', 'shop')).owner).toBeUndefined();
  });
});

describe('lookup() over time', () => {
  let h: Harness;
  let cluster: KubeCluster | undefined;

  beforeEach(async () => {
    h = await startHarness({ bookmarkIntervalMs: 50 });
    h.server.create('nodes', node({ name: 'n1', zone: 'a', internalIPs: ['10.0.0.1'] }));
    h.server.create('services', service('api', 'shop', ['10.96.0.10']));
  });
  afterEach(async () => {
    await cluster?.close();
    cluster = undefined;
    await h.close();
  });

  async function start(podRetention = 120_000) {
    const clock = new ManualClock(T0);
    const c = new KubeCluster({ podRetention }, { kubeConfig: h.kubeConfig, log: silentLogger }, clock);
    cluster = c;
    c.start();
    await c.whenSynced();
    const seen = () => until(() => c.resourceVersion() >= Number(h.server.resourceVersion), 'caught up');
    return { c, clock, seen };
  }

  it('a host-network pod is not indexed: its IP answers as the node; a service IP as the service', async () => {
    h.server.create(
      'pods',
      pod({ name: 'proxy', namespace: 'kube-system', node: 'n1', ips: ['10.0.0.1'], hostNetwork: true }),
    );
    const { c, seen } = await start();
    await seen();
    expect(c.lookup('10.0.0.1', T0)).toMatchObject({ kind: 'node', name: 'n1', zone: 'a' });
    expect(c.lookup('10.96.0.10', T0)).toMatchObject({ kind: 'service', name: 'api', namespace: 'shop' });
    expect(c.lookup('10.0.0.99', T0)).toBeUndefined();
    expect(c.stats()).toEqual({ podIps: 0, serviceIps: 1, nodeIps: 1 });
  });

  it('three pods in turn on one IP: each flow gets the pod of its time; the ended ones go with the sweep', async () => {
    const ip = '10.244.1.5';
    h.server.create('pods', pod({ name: 'a', node: 'n1', ips: [ip], startTime: iso(T0 - 60_000) }));
    const { c, clock, seen } = await start();
    await seen();
    // a ends at T0 + 10 s; b takes the IP at T0 + 20 s and ends at T0 + 30 s; c takes it at T0 + 40 s.
    clock.t = T0 + 10_000;
    h.server.delete('pods', 'default', 'a');
    await seen();
    h.server.create('pods', pod({ name: 'b', node: 'n1', ips: [ip], startTime: iso(T0 + 20_000) }));
    await seen();
    clock.t = T0 + 30_000;
    h.server.delete('pods', 'default', 'b');
    await seen();
    h.server.create('pods', pod({ name: 'c', node: 'n1', ips: [ip], startTime: iso(T0 + 40_000) }));
    await seen();
    expect(c.lookup(ip, T0 + 40_000)?.name).toBe('c');
    expect(c.lookup(ip, T0 + 25_000)?.name).toBe('b');
    expect(c.lookup(ip, T0 - 30_000)?.name).toBe('a');
    // Only c answers once a and b are past their retention and swept.
    clock.t = T0 + 30_000 + 120_001;
    c.sweep();
    expect(c.lookup(ip, T0 + 25_000)?.name).toBe('c');
    expect(c.lookup(ip, T0 - 30_000)?.name).toBe('c');
    expect(c.stats().podIps).toBe(1);
    // c ends too: its IP is kept for late flows during the retention, then dropped altogether.
    h.server.delete('pods', 'default', 'c');
    await seen();
    expect(c.lookup(ip, clock.t)?.name).toBe('c');
    clock.advance(120_001);
    c.sweep();
    expect(c.lookup(ip, clock.t)).toBeUndefined();
    expect(c.stats().podIps).toBe(0);
  });
});
