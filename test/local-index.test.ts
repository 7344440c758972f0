// Which addresses the collector reports as its own (collector/select-index.ts), through the real
// kubeconfig resolution and the real client against the test API server.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type LocalIndex, type LocalIndexConfig, nodeLocalIndex } from '../collector/select-index.js';
import { StartupError } from '../shared/errors.js';
import { captureLogger, type Harness, startHarness, until } from './kube-api-server/harness.js';
import { pod } from './kube-api-server/objects.js';

const interfaces = () => ({
  lo: [{ address: '127.0.0.1', internal: true }],
  eth0: [
    { address: '192.168.7.20', internal: false },
    { address: 'fd00:7::20', internal: false },
  ],
});

const base: LocalIndexConfig & { kubeconfig: string | undefined } = {
  nodeName: 'n1',
  kubeconfig: undefined,
  excludeNamespaces: [],
  hostNetwork: false,
  podRetention: 120_000,
};

let h: Harness;
let home: string;
let local: LocalIndex | undefined;

beforeEach(async () => {
  h = await startHarness();
  h.server.create('pods', pod({ name: 'web', node: 'n1', ips: ['10.244.1.5', 'fd00:10:244:1::5'] }));
  h.server.create('pods', pod({ name: 'other', node: 'n2', ips: ['10.244.2.5'] }));
  home = await mkdtemp(join(tmpdir(), 'podflow-home-'));
});
afterEach(async () => {
  await local?.close();
  local = undefined;
  await h.close();
  await rm(home, { recursive: true, force: true });
});

/** `withHost`: this host's addresses next to the pods, as `podflow standalone` asks. */
const make = (over: Partial<typeof base>, env: NodeJS.ProcessEnv = {}, withHost = false) =>
  nodeLocalIndex({ ...base, ...over }, { log: captureLogger().log, env, home, interfaces, withHost });

describe('createLocalIndex', () => {
  it('without an API server: this host’s addresses, loopback excluded, ready at once', async () => {
    local = await make({}, { KUBECONFIG: join(home, 'missing') });
    expect(local.kind).toBe('host');
    await local.start();
    expect(local.notReady()).toBeUndefined();
    expect(
      ['192.168.7.20', 'fd00:7::20', '127.0.0.1', '10.244.1.5'].map((ip) => local!.index.isLocal(ip)),
    ).toEqual([true, true, false, false]);
  });

  it('collector with a kubeconfig: the pods of this node only, not ready until listed', async () => {
    local = await make({ kubeconfig: h.kubeconfigPath });
    expect(local.kind).toBe('kubernetes');
    expect(local.notReady()).toBe('pods of node n1 not listed yet');
    await local.start();
    await until(() => local!.notReady() === undefined, 'pods listed');
    expect(
      ['10.244.1.5', 'fd00:10:244:1::5', '10.244.2.5', '192.168.7.20'].map((ip) => local!.index.isLocal(ip)),
    ).toEqual([true, true, false, false]);
  });

  it('finds the kubeconfig through $KUBECONFIG like kubectl', async () => {
    local = await make({}, { KUBECONFIG: h.kubeconfigPath });
    expect(local.kind).toBe('kubernetes');
  });

  it('standalone with a kubeconfig: this host and the pods of the node', async () => {
    local = await make({ kubeconfig: h.kubeconfigPath }, {}, true);
    expect(local.kind).toBe('host+kubernetes');
    await local.start();
    await until(() => local!.notReady() === undefined, 'pods listed');
    expect(['10.244.1.5', '192.168.7.20', '10.244.2.5'].map((ip) => local!.index.isLocal(ip))).toEqual([
      true,
      true,
      false,
    ]);
  });

  it('a given kubeconfig that is unusable stops start-up with one line naming it', async () => {
    const bad = join(home, 'kubeconfig');
    await writeFile(bad, 'this: [is not a kubeconfig');
    await expect(make({ kubeconfig: bad })).rejects.toThrow(StartupError);
    await expect(make({ kubeconfig: bad })).rejects.toThrow(`--kubeconfig ${bad}`);
  });
});
