// The built-in view's routes on a real HttpServer: the traffic API (parameters, errors, read-only),
// the built page and its Content-Security-Policy, and --metrics-auth in front of both.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../shared/config.js';
import type { EnrichedFlow } from '../shared/flow.js';
import { createRegistry, HttpServer } from '../shared/http.js';
import { silentLogger } from '../shared/log.js';
import { TokenFile } from '../shared/token.js';
import type { TrafficResponse } from '../shared/traffic.js';
import { enriched, fromApi, toInternet } from '../test/fixtures/flows.js';
import { createExportGraph, staticDiscovery } from './pipeline.js';
import { TrafficRing } from './traffic-ring.js';
import { loadViewPage, type ViewPage, viewRouter } from './view.js';

const ROOT = new URL('..', import.meta.url).pathname;

/** shop/api-1 to the internet name api.stripe.com. */
const flow = (over: Partial<EnrichedFlow>): EnrichedFlow =>
  enriched({
    ts: Date.now(),
    intervalSeconds: 1,
    ...fromApi,
    srcRegion: '',
    ...toInternet,
    dstIp: '203.0.113.7',
    dstDnsName: 'api.stripe.com',
    txBytes: 100,
    rxBytes: 900,
    txPackets: 1,
    rxPackets: 1,
    cost: 0,
    ...over,
  });

async function serve(page: ViewPage | null | undefined, auth?: TokenFile) {
  const ring = new TrafficRing({ exportInterval: 1000 });
  const server = new HttpServer(
    { listen: { host: '127.0.0.1', port: 0 } },
    {
      registry: new Registry(),
      notReady: () => undefined,
      log: silentLogger,
      router: viewRouter({ ring, log: silentLogger, page }),
      auth,
    },
  );
  const { port } = await server.start();
  return { ring, server, base: `http://127.0.0.1:${port}` };
}

describe('view routes', () => {
  let page: ViewPage | undefined;
  let dir: string;

  beforeAll(async () => {
    // The page as `npm run build` makes it.
    await promisify(execFile)(process.execPath, [join(ROOT, 'view/build.mjs')]);
    page = loadViewPage();
    dir = await mkdtemp(join(tmpdir(), 'podflow-view-'));
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('answers the traffic API from the ring, refuses bad parameters in one line, and is read-only', async () => {
    const { ring, server, base } = await serve(page);
    try {
      await ring.push([flow({}), flow({ srcPod: 'api-2', srcIp: '10.0.0.2', txBytes: 2000, rxBytes: 0 })]);
      const res = await fetch(`${base}/api/v1/traffic?window=1m&group=pod&q=stripe&limit=1`);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^application\/json/);
      expect(res.headers.get('cache-control')).toBe('no-store');
      const body = (await res.json()) as TrafficResponse;
      expect(body).toMatchObject({
        window: 60,
        group: 'pod',
        interval: 1,
        matched: 2,
        total: { bytes: 3000 },
      });
      expect(body.rows).toEqual([
        expect.objectContaining({
          a: expect.objectContaining({ label: 'api-2', namespace: 'shop' }),
          b: expect.objectContaining({ label: 'api.stripe.com', ip: '203.0.113.7' }),
          class: 'internet',
          aToB: 2000,
          bToA: 0,
          // The flows' cost (0 here: no price table) summed.
          cost: 0,
        }),
      ]);
      // Defaults: 5 minutes by workload.
      const dflt = (await (await fetch(`${base}/api/v1/traffic`)).json()) as TrafficResponse;
      expect(dflt).toMatchObject({ window: 300, group: 'workload', matched: 1 });

      for (const [query, message] of [
        ['window=forever', 'invalid window="forever": expected a duration like 5m from 1s to 15m'],
        ['window=16m', 'invalid window="16m": expected a duration like 5m from 1s to 15m'],
        ['group=node', 'invalid group="node": expected namespace, workload, pod'],
        [
          'class=egress',
          'invalid class="egress": expected one of same-zone, cross-zone, cross-region, internet, private, unknown',
        ],
        ['limit=0', 'invalid limit="0": expected a whole number from 1 to 5000'],
      ]) {
        const bad = await fetch(`${base}/api/v1/traffic?${query}`);
        expect(bad.status, query).toBe(400);
        expect(await bad.text()).toBe(`${message}\n`);
      }
      expect((await fetch(`${base}/api/v1/traffic`, { method: 'POST' })).status).toBe(405);
      expect((await fetch(`${base}/`, { method: 'DELETE' })).status).toBe(405);
    } finally {
      await server.close();
    }
  });

  it('serves one self-contained page whose CSP allows only its own inline code and origin', async () => {
    expect(page, 'dist/view/index.html missing after view/build.mjs').toBeDefined();
    const { server, base } = await serve(page);
    try {
      const res = await fetch(`${base}/`);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe('text/html; charset=utf-8');
      const html = await res.text();
      expect(html).toContain('<table id="talkers">');
      expect(html).toContain('d3-force@3');
      // Nothing is loaded from elsewhere: no src or href attributes, no link or import.
      expect(html).not.toMatch(/\ssrc=|\shref=|<link|@import/i);
      const scripts = [...html.matchAll(/<script>([\s\S]*?)<\/script>/g)].map((m) => m[1]);
      expect(scripts).toHaveLength(1);
      const sha = createHash('sha256').update(scripts[0]).digest('base64');
      const csp = res.headers.get('content-security-policy') ?? '';
      expect(csp).toContain(`script-src 'sha256-${sha}'`);
      expect(csp).toContain("default-src 'none'");
      expect(csp).toContain("connect-src 'self'");
    } finally {
      await server.close();
    }
    // Not built (tsc alone): 503 saying what to run, the API still answers.
    const bare = await serve(null);
    try {
      const res = await fetch(`${bare.base}/`);
      expect(res.status).toBe(503);
      expect(await res.text()).toBe('the built-in view is not built: run npm run build\n');
      expect((await fetch(`${bare.base}/api/v1/traffic`)).status).toBe(200);
    } finally {
      await bare.server.close();
    }
  });

  it('with --metrics-auth wants a token: as a bearer, or as the password a browser prompts for', async () => {
    const file = join(dir, 'tokens');
    await writeFile(file, 's3cret\n');
    const { server, base } = await serve(page, new TokenFile(file, { log: silentLogger }));
    const basic = (user: string, pass: string) =>
      `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;
    try {
      for (const path of ['/', '/api/v1/traffic']) {
        const denied = await fetch(`${base}${path}`);
        expect(denied.status, path).toBe(401);
        // Both challenges: a browser shows its password prompt on the Basic one.
        expect(denied.headers.get('www-authenticate')).toBe(
          'Bearer realm="podflow", Basic realm="podflow", charset="UTF-8"',
        );
        const ok = async (authorization: string) =>
          (await fetch(`${base}${path}`, { headers: { authorization } })).status;
        expect(await ok('Bearer s3cret')).toBe(200);
        expect(await ok(basic('anyone', 's3cret'))).toBe(200);
        expect(await ok(basic('s3cret', 'wrong'))).toBe(401);
        expect(await ok('Basic not-base64!')).toBe(401);
        expect(await ok(basic('', ''))).toBe(401);
      }
      expect((await fetch(`${base}/healthz`)).status).toBe(200);
    } finally {
      await server.close();
    }
  });

  it('--view=false leaves the view out of the export graph', () => {
    const graph = (flags: Record<string, unknown>) =>
      createExportGraph(loadConfig({ command: 'exporter', flags, env: {} }), {
        discovery: staticDiscovery([]),
        registry: createRegistry(),
        log: silentLogger,
      });
    expect(graph({}).view).toBeInstanceOf(TrafficRing);
    expect(graph({ view: 'false' }).view).toBeUndefined();
  });
});
