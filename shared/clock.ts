// Time for the stages that wait (collector loop, export pipeline, backlog, HTTP delivery, sweeps):
// now() and one-shot timers from one object their constructors take last, so that a test moves
// time by hand (test/fixtures/clock.ts) instead of sleeping, and production passes nothing.

/** Cancels a timer of Clock.setTimeout; after the timer fired, or a second time, it does nothing. */
export type Cancel = () => void;

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /**
   * Calls `fn` once after `ms`. The timer does not keep the process alive: whatever waits on it is
   * kept alive by what it serves (a listening socket), and shutdown is not held up by a timer.
   */
  setTimeout(fn: () => void, ms: number): Cancel;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout(fn, ms) {
    const t = setTimeout(fn, ms);
    t.unref();
    return () => clearTimeout(t);
  },
};

/** Calls `fn` every `ms` on `clock` (after the first `ms`) until the returned Cancel is called. */
export function every(clock: Clock, ms: number, fn: () => void): Cancel {
  let cancel: Cancel | undefined;
  let stopped = false;
  const next = () => {
    cancel = clock.setTimeout(() => {
      fn();
      if (!stopped) next();
    }, ms);
  };
  next();
  return () => {
    stopped = true;
    cancel?.();
  };
}
