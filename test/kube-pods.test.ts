// The collector's PodIndex (collector/kube-pods.ts) through its real start-up path: its own client
// against the test API server, with a clock the test moves for the retention window.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { KubePods, KubePodsConfig } from '../collector/kube-pods.js';
import {
  captureLogger,
  type Harness,
  ManualClock,
  startHarness,
  startKubePods,
  until,
} from './kube-api-server/harness.js';
import { pod } from './kube-api-server/objects.js';

let h: Harness;
let index: KubePods | undefined;
/** Waits until the index last started has applied every change made so far on the server. */
let seenNow: (() => Promise<void>) | undefined;

beforeEach(async () => {
  h = await startHarness();
  const s = h.server;
  s.create('pods', pod({ name: 'web', node: 'n1', ips: ['10.244.1.5', 'fd00:10:244:1::5'] }));
  s.create('pods', pod({ name: 'db', namespace: 'data', node: 'n1', ips: ['10.244.1.6'] }));
  s.create('pods', pod({ name: 'other', node: 'n2', ips: ['10.244.2.5'] }));
  s.create('pods', pod({ name: 'sys', namespace: 'kube-system', node: 'n1', ips: ['10.244.1.7'] }));
  s.create(
    'pods',
    pod({ name: 'proxy', namespace: 'kube-system', node: 'n1', ips: ['10.0.0.1'], hostNetwork: true }),
  );
  s.create(
    'pods',
    pod({ name: 'agent', namespace: 'monitoring', node: 'n1', ips: ['10.0.0.1'], hostNetwork: true }),
  );
  s.create('pods', pod({ name: 'pending', node: 'n1', phase: 'Pending' }));
});
afterEach(async () => {
  await index?.close();
  index = undefined;
  await h.close();
});

async function start(over: Partial<KubePodsConfig> = {}, clock = new ManualClock()) {
  const cap = captureLogger();
  const r = await startKubePods(h, over, {
    clock,
    log: cap.log,
    beforeStart: (i) => expect(i.synced()).toBe(false),
  });
  index = r.pods;
  seenNow = r.seen;
  return { index, clock, cap };
}

/** Wait until the index has applied every change made so far on the server. */
const seen = (_i: KubePods) => seenNow!();

describe('KubePods (collector PodIndex)', () => {
  it("watches only this node's pods and knows every IP, v4 and v6", async () => {
    const { index } = await start();
    expect(index.synced()).toBe(true);
    expect(index.localIps()).toEqual(['10.244.1.5', '10.244.1.6', '10.244.1.7', 'fd00:10:244:1::5']);
    expect(index.isLocal('10.244.2.5')).toBe(false);
    // The API server did the node filtering.
    const lists = h.server.requests.filter((r) => r.path === '/api/v1/pods');
    expect(lists.every((r) => r.query.get('fieldSelector') === 'spec.nodeName=n1')).toBe(true);
  });

  it('leaves out excluded namespaces (server-side and locally)', async () => {
    const { index } = await start({ excludeNamespaces: ['kube-system', 'data'] });
    expect(index.localIps()).toEqual(['10.244.1.5', 'fd00:10:244:1::5']);
    const q = h.server.requests.find((r) => r.path === '/api/v1/pods')?.query.get('fieldSelector');
    expect(q).toBe('spec.nodeName=n1,metadata.namespace!=kube-system,metadata.namespace!=data');
  });

  it('host-network pods: skipped when off, the node IP is local when on', async () => {
    let r = await start({ hostNetwork: false });
    expect(r.index.isLocal('10.0.0.1')).toBe(false);
    await r.index.close();
    r = await start({ hostNetwork: true });
    expect(r.index.isLocal('10.0.0.1')).toBe(true);
    // Two host-network pods share the IP: it stays local until both are gone.
    h.server.delete('pods', 'kube-system', 'proxy');
    await seen(r.index);
    expect(r.index.isLocal('10.0.0.1')).toBe(true);
  });

  it('follows pods appearing, getting an IP and leaving; ended pods stay local for pod-retention', async () => {
    const { index, clock } = await start();
    h.server.update('pods', 'default', 'pending', (o) => {
      o.status.phase = 'Running';
      o.status.podIP = '10.244.1.9';
      o.status.podIPs = [{ ip: '10.244.1.9' }];
    });
    await until(() => index.isLocal('10.244.1.9'), 'pod got an IP');

    h.server.delete('pods', 'default', 'web');
    await seen(index);
    clock.advance(119_000);
    expect(index.isLocal('10.244.1.5')).toBe(true);
    expect(index.isLocal('fd00:10:244:1::5')).toBe(true);
    clock.advance(2_000);
    expect(index.isLocal('10.244.1.5')).toBe(false);
    index.sweep();
    expect(index.localIps()).not.toContain('10.244.1.5');

    // A completed pod (phase Succeeded, object kept) counts the same way.
    h.server.update('pods', 'data', 'db', (o) => {
      o.status.phase = 'Succeeded';
    });
    await seen(index);
    clock.advance(60_000);
    expect(index.isLocal('10.244.1.6')).toBe(true);
    clock.advance(61_000);
    expect(index.isLocal('10.244.1.6')).toBe(false);
  });

  it('an IP reused by a new pod is local while the new pod lives', async () => {
    const { index, clock } = await start();
    h.server.delete('pods', 'kube-system', 'sys');
    h.server.create('pods', pod({ name: 'sys2', namespace: 'kube-system', node: 'n1', ips: ['10.244.1.7'] }));
    await seen(index);
    clock.advance(10 * 60_000);
    index.sweep();
    expect(index.isLocal('10.244.1.7')).toBe(true);
  });
});
