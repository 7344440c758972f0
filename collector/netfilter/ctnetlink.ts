// ctnetlink wire constants and request builders (linux/netfilter/nfnetlink_conntrack.h,
// linux/netlink.h). Netlink and attribute headers are host-endian (little-endian on every platform
// podflow ships for); every ctnetlink value inside an attribute is big-endian.
import { u32le } from '../../shared/bytes.js';

export const NETLINK_NETFILTER = 12;

export const NLMSG_HDRLEN = 16;
export const NFGENMSG_LEN = 4;
export const NLMSG_NOOP = 1;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
export const NLMSG_OVERRUN = 4;

export const NLM_F_REQUEST = 0x1;
export const NLM_F_MULTI = 0x2;
export const NLM_F_ACK = 0x4;
/** Set on every message of a dump whose table changed underneath it (entries may be missing). */
export const NLM_F_DUMP_INTR = 0x10;
export const NLM_F_DUMP = 0x300;
export const NLM_F_EXCL = 0x200;
export const NLM_F_CREATE = 0x400;

const SUBSYS_CTNETLINK = 1;
export const IPCTNL_MSG_CT_NEW = (SUBSYS_CTNETLINK << 8) | 0;
export const IPCTNL_MSG_CT_GET = (SUBSYS_CTNETLINK << 8) | 1;
export const IPCTNL_MSG_CT_DELETE = (SUBSYS_CTNETLINK << 8) | 2;
/** Global counters of the table; a cheap request that needs the same permission as a dump. */
export const IPCTNL_MSG_CT_GET_STATS = (SUBSYS_CTNETLINK << 8) | 5;

/** Multicast groups (NFNLGRP_*). */
export const NFNLGRP_CONNTRACK_NEW = 1;
export const NFNLGRP_CONNTRACK_UPDATE = 2;
export const NFNLGRP_CONNTRACK_DESTROY = 3;

export const AF_UNSPEC = 0;
export const AF_INET = 2;
export const AF_INET6 = 10;

// enum ctattr_type
export const CTA_TUPLE_ORIG = 1;
export const CTA_TUPLE_REPLY = 2;
export const CTA_STATUS = 3;
export const CTA_PROTOINFO = 4;
export const CTA_TIMEOUT = 7;
export const CTA_MARK = 8;
export const CTA_COUNTERS_ORIG = 9;
export const CTA_COUNTERS_REPLY = 10;
export const CTA_ID = 12;
export const CTA_ZONE = 18;
// enum ctattr_tuple
export const CTA_TUPLE_IP = 1;
export const CTA_TUPLE_PROTO = 2;
export const CTA_TUPLE_ZONE = 3;
// enum ctattr_ip
export const CTA_IP_V4_SRC = 1;
export const CTA_IP_V4_DST = 2;
export const CTA_IP_V6_SRC = 3;
export const CTA_IP_V6_DST = 4;
// enum ctattr_l4proto
export const CTA_PROTO_NUM = 1;
export const CTA_PROTO_SRC_PORT = 2;
export const CTA_PROTO_DST_PORT = 3;
export const CTA_PROTO_ICMP_ID = 4;
export const CTA_PROTO_ICMP_TYPE = 5;
export const CTA_PROTO_ICMP_CODE = 6;
export const CTA_PROTO_ICMPV6_ID = 7;
export const CTA_PROTO_ICMPV6_TYPE = 8;
export const CTA_PROTO_ICMPV6_CODE = 9;
// enum ctattr_counters
export const CTA_COUNTERS_PACKETS = 1;
export const CTA_COUNTERS_BYTES = 2;
export const CTA_COUNTERS32_PACKETS = 3;
export const CTA_COUNTERS32_BYTES = 4;

export const NLA_F_NESTED = 0x8000;
export const NLA_TYPE_MASK = 0x3fff;

/** Netlink messages and attributes start at multiples of 4 bytes. */
export function align4(len: number): number {
  return (len + 3) & ~3;
}

/**
 * Framing of a received datagram: the length of the netlink message at `off`, 0 where no header fits
 * (the end), -1 where its length is shorter than a header or runs past the datagram (the rest cannot
 * be framed). Walk with `for (let off = 0, len = messageAt(b, 0); len !== 0; off += align4(len), …)`.
 */
export function messageAt(b: Uint8Array, off: number): number {
  if (off + NLMSG_HDRLEN > b.length) return 0;
  const len = u32le(b, off);
  return len < NLMSG_HDRLEN || off + len > b.length ? -1 : len;
}

/** A netlink message: nlmsghdr + nfgenmsg + the given (already padded) attributes. */
export function buildMessage(
  type: number,
  flags: number,
  seq: number,
  family: number,
  attrs?: Buffer,
): Buffer {
  const bodyLen = attrs?.length ?? 0;
  const buf = Buffer.alloc(NLMSG_HDRLEN + NFGENMSG_LEN + bodyLen);
  buf.writeUInt32LE(buf.length, 0);
  buf.writeUInt16LE(type, 4);
  buf.writeUInt16LE(flags, 6);
  buf.writeUInt32LE(seq >>> 0, 8);
  buf.writeUInt32LE(0, 12); // port 0: the kernel fills in ours
  buf[16] = family;
  buf[17] = 0; // NFNETLINK_V0
  buf.writeUInt16BE(0, 18); // res_id
  if (attrs) attrs.copy(buf, 20);
  return buf;
}

/** A dump of the whole table of one family (AF_INET, AF_INET6, or AF_UNSPEC for both). */
export function buildDumpRequest(seq: number, family: number): Buffer {
  return buildMessage(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, seq, family);
}

/** One attribute, padded to 4 bytes (the `netlink` package's formatter does not pad). */
export function attr(type: number, payload: Buffer): Buffer {
  const len = 4 + payload.length;
  const buf = Buffer.alloc((len + 3) & ~3);
  buf.writeUInt16LE(len, 0);
  buf.writeUInt16LE(type, 2);
  payload.copy(buf, 4);
  return buf;
}

export const nested = (type: number, ...children: Buffer[]): Buffer =>
  attr(type | NLA_F_NESTED, Buffer.concat(children));

export const u8 = (v: number): Buffer => Buffer.from([v & 0xff]);
export function be16(v: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(v & 0xffff);
  return b;
}
export function be32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0);
  return b;
}
export function be64(v: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(v));
  return b;
}

/** Address bytes of an IPv4 dotted quad or an IPv6 text address. */
export function addrBytes(ip: string): Buffer {
  if (!ip.includes(':')) return Buffer.from(ip.split('.').map(Number));
  const [head, tail] = ip.includes('::') ? ip.split('::') : [ip, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  const b = Buffer.alloc(16);
  groups.forEach((g, i) => {
    b.writeUInt16BE(Number.parseInt(g, 16), i * 2);
  });
  return b;
}

export interface TupleSpec {
  src: string;
  dst: string;
  proto: number;
  sport?: number;
  dport?: number;
  /** ICMP/ICMPv6 echo id, type and code (instead of ports). */
  icmpId?: number;
  icmpType?: number;
  icmpCode?: number;
}

export function tupleAttr(type: number, t: TupleSpec): Buffer {
  const v6 = t.src.includes(':');
  const ip = nested(
    CTA_TUPLE_IP,
    attr(v6 ? CTA_IP_V6_SRC : CTA_IP_V4_SRC, addrBytes(t.src)),
    attr(v6 ? CTA_IP_V6_DST : CTA_IP_V4_DST, addrBytes(t.dst)),
  );
  const icmp = t.proto === 1 || t.proto === 58;
  const off = t.proto === 58 ? 3 : 0;
  const l4 = icmp
    ? [
        attr(CTA_PROTO_ICMP_ID + off, be16(t.icmpId ?? 0)),
        attr(CTA_PROTO_ICMP_TYPE + off, u8(t.icmpType ?? 8)),
        attr(CTA_PROTO_ICMP_CODE + off, u8(t.icmpCode ?? 0)),
      ]
    : [attr(CTA_PROTO_SRC_PORT, be16(t.sport ?? 0)), attr(CTA_PROTO_DST_PORT, be16(t.dport ?? 0))];
  return nested(type, ip, nested(CTA_TUPLE_PROTO, attr(CTA_PROTO_NUM, u8(t.proto)), ...l4));
}

export interface EntrySpec {
  orig: TupleSpec;
  reply: TupleSpec;
  timeout: number;
  status?: number;
  mark?: number;
  zone?: number;
  id?: number;
  counters?: { origPackets: number; origBytes: number; replyPackets: number; replyBytes: number };
}

/**
 * The attributes of one conntrack entry, as a dump or event carries them (used to create entries
 * with IPCTNL_MSG_CT_NEW, and to build parser test input).
 */
export function entryAttrs(e: EntrySpec): Buffer {
  const parts = [tupleAttr(CTA_TUPLE_ORIG, e.orig), tupleAttr(CTA_TUPLE_REPLY, e.reply)];
  if (e.counters) {
    const c = e.counters;
    parts.push(
      nested(
        CTA_COUNTERS_ORIG,
        attr(CTA_COUNTERS_PACKETS, be64(c.origPackets)),
        attr(CTA_COUNTERS_BYTES, be64(c.origBytes)),
      ),
      nested(
        CTA_COUNTERS_REPLY,
        attr(CTA_COUNTERS_PACKETS, be64(c.replyPackets)),
        attr(CTA_COUNTERS_BYTES, be64(c.replyBytes)),
      ),
    );
  }
  if (e.status !== undefined) parts.push(attr(CTA_STATUS, be32(e.status)));
  parts.push(attr(CTA_TIMEOUT, be32(e.timeout)));
  if (e.mark !== undefined) parts.push(attr(CTA_MARK, be32(e.mark)));
  if (e.zone) parts.push(attr(CTA_ZONE, be16(e.zone)));
  if (e.id !== undefined) parts.push(attr(CTA_ID, be32(e.id)));
  return Buffer.concat(parts);
}
