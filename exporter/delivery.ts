// One HTTP request of a sink, delivered: sent, and sent again with backoff until the receiver takes
// it, calls it malformed, or retries run out. Every HTTP-based sink (records: NDJSON, egressd
// protobuf, Loki, OTLP logs; totals: remote write, OTLP metrics) sends through this, so they all
// answer the same way to the same statuses (docs/exporter.md, "Answers").

import { type Clock, systemClock } from '../shared/clock.js';
import { causeOf, type Logger, OncePerCause } from '../shared/log.js';
import { pause } from '../shared/sleep.js';
import { VERSION } from '../shared/version.js';
import type { ExporterMetrics } from './metrics.js';

export interface DeliveryConfig {
  /** The sink's name: the `sink` label and the log lines. */
  name: string;
  url: string;
  /** @default 'POST' */
  method?: string;
  /** One request, ms. */
  timeout: number;
  /** Retries of one request; Infinity keeps trying until close(). */
  maxRetries: number;
  /** First retry delay, ms (doubles each retry, with jitter). @default 500 */
  retryBaseMs?: number;
  /** Longest wait between retries, also the cap on Retry-After, ms. @default 60000 */
  retryMaxMs?: number;
}

/** How a receiver's answer is handled. */
export type Answer =
  | { kind: 'taken' }
  /** 413: the body is too large for this receiver. */
  | { kind: 'too_large'; said: string }
  /** 400, 422: malformed for this receiver; sending it again would not help. */
  | { kind: 'malformed'; status: number; said: string };

/**
 * The request headers of a sink: the user's (already ${ENV}-expanded), then the body's media type
 * and `User-Agent: podflow/<version>` unless the user gave their own (any spelling: a user's
 * `Content-Type` replaces the sink's, it is not sent next to it).
 */
export function requestHeaders(
  user: Readonly<Record<string, string>>,
  contentType: string,
  gzip: boolean,
): Record<string, string> {
  const out: Record<string, string> = { ...user };
  const given = new Set(Object.keys(user).map((k) => k.toLowerCase()));
  if (!given.has('content-type')) out['content-type'] = contentType;
  if (!given.has('user-agent')) out['user-agent'] = `podflow/${VERSION}`;
  if (gzip) out['content-encoding'] = 'gzip';
  return out;
}

export class Delivery {
  /** Retries for the same cause (a receiver down for an hour): one warning, then debug. */
  private readonly retries: OncePerCause;

  constructor(
    private readonly config: DeliveryConfig,
    private readonly deps: { log: Logger; metrics?: ExporterMetrics },
    private readonly clock: Clock = systemClock,
  ) {
    this.retries = new OncePerCause(deps.log);
  }

  /**
   * Sends `body` until the receiver takes it or calls it malformed or too large. Everything else
   * keeps it: 401/403 (a token being rotated), 404 (a receiver being redeployed), 408, 429, 5xx and
   * network errors are retried with backoff (Retry-After when given), the same body each time; when
   * retries run out, or `signal` aborts, it throws.
   */
  async send(body: Buffer, headers: Record<string, string>, signal: AbortSignal): Promise<Answer> {
    const { name, url, maxRetries } = this.config;
    const base = this.config.retryBaseMs ?? 500;
    const cap = this.config.retryMaxMs ?? 60_000;
    let lastError: Error = new Error(`${name} sink: not sent`);
    for (let attempt = 0; attempt <= maxRetries; attempt++) {
      let wait: number | undefined;
      // Real time, not the clock's: it bounds a socket, which a test's clock does not move.
      const timeout = AbortSignal.timeout(this.config.timeout);
      try {
        const res = await fetch(url, {
          method: this.config.method ?? 'POST',
          headers,
          body,
          signal: AbortSignal.any([timeout, signal]),
        });
        this.deps.metrics?.httpRequests.inc({ code: String(res.status), sink: name });
        if (res.status >= 200 && res.status < 300) {
          await res.body?.cancel().catch(() => {});
          this.retries.recovered('post', { sink: name, url }, `${name} sink: receiver takes records again`);
          return { kind: 'taken' };
        }
        const said = await excerpt(res);
        if (res.status === 400 || res.status === 422) return { kind: 'malformed', status: res.status, said };
        if (res.status === 413) return { kind: 'too_large', said };
        lastError = new Error(`${name} sink: ${url} answered ${res.status}${said === '' ? '' : `: ${said}`}`);
        wait = parseRetryAfter(res.headers.get('retry-after'), this.clock.now());
      } catch (err) {
        if (signal.aborted) throw signal.reason as Error;
        this.deps.metrics?.httpRequests.inc({ code: 'error', sink: name });
        const e = err as Error & { cause?: { code?: string } };
        const why = timeout.aborted ? 'timed out' : (e.cause?.code ?? e.message);
        lastError = new Error(`${name} sink: ${this.config.method ?? 'POST'} ${url}: ${why}`, { cause: err });
      }
      if (attempt === maxRetries) break;
      // Full jitter over an exponential ceiling, so that many exporters do not retry in step.
      const backoff = Math.min(cap, base * 2 ** Math.min(attempt, 30));
      const delay = Math.min(cap, wait ?? backoff / 2 + Math.random() * (backoff / 2));
      this.retries.failing(
        'post',
        causeOf(lastError),
        { sink: name, err: lastError.message, attempt: attempt + 1, delayMs: Math.round(delay) },
        `${name} sink: retrying (repeats of the same cause are logged at debug)`,
      );
      await pause(delay, signal, this.clock);
      if (signal.aborted) throw signal.reason as Error;
    }
    throw lastError;
  }
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
