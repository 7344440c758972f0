// What the exporter asks of its view of the cluster (filled by the Kubernetes informers).

export interface Endpoint {
  kind: 'pod' | 'node' | 'service';
  name: string;
  /** Empty for nodes. */
  namespace: string;
  /** `Kind/name` of the top owner, else the pod name; empty for nodes and services. */
  workload: string;
  /** Node the pod runs on, or the node itself. */
  node: string;
  /** topology.kubernetes.io/zone of that node, empty when unknown. */
  zone: string;
  /** True for host-network pods (their IP is the node's). */
  hostNetwork?: boolean;
}

export interface ClusterLookup {
  /** The endpoint that owned `ip` at time `at` (ms since the epoch), or undefined. */
  lookup(ip: string, at: number): Endpoint | undefined;
  /** Zone of a node by name. */
  nodeZone(node: string): string | undefined;
  /** Region of a node by name (topology.kubernetes.io/region). */
  nodeRegion(node: string): string | undefined;
  /**
   * The cloud the nodes run on, from the scheme of their spec.providerID (`aws`, `gce`, `azure`, …):
   * the one most nodes have; undefined when no node has one.
   */
  providerOf?(): string | undefined;
  /**
   * Optional, for callers that keep answers by address (the enrich stage): calls `fn` with an
   * address whenever answers for it may have changed, and with none when any may have (a node's
   * zone or region, a workload's owner).
   */
  onChange?(fn: (ip?: string) => void): void;
  /**
   * Optional, with onChange: whether `ip`'s answer is the same for every `at` (no pod that ended
   * within the retention held it). Only such answers may be kept.
   */
  timeless?(ip: string): boolean;
}
