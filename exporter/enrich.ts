// Enrich stage: a collector's Flow becomes an EnrichedFlow with the Kubernetes context of both ends
// (CONTRACT.md "Flow metrics"), its traffic class and its cost. Without Kubernetes the lookup is
// empty: src is the collector's node, peers are `private` or `public` by address.
//
// Traffic class (docs/cost.md): a pod or node peer is `same-zone` on the same node or in the same
// zone, `cross-region` when both regions are known and differ, `cross-zone` when both zones and
// regions are known and only the zones differ, else `unknown`. A node's public address (ExternalIP)
// is the node, not the internet. Other peers: a `--destinations-file` range sets the class (and
// names the peer), else `private` or `internet` by address; a ClusterIP seen before DNAT, whose
// backend is not known, is `unknown`.
import type { ClusterLookup, Endpoint } from '../shared/cluster.js';
import type { Prices } from '../shared/config.js';
import {
  type EnrichedFlow,
  type Flow,
  type FlowBatch,
  protoName,
  type TrafficClass,
} from '../shared/flow.js';
import { fmix32 } from '../shared/hash.js';
import { grown, HashIndex, SlotIds } from '../shared/hash-index.js';
import { isPrivateIp, parseV4 } from '../shared/ip.js';
import type { Logger } from '../shared/log.js';
import { type Destination, type Destinations, destinationClass } from './destinations.js';
import { type Cloud, costOf, type PriceTable, presetOfProvider, priceTable } from './prices.js';

/** A lookup that knows nothing: standalone without a kubeconfig. */
export const emptyClusterLookup: ClusterLookup = {
  lookup: () => undefined,
  nodeZone: () => undefined,
  nodeRegion: () => undefined,
  // Nothing ever changes: every answer may be kept.
  onChange: () => {},
  timeless: () => true,
};

export interface EnrichConfig {
  /** `group-public-ips`: public peers become 0.0.0.0 / ::. */
  groupPublicIps: boolean;
  /** `cloud`: the price preset; `auto` takes it from the nodes' spec.providerID. @default 'none' */
  cloud?: Cloud;
  /** `prices`: overrides of the preset per key. @default {} */
  prices?: Prices;
}

export interface EnrichDeps {
  cluster: ClusterLookup;
  log: Logger;
  /** `--destinations-file`, loaded (exporter/destinations.ts). */
  destinations?: Destinations;
}

/** How many distinct unresolved private peers are logged (once each) before going quiet. */
const UNRESOLVED_LOG_MAX = 1000;

export class Enricher {
  private readonly unresolved = new Set<string>();
  private table: PriceTable;
  /** Resolved addresses (enrichBatch). */
  private readonly cache = new PeerCache();
  /** The src addresses of the batch being enriched, by their low bits, and their peers. */
  private readonly localAddrs = new Float64Array(LOCAL_MASK + 1);
  private readonly localPeers: (Peer | undefined)[] = new Array(LOCAL_MASK + 1).fill(undefined);
  /** Collectors' nodes as local endpoints, by name. */
  private readonly locals = new Map<string, Local>();
  /** Node, zone and region names by number (`named`); '' is 0. */
  private names = new Map<string, number>([['', 0]]);
  /** Whether the cluster says which answers change: then they are kept across batches. */
  private readonly keepAcross: boolean;
  /** With --cloud auto: whether the preset in force was logged. */
  private announced = false;

  constructor(
    private readonly config: EnrichConfig,
    private readonly deps: EnrichDeps,
  ) {
    const cloud = config.cloud ?? 'none';
    const { cluster } = deps;
    this.keepAcross = cluster.onChange !== undefined && cluster.timeless !== undefined;
    cluster.onChange?.((ip) => {
      if (ip !== undefined) return this.cache.drop(ip);
      this.cache.clear();
      this.locals.clear();
    });
    this.table = priceTable(cloud === 'auto' ? 'none' : cloud, config.prices ?? {});
  }

  /** The prices in force (with `--cloud auto`, from the nodes seen so far). */
  prices(): PriceTable {
    if (this.config.cloud === 'auto') {
      const preset = presetOfProvider(this.deps.cluster.providerOf?.());
      if (preset !== this.table.preset || !this.announced) {
        this.announced = true;
        this.table = priceTable(preset, this.config.prices ?? {});
        this.deps.log.info(
          { preset, perGiB: this.table.perGiB },
          preset === 'none'
            ? 'price preset none: no node has a spec.providerID of AWS, GCP or Azure (--cloud auto; set --cloud or --prices)'
            : "price preset chosen from the nodes' spec.providerID (--cloud auto)",
        );
      }
    }
    return this.table;
  }

  /** The cost of an enriched flow's bytes under the prices in force (for records summed later). */
  costOf(f: EnrichedFlow): number {
    return costOf(this.prices(), f.trafficClass, f.dstType === 'public', f.txBytes, f.rxBytes);
  }

  /**
   * Enriches one batch of one collector. `node` is the collector's node: the local endpoint when the
   * src address is not a known pod. Appends to `out` (no intermediate arrays).
   *
   * Each address is resolved once (`Peer`) and its answer kept by its packed number (`PeerCache`):
   * the flows of a batch repeat their few local addresses, and a round's flows repeat the peers of
   * the cluster. A lookup of the decoded address string in a map of the cluster's addresses hashed
   * the fresh string and missed the cache for every flow: about a third of a round at 60,000 pods.
   * Answers are kept across batches only when the cluster says which of them change (onChange,
   * timeless); else for this batch alone, whose time and cluster state are one.
   */
  enrichBatch(batch: FlowBatch, node: string, out: EnrichedFlow[]): void {
    const at = batch.to;
    const intervalSeconds = (batch.to - batch.from) / 1000;
    const flows = batch.flows;
    const prices = this.prices();
    const cache = this.cache;
    if (!this.keepAcross) cache.clear();
    // Bounded (nodes come and go): numbers of both ends of a flow must come from the same count.
    if (this.names.size > NAMES_MAX) {
      this.names = new Map([['', 0]]);
      cache.clear();
      this.locals.clear();
    }
    const local = this.local(node);
    // The numbers validation parsed (FlowBatch.addresses): each address is read once per pull.
    // Batches that did not come through it (the in-process collector) are parsed here.
    const addrs =
      batch.addresses !== undefined && batch.addresses.length === 2 * flows.length
        ? batch.addresses
        : undefined;
    // The src of a collector's flows is one of its node's few pods (or the node): a small table by
    // the address's low bits answers most of them before the cache's hash probe. Per batch, whose
    // time and cluster state are one.
    const { localAddrs, localPeers } = this;
    localAddrs.fill(-1);
    for (let i = 0; i < flows.length; i++) {
      const f = flows[i];
      const a = addrs !== undefined ? addrs[2 * i] : parseV4(f.src, 0, f.src.length);
      let src: Peer;
      const k = a & LOCAL_MASK;
      if (a >= 0 && localAddrs[k] === a) src = localPeers[k] as Peer;
      else {
        src = cache.at(f.src, a) ?? this.remember(f.src, at);
        if (a >= 0) {
          localAddrs[k] = a;
          localPeers[k] = src;
        }
      }
      const d = addrs !== undefined ? addrs[2 * i + 1] : parseV4(f.dst, 0, f.dst.length);
      const dst = cache.at(f.dst, d) ?? this.remember(f.dst, at);
      out.push(this.build(f, local, src, dst, at, intervalSeconds, prices, true));
    }
    localPeers.fill(undefined);
  }

  enrich(
    f: Flow,
    node: string,
    at: number,
    intervalSeconds: number,
    prices: PriceTable = this.prices(),
  ): EnrichedFlow {
    return this.build(
      f,
      this.local(node),
      this.peer(f.src, at),
      this.peer(f.dst, at),
      at,
      intervalSeconds,
      prices,
    );
  }

  /** The collector's node as the local endpoint (src addresses that are not a known pod). */
  private local(raw: string): Local {
    let local = this.locals.get(raw);
    if (local === undefined || !this.keepAcross) {
      const { cluster } = this.deps;
      // Kept beyond this pull (the collector's node comes from its response): a copy of its own.
      const node = detached(raw);
      const zone = cluster.nodeZone(node) ?? '';
      const r = region(cluster, node);
      local = {
        id: ++peers,
        node,
        zone,
        region: r,
        nodeId: this.named(node),
        zoneId: this.named(zone),
        regionId: this.named(r),
      };
      this.locals.set(node, local);
    }
    return local;
  }

  /** Resolves `ip` and keeps the answer when it holds for every `at` (see enrichBatch). */
  private remember(ip: string, at: number): Peer {
    const peer = this.peer(ip, at);
    const { cluster } = this.deps;
    if (!this.keepAcross || cluster.timeless!(ip)) this.cache.set(peer.ip, peer);
    return peer;
  }

  /** What the flows of one address need of it, as a src or as a dst (see `build`). */
  private peer(raw: string, at: number): Peer {
    const peer = this.resolve(raw, at);
    peer.nodeId = this.named(peer.node);
    peer.zoneId = this.named(peer.zone);
    peer.regionId = this.named(peer.region);
    return peer;
  }

  /** The number of a node, zone or region name: 0 for none, the same for equal names. */
  private named(name: string): number {
    let n = this.names.get(name);
    if (n === undefined) {
      n = this.names.size;
      this.names.set(name, n);
    }
    return n;
  }

  private resolve(raw: string, at: number): Peer {
    const { cluster } = this.deps;
    // Kept beyond this pull: a copy of its own, not a slice of the decoded body's text.
    const ip = detached(raw);
    const e = cluster.lookup(ip, at);
    if (e !== undefined && e.kind === 'pod' && !e.hostNetwork) {
      const zone = zoneOf(e, cluster);
      return new Peer(
        ip,
        'pod',
        e.name,
        e.namespace,
        e.workload || e.name,
        e.node,
        zone,
        region(cluster, e.node),
      );
    }
    if (e !== undefined && (e.kind === 'node' || e.kind === 'pod')) {
      // A host-network pod's address is its node's: reported as the node. So is a node's public
      // address (ExternalIP): traffic to it stays in the cluster's network, it is not internet.
      const node = e.node || e.name;
      return new Peer(ip, 'node', '', '', '', node, zoneOf(e, cluster), region(cluster, node));
    }
    // 0.0.0.0 and :: are the public peers a collector grouped (--group-public-ips): no real peer
    // has those addresses, and the traffic behind them is internet traffic.
    const grouped = isGroupedPublic(ip);
    const priv = !grouped && isPrivateIp(ip);
    const peer = new Peer(ip, priv ? 'private' : 'public', '', '', '', '', '', '');
    if (e !== undefined) {
      // A ClusterIP that was not DNATed (no kube-proxy on the path, or seen before translation):
      // which backend, in which zone, is not known.
      peer.namespace = e.namespace;
      peer.workload = `Service/${e.name}`;
      peer.dnsName = e.namespace ? `${e.name}.${e.namespace}.svc` : e.name;
      peer.service = true;
      return peer;
    }
    // Grouped peers (0.0.0.0, ::) have no address left to match.
    peer.range = grouped ? undefined : this.deps.destinations?.lookup(ip);
    if (!priv && this.config.groupPublicIps) peer.shown = ip.includes(':') ? '::' : '0.0.0.0';
    return peer;
  }

  private build(
    f: Flow,
    local: Local,
    src: Peer,
    dst: Peer,
    at: number,
    intervalSeconds: number,
    prices: PriceTable,
    numbered = false,
  ): EnrichedFlow {
    const srcIsPod = src.type === 'pod';
    const srcAt: Local | Peer = srcIsPod ? src : local;
    const srcNode = srcIsPod ? src.node : local.node;
    const srcZone = srcIsPod ? src.zone : local.zone;
    const srcRegion = srcIsPod ? src.region : local.region;
    const dstType = dst.type;
    let dstDnsName = dst.dnsName;
    let trafficClass: TrafficClass;
    if (dstType === 'pod' || dstType === 'node') {
      trafficClass = classBy(
        srcAt.nodeId,
        srcAt.zoneId,
        srcAt.regionId,
        dst.nodeId,
        dst.zoneId,
        dst.regionId,
        0,
      );
    } else if (dst.service) {
      trafficClass = 'unknown';
    } else {
      trafficClass = dstType === 'private' ? 'private' : 'internet';
      const range = dst.range;
      // The name a pod of the node looked up (collector/dns/), kept when the address is grouped;
      // a destination range's name only where there is none.
      if (f.dstName !== undefined) dstDnsName = f.dstName;
      if (range !== undefined) {
        trafficClass = destinationClass(range, srcRegion, trafficClass);
        if (dstDnsName === '') dstDnsName = range.name;
      } else if (dstType === 'private' && f.dstName === undefined) {
        this.noteUnresolved(dst.ip, local.node);
      }
    }
    const dstZone = dst.zone;
    return {
      ts: at,
      intervalSeconds,
      srcIp: src.ip,
      srcPod: src.pod,
      srcNamespace: srcIsPod ? src.namespace : '',
      srcWorkload: srcIsPod ? src.workload : '',
      srcNode,
      srcZone,
      srcRegion,
      dstIp: dst.shown,
      dstPod: dst.pod,
      dstNamespace: dst.namespace,
      dstWorkload: dst.workload,
      dstNode: dst.node,
      dstZone,
      dstRegion: dst.region,
      dstDnsName,
      dstType,
      crossZone: srcAt.zoneId !== 0 && dst.zoneId !== 0 && srcAt.zoneId !== dst.zoneId,
      trafficClass,
      proto: protoName(f.proto),
      txBytes: f.txBytes,
      rxBytes: f.rxBytes,
      txPackets: f.txPackets,
      rxPackets: f.rxPackets,
      cost: costOf(prices, trafficClass, dstType === 'public', f.txBytes, f.rxBytes),
      // Flows of one batch only: a single flow (enrich) is handed on as plain data.
      srcPeer: numbered ? (srcIsPod ? src.id : local.id) : undefined,
      dstPeer: numbered ? dst.id : undefined,
    };
  }

  /** A private peer that no pod, node or service owns: logged once per address, not every tick. */
  private noteUnresolved(ip: string, node: string): void {
    if (this.unresolved.size >= UNRESOLVED_LOG_MAX || this.unresolved.has(ip)) return;
    this.unresolved.add(ip);
    this.deps.log.debug({ ip, node }, 'private peer not known to the cluster: reported as private');
    if (this.unresolved.size === UNRESOLVED_LOG_MAX) {
      this.deps.log.debug({ max: UNRESOLVED_LOG_MAX }, 'no more unresolved peers will be logged');
    }
  }
}

const isGroupedPublic = (ip: string): boolean => ip === '0.0.0.0' || ip === '::';

/** The class of traffic between two endpoints of the cluster (see the top of this file). */
export function classOf(
  srcNode: string,
  srcZone: string,
  srcRegion: string,
  dstNode: string,
  dstZone: string,
  dstRegion: string,
): TrafficClass {
  return classBy(srcNode, srcZone, srcRegion, dstNode, dstZone, dstRegion, '');
}

/** classOf over names or over their numbers (Enricher.named); `none` stands for the empty name. */
function classBy<T>(
  srcNode: T,
  srcZone: T,
  srcRegion: T,
  dstNode: T,
  dstZone: T,
  dstRegion: T,
  none: T,
): TrafficClass {
  if (dstNode !== none && srcNode === dstNode) return 'same-zone';
  const regions = srcRegion !== none && dstRegion !== none;
  if (regions && srcRegion !== dstRegion) return 'cross-region';
  if (srcZone === none || dstZone === none) return 'unknown';
  // A zone lies in one region: the same zone needs no region to be same-zone.
  if (srcZone === dstZone) return 'same-zone';
  return regions ? 'cross-zone' : 'unknown';
}

const zoneOf = (e: Endpoint, cluster: ClusterLookup): string => e.zone || (cluster.nodeZone(e.node) ?? '');
const region = (cluster: ClusterLookup, node: string): string => cluster.nodeRegion(node) ?? '';

/**
 * A copy of `v` that shares no memory with it: decoded strings can be slices of a larger string
 * holding a whole pull body's text (msgpackr's string extraction), which a kept answer must not
 * keep alive.
 */
const detached = (v: string): string => JSON.parse(JSON.stringify(v)) as string;

/** Numbers of Peers and Locals (EnrichedFlow.srcPeer, dstPeer): unique in the process. */
let peers = 0;

/** The collector's node, the local endpoint of flows whose src is not a known pod. */
interface Local {
  id: number;
  node: string;
  zone: string;
  region: string;
  nodeId: number;
  zoneId: number;
  regionId: number;
}

/**
 * One address as the flows need it: as a src only when it is a pod (else the collector's node is),
 * as a dst all of it. Strings are the cluster view's own, so the flows of one peer share them (the
 * Prometheus sink compares them by reference first).
 */
class Peer {
  readonly id = ++peers;
  /**
   * Numbers of the node, zone and region names (Enricher.named; 0: none), set right after
   * construction: the traffic class compares these rather than the strings, which would be read
   * from wherever each lies in memory.
   */
  nodeId = 0;
  zoneId = 0;
  regionId = 0;
  /** The dst_ip shown: the address, or 0.0.0.0 / :: for a public peer grouped here. */
  shown: string;
  dnsName = '';
  /** A ClusterIP that was not DNATed: named as the service, class unknown. */
  service = false;
  /** The --destinations-file range of a peer outside the cluster. */
  range: Destination | undefined = undefined;

  constructor(
    readonly ip: string,
    readonly type: EnrichedFlow['dstType'],
    readonly pod: string,
    public namespace: string,
    public workload: string,
    readonly node: string,
    readonly zone: string,
    readonly region: string,
  ) {
    this.shown = ip;
  }
}

/** Slots of the per-batch table of src addresses (a power of two minus one): above a node's pods. */
const LOCAL_MASK = 255;

/** Most node, zone and region names numbered before starting over: far above any cluster's nodes. */
const NAMES_MAX = 1 << 16;

/** Most addresses kept: above the pods, nodes and busy peers of a large cluster. */
const PEERS_MAX = 1 << 18;

/**
 * Peers by address. IPv4 addresses by their 32-bit number in the shared open-addressing index
 * (shared/hash-index.ts): parsing a dotted quad costs less than hashing the string, and a probe
 * compares numbers (the address column) instead of chasing a map's entries. Other addresses (IPv6)
 * in a Map. At PEERS_MAX addresses it starts over (their answers come again).
 */
class PeerCache {
  private readonly index = new HashIndex(1024);
  /** Per slot: the address (as a signed 32-bit number) and its peer. */
  private addrs = new Int32Array(1024);
  private peers: (Peer | undefined)[] = [];
  private ids = this.slotIds();
  private readonly other = new Map<string, Peer>();

  /** The peer of `ip` whose IPv4 number is `a` (-1: not IPv4). */
  at(ip: string, a: number): Peer | undefined {
    if (a < 0) return this.other.get(ip);
    const s = this.find(a | 0);
    return s < 0 ? undefined : this.peers[s];
  }

  set(ip: string, peer: Peer): void {
    const a = parseV4(ip, 0, ip.length);
    if (a < 0) {
      if (this.other.size >= PEERS_MAX) this.other.clear();
      this.other.set(ip, peer);
      return;
    }
    const k = a | 0;
    let s = this.find(k);
    if (s < 0) {
      if (this.index.size >= PEERS_MAX) this.clear();
      s = this.ids.take();
      this.addrs[s] = k;
      this.index.add(fmix32(k), s);
    }
    this.peers[s] = peer;
  }

  drop(ip: string): void {
    const a = parseV4(ip, 0, ip.length);
    if (a < 0) {
      this.other.delete(ip);
      return;
    }
    const k = a | 0;
    const s = this.find(k);
    if (s < 0) return;
    this.index.remove(fmix32(k), s);
    this.peers[s] = undefined;
    this.ids.release(s);
  }

  /**
   * Forgets every address. The index and the address column keep their size: a cluster view without
   * change reports clears the cache every batch, and the next batch holds about as many addresses.
   */
  clear(): void {
    if (this.ids.used > 0) {
      this.index.clear(Math.max(1024, this.index.size));
      this.peers = [];
      this.ids = this.slotIds();
    }
    this.other.clear();
  }

  private slotIds(): SlotIds {
    return new SlotIds(this.addrs.length, (n) => {
      this.addrs = grown(this.addrs, n);
    });
  }

  private find(k: number): number {
    const { index, addrs } = this;
    for (let s = index.first(fmix32(k)); s >= 0; s = index.next()) if (addrs[s] === k) return s;
    return -1;
  }
}
