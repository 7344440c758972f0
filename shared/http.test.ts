import { request } from 'node:http';
import Router from '@koa/router';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { createRegistry, HttpServer } from './http.js';
import { silentLogger } from './log.js';

function get(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = '';
      res.on('data', (d) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode!, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

function server(
  router?: Router,
  notReady: () => string | undefined = () => undefined,
  registry = new Registry(),
) {
  return new HttpServer(
    { listen: { host: '127.0.0.1', port: 0 } },
    { registry, notReady, log: silentLogger, router },
  );
}

describe('HttpServer', () => {
  it('serves /healthz, /readyz with the reason, and /metrics from its own registry', async () => {
    let why: string | undefined = 'warming up';
    const registry = createRegistry();
    const s = server(undefined, () => why, registry);
    const { port } = await s.start();
    try {
      expect(await get(port, '/healthz')).toEqual({ status: 200, body: 'ok\n' });
      expect(await get(port, '/readyz')).toEqual({ status: 503, body: 'not ready: warming up\n' });
      why = undefined;
      expect(await get(port, '/readyz')).toEqual({ status: 200, body: 'ready\n' });
      const metrics = await get(port, '/metrics');
      expect(metrics.status).toBe(200);
      expect(metrics.body).toMatch(/^process_cpu_seconds_total \d/m);
      expect(metrics.body).toMatch(/^nodejs_eventloop_lag_seconds /m);
    } finally {
      await s.close();
    }
  });

  it('on close stops accepting, lets a request in progress finish, then resolves', async () => {
    let release: () => void = () => {};
    const router = new Router();
    router.get('/slow', async (ctx) => {
      await new Promise<void>((resolve) => {
        release = resolve;
      });
      ctx.body = 'done';
    });
    const s = server(router);
    const { port } = await s.start();
    const slow = get(port, '/slow');
    await new Promise((resolve) => setTimeout(resolve, 50));
    let closed = false;
    const closing = s.close(Date.now() + 10_000).then(() => {
      closed = true;
    });
    // New connections are refused at once…
    await expect(get(port, '/healthz')).rejects.toThrow(/ECONNREFUSED/);
    expect(closed).toBe(false);
    // …while the request in progress still gets its answer.
    release();
    expect(await slow).toEqual({ status: 200, body: 'done' });
    await closing;
    expect(closed).toBe(true);
  });

  it('cuts requests still running at the deadline', async () => {
    const router = new Router();
    router.get('/hang', () => new Promise<void>(() => {}));
    const s = server(router);
    const { port } = await s.start();
    const hang = get(port, '/hang');
    await new Promise((resolve) => setTimeout(resolve, 50));
    await s.close(Date.now() + 200);
    await expect(hang).rejects.toThrow(/socket hang up|ECONNRESET/);
  });

  it('reports a taken port as the listen error', async () => {
    const a = server();
    const { port } = await a.start();
    const b = new HttpServer(
      { listen: { host: '127.0.0.1', port } },
      { registry: new Registry(), notReady: () => undefined, log: silentLogger },
    );
    await expect(b.start()).rejects.toMatchObject({ code: 'EADDRINUSE' });
    await a.close();
  });
});
