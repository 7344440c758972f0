// Pull stage: fetches a collector's unacknowledged batches over the pull API (shared/flow.ts) and
// acknowledges them once every sink took them. The decoder (shared/pull-contract.ts) trusts
// nothing: a collector of another version, a truncated or corrupt body, or a body above
// `pull-max-bytes` is rejected with a `PullError` naming the reason, so that one bad collector
// costs only its own round.
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { promisify } from 'node:util';
import { gunzip as gunzipCb } from 'node:zlib';
import type { Config } from '../shared/config.js';
import type { AckRequest, PullResponse } from '../shared/flow.js';
import {
  ACK_PATH,
  CONFLICT_HEADER,
  type CollectorClient,
  decodePullResponse,
  EXPORTER_HEADER,
  encodeAck,
  encodeRelease,
  LEASE_HEADER,
  LEASE_SECONDS_HEADER,
  MSGPACK_TYPE,
  PULL_PATH,
  PullError,
  RELEASE_PATH,
} from '../shared/pull-contract.js';
import type { TokenFile } from '../shared/token.js';
import { ByteBudget } from './byte-budget.js';

// The pipeline's side of the contract, where it has always found it.
export { type CollectorClient, PullError } from '../shared/pull-contract.js';

export interface HttpCollectorOptions {
  /** Time allowed for one pull or ack (`pull-timeout`), ms. */
  timeoutMs: number;
  /** Largest decompressed body accepted (`pull-max-bytes`). */
  maxBytes: number;
  /**
   * This exporter, as collectors name the holder of their lease (`--pod-name`). The pod name: a
   * restarted container of the same pod takes its lease back at once, another pod (a rollout, a
   * second replica) waits until it lapses. Kubernetes runs at most one pod of a name at a time.
   */
  identity: string;
  /** Lease asked for at every pull, ms: how long another exporter waits after this one died. */
  leaseMs: number;
  /** `--pull-token-file`: the token sent (its first line, re-read on change). None: no header. */
  token?: { first(): string };
  /** Decompressed pull bytes held at once across every client. @default a budget of `maxBytes` per client */
  budget?: ByteBudget;
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
  private readonly releaseUrl: URL;
  private readonly budget: ByteBudget;
  /** The lease of the last pull (acks name it), and when it lapses (performance.now() ms). */
  private lease: { id: string; lapses: number } | undefined;

  constructor(
    baseUrl: string,
    private readonly opts: HttpCollectorOptions,
  ) {
    this.id = baseUrl.replace(/\/+$/, '');
    this.pullUrl = new URL(`${this.id}${PULL_PATH}`);
    this.ackUrl = new URL(`${this.id}${ACK_PATH}`);
    this.releaseUrl = new URL(`${this.id}${RELEASE_PATH}`);
    this.budget = opts.budget ?? new ByteBudget(opts.maxBytes);
  }

  private headers(extra: Record<string, string>): Record<string, string> {
    const token = this.opts.token?.first();
    return token === undefined ? extra : { ...extra, authorization: `Bearer ${token}` };
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
   *
   * The body's decompressed bytes are reserved from the shared budget before they are made (the
   * gzip trailer says how many; a body that makes more is refused) and given back once decoded.
   */
  async pull(signal: AbortSignal): Promise<PullResponse> {
    const timeout = AbortSignal.timeout(this.opts.timeoutMs);
    const both = AbortSignal.any([signal, timeout]);
    const began = performance.now();
    const res = await exchange(
      this.pullUrl,
      'GET',
      this.headers({
        accept: MSGPACK_TYPE,
        'accept-encoding': 'gzip',
        [EXPORTER_HEADER]: this.opts.identity,
        [LEASE_SECONDS_HEADER]: String(this.opts.leaseMs / 1000),
      }),
      undefined,
      both,
      timeout,
      this.opts.maxBytes,
      'pull',
      this.budget,
    );
    let release = res.release;
    try {
      if (res.status !== 200) throw refusal('pull', res);
      let body = res.body;
      if (res.encoding === 'gzip') {
        // ISIZE, the gzip trailer: the decompressed length (mod 2^32; pull-max-bytes is below it).
        const claimed = body.length >= 18 ? body.readUInt32LE(body.length - 4) : 0;
        if (claimed > this.opts.maxBytes) {
          throw new PullError(
            'oversized',
            `pull: body of ${claimed} bytes once gunzipped exceeds pull-max-bytes ${this.opts.maxBytes}`,
          );
        }
        // The compressed body's bytes go back first: a pull never holds one reservation while it
        // waits for another, so pulls cannot wait for each other in a circle.
        release();
        release = await this.budget.reserve(claimed, both).catch((cause: unknown) => {
          throw new PullError('timeout', 'pull: timed out waiting for memory to decompress', { cause });
        });
        try {
          // Output chunks of the claimed size, up to 1 MiB: a pull of a few thousand flows is
          // made in one piece instead of 16 kB pieces, each a round trip through the thread pool
          // (about a tenth of a round at 200 collectors); a lying trailer gets no larger buffer.
          body = await gunzip(body, {
            maxOutputLength: Math.max(claimed, 1),
            chunkSize: Math.min(Math.max(claimed, 64), GUNZIP_CHUNK_MAX),
          });
        } catch (cause) {
          if ((cause as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') {
            throw new PullError(
              'invalid',
              `pull: gzip body makes more than the ${claimed} bytes its trailer says`,
              { cause },
            );
          }
          throw new PullError('decode', `pull: broken gzip body (${(cause as Error).message})`, { cause });
        }
        if (body.length !== claimed) {
          throw new PullError(
            'invalid',
            `pull: gzip body made ${body.length} bytes, its trailer says ${claimed}`,
          );
        }
      } else if (res.encoding !== '' && res.encoding !== 'identity') {
        throw new PullError('decode', `pull: unsupported Content-Encoding ${res.encoding}`);
      }
      const decoded = decodePullResponse(body);
      const leaseId = res.headers[LEASE_HEADER.toLowerCase()];
      const leaseSecs = Number(res.headers[LEASE_SECONDS_HEADER.toLowerCase()]);
      if (typeof leaseId !== 'string' || leaseId === '' || leaseId.length > 64 || !(leaseSecs > 0)) {
        throw new PullError('invalid', `pull: the collector granted no lease (${LEASE_HEADER} missing)`);
      }
      this.lease = { id: leaseId, lapses: began + leaseSecs * 1000 };
      // The lease must outlast the push and the ack that follow: a pull that took most of it
      // is not used (the next one renews it).
      const left = (this.lease.lapses - performance.now()) / 1000;
      if (left < leaseSecs / 2) {
        throw new PullError('leased', `pull: took so long that ${left.toFixed(1)}s of the lease are left`);
      }
      return decoded;
    } finally {
      release();
    }
  }

  async ack(
    bootId: string,
    seq: number,
    signal: AbortSignal,
    cursors?: Readonly<Record<string, number>>,
  ): Promise<void> {
    if (this.lease === undefined) throw new PullError('leased', 'ack: no lease (no pull succeeded yet)');
    const timeout = AbortSignal.timeout(this.opts.timeoutMs);
    const req: AckRequest = { bootId, seq, lease: this.lease.id };
    if (cursors !== undefined) req.cursors = { ...cursors };
    const res = await exchange(
      this.ackUrl,
      'POST',
      this.headers({ 'content-type': MSGPACK_TYPE }),
      encodeAck(req),
      AbortSignal.any([signal, timeout]),
      timeout,
      64 * 1024,
      'ack',
    );
    res.release();
    if (res.status < 200 || res.status > 299) throw refusal('ack', res, bootId);
  }

  async release(signal: AbortSignal): Promise<void> {
    const lease = this.lease;
    if (lease === undefined) return;
    this.lease = undefined;
    const timeout = AbortSignal.timeout(this.opts.timeoutMs);
    const res = await exchange(
      this.releaseUrl,
      'POST',
      this.headers({ 'content-type': MSGPACK_TYPE }),
      encodeRelease(lease.id),
      AbortSignal.any([signal, timeout]),
      timeout,
      64 * 1024,
      'release',
    );
    res.release();
    if (res.status !== 204) throw refusal('release', res);
  }
}

/**
 * Makes the HTTP clients of one exporter process from its configuration: one identity, one token
 * file and one byte budget shared by all of them.
 */
export function httpCollectorClients(
  config: Pick<Config, 'pullTimeout' | 'pullMaxBytes' | 'pullLease' | 'podName'>,
  deps: { token?: TokenFile } = {},
): (url: string) => HttpCollectorClient {
  const opts: HttpCollectorOptions = {
    timeoutMs: config.pullTimeout,
    maxBytes: config.pullMaxBytes,
    leaseMs: config.pullLease,
    identity: config.podName,
    token: deps.token,
    budget: new ByteBudget(config.pullMaxBytes),
  };
  return (url) => new HttpCollectorClient(url, opts);
}

/** The PullError for a refusing answer, saying what the collector said (its body is short text). */
function refusal(what: string, res: Exchange, bootId?: string): PullError {
  const said = res.body.subarray(0, 300).toString('utf8').trim();
  switch (res.status) {
    case 401:
      return new PullError(
        'unauthorized',
        `${what}: HTTP 401: the collector wants a token of --pull-token-file`,
      );
    case 429:
      return new PullError('busy', `${what}: HTTP 429: ${said}`);
    case 409:
      if (res.headers[CONFLICT_HEADER.toLowerCase()] === 'boot') {
        return new PullError('boot', `${what}: collector restarted (boot id ${bootId} unknown)`);
      }
      {
        const err = new PullError('leased', `${what}: ${said}`);
        err.holder = /^leased by exporter (\S+)/.exec(said)?.[1];
        return err;
      }
    default:
      return new PullError('http', `${what}: HTTP ${res.status}${said ? `: ${said.split('\n')[0]}` : ''}`);
  }
}

const gunzip = promisify(gunzipCb);
const GUNZIP_CHUNK_MAX = 1 << 20;
// Keep-alive: a collector is pulled every interval, its connection is reused.
const httpAgent = new HttpAgent({ keepAlive: true });
const httpsAgent = new HttpsAgent({ keepAlive: true });

interface Exchange {
  status: number;
  encoding: string;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  /** Gives back the bytes the body holds in the budget (if one was given). */
  release: () => void;
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
  budget?: ByteBudget,
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
        let release = () => {};
        const failAndRelease = (cause: unknown) => {
          release();
          fail(cause);
        };
        res.on('data', (c: Buffer) => {
          total += c.length;
          if (total > max) {
            failAndRelease(new PullError('oversized', `${what}: body exceeds pull-max-bytes ${max}`));
            res.destroy();
            return;
          }
          chunks.push(c);
        });
        res.on('error', failAndRelease);
        res.on('aborted', () => failAndRelease(new Error('connection closed')));
        res.on('end', () => {
          if (!res.complete) return failAndRelease(new Error('connection closed'));
          if (settled) return release();
          settled = true;
          resolve({
            status: res.statusCode ?? 0,
            encoding: String(res.headers['content-encoding'] ?? '').toLowerCase(),
            headers: res.headers,
            body: chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, total),
            release,
          });
        });
        if (budget !== undefined) {
          // The body is counted while it arrives: what it says it is, or the most it may be.
          res.pause();
          budget.reserve(Number.isFinite(declared) ? declared : max, signal).then(
            (give) => {
              release = give;
              if (settled) return release();
              res.resume();
            },
            (cause: unknown) => {
              res.destroy();
              fail(cause);
            },
          );
        }
      },
    );
    req.on('error', fail);
    req.end(body);
  });
}
