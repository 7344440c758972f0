// `podflow exporter` as a process: static --collectors (real collector servers), the HTTP sink
// posting to a real receiver, /metrics, /healthz, /readyz, start-up errors and SIGTERM.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import type { Flow } from '../shared/flow.js';
import { HttpReceiver } from './helpers/http-receiver.js';
import { freePort } from './helpers/ports.js';
import { startTestCollector } from './helpers/test-collector.js';
import { waitFor } from './helpers/wait.js';

const ROOT = new URL('..', import.meta.url).pathname;
const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function collector(node: string, bootId?: string) {
  const c = await startTestCollector(node, { bootId });
  cleanup.push(() => c.close());
  return c;
}

function podflow(args: string[], env: Record<string, string> = {}) {
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', 'cmd/podflow.ts', ...args], {
    cwd: ROOT,
    // No HOME: a ~/.kube/config of the machine must not turn on Kubernetes discovery.
    env: { PATH: process.env.PATH, HOME: '/nonexistent', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = once(child, 'exit') as Promise<[number | null, string | null]>;
  cleanup.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  return { child, exited, stderr: () => stderr };
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
    const base = `http://127.0.0.1:${port}`;
    await waitFor('healthz', async () => ((await fetch(`${base}/healthz`)).ok ? true : undefined));
    await waitFor('readyz', async () => ((await fetch(`${base}/readyz`)).status === 200 ? true : undefined));
    await waitFor('collectors acknowledged', async () =>
      c1.backlog.stats().batches === 0 && c2.backlog.stats().batches === 0 ? true : undefined,
    );
    const text = await (await fetch(`${base}/metrics`)).text();
    expect(sum(text, 'podflow_transmit_bytes_total')).toBe(1110);
    expect(sum(text, 'podflow_received_bytes_total')).toBe(1113);
    expect(sum(text, 'podflow_transmit_packets_total')).toBe(6);
    expect(sum(text, 'podflow_received_packets_total')).toBe(9);
    expect(text).toContain(
      'podflow_transmit_bytes_total{src_namespace="",src_pod="",src_workload="",src_node="node-1",src_zone="",dst_namespace="",dst_pod="",dst_workload="",dst_node="",dst_zone="",dst_ip="8.8.8.8",dst_type="public",cross_zone="false",proto="UDP"} 100',
    );
    expect(text).toContain('dst_ip="10.5.0.9",dst_type="private"');
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
    await waitFor('second batch', async () => (c1.backlog.stats().batches === 0 ? true : undefined));
    const after = await waitFor('metrics updated', async () => {
      const t = await (await fetch(`${base}/metrics`)).text();
      return sum(t, 'podflow_transmit_bytes_total') === 1115 ? t : undefined;
    });
    expect(sum(after, 'podflow_exporter_flows_total')).toBe(4);
    await waitFor('records posted', async () => (rx.acceptedRecords().length === 4 ? true : undefined));

    p.child.kill('SIGTERM');
    const [code] = await p.exited;
    expect(code).toBe(0);
    expect(p.stderr()).toContain('exporter stopped');
  });

  it('stops with one line naming the option when no collectors can be found', async () => {
    const p = podflow(['exporter', '--listen', '127.0.0.1:0']);
    const [code] = await p.exited;
    expect(code).toBe(2);
    expect(p.stderr()).toMatch(/^podflow: --collectors: no collector URLs given/m);
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
    const [code] = await p.exited;
    expect(code).toBe(2);
    expect(p.stderr()).toContain('MISSING_TOKEN is not set');
  });
});
