import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { CiliumSample, fillSample, layoutEvidence, valueView } from './ct.js';

/** One entry's key bytes (Cilium order: opener's address first, then the destination's). */
function key4(
  src: number[],
  dst: number[],
  sport: number,
  dport: number,
  proto: number,
  flags: number,
): Buffer {
  const k = Buffer.alloc(14);
  Buffer.from(src).copy(k, 0);
  Buffer.from(dst).copy(k, 4);
  k.writeUInt16BE(dport, 8);
  k.writeUInt16BE(sport, 10);
  k[12] = proto;
  k[13] = flags;
  return k;
}

function value(words: [number, number, number, number], lifetime: number): Buffer {
  const v = Buffer.alloc(56);
  words.forEach((w, i) => {
    v.writeBigUInt64LE(BigInt(w), i * 8);
  });
  v.writeUInt32LE(lifetime, 32);
  return v;
}

describe('fillSample', () => {
  it('swaps the address names and maps ≤1.15 rx/tx by entry direction', () => {
    const s = new CiliumSample();
    const keys = Buffer.concat([
      key4([10, 0, 1, 5], [1, 2, 3, 4], 40000, 443, 6, 0),
      key4([9, 9, 9, 9], [10, 0, 1, 6], 50000, 80, 6, 1),
    ]);
    const values = Buffer.concat([value([8, 5000, 10, 2 ** 40 + 7], 123), value([2, 111, 3, 222], 456)]);
    const v = valueView(Buffer.from(values));
    expect(fillSample(s, keys, 0, v, 0, 4, 'v1.15')).toBe(true);
    expect([s.origSrc, s.origSport, s.origDst, s.origDport, s.replySrc, s.proto]).toEqual([
      '10.0.1.5',
      40000,
      '1.2.3.4',
      443,
      '1.2.3.4',
      6,
    ]);
    expect([s.origBytes, s.origPackets, s.replyBytes, s.replyPackets, s.localEnd, s.lifetime]).toEqual([
      2 ** 40 + 7,
      10,
      5000,
      8,
      'src',
      123,
    ]);
    const outKey = [s.key, s.key2];
    expect(fillSample(s, keys, 14, v, 14, 4, 'v1.15')).toBe(true);
    expect([s.origSrc, s.origDst, s.origBytes, s.replyBytes, s.localEnd]).toEqual([
      '9.9.9.9',
      '10.0.1.6',
      111,
      222,
      'dst',
    ]);
    expect([s.key, s.key2]).not.toEqual(outKey);
  });

  it('≥1.16: one counter in the original direction; unknown layout: no counters', () => {
    const s = new CiliumSample();
    const keys = key4([10, 0, 1, 5], [1, 2, 3, 4], 1, 2, 17, 1);
    const v = valueView(Buffer.from(value([0, 0, 4, 900], 1)));
    fillSample(s, keys, 0, v, 0, 4, 'v1.16');
    expect([s.origBytes, s.origPackets, s.replyBytes, s.replyPackets, s.hasCounters]).toEqual([
      900,
      4,
      0,
      0,
      true,
    ]);
    fillSample(s, keys, 0, v, 0, 4, undefined);
    expect([s.origBytes, s.hasCounters]).toEqual([0, false]);
  });

  it('skips SERVICE and RELATED entries; OUT and IN of one tuple are two identities', () => {
    const s = new CiliumSample();
    const v = valueView(Buffer.from(value([1, 1, 1, 1], 1)));
    for (const flags of [2, 3, 4, 5, 6]) {
      expect(fillSample(s, key4([1, 1, 1, 1], [2, 2, 2, 2], 1, 2, 6, flags), 0, v, 0, 4, 'v1.15')).toBe(
        false,
      );
    }
    fillSample(s, key4([1, 1, 1, 1], [2, 2, 2, 2], 1, 2, 6, 0), 0, v, 0, 4, 'v1.15');
    const out = `${s.key}/${s.key2}`;
    fillSample(s, key4([1, 1, 1, 1], [2, 2, 2, 2], 1, 2, 6, 1), 0, v, 0, 4, 'v1.15');
    expect(`${s.key}/${s.key2}`).not.toBe(out);
    expect(Number.isSafeInteger(s.key) && s.key >= 0).toBe(true);
  });

  it('gives 200k distinct tuples distinct identities, also in the low 32 bits of key plus key2', () => {
    const s = new CiliumSample();
    const v = valueView(Buffer.from(value([0, 0, 0, 0], 1)));
    const seen = new Set<string>();
    const n = 200_000;
    for (let i = 0; i < n; i++) {
      // Few addresses, many ports: the shape of a busy node.
      const k = key4([10, 0, 1, i % 200], [10, 9, (i >> 8) & 7, i & 255], 1024 + (i % 50000), 443, 6, i % 2);
      fillSample(s, k, 0, v, 0, 4, 'v1.15');
      seen.add(`${s.key % 2 ** 32}:${s.key2}`);
    }
    expect(seen.size).toBe(n);
  });

  it('formats IPv6 addresses in RFC 5952 form', () => {
    const s = new CiliumSample();
    const k = Buffer.alloc(38);
    Buffer.from('fd000000000000000000000000000005', 'hex').copy(k, 0);
    Buffer.from('20010db8000000010000000000000001', 'hex').copy(k, 16);
    k.writeUInt16BE(443, 32);
    k.writeUInt16BE(41000, 34);
    k[36] = 6;
    fillSample(s, k, 0, valueView(Buffer.from(value([0, 0, 0, 0], 1))), 0, 6, 'v1.15');
    expect([s.origSrc, s.origDst, s.origSport, s.origDport]).toEqual([
      'fd00::5',
      '2001:db8:0:1::1',
      41000,
      443,
    ]);
  });

  it('fuzz: random keys and values never throw and give sane numbers', () => {
    const s = new CiliumSample();
    for (let round = 0; round < 200; round++) {
      const family = round % 2 ? 4 : 6;
      const ks = family === 4 ? 14 : 38;
      const n = 64;
      const keys = randomBytes(n * ks);
      const values = Buffer.from(randomBytes(n * 56));
      const v = valueView(values);
      for (let i = 0; i < n; i++) {
        for (const layout of ['v1.15', 'v1.16', undefined] as const) {
          if (!fillSample(s, keys, i * ks, v, i * 14, family, layout)) continue;
          expect(s.origBytes).toBeGreaterThanOrEqual(0);
          expect(s.origSport).toBeLessThan(65536);
          expect(typeof s.origSrc).toBe('string');
          expect(s.replySrc).toBe(s.origDst);
        }
      }
      expect(['v1.15', 'v1.16', undefined]).toContain(layoutEvidence(keys, values, n, ks, family));
    }
  });
});

describe('layoutEvidence', () => {
  const keys = Buffer.concat([
    key4([1, 1, 1, 1], [2, 2, 2, 2], 1, 2, 6, 0),
    key4([1, 1, 1, 1], [3, 3, 3, 3], 1, 2, 6, 4),
  ]);
  it('rx counters of a non-service entry mean ≤1.15', () => {
    expect(
      layoutEvidence(keys, Buffer.concat([value([1, 60, 1, 60], 1), value([0, 0, 0, 0], 1)]), 2, 14, 4),
    ).toBe('v1.15');
  });
  it('counters only at 16/24 mean ≥1.16; a service backend id at 8 is not evidence', () => {
    expect(
      layoutEvidence(keys, Buffer.concat([value([0, 0, 3, 180], 1), value([0, 42, 0, 0], 1)]), 2, 14, 4),
    ).toBe('v1.16');
  });
  it('no counters anywhere: undecided', () => {
    expect(
      layoutEvidence(keys, Buffer.concat([value([0, 0, 0, 0], 1), value([0, 42, 0, 0], 1)]), 2, 14, 4),
    ).toBe(undefined);
  });
});
