// Decodes one ctnetlink conntrack message (dump reply or event) in place: plain byte reads at offsets
// into the received datagram, into one reused sample object. Addresses are turned into strings only
// when somebody asks for them (the tracker asks only for connections it has not seen before), so an
// unchanged entry costs no allocation at all.
//
// Robustness: every length is checked against its parent before use; anything malformed makes
// `parseCtMessage` return false (the caller counts a parse error and moves on). Nothing here throws
// on bad input.
import * as bytes from '../../shared/bytes.js';
import * as hash from '../../shared/hash.js';
import { InPlaceSample } from '../source.js';
import {
  AF_INET,
  AF_INET6,
  align4,
  CTA_COUNTERS_BYTES,
  CTA_COUNTERS_ORIG,
  CTA_COUNTERS_PACKETS,
  CTA_COUNTERS_REPLY,
  CTA_COUNTERS32_BYTES,
  CTA_COUNTERS32_PACKETS,
  CTA_ID,
  CTA_IP_V4_DST,
  CTA_IP_V4_SRC,
  CTA_IP_V6_DST,
  CTA_IP_V6_SRC,
  CTA_MARK,
  CTA_PROTO_DST_PORT,
  CTA_PROTO_ICMP_CODE,
  CTA_PROTO_ICMP_ID,
  CTA_PROTO_ICMP_TYPE,
  CTA_PROTO_ICMPV6_CODE,
  CTA_PROTO_ICMPV6_ID,
  CTA_PROTO_ICMPV6_TYPE,
  CTA_PROTO_NUM,
  CTA_PROTO_SRC_PORT,
  CTA_STATUS,
  CTA_TIMEOUT,
  CTA_TUPLE_IP,
  CTA_TUPLE_ORIG,
  CTA_TUPLE_PROTO,
  CTA_TUPLE_REPLY,
  CTA_TUPLE_ZONE,
  CTA_ZONE,
  messageAt,
  NLA_TYPE_MASK,
  NLMSG_HDRLEN,
} from './ctnetlink.js';

// The readers and mixers as module constants, not called as imports: V8 then inlines them as known
// functions. Called through the import bindings, a 250k-entry parse took about 10% longer
// (measured: 46 vs 42 ms).
const { be16, be32, be64, i32le, u16le, u32le } = bytes;
const { fmix32, murmurMix } = hash;

/** Bits of what a tuple carried; a usable tuple has all of TUPLE_COMPLETE. */
const F_SRC = 1;
const F_DST = 2;
const F_PROTO = 4;
const TUPLE_COMPLETE = F_SRC | F_DST | F_PROTO;

/**
 * One conntrack entry as decoded from a message. Implements ConnSample with lazily decoded address
 * strings; valid only until the next parse into the same object (the buffer it points into is the
 * datagram being read).
 */
export class CtSample extends InPlaceSample {
  replySport = 0;
  replyDport = 0;
  /** ICMP/ICMPv6 echo id, type, code of the original tuple (0 for other protocols). */
  icmpId = 0;
  icmpType = 0;
  icmpCode = 0;
  status = 0;
  /** Seconds until the entry expires, as the kernel reported it. */
  timeout = 0;
  mark = 0;
  // `key`, `key2`: identity of (family, zone, orig tuple, id), a hash of the raw bytes and the id
  // (computeKey). The tracker looks entries up by these without building strings.
  /** Offsets of the tuples' addresses in `buf` (the datagram). */
  origSrcOff = 0;
  origDstOff = 0;
  replySrcOff = 0;
  replyDstOff = 0;

  get origSrc(): string {
    return formatAddr(this.buf, this.origSrcOff, this.family);
  }
  get origDst(): string {
    return formatAddr(this.buf, this.origDstOff, this.family);
  }
  get replySrc(): string {
    return formatAddr(this.buf, this.replySrcOff, this.family);
  }
  get replyDst(): string {
    return formatAddr(this.buf, this.replyDstOff, this.family);
  }
}

export function formatAddr(b: Buffer, off: number, family: 4 | 6): string {
  return family === 4 ? `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}` : formatV6(b, off);
}

/** RFC 5952 text form (lowercase, longest run of ≥2 zero groups as `::`), as Kubernetes writes it. */
export function formatV6(b: Buffer, off: number): string {
  let bestStart = -1;
  let bestLen = 1;
  let runStart = -1;
  for (let i = 0; i < 8; i++) {
    const zero = b[off + 2 * i] === 0 && b[off + 2 * i + 1] === 0;
    if (zero) {
      if (runStart < 0) runStart = i;
      if (i - runStart + 1 > bestLen) {
        bestLen = i - runStart + 1;
        bestStart = runStart;
      }
    } else {
      runStart = -1;
    }
  }
  let out = '';
  for (let i = 0; i < 8; i++) {
    if (i === bestStart) {
      out += i === 0 ? '::' : ':';
      i += bestLen - 1;
      continue;
    }
    out += ((b[off + 2 * i] << 8) | b[off + 2 * i + 1]).toString(16);
    if (i < 7) out += ':';
  }
  return out;
}

/**
 * Walks the netlink messages of one datagram and parses those of message type `type` into `s`,
 * calling `visit` for each entry that parses. Returns the number of parse errors: a message that
 * does not parse is skipped; a length that cannot be framed ends the walk (the rest of the datagram
 * is unusable). Never throws on bad input.
 */
export function walkDatagram(b: Buffer, type: number, s: CtSample, visit: (s: CtSample) => void): number {
  let errors = 0;
  for (let off = 0, len = messageAt(b, 0); len !== 0; off += align4(len), len = messageAt(b, off)) {
    if (len < 0) return errors + 1;
    if (u16le(b, off + 4) === type) {
      if (parseCtMessage(b, off, off + len, s)) visit(s);
      else errors++;
    }
  }
  return errors;
}
/**
 * Parses the conntrack message at [off, end) of `b` (starting at its nlmsghdr) into `s`.
 * Returns false when the message is malformed or lacks an original/reply tuple.
 */
export function parseCtMessage(b: Buffer, off: number, end: number, s: CtSample): boolean {
  if (end > b.length || end - off < NLMSG_HDRLEN + 4) return false;
  // The message's own length must match the span the caller framed (a cut message is not valid).
  if (u32le(b, off) !== end - off) return false;
  const nfFamily = b[off + NLMSG_HDRLEN];
  if (nfFamily !== AF_INET && nfFamily !== AF_INET6) return false;
  const family = nfFamily === AF_INET ? 4 : 6;
  s.buf = b;
  s.family = family;
  s.proto = 0;
  s.zone = 0;
  s.id = 0;
  s.icmpId = 0;
  s.icmpType = 0;
  s.icmpCode = 0;
  s.origBytes = 0;
  s.origPackets = 0;
  s.replyBytes = 0;
  s.replyPackets = 0;
  s.hasCounters = false;
  s.status = 0;
  s.timeout = 0;
  s.mark = 0;
  let haveOrig = false;
  let haveReply = false;
  let p = off + NLMSG_HDRLEN + 4;
  while (p + 4 <= end) {
    const len = u16le(b, p);
    const type = u16le(b, p + 2) & NLA_TYPE_MASK;
    if (len < 4 || p + len > end) return false;
    const v = p + 4;
    const ve = p + len;
    switch (type) {
      case CTA_TUPLE_ORIG:
        if (parseTuple(b, v, ve, s, false) !== TUPLE_COMPLETE) return false;
        haveOrig = true;
        break;
      case CTA_TUPLE_REPLY:
        if (parseTuple(b, v, ve, s, true) !== TUPLE_COMPLETE) return false;
        haveReply = true;
        break;
      case CTA_COUNTERS_ORIG:
      case CTA_COUNTERS_REPLY:
        if (!parseCounters(b, v, ve, s, type === CTA_COUNTERS_REPLY)) return false;
        break;
      case CTA_STATUS:
      case CTA_TIMEOUT:
      case CTA_MARK:
      case CTA_ID: {
        // Four u32 attributes: one length check.
        if (len !== 8) return false;
        const x = be32(b, v);
        if (type === CTA_STATUS) s.status = x;
        else if (type === CTA_TIMEOUT) s.timeout = x;
        else if (type === CTA_MARK) s.mark = x;
        else s.id = x;
        break;
      }
      case CTA_ZONE:
        if (len < 6) return false;
        s.zone = be16(b, v);
        break;
    }
    p += (len + 3) & ~3;
  }
  if (!haveOrig || !haveReply) return false;
  computeKey(b, s);
  return true;
}

function parseTuple(b: Buffer, p: number, end: number, s: CtSample, reply: boolean): number {
  let seen = 0;
  while (p + 4 <= end) {
    const len = u16le(b, p);
    const type = u16le(b, p + 2) & NLA_TYPE_MASK;
    if (len < 4 || p + len > end) return -1;
    if (type === CTA_TUPLE_IP) {
      const r = parseIp(b, p + 4, p + len, s, reply);
      if (r < 0) return -1;
      seen |= r;
    } else if (type === CTA_TUPLE_PROTO) {
      if (!parseProto(b, p + 4, p + len, s, reply)) return -1;
      seen |= F_PROTO;
    } else if (type === CTA_TUPLE_ZONE) {
      // The zone of a tuple direction; the top-level CTA_ZONE is the connection's zone. Both are
      // only present when non-zero; keep whichever is set.
      if (len < 6) return -1;
      if (!reply && s.zone === 0) s.zone = be16(b, p + 4);
    }
    p += (len + 3) & ~3;
  }
  return seen;
}

function parseIp(b: Buffer, p: number, end: number, s: CtSample, reply: boolean): number {
  const want = s.family === 4 ? 8 : 20;
  let seen = 0;
  while (p + 4 <= end) {
    const len = u16le(b, p);
    const type = u16le(b, p + 2) & NLA_TYPE_MASK;
    if (len < 4 || p + len > end) return -1;
    let which = 0;
    if (type === CTA_IP_V4_SRC || type === CTA_IP_V6_SRC) which = F_SRC;
    else if (type === CTA_IP_V4_DST || type === CTA_IP_V6_DST) which = F_DST;
    if (which !== 0) {
      // An address of the other family than the message's, or of the wrong size: malformed.
      const v6attr = type === CTA_IP_V6_SRC || type === CTA_IP_V6_DST;
      if (len !== want || v6attr !== (s.family === 6)) return -1;
      if (which === F_SRC) {
        if (reply) s.replySrcOff = p + 4;
        else s.origSrcOff = p + 4;
      } else if (reply) s.replyDstOff = p + 4;
      else s.origDstOff = p + 4;
      seen |= which;
    }
    p += (len + 3) & ~3;
  }
  return seen;
}

function parseProto(b: Buffer, p: number, end: number, s: CtSample, reply: boolean): boolean {
  let haveNum = false;
  let sport = 0;
  let dport = 0;
  let icmpId = 0;
  let icmpType = 0;
  let icmpCode = 0;
  let proto = 0;
  while (p + 4 <= end) {
    const len = u16le(b, p);
    const type = u16le(b, p + 2) & NLA_TYPE_MASK;
    if (len < 4 || p + len > end) return false;
    const v = p + 4;
    switch (type) {
      case CTA_PROTO_NUM:
        if (len < 5) return false;
        proto = b[v];
        haveNum = true;
        break;
      case CTA_PROTO_SRC_PORT:
        if (len < 6) return false;
        sport = be16(b, v);
        break;
      case CTA_PROTO_DST_PORT:
        if (len < 6) return false;
        dport = be16(b, v);
        break;
      case CTA_PROTO_ICMP_ID:
      case CTA_PROTO_ICMPV6_ID:
        if (len < 6) return false;
        icmpId = be16(b, v);
        break;
      case CTA_PROTO_ICMP_TYPE:
      case CTA_PROTO_ICMPV6_TYPE:
        if (len < 5) return false;
        icmpType = b[v];
        break;
      case CTA_PROTO_ICMP_CODE:
      case CTA_PROTO_ICMPV6_CODE:
        if (len < 5) return false;
        icmpCode = b[v];
        break;
    }
    p += (len + 3) & ~3;
  }
  if (!haveNum) return false;
  // ICMP has no ports: its echo id and type/code identify the "connection" instead.
  if (proto === 1 || proto === 58) {
    sport = icmpId;
    dport = (icmpType << 8) | icmpCode;
  }
  if (reply) {
    if (proto !== s.proto) return false;
    s.replySport = sport;
    s.replyDport = dport;
  } else {
    s.proto = proto;
    s.origSport = sport;
    s.origDport = dport;
    s.icmpId = icmpId;
    s.icmpType = icmpType;
    s.icmpCode = icmpCode;
  }
  return true;
}

function parseCounters(b: Buffer, p: number, end: number, s: CtSample, reply: boolean): boolean {
  let packets = 0;
  let bytes = 0;
  while (p + 4 <= end) {
    const len = u16le(b, p);
    const type = u16le(b, p + 2) & NLA_TYPE_MASK;
    if (len < 4 || p + len > end) return false;
    const v = p + 4;
    if (type === CTA_COUNTERS_PACKETS || type === CTA_COUNTERS_BYTES) {
      if (len !== 12) return false;
      if (type === CTA_COUNTERS_PACKETS) packets = be64(b, v);
      else bytes = be64(b, v);
    } else if (type === CTA_COUNTERS32_PACKETS || type === CTA_COUNTERS32_BYTES) {
      if (len !== 8) return false;
      if (type === CTA_COUNTERS32_PACKETS) packets = be32(b, v);
      else bytes = be32(b, v);
    }
    p += (len + 3) & ~3;
  }
  if (reply) {
    s.replyPackets = packets;
    s.replyBytes = bytes;
  } else {
    s.origPackets = packets;
    s.origBytes = bytes;
  }
  s.hasCounters = true;
  return true;
}

/**
 * key = 32-bit hash of (family, zone, proto, orig addresses and ports, id); key2 = the id itself.
 * Two live entries share both only if their ids (already kernel hashes) and tuple hashes collide.
 */
function computeKey(b: Buffer, s: CtSample): void {
  let h = 0x9747b28c;
  const n = s.family === 4 ? 1 : 4;
  for (let i = 0; i < n; i++) {
    h = murmurMix(murmurMix(h, i32le(b, s.origSrcOff + 4 * i)), i32le(b, s.origDstOff + 4 * i));
  }
  h = murmurMix(h, (s.origSport << 16) | s.origDport);
  h = murmurMix(murmurMix(h, s.proto | (s.family << 8) | (s.zone << 16)), s.id);
  s.key = fmix32(h);
  s.key2 = s.id;
}
