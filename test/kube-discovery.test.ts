// Collector discovery (exporter/kube-discovery.ts) with the real client against the test API server.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { KubeDiscovery } from '../exporter/kube-discovery.js';
import { captureLogger, type Harness, startHarness, until } from './kube-api-server/harness.js';
import { pod } from './kube-api-server/objects.js';

const SELECTOR = 'app.kubernetes.io/name=podflow,app.kubernetes.io/component=collector';
const collectorLabels = { 'app.kubernetes.io/name': 'podflow', 'app.kubernetes.io/component': 'collector' };

let h: Harness;
let d: KubeDiscovery | undefined;

beforeEach(async () => {
  h = await startHarness();
  const s = h.server;
  s.create(
    'pods',
    pod({ name: 'c-a', namespace: 'podflow', node: 'n1', ips: ['10.0.0.1'], labels: collectorLabels }),
  );
  s.create(
    'pods',
    pod({
      name: 'c-b',
      namespace: 'podflow',
      node: 'n2',
      ips: ['fd00::2', '10.0.0.2'],
      labels: collectorLabels,
    }),
  );
  s.create(
    'pods',
    pod({
      name: 'c-c',
      namespace: 'podflow',
      node: 'n3',
      ips: ['10.0.0.3'],
      labels: collectorLabels,
      ready: false,
    }),
  );
  s.create(
    'pods',
    pod({ name: 'c-d', namespace: 'podflow', node: 'n4', labels: collectorLabels, phase: 'Pending' }),
  );
  // Same labels in another namespace, and the exporter itself: not collectors of this install.
  s.create(
    'pods',
    pod({ name: 'c-x', namespace: 'other', node: 'n1', ips: ['10.9.0.1'], labels: collectorLabels }),
  );
  s.create(
    'pods',
    pod({
      name: 'exporter',
      namespace: 'podflow',
      node: 'n1',
      ips: ['10.0.0.9'],
      labels: { 'app.kubernetes.io/name': 'podflow', 'app.kubernetes.io/component': 'exporter' },
    }),
  );
});
afterEach(async () => {
  await d?.close();
  d = undefined;
  await h.close();
});

describe('KubeDiscovery', () => {
  it('lists running, ready collectors of its namespace as base URLs and follows changes', async () => {
    const cap = captureLogger();
    d = new KubeDiscovery(
      { namespace: 'podflow', collectorSelector: SELECTOR, collectorPort: 9470 },
      { kubeConfig: h.kubeConfig, log: cap.log },
    );
    const changes: (readonly string[])[] = [];
    d.onChange((u) => changes.push(u));
    d.start();
    await d.whenSynced();
    expect(d.synced()).toBe(true);
    // IPv6 in brackets; a dual-stack pod appears once, by its first IP.
    expect(d.current()).toEqual(['http://10.0.0.1:9470', 'http://[fd00::2]:9470']);
    // With their nodes: the key that shards the collectors among exporters (exporter/shard.ts).
    expect(d.collectors()).toEqual([
      { url: 'http://10.0.0.1:9470', node: 'n1' },
      { url: 'http://[fd00::2]:9470', node: 'n2' },
    ]);
    const q = h.server.requests.filter((r) => !r.watch)[0];
    expect(q.path).toBe('/api/v1/namespaces/podflow/pods');
    expect(q.query.get('labelSelector')).toBe(SELECTOR);

    h.server.update('pods', 'podflow', 'c-c', (o) => {
      o.status.conditions = o.status.conditions.map((c: { type: string }) => ({ ...c, status: 'True' }));
    });
    await until(() => d?.current().includes('http://10.0.0.3:9470') === true, 'ready collector added');
    h.server.delete('pods', 'podflow', 'c-a');
    await until(() => d?.current().length === 2, 'deleted collector removed');
    // A terminating collector is still pulled (it drains its backlog) until it stops running.
    h.server.update('pods', 'podflow', 'c-b', (o) => {
      o.metadata.deletionTimestamp = new Date().toISOString();
    });
    await until(
      () => h.server.requests.length > 0 && d?.current().length === 2,
      'terminating collector kept',
    );
    h.server.update('pods', 'podflow', 'c-b', (o) => {
      o.status.phase = 'Succeeded';
    });
    await until(() => d?.current().length === 1, 'stopped collector removed');
    expect(d.current()).toEqual(['http://10.0.0.3:9470']);
    expect(changes.at(-1)).toEqual(['http://10.0.0.3:9470']);
  });
});
