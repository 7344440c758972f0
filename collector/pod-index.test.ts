// The collector's PodIndex as Kubernetes fills it (collector/kube-pods.ts): the pods of one node from
// the test API server, and a clock the test moves, so that pod-retention and the sweep that forgets
// ended pods take no real time.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type Harness, startHarness, startKubePods } from '../test/kube-api-server/harness.js';
import { pod } from '../test/kube-api-server/objects.js';
import type { KubePods, KubePodsConfig } from './kube-pods.js';
import type { PodIndex } from './pod-index.js';

let h: Harness;
let pods: KubePods | undefined;

beforeEach(async () => {
  h = await startHarness();
  h.server.create('pods', pod({ name: 'web', node: 'n1', ips: ['10.244.1.5'] }));
  h.server.create('pods', pod({ name: 'job', node: 'n1', ips: ['10.244.1.8'] }));
  h.server.create('pods', pod({ name: 'far', node: 'n2', ips: ['10.244.2.5'] }));
});
afterEach(async () => {
  await pods?.close();
  pods = undefined;
  await h.close();
});

async function start(over: Partial<KubePodsConfig> = {}) {
  const r = await startKubePods(h, over);
  pods = r.pods;
  const index: PodIndex = r.pods;
  return { index, pods: r.pods, clock: r.clock, seen: r.seen };
}

describe('PodIndex from the pods of this node (KubePods)', () => {
  it("a pod's old IP stays local for pod-retention after it changes; the new one is local at once", async () => {
    const { index, clock, seen } = await start();
    h.server.update('pods', 'default', 'web', (o) => {
      o.status.podIP = '10.244.1.50';
      o.status.podIPs = [{ ip: '10.244.1.50' }];
    });
    await seen();
    expect(index.isLocal('10.244.1.50')).toBe(true);
    clock.advance(120_000);
    expect(index.isLocal('10.244.1.5')).toBe(true);
    clock.advance(1);
    expect(index.isLocal('10.244.1.5')).toBe(false);
    expect(index.isLocal('10.244.1.50')).toBe(true);
  });

  it('retention runs from when a pod ended, not from when its object was deleted later', async () => {
    const { index, clock, seen } = await start();
    h.server.update('pods', 'default', 'job', (o) => {
      o.status.phase = 'Succeeded';
    });
    await seen();
    clock.advance(100_000);
    h.server.delete('pods', 'default', 'job');
    await seen();
    clock.advance(20_000);
    expect(index.isLocal('10.244.1.8')).toBe(true);
    clock.advance(1);
    expect(index.isLocal('10.244.1.8')).toBe(false);
  });

  it('a pod recreated under the same name with another IP: both local, the old one only for pod-retention', async () => {
    const { index, clock, seen } = await start();
    h.server.delete('pods', 'default', 'web');
    h.server.create('pods', pod({ name: 'web', node: 'n1', ips: ['10.244.1.6'] }));
    await seen();
    expect(index.isLocal('10.244.1.5')).toBe(true);
    expect(index.isLocal('10.244.1.6')).toBe(true);
    clock.advance(120_001);
    expect(index.isLocal('10.244.1.5')).toBe(false);
    expect(index.isLocal('10.244.1.6')).toBe(true);
  });

  it("another node's pods and unknown addresses are never local", async () => {
    const { index } = await start();
    expect(index.isLocal('10.244.1.5')).toBe(true);
    expect(index.isLocal('10.244.2.5')).toBe(false);
    expect(index.isLocal('10.244.1.99')).toBe(false);
    expect(index.isLocal('')).toBe(false);
  });

  it('the sweep runs on the clock every half pod-retention (1 s to 30 s) and stops at close()', async () => {
    let r = await start({ podRetention: 120_000 });
    expect(r.clock.delays()).toEqual([30_000]);
    r.clock.advance(30_000);
    // The sweep ran and set the next one.
    expect(r.clock.delays()).toEqual([30_000]);
    await r.pods.close();
    expect(r.clock.pending).toBe(0);

    r = await start({ podRetention: 10_000 });
    expect(r.clock.delays()).toEqual([5_000]);
    await r.pods.close();
    r = await start({ podRetention: 500 });
    expect(r.clock.delays()).toEqual([1_000]);
  });
});
