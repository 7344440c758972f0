// Prometheus sink: the four flow counters of CONTRACT.md on an explicit prom-client Registry (served
// on /metrics by cmd/exporter.ts). Flows are summed per series first, so prom-client is touched once
// per series per push, not once per flow; series idle for `metrics-ttl` are removed.
import { Counter, type Registry } from 'prom-client';
import { FLOW_LABELS, type FlowLabel } from '../shared/config.js';
import type { EnrichedFlow } from '../shared/flow.js';
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
}

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
  labels: Record<string, string>;
  /** Last push that touched the series (clock ms). */
  last: number;
  /** Already in the list of series of the push in progress. */
  pending: boolean;
  txBytes: number;
  rxBytes: number;
  txPackets: number;
  rxPackets: number;
}

const SEP = '\u0001';

export class PrometheusSink implements Sink {
  readonly name = 'prometheus';
  private readonly labels: LabelSpec[];
  private readonly getters: Getter[];
  private readonly txBytes: Counter<string>;
  private readonly rxBytes: Counter<string>;
  private readonly txPackets?: Counter<string>;
  private readonly rxPackets?: Counter<string>;
  private readonly series = new Map<string, Series>();
  /** Series touched by the push in progress (reused between pushes). */
  private dirty: Series[] = [];

  constructor(
    private readonly config: PrometheusSinkConfig,
    private readonly deps: { registry: Registry; metrics?: ExporterMetrics },
    private readonly clock: () => number = Date.now,
  ) {
    const egressd = config.metricsPrefix === 'egressd';
    this.labels = egressd ? egressdLabels() : podflowLabels(config);
    this.getters = this.labels.map((l) => l.get);
    const labelNames = this.labels.map((l) => l.name);
    const registers = [deps.registry];
    const p = config.metricsPrefix;
    this.txBytes = new Counter({
      name: `${p}_transmit_bytes_total`,
      help: 'Bytes sent by the local endpoint (src) to the peer (dst)',
      labelNames,
      registers,
    });
    this.rxBytes = new Counter({
      name: `${p}_received_bytes_total`,
      help: 'Bytes received by the local endpoint (src) from the peer (dst)',
      labelNames,
      registers,
    });
    if (!egressd) {
      this.txPackets = new Counter({
        name: `${p}_transmit_packets_total`,
        help: 'Packets sent by the local endpoint (src) to the peer (dst)',
        labelNames,
        registers,
      });
      this.rxPackets = new Counter({
        name: `${p}_received_packets_total`,
        help: 'Packets received by the local endpoint (src) from the peer (dst)',
        labelNames,
        registers,
      });
    }
  }

  /** Number of flow series currently exported (per counter). */
  get seriesCount(): number {
    return this.series.size;
  }

  async push(flows: readonly EnrichedFlow[]): Promise<void> {
    const now = this.clock();
    const getters = this.getters;
    const n = getters.length;
    const dirty = this.dirty;
    for (let i = 0; i < flows.length; i++) {
      const f = flows[i];
      let key = '';
      for (let j = 0; j < n; j++) key += getters[j](f) + SEP;
      let s = this.series.get(key);
      if (s === undefined) {
        const labels: Record<string, string> = {};
        for (let j = 0; j < n; j++) labels[this.labels[j].name] = getters[j](f);
        s = { labels, last: now, pending: false, txBytes: 0, rxBytes: 0, txPackets: 0, rxPackets: 0 };
        this.series.set(key, s);
      }
      if (!s.pending) {
        s.pending = true;
        dirty.push(s);
      }
      s.last = now;
      s.txBytes += f.txBytes;
      s.rxBytes += f.rxBytes;
      s.txPackets += f.txPackets;
      s.rxPackets += f.rxPackets;
    }
    for (let i = 0; i < dirty.length; i++) {
      const s = dirty[i];
      this.txBytes.inc(s.labels, s.txBytes);
      this.rxBytes.inc(s.labels, s.rxBytes);
      this.txPackets?.inc(s.labels, s.txPackets);
      this.rxPackets?.inc(s.labels, s.rxPackets);
      s.txBytes = 0;
      s.rxBytes = 0;
      s.txPackets = 0;
      s.rxPackets = 0;
      s.pending = false;
    }
    dirty.length = 0;
    this.expire(now);
    this.deps.metrics?.series.set(this.series.size);
  }

  /** Removes series not updated within `metrics-ttl` (Prometheus then marks them stale). */
  expire(now: number = this.clock()): void {
    const ttl = this.config.metricsTtl;
    if (ttl <= 0) return;
    for (const [key, s] of this.series) {
      if (now - s.last < ttl) continue;
      this.series.delete(key);
      this.txBytes.remove(s.labels);
      this.rxBytes.remove(s.labels);
      this.txPackets?.remove(s.labels);
      this.rxPackets?.remove(s.labels);
    }
  }

  async close(_deadline: number): Promise<void> {}
}
