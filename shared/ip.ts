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
