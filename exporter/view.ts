// The built-in view's routes (`--view`, on by default): `GET /`, one self-contained page built into
// dist/view/index.html (view/build.mjs), and `GET /api/v1/traffic`, the JSON it draws, computed
// from the TrafficRing. Read-only: GET and HEAD only. Behind `--metrics-auth` like /metrics
// (shared/http.ts), where a browser gives the token as the password of its Basic prompt.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import Router from '@koa/router';
import { formatDuration, parseDuration } from '../shared/config.js';
import type { Logger } from '../shared/log.js';
import {
  TRAFFIC_PATH,
  VIEW_CLASSES,
  VIEW_GROUPS,
  type ViewClass,
  type ViewGroup,
} from '../shared/traffic.js';
import type { TrafficQuery, TrafficRing } from './traffic-ring.js';

/** Where `npm run build` puts the page: dist/view/index.html, next to dist/exporter/ (or from the sources). */
const PAGE_CANDIDATES = [
  new URL('../view/index.html', import.meta.url),
  new URL('../dist/view/index.html', import.meta.url),
];

export const DEFAULT_WINDOW_MS = 5 * 60_000;
export const DEFAULT_LIMIT = 200;
const MAX_LIMIT = 5000;

export interface ViewPage {
  html: string;
  /** Content-Security-Policy: the page's own inline script and style, and requests to this origin only. */
  csp: string;
}

/**
 * The built page, or undefined when it is not built (tsc alone was run). Its CSP allows exactly its
 * inline script and style (by hash) and fetches from its own origin: the browser itself refuses
 * anything else, so nothing is fetched from elsewhere even by mistake.
 */
export function loadViewPage(): ViewPage | undefined {
  for (const url of PAGE_CANDIDATES) {
    let html: string;
    try {
      html = readFileSync(url, 'utf8');
    } catch {
      continue;
    }
    const hashes = (tag: string) =>
      [...html.matchAll(new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`, 'g'))]
        .map((m) => `'sha256-${createHash('sha256').update(m[1]).digest('base64')}'`)
        .join(' ');
    const csp = [
      "default-src 'none'",
      `script-src ${hashes('script')}`,
      `style-src ${hashes('style')}`,
      "connect-src 'self'",
      'img-src data:',
      "base-uri 'none'",
      "form-action 'none'",
      "frame-ancestors 'none'",
    ].join('; ');
    return { html, csp };
  }
  return undefined;
}

export interface ViewDeps {
  ring: TrafficRing;
  log: Logger;
  /** The page to serve; null: none (GET / answers 503). @default loadViewPage() */
  page?: ViewPage | null;
}

/** Query parameters → TrafficQuery, or the one-line reason it is refused. */
export function parseTrafficQuery(
  params: Record<string, string | string[] | undefined>,
  spanMs: number,
): TrafficQuery | string {
  const one = (name: string): string | undefined => {
    const v = params[name];
    const s = Array.isArray(v) ? v[v.length - 1] : v;
    return s === undefined || s.trim() === '' ? undefined : s.trim();
  };
  const rawWindow = one('window');
  const window = rawWindow === undefined ? DEFAULT_WINDOW_MS : parseDuration(rawWindow);
  if (window === undefined || window < 1000 || window > spanMs) {
    return `invalid window=${JSON.stringify(rawWindow)}: expected a duration like 5m from 1s to ${formatDuration(spanMs)}`;
  }
  const group = one('group') ?? 'workload';
  if (!(VIEW_GROUPS as readonly string[]).includes(group)) {
    return `invalid group=${JSON.stringify(group)}: expected ${VIEW_GROUPS.join(', ')}`;
  }
  const cls = one('class');
  if (cls !== undefined && !(VIEW_CLASSES as readonly string[]).includes(cls)) {
    return `invalid class=${JSON.stringify(cls)}: expected one of ${VIEW_CLASSES.join(', ')}`;
  }
  const rawLimit = one('limit');
  const limit =
    rawLimit === undefined ? DEFAULT_LIMIT : /^\d+$/.test(rawLimit) ? Number(rawLimit) : Number.NaN;
  if (!(limit >= 1 && limit <= MAX_LIMIT)) {
    return `invalid limit=${JSON.stringify(rawLimit)}: expected a whole number from 1 to ${MAX_LIMIT}`;
  }
  return {
    window,
    group: group as ViewGroup,
    namespace: one('namespace'),
    class: cls as ViewClass | undefined,
    text: one('q'),
    limit,
  };
}

export function viewRouter(deps: ViewDeps): Router {
  const page = deps.page === undefined ? loadViewPage() : (deps.page ?? undefined);
  if (page === undefined) {
    deps.log.warn(
      'the built-in view is not built (dist/view/index.html): GET / answers 503; run npm run build',
    );
  }
  const router = new Router();
  router.get('/', (ctx) => {
    ctx.set('Cache-Control', 'no-cache');
    ctx.set('X-Content-Type-Options', 'nosniff');
    if (page === undefined) {
      ctx.status = 503;
      ctx.type = 'text/plain';
      ctx.body = 'the built-in view is not built: run npm run build\n';
      return;
    }
    ctx.set('Content-Security-Policy', page.csp);
    ctx.set('Referrer-Policy', 'no-referrer');
    ctx.type = 'text/html; charset=utf-8';
    ctx.body = page.html;
  });
  router.get(TRAFFIC_PATH, (ctx) => {
    ctx.set('Cache-Control', 'no-store');
    const q = parseTrafficQuery(ctx.query, deps.ring.spanMs);
    if (typeof q === 'string') {
      ctx.status = 400;
      ctx.type = 'text/plain';
      ctx.body = `${q}\n`;
      return;
    }
    ctx.type = 'application/json';
    ctx.body = JSON.stringify(deps.ring.query(q));
  });
  return router;
}
