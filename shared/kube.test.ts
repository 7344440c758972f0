// Kubeconfig resolution (CONTRACT: --kubeconfig; in-cluster; $KUBECONFIG / ~/.kube/config if
// present; else none) and the compact-record helpers.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { StartupError } from './errors.js';
import { compactMeta, controllerOf, resolveKubeConfig, statusOf, toMs } from './kube.js';

const dir = mkdtempSync(join(tmpdir(), 'pf-kube-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function kubeconfig(name: string, server: string, extra = '    insecure-skip-tls-verify: true\n'): string {
  const path = join(dir, name);
  writeFileSync(
    path,
    `apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: ${server}\n${extra}users:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n`,
  );
  return path;
}

const home = join(dir, 'home');
const emptyHome = join(dir, 'empty-home');
mkdirSync(join(home, '.kube'), { recursive: true });
mkdirSync(emptyHome);
writeFileSync(
  join(home, '.kube', 'config'),
  `apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://home.example:6443\nusers:\n- name: u\n  user: {}\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n`,
);
const sa = join(dir, 'sa', 'var/run/secrets/kubernetes.io/serviceaccount');
mkdirSync(sa, { recursive: true });
writeFileSync(join(sa, 'token'), 'sa-token');
writeFileSync(join(sa, 'ca.crt'), '');

describe('resolveKubeConfig', () => {
  const flagFile = kubeconfig('flag', 'http://127.0.0.1:1');
  const envFile = kubeconfig('env', 'https://env.example:6443', '');
  const inCluster = { KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' };

  it('takes --kubeconfig first, even in a cluster', () => {
    const r = resolveKubeConfig({
      kubeconfig: flagFile,
      env: { ...inCluster, KUBECONFIG: envFile },
      home,
      serviceAccountDir: sa,
    });
    expect(r?.source).toBe(flagFile);
    expect(r?.server).toBe('http://127.0.0.1:1');
  });

  it('then in-cluster (service account token and KUBERNETES_SERVICE_HOST)', () => {
    const r = resolveKubeConfig({ env: { ...inCluster, KUBECONFIG: envFile }, home, serviceAccountDir: sa });
    expect(r?.source).toBe('in-cluster');
    expect(r?.server).toBe('https://10.96.0.1:443');
    expect(process.env.KUBERNETES_SERVICE_HOST).toBeUndefined();
  });

  it('then the first existing file of $KUBECONFIG, then ~/.kube/config, else none', () => {
    const missing = join(dir, 'missing');
    expect(
      resolveKubeConfig({ env: { KUBECONFIG: `${missing}:${envFile}` }, home, serviceAccountDir: sa })
        ?.server,
    ).toBe('https://env.example:6443');
    // No token file: not in a cluster even with the env vars.
    expect(resolveKubeConfig({ env: { ...inCluster }, home, serviceAccountDir: missing })?.source).toBe(
      join(home, '.kube', 'config'),
    );
    expect(
      resolveKubeConfig({ env: { KUBECONFIG: missing }, home: emptyHome, serviceAccountDir: missing }),
    ).toBeUndefined();
  });

  it('stops start-up with one line naming a bad file', () => {
    const bad = join(dir, 'bad');
    writeFileSync(bad, 'clusters: [');
    expect(() => resolveKubeConfig({ kubeconfig: bad })).toThrow(StartupError);
    expect(() => resolveKubeConfig({ kubeconfig: bad })).toThrow(
      /^--kubeconfig .*bad: not a usable kubeconfig/,
    );
    expect(() => resolveKubeConfig({ kubeconfig: join(dir, 'nope') })).toThrow(
      /--kubeconfig .*nope: not a usable kubeconfig \(ENOENT/,
    );
    const plain = kubeconfig('plain', 'http://127.0.0.1:2', '');
    expect(() => resolveKubeConfig({ kubeconfig: plain })).toThrow(
      /server http:\/\/127.0.0.1:2 is http:\/\/ but insecure-skip-tls-verify is not set/,
    );
  });
});

describe('record helpers', () => {
  it('accept list objects (Dates) and watch objects (strings), and never throw', () => {
    expect(toMs(new Date('2026-01-01T00:00:00Z'))).toBe(Date.parse('2026-01-01T00:00:00Z'));
    expect(toMs('2026-01-01T00:00:00Z')).toBe(Date.parse('2026-01-01T00:00:00Z'));
    expect(toMs('garbage')).toBeUndefined();
    expect(compactMeta(null)).toEqual({ name: '' });
    expect(
      compactMeta({ metadata: { name: 'a', namespace: 'b', resourceVersion: '3', labels: {} } }),
    ).toEqual({
      name: 'a',
      namespace: 'b',
      resourceVersion: '3',
    });
    expect(
      controllerOf({
        metadata: {
          ownerReferences: [
            { kind: 'Foo', name: 'f' },
            { kind: 'ReplicaSet', name: 'r', controller: true },
          ],
        },
      }),
    ).toEqual({ kind: 'ReplicaSet', name: 'r' });
    expect(controllerOf({ metadata: { ownerReferences: [{ kind: 1 }] } })).toBeUndefined();
    expect(statusOf({ code: 403 })).toBe(403);
    expect(statusOf({ statusCode: 410 })).toBe(410);
    expect(statusOf({ code: 'ECONNREFUSED' })).toBeUndefined();
  });
});
