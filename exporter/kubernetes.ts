// The one place where the export side's Kubernetes parts plug in: the cluster view used for
// enrichment (exporter/kube-cluster.ts, informers) and, when the wiring asks for it (`podflow
// exporter` without --collectors), collector discovery by label selector
// (exporter/kube-discovery.ts). The wiring (cmd/) resolves the API server's access once and says
// whether to discover; without an API server there is nothing here.
import type { ClusterLookup } from '../shared/cluster.js';
import type { Config } from '../shared/config.js';
import type { KubeAccess } from '../shared/kube.js';
import type { PodFeed } from '../shared/kube-object.js';
import type { Logger } from '../shared/log.js';
import type { CollectorClient } from '../shared/pull-contract.js';
import { KubeCluster } from './kube-cluster.js';
import { KubeDiscovery } from './kube-discovery.js';
import type { CollectorDiscovery } from './pipeline.js';

export interface Kubernetes {
  cluster: ClusterLookup;
  /** Collectors found by `--collector-selector` in `--namespace`; undefined when not discovering. */
  discovery?: CollectorDiscovery;
  /**
   * The pods of node `node`, out of the cluster view's own pod informer (no second watch). Ask
   * before start(); the feed's start and close are the view's.
   */
  podsOfNode(node: string): PodFeed;
  /** Begins listing and watching; returns at once. */
  start(): void;
  /** Why the cluster view is not usable yet (informers not synced), or undefined. */
  notReady(): string | undefined;
  /** Resolves once every informer has listed once. */
  whenSynced(): Promise<void>;
  close(): Promise<void>;
}

export type KubernetesConfig = Pick<Config, 'podRetention'>;

/** Collector discovery: where the collector pods are, and which of them are this exporter's. */
export interface DiscoveryOptions {
  namespace: string;
  collectorSelector: string;
  collectorPort: number;
  /** Makes the client of a discovered collector (exporter/pull.ts httpCollectorClients). */
  clientFor: (url: string) => CollectorClient;
  /** This shard's collectors, by node name (exporter/shard.ts). */
  mine: (key: string) => boolean;
}

export interface KubernetesDeps {
  /** The API server and credentials, resolved once by the wiring (shared/kube.ts resolveKubeConfig). */
  access: KubeAccess;
  log: Logger;
  /** Discover collectors too. @default no discovery */
  discover?: DiscoveryOptions;
}

/** Builds the Kubernetes side. No I/O until start(). */
export function createKubernetes(config: KubernetesConfig, deps: KubernetesDeps): Kubernetes {
  const { access, log } = deps;
  log.info({ source: access.source, server: access.server }, 'using the Kubernetes API server');
  const kdeps = { kubeConfig: access.kubeConfig, log: log.child({ stage: 'kube' }) };
  const cluster = new KubeCluster({ podRetention: config.podRetention }, kdeps);
  const found = deps.discover && new KubeDiscovery(deps.discover, kdeps);
  return {
    cluster,
    discovery: found && deps.discover && discoveredClients(found, deps.discover),
    podsOfNode: (node) => ({
      on: (verb, cb) =>
        cluster.onPod(verb, (pod) => {
          // spec.nodeName is set once, when the pod is scheduled: a pod is on this node for good.
          if (pod.node === node) cb(pod);
        }),
      start: () => undefined,
      synced: () => cluster.synced(),
      whenSynced: () => cluster.whenSynced(),
      // The informers log their failures; readiness says the view is not synced.
      lastError: () => undefined,
      close: async () => undefined,
    }),
    start: () => {
      cluster.start();
      found?.start();
    },
    notReady: () => {
      if (!cluster.synced()) return 'Kubernetes cluster view not synced yet';
      if (found !== undefined && !found.synced()) return 'collector discovery not synced yet';
      return undefined;
    },
    whenSynced: async () => {
      await Promise.all([cluster.whenSynced(), found?.whenSynced()]);
    },
    close: async () => {
      await Promise.all([cluster.close(), found?.close()]);
    },
  };
}

/** The clients of this shard's discovered collectors: one per URL for as long as the pod is up. */
function discoveredClients(found: KubeDiscovery, opts: DiscoveryOptions): CollectorDiscovery {
  // One client per URL while the pod is up: its id names it in self-metrics.
  let clients = new Map<string, CollectorClient>();
  return {
    current: () => {
      const next = new Map<string, CollectorClient>();
      for (const { url, node } of found.collectors()) {
        // By node name, stable across collector restarts (a new pod IP).
        if (!opts.mine(node !== '' ? node : url)) continue;
        next.set(url, clients.get(url) ?? opts.clientFor(url));
      }
      clients = next;
      return [...next.values()];
    },
  };
}
