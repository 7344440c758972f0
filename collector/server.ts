// The collector's HTTP server: the pull API (shared/flow.ts) over the backlog, next to /healthz,
// /readyz and /metrics. Decoding of requests trusts nothing: a malformed ack is a 400 that says
// what is wrong, and leaves the backlog untouched.
import type { IncomingMessage } from 'node:http';
import Router from '@koa/router';
import { Unpackr } from 'msgpackr';
import type { Registry } from 'prom-client';
import { ACK_PATH, MSGPACK_TYPE, PULL_PATH, type PullResponse } from '../shared/flow.js';
import { HttpServer } from '../shared/http.js';
import type { Logger } from '../shared/log.js';
import type { Backlog } from './backlog.js';
import type { CollectorMetrics } from './metrics.js';
import { encodePullBody, gzipPullBody } from './wire.js';

const unpackr = new Unpackr({ mapsAsObjects: true, int64AsType: 'number' });

/** An ack is two fields; anything near this size is not one. */
export const MAX_ACK_BYTES = 4096;

export interface PullApiDeps {
  backlog: Backlog;
  node: string;
  /** The source, or its name. An object is read at every pull: `--source auto` chooses at start. */
  source: 'netfilter' | 'cilium' | { readonly name: 'netfilter' | 'cilium' };
  metrics: CollectorMetrics;
  log: Logger;
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

/** Checks a decoded ack body; returns what is wrong with it, or undefined. */
function ackProblem(v: unknown): string | undefined {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return 'expected a map {bootId, seq}';
  const o = v as Record<string, unknown>;
  if (typeof o.bootId !== 'string' || o.bootId.length === 0) return 'bootId must be a non-empty string';
  if (typeof o.seq !== 'number' || !Number.isSafeInteger(o.seq) || o.seq < 0) {
    return 'seq must be a non-negative integer';
  }
  return undefined;
}

/** The pull API routes: GET /api/v1/flows, POST /api/v1/ack. */
export function pullApiRouter(deps: PullApiDeps): Router {
  const { backlog, metrics } = deps;
  const router = new Router();

  router.get(PULL_PATH, async (ctx) => {
    let maxFlows = Number.POSITIVE_INFINITY;
    const q = ctx.query.max_flows;
    if (q !== undefined) {
      if (typeof q !== 'string' || !/^\d{1,15}$/.test(q) || Number(q) < 1) {
        ctx.status = 400;
        ctx.type = 'text/plain';
        ctx.body = `max_flows must be a whole number ≥ 1, got ${JSON.stringify(q)}\n`;
        return;
      }
      maxFlows = Number(q);
    }
    const response: PullResponse = {
      version: 1,
      bootId: backlog.bootId,
      node: deps.node,
      source: typeof deps.source === 'string' ? deps.source : deps.source.name,
      batches: backlog.pull(maxFlows),
      // After the pull: its own boundary is among them.
      boundaries: backlog.pendingBoundaries(),
      acked: backlog.acked,
    };
    const body = encodePullBody(response);
    metrics.pulls.inc();
    ctx.vary('Accept-Encoding');
    ctx.type = MSGPACK_TYPE;
    if (ctx.acceptsEncodings('gzip', 'identity') === 'gzip') {
      ctx.body = await gzipPullBody(body);
      ctx.set('Content-Encoding', 'gzip');
    } else {
      ctx.body = body;
    }
  });

  router.post(ACK_PATH, async (ctx) => {
    ctx.type = 'text/plain';
    try {
      const type = ctx.get('content-type');
      if (type !== '' && !type.startsWith(MSGPACK_TYPE)) {
        throw new BadRequest(415, `expected Content-Type ${MSGPACK_TYPE}, got ${type}`);
      }
      const raw = await readBody(ctx.req, MAX_ACK_BYTES);
      if (raw.length === 0) throw new BadRequest(400, 'empty body: expected a msgpack map {bootId, seq}');
      let decoded: unknown;
      try {
        decoded = unpackr.unpack(raw);
      } catch (err) {
        throw new BadRequest(400, `body is not msgpack: ${(err as Error).message}`);
      }
      const problem = ackProblem(decoded);
      if (problem) throw new BadRequest(400, `invalid ack: ${problem}`);
      const { bootId, seq } = decoded as { bootId: string; seq: number };
      const result = backlog.ack(bootId, seq);
      if (!result.ok) {
        metrics.acks.inc({ result: 'conflict' });
        ctx.status = 409;
        ctx.body = `${result.reason}\n`;
        return;
      }
      metrics.acks.inc({ result: 'ok' });
      ctx.status = 204;
    } catch (err) {
      if (!(err instanceof BadRequest)) throw err;
      metrics.acks.inc({ result: 'invalid' });
      deps.log.debug({ status: err.status, reason: err.message }, 'rejected an ack');
      ctx.status = err.status;
      ctx.body = `${err.message}\n`;
    }
  });

  return router;
}

export interface CollectorServerConfig {
  listen: { host: string; port: number };
}

export interface CollectorServerDeps extends PullApiDeps {
  registry: Registry;
  notReady: () => string | undefined;
}

/** The collector's HTTP server. No I/O until `start()`. */
export function createCollectorServer(config: CollectorServerConfig, deps: CollectorServerDeps): HttpServer {
  return new HttpServer(config, {
    registry: deps.registry,
    notReady: deps.notReady,
    log: deps.log,
    router: pullApiRouter(deps),
  });
}
