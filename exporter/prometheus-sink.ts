// Prometheus sink: the flow counters of CONTRACT.md (bytes, packets, cost), served on /metrics after
// the process's self-metrics (shared/http.ts takes this sink as the body of /metrics); series idle
// for `metrics-ttl` are removed. The pieces: the families and label tables
// (prometheus-families.ts), the series (prometheus-series.ts), the text (prometheus-text.ts).
import type { Registry } from 'prom-client';
import { type Cancel, type Clock, systemClock } from '../shared/clock.js';
import type { FlowLabel } from '../shared/config.js';
import type { EnrichedFlow } from '../shared/flow.js';
import { type MetricsBody, type MetricsChunks, readWhole } from '../shared/http.js';
import type { Logger } from '../shared/log.js';
import { within } from '../shared/sleep.js';
import type { ExporterMetrics } from './metrics.js';
import { flowSchema } from './prometheus-families.js';
import { SeriesStore, type SeriesTotals } from './prometheus-series.js';
import { CHUNK_BYTES, FlowTextWriter, type Snapshot } from './prometheus-text.js';
import type { Sink } from './sink.js';

export { OVERFLOW } from './prometheus-families.js';
export type { SeriesTotals } from './prometheus-series.js';

export interface PrometheusSinkConfig {
  /** `metrics-prefix`: `podflow`, or `egressd` for egressd-compatible names and labels. */
  metricsPrefix: 'podflow' | 'egressd';
  /** `metrics-labels`: podflow labels kept; series are summed over the others. Ignored for egressd. */
  metricsLabels: readonly FlowLabel[];
  /** `metrics-ttl` in ms: a series not updated for this long is removed; 0 keeps series forever. */
  metricsTtl: number;
  /** `metrics-pod-ips`: fill dst_ip for pod and node peers too. */
  metricsPodIps: boolean;
  /**
   * `metrics-max-series`: most series per counter. Flows of further series are summed into one
   * overflow series whose every label is `_overflow_`, so totals stay exact while /metrics stays
   * renderable. @default 200000
   */
  maxSeries?: number;
  /**
   * A batch counted here is safe from this process's death once a scrape served it (onDurable).
   * Before the first scrape, or when nothing has scraped for this long (no Prometheus, a long
   * outage), at once instead: the collectors must not keep batches for a scraper that does not
   * come. @default 300000 (5 min)
   */
  scrapeGraceMs?: number;
  /**
   * `cluster-name`: the label `cluster` with this value on every series (first, whatever
   * `metricsLabels` keeps). The same on every series, so it is no part of a series' key: it is
   * written into each line as it is rendered. None when unset.
   */
  clusterName?: string;
}

/** How often idle series are looked for when no push comes (pushes look at most as often). */
const SWEEP_MS = 1000;

/** What a closed sink serves: the families, no series. */
const NO_SERIES: Snapshot = {
  count: 0,
  ids: new Int32Array(0),
  counts: new Float64Array(0),
  values: [],
  overflow: undefined,
};

/**
 * The flow counters live here, not in prom-client's per-series maps: at a million flows per round
 * and tens of thousands of series, prom-client's label hashing on every increment and its formatter
 * (microseconds per sample) dominated the round and the scrape. /metrics writes the Registry's text
 * and then this sink's (`chunks`), so it serves self-metrics and flow counters in one body.
 *
 * A /metrics response copies the ids and counts (about 90 bytes per series at 14 labels) and is made
 * a chunk at a time from per-value `name="value"` byte pieces.
 */
export class PrometheusSink implements Sink, MetricsBody {
  readonly name = 'prometheus';
  private readonly store: SeriesStore;
  private readonly text: FlowTextWriter;
  /** onDurable callbacks of pushes no complete scrape has served yet, oldest first. */
  private unscraped: (() => void)[] = [];
  /** Callbacks released so far: the number of `unscraped[0]` among all ever registered. */
  private released = 0;
  /** When a scrape last completed (clock ms); undefined until the first. */
  private lastScrape: number | undefined;
  /** Responses begun and not ended yet. */
  private responding = 0;
  /** Resolves `close`'s wait once no response is left (set while it waits). */
  private idle: (() => void) | undefined;
  /** Closed: responses carry no flow series any more. */
  private closed = false;
  private cancelSweep: Cancel | undefined;

  constructor(
    private readonly config: PrometheusSinkConfig,
    /** `registry`: the self-metrics /metrics serves before this sink's text; no name may be in both. */
    private readonly deps: { registry: Registry; metrics?: ExporterMetrics; log?: Logger },
    private readonly clock: Clock = systemClock,
  ) {
    const schema = flowSchema(config);
    for (const f of schema.families) {
      if (deps.registry.getSingleMetric(f.name)) throw new Error(`metric ${f.name} is already registered`);
    }
    this.store = new SeriesStore(
      schema,
      { metricsTtl: config.metricsTtl, maxSeries: config.maxSeries },
      deps.log,
    );
    this.text = new FlowTextWriter(schema);
  }

  async push(flows: readonly EnrichedFlow[]): Promise<void> {
    const overflowed = this.store.add(flows, this.clock.now());
    if (overflowed > 0) this.deps.metrics?.seriesOverflow.inc(overflowed);
    this.deps.metrics?.series.set(this.store.count);
    this.sweepLater();
  }

  /**
   * Idle series go also when no push comes (every collector gone): a timer while there are series
   * to expire.
   */
  private sweepLater(): void {
    if (this.cancelSweep !== undefined || this.config.metricsTtl <= 0 || this.store.count === 0) return;
    this.cancelSweep = this.clock.setTimeout(() => {
      this.cancelSweep = undefined;
      this.store.expireDue(this.clock.now());
      this.deps.metrics?.series.set(this.store.count);
      this.sweepLater();
    }, SWEEP_MS);
  }

  /** Removes series not updated within `metrics-ttl` (Prometheus then marks them stale). */
  expire(now: number = this.clock.now()): void {
    this.store.expire(now);
  }

  /** Number of flow series currently exported (per counter). */
  get seriesCount(): number {
    return this.store.count;
  }

  /** Every live series with its totals (see SeriesStore.totals). */
  totals(): SeriesTotals {
    return this.store.totals();
  }

  /**
   * The body of one /metrics response (MetricsBody): `head` (the Registry's text) first, separated
   * by a blank line, then one block per counter, ending with a newline; in chunks of about 256 kB
   * (`chunkBytes`), each ending at a line end: call `next()` until it returns undefined. The series
   * are copied now; chunks are made as they are asked for, so that a response holds one or two of
   * them at a time instead of the whole text: at 200,000 series of 14 labels the text is over
   * 200 MB, and as one string plus the Buffer the socket needed it took several times that.
   *
   * The pushes counted before the response began are in it: once the scraper has the whole body
   * (`done(true)`), they are safe. A failed or abandoned response releases nothing.
   */
  chunks(head = '', chunkBytes = CHUNK_BYTES): MetricsChunks {
    // Closed with counts no scrape served (the collectors still hold those batches): never served.
    if (this.closed && this.unscraped.length > 0)
      return this.text.chunks(head, NO_SERIES, chunkBytes, () => {});
    const upTo = this.released + this.unscraped.length;
    this.responding++;
    return this.text.chunks(head, this.store.snapshot(), chunkBytes, (complete) => {
      if (--this.responding === 0) this.idle?.();
      if (!complete) return;
      this.lastScrape = this.clock.now();
      this.release(upTo);
    });
  }

  /** The text of `chunks` as one string: for tests and small registries. /metrics streams `chunks`. */
  render(head = ''): string {
    return readWhole(this.chunks(head));
  }

  /**
   * Once a scraper has shown itself (a complete scrape), a push is safe when the next complete
   * scrape served it. Before the first scrape, or when none came for `scrapeGraceMs`, at once:
   * waiting would only make the collectors hold their batches for a scraper that does not come.
   */
  onDurable(fn: () => void): void {
    const last = this.lastScrape;
    if (last === undefined || this.clock.now() - last > (this.config.scrapeGraceMs ?? 300_000)) {
      this.release(this.released + this.unscraped.length);
      fn();
      return;
    }
    this.unscraped.push(fn);
  }

  /** Calls the onDurable callbacks registered before the `upTo`-th, those not called yet. */
  private release(upTo: number): void {
    if (upTo <= this.released) return;
    const due = this.unscraped.splice(0, upTo - this.released);
    this.released += due.length;
    for (const fn of due) fn();
  }

  /**
   * From now on, while anything counted waits for a scrape, responses carry no flow series: what
   * was counted but never served is then never served by this process, and the collectors, which
   * keep it (no ack went out for it), give it to the next exporter. Else a scrape after the pipeline's last acks (while the leases are released
   * and the socket still answers) would serve batches the next exporter counts again. Responses
   * begun before are awaited until `deadline` (ms since the epoch): what they served is released
   * (onDurable), and the pipeline acknowledges it before it lets the collectors go.
   */
  async close(deadline: number): Promise<void> {
    this.cancelSweep?.();
    this.cancelSweep = undefined;
    this.closed = true;
    if (this.responding === 0) return;
    await within(
      new Promise<void>((resolve) => {
        this.idle = resolve;
      }),
      deadline - this.clock.now(),
      this.clock,
    );
    this.idle = undefined;
  }
}
