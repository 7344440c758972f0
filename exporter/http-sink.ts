// HTTP record sink: sends enriched flows as records, one per flow and interval: NDJSON (CONTRACT.md
// "HTTP log sink records"), egressd's PodNetworkMetricBatch, Loki pushes or OTLP logs, as the
// encoding it is given says (exporter/encodings.ts). `--http-sink-url` is one of these, and so is every
// `http`, `loki` and `otlp_logs` entry of the `sinks:` map, each with its own queue and retries.
//
// push() resolves only when every request of the push was answered 2xx, or answered as malformed
// (400, 422, 413 for a lone record: dropped, counted and logged once per status, so that one
// poisonous record cannot stall acknowledgement forever). Every other answer keeps the records:
// 413 halves the request, 401/403/404/408/429/5xx and network errors are retried with backoff, and
// when retries are exhausted push() rejects. It also rejects when the queue has no room and on
// shutdown. A rejected push is not acknowledged to the collector: the same collector batches come
// again in a later round under the same Idempotency-Key. push() settles only once no request of it
// is queued or in flight, so the pipeline never has the same records in flight twice.
import { randomUUID } from 'node:crypto';
import { promisify } from 'node:util';
import { gzip as gzipCb } from 'node:zlib';
import { type Clock, systemClock } from '../shared/clock.js';
import type { EnrichedFlow } from '../shared/flow.js';
import type { Logger } from '../shared/log.js';
import { within } from '../shared/sleep.js';
import { Delivery, requestHeaders } from './delivery.js';
import { ndjson, type RecordEncoding, toRecord } from './encodings.js';
import type { ExporterMetrics } from './metrics.js';
import type { PushInfo, Sink } from './sink.js';

export { parseRetryAfter } from './delivery.js';
export { toRecord };

const gzip = promisify(gzipCb);

export interface HttpSinkConfig {
  httpSinkUrl: string;
  httpSinkGzip: boolean;
  /** Values may hold ${ENV}, expanded once at construction. */
  httpSinkHeaders: Record<string, string>;
  /** One POST, ms. */
  httpSinkTimeout: number;
  httpSinkMaxRetries: number;
  httpSinkQueueMax: number;
  httpSinkBatchMax: number;
  /** First retry delay, ms (doubles each retry, with jitter). @default 500 */
  retryBaseMs?: number;
  /** Longest wait between retries, also the cap on Retry-After, ms. @default 60000 */
  retryMaxMs?: number;
  /** The sink's name: its cursor on the collectors, its `sink` label. @default 'http' */
  name?: string;
  /** @default 'POST' */
  method?: string;
  /** How flows become a request body. @default NDJSON records */
  encoding?: RecordEncoding;
  /** The header values are expanded already (the `sinks:` map is, at load). @default false */
  headersExpanded?: boolean;
}

export interface HttpSinkDeps {
  log: Logger;
  metrics?: ExporterMetrics;
  env?: NodeJS.ProcessEnv;
  /** The cost of a record from its bytes (Enricher.costOf), for records summed over a push (partsOf). */
  price?: (f: EnrichedFlow) => number;
}

/**
 * The requests of one push, at most `max` records each. A push that fits is sent as it came. A
 * larger one is first summed per flow (source, destination, protocol) over the whole push, sorted by
 * that key and cut every `max` keys: request `n` then holds the same flows with the same totals
 * however the collector merged the batches of that push between two offers (merging sums per flow,
 * and keeps the flow set and the time span). So a request that a receiver took under key `id-n`
 * before an outage or a restart means exactly the same bytes when offered again; cut by position, a
 * merge would have moved flows from one request into another under the same keys. The summed
 * records span the whole push (`ts` its end, `interval_seconds` its length).
 *
 * `price` gives a summed record its cost from its summed bytes. Summing the costs would do in
 * arithmetic, not in floating point: the same bytes merged by the collector first are priced once
 * from their sum, and a request offered again must carry the very same number.
 */
export function partsOf(
  flows: readonly EnrichedFlow[],
  max: number,
  price?: (f: EnrichedFlow) => number,
): (readonly EnrichedFlow[])[] {
  if (flows.length <= max) return [flows];
  const byKey = new Map<string, EnrichedFlow>();
  let from = Number.POSITIVE_INFINITY;
  let to = Number.NEGATIVE_INFINITY;
  for (const f of flows) {
    from = Math.min(from, f.ts - f.intervalSeconds * 1000);
    to = Math.max(to, f.ts);
    const k = `${f.srcIp}\u0000${f.dstIp}\u0000${f.proto}`;
    const seen = byKey.get(k);
    if (seen === undefined) {
      byKey.set(k, { ...f });
    } else {
      seen.txBytes += f.txBytes;
      seen.rxBytes += f.rxBytes;
      seen.txPackets += f.txPackets;
      seen.rxPackets += f.rxPackets;
      seen.cost = price === undefined ? seen.cost + f.cost : price(seen);
    }
  }
  const keys = [...byKey.keys()].sort();
  const parts: EnrichedFlow[][] = [];
  for (let i = 0; i < keys.length; i += max) {
    parts.push(
      keys.slice(i, i + max).map((k) => {
        const f = byKey.get(k)!;
        f.ts = to;
        f.intervalSeconds = (to - from) / 1000;
        return f;
      }),
    );
  }
  return parts;
}

/** Expands ${NAME} from `env`; an unset variable is a start-up error naming it. */
export function expandHeaders(
  headers: Record<string, string>,
  env: NodeJS.ProcessEnv,
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    out[name] = value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, v: string) => {
      const got = env[v];
      if (got === undefined) {
        throw new Error(`--http-sink-headers: header ${name} uses \${${v}} but ${v} is not set`);
      }
      return got;
    });
  }
  return out;
}

/** How a receiver's answer is handled (docs/exporter.md, "Answers"). */
type Outcome =
  | { kind: 'taken' }
  /** 413 for more than one record: sent again as two halves. */
  | { kind: 'halve' }
  /** 400, 422, or 413 for a lone record: malformed for this receiver, dropped and counted. */
  | { kind: 'malformed'; status: number; said: string };

/** One push: settles once every request of it settled, so that nothing of it is still in flight. */
interface Push {
  open: number;
  error?: Error;
  resolve: () => void;
  reject: (err: Error) => void;
}

/** One request: the flows are made into records only when it is sent. */
interface Job {
  flows: readonly EnrichedFlow[];
  key: string;
  push: Push;
}

export class HttpSink implements Sink {
  readonly name: string;
  private readonly headers: Record<string, string>;
  private readonly encoding: RecordEncoding;
  private readonly delivery: Delivery;
  /** Requests in the queue, in send order. */
  private readonly jobs: Job[] = [];
  /**
   * Requests of the one push that did not fit the room left: they join the queue as it drains, and
   * while they wait no other push is taken, so that a stretch larger than the queue gets in.
   */
  private readonly waiting: Job[] = [];
  /** Records in the queue (waiting to be sent or in flight). */
  private queued = 0;
  private running = false;
  private closing = false;
  /** Statuses already logged as "malformed": a receiver refusing every batch logs once, not per batch. */
  private readonly logged = new Set<number>();
  /** Aborts the POST or backoff in progress at the shutdown deadline. */
  private readonly stop = new AbortController();
  private idle: Promise<void> = Promise.resolve();

  constructor(
    private readonly config: HttpSinkConfig,
    private readonly deps: HttpSinkDeps,
    private readonly clock: Clock = systemClock,
  ) {
    this.name = config.name ?? 'http';
    this.encoding = config.encoding ?? ndjson();
    const user = config.headersExpanded
      ? config.httpSinkHeaders
      : expandHeaders(config.httpSinkHeaders, deps.env ?? process.env);
    this.headers = requestHeaders(user, this.encoding.contentType, config.httpSinkGzip);
    this.delivery = new Delivery(
      {
        name: this.name,
        url: config.httpSinkUrl,
        method: config.method,
        timeout: config.httpSinkTimeout,
        maxRetries: config.httpSinkMaxRetries,
        retryBaseMs: config.retryBaseMs,
        retryMaxMs: config.retryMaxMs,
      },
      deps,
      clock,
    );
  }

  /** Records in the queue (waiting or in flight). */
  get queueSize(): number {
    return this.queued;
  }

  push(flows: readonly EnrichedFlow[], info?: PushInfo): Promise<void> {
    if (flows.length === 0) return Promise.resolve();
    if (this.closing) return Promise.reject(new Error(`${this.name} sink: shutting down`));
    const max = this.config.httpSinkQueueMax;
    // Taken when its first request fits the room left, or the queue is empty whatever its size
    // (the rest follows as the queue drains); refused otherwise, and offered again by the pipeline.
    // Refusing a stretch larger than the queue even into an empty queue would refuse it forever.
    const first = Math.min(flows.length, this.config.httpSinkBatchMax);
    if (this.waiting.length > 0 || (this.queued > 0 && this.queued + first > max)) {
      this.deps.metrics?.droppedRecords.inc({ sink: this.name, reason: 'queue_full' }, flows.length);
      const ahead = this.waiting.length > 0 ? ', a larger push is waiting for room' : '';
      return Promise.reject(
        new Error(
          `${this.name} sink: queue full (${this.queued} + ${first} records > http-sink-queue-max ${max}${ahead})`,
        ),
      );
    }
    const base = info?.id ?? randomUUID();
    const parts = partsOf(flows, this.config.httpSinkBatchMax, this.deps.price);
    return new Promise<void>((resolve, reject) => {
      const push: Push = { open: parts.length, resolve, reject };
      for (let part = 0; part < parts.length; part++) {
        this.waiting.push({ flows: parts[part], key: parts.length > 1 ? `${base}-${part}` : base, push });
      }
      this.admit();
      this.gauge();
      this.kick();
    });
  }

  async close(deadline: number): Promise<void> {
    this.closing = true;
    await within(this.idle, deadline - this.clock.now(), this.clock);
    if (this.jobs.length > 0 || this.waiting.length > 0 || this.running) {
      const records = this.queued + this.waiting.reduce((a, j) => a + j.flows.length, 0);
      this.deps.log.warn(
        { sink: this.name, records },
        `${this.name} sink: shutdown deadline reached, records not sent`,
      );
      this.stop.abort(new Error(`${this.name} sink: shutdown deadline reached`));
      await this.idle;
    }
  }

  private gauge(): void {
    this.deps.metrics?.queueRecords.set({ sink: this.name }, this.queued);
  }

  /** Moves waiting requests into the queue while they fit (the first always, into an empty queue). */
  private admit(): void {
    const max = this.config.httpSinkQueueMax;
    while (this.waiting.length > 0) {
      const job = this.waiting[0];
      if (this.queued > 0 && this.queued + job.flows.length > max) return;
      this.waiting.shift();
      this.jobs.push(job);
      this.queued += job.flows.length;
    }
  }

  private kick(): void {
    if (this.running) return;
    this.running = true;
    this.idle = this.drain();
  }

  /**
   * One POST at a time, in push order: the receiver sees records in interval order. `running` is
   * cleared in the same step that finds the queue empty: a push made as soon as the previous one
   * resolved starts a new drain instead of joining one that is about to end.
   */
  private async drain(): Promise<void> {
    for (;;) {
      this.admit();
      const job = this.jobs.shift();
      if (job === undefined) {
        this.running = false;
        return;
      }
      let failure: Error | undefined;
      try {
        if (this.stop.signal.aborted) throw this.stop.signal.reason as Error;
        const out = await this.send(job);
        if (out.kind === 'halve') {
          // Each half keeps a key of its own derived from the request's, and the halves are cut by
          // partsOf (summed per flow, sorted): offered again, the same request halves the same way.
          const halves = partsOf(job.flows, Math.ceil(job.flows.length / 2), this.deps.price);
          job.push.open += halves.length;
          this.jobs.unshift(...halves.map((flows, i) => ({ flows, key: `${job.key}.${i}`, push: job.push })));
          for (const h of halves) this.queued += h.length;
        } else if (out.kind === 'malformed') {
          this.drop(job, out.status, out.said);
        }
      } catch (err) {
        failure = err as Error;
      } finally {
        this.queued -= job.flows.length;
        this.gauge();
      }
      settle(job.push, failure);
    }
  }

  /** A request the receiver calls malformed: dropped, counted, logged once per status. */
  private drop(job: Job, status: number, said: string): void {
    const reason = status === 413 ? 'too_large' : 'rejected';
    this.deps.metrics?.droppedRecords.inc({ sink: this.name, reason }, job.flows.length);
    if (this.logged.has(status)) return;
    this.logged.add(status);
    this.deps.log.error(
      { sink: this.name, status, records: job.flows.length, key: job.key, answer: said },
      `${this.name} sink: receiver refused records as malformed (${status}): dropped, counted in podflow_exporter_dropped_records_total{reason="${reason}"}; further ${status} answers are not logged`,
    );
  }

  private async send(job: Job): Promise<Outcome> {
    if (this.stop.signal.aborted) throw this.stop.signal.reason as Error;
    const encoded = this.encoding.encode(job.flows);
    const body = this.config.httpSinkGzip ? await gzip(encoded) : Buffer.from(encoded);
    const headers = { ...this.headers, 'idempotency-key': job.key };
    const answer = await this.delivery.send(body, headers, this.stop.signal);
    if (answer.kind === 'too_large') {
      return job.flows.length > 1 ? { kind: 'halve' } : { kind: 'malformed', status: 413, said: answer.said };
    }
    return answer;
  }
}

/** One request of a push settled (with `err` when it failed): the push settles with its last one. */
function settle(push: Push, err: Error | undefined): void {
  if (err !== undefined && push.error === undefined) push.error = err;
  if (--push.open > 0) return;
  if (push.error !== undefined) push.reject(push.error);
  else push.resolve();
}
