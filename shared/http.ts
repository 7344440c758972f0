// The HTTP face every podflow process shares: /healthz, /readyz and /metrics on one Koa app, plus
// whatever routes the process adds (the collector's pull API). Metrics come from an explicit
// Registry handed in: nothing registers globally, so two halves can share one /metrics
// (standalone) and tests can build as many servers as they like.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import Router from '@koa/router';
import Koa from 'koa';
import { collectDefaultMetrics, Registry } from 'prom-client';
import type { Logger } from './log.js';

/** A registry with the process metrics (CPU, memory, event loop lag, GC) of prom-client. */
export function createRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return registry;
}

export interface HttpServerConfig {
  listen: { host: string; port: number };
}

export interface HttpServerDeps {
  registry: Registry;
  /** Why the process is not ready yet, or undefined when it is. */
  notReady: () => string | undefined;
  log: Logger;
  /** Extra routes (mounted before the built-in ones). */
  router?: Router;
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
      ctx.body = await deps.registry.metrics();
    });
    this.app.silent = true;
    this.app.on('error', (err: Error) => deps.log.warn({ err }, 'http request failed'));
    if (deps.router) this.app.use(deps.router.routes()).use(deps.router.allowedMethods());
    this.app.use(router.routes()).use(router.allowedMethods());
  }

  /** Binds the address. Rejects with the reason (address in use, permission) when it cannot. */
  async start(): Promise<AddressInfo> {
    const { host, port } = this.config.listen;
    const srv = createServer(this.app.callback());
    // Pull responses are built in memory and sent at once; a slow reader must not hold a socket.
    srv.requestTimeout = 60_000;
    srv.keepAliveTimeout = 65_000;
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen({ host, port }, () => {
        srv.off('error', reject);
        resolve();
      });
    });
    this.server = srv;
    const addr = srv.address() as AddressInfo;
    this.deps.log.info({ address: addr.address, port: addr.port }, 'listening');
    return addr;
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
