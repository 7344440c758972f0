// The in-process collector client against the real export pipeline: the same delivery semantics as
// the HTTP pull API (pending until every sink took a batch, nothing counted twice, nothing lost).
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { Backlog } from '../collector/backlog.js';
import { createCollectorMetrics } from '../collector/metrics.js';
import { Enricher, emptyClusterLookup } from '../exporter/enrich.js';
import { Pipeline, staticDiscovery } from '../exporter/pipeline.js';
import { PrometheusSink } from '../exporter/prometheus-sink.js';
import { PullError } from '../exporter/pull.js';
import type { Sink } from '../exporter/sink.js';
import { FLOW_LABELS } from '../shared/config.js';
import type { EnrichedFlow, Flow } from '../shared/flow.js';
import { silentLogger } from '../shared/log.js';
import { LocalCollectorClient } from './standalone.js';

const flow = (dst: string, tx: number, rx: number): Flow => ({
  src: '192.168.1.10',
  dst,
  proto: 6,
  txBytes: tx,
  rxBytes: rx,
  txPackets: 1,
  rxPackets: 1,
});

/** A sink that fails while `failing` is set and records what it accepted. */
class FlakySink implements Sink {
  readonly name = 'flaky';
  failing = false;
  accepted: EnrichedFlow[] = [];
  async push(flows: readonly EnrichedFlow[]): Promise<void> {
    if (this.failing) throw new Error('receiver down');
    this.accepted.push(...flows);
  }
  async close(): Promise<void> {}
}

function setup() {
  const registry = new Registry();
  const backlog = new Backlog({ backlogMaxFlows: 1000 });
  const metrics = createCollectorMetrics(registry, { backlog: () => backlog.stats() });
  const client = new LocalCollectorClient(backlog, {
    node: 'laptop',
    source: { name: 'netfilter' },
    metrics,
  });
  const prometheus = new PrometheusSink(
    { metricsPrefix: 'podflow', metricsLabels: [...FLOW_LABELS], metricsTtl: 0, metricsPodIps: false },
    { registry },
  );
  const flaky = new FlakySink();
  const pipeline = new Pipeline(
    { exportInterval: 1000, pullConcurrency: 1, pullTimeout: 5000 },
    {
      discovery: staticDiscovery([client]),
      enricher: new Enricher({ groupPublicIps: false }, { cluster: emptyClusterLookup, log: silentLogger }),
      sinks: [prometheus, flaky],
      log: silentLogger,
    },
  );
  const total = async (name: string) =>
    (await registry.getSingleMetric(name)!.get()).values.reduce((n, v) => n + v.value, 0);
  return { backlog, client, pipeline, flaky, total, registry };
}

describe('LocalCollectorClient', () => {
  it('pulls pending batches with the node and boot id, and acknowledges like the HTTP API', async () => {
    const { backlog, client } = setup();
    backlog.append(0, 1000, [flow('10.0.0.2', 10, 20)]);
    const signal = new AbortController().signal;
    const r = await client.pull(signal);
    expect(r).toMatchObject({ version: 1, bootId: backlog.bootId, node: 'laptop', source: 'netfilter' });
    expect(r.batches.map((b) => b.seq)).toEqual([1]);
    await expect(client.ack('someone-else', 1, signal)).rejects.toThrow(PullError);
    await expect(client.ack('someone-else', 1, signal)).rejects.toMatchObject({ reason: 'boot' });
    expect(backlog.stats().batches).toBe(1);
    await client.ack(backlog.bootId, 1, signal);
    expect(backlog.stats().batches).toBe(0);
  });

  it('feeds the pipeline: counted once, kept while a sink fails, delivered to it later', async () => {
    const { backlog, pipeline, flaky, total } = setup();
    backlog.append(0, 1000, [flow('10.0.0.2', 100, 1000), flow('8.8.8.8', 5, 7)]);
    flaky.failing = true;
    const first = await pipeline.runOnce();
    expect(first.failedSinks).toEqual(['flaky']);
    // Prometheus took it; the flaky sink did not: the batch stays pending.
    expect(await total('podflow_transmit_bytes_total')).toBe(105);
    expect(backlog.stats().batches).toBe(1);

    backlog.append(1000, 2000, [flow('10.0.0.2', 1, 2)]);
    flaky.failing = false;
    const second = await pipeline.runOnce();
    expect(second.failedSinks).toEqual([]);
    // Prometheus counts batch 1 once only; the flaky sink now has both batches.
    expect(await total('podflow_transmit_bytes_total')).toBe(106);
    expect(await total('podflow_received_bytes_total')).toBe(1009);
    expect(flaky.accepted.reduce((n, f) => n + f.txBytes, 0)).toBe(106);
    expect(backlog.stats()).toMatchObject({ batches: 0, flows: 0 });
    // No Kubernetes: the local endpoint is the node itself.
    expect(flaky.accepted[0]).toMatchObject({ srcNode: 'laptop', srcPod: '', dstType: 'private' });
    expect(flaky.accepted.find((f) => f.dstIp === '8.8.8.8')?.dstType).toBe('public');
  });

  it('counts pulls and acks in the collector self-metrics', async () => {
    const { backlog, pipeline, registry } = setup();
    backlog.append(0, 1000, [flow('10.0.0.2', 1, 1)]);
    await pipeline.runOnce();
    const text = await registry.metrics();
    expect(text).toMatch(/^podflow_collector_pulls_total 1$/m);
    expect(text).toMatch(/^podflow_collector_acks_total\{result="ok"\} 1$/m);
  });
});
