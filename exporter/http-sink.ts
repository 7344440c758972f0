// HTTP log sink: POSTs enriched flows as NDJSON records (CONTRACT.md "HTTP log sink records").
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
import type { EnrichedFlow } from '../shared/flow.js';
import { causeOf, type Logger, OncePerCause } from '../shared/log.js';
import type { ExporterMetrics } from './metrics.js';
import type { PushInfo, Sink } from './sink.js';

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
  /** `cluster-name`: the `cluster` field of every record; none when unset. */
  clusterName?: string;
  /** First retry delay, ms (doubles each retry, with jitter). @default 500 */
  retryBaseMs?: number;
  /** Longest wait between retries, also the cap on Retry-After, ms. @default 60000 */
  retryMaxMs?: number;
}

export interface HttpSinkDeps {
  log: Logger;
  metrics?: ExporterMetrics;
  env?: NodeJS.ProcessEnv;
}

/** One snake_case NDJSON record. Field order is the contract's; `cluster` only when set. */
export function toRecord(f: EnrichedFlow, cluster?: string): string {
  return JSON.stringify({
    ts: new Date(f.ts).toISOString(),
    interval_seconds: f.intervalSeconds,
    ...(cluster !== undefined ? { cluster } : undefined),
    src_ip: f.srcIp,
    src_pod: f.srcPod,
    src_namespace: f.srcNamespace,
    src_workload: f.srcWorkload,
    src_node: f.srcNode,
    src_zone: f.srcZone,
    dst_ip: f.dstIp,
    dst_pod: f.dstPod,
    dst_namespace: f.dstNamespace,
    dst_workload: f.dstWorkload,
    dst_node: f.dstNode,
    dst_zone: f.dstZone,
    dst_dns_name: f.dstDnsName,
    dst_type: f.dstType,
    cross_zone: f.crossZone,
    proto: f.proto,
    tx_bytes: f.txBytes,
    rx_bytes: f.rxBytes,
    tx_packets: f.txPackets,
    rx_packets: f.rxPackets,
  });
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
 */
export function partsOf(flows: readonly EnrichedFlow[], max: number): (readonly EnrichedFlow[])[] {
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

/** Retry-After as delay in ms: delta-seconds or an HTTP date; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | null, now: number): number | undefined {
  if (value === null) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  // An HTTP date names a weekday and a month; Date.parse alone would take "-5" for a year.
  if (!/^[A-Za-z]{3},/.test(v)) return undefined;
  const at = Date.parse(v);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - now);
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
  readonly name = 'http';
  private readonly headers: Record<string, string>;
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
  /** Retries for the same cause (a receiver down for an hour): one warning, then debug. */
  private readonly retries: OncePerCause;
  /** Aborts the POST or backoff in progress at the shutdown deadline. */
  private readonly stop = new AbortController();
  private idle: Promise<void> = Promise.resolve();

  constructor(
    private readonly config: HttpSinkConfig,
    private readonly deps: HttpSinkDeps,
    private readonly clock: () => number = Date.now,
  ) {
    this.headers = {
      ...expandHeaders(config.httpSinkHeaders, deps.env ?? process.env),
      'content-type': 'application/x-ndjson',
    };
    if (config.httpSinkGzip) this.headers['content-encoding'] = 'gzip';
    this.retries = new OncePerCause(deps.log);
  }

  /** Records in the queue (waiting or in flight). */
  get queueSize(): number {
    return this.queued;
  }

  push(flows: readonly EnrichedFlow[], info?: PushInfo): Promise<void> {
    if (flows.length === 0) return Promise.resolve();
    if (this.closing) return Promise.reject(new Error('http sink: shutting down'));
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
          `http sink: queue full (${this.queued} + ${first} records > http-sink-queue-max ${max}${ahead})`,
        ),
      );
    }
    const base = info?.id ?? randomUUID();
    const parts = partsOf(flows, this.config.httpSinkBatchMax);
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
    const left = deadline - this.clock();
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, Math.max(0, left));
      timer.unref();
    });
    await Promise.race([this.idle, expired]);
    clearTimeout(timer);
    if (this.jobs.length > 0 || this.waiting.length > 0 || this.running) {
      const records = this.queued + this.waiting.reduce((a, j) => a + j.flows.length, 0);
      this.deps.log.warn({ records }, 'http sink: shutdown deadline reached, records not sent');
      this.stop.abort(new Error('http sink: shutdown deadline reached'));
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
          const halves = partsOf(job.flows, Math.ceil(job.flows.length / 2));
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
      { status, records: job.flows.length, key: job.key, answer: said },
      `http sink: receiver refused records as malformed (${status}): dropped, counted in podflow_exporter_dropped_records_total{reason="${reason}"}; further ${status} answers are not logged`,
    );
  }

  private async send(job: Job): Promise<Outcome> {
    const cluster = this.config.clusterName;
    const text = `${job.flows.map((f) => toRecord(f, cluster)).join('\n')}\n`;
    const body = this.config.httpSinkGzip ? await gzip(text) : Buffer.from(text);
    const headers = { ...this.headers, 'idempotency-key': job.key };
    const maxRetries = this.config.httpSinkMaxRetries;
    const base = this.config.retryBaseMs ?? 500;
    const cap = this.config.retryMaxMs ?? 60_000;
    let lastError: Error = new Error('http sink: not sent');
    for (let attempt = 0; attempt <= maxRetries; attempt++) {
      let wait: number | undefined;
      const timeout = AbortSignal.timeout(this.config.httpSinkTimeout);
      try {
        const res = await fetch(this.config.httpSinkUrl, {
          method: 'POST',
          headers,
          body,
          signal: AbortSignal.any([timeout, this.stop.signal]),
        });
        this.deps.metrics?.httpRequests.inc({ code: String(res.status) });
        if (res.status >= 200 && res.status < 300) {
          await res.body?.cancel().catch(() => {});
          this.retries.recovered(
            'post',
            { url: this.config.httpSinkUrl },
            'http sink: receiver takes records again',
          );
          return { kind: 'taken' };
        }
        const said = await excerpt(res);
        // Only what the receiver calls malformed is given up. Everything else keeps the records:
        // 401/403 (a token being rotated), 404 (a receiver being redeployed), 408, 429, 5xx all
        // end, and dropping would lose records that the collectors were told are delivered.
        if (res.status === 400 || res.status === 422) return { kind: 'malformed', status: res.status, said };
        if (res.status === 413) {
          return job.flows.length > 1 ? { kind: 'halve' } : { kind: 'malformed', status: 413, said };
        }
        lastError = new Error(
          `http sink: ${this.config.httpSinkUrl} answered ${res.status}${said === '' ? '' : `: ${said}`}`,
        );
        wait = parseRetryAfter(res.headers.get('retry-after'), this.clock());
      } catch (err) {
        if (this.stop.signal.aborted) throw this.stop.signal.reason as Error;
        this.deps.metrics?.httpRequests.inc({ code: 'error' });
        const e = err as Error & { cause?: { code?: string } };
        const why = timeout.aborted ? 'timed out' : (e.cause?.code ?? e.message);
        lastError = new Error(`http sink: POST ${this.config.httpSinkUrl}: ${why}`, { cause: err });
      }
      if (attempt === maxRetries) break;
      // Full jitter over an exponential ceiling, so that many exporters do not retry in step.
      const backoff = Math.min(cap, base * 2 ** attempt);
      const delay = Math.min(cap, wait ?? backoff / 2 + Math.random() * (backoff / 2));
      this.retries.failing(
        'post',
        causeOf(lastError),
        { err: lastError.message, attempt: attempt + 1, delayMs: Math.round(delay) },
        'http sink: retrying (repeats of the same cause are logged at debug)',
      );
      await sleep(delay, this.stop.signal);
    }
    throw lastError;
  }
}

/** One request of a push settled (with `err` when it failed): the push settles with its last one. */
function settle(push: Push, err: Error | undefined): void {
  if (err !== undefined && push.error === undefined) push.error = err;
  if (--push.open > 0) return;
  if (push.error !== undefined) push.reject(push.error);
  else push.resolve();
}

/** The start of a response body, on one line, for the log: what the receiver said it disliked. */
async function excerpt(res: Response, max = 200): Promise<string> {
  if (res.body === null) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let n = 0;
  try {
    while (n < max * 4) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      n += value.length;
    }
  } catch {
    // A body cut short says less, not nothing: keep what arrived.
  } finally {
    await reader.cancel().catch(() => {});
  }
  const text = Buffer.concat(chunks).toString('utf8').replace(/\s+/g, ' ').trim();
  return text.length > max ? `${text.slice(0, max)}…` : text;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal.reason);
    };
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
