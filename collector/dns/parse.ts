// DNS answers from captured packets (native/src/packet.c hands over IP packets, link layer removed):
// IPv4 or IPv6, UDP or TCP from port 53. What comes out is
// the asking client's address and, per address the answer gave, the name the client asked (not the
// CNAME target) and how long the answer may be used. The DNS message itself: collector/dns/message.ts.
//
// Not reassembled: IP fragments (a UDP answer larger than the path MTU; counted as `fragment`) and
// DNS messages over TCP that span several segments (counted as `tcp-partial`): a TCP segment is read
// when it holds whole messages behind their 2-byte length prefix. IPv6 extension headers before
// UDP/TCP are not followed (the kernel filter only passes packets without them).
import { isDnsName } from '../../shared/dns.js';
import { formatAddr, formatV6 } from '../netfilter/parser.js';
import { readResponse } from './message.js';

/** Why a packet gave nothing (the self-metric's `reason` label). */
export type ParseError =
  | 'truncated' // shorter than its headers say, or cut short by the capture
  | 'fragment' // an IP fragment (not reassembled)
  | 'tcp-partial' // a DNS message over TCP spanning several segments (not reassembled)
  | 'malformed'; // not a well-formed DNS message (bad labels, pointers, record lengths)

/** One address an answer gave: `name` (the name asked, lowercase) is good until `ttl` seconds. */
export interface AnswerAddress {
  address: string;
  name: string;
  ttl: number;
}

/** What one packet held. Answers without addresses (NXDOMAIN, other types) have none. */
export interface ParsedAnswers {
  /** The address the answer went to: the asking pod (or the node). */
  client: string;
  clientPort: number;
  /** DNS messages in the packet (TCP may carry several). */
  messages: number;
  /**
   * The same answer seen on two interfaces (routed, its source un-DNATed: IP header and checksums
   * differ) has the same key: client, port, the first DNS message's header and size.
   */
  key: string;
  addresses: AnswerAddress[];
}

const ETH_P_IP = 0x0800;
const ETH_P_IPV6 = 0x86dd;

/**
 * Parses one captured packet (from the IP header, `len` bytes captured of `origLen`) of ethertype
 * `ethertype`. Returns the answers, or the reason it could not.
 */
export function parsePacket(
  buf: Buffer,
  off: number,
  len: number,
  origLen: number,
  ethertype: number,
): ParsedAnswers | ParseError {
  if (len < origLen) return 'truncated';
  let proto: number;
  let l4: number;
  let end: number;
  let client: string;
  if (ethertype === ETH_P_IP) {
    if (len < 20 || buf[off]! >> 4 !== 4) return 'malformed';
    const ihl = (buf[off]! & 0x0f) * 4;
    const total = buf.readUInt16BE(off + 2);
    if (ihl < 20 || total < ihl || total > len) return 'truncated';
    if ((buf.readUInt16BE(off + 6) & 0x3fff) !== 0) return 'fragment'; // MF set or an offset
    proto = buf[off + 9]!;
    client = formatAddr(buf, off + 16, 4);
    l4 = off + ihl;
    end = off + total;
  } else if (ethertype === ETH_P_IPV6) {
    if (len < 40 || buf[off]! >> 4 !== 6) return 'malformed';
    const payload = buf.readUInt16BE(off + 4);
    if (40 + payload > len) return 'truncated';
    proto = buf[off + 6]!;
    if (proto === 44) return 'fragment';
    client = formatV6(buf, off + 24);
    l4 = off + 40;
    end = l4 + payload;
  } else {
    return 'malformed';
  }
  if (proto === 17) {
    if (end - l4 < 8) return 'truncated';
    const udpLen = buf.readUInt16BE(l4 + 4);
    if (udpLen < 8 || l4 + udpLen > end) return 'truncated';
    const msg = buf.subarray(l4 + 8, l4 + udpLen);
    const port = buf.readUInt16BE(l4 + 2);
    const out: ParsedAnswers = {
      client,
      clientPort: port,
      messages: 1,
      key: keyOf(client, port, msg),
      addresses: [],
    };
    const err = decodeMessage(msg, out);
    return err ?? out;
  }
  if (proto === 6) {
    if (end - l4 < 20) return 'truncated';
    const dataOff = (buf[l4 + 12]! >> 4) * 4;
    if (dataOff < 20 || l4 + dataOff > end) return 'truncated';
    const port = buf.readUInt16BE(l4 + 2);
    let p = l4 + dataOff;
    const out: ParsedAnswers = {
      client,
      clientPort: port,
      messages: 0,
      key: keyOf(client, port, buf.subarray(p, end)),
      addresses: [],
    };
    // Whole messages behind their 2-byte length, as many as the segment holds.
    if (p === end) return out; // a bare ACK, SYN or FIN
    while (p < end) {
      if (end - p < 2) return 'tcp-partial';
      const n = buf.readUInt16BE(p);
      if (n === 0 || p + 2 + n > end) return 'tcp-partial';
      const err = decodeMessage(buf.subarray(p + 2, p + 2 + n), out);
      if (err !== undefined) return err;
      out.messages++;
      p += 2 + n;
    }
    return out;
  }
  return 'malformed';
}

/** Reads one DNS message into `out.addresses`; a reason when it cannot. */
function decodeMessage(msg: Buffer, out: ParsedAnswers): ParseError | undefined {
  const m = readResponse(msg, 0, msg.length);
  if (m === 'truncated' || m === 'malformed') return m;
  if (m === undefined || m.question === '' || m.records.length === 0) return undefined;
  const asked = m.question;
  if (!isDnsName(asked)) return undefined;
  const records = m.records;
  // Follow the CNAME chain from the name asked: only addresses of names on it belong to the
  // question (an answer may carry unrelated records). TTL: the shortest on the way.
  let chain = asked;
  let ttl = Number.POSITIVE_INFINITY;
  for (let hop = 0; hop < 16; hop++) {
    let next: string | undefined;
    for (const r of records) {
      if (r.target !== undefined && r.owner === chain) {
        next = r.target;
        ttl = Math.min(ttl, r.ttl);
        break;
      }
    }
    if (next === undefined || next === chain) break;
    chain = next;
  }
  for (const r of records) {
    if (r.address === undefined || (r.owner !== chain && r.owner !== asked)) continue;
    out.addresses.push({ address: r.address, name: asked, ttl: Math.min(ttl, r.ttl) });
  }
  return undefined;
}

const keyOf = (client: string, port: number, msg: Buffer): string =>
  `${client}|${port}|${msg.length}|${msg.toString('latin1', 0, Math.min(12, msg.length))}`;
