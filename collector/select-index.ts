// The one place where the collector's local endpoints are put together from what the wiring
// (cmd/) chose:
// - pods of this node only (`podflow collector` with an API server: in-cluster, --kubeconfig,
//   $KUBECONFIG, ~/.kube/config): collector/kube-pods.ts over the collector's own watch;
// - this host's addresses AND the pods of the node named --node-name (`podflow standalone` with an
//   API server, over the exporter's pod informer), so that a laptop with a kubeconfig still reports
//   its own traffic and a single-node cluster (kind, k3s) also reports its pods;
// - without an API server: this host's addresses (src labels then describe the node itself).
import type { Config } from '../shared/config.js';
import { resolveKubeTarget } from '../shared/kube-access.js';
import type { PodFeed } from '../shared/kube-object.js';
import type { Logger } from '../shared/log.js';
import { HostIndex, type HostIndexDeps } from './host-index.js';
import { KubePods, watchNodePods } from './kube-pods.js';
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
  'nodeName' | 'excludeNamespaces' | 'hostNetwork' | 'podRetention'
>;

export interface LocalIndexDeps {
  log: Logger;
  /** The pods of this node. None: no API server, this host's addresses are the local endpoints. */
  pods?: PodFeed;
  /** With `pods`: this host's addresses are local endpoints too (standalone). @default false */
  withHost?: boolean;
  /** Where the pods come from, for the start-up line (the kubeconfig's source). */
  podsFrom?: string;
  /** Interface list of this host (tests). */
  interfaces?: HostIndexDeps['interfaces'];
}

/** The local index of what the wiring chose. No I/O until `start()`. */
export function createLocalIndex(config: LocalIndexConfig, deps: LocalIndexDeps): LocalIndex {
  const { log, pods: feed } = deps;
  const host = new HostIndex({}, { log: log.child({ stage: 'host-index' }), interfaces: deps.interfaces });
  if (feed === undefined) {
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
  const pods = new KubePods(config, feed);
  const notReady = () => {
    if (feed.synced()) return undefined;
    const why = feed.lastError();
    return `pods of node ${config.nodeName} not listed yet${why === undefined ? '' : ` (${why})`}`;
  };
  const where = { kubeconfig: deps.podsFrom, node: config.nodeName };
  if (deps.withHost !== true) {
    return {
      index: pods,
      kind: 'kubernetes',
      start: async () => {
        pods.start();
        log.info(where, 'local endpoints: pods of this node');
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
      log.info({ ...where, addresses: host.addresses() }, 'local endpoints: this host and the pods of node');
    },
    notReady,
    close: async () => {
      host.close();
      await pods.close();
    },
  };
}

/**
 * `podflow collector`: the pods of this node over the collector's own watch when a kubeconfig is
 * found, else this host's addresses. Resolving the kubeconfig reads files; a given but unusable
 * one is a StartupError naming it.
 */
export async function nodeLocalIndex(
  config: LocalIndexConfig & Pick<Config, 'kubeconfig'>,
  deps: Omit<LocalIndexDeps, 'pods' | 'podsFrom'> & {
    /** Where a kubeconfig is looked for (tests). @default process.env and the home directory */
    env?: NodeJS.ProcessEnv;
    home?: string;
  },
): Promise<LocalIndex> {
  const target = resolveKubeTarget({ kubeconfig: config.kubeconfig, env: deps.env, home: deps.home });
  if (target === undefined) return createLocalIndex(config, deps);
  const pods = watchNodePods(config, { target, log: deps.log.child({ stage: 'kube-pods' }) });
  return createLocalIndex(config, { ...deps, pods, podsFrom: target.source });
}
