// The one configuration schema of podflow. Every option is a flag (`--http-sink-url`), an environment
// variable (`PODFLOW_HTTP_SINK_URL`) and a key of the YAML file given by `--config` (`http-sink-url`).
// Precedence: flag > env > file > default. Parsing happens once, at the edge (cmd/podflow.ts); the
// rest of the program receives a typed, validated `Config`.
import { readFileSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { TRAFFIC_CLASSES } from './flow.js';

export type Command = 'collector' | 'exporter' | 'standalone';
const ALL: readonly Command[] = ['collector', 'exporter', 'standalone'];
const COLLECTING: readonly Command[] = ['collector', 'standalone'];
const EXPORTING: readonly Command[] = ['exporter', 'standalone'];

/** Go-style durations: 500ms, 5s, 2m, 1h30m, and a bare 0 (as Go's time.ParseDuration). In milliseconds. */
export function parseDuration(text: string): number | undefined {
  if (text === '0') return 0;
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

/** A bound as a user writes it: 100ms, 10m, 1h, 168h. */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0';
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

/** What a rule returns for a bad value: the text after `invalid --flag: `. */
class Problem {
  constructor(readonly message: string) {}
}
const expected = (what: string) => new Problem(`expected ${what}`);

/**
 * A schema from a parse function. Every option is built from these, not from zod's own checks, so that
 * every bad value (from a flag, an env var or any YAML type) gets one plain sentence, never zod's
 * wording.
 */
const rule = <T>(parse: (v: unknown) => T | Problem) =>
  z.unknown().transform((v, ctx): T => {
    const r = parse(v);
    if (r instanceof Problem) {
      ctx.addIssue({ code: 'custom', message: r.message });
      return z.NEVER;
    }
    return r;
  });

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DURATION_HINT = 'a duration like 5s, 500ms or 2m';

/**
 * A duration from `min` to `max` ms. The maxima keep every timer below Node's setTimeout limit
 * (2^31-1 ms, about 24.8 days): above it a timer fires at once, and a loop runs flat out. Bare numbers
 * other than 0 are refused in flags, env and YAML alike (`interval: 5` is not 5 s).
 */
const duration = (min: number, max: number) =>
  rule((v) => {
    const ms = v === 0 ? 0 : typeof v === 'string' ? parseDuration(v.trim()) : undefined;
    const atLeast = `at least ${formatDuration(min)}`;
    const atMost = `at most ${formatDuration(max)}`;
    if (ms === undefined) return expected(`${DURATION_HINT} (${min > 0 ? `${atLeast}, ` : ''}${atMost})`);
    if (ms < min) return expected(`${DURATION_HINT} (${atLeast})`);
    if (ms > max) return expected(`${DURATION_HINT} (${atMost})`);
    return ms;
  });

const TRUE = new Set(['true', '1', 'yes']);
const FALSE = new Set(['false', '0', 'no']);
const bool = rule((v) => {
  if (typeof v === 'boolean') return v;
  const s = typeof v === 'string' ? v.trim().toLowerCase() : undefined;
  if (s !== undefined && TRUE.has(s)) return true;
  if (s !== undefined && FALSE.has(s)) return false;
  return expected('true or false');
});

/** A whole number from `min` to `max`, written in decimal digits. */
const int = (min: number, max: number) =>
  rule((v) => {
    const n =
      typeof v === 'number' ? v : typeof v === 'string' && /^\s*\d+\s*$/.test(v) ? Number(v) : Number.NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max)
      return expected(`a whole number from ${min} to ${max}`);
    return n;
  });

/** "a, b or c" */
const either = (values: readonly string[]) =>
  values.length === 1 ? values[0] : `${values.slice(0, -1).join(', ')} or ${values.at(-1)}`;

const oneOf = <const V extends readonly string[]>(values: V) =>
  rule((v): V[number] | Problem =>
    typeof v === 'string' && values.includes(v.trim()) ? (v.trim() as V[number]) : expected(either(values)),
  );

/** A non-empty string (a name, a path, a selector); `what` says which in the message. */
const text = (what: string) =>
  rule((v) => (typeof v === 'string' && v.trim() !== '' ? v.trim() : expected(what)));

/** 1 to 200 printable ASCII characters, no space (names that go into HTTP headers and labels). */
const printableName = (what: string) =>
  rule((v) => (typeof v === 'string' && /^[\x21-\x7e]{1,200}$/.test(v.trim()) ? v.trim() : expected(what)));

/** Comma-separated in flags and env, a string or a list in YAML. Empty items are dropped. */
function splitList(v: unknown, what: string): string[] | Problem {
  const items = typeof v === 'string' ? v.split(',') : Array.isArray(v) ? v : undefined;
  if (items === undefined || !items.every((s) => typeof s === 'string')) return expected(what);
  return items.map((s: string) => s.trim()).filter((s) => s.length > 0);
}
const list = (what: string) => rule((v) => splitList(v, what));

/** `:port` (every address), `host:port`, `[v6]:port` or `[v4]:port`. */
export interface ListenAddress {
  /** An IP literal or a host name; '' = every address, IPv4 and IPv6 (`::` dual-stack). */
  host: string;
  port: number;
}
const LISTEN_HINT = 'host:port, [v6]:port or :port, e.g. :9470, 127.0.0.1:9470 or [::1]:9470';
/** A DNS name (RFC 1123 labels): resolved when the server binds, before anything else starts. */
const HOSTNAME =
  /^(?=.{1,253}$)[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*\.?$/;
const listen = rule((v): ListenAddress | Problem => {
  const m = typeof v === 'string' ? /^(?:\[([^\]]*)\]|([^:[\]]*)):(\d{1,5})$/.exec(v.trim()) : null;
  if (!m) return expected(LISTEN_HINT);
  const port = Number(m[3]);
  if (port > 65535) return expected(`a port from 0 to 65535 (${LISTEN_HINT})`);
  if (m[1] !== undefined) {
    if (isIP(m[1]) === 0) return expected(`an IP address between [ and ] (${LISTEN_HINT})`);
    return { host: m[1], port };
  }
  const host = m[2];
  if (host !== '' && isIP(host) !== 4 && !HOSTNAME.test(host)) {
    return expected(`an IP address or a host name before :port (${LISTEN_HINT})`);
  }
  return { host, port };
});

/**
 * An http(s) URL. `base` (collector base URLs): the pull API paths are appended, so no query. No
 * fragment (never sent) and no user:password@ (fetch refuses such URLs: every request would fail).
 */
const httpUrl = (v: unknown, base: boolean): string | Problem => {
  const what = base
    ? 'http:// or https:// base URLs like http://10.0.0.1:9470'
    : 'an http:// or https:// URL';
  if (typeof v !== 'string') return expected(what);
  let u: URL;
  try {
    u = new URL(v.trim());
  } catch {
    return expected(what);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return expected(what);
  if (u.username !== '' || u.password !== '') {
    return expected(
      `${what} without user:password@ (${base ? 'the pull API takes a bearer token: --pull-token-file' : 'send credentials with --http-sink-headers Authorization=…'})`,
    );
  }
  if (base && u.search !== '') return expected(`${what} without a query (?…): the API paths are appended`);
  if (u.hash !== '') return expected(`${what} without a fragment (#…)`);
  return v.trim();
};
const url = rule((v) => httpUrl(v, false));
const collectorUrls = rule((v) => {
  const items = splitList(v, 'comma-separated http:// or https:// base URLs');
  if (items instanceof Problem) return items;
  for (const item of items) {
    const r = httpUrl(item, true);
    if (r instanceof Problem) return r;
  }
  return items;
});

/** RFC 9110 token characters: what a header name may hold. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/**
 * Headers podflow sets itself (framing, compression, retries). Content-Type is not among them: a user
 * may need another media type for the same NDJSON body.
 */
const RESERVED_HEADERS = new Set([
  'host',
  'content-length',
  'transfer-encoding',
  'connection',
  'idempotency-key',
  'content-encoding',
]);

/**
 * `name=value,…` (flags, env) or a mapping (YAML) as [name, value] pairs; else a Problem saying
 * `pairs`, or `pairs, or mapping` when the value is neither text nor a mapping.
 */
function pairsOf(v: unknown, pairs: string, mapping: string): [string, unknown][] | Problem {
  if (typeof v === 'object' && v !== null && !Array.isArray(v)) return Object.entries(v);
  if (typeof v !== 'string') return expected(`${pairs}, or ${mapping}`);
  const out: [string, unknown][] = [];
  for (const part of v.split(',')) {
    if (part.trim() === '') continue;
    const eq = part.indexOf('=');
    if (eq <= 0) return expected(pairs);
    out.push([part.slice(0, eq).trim(), part.slice(eq + 1).trim()]);
  }
  return out;
}

/**
 * `Name=value` pairs, comma-separated in flags/env, a mapping in YAML. Values may hold ${ENV}, expanded
 * by the HTTP sink (which checks the expanded value again). Messages never repeat a value: it may be
 * a token.
 */
const headers = rule((v): Record<string, string> | Problem => {
  const pairs = pairsOf(v, 'Name=value pairs separated by commas', 'a mapping of name: value');
  if (pairs instanceof Problem) return pairs;
  const out: Record<string, string> = {};
  const seen = new Set<string>();
  for (const [name, raw] of pairs) {
    if (!TOKEN.test(name)) return new Problem(`header name ${JSON.stringify(name)} is not an HTTP token`);
    const lower = name.toLowerCase();
    if (RESERVED_HEADERS.has(lower)) return new Problem(`header ${name} is set by podflow itself`);
    if (seen.has(lower)) return new Problem(`header ${name} is given twice`);
    seen.add(lower);
    if (typeof raw !== 'string' && typeof raw !== 'number' && typeof raw !== 'boolean') {
      return new Problem(`header ${name}: expected a text value`);
    }
    const value = String(raw);
    if (/[\r\n\0]/.test(value)) return new Problem(`header ${name}: the value holds a line break or NUL`);
    out[name] = value;
  }
  return out;
});

export const FLOW_LABELS = [
  'src_namespace',
  'src_pod',
  'src_workload',
  'src_node',
  'src_zone',
  'src_region',
  'dst_namespace',
  'dst_pod',
  'dst_workload',
  'dst_node',
  'dst_zone',
  'dst_region',
  'dst_ip',
  'dst_dns_name',
  'dst_type',
  'traffic_class',
  'cross_zone',
  'proto',
] as const;
export type FlowLabel = (typeof FLOW_LABELS)[number];

/** `all` (alone), or some of FLOW_LABELS, each once. An empty list would sum everything into one series. */
const metricsLabels = rule((v): FlowLabel[] | Problem => {
  const hint = `all, or a comma-separated list of: ${FLOW_LABELS.join(', ')}`;
  const items = splitList(v, hint);
  if (items instanceof Problem) return items;
  if (items.length === 1 && items[0] === 'all') return [...FLOW_LABELS];
  if (items.length === 0) return expected(`at least one label: ${hint}`);
  const seen = new Set<string>();
  for (const item of items) {
    if (!(FLOW_LABELS as readonly string[]).includes(item))
      return new Problem(`unknown label "${item}": expected ${hint}`);
    if (seen.has(item)) return new Problem(`label ${item} is given twice`);
    seen.add(item);
  }
  return items as FlowLabel[];
});

/**
 * Keys of `--prices`: the traffic classes, `internet-ingress` (bytes received from the internet) and
 * `nat-gateway` (bytes both ways between a pod and a public address, processed by a NAT gateway;
 * 0 unless set, as not every cluster egresses through one).
 */
export const PRICE_KEYS = [...TRAFFIC_CLASSES, 'internet-ingress', 'nat-gateway'] as const;
export type PriceKey = (typeof PRICE_KEYS)[number];
/** A price per GiB, or `preset`: the preset's own (how `nat-gateway` is turned on at the preset's price). */
export type Prices = Partial<Record<PriceKey, number | 'preset'>>;

/** `class=price,…` in flags/env, a mapping in YAML: overrides of the preset, per key. */
const prices = rule((v): Prices | Problem => {
  const hint = 'class=price pairs like cross-zone=0.02,internet=0.09';
  const pairs = pairsOf(v, hint, 'a mapping of class: price');
  if (pairs instanceof Problem) return pairs;
  const out: Prices = {};
  for (const [key, raw] of pairs) {
    if (!(PRICE_KEYS as readonly string[]).includes(key)) {
      return new Problem(`unknown key "${key}": expected ${either(PRICE_KEYS)}`);
    }
    if (key in out) return new Problem(`${key} is given twice`);
    const text = typeof raw === 'number' ? String(raw) : typeof raw === 'string' ? raw.trim() : '';
    if (text === 'preset') {
      out[key as PriceKey] = 'preset';
      continue;
    }
    const n = /^\d+(\.\d+)?(e-?\d+)?$/i.test(text) ? Number(text) : Number.NaN;
    if (!Number.isFinite(n)) {
      return new Problem(`${key}: expected a price per GiB of 0 or more like 0.02, or preset`);
    }
    out[key as PriceKey] = n;
  }
  return out;
});

export interface OptionSpec<S extends z.ZodType = z.ZodType> {
  schema: S;
  /** Default value as a user would write it; computed defaults are functions of the command. */
  default?: unknown | ((cmd: Command, env: NodeJS.ProcessEnv) => unknown);
  /** Shown in `--help` and the README. */
  help: string;
  /** Placeholder in --help. Booleans have none. */
  arg?: string;
  /** The value may hold a secret: error messages do not repeat it. */
  secret?: boolean;
  commands: readonly Command[];
}

/** An environment variable set to an empty string counts as unset. */
const nonEmpty = (v: string | undefined) => (v === undefined || v.trim() === '' ? undefined : v.trim());

const opt = <T extends OptionSpec>(spec: T): T => spec;

/** Every option of podflow, by flag name. Keep the README's options table in step (a test checks). */
export const OPTIONS = {
  listen: opt({
    schema: listen,
    // Collector and exporter serve the cluster (every address, IPv4 and IPv6); standalone runs on a
    // laptop or a single host, where the LAN must not see it unless asked.
    default: (cmd: Command) =>
      cmd === 'collector' ? ':9470' : cmd === 'exporter' ? ':9471' : '127.0.0.1:9471',
    arg: 'host:port',
    help: 'HTTP address for /metrics, /healthz, /readyz (and the pull API on collectors); :port is every address, IPv4 and IPv6',
    commands: ALL,
  }),
  interval: opt({
    schema: duration(100, HOUR),
    default: '5s',
    arg: 'duration',
    help: 'conntrack read period (100ms to 1h)',
    commands: COLLECTING,
  }),
  source: opt({
    schema: oneOf(['auto', 'netfilter', 'cilium']),
    default: 'auto',
    arg: 'auto|netfilter|cilium',
    help: 'where connections are read: the netfilter table (ctnetlink) or Cilium BPF maps',
    commands: COLLECTING,
  }),
  'node-name': opt({
    schema: text('a non-empty name'),
    default: (_cmd: Command, env: NodeJS.ProcessEnv) => nonEmpty(env.NODE_NAME) ?? hostname(),
    arg: 'name',
    help: 'this node (env NODE_NAME, else the hostname)',
    commands: ALL,
  }),
  kubeconfig: opt({
    schema: text('a file path'),
    arg: 'file',
    help: 'API server access: in-cluster, else $KUBECONFIG or ~/.kube/config if present, else none',
    commands: ALL,
  }),
  collectors: opt({
    schema: collectorUrls,
    arg: 'urls',
    help: 'comma-separated collector base URLs, http(s) without query or credentials (static mode; default: discover through Kubernetes)',
    commands: ['exporter'],
  }),
  'http-sink-url': opt({
    schema: url,
    arg: 'url',
    help: 'POST enriched flow records (NDJSON) here (http or https; credentials go in --http-sink-headers)',
    commands: EXPORTING,
  }),
  'metrics-prefix': opt({
    schema: oneOf(['podflow', 'egressd']),
    default: 'podflow',
    arg: 'podflow|egressd',
    help: 'flow metric names and labels; egressd gives egressd-compatible ones',
    commands: EXPORTING,
  }),
  'log-level': opt({
    schema: oneOf(['debug', 'info', 'warn', 'error']),
    default: 'info',
    arg: 'level',
    help: 'debug, info, warn or error',
    commands: ALL,
  }),
  'proc-path': opt({
    schema: text('a directory'),
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
    schema: list('a comma-separated list of namespaces'),
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
    // At most 10M: the collector holds them in memory, and a full backlog (33 to 85 bytes a flow on
    // the wire) must still fit one pull under the largest --pull-max-bytes (1 GiB).
    schema: int(1000, 10_000_000),
    default: 1_000_000,
    arg: 'n',
    help: 'collector: flows kept for exporters before the oldest are merged, then dropped (at most 10000000)',
    commands: COLLECTING,
  }),
  'pod-retention': opt({
    schema: duration(0, 168 * HOUR),
    default: '2m',
    arg: 'duration',
    help: 'how long an ended pod keeps its IPs for late flows (at most 168h)',
    commands: ALL,
  }),
  namespace: opt({
    schema: text('a non-empty name'),
    default: (_cmd: Command, env: NodeJS.ProcessEnv) => nonEmpty(env.POD_NAMESPACE) ?? 'podflow',
    arg: 'name',
    help: 'exporter: the namespace where collectors run (env POD_NAMESPACE)',
    commands: ['exporter'],
  }),
  'collector-selector': opt({
    schema: text('a label selector like app=podflow'),
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
    schema: duration(100, 10 * MINUTE),
    default: '10s',
    arg: 'duration',
    help: 'exporter: time allowed for one pull (100ms to 10m)',
    commands: ['exporter'],
  }),
  'pull-max-bytes': opt({
    // 128 MiB holds a pull of a full default backlog (1M flows at 33 bytes each, about 80 with two
    // IPv6 addresses). It is also the budget of pull bytes held at once across all pulls
    // (exporter/byte-budget.ts), so it bounds the exporter's memory: keep it well below the
    // exporter's memory limit. At most 1 GiB: the body is held in memory whole.
    schema: int(1024, 1024 * 1024 * 1024),
    default: 128 * 1024 * 1024,
    arg: 'bytes',
    help: 'exporter: largest pull payload accepted, and the most pull bytes held at once over all pulls (at most 1073741824, 1 GiB)',
    commands: ['exporter'],
  }),
  'export-interval': opt({
    schema: duration(100, HOUR),
    default: '15s',
    arg: 'duration',
    help: 'exporter: how often collectors are pulled and sinks fed (100ms to 1h)',
    commands: EXPORTING,
  }),
  'metrics-labels': opt({
    schema: metricsLabels,
    default: 'all',
    arg: 'labels',
    help: 'flow metric labels to keep (cuts cardinality), or all',
    commands: EXPORTING,
  }),
  'metrics-ttl': opt({
    schema: duration(0, 168 * HOUR),
    default: '10m',
    arg: 'duration',
    help: 'flow series not updated for this long are removed (0 keeps them; at most 168h)',
    commands: EXPORTING,
  }),
  'metrics-pod-ips': opt({
    schema: bool,
    default: false,
    help: 'fill dst_ip for pod and node peers too (cardinality)',
    commands: EXPORTING,
  }),
  'metrics-max-series': opt({
    // At most 2M: each series costs memory per counter and a line of every scrape.
    schema: int(1, 2_000_000),
    default: 200_000,
    arg: 'n',
    help: 'most flow series per counter; the rest is summed into one _overflow_ series (at most 2000000)',
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
    secret: true,
    arg: 'Name=value,...',
    // biome-ignore lint/suspicious/noTemplateCurlyInString: documents the ${ENV} syntax users write
    help: 'extra request headers; ${ENV} in values is expanded (tokens); not Host, Content-Length, Transfer-Encoding, Connection, Content-Encoding or Idempotency-Key',
    commands: EXPORTING,
  }),
  'http-sink-timeout': opt({
    schema: duration(100, 10 * MINUTE),
    default: '10s',
    arg: 'duration',
    help: 'time allowed for one POST (100ms to 10m)',
    commands: EXPORTING,
  }),
  'http-sink-max-retries': opt({
    schema: int(0, 100),
    default: 5,
    arg: 'n',
    help: 'retries of one request on network errors, timeouts, 401, 403, 404, 408, 429 and 5xx (then offered again next round)',
    commands: EXPORTING,
  }),
  'http-sink-queue-max': opt({
    // At most 1M records (about 1 KiB each in memory) while the receiver is away.
    schema: int(1, 1_000_000),
    default: 100_000,
    arg: 'records',
    help: 'records queued for the HTTP sink; a push that does not fit is offered again next round (into an empty queue it is taken in pieces; at most 1000000)',
    commands: EXPORTING,
  }),
  'http-sink-batch-max': opt({
    // At most 100k: one POST body is built in memory.
    schema: int(1, 100_000),
    default: 10_000,
    arg: 'records',
    help: 'records per POST (at most 100000)',
    commands: EXPORTING,
  }),
  'cilium-bpf-path': opt({
    schema: text('a directory'),
    default: '/sys/fs/bpf/tc/globals',
    arg: 'dir',
    help: "where Cilium's conntrack maps are pinned",
    commands: COLLECTING,
  }),
  'cilium-layout': opt({
    schema: oneOf(['auto', 'v1.15', 'v1.16']),
    default: 'auto',
    arg: 'auto|v1.15|v1.16',
    help: 'Cilium conntrack value layout: v1.15 (rx/tx counters) or v1.16 (one direction per entry)',
    commands: COLLECTING,
  }),
  'cilium-clock': opt({
    schema: oneOf(['auto', 'ktime', 'jiffies']),
    default: 'auto',
    arg: 'auto|ktime|jiffies',
    help: 'Cilium conntrack lifetime clock',
    commands: COLLECTING,
  }),
  'pull-token-file': opt({
    schema: text('a file path'),
    arg: 'file',
    help: 'bearer token(s) of the pull API, one per line, re-read on change: collectors accept them, exporters send the first',
    commands: ALL,
  }),
  'pull-lease': opt({
    schema: duration(10_000, 10 * MINUTE),
    default: '1m',
    arg: 'duration',
    help: 'exporter: how long a pull reserves a collector for this exporter; another exporter takes over after it lapses (10s to 10m)',
    commands: ['exporter'],
  }),
  'pod-name': opt({
    schema: printableName('a name without spaces'),
    default: (_cmd: Command, env: NodeJS.ProcessEnv) => nonEmpty(env.POD_NAME) ?? hostname(),
    arg: 'name',
    help: "exporter: its name as collectors' leases show it; the same name takes its lease back at once after a restart (env POD_NAME, else the hostname)",
    commands: ['exporter'],
  }),
  'total-shards': opt({
    schema: int(1, 1000),
    default: 1,
    arg: 'n',
    help: 'exporter: split the collectors among this many exporters, each pulling those whose node name (static mode: URL) hashes to its --shard (at most 1000)',
    commands: ['exporter'],
  }),
  shard: opt({
    // No default here: it depends on --total-shards and --pod-name (resolved in loadConfig).
    schema: int(0, 999),
    arg: 'n',
    help: 'exporter: which shard this exporter is, 0 to --total-shards - 1 (default: the ordinal of a StatefulSet pod name like podflow-exporter-2 when --total-shards > 1, else 0)',
    commands: ['exporter'],
  }),
  'cluster-name': opt({
    schema: printableName('a name without spaces (at most 200 characters)'),
    arg: 'name',
    help: 'adds the label cluster="<name>" to every flow series and the field "cluster" to every log record, so that many clusters share one store',
    commands: EXPORTING,
  }),
  'metrics-auth': opt({
    schema: bool,
    default: false,
    help: 'require a token of --pull-token-file on /metrics and the built-in view too',
    commands: ALL,
  }),
  view: opt({
    schema: bool,
    default: true,
    help: 'serve the built-in view on / (traffic of the last 15 minutes) and its JSON at /api/v1/traffic',
    commands: EXPORTING,
  }),
  'state-dir': opt({
    schema: text('a directory path'),
    arg: 'dir',
    help: 'directory keeping per-connection counts and unacknowledged batches across restarts (none: a restart loses the traffic between its last read and the new first read)',
    commands: COLLECTING,
  }),
  cloud: opt({
    schema: oneOf(['auto', 'aws', 'gcp', 'azure', 'none']),
    default: 'auto',
    arg: 'auto|aws|gcp|azure|none',
    help: "price preset: auto picks it from the nodes' spec.providerID (none without one); none prices nothing unless --prices says",
    commands: EXPORTING,
  }),
  prices: opt({
    schema: prices,
    default: {},
    arg: 'class=price,...',
    help: `USD per GiB sent by the local endpoint, overriding the preset per key (${PRICE_KEYS.join(', ')}); preset takes the preset's (nat-gateway=preset turns NAT processing on)`,
    commands: EXPORTING,
  }),
  'destinations-file': opt({
    schema: text('a file path'),
    arg: 'file',
    help: "YAML list of {cidr, name, class} and providers' range files (aws-ip-ranges, gcp-cloud, azure-service-tags): peers outside the cluster named and classed; most specific wins",
    commands: EXPORTING,
  }),
  'dns-names': opt({
    schema: bool,
    default: true,
    help: 'collector: name peers from the DNS answers pods on the node get (needs CAP_NET_RAW; without it, a warning and no names)',
    commands: COLLECTING,
  }),
  'dns-grace': opt({
    schema: duration(0, HOUR),
    default: '60s',
    arg: 'duration',
    help: 'collector: how long a DNS answer names its addresses beyond its TTL (at most 1h)',
    commands: COLLECTING,
  }),
  'shutdown-timeout': opt({
    schema: duration(0, HOUR),
    default: '10s',
    arg: 'duration',
    help: 'time allowed to flush sinks on SIGTERM (at most 1h)',
    commands: ALL,
  }),
} as const;

/**
 * The sinks of an exporter beyond --http-sink-url and /metrics: the `sinks:` map of the YAML file, in
 * castai/egressd's exporter format (`http`, `prom_remote_write`) plus podflow's own kinds. YAML only:
 * a map of structured values has no sensible flag form. Each entry becomes one sink with its own
 * queue, retries and delivery cursor on the collectors, kept under the entry's name: renaming an
 * entry makes it a new sink (it starts at what the collectors still hold).
 */
export type SinkConfig =
  | ({ kind: 'http'; encoding: 'json' | 'protobuf'; method: string } & RecordSinkConfig & {
        /** json: fields added to every record. */
        fields: Record<string, string | number | boolean>;
        /** json: leave out fields that are empty strings (some receivers index them badly). */
        omitEmpty: boolean;
      })
  | ({ kind: 'loki'; labels: Record<string, string>; streamLabels: string[] } & RecordSinkConfig)
  | ({ kind: 'otlp_logs'; resource: Record<string, string> } & RecordSinkConfig)
  | ({ kind: 'prom_remote_write'; labels: Record<string, string> } & CumulativeSinkConfig)
  | ({ kind: 'otlp_metrics'; resource: Record<string, string> } & CumulativeSinkConfig);

interface SinkBase {
  name: string;
  /** ${ENV} expanded. */
  url: string;
  /** ${ENV} expanded in the values. */
  headers: Record<string, string>;
  /** One request, ms. */
  timeout: number;
  gzip: boolean;
}
/** Sinks that send records (one per flow and interval): the HTTP sink's queue and delivery. */
export interface RecordSinkConfig extends SinkBase {
  maxRetries: number;
  queueMax: number;
  batchMax: number;
}
/** Sinks that send counter totals: a write carries every live series, at most batchMax per request. */
export interface CumulativeSinkConfig extends SinkBase {
  batchMax: number;
}

export const SINK_KINDS = ['http', 'prom_remote_write', 'loki', 'otlp_logs', 'otlp_metrics'] as const;

/** Record fields a Loki stream label may come from: low-cardinality ones only. */
export const LOKI_STREAM_LABELS = [
  'src_namespace',
  'src_node',
  'src_zone',
  'dst_namespace',
  'dst_type',
  'proto',
] as const;

/** Flow labels of either metric naming, and Prometheus' own: a static label may not take them. */
const TAKEN_LABELS = new Set<string>([...FLOW_LABELS, 'src_ip', 'dst_ip_type', 'cluster', '__name__']);

/** `${NAME}` expanded from `env`; an unset variable is a Problem naming it. */
function expandEnv(value: string, env: NodeJS.ProcessEnv): string | Problem {
  let missing: string | undefined;
  const out = value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, v: string) => {
    const got = env[v];
    if (got === undefined) missing ??= v;
    return got ?? '';
  });
  return missing === undefined ? out : new Problem(`uses \${${missing}} but ${missing} is not set`);
}

/** A mapping of name → text (labels, fields, resource attributes). */
function textMap(v: unknown, what: string): Record<string, string> | Problem {
  if (v === undefined || v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v)) return expected(`a mapping of ${what}`);
  const out: Record<string, string> = {};
  for (const [k, raw] of Object.entries(v)) {
    if (typeof raw !== 'string' && typeof raw !== 'number' && typeof raw !== 'boolean') {
      return new Problem(`${k}: expected a text value`);
    }
    out[k] = String(raw);
  }
  return out;
}

/** Sink names become cursor names on the collectors (1–64 printable characters) and metric labels. */
const SINK_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
/** The collectors keep at most 64 cursors per exporter; /metrics and --http-sink-url take two. */
const MAX_SINKS = 62;

/** Keys podflow reads in each kind of sink. egressd's own come first; the rest are podflow's. */
const SINK_KEYS: Record<SinkConfig['kind'], readonly string[]> = {
  http: [
    'url',
    'method',
    'compression',
    'encoding',
    'headers',
    'timeout',
    'max_retries',
    'queue_max',
    'batch_max',
    'fields',
    'omit_empty',
  ],
  // sendReceivedBytesMetric: egressd sends received bytes only when set; podflow always sends what
  // /metrics has (the key is accepted so that an egressd file loads).
  prom_remote_write: ['url', 'headers', 'labels', 'sendReceivedBytesMetric', 'timeout', 'batch_max'],
  loki: [
    'url',
    'headers',
    'labels',
    'stream_labels',
    'compression',
    'timeout',
    'max_retries',
    'queue_max',
    'batch_max',
  ],
  otlp_logs: [
    'url',
    'headers',
    'resource',
    'compression',
    'timeout',
    'max_retries',
    'queue_max',
    'batch_max',
  ],
  otlp_metrics: ['url', 'headers', 'resource', 'compression', 'timeout', 'batch_max'],
};

/**
 * The `sinks:` map, validated: each problem is one line naming the path (`sinks.logs.http.url`).
 * `defaults` are the --http-sink-* values (retries, queue and batch sizes of record sinks).
 */
function parseSinks(
  doc: unknown,
  env: NodeJS.ProcessEnv,
  defaults: { maxRetries: number; queueMax: number; batchMax: number },
  file: string,
): SinkConfig[] {
  const fail = (path: string, msg: string): never => {
    throw new ConfigError(`invalid ${path} in ${file}: ${msg}`);
  };
  if (doc === undefined || doc === null) return [];
  if (typeof doc !== 'object' || Array.isArray(doc)) {
    fail('sinks', `expected a mapping of sink name to sink (${either(SINK_KINDS)})`);
  }
  const entries = Object.entries(doc as Record<string, unknown>);
  if (entries.length > MAX_SINKS) fail('sinks', `at most ${MAX_SINKS} sinks`);
  const out: SinkConfig[] = [];
  for (const [name, body] of entries) {
    const at = `sinks.${name}`;
    if (!SINK_NAME.test(name)) {
      fail(at, 'a sink name is 1 to 64 letters, digits, _ . or - (starting with a letter or digit)');
    }
    if (name === 'prometheus') fail(at, 'the name prometheus is the scraped /metrics');
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      fail(at, `expected one of ${either(SINK_KINDS)}`);
    }
    const kinds = Object.keys(body as object);
    const unknown = kinds.find((k) => !(SINK_KINDS as readonly string[]).includes(k));
    if (unknown !== undefined) fail(`${at}.${unknown}`, `unknown sink kind: expected ${either(SINK_KINDS)}`);
    if (kinds.length !== 1) fail(at, `expected exactly one of ${either(SINK_KINDS)}, got ${kinds.length}`);
    const kind = kinds[0] as SinkConfig['kind'];
    const path = `${at}.${kind}`;
    const spec = (body as Record<string, unknown>)[kind];
    if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) fail(path, 'expected a mapping');
    const s = spec as Record<string, unknown>;
    for (const key of Object.keys(s)) {
      if (!SINK_KEYS[kind].includes(key)) {
        fail(`${path}.${key}`, `unknown key: expected ${either(SINK_KEYS[kind])}`);
      }
    }
    /** A key through a rule; `secret` values are not repeated in the message. */
    const get = <T>(key: string, schema: z.ZodType<T>, dflt: unknown, secret = false): T => {
      const raw = s[key] ?? dflt;
      const r = schema.safeParse(raw);
      if (!r.success)
        fail(`${path}.${key}`, `${plain(r.error.issues[0])}${secret ? '' : `, got ${quote(raw)}`}`);
      return (r as { data: T }).data;
    };
    const expanded = (key: string, raw: string): string => {
      const r = expandEnv(raw, env);
      if (r instanceof Problem) fail(`${path}.${key}`, r.message);
      return r as string;
    };
    if (s.url === undefined) fail(`${path}.url`, 'required');
    const urlText = expanded('url', get('url', text('an http:// or https:// URL'), undefined));
    const u = httpUrl(urlText, false);
    if (u instanceof Problem) fail(`${path}.url`, u.message);
    const rawHeaders = get('headers', headers, {}, true);
    const hdrs: Record<string, string> = {};
    for (const [k, v] of Object.entries(rawHeaders)) {
      hdrs[k] = expanded(`headers.${k}`, v);
      if (/[\r\n\0]/.test(hdrs[k]))
        fail(`${path}.headers.${k}`, 'the expanded value holds a line break or NUL');
    }
    const compression = get(
      'compression',
      rule((v) => (v === 'gzip' || v === 'none' || v === '' ? v : expected('gzip or none'))),
      'none',
    );
    const base: SinkBase = {
      name,
      url: u as string,
      headers: hdrs,
      // egressd's default for one request.
      timeout: get('timeout', duration(100, 10 * MINUTE), '30s'),
      gzip: compression === 'gzip',
    };
    const records = (): RecordSinkConfig => ({
      ...base,
      maxRetries: get('max_retries', int(0, 100), defaults.maxRetries),
      queueMax: get('queue_max', int(1, 1_000_000), defaults.queueMax),
      batchMax: get('batch_max', int(1, 100_000), defaults.batchMax),
    });
    const labels = (key: string) => {
      const m = get(
        key,
        rule((v) => textMap(v, 'label name: value')),
        {},
      );
      for (const l of Object.keys(m)) {
        if (l === '' || l.startsWith('__') || TAKEN_LABELS.has(l)) {
          fail(`${path}.${key}.${l}`, 'a flow label or a reserved name (__…) cannot be a static label');
        }
      }
      return m;
    };
    switch (kind) {
      case 'http':
        out.push({
          kind,
          ...records(),
          method: get(
            'method',
            rule((v) =>
              typeof v === 'string' && /^(POST|PUT|PATCH)$/i.test(v.trim())
                ? v.trim().toUpperCase()
                : expected('POST, PUT or PATCH'),
            ),
            'POST',
          ),
          encoding: get('encoding', oneOf(['json', 'protobuf']), 'json'),
          fields: get(
            'fields',
            rule((v) => textMap(v, 'field: value')),
            {},
          ),
          omitEmpty: get('omit_empty', bool, false),
        });
        break;
      case 'loki':
        out.push({
          kind,
          ...records(),
          labels: labels('labels'),
          streamLabels: get(
            'stream_labels',
            rule((v) => {
              const items = splitList(v, `a list of ${either(LOKI_STREAM_LABELS)}`);
              if (items instanceof Problem) return items;
              const bad = items.find((i) => !(LOKI_STREAM_LABELS as readonly string[]).includes(i));
              if (bad !== undefined) {
                return new Problem(
                  `"${bad}" is not a low-cardinality field: expected ${either(LOKI_STREAM_LABELS)}`,
                );
              }
              return items;
            }),
            ['src_namespace', 'src_node'],
          ),
        });
        break;
      case 'otlp_logs':
        out.push({
          kind,
          ...records(),
          resource: get(
            'resource',
            rule((v) => textMap(v, 'attribute: value')),
            {},
          ),
        });
        break;
      case 'prom_remote_write':
        get('sendReceivedBytesMetric', bool, false);
        out.push({
          kind,
          ...base,
          labels: labels('labels'),
          batchMax: get('batch_max', int(1, 100_000), 5000),
        });
        break;
      case 'otlp_metrics':
        out.push({
          kind,
          ...base,
          resource: get(
            'resource',
            rule((v) => textMap(v, 'attribute: value')),
            {},
          ),
          batchMax: get('batch_max', int(1, 100_000), 5000),
        });
        break;
    }
  }
  return out;
}

/**
 * Top-level keys of an egressd exporter config, so that such a file loads as it is: the ones with a
 * podflow option, and the ones podflow has no use for (the pod's own IP; `log`, which egressd itself
 * ignores in the file).
 */
const EGRESSD_KEYS: Record<string, OptionName | null> = {
  exportInterval: 'export-interval',
  collectorsConcurrentFetchCount: 'pull-concurrency',
  collectorFetchTimeout: 'pull-timeout',
  podNamespace: 'namespace',
  podIP: null,
  log: null,
};

export type OptionName = keyof typeof OPTIONS;
type CamelCase<S extends string> = S extends `${infer H}-${infer T}` ? `${H}${Capitalize<CamelCase<T>>}` : S;
type OutputOf<K extends OptionName> = z.output<(typeof OPTIONS)[K]['schema']>;
type HasDefault<K extends OptionName> = (typeof OPTIONS)[K] extends { default: unknown } ? K : never;

type Parsed = { command: Command; configFile?: string; sinks: SinkConfig[] } & {
  [K in OptionName as CamelCase<K>]: K extends HasDefault<K> ? OutputOf<K> : OutputOf<K> | undefined;
};
/** The validated configuration, with camelCase keys (`httpSinkUrl`); `shard` resolved (see loadConfig). */
export type Config = Omit<Parsed, 'shard'> & { shard: number };

export const envName = (name: string) => `PODFLOW_${name.toUpperCase().replace(/-/g, '_')}`;
const camel = (name: string) => name.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

/** A config file is a page of options, not data: anything larger is a wrong path. */
const CONFIG_FILE_MAX_BYTES = 1024 * 1024;

/** A bad value as the error line shows it: JSON, on one line, with any URL password masked. */
const quote = (raw: unknown): string =>
  (JSON.stringify(raw) ?? String(raw)).replace(/(\/\/[^/?#@\s"]*?):[^/?#@\s"]*@/g, '$1:***@');

/**
 * An issue as one plain sentence. The rules above word their own; this covers a schema built from zod's
 * checks (its type errors read "Invalid input: expected string, received object").
 */
function plain(issue: z.core.$ZodIssue | undefined): string {
  if (issue === undefined) return 'invalid value';
  if (issue.code === 'invalid_type')
    return `expected ${issue.expected === 'string' ? 'text' : issue.expected}`;
  return issue.message.replace(/^Invalid \w+: /, '');
}

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
  /** Options given in the file under egressd's key: error messages name that key. */
  const fileKeys = new Map<string, string>();
  const configFile = (src.flags.config as string | undefined) ?? src.env.PODFLOW_CONFIG;
  if (configFile !== undefined) {
    let text: string;
    try {
      // Checked before reading: a device (/dev/zero) or a FIFO would never end, a directory fails
      // with a less clear error, and a huge file is not a config file.
      const st = statSync(configFile);
      if (!st.isFile()) throw new ConfigError(`--config ${configFile}: not a regular file`);
      if (st.size > CONFIG_FILE_MAX_BYTES) {
        throw new ConfigError(`--config ${configFile}: larger than 1 MiB (${st.size} bytes)`);
      }
      text = readFileSync(configFile, 'utf8');
    } catch (err) {
      if (err instanceof ConfigError) throw err;
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
      file = { ...(doc as Record<string, unknown>) };
      for (const key of Object.keys(file)) {
        if (key === 'sinks') continue;
        if (key in EGRESSD_KEYS) {
          const name = EGRESSD_KEYS[key];
          if (name !== null) {
            if (file[name] !== undefined) {
              throw new ConfigError(`"${key}" and "${name}" in ${configFile} are the same option: give one`);
            }
            fileKeys.set(name, key);
            file[name] = file[key];
          }
          delete file[key];
          continue;
        }
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
      where = `"${fileKeys.get(name) ?? name}" in ${configFile}`;
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
      const msg = plain(parsed.error.issues[0]);
      throw new ConfigError(`invalid ${where}: ${msg}${spec.secret ? '' : `, got ${quote(raw)}`}`);
    }
    out[camel(name)] = parsed.data;
  }
  out.shard = resolveShard(
    out as Parsed,
    src.flags.shard !== undefined || src.env.PODFLOW_SHARD !== undefined,
  );
  // Only the exporting side reads the map: a collector sharing the file lacks the sinks' variables.
  out.sinks = !EXPORTING.includes(command)
    ? []
    : parseSinks(
        file.sinks,
        src.env,
        {
          maxRetries: out.httpSinkMaxRetries as number,
          queueMax: out.httpSinkQueueMax as number,
          batchMax: out.httpSinkBatchMax as number,
        },
        configFile ?? '',
      );
  const sinks = out.sinks as SinkConfig[];
  if (out.httpSinkUrl !== undefined && sinks.some((s) => s.name === 'http')) {
    throw new ConfigError(
      `invalid sinks.http in ${configFile}: the name http is the sink of --http-sink-url`,
    );
  }
  return out as Config;
}

/**
 * `--shard`, checked against `--total-shards`; when not given and the total is above 1, the ordinal
 * of a StatefulSet pod name (`podflow-exporter-2` → 2), as kube-state-metrics does: every pod of the
 * StatefulSet runs with the same arguments.
 */
function resolveShard(c: Parsed, given: boolean): number {
  const total = c.totalShards;
  let shard = c.shard;
  if (shard === undefined) {
    if (total === 1) return 0;
    const ordinal = /-(\d{1,3})$/.exec(c.podName)?.[1];
    if (ordinal === undefined) {
      throw new ConfigError(
        `--shard: not given, and --pod-name "${c.podName}" does not end in a StatefulSet ordinal (-N): give --shard from 0 to ${total - 1} with --total-shards ${total}`,
      );
    }
    shard = Number(ordinal);
  }
  if (shard >= total) {
    throw new ConfigError(
      `invalid ${given ? '--shard' : `--shard (from --pod-name "${c.podName}")`}: expected a whole number from 0 to ${total - 1} (below --total-shards ${total}), got ${shard}`,
    );
  }
  return shard;
}
