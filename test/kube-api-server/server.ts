// A Kubernetes API server for tests: real HTTP (node:http), the real list/watch protocol, an object
// store with one global resourceVersion counter and a bounded event history, so that the real
// @kubernetes/client-node can be driven through every fault an informer meets in a cluster.
//
// Protocol points copied from kube-apiserver (1.28+), checked against its source:
// - list: items sorted by namespace/name, without kind/apiVersion (as the typed list encoders emit
//   them); `metadata.resourceVersion` is the store's current version; `limit` gives `continue`
//   tokens and `remainingItemCount`; pages after the first come from the snapshot of the first page.
//   A continue token whose snapshot is gone (compaction, restart) → HTTP 410, reason Expired.
//   resourceVersion=N with resourceVersionMatch=Exact older than the history → HTTP 410.
// - watch (`watch=true`): HTTP 200 and newline-delimited JSON events. Without resourceVersion (or
//   "0") the current objects come first as ADDED. From a version older than the event history the
//   server answers 200 and one ERROR event holding a Status with code 410 (reason Expired, message
//   "too old resource version: N (M)") and closes the stream: the watch cache does it this way
//   (cacher.go newErrWatcher), HTTP 410 is never the answer to a watch. BOOKMARK events (only
//   with allowWatchBookmarks=true) carry just kind, apiVersion and metadata.resourceVersion; one is
//   also sent just before the server ends a watch at timeoutSeconds.
// - A selector-filtered watch sees an object that stops matching as DELETED and one that starts
//   matching as ADDED.
// - Errors are Status objects; RBAC denials use the authorizer's message format.
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type FieldRequirement,
  type LabelRequirement,
  matchFields,
  matchLabels,
  parseFieldSelector,
  parseLabelSelector,
  SelectorError,
} from './selectors.js';

// Objects are free-form Kubernetes JSON.
export type KubeObject = {
  // biome-ignore lint/suspicious/noExplicitAny: free-form object metadata
  metadata: { name: string; namespace?: string; [k: string]: any };
  // biome-ignore lint/suspicious/noExplicitAny: free-form object body
  [k: string]: any;
};

export interface ResourceInfo {
  /** Plural name used in paths and RBAC messages. */
  plural: string;
  group: string;
  version: string;
  kind: string;
  namespaced: boolean;
  fields: readonly string[];
}

const COMMON_FIELDS = ['metadata.name', 'metadata.namespace'] as const;

export const RESOURCES: Record<string, ResourceInfo> = {
  pods: {
    plural: 'pods',
    group: '',
    version: 'v1',
    kind: 'Pod',
    namespaced: true,
    fields: [...COMMON_FIELDS, 'spec.nodeName', 'status.phase', 'status.podIP', 'spec.restartPolicy'],
  },
  nodes: {
    plural: 'nodes',
    group: '',
    version: 'v1',
    kind: 'Node',
    namespaced: false,
    fields: COMMON_FIELDS,
  },
  namespaces: {
    plural: 'namespaces',
    group: '',
    version: 'v1',
    kind: 'Namespace',
    namespaced: false,
    fields: [...COMMON_FIELDS, 'status.phase'],
  },
  services: {
    plural: 'services',
    group: '',
    version: 'v1',
    kind: 'Service',
    namespaced: true,
    fields: [...COMMON_FIELDS, 'spec.clusterIP', 'spec.type'],
  },
  replicasets: {
    plural: 'replicasets',
    group: 'apps',
    version: 'v1',
    kind: 'ReplicaSet',
    namespaced: true,
    fields: [...COMMON_FIELDS, 'status.replicas'],
  },
  jobs: {
    plural: 'jobs',
    group: 'batch',
    version: 'v1',
    kind: 'Job',
    namespaced: true,
    fields: [...COMMON_FIELDS, 'status.successful'],
  },
};

const apiVersionOf = (r: ResourceInfo) => (r.group === '' ? r.version : `${r.group}/${r.version}`);

type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';
interface HistoryEvent {
  rv: number;
  resource: string;
  type: EventType;
  obj: KubeObject;
  prev?: KubeObject;
}

interface Watcher {
  resource: ResourceInfo;
  namespace: string | undefined;
  labels: LabelRequirement[];
  fields: FieldRequirement[];
  res: ServerResponse;
  close(): void;
}

interface Snapshot {
  rv: number;
  items: KubeObject[];
  createdAt: number;
}

export interface RequestRecord {
  method: string;
  path: string;
  query: URLSearchParams;
  watch: boolean;
  status: number;
}

export interface Fault {
  status: number;
  /** Requests to fail (default: until cleared). */
  count?: number;
  /** Only requests this returns true for (default all). */
  match?: (r: { path: string; query: URLSearchParams; watch: boolean }) => boolean;
}

export interface KubeApiServerOptions {
  /** Events kept for watches that resume from a resourceVersion (default 1000). */
  historySize?: number;
  /** Bookmark period on watches that allow them (default 1s). */
  bookmarkIntervalMs?: number;
  /** Watch lifetime when the client gives no timeoutSeconds (default 5 min). */
  defaultWatchTimeoutMs?: number;
  /** How long a list snapshot for continue tokens lives (default 5 min, like etcd compaction). */
  continueTtlMs?: number;
  /** Bearer token the kubeconfig carries (default random). */
  token?: string;
  /** The user named in RBAC denials. */
  user?: string;
  /** Serve https with this key and certificate (PEM); the kubeconfig then carries the CA. */
  tls?: { key: string; cert: string; ca: string };
}

const sortKey = (o: KubeObject) => `${o.metadata.namespace ?? ''}/${o.metadata.name}`;

function fieldValue(obj: KubeObject, field: string): string {
  let cur: unknown = obj;
  for (const part of field.split('.')) {
    if (cur === null || typeof cur !== 'object') return '';
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur === undefined || cur === null ? '' : String(cur);
}

function status(code: number, reason: string, message: string, details?: object): object {
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message,
    reason,
    details,
    code,
  };
}

export class KubeApiServer {
  /** The bearer token accepted; tests change it to rotate credentials. */
  token: string;
  readonly user: string;
  /** Every request served, in order (tests assert paging, selectors, retries). */
  readonly requests: RequestRecord[] = [];
  /** Called before each request is handled (tests inject a fault at an exact moment). */
  beforeRequest: ((r: RequestRecord) => void) | undefined;

  private server: Server | undefined;
  private port = 0;
  private readonly sockets = new Set<Socket>();
  private readonly store = new Map<string, Map<string, KubeObject>>();
  private rv = 1;
  private history: HistoryEvent[] = [];
  /** Watches may resume from any version ≥ this. */
  private oldestRv = 1;
  private readonly watchers = new Set<Watcher>();
  private readonly snapshots = new Map<string, Snapshot>();
  /** Sorted objects per resource, rebuilt after a change (lists of 50k pods stay cheap). */
  private readonly sorted = new Map<string, KubeObject[]>();
  /** Stored objects never change (updates store a new object), so their JSON can be kept. */
  private readonly json = new WeakMap<KubeObject, string>();
  private faults: Fault[] = [];
  private readonly forbidden = new Map<string, Set<string>>();
  private delayMs = 0;
  private uid = 0;
  private readonly opts: Required<Omit<KubeApiServerOptions, 'token' | 'user' | 'tls'>>;
  private readonly tls: KubeApiServerOptions['tls'];

  constructor(options: KubeApiServerOptions = {}) {
    this.opts = {
      historySize: options.historySize ?? 1000,
      bookmarkIntervalMs: options.bookmarkIntervalMs ?? 1000,
      defaultWatchTimeoutMs: options.defaultWatchTimeoutMs ?? 300_000,
      continueTtlMs: options.continueTtlMs ?? 300_000,
    };
    this.token = options.token ?? randomBytes(16).toString('hex');
    this.user = options.user ?? 'system:serviceaccount:podflow:podflow';
    this.tls = options.tls;
    for (const name of Object.keys(RESOURCES)) this.store.set(name, new Map());
  }

  // ---- lifecycle -------------------------------------------------------------------------------

  /** Listen on 127.0.0.1 (port 0 = any; a restart reuses the port). Returns the base URL. */
  async listen(port = this.port): Promise<string> {
    const handler = (req: IncomingMessage, res: ServerResponse) => {
      this.handle(req, res).catch((err) => {
        if (!res.headersSent) this.send(res, 500, status(500, 'InternalError', String(err)));
        else res.destroy();
      });
    };
    const server: Server = this.tls
      ? createTlsServer({ key: this.tls.key, cert: this.tls.cert }, handler)
      : createServer(handler);
    server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve());
    });
    this.server = server;
    this.port = (server.address() as AddressInfo).port;
    return this.url;
  }

  get url(): string {
    return `${this.tls ? 'https' : 'http'}://127.0.0.1:${this.port}`;
  }

  get listening(): boolean {
    return this.server !== undefined;
  }

  /** Stop listening and cut every connection: the API server is unreachable until listen(). */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    this.dropConnections();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Cut every open connection (watches and idle keep-alive sockets), as a load balancer would. */
  dropConnections(): void {
    for (const w of this.watchers) w.close();
    for (const s of this.sockets) s.destroy();
  }

  /**
   * A restart: connections cut, the watch history and list snapshots gone (a new process has an
   * empty watch cache), objects and the resourceVersion counter kept (they live in etcd).
   */
  async restart(downMs = 0): Promise<void> {
    await this.stop();
    this.compact();
    if (downMs > 0) await new Promise((r) => setTimeout(r, downMs));
    await this.listen();
  }

  /** Forget the event history: watches from any earlier version get 410. */
  compact(): void {
    this.history = [];
    this.oldestRv = this.rv;
    this.snapshots.clear();
  }

  /** Write a kubeconfig for this server (http, token auth) and return its path. */
  writeKubeconfig(path = join(tmpdir(), `pf-kubeconfig-${process.pid}-${randomBytes(4).toString('hex')}`)) {
    writeFileSync(path, this.kubeconfigYaml(), { mode: 0o600 });
    return path;
  }

  kubeconfigYaml(): string {
    return [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: test',
      '  cluster:',
      `    server: ${this.url}`,
      // client-node refuses http:// servers unless TLS verification is explicitly off.
      this.tls
        ? `    certificate-authority-data: ${Buffer.from(this.tls.ca).toString('base64')}`
        : '    insecure-skip-tls-verify: true',
      'users:',
      '- name: test',
      '  user:',
      `    token: ${this.token}`,
      'contexts:',
      '- name: test',
      '  context:',
      '    cluster: test',
      '    user: test',
      'current-context: test',
      '',
    ].join('\n');
  }

  // ---- fault hooks -----------------------------------------------------------------------------

  /** Answer matching requests with `status` (a Status body), `count` times or until cleared. */
  fail(fault: Fault): void {
    this.faults.push({ ...fault });
  }

  /** RBAC: deny `verbs` (default get, list, watch) on a resource. */
  forbid(resource: string, verbs: readonly string[] = ['get', 'list', 'watch']): void {
    this.forbidden.set(resource, new Set(verbs));
  }

  /** Delay the response headers of every request by `ms`. */
  slow(ms: number): void {
    this.delayMs = ms;
  }

  clearFaults(): void {
    this.faults = [];
    this.forbidden.clear();
    this.delayMs = 0;
  }

  get watchCount(): number {
    return this.watchers.size;
  }

  get resourceVersion(): string {
    return String(this.rv);
  }

  // ---- store -----------------------------------------------------------------------------------

  private map(resource: string): Map<string, KubeObject> {
    const m = this.store.get(resource);
    if (!m) throw new Error(`unknown resource ${resource}`);
    return m;
  }

  /** Add an object (metadata.uid, creationTimestamp and resourceVersion are filled in). */
  create(resource: string, obj: KubeObject): KubeObject {
    const m = this.map(resource);
    const key = sortKey(obj);
    if (m.has(key)) throw new Error(`${resource} ${key} already exists`);
    const stored = this.stamp(obj, {
      uid: obj.metadata.uid ?? `00000000-0000-4000-8000-${(++this.uid).toString(16).padStart(12, '0')}`,
      creationTimestamp: obj.metadata.creationTimestamp ?? new Date().toISOString(),
    });
    m.set(key, stored);
    this.record(resource, 'ADDED', stored, undefined);
    return stored;
  }

  /** Replace an object; `change` gets a deep copy to edit. */
  update(resource: string, namespace: string | undefined, name: string, change: (o: KubeObject) => void) {
    const m = this.map(resource);
    const key = `${namespace ?? ''}/${name}`;
    const prev = m.get(key);
    if (!prev) throw new Error(`${resource} ${key} not found`);
    const copy = structuredClone(prev);
    change(copy);
    const stored = this.stamp(copy, {});
    m.set(key, stored);
    this.record(resource, 'MODIFIED', stored, prev);
    return stored;
  }

  delete(resource: string, namespace: string | undefined, name: string): void {
    const m = this.map(resource);
    const key = `${namespace ?? ''}/${name}`;
    const prev = m.get(key);
    if (!prev) throw new Error(`${resource} ${key} not found`);
    m.delete(key);
    // The DELETED event carries the last state at a new resourceVersion.
    const stored = this.stamp(structuredClone(prev), {});
    this.record(resource, 'DELETED', stored, prev);
  }

  get(resource: string, namespace: string | undefined, name: string): KubeObject | undefined {
    return this.map(resource).get(`${namespace ?? ''}/${name}`);
  }

  /** Current objects of a resource, sorted as the server lists them. */
  list(resource: string): KubeObject[] {
    let out = this.sorted.get(resource);
    if (!out) {
      const keyed = [...this.map(resource)].sort((a, b) => (a[0] < b[0] ? -1 : 1));
      out = keyed.map((e) => e[1]);
      this.sorted.set(resource, out);
    }
    return out;
  }

  /** Serialize every stored object now, so that timed lists measure serving, not first encoding. */
  warm(): void {
    for (const m of this.store.values()) for (const o of m.values()) this.toJson(o);
  }

  private toJson(o: KubeObject): string {
    let text = this.json.get(o);
    if (text === undefined) {
      text = JSON.stringify(o);
      this.json.set(o, text);
    }
    return text;
  }

  private stamp(obj: KubeObject, extra: Record<string, string>): KubeObject {
    const rv = ++this.rv;
    return { ...obj, metadata: { ...obj.metadata, ...extra, resourceVersion: String(rv) } };
  }

  private record(resource: string, type: EventType, obj: KubeObject, prev: KubeObject | undefined): void {
    const ev: HistoryEvent = { rv: this.rv, resource, type, obj, prev };
    this.sorted.delete(resource);
    this.history.push(ev);
    if (this.history.length > this.opts.historySize) {
      const dropped = this.history.splice(0, this.history.length - this.opts.historySize);
      this.oldestRv = dropped[dropped.length - 1].rv;
    }
    for (const w of this.watchers) {
      if (w.resource.plural === resource) this.deliver(w, ev);
    }
  }

  // ---- HTTP ------------------------------------------------------------------------------------

  private send(res: ServerResponse, code: number, body: object | string): void {
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
    res.end(text);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    const query = url.searchParams;
    const watch = query.get('watch') === 'true' || query.get('watch') === '1';
    const record: RequestRecord = {
      method: req.method ?? 'GET',
      path: url.pathname,
      query,
      watch,
      status: 0,
    };
    this.requests.push(record);
    this.beforeRequest?.(record);
    const reply = (code: number, body: object | string) => {
      record.status = code;
      this.send(res, code, body);
    };

    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
    if (res.destroyed) return;

    if (req.headers.authorization !== `Bearer ${this.token}`) {
      return reply(401, status(401, 'Unauthorized', 'Unauthorized'));
    }

    const route = this.route(url.pathname);
    if (!route)
      return reply(404, status(404, 'NotFound', 'the server could not find the requested resource'));
    const { resource, namespace, name } = route;
    if (req.method !== 'GET') {
      return reply(
        405,
        status(405, 'MethodNotAllowed', `the server does not allow this method on ${resource.plural}`),
      );
    }

    const fault = this.faults.find(
      (f) => f.match === undefined || f.match({ path: url.pathname, query, watch }),
    );
    if (fault) {
      if (fault.count !== undefined && --fault.count <= 0) this.faults.splice(this.faults.indexOf(fault), 1);
      const reason =
        fault.status === 503
          ? 'ServiceUnavailable'
          : fault.status === 429
            ? 'TooManyRequests'
            : 'InternalError';
      return reply(fault.status, status(fault.status, reason, 'Internal error occurred: injected fault'));
    }

    const verb = name !== undefined ? 'get' : watch ? 'watch' : 'list';
    if (this.forbidden.get(resource.plural)?.has(verb)) {
      const scope = namespace === undefined ? 'at the cluster scope' : `in the namespace "${namespace}"`;
      return reply(
        403,
        status(
          403,
          'Forbidden',
          `${resource.group ? `${resource.plural}.${resource.group}` : resource.plural} is forbidden: User "${this.user}" cannot ${verb} resource "${resource.plural}" in API group "${resource.group}" ${scope}`,
          { kind: resource.plural, ...(resource.group ? { group: resource.group } : {}) },
        ),
      );
    }

    let labels: LabelRequirement[];
    let fields: FieldRequirement[];
    try {
      labels = parseLabelSelector(query.get('labelSelector'));
      fields = parseFieldSelector(query.get('fieldSelector'), resource.fields);
    } catch (err) {
      if (err instanceof SelectorError) return reply(400, status(400, 'BadRequest', err.message));
      throw err;
    }

    if (name !== undefined) {
      const obj = this.get(resource.plural, namespace, name);
      if (!obj) {
        return reply(
          404,
          status(404, 'NotFound', `${resource.plural} "${name}" not found`, { name, kind: resource.plural }),
        );
      }
      return reply(200, { kind: resource.kind, apiVersion: apiVersionOf(resource), ...obj });
    }

    if (watch) {
      record.status = 200;
      return this.serveWatch(req, res, resource, namespace, labels, fields, query);
    }
    const out = this.serveList(resource, namespace, labels, fields, query);
    reply(out.code, out.body);
  }

  private route(path: string): { resource: ResourceInfo; namespace?: string; name?: string } | undefined {
    const m =
      /^\/(?:api\/v1|apis\/([a-z0-9.-]+)\/(v[0-9a-z]+))(?:\/namespaces\/([^/]+)(?=\/))?\/([a-z]+)(?:\/([^/]+))?$/.exec(
        path,
      );
    if (m) {
      const [, group = '', version = 'v1', namespace, plural, name] = m;
      const resource = RESOURCES[plural];
      if (resource && resource.group === group && resource.version === version) {
        if (namespace !== undefined && !resource.namespaced) return undefined;
        return {
          resource,
          namespace: namespace && decodeURIComponent(namespace),
          name: name && decodeURIComponent(name),
        };
      }
    }
    return undefined;
  }

  private matches(
    obj: KubeObject,
    namespace: string | undefined,
    labels: LabelRequirement[],
    fields: FieldRequirement[],
  ): boolean {
    if (namespace !== undefined && obj.metadata.namespace !== namespace) return false;
    return matchLabels(labels, obj.metadata.labels) && matchFields(fields, (f) => fieldValue(obj, f));
  }

  private serveList(
    resource: ResourceInfo,
    namespace: string | undefined,
    labels: LabelRequirement[],
    fields: FieldRequirement[],
    query: URLSearchParams,
  ): { code: number; body: object | string } {
    const limit = Number(query.get('limit') ?? 0);
    const cont = query.get('continue');
    const rvParam = query.get('resourceVersion');
    const now = Date.now();
    for (const [id, s] of this.snapshots)
      if (now - s.createdAt > this.opts.continueTtlMs) this.snapshots.delete(id);

    let snap: Snapshot;
    let start = '';
    let snapId: string;
    if (cont) {
      let token: { rv: number; start: string; snap: string };
      try {
        token = JSON.parse(Buffer.from(cont, 'base64').toString('utf8'));
      } catch {
        return {
          code: 400,
          body: status(400, 'BadRequest', 'continue key is not valid: illegal base64 data'),
        };
      }
      const found = this.snapshots.get(token.snap);
      if (!found) {
        // kube-apiserver's wording (storage/errors.go); the token lets a client go on inconsistently.
        const restart = Buffer.from(JSON.stringify({ ...token, snap: 'latest' })).toString('base64');
        return {
          code: 410,
          body: {
            ...status(
              410,
              'Expired',
              'The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.',
            ),
            metadata: { continue: restart },
          },
        };
      }
      snap = found;
      snapId = token.snap;
      start = token.start;
    } else {
      if (
        query.get('resourceVersionMatch') === 'Exact' &&
        rvParam !== null &&
        Number(rvParam) < this.oldestRv
      ) {
        return {
          code: 410,
          body: status(410, 'Expired', `too old resource version: ${rvParam} (${this.oldestRv})`),
        };
      }
      snap = { rv: this.rv, items: this.list(resource.plural), createdAt: now };
      snapId = randomBytes(6).toString('hex');
    }

    const items: KubeObject[] = [];
    let i = 0;
    if (start !== '') {
      // Binary search for the first key after `start`.
      let lo = 0;
      let hi = snap.items.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (sortKey(snap.items[mid]) <= start) lo = mid + 1;
        else hi = mid;
      }
      i = lo;
    }
    for (; i < snap.items.length; i++) {
      const o = snap.items[i];
      if (!this.matches(o, namespace, labels, fields)) continue;
      if (limit > 0 && items.length === limit) break;
      items.push(o);
    }
    const metadata: Record<string, unknown> = { resourceVersion: String(snap.rv) };
    if (limit > 0 && i < snap.items.length) {
      // As upstream: remainingItemCount only for unfiltered lists; a filtered one only says whether
      // more matching objects follow (it stops at the first).
      const unfiltered = namespace === undefined && labels.length === 0 && fields.length === 0;
      let more = unfiltered ? snap.items.length - i : 0;
      for (let j = i; !unfiltered && j < snap.items.length && more === 0; j++) {
        if (this.matches(snap.items[j], namespace, labels, fields)) more = 1;
      }
      if (more > 0) {
        this.snapshots.set(snapId, snap);
        if (this.snapshots.size > 32) this.snapshots.delete(this.snapshots.keys().next().value as string);
        const last = sortKey(items[items.length - 1]);
        metadata.continue = Buffer.from(
          JSON.stringify({ v: 'meta.k8s.io/v1', rv: snap.rv, start: last, snap: snapId }),
        ).toString('base64');
        if (unfiltered) metadata.remainingItemCount = more;
      }
    }
    // Build the body as text: one JSON.stringify per item keeps big lists cheap to serve.
    const head = JSON.stringify({
      kind: `${resource.kind}List`,
      apiVersion: apiVersionOf(resource),
      metadata,
    });
    const body = `${head.slice(0, -1)},"items":[${items.map((o) => this.toJson(o)).join(',')}]}`;
    return { code: 200, body };
  }

  private serveWatch(
    req: IncomingMessage,
    res: ServerResponse,
    resource: ResourceInfo,
    namespace: string | undefined,
    labels: LabelRequirement[],
    fields: FieldRequirement[],
    query: URLSearchParams,
  ): void {
    res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' });
    res.flushHeaders();
    const rvParam = query.get('resourceVersion') ?? '';
    const write = (type: string, object: object) => res.write(`${JSON.stringify({ type, object })}\n`);

    const from = rvParam === '' || rvParam === '0' ? undefined : Number(rvParam);
    if (from !== undefined && (!Number.isFinite(from) || from < this.oldestRv)) {
      write('ERROR', status(410, 'Expired', `too old resource version: ${rvParam} (${this.oldestRv})`));
      res.end();
      return;
    }

    let bookmark: NodeJS.Timeout | undefined;
    let timeout: NodeJS.Timeout | undefined;
    const watcher: Watcher = {
      resource,
      namespace,
      labels,
      fields,
      res,
      close: () => {
        clearInterval(bookmark);
        clearTimeout(timeout);
        this.watchers.delete(watcher);
        if (!res.writableEnded) res.end();
      },
    };

    if (from === undefined) {
      for (const o of this.list(resource.plural)) {
        if (this.matches(o, namespace, labels, fields)) {
          write('ADDED', { kind: resource.kind, apiVersion: apiVersionOf(resource), ...o });
        }
      }
    } else {
      for (const ev of this.history) {
        if (ev.rv > from && ev.resource === resource.plural) this.deliver(watcher, ev);
      }
    }
    this.watchers.add(watcher);

    const sendBookmark = () =>
      write('BOOKMARK', {
        kind: resource.kind,
        apiVersion: apiVersionOf(resource),
        metadata: { resourceVersion: String(this.rv) },
      });
    const bookmarks = query.get('allowWatchBookmarks') === 'true';
    if (bookmarks) bookmark = setInterval(sendBookmark, this.opts.bookmarkIntervalMs);
    const timeoutS = query.get('timeoutSeconds');
    const lifetime = timeoutS !== null ? Number(timeoutS) * 1000 : this.opts.defaultWatchTimeoutMs;
    timeout = setTimeout(() => {
      if (bookmarks) sendBookmark();
      watcher.close();
    }, lifetime);
    req.on('close', () => watcher.close());
    res.on('close', () => watcher.close());
  }

  private deliver(w: Watcher, ev: HistoryEvent): void {
    const now = this.matches(ev.obj, w.namespace, w.labels, w.fields);
    const before = ev.prev !== undefined && this.matches(ev.prev, w.namespace, w.labels, w.fields);
    let type: string;
    if (ev.type === 'ADDED') {
      if (!now) return;
      type = 'ADDED';
    } else if (ev.type === 'DELETED') {
      if (!before) return;
      type = 'DELETED';
    } else if (now && before) type = 'MODIFIED';
    else if (now) type = 'ADDED';
    else if (before) type = 'DELETED';
    else return;
    const object = { kind: w.resource.kind, apiVersion: apiVersionOf(w.resource), ...ev.obj };
    w.res.write(`${JSON.stringify({ type, object })}\n`);
  }
}
