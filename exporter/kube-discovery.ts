// Collector discovery for the exporter: the collector pods (`collector-selector` in `namespace`),
// kept current by a watch. A pod counts when it is Running, Ready and has an IP; its base URL is
// `http://IP:collector-port` (IPv6 in brackets). An IPv4/IPv6 dual-stack pod gives one URL (its
// first IP, status.podIP), so that a collector is never pulled twice.
//
//   const d = new KubeDiscovery({ namespace, collectorSelector, collectorPort }, { kubeConfig, log });
//   d.start(); d.synced(); d.current() → ['http://10.0.1.5:9470', 'http://[fd00::5]:9470']
//   d.collectors() → [{ url: 'http://10.0.1.5:9470', node: 'node-a' }, …] (the node: the shard key)
//   d.onChange(urls => …); await d.close();
import type { KubeConfig } from '@kubernetes/client-node';
import { type Compact, compactMeta, type InformerOptions, KubeInformer, listers } from '../shared/kube.js';
import type { Logger } from '../shared/log.js';

export interface KubeDiscoveryConfig {
  namespace: string;
  collectorSelector: string;
  collectorPort: number;
}

export interface KubeDiscoveryDeps {
  kubeConfig: KubeConfig;
  log: Logger;
}

interface CollectorPod extends Compact {
  ip: string;
  up: boolean;
  /** spec.nodeName: the shard key (exporter/shard.ts). */
  node: string;
}

/** A discovered collector: its base URL and the node it runs on. */
export interface DiscoveredCollector {
  url: string;
  node: string;
}

export function toCollectorPod(obj: unknown): CollectorPod {
  const status = ((obj as { status?: unknown } | null)?.status ?? {}) as {
    phase?: string;
    podIP?: string;
    podIPs?: { ip?: string }[];
    conditions?: { type?: string; status?: string }[];
  };
  const ready = (status.conditions ?? []).some((c) => c?.type === 'Ready' && c.status === 'True');
  const ip = status.podIP || status.podIPs?.[0]?.ip || '';
  const node = ((obj as { spec?: { nodeName?: unknown } } | null)?.spec?.nodeName ?? '') as unknown;
  // A terminating collector (deletionTimestamp set) is still pulled while it runs and is ready: on
  // SIGTERM it reads conntrack one last time and waits for its backlog to be acknowledged, so a
  // rolling update loses no bytes. Its pulls simply fail once it has exited.
  return {
    metadata: compactMeta(obj),
    ip: typeof ip === 'string' ? ip : '',
    up: status.phase === 'Running' && ready,
    node: typeof node === 'string' ? node : '',
  };
}

export function baseUrl(ip: string, port: number): string {
  return ip.includes(':') ? `http://[${ip}]:${port}` : `http://${ip}:${port}`;
}

export class KubeDiscovery {
  private readonly informer: KubeInformer<CollectorPod>;
  private urls: string[] = [];
  private found: DiscoveredCollector[] = [];
  private readonly listeners: ((urls: readonly string[]) => void)[] = [];

  constructor(
    private readonly config: KubeDiscoveryConfig,
    deps: KubeDiscoveryDeps,
    informerOptions: InformerOptions = {},
  ) {
    this.informer = new KubeInformer(listers(deps.kubeConfig).pods(config.namespace), toCollectorPod, deps, {
      ...informerOptions,
      labelSelector: config.collectorSelector,
    });
    const changed = () => this.recompute();
    this.informer.on('add', changed);
    this.informer.on('update', changed);
    this.informer.on('delete', changed);
  }

  start(): void {
    this.informer.start();
  }

  synced(): boolean {
    return this.informer.synced();
  }

  whenSynced(): Promise<void> {
    return this.informer.whenSynced();
  }

  /** Base URLs of the collectors that are up now, sorted. */
  current(): readonly string[] {
    return this.urls;
  }

  /** The collectors that are up now with their nodes, sorted by URL. */
  collectors(): readonly DiscoveredCollector[] {
    return this.found;
  }

  /** Called with the new list whenever it changes. */
  onChange(cb: (urls: readonly string[]) => void): void {
    this.listeners.push(cb);
  }

  close(): Promise<void> {
    return this.informer.close();
  }

  private recompute(): void {
    const found = this.informer
      .list()
      .filter((p) => p.up && p.ip !== '')
      .map((p) => ({ url: baseUrl(p.ip, this.config.collectorPort), node: p.node }))
      .sort((a, b) => (a.url < b.url ? -1 : a.url > b.url ? 1 : 0));
    const same =
      found.length === this.found.length &&
      found.every((c, i) => c.url === this.found[i].url && c.node === this.found[i].node);
    if (same) return;
    this.found = found;
    const next = found.map((c) => c.url);
    const urlsChanged = next.length !== this.urls.length || next.some((u, i) => u !== this.urls[i]);
    this.urls = next;
    if (urlsChanged) for (const cb of this.listeners) cb(next);
  }
}
