// A DNS response read in place (RFC 1035 §4): only what naming needs — the header, the first
// question's name, and the A, AAAA and CNAME records of the answer section. Hand-written on
// purpose: dns-packet (well kept, used by the tests to build packets) decodes every section into
// objects — 2.9–3.4 µs of CPU per typical answer by itself in test/bench/dns.bench.ts, more than
// half of what the whole learner (this reader, the duplicate check, the cache) costs with it
// replaced (4.4–4.9 µs) — and its AAAA text is not always RFC 5952, the form conntrack addresses
// take here (collector/netfilter/parser.ts formatV6).
// Compression pointers must point backwards (as RFC 1035 §4.1.4 describes them), so a pointer loop
// cannot happen; names longer than 255 octets are refused.
import { formatAddr, formatV6 } from '../netfilter/parser.js';

/** An A or AAAA record, or a CNAME (`address` undefined, `target` set). */
export interface RawRecord {
  owner: string;
  ttl: number;
  address: string | undefined;
  target: string | undefined;
}

export interface RawResponse {
  /** The first question's name, lowercase, no trailing dot; '' when it is not a host name. */
  question: string;
  records: RawRecord[];
}

/** Why a message could not be read. */
export type MessageError = 'truncated' | 'malformed';

const T_A = 1;
const T_CNAME = 5;
const T_AAAA = 28;
const C_IN = 1;

/** End of the name read last (where the record continues). */
let nameEnd = 0;
/** The name read last was not a host name (other characters): kept out, the message still read. */
let nameOdd = false;

/**
 * Reads the name at `off` of the message `buf[start, end)`; sets nameEnd. Returns the name
 * (lowercase, no trailing dot), or a MessageError.
 */
function readName(buf: Buffer, start: number, end: number, off: number): string | MessageError {
  let out = '';
  let p = off;
  let jumped = false;
  let octets = 0;
  // Pointers must go backwards: every jump lowers `limit`, so the loop ends.
  let limit = off;
  nameOdd = false;
  for (;;) {
    if (p >= end) return 'truncated';
    const len = buf[p]!;
    if (len === 0) {
      if (!jumped) nameEnd = p + 1;
      return out;
    }
    if ((len & 0xc0) === 0xc0) {
      if (p + 1 >= end) return 'truncated';
      const to = start + (((len & 0x3f) << 8) | buf[p + 1]!);
      if (!jumped) nameEnd = p + 2;
      if (to >= limit) return 'malformed';
      jumped = true;
      limit = to;
      p = to;
      continue;
    }
    if ((len & 0xc0) !== 0) return 'malformed';
    if (p + 1 + len > end) return 'truncated';
    octets += len + 1;
    if (octets > 255) return 'malformed';
    if (out.length > 0) out += '.';
    for (let i = p + 1; i <= p + len; i++) {
      let c = buf[i]!;
      if (c >= 65 && c <= 90) c += 32;
      else if (!((c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 45 || c === 95)) nameOdd = true;
      out += String.fromCharCode(c);
    }
    p += 1 + len;
  }
}

/**
 * Reads a DNS response `buf[start, end)`. Undefined for what names nothing (a query, an error
 * rcode, another opcode, no question); a MessageError when the message is broken.
 */
export function readResponse(
  buf: Buffer,
  start: number,
  end: number,
): RawResponse | MessageError | undefined {
  if (end - start < 12) return 'truncated';
  const flags = buf.readUInt16BE(start + 2);
  // QR set, opcode QUERY, rcode NOERROR.
  if ((flags & 0x8000) === 0 || ((flags >> 11) & 0xf) !== 0 || (flags & 0xf) !== 0) return undefined;
  const qd = buf.readUInt16BE(start + 4);
  const an = buf.readUInt16BE(start + 6);
  if (qd === 0) return undefined;
  let p = start + 12;
  let question = '';
  for (let q = 0; q < qd; q++) {
    const name = readName(buf, start, end, p);
    if (name === 'truncated' || name === 'malformed') return name;
    if (q === 0) question = nameOdd || name === '' ? '' : name;
    p = nameEnd + 4;
    if (p > end) return 'truncated';
  }
  const records: RawRecord[] = [];
  for (let a = 0; a < an; a++) {
    const owner = readName(buf, start, end, p);
    if (owner === 'truncated' || owner === 'malformed') return owner;
    const odd = nameOdd;
    p = nameEnd;
    if (p + 10 > end) return 'truncated';
    const type = buf.readUInt16BE(p);
    const cls = buf.readUInt16BE(p + 2);
    const ttl = buf.readUInt32BE(p + 4);
    const rdlen = buf.readUInt16BE(p + 8);
    const rdata = p + 10;
    p = rdata + rdlen;
    if (p > end) return 'truncated';
    if (cls !== C_IN || odd) continue;
    if (type === T_A) {
      if (rdlen !== 4) return 'malformed';
      records.push({ owner, ttl, address: formatAddr(buf, rdata, 4), target: undefined });
    } else if (type === T_AAAA) {
      if (rdlen !== 16) return 'malformed';
      records.push({ owner, ttl, address: formatV6(buf, rdata), target: undefined });
    } else if (type === T_CNAME) {
      const target = readName(buf, start, p, rdata);
      if (target === 'truncated' || target === 'malformed') return 'malformed';
      if (!nameOdd) records.push({ owner, ttl, address: undefined, target });
    }
  }
  return { question, records };
}
