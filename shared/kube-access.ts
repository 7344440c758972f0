// Where Kubernetes access comes from (the CONTRACT's --kubeconfig row), without
// @kubernetes/client-node: the collector runs on every node, and loading that client alone takes a
// Node process from about 40 MB to about 110 MB. The exporter turns the same location into a
// client-node KubeConfig (shared/kube.ts); the collector reads it into a `KubeTarget` here, plain
// data for its small list/watch client (collector/kube-watch.ts).
//
//   locateKubeConfig(opts)  → in-cluster | kubeconfig file(s) | undefined   (the search order, once)
//   resolveKubeTarget(opts) → KubeTarget | undefined                        (the collector's side)
//
// What a kubeconfig may hold for the collector: server, certificate-authority(-data),
// insecure-skip-tls-verify, tls-server-name; user token, tokenFile, client-certificate(-data),
// client-key(-data), username/password, and `exec` credential plugins (aws, gke-gcloud-auth-plugin,
// kubelogin). The legacy `auth-provider` needs the full client: such a kubeconfig stops start-up
// with one line that says so.
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { isIPv6 } from 'node:net';
import { homedir } from 'node:os';
import { delimiter, dirname, isAbsolute, join } from 'node:path';
import { promisify } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { StartupError } from './errors.js';

export interface ResolveOptions {
  /** `--kubeconfig`. */
  kubeconfig?: string;
  env?: NodeJS.ProcessEnv;
  home?: string;
  /** Where the service account is mounted (tests point it elsewhere). */
  serviceAccountDir?: string;
}

const execFileP = promisify(execFile);

export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export type KubeLocation =
  | { kind: 'in-cluster'; host: string; port: string; serviceAccountDir: string }
  /** `where` names the origin in error messages: `--kubeconfig`, `KUBECONFIG` or `~/.kube/config`. */
  | { kind: 'files'; files: string[]; where: string };

/**
 * The search order: the flag's file; else in-cluster (service account token and
 * KUBERNETES_SERVICE_HOST/PORT); else the existing files of $KUBECONFIG (a list, like kubectl);
 * else ~/.kube/config if present; else undefined (no Kubernetes).
 */
export function locateKubeConfig(opts: ResolveOptions = {}): KubeLocation | undefined {
  const env = opts.env ?? process.env;
  if (opts.kubeconfig !== undefined)
    return { kind: 'files', files: [opts.kubeconfig], where: '--kubeconfig' };
  const saDir = opts.serviceAccountDir ?? SERVICE_ACCOUNT_DIR;
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT;
  if (host && port && existsSync(join(saDir, 'token'))) {
    return { kind: 'in-cluster', host, port, serviceAccountDir: saDir };
  }
  if (env.KUBECONFIG) {
    const files = env.KUBECONFIG.split(delimiter).filter((f) => f.length > 0 && existsSync(f));
    if (files.length > 0) return { kind: 'files', files, where: 'KUBECONFIG' };
  }
  const home = opts.home ?? homedir();
  const file = join(home, '.kube', 'config');
  if (home && existsSync(file)) return { kind: 'files', files: [file], where: '~/.kube/config' };
  return undefined;
}

/** The in-cluster server URL as client-go builds it (plain http on the proxy ports). */
export function inClusterServer(host: string, port: string): string {
  const scheme = port === '80' || port === '8080' || port === '8001' ? 'http' : 'https';
  return `${scheme}://${isIPv6(host) ? `[${host}]` : host}:${port}`;
}

/** Bytes given inline (base64 `…-data`) or as a file read at each use (rotated certificates). */
export type Material = { data: Buffer } | { file: string };

/** Everything the collector's client needs to reach the API server. Plain data. */
export interface KubeTarget {
  /** A file path or "in-cluster", for the start-up log line. */
  source: string;
  /** The API server URL, e.g. https://10.96.0.1:443. */
  server: string;
  ca?: Material;
  cert?: Material;
  key?: Material;
  /** insecure-skip-tls-verify. */
  insecure: boolean;
  /** tls-server-name: the name the certificate is checked against. */
  serverName?: string;
  /** A bearer token given inline. */
  token?: string;
  /** A bearer token file, re-read for every request: the kubelet rotates projected tokens. */
  tokenFile?: string;
  basic?: { username: string; password: string };
  /** A credential plugin run for a token or client certificate (client.authentication.k8s.io). */
  exec?: ExecPlugin;
}

export interface ExecPlugin {
  command: string;
  args: string[];
  env: Record<string, string>;
  apiVersion: string;
}

/** What a credential plugin gave, and until when. */
export interface ExecCredential {
  token?: string;
  cert?: Buffer;
  key?: Buffer;
  /** ms since the epoch; undefined: until the API server refuses it. */
  expiresAt?: number;
}

/** Runs the plugin as kubectl does (KUBERNETES_EXEC_INFO, non-interactive) and reads its status. */
export async function runExecPlugin(p: ExecPlugin): Promise<ExecCredential> {
  const info = { apiVersion: p.apiVersion, kind: 'ExecCredential', spec: { interactive: false } };
  const { stdout } = await execFileP(p.command, p.args, {
    env: { ...process.env, ...p.env, KUBERNETES_EXEC_INFO: JSON.stringify(info) },
    timeout: 60_000,
    maxBuffer: 1 << 20,
  });
  const status = (JSON.parse(stdout) as { status?: Record<string, unknown> }).status ?? {};
  const str = (v: unknown) => (typeof v === 'string' && v !== '' ? v : undefined);
  const expires = str(status.expirationTimestamp);
  const cred: ExecCredential = { token: str(status.token) };
  const cert = str(status.clientCertificateData);
  const key = str(status.clientKeyData);
  if (cert !== undefined && key !== undefined) {
    cred.cert = Buffer.from(cert);
    cred.key = Buffer.from(key);
  }
  if (cred.token === undefined && cred.cert === undefined) {
    throw new Error(`credential plugin ${p.command} gave neither a token nor a client certificate`);
  }
  if (expires !== undefined) cred.expiresAt = Date.parse(expires);
  return cred;
}

/** The collector's access: `locateKubeConfig`, then the kubeconfig read without client-node. */
export function resolveKubeTarget(opts: ResolveOptions = {}): KubeTarget | undefined {
  const loc = locateKubeConfig(opts);
  if (loc === undefined) return undefined;
  if (loc.kind === 'in-cluster') {
    const ca = join(loc.serviceAccountDir, 'ca.crt');
    return {
      source: 'in-cluster',
      server: inClusterServer(loc.host, loc.port),
      ca: existsSync(ca) ? { file: ca } : undefined,
      insecure: false,
      tokenFile: join(loc.serviceAccountDir, 'token'),
    };
  }
  return loadKubeconfigFiles(loc.files, loc.where);
}

/** A named entry of a kubeconfig list (`- name: x\n  cluster: {...}`). */
type Entry = { name?: unknown; cluster?: unknown; user?: unknown; context?: unknown } | null;
type Doc = { 'current-context'?: unknown; clusters?: Entry[]; users?: Entry[]; contexts?: Entry[] };

/** kubectl's merge: the first file that sets a name or the current context wins. */
function loadKubeconfigFiles(files: string[], where: string): KubeTarget {
  let current: string | undefined;
  const clusters = new Map<string, { entry: Record<string, unknown>; dir: string }>();
  const users = new Map<string, { entry: Record<string, unknown>; dir: string }>();
  const contexts = new Map<string, Record<string, unknown>>();
  for (const file of files) {
    let doc: Doc;
    try {
      doc = (parseYaml(readFileSync(file, 'utf8')) ?? {}) as Doc;
      if (typeof doc !== 'object' || Array.isArray(doc)) throw new Error('not a YAML mapping');
    } catch (err) {
      throw new StartupError(`${where} ${file}: not a usable kubeconfig (${firstLine(err)})`);
    }
    const dir = dirname(file);
    if (
      current === undefined &&
      typeof doc['current-context'] === 'string' &&
      doc['current-context'] !== ''
    ) {
      current = doc['current-context'];
    }
    for (const [list, key, into] of [
      [doc.clusters, 'cluster', clusters],
      [doc.users, 'user', users],
    ] as const) {
      for (const e of Array.isArray(list) ? list : []) {
        const name = e?.name;
        if (typeof name === 'string' && !into.has(name)) {
          into.set(name, { entry: (e?.[key] ?? {}) as Record<string, unknown>, dir });
        }
      }
    }
    for (const e of Array.isArray(doc.contexts) ? doc.contexts : []) {
      if (typeof e?.name === 'string' && !contexts.has(e.name)) {
        contexts.set(e.name, (e.context ?? {}) as Record<string, unknown>);
      }
    }
  }
  const file = files[0];
  const context = current === undefined ? undefined : contexts.get(current);
  const cluster = typeof context?.cluster === 'string' ? clusters.get(context.cluster) : undefined;
  const server = cluster?.entry.server;
  if (typeof server !== 'string' || server === '') {
    throw new StartupError(`${where} ${file}: no current context with a cluster server`);
  }
  const insecure = cluster?.entry['insecure-skip-tls-verify'] === true;
  if (server.startsWith('http:') && !insecure) {
    throw new StartupError(
      `${where} ${file}: server ${server} is http:// but insecure-skip-tls-verify is not set`,
    );
  }
  const c = cluster?.entry ?? {};
  const u = (typeof context?.user === 'string' ? users.get(context.user) : undefined) ?? {
    entry: {},
    dir: '',
  };
  const userName = String(context?.user ?? '');
  if (u.entry['auth-provider'] !== undefined && u.entry['auth-provider'] !== null) {
    throw new StartupError(
      `${where} ${file}: user ${userName} authenticates with auth-provider, which the collector does not run; give it a token, token file, client certificate or exec plugin`,
    );
  }
  const str = (v: unknown) => (typeof v === 'string' && v !== '' ? v : undefined);
  const target: KubeTarget = {
    source: file,
    server,
    insecure,
    ca: material(c, 'certificate-authority', cluster?.dir ?? ''),
    cert: material(u.entry, 'client-certificate', u.dir),
    key: material(u.entry, 'client-key', u.dir),
    serverName: str(c['tls-server-name']),
    token: str(u.entry.token),
    tokenFile: str(u.entry.tokenFile) === undefined ? undefined : absolute(u.dir, String(u.entry.tokenFile)),
  };
  const exec = u.entry.exec as {
    command?: unknown;
    args?: unknown;
    env?: unknown;
    apiVersion?: unknown;
  } | null;
  if (exec !== undefined && exec !== null) {
    const command = str(exec.command);
    if (command === undefined)
      throw new StartupError(`${where} ${file}: user ${userName}: exec without a command`);
    target.exec = {
      // A command with a slash is relative to the kubeconfig's directory; a bare name is looked up in PATH.
      command: command.includes('/') ? absolute(u.dir, command) : command,
      args: Array.isArray(exec.args) ? exec.args.map(String) : [],
      env: Object.fromEntries(
        (Array.isArray(exec.env) ? exec.env : []).map((e: { name?: unknown; value?: unknown }) => [
          String(e?.name),
          String(e?.value ?? ''),
        ]),
      ),
      apiVersion: str(exec.apiVersion) ?? 'client.authentication.k8s.io/v1',
    };
  }
  const username = str(u.entry.username);
  if (username !== undefined) target.basic = { username, password: String(u.entry.password ?? '') };
  return target;
}

function material(entry: Record<string, unknown>, key: string, dir: string): Material | undefined {
  const data = entry[`${key}-data`];
  if (typeof data === 'string' && data !== '') return { data: Buffer.from(data, 'base64') };
  const file = entry[key];
  if (typeof file === 'string' && file !== '') return { file: absolute(dir, file) };
  return undefined;
}

/** Relative paths in a kubeconfig are relative to its own directory, as kubectl reads them. */
const absolute = (dir: string, p: string) => (isAbsolute(p) ? p : join(dir, p));

export async function readMaterial(m: Material | undefined): Promise<Buffer | undefined> {
  if (m === undefined) return undefined;
  if ('data' in m) return m.data;
  const b = await readFile(m.file);
  // An empty CA file (a mount not filled yet) means "none" rather than "trust nothing".
  return b.length === 0 ? undefined : b;
}

function firstLine(err: unknown): string {
  return ((err as Error)?.message ?? String(err)).split('\n')[0];
}
