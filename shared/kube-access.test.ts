// The collector's kubeconfig reading (no @kubernetes/client-node): what it takes from a kubeconfig,
// the same error lines as the exporter's resolveKubeConfig, and in-cluster access.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { StartupError } from './errors.js';
import { resolveKubeConfig } from './kube.js';
import { resolveKubeTarget } from './kube-access.js';

const dir = mkdtempSync(join(tmpdir(), 'pf-kube-access-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

const config = (cluster: string, user: string, extra = '') =>
  `apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n${cluster}users:\n- name: u\n  user:\n${user}contexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n${extra}`;

describe('resolveKubeTarget', () => {
  it('takes server, CA, client certificate and token; relative paths from the file’s directory', () => {
    mkdirSync(join(dir, 'certs'), { recursive: true });
    const path = file(
      'certs.yaml',
      config(
        '    server: https://api.example:6443\n    certificate-authority: certs/ca.crt\n    tls-server-name: kube\n',
        `    client-certificate-data: ${Buffer.from('CERT').toString('base64')}\n    client-key: /abs/key.pem\n    token: tok\n`,
      ),
    );
    expect(resolveKubeTarget({ kubeconfig: path })).toEqual({
      source: path,
      server: 'https://api.example:6443',
      insecure: false,
      ca: { file: join(dir, 'certs/ca.crt') },
      cert: { data: Buffer.from('CERT') },
      key: { file: '/abs/key.pem' },
      serverName: 'kube',
      token: 'tok',
      tokenFile: undefined,
    });
  });

  it('merges $KUBECONFIG files like kubectl: the first that sets a name or the context wins', () => {
    const a = file(
      'a.yaml',
      'current-context: x\nclusters:\n- name: c\n  cluster: {server: https://first:1}\n',
    );
    const b = file('b.yaml', config('    server: https://second:2\n', '    token: t\n'));
    const t = resolveKubeTarget({ env: { KUBECONFIG: `${a}:${b}` }, home: dir, serviceAccountDir: dir });
    expect(t?.server).toBe('https://first:1');
    expect(t?.token).toBe('t');
  });

  it('refuses what it cannot do with one line, as the exporter words the shared cases', () => {
    const legacy = file(
      'auth-provider.yaml',
      config('    server: https://gke:443\n', '    auth-provider:\n      name: gcp\n'),
    );
    expect(() => resolveKubeTarget({ kubeconfig: legacy })).toThrow(StartupError);
    expect(() => resolveKubeTarget({ kubeconfig: legacy })).toThrow(
      `--kubeconfig ${legacy}: user u authenticates with auth-provider, which the collector does not run; give it a token, token file, client certificate or exec plugin`,
    );
    const plain = file('plain.yaml', config('    server: http://127.0.0.1:2\n', '    token: t\n'));
    const bad = file('bad.yaml', 'clusters: [');
    const empty = file('empty.yaml', 'apiVersion: v1\nkind: Config\n');
    for (const f of [plain, bad, empty, join(dir, 'nope')]) {
      const exporter = (() => {
        try {
          resolveKubeConfig({ kubeconfig: f });
        } catch (err) {
          return (err as Error).message;
        }
      })();
      const collector = (() => {
        try {
          resolveKubeTarget({ kubeconfig: f });
        } catch (err) {
          return (err as Error).message;
        }
      })();
      // Same start of the line (the part in brackets is each parser's own wording).
      expect(collector?.split(' (')[0]).toBe(exporter?.split(' (')[0]);
    }
  });

  it('in a cluster: https to the service host, the service account CA and token file', () => {
    const sa = join(dir, 'sa');
    mkdirSync(sa, { recursive: true });
    writeFileSync(join(sa, 'token'), 't');
    writeFileSync(join(sa, 'ca.crt'), 'CA');
    const env = { KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '443' };
    expect(resolveKubeTarget({ env, serviceAccountDir: sa })).toEqual({
      source: 'in-cluster',
      server: 'https://[fd00::1]:443',
      ca: { file: join(sa, 'ca.crt') },
      insecure: false,
      tokenFile: join(sa, 'token'),
    });
  });
});
