// Prometheus sink: the four flow counters of CONTRACT.md, served with the explicit prom-client
// Registry of the process (/metrics); series idle for `metrics-ttl` are removed.
import type { Registry } from 'prom-client';
import { FLOW_LABELS, type FlowLabel } from '../shared/config.js';
import type { EnrichedFlow } from '../shared/flow.js';
import type { Logger } from '../shared/log.js';
import type { ExporterMetrics } from './metrics.js';
import type { Sink } from './sink.js';

export interface PrometheusSinkConfig {
  /** `metrics-prefix`: `podflow`, or `egressd` for egressd-compatible names and labels. */
  metricsPrefix: 'podflow' | 'egressd';
  /** `metrics-labels`: podflow labels kept; series are summed over the others. Ignored for egressd. */
  metricsLabels: readonly FlowLabel[];
  /** `metrics-ttl` in ms: a series not updated for this long is removed; 0 keeps series forever. */
  metricsTtl: number;
  /** `metrics-pod-ips`: fill dst_ip for pod and node peers too. */
  metricsPodIps: boolean;
  /**
   * `metrics-max-series`: most series per counter. Flows of further series are summed into one
   * overflow series whose every label is `_overflow_`, so totals stay exact while /metrics stays
   * renderable. @default 200000
   */
  maxSeries?: number;
}

/** Label value of the overflow series: not a valid pod, namespace, node name or address. */
export const OVERFLOW = '_overflow_';

type Getter = (f: EnrichedFlow) => string;

/** One label: its name on the metric and where its value comes from. */
interface LabelSpec {
  name: string;
  get: Getter;
}

function podflowLabels(config: PrometheusSinkConfig): LabelSpec[] {
  const keep = new Set(config.metricsLabels);
  const podIps = config.metricsPodIps;
  const get: Record<FlowLabel, Getter> = {
    src_namespace: (f) => f.srcNamespace,
    src_pod: (f) => f.srcPod,
    src_workload: (f) => f.srcWorkload,
    src_node: (f) => f.srcNode,
    src_zone: (f) => f.srcZone,
    dst_namespace: (f) => f.dstNamespace,
    dst_pod: (f) => f.dstPod,
    dst_workload: (f) => f.dstWorkload,
    dst_node: (f) => f.dstNode,
    dst_zone: (f) => f.dstZone,
    // Pod and node addresses churn with every rollout: left out unless asked for (cardinality).
    dst_ip: (f) => (podIps || f.dstType === 'private' || f.dstType === 'public' ? f.dstIp : ''),
    dst_type: (f) => f.dstType,
    cross_zone: (f) => (f.crossZone ? 'true' : 'false'),
    proto: (f) => f.proto,
  };
  return FLOW_LABELS.filter((l) => keep.has(l)).map((name) => ({ name, get: get[name] }));
}

/**
 * castai/egressd's exporter: `egressd_transmit_bytes_total` and `egressd_received_bytes_total`, with
 * src_ip and dst_ip always filled and dst_ip_type private/public by address (egressd's
 * netaddr IsPrivate), the other labels as podflow's. egressd has no packet counters.
 */
function egressdLabels(): LabelSpec[] {
  return [
    { name: 'cross_zone', get: (f) => (f.crossZone ? 'true' : 'false') },
    { name: 'dst_ip', get: (f) => f.dstIp },
    { name: 'dst_ip_type', get: (f) => (f.dstType === 'public' ? 'public' : 'private') },
    { name: 'dst_namespace', get: (f) => f.dstNamespace },
    { name: 'dst_node', get: (f) => f.dstNode },
    { name: 'dst_pod', get: (f) => f.dstPod },
    { name: 'dst_zone', get: (f) => f.dstZone },
    { name: 'proto', get: (f) => f.proto },
    { name: 'src_ip', get: (f) => f.srcIp },
    { name: 'src_namespace', get: (f) => f.srcNamespace },
    { name: 'src_node', get: (f) => f.srcNode },
    { name: 'src_pod', get: (f) => f.srcPod },
    { name: 'src_zone', get: (f) => f.srcZone },
  ];
}

interface Series {
  /** Interned id of each label value (see `intern`), the series' identity. */
  ids: Int32Array;
  /** The label values, to re-intern when the tables are rebuilt. */
  values: string[];
  /** Next series with the same hash. */
  next: Series | undefined;
  /** `{name="value",...}`, escaped once when the series is created. */
  labelText: string;
  /** Last push that touched the series (clock ms). */
  last: number;
  txBytes: number;
  rxBytes: number;
  txPackets: number;
  rxPackets: number;
}

interface Family {
  name: string;
  help: string;
  value: (s: Series) => number;
}

function sameIds(a: Int32Array, b: Int32Array): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Prometheus text format escaping of a label value (backslash, double quote, newline). */
const escapeLabel = (v: string) =>
  /[\\"\n]/.test(v) ? v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n') : v;

/**
 * The flow counters live here, not in prom-client's per-series maps: at a million flows per round
 * and tens of thousands of series, prom-client's label hashing on every increment and its formatter
 * (microseconds per sample) dominated the round and the scrape. Each series keeps its totals and its
 * label block pre-escaped; the text is appended to the explicit Registry's `metrics()` output, so
 * /metrics serves self-metrics and flow counters from one Registry as before.
 */
export class PrometheusSink implements Sink {
  readonly name = 'prometheus';
  private readonly labels: LabelSpec[];
  private readonly getters: Getter[];
  private readonly families: Family[];
  /**
   * Series by hash of their label ids, chained on collision. A flow's series is found from one
   * interned-id lookup per label (label values are shared strings, their hashes cached) instead of
   * building and hashing a joined key string per flow.
   */
  private byHash = new Map<number, Series>();
  private count = 0;
  /** Per label: value → id. Rebuilt from the live series when expired values pile up. */
  private interns: Map<string, number>[];
  private nextIds: number[];
  private readonly scratch: Int32Array;
  private lastExpire = Number.NEGATIVE_INFINITY;
  private readonly maxSeries: number;
  private overflow: Series | undefined;
  /** Flows summed into the overflow series since the last push (for the self-metric). */
  private overflowed = 0;

  constructor(
    private readonly config: PrometheusSinkConfig,
    private readonly deps: { registry: Registry; metrics?: ExporterMetrics; log?: Logger },
    private readonly clock: () => number = Date.now,
  ) {
    const egressd = config.metricsPrefix === 'egressd';
    this.labels = egressd ? egressdLabels() : podflowLabels(config);
    this.getters = this.labels.map((l) => l.get);
    this.maxSeries = config.maxSeries ?? 200_000;
    this.interns = this.labels.map(() => new Map());
    this.nextIds = this.labels.map(() => 0);
    this.scratch = new Int32Array(this.labels.length);
    const p = config.metricsPrefix;
    this.families = [
      {
        name: `${p}_transmit_bytes_total`,
        help: 'Bytes sent by the local endpoint (src) to the peer (dst)',
        value: (s) => s.txBytes,
      },
      {
        name: `${p}_received_bytes_total`,
        help: 'Bytes received by the local endpoint (src) from the peer (dst)',
        value: (s) => s.rxBytes,
      },
    ];
    if (!egressd) {
      this.families.push(
        {
          name: `${p}_transmit_packets_total`,
          help: 'Packets sent by the local endpoint (src) to the peer (dst)',
          value: (s) => s.txPackets,
        },
        {
          name: `${p}_received_packets_total`,
          help: 'Packets received by the local endpoint (src) from the peer (dst)',
          value: (s) => s.rxPackets,
        },
      );
    }
    const registry = deps.registry;
    for (const f of this.families) {
      if (registry.getSingleMetric(f.name)) throw new Error(`metric ${f.name} is already registered`);
    }
    const inner = registry.metrics.bind(registry);
    registry.metrics = async () => {
      const rest = (await inner()).trimEnd();
      return rest.length > 0 ? `${rest}\n\n${this.render()}` : this.render();
    };
  }

  /** Number of flow series currently exported (per counter). */
  get seriesCount(): number {
    return this.count;
  }

  /** The flow counters in Prometheus text format, one block per counter, ending with a newline. */
  render(): string {
    let out = '';
    for (let i = 0; i < this.families.length; i++) {
      const f = this.families[i];
      if (i > 0) out += '\n';
      out += `# HELP ${f.name} ${f.help}\n# TYPE ${f.name} counter\n`;
      for (const head of this.byHash.values()) {
        for (let s: Series | undefined = head; s !== undefined; s = s.next) {
          out += `${f.name}${s.labelText} ${f.value(s)}\n`;
        }
      }
      if (this.overflow !== undefined)
        out += `${f.name}${this.overflow.labelText} ${f.value(this.overflow)}\n`;
    }
    return out;
  }

  async push(flows: readonly EnrichedFlow[]): Promise<void> {
    const now = this.clock();
    const getters = this.getters;
    const interns = this.interns;
    const ids = this.scratch;
    const n = getters.length;
    for (let i = 0; i < flows.length; i++) {
      const f = flows[i];
      let h = 0x811c9dc5 | 0;
      for (let j = 0; j < n; j++) {
        const v = getters[j](f);
        let id = interns[j].get(v);
        if (id === undefined) {
          id = this.nextIds[j]++;
          interns[j].set(v, id);
        }
        ids[j] = id;
        h = Math.imul(h ^ id, 0x01000193);
      }
      let s = this.byHash.get(h);
      while (s !== undefined && !sameIds(s.ids, ids)) s = s.next;
      if (s === undefined) {
        if (this.count < this.maxSeries) s = this.create(f, h, now);
        else s = this.overflowSeries(now);
      }
      s.last = now;
      s.txBytes += f.txBytes;
      s.rxBytes += f.rxBytes;
      s.txPackets += f.txPackets;
      s.rxPackets += f.rxPackets;
    }
    // The pipeline pushes once per collector: scan for idle series at most once a second.
    if (now - this.lastExpire >= 1000) this.expire(now);
    this.deps.metrics?.series.set(this.count);
    if (this.overflowed > 0) {
      this.deps.metrics?.seriesOverflow.inc(this.overflowed);
      this.overflowed = 0;
    }
  }

  private overflowSeries(now: number): Series {
    this.overflowed++;
    if (this.overflow === undefined) {
      const n = this.labels.length;
      this.deps.log?.warn(
        { maxSeries: this.maxSeries },
        'flow series limit reached: flows of new series are summed into the _overflow_ series (reduce --metrics-labels)',
      );
      this.overflow = {
        ids: new Int32Array(n).fill(-1),
        values: new Array<string>(n).fill(OVERFLOW),
        next: undefined,
        labelText: `{${this.labels.map((l) => `${l.name}="${OVERFLOW}"`).join(',')}}`,
        last: now,
        txBytes: 0,
        rxBytes: 0,
        txPackets: 0,
        rxPackets: 0,
      };
    }
    return this.overflow;
  }

  private create(f: EnrichedFlow, h: number, now: number): Series {
    const n = this.getters.length;
    const values = new Array<string>(n);
    const pairs = new Array<string>(n);
    for (let j = 0; j < n; j++) {
      values[j] = this.getters[j](f);
      pairs[j] = `${this.labels[j].name}="${escapeLabel(values[j])}"`;
    }
    const s: Series = {
      ids: this.scratch.slice(),
      values,
      next: this.byHash.get(h),
      // Built with join, not +=: a string grown piece by piece stays a rope of small objects,
      // several times its length in memory, for as long as the series lives.
      labelText: `{${pairs.join(',')}}`,
      last: now,
      txBytes: 0,
      rxBytes: 0,
      txPackets: 0,
      rxPackets: 0,
    };
    this.byHash.set(h, s);
    this.count++;
    return s;
  }

  /** Removes series not updated within `metrics-ttl` (Prometheus then marks them stale). */
  expire(now: number = this.clock()): void {
    this.lastExpire = now;
    const ttl = this.config.metricsTtl;
    if (ttl <= 0) return;
    if (this.overflow !== undefined && now - this.overflow.last >= ttl) this.overflow = undefined;
    let removed = 0;
    for (const [h, head] of this.byHash) {
      let keep: Series | undefined;
      let tail: Series | undefined;
      for (let s: Series | undefined = head; s !== undefined; s = s.next) {
        if (now - s.last >= ttl) {
          removed++;
          continue;
        }
        if (tail === undefined) keep = s;
        else tail.next = s;
        tail = s;
      }
      if (tail !== undefined) tail.next = undefined;
      if (keep === undefined) this.byHash.delete(h);
      else if (keep !== head) this.byHash.set(h, keep);
    }
    this.count -= removed;
    // Ids of values no live series uses would pile up with pod churn: re-intern now and then.
    if (removed > 0 && this.interns.some((m) => m.size > 2 * this.count + 1000)) this.reintern();
  }

  private reintern(): void {
    const live: Series[] = [];
    for (const head of this.byHash.values())
      for (let s: Series | undefined = head; s; s = s.next) live.push(s);
    this.interns = this.labels.map(() => new Map());
    this.nextIds = this.labels.map(() => 0);
    this.byHash = new Map();
    for (const s of live) {
      let h = 0x811c9dc5 | 0;
      for (let j = 0; j < s.values.length; j++) {
        let id = this.interns[j].get(s.values[j]);
        if (id === undefined) {
          id = this.nextIds[j]++;
          this.interns[j].set(s.values[j], id);
        }
        s.ids[j] = id;
        h = Math.imul(h ^ id, 0x01000193);
      }
      s.next = this.byHash.get(h);
      this.byHash.set(h, s);
    }
  }

  async close(_deadline: number): Promise<void> {}
}
