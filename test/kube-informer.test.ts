// The informer (shared/kube.ts) with the real @kubernetes/client-node against the test API server,
// through every fault: the cache must always end equal to the server's store, object for object and
// version for version, and the callbacks must add up to it (nothing lost, nothing doubled).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type Compact, compactMeta, type InformerOptions, KubeInformer, listers } from '../shared/kube.js';
import { captureLogger, type Harness, sleep, startHarness, until } from './kube-api-server/harness.js';
import { pod } from './kube-api-server/objects.js';
import type { KubeObject } from './kube-api-server/server.js';

interface Rec extends Compact {
  node: string;
}
const toRec = (o: unknown): Rec => ({
  metadata: compactMeta(o),
  node: String((o as { spec?: { nodeName?: string } }).spec?.nodeName ?? ''),
});

let h: Harness;
let informers: KubeInformer<Rec>[] = [];

beforeEach(async () => {
  h = await startHarness({ bookmarkIntervalMs: 200 });
});
afterEach(async () => {
  for (const i of informers) await i.close();
  informers = [];
  await h.close();
});

function make(options: InformerOptions = {}, namespace?: string) {
  const cap = captureLogger();
  const inf = new KubeInformer(
    listers(h.kubeConfig).pods(namespace),
    toRec,
    { kubeConfig: h.kubeConfig, log: cap.log },
    { initialBackoffMs: 50, maxBackoffMs: 400, ...options },
  );
  const counts = { add: 0, update: 0, delete: 0 };
  inf.on('add', () => counts.add++);
  inf.on('update', () => counts.update++);
  inf.on('delete', () => counts.delete++);
  informers.push(inf);
  return { inf, cap, counts };
}

const cacheState = (inf: KubeInformer<Rec>) =>
  inf
    .list()
    .map((r) => `${r.metadata.namespace}/${r.metadata.name}@${r.metadata.resourceVersion}`)
    .sort();
const storeState = (ns?: string, pred: (o: KubeObject) => boolean = () => true) =>
  h.server
    .list('pods')
    .filter((o) => (ns === undefined || o.metadata.namespace === ns) && pred(o))
    .map((o) => `${o.metadata.namespace}/${o.metadata.name}@${o.metadata.resourceVersion}`)
    .sort();

function addPods(n: number, prefix = 'p', node = 'n1') {
  for (let i = 0; i < n; i++)
    h.server.create('pods', pod({ name: `${prefix}${i}`, node, ips: [`10.1.${i >> 8}.${i & 255}`] }));
}

/** Mutations of every kind: add, modify, delete. */
function churn(tag: string) {
  const pods = h.server.list('pods');
  h.server.create('pods', pod({ name: `new-${tag}`, node: 'n1' }));
  h.server.update('pods', pods[0].metadata.namespace, pods[0].metadata.name, (o) => {
    o.metadata.labels = { ...o.metadata.labels, touched: tag };
  });
  h.server.delete('pods', pods[1].metadata.namespace, pods[1].metadata.name);
}

async function consistent(inf: KubeInformer<Rec>, counts: { add: number; delete: number }, what: string) {
  await until(() => cacheState(inf).join() === storeState().join(), what);
  expect(cacheState(inf)).toEqual(storeState());
  expect(counts.add - counts.delete).toBe(h.server.list('pods').length);
}

describe('KubeInformer against the test API server', () => {
  it('syncs a big list in pages (limit/continue) and is ready only then', async () => {
    addPods(1234);
    const { inf, counts } = make({ pageSize: 500 });
    expect(inf.synced()).toBe(false);
    inf.start();
    await inf.whenSynced();
    expect(inf.synced()).toBe(true);
    await consistent(inf, counts, 'initial sync');
    const lists = h.server.requests.filter((r) => r.path === '/api/v1/pods' && !r.watch);
    expect(lists.map((r) => r.query.get('limit'))).toEqual(['500', '500', '500']);
    expect(lists[0].query.get('continue')).toBeNull();
    expect(lists[1].query.get('continue')).toBeTruthy();
    expect(lists[2].query.get('continue')).toBeTruthy();
    // Watches ask for bookmarks and a server-side timeout (the client alone asks for neither).
    await until(() => h.server.watchCount === 1, 'watch open');
    const watch = h.server.requests.find((r) => r.watch);
    expect(watch?.query.get('allowWatchBookmarks')).toBe('true');
    expect(watch?.query.get('timeoutSeconds')).toBe('300');
    expect(watch?.query.get('resourceVersion')).toBe(String(h.server.list('pods').length + 1));
  });

  it('reflects add, modify and delete', async () => {
    addPods(5);
    const { inf, counts } = make();
    inf.start();
    await inf.whenSynced();
    h.server.create('pods', pod({ name: 'extra', node: 'n2' }));
    await until(() => inf.get('extra', 'default')?.node === 'n2', 'added pod');
    h.server.update('pods', 'default', 'extra', (o) => {
      o.spec.nodeName = 'n3';
    });
    await until(() => inf.get('extra', 'default')?.node === 'n3', 'modified pod');
    h.server.delete('pods', 'default', 'p0');
    await until(() => inf.get('p0', 'default') === undefined, 'deleted pod');
    await consistent(inf, counts, 'after changes');
    expect(counts.update).toBe(1);
    expect(inf.stats().relists).toBe(0);
  });

  it('keeps trying while the API server is unreachable, then syncs when it appears', async () => {
    addPods(20);
    await h.server.stop();
    const { inf, cap, counts } = make();
    inf.start();
    await until(
      () => cap.lines.some((l) => /kube: list pods failed \(ECONNREFUSED\)/.test(l.msg)),
      'log line',
    );
    await sleep(300);
    expect(inf.synced()).toBe(false);
    // One warning per outage, the retries at debug level.
    expect(cap.lines.filter((l) => l.level === 40).length).toBe(1);
    await h.server.listen();
    await inf.whenSynced();
    await consistent(inf, counts, 'sync after the server appeared');
    expect(inf.stats().restarts).toBeGreaterThan(0);
  });

  it('resumes after dropped connections without losing or doubling objects', async () => {
    addPods(50);
    const { inf, counts } = make();
    inf.start();
    await inf.whenSynced();
    for (let round = 0; round < 5; round++) {
      h.server.dropConnections();
      churn(`drop${round}`);
      await consistent(inf, counts, `after drop ${round}`);
    }
    // Changes were replayed from the event history: no relist was needed.
    expect(inf.stats().relists).toBe(0);
  });

  it('relists on 410 (history compacted while disconnected) without losing or doubling objects', async () => {
    addPods(50);
    const { inf, counts, cap } = make();
    inf.start();
    await inf.whenSynced();
    await h.server.stop();
    churn('a');
    churn('b');
    h.server.compact();
    await h.server.listen();
    await consistent(inf, counts, 'after 410');
    expect(inf.stats().relists).toBe(1);
    expect(cap.text()).toMatch(
      /watch of pods expired \(too old resource version: \d+ \(\d+\)\), listing again/,
    );
    // The ERROR event arrived in a 200 watch response, as from a real server.
    expect(h.server.requests.some((r) => r.watch && r.status === 200)).toBe(true);
  });

  it('survives an API server restart with changes made while it was down', async () => {
    addPods(30);
    const { inf, counts } = make();
    inf.start();
    await inf.whenSynced();
    const restarted = h.server.restart(300);
    churn('during-restart');
    await restarted;
    churn('after-restart');
    await consistent(inf, counts, 'after restart');
    expect(inf.synced()).toBe(true);
  });

  it('retries 5xx answers with backoff', async () => {
    addPods(10);
    h.server.fail({ status: 500, count: 3, match: (r) => !r.watch });
    const { inf, counts, cap } = make();
    inf.start();
    await inf.whenSynced();
    await consistent(inf, counts, 'after 5xx');
    expect(h.server.requests.filter((r) => r.status === 500).length).toBe(3);
    expect(cap.text()).toMatch(/kube: list pods failed \(HTTP 500\); retrying with backoff/);
    // A failing watch is retried too, from the version it had.
    h.server.fail({ status: 503, count: 2, match: (r) => r.watch });
    h.server.dropConnections();
    churn('x');
    await consistent(inf, counts, 'after watch 503');
    expect(inf.stats().relists).toBe(0);
  });

  it('RBAC 403 on list: one clear line naming verb and resource, then recovers when granted', async () => {
    addPods(3);
    h.server.forbid('pods');
    const { inf, cap, counts } = make();
    inf.start();
    await until(
      () => h.server.requests.filter((r) => r.status === 403).length >= 4,
      'several denied retries',
    );
    const rbac = cap.lines.filter((l) => l.msg.startsWith('RBAC:'));
    expect(rbac.map((l) => l.msg)).toEqual([
      'RBAC: cannot list pods at the cluster scope; grant get/list/watch on pods',
    ]);
    expect(rbac[0].level).toBe(50);
    expect(String(rbac[0].cause)).toContain(
      'pods is forbidden: User "system:serviceaccount:podflow:podflow" cannot list resource "pods" in API group "" at the cluster scope',
    );
    expect(inf.synced()).toBe(false);
    h.server.clearFaults();
    await inf.whenSynced();
    await consistent(inf, counts, 'after grant');
  });

  it('RBAC 403 on watch only names the watch verb and the namespace', async () => {
    h.server.create('pods', pod({ name: 'a', namespace: 'podflow' }));
    h.server.forbid('pods', ['watch']);
    const { inf, cap } = make({}, 'podflow');
    inf.start();
    await until(() => cap.lines.some((l) => l.msg.startsWith('RBAC:')), 'RBAC line');
    expect(cap.lines.find((l) => l.msg.startsWith('RBAC:'))?.msg).toBe(
      'RBAC: cannot watch pods in namespace podflow; grant get/list/watch on pods',
    );
    // The list itself worked: the cache is filled.
    expect(inf.list().map((p) => p.metadata.name)).toEqual(['a']);
  });

  it('waits out slow responses, and cuts a connection that stays silent past the idle timeout', async () => {
    addPods(10);
    h.server.slow(700);
    const { inf, counts, cap } = make({ idleTimeoutMs: 400 });
    inf.start();
    await until(() => cap.lines.some((l) => /no data from the API server/.test(String(l.cause))), 'idle cut');
    expect(inf.synced()).toBe(false);
    h.server.slow(150);
    await inf.whenSynced();
    await consistent(inf, counts, 'after slow server');
  });

  it('restarts a list whose continue token expired', async () => {
    addPods(1100);
    let cut = false;
    h.server.beforeRequest = (r) => {
      if (!cut && r.query.get('continue')) {
        cut = true;
        h.server.compact();
      }
    };
    const { inf, counts, cap } = make({ pageSize: 500 });
    inf.start();
    await inf.whenSynced();
    await consistent(inf, counts, 'after expired continue');
    expect(h.server.requests.some((r) => r.status === 410 && !r.watch)).toBe(true);
    expect(cap.text()).toContain('continue token expired, listing again from the start');
  });

  it('honours label and field selectors, on list and on watch', async () => {
    addPods(10, 'a', 'n1');
    addPods(10, 'b', 'n2');
    h.server.update('pods', 'default', 'a1', (o) => {
      o.metadata.labels.tier = 'web';
    });
    const { inf } = make({ fieldSelector: 'spec.nodeName=n1', labelSelector: 'tier in (web,api)' });
    inf.start();
    await inf.whenSynced();
    expect(inf.list().map((p) => p.metadata.name)).toEqual(['a1']);
    // An object that starts or stops matching arrives as ADDED / DELETED on the watch.
    h.server.update('pods', 'default', 'a2', (o) => {
      o.metadata.labels.tier = 'api';
    });
    h.server.update('pods', 'default', 'b2', (o) => {
      o.metadata.labels.tier = 'api';
    });
    h.server.update('pods', 'default', 'a1', (o) => {
      o.metadata.labels.tier = 'db';
    });
    await until(
      () =>
        inf
          .list()
          .map((p) => p.metadata.name)
          .join() === 'a2',
      'selector changes',
    );
    const q = h.server.requests.filter((r) => r.path === '/api/v1/pods');
    expect(q.every((r) => r.query.get('fieldSelector') === 'spec.nodeName=n1')).toBe(true);
    expect(q.every((r) => r.query.get('labelSelector') === 'tier in (web,api)')).toBe(true);
  });

  it('re-watches from its version when the server ends a watch at timeoutSeconds', async () => {
    addPods(5);
    const { inf, counts } = make({ watchTimeoutSeconds: 1 });
    inf.start();
    await inf.whenSynced();
    await until(() => h.server.requests.filter((r) => r.watch).length >= 3, 'three watches', 10_000);
    churn('t');
    await consistent(inf, counts, 'after timeouts');
    expect(inf.stats().relists).toBe(0);
    const watches = h.server.requests.filter((r) => r.watch);
    // Bookmarks moved the version forward between watches.
    expect(Number(watches[2].query.get('resourceVersion'))).toBeGreaterThanOrEqual(
      Number(watches[0].query.get('resourceVersion')),
    );
  });

  it('does not busy-loop when every watch ends at once', async () => {
    addPods(3);
    const { inf, counts, cap } = make({ initialBackoffMs: 100, maxBackoffMs: 400 });
    inf.start();
    await inf.whenSynced();
    // A proxy that answers watches with 200, one JSON line that is no event, and closes: the client
    // would re-watch immediately, and its handler would throw on the line (unhandled rejection).
    h.server.fail({ status: 200, match: (r) => r.watch });
    h.server.dropConnections();
    const before = h.server.requests.length;
    await sleep(1500);
    const watches = h.server.requests.slice(before).filter((r) => r.watch).length;
    expect(watches).toBeGreaterThanOrEqual(2);
    expect(watches).toBeLessThanOrEqual(8);
    expect(cap.text()).toContain('kube: watch of pods sent a line that is not an event; ignored');
    h.server.clearFaults();
    churn('after');
    await consistent(inf, counts, 'after the quick-closing watches');
  });

  it('works over TLS with the CA from the kubeconfig, idle timeout included', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pf-tls-'));
    try {
      execFileSync(
        'openssl',
        [
          'req',
          '-x509',
          '-newkey',
          'ec',
          '-pkeyopt',
          'ec_paramgen_curve:prime256v1',
          '-nodes',
          '-keyout',
          join(dir, 'key.pem'),
          '-out',
          join(dir, 'cert.pem'),
          '-days',
          '1',
          '-subj',
          '/CN=kube-apiserver',
          '-addext',
          'subjectAltName=IP:127.0.0.1',
        ],
        { stdio: 'ignore' },
      );
      const cert = readFileSync(join(dir, 'cert.pem'), 'utf8');
      await h.close();
      h = await startHarness({ tls: { key: readFileSync(join(dir, 'key.pem'), 'utf8'), cert, ca: cert } });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(h.server.url).toMatch(/^https:/);
    addPods(20);
    h.server.slow(700);
    const { inf, counts, cap } = make({ idleTimeoutMs: 400 });
    inf.start();
    await until(
      () => cap.lines.some((l) => /no data from the API server/.test(String(l.cause))),
      'idle cut on TLS',
    );
    h.server.slow(0);
    await inf.whenSynced();
    churn('tls');
    await consistent(inf, counts, 'over TLS');
  });

  it('stops cleanly: no error logged, no request after close', async () => {
    addPods(3);
    const { inf, cap } = make();
    inf.start();
    await inf.whenSynced();
    await until(() => h.server.watchCount === 1, 'watch open');
    await inf.close();
    const n = h.server.requests.length;
    await sleep(300);
    expect(h.server.requests.length).toBe(n);
    expect(h.server.watchCount).toBe(0);
    expect(cap.lines.filter((l) => l.level >= 40)).toEqual([]);
  });
});
