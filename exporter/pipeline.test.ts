import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { Backlog } from '../collector/backlog.js';
import { FLOW_LABELS, loadConfig } from '../shared/config.js';
import type { EnrichedFlow, Flow, PullResponse } from '../shared/flow.js';
import { joinChunks, metricsChunks, metricsText } from '../shared/http.js';
import { silentLogger } from '../shared/log.js';
import { ManualClock } from '../test/fixtures/clock.js';
import { flow as base } from '../test/fixtures/flows.js';
import { Enricher, emptyClusterLookup } from './enrich.js';
import { InProcessCollectorClient } from './in-process.js';
import { ExporterMetrics } from './metrics.js';
import { createExportGraph, Pipeline, staticDiscovery } from './pipeline.js';
import { PrometheusSink } from './prometheus-sink.js';
import { type CollectorClient, PullError } from './pull.js';
import type { PushInfo, Sink } from './sink.js';

/** A sink that records what it accepted and refuses while `failing` is set. */
class RecordingSink implements Sink {
  accepted: EnrichedFlow[] = [];
  ids: string[] = [];
  refused = 0;
  failing = false;
  constructor(readonly name: string) {}
  async push(flows: readonly EnrichedFlow[], info?: PushInfo): Promise<void> {
    if (this.failing) {
      this.refused++;
      throw new Error(`${this.name} is down`);
    }
    this.accepted.push(...flows);
    this.ids.push(info?.id ?? '');
  }
  async close(): Promise<void> {}
  get txBytes(): number {
    return this.accepted.reduce((a, f) => a + f.txBytes, 0);
  }
}

/** Sum of one metric's samples in Prometheus text. */
const sumOf = (text: string, name: string) =>
  text
    .split('\n')
    .filter((l) => l.startsWith(`${name}{`))
    .reduce((a, l) => a + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);

const flow = (dst: string, txBytes: number): Flow =>
  base({ dst, txBytes, rxBytes: txBytes * 2, rxPackets: 1 });

/** A sink whose pushes wait until the test opens the gate: a receiver that hangs. */
class GatedSink extends RecordingSink {
  pushes = 0;
  private gate: Promise<void> = new Promise(() => {});
  private release: () => void = () => {};
  constructor(name: string) {
    super(name);
    this.hold();
  }
  /** Holds every push from now on. */
  hold(): void {
    this.gate = new Promise((r) => {
      this.release = r;
    });
  }
  open(): void {
    this.release();
    this.gate = Promise.resolve();
  }
  override async push(flows: readonly EnrichedFlow[], info?: PushInfo): Promise<void> {
    this.pushes++;
    await this.gate;
    return super.push(flows, info);
  }
}

function setup(collectors: CollectorClient[], sinkNames = ['a', 'b']) {
  const clock = new ManualClock();
  const registry = new Registry();
  const metrics = new ExporterMetrics(registry);
  const prometheus = new PrometheusSink(
    { metricsPrefix: 'podflow', metricsLabels: [...FLOW_LABELS], metricsTtl: 0, metricsPodIps: false },
    { registry },
  );
  const sinks = sinkNames.map((n) => new RecordingSink(n));
  const pipeline = new Pipeline(
    { exportInterval: 1000, pullConcurrency: 4, pullTimeout: 200 },
    {
      discovery: staticDiscovery(collectors),
      enricher: new Enricher({ groupPublicIps: false }, { cluster: emptyClusterLookup, log: silentLogger }),
      sinks: [prometheus, ...sinks],
      log: silentLogger,
      metrics,
    },
    clock,
  );
  const promTx = async () => sumOf(await metricsText(registry, prometheus), 'podflow_transmit_bytes_total');
  /** A scraper's complete response (what makes counted batches durable), summed. */
  const scrape = async () => {
    const text = await metricsChunks(registry, prometheus);
    const tx = sumOf(joinChunks(text), 'podflow_transmit_bytes_total');
    text.done?.(true);
    return tx;
  };
  return { registry, pipeline, sinks, promTx, scrape, clock };
}

const local = (backlog: Backlog, node: string) =>
  new InProcessCollectorClient(backlog, { node, source: 'netfilter' });

describe('Pipeline', () => {
  it('close({ finalRound }) exports what arrived after the last round, then stops the loop', async () => {
    const b = new Backlog({ backlogMaxFlows: 10_000 });
    const { pipeline, sinks, promTx, clock } = setup([local(b, 'n1')], ['a']);
    b.append(0, 1, [flow('10.0.0.2', 100)]);
    pipeline.start();
    await clock.elapse(50);
    expect(sinks[0]!.txBytes).toBe(100);
    // The collector's last read lands between two rounds (standalone shutdown).
    b.append(1, 2, [flow('10.0.0.2', 23)]);
    await clock.run(pipeline.close(clock.now() + 5000, { finalRound: true }));
    expect(sinks[0]!.txBytes).toBe(123);
    expect(await promTx()).toBe(123);
    expect(b.stats().batches).toBe(0);
    // No further round runs after close.
    b.append(2, 3, [flow('10.0.0.2', 1)]);
    await clock.elapse(1200);
    expect(sinks[0]!.txBytes).toBe(123);
  });

  it('closing with counts no scrape served yet: never served after, kept by the collector for the next exporter, totals exact', async () => {
    const b = new Backlog({ backlogMaxFlows: 10_000 });
    const first = setup([local(b, 'n1')], []);
    b.append(0, 1, [flow('10.0.0.2', 100)]);
    await first.pipeline.runOnce();
    // A scraper shows itself: from now on a counted batch is acknowledged once a scrape served it.
    expect(await first.scrape()).toBe(100);
    expect(b.stats().batches).toBe(0);
    b.append(1, 2, [flow('10.0.0.2', 23)]);
    await first.pipeline.runOnce();
    expect(b.stats().batches).toBe(1);
    await first.clock.run(first.pipeline.close(first.clock.now() + 1000));
    // A scrape while the process winds down: had it served 123, Prometheus would hold the 23 twice.
    expect(await first.scrape()).toBe(0);
    expect(b.stats().batches).toBe(1);
    const next = setup([local(b, 'n1')], []);
    await next.pipeline.runOnce();
    expect(await next.scrape()).toBe(23);
    expect(b.stats().batches).toBe(0);
  });

  it('a failing sink blocks the ack; on recovery it gets everything once and nobody counts twice', async () => {
    const b1 = new Backlog({ backlogMaxFlows: 10_000 });
    const b2 = new Backlog({ backlogMaxFlows: 10_000 });
    const { pipeline, sinks, promTx } = setup([local(b1, 'n1'), local(b2, 'n2')]);
    const [a, b] = sinks;

    b1.append(0, 5000, [flow('8.8.8.8', 100), flow('1.1.1.1', 10)]);
    b2.append(0, 5000, [flow('8.8.4.4', 1000)]);
    b.failing = true;
    let r = await pipeline.runOnce();
    expect(r).toMatchObject({ pulled: 2, flows: 3, failedSinks: ['b'], acked: 0 });
    expect(await promTx()).toBe(1110);
    expect(a.txBytes).toBe(1110);
    expect(b1.stats().batches).toBe(1); // not acknowledged: still on the collector

    b1.append(5000, 10_000, [flow('8.8.8.8', 7)]);
    r = await pipeline.runOnce();
    expect(r.failedSinks).toEqual(['b']);
    // Prometheus and sink a only took the new batch.
    expect(await promTx()).toBe(1117);
    expect(a.txBytes).toBe(1117);
    expect(a.accepted).toHaveLength(4);

    b.failing = false;
    r = await pipeline.runOnce();
    expect(r).toMatchObject({ failedSinks: [], acked: 2 });
    expect(b.txBytes).toBe(1117);
    expect(b.accepted).toHaveLength(4);
    expect(await promTx()).toBe(1117);
    expect(a.txBytes).toBe(1117);
    expect(b1.stats().batches).toBe(0);
    expect(b2.stats().batches).toBe(0);

    r = await pipeline.runOnce();
    expect(r).toMatchObject({ flows: 0, acked: 0 });
    expect(await promTx()).toBe(1117);
  });

  it('a slow sink delays only itself: the others take every round, nothing is in flight twice, the ack waits for it', async () => {
    const bl = new Backlog({ backlogMaxFlows: 10_000 });
    const registry = new Registry();
    const prometheus = new PrometheusSink(
      { metricsPrefix: 'podflow', metricsLabels: [...FLOW_LABELS], metricsTtl: 0, metricsPodIps: false },
      { registry },
    );
    const fast = new RecordingSink('fast');
    const slow = new GatedSink('slow');
    const clock = new ManualClock();
    const pipeline = new Pipeline(
      // A round waits for its pushes until the next one is due (300 ms), never longer.
      { exportInterval: 300, pullConcurrency: 4, pullTimeout: 200 },
      {
        discovery: staticDiscovery([local(bl, 'n1')]),
        enricher: new Enricher({ groupPublicIps: false }, { cluster: emptyClusterLookup, log: silentLogger }),
        sinks: [prometheus, fast, slow],
        log: silentLogger,
        metrics: new ExporterMetrics(registry),
      },
      clock,
    );
    const promTx = async () => sumOf(await metricsText(registry, prometheus), 'podflow_transmit_bytes_total');
    let total = 0;
    let t = 0;
    const tick = () => {
      total += 1 + t;
      bl.append(t * 1000, (t + 1) * 1000, [flow('8.8.8.8', 1 + t)]);
      t++;
    };
    // The first round hands the slow sink its push, which hangs; the round waits for it only until
    // the next round is due.
    tick();
    const first = clock.run(pipeline.runOnce());
    const r0 = await Promise.race([first, new Promise((r) => setTimeout(() => r('stuck'), 5000))]);
    expect(r0).toMatchObject({ failedSinks: [], busySinks: [], acked: 0 });
    expect(await promTx()).toBe(total);
    for (let round = 1; round < 4; round++) {
      tick();
      const began = clock.now();
      const r = await clock.run(pipeline.runOnce());
      expect(clock.now() - began).toBeLessThan(2000);
      expect(r).toMatchObject({ failedSinks: [], busySinks: ['slow'], acked: 0 });
      // Prometheus and the fast sink took this round's batch, once.
      expect(await promTx()).toBe(total);
      expect(fast.txBytes).toBe(total);
    }
    expect(slow.pushes).toBe(1);
    expect(bl.stats().batches).toBe(4);
    // The slow sink takes its push: the collector is acknowledged up to it at once, not a round later.
    slow.open();
    await clock.elapse(50);
    expect(slow.txBytes).toBe(1);
    expect(bl.stats().batches).toBe(3);
    // The next round gives it what it lacks, each batch once; everybody else nothing again.
    const r = await pipeline.runOnce();
    expect(r).toMatchObject({ failedSinks: [], busySinks: [], acked: 1 });
    expect(slow.txBytes).toBe(total);
    expect(slow.accepted).toHaveLength(4);
    expect(fast.accepted).toHaveLength(4);
    expect(await promTx()).toBe(total);
    expect(bl.stats().batches).toBe(0);
  });

  it('a sink failing for rounds while the backlog merges at its bound: the healthy sinks never count a batch twice', async () => {
    // Seven ticks per round, two flows each, always the same two keys: a merge halves what it joins.
    // The bound (13 flows) forces merges every round, and is small enough that the oldest batches
    // are all folded into one and then into the round's new ticks, unless the pull boundaries stop
    // it: that merge would hand the healthy sinks, as a new seq, flows they already took. With the
    // boundaries, each earlier pull keeps one batch of 2 flows, which fits for these 5 rounds
    // without a drop.
    const ROUNDS = 5;
    const TICKS = 7;
    const bl = new Backlog({ backlogMaxFlows: 13 });
    const { pipeline, sinks, promTx } = setup([local(bl, 'n1')], ['healthy', 'failing']);
    const [healthy, failing] = sinks;
    failing.failing = true;
    let total = 0;
    let t = 0;
    const tick = () => {
      const a = 1 + t / 100;
      const b = 7 + t / 10;
      total += a + b;
      bl.append(t, t + 1000, [flow('8.8.8.8', a), flow('1.1.1.1', b)]);
      t += 1000;
    };
    for (let round = 0; round < ROUNDS; round++) {
      for (let k = 0; k < TICKS; k++) tick();
      const r = await pipeline.runOnce();
      expect(r.failedSinks).toEqual(['failing']);
      expect(r.acked).toBe(0);
      expect(healthy.txBytes).toBe(total);
      expect(await promTx()).toBe(total);
    }
    const merged = bl.stats();
    expect(merged.merges).toBeGreaterThanOrEqual(ROUNDS * (TICKS - 1) - 2);
    expect(merged.droppedFlows).toBe(0);
    expect(merged.flows).toBeLessThanOrEqual(13);

    // Recovery: the failing sink gets every byte once, the healthy ones nothing again.
    failing.failing = false;
    let r = await pipeline.runOnce();
    expect(r).toMatchObject({ failedSinks: [], acked: 1 });
    expect(failing.txBytes).toBe(total);
    expect(healthy.txBytes).toBe(total);
    expect(await promTx()).toBe(total);
    expect(bl.stats()).toMatchObject({ batches: 0, flows: 0, droppedFlows: 0 });
    tick();
    r = await pipeline.runOnce();
    expect(r).toMatchObject({ failedSinks: [], acked: 1 });
    expect(failing.txBytes).toBe(total);
    expect(healthy.txBytes).toBe(total);
    expect(await promTx()).toBe(total);
  });

  it('--metrics-max-series (flag or env) caps the flow series; the rest is summed into _overflow_', async () => {
    expect(loadConfig({ command: 'exporter', flags: {}, env: {} }).metricsMaxSeries).toBe(200_000);
    expect(
      loadConfig({ command: 'standalone', flags: {}, env: { PODFLOW_METRICS_MAX_SERIES: '7' } })
        .metricsMaxSeries,
    ).toBe(7);
    expect(() => loadConfig({ command: 'exporter', flags: { 'metrics-max-series': '0' }, env: {} })).toThrow(
      /metrics-max-series/,
    );
    const config = loadConfig({ command: 'standalone', flags: { 'metrics-max-series': '2' }, env: {} });
    const bl = new Backlog({ backlogMaxFlows: 10_000 });
    const registry = new Registry();
    const graph = createExportGraph(config, {
      discovery: staticDiscovery([local(bl, 'n1')]),
      registry,
      log: silentLogger,
    });
    bl.append(0, 1000, [
      flow('8.8.8.8', 1),
      flow('8.8.4.4', 10),
      flow('1.1.1.1', 100),
      flow('9.9.9.9', 1000),
    ]);
    await graph.pipeline.runOnce();
    expect(graph.prometheus.seriesCount).toBe(2);
    const text = await metricsText(registry, graph.prometheus);
    expect(sumOf(text, 'podflow_transmit_bytes_total')).toBe(1111);
    const overflow = text
      .split('\n')
      .filter((l) => l.startsWith('podflow_transmit_bytes_total{src_namespace="_overflow_"'));
    expect(overflow).toHaveLength(1);
    expect(overflow[0]!.endsWith(' 1100')).toBe(true);
  });

  it('the same batches offered again get the same push id (Idempotency-Key)', async () => {
    const bl = new Backlog({ backlogMaxFlows: 10_000 });
    const { pipeline, sinks } = setup([local(bl, 'n1')], ['a', 'b']);
    bl.append(0, 5000, [flow('8.8.8.8', 1)]);
    sinks[1].failing = true;
    await pipeline.runOnce();
    const firstA = sinks[0].ids[0];
    sinks[1].failing = false;
    await pipeline.runOnce();
    expect(sinks[1].ids).toEqual([firstA]);
    expect(firstA).toMatch(/^[0-9a-f]{32}$/);
  });

  it('a refused range is offered again alone, with its id, before what came since', async () => {
    const bl = new Backlog({ backlogMaxFlows: 10_000 });
    const { pipeline, sinks } = setup([local(bl, 'n1')], ['a', 'b']);
    const [a, b] = sinks;
    b.failing = true;
    bl.append(0, 1000, [flow('8.8.8.8', 1)]);
    bl.append(1000, 2000, [flow('8.8.8.8', 2)]);
    await pipeline.runOnce();
    bl.append(2000, 3000, [flow('8.8.8.8', 4)]);
    await pipeline.runOnce();
    expect(b.refused).toBe(2); // the second round stopped at the refused range
    b.failing = false;
    bl.append(3000, 4000, [flow('8.8.8.8', 8)]);
    const r = await pipeline.runOnce();
    expect(r).toMatchObject({ failedSinks: [], acked: 1 });
    // b: first exactly the range it refused (seqs 1-2, the first pull), then the later pulls 3 and
    // 4, one push each, under the ids a got for the same stretches.
    expect(b.ids).toHaveLength(3);
    expect(b.ids).toEqual(a.ids);
    expect(new Set(b.ids).size).toBe(3);
    expect(b.accepted.map((f) => f.txBytes)).toEqual([1, 2, 4, 8]);
    expect(a.txBytes).toBe(15);
    expect(bl.stats().batches).toBe(0);
  });

  it('an exporter that dies between push and ack: the next one re-offers the push under the same id', async () => {
    // A receiver that, like an HTTP receiver honouring Idempotency-Key, takes each id once.
    const received = new Map<string, number>();
    class DedupSink implements Sink {
      ids: string[] = [];
      constructor(readonly name: string) {}
      async push(flows: readonly EnrichedFlow[], info?: PushInfo): Promise<void> {
        const id = info?.id ?? '';
        this.ids.push(id);
        if (!received.has(id))
          received.set(
            id,
            flows.reduce((a, f) => a + f.txBytes, 0),
          );
      }
      async close(): Promise<void> {}
    }
    const pipelineFor = (client: CollectorClient, sink: Sink) =>
      new Pipeline(
        { exportInterval: 1000, pullConcurrency: 1, pullTimeout: 200 },
        {
          discovery: staticDiscovery([client]),
          enricher: new Enricher(
            { groupPublicIps: false },
            { cluster: emptyClusterLookup, log: silentLogger },
          ),
          sinks: [sink],
          log: silentLogger,
        },
      );
    // A bound of 3 flows: the batches A pushed get merged while nobody acknowledges them.
    const bl = new Backlog({ backlogMaxFlows: 3 });
    const inner = local(bl, 'n1');
    const dying: CollectorClient = {
      id: inner.id,
      pull: (s) => inner.pull(s),
      ack: async () => {
        throw new PullError('network', 'ack: exporter killed before it acknowledged');
      },
    };
    const sinkA = new DedupSink('http');
    bl.append(0, 1000, [flow('8.8.8.8', 1)]);
    bl.append(1000, 2000, [flow('8.8.8.8', 2)]);
    const ra = await pipelineFor(dying, sinkA).runOnce();
    expect(ra.acked).toBe(0);
    expect(sinkA.ids).toHaveLength(1);
    expect(bl.stats().batches).toBe(2);
    // While no exporter runs, more arrives; the bound folds seqs 1 and 2 (one pull) together.
    bl.append(2000, 3000, [flow('1.1.1.1', 4)]);
    bl.append(3000, 4000, [flow('1.1.1.2', 8)]);
    expect(bl.stats().merges).toBe(1);
    // A new exporter process: no memory of what A delivered.
    const sinkB = new DedupSink('http');
    const rb = await pipelineFor(local(bl, 'n1'), sinkB).runOnce();
    expect(rb.acked).toBe(1);
    expect(sinkB.ids[0]).toBe(sinkA.ids[0]);
    expect(sinkB.ids).toHaveLength(2);
    expect([...received.values()].reduce((a, n) => a + n, 0)).toBe(1 + 2 + 4 + 8);
    expect(bl.stats().batches).toBe(0);
  });

  it('a collector without boundaries (older version): one push per round, keyed by what was delivered', async () => {
    const bl = new Backlog({ backlogMaxFlows: 10_000 });
    const inner = local(bl, 'n1');
    const old: CollectorClient = {
      id: inner.id,
      pull: async (s) => {
        const { boundaries: _b, acked: _a, ...rest } = await inner.pull(s);
        return rest;
      },
      ack: (boot, seq, s) => inner.ack(boot, seq, s),
    };
    const { pipeline, sinks } = setup([old], ['a', 'b']);
    const [a, b] = sinks;
    b.failing = true;
    bl.append(0, 1000, [flow('8.8.8.8', 1)]);
    await pipeline.runOnce();
    bl.append(1000, 2000, [flow('8.8.8.8', 2)]);
    bl.append(2000, 3000, [flow('8.8.8.8', 4)]);
    await pipeline.runOnce();
    b.failing = false;
    const r = await pipeline.runOnce();
    expect(r).toMatchObject({ failedSinks: [], acked: 1 });
    expect(a.ids).toHaveLength(2); // seq 1, then 2-3 in one push
    expect(b.ids).toEqual(a.ids); // the refused range alone, then the rest
    expect(b.accepted.map((f) => f.txBytes)).toEqual([1, 2, 4]);
  });

  it('a lost ack does not count batches twice', async () => {
    const bl = new Backlog({ backlogMaxFlows: 10_000 });
    const inner = local(bl, 'n1');
    let loseAcks = 1;
    const lossy: CollectorClient = {
      id: inner.id,
      pull: (s) => inner.pull(s),
      ack: async (boot, seq, s) => {
        if (loseAcks-- > 0) throw new PullError('network', 'ack: ECONNRESET');
        return inner.ack(boot, seq, s);
      },
    };
    const { pipeline, sinks, promTx, registry } = setup([lossy]);
    bl.append(0, 5000, [flow('8.8.8.8', 40)]);
    let r = await pipeline.runOnce();
    expect(r.acked).toBe(0);
    expect(bl.stats().batches).toBe(1);
    r = await pipeline.runOnce();
    expect(r).toMatchObject({ flows: 0, acked: 1 });
    expect(bl.stats().batches).toBe(0);
    expect(await promTx()).toBe(40);
    expect(sinks[0].txBytes).toBe(40);
    expect(await registry.getSingleMetricAsString('podflow_exporter_duplicate_batches_total')).toContain(
      'podflow_exporter_duplicate_batches_total{collector="local:n1"} 1',
    );
  });

  it('a restarted collector (new boot id) starts over', async () => {
    let bl = new Backlog({ backlogMaxFlows: 10_000 }, { bootId: 'one' });
    const client: CollectorClient = {
      id: 'c',
      pull: (s) => local(bl, 'n1').pull(s),
      ack: (boot, seq, s) => local(bl, 'n1').ack(boot, seq, s),
    };
    const { pipeline, promTx } = setup([client]);
    bl.append(0, 5000, [flow('8.8.8.8', 5)]);
    bl.append(5000, 10_000, [flow('8.8.8.8', 6)]);
    await pipeline.runOnce();
    bl = new Backlog({ backlogMaxFlows: 10_000 }, { bootId: 'two' });
    bl.append(10_000, 15_000, [flow('8.8.8.8', 7)]); // seq 1 again
    const r = await pipeline.runOnce();
    expect(r).toMatchObject({ flows: 1, acked: 1 });
    expect(await promTx()).toBe(18);
  });

  it('a corrupt, a dead and a hanging collector delay nobody and are counted per collector', async () => {
    const good = new Backlog({ backlogMaxFlows: 10_000 });
    good.append(0, 5000, [flow('8.8.8.8', 3)]);
    const corrupt: CollectorClient = {
      id: 'corrupt',
      pull: async () => {
        throw new PullError('decode', 'not a msgpack pull response');
      },
      ack: async () => {},
    };
    const hanging: CollectorClient = {
      id: 'hanging',
      pull: () => new Promise<PullResponse>(() => {}),
      ack: async () => {},
    };
    const dead: CollectorClient = {
      id: 'dead',
      pull: async () => {
        throw new TypeError('fetch failed');
      },
      ack: async () => {},
    };
    const { pipeline, promTx, registry, clock } = setup([corrupt, hanging, local(good, 'n1'), dead]);
    const began = clock.now();
    const r = await clock.run(pipeline.runOnce());
    expect(clock.now() - began).toBeLessThan(2000);
    expect(r).toMatchObject({ collectors: 4, pulled: 1, flows: 1, acked: 1 });
    expect(await promTx()).toBe(3);
    const text = await registry.getSingleMetricAsString('podflow_exporter_pull_errors_total');
    expect(text).toContain('podflow_exporter_pull_errors_total{collector="corrupt",reason="decode"} 1');
    expect(text).toContain('podflow_exporter_pull_errors_total{collector="hanging",reason="timeout"} 1');
    expect(text).toContain('podflow_exporter_pull_errors_total{collector="dead",reason="network"} 1');
  });

  it('an ack refused because the collector restarted forgets the old boot', async () => {
    const bl = new Backlog({ backlogMaxFlows: 10_000 });
    const inner = local(bl, 'n1');
    const client: CollectorClient = {
      id: 'c',
      pull: (s) => inner.pull(s),
      ack: async () => {
        throw new PullError('boot', 'ack: collector restarted');
      },
    };
    const { pipeline, registry } = setup([client]);
    bl.append(0, 1, [flow('8.8.8.8', 1)]);
    const r = await pipeline.runOnce();
    expect(r.acked).toBe(0);
    expect(await registry.getSingleMetricAsString('podflow_exporter_pull_errors_total')).toContain(
      'reason="boot"} 1',
    );
  });
});
