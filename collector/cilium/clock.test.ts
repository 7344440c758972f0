import { describe, expect, it } from 'vitest';
import { configHz, expired, jiffiesClock, ktimeClock, plausibleShare } from './clock.js';

describe('lifetime clocks', () => {
  it('ktime: whole CLOCK_MONOTONIC seconds', () => {
    expect(ktimeClock(() => 1234.9).now()).toBe(1234);
  });

  it('jiffies: (jiffies64 >> 8) advanced by HZ from a sample, or from the boot value', () => {
    let t = 100;
    const c = jiffiesClock(250, () => t, { jiffies: 4_295_000_000, mono: 100 });
    expect(c.now()).toBe(Math.floor(4_295_000_000 / 256));
    t = 110; // 10 s = 2500 jiffies
    expect(c.now()).toBe(Math.floor((4_295_000_000 + 2500) / 256));
    // INITIAL_JIFFIES = 2^32 - 300 HZ; 600 s of uptime at HZ 1000.
    expect(jiffiesClock(1000, () => 600).now()).toBe(Math.floor((2 ** 32 - 300_000 + 600_000) / 256));
  });

  it('expired() compares in u32 arithmetic across a wrap', () => {
    expect(expired(99, 100)).toBe(true);
    expect(expired(100, 100)).toBe(false);
    expect(expired(5, 0xfffffff0)).toBe(false); // lifetime wrapped past zero: still ahead
    expect(expired(0xfffffff0, 5)).toBe(true);
  });

  it('plausibleShare tells the two modes apart', () => {
    const mono = () => 5000;
    const k = ktimeClock(mono);
    const j = jiffiesClock(250, mono);
    const ktimeLifetimes = Uint32Array.from([5000 + 21600, 5000 + 60, 4990]);
    const jiffiesLifetimes = Uint32Array.from([j.now() + 84375, j.now() + 50, j.now() - 3]);
    expect(plausibleShare(ktimeLifetimes, 3, k)).toBe(1);
    expect(plausibleShare(ktimeLifetimes, 3, j)).toBe(0);
    expect(plausibleShare(jiffiesLifetimes, 3, j)).toBe(1);
    expect(plausibleShare(jiffiesLifetimes, 3, k)).toBe(0);
  });

  it('reads CONFIG_HZ from a kernel config', () => {
    expect(configHz('# CONFIG_HZ_100 is not set\nCONFIG_HZ_250=y\nCONFIG_HZ=250\n')).toBe(250);
    expect(configHz('CONFIG_HZ_PERIODIC=y\n')).toBeUndefined();
  });
});
