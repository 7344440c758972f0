// Cilium's conntrack map entries: key and value layouts, and their translation into ConnSamples.
//
// Key (bpf/lib/common.h, struct ipv4_ct_tuple / ipv6_ct_tuple, packed): daddr, saddr, dport, sport
// (both be16), nexthdr, flags. The address names are those of the reply direction: the connection's
// opener is `daddr` (first field) and its destination `saddr`; the ports are named for the original
// direction (sport = the opener's port).
//
// Value (struct ct_entry, 56 bytes):
//   ≤1.15: rx_packets@0 rx_bytes@8 tx_packets@16 tx_bytes@24 — counted per lookup direction, i.e.
//          from the local endpoint: rx = received by it, tx = sent by it, for OUT and IN entries alike.
//   ≥1.16: reserved0@0 (always 0) backend_id@8 packets@16 bytes@24 — one counter per entry, only with
//          `bpf-conntrack-accounting`. podflow reports it as the entry's own direction: an OUT entry's
//          bytes as sent by the local opener, an IN entry's as received by the local destination.
//   Both: lifetime u32@32 (expiry in the agent's clock units), flags u16@36.
//
// Flags: OUT 0 (opened by a local endpoint, the tuple's source), IN 1 (opened toward a local
// endpoint, the tuple's destination), RELATED 2 (ICMP errors of another entry), SERVICE 4 (load
// balancer state, a different value meaning). RELATED and SERVICE entries are skipped.

import * as bytes from '../../shared/bytes.js';
import * as hash from '../../shared/hash.js';
import { formatAddr } from '../netfilter/parser.js';
import { InPlaceSample } from '../source.js';

// As in netfilter/parser.ts: module constants, so that V8 inlines them into the per-entry code.
const { be16, i32le, nonZero64, u64words } = bytes;
const { fmix32, murmurMix } = hash;

export const CT_MAPS = [
  { name: 'cilium_ct4_global', family: 4, keySize: 14 },
  { name: 'cilium_ct_any4_global', family: 4, keySize: 14 },
  { name: 'cilium_ct6_global', family: 6, keySize: 38 },
  { name: 'cilium_ct_any6_global', family: 6, keySize: 38 },
] as const;
export type CtMapName = (typeof CT_MAPS)[number]['name'];

export const CT_VALUE_SIZE = 56;
export const TUPLE_F_OUT = 0;
export const TUPLE_F_IN = 1;
export const TUPLE_F_RELATED = 2;
export const TUPLE_F_SERVICE = 4;

export type Layout = 'v1.15' | 'v1.16';

/**
 * One Cilium entry as a ConnSample. Address strings are decoded only when read (the tracker reads
 * them once, for a connection it has not seen); valid until the next `fill`.
 */
export class CiliumSample extends InPlaceSample {
  /** OUT entries are accounted from the opener, IN entries from the destination. */
  localEnd: 'src' | 'dst' = 'src';
  /** Raw entry flags and lifetime. (`key`, `key2`: the identity of the raw key, see `hashKey`.) */
  flags = 0;
  lifetime = 0;
  /** The entry's offset in `buf` (the keys buffer). */
  off = 0;
  /** Decoded destination, shared by origDst and replySrc; reset by `fillSample`. */
  dst: string | undefined = undefined;

  get origSrc(): string {
    return formatAddr(this.buf, this.off, this.family);
  }
  get origDst(): string {
    this.dst ??= formatAddr(this.buf, this.off + (this.family === 4 ? 4 : 16), this.family);
    return this.dst;
  }
  /** Cilium's conntrack does not translate addresses (its load balancer keeps SERVICE entries). */
  get replySrc(): string {
    return this.origDst;
  }
}

/**
 * A 32-bit view of a values buffer (ct_entry is 8-byte aligned: 56 bytes, u64 counters). The buffer
 * must start at a multiple of 4 bytes.
 */
export function valueView(values: Buffer): Uint32Array {
  if (values.byteOffset % 4 !== 0) throw new Error('values buffer must be 4-byte aligned');
  return new Uint32Array(values.buffer, values.byteOffset, values.length >>> 2);
}

/**
 * Fills `s` from the entry at key offset `ko` of `keys` and at 32-bit index `vi` of the value view
 * `v` (entry i: vi = i * 14). Returns false for entries podflow does not report (RELATED, SERVICE).
 */
export function fillSample(
  s: CiliumSample,
  keys: Buffer,
  ko: number,
  v: Uint32Array,
  vi: number,
  family: 4 | 6,
  layout: Layout | undefined,
): boolean {
  const a = family === 4 ? 4 : 16;
  const flags = keys[ko + 2 * a + 5];
  if ((flags & (TUPLE_F_RELATED | TUPLE_F_SERVICE)) !== 0) return false;
  s.family = family;
  s.buf = keys;
  s.off = ko;
  s.dst = undefined;
  s.origDport = be16(keys, ko + 2 * a);
  s.origSport = be16(keys, ko + 2 * a + 2);
  s.proto = keys[ko + 2 * a + 4];
  s.flags = flags;
  const inbound = (flags & TUPLE_F_IN) !== 0;
  s.localEnd = inbound ? 'dst' : 'src';
  s.lifetime = v[vi + 8];
  if (layout === 'v1.15') {
    const rxp = u64words(v, vi);
    const rxb = u64words(v, vi + 2);
    const txp = u64words(v, vi + 4);
    const txb = u64words(v, vi + 6);
    // rx/tx are the local endpoint's: for OUT it opened the connection (orig = tx), for IN it is the
    // destination (orig = what it received).
    s.origPackets = inbound ? rxp : txp;
    s.origBytes = inbound ? rxb : txb;
    s.replyPackets = inbound ? txp : rxp;
    s.replyBytes = inbound ? txb : rxb;
    s.hasCounters = true;
  } else if (layout === 'v1.16') {
    // One counter, reported in the original direction: sent by the opener (OUT, local = source) or
    // received by the destination (IN, local = destination).
    s.origPackets = u64words(v, vi + 4);
    s.origBytes = u64words(v, vi + 6);
    s.replyPackets = 0;
    s.replyBytes = 0;
    s.hasCounters = true;
  } else {
    // Layout not known yet (no entry has counters): nothing to count.
    s.origPackets = 0;
    s.origBytes = 0;
    s.replyPackets = 0;
    s.replyBytes = 0;
    s.hasCounters = false;
  }
  hashKey(s, keys, ko, a);
  return true;
}

/**
 * Layout evidence in one batch of entries. ≤1.15 counts every entry from its first packet: an IN
 * entry starts with rx_packets = 1, and any answered connection has rx counters, so a non-zero
 * u64 at 0 or 8 of a non-SERVICE entry means ≤1.15 (≥1.16 keeps reserved0@0 zero and sets
 * backend_id@8 only on SERVICE entries). Counters at 16/24 with none at 0/8 mean ≥1.16 with
 * accounting on. Returns 'v1.15', 'v1.16' or undefined (no counters anywhere: cannot tell).
 */
export function layoutEvidence(
  keys: Buffer,
  values: Buffer,
  n: number,
  keySize: number,
  family: 4 | 6,
): Layout | undefined {
  const flagsAt = (family === 4 ? 8 : 32) + 5;
  let sawLater = false;
  for (let i = 0; i < n; i++) {
    const flags = keys[i * keySize + flagsAt];
    if ((flags & (TUPLE_F_RELATED | TUPLE_F_SERVICE)) !== 0) continue;
    const vo = i * CT_VALUE_SIZE;
    if (nonZero64(values, vo) || nonZero64(values, vo + 8)) return 'v1.15';
    if (nonZero64(values, vo + 16) || nonZero64(values, vo + 24)) sawLater = true;
  }
  return sawLater ? 'v1.16' : undefined;
}

// Identity of the raw key for the tracker: `key` (53 bits) and `key2` (32 bits), Murmur3-style hashes
// of the whole key (addresses, ports, protocol, flags) and the family. OUT and IN entries of one
// connection share the tuple but not the flags: two identities.
/** `a`: address length (4 or 16); the key holds two addresses, then ports, proto, flags. */
function hashKey(s: CiliumSample, b: Buffer, o: number, a: number): void {
  // Seeds differ from the netfilter source's so that the two never agree by accident.
  let h1 = 0x3c6ef372;
  let h2 = 0xa54ff53a;
  const end = o + 2 * a;
  for (let p = o; p < end; p += 4) {
    const w = i32le(b, p);
    h1 = murmurMix(h1, w);
    h2 = murmurMix(h2, w ^ 0x5bd1e995);
  }
  const meta = b[end + 4] | (b[end + 5] << 8) | (a << 16);
  const ports = (b[end] << 24) | (b[end + 1] << 16) | (b[end + 2] << 8) | b[end + 3];
  h1 = murmurMix(murmurMix(h1, meta), ports);
  h2 = murmurMix(murmurMix(h2, meta), ports);
  // Consumers may keep only the low 32 bits of `key` (from h2) beside `key2` (from h1): 64 bits.
  s.key = (fmix32(h1) >>> 11) * 4294967296 + fmix32(h2);
  s.key2 = fmix32(h1 ^ 0x2545f491);
}
