// The exporter's ClusterLookup from Kubernetes: informers over all pods, nodes, replicasets, jobs
// and services, reduced to one Map keyed by IP string per kind (pods, services, nodes).
//
//   const cluster = new KubeCluster({ podRetention }, { kubeConfig, log });
//   cluster.start();                  // returns at once; failures are logged and retried
//   cluster.synced();                 // all five informers listed once (for /readyz)
//   cluster.lookup(ip, atMs);         // Endpoint | undefined; the object is shared, do not mutate
//   cluster.nodeZone(name); cluster.nodeRegion(name);
//   cluster.onChange((ip?) => …);     // an address's answers (or, without one, any) may have changed
//   cluster.timeless(ip);             // its answer holds for every `at` (no ended pod held it)
//   cluster.providerOf();             // 'aws', 'gce', 'azure', … from the nodes' spec.providerID
//   await cluster.close();
//
// Answers, in order: a pod holding the IP, else a service ClusterIP (any of spec.clusterIPs), else a
// node address (InternalIP/ExternalIP). Host-network pods are not indexed: their IP is the node's,
// so it answers as the node.
//
// Time: `lookup(ip, at)` answers for the time `at` the bytes flowed.
// - A pod that ended (deleted, or phase Succeeded/Failed) keeps its IPs for flows with
//   `at ≤ end + pod-retention` (end = when podflow saw it end). Late flows still get its name.
// - IP reuse: the live pod wins for every `at` at or after its start (status.startTime, else
//   creation). For `at` before the live pod started, an ended pod whose window [start, end +
//   retention] covers `at` answers (the bytes were the old pod's); without one, the live pod.
// - Ended entries are swept once `now > end + retention` (a timer; `sweep()`): memory stays bounded.
// Workload: `Kind/name` of the top owner: a ReplicaSet's owner (Deployment), a Job's owner
// (CronJob), else the direct controller (StatefulSet, DaemonSet, ReplicaSet or Job without owner,
// or any other controller kind); a pod without owner (or owned by its Node: static pods) gives its
// own name. A ReplicaSet not seen yet is guessed from the pod-template-hash naming rule.

import type { KubeConfig } from '@kubernetes/client-node';
import { type Cancel, type Clock, every, systemClock } from '../shared/clock.js';
import type { ClusterLookup, Endpoint } from '../shared/cluster.js';
import {
  type Compact,
  compactMeta,
  controllerOf,
  type InformerOptions,
  KubeInformer,
  listers,
  toMs,
} from '../shared/kube.js';
import type { PodAddresses } from '../shared/kube-object.js';
import type { Logger } from '../shared/log.js';

export interface KubeClusterConfig {
  /** ms an ended pod keeps its IPs. */
  podRetention: number;
}

export interface KubeClusterDeps {
  kubeConfig: KubeConfig;
  log: Logger;
}

interface Owner {
  kind: string;
  name: string;
}

interface PodRecord extends Compact {
  ips: string[];
  node: string;
  hostNetwork: boolean;
  ended: boolean;
  owner?: Owner;
  /** pod-template-hash label, to guess a Deployment before its ReplicaSet is known. */
  hash?: string;
  start?: number;
}

interface OwnedRecord extends Compact {
  owner?: Owner;
}

interface NodeRecord extends Compact {
  zone: string;
  region: string;
  /** Scheme of spec.providerID (`aws` of aws:///eu-west-1a/i-…), empty without one. */
  provider: string;
  ips: string[];
}

interface ServiceRecord extends Compact {
  ips: string[];
}

type Obj = {
  metadata?: { labels?: Record<string, string>; creationTimestamp?: unknown };
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
} | null;

export function toPodRecord(obj: unknown): PodRecord {
  const o = obj as Obj;
  const status = (o?.status ?? {}) as {
    phase?: string;
    podIP?: string;
    podIPs?: { ip?: string }[];
    startTime?: unknown;
  };
  const spec = (o?.spec ?? {}) as { nodeName?: string; hostNetwork?: boolean };
  const ips: string[] = [];
  for (const p of status.podIPs ?? []) if (typeof p?.ip === 'string' && p.ip !== '') ips.push(p.ip);
  if (ips.length === 0 && typeof status.podIP === 'string' && status.podIP !== '') ips.push(status.podIP);
  const rec: PodRecord = {
    metadata: compactMeta(obj),
    ips,
    node: typeof spec.nodeName === 'string' ? spec.nodeName : '',
    hostNetwork: spec.hostNetwork === true,
    ended: status.phase === 'Succeeded' || status.phase === 'Failed',
  };
  const owner = controllerOf(obj);
  if (owner) rec.owner = owner;
  const hash = o?.metadata?.labels?.['pod-template-hash'];
  if (typeof hash === 'string') rec.hash = hash;
  const start = toMs(status.startTime) ?? toMs(o?.metadata?.creationTimestamp);
  if (start !== undefined) rec.start = start;
  return rec;
}

export function toOwnedRecord(obj: unknown): OwnedRecord {
  const rec: OwnedRecord = { metadata: compactMeta(obj) };
  const owner = controllerOf(obj);
  if (owner) rec.owner = owner;
  return rec;
}

export function toNodeRecord(obj: unknown): NodeRecord {
  const o = obj as Obj;
  const labels = o?.metadata?.labels ?? {};
  const addresses =
    ((o?.status ?? {}) as { addresses?: { type?: string; address?: string }[] }).addresses ?? [];
  const ips: string[] = [];
  for (const a of addresses) {
    if (
      (a?.type === 'InternalIP' || a?.type === 'ExternalIP') &&
      typeof a.address === 'string' &&
      a.address !== ''
    ) {
      ips.push(a.address);
    }
  }
  const providerId = ((o?.spec ?? {}) as { providerID?: unknown }).providerID;
  const scheme = typeof providerId === 'string' ? /^([a-z][a-z0-9+.-]*):\/\//i.exec(providerId) : null;
  return {
    metadata: compactMeta(obj),
    zone: labels['topology.kubernetes.io/zone'] ?? '',
    region: labels['topology.kubernetes.io/region'] ?? '',
    provider: scheme ? scheme[1].toLowerCase() : '',
    ips,
  };
}

export function toServiceRecord(obj: unknown): ServiceRecord {
  const spec = ((obj as Obj)?.spec ?? {}) as { clusterIP?: string; clusterIPs?: string[] };
  const ips: string[] = [];
  const all =
    Array.isArray(spec.clusterIPs) && spec.clusterIPs.length > 0 ? spec.clusterIPs : [spec.clusterIP];
  // Headless services have "None": no address of their own.
  for (const ip of all) if (typeof ip === 'string' && ip !== '' && ip !== 'None') ips.push(ip);
  return { metadata: compactMeta(obj), ips };
}

/** One pod's hold on one IP. */
interface Tenant {
  pod: PodRecord;
  key: string;
  ip: string;
  from: number;
  /** When the pod ended (Infinity while it lives). */
  until: number;
  endpoint: Endpoint | undefined;
  /** `gen` the endpoint was built at; owners and zones changing bump the cluster's gen. */
  gen: number;
}

/**
 * Everything known about one IP: pod holders, a service, a node. One Map of these serves a lookup
 * with one hash probe and, on the fast path, one more object read: the answer for `at ≥ from` is
 * cached in `ep` while `gen` matches the cluster's (any change to the entry resets `gen`).
 */
class IpEntry {
  ep: Endpoint | undefined = undefined;
  from = Number.POSITIVE_INFINITY;
  gen = -1;
  live: Tenant | undefined = undefined;
  /** Ended holders, oldest first (at most 4). */
  ended: Tenant[] | undefined = undefined;
  service: Endpoint | undefined = undefined;
  node: Endpoint | undefined = undefined;

  empty(): boolean {
    return (
      this.live === undefined &&
      (this.ended === undefined || this.ended.length === 0) &&
      this.service === undefined &&
      this.node === undefined
    );
  }
}

export class KubeCluster implements ClusterLookup {
  private readonly pods: KubeInformer<PodRecord>;
  private readonly nodes: KubeInformer<NodeRecord>;
  private readonly replicaSets: KubeInformer<OwnedRecord>;
  private readonly jobs: KubeInformer<OwnedRecord>;
  private readonly services: KubeInformer<ServiceRecord>;
  private readonly byIp = new Map<string, IpEntry>();
  /**
   * IP → answer for IPs whose answer does not depend on `at` (no ended holder): one Map.get and no
   * further read on the hot path. Entries are dropped on any change to their IP; the whole map on
   * a `gen` bump (owner or zone data that endpoints were built from changed).
   */
  private readonly fast = new Map<string, Endpoint>();
  /** Owners (`ns/Kind/name`) and nodes that endpoints were built without: their arrival bumps gen. */
  private readonly pendingOwners = new Set<string>();
  private readonly pendingNodes = new Set<string>();
  private readonly podTenants = new Map<string, Tenant[]>();
  private readonly serviceKeys = new Map<string, string[]>();
  private readonly nodeByName = new Map<string, NodeRecord>();
  private readonly owners = new Map<string, string>();
  private gen = 0;
  /** onChange subscribers: told which addresses' answers may have changed. */
  private readonly listeners: ((ip?: string) => void)[] = [];
  /** providerOf's answer; null: to be counted again (a node came, changed or went). */
  private provider: string | undefined | null = null;
  private cancelSweep: Cancel | undefined;

  constructor(
    private readonly config: KubeClusterConfig,
    deps: KubeClusterDeps,
    private readonly clock: Clock = systemClock,
    informerOptions: InformerOptions = {},
  ) {
    const l = listers(deps.kubeConfig);
    this.pods = new KubeInformer(l.pods(), toPodRecord, deps, informerOptions);
    this.nodes = new KubeInformer(l.nodes(), toNodeRecord, deps, informerOptions);
    this.replicaSets = new KubeInformer(l.replicasets(), toOwnedRecord, deps, informerOptions);
    this.jobs = new KubeInformer(l.jobs(), toOwnedRecord, deps, informerOptions);
    this.services = new KubeInformer(l.services(), toServiceRecord, deps, informerOptions);

    this.pods.on('add', (p) => this.podChanged(p));
    this.pods.on('update', (p) => this.podChanged(p));
    this.pods.on('delete', (p) => this.podEnded(keyOf(p)));
    this.nodes.on('add', (n) => this.nodeChanged(n));
    this.nodes.on('update', (n) => this.nodeChanged(n));
    this.nodes.on('delete', (n) => this.nodeGone(n));
    for (const [inf, kind] of [
      [this.replicaSets, 'ReplicaSet'],
      [this.jobs, 'Job'],
    ] as const) {
      // Only what endpoints were built from matters: an owner they missed arriving, or an owner's
      // own owner changing (adoption, orphaning). Status updates (frequent) and deletions (the pods
      // go with them) change no endpoint.
      inf.on('add', (r) => this.ownerSeen(kind, r));
      inf.on('update', (r) => this.ownerSeen(kind, r));
      inf.on('delete', (r) => this.owners.delete(`${kind}/${keyOf(r)}`));
    }
    this.services.on('add', (s) => this.serviceChanged(s));
    this.services.on('update', (s) => this.serviceChanged(s));
    this.services.on('delete', (s) => this.serviceGone(keyOf(s)));
  }

  /**
   * Hears of every pod the view hears of; register before start(). `podflow standalone` feeds its
   * local index from here, so that the process watches pods once.
   */
  onPod(verb: 'add' | 'update' | 'delete', cb: (pod: PodAddresses & { node: string }) => void): void {
    this.pods.on(verb, cb);
  }

  start(): void {
    for (const inf of this.informers()) inf.start();
    const period = Math.max(1000, Math.min(this.config.podRetention / 2, 30_000));
    this.cancelSweep ??= every(this.clock, period, () => this.sweep());
  }

  /** All informers have listed once. */
  synced(): boolean {
    return this.informers().every((i) => i.synced());
  }

  async whenSynced(): Promise<void> {
    await Promise.all(this.informers().map((i) => i.whenSynced()));
  }

  async close(): Promise<void> {
    this.cancelSweep?.();
    this.cancelSweep = undefined;
    await Promise.all(this.informers().map((i) => i.close()));
  }

  lookup(ip: string, at: number): Endpoint | undefined {
    const ep = this.fast.get(ip);
    if (ep !== undefined) return ep;
    const e = this.byIp.get(ip);
    if (e === undefined) return undefined;
    if (e.gen === this.gen && at >= e.from) return e.ep;
    return this.resolve(ip, e, at);
  }

  onChange(fn: (ip?: string) => void): void {
    this.listeners.push(fn);
  }

  /** No ended pod held `ip` within the retention: its answer is the same for every `at`. */
  timeless(ip: string): boolean {
    return this.byIp.get(ip)?.ended === undefined;
  }

  nodeZone(node: string): string | undefined {
    const z = this.nodeByName.get(node)?.zone;
    return z === '' ? undefined : z;
  }

  nodeRegion(node: string): string | undefined {
    const r = this.nodeByName.get(node)?.region;
    return r === '' ? undefined : r;
  }

  providerOf(): string | undefined {
    if (this.provider !== null) return this.provider;
    const count = new Map<string, number>();
    let best: string | undefined;
    let most = 0;
    for (const n of this.nodeByName.values()) {
      if (n.provider === '') continue;
      const c = (count.get(n.provider) ?? 0) + 1;
      count.set(n.provider, c);
      if (c > most) {
        most = c;
        best = n.provider;
      }
    }
    this.provider = best;
    return best;
  }

  /** The lowest resourceVersion the informers have applied (tests wait for a change with it). */
  resourceVersion(): number {
    return Math.min(...this.informers().map((i) => i.resourceVersion()));
  }

  /** Sizes, for tests and self-metrics. */
  stats(): { podIps: number; serviceIps: number; nodeIps: number } {
    let podIps = 0;
    let serviceIps = 0;
    let nodeIps = 0;
    for (const e of this.byIp.values()) {
      if (e.live !== undefined || (e.ended !== undefined && e.ended.length > 0)) podIps++;
      if (e.service !== undefined) serviceIps++;
      if (e.node !== undefined) nodeIps++;
    }
    return { podIps, serviceIps, nodeIps };
  }

  /** Drop ended pods whose retention has passed. Runs on a timer. */
  sweep(): void {
    const horizon = this.clock.now() - this.config.podRetention;
    for (const [ip, e] of this.byIp) {
      if (e.ended === undefined) continue;
      const kept = e.ended.filter((t) => t.until >= horizon);
      if (kept.length === e.ended.length) continue;
      e.ended = kept.length > 0 ? kept : undefined;
      this.dropIfEmpty(ip, e);
    }
  }

  private informers() {
    return [this.pods, this.nodes, this.replicaSets, this.jobs, this.services];
  }

  private entry(ip: string): IpEntry {
    let e = this.byIp.get(ip);
    if (e === undefined) {
      e = new IpEntry();
      this.byIp.set(ip, e);
    }
    this.touched(ip, e);
    return e;
  }

  /** An entry changed: cached answers for it are void. */
  private touched(ip: string, e: IpEntry): void {
    e.gen = -1;
    this.fast.delete(ip);
    for (const fn of this.listeners) fn(ip);
  }

  /** Answers for any address may have changed (zones, regions, owners). */
  private changed(): void {
    for (const fn of this.listeners) fn();
  }

  private dropIfEmpty(ip: string, e: IpEntry): void {
    this.touched(ip, e);
    if (e.empty()) this.byIp.delete(ip);
  }

  private bump(): void {
    this.gen++;
    this.fast.clear();
    this.changed();
  }

  /** The slow path: pick the holder for `at`, and cache the answer when it holds for all later `at`. */
  private resolve(ip: string, e: IpEntry, at: number): Endpoint | undefined {
    const t = this.pick(e, at);
    let ep: Endpoint | undefined;
    if (t !== undefined) {
      ep = t.gen === this.gen && t.endpoint !== undefined ? t.endpoint : this.build(t);
      if (t === e.live) {
        e.ep = ep;
        e.from = t.from;
        e.gen = this.gen;
      }
    } else {
      ep = e.service ?? e.node;
      if (e.live === undefined && e.ended === undefined) {
        e.ep = ep;
        e.from = Number.NEGATIVE_INFINITY;
        e.gen = this.gen;
      }
    }
    // Without ended holders the answer is the same for every `at` (see pick): cache it.
    if (ep !== undefined && e.ended === undefined) this.fast.set(ip, ep);
    return ep;
  }

  private pick(e: IpEntry, at: number): Tenant | undefined {
    const live = e.live;
    if (live !== undefined && at >= live.from) return live;
    const ended = e.ended;
    if (ended === undefined) return live;
    const retention = this.config.podRetention;
    for (let i = ended.length - 1; i >= 0; i--) {
      const t = ended[i];
      if (at <= t.until + retention && at >= t.from) return t;
    }
    if (live !== undefined) return live;
    // A flow stamped before the pod's recorded start (clock skew between nodes): the latest one.
    const last = ended[ended.length - 1];
    return last !== undefined && at <= last.until + retention ? last : undefined;
  }

  private build(t: Tenant): Endpoint {
    const p = t.pod;
    const node = p.node;
    t.endpoint = {
      kind: 'pod',
      name: p.metadata.name,
      namespace: p.metadata.namespace ?? '',
      workload: this.workload(p),
      node,
      zone: this.zoneOf(node),
    };
    t.gen = this.gen;
    return t.endpoint;
  }

  private zoneOf(node: string): string {
    const n = this.nodeByName.get(node);
    if (n === undefined && node !== '') this.pendingNodes.add(node);
    return n?.zone ?? '';
  }

  private workload(p: PodRecord): string {
    const o = p.owner;
    if (o === undefined || o.kind === 'Node') return p.metadata.name;
    const ns = p.metadata.namespace;
    if (o.kind === 'ReplicaSet') {
      const rs = this.replicaSets.get(o.name, ns);
      if (rs !== undefined) return rs.owner ? `${rs.owner.kind}/${rs.owner.name}` : `ReplicaSet/${o.name}`;
      this.pendingOwners.add(`ReplicaSet/${ns ?? ''}/${o.name}`);
      // Not seen yet: Deployments name their ReplicaSets <deployment>-<pod-template-hash>.
      if (p.hash && o.name.endsWith(`-${p.hash}`)) return `Deployment/${o.name.slice(0, -p.hash.length - 1)}`;
      return `ReplicaSet/${o.name}`;
    }
    if (o.kind === 'Job') {
      const job = this.jobs.get(o.name, ns);
      if (job === undefined) this.pendingOwners.add(`Job/${ns ?? ''}/${o.name}`);
      return job?.owner ? `${job.owner.kind}/${job.owner.name}` : `Job/${o.name}`;
    }
    return `${o.kind}/${o.name}`;
  }

  private podChanged(p: PodRecord): void {
    const key = keyOf(p);
    if (p.ended) {
      this.podEnded(key);
      return;
    }
    const held = this.podTenants.get(key);
    if (held !== undefined) {
      const same = !p.hostNetwork && held.length === p.ips.length && held.every((t, i) => p.ips[i] === t.ip);
      if (same) {
        // Same IPs: refresh the record (node, owner may have been filled in) in place.
        for (const t of held) {
          t.pod = p;
          t.endpoint = undefined;
          const e = this.byIp.get(t.ip);
          if (e !== undefined) this.touched(t.ip, e);
        }
        return;
      }
      this.podEnded(key);
    }
    if (p.hostNetwork || p.ips.length === 0) return;
    const from = p.start ?? this.clock.now();
    const tenants: Tenant[] = [];
    for (const ip of p.ips) {
      const t: Tenant = {
        pod: p,
        key,
        ip,
        from,
        until: Number.POSITIVE_INFINITY,
        endpoint: undefined,
        gen: -1,
      };
      const e = this.entry(ip);
      // Two live pods claiming one IP: the earlier one must have ended unseen; the newer wins.
      if (e.live !== undefined) this.endTenant(e.live, e);
      e.live = t;
      tenants.push(t);
    }
    this.podTenants.set(key, tenants);
  }

  private podEnded(key: string): void {
    const held = this.podTenants.get(key);
    if (held === undefined) return;
    this.podTenants.delete(key);
    for (const t of held) {
      const e = this.byIp.get(t.ip);
      if (e !== undefined && e.live === t) {
        this.touched(t.ip, e);
        this.endTenant(t, e);
      }
    }
  }

  private endTenant(t: Tenant, e: IpEntry): void {
    t.until = this.clock.now();
    e.live = undefined;
    this.touched(t.ip, e);
    e.ended ??= [];
    e.ended.push(t);
    // Bounded: an IP reused very fast keeps its last few holders only.
    if (e.ended.length > 4) e.ended.shift();
    // If the pod lost this IP to another pod, its other IPs stay live.
    const other = this.podTenants.get(t.key);
    const idx = other?.indexOf(t) ?? -1;
    if (idx >= 0) other?.splice(idx, 1);
  }

  private nodeChanged(n: NodeRecord): void {
    this.provider = null;
    const old = this.nodeByName.get(n.metadata.name);
    if (old !== undefined) {
      this.dropNodeIps(old);
      if (old.zone !== n.zone) this.bump();
      // Regions are read per lookup (nodeRegion), not built into endpoints: only kept answers change.
      else if (old.region !== n.region) this.changed();
    } else if (this.pendingNodes.delete(n.metadata.name)) {
      this.bump();
    } else {
      // Answers kept without this node's zone and region (nodeZone, nodeRegion) are void.
      this.changed();
    }
    this.nodeByName.set(n.metadata.name, n);
    const endpoint: Endpoint = {
      kind: 'node',
      name: n.metadata.name,
      namespace: '',
      workload: '',
      node: n.metadata.name,
      zone: n.zone,
    };
    for (const ip of n.ips) this.entry(ip).node = endpoint;
  }

  private nodeGone(n: NodeRecord): void {
    const old = this.nodeByName.get(n.metadata.name);
    if (old === undefined) return;
    this.provider = null;
    this.nodeByName.delete(n.metadata.name);
    this.dropNodeIps(old);
    this.changed();
  }

  private dropNodeIps(n: NodeRecord): void {
    for (const ip of n.ips) {
      const e = this.byIp.get(ip);
      if (e?.node?.name !== n.metadata.name) continue;
      e.node = undefined;
      this.dropIfEmpty(ip, e);
    }
  }

  private ownerSeen(kind: string, r: OwnedRecord): void {
    const k = `${kind}/${keyOf(r)}`;
    const owner = r.owner ? `${r.owner.kind}/${r.owner.name}` : '';
    const before = this.owners.get(k);
    this.owners.set(k, owner);
    if (this.pendingOwners.delete(k) || (before !== undefined && before !== owner)) this.bump();
  }

  private serviceChanged(s: ServiceRecord): void {
    const key = keyOf(s);
    this.serviceGone(key);
    const endpoint: Endpoint = {
      kind: 'service',
      name: s.metadata.name,
      namespace: s.metadata.namespace ?? '',
      workload: '',
      node: '',
      zone: '',
    };
    for (const ip of s.ips) this.entry(ip).service = endpoint;
    this.serviceKeys.set(key, s.ips);
  }

  private serviceGone(key: string): void {
    const old = this.serviceKeys.get(key);
    if (old === undefined) return;
    this.serviceKeys.delete(key);
    for (const ip of old) {
      const e = this.byIp.get(ip);
      const svc = e?.service;
      if (e === undefined || svc === undefined || `${svc.namespace}/${svc.name}` !== key) continue;
      e.service = undefined;
      this.dropIfEmpty(ip, e);
    }
  }
}

const keyOf = (o: Compact) => `${o.metadata.namespace ?? ''}/${o.metadata.name}`;
