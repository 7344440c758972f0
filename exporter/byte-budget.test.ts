import { describe, expect, it } from 'vitest';
import { ByteBudget } from './byte-budget.js';

const tick = () => new Promise((r) => setImmediate(r));

describe('ByteBudget', () => {
  it('hands out bytes up to the total, then first come first served', async () => {
    const b = new ByteBudget(100);
    const r1 = await b.reserve(60);
    const order: string[] = [];
    const noted = (n: string) => (r: () => void) => {
      order.push(n);
      return r;
    };
    const p2 = b.reserve(50).then(noted('50'));
    const p3 = b.reserve(10).then(noted('10'));
    await tick();
    // 10 would fit now, but 50 asked first: nobody overtakes.
    expect(order).toEqual([]);
    expect(b.inUse).toBe(60);
    r1();
    const [r2, r3] = await Promise.all([p2, p3]);
    expect(order).toEqual(['50', '10']);
    expect(b.inUse).toBe(60);
    r2();
    r2();
    expect(b.inUse).toBe(10);
    r3();
    expect(b.inUse).toBe(0);
  });

  it('two releases in one turn never hand out the same bytes twice', async () => {
    const b = new ByteBudget(100);
    const a = await b.reserve(50);
    const c = await b.reserve(50);
    const waits = [b.reserve(60), b.reserve(60)];
    a();
    c();
    const first = await waits[0];
    await tick();
    expect(b.inUse).toBe(60);
    first();
    (await waits[1])();
    expect(b.inUse).toBe(0);
  });

  it('an aborted wait gives up and lets the next one in; more than the total is refused', async () => {
    const b = new ByteBudget(100);
    const held = await b.reserve(90);
    const ac = new AbortController();
    const big = b.reserve(50, ac.signal);
    const small = b.reserve(10);
    ac.abort(new Error('timed out'));
    await expect(big).rejects.toThrow('timed out');
    (await small)();
    held();
    expect(b.inUse).toBe(0);
    await expect(b.reserve(101)).rejects.toThrow(RangeError);
  });
});
