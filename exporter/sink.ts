// The boundary between enrichment and where flows go (Prometheus counters, HTTP log batches).
import type { EnrichedFlow } from '../shared/flow.js';

export interface Sink {
  readonly name: string;
  /**
   * Accepts one export interval's flows. Resolves once the sink has taken responsibility for them
   * (counted, or durably queued); rejects when it cannot, and then the batch is not acknowledged to
   * the collectors and will be offered again.
   */
  push(flows: readonly EnrichedFlow[]): Promise<void>;
  /** Flushes what is queued, giving up at `deadline` (ms since the epoch). */
  close(deadline: number): Promise<void>;
}
