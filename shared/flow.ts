// Plain data that crosses process and stage boundaries. No methods, no classes.

/** IP protocol numbers podflow names; anything else is reported as its number. */
export const PROTO_NAMES: Readonly<Record<number, string>> = {
  1: 'ICMP',
  6: 'TCP',
  17: 'UDP',
  58: 'ICMPv6',
  132: 'SCTP',
};
export const protoName = (proto: number): string => PROTO_NAMES[proto] ?? String(proto);

/**
 * Traffic of one (local endpoint, peer, protocol) over one collector interval, as reduced on the
 * collector. `tx` = sent by the local endpoint, `rx` = received by it. Counts are deltas.
 */
export interface Flow {
  /** Local endpoint address (a pod of this node, or this host in standalone mode). */
  src: string;
  /** Peer address: the backend after DNAT (reply tuple's source), or 0.0.0.0 / :: when grouped. */
  dst: string;
  /** IP protocol number. */
  proto: number;
  txBytes: number;
  rxBytes: number;
  txPackets: number;
  rxPackets: number;
}

/** One collector tick's (or several merged ticks') flows, as kept in the collector's backlog. */
export interface FlowBatch {
  /** Increases by one per batch within one collector boot. */
  seq: number;
  /** Start and end of the interval the batch covers, ms since the epoch. */
  from: number;
  to: number;
  flows: Flow[];
}

/** What a pull returns (msgpackr-encoded on the wire). */
export interface PullResponse {
  /** Wire format version: a collector and an exporter of different versions refuse each other. */
  version: 1;
  /** Random per collector process: a new boot id means sequence numbers start over. */
  bootId: string;
  node: string;
  source: 'netfilter' | 'cilium';
  batches: FlowBatch[];
}

/** A flow with the Kubernetes context of both ends, as handed to sinks. */
export interface EnrichedFlow {
  /** End of the interval, ms since the epoch. */
  ts: number;
  intervalSeconds: number;
  srcIp: string;
  srcPod: string;
  srcNamespace: string;
  srcWorkload: string;
  srcNode: string;
  srcZone: string;
  dstIp: string;
  dstPod: string;
  dstNamespace: string;
  dstWorkload: string;
  dstNode: string;
  dstZone: string;
  dstDnsName: string;
  dstType: 'pod' | 'node' | 'private' | 'public';
  crossZone: boolean;
  proto: string;
  txBytes: number;
  rxBytes: number;
  txPackets: number;
  rxPackets: number;
}
