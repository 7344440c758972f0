// The one place where the exporter's Kubernetes side plugs in: the cluster view used for enrichment
// (exporter/kube-cluster.ts, informers) and collector discovery by label selector
// (exporter/kube-discovery.ts). Without an API server both stay empty: static --collectors and
// address-only enrichment.
import type { Registry } from 'prom-client';
import type { ClusterLookup } from '../shared/cluster.js';
import type { Config } from '../shared/config.js';
import type { Logger } from '../shared/log.js';
import type { CollectorDiscovery } from './pipeline.js';

export interface Kubernetes {
  cluster: ClusterLookup;
  /** Collectors found by `--collector-selector` in `--namespace`; undefined when not discovering. */
  discovery?: CollectorDiscovery;
  /** Why the cluster view is not usable yet (informers not synced), or undefined. */
  notReady(): string | undefined;
  close(): Promise<void>;
}

export interface KubernetesDeps {
  log: Logger;
  registry: Registry;
}

/**
 * Builds the Kubernetes side from the configuration, or returns undefined when there is no API
 * server to talk to. Start-up problems (unreadable kubeconfig, missing RBAC) throw StartupError.
 * Until the informer-backed modules are wired here, the exporter runs without Kubernetes.
 */
export async function createKubernetes(
  _config: Config,
  _deps: KubernetesDeps,
): Promise<Kubernetes | undefined> {
  return undefined;
}
