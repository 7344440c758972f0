// A real single-node VictoriaMetrics (/usr/bin/victoria-metrics, Debian package victoria-metrics) for
// tests: temp storage, a loopback port, its Prometheus-compatible write and query APIs. `stop()` and
// `start()` again on the same port and storage make a receiver outage.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kill } from './netns.js';
import { freePort } from './ports.js';
import type { PromSample } from './prometheus.js';

export class VictoriaMetrics {
  private proc: ChildProcess | undefined;
  private output = '';

  private constructor(
    private readonly dir: string,
    readonly port: number,
  ) {}

  static async start(): Promise<VictoriaMetrics> {
    const vm = new VictoriaMetrics(await mkdtemp(join(tmpdir(), 'podflow-vm-')), await freePort());
    await vm.start();
    return vm;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Starts the process (again) and waits until it answers. */
  async start(): Promise<void> {
    this.output = '';
    this.proc = spawn(
      'victoria-metrics',
      [
        `-storageDataPath=${join(this.dir, 'data')}`,
        `-httpListenAddr=127.0.0.1:${this.port}`,
        // Queries see samples as soon as they are flushed (default: not the last 30 s).
        '-search.latencyOffset=0s',
        '-search.disableCache',
        '-loggerLevel=ERROR',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    this.proc.stdout?.on('data', (d) => {
      this.output += d;
    });
    this.proc.stderr?.on('data', (d) => {
      this.output += d;
    });
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (this.proc.exitCode !== null) throw new Error(`victoria-metrics exited: ${this.output}`);
      const ok = await fetch(`${this.url}/health`).then(
        (r) => r.ok,
        () => false,
      );
      if (ok) return;
      if (Date.now() > deadline) throw new Error(`victoria-metrics not up after 20 s: ${this.output}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Stops the process; the storage stays for start(). */
  async stop(): Promise<void> {
    if (this.proc !== undefined) await kill(this.proc).catch(() => undefined);
    this.proc = undefined;
  }

  /** Instant query at `time` (seconds since the epoch), after making what arrived searchable. */
  async query(promql: string, time?: number): Promise<PromSample[]> {
    await fetch(`${this.url}/internal/force_flush`);
    const params = new URLSearchParams({
      query: promql,
      ...(time === undefined ? {} : { time: String(time) }),
    });
    const res = await fetch(`${this.url}/api/v1/query?${params}`);
    const doc = (await res.json()) as {
      status: string;
      error?: string;
      data?: { result: { metric: Record<string, string>; value: [number, string] }[] };
    };
    if (doc.status !== 'success' || !doc.data) throw new Error(`query ${promql} failed: ${doc.error}`);
    return doc.data.result.map((s) => ({ metric: s.metric, value: Number(s.value[1]) }));
  }

  async close(): Promise<void> {
    await this.stop();
    await rm(this.dir, { recursive: true, force: true });
  }
}
