import * as dnsPacket from 'dns-packet';
import { describe, expect, it } from 'vitest';
import { type ParsedAnswers, parsePacket } from './parse.js';

/** An IPv4 + UDP packet from 10.0.0.53:53 to `client`:40000 carrying `payload`. */
function udp4(payload: Buffer, client = '10.0.0.7'): Buffer {
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(20 + 8 + payload.length, 2);
  ip[8] = 64;
  ip[9] = 17;
  Buffer.from([10, 0, 0, 53]).copy(ip, 12);
  Buffer.from(client.split('.').map(Number)).copy(ip, 16);
  const udp = Buffer.alloc(8);
  udp.writeUInt16BE(53, 0);
  udp.writeUInt16BE(40000, 2);
  udp.writeUInt16BE(8 + payload.length, 4);
  return Buffer.concat([ip, udp, payload]);
}

/** An IPv6 + TCP segment from port 53 to fd00::7 carrying `payload`. */
function tcp6(payload: Buffer): Buffer {
  const ip = Buffer.alloc(40);
  ip[0] = 0x60;
  ip.writeUInt16BE(20 + payload.length, 4);
  ip[6] = 6;
  ip[24] = 0xfd;
  ip[39] = 7;
  const tcp = Buffer.alloc(20);
  tcp.writeUInt16BE(53, 0);
  tcp.writeUInt16BE(40001, 2);
  tcp[12] = 5 << 4;
  return Buffer.concat([ip, tcp, payload]);
}

const answer = (answers: dnsPacket.Answer[], name = 'WWW.Example.com', type: 'A' | 'AAAA' = 'A') =>
  dnsPacket.encode({
    type: 'response',
    id: 7,
    flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE,
    questions: [{ type, name }],
    answers,
  });

const parse = (pkt: Buffer, ethertype = 0x0800) => parsePacket(pkt, 0, pkt.length, pkt.length, ethertype);

describe('parsePacket', () => {
  it('names the addresses of a CNAME chain by the name asked, with the shortest TTL on the way', () => {
    const msg = answer([
      { type: 'CNAME', name: 'www.example.com', ttl: 300, data: 'edge.cdn.net' },
      { type: 'CNAME', name: 'edge.cdn.net', ttl: 20, data: 'a1.cdn.net' },
      { type: 'A', name: 'a1.cdn.net', ttl: 60, data: '203.0.113.5' },
      { type: 'A', name: 'a1.cdn.net', ttl: 5, data: '203.0.113.6' },
      { type: 'A', name: 'unrelated.example', ttl: 60, data: '198.51.100.1' },
    ]);
    const r = parse(udp4(msg)) as ParsedAnswers;
    expect(r.client).toBe('10.0.0.7');
    expect(r.addresses).toEqual([
      { address: '203.0.113.5', name: 'www.example.com', ttl: 20 },
      { address: '203.0.113.6', name: 'www.example.com', ttl: 5 },
    ]);
  });

  it('reads AAAA answers in conntrack’s address form, over TCP with the length prefix', () => {
    const msg = answer(
      [{ type: 'AAAA', name: 'www.example.com', ttl: 0, data: 'fd00:0:0:a:0:0:0:1' }],
      'www.example.com',
      'AAAA',
    );
    const len = Buffer.alloc(2);
    len.writeUInt16BE(msg.length);
    const r = parse(tcp6(Buffer.concat([len, msg, len, msg])), 0x86dd) as ParsedAnswers;
    expect(r.client).toBe('fd00::7');
    expect(r.messages).toBe(2);
    expect(r.addresses[0]).toEqual({ address: 'fd00:0:0:a::1', name: 'www.example.com', ttl: 0 });
    // A message that goes on in the next segment is not reassembled: counted, not guessed.
    expect(parse(tcp6(Buffer.concat([len, msg.subarray(0, 10)])), 0x86dd)).toBe('tcp-partial');
  });

  it('gives nothing for errors, queries and empty answers', () => {
    const nx = dnsPacket.encode({
      type: 'response',
      id: 1,
      flags: 3,
      questions: [{ type: 'A', name: 'x.test' }],
    });
    expect((parse(udp4(nx)) as ParsedAnswers).addresses).toEqual([]);
    const q = dnsPacket.encode({ type: 'query', id: 1, questions: [{ type: 'A', name: 'x.test' }] });
    expect((parse(udp4(q)) as ParsedAnswers).addresses).toEqual([]);
  });

  it('says why for truncated, fragmented and malformed packets', () => {
    const pkt = udp4(answer([{ type: 'A', name: 'www.example.com', ttl: 1, data: '203.0.113.5' }]));
    expect(parsePacket(pkt, 0, pkt.length - 4, pkt.length, 0x0800)).toBe('truncated');
    const frag = Buffer.from(pkt);
    frag.writeUInt16BE(0x2000, 6); // more fragments
    expect(parse(frag)).toBe('fragment');
    // A response whose question name starts with a reserved label type (0x40).
    expect(parse(udp4(Buffer.from([0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 0x41, 0x41])))).toBe(
      'malformed',
    );
    // Not a response (QR clear): nothing to learn, nothing wrong.
    expect((parse(udp4(Buffer.from('not dns at all, not at all'))) as ParsedAnswers).addresses).toEqual([]);
    expect(parse(pkt, 0x86dd)).toBe('malformed');
  });

  it('refuses a compression pointer loop', () => {
    // Header (1 question), then a name that is a pointer to itself.
    const msg = Buffer.from([0, 1, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1]);
    expect(parse(udp4(msg))).toBe('malformed');
  });

  it('never throws on random or mutated input (fuzz)', () => {
    let seed = 12345;
    const rand = () => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed;
    };
    const base = udp4(
      answer([
        { type: 'CNAME', name: 'www.example.com', ttl: 300, data: 'edge.cdn.net' },
        { type: 'A', name: 'edge.cdn.net', ttl: 60, data: '203.0.113.5' },
      ]),
    );
    const outcomes = new Map<string, number>();
    for (let i = 0; i < 20_000; i++) {
      let pkt: Buffer;
      if (i % 4 === 0) {
        pkt = Buffer.alloc(rand() % 600);
        for (let k = 0; k < pkt.length; k++) pkt[k] = rand() & 0xff;
        if (pkt.length > 0) pkt[0] = (pkt[0]! & 0x0f) | 0x40;
      } else {
        pkt = Buffer.from(base);
        for (let m = rand() % 6; m >= 0; m--) pkt[28 + (rand() % (pkt.length - 28))] = rand() & 0xff;
        if (i % 3 === 0) pkt = pkt.subarray(0, rand() % pkt.length);
      }
      const r = parsePacket(pkt, 0, pkt.length, pkt.length + (i % 7 === 0 ? 1 : 0), 0x0800);
      const kind = typeof r === 'string' ? r : 'ok';
      outcomes.set(kind, (outcomes.get(kind) ?? 0) + 1);
      if (typeof r !== 'string') for (const a of r.addresses) expect(a.name).toMatch(/^[a-z0-9_.-]+$/);
    }
    // Every outcome is a value: decoded, or one of the counted reasons.
    expect(
      [...outcomes.keys()].every((k) =>
        ['ok', 'truncated', 'fragment', 'tcp-partial', 'malformed'].includes(k),
      ),
    ).toBe(true);
    expect(outcomes.get('malformed')).toBeGreaterThan(0);
    expect(outcomes.get('truncated')).toBeGreaterThan(0);
  });
});
