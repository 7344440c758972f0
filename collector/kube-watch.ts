// The collector's one list/watch, over Node's http/https: the pods of its node. The exporter's
// informer (shared/kube.ts) rides on @kubernetes/client-node; the collector runs on every node and
// that client alone costs it about 70 MB, for one resource and a few fields per object.
//
//   const w = new KubeWatch(target, { path: '/api/v1/pods', resource: 'pods', fieldSelector },
//                           toRecord, { log });
//   w.on('add' | 'update' | 'delete', cb); w.start(); w.synced(); w.lastError(); await w.close();
//
// The protocol, as client-go's reflector speaks it:
// - list in pages (limit/continue); a continue token that expired (410) restarts the list.
// - watch from the list's resourceVersion with allowWatchBookmarks and timeoutSeconds; bookmarks
//   move the resourceVersion on, so that a re-watch after a quiet spell is not too old.
// - a watch that ends (timeout, cut connection) is re-opened from the last resourceVersion; one
//   that answers "too old" (ERROR event or HTTP 410) is followed by a fresh list, diffed against the
//   cache: objects gone meanwhile get `delete`, changed ones `update`, new ones `add`.
// - any other failure (API server down, 5xx, 401/403) is logged once per outage and retried with
//   exponential backoff and jitter; the process never stops for it. `lastError()` says why for
//   /readyz until the first list is in.
// - a socket with no byte for `idleTimeoutMs` is cut (bookmarks come every minute or so on a real
//   server): a silently dead connection cannot leave the cache stale.
// - the bearer token file is read for each request (projected service-account tokens rotate).

import { readFile } from 'node:fs/promises';
import { request as httpRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { type ExecCredential, type KubeTarget, readMaterial, runExecPlugin } from '../shared/kube-access.js';
import {
  type Compact,
  type InformerOptions,
  type InformerTimings,
  informerTimings,
} from '../shared/kube-object.js';
import type { Logger } from '../shared/log.js';
import { pause } from '../shared/sleep.js';

export interface KubeWatchSpec {
  /** Collection path, e.g. /api/v1/pods. */
  path: string;
  /** Plural resource name as RBAC knows it. */
  resource: string;
  fieldSelector?: string;
}

/** Paging, watch and backoff settings: the informers' (the selectors are the client's own). */
export type KubeWatchOptions = Omit<InformerOptions, 'labelSelector' | 'fieldSelector'>;

type Verb = 'add' | 'update' | 'delete';

/** An API server answer other than 200, with the Status message when there is one. */
export class KubeHttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** The watch said the resourceVersion is too old: list again. */
class Expired extends Error {}

export class KubeWatch<R extends Compact> {
  private readonly opts: InformerTimings;
  private readonly cache = new Map<string, R>();
  private readonly callbacks: Record<Verb, ((r: R) => void)[]> = { add: [], update: [], delete: [] };
  private readonly abort = new AbortController();
  private rv = '';
  private started = false;
  private closed = false;
  private isSynced = false;
  private syncWaiters: (() => void)[] = [];
  private running: Promise<void> | undefined;
  private failure: string | undefined;
  private authLogged = false;
  private counts = { lists: 0, relists: 0, watches: 0, restarts: 0 };
  /** The credential plugin's last answer (kubeconfig `exec`), kept until it expires or is refused. */
  private execCred: ExecCredential | undefined;

  constructor(
    private readonly target: KubeTarget,
    private readonly spec: KubeWatchSpec,
    private readonly transform: (obj: unknown) => R,
    private readonly deps: { log: Logger },
    options: KubeWatchOptions = {},
  ) {
    this.opts = informerTimings(options);
  }

  /** Register before start(): `add` fires for every object of the first list. */
  on(verb: Verb, cb: (r: R) => void): void {
    this.callbacks[verb].push(cb);
  }

  /** Begin listing and watching; returns at once. Failures are logged and retried, never thrown. */
  start(): void {
    if (this.started || this.closed) return;
    this.started = true;
    this.running = this.run();
  }

  /** True once the first full list is in (for /readyz). Stays true across relists. */
  synced(): boolean {
    return this.isSynced;
  }

  /** Resolves once synced, or on close(). */
  whenSynced(): Promise<void> {
    if (this.isSynced) return Promise.resolve();
    return new Promise((resolve) => this.syncWaiters.push(resolve));
  }

  /** Why the last request failed, while failing (readiness text); undefined when fine. */
  lastError(): string | undefined {
    return this.failure;
  }

  /** The last resourceVersion applied (list, event or bookmark). */
  resourceVersion(): number {
    return Number(this.rv || 0);
  }

  stats(): { lists: number; relists: number; watches: number; restarts: number } {
    return { ...this.counts };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.abort.abort();
    await this.running;
    for (const w of this.syncWaiters.splice(0)) w();
  }

  private get what(): string {
    return this.spec.resource;
  }

  private async run(): Promise<void> {
    let needList = true;
    let attempts = 0;
    let quickEnds = 0;
    while (!this.closed) {
      let verb = needList ? 'list' : 'watch';
      try {
        if (needList) {
          await this.list();
          needList = false;
          this.markSynced();
        }
        verb = 'watch';
        const opened = Date.now();
        const progressed = await this.watch(() => {
          // Connected and answered: the API server is back.
          if (this.failure !== undefined) this.deps.log.info(`kube: watching ${this.what} again`);
          this.failure = undefined;
          this.authLogged = false;
          attempts = 0;
        });
        // A server (or proxy) that ends every watch at once would make re-watching a busy loop.
        quickEnds = progressed || Date.now() - opened > 1000 ? 0 : quickEnds + 1;
        if (quickEnds > 0) await pause(this.backoff(quickEnds - 1), this.abort.signal);
      } catch (err) {
        if (this.closed) break;
        if (err instanceof Expired || (err instanceof KubeHttpError && err.status === 410)) {
          this.deps.log.info(
            `kube: watch of ${this.what} expired (${(err as Error).message}), listing again`,
          );
          needList = true;
          continue;
        }
        this.report(verb, err);
        this.counts.restarts++;
        await pause(this.backoff(attempts++), this.abort.signal);
      }
    }
  }

  private backoff(attempt: number): number {
    const delay = Math.min(this.opts.maxBackoffMs, this.opts.initialBackoffMs * 2 ** attempt);
    return Math.round(delay * (0.8 + 0.4 * Math.random()));
  }

  private report(verb: string, err: unknown): void {
    const status = err instanceof KubeHttpError ? err.status : undefined;
    const cause = describe(err);
    const first = this.failure === undefined;
    this.failure = `${verb} ${this.what} failed: ${cause}`;
    if (status === 403) {
      if (!this.authLogged) {
        this.deps.log.error(
          { cause },
          `RBAC: cannot ${verb} ${this.what} at the cluster scope; grant get/list/watch on ${this.what}`,
        );
      }
      this.authLogged = true;
    } else if (status === 401) {
      if (!this.authLogged) {
        this.deps.log.error(
          `kube: the API server rejected our credentials (401) on ${verb} ${this.what}; check the token`,
        );
      }
      this.authLogged = true;
    } else {
      // One warning per outage; the retries go to debug.
      this.deps.log[first ? 'warn' : 'debug'](
        { cause },
        `kube: ${verb} ${this.what} failed (${cause}); retrying with backoff, podflow keeps running`,
      );
    }
  }

  private async list(): Promise<void> {
    this.counts.lists++;
    if (this.isSynced) this.counts.relists++;
    const items = new Map<string, R>();
    let cont: string | undefined;
    let rv = '';
    let restarts = 0;
    for (;;) {
      const q = new URLSearchParams({ limit: String(this.opts.pageSize) });
      if (cont !== undefined) q.set('continue', cont);
      if (this.spec.fieldSelector) q.set('fieldSelector', this.spec.fieldSelector);
      let page: { metadata?: { resourceVersion?: string; continue?: string }; items?: unknown[] };
      try {
        const res = await this.request(q, this.opts.listTimeoutMs);
        page = JSON.parse((await readBody(res)).toString('utf8')) as typeof page;
      } catch (err) {
        if (err instanceof KubeHttpError && err.status === 410 && cont !== undefined && restarts < 3) {
          // The continue token expired (compaction, API server restart): a consistent list needs a
          // fresh start, as the API documentation says.
          this.deps.log.info(
            `kube: listing ${this.what}: continue token expired, listing again from the start`,
          );
          restarts++;
          items.clear();
          cont = undefined;
          continue;
        }
        throw err;
      }
      for (const it of page.items ?? []) {
        const r = this.transform(it);
        items.set(keyOf(r), r);
      }
      rv = page.metadata?.resourceVersion ?? rv;
      cont = page.metadata?.continue || undefined;
      if (cont === undefined) break;
    }
    // The diff against what we had: nothing lost, nothing doubled across a relist.
    for (const [k, old] of this.cache) {
      if (!items.has(k)) {
        this.cache.delete(k);
        this.emit('delete', old);
      }
    }
    for (const [k, r] of items) {
      const old = this.cache.get(k);
      this.cache.set(k, r);
      if (old === undefined) this.emit('add', r);
      else if (old.metadata.resourceVersion !== r.metadata.resourceVersion) this.emit('update', r);
    }
    this.rv = rv;
  }

  /** One watch until it ends. Resolves true when it carried anything; throws Expired for "too old". */
  private async watch(connected: () => void): Promise<boolean> {
    this.counts.watches++;
    const q = new URLSearchParams({
      watch: 'true',
      resourceVersion: this.rv,
      allowWatchBookmarks: 'true',
      timeoutSeconds: String(this.opts.watchTimeoutSeconds),
    });
    if (this.spec.fieldSelector) q.set('fieldSelector', this.spec.fieldSelector);
    const res = await this.request(q, undefined);
    connected();
    let progressed = false;
    let rest = '';
    const onLine = (line: string) => {
      if (line.trim() === '') return;
      let ev: { type?: string; object?: unknown };
      try {
        ev = JSON.parse(line) as typeof ev;
      } catch {
        ev = {};
      }
      const obj = ev.object;
      if (obj === null || typeof obj !== 'object') {
        this.deps.log.warn(`kube: watch of ${this.what} sent a line that is not an event; ignored`);
        return;
      }
      if (ev.type === 'ERROR') {
        const s = obj as { code?: number; message?: string };
        if (s.code === 410) throw new Expired(s.message ?? '410');
        throw new Error(`the watch reported an error: ${s.message ?? JSON.stringify(obj)}`);
      }
      progressed = true;
      const rv = (obj as { metadata?: { resourceVersion?: unknown } }).metadata?.resourceVersion;
      if (ev.type === 'ADDED' || ev.type === 'MODIFIED') {
        const r = this.transform(obj);
        const k = keyOf(r);
        const had = this.cache.has(k);
        this.cache.set(k, r);
        this.emit(had ? 'update' : 'add', r);
      } else if (ev.type === 'DELETED') {
        const r = this.transform(obj);
        const k = keyOf(r);
        const old = this.cache.get(k);
        this.cache.delete(k);
        if (old !== undefined) this.emit('delete', old);
      }
      if (typeof rv === 'string' && rv !== '') this.rv = rv;
    };
    await new Promise<void>((resolve, reject) => {
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        const lines = (rest + chunk).split('\n');
        rest = lines.pop() ?? '';
        try {
          for (const l of lines) onLine(l);
        } catch (err) {
          res.destroy();
          reject(err);
        }
      });
      res.on('end', () => resolve());
      res.on('error', reject);
      res.on('close', () => (res.complete ? resolve() : reject(new Error('the watch connection was cut'))));
    });
    return progressed;
  }

  /** GET the collection with `query`; resolves with a 200 response, throws KubeHttpError otherwise. */
  private async request(query: URLSearchParams, deadlineMs: number | undefined): Promise<IncomingMessage> {
    const t = this.target;
    const url = new URL(`${this.spec.path}?${query}`, t.server);
    const headers: Record<string, string> = { Accept: 'application/json' };
    const cred = await this.credential();
    const token =
      cred?.token ?? (t.tokenFile !== undefined ? (await readFile(t.tokenFile, 'utf8')).trim() : t.token);
    if (token) headers.Authorization = `Bearer ${token}`;
    else if (t.basic) {
      headers.Authorization = `Basic ${Buffer.from(`${t.basic.username}:${t.basic.password}`).toString('base64')}`;
    }
    const https = url.protocol === 'https:';
    const options: RequestOptions & Record<string, unknown> = { method: 'GET', headers, agent: false };
    if (https) {
      options.ca = await readMaterial(t.ca);
      options.cert = cred?.cert ?? (await readMaterial(t.cert));
      options.key = cred?.key ?? (await readMaterial(t.key));
      options.rejectUnauthorized = !t.insecure;
      if (t.serverName !== undefined) options.servername = t.serverName;
    }
    const signals = [this.abort.signal];
    if (deadlineMs !== undefined) signals.push(AbortSignal.timeout(deadlineMs));
    options.signal = AbortSignal.any(signals);
    const idleMs = this.opts.idleTimeoutMs;
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = (https ? httpsRequest : httpRequest)(url, options, resolve);
      req.on('error', reject);
      req.setTimeout(idleMs, () =>
        req.destroy(new Error(`no data from the API server for ${idleMs / 1000}s`)),
      );
      req.end();
    });
    if (res.statusCode === 200) return res;
    // A refused plugin credential is asked for again on the next attempt.
    if (res.statusCode === 401) this.execCred = undefined;
    const body = await readBody(res).catch(() => Buffer.alloc(0));
    let message = `HTTP ${res.statusCode}`;
    try {
      const s = JSON.parse(body.toString('utf8')) as { message?: string };
      if (s.message) message = `HTTP ${res.statusCode}: ${s.message}`;
    } catch {
      // not a Status: the code says enough
    }
    throw new KubeHttpError(res.statusCode ?? 0, message);
  }

  private async credential(): Promise<ExecCredential | undefined> {
    const exec = this.target.exec;
    if (exec === undefined) return undefined;
    const c = this.execCred;
    // Renewed a little before it expires, as client-go does.
    if (c !== undefined && (c.expiresAt === undefined || c.expiresAt - 10_000 > Date.now())) return c;
    this.execCred = await runExecPlugin(exec);
    return this.execCred;
  }

  private emit(verb: Verb, r: R): void {
    for (const cb of this.callbacks[verb]) {
      try {
        cb(r);
      } catch (err) {
        this.deps.log.error({ err, resource: this.what }, `kube: handling a ${verb} of ${this.what} failed`);
      }
    }
  }

  private markSynced(): void {
    if (this.isSynced) return;
    this.isSynced = true;
    this.deps.log.info(`kube: ${this.what} synced (${this.cache.size} objects)`);
    for (const w of this.syncWaiters.splice(0)) w();
  }
}

const keyOf = (r: Compact) => `${r.metadata.namespace ?? ''}/${r.metadata.name}`;

function readBody(res: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('end', () => resolve(Buffer.concat(chunks)));
    res.on('error', reject);
    res.on('close', () => {
      if (!res.complete) reject(new Error('the response was cut'));
    });
  });
}

function describe(err: unknown): string {
  if (err instanceof KubeHttpError) return err.message;
  const e = err as { code?: string; message?: string; cause?: { code?: string } };
  const msg = (e?.message ?? String(err)).split('\n')[0];
  return e?.code !== undefined && !msg.includes(e.code) ? `${e.code}: ${msg}` : msg;
}
