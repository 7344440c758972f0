// Totals sink: pushes the flow counters' running totals to a receiver, as Prometheus remote write
// (`prom_remote_write` of the `sinks:` map) or as OTLP/HTTP metrics (`otlp_metrics`).
//
// The sink counts flows into the same series table as /metrics (a SeriesStore of its own, not
// scraped: same names, labels, --metrics-ttl and overflow), and sends CUMULATIVE
// samples: every write carries every live series' total at one timestamp, as a scrape would. So a
// retried request (the same body) or a write repeated after a lost answer changes nothing on the
// receiver, and a write that failed for good is made good by the next, which carries the same totals
// and more.
//
// push() resolves once a write taken by the receiver carried the push's flows; only then is the push
// safe from this process's death (the pipeline acknowledges the collectors after that). A receiver
// that is down keeps the write retrying with backoff, the same body each time, until it answers or
// the exporter shuts down: the pushes waiting on it stay in flight, their batches stay on the
// collectors, and what the sink holds meanwhile is the series table, not a queue of records (a
// totals sink's queue is bounded by its series). Writes go one at a time; pushes that arrive during
// one are carried by the next.
//
// A restarted exporter starts its totals at 0 and reads nothing back. Each series this process
// creates is sent first as a 0 one millisecond before its first total (remote write), or with its
// creation as start time (OTLP): to the receiver the restart is a counter reset at a known point, so
// increase() and rate() take the new totals whole, and the sum over the restart is exact (batches the
// old process had written are acknowledged; the others are counted by the new one).

import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import { ProtobufMetricsSerializer } from '@opentelemetry/otlp-transformer';
import { AggregationTemporality, DataPointType, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import protobuf from 'protobufjs/minimal.js';
import { compressSync } from 'snappy';
import { type Clock, systemClock } from '../shared/clock.js';
import type { EnrichedFlow } from '../shared/flow.js';
import type { Logger } from '../shared/log.js';
import { within } from '../shared/sleep.js';
import { Delivery, requestHeaders } from './delivery.js';
import { hrTime, type OtlpOptions, otlpResource } from './encodings.js';
import type { ExporterMetrics } from './metrics.js';
import { flowSchema } from './prometheus-families.js';
import { SeriesStore, type SeriesTotals } from './prometheus-series.js';
import type { PrometheusSinkConfig } from './prometheus-sink.js';
import type { Sink } from './sink.js';

export interface TotalsEncoding {
  contentType: string;
  /** Headers the format asks for (Content-Encoding: snappy, the protocol version). */
  headers?: Record<string, string>;
  /**
   * One request's body: series [from, to) of `t` at time `at` (ms). `fresh(s)`: the series was not in
   * any earlier write of this process.
   */
  encode(t: SeriesTotals, from: number, to: number, at: number, fresh: (s: number) => boolean): Uint8Array;
}

export interface TotalsSinkConfig {
  name: string;
  url: string;
  /** User headers, ${ENV} expanded. */
  headers: Record<string, string>;
  /** One request, ms. */
  timeout: number;
  gzip: boolean;
  /** Series per request. */
  batchMax: number;
  /** The series table's options: those of /metrics. */
  series: PrometheusSinkConfig;
  /** @default 500 */
  retryBaseMs?: number;
  /** @default 60000 */
  retryMaxMs?: number;
}

/** Pushes waiting for a write, and how they end. */
interface Waiter {
  resolve: () => void;
  reject: (err: Error) => void;
}

export class TotalsSink implements Sink {
  readonly name: string;
  private readonly table: SeriesStore;
  private readonly delivery: Delivery;
  private readonly headers: Record<string, string>;
  private waiters: Waiter[] = [];
  private running = false;
  private closing = false;
  private idle: Promise<void> = Promise.resolve();
  private readonly stop = new AbortController();
  /** Highest series serial an earlier write carried: series above it are new to the receiver. */
  private written = 0;
  /** Timestamp of the last write: each write's is later, also when the clock is not. */
  private lastAt = 0;
  /** Statuses already logged as refused, once each. */
  private readonly logged = new Set<number>();

  constructor(
    private readonly config: TotalsSinkConfig,
    private readonly encoding: TotalsEncoding,
    private readonly deps: { log: Logger; metrics?: ExporterMetrics },
    private readonly clock: Clock = systemClock,
  ) {
    this.name = config.name;
    this.table = new SeriesStore(flowSchema(config.series), config.series, deps.log);
    this.headers = {
      ...requestHeaders(config.headers, encoding.contentType, config.gzip),
      ...encoding.headers,
    };
    this.delivery = new Delivery(
      {
        name: config.name,
        url: config.url,
        timeout: config.timeout,
        // Totals are never given up for a receiver that is away: the push stays in flight instead.
        maxRetries: Number.POSITIVE_INFINITY,
        retryBaseMs: config.retryBaseMs,
        retryMaxMs: config.retryMaxMs,
      },
      deps,
      clock,
    );
  }

  async push(flows: readonly EnrichedFlow[]): Promise<void> {
    if (this.closing) throw new Error(`${this.name} sink: shutting down`);
    this.table.add(flows, this.clock.now());
    return new Promise<void>((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      if (!this.running) {
        this.running = true;
        this.idle = this.drain();
      }
    });
  }

  /** Series in the table (without the overflow series). */
  get seriesCount(): number {
    return this.table.count;
  }

  async close(deadline: number): Promise<void> {
    this.closing = true;
    await within(this.idle, deadline - this.clock.now(), this.clock);
    if (this.running) {
      this.deps.log.warn(
        { sink: this.name },
        `${this.name} sink: shutdown deadline reached, totals not written`,
      );
      this.stop.abort(new Error(`${this.name} sink: shutdown deadline reached`));
      await this.idle;
    }
  }

  /** Writes while pushes wait; each write settles the pushes that were counted before it began. */
  private async drain(): Promise<void> {
    while (this.waiters.length > 0) {
      const batch = this.waiters;
      this.waiters = [];
      try {
        await this.write();
        for (const w of batch) w.resolve();
      } catch (err) {
        for (const w of [...batch, ...this.waiters.splice(0)]) w.reject(err as Error);
      }
    }
    this.running = false;
  }

  /** One write: every live series at one timestamp, `batchMax` series per request, in order. */
  private async write(): Promise<void> {
    const t = this.table.totals();
    const at = Math.max(Math.floor(this.clock.now()), this.lastAt + 2);
    const since = this.written;
    const fresh = (s: number) => t.serials[s] > since;
    const ranges: [number, number][] = [];
    for (let from = 0; from < t.count; from += this.config.batchMax) {
      ranges.push([from, Math.min(t.count, from + this.config.batchMax)]);
    }
    while (ranges.length > 0) {
      if (this.stop.signal.aborted) throw this.stop.signal.reason as Error;
      const [from, to] = ranges.shift()!;
      const raw = this.encoding.encode(t, from, to, at, fresh);
      const body = this.config.gzip
        ? await gzipAsync(raw)
        : Buffer.from(raw.buffer, raw.byteOffset, raw.length);
      const answer = await this.delivery.send(body, this.headers, this.stop.signal);
      if (answer.kind === 'too_large' && to - from > 1) {
        const mid = from + Math.ceil((to - from) / 2);
        ranges.unshift([from, mid], [mid, to]);
      } else if (answer.kind !== 'taken') {
        this.refused(answer.kind === 'too_large' ? 413 : answer.status, answer.said, to - from);
      }
    }
    this.written = t.serial;
    this.lastAt = at;
  }

  /**
   * A request the receiver calls malformed (400, 422; 413 for one series): not sent again. Its totals
   * are not lost: the next write carries them. Counted, and logged once per status.
   */
  private refused(status: number, said: string, series: number): void {
    const reason = status === 413 ? 'too_large' : 'rejected';
    this.deps.metrics?.droppedRecords.inc({ sink: this.name, reason }, series);
    if (this.logged.has(status)) return;
    this.logged.add(status);
    this.deps.log.error(
      { sink: this.name, status, series, answer: said },
      `${this.name} sink: receiver refused a write (${status}); the next write carries the same totals; further ${status} answers are not logged`,
    );
  }
}

const gzipAsync = promisify(gzip);

/** Label names of a write in the order remote write wants them (sorted), and where each value is from. */
interface LabelPlan {
  name: string;
  /** Index into the series' flow labels, or -1 for a static label, -2 for __name__. */
  j: number;
  value?: string;
}

function plan(t: SeriesTotals, statics: Readonly<Record<string, string>>): LabelPlan[] {
  const out: LabelPlan[] = [{ name: '__name__', j: -2 }];
  t.labels.forEach((name, j) => {
    out.push({ name, j });
  });
  for (const [name, value] of Object.entries(statics)) out.push({ name, j: -1, value });
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/**
 * Prometheus remote write 1.0: a snappy-compressed `prometheus.WriteRequest` (prompb/remote.proto,
 * types.proto), written field by field with protobufjs's Writer. Labels sorted by name, empty ones
 * left out (as a scrape stores them), static `labels` added to every series. A series new to the
 * receiver gets a 0 sample 1 ms before its first total.
 */
export function remoteWrite(statics: Readonly<Record<string, string>>): TotalsEncoding {
  let cached: { t: SeriesTotals; plan: LabelPlan[] } | undefined;
  return {
    contentType: 'application/x-protobuf',
    headers: { 'content-encoding': 'snappy', 'x-prometheus-remote-write-version': '0.1.0' },
    encode(t, from, to, at, fresh) {
      if (cached?.t !== t) cached = { t, plan: plan(t, statics) };
      const labels = cached.plan;
      const n = t.labels.length;
      const w = protobuf.Writer.create();
      for (const fam of t.families) {
        for (let s = from; s < to; s++) {
          w.uint32((1 << 3) | 2).fork(); // timeseries
          for (const l of labels) {
            const value = l.j === -2 ? fam.name : l.j === -1 ? l.value! : t.values[l.j][t.ids[s * n + l.j]];
            if (value === '') continue;
            w.uint32((1 << 3) | 2).fork(); // labels
            w.uint32((1 << 3) | 2).string(l.name);
            w.uint32((2 << 3) | 2).string(value);
            w.ldelim();
          }
          if (fresh(s)) sample(w, 0, at - 1);
          sample(w, t.counts[s * t.perSeries + fam.k], at);
          w.ldelim();
        }
      }
      if (from === 0) {
        // metadata = 3: the counters' type and help, as a scrape would give them.
        for (const fam of t.families) {
          w.uint32((3 << 3) | 2).fork();
          w.uint32(1 << 3).int32(1); // COUNTER
          w.uint32((2 << 3) | 2).string(fam.name);
          w.uint32((4 << 3) | 2).string(fam.help);
          w.ldelim();
        }
      }
      return compressSync(Buffer.from(w.finish()));
    },
  };
}

function sample(w: protobuf.Writer, value: number, at: number): void {
  w.uint32((2 << 3) | 2).fork(); // samples
  w.uint32((1 << 3) | 1).double(value);
  w.uint32(2 << 3).int64(at);
  w.ldelim();
}

/**
 * OTLP/HTTP metrics (protobuf), made by the OpenTelemetry JS serializer: each counter a monotonic
 * cumulative Sum, each series a data point with its labels as attributes (empty ones left out) and
 * its creation as start time, so that a restart (a new start time) reads as a reset.
 */
export function otlpMetrics(opts: OtlpOptions): TotalsEncoding {
  const { resource, scope } = otlpResource(opts);
  return {
    contentType: 'application/x-protobuf',
    encode(t, from, to, at) {
      const n = t.labels.length;
      const end = hrTime(at);
      const request: ResourceMetrics = {
        resource,
        scopeMetrics: [
          {
            scope,
            metrics: t.families.map((fam) => ({
              descriptor: {
                name: fam.name,
                description: fam.help,
                unit: fam.name.includes('_bytes_') ? 'By' : '1',
                valueType: 1, // DOUBLE
              },
              aggregationTemporality: AggregationTemporality.CUMULATIVE,
              dataPointType: DataPointType.SUM,
              isMonotonic: true,
              dataPoints: Array.from({ length: to - from }, (_, i) => {
                const s = from + i;
                const attributes: Record<string, string> = {};
                for (let j = 0; j < n; j++) {
                  const v = t.values[j][t.ids[s * n + j]];
                  if (v !== '') attributes[t.labels[j]] = v;
                }
                return {
                  startTime: hrTime(Math.floor(t.born[s])),
                  endTime: end,
                  attributes,
                  value: t.counts[s * t.perSeries + fam.k],
                };
              }),
            })),
          },
        ],
      };
      return ProtobufMetricsSerializer.serializeRequest(request) ?? new Uint8Array();
    },
  };
}
