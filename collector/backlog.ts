// The collector's backlog: every tick's flows wait here, as numbered batches, until an exporter
// acknowledges them. Nothing counted is dropped while there is room; when the bound is reached the
// oldest batches are merged (bytes are kept, only the time resolution is lost), and only when no
// merge is left to make are the oldest flows dropped, and counted.

import { randomBytes } from 'node:crypto';
import { type Clock, systemClock } from '../shared/clock.js';
import type { Flow, FlowBatch } from '../shared/flow.js';
import { MAX_CURSORS } from '../shared/pull-contract.js';
import { pause } from '../shared/sleep.js';
import { FlowColumns } from './flow-columns.js';

export interface BacklogConfig {
  /** Flows kept in all pending batches together (option `backlog-max-flows`). */
  backlogMaxFlows: number;
  /**
   * New batches wait for `publish(seq)` before a pull may take them (`--state-dir`: a batch is
   * handed out only once the state that holds it is on disk, so a restarted collector never issues
   * a seq an exporter already saw with other flows). Default false: taken at once.
   */
  holdNew?: boolean;
}

/** The backlog as plain data (collector/state.ts writes it to `--state-dir`). */
export interface BacklogSnapshot {
  bootId: string;
  lastSeq: number;
  ackedSeq: number;
  boundaries: number[];
  /** Per sink name, how far it got beyond the ack (see `sinkCursors`). Absent: none. */
  cursors?: Record<string, number>;
  /** Oldest first. Never mutated by the backlog afterwards (a batch object may be cached by identity). */
  batches: readonly {
    readonly seq: number;
    readonly from: number;
    readonly to: number;
    readonly flows: FlowList;
  }[];
}

export interface BacklogStats {
  batches: number;
  flows: number;
  /** Batches folded into an older one because the bound was reached. */
  merges: number;
  droppedFlows: number;
  droppedBytes: number;
}

// Sinks an exporter may report cursors for (the pull contract's bound): names are bounded, so is this.
export { MAX_CURSORS };

export type AckResult = { ok: true; dropped: number } | { ok: false; reason: string };

const key = (f: Flow) => `${f.src}|${f.dst}|${f.proto}|${f.dstName ?? ''}`;

/**
 * A tick's flows as the reducer hands them over: columns (collector/flow-columns.ts), or objects
 * (merged batches, tests). Columns stay columns while they wait; `Flow` objects are made when a pull
 * takes the batch, and dropped with the pull's response.
 */
export type FlowList = readonly Flow[] | FlowColumns;

interface Pending {
  seq: number;
  from: number;
  to: number;
  flows: FlowList;
}

/** The flows as objects: fresh ones for columns, the same array otherwise. */
const objects = (l: FlowList): Flow[] => (l instanceof FlowColumns ? l.toFlows() : (l as Flow[]));

export class Backlog {
  /**
   * Random per process: a restarted collector starts its sequence numbers over under a new id
   * (unless it restored the backlog of its previous process, `--state-dir`).
   */
  private boot: string;
  private batches: Pending[] = [];
  private flowCount = 0;
  private lastSeq = 0;
  /**
   * The last seq of every pull not yet covered by an ack, ascending. An exporter (and each of its
   * sinks) takes whole pulls: what it has is always "everything up to one of these". A merge never
   * joins batches across one of them, so that an ack of that seq, or a sink that already took up to
   * it, covers exactly what was delivered: no bytes lost, none counted twice.
   */
  private boundaries: number[] = [];
  /** Highest seq acknowledged (0: none): the lower edge of the first pending pull. */
  private ackedSeq = 0;
  /**
   * Index of merged batches that were never handed out, so folding the next batch in costs only
   * that batch. A batch that was handed out is never mutated again: merges make a new one.
   */
  private readonly mergeIndex = new WeakMap<Pending, Map<string, Flow>>();
  private readonly totals = { merges: 0, droppedFlows: 0, droppedBytes: 0 };
  /**
   * Per sink name, the highest seq that sink took for good (reported with acks), above the ack.
   * Always a pull boundary: exporters push one stretch at a time.
   */
  private readonly cursors = new Map<string, number>();
  /**
   * Changes whenever what a pull would return changes (a batch added, acknowledged, merged or cut,
   * a boundary recorded): a pull body made for one version serves every pull of that version.
   */
  private changes = 0;

  /** Batches with a higher seq wait for `publish` (see BacklogConfig.holdNew). */
  private published = 0;
  /** Counts boundaries recorded by pulls (see `boundaryVersion`). */
  private boundaryChanges = 0;

  constructor(
    private readonly config: BacklogConfig,
    deps: { bootId?: string } = {},
    private readonly clock: Clock = systemClock,
  ) {
    this.boot = deps.bootId ?? randomBytes(8).toString('hex');
  }

  get bootId(): string {
    return this.boot;
  }

  /**
   * Takes over the backlog a previous process of this collector left (`--state-dir`): the same
   * boot id, seq numbering, pull boundaries and pending batches, so that an exporter continues
   * where it was. Only on a backlog nothing was appended to yet.
   */
  restore(r: BacklogSnapshot): void {
    if (this.lastSeq !== 0 || this.batches.length > 0) throw new Error('restore needs an empty backlog');
    this.boot = r.bootId;
    this.lastSeq = r.lastSeq;
    this.published = r.lastSeq;
    this.ackedSeq = r.ackedSeq;
    this.boundaries = [...r.boundaries];
    for (const [name, at] of Object.entries(r.cursors ?? {})) {
      if (at > r.ackedSeq && at <= r.lastSeq) this.cursors.set(name, at);
    }
    for (const b of r.batches) {
      this.batches.push({ seq: b.seq, from: b.from, to: b.to, flows: b.flows });
      this.flowCount += b.flows.length;
    }
    this.changes++;
  }

  /** Adds one tick's flows. Empty ticks add nothing. Returns the new batch's seq, or 0. */
  append(from: number, to: number, flows: FlowList): number {
    if (flows.length === 0) return 0;
    const seq = ++this.lastSeq;
    this.changes++;
    this.batches.push({ seq, from, to, flows });
    this.flowCount += flows.length;
    if (!this.config.holdNew) this.publish(seq);
    return seq;
  }

  /** Lets pulls take the batches up to `seq` (see BacklogConfig.holdNew). */
  publish(seq: number): void {
    const to = Math.min(seq, this.lastSeq);
    if (to <= this.published) return;
    this.published = to;
    this.changes++;
    if (this.flowCount > this.config.backlogMaxFlows) this.enforceBound();
  }

  /** The highest seq issued. */
  get last(): number {
    return this.lastSeq;
  }

  /**
   * The backlog as data, up to seq `upTo` (batches above it, and a higher `lastSeq`, left out: the
   * state written with the tracker as it was at `upTo`). Batch objects are the backlog's own and
   * are never mutated afterwards: a writer may cache what it made of one by identity.
   */
  snapshot(upTo = this.lastSeq): BacklogSnapshot {
    const batches: Pending[] = [];
    for (const b of this.batches) if (b.seq <= upTo) batches.push(b);
    return {
      bootId: this.bootId,
      lastSeq: Math.min(upTo, this.lastSeq),
      ackedSeq: Math.min(this.ackedSeq, upTo),
      boundaries: this.boundaries.filter((x) => x <= upTo),
      cursors: Object.fromEntries([...this.cursors].filter(([, at]) => at <= upTo)),
      batches,
    };
  }

  /**
   * The pending batches, oldest first. With `maxFlows`, whole batches up to that many flows (always
   * at least one). The returned batches are never mutated afterwards. Batches kept as columns are
   * made into `Flow` objects here, afresh at every pull (a pull not acknowledged is the rare case).
   */
  pull(maxFlows = Number.POSITIVE_INFINITY): FlowBatch[] {
    return this.take(maxFlows, objects);
  }

  /**
   * As `pull()`, for an encoder that writes the batches at once: flows kept as columns stay
   * columns (msgpackr makes them objects one batch at a time through `toJSON`, so a pull of the
   * whole backlog never holds every flow as an object at once). Encode before anything else runs.
   */
  pullForEncoding(maxFlows = Number.POSITIVE_INFINITY): FlowBatch[] {
    return this.take(maxFlows, (l) => l as Flow[]);
  }

  private take(maxFlows: number, as: (l: FlowList) => Flow[]): FlowBatch[] {
    const out: FlowBatch[] = [];
    let n = 0;
    for (const b of this.batches) {
      if (b.seq > this.published) break;
      if (out.length > 0 && n + b.flows.length > maxFlows) break;
      out.push({ seq: b.seq, from: b.from, to: b.to, flows: as(b.flows) });
      n += b.flows.length;
      this.mergeIndex.delete(b);
    }
    const last = out.length > 0 ? out[out.length - 1]!.seq : 0;
    if (last > (this.boundaries[this.boundaries.length - 1] ?? 0)) {
      this.boundaries.push(last);
      this.changes++;
      this.boundaryChanges++;
    } else if (last > 0 && !this.boundaries.includes(last)) {
      this.boundaries.push(last);
      this.boundaries.sort((x, y) => x - y);
      this.changes++;
      this.boundaryChanges++;
    }
    return out;
  }

  /** Drops every batch with seq ≤ `seq`. A foreign boot id or a seq never issued is refused. */
  ack(bootId: string, seq: number, cursors?: Readonly<Record<string, number>>): AckResult {
    if (bootId !== this.bootId) {
      return {
        ok: false,
        // Its own boot id is not disclosed: an ack must come from a pull, which says it.
        reason: `boot id ${bootId} is not this collector's: it restarted`,
      };
    }
    if (seq > this.published) {
      return { ok: false, reason: `seq ${seq} was never issued (last is ${this.published})` };
    }
    if (cursors !== undefined) {
      const names = Object.keys(cursors);
      for (const name of names) {
        if (cursors[name]! > this.lastSeq) {
          return {
            ok: false,
            reason: `cursor ${name} at seq ${cursors[name]} was never issued (last is ${this.lastSeq})`,
          };
        }
      }
      const fresh = names.filter((n) => !this.cursors.has(n)).length;
      if (this.cursors.size + fresh > MAX_CURSORS) {
        return { ok: false, reason: `more than ${MAX_CURSORS} sink cursors` };
      }
      for (const name of names) {
        const at = cursors[name]!;
        if (at > (this.cursors.get(name) ?? 0)) {
          this.cursors.set(name, at);
          this.changes++;
        }
      }
    }
    let i = 0;
    while (i < this.batches.length && this.batches[i]!.seq <= seq) {
      this.flowCount -= this.batches[i]!.flows.length;
      i++;
    }
    if (i > 0) this.batches.splice(0, i);
    let k = 0;
    while (k < this.boundaries.length && this.boundaries[k]! <= seq) k++;
    if (k > 0) this.boundaries.splice(0, k);
    if (i > 0 || k > 0 || seq > this.ackedSeq) this.changes++;
    if (seq > this.ackedSeq) this.ackedSeq = seq;
    // A cursor at or below the ack says nothing more: every sink has everything up to there.
    for (const [name, at] of this.cursors) if (at <= this.ackedSeq) this.cursors.delete(name);
    return { ok: true, dropped: i };
  }

  /**
   * How far each sink got, by sink name, where that is beyond the ack (a copy): an exporter that
   * starts (a restart, a takeover) gives each sink only what it has not taken yet.
   */
  sinkCursors(): Record<string, number> {
    return Object.fromEntries(this.cursors);
  }

  /**
   * The pending pull boundaries (see `boundaries`), ascending, a copy. Asked after `pull()`, it
   * includes that pull's own boundary: the pull response reports it to the exporter.
   */
  pendingBoundaries(): number[] {
    return this.boundaries.slice();
  }

  /** Changes whenever a pull would return something else (see `changes`). */
  get version(): number {
    return this.changes;
  }

  /** Changes whenever a pull records a new pull boundary (`--state-dir` writes it before the pull is answered). */
  get boundaryVersion(): number {
    return this.boundaryChanges;
  }

  /** Highest seq acknowledged so far (0: none). */
  get acked(): number {
    return this.ackedSeq;
  }

  /**
   * Resolves once every batch is acknowledged, or at `deadline` (ms since the epoch), whichever is
   * first. Returns whether the backlog is empty.
   */
  async drained(deadline: number, pollMs = 100): Promise<boolean> {
    while (this.batches.length > 0 && this.clock.now() < deadline) {
      await pause(Math.min(pollMs, Math.max(0, deadline - this.clock.now())), undefined, this.clock);
    }
    return this.batches.length === 0;
  }

  stats(): BacklogStats {
    return { batches: this.batches.length, flows: this.flowCount, ...this.totals };
  }

  private enforceBound(): void {
    this.changes++;
    const max = this.config.backlogMaxFlows;
    // Fold the oldest batches together, one at a time, until the total fits, never across a pull
    // boundary (see `boundaries`).
    // Only batches a pull may take: one still held is not in the state on disk yet, and folding a
    // published one into it would take that one's flows out of the state written meanwhile.
    let held = 0;
    for (let k = this.batches.length - 1; k >= 0 && this.batches[k]!.seq > this.published; k--) held++;
    let i = 0;
    let bi = 0;
    while (this.flowCount > max && i + 1 < this.batches.length - held) {
      const a = this.batches[i]!;
      const b = this.batches[i + 1]!;
      while (bi < this.boundaries.length && this.boundaries[bi]! < a.seq) bi++;
      if (bi < this.boundaries.length && this.boundaries[bi]! < b.seq) {
        i++;
        continue;
      }
      const merged = this.merge(a, b);
      this.flowCount += merged.flows.length - a.flows.length - b.flows.length;
      this.batches.splice(i, 2, merged);
      this.totals.merges++;
    }
    if (this.flowCount <= max) return;
    // Still over: each stretch between two boundaries is down to one batch. Drop flows from the oldest batch, the smallest
    // first so that as few bytes as possible are lost.
    let excess = this.flowCount - max;
    for (let j = 0; j < this.batches.length - held && excess > 0; j++) {
      const batch = this.batches[j]!;
      const sorted = (batch.flows instanceof FlowColumns ? batch.flows.toFlows() : [...batch.flows]).sort(
        (x, y) => x.txBytes + x.rxBytes - (y.txBytes + y.rxBytes),
      );
      const drop = Math.min(excess, sorted.length);
      for (let k = 0; k < drop; k++) {
        const f = sorted[k]!;
        this.totals.droppedFlows++;
        this.totals.droppedBytes += f.txBytes + f.rxBytes;
      }
      const kept = sorted.slice(drop);
      this.flowCount -= drop;
      excess -= drop;
      this.mergeIndex.delete(batch);
      if (kept.length === 0) {
        this.batches.splice(j, 1);
        j--;
      } else {
        this.batches[j] = { seq: batch.seq, from: batch.from, to: batch.to, flows: kept };
      }
    }
  }

  /** `b` folded into `a`: flows summed per (src, dst, proto, dstName), time range widened, `b`'s seq. */
  private merge(a: Pending, b: Pending): Pending {
    let index = this.mergeIndex.get(a);
    let flows: Flow[];
    if (index) {
      flows = a.flows as Flow[];
      this.mergeIndex.delete(a);
    } else {
      index = new Map();
      flows = [];
      for (const f of objects(a.flows)) add(index, flows, f);
    }
    for (const f of objects(b.flows)) add(index, flows, f);
    const merged: Pending = { seq: b.seq, from: Math.min(a.from, b.from), to: Math.max(a.to, b.to), flows };
    this.mergeIndex.set(merged, index);
    return merged;
  }
}

/** Sums `f` into the index, copying it: flows of batches already handed out stay untouched. */
function add(index: Map<string, Flow>, flows: Flow[], f: Flow): void {
  const k = key(f);
  const have = index.get(k);
  if (have) {
    have.txBytes += f.txBytes;
    have.rxBytes += f.rxBytes;
    have.txPackets += f.txPackets;
    have.rxPackets += f.rxPackets;
  } else {
    const copy = { ...f };
    index.set(k, copy);
    flows.push(copy);
  }
}
