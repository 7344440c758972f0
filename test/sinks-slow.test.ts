// One slow and one dead sink of a `sinks:` map in a real `podflow exporter` process, next to a healthy
// `http` sink and a `prom_remote_write` to a real VictoriaMetrics: the healthy ones are fed every
// round and /metrics keeps counting, the collector is acknowledged only once every sink took a
// batch, and when the two come back they get everything once (deduplicated by Idempotency-Key).
// Round durations and the healthy sinks' delivery lag are printed for docs/exporter.md, with all
// sinks healthy (the floor) and during the outage.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { HttpReceiver, type ReceivedRequest } from './helpers/http-receiver.js';
import { startPodflow } from './helpers/podflow.js';
import { freePort } from './helpers/ports.js';
import { startTestCollector } from './helpers/test-collector.js';
import { VictoriaMetrics } from './helpers/victoria-metrics.js';
import { waitFor } from './helpers/wait.js';

const INTERVAL_MS = 300;
const FEED_MS = 170;

const cleanup: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const f of cleanup.splice(0).reverse()) await f().catch(() => undefined);
});

/** Records of 2xx requests, first request per Idempotency-Key only (what a deduplicating receiver keeps). */
function deduped(requests: readonly ReceivedRequest[]): Record<string, unknown>[] {
  const seen = new Set<string>();
  const out: Record<string, unknown>[] = [];
  for (const r of requests) {
    if (typeof r.answer !== 'number' || r.answer >= 300) continue;
    const key = String(r.headers['idempotency-key']);
    if (seen.has(key)) continue;
    seen.add(key);
    for (const l of r.body.toString('utf8').split('\n')) if (l !== '') out.push(JSON.parse(l));
  }
  return out;
}

const sumOf = (text: string, name: string) =>
  text
    .split('\n')
    .filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `))
    .reduce((a, l) => a + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? Number.NaN : s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

it('a hung and a dead sink delay neither the healthy sinks nor /metrics; once back they get everything once', async () => {
  const [vm, c, logs, slow, deadPort, port] = await Promise.all([
    VictoriaMetrics.start(),
    startTestCollector('node-1', { bootId: 'b00t' }),
    HttpReceiver.start(),
    HttpReceiver.start(),
    freePort(),
    freePort(),
  ]);
  cleanup.push(
    () => vm.close(),
    () => c.close(),
    () => logs.close(),
    () => slow.close(),
  );
  let dead = await HttpReceiver.start(deadPort);
  const deadRequests: ReceivedRequest[] = [];
  const file = join(mkdtempSync(join(tmpdir(), 'podflow-slow-')), 'exporter.yaml');
  writeFileSync(
    file,
    [
      `exportInterval: ${INTERVAL_MS}ms`,
      'sinks:',
      '  logs:',
      '    http:',
      `      url: ${logs.url}`,
      '  slow:',
      '    http:',
      `      url: ${slow.url}`,
      // A hung request stays in flight, not timed out and retried, for the whole outage.
      '      timeout: 60s',
      '      queue_max: 1000',
      '  dead:',
      '    http:',
      `      url: ${dead.url}`,
      // Refused connections fail the push quickly; the pipeline offers the batches again next round.
      '      max_retries: 1',
      '  vm:',
      '    prom_remote_write:',
      `      url: ${vm.url}/api/v1/write`,
      '',
    ].join('\n'),
  );
  const exporter = startPodflow([
    'exporter',
    ...['--config', file, '--collectors', c.url, '--listen', `127.0.0.1:${port}`],
    ...['--pod-name', 'exporter-0', '--log-level', 'debug'],
  ]);
  cleanup.push(async () => {
    await exporter.stop('SIGKILL');
  });
  // Round durations from the exporter's own debug line, stamped on arrival.
  const rounds: { at: number; ms: number }[] = [];
  let partial = '';
  exporter.proc.stderr?.on('data', (d: Buffer) => {
    const lines = (partial + d.toString('utf8')).split('\n');
    partial = lines.pop() ?? '';
    for (const l of lines) {
      if (!l.includes('"export round"')) continue;
      rounds.push({ at: Date.now(), ms: (JSON.parse(l) as { ms: number }).ms });
    }
  });

  // One batch every FEED_MS, one flow each, its peer naming the batch.
  const appended: number[] = [];
  const flows = { n: 0, tx: 0 };
  const feed = () => {
    const n = appended.length;
    const tx = 1000 + n;
    c.backlog.append(n * INTERVAL_MS, (n + 1) * INTERVAL_MS, [
      {
        src: '10.0.0.1',
        dst: `198.51.100.${n}`,
        proto: 17,
        txBytes: tx,
        rxBytes: 1,
        txPackets: 1,
        rxPackets: 1,
      },
    ]);
    appended.push(Date.now());
    flows.n++;
    flows.tx += tx;
  };
  const { base } = exporter;
  await exporter.ready('/readyz');
  const scrape = async () =>
    sumOf(await (await fetch(`${base}/metrics`)).text(), 'podflow_transmit_bytes_total');
  const phase = async (ms: number) => {
    const began = Date.now();
    const batches = appended.length;
    // Not a multiple of the interval: batches arrive at every point of a round's cycle.
    const traffic = setInterval(feed, FEED_MS);
    // Prometheus scrapes meanwhile (the /metrics sink's batches are for good once served).
    while (Date.now() - began < ms) {
      await new Promise((r) => setTimeout(r, 500));
      await scrape();
    }
    clearInterval(traffic);
    return { began, batches, end: appended.length };
  };
  /**
   * When each batch reached VictoriaMetrics: the timestamp of its series' first non-zero sample,
   * which is the time the exporter made the write (one timestamp per write, the exporter's clock).
   */
  const vmAt: number[] = [];
  const vmWrites = async () => {
    await fetch(`${vm.url}/internal/force_flush`);
    const text = await (await fetch(`${vm.url}/api/v1/export?match[]=podflow_transmit_bytes_total`)).text();
    for (const line of text.split('\n')) {
      if (line === '') continue;
      const s = JSON.parse(line) as { metric: { dst_ip: string }; values: number[]; timestamps: number[] };
      const i = s.values.findIndex((v) => v > 0);
      vmAt[Number(s.metric.dst_ip.split('.')[3])] = s.timestamps[i];
    }
  };
  /** Per batch of [from, to): time until the healthy http receiver and VictoriaMetrics had it. */
  const lags = (from: number, to: number) => {
    const first = new Map<number, number>();
    for (const r of logs.requests) {
      for (const rec of deduped([r])) {
        const n = Number(String(rec.dst_ip).split('.')[3]);
        if (!first.has(n)) first.set(n, r.at);
      }
    }
    const http: number[] = [];
    const rw: number[] = [];
    for (let n = from; n < to; n++) {
      http.push((first.get(n) ?? Number.NaN) - appended[n]);
      rw.push((vmAt[n] ?? Number.NaN) - appended[n]);
    }
    return { http, rw };
  };
  const roundsIn = (from: number, to: number) =>
    rounds.filter((r) => r.at >= from && r.at < to).map((r) => r.ms);
  const caughtUp = (what: string) =>
    waitFor(what, async () => {
      const n = appended.length;
      const vmTotal = (await vm.query('sum(podflow_transmit_bytes_total)'))[0]?.value;
      const ok = (await scrape()) === flows.tx && vmTotal === flows.tx && deduped(logs.requests).length === n;
      return ok ? true : undefined;
    });

  // All healthy: the floor.
  const healthy = await phase(3000);
  await caughtUp('healthy sinks caught up');
  await waitFor('all acknowledged', async () => {
    await scrape();
    return c.backlog.acked === c.backlog.last ? true : undefined;
  });

  // `slow` hangs every request, `dead` refuses connections.
  slow.otherwise({ status: 200, delayMs: 60_000 });
  deadRequests.push(...dead.requests);
  await dead.close();
  const ackedBefore = c.backlog.acked;
  const outage = await phase(4000);
  await caughtUp('healthy sinks fed during the outage');
  const outageEnd = Date.now();
  // The collector waits for the two: nothing more acknowledged, every batch of the outage kept.
  expect(c.backlog.acked).toBe(ackedBefore);
  expect(c.backlog.stats().batches).toBe(outage.end - outage.batches);
  await waitFor('cursors of the healthy sinks reported', async () => {
    const cur = c.backlog.sinkCursors();
    return cur.logs === c.backlog.last && cur.vm === c.backlog.last ? true : undefined;
  });
  // One request of `slow` hangs; nothing of the collector is posted to it again meanwhile.
  expect(slow.requests.filter((r) => r.at >= outage.began)).toHaveLength(1);

  // Both come back: every batch arrives once at each, the collector is acknowledged.
  slow.otherwise({ status: 200 });
  slow.cut();
  dead = await HttpReceiver.start(deadPort);
  cleanup.push(() => dead.close());
  const back = Date.now();
  await waitFor('collector acknowledged', async () => {
    await scrape();
    return c.backlog.acked === c.backlog.last ? true : undefined;
  });
  const recovered = Date.now() - back;
  const all = [...deadRequests, ...dead.requests];
  for (const records of [deduped(logs.requests), deduped(slow.requests), deduped(all)]) {
    expect(records).toHaveLength(flows.n);
    expect(records.reduce((a, r) => a + Number(r.tx_bytes), 0)).toBe(flows.tx);
  }
  expect(await scrape()).toBe(flows.tx);
  await waitFor('VictoriaMetrics totals', async () => {
    const [s] = await vm.query('sum(podflow_transmit_bytes_total)');
    return s?.value === flows.tx ? true : undefined;
  });

  await vmWrites();
  const floor = lags(healthy.batches, healthy.end);
  const during = lags(outage.batches, outage.end);
  const r0 = roundsIn(healthy.began, outage.began);
  const r1 = roundsIn(outage.began, outageEnd);
  const fmt = (xs: number[]) => `median ${pct(xs, 50)} ms, p90 ${pct(xs, 90)} ms, max ${Math.max(...xs)} ms`;
  console.log(
    [
      `export interval ${INTERVAL_MS} ms, one batch every ${FEED_MS} ms`,
      `all healthy: ${r0.length} rounds (${fmt(r0)}); lag http ${fmt(floor.http)}; remote write ${fmt(floor.rw)}`,
      `slow hung + dead: ${r1.length} rounds (${fmt(r1)}); lag http ${fmt(during.http)}; remote write ${fmt(during.rw)}`,
      `back: collector acknowledged ${recovered} ms after both receivers answered again`,
    ].join('\n'),
  );
  // Healthy sinks fed every round during the outage: no batch waited for the hung one (60 s).
  expect(r1.length).toBeGreaterThanOrEqual(8);
  expect(Math.max(...during.http, ...during.rw)).toBeLessThan(5000);

  await exporter.stop('SIGTERM');
}, 60_000);
