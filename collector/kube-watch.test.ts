// The collector's own list/watch client against the test API server (real HTTP, the real
// list/watch protocol): lists, events, bookmarks, "too old" relists, a dead API server, token
// rotation, and in-cluster access over TLS with the service account's CA and token files.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { type KubeTarget, resolveKubeTarget } from '../shared/kube-access.js';
import { compactMeta } from '../shared/kube-object.js';
import { captureLogger, type Harness, sleep, startHarness, until } from '../test/kube-api-server/harness.js';
import { pod } from '../test/kube-api-server/objects.js';
import type { KubeApiServerOptions } from '../test/kube-api-server/server.js';
import { KubeWatch, type KubeWatchOptions } from './kube-watch.js';

let h: Harness | undefined;
let w: KubeWatch<{ metadata: ReturnType<typeof compactMeta> }> | undefined;
const dirs: string[] = [];
afterEach(async () => {
  await w?.close();
  w = undefined;
  await h?.close();
  h = undefined;
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

async function setup(
  server: KubeApiServerOptions = {},
  options: KubeWatchOptions = {},
  targetOf: (t: KubeTarget) => KubeTarget = (t) => t,
) {
  h = await startHarness({ bookmarkIntervalMs: 100, ...server });
  h.server.create('pods', pod({ name: 'a', node: 'n1', ips: ['10.244.1.1'] }));
  h.server.create('pods', pod({ name: 'b', node: 'n1', ips: ['10.244.1.2'] }));
  h.server.create('pods', pod({ name: 'x', node: 'n2', ips: ['10.244.2.1'] }));
  const cap = captureLogger();
  const events: string[] = [];
  const names = new Set<string>();
  w = new KubeWatch(
    targetOf(h.target),
    { path: '/api/v1/pods', resource: 'pods', fieldSelector: 'spec.nodeName=n1' },
    (o) => ({ metadata: compactMeta(o) }),
    { log: cap.log },
    { pageSize: 1, initialBackoffMs: 50, maxBackoffMs: 200, ...options },
  );
  w.on('add', (r) => {
    events.push(`add ${r.metadata.name}`);
    names.add(r.metadata.name);
  });
  w.on('update', (r) => events.push(`update ${r.metadata.name}`));
  w.on('delete', (r) => {
    events.push(`delete ${r.metadata.name}`);
    names.delete(r.metadata.name);
  });
  return { server: h.server, w, cap, events, names };
}

const applied = (watch: KubeWatch<never> | typeof w) =>
  until(() => (watch?.resourceVersion() ?? 0) >= Number(h!.server.resourceVersion), 'server version applied');

describe('KubeWatch', () => {
  it('lists in pages with the field selector, then follows events and bookmarks', async () => {
    const { server, w, events, names } = await setup();
    expect(w.synced()).toBe(false);
    w.start();
    await w.whenSynced();
    expect([...names].sort()).toEqual(['a', 'b']);
    const lists = server.requests.filter((r) => !r.watch);
    expect(lists.length).toBe(2); // pageSize 1: two pages with a continue token
    expect(lists[1].query.get('continue')).not.toBeNull();
    expect(server.requests.every((r) => r.query.get('fieldSelector') === 'spec.nodeName=n1')).toBe(true);

    server.create('pods', pod({ name: 'c', node: 'n1', ips: ['10.244.1.3'] }));
    server.update('pods', 'default', 'a', (o) => {
      o.metadata.labels = { changed: 'yes' };
    });
    server.delete('pods', 'default', 'b');
    server.create('pods', pod({ name: 'y', node: 'n2', ips: ['10.244.2.2'] }));
    await applied(w);
    expect(events).toEqual(['add a', 'add b', 'add c', 'update a', 'delete b']);
    const watch = server.requests.find((r) => r.watch);
    expect(watch?.query.get('allowWatchBookmarks')).toBe('true');
    expect(watch?.query.get('timeoutSeconds')).toBe('300');

    // Changes elsewhere move the version on; bookmarks carry it to this watch.
    for (let i = 0; i < 3; i++) server.create('pods', pod({ name: `z${i}`, node: 'n2' }));
    await applied(w);
    expect(events.length).toBe(5);
  });

  it('a watch that is too old lists again and diffs: deletes and adds missed meanwhile', async () => {
    const { server, w, events, names, cap } = await setup();
    w.start();
    await w.whenSynced();
    await until(() => server.watchCount === 1, 'watch open');
    await server.stop();
    server.delete('pods', 'default', 'a');
    server.create('pods', pod({ name: 'd', node: 'n1' }));
    server.compact(); // the history is gone: resuming from the old version gets ERROR 410
    await server.listen();
    await until(() => names.has('d') && !names.has('a'), 'relisted');
    expect(events.slice(2).sort()).toEqual(['add d', 'delete a']);
    expect(cap.text()).toMatch(/kube: watch of pods expired \(too old resource version/);
    expect(w.stats().relists).toBe(1);
  });

  it('a dead API server: retried with backoff, readiness says why, no crash; then synced', async () => {
    h = await startHarness();
    const target = h.target;
    await h.server.stop();
    const cap = captureLogger();
    w = new KubeWatch(
      target,
      { path: '/api/v1/pods', resource: 'pods' },
      (o) => ({ metadata: compactMeta(o) }),
      { log: cap.log },
      { initialBackoffMs: 50, maxBackoffMs: 200 },
    );
    w.start();
    await until(() => w!.lastError() !== undefined, 'failure noticed');
    expect(w.lastError()).toMatch(/^list pods failed: .*ECONNREFUSED/);
    await sleep(700);
    expect(w.stats().restarts).toBeGreaterThanOrEqual(3); // retried …
    expect(w.stats().restarts).toBeLessThanOrEqual(10); // … with backoff
    // One warning for the outage, not one per retry.
    expect(cap.lines.filter((l) => l.level === 40).length).toBe(1);
    h.server.create('pods', pod({ name: 'late', node: 'n1' }));
    await h.server.listen();
    await w.whenSynced();
    expect(w.synced()).toBe(true);
    await until(() => w!.lastError() === undefined, 'recovered');
    expect(cap.text()).toContain('kube: watching pods again');
  });

  it('re-reads the token file for every request (rotated service-account tokens)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pf-token-'));
    dirs.push(dir);
    const tokenFile = join(dir, 'token');
    writeFileSync(tokenFile, 'first\n');
    const { server, w, cap } = await setup({ token: 'first' }, {}, ({ token: _inline, ...t }) => ({
      ...t,
      tokenFile,
    }));
    w.start();
    await w.whenSynced();
    // The kubelet writes a new token; the old one stops working; the cut watch reconnects with it.
    writeFileSync(tokenFile, 'second\n');
    server.token = 'second';
    server.dropConnections();
    server.create('pods', pod({ name: 'after', node: 'n1' }));
    await applied(w);
    const after = server.requests.filter((r) => r.status === 401);
    expect(after).toEqual([]);
    expect(cap.lines.filter((l) => l.level >= 50)).toEqual([]);
  });

  it('a rejected token is said once (401), then picked up from the file when fixed', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pf-token-'));
    dirs.push(dir);
    const tokenFile = join(dir, 'token');
    writeFileSync(tokenFile, 'wrong');
    h = await startHarness({ token: 'right' });
    const { token: _inline, ...rest } = h.target;
    const cap = captureLogger();
    w = new KubeWatch(
      { ...rest, tokenFile },
      { path: '/api/v1/pods', resource: 'pods' },
      (o) => ({ metadata: compactMeta(o) }),
      { log: cap.log },
      { initialBackoffMs: 50, maxBackoffMs: 100 },
    );
    w.start();
    await until(() => w!.stats().restarts >= 3, 'retries');
    expect(w.lastError()).toBe('list pods failed: HTTP 401: Unauthorized');
    expect(cap.lines.filter((l) => l.level >= 50).map((l) => l.msg)).toEqual([
      'kube: the API server rejected our credentials (401) on list pods; check the token',
    ]);
    writeFileSync(tokenFile, 'right');
    await w.whenSynced();
    expect(w.synced()).toBe(true);
  });

  it('in-cluster: https with the service account CA, host and port from the environment', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pf-incluster-'));
    dirs.push(dir);
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
    h = await startHarness({
      tls: { key: readFileSync(join(dir, 'key.pem'), 'utf8'), cert, ca: cert },
      token: 'sa',
    });
    const sa = join(dir, 'sa');
    mkdirSync(sa);
    writeFileSync(join(sa, 'token'), 'sa');
    writeFileSync(join(sa, 'ca.crt'), cert);
    const port = new URL(h.server.url).port;
    const target = resolveKubeTarget({
      env: { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: port },
      serviceAccountDir: sa,
    });
    expect(target).toMatchObject({
      source: 'in-cluster',
      server: `https://127.0.0.1:${port}`,
      insecure: false,
    });
    h.server.create('pods', pod({ name: 'p', node: 'n1' }));
    const names: string[] = [];
    w = new KubeWatch(
      target!,
      { path: '/api/v1/pods', resource: 'pods' },
      (o) => ({ metadata: compactMeta(o) }),
      { log: captureLogger().log },
    );
    w.on('add', (r) => names.push(r.metadata.name));
    w.start();
    await w.whenSynced();
    expect(names).toEqual(['p']);
    // A CA that did not sign the server's certificate: refused, said in the readiness text.
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
        join(dir, 'other-key.pem'),
        '-out',
        join(dir, 'other.pem'),
        '-days',
        '1',
        '-subj',
        '/CN=other',
      ],
      { stdio: 'ignore' },
    );
    const other: KubeTarget = { ...target!, ca: { file: join(dir, 'other.pem') } };
    await w.close();
    w = new KubeWatch(
      other,
      { path: '/api/v1/pods', resource: 'pods' },
      (o) => ({ metadata: compactMeta(o) }),
      {
        log: captureLogger().log,
      },
    );
    w.start();
    await until(() => w!.lastError() !== undefined, 'TLS failure');
    expect(w.lastError()).toMatch(/^list pods failed: .*(self.signed|certificate)/i);
    expect(w.synced()).toBe(false);
  });

  it('runs a kubeconfig exec credential plugin for its token, and again when it is refused', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pf-exec-'));
    dirs.push(dir);
    h = await startHarness({ token: 'from-plugin' });
    const plugin = join(dir, 'plugin.sh');
    const runs = join(dir, 'runs');
    writeFileSync(
      plugin,
      `#!/bin/sh\necho run >> ${runs}\necho '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"'"$(cat ${join(dir, 'token')})"'"}}'\n`,
      { mode: 0o755 },
    );
    writeFileSync(join(dir, 'token'), 'from-plugin');
    const kubeconfig = join(dir, 'kubeconfig');
    writeFileSync(
      kubeconfig,
      h.server
        .kubeconfigYaml()
        .replace(
          / {4}token: .*/,
          '    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: ./plugin.sh',
        ),
    );
    const target = resolveKubeTarget({ kubeconfig });
    expect(target?.exec?.command).toBe(plugin);
    h.server.create('pods', pod({ name: 'p', node: 'n1' }));
    w = new KubeWatch(
      target!,
      { path: '/api/v1/pods', resource: 'pods' },
      (o) => ({ metadata: compactMeta(o) }),
      { log: captureLogger().log },
      { initialBackoffMs: 50, maxBackoffMs: 100 },
    );
    w.start();
    await w.whenSynced();
    await until(() => h!.server.watchCount === 1, 'watch open');
    expect(readFileSync(runs, 'utf8')).toBe('run\n'); // one run serves list and watch
    // The token is revoked and the plugin hands out a new one: a 401, then the plugin runs again.
    writeFileSync(join(dir, 'token'), 'renewed');
    h.server.token = 'renewed';
    h.server.dropConnections();
    h.server.create('pods', pod({ name: 'q', node: 'n1' }));
    await applied(w);
    expect(readFileSync(runs, 'utf8')).toBe('run\nrun\n');
  });
});
