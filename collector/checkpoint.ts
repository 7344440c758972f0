// When the collector writes its state (`--state-dir`, collector/state.ts), and what goes in it.
//
// - After every good tick: the tracker as that tick left it, and the backlog up to the tick's batch.
//   The batch is handed to pulls only once that write is done (Backlog `holdNew`/`publish`): an
//   exporter never sees a seq that a crash could make the next process issue again with other flows.
// - When a pull records a new pull boundary, the pull is answered once a write holds it (the
//   boundaries keep HTTP Idempotency-Keys stable across a restart); acks are written by the next
//   write, whatever asks for it (an ack not yet on disk only makes the next process offer batches an
//   exporter already has, which it skips).
// - Last at shutdown.
// Between ticks the tracker is not read again: a tick may be half done (a failed read keeps its
// counts for the next tick), so writes between ticks reuse the tracker section of the last good
// tick, with the backlog cut at that tick's seq. Tracker and backlog in a file always belong
// together. Writes never overlap; requests made while one runs share the next one.
import { type Clock, systemClock } from '../shared/clock.js';
import type { Logger } from '../shared/log.js';
import type { Backlog } from './backlog.js';
import type { CollectorMetrics } from './metrics.js';
import { encodeBatch, encodeState, encodeTracker, type StateOwner } from './state.js';
import type { TrackerSnapshot } from './tracker.js';

/** Where the bytes go (collector/state.ts StateStore). */
export interface StateWriter {
  write(buf: Buffer): Promise<void>;
  discard(): Promise<void>;
}

export interface CheckpointDeps {
  store: StateWriter;
  backlog: Backlog;
  /** The tracker's state; only called when no tick is running. */
  tracker: () => TrackerSnapshot;
  /** Changes whenever `tracker()` would say something new (Tracker.version). */
  trackerVersion: () => number;
  /** Node and source (the source is chosen at start with `--source auto`). */
  owner: () => StateOwner;
  log: Logger;
  metrics?: Pick<CollectorMetrics, 'stateWrites' | 'stateWriteDuration' | 'stateBytes'>;
  /** When a state is saved (`savedAt`). @default systemClock */
  clock?: Clock;
}

export class Checkpoint {
  private trackerSection: Buffer | undefined;
  private trackerSeq = 0;
  /** A batch's section, made once: batches never change (merges make new ones). */
  private readonly batchCache = new WeakMap<object, Buffer>();
  private running: Promise<void> | undefined;
  private queued: Promise<void> | undefined;
  /** Backlog boundary version held by the last finished write. */
  private doneBoundaries = 0;
  private failing: string | undefined;

  constructor(private readonly deps: CheckpointDeps) {}

  /** Tracker version of `trackerSection`, backlog version of the last write started. */
  private markedTracker = -1;
  private writtenBacklog = -1;

  /** Takes the tracker as it is now. Call only between ticks (at start, after a good tick). */
  mark(): void {
    const { backlog, trackerVersion } = this.deps;
    const v = trackerVersion();
    // Unchanged (an idle node): the section made last time says the same.
    if (this.trackerSection === undefined || v !== this.markedTracker || backlog.last !== this.trackerSeq) {
      this.trackerSection = encodeTracker(this.deps.tracker());
      this.markedTracker = v;
    }
    this.trackerSeq = backlog.last;
  }

  /**
   * After a good tick: writes tracker and backlog, then lets pulls take the tick's batch. Nothing
   * written when neither changed since the last write.
   */
  async afterTick(): Promise<void> {
    const before = this.markedTracker;
    this.mark();
    const { backlog } = this.deps;
    const write = this.markedTracker !== before || backlog.version !== this.writtenBacklog;
    if (write) await this.request();
    backlog.publish(this.trackerSeq);
    // Publishing changes no byte of the file just written.
    if (write && this.running === undefined && this.queued === undefined)
      this.writtenBacklog = backlog.version;
  }

  /** Resolves once the pull boundaries recorded so far are in a finished write. */
  boundariesDurable(): Promise<void> {
    if (this.doneBoundaries >= this.deps.backlog.boundaryVersion) return Promise.resolve();
    return this.request();
  }

  /** Asks for a write; shares one that was asked for and has not started yet. Never rejects. */
  request(): Promise<void> {
    if (this.queued !== undefined) return this.queued;
    const before = this.running ?? Promise.resolve();
    const p: Promise<void> = before.then(async () => {
      this.queued = undefined;
      this.running = p;
      try {
        await this.writeNow();
      } catch (err) {
        // writeNow handles its failures; this only keeps a surprise from stopping every later write.
        this.deps.log.error({ err }, '--state-dir: write failed');
      } finally {
        if (this.running === p) this.running = undefined;
      }
    });
    this.queued = p;
    return p;
  }

  private async writeNow(): Promise<void> {
    const { backlog, store, log, metrics } = this.deps;
    if (this.trackerSection === undefined) this.mark();
    const started = performance.now();
    const boundaries = backlog.boundaryVersion;
    this.writtenBacklog = backlog.version;
    const snap = backlog.snapshot(this.trackerSeq);
    try {
      const batches = snap.batches.map((b) => {
        let enc = this.batchCache.get(b);
        if (enc === undefined) {
          enc = encodeBatch(b);
          this.batchCache.set(b, enc);
        }
        return enc;
      });
      const buf = encodeState(
        { ...this.deps.owner(), savedAt: (this.deps.clock ?? systemClock).now() },
        snap,
        this.trackerSection!,
        batches,
      );
      await store.write(buf);
      metrics?.stateWrites.inc({ result: 'ok' });
      metrics?.stateBytes.set(buf.length);
      if (this.failing !== undefined) log.info('--state-dir: state written again');
      this.failing = undefined;
    } catch (err) {
      metrics?.stateWrites.inc({ result: 'error' });
      const why = (err as Error).message;
      // The file on disk is now older than what exporters may be handed: a restart must not use it.
      await store.discard().catch(() => undefined);
      if (why !== this.failing) {
        log.warn(
          { err },
          '--state-dir: cannot write the state (removed the old one): a restart now starts over with a baseline; delivery goes on',
        );
      }
      this.failing = why;
    } finally {
      // Done either way: pulls do not wait on a directory that fails.
      if (boundaries > this.doneBoundaries) this.doneBoundaries = boundaries;
      metrics?.stateWriteDuration.observe((performance.now() - started) / 1000);
    }
  }
}
