// A real Prometheus (/usr/bin/prometheus) for tests: generated config and data in a temp dir, a free
// loopback port, started in the root namespace or inside a test network namespace (then it scrapes
// and is queried over that namespace's loopback), always stopped with `stop()`.
import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kill, type Netns } from './netns.js';
import { freePort } from './ports.js';

export interface PrometheusOptions {
  /** Scrape targets, `host:port`. */
  targets: string[];
  /** @default '1s' */
  scrapeInterval?: string;
  /** Run inside this namespace (scrapes and queries then use its loopback). */
  ns?: Netns;
  /** @default 'prometheus' */
  bin?: string;
  /** Target labels per target (`host:port` → labels), as a Kubernetes service discovery would add. */
  targetLabels?: Record<string, Record<string, string>>;
  /** Port inside `ns` (a second Prometheus in the same namespace needs another). @default 9090 */
  port?: number;
  /** More command-line flags, e.g. `--web.enable-remote-write-receiver`. */
  extraArgs?: string[];
}

export interface PromSample {
  metric: Record<string, string>;
  value: number;
}

export interface Prometheus {
  readonly url: string;
  /** Instant PromQL query (at `time`, seconds since the epoch, else now); the vector or one scalar. */
  query(promql: string, time?: number): Promise<PromSample[]>;
  /** Sum of a query's samples, or undefined when the result is empty. */
  scalar(promql: string): Promise<number | undefined>;
  /**
   * What the counters matched by `selector` counted over the last `range`, summed over series, from
   * the raw samples: the first sample plus every increase, a drop being a counter reset (a new
   * process counting from 0, so its whole value is new). No extrapolation, unlike increase().
   */
  counted(selector: string, range?: string): Promise<number>;
  /** Waits until every target has been scraped successfully at least once after `since`. */
  waitScraped(since?: number, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

/** A port nobody listens on right now (loopback of the root namespace). */
export async function startPrometheus(opts: PrometheusOptions): Promise<Prometheus> {
  const dir = await mkdtemp(join(tmpdir(), 'podflow-prom-'));
  // In a fresh namespace every port is free; in the root namespace, ask the kernel for one.
  const port = opts.ns ? (opts.port ?? 9090) : await freePort();
  const interval = opts.scrapeInterval ?? '1s';
  await writeFile(
    join(dir, 'prometheus.yml'),
    [
      'global:',
      `  scrape_interval: ${interval}`,
      `  scrape_timeout: ${interval}`,
      ...(opts.targets.length === 0
        ? []
        : ['scrape_configs:', '  - job_name: podflow', '    static_configs:']),
      ...opts.targets.flatMap((t) => {
        const labels = Object.entries(opts.targetLabels?.[t] ?? {});
        return [
          `      - targets: ['${t}']`,
          ...(labels.length > 0
            ? ['        labels:', ...labels.map(([k, v]) => `          ${k}: '${v}'`)]
            : []),
        ];
      }),
      '',
    ].join('\n'),
  );
  const args = [
    `--config.file=${join(dir, 'prometheus.yml')}`,
    `--storage.tsdb.path=${join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`,
    '--log.level=warn',
    ...(opts.extraArgs ?? []),
  ];
  const bin = opts.bin ?? 'prometheus';
  let proc: ChildProcess;
  if (opts.ns) {
    proc = opts.ns.spawn(bin, args);
  } else {
    proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  }
  let output = '';
  proc.stdout?.on('data', (d) => {
    output += d;
  });
  proc.stderr?.on('data', (d) => {
    output += d;
  });
  const url = `http://127.0.0.1:${port}`;

  /** HTTP GET from where Prometheus runs: curl inside the namespace, fetch in the root one. */
  const get = async (
    path: string,
    params: Record<string, string> = {},
  ): Promise<{ status: number; body: string }> => {
    if (opts.ns) {
      const curlArgs = ['-sS', '-G', '-w', '\n%{http_code}', `${url}${path}`];
      for (const [k, v] of Object.entries(params)) curlArgs.push('--data-urlencode', `${k}=${v}`);
      const { stdout } = await opts.ns.exec('curl', curlArgs);
      const nl = stdout.lastIndexOf('\n');
      return { status: Number(stdout.slice(nl + 1)), body: stdout.slice(0, nl) };
    }
    const res = await fetch(`${url}${path}?${new URLSearchParams(params)}`);
    return { status: res.status, body: await res.text() };
  };

  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await kill(proc).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  };

  try {
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`prometheus exited with ${proc.exitCode}: ${output}`);
      const r = await get('/-/ready').catch(() => ({ status: 0, body: '' }));
      if (r.status === 200) break;
      if (Date.now() > deadline) throw new Error(`prometheus not ready after 20 s: ${output}`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  } catch (err) {
    await stop();
    throw err;
  }

  const query = async (promql: string, time?: number): Promise<PromSample[]> => {
    const r = await get('/api/v1/query', {
      query: promql,
      ...(time === undefined ? {} : { time: String(time) }),
    });
    const doc = JSON.parse(r.body) as {
      status: string;
      error?: string;
      data?: { resultType: string; result: unknown };
    };
    if (doc.status !== 'success' || !doc.data)
      throw new Error(`query ${promql} failed: ${doc.error ?? r.body}`);
    if (doc.data.resultType === 'scalar') {
      const [, v] = doc.data.result as [number, string];
      return [{ metric: {}, value: Number(v) }];
    }
    return (doc.data.result as { metric: Record<string, string>; value: [number, string] }[]).map((s) => ({
      metric: s.metric,
      value: Number(s.value[1]),
    }));
  };

  const counted = async (selector: string, range = '1h'): Promise<number> => {
    const r = await get('/api/v1/query', { query: `${selector}[${range}]` });
    const doc = JSON.parse(r.body) as {
      status: string;
      error?: string;
      data?: { resultType: string; result: { values: [number, string][] }[] };
    };
    if (doc.status !== 'success' || !doc.data)
      throw new Error(`query ${selector} failed: ${doc.error ?? r.body}`);
    let total = 0;
    for (const series of doc.data.result) {
      let prev = 0;
      for (const [, raw] of series.values) {
        const v = Number(raw);
        total += v >= prev ? v - prev : v;
        prev = v;
      }
    }
    return total;
  };

  return {
    url,
    query,
    counted,
    async scalar(promql) {
      const samples = await query(promql);
      return samples.length === 0 ? undefined : samples.reduce((n, s) => n + s.value, 0);
    },
    async waitScraped(since = Date.now(), timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const r = await get('/api/v1/targets');
        const doc = JSON.parse(r.body) as {
          data: { activeTargets: { health: string; lastScrape: string; lastError: string }[] };
        };
        const targets = doc.data.activeTargets;
        if (
          targets.length === opts.targets.length &&
          targets.every((t) => t.health === 'up' && Date.parse(t.lastScrape) > since)
        ) {
          return;
        }
        if (Date.now() > deadline) {
          throw new Error(
            `targets not scraped: ${JSON.stringify(targets.map((t) => [t.health, t.lastError]))}`,
          );
        }
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    },
    stop,
  };
}
