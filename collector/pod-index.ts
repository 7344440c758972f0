// Which addresses are local endpoints of this collector: the pods of this node (filled from
// Kubernetes, see collector/kube-pods.ts) or, without Kubernetes, this host's own addresses.

export interface PodIndex {
  /** True when `ip` is a local endpoint whose traffic this collector reports. */
  isLocal(ip: string): boolean;
}
