// The pull contract between collector and exporter, in one place: the body encoding of pull
// responses, their decoding and field-by-field validation, the ack and release requests and their
// validation, the client type the pipeline pulls through and the error it throws. The collector's
// HTTP server (collector/server.ts), the exporter's HTTP client (exporter/pull.ts) and the
// in-process client of `podflow standalone` (exporter/in-process.ts) all speak through it; the
// data it carries (PullResponse, AckRequest) is plain typed data in shared/flow.ts.
import { isIPv6 } from 'node:net';
import { promisify } from 'node:util';
import { constants, gzip } from 'node:zlib';
import { Packr, Unpackr } from 'msgpackr';
import { isDnsName } from './dns.js';
import type { AckRequest, FlowBatch, PullResponse } from './flow.js';
import { dottedQuad } from './ip.js';

// The pull API's paths and headers (described in shared/flow.ts, which the browser view imports
// too and so must stay free of Node modules), for both sides to take with the codecs.
export {
  ACK_PATH,
  CONFLICT_HEADER,
  EXPORTER_HEADER,
  LEASE_HEADER,
  LEASE_SECONDS_HEADER,
  MSGPACK_TYPE,
  PULL_PATH,
  RELEASE_PATH,
} from './flow.js';

/** Sink cursors one ack (and one pull response) may carry. */
export const MAX_CURSORS = 64;

// msgpackr records: a flow's keys are written once per body, not once per flow. Measured on 200k
// flows: 33 bytes per flow instead of 85, encoding 2.5x and decoding 3x faster than plain maps. No
// shared structures: every body defines its records inline, so any msgpackr decoder reads it alone.
const packr = new Packr({ useRecords: true });
const gzipP = promisify(gzip);

/** Bytes per flow the target buffer is first sized for (33 measured, names longer in clusters). */
const BYTES_PER_FLOW = 40;
/** Bodies above this get a buffer of their own. */
const BIG_BODY = 1 << 20;

/**
 * A pull response as the collector sends it (before optional gzip).
 *
 * msgpackr writes into one module-level buffer that it grows 4x (2x above 16 MB), copying as it
 * goes, returns a view of it and keeps writing the next bodies after that view. After the pull of
 * a big batch, that buffer — up to 4x the body — stayed for the life of the process. A big body
 * is therefore written into a buffer sized for it beforehand (no growth chain of copies), and
 * msgpackr is handed a small buffer afterwards: the big one lives exactly as long as the body.
 */
export function encodePullBody(r: PullResponse): Buffer {
  let flows = 0;
  for (const b of r.batches) flows += b.flows.length;
  const estimate = flows * BYTES_PER_FLOW + 4096;
  if (estimate < BIG_BODY) return packr.pack(r);
  packr.useBuffer(Buffer.allocUnsafeSlow(estimate));
  try {
    return packr.pack(r);
  } finally {
    packr.useBuffer(Buffer.allocUnsafeSlow(8192));
  }
}

/** Level 1: flow batches are repetitive, the fastest level gets most of the gain for little CPU. */
export const gzipPullBody = (body: Buffer): Promise<Buffer> => gzipP(body, { level: constants.Z_BEST_SPEED });

/** One collector as the pipeline sees it: an HTTP client in the exporter, an in-process one in standalone. */
export interface CollectorClient {
  /** Stable name for logs and the `collector` label of self-metrics (the base URL, or the node). */
  readonly id: string;
  pull(signal: AbortSignal): Promise<PullResponse>;
  /**
   * Drops every batch with `seq <= seq` on the collector. Throws `PullError('boot')` when the
   * collector restarted, `PullError('lease')` when another exporter took it over.
   */
  ack(
    bootId: string,
    seq: number,
    signal: AbortSignal,
    cursors?: Readonly<Record<string, number>>,
  ): Promise<void>;
  /** Lets go of the collector's lease (shutdown), so that another exporter may pull at once. */
  release?(signal: AbortSignal): Promise<void>;
}

export type PullErrorReason =
  | 'timeout'
  | 'network'
  | 'http'
  | 'oversized'
  | 'decode'
  | 'invalid'
  | 'version'
  | 'boot'
  | 'unauthorized'
  | 'leased'
  | 'busy';

export class PullError extends Error {
  override name = 'PullError';
  /** 'leased': the exporter that holds the collector's lease, as the collector names it. */
  holder?: string;
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
// Requests (acks, releases) are two or three fields: plain maps, no records.
const requestPackr = new Packr({ useRecords: false });

/**
 * Byte and packet counts are whole numbers below 2^53: anything else (1e300, 0.49, 2^60) would
 * stick in a counter until restart, so the whole pull is refused instead.
 */
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isTime = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0;

/** Exactly `net.isIPv4`, without its regular expression (see shared/ip.ts `dottedQuad`). */
export const isDottedQuad = (v: string): boolean => dottedQuad(v) >= 0;

function invalid(where: string, what: string): never {
  throw new PullError('invalid', `${where}: ${what}`);
}

/**
 * What is wrong with flow `j` of a pull, or undefined: the message is made only for a bad flow.
 * Its addresses go into `addrs` (at 2j and 2j+1) as numbers, -1 for IPv6.
 */
function flowProblem(f: unknown, addrs: Float64Array, j: number): string | undefined {
  if (f === null || typeof f !== 'object') return 'not a map';
  const o = f as Record<string, unknown>;
  const src = address(o.src);
  if (src === undefined) return `src is not an IP address: ${JSON.stringify(o.src)}`;
  const dst = address(o.dst);
  if (dst === undefined) return `dst is not an IP address: ${JSON.stringify(o.dst)}`;
  addrs[2 * j] = src;
  addrs[2 * j + 1] = dst;
  const proto = o.proto;
  if (typeof proto !== 'number' || !Number.isInteger(proto) || proto < 0 || proto > 255) {
    return `proto is not 0..255: ${JSON.stringify(proto)}`;
  }
  if (!isCount(o.txBytes) || !isCount(o.rxBytes) || !isCount(o.txPackets) || !isCount(o.rxPackets)) {
    return 'counts must be whole numbers from 0 to 2^53-1';
  }
  if (o.dstName !== undefined && !isDnsName(o.dstName)) {
    return `dstName is not a DNS name of at most 253 characters: ${JSON.stringify(o.dstName).slice(0, 80)}`;
  }
  return undefined;
}

/** An address: IPv4 as its number, IPv6 as -1; undefined when `v` is no address. */
function address(v: unknown): number | undefined {
  if (typeof v !== 'string') return undefined;
  const a = dottedQuad(v);
  if (a >= 0) return a;
  return isIPv6(v) ? -1 : undefined;
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
  if (typeof r.node !== 'string' || r.node.length > 253)
    invalid('response', 'node must be a name (a string of at most 253 characters)');
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
    if (!isTime(b.from) || !isTime(b.to) || b.to < b.from)
      invalid(where, 'from/to must be times, from <= to');
    if (!Array.isArray(b.flows)) invalid(where, 'flows must be an array');
    const flows = b.flows;
    const addrs = new Float64Array(2 * flows.length);
    for (let j = 0; j < flows.length; j++) {
      const problem = flowProblem(flows[j], addrs, j);
      if (problem !== undefined) invalid(`${where} flow ${j}`, problem);
    }
    // Not enumerable: the batch still equals, encodes and copies as the wire's.
    Object.defineProperty(b, 'addresses', { value: addrs, enumerable: false, writable: true });
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
  if (r.cursors !== undefined) {
    const c = r.cursors;
    if (c === null || typeof c !== 'object' || Array.isArray(c)) invalid('response', 'cursors must be a map');
    const entries = Object.entries(c as Record<string, unknown>);
    if (entries.length > MAX_CURSORS) invalid('response', `cursors: at most ${MAX_CURSORS} sinks`);
    for (const [name, at] of entries) {
      if (!Number.isSafeInteger(at) || (at as number) < 0)
        invalid(`cursor ${name}`, 'must be a non-negative integer');
    }
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

/** What a pull response is made from: the collector's backlog (collector/backlog.ts). */
export interface PullSource {
  readonly bootId: string;
  /** Highest seq acknowledged (0: none). */
  readonly acked: number;
  /** Pending pull boundaries (see PullResponse.boundaries). */
  pendingBoundaries(): number[];
  /** Per sink name, how far it got beyond the ack (see PullResponse.cursors). */
  sinkCursors(): Record<string, number>;
}

/** Who answers a pull: the node, and where it reads connections. */
export interface PullOrigin {
  node: string;
  source: 'netfilter' | 'cilium';
}

/**
 * The one pull response of the contract, for the HTTP server and the in-process client alike.
 * `batches` are those just taken from `from`: read after that pull, the boundaries include its own.
 */
export function pullResponse(from: PullSource, origin: PullOrigin, batches: FlowBatch[]): PullResponse {
  return {
    version: 1,
    bootId: from.bootId,
    node: origin.node,
    source: origin.source,
    batches,
    boundaries: from.pendingBoundaries(),
    acked: from.acked,
    cursors: from.sinkCursors(),
  };
}

/** Checks a decoded ack body; returns what is wrong with it, or undefined. */
export function ackProblem(v: unknown): string | undefined {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return 'expected a map {bootId, seq, lease}';
  const o = v as Record<string, unknown>;
  if (typeof o.bootId !== 'string' || o.bootId.length === 0) return 'bootId must be a non-empty string';
  if (typeof o.seq !== 'number' || !Number.isSafeInteger(o.seq) || o.seq < 0) {
    return 'seq must be a non-negative integer';
  }
  if (typeof o.lease !== 'string' || o.lease.length === 0 || o.lease.length > 64) {
    return 'lease must name the lease of the pull it acknowledges';
  }
  if (o.cursors !== undefined) {
    const c = o.cursors;
    if (c === null || typeof c !== 'object' || Array.isArray(c))
      return 'cursors must be a map of sink name to seq';
    const entries = Object.entries(c);
    if (entries.length > MAX_CURSORS) return `cursors: at most ${MAX_CURSORS} sinks`;
    for (const [name, at] of entries) {
      if (!/^[\x21-\x7e]{1,64}$/.test(name)) return 'cursors: a sink name is 1 to 64 printable characters';
      if (typeof at !== 'number' || !Number.isSafeInteger(at) || at < 0) {
        return `cursors: ${name} must be a non-negative integer`;
      }
    }
  }
  return undefined;
}

/** The body of an ack request. */
export const encodeAck = (req: AckRequest): Buffer => requestPackr.pack(req);

/** The body of a release request: the lease let go of. */
export const encodeRelease = (lease: string): Buffer => requestPackr.pack({ lease });

/** Decodes a request body (ack, release); throws msgpackr's error on a body that is not msgpack. */
export const decodeRequest = (raw: Uint8Array): unknown => unpackr.unpack(raw);
