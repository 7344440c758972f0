// Kubernetes access for both sides: where the kubeconfig comes from, and an informer that keeps a
// compact, current copy of one resource through the real list/watch protocol.
//
// Exports:
//   resolveKubeConfig({ kubeconfig }) → KubeAccess | undefined   (the CONTRACT's --kubeconfig row)
//   new KubeInformer(spec, { kubeConfig, log }, options)          (start / synced / whenSynced / close)
//   listers(kubeConfig)                                           (typed list functions for specs)
//
// The informer is @kubernetes/client-node 1.x's own `ListWatch` (cache, relist and 410 handling),
// fed by the client's `Watch` and by list calls of `CoreV1Api`/`AppsV1Api`/`BatchV1Api`. Reading that
// code (dist/cache.js, dist/watch.js of 1.4.0) shows weak spots this file works around:
// 1. Any list or watch error other than 410 stops the ListWatch for good: it calls its `error`
//    callbacks and never retries. → We restart it with exponential backoff (0.5 s … 30 s, jitter);
//    `start()` resumes the watch from the last resourceVersion, and a too-old version comes back as
//    410, which the ListWatch turns into a relist (objects gone meanwhile get `delete` callbacks,
//    unchanged ones no callback: nothing lost, nothing doubled).
// 2. The list is one request without `limit`: a 50k-pod cluster arrives as one huge body. → Our list
//    function pages with limit/continue and restarts the list when a continue token expired (410).
// 3. Watches are opened without allowWatchBookmarks and without timeoutSeconds, and the request has
//    no timeout at all (the 30 s AbortSignal.timeout in watch.js is overwritten on the next line): a
//    silently dead connection would leave the cache stale forever. → We add allowWatchBookmarks and
//    timeoutSeconds, and every socket the client opens gets an idle timeout (no byte for
//    `idleTimeoutMs` destroys it; the error restarts the informer). List pages get a deadline.
// 4. The cache keeps the full objects (a pod is 5-10 kB of JSON). → Each object is cut to a compact
//    record at arrival, in the list function and in the watch callback, before the cache sees it.
// 5. The generated list calls turn every object into model classes (Dates, nested instances) before
//    we see it: most of a sync's CPU. → A response middleware takes the page's JSON and hands the
//    client an empty list; transforms see plain JSON from lists and watches alike (and still accept
//    model objects, see `toMs`).
// 6. Exceptions thrown inside watch callbacks are swallowed by watch.js (`catch {}` around the
//    callback): transforms are written to never throw, and our callbacks catch and log.
// 7. The ListWatch's watch handler is async and reads `obj.metadata`: a watch line without an object
//    (a proxy's error page as JSON) would be an unhandled rejection, fatal to a Node process. Such
//    lines are dropped before it. Watches that end at once without events are not re-opened at
//    once (the ListWatch would): their re-opening backs off.
// 8. `stop()` aborts the request and the ListWatch reports the AbortError to `error` callbacks: after
//    close() errors are ignored.
import type { Agent } from 'node:http';
import {
  AppsV1Api,
  BatchV1Api,
  CoreV1Api,
  KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  ListWatch,
  Watch,
} from '@kubernetes/client-node';
import { StartupError } from './errors.js';
import { locateKubeConfig, type ResolveOptions, SERVICE_ACCOUNT_DIR } from './kube-access.js';
import { type Compact, type InformerOptions, type InformerTimings, informerTimings } from './kube-object.js';
import type { Logger } from './log.js';
import { pause } from './sleep.js';

// ---- kubeconfig ---------------------------------------------------------------------------------

export interface KubeAccess {
  kubeConfig: KubeConfig;
  /** Where it came from, for the start-up log line: a file path or "in-cluster". */
  source: string;
  /** The API server URL. */
  server: string;
}

export type { ResolveOptions } from './kube-access.js';

/**
 * The CONTRACT's `--kubeconfig` row (search order in shared/kube-access.ts), as a client-node
 * KubeConfig. A file that is given but unreadable or unusable stops start-up with a StartupError
 * naming it.
 */
export function resolveKubeConfig(opts: ResolveOptions = {}): KubeAccess | undefined {
  const loc = locateKubeConfig(opts);
  if (loc === undefined) return undefined;
  if (loc.kind === 'in-cluster') {
    const kc = new KubeConfig();
    const saDir = loc.serviceAccountDir;
    // loadFromCluster reads the host and port from process.env; keep the given env authoritative.
    const saved = { host: process.env.KUBERNETES_SERVICE_HOST, port: process.env.KUBERNETES_SERVICE_PORT };
    process.env.KUBERNETES_SERVICE_HOST = loc.host;
    process.env.KUBERNETES_SERVICE_PORT = loc.port;
    try {
      kc.loadFromCluster(saDir === SERVICE_ACCOUNT_DIR ? '' : saDir.slice(0, -SERVICE_ACCOUNT_DIR.length));
    } finally {
      restoreEnv('KUBERNETES_SERVICE_HOST', saved.host);
      restoreEnv('KUBERNETES_SERVICE_PORT', saved.port);
    }
    return { kubeConfig: kc, source: 'in-cluster', server: kc.getCurrentCluster()?.server ?? '' };
  }
  const access = loadFile(loc.files[0], loc.where);
  for (const f of loc.files.slice(1)) access.kubeConfig.mergeConfig(loadFile(f, loc.where).kubeConfig);
  return access;
}

function restoreEnv(key: string, value: string | undefined): void {
  if (value === undefined) delete process.env[key];
  else process.env[key] = value;
}

function loadFile(file: string, where: string): KubeAccess {
  const kc = new KubeConfig();
  try {
    kc.loadFromFile(file);
  } catch (err) {
    throw new StartupError(
      `${where} ${file}: not a usable kubeconfig (${(err as Error).message.split('\n')[0]})`,
    );
  }
  const cluster = kc.getCurrentCluster();
  if (!cluster?.server) {
    throw new StartupError(`${where} ${file}: no current context with a cluster server`);
  }
  if (cluster.server.startsWith('http:') && !cluster.skipTLSVerify) {
    // The client refuses plain http unless TLS verification is explicitly off; say so at start.
    throw new StartupError(
      `${where} ${file}: server ${cluster.server} is http:// but insecure-skip-tls-verify is not set`,
    );
  }
  return { kubeConfig: kc, source: file, server: cluster.server };
}

// ---- list functions -----------------------------------------------------------------------------

export interface ListRequest {
  limit?: number;
  _continue?: string;
  labelSelector?: string;
  fieldSelector?: string;
}

/** What a list call returns (the generated clients' V1PodList etc.). */
export type ListResult = KubernetesListObject<KubernetesObject>;

/**
 * Per-request middleware as the object-parameter API runs it: it calls `toPromise()` on what `pre`
 * and `post` return (the client's minimal Observable), so a plain `{ toPromise }` does.
 */
interface Deferred<T> {
  toPromise(): Promise<T>;
}
type RequestContext = { setSignal(s: AbortSignal): void };
interface RequestOptions {
  middleware: {
    pre(ctx: RequestContext): Deferred<RequestContext>;
    post<T>(r: T): Deferred<T>;
  }[];
  middlewareMergeStrategy: 'append';
}

export type ListFn = (req: ListRequest, options: RequestOptions) => Promise<ListResult>;

export interface ResourceSpec {
  /** Plural resource name as RBAC knows it (`pods`). */
  resource: string;
  /** API group ('' for core). */
  group: string;
  /** Namespace to watch, or undefined for all namespaces / cluster-scoped resources. */
  namespace?: string;
  /** Watch path, e.g. /api/v1/pods or /api/v1/namespaces/NS/pods. */
  path: string;
  list: ListFn;
}

/** The resources podflow watches, listed through the client's generated API classes. */
export function listers(kc: KubeConfig) {
  const core = kc.makeApiClient(CoreV1Api);
  const apps = kc.makeApiClient(AppsV1Api);
  const batch = kc.makeApiClient(BatchV1Api);
  // The typings name the rxjs Observable; the client only calls toPromise() on what we return.
  const o = (x: RequestOptions) => x as never;
  return {
    pods: (namespace?: string): ResourceSpec =>
      namespace === undefined
        ? {
            resource: 'pods',
            group: '',
            path: '/api/v1/pods',
            list: (r, x) => core.listPodForAllNamespaces(r, o(x)),
          }
        : {
            resource: 'pods',
            group: '',
            namespace,
            path: `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods`,
            list: (r, x) => core.listNamespacedPod({ ...r, namespace }, o(x)),
          },
    nodes: (): ResourceSpec => ({
      resource: 'nodes',
      group: '',
      path: '/api/v1/nodes',
      list: (r, x) => core.listNode(r, o(x)),
    }),
    services: (): ResourceSpec => ({
      resource: 'services',
      group: '',
      path: '/api/v1/services',
      list: (r, x) => core.listServiceForAllNamespaces(r, o(x)),
    }),
    replicasets: (): ResourceSpec => ({
      resource: 'replicasets',
      group: 'apps',
      path: '/apis/apps/v1/replicasets',
      list: (r, x) => apps.listReplicaSetForAllNamespaces(r, o(x)),
    }),
    jobs: (): ResourceSpec => ({
      resource: 'jobs',
      group: 'batch',
      path: '/apis/batch/v1/jobs',
      list: (r, x) => batch.listJobForAllNamespaces(r, o(x)),
    }),
  };
}

// ---- compact records ----------------------------------------------------------------------------

export { type Compact, compactMeta, type InformerOptions } from './kube-object.js';

/** Timestamp as ms since the epoch: lists give Date objects, watches give RFC 3339 strings. */
export function toMs(v: unknown): number | undefined {
  if (v instanceof Date) return v.getTime();
  if (typeof v === 'string') {
    const t = Date.parse(v);
    return Number.isNaN(t) ? undefined : t;
  }
  return undefined;
}

/** The controller owner reference (or the first one) as `{kind, name}`. */
export function controllerOf(obj: unknown): { kind: string; name: string } | undefined {
  const refs = (obj as { metadata?: { ownerReferences?: unknown } } | null)?.metadata?.ownerReferences;
  if (!Array.isArray(refs) || refs.length === 0) return undefined;
  const ref = (refs.find((r) => (r as { controller?: boolean })?.controller === true) ?? refs[0]) as {
    kind?: unknown;
    name?: unknown;
  };
  if (typeof ref?.kind !== 'string' || typeof ref?.name !== 'string') return undefined;
  return { kind: ref.kind, name: ref.name };
}

// ---- informer -----------------------------------------------------------------------------------

export interface InformerDeps {
  kubeConfig: KubeConfig;
  log: Logger;
}

type Verb = 'list' | 'watch';
type Callback<R> = (obj: R) => void;

const IDLE_PATCHED = Symbol('podflow.idleTimeout');

/**
 * Give every socket the client opens an idle timeout. The client builds a new Agent per request in
 * the (TS-private) `createAgent`; wrapping it is the one place that sees both list and watch
 * sockets, plain or TLS.
 */
function applyIdleTimeout(kc: KubeConfig, idleMs: number): void {
  const k = kc as unknown as { [IDLE_PATCHED]?: number; createAgent(c: unknown, o: unknown): Agent };
  if (k[IDLE_PATCHED] !== undefined) {
    k[IDLE_PATCHED] = Math.max(k[IDLE_PATCHED], idleMs);
    return;
  }
  // A client release without this method keeps working, only without the idle timeout.
  if (typeof k.createAgent !== 'function') return;
  k[IDLE_PATCHED] = idleMs;
  const create = k.createAgent.bind(kc);
  k.createAgent = (cluster, options) => {
    const agent = create(cluster, options) as Agent & { createConnection: (...a: unknown[]) => unknown };
    const connect = agent.createConnection.bind(agent);
    agent.createConnection = (...args: unknown[]) => {
      const socket = connect(...args) as import('node:net').Socket;
      const ms = k[IDLE_PATCHED] ?? idleMs;
      socket.setTimeout(ms, () => socket.destroy(new Error(`no data from the API server for ${ms / 1000}s`)));
      return socket;
    };
    return agent;
  };
}

/**
 * One resource kept current: the client's ListWatch with compact records, paging, bookmarks,
 * restart with backoff and RBAC errors explained. Construct (no I/O), register callbacks, `start()`.
 */
export class KubeInformer<R extends Compact> {
  private readonly lw: ListWatch<R & KubernetesObject>;
  private readonly opts: InformerTimings & InformerOptions;
  private readonly abort = new AbortController();
  private started = false;
  private closed = false;
  private isSynced = false;
  private syncWaiters: (() => void)[] = [];
  private attempts = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private failedVerb: Verb = 'list';
  private rbacLogged = false;
  private failing = false;
  private relistCount = 0;
  /** Watches in a row that ended within a second with nothing in them. */
  private quickEnds = 0;
  private restartCount = 0;
  private listCount = 0;

  constructor(
    private readonly spec: ResourceSpec,
    private readonly transform: (obj: unknown) => R,
    private readonly deps: InformerDeps,
    options: InformerOptions = {},
  ) {
    this.opts = { ...options, ...informerTimings(options) };
    const watch = new Watch(deps.kubeConfig);
    const wrapped = { watch: this.watch.bind(this, watch) } as unknown as Watch;
    this.lw = new ListWatch<R & KubernetesObject>(
      spec.path,
      wrapped,
      () => this.listAll() as Promise<KubernetesListObject<R & KubernetesObject>>,
      false,
      options.labelSelector,
      options.fieldSelector,
    );
    this.lw.on('error', (err) => this.onError(err));
  }

  /** Register before start(): `add` also fires for every object of a (re)list not yet seen. */
  on(verb: 'add' | 'update' | 'delete', cb: Callback<R>): void {
    const log = this.deps.log;
    const resource = this.spec.resource;
    this.lw.on(verb, (obj) => {
      try {
        cb(obj);
      } catch (err) {
        log.error({ err, resource }, `kube: handling a ${verb} of ${resource} failed`);
      }
    });
  }

  /** Begin listing and watching; returns at once. Failures are logged and retried, never thrown. */
  start(): void {
    if (this.started || this.closed) return;
    applyIdleTimeout(this.deps.kubeConfig, this.opts.idleTimeoutMs);
    this.started = true;
    void this.lw.start();
  }

  /** True once the first full list is in the cache (for /readyz). Stays true across relists. */
  synced(): boolean {
    return this.isSynced;
  }

  /** Resolves once synced, or on close() (check synced() after it when that matters). */
  whenSynced(): Promise<void> {
    if (this.isSynced) return Promise.resolve();
    return new Promise((resolve) => this.syncWaiters.push(resolve));
  }

  list(): readonly R[] {
    return this.lw.list();
  }

  get(name: string, namespace?: string): R | undefined {
    return this.lw.get(name, namespace);
  }

  /** The last resourceVersion applied (list, event or bookmark): tests wait for a change with it. */
  resourceVersion(): number {
    return Number(this.lw.latestResourceVersion() || 0);
  }

  /** Counters for tests and self-metrics. */
  stats(): { lists: number; relists: number; restarts: number } {
    return { lists: this.listCount, relists: this.relistCount, restarts: this.restartCount };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.retryTimer);
    this.abort.abort();
    await this.lw.stop();
    for (const w of this.syncWaiters.splice(0)) w();
  }

  private get what(): string {
    const scope = this.spec.namespace === undefined ? '' : ` in namespace ${this.spec.namespace}`;
    return `${this.spec.resource}${scope}`;
  }

  private async listAll(): Promise<{ metadata: { resourceVersion?: string }; items: R[] }> {
    this.failedVerb = 'list';
    this.listCount++;
    if (this.isSynced) this.relistCount++;
    const items: R[] = [];
    let cont: string | undefined;
    let rv: string | undefined;
    let restarts = 0;
    for (;;) {
      const signal = AbortSignal.any([this.abort.signal, AbortSignal.timeout(this.opts.listTimeoutMs)]);
      // The page as JSON, taken before the client turns it into model classes: podflow keeps a few
      // fields per object, and deserializing every container, probe and managedField first costs
      // more than the whole list's parse (measured: test/bench/kube.bench.ts). The client then
      // deserializes an empty list, and keeps handling errors and everything else.
      let raw: { metadata?: { resourceVersion?: string; continue?: string }; items?: unknown[] } | undefined;
      const options: RequestOptions = {
        middlewareMergeStrategy: 'append',
        middleware: [
          {
            pre: (ctx) => {
              ctx.setSignal(signal);
              return { toPromise: () => Promise.resolve(ctx) };
            },
            post: (r) => ({ toPromise: () => leanList(r, (parsed) => (raw = parsed)) }),
          },
        ],
      };
      let page: ListResult;
      try {
        page = await this.spec.list(
          {
            limit: this.opts.pageSize,
            _continue: cont,
            labelSelector: this.opts.labelSelector,
            fieldSelector: this.opts.fieldSelector,
          },
          options,
        );
      } catch (err) {
        if (statusOf(err) === 410 && cont !== undefined && restarts < 3) {
          // The continue token expired (the server compacted or restarted): a consistent list
          // needs a fresh start, as the API documentation says.
          this.deps.log.info(
            `kube: listing ${this.what}: continue token expired, listing again from the start`,
          );
          restarts++;
          items.length = 0;
          cont = undefined;
          continue;
        }
        throw err;
      }
      if (raw !== undefined) {
        for (const it of raw.items ?? []) items.push(this.transform(it));
        rv = raw.metadata?.resourceVersion;
        cont = raw.metadata?.continue || undefined;
      } else {
        for (const it of page.items ?? []) items.push(this.transform(it));
        rv = page.metadata?.resourceVersion;
        cont = (page.metadata as { _continue?: string } | undefined)?._continue || undefined;
      }
      if (cont === undefined) break;
    }
    return { metadata: { resourceVersion: rv }, items };
  }

  /** Stands in for Watch.watch: compact objects, bookmarks, timeoutSeconds, sync and error tracking. */
  private async watch(
    inner: Watch,
    path: string,
    query: Record<string, string | number | boolean | undefined>,
    callback: (phase: string, obj: unknown, raw?: unknown) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    // The ListWatch opens a watch right after applying a list: the cache is complete now.
    this.markSynced();
    this.failedVerb = 'watch';
    if (this.quickEnds > 0) {
      // The ListWatch re-watches at once whenever a watch ends without error. A server (or proxy)
      // that ends every watch at once would make that a busy loop against the API server.
      const ms = Math.min(this.opts.maxBackoffMs, this.opts.initialBackoffMs * 2 ** (this.quickEnds - 1));
      await pause(ms, this.abort.signal);
      if (this.closed) return new AbortController();
    }
    let ended = false;
    let progressed = false;
    const opened = Date.now();
    const controller = await inner.watch(
      path,
      { ...query, allowWatchBookmarks: true, timeoutSeconds: this.opts.watchTimeoutSeconds },
      (phase, obj, raw) => {
        if (obj === null || typeof obj !== 'object') {
          // ListWatch's handler is async and reads obj.metadata: a line without an object would
          // become an unhandled rejection, which ends a Node process. Drop it here.
          this.deps.log.warn(`kube: watch of ${this.what} sent a line that is not an event; ignored`);
          return;
        }
        if (phase === 'ADDED' || phase === 'MODIFIED' || phase === 'DELETED') {
          progressed = true;
          callback(phase, this.transform(obj), raw);
        } else {
          if (phase === 'ERROR') this.onWatchStatus(obj);
          else if (phase === 'BOOKMARK') progressed = true;
          callback(phase, obj, raw);
        }
      },
      (err) => {
        ended = true;
        if (err === null || err === undefined) {
          this.quickEnds = progressed || Date.now() - opened > 1000 ? 0 : this.quickEnds + 1;
        }
        done(err);
      },
    );
    if (!ended && !this.closed) {
      // Connected: the API server is back.
      if (this.failing) this.deps.log.info(`kube: watching ${this.what} again`);
      this.failing = false;
      this.rbacLogged = false;
      this.attempts = 0;
    }
    if (this.closed) controller.abort();
    return controller;
  }

  private onWatchStatus(obj: unknown): void {
    const s = obj as { code?: number; message?: string } | undefined;
    if (s?.code === 410) {
      this.deps.log.info(`kube: watch of ${this.what} expired (${s.message ?? '410'}), listing again`);
    } else {
      this.deps.log.warn(
        `kube: watch of ${this.what} reported an error: ${s?.message ?? JSON.stringify(obj)}`,
      );
    }
  }

  private markSynced(): void {
    if (this.isSynced) return;
    this.isSynced = true;
    this.deps.log.info(`kube: ${this.what} synced (${this.lw.list().length} objects)`);
    for (const w of this.syncWaiters.splice(0)) w();
  }

  private onError(err: unknown): void {
    if (this.closed) return;
    const code = statusOf(err);
    const verb = this.failedVerb;
    const delay = Math.min(this.opts.maxBackoffMs, this.opts.initialBackoffMs * 2 ** this.attempts);
    const wait = Math.round(delay * (0.8 + 0.4 * Math.random()));
    this.attempts++;
    if (code === 403) {
      // One clear line per outage, not one per retry.
      if (!this.rbacLogged) {
        this.rbacLogged = true;
        this.deps.log.error(
          { cause: messageOf(err) },
          `RBAC: cannot ${verb} ${this.spec.resource} ${this.scopeText()}; grant get/list/watch on ${this.rbacResource()}`,
        );
      }
    } else if (code === 401) {
      if (!this.rbacLogged) {
        this.rbacLogged = true;
        this.deps.log.error(
          `kube: the API server rejected our credentials (401) on ${verb} ${this.what}; check the token`,
        );
      }
    } else {
      const level = this.failing ? 'debug' : 'warn';
      this.deps.log[level](
        { cause: messageOf(err) },
        `kube: ${verb} ${this.what} failed (${describe(err)}); retrying with backoff, podflow keeps running`,
      );
    }
    this.failing = true;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      if (this.closed) return;
      this.restartCount++;
      void this.lw.start();
    }, wait);
    this.retryTimer.unref();
  }

  private scopeText(): string {
    return this.spec.namespace === undefined ? 'at the cluster scope' : `in namespace ${this.spec.namespace}`;
  }

  private rbacResource(): string {
    return this.spec.group === '' ? this.spec.resource : `${this.spec.resource}.${this.spec.group}`;
  }
}

/** What `post` middleware sees of a response (the client's ResponseContext). */
interface ResponseLike {
  httpStatusCode: number;
  headers: Record<string, string>;
  body: { text(): Promise<string>; binary(): Promise<Buffer> };
}

/**
 * Hands a 200 JSON list body to `take` and leaves the client an empty list with the same metadata.
 * Anything else (errors, other content types) passes untouched.
 */
async function leanList<T>(
  r: T,
  take: (parsed: { items?: unknown[]; metadata?: object }) => void,
): Promise<T> {
  const res = r as unknown as ResponseLike;
  if (res.httpStatusCode !== 200 || !/json/.test(res.headers?.['content-type'] ?? '')) return r;
  const parsed = JSON.parse(await res.body.text()) as { items?: unknown[]; metadata?: object };
  take(parsed);
  const lean = JSON.stringify({ ...parsed, items: [] });
  res.body = { text: async () => lean, binary: async () => Buffer.from(lean) };
  return r;
}

/** HTTP status of a client error: ApiException.code (lists) or statusCode (watch). */
export function statusOf(err: unknown): number | undefined {
  const e = err as { code?: unknown; statusCode?: unknown } | undefined;
  if (typeof e?.statusCode === 'number') return e.statusCode;
  if (typeof e?.code === 'number') return e.code;
  return undefined;
}

function messageOf(err: unknown): string {
  const body = (err as { body?: unknown })?.body;
  if (typeof body === 'string') {
    try {
      const parsed = JSON.parse(body) as { message?: string };
      if (parsed.message) return parsed.message;
    } catch {
      // not JSON: fall through
    }
  }
  const msg = (err as Error)?.message ?? String(err);
  return msg.split('\n')[0];
}

function describe(err: unknown): string {
  const code = statusOf(err);
  if (code !== undefined) return `HTTP ${code}`;
  const e = err as { code?: string; cause?: { code?: string }; message?: string };
  return e?.code ?? e?.cause?.code ?? (e?.message ?? String(err)).split('\n')[0];
}
