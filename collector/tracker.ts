// Per-connection deltas. The kernel (or Cilium) reports cumulative counters per connection; the
// tracker remembers what it already counted for each connection and hands on only the growth since.
//
// Identity = (family, zone, original tuple, connection id). A new id on the same tuple is a new
// connection; a counter that went down is a reset (the kernel zeroed it, or the slot was reused):
// everything it now shows is new. Entries that two complete reads in a row did not see are
// forgotten, so memory stays bounded by the live table. (One read is not enough: the DESTROY event
// of a connection that vanished from the table may arrive a moment after the tick that drained the
// events; it must still find what was already counted, or it would count it all again.)
//
// Ended connections (netfilter DESTROY events) carry final counters. Within one tick the order is
// read → ended → sweep, which makes every interleaving count each byte once:
// - ended after the read saw it: the read counted up to its dump, `ended` adds the rest;
// - ended before the read reached it: the read does not see it, `ended` adds final − last counted
//   (it is still remembered: the sweep runs only after `ended`);
// - created and ended between two reads: never seen, `ended` counts all of it;
// - a later read that still shows an ended entry with its final counters (kernel race): the entry
//   is kept as a tombstone for one more tick and adds nothing; with other counters it is a new
//   connection that reused the id (ids derive from the entry's memory address) and counts in full.
//
// The first complete read is a baseline: connections that existed before podflow started are
// remembered but their history is not counted (a restarted collector would otherwise report those
// bytes twice). Connections ending during the first tick are counted in full. With `--state-dir`
// a restarted collector restores what the previous process remembered (`snapshot`/`restore`): its
// connections continue from their counted counters and every other connection is new since the
// snapshot, so nothing needs a baseline and nothing between the two processes is lost.
//
// Layout, for a table of 250k entries read every few seconds: connections live in "slots" whose
// fields are columns of typed arrays (no object per connection, nothing for the GC to trace but two
// address strings), found through a hash index (shared/hash-index.ts) on the source's two 32-bit
// identity words. An unchanged entry costs one probe and four number compares, and allocates nothing.
import { grown, HashIndex, SlotIds } from '../shared/hash-index.js';
import type { ConnSample } from './source.js';

/**
 * The tracker's view of one remembered connection, handed to the delta sink. One object is reused
 * for every call: read what you need during the call.
 */
export class TrackedConn {
  /**
   * The connection's slot: the same number for as long as the tracker remembers it. A consumer may
   * keep per-connection results in its own columns at this index, and forget them when
   * `TrackerOptions.onNewConnection` says the slot holds another connection.
   */
  slot = 0;
  constructor(private readonly t: Tracker) {}
  get family(): 4 | 6 {
    return this.t.family[this.slot] as 4 | 6;
  }
  get proto(): number {
    return this.t.proto[this.slot]!;
  }
  get origSrc(): string {
    return this.t.origSrc[this.slot]!;
  }
  get replySrc(): string {
    return this.t.replySrc[this.slot]!;
  }
  /** The one end to account this entry from (ConnSample.localEnd): 0 any local end, 1 src, 2 dst. */
  get localEnd(): number {
    return this.t.ends[this.slot]!;
  }
}

/** Receives counter growth of one connection. */
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
  /**
   * Called when `slot` starts holding a connection (a new one, one that reused an ended one's id,
   * or one restored from a snapshot), before any delta of it: what was kept for the slot is void.
   */
  onNewConnection?: (slot: number) => void;
}

/**
 * What the tracker remembers, as plain columns (collector/state.ts writes it to `--state-dir`): one
 * row per remembered connection, its identity, what was already counted of it and the read
 * numbers that decide when it is forgotten.
 */
export interface TrackerSnapshot {
  /** Read number of the last read. */
  gen: number;
  /** No complete read yet: the next complete read is a baseline. */
  baseline: boolean;
  /** Rows. */
  n: number;
  family: Uint8Array;
  proto: Uint8Array;
  ends: Uint8Array;
  /** The source's numeric identity words (0 for rows with a string key). */
  keyA: Uint32Array;
  keyB: Uint32Array;
  /** Per row: the read that last saw it, the read in which it ended (0: live). */
  gens: Uint32Array;
  /** Per row: counted orig bytes, orig packets, reply bytes, reply packets. */
  cnt: Float64Array;
  /** Distinct addresses; `orig`/`reply` index into it. */
  addrs: string[];
  orig: Uint32Array;
  reply: Uint32Array;
  /** Rows identified by a string key (sources without numeric keys): [row, key]. */
  stringKeys: [number, string][];
}

export class Tracker {
  // --- slot columns (index = slot) ---
  /** @internal */ family = new Uint8Array(1024);
  /** @internal */ proto = new Uint8Array(1024);
  /** @internal */ ends = new Uint8Array(1024);
  /** @internal */ origSrc: (string | undefined)[] = [];
  /** @internal */ replySrc: (string | undefined)[] = [];
  /** Last counted orig bytes, orig packets, reply bytes, reply packets: 4 per slot, one cache line. */
  private cnt = new Float64Array(1024 * 4);
  /**
   * Per slot: the generation (read number) that last saw it (0 = free slot), and the generation in
   * which the connection ended (DESTROY; 0 while live). Side by side: one cache line per visit.
   */
  private gens = new Uint32Array(1024 * 2);
  /** Per slot: the source's two identity words (ConnSample.key, key2), side by side. */
  private keys = new Uint32Array(1024 * 2);
  /** For samples without numeric keys: their string key, to delete them from `byString`. */
  private slotString: (string | undefined)[] = [];
  /**
   * The slot the previous read visited after this one (-1: none yet). Sources read in a stable order
   * (a conntrack dump walks the kernel's hash buckets, a BPF map read its own), so the next sample
   * is almost always that slot: checking it first replaces a probe at a random place of the hash
   * table with reads that move forward through the slot columns, which is what a 250k-entry read
   * spends its time on (cache misses, not arithmetic).
   */
  private nextSlot = new Int32Array(1024).fill(-1);
  /** The slot of the previous sample of the current read (-1 at the start of a read). */
  private prevSlot = -1;
  private readonly slotIds = new SlotIds(1024, (cap) => this.growSlots(cap));

  /** Slots with numeric identities, by `key` (already a well-mixed hash: see ConnSample.key). */
  private readonly index = new HashIndex(1024);
  private readonly byString = new Map<string, number>();
  private readonly strings = new Map<string, string>();

  private gen = 0;
  /** Bumped whenever what `snapshot` would return changes beyond read numbers (see `version`). */
  private changes = 0;
  private baseline: boolean;
  private readonly view: TrackedConn;
  private readonly onNew: ((slot: number) => void) | undefined;
  /** Entries without counters seen by the current read. */
  noCounters = 0;

  constructor(
    private readonly onDelta: DeltaSink,
    opts: TrackerOptions = {},
  ) {
    this.baseline = !(opts.countExisting ?? false);
    this.view = new TrackedConn(this);
    this.onNew = opts.onNewConnection;
  }

  /** Connections currently remembered (live plus one-tick tombstones). */
  get size(): number {
    return this.index.size + this.byString.size;
  }

  /**
   * Changes whenever a connection is added, forgotten, ends or shows other counters, or the
   * baseline is taken: an unchanged version means a snapshot now would differ from the last one only
   * in read numbers (`--state-dir` then need not write it again).
   */
  get version(): number {
    return this.changes;
  }

  /** True until the first complete read has been taken as the baseline. */
  get inBaseline(): boolean {
    return this.baseline;
  }

  /** Starts a read: call before handing `visit` to the source. */
  begin(): void {
    this.gen++;
    this.prevSlot = -1;
    this.noCounters = 0;
  }

  /** One live connection of the current read. */
  readonly visit = (s: ConnSample): void => {
    if (!s.hasCounters) this.noCounters++;
    let slot = this.predicted(s);
    if (slot < 0) slot = this.lookup(s);
    if (slot < 0) {
      slot = this.insert(s);
      this.follow(slot);
      this.store(slot, s);
      if (!this.baseline) this.emitFull(slot);
      return;
    }
    this.follow(slot);
    this.gens[slot * 2] = this.gen;
    if (this.gens[slot * 2 + 1] !== 0) {
      // A tombstone shown again. With its final counters: the same, ended connection (a dump racing
      // the DESTROY): nothing new. With other counters: a new connection that got the same id (the
      // kernel derives ids from the entry's address, and a freed entry's memory is reused at once).
      if (this.sameCounters(slot, s)) return;
      this.gens[slot * 2 + 1] = 0;
      this.store(slot, s);
      this.emitFull(slot);
      return;
    }
    this.advance(slot, s);
  };

  /** One connection that ended, with its final counters. */
  readonly visitEnded = (s: ConnSample): void => {
    let slot = this.lookup(s);
    if (slot < 0) {
      slot = this.insert(s);
      this.store(slot, s);
      this.gens[slot * 2 + 1] = this.gen;
      this.emitFull(slot);
      return;
    }
    if (this.gens[slot * 2 + 1] !== 0) {
      // The same DESTROY twice: nothing new. Other final counters: another connection that reused
      // the id (see visit) and ended too: all of it is new.
      if (this.sameCounters(slot, s)) return;
      this.store(slot, s);
      this.gens[slot * 2 + 1] = this.gen;
      this.emitFull(slot);
      return;
    }
    this.gens[slot * 2] = this.gen;
    this.gens[slot * 2 + 1] = this.gen;
    this.changes++;
    this.advance(slot, s);
  };

  private sameCounters(slot: number, s: ConnSample): boolean {
    const c = this.cnt;
    const i = slot * 4;
    return (
      c[i] === s.origBytes &&
      c[i + 1] === s.origPackets &&
      c[i + 2] === s.replyBytes &&
      c[i + 3] === s.replyPackets
    );
  }

  /**
   * Ends a read. `complete` false (interrupted or partial read) keeps entries it did not see: they
   * may still be live, and forgetting them would count their history again at the next read.
   */
  end(complete: boolean): void {
    const gen = this.gen;
    const gens = this.gens;
    const used = this.slotIds.used;
    for (let slot = 0; slot < used; slot++) {
      const g = gens[slot * 2]!;
      if (g === 0) continue; // free
      const e = gens[slot * 2 + 1]!;
      // Ended: kept one more tick as a tombstone. Unseen: kept one more complete read (late DESTROY).
      if ((e !== 0 && e < gen) || (complete && g < gen - 1)) this.remove(slot);
    }
    if (complete && this.baseline) {
      this.baseline = false;
      this.changes++;
    }
  }

  private store(slot: number, s: ConnSample): void {
    this.changes++;
    this.gens[slot * 2] = this.gen;
    this.gens[slot * 2 + 1] = 0;
    this.family[slot] = s.family;
    this.proto[slot] = s.proto;
    this.ends[slot] = s.localEnd === 'src' ? 1 : s.localEnd === 'dst' ? 2 : 0;
    this.origSrc[slot] = this.intern(s.origSrc);
    this.replySrc[slot] = this.intern(s.replySrc);
    this.onNew?.(slot);
    const c = this.cnt;
    const i = slot * 4;
    c[i] = s.origBytes;
    c[i + 1] = s.origPackets;
    c[i + 2] = s.replyBytes;
    c[i + 3] = s.replyPackets;
  }

  /**
   * One string per distinct address: a node's few pod IPs appear in most entries, so 250k entries
   * hold a few thousand strings instead of half a million. Bounded: cleared when it grows large
   * (strings already stored stay valid).
   */
  private intern(ip: string): string {
    const known = this.strings.get(ip);
    if (known !== undefined) return known;
    if (this.strings.size >= 65536) this.strings.clear();
    this.strings.set(ip, ip);
    return ip;
  }

  private advance(slot: number, s: ConnSample): void {
    const c = this.cnt;
    const i = slot * 4;
    const pob = c[i]!;
    const pop = c[i + 1]!;
    const prb = c[i + 2]!;
    const prp = c[i + 3]!;
    const nob = s.origBytes;
    const nop = s.origPackets;
    const nrb = s.replyBytes;
    const nrp = s.replyPackets;
    if (nob === pob && nop === pop && nrb === prb && nrp === prp) return;
    this.changes++;
    c[i] = nob;
    c[i + 1] = nop;
    c[i + 2] = nrb;
    c[i + 3] = nrp;
    if (nob < pob || nop < pop || nrb < prb || nrp < prp) {
      // Counters went down: zeroed by someone (GET_CTRZERO) or a reused slot. All of it is new.
      this.emit(slot, nob, nop, nrb, nrp);
    } else {
      this.emit(slot, nob - pob, nop - pop, nrb - prb, nrp - prp);
    }
  }

  private emitFull(slot: number): void {
    const c = this.cnt;
    const i = slot * 4;
    this.emit(slot, c[i]!, c[i + 1]!, c[i + 2]!, c[i + 3]!);
  }

  private emit(slot: number, ob: number, op: number, rb: number, rp: number): void {
    if (ob === 0 && op === 0 && rb === 0 && rp === 0) return;
    this.view.slot = slot;
    this.onDelta(this.view, ob, op, rb, rp);
  }

  // --- state across restarts ---

  /** Everything remembered, as columns (a copy). */
  snapshot(): TrackerSnapshot {
    const n = this.size;
    const snap: TrackerSnapshot = {
      gen: this.gen,
      baseline: this.baseline,
      n,
      family: new Uint8Array(n),
      proto: new Uint8Array(n),
      ends: new Uint8Array(n),
      keyA: new Uint32Array(n),
      keyB: new Uint32Array(n),
      gens: new Uint32Array(n * 2),
      cnt: new Float64Array(n * 4),
      addrs: [],
      orig: new Uint32Array(n),
      reply: new Uint32Array(n),
      stringKeys: [],
    };
    const addrIndex = new Map<string, number>();
    const addr = (ip: string): number => {
      let i = addrIndex.get(ip);
      if (i === undefined) {
        i = snap.addrs.length;
        addrIndex.set(ip, i);
        snap.addrs.push(ip);
      }
      return i;
    };
    let r = 0;
    let lastOrig: string | undefined;
    let lastReply: string | undefined;
    const used = this.slotIds.used;
    for (let slot = 0; slot < used; slot++) {
      if (this.gens[slot * 2] === 0) continue;
      snap.family[r] = this.family[slot]!;
      snap.proto[r] = this.proto[slot]!;
      snap.ends[r] = this.ends[slot]!;
      const k = this.slotString[slot];
      if (k !== undefined) snap.stringKeys.push([r, k]);
      else {
        snap.keyA[r] = this.keys[slot * 2]!;
        snap.keyB[r] = this.keys[slot * 2 + 1]!;
      }
      snap.gens[r * 2] = this.gens[slot * 2]!;
      snap.gens[r * 2 + 1] = this.gens[slot * 2 + 1]!;
      const c = this.cnt;
      const o = snap.cnt;
      o[r * 4] = c[slot * 4]!;
      o[r * 4 + 1] = c[slot * 4 + 1]!;
      o[r * 4 + 2] = c[slot * 4 + 2]!;
      o[r * 4 + 3] = c[slot * 4 + 3]!;
      // Neighbouring connections often share an address (one pod's many connections): skip the map.
      const os = this.origSrc[slot]!;
      const rs = this.replySrc[slot]!;
      snap.orig[r] = os === lastOrig ? snap.orig[r - 1]! : addr(os);
      snap.reply[r] = rs === lastReply ? snap.reply[r - 1]! : addr(rs);
      lastOrig = os;
      lastReply = rs;
      r++;
    }
    return snap;
  }

  /**
   * Continues from a snapshot (of this node and source, checked by the caller), on a tracker that
   * has not read yet: the remembered connections continue from their counted counters, and a
   * connection the snapshot does not know is new since it, counted in full (no baseline, unless
   * the snapshot was taken before its first complete read). Rows repeating an identity are skipped.
   */
  restore(snap: TrackerSnapshot): void {
    if (this.gen !== 0 || this.size !== 0) throw new Error('restore needs a tracker that has not read yet');
    const byRow = new Map<number, string>(snap.stringKeys);
    for (let r = 0; r < snap.n; r++) {
      const k = byRow.get(r);
      const a = snap.keyA[r]!;
      const b = snap.keyB[r]!;
      if (k !== undefined ? this.byString.has(k) : this.lookupKey(a, b) >= 0) continue;
      const slot = this.slotIds.take();
      if (k !== undefined) {
        this.byString.set(k, slot);
        this.slotString[slot] = k;
      } else {
        this.keys[slot * 2] = a;
        this.keys[slot * 2 + 1] = b;
        this.slotString[slot] = undefined;
        this.index.add(a, slot);
      }
      this.family[slot] = snap.family[r]!;
      this.proto[slot] = snap.proto[r]!;
      this.ends[slot] = snap.ends[r]!;
      this.origSrc[slot] = this.intern(snap.addrs[snap.orig[r]!]!);
      this.replySrc[slot] = this.intern(snap.addrs[snap.reply[r]!]!);
      this.onNew?.(slot);
      this.gens[slot * 2] = snap.gens[r * 2]!;
      this.gens[slot * 2 + 1] = snap.gens[r * 2 + 1]!;
      this.cnt.set(snap.cnt.subarray(r * 4, r * 4 + 4), slot * 4);
    }
    this.gen = snap.gen;
    this.baseline = snap.baseline;
  }

  // --- identity ---

  /** The slot the previous read visited next, when it is `s` (same numeric identity), else -1. */
  private predicted(s: ConnSample): number {
    const p = this.prevSlot;
    if (p < 0 || s.key === undefined) return -1;
    const slot = this.nextSlot[p]!;
    if (slot < 0) return -1;
    if (this.keys[slot * 2] !== s.key >>> 0 || this.keys[slot * 2 + 1] !== (s.key2 ?? 0) >>> 0) return -1;
    // A freed slot, or one keyed by string, keeps stale key words: only a live numeric slot counts.
    if (this.gens[slot * 2] === 0 || this.slotString[slot] !== undefined) return -1;
    return slot;
  }

  private follow(slot: number): void {
    if (this.prevSlot >= 0) this.nextSlot[this.prevSlot] = slot;
    this.prevSlot = slot;
  }

  private lookup(s: ConnSample): number {
    const a = s.key;
    if (a === undefined) {
      const slot = this.byString.get(stringKey(s));
      return slot ?? -1;
    }
    return this.lookupKey(a >>> 0, (s.key2 ?? 0) >>> 0);
  }

  private lookupKey(ua: number, ub: number): number {
    const keys = this.keys;
    for (let slot = this.index.first(ua); slot >= 0; slot = this.index.next()) {
      if (keys[slot * 2] === ua && keys[slot * 2 + 1] === ub) return slot;
    }
    return -1;
  }

  private insert(s: ConnSample): number {
    const slot = this.slotIds.take();
    const a = s.key;
    if (a === undefined) {
      const k = stringKey(s);
      this.byString.set(k, slot);
      this.slotString[slot] = k;
      return slot;
    }
    const ua = a >>> 0;
    this.keys[slot * 2] = ua;
    this.keys[slot * 2 + 1] = (s.key2 ?? 0) >>> 0;
    this.slotString[slot] = undefined;
    this.index.add(ua, slot);
    return slot;
  }

  private remove(slot: number): void {
    const k = this.slotString[slot];
    if (k !== undefined) {
      this.byString.delete(k);
      this.slotString[slot] = undefined;
    } else {
      this.index.remove(this.keys[slot * 2]!, slot);
    }
    this.changes++;
    this.gens[slot * 2] = 0;
    this.origSrc[slot] = undefined;
    this.replySrc[slot] = undefined;
    this.slotIds.release(slot);
  }

  private growSlots(cap: number): void {
    this.family = grown(this.family, cap);
    this.proto = grown(this.proto, cap);
    this.ends = grown(this.ends, cap);
    this.cnt = grown(this.cnt, cap * 4);
    this.gens = grown(this.gens, cap * 2);
    this.keys = grown(this.keys, cap * 2);
    this.nextSlot = grown(this.nextSlot, cap, -1);
  }
}

function stringKey(s: ConnSample): string {
  return `${s.family}|${s.zone}|${s.id}|${s.proto}|${s.origSrc}|${s.origSport}|${s.origDst}|${s.origDport}`;
}
