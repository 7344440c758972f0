// Plain data that crosses process and stage boundaries. No methods, no classes.

/** IP protocol numbers podflow names; anything else is reported as its number. */
export const PROTO_NAMES: Readonly<Record<number, string>> = {
  1: 'ICMP',
  6: 'TCP',
  17: 'UDP',
  58: 'ICMPv6',
  132: 'SCTP',
};
/** Every protocol number's name, made once: an array read per flow instead of a sparse object's. */
const PROTO_TABLE: readonly string[] = Array.from({ length: 256 }, (_, n) => PROTO_NAMES[n] ?? String(n));
export const protoName = (proto: number): string => PROTO_TABLE[proto] ?? String(proto);

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
  /**
   * Optional: the name a pod of the node looked up and got `dst` for (collector/dns/), when that
   * answer was fresh as the connection was first counted. Absent when none. A flow of grouped
   * public peers keeps it: one flow per name behind 0.0.0.0 / ::.
   */
  dstName?: string;
}

/** One collector tick's (or several merged ticks') flows, as kept in the collector's backlog. */
export interface FlowBatch {
  /** Increases by one per batch within one collector boot. */
  seq: number;
  /** Start and end of the interval the batch covers, ms since the epoch. */
  from: number;
  to: number;
  flows: Flow[];
  /**
   * Not on the wire: the flows' addresses as the exporter's validation parsed them
   * (shared/pull-contract.ts), src at 2i and dst at 2i+1, an IPv4 address as its unsigned 32-bit
   * number, -1 for IPv6. The enrich stage reads these instead of parsing each address again.
   */
  addresses?: Float64Array;
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
  /**
   * Optional (collectors before it omit it; same wire version): the last seq of every pull not yet
   * covered by an ack, ascending, this pull's own last seq included. The collector never merges
   * batches across one, so the stretches between them are the same for every exporter process: the
   * exporter pushes and keys one stretch at a time (a restarted exporter re-offers a push its
   * predecessor made under the same key).
   */
  boundaries?: number[];
  /**
   * Optional, sent with `boundaries`: the highest seq acknowledged so far (0: none), the lower edge
   * of the first stretch. Batches inside a stretch may be merged, so the first pending seq is not.
   */
  acked?: number;
  /**
   * Optional: per sink name, the highest seq that sink has taken for good (reported by acks),
   * where beyond `acked`. An exporter that starts (restart, takeover) gives each sink only the
   * batches above its cursor, so a batch one sink took before the exporter died is not counted
   * by it again when the others take it.
   */
  cursors?: Record<string, number>;
}

/**
 * How a cloud bills the bytes (CONTRACT.md `traffic_class`): `same-zone` (same node or same zone),
 * `cross-zone` (same region, other zone), `cross-region`, `internet` (a public address not matched
 * otherwise), `private` (a private address outside the cluster), `unknown` (a zone or region missing).
 */
export const TRAFFIC_CLASSES = [
  'same-zone',
  'cross-zone',
  'cross-region',
  'internet',
  'private',
  'unknown',
] as const;
export type TrafficClass = (typeof TRAFFIC_CLASSES)[number];

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
  /** topology.kubernetes.io/region of the local endpoint's node, empty when unknown. */
  srcRegion: string;
  dstIp: string;
  dstPod: string;
  dstNamespace: string;
  dstWorkload: string;
  dstNode: string;
  dstZone: string;
  dstRegion: string;
  dstDnsName: string;
  dstType: 'pod' | 'node' | 'private' | 'public';
  crossZone: boolean;
  trafficClass: TrafficClass;
  proto: string;
  txBytes: number;
  rxBytes: number;
  txPackets: number;
  rxPackets: number;
  /** What these bytes cost under the price table (USD): see exporter/prices.ts. */
  cost: number;
  /**
   * Optional: the enrich stage's number of each side's endpoint (from 1), unique in the process.
   * Flows with the same number have the same pod, workload, node, namespace, zone and region on
   * that side (and the same dstIp and dstType), so a sink can remember per endpoint by it (the
   * Prometheus sink's label groups). srcIp and dstDnsName are not fixed by it.
   */
  srcPeer?: number;
  dstPeer?: number;
}

/**
 * The collector's pull API (served by collector/server.ts, used by exporter/pull.ts).
 *
 * With `--pull-token-file`, every request needs `Authorization: Bearer <token>`; without it the
 * answer is 401 and nothing else is looked at.
 *
 * - `GET  /api/v1/flows` with `Podflow-Exporter: <name>` (and optionally `Podflow-Lease-Seconds:
 *   N`, default 60) → 200, `Content-Type: application/x-msgpack`, a msgpackr-encoded
 *   `PullResponse` holding every batch not yet acknowledged, oldest first. The pull takes or renews
 *   the collector's lease for that exporter: the response's `Podflow-Lease` header is the lease id
 *   and `Podflow-Lease-Seconds` its remaining time. While another exporter holds a lease: 409 with
 *   `Podflow-Conflict: lease` and `Retry-After` (seconds until it lapses). `Accept-Encoding: gzip`
 *   gets a gzip body. Optional `?max_flows=N` caps the flows returned (whole batches only, at least
 *   one batch). Too many pulls at once: 429 with `Retry-After`.
 * - `POST /api/v1/ack` with a msgpackr body `AckRequest` → 204 once every batch with `seq <= seq` is
 *   dropped (and the lease renewed); 409 `Podflow-Conflict: boot` when `bootId` is not this
 *   collector's (it restarted: the exporter starts over), 409 `Podflow-Conflict: lease` when the
 *   lease is no longer the current one (another exporter took over: the ack changes nothing).
 * - `POST /api/v1/release` with a msgpackr body `{lease}` → 204: the exporter lets go on shutdown,
 *   so that the next one need not wait for the lease to lapse.
 *
 * A batch stays in the backlog until acknowledged, so a failed pull, a failed sink or an exporter
 * restart re-delivers it; the exporter acknowledges only after every sink accepted the batch.
 */
export const PULL_PATH = '/api/v1/flows';
export const ACK_PATH = '/api/v1/ack';
export const RELEASE_PATH = '/api/v1/release';
export const MSGPACK_TYPE = 'application/x-msgpack';
export const EXPORTER_HEADER = 'Podflow-Exporter';
export const LEASE_HEADER = 'Podflow-Lease';
export const LEASE_SECONDS_HEADER = 'Podflow-Lease-Seconds';
export const CONFLICT_HEADER = 'Podflow-Conflict';

export interface AckRequest {
  bootId: string;
  seq: number;
  /** The id of the lease the acknowledged batches were pulled under. */
  lease: string;
  /**
   * Optional: per sink name, the highest seq that sink has taken for good (at most 64 names of
   * 1–64 printable characters). `seq` is the lowest of them: what every sink has.
   */
  cursors?: Record<string, number>;
}
