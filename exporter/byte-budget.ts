// Bytes of pull bodies held at once, across every pull of the exporter. A pull reserves what its
// body will take decompressed before it makes it, and waits, first come first served, while the
// budget is spent. Each pull holds one reservation at a time and none is larger than the budget,
// so waiting always ends. Without it, eight gzip bombs at once took an exporter to 2.3 GB.

export class ByteBudget {
  private used = 0;
  private readonly waiting: { n: number; wake: () => void }[] = [];

  constructor(readonly total: number) {}

  /** Bytes reserved now. */
  get inUse(): number {
    return this.used;
  }

  /**
   * Reserves `n` bytes (at most `total`), waiting for them if need be; resolves to the function
   * that gives them back. Rejects with the signal's reason if it aborts while waiting.
   */
  async reserve(n: number, signal?: AbortSignal): Promise<() => void> {
    if (n > this.total) throw new RangeError(`${n} bytes exceed the budget of ${this.total}`);
    if (this.waiting.length === 0 && this.used + n <= this.total) {
      this.used += n;
    } else {
      // Queued: wakeNext() counts the bytes as it wakes the waiter, so that two releases in one
      // turn cannot both hand out the same free bytes.
      await new Promise<void>((resolve, reject) => {
        const entry = { n, wake: resolve };
        this.waiting.push(entry);
        signal?.addEventListener(
          'abort',
          () => {
            const i = this.waiting.indexOf(entry);
            if (i < 0) return;
            this.waiting.splice(i, 1);
            this.wakeNext();
            reject(signal.reason);
          },
          { once: true },
        );
      });
    }
    let given = false;
    return () => {
      if (given) return;
      given = true;
      this.used -= n;
      this.wakeNext();
    };
  }

  private wakeNext(): void {
    while (this.waiting.length > 0 && this.used + this.waiting[0]!.n <= this.total) {
      const next = this.waiting.shift()!;
      this.used += next.n;
      next.wake();
    }
  }
}
