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
import { isPrivateIp } from '../shared/ip.js';
import type { Logger } from '../shared/log.js';
import { type Destinations, destinationClass } from './destinations.js';
import { type Cloud, costOf, type PriceTable, presetOfProvider, priceTable } from './prices.js';

/** A lookup that knows nothing: standalone without a kubeconfig. */
export const emptyClusterLookup: ClusterLookup = {
  lookup: () => undefined,
  nodeZone: () => undefined,
  nodeRegion: () => undefined,
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
  /** With --cloud auto: whether the preset in force was logged. */
  private announced = false;

  constructor(
    private readonly config: EnrichConfig,
    private readonly deps: EnrichDeps,
  ) {
    const cloud = config.cloud ?? 'none';
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
   */
  enrichBatch(batch: FlowBatch, node: string, out: EnrichedFlow[]): void {
    const at = batch.to;
    const intervalSeconds = (batch.to - batch.from) / 1000;
    const flows = batch.flows;
    const prices = this.prices();
    for (let i = 0; i < flows.length; i++) out.push(this.enrich(flows[i], node, at, intervalSeconds, prices));
  }

  enrich(
    f: Flow,
    node: string,
    at: number,
    intervalSeconds: number,
    prices: PriceTable = this.prices(),
  ): EnrichedFlow {
    const { cluster } = this.deps;
    const src = cluster.lookup(f.src, at);
    const srcIsPod = src !== undefined && src.kind === 'pod' && !src.hostNetwork;
    const srcNode = srcIsPod ? src.node : node;
    const srcZone = (srcIsPod ? src.zone || cluster.nodeZone(srcNode) : cluster.nodeZone(srcNode)) ?? '';
    const srcRegion = cluster.nodeRegion(srcNode) ?? '';

    const dst = cluster.lookup(f.dst, at);
    let dstType: EnrichedFlow['dstType'];
    let dstIp = f.dst;
    let dstPod = '';
    let dstNamespace = '';
    let dstWorkload = '';
    let dstNode = '';
    let dstZone = '';
    let dstRegion = '';
    let dstDnsName = '';
    let trafficClass: TrafficClass;
    if (dst !== undefined && dst.kind === 'pod' && !dst.hostNetwork) {
      dstType = 'pod';
      dstPod = dst.name;
      dstNamespace = dst.namespace;
      dstWorkload = dst.workload || dst.name;
      dstNode = dst.node;
      dstZone = zoneOf(dst, cluster);
      dstRegion = cluster.nodeRegion(dstNode) ?? '';
      trafficClass = classOf(srcNode, srcZone, srcRegion, dstNode, dstZone, dstRegion);
    } else if (dst !== undefined && (dst.kind === 'node' || dst.kind === 'pod')) {
      // A host-network pod's address is its node's: reported as the node. So is a node's public
      // address (ExternalIP): traffic to it stays in the cluster's network, it is not internet.
      dstType = 'node';
      dstNode = dst.node || dst.name;
      dstZone = zoneOf(dst, cluster);
      dstRegion = cluster.nodeRegion(dstNode) ?? '';
      trafficClass = classOf(srcNode, srcZone, srcRegion, dstNode, dstZone, dstRegion);
    } else {
      // 0.0.0.0 and :: are the public peers a collector grouped (--group-public-ips): no real peer
      // has those addresses, and the traffic behind them is internet traffic.
      const priv = !isGroupedPublic(f.dst) && isPrivateIp(f.dst);
      dstType = priv ? 'private' : 'public';
      if (dst !== undefined) {
        // A ClusterIP that was not DNATed (no kube-proxy on the path, or seen before translation):
        // which backend, in which zone, is not known.
        dstNamespace = dst.namespace;
        dstWorkload = `Service/${dst.name}`;
        dstDnsName = dst.namespace ? `${dst.name}.${dst.namespace}.svc` : dst.name;
        trafficClass = 'unknown';
      } else {
        trafficClass = priv ? 'private' : 'internet';
        // Grouped peers (0.0.0.0, ::) have no address left to match.
        const range = isGroupedPublic(f.dst) ? undefined : this.deps.destinations?.lookup(f.dst);
        // The name a pod of the node looked up (collector/dns/), kept when the address is grouped;
        // a destination range's name only where there is none.
        if (f.dstName !== undefined) dstDnsName = f.dstName;
        if (range !== undefined) {
          trafficClass = destinationClass(range, srcRegion, trafficClass);
          if (dstDnsName === '') dstDnsName = range.name;
        }
        if (!priv && this.config.groupPublicIps) dstIp = f.dst.includes(':') ? '::' : '0.0.0.0';
        if (priv && range === undefined && f.dstName === undefined) this.noteUnresolved(f.dst, node);
      }
    }
    return {
      ts: at,
      intervalSeconds,
      srcIp: f.src,
      srcPod: srcIsPod ? src.name : '',
      srcNamespace: srcIsPod ? src.namespace : '',
      srcWorkload: srcIsPod ? src.workload || src.name : '',
      srcNode,
      srcZone,
      srcRegion,
      dstIp,
      dstPod,
      dstNamespace,
      dstWorkload,
      dstNode,
      dstZone,
      dstRegion,
      dstDnsName,
      dstType,
      crossZone: srcZone !== '' && dstZone !== '' && srcZone !== dstZone,
      trafficClass,
      proto: protoName(f.proto),
      txBytes: f.txBytes,
      rxBytes: f.rxBytes,
      txPackets: f.txPackets,
      rxPackets: f.rxPackets,
      cost: costOf(prices, trafficClass, dstType === 'public', f.txBytes, f.rxBytes),
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
  if (dstNode !== '' && srcNode === dstNode) return 'same-zone';
  const regions = srcRegion !== '' && dstRegion !== '';
  if (regions && srcRegion !== dstRegion) return 'cross-region';
  if (srcZone === '' || dstZone === '') return 'unknown';
  // A zone lies in one region: the same zone needs no region to be same-zone.
  if (srcZone === dstZone) return 'same-zone';
  return regions ? 'cross-zone' : 'unknown';
}

const zoneOf = (e: Endpoint, cluster: ClusterLookup): string => e.zone || (cluster.nodeZone(e.node) ?? '');
