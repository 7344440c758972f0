// The record encodings with `--cluster-name`: every log record names its cluster, in Loki's line
// and stream labels and in OTLP's attributes and resource, as the NDJSON record does.
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { describe, expect, it } from 'vitest';
import { enriched, toInternet } from '../test/fixtures/flows.js';
import { loki, ndjson, otlpLogs } from './encodings.js';

const flow = enriched({
  ...toInternet,
  ts: Date.UTC(2026, 0, 2, 3, 4, 5),
  dstIp: '203.0.113.7',
  dstDnsName: 'api.example.com',
  txBytes: 1200,
});

const text = (b: Uint8Array | string) => (typeof b === 'string' ? b : Buffer.from(b).toString());

describe('--cluster-name in the log encodings', () => {
  it('NDJSON: `cluster` after interval_seconds', () => {
    const rec = JSON.parse(text(ndjson({ cluster: 'prod-eu' }).encode([flow])).trim());
    expect(Object.keys(rec).slice(0, 4)).toEqual(['ts', 'interval_seconds', 'cluster', 'src_ip']);
    expect(rec.cluster).toBe('prod-eu');
  });

  it('Loki: a `cluster` stream label and record field; a label the user set wins', () => {
    const push = JSON.parse(
      text(
        loki({ labels: { job: 'podflow' }, streamLabels: ['src_namespace'], cluster: 'prod-eu' }).encode([
          flow,
        ]),
      ),
    );
    expect(push.streams).toHaveLength(1);
    expect(push.streams[0].stream).toEqual({ cluster: 'prod-eu', job: 'podflow', src_namespace: 'shop' });
    expect(JSON.parse(push.streams[0].values[0][1]).cluster).toBe('prod-eu');
    const own = JSON.parse(
      text(loki({ labels: { cluster: 'mine' }, streamLabels: [], cluster: 'prod-eu' }).encode([flow])),
    );
    expect(own.streams[0].stream).toEqual({ cluster: 'mine' });
    const none = JSON.parse(text(loki({ labels: {}, streamLabels: [] }).encode([flow])));
    expect(none.streams[0].stream).toEqual({});
    expect(JSON.parse(none.streams[0].values[0][1])).not.toHaveProperty('cluster');
  });

  it('OTLP logs: the `cluster` attribute and k8s.cluster.name on the resource', () => {
    const dir = fileURLToPath(new URL('../test/fixtures/otlp-proto/', import.meta.url));
    const root = new protobuf.Root();
    root.resolvePath = (_origin, target) => join(dir, target);
    root.loadSync('opentelemetry/proto/collector/logs/v1/logs_service.proto');
    const Req = root.lookupType('opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest');
    const attrs = (kvs: { key: string; value: Record<string, unknown> }[]) =>
      Object.fromEntries(kvs.map((kv) => [kv.key, Object.values(kv.value)[0]]));
    const decodeReq = (bytes: Uint8Array | string) =>
      Req.toObject(Req.decode(bytes as Uint8Array), { longs: Number }) as {
        resourceLogs: {
          resource: { attributes: never[] };
          scopeLogs: { logRecords: { attributes: never[] }[] }[];
        }[];
      };
    const doc = decodeReq(otlpLogs({ resource: {}, cluster: 'prod-eu' }).encode([flow]));
    expect(attrs(doc.resourceLogs[0].resource.attributes)).toEqual({
      'service.name': 'podflow',
      'k8s.cluster.name': 'prod-eu',
    });
    const rec = attrs(doc.resourceLogs[0].scopeLogs[0].logRecords[0].attributes);
    expect(rec).toMatchObject({ cluster: 'prod-eu', dst_dns_name: 'api.example.com', tx_bytes: 1200 });
    // The sink's own resource attribute is the user's word.
    const own = decodeReq(
      otlpLogs({ resource: { 'k8s.cluster.name': 'x' }, cluster: 'prod-eu' }).encode([flow]),
    );
    expect(attrs(own.resourceLogs[0].resource.attributes)['k8s.cluster.name']).toBe('x');
  });
});
