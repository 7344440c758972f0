// The collector's HTTP server: the pull API (shared/flow.ts, shared/pull-contract.ts) over the backlog, next to /healthz,
// /readyz and /metrics. Decoding of requests trusts nothing: a malformed ack is a 400 that says
// what is wrong, and leaves the backlog untouched.
import type { IncomingMessage } from 'node:http';
import Router from '@koa/router';
import type Koa from 'koa';
import type { Registry } from 'prom-client';
import type { AckRequest } from '../shared/flow.js';
import { HttpServer } from '../shared/http.js';
import type { Logger } from '../shared/log.js';
import {
  ACK_PATH,
  ackProblem,
  CONFLICT_HEADER,
  decodeRequest,
  EXPORTER_HEADER,
  encodePullBody,
  gzipPullBody,
  LEASE_HEADER,
  LEASE_SECONDS_HEADER,
  MSGPACK_TYPE,
  PULL_PATH,
  pullResponse,
  RELEASE_PATH,
} from '../shared/pull-contract.js';
import type { TokenFile } from '../shared/token.js';
import type { Backlog } from './backlog.js';
import { Lease } from './lease.js';
import type { CollectorMetrics } from './metrics.js';

/** An ack is two fields; anything near this size is not one. */
export const MAX_ACK_BYTES = 4096;

export interface PullApiDeps {
  backlog: Backlog;
  node: string;
  /** The source, or its name. An object is read at every pull: `--source auto` chooses at start. */
  source: 'netfilter' | 'cilium' | { readonly name: 'netfilter' | 'cilium' };
  metrics: CollectorMetrics;
  log: Logger;
  /** `--pull-token-file`: every pull-API request must carry one of its tokens. None: open. */
  tokens?: TokenFile;
  /** One exporter at a time (tests inject a clock through it). */
  lease?: Lease;
  /**
   * `--state-dir`: resolves once the pull boundaries recorded so far are on disk. A pull is answered
   * only then: a restarted collector keeps every boundary an exporter has seen.
   */
  boundariesDurable?: () => Promise<void>;
  /**
   * False while the collector starts (the HTTP server is bound first): its backlog may not be the
   * one it will serve yet (`--state-dir` restores the previous process's, under that boot id), so
   * the pull API answers 503 until then. @default always true
   */
  pullable?: () => boolean;
}

class BadRequest extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? Number.NaN);
  if (declared > limit) throw new BadRequest(413, `body of ${declared} bytes exceeds ${limit} bytes`);
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > limit) {
      req.destroy();
      throw new BadRequest(413, `body exceeds ${limit} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total);
}

/** Pull requests served at once; more get 429 (each one may hold a body of the whole backlog). */
export const MAX_CONCURRENT_PULLS = 4;
/** Lease asked for by an exporter that does not say, ms. */
const DEFAULT_LEASE_MS = 60_000;

/**
 * The pull body of one backlog state, made once and shared by every pull of that state (and the
 * gzip of it, made on first demand): a flood of pulls costs one encoding, not one per request.
 */
interface BodyCache {
  version: number;
  maxFlows: number;
  raw: Buffer;
  gzip?: Promise<Buffer>;
}

/** Why a pull-API request is turned away; the body says no more than the status to a client without the token. */
function refuse(ctx: Koa.Context, status: number, body: string): void {
  ctx.status = status;
  ctx.type = 'text/plain';
  ctx.body = `${body}\n`;
}

/** The pull API routes: GET /api/v1/flows, POST /api/v1/ack, POST /api/v1/release. */
export function pullApiRouter(deps: PullApiDeps): Router {
  const { backlog, metrics } = deps;
  const lease = deps.lease ?? new Lease();
  const router = new Router();
  let inFlight = 0;
  let cache: BodyCache | undefined;

  // Authentication first: without a token nothing else is looked at, and nothing is disclosed.
  router.use(async (ctx, next) => {
    if (deps.tokens !== undefined && !deps.tokens.accepts(ctx.get('authorization') || undefined)) {
      metrics.refused.inc({ reason: 'unauthorized' });
      ctx.set('WWW-Authenticate', 'Bearer realm="podflow"');
      return refuse(ctx, 401, 'unauthorized');
    }
    if (deps.pullable !== undefined && !deps.pullable()) {
      // An exporter that saw a boot id now would take the restored one for yet another restart.
      ctx.set('Retry-After', '1');
      return refuse(ctx, 503, 'starting: the backlog is not ready yet');
    }
    await next();
  });

  router.get(PULL_PATH, async (ctx) => {
    let maxFlows = Number.POSITIVE_INFINITY;
    const q = ctx.query.max_flows;
    if (q !== undefined) {
      if (typeof q !== 'string' || !/^\d{1,15}$/.test(q) || Number(q) < 1) {
        return refuse(ctx, 400, `max_flows must be a whole number ≥ 1, got ${JSON.stringify(q)}`);
      }
      maxFlows = Number(q);
    }
    const holder = ctx.get(EXPORTER_HEADER);
    if (!isHolderName(holder)) {
      return refuse(ctx, 400, `${EXPORTER_HEADER} must name the exporter (1 to 200 printable characters)`);
    }
    const askedRaw = ctx.get(LEASE_SECONDS_HEADER);
    const asked = askedRaw === '' ? DEFAULT_LEASE_MS : Number(askedRaw) * 1000;
    if (!Number.isFinite(asked) || asked <= 0) {
      return refuse(ctx, 400, `${LEASE_SECONDS_HEADER} must be a positive number of seconds`);
    }
    if (inFlight >= MAX_CONCURRENT_PULLS) {
      metrics.refused.inc({ reason: 'busy' });
      ctx.set('Retry-After', '1');
      return refuse(ctx, 429, `${MAX_CONCURRENT_PULLS} pulls in progress: try again later`);
    }
    const grant = lease.take(holder, asked);
    if (!grant.ok) {
      metrics.refused.inc({ reason: 'leased' });
      const secs = Math.ceil(grant.lapsesInMs / 1000);
      ctx.set('Retry-After', String(secs));
      ctx.set(CONFLICT_HEADER, 'lease');
      return refuse(
        ctx,
        409,
        `leased by exporter ${grant.holder} for another ${secs}s (until it lapses or is released)`,
      );
    }
    inFlight++;
    try {
      if (cache === undefined || cache.version !== backlog.version || cache.maxFlows !== maxFlows) {
        const source = typeof deps.source === 'string' ? deps.source : deps.source.name;
        const response = pullResponse(
          backlog,
          { node: deps.node, source },
          backlog.pullForEncoding(maxFlows),
        );
        // The version after the pull: recording this pull's boundary may have changed it.
        cache = { version: backlog.version, maxFlows, raw: encodePullBody(response) };
        metrics.pullBodies.inc();
      }
      const body = cache;
      await deps.boundariesDurable?.();
      metrics.pulls.inc();
      ctx.vary('Accept-Encoding');
      ctx.type = MSGPACK_TYPE;
      ctx.set(LEASE_HEADER, grant.id);
      ctx.set(LEASE_SECONDS_HEADER, String(grant.ttlMs / 1000));
      if (ctx.acceptsEncodings('gzip', 'identity') === 'gzip') {
        body.gzip ??= gzipPullBody(body.raw);
        ctx.body = await body.gzip;
        ctx.set('Content-Encoding', 'gzip');
      } else {
        ctx.body = body.raw;
      }
    } finally {
      inFlight--;
    }
  });

  router.post(ACK_PATH, async (ctx) => {
    ctx.type = 'text/plain';
    try {
      const decoded = await readMsgpack(ctx);
      const problem = ackProblem(decoded);
      if (problem) throw new BadRequest(400, `invalid ack: ${problem}`);
      const { bootId, seq, lease: id, cursors } = decoded as AckRequest;
      const held = lease.renew(id);
      if (!held.ok) {
        metrics.acks.inc({ result: 'conflict' });
        ctx.status = 409;
        ctx.set(CONFLICT_HEADER, 'lease');
        ctx.body =
          held.holder === ''
            ? 'lease unknown: pull again\n'
            : `lease ${id} is not current: exporter ${held.holder} holds this collector\n`;
        return;
      }
      const result = backlog.ack(bootId, seq, cursors);
      if (!result.ok) {
        metrics.acks.inc({ result: 'conflict' });
        ctx.status = 409;
        ctx.set(CONFLICT_HEADER, 'boot');
        ctx.body = `${result.reason}\n`;
        return;
      }
      metrics.acks.inc({ result: 'ok' });
      // The acknowledged body is not served again: let it go now rather than at the next pull.
      if (cache !== undefined && cache.version !== backlog.version) cache = undefined;
      ctx.status = 204;
    } catch (err) {
      if (!(err instanceof BadRequest)) throw err;
      metrics.acks.inc({ result: 'invalid' });
      deps.log.debug({ status: err.status, reason: err.message }, 'rejected an ack');
      ctx.status = err.status;
      ctx.body = `${err.message}\n`;
    }
  });

  router.post(RELEASE_PATH, async (ctx) => {
    ctx.type = 'text/plain';
    try {
      const decoded = (await readMsgpack(ctx)) as { lease?: unknown } | null;
      const id = decoded !== null && typeof decoded === 'object' ? decoded.lease : undefined;
      if (typeof id !== 'string' || id.length === 0)
        throw new BadRequest(400, 'expected a msgpack map {lease}');
      if (!lease.release(id)) return refuse(ctx, 409, `lease ${id} is not current`);
      deps.log.info('lease released: the next exporter may pull at once');
      ctx.status = 204;
    } catch (err) {
      if (!(err instanceof BadRequest)) throw err;
      refuse(ctx, err.status, err.message);
    }
  });

  return router;
}

/** Reads and decodes a small msgpack request body; BadRequest says what is wrong with it. */
async function readMsgpack(ctx: Koa.Context): Promise<unknown> {
  const type = ctx.get('content-type');
  if (type !== '' && !type.startsWith(MSGPACK_TYPE)) {
    throw new BadRequest(415, `expected Content-Type ${MSGPACK_TYPE}, got ${type}`);
  }
  const raw = await readBody(ctx.req, MAX_ACK_BYTES);
  if (raw.length === 0) throw new BadRequest(400, 'empty body: expected a msgpack map');
  try {
    return decodeRequest(raw);
  } catch (err) {
    throw new BadRequest(400, `body is not msgpack: ${(err as Error).message}`);
  }
}

const isHolderName = (v: string): boolean => v.length > 0 && v.length <= 200 && /^[\x21-\x7e]+$/.test(v);

export interface CollectorServerConfig {
  listen: { host: string; port: number };
}

export interface CollectorServerDeps extends PullApiDeps {
  registry: Registry;
  notReady: () => string | undefined;
  /** `--metrics-auth`: /metrics wants a token too. */
  metricsAuth?: boolean;
}

/** The collector's HTTP server. No I/O until `start()`. */
export function createCollectorServer(config: CollectorServerConfig, deps: CollectorServerDeps): HttpServer {
  return new HttpServer(config, {
    registry: deps.registry,
    notReady: deps.notReady,
    log: deps.log,
    router: pullApiRouter(deps),
    auth: deps.metricsAuth ? deps.tokens : undefined,
  });
}
