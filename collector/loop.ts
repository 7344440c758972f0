// The collector's heartbeat: every `interval`, one read + reduce tick; its flows become a backlog
// batch. Ticks never overlap (the next is scheduled when the previous has finished); a failed tick
// is logged with its cause and the loop goes on, and the next good tick's batch covers the gap.
import { type Clock, systemClock } from '../shared/clock.js';
import type { Flow } from '../shared/flow.js';
import type { Logger } from '../shared/log.js';
import type { FlowList } from './backlog.js';
import type { FlowColumns } from './flow-columns.js';
import type { CollectorMetrics } from './metrics.js';

/** What one read + reduce produces (collector/reduce.ts). */
export interface TickResult {
  /** The flows as columns (collector/reduce.ts): appended instead of `flows`, which is then not read. */
  columns?: FlowColumns;
  flows: Flow[];
  /** Entries seen by the read. */
  entries: number;
  /** Messages or entries skipped because they could not be parsed. */
  parseErrors: number;
  /** Entries of the read without byte counters (nf_conntrack_acct was off when they were created). */
  noCounters?: number;
  /** Connections the reducer remembers after the tick. */
  tracked?: number;
}

export interface LoopConfig {
  /** Milliseconds between the starts of two ticks (option `interval`). */
  interval: number;
  /**
   * Logged once (warn) when the first good read finds no entry at all: on a real host or node an
   * empty table almost always means podflow looks at the wrong place, and says what to check. A
   * function: the source (`--source auto`) is only chosen at start.
   */
  emptyTableHint?: () => string;
  /**
   * Postpones the first tick while this says why (polled every 100 ms), for at most
   * `firstTickWaitMs`. After a restart with `--state-dir` the first read counts everything since the
   * previous process's last one: it waits for the pods of the node to be listed, or those bytes
   * would not be recognized as the pods' (counters only grow: reading later loses nothing).
   */
  holdFirstTick?: () => string | undefined;
  /** Default 30 s. */
  firstTickWaitMs?: number;
}

export interface LoopDeps {
  tick: () => Promise<TickResult>;
  backlog: { append(from: number, to: number, flows: FlowList): number };
  /**
   * Called after every good tick, once its batch is appended, and awaited before the next tick may
   * start (`--state-dir`: writes the state, then lets pulls take the batch). Must not reject.
   */
  commit?: () => Promise<void>;
  metrics: CollectorMetrics;
  log: Logger;
}

export class CollectorLoop {
  private cancel: (() => void) | undefined;
  private running: Promise<void> | undefined;
  private closed = false;
  /** End of the last good tick: the start of the next batch's interval. */
  private lastTo = 0;
  private goodTicks = 0;
  private lastError: string | undefined;

  constructor(
    private readonly config: LoopConfig,
    private readonly deps: LoopDeps,
    private readonly clock: Clock = systemClock,
  ) {}

  /** Runs the first tick at once, then one every interval. */
  start(): void {
    if (this.closed || this.cancel || this.running) return;
    this.lastTo = this.clock.now();
    this.schedule(0);
  }

  /** Why the collector is not ready: no tick has completed yet. Undefined once one has. */
  notReady(): string | undefined {
    if (this.goodTicks > 0) return undefined;
    return this.lastError
      ? `no conntrack read succeeded yet (last: ${this.lastError})`
      : 'first conntrack read not done yet';
  }

  /**
   * Stops scheduling and waits for a tick in progress. With `finalTick`, reads once more so the
   * traffic since the last tick reaches the backlog (shutdown: nothing counted is left behind).
   */
  async close(opts: { finalTick?: boolean } = {}): Promise<void> {
    const wasClosed = this.closed;
    this.closed = true;
    this.cancel?.();
    this.cancel = undefined;
    await this.running;
    if (opts.finalTick && !wasClosed && this.goodTicks > 0) await this.runTick();
  }

  private schedule(delay: number): void {
    if (this.closed) return;
    this.cancel = this.clock.setTimeout(() => {
      this.cancel = undefined;
      if (this.holding()) {
        this.schedule(100);
        return;
      }
      const started = this.clock.now();
      this.running = this.runTick().finally(() => {
        this.running = undefined;
        // Keep the period from start to start; after an overrun, start the next one right away.
        this.schedule(Math.max(0, started + this.config.interval - this.clock.now()));
      });
    }, delay);
  }

  private holdStarted: number | undefined;
  private held = false;

  /** True while the first tick is to wait (see LoopConfig.holdFirstTick). */
  private holding(): boolean {
    if (this.held || this.goodTicks > 0) return false;
    const why = this.config.holdFirstTick?.();
    if (why === undefined) return false;
    const now = this.clock.now();
    this.holdStarted ??= now;
    if (now - this.holdStarted < (this.config.firstTickWaitMs ?? 30_000)) return true;
    this.held = true;
    this.deps.log.warn(
      { reason: why },
      'first read no longer waits: bytes of pods not listed yet are not reported',
    );
    return false;
  }

  private async runTick(): Promise<void> {
    const { metrics, log } = this.deps;
    const start = this.clock.now();
    let result: TickResult;
    try {
      result = await this.deps.tick();
    } catch (err) {
      metrics.ticks.inc({ result: 'error' });
      this.lastError = err instanceof Error ? err.message : String(err);
      log.warn(
        { err: new Error('reading conntrack', { cause: err }) },
        'tick failed; retrying next interval',
      );
      return;
    }
    const end = this.clock.now();
    metrics.readDuration.observe((end - start) / 1000);
    metrics.conntrackEntries.set(result.entries);
    if (result.noCounters !== undefined) metrics.entriesWithoutCounters.set(result.noCounters);
    if (result.tracked !== undefined) metrics.trackedConnections.set(result.tracked);
    if (result.parseErrors > 0) metrics.parseErrors.inc(result.parseErrors);
    const flows = result.columns ?? result.flows;
    metrics.flowsReported.inc(flows.length);
    metrics.ticks.inc({ result: 'ok' });
    this.deps.backlog.append(this.lastTo, end, flows);
    this.lastTo = end;
    await this.deps.commit?.();
    if (this.goodTicks === 0 && result.entries === 0 && this.config.emptyTableHint !== undefined) {
      log.warn(this.config.emptyTableHint());
    }
    this.goodTicks++;
    this.lastError = undefined;
    log.debug({ entries: result.entries, flows: flows.length, ms: end - start }, 'tick');
  }
}
