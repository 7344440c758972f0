// The one configuration schema of podflow. Every option is a flag (`--http-sink-url`), an environment
// variable (`PODFLOW_HTTP_SINK_URL`) and a key of the YAML file given by `--config` (`http-sink-url`).
// Precedence: flag > env > file > default. Parsing happens once, at the edge (cmd/podflow.ts); the
// rest of the program receives a typed, validated `Config`.
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';

export type Command = 'collector' | 'exporter' | 'standalone';
const ALL: readonly Command[] = ['collector', 'exporter', 'standalone'];
const COLLECTING: readonly Command[] = ['collector', 'standalone'];
const EXPORTING: readonly Command[] = ['exporter', 'standalone'];

/** Go-style durations: 500ms, 5s, 2m, 1h30m. Returned in milliseconds. */
export function parseDuration(text: string): number | undefined {
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/y;
  let total = 0;
  let pos = 0;
  if (text.length === 0) return undefined;
  while (pos < text.length) {
    re.lastIndex = pos;
    const m = re.exec(text);
    if (!m) return undefined;
    const n = Number(m[1]);
    total += n * (m[2] === 'ms' ? 1 : m[2] === 's' ? 1000 : m[2] === 'm' ? 60_000 : 3_600_000);
    pos = re.lastIndex;
  }
  return total;
}

const duration = (min = 0) =>
  z.union([z.string(), z.number()]).transform((v, ctx) => {
    // A bare number is taken as seconds (YAML `interval: 5`).
    const ms = typeof v === 'number' ? v * 1000 : parseDuration(v.trim());
    if (ms === undefined || !Number.isFinite(ms) || ms < min) {
      ctx.addIssue({
        code: 'custom',
        message: `expected a duration like 5s, 500ms or 2m${min ? ` (at least ${min}ms)` : ''}`,
      });
      return z.NEVER;
    }
    return ms;
  });

const bool = z.union([z.boolean(), z.enum(['true', 'false', '1', '0', 'yes', 'no'])]).transform((v) => {
  if (typeof v === 'boolean') return v;
  return v === 'true' || v === '1' || v === 'yes';
});

const int = (min: number, max = Number.MAX_SAFE_INTEGER) =>
  z.coerce
    .number({ message: 'expected a whole number' })
    .int({ message: 'expected a whole number' })
    .min(min, { message: `expected a whole number ≥ ${min}` })
    .max(max, { message: `expected a whole number ≤ ${max}` });

const list = z
  .union([z.string(), z.array(z.string())])
  .transform((v) => (Array.isArray(v) ? v : v.split(',')).map((s) => s.trim()).filter((s) => s.length > 0));

/** `host:port`, `:port` or `[v6]:port`. */
const listen = z.string().transform((v, ctx) => {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(v.trim());
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || port > 65535) {
    ctx.addIssue({ code: 'custom', message: 'expected host:port, e.g. 0.0.0.0:9470 or [::]:9470' });
    return z.NEVER;
  }
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
});

const url = z.string().refine(
  (v) => {
    try {
      const u = new URL(v);
      return u.protocol === 'http:' || u.protocol === 'https:';
    } catch {
      return false;
    }
  },
  { message: 'expected an http:// or https:// URL' },
);

/** `Name=value` pairs, comma-separated in flags/env, a mapping in YAML. Values may hold ${ENV}. */
const headers = z.union([z.string(), z.record(z.string(), z.string())]).transform((v, ctx) => {
  if (typeof v !== 'string') return v;
  const out: Record<string, string> = {};
  for (const part of v.split(',')) {
    if (part.trim() === '') continue;
    const eq = part.indexOf('=');
    if (eq <= 0) {
      ctx.addIssue({ code: 'custom', message: 'expected Name=value pairs separated by commas' });
      return z.NEVER;
    }
    out[part.slice(0, eq).trim()] = part.slice(eq + 1).trim();
  }
  return out;
});

export const FLOW_LABELS = [
  'src_namespace',
  'src_pod',
  'src_workload',
  'src_node',
  'src_zone',
  'dst_namespace',
  'dst_pod',
  'dst_workload',
  'dst_node',
  'dst_zone',
  'dst_ip',
  'dst_type',
  'cross_zone',
  'proto',
] as const;
export type FlowLabel = (typeof FLOW_LABELS)[number];

export interface OptionSpec<S extends z.ZodType = z.ZodType> {
  schema: S;
  /** Default value as a user would write it; computed defaults are functions of the command. */
  default?: unknown | ((cmd: Command, env: NodeJS.ProcessEnv) => unknown);
  /** Shown in `--help` and the README. */
  help: string;
  /** Placeholder in --help. Booleans have none. */
  arg?: string;
  commands: readonly Command[];
}

/** An environment variable set to an empty string counts as unset. */
const nonEmpty = (v: string | undefined) => (v === undefined || v.trim() === '' ? undefined : v.trim());

const opt = <T extends OptionSpec>(spec: T): T => spec;

/** Every option of podflow, by flag name. Keep the README's options table in step (a test checks). */
export const OPTIONS = {
  listen: opt({
    schema: listen,
    default: (cmd: Command) => (cmd === 'collector' ? '0.0.0.0:9470' : '0.0.0.0:9471'),
    arg: 'host:port',
    help: 'HTTP address for /metrics, /healthz, /readyz (and the pull API on collectors)',
    commands: ALL,
  }),
  interval: opt({
    schema: duration(100),
    default: '5s',
    arg: 'duration',
    help: 'conntrack read period',
    commands: COLLECTING,
  }),
  source: opt({
    schema: z.enum(['auto', 'netfilter', 'cilium']),
    default: 'auto',
    arg: 'auto|netfilter|cilium',
    help: 'where connections are read: the netfilter table (ctnetlink) or Cilium BPF maps',
    commands: COLLECTING,
  }),
  'node-name': opt({
    schema: z.string().min(1),
    default: (_cmd: Command, env: NodeJS.ProcessEnv) => nonEmpty(env.NODE_NAME) ?? hostname(),
    arg: 'name',
    help: 'this node (env NODE_NAME, else the hostname)',
    commands: ALL,
  }),
  kubeconfig: opt({
    schema: z.string(),
    arg: 'file',
    help: 'API server access: in-cluster, else $KUBECONFIG or ~/.kube/config if present, else none',
    commands: ALL,
  }),
  collectors: opt({
    schema: list.pipe(z.array(url)),
    arg: 'urls',
    help: 'comma-separated collector base URLs (static mode; default: discover through Kubernetes)',
    commands: ['exporter'],
  }),
  'http-sink-url': opt({
    schema: url,
    arg: 'url',
    help: 'POST enriched flow records (NDJSON) here',
    commands: EXPORTING,
  }),
  'metrics-prefix': opt({
    schema: z.enum(['podflow', 'egressd']),
    default: 'podflow',
    arg: 'podflow|egressd',
    help: 'flow metric names and labels; egressd gives egressd-compatible ones',
    commands: EXPORTING,
  }),
  'log-level': opt({
    schema: z.enum(['debug', 'info', 'warn', 'error']),
    default: 'info',
    arg: 'level',
    help: 'debug, info, warn or error',
    commands: ALL,
  }),
  'proc-path': opt({
    schema: z.string().min(1),
    default: '/proc',
    arg: 'dir',
    help: 'where the host /proc is mounted (to turn on nf_conntrack_acct)',
    commands: COLLECTING,
  }),
  'conntrack-acct': opt({
    schema: bool,
    default: true,
    help: 'turn on net.netfilter.nf_conntrack_acct at start (byte counters need it)',
    commands: COLLECTING,
  }),
  'exclude-namespaces': opt({
    schema: list,
    default: [],
    arg: 'names',
    help: 'comma-separated Kubernetes namespaces whose pods are not reported',
    commands: ALL,
  }),
  'host-network': opt({
    schema: bool,
    default: false,
    help: 'report host-network pods as the node (off: their traffic is skipped, see README)',
    commands: ALL,
  }),
  'group-public-ips': opt({
    schema: bool,
    default: false,
    help: 'report every public peer as 0.0.0.0 / :: (cuts cardinality)',
    commands: ALL,
  }),
  'backlog-max-flows': opt({
    schema: int(1000),
    default: 1_000_000,
    arg: 'n',
    help: 'collector: flows kept for exporters before the oldest are merged, then dropped',
    commands: COLLECTING,
  }),
  'pod-retention': opt({
    schema: duration(0),
    default: '2m',
    arg: 'duration',
    help: 'how long an ended pod keeps its IPs for late flows',
    commands: ALL,
  }),
  namespace: opt({
    schema: z.string().min(1),
    default: (_cmd: Command, env: NodeJS.ProcessEnv) => nonEmpty(env.POD_NAMESPACE) ?? 'podflow',
    arg: 'name',
    help: 'exporter: the namespace where collectors run (env POD_NAMESPACE)',
    commands: ['exporter'],
  }),
  'collector-selector': opt({
    schema: z.string().min(1),
    default: 'app.kubernetes.io/name=podflow,app.kubernetes.io/component=collector',
    arg: 'selector',
    help: 'exporter: label selector of collector pods',
    commands: ['exporter'],
  }),
  'collector-port': opt({
    schema: int(1, 65535),
    default: 9470,
    arg: 'port',
    help: "exporter: the collectors' pull API port",
    commands: ['exporter'],
  }),
  'pull-concurrency': opt({
    schema: int(1, 1000),
    default: 16,
    arg: 'n',
    help: 'exporter: collectors pulled at once',
    commands: ['exporter'],
  }),
  'pull-timeout': opt({
    schema: duration(100),
    default: '10s',
    arg: 'duration',
    help: 'exporter: time allowed for one pull',
    commands: ['exporter'],
  }),
  'pull-max-bytes': opt({
    schema: int(1024),
    default: 256 * 1024 * 1024,
    arg: 'bytes',
    help: 'exporter: largest pull payload accepted',
    commands: ['exporter'],
  }),
  'export-interval': opt({
    schema: duration(100),
    default: '15s',
    arg: 'duration',
    help: 'exporter: how often collectors are pulled and sinks fed',
    commands: EXPORTING,
  }),
  'metrics-labels': opt({
    schema: list.pipe(z.array(z.enum(FLOW_LABELS))),
    default: [...FLOW_LABELS],
    arg: 'labels',
    help: 'flow metric labels to keep (cuts cardinality)',
    commands: EXPORTING,
  }),
  'metrics-ttl': opt({
    schema: duration(0),
    default: '10m',
    arg: 'duration',
    help: 'flow series not updated for this long are removed (0 keeps them)',
    commands: EXPORTING,
  }),
  'metrics-pod-ips': opt({
    schema: bool,
    default: false,
    help: 'fill dst_ip for pod and node peers too (cardinality)',
    commands: EXPORTING,
  }),
  'metrics-max-series': opt({
    schema: int(1),
    default: 200_000,
    arg: 'n',
    help: 'most flow series per counter; the rest is summed into one _overflow_ series',
    commands: EXPORTING,
  }),
  'metrics-gzip': opt({
    schema: bool,
    default: false,
    help: 'gzip /metrics for scrapers that accept it (a tenth of the bytes, more CPU per scrape)',
    commands: EXPORTING,
  }),
  'http-sink-gzip': opt({
    schema: bool,
    default: false,
    help: 'gzip the HTTP sink body',
    commands: EXPORTING,
  }),
  'http-sink-headers': opt({
    schema: headers,
    default: {},
    arg: 'Name=value,...',
    // biome-ignore lint/suspicious/noTemplateCurlyInString: documents the ${ENV} syntax users write
    help: 'extra request headers; ${ENV} in values is expanded (tokens)',
    commands: EXPORTING,
  }),
  'http-sink-timeout': opt({
    schema: duration(100),
    default: '10s',
    arg: 'duration',
    help: 'time allowed for one POST',
    commands: EXPORTING,
  }),
  'http-sink-max-retries': opt({
    schema: int(0, 100),
    default: 5,
    arg: 'n',
    help: 'retries of one batch on network errors, 5xx and 429',
    commands: EXPORTING,
  }),
  'http-sink-queue-max': opt({
    schema: int(1),
    default: 100_000,
    arg: 'records',
    help: 'records waiting for the HTTP sink before new ones are dropped',
    commands: EXPORTING,
  }),
  'http-sink-batch-max': opt({
    schema: int(1),
    default: 10_000,
    arg: 'records',
    help: 'records per POST',
    commands: EXPORTING,
  }),
  'cilium-bpf-path': opt({
    schema: z.string().min(1),
    default: '/sys/fs/bpf/tc/globals',
    arg: 'dir',
    help: "where Cilium's conntrack maps are pinned",
    commands: COLLECTING,
  }),
  'cilium-layout': opt({
    schema: z.enum(['auto', 'v1.15', 'v1.16']),
    default: 'auto',
    arg: 'auto|v1.15|v1.16',
    help: 'Cilium conntrack value layout: v1.15 (rx/tx counters) or v1.16 (one direction per entry)',
    commands: COLLECTING,
  }),
  'cilium-clock': opt({
    schema: z.enum(['auto', 'ktime', 'jiffies']),
    default: 'auto',
    arg: 'auto|ktime|jiffies',
    help: 'Cilium conntrack lifetime clock',
    commands: COLLECTING,
  }),
  'pull-token-file': opt({
    schema: z.string().min(1, { message: 'expected a file path' }),
    arg: 'file',
    help: 'bearer token(s) of the pull API, one per line, re-read on change: collectors accept them, exporters send the first',
    commands: ALL,
  }),
  'pull-lease': opt({
    schema: duration(10_000),
    default: '1m',
    arg: 'duration',
    help: 'exporter: how long a pull reserves a collector for this exporter; another exporter takes over after it lapses',
    commands: ['exporter'],
  }),
  'pod-name': opt({
    schema: z.string().regex(/^[\x21-\x7e]{1,200}$/, { message: 'expected a name without spaces' }),
    default: (_cmd: Command, env: NodeJS.ProcessEnv) => nonEmpty(env.POD_NAME) ?? hostname(),
    arg: 'name',
    help: "exporter: its name as collectors' leases show it; the same name takes its lease back at once after a restart (env POD_NAME, else the hostname)",
    commands: ['exporter'],
  }),
  'metrics-auth': opt({
    schema: bool,
    default: false,
    help: 'require a token of --pull-token-file on /metrics and the built-in view too',
    commands: ALL,
  }),
  'state-dir': opt({
    schema: z.string().min(1, { message: 'expected a directory path' }),
    arg: 'dir',
    help: 'collector: directory keeping per-connection counts and unacknowledged batches across its restarts (none: a restart loses the traffic between its last read and the new first read)',
    commands: COLLECTING,
  }),
  'shutdown-timeout': opt({
    schema: duration(0),
    default: '10s',
    arg: 'duration',
    help: 'time allowed to flush sinks on SIGTERM',
    commands: ALL,
  }),
} as const;

export type OptionName = keyof typeof OPTIONS;
type CamelCase<S extends string> = S extends `${infer H}-${infer T}` ? `${H}${Capitalize<CamelCase<T>>}` : S;
type OutputOf<K extends OptionName> = z.output<(typeof OPTIONS)[K]['schema']>;
type HasDefault<K extends OptionName> = (typeof OPTIONS)[K] extends { default: unknown } ? K : never;

/** The validated configuration, with camelCase keys (`httpSinkUrl`). */
export type Config = { command: Command; configFile?: string } & {
  [K in OptionName as CamelCase<K>]: K extends HasDefault<K> ? OutputOf<K> : OutputOf<K> | undefined;
};

export const envName = (name: string) => `PODFLOW_${name.toUpperCase().replace(/-/g, '_')}`;
const camel = (name: string) => name.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export interface ConfigSources {
  command: Command;
  /** Flag values as strings/booleans, keyed by flag name (kebab-case), only those given. */
  flags: Record<string, unknown>;
  env: NodeJS.ProcessEnv;
  /** Path of the YAML file (from --config or PODFLOW_CONFIG). */
  configFile?: string;
}

/** Merge flags > env > file > defaults and validate. Throws ConfigError naming the option. */
export function loadConfig(src: ConfigSources): Config {
  const { command } = src;
  const names = Object.keys(OPTIONS) as OptionName[];
  const known = new Set<string>(names);

  // Environment variables: an unknown PODFLOW_* is a typo the user wants to hear about.
  const envVars = new Map<string, OptionName>(names.map((n) => [envName(n), n]));
  for (const key of Object.keys(src.env)) {
    if (key.startsWith('PODFLOW_') && key !== 'PODFLOW_CONFIG' && !envVars.has(key)) {
      throw new ConfigError(`unknown environment variable ${key}: podflow has no such option`);
    }
  }

  let file: Record<string, unknown> = {};
  const configFile = (src.flags.config as string | undefined) ?? src.env.PODFLOW_CONFIG;
  if (configFile !== undefined) {
    let text: string;
    try {
      text = readFileSync(configFile, 'utf8');
    } catch (err) {
      throw new ConfigError(`--config ${configFile}: cannot read the file (${(err as Error).message})`);
    }
    let doc: unknown;
    try {
      doc = parseYaml(text);
    } catch (err) {
      throw new ConfigError(
        `--config ${configFile}: not valid YAML (${(err as Error).message.split('\n')[0]})`,
      );
    }
    if (doc !== null && doc !== undefined) {
      if (typeof doc !== 'object' || Array.isArray(doc)) {
        throw new ConfigError(`--config ${configFile}: expected a mapping of option: value`);
      }
      file = doc as Record<string, unknown>;
      for (const key of Object.keys(file)) {
        if (!known.has(key)) {
          throw new ConfigError(`unknown key "${key}" in ${configFile}: podflow has no such option`);
        }
      }
    }
  }

  const out: Record<string, unknown> = { command, configFile };
  for (const name of names) {
    const spec: OptionSpec = OPTIONS[name];
    let raw: unknown;
    let where: string;
    if (src.flags[name] !== undefined) {
      raw = src.flags[name];
      where = `--${name}`;
    } else if (src.env[envName(name)] !== undefined) {
      raw = src.env[envName(name)];
      where = `${envName(name)}`;
    } else if (file[name] !== undefined) {
      raw = file[name];
      where = `"${name}" in ${configFile}`;
    } else if (spec.default !== undefined) {
      raw = typeof spec.default === 'function' ? spec.default(command, src.env) : spec.default;
      where = `default of --${name}`;
    } else {
      out[camel(name)] = undefined;
      continue;
    }
    if (
      (src.flags[name] !== undefined || src.env[envName(name)] !== undefined) &&
      !spec.commands.includes(command)
    ) {
      throw new ConfigError(
        `${where} does not apply to "podflow ${command}" (only ${spec.commands.join(', ')})`,
      );
    }
    const parsed = spec.schema.safeParse(raw);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const msg = (issue?.message ?? 'invalid value').replace(/^Invalid (option|input): /, '');
      throw new ConfigError(`invalid ${where}: ${msg}, got ${JSON.stringify(raw)}`);
    }
    out[camel(name)] = parsed.data;
  }
  return out as Config;
}
