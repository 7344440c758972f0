// The one place where the collector decides which addresses are its local endpoints:
// - `podflow collector` with an API server (in-cluster, --kubeconfig, $KUBECONFIG, ~/.kube/config):
//   the pods of this node (collector/kube-pods.ts);
// - `podflow standalone` with an API server: this host's addresses AND the pods of the node named
//   --node-name, so that a laptop with a kubeconfig still reports its own traffic and a single-node
//   cluster (kind, k3s) also reports its pods;
// - without an API server: this host's addresses (src labels then describe the node itself).
import type { Config } from '../shared/config.js';
import { resolveKubeTarget } from '../shared/kube-access.js';
import type { Logger } from '../shared/log.js';
import { HostIndex, type HostIndexDeps } from './host-index.js';
import { KubePods } from './kube-pods.js';
import type { PodIndex } from './pod-index.js';

export interface LocalIndex {
  index: PodIndex;
  /** What the index is: `host` (this host's addresses), `kubernetes` (pods of this node) or both. */
  kind: 'host' | 'kubernetes' | 'host+kubernetes';
  /** Starts watching (host addresses, pod informers). Returns at once. */
  start(): Promise<void>;
  /** Why the index cannot answer yet (informers not synced), or undefined. */
  notReady(): string | undefined;
  close(): Promise<void>;
}

export type LocalIndexConfig = Pick<
  Config,
  'command' | 'nodeName' | 'kubeconfig' | 'excludeNamespaces' | 'hostNetwork' | 'podRetention'
>;

export interface LocalIndexDeps {
  log: Logger;
  /** Where a kubeconfig is looked for (tests). @default process.env and the home directory */
  env?: NodeJS.ProcessEnv;
  home?: string;
  /** Interface list of this host (tests). */
  interfaces?: HostIndexDeps['interfaces'];
}

/**
 * The local index for this process. Resolving the kubeconfig reads files; a given but unusable one
 * is a StartupError naming it. Informers start only in `start()`.
 */
export async function createLocalIndex(config: LocalIndexConfig, deps: LocalIndexDeps): Promise<LocalIndex> {
  const { log } = deps;
  const host = new HostIndex({}, { log: log.child({ stage: 'host-index' }), interfaces: deps.interfaces });
  const access = resolveKubeTarget({ kubeconfig: config.kubeconfig, env: deps.env, home: deps.home });
  if (access === undefined) {
    return {
      index: host,
      kind: 'host',
      start: async () => {
        host.start();
        log.info({ addresses: host.addresses() }, 'local endpoints: this host (no Kubernetes API server)');
      },
      notReady: () => undefined,
      close: async () => host.close(),
    };
  }
  const pods = new KubePods(
    {
      nodeName: config.nodeName,
      excludeNamespaces: config.excludeNamespaces,
      hostNetwork: config.hostNetwork,
      podRetention: config.podRetention,
    },
    { target: access, log: log.child({ stage: 'kube-pods' }) },
  );
  const notReady = () => {
    if (pods.synced()) return undefined;
    const why = pods.lastError();
    return `pods of node ${config.nodeName} not listed yet${why === undefined ? '' : ` (${why})`}`;
  };
  if (config.command === 'collector') {
    return {
      index: pods,
      kind: 'kubernetes',
      start: async () => {
        pods.start();
        log.info({ kubeconfig: access.source, node: config.nodeName }, 'local endpoints: pods of this node');
      },
      notReady,
      close: () => pods.close(),
    };
  }
  return {
    index: { isLocal: (ip) => host.isLocal(ip) || pods.isLocal(ip) },
    kind: 'host+kubernetes',
    start: async () => {
      host.start();
      pods.start();
      log.info(
        { kubeconfig: access.source, node: config.nodeName, addresses: host.addresses() },
        'local endpoints: this host and the pods of node',
      );
    },
    notReady,
    close: async () => {
      host.close();
      await pods.close();
    },
  };
}
