import { isIPv4 } from 'node:net';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { seeded } from '../test/helpers/random.js';
import type { PullResponse } from './flow.js';
import { dottedQuad, parseV4 } from './ip.js';
import { decodePullResponse, encodePullResponse, isDottedQuad, PullError } from './pull-contract.js';

const valid = (): PullResponse => ({
  version: 1,
  bootId: 'b00t',
  node: 'node-a',
  source: 'netfilter',
  batches: [
    {
      seq: 1,
      from: 1000,
      to: 6000,
      flows: [
        { src: '10.0.0.1', dst: '8.8.8.8', proto: 6, txBytes: 10, rxBytes: 20, txPackets: 1, rxPackets: 2 },
        { src: 'fd00::1', dst: '2001:db8::1', proto: 58, txBytes: 0, rxBytes: 0, txPackets: 0, rxPackets: 0 },
      ],
    },
    {
      seq: 2,
      from: 6000,
      to: 11000,
      flows: [
        {
          src: '10.0.0.1',
          dst: '10.0.0.2',
          proto: 17,
          txBytes: 2 ** 40,
          rxBytes: 1,
          txPackets: 1,
          rxPackets: 1,
        },
      ],
    },
  ],
});

// biome-ignore lint/suspicious/noExplicitAny: the tests build deliberately malformed responses
type Loose = Record<string, any>;

/** Applies `mutate` to a fresh valid response, encodes it and returns the decode failure's reason. */
function reasonOf(mutate: (r: Loose) => void): string {
  const r = valid() as unknown as Loose;
  mutate(r);
  try {
    decodePullResponse(new Packr({ useRecords: false }).pack(r));
  } catch (err) {
    expect(err).toBeInstanceOf(PullError);
    return (err as PullError).reason;
  }
  return 'accepted';
}

describe('decodePullResponse', () => {
  it('round-trips a valid response', () => {
    expect(decodePullResponse(encodePullResponse(valid()))).toEqual(valid());
  });

  it('round-trips pull boundaries and the acknowledged seq', () => {
    const r: PullResponse = { ...valid(), boundaries: [1, 4, 9], acked: 0 };
    expect(decodePullResponse(encodePullResponse(r))).toEqual(r);
  });

  it('hands on the addresses of every flow as parsed (IPv4 numbers, -1 for IPv6), out of sight of equality and encoding', () => {
    const r = decodePullResponse(encodePullResponse(valid()));
    expect([...(r.batches[0].addresses ?? [])]).toEqual([0x0a000001, 0x08080808, -1, -1]);
    expect([...(r.batches[1].addresses ?? [])]).toEqual([0x0a000001, 0x0a000002]);
    expect(Object.keys(r.batches[0])).toEqual(['seq', 'from', 'to', 'flows']);
    expect(decodePullResponse(encodePullResponse(r))).toEqual(valid());
  });

  it('reads records-extension encodings too', () => {
    const packed = new Packr({ useRecords: true }).pack(valid());
    expect(decodePullResponse(packed)).toEqual(valid());
  });

  it('refuses another wire version', () => {
    expect(reasonOf((r) => (r.version = 2))).toBe('version');
    expect(reasonOf((r) => delete r.version)).toBe('version');
  });

  const bad: [string, (r: Loose) => void][] = [
    ['bootId missing', (r) => delete r.bootId],
    ['bootId empty', (r) => (r.bootId = '')],
    ['bootId a number', (r) => (r.bootId = 7)],
    ['node missing', (r) => delete r.node],
    ['source unknown', (r) => (r.source = 'ebpf')],
    ['batches not an array', (r) => (r.batches = { 0: 1 })],
    ['batch null', (r) => (r.batches[0] = null)],
    ['seq negative', (r) => (r.batches[0].seq = -1)],
    ['seq fractional', (r) => (r.batches[0].seq = 1.5)],
    ['seq a string', (r) => (r.batches[0].seq = '1')],
    ['seq not increasing', (r) => (r.batches[1].seq = 1)],
    ['seq decreasing', (r) => (r.batches[1].seq = 0)],
    ['to before from', (r) => (r.batches[0].to = 10)],
    ['from NaN', (r) => (r.batches[0].from = Number.NaN)],
    ['flows missing', (r) => delete r.batches[0].flows],
    ['flow a string', (r) => (r.batches[0].flows[0] = 'x')],
    ['src not an IP', (r) => (r.batches[0].flows[0].src = '10.0.0.300')],
    ['dst not an IP', (r) => (r.batches[0].flows[0].dst = 'example.com')],
    ['dst missing', (r) => delete r.batches[0].flows[0].dst],
    ['proto 256', (r) => (r.batches[0].flows[0].proto = 256)],
    ['proto a string', (r) => (r.batches[0].flows[0].proto = 'tcp')],
    ['negative bytes', (r) => (r.batches[0].flows[0].txBytes = -5)],
    ['infinite bytes', (r) => (r.batches[0].flows[0].rxBytes = Number.POSITIVE_INFINITY)],
    ['NaN packets', (r) => (r.batches[1].flows[0].rxPackets = Number.NaN)],
    ['packets a string', (r) => (r.batches[1].flows[0].txPackets = '3')],
    ['packets missing', (r) => delete r.batches[1].flows[0].txPackets],
    ['boundaries a number', (r) => (r.boundaries = 3)],
    ['boundary zero', (r) => (r.boundaries = [0, 2])],
    ['boundary a string', (r) => (r.boundaries = ['2'])],
    ['boundary fractional', (r) => (r.boundaries = [1.5])],
    ['boundaries descending', (r) => (r.boundaries = [4, 2])],
    ['boundaries repeated', (r) => (r.boundaries = [2, 2])],
    ['acked negative', (r) => (r.acked = -1)],
    ['acked a string', (r) => (r.acked = '0')],
    ['dstName empty', (r) => (r.batches[0].flows[0].dstName = '')],
    ['dstName a number', (r) => (r.batches[0].flows[0].dstName = 7)],
    ['dstName with a space', (r) => (r.batches[0].flows[0].dstName = 'a b.example')],
    ['dstName too long', (r) => (r.batches[0].flows[0].dstName = `${'a'.repeat(60)}.`.repeat(5))],
    ['dstName label over 63', (r) => (r.batches[0].flows[0].dstName = `${'a'.repeat(64)}.example`)],
  ];
  it('takes a flow with a DNS name', () => {
    expect(reasonOf((r) => (r.batches[0].flows[0].dstName = 'api.example.com'))).toBe('accepted');
  });
  it.each(bad)('refuses: %s', (_name, mutate) => {
    expect(reasonOf(mutate)).toBe('invalid');
  });

  it('refuses bodies that are not msgpack or not a map', () => {
    for (const body of [Buffer.alloc(0), Buffer.from('{"version":1}'), new Packr().pack([1, 2, 3])]) {
      expect(() => decodePullResponse(body)).toThrow(PullError);
    }
  });

  it('refuses every truncation of a valid body', () => {
    const full = encodePullResponse(valid());
    for (let n = 0; n < full.length; n++) {
      let err: unknown;
      try {
        decodePullResponse(full.subarray(0, n));
      } catch (e) {
        err = e;
      }
      expect(err, `prefix of ${n}/${full.length} bytes`).toBeInstanceOf(PullError);
    }
  });
});

/** Decoding either yields a response that satisfies every invariant, or a PullError: nothing else. */
function decodeOrPullError(body: Uint8Array): 'ok' | 'error' {
  try {
    const r = decodePullResponse(body);
    expect(r.version).toBe(1);
    let prev = -1;
    for (const b of r.batches) {
      expect(b.seq).toBeGreaterThan(prev);
      prev = b.seq;
      for (const f of b.flows) {
        for (const v of [f.txBytes, f.rxBytes, f.txPackets, f.rxPackets]) {
          expect(Number.isFinite(v) && v >= 0).toBe(true);
        }
      }
    }
    return 'ok';
  } catch (err) {
    if (!(err instanceof PullError)) throw err;
    return 'error';
  }
}

describe('decoder fuzz', () => {
  it('random bytes never crash the decoder', () => {
    const rand = seeded(1);
    for (let i = 0; i < 3000; i++) {
      const body = Buffer.alloc(Math.floor(rand() * 200));
      for (let j = 0; j < body.length; j++) body[j] = Math.floor(rand() * 256);
      // A msgpack map header first makes the decoder go deeper than the first byte.
      if (i % 2 === 0 && body.length > 0) body[0] = 0x80 | (body[0] & 0x0f);
      expect(decodeOrPullError(body)).toBeDefined();
    }
  });

  it('mutated valid bodies are refused or sound, and never poison later decodes', () => {
    const rand = seeded(2);
    const encodings = [
      new Packr({ useRecords: false }).pack(valid()),
      new Packr({ useRecords: true }).pack(valid()),
    ];
    const seen = { ok: 0, error: 0 };
    for (let i = 0; i < 4000; i++) {
      const body = Buffer.from(encodings[i % 2]);
      const flips = 1 + Math.floor(rand() * 4);
      for (let k = 0; k < flips; k++) body[Math.floor(rand() * body.length)] = Math.floor(rand() * 256);
      seen[decodeOrPullError(body)]++;
      if (i % 100 === 0) expect(decodePullResponse(encodings[0])).toEqual(valid());
    }
    expect(seen.error).toBeGreaterThan(0);
    expect(decodePullResponse(encodings[1])).toEqual(valid());
  });
});

describe('isDottedQuad', () => {
  it('agrees with net.isIPv4 on edge cases and on random strings of digits and dots', () => {
    const cases = [
      '0.0.0.0',
      '255.255.255.255',
      '256.1.1.1',
      '1.2.3',
      '1.2.3.4.',
      '.1.2.3.4',
      '01.2.3.4',
      '1.2.3.04',
      '1.2.3.4a',
      '1..2.3',
      '1.2.3.4\n',
      ' 1.2.3.4',
      '1.2.3.-4',
      '1000.2.3.4',
      '1.2.3.255',
      '1.2.3.260',
      '10.100.5.12',
      '::1',
      '',
      '１.2.3.4',
    ];
    for (const c of cases) expect([c, isDottedQuad(c)]).toEqual([c, isIPv4(c)]);
    const rand = seeded(7);
    const alphabet = '0123456789..........12255x:';
    for (let n = 0; n < 200_000; n++) {
      let v = '';
      const len = Math.floor(rand() * 17);
      for (let i = 0; i < len; i++) v += alphabet[Math.floor(rand() * alphabet.length)];
      if (isDottedQuad(v) !== isIPv4(v)) expect([v, isDottedQuad(v)]).toEqual([v, isIPv4(v)]);
    }
    // Near-addresses: four octets of 0–299, some with a leading zero, some parts missing or extra.
    let valid = 0;
    for (let n = 0; n < 100_000; n++) {
      const parts = 3 + Math.floor(rand() * 3);
      const octets = Array.from({ length: parts }, () => {
        const o = String(Math.floor(rand() * 300));
        return rand() < 0.05 ? `0${o}` : o;
      });
      const v = octets.join('.');
      if (isIPv4(v)) valid++;
      if (isDottedQuad(v) !== isIPv4(v)) expect([v, isDottedQuad(v)]).toEqual([v, isIPv4(v)]);
    }
    expect(valid).toBeGreaterThan(10_000);
  });

  it('parses what it accepts to the number of the address', () => {
    const rand = seeded(11);
    for (let n = 0; n < 20_000; n++) {
      const v = Array.from({ length: 4 }, () => Math.floor(rand() * 256)).join('.');
      expect(dottedQuad(v)).toBe(parseV4(v, 0, v.length));
    }
    expect([dottedQuad('255.255.255.255'), dottedQuad('0.0.0.0'), dottedQuad('01.2.3.4')]).toEqual([
      2 ** 32 - 1,
      0,
      -1,
    ]);
  });
});
