// The flow metrics as data (kube-state-metrics style): which families /metrics carries, with which
// labels, where each label's value comes from, per --metrics-prefix (podflow or egressd-compatible),
// --metrics-labels, --metrics-pod-ips and --cluster-name. The series store and the text writer
// only read these tables.
import { FLOW_LABELS, type FlowLabel } from '../shared/config.js';
import type { EnrichedFlow } from '../shared/flow.js';

/** What the label tables need of the sink's options (PrometheusSinkConfig). */
export interface SchemaConfig {
  metricsPrefix: 'podflow' | 'egressd';
  metricsLabels: readonly FlowLabel[];
  metricsPodIps: boolean;
  clusterName?: string;
}

/** Label value of the overflow series: not a valid pod, namespace, node name or address. */
export const OVERFLOW = '_overflow_';

export type Getter = (f: EnrichedFlow) => string;

/** One label: its name on the metric and where its value comes from. */
export interface LabelSpec {
  name: string;
  get: Getter;
}

/** One metric family: every family has the schema's labels; its value is counter `k` of a series. */
export interface Family {
  name: string;
  help: string;
  type: 'counter';
  /** Index of its count among a series' COUNTERS (the flow field it sums: COUNTED[k]). */
  k: number;
}

/** The flow fields a series sums, in the order of its counts (SeriesStore.add adds them in this order). */
export const COUNTED = ['txBytes', 'rxBytes', 'txPackets', 'rxPackets', 'cost'] as const;
/** Counts per series. */
export const COUNTERS = COUNTED.length;

const crossZone: Getter = (f) => (f.crossZone ? 'true' : 'false');

/** podflow's labels, in FLOW_LABELS order; --metrics-labels picks some of them. */
const PODFLOW_LABELS: Readonly<Record<FlowLabel, Getter>> = {
  src_namespace: (f) => f.srcNamespace,
  src_pod: (f) => f.srcPod,
  src_workload: (f) => f.srcWorkload,
  src_node: (f) => f.srcNode,
  src_zone: (f) => f.srcZone,
  src_region: (f) => f.srcRegion,
  dst_namespace: (f) => f.dstNamespace,
  dst_pod: (f) => f.dstPod,
  dst_workload: (f) => f.dstWorkload,
  dst_node: (f) => f.dstNode,
  dst_zone: (f) => f.dstZone,
  dst_region: (f) => f.dstRegion,
  // Pod and node addresses churn with every rollout: left out unless asked for (cardinality).
  dst_ip: (f) => (f.dstType === 'private' || f.dstType === 'public' ? f.dstIp : ''),
  dst_dns_name: (f) => f.dstDnsName,
  dst_type: (f) => f.dstType,
  traffic_class: (f) => f.trafficClass,
  cross_zone: crossZone,
  proto: (f) => f.proto,
};

/** dst_ip with --metrics-pod-ips: every peer's address. */
const DST_IP_ALWAYS: Getter = (f) => f.dstIp;

/**
 * castai/egressd's exporter: src_ip and dst_ip always filled and dst_ip_type private/public by
 * address (egressd's netaddr IsPrivate) as the enrich stage classed it (so the grouped 0.0.0.0 / ::
 * of --group-public-ips is public), the other labels as podflow's. Fixed: --metrics-labels does not
 * apply.
 */
const EGRESSD_LABELS: readonly LabelSpec[] = [
  { name: 'cross_zone', get: crossZone },
  { name: 'dst_ip', get: DST_IP_ALWAYS },
  { name: 'dst_ip_type', get: (f) => (f.dstType === 'public' ? 'public' : 'private') },
  { name: 'dst_namespace', get: PODFLOW_LABELS.dst_namespace },
  { name: 'dst_node', get: PODFLOW_LABELS.dst_node },
  { name: 'dst_pod', get: PODFLOW_LABELS.dst_pod },
  { name: 'dst_zone', get: PODFLOW_LABELS.dst_zone },
  { name: 'proto', get: PODFLOW_LABELS.proto },
  { name: 'src_ip', get: (f) => f.srcIp },
  { name: 'src_namespace', get: PODFLOW_LABELS.src_namespace },
  { name: 'src_node', get: PODFLOW_LABELS.src_node },
  { name: 'src_pod', get: PODFLOW_LABELS.src_pod },
  { name: 'src_zone', get: PODFLOW_LABELS.src_zone },
];

/**
 * The families, `${prefix}_…`; `egressd`: whether egressd's exporter has it too (it has no packet
 * or cost counters).
 */
const FAMILIES: readonly { suffix: string; help: string; k: number; egressd: boolean }[] = [
  {
    suffix: 'transmit_bytes_total',
    help: 'Bytes sent by the local endpoint (src) to the peer (dst)',
    k: 0,
    egressd: true,
  },
  {
    suffix: 'received_bytes_total',
    help: 'Bytes received by the local endpoint (src) from the peer (dst)',
    k: 1,
    egressd: true,
  },
  {
    suffix: 'transmit_packets_total',
    help: 'Packets sent by the local endpoint (src) to the peer (dst)',
    k: 2,
    egressd: false,
  },
  {
    suffix: 'received_packets_total',
    help: 'Packets received by the local endpoint (src) from the peer (dst)',
    k: 3,
    egressd: false,
  },
  {
    suffix: 'traffic_cost_total',
    help: 'Cost of the bytes of the series under the price table (--cloud, --prices), USD',
    k: 4,
    egressd: false,
  },
];

/** The families and labels of one configuration. */
export interface FlowSchema {
  families: readonly Family[];
  /** The labels that make a series, in text order. */
  labels: readonly LabelSpec[];
  /**
   * `cluster-name`: the label `cluster` with this value on every series, first. The same on every
   * series, so it is no part of a series' key: the text writer and `totals()` add it.
   */
  cluster: string | undefined;
}

export function flowSchema(config: SchemaConfig): FlowSchema {
  const egressd = config.metricsPrefix === 'egressd';
  const keep = new Set(config.metricsLabels);
  const labels = egressd
    ? EGRESSD_LABELS
    : FLOW_LABELS.filter((l) => keep.has(l)).map((name) => ({
        name,
        get: name === 'dst_ip' && config.metricsPodIps ? DST_IP_ALWAYS : PODFLOW_LABELS[name],
      }));
  const families = FAMILIES.filter((f) => !egressd || f.egressd).map(
    ({ suffix, help, k }): Family => ({
      name: `${config.metricsPrefix}_${suffix}`,
      help,
      type: 'counter',
      k,
    }),
  );
  return { families, labels, cluster: config.clusterName };
}

/**
 * The endpoint labels read by a switch rather than through the label's getter: one call site
 * calling fourteen different closures is megamorphic (no inlining, a full call each), and these
 * reads ran for every label of every flow. Codes index ENDPOINT_FIELDS.
 */
export const ENDPOINT_FIELDS = [
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
] as const;

export function endpointField(code: number, f: EnrichedFlow): string {
  switch (code) {
    case 0:
      return f.srcNamespace;
    case 1:
      return f.srcPod;
    case 2:
      return f.srcWorkload;
    case 3:
      return f.srcNode;
    case 4:
      return f.srcZone;
    case 5:
      return f.dstNamespace;
    case 6:
      return f.dstPod;
    case 7:
      return f.dstWorkload;
    case 8:
      return f.dstNode;
    default:
      return f.dstZone;
  }
}

/** The labels of one endpoint (src_… or dst_…), most specific first: they come as a group. */
export const ENDPOINT_LABELS = ['pod', 'workload', 'node', 'namespace', 'zone'];

/** Labels outside the endpoint groups that EnrichedFlow.srcPeer / dstPeer fix too. */
export const FIXED_BY_PEER = ['src_region', 'dst_region', 'dst_ip', 'dst_type', 'dst_ip_type'];
