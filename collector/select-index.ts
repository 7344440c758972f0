// The one place where the collector decides which addresses are its local endpoints: the pods of
// this node from Kubernetes (when an API server is reachable), else this host's own addresses.
import type { Config } from '../shared/config.js';
import type { Logger } from '../shared/log.js';
import { HostIndex } from './host-index.js';
import type { PodIndex } from './pod-index.js';

export interface LocalIndex {
  index: PodIndex;
  /** What the index is: `host` (this host's addresses) or `kubernetes` (pods of this node). */
  kind: 'host' | 'kubernetes';
  /** Starts watching (host addresses, or pod informers). */
  start(): Promise<void>;
  /** Why the index cannot answer yet (informers not synced), or undefined. */
  notReady(): string | undefined;
  close(): Promise<void>;
}

/**
 * The pod index for this process. A Kubernetes-backed index (collector/kube-pods.ts) plugs in here
 * when a kubeconfig or in-cluster config is present; until then, and without one, the host's
 * addresses are the local endpoints (src labels then describe the node itself).
 */
export async function createLocalIndex(
  _config: Pick<Config, 'nodeName' | 'kubeconfig'>,
  log: Logger,
): Promise<LocalIndex> {
  const host = new HostIndex({}, { log: log.child({ stage: 'host-index' }) });
  return {
    index: host,
    kind: 'host',
    start: async () => {
      host.start();
      log.info({ addresses: host.addresses() }, 'local endpoints: this host');
    },
    notReady: () => undefined,
    close: async () => host.close(),
  };
}
