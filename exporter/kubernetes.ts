// The one place where the export side's Kubernetes parts plug in: the cluster view used for
// enrichment (exporter/kube-cluster.ts, informers) and, for `podflow exporter` without
// --collectors, collector discovery by label selector (exporter/kube-discovery.ts). Without an API
// server there is nothing here: static --collectors and address-only enrichment.
import type { Registry } from 'prom-client';
import type { ClusterLookup } from '../shared/cluster.js';
import type { Config } from '../shared/config.js';
import { resolveKubeConfig } from '../shared/kube.js';
import type { Logger } from '../shared/log.js';
import { KubeCluster } from './kube-cluster.js';
import { KubeDiscovery } from './kube-discovery.js';
import type { CollectorDiscovery } from './pipeline.js';
import { type CollectorClient, httpCollectorClients } from './pull.js';
import { shardFilter } from './shard.js';

export interface Kubernetes {
  cluster: ClusterLookup;
  /** Collectors found by `--collector-selector` in `--namespace`; undefined when not discovering. */
  discovery?: CollectorDiscovery;
  /** Why the cluster view is not usable yet (informers not synced), or undefined. */
  notReady(): string | undefined;
  /** Resolves once every informer has listed once. */
  whenSynced(): Promise<void>;
  close(): Promise<void>;
}

export interface KubernetesDeps {
  log: Logger;
  registry: Registry;
  env?: NodeJS.ProcessEnv;
  /** Makes the client of a discovered collector (exporter: exporter/pull.ts httpCollectorClients). */
  clientFor?: (url: string) => CollectorClient;
}

/**
 * Builds and starts the Kubernetes side from the configuration (--kubeconfig, in-cluster,
 * $KUBECONFIG, ~/.kube/config), or returns undefined when there is no API server to talk to. An
 * unusable kubeconfig throws StartupError naming it.
 */
export async function createKubernetes(
  config: Config,
  deps: KubernetesDeps,
): Promise<Kubernetes | undefined> {
  const access = resolveKubeConfig({ kubeconfig: config.kubeconfig, env: deps.env });
  if (access === undefined) return undefined;
  const { log } = deps;
  log.info({ source: access.source, server: access.server }, 'using the Kubernetes API server');
  const kdeps = { kubeConfig: access.kubeConfig, log: log.child({ stage: 'kube' }) };
  const cluster = new KubeCluster({ podRetention: config.podRetention }, kdeps);
  cluster.start();

  let discovery: CollectorDiscovery | undefined;
  let found: KubeDiscovery | undefined;
  if (config.command === 'exporter' && (config.collectors === undefined || config.collectors.length === 0)) {
    const kd = new KubeDiscovery(
      {
        namespace: config.namespace,
        collectorSelector: config.collectorSelector,
        collectorPort: config.collectorPort,
      },
      kdeps,
    );
    kd.start();
    found = kd;
    const clientFor = deps.clientFor ?? httpCollectorClients(config);
    // This shard's collectors: by node name, stable across collector restarts (a new pod IP).
    const mine = shardFilter(config);
    // One client per URL for as long as the pod is up: its id names it in self-metrics.
    let clients = new Map<string, CollectorClient>();
    discovery = {
      current: () => {
        const next = new Map<string, CollectorClient>();
        for (const { url, node } of kd.collectors()) {
          if (!mine(node !== '' ? node : url)) continue;
          next.set(url, clients.get(url) ?? clientFor(url));
        }
        clients = next;
        return [...next.values()];
      },
    };
  }

  return {
    cluster,
    discovery,
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
