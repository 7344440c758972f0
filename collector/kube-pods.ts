// The collector's PodIndex from Kubernetes: the pods of this node, each pod's every IP (IPv4 and
// IPv6 from status.podIPs), kept current by a PodFeed: the collector's own list/watch
// (`watchNodePods`: collector/kube-watch.ts, pods with fieldSelector spec.nodeName=<node-name>) or,
// in `podflow standalone`, the exporter's pod informer narrowed to this node.
//
//   const pods = new KubePods({ nodeName, excludeNamespaces, hostNetwork, podRetention },
//                             watchNodePods(config, { target, log }));
//   pods.start();            // returns at once; unreachable API server → logged, retried
//   pods.synced();           // for /readyz
//   pods.isLocal(ip);        // the PodIndex
//   await pods.close();
//
// - Pods in `exclude-namespaces` are not local (filtered by the API server and again here).
// - Host-network pods share the node's IP. `host-network` off (default): they are skipped, so the
//   node's own traffic is not reported. On: their IPs, which are the node's, are local: the node's
//   own traffic (kubelet, host daemons, host-network pods together) is reported.
// - A pod that ended (deleted, or phase Succeeded/Failed) stays local for `pod-retention`: the
//   kernel keeps its connections' counters after the pod is gone, and those bytes are still its.
//   When a live pod holds the same IP, it is local anyway.
import { type Cancel, type Clock, every, systemClock } from '../shared/clock.js';
import type { KubeTarget } from '../shared/kube-access.js';
import { compactMeta, type PodAddresses, type PodFeed } from '../shared/kube-object.js';
import type { Logger } from '../shared/log.js';
import { KubeWatch, type KubeWatchOptions } from './kube-watch.js';
import type { PodIndex } from './pod-index.js';

export interface KubePodsConfig {
  nodeName: string;
  excludeNamespaces: readonly string[];
  hostNetwork: boolean;
  /** ms an ended pod's IPs stay local. */
  podRetention: number;
}

/** Pod → compact record; never throws (see shared/kube.ts). */
export function toPodRecord(obj: unknown): PodAddresses {
  const o = obj as {
    spec?: { hostNetwork?: boolean };
    status?: { phase?: string; podIP?: string; podIPs?: { ip?: string }[] };
  } | null;
  const ips: string[] = [];
  for (const p of o?.status?.podIPs ?? []) if (typeof p?.ip === 'string' && p.ip !== '') ips.push(p.ip);
  const first = o?.status?.podIP;
  if (ips.length === 0 && typeof first === 'string' && first !== '') ips.push(first);
  const phase = o?.status?.phase;
  return {
    metadata: compactMeta(obj),
    ips,
    hostNetwork: o?.spec?.hostNetwork === true,
    ended: phase === 'Succeeded' || phase === 'Failed',
  };
}

/**
 * The collector's own watch of the pods of its node (the API server filters by node and by
 * `exclude-namespaces`). No I/O until start().
 */
export function watchNodePods(
  config: Pick<KubePodsConfig, 'nodeName' | 'excludeNamespaces'>,
  deps: { target: KubeTarget; log: Logger },
  options: KubeWatchOptions = {},
): KubeWatch<PodAddresses> {
  const fields = [
    `spec.nodeName=${config.nodeName}`,
    ...config.excludeNamespaces.map((n) => `metadata.namespace!=${n}`),
  ];
  return new KubeWatch(
    deps.target,
    { path: '/api/v1/pods', resource: 'pods', fieldSelector: fields.join(',') },
    toPodRecord,
    deps,
    options,
  );
}

/** Holders of one IP: pod key → time until which it counts (Infinity while the pod lives). */
interface IpHolders {
  until: number;
  pods: Map<string, number>;
}

export class KubePods implements PodIndex {
  private readonly ips = new Map<string, IpHolders>();
  /** IPs registered per pod key, to undo them when the pod changes or goes. */
  private readonly byPod = new Map<string, string[]>();
  private readonly excluded: Set<string>;
  private cancelSweep: Cancel | undefined;

  /** `clock`: when pods ended and when their retention lapses (tests turn it by hand). */
  constructor(
    private readonly config: KubePodsConfig,
    private readonly feed: PodFeed,
    private readonly clock: Clock = systemClock,
  ) {
    this.excluded = new Set(config.excludeNamespaces);
    feed.on('add', (p) => this.apply(p));
    feed.on('update', (p) => this.apply(p));
    feed.on('delete', (p) => this.release(key(p), this.clock.now() + this.config.podRetention));
  }

  start(): void {
    this.feed.start();
    const period = Math.max(1000, Math.min(this.config.podRetention / 2, 30_000));
    this.cancelSweep ??= every(this.clock, period, () => this.sweep());
  }

  synced(): boolean {
    return this.feed.synced();
  }

  whenSynced(): Promise<void> {
    return this.feed.whenSynced();
  }

  /** Why the pods are not listed yet (the API server's last answer), for /readyz. */
  lastError(): string | undefined {
    return this.feed.lastError();
  }

  async close(): Promise<void> {
    this.cancelSweep?.();
    this.cancelSweep = undefined;
    await this.feed.close();
  }

  isLocal(ip: string): boolean {
    const h = this.ips.get(ip);
    return h !== undefined && (h.until === Number.POSITIVE_INFINITY || h.until >= this.clock.now());
  }

  /** Local IPs now (tests, debugging). */
  localIps(): string[] {
    return [...this.ips.keys()].filter((ip) => this.isLocal(ip)).sort();
  }

  /** Forget IPs of pods that ended more than pod-retention ago. Runs on a timer. */
  sweep(): void {
    const now = this.clock.now();
    for (const [ip, h] of this.ips) {
      if (h.until >= now) continue;
      for (const [pod, until] of h.pods) if (until < now) h.pods.delete(pod);
      if (h.pods.size === 0) this.ips.delete(ip);
      else h.until = maxOf(h.pods);
    }
  }

  private apply(p: PodAddresses): void {
    const k = key(p);
    const counted =
      !this.excluded.has(p.metadata.namespace ?? '') && (!p.hostNetwork || this.config.hostNetwork);
    if (!counted) {
      this.release(k, 0);
      return;
    }
    if (p.ended) {
      this.release(k, this.clock.now() + this.config.podRetention);
      return;
    }
    const old = this.byPod.get(k);
    if (old) {
      // IPs the pod no longer has count like those of an ended pod.
      const expire = this.clock.now() + this.config.podRetention;
      for (const ip of old) if (!p.ips.includes(ip)) this.hold(ip, k, expire);
    }
    for (const ip of p.ips) this.hold(ip, k, Number.POSITIVE_INFINITY);
    this.byPod.set(k, p.ips);
  }

  private release(k: string, until: number): void {
    const old = this.byPod.get(k);
    if (!old) return;
    this.byPod.delete(k);
    for (const ip of old) {
      const h = this.ips.get(ip);
      if (!h?.pods.has(k)) continue;
      if (until === 0) h.pods.delete(k);
      else h.pods.set(k, until);
      if (h.pods.size === 0) this.ips.delete(ip);
      else h.until = maxOf(h.pods);
    }
  }

  private hold(ip: string, k: string, until: number): void {
    let h = this.ips.get(ip);
    if (!h) {
      h = { until, pods: new Map() };
      this.ips.set(ip, h);
    }
    h.pods.set(k, until);
    h.until = maxOf(h.pods);
  }
}

const key = (p: PodAddresses) => `${p.metadata.namespace ?? ''}/${p.metadata.name}`;

function maxOf(m: Map<string, number>): number {
  let max = Number.NEGATIVE_INFINITY;
  for (const v of m.values()) if (v > max) max = v;
  return max;
}
