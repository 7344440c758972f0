// Enrich stage: a collector's Flow becomes an EnrichedFlow with the Kubernetes context of both ends
// (CONTRACT.md "Flow metrics"). Without Kubernetes the lookup is empty: src is the collector's node,
// peers are `private` or `public` by address.
import type { ClusterLookup, Endpoint } from '../shared/cluster.js';
import { type EnrichedFlow, type Flow, type FlowBatch, protoName } from '../shared/flow.js';
import { isPrivateIp } from '../shared/ip.js';
import type { Logger } from '../shared/log.js';

/** A lookup that knows nothing: standalone without a kubeconfig. */
export const emptyClusterLookup: ClusterLookup = {
  lookup: () => undefined,
  nodeZone: () => undefined,
};

export interface EnrichConfig {
  /** `group-public-ips`: public peers become 0.0.0.0 / ::. */
  groupPublicIps: boolean;
}

export interface EnrichDeps {
  cluster: ClusterLookup;
  log: Logger;
}

/** How many distinct unresolved private peers are logged (once each) before going quiet. */
const UNRESOLVED_LOG_MAX = 1000;

export class Enricher {
  private readonly unresolved = new Set<string>();

  constructor(
    private readonly config: EnrichConfig,
    private readonly deps: EnrichDeps,
  ) {}

  /**
   * Enriches one batch of one collector. `node` is the collector's node: the local endpoint when the
   * src address is not a known pod. Appends to `out` (no intermediate arrays).
   */
  enrichBatch(batch: FlowBatch, node: string, out: EnrichedFlow[]): void {
    const at = batch.to;
    const intervalSeconds = (batch.to - batch.from) / 1000;
    const flows = batch.flows;
    for (let i = 0; i < flows.length; i++) out.push(this.enrich(flows[i], node, at, intervalSeconds));
  }

  enrich(f: Flow, node: string, at: number, intervalSeconds: number): EnrichedFlow {
    const { cluster } = this.deps;
    const src = cluster.lookup(f.src, at);
    const srcIsPod = src !== undefined && src.kind === 'pod' && !src.hostNetwork;
    const srcNode = srcIsPod ? src.node : node;
    const srcZone = (srcIsPod ? src.zone || cluster.nodeZone(srcNode) : cluster.nodeZone(srcNode)) ?? '';

    const dst = cluster.lookup(f.dst, at);
    let dstType: EnrichedFlow['dstType'];
    let dstIp = f.dst;
    let dstPod = '';
    let dstNamespace = '';
    let dstWorkload = '';
    let dstNode = '';
    let dstZone = '';
    let dstDnsName = '';
    if (dst !== undefined && dst.kind === 'pod' && !dst.hostNetwork) {
      dstType = 'pod';
      dstPod = dst.name;
      dstNamespace = dst.namespace;
      dstWorkload = dst.workload || dst.name;
      dstNode = dst.node;
      dstZone = zoneOf(dst, cluster);
    } else if (dst !== undefined && (dst.kind === 'node' || dst.kind === 'pod')) {
      // A host-network pod's address is its node's: reported as the node.
      dstType = 'node';
      dstNode = dst.node || dst.name;
      dstZone = zoneOf(dst, cluster);
    } else {
      // 0.0.0.0 and :: are the public peers a collector grouped (--group-public-ips): no real peer
      // has those addresses, and the traffic behind them is internet traffic.
      const priv = !isGroupedPublic(f.dst) && isPrivateIp(f.dst);
      dstType = priv ? 'private' : 'public';
      if (dst !== undefined) {
        // A ClusterIP that was not DNATed (no kube-proxy on the path, or seen before translation).
        dstNamespace = dst.namespace;
        dstWorkload = `Service/${dst.name}`;
        dstDnsName = dst.namespace ? `${dst.name}.${dst.namespace}.svc` : dst.name;
      } else {
        if (!priv && this.config.groupPublicIps) dstIp = f.dst.includes(':') ? '::' : '0.0.0.0';
        // The name a pod of the node looked up (collector/dns/): kept when the address is grouped.
        if (f.dstName !== undefined) dstDnsName = f.dstName;
        else if (priv) this.noteUnresolved(f.dst, node);
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
      dstIp,
      dstPod,
      dstNamespace,
      dstWorkload,
      dstNode,
      dstZone,
      dstDnsName,
      dstType,
      crossZone: srcZone !== '' && dstZone !== '' && srcZone !== dstZone,
      proto: protoName(f.proto),
      txBytes: f.txBytes,
      rxBytes: f.rxBytes,
      txPackets: f.txPackets,
      rxPackets: f.rxPackets,
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

const zoneOf = (e: Endpoint, cluster: ClusterLookup): string => e.zone || (cluster.nodeZone(e.node) ?? '');
