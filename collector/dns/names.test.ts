import { describe, expect, it } from 'vitest';
import { NameCache } from './names.js';

describe('NameCache', () => {
  it('keeps a name for its TTL plus the grace', () => {
    let now = 1_000_000;
    const c = new NameCache({ maxNames: 10, graceMs: 2000 }, () => now);
    c.add('203.0.113.5', 'api.example.com', 0, '10.0.0.7');
    now += 2000;
    expect(c.nameOf('203.0.113.5', '10.0.0.7')).toBe('api.example.com');
    c.add('203.0.113.6', 'b.example.com', 30, '10.0.0.7');
    now += 1;
    expect(c.nameOf('203.0.113.5', '10.0.0.7')).toBe('');
    expect(c.stats().names).toBe(1);
    now += 30_000;
    expect(c.nameOf('203.0.113.6', '10.0.0.8')).toBe('b.example.com');
  });

  it('prefers the answer the connection’s own pod got, else the latest', () => {
    const c = new NameCache({ maxNames: 10, graceMs: 60_000 }, () => 0);
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
    const c = new NameCache({ maxNames: 2, graceMs: 60_000 }, () => 0);
    c.add('192.0.2.1', 'one.test', 60, '10.0.0.1');
    c.add('192.0.2.2', 'two.test', 60, '10.0.0.1');
    expect(c.nameOf('192.0.2.1', '10.0.0.1')).toBe('one.test'); // used: young again
    c.add('192.0.2.3', 'three.test', 60, '10.0.0.1');
    expect(c.nameOf('192.0.2.2', '10.0.0.1')).toBe('');
    expect(c.nameOf('192.0.2.1', '10.0.0.1')).toBe('one.test');
    expect(c.stats()).toEqual({ names: 2, evictions: 1 });
  });
});
