// The repeating timer of shared/clock.ts on a clock the test turns.
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../test/fixtures/clock.js';
import { every } from './clock.js';

describe('every', () => {
  it('calls every period after the first, and never after its cancel', () => {
    const clock = new ManualClock(0);
    const at: number[] = [];
    const cancel = every(clock, 1000, () => at.push(clock.now()));
    clock.advance(999);
    expect(at).toEqual([]);
    clock.advance(1);
    clock.advance(2500);
    expect(at).toEqual([1000, 2000, 3000]);
    cancel();
    clock.advance(10_000);
    expect(at).toEqual([1000, 2000, 3000]);
    expect(clock.pending).toBe(0);
  });

  it('a cancel from inside the callback stops it too', () => {
    const clock = new ManualClock(0);
    let n = 0;
    const cancel = every(clock, 10, () => {
      if (++n === 2) cancel();
    });
    clock.advance(100);
    expect(n).toBe(2);
    expect(clock.pending).toBe(0);
  });
});
