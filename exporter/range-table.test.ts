import { describe, expect, it } from 'vitest';
import { parseV6 } from '../shared/ip.js';
import { seededInt } from '../test/helpers/random.js';
import { isCidr, RangeTable } from './range-table.js';

const words = (ip: string) => {
  const w = new Uint32Array(4);
  return parseV6(ip, w) ? [...w].map((x) => x.toString(16)) : undefined;
};

describe('parseV6', () => {
  it.each([
    ['::', ['0', '0', '0', '0']],
    ['::1', ['0', '0', '0', '1']],
    ['fe80::', ['fe800000', '0', '0', '0']],
    ['2001:DB8::8:800:200C:417A', ['20010db8', '0', '80800', '200c417a']],
    ['1:2:3:4:5:6:7:8', ['10002', '30004', '50006', '70008']],
    ['::ffff:10.1.2.3', ['0', '0', 'ffff', 'a010203']],
    ['64:ff9b::192.0.2.33', ['64ff9b', '0', '0', 'c0000221']],
  ])('%s', (ip, want) => {
    expect(words(ip)).toEqual(want);
  });

  it.each([
    '',
    ':',
    ':::',
    '1::2::3',
    '1:2:3:4:5:6:7:8:9',
    '12345::',
    'g::',
    '1:',
    '::1.2.3',
    '1:2:3:4:5:6:7:1.2.3.4',
  ])('refuses %j', (ip) => {
    expect(words(ip)).toBeUndefined();
  });
});

describe('RangeTable', () => {
  const table = RangeTable.build([
    { cidr: '10.0.0.0/8', value: 'ten' },
    { cidr: '10.20.0.0/16', value: 'vpc' },
    { cidr: '10.20.30.0/24', value: 'subnet' },
    { cidr: '10.20.30.40', value: 'host' },
    { cidr: '192.0.2.0/24', value: 'provider', rank: 0 },
    { cidr: '192.0.2.0/24', value: 'user', rank: 2 },
    { cidr: '192.0.2.0/24', value: 'provider-later', rank: 0 },
    { cidr: '0.0.0.0/0', value: 'any4' },
    { cidr: '2001:db8::/32', value: 'doc6' },
    { cidr: '2001:db8:1::/48', value: 'doc6-1' },
    { cidr: '2001:db8:1:2::/64', value: 'doc6-1-2' },
    { cidr: '255.255.255.255/32', value: 'last4' },
    { cidr: 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/120', value: 'last6' },
  ]);

  it.each([
    ['10.1.1.1', 'ten'],
    ['10.20.1.1', 'vpc'],
    ['10.20.30.1', 'subnet'],
    ['10.20.30.40', 'host'],
    ['10.20.30.41', 'subnet'],
    ['10.20.31.0', 'vpc'],
    ['10.21.0.0', 'ten'],
    ['11.0.0.0', 'any4'],
    ['0.0.0.0', 'any4'],
    ['255.255.255.255', 'last4'],
    ['255.255.255.254', 'any4'],
    // At equal prefixes the higher rank wins, whatever the order.
    ['192.0.2.9', 'user'],
    ['2001:db8::1', 'doc6'],
    ['2001:db8:1::1', 'doc6-1'],
    ['2001:db8:1:2:ffff::', 'doc6-1-2'],
    ['2001:db8:1:3::', 'doc6-1'],
    ['2001:db9::', undefined],
    ['::', undefined],
    ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'last6'],
    // An IPv4-mapped IPv6 address is its IPv4 address.
    ['::ffff:10.20.30.40', 'host'],
    ['not-an-ip', undefined],
    ['10.20.30', undefined],
    ['10.20.30.400', undefined],
  ])('%s → %s', (ip, want) => {
    expect(table.lookup(ip)).toBe(want);
  });

  it('without entries finds nothing', () => {
    const empty = RangeTable.build<string>([]);
    expect(empty.lookup('10.0.0.1')).toBeUndefined();
    expect(empty.lookup('2001:db8::1')).toBeUndefined();
  });

  it('clears host bits, as a mask means', () => {
    expect(RangeTable.build([{ cidr: '10.1.2.3/8', value: 'x' }]).lookup('10.200.0.1')).toBe('x');
  });

  it.each(['10.0.0.0/33', '10.0.0/8', '2001:db8::/129', 'x/8', '10.0.0.0/', ''])('refuses %j', (cidr) => {
    expect(isCidr(cidr)).toBe(false);
    expect(() => RangeTable.build([{ cidr, value: 1 }])).toThrow(/is not a CIDR range/);
  });

  // Random nested and overlapping prefixes against a linear scan (the longest match by definition).
  it('agrees with a linear longest-prefix scan on 3,000 random prefixes and 20,000 addresses', () => {
    const rnd = seededInt(7);
    const v4: { a: number; len: number; value: number }[] = [];
    for (let i = 0; i < 3000; i++) {
      const len = 8 + rnd(25);
      // Few distinct top bits, so that prefixes nest often.
      const a = (((rnd(4) << 28) | (rnd(1 << 14) << 14) | rnd(1 << 14)) >>> 0) & mask(len);
      v4.push({ a: a >>> 0, len, value: i });
    }
    const t = RangeTable.build(v4.map((p) => ({ cidr: `${ip4(p.a)}/${p.len}`, value: p.value })));
    // The same prefixes in IPv6, as the low 32 bits under 2001:db8:0:0:0:1::/96.
    const t6 = RangeTable.build(v4.map((p) => ({ cidr: `${ip6(p.a)}/${96 + p.len}`, value: p.value })));
    let hits = 0;
    for (let i = 0; i < 20_000; i++) {
      const base = v4[rnd(v4.length)];
      // Near a prefix (inside or just past it) or anywhere.
      const a =
        i % 3 === 0
          ? ((rnd(1 << 16) << 16) | rnd(1 << 16)) >>> 0
          : (base.a + rnd(1 << Math.min(20, 33 - base.len))) >>> 0;
      let best: (typeof v4)[number] | undefined;
      for (const p of v4) {
        if (
          (a & mask(p.len)) >>> 0 === p.a &&
          (best === undefined || p.len > best.len || (p.len === best.len && p.value > best.value))
        ) {
          best = p;
        }
      }
      expect(t.lookup(ip4(a)), ip4(a)).toBe(best?.value);
      expect(t6.lookup(ip6(a)), ip6(a)).toBe(best?.value);
      if (best !== undefined) hits++;
    }
    // Most addresses were picked near a prefix: the scan must have found many.
    expect(hits).toBeGreaterThan(10_000);
  });
});

const mask = (len: number) => (len === 0 ? 0 : (~0 << (32 - len)) >>> 0);
const ip6 = (a: number) => `2001:db8::1:${(a >>> 16).toString(16)}:${(a & 0xffff).toString(16)}`;
const ip4 = (a: number) => `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`;
