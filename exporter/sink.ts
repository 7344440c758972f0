// The boundary between enrichment and where flows go (Prometheus counters, HTTP log batches).
import type { EnrichedFlow } from '../shared/flow.js';

/** What the pipeline tells a sink about a push, beyond the flows. */
export interface PushInfo {
  /**
   * Names the set of collector batches in this push (collector, boot id, seq range). The same batches
   * offered again after a failure get the same id: the HTTP sink derives its Idempotency-Key from it.
   */
  id: string;
}

export interface Sink {
  readonly name: string;
  /**
   * Accepts flows of one or more collector batches. Resolves once the sink has taken responsibility
   * for them (Prometheus: counted; HTTP: POSTed and answered 2xx); rejects when it cannot, and then
   * the batches are not acknowledged to the collector and will be offered again (only to the sinks
   * that did not take them). Settles only when nothing of the push is queued or in flight any more:
   * the pipeline gives this sink nothing more of that collector until then. It may take rounds; the
   * pipeline does not wait for it, the other sinks go on.
   */
  push(flows: readonly EnrichedFlow[], info?: PushInfo): Promise<void>;
  /**
   * Optional: calls `fn` once everything the sink took so far is safe from this process's death.
   * Without it, what push() took is safe once it resolved. The Prometheus sink says so when a
   * scrape served it: counted but never scraped, it would die with the process, so the collector
   * keeps those batches (and gives them to the next process) until then.
   */
  onDurable?(fn: () => void): void;
  /** Flushes what is queued, giving up at `deadline` (ms since the epoch). */
  close(deadline: number): Promise<void>;
}
