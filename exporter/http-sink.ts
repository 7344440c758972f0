// HTTP log sink: POSTs enriched flows as NDJSON records (CONTRACT.md "HTTP log sink records").
//
// push() resolves only when every record of the push was POSTed and answered 2xx (or answered a
// non-retryable 4xx: the receiver refused them for good; they are logged, counted and dropped, so
// that one poisonous batch cannot stall acknowledgement forever). It rejects when retries are
// exhausted, when the queue is full or on shutdown: the pipeline then does not acknowledge, and the
// same collector batches come again next round under the same Idempotency-Key.
import { randomUUID } from 'node:crypto';
import { promisify } from 'node:util';
import { gzip as gzipCb } from 'node:zlib';
import type { EnrichedFlow } from '../shared/flow.js';
import type { Logger } from '../shared/log.js';
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

/** One snake_case NDJSON record. Field order is the contract's. */
export function toRecord(f: EnrichedFlow): string {
  return JSON.stringify({
    ts: new Date(f.ts).toISOString(),
    interval_seconds: f.intervalSeconds,
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

class PermanentError extends Error {
  override name = 'PermanentError';
}

interface Job {
  records: string[];
  key: string;
  resolve: () => void;
  reject: (err: Error) => void;
}

export class HttpSink implements Sink {
  readonly name = 'http';
  private readonly headers: Record<string, string>;
  private readonly jobs: Job[] = [];
  private queued = 0;
  private running = false;
  private closing = false;
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
  }

  /** Records waiting or in flight. */
  get queueSize(): number {
    return this.queued;
  }

  push(flows: readonly EnrichedFlow[], info?: PushInfo): Promise<void> {
    if (flows.length === 0) return Promise.resolve();
    if (this.closing) return Promise.reject(new Error('http sink: shutting down'));
    if (this.queued + flows.length > this.config.httpSinkQueueMax) {
      this.deps.metrics?.droppedRecords.inc({ sink: this.name, reason: 'queue_full' }, flows.length);
      return Promise.reject(
        new Error(
          `http sink: queue full (${this.queued} + ${flows.length} records > http-sink-queue-max ${this.config.httpSinkQueueMax})`,
        ),
      );
    }
    const base = info?.id ?? randomUUID();
    const parts = partsOf(flows, this.config.httpSinkBatchMax);
    const chunks: Promise<void>[] = [];
    for (let part = 0; part < parts.length; part++) {
      const records = parts[part].map(toRecord);
      chunks.push(
        new Promise<void>((resolve, reject) => {
          this.jobs.push({ records, key: parts.length > 1 ? `${base}-${part}` : base, resolve, reject });
        }),
      );
      this.queued += records.length;
    }
    this.gauge();
    this.kick();
    return Promise.all(chunks).then(() => undefined);
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
    if (this.jobs.length > 0 || this.running) {
      this.deps.log.warn({ records: this.queued }, 'http sink: shutdown deadline reached, records not sent');
      this.stop.abort(new Error('http sink: shutdown deadline reached'));
      await this.idle;
    }
  }

  private gauge(): void {
    this.deps.metrics?.queueRecords.set({ sink: this.name }, this.queued);
  }

  private kick(): void {
    if (this.running) return;
    this.running = true;
    this.idle = this.drain().finally(() => {
      this.running = false;
    });
  }

  /** One POST at a time, in push order: the receiver sees records in interval order. */
  private async drain(): Promise<void> {
    for (;;) {
      const job = this.jobs.shift();
      if (job === undefined) return;
      try {
        if (this.stop.signal.aborted) throw this.stop.signal.reason as Error;
        await this.send(job);
        job.resolve();
      } catch (err) {
        if (err instanceof PermanentError) {
          this.deps.metrics?.droppedRecords.inc({ sink: this.name, reason: 'rejected' }, job.records.length);
          this.deps.log.error({ err, records: job.records.length }, 'http sink: receiver refused records');
          job.resolve();
        } else {
          job.reject(err as Error);
        }
      } finally {
        this.queued -= job.records.length;
        this.gauge();
      }
    }
  }

  private async send(job: Job): Promise<void> {
    const text = `${job.records.join('\n')}\n`;
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
        await res.body?.cancel().catch(() => {});
        this.deps.metrics?.httpRequests.inc({ code: String(res.status) });
        if (res.status >= 200 && res.status < 300) return;
        const msg = `http sink: ${this.config.httpSinkUrl} answered ${res.status}`;
        if (res.status !== 429 && res.status !== 408 && res.status < 500) throw new PermanentError(msg);
        lastError = new Error(msg);
        wait = parseRetryAfter(res.headers.get('retry-after'), this.clock());
      } catch (err) {
        if (err instanceof PermanentError) throw err;
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
      this.deps.log.warn(
        { err: lastError.message, attempt: attempt + 1, delayMs: Math.round(delay) },
        'http sink: retrying',
      );
      await sleep(delay, this.stop.signal);
    }
    throw lastError;
  }
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
