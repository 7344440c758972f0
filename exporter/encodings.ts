// How a record sink (exporter/http-sink.ts) turns the flows of one request into a body: NDJSON
// records, castai/egressd's PodNetworkMetricBatch, a Loki push, or an OTLP logs export request.
// Transport (queue, retries, Idempotency-Key, 413 halving) is the sink's; this is serialization only.
import { ProtobufLogsSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import type { ReadableLogRecord } from '@opentelemetry/sdk-logs';
import protobuf from 'protobufjs/minimal.js';
import type { EnrichedFlow } from '../shared/flow.js';
import { PROTO_NAMES } from '../shared/flow.js';
import { VERSION } from '../shared/version.js';

export interface RecordEncoding {
  /** The body's media type (a user's Content-Type header replaces it). */
  contentType: string;
  encode(flows: readonly EnrichedFlow[]): string | Uint8Array;
}

type Value = string | number | boolean;

/**
 * One record's fields, snake_case, in the contract's order (CONTRACT.md "HTTP log sink records");
 * `cluster` (--cluster-name) after `interval_seconds`, only when set.
 */
export function recordOf(f: EnrichedFlow, cluster?: string): Record<string, Value> {
  return {
    ts: new Date(f.ts).toISOString(),
    interval_seconds: f.intervalSeconds,
    ...(cluster !== undefined ? { cluster } : undefined),
    src_ip: f.srcIp,
    src_pod: f.srcPod,
    src_namespace: f.srcNamespace,
    src_workload: f.srcWorkload,
    src_node: f.srcNode,
    src_zone: f.srcZone,
    src_region: f.srcRegion,
    dst_ip: f.dstIp,
    dst_pod: f.dstPod,
    dst_namespace: f.dstNamespace,
    dst_workload: f.dstWorkload,
    dst_node: f.dstNode,
    dst_zone: f.dstZone,
    dst_region: f.dstRegion,
    dst_dns_name: f.dstDnsName,
    dst_type: f.dstType,
    traffic_class: f.trafficClass,
    cross_zone: f.crossZone,
    proto: f.proto,
    tx_bytes: f.txBytes,
    rx_bytes: f.rxBytes,
    tx_packets: f.txPackets,
    rx_packets: f.rxPackets,
    cost: f.cost,
  };
}

/** One snake_case NDJSON record. Field order is the contract's. */
export const toRecord = (f: EnrichedFlow, cluster?: string): string => JSON.stringify(recordOf(f, cluster));

export interface NdjsonOptions {
  /** Added to every record, before the flow's own fields (which win on a clash). */
  fields?: Readonly<Record<string, Value>>;
  /** Leave out fields whose value is an empty string. */
  omitEmpty?: boolean;
  /** `--cluster-name`: the record field `cluster`. */
  cluster?: string;
}

/** NDJSON: one record per line, each line ending in a newline. */
export function ndjson(opts: NdjsonOptions = {}): RecordEncoding {
  const fields = opts.fields ?? {};
  const { cluster } = opts;
  const plain = Object.keys(fields).length === 0 && !opts.omitEmpty;
  const line = plain
    ? (f: EnrichedFlow) => toRecord(f, cluster)
    : (f: EnrichedFlow) => {
        const rec: Record<string, Value> = { ...fields, ...recordOf(f, cluster) };
        if (opts.omitEmpty) for (const k in rec) if (rec[k] === '') delete rec[k];
        return JSON.stringify(rec);
      };
  return {
    contentType: 'application/x-ndjson',
    encode: (flows) => {
      let out = '';
      for (const f of flows) out += `${line(f)}\n`;
      return out;
    },
  };
}

const PROTO_NUMBERS = new Map(Object.entries(PROTO_NAMES).map(([n, name]) => [name, Number(n)]));
/** The IP protocol number of a flow's `proto` (a name podflow gives, or the number itself). */
export const protoNumber = (proto: string): number => PROTO_NUMBERS.get(proto) ?? (Number(proto) || 0);

/**
 * castai/egressd's `PodNetworkMetricBatch` (exporter/proto/egressd-metrics.proto), as egressd's HTTP
 * sink posts it with `encoding: protobuf`. Written with protobufjs's Writer field by field (one pass,
 * no message objects); the tests decode it with the vendored schema. Proto3 leaves fields at their
 * default value out, as every proto3 encoder does.
 */
export function egressdProtobuf(): RecordEncoding {
  return {
    contentType: 'application/protobuf',
    encode: (flows) => {
      const w = protobuf.Writer.create();
      const str = (field: number, v: string) => {
        if (v !== '') w.uint32((field << 3) | 2).string(v);
      };
      const int = (field: number, v: number) => {
        if (v !== 0) w.uint32(field << 3).int64(v);
      };
      for (const f of flows) {
        // items = 1: a length-delimited PodNetworkMetric.
        w.uint32((1 << 3) | 2).fork();
        str(1, f.srcIp);
        str(2, f.srcPod);
        str(3, f.srcNamespace);
        str(4, f.srcNode);
        str(5, f.srcZone);
        str(6, f.dstIp);
        str(7, f.dstPod);
        str(8, f.dstNamespace);
        str(9, f.dstNode);
        str(10, f.dstZone);
        int(11, f.txBytes);
        int(12, f.txPackets);
        int(13, f.rxBytes);
        int(14, f.rxPackets);
        const p = protoNumber(f.proto);
        if (p !== 0) w.uint32(15 << 3).int32(p);
        str(17, f.dstDnsName);
        w.ldelim();
      }
      return w.finish();
    },
  };
}

export interface LokiOptions {
  /** Static stream labels (job, cluster, …). */
  labels: Readonly<Record<string, string>>;
  /** Record fields that become stream labels too: low-cardinality ones (namespace, node). */
  streamLabels: readonly string[];
  /** `--cluster-name`: the record field `cluster` and a stream label, so clusters share one Loki. */
  cluster?: string;
}

/**
 * A Loki push (`POST /loki/api/v1/push`, JSON): flows grouped into streams by a few low-cardinality
 * labels, each flow one line, the NDJSON record, at the end of its interval. Every other field stays
 * in the line (`| json` in LogQL): a label per pod or address would make a stream per pod pair,
 * which Loki is not built for. Empty label values are left out (Loki drops them anyway).
 */
export function loki(opts: LokiOptions): RecordEncoding {
  return {
    contentType: 'application/json',
    encode: (flows) => {
      const streams = new Map<string, { stream: Record<string, string>; values: [string, string][] }>();
      const base: Record<string, string> =
        opts.cluster !== undefined ? { cluster: opts.cluster, ...opts.labels } : { ...opts.labels };
      for (const f of flows) {
        const rec = recordOf(f, opts.cluster);
        const stream: Record<string, string> = { ...base };
        for (const l of opts.streamLabels) {
          const v = rec[l];
          if (v !== '' && v !== undefined) stream[l] = String(v);
        }
        const key = JSON.stringify(stream);
        let s = streams.get(key);
        if (s === undefined) {
          s = { stream, values: [] };
          streams.set(key, s);
        }
        // Nanoseconds as a decimal string: ms * 1e6 exceeds 2^53.
        s.values.push([`${f.ts}000000`, JSON.stringify(rec)]);
      }
      return JSON.stringify({ streams: [...streams.values()] });
    },
  };
}

export interface OtlpOptions {
  /** Resource attributes besides service.name=podflow (cluster, environment). */
  resource: Readonly<Record<string, string>>;
  /**
   * `--cluster-name`: the attribute `cluster` of every log record (as in the NDJSON record) and the
   * resource's `k8s.cluster.name` unless the sink's resource names one itself.
   */
  cluster?: string;
}

/** The OTLP resource and scope of every record and data point podflow sends. */
export function otlpResource(opts: OtlpOptions) {
  return {
    resource: resourceFromAttributes({
      'service.name': 'podflow',
      ...(opts.cluster !== undefined ? { 'k8s.cluster.name': opts.cluster } : undefined),
      ...opts.resource,
    }),
    scope: { name: 'podflow', version: VERSION },
  };
}

/** ms since the epoch as OpenTelemetry's HrTime (seconds, nanoseconds). */
export const hrTime = (ms: number): [number, number] => [Math.floor(ms / 1000), (ms % 1000) * 1_000_000];

/**
 * An OTLP/HTTP logs export request (protobuf), made by the OpenTelemetry JS serializer: one log
 * record per flow, timed at the end of its interval, its fields as attributes (counts as integers,
 * `cross_zone` a boolean), event name `podflow.flow`.
 */
export function otlpLogs(opts: OtlpOptions): RecordEncoding {
  const { resource, scope } = otlpResource(opts);
  return {
    contentType: 'application/x-protobuf',
    encode: (flows) => {
      const records: ReadableLogRecord[] = flows.map((f) => {
        const { ts: _, ...attributes } = recordOf(f, opts.cluster);
        const t = hrTime(f.ts);
        return {
          hrTime: t,
          hrTimeObserved: t,
          severityNumber: 9,
          severityText: 'INFO',
          eventName: 'podflow.flow',
          body: 'flow',
          resource,
          instrumentationScope: scope,
          attributes,
          droppedAttributesCount: 0,
        };
      });
      return ProtobufLogsSerializer.serializeRequest(records) ?? new Uint8Array();
    },
  };
}
