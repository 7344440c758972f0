// Pull stage: fetches a collector's unacknowledged batches over the pull API (shared/flow.ts) and
// acknowledges them once every sink took them. The decoder trusts nothing: a collector of another
// version, a truncated or corrupt body, or a body above `pull-max-bytes` is rejected with a
// `PullError` naming the reason, so that one bad collector costs only its own round.
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { isIPv6 } from 'node:net';
import { promisify } from 'node:util';
import { gunzip as gunzipCb } from 'node:zlib';
import { Packr, Unpackr } from 'msgpackr';
import { encodePullBody } from '../collector/wire.js';
import {
  ACK_PATH,
  type AckRequest,
  type Flow,
  type FlowBatch,
  MSGPACK_TYPE,
  PULL_PATH,
  type PullResponse,
} from '../shared/flow.js';

/** One collector as the pipeline sees it: an HTTP client in the exporter, an in-process one in standalone. */
export interface CollectorClient {
  /** Stable name for logs and the `collector` label of self-metrics (the base URL, or the node). */
  readonly id: string;
  pull(signal: AbortSignal): Promise<PullResponse>;
  /** Drops every batch with `seq <= seq` on the collector. Throws `PullError('boot')` on 409. */
  ack(bootId: string, seq: number, signal: AbortSignal): Promise<void>;
}

export type PullErrorReason =
  | 'timeout'
  | 'network'
  | 'http'
  | 'oversized'
  | 'decode'
  | 'invalid'
  | 'version'
  | 'boot';

export class PullError extends Error {
  override name = 'PullError';
  constructor(
    readonly reason: PullErrorReason,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

// Records (msgpackr's structure extension) are understood when decoding, whatever the collector
// chose; 64-bit integers come back as numbers (byte counts stay below 2^53 for centuries).
const unpackr = new Unpackr({ mapsAsObjects: true, int64AsType: 'number' });
const packr = new Packr({ useRecords: false });

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0;
const isIp = (v: unknown): v is string => typeof v === 'string' && (isDottedQuad(v) || isIPv6(v));

/**
 * Exactly `net.isIPv4` (four decimal octets 0–255, no leading zeros, nothing else), without its
 * regular expression: two addresses per flow, a million flows per round, and the regex was a tenth
 * of the round.
 */
export function isDottedQuad(v: string): boolean {
  const len = v.length;
  if (len < 7 || len > 15) return false;
  let i = 0;
  for (let part = 0; part < 4; part++) {
    if (part > 0) {
      if (v.charCodeAt(i) !== 46) return false; // .
      i++;
    }
    const start = i;
    let octet = 0;
    while (i < len && i - start < 4) {
      const c = v.charCodeAt(i) - 48;
      if (c < 0 || c > 9) break;
      octet = octet * 10 + c;
      i++;
    }
    const digits = i - start;
    if (digits === 0 || digits > 3 || octet > 255) return false;
    if (digits > 1 && v.charCodeAt(start) === 48) return false;
  }
  return i === len;
}

function invalid(where: string, what: string): never {
  throw new PullError('invalid', `${where}: ${what}`);
}

function checkFlow(f: unknown, where: string): Flow {
  if (f === null || typeof f !== 'object') invalid(where, 'not a map');
  const o = f as Record<string, unknown>;
  if (!isIp(o.src)) invalid(where, `src is not an IP address: ${JSON.stringify(o.src)}`);
  if (!isIp(o.dst)) invalid(where, `dst is not an IP address: ${JSON.stringify(o.dst)}`);
  const proto = o.proto;
  if (typeof proto !== 'number' || !Number.isInteger(proto) || proto < 0 || proto > 255) {
    invalid(where, `proto is not 0..255: ${JSON.stringify(proto)}`);
  }
  if (!isCount(o.txBytes) || !isCount(o.rxBytes) || !isCount(o.txPackets) || !isCount(o.rxPackets)) {
    invalid(where, 'counts must be finite non-negative numbers');
  }
  return o as unknown as Flow;
}

/**
 * Checks a decoded pull response field by field. Throws `PullError` ('version' or 'invalid');
 * returns the same object, typed, when every batch and flow is sound. Batches must come oldest
 * first with strictly increasing `seq`.
 */
export function validatePullResponse(v: unknown): PullResponse {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) invalid('response', 'not a map');
  const r = v as Record<string, unknown>;
  if (r.version !== 1) {
    throw new PullError('version', `wire version ${JSON.stringify(r.version)} (this exporter speaks 1)`);
  }
  if (typeof r.bootId !== 'string' || r.bootId.length === 0 || r.bootId.length > 200) {
    invalid('response', 'bootId must be a non-empty string');
  }
  if (typeof r.node !== 'string') invalid('response', 'node must be a string');
  if (r.source !== 'netfilter' && r.source !== 'cilium')
    invalid('response', 'source must be netfilter or cilium');
  if (!Array.isArray(r.batches)) invalid('response', 'batches must be an array');
  let prev = -1;
  for (let i = 0; i < r.batches.length; i++) {
    const b = r.batches[i] as FlowBatch;
    const where = `batch ${i}`;
    if (b === null || typeof b !== 'object') invalid(where, 'not a map');
    if (!Number.isSafeInteger(b.seq) || b.seq < 0) invalid(where, 'seq must be a non-negative integer');
    if (b.seq <= prev) invalid(where, `seq ${b.seq} after ${prev}: not increasing`);
    prev = b.seq;
    if (!isCount(b.from) || !isCount(b.to) || b.to < b.from)
      invalid(where, 'from/to must be times, from <= to');
    if (!Array.isArray(b.flows)) invalid(where, 'flows must be an array');
    const flows = b.flows;
    for (let j = 0; j < flows.length; j++) checkFlow(flows[j], `${where} flow ${j}`);
  }
  if (r.boundaries !== undefined) {
    if (!Array.isArray(r.boundaries)) invalid('response', 'boundaries must be an array');
    let last = 0;
    for (let i = 0; i < r.boundaries.length; i++) {
      const s = r.boundaries[i] as number;
      if (!Number.isSafeInteger(s) || s < 1) invalid(`boundary ${i}`, 'must be a positive integer');
      if (s <= last) invalid(`boundary ${i}`, `${s} after ${last}: not increasing`);
      last = s;
    }
  }
  if (r.acked !== undefined && (!Number.isSafeInteger(r.acked) || (r.acked as number) < 0)) {
    invalid('response', 'acked must be a non-negative integer');
  }
  return r as unknown as PullResponse;
}

/** Decodes and validates one pull body. Throws `PullError` ('decode', 'version' or 'invalid'). */
export function decodePullResponse(body: Uint8Array): PullResponse {
  let v: unknown;
  try {
    v = unpackr.unpack(body);
  } catch (cause) {
    throw new PullError('decode', `not a msgpack pull response (${(cause as Error).message})`, { cause });
  }
  return validatePullResponse(v);
}

/** Encodes a pull response exactly as the collector does (tests, benchmarks). */
export const encodePullResponse = (r: PullResponse): Buffer => encodePullBody(r);

export interface HttpCollectorOptions {
  /** Time allowed for one pull or ack (`pull-timeout`), ms. */
  timeoutMs: number;
  /** Largest decompressed body accepted (`pull-max-bytes`). */
  maxBytes: number;
}

/**
 * A collector reached over HTTP at `baseUrl` (e.g. http://10.0.3.7:9470). No I/O until pull/ack.
 *
 * node:http rather than fetch: fetch gunzips as a stream on the main thread, which cost several
 * times a one-shot gunzip; here the compressed body is read (capped), then gunzipped on libuv's
 * thread pool with `maxOutputLength` = `pull-max-bytes`, so a gzip bomb stops at the cap.
 */
export class HttpCollectorClient implements CollectorClient {
  readonly id: string;
  private readonly pullUrl: URL;
  private readonly ackUrl: URL;

  constructor(
    baseUrl: string,
    private readonly opts: HttpCollectorOptions,
  ) {
    this.id = baseUrl.replace(/\/+$/, '');
    this.pullUrl = new URL(`${this.id}${PULL_PATH}`);
    this.ackUrl = new URL(`${this.id}${ACK_PATH}`);
  }

  /**
   * Pulls, gunzips, decodes and validates. Memory: the decoded response reaches the pipeline as
   * the value of promises made when the pull began (this async function's, and the pipeline's
   * timeout race). With `pull-concurrency` above a few, a pull waits while other collectors are
   * decoded and enriched, long enough for scavenges to promote those promises to the old
   * generation; resolving them then writes a pointer to the young response into old objects. The
   * promises die at once, but a scavenge counts every old-to-young pointer as live until the next
   * full GC, so the whole decoded response (about 1–3 MB at 5,000 flows) survives the next
   * scavenge and is promoted: about 100 MB per round at a million flows, old space growing from
   * 17 MB live to 65–100 MB between full GCs. With concurrency 1 the promises are still young
   * when they resolve and nothing is kept. The remedy is on the consumer's side: drop `batches`
   * from the response once they are taken (promotion then falls to about 3 MB per round).
   */
  async pull(signal: AbortSignal): Promise<PullResponse> {
    const timeout = AbortSignal.timeout(this.opts.timeoutMs);
    const res = await exchange(
      this.pullUrl,
      'GET',
      { accept: MSGPACK_TYPE, 'accept-encoding': 'gzip' },
      undefined,
      AbortSignal.any([signal, timeout]),
      timeout,
      this.opts.maxBytes,
      'pull',
    );
    if (res.status !== 200) throw new PullError('http', `pull: HTTP ${res.status}`);
    let body = res.body;
    if (res.encoding === 'gzip') {
      try {
        body = await gunzip(body, { maxOutputLength: this.opts.maxBytes });
      } catch (cause) {
        if ((cause as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') {
          throw new PullError(
            'oversized',
            `pull: body exceeds pull-max-bytes ${this.opts.maxBytes} once gunzipped`,
            {
              cause,
            },
          );
        }
        throw new PullError('decode', `pull: broken gzip body (${(cause as Error).message})`, { cause });
      }
    } else if (res.encoding !== '' && res.encoding !== 'identity') {
      throw new PullError('decode', `pull: unsupported Content-Encoding ${res.encoding}`);
    }
    return decodePullResponse(body);
  }

  async ack(bootId: string, seq: number, signal: AbortSignal): Promise<void> {
    const timeout = AbortSignal.timeout(this.opts.timeoutMs);
    const req: AckRequest = { bootId, seq };
    const res = await exchange(
      this.ackUrl,
      'POST',
      { 'content-type': MSGPACK_TYPE },
      packr.pack(req),
      AbortSignal.any([signal, timeout]),
      timeout,
      64 * 1024,
      'ack',
    );
    if (res.status === 409) {
      throw new PullError('boot', `ack: collector restarted (boot id ${bootId} unknown)`);
    }
    if (res.status < 200 || res.status > 299) throw new PullError('http', `ack: HTTP ${res.status}`);
  }
}

const gunzip = promisify(gunzipCb);
// Keep-alive: a collector is pulled every interval, its connection is reused.
const httpAgent = new HttpAgent({ keepAlive: true });
const httpsAgent = new HttpsAgent({ keepAlive: true });

interface Exchange {
  status: number;
  encoding: string;
  body: Buffer;
}

/**
 * One request; reads the body as sent (not decoded), giving up as soon as it exceeds `max` bytes.
 * Network failures, timeouts and bodies cut short become PullError.
 */
function exchange(
  url: URL,
  method: string,
  headers: Record<string, string>,
  body: Buffer | undefined,
  signal: AbortSignal,
  timeout: AbortSignal,
  max: number,
  what: string,
): Promise<Exchange> {
  return new Promise<Exchange>((resolve, reject) => {
    const https = url.protocol === 'https:';
    const send = https ? httpsRequest : httpRequest;
    let headersSeen = false;
    let settled = false;
    const fail = (cause: unknown) => {
      if (settled) return;
      settled = true;
      if (timeout.aborted) reject(new PullError('timeout', `${what}: timed out`, { cause }));
      else if (cause instanceof PullError) reject(cause);
      else if (headersSeen) {
        // A connection cut mid-body: the payload is incomplete.
        reject(new PullError('decode', `${what}: body cut short (${(cause as Error).message})`, { cause }));
      } else {
        const e = cause as Error & { code?: string };
        reject(new PullError('network', `${what}: ${e.code ?? e.name}: ${e.message}`, { cause }));
      }
    };
    const req = send(
      url,
      {
        method,
        headers: body ? { ...headers, 'content-length': String(body.length) } : headers,
        agent: https ? httpsAgent : httpAgent,
        signal,
      },
      (res) => {
        headersSeen = true;
        const declared = Number(res.headers['content-length'] ?? Number.NaN);
        if (declared > max) {
          res.destroy();
          return fail(
            new PullError('oversized', `${what}: body of ${declared} bytes exceeds pull-max-bytes ${max}`),
          );
        }
        const chunks: Buffer[] = [];
        let total = 0;
        res.on('data', (c: Buffer) => {
          total += c.length;
          if (total > max) {
            fail(new PullError('oversized', `${what}: body exceeds pull-max-bytes ${max}`));
            res.destroy();
            return;
          }
          chunks.push(c);
        });
        res.on('error', fail);
        res.on('aborted', () => fail(new Error('connection closed')));
        res.on('end', () => {
          if (!res.complete) return fail(new Error('connection closed'));
          if (settled) return;
          settled = true;
          resolve({
            status: res.statusCode ?? 0,
            encoding: String(res.headers['content-encoding'] ?? '').toLowerCase(),
            body: chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, total),
          });
        });
      },
    );
    req.on('error', fail);
    req.end(body);
  });
}
