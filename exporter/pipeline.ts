// The exporter's flow graph, wired top to bottom: every export interval, for every collector
// (bounded concurrency): pull → enrich → push to every sink → ack.
//
// Exactly-once towards each sink: the pipeline remembers, per collector boot, the last batch seq
// each sink accepted. A collector is acknowledged up to the lowest seq every sink accepted; until
// then its batches are offered again, and each sink is given only the batches it has not taken yet.
// So a failing HTTP sink makes batches come back without the Prometheus counters counting them
// twice, and a lost ack does not double anything either. A new boot id starts the collector over.
//
// A collector that reports its pending pull boundaries (PullResponse.boundaries) gets its batches
// pushed one boundary stretch at a time, each keyed by the stretch's edges as the collector sees
// them: a restarted exporter re-offers what its predecessor pushed but did not acknowledge under
// the same key, so the HTTP receiver recognises it. Older collectors: one push per sink and round.
//
// A slow sink delays only itself: the round hands each sink its pushes and waits for them at most
// until the next round is due. A sink still busy with an earlier push of a collector (its in-flight
// seq) takes nothing of that collector this round; the others take what is new to them. The
// collector is acknowledged, whenever a push settles, up to what every sink took, so a slow sink
// holds back the ack (the batches stay on the collector), never the other sinks' rounds.
import { createHash } from 'node:crypto';
import type { Registry } from 'prom-client';
import { type Cancel, type Clock, systemClock } from '../shared/clock.js';
import type { ClusterLookup } from '../shared/cluster.js';
import type { Config, SinkConfig } from '../shared/config.js';
import type { EnrichedFlow, FlowBatch, PullResponse } from '../shared/flow.js';
import { causeOf, type Logger, OncePerCause } from '../shared/log.js';
import { within } from '../shared/sleep.js';
import type { Destinations } from './destinations.js';
import { egressdProtobuf, loki, ndjson, otlpLogs, type RecordEncoding } from './encodings.js';
import { Enricher, emptyClusterLookup } from './enrich.js';
import { HttpSink } from './http-sink.js';
import { ExporterMetrics } from './metrics.js';
import { PrometheusSink, type PrometheusSinkConfig } from './prometheus-sink.js';
import { type CollectorClient, PullError } from './pull.js';
import type { Sink } from './sink.js';
import { otlpMetrics, remoteWrite, TotalsSink } from './totals-sink.js';
import { TrafficRing } from './traffic-ring.js';

/** The set of collectors to pull, asked afresh every round (static list, or Kubernetes discovery). */
export interface CollectorDiscovery {
  current(): readonly CollectorClient[];
}

export const staticDiscovery = (clients: readonly CollectorClient[]): CollectorDiscovery => ({
  current: () => clients,
});

export interface PipelineConfig {
  /** `export-interval`, ms. */
  exportInterval: number;
  /** `pull-concurrency`. */
  pullConcurrency: number;
  /**
   * `pull-timeout`, ms: also enforced here, so that a client without its own timeout (in-process,
   * or a future transport) cannot hold a round.
   */
  pullTimeout: number;
}

export interface PipelineDeps {
  discovery: CollectorDiscovery;
  enricher: Enricher;
  sinks: readonly Sink[];
  log: Logger;
  metrics?: ExporterMetrics;
}

/** What the pipeline remembers of one collector boot. */
interface CollectorState {
  bootId: string;
  /** Highest seq acknowledged to the collector (-1: none). */
  acked: number;
  /** Highest seq each sink accepted, by sink index. */
  delivered: number[];
  /**
   * Highest seq each sink holds for good, by sink index: what survives this process's death. For
   * most sinks the same as `delivered`; Prometheus holds a batch for good once a scrape served it
   * (Sink.onDurable). Acks (and the cursors they report) follow this, not `delivered`.
   */
  durable: number[];
  /** Highest `durable` of each sink the collector was told (ack cursors). */
  reported: number[];
  /**
   * Per sink: the highest seq handed to it in pushes that have not settled yet, -1 when none. A
   * sink with pushes in flight is given nothing more of this collector until they settle, so the
   * same batches are never in flight twice.
   */
  inFlight: number[];
  /**
   * Per sink: the end of the last range it refused (-1: none). That range is offered again alone,
   * with the same id, before what arrived since: a receiver that took part of the refused push
   * (an HTTP sink splits pushes into requests) recognises that part by its Idempotency-Key.
   */
  offered: number[];
  /** Last round the collector was in the discovered set (clock ms). */
  seen: number;
}

interface Pulled {
  client: CollectorClient;
  state: CollectorState;
  node: string;
  /** Batches with seq > the lowest delivered seq over sinks, oldest first (dropped once enriched). */
  batches: FlowBatch[];
  /** Seqs of the batches some sink of this round needs, and their flows enriched, same order. */
  seqs: number[];
  enriched: EnrichedFlow[][];
  /**
   * The collector's pull-boundary stretches covering the batches it returned, oldest first: seqs in
   * (start - 1, end]. Absent when the collector does not report boundaries.
   */
  segments?: Segment[];
}

interface Segment {
  start: number;
  end: number;
}

export interface RoundResult {
  collectors: number;
  pulled: number;
  flows: number;
  /** Names of the sinks that refused a push since the previous round's report. */
  failedSinks: string[];
  /** Names of the sinks that were still busy with an earlier push of some collector. */
  busySinks: string[];
  /** Collectors acknowledged by the pushes of this round that settled within it. */
  acked: number;
}

/** Per refusing sink: how many pushes it refused, their flows, and the first reason. */
type Failures = Map<string, { collectors: number; flows: number; err: unknown }>;

/** How long a sink done with a collector waits for the others before reporting its cursor alone. */
const EARLY_CURSOR_MS = 100;

/** A collector absent from discovery this long is forgotten. */
const FORGET_AFTER_MS = 3_600_000;

export class Pipeline {
  private readonly states = new Map<string, CollectorState>();
  /** Cancels the timer of the next round. */
  private nextRound: Cancel | undefined;
  private current: Promise<unknown> = Promise.resolve();
  /** Aborts pulls at close(); acks of the last round still go out, until the shutdown deadline. */
  private readonly abort = new AbortController();
  private readonly ackAbort = new AbortController();
  private rounds = 0;
  /** close() with a final round: the loop schedules no further round. */
  private stopping = false;
  /** Pushes (and the acks after them) not settled yet, whichever round started them. */
  private readonly pending = new Set<Promise<unknown>>();
  /** Refusals not reported yet: pushes that outlive their round are reported by the next one. */
  private failures: Failures = new Map();
  /** Pull, ack and sink failures that repeat every round: logged once per cause. */
  private readonly repeated: OncePerCause;
  /** Collectors another exporter's lease held this round (id → holder), and the holders last logged. */
  private leased = new Map<string, string>();
  private leasedLogged = '';

  constructor(
    private readonly config: PipelineConfig,
    private readonly deps: PipelineDeps,
    private readonly clock: Clock = systemClock,
  ) {
    this.repeated = new OncePerCause(deps.log);
  }

  /** True once a round completed (whatever its collectors answered). */
  get ready(): boolean {
    return this.rounds > 0;
  }

  /** Runs a round now and then every `export-interval`, until close(). */
  start(): void {
    if (this.abort.signal.aborted) return;
    const tick = () => {
      const began = this.clock.now();
      this.current = this.runOnce()
        .then((r) =>
          this.deps.log.debug(
            {
              collectors: r.collectors,
              pulled: r.pulled,
              flows: r.flows,
              acked: r.acked,
              failedSinks: r.failedSinks,
              ms: this.clock.now() - began,
            },
            'export round',
          ),
        )
        .catch((err: unknown) => this.deps.log.error({ err }, 'export round failed'))
        .finally(() => {
          if (this.abort.signal.aborted || this.stopping) return;
          const wait = Math.max(0, this.config.exportInterval - (this.clock.now() - began));
          this.nextRound = this.clock.setTimeout(tick, wait);
        });
    };
    tick();
  }

  /**
   * Stops the loop and flushes the sinks until `deadline` (ms since the epoch). The round in progress
   * has its pulls aborted; what it already pushed is still acknowledged if the deadline allows.
   */
  async close(deadline: number, opts: { finalRound?: boolean } = {}): Promise<void> {
    if (opts.finalRound && !this.abort.signal.aborted) {
      // Let the round in progress finish, stop the loop, then run one more round (standalone: the
      // collector's last read is in the in-process backlog and dies with the process otherwise).
      this.stopping = true;
      this.nextRound?.();
      await this.current;
      this.nextRound?.();
      // Pushes of earlier rounds first: a sink still busy with one would take nothing of the final
      // round.
      await this.settled(deadline);
      const left = deadline - this.clock.now();
      if (left > 0) {
        const cut = this.clock.setTimeout(
          () => this.abort.abort(new Error('shutdown deadline reached')),
          left,
        );
        await this.runOnce().catch((err: unknown) =>
          this.deps.log.error({ err }, 'final export round failed'),
        );
        cut();
      }
    }
    this.abort.abort(new Error('exporter shutting down'));
    this.nextRound?.();
    const cut = this.clock.setTimeout(
      () => this.ackAbort.abort(new Error('shutdown deadline reached')),
      deadline - this.clock.now(),
    );
    const closing = this.deps.sinks.map((s) =>
      s
        .close(deadline)
        .catch((err: unknown) => this.deps.log.warn({ err, sink: s.name }, 'sink close failed')),
    );
    await Promise.all([this.current, ...closing]);
    // Pushes that outlived their round settle once the sinks flushed or gave up; their acks go out
    // until the deadline.
    await Promise.all([...this.pending]);
    cut();
    this.report();
  }

  /** Logs the refusals since the last report, one line per refusing sink; returns their names. */
  private report(): string[] {
    const failures = this.failures;
    this.failures = new Map();
    for (const [sink, f] of failures) {
      this.repeated.failing(
        `sink ${sink}`,
        causeOf(f.err),
        { err: f.err, sink, collectors: f.collectors, flows: f.flows },
        'sink refused batches: they stay unacknowledged and come again',
      );
    }
    return [...failures.keys()];
  }

  /**
   * One info line when the set of exporters holding some of this exporter's collectors changes:
   * which, how many collectors, and why that is. Two exporters that both claim a collector never
   * both deliver it (the lease), but the one that waits should say so once.
   */
  private reportLeased(): void {
    const leased = this.leased;
    this.leased = new Map();
    const holders = [...new Set(leased.values())].sort();
    const key = holders.join(',');
    if (key === this.leasedLogged) return;
    this.leasedLogged = key;
    if (leased.size === 0) {
      this.deps.log.info('every collector of this exporter is pulled again: no other exporter holds one');
      return;
    }
    this.deps.log.info(
      { collectors: leased.size, holders, example: leased.keys().next().value },
      `${leased.size} collector(s) held by the pull lease of another exporter (${holders.join(', ')}): they are pulled here once that lease lapses (--pull-lease) or is released; if it stays, two exporters claim the same collectors (check --shard and --total-shards)`,
    );
  }

  /** Resolves once every push in flight settled, or at `deadline` (ms since the epoch). */
  private async settled(deadline: number): Promise<void> {
    await within(Promise.all([...this.pending]), deadline - this.clock.now(), this.clock);
  }

  /**
   * One round. Each collector goes through pull → enrich → push to every sink → ack on its own, at
   * most `pull-concurrency` at a time, so that only that many responses are in memory at once and
   * one slow or dead collector holds one slot, nobody else. Pushes run outside the pull slots, and
   * the round waits for them only until the next round is due: a slow sink keeps its pushes (and
   * the ack behind them) in flight into later rounds, which meanwhile feed the other sinks. Never
   * throws for a collector's or a sink's failure.
   */
  async runOnce(): Promise<RoundResult> {
    const { metrics, sinks } = this.deps;
    const began = performance.now();
    const now = this.clock.now();
    const clients = this.deps.discovery.current();
    metrics?.collectors.set(clients.length);
    // Listed collectors are remembered even while they fail to answer: their sinks' progress must
    // survive an outage, or batches one sink already took would be counted again when they return.
    for (const c of clients) {
      const st = this.states.get(c.id);
      if (st !== undefined) st.seen = now;
    }

    let pulled = 0;
    let flowCount = 0;
    let acked = 0;
    const busy = new Set<string>();
    const settling: Promise<void>[] = [];
    await forEachLimited(clients, this.config.pullConcurrency, async (client) => {
      const p = await this.pullOne(client, now);
      if (p === undefined) return;
      pulled++;
      const { state } = p;
      // From here to the pushes' start nothing awaits: which sinks take part is decided on the
      // same in-flight state the pushes then mark.
      const takers: number[] = [];
      for (let si = 0; si < sinks.length; si++) {
        if (state.inFlight[si] < 0) takers.push(si);
        else busy.add(sinks[si].name);
      }
      // Only what a taking sink lacks is enriched: a busy sink gets these batches in a later round.
      let floor = sinks.length === 0 ? state.acked : Number.POSITIVE_INFINITY;
      for (const si of takers) floor = Math.min(floor, state.delivered[si]);
      for (const b of p.batches) {
        if (b.seq <= floor) continue;
        const out: EnrichedFlow[] = [];
        this.deps.enricher.enrichBatch(b, p.node, out);
        p.seqs.push(b.seq);
        p.enriched.push(out);
        flowCount += out.length;
      }
      p.batches = [];
      // The end of what this pull covers: its last batch, or the last stretch (whose batches may all
      // have been dropped at the collector's bound: a sink then just moves past it).
      let top = p.seqs.length > 0 ? p.seqs[p.seqs.length - 1] : -1;
      if (p.segments !== undefined && p.segments.length > 0) {
        top = Math.max(top, p.segments[p.segments.length - 1].end);
      }
      let open = 0;
      let early: Cancel | undefined;
      const pushes = takers.map((si) => {
        if (top <= state.delivered[si]) return Promise.resolve();
        state.inFlight[si] = top;
        open++;
        return this.pushOne(sinks[si], si, p).finally(() => {
          state.inFlight[si] = -1;
          if (--open === 0) {
            early?.();
            return;
          }
          // A sink that is done while another is still busy reports its cursor soon (the ack
          // after all pushes carries it when they all settle within EARLY_CURSOR_MS): should this
          // process die before the slow one settles, the next must not give this sink the
          // batches again (a totals sink would count them twice).
          early ??= this.clock.setTimeout(() => {
            early = undefined;
            if (open > 0 && this.states.get(p.client.id) === state) this.track(this.ackOne(p, true));
          }, EARLY_CURSOR_MS);
        });
      });
      const settled = Promise.all(pushes).then(async () => {
        p.enriched = [];
        return this.ackOne(p);
      });
      this.track(settled);
      settling.push(
        settled.then((ok) => {
          if (ok) acked++;
        }),
      );
    });
    // Wait for this round's pushes until the next round is due; what is still running goes on.
    await within(Promise.all(settling), this.config.exportInterval - (this.clock.now() - now), this.clock);
    // One line per refusing sink and round, not one per collector.
    const failedSinks = this.report();
    if (busy.size > 0) {
      this.deps.log.debug(
        { sinks: [...busy] },
        'sink still busy with earlier pushes: its batches wait on the collectors',
      );
    }
    this.reportLeased();
    this.forget(now);
    metrics?.flows.inc(flowCount);
    this.rounds++;
    metrics?.cycleDuration.observe((performance.now() - began) / 1000);
    return {
      collectors: clients.length,
      pulled,
      flows: flowCount,
      failedSinks,
      busySinks: [...busy],
      acked,
    };
  }

  private track(p: Promise<unknown>): void {
    const done = p.catch(() => {}).finally(() => this.pending.delete(done));
    this.pending.add(done);
  }

  /** Pushes to sink `si` the batches of `p` it has not taken yet; records how far it got. */
  private async pushOne(sink: Sink, si: number, p: Pulled): Promise<void> {
    const { state } = p;
    if (p.segments !== undefined) {
      // One stretch at a time, oldest first; a refused one stops the sink here, so that it comes
      // again alone (same key) before anything newer.
      for (const seg of p.segments) {
        if (seg.end <= state.delivered[si]) continue;
        if (!(await this.pushRange(sink, si, p, seg.end, seg))) return;
      }
      return;
    }
    const cut = state.offered[si];
    const end = p.seqs.length > 0 ? p.seqs[p.seqs.length - 1] : -1;
    if (cut > state.delivered[si] && cut < end) {
      if (!(await this.pushRange(sink, si, p, cut))) return;
    }
    await this.pushRange(sink, si, p, end);
  }

  /**
   * Pushes the batches of `p` after the sink's delivered seq, up to seq `upTo`. True when the sink
   * took them (or there were none). With `seg` (upTo is its end), the push is keyed by the
   * stretch's edges and the sink counts as having everything up to its end.
   */
  private async pushRange(sink: Sink, si: number, p: Pulled, upTo: number, seg?: Segment): Promise<boolean> {
    const { state } = p;
    const delivered = state.delivered[si];
    let first = -1;
    let last = -1;
    let n = 0;
    for (let i = 0; i < p.seqs.length; i++) {
      const seq = p.seqs[i];
      if (seq <= delivered || seq > upTo) continue;
      if (first < 0) first = i;
      last = seq;
      n += p.enriched[i].length;
    }
    if (last < 0) {
      // Nothing left in the stretch (its flows were dropped at the collector's bound): done with it.
      if (seg !== undefined && state.delivered[si] < seg.end) {
        state.delivered[si] = seg.end;
        if (state.durable[si] < seg.end) state.durable[si] = seg.end;
      }
      return true;
    }
    if (seg !== undefined) last = seg.end;
    let flows: EnrichedFlow[];
    if (n === p.enriched[first].length) {
      flows = p.enriched[first];
    } else {
      flows = new Array<EnrichedFlow>(n);
      let k = 0;
      for (let i = first; i < p.seqs.length && p.seqs[i] <= last; i++) {
        const part = p.enriched[i];
        for (let j = 0; j < part.length; j++) flows[k++] = part[j];
      }
    }
    // The id names the range by its edges, both pull boundaries the collector never merges across:
    // the same range offered again gets the same id (the HTTP sink's Idempotency-Key) even when
    // batches inside it were merged meanwhile. A stretch's edges come from the collector's view
    // alone, the same for every exporter process; without them, from what this process delivered.
    const start = seg !== undefined ? seg.start : delivered + 1;
    const id = createHash('sha256')
      .update(`${p.client.id} ${state.bootId} ${start}-${last}`)
      .digest('hex')
      .slice(0, 32);
    try {
      await sink.push(flows, { id });
      this.deps.metrics?.sinkPushes.inc({ sink: sink.name });
      this.repeated.recovered(`sink ${sink.name}`, { sink: sink.name }, 'sink takes batches again');
      if (state.delivered[si] < last) state.delivered[si] = last;
      this.whenDurable(sink, si, p, last);
      return true;
    } catch (err) {
      if (state.offered[si] < last) state.offered[si] = last;
      const f = this.failures.get(sink.name) ?? { collectors: 0, flows: 0, err };
      f.collectors++;
      f.flows += flows.length;
      this.failures.set(sink.name, f);
      this.deps.metrics?.sinkFailures.inc({ sink: sink.name });
      return false;
    }
  }

  /**
   * Records that sink `si` holds everything of `p` up to `last` for good: at once for most sinks,
   * at the sink's word for those that say (Prometheus: a scrape served it), and then the collector
   * is told (an ack with the sink's cursor, and the ack itself when every sink has it).
   */
  private whenDurable(sink: Sink, si: number, p: Pulled, last: number): void {
    const { state } = p;
    let later = false;
    const mark = () => {
      if (state.durable[si] < last) state.durable[si] = last;
      // Told now only when the pushes' own ack has gone by already.
      if (later && this.states.get(p.client.id) === state) this.track(this.ackOne(p));
    };
    if (sink.onDurable === undefined) mark();
    else sink.onDurable(mark);
    later = true;
  }

  private async pullOne(client: CollectorClient, now: number): Promise<Pulled | undefined> {
    const { log, metrics } = this.deps;
    const began = performance.now();
    let res: PullResponse;
    try {
      res = await withTimeout(client.pull(this.abort.signal), this.config.pullTimeout, this.clock);
    } catch (err) {
      const reason = err instanceof PullError ? err.reason : 'network';
      metrics?.pullErrors.inc({ collector: client.id, reason });
      // Another exporter holding the collector (a rollout, a reshard, a shard misconfigured): one
      // line for all such collectors after the round (reportLeased), not one per collector.
      if (reason === 'leased') {
        this.leased.set(client.id, (err as PullError).holder ?? 'unknown');
        log.debug({ err, collector: client.id }, 'collector leased by another exporter');
      } else {
        this.repeated.failing(
          `pull ${client.id}`,
          causeOf(err),
          { err, collector: client.id, reason },
          'pull failed: collector skipped this round (repeats of the same cause are logged at debug)',
        );
      }
      return undefined;
    }
    this.repeated.recovered(`pull ${client.id}`, { collector: client.id }, 'pull works again');
    metrics?.pullDuration.observe((performance.now() - began) / 1000);
    metrics?.pulls.inc({ collector: client.id });

    let state = this.states.get(client.id);
    if (state === undefined || state.bootId !== res.bootId) {
      if (state !== undefined) {
        log.info({ collector: client.id, bootId: res.bootId }, 'collector restarted: sequence starts over');
      }
      state = {
        bootId: res.bootId,
        acked: -1,
        delivered: this.deps.sinks.map(() => -1),
        durable: this.deps.sinks.map(() => -1),
        reported: this.deps.sinks.map(() => -1),
        inFlight: this.deps.sinks.map(() => -1),
        offered: this.deps.sinks.map(() => -1),
        seen: now,
      };
      this.states.set(client.id, state);
    }
    state.seen = now;
    // What each sink took for good, as the collector keeps it: after a restart or a takeover this
    // process knew nothing of it, and a sink must not be given again what it already counted.
    if (res.cursors !== undefined) {
      for (let si = 0; si < this.deps.sinks.length; si++) {
        const at = res.cursors[this.deps.sinks[si].name];
        if (at === undefined) continue;
        if (state.delivered[si] < at) state.delivered[si] = at;
        if (state.durable[si] < at) state.durable[si] = at;
        if (state.reported[si] < at) state.reported[si] = at;
      }
    }
    const floor = this.deps.sinks.length === 0 ? state.acked : Math.min(...state.delivered);
    const batches: FlowBatch[] = [];
    let duplicates = 0;
    for (const b of res.batches) {
      // At or below the floor every sink has it: re-offered because an ack was lost.
      if (b.seq > floor) batches.push(b);
      else duplicates++;
    }
    if (duplicates > 0) metrics?.duplicateBatches.inc({ collector: client.id }, duplicates);
    const segments = segmentsOf(res);
    // Let go of the response now that its batches are ours: promises of the pull that waited in the
    // old generation still point at it until the next full collection, so a response kept reachable
    // through them is promoted whole (1–3 MB per pull, ~100 MB per round at 200 collectors with
    // pull-concurrency > 1; see exporter/pull.ts).
    res.batches = [];
    return {
      client,
      state,
      node: res.node,
      batches,
      seqs: [],
      enriched: [],
      segments,
    };
  }

  /**
   * Acknowledges up to the lowest seq every sink holds for good, and reports how far each sink got
   * beyond that (cursors). True when batches were acknowledged.
   */
  private async ackOne(p: Pulled, cursorsOnly = false): Promise<boolean> {
    const { metrics, sinks } = this.deps;
    const { state } = p;
    let target = sinks.length === 0 ? -1 : Math.min(...state.durable);
    if (sinks.length === 0) for (const seq of p.seqs) target = Math.max(target, seq);
    // Reporting one sink's progress while others are busy acknowledges nothing: that is for the
    // ack after every push of the round settled.
    if (cursorsOnly) target = Math.min(target, state.acked);
    const seq = Math.max(target, state.acked, 0);
    let cursors: Record<string, number> | undefined;
    let moved = false;
    const sent = state.durable.slice();
    for (let si = 0; si < sinks.length; si++) {
      if (sent[si] > state.reported[si]) moved = true;
      if (sent[si] > seq) {
        cursors ??= {};
        cursors[sinks[si].name] = sent[si];
      }
    }
    if (target <= state.acked && !moved) return false;
    try {
      await p.client.ack(state.bootId, seq, this.ackAbort.signal, cursors);
      for (let si = 0; si < sinks.length; si++) {
        if (state.reported[si] < sent[si]) state.reported[si] = sent[si];
      }
      metrics?.acks.inc({ result: 'ok' });
      this.repeated.recovered(`ack ${p.client.id}`, { collector: p.client.id }, 'ack works again');
      // Pushes of several rounds may ack one collector at once: the ack only moves forward. An ack
      // that only moved cursors acknowledged no batch.
      if (state.acked >= target) return false;
      state.acked = target;
      return true;
    } catch (err) {
      metrics?.acks.inc({ result: 'error' });
      const reason = err instanceof PullError ? err.reason : 'network';
      metrics?.pullErrors.inc({ collector: p.client.id, reason });
      if (reason === 'boot') {
        // The collector restarted between pull and ack: what it had is gone, its new boot starts over
        // (unless a later pull already met the new boot: that state stays).
        if (this.states.get(p.client.id) === state) this.states.delete(p.client.id);
      }
      this.repeated.failing(
        `ack ${p.client.id}`,
        causeOf(err),
        { err, collector: p.client.id },
        'ack failed: batches come again and are skipped',
      );
      return false;
    }
  }

  private forget(now: number): void {
    for (const [id, s] of this.states) if (now - s.seen > FORGET_AFTER_MS) this.states.delete(id);
  }
}

/**
 * The collector's pull-boundary stretches over the batches of `res`, or undefined without
 * boundaries. The first starts after the collector's acknowledged seq (or at its first batch when
 * it does not say); batches above the last boundary (none normally: the pull's own boundary is
 * last) form a final stretch.
 */
function segmentsOf(res: PullResponse): Segment[] | undefined {
  if (res.boundaries === undefined) return undefined;
  const out: Segment[] = [];
  const n = res.batches.length;
  if (n === 0) return out;
  const top = res.batches[n - 1].seq;
  let start = res.acked !== undefined ? res.acked + 1 : res.batches[0].seq;
  if (start > res.batches[0].seq) start = res.batches[0].seq;
  for (const b of res.boundaries) {
    if (b < start) continue;
    if (b >= top) break;
    out.push({ start, end: b });
    start = b + 1;
  }
  out.push({ start, end: top });
  return out;
}

function withTimeout<T>(p: Promise<T>, ms: number, clock: Clock): Promise<T> {
  let cancel: Cancel | undefined;
  const expired = new Promise<never>((_, reject) => {
    cancel = clock.setTimeout(() => reject(new PullError('timeout', `pull: no answer within ${ms}ms`)), ms);
  });
  return Promise.race([p, expired]).finally(() => cancel?.());
}

/** Runs `fn` over `items` with at most `limit` at once. */
async function forEachLimited<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

export interface ExportGraph {
  pipeline: Pipeline;
  prometheus: PrometheusSink;
  http?: HttpSink;
  /** The sinks of the `sinks:` map, in the file's order. */
  named: Sink[];
  /** The built-in view's recent rounds (`--view`). */
  view?: TrafficRing;
  metrics: ExporterMetrics;
}

export interface ExportGraphDeps {
  discovery: CollectorDiscovery;
  /** Kubernetes view; empty when there is no API server. */
  cluster?: ClusterLookup;
  registry: Registry;
  log: Logger;
  env?: NodeJS.ProcessEnv;
  /** `--destinations-file`, loaded by the caller (exporter/destinations.ts loadDestinations). */
  destinations?: Destinations;
  /** The one clock of every stage of the graph (rounds, sinks' retries and sweeps, the view). @default systemClock */
  clock?: Clock;
}

/**
 * The whole export side from the configuration: enrich → Prometheus sink (always), HTTP sink
 * (with --http-sink-url), the sinks of the `sinks:` map and the built-in view's ring (with --view, the default). Used by `podflow exporter` (HTTP collectors) and `podflow standalone`
 * (one in-process collector client). No I/O until `pipeline.start()`.
 */
export function createExportGraph(config: Config, deps: ExportGraphDeps): ExportGraph {
  const metrics = new ExporterMetrics(deps.registry);
  const enricher = new Enricher(
    { groupPublicIps: config.groupPublicIps, cloud: config.cloud, prices: config.prices },
    {
      cluster: deps.cluster ?? emptyClusterLookup,
      log: deps.log.child({ stage: 'enrich' }),
      destinations: deps.destinations,
    },
  );
  if (config.cloud !== 'auto') {
    deps.log.info({ preset: config.cloud, perGiB: enricher.prices().perGiB }, 'price table');
  }
  if (deps.destinations !== undefined) {
    deps.log.info(
      { file: config.destinationsFile, ranges: deps.destinations.size },
      'destination ranges loaded',
    );
  }
  const series = {
    metricsPrefix: config.metricsPrefix,
    metricsLabels: config.metricsLabels,
    metricsTtl: config.metricsTtl,
    metricsPodIps: config.metricsPodIps,
    maxSeries: config.metricsMaxSeries,
    clusterName: config.clusterName,
  };
  const clock = deps.clock ?? systemClock;
  const prometheus = new PrometheusSink(
    series,
    { registry: deps.registry, metrics, log: deps.log.child({ stage: 'prometheus' }) },
    clock,
  );
  const sinks: Sink[] = [prometheus];
  let http: HttpSink | undefined;
  if (config.httpSinkUrl !== undefined) {
    http = new HttpSink(
      {
        httpSinkUrl: config.httpSinkUrl,
        httpSinkGzip: config.httpSinkGzip,
        httpSinkHeaders: config.httpSinkHeaders,
        httpSinkTimeout: config.httpSinkTimeout,
        httpSinkMaxRetries: config.httpSinkMaxRetries,
        httpSinkQueueMax: config.httpSinkQueueMax,
        httpSinkBatchMax: config.httpSinkBatchMax,
        encoding: ndjson({ cluster: config.clusterName }),
      },
      {
        log: deps.log.child({ stage: 'http-sink' }),
        metrics,
        env: deps.env,
        price: (f) => enricher.costOf(f),
      },
      clock,
    );
    sinks.push(http);
  }
  const named = (config.sinks ?? []).map((spec) =>
    namedSink(spec, series, { log: deps.log.child({ stage: 'sink', sink: spec.name }), metrics }, clock),
  );
  sinks.push(...named);
  // The view takes every push at once and never holds an ack back: it only keeps recent rounds.
  const view = config.view
    ? new TrafficRing({ exportInterval: config.exportInterval, clusterName: config.clusterName }, clock)
    : undefined;
  if (view !== undefined) sinks.push(view);
  const pipeline = new Pipeline(
    {
      exportInterval: config.exportInterval,
      pullConcurrency: config.pullConcurrency,
      pullTimeout: config.pullTimeout,
    },
    { discovery: deps.discovery, enricher, sinks, log: deps.log.child({ stage: 'pipeline' }), metrics },
    clock,
  );
  return { pipeline, prometheus, http, named, view, metrics };
}

/** One sink of the `sinks:` map: a record sink (HTTP delivery of records) or a totals sink. */
function namedSink(
  spec: SinkConfig,
  series: PrometheusSinkConfig,
  deps: { log: Logger; metrics: ExporterMetrics },
  clock: Clock,
): Sink {
  const cluster = series.clusterName;
  if (spec.kind === 'prom_remote_write' || spec.kind === 'otlp_metrics') {
    const encoding =
      spec.kind === 'prom_remote_write' ? remoteWrite(spec.labels) : otlpMetrics({ ...spec, cluster });
    return new TotalsSink({ ...spec, series }, encoding, deps, clock);
  }
  let encoding: RecordEncoding;
  if (spec.kind === 'loki') encoding = loki({ ...spec, cluster });
  else if (spec.kind === 'otlp_logs') encoding = otlpLogs({ ...spec, cluster });
  else if (spec.encoding === 'protobuf') encoding = egressdProtobuf();
  else encoding = ndjson({ fields: spec.fields, omitEmpty: spec.omitEmpty, cluster });
  return new HttpSink(
    {
      name: spec.name,
      httpSinkUrl: spec.url,
      method: spec.kind === 'http' ? spec.method : 'POST',
      httpSinkGzip: spec.gzip,
      httpSinkHeaders: spec.headers,
      headersExpanded: true,
      httpSinkTimeout: spec.timeout,
      httpSinkMaxRetries: spec.maxRetries,
      httpSinkQueueMax: spec.queueMax,
      httpSinkBatchMax: spec.batchMax,
      encoding,
    },
    deps,
    clock,
  );
}
