// `prom_remote_write` sinks of a real exporter process writing to a real Prometheus
// (--web.enable-remote-write-receiver) and a real VictoriaMetrics: the PromQL totals, increase()
// summed over series, equal the bytes and packets the collector was given, exactly — after a
// receiver outage (the write retries, the batches wait on the collector) and after the exporter was
// killed (SIGKILL) while a receiver was away (the next process starts its totals at 0 after a 0
// sample, which the receivers read as a counter reset, and counts what the dead one had not
// written). Exact because every write carries every series at one timestamp and every series
// starts with a 0 sample: increase() then has nothing to extrapolate when asked at that timestamp.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Flow } from '../shared/flow.js';
import { type Podflow, startPodflow } from './helpers/podflow.js';
import { freePort } from './helpers/ports.js';
import { type Prometheus, type PromSample, startPrometheus } from './helpers/prometheus.js';
import { startTestCollector, type TestCollector } from './helpers/test-collector.js';
import { VictoriaMetrics } from './helpers/victoria-metrics.js';
import { waitFor } from './helpers/wait.js';

const PEERS = ['8.8.8.8', '1.1.1.1', '9.9.9.9'];

interface Queryable {
  query(promql: string, time?: number): Promise<PromSample[]>;
}

describe('prom_remote_write into Prometheus and VictoriaMetrics', () => {
  let prom: Prometheus;
  let vm: VictoriaMetrics;
  let c: TestCollector;
  let exporter: Podflow | undefined;
  let config = '';
  let port = 0;
  let seq = 0;
  const given = { tx: 0, rx: 0, txp: 0, rxp: 0 };

  beforeAll(async () => {
    [prom, vm, c, port] = await Promise.all([
      startPrometheus({ targets: [], extraArgs: ['--web.enable-remote-write-receiver'] }),
      VictoriaMetrics.start(),
      startTestCollector('node-1', { bootId: 'b00t' }),
      freePort(),
    ]);
    config = join(mkdtempSync(join(tmpdir(), 'podflow-rw-')), 'exporter.yaml');
    // egressd's format: a sinks map with a prom_remote_write entry per receiver, static labels.
    writeFileSync(
      config,
      [
        'exportInterval: 200ms',
        'sinks:',
        '  prom:',
        '    prom_remote_write:',
        `      url: ${prom.url}/api/v1/write`,
        '      labels:',
        '        env: test',
        '  vm:',
        '    prom_remote_write:',
        // biome-ignore lint/suspicious/noTemplateCurlyInString: the ${ENV} syntax of the file
        '      url: "http://${VM_ADDR}/api/v1/write"',
        '      headers:',
        '        X-Scope-OrgID: team-a',
        '      labels:',
        '        env: test',
        '',
      ].join('\n'),
    );
    await start();
  }, 60_000);

  afterAll(async () => {
    await exporter?.stop('SIGKILL');
    await Promise.all([prom?.stop(), vm?.close(), c?.close()]);
  });

  async function start(): Promise<void> {
    exporter = startPodflow(
      [
        'exporter',
        '--config',
        config,
        '--collectors',
        c.url,
        '--listen',
        `127.0.0.1:${port}`,
        '--pod-name',
        'exporter-0',
        '--log-level',
        'error',
      ],
      { env: { VM_ADDR: `127.0.0.1:${vm.port}` }, stderr: 'inherit' },
    );
    await exporter.ready();
  }

  /**
   * One collector interval: the same three peers every time (so every series goes on), new counts,
   * bytes times `scale`.
   */
  function append(scale = 1): void {
    seq++;
    const flows: Flow[] = PEERS.map((dst, i) => ({
      src: '10.0.0.1',
      dst,
      proto: 6,
      txBytes: scale * (1000 * seq + i),
      rxBytes: 7 * seq + i,
      txPackets: seq,
      rxPackets: i + 1,
    }));
    for (const f of flows) {
      given.tx += f.txBytes;
      given.rx += f.rxBytes;
      given.txp += f.txPackets;
      given.rxp += f.rxPackets;
    }
    c.backlog.append(seq * 1000, seq * 1000 + 1000, flows);
  }

  const acked = (what: string) =>
    waitFor(what, async () => (c.backlog.acked === c.backlog.last ? true : undefined), 20_000);

  /** What the receiver sums with increase() at its last write's timestamp, per counter. */
  async function totals(q: Queryable) {
    const [last] = await q.query('max(timestamp(podflow_transmit_bytes_total{env="test"}))');
    const at = last.value;
    const sum = async (name: string) => {
      const r = await q.query(`sum(increase(podflow_${name}_total{env="test"}[1h]))`, at);
      return r[0]?.value;
    };
    return {
      tx: await sum('transmit_bytes'),
      rx: await sum('received_bytes'),
      txp: await sum('transmit_packets'),
      rxp: await sum('received_packets'),
    };
  }

  /**
   * Both receivers' totals equal what was given. VictoriaMetrics makes what it took searchable a
   * moment later (its ingestion buffers): asked until it agrees, for at most 10 s.
   */
  async function expectExact(): Promise<void> {
    expect(await totals(prom)).toEqual(given);
    let got: unknown;
    await waitFor(
      'VictoriaMetrics totals',
      async () => {
        got = await totals(vm);
        return JSON.stringify(got) === JSON.stringify(given) ? true : undefined;
      },
      10_000,
    ).catch(() => undefined);
    expect(got).toEqual(given);
    // Same names and labels as /metrics, plus the static label.
    const [series] = await prom.query('podflow_transmit_bytes_total{dst_ip="8.8.8.8"}');
    expect(series.metric).toMatchObject({
      __name__: 'podflow_transmit_bytes_total',
      env: 'test',
      dst_ip: '8.8.8.8',
      dst_type: 'public',
      proto: 'TCP',
      cross_zone: 'false',
    });
  }

  it('writes totals that increase() sums exactly', async () => {
    // A first interval far larger than the next: without a 0 before it, increase() would not count
    // it (Prometheus extrapolates towards 0 only as far as half an interval).
    for (let i = 0; i < 3; i++) {
      append(i === 0 ? 100 : 1);
      await acked(`batch ${seq} written to both`);
    }
    await expectExact();
  }, 30_000);

  it('a receiver outage: the write retries, the batches wait on the collector, then arrive once', async () => {
    await vm.stop();
    append();
    append();
    // Prometheus takes them (its cursor moves), VictoriaMetrics cannot: the collector keeps them.
    await waitFor(
      'prom cursor',
      async () => (c.backlog.sinkCursors().prom === seq ? true : undefined),
      20_000,
    );
    await new Promise((r) => setTimeout(r, 1000));
    expect(c.backlog.acked).toBeLessThan(seq);
    await vm.start();
    await acked('written to VictoriaMetrics after the outage');
    await expectExact();
  }, 60_000);

  it('an exporter killed while a receiver is away: the next process continues the totals', async () => {
    await vm.stop();
    // Larger than everything before: the new process's first totals exceed the old ones, so only
    // its 0 sample tells the receivers that the counters started over.
    append(100);
    await waitFor(
      'prom cursor',
      async () => (c.backlog.sinkCursors().prom === seq ? true : undefined),
      20_000,
    );
    await exporter!.stop('SIGKILL');
    await vm.start();
    await start();
    append(100);
    append();
    await acked('written by the new process');
    await expectExact();
  }, 60_000);
});
