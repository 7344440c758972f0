// `podflow exporter` with Kubernetes: the real client against the test API server gives collector
// discovery (a collector pod whose IP is loopback, port of a real collector server) and the cluster
// view for enrichment; a real Prometheus scrapes the exporter and the test queries it.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { Backlog } from '../collector/backlog.js';
import { createCollectorMetrics } from '../collector/metrics.js';
import { createCollectorServer } from '../collector/server.js';
import type { Flow } from '../shared/flow.js';
import { silentLogger } from '../shared/log.js';
import { HttpReceiver } from './helpers/http-receiver.js';
import { startPodflow } from './helpers/podflow.js';
import { freePort } from './helpers/ports.js';
import { startPrometheus } from './helpers/prometheus.js';
import { waitFor } from './helpers/wait.js';
import { startHarness } from './kube-api-server/harness.js';
import { node, pod, replicaSet } from './kube-api-server/objects.js';

const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f().catch(() => {});
});

const flow = (src: string, dst: string, tx: number, proto = 6): Flow => ({
  src,
  dst,
  proto,
  txBytes: tx,
  rxBytes: 2 * tx,
  txPackets: 1,
  rxPackets: 2,
});

const COLLECTOR = { 'app.kubernetes.io/name': 'podflow', 'app.kubernetes.io/component': 'collector' };

describe('podflow exporter with Kubernetes', () => {
  it('discovers collectors, enriches with pods, nodes and zones, and Prometheus scrapes it', async () => {
    // A real collector server: its pod's IP is 127.0.0.1, its port the pull API port.
    const backlog = new Backlog({ backlogMaxFlows: 10_000 });
    const registry = new Registry();
    const collector = createCollectorServer(
      { listen: { host: '127.0.0.1', port: 0 } },
      {
        backlog,
        node: 'node-a',
        source: 'netfilter' as const,
        metrics: createCollectorMetrics(registry, { backlog: () => backlog.stats() }),
        log: silentLogger,
        registry,
        notReady: () => undefined,
      },
    );
    const collectorPort = (await collector.start()).port;
    cleanup.push(() => collector.close());

    const h = await startHarness();
    cleanup.push(() => h.close());
    const s = h.server;
    s.create('nodes', node({ name: 'node-a', zone: 'zone-a', internalIPs: ['192.168.0.1'] }));
    s.create('nodes', node({ name: 'node-b', zone: 'zone-b', internalIPs: ['192.168.0.2'] }));
    s.create('replicasets', replicaSet('web-7d9f', 'shop', { kind: 'Deployment', name: 'web' }));
    s.create(
      'pods',
      pod({
        name: 'web-7d9f-abcde',
        namespace: 'shop',
        node: 'node-a',
        ips: ['10.0.1.5'],
        owner: { kind: 'ReplicaSet', name: 'web-7d9f' },
      }),
    );
    s.create(
      'pods',
      pod({
        name: 'db-0',
        namespace: 'shop',
        node: 'node-b',
        ips: ['10.0.2.7'],
        owner: { kind: 'StatefulSet', name: 'db' },
      }),
    );
    s.create(
      'pods',
      pod({
        name: 'podflow-collector-x',
        namespace: 'podflow',
        node: 'node-a',
        ips: ['127.0.0.1'],
        labels: COLLECTOR,
      }),
    );

    backlog.append(0, 5000, [
      flow('10.0.1.5', '10.0.2.7', 1000), // pod → pod in another zone
      flow('10.0.1.5', '192.168.0.2', 50), // pod → node
      flow('10.0.1.5', '8.8.8.8', 7, 17), // pod → internet
    ]);

    const rx = await HttpReceiver.start();
    cleanup.push(() => rx.close());
    const port = await freePort();
    const home = mkdtempSync(join(tmpdir(), 'pf-home-'));
    cleanup.push(async () => rmSync(home, { recursive: true, force: true }));
    const child = startPodflow(
      [
        'exporter',
        '--kubeconfig',
        h.kubeconfigPath,
        '--namespace',
        'podflow',
        '--collector-port',
        String(collectorPort),
        '--listen',
        `127.0.0.1:${port}`,
        '--export-interval',
        '300ms',
        '--http-sink-url',
        rx.url,
      ],
      { env: { HOME: home } },
    );
    cleanup.push(async () => {
      await child.stop('SIGKILL');
    });

    await child.ready('/readyz', 30_000);
    await waitFor(
      'collector acknowledged',
      async () => (backlog.stats().batches === 0 ? true : undefined),
      30_000,
    );

    const prom = await startPrometheus({ targets: [`127.0.0.1:${port}`], scrapeInterval: '1s' });
    cleanup.push(() => prom.stop());
    await prom.waitScraped();

    const podToPod = await prom.query(
      'podflow_transmit_bytes_total{src_pod="web-7d9f-abcde",dst_type="pod"}',
    );
    expect(podToPod).toHaveLength(1);
    expect(podToPod[0].value).toBe(1000);
    expect(podToPod[0].metric).toMatchObject({
      src_namespace: 'shop',
      src_workload: 'Deployment/web',
      src_node: 'node-a',
      src_zone: 'zone-a',
      dst_namespace: 'shop',
      dst_pod: 'db-0',
      dst_workload: 'StatefulSet/db',
      dst_node: 'node-b',
      dst_zone: 'zone-b',
      cross_zone: 'true',
      proto: 'TCP',
    });
    // Prometheus drops empty labels: dst_ip is absent for pod peers.
    expect(podToPod[0].metric.dst_ip).toBeUndefined();
    expect(await prom.scalar('podflow_received_bytes_total{dst_type="node",dst_node="node-b"}')).toBe(100);
    const pub = await prom.query('podflow_transmit_bytes_total{dst_type="public"}');
    expect(pub.map((p) => [p.metric.dst_ip, p.metric.proto, p.value])).toEqual([['8.8.8.8', 'UDP', 7]]);
    expect(await prom.scalar('sum(podflow_transmit_bytes_total)')).toBe(1057);
    expect(await prom.scalar('sum(podflow_transmit_packets_total)')).toBe(3);
    expect(
      await prom.scalar(`podflow_exporter_pulls_total{collector="http://127.0.0.1:${collectorPort}"}`),
    ).toBeGreaterThan(0);

    await waitFor(
      'records posted',
      async () => (rx.acceptedRecords().length === 3 ? true : undefined),
      30_000,
    );
    const rec = rx.acceptedRecords().find((r) => r.dst_pod === 'db-0')!;
    expect(rec).toMatchObject({
      src_workload: 'Deployment/web',
      cross_zone: true,
      dst_ip: '10.0.2.7',
      tx_bytes: 1000,
    });

    const { code } = await child.stop('SIGTERM');
    expect(code, child.log).toBe(0);
  });
});
