// Address → name, learned from DNS answers (collector/dns/learner.ts), asked by the reducer when a
// connection is first counted (collector/reduce.ts PeerNames).
//
// Per address, the latest answers of up to MAX_CLIENTS clients (the newest first): when several
// names point at one address (CDNs, shared load balancers), the name the connection's own pod asked
// wins; another pod's latest answer otherwise. An answer is used for its TTL plus `graceMs`: TTL 0
// and TTLs of a few seconds are common, and the connection is counted at the next read after the
// lookup. The cache holds at most `maxNames` addresses; the least recently answered or asked goes
// first.
//
// A compact store, because a node may hold 100k names (test/bench/dns.bench.ts): as JS objects and
// strings they took 18.9 MiB, as typed arrays and one byte slab well under half of that.
// - Addresses are entries of parallel typed arrays: the address as four 32-bit words (IPv4 as
//   ::ffff:a.b.c.d), a hash chain, the LRU list (older/younger, linked by index), and the newest
//   answer in place (name id, client id, expiry). Further answers of other clients (rare: CDNs)
//   sit in a small pool of answer slots, linked from the entry.
// - Names are interned once, as UTF-8 bytes in one slab, with a reference count: a name shared by
//   many addresses is stored once; a name no answer refers to leaves a hole that the next
//   relocation of the slab (growing, or shrinking after a sweep) squeezes out.
// - Clients (the pods of a node) are small integers.
// A lookup parses the address in place, follows one hash chain, and decodes the name from the slab
// (the last STRINGS decoded names are kept, so that the flows of one peer share one string).
// Chains, not the open-addressing HashIndex of shared/hash-index.ts that the tracker and the series
// tables use: that one keeps two words a position at most half full (16 bytes an entry), chains
// cost 6 (next link + buckets at two entries each): 1 MB less for the addresses and 1 MB less for
// the names at 100k, the margin that keeps the store under 10 MB.
import { type Clock, systemClock } from '../../shared/clock.js';
import { addressWords } from '../../shared/ip.js';
import type { PeerNames } from '../reduce.js';

export interface NameCacheConfig {
  /** Addresses held at most. */
  maxNames: number;
  /** Added to every answer's TTL, milliseconds. */
  graceMs: number;
}

export interface NameCacheStats {
  /** Addresses with a name. */
  names: number;
  /** Addresses dropped to stay within maxNames. */
  evictions: number;
}

/** What the store takes (test/bench/dns.bench.ts, tests). */
export interface NameCacheMemory {
  /** Bytes of every array and of the slab, as allocated. */
  bytes: number;
  /** Distinct names held. */
  names: number;
  /** The slab's size, and the bytes of the names in it (the rest is free or holes). */
  slabBytes: number;
  nameBytes: number;
}

const NONE = -1;
/** Answers of other clients kept per address besides the newest. */
const MAX_CLIENTS = 4;
/** Client addresses are few (the pods of a node); beyond this many the ids start over. */
const MAX_CLIENT_IDS = 4096;
/** The longest name held, in UTF-8 bytes (a host name has at most 253). */
const MAX_NAME_BYTES = 1024;
const MIN_SLAB = 16 << 10;
const MIN_ROWS = 1024;
/** Decoded names kept, by name id (a power of two). */
const STRINGS = 1024;
/** Expiries are whole seconds in a Uint32Array. */
const MAX_UNTIL = 0xffff_ffff;

export class NameCache implements PeerNames {
  private readonly maxNames: number;

  // Addresses: entry e.
  private rows: number;
  private key: Uint32Array; // 4 words per entry
  private chain: Int32Array; // next entry in the hash bucket; next free entry
  private older: Int32Array;
  private younger: Int32Array;
  private name: Int32Array; // the newest answer: name id, client id, until (seconds)
  private client: Int32Array;
  private until: Uint32Array;
  private more: Int32Array; // the first further answer, NONE when none
  private buckets: Int32Array;
  private count = 0;
  private top = 0;
  private freeEntry = NONE;
  private oldest = NONE;
  private youngest = NONE;

  // Further answers: slot a.
  private aName = new Int32Array(64);
  private aClient = new Int32Array(64);
  private aUntil = new Uint32Array(64);
  private aNext = new Int32Array(64);
  private aTop = 0;
  private aFree = NONE;

  // Names: id n, bytes slab[off, off + len).
  private nOff = new Uint32Array(MIN_ROWS);
  private nLen = new Uint16Array(MIN_ROWS);
  private nRefs = new Int32Array(MIN_ROWS);
  private nChain = new Int32Array(MIN_ROWS); // next name in the hash bucket; next free id
  private nBuckets = new Int32Array(MIN_ROWS / 2).fill(NONE);
  private nTop = 0;
  private nFree = NONE;
  private nCount = 0;
  private slab = Buffer.alloc(MIN_SLAB);
  private slabEnd = 0;
  private slabDead = 0;

  private readonly strings: (string | undefined)[] = new Array(STRINGS);
  private readonly stringIds = new Int32Array(STRINGS).fill(NONE);
  private readonly clients = new Map<string, number>();
  private nextClient = 0;
  private readonly words = new Uint32Array(4);
  private readonly scratch = Buffer.alloc(MAX_NAME_BYTES);
  private evicted = 0;

  constructor(
    private readonly config: NameCacheConfig,
    private readonly clock: Clock = systemClock,
  ) {
    this.maxNames = Math.max(1, Math.floor(config.maxNames));
    const rows = Math.min(this.maxNames, MIN_ROWS);
    this.rows = rows;
    this.key = new Uint32Array(rows * 4);
    this.chain = new Int32Array(rows);
    this.older = new Int32Array(rows);
    this.younger = new Int32Array(rows);
    this.name = new Int32Array(rows);
    this.client = new Int32Array(rows);
    this.until = new Uint32Array(rows);
    this.more = new Int32Array(rows);
    this.buckets = new Int32Array(MIN_ROWS / 2).fill(NONE);
  }

  /** Records an answer: `client` asked `name` and got `address`, valid for `ttl` seconds. */
  add(address: string, name: string, ttl: number, client: string): void {
    const w = this.words;
    if (!addressWords(address, w)) return;
    const until = Math.min(
      MAX_UNTIL,
      Math.ceil((this.clock.now() + this.config.graceMs) / 1000) + Math.max(0, Math.floor(ttl)),
    );
    let cid = this.clients.get(client);
    if (cid === undefined) {
      // Ids go on counting after a reset: an old answer's id matches no new client.
      if (this.clients.size >= MAX_CLIENT_IDS) this.clients.clear();
      cid = this.nextClient;
      this.nextClient = (this.nextClient + 1) & 0x7fff_ffff;
      this.clients.set(client, cid);
    }
    const nid = this.intern(name);
    if (nid === NONE) return;
    let e = this.find(w);
    if (e === NONE) {
      e = this.insert(w);
    } else {
      this.unlink(e);
    }
    // The newest answer goes in place; the one it replaces moves to the further answers, unless it
    // is this client's; at most MAX_CLIENTS kept, the oldest dropped.
    const oldName = this.name[e]!;
    const oldClient = this.client[e]!;
    const oldUntil = this.until[e]!;
    let rest = this.more[e]!;
    this.name[e] = nid;
    this.client[e] = cid;
    this.until[e] = until;
    this.more[e] = NONE;
    let kept = 1;
    let tail = NONE;
    if (oldName !== NONE) {
      if (oldClient === cid) {
        this.release(oldName);
      } else {
        tail = this.newAnswer(oldName, oldClient, oldUntil);
        this.more[e] = tail;
        kept++;
      }
    }
    while (rest !== NONE) {
      const next = this.aNext[rest]!;
      if (this.aClient[rest] === cid || kept >= MAX_CLIENTS) {
        this.release(this.aName[rest]!);
        this.aNext[rest] = this.aFree;
        this.aFree = rest;
      } else {
        if (tail === NONE) this.more[e] = rest;
        else this.aNext[tail] = rest;
        this.aNext[rest] = NONE;
        tail = rest;
        kept++;
      }
      rest = next;
    }
    this.makeYoungest(e);
  }

  /** The name `client` was last given `ip` for, else another client's latest; '' when none is fresh. */
  nameOf(ip: string, client: string): string {
    const w = this.words;
    if (!addressWords(ip, w)) return '';
    const e = this.find(w);
    if (e === NONE) return '';
    const now = this.clock.now() / 1000;
    const cid = this.clients.get(client) ?? NONE;
    let pick = NONE;
    if (this.until[e]! >= now) {
      pick = this.name[e]!;
      if (this.client[e] === cid) return this.asked(e, pick);
    }
    for (let a = this.more[e]!; a !== NONE; a = this.aNext[a]!) {
      if (this.aUntil[a]! < now) continue;
      if (this.aClient[a] === cid) return this.asked(e, this.aName[a]!);
      if (pick === NONE) pick = this.aName[a]!;
    }
    if (pick === NONE) {
      this.remove(e);
      return '';
    }
    return this.asked(e, pick);
  }

  /** Drops what has expired (called now and then, so that stale names do not sit until evicted). */
  sweep(): void {
    const now = this.clock.now() / 1000;
    for (let e = this.oldest; e !== NONE; ) {
      const next = this.younger[e]!;
      let live = this.until[e]! >= now;
      for (let a = this.more[e]!; a !== NONE && !live; a = this.aNext[a]!) live = this.aUntil[a]! >= now;
      if (!live) this.remove(e);
      e = next;
    }
    // After many names went, give the slab back.
    const used = this.slabEnd - this.slabDead;
    if (this.slab.length > MIN_SLAB && used * 2 < this.slab.length) this.relocate(used);
  }

  stats(): NameCacheStats {
    return { names: this.count, evictions: this.evicted };
  }

  memory(): NameCacheMemory {
    const arrays = [
      this.key,
      this.chain,
      this.older,
      this.younger,
      this.name,
      this.client,
      this.until,
      this.more,
      this.buckets,
      this.aName,
      this.aClient,
      this.aUntil,
      this.aNext,
      this.nOff,
      this.nLen,
      this.nRefs,
      this.nChain,
      this.nBuckets,
      this.stringIds,
    ];
    let bytes = this.slab.length;
    for (const a of arrays) bytes += a.byteLength;
    return {
      bytes,
      names: this.nCount,
      slabBytes: this.slab.length,
      nameBytes: this.slabEnd - this.slabDead,
    };
  }

  /** Asked: recently useful, moved to the young end. */
  private asked(e: number, nid: number): string {
    this.unlink(e);
    this.makeYoungest(e);
    return this.text(nid);
  }

  // --- addresses ---

  private find(w: Uint32Array): number {
    const w0 = w[0]!;
    const w1 = w[1]!;
    const w2 = w[2]!;
    const w3 = w[3]!;
    const k = this.key;
    const b = hashWords(w0, w1, w2, w3) & (this.buckets.length - 1);
    for (let e = this.buckets[b]!; e !== NONE; e = this.chain[e]!) {
      const o = e * 4;
      if (k[o + 3] === w3 && k[o + 2] === w2 && k[o] === w0 && k[o + 1] === w1) return e;
    }
    return NONE;
  }

  /** A new entry for the address `w`, without answers; the oldest evicted first when full. */
  private insert(w: Uint32Array): number {
    while (this.count >= this.maxNames) {
      this.remove(this.oldest);
      this.evicted++;
    }
    let e = this.freeEntry;
    if (e !== NONE) {
      this.freeEntry = this.chain[e]!;
    } else {
      if (this.top === this.rows) this.growEntries();
      e = this.top++;
    }
    this.key.set(w, e * 4);
    this.name[e] = NONE;
    this.more[e] = NONE;
    // Two entries a bucket on average: chains stay short, the bucket array small.
    if (this.count >= this.buckets.length * 2) this.rehashEntries(this.buckets.length * 2);
    const b = this.bucketOf(e);
    this.chain[e] = this.buckets[b]!;
    this.buckets[b] = e;
    this.count++;
    return e;
  }

  private remove(e: number): void {
    this.unlink(e);
    const b = this.bucketOf(e);
    if (this.buckets[b] === e) {
      this.buckets[b] = this.chain[e]!;
    } else {
      let p = this.buckets[b]!;
      while (this.chain[p] !== e) p = this.chain[p]!;
      this.chain[p] = this.chain[e]!;
    }
    if (this.name[e] !== NONE) this.release(this.name[e]!);
    for (let a = this.more[e]!; a !== NONE; ) {
      const next = this.aNext[a]!;
      this.release(this.aName[a]!);
      this.aNext[a] = this.aFree;
      this.aFree = a;
      a = next;
    }
    this.chain[e] = this.freeEntry;
    this.freeEntry = e;
    this.count--;
  }

  private bucketOf(e: number): number {
    const k = this.key;
    const o = e * 4;
    return hashWords(k[o]!, k[o + 1]!, k[o + 2]!, k[o + 3]!) & (this.buckets.length - 1);
  }

  private unlink(e: number): void {
    const o = this.older[e]!;
    const y = this.younger[e]!;
    if (o === NONE) this.oldest = y;
    else this.younger[o] = y;
    if (y === NONE) this.youngest = o;
    else this.older[y] = o;
  }

  private makeYoungest(e: number): void {
    this.older[e] = this.youngest;
    this.younger[e] = NONE;
    if (this.youngest === NONE) this.oldest = e;
    else this.younger[this.youngest] = e;
    this.youngest = e;
  }

  private growEntries(): void {
    // Up to maxNames exactly: at the default 100k, no row is allocated in vain.
    const rows = Math.min(this.maxNames, this.rows * 2);
    this.key = grown(this.key, rows * 4);
    this.chain = grown(this.chain, rows);
    this.older = grown(this.older, rows);
    this.younger = grown(this.younger, rows);
    this.name = grown(this.name, rows);
    this.client = grown(this.client, rows);
    this.until = grown(this.until, rows);
    this.more = grown(this.more, rows);
    this.rows = rows;
  }

  private rehashEntries(size: number): void {
    const old = this.buckets;
    this.buckets = new Int32Array(size).fill(NONE);
    for (let b = 0; b < old.length; b++) {
      for (let e = old[b]!; e !== NONE; ) {
        const next = this.chain[e]!;
        const nb = this.bucketOf(e);
        this.chain[e] = this.buckets[nb]!;
        this.buckets[nb] = e;
        e = next;
      }
    }
  }

  private newAnswer(nid: number, cid: number, until: number): number {
    let a = this.aFree;
    if (a !== NONE) {
      this.aFree = this.aNext[a]!;
    } else {
      if (this.aTop === this.aName.length) {
        const n = this.aName.length * 2;
        this.aName = grown(this.aName, n);
        this.aClient = grown(this.aClient, n);
        this.aUntil = grown(this.aUntil, n);
        this.aNext = grown(this.aNext, n);
      }
      a = this.aTop++;
    }
    this.aName[a] = nid;
    this.aClient[a] = cid;
    this.aUntil[a] = until;
    this.aNext[a] = NONE;
    return a;
  }

  // --- names ---

  /** The id of `name` with one more reference (stored when new); NONE when too long. */
  private intern(name: string): number {
    const s = this.scratch;
    let len = name.length;
    if (len > MAX_NAME_BYTES) return NONE;
    for (let i = 0; i < len; i++) {
      const c = name.charCodeAt(i);
      if (c >= 0x80) {
        len = Buffer.byteLength(name, 'utf8');
        if (len > MAX_NAME_BYTES) return NONE;
        s.write(name, 0, len, 'utf8');
        break;
      }
      s[i] = c;
    }
    const h = hashBytes(s, 0, len);
    const slab = this.slab;
    for (let n = this.nBuckets[h & (this.nBuckets.length - 1)]!; n !== NONE; n = this.nChain[n]!) {
      if (this.nLen[n] !== len) continue;
      const off = this.nOff[n]!;
      let i = 0;
      while (i < len && slab[off + i] === s[i]) i++;
      if (i === len) {
        this.nRefs[n] = this.nRefs[n]! + 1;
        return n;
      }
    }
    if (this.slabEnd + len > this.slab.length) this.relocate(this.slabEnd - this.slabDead + len);
    const off = this.slabEnd;
    s.copy(this.slab, off, 0, len);
    this.slabEnd += len;
    // Before the new name is counted live: a rehash links the live ones.
    if (this.nCount >= this.nBuckets.length * 2) this.rehashNames(this.nBuckets.length * 2);
    let n = this.nFree;
    if (n !== NONE) {
      this.nFree = this.nChain[n]!;
    } else {
      if (this.nTop === this.nOff.length) {
        // By a quarter: ids are the bulk of the per-name cost besides the bytes.
        const rows = this.nTop + (this.nTop >> 2);
        this.nOff = grown(this.nOff, rows);
        this.nLen = grown(this.nLen, rows);
        this.nRefs = grown(this.nRefs, rows);
        this.nChain = grown(this.nChain, rows);
      }
      n = this.nTop++;
    }
    this.nOff[n] = off;
    this.nLen[n] = len;
    this.nRefs[n] = 1;
    const b = h & (this.nBuckets.length - 1);
    this.nChain[n] = this.nBuckets[b]!;
    this.nBuckets[b] = n;
    this.nCount++;
    return n;
  }

  /** One reference fewer; the last one frees the name (its bytes become a hole in the slab). */
  private release(n: number): void {
    const refs = this.nRefs[n]! - 1;
    this.nRefs[n] = refs;
    if (refs > 0) return;
    const b = hashBytes(this.slab, this.nOff[n]!, this.nLen[n]!) & (this.nBuckets.length - 1);
    if (this.nBuckets[b] === n) {
      this.nBuckets[b] = this.nChain[n]!;
    } else {
      let p = this.nBuckets[b]!;
      while (this.nChain[p] !== n) p = this.nChain[p]!;
      this.nChain[p] = this.nChain[n]!;
    }
    this.slabDead += this.nLen[n]!;
    this.nChain[n] = this.nFree;
    this.nFree = n;
    this.nCount--;
    const slot = n & (STRINGS - 1);
    if (this.stringIds[slot] === n) {
      this.stringIds[slot] = NONE;
      this.strings[slot] = undefined;
    }
  }

  /** Copies the live names into a new slab with room for `need` bytes and a quarter more: holes go. */
  private relocate(need: number): void {
    const size = Math.max(MIN_SLAB, need + (need >> 2));
    const from = this.slab;
    const to = Buffer.alloc(size);
    let end = 0;
    for (let n = 0; n < this.nTop; n++) {
      if (this.nRefs[n]! <= 0) continue;
      const off = this.nOff[n]!;
      const len = this.nLen[n]!;
      from.copy(to, end, off, off + len);
      this.nOff[n] = end;
      end += len;
    }
    this.slab = to;
    this.slabEnd = end;
    this.slabDead = 0;
  }

  private rehashNames(size: number): void {
    this.nBuckets = new Int32Array(size).fill(NONE);
    for (let n = 0; n < this.nTop; n++) {
      if (this.nRefs[n]! <= 0) continue;
      const b = hashBytes(this.slab, this.nOff[n]!, this.nLen[n]!) & (size - 1);
      this.nChain[n] = this.nBuckets[b]!;
      this.nBuckets[b] = n;
    }
  }

  /** The name's text; the last STRINGS decoded are kept. */
  private text(n: number): string {
    const slot = n & (STRINGS - 1);
    if (this.stringIds[slot] === n) return this.strings[slot]!;
    const off = this.nOff[n]!;
    const s = this.slab.toString('utf8', off, off + this.nLen[n]!);
    this.stringIds[slot] = n;
    this.strings[slot] = s;
    return s;
  }
}

/** A copy of `a` with `n` elements. */
function grown<T extends Int32Array | Uint32Array | Uint16Array>(a: T, n: number): T {
  const b = new (a.constructor as new (n: number) => T)(n);
  b.set(a.subarray(0, Math.min(a.length, n)) as never);
  return b;
}

function hashWords(w0: number, w1: number, w2: number, w3: number): number {
  let h = Math.imul(w0 ^ 0x2545f491, 0x9e3779b1);
  h = Math.imul(h ^ (h >>> 15) ^ w1, 0x85ebca77);
  h = Math.imul(h ^ (h >>> 13) ^ w2, 0xc2b2ae3d);
  h = Math.imul(h ^ (h >>> 16) ^ w3, 0x27d4eb2f);
  h = Math.imul(h ^ (h >>> 15), 0x85ebca77);
  return (h ^ (h >>> 13)) >>> 0;
}

/** FNV-1a, then a final mix (the bucket is the low bits). */
function hashBytes(b: Uint8Array, off: number, len: number): number {
  let h = 0x811c9dc5;
  for (let i = off; i < off + len; i++) h = Math.imul(h ^ b[i]!, 0x01000193);
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  return (h ^ (h >>> 13)) >>> 0;
}
