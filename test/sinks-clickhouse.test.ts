// The ClickHouse recipe of docs/sinks.md, run as written: the CREATE TABLE and the --http-sink-url
// are read from the doc, against a real ClickHouse (Debian's clickhouse-server) on loopback, with
// the export graph `podflow exporter` wires. Every record arrives with its bytes, its RFC 3339 time
// and its JSON boolean, plain and gzipped.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Backlog } from '../collector/backlog.js';
import { InProcessCollectorClient } from '../exporter/in-process.js';
import { createExportGraph, staticDiscovery } from '../exporter/pipeline.js';
import type { ClusterLookup } from '../shared/cluster.js';
import { loadConfig } from '../shared/config.js';
import type { Flow } from '../shared/flow.js';
import { silentLogger } from '../shared/log.js';
import { ClickHouse } from './helpers/clickhouse.js';

const DOC = readFileSync(new URL('../docs/sinks.md', import.meta.url), 'utf8');
const section = DOC.slice(DOC.indexOf('## ClickHouse'));
const DDL = /```sql\n([\s\S]*?)```/.exec(section)?.[1] ?? '';
const SINK_URL = /--http-sink-url '([^']+)'/.exec(section)?.[1] ?? '';

/** Two pods in two zones: their flows are cross-zone. */
const cluster: ClusterLookup = {
  lookup: (ip) =>
    ip === '10.0.1.5'
      ? {
          kind: 'pod',
          name: 'web-1',
          namespace: 'shop',
          workload: 'Deployment/web',
          node: 'n1',
          zone: 'zone-a',
        }
      : ip === '10.0.2.7'
        ? {
            kind: 'pod',
            name: 'db-0',
            namespace: 'data',
            workload: 'StatefulSet/db',
            node: 'n2',
            zone: 'zone-b',
          }
        : undefined,
  nodeZone: (n) => (n === 'n1' ? 'zone-a' : n === 'n2' ? 'zone-b' : undefined),
  nodeRegion: () => 'region-1',
};

let ch: ClickHouse;
beforeAll(async () => {
  ch = await ClickHouse.start();
}, 30_000);
afterAll(() => ch?.close());

it('the ClickHouse recipe: every record in podflow.flows with its bytes, time and cross_zone', async () => {
  expect(DDL).toContain('CREATE TABLE');
  expect(SINK_URL).toContain('FORMAT%20JSONEachRow');
  // The doc's table, and the same once more for the gzipped sink of the sinks map.
  const statements = DDL.split(';').filter((s) => s.trim() !== '');
  for (const s of statements) await ch.query(s);
  await ch.query(statements[1].replace('podflow.flows', 'podflow.flows_gz'));
  const url = SINK_URL.replace('http://ch:8123', ch.url);
  const file = join(mkdtempSync(join(tmpdir(), 'podflow-ch-')), 'exporter.yaml');
  writeFileSync(
    file,
    [
      'sinks:',
      '  clickhouse-gz:',
      '    http:',
      `      url: "${url.replace('podflow.flows', 'podflow.flows_gz')}"`,
      '      compression: gzip',
      // Not a column: skipped by input_format_skip_unknown_fields.
      '      fields: {team: payments}',
      '',
    ].join('\n'),
  );
  const config = loadConfig({
    command: 'exporter',
    flags: { config: file, 'http-sink-url': url },
    env: {},
  });
  const backlog = new Backlog({ backlogMaxFlows: 1000 });
  const client = new InProcessCollectorClient(backlog, { node: 'n1', source: 'netfilter' });
  const graph = createExportGraph(config, {
    discovery: staticDiscovery([client]),
    registry: new Registry(),
    log: silentLogger,
    cluster,
  });
  const end = Date.UTC(2026, 0, 2, 3, 4, 5);
  let tx = 0;
  for (let t = 0; t < 2; t++) {
    const flows: Flow[] = [
      {
        src: '10.0.1.5',
        dst: '10.0.2.7',
        proto: 6,
        txBytes: 100 + t,
        rxBytes: 1,
        txPackets: 1,
        rxPackets: 1,
      },
      {
        src: '10.0.1.5',
        dst: '8.8.8.8',
        proto: 17,
        txBytes: 200 + t,
        rxBytes: 2,
        txPackets: 1,
        rxPackets: 1,
      },
    ];
    for (const f of flows) tx += f.txBytes;
    backlog.append(end - 15_000 + t * 1000, end + t * 1000, flows);
    await graph.pipeline.runOnce();
  }
  expect(backlog.acked).toBe(backlog.last);
  await graph.pipeline.close(Date.now() + 1000);
  for (const table of ['podflow.flows', 'podflow.flows_gz']) {
    const rows = (
      await ch.query(
        `SELECT toUnixTimestamp(ts) AS t, dst_ip, dst_namespace, cross_zone, proto, tx_bytes FROM ${table} ORDER BY t, dst_ip FORMAT JSONEachRow`,
      )
    )
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(rows).toHaveLength(4);
    // UInt64 comes back quoted.
    expect(rows.reduce((a, r) => a + Number(r.tx_bytes), 0)).toBe(tx);
    expect(rows.slice(0, 2)).toEqual([
      {
        t: end / 1000,
        dst_ip: '10.0.2.7',
        dst_namespace: 'data',
        cross_zone: 1,
        proto: 'TCP',
        tx_bytes: '100',
      },
      { t: end / 1000, dst_ip: '8.8.8.8', dst_namespace: '', cross_zone: 0, proto: 'UDP', tx_bytes: '200' },
    ]);
  }
}, 30_000);
