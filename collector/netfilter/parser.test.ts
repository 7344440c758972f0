import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  AF_INET,
  AF_INET6,
  buildMessage,
  type EntrySpec,
  entryAttrs,
  IPCTNL_MSG_CT_DELETE,
  IPCTNL_MSG_CT_NEW,
  NLM_F_MULTI,
} from './ctnetlink.js';
import { CtSample, formatV6, parseCtMessage, walkDatagram } from './parser.js';

const msg = (e: EntrySpec, family = e.orig.src.includes(':') ? AF_INET6 : AF_INET) =>
  buildMessage(IPCTNL_MSG_CT_NEW, NLM_F_MULTI, 1, family, entryAttrs(e));

const tcp4: EntrySpec = {
  orig: { src: '10.1.0.5', dst: '10.96.0.10', proto: 6, sport: 40000, dport: 443 },
  reply: { src: '10.1.2.7', dst: '10.1.0.5', proto: 6, sport: 8443, dport: 40000 },
  timeout: 120,
  status: 0x18e,
  mark: 7,
  zone: 3,
  id: 0xdeadbeef,
  counters: { origPackets: 10, origBytes: 2 ** 40 + 5, replyPackets: 8, replyBytes: 123456 },
};

const udp6: EntrySpec = {
  orig: { src: 'fd00:1::5', dst: '2001:db8::1:0:0:1', proto: 17, sport: 5353, dport: 53 },
  reply: { src: '2001:db8::1:0:0:1', dst: 'fd00:1::5', proto: 17, sport: 53, dport: 5353 },
  timeout: 30,
  id: 42,
};

function parse(b: Buffer): CtSample | undefined {
  const s = new CtSample();
  return parseCtMessage(b, 0, b.length, s) ? s : undefined;
}

describe('parseCtMessage', () => {
  it('decodes an IPv4 TCP entry with NAT, counters, zone, mark, status, id', () => {
    const s = parse(msg(tcp4))!;
    expect(s).toBeDefined();
    expect({
      family: s.family,
      proto: s.proto,
      origSrc: s.origSrc,
      origDst: s.origDst,
      origSport: s.origSport,
      origDport: s.origDport,
      replySrc: s.replySrc,
      replyDst: s.replyDst,
      replySport: s.replySport,
      origBytes: s.origBytes,
      origPackets: s.origPackets,
      replyBytes: s.replyBytes,
      replyPackets: s.replyPackets,
      hasCounters: s.hasCounters,
      zone: s.zone,
      mark: s.mark,
      status: s.status,
      timeout: s.timeout,
      id: s.id,
    }).toEqual({
      family: 4,
      proto: 6,
      origSrc: '10.1.0.5',
      origDst: '10.96.0.10',
      origSport: 40000,
      origDport: 443,
      replySrc: '10.1.2.7',
      replyDst: '10.1.0.5',
      replySport: 8443,
      origBytes: 2 ** 40 + 5,
      origPackets: 10,
      replyBytes: 123456,
      replyPackets: 8,
      hasCounters: true,
      zone: 3,
      mark: 7,
      status: 0x18e,
      timeout: 120,
      id: 0xdeadbeef,
    });
  });

  it('decodes IPv6 in canonical form and marks entries without counters', () => {
    const s = parse(msg(udp6))!;
    expect([s.family, s.proto, s.origSrc, s.origDst, s.replySrc, s.hasCounters, s.origBytes]).toEqual([
      6,
      17,
      'fd00:1::5',
      '2001:db8::1:0:0:1',
      '2001:db8::1:0:0:1',
      false,
      0,
    ]);
  });

  it('uses ICMP id and type/code in place of ports', () => {
    const s = parse(
      msg({
        orig: { src: '10.0.0.1', dst: '10.0.0.2', proto: 1, icmpId: 77, icmpType: 8, icmpCode: 0 },
        reply: { src: '10.0.0.2', dst: '10.0.0.1', proto: 1, icmpId: 77, icmpType: 0, icmpCode: 0 },
        timeout: 30,
      }),
    )!;
    expect([s.proto, s.icmpId, s.icmpType, s.origSport, s.origDport]).toEqual([1, 77, 8, 77, 8 << 8]);
  });

  it('gives the same identity keys to the same connection, different ones to a new id', () => {
    const a = parse(msg(tcp4))!;
    const [k1, k2] = [a.key, a.key2];
    const b = parse(
      msg({ ...tcp4, counters: { origPackets: 99, origBytes: 9, replyPackets: 1, replyBytes: 1 } }),
    )!;
    expect([b.key, b.key2]).toEqual([k1, k2]);
    const c = parse(msg({ ...tcp4, id: 1 }))!;
    expect(c.key).not.toBe(k1);
    expect(c.key2).not.toBe(k2);
    expect(k1 >>> 0).toBe(k1);
  });

  it('refuses messages without both tuples or with mismatched address sizes', () => {
    const noReply = buildMessage(IPCTNL_MSG_CT_NEW, 0, 1, AF_INET, entryAttrs(tcp4).subarray(0, 44));
    expect(parse(noReply)).toBeUndefined();
    expect(parse(msg(tcp4, AF_INET6))).toBeUndefined(); // v4 addresses in a v6 message
  });

  it('formats IPv6 like RFC 5952', () => {
    const cases: [string, string][] = [
      ['00000000000000000000000000000001', '::1'],
      ['00000000000000000000000000000000', '::'],
      ['20010db8000000000001000000000001', '2001:db8::1:0:0:1'],
      ['20010db8000100000000000000000000', '2001:db8:1::'],
      ['fe800000000000000000000000000001', 'fe80::1'],
      ['20010db8000000010001000100010001', '2001:db8:0:1:1:1:1:1'],
    ];
    for (const [hex, text] of cases) expect(formatV6(Buffer.from(hex, 'hex'), 0)).toBe(text);
  });
});

describe('parser fuzzing', () => {
  const samples = [msg(tcp4), msg(udp6), msg({ ...tcp4, zone: 0, mark: undefined })];

  function survive(b: Buffer): boolean {
    const s = new CtSample();
    let end = b.length;
    // Also claim lengths beyond the buffer: the parser must check, not trust.
    if (Math.random() < 0.2) end += 16;
    const ok = parseCtMessage(b, 0, end, s);
    if (ok) {
      // A message accepted as valid has usable addresses within the buffer.
      expect(typeof s.origSrc).toBe('string');
      expect(typeof s.replySrc).toBe('string');
      expect(typeof s.origDst).toBe('string');
    }
    return ok;
  }

  it('never throws on random, truncated or bit-flipped messages', () => {
    let rejected = 0;
    let total = 0;
    for (let i = 0; i < 20_000; i++) {
      const base = samples[i % samples.length]!;
      let b: Buffer;
      const kind = i % 4;
      if (kind === 0) b = randomBytes(Math.floor(Math.random() * 300));
      else if (kind === 1) b = base.subarray(0, Math.floor(Math.random() * base.length));
      else {
        b = Buffer.from(base);
        const flips = 1 + Math.floor(Math.random() * (kind === 2 ? 2 : 12));
        for (let f = 0; f < flips; f++) {
          const pos = Math.floor(Math.random() * b.length);
          b[pos]! ^= 1 << Math.floor(Math.random() * 8);
        }
      }
      total++;
      if (!survive(b)) rejected++;
    }
    // Random bytes and truncations are nearly always rejected: counted as parse errors by callers.
    expect(rejected).toBeGreaterThan(total / 4);
  });

  it('every strict prefix of a valid message is rejected', () => {
    for (const base of samples) {
      for (let n = 0; n < base.length; n++) {
        const cut = Buffer.from(base.subarray(0, n));
        expect(parseCtMessage(cut, 0, cut.length, new CtSample())).toBe(false);
      }
    }
  });
});

describe('walkDatagram', () => {
  const datagram = () =>
    Buffer.concat([
      buildMessage(IPCTNL_MSG_CT_DELETE, 0, 0, AF_INET, entryAttrs(tcp4)),
      buildMessage(IPCTNL_MSG_CT_NEW, 0, 0, AF_INET, entryAttrs(tcp4)), // another type: skipped
      buildMessage(IPCTNL_MSG_CT_DELETE, 0, 0, AF_INET6, entryAttrs(udp6)),
    ]);

  it('visits every message of the type and counts nothing wrong in a clean datagram', () => {
    const seen: string[] = [];
    expect(walkDatagram(datagram(), IPCTNL_MSG_CT_DELETE, new CtSample(), (s) => seen.push(s.origSrc))).toBe(
      0,
    );
    expect(seen).toEqual(['10.1.0.5', 'fd00:1::5']);
  });

  it('counts a broken message and still visits the good ones around it', () => {
    const b = datagram();
    const first = b.readUInt32LE(0);
    b.writeUInt16LE(3, 20); // first attribute of the first message: a length below 4
    const seen: string[] = [];
    expect(walkDatagram(b, IPCTNL_MSG_CT_DELETE, new CtSample(), (s) => seen.push(s.origSrc))).toBe(1);
    expect(seen).toEqual(['fd00:1::5']);
    expect(first).toBeGreaterThan(0);
  });

  it('never throws on truncated, bit-flipped or random datagrams', () => {
    let errors = 0;
    let visits = 0;
    const s = new CtSample();
    for (let i = 0; i < 5000; i++) {
      const b = i % 5 === 0 ? randomBytes(Math.floor(Math.random() * 600)) : datagram();
      if (i % 5 !== 0) {
        for (let f = 0; f < 1 + (i % 7); f++) b[Math.floor(Math.random() * b.length)]! ^= 1 << (i % 8);
      }
      const cut = i % 3 === 0 ? b.subarray(0, Math.floor(Math.random() * b.length)) : b;
      errors += walkDatagram(cut, IPCTNL_MSG_CT_DELETE, s, (x) => {
        visits++;
        expect(x.origSrc.length).toBeGreaterThan(0);
      });
    }
    expect(errors).toBeGreaterThan(0);
    expect(visits).toBeGreaterThan(0);
  });
});
