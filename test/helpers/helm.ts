// Rendering the Helm chart without a helm binary, and checking what it renders the way an install
// would: values against values.schema.json (Helm does this before rendering; helm-render does not,
// so ajv does it here), every object against the Kubernetes API schemas (kubernetes-models, plus an
// unknown-field walk over @kubernetes/client-node's model maps, as `kubectl --validate=strict`),
// and every container's command line, environment and config file through podflow's own loadConfig.
import { execFile } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import * as k8s from '@kubernetes/client-node';
import { Ajv, type ErrorObject } from 'ajv';
import { parseAllDocuments, parse as parseYaml } from 'yaml';
import { type Command, type Config, loadConfig, OPTIONS, type OptionName } from '../../shared/config.js';

const execFileP = promisify(execFile);

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const CHART = join(REPO, 'deploy/helm/podflow');
/** The chart directory renderChart uses (renderNotes points it at a modified copy). */
const CHART_OVERRIDE = { dir: CHART };
/** The kit beside the repository (CI clones main with shared/ next to it). */
const BUILD_SH = resolve(REPO, '../shared/tools/helm-render/build.sh');

// Rendered manifests are free-form YAML: tests reach into them by path.
// biome-ignore lint/suspicious/noExplicitAny: see above
type Loose = any;
export type K8sObject = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; [k: string]: Loose };
  [k: string]: Loose;
};

/**
 * Builds helm-render once per machine into the temp directory; rebuilt when its sources are newer
 * than the binary. The build installs Debian's Go and sprig packages when missing (needs root).
 */
export async function helmRenderBinary(): Promise<string> {
  const dir = join(tmpdir(), 'podflow-helm-render');
  const bin = join(dir, 'helm-render');
  const sources = [BUILD_SH, join(dirname(BUILD_SH), 'main.go')];
  if (!existsSync(BUILD_SH))
    throw new Error(`helm-render not found at ${BUILD_SH} (shared/ beside the repo)`);
  const newest = Math.max(...sources.map((f) => statSync(f).mtimeMs));
  if (existsSync(bin) && statSync(bin).mtimeMs >= newest) return bin;
  mkdirSync(dir, { recursive: true });
  const tmp = `${bin}.${process.pid}`;
  await execFileP('bash', [BUILD_SH, tmp], { maxBuffer: 16 << 20, timeout: 300_000 });
  // rename is atomic: a concurrent run sees the old binary or the new one, never half of it.
  await execFileP('mv', ['-f', tmp, bin]);
  return bin;
}

export interface RenderOptions {
  values?: Record<string, unknown>;
  name?: string;
  namespace?: string;
}

export interface Rendered {
  objects: K8sObject[];
  text: string;
}

/** `helm template --strict` with the given values; rejects with the renderer's error message. */
export async function renderChart(bin: string, opts: RenderOptions = {}): Promise<Rendered> {
  const dir = mkdtempSync(join(tmpdir(), 'pf-helm-'));
  try {
    const args = ['--strict', '--name', opts.name ?? 'pf', '--namespace', opts.namespace ?? 'monitoring'];
    if (opts.values) {
      // JSON is YAML that reads the same in YAML 1.1 (Go) and 1.2: `no` stays a string.
      writeFileSync(join(dir, 'values.yaml'), JSON.stringify(opts.values));
      args.push('-f', join(dir, 'values.yaml'));
    }
    let text: string;
    try {
      ({ stdout: text } = await execFileP(bin, [...args, CHART_OVERRIDE.dir], { maxBuffer: 64 << 20 }));
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      throw new Error((e.stderr ?? e.message).trim());
    }
    const objects = parseAllDocuments(text)
      .map((d) => d.toJS() as K8sObject | null)
      .filter((o): o is K8sObject => o !== null);
    return { objects, text };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Renders a copy of the chart with `files` (paths in the chart, e.g. `templates/_x.tpl`) added. A
 * template file defining a named template that the chart defines too replaces it (the later file in
 * name order wins): how a test stands in for what only a cluster gives, such as `lookup`.
 */
export async function renderChartWith(
  bin: string,
  files: Record<string, string>,
  opts: RenderOptions = {},
): Promise<Rendered> {
  const dir = mkdtempSync(join(tmpdir(), 'pf-helm-copy-'));
  try {
    const chart = join(dir, 'podflow');
    cpSync(CHART, chart, { recursive: true });
    for (const [path, text] of Object.entries(files)) writeFileSync(join(chart, path), text);
    const saved = CHART_OVERRIDE.dir;
    CHART_OVERRIDE.dir = chart;
    try {
      return await renderChart(bin, opts);
    } finally {
      CHART_OVERRIDE.dir = saved;
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * NOTES.txt as `helm install` prints it. helm-render skips NOTES.txt, so a copy of the chart turns it
 * into a named template and renders it inside a ConfigMap (with --strict, like the rest).
 */
export async function renderNotes(bin: string, opts: RenderOptions = {}): Promise<string> {
  const notes = readFileSync(join(CHART, 'templates/NOTES.txt'), 'utf8');
  const { objects } = await renderChartWith(
    bin,
    {
      'templates/_notes.tpl': `{{- define "podflow.notes" -}}\n${notes}{{- end -}}\n`,
      'templates/notes.yaml':
        'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: {{ include "podflow.notes" . | toJson }}\n',
    },
    opts,
  );
  const cm = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === 'notes');
  if (!cm) throw new Error('notes not rendered');
  return cm.data.notes as string;
}

/** Helm's values merge: maps merge deeply, everything else (lists too) replaces. */
export function mergeValues(base: unknown, over: unknown): unknown {
  if (isMap(base) && isMap(over)) {
    const out: Record<string, unknown> = { ...base };
    for (const [k, v] of Object.entries(over)) out[k] = k in base ? mergeValues(base[k], v) : v;
    return out;
  }
  return over;
}
const isMap = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

let schemaValidator: ReturnType<Ajv['compile']> | undefined;

/**
 * What `helm install` does before rendering: the chart's values.yaml merged with the user's values,
 * validated against values.schema.json. Returns Helm-style lines ("- collector.source: ...").
 */
export function checkValues(user: Record<string, unknown> = {}): string[] {
  if (!schemaValidator) {
    const schema = JSON.parse(readFileSync(join(CHART, 'values.schema.json'), 'utf8'));
    schemaValidator = new Ajv({ allErrors: true, strict: true }).compile(schema);
  }
  const defaults = parseYaml(readFileSync(join(CHART, 'values.yaml'), 'utf8'));
  const values = mergeValues(defaults, user);
  if (schemaValidator(values)) return [];
  return (schemaValidator.errors ?? []).map(helmStyle);
}

function helmStyle(e: ErrorObject): string {
  const path = e.instancePath.slice(1).replaceAll('/', '.') || '(root)';
  const p = e.params as Record<string, unknown>;
  let detail = e.message ?? 'invalid';
  if (e.keyword === 'additionalProperties')
    detail = `additional property "${p.additionalProperty}" not allowed`;
  if (e.keyword === 'enum')
    detail = `must be one of ${(p.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
  if (e.keyword === 'propertyNames')
    detail = `"${p.propertyName}" is not an option the chart lets you set here`;
  return `- ${path}: ${detail}`;
}

// ---- Kubernetes API validation ----------------------------------------------------------------

const MODEL_MODULES: Record<string, string> = {
  'monitoring.coreos.com/v1': '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1',
};

/** Errors of one object against its API schema (types, required fields, enums) and unknown fields. */
export async function validateObject(obj: K8sObject): Promise<string[]> {
  const where = `${obj.kind}/${obj.metadata?.name}`;
  const base = MODEL_MODULES[obj.apiVersion] ?? `kubernetes-models/${obj.apiVersion}`;
  let mod: Record<string, unknown>;
  try {
    mod = await import(`${base}/${obj.kind}`);
  } catch {
    return [`${where}: no schema known for ${obj.apiVersion} ${obj.kind}`];
  }
  const Model = mod[obj.kind] as new (data: unknown) => { validate(): void };
  const errors: string[] = [];
  try {
    new Model(obj).validate();
  } catch (err) {
    errors.push(`${where}: ${(err as Error).message}`);
  }
  // Core kinds: fields the API does not know (kubectl's strict validation refuses them). CRD kinds
  // (Prometheus Operator) are checked for types and required fields only.
  const model = (k8s as unknown as Record<string, unknown>)[`V1${obj.kind}`];
  if (obj.apiVersion.split('/').pop() === 'v1' && !(obj.apiVersion in MODEL_MODULES) && model) {
    unknownFields(obj, `V1${obj.kind}`, where, errors);
  }
  return errors;
}

type AttributeMap = { baseName: string; type: string }[];

function unknownFields(value: unknown, type: string, path: string, out: string[]): void {
  if (value === null || value === undefined) return;
  const arr = /^Array<(.+)>$/.exec(type);
  if (arr) {
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) unknownFields(value[i], arr[1], `${path}[${i}]`, out);
    }
    return;
  }
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) {
    if (isMap(value))
      for (const [k, v] of Object.entries(value)) unknownFields(v, map[1], `${path}.${k}`, out);
    return;
  }
  const model = (k8s as unknown as Record<string, { getAttributeTypeMap?: () => AttributeMap }>)[type];
  if (!model?.getAttributeTypeMap || !isMap(value)) return; // string, number, IntOrString, any...
  const fields = new Map(model.getAttributeTypeMap().map((a) => [a.baseName, a.type]));
  for (const [k, v] of Object.entries(value)) {
    const t = fields.get(k);
    if (t === undefined) out.push(`${path}.${k}: unknown field (not in ${type})`);
    else unknownFields(v, t, `${path}.${k}`, out);
  }
}

// ---- What each podflow container receives -------------------------------------------------------

export interface ContainerInputs {
  command: Command;
  flags: Record<string, unknown>;
  env: Record<string, string>;
  /** The config file's text, when --config names a mounted ConfigMap key. */
  configText?: string;
}

/** Values the downward API would give (by fieldPath), for a pod of the release in `namespace`. */
export type FieldRefs = Record<string, string>;
const fieldRefs = (namespace: string, overrides: FieldRefs = {}): FieldRefs => ({
  'spec.nodeName': 'node-a',
  'metadata.namespace': namespace,
  'metadata.name': 'pod-0',
  'status.podIP': '10.0.0.9',
  'status.hostIP': '10.0.0.1',
  ...overrides,
});

/**
 * The kubelet's expansion of `$(NAME)` in a container's args from the container's environment:
 * `$$` stands for `$`, and a reference to an undefined name stays as written.
 */
export function expandArgs(args: string[], env: Record<string, string>): string[] {
  return args.map((a) =>
    a.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (ref, name?: string) =>
      name === undefined ? '$' : (env[name] ?? ref),
    ),
  );
}

/**
 * Arguments, environment and config file of `container` in the pod template of `workload`;
 * `refs` overrides what the downward API gives (e.g. the node's address where a test runs it).
 */
export function containerInputs(
  objects: K8sObject[],
  workload: K8sObject,
  container: string,
  refs: FieldRefs = {},
): ContainerInputs {
  const pod = workload.spec.template.spec;
  const c = pod.containers.find((x: { name: string }) => x.name === container);
  if (!c) throw new Error(`${workload.kind}/${workload.metadata.name} has no container ${container}`);
  if (c.command !== undefined) throw new Error(`container ${container} overrides the image entrypoint`);
  const namespace = workload.metadata.namespace as string;
  const env = containerEnv(objects, c, fieldRefs(namespace, refs));
  const [command, ...args] = expandArgs(c.args as string[], env);
  if (!['collector', 'exporter', 'standalone'].includes(command)) {
    throw new Error(`container ${container}: first argument ${command} is not a podflow command`);
  }
  const flags: Record<string, unknown> = {};
  for (let i = 0; i < args.length; i++) {
    const m = /^--([a-z0-9-]+)(?:=(.*))?$/s.exec(args[i]);
    if (!m) throw new Error(`container ${container}: argument ${JSON.stringify(args[i])} is not a --flag`);
    const name = m[1];
    if (name !== 'config' && !(name in OPTIONS)) {
      throw new Error(`container ${container}: --${name} is not a podflow option`);
    }
    const takesValue = name === 'config' || 'arg' in OPTIONS[name as OptionName];
    if (m[2] !== undefined) flags[name] = m[2];
    else if (takesValue) flags[name] = args[++i];
    else flags[name] = true;
  }
  let configText: string | undefined;
  if (typeof flags.config === 'string') configText = mountedFile(objects, pod, c, flags.config);
  return { command: command as Command, flags, env, configText };
}

/** The container's environment as the kubelet builds it (downward API and Secret keys resolved). */
// biome-ignore lint/suspicious/noExplicitAny: container spec from YAML
function containerEnv(objects: K8sObject[], c: any, refs: FieldRefs): Record<string, string> {
  const env: Record<string, string> = {};
  for (const e of c.env ?? []) {
    if (e.value !== undefined) env[e.name] = e.value;
    else if (e.valueFrom?.fieldRef) {
      const v = refs[e.valueFrom.fieldRef.fieldPath];
      if (v === undefined)
        throw new Error(`env ${e.name}: unexpected fieldRef ${e.valueFrom.fieldRef.fieldPath}`);
      env[e.name] = v;
    } else if (e.valueFrom?.secretKeyRef) {
      const ref = e.valueFrom.secretKeyRef;
      const secret = objects.find((o) => o.kind === 'Secret' && o.metadata.name === ref.name);
      // A Secret the chart does not render is the user's existingSecret.
      if (secret && !(ref.key in (secret.data ?? {}))) {
        throw new Error(`env ${e.name}: Secret ${ref.name} has no key ${ref.key}`);
      }
      env[e.name] = secret ? Buffer.from(secret.data[ref.key], 'base64').toString() : 'secret-from-cluster';
    } else throw new Error(`env ${e.name}: no value`);
  }
  return env;
}

// biome-ignore lint/suspicious/noExplicitAny: pod spec from YAML
export function mountedFile(objects: K8sObject[], pod: any, c: any, path: string): string {
  for (const m of c.volumeMounts ?? []) {
    if (!path.startsWith(`${m.mountPath}/`)) continue;
    const rel = path.slice(m.mountPath.length + 1);
    const vol = pod.volumes.find((v: { name: string }) => v.name === m.name);
    if (!vol?.configMap) throw new Error(`${path}: mount ${m.name} is not a ConfigMap`);
    const cm = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === vol.configMap.name);
    if (!cm) throw new Error(`${path}: ConfigMap ${vol.configMap.name} is not rendered`);
    const items: { key: string; path: string }[] | undefined = vol.configMap.items;
    const key = items ? items.find((i) => i.path === rel)?.key : rel;
    if (key === undefined || typeof cm.data?.[key] !== 'string') {
      throw new Error(`${path}: not in ConfigMap ${cm.metadata.name}`);
    }
    return cm.data[key];
  }
  throw new Error(`${path}: no volume is mounted there`);
}

/** podflow's own start-up validation of what the container receives (throws its ConfigError). */
export function loadContainerConfig(inputs: ContainerInputs): Config {
  const dir = mkdtempSync(join(tmpdir(), 'pf-helm-cfg-'));
  try {
    const flags = { ...inputs.flags };
    if (inputs.configText !== undefined) {
      const file = join(dir, 'config.yaml');
      writeFileSync(file, inputs.configText);
      flags.config = file;
    }
    return loadConfig({ command: inputs.command, flags, env: inputs.env });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Matches a `k=v,k2=v2` label selector (equality terms only) against labels. */
export function selectorMatches(selector: string, labels: Record<string, string>): boolean {
  return selector.split(',').every((term) => {
    const [k, v] = term.split('=');
    return labels[k.trim()] === v?.trim();
  });
}

/** A container's view rebuilt under a directory: what runContainer needs to start it for real. */
export interface Sandbox {
  /** podflow's arguments, container paths moved under `root`. */
  args: string[];
  env: Record<string, string>;
  /**
   * Host directories to bind-mount (hostPath volumes), at their place under `root`; `writable`:
   * writable inside the container even under a read-only root filesystem (a node directory of its own).
   */
  binds: { host: string; target: string; writable?: boolean }[];
  /** Places of emptyDir volumes under `root` (writable even with a read-only root filesystem). */
  emptyDirs: string[];
}

/**
 * Lays out `container`'s volumes under `root` (ConfigMap and Secret items as files, emptyDirs as
 * directories, hostPaths as bind targets) and moves every absolute container path podflow receives
 * (arguments and config file values) under `root`, so that the real program can run as the pod
 * would. A Secret the chart does not render (the user's) gets `secret-from-cluster` in each item.
 */
export function containerSandbox(
  objects: K8sObject[],
  workload: K8sObject,
  container: string,
  root: string,
  refs: FieldRefs = {},
): Sandbox {
  const inputs = containerInputs(objects, workload, container, refs);
  const pod = workload.spec.template.spec;
  const c = pod.containers.find((x: { name: string }) => x.name === container);
  const binds: Sandbox['binds'] = [];
  const emptyDirs: string[] = [];
  const inside = (p: string) => join(root, p);
  for (const m of c.volumeMounts ?? []) {
    const vol = pod.volumes.find((v: { name: string }) => v.name === m.name);
    mkdirSync(inside(m.mountPath), { recursive: true });
    if (vol.hostPath?.type === 'DirectoryOrCreate') {
      // A node directory the kubelet creates when missing (the collector's --state-dir): a fresh one
      // beside the sandbox stands in for it, so that nothing is written to this machine's own path.
      const host = join(root, '..', 'node', vol.hostPath.path);
      mkdirSync(host, { recursive: true });
      binds.push({ host, target: inside(m.mountPath), writable: m.readOnly !== true });
    } else if (vol.hostPath) binds.push({ host: vol.hostPath.path, target: inside(m.mountPath) });
    if (vol.emptyDir) emptyDirs.push(inside(m.mountPath));
    if (vol.configMap) {
      const cm = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === vol.configMap.name);
      const items: { key: string; path: string }[] =
        vol.configMap.items ?? Object.keys(cm?.data ?? {}).map((key) => ({ key, path: key }));
      for (const item of items) {
        const doc = parseYaml(cm!.data[item.key]) as Record<string, unknown>;
        for (const [k, v] of Object.entries(doc ?? {})) {
          if (typeof v === 'string' && v.startsWith('/')) doc[k] = inside(v);
        }
        writeFileSync(join(inside(m.mountPath), item.path), JSON.stringify(doc));
      }
    }
    if (vol.secret) {
      const secret = objects.find((o) => o.kind === 'Secret' && o.metadata.name === vol.secret.secretName);
      const data: Record<string, string> = secret?.data ?? {};
      const items: { key: string; path: string }[] =
        vol.secret.items ?? Object.keys(data).map((key) => ({ key, path: key }));
      for (const item of items) {
        if (secret && !(item.key in data))
          throw new Error(`Secret ${vol.secret.secretName} has no key ${item.key}`);
        const value = secret ? Buffer.from(data[item.key], 'base64') : 'secret-from-cluster\n';
        writeFileSync(join(inside(m.mountPath), item.path), value, { mode: 0o644 });
      }
    }
  }
  const args = expandArgs(c.args as string[], inputs.env).map((a) => {
    const m = /^(--[a-z0-9-]+=)(\/.*)$/.exec(a);
    return m ? `${m[1]}${inside(m[2])}` : a;
  });
  return { args, env: inputs.env, binds, emptyDirs };
}
