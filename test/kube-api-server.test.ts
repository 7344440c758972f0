// The test API server itself, checked against the protocol as kube-apiserver speaks it, with plain
// HTTP requests (no client library), so the informer tests stand on a server that behaves.
import { request } from 'node:http';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type Harness, startHarness, until } from './kube-api-server/harness.js';
import { node, pod, replicaSet } from './kube-api-server/objects.js';
import { matchLabels, parseLabelSelector } from './kube-api-server/selectors.js';
import type { KubeObject } from './kube-api-server/server.js';

let h: Harness;
beforeEach(async () => {
  h = await startHarness({ historySize: 5, bookmarkIntervalMs: 100 });
});
afterEach(async () => {
  await h.close();
});

async function get(path: string, token = h.server.token): Promise<{ status: number; body: KubeObject }> {
  const res = await fetch(h.server.url + path, { headers: { Authorization: `Bearer ${token}` } });
  return { status: res.status, body: (await res.json()) as KubeObject };
}

/** Open a watch and collect its events until the server closes it or `stop` is called. */
function watch(path: string) {
  const events: { type: string; object: KubeObject }[] = [];
  let status = 0;
  let ended = false;
  const req = request(
    h.server.url + path,
    { headers: { Authorization: `Bearer ${h.server.token}` } },
    (res) => {
      status = res.statusCode ?? 0;
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buf += chunk;
        let nl = buf.indexOf('\n');
        while (nl >= 0) {
          events.push(JSON.parse(buf.slice(0, nl)));
          buf = buf.slice(nl + 1);
          nl = buf.indexOf('\n');
        }
      });
      res.on('end', () => {
        ended = true;
      });
    },
  );
  req.end();
  return {
    events,
    get status() {
      return status;
    },
    get ended() {
      return ended;
    },
    stop: () => req.destroy(),
  };
}

describe('test API server protocol', () => {
  it('lists with resourceVersion, items without kind, sorted by namespace/name', async () => {
    h.server.create('pods', pod({ name: 'b', namespace: 'x' }));
    h.server.create('pods', pod({ name: 'a', namespace: 'y' }));
    h.server.create('pods', pod({ name: 'c', namespace: 'x' }));
    const { status, body } = await get('/api/v1/pods');
    expect(status).toBe(200);
    expect(body.kind).toBe('PodList');
    expect(body.apiVersion).toBe('v1');
    expect(body.metadata.resourceVersion).toBe(h.server.resourceVersion);
    expect(body.items.map((p: KubeObject) => `${p.metadata.namespace}/${p.metadata.name}`)).toEqual([
      'x/b',
      'x/c',
      'y/a',
    ]);
    expect(body.items[0].kind).toBeUndefined();
    expect(body.items[0].metadata.uid).toMatch(/^[0-9a-f-]{36}$/);
    const ns = await get('/api/v1/namespaces/x/pods');
    expect(ns.body.items.map((p: KubeObject) => p.metadata.name)).toEqual(['b', 'c']);
    const rs = await get('/apis/apps/v1/replicasets');
    expect(rs.body.kind).toBe('ReplicaSetList');
    expect(rs.body.apiVersion).toBe('apps/v1');
    expect((await get('/api/v1/namespaces/x/nodes')).status).toBe(404);
    expect((await get('/apis/apps/v1/pods')).status).toBe(404);
  });

  it('pages with limit/continue over a consistent snapshot; an expired token is HTTP 410', async () => {
    for (let i = 0; i < 5; i++) h.server.create('pods', pod({ name: `p${i}` }));
    const first = await get('/api/v1/pods?limit=2');
    expect(first.body.items.map((p: KubeObject) => p.metadata.name)).toEqual(['p0', 'p1']);
    expect(first.body.metadata.remainingItemCount).toBe(3);
    // Changes after the first page do not show in later pages.
    h.server.delete('pods', 'default', 'p3');
    const second = await get(
      `/api/v1/pods?limit=2&continue=${encodeURIComponent(first.body.metadata.continue)}`,
    );
    expect(second.body.items.map((p: KubeObject) => p.metadata.name)).toEqual(['p2', 'p3']);
    expect(second.body.metadata.resourceVersion).toBe(first.body.metadata.resourceVersion);
    const third = await get(
      `/api/v1/pods?limit=2&continue=${encodeURIComponent(second.body.metadata.continue)}`,
    );
    expect(third.body.items.map((p: KubeObject) => p.metadata.name)).toEqual(['p4']);
    expect(third.body.metadata.continue).toBeUndefined();

    const again = await get('/api/v1/pods?limit=1');
    h.server.compact();
    const expired = await get(
      `/api/v1/pods?limit=1&continue=${encodeURIComponent(again.body.metadata.continue)}`,
    );
    expect(expired.status).toBe(410);
    expect(expired.body).toMatchObject({ kind: 'Status', status: 'Failure', reason: 'Expired', code: 410 });
    expect(expired.body.message).toMatch(/^The provided continue parameter is too old/);
  });

  it('filters by label selector (=, !=, in, notin, exists, !exists) and field selector', async () => {
    h.server.create('pods', pod({ name: 'a', node: 'n1', labels: { app: 'web', tier: 'front' } }));
    h.server.create('pods', pod({ name: 'b', node: 'n2', labels: { app: 'api' }, phase: 'Succeeded' }));
    h.server.create('pods', pod({ name: 'c', node: 'n1', labels: { app: 'db', tier: 'back' } }));
    const names = async (q: string) =>
      (await get(`/api/v1/pods?${q}`)).body.items.map((p: KubeObject) => p.metadata.name).join(',');
    expect(await names('labelSelector=app%3Dweb')).toBe('a');
    expect(await names('labelSelector=app%3D%3Dweb')).toBe('a');
    expect(await names('labelSelector=app!%3Dweb')).toBe('b,c');
    expect(await names(`labelSelector=${encodeURIComponent('app in (web, db)')}`)).toBe('a,c');
    expect(await names(`labelSelector=${encodeURIComponent('app notin (web)')}`)).toBe('b,c');
    expect(await names('labelSelector=tier')).toBe('a,c');
    expect(await names('labelSelector=!tier')).toBe('b');
    expect(await names(`labelSelector=${encodeURIComponent('tier,app!=db')}`)).toBe('a');
    expect(await names('fieldSelector=spec.nodeName%3Dn1')).toBe('a,c');
    expect(await names('fieldSelector=status.phase!%3DRunning')).toBe('b');
    expect(await names('fieldSelector=metadata.name%3Dc,metadata.namespace%3Ddefault')).toBe('c');
    const bad = await get('/api/v1/pods?fieldSelector=spec.bogus%3Dx');
    expect(bad.status).toBe(400);
    expect(bad.body.message).toBe('field label not supported: spec.bogus');
    expect((await get(`/api/v1/pods?labelSelector=${encodeURIComponent('a in (b')}`)).status).toBe(400);
  });

  it('label selector parser agrees with upstream semantics', () => {
    const m = (sel: string, labels?: Record<string, string>) => matchLabels(parseLabelSelector(sel), labels);
    expect(m('a!=b', undefined)).toBe(true);
    expect(m('a notin (x)', {})).toBe(true);
    expect(m('a in (x)', {})).toBe(false);
    expect(m('', { a: 'b' })).toBe(true);
    expect(() => parseLabelSelector('a=b c')).toThrow(/unable to parse/);
  });

  it('watches: initial ADDED, live events, selector transitions, bookmarks, timeoutSeconds', async () => {
    h.server.create('pods', pod({ name: 'a', labels: { app: 'web' } }));
    const w = watch(
      '/api/v1/pods?watch=true&labelSelector=app%3Dweb&allowWatchBookmarks=true&timeoutSeconds=1',
    );
    await until(() => w.events.length >= 1, 'initial event');
    expect(w.status).toBe(200);
    expect(w.events[0]).toMatchObject({
      type: 'ADDED',
      object: { kind: 'Pod', apiVersion: 'v1', metadata: { name: 'a' } },
    });
    h.server.create('pods', pod({ name: 'b', labels: { app: 'api' } }));
    h.server.update('pods', 'default', 'b', (o) => {
      o.metadata.labels.app = 'web';
    });
    h.server.update('pods', 'default', 'a', (o) => {
      o.metadata.labels.app = 'db';
    });
    h.server.delete('pods', 'default', 'b');
    await until(() => w.ended, 'server ends the watch at timeoutSeconds', 5000);
    const changes = w.events
      .filter((e) => e.type !== 'BOOKMARK')
      .map((e) => `${e.type} ${e.object.metadata.name}`);
    expect(changes).toEqual(['ADDED a', 'ADDED b', 'DELETED a', 'DELETED b']);
    const bookmarks = w.events.filter((e) => e.type === 'BOOKMARK');
    expect(bookmarks.length).toBeGreaterThanOrEqual(2);
    expect(Object.keys(bookmarks[0].object.metadata)).toEqual(['resourceVersion']);
    expect(bookmarks.at(-1)?.object.metadata.resourceVersion).toBe(h.server.resourceVersion);
    expect(w.events.at(-1)?.type).toBe('BOOKMARK'); // one right before the end
  });

  it('watch from a version replays history; too old gives 200 and an ERROR 410 event', async () => {
    const created = h.server.create('pods', pod({ name: 'a' }));
    h.server.update('pods', 'default', 'a', (o) => {
      o.metadata.labels.x = '1';
    });
    const w = watch(`/api/v1/pods?watch=true&resourceVersion=${created.metadata.resourceVersion}`);
    await until(() => w.events.length === 1, 'replayed event');
    expect(w.events[0].type).toBe('MODIFIED');
    w.stop();
    // Push the first version out of the bounded history (5 events).
    for (let i = 0; i < 6; i++) h.server.create('nodes', node({ name: `n${i}` }));
    const old = watch(`/api/v1/pods?watch=true&resourceVersion=${created.metadata.resourceVersion}`);
    await until(() => old.ended, 'server closes');
    expect(old.status).toBe(200);
    expect(old.events).toEqual([
      {
        type: 'ERROR',
        object: {
          kind: 'Status',
          apiVersion: 'v1',
          metadata: {},
          status: 'Failure',
          message: expect.stringMatching(/^too old resource version: \d+ \(\d+\)$/),
          reason: 'Expired',
          code: 410,
        },
      },
    ]);
    // A list asking for an exact compacted version is HTTP 410.
    const exact = await get(
      `/api/v1/pods?resourceVersion=${created.metadata.resourceVersion}&resourceVersionMatch=Exact`,
    );
    expect(exact.status).toBe(410);
  });

  it('faults: 401 without the token, 403 RBAC Status, 5xx, drop, restart compacts', async () => {
    h.server.create('replicasets', replicaSet('rs', 'shop'));
    expect((await get('/api/v1/pods', 'wrong')).status).toBe(401);
    h.server.forbid('replicasets', ['list']);
    const denied = await get('/apis/apps/v1/namespaces/shop/replicasets');
    expect(denied.status).toBe(403);
    expect(denied.body).toEqual({
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message:
        'replicasets.apps is forbidden: User "system:serviceaccount:podflow:podflow" cannot list resource "replicasets" in API group "apps" in the namespace "shop"',
      reason: 'Forbidden',
      details: { group: 'apps', kind: 'replicasets' },
      code: 403,
    });
    h.server.clearFaults();
    h.server.fail({ status: 503, count: 1 });
    expect((await get('/api/v1/pods')).status).toBe(503);
    expect((await get('/api/v1/pods')).status).toBe(200);

    const w = watch('/api/v1/pods?watch=true');
    await until(() => h.server.watchCount === 1, 'watch open');
    h.server.dropConnections();
    await until(() => h.server.watchCount === 0, 'watch cut');
    const rv = h.server.resourceVersion;
    await h.server.restart();
    expect(h.server.resourceVersion).toBe(rv); // versions survive (etcd), history does not
    const old = watch(`/api/v1/pods?watch=true&resourceVersion=${Number(rv) - 1}`);
    await until(() => old.ended, 'closed');
    expect(old.events[0].object.code).toBe(410);
    w.stop();
  });
});
