// Per-connection deltas. The kernel (or Cilium) reports cumulative counters per connection; the
// tracker remembers what it already counted for each connection and hands on only the growth since.
//
// Identity = (family, zone, original tuple, connection id). A new id on the same tuple is a new
// connection; a counter that went down is a reset (the kernel zeroed it, or the slot was reused):
// everything it now shows is new. Entries a complete read did not see are forgotten, so memory stays
// bounded by the live table.
//
// Ended connections (netfilter DESTROY events) carry final counters. Within one tick the order is
// read → ended → sweep, which makes every interleaving count each byte once:
// - ended after the read saw it: the read counted up to its dump, `ended` adds the rest;
// - ended before the read reached it: the read does not see it, `ended` adds final − last counted
//   (it is still remembered: the sweep runs only after `ended`);
// - created and ended between two reads: never seen, `ended` counts all of it;
// - a later read that still shows an ended entry (kernel race): the entry is kept as a tombstone for
//   one more tick and adds nothing.
//
// The first complete read is a baseline: connections that existed before podflow started are
// remembered but their history is not counted (a restarted collector would otherwise report those
// bytes twice). Connections ending during the first tick are counted in full.
import type { ConnSample } from './source.js';

/** What the tracker remembers of one connection. Address strings are decoded once, when first seen. */
export class TrackedConn {
  tag: unknown = undefined;
  origBytes = 0;
  origPackets = 0;
  replyBytes = 0;
  replyPackets = 0;
  /** Generation (read number) that last saw it. */
  seen = 0;
  /** Generation in which it ended (DESTROY), 0 while live. */
  ended = 0;
  constructor(
    readonly key2: number,
    readonly family: 4 | 6,
    readonly proto: number,
    readonly origSrc: string,
    readonly origDst: string,
    readonly replySrc: string,
  ) {}
}

/**
 * Receives counter growth. `c` is the tracker's own record (stable across ticks: consumers may cache
 * per-connection results in `c.tag`).
 */
export type DeltaSink = (
  c: TrackedConn,
  origBytes: number,
  origPackets: number,
  replyBytes: number,
  replyPackets: number,
) => void;

export interface TrackerOptions {
  /** Count the full counters of connections seen at the first read (default false: baseline). */
  countExisting?: boolean;
}

export class Tracker {
  private readonly byKey = new Map<number, TrackedConn>();
  /** Samples without a numeric key, and the (practically never seen) numeric key collisions. */
  private readonly byString = new Map<string, TrackedConn>();
  private gen = 0;
  private baseline: boolean;
  /** Entries without counters seen by the current read. */
  noCounters = 0;

  constructor(
    private readonly onDelta: DeltaSink,
    opts: TrackerOptions = {},
  ) {
    this.baseline = !(opts.countExisting ?? false);
  }

  /** Connections currently remembered (live plus one-tick tombstones). */
  get size(): number {
    return this.byKey.size + this.byString.size;
  }

  /** True until the first complete read has been taken as the baseline. */
  get inBaseline(): boolean {
    return this.baseline;
  }

  /** Starts a read: call before handing `visit` to the source. */
  begin(): void {
    this.gen++;
    this.noCounters = 0;
  }

  /** One live connection of the current read. */
  readonly visit = (s: ConnSample): void => {
    if (!s.hasCounters) this.noCounters++;
    const c = this.lookup(s);
    if (c === undefined) {
      const n = this.insert(s);
      n.seen = this.gen;
      n.origBytes = s.origBytes;
      n.origPackets = s.origPackets;
      n.replyBytes = s.replyBytes;
      n.replyPackets = s.replyPackets;
      if (!this.baseline) this.emitFull(n);
      return;
    }
    c.seen = this.gen;
    if (c.ended !== 0) return; // tombstone: its final counters were counted already
    this.advance(c, s);
  };

  /** One connection that ended, with its final counters. */
  readonly visitEnded = (s: ConnSample): void => {
    const c = this.lookup(s);
    if (c === undefined) {
      const n = this.insert(s);
      n.seen = this.gen;
      n.ended = this.gen;
      n.origBytes = s.origBytes;
      n.origPackets = s.origPackets;
      n.replyBytes = s.replyBytes;
      n.replyPackets = s.replyPackets;
      this.emitFull(n);
      return;
    }
    if (c.ended !== 0) return; // a second DESTROY for the same connection: nothing new
    c.seen = this.gen;
    c.ended = this.gen;
    this.advance(c, s);
  };

  /**
   * Ends a read. `complete` false (interrupted or partial read) keeps entries it did not see: they
   * may still be live, and forgetting them would count their history again at the next read.
   */
  end(complete: boolean): void {
    const gen = this.gen;
    for (const map of [this.byKey, this.byString] as Map<unknown, TrackedConn>[]) {
      for (const [k, c] of map) {
        if ((c.ended !== 0 && c.ended < gen) || (complete && c.seen !== gen)) map.delete(k);
      }
    }
    if (complete) this.baseline = false;
  }

  private advance(c: TrackedConn, s: ConnSample): void {
    let ob = s.origBytes - c.origBytes;
    let op = s.origPackets - c.origPackets;
    let rb = s.replyBytes - c.replyBytes;
    let rp = s.replyPackets - c.replyPackets;
    if (ob === 0 && op === 0 && rb === 0 && rp === 0) return;
    if (ob < 0 || op < 0 || rb < 0 || rp < 0) {
      // Counters went down: zeroed by someone (GET_CTRZERO) or a reused slot. All of it is new.
      ob = s.origBytes;
      op = s.origPackets;
      rb = s.replyBytes;
      rp = s.replyPackets;
    }
    c.origBytes = s.origBytes;
    c.origPackets = s.origPackets;
    c.replyBytes = s.replyBytes;
    c.replyPackets = s.replyPackets;
    if (ob > 0 || op > 0 || rb > 0 || rp > 0) this.onDelta(c, ob, op, rb, rp);
  }

  private emitFull(c: TrackedConn): void {
    if (c.origBytes > 0 || c.origPackets > 0 || c.replyBytes > 0 || c.replyPackets > 0) {
      this.onDelta(c, c.origBytes, c.origPackets, c.replyBytes, c.replyPackets);
    }
  }

  private lookup(s: ConnSample): TrackedConn | undefined {
    const key = s.key;
    if (key !== undefined) {
      const c = this.byKey.get(key);
      if (c !== undefined && c.key2 === s.key2) return c;
      // A colliding key lives in byString (also after the first holder of the key was forgotten).
      if (c === undefined && this.byString.size === 0) return undefined;
      return this.byString.get(`${key}:${s.key2}`);
    }
    return this.byString.get(stringKey(s));
  }

  private insert(s: ConnSample): TrackedConn {
    const key = s.key;
    const c = new TrackedConn(s.key2 ?? 0, s.family, s.proto, s.origSrc, s.origDst, s.replySrc);
    if (key === undefined) this.byString.set(stringKey(s), c);
    else if (this.byKey.has(key)) this.byString.set(`${key}:${s.key2}`, c);
    else this.byKey.set(key, c);
    return c;
  }
}

function stringKey(s: ConnSample): string {
  return `${s.family}|${s.zone}|${s.id}|${s.proto}|${s.origSrc}|${s.origSport}|${s.origDst}|${s.origDport}`;
}
