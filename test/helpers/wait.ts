/**
 * Polls `fn` every 250 ms until it returns something other than undefined, and returns that. Errors
 * thrown by `fn` count as "not yet"; the last one is the cause when `timeoutMs` (default 20 s) runs out.
 */
export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined>,
  timeoutMs = 20_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`, { cause: last });
    await new Promise((r) => setTimeout(r, 250));
  }
}
