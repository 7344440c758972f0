// Waits on a clock (shared/sleep.ts) with the manual clock: when they end, and what they leave behind.
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../test/fixtures/clock.js';
import { systemClock } from './clock.js';
import { pause, within } from './sleep.js';

/** Whether `p` has settled, after letting queued callbacks run. */
async function settled(p: Promise<unknown>, clock: ManualClock): Promise<boolean> {
  let done = false;
  p.then(
    () => {
      done = true;
    },
    () => {
      done = true;
    },
  );
  await clock.elapse(0);
  return done;
}

describe('pause', () => {
  it('ends after its time on the clock, and at once when its signal aborts', async () => {
    const clock = new ManualClock();
    const p = pause(1000, undefined, clock);
    await clock.elapse(999);
    expect(await settled(p, clock)).toBe(false);
    await clock.elapse(1);
    expect(await settled(p, clock)).toBe(true);

    const ac = new AbortController();
    const q = pause(60_000, ac.signal, clock);
    expect(await settled(q, clock)).toBe(false);
    ac.abort(new Error('closing'));
    expect(await settled(q, clock)).toBe(true);
    // Its timer went with it.
    expect(clock.pending).toBe(0);
  });

  it('a pause begun after its signal aborted does not wait at all', async () => {
    const clock = new ManualClock();
    const ac = new AbortController();
    ac.abort();
    expect(await settled(pause(60_000, ac.signal, clock), clock)).toBe(true);
    expect(clock.pending).toBe(0);
  });
});

describe('within', () => {
  it('true when the promise settles first (a rejection too), false when the time runs out', async () => {
    const clock = new ManualClock();
    expect(await within(Promise.resolve(), 1000, clock)).toBe(true);
    expect(await within(Promise.reject(new Error('x')), 1000, clock)).toBe(true);
    expect(clock.pending).toBe(0);

    const never = new Promise(() => {});
    const w = within(never, 5000, clock);
    await clock.elapse(4999);
    expect(await settled(w, clock)).toBe(false);
    await clock.elapse(1);
    expect(await w).toBe(false);
    // A deadline already past: only what has settled by now counts.
    expect(await clock.run(within(never, -10, clock))).toBe(false);
  });
});

describe('systemClock', () => {
  it('its timers fire, can be cancelled, and do not keep the process alive', async () => {
    const before = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    let fired = 0;
    const cancel = systemClock.setTimeout(() => fired++, 60_000);
    expect(process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length).toBe(before);
    cancel();
    await new Promise<void>((resolve) => systemClock.setTimeout(resolve, 1));
    expect(fired).toBe(0);
    expect(Math.abs(systemClock.now() - Date.now())).toBeLessThan(1000);
  });
});
