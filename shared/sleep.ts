// Waits on a clock (shared/clock.ts). A pause ends early, without an error, when its signal aborts:
// retry loops sleep through it so that close() does not have to wait out a backoff. Free of any
// library, for the collector too.
import { type Clock, systemClock } from './clock.js';

/** Resolves after `ms`, or at once when `signal` aborts (never rejects). */
export function pause(ms: number, signal?: AbortSignal, clock: Clock = systemClock): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const cancel = clock.setTimeout(done, ms);
    function done() {
      cancel();
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/**
 * Waits for `p` at most `ms` (negative: not at all beyond what has settled already). True when `p`
 * settled first, false when the time ran out; a rejection of `p` counts as settled.
 */
export async function within(p: Promise<unknown>, ms: number, clock: Clock = systemClock): Promise<boolean> {
  let cancel: (() => void) | undefined;
  const expired = new Promise<false>((resolve) => {
    cancel = clock.setTimeout(() => resolve(false), Math.max(0, ms));
  });
  try {
    return await Promise.race([
      p.then(
        () => true,
        () => true,
      ),
      expired,
    ]);
  } finally {
    cancel?.();
  }
}
