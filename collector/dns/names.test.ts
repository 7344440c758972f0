import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../test/fixtures/clock.js';
import { NameCache } from './names.js';

describe('NameCache', () => {
  it('keeps a name for its TTL plus the grace', () => {
    const clock = new ManualClock(1_000_000);
    const c = new NameCache({ maxNames: 10, graceMs: 2000 }, clock);
    c.add('203.0.113.5', 'api.example.com', 0, '10.0.0.7');
    clock.advance(2000);
    expect(c.nameOf('203.0.113.5', '10.0.0.7')).toBe('api.example.com');
    c.add('203.0.113.6', 'b.example.com', 30, '10.0.0.7');
    clock.advance(1);
    expect(c.nameOf('203.0.113.5', '10.0.0.7')).toBe('');
    expect(c.stats().names).toBe(1);
    clock.advance(30_000);
    expect(c.nameOf('203.0.113.6', '10.0.0.8')).toBe('b.example.com');
  });

  it('prefers the answer the connection’s own pod got, else the latest', () => {
    const c = new NameCache({ maxNames: 10, graceMs: 60_000 }, new ManualClock(0));
    c.add('203.0.113.5', 'shop.example.com', 60, '10.0.0.1');
    c.add('203.0.113.5', 'blog.example.com', 60, '10.0.0.2');
    expect(c.nameOf('203.0.113.5', '10.0.0.1')).toBe('shop.example.com');
    expect(c.nameOf('203.0.113.5', '10.0.0.2')).toBe('blog.example.com');
    expect(c.nameOf('203.0.113.5', '10.0.0.3')).toBe('blog.example.com');
    c.add('203.0.113.5', 'docs.example.com', 60, '10.0.0.1');
    expect(c.nameOf('203.0.113.5', '10.0.0.1')).toBe('docs.example.com');
    expect(c.nameOf('203.0.113.5', '10.0.0.9')).toBe('docs.example.com');
  });

  it('evicts the least recently used address beyond its size', () => {
    const c = new NameCache({ maxNames: 2, graceMs: 60_000 }, new ManualClock(0));
    c.add('192.0.2.1', 'one.test', 60, '10.0.0.1');
    c.add('192.0.2.2', 'two.test', 60, '10.0.0.1');
    expect(c.nameOf('192.0.2.1', '10.0.0.1')).toBe('one.test'); // used: young again
    c.add('192.0.2.3', 'three.test', 60, '10.0.0.1');
    expect(c.nameOf('192.0.2.2', '10.0.0.1')).toBe('');
    expect(c.nameOf('192.0.2.1', '10.0.0.1')).toBe('one.test');
    expect(c.stats()).toEqual({ names: 2, evictions: 1 });
  });
});

describe('NameCache store', () => {
  it('evicts in least-recently-used order: an answer or a lookup makes an address young', () => {
    const c = new NameCache({ maxNames: 3, graceMs: 60_000 }, new ManualClock(0));
    c.add('192.0.2.1', 'a.test', 60, '10.0.0.1');
    c.add('192.0.2.2', 'b.test', 60, '10.0.0.1');
    c.add('192.0.2.3', 'c.test', 60, '10.0.0.1');
    expect(c.nameOf('192.0.2.1', '10.0.0.1')).toBe('a.test'); // order now 2, 3, 1
    c.add('192.0.2.2', 'b.test', 60, '10.0.0.2'); // order now 3, 1, 2
    c.add('192.0.2.4', 'd.test', 60, '10.0.0.1'); // 3 goes
    c.add('192.0.2.5', 'e.test', 60, '10.0.0.1'); // 1 goes
    expect(c.stats()).toEqual({ names: 3, evictions: 2 });
    expect(['1', '2', '3', '4', '5'].map((i) => c.nameOf(`192.0.2.${i}`, '10.0.0.9'))).toEqual([
      '',
      'b.test',
      '',
      'd.test',
      'e.test',
    ]);
    // Evicted names left the slab's live bytes: b, d, e remain.
    expect(c.memory()).toMatchObject({ names: 3, nameBytes: 18 });
  });

  it('expires at TTL plus grace, whole seconds rounded up; sweep drops only what is stale everywhere', () => {
    const clock = new ManualClock(1_000_500);
    const c = new NameCache({ maxNames: 10, graceMs: 1500 }, clock);
    // ceil((1_000_500 + 1500) / 1000) + 5 = 1007 s.
    c.add('198.51.100.1', 'five.test', 5, '10.0.0.1');
    c.add('198.51.100.2', 'old.test', 0, '10.0.0.1');
    c.add('198.51.100.2', 'new.test', 0, '10.0.0.2'); // newest, and stale first below
    clock.t = 1_005_000;
    c.add('198.51.100.2', 'late.test', 3, '10.0.0.3'); // 1010 s
    clock.t = 1_007_000;
    expect(c.nameOf('198.51.100.1', '10.0.0.1')).toBe('five.test');
    // 10.0.0.2's own answer is stale (1003 s): another pod's fresh one names the address.
    expect(c.nameOf('198.51.100.2', '10.0.0.2')).toBe('late.test');
    clock.t = 1_007_001;
    c.sweep();
    expect(c.stats().names).toBe(1);
    expect(c.nameOf('198.51.100.1', '10.0.0.1')).toBe('');
    expect(c.nameOf('198.51.100.2', '10.0.0.1')).toBe('late.test');
    clock.t = 1_010_001;
    expect(c.nameOf('198.51.100.2', '10.0.0.3')).toBe('');
    expect(c.stats().names).toBe(0);
    expect(c.memory()).toMatchObject({ names: 0, nameBytes: 0 });
  });

  it('a name re-pointed names both addresses; an address re-pointed by its pod forgets the old name', () => {
    const c = new NameCache({ maxNames: 10, graceMs: 60_000 }, new ManualClock(0));
    c.add('203.0.113.1', 'api.test', 30, '10.0.0.1');
    c.add('203.0.113.2', 'api.test', 30, '10.0.0.1');
    expect(c.nameOf('203.0.113.1', '10.0.0.1')).toBe('api.test');
    expect(c.nameOf('203.0.113.2', '10.0.0.1')).toBe('api.test');
    // One name, two addresses: stored once.
    expect(c.memory()).toMatchObject({ names: 1, nameBytes: 8 });
    c.add('203.0.113.1', 'other.test', 30, '10.0.0.1');
    expect(c.nameOf('203.0.113.1', '10.0.0.2')).toBe('other.test');
    expect(c.nameOf('203.0.113.1', '10.0.0.1')).toBe('other.test');
    expect(c.memory()).toMatchObject({ names: 2, nameBytes: 18 });
    c.add('203.0.113.2', 'other.test', 30, '10.0.0.1');
    expect(c.memory()).toMatchObject({ names: 1, nameBytes: 10 });
  });

  it('keeps the latest answers of 4 pods per address', () => {
    const c = new NameCache({ maxNames: 10, graceMs: 60_000 }, new ManualClock(0));
    for (let i = 1; i <= 5; i++) c.add('203.0.113.9', `n${i}.test`, 30, `10.0.0.${i}`);
    expect(c.nameOf('203.0.113.9', '10.0.0.1')).toBe('n5.test'); // dropped: the latest instead
    for (let i = 2; i <= 5; i++) expect(c.nameOf('203.0.113.9', `10.0.0.${i}`)).toBe(`n${i}.test`);
    c.add('203.0.113.9', 'n3-again.test', 30, '10.0.0.3');
    expect(c.nameOf('203.0.113.9', '10.0.0.3')).toBe('n3-again.test');
    expect(c.nameOf('203.0.113.9', '10.0.0.2')).toBe('n2.test');
    expect(c.memory().names).toBe(4);
  });

  it('reuses and compacts the slab under churn: memory follows what is held, not what passed', () => {
    const clock = new ManualClock(0);
    const c = new NameCache({ maxNames: 500, graceMs: 0 }, clock);
    const name = (i: number) => `churn-${i}.${'x'.repeat(i % 40)}.example.com`;
    let peak = 0;
    for (let i = 0; i < 50_000; i++) {
      c.add(`10.${(i >> 16) & 0xff}.${(i >> 8) & 0xff}.${i & 0xff}`, name(i), 60, '10.1.0.1');
      if (i % 10_000 === 0) peak = Math.max(peak, c.memory().bytes);
    }
    const m = c.memory();
    expect(c.stats()).toEqual({ names: 500, evictions: 49_500 });
    expect(m.names).toBe(500);
    // The live bytes are exactly the 500 names held; the slab, holes and room included, stays
    // within twice that (49,500 names went through it).
    let held = 0;
    for (let i = 49_500; i < 50_000; i++) held += name(i).length;
    expect(m.nameBytes).toBe(held);
    expect(m.slabBytes).toBeLessThan(2 * held);
    expect(peak).toBeLessThan(120_000);
    for (let i = 49_500; i < 50_000; i++) {
      expect(c.nameOf(`10.${(i >> 16) & 0xff}.${(i >> 8) & 0xff}.${i & 0xff}`, '10.1.0.1')).toBe(name(i));
    }
    // All stale: sweep empties the store and gives the slab back.
    const big = new NameCache({ maxNames: 100_000, graceMs: 0 }, clock);
    for (let i = 0; i < 50_000; i++) big.add(`10.9.${i >> 8}.${i & 0xff}`, name(i), 1, '10.1.0.1');
    expect(big.memory().slabBytes).toBeGreaterThan(1_000_000);
    clock.t = 2000;
    big.sweep();
    expect(big.stats().names).toBe(0);
    expect(big.memory()).toMatchObject({ names: 0, nameBytes: 0, slabBytes: 16_384 });
    big.add('10.9.0.1', name(7), 1, '10.1.0.1');
    expect(big.nameOf('10.9.0.1', '10.1.0.1')).toBe(name(7));
  });

  it('holds names of 253 characters and any text the parser makes of other bytes', () => {
    const c = new NameCache({ maxNames: 100, graceMs: 60_000 }, new ManualClock(0));
    const longest = `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(61)}`;
    expect(longest).toHaveLength(253);
    // collector/dns/message.ts turns each octet into one character (latin1): a label in UTF-8
    // (café), bytes above 0x7f, an escaped dot; such names are kept out of flows today
    // (shared/dns.ts isDnsName), but whatever text comes in comes out.
    const latin1 = (b: number[]) => String.fromCharCode(...b);
    const odd = [
      `${latin1([0x63, 0x61, 0x66, 0xc3, 0xa9])}.example`,
      `${latin1([0xff, 0x80, 0x00, 0x7f])}.example`,
      'a\\.b.example',
      '日本語.example',
      `${'\u00e9'.repeat(253)}`,
    ];
    const names = [longest, ...odd];
    for (const [i, n] of names.entries()) c.add(`2001:db8::${i + 1}`, n, 60, 'fd00::1');
    expect(names.map((_, i) => c.nameOf(`2001:db8::${i + 1}`, 'fd00::1'))).toEqual(names);
    // Through a relocation of the slab (many names after them) they still read back.
    const slab = c.memory().slabBytes;
    for (let i = 0; i < 90; i++) c.add(`192.0.2.${i}`, `${'z'.repeat(200)}${i}`, 60, '10.0.0.1');
    expect(c.memory().slabBytes).toBeGreaterThan(slab);
    expect(names.map((_, i) => c.nameOf(`2001:0db8:0:0::${(i + 1).toString(16)}`, 'fd00::1'))).toEqual(names);
  });

  it('keys addresses by value: any IPv6 spelling, IPv4 as its mapped form; no address, no name', () => {
    const c = new NameCache({ maxNames: 10, graceMs: 60_000 }, new ManualClock(0));
    c.add('2001:DB8:0:0:0:0:0:A', 'v6.test', 60, '10.0.0.1');
    c.add('203.0.113.5', 'v4.test', 60, '10.0.0.1');
    c.add('not-an-address', 'x.test', 60, '10.0.0.1');
    expect(c.nameOf('2001:db8::a', '10.0.0.1')).toBe('v6.test');
    expect(c.nameOf('::ffff:203.0.113.5', '10.0.0.1')).toBe('v4.test');
    expect(c.nameOf('203.0.113.50', '10.0.0.1')).toBe('');
    expect(c.nameOf('not-an-address', '10.0.0.1')).toBe('');
    expect(c.stats().names).toBe(2);
  });
});

/** The cache's behaviour in plain JS (a Map keeps insertion order: the oldest first). */
class Model {
  readonly map = new Map<string, { name: string; client: string; until: number }[]>();
  evicted = 0;
  constructor(
    private readonly max: number,
    private readonly graceMs: number,
    private readonly now: () => number,
  ) {}
  add(ip: string, name: string, ttl: number, client: string): void {
    const until = Math.ceil((this.now() + this.graceMs) / 1000) + ttl;
    const old = (this.map.get(ip) ?? []).filter((h) => h.client !== client);
    this.map.delete(ip);
    this.map.set(ip, [{ name, client, until }, ...old].slice(0, 4));
    for (const k of this.map.keys()) {
      if (this.map.size <= this.max) break;
      this.map.delete(k);
      this.evicted++;
    }
  }
  nameOf(ip: string, client: string): string {
    const fresh = (this.map.get(ip) ?? []).filter((h) => h.until >= this.now() / 1000);
    if (fresh.length === 0) {
      this.map.delete(ip);
      return '';
    }
    const list = this.map.get(ip)!;
    this.map.delete(ip);
    this.map.set(ip, list);
    return (fresh.find((h) => h.client === client) ?? fresh[0]!).name;
  }
  sweep(): void {
    for (const [ip, list] of this.map)
      if (list.every((h) => h.until < this.now() / 1000)) this.map.delete(ip);
  }
}

describe('NameCache against a plain model', () => {
  it('answers, evicts and expires as the model does over random operations', () => {
    let seed = 7;
    const rnd = (n: number) => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return (seed >>> 8) % n;
    };
    for (let trial = 0; trial < 6; trial++) {
      const clock = new ManualClock(1_000_000);
      const max = 1 + rnd(40);
      const grace = rnd(3) * 1000;
      const model = new Model(max, grace, () => clock.now());
      const c = new NameCache({ maxNames: max, graceMs: grace }, clock);
      for (let step = 0; step < 3000; step++) {
        const r = rnd(100);
        const ip = rnd(2) ? `192.0.2.${rnd(12)}` : `2001:db8::${rnd(12).toString(16)}`;
        const client = `10.0.0.${rnd(6)}`;
        if (r < 50) {
          const name = `n${rnd(50)}.test`;
          const ttl = rnd(4);
          model.add(ip, name, ttl, client);
          c.add(ip, name, ttl, client);
        } else if (r < 95) {
          expect(c.nameOf(ip, client)).toBe(model.nameOf(ip, client));
        } else if (r < 98) {
          clock.advance(rnd(1200));
        } else {
          model.sweep();
          c.sweep();
        }
        expect(c.stats()).toEqual({ names: model.map.size, evictions: model.evicted });
      }
    }
  });
});
