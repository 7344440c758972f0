// The HTTP face every podflow process shares: /healthz, /readyz and /metrics on one Koa app, plus
// whatever routes the process adds (the collector's pull API). Metrics come from an explicit
// Registry handed in, and an optional body provider for what follows it (the flow counters):
// nothing registers globally, so two halves can share one /metrics (standalone) and tests can
// build as many servers as they like.

import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, ListenOptions } from 'node:net';
import type { Writable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import { createGzip } from 'node:zlib';
import Router from '@koa/router';
import Koa from 'koa';
import { collectDefaultMetrics, Gauge, Registry } from 'prom-client';
import type { Logger } from './log.js';
import { VERSION } from './version.js';

/**
 * A registry with the process metrics (CPU, memory, event loop lag, GC) of prom-client and
 * `podflow_build_info{version,node_version} 1`, which tells the versions running in a rollout apart.
 */
export function createRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  new Gauge({
    name: 'podflow_build_info',
    help: 'Always 1: the podflow version and the Node.js version of this process',
    labelNames: ['version', 'node_version'],
    registers: [registry],
  }).set({ version: VERSION, node_version: process.versions.node }, 1);
  return registry;
}

/**
 * A /metrics body made a chunk at a time: the exporter's flow counters are hundreds of MB of text at
 * large label sets, too much to hold as one string (and again as the Buffer the socket needs).
 */
export interface MetricsChunks {
  /**
   * The next chunk of whole lines, written into `into` when given and large enough (the caller
   * reuses its buffers), else into a new Buffer; undefined at the end.
   */
  next(into?: Buffer): Buffer | undefined;
  /**
   * Optional: told once the response ended, whether the scraper got all of it (true) or the
   * request failed or went away first (false).
   */
  done?(complete: boolean): void;
}

/**
 * What /metrics serves after the Registry's text (the exporter's flow counters, whose text is too
 * large for the Registry's one string): handed to the server beside the Registry.
 */
export interface MetricsBody {
  /**
   * One response's body: `head` (the Registry's text without its last newline) first, then the
   * provider's own; made as the socket takes it. `done` is called when the response ended.
   */
  chunks(head: string): MetricsChunks;
}

/** All of `text` as one string (tests, small bodies); not a response: `done` is not called. */
export function joinChunks(text: MetricsChunks): string {
  const decoder = new StringDecoder('utf8');
  let out = '';
  for (let c = text.next(); c !== undefined; c = text.next()) out += decoder.write(c);
  return out + decoder.end();
}

/** One /metrics response's chunks: the Registry's text, then `body`'s. */
export async function metricsChunks(registry: Registry, body: MetricsBody): Promise<MetricsChunks> {
  return body.chunks((await registry.metrics()).trimEnd());
}

/** The /metrics text as one string (what a scrape gets; not counted as one): for tests. */
export async function metricsText(registry: Registry, body?: MetricsBody): Promise<string> {
  return body === undefined ? registry.metrics() : readWhole(await metricsChunks(registry, body));
}

/**
 * `joinChunks` of a response read here, not served to a scraper: ended as an incomplete one, so it
 * makes nothing durable (MetricsChunks.done).
 */
export function readWhole(text: MetricsChunks): string {
  try {
    return joinChunks(text);
  } finally {
    text.done?.(false);
  }
}

/** Size of the two buffers a /metrics response is written through. */
const METRICS_CHUNK_BYTES = 256 << 10;

export interface HttpServerConfig {
  listen: { host: string; port: number };
}

export interface HttpServerDeps {
  /** The process's self-metrics: the whole of /metrics without `body`, its start with one. */
  registry: Registry;
  /** The rest of /metrics, written in chunks (the exporter's flow counters). */
  body?: MetricsBody;
  /** Why the process is not ready yet, or undefined when it is. */
  notReady: () => string | undefined;
  log: Logger;
  /** Extra routes (mounted before the built-in ones). */
  router?: Router;
  /**
   * gzip a chunked /metrics body when the scraper accepts it. Off: at hundreds of MB even level 1
   * takes longer than writing the text over a cluster network. @default false
   */
  gzipMetrics?: boolean;
  /**
   * `--metrics-auth`: /metrics (and every other route but /healthz and /readyz) wants a bearer
   * token of this file. Probes stay open: the kubelet sends no token.
   */
  auth?: { accepts(authorization: string | undefined): boolean };
}

export class HttpServer {
  readonly app = new Koa();
  private server: Server | undefined;

  constructor(
    private readonly config: HttpServerConfig,
    private readonly deps: HttpServerDeps,
  ) {
    const router = new Router();
    router.get('/healthz', (ctx) => {
      ctx.type = 'text/plain';
      ctx.body = 'ok\n';
    });
    router.get('/readyz', (ctx) => {
      const why = deps.notReady();
      ctx.type = 'text/plain';
      ctx.status = why === undefined ? 200 : 503;
      ctx.body = why === undefined ? 'ready\n' : `not ready: ${why}\n`;
    });
    router.get('/metrics', async (ctx) => {
      ctx.type = deps.registry.contentType;
      const body = deps.body;
      if (body === undefined) {
        ctx.body = await deps.registry.metrics();
        return;
      }
      // Written here, not through Koa's body handling: a buffer is filled again only once the
      // socket took it (see writeChunks).
      ctx.respond = false;
      const res = ctx.res;
      res.statusCode = 200;
      if (ctx.method === 'HEAD') {
        res.end();
        return;
      }
      const text = await metricsChunks(deps.registry, body);
      const gzip = deps.gzipMetrics === true && ctx.acceptsEncodings('gzip', 'identity') === 'gzip';
      res.setHeader('Vary', 'Accept-Encoding');
      if (gzip) res.setHeader('Content-Encoding', 'gzip');
      let complete = false;
      try {
        complete = await writeChunks(res, text, gzip);
      } catch (err) {
        // Headers are out: all that is left is to cut the connection, so the scraper sees a failure.
        res.destroy();
        deps.log.warn({ err }, 'writing /metrics failed');
      }
      text.done?.(complete);
    });
    this.app.silent = true;
    this.app.on('error', (err: Error) => deps.log.warn({ err }, 'http request failed'));
    const auth = deps.auth;
    if (auth !== undefined) {
      this.app.use(async (ctx, next) => {
        if (
          ctx.path === '/healthz' ||
          ctx.path === '/readyz' ||
          auth.accepts(asBearer(ctx.get('authorization') || undefined))
        ) {
          return next();
        }
        ctx.status = 401;
        // Basic too: a browser cannot send a bearer token, but asks for a password on this
        // challenge and sends it with every request of the built-in view after.
        ctx.set('WWW-Authenticate', ['Bearer realm="podflow"', 'Basic realm="podflow", charset="UTF-8"']);
        ctx.type = 'text/plain';
        ctx.body = 'unauthorized\n';
      });
    }
    if (deps.router) this.app.use(deps.router.routes()).use(deps.router.allowedMethods());
    this.app.use(router.routes()).use(router.allowedMethods());
  }

  /**
   * Binds the address. Rejects with the reason (address in use, permission) when it cannot. Host ''
   * is every address: `::` with IPv4 mapped in (dual-stack), or 0.0.0.0 where the host has no IPv6.
   */
  async start(): Promise<AddressInfo> {
    const { host, port } = this.config.listen;
    let srv: Server;
    if (host !== '') {
      srv = await this.bind({ host, port });
    } else {
      try {
        srv = await this.bind({ host: '::', port, ipv6Only: false });
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'EAFNOSUPPORT' && code !== 'EADDRNOTAVAIL') throw err;
        this.deps.log.debug({ code }, 'no IPv6 on this host: listening on 0.0.0.0 (IPv4) only');
        srv = await this.bind({ host: '0.0.0.0', port });
      }
    }
    this.server = srv;
    const addr = srv.address() as AddressInfo;
    this.deps.log.info({ address: addr.address, port: addr.port }, 'listening');
    return addr;
  }

  private async bind(options: ListenOptions): Promise<Server> {
    const srv = createServer(this.app.callback());
    // Pull responses are built in memory and sent at once; a slow reader must not hold a socket.
    srv.requestTimeout = 60_000;
    srv.keepAliveTimeout = 65_000;
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(options, () => {
        srv.off('error', reject);
        resolve();
      });
    });
    return srv;
  }

  /** The bound address (after start). */
  address(): AddressInfo | undefined {
    return (this.server?.address() as AddressInfo | null) ?? undefined;
  }

  /**
   * Stops accepting connections, lets requests in progress finish until `deadline` (ms since the
   * epoch), then cuts what is left.
   */
  async close(deadline = Date.now() + 5000): Promise<void> {
    const srv = this.server;
    if (!srv) return;
    this.server = undefined;
    const closed = new Promise<void>((resolve) => srv.close(() => resolve()));
    srv.closeIdleConnections();
    const timer = setTimeout(() => srv.closeAllConnections(), Math.max(0, deadline - Date.now()));
    timer.unref();
    await closed;
    clearTimeout(timer);
  }
}

/**
 * `Basic base64(user:token)` (what a browser sends after its password prompt) as `Bearer token`;
 * any other header as it is. The user name is ignored.
 */
export function asBearer(authorization: string | undefined): string | undefined {
  const m = authorization === undefined ? null : /^Basic[ \t]+([A-Za-z0-9+/=]+)[ \t]*$/i.exec(authorization);
  if (!m) return authorization;
  const plain = Buffer.from(m[1], 'base64').toString('utf8');
  const colon = plain.indexOf(':');
  return colon < 0 ? undefined : `Bearer ${plain.slice(colon + 1)}`;
}

/**
 * Writes `text` to `res` (through gzip level 1 when `gzip`) with two buffers in turn: a buffer is
 * filled again only after the stream called back for it (handed to the kernel, or taken by zlib),
 * and a new chunk is made only while fewer than two are in flight. So a slow scraper holds the
 * response at two chunks of memory, and nothing is allocated per chunk. Resolves when the body is
 * complete (true) or the client went away (false); rejects when writing failed.
 */
export async function writeChunks(res: ServerResponse, text: MetricsChunks, gzip = false): Promise<boolean> {
  let out: Writable = res;
  if (gzip) {
    const z = createGzip({ level: 1, chunkSize: 64 << 10 });
    z.on('error', (err) => res.destroy(err));
    z.pipe(res);
    out = z;
  }
  const free: Buffer[] = [Buffer.allocUnsafe(METRICS_CHUNK_BYTES), Buffer.allocUnsafe(METRICS_CHUNK_BYTES)];
  let wake: (() => void) | undefined;
  let failure: Error | undefined;
  let gone = false;
  const onClose = () => {
    if (!res.writableFinished) gone = true;
    wake?.();
  };
  res.on('close', onClose);
  const wait = () => new Promise<void>((resolve) => (wake = resolve));
  try {
    for (;;) {
      while (free.length === 0 && !gone && failure === undefined) await wait();
      if (gone) {
        if (gzip) out.destroy();
        return false;
      }
      if (failure !== undefined) throw failure;
      const buf = free.pop() as Buffer;
      const chunk = text.next(buf);
      if (chunk === undefined) break;
      // A very long line comes in a Buffer of its own: `buf` is free again at once.
      const own = chunk.buffer === buf.buffer;
      if (!own) free.push(buf);
      out.write(chunk, (err) => {
        if (err) failure ??= err;
        if (own) free.push(buf);
        wake?.();
      });
    }
    await new Promise<void>((resolve, reject) => {
      res.once('finish', resolve);
      res.once('close', resolve);
      res.once('error', reject);
      out.end();
    });
    return res.writableFinished;
  } finally {
    res.off('close', onClose);
  }
}
