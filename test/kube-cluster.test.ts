// The exporter's ClusterLookup (exporter/kube-cluster.ts) through its real start-up path: five
// informers of the real client against the test API server; time moved by hand for retention.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Enricher } from '../exporter/enrich.js';
import { KubeCluster } from '../exporter/kube-cluster.js';
import type { Endpoint } from '../shared/cluster.js';
import type { EnrichedFlow } from '../shared/flow.js';
import { silentLogger } from '../shared/log.js';
import { captureLogger, type Harness, ManualClock, startHarness, until } from './kube-api-server/harness.js';
import { job, node, pod, replicaSet, service } from './kube-api-server/objects.js';

let h: Harness;
let cluster: KubeCluster | undefined;
const T0 = Date.parse('2026-06-01T12:00:00Z');
const iso = (ms: number) => new Date(ms).toISOString();

beforeEach(async () => {
  h = await startHarness({ bookmarkIntervalMs: 50 });
  const s = h.server;
  s.create(
    'nodes',
    node({
      name: 'n1',
      zone: 'eu-west-1a',
      region: 'eu-west-1',
      internalIPs: ['10.0.0.1', 'fd00::1'],
      externalIPs: ['203.0.113.1'],
    }),
  );
  s.create('nodes', node({ name: 'n2', zone: 'eu-west-1b', region: 'eu-west-1', internalIPs: ['10.0.0.2'] }));
  s.create('replicasets', replicaSet('api-7d9f8b6c5d', 'shop', { kind: 'Deployment', name: 'api' }));
  s.create('replicasets', replicaSet('bare-rs', 'shop'));
  s.create('jobs', job('report-29000000', 'shop', { kind: 'CronJob', name: 'report' }));
  s.create('jobs', job('migrate', 'shop'));
  s.create('services', service('api', 'shop', ['10.96.0.10', 'fd00:96::10']));
  s.create('services', service('headless', 'shop', []));
});
afterEach(async () => {
  await cluster?.close();
  cluster = undefined;
  await h.close();
});

async function start(clock = new ManualClock(T0), podRetention = 120_000) {
  const cap = captureLogger();
  cluster = new KubeCluster({ podRetention }, { kubeConfig: h.kubeConfig, log: cap.log }, clock);
  expect(cluster.synced()).toBe(false);
  cluster.start();
  await cluster.whenSynced();
  expect(cluster.synced()).toBe(true);
  return { cluster, clock, cap };
}

/** Wait until every informer has applied every change made so far (bookmarks carry the version). */
const seen = (c: KubeCluster) =>
  until(() => c.resourceVersion() >= Number(h.server.resourceVersion), 'caught up');

const podEp = (
  name: string,
  namespace: string,
  workload: string,
  nodeName: string,
  zone: string,
): Endpoint => ({
  kind: 'pod',
  name,
  namespace,
  workload,
  node: nodeName,
  zone,
});

describe('KubeCluster (exporter ClusterLookup)', () => {
  it('resolves the workload of the top owner', async () => {
    const table: [string, Parameters<typeof pod>[0]['owner'], string][] = [
      ['api-7d9f8b6c5d-x1', { kind: 'ReplicaSet', name: 'api-7d9f8b6c5d' }, 'Deployment/api'],
      ['bare-rs-x1', { kind: 'ReplicaSet', name: 'bare-rs' }, 'ReplicaSet/bare-rs'],
      // ReplicaSet not (yet) known: the pod-template-hash naming rule gives the Deployment.
      ['web-7d9f8b6c5d-x1', { kind: 'ReplicaSet', name: 'web-7d9f8b6c5d' }, 'Deployment/web'],
      ['report-29000000-x1', { kind: 'Job', name: 'report-29000000' }, 'CronJob/report'],
      ['migrate-x1', { kind: 'Job', name: 'migrate' }, 'Job/migrate'],
      ['db-0', { kind: 'StatefulSet', name: 'db' }, 'StatefulSet/db'],
      ['agent-x1', { kind: 'DaemonSet', name: 'agent' }, 'DaemonSet/agent'],
      ['etcd-n1', { kind: 'Node', name: 'n1' }, 'etcd-n1'],
      ['bare', undefined, 'bare'],
    ];
    table.forEach(([name, owner], i) => {
      h.server.create(
        'pods',
        pod({ name, namespace: 'shop', node: 'n1', ips: [`10.244.1.${i + 1}`], owner }),
      );
    });
    const { cluster } = await start();
    h.server.create(
      'pods',
      pod({ name: 'dual', namespace: 'shop', node: 'n2', ips: ['10.244.2.9', 'fd00:10:244:2::9'] }),
    );
    await seen(cluster);
    // Every podIP of a dual-stack pod answers.
    expect(cluster.lookup('fd00:10:244:2::9', T0)).toEqual(podEp('dual', 'shop', 'dual', 'n2', 'eu-west-1b'));
    expect(cluster.lookup('10.244.2.9', T0)).toEqual(podEp('dual', 'shop', 'dual', 'n2', 'eu-west-1b'));
    table.forEach(([name, , workload], i) => {
      expect(cluster.lookup(`10.244.1.${i + 1}`, T0), name).toEqual(
        podEp(name, 'shop', workload, 'n1', 'eu-west-1a'),
      );
    });
  });

  it('follows owners appearing later and node zones changing', async () => {
    h.server.create(
      'pods',
      pod({
        name: 'x-1',
        namespace: 'shop',
        node: 'n2',
        ips: ['10.244.2.1'],
        owner: { kind: 'ReplicaSet', name: 'late' },
      }),
    );
    const { cluster } = await start();
    expect(cluster.lookup('10.244.2.1', T0)?.workload).toBe('ReplicaSet/late');
    expect(cluster.lookup('10.244.2.1', T0)?.zone).toBe('eu-west-1b');
    h.server.create('pods', pod({ name: 'y-1', namespace: 'shop', node: 'n9', ips: ['10.244.9.1'] }));
    await seen(cluster);
    expect(cluster.lookup('10.244.9.1', T0)?.zone).toBe(''); // node not known yet
    h.server.create('nodes', node({ name: 'n9', zone: 'eu-west-1c' }));
    // A Job's pods resolve once the Job is there; an unrelated ReplicaSet changes nothing.
    h.server.create(
      'pods',
      pod({
        name: 'j-1',
        namespace: 'shop',
        node: 'n1',
        ips: ['10.244.9.2'],
        owner: { kind: 'Job', name: 'nightly-1' },
      }),
    );
    await seen(cluster);
    expect(cluster.lookup('10.244.9.2', T0)?.workload).toBe('Job/nightly-1');
    h.server.create('jobs', job('nightly-1', 'shop', { kind: 'CronJob', name: 'nightly' }));
    h.server.create('replicasets', replicaSet('late', 'shop', { kind: 'Deployment', name: 'front' }));
    h.server.update('nodes', undefined, 'n2', (o) => {
      o.metadata.labels['topology.kubernetes.io/zone'] = 'eu-west-1c';
    });
    await seen(cluster);
    expect(cluster.lookup('10.244.2.1', T0)).toEqual(
      podEp('x-1', 'shop', 'Deployment/front', 'n2', 'eu-west-1c'),
    );
    expect(cluster.nodeZone('n2')).toBe('eu-west-1c');
    expect(cluster.lookup('10.244.9.1', T0)?.zone).toBe('eu-west-1c');
    expect(cluster.lookup('10.244.9.2', T0)?.workload).toBe('CronJob/nightly');
    // An owner changing hands (orphaned ReplicaSet) is followed too.
    h.server.update('replicasets', 'shop', 'late', (o) => {
      o.metadata.ownerReferences = undefined;
    });
    await seen(cluster);
    expect(cluster.lookup('10.244.2.1', T0)?.workload).toBe('ReplicaSet/late');
  });

  it("knows the nodes' regions and their cloud from spec.providerID, following changes", async () => {
    const { cluster } = await start();
    expect(cluster.nodeRegion('n2')).toBe('eu-west-1');
    expect(cluster.nodeRegion('nope')).toBeUndefined();
    expect(cluster.providerOf()).toBe('aws');
    // The scheme most nodes have: three GCE nodes outnumber the two AWS ones.
    for (const name of ['g1', 'g2', 'g3']) {
      h.server.create(
        'nodes',
        node({
          name,
          zone: 'europe-west1-b',
          region: 'europe-west1',
          providerID: `gce://proj/europe-west1-b/${name}`,
        }),
      );
    }
    h.server.create('nodes', node({ name: 'bare', providerID: '' }));
    await seen(cluster);
    expect(cluster.providerOf()).toBe('gce');
    expect(cluster.nodeRegion('g1')).toBe('europe-west1');
    expect(cluster.nodeRegion('bare')).toBeUndefined();
    for (const name of ['g1', 'g2', 'g3']) h.server.delete('nodes', undefined, name);
    await seen(cluster);
    expect(cluster.providerOf()).toBe('aws');
  });

  it('maps node addresses to the node, service ClusterIPs (v4 and v6) to the service', async () => {
    h.server.create(
      'pods',
      pod({ name: 'proxy', namespace: 'kube-system', node: 'n1', ips: ['10.0.0.1'], hostNetwork: true }),
    );
    const { cluster } = await start();
    const n1: Endpoint = {
      kind: 'node',
      name: 'n1',
      namespace: '',
      workload: '',
      node: 'n1',
      zone: 'eu-west-1a',
    };
    expect(cluster.lookup('10.0.0.1', T0)).toEqual(n1); // a host-network pod's IP answers as its node
    expect(cluster.lookup('fd00::1', T0)).toEqual(n1);
    expect(cluster.lookup('203.0.113.1', T0)).toEqual(n1);
    expect(cluster.nodeZone('n1')).toBe('eu-west-1a');
    expect(cluster.nodeRegion('n1')).toBe('eu-west-1');
    expect(cluster.nodeZone('nope')).toBeUndefined();
    const svc: Endpoint = {
      kind: 'service',
      name: 'api',
      namespace: 'shop',
      workload: '',
      node: '',
      zone: '',
    };
    expect(cluster.lookup('10.96.0.10', T0)).toEqual(svc);
    expect(cluster.lookup('fd00:96::10', T0)).toEqual(svc);
    expect(cluster.lookup('None', T0)).toBeUndefined();
    expect(cluster.lookup('192.0.2.1', T0)).toBeUndefined();
    // Changes: a service IP dropped, a node gone.
    h.server.update('services', 'shop', 'api', (o) => {
      o.spec.clusterIPs = ['10.96.0.10'];
    });
    h.server.delete('nodes', undefined, 'n2');
    await seen(cluster);
    expect(cluster.lookup('fd00:96::10', T0)).toBeUndefined();
    expect(cluster.lookup('10.0.0.2', T0)).toBeUndefined();
    expect(cluster.stats()).toEqual({ podIps: 0, serviceIps: 1, nodeIps: 3 });
  });

  it('answers for the time the bytes flowed: retention after a pod ends, and IP reuse', async () => {
    const clock = new ManualClock(T0);
    h.server.create(
      'pods',
      pod({ name: 'old', node: 'n1', ips: ['10.244.1.50'], startTime: iso(T0 - 3_600_000) }),
    );
    const { cluster } = await start(clock);
    const old = podEp('old', 'default', 'old', 'n1', 'eu-west-1a');
    expect(cluster.lookup('10.244.1.50', T0)).toEqual(old);

    const ended = T0 + 10_000;
    clock.t = ended;
    h.server.delete('pods', 'default', 'old');
    await seen(cluster);
    // Late flows within pod-retention (2 min) after the end still belong to the old pod.
    expect(cluster.lookup('10.244.1.50', ended + 119_000)).toEqual(old);
    expect(cluster.lookup('10.244.1.50', ended + 121_000)).toBeUndefined();

    // The IP is reused by a new pod that started at T0 + 30 s.
    const started = T0 + 30_000;
    clock.t = started;
    h.server.create('pods', pod({ name: 'new', node: 'n2', ips: ['10.244.1.50'], startTime: iso(started) }));
    await seen(cluster);
    const fresh = podEp('new', 'default', 'new', 'n2', 'eu-west-1b');
    expect(cluster.lookup('10.244.1.50', started)).toEqual(fresh); // the live pod wins from its start
    expect(cluster.lookup('10.244.1.50', started + 60_000)).toEqual(fresh);
    expect(cluster.lookup('10.244.1.50', T0)).toEqual(old); // before it started: the old pod's bytes
    expect(cluster.lookup('10.244.1.50', started - 1_000)).toEqual(old); // old ended, still retained

    // After the retention the old entry is swept: memory stays bounded, the new pod answers alone.
    clock.t = ended + 121_000;
    cluster.sweep();
    expect(cluster.lookup('10.244.1.50', T0)).toEqual(fresh);
    expect(cluster.stats().podIps).toBe(1);
  });

  it('tells an enrich stage that keeps answers by address what changed, address by address', async () => {
    const clock = new ManualClock(T0);
    h.server.create(
      'pods',
      pod({ name: 'a', node: 'n1', ips: ['10.244.1.60'], startTime: iso(T0 - 60_000) }),
    );
    const { cluster } = await start(clock);
    const told: (string | undefined)[] = [];
    cluster.onChange((ip) => told.push(ip));
    const enricher = new Enricher({ groupPublicIps: false }, { cluster, log: silentLogger });
    const flow = { proto: 6, txBytes: 1, rxBytes: 1, txPackets: 1, rxPackets: 1 };
    const enrich = (dst: string, at: number): EnrichedFlow => {
      const out: EnrichedFlow[] = [];
      enricher.enrichBatch(
        { seq: 1, from: at - 5000, to: at, flows: [{ ...flow, src: '10.0.0.1', dst }] },
        'n1',
        out,
      );
      return out[0];
    };
    expect(cluster.timeless('10.244.1.60')).toBe(true);
    expect(enrich('10.244.1.60', T0)).toMatchObject({
      dstPod: 'a',
      dstZone: 'eu-west-1a',
      dstRegion: 'eu-west-1',
    });
    expect(enrich('203.0.113.9', T0)).toMatchObject({ dstType: 'public', dstPod: '' });

    // The pod ends and its address goes to a pod on the other node: the kept answers follow.
    clock.t = T0 + 10_000;
    h.server.delete('pods', 'default', 'a');
    h.server.create(
      'pods',
      pod({ name: 'b', node: 'n2', ips: ['10.244.1.60'], startTime: iso(T0 + 20_000) }),
    );
    await seen(cluster);
    expect(told).toContain('10.244.1.60');
    // An ended pod held it: its answer depends on when the bytes flowed, so none is kept.
    expect(cluster.timeless('10.244.1.60')).toBe(false);
    expect(enrich('10.244.1.60', T0 + 5_000)).toMatchObject({ dstPod: 'a', dstZone: 'eu-west-1a' });
    expect(enrich('10.244.1.60', T0 + 30_000)).toMatchObject({ dstPod: 'b', dstZone: 'eu-west-1b' });
    expect(enrich('10.244.1.60', T0 + 5_000)).toMatchObject({ dstPod: 'a' });

    // A public address that becomes a pod's; a node's region changing (kept answers hold regions).
    h.server.create('pods', pod({ name: 'c', node: 'n1', ips: ['203.0.113.9'], startTime: iso(T0) }));
    h.server.update('nodes', undefined, 'n2', (o) => {
      o.metadata.labels['topology.kubernetes.io/region'] = 'eu-central-1';
    });
    await seen(cluster);
    expect(told).toContain(undefined);
    expect(enrich('203.0.113.9', T0 + 30_000)).toMatchObject({ dstType: 'pod', dstPod: 'c' });
    expect(enrich('10.244.1.60', T0 + 30_000)).toMatchObject({
      dstPod: 'b',
      dstRegion: 'eu-central-1',
      trafficClass: 'cross-region',
    });
  });

  it('treats phase Succeeded/Failed as ended and sweeps churned pods', async () => {
    const clock = new ManualClock(T0);
    const { cluster } = await start(clock, 60_000);
    for (let i = 0; i < 50; i++) {
      h.server.create(
        'pods',
        pod({
          name: `job-${i}`,
          node: 'n1',
          ips: [`10.244.3.${i}`],
          owner: { kind: 'Job', name: 'migrate' },
          startTime: iso(T0 - 1000),
        }),
      );
    }
    await seen(cluster);
    expect(cluster.stats().podIps).toBe(50);
    for (let i = 0; i < 50; i++) {
      if (i % 2 === 0) h.server.delete('pods', 'default', `job-${i}`);
      else
        h.server.update('pods', 'default', `job-${i}`, (o) => {
          o.status.phase = i % 4 === 1 ? 'Succeeded' : 'Failed';
        });
    }
    await seen(cluster);
    expect(cluster.lookup('10.244.3.1', T0 + 59_000)?.name).toBe('job-1');
    expect(cluster.lookup('10.244.3.2', T0 + 59_000)?.workload).toBe('Job/migrate');
    clock.advance(61_000);
    cluster.sweep();
    expect(cluster.stats().podIps).toBe(0);
    expect(cluster.lookup('10.244.3.1', T0)).toBeUndefined();
  });

  it('is not ready until every informer listed; reports RBAC for the one that is denied', async () => {
    h.server.forbid('replicasets');
    const cap = captureLogger();
    cluster = new KubeCluster(
      { podRetention: 120_000 },
      { kubeConfig: h.kubeConfig, log: cap.log },
      new ManualClock(T0),
      {
        initialBackoffMs: 50,
        maxBackoffMs: 200,
      },
    );
    cluster.start();
    await until(() => cap.lines.some((l) => l.msg.startsWith('RBAC:')), 'RBAC line');
    expect(cluster.synced()).toBe(false);
    expect(cap.lines.filter((l) => l.msg.startsWith('RBAC:')).map((l) => l.msg)).toEqual([
      'RBAC: cannot list replicasets at the cluster scope; grant get/list/watch on replicasets.apps',
    ]);
    h.server.clearFaults();
    await cluster.whenSynced();
    expect(cluster.synced()).toBe(true);
  });
});
