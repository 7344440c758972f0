// Address classes shared by the collector (grouping public peers) and the exporter (dst_type).

/**
 * True for addresses that never route on the internet: RFC 1918, carrier-grade NAT 100.64/10,
 * loopback, link-local, 0/8, multicast (224/4, ff00::/8), fc00::/7 (ULA), fe80::/10, ::1, ::, and
 * IPv4-mapped forms of those. Every other address is public (`dst_type="public"`, grouped by
 * `--group-public-ips`): documentation ranges (192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32)
 * included, so that test networks can stand in for internet hosts.
 * Hand-written on purpose: it runs once per flow and node's BlockList costs ~2.5 µs per check.
 */
export function isPrivateIp(ip: string): boolean {
  if (ip.includes(':')) return isPrivateV6(ip);
  return isPrivateV4(ip, 0);
}

function octet(ip: string, start: number): [number, number] {
  let n = 0;
  let i = start;
  for (; i < ip.length; i++) {
    const c = ip.charCodeAt(i);
    if (c === 46) break; // '.'
    n = n * 10 + (c - 48);
  }
  return [n, i + 1];
}

function isPrivateV4(ip: string, start: number): boolean {
  const [a, p1] = octet(ip, start);
  if (a === 10 || a === 127 || a === 0 || (a >= 224 && a <= 239)) return true;
  const [b] = octet(ip, p1);
  if (a === 172) return b >= 16 && b <= 31;
  if (a === 192) return b === 168;
  if (a === 100) return b >= 64 && b <= 127;
  if (a === 169) return b === 254;
  return false;
}

function isPrivateV6(raw: string): boolean {
  const ip = raw.toLowerCase();
  if (ip === '::1' || ip === '::') return true;
  if (ip.startsWith('::ffff:') && ip.includes('.')) return isPrivateV4(ip, 7);
  if (ip.startsWith(':')) return false;
  if (ip.startsWith('ff')) return true; // ff00::/8 multicast
  const end = ip.indexOf(':');
  const first = Number.parseInt(ip.slice(0, end), 16);
  if ((first & 0xfe00) === 0xfc00) return true; // fc00::/7
  return (first & 0xffc0) === 0xfe80; // fe80::/10
}

// Addresses as numbers, parsed in place (no allocation): the collector's DNS name cache keys its
// addresses by them (collector/dns/names.ts). The same parsers as exporter/range-table.ts's.

/**
 * A dotted quad exactly as `net.isIPv4` takes it (four decimal octets 0–255, no leading zeros,
 * nothing else) as an unsigned 32-bit number; -1 for anything else. The exporter's validation of a
 * pull parses every flow's addresses with it and hands the numbers on to the enrich stage
 * (FlowBatch.addresses), so that each address is read once.
 */
export function dottedQuad(v: string): number {
  const len = v.length;
  if (len < 7 || len > 15) return -1;
  let a = 0;
  let octet = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < len; i++) {
    const c = v.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || dots === 3) return -1;
      a = a * 256 + octet;
      dots++;
      octet = 0;
      digits = 0;
      continue;
    }
    const d = c - 48;
    // Not a digit (unsigned: below '0' too), a leading zero, a fourth digit or beyond 255.
    if (d >>> 0 > 9 || (digits === 1 && octet === 0)) return -1;
    octet = octet * 10 + d;
    if (++digits > 3 || octet > 255) return -1;
  }
  if (digits === 0 || dots !== 3) return -1;
  return a * 256 + octet;
}

/** An IPv4 address from `s[start, end)` as an unsigned 32-bit number, or -1. */
export function parseV4(s: string, start: number, end: number): number {
  let a = 0;
  let part = 0;
  let digits = 0;
  let parts = 0;
  for (let i = start; i < end; i++) {
    const c = s.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || parts === 3) return -1;
      a = a * 256 + part;
      parts++;
      part = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      part = part * 10 + (c - 48);
      if (++digits > 3 || part > 255) return -1;
    } else {
      return -1;
    }
  }
  if (digits === 0 || parts !== 3) return -1;
  return a * 256 + part;
}

/** An IPv6 address (with `::`, an IPv4 tail, any case) into four 32-bit words; false if malformed. */
export function parseV6(s: string, out: Uint32Array): boolean {
  // Eight 16-bit groups; `gap` is where `::` stands (-1: none).
  const g = GROUPS;
  let n = 0;
  let gap = -1;
  let i = 0;
  const end = s.length;
  if (end < 2) return false;
  if (s.charCodeAt(0) === 58) {
    if (s.charCodeAt(1) !== 58) return false;
    gap = 0;
    i = 2;
    if (i === end) {
      out.fill(0);
      return true;
    }
  }
  while (i < end) {
    if (n === 8) return false;
    let v = 0;
    let digits = 0;
    let j = i;
    for (; j < end; j++) {
      const c = s.charCodeAt(j);
      const d = c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : c >= 65 && c <= 70 ? c - 55 : -1;
      if (d < 0) break;
      v = v * 16 + d;
      digits++;
    }
    if (j < end && s.charCodeAt(j) === 46) {
      // The last 32 bits written as IPv4.
      if (n > 6) return false;
      const a = parseV4(s, i, end);
      if (a < 0) return false;
      g[n++] = a >>> 16;
      g[n++] = a & 0xffff;
      i = end;
      break;
    }
    if (digits === 0 || digits > 4) return false;
    g[n++] = v;
    if (j === end) {
      i = end;
      break;
    }
    if (s.charCodeAt(j) !== 58) return false;
    if (j + 1 < end && s.charCodeAt(j + 1) === 58) {
      if (gap >= 0) return false;
      gap = n;
      i = j + 2;
    } else {
      i = j + 1;
      if (i === end) return false;
    }
  }
  if (gap < 0 ? n !== 8 : n > 7) return false;
  // Spread the groups after the gap to the end, zeros between.
  const tail = gap < 0 ? 0 : n - gap;
  for (let k = 0; k < 8; k++) {
    let v: number;
    if (gap < 0 || k < gap) v = g[k];
    else if (k >= 8 - tail) v = g[gap + k - (8 - tail)];
    else v = 0;
    if ((k & 1) === 0) out[k >> 1] = v * 65536;
    else out[k >> 1] += v;
  }
  return true;
}

const GROUPS = new Uint32Array(8);

/**
 * An address in text form as four 32-bit words, IPv4 as its IPv4-mapped IPv6 form (`::ffff:a.b.c.d`,
 * the same host); false when `ip` is not an address.
 */
export function addressWords(ip: string, out: Uint32Array): boolean {
  if (ip.indexOf(':') >= 0) return parseV6(ip, out);
  const a = parseV4(ip, 0, ip.length);
  if (a < 0) return false;
  out[0] = 0;
  out[1] = 0;
  out[2] = 0xffff;
  out[3] = a;
  return true;
}
