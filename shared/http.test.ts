import { request } from 'node:http';
import { gunzipSync } from 'node:zlib';
import Router from '@koa/router';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { createRegistry, HttpServer, type MetricsBody } from './http.js';
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
  body?: MetricsBody,
) {
  return new HttpServer(
    { listen: { host: '127.0.0.1', port: 0 } },
    { registry, body, notReady, log: silentLogger, router },
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

/**
 * An empty registry and a /metrics body in chunks of whole lines (as the exporter's flow sink
 * makes): `lines` sample lines; counts the chunks made so far.
 */
function chunkedRegistry(lines: number) {
  const registry = new Registry();
  const line = (i: number) => `flow_total{i="${i}",pad="${'x'.repeat(40)}"} ${i}\n`;
  let made = 0;
  const body: MetricsBody = {
    chunks: () => {
      let i = 0;
      return {
        next(into?: Buffer) {
          if (i >= lines) return undefined;
          const buf = into ?? Buffer.allocUnsafe(256 << 10);
          let o = 0;
          while (i < lines && o + 100 <= buf.length) o += buf.write(line(i++), o);
          made++;
          return buf.subarray(0, o);
        },
      };
    },
  };
  let text = '';
  for (let i = 0; i < lines; i++) text += line(i);
  return { registry, body, text, made: () => made };
}

/** GET /metrics, reading the body as bytes. */
function scrape(port: number, headers: Record<string, string> = {}) {
  return new Promise<{ body: Buffer; encoding: string | undefined; type: string | undefined }>(
    (resolve, reject) => {
      request({ host: '127.0.0.1', port, path: '/metrics', headers, agent: false }, (res) => {
        const parts: Buffer[] = [];
        res.on('data', (d: Buffer) => parts.push(d));
        res.on('end', () =>
          resolve({
            body: Buffer.concat(parts),
            encoding: res.headers['content-encoding'],
            type: res.headers['content-type'],
          }),
        );
        res.on('error', reject);
      })
        .on('error', reject)
        .end();
    },
  );
}

const waitFor = async (check: () => boolean, ms = 5000) => {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
};

describe('HttpServer /metrics in chunks', () => {
  it('writes the chunks as the body, gzip only when enabled and accepted', async () => {
    const { registry, body, text, made } = chunkedRegistry(30_000);
    const plain = new HttpServer(
      { listen: { host: '127.0.0.1', port: 0 } },
      { registry, body, notReady: () => undefined, log: silentLogger },
    );
    const zipping = new HttpServer(
      { listen: { host: '127.0.0.1', port: 0 } },
      { registry, body, notReady: () => undefined, log: silentLogger, gzipMetrics: true },
    );
    const a = await plain.start();
    const b = await zipping.start();
    try {
      expect(Buffer.byteLength(text)).toBeGreaterThan(4 * (256 << 10));
      const got = await scrape(a.port, { 'accept-encoding': 'gzip' });
      expect(got.type).toBe(registry.contentType);
      expect(got.encoding).toBeUndefined();
      expect(got.body.toString()).toBe(text);
      const zipped = await scrape(b.port, { 'accept-encoding': 'gzip' });
      expect(zipped.encoding).toBe('gzip');
      expect(gunzipSync(zipped.body).toString()).toBe(text);
      const unasked = await scrape(b.port);
      expect(unasked.encoding).toBeUndefined();
      expect(unasked.body.toString()).toBe(text);
      // HEAD: the headers only, no chunk made.
      const before = made();
      const head = await new Promise<number | undefined>((resolve, reject) => {
        request(
          { host: '127.0.0.1', port: a.port, path: '/metrics', method: 'HEAD', agent: false },
          (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode));
          },
        )
          .on('error', reject)
          .end();
      });
      expect(head).toBe(200);
      expect(made()).toBe(before);
    } finally {
      await plain.close();
      await zipping.close();
    }
  });

  it('makes chunks only as fast as a slow scraper reads them', async () => {
    // About 44 MB: far more than the kernel's socket buffers hold.
    const { registry, body, text, made } = chunkedRegistry(700_000);
    const total = Math.ceil(Buffer.byteLength(text) / ((256 << 10) - 100));
    const s = server(undefined, undefined, registry, body);
    const { port } = await s.start();
    try {
      let received = 0;
      let res!: import('node:http').IncomingMessage;
      const done = new Promise<void>((resolve, reject) => {
        request({ host: '127.0.0.1', port, path: '/metrics', agent: false }, (r) => {
          res = r;
          r.pause();
          r.on('data', (d: Buffer) => {
            received += d.length;
          });
          r.on('end', resolve);
          r.on('error', reject);
        })
          .on('error', reject)
          .end();
      });
      await waitFor(() => made() > 0);
      // Paused: the server stops once the socket buffers are full.
      await new Promise((r) => setTimeout(r, 300));
      const whilePaused = made();
      await new Promise((r) => setTimeout(r, 200));
      expect(made()).toBe(whilePaused);
      expect(whilePaused).toBeLessThan(total / 2);
      res.resume();
      await done;
      expect(received).toBe(Buffer.byteLength(text));
      expect(made()).toBe(total);
    } finally {
      await s.close();
    }
  });

  it('stops making chunks when the scraper goes away, and serves the next scrape', async () => {
    const { registry, body, text, made } = chunkedRegistry(700_000);
    const s = server(undefined, undefined, registry, body);
    const { port } = await s.start();
    try {
      await new Promise<void>((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port, path: '/metrics', agent: false }, (r) => {
          r.once('data', () => {
            req.destroy();
            resolve();
          });
        });
        req.on('error', (err) => (req.destroyed ? undefined : reject(err)));
        req.end();
      });
      await new Promise((r) => setTimeout(r, 300));
      const after = made();
      await new Promise((r) => setTimeout(r, 200));
      expect(made()).toBe(after);
      expect(after).toBeLessThan(100);
      expect(await get(port, '/healthz')).toEqual({ status: 200, body: 'ok\n' });
      const again = await scrape(port);
      expect(again.body.length).toBe(Buffer.byteLength(text));
    } finally {
      await s.close();
    }
  });
});
