// The boundary between where connections are read (netfilter ctnetlink, Cilium BPF maps) and the
// delta tracking / reduction that both share. Downstream cannot tell the sources apart except by name.

/**
 * One connection as a source sees it at one read. Sources may reuse one object for every sample:
 * a consumer copies what it keeps before returning from the visit callback.
 */
export interface ConnSample {
  family: 4 | 6;
  /** IP protocol number. */
  proto: number;
  /** Conntrack zone (netfilter; 0 when absent), part of the connection's identity. */
  zone: number;
  /** Kernel connection id (CTA_ID); 0 when the source has none. Same tuple + new id = new connection. */
  id: number;
  /** Original direction: who opened the connection, and the address it opened it to. */
  origSrc: string;
  origDst: string;
  origSport: number;
  origDport: number;
  /**
   * Reply direction's source: the real peer. Differs from origDst when the destination was NATed
   * (ClusterIP → backend pod).
   */
  replySrc: string;
  /** Bytes/packets sent in the original direction (by origSrc). */
  origBytes: number;
  origPackets: number;
  /** Bytes/packets sent in the reply direction (by the peer). */
  replyBytes: number;
  replyPackets: number;
  /** False when the entry carries no counters (nf_conntrack_acct was off when it was created). */
  hasCounters: boolean;
  /**
   * Optional fast identity of (family, zone, orig tuple, id) computed by the source from raw bytes,
   * as two unsigned 32-bit words: `key` a well-mixed hash (it picks the hash bucket), `key2` a second
   * word (netfilter: the id). Together they must tell live connections apart. When present the
   * tracker finds known connections without touching the address strings (which a source may then
   * decode lazily, e.g. as getters). Absent: the tracker builds a string key.
   */
  key?: number;
  key2?: number;
  /**
   * The one end this entry is accounted from, when the source knows it: Cilium keeps a separate
   * entry per local endpoint (OUT: opened by the local `origSrc`; IN: opened toward the local
   * `origDst`), so a pod-to-pod connection on one node appears twice, once from each end. Such an
   * entry must be reported only from that end (if local), or that connection is counted twice.
   * Absent (netfilter: one entry per connection): from every end that is local.
   */
  localEnd?: 'src' | 'dst';
}

/**
 * The numbers of a ConnSample, for sources that decode each entry in place into one reused object
 * (netfilter/parser.ts CtSample, cilium/ct.ts CiliumSample); each adds how its addresses are read
 * from `buf` (lazily: the tracker asks only for connections it has not seen).
 */
export abstract class InPlaceSample implements ConnSample {
  family: 4 | 6 = 4;
  proto = 0;
  zone = 0;
  id = 0;
  origSport = 0;
  origDport = 0;
  origBytes = 0;
  origPackets = 0;
  replyBytes = 0;
  replyPackets = 0;
  hasCounters = false;
  /** Identity computed from the raw bytes (ConnSample.key, key2). */
  key = 0;
  key2 = 0;
  /** What the entry is read from: the received datagram, or the map's key buffer. */
  buf: Buffer = Buffer.alloc(0);
  abstract get origSrc(): string;
  abstract get origDst(): string;
  abstract get replySrc(): string;
}

export interface ReadStats {
  /** Entries seen by this read. */
  entries: number;
  /** Messages or entries that could not be parsed (skipped, counted). */
  parseErrors: number;
  /**
   * True when the read may have missed live entries (netfilter: the table changed during the dump,
   * NLM_F_DUMP_INTR). The tracker then keeps entries this read did not see instead of forgetting them.
   */
  interrupted?: boolean;
}

export interface ConntrackSource {
  readonly name: 'netfilter' | 'cilium';
  /** Opens sockets/maps and checks permissions. Throws a clear Error when it cannot read. */
  start(): Promise<void>;
  /** Visits every live connection once. */
  read(visit: (s: ConnSample) => void): Promise<ReadStats>;
  /**
   * Visits connections that ended since the last call, with their final counters (netfilter
   * DESTROY events). Called right after `read` in the same tick. Sources without events do nothing.
   */
  drainEnded(visit: (s: ConnSample) => void): void;
  close(): Promise<void>;
}
