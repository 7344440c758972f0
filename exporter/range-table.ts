// Longest-prefix match of IP addresses against tens of thousands of CIDR ranges (the
// destinations file and the providers' range files), once per flow to a peer outside the cluster.
//
//   const table = RangeTable.build([{ cidr: '10.20.0.0/16', value: a, rank: 1 }, …]);
//   table.lookup('10.20.3.4');   // a, or undefined
//
// Built once: the prefixes are flattened into disjoint segments that cover the whole address space
// (IPv4 and IPv6 apart), each holding the value of the most specific prefix covering it (at equal
// prefixes, the higher rank, then the later entry). A lookup parses the address in place and
// binary-searches the segment starts: about 17 steps at 50,000 ranges, no allocation. Segment
// starts are typed arrays (4 bytes a segment for IPv4, 16 for IPv6), so a table of 50,000 ranges
// takes a few hundred kB, where a binary trie takes tens of MB for IPv6.
//
// No npm package fitted: cidr-matcher is IPv4-only and answers yes/no, netmask and ip-cidr test one
// block at a time, node's net.BlockList answers yes/no at about 2.5 µs a check.

import { parseV4, parseV6 } from '../shared/ip.js';

export interface RangeEntry<T> {
  /** `a.b.c.d/n` or `v6::/n`; a bare address is a /32 or /128. */
  cidr: string;
  value: T;
  /** At equal prefixes the higher rank wins (a user's own entry over a provider's). @default 0 */
  rank?: number;
}

/** A parsed prefix: its first address as four 32-bit words (IPv4 in word 3) and its length. */
interface Prefix {
  v6: boolean;
  words: number[];
  len: number;
  value: number;
  rank: number;
  order: number;
}

export class RangeTable<T> {
  private constructor(
    private readonly values: readonly T[],
    /** IPv4 segment starts, ascending; the first is 0. */
    private readonly starts4: Uint32Array,
    /** Value index per IPv4 segment; -1 where no prefix covers it. */
    private readonly values4: Int32Array,
    /** IPv6 segment starts, four words each, ascending; the first is ::. */
    private readonly starts6: Uint32Array,
    private readonly values6: Int32Array,
    /** Number of prefixes the table was built from (after parsing). */
    readonly size: number,
  ) {}

  /** Throws on a malformed CIDR, naming it (the caller adds where it came from). */
  static build<T>(entries: readonly RangeEntry<T>[]): RangeTable<T> {
    const values: T[] = [];
    const v4: Prefix[] = [];
    const v6: Prefix[] = [];
    for (const e of entries) {
      const p = parseCidr(e.cidr);
      if (p === undefined)
        throw new Error(`"${e.cidr}" is not a CIDR range like 10.0.0.0/8 or 2001:db8::/32`);
      p.value = values.length;
      p.rank = e.rank ?? 0;
      p.order = values.length;
      values.push(e.value);
      (p.v6 ? v6 : v4).push(p);
    }
    const [s4, x4] = flatten(v4, 1);
    const [s6, x6] = flatten(v6, 4);
    return new RangeTable(values, s4, x4, s6, x6, values.length);
  }

  /** The value of the most specific range holding `ip`, or undefined (also for a malformed address). */
  lookup(ip: string): T | undefined {
    const i = ip.indexOf(':') < 0 ? this.find4(parseV4(ip, 0, ip.length)) : this.find6(ip);
    return i < 0 ? undefined : this.values[i];
  }

  private find4(a: number): number {
    if (a < 0) return -1;
    const starts = this.starts4;
    // The last segment whose start is at or below a (starts[0] is 0).
    let lo = 0;
    let hi = starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (starts[mid] <= a) lo = mid;
      else hi = mid - 1;
    }
    return this.values4[lo];
  }

  private find6(ip: string): number {
    const w = SCRATCH;
    if (!parseV6(ip, w)) return -1;
    // An IPv4-mapped address (::ffff:a.b.c.d) is the IPv4 address.
    if (w[0] === 0 && w[1] === 0 && w[2] === 0xffff) return this.find4(w[3]);
    const starts = this.starts6;
    const w0 = w[0];
    const w1 = w[1];
    const w2 = w[2];
    const w3 = w[3];
    let lo = 0;
    let hi = starts.length / 4 - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      // starts[mid] <= w, word by word (inline: a call per step cost a third of the lookup).
      const o = mid * 4;
      const s0 = starts[o];
      let le: boolean;
      if (s0 !== w0) le = s0 < w0;
      else if (starts[o + 1] !== w1) le = starts[o + 1] < w1;
      else if (starts[o + 2] !== w2) le = starts[o + 2] < w2;
      else le = starts[o + 3] <= w3;
      if (le) lo = mid;
      else hi = mid - 1;
    }
    return this.values6[lo];
  }
}

const SCRATCH = new Uint32Array(4);

/** True for `a.b.c.d/n`, `v6::/n` or a bare address. */
export const isCidr = (text: string): boolean => parseCidr(text) !== undefined;

function parseCidr(text: string): Prefix | undefined {
  const t = text.trim();
  const slash = t.indexOf('/');
  const addr = slash < 0 ? t : t.slice(0, slash);
  const v6 = addr.includes(':');
  const max = v6 ? 128 : 32;
  let len = max;
  if (slash >= 0) {
    const l = t.slice(slash + 1);
    if (!/^\d{1,3}$/.test(l)) return undefined;
    len = Number(l);
    if (len > max) return undefined;
  }
  const words = [0, 0, 0, 0];
  if (v6) {
    const w = new Uint32Array(4);
    if (!parseV6(addr, w)) return undefined;
    for (let k = 0; k < 4; k++) words[k] = w[k];
  } else {
    const a = parseV4(addr, 0, addr.length);
    if (a < 0) return undefined;
    words[3] = a;
  }
  // Host bits set (10.1.2.3/8) are cleared: the range is what the mask says, as providers mean it.
  const bits = v6 ? words : [words[3]];
  for (let k = 0; k < bits.length; k++) {
    const keep = Math.max(0, Math.min(32, len - 32 * k));
    bits[k] = keep === 0 ? 0 : keep === 32 ? bits[k] : (bits[k] & (~0 << (32 - keep))) >>> 0;
  }
  if (!v6) words[3] = bits[0];
  return { v6, words, len, value: 0, rank: 0, order: 0 };
}

/**
 * Disjoint segments covering the whole space from nested-or-disjoint prefixes: starts (as `width`
 * 32-bit words each) and the value index of each (-1 for none). Build-time only: BigInt is fine.
 */
function flatten(prefixes: Prefix[], width: 1 | 4): [Uint32Array, Int32Array] {
  const bitsTotal = BigInt(32 * width);
  const toBig = (p: Prefix): bigint => {
    let v = 0n;
    for (let k = 4 - width; k < 4; k++) v = (v << 32n) | BigInt(p.words[k]);
    return v;
  };
  const items = prefixes.map((p) => {
    const start = toBig(p);
    const end = start + (1n << (bitsTotal - BigInt(p.len))) - 1n;
    return { start, end, len: p.len, rank: p.rank, order: p.order, value: p.value };
  });
  // Wider first at one start, so that narrower ones nest inside; at equal prefixes the winner last.
  items.sort((a, b) =>
    a.start !== b.start
      ? a.start < b.start
        ? -1
        : 1
      : a.len - b.len || a.rank - b.rank || a.order - b.order,
  );
  const segStart: bigint[] = [0n];
  const segValue: number[] = [-1];
  const emit = (at: bigint, value: number) => {
    const last = segStart.length - 1;
    if (segStart[last] === at) {
      segValue[last] = value;
      // Replacing may make it equal to the one before: merge.
      if (last > 0 && segValue[last - 1] === value) {
        segStart.pop();
        segValue.pop();
      }
      return;
    }
    if (segValue[last] === value) return;
    segStart.push(at);
    segValue.push(value);
  };
  const limit = (1n << bitsTotal) - 1n;
  const stack: (typeof items)[number][] = [];
  const close = (before: bigint | undefined) => {
    while (stack.length > 0 && (before === undefined || stack[stack.length - 1].end < before)) {
      const t = stack.pop() as (typeof items)[number];
      if (t.end < limit) emit(t.end + 1n, stack.length > 0 ? stack[stack.length - 1].value : -1);
    }
  };
  for (const it of items) {
    close(it.start);
    stack.push(it);
    emit(it.start, it.value);
  }
  close(undefined);
  const starts = new Uint32Array(segStart.length * width);
  for (let i = 0; i < segStart.length; i++) {
    let v = segStart[i];
    for (let k = width - 1; k >= 0; k--) {
      starts[i * width + k] = Number(v & 0xffffffffn);
      v >>= 32n;
    }
  }
  return [starts, Int32Array.from(segValue)];
}
