// `podflow standalone` with Kubernetes watches pods once: the collecting half's local endpoints
// (the pods of --node-name) come out of the exporting half's pod informer, not out of a watch of
// their own. The test API server counts the requests: of the real executable (in a test network
// namespace, reaching the API server through a relay), and of the two halves wired in-process the
// same way cmd/standalone.ts wires them.
import { type ChildProcess, execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createLocalIndex, type LocalIndex } from '../collector/select-index.js';
import { createKubernetes, type Kubernetes } from '../exporter/kubernetes.js';
import { resolveKubeConfig } from '../shared/kube.js';
import { cleanupAll, createNetns, httpStatus, kill, requireRoot } from './helpers/netns.js';
import { type Relay, relayIntoNetns } from './helpers/relay.js';
import { waitFor } from './helpers/wait.js';
import { captureLogger, type Harness, startHarness, until } from './kube-api-server/harness.js';
import { pod } from './kube-api-server/objects.js';

const ROOT = new URL('..', import.meta.url).pathname;
const BIN = join(ROOT, 'bin/podflow.js');
const root = requireRoot();
const READYZ = 'http://127.0.0.1:9480/readyz';

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
  h.server.create('pods', pod({ name: 'web', node: 'n1', ips: ['10.244.1.5', 'fd00:10:244:1::5'] }));
  h.server.create('pods', pod({ name: 'other', node: 'n2', ips: ['10.244.2.5'] }));
});
afterAll(async () => {
  await h.close();
  await cleanupAll();
});

/** The pod requests the API server has seen so far: lists and watches. */
const podRequests = () => {
  const pods = h.server.requests.filter((r) => r.path === '/api/v1/pods');
  return {
    lists: pods.filter((r) => !r.watch).length,
    watches: pods.filter((r) => r.watch).length,
    // The collector's own watch asks for its node's pods only.
    byNode: pods.filter((r) => (r.query.get('fieldSelector') ?? '').includes('spec.nodeName')).length,
  };
};

describe('standalone halves wired in-process', () => {
  let kube: Kubernetes | undefined;
  let local: LocalIndex | undefined;
  afterEach(async () => {
    await local?.close();
    await kube?.close();
  });

  it('the pods of the node are local through the cluster view’s one pod informer', async () => {
    h.server.requests.length = 0;
    const { log } = captureLogger();
    const access = resolveKubeConfig({ kubeconfig: h.kubeconfigPath })!;
    kube = createKubernetes({ podRetention: 120_000 }, { access, log });
    local = createLocalIndex(
      { nodeName: 'n1', excludeNamespaces: [], hostNetwork: false, podRetention: 120_000 },
      { log, pods: kube.podsOfNode('n1'), withHost: true, interfaces: () => ({}) },
    );
    expect(local.kind).toBe('host+kubernetes');
    expect(local.notReady()).toBe('pods of node n1 not listed yet');
    kube.start();
    await local.start();
    await until(
      () => local!.notReady() === undefined && podRequests().watches > 0,
      'pods listed and watched',
    );
    expect(['10.244.1.5', 'fd00:10:244:1::5', '10.244.2.5'].map((ip) => local!.index.isLocal(ip))).toEqual([
      true,
      true,
      false,
    ]);
    // A pod scheduled on the node later is local too: the informer's events reach the index.
    h.server.create('pods', pod({ name: 'late', node: 'n1', ips: ['10.244.1.9'] }));
    await until(() => local!.index.isLocal('10.244.1.9'), 'new pod of the node is local');
    expect(podRequests()).toEqual({ lists: 1, watches: 1, byNode: 0 });
  });
});

describe.skipIf(!root)('podflow standalone (the executable) with a kubeconfig', () => {
  let proc: ChildProcess | undefined;
  let relay: Relay | undefined;
  let dir: string;
  beforeAll(async () => {
    await promisify(execFile)('npm', ['run', 'build', '--silent'], { cwd: ROOT });
    dir = await mkdtemp(join(tmpdir(), 'podflow-standalone-kube-'));
  }, 120_000);
  afterAll(async () => {
    if (proc) await kill(proc);
    await relay?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('lists and watches pods once, for the cluster view and the local endpoints together', async () => {
    const ns = await createNetns('standalone');
    await ns.trackConnections();
    relay = await relayIntoNetns(ns, 6443, Number(new URL(h.server.url).port), dir);
    const kubeconfig = join(dir, 'kubeconfig');
    await writeFile(kubeconfig, h.server.kubeconfigYaml().replace(h.server.url, 'http://127.0.0.1:6443'));
    h.server.requests.length = 0;
    let log = '';
    proc = ns.spawn(
      process.execPath,
      [BIN, 'standalone', '--kubeconfig', kubeconfig, '--node-name', 'n1', '--listen', '127.0.0.1:9480'],
      { HOME: dir },
    );
    proc.stderr?.on('data', (d) => {
      log += d;
    });
    await until(
      () => log.includes('local endpoints: this host and the pods of node'),
      'local endpoints from Kubernetes',
      30_000,
    );
    // Ready: the cluster view and the pods of the node are listed (and the first round exported).
    await waitFor(
      '/readyz 200',
      async () => {
        const status = await httpStatus(ns, READYZ);
        return status === 200 ? true : undefined;
      },
      30_000,
    );
    await until(() => podRequests().watches > 0, 'pods watched');
    expect(podRequests()).toEqual({ lists: 1, watches: 1, byNode: 0 });
  });
});
