// `podflow exporter` as a process: static --collectors (real collector servers), the HTTP sink
// posting to a real receiver, /metrics, /healthz, /readyz, start-up errors and SIGTERM.
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createGzip } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import type { Flow } from '../shared/flow.js';
import { silentLogger } from '../shared/log.js';
import { encodePullResponse } from '../shared/pull-contract.js';
import { TokenFile } from '../shared/token.js';
import { HttpReceiver } from './helpers/http-receiver.js';
import { startPodflow } from './helpers/podflow.js';
import { freePort } from './helpers/ports.js';
import { startTestCollector } from './helpers/test-collector.js';
import { waitFor } from './helpers/wait.js';

const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function collector(node: string, bootId?: string) {
  const c = await startTestCollector(node, { bootId });
  cleanup.push(() => c.close());
  return c;
}

/** A podflow process, killed after the test should it still run. */
function podflow(args: string[], env: Record<string, string> = {}) {
  const p = startPodflow(args, { env });
  cleanup.push(async () => {
    await p.stop('SIGKILL');
  });
  return p;
}

/** Sum of a metric's samples in Prometheus text, optionally only those whose labels contain `match`. */
function sum(text: string, name: string, match = ''): number {
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (!line.includes(match)) continue;
    total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}

/** `${NAME}` as users write it in --http-sink-headers. */
const env = (name: string) => `$${'{'}${name}}`;

const flow = (src: string, dst: string, tx: number): Flow => ({
  src,
  dst,
  proto: 17,
  txBytes: tx,
  rxBytes: tx + 1,
  txPackets: 2,
  rxPackets: 3,
});

describe('podflow exporter', () => {
  it('pulls collectors, serves flow metrics and self-metrics, posts records, shuts down cleanly', async () => {
    const [c1, c2] = await Promise.all([collector('node-1'), collector('node-2')]);
    c1.backlog.append(0, 5000, [flow('10.0.0.1', '8.8.8.8', 100), flow('10.0.0.1', '10.5.0.9', 10)]);
    c2.backlog.append(0, 5000, [flow('10.0.1.1', '2001:db8::1', 1000)]);
    const rx = await HttpReceiver.start();
    cleanup.push(() => rx.close());
    rx.respond({ status: 503 }); // the first round's POST fails once, then is retried
    const port = await freePort();
    const p = podflow(
      [
        'exporter',
        '--collectors',
        `${c1.url},${c2.url},http://127.0.0.1:1`,
        '--listen',
        `127.0.0.1:${port}`,
        '--export-interval',
        '300ms',
        '--pull-timeout',
        '1s',
        '--http-sink-url',
        rx.url,
        '--http-sink-headers',
        `X-Api-Key=${env('KEY')}`,
      ],
      { KEY: 'k-123' },
    );
    const { base } = p;
    await p.ready('/healthz');
    await p.ready('/readyz');
    await waitFor('collectors acknowledged', async () =>
      c1.backlog.stats().batches === 0 && c2.backlog.stats().batches === 0 ? true : undefined,
    );
    const text = await (await fetch(`${base}/metrics`)).text();
    expect(sum(text, 'podflow_transmit_bytes_total')).toBe(1110);
    expect(sum(text, 'podflow_received_bytes_total')).toBe(1113);
    expect(sum(text, 'podflow_transmit_packets_total')).toBe(6);
    expect(sum(text, 'podflow_received_packets_total')).toBe(9);
    expect(text).toContain(
      'podflow_transmit_bytes_total{src_namespace="",src_pod="",src_workload="",src_node="node-1",src_zone="",src_region="",dst_namespace="",dst_pod="",dst_workload="",dst_node="",dst_zone="",dst_region="",dst_ip="8.8.8.8",dst_dns_name="",dst_type="public",traffic_class="internet",cross_zone="false",proto="UDP"} 100',
    );
    // No Kubernetes, no providerID: --cloud auto prices nothing, and says so.
    expect(text).toContain('# TYPE podflow_traffic_cost_total counter');
    expect(sum(text, 'podflow_traffic_cost_total')).toBe(0);
    expect(text).toContain('dst_ip="10.5.0.9",dst_dns_name="",dst_type="private"');
    expect(text).toContain('src_node="node-2"');
    expect(sum(text, 'podflow_exporter_pull_errors_total', 'collector="http://127.0.0.1:1"')).toBeGreaterThan(
      0,
    );
    expect(sum(text, 'podflow_exporter_flows_total')).toBe(3);
    expect(text).toContain('# TYPE podflow_exporter_pull_duration_seconds histogram');
    expect(text).toContain('process_resident_memory_bytes');

    const records = rx.acceptedRecords();
    expect(records.map((r) => r.tx_bytes).sort((a, b) => Number(a) - Number(b))).toEqual([10, 100, 1000]);
    expect(rx.requests[0].headers['x-api-key']).toBe('k-123');
    expect(rx.requests[0].headers['idempotency-key']).toBe(rx.requests[1].headers['idempotency-key']);

    // New traffic after the first rounds is counted once more, never twice.
    c1.backlog.append(5000, 10_000, [flow('10.0.0.1', '8.8.8.8', 5)]);
    // Acknowledged once a scrape served its counts (this test scraped before: a scraper exists).
    await waitFor('second batch', async () => {
      await (await fetch(`${base}/metrics`)).text();
      return c1.backlog.stats().batches === 0 ? true : undefined;
    });
    const after = await waitFor('metrics updated', async () => {
      const t = await (await fetch(`${base}/metrics`)).text();
      return sum(t, 'podflow_transmit_bytes_total') === 1115 ? t : undefined;
    });
    expect(sum(after, 'podflow_exporter_flows_total')).toBe(4);
    await waitFor('records posted', async () => (rx.acceptedRecords().length === 4 ? true : undefined));

    const { code } = await p.stop('SIGTERM');
    expect(code).toBe(0);
    expect(p.log).toContain('exporter stopped');
  });

  it('stops with one line naming the option when no collectors can be found', async () => {
    const p = podflow(['exporter', '--listen', '127.0.0.1:0']);
    const { code } = await p.exit;
    expect(code).toBe(2);
    expect(p.log).toMatch(/^podflow: --collectors: no collector URLs given/m);
  });

  it('stops at start-up when a header names an unset variable', async () => {
    const p = podflow([
      'exporter',
      '--collectors',
      'http://127.0.0.1:1',
      '--listen',
      '127.0.0.1:0',
      '--http-sink-url',
      'http://127.0.0.1:1/x',
      '--http-sink-headers',
      `Authorization=Bearer ${env('MISSING_TOKEN')}`,
    ]);
    const { code } = await p.exit;
    expect(code).toBe(2);
    expect(p.log).toContain('MISSING_TOKEN is not set');
  });
});

/** A stand-in collector on loopback answering every pull with `body` (and these headers). */
async function standIn(body: Buffer, headers: Record<string, string>): Promise<string> {
  const srv = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/x-msgpack', ...headers });
    res.end(body);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  cleanup.push(async () => {
    srv.closeAllConnections();
    await new Promise<void>((r) => srv.close(() => r()));
  });
  return `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
}

/** gzip of `mib` MiB of zeros, made a MiB at a time. */
async function zerosGzip(mib: number): Promise<Buffer> {
  const z = createGzip({ level: 9 });
  const out: Buffer[] = [];
  z.on('data', (c: Buffer) => out.push(c));
  const zero = Buffer.alloc(1 << 20);
  for (let i = 0; i < mib; i++) if (!z.write(zero)) await once(z, 'drain');
  z.end();
  await once(z, 'end');
  return Buffer.concat(out);
}

describe('podflow exporter against hostile collectors', () => {
  it('refuses gzip bombs and impossible counts, counts the good collector exactly, and stays within its memory limit', async () => {
    const good = await collector('node-good');
    good.backlog.append(0, 5000, [flow('10.0.0.1', '8.8.8.8', 4321)]);
    const lease = { 'podflow-lease': 'l1', 'podflow-lease-seconds': '60' };
    const gz = { 'content-encoding': 'gzip', ...lease };
    // 300 MiB of zeros: once with the gzip trailer telling the truth, once claiming 120 MiB (just
    // under the default --pull-max-bytes, 128 MiB).
    const bomb = await zerosGzip(300);
    const liar = Buffer.from(bomb);
    liar.writeUInt32LE(120 << 20, liar.length - 4);
    const bombs = await Promise.all(
      Array.from({ length: 8 }, (_, i) => standIn(i % 2 === 0 ? bomb : liar, gz)),
    );
    const counts = await Promise.all(
      [1e300, 2 ** 60, 0.49, -1].map((n) =>
        standIn(
          encodePullResponse({
            version: 1,
            bootId: 'evil',
            node: 'node-evil',
            source: 'netfilter',
            batches: [{ seq: 1, from: 0, to: 1, flows: [{ ...flow('10.0.0.2', '8.8.4.4', 1), txBytes: n }] }],
          }),
          lease,
        ),
      ),
    );
    const port = await freePort();
    const p = podflow([
      'exporter',
      '--collectors',
      [good.url, ...bombs, ...counts].join(','),
      '--listen',
      `127.0.0.1:${port}`,
      '--export-interval',
      '500ms',
    ]);
    const base = `http://127.0.0.1:${port}`;
    const text = await waitFor('three rounds of refusals', async () => {
      const t = await (await fetch(`${base}/metrics`)).text().catch(() => '');
      return sum(t, 'podflow_exporter_pull_errors_total', 'reason="invalid"') >= 4 * 3 + 4 * 3
        ? t
        : undefined;
    });
    for (const u of bombs.filter((_, i) => i % 2 === 0)) {
      expect(
        sum(text, 'podflow_exporter_pull_errors_total', `collector="${u}",reason="oversized"`),
      ).toBeGreaterThan(0);
    }
    for (const u of [...bombs.filter((_, i) => i % 2 === 1), ...counts]) {
      expect(
        sum(text, 'podflow_exporter_pull_errors_total', `collector="${u}",reason="invalid"`),
      ).toBeGreaterThan(0);
    }
    // Only the good collector's bytes, exactly.
    expect(sum(text, 'podflow_transmit_bytes_total')).toBe(4321);
    expect(good.backlog.stats().batches).toBe(0);
    const status = await readFile(`/proc/${p.proc.pid}/status`, 'utf8');
    const peak = Number(/^VmHWM:\s+(\d+) kB/m.exec(status)?.[1]) * 1024;
    console.log(`exporter peak RSS with 8 gzip bombs every 500 ms: ${(peak / 2 ** 20).toFixed(0)} MiB`);
    // The chart's exporter limit is 512Mi; eight bombs at once reached 2.33 GB before.
    expect(peak).toBeLessThan(512 * 2 ** 20);
  });

  it('stops at start-up with one line when the token file cannot be used, or --metrics-auth has none', async () => {
    const p1 = podflow([
      'exporter',
      '--collectors',
      'http://127.0.0.1:1',
      '--pull-token-file',
      '/nonexistent/token',
    ]);
    const { code: c1 } = await p1.exit;
    expect(c1).not.toBe(0);
    expect(p1.log.trim()).toBe('podflow: --pull-token-file /nonexistent/token: cannot read it (ENOENT)');
    const p2 = podflow(['exporter', '--collectors', 'http://127.0.0.1:1', '--metrics-auth']);
    const { code: c2 } = await p2.exit;
    expect(c2).not.toBe(0);
    expect(p2.log.trim()).toBe(
      'podflow: --metrics-auth: needs --pull-token-file (the tokens /metrics accepts)',
    );
  });
});

describe('podflow exporter: cost options at start-up', () => {
  it('stops with one line naming the file and the entry when the destinations file is bad, or the prices', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pf-dest-cli-'));
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    const file = join(dir, 'destinations.yaml');
    await writeFile(file, '- cidr: 10.20.0.0/16\n  name: billing\n- cidr: 10.30.0.0/33\n  name: typo\n');
    const p1 = podflow([
      'exporter',
      '--collectors',
      'http://127.0.0.1:1',
      '--listen',
      '127.0.0.1:0',
      '--destinations-file',
      file,
    ]);
    const { code: c1 } = await p1.exit;
    expect(c1).toBe(2);
    expect(p1.log.trim()).toBe(
      `podflow: --destinations-file ${file}: entry 2: cidr: expected a range like 10.20.0.0/16 or 2001:db8::/32, got "10.30.0.0/33"`,
    );
    const p2 = podflow([
      'exporter',
      '--collectors',
      'http://127.0.0.1:1',
      '--prices',
      'cross-zone=two cents',
    ]);
    const { code: c2 } = await p2.exit;
    expect(c2).toBe(2);
    expect(p2.log.trim()).toBe(
      'podflow: invalid --prices: cross-zone: expected a price per GiB of 0 or more like 0.02, or preset, got "cross-zone=two cents"',
    );
  });
});

describe('two podflow exporters on one collector', () => {
  it('one pulls, the other waits: every byte once, also with a slow sink; the other takes over when the first is killed', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pf-two-'));
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    const tokenPath = join(dir, 'token');
    await writeFile(tokenPath, 'shared-secret-token\n');
    const c = await startTestCollector('node-1', { tokens: new TokenFile(tokenPath, { log: silentLogger }) });
    cleanup.push(() => c.close());
    const rx = await HttpReceiver.start();
    cleanup.push(() => rx.close());
    // A slow receiver: each POST takes 400 ms, longer than an export interval.
    rx.otherwise({ status: 200, delayMs: 400 });
    const start = async (name: string) => {
      const port = await freePort();
      const p = podflow([
        'exporter',
        '--collectors',
        c.url,
        '--pull-token-file',
        tokenPath,
        '--pod-name',
        name,
        '--pull-lease',
        '10s',
        '--listen',
        `127.0.0.1:${port}`,
        '--export-interval',
        '300ms',
        '--http-sink-url',
        rx.url,
      ]);
      await p.ready();
      return { p, metrics: async () => (await fetch(`${p.base}/metrics`)).text() };
    };
    const [a, b] = await Promise.all([start('exporter-a'), start('exporter-b')]);
    let total = 0;
    for (let i = 0; i < 10; i++) {
      c.backlog.append(i * 100, (i + 1) * 100, [flow('10.0.0.1', '8.8.8.8', 1000 + i)]);
      total += 1000 + i;
      await new Promise((r) => setTimeout(r, 150));
    }
    await waitFor('all acknowledged', async () => (c.backlog.stats().batches === 0 ? true : undefined));
    const sent = () => rx.acceptedRecords().reduce((s, r) => s + Number(r.tx_bytes), 0);
    await waitFor('records posted', async () => (sent() === total ? true : undefined));
    const [ma, mb] = await Promise.all([a.metrics(), b.metrics()]);
    expect(sum(ma, 'podflow_transmit_bytes_total') + sum(mb, 'podflow_transmit_bytes_total')).toBe(total);
    // One of them held the collector the whole time; the other was told so every round.
    const [holder, standby, standbyMetrics] =
      sum(ma, 'podflow_transmit_bytes_total') > 0 ? [a, b, mb] : [b, a, ma];
    expect(sum(standbyMetrics, 'podflow_transmit_bytes_total')).toBe(0);
    expect(sum(standbyMetrics, 'podflow_exporter_pull_errors_total', 'reason="leased"')).toBeGreaterThan(3);

    // The holder dies without letting go: the standby takes over once the lease lapsed (≤ 10 s).
    await holder.p.stop('SIGKILL');
    let later = 0;
    for (let i = 0; i < 3; i++) {
      c.backlog.append(2000 + i, 2001 + i, [flow('10.0.0.2', '1.1.1.1', 7 + i)]);
      later += 7 + i;
    }
    await waitFor(
      'standby took over',
      async () => (sum(await standby.metrics(), 'podflow_transmit_bytes_total') === later ? true : undefined),
      20_000,
    );
    await waitFor('records posted', async () => (sent() === total + later ? true : undefined));
    await waitFor('acknowledged by the standby', async () =>
      c.backlog.stats().batches === 0 ? true : undefined,
    );
  });
});
