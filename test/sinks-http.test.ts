// The record and OTLP sinks of a `sinks:` map, loaded from a YAML file and wired by createExportGraph
// as `podflow exporter` does, against a real HTTP receiver on loopback: egressd's protobuf batches
// (decoded with egressd's own schema), NDJSON with the receiver's Content-Type, static fields and
// empty fields left out, a Loki push, OTLP logs and metrics (decoded with the official OTLP schemas).
// Every sink gets every flow once.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Registry } from 'prom-client';
import protobuf from 'protobufjs';
import { uncompressSync } from 'snappy';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Backlog } from '../collector/backlog.js';
import { InProcessCollectorClient } from '../exporter/in-process.js';
import { createExportGraph, staticDiscovery } from '../exporter/pipeline.js';
import { remoteWrite, TotalsSink } from '../exporter/totals-sink.js';
import { loadConfig } from '../shared/config.js';
import type { EnrichedFlow, Flow } from '../shared/flow.js';
import { silentLogger } from '../shared/log.js';
import { VERSION } from '../shared/version.js';
import { ManualClock } from './fixtures/clock.js';
import * as fixtures from './fixtures/flows.js';
import { HttpReceiver, type ReceivedRequest } from './helpers/http-receiver.js';

const EGRESSD_PROTO = fileURLToPath(new URL('../exporter/proto/egressd-metrics.proto', import.meta.url));
const OTLP_DIR = fileURLToPath(new URL('./fixtures/otlp-proto/', import.meta.url));

/** The OTLP schemas, imports resolved from the vendored tree. */
function otlp(file: string, type: string): protobuf.Type {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => join(OTLP_DIR, target);
  root.loadSync(file);
  return root.lookupType(type);
}
const decode = (type: protobuf.Type, body: Buffer) =>
  type.toObject(type.decode(body), { longs: Number, enums: Number, defaults: false }) as Record<
    string,
    unknown
  >;
const enriched: EnrichedFlow = fixtures.enriched({
  ts: Date.UTC(2026, 0, 2, 3, 4, 5),
  intervalSeconds: 15,
  ...fixtures.toInternet,
  dstIp: '8.8.8.8',
  txBytes: 0,
  rxBytes: 0,
  txPackets: 1,
  rxPackets: 1,
  cost: 0,
});

/** An OTLP KeyValue list as a plain object. */
const attrs = (kvs: { key: string; value: Record<string, unknown> }[] = []) =>
  Object.fromEntries(kvs.map((kv) => [kv.key, Object.values(kv.value)[0]]));

describe('sinks of the sinks map, in the export graph', () => {
  let rx: HttpReceiver;
  const fed = { tx: 0, flows: 0 };
  const at = (path: string): ReceivedRequest[] =>
    rx.requests.filter((r) => r.path === `${new URL(rx.url).pathname}${path}`);

  beforeAll(async () => {
    rx = await HttpReceiver.start();
    const file = join(mkdtempSync(join(tmpdir(), 'podflow-sinks-')), 'exporter.yaml');
    writeFileSync(
      file,
      [
        'sinks:',
        '  castai:',
        '    http:',
        `      url: ${rx.url}/egressd`,
        '      method: PUT',
        '      compression: gzip',
        '      encoding: protobuf',
        // biome-ignore lint/suspicious/noTemplateCurlyInString: the ${ENV} syntax of the file
        '      headers: {X-API-Key: "${API_KEY}"}',
        '  logs:',
        '    http:',
        `      url: ${rx.url}/ndjson`,
        '      headers: {content-type: application/json}',
        '      fields: {cluster_name: prod}',
        '      omit_empty: true',
        '  loki:',
        `    loki: {url: "${rx.url}/loki/api/v1/push", labels: {job: podflow}}`,
        '  otel-logs:',
        `    otlp_logs: {url: "${rx.url}/v1/logs", resource: {k8s.cluster.name: prod}}`,
        '  otel-metrics:',
        `    otlp_metrics: {url: "${rx.url}/v1/metrics", compression: gzip}`,
        '',
      ].join('\n'),
    );
    const config = loadConfig({ command: 'exporter', flags: { config: file }, env: { API_KEY: 'k-1' } });
    const backlog = new Backlog({ backlogMaxFlows: 1000 });
    const client = new InProcessCollectorClient(backlog, { node: 'n1', source: 'netfilter' });
    const graph = createExportGraph(config, {
      discovery: staticDiscovery([client]),
      registry: new Registry(),
      log: silentLogger,
    });
    expect(graph.named.map((s) => s.name)).toEqual(['castai', 'logs', 'loki', 'otel-logs', 'otel-metrics']);
    for (let t = 0; t < 2; t++) {
      const flows: Flow[] = [0, 1, 2].map((i) => ({
        src: '10.0.1.5',
        dst: `192.0.2.${t * 3 + i}`,
        proto: i === 2 ? 17 : 6,
        txBytes: 1000 * t + i + 1,
        rxBytes: i,
        txPackets: 1,
        rxPackets: 1,
      }));
      for (const f of flows) fed.tx += f.txBytes;
      fed.flows += flows.length;
      backlog.append(Date.now() - 1000, Date.now(), flows);
      await graph.pipeline.runOnce();
    }
    expect(backlog.acked).toBe(backlog.last);
    await graph.pipeline.close(Date.now() + 1000);
  });
  afterAll(() => rx.close());

  it("posts egressd's PodNetworkMetricBatch: protobuf, gzip, the method, headers and User-Agent", () => {
    const reqs = at('/egressd');
    const Batch = protobuf.loadSync(EGRESSD_PROTO).lookupType('PodNetworkMetricBatch');
    const items = reqs.flatMap((r) => (decode(Batch, r.body).items ?? []) as Record<string, unknown>[]);
    for (const r of reqs) {
      expect(r.method).toBe('PUT');
      expect(r.headers).toMatchObject({
        'content-type': 'application/protobuf',
        'content-encoding': 'gzip',
        'user-agent': `podflow/${VERSION}`,
        'x-api-key': 'k-1',
      });
    }
    expect(items).toHaveLength(fed.flows);
    expect(items.reduce((n, i) => n + (i.txBytes as number), 0)).toBe(fed.tx);
    expect(items[0]).toMatchObject({
      srcIp: '10.0.1.5',
      dstIp: '192.0.2.0',
      proto: 6,
      txBytes: 1,
      txPackets: 1,
    });
    expect(items.filter((i) => i.proto === 17)).toHaveLength(2);
  });

  it("sends NDJSON with the user's Content-Type (not a second one), static fields, no empty fields", () => {
    const reqs = at('/ndjson');
    const records = reqs.flatMap((r) =>
      r.body
        .toString()
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l)),
    );
    for (const r of reqs) {
      expect(r.headers['content-type']).toBe('application/json');
      expect(r.headers['user-agent']).toBe(`podflow/${VERSION}`);
    }
    expect(records).toHaveLength(fed.flows);
    expect(records.reduce((n, r) => n + r.tx_bytes, 0)).toBe(fed.tx);
    expect(records[0]).toMatchObject({
      cluster_name: 'prod',
      src_ip: '10.0.1.5',
      src_node: 'n1',
      rx_bytes: 0,
    });
    expect(Object.keys(records[0])).not.toContain('dst_pod');
    expect(Object.keys(records[0])).not.toContain('src_namespace');
  });

  it('pushes to Loki: a few stream labels, the record as the line, its timestamp in ns', () => {
    const streams = at('/loki/api/v1/push').flatMap(
      (r) =>
        (JSON.parse(r.body.toString()) as { streams: { stream: object; values: [string, string][] }[] })
          .streams,
    );
    // src_namespace is empty here (no Kubernetes): left out, not sent as "".
    for (const s of streams) expect(s.stream).toEqual({ job: 'podflow', src_node: 'n1' });
    const values = streams.flatMap((s) => s.values);
    expect(values).toHaveLength(fed.flows);
    let tx = 0;
    for (const [ns, line] of values) {
      const rec = JSON.parse(line);
      expect(ns).toBe(`${Date.parse(rec.ts)}000000`);
      tx += rec.tx_bytes;
    }
    expect(tx).toBe(fed.tx);
  });

  it('exports OTLP logs: one record per flow, fields as attributes, the resource', () => {
    const Req = otlp(
      'opentelemetry/proto/collector/logs/v1/logs_service.proto',
      'opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest',
    );
    let tx = 0;
    let n = 0;
    for (const r of at('/v1/logs')) {
      expect(r.headers['content-type']).toBe('application/x-protobuf');
      const doc = decode(Req, r.body) as {
        resourceLogs: {
          resource: { attributes: never[] };
          scopeLogs: {
            scope: { name: string };
            logRecords: { attributes: never[]; timeUnixNano: number }[];
          }[];
        }[];
      };
      for (const rl of doc.resourceLogs) {
        expect(attrs(rl.resource.attributes)).toEqual({
          'service.name': 'podflow',
          'k8s.cluster.name': 'prod',
        });
        for (const sl of rl.scopeLogs) {
          expect(sl.scope.name).toBe('podflow');
          for (const lr of sl.logRecords) {
            const a = attrs(lr.attributes);
            expect(a).toMatchObject({ src_ip: '10.0.1.5', cross_zone: false });
            expect(lr.timeUnixNano).toBeGreaterThan(0);
            tx += a.tx_bytes as number;
            n++;
          }
        }
      }
    }
    expect(n).toBe(fed.flows);
    expect(tx).toBe(fed.tx);
  });

  it('exports OTLP metrics: monotonic cumulative sums with the /metrics names, totals in the last write', () => {
    const Req = otlp(
      'opentelemetry/proto/collector/metrics/v1/metrics_service.proto',
      'opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest',
    );
    const reqs = at('/v1/metrics');
    expect(reqs.length).toBeGreaterThan(0);
    expect(reqs[0].headers['content-encoding']).toBe('gzip');
    const last = decode(Req, reqs[reqs.length - 1].body) as {
      resourceMetrics: {
        scopeMetrics: {
          metrics: {
            name: string;
            sum: {
              aggregationTemporality: number;
              isMonotonic: boolean;
              dataPoints: {
                asDouble: number;
                attributes: never[];
                startTimeUnixNano: number;
                timeUnixNano: number;
              }[];
            };
          }[];
        }[];
      }[];
    };
    const metrics = last.resourceMetrics[0].scopeMetrics[0].metrics;
    expect(metrics.map((m) => m.name)).toEqual([
      'podflow_transmit_bytes_total',
      'podflow_received_bytes_total',
      'podflow_transmit_packets_total',
      'podflow_received_packets_total',
      'podflow_traffic_cost_total',
    ]);
    const tx = metrics[0].sum;
    expect(tx.aggregationTemporality).toBe(2); // CUMULATIVE
    expect(tx.isMonotonic).toBe(true);
    expect(tx.dataPoints).toHaveLength(fed.flows);
    expect(tx.dataPoints.reduce((n, p) => n + p.asDouble, 0)).toBe(fed.tx);
    for (const p of tx.dataPoints) {
      expect(attrs(p.attributes)).toMatchObject({
        dst_type: 'public',
        src_node: 'n1',
        proto: expect.any(String),
      });
      expect(p.startTimeUnixNano).toBeLessThanOrEqual(p.timeUnixNano);
    }
  });
});

describe('remote write with --metrics-prefix egressd', () => {
  // The parts of Prometheus' prompb/types.proto and remote.proto a write uses.
  const PROMPB = `syntax = "proto3"; package prometheus;
    message WriteRequest { repeated TimeSeries timeseries = 1; repeated MetricMetadata metadata = 3; }
    message MetricMetadata { int32 type = 1; string metric_family_name = 2; string help = 4; }
    message TimeSeries { repeated Label labels = 1; repeated Sample samples = 2; }
    message Label { string name = 1; string value = 2; }
    message Sample { double value = 1; int64 timestamp = 2; }`;

  it("writes egressd's names and labels, sorted, static labels merged, a 0 sample before a new series", async () => {
    const rx = await HttpReceiver.start();
    try {
      const sink = new TotalsSink(
        {
          name: 'vm',
          url: rx.url,
          headers: { 'X-Scope-OrgID': 'org-1' },
          timeout: 1000,
          gzip: false,
          batchMax: 1000,
          series: { metricsPrefix: 'egressd', metricsLabels: [], metricsTtl: 0, metricsPodIps: false },
        },
        remoteWrite({ my_custom_label: 'v' }),
        { log: silentLogger },
        new ManualClock(1_700_000_000_000),
      );
      const flow = { ...enriched, txBytes: 5, rxBytes: 7 };
      await sink.push([flow]);
      await sink.push([flow]);
      await sink.close(Date.now());
      const WriteRequest = protobuf.parse(PROMPB).root.lookupType('prometheus.WriteRequest');
      const writes = rx.requests.map((r) => {
        expect(r.headers).toMatchObject({
          'content-encoding': 'snappy',
          'content-type': 'application/x-protobuf',
          'x-prometheus-remote-write-version': '0.1.0',
          'x-scope-orgid': 'org-1',
        });
        return decode(WriteRequest, uncompressSync(r.body) as Buffer) as {
          timeseries: {
            labels: { name: string; value: string }[];
            samples: { value?: number; timestamp: number }[];
          }[];
          metadata: { metricFamilyName: string }[];
        };
      });
      expect(writes).toHaveLength(2);
      const [first, second] = writes;
      expect(first.metadata.map((m) => m.metricFamilyName)).toEqual([
        'egressd_transmit_bytes_total',
        'egressd_received_bytes_total',
      ]);
      const tx = first.timeseries[0];
      expect(tx.labels.map((l) => l.name)).toEqual([...tx.labels.map((l) => l.name)].sort());
      expect(Object.fromEntries(tx.labels.map((l) => [l.name, l.value]))).toEqual({
        __name__: 'egressd_transmit_bytes_total',
        cross_zone: 'false',
        dst_ip: '8.8.8.8',
        dst_ip_type: 'public',
        my_custom_label: 'v',
        proto: 'TCP',
        src_ip: '10.0.1.5',
        src_namespace: 'shop',
        src_node: 'node-a',
        src_pod: 'web-1',
        src_zone: 'zone-a',
      });
      // A new series: 0 one ms before its first total. The second write: the running total only.
      expect(tx.samples.map((s) => [s.value ?? 0, s.timestamp])).toEqual([
        [0, 1_700_000_000_000 - 1],
        [5, 1_700_000_000_000],
      ]);
      expect(second.timeseries[0].samples.map((s) => [s.value, s.timestamp])).toEqual([
        [10, 1_700_000_000_002],
      ]);
      expect(second.timeseries[1].samples.map((s) => s.value)).toEqual([14]);
    } finally {
      await rx.close();
    }
  });
});
